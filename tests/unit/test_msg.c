/*
 * test_msg.c - the frame codec (gossip/sn_msg.c).
 *
 * Round trips of every message type with ordinary, edge and maximum-size
 * values, the exact bytes of the documented example, canonical re-encoding,
 * and the decoder on hostile input: every truncation, trailing bytes,
 * single-byte corruptions at every position, non-shortest forms, wrong
 * versions, types and field counts, broken field rules, huge declared
 * counts and lengths, oversize frames, and a seeded random mutation loop.
 *
 * The test is linked with -Wl,--wrap=malloc, so the library's malloc calls
 * pass through a counter here: that is how "rejected without allocating"
 * and "one block of bounded size" are checked, not merely timed.
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

#include "sn_msg.h"

/* The highest message type; types run 1..LAST_TYPE. */
#define LAST_TYPE SN_MSG_MEMBERS
#include "sn_store.h"
#include "sn_wire.h"

/* ------------------------------------------------------ malloc counter */

void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

static size_t malloc_calls;
static size_t malloc_largest;

void *__wrap_malloc(size_t size)
{
    malloc_calls++;
    if (size > malloc_largest)
        malloc_largest = size;
    return __real_malloc(size);
}

static void malloc_reset(void)
{
    malloc_calls = 0;
    malloc_largest = 0;
}

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

static double elapsed_s(clock_t since)
{
    return (double) (clock() - since) / CLOCKS_PER_SEC;
}

static void assert_bytes_equal(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
    assert_int_equal(alen, blen);
    assert_non_null(b);
    if (alen)
        assert_memory_equal(a, b, alen);
}

static void assert_vv_equal(const sn_vv_t *a, const sn_vv_t *b)
{
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_true(a->dots[i].node == b->dots[i].node);
        assert_true(a->dots[i].counter == b->dots[i].counter);
    }
}

static void assert_blobs_equal(const sn_msg_blob_t *a, const sn_msg_blob_t *b, uint32_t n,
                               bool digests)
{
    if (n == 0) {
        assert_null(b);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        assert_bytes_equal(a[i].bytes, a[i].len, b[i].bytes, b[i].len);
        assert_true(b[i].digest == (digests ? a[i].digest : 0));
        if (digests)
            assert_vv_equal(&a[i].vv, &b[i].vv);
        else
            assert_int_equal(b[i].vv.n, 0);
    }
}

static void assert_entries_equal(const sn_msg_entry_t *a, const sn_msg_entry_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        assert_true(a[i].pseq == b[i].pseq);
        assert_int_equal(a[i].flags, b[i].flags);
        assert_bytes_equal(a[i].body, a[i].body_len, b[i].body, b[i].body_len);
    }
}

static void assert_msg_equal(const sn_msg_t *a, const sn_msg_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_true(a->sender == b->sender);
    switch (a->type) {
    case SN_MSG_DELTA:
        assert_true(a->u.delta.pseq == b->u.delta.pseq);
        assert_int_equal(a->u.delta.flags, b->u.delta.flags);
        assert_bytes_equal(a->u.delta.body, a->u.delta.body_len, b->u.delta.body,
                           b->u.delta.body_len);
        break;
    case SN_MSG_HEARTBEAT:
        assert_true(a->u.heartbeat.incarnation == b->u.heartbeat.incarnation);
        assert_true(a->u.heartbeat.last_pseq == b->u.heartbeat.last_pseq);
        assert_true(a->u.heartbeat.dots_done == b->u.heartbeat.dots_done);
        assert_bytes_equal(a->u.heartbeat.endpoint, a->u.heartbeat.endpoint_len,
                           b->u.heartbeat.endpoint, b->u.heartbeat.endpoint_len);
        assert_bytes_equal(a->u.heartbeat.name, a->u.heartbeat.name_len,
                           b->u.heartbeat.name, b->u.heartbeat.name_len);
        /* decoded strings are NUL-terminated for the caller's convenience */
        assert_int_equal(b->u.heartbeat.endpoint[b->u.heartbeat.endpoint_len], 0);
        assert_int_equal(b->u.heartbeat.name[b->u.heartbeat.name_len], 0);
        assert_vv_equal(&a->u.heartbeat.applied, &b->u.heartbeat.applied);
        assert_true(a->u.heartbeat.sessions == b->u.heartbeat.sessions);
        break;
    case SN_MSG_LEAVE:
        break;
    case SN_MSG_CONTROL:
        assert_bytes_equal(a->u.control.command, a->u.control.command_len,
                           b->u.control.command, b->u.control.command_len);
        assert_bytes_equal(a->u.control.arg, a->u.control.arg_len, b->u.control.arg,
                           b->u.control.arg_len);
        break;
    case SN_MSG_CONTROL_REP:
        assert_int_equal(a->u.control_rep.status, b->u.control_rep.status);
        assert_bytes_equal(a->u.control_rep.body, a->u.control_rep.body_len,
                           b->u.control_rep.body, b->u.control_rep.body_len);
        break;
    case SN_MSG_REPAIR_REQ:
        assert_true(a->u.repair_req.origin == b->u.repair_req.origin);
        assert_true(a->u.repair_req.from_pseq == b->u.repair_req.from_pseq);
        assert_true(a->u.repair_req.to_pseq == b->u.repair_req.to_pseq);
        break;
    case SN_MSG_REPAIR_REP:
        assert_true(a->u.repair_rep.origin == b->u.repair_rep.origin);
        assert_int_equal(a->u.repair_rep.status, b->u.repair_rep.status);
        assert_int_equal(a->u.repair_rep.n, b->u.repair_rep.n);
        if (a->u.repair_rep.n == 0)
            assert_null(b->u.repair_rep.entries);
        assert_entries_equal(a->u.repair_rep.entries, b->u.repair_rep.entries,
                             a->u.repair_rep.n);
        break;
    case SN_MSG_SNAP_REQ:
    case SN_MSG_SNAP_CREDIT:
        assert_true(a->u.snap_req.snap_id == b->u.snap_req.snap_id);
        assert_int_equal(a->u.snap_req.credit, b->u.snap_req.credit);
        break;
    case SN_MSG_SNAP_CHUNK:
        assert_true(a->u.snap_chunk.snap_id == b->u.snap_chunk.snap_id);
        assert_true(a->u.snap_chunk.chunk == b->u.snap_chunk.chunk);
        assert_int_equal(a->u.snap_chunk.last, b->u.snap_chunk.last);
        assert_vv_equal(&a->u.snap_chunk.cut, &b->u.snap_chunk.cut);
        assert_int_equal(a->u.snap_chunk.n, b->u.snap_chunk.n);
        assert_true(a->u.snap_chunk.sessions == b->u.snap_chunk.sessions);
        assert_blobs_equal(a->u.snap_chunk.states, b->u.snap_chunk.states, a->u.snap_chunk.n,
                           false);
        break;
    case SN_MSG_DIGEST_REQ:
        assert_true(a->u.digest_req.cursor == b->u.digest_req.cursor);
        assert_int_equal(a->u.digest_req.max, b->u.digest_req.max);
        break;
    case SN_MSG_DIGEST_REP:
        assert_true(a->u.digest_rep.next_cursor == b->u.digest_rep.next_cursor);
        assert_int_equal(a->u.digest_rep.done, b->u.digest_rep.done);
        assert_int_equal(a->u.digest_rep.n, b->u.digest_rep.n);
        assert_blobs_equal(a->u.digest_rep.entries, b->u.digest_rep.entries, a->u.digest_rep.n,
                           true);
        break;
    case SN_MSG_FETCH_REQ:
        assert_int_equal(a->u.fetch_req.n, b->u.fetch_req.n);
        assert_blobs_equal(a->u.fetch_req.ids, b->u.fetch_req.ids, a->u.fetch_req.n, false);
        break;
    case SN_MSG_MEMBERS:
        assert_int_equal(a->u.members.n, b->u.members.n);
        assert_blobs_equal(a->u.members.addrs, b->u.members.addrs, a->u.members.n, false);
        assert_int_equal(a->u.members.nkeys, b->u.members.nkeys);
        assert_blobs_equal(a->u.members.keys, b->u.members.keys, a->u.members.nkeys, false);
        break;
    case SN_MSG_FETCH_REP:
        assert_int_equal(a->u.fetch_rep.n, b->u.fetch_rep.n);
        assert_blobs_equal(a->u.fetch_rep.states, b->u.fetch_rep.states, a->u.fetch_rep.n,
                           false);
        break;
    case SN_MSG_ACK:
        assert_true(a->u.ack.origin == b->u.ack.origin);
        assert_true(a->u.ack.pseq == b->u.ack.pseq);
        assert_true(a->u.ack.status == b->u.ack.status);
        break;
    case SN_MSG_DELTAS:
        assert_int_equal(a->u.deltas.n, b->u.deltas.n);
        assert_entries_equal(a->u.deltas.entries, b->u.deltas.entries, a->u.deltas.n);
        break;
    }
}

