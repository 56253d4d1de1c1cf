/*
 * sn_store.h - the session store: sessions, version vectors, merge, expiry,
 * memory bound.
 *
 * Module-private header (not installed). The store links nothing but libc
 * and pthreads; it knows nothing of ZeroMQ or msgpack. gossip/sn_wire.h turns
 * the deltas and states declared here into bytes and back.
 *
 * Data model (see store/README.md for the merge rules in full):
 *
 *   session  = id, attributes, meta (max_inactive; present iff the session is
 *              alive), last_access_ms, version vector (VV), destroy vector (DV)
 *   attribute = name -> value bytes + 32-bit flags, stamped (hlc, origin) for
 *              last-writer-wins; a removed attribute is kept as a record with
 *              no value until tombstone GC
 *   tombstone = a session with a non-empty DV and no meta: what a destroy
 *              leaves behind so that concurrent updates cannot resurrect it
 *
 * Every local write takes a dot (node id, node sequence) and hands a delta to
 * the configured sink. A delta applied elsewhere either merges, is a
 * duplicate, or reports SN_APPLY_NEED_FULL: the receiver lacks an update the
 * writer had seen (or the session itself), and must fetch the full state
 * (sn_store_export on a peer, sn_store_merge locally). A delta is never
 * half-applied.
 *
 * Thread-safety: every function may be called from any thread. The store is
 * split into shards by key hash, each behind its own mutex; there is no global
 * lock. Callbacks (delta sink, export, scan) run with one shard locked and
 * must not call back into the same store.
 */
#ifndef SN_STORE_H_INCLUDED
#define SN_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"

#define SN_ID_MAX 250            /* memcached's key limit */
#define SN_NAME_MAX 250          /* attribute names */
#define SN_VALUE_MAX_DEFAULT (1024u * 1024u)  /* memcached's default item size */
#define SN_VV_MAX 1024           /* distinct writers of one session */
#define SN_ATTRS_MAX 65536       /* attributes (incl. removed records) per session */

typedef struct sn_store sn_store_t;

/* Milliseconds since the Unix epoch; tests inject a fake one. */
typedef uint64_t (*sn_clock_fn)(void *arg);

/* One version-vector entry: node `node` has made `counter` writes (its global
 * sequence number at its latest write to this session). */
typedef struct {
    uint64_t node;
    uint64_t counter;
} sn_dot_t;

/* A version vector: entries sorted by node, counters > 0. */
typedef struct {
    uint32_t n;
    sn_dot_t *dots;
} sn_vv_t;

typedef struct {
    const uint8_t *name;
    uint32_t name_len;
    const uint8_t *value;        /* NULL with `removed` */
    uint32_t value_len;
    uint32_t flags;
    uint64_t stamp;              /* hybrid logical clock: ms << 16 | logical */
    uint64_t origin;             /* writer's node id, breaks stamp ties */
    bool removed;
} sn_attr_t;

/* A whole session, or (in a delta) the fragment a write changed. Attributes
 * are sorted by name (bytewise, shorter first on a common prefix). */
typedef struct {
    sn_vv_t vv;                  /* state: VV; delta: writer's VV before the write */
    sn_vv_t dv;                  /* destroy vector; empty if never destroyed */
    bool has_meta;               /* alive (or, in a delta: meta was written) */
    uint32_t max_inactive;       /* seconds, 0 = never expires */
    uint64_t meta_stamp;
    uint64_t meta_origin;
    uint64_t last_access_ms;
    uint32_t nattrs;
    sn_attr_t *attrs;
    /* The sender's GC-stable vector (see sn_store_gc), often empty. A
     * receiver adopts it before merging, so that a session recreated after
     * its tombstone was collected on the sender is not invalidated by a copy
     * of that tombstone the receiver has not collected yet. Deltas carry it
     * only when the write created the session from nothing. */
    sn_vv_t gc;
} sn_state_t;

typedef enum {
    SN_DELTA_WRITE = 1,          /* meta and/or attributes set or removed */
    SN_DELTA_DESTROY = 2,        /* session invalidated */
    SN_DELTA_TOUCH = 3,          /* last_access only; carries no dot */
} sn_delta_kind_t;

