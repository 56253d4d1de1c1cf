/*
 * test_store.c - unit tests for store/: sessions, attributes, deltas, merge,
 * expiry, the memory bound, scan and tombstone GC.
 *
 * Every store here runs on a fake clock (a plain counter the test moves) and
 * hands its deltas to a sink that deep-copies them into a log, because a
 * delta lives only during the callback. Replication is simulated by applying
 * one store's logged deltas to another, and repair by exporting a session's
 * full state from one store and merging it into another. The store is used
 * from one thread here; test_stress.c covers concurrent use.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sn_store.h"
#include "sn_test_state.h"

/* A round number of seconds, so touch-interval boundaries fall on T0 + k s. */
#define T0 1700000000000ull

/* ------------------------------------------------------------ helpers */

typedef struct {
    uint64_t now_ms;
} fake_clock_t;

static uint64_t fake_clock(void *arg)
{
    return ((const fake_clock_t *) arg)->now_ms;
}

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

static void vv_copy(sn_vv_t *dst, const sn_vv_t *src)
{
    dst->n = src->n;
    dst->dots = src->n ? dup_bytes(src->dots, src->n * sizeof *src->dots) : NULL;
}

/* Deep copy: every pointer in `dst` owns its memory. */
static void state_copy(sn_state_t *dst, const sn_state_t *src)
{
    *dst = *src;
    vv_copy(&dst->vv, &src->vv);
    vv_copy(&dst->dv, &src->dv);
    dst->attrs = NULL;
    if (src->nattrs) {
        dst->attrs = calloc(src->nattrs, sizeof *dst->attrs);
        assert_non_null(dst->attrs);
    }
    for (uint32_t i = 0; i < src->nattrs; i++) {
        dst->attrs[i] = src->attrs[i];
        dst->attrs[i].name = dup_bytes(src->attrs[i].name, src->attrs[i].name_len);
        dst->attrs[i].value =
            src->attrs[i].value ? dup_bytes(src->attrs[i].value, src->attrs[i].value_len) : NULL;
    }
}

static void state_release(sn_state_t *st)
{
    free(st->vv.dots);
    free(st->dv.dots);
    for (uint32_t i = 0; i < st->nattrs; i++) {
        free((void *) st->attrs[i].name);
        free((void *) st->attrs[i].value);
    }
    free(st->attrs);
    memset(st, 0, sizeof *st);
}

typedef struct {
    sn_delta_t *items;
    size_t n;
    size_t cap;
} delta_log_t;

static void capture_delta(const sn_delta_t *d, void *arg)
{
    delta_log_t *log = arg;
    if (log->n == log->cap) {
        log->cap = log->cap ? 2 * log->cap : 16;
        log->items = realloc(log->items, log->cap * sizeof *log->items);
        assert_non_null(log->items);
    }
    sn_delta_t *c = &log->items[log->n++];
    *c = *d;
    c->id = dup_bytes(d->id, d->id_len);
    state_copy(&c->st, &d->st);
}

static void log_release(delta_log_t *log)
{
    for (size_t i = 0; i < log->n; i++) {
        free((void *) log->items[i].id);
        state_release(&log->items[i].st);
    }
    free(log->items);
    memset(log, 0, sizeof *log);
}

/* One replica: a store, its clock and the log of the deltas it emitted.
 * The store keeps pointers to `clock` and `log`, so a node_t never moves. */
typedef struct {
    fake_clock_t clock;
    delta_log_t log;
    sn_store_t *store;
} node_t;

static void node_prepare(node_t *n)
{
    memset(n, 0, sizeof *n);
    n->clock.now_ms = T0;
}

static sn_store_options_t node_options(node_t *n, uint64_t node_id)
{
    sn_store_options_t o;
    memset(&o, 0, sizeof o);
    o.node_id = node_id;
    o.clock = fake_clock;
    o.clock_arg = &n->clock;
    o.sink = capture_delta;
    o.sink_arg = &n->log;
    o.hash_seed = 0x1234567u;
    return o;
}

static void node_start(node_t *n, const sn_store_options_t *o)
{
    n->store = sn_store_new(o);
    assert_non_null(n->store);
}

static void node_open(node_t *n, uint64_t node_id)
{
    node_prepare(n);
    sn_store_options_t o = node_options(n, node_id);
    node_start(n, &o);
}

/* node_open with `shards` shards: fewer shards, longer chains. */
static void node_open_shards(node_t *n, uint64_t node_id, uint32_t shards)
{
    node_prepare(n);
    sn_store_options_t o = node_options(n, node_id);
    o.shards = shards;
    node_start(n, &o);
}

static void node_close(node_t *n)
{
    sn_store_destroy(&n->store);
    assert_null(n->store);
    log_release(&n->log);
}

static void advance(node_t *n, uint64_t ms)
{
    n->clock.now_ms += ms;
}

static int put_s(sn_store_t *s, const char *id, const char *name, const char *value)
{
    return sn_store_put(s, id, strlen(id), name, strlen(name), value, strlen(value), 0, true, 0);
}

static int get_s(sn_store_t *s, const char *id, const char *name)
{
    char buf[2048];
    size_t len = 0;
    return sn_store_get(s, id, strlen(id), name, strlen(name), buf, sizeof buf, &len, NULL);
}

static void assert_value(sn_store_t *s, const char *id, const char *name, const char *expect)
{
    char buf[512];
    size_t len = 0;
    assert_int_equal(sn_store_get(s, id, strlen(id), name, strlen(name), buf, sizeof buf, &len,
                                  NULL), 0);
    assert_int_equal(len, strlen(expect));
    assert_memory_equal(buf, expect, len);
}

static bool exists_s(sn_store_t *s, const char *id)
{
    return sn_store_exists(s, id, strlen(id));
}

static uint64_t digest_of(sn_store_t *s, const char *id)
{
    uint64_t d = 0;
    assert_int_equal(sn_store_digest(s, id, strlen(id), &d), 0);
    return d;
}

static sn_store_stats_t stats_of(sn_store_t *s)
{
    sn_store_stats_t st;
    sn_store_stats(s, &st);
    return st;
}

static int apply_at(node_t *from, size_t i, node_t *to)
{
    assert_true(i < from->log.n);
    return sn_store_apply(to->store, &from->log.items[i]);
}

/* Applies from->log[first..] to `to`, each of which must merge. */
static void deliver(node_t *from, size_t first, node_t *to)
{
    for (size_t i = first; i < from->log.n; i++)
        assert_int_equal(apply_at(from, i, to), SN_APPLY_APPLIED);
}

static void copy_state_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    (void) id;
    (void) id_len;
    state_copy(arg, st);
}

/* Exports one session's full state into `out` (caller releases it). */
static void export_s(sn_store_t *s, const char *id, sn_state_t *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(sn_store_export(s, id, strlen(id), copy_state_cb, out), 0);
}

/* Exports `id` from `from` and merges it into `to`; returns the merge's outcome. */
static int repair(sn_store_t *from, sn_store_t *to, const char *id)
{
    sn_state_t st;
    export_s(from, id, &st);
    int rc = sn_store_merge(to, id, strlen(id), &st);
    state_release(&st);
    return rc;
}

static const sn_attr_t *find_attr(const sn_state_t *st, const char *name)
{
    for (uint32_t i = 0; i < st->nattrs; i++)
        if (st->attrs[i].name_len == strlen(name) &&
            memcmp(st->attrs[i].name, name, st->attrs[i].name_len) == 0)
            return &st->attrs[i];
    return NULL;
}

static size_t count_kind(const delta_log_t *log, size_t first, sn_delta_kind_t kind)
{
    size_t n = 0;
    for (size_t i = first; i < log->n; i++)
        n += log->items[i].kind == kind;
    return n;
}

/* ------------------------------------------------------------ lifecycle */

static void test_new_refuses_node_id_zero(void **state)
{
    (void) state;
    sn_store_options_t o;
    memset(&o, 0, sizeof o);
    assert_null(sn_store_new(&o));
    assert_null(sn_store_new(NULL));
    o.node_id = 1;
    sn_store_t *s = sn_store_new(&o);
    assert_non_null(s);
    sn_store_destroy(&s);
}

static void test_new_refuses_shard_count_not_a_power_of_two(void **state)
{
    (void) state;
    const uint32_t bad[] = {3, 6, 12, 100, 1000};
    const uint32_t good[] = {1, 2, 4, 64, 1024};
    sn_store_options_t o;
    memset(&o, 0, sizeof o);
    o.node_id = 7;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.shards = bad[i];
        assert_null(sn_store_new(&o));
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        o.shards = good[i];
        sn_store_t *s = sn_store_new(&o);
        assert_non_null(s);
        assert_int_equal(sn_store_create(s, "x", 1, 0), 0);
        assert_true(sn_store_exists(s, "x", 1));
        sn_store_destroy(&s);
    }
}

static void test_destroy_nulls_the_pointer_and_accepts_null(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    sn_store_destroy(&a.store);
    assert_null(a.store);
    sn_store_destroy(&a.store);
    sn_store_destroy(NULL);
    log_release(&a.log);
}

/* ----------------------------------------------------------------- ids */

typedef struct {
    const char *bytes;
    size_t len;
} raw_id_t;

static const raw_id_t bad_ids[] = {
    {"", 0},         {"a b", 3},  {" ab", 3},  {"ab ", 3},  {"a\tb", 3}, {"a\nb", 3},
    {"a\rb", 3},     {"a\x7f", 2}, {"\x01", 1}, {"a\x1f" "b", 3}, {"a\0b", 3}, {"\x0b", 1},
};

static void test_id_valid_follows_memcached_key_rules(void **state)
{
    (void) state;
    char id[SN_ID_MAX + 2];
    memset(id, 'k', sizeof id);
    assert_true(sn_id_valid("a", 1));
    assert_true(sn_id_valid("session:42!~", 12));
    assert_true(sn_id_valid(id, SN_ID_MAX));
    assert_false(sn_id_valid(id, SN_ID_MAX + 1));
    assert_false(sn_id_valid(NULL, 3));
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        assert_false(sn_id_valid(bad_ids[i].bytes, bad_ids[i].len));
}

static void assert_every_operation_rejects(node_t *a, const void *id, size_t len,
                                           const sn_delta_t *good_delta,
                                           const sn_state_t *good_state)
{
    char buf[16];
    size_t vlen = 0;
    void *heap = NULL;
    uint64_t dg = 0;
    sn_state_t seen;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(sn_store_create(a->store, id, len, 0), SN_EBADID);
    assert_int_equal(sn_store_put(a->store, id, len, "k", 1, "v", 1, 0, true, 0), SN_EBADID);
    assert_int_equal(sn_store_put(a->store, id, len, "k", 1, "v", 1, 0, false, 0), SN_EBADID);
    assert_int_equal(sn_store_get(a->store, id, len, "k", 1, buf, sizeof buf, &vlen, NULL),
                     SN_EBADID);
    assert_int_equal(sn_store_get_alloc(a->store, id, len, "k", 1, &heap, &vlen, NULL), SN_EBADID);
    assert_null(heap);
    assert_int_equal(sn_store_remove(a->store, id, len, "k", 1), SN_EBADID);
    assert_int_equal(sn_store_destroy_session(a->store, id, len), SN_EBADID);
    assert_int_equal(sn_store_touch(a->store, id, len, -1), SN_EBADID);
    assert_int_equal(sn_store_touch(a->store, id, len, 60), SN_EBADID);
    assert_false(sn_store_exists(a->store, id, len));
    assert_int_equal(sn_store_export(a->store, id, len, copy_state_cb, &seen), SN_EBADID);
    assert_int_equal(sn_store_merge(a->store, id, len, good_state), SN_EBADID);
    assert_int_equal(sn_store_digest(a->store, id, len, &dg), SN_EBADID);
    sn_delta_t d = *good_delta;
    d.id = id;
    d.id_len = (uint32_t) len;
    assert_int_equal(sn_store_apply(a->store, &d), SN_EBADID);
    d.kind = SN_DELTA_TOUCH;
    assert_int_equal(sn_store_apply(a->store, &d), SN_EBADID);
}

static void test_every_operation_rejects_bad_ids(void **state)
{
    (void) state;
    node_t src, a;
    node_open(&src, 2);
    node_open(&a, 1);
    assert_int_equal(put_s(src.store, "good", "k", "v"), 0);
    sn_state_t good_state;
    export_s(src.store, "good", &good_state);

    char long_id[SN_ID_MAX + 1];
    memset(long_id, 'x', sizeof long_id);
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        assert_every_operation_rejects(&a, bad_ids[i].bytes, bad_ids[i].len, &src.log.items[0],
                                       &good_state);
    assert_every_operation_rejects(&a, long_id, sizeof long_id, &src.log.items[0], &good_state);
    assert_every_operation_rejects(&a, NULL, 4, &src.log.items[0], &good_state);

    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(a.log.n, 0);
    assert_int_equal(sn_store_seq(a.store), 0);
    assert_int_equal(st.sessions, 0);
    assert_int_equal(st.tombstones, 0);
    assert_int_equal(st.writes, 0);
    state_release(&good_state);
    node_close(&src);
    node_close(&a);
}