static uint8_t *encode(const sn_msg_t *m, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(sn_msg_encode(m, &buf, len), 0);
    assert_non_null(buf);
    return buf;
}

/* Encodes, decodes into a block that must be the decoder's only
 * allocation, compares, re-encodes and compares bytes. The input buffer is
 * freed before the decoded message is read, to prove it owns its memory.
 * Returns the encoded length. */
static size_t round_trip(const sn_msg_t *m)
{
    size_t len;
    uint8_t *buf = encode(m, &len);
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    sn_msg_decoded_t d;
    malloc_reset();
    assert_int_equal(sn_msg_decode(buf, len, &d), 0);
    assert_true(malloc_calls <= 1);
    assert_true(malloc_largest <= len + 2 + (size_t) SN_MSG_ITEMS_MAX * sizeof(sn_msg_blob_t) +
                                      SN_VV_MAX * 16);
    memset(buf, 0xee, len);
    free(buf);
    assert_msg_equal(m, &d.msg);
    size_t again_len;
    uint8_t *again = encode(&d.msg, &again_len);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, copy, len);
    free(again);
    free(copy);
    sn_msg_release(&d);
    assert_null(d.mem);
    sn_msg_release(&d);  /* twice is harmless */
    return len;
}

/* Any outcome but a crash is acceptable for arbitrary input, as long as a
 * failure is SN_EPROTO with nothing allocated and a success re-encodes to
 * the input. Returns 1 if it decoded. */
static int check_any_input(const uint8_t *buf, size_t len)
{
    sn_msg_decoded_t d;
    int rc = sn_msg_decode(buf, len, &d);
    assert_true(rc == 0 || rc == SN_EPROTO);
    if (rc != 0) {
        assert_null(d.mem);
        assert_int_equal(d.msg.type, 0);
        return 0;
    }
    size_t again_len;
    uint8_t *again = encode(&d.msg, &again_len);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, buf, len);
    free(again);
    sn_msg_release(&d);
    return 1;
}

static void assert_rejected(const void *buf, size_t len, int expected)
{
    sn_msg_decoded_t d;
    malloc_reset();
    assert_int_equal(sn_msg_decode(buf, len, &d), expected);
    /* nothing is allocated for a frame that turns out bad */
    assert_int_equal(malloc_calls, 0);
    assert_null(d.mem);
    assert_int_equal(d.msg.type, 0);
    assert_true(d.msg.sender == 0);
    sn_msg_release(&d);  /* safe after a failure */
}

static void assert_encode_refused(const sn_msg_t *m, int expected)
{
    uint8_t sentinel;
    uint8_t *out = &sentinel;
    size_t out_len = 77;
    assert_int_equal(sn_msg_encode(m, &out, &out_len), expected);
    assert_ptr_equal(out, &sentinel);
    assert_int_equal(out_len, 77);
}

/* ------------------------------------------------------ sample messages */

static sn_dot_t sample_dots[] = {{1, 42}, {2, 300}, {UINT64_MAX, UINT64_MAX}};
static const uint8_t body_a[] = {0x97, 0xc4, 0x01, 's', 0x90, 0x90, 0x00, 0xc0, 0x90, 0x90};
static const uint8_t body_b[] = {0x01, 0x02, 0x03};
static sn_msg_entry_t sample_entries[] = {
    {40, 0, body_a, sizeof body_a},
    {41, SN_MSG_F_ACK, body_b, sizeof body_b},
};
static sn_msg_entry_t sample_deltas[] = {
    {40, 0, body_a, sizeof body_a},
    {41, SN_MSG_F_ACK, body_b, sizeof body_b},
    {42, 0, body_a, sizeof body_a},
};
static sn_msg_blob_t sample_states[] = {
    {body_a, sizeof body_a, 0, {0, NULL}},
    {body_b, sizeof body_b, 0, {0, NULL}},
};
static sn_msg_blob_t sample_addrs[] = {
    {(const uint8_t *) "tcp://10.0.0.1:7400", 19, 0, {0, NULL}},
    {(const uint8_t *) "tcp://web-2.example:7400", 23, 0, {0, NULL}},
};
static const uint8_t sample_key[SN_MSG_KEY_MAX] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                   14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                                                   25, 26, 27, 28, 29, 30, 31, 32};
/* one member with a CURVE key, one without (an unsecured bus) */
static sn_msg_blob_t sample_keys[] = {
    {sample_key, sizeof sample_key, 0, {0, NULL}},
    {NULL, 0, 0, {0, NULL}},
};
static sn_msg_blob_t sample_ids[] = {
    {(const uint8_t *) "s", 1, UINT64_C(0x0123456789abcdef), {1, sample_dots}},
    {(const uint8_t *) "session-2", 9, 0, {0, NULL}},
    {(const uint8_t *) "t", 1, UINT64_MAX, {3, sample_dots}},
};

