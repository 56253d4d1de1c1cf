/*
 * sn_daemon.h - what the files of the sessnode daemon's executable share:
 * its options, its log sink and its network loop. The memcached engine does
 * not include this header (it sees mc_proto.h only), and nothing here is
 * installed.
 *
 *   sessnode.c         main: start-up, the join wait, signals, shutdown
 *   sn_daemon_opts.c   flags, the config file, --help
 *   sn_daemon_log.c    the log sink shared with the node's threads
 *   sn_daemon_net.c    the accept loop, the worker threads, connections
 */
#ifndef SN_DAEMON_H_INCLUDED
#define SN_DAEMON_H_INCLUDED

#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mc_proto.h"

/* ------------------------------------------------------------ options */

/* Exit statuses: 0 done, 1 a runtime failure, 2 bad usage. */
enum { SD_EXIT_RUNTIME = 1, SD_EXIT_USAGE = 2 };

/* Defaults; --help and daemon/README.md quote them. */
#define SD_DEFAULT_LISTEN "127.0.0.1:11211"
#define SD_DEFAULT_CLUSTER "127.0.0.1:7400"
#define SD_DEFAULT_MAX_MEMORY_MB 1024
#define SD_DEFAULT_THREADS 4
#define SD_DEFAULT_MAX_CONNECTIONS 4096
#define SD_DEFAULT_ITEM_SIZE_MAX (1024u * 1024u)
#define SD_DEFAULT_JOIN_TIMEOUT_MS 3000
#define SD_DEFAULT_SUSPECT_MS 1000
#define SD_DEFAULT_DEAD_MS 3000
#define SD_DEFAULT_WRITE_TIMEOUT_MS 1000
#define SD_DEFAULT_TIER_QUEUE 100000
#define SD_DEFAULT_TIER_QUEUE_MB 64
#define SD_NAME_MAX 63          /* sn_member_t.name holds 63 bytes and a NUL */

/* An IPv4 address and port, as parsed from HOST:PORT and resolved once. */
typedef struct {
    struct sockaddr_in sa;
    char text[32];              /* "A.B.C.D:PORT", numeric */
} sd_addr_t;

typedef struct {
    char *config;               /* --config, NULL = none */
    char name[SD_NAME_MAX + 1]; /* "" until a name is chosen */
    sd_addr_t listen;
    sd_addr_t cluster;
    sd_addr_t *peers;           /* --join, in order, without duplicates */
    size_t npeers;
    uint64_t max_memory_mb;     /* 0 = unbounded */
    uint32_t write_concern;
    uint32_t write_timeout_ms;
    uint32_t threads;
    uint32_t item_size_max;
    uint32_t max_connections;
    uint32_t join_timeout_ms;
    uint32_t suspect_ms, dead_ms;   /* the failure detector's */
    char cert[4096];            /* --cert, "" = the bus is not secured */
    char allow[4096];           /* --allow */
    bool insecure_bus;          /* a plain bus off loopback is on purpose */
    char tier[1024];            /* --tier, "" = none */
    uint32_t tier_queue;
    uint32_t tier_queue_mb;     /* --tier-queue-mb */
    bool tier_read_through;     /* --tier-read-through */
    int verbose;                /* 0 info, 1 debug, 2 debug with every connection */
} sd_opts_t;

/*
 * sd_opts_parse - fills `o` from the defaults, then the config file (when
 * --config names one), then the command line, which wins over the file
 * wherever --config appears. --help and --version print and exit 0; bad
 * usage prints one line naming the flag (or file:line) and the value, then
 * "Try 'sessnode --help'", and exits 2. Returns only on success.
 */
void sd_opts_parse(sd_opts_t *o, int argc, char **argv);

/* Frees what sd_opts_parse allocated. */
void sd_opts_free(sd_opts_t *o);

/* ------------------------------------------------------------ logging */

enum { SD_LOG_ERROR = 0, SD_LOG_WARN, SD_LOG_INFO, SD_LOG_DEBUG };

/* Lines below `verbose` are dropped; the name goes in every line. Call
 * before any other thread logs. */
void sd_log_init(const char *name, int verbose);

/* True if a line at `level` would be written (skip costly formatting). */
bool sd_log_enabled(int level);

/*
 * One line on stderr, "2026-11-24T19:30:00.123Z INFO [name] message", in a
 * single write(2), so lines from concurrent threads never interleave.
 * Thread-safe; async-signal-unsafe.
 */
void sd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The node's sn_log_fn: its lines go through the same sink. */
void sd_log_node(int level, const char *msg, void *arg);

/* ------------------------------------------------------------ network */

typedef struct sd_net sd_net_t;
struct event_base;

/*
 * sd_net_new - binds the client socket of --listen (SO_REUSEADDR, not
 * SO_REUSEPORT, so a second daemon on the same port fails here) without
 * listening yet, and starts the worker threads. Logs why and returns NULL
 * on failure. `base` is the main thread's loop, which will accept.
 */
sd_net_t *sd_net_new(struct event_base *base, const sd_opts_t *o, mc_server_t *server);

/* Starts accepting connections (listen(2) and the accept event).
 * Logs why and returns -1 on failure. */
int sd_net_listen(sd_net_t *net);

/* Stops accepting; connections already open are kept. */
void sd_net_stop_accepting(sd_net_t *net);

/* Closes every connection, stops and joins the workers, frees everything,
 * sets *net_p to NULL. Accepts NULL. */
void sd_net_destroy(sd_net_t **net_p);

#endif
