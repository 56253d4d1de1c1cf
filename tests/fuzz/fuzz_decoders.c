/*
 * fuzz_decoders.c - one fuzz harness for every decoder of peer input.
 *
 * Each input is offered to sn_msg_decode(), sn_wire_decode_delta() and
 * sn_wire_decode_state() in turn. A crash, a sanitizer report or a leak is
 * a finding, and so is a broken property:
 *
 *   - anything that decodes re-encodes to exactly the input bytes (the
 *     codecs are canonical, so there is one encoding per message);
 *   - a decoded delta applied to, or a decoded state merged into, a fresh
 *     store (node id 99) returns, whatever it returns;
 *   - the delta and state bodies a frame carries go through the same checks,
 *     so the fuzzer reaches the store through frames as peers would.
 *
 * The same file is the libFuzzer target (-DSN_BUILD_FUZZERS=ON, clang) and,
 * linked with replay.c, the ctest `fuzz_replay` that runs every corpus file
 * with gcc. A broken property aborts with a line on stderr in both.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sn_msg.h"
#include "sn_store.h"
#include "sn_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A frame may carry up to SN_MSG_ITEMS_MAX bodies; checking a few keeps one
 * input's run short, and the fuzzer explores each body shape anyway. */
#define FUZZ_BODIES_MAX 8

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_decoders: property broken: %s\n", what);
    abort();
}

static void fuzz_same_bytes(const uint8_t *want, size_t want_len, int rc,
                            uint8_t *got, size_t got_len, const char *what)
{
    if (rc != 0)
        fuzz_fail(what);
    if (got_len != want_len || memcmp(got, want, want_len) != 0)
        fuzz_fail(what);
    free(got);
}

/* Fixed time, so that a replayed input behaves as it did when found. */
static uint64_t fuzz_clock(void *arg)
{
    (void) arg;
    return UINT64_C(1700000000000);
}

static sn_store_t *fuzz_store(void)
{
    sn_store_options_t o = {
        .node_id = 99,
        .shards = 1,
        .clock = fuzz_clock,
        .hash_seed = 1,
    };
    sn_store_t *s = sn_store_new(&o);
    if (!s)
        fuzz_fail("sn_store_new");
    return s;
}

static void fuzz_delta(const uint8_t *data, size_t size)
{
    sn_wire_delta_t d;
    if (sn_wire_decode_delta(data, size, &d) != 0)
        return;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = sn_wire_encode_delta(&d.delta, &out, &out_len);
    fuzz_same_bytes(data, size, rc, out, out_len, "delta re-encodes to its bytes");
    sn_store_t *s = fuzz_store();
    (void) sn_store_apply(s, &d.delta);
    /* Twice: the second is a duplicate or asks for the full state. */
    (void) sn_store_apply(s, &d.delta);
    sn_store_destroy(&s);
    sn_wire_delta_release(&d);
}

static void fuzz_state(const uint8_t *data, size_t size)
{
    sn_wire_state_t st;
    /* the view (what a joiner merges from) must agree with the copy */
    int viewed = sn_wire_view_state(data, size, &st);
    if (viewed == 0) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc = sn_wire_encode_state(st.id, st.id_len, &st.state, &out, &out_len);
        fuzz_same_bytes(data, size, rc, out, out_len, "viewed state re-encodes to its bytes");
    }
    sn_wire_state_release(&st);
    int decoded = sn_wire_decode_state(data, size, &st);
    if ((viewed == 0) != (decoded == 0))
        fuzz_fail("the view and the copying decode disagree");
    if (decoded != 0)
        return;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = sn_wire_encode_state(st.id, st.id_len, &st.state, &out, &out_len);
    fuzz_same_bytes(data, size, rc, out, out_len, "state re-encodes to its bytes");
    sn_store_t *s = fuzz_store();
    (void) sn_store_merge(s, st.id, st.id_len, &st.state);
    (void) sn_store_merge(s, st.id, st.id_len, &st.state);
    uint64_t digest;
    (void) sn_store_digest(s, st.id, st.id_len, &digest);
    sn_store_destroy(&s);
    sn_wire_state_release(&st);
}

static void fuzz_blobs(const sn_msg_blob_t *b, uint32_t n)
{
    for (uint32_t i = 0; i < n && i < FUZZ_BODIES_MAX; i++)
        fuzz_state(b[i].bytes, b[i].len);
}

static void fuzz_frame(const uint8_t *data, size_t size)
{
    sn_msg_decoded_t m;
    if (sn_msg_decode(data, size, &m) != 0)
        return;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = sn_msg_encode(&m.msg, &out, &out_len);
    fuzz_same_bytes(data, size, rc, out, out_len, "frame re-encodes to its bytes");
    if (strcmp(sn_msg_type_name(m.msg.type), "unknown") == 0)
        fuzz_fail("decoded type has a name");

    const sn_msg_t *msg = &m.msg;
    switch (msg->type) {
    case SN_MSG_DELTA:
        fuzz_delta(msg->u.delta.body, msg->u.delta.body_len);
        break;
    case SN_MSG_HEARTBEAT:
        if (msg->u.heartbeat.endpoint[msg->u.heartbeat.endpoint_len] != 0 ||
            msg->u.heartbeat.name[msg->u.heartbeat.name_len] != 0)
            fuzz_fail("heartbeat strings are NUL-terminated");
        break;
    case SN_MSG_REPAIR_REP:
        for (uint32_t i = 0; i < msg->u.repair_rep.n && i < FUZZ_BODIES_MAX; i++)
            fuzz_delta(msg->u.repair_rep.entries[i].body, msg->u.repair_rep.entries[i].body_len);
        break;
    case SN_MSG_DELTAS:
        for (uint32_t i = 0; i < msg->u.deltas.n && i < FUZZ_BODIES_MAX; i++) {
            if (msg->u.deltas.entries[i].pseq != msg->u.deltas.entries[0].pseq + i)
                fuzz_fail("deltas carry consecutive publish sequences");
            fuzz_delta(msg->u.deltas.entries[i].body, msg->u.deltas.entries[i].body_len);
        }
        break;
    case SN_MSG_SNAP_CHUNK:
        fuzz_blobs(msg->u.snap_chunk.states, msg->u.snap_chunk.n);
        break;
    case SN_MSG_FETCH_REP:
        fuzz_blobs(msg->u.fetch_rep.states, msg->u.fetch_rep.n);
        break;
    default:
        break;
    }
    sn_msg_release(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_frame(data, size);
    fuzz_delta(data, size);
    fuzz_state(data, size);
    return 0;
}
