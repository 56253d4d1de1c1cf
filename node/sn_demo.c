/*
 * sn_demo.c - a local three-node cluster in one process, on loopback TCP.
 *
 * Each node is a full libsessnode node (store + replication actor, PUB/SUB
 * and ROUTER/DEALER sockets on 127.0.0.1), configured the way an embedding
 * application would. The demo writes a session on one node and reads it on
 * the others, shows a logout winning over a concurrent update, loses a node
 * without warning, and lets a fresh node join and catch up by snapshot.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sessnode.h"

#define NODES 4
#define WAIT_MS 5000

static sn_node_t *nodes[NODES];
static char addr[NODES][64];
static const char *names[NODES] = {"alpha", "beta", "gamma", "delta"};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void log_line(int level, const char *msg, void *arg)
{
    (void) arg;
    if (level <= SN_LOG_WARN)
        fprintf(stderr, "    [log] %s\n", msg);
}

/* A free loopback port whose successor is free too (PUB and ROUTER). */
static int free_port_pair(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sa;
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) ||
            getsockname(fd, (struct sockaddr *) &sa, &len)) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        int port = ntohs(sa.sin_port);
        close(fd);
        if (port >= 65534)
            continue;
        int fd2 = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_port = htons((uint16_t) (port + 1));
        int ok = fd2 >= 0 && bind(fd2, (struct sockaddr *) &sa, sizeof sa) == 0;
        if (fd2 >= 0)
            close(fd2);
        if (ok)
            return port;
    }
    return -1;
}

static int start(int i, int join)
{
    const char *peers[NODES + 1];
    int k = 0;
    for (int j = 0; j < NODES; j++)
        if (j != i && addr[j][0])
            peers[k++] = addr[j];
    peers[k] = NULL;
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.name = names[i];
    cfg.cluster = addr[i];
    cfg.peers = peers;
    cfg.join = join;
    cfg.log = log_line;
    nodes[i] = sn_node_new(&cfg);
    if (!nodes[i])
        return SN_EINVAL;
    int rc = sn_node_start(nodes[i]);
    if (rc == 0)
        rc = sn_node_wait_ready(nodes[i], WAIT_MS);
    return rc;
}

static void show(int i, const char *id, const char *attr)
{
    char buf[256];
    size_t len;
    int rc = sn_node_get(nodes[i], id, strlen(id), attr, strlen(attr), buf, sizeof buf - 1, &len,
                         NULL);
    if (rc == 0)
        printf("  %-6s %s.%s = \"%.*s\"\n", names[i], id, attr, (int) len, buf);
    else
        printf("  %-6s %s.%s: %s\n", names[i], id, attr, sn_strerror(rc));
}

/* Waits (bounded) until every live node reads `want` (NULL: a miss). */
static int settle(const char *id, const char *attr, const char *want)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        int agreed = 1;
        for (int i = 0; i < NODES; i++) {
            if (!nodes[i])
                continue;
            char buf[256];
            size_t len;
            int rc = sn_node_get(nodes[i], id, strlen(id), attr, strlen(attr), buf,
                                 sizeof buf - 1, &len, NULL);
            if (want ? rc != 0 || len != strlen(want) || memcmp(buf, want, len)
                     : rc != SN_ENOTFOUND)
                agreed = 0;
        }
        if (agreed)
            return 0;
        if (now_ms() > deadline)
            return SN_ETIMEDOUT;
        sleep_ms(2);
    }
}

static void show_all(const char *id, const char *attr)
{
    for (int i = 0; i < NODES; i++)
        if (nodes[i])
            show(i, id, attr);
}

static int put(int i, const char *id, const char *attr, const char *value)
{
    sn_write_t w = {.create = 1, .max_inactive = 1800};
    int rc = sn_node_put(nodes[i], id, strlen(id), attr, strlen(attr), value, strlen(value), &w);
    if (rc)
        fprintf(stderr, "put on %s: %s\n", names[i], sn_strerror(rc));
    return rc;
}

int main(void)
{
    printf("sessnode %s demo: a local cluster of embedded nodes on 127.0.0.1\n\n", sn_version());
    for (int i = 0; i < 3; i++) {
        int port = free_port_pair();
        if (port < 0) {
            fprintf(stderr, "no free loopback ports\n");
            return 1;
        }
        snprintf(addr[i], sizeof addr[i], "tcp://127.0.0.1:%d", port);
        printf("  %-6s listens on %s (PUB) and port %d (ROUTER)\n", names[i], addr[i], port + 1);
    }
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = start(i, 0);
    if (rc) {
        fprintf(stderr, "cannot start the cluster: %s\n", sn_strerror(rc));
        return 1;
    }

    printf("\n1. alpha logs user 42 in; beta and gamma read the session\n");
    rc |= put(0, "sess:42", "user", "alice");
    rc |= put(0, "sess:42", "cart", "2 books");
    rc |= settle("sess:42", "cart", "2 books");
    show_all("sess:42", "user");

    printf("\n2. beta and gamma change the cart at the same time: every node keeps the same one\n");
    rc |= put(1, "sess:42", "cart", "3 books");
    rc |= put(2, "sess:42", "cart", "a lamp");
    sleep_ms(200);
    show_all("sess:42", "cart");

    printf("\n3. alpha logs the user out while beta updates the cart: the logout wins\n");
    sn_node_destroy_session(nodes[0], "sess:42", 7, NULL);
    rc |= put(1, "sess:42", "cart", "4 books");
    rc |= settle("sess:42", "user", NULL);
    show_all("sess:42", "user");

    printf("\n4. user 7 logs in on gamma, with the write confirmed by both peers\n");
    sn_write_t w = {.create = 1, .max_inactive = 1800, .acks = 2};
    rc |= sn_node_put(nodes[2], "sess:7", 6, "user", 4, "bob", 3, &w);
    show_all("sess:7", "user");

    printf("\n5. gamma is lost without warning; alpha and beta still serve user 7\n");
    sn_node_destroy(&nodes[2]);
    show_all("sess:7", "user");

    printf("\n6. delta joins and copies every session from a live peer\n");
    int port = free_port_pair();
    snprintf(addr[3], sizeof addr[3], "tcp://127.0.0.1:%d", port);
    addr[2][0] = 0;
    rc |= start(3, 1);
    show(3, "sess:7", "user");
    sn_node_stats_t st;
    sn_node_stats(nodes[3], &st);
    printf("  delta received %llu sessions by snapshot\n", (unsigned long long) st.snapshot_sessions);

    uint64_t d[NODES] = {0};
    int same = 1;
    for (int i = 0; i < NODES; i++)
        if (nodes[i]) {
            sn_node_digest(nodes[i], "sess:7", 6, &d[i]);
            same &= d[i] == d[0];
        }
    printf("\ndigests of sess:7: alpha %016llx, beta %016llx, delta %016llx (%s)\n",
           (unsigned long long) d[0], (unsigned long long) d[1], (unsigned long long) d[3],
           same ? "identical" : "DIFFERENT");
    for (int i = 0; i < NODES; i++)
        sn_node_destroy(&nodes[i]);
    return rc == 0 && same ? 0 : 1;
}
