/*
 * sessnode.h - the public API of libsessnode.
 *
 * sessnode replicates web sessions all-to-all: every node keeps every session
 * in memory and broadcasts each change to its peers over ZeroMQ as a delta,
 * ordered by version vectors, so any node can answer any request locally.
 *
 * This header is the API documentation: every public function is declared
 * and described here, and it is the only header that is installed. It
 * includes nothing but <stddef.h> and <stdint.h>; embedders need no ZeroMQ,
 * czmq or msgpack header to use the library.
 *
 * Errors: functions that can fail return int, 0 on success or one of the
 * negative SN_E* codes below on failure. sn_strerror() and sn_err_name()
 * turn a code into text. Functions that return a pointer return NULL on
 * failure.
 *
 * Symbols: the library is built with hidden visibility; only functions
 * marked SN_EXPORT are part of the ABI.
 */
#ifndef SESSNODE_H_INCLUDED
#define SESSNODE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SN_VERSION_MAJOR 0
#define SN_VERSION_MINOR 1
#define SN_VERSION_PATCH 0

#if defined(__GNUC__) || defined(__clang__)
#define SN_EXPORT __attribute__((visibility("default")))
#else
#define SN_EXPORT
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* One table yields the codes, their names and their messages, so the three
 * cannot drift apart. X(name, value, message); values are stable ABI. */
#define SN_ERRNO_MAP(X)                                   \
    X(EINVAL,   -1, "invalid argument")                   \
    X(ENOMEM,   -2, "out of memory")                      \
    X(EBADID,   -3, "invalid session id")                 \
    X(EBADNAME, -4, "invalid attribute name")             \
    X(ETOOBIG,  -5, "value too large")                    \
    X(ENOTFOUND,-6, "not found")                          \
    X(EEXISTS,  -7, "already exists")                     \
    X(EFULL,    -8, "memory limit reached")               \
    X(EPROTO,   -9, "malformed message")                  \
    X(ETRUNC,  -10, "buffer too small")                   \
    X(ETIMEDOUT,-11, "timed out")                         \
    X(ESTATE,  -12, "not allowed in this state")          \
    X(EADDR,   -13, "cannot bind or connect the endpoint") \
    X(EREFUSED,-14, "a peer could not apply the write") \
    X(EBUSY,   -15, "replication queue full")             \
    X(ENOTNUM, -16, "value is not a decimal number")

enum sn_errno {
#define SN_ERRNO_ENUM_(name, value, msg) SN_##name = (value),
    SN_ERRNO_MAP(SN_ERRNO_ENUM_)
#undef SN_ERRNO_ENUM_
};

/*
 * sn_strerror - describe an error code.
 *
 * err: 0 or a value returned by a sessnode function.
 * Returns a static, NUL-terminated English message: "success" for 0, the
 * table's message for an SN_E* code, "unknown error" for anything else.
 * Never NULL; the caller must not free it. Thread-safe.
 */
SN_EXPORT const char *sn_strerror(int err);

/*
 * sn_err_name - the symbolic name of an error code.
 *
 * err: 0 or a value returned by a sessnode function.
 * Returns a static string such as "SN_ENOTFOUND"; "SN_OK" for 0 and
 * "SN_UNKNOWN" for a value that is not in the table. Never NULL; the caller
 * must not free it. Thread-safe.
 */
SN_EXPORT const char *sn_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * sn_version - the version of the library actually loaded, as
 * "MAJOR.MINOR.PATCH" (compare with the SN_VERSION_* macros the caller was
 * compiled against). Static string; never NULL. Thread-safe.
 */
SN_EXPORT const char *sn_version(void);

