/*
 * test_stress.c - many threads on one store.
 *
 * Four writers, four readers, an applier and a janitor share one store (node
 * 1) over a small key space, so that they keep meeting on the same sessions
 * and shards. The applier owns a second store (node 2), writes to it and
 * applies its deltas to the shared one, repairing by export and merge when
 * told NEED_FULL. The janitor moves the fake clock and runs expiry, scans,
 * stats and tombstone GC.
 *
 * Every value carries its session id, its attribute name and a checksum,
 * and its flags are derived from that checksum: a reader that sees a torn,
 * stale-pointer or foreign value notices. Worker threads never call cmocka
 * (its assertions are not thread-safe); they count failures and keep the
 * first message, which the main thread asserts on. At the end, with every
 * thread stopped, the counters must agree with a full scan.
 *
 * The run is randomized: it prints its seed, and `test_stress --seed N` (or
 * SN_STRESS_SEED=N) replays every thread's sequence of operations (their
 * interleaving is up to the scheduler); SN_STRESS_SCALE=N multiplies the
 * operation counts.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sn_store.h"

#define IDS 200
#define WRITERS 4
#define READERS 4
#define VALUE_PAYLOAD_MAX 300
#define VALUE_CAP 1024

static const char *const names[] = {"a", "bb", "ccc", ""};
#define NAMES (sizeof names / sizeof names[0])

static uint64_t g_seed;
static unsigned g_scale = 1;

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void id_of(int i, char *out, size_t cap)
{
    snprintf(out, cap, "sess-%03d", i % 1000);
}

/* "<id>|<name>|<tag>|<payload><16 hex digits of FNV-1a over what precedes>";
 * the flags are the checksum's low 32 bits. Returns the length. */
static size_t make_value(char *out, const char *id, const char *name, uint32_t tag,
                         uint64_t *rng, uint32_t *flags)
{
    int n = snprintf(out, VALUE_CAP, "%s|%s|%08" PRIx32 "|", id, name, tag);
    size_t len = (size_t) n;
    size_t payload = (size_t) (rng_next(rng) % VALUE_PAYLOAD_MAX);
    for (size_t i = 0; i < payload; i++)
        out[len++] = (char) ('A' + rng_next(rng) % 58);
    uint64_t sum = fnv1a(out, len);
    snprintf(out + len, VALUE_CAP - len, "%016" PRIx64, sum);
    *flags = (uint32_t) sum;
    return len + 16;
}

/* Whether `v` is a value that make_value produced for this id and name. */
static bool value_intact(const void *v, size_t len, uint32_t flags, const void *id,
                         size_t id_len, const void *name, size_t name_len)
{
    const char *s = v;
    if (len < id_len + name_len + 2 + 9 + 16 || len > VALUE_CAP)
        return false;
    if (memcmp(s, id, id_len) != 0 || s[id_len] != '|')
        return false;
    if (memcmp(s + id_len + 1, name, name_len) != 0 || s[id_len + 1 + name_len] != '|')
        return false;
    uint64_t sum = fnv1a(s, len - 16);
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, sum);
    return memcmp(s + len - 16, hex, 16) == 0 && flags == (uint32_t) sum;
}

/* ---------------------------------------------------------- the shared run */

typedef struct {
    size_t memory_limit;
    uint32_t shards;
    unsigned writer_ops;
    unsigned reader_ops;
    unsigned applier_ops;
} stress_config_t;

typedef struct {
    const stress_config_t *cfg;
    sn_store_t *store;
    _Atomic uint64_t now_ms;
    _Atomic bool stop;

    pthread_mutex_t fail_lock;
    _Atomic uint64_t failures;
    char first_failure[512];

    /* what the shared store's sink saw */
    _Atomic uint64_t seen_writes;
    _Atomic uint64_t seen_destroys;
    _Atomic uint64_t seen_touches;

    _Atomic uint64_t reads_hit;
    _Atomic uint64_t reads_checked;
    _Atomic uint64_t full_refusals;
    _Atomic uint64_t need_full;
    _Atomic uint64_t repairs;
    _Atomic uint64_t scans;
} run_t;

static void note_failure(run_t *r, const char *fmt, ...)
{
    if (atomic_fetch_add(&r->failures, 1) == 0) {
        pthread_mutex_lock(&r->fail_lock);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->first_failure, sizeof r->first_failure, fmt, ap);
        va_end(ap);
        pthread_mutex_unlock(&r->fail_lock);
    }
}

