/*
 * test_mc_binary.c - the memcached binary protocol engine (daemon/
 * mc_binary.c), driven directly through mc_conn_process against an
 * in-process node on inproc://: no socket, no daemon.
 *
 * Packets are built by hand from protocol_binary.h's layout and every
 * response is parsed field by field (magic, opcode, status, lengths,
 * opaque, CAS, extras, key, value): a test names the statuses and bodies
 * memcached 1.6 sends for the same request. Input is also fed one byte at
 * a time, since a client's writes reach the engine in whatever pieces the
 * network makes.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "mc_internal.h"
#include "mc_proto.h"
#include "sessnode.h"

enum {
    GET = 0x00, SET = 0x01, ADD = 0x02, REPLACE = 0x03, DELETE = 0x04, INCR = 0x05,
    DECR = 0x06, QUIT = 0x07, FLUSH = 0x08, GETQ = 0x09, NOOP = 0x0a, VERSION = 0x0b,
    GETK = 0x0c, GETKQ = 0x0d, APPEND = 0x0e, PREPEND = 0x0f, STAT = 0x10, SETQ = 0x11,
    ADDQ = 0x12, REPLACEQ = 0x13, DELETEQ = 0x14, INCRQ = 0x15, DECRQ = 0x16, QUITQ = 0x17,
    FLUSHQ = 0x18, APPENDQ = 0x19, PREPENDQ = 0x1a, VERBOSITY = 0x1b, TOUCH = 0x1c, GAT = 0x1d,
    GATQ = 0x1e, SASL_LIST = 0x20, GATK = 0x23, GATKQ = 0x24,
};

enum {
    ST_OK = 0x00, ST_ENOENT = 0x01, ST_EEXISTS = 0x02, ST_E2BIG = 0x03, ST_EINVAL = 0x04,
    ST_NOT_STORED = 0x05, ST_BADVAL = 0x06, ST_UNKNOWN = 0x81,
};

typedef struct {
    sn_node_t *node;
    mc_server_t *srv;
    mc_conn_t *conn;
    struct evbuffer *in, *out;
    uint8_t *reply;             /* what the last send produced */
    size_t reply_len, off;      /* off: the next response to parse */
    int rc;
} fx_t;

static int fx_setup(void **state, uint32_t value_max)
{
    static unsigned seq;
    char cluster[96];
    snprintf(cluster, sizeof cluster, "inproc://mc-binary-%d-%u", (int) getpid(), ++seq);
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.cluster = cluster;
    if (value_max)
        cfg.value_max = value_max;
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->node = sn_node_new(&cfg);
    assert_non_null(f->node);
    assert_int_equal(sn_node_start(f->node), 0);
    mc_settings_t s;
    memset(&s, 0, sizeof s);
    s.node = f->node;
    s.item_size_max = value_max ? value_max : (1u << 20);
    s.threads = 4;
    s.version = "9.9.9-test";
    f->srv = mc_server_new(&s);
    assert_non_null(f->srv);
    f->conn = mc_conn_new(f->srv);
    assert_non_null(f->conn);
    f->in = evbuffer_new();
    f->out = evbuffer_new();
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return fx_setup(state, 0);
}

static int setup_small_items(void **state)
{
    return fx_setup(state, 1024);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    evbuffer_free(f->in);
    evbuffer_free(f->out);
    mc_conn_free(f->conn);
    mc_server_destroy(&f->srv);
    sn_node_destroy(&f->node);
    free(f->reply);
    free(f);
    return 0;
}

/* A fresh connection on the same server (after one was closed). */
static void reconnect(fx_t *f)
{
    mc_conn_free(f->conn);
    f->conn = mc_conn_new(f->srv);
    assert_non_null(f->conn);
    evbuffer_drain(f->in, evbuffer_get_length(f->in));
}

/* ------------------------------------------------------------ packets */

typedef struct {
    uint8_t b[2048];
    size_t len;
} pkt_t;

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t) v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Appends one request to *p. */
static void req(pkt_t *p, uint8_t op, const void *key, size_t klen, const void *ext,
                size_t extlen, const void *val, size_t vlen, uint64_t cas, uint32_t opaque)
{
    assert_true(p->len + 24 + extlen + klen + vlen <= sizeof p->b);
    uint8_t *h = p->b + p->len;
    memset(h, 0, 24);
    h[0] = 0x80;
    h[1] = op;
    put_be(h + 2, klen, 2);
    h[4] = (uint8_t) extlen;
    put_be(h + 8, extlen + klen + vlen, 4);
    put_be(h + 12, opaque, 4);
    put_be(h + 16, cas, 8);
    uint8_t *q = h + 24;
    if (extlen)
        memcpy(q, ext, extlen);
    if (klen)
        memcpy(q + extlen, key, klen);
    if (vlen)
        memcpy(q + extlen + klen, val, vlen);
    p->len += 24 + extlen + klen + vlen;
}