/* ------------------------------------------------------------------------ */
/* Node                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * A node holds every session of the cluster in memory and replicates each
 * local write to its peers. Its replication thread owns all ZeroMQ sockets;
 * the session functions below run in the caller's thread, never wait on the
 * network (except a write that asks for acknowledgements), and may be called
 * from any number of threads at once. A write made while the replication
 * thread sleeps, and not part of a burst, is published by the calling thread
 * itself in that thread's place (it takes the thread's lock only if free),
 * which spares the write a thread hand-off; under a burst the replication
 * thread publishes, batching.
 *
 * Addresses. A node is reached at one cluster address and derives two
 * ZeroMQ endpoints from it: for "tcp://HOST:PORT" it binds a PUB socket on
 * PORT (deltas, heartbeats) and a ROUTER socket on PORT+1 (repair,
 * snapshots, acknowledgements); for "inproc://NAME" or "ipc://PATH" it uses
 * NAME.pub / NAME.router (PATH.pub / PATH.router). Peers are named by their
 * cluster addresses.
 */
typedef struct sn_node sn_node_t;

/* Log levels, most severe first. */
enum { SN_LOG_ERROR = 0, SN_LOG_WARN = 1, SN_LOG_INFO = 2, SN_LOG_DEBUG = 3 };

/* A log sink; `msg` is one line without its newline, valid during the call.
 * Called from the node's threads, and from a thread calling a session
 * function when it publishes its write itself; possibly concurrently. */
typedef void (*sn_log_fn)(int level, const char *msg, void *arg);

/* Called from the replication thread each time a peer's update changed a
 * session on this node (a write, a destroy, a touch, a repaired or fetched
 * session), after the change is visible to readers. `id` is valid during
 * the call. It must return quickly and must not call into the node. */
typedef void (*sn_change_fn)(const void *id, size_t id_len, void *arg);

typedef struct {
    uint64_t node_id;           /* unique in the cluster, != 0; 0 = random */
    const char *name;           /* for logs and member lists; NULL = "node-<id>" */
    const char *cluster;        /* this node's cluster address (required) */
    const char *const *peers;   /* peers' cluster addresses; NULL-terminated, may be NULL */
    int join;                   /* nonzero: copy the sessions from a live peer at start */
    size_t memory_limit;        /* bytes for sessions; 0 = unbounded */
    uint32_t value_max;         /* largest value; default 1 MiB */
    uint32_t heartbeat_ms;      /* default 100 */
    uint32_t suspect_ms;        /* a peer not heard from for this long is suspect;
                                   0 (the default) = 10 heartbeats */
    uint32_t dead_ms;           /* ... and dead: its repairs go elsewhere; 0 (the
                                   default) = 30 heartbeats; above suspect_ms */
    uint32_t repair_grace_ms;   /* a gap older than this is repaired; default 20 */
    uint32_t join_timeout_ms;   /* join waits this long for a peer; default 3000 */
    uint32_t antientropy_ms;    /* compare all sessions with a random peer about this
                                   often (each wait drawn from 0.5x to 1.5x);
                                   default 60000; 0 = only when repair needs it */
    size_t backlog_bytes;       /* resend buffer; default 64 MiB */
    size_t queue_bytes;         /* local writes waiting for the replication
                                   thread; default 256 MiB. A write past it
                                   still reaches the peers, which fetch it
                                   (queue_overflows counts them) */
    uint32_t write_timeout_ms;  /* default wait for acknowledgements; default 1000 */
    sn_log_fn log;              /* NULL: the library prints nothing */
    void *log_arg;
    int log_level;              /* highest level passed to `log`; default SN_LOG_INFO */
    sn_change_fn on_change;     /* NULL: no notification */
    void *on_change_arg;
    /* Called once from the replication thread after an operator told this
     * node to leave the cluster (`sessctl leave`): the node has said so to
     * its peers; the application should now shut down. NULL: ignored. */
    void (*on_leave)(void *arg);
    void *on_leave_arg;
    /* CurveZMQ on the replication bus: every connection is encrypted, and
     * only members whose public key is in curve_allow may connect. NULL
     * (the default): the bus is plain text, for a loopback cluster only.
     * curve_cert is this node's certificate file (`sessctl keygen` makes
     * NAME.cert and NAME.cert_secret; either path will do, the secret file
     * must be beside it); curve_allow a directory of the members' public
     * certificates, this node's included. A peer given by address (peers,
     * `sessctl join`) is found in curve_allow by its certificate's
     * `address` metadata; members learned from others need no such entry.
     * Every node of one process must use the same curve_allow. */
    const char *curve_cert;
    const char *curve_allow;
    /* The memcached tier: "HOST:PORT[,HOST:PORT...]" of memcached servers
     * (consistent hashing) that every session this node writes is backed
     * up to, asynchronously; a node that starts and gets its sessions from
     * no peer loads them from there (sn_node_wait_ready). NULL: none. */
    const char *tier;
    size_t tier_queue;          /* sessions waiting for the tier, at most; past it a
                                   change is not backed up (tier_dropped); 0 = 100000 */
    size_t tier_queue_bytes;    /* memory for the waiting sessions' copies, at most
                                   (each is encoded when written, while in cache,
                                   into pads of 256 KiB that count whole);
                                   past it a session waits without one and is read
                                   from the store when its turn comes; 0 = 64 MiB */
    uint32_t tier_flush_ms;     /* at stop, time left to write what is queued;
                                   0 = 5000 */
    /* Read-through: a read of a session this node does not hold (evicted
     * by memory_limit, or never received) first looks for its copies in
     * the tier, and merges them, tombstones included. Costs a round trip
     * to memcached on every such miss, a new session's first read too. */
    int tier_read_through;
    double test_drop_rate;      /* test hook: fraction of received deltas dropped */
    uint32_t test_drop_digest_reps; /* test hook: this many anti-entropy pages'
                                     * answers dropped on arrival */
} sn_config_t;

