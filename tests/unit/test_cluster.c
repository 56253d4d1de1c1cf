/*
 * test_cluster.c - several nodes in one process, replicating over inproc://.
 *
 * Each test builds a small cluster (every node lists the others as peers),
 * writes through the public API and waits, with a bound, for the other nodes
 * to agree. Nodes replicate through the same actor, frames and repair paths
 * as between processes; only the transport is in memory.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <czmq.h>
#include <msgpack.h>

#include "sessnode.h"
#include "sn_msg.h"
#include "sn_store.h"
#include "sn_test_dump.h"

sn_store_t *sn_node_store(sn_node_t *node);

#define MAX_NODES 5
#define WAIT_MS 10000

static int g_cluster_no;

typedef struct {
    int n;
    sn_node_t *node[MAX_NODES];
    char addr[MAX_NODES][64];
} cluster_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void quiet_log(int level, const char *msg, void *arg)
{
    (void) arg;
    if (level <= SN_LOG_WARN || getenv("SN_TEST_LOG"))
        fprintf(stderr, "  [%d] %s\n", level, msg);
}

static void node_config(cluster_t *c, int i, sn_config_t *cfg, const char **peers)
{
    sn_config_init(cfg);
    cfg->node_id = (uint64_t) (g_cluster_no * 16 + i + 1);
    cfg->cluster = c->addr[i];
    int k = 0;
    for (int j = 0; j < c->n; j++)
        if (j != i)
            peers[k++] = c->addr[j];
    peers[k] = NULL;
    cfg->peers = peers;
    cfg->heartbeat_ms = 20;
    cfg->repair_grace_ms = 10;
    cfg->join_timeout_ms = 200;
    cfg->log = quiet_log;
}

static void start_node(cluster_t *c, int i, const sn_config_t *cfg)
{
    c->node[i] = sn_node_new(cfg);
    assert_non_null(c->node[i]);
    assert_int_equal(sn_node_start(c->node[i]), 0);
    assert_int_equal(sn_node_wait_ready(c->node[i], WAIT_MS), 0);
}

/* Adjusts node i's configuration before it starts. */
typedef void (*tweak_fn)(int i, sn_config_t *cfg, void *arg);

/* n nodes, each configured by node_config and then `tweak`. */
static void cluster_start_with(cluster_t *c, int n, tweak_fn tweak, void *arg)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    g_cluster_no++;
    for (int i = 0; i < n; i++)
        snprintf(c->addr[i], sizeof c->addr[i], "inproc://cluster%d-node%d", g_cluster_no, i);
    for (int i = 0; i < n; i++) {
        sn_config_t cfg;
        const char *peers[MAX_NODES + 1];
        node_config(c, i, &cfg, peers);
        tweak(i, &cfg, arg);
        start_node(c, i, &cfg);
    }
}

static void set_drop(int i, sn_config_t *cfg, void *arg)
{
    (void) i;
    cfg->test_drop_rate = *(const double *) arg;
}

/* n nodes; `drop` is the fraction of received deltas each node drops. */
static void cluster_start(cluster_t *c, int n, double drop)
{
    cluster_start_with(c, n, set_drop, &drop);
}

static void cluster_stop(cluster_t *c)
{
    for (int i = 0; i < c->n; i++)
        sn_node_destroy(&c->node[i]);
}

/* Waits until every node in `c` has heard every other one. */
static void wait_connected(cluster_t *c)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        bool all = true;
        for (int i = 0; i < c->n; i++) {
            if (!c->node[i])
                continue;
            sn_node_stats_t st;
            sn_node_stats(c->node[i], &st);
            int live = 0;
            for (int j = 0; j < c->n; j++)
                live += j != i && c->node[j];
            if (st.peers_alive < (uint64_t) live)
                all = false;
        }
        if (all)
            return;
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
}

static int get_s(sn_node_t *node, const char *id, const char *name, char *buf, size_t cap)
{
    size_t len = 0;
    int rc = sn_node_get(node, id, strlen(id), name, strlen(name), buf, cap - 1, &len, NULL);
    buf[rc == 0 ? len : 0] = 0;
    return rc;
}

static int put_s(sn_node_t *node, const char *id, const char *name, const char *value)
{
    sn_write_t w = {.create = 1, .max_inactive = 3600};
    return sn_node_put(node, id, strlen(id), name, strlen(name), value, strlen(value), &w);
}

/* Waits until `id`.`name` reads `want` on node (NULL: until it is gone). */
static void wait_value(sn_node_t *node, const char *id, const char *name, const char *want)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    char buf[256];
    for (;;) {
        int rc = get_s(node, id, name, buf, sizeof buf);
        if (want ? rc == 0 && strcmp(buf, want) == 0 : rc == SN_ENOTFOUND)
            return;
        if (now_ms() >= deadline)
            fail_msg("%s.%s: wanted %s, have %s (%s)", id, name, want ? want : "(gone)",
                     rc == 0 ? buf : "-", sn_strerror(rc));
        sleep_ms(2);
    }
}

/* What every node holds of `id`, for a failure report. */
static void dump_session(cluster_t *c, const char *id)
{
    for (int i = 0; i < c->n; i++) {
        if (!c->node[i])
            continue;
        sn_node_stats_t st;
        sn_node_stats(c->node[i], &st);
        fprintf(stderr, "  node %d: sent %llu received %llu dropped %llu dup %llu gaps %llu "
                "repair requests %llu repaired %llu fetches %llu resyncs %llu bad %llu\n", i,
                (unsigned long long) st.deltas_sent, (unsigned long long) st.deltas_received,
                (unsigned long long) st.deltas_dropped, (unsigned long long) st.duplicates,
                (unsigned long long) st.gaps_detected, (unsigned long long) st.repairs_requested,
                (unsigned long long) st.repaired, (unsigned long long) st.full_fetches,
                (unsigned long long) st.resyncs, (unsigned long long) st.bad_frames);
        if (sn_store_export(sn_node_store(c->node[i]), id, strlen(id), sn_test_dump_state,
                            NULL))
            fprintf(stderr, "    (nothing)\n");
    }
}

