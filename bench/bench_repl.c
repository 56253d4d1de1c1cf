/*
 * bench_repl.c - replication benchmark: sessnode nodes on loopback against
 * raw ZeroMQ PUB/SUB and against Redis 7 primary/replica replication, each
 * measured in the same run on the same machine.
 *
 * The figures a session store is judged by are how soon a write made on one
 * node can be read on another, how many writes per second the cluster keeps
 * replicated, and how fast a new node gets a copy of everything. Absolute
 * numbers on a shared 2-core VM say little, so every figure sits next to a
 * reference measured minutes apart in the same process tree: raw PUB/SUB is
 * the floor sessnode's transport is built on, Redis replication is what a
 * session store is usually replaced with.
 *
 * Processes. The benchmark forks itself before it touches ZeroMQ: child A
 * (the writer), child B (the measured receiver) and child C (a third member
 * that only receives, so A publishes to two subscribers as in a 3-node
 * cluster). Each child runs one sessnode node, or the raw ZeroMQ socket or
 * Redis connection of a reference, on command from the parent over a pipe,
 * and reports timestamps back over another. The parent starts and stops
 * redis-server itself (a primary and two replicas, loopback, a temporary
 * directory, no persistence) and never uses ZeroMQ. CLOCK_MONOTONIC is one
 * clock for all processes on the machine, so a send time taken in A and an
 * arrival time taken in B can be subtracted.
 *
 * 1. Latency. A writes new sessions at a paced rate (absolute-time sleeps),
 *    each value carrying its send time, and records when it called
 *    sn_node_put. B's node notifies each session a peer's update changed
 *    (sn_config_t.on_change, called by the replication thread once the
 *    session is readable), and the callback records the arrival time of
 *    the id; B's main thread only waits for the round to complete.
 *    Latency = arrival - send, per write, after a warm-up.
 *    References, same rate, payload size and fan-out: raw PUB/SUB (B blocks
 *    in zmq_recv; C drains too), and Redis (A SETs on the primary and waits
 *    for the reply; B blocks on the replica's keyspace event for each SET it
 *    applies; the second replica just follows).
 *    The sizes and the three systems take turns, round after round (5 by
 *    default), each round starting with the next size and the next
 *    system, and each percentile quoted is the median over the rounds: a
 *    stall of the VM (several ms, a few times a second, hitting whichever
 *    system is running) otherwise decides a single run's p99, and what
 *    runs later in the phase, on nodes holding more, measured worse.
 * 2. Throughput. A writes W sessions as fast as one thread can; B waits
 *    (stats-based: its count of received deltas, every 200 us) until all W
 *    have arrived. The first round creates the sessions and pays the first
 *    touch of their memory, on every process of both systems, so it is
 *    shown apart; later rounds overwrite them and give the median.
 *    References: raw PUB/SUB of W messages (time to the last one received)
 *    and a pipelined Redis client SETting W keys until the replica holds
 *    the last key's new value.
 * 3. Join. A fresh node holds J sessions; a fresh process starts a node
 *    with join and the time from sn_node_start until sn_node_wait_ready
 *    returns is the join time. Reference: a Redis primary with the same J
 *    keys; a fresh replica process gets REPLICAOF and the time until INFO
 *    shows the link up and no sync in progress is the full-resync time
 *    (DBSIZE is checked afterwards). Redis runs with diskless sync and no
 *    sync delay, so neither side waits on purpose.
 *
 * Any failure ends the run with exit status 1, after stopping every process
 * the benchmark started.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_common.h"
#include "sessnode.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define ATTR "data"
#define MAX_SAMPLES 2000000
/* No high-water mark on the reference sockets: a burst larger than
 * sessnode's own marks (100,000 messages each way) would otherwise drop
 * messages and leave no reference to compare with. */
#define ZMQ_HWM 0
#define REDIS_BATCH 256           /* pipelined SETs per write */

/* ------------------------------------------------------------ helpers */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t) (t / 1000000000u),
                          .tv_nsec = (long) (t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_us(unsigned us)
{
    sleep_until(now_ns() + (uint64_t) us * 1000u);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("pipe write: %s", strerror(errno));
        p += n;
        len -= (size_t) n;
    }
}

/* false at end of file before the first byte */
static bool read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && got == 0)
            return false;
        if (n <= 0)
            die("pipe read: %s", n ? strerror(errno) : "short read");
        got += (size_t) n;
    }
    return true;
}

/* A TCP port on 127.0.0.1 that is free now, and optionally the next one too
 * (a sessnode address takes PORT and PORT+1). */
static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int got = 0;
    if (bind(fd, (struct sockaddr *) &a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *) &a, &alen) == 0)
        got = ntohs(a.sin_port);
    close(fd);
    return got;
}