static void test_id_of_250_bytes_works_for_every_operation(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    char id[SN_ID_MAX];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (char) ('!' + i % 94);
    char buf[8];
    size_t len = 0;
    uint64_t dg;
    assert_int_equal(sn_store_create(a.store, id, sizeof id, 0), 0);
    assert_int_equal(sn_store_put(a.store, id, sizeof id, "k", 1, "v", 1, 3, false, 0), 0);
    assert_int_equal(sn_store_get(a.store, id, sizeof id, "k", 1, buf, sizeof buf, &len, NULL), 0);
    assert_int_equal(len, 1);
    assert_int_equal(sn_store_touch(a.store, id, sizeof id, -1), 0);
    assert_int_equal(sn_store_digest(a.store, id, sizeof id, &dg), 0);
    assert_int_equal(sn_store_remove(a.store, id, sizeof id, "k", 1), 0);
    assert_int_equal(sn_store_destroy_session(a.store, id, sizeof id), 0);
    assert_false(sn_store_exists(a.store, id, sizeof id));
    assert_int_equal(a.log.n, 4);
    assert_int_equal(a.log.items[3].id_len, SN_ID_MAX);
    assert_memory_equal(a.log.items[3].id, id, sizeof id);
    node_close(&a);
}

/* ------------------------------------------------- create, put and get */

static void test_create_of_an_alive_session_is_eexists(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_create(a.store, "s", 1, 30), 0);
    assert_true(exists_s(a.store, "s"));
    assert_int_equal(sn_store_create(a.store, "s", 1, 30), SN_EEXISTS);
    assert_int_equal(a.log.n, 1);
    assert_int_equal(stats_of(a.store).sessions, 1);
    node_close(&a);
}

static void test_put_without_create_on_a_missing_session_is_enotfound(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, false, 0), SN_ENOTFOUND);
    assert_false(exists_s(a.store, "s"));
    assert_int_equal(a.log.n, 0);
    assert_int_equal(sn_store_create(a.store, "s", 1, 0), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, false, 0), 0);
    assert_value(a.store, "s", "k", "v");
    node_close(&a);
}

static void test_put_with_create_makes_the_session_and_get_returns_value_and_flags(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "user", 4, "alice", 5, 0xdeadbeefu, true, 30),
                     0);
    assert_true(exists_s(a.store, "s"));
    char buf[16];
    size_t len = 0;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, "user", 4, buf, sizeof buf, &len, &flags), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "alice", 5);
    assert_int_equal(flags, 0xdeadbeefu);
    /* both out-parameters are optional */
    assert_int_equal(sn_store_get(a.store, "s", 1, "user", 4, buf, sizeof buf, NULL, NULL), 0);

    sn_state_t st;
    export_s(a.store, "s", &st);
    assert_true(st.has_meta);
    assert_int_equal(st.max_inactive, 30);
    assert_int_equal(st.nattrs, 1);
    state_release(&st);
    assert_int_equal(stats_of(a.store).sessions, 1);
    node_close(&a);
}

static void test_put_replaces_value_and_flags(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "first", 5, 1, true, 0), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "second!", 7, 2, false, 0), 0);
    char buf[16];
    size_t len = 0;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, buf, sizeof buf, &len, &flags), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(buf, "second!", 7);
    assert_int_equal(flags, 2);
    node_close(&a);
}

static void test_get_into_a_small_buffer_is_etrunc_with_the_full_length(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "0123456789", 10, 5, true, 0), 0);
    char buf[4] = {0};
    size_t len = 0;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, buf, sizeof buf, &len, &flags),
                     SN_ETRUNC);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123", 4);
    /* a zero-capacity probe asks for the length alone */
    len = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, NULL, 0, &len, NULL), SN_ETRUNC);
    assert_int_equal(len, 10);
    /* exactly the right size is enough */
    char exact[10];
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, exact, sizeof exact, &len, NULL), 0);
    assert_memory_equal(exact, "0123456789", 10);
    node_close(&a);
}

static void test_get_alloc_returns_a_copy_the_caller_frees(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    char big[3000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char) (i * 7);
    assert_int_equal(sn_store_put(a.store, "s", 1, "big", 3, big, sizeof big, 9, true, 0), 0);
    void *v = NULL;
    size_t len = 0;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get_alloc(a.store, "s", 1, "big", 3, &v, &len, &flags), 0);
    assert_non_null(v);
    assert_int_equal(len, sizeof big);
    assert_int_equal(flags, 9);
    assert_memory_equal(v, big, sizeof big);
    free(v);

    v = NULL;
    assert_int_equal(sn_store_get_alloc(a.store, "s", 1, "nope", 4, &v, &len, NULL), SN_ENOTFOUND);
    assert_null(v);
    assert_int_equal(sn_store_get_alloc(a.store, "t", 1, "big", 3, &v, &len, NULL), SN_ENOTFOUND);
    assert_null(v);
    node_close(&a);
}

static void test_empty_value_round_trips(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, NULL, 0, 4, true, 0), 0);
    char buf[4];
    size_t len = 99;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, buf, sizeof buf, &len, &flags), 0);
    assert_int_equal(len, 0);
    assert_int_equal(flags, 4);
    len = 99;
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, NULL, 0, &len, NULL), 0);
    assert_int_equal(len, 0);
    void *v = NULL;
    len = 99;
    assert_int_equal(sn_store_get_alloc(a.store, "s", 1, "k", 1, &v, &len, NULL), 0);
    assert_int_equal(len, 0);
    free(v);

    sn_state_t st;
    export_s(a.store, "s", &st);
    assert_int_equal(st.nattrs, 1);
    assert_false(st.attrs[0].removed);
    assert_int_equal(st.attrs[0].value_len, 0);
    state_release(&st);
    node_close(&a);
}

static void test_empty_attribute_name_is_an_ordinary_attribute(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "", 0, "whole", 5, 0, true, 0), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "other", 5, 0, false, 0), 0);
    assert_value(a.store, "s", "", "whole");
    assert_value(a.store, "s", "k", "other");
    assert_int_equal(sn_store_remove(a.store, "s", 1, "", 0), 0);
    assert_int_equal(get_s(a.store, "s", ""), SN_ENOTFOUND);
    assert_value(a.store, "s", "k", "other");
    node_close(&a);
}

/* The store accepts a NULL name when its length is 0 (only a NULL name with
 * a length is SN_EBADNAME); it must then behave as the empty name. */
static void test_null_name_of_length_zero_is_the_empty_name(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "other"), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, NULL, 0, "whole", 5, 0, false, 0), 0);
    assert_value(a.store, "s", "", "whole");
    char buf[8];
    size_t len = 0;
    assert_int_equal(sn_store_get(a.store, "s", 1, NULL, 0, buf, sizeof buf, &len, NULL), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "whole", 5);
    assert_int_equal(sn_store_remove(a.store, "s", 1, NULL, 0), 0);
    assert_int_equal(get_s(a.store, "s", ""), SN_ENOTFOUND);
    assert_value(a.store, "s", "k", "other");
    node_close(&a);
}

static void test_attribute_name_longer_than_the_max_is_ebadname(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    char name[SN_NAME_MAX + 1];
    memset(name, 'n', sizeof name);
    char buf[4];
    size_t len;
    void *v = NULL;
    assert_int_equal(sn_store_put(a.store, "s", 1, name, SN_NAME_MAX + 1, "v", 1, 0, true, 0),
                     SN_EBADNAME);
    assert_false(exists_s(a.store, "s"));
    assert_int_equal(sn_store_put(a.store, "s", 1, name, SN_NAME_MAX, "v", 1, 0, true, 0), 0);
    assert_int_equal(sn_store_get(a.store, "s", 1, name, SN_NAME_MAX, buf, sizeof buf, &len, NULL),
                     0);
    assert_int_equal(sn_store_get(a.store, "s", 1, name, SN_NAME_MAX + 1, buf, sizeof buf, &len,
                                  NULL), SN_EBADNAME);
    assert_int_equal(sn_store_get_alloc(a.store, "s", 1, name, SN_NAME_MAX + 1, &v, &len, NULL),
                     SN_EBADNAME);
    assert_null(v);
    assert_int_equal(sn_store_remove(a.store, "s", 1, name, SN_NAME_MAX + 1), SN_EBADNAME);
    assert_int_equal(sn_store_put(a.store, "s", 1, NULL, 3, "v", 1, 0, true, 0), SN_EBADNAME);
    assert_int_equal(a.log.n, 1);
    node_close(&a);
}

static void test_value_larger_than_value_max_is_etoobig(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.value_max = 64;
    node_start(&a, &o);
    char v[65];
    memset(v, 'v', sizeof v);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, v, 65, 0, true, 0), SN_ETOOBIG);
    assert_false(exists_s(a.store, "s"));
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, v, 64, 0, true, 0), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "small", 5, 0, true, 0), 0);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, v, 65, 0, true, 0), SN_ETOOBIG);
    assert_value(a.store, "s", "k", "small");
    assert_int_equal(a.log.n, 2);
    assert_int_equal(sn_store_seq(a.store), 2);
    node_close(&a);
}

static void test_missing_attribute_or_session_is_enotfound(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(get_s(a.store, "s", "k"), SN_ENOTFOUND);
    assert_int_equal(sn_store_create(a.store, "s", 1, 0), 0);
    assert_int_equal(get_s(a.store, "s", "k"), SN_ENOTFOUND);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "k", 1), SN_ENOTFOUND);
    assert_int_equal(sn_store_remove(a.store, "t", 1, "k", 1), SN_ENOTFOUND);
    assert_int_equal(a.log.n, 1);
    node_close(&a);
}

static void test_removed_attribute_is_gone_and_removing_it_again_is_enotfound(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "a", "1"), 0);
    assert_int_equal(put_s(a.store, "s", "b", "2"), 0);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "a", 1), 0);
    assert_int_equal(get_s(a.store, "s", "a"), SN_ENOTFOUND);
    assert_value(a.store, "s", "b", "2");
    assert_int_equal(sn_store_remove(a.store, "s", 1, "a", 1), SN_ENOTFOUND);
    assert_int_equal(a.log.n, 3);
    /* the session itself stays */
    assert_true(exists_s(a.store, "s"));
    /* and the attribute can come back */
    assert_int_equal(put_s(a.store, "s", "a", "3"), 0);
    assert_value(a.store, "s", "a", "3");
    node_close(&a);
}

static void test_destroyed_session_misses_and_leaves_a_tombstone(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(get_s(a.store, "s", "k"), SN_ENOTFOUND);
    assert_false(exists_s(a.store, "s"));
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.sessions, 0);
    assert_int_equal(st.tombstones, 1);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), SN_ENOTFOUND);
    assert_int_equal(sn_store_destroy_session(a.store, "never", 5), SN_ENOTFOUND);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, false, 0), SN_ENOTFOUND);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "k", 1), SN_ENOTFOUND);
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), SN_ENOTFOUND);
    assert_int_equal(sn_store_touch(a.store, "s", 1, 10), SN_ENOTFOUND);
    assert_int_equal(a.log.n, 2);

    sn_state_t ts;
    export_s(a.store, "s", &ts);
    assert_false(ts.has_meta);
    assert_true(ts.dv.n > 0);
    assert_int_equal(ts.nattrs, 0);
    state_release(&ts);
    node_close(&a);
}

static void test_put_with_create_after_destroy_recreates_with_fresh_attributes(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "old", "1"), 0);
    assert_int_equal(put_s(a.store, "s", "kept?", "2"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(put_s(a.store, "s", "new", "3"), 0);
    assert_true(exists_s(a.store, "s"));
    assert_value(a.store, "s", "new", "3");
    assert_int_equal(get_s(a.store, "s", "old"), SN_ENOTFOUND);
    assert_int_equal(get_s(a.store, "s", "kept?"), SN_ENOTFOUND);
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.sessions, 1);
    assert_int_equal(st.tombstones, 0);
    /* create (not put) recreates too */
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(sn_store_create(a.store, "s", 1, 0), 0);
    assert_int_equal(get_s(a.store, "s", "new"), SN_ENOTFOUND);
    node_close(&a);
}

