/*
 * sn_transport.c - the replication actor.
 *
 * One thread (a czmq actor) owns every socket of the node:
 *
 *   PUB     bound on the cluster address: DELTA and HEARTBEAT frames
 *   ROUTER  bound on the derived address: requests from peers (repair,
 *           snapshot, digests, fetch), heartbeats sent point to point, ACKs
 *   SUB     connected to every peer's PUB
 *   DEALER  one per peer, connected to its ROUTER: our requests, our ACKs
 *
 * Local writes reach the actor through a locked queue and a pipe: the
 * store's sink encodes the delta in the writer's thread (so the actor does no
 * per-write encoding work beyond the frame) and never blocks. A pipe rather
 * than an eventfd because a pipe write wakes its reader synchronously: the
 * scheduler runs the actor on the writer's CPU once the writer yields,
 * instead of waking the other, idle CPU, which on a VM costs an exit to the
 * hypervisor and, measured here, about 200 us at the median. The actor gives
 * each delta the next publish sequence (pseq), keeps it in the backlog ring
 * and publishes it. Publish sequences, not the store's dots, are what gap
 * detection tracks: they are contiguous by construction, whatever order the
 * writer threads took their dots in, and they cover touches too. Deltas
 * that find the queue full (queue_bytes) become a hole: one pseq that is
 * never published and whose repair is answered TOO_OLD, so the receivers
 * compare sessions with this node at once (publish_hole).
 *
 * The actor holds its turn lock whenever it is awake. A write made at a
 * quiet time, when the actor sleeps and no other local write came in the
 * last INLINE_QUIET_NS, does not wake it: the writer takes the turn itself
 * (trylock, so it never waits) and runs the same publishing step the actor
 * would, once its store write has released the session's lock. The sockets
 * are still used by one thread at a time, with the lock's barrier between
 * (which is what ZeroMQ asks of a socket that changes threads), and a write
 * reaches the wire one thread hand-off sooner. Under a burst the actor
 * publishes, so deltas still leave in batches.
 *
 * Receiving: a tracker per origin tells new from duplicate deltas and finds
 * gaps, including a lost tail (heartbeats carry the last pseq). A gap older
 * than the grace period is asked of the origin (REPAIR_REQ); a backlog that
 * no longer holds it answers TOO_OLD, and the receiver then runs
 * anti-entropy against a live peer: digests and version vectors by chunks,
 * then the full state of every session the peer holds updates of that this
 * node should hold by now (those still in flight get the time to arrive;
 * see settle_t). A delta the store cannot apply (it names an
 * unknown session or reveals a missed update) makes the receiver fetch that
 * session whole. So nothing depends on PUB/SUB delivering everything.
 *
 * Joining: the node subscribes first, then asks one peer for a snapshot. The
 * donor streams its sessions in chunks, one chunk per credit the joiner
 * grants, a bounded amount of work per loop turn, so its own writes and
 * other requests keep flowing. Its cut (the pseq of every origin it had fully
 * applied when the snapshot began) comes with the last chunk; the joiner then
 * starts tracking each origin just past the cut and applies the deltas it
 * buffered meanwhile. Whatever fell between is a gap like any other.
 *
 * Peers are met from the static list and from heartbeats: every node also
 * sends its heartbeat point to point to the peers it knows, so a node that
 * starts with us in its list becomes known to us too.
 */
#define _GNU_SOURCE
#include "sn_transport.h"

#include <czmq.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "sn_backlog.h"
#include "sn_curve.h"
#include "sn_log.h"
#include "sn_msg.h"
#include "sn_tracker.h"
#include "sn_wire.h"

#define ADDR_MAX 256
#define PEERS_MAX 256
/* heartbeats between two publications of the member list */
#define MEMBERS_EVERY 10
#define QUEUE_BYTES_DEFAULT (256u << 20)
#define CHUNK_SESSIONS 1024        /* sessions per snapshot chunk */
#define CHUNK_BYTES (256u << 10)   /* ...or about this many bytes */
#define SNAP_CREDIT 16             /* chunks in flight while joining */
#define SNAP_SIZING_MAX (16u << 20) /* a donor's count believed for sizing, at most
                                       (128 MiB of bucket arrays) */
#define DIGEST_BATCH 64            /* sessions per digest page: each costs both
                                      sides a decode, an encode and a hash, and
                                      local writes wait while a page is done */
#define REPAIR_MAX 4096             /* pseqs per repair request */
#define JOIN_BUFFER_MAX (128u << 20)
#define TURN_WRITES 4096            /* local deltas published per loop turn */
#define INLINE_QUIET_NS 20000       /* a write this long after the last one
                                     * publishes in the writer's thread */
#define TURN_MSGS 1024              /* frames read per socket per loop turn */
#define BATCH_DELTAS 256            /* deltas per DELTAS frame */
#define BATCH_BYTES (256u << 10)    /* ...or about this many bytes of bodies */
#define PARKED_MAX 8192             /* deltas waiting for an earlier one */
#define PARKED_BYTES (32u << 20)
#define PARK_MS 1000                /* then the session is fetched whole */
#define SETTLE_MAX 65536            /* differences waiting for updates in flight */
#define SETTLE_MS 1000              /* then the session is fetched whole */
#define REDIAL_MS 5000              /* secured bus: a dead peer is dialled anew this often */
#define RECONNECT_MAX_MS 5000       /* libzmq's reconnection back-off stops here */
#define RELAY_MS 5000               /* catch-up rounds through a third member, at most */
#define RESYNC_SILENT_MS 5000       /* an anti-entropy page unanswered this long is asked again */

/* What the actor's epoll set watches: the actor pipe, the local queue's
 * wake-up pipe, SUB, ROUTER, the monitors of PUB, ROUTER and SUB (on a
 * secured bus: refused handshakes), then one DEALER per peer (by peer
 * index). */
enum { SRC_PIPE, SRC_QUEUE, SRC_SUB, SRC_ROUTER, SRC_MON, SRC_DEALER = SRC_MON + 3 };
#define SOURCES (SRC_DEALER + PEERS_MAX)

/* ------------------------------------------------------------ types */

typedef struct waiter {
    uint32_t acks;              /* peers needed per delta */
    uint32_t deltas;            /* deltas of the write */
    uint32_t done;              /* deltas that got their acks */
    uint32_t refs;              /* the writer and each pending delta */
    int failed;                 /* SN_EREFUSED or SN_EBUSY: the acks cannot come */
    bool abandoned;             /* the writer stopped waiting */
    pthread_cond_t cond;
} waiter_t;

typedef struct qitem {
    struct qitem *next;
    uint8_t *body;              /* sn_wire delta */
    size_t len;
    uint64_t dot;               /* the delta's store dot; 0 for a touch */
    uint64_t pseq;              /* once published */
    waiter_t *waiter;
} qitem_t;

typedef struct {
    uint64_t pseq;
    waiter_t *waiter;
    uint32_t acks;              /* of the peers heard; the others refused */
    uint32_t nheard, cap_heard;
    uint64_t *heard;            /* the peers that answered, each counted once */
} pending_ack_t;

typedef struct {
    char address[ADDR_MAX];
    char router[ADDR_MAX];
    char key[SN_CURVE_KEY_TXT]; /* its CURVE public key, on a secured bus */
    uint64_t dialed_ms;         /* when its connections were last (re)made */
    bool closed;                /* it left: its connections are dropped until it
                                   is heard of again */
    uint64_t relayed_dots;      /* unreachable from here: its dots up to this were
                                   sought through another member */
    zsock_t *dealer;
    uint64_t node_id;
    char name[64];
    uint64_t incarnation;
    uint64_t last_heard_ms;
    uint64_t last_pseq;
    uint64_t lag;               /* announced but not yet received */
    bool subscribed;
    bool resyncing;             /* an anti-entropy round with it is running */
    bool resync_again;          /* another full round must follow this one */
    uint64_t resync_ms;         /* when the round last made progress */
    uint64_t resync_cursor;
    uint64_t ann_pseq, ann_dots;  /* its last heartbeat: dots <= ann_dots are in pseqs <= ann_pseq */
    uint64_t applied_dots;      /* we hold every dot of it up to this */
    sn_vv_t their_applied;      /* what it says it holds of every origin */
    uint64_t sessions;          /* alive sessions, as its last heartbeat said */
    bool left;                  /* it said LEAVE; cleared when it comes back */
} peer_t;

typedef struct {
    zframe_t *identity;         /* the joiner's ROUTER identity */
    uint64_t snap_id;
    uint64_t sessions;          /* held when it began, for the joiner's sizing */
    uint64_t cursor;
    uint64_t chunk;
    uint32_t credit;
    sn_vv_t cut;
    bool done;
} snap_serve_t;

/* A delta that needs an update the receiver has not got yet, while an
 * earlier publish sequence of its origin is missing: the repair of that
 * gap most likely brings the update, so the delta waits for it instead of
 * fetching the whole session at once. */
typedef struct {
    uint64_t origin, pseq, at_ms;
    uint32_t flags;
    uint32_t len;
    uint8_t *body;
} parked_t;

/* A session anti-entropy found different where the peer holds updates
 * that are still on their way here (its vector has dots this node has not
 * been announced yet): under a burst that is most of the differences, and
 * fetching them whole would resend what the deltas bring anyway. It is
 * compared again once the dots are due, and fetched only if still behind. */
typedef struct {
    uint64_t peer;              /* the node id whose digest differed */
    uint64_t at_ms;
    uint64_t digest;            /* the peer's */
    sn_vv_t vv;                 /* the peer's vector; dots malloc'd */
    uint32_t id_len;
    uint8_t *id;
} settle_t;

/* Buffers lent to ZeroMQ without a copy (snapshot chunks of about
 * CHUNK_BYTES): ZeroMQ's I/O thread gives them back once sent, and the next
 * chunk reuses one. Fresh memory costs a page fault per 4 KiB on our VMs, and
 * glibc returns large freed blocks to the system, so a new buffer per chunk
 * would fault its way through every byte of a snapshot twice. The pool
 * outlives the transport while ZeroMQ still holds one of its buffers. */
#define ZC_KEEP 8
typedef struct {
    pthread_mutex_t lock;
    uint32_t refs;              /* the transport, plus each buffer lent */
    size_t nkept;
    void *kept[ZC_KEEP];
} zc_pool_t;

typedef struct jbuf {
    struct jbuf *next;
    size_t len;
    uint8_t bytes[];
} jbuf_t;

struct sn_transport {
    uint32_t hb_since_members;  /* heartbeats since the member list was last published */
    sn_transport_options_t opt;
    char cluster[ADDR_MAX];
    char pub_ep[ADDR_MAX], router_ep[ADDR_MAX];
    char name[64];
    char **peer_list;
    sn_store_t *store;
    zactor_t *actor;
    int start_rc;               /* set by the actor before its first signal */
    int wake[2];                /* pipe: writers -> actor */

    pthread_mutex_t qlock;      /* queue, pending acks, waiters, lost deltas */
    pthread_mutex_t turn;       /* held by whoever runs the actor's state:
                                 * the actor while awake, or a writer
                                 * publishing in its place */
    _Atomic uint64_t last_write_ns; /* the last local write's end */
    qitem_t *qhead, *qtail;
    size_t qbytes, qmax;
    bool hole_wanted;           /* deltas were lost since the last hole */
    uint64_t *lost_dots;        /* ...and these were their dots */
    size_t nlost_dots, cap_lost_dots;
    uint64_t hole_log_ms, holes_unlogged;  /* actor-owned */
    pending_ack_t *pending;
    size_t npending, cap_pending;

    pthread_mutex_t mlock;      /* peers table (read by sn_transport_members) */
    peer_t peers[PEERS_MAX];
    size_t npeers;

    pthread_mutex_t rlock;      /* readiness */
    pthread_cond_t rcond;
    bool ready;
    bool had_donor;             /* the sessions came from a peer's snapshot */

    struct {
        _Atomic uint64_t deltas_sent, batches_sent, sent_by_writers, deltas_received,
            deltas_dropped, duplicates, gaps_detected, repairs_requested, repaired,
            full_fetches, resyncs, resync_settled, resync_retries, bad_frames, apply_refused,
            queue_overflows, acks_timed_out, acks_refused, bytes_sent, bytes_received,
            snapshot_sessions, members_learned, auth_refused, peers_without_key;
    } st;

    zc_pool_t *zc;

    /* actor-owned */
    zsock_t *pub, *router, *sub;
    sn_curve_t *curve;          /* NULL: the bus is not secured */
    zsock_t *mon[3];            /* handshake events of pub, router, sub */
    uint64_t auth_log_ms, auth_unlogged;
    msgpack_sbuffer pub_frame;    /* the delta frame being published */
    msgpack_sbuffer snap_states;  /* a chunk's states, kept between chunks */
    sn_msg_blob_t *snap_items;
    uint32_t snap_n, cap_snap_items;
    size_t snap_bytes;
    int epfd;
    bool check[SOURCES];        /* look at this source in the next loop turn */
    sn_backlog_t *backlog;
    sn_tracker_t *tracker;
    uint64_t pseq;
    uint64_t incarnation;
    bool leaving;               /* left the cluster: no more heartbeats */
    uint32_t leave_linger_ms;
    snap_serve_t *serving;
    size_t nserving;
    enum { J_IDLE, J_WAITING, J_STREAMING } join_state;
    uint64_t join_started_ms;
    uint64_t snap_id;
    int join_peer;
    jbuf_t *jhead, *jtail;
    size_t jbytes;
    uint64_t rng;
    uint64_t next_antientropy_ms;
    bool resync_wanted;         /* a fetch found nobody to ask */
    parked_t *parked;
    size_t nparked, parked_bytes;
    settle_t *settle;
    size_t nsettle, cap_settle;
    uint64_t last_fetch_ms;     /* fetches in flight hold back the applied vector */
    uint64_t relay_ms;          /* the last catch-up through a third member */
    uint64_t dots_done;         /* every own dot up to this is published */
    uint64_t *dots_ahead;       /* own dots published out of order, sorted */
    size_t ndots_ahead, cap_dots_ahead;
    sn_vv_t gc_stable;          /* the stable vector of the pass running or last run */
    uint32_t gc_shard;          /* next shard of the pass; == shards when idle */
    uint64_t next_gc_ms;
    struct fetch_ack {
        uint64_t origin, pseq;
        sn_dot_t dot;           /* the delta's (delta_dot) */
        uint64_t at_ms;
        uint32_t id_len;
        uint8_t id[SN_ID_MAX];
    } fetch_acks[64];           /* ACKs owed once a fetched session arrives */
    size_t nfetch_acks;
};

static _Thread_local struct {
    sn_transport_t *t;
    waiter_t *w;
} tls_write;

/* A write in progress (sn_transport_write_begin): the sink leaves waking
 * the actor to sn_transport_write_end. */
static _Thread_local struct {
    sn_transport_t *t;
    bool queued;
} tls_publish;

/* ------------------------------------------------------------ helpers */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static uint64_t mono_ms(void)
{
    return mono_ns() / 1000000u;
}

/* A CLOCK_MONOTONIC deadline for pthread_cond_timedwait (the waits' condition
 * variables are created on that clock). */
static struct timespec deadline_after(uint32_t timeout_ms)
{
    struct timespec d;
    clock_gettime(CLOCK_MONOTONIC, &d);
    d.tv_sec += timeout_ms / 1000;
    d.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
    if (d.tv_nsec >= 1000000000L) {
        d.tv_sec++;
        d.tv_nsec -= 1000000000L;
    }
    return d;
}

