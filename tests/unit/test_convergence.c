/*
 * test_convergence.c - randomized convergence of replica stores.
 *
 * Each seed builds a small world: 3-5 replica stores with distinct node ids,
 * a shared fake clock, a handful of session ids and attribute names, so that
 * writes collide often. Random local operations emit deltas, which are
 * encoded with the wire codec and queued for every other replica. Deliveries
 * happen in random order, some twice, some never (dropped). A delta the
 * receiver cannot apply (NEED_FULL) is repaired the way a node will repair
 * it: the full session is exported by the delta's origin, encoded, decoded
 * and merged. Random anti-entropy merges run between pairs, and at random
 * quiescent points tombstones are garbage-collected on a random subset of
 * replicas, so that lagging replicas meet collected ones.
 *
 * At the end every queue is drained, a full anti-entropy round runs, every
 * replica collects with the final stable vector, and all replicas must hold
 * byte-identical encodings of every session.
 *
 *   test_convergence --seeds N      run seeds 1..N (default 1000)
 *   test_convergence --seed S       replay one seed, with a trace on stderr
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sn_store.h"
#include "sn_wire.h"
#include "sn_test_dump.h"

#define MAX_REPLICAS 5
#define NKEYS 6
#define NNAMES 3

typedef struct {
    uint8_t *bytes;
    size_t len;
} msg_t;

typedef struct {
    msg_t *v;
    size_t n, cap;
} queue_t;

typedef struct world world_t;

typedef struct {
    world_t *world;
    int index;
    sn_store_t *store;
    queue_t inbox;
} replica_t;

struct world {
    uint64_t rng;
    uint64_t now_ms;
    int nrep;
    replica_t rep[MAX_REPLICAS];
    bool trace;
    char failure[512];
};

static uint64_t g_seeds = 1000;
static uint64_t g_seed_only;
static bool g_replay;

static uint64_t rnd(world_t *w)
{
    /* splitmix64: tiny, and the same sequence on every platform */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t below(world_t *w, uint32_t n)
{
    return (uint32_t) (rnd(w) % n);
}

static void world_fail(world_t *w, const char *fmt, ...)
{
    if (w->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->failure, sizeof w->failure, fmt, ap);
    va_end(ap);
}

static void trace(world_t *w, const char *fmt, ...)
{
    if (!w->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t fake_clock(void *arg)
{
    return ((world_t *) arg)->now_ms;
}

static void push(queue_t *q, uint8_t *bytes, size_t len)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->v = realloc(q->v, q->cap * sizeof *q->v);
        assert_non_null(q->v);
    }
    q->v[q->n++] = (msg_t){bytes, len};
}

/* Every delta is broadcast: one encoded copy per other replica. */
static void sink(const sn_delta_t *d, void *arg)
{
    replica_t *self = arg;
    world_t *w = self->world;
    uint8_t *buf;
    size_t len;
    int rc = sn_wire_encode_delta(d, &buf, &len);
    if (rc) {
        world_fail(w, "encode_delta: %s", sn_strerror(rc));
        return;
    }
    for (int i = 0; i < w->nrep; i++) {
        if (i == self->index)
            continue;
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, buf, len);
        push(&w->rep[i].inbox, copy, len);
    }
    free(buf);
}

static void key_of(int k, char *out)
{
    snprintf(out, 16, "sess:%d", k);
}

/* ------------------------------------------------------------ repair */

typedef struct {
    uint8_t *bytes;
    size_t len;
    int rc;
} encoded_t;

static void encode_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    encoded_t *e = arg;
    e->rc = sn_wire_encode_state(id, id_len, st, &e->bytes, &e->len);
}

/* Copies session `id` from replica `from` to replica `to` through the wire
 * codec: export, encode, decode, merge. Returns the merge outcome. */
