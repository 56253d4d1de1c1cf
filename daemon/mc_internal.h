/*
 * mc_internal.h - what the memcached engine's files share: the server and
 * connection structs and the helpers both protocols use. Not for the
 * daemon's event loop, which sees mc_proto.h only.
 *
 *   mc_proto.c   server and connection lifecycle, protocol detection,
 *                the shared helpers below
 *   mc_text.c    the text protocol: classic and meta commands
 *   mc_binary.c  the binary protocol
 */
#ifndef MC_INTERNAL_H_INCLUDED
#define MC_INTERNAL_H_INCLUDED

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "mc_key.h"
#include "mc_proto.h"

/* memcached's own limits (MC_KEY_MAX: mc_key.h) */
#define MC_REALTIME_MAXDELTA (60 * 60 * 24 * 30)  /* exptimes above are absolute */

/* Counters in `stats`; one atomic each, relaxed. */
#define MC_COUNTERS(X)                                                         \
    X(curr_connections) X(total_connections) X(rejected_connections)          \
    X(cmd_get) X(cmd_set) X(cmd_flush) X(cmd_touch) X(cmd_meta)               \
    X(get_hits) X(get_misses) X(get_expired)                                  \
    X(delete_misses) X(delete_hits) X(incr_misses) X(incr_hits)               \
    X(decr_misses) X(decr_hits) X(cas_misses) X(cas_hits) X(cas_badval)       \
    X(touch_hits) X(touch_misses) X(store_too_large) X(store_no_memory)       \
    X(write_concern_failures) X(protocol_errors) X(bytes_read) X(bytes_written)

struct mc_server {
    mc_settings_t s;
    char version[64];
    time_t started;
    _Atomic int64_t flush_at;   /* unix time of a pending delayed flush_all; 0 = none */
    _Atomic int verbosity;      /* set by `verbosity`; reported only */
    struct {
#define MC_COUNTER_FIELD_(name) _Atomic uint64_t name;
        MC_COUNTERS(MC_COUNTER_FIELD_)
#undef MC_COUNTER_FIELD_
    } st;
};

enum { MC_PROTO_UNKNOWN = 0, MC_PROTO_TEXT, MC_PROTO_BINARY };

struct mc_conn {
    mc_server_t *srv;
    int proto;                  /* MC_PROTO_*, fixed by the first byte */
    /* ---- text protocol state (mc_text.c) ---- */
    uint64_t swallow;           /* bytes of a refused data block still to discard */
    size_t need;                /* input the request at the front needs before it
                                   is worth parsing again (its data block) */
    size_t scanned;             /* leading input bytes known to hold no newline */
    /* ---- binary protocol state (mc_binary.c) ---- */
    uint64_t bin_swallow;       /* body bytes of a refused request still to discard */
};

#define MC_COUNT(srv, name, n) \
    atomic_fetch_add_explicit(&(srv)->st.name, (n), memory_order_relaxed)

/* Converts a memcached exptime to a max_inactive (seconds, 0 = never):
 * 0 stays 0, up to 30 days is relative, above that an absolute Unix time.
 * Sets *expired (and returns 0) for a negative exptime or an absolute one
 * already past: memcached stores such an item and never returns it, which
 * the engine does by deleting the key. */
int64_t mc_exptime(mc_server_t *srv, int64_t exptime, bool *expired);


/* The write options of every storage command (write concern). */
sn_write_t mc_write_options(const mc_server_t *srv);

/* flush_all: now (delay <= 0) or `delay` seconds from now (a later call
 * replaces a pending one). Returns the sessions destroyed now. */
uint64_t mc_flush(mc_server_t *srv, int64_t delay);

/* Runs a pending delayed flush that has come due; cheap when none is. */
void mc_flush_due(mc_server_t *srv);

/* Every general statistic (`stats` with no argument), in memcached's
 * order where memcached has the name, then sessnode's replication and
 * membership figures. `fn` gets NUL-terminated key and value strings. */
typedef void (*mc_stat_fn)(const char *key, const char *value, void *arg);
void mc_stats_each(mc_server_t *srv, mc_stat_fn fn, void *arg);

/* `stats reset`: zeroes every counter but the connection gauge. */
void mc_stats_reset(mc_server_t *srv);

/* `stats settings`: the daemon's settings in the same form. */
void mc_stats_settings(mc_server_t *srv, mc_stat_fn fn, void *arg);

/* The protocols' entry points (mc_conn_process dispatches). */
int mc_text_process(mc_conn_t *conn, struct evbuffer *in, struct evbuffer *out);
int mc_binary_process(mc_conn_t *conn, struct evbuffer *in, struct evbuffer *out);

#endif