/* Waits until every node holds the same digest for each of `n` ids (or
 * none holds it at all). */
static void wait_same_digests(cluster_t *c, int n, const char *fmt)
{
    uint64_t deadline = now_ms() + 6 * WAIT_MS;
    char id[64];
    for (int k = 0; k < n; k++) {
        snprintf(id, sizeof id, fmt, k);
        for (;;) {
            uint64_t d0 = 0, d = 0;
            int first = -1;
            bool same = true;
            for (int i = 0; i < c->n && same; i++) {
                if (!c->node[i])
                    continue;
                int rc = sn_node_digest(c->node[i], id, strlen(id), &d);
                if (rc == SN_ENOTFOUND)
                    d = 0;  /* destroyed and collected: absent is a state too */
                if (rc && rc != SN_ENOTFOUND) {
                    same = false;
                } else if (first < 0) {
                    first = i;
                    d0 = d;
                } else if (d != d0) {
                    same = false;
                }
            }
            if (same)
                break;
            if (now_ms() >= deadline) {
                dump_session(c, id);
                fail_msg("session %s still differs between nodes", id);
            }
            sleep_ms(5);
        }
    }
}

/* ------------------------------------------------------------- tests */

static void test_a_write_on_any_node_is_readable_on_all(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    for (int w = 0; w < c.n; w++) {
        char id[32], value[32];
        snprintf(id, sizeof id, "sess:%d", w);
        snprintf(value, sizeof value, "written on %d", w);
        assert_int_equal(put_s(c.node[w], id, "user", value), 0);
        for (int r = 0; r < c.n; r++)
            wait_value(c.node[r], id, "user", value);
    }
    cluster_stop(&c);
}

static void test_deletes_and_attribute_removals_propagate(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    assert_int_equal(put_s(c.node[0], "sess:a", "user", "alice"), 0);
    assert_int_equal(put_s(c.node[0], "sess:a", "cart", "2 books"), 0);
    for (int r = 0; r < c.n; r++)
        wait_value(c.node[r], "sess:a", "cart", "2 books");
    assert_int_equal(sn_node_remove(c.node[1], "sess:a", 6, "cart", 4, NULL), 0);
    for (int r = 0; r < c.n; r++)
        wait_value(c.node[r], "sess:a", "cart", NULL);
    assert_int_equal(sn_node_destroy_session(c.node[2], "sess:a", 6, NULL), 0);
    for (int r = 0; r < c.n; r++) {
        wait_value(c.node[r], "sess:a", "user", NULL);
        assert_int_equal(sn_node_exists(c.node[r], "sess:a", 6), 0);
    }
    cluster_stop(&c);
}

static void test_a_node_lost_without_warning_leaves_every_session_served(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    char id[32];
    for (int k = 0; k < 200; k++) {
        snprintf(id, sizeof id, "sess:%d", k);
        assert_int_equal(put_s(c.node[k % 3], id, "user", id), 0);
    }
    wait_same_digests(&c, 200, "sess:%d");
    sn_node_destroy(&c.node[0]);
    char buf[64];
    for (int k = 0; k < 200; k++) {
        snprintf(id, sizeof id, "sess:%d", k);
        for (int r = 1; r < c.n; r++) {
            assert_int_equal(get_s(c.node[r], id, "user", buf, sizeof buf), 0);
            assert_string_equal(buf, id);
        }
    }
    /* and the survivors go on replicating */
    assert_int_equal(put_s(c.node[1], "sess:after", "user", "bob"), 0);
    wait_value(c.node[2], "sess:after", "user", "bob");
    cluster_stop(&c);
}

static void test_nodes_converge_when_a_tenth_of_deltas_are_dropped(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0.10);
    wait_connected(&c);
    char id[32], value[32];
    for (int k = 0; k < 2000; k++) {
        snprintf(id, sizeof id, "drop:%d", k % 300);
        snprintf(value, sizeof value, "v%d", k);
        assert_int_equal(put_s(c.node[k % 3], id, k % 2 ? "a" : "b", value), 0);
        if (k % 97 == 0)
            sn_node_destroy_session(c.node[(k + 1) % 3], id, strlen(id), NULL);
    }
    wait_same_digests(&c, 300, "drop:%d");
    sn_node_stats_t st;
    uint64_t dropped = 0, repaired = 0, fetched = 0;
    for (int i = 0; i < c.n; i++) {
        sn_node_stats(c.node[i], &st);
        dropped += st.deltas_dropped;
        repaired += st.repaired;
        fetched += st.full_fetches;
    }
    print_message("dropped %llu deltas, repaired %llu from backlogs, fetched %llu sessions\n",
                  (unsigned long long) dropped, (unsigned long long) repaired,
                  (unsigned long long) fetched);
    assert_true(dropped > 0);
    assert_true(repaired + fetched > 0);
    cluster_stop(&c);
}

static void test_a_joining_node_ends_with_the_same_sessions(void **state)
{
    (void) state;
    const int sessions = 100000;
    cluster_t c;
    cluster_start(&c, 2, 0);
    wait_connected(&c);
    char id[32], value[64];
    for (int k = 0; k < sessions; k++) {
        snprintf(id, sizeof id, "join:%d", k);
        snprintf(value, sizeof value, "value of session %d", k);
        assert_int_equal(put_s(c.node[k % 2], id, "data", value), 0);
    }
    /* the donor holds every session before the join starts, so the
     * snapshot alone must bring them all */
    wait_same_digests(&c, sessions, "join:%d");
    /* a third node joins while writes go on */
    c.n = 3;
    snprintf(c.addr[2], sizeof c.addr[2], "inproc://cluster%d-node2", g_cluster_no);
    sn_config_t cfg;
    const char *peers[MAX_NODES + 1];
    node_config(&c, 2, &cfg, peers);
    cfg.join = 1;
    cfg.join_timeout_ms = WAIT_MS;
    c.node[2] = sn_node_new(&cfg);
    assert_non_null(c.node[2]);
    uint64_t t0 = now_ms();
    assert_int_equal(sn_node_start(c.node[2]), 0);
    for (int k = 0; k < 1000; k++) {
        snprintf(id, sizeof id, "join:%d", k);
        assert_int_equal(put_s(c.node[k % 2], id, "during", "join"), 0);
    }
    assert_int_equal(sn_node_wait_ready(c.node[2], 6 * WAIT_MS), 0);
    uint64_t t1 = now_ms();
    sn_node_stats_t st;
    sn_node_stats(c.node[2], &st);
    print_message("joined %llu sessions in %llu ms\n", (unsigned long long) st.snapshot_sessions,
                  (unsigned long long) (t1 - t0));
    assert_true(st.snapshot_sessions >= (uint64_t) sessions);
    wait_same_digests(&c, sessions, "join:%d");
    cluster_stop(&c);
}