static int free_ports(int count)
{
    static int last;            /* never hand out the same port twice */
    for (int tries = 0; tries < 1000; tries++) {
        int p = port_free(0);
        if (!p || p + count > 65535 || (p <= last + 1 && p + count > last))
            continue;
        bool ok = true;
        for (int i = 1; i < count && ok; i++)
            ok = port_free(p + i) == p + i;
        if (ok) {
            last = p + count - 1;
            return p;
        }
    }
    die("no free loopback ports");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------------------------- minimal RESP */

/* A blocking Redis client that speaks just enough RESP: commands as arrays
 * of bulk strings, replies of one level (status, error, integer, bulk). */
typedef struct {
    int fd;
    char *out;
    size_t olen, ocap;
    char in[1 << 16];
    size_t ir, iw;
} resp_t;

typedef struct {
    char type;                  /* + - : $ */
    long long num;              /* integer, or bulk length (-1 = nil) */
    char *str;                  /* status, error or bulk text (malloc'd) */
} reply_t;

static int resp_connect(resp_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *) &a, sizeof a) < 0) {
        close(c->fd);
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void resp_close(resp_t *c)
{
    if (c->fd > 0)
        close(c->fd);
    free(c->out);
    c->fd = -1;
    c->out = NULL;
}

static void out_add(resp_t *c, const void *p, size_t n)
{
    if (c->olen + n > c->ocap) {
        c->ocap = (c->olen + n) * 2;
        c->out = realloc(c->out, c->ocap);
        if (!c->out)
            die("out of memory");
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
}

/* Queues one command; argv[i] has lens[i] bytes. */
static void resp_cmd(resp_t *c, int argc, const char *const *argv, const size_t *lens)
{
    char hdr[32];
    out_add(c, hdr, (size_t) snprintf(hdr, sizeof hdr, "*%d\r\n", argc));
    for (int i = 0; i < argc; i++) {
        out_add(c, hdr, (size_t) snprintf(hdr, sizeof hdr, "$%zu\r\n", lens[i]));
        out_add(c, argv[i], lens[i]);
        out_add(c, "\r\n", 2);
    }
}

static void resp_flush(resp_t *c)
{
    write_all(c->fd, c->out, c->olen);
    c->olen = 0;
}

static void in_fill(resp_t *c)
{
    if (c->ir == c->iw)
        c->ir = c->iw = 0;
    else if (c->iw == sizeof c->in) {
        memmove(c->in, c->in + c->ir, c->iw - c->ir);
        c->iw -= c->ir;
        c->ir = 0;
    }
    ssize_t n;
    do
        n = read(c->fd, c->in + c->iw, sizeof c->in - c->iw);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        die("redis connection: %s", n ? strerror(errno) : "closed");
    c->iw += (size_t) n;
}

static char *in_line(resp_t *c)
{
    for (;;) {
        char *start = c->in + c->ir;
        char *nl = memchr(start, '\n', c->iw - c->ir);
        if (nl) {
            *nl = 0;
            if (nl > start && nl[-1] == '\r')
                nl[-1] = 0;
            c->ir = (size_t) (nl + 1 - c->in);
            return start;
        }
        in_fill(c);
    }
}

/* Reads one reply; `keep` asks for the text of a bulk reply. */
static void resp_read(resp_t *c, reply_t *r, bool keep)
{
    char *line = in_line(c);
    r->type = line[0];
    r->num = 0;
    r->str = NULL;
    switch (line[0]) {
    case '+':
    case '-':
        r->str = strdup(line + 1);
        if (line[0] == '-')
            die("redis error: %s", line + 1);
        return;
    case ':':
        r->num = strtoll(line + 1, NULL, 10);
        return;
    case '$': {
        r->num = strtoll(line + 1, NULL, 10);
        if (r->num < 0)
            return;
        size_t need = (size_t) r->num + 2, got = 0;
        if (keep)
            r->str = xmalloc(need + 1);
        while (got < need) {
            if (c->ir == c->iw)
                in_fill(c);
            size_t take = c->iw - c->ir < need - got ? c->iw - c->ir : need - got;
            if (keep)
                memcpy(r->str + got, c->in + c->ir, take);
            c->ir += take;
            got += take;
        }
        if (keep)
            r->str[r->num] = 0;
        return;
    }
    default:
        die("unexpected redis reply '%s'", line);
    }
}

static void reply_free(reply_t *r)
{
    free(r->str);
    r->str = NULL;
}

/* Runs one command given as NUL-terminated words and returns its reply. */
static void resp_run(resp_t *c, reply_t *r, int argc, const char *const *argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    resp_cmd(c, argc, argv, lens);
    resp_flush(c);
    resp_read(c, r, true);
}

/* ------------------------------------------------------- the protocol */

enum {
    OP_QUIT = 1,
    OP_NODE_START,      /* port, peers, join: start a node (join is timed) */
    OP_NODE_DESTROY,
    OP_WAIT_PEERS,      /* count: until that many peers are alive */
    OP_SN_WRITE,        /* prefix, count, size, rate, tag */
    OP_SN_DETECT,       /* prefix, count: arrival time of each id */
    OP_SN_WAIT_DELTAS,  /* count: until that many more deltas were received */
    OP_ZMQ_PUB,         /* port: bind */
    OP_ZMQ_SUB,         /* port: connect */
    OP_ZMQ_SEND,        /* count, size, rate */
    OP_ZMQ_RECV,        /* count: arrival time of each sequence number */
    OP_ZMQ_CLOSE,
    OP_REDIS_WRITE,     /* port, prefix, count, size, rate, tag */
    OP_REDIS_DETECT,    /* port, prefix, count */
    OP_REDIS_WAIT_TAG,  /* port, prefix, count, tag: until the last key has it */
};

typedef struct {
    int op;
    int port;
    int peers[4];
    int npeers;
    int join;
    int count;
    int size;
    int rate;                   /* writes/s; for a detector, its poll interval in us */
    int ae_ms;                  /* a node's antientropy_ms; 0 = its default */
    uint32_t tag;
    char prefix[24];
    char name[8];
} cmd_t;

enum { R_ACK = 1, R_DONE = 2 };

typedef struct {
    int kind;
    int rc;                     /* 0 = success */
    uint64_t t[4];              /* op-specific times and counts */
    sn_node_stats_t st;         /* the child's node, when it has one */
    uint32_t nsamples;          /* uint64 values that follow */
    char err[200];
} res_t;

/* ------------------------------------------------------------- child */

typedef struct {
    int cmd_fd, res_fd;
    sn_node_t *node;
    char name[8];
    void *zctx, *zsock;
    uint64_t *samples;
} child_t;

static child_t *g_child;        /* set in child processes only */

static void child_reply(child_t *c, int kind, int rc, const uint64_t *t, const uint64_t *samples,
                        uint32_t n, const char *err)
{
    res_t r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.rc = rc;
    if (t)
        memcpy(r.t, t, sizeof r.t);
    if (c->node)
        sn_node_stats(c->node, &r.st);
    r.nsamples = n;
    if (err)
        snprintf(r.err, sizeof r.err, "%s: %s", c->name, err);
    write_all(c->res_fd, &r, sizeof r);
    if (n)
        write_all(c->res_fd, samples, (size_t) n * sizeof *samples);
}

static void die(const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_child) {
        /* the parent prints it and stops everything */
        child_reply(g_child, R_DONE, 1, NULL, NULL, 0, msg);
        _exit(1);
    }
    fprintf(stderr, "bench_repl: %s\n", msg);
    exit(1);
}

static void node_log(int level, const char *msg, void *arg)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "  [node %s] %s: %s\n", (const char *) arg,
            names[level >= 0 && level <= 3 ? level : 3], msg);
}

static void make_id(char *out, size_t cap, const char *prefix, int k)
{
    snprintf(out, cap, "%s%08x", prefix, (unsigned) k);
}

/* Between two probes of a detector: `us` microseconds of sleep, or with 0
 * a sched_yield, which keeps a core busy but hands it to any runnable
 * thread first. */
static void poll_pause(int us)
{
    if (us > 0)
        sleep_us((unsigned) us);
    else
        sched_yield();
}

/* Value layout: send time, sequence number, round tag, then filler. */
static void stamp_value(uint8_t *v, uint64_t ts, uint64_t seq, uint32_t tag)
{
    memcpy(v, &ts, 8);
    memcpy(v + 8, &seq, 8);
    memcpy(v + 16, &tag, 4);
}

static uint8_t *new_value(int size)
{
    uint8_t *v = xmalloc((size_t) size);
    for (int i = 0; i < size; i++)
        v[i] = (uint8_t) ('a' + i % 26);
    return v;
}

/* Arrivals of the latency round running in this process: the ids are
 * "<prefix><8 hex digits>", and the callback stamps the first arrival of
 * each index. */
static struct {
    char prefix[32];
    size_t prefix_len;
    int count;
    uint64_t *samples;
    _Atomic int arrived;
} g_arrivals;

static void on_change(const void *id, size_t id_len, void *arg)
{
    (void) arg;
    uint64_t now = now_ns();
    int count = __atomic_load_n(&g_arrivals.count, __ATOMIC_SEQ_CST);
    if (!count || id_len != g_arrivals.prefix_len + 8 ||
        memcmp(id, g_arrivals.prefix, g_arrivals.prefix_len))
        return;
    char hex[9];
    memcpy(hex, (const char *) id + g_arrivals.prefix_len, 8);
    hex[8] = 0;
    unsigned long k = strtoul(hex, NULL, 16);
    if (k < (unsigned long) count && !g_arrivals.samples[k]) {
        g_arrivals.samples[k] = now;
        atomic_fetch_add(&g_arrivals.arrived, 1);
    }
}

static void op_node_start(child_t *c, const cmd_t *m)
{
    char cluster[64], peer_addr[4][64];
    const char *peers[5] = {0};
    snprintf(cluster, sizeof cluster, "tcp://127.0.0.1:%d", m->port);
    for (int i = 0; i < m->npeers; i++) {
        snprintf(peer_addr[i], sizeof peer_addr[i], "tcp://127.0.0.1:%d", m->peers[i]);
        peers[i] = peer_addr[i];
    }
    snprintf(c->name, sizeof c->name, "%s", m->name);
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.name = c->name;
    cfg.cluster = cluster;
    cfg.peers = peers;
    cfg.join = m->join;
    cfg.join_timeout_ms = 10000;
    cfg.log = node_log;
    cfg.log_arg = c->name;
    cfg.log_level = SN_LOG_WARN;
    cfg.on_change = on_change;
    if (m->ae_ms > 0)
        cfg.antientropy_ms = (uint32_t) m->ae_ms;
    c->node = sn_node_new(&cfg);
    if (!c->node)
        die("sn_node_new failed");
    uint64_t t[4] = {0};
    t[0] = now_ns();
    int rc = sn_node_start(c->node);
    if (rc)
        die("sn_node_start(%s): %s", cluster, sn_err_name(rc));
    if (!m->join) {
        child_reply(c, R_DONE, 0, t, NULL, 0, NULL);
        return;
    }
    /* The first snapshot session tells discovery (finding a live peer,
     * paced by heartbeats) from streaming; a probe every 200 us is fine
     * against a transfer that takes about a second. */
    sn_node_stats_t st;
    do {
        sn_node_stats(c->node, &st);
        if (st.snapshot_sessions == 0)
            sleep_us(200);
    } while (st.snapshot_sessions == 0 && now_ns() - t[0] < 30000000000ull);
    t[2] = now_ns();
    rc = sn_node_wait_ready(c->node, 60000);
    t[1] = now_ns();
    if (rc)
        die("sn_node_wait_ready: %s", sn_err_name(rc));
    child_reply(c, R_DONE, 0, t, NULL, 0, NULL);
}