static void tlog(sn_transport_t *t, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sn_vlogf(t->opt.log, t->opt.log_arg, t->opt.log_level, level, fmt, ap);
    va_end(ap);
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t rnd(sn_transport_t *t)
{
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int sn_transport_endpoints(const char *cluster, char *pub, size_t pub_cap, char *router,
                           size_t router_cap)
{
    if (!cluster)
        return SN_EINVAL;
    if (strncmp(cluster, "tcp://", 6) == 0) {
        const char *colon = strrchr(cluster + 6, ':');
        if (!colon || colon[1] == 0)
            return SN_EINVAL;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port >= 65535)
            return SN_EINVAL;
        int host_len = (int) (colon - cluster);
        if (snprintf(pub, pub_cap, "%s", cluster) >= (int) pub_cap ||
            snprintf(router, router_cap, "%.*s:%ld", host_len, cluster, port + 1) >=
                (int) router_cap)
            return SN_EINVAL;
        return 0;
    }
    if (strncmp(cluster, "inproc://", 9) == 0 || strncmp(cluster, "ipc://", 6) == 0) {
        if (snprintf(pub, pub_cap, "%s.pub", cluster) >= (int) pub_cap ||
            snprintf(router, router_cap, "%s.router", cluster) >= (int) router_cap)
            return SN_EINVAL;
        return 0;
    }
    return SN_EINVAL;
}

/* The actor waits in epoll on each socket's ZMQ_FD. That descriptor only
 * says the socket has commands to process, and any call on the socket may
 * process them: a send can take in the signal that a message arrived, and
 * the descriptor then stays quiet. So every socket we call is looked at
 * again in the next turn, as is one whose reading stopped at its quota. */
static void touched(sn_transport_t *t, zsock_t *sock)
{
    if (sock == t->router) {
        t->check[SRC_ROUTER] = true;
    } else if (sock == t->sub) {
        t->check[SRC_SUB] = true;
    } else if (sock != t->pub) {
        for (size_t i = 0; i < t->npeers; i++)
            if (t->peers[i].dealer == sock)
                t->check[SRC_DEALER + i] = true;
    }
}

static int watch(sn_transport_t *t, int fd, uint32_t source)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = source};
    t->check[source] = true;
    return epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Sends `msg` (after the ROUTER identity, if any) and takes it over: on
 * failure it is closed, which hands a lent buffer back. */
static int send_zmsg(sn_transport_t *t, zsock_t *sock, zframe_t *identity, zmq_msg_t *msg)
{
    void *h = zsock_resolve(sock);
    size_t len = zmq_msg_size(msg);
    touched(t, sock);
    if ((identity && zmq_send(h, zframe_data(identity), zframe_size(identity),
                              ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) ||
        zmq_msg_send(msg, h, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(msg);
        return -1;
    }
    count(&t->st.bytes_sent, len);
    return 0;
}

static int send_bytes(sn_transport_t *t, zsock_t *sock, zframe_t *identity, const uint8_t *buf,
                      size_t len)
{
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, len))
        return -1;
    memcpy(zmq_msg_data(&msg), buf, len);
    return send_zmsg(t, sock, identity, &msg);
}

static int send_msg(sn_transport_t *t, zsock_t *sock, zframe_t *identity, sn_msg_t *m)
{
    m->sender = t->opt.node_id;
    uint8_t *buf;
    size_t len;
    int rc = sn_msg_encode(m, &buf, &len);
    if (rc) {
        tlog(t, SN_LOG_WARN, "cannot encode %s: %s", sn_msg_type_name(m->type), sn_strerror(rc));
        return rc;
    }
    rc = send_bytes(t, sock, identity, buf, len);
    free(buf);
    return rc;
}

static void zc_unref(zc_pool_t *z)
{
    pthread_mutex_lock(&z->lock);
    bool last = --z->refs == 0;
    pthread_mutex_unlock(&z->lock);
    if (last) {
        for (size_t i = 0; i < z->nkept; i++)
            free(z->kept[i]);
        pthread_mutex_destroy(&z->lock);
        free(z);
    }
}

/* ZeroMQ's free callback, in whichever thread drops the message. */
static void zc_return(void *data, void *hint)
{
    zc_pool_t *z = hint;
    pthread_mutex_lock(&z->lock);
    if (z->nkept < ZC_KEEP && z->refs > 1)
        z->kept[z->nkept++] = data;
    else
        free(data);
    pthread_mutex_unlock(&z->lock);
    zc_unref(z);
}

/* An empty sbuffer over a kept buffer, if there is one. */
static msgpack_sbuffer zc_take(zc_pool_t *z)
{
    msgpack_sbuffer sb = {0};
    pthread_mutex_lock(&z->lock);
    if (z->nkept) {
        sb.data = z->kept[--z->nkept];
        sb.alloc = malloc_usable_size(sb.data);
    }
    pthread_mutex_unlock(&z->lock);
    return sb;
}

/* Encodes `m` into a pool buffer and lends it to ZeroMQ. */
static int send_msg_zc(sn_transport_t *t, zsock_t *sock, zframe_t *identity, sn_msg_t *m)
{
    m->sender = t->opt.node_id;
    msgpack_sbuffer sb = zc_take(t->zc);
    int rc = sn_msg_encode_into(m, &sb);
    if (rc) {
        tlog(t, SN_LOG_WARN, "cannot encode %s: %s", sn_msg_type_name(m->type), sn_strerror(rc));
        free(sb.data);
        return rc;
    }
    zmq_msg_t msg;
    pthread_mutex_lock(&t->zc->lock);
    t->zc->refs++;
    pthread_mutex_unlock(&t->zc->lock);
    if (zmq_msg_init_data(&msg, sb.data, sb.size, zc_return, t->zc)) {
        zc_return(sb.data, t->zc);
        return -1;
    }
    return send_zmsg(t, sock, identity, &msg);
}

/* ------------------------------------------------------------ peers */

static peer_t *peer_by_address(sn_transport_t *t, const char *address)
{
    for (size_t i = 0; i < t->npeers; i++)
        if (strcmp(t->peers[i].address, address) == 0)
            return &t->peers[i];
    return NULL;
}

static peer_t *peer_by_id(sn_transport_t *t, uint64_t id)
{
    for (size_t i = 0; i < t->npeers; i++)
        if (t->peers[i].node_id == id)
            return &t->peers[i];
    return NULL;
}

/* The key to connect to `address` with on a secured bus: the one the
 * caller learned (a member list, the peer's own authenticated handshake),
 * else the certificate in the allow-list that names the address. */
static bool peer_key(sn_transport_t *t, const char *address, const char *learned,
                     char key[SN_CURVE_KEY_TXT])
{
    if (learned) {
        snprintf(key, SN_CURVE_KEY_TXT, "%s", learned);
        return true;
    }
    if (sn_curve_key_for(t->opt.curve_allow, address, key))
        return true;
    count(&t->st.peers_without_key, 1);
    tlog(t, SN_LOG_WARN,
         "no key for %s: put its certificate, with %s = \"%s\" in its metadata, in %s",
         address, SN_CURVE_META_ADDRESS, address, t->opt.curve_allow);
    return false;
}

/* Connects (up) or disconnects the SUB and the peer's DEALER to and from
 * its endpoints; false if a connect failed. */
static bool peer_link(sn_transport_t *t, peer_t *p, bool up)
{
    char pub[ADDR_MAX], router[ADDR_MAX];
    if (sn_transport_endpoints(p->address, pub, sizeof pub, router, sizeof router))
        return false;
    t->check[SRC_SUB] = true;
    t->check[SRC_DEALER + (size_t) (p - t->peers)] = true;
    if (!up) {
        zsock_disconnect(t->sub, "%s", pub);
        zsock_disconnect(p->dealer, "%s", router);
        return true;
    }
    if (t->curve)
        sn_curve_client(t->curve, t->sub, p->key);
    p->dialed_ms = mono_ms();
    if (zsock_connect(t->sub, "%s", pub) < 0 || zsock_connect(p->dealer, "%s", router) < 0) {
        tlog(t, SN_LOG_WARN, "cannot reconnect to %s", p->address);
        return false;
    }
    return true;
}

/* Drops the connections to a peer that left: nothing is sent to it or
 * dialled any more. Its entry stays, listed `left`. */
static void peer_close(sn_transport_t *t, peer_t *p)
{
    if (p->closed || !peer_link(t, p, false))
        return;
    p->closed = true;
    tlog(t, SN_LOG_INFO, "closed the connections to %s", p->address);
}

/* Connects again to a peer whose connections were dropped. */
static void peer_reopen(sn_transport_t *t, peer_t *p)
{
    if (!p->closed || !peer_link(t, p, true))
        return;
    p->closed = false;
    tlog(t, SN_LOG_INFO, "reconnected to %s", p->address);
}

/* Adds a peer and connects to it (actor thread). On a secured bus `key`
 * is its public key if known (NULL: look it up). */
static peer_t *peer_add(sn_transport_t *t, const char *address, const char *key)
{
    if (strcmp(address, t->cluster) == 0)
        return NULL;
    peer_t *p = peer_by_address(t, address);
    if (p) {
        peer_reopen(t, p);   /* heard of again after it left */
        return p;
    }
    if (t->npeers == PEERS_MAX) {
        tlog(t, SN_LOG_WARN, "peer table full, ignoring %s", address);
        return NULL;
    }
    char pub[ADDR_MAX], router[ADDR_MAX];
    if (sn_transport_endpoints(address, pub, sizeof pub, router, sizeof router)) {
        tlog(t, SN_LOG_WARN, "bad peer address %s", address);
        return NULL;
    }
    char server_key[SN_CURVE_KEY_TXT] = "";
    if (t->curve && !peer_key(t, address, key, server_key))
        return NULL;
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    if (!dealer)
        return NULL;
    zsock_set_linger(dealer, 0);
    zsock_set_sndhwm(dealer, 100000);
    zsock_set_rcvhwm(dealer, 100000);
    zsock_set_maxmsgsize(dealer, SN_MSG_FRAME_MAX);
    zsock_set_reconnect_ivl_max(dealer, RECONNECT_MAX_MS);
    if (t->curve) {
        sn_curve_client(t->curve, dealer, server_key);
        sn_curve_client(t->curve, t->sub, server_key);
    }
    t->check[SRC_SUB] = true;  /* connecting processes its commands */
    if (zsock_connect(dealer, "%s", router) < 0 || zsock_connect(t->sub, "%s", pub) < 0 ||
        watch(t, zsock_fd(dealer), SRC_DEALER + (uint32_t) t->npeers) < 0) {
        tlog(t, SN_LOG_WARN, "cannot connect to %s", address);
        zsock_destroy(&dealer);
        return NULL;
    }
    pthread_mutex_lock(&t->mlock);
    p = &t->peers[t->npeers++];
    memset(p, 0, sizeof *p);
    snprintf(p->address, sizeof p->address, "%s", address);
    snprintf(p->router, sizeof p->router, "%s", router);
    snprintf(p->key, sizeof p->key, "%s", server_key);
    p->dialed_ms = mono_ms();
    p->dealer = dealer;
    p->subscribed = true;
    pthread_mutex_unlock(&t->mlock);
    tlog(t, SN_LOG_INFO, "peer %s added", address);
    return p;
}

static int member_state(const sn_transport_t *t, const peer_t *p, uint64_t now)
{
    if (p->left)
        return SN_MEMBER_LEFT;
    if (!p->last_heard_ms)
        return SN_MEMBER_DEAD;
    uint64_t quiet = now - p->last_heard_ms;
    if (quiet <= t->opt.suspect_ms)
        return SN_MEMBER_ALIVE;
    if (quiet <= t->opt.dead_ms)
        return SN_MEMBER_SUSPECT;
    return SN_MEMBER_DEAD;
}

/* Makes the connections to a peer anew: libzmq's pending reconnection
 * (and its back-off) is dropped and the peer is dialled at once. */
static void peer_redial(sn_transport_t *t, peer_t *p)
{
    if (p->closed || !peer_link(t, p, false))
        return;
    if (peer_link(t, p, true))
        tlog(t, SN_LOG_DEBUG, "reconnecting to %s", p->address);
}

/* On a secured bus, libzmq gives up on a connection whose handshake was
 * refused (a key not yet on the peer's allow-list, say) instead of retrying
 * it. So the connections to a peer not heard from for a while are made
 * anew now and then: one added to the allow-list since gets in without a
 * restart. A peer that is just down costs a reconnect it would make anyway. */
static void redial(sn_transport_t *t, uint64_t now)
{
    for (size_t i = 0; t->curve && i < t->npeers; i++) {
        peer_t *p = &t->peers[i];
        if (!p->closed && member_state(t, p, now) == SN_MEMBER_DEAD &&
            now - p->dialed_ms >= REDIAL_MS)
            peer_redial(t, p);
    }
}

/* A random alive peer, else a random suspect one, else NULL. */
static peer_t *any_live_peer(sn_transport_t *t, uint64_t now)
{
    for (int want = SN_MEMBER_ALIVE; want <= SN_MEMBER_SUSPECT; want++) {
        size_t live[PEERS_MAX], n = 0;
        for (size_t i = 0; i < t->npeers; i++)
            if (member_state(t, &t->peers[i], now) == want)
                live[n++] = i;
        if (n)
            return &t->peers[live[rnd(t) % n]];
    }
    return NULL;
}

/* ------------------------------------------------------------ writer side */

static void waiter_unref(waiter_t *w)
{
    if (--w->refs == 0) {
        pthread_cond_destroy(&w->cond);
        free(w);
    }
}

static void wake_actor(sn_transport_t *t)
{
    uint8_t one = 1;
    ssize_t n = write(t->wake[1], &one, 1);
    (void) n;  /* a full pipe already wakes the actor */
}

/* A delta that could not be queued (under qlock). It is not dropped
 * silently: the actor will publish a hole in its place (publish_hole), and
 * a writer waiting for acknowledgements learns now that none will come. */
static void lose_delta(sn_transport_t *t, uint64_t dot)
{
    count(&t->st.queue_overflows, 1);
    if (tls_write.t == t && tls_write.w)
        tls_write.w->failed = SN_EBUSY;
    if (dot && t->nlost_dots == t->cap_lost_dots) {
        size_t cap = t->cap_lost_dots ? 2 * t->cap_lost_dots : 64;
        uint64_t *a = realloc(t->lost_dots, cap * sizeof *a);
        if (a) {
            t->lost_dots = a;
            t->cap_lost_dots = cap;
        }
    }
    if (dot && t->nlost_dots < t->cap_lost_dots)
        t->lost_dots[t->nlost_dots++] = dot;
    /* (with no room for the dot, tombstone collection stalls: nothing
     * breaks) */
    bool wake = !t->hole_wanted && !t->qhead;
    t->hole_wanted = true;
    if (wake)
        wake_actor(t);
}

/* The store dot a delta carries; a touch carries none (counter 0). */
static sn_dot_t delta_dot(const sn_delta_t *d)
{
    return d->kind == SN_DELTA_TOUCH ? (sn_dot_t) {d->dot.node, 0} : d->dot;
}

void sn_transport_sink(const sn_delta_t *delta, void *arg)
{
    sn_transport_t *t = arg;
    uint64_t dot = delta_dot(delta).counter;
    qitem_t *it = calloc(1, sizeof *it);
    if (it && sn_wire_encode_delta(delta, &it->body, &it->len)) {
        free(it);
        it = NULL;
    }
    pthread_mutex_lock(&t->qlock);
    if (!it || t->qbytes + it->len > t->qmax) {
        lose_delta(t, dot);
        pthread_mutex_unlock(&t->qlock);
        if (it)
            free(it->body);
        free(it);
        return;
    }
    it->dot = dot;
    if (tls_write.t == t && tls_write.w) {
        it->waiter = tls_write.w;
        it->waiter->deltas++;
        it->waiter->refs++;
    }
    bool was_empty = t->qhead == NULL;
    if (t->qtail)
        t->qtail->next = it;
    else
        t->qhead = it;
    t->qtail = it;
    t->qbytes += it->len;
    pthread_mutex_unlock(&t->qlock);
    if (was_empty) {
        if (tls_publish.t == t)
            tls_publish.queued = true;
        else
            wake_actor(t);
    }
}

void sn_transport_write_begin(sn_transport_t *self)
{
    tls_publish.t = self;
    tls_publish.queued = false;
}

static size_t publish_local(sn_transport_t *t);

/* Faults in the pages the next sessions and backlog copies will take, a page
 * per slab class that carved since the last call, so that neither a writer
 * nor the actor applying a peer's delta pays for them on its way (a slab
 * page costs tens of microseconds here). Returns the pages faulted. */
static size_t prefault_ahead(sn_transport_t *t)
{
    return sn_store_prefault(t->store, 1) + sn_backlog_prefault(t->backlog, 1);
}

void sn_transport_write_end(sn_transport_t *self)
{
    bool queued = self && tls_publish.t == self && tls_publish.queued;
    tls_publish.t = NULL;
    tls_publish.queued = false;
    if (!queued)
        return;
    uint64_t now = mono_ns();
    uint64_t last = atomic_exchange_explicit(&self->last_write_ns, now, memory_order_relaxed);
    if (now - last >= INLINE_QUIET_NS && pthread_mutex_trylock(&self->turn) == 0) {
        /* the actor sleeps (or has not started, or has ended: no PUB) */
        bool up = self->pub != NULL;
        if (up)
            count(&self->st.sent_by_writers, publish_local(self));
        pthread_mutex_unlock(&self->turn);
        if (up) {
            /* what the actor does before it sleeps, which it now will not
             * do for this write: after the publish, so the delta does not
             * wait for it, and without the turn (the slabs lock their own) */
            prefault_ahead(self);
            return;
        }
    }
    wake_actor(self);
}

