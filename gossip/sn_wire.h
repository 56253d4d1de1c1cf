/*
 * sn_wire.h - the wire codec: store deltas and session states as msgpack
 * message bodies, and back.
 *
 * Module-private header (not installed). The byte format is specified in
 * docs/PROTOCOL.md, "Message bodies"; in short, a delta is a msgpack array
 * of 10 and a state an array of 7, built only from unsigned integers, bin
 * strings, nil and arrays.
 *
 * Encodings are canonical: every integer, length and count takes msgpack's
 * shortest form, so one message has exactly one encoding. The decoders
 * insist on it, which means anything they accept re-encodes to the very
 * bytes it came from.
 *
 * The decoders treat their input as hostile: every length and count is
 * checked against the bytes left and the model's limits before it is used,
 * and nothing is allocated until the whole body has been validated. They
 * check shape and limits only; whether vectors are sorted, dv <= vv and the
 * like is for sn_store_apply() and sn_store_merge() to decide.
 *
 * Thread-safety: the functions keep no state; any thread may call them on
 * distinct objects.
 */
#ifndef SN_WIRE_H_INCLUDED
#define SN_WIRE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "sn_store.h"

/* The largest body accepted or produced: a full session with a few
 * maximum-size values fits, and a peer cannot make us parse more. */
#define SN_WIRE_FRAME_MAX (16u << 20)

/*
 * sn_wire_encode_delta - encode a delta from the store's sink.
 *
 * d:       the delta; only read. st.dv, st.gc, meta and attributes are
 *          encoded for every kind, exactly as given (a destroy or touch from
 *          the store carries none).
 * out:     receives a malloc'd buffer the caller frees with free().
 * out_len: receives its length.
 * Returns 0, or: SN_EINVAL for a NULL argument, an unknown kind, an id of
 * length 0 or over SN_ID_MAX, more than SN_VV_MAX entries in st.vv, st.dv
 * or st.gc, more than SN_ATTRS_MAX attributes, a name over SN_NAME_MAX, or
 * a NULL pointer with a non-zero length; SN_ETOOBIG if the body would exceed
 * SN_WIRE_FRAME_MAX; SN_ENOMEM. On failure *out and *out_len are untouched.
 * Removed attributes are encoded with a nil value whatever `value` holds;
 * meta fields are dropped when !has_meta.
 */
int sn_wire_encode_delta(const sn_delta_t *d, uint8_t **out, size_t *out_len);

/*
 * sn_wire_encode_state - encode a full session state (sn_store_export,
 * sn_store_scan) for repair and snapshots.
 *
 * id, id_len: the session id, 1..SN_ID_MAX bytes.
 * st:         the state; only read.
 * out, out_len, return values and failure behaviour: as for
 * sn_wire_encode_delta (there is no kind to check).
 */
int sn_wire_encode_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                         uint8_t **out, size_t *out_len);

/*
 * sn_wire_size_bound - the most bytes the encoding of a delta or a state
 * with this id length and state can take (whatever its integers' values), so
 * that a buffer of that size never grows while one is written into it.
 */
size_t sn_wire_size_bound(uint32_t id_len, const sn_state_t *st);

/*
 * sn_wire_append_state - the same encoding, appended to `sb` (a buffer the
 * caller keeps across calls, so that a stream of states, such as a
 * snapshot, costs no allocation per state). Same checks and return values;
 * on failure sb holds what it held before.
 */
int sn_wire_append_state(msgpack_sbuffer *sb, const uint8_t *id, uint32_t id_len,
                         const sn_state_t *st);

/*
 * sn_wire_put_state - the same encoding, written into buf[0..cap), which it
 * never outgrows or reallocates: with cap at least sn_wire_size_bound(id_len,
 * st) it fits. *len gets its length. Same checks and return values, and
 * SN_ETOOBIG when cap is too small (buf then holds a part of the encoding).
 */
int sn_wire_put_state(uint8_t *buf, size_t cap, size_t *len, const uint8_t *id,
                      uint32_t id_len, const sn_state_t *st);

/* A decoded delta. Every pointer inside `delta` (id, vector entries,
 * attributes, their names and values) points into `mem`, one block owned by
 * this object: the message is independent of the buffer it was decoded from,
 * which may be freed at once. Valid until sn_wire_delta_release(). Removed
 * attributes have value NULL and value_len 0; zero-length ids, names and
 * values that are present point to a valid (empty) location, never NULL. */
typedef struct {
    sn_delta_t delta;
    void *mem;
} sn_wire_delta_t;

/*
 * sn_wire_decode_delta - decode a delta body.
 *
 * buf, len: the body (exactly one message; only read, not retained).
 * out:      receives the delta.
 * Returns 0, or: SN_EINVAL for a NULL out (or NULL buf with len > 0);
 * SN_ETOOBIG if len > SN_WIRE_FRAME_MAX; SN_EPROTO for anything malformed:
 * truncated, trailing bytes, a wrong type or a non-shortest encoding in any
 * field, an unknown kind, an id of length 0 or over SN_ID_MAX, a name over
 * SN_NAME_MAX, a vector array of odd length or of more than 2 * SN_VV_MAX
 * entries, more than SN_ATTRS_MAX attributes, a flags or max_inactive over
 * 32 bits; SN_ENOMEM.
 * On failure *out is zeroed: it needs no release, and releasing it is safe.
 * The message's block is at most about 8 times len.
 */
int sn_wire_decode_delta(const void *buf, size_t len, sn_wire_delta_t *out);

/* Frees what sn_wire_decode_delta() allocated and zeroes *msg. Accepts NULL
 * and a zeroed message; releasing twice is harmless. */
void sn_wire_delta_release(sn_wire_delta_t *msg);

/* A decoded state; `id` and every pointer inside `state` point into `mem`,
 * as for sn_wire_delta_t. */
typedef struct {
    const uint8_t *id;
    uint32_t id_len;
    sn_state_t state;
    void *mem;
} sn_wire_state_t;

/*
 * sn_wire_decode_state - decode a state body.
 *
 * Arguments, return values, failure behaviour and memory bound: as for
 * sn_wire_decode_delta (there is no kind to check).
 */
int sn_wire_decode_state(const void *buf, size_t len, sn_wire_state_t *out);

/*
 * sn_wire_view_state - sn_wire_decode_state without copying the id, names
 * and values: they point into `buf`, so the state is valid only while
 * `buf` is, and until sn_wire_state_release(). For a chunk of states
 * merged as soon as they are read: a joiner otherwise copied every value
 * twice, once here and once into its store.
 */
int sn_wire_view_state(const void *buf, size_t len, sn_wire_state_t *out);

/* Frees what sn_wire_decode_state() allocated and zeroes *msg. Accepts NULL
 * and a zeroed message; releasing twice is harmless. */
void sn_wire_state_release(sn_wire_state_t *msg);

#endif
