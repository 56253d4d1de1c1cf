/*
 * bench_tier.c - the memcached tier's CPU cost per write, in one process.
 *
 * The daemon's figure for the tier (run_memcaslap.sh --tier) is a ratio of
 * two throughputs, each of some 20 us of CPU a set, most of it the
 * kernel's; the tier's own share, a microsecond or two, is lost in the
 * noise between rounds. This program measures that share alone: the same
 * N writes of new sessions into a store, without the tier and with it (the
 * store's state sink queuing each session's copy, the tier's thread
 * writing the copies to a real memcached), as CPU time of this process:
 *
 *   alone   sn_store_put(create) of N new sessions, one attribute each
 *   tier    the same with the tier, until its queue is empty again;
 *           split into the writer's CPU (its thread's clock: the put and
 *           the copy) and the rest of the process's (the tier's thread)
 *
 * Each round runs both, in turn first, on new ids; the first round is a
 * warm-up and not counted. The figures are medians over the rounds, in us
 * of CPU a write, and "added": the tier's CPU per write beyond the store's.
 * Run it pinned to one CPU and the memcached on another
 * (bench/run_tier.sh does), so that the tier's thread and the writer
 * share one CPU as they do in a busy daemon.
 *
 *   bench_tier --server HOST:PORT [--sessions N] [--value BYTES] [--rounds R]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_common.h"
#include "sn_store.h"
#include "sn_tier.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS_MAX 64
#define ID_MAX 48
#define ATTR_NAME "data"
#define MAX_INACTIVE 1800
#define DRAIN_TIMEOUT_S 60

static double cpu_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static void tier_log(int level, const char *msg, void *arg)
{
    (void) arg;
    if (level <= SN_LOG_WARN)
        fprintf(stderr, "bench_tier: %s\n", msg);
}

/* The store's state sink; the tier is made after the store it reads
 * from, so the sink finds it through a holder, as the node does. */
typedef struct {
    sn_tier_t *tier;
} holder_t;

static void capture(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                    sn_delta_kind_t kind, void *arg)
{
    holder_t *h = arg;
    if (h->tier)
        sn_tier_capture(h->tier, id, id_len, st, kind == SN_DELTA_TOUCH);
}

typedef struct {
    const char *server;
    size_t sessions;
    size_t value_len;
    int rounds;
    uint64_t run;            /* tells this run's ids from an earlier run's */
} config_t;

typedef struct {
    double writer_us;        /* per write: the writer thread's CPU */
    double process_us;       /* per write: the whole process's CPU */
} sample_t;

/* The ids: a prefix naming the run, phase and round, then the session's
 * number in hex, written by hand (snprintf here was a tenth of the
 * store's own time). */
static void put_all(sn_store_t *store, const config_t *c, const char *tag, int round,
                    const char *value)
{
    static const char hex[] = "0123456789abcdef";
    char id[ID_MAX];
    size_t prefix = (size_t) snprintf(id, sizeof id, "bt%llx-%s%d-",
                                      (unsigned long long) c->run, tag, round);
    for (size_t i = 0; i < c->sessions; i++) {
        char digits[16];
        size_t nd = 0;
        for (size_t x = i; nd == 0 || x; x >>= 4)
            digits[nd++] = hex[x & 15];
        size_t n = prefix;
        while (nd)
            id[n++] = digits[--nd];
        id[n] = 0;
        int rc = sn_store_put(store, id, n, ATTR_NAME, sizeof ATTR_NAME - 1, value,
                              c->value_len, 0, true, MAX_INACTIVE);
        if (rc != 0)
            bench_die("sn_store_put(%s): %d", id, rc);
    }
}

static uint64_t queued(sn_tier_t *tier, sn_node_stats_t *st)
{
    memset(st, 0, sizeof *st);
    sn_tier_stats(tier, st);
    return st->tier_queue;
}

/* One phase: N puts of new sessions into a new store, with the tier or
 * without; with it, until the tier has written every copy. */
