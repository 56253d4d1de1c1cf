/*
 * bench_common.h - small helpers the benchmarks share (header-only: each
 * benchmark is one program built from one file).
 */
#ifndef SN_BENCH_COMMON_H_INCLUDED
#define SN_BENCH_COMMON_H_INCLUDED

#include <stdio.h>
#include <string.h>

/* The CPU model from /proc/cpuinfo, printed next to every figure. */
static inline void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (colon && !strncmp(line, "model name", 10)) {
            snprintf(out, cap, "%s", colon + 2);
            out[strcspn(out, "\n")] = 0;
            break;
        }
    }
    fclose(f);
}

#endif