/* One ordinary message of each type, with its arrays non-empty. */
static sn_msg_t sample(sn_msg_type_t type)
{
    sn_msg_t m = {.type = type, .sender = 7};
    switch (type) {
    case SN_MSG_DELTA:
        m.u.delta.pseq = 42;
        m.u.delta.flags = SN_MSG_F_ACK;
        m.u.delta.body = body_a;
        m.u.delta.body_len = sizeof body_a;
        break;
    case SN_MSG_HEARTBEAT:
        m.u.heartbeat.incarnation = 1700000000123;
        m.u.heartbeat.last_pseq = 300;
        m.u.heartbeat.dots_done = 128;
        m.u.heartbeat.endpoint = (const uint8_t *) "tcp://10.0.0.2:7401";
        m.u.heartbeat.endpoint_len = 19;
        m.u.heartbeat.name = (const uint8_t *) "node-2";
        m.u.heartbeat.name_len = 6;
        m.u.heartbeat.applied = (sn_vv_t) {3, sample_dots};
        m.u.heartbeat.sessions = 12345;
        break;
    case SN_MSG_LEAVE:
        break;
    case SN_MSG_CONTROL:
        m.u.control.command = (const uint8_t *) "session";
        m.u.control.command_len = 7;
        m.u.control.arg = (const uint8_t *) "sess:42";
        m.u.control.arg_len = 7;
        break;
    case SN_MSG_CONTROL_REP:
        m.u.control_rep.status = (uint32_t) -SN_ENOTFOUND;
        m.u.control_rep.body = body_a;
        m.u.control_rep.body_len = sizeof body_a;
        break;
    case SN_MSG_REPAIR_REQ:
        m.u.repair_req.origin = 1;
        m.u.repair_req.from_pseq = 40;
        m.u.repair_req.to_pseq = 41;
        break;
    case SN_MSG_REPAIR_REP:
        m.u.repair_rep.origin = 1;
        m.u.repair_rep.status = SN_MSG_REPAIR_OK;
        m.u.repair_rep.n = 2;
        m.u.repair_rep.entries = sample_entries;
        break;
    case SN_MSG_SNAP_REQ:
    case SN_MSG_SNAP_CREDIT:
        m.u.snap_req.snap_id = 77;
        m.u.snap_req.credit = 8;
        break;
    case SN_MSG_SNAP_CHUNK:
        m.u.snap_chunk.snap_id = 77;
        m.u.snap_chunk.chunk = 3;
        m.u.snap_chunk.last = true;
        m.u.snap_chunk.cut = (sn_vv_t) {2, sample_dots};
        m.u.snap_chunk.n = 2;
        m.u.snap_chunk.states = sample_states;
        m.u.snap_chunk.sessions = 100000;
        break;
    case SN_MSG_DIGEST_REQ:
        m.u.digest_req.cursor = 4096;
        m.u.digest_req.max = 1000;
        break;
    case SN_MSG_DIGEST_REP:
        m.u.digest_rep.next_cursor = 8192;
        m.u.digest_rep.done = false;
        m.u.digest_rep.n = 3;
        m.u.digest_rep.entries = sample_ids;
        break;
    case SN_MSG_FETCH_REQ:
        m.u.fetch_req.n = 3;
        m.u.fetch_req.ids = sample_ids;
        break;
    case SN_MSG_FETCH_REP:
        m.u.fetch_rep.n = 2;
        m.u.fetch_rep.states = sample_states;
        break;
    case SN_MSG_MEMBERS:
        m.u.members.n = 2;
        m.u.members.addrs = sample_addrs;
        m.u.members.nkeys = 2;
        m.u.members.keys = sample_keys;
        break;
    case SN_MSG_ACK:
        m.u.ack.origin = 1;
        m.u.ack.pseq = 42;
        m.u.ack.status = (uint32_t) -SN_EFULL;  /* a refusal */
        break;
    case SN_MSG_DELTAS:
        m.u.deltas.n = 3;
        m.u.deltas.entries = sample_deltas;
        break;
    }
    return m;
}

/* ids in sample_ids carry digests and vectors; elsewhere those are not
 * encoded, so round trips compare them as empty (assert_blobs_equal knows). */

/* --------------------------------------------------------- round trips */

static void test_every_type_round_trips(void **unused)
{
    (void) unused;
    for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++) {
        sn_msg_t m = sample((sn_msg_type_t) t);
        round_trip(&m);
    }
}

static void test_empty_lists_and_strings_round_trip(void **unused)
{
    (void) unused;
    sn_msg_t m = sample(SN_MSG_HEARTBEAT);
    m.u.heartbeat.endpoint = NULL;
    m.u.heartbeat.endpoint_len = 0;
    m.u.heartbeat.name = NULL;
    m.u.heartbeat.name_len = 0;
    m.u.heartbeat.applied = (sn_vv_t) {0, NULL};
    round_trip(&m);

    m = sample(SN_MSG_REPAIR_REP);
    m.u.repair_rep.n = 0;
    m.u.repair_rep.entries = NULL;
    round_trip(&m);
    m.u.repair_rep.status = SN_MSG_REPAIR_TOO_OLD;
    round_trip(&m);

    m = sample(SN_MSG_SNAP_CHUNK);
    m.u.snap_chunk.last = false;
    m.u.snap_chunk.cut = (sn_vv_t) {0, NULL};
    round_trip(&m);
    m.u.snap_chunk.n = 0;
    m.u.snap_chunk.states = NULL;
    round_trip(&m);

    m = sample(SN_MSG_DIGEST_REP);
    m.u.digest_rep.done = true;
    m.u.digest_rep.n = 0;
    m.u.digest_rep.entries = NULL;
    round_trip(&m);

    m = sample(SN_MSG_FETCH_REQ);
    m.u.fetch_req.n = 0;
    m.u.fetch_req.ids = NULL;
    round_trip(&m);
    m = sample(SN_MSG_FETCH_REP);
    m.u.fetch_rep.n = 0;
    m.u.fetch_rep.states = NULL;
    round_trip(&m);
}

static void test_edge_integer_values_round_trip(void **unused)
{
    (void) unused;
    static const uint64_t values[] = {0, 1, 127, 128, 255, 256, 65535, 65536,
                                      UINT32_MAX, UINT64_C(1) << 32, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        uint64_t v = values[i];
        uint32_t v32 = v > UINT32_MAX ? UINT32_MAX : (uint32_t) v;
        for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++) {
            sn_msg_t m = sample((sn_msg_type_t) t);
            m.sender = v;
            switch (m.type) {
            case SN_MSG_DELTA:
                m.u.delta.pseq = v;
                m.u.delta.flags = v32;
                break;
            case SN_MSG_HEARTBEAT:
                m.u.heartbeat.incarnation = m.u.heartbeat.last_pseq = m.u.heartbeat.dots_done = v;
                m.u.heartbeat.sessions = v;
                break;
            case SN_MSG_LEAVE:
            case SN_MSG_CONTROL:
                break;
            case SN_MSG_CONTROL_REP:
                m.u.control_rep.status = v32;
                break;
            case SN_MSG_REPAIR_REQ:
                m.u.repair_req.origin = m.u.repair_req.from_pseq = m.u.repair_req.to_pseq = v;
                break;
            case SN_MSG_REPAIR_REP:
                m.u.repair_rep.origin = v;
                sample_entries[0].pseq = v;
                sample_entries[1].flags = v32;
                break;
            case SN_MSG_SNAP_REQ:
            case SN_MSG_SNAP_CREDIT:
                m.u.snap_req.snap_id = v;
                m.u.snap_req.credit = v32;
                break;
            case SN_MSG_SNAP_CHUNK:
                m.u.snap_chunk.snap_id = m.u.snap_chunk.chunk = v;
                break;
            case SN_MSG_DIGEST_REQ:
                m.u.digest_req.cursor = v;
                m.u.digest_req.max = v32;
                break;
            case SN_MSG_DIGEST_REP:
                m.u.digest_rep.next_cursor = v;
                sample_ids[1].digest = v;
                break;
            case SN_MSG_FETCH_REQ:
            case SN_MSG_FETCH_REP:
            case SN_MSG_MEMBERS:
                break;
            case SN_MSG_ACK:
                m.u.ack.origin = m.u.ack.pseq = v;
                m.u.ack.status = (uint32_t) v;
                break;
            case SN_MSG_DELTAS:
                if (v >= 1 && v <= UINT64_MAX - 3)  /* consecutive from v */
                    for (uint64_t k = 0; k < 3; k++)
                        sample_deltas[k].pseq = v + k;
                sample_deltas[2].flags = v32;
                break;
            }
            round_trip(&m);
        }
    }
    for (uint64_t k = 0; k < 3; k++)
        sample_deltas[k].pseq = 40 + k;
    sample_deltas[2].flags = 0;
    sample_entries[0].pseq = 40;
    sample_entries[1].flags = SN_MSG_F_ACK;
    sample_ids[1].digest = 0;
}

