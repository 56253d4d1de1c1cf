/*
 * sn_msg.c - the replication protocol's frames as msgpack arrays.
 *
 * A frame is one flat msgpack array: version, type, sender, then the type's
 * fields. The type fixes the element count, so a frame whose count does not
 * match its type is refused before any field is read. Deltas and session
 * states are already sn_wire encodings and ride along as opaque `bin`: a
 * node that relays or buffers them (repair backlog, snapshot chunks) never
 * decodes them, and the one that applies them calls sn_wire itself.
 *
 * Encoding goes through msgpack-c's packer, which already writes the
 * shortest form of every integer, string, bin and array header. Every
 * limit the decoder enforces is checked first, so the encoder never emits a
 * frame its peers would refuse.
 *
 * Decoding runs sn_mpack's bounded reader, for the reasons given at the top
 * of sn_mpack.c: msgpack-c's unpacker allocates for whatever count a header
 * declares before reading an element, and the schema here is fixed and at
 * most two arrays deep. It runs twice with the same code: the first pass
 * validates the whole frame and counts vector entries, list items and bytes
 * to copy; the second, after one malloc of exactly that much, fills them
 * in. A bad frame allocates nothing, a frame without variable-length fields
 * allocates nothing at all, and a decoded frame does not depend on its
 * input buffer.
 *
 * Only the shortest encodings are accepted, so decode-then-encode gives back
 * the input byte for byte; the unit tests and the fuzzer check exactly that.
 * Semantics beyond the frame's own shape (is the vector sorted, is the body
 * a valid delta, is the cursor one we issued) belong to the layers that act
 * on the message.
 */
#include "sn_msg.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "sn_mpack.h"
#include "sn_wire.h"

/* version, type, sender */
#define SN_MSG_HEAD_FIELDS 3
#define SN_MSG_ENTRY_FIELDS 3    /* repair entry: pseq, flags, body */
#define SN_MSG_DIGEST_FIELDS 3   /* digest entry: id, digest, version vector */
#define SN_MSG_TYPE_MAX SN_MSG_MEMBERS
#define SN_MSG_BODY_MAX (SN_MSG_FRAME_MAX - 64)

/* Fields after the head, per type. */
static const uint8_t sn_msg_fields[SN_MSG_TYPE_MAX + 1] = {
    [SN_MSG_DELTA] = 3,
    [SN_MSG_HEARTBEAT] = 7,
    [SN_MSG_REPAIR_REQ] = 3,
    [SN_MSG_REPAIR_REP] = 3,
    [SN_MSG_SNAP_REQ] = 2,
    [SN_MSG_SNAP_CREDIT] = 2,
    [SN_MSG_SNAP_CHUNK] = 6,
    [SN_MSG_DIGEST_REQ] = 2,
    [SN_MSG_DIGEST_REP] = 3,
    [SN_MSG_FETCH_REQ] = 1,
    [SN_MSG_FETCH_REP] = 1,
    [SN_MSG_ACK] = 3,
    [SN_MSG_DELTAS] = 1,
    [SN_MSG_LEAVE] = 0,
    [SN_MSG_CONTROL] = 2,
    [SN_MSG_CONTROL_REP] = 2,
    [SN_MSG_MEMBERS] = 2,
};

static const char *const sn_msg_names[SN_MSG_TYPE_MAX + 1] = {
    [SN_MSG_DELTA] = "delta",
    [SN_MSG_HEARTBEAT] = "heartbeat",
    [SN_MSG_REPAIR_REQ] = "repair_req",
    [SN_MSG_REPAIR_REP] = "repair_rep",
    [SN_MSG_SNAP_REQ] = "snap_req",
    [SN_MSG_SNAP_CREDIT] = "snap_credit",
    [SN_MSG_SNAP_CHUNK] = "snap_chunk",
    [SN_MSG_DIGEST_REQ] = "digest_req",
    [SN_MSG_DIGEST_REP] = "digest_rep",
    [SN_MSG_FETCH_REQ] = "fetch_req",
    [SN_MSG_FETCH_REP] = "fetch_rep",
    [SN_MSG_ACK] = "ack",
    [SN_MSG_DELTAS] = "deltas",
    [SN_MSG_LEAVE] = "leave",
    [SN_MSG_CONTROL] = "control",
    [SN_MSG_CONTROL_REP] = "control_rep",
    [SN_MSG_MEMBERS] = "members",
};

