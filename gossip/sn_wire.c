/*
 * sn_wire.c - msgpack bodies for deltas and session states.
 *
 * Encoding goes through msgpack-c's packer (an sbuffer and a packer), whose
 * integer, array and bin writers already pick the shortest form; the body's
 * bytes are handed to the caller as they are, with no copy.
 *
 * Decoding runs sn_mpack's bounded reader (its top comment gives the
 * reasons for a reader over the bytes, the two passes and the canonical-
 * only rule). The body's schema is at most three arrays deep, with no maps,
 * strings or floats. The first pass validates the whole body and counts
 * vector entries, attributes and byte-string sizes; the second, after one
 * malloc of exactly that much, fills the arrays and copies the byte
 * strings. The block is at most about 8 bytes per input byte (a 16-byte
 * vector entry costs at least 2 input bytes, a 56-byte attribute record at
 * least 7, and byte strings are copied once).
 *
 * Because only the shortest encodings are accepted, decode-then-encode
 * reproduces any body that decodes byte for byte, which the tests and
 * fuzzers check.
 */
#include "sn_wire.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "sn_mpack.h"

#define SN_WIRE_DELTA_FIELDS 10
#define SN_WIRE_STATE_FIELDS 7
#define SN_WIRE_META_FIELDS 3
#define SN_WIRE_ATTR_FIELDS 5

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
        err |= sn_mpack_pack_bin(pk, a->name, a->name_len);
        if (a->removed)
            err |= msgpack_pack_nil(pk);
        else
            err |= sn_mpack_pack_bin(pk, a->value, a->value_len);
        err |= msgpack_pack_uint32(pk, a->flags);
        err |= msgpack_pack_uint64(pk, a->stamp);
        err |= msgpack_pack_uint64(pk, a->origin);
    }
    return err | sn_mpack_pack_vv(pk, &st->gc);
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

/* msgpack's largest headers and integers */
#define MP_HEAD 5     /* an array's or a byte string's header */
#define MP_U32 5
#define MP_U64 9

/* sn_wire_size_bound, given `raw`: the id's and the attributes' bytes, as
 * sn_wire_state_ok sums them. */
static size_t sn_wire_bound(uint64_t raw, const sn_state_t *st)
{
    /* a delta's head (the larger): its array, kind, id's header, dot and
     * two vectors' headers; then the tail's fixed part: last access, meta,
     * the attributes' array and the GC vector's header */
    size_t n = 1 + MP_U32 + MP_HEAD + 2 * MP_U64 + 2 * MP_HEAD + MP_U64 +
               (1 + MP_U32 + 2 * MP_U64) + MP_HEAD + MP_HEAD;
    n += 2 * MP_U64 * ((size_t) st->vv.n + st->dv.n + st->gc.n);
    /* each attribute's array, two byte strings' headers, flags and stamps */
    n += (1 + 2 * MP_HEAD + MP_U32 + 2 * MP_U64) * (size_t) st->nattrs;
    return n + (size_t) raw;
}

size_t sn_wire_size_bound(uint32_t id_len, const sn_state_t *st)
{
    uint64_t raw = id_len;
    for (uint32_t i = 0; i < st->nattrs; i++)
        raw += st->attrs[i].name_len + (st->attrs[i].removed ? 0u : st->attrs[i].value_len);
    return sn_wire_bound(raw, st);
}

/* An empty buffer of sn_wire_bound's bytes: msgpack's own starts at 8 KiB,
 * which a queued delta of 1 KiB would otherwise hold to the end. If the
 * allocation fails, the first write tries again and fails the encoding. */
static void sn_wire_sbuffer_for(msgpack_sbuffer *sb, uint64_t raw, const sn_state_t *st)
{
    size_t bound = sn_wire_bound(raw, st);
    sb->size = 0;
    sb->data = malloc(bound);
    sb->alloc = sb->data ? bound : 0;
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
    sn_wire_sbuffer_for(&sb, raw, &d->st);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int err = msgpack_pack_array(&pk, SN_WIRE_DELTA_FIELDS);
    err |= msgpack_pack_uint32(&pk, (uint32_t) d->kind);
    err |= sn_mpack_pack_bin(&pk, d->id, d->id_len);
    err |= msgpack_pack_uint64(&pk, d->dot.node);
    err |= msgpack_pack_uint64(&pk, d->dot.counter);
    err |= sn_mpack_pack_vv(&pk, &d->st.vv);
    err |= sn_mpack_pack_vv(&pk, &d->st.dv);
    err |= sn_wire_pack_tail(&pk, &d->st);
    return sn_wire_finish(&sb, err, out, out_len);
}