int sn_transport_begin_acked(sn_transport_t *self, uint32_t acks)
{
    tls_write.t = NULL;
    tls_write.w = NULL;
    if (!self || acks == 0)
        return 0;
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return SN_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    w->acks = acks;
    w->refs = 1;
    tls_write.t = self;
    tls_write.w = w;
    return 0;
}

int sn_transport_end_acked(sn_transport_t *self, uint32_t timeout_ms)
{
    waiter_t *w = tls_write.w;
    tls_write.t = NULL;
    tls_write.w = NULL;
    if (!self || !w)
        return 0;
    struct timespec deadline = deadline_after(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&self->qlock);
    while (w->done < w->deltas && !w->failed) {
        if (pthread_cond_timedwait(&w->cond, &self->qlock, &deadline) == ETIMEDOUT &&
            w->done < w->deltas && !w->failed) {
            rc = SN_ETIMEDOUT;
            count(&self->st.acks_timed_out, 1);
            break;
        }
    }
    if (w->failed) {
        rc = w->failed;
        if (rc == SN_EREFUSED)
            count(&self->st.acks_refused, 1);
    }
    w->abandoned = true;
    waiter_unref(w);
    pthread_mutex_unlock(&self->qlock);
    return rc;
}

/* ------------------------------------------------------------ publishing */

/* Writer threads take dots before they queue, so dots can be published out
 * of order; dots_done is the prefix that is complete, which is what peers
 * may count on when they collect tombstones. */
static void dot_published(sn_transport_t *t, uint64_t dot)
{
    if (dot == 0 || dot <= t->dots_done)
        return;
    if (dot == t->dots_done + 1) {
        t->dots_done = dot;
        size_t k = 0;
        while (k < t->ndots_ahead && t->dots_ahead[k] == t->dots_done + 1)
            t->dots_done = t->dots_ahead[k++];
        if (k) {
            memmove(t->dots_ahead, t->dots_ahead + k,
                    (t->ndots_ahead - k) * sizeof *t->dots_ahead);
            t->ndots_ahead -= k;
        }
        return;
    }
    if (t->ndots_ahead == t->cap_dots_ahead) {
        size_t cap = t->cap_dots_ahead ? 2 * t->cap_dots_ahead : 64;
        uint64_t *a = realloc(t->dots_ahead, cap * sizeof *a);
        if (!a)
            return;  /* the prefix stalls: collection waits, nothing breaks */
        t->dots_ahead = a;
        t->cap_dots_ahead = cap;
    }
    size_t i = t->ndots_ahead;
    while (i > 0 && t->dots_ahead[i - 1] > dot) {
        t->dots_ahead[i] = t->dots_ahead[i - 1];
        i--;
    }
    t->dots_ahead[i] = dot;
    t->ndots_ahead++;
}

/* Gives a published delta's waiter to the pending acknowledgements (under
 * qlock). */
static void await_acks(sn_transport_t *t, waiter_t *w, uint64_t pseq)
{
    if (w->abandoned) {
        waiter_unref(w);
        return;
    }
    if (t->npending == t->cap_pending) {
        size_t cap = t->cap_pending ? 2 * t->cap_pending : 64;
        pending_ack_t *p = realloc(t->pending, cap * sizeof *p);
        if (p) {
            t->pending = p;
            t->cap_pending = cap;
        }
    }
    if (t->npending < t->cap_pending)
        t->pending[t->npending++] = (pending_ack_t){.pseq = pseq, .waiter = w};
    else
        waiter_unref(w);
}

/* Publishes deltas that left the queue together in DELTAS frames of up to
 * BATCH_DELTAS deltas or about BATCH_BYTES: under a burst a subscriber then
 * receives, wakes and decodes once per frame instead of once per delta. A
 * lone delta goes out as a DELTA frame, so a write at a quiet time costs no
 * more than before. */
static void publish_batch(sn_transport_t *t, qitem_t *batch)
{
    sn_msg_entry_t entries[BATCH_DELTAS];
    while (batch) {
        uint32_t n = 0;
        size_t bytes = 0;
        for (; batch && n < BATCH_DELTAS && (n == 0 || bytes + batch->len <= BATCH_BYTES);
             batch = batch->next) {
            entries[n++] = (sn_msg_entry_t){.pseq = batch->pseq,
                                            .flags = batch->waiter ? SN_MSG_F_ACK : 0,
                                            .body = batch->body,
                                            .body_len = (uint32_t) batch->len};
            bytes += batch->len;
        }
        sn_msg_t m = {.type = SN_MSG_DELTAS, .sender = t->opt.node_id};
        m.u.deltas.n = n;
        m.u.deltas.entries = entries;
        if (sn_msg_encode_into(&m, &t->pub_frame) == 0)
            send_bytes(t, t->pub, NULL, (const uint8_t *) t->pub_frame.data,
                       t->pub_frame.size);
        count(&t->st.batches_sent, 1);
    }
}

/* Gives the deltas that could not be queued one publish sequence that is
 * never published: its backlog entry is empty, and a repair request for it
 * is answered TOO_OLD. Receivers see the gap (at the next delta or
 * heartbeat), find it cannot be repaired and compare sessions with this
 * node, so the lost writes reach them without waiting for periodic
 * anti-entropy. Their dots count as published with it, as the heartbeat's
 * dots_done promises. */
static void publish_hole(sn_transport_t *t, const uint64_t *dots, size_t n)
{
    uint64_t pseq = ++t->pseq;
    for (size_t i = 0; i < n; i++)
        dot_published(t, dots[i]);
    /* (a push of an empty entry cannot fail: a full backlog drops its
     * oldest) */
    sn_backlog_push(t->backlog, pseq, 0, NULL, 0);
    t->holes_unlogged++;
    uint64_t now = mono_ms();
    if (now - t->hole_log_ms >= 10000) {
        /* under a sustained overload every loop turn leaves a hole */
        tlog(t, SN_LOG_WARN, "replication queue full (%zu bytes): %llu holes published;"
             " peers fetch what they held", t->qmax, (unsigned long long) t->holes_unlogged);
        t->hole_log_ms = now;
        t->holes_unlogged = 0;
    }
}

/* Publishes queued local deltas; returns how many left the queue. */
static size_t publish_local(sn_transport_t *t)
{
    uint8_t drained[64];
    ssize_t n = read(t->wake[0], drained, sizeof drained);
    (void) n;
    /* Up to TURN_WRITES deltas leave the queue under one lock. */
    pthread_mutex_lock(&t->qlock);
    bool hole = t->hole_wanted;
    uint64_t *lost = t->lost_dots;
    size_t nlost = t->nlost_dots;
    if (hole) {
        t->hole_wanted = false;
        t->lost_dots = NULL;
        t->nlost_dots = t->cap_lost_dots = 0;
    }
    qitem_t *batch = t->qhead, *last = NULL;
    int taken = 0;
    for (qitem_t *it = batch; it && taken < TURN_WRITES; it = it->next, taken++) {
        t->qbytes -= it->len;
        last = it;
    }
    if (last) {
        t->qhead = last->next;
        if (!t->qhead)
            t->qtail = NULL;
        last->next = NULL;
    }
    bool more = t->qhead != NULL;
    pthread_mutex_unlock(&t->qlock);

    if (hole)
        publish_hole(t, lost, nlost);
    free(lost);
    bool waiters = false;
    for (qitem_t *it = batch; it; it = it->next) {
        it->pseq = ++t->pseq;
        dot_published(t, it->dot);
        waiters |= it->waiter != NULL;
    }
    /* Out first, then the backlog's copies: the first delta of a burst
     * does not wait for the bookkeeping of the rest. A repair request for
     * them is read only after this turn. */
    if (batch && batch->next)
        publish_batch(t, batch);
    for (qitem_t *it = batch; it; it = it->next) {
        sn_msg_t m = {.type = SN_MSG_DELTA, .sender = t->opt.node_id};
        m.u.delta.pseq = it->pseq;
        m.u.delta.flags = it->waiter ? SN_MSG_F_ACK : 0;
        m.u.delta.body = it->body;
        m.u.delta.body_len = (uint32_t) it->len;
        /* the backlog keeps every delta as its own frame, for repairs */
        if (sn_msg_encode_into(&m, &t->pub_frame) == 0) {
            const uint8_t *buf = (const uint8_t *) t->pub_frame.data;
            if (!batch->next)
                send_bytes(t, t->pub, NULL, buf, t->pub_frame.size);
            sn_backlog_push(t->backlog, m.u.delta.pseq, m.u.delta.flags, buf,
                            t->pub_frame.size);
            count(&t->st.deltas_sent, 1);
        }
    }
    if (waiters) {
        pthread_mutex_lock(&t->qlock);
        for (qitem_t *it = batch; it; it = it->next)
            if (it->waiter)
                await_acks(t, it->waiter, it->pseq);
        pthread_mutex_unlock(&t->qlock);
    }
    while (batch) {
        qitem_t *it = batch;
        batch = it->next;
        free(it->body);
        free(it);
    }
    if (more) {
        /* more left: wake ourselves again */
        uint8_t one = 1;
        n = write(t->wake[1], &one, 1);
    }
    if (t->pub_frame.alloc > (1u << 20)) {
        /* a big write passed: do not keep its buffer */
        msgpack_sbuffer_destroy(&t->pub_frame);
        msgpack_sbuffer_init(&t->pub_frame);
    }
    return (size_t) taken;
}

static uint32_t alive_peers(sn_transport_t *t)
{
    uint64_t now = mono_ms();
    uint32_t alive = 0;
    for (size_t i = 0; i < t->npeers; i++)
        alive += member_state(t, &t->peers[i], now) == SN_MEMBER_ALIVE;
    return alive;
}

/* Lets go of a pending delta's waiter (under qlock). */
static void pending_release(pending_ack_t *p)
{
    waiter_unref(p->waiter);
    free(p->heard);
}

/* An acknowledgement, or a refusal (status != 0). A delta fails once the
 * live peers that have not refused it are fewer than the acknowledgements
 * asked for: waiting longer could only end in a timeout. */
static void on_ack(sn_transport_t *t, const sn_msg_t *m)
{
    if (m->u.ack.origin != t->opt.node_id)
        return;
    pthread_mutex_lock(&t->qlock);
    for (size_t i = 0; i < t->npending; i++) {
        pending_ack_t *p = &t->pending[i];
        if (p->pseq != m->u.ack.pseq)
            continue;
        for (uint32_t k = 0; k < p->nheard; k++)
            if (p->heard[k] == m->sender)
                goto out;
        if (p->nheard == p->cap_heard) {
            uint32_t cap = p->cap_heard ? 2 * p->cap_heard : 4;
            uint64_t *h = realloc(p->heard, cap * sizeof *h);
            if (!h)
                goto out;  /* not counted: the writer may time out, never be misled */
            p->heard = h;
            p->cap_heard = cap;
        }
        p->heard[p->nheard++] = m->sender;
        if (m->u.ack.status == 0)
            p->acks++;
        waiter_t *w = p->waiter;
        bool acked = p->acks >= w->acks;
        bool hopeless = !acked && m->u.ack.status != 0 &&
                        alive_peers(t) < w->acks + (p->nheard - p->acks);
        if (acked || hopeless || w->abandoned) {
            if (!w->abandoned) {
                if (acked)
                    w->done++;
                else if (hopeless && !w->failed)
                    w->failed = SN_EREFUSED;
                pthread_cond_broadcast(&w->cond);
            }
            pending_release(p);
            t->pending[i] = t->pending[--t->npending];
        }
        break;
    }
out:
    pthread_mutex_unlock(&t->qlock);
}

