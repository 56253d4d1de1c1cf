/*
 * mc_proto.c - the memcached engine's common part: the server and its
 * connections, protocol detection, and what both protocols share (expiry
 * times, write options, flush_all, stats).
 *
 * The engine owns no socket and no thread. One mc_server_t is shared by
 * every worker thread, so everything in it is either set once at creation
 * or atomic: the counters are relaxed atomics (a figure in `stats` may be a
 * few requests behind another, as in memcached), and a delayed flush_all is
 * a single atomic deadline that whichever thread passes it first claims
 * with a compare-and-swap, so it runs once. A connection belongs to one
 * thread at a time and holds only its protocol's parse state; the requests
 * themselves run straight against the node, which does its own locking.
 *
 * Both protocols store a key under the session id mc_key_id gives it: the
 * key itself, unless it holds bytes a session id may not (control
 * characters, which memcached keys may contain), which are escaped.
 *
 * A delayed flush is checked at every mc_conn_process as well as by the
 * daemon's once-a-second tick, so a key is never served after its flush
 * time by a connection that happens to be busy; when no flush is pending
 * the check is one atomic load.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "mc_internal.h"

#define MC_DEFAULT_ITEM_SIZE_MAX (1u << 20)

/* Clients read `version` as memcached's and decide what the server can do
 * from it (libmemcached refuses a major version of 0 outright), so the
 * default names the memcached release whose protocol the engine follows,
 * then sessnode's own version. */
#define MC_PROTOCOL_VERSION "1.6.18"

mc_server_t *mc_server_new(const mc_settings_t *settings)
{
    if (!settings || !settings->node)
        return NULL;
    mc_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->s = *settings;
    if (!srv->s.item_size_max)
        srv->s.item_size_max = MC_DEFAULT_ITEM_SIZE_MAX;
    if (settings->version)
        snprintf(srv->version, sizeof srv->version, "%s", settings->version);
    else
        snprintf(srv->version, sizeof srv->version, "%s-sessnode-%s", MC_PROTOCOL_VERSION,
                 sn_version());
    /* The caller's string need not outlive this call. */
    srv->s.version = srv->version;
    srv->started = time(NULL);
    atomic_init(&srv->flush_at, 0);
    atomic_init(&srv->verbosity, 0);
    return srv;
}

void mc_server_destroy(mc_server_t **server_p)
{
    if (!server_p || !*server_p)
        return;
    free(*server_p);
    *server_p = NULL;
}

void mc_server_conn_opened(mc_server_t *server)
{
    MC_COUNT(server, curr_connections, 1);
    MC_COUNT(server, total_connections, 1);
}

void mc_server_conn_closed(mc_server_t *server)
{
    atomic_fetch_sub_explicit(&server->st.curr_connections, 1, memory_order_relaxed);
}

void mc_server_conn_rejected(mc_server_t *server)
{
    MC_COUNT(server, rejected_connections, 1);
}

void mc_server_tick(mc_server_t *server)
{
    mc_flush_due(server);
}

mc_conn_t *mc_conn_new(mc_server_t *server)
{
    if (!server)
        return NULL;
    mc_conn_t *conn = calloc(1, sizeof *conn);
    if (conn)
        conn->srv = server;
    return conn;
}

void mc_conn_free(mc_conn_t *conn)
{
    free(conn);
}

int mc_conn_process(mc_conn_t *conn, struct evbuffer *in, struct evbuffer *out)
{
    size_t in_before = evbuffer_get_length(in);
    if (in_before == 0)
        return MC_OK;
    size_t out_before = evbuffer_get_length(out);
    mc_flush_due(conn->srv);
    if (conn->proto == MC_PROTO_UNKNOWN) {
        unsigned char first;
        evbuffer_copyout(in, &first, 1);
        /* 0x80 is the binary request magic; no text command starts with it. */
        conn->proto = first == 0x80 ? MC_PROTO_BINARY : MC_PROTO_TEXT;
    }
    int rc = conn->proto == MC_PROTO_BINARY ? mc_binary_process(conn, in, out)
                                            : mc_text_process(conn, in, out);
    size_t in_after = evbuffer_get_length(in), out_after = evbuffer_get_length(out);
    if (in_before > in_after)
        MC_COUNT(conn->srv, bytes_read, in_before - in_after);
    if (out_after > out_before)
        MC_COUNT(conn->srv, bytes_written, out_after - out_before);
    return rc;
}