/* Packs a state onto whatever `pk` writes to. */
static int sn_wire_pack_state(msgpack_packer *pk, const uint8_t *id, uint32_t id_len,
                              const sn_state_t *st)
{
    int err = msgpack_pack_array(pk, SN_WIRE_STATE_FIELDS);
    err |= sn_mpack_pack_bin(pk, id, id_len);
    err |= sn_mpack_pack_vv(pk, &st->vv);
    err |= sn_mpack_pack_vv(pk, &st->dv);
    return err | sn_wire_pack_tail(pk, st);
}

/* The checks every encoding of a state starts with: a valid id and a state
 * within the wire's limits (*raw: its bytes, the id's included). */
static int sn_wire_state_args_ok(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                                 uint64_t *raw)
{
    if (!st || !sn_wire_id_ok(id, id_len))
        return SN_EINVAL;
    *raw = id_len;
    return sn_wire_state_ok(st, raw);
}

int sn_wire_encode_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                         uint8_t **out, size_t *out_len)
{
    if (!out || !out_len)
        return SN_EINVAL;
    uint64_t raw;
    int rc = sn_wire_state_args_ok(id, id_len, st, &raw);
    if (rc)
        return rc;

    msgpack_sbuffer sb;
    msgpack_packer pk;
    sn_wire_sbuffer_for(&sb, raw, st);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    return sn_wire_finish(&sb, sn_wire_pack_state(&pk, id, id_len, st), out, out_len);
}

int sn_wire_append_state(msgpack_sbuffer *sb, const uint8_t *id, uint32_t id_len,
                         const sn_state_t *st)
{
    if (!sb)
        return SN_EINVAL;
    uint64_t raw;
    int rc = sn_wire_state_args_ok(id, id_len, st, &raw);
    if (rc)
        return rc;
    size_t start = sb->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    rc = sn_wire_pack_state(&pk, id, id_len, st) ? SN_ENOMEM : 0;
    if (!rc && sb->size - start > SN_WIRE_FRAME_MAX)
        rc = SN_ETOOBIG;
    if (rc)
        sb->size = start;
    return rc;
}

/* A buffer msgpack writes into that refuses to grow: where the bytes are
 * not the buffer's to reallocate (a pad of the tier's copies). */
typedef struct {
    uint8_t *buf;
    size_t cap, len;
} fixed_t;

static int fixed_write(void *data, const char *b, size_t n)
{
    fixed_t *f = data;
    if (n > f->cap - f->len)
        return -1;
    memcpy(f->buf + f->len, b, n);
    f->len += n;
    return 0;
}

int sn_wire_put_state(uint8_t *buf, size_t cap, size_t *len, const uint8_t *id,
                      uint32_t id_len, const sn_state_t *st)
{
    if (!buf || !len)
        return SN_EINVAL;
    uint64_t raw;
    int rc = sn_wire_state_args_ok(id, id_len, st, &raw);
    if (rc)
        return rc;
    fixed_t f = {buf, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f, fixed_write);
    if (sn_wire_pack_state(&pk, id, id_len, st) || f.len > SN_WIRE_FRAME_MAX)
        return SN_ETOOBIG;
    *len = f.len;
    return 0;
}

/* ------------------------------------------------------------ decoding */

/* Reader over one body: sn_mpack's reader, which counts and fills dots and
 * bytes, plus the attribute records only a body has. In the counting pass
 * attrs is NULL and only nattrs moves; in the filling pass it points into
 * the message's block and nattrs doubles as the write position. */
typedef struct {
    sn_mpack_reader_t m;
    sn_attr_t *attrs;
    size_t nattrs;
} sn_wire_reader_t;

static int sn_wire_read_attr(sn_wire_reader_t *r, sn_attr_t *a)
{
    int rc = sn_mpack_expect_array(&r->m, SN_WIRE_ATTR_FIELDS);
    if (rc || (rc = sn_mpack_read_bytes(&r->m, false, 0, SN_NAME_MAX, &a->name,
                                        &a->name_len)))
        return rc;
    /* A removed attribute's value is the one decoded byte string left NULL;
     * an empty one points at sn_mpack_empty. */
    a->removed = sn_mpack_peek_nil(&r->m);
    if (a->removed) {
        a->value = NULL;
        a->value_len = 0;
    } else if ((rc = sn_mpack_read_bytes(&r->m, false, 0, SN_WIRE_FRAME_MAX, &a->value,
                                         &a->value_len))) {
        return rc;
    }
    if ((rc = sn_mpack_read_uint32(&r->m, &a->flags)) ||
        (rc = sn_mpack_read_uint(&r->m, &a->stamp)))
        return rc;
    return sn_mpack_read_uint(&r->m, &a->origin);
}