static void test_a_write_with_two_acks_returns_when_two_peers_hold_it(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    for (int k = 0; k < 50; k++) {
        char id[32];
        snprintf(id, sizeof id, "acked:%d", k);
        sn_write_t w = {.create = 1, .acks = 2, .timeout_ms = WAIT_MS};
        assert_int_equal(sn_node_put(c.node[0], id, strlen(id), "user", 4, "carol", 5, &w), 0);
        /* no waiting: both peers must hold it already */
        assert_int_equal(sn_node_exists(c.node[1], id, strlen(id)), 1);
        assert_int_equal(sn_node_exists(c.node[2], id, strlen(id)), 1);
    }
    /* more acks than peers: a clear timeout, the write itself stays */
    sn_write_t w = {.create = 1, .acks = 3, .timeout_ms = 200};
    assert_int_equal(sn_node_put(c.node[0], "acked:x", 7, "user", 4, "dave", 4, &w),
                     SN_ETIMEDOUT);
    assert_int_equal(sn_node_exists(c.node[0], "acked:x", 7), 1);
    cluster_stop(&c);
}

static void test_acknowledged_writes_complete_through_repairs_when_deltas_drop(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0.20);
    wait_connected(&c);
    for (int k = 0; k < 100; k++) {
        char id[32], value[32], have[32];
        snprintf(id, sizeof id, "lossy:%d", k % 10);
        snprintf(value, sizeof value, "v%d", k);
        sn_write_t w = {.create = 1, .acks = 2, .timeout_ms = WAIT_MS};
        int writer = k % 3;
        assert_int_equal(
            sn_node_put(c.node[writer], id, strlen(id), "n", 1, value, strlen(value), &w), 0);
        /* acknowledged means held: both peers read this write's value, even
         * when they had to fetch the session to get it */
        for (int i = 0; i < c.n; i++) {
            if (i == writer)
                continue;
            assert_int_equal(get_s(c.node[i], id, "n", have, sizeof have), 0);
            assert_string_equal(have, value);
        }
    }
    sn_node_stats_t st;
    uint64_t dropped = 0;
    for (int i = 0; i < c.n; i++) {
        sn_node_stats(c.node[i], &st);
        dropped += st.deltas_dropped;
    }
    assert_true(dropped > 0);
    cluster_stop(&c);
}

static void limit_second(int i, sn_config_t *cfg, void *arg)
{
    if (i == 1)
        cfg->memory_limit = *(const size_t *) arg;
}

/* A peer that cannot hold a write (the session is larger than its memory
 * limit) refuses it: the writer learns at once that the acknowledgement it
 * asked for cannot come, and the peer counts what it refused. */
static void test_a_write_a_peer_cannot_hold_is_refused_not_acknowledged(void **state)
{
    (void) state;
    cluster_t c;
    size_t limit = 128u << 10, big = 512u << 10;
    cluster_start_with(&c, 2, limit_second, &limit);
    wait_connected(&c);
    char *v = malloc(big);
    assert_non_null(v);
    memset(v, 'x', big);
    sn_write_t w = {.create = 1, .acks = 1, .timeout_ms = WAIT_MS};
    assert_int_equal(sn_node_put(c.node[0], "big", 3, "data", 4, v, big, &w), SN_EREFUSED);
    free(v);
    /* the write stays on the writer, as one that timed out would */
    assert_int_equal(sn_node_exists(c.node[0], "big", 3), 1);
    assert_int_equal(sn_node_exists(c.node[1], "big", 3), 0);
    sn_node_stats_t st;
    sn_node_stats(c.node[1], &st);
    assert_int_equal(st.apply_refused, 1);
    assert_int_equal(st.bad_frames, 0);
    sn_node_stats(c.node[0], &st);
    assert_int_equal(st.acks_refused, 1);
    assert_int_equal(st.acks_timed_out, 0);
    /* what fits is still acknowledged */
    assert_int_equal(sn_node_put(c.node[0], "small", 5, "data", 4, "x", 1, &w), 0);
    assert_int_equal(sn_node_exists(c.node[1], "small", 5), 1);
    cluster_stop(&c);
}

/* Node 0's replication queue takes one 40 KiB write at a time; nobody
 * compares sessions periodically. */
static void small_queue(int i, sn_config_t *cfg, void *arg)
{
    (void) arg;
    cfg->antientropy_ms = 0;
    if (i == 0)
        cfg->queue_bytes = 64u << 10;
}

/* Writes that find the replication queue full are still replicated: the
 * origin leaves a hole in its publish sequence, and receivers, finding
 * nothing to repair it from, compare with the origin at once rather than at
 * the next periodic anti-entropy (off here). Their dots count as published,
 * so tombstones are still collected; and a write that asked for
 * acknowledgements when its delta could not be queued says so. */
