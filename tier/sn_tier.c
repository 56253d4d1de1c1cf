/*
 * sn_tier.c - the memcached tier. See sn_tier.h for what it does; this
 * file's comments say why it does it so.
 */
#define _GNU_SOURCE
#include "sn_tier.h"

#include <czmq.h>
#include <errno.h>
#include <libmemcached/memcached.h>
#include <libmemcached/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sn_log.h"
#include "sn_wire.h"

#define QUEUE_MAX_DEFAULT 100000
#define QUEUE_BYTES_DEFAULT (64u << 20)
#define FLUSH_MS_DEFAULT 20
#define BATCH 256                   /* commands between checks of the stop deadline */
#define SEND_AT (256u << 10)        /* a server's commands go out once this many bytes wait */
#define EXT_MIN 256                 /* a copy this long is sent from its job (one iovec), not copied */
#define IOV_BATCH 256               /* pieces of the stream a sendmsg takes */
#define CONNECT_MS 500              /* for a server to accept a connection */
#define IO_WAIT_MS 1000             /* for a server to take more bytes */
#define RETRY_MS 1000               /* before a failed server is tried again */
#define BOOT_BATCH 1000             /* keys per multi-get while bootstrapping */
#define FAIL_PAUSE_MS 200           /* after a round with failures */
#define KEY_PREFIX "sn:"
#define KEY_OVERHEAD 20             /* "sn:" + 16 hex digits of the node id + ":" */
#define TOMB_TTL MONTH_S            /* a destroyed session's tombstone copy */
#define KEY_MAX 250                 /* memcached's */
#define MONTH_S (30u * 86400u)      /* memcached reads a longer expiry as a date */
#define DUMP_MAX (1u << 30)         /* a metadump longer than this is cut short */
#define FETCH_NODES_MAX 32          /* copies asked for by one read-through */
#define POOL_MAX 16                 /* read-through connections per server */
#define PAD_BYTES (256u << 10)      /* the copies' pads (see pad_take) */
#define PAD_COPY_MAX (16u << 10)    /* a larger copy has an allocation of its own */
#define PADS_KEPT 8                 /* empty pads kept for the next copies */

enum { MARK_FULL = 1, MARK_TOUCH = 2, MARK_GONE = 4,
       SENT_DELETE = 8 };   /* the thread's: this round's command deletes the copy */

/* A queued session: its marks and, after a local write or touch, the copy
 * to write, encoded by the writer while the session was in its cache.
 * Without a copy (a peer's destroy, the copies' byte bound reached) the
 * round exports the session from the store: a lookup and a read of memory
 * written 20 ms before, some 2 us a session, when the writer's encoding
 * costs it a fraction of that. One allocation holds it all. */
typedef struct {
    uint64_t hash;              /* of the id (the store's), for the queue's table */
    uintptr_t bits;             /* MARK_* */
    size_t bytes;               /* its copy's room, counted in queued_bytes */
    struct pad *pad;            /* the pad holding its copy; NULL: its own allocation */
    uint64_t last_access_ms;    /* the copy's, for its expiry */
    uint32_t max_inactive;
    uint32_t len;               /* the copy's length; 0: none, export it */
    uint8_t id_len;             /* ids are at most SN_ID_MAX (250) bytes */
    bool alive;                 /* the copy is of a live session, not a tombstone */
    char id[];                  /* the id, a NUL, then the copy */
} job_t;

/* Copies are carved end to end from pads of PAD_BYTES: the writer takes
 * its bytes with a pointer's bump under a short lock, and the thread counts
 * down the pads of a round's jobs under one lock, instead of a malloc by
 * the writer and a free by the thread of each copy (glibc's slow path at
 * this size, on another thread's arena). A pad whose jobs are all done is
 * reused, its pages already in memory. The byte bound holds the memory:
 * pads count whole in `held`, however few of their copies are still
 * wanted. */
typedef struct pad {
    struct pad *next;           /* among the empty ones */
    size_t used;                /* bytes handed out */
    size_t live;                /* its jobs not yet done */
    char bytes[];
} pad_t;

/* The queue's table: jobs by session id, open addressing with linear
 * probing in a power-of-two array at most half full. Entries are only
 * added or replaced until the whole table is taken, so there is no
 * deletion to handle; the array is kept from round to round. (A zhashx
 * allocated an item and a copy of the key per session, and shrank at every
 * purge, a third of the marking's cost.) */
typedef struct {
    job_t **slot;
    size_t cap;                 /* 0 or a power of two */
    size_t n;
} jobset_t;

/* A job's own copy in a server's stream of commands: the stream is buf up
 * to `at`, then these bytes, then buf from `at` on. */
typedef struct {
    size_t at;
    const char *bytes;
    size_t len;
} ext_t;

/* One server of the tier, as the thread writes to it: a connection of its
 * own, and the commands of this round not yet sent, with their jobs (freed
 * once their bytes are with the kernel, queued again if sending fails). */
typedef struct {
    char *host;
    char port[8];
    char *name;                 /* "HOST:PORT", for the log */
    int fd;                     /* -1: not connected */
    uint64_t retry_at_ms;       /* after a failure, not tried again before this */
    char *buf;                  /* the commands' text, and the copies not in ext */
    size_t len, cap;
    ext_t *ext;                 /* the copies sent from their jobs, in order */
    size_t next, ext_cap, ext_bytes;
    job_t **jobs;
    size_t njobs, jobs_cap;
} server_t;

struct sn_tier {
    sn_tier_options_t opt;
    char *servers;
    sn_store_t *store;
    char key_prefix[KEY_OVERHEAD];  /* "sn:" NODE ":", this node's keys */
    uint64_t now_ms;                /* thread-owned: the real clock, read every BATCH copies */
    memcached_st *mc;               /* the thread's: the ring, and the bootstrap's reads */
    server_t *srv;                  /* the thread's writers, in mc's order of servers */
    uint32_t nsrv;
    memcached_st *read_mc;          /* read-through: configures the pool's */
    memcached_pool_st *pool;        /* read-through: connections for any thread */
    _Atomic uint64_t read_fail_log_ms;
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;           /* dirty, inflight, flags below */
    pthread_cond_t cond;            /* the thread waits here between rounds */
    pthread_cond_t done_cond;       /* bootstrap callers wait here */
    jobset_t dirty;                 /* the queue */
    size_t inflight;                /* taken off `dirty`, being written */
    jobset_t spare;                 /* thread-owned: the next `dirty` */
    jobset_t again;                 /* thread-owned: failed this round */
    bool stop, boot_wanted, boot_done;
    uint64_t stop_by_ms;
    uint64_t drop_log_ms, drops_unlogged;
    _Atomic size_t queued_bytes;    /* the queued copies' room */
    _Atomic size_t held;            /* memory for copies (pads, own allocations), bounded */

