/*
 * sn_tier.c - the memcached tier. See sn_tier.h for what it does; this
 * file's comments say why it does it so.
 */
#define _GNU_SOURCE
#include "sn_tier.h"

#include <czmq.h>
#include <errno.h>
#include <libmemcached/memcached.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sn_log.h"
#include "sn_wire.h"

#define QUEUE_MAX_DEFAULT 100000
#define FLUSH_MS_DEFAULT 20
#define BATCH 256                   /* sessions per multi-get and write round */
#define BOOT_BATCH 1000             /* keys per multi-get while bootstrapping */
#define FAIL_PAUSE_MS 200           /* after a round with failures */
#define KEY_PREFIX "sn:"
#define KEY_OVERHEAD 20             /* "sn:" + 16 hex digits of the node id + ":" */
#define TOMB_TTL MONTH_S            /* a destroyed session's tombstone copy */
#define KEY_MAX 250                 /* memcached's */
#define MONTH_S (30u * 86400u)      /* memcached reads a longer expiry as a date */
#define DUMP_MAX (1u << 30)         /* a metadump longer than this is cut short */

enum { MARK_FULL = 1, MARK_TOUCH = 2, MARK_GONE = 4 };

struct sn_tier {
    sn_tier_options_t opt;
    char *servers;
    sn_store_t *store;
    memcached_st *mc;               /* the thread's */
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;           /* dirty, flags below */
    pthread_cond_t cond;            /* the thread waits for work here */
    pthread_cond_t done_cond;       /* bootstrap callers wait here */
    zhashx_t *dirty;                /* session id -> MARK_* bits */
    size_t inflight;                /* taken off `dirty`, being written */
    bool stop, boot_wanted, boot_done;
    uint64_t stop_by_ms;
    uint64_t drop_log_ms, drops_unlogged;

    uint64_t fail_log_ms, fails_unlogged;   /* thread-owned */