const char *sn_msg_type_name(int type)
{
    return type >= 1 && type <= SN_MSG_TYPE_MAX ? sn_msg_names[type] : "unknown";
}

/* ------------------------------------------------------------ encoding */

static bool sn_msg_bytes_ok(const uint8_t *p, uint32_t n, uint32_t min, uint32_t max)
{
    return n >= min && n <= max && (n == 0 || p);
}

static bool sn_msg_vv_ok(const sn_vv_t *vv)
{
    return vv->n <= SN_VV_MAX && (vv->n == 0 || vv->dots);
}

/* Checks a list of blobs, each min..max bytes, and adds their lengths to
 * *raw for the early size check. */
static bool sn_msg_blobs_ok(const sn_msg_blob_t *b, uint32_t n, uint32_t min, uint32_t max,
                            uint64_t *raw)
{
    if (n > SN_MSG_ITEMS_MAX || (n && !b))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!sn_msg_bytes_ok(b[i].bytes, b[i].len, min, max))
            return false;
        *raw += b[i].len;
    }
    return true;
}

/* DELTAS carries publish sequences first, first+1, ... first+n-1, with
 * first >= 1 and no wrap: is `pseq` the i-th of such a run? */
static bool sn_msg_in_run(uint64_t first, uint32_t i, uint32_t n, uint64_t pseq)
{
    return first != 0 && first <= UINT64_MAX - n && pseq == first + i;
}

static bool sn_msg_entries_consecutive(const sn_msg_entry_t *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!sn_msg_in_run(e[0].pseq, i, n, e[i].pseq))
            return false;
    return true;
}

/* The limits the decoder enforces, per type. *raw receives the sum of the
 * byte strings, so an oversize frame is refused before it is built. */