    pthread_mutex_t pad_lock;       /* the pads; taken alone or inside `lock` */
    pad_t *pad;                     /* the one copies are carved from */
    pad_t *empty;                   /* up to PADS_KEPT, for reuse */
    size_t kept;                    /* pads in `empty` */

    uint64_t fail_log_ms, fails_unlogged;   /* thread-owned */
    size_t left_out;                        /* thread-owned: cut off by the stop deadline */

    struct {
        _Atomic uint64_t writes, touches, deletes, failures, dropped, boot_sessions, boot_ms,
            reads, read_hits;
    } st;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static uint64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

/* ms from now on the monotonic clock, which the condition variables use */
static struct timespec deadline(uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t) ts.tv_nsec + (uint64_t) ms * 1000000u;
    ts.tv_sec += (time_t) (ns / 1000000000u);
    ts.tv_nsec = (long) (ns % 1000000000u);
    return ts;
}

static void tlog(sn_tier_t *t, int level, const char *fmt, ...)
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

/* A warning repeated under load goes out once a second at most: true
 * when one is due, with *since the lines left out before it. */
static bool log_due(uint64_t *last_ms, uint64_t *unlogged, unsigned long long *since)
{
    uint64_t now = mono_ms();
    if (now - *last_ms < 1000) {
        (*unlogged)++;
        return false;
    }
    *since = *unlogged;
    *last_ms = now;
    *unlogged = 0;
    return true;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* A node's key for its copy of a session: "sn:" NODE ":" ID, or, for an
 * id too long for that, "sn#" NODE ":" and a hash of the id (the value
 * carries the id either way). The store takes no id with a byte a key
 * cannot hold (a space, a control character). */
static size_t node_key(uint64_t node_id, const char *id, size_t id_len, char *key)
{
    static const char hex[] = "0123456789abcdef";
    char node[17];
    for (int i = 0; i < 16; i++)
        node[i] = hex[(node_id >> (60 - 4 * i)) & 15];
    node[16] = 0;
    if (id_len + KEY_OVERHEAD <= KEY_MAX) {
        memcpy(key, KEY_PREFIX, 3);
        memcpy(key + 3, node, 16);
        key[19] = ':';
        memcpy(key + 20, id, id_len);
        key[20 + id_len] = 0;
        return 20 + id_len;
    }
    uint64_t h = fnv1a(id, id_len);
    return (size_t) snprintf(key, KEY_MAX + 1, "sn#%s:%016llx", node, (unsigned long long) h);
}

/* node_key for this node, its prefix formatted once */
static size_t tier_key(const sn_tier_t *t, const char *id, size_t id_len, char *key)
{
    if (id_len + KEY_OVERHEAD > KEY_MAX)
        return node_key(t->opt.node_id, id, id_len, key);
    memcpy(key, t->key_prefix, KEY_OVERHEAD);
    memcpy(key + KEY_OVERHEAD, id, id_len);
    key[KEY_OVERHEAD + id_len] = 0;
    return KEY_OVERHEAD + id_len;
}

/* ------------------------------------------------------------ the queue */

#define JOB_HEAD(id_len) (offsetof(job_t, id) + (size_t) (id_len) + 1)

static const uint8_t *job_copy(const job_t *j)
{
    return (const uint8_t *) j->id + j->id_len + 1;
}

/* Fills in what every job has; `j` holds JOB_HEAD(id_len) bytes at least. */
static job_t *job_init(sn_tier_t *t, job_t *j, const void *id, size_t id_len)
{
    j->hash = sn_store_id_hash(t->store, id, id_len);
    j->id_len = (uint8_t) id_len;
    memcpy(j->id, id, id_len);
    j->id[id_len] = 0;
    return j;
}

/* A job without a copy: a few hundred bytes at most, bounded by the
 * queue's count, not by its bytes. */
static job_t *job_new(sn_tier_t *t, const void *id, size_t id_len, uintptr_t bits)
{
    job_t *j = calloc(1, JOB_HEAD(id_len));
    if (!j)
        return NULL;
    j->bits = bits;
    return job_init(t, j, id, id_len);
}

#define PAD_SIZE (sizeof(pad_t) + PAD_BYTES)

/* `n` more bytes of memory for copies, if the bound allows them. */
static bool hold(sn_tier_t *t, size_t n)
{
    size_t before = atomic_fetch_add_explicit(&t->held, n, memory_order_relaxed);
    if (before + n <= t->opt.queue_bytes)
        return true;
    atomic_fetch_sub_explicit(&t->held, n, memory_order_relaxed);
    return false;
}

static void unhold(sn_tier_t *t, size_t n)
{
    atomic_fetch_sub_explicit(&t->held, n, memory_order_relaxed);
}

/* A pad no job holds: kept for reuse, or freed past PADS_KEPT. Under
 * pad_lock. */
static void pad_done(sn_tier_t *t, pad_t *p)
{
    if (t->kept < PADS_KEPT) {
        p->next = t->empty;
        t->empty = p;
        t->kept++;
    } else {
        free(p);
        unhold(t, PAD_SIZE);
    }
}

/* `n` bytes of the current pad for a copy, or NULL (a large copy, or no
 * room for another pad within the byte bound) for the caller to allocate
 * them itself. A full pad is left to its jobs. */
static void *pad_take(sn_tier_t *t, size_t n, pad_t **owner)
{
    n = (n + 15) & ~(size_t) 15;   /* each copy aligned as malloc's */
    if (n > PAD_COPY_MAX)
        return NULL;
    void *b = NULL;
    pthread_mutex_lock(&t->pad_lock);
    pad_t *p = t->pad;
    if (p && p->used + n > PAD_BYTES) {
        t->pad = NULL;
        if (!p->live)
            pad_done(t, p);
        p = NULL;
    }
    if (!p && t->empty) {
        p = t->empty;
        t->empty = p->next;
        t->kept--;
    } else if (!p && hold(t, PAD_SIZE) && !(p = malloc(PAD_SIZE))) {
        unhold(t, PAD_SIZE);
    }
    if (p) {
        if (p != t->pad) {
            p->used = 0;
            p->live = 0;
            t->pad = p;
        }
        b = p->bytes + p->used;
        p->used += n;
        p->live++;
        *owner = p;
    }
    pthread_mutex_unlock(&t->pad_lock);
    return b;
}

/* Under one lock, the pads' jobs that are done (live[m] of pads[m]). */
static void pads_count_down(sn_tier_t *t, pad_t **pads, const size_t *live, size_t np)
{
    if (!np)
        return;
    pthread_mutex_lock(&t->pad_lock);
    for (size_t m = 0; m < np; m++)
        if (!(pads[m]->live -= live[m]) && pads[m] != t->pad)
            pad_done(t, pads[m]);
    pthread_mutex_unlock(&t->pad_lock);
}

/* Frees n jobs: the pads of a round's jobs are counted down under one
 * lock, not one a job. */
static void jobs_free(sn_tier_t *t, job_t **jobs, size_t n)
{
    enum { RUN = 8 };
    pad_t *pads[RUN];
    size_t live[RUN], np = 0, bytes = 0, own = 0;
    for (size_t i = 0; i < n; i++) {
        job_t *j = jobs[i];
        bytes += j->bytes;
        if (!j->pad) {
            own += j->bytes;
            free(j);
            continue;
        }
        size_t k = 0;
        while (k < np && pads[k] != j->pad)
            k++;
        if (k == RUN) {
            pads_count_down(t, pads, live, np);
            np = k = 0;
        }
        if (k == np) {
            pads[np] = j->pad;
            live[np++] = 0;
        }
        live[k]++;
    }
    pads_count_down(t, pads, live, np);
    atomic_fetch_sub_explicit(&t->queued_bytes, bytes, memory_order_relaxed);
    unhold(t, own);
}

static void job_free(sn_tier_t *t, job_t *j)
{
    if (j)
        jobs_free(t, &j, 1);
}

/* A job holding the encoding of `st`, or NULL (over the byte bound, no
 * memory, an encoding refused): the caller queues the session without it. */
static job_t *job_with_copy(sn_tier_t *t, const uint8_t *id, uint32_t id_len,
                            const sn_state_t *st, uintptr_t bits)
{
    /* room for the longest encoding, written in place */
    size_t est = JOB_HEAD(id_len) + sn_wire_size_bound(id_len, st);
    pad_t *pad = NULL;
    job_t *j = pad_take(t, est, &pad);
    if (!j) {
        if (!hold(t, est))
            return NULL;   /* before the work of encoding */
        if (!(j = malloc(est))) {
            unhold(t, est);
            return NULL;
        }
    }
    j->pad = pad;
    j->bytes = est;
    atomic_fetch_add_explicit(&t->queued_bytes, est, memory_order_relaxed);
    size_t len;
    if (sn_wire_put_state((uint8_t *) j + JOB_HEAD(id_len), est - JOB_HEAD(id_len), &len, id,
                          id_len, st) != 0 ||
        len > UINT32_MAX) {
        job_free(t, j);
        return NULL;
    }
    j->bits = bits;
    j->last_access_ms = st->last_access_ms;
    j->max_inactive = st->has_meta ? st->max_inactive : 0;
    j->alive = st->has_meta;
    j->len = (uint32_t) len;
    return job_init(t, j, id, id_len);
}

#define JOBSET_MIN 1024

/* The slot of j's session: its job, or the empty slot where it goes. The
 * table must have slots. */
static job_t **jobset_find(jobset_t *s, const job_t *j)
{
    size_t mask = s->cap - 1;
    for (size_t i = j->hash & mask;; i = (i + 1) & mask) {
        job_t *o = s->slot[i];
        if (!o || (o->hash == j->hash && o->id_len == j->id_len &&
                   memcmp(o->id, j->id, j->id_len) == 0))
            return &s->slot[i];
    }
}

/* The job queued for j's session, or NULL. */
static job_t **jobset_queued(jobset_t *s, const job_t *j)
{
    job_t **at = s->cap ? jobset_find(s, j) : NULL;
    return at && *at ? at : NULL;
}

/* Room for one more session; false without the memory. */
static bool jobset_reserve(jobset_t *s)
{
    if (2 * (s->n + 1) <= s->cap)
        return true;
    size_t cap = s->cap ? 2 * s->cap : JOBSET_MIN;
    jobset_t bigger = {calloc(cap, sizeof(job_t *)), cap, s->n};
    if (!bigger.slot)
        return false;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slot[i])
            *jobset_find(&bigger, s->slot[i]) = s->slot[i];
    free(s->slot);
    *s = bigger;
    return true;
}