static void test_limits_round_trip(void **unused)
{
    (void) unused;
    /* strings at 255 bytes (str8) and at 31/32, the fixstr/str8 boundary */
    uint8_t text[SN_MSG_STR_MAX];
    memset(text, 'e', sizeof text);
    sn_msg_t m = sample(SN_MSG_HEARTBEAT);
    static const uint32_t str_lens[] = {31, 32, SN_MSG_STR_MAX};
    for (size_t i = 0; i < 3; i++) {
        m.u.heartbeat.endpoint = text;
        m.u.heartbeat.endpoint_len = str_lens[i];
        m.u.heartbeat.name = text;
        m.u.heartbeat.name_len = SN_MSG_STR_MAX - str_lens[i];
        round_trip(&m);
    }

    /* vectors at SN_VV_MAX entries */
    sn_dot_t *dots = calloc(SN_VV_MAX, sizeof *dots);
    assert_non_null(dots);
    for (uint32_t i = 0; i < SN_VV_MAX; i++)
        dots[i] = (sn_dot_t) {UINT64_MAX - SN_VV_MAX + i, UINT64_MAX - i};
    m.u.heartbeat.applied = (sn_vv_t) {SN_VV_MAX, dots};
    round_trip(&m);
    m = sample(SN_MSG_SNAP_CHUNK);
    m.u.snap_chunk.cut = (sn_vv_t) {SN_VV_MAX, dots};
    round_trip(&m);

    /* SN_MSG_ITEMS_MAX items of each list kind (an array32 header) */
    uint8_t id[SN_ID_MAX];
    memset(id, 'i', sizeof id);
    sn_msg_blob_t *blobs = calloc(SN_MSG_ITEMS_MAX, sizeof *blobs);
    sn_msg_entry_t *entries = calloc(SN_MSG_ITEMS_MAX, sizeof *entries);
    assert_non_null(blobs);
    assert_non_null(entries);
    for (uint32_t i = 0; i < SN_MSG_ITEMS_MAX; i++) {
        blobs[i] = (sn_msg_blob_t) {id, i % 7 ? 1 + i % SN_ID_MAX : SN_ID_MAX, (uint64_t) i * 7919,
                                    {0, NULL}};
        entries[i] = (sn_msg_entry_t) {UINT64_MAX - i, i, id, 1 + i % 5};
    }
    m = sample(SN_MSG_REPAIR_REP);
    m.u.repair_rep.n = SN_MSG_ITEMS_MAX;
    m.u.repair_rep.entries = entries;
    round_trip(&m);
    m = sample(SN_MSG_DIGEST_REP);
    m.u.digest_rep.n = SN_MSG_ITEMS_MAX;
    m.u.digest_rep.entries = blobs;
    round_trip(&m);
    m = sample(SN_MSG_FETCH_REQ);
    m.u.fetch_req.n = SN_MSG_ITEMS_MAX;
    m.u.fetch_req.ids = blobs;
    round_trip(&m);
    m = sample(SN_MSG_FETCH_REP);
    m.u.fetch_rep.n = SN_MSG_ITEMS_MAX;
    m.u.fetch_rep.states = blobs;
    round_trip(&m);
    m = sample(SN_MSG_SNAP_CHUNK);
    m.u.snap_chunk.n = SN_MSG_ITEMS_MAX;
    m.u.snap_chunk.states = blobs;
    round_trip(&m);

    /* one item over the limit is refused (the decoder side is in
     * test_hostile_headers_are_eproto_fast) */
    m.u.snap_chunk.n = SN_MSG_ITEMS_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);

    /* a body of exactly SN_WIRE_FRAME_MAX bytes (bin32) */
    uint8_t *big = calloc(1, SN_WIRE_FRAME_MAX);
    assert_non_null(big);
    m = sample(SN_MSG_DELTA);
    m.u.delta.body = big;
    m.u.delta.body_len = SN_WIRE_FRAME_MAX;
    round_trip(&m);
    m.u.delta.body_len = SN_WIRE_FRAME_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);
    free(big);
    free(entries);
    free(blobs);
    free(dots);
}

static void test_decoded_bodies_are_sn_wire_messages(void **unused)
{
    (void) unused;
    sn_dot_t ctx[] = {{1, 4}};
    sn_attr_t attr = {(const uint8_t *) "a", 1, (const uint8_t *) "v", 1, 0, 1000u << 16, 1,
                      false};
    sn_delta_t delta = {.kind = SN_DELTA_WRITE, .id = (const uint8_t *) "s", .id_len = 1,
                        .dot = {1, 5},
                        .st = {.vv = {1, ctx}, .last_access_ms = 1000, .nattrs = 1,
                               .attrs = &attr}};
    uint8_t *body;
    size_t body_len;
    assert_int_equal(sn_wire_encode_delta(&delta, &body, &body_len), 0);
    sn_msg_t m = sample(SN_MSG_DELTA);
    m.u.delta.body = body;
    m.u.delta.body_len = (uint32_t) body_len;
    size_t len;
    uint8_t *frame = encode(&m, &len);
    free(body);
    sn_msg_decoded_t d;
    assert_int_equal(sn_msg_decode(frame, len, &d), 0);
    free(frame);
    sn_wire_delta_t w;
    assert_int_equal(sn_wire_decode_delta(d.msg.u.delta.body, d.msg.u.delta.body_len, &w), 0);
    assert_int_equal(w.delta.kind, SN_DELTA_WRITE);
    assert_true(w.delta.dot.counter == 5);
    assert_int_equal(w.delta.st.nattrs, 1);
    assert_memory_equal(w.delta.st.attrs[0].value, "v", 1);
    sn_wire_delta_release(&w);
    sn_msg_release(&d);
}

/* ------------------------------------------------------------- format */

/* The example in docs/PROTOCOL.md, "Frames", byte for byte. */
static const uint8_t reference_ack[] = {
    0x96,                         /* array of 6 */
    0x01,                         /* version 1 */
    0x0c,                         /* type 12: ack */
    0xcd, 0x01, 0x2c,             /* sender 300 */
    0x01,                         /* origin 1 */
    0xcc, 0xc8,                   /* pseq 200 */
    0x00,                         /* status 0: applied */
};

static const uint8_t reference_heartbeat[] = {
    0x9a, 0x01, 0x02, 0x02,       /* array of 10, version 1, heartbeat, sender 2 */
    0x05, 0x2a, 0x29,             /* incarnation 5, last_pseq 42, dots_done 41 */
    0xa3, 't', 'c', 'p',          /* endpoint "tcp" */
    0xa1, 'b',                    /* name "b" */
    0x92, 0x01, 0x28,             /* applied: {1: 40} */
    0x07,                         /* sessions 7 */
};

static void test_reference_frames_have_the_documented_bytes(void **unused)
{
    (void) unused;
    sn_msg_t m = {.type = SN_MSG_ACK, .sender = 300, .u.ack = {1, 200, 0}};
    size_t len;
    uint8_t *buf = encode(&m, &len);
    assert_int_equal(len, sizeof reference_ack);
    assert_memory_equal(buf, reference_ack, len);
    free(buf);

    sn_dot_t applied[] = {{1, 40}};
    m = (sn_msg_t) {.type = SN_MSG_HEARTBEAT, .sender = 2};
    m.u.heartbeat.incarnation = 5;
    m.u.heartbeat.last_pseq = 42;
    m.u.heartbeat.dots_done = 41;
    m.u.heartbeat.endpoint = (const uint8_t *) "tcp";
    m.u.heartbeat.endpoint_len = 3;
    m.u.heartbeat.name = (const uint8_t *) "b";
    m.u.heartbeat.name_len = 1;
    m.u.heartbeat.applied = (sn_vv_t) {1, applied};
    m.u.heartbeat.sessions = 7;
    buf = encode(&m, &len);
    assert_int_equal(len, sizeof reference_heartbeat);
    assert_memory_equal(buf, reference_heartbeat, len);
    free(buf);
    assert_int_equal(check_any_input(reference_ack, sizeof reference_ack), 1);
    assert_int_equal(check_any_input(reference_heartbeat, sizeof reference_heartbeat), 1);
}

