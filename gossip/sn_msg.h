/*
 * sn_msg.h - the replication protocol's frames: one msgpack array per
 * ZeroMQ frame, and back.
 *
 * Module-private header (not installed). The byte format is specified in
 * docs/PROTOCOL.md, "Frames". Every frame is
 *
 *     [version, type, sender, ...the type's fields, in the order below]
 *
 * Bodies that are already sn_wire encodings (deltas, session states) travel
 * as msgpack `bin` and are decoded separately with sn_wire_decode_delta()
 * and sn_wire_decode_state(); this codec checks only that they are
 * non-empty and within SN_WIRE_FRAME_MAX.
 *
 * As with sn_wire, encodings are canonical (the shortest form of every
 * integer, length and count) and the decoder insists on it, so anything it
 * accepts re-encodes to the very bytes it came from. The decoder treats its
 * input as hostile: every declared length and count is checked against the
 * bytes left and this header's limits before use, and nothing is allocated
 * until the whole frame has been validated.
 *
 * Thread-safety: the functions keep no state; any thread may call them on
 * distinct objects.
 */
#ifndef SN_MSG_H_INCLUDED
#define SN_MSG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "sn_store.h"

/* The only version this codec speaks; a frame with any other is refused. */
#define SN_MSG_VERSION 1

/* The largest frame accepted or produced. Larger than SN_WIRE_FRAME_MAX so
 * that one maximum-size body fits in a frame with its envelope. */
#define SN_MSG_FRAME_MAX (32u << 20)

/* The most entries, states, digests or ids one frame may carry. */
#define SN_MSG_ITEMS_MAX 65536u

/* The longest heartbeat endpoint or name, in bytes. */
#define SN_MSG_STR_MAX 255u
#define SN_MSG_KEY_MAX 32u      /* a CURVE public key, binary */

typedef enum {
    SN_MSG_DELTA = 1,        /* PUB: one local write, in publish order */
    SN_MSG_HEARTBEAT = 2,    /* PUB: liveness + the last publish sequence */
    SN_MSG_REPAIR_REQ = 3,   /* DEALER->ROUTER: resend publish seqs [from, to] of `origin` */
    SN_MSG_REPAIR_REP = 4,   /* ROUTER->DEALER: the entries still in the backlog, or TOO_OLD */
    SN_MSG_SNAP_REQ = 5,     /* joiner->donor: start a snapshot with `credit` chunks */
    SN_MSG_SNAP_CREDIT = 6,  /* joiner->donor: grant `credit` more chunks */
    SN_MSG_SNAP_CHUNK = 7,   /* donor->joiner: states; the last chunk carries the cut */
    SN_MSG_DIGEST_REQ = 8,   /* anti-entropy: digests from `cursor`, at most `max` */
    SN_MSG_DIGEST_REP = 9,   /* anti-entropy: (id, digest) pairs and where to go on */
    SN_MSG_FETCH_REQ = 10,   /* full states of these ids */
    SN_MSG_FETCH_REP = 11,   /* the states asked for that the sender holds */
    SN_MSG_ACK = 12,         /* the sender applied publish seq `pseq` of `origin` */
    SN_MSG_DELTAS = 13,      /* PUB: consecutive local writes in one frame */
    SN_MSG_LEAVE = 14,       /* PUB and DEALER->ROUTER: the sender leaves on purpose */
    SN_MSG_CONTROL = 15,     /* operator->ROUTER: a sessctl command */
    SN_MSG_CONTROL_REP = 16, /* ROUTER->operator: its answer */
    SN_MSG_MEMBERS = 17,     /* PUB and DEALER->ROUTER: the members the sender hears */
} sn_msg_type_t;

/* One published delta as a repair reply resends it, or as one of several
 * published in one SN_MSG_DELTAS frame: the same publish sequence, flags and
 * sn_wire delta body as an SN_MSG_DELTA. */
typedef struct {
    uint64_t pseq;           /* the origin's publish sequence of this delta */
    uint32_t flags;          /* the original delta's SN_MSG_F_* flags */
    const uint8_t *body;     /* sn_wire delta, 1..SN_WIRE_FRAME_MAX bytes */
    uint32_t body_len;
} sn_msg_entry_t;

/* A byte string with an optional digest; what `bytes` holds depends on the
 * list it is in (see the message structs below). */
typedef struct {
    const uint8_t *bytes;
    uint32_t len;
    uint64_t digest;         /* DIGEST_REP only; 0 elsewhere, and not encoded */
    sn_vv_t vv;              /* DIGEST_REP only: the session's version vector */
} sn_msg_blob_t;

#define SN_MSG_F_ACK 1u            /* delta flag: the writer waits for acknowledgements */
#define SN_MSG_REPAIR_OK 0u        /* repair reply: the entries that follow */
#define SN_MSG_REPAIR_TOO_OLD 1u   /* backlog no longer holds `from`: use anti-entropy */