/* Drops pending acks whose writer gave up. */
static void sweep_pending(sn_transport_t *t)
{
    pthread_mutex_lock(&t->qlock);
    for (size_t i = 0; i < t->npending;) {
        if (t->pending[i].waiter->abandoned) {
            pending_release(&t->pending[i]);
            t->pending[i] = t->pending[--t->npending];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&t->qlock);
}

/* ------------------------------------------------------------ receiving */

static void fetch_session(sn_transport_t *t, uint64_t origin, const uint8_t *id, uint32_t id_len)
{
    /* the origin holds its own writes; a dead one's live on in the others.
     * With nobody to ask, anti-entropy will bring the session later. */
    peer_t *p = peer_by_id(t, origin);
    if (!p || member_state(t, p, mono_ms()) == SN_MEMBER_DEAD)
        p = any_live_peer(t, mono_ms());
    if (!p) {
        t->resync_wanted = true;
        return;
    }
    t->last_fetch_ms = mono_ms();
    sn_msg_blob_t blob = {.bytes = id, .len = id_len};
    sn_msg_t m = {.type = SN_MSG_FETCH_REQ};
    m.u.fetch_req.n = 1;
    m.u.fetch_req.ids = &blob;
    send_msg(t, p->dealer, NULL, &m);
    count(&t->st.full_fetches, 1);
}

static void changed(sn_transport_t *t, const uint8_t *id, uint32_t id_len)
{
    if (t->opt.on_change)
        t->opt.on_change(id, id_len, t->opt.on_change_arg);
}

/* Tells the origin that this node holds publish sequence `pseq` (rc 0) or
 * could not apply it (rc, an SN_E* code). */
static void send_ack(sn_transport_t *t, uint64_t origin, uint64_t pseq, int rc)
{
    peer_t *p = peer_by_id(t, origin);
    if (!p)
        return;
    sn_msg_t m = {.type = SN_MSG_ACK};
    m.u.ack.origin = origin;
    m.u.ack.pseq = pseq;
    m.u.ack.status = (uint32_t) -rc;
    send_msg(t, p->dealer, NULL, &m);
}

/* Whether the session holds the update with store dot `dot` of `origin`: a
 * session's vector counts, per node, the last of its updates merged, and a
 * node's updates of one session follow each other. A touch has no dot. */
static bool holds_dot(sn_transport_t *t, const uint8_t *id, uint32_t id_len, sn_dot_t dot)
{
    sn_vv_t vv = {0};
    if (sn_store_digest_vv(t->store, id, id_len, NULL, &vv))
        return false;
    bool held = dot.counter == 0;
    for (uint32_t i = 0; i < vv.n && !held; i++)
        held = vv.dots[i].node == dot.node && vv.dots[i].counter >= dot.counter;
    free(vv.dots);
    return held;
}

/* The writer waits: acknowledge once the fetched session holds the write. */
static void owe_ack(sn_transport_t *t, uint64_t origin, uint64_t pseq, const sn_delta_t *delta)
{
    if (t->nfetch_acks == sizeof t->fetch_acks / sizeof *t->fetch_acks)
        return;  /* the writer will see a timeout, not a wrong answer */
    struct fetch_ack *fa = &t->fetch_acks[t->nfetch_acks++];
    fa->origin = origin;
    fa->pseq = pseq;
    fa->dot = delta_dot(delta);
    fa->at_ms = mono_ms();
    fa->id_len = delta->id_len;
    memcpy(fa->id, delta->id, delta->id_len);
}

/* Counts a peer's update or state the store refused: over the memory limit
 * (or out of memory) is this node's limit, anything else bad input. */
static void count_refusal(sn_transport_t *t, int rc)
{
    bool full = rc == SN_EFULL || rc == SN_ENOMEM;
    count(full ? &t->st.apply_refused : &t->st.bad_frames, 1);
}

/* What follows applying a delta, whether it came now or waited parked: a
 * change is notified, a refusal counted, a delta that needs the whole
 * session fetches it (its acknowledgement waits for the session), and any
 * other is acknowledged if the writer asked. */
static void after_apply(sn_transport_t *t, uint64_t origin, uint64_t pseq, uint32_t flags,
                        const sn_delta_t *delta, int rc)
{
    if (rc == SN_APPLY_APPLIED)
        changed(t, delta->id, delta->id_len);
    if (rc == SN_APPLY_NEED_FULL) {
        fetch_session(t, origin, delta->id, delta->id_len);
        if (flags & SN_MSG_F_ACK)
            owe_ack(t, origin, pseq, delta);
        return;
    }
    if (rc < 0) {
        count_refusal(t, rc);
        tlog(t, SN_LOG_WARN, "delta %llu of %016llx refused: %s", (unsigned long long) pseq,
             (unsigned long long) origin, sn_strerror(rc));
    }
    if (flags & SN_MSG_F_ACK)
        send_ack(t, origin, pseq, rc < 0 ? rc : 0);
}

static bool park(sn_transport_t *t, uint64_t origin, uint64_t pseq, uint32_t flags,
                 const uint8_t *body, uint32_t len)
{
    if (sn_tracker_contiguous(t->tracker, origin) >= pseq || t->nparked == PARKED_MAX ||
        t->parked_bytes + len > PARKED_BYTES)
        return false;
    if (!t->parked && !(t->parked = calloc(PARKED_MAX, sizeof *t->parked)))
        return false;
    uint8_t *copy = malloc(len);
    if (!copy)
        return false;
    memcpy(copy, body, len);
    t->parked[t->nparked++] = (parked_t){origin, pseq, mono_ms(), flags, len, copy};
    t->parked_bytes += len;
    return true;
}

/* Retries, in arrival order, the parked deltas whose origin has no gap
 * before them any more, or that waited long enough. */
static void retry_parked(sn_transport_t *t, uint64_t now)
{
    size_t kept = 0, n = t->nparked;
    parked_t *ready = NULL;
    size_t nready = 0;
    for (size_t i = 0; i < n; i++) {
        parked_t *p = &t->parked[i];
        if (sn_tracker_contiguous(t->tracker, p->origin) >= p->pseq || now - p->at_ms >= PARK_MS) {
            if (!ready && !(ready = malloc(n * sizeof *ready))) {
                t->parked[kept++] = *p;
                continue;
            }
            ready[nready++] = *p;
            t->parked_bytes -= p->len;
        } else {
            t->parked[kept++] = *p;
        }
    }
    t->nparked = kept;
    for (size_t i = 0; i < nready; i++) {
        parked_t *p = &ready[i];
        sn_wire_delta_t d;
        if (sn_wire_decode_delta(p->body, p->len, &d) == 0) {
            after_apply(t, p->origin, p->pseq, p->flags, &d.delta,
                        sn_store_apply(t->store, &d.delta));
            sn_wire_delta_release(&d);
        }
        free(p->body);
    }
    free(ready);
}

/* Applies one delta frame's content: origin, pseq, flags, sn_wire body. */
static void apply_delta(sn_transport_t *t, uint64_t origin, uint64_t pseq, uint32_t flags,
                        const uint8_t *body, uint32_t body_len)
{
    sn_track_t tr = sn_tracker_receive(t->tracker, origin, pseq, mono_ms());
    if (tr == SN_TRACK_DUPLICATE) {
        count(&t->st.duplicates, 1);
        /* acknowledged again only if it is here: the first copy may have
         * been refused, or still wait for its session to be fetched */
        sn_wire_delta_t d;
        if ((flags & SN_MSG_F_ACK) && sn_wire_decode_delta(body, body_len, &d) == 0) {
            if (holds_dot(t, d.delta.id, d.delta.id_len, delta_dot(&d.delta)))
                send_ack(t, origin, pseq, 0);
            sn_wire_delta_release(&d);
        }
        return;
    }
    sn_wire_delta_t d;
    if (sn_wire_decode_delta(body, body_len, &d)) {
        count(&t->st.bad_frames, 1);
        return;
    }
    count(&t->st.deltas_received, 1);
    int rc = sn_store_apply(t->store, &d.delta);
    /* a delta whose missing update a pending repair most likely brings
     * waits for it before the session is fetched whole */
    if (rc != SN_APPLY_NEED_FULL || !park(t, origin, pseq, flags, body, body_len))
        after_apply(t, origin, pseq, flags, &d.delta, rc);
    sn_wire_delta_release(&d);
}

static void buffer_for_join(sn_transport_t *t, const uint8_t *buf, size_t len)
{
    if (t->jbytes + len > JOIN_BUFFER_MAX)
        return;  /* becomes a gap after the cut, repaired like any other */
    jbuf_t *j = malloc(sizeof *j + len);
    if (!j)
        return;
    j->next = NULL;
    j->len = len;
    memcpy(j->bytes, buf, len);
    if (t->jtail)
        t->jtail->next = j;
    else
        t->jhead = j;
    t->jtail = j;
    t->jbytes += len;
}

static void join_tick(sn_transport_t *t, uint64_t now);
static void heartbeat(sn_transport_t *t, peer_t *only);
static void gossip_members(sn_transport_t *t, peer_t *only);
static void start_resync(sn_transport_t *t, peer_t *p);

/* `key`: the sender's public key as its handshake proved it (a heartbeat
 * sent point to point on a secured bus), else NULL. */
/* A member `via` holds writes of an origin this node cannot hear (a
 * one-way cut, a link down between those two only): the origin's deltas
 * will not come, nor its repairs, so this node compares sessions with
 * `via`, which has them, rather than wait for the periodic round. Once per
 * new stretch of the origin's writes, and once per RELAY_MS at most. */
static void catch_up_through(sn_transport_t *t, peer_t *via, const sn_vv_t *their, uint64_t now)
{
    if (t->join_state != J_IDLE || via->resyncing || now - t->relay_ms < RELAY_MS ||
        member_state(t, via, now) != SN_MEMBER_ALIVE)
        return;
    for (uint32_t i = 0; i < their->n; i++) {
        peer_t *o = peer_by_id(t, their->dots[i].node);
        if (!o || o == via || o->left || member_state(t, o, now) != SN_MEMBER_DEAD)
            continue;
        uint64_t have = o->applied_dots > o->relayed_dots ? o->applied_dots : o->relayed_dots;
        if (their->dots[i].counter <= have)
            continue;
        o->relayed_dots = their->dots[i].counter;
        t->relay_ms = now;
        tlog(t, SN_LOG_INFO, "%s holds writes of %s, which this node cannot hear: comparing "
             "sessions with it", via->address, o->address);
        start_resync(t, via);
        return;
    }
}

static void on_heartbeat(sn_transport_t *t, const sn_msg_t *m, const char *key, bool direct)
{
    char address[ADDR_MAX];
    uint32_t n = m->u.heartbeat.endpoint_len < ADDR_MAX - 1 ? m->u.heartbeat.endpoint_len
                                                            : ADDR_MAX - 1;
    memcpy(address, m->u.heartbeat.endpoint, n);
    address[n] = 0;
    if (m->sender == t->opt.node_id)
        return;
    peer_t *p = peer_by_id(t, m->sender);
    if (!p)
        p = peer_add(t, address, key);
    if (!p)
        return;
    if (p->closed)
        peer_reopen(t, p);
    uint64_t now = mono_ms();
    /* back from the dead and talking to us: our side of the connections
     * may be waiting out libzmq's back-off */
    if (direct && p->last_heard_ms && member_state(t, p, now) == SN_MEMBER_DEAD)
        peer_redial(t, p);
    pthread_mutex_lock(&t->mlock);
    bool first = !p->last_heard_ms || p->node_id != m->sender;
    if (p->node_id && p->node_id != m->sender) {
        /* same address, new process: a new origin */
        tlog(t, SN_LOG_INFO, "peer %s restarted as %016llx", p->address,
             (unsigned long long) m->sender);
        sn_tracker_forget(t->tracker, p->node_id);
        p->ann_pseq = p->ann_dots = p->applied_dots = 0;
    }
    if (p->left && (p->node_id != m->sender || p->incarnation != m->u.heartbeat.incarnation)) {
        p->left = false;
        tlog(t, SN_LOG_INFO, "peer %s is back (%016llx)", p->address,
             (unsigned long long) m->sender);
    }
    if (!p->last_heard_ms)
        tlog(t, SN_LOG_INFO, "peer %s is alive (%016llx)", p->address,
             (unsigned long long) m->sender);
    p->sessions = m->u.heartbeat.sessions;
    p->node_id = m->sender;
    p->incarnation = m->u.heartbeat.incarnation;
    p->last_heard_ms = mono_ms();
    p->last_pseq = m->u.heartbeat.last_pseq;
    p->ann_pseq = m->u.heartbeat.last_pseq;
    p->ann_dots = m->u.heartbeat.dots_done;
    const sn_vv_t *ta = &m->u.heartbeat.applied;
    sn_dot_t *copy = ta->n ? malloc(ta->n * sizeof *copy) : NULL;
    if (copy || !ta->n) {
        if (ta->n)
            memcpy(copy, ta->dots, ta->n * sizeof *copy);
        free(p->their_applied.dots);
        p->their_applied = (sn_vv_t){ta->n, copy};
    }
    uint64_t have = sn_tracker_contiguous(t->tracker, m->sender);
    p->lag = p->last_pseq > have ? p->last_pseq - have : 0;
    uint32_t nl = m->u.heartbeat.name_len < sizeof p->name - 1 ? m->u.heartbeat.name_len
                                                              : (uint32_t) sizeof p->name - 1;
    memcpy(p->name, m->u.heartbeat.name, nl);
    p->name[nl] = 0;
    pthread_mutex_unlock(&t->mlock);
    catch_up_through(t, p, &p->their_applied, now);
    /* A node met for the first time hears from us at once rather than at
     * our next heartbeat: a joiner can then ask for its snapshot straight
     * away. Its answer to us is no longer a first, so this stops there. */
    if (first) {
        heartbeat(t, p);
        gossip_members(t, p);
    }
    if (t->join_state != J_STREAMING)
        sn_tracker_announce(t->tracker, m->sender, m->u.heartbeat.last_pseq, mono_ms());
    if (t->join_state == J_WAITING)
        join_tick(t, mono_ms());  /* a joiner asks as soon as it hears a peer */
}

static void on_leave(sn_transport_t *t, const sn_msg_t *m)
{
    pthread_mutex_lock(&t->mlock);
    peer_t *p = peer_by_id(t, m->sender);
    bool news = p && !p->left;
    if (p)
        p->left = true;
    pthread_mutex_unlock(&t->mlock);
    if (news) {
        tlog(t, SN_LOG_INFO, "peer %s (%s) left the cluster", p->address, p->name);
        peer_close(t, p);
    }
}

/* A peer's member list: every address not known yet becomes a peer (it
 * is then heard from, or declared dead, like any other), so a node that
 * joined through one seed meets every member within a heartbeat or two.
 * Only additions travel: each node judges liveness and leaving itself. */
static void on_members(sn_transport_t *t, const sn_msg_t *m)
{
    if (t->leaving)
        return;
    for (uint32_t i = 0; i < m->u.members.n; i++) {
        const sn_msg_blob_t *a = &m->u.members.addrs[i];
        char address[ADDR_MAX];
        if (a->len >= sizeof address)
            continue;
        memcpy(address, a->bytes, a->len);
        address[a->len] = 0;
        if (strcmp(address, t->cluster) == 0)
            continue;
        peer_t *known = peer_by_address(t, address);
        if (known) {
            /* listed alive by a member: back after it left */
            if (known->closed)
                peer_reopen(t, known);
            continue;
        }
        /* the list comes from a member, over an authenticated connection
         * on a secured bus: the keys in it are the members' */
        char key[SN_CURVE_KEY_TXT];
        const sn_msg_blob_t *k = &m->u.members.keys[i];
        if (k->len == SN_CURVE_KEY_BIN)
            sn_curve_key_encode(k->bytes, key);
        tlog(t, SN_LOG_INFO, "learned of member %s from %016llx", address,
             (unsigned long long) m->sender);
        count(&t->st.members_learned, 1);
        peer_add(t, address, k->len == SN_CURVE_KEY_BIN ? key : NULL);
    }
}

static void on_delta_frame(sn_transport_t *t, const uint8_t *buf, size_t len, bool from_sub)
{
    sn_msg_decoded_t dm;
    if (sn_msg_decode(buf, len, &dm)) {
        count(&t->st.bad_frames, 1);
        return;
    }
    const sn_msg_t *m = &dm.msg;
    if (m->type == SN_MSG_HEARTBEAT) {
        on_heartbeat(t, m, NULL, false);
    } else if (m->type == SN_MSG_LEAVE) {
        on_leave(t, m);
    } else if (m->type == SN_MSG_MEMBERS) {
        on_members(t, m);
    } else if ((m->type == SN_MSG_DELTA || m->type == SN_MSG_DELTAS) &&
               m->sender != t->opt.node_id) {
        uint32_t n = m->type == SN_MSG_DELTAS ? m->u.deltas.n : 1;
        if (from_sub && t->opt.drop_rate > 0 &&
            (double) (rnd(t) >> 11) / 9007199254740992.0 < t->opt.drop_rate) {
            count(&t->st.deltas_dropped, n);
        } else if (t->join_state != J_IDLE) {
            buffer_for_join(t, buf, len);
        } else if (m->type == SN_MSG_DELTA) {
            apply_delta(t, m->sender, m->u.delta.pseq, m->u.delta.flags, m->u.delta.body,
                        m->u.delta.body_len);
        } else {
            for (uint32_t i = 0; i < n; i++) {
                const sn_msg_entry_t *e = &m->u.deltas.entries[i];
                apply_delta(t, m->sender, e->pseq, e->flags, e->body, e->body_len);
            }
        }
    } else {
        count(&t->st.bad_frames, 1);
    }
    sn_msg_release(&dm);
}

/* ------------------------------------------------------------ anti-entropy */

static void resync_step(sn_transport_t *t, peer_t *p)
{
    p->resync_ms = mono_ms();
    sn_msg_t m = {.type = SN_MSG_DIGEST_REQ};
    m.u.digest_req.cursor = p->resync_cursor;
    m.u.digest_req.max = DIGEST_BATCH;
    send_msg(t, p->dealer, NULL, &m);
}

/* A round that is already running may have passed the sessions a new
 * reason to compare concerns, so it is followed by a whole new round. */
static void start_resync(sn_transport_t *t, peer_t *p)
{
    if (!p)
        return;
    if (p->resyncing) {
        p->resync_again = true;
        return;
    }
    p->resyncing = true;
    p->resync_cursor = 0;
    count(&t->st.resyncs, 1);
    tlog(t, SN_LOG_INFO, "anti-entropy with %s", p->address);
    resync_step(t, p);
}

/* A page's request or its answer is lost when libzmq drops a connection
 * and makes it anew (a peer restarting, a link losing packets), and the
 * round would wait for it for good, holding off every later round with
 * that peer (start_resync, catch_up_through). So a round silent for
 * RESYNC_SILENT_MS asks for its page again, and a round with a peer that
 * died ends, to be run with another. */
static void resync_check(sn_transport_t *t, uint64_t now)
{
    for (size_t i = 0; i < t->npeers; i++) {
        peer_t *p = &t->peers[i];
        if (!p->resyncing || now - p->resync_ms < RESYNC_SILENT_MS)
            continue;
        if (p->left || member_state(t, p, now) == SN_MEMBER_DEAD) {
            p->resyncing = false;
            p->resync_again = false;
            tlog(t, SN_LOG_INFO, "anti-entropy with %s ended: the peer is gone", p->address);
            t->resync_wanted = true;
            continue;
        }
        count(&t->st.resync_retries, 1);
        tlog(t, SN_LOG_INFO, "anti-entropy with %s: no answer for %llu ms, asking again",
             p->address, (unsigned long long) (now - p->resync_ms));
        resync_step(t, p);
    }
}

typedef struct {
    sn_msg_blob_t *items;
    uint32_t n, cap;
    size_t bytes;
} blobs_t;

static void blobs_free(blobs_t *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        free((void *) b->items[i].bytes);
        free(b->items[i].vv.dots);
    }
    free(b->items);
    memset(b, 0, sizeof *b);
}

static void blobs_add(blobs_t *b, uint8_t *bytes, size_t len, uint64_t digest)
{
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? 2 * b->cap : 64;
        sn_msg_blob_t *items = realloc(b->items, cap * sizeof *items);
        if (!items) {
            free(bytes);
            return;
        }
        b->items = items;
        b->cap = cap;
    }
    b->items[b->n++] = (sn_msg_blob_t){.bytes = bytes, .len = (uint32_t) len, .digest = digest};
    b->bytes += len;
}

static void collect_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    blobs_t *b = arg;
    uint8_t *buf;
    size_t len;
    if (sn_wire_encode_state(id, id_len, st, &buf, &len) == 0)
        blobs_add(b, buf, len, 0);
}

/* Collects ids only: the scan holds the shard's lock, and the digests are
 * taken afterwards, one lookup each. */
static void collect_id(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    (void) st;
    uint8_t *copy = malloc(id_len);
    if (!copy)
        return;
    memcpy(copy, id, id_len);
    blobs_add(arg, copy, id_len, 0);
}