static void test_fixed_size_frames_allocate_nothing(void **unused)
{
    (void) unused;
    static const sn_msg_type_t fixed[] = {SN_MSG_REPAIR_REQ, SN_MSG_SNAP_REQ, SN_MSG_SNAP_CREDIT,
                                          SN_MSG_DIGEST_REQ, SN_MSG_ACK};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        sn_msg_t m = sample(fixed[i]);
        size_t len;
        uint8_t *buf = encode(&m, &len);
        sn_msg_decoded_t d;
        malloc_reset();
        assert_int_equal(sn_msg_decode(buf, len, &d), 0);
        assert_int_equal(malloc_calls, 0);
        assert_null(d.mem);
        sn_msg_release(&d);
        free(buf);
    }
}

static void test_non_shortest_encodings_are_eproto(void **unused)
{
    (void) unused;
    static const struct {
        uint8_t bytes[16];
        size_t n;
    } cases[] = {
        {{0x95, 0xcc, 0x01, 0x0c, 0x01, 0x01, 0x01}, 7},              /* version as uint8 */
        {{0x95, 0x01, 0xcc, 0x0c, 0x01, 0x01, 0x01}, 7},              /* type as uint8 */
        {{0x95, 0x01, 0x0c, 0xcd, 0x00, 0xff, 0x01, 0x01}, 8},        /* sender 255 as uint16 */
        {{0x95, 0x01, 0x0c, 0x01, 0xce, 0x00, 0x00, 0xff, 0xff, 0x01}, 10}, /* uint32 < 2^16 */
        {{0x95, 0x01, 0x0c, 0x01, 0x01, 0xcf, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 14},
        {{0xdc, 0x00, 0x05, 0x01, 0x0c, 0x01, 0x01, 0x01}, 8},        /* array16 of 5 */
        {{0x96, 0x01, 0x01, 0x01, 0x01, 0x00, 0xc5, 0x00, 0x01, 0xaa}, 10}, /* bin16 body */
        {{0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xd9, 0x01, 'x', 0xa0, 0x90}, 12}, /* str8 */
        {{0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xa0, 0xa0, 0xdc, 0x00, 0x00}, 12}, /* vv a16 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_rejected(cases[i].bytes, cases[i].n, SN_EPROTO);
}

/* ------------------------------------------------------ hostile input */

/* Every sample frame, with the callback run on its bytes. */
static void for_each_sample(void (*fn)(const uint8_t *buf, size_t len))
{
    for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++) {
        sn_msg_t m = sample((sn_msg_type_t) t);
        size_t len;
        uint8_t *buf = encode(&m, &len);
        fn(buf, len);
        free(buf);
    }
}

static void every_truncation(const uint8_t *buf, size_t len)
{
    for (size_t n = 0; n < len; n++) {
        /* a fresh allocation of exactly n bytes lets ASan see any overread */
        uint8_t *cut = malloc(n ? n : 1);
        assert_non_null(cut);
        memcpy(cut, buf, n);
        assert_rejected(cut, n, SN_EPROTO);
        free(cut);
    }
}

static void test_every_truncation_is_eproto(void **unused)
{
    (void) unused;
    for_each_sample(every_truncation);
    assert_rejected(NULL, 0, SN_EPROTO);
}

static void trailing_bytes(const uint8_t *buf, size_t len)
{
    static const uint8_t tails[] = {0x00, 0xc0, 0x90, 0x7f};
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    for (size_t i = 0; i < sizeof tails; i++) {
        longer[len] = tails[i];
        assert_rejected(longer, len + 1, SN_EPROTO);
    }
    free(longer);
}

static void test_trailing_bytes_are_eproto(void **unused)
{
    (void) unused;
    for_each_sample(trailing_bytes);
}

static int corruptions_decoded;

static void every_corruption(const uint8_t *buf, size_t len)
{
    static const uint8_t values[] = {0x00, 0x01, 0x7f, 0x80, 0x90, 0x9f, 0xa0, 0xc0, 0xc2,
                                     0xc3, 0xc4, 0xc6, 0xcc, 0xcf, 0xd9, 0xdb, 0xdc, 0xdd,
                                     0xdf, 0xff};
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    for (size_t at = 0; at < len; at++) {
        for (size_t v = 0; v < sizeof values + 8; v++) {
            memcpy(copy, buf, len);
            copy[at] = v < sizeof values ? values[v] : (uint8_t) (buf[at] ^ (1u << (v - sizeof values)));
            corruptions_decoded += check_any_input(copy, len);
        }
    }
    free(copy);
}

static void test_every_single_byte_corruption_is_handled(void **unused)
{
    (void) unused;
    corruptions_decoded = 0;
    for_each_sample(every_corruption);
    /* many corruptions land in payload bytes and still decode */
    print_message("%d corrupted frames decoded and re-encoded exactly\n", corruptions_decoded);
    assert_true(corruptions_decoded > 0);
}

static void test_hostile_headers_are_eproto_fast(void **unused)
{
    (void) unused;
    static const struct {
        uint8_t bytes[24];
        size_t n;
    } cases[] = {
        {{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x0c}, 7},              /* top array32 */
        {{0xdf, 0xff, 0xff, 0xff, 0xff}, 5},                          /* top map32 */
        {{0xdc, 0xff, 0xff, 0x01}, 4},                                /* top array16 */
        {{0x96, 0x01, 0x01, 0x01, 0x01, 0x00, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, 12},
        {{0x96, 0x01, 0x01, 0x01, 0x01, 0x00, 0xc6, 0x00, 0x00, 0x01, 0x00, 0x00}, 12},
        {{0x96, 0x01, 0x04, 0x01, 0x01, 0x00, 0xdd, 0x7f, 0xff, 0xff, 0xff}, 11}, /* entries */
        {{0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xa0, 0xa0,
          0xdd, 0x7f, 0xff, 0xff, 0xfe}, 14},                         /* applied vv */
        {{0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff}, 12}, /* str32 */
        {{0x98, 0x01, 0x07, 0x01, 0x01, 0x01, 0xc3, 0x90,
          0xdd, 0xff, 0xff, 0xff, 0xff}, 13},                         /* chunk states */
        {{0x96, 0x01, 0x09, 0x01, 0x01, 0xc2, 0xdd, 0x00, 0x10, 0x00, 0x00}, 11}, /* digests */
        {{0x94, 0x01, 0x0a, 0x01, 0xdd, 0x00, 0x01, 0x00, 0x01, 0xc4, 0x01, 'x'}, 12},
        {{0x94, 0x01, 0x0b, 0x01, 0x91, 0xc6, 0x7f, 0xff, 0xff, 0xff}, 10}, /* state bin32 */
        {{0xc7, 0xff, 0x01}, 3},                                      /* ext8 */
        {{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, 6},                    /* ext32 */
    };
    clock_t start = clock();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_rejected(cases[i].bytes, cases[i].n, SN_EPROTO);

    /* a megabyte of nested array headers, then of map32s */
    size_t deep_len = 1u << 20;
    uint8_t *deep = malloc(deep_len);
    assert_non_null(deep);
    memset(deep, 0x91, deep_len);
    assert_rejected(deep, deep_len, SN_EPROTO);
    memset(deep, 0xdf, deep_len);
    assert_rejected(deep, deep_len, SN_EPROTO);

    /* lists that declare more items than SN_MSG_ITEMS_MAX, with the bytes
     * for them present, and a vector over SN_VV_MAX */
    static const uint8_t ids_head[] = {0x94, 0x01, 0x0a, 0x01, 0xdd, 0x00, 0x01, 0x00, 0x01};
    memset(deep, 0, deep_len);
    memcpy(deep, ids_head, sizeof ids_head);
    for (size_t i = sizeof ids_head; i + 3 <= deep_len; i += 3)
        memcpy(deep + i, (const uint8_t[]) {0xc4, 0x01, 'x'}, 3);
    size_t ids_len = sizeof ids_head + (size_t) (SN_MSG_ITEMS_MAX + 1) * 3;
    assert_int_equal(check_any_input(deep, ids_len), 0);
    assert_rejected(deep, ids_len, SN_EPROTO);
    static const uint8_t vv_head[] = {0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xa0, 0xa0,
                                      0xdc, 0x08, 0x02};  /* 2050 = 2 * (SN_VV_MAX + 1) */
    memset(deep, 0x01, deep_len);
    memcpy(deep, vv_head, sizeof vv_head);
    assert_rejected(deep, sizeof vv_head + 2050, SN_EPROTO);
    free(deep);

    double t = elapsed_s(start);
    print_message("hostile headers rejected in %.3f s\n", t);
    assert_true(t < 2.0);
}

static void test_frame_over_the_limit_is_etoobig(void **unused)
{
    (void) unused;
    sn_msg_t m = sample(SN_MSG_ACK);
    size_t len;
    uint8_t *buf = encode(&m, &len);
    /* the size is checked before a byte is read */
    assert_rejected(buf, (size_t) SN_MSG_FRAME_MAX + 1, SN_ETOOBIG);
    assert_rejected(buf, SIZE_MAX, SN_ETOOBIG);
    free(buf);

    /* states whose bytes alone exceed the frame are refused before packing */
    size_t third = SN_MSG_FRAME_MAX / 3 + 1;
    uint8_t *state = calloc(1, SN_WIRE_FRAME_MAX);
    assert_non_null(state);
    sn_msg_blob_t three[3] = {{state, (uint32_t) third, 0, {0, NULL}},
                              {state, (uint32_t) third, 0, {0, NULL}},
                              {state, (uint32_t) third, 0, {0, NULL}}};
    m = (sn_msg_t) {.type = SN_MSG_FETCH_REP, .u.fetch_rep = {3, three}};
    malloc_reset();
    assert_encode_refused(&m, SN_ETOOBIG);
    /* two maximum states fill the frame exactly; their headers push it over */
    sn_msg_blob_t two[2] = {{state, SN_WIRE_FRAME_MAX, 0, {0, NULL}},
                            {state, SN_WIRE_FRAME_MAX, 0, {0, NULL}}};
    m.u.fetch_rep.n = 2;
    m.u.fetch_rep.states = two;
    assert_encode_refused(&m, SN_ETOOBIG);
    /* just under the limit encodes and decodes */
    two[1].len = SN_WIRE_FRAME_MAX - 64;
    len = round_trip(&m);
    assert_true(len <= SN_MSG_FRAME_MAX);
    assert_true(len > SN_MSG_FRAME_MAX - 80);
    free(state);
}

static void test_wrong_version_type_and_field_count_are_eproto(void **unused)
{
    (void) unused;
    sn_msg_t m = sample(SN_MSG_ACK);
    size_t len;
    uint8_t *buf = encode(&m, &len);
    static const uint8_t versions[] = {0x00, 0x02, 0x7f, 0xc0, 0xc3, 0xff, 0xa1};
    static const uint8_t types[] = {0x00, 0x0e, 0x7f, 0xc0, 0xff, 0xa1};
    for (size_t i = 0; i < sizeof versions; i++) {
        buf[1] = versions[i];
        assert_rejected(buf, len, SN_EPROTO);
    }
    buf[1] = SN_MSG_VERSION;
    for (size_t i = 0; i < sizeof types; i++) {
        buf[2] = types[i];
        assert_rejected(buf, len, SN_EPROTO);
    }
    free(buf);

    /* a version too large for a uint8 and a type too large */
    static const uint8_t big_version[] = {0x95, 0xcf, 1, 0, 0, 0, 0, 0, 0, 1, 0x0c, 1, 1, 1};
    assert_rejected(big_version, sizeof big_version, SN_EPROTO);
    static const uint8_t big_type[] = {0x95, 0x01, 0xcd, 0x01, 0x0c, 1, 1, 1};
    assert_rejected(big_type, sizeof big_type, SN_EPROTO);

    /* every type's fields under every other type's number */
    for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++) {
        sn_msg_t s = sample((sn_msg_type_t) t);
        buf = encode(&s, &len);
        for (int other = SN_MSG_DELTA; other <= LAST_TYPE; other++) {
            buf[2] = (uint8_t) other;
            if (other != t)
                check_any_input(buf, len);
        }
        buf[2] = (uint8_t) t;
        /* one element more or fewer than the type has */
        uint8_t head = buf[0];
        buf[0] = (uint8_t) (head + 1);
        assert_rejected(buf, len, SN_EPROTO);
        buf[0] = (uint8_t) (head - 1);
        assert_rejected(buf, len, SN_EPROTO);
        free(buf);
    }
    /* snap_req and snap_credit share a layout: only the number differs */
    sn_msg_t s = sample(SN_MSG_SNAP_REQ);
    buf = encode(&s, &len);
    buf[2] = SN_MSG_SNAP_CREDIT;
    assert_int_equal(check_any_input(buf, len), 1);
    free(buf);
}

static void test_field_rules_are_enforced_both_ways(void **unused)
{
    (void) unused;
    size_t len;
    uint8_t *buf;

    sn_msg_t m = sample(SN_MSG_REPAIR_REQ);
    m.u.repair_req.from_pseq = 42;
    m.u.repair_req.to_pseq = 41;
    assert_encode_refused(&m, SN_EINVAL);
    static const uint8_t from_above_to[] = {0x96, 0x01, 0x03, 0x01, 0x01, 0x2a, 0x29};
    assert_rejected(from_above_to, sizeof from_above_to, SN_EPROTO);

    m = sample(SN_MSG_REPAIR_REP);
    m.u.repair_rep.status = 2;
    assert_encode_refused(&m, SN_EINVAL);
    m.u.repair_rep.status = SN_MSG_REPAIR_TOO_OLD;
    assert_encode_refused(&m, SN_EINVAL);  /* TOO_OLD carries no entries */
    m.u.repair_rep.status = SN_MSG_REPAIR_OK;
    buf = encode(&m, &len);
    buf[5] = SN_MSG_REPAIR_TOO_OLD;
    assert_rejected(buf, len, SN_EPROTO);
    buf[5] = 2;
    assert_rejected(buf, len, SN_EPROTO);
    free(buf);

    m = sample(SN_MSG_SNAP_CHUNK);
    m.u.snap_chunk.last = false;
    assert_encode_refused(&m, SN_EINVAL);  /* a cut on a chunk that is not the last */
    m.u.snap_chunk.last = true;
    buf = encode(&m, &len);
    assert_int_equal(buf[6], 0xc3);
    buf[6] = 0xc2;
    assert_rejected(buf, len, SN_EPROTO);
    buf[6] = 0x01;                          /* a boolean must be one */
    assert_rejected(buf, len, SN_EPROTO);
    buf[6] = 0xc0;
    assert_rejected(buf, len, SN_EPROTO);
    free(buf);

    /* empty bodies, states and ids; ids over SN_ID_MAX */
    m = sample(SN_MSG_DELTA);
    m.u.delta.body_len = 0;
    assert_encode_refused(&m, SN_EINVAL);
    static const uint8_t empty_body[] = {0x96, 0x01, 0x01, 0x01, 0x01, 0x00, 0xc4, 0x00};
    assert_rejected(empty_body, sizeof empty_body, SN_EPROTO);
    uint8_t id[SN_ID_MAX + 1];
    memset(id, 'i', sizeof id);
    sn_msg_blob_t ids[] = {{id, SN_ID_MAX + 1, 0, {0, NULL}}};
    m = (sn_msg_t) {.type = SN_MSG_FETCH_REQ, .u.fetch_req = {1, ids}};
    assert_encode_refused(&m, SN_EINVAL);
    ids[0].len = 0;
    assert_encode_refused(&m, SN_EINVAL);
    m.type = SN_MSG_FETCH_REP;
    assert_encode_refused(&m, SN_EINVAL);
    m.type = SN_MSG_DIGEST_REP;
    m.u.digest_rep.next_cursor = 0;
    m.u.digest_rep.done = false;
    m.u.digest_rep.n = 1;
    m.u.digest_rep.entries = ids;
    assert_encode_refused(&m, SN_EINVAL);
    /* a 251-byte id, shortest form and all */
    uint8_t long_id[4 + 3 + SN_ID_MAX + 1] = {0x94, 0x01, 0x0a, 0x01, 0x91, 0xc4, SN_ID_MAX + 1};
    memset(long_id + 7, 'i', SN_ID_MAX + 1);
    assert_rejected(long_id, sizeof long_id, SN_EPROTO);
    long_id[6] = SN_ID_MAX;
    assert_rejected(long_id, sizeof long_id, SN_EPROTO);  /* now a byte trails */
    assert_int_equal(check_any_input(long_id, sizeof long_id - 1), 1);

    /* strings over SN_MSG_STR_MAX, or sent as bin */
    uint8_t text[SN_MSG_STR_MAX + 1];
    memset(text, 't', sizeof text);
    m = sample(SN_MSG_HEARTBEAT);
    m.u.heartbeat.name = text;
    m.u.heartbeat.name_len = SN_MSG_STR_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);
    m.u.heartbeat.name_len = 1;
    m.u.heartbeat.endpoint = text;
    m.u.heartbeat.endpoint_len = SN_MSG_STR_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);
    /* a member address over SN_MSG_STR_MAX, or empty */
    sn_msg_blob_t addr = {text, SN_MSG_STR_MAX + 1, 0, {0, NULL}};
    sn_msg_blob_t key = {text, 0, 0, {0, NULL}};
    m = sample(SN_MSG_MEMBERS);
    m.u.members.n = m.u.members.nkeys = 1;
    m.u.members.addrs = &addr;
    m.u.members.keys = &key;
    assert_encode_refused(&m, SN_EINVAL);
    addr.len = 0;
    assert_encode_refused(&m, SN_EINVAL);
    /* a key longer than a CURVE key, or a key list of another length */
    addr.len = 1;
    key.len = SN_MSG_KEY_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);
    key.len = 0;
    m.u.members.nkeys = 0;
    assert_encode_refused(&m, SN_EINVAL);
    static const uint8_t empty_addr[] = {0x95, 0x01, 0x11, 0x01, 0x91, 0xc4, 0x00, 0x91, 0xc4, 0x00};
    assert_rejected(empty_addr, sizeof empty_addr, SN_EPROTO);
    static const uint8_t keys_short[] = {0x95, 0x01, 0x11, 0x01, 0x91, 0xc4, 0x01, 'x', 0x90};
    assert_rejected(keys_short, sizeof keys_short, SN_EPROTO);
    static const uint8_t no_keys[] = {0x94, 0x01, 0x11, 0x01, 0x91, 0xc4, 0x01, 'x'};
    assert_rejected(no_keys, sizeof no_keys, SN_EPROTO);
    static const uint8_t one_addr[] = {0x95, 0x01, 0x11, 0x01, 0x91, 0xc4, 0x01, 'x', 0x91, 0xc4, 0x00};
    sn_msg_decoded_t dm;
    assert_int_equal(sn_msg_decode(one_addr, sizeof one_addr, &dm), 0);
    assert_int_equal(dm.msg.u.members.n, 1);
    assert_int_equal(dm.msg.u.members.nkeys, 1);
    assert_int_equal(dm.msg.u.members.keys[0].len, 0);
    sn_msg_release(&dm);
    uint8_t str16[7 + 3 + 256 + 2] = {0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xda, 0x01, 0x00};
    memset(str16 + 10, 'e', 256);
    str16[266] = 0xa0;
    str16[267] = 0x90;
    assert_rejected(str16, sizeof str16, SN_EPROTO);
    static const uint8_t endpoint_bin[] = {0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01,
                                           0xc4, 0x01, 'x', 0xa0, 0x90};
    assert_rejected(endpoint_bin, sizeof endpoint_bin, SN_EPROTO);
    static const uint8_t body_str[] = {0x96, 0x01, 0x01, 0x01, 0x01, 0x00, 0xa1, 'x'};
    assert_rejected(body_str, sizeof body_str, SN_EPROTO);

    /* 32-bit fields above 2^32 - 1 */
    static const uint8_t credit64[] = {0x95, 0x01, 0x05, 0x01, 0x01,
                                       0xcf, 0, 0, 0, 1, 0, 0, 0, 0};
    assert_rejected(credit64, sizeof credit64, SN_EPROTO);
    static const uint8_t flags64[] = {0x96, 0x01, 0x01, 0x01, 0x01,
                                      0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xc4, 0x01, 0x00};
    assert_rejected(flags64, sizeof flags64, SN_EPROTO);

    /* odd vectors, malformed records */
    static const uint8_t odd_vv[] = {0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xa0, 0xa0,
                                     0x93, 0x01, 0x02, 0x03};
    assert_rejected(odd_vv, sizeof odd_vv, SN_EPROTO);
    static const uint8_t short_entry[] = {0x96, 0x01, 0x04, 0x01, 0x01, 0x00,
                                          0x91, 0x92, 0x01, 0x00};
    assert_rejected(short_entry, sizeof short_entry, SN_EPROTO);
    static const uint8_t flat_digest[] = {0x96, 0x01, 0x09, 0x01, 0x01, 0xc2,
                                          0x92, 0xc4, 0x01, 's', 0x05};
    assert_rejected(flat_digest, sizeof flat_digest, SN_EPROTO);
    /* a digest record without its vector (the layout before vectors) */
    static const uint8_t no_vv[] = {0x96, 0x01, 0x09, 0x01, 0x01, 0xc2,
                                    0x91, 0x92, 0xc4, 0x01, 's', 0x05};
    assert_rejected(no_vv, sizeof no_vv, SN_EPROTO);
    static const uint8_t digest_odd_vv[] = {0x96, 0x01, 0x09, 0x01, 0x01, 0xc2,
                                            0x91, 0x93, 0xc4, 0x01, 's', 0x05, 0x91, 0x01};
    assert_rejected(digest_odd_vv, sizeof digest_odd_vv, SN_EPROTO);
    static const uint8_t digest_ok[] = {0x96, 0x01, 0x09, 0x01, 0x01, 0xc2,
                                        0x91, 0x93, 0xc4, 0x01, 's', 0x05, 0x92, 0x01, 0x02};
    assert_int_equal(check_any_input(digest_ok, sizeof digest_ok), 1);
    /* the encoder refuses what the decoder would */
    sn_msg_blob_t bad_vv[] = {{(const uint8_t *) "s", 1, 5, {1, NULL}}};
    m = (sn_msg_t) {.type = SN_MSG_DIGEST_REP, .u.digest_rep = {0, false, 1, bad_vv}};
    assert_encode_refused(&m, SN_EINVAL);
    bad_vv[0].vv = (sn_vv_t) {SN_VV_MAX + 1, sample_dots};
    assert_encode_refused(&m, SN_EINVAL);
    static const uint8_t negative[] = {0x95, 0x01, 0x0c, 0xff, 0x01, 0x01};
    assert_rejected(negative, sizeof negative, SN_EPROTO);

    /* deltas: at least one, publish sequences consecutive from 1 or more */
    m = sample(SN_MSG_DELTAS);
    m.u.deltas.n = 0;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_DELTAS);
    sample_deltas[1].pseq = 43;
    assert_encode_refused(&m, SN_EINVAL);
    sample_deltas[0].pseq = 0;
    sample_deltas[1].pseq = 1;
    sample_deltas[2].pseq = 2;
    assert_encode_refused(&m, SN_EINVAL);
    sample_deltas[0].pseq = UINT64_MAX - 1;
    sample_deltas[1].pseq = UINT64_MAX;
    sample_deltas[2].pseq = 0;  /* wrapped */
    assert_encode_refused(&m, SN_EINVAL);
    for (uint64_t k = 0; k < 3; k++)
        sample_deltas[k].pseq = 40 + k;
    static const uint8_t two_deltas[] = {0x94, 0x01, 0x0d, 0x01, 0x92,
                                         0x93, 0x05, 0x00, 0xc4, 0x01, 'x',
                                         0x93, 0x06, 0x00, 0xc4, 0x01, 'y'};
    assert_int_equal(check_any_input(two_deltas, sizeof two_deltas), 1);
    uint8_t gap[sizeof two_deltas];
    memcpy(gap, two_deltas, sizeof gap);
    gap[12] = 0x07;
    assert_rejected(gap, sizeof gap, SN_EPROTO);
    gap[12] = 0x05;  /* the same sequence twice */
    assert_rejected(gap, sizeof gap, SN_EPROTO);
    static const uint8_t no_deltas[] = {0x94, 0x01, 0x0d, 0x01, 0x90};
    assert_rejected(no_deltas, sizeof no_deltas, SN_EPROTO);
    static const uint8_t pseq_zero[] = {0x94, 0x01, 0x0d, 0x01, 0x91,
                                        0x93, 0x00, 0x00, 0xc4, 0x01, 'x'};
    assert_rejected(pseq_zero, sizeof pseq_zero, SN_EPROTO);
}

