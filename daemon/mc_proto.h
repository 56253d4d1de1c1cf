/*
 * mc_proto.h - the memcached protocol engine of the sessnode daemon.
 *
 * No sockets here: the daemon's event loop owns the connections and hands
 * each one's input and output buffers (libevent evbuffers) to
 * mc_conn_process, which executes every whole request the input holds
 * against the node and appends the replies. The first byte a connection
 * sends picks its protocol for good, as memcached does: 0x80 (the binary
 * request magic) for the binary protocol, anything else for text (classic
 * commands and the meta commands). The engine is what the protocol tests
 * and the fuzz target drive directly.
 *
 * Thread-safety: one mc_server_t is shared by every worker thread (its
 * counters are atomic); an mc_conn_t belongs to one thread at a time.
 */
#ifndef MC_PROTO_H_INCLUDED
#define MC_PROTO_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"

struct evbuffer;

typedef struct {
    sn_node_t *node;
    uint32_t item_size_max;     /* largest value; the node's value_max */
    uint32_t write_concern;     /* peer acks each write waits for; 0 = none */
    uint32_t write_timeout_ms;  /* for write_concern; 0 = the node's default */
    uint32_t threads;           /* worker threads, for `stats` */
    size_t memory_limit;        /* the node's memory_limit, for `stats` (limit_maxbytes) */
    uint32_t max_connections;   /* for `stats`; 0 = not reported */
    const char *version;        /* for `version`; NULL = "1.6.18-sessnode-" sn_version():
                                   clients parse it as memcached's version */
} mc_settings_t;

typedef struct mc_server mc_server_t;
typedef struct mc_conn mc_conn_t;

mc_server_t *mc_server_new(const mc_settings_t *settings);
void mc_server_destroy(mc_server_t **server_p);

/* The daemon reports connections as it accepts and closes them (stats:
 * curr_connections, total_connections) and refusals (rejected_connections). */
void mc_server_conn_opened(mc_server_t *server);
void mc_server_conn_closed(mc_server_t *server);
void mc_server_conn_rejected(mc_server_t *server);

/* Called about once a second by the daemon: runs a delayed flush_all that
 * has come due. */
void mc_server_tick(mc_server_t *server);

mc_conn_t *mc_conn_new(mc_server_t *server);
void mc_conn_free(mc_conn_t *conn);

enum { MC_OK = 0, MC_CLOSE = 1 };

/* Output the engine lets pile up in one call: past it, mc_conn_process
 * stops with whole requests still in `in`, so a client pipelining reads of
 * large values cannot make one call allocate without bound. The daemon
 * stops reading above the same mark and calls again once `out` drained. */
#define MC_OUT_HIGH (4u << 20)

/*
 * mc_conn_process - executes every whole request `in` holds, removing it,
 * and appends the replies to `out`; a partial request stays in `in` for the
 * next call, and so do whole ones once `out` holds more than MC_OUT_HIGH
 * bytes. Returns MC_CLOSE when the connection must be closed once `out`
 * is flushed (quit, or input memcached itself closes on), else MC_OK.
 */
int mc_conn_process(mc_conn_t *conn, struct evbuffer *in, struct evbuffer *out);

#endif
