/*
 * sn_wire.c - msgpack bodies for deltas and session states.
 *
 * Encoding goes through msgpack-c's packer (an sbuffer and a packer), whose
 * integer, array and bin writers already pick the shortest form; the body's
 * bytes are handed to the caller as they are, with no copy.
 *
 * Decoding does not use msgpack-c's unpacker. That unpacker allocates for
 * the element count an array or map header declares before reading a single
 * element, so five bytes can ask for gigabytes, and it builds a generic
 * object tree that would then have to be walked again. The schema here is
 * fixed and shallow (at most three arrays deep, no maps, no strings, no
 * floats), so a reader written over the bytes is short, cannot recurse, and
 * checks every length and count against the bytes left before using it.
 *
 * The reader runs twice over the same bytes with the same code. The first
 * pass validates the whole body and counts vector entries, attributes and
 * byte-string sizes; the second, after one malloc of exactly that much,
 * fills the arrays and copies the byte strings. Nothing is allocated for a
 * body that turns out bad, a decoded message owns a single block and does
 * not depend on the input buffer, and the block is at most about 8 bytes
 * per input byte (a 16-byte vector entry costs at least 2 input bytes, a
 * 56-byte attribute record at least 7, and byte strings are copied once).
 *
 * The reader accepts only the shortest encoding of every integer, length
 * and count, the form msgpack-c's packer writes. The cost is that a peer
 * using a padding encoder is refused; the gain is that every accepted body
 * has exactly one encoding, so decode-then-encode reproduces the input byte
 * for byte, which the tests and fuzzers check on any input that decodes.
 */
#include "sn_wire.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#define SN_WIRE_DELTA_FIELDS 10
#define SN_WIRE_STATE_FIELDS 7
#define SN_WIRE_META_FIELDS 3
#define SN_WIRE_ATTR_FIELDS 5

/* What present zero-length ids, names and values point to, so that no
 * decoded byte string is NULL unless it is a removed attribute's value. */
static const uint8_t sn_wire_empty[1];

/* ------------------------------------------------------------ encoding */

static bool sn_wire_vv_ok(const sn_vv_t *vv)
{
    return vv->n <= SN_VV_MAX && (vv->n == 0 || vv->dots);
}

/* Checks the limits the decoder enforces, so the encoder never produces a
 * body its peers would refuse, and sums the byte strings for an early
 * size check. */
static int sn_wire_state_ok(const sn_state_t *st, uint64_t *raw)
{
    if (!sn_wire_vv_ok(&st->vv) || !sn_wire_vv_ok(&st->dv) || !sn_wire_vv_ok(&st->gc))
        return SN_EINVAL;
    if (st->nattrs > SN_ATTRS_MAX || (st->nattrs && !st->attrs))
        return SN_EINVAL;
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        if (a->name_len > SN_NAME_MAX || (a->name_len && !a->name))
            return SN_EINVAL;
        if (!a->removed && a->value_len && !a->value)
            return SN_EINVAL;
        *raw += a->name_len + (a->removed ? 0u : (uint64_t) a->value_len);
    }
    return *raw > SN_WIRE_FRAME_MAX ? SN_ETOOBIG : 0;
}

static int sn_wire_pack_bin(msgpack_packer *pk, const uint8_t *p, uint32_t n)
{
    /* msgpack-c's body writer would pass a NULL source to memcpy for an
     * empty string. */
    return msgpack_pack_bin(pk, n) | msgpack_pack_bin_body(pk, n ? (const void *) p : sn_wire_empty, n);
}

static int sn_wire_pack_vv(msgpack_packer *pk, const sn_vv_t *vv)
{
    int err = msgpack_pack_array(pk, (size_t) vv->n * 2);
    for (uint32_t i = 0; i < vv->n; i++) {
        err |= msgpack_pack_uint64(pk, vv->dots[i].node);
        err |= msgpack_pack_uint64(pk, vv->dots[i].counter);
    }
    return err;
}

/* The fields a delta and a state share after their heads: last_access_ms,
 * meta, attrs, gc. The GC vector came last to the model and goes last on
 * the wire, so the fields before it keep their positions. */