/* Fills `cfg` with the defaults (zeroes and the documented values). */
SN_EXPORT void sn_config_init(sn_config_t *cfg);

/*
 * sn_node_new - creates a node from `cfg` (copied; strings too). Nothing is
 * bound or started yet. Returns NULL on a bad configuration or no memory.
 */
SN_EXPORT sn_node_t *sn_node_new(const sn_config_t *cfg);

/*
 * sn_node_start - binds, connects to the peers and starts replicating. With
 * cfg.join it then copies the sessions from the first peer that answers
 * (see sn_node_wait_ready). SN_EADDR if an endpoint cannot be bound,
 * SN_ESTATE if already started.
 */
SN_EXPORT int sn_node_start(sn_node_t *node);

/*
 * sn_node_wait_ready - waits until the node has finished joining (at once
 * for a node that does not join) and, with a tier, when no peer gave it the
 * sessions, until it loaded them from the tier. SN_ETIMEDOUT after
 * timeout_ms (call again to go on waiting).
 */
SN_EXPORT int sn_node_wait_ready(sn_node_t *node, uint32_t timeout_ms);

/* Stops replication (peers see heartbeats stop), frees everything and sets
 * *node_p to NULL. Accepts NULL. With a tier, first writes what is queued
 * for it (for at most cfg.tier_flush_ms); otherwise sessions are not kept
 * anywhere else. */
SN_EXPORT void sn_node_destroy(sn_node_t **node_p);

/* Options of one write. Zeroed means: existing session only, no
 * acknowledgements. */
typedef struct {
    int create;                 /* create the session if it is missing */
    uint32_t max_inactive;      /* seconds, for a created session; 0 = never expires */
    uint32_t flags;             /* stored with the value (memcached's flags) */
    uint32_t acks;              /* wait until this many peers applied the write */
    uint32_t timeout_ms;        /* for acks; 0 = cfg.write_timeout_ms */
} sn_write_t;

