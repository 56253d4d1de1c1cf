/*
 * test_wire.c - the wire codec (gossip/sn_wire.c).
 *
 * Round trips of every delta kind and of states at the model's limits, the
 * exact bytes of a reference message, canonical re-encoding, and the
 * decoder's behaviour on hostile input: every truncation, single-byte
 * corruptions at every position, huge declared sizes, wrong types in every
 * field, and a seeded random fuzz loop. The last test replicates a real
 * store through the codec and compares digests.
 *
 * Randomized tests print their seed; set SN_TEST_SEED to replay one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <malloc.h>
#include <msgpack.h>

#include "sn_store.h"
#include "sn_test_state.h"
#include "sn_wire.h"

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic for a given seed on every platform */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t test_seed(uint64_t fallback)
{
    const char *s = getenv("SN_TEST_SEED");
    return s && *s ? strtoull(s, NULL, 0) : fallback;
}

static void assert_delta_equal(const sn_delta_t *a, const sn_delta_t *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->id_len, b->id_len);
    assert_memory_equal(a->id, b->id, a->id_len);
    assert_true(a->dot.node == b->dot.node);
    assert_true(a->dot.counter == b->dot.counter);
    assert_state_equal(&a->st, &b->st);
}

/* Encodes, decodes into a copy that is then wiped (the decoded message must
 * not depend on the input), compares, and re-encodes to the same bytes. */
static void round_trip_delta(const sn_delta_t *d)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_wire_encode_delta(d, &buf, &len), 0);
    assert_true(len <= sn_wire_size_bound(d->id_len, &d->st));
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    sn_wire_delta_t msg;
    assert_int_equal(sn_wire_decode_delta(copy, len, &msg), 0);
    memset(copy, 0xa5, len);
    free(copy);
    assert_delta_equal(d, &msg.delta);
    uint8_t *again;
    size_t again_len;
    assert_int_equal(sn_wire_encode_delta(&msg.delta, &again, &again_len), 0);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, buf, len);
    sn_wire_delta_release(&msg);
    assert_null(msg.mem);
    free(again);
    free(buf);
}

static void round_trip_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_wire_encode_state(id, id_len, st, &buf, &len), 0);
    assert_true(len <= sn_wire_size_bound(id_len, st));
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    /* a view reads the same state and copies none of its byte strings */
    sn_wire_state_t view;
    assert_int_equal(sn_wire_view_state(copy, len, &view), 0);
    assert_int_equal(view.id_len, id_len);
    assert_true(view.id > copy && view.id + id_len <= copy + len);
    assert_memory_equal(view.id, id, id_len);
    assert_state_equal(st, &view.state);
    for (uint32_t i = 0; i < view.state.nattrs; i++) {
        const sn_attr_t *a = &view.state.attrs[i];
        if (a->value_len)
            assert_true(a->value > copy && a->value + a->value_len <= copy + len);
    }
    sn_wire_state_release(&view);
    assert_null(view.mem);
    sn_wire_state_t msg;
    assert_int_equal(sn_wire_decode_state(copy, len, &msg), 0);
    memset(copy, 0xa5, len);
    free(copy);
    assert_int_equal(msg.id_len, id_len);
    assert_memory_equal(msg.id, id, id_len);
    assert_state_equal(st, &msg.state);
    uint8_t *again;
    size_t again_len;
    assert_int_equal(sn_wire_encode_state(msg.id, msg.id_len, &msg.state, &again, &again_len), 0);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, buf, len);
    sn_wire_state_release(&msg);
    assert_null(msg.mem);
    free(again);
    free(buf);
}

/* A write delta that touches every field: vectors of three kinds of
 * counter, meta, a set, an empty and a removed attribute, a value long
 * enough for bin16, and a GC vector. */
static sn_dot_t sample_ctx[] = {{1, 7}, {2, 200}, {300, 70000}};
static sn_dot_t sample_dv[] = {{1, 3}};
static sn_dot_t sample_gc[] = {{2, 100}};
static uint8_t sample_long[300];
static sn_attr_t sample_attrs[] = {
    {(const uint8_t *) "", 0, (const uint8_t *) "empty name", 10, 1, 1000, 9, false},
    {(const uint8_t *) "cart", 4, (const uint8_t *) "", 0, 0, UINT64_MAX, 9, false},
    {(const uint8_t *) "long", 4, sample_long, sizeof sample_long, 0xffffffffu, 5, 9, false},
    {(const uint8_t *) "user", 4, NULL, 0, 0, UINT64_C(1) << 40, 9, true},
};

static sn_delta_t sample_delta(void)
{
    for (size_t i = 0; i < sizeof sample_long; i++)
        sample_long[i] = (uint8_t) (i * 7);
    sn_delta_t d = {
        .kind = SN_DELTA_WRITE,
        .id = (const uint8_t *) "session-1",
        .id_len = 9,
        .dot = {9, 123456789012ull},
        .st = {
            .vv = {3, sample_ctx},
            .dv = {1, sample_dv},
            .has_meta = true,
            .max_inactive = 1800,
            .meta_stamp = UINT64_C(1700000000000) << 16,
            .meta_origin = 9,
            .last_access_ms = 1700000000000ull,
            .nattrs = 4,
            .attrs = sample_attrs,
            .gc = {1, sample_gc},
        },
    };
    return d;
}

static uint8_t *encode_sample(size_t *len)
{
    sn_delta_t d = sample_delta();
    uint8_t *buf;
    assert_int_equal(sn_wire_encode_delta(&d, &buf, len), 0);
    return buf;
}

static uint8_t *encode_sample_state(size_t *len)
{
    sn_delta_t d = sample_delta();
    uint8_t *buf;
    assert_int_equal(sn_wire_encode_state(d.id, d.id_len, &d.st, &buf, len), 0);
    return buf;
}

/* Decodes any input as a delta and as a state: the result is 0 or a
 * negative code, and whatever decodes re-encodes to the same bytes (the
 * decoder accepts canonical encodings only). Returns how many decoded. */
static int check_any_input(const uint8_t *buf, size_t len)
{
    int decoded = 0;
    sn_wire_delta_t d;
    int rc = sn_wire_decode_delta(buf, len, &d);
    assert_true(rc == 0 || rc == SN_EPROTO);
    if (rc == 0) {
        uint8_t *again;
        size_t again_len;
        assert_int_equal(sn_wire_encode_delta(&d.delta, &again, &again_len), 0);
        assert_int_equal(again_len, len);
        assert_memory_equal(again, buf, len);
        free(again);
        decoded++;
    } else {
        assert_null(d.mem);
    }
    sn_wire_delta_release(&d);

    /* the view (what a joiner merges from) and the copy agree */
    int viewed = 0;
    for (int copying = 0; copying < 2; copying++) {
        sn_wire_state_t s;
        rc = copying ? sn_wire_decode_state(buf, len, &s) : sn_wire_view_state(buf, len, &s);
        assert_true(rc == 0 || rc == SN_EPROTO);
        if (copying)
            assert_int_equal(rc, viewed);
        viewed = rc;
        if (rc == 0) {
            uint8_t *again;
            size_t again_len;
            assert_int_equal(sn_wire_encode_state(s.id, s.id_len, &s.state, &again, &again_len),
                             0);
            assert_int_equal(again_len, len);
            assert_memory_equal(again, buf, len);
            free(again);
            decoded += copying;
        } else {
            assert_null(s.mem);
        }
        sn_wire_state_release(&s);
    }
    return decoded;
}