static int sn_wire_pack_tail(msgpack_packer *pk, const sn_state_t *st)
{
    int err = msgpack_pack_uint64(pk, st->last_access_ms);
    if (st->has_meta) {
        err |= msgpack_pack_array(pk, SN_WIRE_META_FIELDS);
        err |= msgpack_pack_uint32(pk, st->max_inactive);
        err |= msgpack_pack_uint64(pk, st->meta_stamp);
        err |= msgpack_pack_uint64(pk, st->meta_origin);
    } else {
        err |= msgpack_pack_nil(pk);
    }
    err |= msgpack_pack_array(pk, st->nattrs);
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        err |= msgpack_pack_array(pk, SN_WIRE_ATTR_FIELDS);
        err |= sn_wire_pack_bin(pk, a->name, a->name_len);
        if (a->removed)
            err |= msgpack_pack_nil(pk);
        else
            err |= sn_wire_pack_bin(pk, a->value, a->value_len);
        err |= msgpack_pack_uint32(pk, a->flags);
        err |= msgpack_pack_uint64(pk, a->stamp);
        err |= msgpack_pack_uint64(pk, a->origin);
    }
    return err | sn_wire_pack_vv(pk, &st->gc);
}

/* Hands the sbuffer's bytes to the caller, or frees them. `err` is the OR of
 * the packer's returns: non-zero only when the sbuffer failed to grow. */
static int sn_wire_finish(msgpack_sbuffer *sb, int err, uint8_t **out, size_t *out_len)
{
    int rc = 0;
    if (err || !sb->data)
        rc = SN_ENOMEM;
    else if (sb->size > SN_WIRE_FRAME_MAX)
        rc = SN_ETOOBIG;
    if (rc) {
        msgpack_sbuffer_destroy(sb);
        return rc;
    }
    *out_len = sb->size;
    *out = (uint8_t *) msgpack_sbuffer_release(sb);
    return 0;
}

static bool sn_wire_id_ok(const uint8_t *id, uint32_t id_len)
{
    return id && id_len >= 1 && id_len <= SN_ID_MAX;
}

int sn_wire_encode_delta(const sn_delta_t *d, uint8_t **out, size_t *out_len)
{
    if (!d || !out || !out_len || !sn_wire_id_ok(d->id, d->id_len))
        return SN_EINVAL;
    if (d->kind != SN_DELTA_WRITE && d->kind != SN_DELTA_DESTROY && d->kind != SN_DELTA_TOUCH)
        return SN_EINVAL;
    uint64_t raw = d->id_len;
    int rc = sn_wire_state_ok(&d->st, &raw);
    if (rc)
        return rc;

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int err = msgpack_pack_array(&pk, SN_WIRE_DELTA_FIELDS);
    err |= msgpack_pack_uint32(&pk, (uint32_t) d->kind);
    err |= sn_wire_pack_bin(&pk, d->id, d->id_len);
    err |= msgpack_pack_uint64(&pk, d->dot.node);
    err |= msgpack_pack_uint64(&pk, d->dot.counter);
    err |= sn_wire_pack_vv(&pk, &d->st.vv);
    err |= sn_wire_pack_vv(&pk, &d->st.dv);
    err |= sn_wire_pack_tail(&pk, &d->st);
    return sn_wire_finish(&sb, err, out, out_len);
}

int sn_wire_encode_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                         uint8_t **out, size_t *out_len)
{
    if (!st || !out || !out_len || !sn_wire_id_ok(id, id_len))
        return SN_EINVAL;
    uint64_t raw = id_len;
    int rc = sn_wire_state_ok(st, &raw);
    if (rc)
        return rc;

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int err = msgpack_pack_array(&pk, SN_WIRE_STATE_FIELDS);
    err |= sn_wire_pack_bin(&pk, id, id_len);
    err |= sn_wire_pack_vv(&pk, &st->vv);
    err |= sn_wire_pack_vv(&pk, &st->dv);
    err |= sn_wire_pack_tail(&pk, st);
    return sn_wire_finish(&sb, err, out, out_len);
}