static void op_wait_peers(child_t *c, const cmd_t *m)
{
    uint64_t t0 = now_ns();
    sn_node_stats_t st;
    for (;;) {
        sn_node_stats(c->node, &st);
        if (st.peers_alive >= (uint64_t) m->count)
            break;
        if (now_ns() - t0 > 10000000000ull)
            die("only %" PRIu64 " of %d peers alive after 10 s", st.peers_alive, m->count);
        sleep_us(5000);
    }
    child_reply(c, R_DONE, 0, NULL, NULL, 0, NULL);
}

static void op_sn_write(child_t *c, const cmd_t *m)
{
    uint8_t *v = new_value(m->size);
    char id[48];
    sn_write_t w = {.create = 1};
    uint64_t t[4] = {0}, interval = m->rate ? 1000000000u / (uint64_t) m->rate : 0;
    uint64_t start = now_ns() + 1000000;
    t[0] = m->rate ? start : now_ns();
    for (int k = 0; k < m->count; k++) {
        make_id(id, sizeof id, m->prefix, k);
        if (interval)
            sleep_until(start + (uint64_t) k * interval);
        uint64_t ts = now_ns();
        stamp_value(v, ts, (uint64_t) k, m->tag);
        int rc = sn_node_put(c->node, id, strlen(id), ATTR, sizeof ATTR - 1, v, (size_t) m->size,
                             &w);
        if (rc)
            die("sn_node_put(%s): %s", id, sn_err_name(rc));
        if (interval)
            c->samples[k] = ts;
    }
    t[1] = now_ns();
    free(v);
    child_reply(c, R_DONE, 0, t, c->samples, interval ? (uint32_t) m->count : 0, NULL);
}

static void op_sn_detect(child_t *c, const cmd_t *m)
{
    /* armed before the ACK, so no arrival of this round can be missed */
    memset(c->samples, 0, (size_t) m->count * sizeof *c->samples);
    snprintf(g_arrivals.prefix, sizeof g_arrivals.prefix, "%s", m->prefix);
    g_arrivals.prefix_len = strlen(g_arrivals.prefix);
    g_arrivals.samples = c->samples;
    atomic_store(&g_arrivals.arrived, 0);
    __atomic_store_n(&g_arrivals.count, m->count, __ATOMIC_SEQ_CST);
    child_reply(c, R_ACK, 0, NULL, NULL, 0, NULL);
    uint64_t last = now_ns();
    int seen = 0;
    while ((seen = atomic_load(&g_arrivals.arrived)) < m->count) {
        /* the callback stamps; this only waits, rarely, so that its wake-ups
         * do not keep the VM's CPUs awake for the node's threads */
        poll_pause(m->rate > 0 ? m->rate * 1000 : 20000);
        if (seen != atomic_load(&g_arrivals.arrived))
            last = now_ns();
        if (now_ns() - last > 10000000000ull)
            die("%d of %d sessions arrived; nothing for 10 s", seen, m->count);
    }
    __atomic_store_n(&g_arrivals.count, 0, __ATOMIC_SEQ_CST);
    child_reply(c, R_DONE, 0, NULL, c->samples, (uint32_t) m->count, NULL);
}

/* Waits until B holds all m->count writes of this round. The fast path is
 * the count of received deltas. Deltas that were lost and came back some
 * other way (a session fetched whole after the writer's backlog ran out)
 * leave that count short; then B relies on the writer's heartbeats: once
 * the counters have not moved for 20 ms and two heartbeats of the writer
 * in a row announce the same last sequence with nothing missing (lag 0),
 * B holds everything. Reads would be accesses and send touches, so B does
 * not read the values to check. */
static void op_sn_wait_deltas(child_t *c, const cmd_t *m)
{
    sn_node_stats_t st;
    sn_node_stats(c->node, &st);
    uint64_t want = st.deltas_received + (uint64_t) m->count;
    child_reply(c, R_ACK, 0, NULL, NULL, 0, NULL);
    uint64_t t0 = now_ns(), t[4] = {0}, moved = t0, progress = 0;
    uint64_t seen_heard = 0, seen_pseq = 0;
    bool complete = false, slow = false;
    for (;;) {
        sn_node_stats(c->node, &st);
        if (st.deltas_received >= want) {
            complete = true;
            break;
        }
        uint64_t now = now_ns(), p = st.deltas_received + st.repaired + st.full_fetches;
        if (p != progress) {
            progress = p;
            moved = now;
            seen_heard = 0;
        } else if (now - moved > 20000000u) {
            sn_member_t mem[4];
            size_t n = 0;
            sn_node_members(c->node, mem, 4, &n);
            for (size_t i = 0; i < n && i < 4; i++) {
                if (strcmp(mem[i].name, m->name) != 0)
                    continue;
                if (mem[i].lag == 0 && seen_heard && mem[i].last_heard_ms > seen_heard &&
                    mem[i].last_pseq == seen_pseq)
                    complete = slow = true;
                else if (mem[i].last_heard_ms != seen_heard) {
                    seen_heard = mem[i].lag == 0 ? mem[i].last_heard_ms : 0;
                    seen_pseq = mem[i].last_pseq;
                }
            }
            if (complete)
                break;
        }
        if (now - t0 > 30000000000ull)
            break;              /* reported as incomplete */
        sleep_us(200);
    }
    t[0] = now_ns();
    t[1] = complete ? (uint64_t) m->count : st.deltas_received + (uint64_t) m->count - want;
    t[2] = slow;
    child_reply(c, R_DONE, 0, t, NULL, 0, NULL);
}

static void op_zmq_open(child_t *c, const cmd_t *m, int type)
{
    if (!c->zctx && !(c->zctx = zmq_ctx_new()))
        die("zmq_ctx_new failed");
    c->zsock = zmq_socket(c->zctx, type);
    int hwm = ZMQ_HWM, zero = 0;
    zmq_setsockopt(c->zsock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->zsock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->zsock, ZMQ_LINGER, &zero, sizeof zero);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", m->port);
    int rc;
    if (type == ZMQ_PUB) {
        rc = zmq_bind(c->zsock, ep);
    } else {
        zmq_setsockopt(c->zsock, ZMQ_SUBSCRIBE, "", 0);
        rc = zmq_connect(c->zsock, ep);
    }
    if (rc)
        die("zmq %s %s: %s", type == ZMQ_PUB ? "bind" : "connect", ep, zmq_strerror(zmq_errno()));
    child_reply(c, R_DONE, 0, NULL, NULL, 0, NULL);
}

static void op_zmq_send(child_t *c, const cmd_t *m)
{
    uint8_t *v = new_value(m->size);
    uint64_t t[4] = {0}, interval = m->rate ? 1000000000u / (uint64_t) m->rate : 0;
    uint64_t start = now_ns() + 1000000;
    t[0] = m->rate ? start : now_ns();
    for (int k = 0; k < m->count; k++) {
        if (interval)
            sleep_until(start + (uint64_t) k * interval);
        uint64_t ts = now_ns();
        stamp_value(v, ts, (uint64_t) k, m->tag);
        if (zmq_send(c->zsock, v, (size_t) m->size, 0) != m->size)
            die("zmq_send: %s", zmq_strerror(zmq_errno()));
        if (interval)
            c->samples[k] = ts;
    }
    t[1] = now_ns();
    free(v);
    child_reply(c, R_DONE, 0, t, c->samples, interval ? (uint32_t) m->count : 0, NULL);
}

static void op_zmq_recv(child_t *c, const cmd_t *m)
{
    int timeout = 5000;
    zmq_setsockopt(c->zsock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    memset(c->samples, 0, (size_t) m->count * sizeof *c->samples);
    child_reply(c, R_ACK, 0, NULL, NULL, 0, NULL);
    uint8_t *buf = xmalloc((size_t) m->size + 64);
    uint64_t t[4] = {0};
    int got = 0;
    while (got < m->count) {
        int n = zmq_recv(c->zsock, buf, (size_t) m->size + 64, 0);
        uint64_t arrival = now_ns();
        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;              /* silence for 5 s: report what came */
        }
        uint64_t seq;
        memcpy(&seq, buf + 8, 8);
        if (n < 16 || seq >= (uint64_t) m->count || c->samples[seq])
            continue;
        c->samples[seq] = arrival;
        t[0] = arrival;
        got++;
    }
    t[1] = (uint64_t) got;
    free(buf);
    child_reply(c, R_DONE, 0, t, c->samples, (uint32_t) m->count, NULL);
}