/* Adds j, whose session the table does not hold, unless that would take it
 * past `max` sessions or there is no memory for it. */
static bool jobset_add(jobset_t *s, job_t *j, size_t max)
{
    if (s->n >= max || !jobset_reserve(s))
        return false;
    *jobset_find(s, j) = j;
    s->n++;
    return true;
}

/* Empties the table, freeing the jobs still in it; an array grown far
 * past what it held this time (after a burst, a server away) goes back. */
static void jobset_clear(sn_tier_t *t, jobset_t *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        job_free(t, s->slot[i]);
        s->slot[i] = NULL;
    }
    if (s->cap > JOBSET_MIN && s->n < s->cap / 16) {
        free(s->slot);
        *s = (jobset_t){0};
    }
    s->n = 0;
}

/* Queues `job`, taking it. The newest job of a session replaces the one
 * queued, with the marks of both: its copy, or its lack of one, is the
 * latest word. Past the queue's bound it is dropped, counted. */
static void enqueue(sn_tier_t *t, job_t *job)
{
    job_t *done = NULL;
    /* The caller holds a shard of the store: kept to one probe of the
     * table. The thread is not woken; it takes it whole every flush_ms. */
    pthread_mutex_lock(&t->lock);
    job_t **at = jobset_queued(&t->dirty, job);
    unsigned long long since;
    if (at && !job->len && !(*at)->len) {
        (*at)->bits |= job->bits;   /* nothing to replace */
        done = job;
    } else if (at) {
        job->bits |= (*at)->bits;
        done = *at;
        *at = job;
    } else if (!jobset_add(&t->dirty, job,
                           t->opt.queue_max > t->inflight ? t->opt.queue_max - t->inflight : 0)) {
        done = job;
        count(&t->st.dropped, 1);
        if (log_due(&t->drop_log_ms, &t->drops_unlogged, &since))
            tlog(t, SN_LOG_WARN,
                 "tier queue full (%zu sessions): a change of one session not backed up "
                 "(%llu more since the last such line); is a memcached server down?",
                 t->dirty.n, since);
    }
    pthread_mutex_unlock(&t->lock);
    job_free(t, done);
}

void sn_tier_mark_gone(sn_tier_t *t, const void *id, size_t id_len)
{
    if (id_len > SN_ID_MAX)
        return;
    job_t *j = job_new(t, id, id_len, MARK_GONE);
    if (j)
        enqueue(t, j);
    else
        count(&t->st.dropped, 1);
}