static int transfer(world_t *w, int from, int to, const uint8_t *id, size_t id_len)
{
    encoded_t e = {0};
    int rc = sn_store_export(w->rep[from].store, id, id_len, encode_cb, &e);
    if (rc == SN_ENOTFOUND)
        return rc;
    if (rc || e.rc) {
        world_fail(w, "export/encode %.*s from %d: %s", (int) id_len, id, from,
             sn_strerror(rc ? rc : e.rc));
        free(e.bytes);
        return SN_EINVAL;
    }
    sn_wire_state_t msg;
    rc = sn_wire_decode_state(e.bytes, e.len, &msg);
    if (rc) {
        world_fail(w, "decode_state: %s", sn_strerror(rc));
        free(e.bytes);
        return rc;
    }
    rc = sn_store_merge(w->rep[to].store, msg.id, msg.id_len, &msg.state);
    if (rc < 0)
        world_fail(w, "merge %.*s %d->%d: %s", (int) id_len, id, from, to, sn_strerror(rc));
    sn_wire_state_release(&msg);
    free(e.bytes);
    return rc;
}

static int replica_of(world_t *w, uint64_t node)
{
    for (int i = 0; i < w->nrep; i++)
        if ((uint64_t) i + 1 == node)
            return i;
    return -1;
}

/* Applies message `i` of replica r's inbox; keeps it queued when `keep`. */
static void deliver(world_t *w, int r, size_t i, bool keep)
{
    queue_t *q = &w->rep[r].inbox;
    msg_t m = q->v[i];
    if (!keep)
        q->v[i] = q->v[--q->n];
    sn_wire_delta_t msg;
    int rc = sn_wire_decode_delta(m.bytes, m.len, &msg);
    if (rc) {
        world_fail(w, "decode_delta: %s", sn_strerror(rc));
    } else {
        const sn_delta_t *d = &msg.delta;
        rc = sn_store_apply(w->rep[r].store, d);
        trace(w, "  deliver to %d: kind %d %.*s dot %llu:%llu -> %d", r, d->kind,
              (int) d->id_len, d->id, (unsigned long long) d->dot.node,
              (unsigned long long) d->dot.counter, rc);
        if (rc < 0) {
            world_fail(w, "apply: %s", sn_strerror(rc));
        } else if (rc == SN_APPLY_NEED_FULL) {
            int origin = replica_of(w, d->dot.node);
            if (origin < 0)
                world_fail(w, "NEED_FULL for a delta of unknown origin %llu",
                     (unsigned long long) d->dot.node);
            else if (transfer(w, origin, r, d->id, d->id_len) == SN_ENOTFOUND)
                world_fail(w, "origin %d does not hold %.*s", origin, (int) d->id_len, d->id);
        }
        sn_wire_delta_release(&msg);
    }
    if (!keep)
        free(m.bytes);
}

static void drop(world_t *w, int r, size_t i)
{
    queue_t *q = &w->rep[r].inbox;
    trace(w, "  drop message %zu of %d", i, r);
    free(q->v[i].bytes);
    q->v[i] = q->v[--q->n];
}

static void drain(world_t *w)
{
    for (;;) {
        bool any = false;
        for (int r = 0; r < w->nrep; r++)
            while (w->rep[r].inbox.n) {
                any = true;
                deliver(w, r, below(w, (uint32_t) w->rep[r].inbox.n), false);
            }
        if (!any)
            return;
    }
}

/* After this, every replica holds the join of all of them. */
static void full_exchange(world_t *w)
{
    char key[16];
    for (int k = 0; k < NKEYS; k++) {
        key_of(k, key);
        for (int r = 1; r < w->nrep; r++)
            transfer(w, r, 0, (const uint8_t *) key, strlen(key));
        for (int r = 1; r < w->nrep; r++)
            transfer(w, 0, r, (const uint8_t *) key, strlen(key));
    }
}

/* Quiescent point: everything delivered everywhere, so the vector of every
 * node's latest sequence is stable. */
static void checkpoint_gc(world_t *w, bool all)
{
    drain(w);
    full_exchange(w);
    sn_dot_t dots[MAX_REPLICAS];
    sn_vv_t stable = {0, dots};
    for (int r = 0; r < w->nrep; r++) {
        uint64_t seq = sn_store_seq(w->rep[r].store);
        if (seq)
            dots[stable.n++] = (sn_dot_t){(uint64_t) r + 1, seq};
    }
    for (int r = 0; r < w->nrep; r++)
        if (all || below(w, 2)) {
            size_t n = sn_store_gc(w->rep[r].store, &stable);
            trace(w, "  gc on %d removed %zu", r, n);
        }
}

