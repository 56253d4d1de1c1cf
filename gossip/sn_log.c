/*
 * sn_log.c - see sn_log.h.
 */
#include "sn_log.h"

#include <stdio.h>

void sn_vlogf(sn_log_fn fn, void *arg, int max_level, int level, const char *fmt, va_list ap)
{
    if (!fn || level > max_level)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    fn(level, line, arg);
}