typedef struct {
    sn_delta_kind_t kind;
    const uint8_t *id;
    uint32_t id_len;
    sn_dot_t dot;                /* node, that node's sequence; {0,0} for touch */
    sn_state_t st;               /* st.vv is the writer's context */
} sn_delta_t;

/* Outcome of applying a peer's delta. Not errors: the node decides what to
 * do (NEED_FULL -> fetch the session from a peer). */
typedef enum {
    SN_APPLY_APPLIED = 0,        /* merged; state changed */
    SN_APPLY_DUPLICATE = 1,      /* already held; nothing changed */
    SN_APPLY_NEED_FULL = 2,      /* session unknown or an earlier update missing */
    SN_APPLY_IGNORED = 3,        /* touch for a session not held, or already expired */
} sn_apply_t;

/* Called for every local write, with the shard locked, in per-session write
 * order. The delta and everything it points to live only during the call. */
typedef void (*sn_delta_sink_fn)(const sn_delta_t *delta, void *arg);

/* A session's whole state (alive or tombstone), for export and the state
 * sink. It and everything it points to live only during the call, which
 * holds the session's shard locked: the callback must not call the store. */
typedef void (*sn_state_fn)(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg);

/* The state sink: after every local write or destroy, and every access
 * that emits a touch delta (kind says which), the session's whole new
 * state, as sn_store_export gives it, taken while it is still in cache
 * (the memcached tier's copies). Called under the shard lock, like the
 * delta sink, after it for a touch; st is NULL if the store had no
 * memory to build it (the change happened all the same). */
typedef void (*sn_state_sink_fn)(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                                 sn_delta_kind_t kind, void *arg);

typedef struct {
    uint64_t node_id;            /* this node's id, != 0 */
    size_t memory_limit;         /* bytes for sessions; 0 = unbounded */
    uint32_t value_max;          /* largest attribute value; default SN_VALUE_MAX_DEFAULT */
    uint32_t shards;             /* power of two; default 64 */
    uint32_t touch_interval_ms;  /* touch coalescing; default 1000 */
    sn_clock_fn clock;           /* default: CLOCK_REALTIME */
    void *clock_arg;
    sn_delta_sink_fn sink;       /* may be NULL */
    void *sink_arg;
    sn_state_sink_fn state_sink; /* may be NULL */
    void *state_sink_arg;
    uint64_t hash_seed;          /* 0 = random */
    struct sn_slab *slab;        /* blocks from this slab (sn_slab.h), which must outlive
                                    the store; NULL = the store's own, whose pages go back
                                    to the system with the store */
} sn_store_options_t;

typedef struct {
    uint64_t sessions;           /* alive */
    uint64_t tombstones;
    uint64_t bytes;              /* accounted memory: entries + buckets */
    uint64_t evictions;          /* LRU evictions past memory_limit */
    uint64_t expired;            /* removed by expiry (sweep or read) */
    uint64_t writes;             /* local writes (deltas emitted, touches excluded) */
    uint64_t touches_sent;       /* touch deltas emitted */
    uint64_t applied;            /* deltas merged */
    uint64_t duplicates;
    uint64_t need_full;
    uint64_t merges;             /* full states merged */
    uint64_t gc_removed;         /* tombstones removed by GC */
    uint64_t full_errors;        /* writes refused with SN_EFULL */
} sn_store_stats_t;

/* Create / destroy. sn_store_new returns NULL on bad options or no memory. */
sn_store_t *sn_store_new(const sn_store_options_t *options);
void sn_store_destroy(sn_store_t **self_p);

/* Checks an id against memcached's key rules: 1..250 bytes, none of them
 * whitespace or control characters. */
bool sn_id_valid(const void *id, size_t id_len);

/* The store's seeded hash of an id, for tables of ids kept beside it (the
 * seed differs from store to store, so clients cannot aim ids at a chain). */
uint64_t sn_store_id_hash(const sn_store_t *self, const void *id, size_t id_len);

/* Creates a session with no attributes. SN_EEXISTS if it is alive. */
int sn_store_create(sn_store_t *self, const void *id, size_t id_len, uint32_t max_inactive);