static void on_digest_req(sn_transport_t *t, zframe_t *identity, const sn_msg_t *m)
{
    blobs_t b = {0};
    uint64_t cursor = m->u.digest_req.cursor;
    uint32_t max = m->u.digest_req.max ? m->u.digest_req.max : DIGEST_BATCH;
    if (max > DIGEST_BATCH)
        max = DIGEST_BATCH;
    int more = sn_store_scan(t->store, &cursor, max, collect_id, &b);
    for (uint32_t i = 0; i < b.n; i++)
        sn_store_digest_vv(t->store, b.items[i].bytes, b.items[i].len, &b.items[i].digest,
                           &b.items[i].vv);
    sn_msg_t r = {.type = SN_MSG_DIGEST_REP};
    r.u.digest_rep.next_cursor = cursor;
    r.u.digest_rep.done = more != 1;
    r.u.digest_rep.n = b.n;
    r.u.digest_rep.entries = b.items;
    send_msg(t, t->router, identity, &r);
    blobs_free(&b);
}

enum { AE_SAME, AE_FETCH, AE_WAIT };

/* Should this node hold dot `d` by now? It should once the dot's origin has
 * announced it and every publish up to that announcement has arrived; a
 * dot of an origin it does not know, or of its own, it should hold at once. */
static bool dot_due(sn_transport_t *t, const sn_dot_t *d)
{
    peer_t *o = d->node == t->opt.node_id ? NULL : peer_by_id(t, d->node);
    return !o || d->counter <= o->applied_dots ||
           (d->counter <= o->ann_dots &&
            sn_tracker_contiguous(t->tracker, o->node_id) >= o->ann_pseq);
}

/* Compares a peer's digest and vector of a session with ours: the same,
 * fetch it (the peer holds updates we should hold, or equal vectors hide
 * different states), or wait (what we lack is still on its way). Where we
 * hold everything the peer does, the peer is the one behind: nothing to
 * fetch, and its own anti-entropy heals it if its deltas do not. */
static int ae_compare(sn_transport_t *t, const uint8_t *id, uint32_t id_len, uint64_t digest,
                      const sn_vv_t *vv)
{
    uint64_t mine;
    sn_vv_t my = {0};
    int rc = sn_store_digest_vv(t->store, id, id_len, &mine, &my);
    int verdict;
    if (rc == 0 && mine == digest)
        verdict = AE_SAME;
    else if ((rc != 0 && rc != SN_ENOTFOUND) || !sn_vv_valid(vv))
        verdict = AE_FETCH;
    else if (rc == 0 && sn_vv_leq(vv, &my))
        verdict = sn_vv_leq(&my, vv) ? AE_FETCH : AE_SAME;
    else {
        verdict = AE_WAIT;
        for (uint32_t i = 0; i < vv->n && verdict == AE_WAIT; i++)
            if (sn_vv_get(&my, vv->dots[i].node) < vv->dots[i].counter &&
                dot_due(t, &vv->dots[i]))
                verdict = AE_FETCH;
    }
    free(my.dots);
    return verdict;
}

static bool settle_add(sn_transport_t *t, uint64_t peer, const sn_msg_blob_t *e)
{
    if (t->nsettle == SETTLE_MAX)
        return false;
    if (t->nsettle == t->cap_settle) {
        size_t cap = t->cap_settle ? 2 * t->cap_settle : 256;
        settle_t *a = realloc(t->settle, cap * sizeof *a);
        if (!a)
            return false;
        t->settle = a;
        t->cap_settle = cap;
    }
    settle_t s = {.peer = peer, .at_ms = mono_ms(), .digest = e->digest, .id_len = e->len,
                  .vv.n = e->vv.n};
    s.id = malloc(e->len);
    s.vv.dots = malloc(e->vv.n ? e->vv.n * sizeof *s.vv.dots : 1);
    if (!s.id || !s.vv.dots) {
        free(s.id);
        free(s.vv.dots);
        return false;
    }
    memcpy(s.id, e->bytes, e->len);
    if (e->vv.n)
        memcpy(s.vv.dots, e->vv.dots, e->vv.n * sizeof *s.vv.dots);
    t->settle[t->nsettle++] = s;
    return true;
}

static bool all_due(sn_transport_t *t, const sn_vv_t *vv)
{
    for (uint32_t i = 0; i < vv->n; i++)
        if (!dot_due(t, &vv->dots[i]))
            return false;
    return true;
}

/* Compares each waiting difference again once every dot of the peer's
 * vector is due, or it has waited SETTLE_MS: caught up, it is done; still
 * behind, it is fetched from the peer that had it. Until then it costs a
 * look at the peers' announcements, not a store lookup, so a long list
 * stays cheap. */
static void settle_check(sn_transport_t *t, uint64_t now)
{
    size_t kept = 0;
    for (size_t i = 0; i < t->nsettle; i++) {
        settle_t *s = &t->settle[i];
        if (now - s->at_ms < SETTLE_MS && !all_due(t, &s->vv)) {
            t->settle[kept++] = *s;
            continue;
        }
        if (ae_compare(t, s->id, s->id_len, s->digest, &s->vv) == AE_SAME)
            count(&t->st.resync_settled, 1);
        else
            fetch_session(t, s->peer, s->id, s->id_len);
        free(s->id);
        free(s->vv.dots);
    }
    t->nsettle = kept;
}

static void on_digest_rep(sn_transport_t *t, peer_t *p, const sn_msg_t *m)
{
    /* (a page can run past the batch by the rest of a hash bucket) */
    sn_msg_blob_t *want = malloc((m->u.digest_rep.n ? m->u.digest_rep.n : 1) * sizeof *want);
    if (!want) {
        p->resyncing = false;  /* a later round tries again */
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->u.digest_rep.n; i++) {
        const sn_msg_blob_t *e = &m->u.digest_rep.entries[i];
        int v = ae_compare(t, e->bytes, e->len, e->digest, &e->vv);
        if (v == AE_FETCH || (v == AE_WAIT && !settle_add(t, p->node_id, e)))
            want[n++] = *e;
    }
    if (n) {
        t->last_fetch_ms = mono_ms();
        sn_msg_t r = {.type = SN_MSG_FETCH_REQ};
        r.u.fetch_req.n = n;
        r.u.fetch_req.ids = want;
        send_msg(t, p->dealer, NULL, &r);
        count(&t->st.full_fetches, n);
    }
    free(want);
    /* A page asked for again (resync_check) may be answered twice: the
     * second answer's differences are fetched like the first's, but the
     * round goes on once. A scan always moves its cursor, so only such a
     * repeat names as the next page the one already asked for. */
    if (!p->resyncing || (!m->u.digest_rep.done && m->u.digest_rep.next_cursor == p->resync_cursor))
        return;
    if (m->u.digest_rep.done && p->resync_again) {
        p->resync_again = false;
        p->resync_cursor = 0;
        count(&t->st.resyncs, 1);
        resync_step(t, p);
    } else if (m->u.digest_rep.done) {
        p->resyncing = false;
        tlog(t, SN_LOG_INFO, "anti-entropy with %s done", p->address);
    } else {
        p->resync_cursor = m->u.digest_rep.next_cursor;
        resync_step(t, p);
    }
}

static void on_fetch_req(sn_transport_t *t, zframe_t *identity, const sn_msg_t *m)
{
    blobs_t b = {0};
    for (uint32_t i = 0; i < m->u.fetch_req.n; i++) {
        sn_store_export(t->store, m->u.fetch_req.ids[i].bytes, m->u.fetch_req.ids[i].len,
                        collect_state, &b);
        if (b.bytes > CHUNK_BYTES || i + 1 == m->u.fetch_req.n) {
            sn_msg_t r = {.type = SN_MSG_FETCH_REP};
            r.u.fetch_rep.n = b.n;
            r.u.fetch_rep.states = b.items;
            if (b.n)
                send_msg(t, t->router, identity, &r);
            blobs_free(&b);
        }
    }
}

/* What one merged state's result means here; 1 if it merged. */
static uint32_t merged_one(sn_transport_t *t, const sn_wire_state_t *ws, int rc)
{
    if (rc == SN_APPLY_APPLIED)
        changed(t, ws->id, ws->id_len);
    if (rc >= 0)
        return 1;
    count_refusal(t, rc);
    tlog(t, SN_LOG_WARN, "state of session %.*s refused: %s", (int) ws->id_len,
         (const char *) ws->id, sn_strerror(rc));
    /* a writer waiting for this session here learns it will not be */
    for (size_t k = 0; k < t->nfetch_acks;) {
        struct fetch_ack *fa = &t->fetch_acks[k];
        if (fa->id_len == ws->id_len && memcmp(fa->id, ws->id, ws->id_len) == 0) {
            send_ack(t, fa->origin, fa->pseq, rc);
            t->fetch_acks[k] = t->fetch_acks[--t->nfetch_acks];
        } else {
            k++;
        }
    }
    return 0;
}

/* Merges a reply's or a chunk's states, a batch at a time so that the
 * store can fetch each one's bucket ahead of its merge. The states are
 * read in place: `states` outlives the call. */
#define MERGE_BATCH 64
static uint32_t merge_states(sn_transport_t *t, const sn_msg_blob_t *states, uint32_t n)
{
    uint32_t merged = 0;
    for (uint32_t base = 0; base < n; base += MERGE_BATCH) {
        sn_wire_state_t ws[MERGE_BATCH];
        sn_store_item_t items[MERGE_BATCH];
        int rcs[MERGE_BATCH];
        uint32_t k = 0;
        for (uint32_t i = base; i < n && i < base + MERGE_BATCH; i++) {
            if (sn_wire_view_state(states[i].bytes, states[i].len, &ws[k])) {
                count(&t->st.bad_frames, 1);
                continue;
            }
            items[k] = (sn_store_item_t){ws[k].id, ws[k].id_len, &ws[k].state};
            k++;
        }
        sn_store_merge_many(t->store, items, k, rcs);
        for (uint32_t j = 0; j < k; j++) {
            merged += merged_one(t, &ws[j], rcs[j]);
            sn_wire_state_release(&ws[j]);
        }
    }
    return merged;
}

static void on_fetch_rep(sn_transport_t *t, const sn_msg_t *m)
{
    merge_states(t, m->u.fetch_rep.states, m->u.fetch_rep.n);
    for (size_t i = 0; i < t->nfetch_acks;) {
        struct fetch_ack *fa = &t->fetch_acks[i];
        bool here = holds_dot(t, fa->id, fa->id_len, fa->dot);
        if (here || mono_ms() - fa->at_ms > 10000) {
            /* past 10 s the writer has given up waiting anyway */
            if (here)
                send_ack(t, fa->origin, fa->pseq, 0);
            t->fetch_acks[i] = t->fetch_acks[--t->nfetch_acks];
        } else {
            i++;
        }
    }
}

/* ------------------------------------------------------------ repair */

static void on_repair_req(sn_transport_t *t, zframe_t *identity, const sn_msg_t *m)
{
    if (m->u.repair_req.origin != t->opt.node_id)
        return;  /* only the origin keeps a backlog of its deltas */
    uint64_t from = m->u.repair_req.from_pseq, to = m->u.repair_req.to_pseq;
    uint64_t first = sn_backlog_first(t->backlog), last = sn_backlog_last(t->backlog);
    sn_msg_t r = {.type = SN_MSG_REPAIR_REP};
    r.u.repair_rep.origin = t->opt.node_id;
    if (!first || from < first || to > last || to < from) {
        r.u.repair_rep.status = SN_MSG_REPAIR_TOO_OLD;
        send_msg(t, t->router, identity, &r);
        return;
    }
    if (to - from >= REPAIR_MAX)
        to = from + REPAIR_MAX - 1;
    size_t n = (size_t) (to - from + 1);
    sn_msg_entry_t *e = calloc(n, sizeof *e);
    if (!e)
        return;
    size_t k = 0, bytes = 0;
    bool hole = false;
    for (uint64_t s = from; s <= to && bytes < CHUNK_BYTES; s++) {
        const uint8_t *frame;
        size_t len;
        uint32_t flags;
        if (sn_backlog_get(t->backlog, s, &frame, &len, &flags))
            break;
        if (len == 0) {
            /* a hole (publish_hole): what it stood for was never kept, so
             * starting there the receiver must compare sessions, as for a
             * range the backlog let go; the entries before it go first */
            hole = k == 0;
            break;
        }
        /* the backlog holds whole DELTA frames; the reply carries bodies */
        sn_msg_decoded_t dm;
        if (sn_msg_decode(frame, len, &dm))
            break;
        uint8_t *body = malloc(dm.msg.u.delta.body_len);
        if (body)
            memcpy(body, dm.msg.u.delta.body, dm.msg.u.delta.body_len);
        e[k] = (sn_msg_entry_t){.pseq = s, .flags = flags, .body = body,
                                .body_len = body ? dm.msg.u.delta.body_len : 0};
        sn_msg_release(&dm);
        if (!body)
            break;
        bytes += len;
        k++;
    }
    r.u.repair_rep.status = hole ? SN_MSG_REPAIR_TOO_OLD : SN_MSG_REPAIR_OK;
    r.u.repair_rep.n = (uint32_t) k;
    r.u.repair_rep.entries = e;
    send_msg(t, t->router, identity, &r);
    for (size_t i = 0; i < k; i++)
        free((void *) e[i].body);
    free(e);
}

static void on_repair_rep(sn_transport_t *t, peer_t *p, const sn_msg_t *m)
{
    uint64_t origin = m->u.repair_rep.origin;
    if (m->u.repair_rep.status == SN_MSG_REPAIR_TOO_OLD) {
        /* past the backlog: take whatever we lack from the origin itself
         * and count its missing range as accounted for */
        uint64_t upto = p->last_pseq;
        uint64_t next = sn_tracker_contiguous(t->tracker, origin) + 1;
        if (upto >= next)
            sn_tracker_skip(t->tracker, origin, next, upto);
        start_resync(t, p);
        return;
    }
    for (uint32_t i = 0; i < m->u.repair_rep.n; i++) {
        const sn_msg_entry_t *e = &m->u.repair_rep.entries[i];
        count(&t->st.repaired, 1);
        apply_delta(t, origin, e->pseq, e->flags, e->body, e->body_len);
    }
    if (t->nparked)
        retry_parked(t, mono_ms());
}

static void request_repairs(sn_transport_t *t, uint64_t now)
{
    sn_gap_t gaps[64];
    uint64_t retry = t->opt.repair_grace_ms * 10u;
    if (retry < 200)
        retry = 200;
    size_t n = sn_tracker_gaps(t->tracker, now, t->opt.repair_grace_ms, retry, gaps, 64);
    for (size_t i = 0; i < n; i++) {
        count(&t->st.gaps_detected, 1);
        peer_t *p = peer_by_id(t, gaps[i].origin);
        if (!p || member_state(t, p, now) == SN_MEMBER_DEAD) {
            /* the origin is gone: its writes live on in the others. The gap
             * is given up only once someone is there to compare with. */
            peer_t *other = any_live_peer(t, now);
            if (other) {
                sn_tracker_skip(t->tracker, gaps[i].origin, gaps[i].from, gaps[i].to);
                start_resync(t, other);
            }
            continue;
        }
        sn_msg_t m = {.type = SN_MSG_REPAIR_REQ};
        m.u.repair_req.origin = gaps[i].origin;
        m.u.repair_req.from_pseq = gaps[i].from;
        m.u.repair_req.to_pseq = gaps[i].to - gaps[i].from >= REPAIR_MAX
                                     ? gaps[i].from + REPAIR_MAX - 1 : gaps[i].to;
        send_msg(t, p->dealer, NULL, &m);
        count(&t->st.repairs_requested, 1);
    }
}

/* ------------------------------------------------------------ snapshots */

static void cut_add(sn_vv_t *cut, uint64_t node, uint64_t pseq)
{
    if (!node || !pseq)
        return;
    uint32_t i = 0;
    while (i < cut->n && cut->dots[i].node < node)
        i++;
    memmove(&cut->dots[i + 1], &cut->dots[i], (cut->n - i) * sizeof(sn_dot_t));
    cut->dots[i] = (sn_dot_t){node, pseq};
    cut->n++;
}