static int sn_msg_check(const sn_msg_t *m, uint64_t *raw)
{
    switch (m->type) {
    case SN_MSG_DELTA:
        *raw = m->u.delta.body_len;
        return sn_msg_bytes_ok(m->u.delta.body, m->u.delta.body_len, 1, SN_WIRE_FRAME_MAX)
                   ? 0 : SN_EINVAL;
    case SN_MSG_HEARTBEAT:
        return sn_msg_bytes_ok(m->u.heartbeat.endpoint, m->u.heartbeat.endpoint_len, 0,
                               SN_MSG_STR_MAX) &&
                       sn_msg_bytes_ok(m->u.heartbeat.name, m->u.heartbeat.name_len, 0,
                                       SN_MSG_STR_MAX) &&
                       sn_msg_vv_ok(&m->u.heartbeat.applied)
                   ? 0 : SN_EINVAL;
    case SN_MSG_REPAIR_REQ:
        return m->u.repair_req.from_pseq <= m->u.repair_req.to_pseq ? 0 : SN_EINVAL;
    case SN_MSG_REPAIR_REP: {
        uint32_t status = m->u.repair_rep.status, n = m->u.repair_rep.n;
        const sn_msg_entry_t *entries = m->u.repair_rep.entries;
        if (status != SN_MSG_REPAIR_OK && status != SN_MSG_REPAIR_TOO_OLD)
            return SN_EINVAL;
        if (n > SN_MSG_ITEMS_MAX || (n && !entries) || (status == SN_MSG_REPAIR_TOO_OLD && n))
            return SN_EINVAL;
        for (uint32_t i = 0; i < n; i++) {
            const sn_msg_entry_t *e = &entries[i];
            if (!sn_msg_bytes_ok(e->body, e->body_len, 1, SN_WIRE_FRAME_MAX))
                return SN_EINVAL;
            *raw += e->body_len;
        }
        return 0;
    }
    case SN_MSG_DELTAS: {
        uint32_t n = m->u.deltas.n;
        const sn_msg_entry_t *e = m->u.deltas.entries;
        if (n == 0 || n > SN_MSG_ITEMS_MAX || !e || !sn_msg_entries_consecutive(e, n))
            return SN_EINVAL;
        for (uint32_t i = 0; i < n; i++) {
            if (!sn_msg_bytes_ok(e[i].body, e[i].body_len, 1, SN_WIRE_FRAME_MAX))
                return SN_EINVAL;
            *raw += e[i].body_len;
        }
        return 0;
    }
    case SN_MSG_SNAP_REQ:
    case SN_MSG_SNAP_CREDIT:
    case SN_MSG_DIGEST_REQ:
    case SN_MSG_ACK:
    case SN_MSG_LEAVE:
        return 0;
    case SN_MSG_CONTROL:
        *raw = (uint64_t) m->u.control.command_len + m->u.control.arg_len;
        return sn_msg_bytes_ok(m->u.control.command, m->u.control.command_len, 1,
                               SN_MSG_STR_MAX) &&
                       sn_msg_bytes_ok(m->u.control.arg, m->u.control.arg_len, 0,
                                       SN_MSG_STR_MAX)
                   ? 0 : SN_EINVAL;
    case SN_MSG_CONTROL_REP:
        *raw = m->u.control_rep.body_len;
        return sn_msg_bytes_ok(m->u.control_rep.body, m->u.control_rep.body_len, 0,
                               SN_MSG_BODY_MAX) ? 0 : SN_EINVAL;
    case SN_MSG_SNAP_CHUNK:
        if (!sn_msg_vv_ok(&m->u.snap_chunk.cut) ||
            (!m->u.snap_chunk.last && m->u.snap_chunk.cut.n))
            return SN_EINVAL;
        return sn_msg_blobs_ok(m->u.snap_chunk.states, m->u.snap_chunk.n, 1, SN_WIRE_FRAME_MAX,
                               raw) ? 0 : SN_EINVAL;
    case SN_MSG_DIGEST_REP:
        if (!sn_msg_blobs_ok(m->u.digest_rep.entries, m->u.digest_rep.n, 1, SN_ID_MAX, raw))
            return SN_EINVAL;
        for (uint32_t i = 0; i < m->u.digest_rep.n; i++)
            if (!sn_msg_vv_ok(&m->u.digest_rep.entries[i].vv))
                return SN_EINVAL;
        return 0;
    case SN_MSG_FETCH_REQ:
        return sn_msg_blobs_ok(m->u.fetch_req.ids, m->u.fetch_req.n, 1, SN_ID_MAX, raw)
                   ? 0 : SN_EINVAL;
    case SN_MSG_MEMBERS:
        return sn_msg_blobs_ok(m->u.members.addrs, m->u.members.n, 1, SN_MSG_STR_MAX, raw) &&
                       sn_msg_blobs_ok(m->u.members.keys, m->u.members.nkeys, 0,
                                       SN_MSG_KEY_MAX, raw) &&
                       m->u.members.nkeys == m->u.members.n
                   ? 0 : SN_EINVAL;
    case SN_MSG_FETCH_REP:
        return sn_msg_blobs_ok(m->u.fetch_rep.states, m->u.fetch_rep.n, 1, SN_WIRE_FRAME_MAX,
                               raw) ? 0 : SN_EINVAL;
    }
    return SN_EINVAL;
}

static int sn_msg_pack_bins(msgpack_packer *pk, const sn_msg_blob_t *b, uint32_t n)
{
    int err = msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        err |= sn_mpack_pack_bin(pk, b[i].bytes, b[i].len);
    return err;
}

static int sn_msg_pack_entries(msgpack_packer *pk, const sn_msg_entry_t *e, uint32_t n)
{
    int err = msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        err |= msgpack_pack_array(pk, SN_MSG_ENTRY_FIELDS);
        err |= msgpack_pack_uint64(pk, e[i].pseq);
        err |= msgpack_pack_uint32(pk, e[i].flags);
        err |= sn_mpack_pack_bin(pk, e[i].body, e[i].body_len);
    }
    return err;
}