static void test_touch_marks_an_access_and_can_set_max_inactive(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_create(a.store, "s", 1, 10), 0);
    size_t writes = a.log.n;

    /* plain touch: an access, not a write */
    advance(&a, 9000);
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), 0);
    assert_int_equal(count_kind(&a.log, writes, SN_DELTA_WRITE), 0);
    advance(&a, 9000);
    assert_true(exists_s(a.store, "s"));  /* 18 s after create, 9 s after the touch */

    /* touch with a new max_inactive: a replicated write */
    size_t before = a.log.n;
    assert_int_equal(sn_store_touch(a.store, "s", 1, 100), 0);
    assert_int_equal(count_kind(&a.log, before, SN_DELTA_WRITE), 1);
    const sn_delta_t *d = &a.log.items[a.log.n - 1];
    assert_int_equal(d->kind, SN_DELTA_WRITE);
    assert_true(d->st.has_meta);
    assert_int_equal(d->st.max_inactive, 100);
    assert_int_equal(d->st.nattrs, 0);
    sn_state_t st;
    export_s(a.store, "s", &st);
    assert_int_equal(st.max_inactive, 100);
    state_release(&st);
    advance(&a, 50000);
    assert_true(exists_s(a.store, "s"));

    /* max_inactive 0 through touch: never expires */
    assert_int_equal(sn_store_touch(a.store, "s", 1, 0), 0);
    advance(&a, 10ull * 365 * 24 * 3600 * 1000);
    assert_true(exists_s(a.store, "s"));

    assert_int_equal(sn_store_touch(a.store, "missing", 7, -1), SN_ENOTFOUND);
    assert_int_equal(sn_store_touch(a.store, "missing", 7, 5), SN_ENOTFOUND);
    assert_int_equal(sn_store_touch(a.store, "s", 1, (int64_t) UINT32_MAX + 1), SN_EINVAL);
    node_close(&a);
}

static void test_exists_is_not_an_access(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_create(a.store, "s", 1, 10), 0);
    size_t before = a.log.n;
    for (int i = 0; i < 9; i++) {
        advance(&a, 1000);
        assert_true(exists_s(a.store, "s"));
    }
    assert_int_equal(a.log.n, before);  /* no touch delta either */
    assert_int_equal(stats_of(a.store).touches_sent, 0);
    advance(&a, 2000);                  /* 11 s after the last real access */
    assert_false(exists_s(a.store, "s"));
    node_close(&a);
}

static void test_null_and_out_of_range_arguments_are_einval(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    size_t len;
    uint64_t dg;
    sn_state_t st;
    memset(&st, 0, sizeof st);
    assert_int_equal(sn_store_create(NULL, "s", 1, 0), SN_EINVAL);
    assert_int_equal(sn_store_put(NULL, "s", 1, "k", 1, "v", 1, 0, true, 0), SN_EINVAL);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, NULL, 4, 0, true, 0), SN_EINVAL);
    assert_int_equal(sn_store_get(a.store, "s", 1, "k", 1, NULL, 8, &len, NULL), SN_EINVAL);
    assert_int_equal(sn_store_get_alloc(a.store, "s", 1, "k", 1, NULL, &len, NULL), SN_EINVAL);
    assert_int_equal(sn_store_apply(a.store, NULL), SN_EINVAL);
    assert_int_equal(sn_store_merge(a.store, "s", 1, NULL), SN_EINVAL);
    assert_int_equal(sn_store_export(a.store, "s", 1, NULL, NULL), SN_EINVAL);
    assert_int_equal(sn_store_digest(a.store, "s", 1, NULL), SN_EINVAL);
    assert_int_equal(sn_store_digest(NULL, "s", 1, &dg), SN_EINVAL);
    /* a state that is neither alive nor a tombstone */
    assert_int_equal(sn_store_merge(a.store, "t", 1, &st), SN_EINVAL);
    assert_false(exists_s(a.store, "t"));
    assert_value(a.store, "s", "k", "v");
    node_close(&a);
}

static void test_version_vector_helpers(void **state)
{
    (void) state;
    sn_dot_t d1[] = {{1, 3}, {5, 2}};
    sn_dot_t d2[] = {{1, 2}};
    sn_dot_t d3[] = {{4, 1}};
    sn_dot_t unsorted[] = {{5, 1}, {1, 1}};
    sn_dot_t dup[] = {{1, 1}, {1, 2}};
    sn_dot_t zero_counter[] = {{1, 0}};
    sn_dot_t zero_node[] = {{0, 1}};
    sn_vv_t a = {2, d1}, b = {1, d2}, c = {1, d3}, empty = {0, NULL};
    assert_int_equal(sn_vv_get(&a, 1), 3);
    assert_int_equal(sn_vv_get(&a, 5), 2);
    assert_int_equal(sn_vv_get(&a, 2), 0);
    assert_int_equal(sn_vv_get(&empty, 1), 0);
    assert_true(sn_vv_leq(&b, &a));
    assert_false(sn_vv_leq(&a, &b));
    assert_true(sn_vv_leq(&empty, &a));
    assert_true(sn_vv_leq(&a, &a));
    assert_false(sn_vv_leq(&c, &a));
    assert_false(sn_vv_leq(&a, &empty));
    assert_true(sn_vv_valid(&a));
    assert_true(sn_vv_valid(&empty));
    sn_vv_t bad = {2, unsorted};
    assert_false(sn_vv_valid(&bad));
    bad = (sn_vv_t){2, dup};
    assert_false(sn_vv_valid(&bad));
    bad = (sn_vv_t){1, zero_counter};
    assert_false(sn_vv_valid(&bad));
    bad = (sn_vv_t){1, zero_node};
    assert_false(sn_vv_valid(&bad));
    bad = (sn_vv_t){1, NULL};
    assert_false(sn_vv_valid(&bad));
}

/* --------------------------------------------------------------- deltas */

static void assert_context(const sn_delta_t *d, uint64_t node, uint64_t counter)
{
    if (counter == 0) {
        assert_int_equal(d->st.vv.n, 0);
    } else {
        assert_int_equal(d->st.vv.n, 1);
        assert_int_equal(d->st.vv.dots[0].node, node);
        assert_int_equal(d->st.vv.dots[0].counter, counter);
    }
}

static void test_each_local_write_emits_one_delta_with_kind_dot_and_context(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 7);
    assert_int_equal(sn_store_create(a.store, "s", 1, 30), 0);
    assert_int_equal(sn_store_create(a.store, "s", 1, 30), SN_EEXISTS);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "val", 3, 11, false, 0), 0);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "nope", 4), SN_ENOTFOUND);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "k", 1), 0);
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), 0);
    assert_int_equal(sn_store_touch(a.store, "s", 1, 60), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), SN_ENOTFOUND);

    assert_int_equal(a.log.n, 5);
    const sn_delta_kind_t kinds[] = {SN_DELTA_WRITE, SN_DELTA_WRITE, SN_DELTA_WRITE,
                                     SN_DELTA_WRITE, SN_DELTA_DESTROY};
    for (size_t i = 0; i < 5; i++) {
        const sn_delta_t *d = &a.log.items[i];
        assert_int_equal(d->kind, kinds[i]);
        assert_int_equal(d->id_len, 1);
        assert_memory_equal(d->id, "s", 1);
        assert_int_equal(d->dot.node, 7);
        assert_int_equal(d->dot.counter, i + 1);
        assert_context(d, 7, i);
    }
    const sn_delta_t *create = &a.log.items[0];
    assert_true(create->st.has_meta);
    assert_int_equal(create->st.max_inactive, 30);
    assert_int_equal(create->st.meta_origin, 7);
    assert_int_equal(create->st.nattrs, 0);

    const sn_delta_t *put = &a.log.items[1];
    assert_false(put->st.has_meta);
    assert_int_equal(put->st.nattrs, 1);
    assert_int_equal(put->st.attrs[0].name_len, 1);
    assert_memory_equal(put->st.attrs[0].name, "k", 1);
    assert_int_equal(put->st.attrs[0].value_len, 3);
    assert_memory_equal(put->st.attrs[0].value, "val", 3);
    assert_int_equal(put->st.attrs[0].flags, 11);
    assert_int_equal(put->st.attrs[0].origin, 7);
    assert_false(put->st.attrs[0].removed);

    const sn_delta_t *rm = &a.log.items[2];
    assert_int_equal(rm->st.nattrs, 1);
    assert_true(rm->st.attrs[0].removed);
    assert_null(rm->st.attrs[0].value);
    assert_true(rm->st.attrs[0].stamp > put->st.attrs[0].stamp);

    const sn_delta_t *touch = &a.log.items[3];
    assert_true(touch->st.has_meta);
    assert_int_equal(touch->st.max_inactive, 60);
    assert_true(touch->st.meta_stamp > create->st.meta_stamp);

    assert_int_equal(sn_store_seq(a.store), 5);
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.writes, 5);
    node_close(&a);
}

static void test_sequence_is_shared_by_all_sessions_of_a_node(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 3);
    assert_int_equal(put_s(a.store, "x", "k", "1"), 0);
    assert_int_equal(put_s(a.store, "y", "k", "1"), 0);
    assert_int_equal(put_s(a.store, "x", "k", "2"), 0);
    assert_int_equal(a.log.items[0].dot.counter, 1);
    assert_int_equal(a.log.items[1].dot.counter, 2);
    assert_int_equal(a.log.items[2].dot.counter, 3);
    assert_int_equal(a.log.items[1].st.vv.n, 0);  /* y had never been written */
    assert_context(&a.log.items[2], 3, 1);        /* x's context: its own last write */
    node_close(&a);
}

