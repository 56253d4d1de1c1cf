/*
 * sessnode.c - the sessnode daemon: a memcached-speaking sidecar whose
 * sessions are replicated to every peer by libsessnode.
 *
 * The process is three layers, each in its own files:
 *   - the node (libsessnode): the session store and its replication
 *     thread, which owns every ZeroMQ socket;
 *   - the memcached engine (mc_proto.h): turns request bytes into node
 *     calls and reply bytes, and knows nothing of sockets;
 *   - the event loop (this file and sn_daemon_net.c): libevent, one
 *     accepting thread (this one) and --threads workers that own the
 *     client connections.
 *
 * Start-up order is chosen so that every failure is reported before the
 * daemon looks alive: the client socket is bound first (a second daemon on
 * the same port fails here, naming the address), then the node binds its
 * cluster ports and starts, and only when the node is ready (it has copied
 * the sessions from a peer, or no peer answered within --join-timeout)
 * does the client socket listen. Until then a client's connection is
 * refused rather than served from a half-filled store.
 *
 * Shutdown, on SIGTERM or SIGINT (through libevent's signal events, so no
 * work runs in a signal handler) or when an operator tells the node to
 * leave: stop accepting, close the client connections (a worker finishes
 * the request it is executing first), then leave the cluster, which
 * publishes every write still queued before saying goodbye; closing the
 * clients first means no write is acknowledged after the node has left.
 * The first signal hands the signals back to their default action, so a
 * second one ends the process at once.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "sn_daemon.h"

#define LEAVE_TIMEOUT_MS 2000
#define JOIN_POLL_MS 100
#define JOIN_PROGRESS_MS 2000

typedef struct {
    sd_opts_t o;
    struct event_base *base;
    sn_node_t *node;
    mc_server_t *server;
    sd_net_t *net;
    struct event *ev_term, *ev_int, *ev_tick, *ev_join, *ev_leave;
    char cluster[48];           /* "tcp://A.B.C.D:PORT" */
    char (*peer_addrs)[48];
    const char **peers;         /* NULL-terminated, into peer_addrs */
    struct timespec join_start;
    uint64_t join_next_log_ms;
    bool node_started;
    int exit_code;
} daemon_t;

static uint64_t ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t) (now.tv_sec - t0->tv_sec) * 1000u +
           (uint64_t) ((now.tv_nsec - t0->tv_nsec) / 1000000L);
}

static bool is_loopback(const sd_addr_t *a)
{
    return (ntohl(a->sa.sin_addr.s_addr) >> 24) == 127;
}

/* ------------------------------------------------------------ events */