void sn_tier_capture(sn_tier_t *t, const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                     bool touch)
{
    if (id_len > SN_ID_MAX)
        return;
    uintptr_t bits = touch ? MARK_TOUCH : MARK_FULL;
    job_t *j = st ? job_with_copy(t, id, id_len, st, bits) : NULL;
    if (!j)
        j = job_new(t, id, id_len, bits);
    if (j)
        enqueue(t, j);
    else
        count(&t->st.dropped, 1);
}

/* The round in flight is done with: its sessions leave `inflight`, and
 * those whose command failed go back to the queue, within its bound, so
 * that the bound holds all along; a session queued again meanwhile keeps
 * its newer job. */
static void settle(sn_tier_t *t)
{
    pthread_mutex_lock(&t->lock);
    t->inflight = 0;
    for (size_t i = 0; i < t->again.cap; i++) {
        job_t *j = t->again.slot[i];
        if (!j)
            continue;
        t->again.slot[i] = NULL;
        job_t **at = jobset_queued(&t->dirty, j);
        if (at) {
            (*at)->bits |= j->bits;
            job_free(t, j);
        } else if (!jobset_add(&t->dirty, j, t->opt.queue_max)) {
            count(&t->st.dropped, 1);
            job_free(t, j);
        }
    }
    pthread_mutex_unlock(&t->lock);
    jobset_clear(t, &t->again);
}

/* ------------------------------------------------------------ writing */

/* memcached's expiry for a copy: the session's remaining lifetime from its
 * last access (an absolute time past 30 days, as memcached reads it), a
 * month for a tombstone; false if the session has expired. */
static bool copy_expiry(bool alive, uint32_t max_inactive, uint64_t last_access_ms,
                        uint64_t now, time_t *exptime)
{
    *exptime = alive ? 0 : TOMB_TTL;
    if (!alive || !max_inactive)
        return true;
    uint64_t life = (uint64_t) max_inactive * 1000u;
    uint64_t idle = now > last_access_ms ? now - last_access_ms : 0;
    if (idle >= life)
        return false;
    uint64_t left_s = (life - idle + 999) / 1000 + 1;
    *exptime = left_s > MONTH_S ? (time_t) (now / 1000 + left_s) : (time_t) left_s;
    return true;
}

typedef struct {
    msgpack_sbuffer *sb;        /* the encoded state, alone in it */
    bool encoded;
    bool alive;
    bool expired;
    time_t exptime;
    uint64_t now_ms;
} local_t;

static void export_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    local_t *l = arg;
    l->alive = st->has_meta;
    l->expired = !copy_expiry(st->has_meta, st->max_inactive, st->last_access_ms, l->now_ms,
                              &l->exptime);
    l->sb->size = 0;
    l->encoded = !l->expired && sn_wire_append_state(l->sb, id, id_len, st) == 0;
}

/* The copy of a session queued without one, from the store; false if the
 * store no longer holds it (evicted, collected). */
static bool export_local(sn_tier_t *t, const char *id, size_t id_len, local_t *l,
                         msgpack_sbuffer *sb)
{
    memset(l, 0, sizeof *l);
    l->sb = sb;
    l->now_ms = t->now_ms;
    return sn_store_export(t->store, id, id_len, export_cb, l) == 0;
}

/* n failures (0: a line of the log only) */
static void failed_n(sn_tier_t *t, uint64_t n, const char *what, const char *key,
                     const char *why)
{
    count(&t->st.failures, n);
    unsigned long long since;
    if (log_due(&t->fail_log_ms, &t->fails_unlogged, &since))
        tlog(t, SN_LOG_WARN, "tier: %s %s: %s (%llu more failures since the last such line)",
             what, key, why, since);
}

static void failed(sn_tier_t *t, const char *what, const char *key, const char *why)
{
    failed_n(t, 1, what, key, why);
}

/* The writers. The copies go out as text-protocol commands with "noreply",
 * pipelined per server and sent a quarter of a megabyte at a time: a reply
 * per command would cost a round trip and its system calls, more than the
 * session's own write here. The commands' text goes into a buffer; a copy
 * goes out from its job with sendmsg, since copying it into the buffer
 * first took 18% of this thread's time. Through libmemcached the same
 * commands cost the thread some 0.9 us more a copy, the size of the write
 * path's margin (docs/BENCHMARKS.md); libmemcached still picks each key's
 * server (its ketama ring, as its reads expect) and does the reading.
 * Without replies a command is known to have failed only when its bytes
 * cannot be sent; those the kernel took before a server died are lost with
 * it, as its memory. */

static void srv_close(server_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {fd, events, 0};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r <= 0 ? r : p.revents;
}

/* A non-blocking connection to s, made without waiting more than
 * CONNECT_MS; -1 with *why set if there is none. */
static int tcp_connect(const server_t *s, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(s->host, s->port, &hints, &res);
    if (gai != 0) {
        *why = gai_strerror(gai);
        return -1;
    }
    *why = NULL;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *why = strerror(errno);
    } else if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
        *why = strerror(errno);
    } else {
        int ev = wait_fd(fd, POLLOUT, CONNECT_MS), err = 0;
        socklen_t len = sizeof err;
        if (ev == 0)
            *why = "connect timed out";
        else if (ev < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err)
            *why = strerror(err ? err : errno);
    }
    freeaddrinfo(res);
    if (*why && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Reads what s sent, without waiting: nothing, with every command
 * "noreply", unless one was refused (memcached's parser answers some
 * errors regardless), which is counted and logged; its command is not
 * known. False if the connection is gone. */
static bool srv_drain(sn_tier_t *t, server_t *s)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(s->fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (n > 0) {
            buf[n] = 0;
            buf[strcspn(buf, "\r\n")] = 0;
            failed(t, "answer from", s->name, buf);
            continue;
        }
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }
}

/* s can take commands: connected, or connected now unless it failed less
 * than RETRY_MS ago. */
static bool srv_ready(sn_tier_t *t, server_t *s)
{
    if (s->fd >= 0)
        return true;
    uint64_t now = mono_ms();
    if (now < s->retry_at_ms)
        return false;
    const char *why;
    s->fd = tcp_connect(s, &why);
    if (s->fd >= 0) {
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return true;
    }
    s->retry_at_ms = now + RETRY_MS;
    failed_n(t, 0, "connect to", s->name, why);   /* each of its commands counts */
    return false;
}

/* A job whose command failed waits for the next round in `again`. */
static void job_again(sn_tier_t *t, job_t *j)
{
    if (!jobset_add(&t->again, j, SIZE_MAX))
        job_free(t, j);
}

/* Piece p of s's stream (buf and its copies, alternately), in *ptr and
 * the return value; p runs from 0 to 2 * s->next. */
