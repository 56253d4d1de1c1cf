/*
 * sn_mpack.h - the bounded msgpack reader and the pack helpers that
 * sn_wire and sn_msg share.
 *
 * Module-private header (not installed). The reader walks a byte range,
 * accepts only the shortest encoding of every integer, length and count,
 * and checks every length and count against the bytes left before using
 * it. It is meant to run twice over the same bytes: a counting pass, in
 * which dots and bytes are NULL and only ndots and nbytes move, and a
 * filling pass, in which they point into the caller's block and the
 * counters double as write positions. The top comment of sn_mpack.c gives
 * the reasons.
 *
 * A codec that collects more kinds of output (attributes, list items) keeps
 * its own counters next to this struct, with this struct as its first
 * member, and reads through &r->m.
 *
 * Every read returns 0 or SN_EPROTO.
 *
 * Thread-safety: a reader belongs to one decode call; the functions keep no
 * state of their own.
 */
#ifndef SN_MPACK_H_INCLUDED
#define SN_MPACK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "sn_store.h"

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    sn_dot_t *dots;     /* NULL while counting */
    uint8_t *bytes;     /* NULL while counting */
    size_t ndots;
    size_t nbytes;
    bool borrow;        /* bin strings point into the input, uncopied */
} sn_mpack_reader_t;

/* What present zero-length byte strings point to: valid, and NUL-terminated,
 * so that no decoded string is NULL merely for being empty. */
extern const uint8_t sn_mpack_empty[1];

/* The bytes not yet read. */
size_t sn_mpack_left(const sn_mpack_reader_t *r);

/* A non-negative integer of at most 64 bits. */
int sn_mpack_read_uint(sn_mpack_reader_t *r, uint64_t *v);

/* As sn_mpack_read_uint, refusing values over UINT32_MAX. */
int sn_mpack_read_uint32(sn_mpack_reader_t *r, uint32_t *v);

int sn_mpack_read_bool(sn_mpack_reader_t *r, bool *v);

/* Consumes a nil if one comes next and says whether it did. */
bool sn_mpack_peek_nil(sn_mpack_reader_t *r);

/* An array header. A count larger than the bytes left is refused, since
 * every element takes at least one byte. */
int sn_mpack_read_array(sn_mpack_reader_t *r, uint32_t *n);

/* An array header that must announce exactly `n` elements. */
int sn_mpack_expect_array(sn_mpack_reader_t *r, uint32_t n);

/*
 * A bin (str false) or str (str true) of min..max bytes. An empty one
 * points *data at sn_mpack_empty and costs nothing in the block. Otherwise
 * the counting pass adds its length to nbytes (plus one for a str's NUL),
 * and the filling pass copies it there, NUL-terminates a str, and points
 * *data at the copy. A bin read with r->borrow set costs nothing in the
 * block either: *data points at it in the input.
 */
int sn_mpack_read_bytes(sn_mpack_reader_t *r, bool str, uint32_t min, uint32_t max,
                        const uint8_t **data, uint32_t *n);

/* A version vector as a flat array of node, counter pairs, at most
 * SN_VV_MAX of them. Its dots take ndots entries of the dots array. */
int sn_mpack_read_vv(sn_mpack_reader_t *r, sn_vv_t *vv);

/* The pack helpers return the OR of msgpack-c's returns, like its own. */
int sn_mpack_pack_bin(msgpack_packer *pk, const uint8_t *p, uint32_t n);
int sn_mpack_pack_str(msgpack_packer *pk, const uint8_t *p, uint32_t n);
int sn_mpack_pack_bool(msgpack_packer *pk, bool v);
int sn_mpack_pack_vv(msgpack_packer *pk, const sn_vv_t *vv);

#endif