/* ------------------------------------------------------------ helpers */

int64_t mc_exptime(mc_server_t *srv, int64_t exptime, bool *expired)
{
    (void) srv;
    *expired = false;
    if (exptime == 0)
        return 0;
    if (exptime < 0) {
        *expired = true;
        return 0;
    }
    if (exptime > MC_REALTIME_MAXDELTA) {
        int64_t now = (int64_t) time(NULL);
        if (exptime <= now) {
            *expired = true;
            return 0;
        }
        exptime -= now;
    }
    /* max_inactive is 32 bits; a farther deadline is as good as never
     * for a session, but stays a deadline. */
    return exptime > (int64_t) UINT32_MAX ? (int64_t) UINT32_MAX : exptime;
}

sn_write_t mc_write_options(const mc_server_t *srv)
{
    sn_write_t w;
    memset(&w, 0, sizeof w);
    w.acks = srv->s.write_concern;
    w.timeout_ms = srv->s.write_timeout_ms;
    return w;
}

uint64_t mc_flush(mc_server_t *srv, int64_t delay)
{
    if (delay > 0) {
        atomic_store_explicit(&srv->flush_at, (int64_t) time(NULL) + delay,
                              memory_order_relaxed);
        return 0;
    }
    /* An immediate flush supersedes a pending one: it would find nothing
     * older to flush than what this one removes. */
    atomic_store_explicit(&srv->flush_at, 0, memory_order_relaxed);
    uint64_t count = 0;
    sn_node_flush(srv->s.node, &count);
    return count;
}

void mc_flush_due(mc_server_t *srv)
{
    int64_t at = atomic_load_explicit(&srv->flush_at, memory_order_relaxed);
    if (at == 0 || (int64_t) time(NULL) < at)
        return;
    /* Only the thread that clears the deadline runs the flush. */
    if (atomic_compare_exchange_strong(&srv->flush_at, &at, 0))
        sn_node_flush(srv->s.node, NULL);
}

/* -------------------------------------------------------------- stats */

static void stat_u64(mc_stat_fn fn, void *arg, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    fn(key, buf, arg);
}

static void stat_timeval(mc_stat_fn fn, void *arg, const char *key, struct timeval tv)
{
    char buf[48];
    snprintf(buf, sizeof buf, "%ld.%06ld", (long) tv.tv_sec, (long) tv.tv_usec);
    fn(key, buf, arg);
}

#define MC_LOAD(srv, name) atomic_load_explicit(&(srv)->st.name, memory_order_relaxed)

