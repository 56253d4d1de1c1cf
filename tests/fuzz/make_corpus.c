/*
 * make_corpus.c - writes the generated seed inputs of tests/fuzz/corpus/.
 *
 * Usage: fuzz_make_corpus DIR
 *
 * Valid frames of every sn_msg type (built with sn_msg_encode, carrying real
 * sn_wire bodies), valid sn_wire deltas and states on their own, and bad
 * inputs of each kind the decoders must refuse: truncated, trailing bytes,
 * wrong version, unknown type, wrong field count, non-shortest forms,
 * hostile declared counts and lengths, broken field rules. Files are named
 * for what they hold (msg-*, wire-*, bad-*); other files in the corpus
 * (fuzzer finds, crash reproducers) are kept as they are. The output is
 * deterministic, so regenerating changes nothing unless the format does.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sn_msg.h"
#include "sn_store.h"
#include "sn_wire.h"

static const char *out_dir;
static int written;

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The generator checks its own output: a bad-* file no decoder accepts,
 * and each msg-* / wire-* file decodes with the decoder it is meant for. */
static void check(const char *name, const void *bytes, size_t len)
{
    sn_msg_decoded_t m;
    sn_wire_delta_t d;
    sn_wire_state_t s;
    int rm = sn_msg_decode(bytes, len, &m);
    int rd = sn_wire_decode_delta(bytes, len, &d);
    int rs = sn_wire_decode_state(bytes, len, &s);
    sn_msg_release(&m);
    sn_wire_delta_release(&d);
    sn_wire_state_release(&s);
    bool ok = starts(name, "bad-") ? rm != 0 && rd != 0 && rs != 0
            : starts(name, "msg-") ? rm == 0
            : starts(name, "wire-delta-") ? rd == 0
            : starts(name, "wire-state-") ? rs == 0
            : false;
    if (!ok) {
        fprintf(stderr, "%s: unexpected decoder results msg %d delta %d state %d\n",
                name, rm, rd, rs);
        exit(1);
    }
}

static void put(const char *name, const void *bytes, size_t len)
{
    check(name, bytes, len);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(bytes, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    written++;
}

static void must(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "encoding %s failed: %d\n", what, rc);
        exit(1);
    }
}

/* Encodes a frame, writes it as `name` and returns it (caller frees). */
static uint8_t *put_msg(const char *name, const sn_msg_t *m, size_t *len)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    must(sn_msg_encode(m, &buf, &n), name);
    put(name, buf, n);
    if (len)
        *len = n;
    return buf;
}