typedef struct {
    sn_msg_type_t type;
    uint64_t sender;                 /* the sending node's id */
    union {
        /* SN_MSG_DELTA */
        struct {
            uint64_t pseq;           /* the sender's publish sequence, 1 more per delta */
            uint32_t flags;          /* SN_MSG_F_*; unknown bits travel untouched */
            const uint8_t *body;     /* sn_wire delta, 1..SN_WIRE_FRAME_MAX bytes */
            uint32_t body_len;
        } delta;
        /* SN_MSG_HEARTBEAT */
        struct {
            uint64_t incarnation;    /* changes each time the sender restarts */
            uint64_t last_pseq;      /* the sender's last publish sequence */
            uint64_t dots_done;      /* every store dot of the sender up to this is in a
                                        publish sequence up to last_pseq */
            const uint8_t *endpoint; /* the sender's cluster address, 0..255 bytes */
            uint32_t endpoint_len;
            const uint8_t *name;     /* the sender's human-readable name, 0..255 bytes */
            uint32_t name_len;
            sn_vv_t applied;         /* per origin: the store dots the sender holds, up to */
            uint64_t sessions;       /* alive sessions the sender holds (for member lists) */
        } heartbeat;
        /* SN_MSG_REPAIR_REQ */
        struct {
            uint64_t origin;         /* whose publish stream to resend */
            uint64_t from_pseq;      /* first publish sequence wanted */
            uint64_t to_pseq;        /* last one, inclusive; >= from_pseq */
        } repair_req;
        /* SN_MSG_REPAIR_REP */
        struct {
            uint64_t origin;         /* as in the request */
            uint32_t status;         /* SN_MSG_REPAIR_OK or SN_MSG_REPAIR_TOO_OLD */
            uint32_t n;              /* entries, 0 with TOO_OLD; <= SN_MSG_ITEMS_MAX */
            sn_msg_entry_t *entries; /* in publish order; NULL when n == 0 */
        } repair_rep;
        /* SN_MSG_SNAP_REQ and SN_MSG_SNAP_CREDIT */
        struct {
            uint64_t snap_id;        /* chosen by the joiner, names the transfer */
            uint32_t credit;         /* chunks the donor may send before waiting */
        } snap_req;
        /* SN_MSG_SNAP_CHUNK */
        struct {
            uint64_t snap_id;        /* as in the request */
            uint64_t chunk;          /* 0, 1, 2, ... within the transfer */
            bool last;               /* this chunk ends the transfer */
            sn_vv_t cut;             /* per origin, the publish sequence the donor had fully
                                        applied when the snapshot began; empty unless last */
            uint32_t n;              /* states, <= SN_MSG_ITEMS_MAX */
            sn_msg_blob_t *states;   /* bytes = sn_wire state; digest 0; NULL when n == 0 */
            uint64_t sessions;       /* the donor's count when the snapshot began: a hint
                                        for sizing the joiner's tables; 0 = unknown */
        } snap_chunk;
        /* SN_MSG_DIGEST_REQ */
        struct {
            uint64_t cursor;         /* 0 to start, else a previous reply's next_cursor */
            uint32_t max;            /* the most digests wanted in the reply */
        } digest_req;
        /* SN_MSG_DIGEST_REP */
        struct {
            uint64_t next_cursor;    /* the cursor for the next request */
            bool done;               /* the scan is complete; next_cursor means nothing */
            uint32_t n;              /* entries, <= SN_MSG_ITEMS_MAX */
            sn_msg_blob_t *entries;  /* bytes = session id (1..SN_ID_MAX), digest and
                                      * vv = sn_store_digest_vv; NULL when n == 0 */
        } digest_rep;
        /* SN_MSG_FETCH_REQ */
        struct {
            uint32_t n;              /* ids, <= SN_MSG_ITEMS_MAX */
            sn_msg_blob_t *ids;      /* bytes = session id (1..SN_ID_MAX); digest 0 */
        } fetch_req;
        /* SN_MSG_FETCH_REP */
        struct {
            uint32_t n;              /* states, <= SN_MSG_ITEMS_MAX */
            sn_msg_blob_t *states;   /* bytes = sn_wire state; digest 0 */
        } fetch_rep;
        /* SN_MSG_ACK */
        struct {
            uint64_t origin;         /* whose publish stream */
            uint64_t pseq;           /* the publish sequence applied */
            uint32_t status;         /* 0 applied; else -(SN_E* code) it was refused with */
        } ack;
        /* SN_MSG_DELTAS */
        struct {
            uint32_t n;              /* 1..SN_MSG_ITEMS_MAX */
            sn_msg_entry_t *entries; /* publish sequences p, p+1, ..., p+n-1, p >= 1 */
        } deltas;
        /* SN_MSG_LEAVE has no fields. */
        /* SN_MSG_CONTROL */
        struct {
            const uint8_t *command;  /* 1..SN_MSG_STR_MAX bytes: members, stats, session,
                                        join, leave */
            uint32_t command_len;
            const uint8_t *arg;      /* 0..SN_MSG_STR_MAX bytes */
            uint32_t arg_len;
        } control;
        /* SN_MSG_CONTROL_REP */
        struct {
            uint32_t status;         /* 0, or -(SN_E* code) */
            const uint8_t *body;     /* status 0: one msgpack map; else an error message;
                                        0..SN_MSG_FRAME_MAX - 64 bytes */
            uint32_t body_len;
        } control_rep;
        /* SN_MSG_MEMBERS */
        struct {
            uint32_t n;              /* addresses, <= SN_MSG_ITEMS_MAX */
            sn_msg_blob_t *addrs;    /* bytes = a member's cluster address
                                        (1..SN_MSG_STR_MAX); digest 0 */
            uint32_t nkeys;          /* == n */
            sn_msg_blob_t *keys;     /* the same member's CURVE public key
                                        (SN_MSG_KEY_MAX bytes), or empty */
        } members;
    } u;
} sn_msg_t;