static size_t srv_piece(const server_t *s, size_t p, const char **ptr)
{
    if (p % 2) {
        *ptr = s->ext[p / 2].bytes;
        return s->ext[p / 2].len;
    }
    size_t from = p ? s->ext[p / 2 - 1].at : 0, to = p / 2 < s->next ? s->ext[p / 2].at : s->len;
    *ptr = s->buf + from;
    return to - from;
}

/* Sends s's stream. Its jobs are freed, or, if it cannot be sent (the
 * connection broke, or the server took nothing for IO_WAIT_MS), queued
 * again, each counted as a failure, and the server rests for RETRY_MS. */
static void srv_send(sn_tier_t *t, server_t *s)
{
    const char *why = NULL;
    size_t left = s->len + s->ext_bytes;
    size_t p = 0, off = 0, pieces = 2 * s->next + 1;   /* the next byte: piece p, at off */
    while (left && !why) {
        struct iovec iov[IOV_BATCH];
        int n_iov = 0;
        for (size_t q = p; q < pieces && n_iov < IOV_BATCH; q++) {
            const char *b;
            size_t len = srv_piece(s, q, &b);
            size_t skip = q == p ? off : 0;
            if (len > skip)
                iov[n_iov++] = (struct iovec){(void *) (b + skip), len - skip};
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t) n_iov};
        ssize_t n = sendmsg(s->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            left -= (size_t) n;
            /* past the n bytes sent */
            for (size_t sent = (size_t) n, len; left; p++, off = 0) {
                const char *b;
                len = srv_piece(s, p, &b) - off;
                if (sent < len) {
                    off += sent;
                    break;
                }
                sent -= len;
            }
        } else if (n == 0) {
            why = "connection lost";
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ev = wait_fd(s->fd, POLLOUT | POLLIN, IO_WAIT_MS);
            if (ev == 0)
                why = "no progress for a second";
            else if (ev < 0 || ((ev & POLLIN) && !srv_drain(t, s)))
                why = "connection lost";
        } else if (errno != EINTR) {
            why = strerror(errno);
        }
    }
    if (why) {
        srv_close(s);
        s->retry_at_ms = mono_ms() + RETRY_MS;
        char what[200];
        snprintf(what, sizeof what, "%s; %zu copies to write again", why, s->njobs);
        failed_n(t, s->njobs, "send to", s->name, what);
        for (size_t i = 0; i < s->njobs; i++)
            job_again(t, s->jobs[i]);
    } else {
        uint64_t n[3] = {0};   /* deletes, writes, touches */
        for (size_t i = 0; i < s->njobs; i++) {
            uintptr_t bits = s->jobs[i]->bits;
            n[bits & SENT_DELETE ? 0 : bits & MARK_FULL ? 1 : 2]++;
        }
        count(&t->st.deletes, n[0]);
        count(&t->st.writes, n[1]);
        count(&t->st.touches, n[2]);
        jobs_free(t, s->jobs, s->njobs);
    }
    s->len = 0;
    s->next = 0;
    s->ext_bytes = 0;
    s->njobs = 0;
}

static char *put(char *p, const void *b, size_t n)
{
    memcpy(p, b, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char d[20];
    int n = 0;
    do
        d[n++] = (char) ('0' + v % 10);
    while (v /= 10);
    while (n)
        *p++ = d[--n];
    return p;
}

/* `a` (or its reallocation) with room for an element past its n, or NULL
 * without the memory (`a` is then as it was). */
static void *room_for_one(void *a, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return a;
    size_t more = *cap ? 2 * *cap : 256;
    void *b = realloc(a, more * size);
    if (b)
        *cap = more;
    return b;
}

/* Adds j's command to s: "set KEY 0 EXPTIME LEN noreply" and the copy, or
 * (copy NULL) "delete KEY noreply". False without the memory. */
static bool srv_add(server_t *s, job_t *j, const char *key, size_t key_len, const char *copy,
                    size_t copy_len, time_t exptime)
{
    /* a copy of some size goes out from its job, not copied here */
    bool ext = copy && copy == (const char *) job_copy(j) && copy_len >= EXT_MIN;
    size_t need = s->len + key_len + (ext ? 0 : copy_len) + 64;
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : SEND_AT + (64u << 10);
        while (cap < need)
            cap *= 2;
        char *buf = realloc(s->buf, cap);
        if (!buf)
            return false;
        s->buf = buf;
        s->cap = cap;
    }
    job_t **jobs = room_for_one(s->jobs, &s->jobs_cap, s->njobs, sizeof *jobs);
    if (!jobs)
        return false;
    s->jobs = jobs;
    if (ext) {
        ext_t *e = room_for_one(s->ext, &s->ext_cap, s->next, sizeof *e);
        if (!e)
            return false;
        s->ext = e;
    }
    char *p = s->buf + s->len;
    if (copy) {
        p = put(p, "set ", 4);
        p = put(p, key, key_len);
        p = put(p, " 0 ", 3);
        p = put_u64(p, (uint64_t) exptime);
        *p++ = ' ';
        p = put_u64(p, copy_len);
        p = put(p, " noreply\r\n", 10);
        if (ext) {
            s->ext[s->next++] = (ext_t){(size_t) (p - s->buf), copy, copy_len};
            s->ext_bytes += copy_len;
        } else {
            p = put(p, copy, copy_len);
        }
        p = put(p, "\r\n", 2);
    } else {
        p = put(p, "delete ", 7);
        p = put(p, key, key_len);
        p = put(p, " noreply\r\n", 10);
    }
    s->len = (size_t) (p - s->buf);
    s->jobs[s->njobs++] = j;
    return true;
}

/* Adds the command for one session's copy to its server's buffer (the
 * job's own copy, else one exported into `sb`), taking the job: the server
 * holds it until the command is sent, or it is freed (nothing to write) or
 * waits in `again` (the server is away). */