static void on_snap_req(sn_transport_t *t, zframe_t *identity, const sn_msg_t *m)
{
    snap_serve_t *s = realloc(t->serving, (t->nserving + 1) * sizeof *s);
    if (!s)
        return;
    t->serving = s;
    s = &t->serving[t->nserving++];
    memset(s, 0, sizeof *s);
    s->identity = zframe_dup(identity);
    s->snap_id = m->u.snap_req.snap_id;
    s->credit = m->u.snap_req.credit;
    /* the cut: every origin's fully applied prefix, taken before the scan */
    s->cut.dots = calloc(t->npeers + 1, sizeof(sn_dot_t));
    if (s->cut.dots) {
        cut_add(&s->cut, t->opt.node_id, t->pseq);
        for (size_t i = 0; i < t->npeers; i++)
            if (t->peers[i].node_id)
                cut_add(&s->cut, t->peers[i].node_id,
                        sn_tracker_contiguous(t->tracker, t->peers[i].node_id));
    }
    sn_store_stats_t ss;
    sn_store_stats(t->store, &ss);
    s->sessions = ss.sessions + ss.tombstones;
    tlog(t, SN_LOG_INFO, "serving snapshot %016llx", (unsigned long long) s->snap_id);
}

static void on_snap_credit(sn_transport_t *t, const sn_msg_t *m)
{
    for (size_t i = 0; i < t->nserving; i++)
        if (t->serving[i].snap_id == m->u.snap_req.snap_id)
            t->serving[i].credit += m->u.snap_req.credit;
}

/* One chunk for each snapshot that has credit: bounded work per turn. */
/* Appends each scanned session to the chunk being built. The items' bytes
 * are set once the chunk is complete, since appending may move the buffer;
 * until then `digest` holds each state's offset. */
static void collect_chunk_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                                void *arg)
{
    sn_transport_t *t = arg;
    if (t->snap_n == t->cap_snap_items) {
        uint32_t cap = t->cap_snap_items ? 2 * t->cap_snap_items : 64;
        sn_msg_blob_t *items = realloc(t->snap_items, cap * sizeof *items);
        if (!items)
            return;  /* the joiner's digests will find it missing */
        t->snap_items = items;
        t->cap_snap_items = cap;
    }
    size_t start = t->snap_states.size;
    if (sn_wire_append_state(&t->snap_states, id, id_len, st))
        return;
    size_t len = t->snap_states.size - start;
    t->snap_items[t->snap_n++] = (sn_msg_blob_t){.len = (uint32_t) len, .digest = start};
    t->snap_bytes += len;
}

static void serve_snapshots(sn_transport_t *t)
{
    for (size_t i = 0; i < t->nserving;) {
        snap_serve_t *s = &t->serving[i];
        if (s->credit && !s->done) {
            msgpack_sbuffer_clear(&t->snap_states);
            t->snap_n = 0;
            t->snap_bytes = 0;
            int more = 1;
            while (more == 1 && t->snap_n < CHUNK_SESSIONS && t->snap_bytes < CHUNK_BYTES)
                more = sn_store_scan(t->store, &s->cursor, 64, collect_chunk_state, t);
            for (uint32_t k = 0; k < t->snap_n; k++) {
                t->snap_items[k].bytes = (const uint8_t *) t->snap_states.data +
                                         t->snap_items[k].digest;
                t->snap_items[k].digest = 0;
            }
            sn_msg_t m = {.type = SN_MSG_SNAP_CHUNK};
            m.u.snap_chunk.snap_id = s->snap_id;
            m.u.snap_chunk.chunk = s->chunk++;
            m.u.snap_chunk.last = more != 1;
            if (m.u.snap_chunk.last)
                m.u.snap_chunk.cut = s->cut;
            m.u.snap_chunk.n = t->snap_n;
            m.u.snap_chunk.states = t->snap_items;
            m.u.snap_chunk.sessions = s->sessions;
            send_msg_zc(t, t->router, s->identity, &m);
            s->credit--;
            s->done = m.u.snap_chunk.last;
        }
        if (s->done) {
            tlog(t, SN_LOG_INFO, "snapshot %016llx sent in %llu chunks",
                 (unsigned long long) s->snap_id, (unsigned long long) s->chunk);
            zframe_destroy(&s->identity);
            free(s->cut.dots);
            t->serving[i] = t->serving[--t->nserving];
        } else {
            i++;
        }
    }
    if (!t->nserving && t->snap_states.alloc) {
        /* nothing to serve: give the chunk buffers back */
        msgpack_sbuffer_destroy(&t->snap_states);
        msgpack_sbuffer_init(&t->snap_states);
        free(t->snap_items);
        t->snap_items = NULL;
        t->cap_snap_items = 0;
    }
}

static void set_ready(sn_transport_t *t)
{
    pthread_mutex_lock(&t->rlock);
    t->ready = true;
    pthread_cond_broadcast(&t->rcond);
    pthread_mutex_unlock(&t->rlock);
}

static void replay_join_buffer(sn_transport_t *t)
{
    jbuf_t *j = t->jhead;
    t->jhead = t->jtail = NULL;
    t->jbytes = 0;
    while (j) {
        jbuf_t *next = j->next;
        on_delta_frame(t, j->bytes, j->len, false);
        free(j);
        j = next;
    }
}

static void on_snap_chunk(sn_transport_t *t, peer_t *p, const sn_msg_t *m)
{
    if (t->join_state != J_STREAMING || m->u.snap_chunk.snap_id != t->snap_id)
        return;
    /* sized once, before the first merge: a table doubling and rehashing
     * its way up to the donor's count cost the joiner a fifth of its time */
    if (m->u.snap_chunk.chunk == 0 && m->u.snap_chunk.sessions)
        sn_store_reserve(t->store, m->u.snap_chunk.sessions < SNAP_SIZING_MAX
                                       ? (size_t) m->u.snap_chunk.sessions : SNAP_SIZING_MAX);
    uint32_t merged = merge_states(t, m->u.snap_chunk.states, m->u.snap_chunk.n);
    count(&t->st.snapshot_sessions, merged);
    if (!m->u.snap_chunk.last) {
        sn_msg_t c = {.type = SN_MSG_SNAP_CREDIT};
        c.u.snap_req.snap_id = t->snap_id;
        c.u.snap_req.credit = 1;
        send_msg(t, p->dealer, NULL, &c);
        return;
    }
    const sn_vv_t *cut = &m->u.snap_chunk.cut;
    for (uint32_t i = 0; i < cut->n; i++)
        if (cut->dots[i].node != t->opt.node_id)
            sn_tracker_reset(t->tracker, cut->dots[i].node, cut->dots[i].counter + 1);
    t->join_state = J_IDLE;
    replay_join_buffer(t);
    tlog(t, SN_LOG_INFO, "joined from %s", p->address);
    pthread_mutex_lock(&t->rlock);
    t->had_donor = true;
    pthread_mutex_unlock(&t->rlock);
    set_ready(t);
}

static void join_tick(sn_transport_t *t, uint64_t now)
{
    if (t->join_state != J_WAITING)
        return;
    peer_t *p = any_live_peer(t, now);
    if (p) {
        t->snap_id = rnd(t) | 1;
        t->join_state = J_STREAMING;
        sn_msg_t m = {.type = SN_MSG_SNAP_REQ};
        m.u.snap_req.snap_id = t->snap_id;
        m.u.snap_req.credit = SNAP_CREDIT;
        send_msg(t, p->dealer, NULL, &m);
        tlog(t, SN_LOG_INFO, "joining from %s", p->address);
        return;
    }
    if (now - t->join_started_ms >= t->opt.join_timeout_ms) {
        tlog(t, SN_LOG_WARN, "no peer answered within %u ms: starting alone",
             t->opt.join_timeout_ms);
        t->join_state = J_IDLE;
        replay_join_buffer(t);
        set_ready(t);
    }
}

/* ------------------------------------------------------------ the loop */

/* What this node holds of every origin, in store dots: its own published
 * prefix, and for each peer the dots covered by an announcement whose
 * publish sequences have all arrived. While fetches, parked deltas or
 * anti-entropy are in flight, received sequences may not be applied yet,
 * so it stands still. */
static void applied_vector(sn_transport_t *t, uint64_t now, sn_vv_t *out)
{
    /* (sessions anti-entropy set aside to compare later are not here yet) */
    bool settling = now - t->last_fetch_ms < 2000 || t->nparked > 0 || t->nsettle > 0;
    for (size_t i = 0; i < t->npeers; i++)
        settling |= t->peers[i].resyncing;
    out->n = 0;
    cut_add(out, t->opt.node_id, t->dots_done);
    for (size_t i = 0; i < t->npeers; i++) {
        peer_t *p = &t->peers[i];
        if (!p->node_id)
            continue;
        if (!settling && t->join_state == J_IDLE && p->ann_dots > p->applied_dots &&
            sn_tracker_contiguous(t->tracker, p->node_id) >= p->ann_pseq)
            p->applied_dots = p->ann_dots;
        cut_add(out, p->node_id, p->applied_dots);
    }
}

/* The stable vector: per origin, the least every member holds. A member
 * that has not reported an origin holds none of it. A silent member still
 * counts: it may come back with what it held, and a tombstone collected
 * without it could let its stale updates resurrect a session. Collection
 * waits for it until it is removed from the cluster (a node that restarts
 * comes back under a new id and replaces its old entry). A member that
 * left does not count: it stopped replicating on purpose, and comes back,
 * if ever, as a new process that copies the sessions afresh. */
static void stable_vector(sn_transport_t *t, const sn_vv_t *mine, sn_vv_t *out)
{
    out->n = 0;
    for (uint32_t k = 0; k < mine->n; k++) {
        uint64_t least = mine->dots[k].counter;
        for (size_t i = 0; i < t->npeers && least; i++) {
            const peer_t *p = &t->peers[i];
            if (!p->node_id || p->left)
                continue;
            least = sn_vv_get(&p->their_applied, mine->dots[k].node) < least
                        ? sn_vv_get(&p->their_applied, mine->dots[k].node) : least;
        }
        if (least)
            out->dots[out->n++] = (sn_dot_t){mine->dots[k].node, least};
    }
}

static void gc_tick(sn_transport_t *t, uint64_t now, const sn_vv_t *mine)
{
    if (t->gc_shard < sn_store_shards(t->store) || now < t->next_gc_ms)
        return;
    t->next_gc_ms = now + 10u * t->opt.heartbeat_ms;
    sn_dot_t dots[PEERS_MAX + 1];
    sn_vv_t stable = {0, dots};
    stable_vector(t, mine, &stable);
    if (!stable.n || (stable.n == t->gc_stable.n &&
                      !memcmp(stable.dots, t->gc_stable.dots, stable.n * sizeof(sn_dot_t))))
        return;
    sn_dot_t *copy = malloc(stable.n * sizeof *copy);
    if (!copy)
        return;
    memcpy(copy, stable.dots, stable.n * sizeof *copy);
    free(t->gc_stable.dots);
    t->gc_stable = (sn_vv_t){stable.n, copy};
    t->gc_shard = 0;  /* a pass starts: one shard per loop turn */
}

/* Sends our heartbeat on PUB and to every peer, or to `only`. */
static void heartbeat(sn_transport_t *t, peer_t *only)
{
    uint64_t now = mono_ms();
    sn_dot_t dots[PEERS_MAX + 1];
    sn_vv_t applied = {0, dots};
    applied_vector(t, now, &applied);
    if (!only)
        gc_tick(t, now, &applied);
    sn_msg_t m = {.type = SN_MSG_HEARTBEAT};
    m.u.heartbeat.incarnation = t->incarnation;
    m.u.heartbeat.last_pseq = t->pseq;
    m.u.heartbeat.dots_done = t->dots_done;
    m.u.heartbeat.applied = applied;
    m.u.heartbeat.endpoint = (const uint8_t *) t->cluster;
    m.u.heartbeat.endpoint_len = (uint32_t) strlen(t->cluster);
    m.u.heartbeat.name = (const uint8_t *) t->name;
    m.u.heartbeat.name_len = (uint32_t) strlen(t->name);
    if (t->leaving)
        return;
    sn_store_stats_t ss;
    sn_store_stats(t->store, &ss);
    m.u.heartbeat.sessions = ss.sessions;
    if (only) {
        send_msg(t, only->dealer, NULL, &m);
        return;
    }
    send_msg(t, t->pub, NULL, &m);
    for (size_t i = 0; i < t->npeers; i++)
        send_msg(t, t->peers[i].dealer, NULL, &m);
}

/* Publishes the addresses of the peers this node hears from (alive ones
 * only: a dead or departed member is not advertised), or sends them to
 * one newly met peer. */
static void gossip_members(sn_transport_t *t, peer_t *only)
{
    if (t->leaving)
        return;
    uint64_t now = mono_ms();
    sn_msg_blob_t addrs[PEERS_MAX], keys[PEERS_MAX];
    unsigned char bins[PEERS_MAX][SN_CURVE_KEY_BIN];
    uint32_t n = 0;
    for (size_t i = 0; i < t->npeers; i++) {
        peer_t *p = &t->peers[i];
        if (p == only || member_state(t, p, now) != SN_MEMBER_ALIVE)
            continue;
        addrs[n] = (sn_msg_blob_t) {(const uint8_t *) p->address,
                                    (uint32_t) strlen(p->address), 0, {0, NULL}};
        bool keyed = p->key[0] && sn_curve_key_decode(p->key, strlen(p->key), bins[n]);
        keys[n] = (sn_msg_blob_t) {bins[n], keyed ? SN_CURVE_KEY_BIN : 0, 0, {0, NULL}};
        n++;
    }
    t->hb_since_members = 0;
    if (n == 0)
        return;
    sn_msg_t m = {.type = SN_MSG_MEMBERS, .sender = t->opt.node_id};
    m.u.members.n = m.u.members.nkeys = n;
    m.u.members.addrs = addrs;
    m.u.members.keys = keys;
    send_msg(t, only ? only->dealer : t->pub, NULL, &m);
}

/* ------------------------------------------------------------ leave, control */

/* Publishes what is queued, then says LEAVE on PUB and to every peer, and
 * stops the heartbeats. The sockets keep unsent frames for a while at
 * close (linger) so that a process exiting right after still says it. */
static void leave_now(sn_transport_t *t)
{
    if (t->leaving)
        return;
    while (publish_local(t) > 0) {
    }
    int linger = (int) (t->leave_linger_ms ? t->leave_linger_ms : 1000);
    sn_msg_t m = {.type = SN_MSG_LEAVE, .sender = t->opt.node_id};
    zsock_set_linger(t->pub, linger);
    send_msg(t, t->pub, NULL, &m);
    for (size_t i = 0; i < t->npeers; i++) {
        zsock_set_linger(t->peers[i].dealer, linger);
        send_msg(t, t->peers[i].dealer, NULL, &m);
    }
    t->leaving = true;
    tlog(t, SN_LOG_INFO, "left the cluster");
}

static const char *state_name(int state)
{
    switch (state) {
    case SN_MEMBER_ALIVE: return "alive";
    case SN_MEMBER_SUSPECT: return "suspect";
    case SN_MEMBER_LEFT: return "left";
    default: return "dead";
    }
}

/* msgpack helpers for control replies: keys are short ASCII strings. */
static void pk_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

static void pk_str(msgpack_packer *pk, const char *key, const void *v, size_t n)
{
    pk_key(pk, key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, v, n);
}

static void pk_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
    pk_key(pk, key);
    msgpack_pack_uint64(pk, v);
}

static void pk_node_id(msgpack_packer *pk, const char *key, uint64_t id)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long) id);
    pk_str(pk, key, hex, 16);
}

static void pk_vv(msgpack_packer *pk, const char *key, const sn_vv_t *vv)
{
    pk_key(pk, key);
    msgpack_pack_map(pk, vv->n);
    for (uint32_t i = 0; i < vv->n; i++) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long) vv->dots[i].node);
        msgpack_pack_str(pk, 16);
        msgpack_pack_str_body(pk, hex, 16);
        msgpack_pack_uint64(pk, vv->dots[i].counter);
    }
}

/* An address as operators type it: tcp://HOST:PORT -> HOST:PORT. */
static const char *plain_address(const char *a)
{
    return strncmp(a, "tcp://", 6) == 0 ? a + 6 : a;
}