/* Writes `len` bytes of `src` with byte `at` replaced by `v`. */
static void put_patched(const char *name, const uint8_t *src, size_t len, size_t at, uint8_t v)
{
    uint8_t *copy = malloc(len);
    if (!copy)
        exit(1);
    memcpy(copy, src, len);
    copy[at] = v;
    put(name, copy, len);
    free(copy);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];

    /* ---- sn_wire bodies */
    sn_dot_t ctx[] = {{1, 4}, {2, 7}};
    sn_dot_t dv[] = {{1, 3}};
    sn_attr_t attrs[] = {
        {(const uint8_t *) "a", 1, (const uint8_t *) "v", 1, 0, 1000u << 16, 1, false},
        {(const uint8_t *) "b", 1, NULL, 0, 0, 1000u << 16, 1, true},
    };
    sn_delta_t write = {
        .kind = SN_DELTA_WRITE, .id = (const uint8_t *) "s", .id_len = 1, .dot = {1, 5},
        .st = {.vv = {1, ctx}, .has_meta = true, .meta_stamp = 1000u << 16, .meta_origin = 1,
               .last_access_ms = 1000, .nattrs = 2, .attrs = attrs},
    };
    sn_delta_t create = write;
    create.st.vv = (sn_vv_t) {0, NULL};
    create.dot = (sn_dot_t) {1, 1};
    sn_delta_t destroy = {.kind = SN_DELTA_DESTROY, .id = (const uint8_t *) "s", .id_len = 1,
                          .dot = {2, 8}, .st = {.vv = {2, ctx}, .last_access_ms = 2000}};
    sn_delta_t touch = {.kind = SN_DELTA_TOUCH, .id = (const uint8_t *) "s", .id_len = 1,
                        .st = {.last_access_ms = 3000}};
    sn_state_t alive = {.vv = {2, ctx}, .has_meta = true, .max_inactive = 1800,
                        .meta_stamp = 1000u << 16, .meta_origin = 1, .last_access_ms = 1000,
                        .nattrs = 2, .attrs = attrs};
    sn_state_t tomb = {.vv = {2, ctx}, .dv = {1, dv}, .last_access_ms = 1000, .gc = {1, dv}};

    uint8_t *d_write, *d_create, *d_destroy, *d_touch, *s_alive, *s_tomb;
    size_t l_write, l_create, l_destroy, l_touch, l_alive, l_tomb;
    must(sn_wire_encode_delta(&write, &d_write, &l_write), "write");
    must(sn_wire_encode_delta(&create, &d_create, &l_create), "create");
    must(sn_wire_encode_delta(&destroy, &d_destroy, &l_destroy), "destroy");
    must(sn_wire_encode_delta(&touch, &d_touch, &l_touch), "touch");
    must(sn_wire_encode_state((const uint8_t *) "s", 1, &alive, &s_alive, &l_alive), "state");
    must(sn_wire_encode_state((const uint8_t *) "t", 1, &tomb, &s_tomb, &l_tomb), "tombstone");
    put("wire-delta-write", d_write, l_write);
    put("wire-delta-create", d_create, l_create);
    put("wire-delta-destroy", d_destroy, l_destroy);
    put("wire-delta-touch", d_touch, l_touch);
    put("wire-state-alive", s_alive, l_alive);
    put("wire-state-tombstone", s_tomb, l_tomb);
    put("bad-wire-delta-truncated", d_write, l_write - 1);
    put("bad-wire-state-truncated", s_alive, l_alive / 2);

    /* ---- valid frames of every type */
    size_t len;
    sn_msg_t m = {.type = SN_MSG_DELTA, .sender = 1,
                  .u.delta = {.pseq = 42, .flags = SN_MSG_F_ACK, .body = d_write,
                              .body_len = (uint32_t) l_write}};
    uint8_t *f_delta = put_msg("msg-delta", &m, &len);
    size_t l_fdelta = len;
    m.u.delta.pseq = UINT64_MAX;
    m.u.delta.flags = 0;
    m.u.delta.body = d_create;
    m.u.delta.body_len = (uint32_t) l_create;
    free(put_msg("msg-delta-create-max-pseq", &m, NULL));

    sn_dot_t applied[] = {{1, 42}, {2, 300}, {UINT64_MAX, UINT64_MAX}};
    char longname[SN_MSG_STR_MAX];
    memset(longname, 'n', sizeof longname);
    m = (sn_msg_t) {.type = SN_MSG_HEARTBEAT, .sender = 2};
    m.u.heartbeat.incarnation = 1700000000;
    m.u.heartbeat.last_pseq = 300;
    m.u.heartbeat.dots_done = 299;
    m.u.heartbeat.endpoint = (const uint8_t *) "tcp://10.0.0.2:7401";
    m.u.heartbeat.endpoint_len = 19;
    m.u.heartbeat.name = (const uint8_t *) "node-2";
    m.u.heartbeat.name_len = 6;
    m.u.heartbeat.applied = (sn_vv_t) {3, applied};
    uint8_t *f_hb = put_msg("msg-heartbeat", &m, &len);
    size_t l_hb = len;
    m.u.heartbeat.name = (const uint8_t *) longname;
    m.u.heartbeat.name_len = SN_MSG_STR_MAX;
    m.u.heartbeat.endpoint_len = 0;
    m.u.heartbeat.applied.n = 0;
    free(put_msg("msg-heartbeat-long-name", &m, NULL));

    m = (sn_msg_t) {.type = SN_MSG_REPAIR_REQ, .sender = 3,
                    .u.repair_req = {.origin = 1, .from_pseq = 40, .to_pseq = 42}};
    uint8_t *f_rreq = put_msg("msg-repair-req", &m, &len);
    size_t l_rreq = len;

    sn_msg_entry_t entries[] = {
        {40, 0, d_create, (uint32_t) l_create},
        {41, SN_MSG_F_ACK, d_write, (uint32_t) l_write},
        {42, 0, d_destroy, (uint32_t) l_destroy},
    };
    m = (sn_msg_t) {.type = SN_MSG_REPAIR_REP, .sender = 1,
                    .u.repair_rep = {.origin = 1, .status = SN_MSG_REPAIR_OK, .n = 3,
                                     .entries = entries}};
    uint8_t *f_rrep = put_msg("msg-repair-rep", &m, &len);
    size_t l_rrep = len;
    m = (sn_msg_t) {.type = SN_MSG_DELTAS, .sender = 1,
                    .u.deltas = {.n = 3, .entries = entries}};
    uint8_t *f_deltas = put_msg("msg-deltas", &m, &len);
    /* the second entry's pseq (41, one byte) made 43: a gap inside a frame */
    for (size_t i = 0; i + 1 < len; i++)
        if (f_deltas[i] == 0x93 && f_deltas[i + 1] == 41) {
            f_deltas[i + 1] = 43;
            put("bad-msg-deltas-gap", f_deltas, len);
            break;
        }
    free(f_deltas);
    m = (sn_msg_t) {.type = SN_MSG_REPAIR_REP, .sender = 1,
                    .u.repair_rep = {.origin = 1, .status = SN_MSG_REPAIR_TOO_OLD}};
    uint8_t *f_old = put_msg("msg-repair-rep-too-old", &m, &len);
    size_t l_old = len;

    m = (sn_msg_t) {.type = SN_MSG_SNAP_REQ, .sender = 4, .u.snap_req = {77, 8}};
    free(put_msg("msg-snap-req", &m, NULL));
    m.type = SN_MSG_SNAP_CREDIT;
    m.u.snap_req.credit = UINT32_MAX;
    free(put_msg("msg-snap-credit", &m, NULL));

    sn_msg_blob_t states[] = {{s_alive, (uint32_t) l_alive, 0, {0, NULL}},
                              {s_tomb, (uint32_t) l_tomb, 0, {0, NULL}}};
    m = (sn_msg_t) {.type = SN_MSG_SNAP_CHUNK, .sender = 1};
    m.u.snap_chunk.snap_id = 77;
    m.u.snap_chunk.chunk = 0;
    m.u.snap_chunk.n = 2;
    m.u.snap_chunk.states = states;
    uint8_t *f_chunk = put_msg("msg-snap-chunk", &m, &len);
    size_t l_chunk = len;
    m.u.snap_chunk.chunk = 1;
    m.u.snap_chunk.last = true;
    m.u.snap_chunk.cut = (sn_vv_t) {2, applied};
    m.u.snap_chunk.n = 0;
    m.u.snap_chunk.states = NULL;
    uint8_t *f_last = put_msg("msg-snap-chunk-last", &m, &len);
    size_t l_last = len;

    m = (sn_msg_t) {.type = SN_MSG_DIGEST_REQ, .sender = 5, .u.digest_req = {0, 1000}};
    free(put_msg("msg-digest-req", &m, NULL));
    sn_dot_t ddots[] = {{1, 5}, {2, UINT64_MAX}};
    sn_msg_blob_t digests[] = {
        {(const uint8_t *) "s", 1, UINT64_C(0x0123456789abcdef), {1, ddots}},
        {(const uint8_t *) "t", 1, 0, {0, NULL}},
        {(const uint8_t *) "session-3", 9, UINT64_MAX, {2, ddots}},
    };
    m = (sn_msg_t) {.type = SN_MSG_DIGEST_REP, .sender = 1,
                    .u.digest_rep = {.next_cursor = 4096, .done = false, .n = 3,
                                     .entries = digests}};
    uint8_t *f_drep = put_msg("msg-digest-rep", &m, &len);
    size_t l_drep = len;
    m.u.digest_rep.next_cursor = 0;
    m.u.digest_rep.done = true;
    m.u.digest_rep.n = 0;
    m.u.digest_rep.entries = NULL;
    free(put_msg("msg-digest-rep-done", &m, NULL));

    m = (sn_msg_t) {.type = SN_MSG_FETCH_REQ, .sender = 5,
                    .u.fetch_req = {.n = 3, .ids = digests}};
    uint8_t *f_freq = put_msg("msg-fetch-req", &m, &len);
    size_t l_freq = len;
    m = (sn_msg_t) {.type = SN_MSG_FETCH_REP, .sender = 1,
                    .u.fetch_rep = {.n = 2, .states = states}};
    free(put_msg("msg-fetch-rep", &m, NULL));

    m = (sn_msg_t) {.type = SN_MSG_ACK, .sender = UINT64_MAX,
                    .u.ack = {.origin = 1, .pseq = 42, .status = 8}};
    uint8_t *f_ack = put_msg("msg-ack", &m, &len);
    size_t l_ack = len;

    m = (sn_msg_t) {.type = SN_MSG_LEAVE, .sender = 9};
    free(put_msg("msg-leave", &m, NULL));
    m = (sn_msg_t) {.type = SN_MSG_CONTROL};
    m.u.control.command = (const uint8_t *) "session";
    m.u.control.command_len = 7;
    m.u.control.arg = (const uint8_t *) "sess:42";
    m.u.control.arg_len = 7;
    free(put_msg("msg-control", &m, NULL));
    m = (sn_msg_t) {.type = SN_MSG_CONTROL_REP, .sender = 9};
    m.u.control_rep.body = (const uint8_t *) "\x81\xa4name\xa6node-2";
    m.u.control_rep.body_len = 12;
    free(put_msg("msg-control-rep", &m, NULL));
    sn_msg_blob_t addrs[2] = {
        {(const uint8_t *) "tcp://10.0.0.2:7400", 19, 0, {0, NULL}},
        {(const uint8_t *) "tcp://10.0.0.3:7400", 19, 0, {0, NULL}},
    };
    m = (sn_msg_t) {.type = SN_MSG_MEMBERS, .sender = 9};
    static const uint8_t key[SN_MSG_KEY_MAX] = "0123456789abcdef0123456789abcde";
    sn_msg_blob_t keys[2] = {{key, SN_MSG_KEY_MAX, 0, {0, NULL}}, {NULL, 0, 0, {0, NULL}}};
    m.u.members.n = m.u.members.nkeys = 2;
    m.u.members.addrs = addrs;
    m.u.members.keys = keys;
    free(put_msg("msg-members", &m, NULL));

    /* ---- bad frames, each derived from a valid one where it can be */
    put("bad-empty", "", 0);
    put("bad-msg-delta-truncated", f_delta, l_fdelta - 1);
    put("bad-msg-heartbeat-truncated", f_hb, l_hb / 2);
    put("bad-msg-repair-rep-truncated", f_rrep, l_rrep - 3);
    uint8_t *trail = malloc(l_ack + 1);
    memcpy(trail, f_ack, l_ack);
    trail[l_ack] = 0xc0;
    put("bad-msg-ack-trailing-nil", trail, l_ack + 1);
    free(trail);
    put_patched("bad-msg-version-2", f_ack, l_ack, 1, 0x02);
    put_patched("bad-msg-version-0", f_ack, l_ack, 1, 0x00);
    put_patched("bad-msg-type-0", f_ack, l_ack, 2, 0x00);
    put_patched("bad-msg-type-18", f_ack, l_ack, 2, 0x12);
    /* an ack's fields under a snapshot request's type: the count is wrong */
    put_patched("bad-msg-ack-as-snap-req", f_ack, l_ack, 2, SN_MSG_SNAP_REQ);
    put_patched("bad-msg-field-count", f_rreq, l_rreq, 0, 0x95);
    /* from (40) above to (42): 0x2b at from's position */
    put_patched("bad-msg-repair-req-from-above-to", f_rreq, l_rreq, 5, 0x2b);
    put_patched("bad-msg-repair-rep-status-2", f_old, l_old, 5, 0x02);
    put_patched("bad-msg-snap-chunk-last-as-uint", f_chunk, l_chunk, 6, 0x01);
    /* the last chunk's `true` turned `false` while it still carries a cut */
    put_patched("bad-msg-snap-chunk-cut-not-last", f_last, l_last, 6, 0xc2);
    /* a record without its vector, as before vectors were sent */
    put_patched("bad-msg-digest-rep-short-record", f_drep, l_drep, 9, 0x92);
    put_patched("bad-msg-fetch-req-empty-id", f_freq, l_freq, 6, 0x00);

    static const uint8_t nonshortest_sender[] = {0x96, 0x01, 0x0c, 0xcc, 0x05, 0x01, 0x2a, 0x00};
    put("bad-msg-ack-sender-uint8", nonshortest_sender, sizeof nonshortest_sender);
    static const uint8_t str16_endpoint[] = {0x99, 0x01, 0x02, 0x02, 0x01, 0x01, 0x01,
                                             0xda, 0x00, 0x01, 'x', 0xa0, 0x90};
    put("bad-msg-heartbeat-str16", str16_endpoint, sizeof str16_endpoint);
    static const uint8_t endpoint_as_bin[] = {0x99, 0x01, 0x02, 0x02, 0x01, 0x01, 0x01,
                                              0xc4, 0x01, 'x', 0xa0, 0x90};
    put("bad-msg-heartbeat-endpoint-bin", endpoint_as_bin, sizeof endpoint_as_bin);
    static const uint8_t top_array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01};
    put("bad-hostile-top-array32", top_array32, sizeof top_array32);
    static const uint8_t top_map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    put("bad-hostile-top-map32", top_map32, sizeof top_map32);
    static const uint8_t entries_array32[] = {0x96, 0x01, 0x04, 0x01, 0x01, 0x00,
                                              0xdd, 0x7f, 0xff, 0xff, 0xff};
    put("bad-hostile-repair-entries-array32", entries_array32, sizeof entries_array32);
    static const uint8_t body_bin32[] = {0x96, 0x01, 0x01, 0x01, 0x01, 0x00,
                                         0xc6, 0xff, 0xff, 0xff, 0xff, 0x00};
    put("bad-hostile-delta-body-bin32", body_bin32, sizeof body_bin32);
    static const uint8_t vv_array32[] = {0x99, 0x01, 0x02, 0x02, 0x01, 0x01, 0x01, 0xa0, 0xa0,
                                         0xdd, 0x7f, 0xff, 0xff, 0xfe};
    put("bad-hostile-heartbeat-vv-array32", vv_array32, sizeof vv_array32);
    /* SN_VV_MAX + 1 pairs declared, with the bytes for them (a list over
     * SN_MSG_ITEMS_MAX would take 196 KiB; test_msg covers that one) */
    static const uint8_t vv_head[] = {0x99, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01, 0xa0, 0xa0,
                                      0xdc, 0x08, 0x02};
    uint8_t big_vv[sizeof vv_head + 2050];
    memset(big_vv, 0x01, sizeof big_vv);
    memcpy(big_vv, vv_head, sizeof vv_head);
    put("bad-hostile-heartbeat-vv-over-max", big_vv, sizeof big_vv);
    static const uint8_t wire_attrs_array32[] = {0x97, 0xc4, 0x01, 's', 0x90, 0x90, 0x00, 0xc0,
                                                 0xdd, 0xff, 0xff, 0xff, 0xff};
    put("bad-hostile-wire-state-attrs-array32", wire_attrs_array32, sizeof wire_attrs_array32);

    free(f_delta);
    free(f_hb);
    free(f_rreq);
    free(f_rrep);
    free(f_old);
    free(f_chunk);
    free(f_last);
    free(f_drep);
    free(f_freq);
    free(f_ack);
    free(d_write);
    free(d_create);
    free(d_destroy);
    free(d_touch);
    free(s_alive);
    free(s_tomb);
    printf("%d files written to %s\n", written, out_dir);
    return 0;
}