static uint64_t run_clock(void *arg)
{
    return atomic_load(&((run_t *) arg)->now_ms);
}

/* Every delta the shared store emits: it comes from node 1, in order, and
 * carries intact values. Runs with a shard locked, in any thread. */
static void shared_sink(const sn_delta_t *d, void *arg)
{
    run_t *r = arg;
    if (!sn_id_valid(d->id, d->id_len)) {
        note_failure(r, "sink: delta with an invalid id");
        return;
    }
    if (d->kind == SN_DELTA_TOUCH) {
        atomic_fetch_add(&r->seen_touches, 1);
        if (d->dot.node != 0 || d->st.last_access_ms == 0)
            note_failure(r, "sink: malformed touch delta");
        return;
    }
    if (d->kind != SN_DELTA_WRITE && d->kind != SN_DELTA_DESTROY) {
        note_failure(r, "sink: unknown delta kind %d", (int) d->kind);
        return;
    }
    atomic_fetch_add(d->kind == SN_DELTA_WRITE ? &r->seen_writes : &r->seen_destroys, 1);
    if (d->dot.node != 1 || d->dot.counter == 0 || !sn_vv_valid(&d->st.vv) ||
        sn_vv_get(&d->st.vv, 1) >= d->dot.counter)
        note_failure(r, "sink: bad dot %" PRIu64 ":%" PRIu64 " for its context", d->dot.node,
             d->dot.counter);
    for (uint32_t i = 0; i < d->st.nattrs; i++) {
        const sn_attr_t *a = &d->st.attrs[i];
        if (a->origin != 1)
            note_failure(r, "sink: attribute with origin %" PRIu64, a->origin);
        if (!a->removed && !value_intact(a->value, a->value_len, a->flags, d->id, d->id_len,
                                         a->name, a->name_len))
            note_failure(r, "sink: delta carries a damaged value");
    }
}

/* Checks one full state, as export and scan hand it out. */
typedef struct {
    run_t *r;
    uint64_t alive;
    uint64_t tombstones;
} state_check_t;

static void check_state_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    state_check_t *c = arg;
    if (!sn_id_valid(id, id_len) || id_len != 8 || memcmp(id, "sess-", 5) != 0)
        note_failure(c->r, "state: foreign id");
    if (!sn_vv_valid(&st->vv) || !sn_vv_valid(&st->dv) || !sn_vv_leq(&st->dv, &st->vv))
        note_failure(c->r, "state: invalid version vectors");
    if (st->has_meta)
        c->alive++;
    else if (st->dv.n > 0)
        c->tombstones++;
    else
        note_failure(c->r, "state: neither alive nor a tombstone");
    if (!st->has_meta && st->nattrs > 0)
        note_failure(c->r, "state: a tombstone with attributes");
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        if (sn_vv_get(&st->vv, a->origin) == 0)
            note_failure(c->r, "state: attribute origin outside the version vector");
        if (i) {
            const sn_attr_t *p = &st->attrs[i - 1];
            size_t m = p->name_len < a->name_len ? p->name_len : a->name_len;
            int cmp = m ? memcmp(p->name, a->name, m) : 0;
            if (cmp > 0 || (cmp == 0 && p->name_len >= a->name_len))
                note_failure(c->r, "state: attributes not sorted by name");
        }
        if (!a->removed && !value_intact(a->value, a->value_len, a->flags, id, id_len, a->name,
                                         a->name_len))
            note_failure(c->r, "state: damaged value");
    }
}

static void full_scan(run_t *r, size_t max_visits, state_check_t *c)
{
    uint64_t cursor = 0;
    unsigned calls = 0;
    int more;
    do {
        more = sn_store_scan(r->store, &cursor, max_visits, check_state_cb, c);
        if (more < 0 || ++calls > 1000000) {
            note_failure(r, "scan: returned %d after %u calls", more, calls);
            return;
        }
    } while (more);
}

/* ------------------------------------------------------------- workers */

typedef struct {
    run_t *r;
    int index;
    pthread_t thread;
} worker_t;

static uint32_t pick_max_inactive(uint64_t *rng)
{
    static const uint32_t choices[] = {0, 2, 5, 30};
    return choices[rng_next(rng) % 4];
}