static void assert_delta_rejected(const uint8_t *buf, size_t len, int expected)
{
    sn_wire_delta_t msg;
    assert_int_equal(sn_wire_decode_delta(buf, len, &msg), expected);
    assert_null(msg.mem);
    sn_wire_delta_release(&msg);  /* safe after a failure */
}

static void assert_state_rejected(const uint8_t *buf, size_t len, int expected)
{
    sn_wire_state_t msg;
    assert_int_equal(sn_wire_decode_state(buf, len, &msg), expected);
    assert_null(msg.mem);
    sn_wire_state_release(&msg);
    assert_int_equal(sn_wire_view_state(buf, len, &msg), expected);
    assert_null(msg.mem);
}

/* --------------------------------------------------------- round trips */

static void test_write_delta_round_trips(void **unused)
{
    (void) unused;
    sn_delta_t d = sample_delta();
    round_trip_delta(&d);
}

static void test_destroy_delta_round_trips(void **unused)
{
    (void) unused;
    sn_dot_t ctx[] = {{4, 10}, {5, 11}};
    sn_delta_t d = {
        .kind = SN_DELTA_DESTROY,
        .id = (const uint8_t *) "gone",
        .id_len = 4,
        .dot = {4, 12},
        .st = {.vv = {2, ctx}, .last_access_ms = 99},
    };
    round_trip_delta(&d);
}

static void test_touch_delta_round_trips(void **unused)
{
    (void) unused;
    sn_delta_t d = {
        .kind = SN_DELTA_TOUCH,
        .id = (const uint8_t *) "t",
        .id_len = 1,
        .st = {.last_access_ms = UINT64_MAX},
    };
    round_trip_delta(&d);
}

static void test_state_round_trips(void **unused)
{
    (void) unused;
    sn_delta_t d = sample_delta();
    round_trip_state(d.id, d.id_len, &d.st);
}

static void test_tombstone_state_with_empty_vectors_round_trips(void **unused)
{
    (void) unused;
    sn_state_t st = {0};
    round_trip_state((const uint8_t *) "x", 1, &st);
    sn_dot_t dots[] = {{1, 1}};
    st.vv = (sn_vv_t) {1, dots};
    st.dv = (sn_vv_t) {1, dots};
    round_trip_state((const uint8_t *) "x", 1, &st);
}

static void test_limits_round_trip(void **unused)
{
    (void) unused;
    uint8_t id[SN_ID_MAX], name[SN_NAME_MAX];
    memset(id, 'i', sizeof id);
    memset(name, 'n', sizeof name);
    sn_dot_t *dots = calloc(SN_VV_MAX, sizeof *dots);
    sn_attr_t *attrs = calloc(SN_ATTRS_MAX, sizeof *attrs);
    uint8_t *names = malloc((size_t) SN_ATTRS_MAX * 3);
    assert_non_null(dots);
    assert_non_null(attrs);
    assert_non_null(names);
    for (uint32_t i = 0; i < SN_VV_MAX; i++)
        dots[i] = (sn_dot_t) {UINT64_MAX - SN_VV_MAX + i, UINT64_MAX - i};
    /* SN_ATTRS_MAX attributes need an array32 header, the rarest count form */
    for (uint32_t i = 0; i < SN_ATTRS_MAX; i++) {
        uint8_t *n = names + (size_t) i * 3;
        n[0] = (uint8_t) (i >> 16);
        n[1] = (uint8_t) (i >> 8);
        n[2] = (uint8_t) i;
        attrs[i] = (sn_attr_t) {n, 3, n, i % 3, i, (uint64_t) i << 20, UINT64_MAX, i % 5 == 0};
        if (attrs[i].removed) {
            attrs[i].value = NULL;
            attrs[i].value_len = 0;
        }
    }
    attrs[0].name = name;
    attrs[0].name_len = SN_NAME_MAX;
    sn_state_t st = {
        .vv = {SN_VV_MAX, dots},
        .dv = {SN_VV_MAX, dots},
        .gc = {SN_VV_MAX, dots},
        .has_meta = true,
        .max_inactive = UINT32_MAX,
        .meta_stamp = UINT64_MAX,
        .meta_origin = UINT64_MAX,
        .last_access_ms = UINT64_MAX,
        .nattrs = SN_ATTRS_MAX,
        .attrs = attrs,
    };
    round_trip_state(id, SN_ID_MAX, &st);
    sn_delta_t d = {.kind = SN_DELTA_WRITE, .id = id, .id_len = SN_ID_MAX,
                    .dot = {UINT64_MAX, UINT64_MAX}, .st = st};
    round_trip_delta(&d);
    free(names);
    free(attrs);
    free(dots);
}

/* The size bound is what a delta of the longest integers and byte-string
 * headers takes, to the byte, and holds for the sample and the limits. */
static void test_size_bound_is_the_longest_encoding(void **unused)
{
    (void) unused;
    static uint8_t id[SN_ID_MAX], name[SN_NAME_MAX];
    memset(id, 'i', sizeof id);
    memset(name, 'n', sizeof name);
    size_t value_len = 1u << 16;   /* a bin32 header */
    uint8_t *value = calloc(1, value_len);
    assert_non_null(value);
    sn_dot_t dots[] = {{UINT64_MAX, UINT64_MAX}};
    sn_attr_t attr = {name, SN_NAME_MAX, value, value_len, UINT32_MAX, UINT64_MAX, UINT64_MAX,
                      false};
    sn_delta_t d = {
        .kind = SN_DELTA_DESTROY,
        .id = id,
        .id_len = SN_ID_MAX,
        .dot = {UINT64_MAX, UINT64_MAX},
        .st = {.vv = {1, dots}, .dv = {1, dots}, .gc = {1, dots}, .has_meta = true,
               .max_inactive = UINT32_MAX, .meta_stamp = UINT64_MAX, .meta_origin = UINT64_MAX,
               .last_access_ms = UINT64_MAX, .nattrs = 1, .attrs = &attr},
    };
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_wire_encode_delta(&d, &buf, &len), 0);
    size_t bound = sn_wire_size_bound(d.id_len, &d.st);
    /* short of the bound by what cannot take its longest form here: the
     * kind (1 byte, not 5), the id's and the name's headers (2, not 5: ids
     * and names are short) and the three vectors' and the attributes'
     * arrays (1, not 5) */
    assert_int_equal(len + 4 + 2 * 3 + 4 * 4, bound);
    free(buf);
    free(value);
    size_t sample_len;
    uint8_t *sample = encode_sample(&sample_len);
    sn_delta_t s = sample_delta();
    assert_true(sample_len <= sn_wire_size_bound(s.id_len, &s.st));
    /* and the encoding's buffer is sized by it, not msgpack's 8 KiB start */
    assert_true(malloc_usable_size(sample) < sn_wire_size_bound(s.id_len, &s.st) + 64);
    free(sample);
}