static void control_members(sn_transport_t *t, msgpack_packer *pk)
{
    uint64_t now = mono_ms();
    sn_store_stats_t ss;
    sn_store_stats(t->store, &ss);
    msgpack_pack_map(pk, 2);
    pk_key(pk, "node");
    msgpack_pack_map(pk, 5);
    pk_str(pk, "name", t->name, strlen(t->name));
    const char *me = plain_address(t->cluster);
    pk_str(pk, "address", me, strlen(me));
    pk_node_id(pk, "node_id", t->opt.node_id);
    pk_str(pk, "state", t->leaving ? "left" : "self", t->leaving ? 4 : 4);
    pk_u64(pk, "sessions", ss.sessions);
    pk_key(pk, "members");
    pthread_mutex_lock(&t->mlock);
    msgpack_pack_array(pk, t->npeers);
    for (size_t i = 0; i < t->npeers; i++) {
        const peer_t *p = &t->peers[i];
        const char *st = state_name(member_state(t, p, now));
        const char *addr = plain_address(p->address);
        msgpack_pack_map(pk, 7);
        pk_str(pk, "name", p->name, strlen(p->name));
        pk_str(pk, "address", addr, strlen(addr));
        pk_node_id(pk, "node_id", p->node_id);
        pk_str(pk, "state", st, strlen(st));
        pk_key(pk, "last_heard_ms");
        if (p->last_heard_ms)
            msgpack_pack_uint64(pk, now - p->last_heard_ms);
        else
            msgpack_pack_nil(pk);
        pk_u64(pk, "sessions", p->sessions);
        pk_u64(pk, "lag", p->lag);
    }
    pthread_mutex_unlock(&t->mlock);
}

static void control_stats(sn_transport_t *t, msgpack_packer *pk)
{
    sn_node_stats_t s;
    memset(&s, 0, sizeof s);
    sn_transport_stats(t, &s);
    if (t->opt.more_stats)
        t->opt.more_stats(&s, t->opt.more_stats_arg);
    sn_store_stats_t ss;
    sn_store_stats(t->store, &ss);
    size_t npeers;
    pthread_mutex_lock(&t->mlock);
    npeers = t->npeers;
    pthread_mutex_unlock(&t->mlock);
#define STATS_FIELDS(X)                                                                  \
    X(deltas_sent) X(batches_sent) X(sent_by_writers) X(deltas_received) X(deltas_dropped) \
    X(duplicates) X(gaps_detected) X(repairs_requested) X(repaired) X(full_fetches)        \
    X(resyncs) X(resync_settled) X(resync_retries) X(bad_frames) X(apply_refused)          \
    X(queue_overflows) X(acks_timed_out) X(acks_refused) X(bytes_sent) X(bytes_received)   \
    X(snapshot_sessions) X(peers_alive) X(members_learned) X(auth_refused)                 \
    X(peers_without_key)                                                                   \
    X(tier_queue) X(tier_queue_bytes) X(tier_writes) X(tier_touches) X(tier_deletes) X(tier_failures)          \
    X(tier_dropped) X(tier_boot_sessions) X(tier_boot_ms) X(tier_reads) X(tier_read_hits)
#define COUNT_(f) +1
    msgpack_pack_map(pk, 12 STATS_FIELDS(COUNT_));
#undef COUNT_
#define PACK_(f) pk_u64(pk, #f, s.f);
    STATS_FIELDS(PACK_)
#undef PACK_
#undef STATS_FIELDS
    pk_str(pk, "name", t->name, strlen(t->name));
    pk_node_id(pk, "node_id", t->opt.node_id);
    pk_u64(pk, "peers", npeers);
    pk_u64(pk, "sessions", ss.sessions);
    pk_u64(pk, "tombstones", ss.tombstones);
    pk_u64(pk, "bytes", ss.bytes);
    pk_u64(pk, "evictions", ss.evictions);
    pk_u64(pk, "expired", ss.expired);
    pk_u64(pk, "writes", ss.writes);
    pk_u64(pk, "full_errors", ss.full_errors);
    pk_u64(pk, "publish_seq", t->pseq);
    pk_u64(pk, "backlog_bytes", t->opt.backlog_bytes);
}

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void pack_session(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    msgpack_packer *pk = arg;
    uint64_t now = realtime_ms();
    uint64_t deadline = st->last_access_ms + (uint64_t) st->max_inactive * 1000u;
    bool alive = st->has_meta && (st->max_inactive == 0 || deadline > now);
    msgpack_pack_map(pk, 8);
    pk_str(pk, "id", id, id_len);
    pk_key(pk, "alive");
    if (alive)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    pk_u64(pk, "max_inactive", st->max_inactive);
    pk_u64(pk, "last_access_ms", st->last_access_ms);
    pk_key(pk, "expires_in_ms");
    if (alive && st->max_inactive)
        msgpack_pack_uint64(pk, deadline - now);
    else
        msgpack_pack_nil(pk);
    pk_vv(pk, "version_vector", &st->vv);
    pk_vv(pk, "destroy_vector", &st->dv);
    pk_key(pk, "attributes");
    msgpack_pack_array(pk, st->nattrs);
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        msgpack_pack_map(pk, 7);
        pk_str(pk, "name", a->name, a->name_len);
        pk_u64(pk, "flags", a->flags);
        pk_u64(pk, "size", a->value_len);
        pk_key(pk, "value");
        if (a->removed) {
            msgpack_pack_nil(pk);
        } else {
            msgpack_pack_bin(pk, a->value_len);
            msgpack_pack_bin_body(pk, a->value, a->value_len);
        }
        pk_u64(pk, "cas", a->stamp);
        pk_node_id(pk, "origin", a->origin);
        pk_key(pk, "removed");
        if (a->removed)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
}

static void control_reply(sn_transport_t *t, zframe_t *identity, int status, const void *body,
                          size_t len)
{
    sn_msg_t r = {.type = SN_MSG_CONTROL_REP, .sender = t->opt.node_id};
    r.u.control_rep.status = (uint32_t) -status;
    r.u.control_rep.body = body;
    r.u.control_rep.body_len = (uint32_t) len;
    send_msg(t, t->router, identity, &r);
}

static void control_error(sn_transport_t *t, zframe_t *identity, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    control_reply(t, identity, status, msg, strlen(msg));
}

/* sessctl's commands. Answered here, in the actor, because every figure
 * they show (members, sequences, lags) is the actor's own. */
static void on_control(sn_transport_t *t, zframe_t *identity, const sn_msg_t *m)
{
    char cmd[SN_MSG_STR_MAX + 1], arg[SN_MSG_STR_MAX + 1];
    memcpy(cmd, m->u.control.command, m->u.control.command_len);
    cmd[m->u.control.command_len] = 0;
    memcpy(arg, m->u.control.arg, m->u.control.arg_len);
    arg[m->u.control.arg_len] = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool leave = false;
    if (strcmp(cmd, "members") == 0) {
        control_members(t, &pk);
    } else if (strcmp(cmd, "stats") == 0) {
        control_stats(t, &pk);
    } else if (strcmp(cmd, "session") == 0) {
        if (!sn_id_valid(arg, m->u.control.arg_len)) {
            control_error(t, identity, SN_EBADID, "invalid session id");
            goto out;
        }
        if (sn_store_export(t->store, arg, m->u.control.arg_len, pack_session, &pk)) {
            control_error(t, identity, SN_ENOTFOUND, "no session %s on %s", arg, t->name);
            goto out;
        }
    } else if (strcmp(cmd, "join") == 0) {
        /* arg is at most 255 bytes; room for the scheme too. */
        char address[ADDR_MAX + 8], pub[ADDR_MAX], router[ADDR_MAX];
        snprintf(address, sizeof address, "%s%s", strstr(arg, "://") ? "" : "tcp://", arg);
        if (sn_transport_endpoints(address, pub, sizeof pub, router, sizeof router)) {
            control_error(t, identity, SN_EINVAL, "bad address '%s' (want HOST:PORT)", arg);
            goto out;
        }
        peer_t *p = peer_add(t, address, NULL);
        if (!p) {
            control_error(t, identity, SN_EADDR,
                          t->curve ? "cannot add peer %s (is its certificate, naming its "
                                     "address, in the allow-list?)"
                                   : "cannot add peer %s", arg);
            goto out;
        }
        heartbeat(t, p);
        msgpack_pack_map(&pk, 1);
        pk_str(&pk, "joined", plain_address(address), strlen(plain_address(address)));
    } else if (strcmp(cmd, "leave") == 0) {
        leave_now(t);
        leave = true;
        msgpack_pack_map(&pk, 1);
        pk_str(&pk, "left", t->name, strlen(t->name));
    } else {
        control_error(t, identity, SN_EINVAL, "unknown command '%s'", cmd);
        goto out;
    }
    if (sb.size > SN_MSG_FRAME_MAX - 64)
        control_error(t, identity, SN_ETOOBIG, "the answer is too large");
    else
        control_reply(t, identity, 0, sb.data, sb.size);
    if (leave && t->opt.on_leave)
        t->opt.on_leave(t->opt.on_leave_arg);
out:
    msgpack_sbuffer_destroy(&sb);
}

/* The public key a frame's sender proved in its handshake: zauth names a
 * CURVE client by its key (the User-Id property). */
static const char *sender_key(sn_transport_t *t, zframe_t *frame)
{
    if (!t->curve)
        return NULL;
    const char *uid = zframe_meta(frame, "User-Id");
    return uid && strlen(uid) == SN_CURVE_KEY_TXT - 1 ? uid : NULL;
}

/* The on_* readers return true when they stopped at their quota with more
 * possibly waiting. */
static bool on_router(sn_transport_t *t)
{
    for (int turn = 0; turn < TURN_MSGS; turn++) {
        zmsg_t *msg = zmsg_recv_nowait(t->router);
        if (!msg)
            return false;
        zframe_t *identity = zmsg_pop(msg);
        zframe_t *body = zmsg_pop(msg);
        sn_msg_decoded_t dm;
        if (!identity || !body || sn_msg_decode(zframe_data(body), zframe_size(body), &dm)) {
            count(&t->st.bad_frames, 1);
        } else {
            count(&t->st.bytes_received, zframe_size(body));
            const sn_msg_t *m = &dm.msg;
            switch (m->type) {
            case SN_MSG_HEARTBEAT: on_heartbeat(t, m, sender_key(t, body), true); break;
            case SN_MSG_REPAIR_REQ: on_repair_req(t, identity, m); break;
            case SN_MSG_SNAP_REQ: on_snap_req(t, identity, m); break;
            case SN_MSG_SNAP_CREDIT: on_snap_credit(t, m); break;
            case SN_MSG_DIGEST_REQ: on_digest_req(t, identity, m); break;
            case SN_MSG_FETCH_REQ: on_fetch_req(t, identity, m); break;
            case SN_MSG_ACK: on_ack(t, m); break;
            case SN_MSG_LEAVE: on_leave(t, m); break;
            case SN_MSG_MEMBERS: on_members(t, m); break;
            case SN_MSG_CONTROL: on_control(t, identity, m); break;
            default: count(&t->st.bad_frames, 1); break;
            }
            sn_msg_release(&dm);
        }
        zframe_destroy(&identity);
        zframe_destroy(&body);
        zmsg_destroy(&msg);
    }
    return true;
}

static bool on_dealer(sn_transport_t *t, peer_t *p)
{
    for (int turn = 0; turn < TURN_MSGS; turn++) {
        zframe_t *body = zframe_recv_nowait(p->dealer);
        if (!body)
            return false;
        count(&t->st.bytes_received, zframe_size(body));
        sn_msg_decoded_t dm;
        if (sn_msg_decode(zframe_data(body), zframe_size(body), &dm)) {
            count(&t->st.bad_frames, 1);
        } else {
            const sn_msg_t *m = &dm.msg;
            switch (m->type) {
            case SN_MSG_REPAIR_REP: on_repair_rep(t, p, m); break;
            case SN_MSG_SNAP_CHUNK: on_snap_chunk(t, p, m); break;
            case SN_MSG_DIGEST_REP:
                if (t->opt.drop_digest_reps) {
                    t->opt.drop_digest_reps--;  /* test hook: lost on the way */
                    break;
                }
                on_digest_rep(t, p, m);
                break;
            case SN_MSG_FETCH_REP: on_fetch_rep(t, m); break;
            default: count(&t->st.bad_frames, 1); break;
            }
            sn_msg_release(&dm);
        }
        zframe_destroy(&body);
    }
    return true;
}

static bool on_sub(sn_transport_t *t)
{
    for (int turn = 0; turn < TURN_MSGS; turn++) {
        zframe_t *f = zframe_recv_nowait(t->sub);
        if (!f)
            return false;
        count(&t->st.bytes_received, zframe_size(f));
        on_delta_frame(t, zframe_data(f), zframe_size(f), true);
        zframe_destroy(&f);
    }
    return true;
}

/* Reads the actor pipe; false once the actor is told to end. */
static bool on_pipe(sn_transport_t *t, zsock_t *pipe)
{
    while (zsock_events(pipe) & ZMQ_POLLIN) {
        char *cmd = zstr_recv(pipe);
        bool term = !cmd || strcmp(cmd, "$TERM") == 0;
        if (cmd && strcmp(cmd, "LEAVE") == 0) {
            leave_now(t);
            zsock_signal(pipe, 0);
        }
        zstr_free(&cmd);
        if (term)
            return false;
    }
    return true;
}

/* A refused handshake on a secured bus: a peer not on the allow-list, a
 * peer whose key is not the one we expect, or a plain-text peer. Counted,
 * and logged at most once a second (with how many went unlogged), since a
 * refused peer retries every reconnect interval. */
static bool on_monitor(sn_transport_t *t, zsock_t *mon, const char *which)
{
    for (int turn = 0; turn < TURN_MSGS; turn++) {
        zmsg_t *msg = zmsg_recv_nowait(mon);
        if (!msg)
            return false;
        zframe_t *head = zmsg_first(msg), *ep = zmsg_next(msg);
        if (head && zframe_size(head) >= 6) {
            uint16_t event;
            uint32_t value;
            memcpy(&event, zframe_data(head), 2);
            memcpy(&value, zframe_data(head) + 2, 4);
            count(&t->st.auth_refused, 1);
            uint64_t now = mono_ms();
            if (now - t->auth_log_ms >= 1000) {
                char *where = ep ? zframe_strdup(ep) : NULL;
                char why[120];
                if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                    snprintf(why, sizeof why,
                             "refused a peer whose key is not on the allow-list (ZAP %u)",
                             value);
                else
                    snprintf(why, sizeof why, "a CURVE handshake failed%s (a wrong server "
                             "key, or a peer without CURVE?)",
                             event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? ": protocol error"
                                                                          : "");
                tlog(t, SN_LOG_WARN, "%s %s: %s; %llu more since the last such line", which,
                     where ? where : "?", why, (unsigned long long) t->auth_unlogged);
                free(where);
                t->auth_log_ms = now;
                t->auth_unlogged = 0;
            } else {
                t->auth_unlogged++;
            }
        }
        zmsg_destroy(&msg);
    }
    return true;
}

/* Watches a socket's failed handshakes through a monitor (inproc PAIR). */
static int monitor(sn_transport_t *t, zsock_t *sock, int slot)
{
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://sessnode-mon-%p-%d", (void *) t, slot);
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor(zsock_resolve(sock), ep, events) != 0)
        return SN_ENOMEM;
    t->mon[slot] = zsock_new(ZMQ_PAIR);
    if (!t->mon[slot] || zsock_connect(t->mon[slot], "%s", ep) < 0 ||
        watch(t, zsock_fd(t->mon[slot]), SRC_MON + (uint32_t) slot) < 0)
        return SN_ENOMEM;
    return 0;
}

static int secure_sockets(sn_transport_t *t)
{
    char err[PATH_MAX + 200];
    t->curve = sn_curve_new(t->opt.curve_cert, t->opt.curve_allow, err, sizeof err);
    if (!t->curve) {
        tlog(t, SN_LOG_ERROR, "cannot secure the bus: %s", err);
        return SN_EINVAL;
    }
    sn_curve_server(t->curve, t->pub);
    sn_curve_server(t->curve, t->router);
    if (monitor(t, t->pub, 0) || monitor(t, t->router, 1) || monitor(t, t->sub, 2))
        return SN_ENOMEM;
    tlog(t, SN_LOG_INFO, "bus secured with CURVE: key %s, allow-list %s",
         sn_curve_public_txt(t->curve), t->opt.curve_allow);
    return 0;
}

