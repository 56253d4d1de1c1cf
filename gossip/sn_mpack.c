/*
 * sn_mpack.c - the bounded msgpack reader under sn_wire's and sn_msg's
 * decoders, and the pack helpers their encoders share.
 *
 * Decoding does not use msgpack-c's unpacker. That unpacker allocates for
 * the element count an array or map header declares before reading a single
 * element, so five bytes can ask for gigabytes, and it builds a generic
 * object tree that would then have to be walked again. Both schemas are
 * fixed and shallow (at most three arrays deep, no maps, no floats), so a
 * reader written over the bytes is short, cannot recurse, and checks every
 * length and count against the bytes left before using it.
 *
 * Each decoder runs this reader twice over the same bytes with the same
 * code. The first pass validates the whole input and counts what must be
 * stored (vector entries and bytes to copy here; the codecs count their own
 * records beside them); the second, after one malloc of exactly that much,
 * fills the arrays and copies the byte strings. Nothing is allocated for
 * input that turns out bad, and a decoded message owns a single block and
 * does not depend on the input buffer.
 *
 * The reader accepts only the shortest encoding of every integer, length
 * and count, the form msgpack-c's packer writes. The cost is that a peer
 * using a padding encoder is refused; the gain is that every accepted input
 * has exactly one encoding, so decode-then-encode reproduces it byte for
 * byte, which the tests and fuzzers check on any input that decodes.
 */
#include "sn_mpack.h"

#include <string.h>

const uint8_t sn_mpack_empty[1];

size_t sn_mpack_left(const sn_mpack_reader_t *r)
{
    return (size_t) (r->end - r->p);
}

/* Reads the n-byte big-endian argument after a tag, refusing it when a
 * shorter form could have carried it (value < min). */
static int sn_mpack_arg(sn_mpack_reader_t *r, size_t n, uint64_t min, uint64_t *v)
{
    if (sn_mpack_left(r) < n)
        return SN_EPROTO;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | r->p[i];
    r->p += n;
    *v = x;
    return x < min ? SN_EPROTO : 0;
}

int sn_mpack_read_uint(sn_mpack_reader_t *r, uint64_t *v)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    if (tag <= 0x7f) {
        *v = tag;
        return 0;
    }
    switch (tag) {
    case 0xcc: return sn_mpack_arg(r, 1, 0x80, v);
    case 0xcd: return sn_mpack_arg(r, 2, 0x100, v);
    case 0xce: return sn_mpack_arg(r, 4, 0x10000, v);
    case 0xcf: return sn_mpack_arg(r, 8, UINT64_C(0x100000000), v);
    default: return SN_EPROTO;
    }
}

int sn_mpack_read_uint32(sn_mpack_reader_t *r, uint32_t *v)
{
    uint64_t w = 0;
    int rc = sn_mpack_read_uint(r, &w);
    if (rc == 0 && w > UINT32_MAX)
        rc = SN_EPROTO;
    *v = (uint32_t) w;
    return rc;
}

int sn_mpack_read_bool(sn_mpack_reader_t *r, bool *v)
{
    if (r->p == r->end || (*r->p != 0xc2 && *r->p != 0xc3))
        return SN_EPROTO;
    *v = *r->p++ == 0xc3;
    return 0;
}

bool sn_mpack_peek_nil(sn_mpack_reader_t *r)
{
    if (r->p < r->end && *r->p == 0xc0) {
        r->p++;
        return true;
    }
    return false;
}

int sn_mpack_read_array(sn_mpack_reader_t *r, uint32_t *n)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    uint64_t v;
    int rc = 0;
    if (tag >= 0x90 && tag <= 0x9f)
        v = tag & 0x0f;
    else if (tag == 0xdc)
        rc = sn_mpack_arg(r, 2, 16, &v);
    else if (tag == 0xdd)
        rc = sn_mpack_arg(r, 4, 0x10000, &v);
    else
        return SN_EPROTO;
    if (rc || v > sn_mpack_left(r))
        return SN_EPROTO;
    *n = (uint32_t) v;
    return 0;
}

