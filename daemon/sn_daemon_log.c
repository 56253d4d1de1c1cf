/*
 * sn_daemon_log.c - the daemon's log sink: one line per message on stderr,
 *
 *   2026-11-24T19:30:00.123Z INFO [node1] message
 *
 * (UTC, milliseconds; levels ERROR, WARN, INFO, DEBUG). The node's own
 * threads log through the same sink, so it takes no lock and keeps no
 * shared buffer: each line is formatted on the caller's stack and written
 * with a single write(2), which the kernel does not interleave with
 * another thread's on the same pipe or O_APPEND file. A line longer than
 * the buffer is cut and ends in "...".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sn_daemon.h"

#define LINE_MAX_BYTES 2048

static char log_name[SD_NAME_MAX + 1] = "sessnode";
static _Atomic int log_max = SD_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void sd_log_init(const char *name, int verbose)
{
    if (name && *name)
        snprintf(log_name, sizeof log_name, "%s", name);
    atomic_store(&log_max, verbose > 0 ? SD_LOG_DEBUG : SD_LOG_INFO);
}

bool sd_log_enabled(int level)
{
    return level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

static void write_line(int level, const char *fmt, va_list ap)
{
    char line[LINE_MAX_BYTES];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    if (level < SD_LOG_ERROR || level > SD_LOG_DEBUG)
        level = SD_LOG_DEBUG;
    int h = snprintf(line + n, sizeof line - n, ".%03ldZ %s [%s] ", ts.tv_nsec / 1000000L,
                     level_names[level], log_name);
    if (h > 0)
        n += (size_t) h;
    /* room for the newline is kept back from the message */
    size_t room = sizeof line - n - 1;
    int m = vsnprintf(line + n, room, fmt, ap);
    if (m < 0)
        m = 0;
    if ((size_t) m >= room) {
        n += room - 1;
        memcpy(line + n - 3, "...", 3);
    } else {
        n += (size_t) m;
    }
    /* a message's own newlines would make one line look like several */
    for (char *p = line; p < line + n; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    line[n++] = '\n';
    const char *p = line;
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;  /* nowhere left to say it */
        p += w;
        n -= (size_t) w;
    }
}

void sd_log(int level, const char *fmt, ...)
{
    if (!sd_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

/* A helper so that the node's message, which may hold '%', is never read
 * as a format. */
static void log_text(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_text(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

void sd_log_node(int level, const char *msg, void *arg)
{
    (void) arg;
    if (!sd_log_enabled(level))
        return;
    log_text(level, "%s", msg ? msg : "");
}