static void test_applying_every_delta_on_a_second_store_makes_digests_equal(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_create(a.store, "s1", 2, 60), 0);
    assert_int_equal(sn_store_put(a.store, "s1", 2, "k", 1, "v1", 2, 5, false, 0), 0);
    assert_int_equal(put_s(a.store, "s1", "j", "x"), 0);
    assert_int_equal(sn_store_remove(a.store, "s1", 2, "j", 1), 0);
    assert_int_equal(put_s(a.store, "s2", "k", "v2"), 0);
    assert_int_equal(sn_store_touch(a.store, "s2", 2, 120), 0);
    assert_int_equal(put_s(a.store, "s3", "k", "v3"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s3", 2), 0);
    deliver(&a, 0, &b);

    const char *ids[] = {"s1", "s2", "s3"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(digest_of(a.store, ids[i]), digest_of(b.store, ids[i]));
    char buf[8];
    size_t len;
    uint32_t flags = 0;
    assert_int_equal(sn_store_get(b.store, "s1", 2, "k", 1, buf, sizeof buf, &len, &flags), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "v1", 2);
    assert_int_equal(flags, 5);
    assert_int_equal(get_s(b.store, "s1", "j"), SN_ENOTFOUND);
    assert_value(b.store, "s2", "k", "v2");
    assert_false(exists_s(b.store, "s3"));
    sn_state_t st;
    export_s(b.store, "s2", &st);
    assert_int_equal(st.max_inactive, 120);
    state_release(&st);

    sn_store_stats_t bs = stats_of(b.store);
    assert_int_equal(bs.applied, a.log.n);
    assert_int_equal(bs.sessions, 2);
    assert_int_equal(bs.tombstones, 1);
    assert_int_equal(bs.writes, 0);      /* applying is not a local write */
    assert_int_equal(b.log.n, 0);        /* and emits nothing */
    node_close(&a);
    node_close(&b);
}

static void test_applying_a_delta_twice_is_duplicate(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v1"), 0);
    assert_int_equal(put_s(a.store, "s", "k", "v2"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    for (size_t i = 0; i < a.log.n; i++) {
        assert_int_equal(apply_at(&a, i, &b), SN_APPLY_APPLIED);
        uint64_t dg = digest_of(b.store, "s");
        assert_int_equal(apply_at(&a, i, &b), SN_APPLY_DUPLICATE);
        assert_int_equal(digest_of(b.store, "s"), dg);
    }
    /* an older delta after newer ones is a duplicate as well */
    assert_int_equal(apply_at(&a, 0, &b), SN_APPLY_DUPLICATE);
    sn_store_stats_t st = stats_of(b.store);
    assert_int_equal(st.applied, 3);
    assert_int_equal(st.duplicates, 4);
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_delta_after_a_missed_one_needs_full_state_and_changes_nothing(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v1"), 0);
    assert_int_equal(put_s(a.store, "s", "k", "v2"), 0);   /* lost on the way to b */
    assert_int_equal(put_s(a.store, "s", "j", "w"), 0);
    assert_int_equal(apply_at(&a, 0, &b), SN_APPLY_APPLIED);
    uint64_t before = digest_of(b.store, "s");
    assert_int_equal(apply_at(&a, 2, &b), SN_APPLY_NEED_FULL);
    assert_int_equal(digest_of(b.store, "s"), before);
    assert_value(b.store, "s", "k", "v1");
    assert_int_equal(get_s(b.store, "s", "j"), SN_ENOTFOUND);
    assert_int_equal(stats_of(b.store).need_full, 1);

    /* the full state repairs it; the late deltas are then duplicates */
    assert_int_equal(repair(a.store, b.store, "s"), SN_APPLY_APPLIED);
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    assert_value(b.store, "s", "k", "v2");
    assert_value(b.store, "s", "j", "w");
    assert_int_equal(apply_at(&a, 1, &b), SN_APPLY_DUPLICATE);
    assert_int_equal(apply_at(&a, 2, &b), SN_APPLY_DUPLICATE);
    assert_int_equal(stats_of(b.store).merges, 1);
    node_close(&a);
    node_close(&b);
}

static void test_unknown_session_with_a_context_needs_full_state_then_merge_repairs(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, true, 30), 0);
    assert_int_equal(put_s(a.store, "s", "j", "w"), 0);
    assert_int_equal(apply_at(&a, 1, &b), SN_APPLY_NEED_FULL);
    assert_false(exists_s(b.store, "s"));
    uint64_t dg;
    assert_int_equal(sn_store_digest(b.store, "s", 1, &dg), SN_ENOTFOUND);

    assert_int_equal(repair(a.store, b.store, "s"), SN_APPLY_APPLIED);
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    assert_value(b.store, "s", "k", "v");
    assert_value(b.store, "s", "j", "w");
    sn_state_t st;
    export_s(b.store, "s", &st);
    assert_true(st.has_meta);
    assert_int_equal(st.max_inactive, 30);
    state_release(&st);
    assert_int_equal(apply_at(&a, 0, &b), SN_APPLY_DUPLICATE);
    assert_int_equal(apply_at(&a, 1, &b), SN_APPLY_DUPLICATE);
    /* merging the same state again adds nothing */
    assert_int_equal(repair(a.store, b.store, "s"), SN_APPLY_DUPLICATE);
    node_close(&a);
    node_close(&b);
}

static void test_invalid_deltas_are_einval_and_change_nothing(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_create(a.store, "s", 1, 0), 0);          /* log 0 */
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);                 /* log 1 */
    assert_int_equal(sn_store_touch(a.store, "s", 1, 50), 0);           /* log 2 */
    assert_int_equal(apply_at(&a, 0, &b), SN_APPLY_APPLIED);
    uint64_t before = digest_of(b.store, "s");
    const sn_delta_t *put = &a.log.items[1];
    const sn_delta_t *meta = &a.log.items[2];
    sn_delta_t d;

    d = *put;
    d.dot.node = 0;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);
    d = *put;
    d.dot.counter = 0;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);
    d = *put;
    d.dot.counter = 1;   /* not above its own context */
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    sn_dot_t unsorted[] = {{5, 1}, {1, 1}};
    d = *put;
    d.st.vv = (sn_vv_t){2, unsorted};
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);
    sn_dot_t zero[] = {{1, 0}};
    d = *put;
    d.st.vv = (sn_vv_t){1, zero};
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    sn_attr_t foreign = put->st.attrs[0];
    foreign.origin = 9;
    d = *put;
    d.st.attrs = &foreign;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    d = *meta;
    d.st.meta_origin = 9;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    sn_attr_t two[2] = {put->st.attrs[0], put->st.attrs[0]};   /* not sorted, not unique */
    d = *put;
    d.st.attrs = two;
    d.st.nattrs = 2;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    sn_dot_t foreign_dv[] = {{9, 1}};   /* a destroy vector the context does not cover */
    d = *put;
    d.st.dv = (sn_vv_t){1, foreign_dv};
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    d = *put;
    d.kind = (sn_delta_kind_t) 99;
    assert_int_equal(sn_store_apply(b.store, &d), SN_EINVAL);

    assert_int_equal(digest_of(b.store, "s"), before);
    assert_int_equal(get_s(b.store, "s", "k"), SN_ENOTFOUND);
    sn_store_stats_t st = stats_of(b.store);
    assert_int_equal(st.applied, 1);
    /* the originals still apply */
    assert_int_equal(apply_at(&a, 1, &b), SN_APPLY_APPLIED);
    assert_int_equal(apply_at(&a, 2, &b), SN_APPLY_APPLIED);
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

/* ------------------------------------------------------------ semantics */

static void test_concurrent_sets_of_one_attribute_resolve_the_same_way(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "base"), 0);
    deliver(&a, 0, &b);

    /* same wall clock: equal stamps, the larger origin breaks the tie */
    size_t na = a.log.n, nb = b.log.n;
    assert_int_equal(put_s(a.store, "s", "k", "from-a"), 0);
    assert_int_equal(put_s(b.store, "s", "k", "from-b"), 0);
    deliver(&a, na, &b);
    deliver(&b, nb, &a);
    assert_value(a.store, "s", "k", "from-b");
    assert_value(b.store, "s", "k", "from-b");
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));

    /* a later stamp wins whatever the origin */
    na = a.log.n;
    nb = b.log.n;
    advance(&a, 5);
    assert_int_equal(put_s(a.store, "s", "k", "late-a"), 0);
    assert_int_equal(put_s(b.store, "s", "k", "early-b"), 0);
    deliver(&b, nb, &a);
    deliver(&a, na, &b);
    assert_value(a.store, "s", "k", "late-a");
    assert_value(b.store, "s", "k", "late-a");
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_concurrent_removes_and_sets_of_different_attributes_both_survive(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "x", "0"), 0);
    assert_int_equal(put_s(a.store, "s", "y", "0"), 0);
    deliver(&a, 0, &b);
    size_t na = a.log.n;
    assert_int_equal(sn_store_remove(a.store, "s", 1, "x", 1), 0);
    assert_int_equal(put_s(a.store, "s", "a", "A"), 0);
    assert_int_equal(put_s(b.store, "s", "y", "B"), 0);
    deliver(&b, 0, &a);
    deliver(&a, na, &b);
    for (int i = 0; i < 2; i++) {
        sn_store_t *s = i ? b.store : a.store;
        assert_int_equal(get_s(s, "s", "x"), SN_ENOTFOUND);
        assert_value(s, "s", "y", "B");
        assert_value(s, "s", "a", "A");
    }
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_destroy_wins_over_a_concurrent_put(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    deliver(&a, 0, &b);
    size_t na = a.log.n;
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    advance(&b, 1000);  /* even a later stamp does not resurrect it */
    assert_int_equal(put_s(b.store, "s", "k", "after"), 0);
    assert_int_equal(put_s(b.store, "s", "n", "new"), 0);
    deliver(&b, 0, &a);
    deliver(&a, na, &b);
    for (int i = 0; i < 2; i++) {
        sn_store_t *s = i ? b.store : a.store;
        assert_false(exists_s(s, "s"));
        assert_int_equal(get_s(s, "s", "k"), SN_ENOTFOUND);
        assert_int_equal(get_s(s, "s", "n"), SN_ENOTFOUND);
        sn_store_stats_t st = stats_of(s);
        assert_int_equal(st.sessions, 0);
        assert_int_equal(st.tombstones, 1);
    }
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_put_after_seeing_a_destroy_recreates_the_session_everywhere(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "old", "v"), 0);
    deliver(&a, 0, &b);
    size_t na = a.log.n;
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    deliver(&a, na, &b);
    assert_false(exists_s(b.store, "s"));
    assert_int_equal(put_s(b.store, "s", "new", "w"), 0);
    deliver(&b, 0, &a);
    for (int i = 0; i < 2; i++) {
        sn_store_t *s = i ? b.store : a.store;
        assert_true(exists_s(s, "s"));
        assert_value(s, "s", "new", "w");
        assert_int_equal(get_s(s, "s", "old"), SN_ENOTFOUND);
        sn_state_t st;
        export_s(s, "s", &st);
        assert_int_equal(st.nattrs, 1);
        state_release(&st);
    }
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

/* Read-through asks the tier for the copies of the nodes the store has
 * seen write: they come latest first, bounded by the caller. */
static void test_node_ids_lists_the_writers_seen_latest_first(void **state)
{
    (void) state;
    node_t a, b, c;
    node_open(&a, 1);
    node_open(&b, 2);
    node_open(&c, 3);
    uint64_t ids[4] = {0};
    assert_int_equal(sn_store_node_ids(a.store, ids, 4), 0);
    assert_int_equal(put_s(a.store, "s", "x", "a"), 0);
    assert_int_equal(put_s(b.store, "t", "x", "b"), 0);
    assert_int_equal(put_s(c.store, "u", "x", "c"), 0);
    assert_int_equal(repair(b.store, a.store, "t"), SN_APPLY_APPLIED);
    assert_int_equal(repair(c.store, a.store, "u"), SN_APPLY_APPLIED);
    assert_int_equal(sn_store_node_ids(a.store, ids, 4), 3);
    assert_true(ids[0] == 3 && ids[1] == 2 && ids[2] == 1);
    memset(ids, 0, sizeof ids);
    assert_int_equal(sn_store_node_ids(a.store, ids, 2), 2);
    assert_true(ids[0] == 3 && ids[1] == 2 && ids[2] == 0);
    assert_int_equal(sn_store_node_ids(a.store, ids, 0), 0);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}

/* The state sink's last state, deep-copied (it lives only during the call). */
typedef struct {
    sn_state_t last;
    sn_delta_kind_t kind;
    size_t calls;
} state_log_t;

static void capture_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                          sn_delta_kind_t kind, void *arg)
{
    assert_true(id_len == 1 && id[0] == 's');
    assert_non_null(st);
    state_log_t *log = arg;
    state_release(&log->last);
    state_copy(&log->last, st);
    log->last.gc = (sn_vv_t){0, NULL};   /* not deep-copied; compared empty */
    log->kind = kind;
    log->calls++;
}

/* The exported state of `id`, compared with the sink's last. */
static void assert_sink_has_export(sn_store_t *s, const char *id, const state_log_t *log)
{
    sn_state_t st;
    export_s(s, id, &st);
    assert_state_equal(&log->last, &st);
    state_release(&st);
}

static void test_state_sink_gets_the_whole_state_of_every_local_change(void **state)
{
    (void) state;
    node_t a, b;
    state_log_t log = {0};
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.state_sink = capture_state;
    o.state_sink_arg = &log;
    node_start(&a, &o);
    node_open(&b, 2);

    assert_int_equal(sn_store_put(a.store, "s", 1, "x", 1, "one", 3, 7, true, 60), 0);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.kind, SN_DELTA_WRITE);
    assert_sink_has_export(a.store, "s", &log);
    advance(&a, 10);
    assert_int_equal(put_s(a.store, "s", "y", "two"), 0);
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.last.nattrs, 2);   /* the whole session, not the delta */
    assert_sink_has_export(a.store, "s", &log);
    /* what a backup needs: merged elsewhere, it is the session */
    assert_int_equal(sn_store_merge(b.store, "s", 1, &log.last), SN_APPLY_APPLIED);
    assert_sink_has_export(b.store, "s", &log);

    /* a read within the touch interval changes nothing to back up; one past
     * it emits a touch delta, and the state with its new last access */
    assert_int_equal(get_s(a.store, "s", "x"), 0);
    assert_int_equal(log.calls, 2);
    size_t touches = count_kind(&a.log, 0, SN_DELTA_TOUCH);
    advance(&a, 1500);
    assert_int_equal(get_s(a.store, "s", "x"), 0);
    assert_int_equal(count_kind(&a.log, 0, SN_DELTA_TOUCH), touches + 1);
    assert_int_equal(log.calls, 3);
    assert_int_equal(log.kind, SN_DELTA_TOUCH);
    assert_true(log.last.last_access_ms == a.clock.now_ms);
    assert_sink_has_export(a.store, "s", &log);

    /* a failed write is not one */
    assert_int_equal(sn_store_create(a.store, "s", 1, 60), SN_EEXISTS);
    assert_int_equal(log.calls, 3);

    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(log.calls, 4);
    assert_int_equal(log.kind, SN_DELTA_DESTROY);
    assert_false(log.last.has_meta);        /* the tombstone */
    assert_int_equal(log.last.nattrs, 0);
    assert_sink_has_export(a.store, "s", &log);

    state_release(&log.last);
    node_close(&a);
    node_close(&b);
}