/* ------------------------------------------------------------ decoding */

/* Reader over one body. In the counting pass the output pointers are NULL
 * and only the counters move; in the filling pass they point into the
 * message's block and the counters double as write positions. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    sn_dot_t *dots;
    sn_attr_t *attrs;
    uint8_t *bytes;
    size_t ndots;
    size_t nattrs;
    size_t nbytes;
} sn_wire_reader_t;

static size_t sn_wire_left(const sn_wire_reader_t *r)
{
    return (size_t) (r->end - r->p);
}

/* Reads an n-byte big-endian integer; the caller has checked the bytes. */
static uint64_t sn_wire_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads the n-byte argument after a tag, refusing it when a shorter form
 * could have carried it (value < min). */
static int sn_wire_arg(sn_wire_reader_t *r, size_t n, uint64_t min, uint64_t *v)
{
    if (sn_wire_left(r) < n)
        return SN_EPROTO;
    *v = sn_wire_be(r->p, n);
    r->p += n;
    return *v < min ? SN_EPROTO : 0;
}

static int sn_wire_read_uint(sn_wire_reader_t *r, uint64_t *v)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    if (tag <= 0x7f) {
        *v = tag;
        return 0;
    }
    switch (tag) {
    case 0xcc: return sn_wire_arg(r, 1, 0x80, v);
    case 0xcd: return sn_wire_arg(r, 2, 0x100, v);
    case 0xce: return sn_wire_arg(r, 4, 0x10000, v);
    case 0xcf: return sn_wire_arg(r, 8, UINT64_C(0x100000000), v);
    default: return SN_EPROTO;
    }
}

static int sn_wire_read_uint32(sn_wire_reader_t *r, uint32_t *v)
{
    uint64_t w = 0;
    int rc = sn_wire_read_uint(r, &w);
    if (rc == 0 && w > UINT32_MAX)
        rc = SN_EPROTO;
    *v = (uint32_t) w;
    return rc;
}

/* Reads an array header. Every element takes at least one byte, so a count
 * larger than the bytes left is refused here, before anyone loops on it. */
static int sn_wire_read_array(sn_wire_reader_t *r, uint32_t *n)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    uint64_t v;
    int rc = 0;
    if (tag >= 0x90 && tag <= 0x9f)
        v = tag & 0x0f;
    else if (tag == 0xdc)
        rc = sn_wire_arg(r, 2, 16, &v);
    else if (tag == 0xdd)
        rc = sn_wire_arg(r, 4, 0x10000, &v);
    else
        return SN_EPROTO;
    if (rc || v > sn_wire_left(r))
        return SN_EPROTO;
    *n = (uint32_t) v;
    return 0;
}

/* Reads an array header that must announce exactly `n` elements. */
static int sn_wire_expect_array(sn_wire_reader_t *r, uint32_t n)
{
    uint32_t got;
    int rc = sn_wire_read_array(r, &got);
    return rc ? rc : got == n ? 0 : SN_EPROTO;
}

static bool sn_wire_peek_nil(sn_wire_reader_t *r)
{
    if (r->p < r->end && *r->p == 0xc0) {
        r->p++;
        return true;
    }
    return false;
}

/* Reads a bin of at most `max` bytes; in the filling pass copies it into
 * the message's block and points *data at the copy. */
static int sn_wire_read_bin(sn_wire_reader_t *r, uint32_t max, const uint8_t **data, uint32_t *n)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    uint64_t v;
    int rc;
    switch (tag) {
    case 0xc4: rc = sn_wire_arg(r, 1, 0, &v); break;
    case 0xc5: rc = sn_wire_arg(r, 2, 0x100, &v); break;
    case 0xc6: rc = sn_wire_arg(r, 4, 0x10000, &v); break;
    default: return SN_EPROTO;
    }
    if (rc || v > max || v > sn_wire_left(r))
        return SN_EPROTO;
    *n = (uint32_t) v;
    if (v == 0) {
        *data = sn_wire_empty;
    } else if (r->bytes) {
        memcpy(r->bytes + r->nbytes, r->p, v);
        *data = r->bytes + r->nbytes;
    }
    r->nbytes += v;
    r->p += v;
    return 0;
}