/*
 * Session operations. id: 1..250 bytes, no whitespace or control characters
 * (SN_EBADID); attribute names up to 250 bytes (SN_EBADNAME); values up to
 * cfg.value_max (SN_ETOOBIG). SN_EFULL when this node's memory limit
 * cannot be met even after evicting; these errors leave the node unchanged.
 *
 * Write concern (`acks` > 0): the call returns once `acks` distinct peers
 * applied the write. Otherwise the write is still applied on this node and
 * still reaches the peers, and the call returns why it was not confirmed:
 *   SN_ETIMEDOUT  the acks did not come within the timeout;
 *   SN_EREFUSED   so many live peers refused it (over their memory limit,
 *                 say; each logs why and counts it in apply_refused) that
 *                 the others cannot make up `acks`;
 *   SN_EBUSY      the replication queue was full (cfg.queue_bytes): the
 *                 peers fetch the session instead of acknowledging it.
 */
SN_EXPORT int sn_node_create(sn_node_t *node, const void *id, size_t id_len,
                             uint32_t max_inactive);
SN_EXPORT int sn_node_put(sn_node_t *node, const void *id, size_t id_len, const void *name,
                          size_t name_len, const void *value, size_t value_len,
                          const sn_write_t *options);
/* Copies the value into buf (cap bytes); *value_len gets its full length
 * (SN_ETRUNC if cap was too small). A read counts as an access. */
SN_EXPORT int sn_node_get(sn_node_t *node, const void *id, size_t id_len, const void *name,
                          size_t name_len, void *buf, size_t cap, size_t *value_len,
                          uint32_t *flags);
SN_EXPORT int sn_node_remove(sn_node_t *node, const void *id, size_t id_len, const void *name,
                             size_t name_len, const sn_write_t *options);
/* Invalidates the session everywhere (logout); concurrent updates lose. */
SN_EXPORT int sn_node_destroy_session(sn_node_t *node, const void *id, size_t id_len,
                                      const sn_write_t *options);
/* An access; max_inactive >= 0 also sets a new max_inactive. */
SN_EXPORT int sn_node_touch(sn_node_t *node, const void *id, size_t id_len,
                            int64_t max_inactive);
/* 1 if the session is alive, 0 if not, negative on a bad id. Not an access. */
SN_EXPORT int sn_node_exists(sn_node_t *node, const void *id, size_t id_len);
/* A digest of the session's replicated state, equal on nodes that hold the
 * same updates. SN_ENOTFOUND if the node holds nothing under `id`. */
SN_EXPORT int sn_node_digest(sn_node_t *node, const void *id, size_t id_len,
                             uint64_t *digest);