static void test_writes_past_a_full_queue_reach_every_node(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start_with(&c, 3, small_queue, NULL);
    wait_connected(&c);
    enum { MAX = 5000, VALUE = 40 << 10 };
    char *v = malloc(VALUE);
    assert_non_null(v);
    char id[32];
    sn_node_stats_t st = {0};
    int n = 0, busy = 0;
    /* unacknowledged writes until the queue overflowed a few times, then
     * pairs of an unacknowledged and an acknowledged one, until 200 writes
     * and one of the second kind found the queue full */
    for (; n < MAX && (n < 200 || busy == 0); n++) {
        snprintf(id, sizeof id, "full:%d", n);
        memset(v, 'a' + n % 26, VALUE);
        bool acked = st.queue_overflows >= 5 && n % 2;
        sn_write_t w = {.create = 1, .acks = acked ? 2 : 0, .timeout_ms = WAIT_MS};
        int rc = sn_node_put(c.node[0], id, strlen(id), "data", 4, v, VALUE, &w);
        if (acked && rc == SN_EBUSY)
            busy++;
        else
            assert_int_equal(rc, 0);
        sn_node_stats(c.node[0], &st);
    }
    free(v);
    print_message("  %d writes, %llu not queued (%d of them asked for acks)\n", n,
                  (unsigned long long) st.queue_overflows, busy);
    assert_true(st.queue_overflows >= 5);
    assert_true(busy >= 1);
    /* applied locally all the same, and replicated like the others */
    snprintf(id, sizeof id, "full:%d", n - 1);
    assert_int_equal(sn_node_exists(c.node[0], id, strlen(id)), 1);
    wait_same_digests(&c, n, "full:%d");
    for (int i = 1; i < c.n; i++) {
        sn_node_stats(c.node[i], &st);
        assert_true(st.resyncs >= 1);
        assert_int_equal(st.bad_frames, 0);
    }
    assert_int_equal(sn_node_destroy_session(c.node[0], "full:0", 6, NULL), 0);
    uint64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        uint64_t tombstones = 0;
        for (int i = 0; i < c.n; i++) {
            sn_node_stats(c.node[i], &st);
            tombstones += st.tombstones;
        }
        if (tombstones == 0)
            break;
        if (now_ms() >= deadline)
            fail_msg("%llu tombstones left", (unsigned long long) tombstones);
        sleep_ms(20);
    }
    cluster_stop(&c);
}

/* A burst leaves the writer's queue several deltas at a time: they travel in
 * DELTAS frames, acknowledged writes among them, and arrive whole, each
 * applied once. */
static void test_a_burst_travels_in_batches_and_arrives_whole(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    enum { N = 20000 };
    for (int k = 0; k < N; k++) {
        char id[32];
        snprintf(id, sizeof id, "burst:%d", k);
        sn_write_t w = {.create = 1, .acks = k % 1000 == 999 ? 2 : 0, .timeout_ms = WAIT_MS};
        assert_int_equal(sn_node_put(c.node[0], id, strlen(id), "n", 1, id, strlen(id), &w), 0);
    }
    wait_same_digests(&c, N, "burst:%d");
    sn_node_stats_t st;
    sn_node_stats(c.node[0], &st);
    assert_true(st.deltas_sent >= N);
    assert_true(st.batches_sent > 0);
    for (int i = 1; i < c.n; i++) {
        sn_node_stats(c.node[i], &st);
        assert_int_equal(st.deltas_received, N);  /* none lost, none twice */
        assert_int_equal(st.bad_frames, 0);
    }
    cluster_stop(&c);
}

/* Writers publish their own deltas at quiet times and leave them to the
 * replication thread under a burst; both paths share one publish sequence.
 * Threads on two nodes write at once, some paced and some flat out, so the
 * paths interleave: every delta must reach every peer exactly once, in
 * sequence (no gap to repair on inproc, which loses nothing). */
enum { MT_THREADS = 4, MT_WRITES = 600 };

typedef struct {
    sn_node_t *node;
    int no;
    int failures;
} mt_writer_t;