static void test_put_state_writes_in_place_and_never_past_cap(void **unused)
{
    (void) unused;
    sn_delta_t s = sample_delta();
    uint8_t *enc;
    size_t enc_len;
    assert_int_equal(sn_wire_encode_state(s.id, s.id_len, &s.st, &enc, &enc_len), 0);
    size_t bound = sn_wire_size_bound(s.id_len, &s.st);
    uint8_t *buf = malloc(bound + 1);
    assert_non_null(buf);
    memset(buf, 0xaa, bound + 1);
    size_t len = 0;
    assert_int_equal(sn_wire_put_state(buf, bound, &len, s.id, s.id_len, &s.st), 0);
    assert_int_equal(len, enc_len);
    assert_memory_equal(buf, enc, len);
    assert_int_equal(buf[bound], 0xaa);
    /* a byte short: refused, and nothing written from the cap on */
    memset(buf, 0xaa, bound + 1);
    len = 0;
    assert_int_equal(sn_wire_put_state(buf, enc_len - 1, &len, s.id, s.id_len, &s.st),
                     SN_ETOOBIG);
    assert_int_equal(len, 0);
    for (size_t i = enc_len - 1; i <= bound; i++)
        assert_int_equal(buf[i], 0xaa);
    assert_int_equal(sn_wire_put_state(NULL, bound, &len, s.id, s.id_len, &s.st), SN_EINVAL);
    assert_int_equal(sn_wire_put_state(buf, bound, NULL, s.id, s.id_len, &s.st), SN_EINVAL);
    free(buf);
    free(enc);
}

/* ------------------------------------------------------------- format */

/* The example in docs/PROTOCOL.md, byte for byte. */
static const uint8_t reference_delta[] = {
    0x9a,                         /* array of 10 */
    0x01,                         /* kind: write */
    0xc4, 0x01, 's',              /* id */
    0x01, 0x05,                   /* dot: node 1, counter 5 */
    0x92, 0x01, 0x04,             /* ctx: {1: 4} */
    0x90,                         /* dv: empty */
    0xcd, 0x03, 0xe8,             /* last_access_ms: 1000 */
    0x93, 0x00, 0xce, 0x03, 0xe8, 0x00, 0x00, 0x01, /* meta: [0, 1000 << 16, 1] */
    0x92,                         /* attrs: two */
    0x95, 0xc4, 0x01, 'a', 0xc4, 0x01, 'v', 0x00, 0xce, 0x03, 0xe8, 0x00, 0x00, 0x01,
    0x95, 0xc4, 0x01, 'b', 0xc0, 0x00, 0xce, 0x03, 0xe8, 0x00, 0x00, 0x01,
    0x90,                         /* gc: empty */
};

static void test_reference_delta_has_the_documented_bytes(void **unused)
{
    (void) unused;
    sn_dot_t ctx[] = {{1, 4}};
    sn_attr_t attrs[] = {
        {(const uint8_t *) "a", 1, (const uint8_t *) "v", 1, 0, 1000u << 16, 1, false},
        {(const uint8_t *) "b", 1, NULL, 0, 0, 1000u << 16, 1, true},
    };
    sn_delta_t d = {
        .kind = SN_DELTA_WRITE, .id = (const uint8_t *) "s", .id_len = 1, .dot = {1, 5},
        .st = {.vv = {1, ctx}, .has_meta = true, .meta_stamp = 1000u << 16,
               .meta_origin = 1, .last_access_ms = 1000, .nattrs = 2, .attrs = attrs},
    };
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_wire_encode_delta(&d, &buf, &len), 0);
    assert_int_equal(len, sizeof reference_delta);
    assert_memory_equal(buf, reference_delta, len);
    free(buf);
    assert_int_equal(check_any_input(reference_delta, sizeof reference_delta), 1);
}

static void test_integers_take_their_shortest_form(void **unused)
{
    (void) unused;
    static const struct {
        uint64_t v;
        uint8_t bytes[9];
        size_t n;
    } cases[] = {
        {0, {0x00}, 1},
        {127, {0x7f}, 1},
        {128, {0xcc, 0x80}, 2},
        {255, {0xcc, 0xff}, 2},
        {256, {0xcd, 0x01, 0x00}, 3},
        {65535, {0xcd, 0xff, 0xff}, 3},
        {65536, {0xce, 0x00, 0x01, 0x00, 0x00}, 5},
        {UINT32_MAX, {0xce, 0xff, 0xff, 0xff, 0xff}, 5},
        {UINT64_C(1) << 32, {0xcf, 0, 0, 0, 1, 0, 0, 0, 0}, 9},
        {UINT64_MAX, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* last_access_ms of a touch sits right after 9a 03 c4 01 't' 00 00 90 90 */
        sn_delta_t d = {.kind = SN_DELTA_TOUCH, .id = (const uint8_t *) "t", .id_len = 1,
                        .st = {.last_access_ms = cases[i].v}};
        uint8_t *buf;
        size_t len;
        assert_int_equal(sn_wire_encode_delta(&d, &buf, &len), 0);
        assert_int_equal(len, 9 + cases[i].n + 3);
        assert_memory_equal(buf + 9, cases[i].bytes, cases[i].n);
        free(buf);
    }
}

static void test_non_shortest_encodings_are_eproto(void **unused)
{
    (void) unused;
    /* Each case rewrites one item of the reference delta in a longer form
     * that generic msgpack decoders accept. */
    static const struct {
        size_t at, old_len;
        uint8_t repl[6];
        size_t repl_len;
    } cases[] = {
        {0, 1, {0xdc, 0x00, 0x0a}, 3},               /* array16 of 10 */
        {0, 1, {0xdd, 0x00, 0x00, 0x00, 0x0a}, 5},   /* array32 of 10 */
        {1, 1, {0xcc, 0x01}, 2},                     /* uint8 kind */
        {1, 1, {0xcf, 0, 0, 0, 0, 0}, 6},            /* truncated uint64 */
        {2, 2, {0xc5, 0x00, 0x01}, 3},               /* bin16 id */
        {2, 2, {0xc6, 0x00, 0x00, 0x00, 0x01}, 5},   /* bin32 id */
        {11, 3, {0xce, 0x00, 0x00, 0x03, 0xe8}, 5},  /* uint32 for 1000 */
        {10, 1, {0xdc, 0x00, 0x00}, 3},              /* array16 for empty dv */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[sizeof reference_delta + 8];
        size_t n = 0;
        memcpy(buf, reference_delta, cases[i].at);
        n += cases[i].at;
        memcpy(buf + n, cases[i].repl, cases[i].repl_len);
        n += cases[i].repl_len;
        size_t rest = sizeof reference_delta - cases[i].at - cases[i].old_len;
        memcpy(buf + n, reference_delta + cases[i].at + cases[i].old_len, rest);
        n += rest;
        assert_delta_rejected(buf, n, SN_EPROTO);
    }
}

/* ---------------------------------------------------------- bad input */

static void test_every_truncation_is_eproto(void **unused)
{
    (void) unused;
    size_t len, slen;
    uint8_t *buf = encode_sample(&len);
    uint8_t *sbuf = encode_sample_state(&slen);
    for (size_t n = 0; n < len; n++) {
        /* a fresh allocation of exactly n bytes, so ASan sees any overread */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        assert_delta_rejected(cut, n, SN_EPROTO);
        assert_state_rejected(cut, n, SN_EPROTO);
        free(cut);
    }
    for (size_t n = 0; n < slen; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, sbuf, n);
        assert_state_rejected(cut, n, SN_EPROTO);
        assert_delta_rejected(cut, n, SN_EPROTO);
        free(cut);
    }
    free(sbuf);
    free(buf);
}