static void redis_set(resp_t *r, const char *key, const uint8_t *v, int size)
{
    const char *argv[3] = {"SET", key, (const char *) v};
    size_t lens[3] = {3, strlen(key), (size_t) size};
    resp_cmd(r, 3, argv, lens);
}

static void op_redis_write(child_t *c, const cmd_t *m)
{
    resp_t r;
    if (resp_connect(&r, m->port))
        die("cannot connect to redis on port %d", m->port);
    uint8_t *v = new_value(m->size);
    char key[48];
    reply_t rep;
    uint64_t t[4] = {0}, interval = m->rate ? 1000000000u / (uint64_t) m->rate : 0;
    uint64_t start = now_ns() + 1000000;
    t[0] = m->rate ? start : now_ns();
    int queued = 0;
    for (int k = 0; k < m->count; k++) {
        make_id(key, sizeof key, m->prefix, k);
        if (interval)
            sleep_until(start + (uint64_t) k * interval);
        uint64_t ts = now_ns();
        stamp_value(v, ts, (uint64_t) k, m->tag);
        redis_set(&r, key, v, m->size);
        queued++;
        if (interval)
            c->samples[k] = ts;
        if (interval || queued == REDIS_BATCH || k + 1 == m->count) {
            resp_flush(&r);
            for (; queued; queued--) {
                resp_read(&r, &rep, false);
                reply_free(&rep);
            }
        }
    }
    t[1] = now_ns();
    free(v);
    resp_close(&r);
    child_reply(c, R_DONE, 0, t, c->samples, interval ? (uint32_t) m->count : 0, NULL);
}

/* Arrival on the replica is pushed, not polled: the replica publishes a
 * keyspace event for each SET it applies from the primary, and B blocks on
 * its subscription as the raw PUB/SUB receiver blocks in zmq_recv. Polling
 * the replica with EXISTS would also work, but every probe is a round trip
 * that the replica's single thread must serve between replication writes,
 * which on two cores measures the probing more than the replication. */
static void op_redis_detect(child_t *c, const cmd_t *m)
{
    resp_t r;
    if (resp_connect(&r, m->port))
        die("cannot connect to redis on port %d", m->port);
    reply_t rep;
    const char *cfg[4] = {"CONFIG", "SET", "notify-keyspace-events", "E$"};
    resp_run(&r, &rep, 4, cfg);
    reply_free(&rep);
    const char *sub[2] = {"SUBSCRIBE", "__keyevent@0__:set"};
    size_t lens[2] = {9, strlen(sub[1])};
    resp_cmd(&r, 2, sub, lens);
    resp_flush(&r);
    /* the confirmation: *3, "subscribe", the channel, the count */
    char *line = in_line(&r);
    if (line[0] != '*')
        die("unexpected reply to SUBSCRIBE: %s", line);
    for (int i = 0; i < 3; i++) {
        resp_read(&r, &rep, false);
        reply_free(&rep);
    }
    memset(c->samples, 0, (size_t) m->count * sizeof *c->samples);
    child_reply(c, R_ACK, 0, NULL, NULL, 0, NULL);
    size_t plen = strlen(m->prefix);
    int got = 0;
    while (got < m->count) {
        line = in_line(&r);
        if (line[0] != '*')
            die("unexpected push from redis: %s", line);
        resp_read(&r, &rep, false);     /* "message" */
        reply_free(&rep);
        resp_read(&r, &rep, false);     /* the channel */
        reply_free(&rep);
        resp_read(&r, &rep, true);      /* the key */
        uint64_t arrival = now_ns();
        if (rep.str && strncmp(rep.str, m->prefix, plen) == 0) {
            unsigned long k = strtoul(rep.str + plen, NULL, 16);
            if (k < (unsigned long) m->count && !c->samples[k]) {
                c->samples[k] = arrival;
                got++;
            }
        }
        reply_free(&rep);
    }
    resp_close(&r);
    child_reply(c, R_DONE, 0, NULL, c->samples, (uint32_t) m->count, NULL);
}

static void op_redis_wait_tag(child_t *c, const cmd_t *m)
{
    resp_t r;
    if (resp_connect(&r, m->port))
        die("cannot connect to redis on port %d", m->port);
    child_reply(c, R_ACK, 0, NULL, NULL, 0, NULL);
    char key[48];
    make_id(key, sizeof key, m->prefix, m->count - 1);
    const char *full[4] = {"GETRANGE", key, "16", "19"};
    reply_t rep;
    uint64_t t0 = now_ns(), t[4] = {0};
    for (;;) {
        resp_run(&r, &rep, 4, full);
        uint32_t tag = 0;
        bool match = rep.type == '$' && rep.num == 4 && (memcpy(&tag, rep.str, 4), tag == m->tag);
        reply_free(&rep);
        if (match)
            break;
        if (now_ns() - t0 > 120000000000ull)
            die("the replica did not get key %s within 120 s", key);
        sleep_us(200);
    }
    t[0] = now_ns();
    resp_close(&r);
    child_reply(c, R_DONE, 0, t, NULL, 0, NULL);
}

static void child_main(int cmd_fd, int res_fd, const char *name)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* the pacing sleeps want their wake-ups on time */
    prctl(PR_SET_TIMERSLACK, 1UL);
    child_t c = {.cmd_fd = cmd_fd, .res_fd = res_fd};
    snprintf(c.name, sizeof c.name, "%s", name);
    c.samples = xmalloc(MAX_SAMPLES * sizeof *c.samples);
    g_child = &c;
    cmd_t m;
    while (read_all(cmd_fd, &m, sizeof m)) {
        switch (m.op) {
        case OP_QUIT:
            sn_node_destroy(&c.node);
            if (c.zsock)
                zmq_close(c.zsock);
            if (c.zctx)
                zmq_ctx_term(c.zctx);
            _exit(0);
        case OP_NODE_START: op_node_start(&c, &m); break;
        case OP_NODE_DESTROY:
            sn_node_destroy(&c.node);
            child_reply(&c, R_DONE, 0, NULL, NULL, 0, NULL);
            break;
        case OP_WAIT_PEERS: op_wait_peers(&c, &m); break;
        case OP_SN_WRITE: op_sn_write(&c, &m); break;
        case OP_SN_DETECT: op_sn_detect(&c, &m); break;
        case OP_SN_WAIT_DELTAS: op_sn_wait_deltas(&c, &m); break;
        case OP_ZMQ_PUB: op_zmq_open(&c, &m, ZMQ_PUB); break;
        case OP_ZMQ_SUB: op_zmq_open(&c, &m, ZMQ_SUB); break;
        case OP_ZMQ_SEND: op_zmq_send(&c, &m); break;
        case OP_ZMQ_RECV: op_zmq_recv(&c, &m); break;
        case OP_ZMQ_CLOSE:
            zmq_close(c.zsock);
            c.zsock = NULL;
            child_reply(&c, R_DONE, 0, NULL, NULL, 0, NULL);
            break;
        case OP_REDIS_WRITE: op_redis_write(&c, &m); break;
        case OP_REDIS_DETECT: op_redis_detect(&c, &m); break;
        case OP_REDIS_WAIT_TAG: op_redis_wait_tag(&c, &m); break;
        default: die("unknown command %d", m.op);
        }
    }
    _exit(0);
}

/* ------------------------------------------------------------ parent */

typedef struct {
    pid_t pid;
    int cmd_fd, res_fd;
    char name[8];
} proc_t;

#define PIDS_MAX 32
static pid_t g_pids[PIDS_MAX];
static int g_npids;
static char g_tmpdir[64];

static void track(pid_t pid)
{
    if (g_npids < PIDS_MAX)
        g_pids[g_npids++] = pid;
}

static void untrack_and_stop(pid_t pid)
{
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] == pid) {
            g_pids[i] = g_pids[--g_npids];
            /* czmq turns SIGTERM into a flag in node processes, and none
             * of these processes has state worth a clean shutdown */
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    remove(path);
    return 0;
}

/* Stops every process this run started (by PID) and removes the Redis
 * directory. */