static void *mt_write(void *arg)
{
    mt_writer_t *w = arg;
    for (int k = 0; k < MT_WRITES; k++) {
        char id[32];
        snprintf(id, sizeof id, "mt:%d:%d", w->no, k);
        if (put_s(w->node, id, "v", id))
            w->failures++;
        /* odd threads burst; even ones pause, in runs, so that the replication
         * thread is asleep again when their next write comes */
        if (w->no % 2 == 0 && k % 8 == 7) {
            struct timespec ts = {0, 300 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void test_writers_and_the_replication_thread_share_one_sequence(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    sn_node_stats_t before;
    sn_node_stats(c.node[0], &before);
    /* a quiet write publishes from the writer's thread */
    uint64_t quiet_deadline = now_ms() + WAIT_MS;
    sn_node_stats_t st;
    for (int k = 0;; k++) {
        char id[32];
        snprintf(id, sizeof id, "mt:quiet:%d", k);
        assert_int_equal(put_s(c.node[0], id, "v", id), 0);
        sn_node_stats(c.node[0], &st);
        if (st.sent_by_writers > before.sent_by_writers)
            break;
        assert_true(now_ms() < quiet_deadline);
        sleep_ms(2);
    }
    int quiet = (int) (st.deltas_sent - before.deltas_sent);

    pthread_t th[MT_THREADS];
    mt_writer_t w[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++) {
        /* three threads on node 0, one on node 1 */
        w[i] = (mt_writer_t){.node = c.node[i == MT_THREADS - 1 ? 1 : 0], .no = i};
        assert_int_equal(pthread_create(&th[i], NULL, mt_write, &w[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    for (int i = 0; i < MT_THREADS; i++) {
        char fmt[32];
        snprintf(fmt, sizeof fmt, "mt:%d:%%d", i);
        wait_same_digests(&c, MT_WRITES, fmt);
    }
    wait_same_digests(&c, quiet, "mt:quiet:%d");
    int from0 = quiet + (MT_THREADS - 1) * MT_WRITES, from1 = MT_WRITES;
    int received[3] = {from1, from0, from0 + from1};
    for (int i = 0; i < c.n; i++) {
        sn_node_stats(c.node[i], &st);
        assert_int_equal(st.deltas_received, received[i]);  /* none lost, none twice */
        assert_int_equal(st.gaps_detected, 0);
        assert_int_equal(st.bad_frames, 0);
    }
    sn_node_stats(c.node[0], &st);
    assert_int_equal(st.deltas_sent - before.deltas_sent, from0);
    assert_true(st.sent_by_writers <= st.deltas_sent);
    cluster_stop(&c);
}

/* Anti-entropy that runs while a burst is on its way finds the sessions
 * whose deltas have not arrived yet; it waits for them instead of fetching
 * each whole. Comparisons run every 10 ms here, so several fall in the
 * burst. */
static void set_antientropy(int i, sn_config_t *cfg, void *arg)
{
    (void) i;
    cfg->antientropy_ms = *(const uint32_t *) arg;
}

static void test_anti_entropy_during_a_burst_waits_for_the_deltas(void **state)
{
    (void) state;
    cluster_t c;
    uint32_t every = 10;
    cluster_start_with(&c, 2, set_antientropy, &every);
    wait_connected(&c);
    /* Bursts of 20,000 writes until a comparison has met deltas on their
     * way (on a fast pipeline a burst can slip between comparisons) */
    int n = 0;
    sn_node_stats_t a, b;
    uint64_t deadline = now_ms() + 3 * WAIT_MS;
    do {
        for (int end = n + 20000; n < end; n++) {
            char id[32];
            snprintf(id, sizeof id, "ae:%d", n);
            assert_int_equal(put_s(c.node[0], id, "n", id), 0);
            if (n % 100 == 99)
                sleep_ms(1);  /* spread over 200+ ms, so comparisons fall in it */
        }
        sleep_ms(50);
        sn_node_stats(c.node[1], &b);
    } while (b.resync_settled == 0 && now_ms() < deadline);
    wait_same_digests(&c, n, "ae:%d");
    sn_node_stats(c.node[0], &a);
    sn_node_stats(c.node[1], &b);
    print_message("  %d writes, resyncs %llu + %llu, settled %llu + %llu, fetched %llu + %llu\n",
                  n, (unsigned long long) a.resyncs, (unsigned long long) b.resyncs,
                  (unsigned long long) a.resync_settled, (unsigned long long) b.resync_settled,
                  (unsigned long long) a.full_fetches, (unsigned long long) b.full_fetches);
    assert_true(b.resyncs >= 1);
    /* B compared while deltas were on their way, and they closed it */
    assert_true(b.resync_settled > 0);
    /* A is never behind B: comparing with B gives it nothing to fetch */
    assert_int_equal(a.full_fetches, 0);
    assert_int_equal(a.resync_settled, 0);
    /* whatever B still fetched waited out SETTLE_MS: rare, never the burst */
    assert_true(b.full_fetches < (uint64_t) n / 100);
    assert_int_equal(b.deltas_received, n);
    cluster_stop(&c);
}

/* A page's answer lost on the way (a connection libzmq dropped and made
 * anew) does not leave the round waiting for good: after RESYNC_SILENT_MS
 * (5 s) the page is asked for again, the round ends, and the next round
 * can start (a round with a peer that is still running is not counted
 * again, so a second round shows the first one ended). */
static void drop_first_digest_rep(int i, sn_config_t *cfg, void *arg)
{
    (void) arg;
    if (i == 1) {
        cfg->antientropy_ms = 200;
        cfg->test_drop_digest_reps = 1;
    }
}

static void test_anti_entropy_asks_again_for_a_page_whose_answer_was_lost(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start_with(&c, 2, drop_first_digest_rep, NULL);
    wait_connected(&c);
    for (int i = 0; i < 100; i++) {
        char id[32];
        snprintf(id, sizeof id, "lost:%d", i);
        assert_int_equal(put_s(c.node[0], id, "n", id), 0);
    }
    wait_same_digests(&c, 100, "lost:%d");
    sn_node_stats_t b;
    uint64_t deadline = now_ms() + 5000 + 3 * WAIT_MS;
    do {
        sleep_ms(50);
        sn_node_stats(c.node[1], &b);
    } while ((b.resync_retries == 0 || b.resyncs < 2) && now_ms() < deadline);
    print_message("  resyncs %llu, retries %llu\n", (unsigned long long) b.resyncs,
                  (unsigned long long) b.resync_retries);
    assert_int_equal(b.resync_retries, 1);
    assert_true(b.resyncs >= 2);
    assert_int_equal(b.full_fetches, 0);
    assert_int_equal(b.bad_frames, 0);
    cluster_stop(&c);
}

static void test_tombstones_are_collected_once_every_node_has_them(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    char id[32];
    for (int k = 0; k < 100; k++) {
        snprintf(id, sizeof id, "gc:%d", k);
        assert_int_equal(put_s(c.node[k % 3], id, "user", id), 0);
    }
    wait_same_digests(&c, 100, "gc:%d");
    for (int k = 0; k < 100; k += 2) {
        snprintf(id, sizeof id, "gc:%d", k);
        assert_int_equal(sn_node_destroy_session(c.node[(k / 2) % 3], id, strlen(id), NULL), 0);
    }
    uint64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        uint64_t tombstones = 0, sessions = 0;
        for (int i = 0; i < c.n; i++) {
            sn_node_stats_t st;
            sn_node_stats(c.node[i], &st);
            tombstones += st.tombstones;
            sessions += st.sessions;
        }
        if (tombstones == 0 && sessions == 3 * 50)
            break;
        if (now_ms() >= deadline)
            fail_msg("%llu tombstones and %llu sessions left", (unsigned long long) tombstones,
                     (unsigned long long) sessions);
        sleep_ms(20);
    }
    /* collected sessions stay gone, and a new login with an old id works */
    assert_int_equal(sn_node_exists(c.node[1], "gc:0", 4), 0);
    assert_int_equal(put_s(c.node[2], "gc:0", "user", "again"), 0);
    for (int r = 0; r < c.n; r++)
        wait_value(c.node[r], "gc:0", "user", "again");
    cluster_stop(&c);
}

static void test_a_session_expires_on_every_node(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0);
    wait_connected(&c);
    sn_write_t w = {.create = 1, .max_inactive = 1};
    uint64_t t0 = now_ms();
    assert_int_equal(sn_node_put(c.node[0], "short", 5, "user", 4, "eve", 3, &w), 0);
    assert_int_equal(put_s(c.node[0], "long", "user", "frank"), 0);
    for (int r = 0; r < c.n; r++)
        wait_value(c.node[r], "long", "user", "frank");
    /* max_inactive runs from the last access, on every node; polled with
     * exists, which is not an access */
    uint64_t deadline = now_ms() + WAIT_MS;
    for (int r = 0; r < c.n; r++) {
        while (sn_node_exists(c.node[r], "short", 5) == 1) {
            assert_true(now_ms() < deadline);
            sleep_ms(10);
        }
    }
    assert_true(now_ms() - t0 >= 950);  /* not before its time */
    for (int r = 0; r < c.n; r++)
        wait_value(c.node[r], "long", "user", "frank");
    cluster_stop(&c);
}

typedef struct {
    int calls;
    char last[64];
} changes_t;

static void count_change(const void *id, size_t id_len, void *arg)
{
    changes_t *ch = arg;
    snprintf(ch->last, sizeof ch->last, "%.*s", (int) id_len, (const char *) id);
    __atomic_add_fetch(&ch->calls, 1, __ATOMIC_SEQ_CST);  /* publishes `last` */
}

static void watch_second(int i, sn_config_t *cfg, void *arg)
{
    if (i == 1) {
        cfg->on_change = count_change;
        cfg->on_change_arg = arg;
    }
}

static void test_a_peer_change_is_notified_after_it_is_readable(void **state)
{
    (void) state;
    cluster_t c;
    changes_t ch = {0};
    cluster_start_with(&c, 2, watch_second, &ch);
    wait_connected(&c);
    assert_int_equal(put_s(c.node[0], "note:1", "user", "grace"), 0);
    uint64_t deadline = now_ms() + WAIT_MS;
    while (__atomic_load_n(&ch.calls, __ATOMIC_SEQ_CST) == 0) {
        assert_true(now_ms() < deadline);
        sleep_ms(1);
    }
    assert_string_equal(ch.last, "note:1");
    assert_int_equal(sn_node_exists(c.node[1], "note:1", 6), 1);
    /* local writes are not notified */
    int before = __atomic_load_n(&ch.calls, __ATOMIC_SEQ_CST);
    assert_int_equal(put_s(c.node[1], "note:2", "user", "heidi"), 0);
    sleep_ms(50);
    assert_int_equal(__atomic_load_n(&ch.calls, __ATOMIC_SEQ_CST), before);
    cluster_stop(&c);
}


static void copy_cas(const sn_item_t *it, void *arg)
{
    *(uint64_t *) arg = it->cas;
}

static int member_state_of(sn_node_t *node, const char *address)
{
    sn_member_t m[MAX_NODES];
    size_t n = 0;
    assert_int_equal(sn_node_members(node, m, MAX_NODES, &n), 0);
    for (size_t i = 0; i < n && i < MAX_NODES; i++)
        if (strcmp(m[i].address, address) == 0)
            return m[i].state;
    return -1;
}

static void test_items_flush_and_leave_reach_every_node(void **state)
{
    (void) state;
    cluster_t c;
    cluster_start(&c, 3, 0.0);
    wait_connected(&c);
    uint64_t cas0 = 0;
    assert_int_equal(sn_node_item_store(c.node[0], "k", 1, NULL, 0, SN_ITEM_SET, "v1", 2, 5, 0,
                                        0, &cas0, NULL), 0);
    wait_value(c.node[2], "k", "", "v1");
    /* the CAS unique read on one node is accepted on another */
    uint64_t cas2 = 0;
    assert_int_equal(sn_node_item_get(c.node[2], "k", 1, NULL, 0, -1, copy_cas, &cas2), 0);
    assert_true(cas2 == cas0);
    assert_int_equal(sn_node_item_store(c.node[2], "k", 1, NULL, 0, SN_ITEM_CAS, "v2", 2, 5, 0,
                                        cas2, NULL, NULL), 0);
    wait_value(c.node[0], "k", "", "v2");
    assert_int_equal(sn_node_item_store(c.node[0], "k", 1, NULL, 0, SN_ITEM_CAS, "v3", 2, 5, 0,
                                        cas0, NULL, NULL), SN_EEXISTS);
    uint64_t n = 0;
    assert_int_equal(sn_node_item_arith(c.node[1], "n", 1, NULL, 0, 0, 1, 1, 41, 0, &n, NULL,
                                        NULL), 0);
    assert_int_equal(sn_node_item_arith(c.node[1], "n", 1, NULL, 0, 0, 1, 1, 0, 0, &n, NULL,
                                        NULL), 0);
    assert_true(n == 42);
    wait_value(c.node[0], "n", "", "42");

    /* flush_all on one node empties them all */
    uint64_t flushed = 0;
    assert_int_equal(sn_node_flush(c.node[1], &flushed), 0);
    assert_true(flushed == 2);
    for (int i = 0; i < 3; i++) {
        wait_value(c.node[i], "k", "", NULL);
        wait_value(c.node[i], "n", "", NULL);
    }

    /* a node that leaves is listed as left, not suspected: a LEAVE that
     * did not arrive would leave it alive until suspected, then dead. Each
     * peer gets the LEAVE on its own, so node 1 may list it a moment after
     * node 0 does. */
    assert_int_equal(sn_node_leave(c.node[2], 500), 0);
    uint64_t deadline = now_ms() + WAIT_MS;
    while (member_state_of(c.node[0], c.addr[2]) != SN_MEMBER_LEFT) {
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
    sn_node_destroy(&c.node[2]);
    int st1;
    while ((st1 = member_state_of(c.node[1], c.addr[2])) != SN_MEMBER_LEFT) {
        assert_int_equal(st1, SN_MEMBER_ALIVE);  /* never suspected on the way */
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
    cluster_stop(&c);
}

/* Runs on node 0's replication thread, after the reply went out. */
static void note_leave(void *arg)
{
    atomic_fetch_add((_Atomic int *) arg, 1);
}

static void ask_leave_hook(int i, sn_config_t *cfg, void *arg)
{
    if (i == 0) {
        cfg->on_leave = note_leave;
        cfg->on_leave_arg = arg;
    }
}

/* Sends one control command to node 0's ROUTER; returns the status and
 * leaves the unpacked map in *u. */
static int control(cluster_t *c, const char *cmd, const char *arg, msgpack_unpacked *u)
{
    char router[96];
    snprintf(router, sizeof router, "%s.router", c->addr[0]);
    zsock_t *d = zsock_new_dealer(router);
    assert_non_null(d);
    sn_msg_t m = {.type = SN_MSG_CONTROL};
    m.u.control.command = (const uint8_t *) cmd;
    m.u.control.command_len = (uint32_t) strlen(cmd);
    m.u.control.arg = (const uint8_t *) arg;
    m.u.control.arg_len = (uint32_t) strlen(arg);
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_msg_encode(&m, &buf, &len), 0);
    zframe_t *f = zframe_new(buf, len);
    free(buf);
    assert_int_equal(zframe_send(&f, d, 0), 0);
    zsock_set_rcvtimeo(d, WAIT_MS);
    zframe_t *r = zframe_recv(d);
    assert_non_null(r);
    sn_msg_decoded_t dm;
    assert_int_equal(sn_msg_decode(zframe_data(r), zframe_size(r), &dm), 0);
    assert_int_equal(dm.msg.type, SN_MSG_CONTROL_REP);
    int status = -(int) dm.msg.u.control_rep.status;
    msgpack_unpacked_init(u);
    if (status == 0) {
        /* the unpacked strings point into the bytes: keep them until the
         * next call */
        static char body[1 << 16];
        size_t off = 0, n = dm.msg.u.control_rep.body_len;
        assert_true(n <= sizeof body);
        memcpy(body, dm.msg.u.control_rep.body, n);
        assert_int_equal(msgpack_unpack_next(u, body, n, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(u->data.type, MSGPACK_OBJECT_MAP);
    }
    sn_msg_release(&dm);
    zframe_destroy(&r);
    zsock_destroy(&d);
    return status;
}

static const msgpack_object *field(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    fail_msg("no field %s", key);
    return NULL;
}

static void test_control_answers_an_operator(void **state)
{
    (void) state;
    _Atomic int left = 0;
    cluster_t c;
    cluster_start_with(&c, 2, ask_leave_hook, &left);
    wait_connected(&c);
    assert_int_equal(put_s(c.node[1], "s1", "user", "alice"), 0);
    wait_value(c.node[0], "s1", "user", "alice");
    uint64_t deadline = now_ms() + WAIT_MS;
    msgpack_unpacked u;
    /* members: the peer, alive, with its session count */
    for (;;) {
        assert_int_equal(control(&c, "members", "", &u), 0);
        const msgpack_object *members = field(&u.data, "members");
        assert_int_equal(members->via.array.size, 1);
        const msgpack_object *peer = &members->via.array.ptr[0];
        const msgpack_object *st = field(peer, "state");
        bool done = st->via.str.size == 5 && memcmp(st->via.str.ptr, "alive", 5) == 0 &&
                    field(peer, "sessions")->via.u64 == 1;
        assert_int_equal(field(field(&u.data, "node"), "sessions")->via.u64, 1);
        msgpack_unpacked_destroy(&u);
        if (done)
            break;
        assert_true(now_ms() < deadline);
        sleep_ms(10);
    }
    assert_int_equal(control(&c, "stats", "", &u), 0);
    assert_true(field(&u.data, "deltas_received")->via.u64 >= 1);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(control(&c, "session", "s1", &u), 0);
    const msgpack_object *attrs = field(&u.data, "attributes");
    assert_int_equal(attrs->via.array.size, 1);
    const msgpack_object *v = field(&attrs->via.array.ptr[0], "value");
    assert_int_equal(v->via.bin.size, 5);
    assert_memory_equal(v->via.bin.ptr, "alice", 5);
    assert_int_equal(field(&u.data, "version_vector")->via.map.size, 1);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(control(&c, "session", "nope", &u), SN_ENOTFOUND);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(control(&c, "session", "bad id", &u), SN_EBADID);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(control(&c, "frobnicate", "", &u), SN_EINVAL);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(control(&c, "join", "nonsense", &u), SN_EINVAL);
    msgpack_unpacked_destroy(&u);
    /* leave: the peer sees it, and the application is told */
    assert_int_equal(control(&c, "leave", "", &u), 0);
    msgpack_unpacked_destroy(&u);
    deadline = now_ms() + WAIT_MS;
    while (atomic_load(&left) == 0) {
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
    assert_int_equal(atomic_load(&left), 1);
    while (member_state_of(c.node[1], c.addr[0]) != SN_MEMBER_LEFT) {
        assert_true(now_ms() < deadline);
        sleep_ms(5);
    }
    cluster_stop(&c);
}

/* A port P with P and P+1 free on 127.0.0.1 (a TCP node binds both),
 * below the ephemeral range. Where the search starts depends on the
 * process, so that two test programs run side by side (ctest -j) do not
 * try the same ports in the same order. */
static int free_port_pair(void)
{
    int start = (int) (getpid() % 6000) * 2;
    for (int tries = 0; tries < 500; tries++) {
        int p = 20000 + (start + 2 * tries) % 12000, ok = 1;
        for (int k = 0; k < 2 && ok; k++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) (p + k))};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            ok = fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof a) == 0;
            if (fd >= 0)
                close(fd);
        }
        if (ok)
            return p;
    }
    fail_msg("no free port pair");
    return -1;
}

static uint64_t bad_frames_of(sn_node_t *n)
{
    sn_node_stats_t st;
    sn_node_stats(n, &st);
    return st.bad_frames;
}

/* Over TCP, a frame larger than any the protocol has is cut off by libzmq
 * (the connection is dropped) before the node allocates or decodes it. */
static void test_an_oversize_frame_never_reaches_the_node(void **state)
{
    (void) state;
    int port = free_port_pair();
    char cluster[64], router[64];
    snprintf(cluster, sizeof cluster, "tcp://127.0.0.1:%d", port);
    snprintf(router, sizeof router, "tcp://127.0.0.1:%d", port + 1);
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.cluster = cluster;
    cfg.log = quiet_log;
    sn_node_t *n = sn_node_new(&cfg);
    assert_non_null(n);
    assert_int_equal(sn_node_start(n), 0);

    zsock_t *bad = zsock_new_dealer(router);
    assert_non_null(bad);
    zsock_set_linger(bad, 0);
    zframe_t *f = zframe_new(NULL, (size_t) SN_MSG_FRAME_MAX + 1);
    assert_non_null(f);
    memset(zframe_data(f), 0x90, zframe_size(f));
    assert_int_equal(zframe_send(&f, bad, 0), 0);
    uint64_t until = now_ms() + 1500;
    while (now_ms() < until) {
        assert_int_equal(bad_frames_of(n), 0);
        sleep_ms(50);
    }
    /* a small undecodable frame does arrive, and is counted: the check
     * above could see one */
    zsock_t *small = zsock_new_dealer(router);
    assert_non_null(small);
    zsock_set_linger(small, 0);
    assert_int_equal(zstr_send(small, "not a frame"), 0);
    until = now_ms() + WAIT_MS;
    while (bad_frames_of(n) == 0) {
        assert_true(now_ms() < until);
        sleep_ms(10);
    }
    assert_int_equal(bad_frames_of(n), 1);
    zsock_destroy(&small);
    zsock_destroy(&bad);
    sn_node_destroy(&n);
}

/* Nodes 1.. know only node 0; node 0 knows nobody. */
static void seed_only(int i, sn_config_t *cfg, void *arg)
{
    static const char *seed[2], *none[1];
    seed[0] = ((cluster_t *) arg)->addr[0];
    cfg->peers = i == 0 ? none : seed;
}

static void test_a_node_joining_through_one_seed_meets_every_member(void **state)
{
    (void) state;
    cluster_t c;
    memset(&c, 0, sizeof c);
    /* seed_only reads the addresses, which cluster_start_with writes
     * before it configures the first node */
    cluster_start_with(&c, 4, seed_only, &c);
    wait_connected(&c);
    uint64_t learned = 0;
    for (int i = 1; i < 4; i++) {
        sn_node_stats_t st;
        sn_node_stats(c.node[i], &st);
        assert_int_equal(st.peers_alive, 3);
        learned += st.members_learned;
    }
    /* nodes 1-3 met each other only through node 0's lists */
    assert_true(learned >= 3);
    /* and each hears the others' writes directly */
    assert_int_equal(put_s(c.node[3], "s3", "k", "from-3"), 0);
    assert_int_equal(put_s(c.node[1], "s1", "k", "from-1"), 0);
    wait_value(c.node[1], "s3", "k", "from-3");
    wait_value(c.node[2], "s3", "k", "from-3");
    wait_value(c.node[3], "s1", "k", "from-1");
    cluster_stop(&c);
}

static void test_configuration_errors_are_reported(void **state)
{
    (void) state;
    sn_config_t cfg;
    sn_config_init(&cfg);
    assert_null(sn_node_new(&cfg));             /* no cluster address */
    cfg.cluster = "udp://nowhere";
    assert_null(sn_node_new(&cfg));             /* unknown transport */
    cfg.cluster = "inproc://config-errors";
    cfg.suspect_ms = 2000;
    cfg.dead_ms = 2000;
    assert_null(sn_node_new(&cfg));             /* no time to be suspect */
    cfg.dead_ms = 0;                            /* 30 heartbeats: 3000 ms */
    sn_node_t *ok = sn_node_new(&cfg);
    assert_non_null(ok);
    sn_node_destroy(&ok);
    cfg.suspect_ms = 5000;                      /* past the derived 3000 */
    assert_null(sn_node_new(&cfg));
    cfg.suspect_ms = 0;
    cfg.cluster = "inproc://config-errors";
    sn_node_t *a = sn_node_new(&cfg);
    assert_non_null(a);
    assert_int_equal(sn_node_wait_ready(a, 10), SN_ESTATE);
    assert_int_equal(sn_node_start(a), 0);
    assert_int_equal(sn_node_start(a), SN_ESTATE);
    sn_node_t *b = sn_node_new(&cfg);           /* same address */
    assert_non_null(b);
    assert_int_equal(sn_node_start(b), SN_EADDR);
    sn_node_destroy(&b);
    sn_node_destroy(&a);
    assert_null(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configuration_errors_are_reported),
        cmocka_unit_test(test_a_write_on_any_node_is_readable_on_all),
        cmocka_unit_test(test_items_flush_and_leave_reach_every_node),
        cmocka_unit_test(test_control_answers_an_operator),
        cmocka_unit_test(test_a_node_joining_through_one_seed_meets_every_member),
        cmocka_unit_test(test_an_oversize_frame_never_reaches_the_node),
        cmocka_unit_test(test_a_peer_change_is_notified_after_it_is_readable),
        cmocka_unit_test(test_deletes_and_attribute_removals_propagate),
        cmocka_unit_test(test_a_session_expires_on_every_node),
        cmocka_unit_test(test_a_node_lost_without_warning_leaves_every_session_served),
        cmocka_unit_test(test_a_write_with_two_acks_returns_when_two_peers_hold_it),
        cmocka_unit_test(test_nodes_converge_when_a_tenth_of_deltas_are_dropped),
        cmocka_unit_test(test_a_burst_travels_in_batches_and_arrives_whole),
        cmocka_unit_test(test_writers_and_the_replication_thread_share_one_sequence),
        cmocka_unit_test(test_anti_entropy_during_a_burst_waits_for_the_deltas),
        cmocka_unit_test(test_anti_entropy_asks_again_for_a_page_whose_answer_was_lost),
        cmocka_unit_test(test_tombstones_are_collected_once_every_node_has_them),
        cmocka_unit_test(test_acknowledged_writes_complete_through_repairs_when_deltas_drop),
        cmocka_unit_test(test_a_write_a_peer_cannot_hold_is_refused_not_acknowledged),
        cmocka_unit_test(test_writes_past_a_full_queue_reach_every_node),
        cmocka_unit_test(test_a_joining_node_ends_with_the_same_sessions),
    };
    /* SN_TEST_FILTER=pattern runs the matching tests only (cmocka's
     * wildcards), to repeat one */
    if (getenv("SN_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