static void test_trailing_bytes_are_eproto(void **unused)
{
    (void) unused;
    size_t len, slen;
    uint8_t *buf = encode_sample(&len);
    uint8_t *sbuf = encode_sample_state(&slen);
    static const uint8_t tails[][2] = {{0x00}, {0xc0}, {0x90}, {0xff}};
    for (size_t i = 0; i < 4; i++) {
        uint8_t *b = malloc(len + 1);
        memcpy(b, buf, len);
        b[len] = tails[i][0];
        assert_delta_rejected(b, len + 1, SN_EPROTO);
        free(b);
        b = malloc(slen + 1);
        memcpy(b, sbuf, slen);
        b[slen] = tails[i][0];
        assert_state_rejected(b, slen + 1, SN_EPROTO);
        free(b);
    }
    /* two messages back to back are not one message */
    uint8_t *two = malloc(2 * len);
    memcpy(two, buf, len);
    memcpy(two + len, buf, len);
    assert_delta_rejected(two, 2 * len, SN_EPROTO);
    free(two);
    free(sbuf);
    free(buf);
}

static void test_every_single_byte_corruption_is_handled(void **unused)
{
    (void) unused;
    static const uint8_t values[] = {0x00, 0x01, 0x0f, 0x7f, 0x80, 0x90, 0x9f, 0xc0,
                                     0xc4, 0xc5, 0xc6, 0xcc, 0xcf, 0xdc, 0xdd, 0xff};
    uint8_t *bufs[2];
    size_t lens[2];
    bufs[0] = encode_sample(&lens[0]);
    bufs[1] = encode_sample_state(&lens[1]);
    size_t tried = 0, decoded = 0;
    for (int k = 0; k < 2; k++) {
        uint8_t *b = malloc(lens[k]);
        for (size_t pos = 0; pos < lens[k]; pos++) {
            uint8_t orig = bufs[k][pos];
            uint8_t vals[sizeof values + 2];
            memcpy(vals, values, sizeof values);
            vals[sizeof values] = orig ^ 0x01;
            vals[sizeof values + 1] = orig ^ 0x80;
            for (size_t v = 0; v < sizeof vals; v++) {
                memcpy(b, bufs[k], lens[k]);
                b[pos] = vals[v];
                decoded += (size_t) check_any_input(b, lens[k]);
                tried++;
            }
        }
        free(b);
        free(bufs[k]);
    }
    print_message("corruptions: %zu tried, %zu decoded (and re-encoded exactly)\n", tried, decoded);
    /* changing a value byte inside a bin, say, still decodes */
    assert_true(decoded > 0);
}

static double elapsed_s(clock_t since)
{
    return (double) (clock() - since) / CLOCKS_PER_SEC;
}

static void test_hostile_headers_are_eproto_fast(void **unused)
{
    (void) unused;
    static const struct {
        uint8_t bytes[24];
        size_t n;
    } cases[] = {
        {{0xdd, 0xff, 0xff, 0xff, 0xff}, 5},                         /* top array32 */
        {{0xdf, 0xff, 0xff, 0xff, 0xff}, 5},                         /* top map32 */
        {{0xdc, 0xff, 0xff}, 3},                                     /* top array16 */
        {{0x9a, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff}, 7},             /* id bin32 */
        {{0x9a, 0x01, 0xc6, 0x00, 0x00, 0x00, 0x05, 's'}, 8},        /* id past the end */
        {{0x9a, 0x01, 0xc4, 0x01, 's', 0x01, 0x05,
          0xdd, 0x7f, 0xff, 0xff, 0xfe}, 12},                        /* ctx array32 */
        {{0x9a, 0x01, 0xc4, 0x01, 's', 0x01, 0x05, 0x90, 0x90, 0x00, 0xc0,
          0xdd, 0xff, 0xff, 0xff, 0xff}, 16},                        /* attrs array32 */
        {{0x9a, 0x01, 0xc4, 0x01, 's', 0x01, 0x05, 0x90, 0x90, 0x00, 0xc0,
          0x91, 0x95, 0xc4, 0x01, 'a', 0xc6, 0xff, 0xff, 0xff, 0xff}, 21}, /* value bin32 */
        {{0x97, 0xc4, 0x01, 's', 0xdd, 0xff, 0xff, 0xff, 0xfe}, 9},  /* state vv array32 */
        {{0xc7, 0xff, 0x01}, 3},                                     /* ext8 */
        {{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, 6},                   /* ext32 */
        {{0xdb, 0xff, 0xff, 0xff, 0xff}, 5},                         /* str32 */
    };
    clock_t start = clock();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_delta_rejected(cases[i].bytes, cases[i].n, SN_EPROTO);
        assert_state_rejected(cases[i].bytes, cases[i].n, SN_EPROTO);
    }
    /* deep nesting: a megabyte of array-of-one headers, and of map32s */
    size_t deep_len = 1u << 20;
    uint8_t *deep = malloc(deep_len);
    memset(deep, 0x91, deep_len);
    assert_delta_rejected(deep, deep_len, SN_EPROTO);
    assert_state_rejected(deep, deep_len, SN_EPROTO);
    memset(deep, 0xdf, deep_len);
    assert_delta_rejected(deep, deep_len, SN_EPROTO);
    assert_state_rejected(deep, deep_len, SN_EPROTO);
    /* a valid prefix whose attrs array claims more records than there are */
    memset(deep, 0x00, deep_len);
    static const uint8_t head[] = {0x9a, 0x01, 0xc4, 0x01, 's', 0x01, 0x05, 0x90, 0x90, 0x00,
                                   0xc0, 0xdd, 0x00, 0x0f, 0xff, 0xff};
    memcpy(deep, head, sizeof head);
    assert_delta_rejected(deep, deep_len, SN_EPROTO);
    free(deep);
    double t = elapsed_s(start);
    print_message("hostile headers rejected in %.3f s\n", t);
    assert_true(t < 1.0);
}