static void cleanup(void)
{
    if (g_child)
        return;
    while (g_npids)
        untrack_and_stop(g_pids[g_npids - 1]);
    if (g_tmpdir[0])
        nftw(g_tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_tmpdir[0] = 0;
}

static void on_signal(int sig)
{
    (void) sig;
    cleanup();
    _exit(2);
}

static proc_t spawn(const char *name)
{
    int cp[2], rp[2];
    if (pipe2(cp, O_CLOEXEC) || pipe2(rp, O_CLOEXEC))
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(cp[1]);
        close(rp[0]);
        g_npids = 0;
        child_main(cp[0], rp[1], name);
    }
    close(cp[0]);
    close(rp[1]);
    track(pid);
    proc_t p = {.pid = pid, .cmd_fd = cp[1], .res_fd = rp[0]};
    snprintf(p.name, sizeof p.name, "%s", name);
    return p;
}

static void send_cmd(const proc_t *p, cmd_t m)
{
    write_all(p->cmd_fd, &m, sizeof m);
}

static void print_stats(const char *who, const sn_node_stats_t *s)
{
    printf("    node %s: received %" PRIu64 ", gaps %" PRIu64 ", repaired %" PRIu64
           ", resyncs %" PRIu64 " (differences settled by deltas in flight %" PRIu64
           "), full fetches %" PRIu64 ", queue overflows %" PRIu64 ", dropped frames %" PRIu64 "\n",
           who, s->deltas_received, s->gaps_detected, s->repaired, s->resyncs, s->resync_settled,
           s->full_fetches, s->queue_overflows, s->bad_frames);
}

/* Reads the next reply of child p; samples (if any) go to *out, which must
 * hold MAX_SAMPLES. */
static res_t get_reply(const proc_t *p, int kind, uint64_t *out)
{
    res_t r;
    if (!read_all(p->res_fd, &r, sizeof r))
        die("process %s ended unexpectedly", p->name);
    if (r.rc) {
        if (r.st.bytes_received)
            print_stats(p->name, &r.st);
        die("%s", r.err);
    }
    if (r.kind != kind)
        die("process %s: reply out of order", p->name);
    if (r.nsamples) {
        if (r.nsamples > MAX_SAMPLES)
            die("process %s: too many samples", p->name);
        uint64_t *sink = out ? out : xmalloc((size_t) r.nsamples * sizeof *sink);
        if (!read_all(p->res_fd, sink, (size_t) r.nsamples * sizeof *sink))
            die("process %s ended unexpectedly", p->name);
        if (!out)
            free(sink);
    }
    return r;
}

static res_t call(const proc_t *p, cmd_t m, uint64_t *out)
{
    send_cmd(p, m);
    return get_reply(p, R_DONE, out);
}

static void stop_proc(proc_t *p)
{
    send_cmd(p, (cmd_t){.op = OP_QUIT});
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] == p->pid) {
            g_pids[i] = g_pids[--g_npids];
            break;
        }
    waitpid(p->pid, NULL, 0);
    close(p->cmd_fd);
    close(p->res_fd);
}

/* --------------------------------------------------------- redis-server */

static const char *g_redis = "redis-server";

static bool redis_ping(int port)
{
    resp_t r;
    if (resp_connect(&r, port))
        return false;
    reply_t rep;
    const char *argv[1] = {"PING"};
    resp_run(&r, &rep, 1, argv);
    bool ok = rep.str && strcmp(rep.str, "PONG") == 0;
    reply_free(&rep);
    resp_close(&r);
    return ok;
}

static pid_t redis_start(int port, const char *tag)
{
    char dir[128], ports[16], log[160];
    snprintf(dir, sizeof dir, "%s/%s", g_tmpdir, tag);
    if (mkdir(dir, 0700) && errno != EEXIST)
        die("mkdir %s: %s", dir, strerror(errno));
    snprintf(ports, sizeof ports, "%d", port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Diskless sync without its default 5 s wait for more replicas:
         * otherwise a full resync would mostly measure that wait. No
         * active rehashing: after a round that crossed 65,536 or 131,072
         * keys, the three Redis processes went on rehashing in their idle
         * time, a millisecond every 100 ms each, during the next system's
         * round (sessnode's p99 there doubled). Rehashing still advances
         * with every command, during Redis's own rounds. */
        execlp(g_redis, g_redis, "--port", ports, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", dir, "--logfile", log, "--daemonize", "no",
               "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
               "--activerehashing", "no", (char *) NULL);
        fprintf(stderr, "bench_repl: cannot run %s: %s\n", g_redis, strerror(errno));
        _exit(127);
    }
    track(pid);
    for (int i = 0; i < 1000; i++) {
        if (redis_ping(port))
            return pid;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            g_npids--;
            die("%s on port %d exited at once (log: %s)", g_redis, port, log);
        }
        sleep_us(10000);
    }
    die("%s on port %d does not answer", g_redis, port);
}

static void redis_simple(int port, int argc, const char *const *argv)
{
    resp_t r;
    if (resp_connect(&r, port))
        die("cannot connect to redis on port %d", port);
    reply_t rep;
    resp_run(&r, &rep, argc, argv);
    reply_free(&rep);
    resp_close(&r);
}

static void redis_replicaof(int port, int primary)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", primary);
    const char *argv[3] = {"REPLICAOF", "127.0.0.1", ps};
    redis_simple(port, 3, argv);
}

/* True once the replica's link is up and no sync is in progress. */
static bool redis_synced(resp_t *r)
{
    reply_t rep;
    const char *argv[2] = {"INFO", "replication"};
    resp_run(r, &rep, 2, argv);
    bool ok = rep.str && strstr(rep.str, "master_link_status:up") &&
              strstr(rep.str, "master_sync_in_progress:0");
    reply_free(&rep);
    return ok;
}

static long long redis_dbsize(int port)
{
    resp_t r;
    if (resp_connect(&r, port))
        die("cannot connect to redis on port %d", port);
    reply_t rep;
    const char *argv[1] = {"DBSIZE"};
    resp_run(&r, &rep, 1, argv);
    resp_close(&r);
    return rep.num;
}

static void redis_wait_synced(int port)
{
    resp_t r;
    if (resp_connect(&r, port))
        die("cannot connect to redis on port %d", port);
    uint64_t t0 = now_ns();
    while (!redis_synced(&r)) {
        if (now_ns() - t0 > 60000000000ull)
            die("redis replica on port %d did not sync within 60 s", port);
        sleep_us(1000);
    }
    resp_close(&r);
}

/* CPU time (user + system) a process has used so far, in seconds. */
static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* fields after the command name, which may hold spaces */
    char *s = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!s || sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static double cpu_sum(const pid_t *pids, int n)
{
    double t = 0;
    for (int i = 0; i < n; i++)
        t += proc_cpu(pids[i]);
    return t;
}

/* ------------------------------------------------------------ results */

typedef struct {
    double p50, p99, p999, max;
    int n;
} pct_t;

/* Percentiles of arrival - send in microseconds, warm-up dropped. */
static pct_t latencies(const uint64_t *sent, const uint64_t *arrived, int warm, int count,
                       int *missing)
{
    uint64_t *d = xmalloc((size_t) count * sizeof *d);
    int n = 0;
    *missing = 0;
    for (int k = warm; k < count; k++) {
        if (!arrived[k]) {
            (*missing)++;
            continue;
        }
        d[n++] = arrived[k] > sent[k] ? arrived[k] - sent[k] : 0;
    }
    qsort(d, (size_t) n, sizeof *d, cmp_u64);
    pct_t p = {.n = n};
    if (n) {
        p.p50 = (double) d[(size_t) ((n - 1) * 0.5)] / 1e3;
        p.p99 = (double) d[(size_t) ((n - 1) * 0.99)] / 1e3;
        p.p999 = (double) d[(size_t) ((n - 1) * 0.999)] / 1e3;
        p.max = (double) d[n - 1] / 1e3;
    }
    free(d);
    return p;
}

typedef struct {
    int rate, lat_writes, warmup, tput_writes, rounds, lat_rounds, join_sessions, poll_us;
    int antientropy_ms;         /* 0: the nodes' default */
    int sizes[4], nsizes;
} params_t;