/* Sets one attribute. With `create`, a missing (or destroyed) session is
 * created with `max_inactive` in the same write, as memcached's `set` does;
 * without it a missing session is SN_ENOTFOUND. SN_ETOOBIG past value_max,
 * SN_EFULL if the memory limit cannot be met even after eviction. */
int sn_store_put(sn_store_t *self, const void *id, size_t id_len,
                 const void *name, size_t name_len, const void *value,
                 size_t value_len, uint32_t flags, bool create, uint32_t max_inactive);

/* Copies an attribute's value into `buf` (at most `cap` bytes) and stores its
 * full length in *value_len and its flags in *flags (either may be NULL).
 * Returns SN_ETRUNC, with *value_len set, if `cap` was too small. A read
 * counts as an access: it moves last_access (coalesced touch deltas).
 * SN_ENOTFOUND for a missing, destroyed or expired session or attribute. */
int sn_store_get(sn_store_t *self, const void *id, size_t id_len, const void *name,
                 size_t name_len, void *buf, size_t cap, size_t *value_len, uint32_t *flags);

/* As sn_store_get, into a malloc'd buffer the caller frees. */
int sn_store_get_alloc(sn_store_t *self, const void *id, size_t id_len, const void *name,
                       size_t name_len, void **value, size_t *value_len, uint32_t *flags);

/* memcached-style item operations (sessnode.h, "Items"): an item is one
 * attribute; its CAS unique is the attribute's stamp. The checks (add,
 * replace, cas, incr's number) and the write happen under the session's
 * lock, so they are atomic on this store. max_inactive -1 keeps the
 * session's. */
int sn_store_item_store(sn_store_t *self, const void *id, size_t id_len, const void *name,
                        size_t name_len, sn_item_mode_t mode, const void *value,
                        size_t value_len, uint32_t flags, int64_t max_inactive, uint64_t cas,
                        uint64_t *cas_out);
int sn_store_item_arith(sn_store_t *self, const void *id, size_t id_len, const void *name,
                        size_t name_len, bool decr, uint64_t delta, bool create,
                        uint64_t initial, int64_t max_inactive, uint64_t *value_out,
                        uint64_t *cas_out);
/* Calls fn once with the item, the session locked; an access. */
int sn_store_item_get(sn_store_t *self, const void *id, size_t id_len, const void *name,
                      size_t name_len, sn_item_fn fn, void *arg);

/* Removes one attribute. SN_ENOTFOUND if the session or attribute is missing. */
int sn_store_remove(sn_store_t *self, const void *id, size_t id_len,
                    const void *name, size_t name_len);

/* Invalidates a session (logout). Leaves a tombstone. SN_ENOTFOUND if it is
 * not alive. */
int sn_store_destroy_session(sn_store_t *self, const void *id, size_t id_len);

/* Marks an access; with max_inactive >= 0 also sets a new max_inactive (a
 * replicated write). SN_ENOTFOUND if not alive. */
int sn_store_touch(sn_store_t *self, const void *id, size_t id_len, int64_t max_inactive);

/* Whether a session is alive (not destroyed, not expired). Not an access. */
bool sn_store_exists(sn_store_t *self, const void *id, size_t id_len);

/* Applies a peer's delta. Returns an sn_apply_t (>= 0) or SN_EINVAL for a
 * delta that breaks the model's invariants (unsorted vectors, bad id...). */
int sn_store_apply(sn_store_t *self, const sn_delta_t *delta);

/* Calls `fn` with the full state of one session (alive or tombstone); for
 * repair. SN_ENOTFOUND if the store holds nothing under that id. */
int sn_store_export(sn_store_t *self, const void *id, size_t id_len, sn_state_fn fn, void *arg);

/* Merges a full state from a peer (repair, snapshot). Returns an sn_apply_t
 * (APPLIED, DUPLICATE when it added nothing, IGNORED when expired or
 * garbage-collected) or a negative error. sn_store_export fills st->gc. */
int sn_store_merge(sn_store_t *self, const void *id, size_t id_len, const sn_state_t *st);

/* One session of a batch for sn_store_merge_many. */
typedef struct {
    const void *id;
    size_t id_len;
    const sn_state_t *st;
} sn_store_item_t;