static int sn_msg_pack_fields(msgpack_packer *pk, const sn_msg_t *m)
{
    int err = 0;
    switch (m->type) {
    case SN_MSG_DELTA:
        err |= msgpack_pack_uint64(pk, m->u.delta.pseq);
        err |= msgpack_pack_uint32(pk, m->u.delta.flags);
        err |= sn_mpack_pack_bin(pk, m->u.delta.body, m->u.delta.body_len);
        break;
    case SN_MSG_HEARTBEAT:
        err |= msgpack_pack_uint64(pk, m->u.heartbeat.incarnation);
        err |= msgpack_pack_uint64(pk, m->u.heartbeat.last_pseq);
        err |= msgpack_pack_uint64(pk, m->u.heartbeat.dots_done);
        err |= sn_mpack_pack_str(pk, m->u.heartbeat.endpoint, m->u.heartbeat.endpoint_len);
        err |= sn_mpack_pack_str(pk, m->u.heartbeat.name, m->u.heartbeat.name_len);
        err |= sn_mpack_pack_vv(pk, &m->u.heartbeat.applied);
        err |= msgpack_pack_uint64(pk, m->u.heartbeat.sessions);
        break;
    case SN_MSG_REPAIR_REQ:
        err |= msgpack_pack_uint64(pk, m->u.repair_req.origin);
        err |= msgpack_pack_uint64(pk, m->u.repair_req.from_pseq);
        err |= msgpack_pack_uint64(pk, m->u.repair_req.to_pseq);
        break;
    case SN_MSG_REPAIR_REP:
        err |= msgpack_pack_uint64(pk, m->u.repair_rep.origin);
        err |= msgpack_pack_uint32(pk, m->u.repair_rep.status);
        err |= sn_msg_pack_entries(pk, m->u.repair_rep.entries, m->u.repair_rep.n);
        break;
    case SN_MSG_DELTAS:
        err |= sn_msg_pack_entries(pk, m->u.deltas.entries, m->u.deltas.n);
        break;
    case SN_MSG_SNAP_REQ:
    case SN_MSG_SNAP_CREDIT:
        err |= msgpack_pack_uint64(pk, m->u.snap_req.snap_id);
        err |= msgpack_pack_uint32(pk, m->u.snap_req.credit);
        break;
    case SN_MSG_SNAP_CHUNK:
        err |= msgpack_pack_uint64(pk, m->u.snap_chunk.snap_id);
        err |= msgpack_pack_uint64(pk, m->u.snap_chunk.chunk);
        err |= sn_mpack_pack_bool(pk, m->u.snap_chunk.last);
        err |= sn_mpack_pack_vv(pk, &m->u.snap_chunk.cut);
        err |= sn_msg_pack_bins(pk, m->u.snap_chunk.states, m->u.snap_chunk.n);
        err |= msgpack_pack_uint64(pk, m->u.snap_chunk.sessions);
        break;
    case SN_MSG_DIGEST_REQ:
        err |= msgpack_pack_uint64(pk, m->u.digest_req.cursor);
        err |= msgpack_pack_uint32(pk, m->u.digest_req.max);
        break;
    case SN_MSG_DIGEST_REP:
        err |= msgpack_pack_uint64(pk, m->u.digest_rep.next_cursor);
        err |= sn_mpack_pack_bool(pk, m->u.digest_rep.done);
        err |= msgpack_pack_array(pk, m->u.digest_rep.n);
        for (uint32_t i = 0; i < m->u.digest_rep.n; i++) {
            const sn_msg_blob_t *b = &m->u.digest_rep.entries[i];
            err |= msgpack_pack_array(pk, SN_MSG_DIGEST_FIELDS);
            err |= sn_mpack_pack_bin(pk, b->bytes, b->len);
            err |= msgpack_pack_uint64(pk, b->digest);
            err |= sn_mpack_pack_vv(pk, &b->vv);
        }
        break;
    case SN_MSG_FETCH_REQ:
        err |= sn_msg_pack_bins(pk, m->u.fetch_req.ids, m->u.fetch_req.n);
        break;
    case SN_MSG_MEMBERS:
        err |= sn_msg_pack_bins(pk, m->u.members.addrs, m->u.members.n);
        err |= sn_msg_pack_bins(pk, m->u.members.keys, m->u.members.nkeys);
        break;
    case SN_MSG_FETCH_REP:
        err |= sn_msg_pack_bins(pk, m->u.fetch_rep.states, m->u.fetch_rep.n);
        break;
    case SN_MSG_ACK:
        err |= msgpack_pack_uint64(pk, m->u.ack.origin);
        err |= msgpack_pack_uint64(pk, m->u.ack.pseq);
        err |= msgpack_pack_uint32(pk, m->u.ack.status);
        break;
    case SN_MSG_LEAVE:
        break;
    case SN_MSG_CONTROL:
        err |= sn_mpack_pack_str(pk, m->u.control.command, m->u.control.command_len);
        err |= sn_mpack_pack_bin(pk, m->u.control.arg, m->u.control.arg_len);
        break;
    case SN_MSG_CONTROL_REP:
        err |= msgpack_pack_uint32(pk, m->u.control_rep.status);
        err |= sn_mpack_pack_bin(pk, m->u.control_rep.body, m->u.control_rep.body_len);
        break;
    }
    return err;
}