static void test_frame_over_the_limit_is_etoobig(void **unused)
{
    (void) unused;
    size_t len, slen;
    uint8_t *buf = encode_sample(&len);
    uint8_t *sbuf = encode_sample_state(&slen);
    /* the size is checked before a byte is read */
    assert_delta_rejected(buf, (size_t) SN_WIRE_FRAME_MAX + 1, SN_ETOOBIG);
    assert_state_rejected(sbuf, (size_t) SN_WIRE_FRAME_MAX + 1, SN_ETOOBIG);
    assert_delta_rejected(buf, SIZE_MAX, SN_ETOOBIG);
    free(sbuf);
    free(buf);
}

static void test_encoder_refuses_a_body_over_the_limit(void **unused)
{
    (void) unused;
    size_t big = SN_WIRE_FRAME_MAX;
    uint8_t *value = calloc(1, big);
    assert_non_null(value);
    sn_attr_t a = {(const uint8_t *) "v", 1, value, (uint32_t) big, 0, 1, 1, false};
    sn_delta_t d = {.kind = SN_DELTA_WRITE, .id = (const uint8_t *) "s", .id_len = 1,
                    .dot = {1, 1}, .st = {.nattrs = 1, .attrs = &a}};
    uint8_t *out = (uint8_t *) &a;
    size_t out_len = 77;
    /* the value alone fits the limit; with its headers the body does not */
    assert_int_equal(sn_wire_encode_delta(&d, &out, &out_len), SN_ETOOBIG);
    assert_ptr_equal(out, &a);
    assert_int_equal(out_len, 77);
    a.value_len = (uint32_t) big + 1;
    assert_int_equal(sn_wire_encode_state(d.id, 1, &d.st, &out, &out_len), SN_ETOOBIG);
    /* just under the limit encodes and decodes */
    a.value_len = (uint32_t) big - 64;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &out_len), 0);
    assert_true(out_len <= SN_WIRE_FRAME_MAX);
    sn_wire_delta_t msg;
    assert_int_equal(sn_wire_decode_delta(out, out_len, &msg), 0);
    assert_int_equal(msg.delta.st.attrs[0].value_len, big - 64);
    sn_wire_delta_release(&msg);
    free(out);
    free(value);
}

static void test_encoder_refuses_invalid_arguments(void **unused)
{
    (void) unused;
    uint8_t *out;
    size_t len;
    sn_delta_t good = sample_delta();
    sn_delta_t d;
    assert_int_equal(sn_wire_encode_delta(NULL, &out, &len), SN_EINVAL);
    assert_int_equal(sn_wire_encode_delta(&good, NULL, &len), SN_EINVAL);
    assert_int_equal(sn_wire_encode_delta(&good, &out, NULL), SN_EINVAL);
    d = good;
    d.kind = (sn_delta_kind_t) 0;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d.kind = (sn_delta_kind_t) 4;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d = good;
    d.id_len = 0;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d.id_len = SN_ID_MAX + 1;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d = good;
    d.id = NULL;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d = good;
    d.st.vv.n = SN_VV_MAX + 1;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d = good;
    d.st.gc.dots = NULL;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    d = good;
    d.st.nattrs = SN_ATTRS_MAX + 1;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    sn_attr_t a = sample_attrs[1];
    d = good;
    d.st.nattrs = 1;
    d.st.attrs = &a;
    a.name_len = SN_NAME_MAX + 1;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    a = sample_attrs[1];
    a.value = NULL;
    a.value_len = 3;
    assert_int_equal(sn_wire_encode_delta(&d, &out, &len), SN_EINVAL);
    assert_int_equal(sn_wire_encode_state(NULL, 1, &good.st, &out, &len), SN_EINVAL);
    assert_int_equal(sn_wire_encode_state(good.id, 1, NULL, &out, &len), SN_EINVAL);
    assert_int_equal(sn_wire_encode_state(good.id, 0, &good.st, &out, &len), SN_EINVAL);
    sn_wire_delta_t msg;
    assert_int_equal(sn_wire_decode_delta(reference_delta, 1, NULL), SN_EINVAL);
    assert_int_equal(sn_wire_decode_delta(NULL, 5, &msg), SN_EINVAL);
    assert_null(msg.mem);
    assert_int_equal(sn_wire_decode_delta(NULL, 0, &msg), SN_EPROTO);
    sn_wire_delta_release(NULL);
    sn_wire_state_release(NULL);
}

/* Builds a delta (or state) message with the item at `bad` replaced by a
 * value of kind `wrong`; bad < 0 builds the valid message. */
enum {
    W_NIL, W_TRUE, W_NEGFIX, W_INT16, W_DOUBLE, W_STR, W_BIN, W_UINT, W_EMPTY_ARRAY, W_MAP,
    W_EXT, W_COUNT
};
enum { T_UINT, T_BIN, T_VEC, T_META, T_ATTRS, T_ATTR, T_VALUE };

typedef struct {
    const char *what;
    int type;
} position_t;

/* Positions in the order the builder visits them; the first four are only
 * in deltas, the state starts at P_ID. */
enum {
    P_KIND, P_ID, P_DOT_NODE, P_DOT_COUNTER, P_CTX, P_CTX_ENTRY, P_DV, P_LAST_ACCESS,
    P_META, P_META_MAX, P_META_STAMP, P_META_ORIGIN, P_ATTRS, P_ATTR, P_NAME, P_VALUE,
    P_FLAGS, P_STAMP, P_ORIGIN, P_GC, P_COUNT
};

static const position_t positions[P_COUNT] = {
    [P_KIND] = {"kind", T_UINT},           [P_ID] = {"id", T_BIN},
    [P_DOT_NODE] = {"dot_node", T_UINT},   [P_DOT_COUNTER] = {"dot_counter", T_UINT},
    [P_CTX] = {"ctx", T_VEC},              [P_CTX_ENTRY] = {"ctx entry", T_UINT},
    [P_DV] = {"dv", T_VEC},                [P_LAST_ACCESS] = {"last_access_ms", T_UINT},
    [P_META] = {"meta", T_META},           [P_META_MAX] = {"max_inactive", T_UINT},
    [P_META_STAMP] = {"meta stamp", T_UINT}, [P_META_ORIGIN] = {"meta origin", T_UINT},
    [P_ATTRS] = {"attrs", T_ATTRS},        [P_ATTR] = {"attr", T_ATTR},
    [P_NAME] = {"name", T_BIN},            [P_VALUE] = {"value", T_VALUE},
    [P_FLAGS] = {"flags", T_UINT},         [P_STAMP] = {"stamp", T_UINT},
    [P_ORIGIN] = {"origin", T_UINT},       [P_GC] = {"gc", T_VEC},
};

static bool wrong_is_valid(int type, int wrong)
{
    switch (type) {
    case T_UINT: return wrong == W_UINT;
    case T_BIN: return wrong == W_BIN;
    case T_VEC: return wrong == W_EMPTY_ARRAY;
    case T_META: return wrong == W_NIL;
    case T_ATTRS: return wrong == W_EMPTY_ARRAY;
    case T_ATTR: return false;
    case T_VALUE: return wrong == W_NIL || wrong == W_BIN;
    default: return false;
    }
}

