/*
 * tier_sink.c - a stand-in for a tier server on another machine, for the
 * write-path benchmark (run_memcaslap.sh --tier --sink).
 *
 * On a two-CPU host the tier's memcached has to share a CPU with the load
 * generator, and it takes from the load, not from the node: the tiered
 * node's peak then measures that CPU as much as the node. This server
 * listens on 127.0.0.1, reads the memcached text protocol the tier writes
 * and keeps nothing, so that what it costs the shared CPU is a read per
 * 64 KiB or so. It still parses every command, so that the stream is
 * checked and counted: `stats` answers with the sets and deletes taken,
 * the bytes read and the lines it could not parse, and the benchmark
 * compares the sets with the node's `tier_writes`. A bootstrap's
 * `lru_crawler metadump` finds nothing ("END").
 *
 *   tier_sink PORT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINE_MAX_LEN 1024     /* a command line; the tier's are under 300 bytes */
#define READ_SIZE (1u << 20)
#define EVENTS 64

typedef struct {
    int fd;
    size_t skip;              /* bytes of a value (and its \r\n) still to pass */
    size_t len;               /* of the partial line in `line` */
    char line[LINE_MAX_LEN];
} conn_t;

static struct {
    unsigned long long sets, deletes, bad, bytes;
} st;

static void reply(conn_t *c, const char *text)
{
    size_t len = strlen(text);
    /* the answers are short and rare (stats, a bootstrap's listing) */
    if (write(c->fd, text, len) != (ssize_t) len)
        st.bad++;
}

/* The n-th space-separated token of line (from 0), or NULL. */
static const char *token(const char *line, int n, size_t *len)
{
    const char *p = line;
    for (int i = 0;; i++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return NULL;
        size_t l = strcspn(p, " ");
        if (i == n) {
            *len = l;
            return p;
        }
        p += l;
    }
}

static bool is_noreply(const char *line, int at)
{
    size_t len;
    const char *t = token(line, at, &len);
    return t && len == 7 && memcmp(t, "noreply", 7) == 0;
}

static void command(conn_t *c, char *line)
{
    size_t len;
    if (strncmp(line, "set ", 4) == 0) {
        /* set KEY FLAGS EXPTIME BYTES [noreply] */
        const char *b = token(line, 4, &len);
        char *end;
        unsigned long long bytes = b ? strtoull(b, &end, 10) : 0;
        if (!b || end != b + len) {
            st.bad++;
            reply(c, "CLIENT_ERROR bad command line format\r\n");
            return;
        }
        c->skip = (size_t) bytes + 2;
        st.sets++;
        if (!is_noreply(line, 5))
            reply(c, "STORED\r\n");
    } else if (strncmp(line, "delete ", 7) == 0) {
        st.deletes++;
        if (!is_noreply(line, 2))
            reply(c, "NOT_FOUND\r\n");
    } else if (strcmp(line, "stats") == 0) {
        char buf[256];
        snprintf(buf, sizeof buf,
                 "STAT sets %llu\r\nSTAT deletes %llu\r\nSTAT bytes_read %llu\r\n"
                 "STAT bad_lines %llu\r\nEND\r\n",
                 st.sets, st.deletes, st.bytes, st.bad);
        reply(c, buf);
    } else if (strncmp(line, "lru_crawler metadump", 20) == 0) {
        reply(c, "END\r\n");
    } else if (strcmp(line, "version") == 0) {
        reply(c, "VERSION tier_sink\r\n");
    } else if (strcmp(line, "flush_all") == 0) {
        reply(c, "OK\r\n");
    } else {
        st.bad++;
        reply(c, "ERROR\r\n");
    }
}

/* Takes n bytes read from c: values passed over, lines parsed. */
static void take(conn_t *c, const char *p, size_t n)
{
    st.bytes += n;
    while (n) {
        if (c->skip) {
            size_t k = c->skip < n ? c->skip : n;
            c->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t) (nl - p) + 1 : n;
        if (c->len + k > sizeof c->line) {
            st.bad++;   /* a line too long: dropped up to its end */
            c->len = 0;
        } else {
            memcpy(c->line + c->len, p, k);
            c->len += k;
        }
        p += k;
        n -= k;
        if (nl && c->len) {
            c->line[c->len - 1] = 0;
            if (c->len >= 2 && c->line[c->len - 2] == '\r')
                c->line[c->len - 2] = 0;
            c->len = 0;
            command(c, c->line);
        }
    }
}

static void accept_one(int ls, int ep)
{
    int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    conn_t *c = calloc(1, sizeof *c);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(c);
        return;
    }
    c->fd = fd;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: tier_sink PORT (listens on 127.0.0.1)\n");
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t) atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    char *buf = malloc(READ_SIZE);
    if (ls < 0 || bind(ls, (struct sockaddr *) &a, sizeof a) != 0 || listen(ls, 64) != 0 ||
        ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0 || !buf) {
        perror("tier_sink");
        return 1;
    }
    for (;;) {
        struct epoll_event evs[EVENTS];
        int n = epoll_wait(ep, evs, EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("tier_sink: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                accept_one(ls, ep);
                continue;
            }
            ssize_t got = read(c->fd, buf, READ_SIZE);
            if (got > 0) {
                take(c, buf, (size_t) got);
            } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(c->fd);   /* (closing removes it from the epoll set) */
                free(c);
            }
        }
    }
}