static int bind_sockets(sn_transport_t *t)
{
    t->pub = zsock_new(ZMQ_PUB);
    t->router = zsock_new(ZMQ_ROUTER);
    t->sub = zsock_new(ZMQ_SUB);
    if (!t->pub || !t->router || !t->sub)
        return SN_ENOMEM;
    int rc;
    if (t->opt.curve_cert && (rc = secure_sockets(t)))
        return rc;
    zsock_set_linger(t->pub, 0);
    zsock_set_linger(t->router, 0);
    zsock_set_linger(t->sub, 0);
    zsock_set_sndhwm(t->pub, 100000);
    zsock_set_sndhwm(t->router, 100000);
    zsock_set_rcvhwm(t->sub, 100000);
    zsock_set_rcvhwm(t->router, 100000);
    /* libzmq allocates a frame as soon as its header announces it: past the
     * largest frame the protocol has, it drops the connection instead, so
     * a bad peer cannot make this node allocate what it claims to send */
    zsock_set_maxmsgsize(t->sub, SN_MSG_FRAME_MAX);
    /* a dead peer is dialled ever less often, up to every RECONNECT_MAX_MS,
     * rather than every 100 ms for as long as it stays down; one that
     * speaks to us again is dialled at once (on_heartbeat) */
    zsock_set_reconnect_ivl_max(t->sub, RECONNECT_MAX_MS);
    zsock_set_maxmsgsize(t->router, SN_MSG_FRAME_MAX);
    zsock_set_subscribe(t->sub, "");
    if (zsock_bind(t->pub, "%s", t->pub_ep) < 0) {
        tlog(t, SN_LOG_ERROR, "cannot bind %s: %s", t->pub_ep, zmq_strerror(zmq_errno()));
        return SN_EADDR;
    }
    if (zsock_bind(t->router, "%s", t->router_ep) < 0) {
        tlog(t, SN_LOG_ERROR, "cannot bind %s: %s", t->router_ep, zmq_strerror(zmq_errno()));
        return SN_EADDR;
    }
    if (watch(t, zsock_fd(t->sub), SRC_SUB) < 0 || watch(t, zsock_fd(t->router), SRC_ROUTER) < 0 ||
        watch(t, t->wake[0], SRC_QUEUE) < 0) {
        tlog(t, SN_LOG_ERROR, "epoll: %s", strerror(errno));
        return SN_ENOMEM;
    }
    for (char **p = t->peer_list; p && *p; p++)
        peer_add(t, *p, NULL);
    return 0;
}

static void actor_fn(zsock_t *pipe, void *arg)
{
    sn_transport_t *t = arg;
    pthread_mutex_lock(&t->turn);
    /* zactor_new waits for this signal; the outcome travels beside it */
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->start_rc = t->epfd < 0 || watch(t, zsock_fd(pipe), SRC_PIPE) < 0 ? SN_ENOMEM
                                                                       : bind_sockets(t);
    zsock_signal(pipe, 0);
    if (t->start_rc)
        goto done;
    uint64_t now = mono_ms();
    uint64_t next_hb = now, next_repair = now;
    if (t->opt.join && t->npeers) {
        t->join_state = J_WAITING;
        t->join_started_ms = now;
    } else {
        set_ready(t);
    }
    bool running = true;
    while (running) {
        now = mono_ms();
        uint64_t next = next_hb < next_repair ? next_hb : next_repair;
        int timeout = next > now ? (int) (next - now) : 0;
        bool busy = t->gc_shard < sn_store_shards(t->store);
        for (size_t i = 0; i < t->nserving; i++)
            if (t->serving[i].credit)
                busy = true;
        for (size_t i = 0; i < SRC_DEALER + t->npeers; i++)
            if (t->check[i])
                busy = true;
        /* about to sleep: fault in what the next writes will take first */
        if (!busy && timeout > 0 && prefault_ahead(t) > 0)
            busy = true;
        struct epoll_event ev[16];
        pthread_mutex_unlock(&t->turn);
        int n = epoll_wait(t->epfd, ev, 16, busy ? 0 : timeout);
        pthread_mutex_lock(&t->turn);
        if (n < 0 && errno != EINTR) {
            tlog(t, SN_LOG_ERROR, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++)
            t->check[ev[i].data.u32] = true;
        if (t->check[SRC_PIPE]) {
            t->check[SRC_PIPE] = false;
            running = on_pipe(t, pipe);
        }
        if (t->check[SRC_QUEUE]) {
            t->check[SRC_QUEUE] = false;
            publish_local(t);
        }
        if (t->check[SRC_SUB]) {
            t->check[SRC_SUB] = false;
            t->check[SRC_SUB] |= on_sub(t);
        }
        if (t->check[SRC_ROUTER]) {
            t->check[SRC_ROUTER] = false;
            t->check[SRC_ROUTER] |= on_router(t);
        }
        static const char *const mon_names[3] = {"PUB", "ROUTER", "SUB"};
        for (int i = 0; i < 3; i++) {
            if (t->check[SRC_MON + i]) {
                t->check[SRC_MON + i] = false;
                t->check[SRC_MON + i] |= on_monitor(t, t->mon[i], mon_names[i]);
            }
        }
        for (size_t i = 0; i < t->npeers; i++) {
            if (t->check[SRC_DEALER + i]) {
                t->check[SRC_DEALER + i] = false;
                t->check[SRC_DEALER + i] |= on_dealer(t, &t->peers[i]);
            }
        }
        serve_snapshots(t);
        if (t->gc_shard < sn_store_shards(t->store))
            sn_store_gc_step(t->store, &t->gc_stable, &t->gc_shard);
        now = mono_ms();
        if (t->resync_wanted && t->join_state == J_IDLE) {
            peer_t *p = any_live_peer(t, now);
            if (p) {
                start_resync(t, p);
                t->resync_wanted = false;
            }
        }
        if (t->opt.antientropy_ms && now >= t->next_antientropy_ms && t->join_state == J_IDLE) {
            /* a slow, complete comparison with one peer: heals whatever
             * the fast paths missed. Each interval is drawn from half to
             * one and a half times the setting, so nodes started together
             * do not all compare at once, each serving pages to the others
             * while it compares its own. */
            if (t->next_antientropy_ms)
                start_resync(t, any_live_peer(t, now));
            uint64_t every = t->opt.antientropy_ms;
            t->next_antientropy_ms = now + every / 2 + rnd(t) % every;
        }
        if (now >= next_hb) {
            heartbeat(t, NULL);
            if (++t->hb_since_members >= MEMBERS_EVERY)
                gossip_members(t, NULL);
            if (t->nsettle)
                settle_check(t, now);
            join_tick(t, now);
            resync_check(t, now);
            sweep_pending(t);
            redial(t, now);
            next_hb = now + t->opt.heartbeat_ms;
        }
        if (now >= next_repair) {
            if (t->join_state == J_IDLE) {
                request_repairs(t, now);
                if (t->nparked)
                    retry_parked(t, now);
            }
            uint32_t step = t->opt.repair_grace_ms / 2;
            next_repair = now + (step ? step : 1);
        }
    }
done:
    for (size_t i = 0; i < t->npeers; i++)
        zsock_destroy(&t->peers[i].dealer);
    for (int i = 0; i < 3; i++) {
        zsock_destroy(&t->mon[i]);
    }
    zsock_destroy(&t->pub);
    zsock_destroy(&t->router);
    zsock_destroy(&t->sub);
    sn_curve_destroy(&t->curve);
    if (t->epfd >= 0)
        close(t->epfd);
    pthread_mutex_unlock(&t->turn);
}

/* ------------------------------------------------------------ lifecycle */

sn_transport_t *sn_transport_new(const sn_transport_options_t *o)
{
    if (!o || !o->node_id || !o->cluster || !o->curve_cert != !o->curve_allow)
        return NULL;  /* a certificate without an allow-list would let anyone in */
    sn_transport_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->opt = *o;
    if (!t->opt.suspect_ms)
        t->opt.suspect_ms = 10u * t->opt.heartbeat_ms;
    if (!t->opt.dead_ms)
        t->opt.dead_ms = 30u * t->opt.heartbeat_ms;
    if (t->opt.dead_ms <= t->opt.suspect_ms) {
        /* a member would go from alive to dead with no suspicion between */
        free(t);
        return NULL;
    }
    t->wake[0] = t->wake[1] = -1;
    t->epfd = -1;
    msgpack_sbuffer_init(&t->snap_states);
    msgpack_sbuffer_init(&t->pub_frame);
    t->zc = calloc(1, sizeof *t->zc);
    if (!t->zc)
        goto fail;
    pthread_mutex_init(&t->zc->lock, NULL);
    t->zc->refs = 1;
    if (snprintf(t->cluster, sizeof t->cluster, "%s", o->cluster) >= (int) sizeof t->cluster ||
        sn_transport_endpoints(o->cluster, t->pub_ep, sizeof t->pub_ep, t->router_ep,
                               sizeof t->router_ep))
        goto fail;
    if (o->name)
        snprintf(t->name, sizeof t->name, "%s", o->name);
    else
        snprintf(t->name, sizeof t->name, "node-%016llx", (unsigned long long) o->node_id);
    t->opt.name = t->name;
    t->opt.cluster = t->cluster;
    size_t np = 0;
    while (o->peers && o->peers[np])
        np++;
    t->peer_list = calloc(np + 1, sizeof *t->peer_list);
    if (!t->peer_list)
        goto fail;
    for (size_t i = 0; i < np; i++)
        if (!(t->peer_list[i] = strdup(o->peers[i])))
            goto fail;
    t->opt.peers = NULL;
    t->opt.curve_cert = o->curve_cert ? strdup(o->curve_cert) : NULL;
    t->opt.curve_allow = o->curve_allow ? strdup(o->curve_allow) : NULL;
    if ((o->curve_cert && !t->opt.curve_cert) || (o->curve_allow && !t->opt.curve_allow))
        goto fail;
    t->backlog = sn_backlog_new(o->backlog_bytes ? o->backlog_bytes : (64u << 20), 1u << 20);
    t->qmax = o->queue_bytes ? o->queue_bytes : QUEUE_BYTES_DEFAULT;
    t->tracker = sn_tracker_new();
    if (!t->backlog || !t->tracker || pipe2(t->wake, O_NONBLOCK | O_CLOEXEC) < 0)
        goto fail;
    pthread_mutex_init(&t->qlock, NULL);
    pthread_mutex_init(&t->turn, NULL);
    pthread_mutex_init(&t->mlock, NULL);
    pthread_mutex_init(&t->rlock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->rcond, &ca);
    pthread_condattr_destroy(&ca);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->incarnation = (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
    t->rng = t->incarnation ^ o->node_id;
    t->gc_shard = UINT32_MAX;  /* no collection pass running */
    return t;
fail:
    free((char *) t->opt.curve_cert);
    free((char *) t->opt.curve_allow);
    if (t->peer_list)
        for (size_t i = 0; t->peer_list[i]; i++)
            free(t->peer_list[i]);
    free(t->peer_list);
    sn_backlog_destroy(&t->backlog);
    sn_tracker_destroy(&t->tracker);
    if (t->wake[0] >= 0) {
        close(t->wake[0]);
        close(t->wake[1]);
    }
    if (t->zc)
        zc_unref(t->zc);
    free(t);
    return NULL;
}

void sn_transport_set_store(sn_transport_t *self, sn_store_t *store)
{
    self->store = store;
}

int sn_transport_start(sn_transport_t *self)
{
    if (!self || !self->store)
        return SN_EINVAL;
    if (self->actor)
        return SN_ESTATE;
    self->actor = zactor_new(actor_fn, self);
    if (!self->actor)
        return SN_ENOMEM;
    if (self->start_rc) {
        zactor_destroy(&self->actor);
        return self->start_rc;
    }
    return 0;
}

bool sn_transport_had_donor(sn_transport_t *self)
{
    pthread_mutex_lock(&self->rlock);
    bool had = self->had_donor;
    pthread_mutex_unlock(&self->rlock);
    return had;
}

int sn_transport_wait_ready(sn_transport_t *self, uint32_t timeout_ms)
{
    if (!self)
        return SN_EINVAL;
    struct timespec deadline = deadline_after(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&self->rlock);
    while (!self->ready && rc == 0)
        if (pthread_cond_timedwait(&self->rcond, &self->rlock, &deadline) == ETIMEDOUT)
            rc = self->ready ? 0 : SN_ETIMEDOUT;
    pthread_mutex_unlock(&self->rlock);
    return rc;
}

void sn_transport_destroy(sn_transport_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_transport_t *t = *self_p;
    zactor_destroy(&t->actor);
    while (t->qhead) {
        qitem_t *it = t->qhead;
        t->qhead = it->next;
        if (it->waiter)
            waiter_unref(it->waiter);
        free(it->body);
        free(it);
    }
    free(t->lost_dots);
    for (size_t i = 0; i < t->npending; i++)
        pending_release(&t->pending[i]);
    free(t->pending);
    for (size_t i = 0; i < t->nserving; i++) {
        zframe_destroy(&t->serving[i].identity);
        free(t->serving[i].cut.dots);
    }
    free(t->serving);
    while (t->jhead) {
        jbuf_t *j = t->jhead;
        t->jhead = j->next;
        free(j);
    }
    for (size_t i = 0; t->peer_list && t->peer_list[i]; i++)
        free(t->peer_list[i]);
    free(t->peer_list);
    free((char *) t->opt.curve_cert);
    free((char *) t->opt.curve_allow);
    for (size_t i = 0; i < t->npeers; i++)
        free(t->peers[i].their_applied.dots);
    free(t->dots_ahead);
    free(t->gc_stable.dots);
    for (size_t i = 0; i < t->nparked; i++)
        free(t->parked[i].body);
    free(t->parked);
    for (size_t i = 0; i < t->nsettle; i++) {
        free(t->settle[i].id);
        free(t->settle[i].vv.dots);
    }
    free(t->settle);
    msgpack_sbuffer_destroy(&t->snap_states);
    msgpack_sbuffer_destroy(&t->pub_frame);
    free(t->snap_items);
    zc_unref(t->zc);
    sn_backlog_destroy(&t->backlog);
    sn_tracker_destroy(&t->tracker);
    close(t->wake[0]);
    close(t->wake[1]);
    pthread_mutex_destroy(&t->qlock);
    pthread_mutex_destroy(&t->turn);
    pthread_mutex_destroy(&t->mlock);
    pthread_mutex_destroy(&t->rlock);
    pthread_cond_destroy(&t->rcond);
    free(t);
    *self_p = NULL;
}

/* ------------------------------------------------------------ queries */

void sn_transport_stats(sn_transport_t *t, sn_node_stats_t *s)
{
#define LOAD(f) s->f = atomic_load_explicit(&t->st.f, memory_order_relaxed)
    LOAD(deltas_sent);
    LOAD(batches_sent);
    LOAD(sent_by_writers);
    LOAD(deltas_received);
    LOAD(deltas_dropped);
    LOAD(duplicates);
    LOAD(gaps_detected);
    LOAD(repairs_requested);
    LOAD(repaired);
    LOAD(full_fetches);
    LOAD(resyncs);
    LOAD(resync_settled);
    LOAD(resync_retries);
    LOAD(bad_frames);
    LOAD(apply_refused);
    LOAD(queue_overflows);
    LOAD(acks_timed_out);
    LOAD(acks_refused);
    LOAD(bytes_sent);
    LOAD(bytes_received);
    LOAD(snapshot_sessions);
    LOAD(members_learned);
    LOAD(auth_refused);
    LOAD(peers_without_key);
#undef LOAD
    uint64_t now = mono_ms();
    s->peers_alive = 0;
    pthread_mutex_lock(&t->mlock);
    for (size_t i = 0; i < t->npeers; i++)
        if (member_state(t, &t->peers[i], now) == SN_MEMBER_ALIVE)
            s->peers_alive++;
    pthread_mutex_unlock(&t->mlock);
}

int sn_transport_members(sn_transport_t *t, sn_member_t *out, size_t max, size_t *count_out)
{
    if (!t || (max && !out))
        return SN_EINVAL;
    uint64_t now = mono_ms();
    pthread_mutex_lock(&t->mlock);
    size_t n = t->npeers;
    for (size_t i = 0; i < n && i < max; i++) {
        const peer_t *p = &t->peers[i];
        sn_member_t *m = &out[i];
        memset(m, 0, sizeof *m);
        m->node_id = p->node_id;
        snprintf(m->name, sizeof m->name, "%s", p->name);
        snprintf(m->address, sizeof m->address, "%s", p->address);
        m->state = member_state(t, p, now);
        m->last_heard_ms = p->last_heard_ms;
        m->last_pseq = p->last_pseq;
        m->lag = p->lag;
        m->sessions = p->sessions;
    }
    pthread_mutex_unlock(&t->mlock);
    if (count_out)
        *count_out = n;
    return 0;
}

int sn_transport_leave(sn_transport_t *self, uint32_t timeout_ms)
{
    if (!self || !self->actor)
        return SN_ESTATE;
    self->leave_linger_ms = timeout_ms ? timeout_ms : 1;
    if (zstr_send(self->actor, "LEAVE") != 0)
        return SN_ENOMEM;
    return zsock_wait(self->actor) == 0 ? 0 : SN_ESTATE;
}
