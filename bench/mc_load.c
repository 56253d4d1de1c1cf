/*
 * mc_load.c - a light load generator for the memcached text protocol's
 * `set`, for the daemon's write-path benchmark (run_memcaslap.sh --loader).
 *
 * memcaslap spends about as much CPU a set as the daemon it drives, so on a
 * two-CPU machine the load generator's CPU is as scarce as the server's:
 * whatever else runs beside it (the tier's memcached) lowers the rate, and
 * a daemon driven at a lower rate finds fewer requests a wake-up and pays
 * more system calls a set. This one keeps one set in flight on each of its
 * connections from one thread and an epoll set, a write and a read for a
 * wake-up's worth of sets, so that it needs a fraction of the server's CPU.
 *
 * It takes memcaslap's arguments, as far as the benchmark uses them:
 *   -s HOST:PORT  -F CONF  -c CONNECTIONS  -t SECONDSs  [-T THREADS, ignored]
 *   [-P RATE]     sets a second in all (a "k" suffix: thousands), spread
 *                 over the connections: a fixed offered load, so that two
 *                 servers can be compared by their CPU a set at one rate
 * CONF is memcaslap's configuration: the key and value sizes are read from
 * its "key" and "value" sections (the first range of each); its "cmd"
 * section must give gets a fraction of 0. Every set is of a new key, in
 * this run and across runs (a counter from a random start). It
 * prints, as memcaslap does, "Run time: ...s Ops: N TPS: T ..." and
 * "cmd_set: N"; any reply but STORED is counted and ends it with status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNS_MAX 1024
#define KEY_MAX 250
#define REPLY "STORED\r\n"
#define REPLY_LEN (sizeof REPLY - 1)

typedef struct {
    int fd;
    size_t sent;        /* bytes of the current request written */
    size_t got;         /* bytes of its reply read */
    bool waiting;       /* the request is written, its reply not yet read */
    bool held;          /* on the list of connections the rate holds back */
    char *req;          /* "set KEY 0 0 LEN\r\nVALUE\r\n" */
    size_t req_len;
    size_t key_at;      /* where the key's varying part starts in req */
    char reply[64];
} conn_t;

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "mc_load: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* memcaslap's configuration: the first size of "key" and "value", and the
 * get fraction of "cmd" (line "1 FRACTION"). */
static void read_conf(const char *path, size_t *key_len, size_t *value_len, double *gets)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read %s", path);
    char line[256], section[16] = "";
    *gets = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        double frac;
        int cmd;
        if (sscanf(line, "%15[a-z]", section) == 1)
            continue;   /* a section's name */
        if (!strcmp(section, "key") && sscanf(line, "%lu %lu", &lo, &hi) == 2)
            *key_len = lo;
        else if (!strcmp(section, "value") && sscanf(line, "%lu %lu", &lo, &hi) == 2)
            *value_len = lo;
        else if (!strcmp(section, "cmd") && sscanf(line, "%d %lf", &cmd, &frac) == 2 && cmd == 1)
            *gets = frac;
    }
    fclose(f);
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        die("cannot resolve %s", host);
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The next key: the connection's request keeps its text and gets a new
 * counter in its last 16 characters (hex), so keys never repeat. */
static void next_key(conn_t *c, uint64_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, n >>= 4)
        c->req[c->key_at + (size_t) i] = hex[n & 15];
}

/* Writes what is left of c's request; false on an error. */
static bool send_req(conn_t *c)
{
    while (c->sent < c->req_len) {
        ssize_t w = write(c->fd, c->req + c->sent, c->req_len - c->sent);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR;
        c->sent += (size_t) w;
    }
    c->waiting = true;
    return true;
}

/* The run's state: what main's loop and serve() share. */
static struct {
    uint64_t ops, errors, seq, started;
    double rate;                 /* sets a second; 0: as fast as replies come */
    double t0, end;
    conn_t **idle;               /* connections held back by the rate */
    int nidle;
} g;

/* May another set start now, within the rate? */
static bool may_start(void)
{
    return g.rate <= 0 || (double) g.started < g.rate * (now_s() - g.t0);
}

/* Moves a connection along as far as it goes without waiting: its request
 * out, its reply in, the next request out (within the rate), ... */
static void serve(conn_t *cc)
{
    for (;;) {
        if (!cc->waiting) {
            if (cc->sent == 0) {
                if (!may_start()) {
                    /* (a connection held back may still get write events) */
                    if (!cc->held)
                        g.idle[g.nidle++] = cc;
                    cc->held = true;
                    return;
                }
                g.started++;
            }
            if (!send_req(cc))
                die("write: %s", strerror(errno));
            if (!cc->waiting)
                return;   /* socket full: EPOLLOUT resumes it */
        }
        ssize_t r = read(cc->fd, cc->reply + cc->got, sizeof cc->reply - cc->got);
        if (r == 0)
            die("%s", "the server closed a connection");
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("read: %s", strerror(errno));
        }
        cc->got += (size_t) r;
        char *eol = memchr(cc->reply, '\n', cc->got);
        if (!eol) {
            if (cc->got == sizeof cc->reply)
                die("%s", "a reply line too long");
            continue;
        }
        size_t line = (size_t) (eol - cc->reply) + 1;
        if (line != REPLY_LEN || memcmp(cc->reply, REPLY, REPLY_LEN) != 0) {
            g.errors++;
            if (g.errors == 1)
                fprintf(stderr, "mc_load: reply '%.*s'\n", (int) line - 2, cc->reply);
        }
        memmove(cc->reply, cc->reply + line, cc->got - line);
        cc->got -= line;
        g.ops++;
        cc->waiting = false;
        cc->sent = 0;
        next_key(cc, ++g.seq);
        if (now_s() >= g.end)
            return;
    }
}

