/*
 * sn_tier.h - the memcached tier: write-behind backup of whole sessions to
 * a set of memcached servers, and the bootstrap that loads them back.
 *
 * Module-private header. One thread of its own writes to memcached through
 * connections of its own and reads through libmemcached, whose consistent
 * hashing picks each key's server; a writer only queues
 * the session, with a copy of its new state encoded while it is in cache,
 * in a bounded table that coalesces repeated writes of one session, so the
 * write path never waits for memcached. Each node keeps its
 * own copy of the sessions it writes, under a key of its own ("sn:" NODE
 * ":" ID): the thread writes the whole state with plain pipelined sets, no
 * read and no compare-and-swap, and no node's copy can overwrite a write
 * another node made. The bootstrap merges every copy it finds, as a peer's
 * snapshot is merged, so the union of what the nodes backed up comes back.
 * A destroyed session's copy becomes its tombstone (on the node that
 * destroyed it) or is deleted (on the others), so no stale copy brings it
 * back.
 */
#ifndef SN_TIER_H_INCLUDED
#define SN_TIER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"
#include "sn_store.h"

typedef struct sn_tier sn_tier_t;

typedef struct {
    const char *servers;        /* "HOST:PORT[,HOST:PORT...]" */
    uint64_t node_id;           /* names this node's copies */
    size_t queue_max;           /* sessions waiting to be written; 0: 100000 */
    size_t queue_bytes;         /* the copies they hold, at most; past it a session
                                   waits without one; 0: 64 MiB */
    uint32_t flush_ms;          /* a batch at least this often; 0: 20 */
    bool read_through;          /* sn_tier_fetch is used: keep connections for it */
    sn_log_fn log;
    void *log_arg;
    int log_level;
} sn_tier_options_t;

/* Creates the tier and starts its thread. NULL on a bad server list (the
 * log says why) or no memory. */
sn_tier_t *sn_tier_new(const sn_tier_options_t *options, sn_store_t *store);

/* Writes what is queued, for at most timeout_ms, then stops the thread. */
void sn_tier_destroy(sn_tier_t **self_p, uint32_t timeout_ms);

/* A local write, destroy or (`touch`) an access that moved the session's
 * expiry: the store's state sink, in the writer's thread, the shard
 * locked. Queues the session with a copy of `st`, its whole new state,
 * encoded now while it is in cache; past queue_bytes, or with st NULL,
 * without one (the thread then exports it from the store). Never blocks
 * on memcached; a full queue drops it (counted). */
void sn_tier_capture(sn_tier_t *self, const uint8_t *id, uint32_t id_len,
                     const sn_state_t *st, bool touch);

/* A peer's change left the session not alive here (a destroy): this
 * node's copy is deleted. */
void sn_tier_mark_gone(sn_tier_t *self, const void *id, size_t id_len);

/* Loads every session the tier holds into the store, on the tier's thread;
 * sn_tier_bootstrap_done says when it finished. */
void sn_tier_bootstrap(sn_tier_t *self);
bool sn_tier_bootstrap_done(sn_tier_t *self, uint32_t timeout_ms);
bool sn_tier_bootstrap_wanted(sn_tier_t *self);

/* Read-through of a session the store does not hold: gets the copies
 * the nodes `nodes` (n of them) and this one keep of it, and merges each
 * into the store, tombstones included. Called by any thread; blocks for a
 * round trip to the servers (bounded by libmemcached's poll timeout).
 * Returns 1 if the session is alive in the store afterwards, 0 if the tier
 * held no live copy, SN_ENOMEM. */
int sn_tier_fetch(sn_tier_t *self, const void *id, size_t id_len, const uint64_t *nodes,
                  size_t n);

/* Adds the tier's figures to a node's stats. */
void sn_tier_stats(sn_tier_t *self, sn_node_stats_t *stats);

#endif