static void pack_wrong(msgpack_packer *pk, int wrong)
{
    switch (wrong) {
    case W_NIL: msgpack_pack_nil(pk); break;
    case W_TRUE: msgpack_pack_true(pk); break;
    case W_NEGFIX: msgpack_pack_int64(pk, -1); break;
    case W_INT16: msgpack_pack_int64(pk, -300); break;
    case W_DOUBLE: msgpack_pack_double(pk, 1.5); break;
    case W_STR: msgpack_pack_str(pk, 1); msgpack_pack_str_body(pk, "x", 1); break;
    case W_BIN: msgpack_pack_bin(pk, 1); msgpack_pack_bin_body(pk, "x", 1); break;
    case W_UINT: msgpack_pack_uint64(pk, 1); break;
    case W_EMPTY_ARRAY: msgpack_pack_array(pk, 0); break;
    case W_MAP: msgpack_pack_map(pk, 1); msgpack_pack_uint64(pk, 1); msgpack_pack_uint64(pk, 1); break;
    case W_EXT: msgpack_pack_ext(pk, 1, 1); msgpack_pack_ext_body(pk, "x", 1); break;
    default: fail();
    }
}

/* Returns true when `pos` is the bad one (and packs the wrong value). */
static bool bad_here(msgpack_packer *pk, int pos, int bad, int wrong)
{
    if (pos != bad)
        return false;
    pack_wrong(pk, wrong);
    return true;
}

static void pack_uint_at(msgpack_packer *pk, int pos, int bad, int wrong, uint64_t v)
{
    if (!bad_here(pk, pos, bad, wrong))
        msgpack_pack_uint64(pk, v);
}

static void pack_bin_at(msgpack_packer *pk, int pos, int bad, int wrong, const char *s)
{
    if (!bad_here(pk, pos, bad, wrong)) {
        msgpack_pack_bin(pk, strlen(s));
        msgpack_pack_bin_body(pk, s, strlen(s));
    }
}

static void pack_vec_at(msgpack_packer *pk, int pos, int bad, int wrong)
{
    if (bad_here(pk, pos, bad, wrong))
        return;
    msgpack_pack_array(pk, 2);
    pack_uint_at(pk, pos == P_CTX ? P_CTX_ENTRY : P_COUNT, bad, wrong, 3);
    msgpack_pack_uint64(pk, 4);
}

static void build_message(msgpack_sbuffer *sb, bool delta, int bad, int wrong)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, delta ? 10 : 7);
    if (delta)
        pack_uint_at(&pk, P_KIND, bad, wrong, SN_DELTA_WRITE);
    pack_bin_at(&pk, P_ID, bad, wrong, "sid");
    if (delta) {
        pack_uint_at(&pk, P_DOT_NODE, bad, wrong, 3);
        pack_uint_at(&pk, P_DOT_COUNTER, bad, wrong, 5);
    }
    pack_vec_at(&pk, P_CTX, bad, wrong);
    pack_vec_at(&pk, P_DV, bad, wrong);
    pack_uint_at(&pk, P_LAST_ACCESS, bad, wrong, 1000);
    if (!bad_here(&pk, P_META, bad, wrong)) {
        msgpack_pack_array(&pk, 3);
        pack_uint_at(&pk, P_META_MAX, bad, wrong, 60);
        pack_uint_at(&pk, P_META_STAMP, bad, wrong, 1 << 20);
        pack_uint_at(&pk, P_META_ORIGIN, bad, wrong, 3);
    }
    if (!bad_here(&pk, P_ATTRS, bad, wrong)) {
        msgpack_pack_array(&pk, 1);
        if (!bad_here(&pk, P_ATTR, bad, wrong)) {
            msgpack_pack_array(&pk, 5);
            pack_bin_at(&pk, P_NAME, bad, wrong, "name");
            pack_bin_at(&pk, P_VALUE, bad, wrong, "value");
            pack_uint_at(&pk, P_FLAGS, bad, wrong, 7);
            pack_uint_at(&pk, P_STAMP, bad, wrong, 1 << 20);
            pack_uint_at(&pk, P_ORIGIN, bad, wrong, 3);
        }
    }
    pack_vec_at(&pk, P_GC, bad, wrong);
}

