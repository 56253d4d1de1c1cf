/*
 * sn_transport.h - the replication actor: sockets, deltas, gap repair,
 * snapshots, anti-entropy, acknowledgements.
 *
 * Module-private header. One actor thread owns every ZeroMQ socket of a node
 * (czmq's actor pattern); other threads talk to it through a locked queue
 * (local deltas, handed over by the store's sink) and read its counters and
 * member table under a mutex. See sn_transport.c for the protocol.
 */
#ifndef SN_TRANSPORT_H_INCLUDED
#define SN_TRANSPORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"
#include "sn_store.h"

typedef struct sn_transport sn_transport_t;

typedef struct {
    uint64_t node_id;
    const char *name;
    const char *cluster;          /* this node's cluster address */
    const char *const *peers;     /* NULL-terminated cluster addresses */
    bool join;
    uint32_t heartbeat_ms;
    uint32_t suspect_ms;          /* 0: 10 heartbeats */
    uint32_t dead_ms;             /* 0: 30 heartbeats */
    uint32_t repair_grace_ms;
    uint32_t join_timeout_ms;
    uint32_t antientropy_ms;      /* 0: no periodic anti-entropy */
    size_t backlog_bytes;
    size_t queue_bytes;           /* local deltas waiting for the actor; 0: 256 MiB */
    const char *curve_cert;       /* this node's certificate: the bus is CURVE-secured */
    const char *curve_allow;      /* directory of the members' public certificates */
    double drop_rate;             /* test hook */
    uint32_t drop_digest_reps;    /* test hook */
    sn_change_fn on_change;
    void *on_change_arg;
    void (*on_leave)(void *arg);  /* after an operator's `leave` (actor thread) */
    /* adds figures of the node's other parts to `stats` (sessctl stats) */
    void (*more_stats)(sn_node_stats_t *stats, void *arg);
    void *more_stats_arg;
    void *on_leave_arg;
    sn_log_fn log;
    void *log_arg;
    int log_level;
} sn_transport_options_t;

/* Creates the transport (nothing runs yet). Strings are copied. */
sn_transport_t *sn_transport_new(const sn_transport_options_t *options);

/* The store the actor applies to and reads from. Set before start. */
void sn_transport_set_store(sn_transport_t *self, sn_store_t *store);

/* Starts the actor: binds, connects, then joins if asked. SN_EADDR when an
 * endpoint cannot be bound or connected. */
int sn_transport_start(sn_transport_t *self);

void sn_transport_destroy(sn_transport_t **self_p);

/* The store's delta sink (sink_arg = the transport). Encodes and queues;
 * never blocks on the network. */
void sn_transport_sink(const sn_delta_t *delta, void *arg);

/* One local write, in the writer's thread: begin before the store call,
 * end after it, once the session's lock is released. The deltas the write
 * queued are then published by this thread if the actor sleeps and local
 * writes are not coming in a burst (so none waits for the actor to wake),
 * else the actor is woken to publish them. end never waits: it runs the
 * actor's publishing step only if it gets the turn at once. Writes made
 * outside such a pair simply wake the actor. */
void sn_transport_write_begin(sn_transport_t *self);
void sn_transport_write_end(sn_transport_t *self);

/* Write concern: between begin and end, the deltas this thread's writes
 * produce are published asking for acknowledgements; end waits until `acks`
 * peers applied every one of them. It returns SN_ETIMEDOUT after timeout_ms,
 * SN_EREFUSED once too many live peers refused one, SN_EBUSY if one could
 * not be queued. begin returns SN_ENOMEM if it cannot set up the wait; the
 * write should then not be made. */
int sn_transport_begin_acked(sn_transport_t *self, uint32_t acks);
int sn_transport_end_acked(sn_transport_t *self, uint32_t timeout_ms);

int sn_transport_wait_ready(sn_transport_t *self, uint32_t timeout_ms);

/* Once ready: whether the sessions came from a peer (a join's snapshot)
 * rather than nowhere (no peer, or none answered in time). */
bool sn_transport_had_donor(sn_transport_t *self);

/* Counters and members, readable from any thread. */
void sn_transport_stats(sn_transport_t *self, sn_node_stats_t *stats);
int sn_transport_members(sn_transport_t *self, sn_member_t *out, size_t max, size_t *count);

/* Tells the peers this node leaves on purpose (LEAVE on PUB and to each
 * peer), after publishing what is queued; heartbeats stop. What is still
 * unsent goes out at process exit within timeout_ms (socket linger). */
int sn_transport_leave(sn_transport_t *self, uint32_t timeout_ms);

/* Splits a cluster address into its PUB and ROUTER endpoints. */
int sn_transport_endpoints(const char *cluster, char *pub, size_t pub_cap, char *router,
                           size_t router_cap);

#endif