static void *writer_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->r;
    uint64_t rng = g_seed ^ (0x1000u + (uint64_t) w->index) * 0x9e3779b97f4a7c15ull;
    char id[32], value[VALUE_CAP], buf[VALUE_CAP];
    for (unsigned op = 0; op < r->cfg->writer_ops; op++) {
        id_of((int) (rng_next(&rng) % IDS), id, sizeof id);
        const char *name = names[rng_next(&rng) % NAMES];
        size_t il = strlen(id), nl = strlen(name);
        unsigned dice = (unsigned) (rng_next(&rng) % 100);
        uint32_t flags = 0;
        int rc;
        if (dice < 55) {
            size_t vl = make_value(value, id, name, (uint32_t) (w->index << 24 | op), &rng, &flags);
            rc = sn_store_put(r->store, id, il, name, nl, value, vl, flags, true,
                              pick_max_inactive(&rng));
            if (rc != 0 && rc != SN_EFULL)
                note_failure(r, "writer: put(create) returned %d", rc);
        } else if (dice < 65) {
            size_t vl = make_value(value, id, name, (uint32_t) (w->index << 24 | op), &rng, &flags);
            rc = sn_store_put(r->store, id, il, name, nl, value, vl, flags, false, 0);
            if (rc != 0 && rc != SN_ENOTFOUND && rc != SN_EFULL)
                note_failure(r, "writer: put returned %d", rc);
        } else if (dice < 75) {
            rc = sn_store_remove(r->store, id, il, name, nl);
            if (rc != 0 && rc != SN_ENOTFOUND && rc != SN_EFULL)
                note_failure(r, "writer: remove returned %d", rc);
        } else if (dice < 81) {
            rc = sn_store_destroy_session(r->store, id, il);
            if (rc != 0 && rc != SN_ENOTFOUND && rc != SN_EFULL)
                note_failure(r, "writer: destroy returned %d", rc);
        } else if (dice < 90) {
            int64_t mi = rng_next(&rng) % 2 ? -1 : (int64_t) pick_max_inactive(&rng);
            rc = sn_store_touch(r->store, id, il, mi);
            if (rc != 0 && rc != SN_ENOTFOUND && rc != SN_EFULL)
                note_failure(r, "writer: touch returned %d", rc);
        } else if (dice < 95) {
            rc = sn_store_create(r->store, id, il, pick_max_inactive(&rng));
            if (rc != 0 && rc != SN_EEXISTS && rc != SN_EFULL)
                note_failure(r, "writer: create returned %d", rc);
        } else {
            size_t len = 0;
            rc = sn_store_get(r->store, id, il, name, nl, buf, sizeof buf, &len, &flags);
            if (rc == 0 && !value_intact(buf, len, flags, id, il, name, nl))
                note_failure(r, "writer: read a damaged value for %s/%s", id, name);
            else if (rc != 0 && rc != SN_ENOTFOUND)
                note_failure(r, "writer: get returned %d", rc);
        }
        if (rc == SN_EFULL)
            atomic_fetch_add(&r->full_refusals, 1);
    }
    return NULL;
}

static void *reader_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->r;
    uint64_t rng = g_seed ^ (0x2000u + (uint64_t) w->index) * 0x9e3779b97f4a7c15ull;
    char id[32], buf[VALUE_CAP];
    uint64_t hits = 0;
    for (unsigned op = 0; op < r->cfg->reader_ops; op++) {
        id_of((int) (rng_next(&rng) % IDS), id, sizeof id);
        const char *name = names[rng_next(&rng) % NAMES];
        size_t il = strlen(id), nl = strlen(name), len = 0;
        uint32_t flags = 0;
        unsigned dice = (unsigned) (rng_next(&rng) % 16);
        int rc;
        if (dice == 0) {
            void *v = NULL;
            rc = sn_store_get_alloc(r->store, id, il, name, nl, &v, &len, &flags);
            if (rc == 0 && !value_intact(v, len, flags, id, il, name, nl))
                note_failure(r, "reader: get_alloc gave a damaged value for %s/%s", id, name);
            free(v);
        } else if (dice == 1) {
            state_check_t c = {r, 0, 0};
            rc = sn_store_export(r->store, id, il, check_state_cb, &c);
            if (rc == SN_ENOTFOUND)
                rc = 0;
        } else if (dice == 2) {
            uint64_t dg;
            (void) sn_store_exists(r->store, id, il);
            rc = sn_store_digest(r->store, id, il, &dg);
        } else {
            rc = sn_store_get(r->store, id, il, name, nl, buf, sizeof buf, &len, &flags);
            if (rc == 0 && !value_intact(buf, len, flags, id, il, name, nl))
                note_failure(r, "reader: get gave a damaged value for %s/%s", id, name);
        }
        if (rc == 0)
            hits++;
        else if (rc != SN_ENOTFOUND)
            note_failure(r, "reader: operation %u returned %d", dice, rc);
    }
    atomic_fetch_add(&r->reads_hit, hits);
    return NULL;
}

