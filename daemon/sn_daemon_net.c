/*
 * sn_daemon_net.c - the daemon's client side: one accepting thread and N
 * worker threads, memcached's shape.
 *
 * The main thread's event loop owns the listening socket. Each accepted
 * socket goes, round-robin, to a worker: it is appended to the worker's
 * locked queue and the worker's "notify" event is activated, which wakes
 * the worker's own event_base (libevent's thread support makes
 * event_active safe from another thread). A worker owns its connections
 * for their whole life, so a connection is never touched by two threads
 * and needs no lock.
 *
 * A connection is a socket with two evbuffers and two events. When input
 * arrives the worker reads it (recv into reserved buffer space, no
 * FIONREAD probe), the engine (mc_conn_process) executes every whole
 * request the input holds and appends the replies to the output, and the
 * worker writes them at once. The write event is armed only when the
 * socket could not take everything, so a request costs one read and one
 * write and never changes what epoll watches. (With libevent's
 * bufferevents each reply armed and disarmed the write event: two
 * epoll_ctl calls, a FIONREAD and an extra loop turn per request, and on
 * our VMs, where a system call is dear, 0.76x memcached's throughput
 * under memcaslap instead of 1.0x; docs/BENCHMARKS.md.)
 * Memory stays bounded both ways:
 *   - input: reading stops once the input holds one largest value plus
 *     slack (the engine consumes or discards everything else as it
 *     arrives);
 *   - output: the engine stops executing requests once the output holds
 *     more than MC_OUT_HIGH (a client pipelining reads of large values and
 *     not reading the replies); the connection then stops reading until the
 *     output drains below OUT_LOW, and resumes with the requests it had
 *     already buffered.
 * A reply of MC_CLOSE (quit, or input memcached itself closes on) stops
 * reading and closes once the output is flushed; an end of input does the
 * same, so replies to requests sent just before a half-close still go out.
 *
 * Too many connections: past --max-connections a new socket is closed at
 * once and counted (stats: rejected_connections), with at most one log
 * line a second. Running out of file descriptors pauses accepting for a
 * moment instead of spinning on accept(2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "sn_daemon.h"

#define OUT_HIGH MC_OUT_HIGH   /* where the engine stops too */
#define OUT_LOW (1u << 20)
#define IN_SLACK (64u << 10)
#define READ_CHUNK 16384
#define LISTEN_BACKLOG 1024

typedef struct worker worker_t;

typedef struct conn {
    struct conn *prev, *next;   /* the worker's list, for shutdown */
    worker_t *w;
    int fd;
    struct event *rd, *wr;      /* wr is added only while output is pending */
    struct evbuffer *in, *out;
    mc_conn_t *mc;
    bool writing;               /* wr is added */
    bool closing;               /* close once the output is flushed */
    bool paused;                /* reading stopped until the output drains */
} conn_t;

struct worker {
    sd_net_t *net;
    unsigned index;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct event *notify;
    pthread_mutex_t lock;       /* guards fds, nfds, cap, stop */
    int *fds;
    size_t nfds, cap;
    bool stop;
    conn_t *conns;              /* owned by the worker thread */
};

struct sd_net {
    struct event_base *base;    /* the main thread's */
    mc_server_t *server;
    int fd;                     /* bound, not yet handed to the listener */
    char addr[32];
    struct evconnlistener *listener;
    struct event *resume;       /* re-enables accepting after EMFILE */
    worker_t *workers;
    unsigned nworkers, next;
    uint32_t max_connections;
    size_t in_high;
    int verbose;
    _Atomic uint32_t open;      /* connections accepted and not yet closed */
    time_t last_reject_log;
    uint64_t rejects_unlogged;
    time_t last_accept_err_log;
};

/* ------------------------------------------------------------ connections */

static void conn_free(conn_t *c)
{
    worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->rd)
        event_free(c->rd);
    if (c->wr)
        event_free(c->wr);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    mc_conn_free(c->mc);
    free(c);
    mc_server_conn_closed(w->net->server);
    atomic_fetch_sub(&w->net->open, 1);
    if (w->net->verbose >= 2)
        sd_log(SD_LOG_DEBUG, "connection closed (worker %u)", w->index);
}