static void send_one(sn_tier_t *t, job_t *j, msgpack_sbuffer *sb)
{
    const char *id = j->id;
    size_t id_len = j->id_len;
    char key[KEY_MAX + 1];
    size_t key_len = tier_key(t, id, id_len, key);
    local_t l = {.encoded = true};
    bool found = true;
    const char *copy;
    size_t copy_len;
    if (j->len) {
        l.alive = j->alive;
        l.expired = !copy_expiry(j->alive, j->max_inactive, j->last_access_ms, t->now_ms,
                                 &l.exptime);
        copy = (const char *) job_copy(j);
        copy_len = j->len;
    } else {
        found = export_local(t, id, id_len, &l, sb);
        copy = sb->data;
        copy_len = sb->size;
    }
    /* a copy to drop: the session is gone here, was destroyed elsewhere (that
     * node keeps the tombstone), or has expired */
    bool drop = !found || l.expired || (!l.alive && !(j->bits & MARK_FULL));
    if (drop && !(j->bits & MARK_GONE) && !l.expired) {
        job_free(t, j);   /* evicted or collected here: the copy expires by itself */
        return;
    }
    if (!drop && !l.encoded) {
        failed(t, "encode", key, "out of memory");
        job_free(t, j);
        return;
    }
    server_t *s = &t->srv[t->nsrv > 1 ? memcached_generate_hash(t->mc, key, key_len) : 0];
    if (!srv_ready(t, s)) {
        count(&t->st.failures, 1);
        job_again(t, j);
        return;
    }
    /* a delete, or the whole state, tombstones included: a copy another
     * node left (it was down when the session was destroyed) must not bring
     * the session back at a bootstrap */
    if (!srv_add(s, j, key, key_len, drop ? NULL : copy, copy_len, l.exptime)) {
        failed(t, drop ? "delete" : "set", key, "out of memory");
        job_again(t, j);
        return;
    }
    if (drop)
        j->bits |= SENT_DELETE;
    else
        j->bits &= ~(uintptr_t) SENT_DELETE;
    if (s->len + s->ext_bytes >= SEND_AT)
        srv_send(t, s);
}

/* Writes the copies of every session in `round` (the queue as the thread
 * took it). Sessions whose command failed wait in `again`; the other jobs
 * are freed. False if any failed; past the stop deadline, the rest is
 * left out. */
static bool write_round(sn_tier_t *t, jobset_t *round)
{
    /* a server restarted since the last round closed our connection: a
     * new one, rather than a first send into a socket whose peer is gone */
    for (uint32_t i = 0; i < t->nsrv; i++)
        if (t->srv[i].fd >= 0 && !srv_drain(t, &t->srv[i]))
            srv_close(&t->srv[i]);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    t->now_ms = real_ms();
    size_t n = 0, left = round->n;
    bool late = false;
    for (size_t i = 0; i < round->cap; i++) {
        job_t *j = round->slot[i];
        if (!j)
            continue;
        round->slot[i] = NULL;
        if (!late && ++n % BATCH == 0) {
            t->now_ms = real_ms();
            pthread_mutex_lock(&t->lock);
            late = t->stop && mono_ms() >= t->stop_by_ms;
            pthread_mutex_unlock(&t->lock);
            if (late)
                t->left_out += left;
        }
        left--;
        if (late)
            job_free(t, j);
        else
            send_one(t, j, &sb);
    }
    for (uint32_t i = 0; i < t->nsrv; i++)
        if (t->srv[i].len)
            srv_send(t, &t->srv[i]);
    msgpack_sbuffer_destroy(&sb);
    return t->again.n == 0;
}

/* ------------------------------------------------------------ bootstrap */

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The keys of one server, from `lru_crawler metadump all` (memcached 1.5+):
 * one "key=K exp=... ..." line per item, K URL-encoded, then END. Only
 * ours are kept. The command goes alone in its packet, as memcached wants. */
static void server_keys(sn_tier_t *t, const server_t *s, zlistx_t *keys)
{
    const char *why;
    int fd = tcp_connect(s, &why);
    if (fd < 0) {
        tlog(t, SN_LOG_WARN, "tier bootstrap: cannot connect to %s: %s", s->name, why);
        return;
    }
    bool ok = true;
    static const char cmd[] = "lru_crawler metadump all\r\n";
    for (int attempt = 0; ok && attempt < 50; attempt++) {
        if (write(fd, cmd, sizeof cmd - 1) != (ssize_t) (sizeof cmd - 1)) {
            ok = false;
            break;
        }
        /* read the whole answer; parse once it ends */
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        bool busy = false, ended = false;
        while (buf && !ended) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 10000) <= 0)
                break;
            if (len + 4096 > cap) {
                if (cap >= DUMP_MAX)
                    break;
                char *grown = realloc(buf, cap * 2);
                if (!grown)
                    break;
                buf = grown;
                cap *= 2;
            }
            ssize_t got = read(fd, buf + len, cap - len - 1);
            if (got <= 0)
                break;
            len += (size_t) got;
            buf[len] = 0;
            busy = strncmp(buf, "BUSY", 4) == 0;
            ended = busy || strncmp(buf, "ERROR", 5) == 0 || strncmp(buf, "CLIENT_ERROR", 12) == 0 ||
                    (len >= 5 && strcmp(buf + len - 5, "END\r\n") == 0);
        }
        if (busy) {   /* the crawler is at work for someone else: again shortly */
            free(buf);
            usleep(100000);
            continue;
        }
        if (!buf || !ended || strncmp(buf, "ERROR", 5) == 0 || strncmp(buf, "CLIENT_ERROR", 12) == 0) {
            tlog(t, SN_LOG_WARN, "tier bootstrap: %s did not list its keys (%.60s)", s->name,
                 buf ? buf : "out of memory");
            free(buf);
            ok = false;
            break;
        }
        for (char *line = buf; line && *line;) {
            char *next = strchr(line, '\n');
            if (next)
                *next++ = 0;
            if (strncmp(line, "key=", 4) == 0) {
                char key[KEY_MAX + 1];
                size_t k = 0;
                for (char *p = line + 4; *p && *p != ' ' && *p != '\r' && k < KEY_MAX; p++) {
                    if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
                        key[k++] = (char) (hexval(p[1]) * 16 + hexval(p[2]));
                        p += 2;
                    } else {
                        key[k++] = *p;
                    }
                }
                key[k] = 0;
                if (strncmp(key, KEY_PREFIX, 3) == 0 || strncmp(key, "sn#", 3) == 0)
                    zlistx_add_end(keys, key);
            }
            line = next;
        }
        free(buf);
        break;
    }
    close(fd);
    if (!ok)
        tlog(t, SN_LOG_WARN, "tier bootstrap: cannot list the keys of %s", s->name);
}

static void load_keys(sn_tier_t *t, const char **keys, size_t *lens, size_t n, uint64_t *loaded)
{
    if (memcached_mget(t->mc, keys, lens, n) != MEMCACHED_SUCCESS)
        return;
    memcached_return_t rc;
    memcached_result_st *r;
    while ((r = memcached_fetch_result(t->mc, NULL, &rc))) {
        sn_wire_state_t ws;
        if (sn_wire_view_state(memcached_result_value(r), memcached_result_length(r), &ws) == 0) {
            if (sn_store_merge(t->store, ws.id, ws.id_len, &ws.state) >= 0 && ws.state.has_meta)
                (*loaded)++;
            sn_wire_state_release(&ws);
        }
        memcached_result_free(r);
    }
}