void mc_stats_each(mc_server_t *srv, mc_stat_fn fn, void *arg)
{
    time_t now = time(NULL);
    sn_node_stats_t ns;
    sn_node_stats(srv->s.node, &ns);

    stat_u64(fn, arg, "pid", (uint64_t) getpid());
    stat_u64(fn, arg, "uptime", (uint64_t) (now - srv->started));
    stat_u64(fn, arg, "time", (uint64_t) now);
    fn("version", srv->version, arg);
    fn("libevent", event_get_version(), arg);
    stat_u64(fn, arg, "pointer_size", 8 * sizeof(void *));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        stat_timeval(fn, arg, "rusage_user", ru.ru_utime);
        stat_timeval(fn, arg, "rusage_system", ru.ru_stime);
    }
    if (srv->s.max_connections)
        stat_u64(fn, arg, "max_connections", srv->s.max_connections);
    stat_u64(fn, arg, "curr_connections", MC_LOAD(srv, curr_connections));
    stat_u64(fn, arg, "total_connections", MC_LOAD(srv, total_connections));
    stat_u64(fn, arg, "rejected_connections", MC_LOAD(srv, rejected_connections));
    stat_u64(fn, arg, "cmd_get", MC_LOAD(srv, cmd_get));
    stat_u64(fn, arg, "cmd_set", MC_LOAD(srv, cmd_set));
    stat_u64(fn, arg, "cmd_flush", MC_LOAD(srv, cmd_flush));
    stat_u64(fn, arg, "cmd_touch", MC_LOAD(srv, cmd_touch));
    stat_u64(fn, arg, "cmd_meta", MC_LOAD(srv, cmd_meta));
    stat_u64(fn, arg, "get_hits", MC_LOAD(srv, get_hits));
    stat_u64(fn, arg, "get_misses", MC_LOAD(srv, get_misses));
    stat_u64(fn, arg, "get_expired", MC_LOAD(srv, get_expired));
    stat_u64(fn, arg, "delete_misses", MC_LOAD(srv, delete_misses));
    stat_u64(fn, arg, "delete_hits", MC_LOAD(srv, delete_hits));
    stat_u64(fn, arg, "incr_misses", MC_LOAD(srv, incr_misses));
    stat_u64(fn, arg, "incr_hits", MC_LOAD(srv, incr_hits));
    stat_u64(fn, arg, "decr_misses", MC_LOAD(srv, decr_misses));
    stat_u64(fn, arg, "decr_hits", MC_LOAD(srv, decr_hits));
    stat_u64(fn, arg, "cas_misses", MC_LOAD(srv, cas_misses));
    stat_u64(fn, arg, "cas_hits", MC_LOAD(srv, cas_hits));
    stat_u64(fn, arg, "cas_badval", MC_LOAD(srv, cas_badval));
    stat_u64(fn, arg, "touch_hits", MC_LOAD(srv, touch_hits));
    stat_u64(fn, arg, "touch_misses", MC_LOAD(srv, touch_misses));
    stat_u64(fn, arg, "store_too_large", MC_LOAD(srv, store_too_large));
    stat_u64(fn, arg, "store_no_memory", MC_LOAD(srv, store_no_memory));
    stat_u64(fn, arg, "bytes_read", MC_LOAD(srv, bytes_read));
    stat_u64(fn, arg, "bytes_written", MC_LOAD(srv, bytes_written));
    stat_u64(fn, arg, "limit_maxbytes", (uint64_t) srv->s.memory_limit);
    stat_u64(fn, arg, "threads", srv->s.threads);
    stat_u64(fn, arg, "bytes", ns.bytes);
    stat_u64(fn, arg, "curr_items", ns.sessions);
    stat_u64(fn, arg, "evictions", ns.evictions);
    stat_u64(fn, arg, "expired", ns.expired);
    /* sessnode's own figures from here on */
    stat_u64(fn, arg, "protocol_errors", MC_LOAD(srv, protocol_errors));
    stat_u64(fn, arg, "write_concern_failures", MC_LOAD(srv, write_concern_failures));

    size_t npeers = 0;
    uint64_t by_state[4] = {0};
    sn_node_members(srv->s.node, NULL, 0, &npeers);
    if (npeers) {
        sn_member_t *m = calloc(npeers, sizeof *m);
        size_t got = 0;
        if (m && sn_node_members(srv->s.node, m, npeers, &got) == 0) {
            for (size_t i = 0; i < got && i < npeers; i++)
                if (m[i].state >= 0 && m[i].state < 4)
                    by_state[m[i].state]++;
        }
        free(m);
    }
    stat_u64(fn, arg, "cluster_node_id", sn_node_id(srv->s.node));
    stat_u64(fn, arg, "cluster_peers", npeers);
    stat_u64(fn, arg, "cluster_peers_alive", ns.peers_alive);
    stat_u64(fn, arg, "cluster_peers_suspect", by_state[SN_MEMBER_SUSPECT]);
    stat_u64(fn, arg, "cluster_peers_dead", by_state[SN_MEMBER_DEAD]);
    stat_u64(fn, arg, "cluster_peers_left", by_state[SN_MEMBER_LEFT]);

    stat_u64(fn, arg, "repl_writes", ns.writes);
    stat_u64(fn, arg, "repl_deltas_sent", ns.deltas_sent);
    stat_u64(fn, arg, "repl_batches_sent", ns.batches_sent);
    stat_u64(fn, arg, "repl_sent_by_writers", ns.sent_by_writers);
    stat_u64(fn, arg, "repl_deltas_received", ns.deltas_received);
    stat_u64(fn, arg, "repl_deltas_dropped", ns.deltas_dropped);
    stat_u64(fn, arg, "repl_duplicates", ns.duplicates);
    stat_u64(fn, arg, "repl_gaps_detected", ns.gaps_detected);
    stat_u64(fn, arg, "repl_repairs_requested", ns.repairs_requested);
    stat_u64(fn, arg, "repl_repaired", ns.repaired);
    stat_u64(fn, arg, "repl_full_fetches", ns.full_fetches);
    stat_u64(fn, arg, "repl_resyncs", ns.resyncs);
    stat_u64(fn, arg, "repl_resync_settled", ns.resync_settled);
    stat_u64(fn, arg, "repl_resync_retries", ns.resync_retries);
    stat_u64(fn, arg, "repl_bad_frames", ns.bad_frames);
    stat_u64(fn, arg, "repl_apply_refused", ns.apply_refused);
    stat_u64(fn, arg, "repl_queue_overflows", ns.queue_overflows);
    stat_u64(fn, arg, "repl_acks_timed_out", ns.acks_timed_out);
    stat_u64(fn, arg, "repl_acks_refused", ns.acks_refused);
    stat_u64(fn, arg, "repl_bytes_sent", ns.bytes_sent);
    stat_u64(fn, arg, "repl_bytes_received", ns.bytes_received);
    stat_u64(fn, arg, "repl_snapshot_sessions", ns.snapshot_sessions);
    stat_u64(fn, arg, "cluster_members_learned", ns.members_learned);
    stat_u64(fn, arg, "cluster_auth_refused", ns.auth_refused);
    stat_u64(fn, arg, "cluster_peers_without_key", ns.peers_without_key);
    stat_u64(fn, arg, "tier_queue", ns.tier_queue);
    stat_u64(fn, arg, "tier_queue_bytes", ns.tier_queue_bytes);
    stat_u64(fn, arg, "tier_writes", ns.tier_writes);
    stat_u64(fn, arg, "tier_touches", ns.tier_touches);
    stat_u64(fn, arg, "tier_deletes", ns.tier_deletes);
    stat_u64(fn, arg, "tier_failures", ns.tier_failures);
    stat_u64(fn, arg, "tier_dropped", ns.tier_dropped);
    stat_u64(fn, arg, "tier_boot_sessions", ns.tier_boot_sessions);
    stat_u64(fn, arg, "tier_boot_ms", ns.tier_boot_ms);
    stat_u64(fn, arg, "tier_reads", ns.tier_reads);
    stat_u64(fn, arg, "tier_read_hits", ns.tier_read_hits);
    stat_u64(fn, arg, "repl_tombstones", ns.tombstones);
}