static void conn_error(conn_t *c, const char *what, int err)
{
    if (c->w->net->verbose >= 2)
        sd_log(SD_LOG_DEBUG, "connection %s: %s", what, evutil_socket_error_to_string(err));
    conn_free(c);
}

/* Writes what the output holds, as far as the socket takes it; the write
 * event is armed only while something is left. Returns false if c was
 * freed. */
static bool conn_flush(conn_t *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0) {
            int err = EVUTIL_SOCKET_ERROR();
            if (err == EINTR)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                break;
            conn_error(c, "write error", err);
            return false;
        }
    }
    bool pending = evbuffer_get_length(c->out) > 0;
    if (!pending && c->closing) {
        conn_free(c);
        return false;
    }
    if (pending != c->writing) {
        if (pending)
            event_add(c->wr, NULL);
        else
            event_del(c->wr);
        c->writing = pending;
    }
    return true;
}

/* Stops reading; the connection closes once its output is written. */
static void conn_close_after_flush(conn_t *c)
{
    c->closing = true;
    event_del(c->rd);
}

/* Runs the engine on what the input holds and writes the replies at
 * once: a request costs one read and one write, with no change to what
 * epoll watches unless the socket is full. A connection paused for its
 * output resumes here once the output is down to OUT_LOW, with the
 * requests it had buffered, whether the write event drained it or the
 * socket took it all at once (then no write event comes). Returns false
 * if c was freed. */
static bool conn_run(conn_t *c)
{
    for (;;) {
        if (!c->closing && !c->paused && evbuffer_get_length(c->in) > 0) {
            if (mc_conn_process(c->mc, c->in, c->out) == MC_CLOSE) {
                conn_close_after_flush(c);
            } else if (evbuffer_get_length(c->out) > OUT_HIGH) {
                c->paused = true;
                event_del(c->rd);
            }
        }
        if (!conn_flush(c))
            return false;
        if (!c->paused || c->closing || evbuffer_get_length(c->out) > OUT_LOW)
            return true;
        c->paused = false;
        event_add(c->rd, NULL);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void) what;
    conn_t *c = arg;
    size_t high = c->w->net->in_high;
    bool eof = false;
    /* Until the socket is drained or the input holds as much as the
     * largest request may need: past that the engine is consuming or
     * discarding, and the rest waits in the socket. */
    while (evbuffer_get_length(c->in) < high) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, READ_CHUNK, &v, 1) < 1) {
            conn_error(c, "out of memory", ENOMEM);
            return;
        }
        ssize_t n = recv(fd, v.iov_base, v.iov_len, 0);
        if (n > 0) {
            v.iov_len = (size_t) n;
            evbuffer_commit_space(c->in, &v, 1);
            if ((size_t) n < READ_CHUNK)
                break;  /* the socket is most likely empty: skip the EAGAIN */
            continue;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        int err = EVUTIL_SOCKET_ERROR();
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            break;
        conn_error(c, "read error", err);
        return;
    }
    /* replies to requests sent just before a half-close still go out */
    if (eof && !c->closing) {
        if (!conn_run(c))
            return;
        if (!c->closing)
            conn_close_after_flush(c);
        conn_flush(c);
        return;
    }
    conn_run(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    conn_t *c = arg;
    /* a paused connection's buffered requests get no new read event */
    conn_run(c);
}