/* sn_store_merge for items[0..n) in order, rc[i] the result of items[i].
 * The same results as n calls, faster for a large store: each session's
 * bucket and chain are fetched into the cache a few sessions ahead of its
 * merge instead of stalling it (a snapshot's sessions land in random
 * buckets, and those lookups were a sixth of a joiner's time). */
void sn_store_merge_many(sn_store_t *self, const sn_store_item_t *items, size_t n, int *rc);

/* Resumable scan over every session and tombstone, for snapshots. Start with
 * *cursor = 0; each call visits whole buckets until at least `max_visits`
 * sessions were visited or the scan ended, and returns 1 if there is more,
 * 0 when done. Sessions present for the whole scan are visited at least once,
 * even across table growth; some may be visited twice. */
int sn_store_scan(sn_store_t *self, uint64_t *cursor, size_t max_visits, sn_state_fn fn, void *arg);

/* 64-bit digest of a session's replicated state (everything but
 * last_access), equal on replicas that hold the same updates. */
int sn_store_digest(sn_store_t *self, const void *id, size_t id_len, uint64_t *digest);

/* The digest and, in *vv, the session's version vector (dots malloc'd, the
 * caller frees vv->dots; untouched on failure). A digest says whether two
 * replicas differ, the vectors which of them lacks what. Either may be
 * NULL (not both): the vector alone costs no encoding or hashing. */
int sn_store_digest_vv(sn_store_t *self, const void *id, size_t id_len, uint64_t *digest,
                       sn_vv_t *vv);

/* Removes every alive session whose max_inactive passed since last_access
 * (no delta: each replica expires on its own clock). Returns the number
 * removed. */
size_t sn_store_expire(sn_store_t *self);

/* Tombstone GC. `stable` must be a vector such that every member has applied
 * every update it covers and every update concurrent with those. Removes
 * tombstones and removed-attribute records covered by it, and forgets
 * destroy vectors it covers; remembers it (joined with earlier ones and with
 * those learnt from peers' deltas and states) so that covered tombstones and
 * destroy vectors arriving later count as absent. Returns the number of
 * tombstones removed. */
size_t sn_store_gc(sn_store_t *self, const sn_vv_t *stable);

/* The same, one shard per call, for callers that must not hold the CPU for
 * a whole pass: start with *shard = 0 and call until *shard equals the
 * shard count (sn_store_shards). Returns the tombstones removed. */
size_t sn_store_gc_step(sn_store_t *self, const sn_vv_t *stable, uint32_t *shard);
uint32_t sn_store_shards(const sn_store_t *self);

/* The ids of the nodes the store has seen write (in the version vectors of
 * the sessions it held), the most recently first seen first: up to `max`
 * of them into `out`. Returns how many. */
size_t sn_store_node_ids(sn_store_t *self, uint64_t *out, size_t max);

/* Sizes the hash tables for `sessions` sessions in all, so that filling the
 * store that far neither doubles nor rehashes them (a joiner learns the
 * count from its donor). Tables only grow; a shard whose table is already
 * as large is left alone, and one that cannot get the memory (or would pass
 * the memory limit) keeps its table and doubles as usual later. Moves a
 * shard's entries at once under its lock, so call it while the store is
 * small. Returns 0, or SN_EINVAL for a NULL store. */
int sn_store_reserve(sn_store_t *self, size_t sessions);

/* Faults in ahead the memory the next sessions will take (sn_slab_prefault),
 * at most `max_pages` slab pages; returns how many. For a thread with time
 * to spare. */
size_t sn_store_prefault(sn_store_t *self, size_t max_pages);

void sn_store_stats(sn_store_t *self, sn_store_stats_t *stats);

/* This node's latest sequence number (the last dot it took). */
uint64_t sn_store_seq(sn_store_t *self);

/* Version-vector helpers (pure functions). */
uint64_t sn_vv_get(const sn_vv_t *vv, uint64_t node);
bool sn_vv_leq(const sn_vv_t *a, const sn_vv_t *b);   /* a <= b pointwise */
bool sn_vv_valid(const sn_vv_t *vv);                  /* sorted, unique, counters > 0 */

#endif