static int sn_wire_read_vv(sn_wire_reader_t *r, sn_vv_t *vv)
{
    uint32_t n;
    int rc = sn_wire_read_array(r, &n);
    if (rc)
        return rc;
    if (n % 2 || n / 2 > SN_VV_MAX)
        return SN_EPROTO;
    vv->n = n / 2;
    vv->dots = r->dots && n ? r->dots + r->ndots : NULL;
    for (uint32_t i = 0; i < vv->n; i++) {
        uint64_t node, counter;
        if ((rc = sn_wire_read_uint(r, &node)) || (rc = sn_wire_read_uint(r, &counter)))
            return rc;
        if (r->dots)
            r->dots[r->ndots] = (sn_dot_t) {node, counter};
        r->ndots++;
    }
    return 0;
}

static int sn_wire_read_attr(sn_wire_reader_t *r, sn_attr_t *a)
{
    int rc = sn_wire_expect_array(r, SN_WIRE_ATTR_FIELDS);
    if (rc || (rc = sn_wire_read_bin(r, SN_NAME_MAX, &a->name, &a->name_len)))
        return rc;
    a->removed = sn_wire_peek_nil(r);
    if (a->removed) {
        a->value = NULL;
        a->value_len = 0;
    } else if ((rc = sn_wire_read_bin(r, SN_WIRE_FRAME_MAX, &a->value, &a->value_len))) {
        return rc;
    }
    if ((rc = sn_wire_read_uint32(r, &a->flags)) || (rc = sn_wire_read_uint(r, &a->stamp)))
        return rc;
    return sn_wire_read_uint(r, &a->origin);
}

/* last_access_ms, meta, attrs, gc: shared by deltas and states. */
static int sn_wire_read_tail(sn_wire_reader_t *r, sn_state_t *st)
{
    int rc = sn_wire_read_uint(r, &st->last_access_ms);
    if (rc)
        return rc;
    st->has_meta = !sn_wire_peek_nil(r);
    if (st->has_meta) {
        if ((rc = sn_wire_expect_array(r, SN_WIRE_META_FIELDS)) ||
            (rc = sn_wire_read_uint32(r, &st->max_inactive)) ||
            (rc = sn_wire_read_uint(r, &st->meta_stamp)) ||
            (rc = sn_wire_read_uint(r, &st->meta_origin)))
            return rc;
    }
    uint32_t n;
    if ((rc = sn_wire_read_array(r, &n)))
        return rc;
    if (n > SN_ATTRS_MAX)
        return SN_EPROTO;
    st->nattrs = n;
    st->attrs = r->attrs && n ? r->attrs + r->nattrs : NULL;
    for (uint32_t i = 0; i < n; i++) {
        sn_attr_t scratch;
        sn_attr_t *a = r->attrs ? &r->attrs[r->nattrs] : &scratch;
        memset(a, 0, sizeof *a);
        if ((rc = sn_wire_read_attr(r, a)))
            return rc;
        r->nattrs++;
    }
    return sn_wire_read_vv(r, &st->gc);
}

static int sn_wire_read_id(sn_wire_reader_t *r, const uint8_t **id, uint32_t *id_len)
{
    int rc = sn_wire_read_bin(r, SN_ID_MAX, id, id_len);
    return rc ? rc : *id_len == 0 ? SN_EPROTO : 0;
}