static void conn_open(worker_t *w, int fd)
{
    sd_net_t *net = w->net;
    conn_t *c = calloc(1, sizeof *c);
    if (c) {
        c->fd = fd;
        c->w = w;
        c->in = evbuffer_new();
        c->out = evbuffer_new();
        c->rd = event_new(w->base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->wr = event_new(w->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
        c->mc = mc_conn_new(net->server);
    }
    if (!c || !c->in || !c->out || !c->rd || !c->wr || !c->mc || event_add(c->rd, NULL) != 0) {
        sd_log(SD_LOG_ERROR, "out of memory for a new connection: closing it");
        if (c) {
            c->next = w->conns;   /* conn_free unlinks it */
            if (w->conns)
                w->conns->prev = c;
            w->conns = c;
            conn_free(c);
        } else {
            evutil_closesocket(fd);
            mc_server_conn_closed(net->server);
            atomic_fetch_sub(&net->open, 1);
        }
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    if (net->verbose >= 2)
        sd_log(SD_LOG_DEBUG, "connection accepted (worker %u)", w->index);
}

/* ------------------------------------------------------------ workers */

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    worker_t *w = arg;
    pthread_mutex_lock(&w->lock);
    int *fds = w->fds;
    size_t n = w->nfds;
    bool stop = w->stop;
    w->fds = NULL;
    w->nfds = w->cap = 0;
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < n; i++) {
        if (stop) {
            evutil_closesocket(fds[i]);
            mc_server_conn_closed(w->net->server);
            atomic_fetch_sub(&w->net->open, 1);
        } else {
            conn_open(w, fds[i]);
        }
    }
    free(fds);
    if (stop) {
        while (w->conns)
            conn_free(w->conns);
        event_base_loopbreak(w->base);
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof name, "sn-worker-%u", w->index);
    pthread_setname_np(pthread_self(), name);   /* for top -H and perf */
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Hands fd to a worker; false (fd untouched) if out of memory. */
static bool worker_push(worker_t *w, int fd)
{
    pthread_mutex_lock(&w->lock);
    if (w->nfds == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        int *grown = realloc(w->fds, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&w->lock);
            return false;
        }
        w->fds = grown;
        w->cap = cap;
    }
    w->fds[w->nfds++] = fd;
    pthread_mutex_unlock(&w->lock);
    event_active(w->notify, EV_READ, 0);
    return true;
}

/* ------------------------------------------------------------ accepting */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void) l;
    (void) sa;
    (void) salen;
    sd_net_t *net = arg;
    if (atomic_load(&net->open) >= net->max_connections) {
        evutil_closesocket(fd);
        mc_server_conn_rejected(net->server);
        net->rejects_unlogged++;
        time_t now = time(NULL);
        if (now != net->last_reject_log) {
            sd_log(SD_LOG_WARN,
                   "too many connections (--max-connections %u): closed %llu new one%s",
                   net->max_connections, (unsigned long long) net->rejects_unlogged,
                   net->rejects_unlogged == 1 ? "" : "s");
            net->last_reject_log = now;
            net->rejects_unlogged = 0;
        }
        return;
    }
    int one = 1;
    /* replies are whole and small: Nagle would only delay them */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&net->open, 1);
    mc_server_conn_opened(net->server);
    worker_t *w = &net->workers[net->next];
    net->next = (net->next + 1) % net->nworkers;
    if (!worker_push(w, fd)) {
        sd_log(SD_LOG_ERROR, "out of memory handing a connection to a worker: closing it");
        evutil_closesocket(fd);
        mc_server_conn_closed(net->server);
        atomic_fetch_sub(&net->open, 1);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    sd_net_t *net = arg;
    if (net->listener)
        evconnlistener_enable(net->listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    sd_net_t *net = arg;
    int err = EVUTIL_SOCKET_ERROR();
    time_t now = time(NULL);
    if (now != net->last_accept_err_log) {
        sd_log(SD_LOG_WARN, "accept on %s: %s%s", net->addr, evutil_socket_error_to_string(err),
               err == EMFILE || err == ENFILE ? " (out of file descriptors: pausing accepts)"
                                              : "");
        net->last_accept_err_log = now;
    }
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* the pending connection stays queued: retry shortly, not at once */
        evconnlistener_disable(l);
        struct timeval tv = {0, 100 * 1000};
        event_add(net->resume, &tv);
    }
}

/* ------------------------------------------------------------ lifecycle */

static void workers_stop(sd_net_t *net)
{
    for (unsigned i = 0; i < net->nworkers; i++) {
        worker_t *w = &net->workers[i];
        if (!w->started)
            continue;
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_mutex_unlock(&w->lock);
        event_active(w->notify, EV_READ, 0);
    }
    for (unsigned i = 0; i < net->nworkers; i++) {
        worker_t *w = &net->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        w->started = false;
    }
}