static void usage(FILE *out)
{
    fputs("usage: bench_repl [--rate N] [--lat-writes N] [--warmup N] [--tput-writes N]\n"
          "                  [--rounds R] [--join-sessions N] [--sizes B,B] [--poll-us N]\n"
          "                  [--antientropy-ms N] [--redis PATH]\n"
          "  --rate N           paced writes per second for latency (default 10000)\n"
          "  --lat-writes N     measured writes per latency run (default 20000)\n"
          "  --warmup N         unmeasured writes before them (default 2000)\n"
          "  --tput-writes N    writes per throughput round, 1 KiB (default 200000)\n"
          "  --rounds R         throughput and join rounds (default 3)\n"
          "  --lat-rounds R     latency rounds per size, each system in turn (default 5)\n"
          "  --join-sessions N  sessions a joining node copies, 1 KiB (default 100000)\n"
          "  --sizes B,B        value sizes for latency (default 256,1024)\n"
          "  --poll-us N        detectors sleep N us between probes (sessnode: 1000x that\n"
          "                     between progress checks; arrivals are stamped by on_change)\n"
          "                     with sched_yield (default 20)\n"
          "  --antientropy-ms N the latency and throughput nodes compare all sessions\n"
          "                     with a peer about every N ms (default: the node default,\n"
          "                     60000); a small N measures latency while they compare\n"
          "  --redis PATH       redis-server to run (default: redis-server on PATH)\n",
          out);
}

static int parse_int(const char *flag, const char *s, int lo, int hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s wants an integer in [%d, %d], got '%s'", flag, lo, hi, s);
    return (int) v;
}

static void parse_args(int argc, char **argv, params_t *p)
{
    *p = (params_t){.rate = 10000, .lat_writes = 20000, .warmup = 2000, .tput_writes = 200000,
                    .rounds = 3, .lat_rounds = 5, .join_sessions = 100000, .poll_us = 20, .sizes = {256, 1024}, .nsizes = 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            die("unknown option or missing value: %s", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--rate"))
            p->rate = parse_int(a, v, 100, 1000000);
        else if (!strcmp(a, "--lat-writes"))
            p->lat_writes = parse_int(a, v, 100, MAX_SAMPLES / 2);
        else if (!strcmp(a, "--warmup"))
            p->warmup = parse_int(a, v, 0, MAX_SAMPLES / 2);
        else if (!strcmp(a, "--tput-writes"))
            p->tput_writes = parse_int(a, v, 100, MAX_SAMPLES);
        else if (!strcmp(a, "--rounds"))
            p->rounds = parse_int(a, v, 1, 20);
        else if (!strcmp(a, "--lat-rounds"))
            p->lat_rounds = parse_int(a, v, 1, 9);
        else if (!strcmp(a, "--join-sessions"))
            p->join_sessions = parse_int(a, v, 100, MAX_SAMPLES);
        else if (!strcmp(a, "--poll-us"))
            p->poll_us = parse_int(a, v, 0, 10000);
        else if (!strcmp(a, "--antientropy-ms"))
            p->antientropy_ms = parse_int(a, v, 100, 3600000);
        else if (!strcmp(a, "--redis"))
            g_redis = v;
        else if (!strcmp(a, "--sizes")) {
            p->nsizes = 0;
            for (const char *s = v; *s && p->nsizes < 4;) {
                char *end;
                long b = strtol(s, &end, 10);
                if (end == s || b < 24 || b > 1 << 20)
                    die("--sizes wants sizes of 24..1048576 bytes, comma-separated");
                p->sizes[p->nsizes++] = (int) b;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                    die("--sizes: unexpected '%s'", end);
            }
        } else {
            usage(stderr);
            die("unknown option: %s", a);
        }
    }
}

static bool on_path(const char *prog)
{
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0;
    const char *path = getenv("PATH");
    char buf[512];
    for (const char *s = path ? path : "/usr/bin:/bin"; *s;) {
        const char *e = strchr(s, ':');
        size_t n = e ? (size_t) (e - s) : strlen(s);
        snprintf(buf, sizeof buf, "%.*s/%s", (int) n, s, prog);
        if (access(buf, X_OK) == 0)
            return true;
        s += n + (e ? 1 : 0);
    }
    return false;
}

static void redis_version(char *out, size_t cap)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --version 2>/dev/null", g_redis);
    snprintf(out, cap, "unknown");
    FILE *f = popen(cmd, "r");
    if (!f)
        return;
    char line[256];
    if (fgets(line, sizeof line, f)) {
        char *v = strstr(line, "v=");
        if (v) {
            snprintf(out, cap, "%s", v + 2);
            out[strcspn(out, " \n")] = 0;
        }
    }
    pclose(f);
}


/* ---------------------------------------------------------------- main */

enum { SYS_SN, SYS_ZMQ, SYS_REDIS, SYS_COUNT };
static const char *const sys_name[SYS_COUNT] = {"sessnode", "raw PUB/SUB", "Redis"};

