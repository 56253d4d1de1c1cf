/*
 * sn_tier.h - the memcached tier: write-behind backup of whole sessions to
 * a set of memcached servers, and the bootstrap that loads them back.
 *
 * Module-private header. One thread of its own talks to memcached through
 * libmemcached (consistent hashing over the servers); writers only mark a
 * session dirty, in a bounded set that coalesces repeated writes of one
 * session, so the write path never waits for memcached. The thread writes
 * batches: it reads the tier's copies of the batch (one multi-get), merges
 * each into the store (so the tier's copy is never replaced by a state
 * that lacks a concurrent write another node backed up), and writes the
 * merged state back with compare-and-swap. Destroyed sessions are deleted
 * from the tier; accesses only move the tier's expiry (touch). Keys are
 * "sn:" + session id (an id too long for that, "sn#" + a hash of it; the
 * value carries the id either way).
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
    size_t queue_max;           /* sessions waiting to be written; 0: 100000 */
    uint32_t flush_ms;          /* a batch at least this often; 0: 20 */
    sn_log_fn log;
    void *log_arg;
    int log_level;
} sn_tier_options_t;

/* Creates the tier and starts its thread. NULL on a bad server list (the
 * log says why) or no memory. */
sn_tier_t *sn_tier_new(const sn_tier_options_t *options, sn_store_t *store);

/* Writes what is queued, for at most timeout_ms, then stops the thread. */
void sn_tier_destroy(sn_tier_t **self_p, uint32_t timeout_ms);

/* A local write of the store (its delta sink, in the writer's thread):
 * marks the session for writing, or, for a touch, for an expiry update.
 * Never blocks on memcached; a full queue drops the mark (counted). */
void sn_tier_mark(sn_tier_t *self, const sn_delta_t *delta);

/* Loads every session the tier holds into the store, on the tier's thread;
 * sn_tier_bootstrap_done says when it finished. */
void sn_tier_bootstrap(sn_tier_t *self);
bool sn_tier_bootstrap_done(sn_tier_t *self, uint32_t timeout_ms);
bool sn_tier_bootstrap_wanted(sn_tier_t *self);

/* Adds the tier's figures to a node's stats. */
void sn_tier_stats(sn_tier_t *self, sn_node_stats_t *stats);

#endif