int sn_msg_encode_into(const sn_msg_t *msg, msgpack_sbuffer *sb)
{
    if (!msg || !sb)
        return SN_EINVAL;
    if (msg->type < 1 || msg->type > SN_MSG_TYPE_MAX)
        return SN_EINVAL;
    uint64_t raw = 0;
    int rc = sn_msg_check(msg, &raw);
    if (rc)
        return rc;
    /* Byte strings alone over the limit: refuse before copying them. */
    if (raw > SN_MSG_FRAME_MAX)
        return SN_ETOOBIG;

    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int err = msgpack_pack_array(&pk, SN_MSG_HEAD_FIELDS + sn_msg_fields[msg->type]);
    err |= msgpack_pack_uint32(&pk, SN_MSG_VERSION);
    err |= msgpack_pack_uint32(&pk, (uint32_t) msg->type);
    err |= msgpack_pack_uint64(&pk, msg->sender);
    err |= sn_msg_pack_fields(&pk, msg);
    if (err || !sb->data)
        rc = SN_ENOMEM;
    else if (sb->size > SN_MSG_FRAME_MAX)
        rc = SN_ETOOBIG;
    if (rc)
        msgpack_sbuffer_clear(sb);
    return rc;
}

int sn_msg_encode(const sn_msg_t *msg, uint8_t **out, size_t *out_len)
{
    if (!out || !out_len)
        return SN_EINVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = sn_msg_encode_into(msg, &sb);
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    *out_len = sb.size;
    *out = (uint8_t *) msgpack_sbuffer_release(&sb);
    return 0;
}

/* ------------------------------------------------------------ decoding */

/* Reader over one frame: sn_mpack's reader, which counts and fills dots and
 * bytes, plus the repair entries and blobs only a frame has. In the counting
 * pass entries and blobs are NULL and only their counters move; in the
 * filling pass they point into the message's block and the counters double
 * as write positions. A frame has at most one vector and one list, so one
 * array of each kind suffices. */
typedef struct {
    sn_mpack_reader_t m;
    sn_msg_entry_t *entries;
    sn_msg_blob_t *blobs;
    size_t nentries;
    size_t nblobs;
} sn_msg_reader_t;

/* Reads a list header bounded by SN_MSG_ITEMS_MAX. */
static int sn_msg_read_list(sn_msg_reader_t *r, uint32_t *n)
{
    int rc = sn_mpack_read_array(&r->m, n);
    return rc ? rc : *n > SN_MSG_ITEMS_MAX ? SN_EPROTO : 0;
}