static void test_encoder_refuses_invalid_arguments(void **unused)
{
    (void) unused;
    sn_msg_t m = sample(SN_MSG_ACK);
    uint8_t *out;
    size_t len;
    assert_int_equal(sn_msg_encode(NULL, &out, &len), SN_EINVAL);
    assert_int_equal(sn_msg_encode(&m, NULL, &len), SN_EINVAL);
    assert_int_equal(sn_msg_encode(&m, &out, NULL), SN_EINVAL);
    m.type = (sn_msg_type_t) 0;
    assert_encode_refused(&m, SN_EINVAL);
    m.type = (sn_msg_type_t) (LAST_TYPE + 1);
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_DELTAS);
    m.u.deltas.entries = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_DELTAS);
    m.u.deltas.n = SN_MSG_ITEMS_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);

    m = sample(SN_MSG_DELTA);
    m.u.delta.body = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_HEARTBEAT);
    m.u.heartbeat.name = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_HEARTBEAT);
    m.u.heartbeat.applied.dots = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m.u.heartbeat.applied = (sn_vv_t) {SN_VV_MAX + 1, sample_dots};
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_REPAIR_REP);
    m.u.repair_rep.entries = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m.u.repair_rep.n = SN_MSG_ITEMS_MAX + 1;
    m.u.repair_rep.entries = sample_entries;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_SNAP_CHUNK);
    m.u.snap_chunk.states = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_DIGEST_REP);
    m.u.digest_rep.entries = NULL;
    assert_encode_refused(&m, SN_EINVAL);
    m = sample(SN_MSG_FETCH_REQ);
    m.u.fetch_req.n = SN_MSG_ITEMS_MAX + 1;
    assert_encode_refused(&m, SN_EINVAL);

    sn_msg_decoded_t d;
    assert_int_equal(sn_msg_decode(reference_ack, sizeof reference_ack, NULL), SN_EINVAL);
    assert_int_equal(sn_msg_decode(NULL, 5, &d), SN_EINVAL);
    assert_null(d.mem);
    sn_msg_release(NULL);
}