static void test_wrong_type_in_each_field_is_eproto(void **unused)
{
    (void) unused;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int delta = 0; delta <= 1; delta++) {
        build_message(&sb, delta, -1, 0);
        assert_int_equal(check_any_input((const uint8_t *) sb.data, sb.size), 1);
        int checked = 0;
        for (int pos = delta ? 0 : P_ID; pos < P_COUNT; pos++) {
            if (!delta && (pos == P_DOT_NODE || pos == P_DOT_COUNTER))
                continue;
            for (int w = 0; w < W_COUNT; w++) {
                if (wrong_is_valid(positions[pos].type, w))
                    continue;
                build_message(&sb, delta, pos, w);
                sn_wire_delta_t d;
                sn_wire_state_t s;
                int rc = delta ? sn_wire_decode_delta(sb.data, sb.size, &d)
                               : sn_wire_decode_state(sb.data, sb.size, &s);
                if (rc != SN_EPROTO)
                    fail_msg("%s: %s with wrong value %d: rc %d", delta ? "delta" : "state",
                             positions[pos].what, w, rc);
                checked++;
            }
        }
        print_message("%s: %d wrong-type cases\n", delta ? "delta" : "state", checked);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void test_out_of_range_values_are_eproto(void **unused)
{
    (void) unused;
    uint8_t buf[sizeof reference_delta + 8];
    /* unknown kinds */
    static const uint8_t kinds[] = {0x00, 0x04, 0x7f};
    for (size_t i = 0; i < sizeof kinds; i++) {
        memcpy(buf, reference_delta, sizeof reference_delta);
        buf[1] = kinds[i];
        assert_delta_rejected(buf, sizeof reference_delta, SN_EPROTO);
    }
    /* an empty id */
    static const uint8_t empty_id[] = {0x97, 0xc4, 0x00, 0x90, 0x90, 0x00, 0xc0, 0x90, 0x90};
    assert_state_rejected(empty_id, sizeof empty_id, SN_EPROTO);
    static const uint8_t one_id[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0xc0, 0x90, 0x90};
    assert_int_equal(check_any_input(one_id, sizeof one_id), 1);
    /* an odd-length vector: ctx of {1: 4} and a stray 1 */
    static const uint8_t odd[] = {0x97, 0xc4, 0x01, 'x', 0x93, 0x01, 0x04, 0x01, 0x90, 0x00,
                                  0xc0, 0x90, 0x90};
    assert_state_rejected(odd, sizeof odd, SN_EPROTO);
    /* a meta array of 2 and of 4 */
    static const uint8_t meta2[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0x92, 0x00, 0x01,
                                    0x90, 0x90};
    assert_state_rejected(meta2, sizeof meta2, SN_EPROTO);
    static const uint8_t meta4[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0x94, 0x00, 0x01,
                                    0x01, 0x01, 0x90, 0x90};
    assert_state_rejected(meta4, sizeof meta4, SN_EPROTO);
    /* max_inactive and flags over 32 bits */
    static const uint8_t big_max[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0x93,
                                      0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0x01, 0x90, 0x90};
    assert_state_rejected(big_max, sizeof big_max, SN_EPROTO);
    static const uint8_t big_flags[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0xc0, 0x91,
                                        0x95, 0xc4, 0x00, 0xc0, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0,
                                        0x01, 0x01, 0x90};
    assert_state_rejected(big_flags, sizeof big_flags, SN_EPROTO);
    /* an attribute record of 4 and of 6 fields */
    static const uint8_t attr4[] = {0x97, 0xc4, 0x01, 'x', 0x90, 0x90, 0x00, 0xc0, 0x91,
                                    0x94, 0xc4, 0x00, 0xc0, 0x00, 0x01, 0x90};
    assert_state_rejected(attr4, sizeof attr4, SN_EPROTO);

    /* limits: id of SN_ID_MAX + 1, name of SN_NAME_MAX + 1, SN_VV_MAX + 1
     * vector entries, SN_ATTRS_MAX + 1 attributes */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    static char filler[SN_ID_MAX + SN_NAME_MAX];
    memset(filler, 'f', sizeof filler);
    for (int which = 0; which < 4; which++) {
        for (int over = 0; over <= 1; over++) {
            msgpack_sbuffer_clear(&sb);
            msgpack_pack_array(&pk, 7);
            uint32_t id_len = which == 0 ? SN_ID_MAX + over : 1;
            msgpack_pack_bin(&pk, id_len);
            msgpack_pack_bin_body(&pk, filler, id_len);
            uint32_t nv = which == 2 ? SN_VV_MAX + over : 0;
            msgpack_pack_array(&pk, nv * 2);
            for (uint32_t i = 0; i < nv; i++) {
                msgpack_pack_uint64(&pk, i + 1);
                msgpack_pack_uint64(&pk, 1);
            }
            msgpack_pack_array(&pk, 0);
            msgpack_pack_uint64(&pk, 0);
            msgpack_pack_nil(&pk);
            uint32_t na = which == 3 ? SN_ATTRS_MAX + over : which == 1 ? 1 : 0;
            msgpack_pack_array(&pk, na);
            for (uint32_t i = 0; i < na; i++) {
                uint32_t name_len = which == 1 ? SN_NAME_MAX + over : 0;
                msgpack_pack_array(&pk, 5);
                msgpack_pack_bin(&pk, name_len);
                msgpack_pack_bin_body(&pk, filler, name_len);
                msgpack_pack_nil(&pk);
                msgpack_pack_uint64(&pk, 0);
                msgpack_pack_uint64(&pk, 0);
                msgpack_pack_uint64(&pk, 0);
            }
            msgpack_pack_array(&pk, 0);
            if (over)
                assert_state_rejected((const uint8_t *) sb.data, sb.size, SN_EPROTO);
            else
                assert_int_equal(check_any_input((const uint8_t *) sb.data, sb.size), 1);
        }
    }
    msgpack_sbuffer_destroy(&sb);
}

static void test_random_input_fuzz(void **unused)
{
    (void) unused;
    uint64_t seed = test_seed(0x5e55a0de2024ull);
    int iterations = 20000;
    print_message("fuzz seed %#llx (SN_TEST_SEED=%#llx to replay), %d iterations\n",
                  (unsigned long long) seed, (unsigned long long) seed, iterations);
    rng_state = seed ? seed : 1;
    /* bytes that mean something to the decoder, so random input reaches
     * past the first header often enough to matter */
    static const uint8_t alphabet[] = {0x00, 0x01, 0x02, 0x7f, 0x90, 0x91, 0x92, 0x93, 0x95,
                                       0x97, 0x9a, 0xc0, 0xc4, 0xc5, 0xc6, 0xcc, 0xcd, 0xce,
                                       0xcf, 0xdc, 0xdd, 0xde, 0xdf, 0xff, 's'};
    size_t seeds_len[2];
    uint8_t *seeds[2] = {encode_sample(&seeds_len[0]), encode_sample_state(&seeds_len[1])};
    size_t decoded = 0;
    for (int it = 0; it < iterations; it++) {
        uint8_t buf[1024];
        size_t len;
        uint64_t mode = rng_next() % 3;
        if (mode == 0) {
            len = rng_next() % 64;
            for (size_t i = 0; i < len; i++) {
                uint64_t r = rng_next();
                buf[i] = r & 1 ? alphabet[(r >> 8) % sizeof alphabet] : (uint8_t) (r >> 8);
            }
        } else {
            int k = (int) (rng_next() & 1);
            len = seeds_len[k];
            assert_true(len <= sizeof buf - 16);
            memcpy(buf, seeds[k], len);
            int edits = 1 + (int) (rng_next() % 4);
            for (int e = 0; e < edits && len > 0; e++) {
                uint64_t r = rng_next();
                size_t at = (size_t) ((r >> 8) % len);
                switch (r % 4) {
                case 0: buf[at] = (uint8_t) (r >> 40); break;
                case 1: buf[at] = alphabet[(r >> 40) % sizeof alphabet]; break;
                case 2:  /* insert */
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t) (r >> 40);
                    len++;
                    break;
                default:  /* delete */
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                    break;
                }
            }
        }
        /* exact-size copy so ASan catches reads past the end */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        decoded += (size_t) check_any_input(exact, len);
        free(exact);
    }
    print_message("fuzz: %zu of %d inputs decoded (and re-encoded exactly)\n", decoded, iterations);
    free(seeds[0]);
    free(seeds[1]);
}

/* --------------------------------------------------- with the real store */

typedef struct {
    uint8_t *bufs[64];
    size_t lens[64];
    int kinds[64];
    int n;
} captured_t;

static void capture_delta(const sn_delta_t *d, void *arg)
{
    captured_t *c = arg;
    assert_true(c->n < 64);
    assert_int_equal(sn_wire_encode_delta(d, &c->bufs[c->n], &c->lens[c->n]), 0);
    c->kinds[c->n++] = d->kind;
}

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void) arg;
    return fake_now;
}

typedef struct {
    sn_store_t *into;
    int merged;
    int rc;
} merge_ctx_t;

/* Encodes the exported state, decodes it from a copy that is freed at once,
 * and merges the decoded state into another store. */
static void export_through_wire(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    merge_ctx_t *m = arg;
    uint8_t *buf;
    size_t len;
    assert_int_equal(sn_wire_encode_state(id, id_len, st, &buf, &len), 0);
    sn_wire_state_t msg;
    assert_int_equal(sn_wire_decode_state(buf, len, &msg), 0);
    free(buf);
    assert_state_equal(st, &msg.state);
    m->rc = sn_store_merge(m->into, msg.id, msg.id_len, &msg.state);
    m->merged++;
    sn_wire_state_release(&msg);
}