int main(int argc, char **argv)
{
    const char *server = NULL, *conf = NULL;
    int conns = 64;
    double secs = 10;
    int opt;
    while ((opt = getopt(argc, argv, "s:F:c:t:T:P:")) != -1) {
        switch (opt) {
        case 's': server = optarg; break;
        case 'F': conf = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 't': secs = atof(optarg); break;
        case 'T': break;   /* one thread is enough */
        case 'P': {
            char *unit;
            g.rate = strtod(optarg, &unit);
            if (*unit == 'k' || *unit == 'K')
                g.rate *= 1000;
            break;
        }
        default:
            fprintf(stderr, "usage: mc_load -s HOST:PORT -F CONF [-c CONNS] [-t SECONDSs] "
                            "[-P SETS_PER_SECOND[k]]\n");
            return 2;
        }
    }
    if (!server || !conf)
        die("%s", "-s HOST:PORT and -F CONF are required");
    if (conns < 1 || conns > CONNS_MAX)
        die("%s", "-c: 1 to 1024 connections");
    size_t key_len = 64, value_len = 1024;
    double gets;
    read_conf(conf, &key_len, &value_len, &gets);
    if (gets > 0)
        die("%s", "only sets: the configuration's get fraction must be 0");
    if (key_len < 24 || key_len > KEY_MAX)
        die("%s", "keys of 24 to 250 bytes");
    char host[256], *colon = strrchr(server, ':');
    if (!colon || (size_t) (colon - server) >= sizeof host)
        die("bad server %s", server);
    memcpy(host, server, (size_t) (colon - server));
    host[colon - server] = 0;

    int ep = epoll_create1(0);
    conn_t *c = calloc((size_t) conns, sizeof *c);
    if (ep < 0 || !c)
        die("%s", "out of resources");
    for (int i = 0; i < conns; i++) {
        char head[KEY_MAX + 64];
        /* "ld" + connection + '-' ... 16 hex digits at the end */
        int n = snprintf(head, sizeof head, "set %s%04d-", "ld", i);
        size_t pad = key_len - (size_t) (n - 4) - 16;
        c[i].req = malloc((size_t) n + pad + 16 + 32 + value_len + 2);
        if (!c[i].req)
            die("%s", "out of memory");
        memcpy(c[i].req, head, (size_t) n);
        memset(c[i].req + n, 'k', pad);
        c[i].key_at = (size_t) n + pad;
        int m = snprintf(c[i].req + c[i].key_at + 16, 32, " 0 0 %zu\r\n", value_len);
        size_t at = c[i].key_at + 16 + (size_t) m;
        memset(c[i].req + at, 'v', value_len);
        memcpy(c[i].req + at + value_len, "\r\n", 2);
        c[i].req_len = at + value_len + 2;
        c[i].fd = connect_to(host, colon + 1);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = (uint32_t) i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) != 0)
            die("epoll_ctl: %s", strerror(errno));
    }

    /* keys new across runs too: the counter starts at a random point */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g.seq = ((uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec) *
                0x9e3779b97f4a7c15ull ^
            (uint64_t) getpid();
    for (int i = 0; i < conns; i++)
        next_key(&c[i], g.seq++);
    g.idle = calloc((size_t) conns, sizeof *g.idle);
    if (!g.idle)
        die("%s", "out of memory");
    g.t0 = now_s();
    g.end = g.t0 + secs;
    struct epoll_event evs[CONNS_MAX];
    while (now_s() < g.end) {
        /* connections the rate held back start first, oldest first */
        int held = g.nidle;
        g.nidle = 0;
        for (int k = 0; k < held; k++) {
            g.idle[k]->held = false;
            serve(g.idle[k]);
        }
        int n = epoll_wait(ep, evs, CONNS_MAX, g.nidle ? 1 : 100);
        for (int k = 0; k < n; k++) {
            if (evs[k].events & (EPOLLERR | EPOLLHUP))
                die("%s", "a connection failed (is the server up?)");
            serve(&c[evs[k].data.u32]);
        }
    }
    double t = now_s() - g.t0;
    printf("Run time: %.1fs Ops: %llu TPS: %.0f Net_rate: %.1fM/s\n", t,
           (unsigned long long) g.ops, (double) g.ops / t,
           (double) g.ops * (double) c[0].req_len / t / 1e6);
    printf("cmd_get: 0\ncmd_set: %llu\nerrors: %llu\n", (unsigned long long) g.ops,
           (unsigned long long) g.errors);
    for (int i = 0; i < conns; i++) {
        close(c[i].fd);
        free(c[i].req);
    }
    free(c);
    free(g.idle);
    close(ep);
    return g.errors ? 1 : 0;
}