static void test_type_names(void **unused)
{
    (void) unused;
    static const char *const names[] = {"delta", "heartbeat", "repair_req", "repair_rep",
                                        "snap_req", "snap_credit", "snap_chunk", "digest_req",
                                        "digest_rep", "fetch_req", "fetch_rep", "ack", "deltas",
                                        "leave", "control", "control_rep", "members"};
    for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++)
        assert_string_equal(sn_msg_type_name(t), names[t - 1]);
    assert_string_equal(sn_msg_type_name(0), "unknown");
    assert_string_equal(sn_msg_type_name(LAST_TYPE + 1), "unknown");
    assert_string_equal(sn_msg_type_name(-1), "unknown");
}

static void test_random_mutation_fuzz(void **unused)
{
    (void) unused;
    uint64_t seed = test_seed((uint64_t) time(NULL) | 1);
    print_message("seed %llu (SN_TEST_SEED=%llu to replay)\n", (unsigned long long) seed,
                  (unsigned long long) seed);
    rng_state = seed;
    sn_msg_t samples[LAST_TYPE];
    uint8_t *frames[LAST_TYPE];
    size_t lens[LAST_TYPE];
    for (int t = SN_MSG_DELTA; t <= LAST_TYPE; t++) {
        samples[t - 1] = sample((sn_msg_type_t) t);
        frames[t - 1] = encode(&samples[t - 1], &lens[t - 1]);
    }
    uint8_t buf[512];
    int decoded = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t k = rng_next() % LAST_TYPE;
        size_t len = lens[k];
        assert_true(len + 8 <= sizeof buf);
        memcpy(buf, frames[k], len);
        int edits = 1 + (int) (rng_next() % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = rng_next();
            size_t at = (size_t) (r >> 8) % (len ? len : 1);
            switch (r % 4) {
            case 0: buf[at] = (uint8_t) (r >> 32); break;
            case 1: buf[at] ^= (uint8_t) (1u << ((r >> 40) % 8)); break;
            case 2:  /* delete a byte */
                if (len > 1) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 3:  /* insert a byte */
                if (len < sizeof buf - 1) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t) (r >> 48);
                    len++;
                }
                break;
            }
        }
        decoded += check_any_input(buf, len);
    }
    print_message("%d of 200000 mutated frames decoded and re-encoded exactly\n", decoded);
    for (int t = 0; t < LAST_TYPE; t++)
        free(frames[t]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_round_trips),
        cmocka_unit_test(test_empty_lists_and_strings_round_trip),
        cmocka_unit_test(test_edge_integer_values_round_trip),
        cmocka_unit_test(test_limits_round_trip),
        cmocka_unit_test(test_decoded_bodies_are_sn_wire_messages),
        cmocka_unit_test(test_reference_frames_have_the_documented_bytes),
        cmocka_unit_test(test_fixed_size_frames_allocate_nothing),
        cmocka_unit_test(test_non_shortest_encodings_are_eproto),
        cmocka_unit_test(test_every_truncation_is_eproto),
        cmocka_unit_test(test_trailing_bytes_are_eproto),
        cmocka_unit_test(test_every_single_byte_corruption_is_handled),
        cmocka_unit_test(test_hostile_headers_are_eproto_fast),
        cmocka_unit_test(test_frame_over_the_limit_is_etoobig),
        cmocka_unit_test(test_wrong_version_type_and_field_count_are_eproto),
        cmocka_unit_test(test_field_rules_are_enforced_both_ways),
        cmocka_unit_test(test_encoder_refuses_invalid_arguments),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_random_mutation_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