typedef struct {
    sn_delta_t *items;
    size_t n;
    size_t cap;
    bool nomem;
} delta_queue_t;

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

/* The applier's private store hands its deltas here (same thread). */
static void queue_sink(const sn_delta_t *d, void *arg)
{
    delta_queue_t *q = arg;
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 64;
        sn_delta_t *items = realloc(q->items, cap * sizeof *items);
        if (!items) {
            q->nomem = true;
            return;
        }
        q->items = items;
        q->cap = cap;
    }
    sn_delta_t *c = &q->items[q->n];
    memset(c, 0, sizeof *c);
    c->kind = d->kind;
    c->dot = d->dot;
    c->id_len = d->id_len;
    c->id = dup_bytes(d->id, d->id_len);
    c->st = d->st;
    c->st.vv.dots = d->st.vv.n ? dup_bytes(d->st.vv.dots, d->st.vv.n * sizeof(sn_dot_t)) : NULL;
    c->st.dv.dots = d->st.dv.n ? dup_bytes(d->st.dv.dots, d->st.dv.n * sizeof(sn_dot_t)) : NULL;
    c->st.attrs = NULL;
    c->st.nattrs = 0;
    if (d->st.nattrs) {
        sn_attr_t *a = calloc(d->st.nattrs, sizeof *a);
        if (!a) {
            q->nomem = true;
            return;
        }
        for (uint32_t i = 0; i < d->st.nattrs; i++) {
            a[i] = d->st.attrs[i];
            a[i].name = dup_bytes(d->st.attrs[i].name, d->st.attrs[i].name_len);
            a[i].value = d->st.attrs[i].value
                             ? dup_bytes(d->st.attrs[i].value, d->st.attrs[i].value_len)
                             : NULL;
        }
        c->st.attrs = a;
        c->st.nattrs = d->st.nattrs;
    }
    q->n++;
}

static void queue_clear(delta_queue_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        sn_delta_t *d = &q->items[i];
        free((void *) d->id);
        free(d->st.vv.dots);
        free(d->st.dv.dots);
        for (uint32_t k = 0; k < d->st.nattrs; k++) {
            free((void *) d->st.attrs[k].name);
            free((void *) d->st.attrs[k].value);
        }
        free(d->st.attrs);
    }
    q->n = 0;
}

typedef struct {
    run_t *r;
    int rc;
} merge_arg_t;

/* Runs with a shard of the private store locked; merging into the shared
 * store takes one of its locks, and nothing ever locks the other way round. */
static void merge_into_shared_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                                 void *arg)
{
    merge_arg_t *m = arg;
    m->rc = sn_store_merge(m->r->store, id, id_len, st);
}