static void bootstrap(sn_tier_t *t)
{
    uint64_t start = mono_ms();
    zlistx_t *keys = zlistx_new();
    zlistx_set_duplicator(keys, (zlistx_duplicator_fn *) strdup);
    zlistx_set_destructor(keys, (zlistx_destructor_fn *) zstr_free);
    for (uint32_t i = 0; i < t->nsrv; i++)
        server_keys(t, &t->srv[i], keys);
    const char *batch[BOOT_BATCH];
    size_t lens[BOOT_BATCH], n = 0;
    uint64_t loaded = 0;
    for (char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        batch[n] = k;
        lens[n++] = strlen(k);
        if (n == BOOT_BATCH) {
            load_keys(t, batch, lens, n, &loaded);
            n = 0;
        }
    }
    if (n)
        load_keys(t, batch, lens, n, &loaded);
    uint64_t ms = mono_ms() - start;
    count(&t->st.boot_sessions, loaded);
    count(&t->st.boot_ms, ms);
    tlog(t, SN_LOG_INFO, "tier bootstrap: %llu sessions loaded from %zu copies on %u servers "
         "in %llu ms", (unsigned long long) loaded, zlistx_size(keys), t->nsrv,
         (unsigned long long) ms);
    zlistx_destroy(&keys);
}

/* ------------------------------------------------------------ the thread */

static void timed_wait(sn_tier_t *t, uint32_t ms)
{
    struct timespec ts = deadline(ms);
    pthread_cond_timedwait(&t->cond, &t->lock, &ts);
}

/* The thread's rounds are bulk work that no request waits for: as a
 * SCHED_BATCH thread it keeps its share of the CPU, but a round that comes
 * due does not preempt a worker, and with it every connection the worker
 * serves; it runs when a CPU is free or at the scheduler's next turn
 * (docs/BENCHMARKS.md, "The tier's thread does not preempt the workers").
 * A node whose threads run under a real-time policy keeps it for this one
 * too, lest they starve it. */
static void be_background(void)
{
    int policy;
    struct sched_param sp;
    if (pthread_getschedparam(pthread_self(), &policy, &sp) == 0 && policy == SCHED_OTHER) {
        sp.sched_priority = 0;
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    }
}

/* Every flush_ms the thread takes the whole queue, swapping in an empty
 * table, and writes it: the writers' lock is held for a swap, never for
 * the writing, and a round carries everything that came in its interval. */
static void *tier_thread(void *arg)
{
    sn_tier_t *t = arg;
    pthread_setname_np(pthread_self(), "sn-tier");
    be_background();
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->boot_wanted && !t->boot_done) {
            pthread_mutex_unlock(&t->lock);
            bootstrap(t);
            pthread_mutex_lock(&t->lock);
            t->boot_done = true;
            pthread_cond_broadcast(&t->done_cond);
            continue;
        }
        if (t->stop && (t->dirty.n == 0 || mono_ms() >= t->stop_by_ms))
            break;
        if (!t->stop) {
            timed_wait(t, t->opt.flush_ms);
            if (t->stop || t->boot_wanted != t->boot_done)
                continue;
        }
        if (t->dirty.n == 0)
            continue;
        jobset_t round = t->dirty;
        t->dirty = t->spare;
        t->spare = (jobset_t){0};
        t->inflight = round.n;
        pthread_mutex_unlock(&t->lock);
        bool ok = write_round(t, &round);
        settle(t);
        jobset_clear(t, &round);   /* emptied by the round: shrinks it if need be */
        pthread_mutex_lock(&t->lock);
        t->spare = round;
        if (!ok)   /* a server is away: not a spin on it, stopping or not */
            timed_wait(t, FAIL_PAUSE_MS);
    }
    size_t left = t->dirty.n + t->left_out;
    pthread_mutex_unlock(&t->lock);
    if (left)
        tlog(t, SN_LOG_WARN, "tier: stopping with %zu sessions not backed up", left);
    return NULL;
}

/* ------------------------------------------------------------ read-through */

int sn_tier_fetch(sn_tier_t *t, const void *id, size_t id_len, const uint64_t *nodes, size_t n)
{
    if (!t || !t->pool || id_len == 0 || id_len > SN_ID_MAX)
        return 0;
    count(&t->st.reads, 1);
    char sid[SN_ID_MAX + 1];
    memcpy(sid, id, id_len);
    sid[id_len] = 0;
    /* this node's copy, then those of the nodes that wrote here last */
    char (*keys)[KEY_MAX + 1] = malloc((FETCH_NODES_MAX + 1) * sizeof *keys);
    if (!keys)
        return SN_ENOMEM;
    const char *kp[FETCH_NODES_MAX + 1];
    size_t kl[FETCH_NODES_MAX + 1], nk = 0;
    kl[nk] = node_key(t->opt.node_id, sid, id_len, keys[nk]);
    kp[nk] = keys[nk];
    nk++;
    for (size_t i = 0; i < n && nk <= FETCH_NODES_MAX; i++) {
        if (nodes[i] == t->opt.node_id)
            continue;
        kl[nk] = node_key(nodes[i], sid, id_len, keys[nk]);
        kp[nk] = keys[nk];
        nk++;
    }
    struct timespec wait = {1, 0};
    memcached_return_t rc;
    memcached_st *mc = memcached_pool_fetch(t->pool, &wait, &rc);
    if (mc) {
        rc = memcached_mget(mc, kp, kl, nk);
        memcached_result_st *r;
        while (rc == MEMCACHED_SUCCESS && (r = memcached_fetch_result(mc, NULL, &rc))) {
            sn_wire_state_t ws;
            if (sn_wire_view_state(memcached_result_value(r), memcached_result_length(r), &ws) ==
                0) {
                /* a hashed key ("sn#") names the id only by its hash */
                if (ws.id_len == id_len && memcmp(ws.id, id, id_len) == 0)
                    sn_store_merge(t->store, ws.id, ws.id_len, &ws.state);
                sn_wire_state_release(&ws);
            }
            memcached_result_free(r);
        }
        memcached_pool_release(t->pool, mc);
    }
    free(keys);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND) {
        count(&t->st.failures, 1);
        uint64_t now = mono_ms(), last = atomic_load(&t->read_fail_log_ms);
        if (now - last >= 1000 && atomic_compare_exchange_strong(&t->read_fail_log_ms, &last, now))
            tlog(t, SN_LOG_WARN, "tier: read-through of a session: %s",
                 mc ? memcached_strerror(NULL, rc) : "no connection free");
    }
    if (!sn_store_exists(t->store, id, id_len))
        return 0;
    count(&t->st.read_hits, 1);
    return 1;
}

/* ------------------------------------------------------------ lifecycle */

/* The writers, one a server of mc, in its order (memcached_generate_hash
 * gives a key's server as a position in it). */