/* last_access_ms, meta, attrs, gc: shared by deltas and states. */
static int sn_wire_read_tail(sn_wire_reader_t *r, sn_state_t *st)
{
    int rc = sn_mpack_read_uint(&r->m, &st->last_access_ms);
    if (rc)
        return rc;
    st->has_meta = !sn_mpack_peek_nil(&r->m);
    if (st->has_meta) {
        if ((rc = sn_mpack_expect_array(&r->m, SN_WIRE_META_FIELDS)) ||
            (rc = sn_mpack_read_uint32(&r->m, &st->max_inactive)) ||
            (rc = sn_mpack_read_uint(&r->m, &st->meta_stamp)) ||
            (rc = sn_mpack_read_uint(&r->m, &st->meta_origin)))
            return rc;
    }
    uint32_t n;
    if ((rc = sn_mpack_read_array(&r->m, &n)))
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
    return sn_mpack_read_vv(&r->m, &st->gc);
}

static int sn_wire_read_id(sn_wire_reader_t *r, const uint8_t **id, uint32_t *id_len)
{
    int rc = sn_mpack_read_bytes(&r->m, false, 0, SN_ID_MAX, id, id_len);
    return rc ? rc : *id_len == 0 ? SN_EPROTO : 0;
}

static int sn_wire_read_delta(sn_wire_reader_t *r, sn_delta_t *d)
{
    uint32_t kind;
    int rc = sn_mpack_expect_array(&r->m, SN_WIRE_DELTA_FIELDS);
    if (rc || (rc = sn_mpack_read_uint32(&r->m, &kind)))
        return rc;
    if (kind != SN_DELTA_WRITE && kind != SN_DELTA_DESTROY && kind != SN_DELTA_TOUCH)
        return SN_EPROTO;
    d->kind = (sn_delta_kind_t) kind;
    if ((rc = sn_wire_read_id(r, &d->id, &d->id_len)) ||
        (rc = sn_mpack_read_uint(&r->m, &d->dot.node)) ||
        (rc = sn_mpack_read_uint(&r->m, &d->dot.counter)) ||
        (rc = sn_mpack_read_vv(&r->m, &d->st.vv)) ||
        (rc = sn_mpack_read_vv(&r->m, &d->st.dv)) ||
        (rc = sn_wire_read_tail(r, &d->st)))
        return rc;
    return r->m.p == r->m.end ? 0 : SN_EPROTO;
}

static int sn_wire_read_state(sn_wire_reader_t *r, sn_wire_state_t *s)
{
    int rc = sn_mpack_expect_array(&r->m, SN_WIRE_STATE_FIELDS);
    if (rc || (rc = sn_wire_read_id(r, &s->id, &s->id_len)) ||
        (rc = sn_mpack_read_vv(&r->m, &s->state.vv)) ||
        (rc = sn_mpack_read_vv(&r->m, &s->state.dv)) ||
        (rc = sn_wire_read_tail(r, &s->state)))
        return rc;
    return r->m.p == r->m.end ? 0 : SN_EPROTO;
}

/* Allocates the block the counting pass sized and points the reader at it
 * for the filling pass. Dots first, attributes next (both 8-byte aligned),
 * byte strings last. The id is never empty, so a copying read's block never
 * is. */
static int sn_wire_alloc(sn_wire_reader_t *r, const void *buf, size_t len, void **mem)
{
    size_t dots = r->m.ndots * sizeof(sn_dot_t);
    size_t attrs = r->nattrs * sizeof(sn_attr_t);
    /* a borrowing read may have nothing to put here: still a block, so
     * that a decoded state always owns one */
    uint8_t *block = malloc(dots + attrs + r->m.nbytes + (r->m.borrow ? 1 : 0));
    if (!block)
        return SN_ENOMEM;
    *r = (sn_wire_reader_t) {
        .m = {
            .p = buf,
            .end = (const uint8_t *) buf + len,
            .dots = r->m.ndots ? (sn_dot_t *) block : NULL,
            .bytes = block + dots + attrs,
            .borrow = r->m.borrow,
        },
        .attrs = r->nattrs ? (sn_attr_t *) (block + dots) : NULL,
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
    sn_wire_reader_t r = {.m = {.p = buf, .end = (const uint8_t *) buf + len}};
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

static int decode_state(const void *buf, size_t len, bool borrow, sn_wire_state_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    int rc = sn_wire_check_input(buf, len, out);
    if (rc)
        return rc;
    sn_wire_reader_t r = {.m = {.p = buf, .end = (const uint8_t *) buf + len, .borrow = borrow}};
    sn_wire_state_t s = {0};
    if ((rc = sn_wire_read_state(&r, &s)) || (rc = sn_wire_alloc(&r, buf, len, &out->mem)))
        return rc;
    rc = sn_wire_read_state(&r, out);
    assert(rc == 0);
    (void) rc;
    return 0;
}

int sn_wire_decode_state(const void *buf, size_t len, sn_wire_state_t *out)
{
    return decode_state(buf, len, false, out);
}

int sn_wire_view_state(const void *buf, size_t len, sn_wire_state_t *out)
{
    return decode_state(buf, len, true, out);
}

void sn_wire_state_release(sn_wire_state_t *msg)
{
    if (!msg)
        return;
    free(msg->mem);
    memset(msg, 0, sizeof *msg);
}