int sn_mpack_expect_array(sn_mpack_reader_t *r, uint32_t n)
{
    uint32_t got;
    int rc = sn_mpack_read_array(r, &got);
    return rc ? rc : got == n ? 0 : SN_EPROTO;
}

int sn_mpack_read_bytes(sn_mpack_reader_t *r, bool str, uint32_t min, uint32_t max,
                        const uint8_t **data, uint32_t *n)
{
    if (r->p == r->end)
        return SN_EPROTO;
    uint8_t tag = *r->p++;
    uint64_t v;
    int rc;
    if (str && tag >= 0xa0 && tag <= 0xbf) {
        v = tag & 0x1f;
        rc = 0;
    } else if (str) {
        switch (tag) {
        case 0xd9: rc = sn_mpack_arg(r, 1, 32, &v); break;
        case 0xda: rc = sn_mpack_arg(r, 2, 0x100, &v); break;
        case 0xdb: rc = sn_mpack_arg(r, 4, 0x10000, &v); break;
        default: return SN_EPROTO;
        }
    } else {
        switch (tag) {
        case 0xc4: rc = sn_mpack_arg(r, 1, 0, &v); break;
        case 0xc5: rc = sn_mpack_arg(r, 2, 0x100, &v); break;
        case 0xc6: rc = sn_mpack_arg(r, 4, 0x10000, &v); break;
        default: return SN_EPROTO;
        }
    }
    if (rc || v < min || v > max || v > sn_mpack_left(r))
        return SN_EPROTO;
    *n = (uint32_t) v;
    size_t copy = v + (str ? 1 : 0);
    if (v == 0) {
        *data = sn_mpack_empty;
        copy = 0;
    } else if (r->borrow && !str) {
        *data = r->p;  /* a str is copied all the same: it gets its NUL */
        copy = 0;
    } else if (r->bytes) {
        memcpy(r->bytes + r->nbytes, r->p, v);
        if (str)
            r->bytes[r->nbytes + v] = 0;
        *data = r->bytes + r->nbytes;
    }
    r->nbytes += copy;
    r->p += v;
    return 0;
}

int sn_mpack_read_vv(sn_mpack_reader_t *r, sn_vv_t *vv)
{
    uint32_t n;
    int rc = sn_mpack_read_array(r, &n);
    if (rc)
        return rc;
    if (n % 2 || n / 2 > SN_VV_MAX)
        return SN_EPROTO;
    vv->n = n / 2;
    vv->dots = r->dots && n ? r->dots + r->ndots : NULL;
    for (uint32_t i = 0; i < vv->n; i++) {
        uint64_t node, counter;
        if ((rc = sn_mpack_read_uint(r, &node)) || (rc = sn_mpack_read_uint(r, &counter)))
            return rc;
        if (r->dots)
            r->dots[r->ndots] = (sn_dot_t) {node, counter};
        r->ndots++;
    }
    return 0;
}

/* msgpack-c's body writers would hand a NULL source to memcpy for an empty
 * string, so an empty one is written from sn_mpack_empty. */
int sn_mpack_pack_bin(msgpack_packer *pk, const uint8_t *p, uint32_t n)
{
    return msgpack_pack_bin(pk, n) |
           msgpack_pack_bin_body(pk, n ? (const void *) p : sn_mpack_empty, n);
}

int sn_mpack_pack_str(msgpack_packer *pk, const uint8_t *p, uint32_t n)
{
    return msgpack_pack_str(pk, n) |
           msgpack_pack_str_body(pk, n ? (const void *) p : sn_mpack_empty, n);
}

int sn_mpack_pack_bool(msgpack_packer *pk, bool v)
{
    return v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

int sn_mpack_pack_vv(msgpack_packer *pk, const sn_vv_t *vv)
{
    int err = msgpack_pack_array(pk, (size_t) vv->n * 2);
    for (uint32_t i = 0; i < vv->n; i++) {
        err |= msgpack_pack_uint64(pk, vv->dots[i].node);
        err |= msgpack_pack_uint64(pk, vv->dots[i].counter);
    }
    return err;
}