static sn_store_t *new_store(uint64_t node, captured_t *sink)
{
    sn_store_options_t o = {
        .node_id = node,
        .clock = fake_clock,
        .touch_interval_ms = 1000,
        .sink = sink ? capture_delta : NULL,
        .sink_arg = sink,
        .hash_seed = 42,
    };
    sn_store_t *s = sn_store_new(&o);
    assert_non_null(s);
    return s;
}

static void assert_same_digest(sn_store_t *a, sn_store_t *b, const char *id)
{
    uint64_t da = 0, db = 0;
    int ra = sn_store_digest(a, id, strlen(id), &da);
    int rb = sn_store_digest(b, id, strlen(id), &db);
    assert_int_equal(ra, rb);
    if (ra == 0 && da != db)
        fail_msg("digest of %s differs: %#llx vs %#llx", id, (unsigned long long) da,
                 (unsigned long long) db);
}

static void test_store_deltas_and_states_replicate_through_the_wire(void **unused)
{
    (void) unused;
    static const char *ids[] = {"s1", "s2", "s3"};
    captured_t cap = {.n = 0};
    fake_now = 1700000000000ull;
    sn_store_t *a = new_store(1, &cap);
    sn_store_t *b = new_store(2, NULL);
    sn_store_t *c = new_store(3, NULL);

    assert_int_equal(sn_store_put(a, "s1", 2, "user", 4, "alice", 5, 7, true, 3600), 0);
    assert_int_equal(sn_store_put(a, "s1", 2, "cart", 4, "", 0, 0, false, 0), 0);
    assert_int_equal(sn_store_put(a, "s1", 2, "tmp", 3, "x", 1, 0, false, 0), 0);
    assert_int_equal(sn_store_remove(a, "s1", 2, "tmp", 3), 0);
    assert_int_equal(sn_store_put(a, "s2", 2, "k", 1, "v", 1, 0, true, 60), 0);
    assert_int_equal(sn_store_touch(a, "s2", 2, 120), 0);
    fake_now += 5000;
    char got[16];
    size_t got_len;
    assert_int_equal(sn_store_get(a, "s1", 2, "user", 4, got, sizeof got, &got_len, NULL), 0);
    assert_int_equal(sn_store_destroy_session(a, "s2", 2), 0);
    /* collect s2's tombstone on a, then recreate it: that write carries a's
     * GC vector */
    sn_dot_t stable_dots[] = {{1, sn_store_seq(a)}};
    sn_vv_t stable = {1, stable_dots};
    sn_store_gc(a, &stable);
    assert_int_equal(sn_store_put(a, "s2", 2, "k", 1, "again", 5, 0, true, 60), 0);
    assert_int_equal(sn_store_put(a, "s3", 2, "k", 1, "v", 1, 0, true, 0), 0);

    int seen[4] = {0};
    bool saw_gc = false;
    for (int i = 0; i < cap.n; i++) {
        sn_wire_delta_t msg;
        assert_int_equal(sn_wire_decode_delta(cap.bufs[i], cap.lens[i], &msg), 0);
        assert_int_equal(msg.delta.kind, cap.kinds[i]);
        assert_int_equal(check_any_input(cap.bufs[i], cap.lens[i]), 1);
        saw_gc |= msg.delta.st.gc.n > 0;
        int rc = sn_store_apply(b, &msg.delta);
        if (msg.delta.kind == SN_DELTA_TOUCH)
            assert_true(rc >= 0);
        else if (rc != SN_APPLY_APPLIED)
            fail_msg("delta %d (kind %d) applied with %d", i, msg.delta.kind, rc);
        seen[msg.delta.kind]++;
        sn_wire_delta_release(&msg);
        free(cap.bufs[i]);
    }
    print_message("replicated %d deltas: %d writes, %d destroys, %d touches, gc carried: %s\n",
                  cap.n, seen[1], seen[2], seen[3], saw_gc ? "yes" : "no");
    assert_true(seen[SN_DELTA_WRITE] > 0);
    assert_true(seen[SN_DELTA_DESTROY] > 0);
    assert_true(seen[SN_DELTA_TOUCH] > 0);
    assert_true(saw_gc);
    /* b learnt a's GC vector from the recreating write, but collects only
     * when told to, as every member of the stable set eventually is; until
     * then it still holds the removed-attribute record a dropped. */
    sn_store_gc(b, &stable);

    for (size_t i = 0; i < 3; i++) {
        assert_same_digest(a, b, ids[i]);
        merge_ctx_t m = {.into = c};
        assert_int_equal(sn_store_export(a, ids[i], 2, export_through_wire, &m), 0);
        assert_int_equal(m.merged, 1);
        assert_int_equal(m.rc, SN_APPLY_APPLIED);
        assert_same_digest(a, c, ids[i]);
        /* and back: merging c's copy into b adds nothing */
        m = (merge_ctx_t) {.into = b};
        assert_int_equal(sn_store_export(c, ids[i], 2, export_through_wire, &m), 0);
        assert_true(m.rc == SN_APPLY_DUPLICATE || m.rc == SN_APPLY_APPLIED);
        assert_same_digest(a, b, ids[i]);
    }
    char value[16];
    size_t value_len;
    assert_int_equal(sn_store_get(c, "s2", 2, "k", 1, value, sizeof value, &value_len, NULL), 0);
    assert_int_equal(value_len, 5);
    assert_memory_equal(value, "again", 5);
    sn_store_destroy(&a);
    sn_store_destroy(&b);
    sn_store_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_delta_round_trips),
        cmocka_unit_test(test_destroy_delta_round_trips),
        cmocka_unit_test(test_touch_delta_round_trips),
        cmocka_unit_test(test_state_round_trips),
        cmocka_unit_test(test_tombstone_state_with_empty_vectors_round_trips),
        cmocka_unit_test(test_limits_round_trip),
        cmocka_unit_test(test_size_bound_is_the_longest_encoding),
        cmocka_unit_test(test_put_state_writes_in_place_and_never_past_cap),
        cmocka_unit_test(test_reference_delta_has_the_documented_bytes),
        cmocka_unit_test(test_integers_take_their_shortest_form),
        cmocka_unit_test(test_non_shortest_encodings_are_eproto),
        cmocka_unit_test(test_every_truncation_is_eproto),
        cmocka_unit_test(test_trailing_bytes_are_eproto),
        cmocka_unit_test(test_every_single_byte_corruption_is_handled),
        cmocka_unit_test(test_hostile_headers_are_eproto_fast),
        cmocka_unit_test(test_frame_over_the_limit_is_etoobig),
        cmocka_unit_test(test_encoder_refuses_a_body_over_the_limit),
        cmocka_unit_test(test_encoder_refuses_invalid_arguments),
        cmocka_unit_test(test_wrong_type_in_each_field_is_eproto),
        cmocka_unit_test(test_out_of_range_values_are_eproto),
        cmocka_unit_test(test_random_input_fuzz),
        cmocka_unit_test(test_store_deltas_and_states_replicate_through_the_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