/*
 * sn_msg_encode - encode one frame.
 *
 * msg:     the message; only read. `sender` and the fields of msg->type's
 *          union member are encoded, with SN_MSG_VERSION; digests and
 *          vectors of blobs outside DIGEST_REP are ignored.
 * out:     receives a malloc'd buffer the caller frees with free().
 * out_len: receives its length.
 * Returns 0, or: SN_EINVAL for a NULL argument, an unknown type, a NULL
 * pointer with a non-zero length or count, an endpoint or name over
 * SN_MSG_STR_MAX, a vector over SN_VV_MAX entries, more than
 * SN_MSG_ITEMS_MAX items, an empty body or state, a body or state over
 * SN_WIRE_FRAME_MAX, an id of length 0 or over SN_ID_MAX, from_pseq >
 * to_pseq, an unknown repair status, entries with TOO_OLD, a cut on a chunk
 * that is not the last, a DELTAS frame without entries or whose publish
 * sequences are not consecutive from 1 or more; SN_ETOOBIG if the frame would exceed
 * SN_MSG_FRAME_MAX; SN_ENOMEM. On failure *out and *out_len are untouched.
 * Exactly what the decoder accepts is encodable, and nothing else.
 */
int sn_msg_encode(const sn_msg_t *msg, uint8_t **out, size_t *out_len);

/*
 * sn_msg_encode_into - the same encoding into `sb`, which is cleared first
 * and keeps its capacity, so a sender can reuse one buffer. Same return
 * values; on failure sb is left empty.
 */
int sn_msg_encode_into(const sn_msg_t *msg, msgpack_sbuffer *sb);

/* A decoded frame. Every pointer inside `msg` (bodies, strings, ids,
 * vectors, arrays of entries and blobs) points into `mem`, one block owned
 * by this object, so the frame buffer may be freed at once. Valid until
 * sn_msg_release(). Present zero-length strings point to a valid empty
 * location, never NULL; endpoint and name are followed by a NUL byte that
 * their lengths do not count (they may contain NULs themselves). `mem` is
 * NULL for frames with nothing variable-length in them. */
typedef struct {
    sn_msg_t msg;
    void *mem;
} sn_msg_decoded_t;

/*
 * sn_msg_decode - decode one frame.
 *
 * buf, len: the frame (exactly one message; only read, not retained).
 * out:      receives the message.
 * Returns 0, or: SN_EINVAL for a NULL out (or NULL buf with len > 0);
 * SN_ETOOBIG if len > SN_MSG_FRAME_MAX (checked before a byte is read);
 * SN_EPROTO for anything malformed: empty, truncated, trailing bytes, a
 * version other than SN_MSG_VERSION, an unknown type, a field count that
 * is not the type's, a wrong msgpack type or a non-shortest encoding in any
 * field, any of the limits sn_msg_encode() enforces; SN_ENOMEM.
 * On failure *out is zeroed: it needs no release, and releasing it is safe.
 * The block is at most len bytes plus 32 per item and 16 per vector entry,
 * so at most len + 2.1 MiB.
 */
int sn_msg_decode(const void *buf, size_t len, sn_msg_decoded_t *out);

/* Frees what sn_msg_decode() allocated and zeroes *m. Accepts NULL and a
 * zeroed message; releasing twice is harmless. */
void sn_msg_release(sn_msg_decoded_t *m);

/* A static lower-case name for a type ("delta", "heartbeat", "repair_req",
 * ..., "ack"), for logs; "unknown" for anything else. */
const char *sn_msg_type_name(int type);

#endif