static int sn_wire_read_delta(sn_wire_reader_t *r, sn_delta_t *d)
{
    uint32_t kind;
    int rc = sn_wire_expect_array(r, SN_WIRE_DELTA_FIELDS);
    if (rc || (rc = sn_wire_read_uint32(r, &kind)))
        return rc;
    if (kind != SN_DELTA_WRITE && kind != SN_DELTA_DESTROY && kind != SN_DELTA_TOUCH)
        return SN_EPROTO;
    d->kind = (sn_delta_kind_t) kind;
    if ((rc = sn_wire_read_id(r, &d->id, &d->id_len)) ||
        (rc = sn_wire_read_uint(r, &d->dot.node)) ||
        (rc = sn_wire_read_uint(r, &d->dot.counter)) ||
        (rc = sn_wire_read_vv(r, &d->st.vv)) ||
        (rc = sn_wire_read_vv(r, &d->st.dv)) ||
        (rc = sn_wire_read_tail(r, &d->st)))
        return rc;
    return r->p == r->end ? 0 : SN_EPROTO;
}

static int sn_wire_read_state(sn_wire_reader_t *r, sn_wire_state_t *s)
{
    int rc = sn_wire_expect_array(r, SN_WIRE_STATE_FIELDS);
    if (rc || (rc = sn_wire_read_id(r, &s->id, &s->id_len)) ||
        (rc = sn_wire_read_vv(r, &s->state.vv)) ||
        (rc = sn_wire_read_vv(r, &s->state.dv)) ||
        (rc = sn_wire_read_tail(r, &s->state)))
        return rc;
    return r->p == r->end ? 0 : SN_EPROTO;
}

/* Allocates the block the counting pass sized and points the reader at it
 * for the filling pass. Dots first, attributes next (both 8-byte aligned),
 * byte strings last. The id is never empty, so the block never is. */
static int sn_wire_alloc(sn_wire_reader_t *r, const void *buf, size_t len, void **mem)
{
    size_t dots = r->ndots * sizeof(sn_dot_t);
    size_t attrs = r->nattrs * sizeof(sn_attr_t);
    uint8_t *block = malloc(dots + attrs + r->nbytes);
    if (!block)
        return SN_ENOMEM;
    *r = (sn_wire_reader_t) {
        .p = buf,
        .end = (const uint8_t *) buf + len,
        .dots = r->ndots ? (sn_dot_t *) block : NULL,
        .attrs = r->nattrs ? (sn_attr_t *) (block + dots) : NULL,
        .bytes = block + dots + attrs,
    };
    *mem = block;
    return 0;
}

static int sn_wire_check_input(const void *buf, size_t len, const void *out)
{
    if (!out || (!buf && len))
        return SN_EINVAL;
    if (len > SN_WIRE_FRAME_MAX)
        return SN_ETOOBIG;
    /* Refused here so that the reader never does arithmetic on a NULL buf. */
    return len == 0 ? SN_EPROTO : 0;
}

int sn_wire_decode_delta(const void *buf, size_t len, sn_wire_delta_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    int rc = sn_wire_check_input(buf, len, out);
    if (rc)
        return rc;
    sn_wire_reader_t r = {.p = buf, .end = (const uint8_t *) buf + len};
    sn_delta_t d = {0};
    if ((rc = sn_wire_read_delta(&r, &d)) || (rc = sn_wire_alloc(&r, buf, len, &out->mem)))
        return rc;
    rc = sn_wire_read_delta(&r, &out->delta);
    /* Same bytes, same code: the filling pass cannot fail where counting
     * succeeded. */
    assert(rc == 0);
    (void) rc;
    return 0;
}

void sn_wire_delta_release(sn_wire_delta_t *msg)
{
    if (!msg)
        return;
    free(msg->mem);
    memset(msg, 0, sizeof *msg);
}

int sn_wire_decode_state(const void *buf, size_t len, sn_wire_state_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    int rc = sn_wire_check_input(buf, len, out);
    if (rc)
        return rc;
    sn_wire_reader_t r = {.p = buf, .end = (const uint8_t *) buf + len};
    sn_wire_state_t s = {0};
    if ((rc = sn_wire_read_state(&r, &s)) || (rc = sn_wire_alloc(&r, buf, len, &out->mem)))
        return rc;
    rc = sn_wire_read_state(&r, out);
    assert(rc == 0);
    (void) rc;
    return 0;
}

void sn_wire_state_release(sn_wire_state_t *msg)
{
    if (!msg)
        return;
    free(msg->mem);
    memset(msg, 0, sizeof *msg);
}