/* --------------------------------------------------------- operations */

static void random_op(world_t *w)
{
    int r = (int) below(w, (uint32_t) w->nrep);
    sn_store_t *s = w->rep[r].store;
    char key[16], name[4], value[24];
    key_of((int) below(w, NKEYS), key);
    snprintf(name, sizeof name, "%c", 'a' + (int) below(w, NNAMES));
    size_t vlen = below(w, 20);
    for (size_t i = 0; i < vlen; i++)
        value[i] = (char) ('A' + below(w, 26));
    uint32_t flags = below(w, 4);
    uint32_t op = below(w, 100);
    int rc;
    const char *what;
    if (op < 30) {
        what = "put+create";
        rc = sn_store_put(s, key, strlen(key), name, 1, value, vlen, flags, true, 3600);
    } else if (op < 42) {
        what = "put";
        rc = sn_store_put(s, key, strlen(key), name, 1, value, vlen, flags, false, 0);
    } else if (op < 50) {
        what = "create";
        rc = sn_store_create(s, key, strlen(key), 3600);
    } else if (op < 62) {
        what = "remove";
        rc = sn_store_remove(s, key, strlen(key), name, 1);
    } else if (op < 72) {
        what = "destroy";
        rc = sn_store_destroy_session(s, key, strlen(key));
    } else if (op < 80) {
        what = "touch";
        rc = sn_store_touch(s, key, strlen(key), below(w, 2) ? -1 : (int64_t) (1800 + below(w, 3600)));
    } else {
        what = "get";
        char buf[32];
        size_t len;
        rc = sn_store_get(s, key, strlen(key), name, 1, buf, sizeof buf, &len, NULL);
    }
    trace(w, "%d: %s %s %s -> %d", r, what, key, name, rc);
    if (rc != 0 && rc != SN_ENOTFOUND && rc != SN_EEXISTS)
        world_fail(w, "%s on %d: %s", what, r, sn_strerror(rc));
}

static void random_step(world_t *w)
{
    uint32_t c = below(w, 100);
    if (c < 45) {
        random_op(w);
    } else if (c < 90) {
        int r = (int) below(w, (uint32_t) w->nrep);
        queue_t *q = &w->rep[r].inbox;
        if (!q->n)
            return;
        size_t i = below(w, (uint32_t) q->n);
        uint32_t fate = below(w, 100);
        if (fate < 10)
            drop(w, r, i);
        else
            deliver(w, r, i, fate < 25);
    } else if (c < 96) {
        int a = (int) below(w, (uint32_t) w->nrep), b = (int) below(w, (uint32_t) w->nrep);
        char key[16];
        key_of((int) below(w, NKEYS), key);
        if (a != b) {
            int rc = transfer(w, a, b, (const uint8_t *) key, strlen(key));
            trace(w, "  anti-entropy %s %d->%d -> %d", key, a, b, rc);
        }
    } else if (c < 99) {
        w->now_ms += below(w, 3000);
    } else {
        checkpoint_gc(w, false);
    }
}

/* ------------------------------------------------------------ compare */

typedef struct {
    char id[SN_ID_MAX + 1];
    uint8_t *bytes;
    size_t len;
} snap_t;

typedef struct {
    snap_t v[64];
    int n;
    world_t *w;
} snapshot_t;

static void snap_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    snapshot_t *s = arg;
    if (s->n == 64) {
        world_fail(s->w, "more sessions than ids");
        return;
    }
    snap_t *e = &s->v[s->n++];
    memcpy(e->id, id, id_len);
    e->id[id_len] = 0;
    if (sn_wire_encode_state(id, id_len, st, &e->bytes, &e->len))
        world_fail(s->w, "encode_state in snapshot");
}

static int snap_cmp(const void *a, const void *b)
{
    return strcmp(((const snap_t *) a)->id, ((const snap_t *) b)->id);
}

static void snapshot(world_t *w, int r, snapshot_t *out)
{
    out->n = 0;
    out->w = w;
    uint64_t cursor = 0;
    while (sn_store_scan(w->rep[r].store, &cursor, 1000, snap_cb, out) == 1)
        ;
    qsort(out->v, (size_t) out->n, sizeof out->v[0], snap_cmp);
}