/* A list of blobs: plain bins (digests false) or [bin, digest, vector]
 * records. */
static int sn_msg_read_blobs(sn_msg_reader_t *r, bool digests, uint32_t min, uint32_t max,
                             uint32_t *count, sn_msg_blob_t **list)
{
    uint32_t n;
    int rc = sn_msg_read_list(r, &n);
    if (rc)
        return rc;
    *count = n;
    *list = r->blobs && n ? r->blobs + r->nblobs : NULL;
    for (uint32_t i = 0; i < n; i++) {
        sn_msg_blob_t scratch;
        sn_msg_blob_t *b = r->blobs ? &r->blobs[r->nblobs] : &scratch;
        memset(b, 0, sizeof *b);
        if (digests && (rc = sn_mpack_expect_array(&r->m, SN_MSG_DIGEST_FIELDS)))
            return rc;
        if ((rc = sn_mpack_read_bytes(&r->m, false, min, max, &b->bytes, &b->len)))
            return rc;
        if (digests && ((rc = sn_mpack_read_uint(&r->m, &b->digest)) ||
                        (rc = sn_mpack_read_vv(&r->m, &b->vv))))
            return rc;
        r->nblobs++;
    }
    return 0;
}

/* Reads a list of entries; with `consecutive`, their publish sequences must
 * run p, p+1, ... from p >= 1, checked while counting, since the filling
 * pass may not fail where counting succeeded. */
static int sn_msg_read_entries(sn_msg_reader_t *r, uint32_t *count, sn_msg_entry_t **list,
                               bool consecutive)
{
    uint32_t n;
    int rc = sn_msg_read_list(r, &n);
    if (rc)
        return rc;
    uint64_t first = 0;
    *count = n;
    *list = r->entries && n ? r->entries + r->nentries : NULL;
    for (uint32_t i = 0; i < n; i++) {
        sn_msg_entry_t scratch;
        sn_msg_entry_t *e = r->entries ? &r->entries[r->nentries] : &scratch;
        memset(e, 0, sizeof *e);
        if ((rc = sn_mpack_expect_array(&r->m, SN_MSG_ENTRY_FIELDS)) ||
            (rc = sn_mpack_read_uint(&r->m, &e->pseq)) ||
            (rc = sn_mpack_read_uint32(&r->m, &e->flags)) ||
            (rc = sn_mpack_read_bytes(&r->m, false, 1, SN_WIRE_FRAME_MAX, &e->body,
                                      &e->body_len)))
            return rc;
        if (i == 0)
            first = e->pseq;
        if (consecutive && !sn_msg_in_run(first, i, n, e->pseq))
            return SN_EPROTO;
        r->nentries++;
    }
    return 0;
}