sd_net_t *sd_net_new(struct event_base *base, const sd_opts_t *o, mc_server_t *server)
{
    sd_net_t *net = calloc(1, sizeof *net);
    if (!net) {
        sd_log(SD_LOG_ERROR, "out of memory");
        return NULL;
    }
    net->base = base;
    net->server = server;
    net->fd = -1;
    net->max_connections = o->max_connections;
    net->in_high = (size_t) o->item_size_max + IN_SLACK;
    net->verbose = o->verbose;
    snprintf(net->addr, sizeof net->addr, "%s", o->listen.text);

    net->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (net->fd < 0) {
        sd_log(SD_LOG_ERROR, "cannot create the client socket: %s", strerror(errno));
        goto fail;
    }
    /* SO_REUSEADDR lets a restart bind over connections in TIME_WAIT; no
     * SO_REUSEPORT, so a second daemon on this port fails to bind */
    int one = 1;
    setsockopt(net->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(net->fd, (const struct sockaddr *) &o->listen.sa, sizeof o->listen.sa) != 0) {
        sd_log(SD_LOG_ERROR, "cannot bind %s for memcached clients (--listen): %s",
               o->listen.text, strerror(errno));
        goto fail;
    }

    net->workers = calloc(o->threads, sizeof *net->workers);
    if (net->workers) {
        net->nworkers = o->threads;
        for (unsigned i = 0; i < net->nworkers; i++)
            pthread_mutex_init(&net->workers[i].lock, NULL);
    }
    net->resume = evtimer_new(base, on_resume, net);
    if (!net->resume || !net->workers) {
        sd_log(SD_LOG_ERROR, "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < net->nworkers; i++) {
        worker_t *w = &net->workers[i];
        w->net = net;
        w->index = i;
        w->base = event_base_new();
        w->notify = w->base ? event_new(w->base, -1, 0, on_notify, w) : NULL;
        if (!w->notify) {
            sd_log(SD_LOG_ERROR, "cannot create worker %u's event loop", i);
            goto fail;
        }
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            sd_log(SD_LOG_ERROR, "cannot start worker thread %u: %s", i, strerror(rc));
            goto fail;
        }
        w->started = true;
    }
    return net;
fail:
    sd_net_destroy(&net);
    return NULL;
}

int sd_net_listen(sd_net_t *net)
{
    if (listen(net->fd, LISTEN_BACKLOG) != 0) {
        sd_log(SD_LOG_ERROR, "cannot listen on %s for memcached clients (--listen): %s",
               net->addr, strerror(errno));
        return -1;
    }
    /* backlog 0: the socket already listens */
    net->listener = evconnlistener_new(net->base, on_accept, net,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
                                       net->fd);
    if (!net->listener) {
        sd_log(SD_LOG_ERROR, "cannot accept on %s: out of memory", net->addr);
        return -1;
    }
    net->fd = -1;   /* the listener owns it now */
    evconnlistener_set_error_cb(net->listener, on_accept_error);
    return 0;
}

void sd_net_stop_accepting(sd_net_t *net)
{
    if (!net)
        return;
    if (net->listener)
        evconnlistener_free(net->listener);
    net->listener = NULL;
    if (net->fd >= 0)
        close(net->fd);
    net->fd = -1;
    if (net->resume)
        event_del(net->resume);
}

void sd_net_destroy(sd_net_t **net_p)
{
    if (!net_p || !*net_p)
        return;
    sd_net_t *net = *net_p;
    sd_net_stop_accepting(net);
    if (net->workers) {
        workers_stop(net);
        for (unsigned i = 0; i < net->nworkers; i++) {
            worker_t *w = &net->workers[i];
            /* fds handed over after the worker stopped */
            for (size_t j = 0; j < w->nfds; j++) {
                evutil_closesocket(w->fds[j]);
                mc_server_conn_closed(net->server);
            }
            free(w->fds);
            if (w->notify)
                event_free(w->notify);
            if (w->base)
                event_base_free(w->base);
            pthread_mutex_destroy(&w->lock);
        }
        free(net->workers);
    }
    if (net->resume)
        event_free(net->resume);
    free(net);
    *net_p = NULL;
}