static void snapshot_free(snapshot_t *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i].bytes);
}

/* In replay mode, shows one session on every replica. */
static void dump_session(world_t *w, const char *id)
{
    if (!w->trace)
        return;
    for (int r = 0; r < w->nrep; r++) {
        fprintf(stderr, "  replica %d:\n", r);
        sn_store_export(w->rep[r].store, id, strlen(id), sn_test_dump_state, NULL);
    }
}

static void compare_all(world_t *w)
{
    static snapshot_t ref, other;
    snapshot(w, 0, &ref);
    for (int r = 1; r < w->nrep && !w->failure[0]; r++) {
        snapshot(w, r, &other);
        if (other.n != ref.n)
            world_fail(w, "replica %d holds %d sessions, replica 0 holds %d", r, other.n, ref.n);
        for (int i = 0; i < ref.n && i < other.n && !w->failure[0]; i++) {
            if (strcmp(ref.v[i].id, other.v[i].id))
                world_fail(w, "replica %d holds %s where replica 0 holds %s", r, other.v[i].id,
                     ref.v[i].id);
            else if (ref.v[i].len != other.v[i].len ||
                     memcmp(ref.v[i].bytes, other.v[i].bytes, ref.v[i].len)) {
                world_fail(w, "session %s differs between replica 0 and replica %d",
                           ref.v[i].id, r);
                dump_session(w, ref.v[i].id);
            }
        }
        snapshot_free(&other);
    }
    snapshot_free(&ref);
}

/* --------------------------------------------------------------- seeds */

static bool run_seed(uint64_t seed, bool trace_on, char *why, size_t why_len)
{
    world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->rng = seed;
    w->trace = trace_on;
    w->now_ms = 1700000000000ull;
    w->nrep = 3 + (int) below(w, MAX_REPLICAS - 2);
    for (int r = 0; r < w->nrep; r++) {
        replica_t *rep = &w->rep[r];
        rep->world = w;
        rep->index = r;
        sn_store_options_t opt = {
            .node_id = (uint64_t) r + 1,
            .shards = 1u << below(w, 3),
            .clock = fake_clock,
            .clock_arg = w,
            .sink = sink,
            .sink_arg = rep,
            .hash_seed = seed + (uint64_t) r,
        };
        rep->store = sn_store_new(&opt);
        assert_non_null(rep->store);
    }
    int steps = 200 + (int) below(w, 300);
    for (int i = 0; i < steps && !w->failure[0]; i++)
        random_step(w);
    if (!w->failure[0]) {
        checkpoint_gc(w, true);
        compare_all(w);
    }
    bool ok = !w->failure[0];
    if (!ok)
        snprintf(why, why_len, "%s", w->failure);
    for (int r = 0; r < w->nrep; r++) {
        for (size_t i = 0; i < w->rep[r].inbox.n; i++)
            free(w->rep[r].inbox.v[i].bytes);
        free(w->rep[r].inbox.v);
        sn_store_destroy(&w->rep[r].store);
    }
    free(w);
    return ok;
}

static void test_replicas_converge_byte_identical(void **state)
{
    (void) state;
    char why[512];
    if (g_replay) {
        bool ok = run_seed(g_seed_only, true, why, sizeof why);
        if (!ok)
            fail_msg("seed %llu failed: %s", (unsigned long long) g_seed_only, why);
        return;
    }
    uint64_t failed = 0;
    for (uint64_t seed = 1; seed <= g_seeds; seed++) {
        if (!run_seed(seed, false, why, sizeof why)) {
            if (failed++ < 5)
                print_error("seed %llu failed: %s (replay: test_convergence --seed %llu)\n",
                            (unsigned long long) seed, why, (unsigned long long) seed);
        }
    }
    print_message("%llu seeds run, %llu failed\n", (unsigned long long) g_seeds,
                  (unsigned long long) failed);
    assert_int_equal(failed, 0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            g_seeds = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            g_seed_only = strtoull(argv[++i], NULL, 10);
            g_replay = true;
        } else {
            fprintf(stderr, "usage: %s [--seeds N | --seed S]\n", argv[0]);
            return 2;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicas_converge_byte_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