static void req_key(pkt_t *p, uint8_t op, const char *key)
{
    req(p, op, key, strlen(key), NULL, 0, NULL, 0, 0, 0);
}

static void req_store(pkt_t *p, uint8_t op, const char *key, const void *val, size_t vlen,
                      uint32_t flags, uint32_t exptime, uint64_t cas)
{
    uint8_t ext[8];
    put_be(ext, flags, 4);
    put_be(ext + 4, exptime, 4);
    req(p, op, key, strlen(key), ext, 8, val, vlen, cas, 0);
}

static void req_arith(pkt_t *p, uint8_t op, const char *key, uint64_t delta, uint64_t initial,
                      uint32_t exptime)
{
    uint8_t ext[20];
    put_be(ext, delta, 8);
    put_be(ext + 8, initial, 8);
    put_be(ext + 16, exptime, 4);
    req(p, op, key, strlen(key), ext, 20, NULL, 0, 0, 0);
}

static void req_exptime(pkt_t *p, uint8_t op, const char *key, uint32_t exptime)
{
    uint8_t ext[4];
    put_be(ext, exptime, 4);
    req(p, op, key, strlen(key), ext, 4, NULL, 0, 0, 0);
}

static void collect(fx_t *f)
{
    size_t n = evbuffer_get_length(f->out);
    free(f->reply);
    f->reply = malloc(n + 1);
    assert_non_null(f->reply);
    evbuffer_remove(f->out, f->reply, n);
    f->reply_len = n;
    f->off = 0;
}

static void send_raw(fx_t *f, const void *data, size_t len)
{
    evbuffer_add(f->in, data, len);
    f->rc = mc_conn_process(f->conn, f->in, f->out);
    collect(f);
}

static void send_pkt(fx_t *f, const pkt_t *p)
{
    send_raw(f, p->b, p->len);
}

/* One byte per call; fails if anything is answered before the last byte. */
static void send_bytewise(fx_t *f, const pkt_t *p)
{
    for (size_t i = 0; i + 1 < p->len; i++) {
        evbuffer_add(f->in, p->b + i, 1);
        assert_int_equal(mc_conn_process(f->conn, f->in, f->out), MC_OK);
        assert_int_equal(evbuffer_get_length(f->out), 0);
    }
    send_raw(f, p->b + p->len - 1, 1);
}

typedef struct {
    uint8_t magic, opcode, extlen;
    uint16_t status, keylen;
    uint32_t bodylen, opaque;
    uint64_t cas;
    const uint8_t *ext, *key, *value;
    size_t vlen;
} res_t;

/* The next response of the last reply. */
static res_t next(fx_t *f)
{
    res_t r;
    assert_true(f->off + 24 <= f->reply_len);
    const uint8_t *h = f->reply + f->off;
    r.magic = h[0];
    r.opcode = h[1];
    r.keylen = (uint16_t) get_be(h + 2, 2);
    r.extlen = h[4];
    assert_int_equal(h[5], 0);
    r.status = (uint16_t) get_be(h + 6, 2);
    r.bodylen = (uint32_t) get_be(h + 8, 4);
    r.opaque = (uint32_t) get_be(h + 12, 4);
    r.cas = get_be(h + 16, 8);
    assert_int_equal(r.magic, 0x81);
    assert_true(f->off + 24 + r.bodylen <= f->reply_len);
    assert_true((size_t) r.extlen + r.keylen <= r.bodylen);
    r.ext = h + 24;
    r.key = r.ext + r.extlen;
    r.value = r.key + r.keylen;
    r.vlen = r.bodylen - r.extlen - r.keylen;
    f->off += 24 + r.bodylen;
    return r;
}

static void no_more(fx_t *f)
{
    assert_int_equal(f->off, f->reply_len);
}

/* The response's value is `s` exactly. */
static void value_is(const res_t *r, const void *s, size_t n)
{
    assert_int_equal(r->vlen, n);
    if (n)
        assert_memory_equal(r->value, s, n);
}

#define VALUE_IS(r, lit) value_is((r), (lit), sizeof(lit) - 1)

/* Sends one request, expects exactly one response with `status`. */
static res_t one(fx_t *f, const pkt_t *p, uint16_t status)
{
    send_pkt(f, p);
    res_t r = next(f);
    assert_int_equal(r.status, status);
    no_more(f);
    return r;
}