typedef struct {
    uint64_t sessions, tombstones, bytes, evictions, expired;
    uint64_t writes;            /* local writes */
    uint64_t deltas_sent;       /* published, touches included */
    uint64_t batches_sent;      /* frames that carried several of them at once (a burst) */
    uint64_t sent_by_writers;   /* of deltas_sent, those the writing thread
                                 * published itself, the replication thread
                                 * being asleep (a quiet time) */
    uint64_t deltas_received;   /* received from peers, first copies */
    uint64_t deltas_dropped;    /* by the test hook */
    uint64_t duplicates;        /* received again */
    uint64_t gaps_detected;     /* ranges reported missing */
    uint64_t repairs_requested; /* repair requests sent */
    uint64_t repaired;          /* deltas recovered from a peer's backlog */
    uint64_t full_fetches;      /* sessions fetched whole */
    uint64_t resyncs;           /* anti-entropy rounds (periodic, or after a
                                 * backlog miss) */
    uint64_t resync_settled;    /* differences anti-entropy found that their
                                 * deltas, still in flight, then closed */
    uint64_t resync_retries;    /* anti-entropy pages asked for again, the first
                                 * request or its answer lost */
    uint64_t bad_frames;        /* undecodable or invalid input, dropped */
    uint64_t apply_refused;     /* peers' updates this node could not hold (its
                                 * memory limit; each is logged) */
    uint64_t queue_overflows;   /* local deltas not queued: peers fetch those
                                 * sessions instead (docs/PROTOCOL.md, holes) */
    uint64_t acks_timed_out;
    uint64_t acks_refused;      /* writes that returned SN_EREFUSED */
    uint64_t bytes_sent, bytes_received;
    uint64_t snapshot_sessions; /* sessions received by joining */
    uint64_t peers_alive;
    uint64_t members_learned;   /* peers first heard of in another member's list */
    uint64_t auth_refused;      /* secured bus: handshakes that failed (a peer not on
                                   the allow-list, a wrong key, an unsecured peer) */
    uint64_t peers_without_key; /* secured bus: addresses not connected to for want
                                   of the member's public key */
    /* the memcached tier (sn_config_t.tier); all 0 without one */
    uint64_t tier_queue;        /* sessions waiting to be written to the tier, or
                                   being written */
    uint64_t tier_queue_bytes;  /* room the queued copies take (each its longest
                                   encoding); 0 once the queue is empty */
    uint64_t tier_writes;       /* sessions written */
    uint64_t tier_touches;      /* sessions written again after accesses only */
    uint64_t tier_deletes;      /* copies deleted: destroyed elsewhere, or expired */
    uint64_t tier_failures;     /* operations memcached failed (retried) */
    uint64_t tier_dropped;      /* changes not backed up: the queue was full */
    uint64_t tier_boot_sessions; /* sessions loaded from the tier at start */
    uint64_t tier_boot_ms;      /* ...and how long that took */
    uint64_t tier_reads;        /* read-through: misses looked up in the tier */
    uint64_t tier_read_hits;    /* ...that found the session alive there */
} sn_node_stats_t;

SN_EXPORT void sn_node_stats(sn_node_t *node, sn_node_stats_t *stats);

enum { SN_MEMBER_ALIVE = 0, SN_MEMBER_SUSPECT = 1, SN_MEMBER_DEAD = 2, SN_MEMBER_LEFT = 3 };

typedef struct {
    uint64_t node_id;           /* 0 until the peer has been heard */
    char name[64];
    char address[256];          /* cluster address */
    int state;                  /* SN_MEMBER_* */
    uint64_t last_heard_ms;     /* 0 = never */
    uint64_t last_pseq;         /* its last published sequence we know of */
    uint64_t lag;               /* how many of those we have not received yet */
    uint64_t sessions;          /* alive sessions it holds, per its last heartbeat */
} sn_member_t;

/* Copies up to `max` peers into `out`; *count gets how many there are.
 * The node itself is not listed. */
SN_EXPORT int sn_node_members(sn_node_t *node, sn_member_t *out, size_t max, size_t *count);

/* This node's id (the configured or the drawn one). */
SN_EXPORT uint64_t sn_node_id(const sn_node_t *node);


/* ------------------------------------------------------------------------ */
/* Items: memcached-style operations on one attribute                      */
/* ------------------------------------------------------------------------ */

/*
 * An item is one attribute of a session seen the way a memcached client
 * sees a key: a value, a flags word and a CAS unique. The memcached front
 * stores a whole value as the attribute with the empty name (name_len 0)
 * of the session named by the key; embedders may use any attribute.
 *
 * The CAS unique of an item is the hybrid-logical-clock stamp of its last
 * write. It is replicated with the value, so a `gets` on one node and a
 * `cas` on another agree once the write has reached both. A CAS (and an
 * incr/decr) is checked against this node's copy only: two nodes may both
 * accept a CAS of the same unique at the same moment, and the write with
 * the later stamp then wins everywhere (last writer wins, as for any two
 * concurrent writes of one attribute).
 *
 * Expiry: max_inactive is an inactivity timeout (seconds, 0 = never): every
 * read extends it, as a session store wants. -1 keeps the session's
 * current one (a new session then gets 0).
 */