static sample_t run_phase(const config_t *c, bool with_tier, const char *tag, int round,
                          const char *value)
{
    holder_t holder = {NULL};
    sn_store_options_t so = {.node_id = 0x5e55b0de00000001ull};
    if (with_tier) {
        so.state_sink = capture;
        so.state_sink_arg = &holder;
    }
    sn_store_t *store = sn_store_new(&so);
    if (!store)
        bench_die("sn_store_new failed");
    if (with_tier) {
        /* The writer here outruns the tier's thread (no network, no
         * parsing between writes), so the queue holds a whole phase: every
         * write is queued with its copy, the daemon's usual path, neither
         * dropped nor left for the thread to read back from the store. */
        sn_tier_options_t to = {.servers = c->server,
                                .node_id = so.node_id,
                                .queue_max = c->sessions + 1,
                                .queue_bytes = c->sessions * (c->value_len + 512),
                                .log = tier_log,
                                .log_level = SN_LOG_WARN};
        holder.tier = sn_tier_new(&to, store);
        if (!holder.tier)
            bench_die("cannot start the tier on %s", c->server);
    }

    double t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID), p0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    put_all(store, c, tag, round, value);
    double t1 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    if (with_tier) {
        sn_node_stats_t st;
        struct timespec nap = {0, 1000000};
        time_t start = time(NULL), deadline = start + DRAIN_TIMEOUT_S;
        while (queued(holder.tier, &st) > 0) {
            if (st.tier_failures && time(NULL) > start + 5)
                bench_die("memcached at %s fails the tier's writes (%llu failures)", c->server,
                          (unsigned long long) st.tier_failures);
            if (time(NULL) > deadline)
                bench_die("the tier's queue did not drain in %d s (%llu waiting)", DRAIN_TIMEOUT_S,
                    (unsigned long long) st.tier_queue);
            nanosleep(&nap, NULL);
        }
        if (st.tier_dropped || st.tier_failures)
            bench_die("the tier dropped %llu and failed %llu writes",
                (unsigned long long) st.tier_dropped, (unsigned long long) st.tier_failures);
    }
    double p1 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    /* the waiting above is a few 1 ms naps: its CPU is noise next to N writes */
    sample_t out = {.writer_us = (t1 - t0) * 1e6 / (double) c->sessions,
                    .process_us = (p1 - p0) * 1e6 / (double) c->sessions};
    if (with_tier)
        sn_tier_destroy(&holder.tier, 5000);
    sn_store_destroy(&store);
    return out;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_tier --server HOST:PORT [--sessions N] [--value BYTES] "
                    "[--rounds R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    config_t c = {.sessions = 100000, .value_len = 1024, .rounds = 7,
                  .run = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32)};
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"sessions", required_argument, NULL, 'n'},
        {"value", required_argument, NULL, 'v'},
        {"rounds", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end = NULL;
        errno = 0;
        long long n = opt == 's' ? 0 : strtoll(optarg, &end, 10);
        if (opt != 's' && (errno || !end || *end || n < 1))
            bench_die("--%s wants a positive number, not '%s'",
                opt == 'n' ? "sessions" : opt == 'v' ? "value" : "rounds", optarg);
        switch (opt) {
        case 's': c.server = optarg; break;
        case 'n': c.sessions = (size_t) n; break;
        case 'v':
            if (n > 64 * 1024)
                bench_die("--value: at most 65536 bytes");
            c.value_len = (size_t) n;
            break;
        case 'r':
            if (n > ROUNDS_MAX)
                bench_die("--rounds: at most %d", ROUNDS_MAX);
            c.rounds = (int) n;
            break;
        default: usage();
        }
    }
    if (!c.server || optind != argc)
        usage();

    char *value = malloc(c.value_len);
    if (!value)
        bench_die("no memory");
    for (size_t i = 0; i < c.value_len; i++)
        value[i] = (char) ('a' + (int) ((i * 7) % 26));

    char cpu[128];
    cpu_model(cpu, sizeof cpu);
    printf("bench_tier: %zu new sessions a phase, one %zu-byte attribute each, tier %s\n",
           c.sessions, c.value_len, c.server);
    printf("cpu: %s\n", cpu);
    printf("%-7s %12s %12s %12s %12s\n", "round", "alone us/op", "tier us/op", "writer", "tier thread");

    double alone[ROUNDS_MAX], tier[ROUNDS_MAX], writer[ROUNDS_MAX], thread[ROUNDS_MAX],
        added[ROUNDS_MAX];
    for (int r = 0; r <= c.rounds; r++) {
        sample_t a, t;
        if (r % 2) {
            t = run_phase(&c, true, "t", r, value);
            a = run_phase(&c, false, "a", r, value);
        } else {
            a = run_phase(&c, false, "a", r, value);
            t = run_phase(&c, true, "t", r, value);
        }
        char label[16] = "warm-up";
        if (r)
            snprintf(label, sizeof label, "%d", r);
        printf("%-7s %12.3f %12.3f %12.3f %12.3f\n", label, a.process_us, t.process_us,
               t.writer_us, t.process_us - t.writer_us);
        fflush(stdout);
        if (r == 0)
            continue;
        alone[r - 1] = a.process_us;
        tier[r - 1] = t.process_us;
        writer[r - 1] = t.writer_us;
        thread[r - 1] = t.process_us - t.writer_us;
        added[r - 1] = t.process_us - a.process_us;
    }
    printf("== medians of %d rounds (us of CPU a write)\n", c.rounds);
    printf("alone %.3f, with the tier %.3f (writer %.3f, tier thread %.3f): the tier adds %.3f\n",
           bench_sort_median(alone, c.rounds), bench_sort_median(tier, c.rounds), bench_sort_median(writer, c.rounds),
           bench_sort_median(thread, c.rounds), bench_sort_median(added, c.rounds));
    free(value);
    return 0;
}