static uint64_t stat_of(fx_t *f, const char *name)
{
    pkt_t p = {0};
    req(&p, STAT, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    send_pkt(f, &p);
    for (;;) {
        res_t r = next(f);
        assert_int_equal(r.status, ST_OK);
        if (r.keylen == 0)
            break;
        if (r.keylen == strlen(name) && memcmp(r.key, name, r.keylen) == 0) {
            char buf[32] = {0};
            memcpy(buf, r.value, r.vlen < 31 ? r.vlen : 31);
            return strtoull(buf, NULL, 10);
        }
    }
    fail_msg("no stat %s", name);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_set_then_get_returns_value_flags_cas_and_opaque(void **state)
{
    fx_t *f = *state;
    static const char val[] = "a\r\nb\0c\r\n";   /* binary values hold anything */
    pkt_t p = {0};
    uint8_t ext[8];
    put_be(ext, 0xdeadbeef, 4);
    put_be(ext + 4, 0, 4);
    req(&p, SET, "k1", 2, ext, 8, val, sizeof val - 1, 0, 0x01020304);
    res_t r = one(f, &p, ST_OK);
    assert_int_equal(r.opcode, SET);
    assert_int_equal(r.opaque, 0x01020304);
    assert_int_equal(r.bodylen, 0);
    uint64_t cas = r.cas;
    assert_true(cas != 0);

    p.len = 0;
    req(&p, GET, "k1", 2, NULL, 0, NULL, 0, 0, 77);
    r = one(f, &p, ST_OK);
    assert_int_equal(r.opcode, GET);
    assert_int_equal(r.opaque, 77);
    assert_int_equal(r.extlen, 4);
    assert_int_equal(get_be(r.ext, 4), 0xdeadbeef);
    assert_int_equal(r.keylen, 0);
    value_is(&r, val, sizeof val - 1);
    assert_int_equal(r.cas, cas);

    p.len = 0;
    req_key(&p, GETK, "k1");
    r = one(f, &p, ST_OK);
    assert_int_equal(r.keylen, 2);
    assert_memory_equal(r.key, "k1", 2);
    value_is(&r, val, sizeof val - 1);
}

static void test_a_miss_is_not_found_and_quiet_reads_stay_silent(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_key(&p, GET, "nope");
    res_t r = one(f, &p, ST_ENOENT);
    VALUE_IS(&r, "Not found");
    assert_int_equal(r.extlen, 0);

    /* memcached answers a GETK miss with the key and no text */
    p.len = 0;
    req_key(&p, GETK, "nope");
    r = one(f, &p, ST_ENOENT);
    assert_int_equal(r.keylen, 4);
    assert_memory_equal(r.key, "nope", 4);
    assert_int_equal(r.vlen, 0);

    p.len = 0;
    req_store(&p, SET, "here", "v", 1, 0, 0, 0);
    one(f, &p, ST_OK);
    /* a pipelined multi-get: quiet misses send nothing, NOOP ends it */
    p.len = 0;
    req_key(&p, GETQ, "here");
    req_key(&p, GETQ, "nope");
    req_key(&p, GETKQ, "nope");
    req_key(&p, GETKQ, "here");
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 9);
    send_pkt(f, &p);
    r = next(f);
    assert_int_equal(r.opcode, GETQ);
    assert_int_equal(r.status, ST_OK);
    VALUE_IS(&r, "v");
    r = next(f);
    assert_int_equal(r.opcode, GETKQ);
    assert_int_equal(r.keylen, 4);
    assert_memory_equal(r.key, "here", 4);
    r = next(f);
    assert_int_equal(r.opcode, NOOP);
    assert_int_equal(r.opaque, 9);
    assert_int_equal(r.bodylen, 0);
    no_more(f);
}

static void test_add_replace_and_cas_answer_as_memcached(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_store(&p, REPLACE, "k", "x", 1, 0, 0, 0);
    res_t r = one(f, &p, ST_ENOENT);
    VALUE_IS(&r, "Not found");
    p.len = 0;
    req_store(&p, ADD, "k", "a", 1, 0, 0, 0);
    uint64_t cas = one(f, &p, ST_OK).cas;
    p.len = 0;
    req_store(&p, ADD, "k", "b", 1, 0, 0, 0);
    r = one(f, &p, ST_EEXISTS);
    VALUE_IS(&r, "Data exists for key.");
    p.len = 0;
    req_store(&p, REPLACE, "k", "c", 1, 0, 0, 0);
    uint64_t cas2 = one(f, &p, ST_OK).cas;
    assert_true(cas2 != cas);
    /* a stale CAS: exists; a CAS on a missing key: not found */
    p.len = 0;
    req_store(&p, SET, "k", "d", 1, 0, 0, cas);
    one(f, &p, ST_EEXISTS);
    p.len = 0;
    req_store(&p, SET, "missing", "d", 1, 0, 0, cas);
    one(f, &p, ST_ENOENT);
    p.len = 0;
    req_store(&p, SET, "k", "e", 1, 0, 0, cas2);
    one(f, &p, ST_OK);
    assert_int_equal(stat_of(f, "cas_hits"), 1);
    assert_int_equal(stat_of(f, "cas_badval"), 1);
    assert_int_equal(stat_of(f, "cas_misses"), 1);

    /* quiet stores: silence on success, the error otherwise */
    p.len = 0;
    req_store(&p, SETQ, "q", "1", 1, 0, 0, 0);
    req_store(&p, ADDQ, "q2", "2", 1, 0, 0, 0);
    req_store(&p, REPLACEQ, "q", "3", 1, 0, 0, 0);
    req_store(&p, ADDQ, "q", "4", 1, 0, 0, 0);
    req_store(&p, REPLACEQ, "nope", "5", 1, 0, 0, 0);
    send_pkt(f, &p);
    r = next(f);
    assert_int_equal(r.opcode, ADDQ);
    assert_int_equal(r.status, ST_EEXISTS);
    r = next(f);
    assert_int_equal(r.opcode, REPLACEQ);
    assert_int_equal(r.status, ST_ENOENT);
    no_more(f);
    p.len = 0;
    req_key(&p, GET, "q");
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "3");
}