static void test_merge_is_idempotent_and_commutative(void **state)
{
    (void) state;
    node_t a, b, c, d;
    node_open(&a, 1);
    node_open(&b, 2);
    node_open(&c, 3);
    node_open(&d, 4);
    assert_int_equal(sn_store_put(a.store, "s", 1, "x", 1, "0", 1, 0, true, 30), 0);
    deliver(&a, 0, &b);
    assert_int_equal(put_s(a.store, "s", "x", "a1"), 0);
    assert_int_equal(put_s(a.store, "s", "y", "a2"), 0);
    assert_int_equal(sn_store_touch(a.store, "s", 1, 90), 0);
    advance(&b, 3);
    assert_int_equal(put_s(b.store, "s", "x", "b1"), 0);
    assert_int_equal(put_s(b.store, "s", "z", "b2"), 0);
    assert_int_equal(sn_store_remove(b.store, "s", 1, "z", 1), 0);
    assert_int_equal(put_s(b.store, "t", "only", "b"), 0);

    sn_state_t sa, sb;
    export_s(a.store, "s", &sa);
    export_s(b.store, "s", &sb);
    assert_int_equal(sn_store_merge(a.store, "s", 1, &sb), SN_APPLY_APPLIED);
    assert_int_equal(sn_store_merge(b.store, "s", 1, &sa), SN_APPLY_APPLIED);
    uint64_t joined = digest_of(a.store, "s");
    assert_int_equal(digest_of(b.store, "s"), joined);

    /* in either order, on stores that held nothing */
    assert_int_equal(sn_store_merge(c.store, "s", 1, &sa), SN_APPLY_APPLIED);
    assert_int_equal(sn_store_merge(c.store, "s", 1, &sb), SN_APPLY_APPLIED);
    assert_int_equal(sn_store_merge(d.store, "s", 1, &sb), SN_APPLY_APPLIED);
    assert_int_equal(sn_store_merge(d.store, "s", 1, &sa), SN_APPLY_APPLIED);
    assert_int_equal(digest_of(c.store, "s"), joined);
    assert_int_equal(digest_of(d.store, "s"), joined);

    /* again: nothing changes */
    assert_int_equal(sn_store_merge(a.store, "s", 1, &sb), SN_APPLY_DUPLICATE);
    assert_int_equal(sn_store_merge(a.store, "s", 1, &sa), SN_APPLY_DUPLICATE);
    assert_int_equal(sn_store_merge(c.store, "s", 1, &sa), SN_APPLY_DUPLICATE);
    assert_int_equal(digest_of(a.store, "s"), joined);
    assert_int_equal(digest_of(c.store, "s"), joined);

    for (int i = 0; i < 4; i++) {
        node_t *n = i == 0 ? &a : i == 1 ? &b : i == 2 ? &c : &d;
        assert_value(n->store, "s", "x", "b1");
        assert_value(n->store, "s", "y", "a2");
        assert_int_equal(get_s(n->store, "s", "z"), SN_ENOTFOUND);
        sn_state_t st;
        export_s(n->store, "s", &st);
        assert_int_equal(st.max_inactive, 90);
        state_release(&st);
    }
    state_release(&sa);
    state_release(&sb);
    node_close(&a);
    node_close(&b);
    node_close(&c);
    node_close(&d);
}

/* A batch merge gives, item by item, what one merge at a time gives: on
 * sessions new to the store and already held, tombstones, a duplicate
 * within the batch and an item with a bad id among good ones. */
enum { MANY = 300 };
typedef struct {
    char ids[MANY + 2][16];
    sn_state_t st[MANY + 2];
    size_t n;
} exported_t;

static void export_all_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    exported_t *x = arg;
    assert_true(x->n < MANY && id_len < sizeof x->ids[0]);
    memcpy(x->ids[x->n], id, id_len);
    x->ids[x->n][id_len] = 0;
    state_copy(&x->st[x->n], st);
    x->n++;
}

static void test_merge_many_gives_what_one_merge_at_a_time_gives(void **state)
{
    (void) state;
    node_t a, b, one, many;
    node_open(&a, 1);
    node_open(&b, 2);
    node_open(&one, 3);
    node_open_shards(&many, 4, 2);  /* long chains, tables doubling during the batch */
    char id[16];
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(put_s(a.store, id, "k", "from a"), 0);
        if (i % 7 == 0)
            assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
        if (i % 3 == 0)  /* held already, with a concurrent update */
            assert_int_equal(put_s(b.store, id, "b", "from b"), 0);
    }
    for (int i = 0; i < MANY; i += 3) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(repair(b.store, one.store, id), SN_APPLY_APPLIED);
        assert_int_equal(repair(b.store, many.store, id), SN_APPLY_APPLIED);
    }
    exported_t *x = calloc(1, sizeof *x);
    assert_non_null(x);
    uint64_t cursor = 0;
    while (sn_store_scan(a.store, &cursor, 50, export_all_cb, x) == 1)
        ;
    assert_int_equal(x->n, MANY);
    state_copy(&x->st[x->n], &x->st[5]);  /* a duplicate, late in the batch */
    strcpy(x->ids[x->n++], x->ids[5]);
    state_copy(&x->st[x->n], &x->st[6]);  /* a bad id */
    x->ids[x->n++][0] = 0;

    sn_store_item_t items[MANY + 2];
    int rc[MANY + 2], want[MANY + 2];
    for (size_t i = 0; i < x->n; i++) {
        items[i] = (sn_store_item_t){x->ids[i], strlen(x->ids[i]), &x->st[i]};
        want[i] = sn_store_merge(one.store, items[i].id, items[i].id_len, items[i].st);
        rc[i] = 12345;
    }
    sn_store_merge_many(many.store, items, x->n, rc);
    assert_memory_equal(rc, want, x->n * sizeof *rc);
    assert_int_equal(rc[MANY], SN_APPLY_DUPLICATE);
    assert_int_equal(rc[MANY + 1], SN_EBADID);
    for (int i = 0; i < MANY; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(digest_of(many.store, id), digest_of(one.store, id));
        assert_int_equal(exists_s(many.store, id), i % 7 != 0);
        if (i % 3 == 0 && i % 7 != 0)
            assert_value(many.store, id, "b", "from b");
    }
    sn_store_merge_many(many.store, items, 0, rc);  /* nothing to do */
    sn_store_merge_many(NULL, items, 1, rc);
    assert_int_equal(rc[0], SN_EINVAL);
    for (size_t i = 0; i < x->n; i++)
        state_release(&x->st[i]);
    free(x);
    node_close(&a);
    node_close(&b);
    node_close(&one);
    node_close(&many);
}

static void test_merge_of_a_tombstone_destroys_a_concurrent_session(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    deliver(&a, 0, &b);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(put_s(b.store, "s", "k", "concurrent"), 0);
    assert_int_equal(repair(a.store, b.store, "s"), SN_APPLY_APPLIED);
    assert_int_equal(repair(b.store, a.store, "s"), SN_APPLY_APPLIED);
    assert_false(exists_s(a.store, "s"));
    assert_false(exists_s(b.store, "s"));
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

/* ------------------------------------------------------- touch coalescing */

static void test_reads_within_one_touch_interval_emit_at_most_one_touch(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.touch_interval_ms = 1000;
    node_start(&a, &o);
    advance(&a, 100);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    size_t base = a.log.n;

    /* the rest of the creating interval: the write already told the peers */
    for (int i = 0; i < 17; i++) {
        advance(&a, 50);
        assert_int_equal(get_s(a.store, "s", "k"), 0);
    }
    assert_int_equal(count_kind(&a.log, base, SN_DELTA_TOUCH), 0);

    /* every read of the next interval: one touch, at its first read */
    a.clock.now_ms = T0 + 1000;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(get_s(a.store, "s", "k"), 0);
        advance(&a, 9);
    }
    assert_int_equal(count_kind(&a.log, base, SN_DELTA_TOUCH), 1);
    const sn_delta_t *t = &a.log.items[a.log.n - 1];
    assert_int_equal(t->kind, SN_DELTA_TOUCH);
    assert_int_equal(t->id_len, 1);
    assert_memory_equal(t->id, "s", 1);
    assert_int_equal(t->st.last_access_ms, T0 + 1000);
    assert_int_equal(t->dot.node, 0);
    assert_int_equal(t->dot.counter, 0);

    /* crossing the next boundary: one more; touch(-1) counts like a read */
    a.clock.now_ms = T0 + 2000;
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), 0);
    assert_int_equal(get_s(a.store, "s", "k"), 0);
    assert_int_equal(count_kind(&a.log, base, SN_DELTA_TOUCH), 2);

    /* a miss on an absent attribute is still an access to the session */
    a.clock.now_ms = T0 + 3500;
    assert_int_equal(get_s(a.store, "s", "absent"), SN_ENOTFOUND);
    assert_int_equal(count_kind(&a.log, base, SN_DELTA_TOUCH), 3);

    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.touches_sent, 3);
    assert_int_equal(st.writes, 1);
    assert_int_equal(sn_store_seq(a.store), 1);
    node_close(&a);
}

static void test_touch_applied_elsewhere_postpones_expiry_there(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_create(a.store, "hot", 3, 10), 0);
    assert_int_equal(sn_store_create(a.store, "cold", 4, 10), 0);
    deliver(&a, 0, &b);
    size_t na = a.log.n;

    advance(&a, 9000);
    advance(&b, 9000);
    assert_int_equal(sn_store_touch(a.store, "hot", 3, -1), 0);
    assert_int_equal(a.log.n, na + 1);
    assert_int_equal(apply_at(&a, na, &b), SN_APPLY_APPLIED);
    assert_int_equal(apply_at(&a, na, &b), SN_APPLY_DUPLICATE);
    assert_int_equal(b.log.n, 0);   /* a received touch is not passed on */

    advance(&b, 9000);   /* 18 s after create, 9 s after the touch */
    assert_true(exists_s(b.store, "hot"));
    assert_false(exists_s(b.store, "cold"));
    advance(&b, 2000);   /* 11 s after the touch */
    assert_false(exists_s(b.store, "hot"));

    /* a touch for a session the receiver does not hold is ignored */
    sn_delta_t t = a.log.items[na];
    t.id = (const uint8_t *) "other";
    t.id_len = 5;
    assert_int_equal(sn_store_apply(b.store, &t), SN_APPLY_IGNORED);
    assert_false(exists_s(b.store, "other"));
    node_close(&a);
    node_close(&b);
}

static void test_touch_for_an_already_expired_session_is_ignored(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_create(a.store, "s", 1, 10), 0);
    deliver(&a, 0, &b);
    /* b's clock runs ahead: the session expired there (not swept yet) */
    advance(&b, 11000);
    assert_false(exists_s(b.store, "s"));
    advance(&a, 1000);
    size_t na = a.log.n;
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), 0);
    assert_int_equal(a.log.n, na + 1);
    assert_int_equal(a.log.items[na].kind, SN_DELTA_TOUCH);
    assert_int_equal(apply_at(&a, na, &b), SN_APPLY_IGNORED);
    assert_false(exists_s(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_merge_of_an_already_expired_state_is_ignored(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, true, 10), 0);
    sn_state_t st;
    export_s(a.store, "s", &st);
    advance(&b, 11000);
    assert_int_equal(sn_store_merge(b.store, "s", 1, &st), SN_APPLY_IGNORED);
    assert_false(exists_s(b.store, "s"));
    assert_int_equal(stats_of(b.store).sessions, 0);
    state_release(&st);
    node_close(&a);
    node_close(&b);
}

/* --------------------------------------------------------------- expiry */

static void test_session_expires_max_inactive_after_its_last_access(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, true, 10), 0);
    advance(&a, 9000);
    assert_true(exists_s(a.store, "s"));
    assert_int_equal(get_s(a.store, "s", "k"), 0);
    advance(&a, 9000);
    assert_int_equal(get_s(a.store, "s", "k"), 0);
    advance(&a, 11000);
    assert_int_equal(get_s(a.store, "s", "k"), SN_ENOTFOUND);
    assert_false(exists_s(a.store, "s"));
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, false, 0), SN_ENOTFOUND);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "k", 1), SN_ENOTFOUND);
    assert_int_equal(sn_store_touch(a.store, "s", 1, -1), SN_ENOTFOUND);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), SN_ENOTFOUND);
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.sessions, 0);
    node_close(&a);
}

static void test_expire_removes_expired_sessions_and_returns_the_count(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "short%d", i);
        assert_int_equal(sn_store_create(a.store, id, strlen(id), 10), 0);
        snprintf(id, sizeof id, "long%d", i);
        assert_int_equal(sn_store_create(a.store, id, strlen(id), 100), 0);
        snprintf(id, sizeof id, "never%d", i);
        assert_int_equal(sn_store_create(a.store, id, strlen(id), 0), 0);
    }
    assert_int_equal(sn_store_expire(a.store), 0);
    advance(&a, 11000);
    size_t before = a.log.n;
    assert_int_equal(sn_store_expire(a.store), 5);
    assert_int_equal(sn_store_expire(a.store), 0);
    assert_int_equal(a.log.n, before);  /* expiry replicates nothing */
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.expired, 5);
    assert_int_equal(st.sessions, 10);
    assert_int_equal(st.tombstones, 0);
    assert_false(exists_s(a.store, "short0"));
    assert_true(exists_s(a.store, "long0"));

    advance(&a, 10ull * 365 * 24 * 3600 * 1000);
    assert_int_equal(sn_store_expire(a.store), 5);
    st = stats_of(a.store);
    assert_int_equal(st.expired, 10);
    assert_int_equal(st.sessions, 5);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "never%d", i);
        assert_true(exists_s(a.store, id));
    }
    node_close(&a);
}