typedef enum {
    SN_ITEM_SET = 0,      /* store; creates the session if needed */
    SN_ITEM_ADD = 1,      /* only if the item is missing, else SN_EEXISTS */
    SN_ITEM_REPLACE = 2,  /* only if the item exists, else SN_ENOTFOUND */
    SN_ITEM_APPEND = 3,   /* value += data; flags kept; SN_ENOTFOUND if missing */
    SN_ITEM_PREPEND = 4,  /* value = data + value; likewise */
    SN_ITEM_CAS = 5,      /* only if the item's CAS unique is `cas`: SN_EEXISTS if
                             it differs, SN_ENOTFOUND if the item is missing */
} sn_item_mode_t;

/* An item as a read sees it; pointers valid during the callback only. */
typedef struct {
    const void *value;
    size_t value_len;
    uint32_t flags;
    uint64_t cas;               /* != 0 */
    uint32_t max_inactive;      /* seconds; 0 = never expires */
    uint64_t last_access_ms;    /* before this read */
} sn_item_t;

/* Runs with the session locked: copy what is needed, return quickly, and
 * do not call into the node. */
typedef void (*sn_item_fn)(const sn_item_t *item, void *arg);

/*
 * sn_node_item_store - one memcached storage command, atomic on this node.
 * Sets *cas_out (may be NULL) to the item's new CAS unique. options may be
 * NULL; only its acks and timeout_ms are used (create, max_inactive and
 * flags come from the arguments). An APPEND/PREPEND whose result passes
 * value_max is SN_ETOOBIG. Errors as for sn_node_put.
 */
SN_EXPORT int sn_node_item_store(sn_node_t *node, const void *id, size_t id_len,
                                 const void *name, size_t name_len, sn_item_mode_t mode,
                                 const void *value, size_t value_len, uint32_t flags,
                                 int64_t max_inactive, uint64_t cas, uint64_t *cas_out,
                                 const sn_write_t *options);

/*
 * sn_node_item_get - reads an item and calls fn(item, arg) once, with the
 * session locked. A read counts as an access. touch >= 0 first sets the
 * session's max_inactive to `touch` (memcached's gat/touch: a replicated
 * write). SN_ENOTFOUND (fn not called) if the session or the attribute is
 * missing, destroyed or expired.
 */
SN_EXPORT int sn_node_item_get(sn_node_t *node, const void *id, size_t id_len,
                               const void *name, size_t name_len, int64_t touch,
                               sn_item_fn fn, void *arg);

/*
 * sn_node_item_arith - memcached's incr/decr: the value must be a decimal
 * number of at most 20 digits below 2^64 (SN_ENOTNUM otherwise). incr
 * wraps at 2^64, decr stops at 0. A missing item is SN_ENOTFOUND unless
 * `create`, which stores `initial` as the value (with max_inactive, flags
 * 0) instead of applying delta. *value_out and *cas_out (either may be
 * NULL) get the result. Flags and expiry of an existing item are kept.
 */
SN_EXPORT int sn_node_item_arith(sn_node_t *node, const void *id, size_t id_len,
                                 const void *name, size_t name_len, int decr, uint64_t delta,
                                 int create, uint64_t initial, int64_t max_inactive,
                                 uint64_t *value_out, uint64_t *cas_out,
                                 const sn_write_t *options);

/*
 * sn_node_flush - memcached's flush_all: destroys every session this node
 * holds alive, each as a replicated destroy, so every peer drops them and no
 * repair brings them back (invalidation wins). A session created on another
 * node and not yet received here is not touched. *count (may be NULL) gets
 * the number destroyed.
 */
SN_EXPORT int sn_node_flush(sn_node_t *node, uint64_t *count);

/*
 * sn_node_leave - tells the peers this node is leaving on purpose (they list
 * it as SN_MEMBER_LEFT at once instead of suspecting it), after publishing
 * every write still queued. Call before sn_node_destroy on a graceful
 * shutdown; the node keeps serving reads until destroyed.
 */
SN_EXPORT int sn_node_leave(sn_node_t *node, uint32_t timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* SESSNODE_H_INCLUDED */