static void stop(daemon_t *d, int exit_code)
{
    if (exit_code > d->exit_code)
        d->exit_code = exit_code;
    event_base_loopbreak(d->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void) what;
    daemon_t *d = arg;
    sd_log(SD_LOG_INFO, "%s: stopping (again to exit at once)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    /* deleting the events restores the default actions */
    evsignal_del(d->ev_term);
    evsignal_del(d->ev_int);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    stop(d, 0);
}

/* From the node's replication thread: event_active is thread-safe. */
static void on_node_leave(void *arg)
{
    daemon_t *d = arg;
    event_active(d->ev_leave, EV_READ, 0);
}

static void on_leave_event(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    daemon_t *d = arg;
    sd_log(SD_LOG_INFO, "told to leave the cluster (sessctl leave): stopping");
    stop(d, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    daemon_t *d = arg;
    mc_server_tick(d->server);
}

static void become_ready(daemon_t *d)
{
    if (sd_net_listen(d->net) != 0) {
        stop(d, SD_EXIT_RUNTIME);
        return;
    }
    sn_node_stats_t st;
    sn_node_stats(d->node, &st);
    sd_log(SD_LOG_INFO, "ready: serving memcached clients on %s, %llu session%s",
           d->o.listen.text, (unsigned long long) st.sessions, st.sessions == 1 ? "" : "s");
    if (!is_loopback(&d->o.listen))
        sd_log(SD_LOG_WARN,
               "memcached clients are accepted on %s%s: the memcached protocol has no "
               "authentication, so whoever reaches this port can read and change sessions",
               d->o.listen.text,
               d->o.listen.sa.sin_addr.s_addr == htonl(INADDR_ANY) ? " (every interface)" : "");
}

static void on_join_poll(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    daemon_t *d = arg;
    if (sn_node_wait_ready(d->node, 0) == 0) {
        event_del(d->ev_join);
        sn_node_stats_t st;
        sn_node_stats(d->node, &st);
        sd_log(SD_LOG_INFO, "join finished after %llu ms: %llu session%s copied%s",
               (unsigned long long) ms_since(&d->join_start),
               (unsigned long long) (st.snapshot_sessions + st.tier_boot_sessions),
               st.snapshot_sessions + st.tier_boot_sessions == 1 ? "" : "s",
               st.tier_boot_sessions ? " from the tier" : "");
        become_ready(d);
        return;
    }
    uint64_t elapsed = ms_since(&d->join_start);
    if (elapsed >= d->join_next_log_ms) {
        sn_node_stats_t st;
        sn_node_stats(d->node, &st);
        sd_log(SD_LOG_INFO, "joining: %llu session%s received after %llu ms, %llu peer%s alive",
               (unsigned long long) st.snapshot_sessions, st.snapshot_sessions == 1 ? "" : "s",
               (unsigned long long) elapsed, (unsigned long long) st.peers_alive,
               st.peers_alive == 1 ? "" : "s");
        d->join_next_log_ms = elapsed + JOIN_PROGRESS_MS;
    }
}

/* ------------------------------------------------------------ start-up */

/* Enough descriptors for --max-connections, the node's sockets and slack. */
static void raise_fd_limit(const sd_opts_t *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t need = (rlim_t) o->max_connections + 64 + 4 * (rlim_t) o->npeers + 4 * o->threads;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        rlim_t had = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = had;
        if (rl.rlim_cur < need)
            sd_log(SD_LOG_WARN,
                   "--max-connections %u needs about %llu file descriptors but the limit is "
                   "%llu: past it, new connections wait until others close",
                   o->max_connections, (unsigned long long) need,
                   (unsigned long long) rl.rlim_cur);
    }
}

static void log_start(const daemon_t *d)
{
    const sd_opts_t *o = &d->o;
    char peers[512] = "none";
    size_t n = 0;
    for (size_t i = 0; i < o->npeers && n < sizeof peers; i++) {
        int w = snprintf(peers + n, sizeof peers - n, "%s%s", i ? "," : "", o->peers[i].text);
        if (w < 0)
            break;
        n += (size_t) w;
    }
    char memory[32];
    if (o->max_memory_mb)
        snprintf(memory, sizeof memory, "%llu MB", (unsigned long long) o->max_memory_mb);
    else
        snprintf(memory, sizeof memory, "unbounded");
    unsigned port = ntohs(o->cluster.sa.sin_port);
    sd_log(SD_LOG_INFO,
           "sessnode %s starting: name %s, memcached clients on %s, cluster address %s "
           "(PUB port %u, ROUTER port %u), peers %s, max memory %s, %u threads, "
           "max connections %u, item size max %u, write concern %u",
           sn_version(), o->name, o->listen.text, d->cluster, port, port + 1, peers, memory,
           o->threads, o->max_connections, o->item_size_max, o->write_concern);
    if (o->write_concern > o->npeers)
        sd_log(SD_LOG_WARN,
               "--write-concern %u with %zu peer%s listed: writes report a timeout until "
               "that many peers are alive",
               o->write_concern, o->npeers, o->npeers == 1 ? "" : "s");
}

static bool make_node(daemon_t *d)
{
    const sd_opts_t *o = &d->o;
    d->peer_addrs = calloc(o->npeers ? o->npeers : 1, sizeof *d->peer_addrs);
    d->peers = calloc(o->npeers + 1, sizeof *d->peers);
    if (!d->peer_addrs || !d->peers) {
        sd_log(SD_LOG_ERROR, "out of memory");
        return false;
    }
    for (size_t i = 0; i < o->npeers; i++) {
        snprintf(d->peer_addrs[i], sizeof d->peer_addrs[i], "tcp://%s", o->peers[i].text);
        d->peers[i] = d->peer_addrs[i];
    }
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.name = o->name;
    cfg.cluster = d->cluster;
    cfg.peers = d->peers;
    cfg.join = o->npeers > 0;
    cfg.memory_limit = (size_t) o->max_memory_mb << 20;
    cfg.value_max = o->item_size_max;
    cfg.join_timeout_ms = o->join_timeout_ms;
    cfg.suspect_ms = o->suspect_ms;
    cfg.dead_ms = o->dead_ms;
    cfg.curve_cert = o->cert[0] ? o->cert : NULL;
    cfg.curve_allow = o->allow[0] ? o->allow : NULL;
    cfg.tier = o->tier[0] ? o->tier : NULL;
    cfg.tier_queue = o->tier_queue;
    cfg.tier_queue_bytes = (size_t) o->tier_queue_mb << 20;
    cfg.tier_read_through = o->tier_read_through;
    cfg.write_timeout_ms = o->write_timeout_ms;
    cfg.log = sd_log_node;
    cfg.log_level = o->verbose > 0 ? SN_LOG_DEBUG : SN_LOG_INFO;
    cfg.on_leave = on_node_leave;
    cfg.on_leave_arg = d;
    d->node = sn_node_new(&cfg);
    if (!d->node) {
        sd_log(SD_LOG_ERROR, "cannot create the node (bad configuration or out of memory)");
        return false;
    }
    mc_settings_t ms = {
        .node = d->node,
        .item_size_max = o->item_size_max,
        .write_concern = o->write_concern,
        .write_timeout_ms = o->write_timeout_ms,
        .threads = o->threads,
        .memory_limit = cfg.memory_limit,
        .version = NULL,
    };
    d->server = mc_server_new(&ms);
    if (!d->server) {
        sd_log(SD_LOG_ERROR, "cannot create the memcached engine: out of memory");
        return false;
    }
    return true;
}

/* After the node failed to start: which of its two ports cannot be bound,
 * and why, for the error message (the node's error code does not say). */
static void explain_cluster_ports(const sd_addr_t *a, char *out, size_t len)
{
    out[0] = '\0';
    for (unsigned k = 0; k < 2; k++) {
        struct sockaddr_in sa = a->sa;
        sa.sin_port = htons((uint16_t) (ntohs(a->sa.sin_port) + k));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int rc = bind(fd, (const struct sockaddr *) &sa, sizeof sa);
        int err = errno;
        if (rc == 0) {
            rc = listen(fd, 1);
            err = errno;
        }
        close(fd);
        if (rc != 0) {
            snprintf(out, len, ": port %u: %s", (unsigned) ntohs(sa.sin_port), strerror(err));
            return;
        }
    }
}

static bool start_node(daemon_t *d)
{
    int rc = sn_node_start(d->node);
    if (rc != 0) {
        if (rc == SN_EINVAL && d->o.cert[0]) {
            sd_log(SD_LOG_ERROR, "cannot start the node: --cert %s or --allow %s is unusable "
                   "(the line above says why)", d->o.cert, d->o.allow);
            return false;
        }
        unsigned port = ntohs(d->o.cluster.sa.sin_port);
        char why[128];
        explain_cluster_ports(&d->o.cluster, why, sizeof why);
        sd_log(SD_LOG_ERROR,
               "cannot start the node on cluster address %s (--cluster; it binds ports %u "
               "and %u): %s%s",
               d->cluster, port, port + 1, sn_strerror(rc), why);
        return false;
    }
    d->node_started = true;
    return true;
}

static bool make_events(daemon_t *d)
{
    d->ev_term = evsignal_new(d->base, SIGTERM, on_signal, d);
    d->ev_int = evsignal_new(d->base, SIGINT, on_signal, d);
    d->ev_tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
    d->ev_join = event_new(d->base, -1, EV_PERSIST, on_join_poll, d);
    d->ev_leave = event_new(d->base, -1, 0, on_leave_event, d);
    if (!d->ev_term || !d->ev_int || !d->ev_tick || !d->ev_join || !d->ev_leave) {
        sd_log(SD_LOG_ERROR, "cannot create the main loop's events");
        return false;
    }
    struct timeval second = {1, 0};
    evsignal_add(d->ev_term, NULL);
    evsignal_add(d->ev_int, NULL);
    event_add(d->ev_tick, &second);
    return true;
}

static void teardown(daemon_t *d)
{
    sd_net_stop_accepting(d->net);
    sd_net_destroy(&d->net);   /* closes every client connection */
    if (d->node_started) {
        sd_log(SD_LOG_INFO, "leaving the cluster");
        int rc = sn_node_leave(d->node, LEAVE_TIMEOUT_MS);
        if (rc != 0)
            sd_log(SD_LOG_WARN, "leaving the cluster: %s", sn_strerror(rc));
    }
    mc_server_destroy(&d->server);
    sn_node_destroy(&d->node);
    /* the events go after the node: until its replication thread has
     * stopped, it may still activate ev_leave */
    struct event **evs[] = {&d->ev_term, &d->ev_int, &d->ev_tick, &d->ev_join, &d->ev_leave};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    if (d->base)
        event_base_free(d->base);
    d->base = NULL;
    free(d->peers);
    free(d->peer_addrs);
    sd_opts_free(&d->o);
}

int main(int argc, char **argv)
{
    static daemon_t d;
    /* a client that goes away mid-reply must not kill the daemon */
    signal(SIGPIPE, SIG_IGN);
    /* czmq, under the node, would otherwise install its own SIGINT and
     * SIGTERM handlers when the node starts, replacing the loop's */
    setenv("ZSYS_SIGHANDLER", "false", 1);
    sd_opts_parse(&d.o, argc, argv);
    sd_log_init(d.o.name, d.o.verbose);

    if (evthread_use_pthreads() != 0 || !(d.base = event_base_new())) {
        sd_log(SD_LOG_ERROR, "cannot set up libevent");
        sd_opts_free(&d.o);
        return SD_EXIT_RUNTIME;
    }
    raise_fd_limit(&d.o);
    snprintf(d.cluster, sizeof d.cluster, "tcp://%s", d.o.cluster.text);
    log_start(&d);

    d.exit_code = 0;
    if (!make_node(&d) || !make_events(&d) ||
        !(d.net = sd_net_new(d.base, &d.o, d.server)) || !start_node(&d)) {
        d.exit_code = SD_EXIT_RUNTIME;
    } else {
        if (d.o.npeers > 0 || d.o.tier[0]) {
            clock_gettime(CLOCK_MONOTONIC, &d.join_start);
            d.join_next_log_ms = JOIN_PROGRESS_MS;
            if (d.o.npeers > 0)
                sd_log(SD_LOG_INFO, "joining: copying the sessions from the first peer to "
                                    "answer (waits up to %u ms for one)%s",
                       d.o.join_timeout_ms, d.o.tier[0] ? ", else from the tier" : "");
            else
                sd_log(SD_LOG_INFO, "no peer given: loading the sessions from the tier");
            struct timeval poll = {0, JOIN_POLL_MS * 1000};
            event_add(d.ev_join, &poll);
        } else {
            become_ready(&d);
        }
        if (d.exit_code == 0)
            event_base_dispatch(d.base);
    }
    teardown(&d);
    sd_log(d.exit_code ? SD_LOG_ERROR : SD_LOG_INFO, "%s",
           d.exit_code ? "stopped after a failure" : "stopped");
    libevent_global_shutdown();
    return d.exit_code;
}