static void test_max_inactive_zero_never_expires(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    advance(&a, 50ull * 365 * 24 * 3600 * 1000);
    assert_int_equal(sn_store_expire(a.store), 0);
    assert_value(a.store, "s", "k", "v");
    node_close(&a);
}

static void test_put_with_create_on_an_expired_session_replaces_it(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(sn_store_put(a.store, "s", 1, "old", 3, "1", 1, 0, true, 10), 0);
    deliver(&a, 0, &b);
    size_t na = a.log.n;
    advance(&a, 11000);
    assert_int_equal(sn_store_put(a.store, "s", 1, "new", 3, "2", 1, 0, true, 10), 0);
    assert_int_equal(get_s(a.store, "s", "old"), SN_ENOTFOUND);
    assert_value(a.store, "s", "new", "2");

    assert_int_equal(a.log.n, na + 2);
    const sn_delta_t *dd = &a.log.items[na];
    const sn_delta_t *dw = &a.log.items[na + 1];
    assert_int_equal(dd->kind, SN_DELTA_DESTROY);
    assert_int_equal(dw->kind, SN_DELTA_WRITE);
    assert_int_equal(dw->dot.counter, dd->dot.counter + 1);
    assert_int_equal(sn_vv_get(&dw->st.vv, 1), dd->dot.counter);  /* the write saw the destroy */
    assert_true(dw->st.has_meta);

    /* a replica that still holds the old session ends with the new one only */
    deliver(&a, na, &b);
    assert_int_equal(get_s(b.store, "s", "old"), SN_ENOTFOUND);
    assert_value(b.store, "s", "new", "2");
    assert_int_equal(digest_of(a.store, "s"), digest_of(b.store, "s"));
    node_close(&a);
    node_close(&b);
}

static void test_create_on_an_expired_session_is_not_eexists(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    assert_int_equal(sn_store_touch(a.store, "s", 1, 10), 0);
    advance(&a, 11000);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, "v", 1, 0, false, 0), SN_ENOTFOUND);
    assert_int_equal(sn_store_create(a.store, "s", 1, 10), 0);
    assert_int_equal(get_s(a.store, "s", "k"), SN_ENOTFOUND);
    assert_true(exists_s(a.store, "s"));
    node_close(&a);
}

/* --------------------------------------------------------- memory bound */

static void test_memory_limit_evicts_the_least_recently_used(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.shards = 1;
    o.memory_limit = 100 * 1200 + 4096;
    node_start(&a, &o);
    char value[1024];
    memset(value, 'v', sizeof value);
    char id[32];
    enum { TOTAL = 1000, HOT = 5 };
    for (int i = 0; i < TOTAL; i++) {
        advance(&a, 1);
        snprintf(id, sizeof id, "s%04d", i);
        assert_int_equal(sn_store_put(a.store, id, strlen(id), "v", 1, value, sizeof value, 0,
                                      true, 0), 0);
        assert_true(stats_of(a.store).bytes <= o.memory_limit);
        /* a few sessions stay in use all along */
        if (i >= HOT && i % 5 == 0)
            for (int h = 0; h < HOT; h++) {
                advance(&a, 1);
                snprintf(id, sizeof id, "s%04d", h);
                assert_int_equal(get_s(a.store, id, "v"), 0);
            }
    }
    sn_store_stats_t st = stats_of(a.store);
    assert_true(st.bytes <= o.memory_limit);
    assert_true(st.evictions > 0);
    assert_int_equal(st.sessions + st.evictions, TOTAL);
    assert_int_equal(st.full_errors, 0);
    for (int h = 0; h < HOT; h++) {
        snprintf(id, sizeof id, "s%04d", h);
        assert_true(exists_s(a.store, id));
    }
    for (int i = TOTAL - 10; i < TOTAL; i++) {
        snprintf(id, sizeof id, "s%04d", i);
        assert_true(exists_s(a.store, id));
    }
    int old_alive = 0;
    for (int i = HOT; i < 500; i++) {
        snprintf(id, sizeof id, "s%04d", i);
        old_alive += exists_s(a.store, id);
    }
    assert_true(old_alive <= 5);
    node_close(&a);
}

static void test_value_bigger_than_the_whole_limit_is_efull(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.shards = 1;
    o.memory_limit = 16 * 1024;
    node_start(&a, &o);
    size_t n = 32 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'b', n);
    assert_int_equal(sn_store_put(a.store, "s", 1, "k", 1, big, n, 0, true, 0), SN_EFULL);
    assert_false(exists_s(a.store, "s"));
    assert_int_equal(a.log.n, 0);
    assert_int_equal(sn_store_seq(a.store), 0);
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.full_errors, 1);
    assert_int_equal(st.writes, 0);
    assert_true(st.bytes <= o.memory_limit);
    /* small writes still succeed */
    assert_int_equal(put_s(a.store, "s", "k", "small"), 0);
    assert_value(a.store, "s", "k", "small");
    free(big);
    node_close(&a);
}

/* A few large sessions hold the memory of a store of many shards, whose
 * other shards are empty: a write to one of those evicts from the others
 * rather than fail. */
static void test_a_shard_with_nothing_to_evict_evicts_from_the_others(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.shards = 64;
    o.memory_limit = 1u << 20;
    node_start(&a, &o);
    size_t n = 64 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'b', n);
    char id[32];
    for (int i = 0; i < 15; i++) {
        advance(&a, 1);
        snprintf(id, sizeof id, "big%02d", i);
        assert_int_equal(sn_store_put(a.store, id, strlen(id), "v", 1, big, n, 0, true, 0), 0);
    }
    char value[1024];
    memset(value, 'v', sizeof value);
    for (int i = 0; i < 1000; i++) {
        advance(&a, 1);
        snprintf(id, sizeof id, "s%04d", i);
        assert_int_equal(sn_store_put(a.store, id, strlen(id), "v", 1, value, sizeof value, 0,
                                      true, 0), 0);
        assert_true(stats_of(a.store).bytes <= o.memory_limit);
    }
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.full_errors, 0);
    assert_true(st.evictions > 0);
    int bigs = 0;
    for (int i = 0; i < 15; i++) {
        snprintf(id, sizeof id, "big%02d", i);
        bigs += exists_s(a.store, id);
    }
    assert_true(bigs < 15);
    for (int i = 990; i < 1000; i++) {   /* the newest stay */
        snprintf(id, sizeof id, "s%04d", i);
        assert_true(exists_s(a.store, id));
    }
    free(big);
    node_close(&a);
}

static void tombstone_check_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                               void *arg)
{
    (void) id;
    (void) id_len;
    *(bool *) arg = !st->has_meta && st->dv.n > 0;
}

static void test_tombstones_are_never_evicted(void **state)
{
    (void) state;
    node_t a;
    node_prepare(&a);
    sn_store_options_t o = node_options(&a, 1);
    o.shards = 1;
    o.memory_limit = 40 * 1024;
    node_start(&a, &o);
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "t%02d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
    }
    char value[1024];
    memset(value, 'v', sizeof value);
    for (int i = 0; i < 300; i++) {
        advance(&a, 1);
        snprintf(id, sizeof id, "s%04d", i);
        assert_int_equal(sn_store_put(a.store, id, strlen(id), "v", 1, value, sizeof value, 0,
                                      true, 0), 0);
    }
    sn_store_stats_t st = stats_of(a.store);
    assert_true(st.evictions > 0);
    assert_int_equal(st.tombstones, 20);
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "t%02d", i);
        bool tomb = false;
        assert_int_equal(sn_store_export(a.store, id, strlen(id), tombstone_check_cb, &tomb), 0);
        assert_true(tomb);
    }
    node_close(&a);
}

/* ----------------------------------------------------------------- scan */

typedef struct {
    int alive[2000];
    int dead[2000];
    int other;
} visits_t;

static void count_visit_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    visits_t *v = arg;
    char buf[16];
    if (id_len < 2 || id_len >= sizeof buf) {
        v->other++;
        return;
    }
    memcpy(buf, id, id_len);
    buf[id_len] = 0;
    int n = atoi(buf + 1);
    if (n < 0 || n >= 2000 || (buf[0] != 's' && buf[0] != 't')) {
        v->other++;
        return;
    }
    if (st->has_meta)
        v->alive[n]++;
    else
        v->dead[n]++;
}

static void test_scan_visits_every_session_and_tombstone(void **state)
{
    (void) state;
    node_t a;
    node_open_shards(&a, 1, 4);
    char id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        if (i % 6 == 0)
            assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
    }
    visits_t *v = calloc(1, sizeof *v);
    assert_non_null(v);
    uint64_t cursor = 0;
    int calls = 0, more;
    do {
        more = sn_store_scan(a.store, &cursor, 7, count_visit_cb, v);
        assert_true(more == 0 || more == 1);
        assert_true(++calls < 10000);
    } while (more);
    assert_true(calls > 1);
    for (int i = 0; i < 300; i++) {
        if (i % 6 == 0) {
            assert_true(v->dead[i] >= 1);
            assert_int_equal(v->alive[i], 0);
        } else {
            assert_true(v->alive[i] >= 1);
            assert_int_equal(v->dead[i], 0);
        }
    }
    assert_int_equal(v->other, 0);

    /* an empty store: done at once, nothing visited */
    node_t e;
    node_open(&e, 2);
    memset(v, 0, sizeof *v);
    cursor = 0;
    calls = 0;
    while (sn_store_scan(e.store, &cursor, 7, count_visit_cb, v) == 1)
        assert_true(++calls < 10000);
    assert_int_equal(v->other, 0);
    free(v);
    node_close(&e);
    node_close(&a);
}

/* A doubling moves the old table's chains a few buckets per operation:
 * meanwhile every session is found, updated, destroyed and recreated in
 * whichever table it sits, and nothing absent is found. */
static void test_sessions_stay_reachable_while_the_table_is_rehashed(void **state)
{
    (void) state;
    node_t a;
    node_open_shards(&a, 1, 1);
    enum { N = 6000 };
    char id[32];
    uint8_t *destroyed = calloc(N, 1);
    assert_non_null(destroyed);
    uint32_t rng = 12345;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        /* right after a doubling most sessions are still in the old table */
        for (int probe = 0; probe < 3; probe++) {
            rng = rng * 1103515245u + 12345u;
            int j = (int) ((rng >> 8) % (uint32_t) (i + 1));
            snprintf(id, sizeof id, "s%d", j);
            assert_int_equal(exists_s(a.store, id), !destroyed[j]);
            if (probe == 0 && !destroyed[j])
                assert_int_equal(put_s(a.store, id, "k", "w"), 0);  /* replaced in place */
            if (probe == 1 && j % 7 == 0 && !destroyed[j]) {
                assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
                destroyed[j] = 1;
            }
        }
        snprintf(id, sizeof id, "absent%d", i);
        assert_false(exists_s(a.store, id));
    }
    uint64_t alive = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(exists_s(a.store, id), !destroyed[i]);
        alive += !destroyed[i];
        if (destroyed[i] && i % 2) {
            assert_int_equal(put_s(a.store, id, "k", "again"), 0);  /* over its tombstone */
            alive++;
        }
    }
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.sessions, alive);
    free(destroyed);
    node_close(&a);
}

/* A store sized ahead (a joiner told its donor's count) takes its bucket
 * arrays at once, keeps what it held, and counts the memory; a limit the
 * arrays would pass leaves the tables as they were. */
static void test_reserve_sizes_the_tables_ahead_and_keeps_every_session(void **state)
{
    (void) state;
    node_t a;
    node_open_shards(&a, 1, 4);
    char id[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
    }
    uint64_t before = stats_of(a.store).bytes;
    assert_int_equal(sn_store_reserve(a.store, 100000), 0);
    /* 4 shards of 32768 buckets (25,001 sessions each, rounded up), in
     * place of tables of 16 to 64 */
    uint64_t grown = stats_of(a.store).bytes - before;
    assert_true(grown >= 4 * (32768 - 64) * sizeof(void *));
    assert_true(grown <= 4 * (32768 - 16) * sizeof(void *));
    assert_int_equal(sn_store_reserve(a.store, 1000), 0);  /* never shrinks */
    assert_int_equal(stats_of(a.store).bytes - before, grown);
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_true(exists_s(a.store, id));
    }
    for (int i = 100; i < 20000; i++) {
        snprintf(id, sizeof id, "r%d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
    }
    assert_int_equal(stats_of(a.store).sessions, 20000);
    assert_int_equal(sn_store_reserve(NULL, 10), SN_EINVAL);
    node_close(&a);

    node_t b;
    node_prepare(&b);
    sn_store_options_t o = node_options(&b, 2);
    o.shards = 4;
    o.memory_limit = 64u << 10;
    node_start(&b, &o);
    assert_int_equal(put_s(b.store, "kept", "k", "v"), 0);
    before = stats_of(b.store).bytes;
    assert_int_equal(sn_store_reserve(b.store, 1000000), 0);
    assert_int_equal(stats_of(b.store).bytes, before);
    assert_true(exists_s(b.store, "kept"));
    node_close(&b);
}