static int sn_msg_read_fields(sn_msg_reader_t *r, sn_msg_t *m)
{
    int rc;
    switch (m->type) {
    case SN_MSG_DELTA:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.delta.pseq)) ||
            (rc = sn_mpack_read_uint32(&r->m, &m->u.delta.flags)))
            return rc;
        return sn_mpack_read_bytes(&r->m, false, 1, SN_WIRE_FRAME_MAX, &m->u.delta.body,
                                 &m->u.delta.body_len);
    case SN_MSG_HEARTBEAT:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.heartbeat.incarnation)) ||
            (rc = sn_mpack_read_uint(&r->m, &m->u.heartbeat.last_pseq)) ||
            (rc = sn_mpack_read_uint(&r->m, &m->u.heartbeat.dots_done)) ||
            (rc = sn_mpack_read_bytes(&r->m, true, 0, SN_MSG_STR_MAX, &m->u.heartbeat.endpoint,
                                    &m->u.heartbeat.endpoint_len)) ||
            (rc = sn_mpack_read_bytes(&r->m, true, 0, SN_MSG_STR_MAX, &m->u.heartbeat.name,
                                    &m->u.heartbeat.name_len)))
            return rc;
        if ((rc = sn_mpack_read_vv(&r->m, &m->u.heartbeat.applied)))
            return rc;
        return sn_mpack_read_uint(&r->m, &m->u.heartbeat.sessions);
    case SN_MSG_REPAIR_REQ:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.repair_req.origin)) ||
            (rc = sn_mpack_read_uint(&r->m, &m->u.repair_req.from_pseq)) ||
            (rc = sn_mpack_read_uint(&r->m, &m->u.repair_req.to_pseq)))
            return rc;
        return m->u.repair_req.from_pseq <= m->u.repair_req.to_pseq ? 0 : SN_EPROTO;
    case SN_MSG_REPAIR_REP:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.repair_rep.origin)) ||
            (rc = sn_mpack_read_uint32(&r->m, &m->u.repair_rep.status)))
            return rc;
        if (m->u.repair_rep.status != SN_MSG_REPAIR_OK &&
            m->u.repair_rep.status != SN_MSG_REPAIR_TOO_OLD)
            return SN_EPROTO;
        if ((rc = sn_msg_read_entries(r, &m->u.repair_rep.n, &m->u.repair_rep.entries, false)))
            return rc;
        return m->u.repair_rep.status == SN_MSG_REPAIR_TOO_OLD && m->u.repair_rep.n
                   ? SN_EPROTO : 0;
    case SN_MSG_SNAP_REQ:
    case SN_MSG_SNAP_CREDIT:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.snap_req.snap_id)))
            return rc;
        return sn_mpack_read_uint32(&r->m, &m->u.snap_req.credit);
    case SN_MSG_SNAP_CHUNK:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.snap_chunk.snap_id)) ||
            (rc = sn_mpack_read_uint(&r->m, &m->u.snap_chunk.chunk)) ||
            (rc = sn_mpack_read_bool(&r->m, &m->u.snap_chunk.last)) ||
            (rc = sn_mpack_read_vv(&r->m, &m->u.snap_chunk.cut)))
            return rc;
        if (!m->u.snap_chunk.last && m->u.snap_chunk.cut.n)
            return SN_EPROTO;
        if ((rc = sn_msg_read_blobs(r, false, 1, SN_WIRE_FRAME_MAX, &m->u.snap_chunk.n,
                                    &m->u.snap_chunk.states)))
            return rc;
        return sn_mpack_read_uint(&r->m, &m->u.snap_chunk.sessions);
    case SN_MSG_DIGEST_REQ:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.digest_req.cursor)))
            return rc;
        return sn_mpack_read_uint32(&r->m, &m->u.digest_req.max);
    case SN_MSG_DIGEST_REP:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.digest_rep.next_cursor)) ||
            (rc = sn_mpack_read_bool(&r->m, &m->u.digest_rep.done)))
            return rc;
        return sn_msg_read_blobs(r, true, 1, SN_ID_MAX, &m->u.digest_rep.n,
                                 &m->u.digest_rep.entries);
    case SN_MSG_FETCH_REQ:
        return sn_msg_read_blobs(r, false, 1, SN_ID_MAX, &m->u.fetch_req.n, &m->u.fetch_req.ids);
    case SN_MSG_MEMBERS:
        if ((rc = sn_msg_read_blobs(r, false, 1, SN_MSG_STR_MAX, &m->u.members.n,
                                    &m->u.members.addrs)) ||
            (rc = sn_msg_read_blobs(r, false, 0, SN_MSG_KEY_MAX, &m->u.members.nkeys,
                                    &m->u.members.keys)))
            return rc;
        return m->u.members.nkeys == m->u.members.n ? 0 : SN_EPROTO;
    case SN_MSG_FETCH_REP:
        return sn_msg_read_blobs(r, false, 1, SN_WIRE_FRAME_MAX, &m->u.fetch_rep.n,
                                 &m->u.fetch_rep.states);
    case SN_MSG_ACK:
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.ack.origin)))
            return rc;
        if ((rc = sn_mpack_read_uint(&r->m, &m->u.ack.pseq)))
            return rc;
        return sn_mpack_read_uint32(&r->m, &m->u.ack.status);
    case SN_MSG_DELTAS:
        if ((rc = sn_msg_read_entries(r, &m->u.deltas.n, &m->u.deltas.entries, true)))
            return rc;
        return m->u.deltas.n ? 0 : SN_EPROTO;
    case SN_MSG_LEAVE:
        return 0;
    case SN_MSG_CONTROL:
        if ((rc = sn_mpack_read_bytes(&r->m, true, 1, SN_MSG_STR_MAX, &m->u.control.command,
                                      &m->u.control.command_len)))
            return rc;
        return sn_mpack_read_bytes(&r->m, false, 0, SN_MSG_STR_MAX, &m->u.control.arg,
                                   &m->u.control.arg_len);
    case SN_MSG_CONTROL_REP:
        if ((rc = sn_mpack_read_uint32(&r->m, &m->u.control_rep.status)))
            return rc;
        return sn_mpack_read_bytes(&r->m, false, 0, SN_MSG_BODY_MAX, &m->u.control_rep.body,
                                   &m->u.control_rep.body_len);
    }
    return SN_EPROTO;
}