static void test_append_and_prepend(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req(&p, APPEND, "k", 1, NULL, 0, "x", 1, 0, 0);
    res_t r = one(f, &p, ST_NOT_STORED);
    VALUE_IS(&r, "Not stored.");
    p.len = 0;
    req_store(&p, SET, "k", "b", 1, 42, 0, 0);
    uint64_t cas = one(f, &p, ST_OK).cas;
    p.len = 0;
    req(&p, APPEND, "k", 1, NULL, 0, "c", 1, 0, 0);
    req(&p, PREPENDQ, "k", 1, NULL, 0, "a", 1, 0, 0);
    req(&p, APPENDQ, "k", 1, NULL, 0, "\r\n", 2, 0, 0);
    send_pkt(f, &p);
    r = next(f);
    assert_int_equal(r.opcode, APPEND);
    assert_int_equal(r.status, ST_OK);
    no_more(f);
    /* a CAS that no longer matches */
    p.len = 0;
    req(&p, PREPEND, "k", 1, NULL, 0, "z", 1, cas, 0);
    one(f, &p, ST_EEXISTS);
    p.len = 0;
    req_key(&p, GET, "k");
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "abc\r\n");
    assert_int_equal(get_be(r.ext, 4), 42);   /* flags kept */
}

static void test_delete_hits_misses_and_checks_cas(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_key(&p, DELETE, "k");
    res_t r = one(f, &p, ST_ENOENT);
    VALUE_IS(&r, "Not found");
    p.len = 0;
    req_store(&p, SET, "k", "v", 1, 0, 0, 0);
    uint64_t cas = one(f, &p, ST_OK).cas;
    p.len = 0;
    req(&p, DELETE, "k", 1, NULL, 0, NULL, 0, cas + 1, 0);
    one(f, &p, ST_EEXISTS);
    p.len = 0;
    req(&p, DELETE, "k", 1, NULL, 0, NULL, 0, cas, 0);
    one(f, &p, ST_OK);
    p.len = 0;
    req_store(&p, SET, "k", "v", 1, 0, 0, 0);
    req_key(&p, DELETEQ, "k");
    req_key(&p, DELETEQ, "k");
    send_pkt(f, &p);
    r = next(f);
    assert_int_equal(r.opcode, SET);
    r = next(f);
    assert_int_equal(r.opcode, DELETEQ);
    assert_int_equal(r.status, ST_ENOENT);
    no_more(f);
    assert_int_equal(stat_of(f, "delete_hits"), 2);
    assert_int_equal(stat_of(f, "delete_misses"), 2);
}

static uint64_t counter_of(const res_t *r)
{
    assert_int_equal(r->vlen, 8);
    return get_be(r->value, 8);
}