static void test_scan_visits_every_session_while_the_table_grows(void **state)
{
    (void) state;
    node_t a;
    node_open_shards(&a, 1, 1);
    char id[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "s%d", i);
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        if (i % 10 == 0)
            assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
    }
    visits_t *v = calloc(1, sizeof *v);
    assert_non_null(v);
    uint64_t cursor = 0;
    int calls = 0, next = 100;
    while (sn_store_scan(a.store, &cursor, 3, count_visit_cb, v) == 1) {
        assert_true(++calls < 100000);
        for (int k = 0; k < 20 && next < 2000; k++, next++) {
            snprintf(id, sizeof id, "s%d", next);
            assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        }
    }
    assert_true(next > 400);   /* the table doubled several times under the scan */
    for (int i = 0; i < 100; i++) {
        if (i % 10 == 0)
            assert_true(v->dead[i] >= 1);
        else
            assert_true(v->alive[i] >= 1);
    }
    free(v);
    node_close(&a);
}

static void test_export_and_digest_of_a_missing_id_are_enotfound(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    sn_state_t st;
    memset(&st, 0, sizeof st);
    uint64_t dg;
    assert_int_equal(sn_store_export(a.store, "nope", 4, copy_state_cb, &st), SN_ENOTFOUND);
    assert_int_equal(sn_store_digest(a.store, "nope", 4, &dg), SN_ENOTFOUND);
    assert_int_equal(st.nattrs, 0);
    node_close(&a);
}

/* The vector beside the digest tells which replica is behind: here b has
 * a's first write only, so b's vector is below a's. */
static void test_digest_vv_gives_the_vector_that_orders_replicas(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v1"), 0);
    deliver(&a, 0, &b);
    size_t seen = a.log.n;
    assert_int_equal(put_s(a.store, "s", "k", "v2"), 0);

    uint64_t da, db, plain;
    sn_vv_t va = {0}, vb = {0};
    assert_int_equal(sn_store_digest_vv(a.store, "s", 1, &da, &va), 0);
    assert_int_equal(sn_store_digest_vv(b.store, "s", 1, &db, &vb), 0);
    assert_int_equal(sn_store_digest(a.store, "s", 1, &plain), 0);
    assert_true(plain == da);
    assert_true(da != db);
    assert_true(sn_vv_valid(&va) && sn_vv_valid(&vb));
    assert_int_equal(va.n, 1);
    assert_true(va.dots[0].node == 1 && va.dots[0].counter == sn_store_seq(a.store));
    assert_true(sn_vv_leq(&vb, &va));
    assert_false(sn_vv_leq(&va, &vb));
    free(vb.dots);
    vb = (sn_vv_t) {0};

    /* once b has the second write too, digests and vectors agree */
    deliver(&a, seen, &b);
    assert_int_equal(sn_store_digest_vv(b.store, "s", 1, &db, &vb), 0);
    assert_true(da == db);
    assert_true(sn_vv_leq(&va, &vb) && sn_vv_leq(&vb, &va));
    free(va.dots);
    free(vb.dots);

    /* a missing id leaves the vector alone */
    sn_vv_t untouched = {7, NULL};
    assert_int_equal(sn_store_digest_vv(a.store, "nope", 4, &da, &untouched), SN_ENOTFOUND);
    assert_int_equal(untouched.n, 7);

    /* the vector alone is the same vector; asking for nothing is an error */
    sn_vv_t with, alone;
    assert_int_equal(sn_store_digest_vv(a.store, "s", 1, &da, &with), 0);
    assert_int_equal(sn_store_digest_vv(a.store, "s", 1, NULL, &alone), 0);
    assert_true(sn_vv_leq(&with, &alone) && sn_vv_leq(&alone, &with));
    free(with.dots);
    free(alone.dots);
    assert_int_equal(sn_store_digest_vv(a.store, "s", 1, NULL, NULL), SN_EINVAL);
    node_close(&a);
    node_close(&b);
}

/* ------------------------------------------------------------------- GC */

static void test_gc_removes_tombstones_covered_by_the_stable_vector(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "t1", "k", "v"), 0);
    assert_int_equal(put_s(a.store, "t2", "k", "v"), 0);
    assert_int_equal(put_s(a.store, "alive", "k", "v"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "t1", 2), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "t2", 2), 0);
    assert_int_equal(stats_of(a.store).tombstones, 2);

    /* a vector that covers neither destroy removes nothing */
    sn_dot_t early[] = {{1, 3}};
    sn_vv_t stable = {1, early};
    assert_int_equal(sn_store_gc(a.store, &stable), 0);
    assert_int_equal(stats_of(a.store).tombstones, 2);

    sn_dot_t all[] = {{1, sn_store_seq(a.store)}};
    stable = (sn_vv_t){1, all};
    assert_int_equal(sn_store_gc(a.store, &stable), 2);
    sn_store_stats_t st = stats_of(a.store);
    assert_int_equal(st.tombstones, 0);
    assert_int_equal(st.gc_removed, 2);
    assert_int_equal(st.sessions, 1);
    assert_value(a.store, "alive", "k", "v");
    sn_state_t none;
    memset(&none, 0, sizeof none);
    assert_int_equal(sn_store_export(a.store, "t1", 2, copy_state_cb, &none), SN_ENOTFOUND);
    assert_int_equal(sn_store_gc(a.store, &stable), 0);
    node_close(&a);
}

/* A write made concurrently with a destroy arrives after the stable vector
 * covers the tombstone but before collection reached its shard: the
 * destroy wins, as it does against the tombstone itself (this was refused
 * with SN_EINVAL, "neither alive nor a tombstone"). */
static void test_a_write_concurrent_with_a_collectable_destroy_is_ignored(void **state)
{
    (void) state;
    node_t a, b, c;
    node_open(&a, 1);
    node_open(&b, 2);
    node_open(&c, 3);
    char id[32];
    sn_store_stats_t st;
    for (int k = 0;; k++) {
        assert_true(k < 1000);
        /* a session outside shard 0, which the first collection step does */
        snprintf(id, sizeof id, "s%d", k);
        size_t a0 = a.log.n;
        assert_int_equal(put_s(a.store, id, "k", "v"), 0);
        deliver(&a, a0, &b);
        assert_int_equal(put_s(b.store, id, "k2", "w"), 0);  /* has not seen the destroy */
        assert_int_equal(sn_store_destroy_session(a.store, id, strlen(id)), 0);
        deliver(&a, a0, &c);
        sn_dot_t all[] = {{1, sn_store_seq(a.store)}};
        sn_vv_t stable = {1, all};
        uint32_t shard = 0;
        sn_store_gc_step(c.store, &stable, &shard);
        st = stats_of(c.store);
        if (st.tombstones == 1) {
            /* as for any delta a collected tombstone covers */
            assert_int_equal(apply_at(&b, b.log.n - 1, &c), SN_APPLY_DUPLICATE);
            break;
        }
    }
    assert_false(exists_s(c.store, id));
    st = stats_of(c.store);
    assert_int_equal(st.sessions, 0);
    node_close(&a);
    node_close(&b);
    node_close(&c);
}

/* A session destroyed and created again keeps the destroy's vector, and
 * every write to it carries that vector. Once the destroy is collected, such
 * a write must still apply: it was taken for a collected tombstone and
 * dropped as a duplicate, so a replica whose stable vector had passed the
 * destroy lost the updates for good. */
static void test_a_write_to_a_recreated_session_applies_after_the_destroy_is_collected(
    void **state)
{
    (void) state;
    node_t a, c;
    node_open(&a, 1);
    node_open(&c, 3);
    assert_int_equal(put_s(a.store, "s", "k", "v1"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    assert_int_equal(put_s(a.store, "s", "k", "v2"), 0);  /* created again */
    deliver(&a, 0, &c);
    sn_dot_t all[] = {{1, sn_store_seq(a.store)}};
    sn_vv_t stable = {1, all};
    assert_int_equal(sn_store_gc(c.store, &stable), 0);   /* the session is alive */
    size_t mark = a.log.n;
    assert_int_equal(put_s(a.store, "s", "k", "v3"), 0);
    assert_int_equal(put_s(a.store, "s", "k2", "w"), 0);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "k2", 2), 0);
    for (size_t i = mark; i < a.log.n; i++)
        assert_true(a.log.items[i].st.dv.n > 0);  /* each carries the destroy */
    deliver(&a, mark, &c);
    assert_value(c.store, "s", "k", "v3");
    assert_int_equal(get_s(c.store, "s", "k2"), SN_ENOTFOUND);
    node_close(&a);
    node_close(&c);
}

static void test_merge_of_a_collected_tombstone_is_ignored(void **state)
{
    (void) state;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    assert_int_equal(put_s(a.store, "s", "k", "v"), 0);
    assert_int_equal(sn_store_destroy_session(a.store, "s", 1), 0);
    sn_state_t tomb;
    export_s(a.store, "s", &tomb);
    deliver(&a, 0, &b);

    sn_dot_t all[] = {{1, sn_store_seq(a.store)}};
    sn_vv_t stable = {1, all};
    assert_int_equal(sn_store_gc(b.store, &stable), 1);
    assert_int_equal(stats_of(b.store).gc_removed, 1);
    assert_int_equal(sn_store_merge(b.store, "s", 1, &tomb), SN_APPLY_IGNORED);
    assert_false(exists_s(b.store, "s"));
    sn_state_t none;
    memset(&none, 0, sizeof none);
    assert_int_equal(sn_store_export(b.store, "s", 1, copy_state_cb, &none), SN_ENOTFOUND);
    assert_int_equal(stats_of(b.store).tombstones, 0);
    state_release(&tomb);
    node_close(&a);
    node_close(&b);
}

static void test_gc_drops_removed_attribute_records(void **state)
{
    (void) state;
    node_t a;
    node_open(&a, 1);
    assert_int_equal(put_s(a.store, "s", "a", "1"), 0);
    assert_int_equal(put_s(a.store, "s", "b", "2"), 0);
    assert_int_equal(sn_store_remove(a.store, "s", 1, "a", 1), 0);
    sn_state_t st;
    export_s(a.store, "s", &st);
    const sn_attr_t *rec = find_attr(&st, "a");
    assert_non_null(rec);
    assert_true(rec->removed);
    state_release(&st);

    sn_dot_t all[] = {{1, sn_store_seq(a.store)}};
    sn_vv_t stable = {1, all};
    assert_int_equal(sn_store_gc(a.store, &stable), 0);   /* no tombstone to remove */
    export_s(a.store, "s", &st);
    assert_null(find_attr(&st, "a"));
    assert_non_null(find_attr(&st, "b"));
    assert_int_equal(st.nattrs, 1);
    assert_true(st.has_meta);
    state_release(&st);
    assert_value(a.store, "s", "b", "2");
    assert_int_equal(stats_of(a.store).sessions, 1);
    node_close(&a);
}

/* ----------------------------------------------------------------- main */


/* ------------------------------------------------------------ items */

typedef struct {
    char value[256];
    size_t len;
    uint32_t flags;
    uint64_t cas;
    uint32_t max_inactive;
    int calls;
} item_copy_t;

static void copy_item(const sn_item_t *it, void *arg)
{
    item_copy_t *c = arg;
    assert_true(it->value_len < sizeof c->value);
    memcpy(c->value, it->value, it->value_len);
    c->value[it->value_len] = 0;
    c->len = it->value_len;
    c->flags = it->flags;
    c->cas = it->cas;
    c->max_inactive = it->max_inactive;
    c->calls++;
}

static int item_s(sn_store_t *s, const char *id, sn_item_mode_t mode, const char *value,
                  uint32_t flags, int64_t max_inactive, uint64_t cas, uint64_t *cas_out)
{
    return sn_store_item_store(s, id, strlen(id), NULL, 0, mode, value, strlen(value), flags,
                               max_inactive, cas, cas_out);
}

static item_copy_t item_of(sn_store_t *s, const char *id)
{
    item_copy_t c = {0};
    assert_int_equal(sn_store_item_get(s, id, strlen(id), NULL, 0, copy_item, &c), 0);
    assert_int_equal(c.calls, 1);
    return c;
}