    struct {
        _Atomic uint64_t writes, touches, deletes, failures, dropped, boot_sessions, boot_ms;
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

/* This node's key for its copy of a session: "sn:" NODE ":" ID, or, for an
 * id too long for that, "sn#" NODE ":" and a hash of the id (the value
 * carries the id either way). */
static size_t tier_key(const sn_tier_t *t, const char *id, size_t id_len, char *key)
{
    static const char hex[] = "0123456789abcdef";
    char node[17];
    for (int i = 0; i < 16; i++)
        node[i] = hex[(t->opt.node_id >> (60 - 4 * i)) & 15];
    node[16] = 0;
    if (id_len + KEY_OVERHEAD <= KEY_MAX) {
        memcpy(key, KEY_PREFIX, 3);
        memcpy(key + 3, node, 16);
        key[19] = ':';
        memcpy(key + 20, id, id_len);
        key[20 + id_len] = 0;
        return 20 + id_len;
    }
    uint64_t h = 1469598103934665603ull;    /* FNV-1a */
    for (size_t i = 0; i < id_len; i++)
        h = (h ^ (uint8_t) id[i]) * 1099511628211ull;
    return (size_t) snprintf(key, KEY_MAX + 1, "sn#%s:%016llx", node, (unsigned long long) h);
}

/* ------------------------------------------------------------ marking */

static void mark(sn_tier_t *t, const void *id_bytes, size_t id_len, uintptr_t bit)
{
    /* a valid id holds no NUL (no control characters): a C string */
    char id[SN_ID_MAX + 1];
    if (id_len > SN_ID_MAX)
        return;
    memcpy(id, id_bytes, id_len);
    id[id_len] = 0;
    pthread_mutex_lock(&t->lock);
    void *had = zhashx_lookup(t->dirty, id);
    if (had) {
        zhashx_update(t->dirty, id, (void *) ((uintptr_t) had | bit));
    } else if (zhashx_size(t->dirty) + t->inflight < t->opt.queue_max) {
        zhashx_insert(t->dirty, id, (void *) bit);
        if (zhashx_size(t->dirty) >= BATCH)
            pthread_cond_signal(&t->cond);
    } else {
        count(&t->st.dropped, 1);
        uint64_t now = mono_ms();
        if (now - t->drop_log_ms >= 1000) {
            tlog(t, SN_LOG_WARN,
                 "tier queue full (%zu sessions): a change of one session not backed up "
                 "(%llu more since the last such line); is a memcached server down?",
                 zhashx_size(t->dirty), (unsigned long long) t->drops_unlogged);
            t->drop_log_ms = now;
            t->drops_unlogged = 0;
        } else {
            t->drops_unlogged++;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

void sn_tier_mark(sn_tier_t *t, const sn_delta_t *d)
{
    mark(t, d->id, d->id_len, d->kind == SN_DELTA_TOUCH ? MARK_TOUCH : MARK_FULL);
}

void sn_tier_mark_gone(sn_tier_t *t, const void *id, size_t id_len)
{
    mark(t, id, id_len, MARK_GONE);
}

/* A session of the batch in flight is done with: written, or back in the
 * queue after a failed or contended write (`bits` != 0). It moves from
 * `inflight` to `dirty`, so the queue's bound holds all along. */
static void settle(sn_tier_t *t, const char *id, uintptr_t bits)
{
    pthread_mutex_lock(&t->lock);
    t->inflight--;
    if (bits) {
        void *had = zhashx_lookup(t->dirty, id);
        if (had)
            zhashx_update(t->dirty, id, (void *) ((uintptr_t) had | bits));
        else if (zhashx_size(t->dirty) + t->inflight < t->opt.queue_max)
            zhashx_insert(t->dirty, id, (void *) bits);
        else
            count(&t->st.dropped, 1);
    }
    pthread_mutex_unlock(&t->lock);
}

/* ------------------------------------------------------------ writing */

typedef struct {
    uint8_t *buf;               /* the encoded state; malloc'd */
    size_t len;
    bool alive;
    bool expired;
    time_t exptime;             /* memcached's expiry for it */
} local_t;

static void export_cb(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    local_t *l = arg;
    l->alive = st->has_meta;
    l->expired = false;
    l->exptime = 0;
    if (st->has_meta && st->max_inactive) {
        uint64_t now = real_ms(), life = (uint64_t) st->max_inactive * 1000u;
        uint64_t idle = now > st->last_access_ms ? now - st->last_access_ms : 0;
        if (idle >= life) {
            l->expired = true;
        } else {
            uint64_t left_s = (life - idle + 999) / 1000 + 1;
            l->exptime = left_s > MONTH_S ? (time_t) (now / 1000 + left_s) : (time_t) left_s;
        }
    }
    if (!st->has_meta)
        l->exptime = TOMB_TTL;
    if (!l->expired && sn_wire_encode_state(id, id_len, st, &l->buf, &l->len))
        l->buf = NULL;
}

static bool export_local(sn_tier_t *t, const char *id, size_t id_len, local_t *l)
{
    memset(l, 0, sizeof *l);
    return sn_store_export(t->store, id, id_len, export_cb, l) == 0;
}

static void failed(sn_tier_t *t, const char *what, const char *key, memcached_return_t rc)
{
    count(&t->st.failures, 1);
    uint64_t now = mono_ms();
    if (now - t->fail_log_ms >= 1000) {
        tlog(t, SN_LOG_WARN, "tier: %s %s: %s (%llu more failures since the last such line)",
             what, key, memcached_strerror(t->mc, rc), (unsigned long long) t->fails_unlogged);
        t->fail_log_ms = now;
        t->fails_unlogged = 0;
    } else {
        t->fails_unlogged++;
    }
}

typedef struct {
    char *id;
    uintptr_t bits;
} item_t;

static bool sent_ok(memcached_return_t rc)
{
    return rc == MEMCACHED_SUCCESS || rc == MEMCACHED_BUFFERED;
}

/* Queues the command for one session's copy. Returns the marks to queue
 * it again with after a failure, else 0. */
static uintptr_t send_one(sn_tier_t *t, const item_t *it)
{
    size_t id_len = strlen(it->id);
    char key[KEY_MAX + 1];
    size_t key_len = tier_key(t, it->id, id_len, key);
    local_t l;
    bool found = export_local(t, it->id, id_len, &l);
    memcached_return_t rc;
    const char *what;
    /* a copy to drop: the session is gone here, was destroyed elsewhere (that
     * node keeps the tombstone), or has expired */
    bool drop = !found || l.expired || (!l.alive && !(it->bits & MARK_FULL));
    if (drop) {
        free(l.buf);
        if (!(it->bits & MARK_GONE) && !l.expired)
            return 0;   /* evicted or collected here: the copy expires by itself */
        what = "delete";
        rc = memcached_delete(t->mc, key, key_len, 0);
        if (sent_ok(rc))
            count(&t->st.deletes, 1);
    } else if (!l.buf) {
        failed(t, "encode", key, MEMCACHED_MEMORY_ALLOCATION_FAILURE);
        return 0;
    } else {
        /* the whole state, tombstones included: a copy another node left
         * (it was down when the session was destroyed) must not bring the
         * session back at a bootstrap */
        what = "set";
        rc = memcached_set(t->mc, key, key_len, (const char *) l.buf, l.len, l.exptime, 0);
        free(l.buf);
        if (sent_ok(rc))
            count(it->bits & MARK_FULL ? &t->st.writes : &t->st.touches, 1);
    }
    if (sent_ok(rc))
        return 0;
    failed(t, what, key, rc);
    return it->bits;
}

/* Takes up to BATCH sessions off the queue and writes their copies, the
 * commands pipelined without replies: a reply per command costs a round
 * trip and its system calls, more than the session's own write here.
 * False if a command failed (its session is queued again). */
static bool write_batch(sn_tier_t *t)
{
    item_t items[BATCH];
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (void *v = zhashx_first(t->dirty); v && n < BATCH; v = zhashx_next(t->dirty)) {
        const char *id = zhashx_cursor(t->dirty);
        items[n].id = strdup(id);
        items[n].bits = (uintptr_t) v;
        if (items[n].id)
            n++;
    }
    for (size_t i = 0; i < n; i++)
        zhashx_delete(t->dirty, items[i].id);
    t->inflight = n;
    pthread_mutex_unlock(&t->lock);
    uint64_t failures = atomic_load(&t->st.failures);
    for (size_t i = 0; i < n; i++) {
        settle(t, items[i].id, send_one(t, &items[i]));
        free(items[i].id);
    }
    memcached_flush_buffers(t->mc);
    return atomic_load(&t->st.failures) == failures;
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
static void server_keys(sn_tier_t *t, const char *host, in_port_t port, zlistx_t *keys)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", (unsigned) port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, portstr, &hints, &res) != 0) {
        tlog(t, SN_LOG_WARN, "tier bootstrap: cannot resolve %s", host);
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
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
            tlog(t, SN_LOG_WARN, "tier bootstrap: %s:%u did not list its keys (%.60s)", host,
                 (unsigned) port, buf ? buf : "out of memory");
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
    if (fd >= 0)
        close(fd);
    if (!ok)
        tlog(t, SN_LOG_WARN, "tier bootstrap: cannot list the keys of %s:%u", host,
             (unsigned) port);
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
    uint32_t ns = memcached_server_count(t->mc);
    for (uint32_t i = 0; i < ns; i++) {
        const memcached_instance_st *s = memcached_server_instance_by_position(t->mc, i);
        server_keys(t, memcached_server_name(s), memcached_server_port(s), keys);
    }
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
         "in %llu ms", (unsigned long long) loaded, zlistx_size(keys), ns,
         (unsigned long long) ms);
    zlistx_destroy(&keys);
}

/* ------------------------------------------------------------ the thread */

static void *tier_thread(void *arg)
{
    sn_tier_t *t = arg;
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
        bool empty = zhashx_size(t->dirty) == 0;
        if (t->stop && (empty || mono_ms() >= t->stop_by_ms))
            break;
        if (empty || (!t->stop && zhashx_size(t->dirty) < BATCH)) {
            /* batch what comes within flush_ms */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t) ts.tv_nsec + (uint64_t) t->opt.flush_ms * 1000000u;
            ts.tv_sec += (time_t) (ns / 1000000000u);
            ts.tv_nsec = (long) (ns % 1000000000u);
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            if (zhashx_size(t->dirty) == 0 || t->boot_wanted != t->boot_done)
                continue;
        }
        pthread_mutex_unlock(&t->lock);
        bool ok = write_batch(t);
        pthread_mutex_lock(&t->lock);
        if (!ok && !t->stop) {
            /* a server is away: wait a little rather than spin on it */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += FAIL_PAUSE_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        }
    }
    size_t left = zhashx_size(t->dirty);
    pthread_mutex_unlock(&t->lock);
    if (left)
        tlog(t, SN_LOG_WARN, "tier: stopping with %zu sessions not backed up", left);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

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
    t->store = store;
    t->servers = strdup(o->servers);
    t->opt.servers = t->servers;
    t->dirty = zhashx_new();
    t->mc = memcached_create(NULL);
    if (!t->servers || !t->dirty || !t->mc)
        goto fail;
    memcached_server_list_st list = memcached_servers_parse(o->servers);
    if (!list || memcached_server_push(t->mc, list) != MEMCACHED_SUCCESS) {
        memcached_server_list_free(list);
        tlog(t, SN_LOG_ERROR, "tier: bad server list '%s' (want HOST:PORT[,HOST:PORT...])",
             o->servers);
        goto fail;
    }
    memcached_server_list_free(list);
    /* consistent hashing: a server that comes or goes moves only its share
     * of the keys. A server that is down is not taken out of the ring: its
     * sessions wait in the queue for it rather than land elsewhere. */
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    /* writes go out without replies, batched (write_batch) */
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 500);
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 1000);
    memcached_behavior_set(t->mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    pthread_mutex_init(&t->lock, NULL);
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
    pthread_cond_destroy(&t->cond);
    pthread_cond_destroy(&t->done_cond);
fail:
    if (t->mc)
        memcached_free(t->mc);
    zhashx_destroy(&t->dirty);
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
    memcached_free(t->mc);
    zhashx_destroy(&t->dirty);
    pthread_mutex_destroy(&t->lock);
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
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t) ts.tv_nsec + (uint64_t) timeout_ms * 1000000u;
    ts.tv_sec += (time_t) (ns / 1000000000u);
    ts.tv_nsec = (long) (ns % 1000000000u);
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
    s->tier_queue = zhashx_size(t->dirty) + t->inflight;
    pthread_mutex_unlock(&t->lock);
#define LOAD(f) s->tier_##f = atomic_load_explicit(&t->st.f, memory_order_relaxed)
    LOAD(writes);
    LOAD(touches);
    LOAD(deletes);
    LOAD(failures);
    LOAD(dropped);
    LOAD(boot_sessions);
    LOAD(boot_ms);
#undef LOAD
}