static void test_incr_decr_create_wrap_and_refuse(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    /* exptime 0xffffffff: do not create */
    req_arith(&p, INCR, "n", 1, 10, 0xffffffffu);
    one(f, &p, ST_ENOENT);
    p.len = 0;
    req_arith(&p, INCR, "n", 1, 10, 0);
    res_t r = one(f, &p, ST_OK);
    assert_int_equal(counter_of(&r), 10);
    assert_true(r.cas != 0);
    p.len = 0;
    req_arith(&p, INCR, "n", 5, 0, 0);
    r = one(f, &p, ST_OK);
    assert_int_equal(counter_of(&r), 15);
    p.len = 0;
    req_arith(&p, DECR, "n", 100, 0, 0);
    r = one(f, &p, ST_OK);
    assert_int_equal(counter_of(&r), 0);   /* decr stops at 0 */
    p.len = 0;
    req_arith(&p, INCRQ, "n", 7, 0, 0);
    req_arith(&p, DECRQ, "n", 2, 0, 0);
    send_pkt(f, &p);
    no_more(f);
    p.len = 0;
    req_key(&p, GET, "n");
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "5");   /* stored as decimal text, as memcached does */

    p.len = 0;
    req_store(&p, SET, "max", "18446744073709551615", 20, 0, 0, 0);
    req_arith(&p, INCR, "max", 2, 0, 0);
    send_pkt(f, &p);
    next(f);
    r = next(f);
    assert_int_equal(r.status, ST_OK);
    assert_int_equal(counter_of(&r), 1);   /* incr wraps at 2^64 */

    p.len = 0;
    req_store(&p, SET, "word", "abc", 3, 0, 0, 0);
    req_arith(&p, DECR, "word", 1, 0, 0);
    send_pkt(f, &p);
    next(f);
    r = next(f);
    assert_int_equal(r.status, ST_BADVAL);
    VALUE_IS(&r, "Non-numeric server-side value for incr or decr");
    no_more(f);
}

static void note_ttl(const sn_item_t *it, void *arg)
{
    *(uint32_t *) arg = (uint32_t) it->max_inactive;
}

static void test_touch_and_gat(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_exptime(&p, TOUCH, "k", 100);
    res_t r = one(f, &p, ST_ENOENT);
    p.len = 0;
    req_store(&p, SET, "k", "val", 3, 7, 0, 0);
    one(f, &p, ST_OK);
    /* TOUCH: the flags, no value */
    p.len = 0;
    req_exptime(&p, TOUCH, "k", 100);
    r = one(f, &p, ST_OK);
    assert_int_equal(r.extlen, 4);
    assert_int_equal(get_be(r.ext, 4), 7);
    assert_int_equal(r.vlen, 0);
    p.len = 0;
    req_exptime(&p, GAT, "k", 200);
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "val");
    p.len = 0;
    req_exptime(&p, GATK, "k", 200);
    r = one(f, &p, ST_OK);
    assert_int_equal(r.keylen, 1);
    VALUE_IS(&r, "val");
    p.len = 0;
    req_exptime(&p, GATQ, "nope", 200);
    req_exptime(&p, GATKQ, "nope", 200);
    req_exptime(&p, GATKQ, "k", 200);
    send_pkt(f, &p);
    r = next(f);
    assert_int_equal(r.opcode, GATKQ);
    assert_int_equal(r.status, ST_OK);
    no_more(f);
    /* the new inactivity timeout is the node's */
    uint32_t max_inactive = 0;
    assert_int_equal(sn_node_item_get(f->node, "k", 1, NULL, 0, -1, note_ttl, &max_inactive), 0);
    assert_int_equal(max_inactive, 200);
    /* an absolute exptime already past expires the item at once */
    p.len = 0;
    req_exptime(&p, TOUCH, "k", (uint32_t) (time(NULL) - 1000));
    one(f, &p, ST_OK);
    p.len = 0;
    req_key(&p, GET, "k");
    one(f, &p, ST_ENOENT);
    assert_int_equal(stat_of(f, "touch_hits"), 5);
    assert_int_equal(stat_of(f, "touch_misses"), 3);
}