static bool servers_new(sn_tier_t *t)
{
    t->nsrv = memcached_server_count(t->mc);
    t->srv = calloc(t->nsrv, sizeof *t->srv);
    if (!t->srv)
        return false;
    for (uint32_t i = 0; i < t->nsrv; i++)
        t->srv[i].fd = -1;
    for (uint32_t i = 0; i < t->nsrv; i++) {
        const memcached_instance_st *m = memcached_server_instance_by_position(t->mc, i);
        server_t *s = &t->srv[i];
        s->host = strdup(memcached_server_name(m));
        snprintf(s->port, sizeof s->port, "%u", (unsigned) memcached_server_port(m));
        if (!s->host || asprintf(&s->name, "%s:%s", s->host, s->port) < 0) {
            s->name = NULL;
            return false;
        }
    }
    return true;
}

static void servers_free(sn_tier_t *t)
{
    for (uint32_t i = 0; t->srv && i < t->nsrv; i++) {
        server_t *s = &t->srv[i];
        srv_close(s);
        for (size_t k = 0; k < s->njobs; k++)   /* none, after a round */
            job_free(t, s->jobs[k]);
        free(s->jobs);
        free(s->ext);
        free(s->buf);
        free(s->host);
        free(s->name);
    }
    free(t->srv);
    t->srv = NULL;
}

/* A handle on the servers: consistent hashing, so that a server that comes
 * or goes moves only its share of the keys. A server that is down is not
 * taken out of the ring: its sessions wait in the queue for it rather than
 * land elsewhere. NULL on a bad list. */
static memcached_st *mc_new(const char *servers, int32_t poll_ms)
{
    memcached_st *mc = memcached_create(NULL);
    if (!mc)
        return NULL;
    memcached_server_list_st list = memcached_servers_parse(servers);
    if (!list || memcached_server_push(mc, list) != MEMCACHED_SUCCESS) {
        memcached_server_list_free(list);
        memcached_free(mc);
        return NULL;
    }
    memcached_server_list_free(list);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 500);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, (uint64_t) poll_ms);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    return mc;
}

sn_tier_t *sn_tier_new(const sn_tier_options_t *o, sn_store_t *store)
{
    if (!o || !o->servers || !store)
        return NULL;
    sn_tier_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->opt = *o;
    if (!t->opt.queue_max)
        t->opt.queue_max = QUEUE_MAX_DEFAULT;
    if (!t->opt.flush_ms)
        t->opt.flush_ms = FLUSH_MS_DEFAULT;
    if (!t->opt.queue_bytes)
        t->opt.queue_bytes = QUEUE_BYTES_DEFAULT;
    t->store = store;
    char prefix[KEY_MAX + 1];
    node_key(t->opt.node_id, "", 0, prefix);
    memcpy(t->key_prefix, prefix, KEY_OVERHEAD);
    t->servers = strdup(o->servers);
    t->opt.servers = t->servers;
    if (!t->servers)
        goto fail;
    t->mc = mc_new(t->servers, 1000);
    if (!t->mc) {
        tlog(t, SN_LOG_ERROR, "tier: bad server list '%s' (want HOST:PORT[,HOST:PORT...])",
             o->servers);
        goto fail;
    }
    if (!servers_new(t))
        goto fail;
    if (o->read_through) {
        /* a read-through holds up the reader's thread, and a worker's
         * other connections with it: a shorter wait for an answer */
        t->read_mc = mc_new(t->servers, 250);
        t->pool = t->read_mc ? memcached_pool_create(t->read_mc, 1, POOL_MAX) : NULL;
        if (!t->pool)
            goto fail;
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->pad_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_cond_init(&t->done_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, tier_thread, t) != 0)
        goto fail_sync;
    t->started = true;
    tlog(t, SN_LOG_INFO, "tier: backing sessions up to %s (queue up to %zu sessions)",
         o->servers, t->opt.queue_max);
    return t;
fail_sync:
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->pad_lock);
    pthread_cond_destroy(&t->cond);
    pthread_cond_destroy(&t->done_cond);
fail:
    if (t->pool)
        memcached_pool_destroy(t->pool);
    if (t->read_mc)
        memcached_free(t->read_mc);
    servers_free(t);
    if (t->mc)
        memcached_free(t->mc);
    free(t->servers);
    free(t);
    return NULL;
}

void sn_tier_destroy(sn_tier_t **self_p, uint32_t timeout_ms)
{
    if (!self_p || !*self_p)
        return;
    sn_tier_t *t = *self_p;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    t->stop_by_ms = mono_ms() + timeout_ms;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    if (t->pool)
        memcached_pool_destroy(t->pool);
    if (t->read_mc)
        memcached_free(t->read_mc);
    servers_free(t);
    memcached_free(t->mc);
    jobset_clear(t, &t->dirty);   /* what the stop deadline cut off */
    free(t->dirty.slot);
    free(t->spare.slot);
    free(t->again.slot);
    /* every job is gone: each pad is the current one or an empty one (the
     * byte count goes with the tier) */
    free(t->pad);
    for (pad_t *p = t->empty, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->pad_lock);
    pthread_cond_destroy(&t->cond);
    pthread_cond_destroy(&t->done_cond);
    free(t->servers);
    free(t);
    *self_p = NULL;
}

void sn_tier_bootstrap(sn_tier_t *t)
{
    pthread_mutex_lock(&t->lock);
    t->boot_wanted = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

bool sn_tier_bootstrap_done(sn_tier_t *t, uint32_t timeout_ms)
{
    struct timespec ts = deadline(timeout_ms);
    pthread_mutex_lock(&t->lock);
    while (!t->boot_done && timeout_ms &&
           pthread_cond_timedwait(&t->done_cond, &t->lock, &ts) == 0) {
    }
    bool done = t->boot_done;
    pthread_mutex_unlock(&t->lock);
    return done;
}

bool sn_tier_bootstrap_wanted(sn_tier_t *t)
{
    pthread_mutex_lock(&t->lock);
    bool wanted = t->boot_wanted;
    pthread_mutex_unlock(&t->lock);
    return wanted;
}

void sn_tier_stats(sn_tier_t *t, sn_node_stats_t *s)
{
    pthread_mutex_lock(&t->lock);
    s->tier_queue = t->dirty.n + t->inflight;
    pthread_mutex_unlock(&t->lock);
    s->tier_queue_bytes = atomic_load_explicit(&t->queued_bytes, memory_order_relaxed);
#define LOAD(f) s->tier_##f = atomic_load_explicit(&t->st.f, memory_order_relaxed)
    LOAD(writes);
    LOAD(touches);
    LOAD(deletes);
    LOAD(failures);
    LOAD(dropped);
    LOAD(boot_sessions);
    LOAD(boot_ms);
    LOAD(reads);
    LOAD(read_hits);
#undef LOAD
}