static void *applier_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->r;
    uint64_t rng = g_seed ^ 0x3000u * 0x9e3779b97f4a7c15ull;
    delta_queue_t q = {0};
    sn_store_options_t o;
    memset(&o, 0, sizeof o);
    o.node_id = 2;
    o.shards = 4;
    o.clock = run_clock;
    o.clock_arg = r;
    o.sink = queue_sink;
    o.sink_arg = &q;
    sn_store_t *peer = sn_store_new(&o);
    if (!peer) {
        note_failure(r, "applier: sn_store_new failed");
        return NULL;
    }
    char id[32], value[VALUE_CAP], buf[VALUE_CAP];
    for (unsigned op = 0; op < r->cfg->applier_ops; op++) {
        id_of((int) (rng_next(&rng) % IDS), id, sizeof id);
        const char *name = names[rng_next(&rng) % NAMES];
        size_t il = strlen(id), nl = strlen(name), len;
        unsigned dice = (unsigned) (rng_next(&rng) % 100);
        uint32_t flags;
        int rc;
        if (dice < 70) {
            size_t vl = make_value(value, id, name, 0xa0000000u | op, &rng, &flags);
            rc = sn_store_put(peer, id, il, name, nl, value, vl, flags, true,
                              pick_max_inactive(&rng));
        } else if (dice < 80) {
            rc = sn_store_remove(peer, id, il, name, nl);
        } else if (dice < 85) {
            rc = sn_store_destroy_session(peer, id, il);
        } else {
            rc = sn_store_get(peer, id, il, name, nl, buf, sizeof buf, &len, &flags);
        }
        if (rc != 0 && rc != SN_ENOTFOUND)
            note_failure(r, "applier: private store returned %d", rc);
        if (q.nomem) {
            note_failure(r, "applier: out of memory copying deltas");
            break;
        }
        for (size_t i = 0; i < q.n; i++) {
            const sn_delta_t *d = &q.items[i];
            int times = rng_next(&rng) % 8 == 0 ? 2 : 1;
            for (int t = 0; t < times; t++) {
                rc = sn_store_apply(r->store, d);
                if (rc == SN_APPLY_NEED_FULL) {
                    atomic_fetch_add(&r->need_full, 1);
                    merge_arg_t m = {r, 0};
                    int erc = sn_store_export(peer, d->id, d->id_len, merge_into_shared_cb, &m);
                    if (erc == 0 && m.rc >= 0)
                        atomic_fetch_add(&r->repairs, 1);
                    else if (erc == 0 && m.rc == SN_EFULL)
                        atomic_fetch_add(&r->full_refusals, 1);
                    else if (erc != 0 && erc != SN_ENOTFOUND)
                        note_failure(r, "applier: export returned %d", erc);
                    else if (erc == 0)
                        note_failure(r, "applier: merge returned %d", m.rc);
                } else if (rc == SN_EFULL) {
                    atomic_fetch_add(&r->full_refusals, 1);
                } else if (rc < 0 || rc > SN_APPLY_IGNORED) {
                    note_failure(r, "applier: apply of kind %d returned %d", (int) d->kind, rc);
                }
            }
        }
        queue_clear(&q);
        if (op % 64 == 0)
            sn_store_expire(peer);
    }
    queue_clear(&q);
    free(q.items);
    sn_store_destroy(&peer);
    return NULL;
}