static void test_flush_version_verbosity_noop(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_store(&p, SET, "a", "1", 1, 0, 0, 0);
    req_store(&p, SET, "b", "2", 1, 0, 0, 0);
    req(&p, FLUSH, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    req_key(&p, GET, "a");
    send_pkt(f, &p);
    next(f);
    next(f);
    res_t r = next(f);
    assert_int_equal(r.opcode, FLUSH);
    assert_int_equal(r.status, ST_OK);
    r = next(f);
    assert_int_equal(r.status, ST_ENOENT);
    no_more(f);
    /* FLUSHQ with a delay: silent, and the item stays until then */
    p.len = 0;
    req_store(&p, SET, "c", "3", 1, 0, 0, 0);
    uint8_t delay[4];
    put_be(delay, 100, 4);
    req(&p, FLUSHQ, NULL, 0, delay, 4, NULL, 0, 0, 0);
    req_key(&p, GETQ, "c");
    send_pkt(f, &p);
    next(f);
    r = next(f);
    assert_int_equal(r.opcode, GETQ);
    no_more(f);

    p.len = 0;
    req(&p, VERSION, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "9.9.9-test");
    p.len = 0;
    uint8_t level[4] = {0, 0, 0, 1};
    req(&p, VERBOSITY, NULL, 0, level, 4, NULL, 0, 0, 0);
    one(f, &p, ST_OK);
    p.len = 0;
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    r = one(f, &p, ST_OK);
    assert_int_equal(r.bodylen, 0);
}

static void test_quit_answers_then_closes_and_quitq_just_closes(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req(&p, QUIT, NULL, 0, NULL, 0, NULL, 0, 0, 5);
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);   /* never answered */
    send_pkt(f, &p);
    assert_int_equal(f->rc, MC_CLOSE);
    res_t r = next(f);
    assert_int_equal(r.opcode, QUIT);
    assert_int_equal(r.opaque, 5);
    no_more(f);
    reconnect(f);
    p.len = 0;
    req(&p, QUITQ, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    send_pkt(f, &p);
    assert_int_equal(f->rc, MC_CLOSE);
    no_more(f);
}

static void test_stat_groups_end_with_an_empty_packet(void **state)
{
    fx_t *f = *state;
    assert_int_equal(stat_of(f, "curr_items"), 0);
    assert_int_equal(stat_of(f, "threads"), 4);
    pkt_t p = {0};
    req_key(&p, STAT, "settings");
    send_pkt(f, &p);
    res_t r;
    size_t n = 0;
    do {
        r = next(f);
        assert_int_equal(r.status, ST_OK);
        n++;
    } while (r.keylen != 0);
    assert_true(n > 2);
    assert_int_equal(r.bodylen, 0);
    no_more(f);
    p.len = 0;
    req_key(&p, STAT, "items");
    r = one(f, &p, ST_OK);
    assert_int_equal(r.bodylen, 0);
    p.len = 0;
    req_key(&p, STAT, "bogus");
    one(f, &p, ST_ENOENT);
    /* reset zeroes the counters */
    p.len = 0;
    req_key(&p, GET, "x");
    one(f, &p, ST_ENOENT);
    assert_int_equal(stat_of(f, "get_misses"), 1);
    p.len = 0;
    req_key(&p, STAT, "reset");
    r = one(f, &p, ST_OK);
    assert_int_equal(r.bodylen, 0);
    assert_int_equal(stat_of(f, "get_misses"), 0);
}

static void test_unknown_opcodes_are_answered_and_skipped(void **state)
{
    fx_t *f = *state;
    static const uint8_t ops[] = {SASL_LIST, 0x21, 0x30, 0x3d, 0xff};
    for (size_t i = 0; i < sizeof ops; i++) {
        pkt_t p = {0};
        req(&p, ops[i], "key", 3, "ext", 3, "body\x80\x80", 6, 0, (uint32_t) i);
        req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 99);
        send_pkt(f, &p);
        assert_int_equal(f->rc, MC_OK);
        res_t r = next(f);
        assert_int_equal(r.opcode, ops[i]);
        assert_int_equal(r.status, ST_UNKNOWN);
        assert_int_equal(r.opaque, i);
        VALUE_IS(&r, "Unknown command");
        r = next(f);
        assert_int_equal(r.opcode, NOOP);
        assert_int_equal(r.opaque, 99);
        no_more(f);
    }
    assert_int_equal(stat_of(f, "protocol_errors"), sizeof ops);
}

/* Each malformed header: ST_EINVAL, and the connection closes. */
static void expect_einval_close(fx_t *f, const pkt_t *p)
{
    reconnect(f);
    send_pkt(f, p);
    assert_int_equal(f->rc, MC_CLOSE);
    res_t r = next(f);
    assert_int_equal(r.status, ST_EINVAL);
    VALUE_IS(&r, "Invalid arguments");
    no_more(f);
}

static void test_malformed_headers_are_refused_and_close(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req(&p, GET, "k", 1, "xxxx", 4, NULL, 0, 0, 0);          /* extras on a get */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, GET, NULL, 0, NULL, 0, NULL, 0, 0, 0);           /* no key */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, GET, "k", 1, NULL, 0, "v", 1, 0, 0);             /* a value on a get */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, SET, "k", 1, NULL, 0, "v", 1, 0, 0);             /* set without extras */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, NOOP, "k", 1, NULL, 0, NULL, 0, 0, 0);           /* a key on a noop */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, INCR, "k", 1, "12345678", 8, NULL, 0, 0, 0);     /* short extras */
    expect_einval_close(f, &p);
    char key[251];
    memset(key, 'k', sizeof key);
    p.len = 0;
    req(&p, GET, key, sizeof key, NULL, 0, NULL, 0, 0, 0);   /* key over 250 */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    p.b[5] = 1;                                              /* data type */
    expect_einval_close(f, &p);
    p.len = 0;
    req(&p, GET, "key", 3, NULL, 0, NULL, 0, 0, 0);
    put_be(p.b + 8, 2, 4);                                   /* body < key */
    expect_einval_close(f, &p);
}