void mc_stats_reset(mc_server_t *srv)
{
    /* curr_connections is a gauge, not a count since the last reset */
#define MC_RESET_(name)                                                        \
    if (strcmp(#name, "curr_connections") != 0)                                \
        atomic_store_explicit(&srv->st.name, 0, memory_order_relaxed);
    MC_COUNTERS(MC_RESET_)
#undef MC_RESET_
}

void mc_stats_settings(mc_server_t *srv, mc_stat_fn fn, void *arg)
{
    stat_u64(fn, arg, "maxbytes", (uint64_t) srv->s.memory_limit);
    if (srv->s.max_connections)
        stat_u64(fn, arg, "maxconns", srv->s.max_connections);
    stat_u64(fn, arg, "verbosity",
             (uint64_t) atomic_load_explicit(&srv->verbosity, memory_order_relaxed));
    fn("evictions", "on", arg);
    stat_u64(fn, arg, "num_threads", srv->s.threads);
    fn("cas_enabled", "yes", arg);
    fn("binding_protocol", "auto-negotiate", arg);
    stat_u64(fn, arg, "item_size_max", srv->s.item_size_max);
    fn("flush_enabled", "yes", arg);
    stat_u64(fn, arg, "write_concern", srv->s.write_concern);
    stat_u64(fn, arg, "write_timeout_ms", srv->s.write_timeout_ms);
}