static void *janitor_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->r;
    uint64_t rng = g_seed ^ 0x4000u * 0x9e3779b97f4a7c15ull;
    unsigned round = 0;
    while (!atomic_load(&r->stop)) {
        atomic_fetch_add(&r->now_ms, 1 + rng_next(&rng) % 2500);
        sn_store_expire(r->store);
        state_check_t c = {r, 0, 0};
        full_scan(r, 1 + (size_t) (rng_next(&rng) % 32), &c);
        atomic_fetch_add(&r->scans, 1);
        sn_store_stats_t st;
        sn_store_stats(r->store, &st);
        if (r->cfg->memory_limit && st.bytes > r->cfg->memory_limit + 64 * 1024)
            note_failure(r, "janitor: %" PRIu64 " bytes, far past the limit", st.bytes);
        if (++round % 8 == 0) {
            /* only this node's own destroys: the peer never sees them */
            uint64_t seq = sn_store_seq(r->store);
            if (seq > 1000) {
                sn_dot_t dot = {1, seq - 1000};
                sn_vv_t stable = {1, &dot};
                sn_store_gc(r->store, &stable);
            }
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* ------------------------------------------------------------ the test */

static void run_stress(const stress_config_t *cfg)
{
    run_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->cfg = cfg;
    pthread_mutex_init(&r->fail_lock, NULL);
    atomic_store(&r->now_ms, 1700000000000ull);
    sn_store_options_t o;
    memset(&o, 0, sizeof o);
    o.node_id = 1;
    o.shards = cfg->shards;
    o.memory_limit = cfg->memory_limit;
    o.touch_interval_ms = 100;
    o.clock = run_clock;
    o.clock_arg = r;
    o.sink = shared_sink;
    o.sink_arg = r;
    r->store = sn_store_new(&o);
    assert_non_null(r->store);

    worker_t writers[WRITERS], readers[READERS], applier = {r, 0, 0}, janitor = {r, 0, 0};
    assert_int_equal(pthread_create(&janitor.thread, NULL, janitor_main, &janitor), 0);
    for (int i = 0; i < WRITERS; i++) {
        writers[i] = (worker_t){r, i, 0};
        assert_int_equal(pthread_create(&writers[i].thread, NULL, writer_main, &writers[i]), 0);
    }
    for (int i = 0; i < READERS; i++) {
        readers[i] = (worker_t){r, i, 0};
        assert_int_equal(pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]), 0);
    }
    assert_int_equal(pthread_create(&applier.thread, NULL, applier_main, &applier), 0);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(writers[i].thread, NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(readers[i].thread, NULL);
    pthread_join(applier.thread, NULL);
    atomic_store(&r->stop, true);
    pthread_join(janitor.thread, NULL);

    /* quiet now: the counters must agree with what a full scan finds */
    state_check_t c = {r, 0, 0};
    full_scan(r, 1000, &c);
    sn_store_stats_t st;
    sn_store_stats(r->store, &st);
    printf("  sessions %" PRIu64 ", tombstones %" PRIu64 ", bytes %" PRIu64 ", writes %" PRIu64
           ", evictions %" PRIu64 ", expired %" PRIu64 ", applied %" PRIu64
           ", need_full %" PRIu64 ", merges %" PRIu64 ", gc_removed %" PRIu64
           ", full refusals %" PRIu64 ", read hits %" PRIu64 ", janitor rounds %" PRIu64 "\n",
           st.sessions, st.tombstones, st.bytes, st.writes, st.evictions, st.expired, st.applied,
           st.need_full, st.merges, st.gc_removed, (uint64_t) atomic_load(&r->full_refusals),
           (uint64_t) atomic_load(&r->reads_hit), (uint64_t) atomic_load(&r->scans));
    if (atomic_load(&r->failures))
        printf("  %" PRIu64 " failures; first: %s\n", (uint64_t) atomic_load(&r->failures),
               r->first_failure);
    assert_int_equal(atomic_load(&r->failures), 0);
    assert_int_equal(st.sessions, c.alive);
    assert_int_equal(st.tombstones, c.tombstones);
    assert_int_equal(st.writes, atomic_load(&r->seen_writes) + atomic_load(&r->seen_destroys));
    assert_int_equal(st.touches_sent, atomic_load(&r->seen_touches));
    assert_int_equal(sn_store_seq(r->store), st.writes);
    assert_int_equal(st.need_full, atomic_load(&r->need_full));
    if (cfg->memory_limit)
        assert_true(st.bytes <= cfg->memory_limit);
    assert_true(st.writes > 0);
    assert_true(atomic_load(&r->reads_hit) > 0);

    /* every session still answers, and the ones that exist have digests */
    char id[32];
    uint64_t alive = 0;
    for (int i = 0; i < IDS; i++) {
        id_of(i, id, sizeof id);
        uint64_t dg;
        bool yes = sn_store_exists(r->store, id, strlen(id));
        int rc = sn_store_digest(r->store, id, strlen(id), &dg);
        assert_true(rc == 0 || rc == SN_ENOTFOUND);
        if (yes)
            assert_int_equal(rc, 0);
        alive += yes;
    }
    assert_true(alive <= st.sessions);
    /* after a sweep nothing expired is left to count as alive */
    sn_store_expire(r->store);
    sn_store_stats(r->store, &st);
    assert_int_equal(st.sessions, alive);

    sn_store_destroy(&r->store);
    assert_null(r->store);
    pthread_mutex_destroy(&r->fail_lock);
    free(r);
}

static void test_concurrent_use_keeps_values_and_counters_intact(void **state)
{
    (void) state;
    stress_config_t cfg = {
        .memory_limit = 0,
        .shards = 8,
        .writer_ops = 80000 * g_scale,
        .reader_ops = 160000 * g_scale,
        .applier_ops = 30000 * g_scale,
    };
    run_stress(&cfg);
}

static void test_concurrent_use_under_the_memory_limit_keeps_values_and_counters_intact(
    void **state)
{
    (void) state;
    stress_config_t cfg = {
        .memory_limit = 96 * 1024,
        .shards = 4,
        .writer_ops = 80000 * g_scale,
        .reader_ops = 160000 * g_scale,
        .applier_ops = 30000 * g_scale,
    };
    run_stress(&cfg);
}

int main(int argc, char **argv)
{
    const char *seed = getenv("SN_STRESS_SEED");
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--seed") == 0)
            seed = argv[i + 1];
    if (seed) {
        g_seed = strtoull(seed, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        g_seed = (uint64_t) ts.tv_sec * 1000000007u ^ (uint64_t) ts.tv_nsec;
    }
    const char *scale = getenv("SN_STRESS_SCALE");
    if (scale && atoi(scale) > 0)
        g_scale = (unsigned) atoi(scale);
    printf("test_stress: seed %" PRIu64 " (replay with --seed %" PRIu64 ")\n", g_seed, g_seed);
    fflush(stdout);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_use_keeps_values_and_counters_intact),
        cmocka_unit_test(test_concurrent_use_under_the_memory_limit_keeps_values_and_counters_intact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
