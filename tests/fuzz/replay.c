/*
 * replay.c - runs the fuzz harness over saved inputs, without libFuzzer.
 *
 * Usage: fuzz_replay PATH...   (each PATH a corpus directory or a file)
 *
 * Linked with fuzz_decoders.c into the ctest `fuzz_replay`, so every corpus
 * file, crash reproducers included, is checked by each ordinary and
 * sanitizer build with gcc (SQLite's fuzzcheck idea). A broken property
 * aborts inside the harness; unreadable paths and a directory without a
 * single input fail here, so a wrong corpus path cannot pass quietly.
 *
 * A file's name also says what it must be, and that is checked too, so a
 * seed the protocol has outgrown fails instead of testing something else:
 * `msg-*` decodes as a frame, `wire-delta-*` and `wire-state-*` as bodies,
 * and every decoder refuses a `bad-*`.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sn_msg.h"
#include "sn_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_frame(const uint8_t *buf, size_t len)
{
    sn_msg_decoded_t dm;
    if (sn_msg_decode(buf, len, &dm))
        return false;
    sn_msg_release(&dm);
    return true;
}

static bool is_delta(const uint8_t *buf, size_t len)
{
    sn_wire_delta_t d;
    if (sn_wire_decode_delta(buf, len, &d))
        return false;
    sn_wire_delta_release(&d);
    return true;
}

static bool is_state(const uint8_t *buf, size_t len)
{
    sn_wire_state_t st;
    if (sn_wire_decode_state(buf, len, &st))
        return false;
    sn_wire_state_release(&st);
    return true;
}

/* 0 if the input is what its file name says, else -1 (reported). */
static int check_kind(const char *path, const uint8_t *buf, size_t len)
{
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    const char *want = NULL;
    if (strncmp(name, "msg-", 4) == 0 && !is_frame(buf, len))
        want = "a valid frame";
    else if (strncmp(name, "wire-delta-", 11) == 0 && !is_delta(buf, len))
        want = "a valid delta body";
    else if (strncmp(name, "wire-state-", 11) == 0 && !is_state(buf, len))
        want = "a valid state body";
    else if (strncmp(name, "bad-", 4) == 0 &&
             (is_frame(buf, len) || is_delta(buf, len) || is_state(buf, len)))
        want = "refused by every decoder";
    if (!want)
        return 0;
    fprintf(stderr, "%s: should be %s\n", path, want);
    return -1;
}

/* Corpus files are small; anything larger is a misplaced file. */
#define REPLAY_FILE_MAX (64u << 20)

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0 || (uint64_t) sb.st_size > REPLAY_FILE_MAX) {
        fprintf(stderr, "%s: unreadable or too large\n", path);
        fclose(f);
        return -1;
    }
    size_t len = (size_t) sb.st_size;
    /* One spare byte, so an empty file still gets a real buffer. */
    uint8_t *buf = malloc(len + 1);
    if (!buf || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    int rc = check_kind(path, buf, len);
    free(buf);
    return rc;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Replays every regular file of a directory, in name order so that runs
 * are reproducible. Returns the number replayed, or -1. */
static long replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown)
                abort();
            names = grown;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (!names[n])
            abort();
        snprintf(names[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, compare_names);
    long done = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (replay_file(names[i]) != 0)
                done = -1;
            else if (done >= 0)
                done++;
        }
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        long n;
        if (stat(argv[i], &sb) != 0) {
            perror(argv[i]);
            return 1;
        }
        n = S_ISDIR(sb.st_mode) ? replay_dir(argv[i]) : (replay_file(argv[i]) ? -1 : 1);
        if (n < 0)
            return 1;
        total += n;
    }
    printf("fuzz_replay: %ld inputs replayed, all properties held\n", total);
    return total > 0 ? 0 : 1;
}