static void test_bad_magic_between_requests_closes(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    p.b[p.len++] = 0x81;    /* a response's magic, not a request's */
    req(&p, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    send_pkt(f, &p);
    assert_int_equal(f->rc, MC_CLOSE);
    res_t r = next(f);
    assert_int_equal(r.opcode, NOOP);
    no_more(f);
}

static void test_requests_split_into_single_bytes_are_answered_once_whole(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_store(&p, SET, "k", "v\r\n", 3, 1, 0, 0);
    send_bytewise(f, &p);
    res_t r = next(f);
    assert_int_equal(r.status, ST_OK);
    no_more(f);
    p.len = 0;
    req_key(&p, GETK, "k");
    send_bytewise(f, &p);
    r = next(f);
    VALUE_IS(&r, "v\r\n");
    no_more(f);
    /* a truncated header alone gets nothing, and nothing is lost */
    p.len = 0;
    req_key(&p, GET, "k");
    send_raw(f, p.b, 23);
    assert_int_equal(f->rc, MC_OK);
    no_more(f);
    send_raw(f, p.b + 23, p.len - 23);
    r = next(f);
    VALUE_IS(&r, "v\r\n");
}

static void test_a_value_over_the_limit_is_refused_and_skipped(void **state)
{
    fx_t *f = *state;   /* items of at most 1024 bytes */
    static uint8_t big[1500];
    memset(big, 'x', sizeof big);
    /* in the middle of the too-big value, bytes that would parse as a
     * request if the engine read them */
    pkt_t inner = {0};
    req(&inner, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 0);
    memcpy(big + 100, inner.b, inner.len);
    uint8_t ext[8] = {0};
    uint8_t *pkt = malloc(24 + 8 + 1 + sizeof big + 24);
    pkt_t hdr = {0};
    req(&hdr, SET, "k", 1, ext, 8, NULL, 0, 0, 0);
    put_be(hdr.b + 8, 8 + 1 + sizeof big, 4);
    memcpy(pkt, hdr.b, hdr.len);
    memcpy(pkt + hdr.len, big, sizeof big);
    size_t len = hdr.len + sizeof big;
    pkt_t noop = {0};
    req(&noop, NOOP, NULL, 0, NULL, 0, NULL, 0, 0, 3);
    memcpy(pkt + len, noop.b, noop.len);
    len += noop.len;
    /* whole, then in three pieces */
    for (int round = 0; round < 2; round++) {
        if (round == 0) {
            send_raw(f, pkt, len);
        } else {
            send_raw(f, pkt, 40);
            res_t r = next(f);
            assert_int_equal(r.status, ST_E2BIG);
            no_more(f);
            send_raw(f, pkt + 40, 700);
            no_more(f);
            send_raw(f, pkt + 740, len - 740);
            r = next(f);
            assert_int_equal(r.opcode, NOOP);
            no_more(f);
            continue;
        }
        res_t r = next(f);
        assert_int_equal(r.opcode, SET);
        assert_int_equal(r.status, ST_E2BIG);
        VALUE_IS(&r, "Too large.");
        r = next(f);
        assert_int_equal(r.opcode, NOOP);
        assert_int_equal(r.opaque, 3);
        no_more(f);
    }
    free(pkt);
    assert_int_equal(stat_of(f, "store_too_large"), 2);
    pkt_t p = {0};
    req_key(&p, GET, "k");
    one(f, &p, ST_ENOENT);
}

static void test_keys_are_any_bytes_and_shared_with_the_text_protocol(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    static const char odd[] = "a b\x01%\r\n\x7f";
    req(&p, SET, odd, sizeof odd - 1, "\0\0\0\0\0\0\0\0", 8, "odd", 3, 0, 0);
    req(&p, GETK, odd, sizeof odd - 1, NULL, 0, NULL, 0, 0, 0);
    req(&p, GET, "a b", 3, NULL, 0, NULL, 0, 0, 0);
    send_pkt(f, &p);
    assert_int_equal(next(f).status, ST_OK);
    res_t r = next(f);
    assert_int_equal(r.keylen, sizeof odd - 1);
    assert_memory_equal(r.key, odd, sizeof odd - 1);
    VALUE_IS(&r, "odd");
    assert_int_equal(next(f).status, ST_ENOENT);   /* distinct keys stay distinct */
    no_more(f);

    p.len = 0;
    req_store(&p, SET, "shared", "from-binary", 11, 3, 0, 0);
    one(f, &p, ST_OK);
    /* a text connection on the same server sees it, and writes back */
    mc_conn_t *text = mc_conn_new(f->srv);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    static const char cmds[] = "get shared\r\nset fromtext 5 0 2\r\nhi\r\n";
    evbuffer_add(in, cmds, sizeof cmds - 1);
    assert_int_equal(mc_conn_process(text, in, out), MC_OK);
    static const char want[] = "VALUE shared 3 11\r\nfrom-binary\r\nEND\r\nSTORED\r\n";
    assert_int_equal(evbuffer_get_length(out), sizeof want - 1);
    assert_memory_equal(evbuffer_pullup(out, -1), want, sizeof want - 1);
    evbuffer_free(in);
    evbuffer_free(out);
    mc_conn_free(text);
    p.len = 0;
    req_key(&p, GET, "fromtext");
    r = one(f, &p, ST_OK);
    VALUE_IS(&r, "hi");
    assert_int_equal(get_be(r.ext, 4), 5);
}

static void test_counters_follow_the_commands(void **state)
{
    fx_t *f = *state;
    pkt_t p = {0};
    req_store(&p, SET, "a", "1", 1, 0, 0, 0);
    req_key(&p, GET, "a");
    req_key(&p, GETQ, "b");
    req_key(&p, GETK, "a");
    req_arith(&p, INCR, "a", 1, 0, 0);
    req_arith(&p, DECR, "zz", 1, 0, 0xffffffffu);
    send_pkt(f, &p);
    assert_int_equal(stat_of(f, "cmd_set"), 1);
    assert_int_equal(stat_of(f, "cmd_get"), 3);
    assert_int_equal(stat_of(f, "get_hits"), 2);
    assert_int_equal(stat_of(f, "get_misses"), 1);
    assert_int_equal(stat_of(f, "incr_hits"), 1);
    assert_int_equal(stat_of(f, "decr_misses"), 1);
    assert_int_equal(stat_of(f, "curr_items"), 1);
}

/* A client pipelining reads of large values without reading the replies
 * cannot make one call buffer without bound. */
static void test_output_stops_at_the_high_mark(void **state)
{
    fx_t *f = *state;
    size_t vlen = 512 << 10;
    char *val = malloc(vlen);
    memset(val, 'v', vlen);
    uint8_t ext[8] = {0};
    pkt_t p = {0};
    req(&p, SET, "big", 3, ext, 8, NULL, 0, 0, 0);
    put_be(p.b + 8, 8 + 3 + vlen, 4);
    evbuffer_add(f->in, p.b, p.len);
    evbuffer_add(f->in, val, vlen);
    free(val);
    assert_int_equal(mc_conn_process(f->conn, f->in, f->out), MC_OK);
    collect(f);
    assert_int_equal(next(f).status, ST_OK);
    p.len = 0;
    for (int i = 0; i < 20; i++)
        req_key(&p, GET, "big");
    evbuffer_add(f->in, p.b, p.len);
    assert_int_equal(mc_conn_process(f->conn, f->in, f->out), MC_OK);
    size_t out = evbuffer_get_length(f->out);
    assert_true(out > MC_OUT_HIGH);
    assert_true(out < MC_OUT_HIGH + vlen + 100);
    assert_true(evbuffer_get_length(f->in) > 0);   /* the rest waits */
    /* once drained, the rest is answered */
    size_t answered = 0;
    while (evbuffer_get_length(f->in) > 0 || evbuffer_get_length(f->out) > 0) {
        collect(f);
        while (f->off < f->reply_len) {
            res_t r = next(f);
            assert_int_equal(r.status, ST_OK);
            assert_int_equal(r.vlen, vlen);
            answered++;
        }
        mc_conn_process(f->conn, f->in, f->out);
    }
    assert_int_equal(answered, 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_then_get_returns_value_flags_cas_and_opaque,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_miss_is_not_found_and_quiet_reads_stay_silent,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_replace_and_cas_answer_as_memcached, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_append_and_prepend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_hits_misses_and_checks_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr_decr_create_wrap_and_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_touch_and_gat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_version_verbosity_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_answers_then_closes_and_quitq_just_closes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stat_groups_end_with_an_empty_packet, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_opcodes_are_answered_and_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_headers_are_refused_and_close, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic_between_requests_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_requests_split_into_single_bytes_are_answered_once_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_value_over_the_limit_is_refused_and_skipped,
                                        setup_small_items, teardown),
        cmocka_unit_test_setup_teardown(
            test_keys_are_any_bytes_and_shared_with_the_text_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters_follow_the_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_stops_at_the_high_mark, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