int main(int argc, char **argv)
{
    params_t p;
    parse_args(argc, argv, &p);
    if (!on_path(g_redis))
        die("%s not found: install Debian's redis-server (bash scripts/deps.sh) "
            "or pass --redis PATH",
            g_redis);
    uint64_t t_start = now_ns();
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/bench_repl.XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        g_tmpdir[0] = 0;
        die("mkdtemp: %s", strerror(errno));
    }

    /* Children first: nothing in the parent has touched ZeroMQ. */
    proc_t A = spawn("A"), B = spawn("B"), C = spawn("C");

    char model[128], rver[32];
    cpu_model(model, sizeof model);
    redis_version(rver, sizeof rver);
    printf("sessnode replication benchmark (3 processes, loopback TCP)\n");
    printf("  cpu %s, %ld online; sessnode %s, libzmq %d.%d.%d, redis-server %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), sn_version(), ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR,
           ZMQ_VERSION_PATCH, rver);
    printf("  latency: %d writes/s, %d measured + %d warm-up per size, %d rounds; throughput:"
           " %d x 1 KiB, %d rounds; join: %d x 1 KiB, %d rounds\n",
           p.rate, p.lat_writes, p.warmup, p.lat_rounds, p.tput_writes, p.rounds,
           p.join_sessions, p.rounds);
    if (p.antientropy_ms)
        printf("  anti-entropy about every %d ms (--antientropy-ms)\n", p.antientropy_ms);
    fflush(stdout);

    /* The 3-node cluster: every node lists the other two. */
    int port[3];
    for (int i = 0; i < 3; i++)
        port[i] = free_ports(2);
    proc_t *nodes[3] = {&A, &B, &C};
    for (int i = 0; i < 3; i++) {
        cmd_t m = {.op = OP_NODE_START, .port = port[i], .npeers = 2, .ae_ms = p.antientropy_ms};
        m.peers[0] = port[(i + 1) % 3];
        m.peers[1] = port[(i + 2) % 3];
        snprintf(m.name, sizeof m.name, "%s", nodes[i]->name);
        call(nodes[i], m, NULL);
    }
    for (int i = 0; i < 3; i++)
        call(nodes[i], (cmd_t){.op = OP_WAIT_PEERS, .count = 2}, NULL);

    /* Redis: a primary and two replicas, the same fan-out. */
    int rport[3];
    pid_t rpid[3];
    for (int i = 0; i < 3; i++) {
        char tag[16];
        rport[i] = free_ports(1);
        snprintf(tag, sizeof tag, "r%d", i);
        rpid[i] = redis_start(rport[i], tag);
    }
    for (int i = 1; i < 3; i++) {
        redis_replicaof(rport[i], rport[0]);
        redis_wait_synced(rport[i]);
    }

    /* Raw PUB/SUB: A publishes, B and C subscribe, on their own port. */
    int zport = free_ports(1);
    call(&A, (cmd_t){.op = OP_ZMQ_PUB, .port = zport}, NULL);
    call(&B, (cmd_t){.op = OP_ZMQ_SUB, .port = zport}, NULL);
    call(&C, (cmd_t){.op = OP_ZMQ_SUB, .port = zport}, NULL);
    sleep_us(300000);           /* subscriptions travel to the publisher */

    /* CPU is read from /proc for the processes of each system: the three
     * children, and for Redis also its three servers. */
    pid_t all_pids[6] = {A.pid, B.pid, C.pid, rpid[0], rpid[1], rpid[2]};
    int total = p.warmup + p.lat_writes;
    uint64_t *sent = xmalloc(MAX_SAMPLES * sizeof *sent);
    uint64_t *arrived = xmalloc(MAX_SAMPLES * sizeof *arrived);
    pct_t lat[4][SYS_COUNT];
    int lost[4][SYS_COUNT] = {{0}};
    sn_node_stats_t lat_stats[4];

    /* ------------------------------------------------ 1. latency */
    printf("\n1. replication latency, one-way, us (arrival on B - send on A)\n");
    /* Rounds outermost, and in each the sizes and the systems take turns,
     * each round starting with the next size and the next system: the
     * nodes hold more sessions and a fuller backlog as the phase goes on,
     * and what runs later in it measured worse, whichever size it was. */
    pct_t per[9][4][SYS_COUNT];
    for (int lr = 0; lr < p.lat_rounds; lr++)
    for (int sturn = 0; sturn < p.nsizes; sturn++) {
        int si = (sturn + lr) % p.nsizes;
        int size = p.sizes[si];
        for (int turn = 0; turn < SYS_COUNT; turn++) {
            int sys = (turn + lr) % SYS_COUNT;
            cmd_t w = {.count = total, .size = size, .rate = p.rate};
            cmd_t d = {.count = total, .size = size, .rate = p.poll_us};
            /* new ids every round: each round creates its sessions */
            snprintf(w.prefix, sizeof w.prefix, "lat%d-%d-", size, lr);
            memcpy(d.prefix, w.prefix, sizeof d.prefix);
            res_t r;
            double cpu0 = cpu_sum(all_pids, sys == SYS_REDIS ? 6 : 3);
            if (sys == SYS_SN) {
                w.op = OP_SN_WRITE;
                d.op = OP_SN_DETECT;
                send_cmd(&B, d);
                get_reply(&B, R_ACK, NULL);
                r = call(&A, w, sent);
                r = get_reply(&B, R_DONE, arrived);
                lat_stats[si] = r.st;
            } else if (sys == SYS_ZMQ) {
                w.op = OP_ZMQ_SEND;
                d.op = OP_ZMQ_RECV;
                send_cmd(&B, d);
                send_cmd(&C, d);
                get_reply(&B, R_ACK, NULL);
                get_reply(&C, R_ACK, NULL);
                call(&A, w, sent);
                get_reply(&B, R_DONE, arrived);
                get_reply(&C, R_DONE, NULL);
            } else {
                w.op = OP_REDIS_WRITE;
                w.port = rport[0];
                d.op = OP_REDIS_DETECT;
                d.port = rport[1];
                send_cmd(&B, d);
                get_reply(&B, R_ACK, NULL);
                call(&A, w, sent);
                get_reply(&B, R_DONE, arrived);
            }
            double cpu = (cpu_sum(all_pids, sys == SYS_REDIS ? 6 : 3) - cpu0) / total * 1e6;
            int missing;
            pct_t *q = &per[lr][si][sys];
            *q = latencies(sent, arrived, p.warmup, total, &missing);
            lost[si][sys] += missing;
            printf("  %4d B  %-12s round %d  p50 %7.1f  p99 %7.1f  p99.9 %8.1f  max %8.1f  (n %d%s)"
                   "  cpu %.0f us/write\n",
                   size, sys_name[sys], lr, q->p50, q->p99, q->p999, q->max, q->n,
                   missing ? ", some lost" : "", cpu);
            fflush(stdout);
        }
    }
    for (int si = 0; si < p.nsizes; si++) {
        for (int sys = 0; sys < SYS_COUNT; sys++) {
            double v[3][9];
            pct_t *m = &lat[si][sys];
            *m = (pct_t){0};
            for (int lr = 0; lr < p.lat_rounds; lr++) {
                const pct_t *q = &per[lr][si][sys];
                v[0][lr] = q->p50;
                v[1][lr] = q->p99;
                v[2][lr] = q->p999;
                m->max = q->max > m->max ? q->max : m->max;
                m->n += q->n;
            }
            m->p50 = median(v[0], p.lat_rounds);
            m->p99 = median(v[1], p.lat_rounds);
            m->p999 = median(v[2], p.lat_rounds);
            printf("  %4d B  %-12s median of %d rounds: p50 %7.1f  p99 %7.1f  p99.9 %8.1f\n",
                   p.sizes[si], sys_name[sys], p.lat_rounds, m->p50, m->p99, m->p999);
        }
        print_stats("B", &lat_stats[si]);
    }

    /* ------------------------------------------------ 2. throughput */
    printf("\n2. sustained replicated writes, 1 KiB, %d per round, writes/s"
           " (first write on A to all held by B)\n",
           p.tput_writes);
    double tput[SYS_COUNT][21], tput_cpu[SYS_COUNT] = {0};
    sn_node_stats_t tput_a, tput_b;
    for (int round = 0; round < p.rounds + 1; round++) {
        for (int sys = 0; sys < SYS_COUNT; sys++) {
            cmd_t w = {.count = p.tput_writes, .size = 1024, .tag = (uint32_t) round + 1};
            snprintf(w.prefix, sizeof w.prefix, "tput-");
            cmd_t d = w;
            uint64_t t0, t1;
            double cpu0 = cpu_sum(all_pids, sys == SYS_REDIS ? 6 : 3);
            if (sys == SYS_SN) {
                w.op = OP_SN_WRITE;
                d.op = OP_SN_WAIT_DELTAS;
                snprintf(d.name, sizeof d.name, "A");
                /* C follows too, so the next round starts on a quiet
                 * cluster. */
                send_cmd(&B, d);
                send_cmd(&C, d);
                get_reply(&B, R_ACK, NULL);
                get_reply(&C, R_ACK, NULL);
                res_t ra = call(&A, w, NULL);
                res_t rb = get_reply(&B, R_DONE, NULL);
                get_reply(&C, R_DONE, NULL);
                t0 = ra.t[0];
                t1 = rb.t[0];
                tput_a = ra.st;
                tput_b = rb.st;
                if (rb.t[2])
                    printf("  sessnode round %d: deltas were lost and recovered; the end was"
                           " found from A's heartbeats (up to 100 ms late)\n",
                           round);
                if (rb.t[1] < (uint64_t) p.tput_writes) {
                    printf("  sessnode round %d: B received %" PRIu64 " of %d deltas in %.1f s;"
                           " the round counts as 0 writes/s\n",
                           round, rb.t[1], p.tput_writes, (double) (t1 - t0) / 1e9);
                    print_stats("A", &ra.st);
                    print_stats("B", &rb.st);
                    t1 = UINT64_MAX / 2;
                }
            } else if (sys == SYS_ZMQ) {
                w.op = OP_ZMQ_SEND;
                d.op = OP_ZMQ_RECV;
                send_cmd(&B, d);
                send_cmd(&C, d);
                get_reply(&B, R_ACK, NULL);
                get_reply(&C, R_ACK, NULL);
                res_t ra = call(&A, w, NULL);
                res_t rb = get_reply(&B, R_DONE, arrived);
                get_reply(&C, R_DONE, NULL);
                if (rb.t[1] != (uint64_t) p.tput_writes) {
                    int first = 0;
                    while (first < p.tput_writes && arrived[first])
                        first++;
                    die("raw PUB/SUB lost %" PRIu64 " of %d messages, the first at %d",
                        (uint64_t) p.tput_writes - rb.t[1], p.tput_writes, first);
                }
                t0 = ra.t[0];
                t1 = rb.t[0];
            } else {
                w.op = OP_REDIS_WRITE;
                w.port = rport[0];
                d.op = OP_REDIS_WAIT_TAG;
                d.port = rport[1];
                cmd_t d2 = d;
                d2.port = rport[2];
                send_cmd(&B, d);
                send_cmd(&C, d2);
                get_reply(&B, R_ACK, NULL);
                get_reply(&C, R_ACK, NULL);
                res_t ra = call(&A, w, NULL);
                res_t rb = get_reply(&B, R_DONE, NULL);
                get_reply(&C, R_DONE, NULL);
                t0 = ra.t[0];
                t1 = rb.t[0];
            }
            tput[sys][round] = (double) p.tput_writes / ((double) (t1 - t0) / 1e9);
            if (round)
                tput_cpu[sys] += cpu_sum(all_pids, sys == SYS_REDIS ? 6 : 3) - cpu0;
        }
        printf("  round %d%-10s sessnode %9.0f   raw PUB/SUB %9.0f   Redis %9.0f\n", round,
               round == 0 ? " (create)" : "", tput[SYS_SN][round], tput[SYS_ZMQ][round],
               tput[SYS_REDIS][round]);
        fflush(stdout);
    }
    printf("  cpu per write, overwrite rounds, all processes: sessnode %.0f us, raw PUB/SUB %.0f us,"
           " Redis %.0f us\n",
           tput_cpu[SYS_SN] / p.rounds / p.tput_writes * 1e6,
           tput_cpu[SYS_ZMQ] / p.rounds / p.tput_writes * 1e6,
           tput_cpu[SYS_REDIS] / p.rounds / p.tput_writes * 1e6);
    print_stats("A", &tput_a);
    print_stats("B", &tput_b);
    if (redis_dbsize(rport[1]) < p.tput_writes)
        die("the redis replica holds fewer keys than were written");

    /* Free the machine for the join: the latency/throughput cluster and
     * its Redis replicas go; the primary stays for the join fixture. */
    call(&A, (cmd_t){.op = OP_ZMQ_CLOSE}, NULL);
    call(&B, (cmd_t){.op = OP_ZMQ_CLOSE}, NULL);
    call(&C, (cmd_t){.op = OP_ZMQ_CLOSE}, NULL);
    for (int i = 0; i < 3; i++)
        call(nodes[i], (cmd_t){.op = OP_NODE_DESTROY}, NULL);
    stop_proc(&B);
    stop_proc(&C);
    untrack_and_stop(rpid[1]);
    untrack_and_stop(rpid[2]);
    {
        const char *argv_flush[1] = {"FLUSHALL"};
        redis_simple(rport[0], 1, argv_flush);
    }

    /* ------------------------------------------------ 3. join */
    printf("\n3. join: a fresh node copies %d sessions x 1 KiB (%.1f MB of values)\n",
           p.join_sessions, (double) p.join_sessions * 1024 / 1e6);
    int dport = free_ports(2);
    {
        cmd_t m = {.op = OP_NODE_START, .port = dport};
        snprintf(m.name, sizeof m.name, "A");
        call(&A, m, NULL);
        cmd_t w = {.op = OP_SN_WRITE, .count = p.join_sessions, .size = 1024, .tag = 1};
        snprintf(w.prefix, sizeof w.prefix, "join-");
        call(&A, w, NULL);
        w.op = OP_REDIS_WRITE;
        w.port = rport[0];
        call(&A, w, NULL);
        if (redis_dbsize(rport[0]) != p.join_sessions)
            die("the redis primary holds the wrong number of keys");
    }
    double join_s[2][20], stream_s[20];
    for (int round = 0; round < p.rounds; round++) {
        char name[8];
        snprintf(name, sizeof name, "C%d", round % 100);  /* rounds <= 20 */
        proc_t J = spawn(name);
        cmd_t m = {.op = OP_NODE_START, .port = free_ports(2), .npeers = 1, .peers = {dport},
                   .join = 1};
        snprintf(m.name, sizeof m.name, "%s", name);
        res_t r = call(&J, m, NULL);
        if (r.st.sessions != (uint64_t) p.join_sessions)
            die("the joined node holds %" PRIu64 " sessions, expected %d", r.st.sessions,
                p.join_sessions);
        join_s[SYS_SN][round] = (double) (r.t[1] - r.t[0]) / 1e9;
        stream_s[round] = (double) (r.t[1] - r.t[2]) / 1e9;
        stop_proc(&J);

        char tag[16];
        snprintf(tag, sizeof tag, "j%d", round);
        int jport = free_ports(1);
        pid_t jpid = redis_start(jport, tag);
        resp_t rc;
        if (resp_connect(&rc, jport))
            die("cannot connect to redis on port %d", jport);
        uint64_t t0 = now_ns();
        redis_replicaof(jport, rport[0]);
        while (!redis_synced(&rc)) {
            if (now_ns() - t0 > 60000000000ull)
                die("the redis replica did not sync within 60 s");
            sleep_us(1000);
        }
        uint64_t t1 = now_ns();
        resp_close(&rc);
        long long keys = redis_dbsize(jport);
        if (keys != p.join_sessions)
            die("the redis replica holds %lld keys after its sync, expected %d", keys,
                p.join_sessions);
        join_s[1][round] = (double) (t1 - t0) / 1e9;
        untrack_and_stop(jpid);
        printf("  round %d  sessnode %.3f s (streaming %.3f s after %.3f s finding the donor)"
               "   Redis full resync %.3f s\n",
               round, join_s[SYS_SN][round], stream_s[round],
               join_s[SYS_SN][round] - stream_s[round], join_s[1][round]);
        fflush(stdout);
    }
    stop_proc(&A);

    /* ------------------------------------------------ summary */
    double mb = (double) p.join_sessions * 1024 / 1e6;
    double sn_join = median(join_s[SYS_SN], p.rounds);
    double rd_join = median(join_s[1], p.rounds);
    double sn_stream = median(stream_s, p.rounds);
    double t_sn = median(tput[SYS_SN] + 1, p.rounds);
    double t_zmq = median(tput[SYS_ZMQ] + 1, p.rounds);
    double t_rd = median(tput[SYS_REDIS] + 1, p.rounds);

    printf("\nsummary (medians; ratio = sessnode / reference)\n");
    printf("| measure | sessnode | raw PUB/SUB | Redis 7 | vs PUB/SUB | vs Redis |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (int si = 0; si < p.nsizes; si++) {
        const char *lbl[3] = {"p50", "p99", "p99.9"};
        for (int q = 0; q < 3; q++) {
            double v[SYS_COUNT];
            for (int s = 0; s < SYS_COUNT; s++)
                v[s] = q == 0 ? lat[si][s].p50 : q == 1 ? lat[si][s].p99 : lat[si][s].p999;
            printf("| latency %d B %s, us | %.0f | %.0f | %.0f | %.2f | %.2f |\n", p.sizes[si],
                   lbl[q], v[0], v[1], v[2], v[0] / v[1], v[0] / v[2]);
        }
    }
    printf("| writes/s, 1 KiB (median of %d overwrite rounds) | %.0f | %.0f | %.0f | %.2f | "
           "%.2f |\n",
           p.rounds, t_sn, t_zmq, t_rd, t_sn / t_zmq, t_sn / t_rd);
    printf("| writes/s, 1 KiB, first round (creates) | %.0f | %.0f | %.0f | %.2f | %.2f |\n",
           tput[SYS_SN][0], tput[SYS_ZMQ][0], tput[SYS_REDIS][0],
           tput[SYS_SN][0] / tput[SYS_ZMQ][0], tput[SYS_SN][0] / tput[SYS_REDIS][0]);
    printf("| join %d x 1 KiB, s | %.3f | - | %.3f | - | %.2f |\n", p.join_sessions, sn_join,
           rd_join, sn_join / rd_join);
    printf("| join, MB/s of values | %.1f | - | %.1f | - | %.2f |\n", mb / sn_join,
           mb / rd_join, rd_join / sn_join);
    printf("| join, sessions/s | %.0f | - | %.0f | - | %.2f |\n", p.join_sessions / sn_join,
           p.join_sessions / rd_join, rd_join / sn_join);
    printf("| join streaming only (after the donor is found), MB/s | %.1f | - | - | - | - |\n",
           mb / sn_stream);

    printf("\ntargets\n");
    for (int si = 0; si < p.nsizes; si++) {
        double r_zmq = lat[si][SYS_SN].p99 / lat[si][SYS_ZMQ].p99;
        printf("  %4d B: p99 <= 2x raw PUB/SUB p99     %s (%.0f vs %.0f us, %.2fx)\n",
               p.sizes[si], r_zmq <= 2 ? "met" : "MISSED", lat[si][SYS_SN].p99,
               lat[si][SYS_ZMQ].p99, r_zmq);
        printf("  %4d B: p99 below Redis replica p99   %s (%.0f vs %.0f us)\n", p.sizes[si],
               lat[si][SYS_SN].p99 < lat[si][SYS_REDIS].p99 ? "met" : "MISSED",
               lat[si][SYS_SN].p99, lat[si][SYS_REDIS].p99);
    }
    printf("  join >= 2x Redis full-resync rate     %s (%.2fx)\n",
           rd_join / sn_join >= 2 ? "met" : "MISSED", rd_join / sn_join);
    printf("  join >= 100 MB/s                      %s (%.1f MB/s)\n",
           mb / sn_join >= 100 ? "met" : "MISSED", mb / sn_join);

    printf("\ntotal %.1f s\n", (double) (now_ns() - t_start) / 1e9);
    untrack_and_stop(rpid[0]);
    free(sent);
    free(arrived);
    return 0;
}