static int sn_msg_read(sn_msg_reader_t *r, sn_msg_t *m)
{
    uint32_t n;
    uint64_t version, type;
    int rc = sn_mpack_read_array(&r->m, &n);
    /* The version comes first and is checked first: a later version may
     * lay out everything after it differently. */
    if (rc || (rc = sn_mpack_read_uint(&r->m, &version)))
        return rc;
    if (version != SN_MSG_VERSION)
        return SN_EPROTO;
    if ((rc = sn_mpack_read_uint(&r->m, &type)))
        return rc;
    if (type < 1 || type > SN_MSG_TYPE_MAX || n != SN_MSG_HEAD_FIELDS + (uint32_t) sn_msg_fields[type])
        return SN_EPROTO;
    m->type = (sn_msg_type_t) type;
    if ((rc = sn_mpack_read_uint(&r->m, &m->sender)) || (rc = sn_msg_read_fields(r, m)))
        return rc;
    return r->m.p == r->m.end ? 0 : SN_EPROTO;
}

int sn_msg_decode(const void *buf, size_t len, sn_msg_decoded_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!out || (!buf && len))
        return SN_EINVAL;
    if (len > SN_MSG_FRAME_MAX)
        return SN_ETOOBIG;
    /* Refused here so that the reader never does arithmetic on a NULL buf. */
    if (len == 0)
        return SN_EPROTO;

    sn_msg_reader_t r = {.m = {.p = buf, .end = (const uint8_t *) buf + len}};
    sn_msg_t scratch = {0};
    int rc = sn_msg_read(&r, &scratch);
    if (rc)
        return rc;

    /* Dots, entries and blobs are 8-byte aligned structs; the bytes go last. */
    size_t dots = r.m.ndots * sizeof(sn_dot_t);
    size_t entries = r.nentries * sizeof(sn_msg_entry_t);
    size_t blobs = r.nblobs * sizeof(sn_msg_blob_t);
    size_t total = dots + entries + blobs + r.m.nbytes;
    uint8_t *block = NULL;
    if (total && !(block = malloc(total)))
        return SN_ENOMEM;
    r = (sn_msg_reader_t) {
        .m = {
            .p = buf,
            .end = (const uint8_t *) buf + len,
            .dots = r.m.ndots ? (sn_dot_t *) block : NULL,
            .bytes = r.m.nbytes ? block + dots + entries + blobs : NULL,
        },
        .entries = r.nentries ? (sn_msg_entry_t *) (block + dots) : NULL,
        .blobs = r.nblobs ? (sn_msg_blob_t *) (block + dots + entries) : NULL,
    };
    rc = sn_msg_read(&r, &out->msg);
    /* Same bytes, same code: the filling pass cannot fail where counting
     * succeeded. */
    assert(rc == 0);
    (void) rc;
    out->mem = block;
    return 0;
}

void sn_msg_release(sn_msg_decoded_t *m)
{
    if (!m)
        return;
    free(m->mem);
    memset(m, 0, sizeof *m);
}