static void test_item_modes_follow_memcached(void **unused)
{
    (void) unused;
    node_t a;
    node_open(&a, 1);
    uint64_t cas1 = 0, cas2 = 0;
    /* replace, append, prepend and cas need the item; add needs it missing */
    assert_int_equal(item_s(a.store, "k", SN_ITEM_REPLACE, "x", 0, 0, 0, NULL), SN_ENOTFOUND);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_APPEND, "x", 0, -1, 0, NULL), SN_ENOTFOUND);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_PREPEND, "x", 0, -1, 0, NULL), SN_ENOTFOUND);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_CAS, "x", 0, 0, 1, NULL), SN_ENOTFOUND);
    item_copy_t none = {0};
    assert_int_equal(sn_store_item_get(a.store, "k", 1, NULL, 0, copy_item, &none), SN_ENOTFOUND);
    assert_int_equal(none.calls, 0);
    assert_int_equal(a.log.n, 0);

    assert_int_equal(item_s(a.store, "k", SN_ITEM_ADD, "one", 7, 60, 0, &cas1), 0);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_ADD, "two", 0, 60, 0, NULL), SN_EEXISTS);
    item_copy_t c = item_of(a.store, "k");
    assert_string_equal(c.value, "one");
    assert_int_equal(c.flags, 7);
    assert_int_equal(c.max_inactive, 60);
    assert_true(c.cas == cas1 && cas1 != 0);

    /* append keeps flags and expiry; the cas moves */
    assert_int_equal(item_s(a.store, "k", SN_ITEM_APPEND, "+", 99, -1, 0, &cas2), 0);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_PREPEND, "-", 99, -1, 0, NULL), 0);
    c = item_of(a.store, "k");
    assert_string_equal(c.value, "-one+");
    assert_int_equal(c.flags, 7);
    assert_int_equal(c.max_inactive, 60);
    assert_true(cas2 > cas1 && c.cas > cas2);

    /* cas: a stale unique is EEXISTS and changes nothing */
    size_t before = a.log.n;
    assert_int_equal(item_s(a.store, "k", SN_ITEM_CAS, "stale", 0, 0, cas1, NULL), SN_EEXISTS);
    assert_int_equal(a.log.n, before);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_CAS, "fresh", 3, 30, c.cas, &cas1), 0);
    c = item_of(a.store, "k");
    assert_string_equal(c.value, "fresh");
    assert_int_equal(c.flags, 3);
    assert_int_equal(c.max_inactive, 30);
    assert_true(c.cas == cas1);

    /* set and replace change the expiry, -1 keeps it */
    assert_int_equal(item_s(a.store, "k", SN_ITEM_REPLACE, "r", 0, -1, 0, NULL), 0);
    assert_int_equal(item_of(a.store, "k").max_inactive, 30);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_SET, "s", 0, 0, 0, NULL), 0);
    assert_int_equal(item_of(a.store, "k").max_inactive, 0);

    /* an append past value_max is ETOOBIG and leaves the item */
    char big[SN_VALUE_MAX_DEFAULT];
    memset(big, 'b', sizeof big);
    assert_int_equal(sn_store_item_store(a.store, "k", 1, NULL, 0, SN_ITEM_APPEND, big,
                                         sizeof big, 0, -1, 0, NULL), SN_ETOOBIG);
    assert_string_equal(item_of(a.store, "k").value, "s");
    assert_int_equal(item_s(a.store, "k", (sn_item_mode_t) 42, "s", 0, 0, 0, NULL), SN_EINVAL);

    /* add of an item that expired succeeds: it is missing */
    assert_int_equal(item_s(a.store, "e", SN_ITEM_SET, "old", 0, 1, 0, NULL), 0);
    advance(&a, 1500);
    assert_int_equal(item_s(a.store, "e", SN_ITEM_ADD, "new", 0, 0, 0, NULL), 0);
    assert_string_equal(item_of(a.store, "e").value, "new");
    node_close(&a);
}

static void test_item_cas_is_the_same_on_every_replica(void **unused)
{
    (void) unused;
    node_t a, b;
    node_open(&a, 1);
    node_open(&b, 2);
    uint64_t cas = 0;
    assert_int_equal(item_s(a.store, "k", SN_ITEM_SET, "v", 5, 0, 0, &cas), 0);
    deliver(&a, 0, &b);
    assert_true(item_of(b.store, "k").cas == cas);
    /* a gets on one node and a cas on the other */
    uint64_t cas_b = 0;
    assert_int_equal(item_s(b.store, "k", SN_ITEM_CAS, "w", 5, 0, cas, &cas_b), 0);
    deliver(&b, 0, &a);
    item_copy_t c = item_of(a.store, "k");
    assert_string_equal(c.value, "w");
    assert_true(c.cas == cas_b);
    assert_int_equal(item_s(a.store, "k", SN_ITEM_CAS, "x", 5, 0, cas, NULL), SN_EEXISTS);
    assert_true(digest_of(a.store, "k") == digest_of(b.store, "k"));
    node_close(&a);
    node_close(&b);
}

static int arith_s(sn_store_t *s, const char *id, bool decr, uint64_t delta, bool create,
                   uint64_t initial, uint64_t *out)
{
    return sn_store_item_arith(s, id, strlen(id), NULL, 0, decr, delta, create, initial, 0, out,
                               NULL);
}

static void test_item_incr_and_decr_follow_memcached(void **unused)
{
    (void) unused;
    node_t a;
    node_open(&a, 1);
    uint64_t v = 0;
    assert_int_equal(arith_s(a.store, "n", false, 1, false, 0, &v), SN_ENOTFOUND);
    assert_int_equal(arith_s(a.store, "n", false, 1, true, 10, &v), 0);
    assert_true(v == 10);
    assert_string_equal(item_of(a.store, "n").value, "10");
    assert_int_equal(arith_s(a.store, "n", false, 5, true, 77, &v), 0);
    assert_true(v == 15);
    assert_int_equal(arith_s(a.store, "n", true, 100, false, 0, &v), 0);
    assert_true(v == 0);  /* decr stops at 0 */
    assert_string_equal(item_of(a.store, "n").value, "0");

    assert_int_equal(item_s(a.store, "n", SN_ITEM_SET, "18446744073709551615", 4, 0, 0, NULL), 0);
    assert_int_equal(arith_s(a.store, "n", false, 2, false, 0, &v), 0);
    assert_true(v == 1);  /* incr wraps at 2^64 */
    assert_int_equal(item_of(a.store, "n").flags, 4);

    const char *bad[] = {"", "x", "12a", " 1", "-1", "18446744073709551616",
                         "000000000000000000001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(item_s(a.store, "n", SN_ITEM_SET, bad[i], 0, 0, 0, NULL), 0);
        size_t before = a.log.n;
        assert_int_equal(arith_s(a.store, "n", false, 1, false, 0, &v), SN_ENOTNUM);
        assert_int_equal(a.log.n, before);
        assert_string_equal(item_of(a.store, "n").value, bad[i]);
    }
    node_close(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_refuses_node_id_zero),
        cmocka_unit_test(test_new_refuses_shard_count_not_a_power_of_two),
        cmocka_unit_test(test_destroy_nulls_the_pointer_and_accepts_null),
        cmocka_unit_test(test_id_valid_follows_memcached_key_rules),
        cmocka_unit_test(test_every_operation_rejects_bad_ids),
        cmocka_unit_test(test_id_of_250_bytes_works_for_every_operation),
        cmocka_unit_test(test_create_of_an_alive_session_is_eexists),
        cmocka_unit_test(test_put_without_create_on_a_missing_session_is_enotfound),
        cmocka_unit_test(test_put_with_create_makes_the_session_and_get_returns_value_and_flags),
        cmocka_unit_test(test_put_replaces_value_and_flags),
        cmocka_unit_test(test_get_into_a_small_buffer_is_etrunc_with_the_full_length),
        cmocka_unit_test(test_get_alloc_returns_a_copy_the_caller_frees),
        cmocka_unit_test(test_empty_value_round_trips),
        cmocka_unit_test(test_empty_attribute_name_is_an_ordinary_attribute),
        cmocka_unit_test(test_attribute_name_longer_than_the_max_is_ebadname),
        cmocka_unit_test(test_value_larger_than_value_max_is_etoobig),
        cmocka_unit_test(test_missing_attribute_or_session_is_enotfound),
        cmocka_unit_test(test_removed_attribute_is_gone_and_removing_it_again_is_enotfound),
        cmocka_unit_test(test_destroyed_session_misses_and_leaves_a_tombstone),
        cmocka_unit_test(test_put_with_create_after_destroy_recreates_with_fresh_attributes),
        cmocka_unit_test(test_touch_marks_an_access_and_can_set_max_inactive),
        cmocka_unit_test(test_exists_is_not_an_access),
        cmocka_unit_test(test_null_and_out_of_range_arguments_are_einval),
        cmocka_unit_test(test_version_vector_helpers),
        cmocka_unit_test(test_each_local_write_emits_one_delta_with_kind_dot_and_context),
        cmocka_unit_test(test_sequence_is_shared_by_all_sessions_of_a_node),
        cmocka_unit_test(test_applying_every_delta_on_a_second_store_makes_digests_equal),
        cmocka_unit_test(test_applying_a_delta_twice_is_duplicate),
        cmocka_unit_test(test_delta_after_a_missed_one_needs_full_state_and_changes_nothing),
        cmocka_unit_test(test_unknown_session_with_a_context_needs_full_state_then_merge_repairs),
        cmocka_unit_test(test_invalid_deltas_are_einval_and_change_nothing),
        cmocka_unit_test(test_concurrent_sets_of_one_attribute_resolve_the_same_way),
        cmocka_unit_test(test_concurrent_removes_and_sets_of_different_attributes_both_survive),
        cmocka_unit_test(test_destroy_wins_over_a_concurrent_put),
        cmocka_unit_test(test_put_after_seeing_a_destroy_recreates_the_session_everywhere),
        cmocka_unit_test(test_node_ids_lists_the_writers_seen_latest_first),
        cmocka_unit_test(test_state_sink_gets_the_whole_state_of_every_local_change),
        cmocka_unit_test(test_merge_is_idempotent_and_commutative),
        cmocka_unit_test(test_merge_many_gives_what_one_merge_at_a_time_gives),
        cmocka_unit_test(test_merge_of_a_tombstone_destroys_a_concurrent_session),
        cmocka_unit_test(test_reads_within_one_touch_interval_emit_at_most_one_touch),
        cmocka_unit_test(test_touch_applied_elsewhere_postpones_expiry_there),
        cmocka_unit_test(test_touch_for_an_already_expired_session_is_ignored),
        cmocka_unit_test(test_merge_of_an_already_expired_state_is_ignored),
        cmocka_unit_test(test_session_expires_max_inactive_after_its_last_access),
        cmocka_unit_test(test_expire_removes_expired_sessions_and_returns_the_count),
        cmocka_unit_test(test_max_inactive_zero_never_expires),
        cmocka_unit_test(test_put_with_create_on_an_expired_session_replaces_it),
        cmocka_unit_test(test_create_on_an_expired_session_is_not_eexists),
        cmocka_unit_test(test_memory_limit_evicts_the_least_recently_used),
        cmocka_unit_test(test_a_shard_with_nothing_to_evict_evicts_from_the_others),
        cmocka_unit_test(test_value_bigger_than_the_whole_limit_is_efull),
        cmocka_unit_test(test_tombstones_are_never_evicted),
        cmocka_unit_test(test_scan_visits_every_session_and_tombstone),
        cmocka_unit_test(test_scan_visits_every_session_while_the_table_grows),
        cmocka_unit_test(test_sessions_stay_reachable_while_the_table_is_rehashed),
        cmocka_unit_test(test_reserve_sizes_the_tables_ahead_and_keeps_every_session),
        cmocka_unit_test(test_export_and_digest_of_a_missing_id_are_enotfound),
        cmocka_unit_test(test_digest_vv_gives_the_vector_that_orders_replicas),
        cmocka_unit_test(test_gc_removes_tombstones_covered_by_the_stable_vector),
        cmocka_unit_test(test_a_write_to_a_recreated_session_applies_after_the_destroy_is_collected),
        cmocka_unit_test(test_merge_of_a_collected_tombstone_is_ignored),
        cmocka_unit_test(test_a_write_concurrent_with_a_collectable_destroy_is_ignored),
        cmocka_unit_test(test_gc_drops_removed_attribute_records),
        cmocka_unit_test(test_item_modes_follow_memcached),
        cmocka_unit_test(test_item_cas_is_the_same_on_every_replica),
        cmocka_unit_test(test_item_incr_and_decr_follow_memcached),
        /* last: under UBSan a failure here stops the whole run */
        cmocka_unit_test(test_null_name_of_length_zero_is_the_empty_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
