/*
 * test_processes.c - sessnode clusters of real processes on loopback TCP.
 *
 * test_cluster.c proves replication with several nodes in one process over
 * inproc://; this file proves it between processes, where a node can die
 * with SIGKILL and every byte crosses a TCP socket. Each node is an
 * sn_testnode process (its path is the first argument) started with
 * fork/exec; the driver writes commands to its stdin and reads one reply
 * line per command from its stdout. Node logs go to one file per node in a
 * scratch directory, printed (tails) when a test fails and removed when it
 * passes.
 *
 * Nothing here may hang or leak a process: every read of a reply, every
 * convergence poll and every wait for an exit has a deadline; each child
 * asks the kernel to SIGKILL it when the driver dies (PR_SET_PDEATHSIG), and
 * the per-test teardown, which cmocka runs after a failed test too, kills
 * by PID whatever is still running.
 *
 * Ports: a pair (PORT for PUB, PORT+1 for ROUTER) is found free by binding
 * loopback sockets, then released for the node to bind. Another process can
 * take it in between; the node then exits with status 3 and the cluster is
 * started again on new ports.
 *
 * Deadlines scale: sanitizer builds run several times slower, so every
 * bound is multiplied by SN_TEST_TIMEOUT_SCALE (default 4 under ASan or
 * TSan, 1 otherwise). Sizes never shrink.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
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

#include <cmocka.h>

#define MAX_NODES 4
#define LINE_MAX_BYTES 65536
#define START_ATTEMPTS 8
#define EXIT_ADDR_TAKEN 3
#define SKIP_EXIT 77

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

typedef struct {
    pid_t pid;                  /* 0 once reaped */
    int to_fd;                  /* its stdin */
    int from_fd;                /* its stdout */
    char rbuf[LINE_MAX_BYTES];  /* reply bytes read but not yet consumed */
    size_t rlen;
    int port;
    char addr[64];
    char log[512];
    char name[16];
} proc_t;

static const char *g_testnode;
static unsigned g_scale = 1;
static proc_t g_node[MAX_NODES];
static char g_dir[256];         /* this test's scratch directory */
static bool g_passed;           /* set by the last step of a test */
static int g_test_no;

/* ------------------------------------------------------------ time */

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

/* A bound of `ms` in a normal build, stretched for slow builds. */
static uint64_t bound(uint64_t ms)
{
    return ms * g_scale;
}

/* ------------------------------------------------------------ processes */

/* Finds `n` port pairs (PORT, PORT+1) free on loopback, all distinct: the
 * probing sockets stay bound until every pair is chosen. */
static void pick_ports(int n, int *ports)
{
    int fds[MAX_NODES * 2];
    int nfds = 0;
    for (int i = 0; i < n; i++) {
        ports[i] = 0;  /* fail_msg below does not return, which gcc cannot see */
        bool found = false;
        for (int attempt = 0; attempt < 200 && !found; attempt++) {
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            socklen_t len = sizeof sa;
            int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            assert_true(a >= 0);
            if (bind(a, (struct sockaddr *) &sa, sizeof sa) ||
                getsockname(a, (struct sockaddr *) &sa, &len) || ntohs(sa.sin_port) >= 65535) {
                close(a);
                continue;
            }
            int port = ntohs(sa.sin_port);
            int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            assert_true(b >= 0);
            sa.sin_port = htons((uint16_t) (port + 1));
            if (bind(b, (struct sockaddr *) &sa, sizeof sa)) {
                close(a);
                close(b);
                continue;
            }
            fds[nfds++] = a;
            fds[nfds++] = b;
            ports[i] = port;
            found = true;
        }
        if (!found)
            fail_msg("no free loopback port pair found");
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void set_addr(proc_t *p, int port)
{
    p->port = port;
    snprintf(p->addr, sizeof p->addr, "tcp://127.0.0.1:%d", port);
}

/* Waits (bounded) for the process to end; returns its wait status, or -1
 * if it is still running at the deadline. */
static int reap(proc_t *p, uint64_t ms)
{
    /* waitpid(0) would reap any child: never ask for an unknown PID */
    if (p->pid <= 0)
        return 0;
    uint64_t deadline = now_ms() + ms;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return status;
        }
        if (r < 0 && errno != EINTR) {
            p->pid = 0;
            return 0;
        }
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
}

static void close_pipes(proc_t *p)
{
    if (p->to_fd >= 0)
        close(p->to_fd);
    if (p->from_fd >= 0)
        close(p->from_fd);
    p->to_fd = p->from_fd = -1;
    p->rlen = 0;
}

/* SIGKILL, then reap: the kernel ends a killed process promptly, but the
 * wait stays bounded all the same. */
static void kill_node(proc_t *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        if (reap(p, 10000) < 0)
            fprintf(stderr, "%s: pid %d survived SIGKILL\n", p->name, (int) p->pid);
    }
    close_pipes(p);
}

static void describe_status(int status, char *buf, size_t cap)
{
    if (status < 0)
        snprintf(buf, cap, "still running");
    else if (WIFEXITED(status))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, cap, "wait status %#x", status);
}

/* Reads one reply line (without its newline) before the deadline; false
 * if the process closed its output first. A missed deadline fails. */
static bool read_line(proc_t *p, uint64_t deadline, char *out, size_t cap, const char *what)
{
    for (;;) {
        char *nl = memchr(p->rbuf, '\n', p->rlen);
        if (nl) {
            size_t n = (size_t) (nl - p->rbuf);
            size_t copy = n < cap - 1 ? n : cap - 1;
            memcpy(out, p->rbuf, copy);
            out[copy] = 0;
            p->rlen -= n + 1;
            memmove(p->rbuf, nl + 1, p->rlen);
            return true;
        }
        if (p->rlen == sizeof p->rbuf)
            fail_msg("%s: reply to '%s' longer than %zu bytes", p->name, what, sizeof p->rbuf);
        uint64_t now = now_ms();
        if (now >= deadline)
            fail_msg("%s: no reply to '%s' in time", p->name, what);
        struct pollfd pfd = {.fd = p->from_fd, .events = POLLIN};
        uint64_t left = deadline - now;
        int r = poll(&pfd, 1, left > 1000 ? 1000 : (int) left);
        if (r < 0 && errno != EINTR)
            fail_msg("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        ssize_t got = read(p->from_fd, p->rbuf + p->rlen, sizeof p->rbuf - p->rlen);
        if (got == 0)
            return false;
        if (got < 0 && errno != EINTR && errno != EAGAIN)
            fail_msg("%s: read: %s", p->name, strerror(errno));
        if (got > 0)
            p->rlen += (size_t) got;
    }
}

/* Fails the test for a node that stopped answering, saying how it ended. */
static void fail_gone(proc_t *p, const char *what)
{
    char st[64];
    describe_status(reap(p, 2000), st, sizeof st);
    fail_msg("%s ended before answering '%s' (%s)", p->name, what, st);
}

/* Sends one command and returns its reply in `out`, bounded by `ms`. */
static void cmdt(proc_t *p, uint64_t ms, char *out, size_t cap, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t) n < sizeof line - 1);
    if (p->pid <= 0)
        fail_msg("%s: '%s' sent to a node that is not running", p->name, line);
    line[n] = '\n';
    for (int off = 0; off <= n;) {
        ssize_t w = write(p->to_fd, line + off, (size_t) (n + 1 - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            line[n] = 0;
            fail_gone(p, line);
        }
        off += (int) w;
    }
    line[n] = 0;
    if (!read_line(p, now_ms() + ms, out, cap, line))
        fail_gone(p, line);
}

#define CMD_MS 10000

/* A command with the ordinary bound. */
#define cmd(p, out, ...) cmdt((p), bound(CMD_MS), (out), sizeof(out), __VA_ARGS__)

/* A put that must answer OK. */
static void put_ok(proc_t *p, const char *id, const char *name, const char *value)
{
    char reply[256];
    cmd(p, reply, "put %s %s %s", id, name, value);
    if (strcmp(reply, "OK") != 0)
        fail_msg("%s: put %s %s %s answered '%s'", p->name, id, name, value, reply);
}

/* Starts node i on its address with `nargs` extra arguments. Returns false
 * if its address was taken (the node said so and exited); fails the test on
 * any other problem. */
static bool spawn(int i, const char *const *extra, int nargs)
{
    proc_t *p = &g_node[i];
    snprintf(p->name, sizeof p->name, "node%d", i);
    snprintf(p->log, sizeof p->log, "%s/node%d.log", g_dir, i);
    char id[24];
    snprintf(id, sizeof id, "%d", i + 1);
    const char *argv[32] = {g_testnode, "--cluster", p->addr, "--id", id, "--name", p->name};
    int argc = 7;
    for (int k = 0; k < nargs && argc < 31; k++)
        argv[argc++] = extra[k];
    argv[argc] = NULL;

    int to[2], from[2];
    assert_int_equal(pipe2(to, O_CLOEXEC), 0);
    assert_int_equal(pipe2(from, O_CLOEXEC), 0);
    int logfd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    assert_true(logfd >= 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* only async-signal-safe calls until exec */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(126);
        if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0 || dup2(logfd, 2) < 0)
            _exit(126);
        signal(SIGPIPE, SIG_DFL);
        execv(g_testnode, (char *const *) argv);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    close(logfd);
    p->pid = pid;
    p->to_fd = to[1];
    p->from_fd = from[0];
    p->rlen = 0;

    char hello[256] = "";
    if (read_line(p, now_ms() + bound(CMD_MS), hello, sizeof hello, "(start)") &&
        strncmp(hello, "STARTED ", 8) == 0)
        return true;
    int status = reap(p, bound(CMD_MS));
    close_pipes(p);
    if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == EXIT_ADDR_TAKEN) {
        fprintf(stderr, "%s: %s taken, retrying on other ports\n", p->name, p->addr);
        return false;
    }
    char st[64];
    describe_status(status, st, sizeof st);
    fail_msg("%s did not start: '%s' (%s)", p->name, hello, st);
    return false;
}

/* Starts node i with every other node of 0..n-1 as a peer, plus `extra`. */
static bool spawn_in(int i, int n, const char *const *extra, int nextra)
{
    const char *args[24];
    int k = 0;
    for (int j = 0; j < n; j++) {
        if (j == i)
            continue;
        args[k++] = "--peer";
        args[k++] = g_node[j].addr;
    }
    for (int e = 0; e < nextra && k < 24; e++)
        args[k++] = extra[e];
    return spawn(i, args, k);
}

/* Waits until each of the running nodes 0..n-1 counts `alive` live peers. */
static void wait_alive(int n, uint64_t alive)
{
    uint64_t deadline = now_ms() + bound(10000);
    char reply[2048];
    for (int i = 0; i < n; i++) {
        if (g_node[i].pid <= 0)
            continue;
        for (;;) {
            cmd(&g_node[i], reply, "stats");
            const char *s = strstr(reply, "peers_alive=");
            assert_non_null(s);
            uint64_t have = strtoull(s + 12, NULL, 10);
            if (have == alive)
                break;
            if (now_ms() >= deadline)
                fail_msg("node%d sees %" PRIu64 " live peers, wanted %" PRIu64, i, have, alive);
            sleep_ms(10);
        }
    }
}

/* Starts n nodes that list each other as peers and waits until they have
 * all heard each other. Taken ports restart the whole cluster on new ones,
 * since the nodes already started would list a stale address. */
static void cluster_start(int n, const char *const *extra, int nextra)
{
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        int ports[MAX_NODES];
        pick_ports(n, ports);
        for (int i = 0; i < n; i++)
            set_addr(&g_node[i], ports[i]);
        bool ok = true;
        for (int i = 0; i < n && ok; i++)
            ok = spawn_in(i, n, extra, nextra);
        if (ok) {
            wait_alive(n, (uint64_t) n - 1);
            return;
        }
        for (int i = 0; i < n; i++)
            kill_node(&g_node[i]);
    }
    fail_msg("no cluster of %d nodes could bind its ports in %d attempts", n, START_ATTEMPTS);
}

/* Ends the running nodes the polite way, by closing their stdin, and checks
 * that each exits cleanly (under ASan a leak shows up as a non-zero exit);
 * this is the last step of every test. */
static void cluster_stop(void)
{
    for (int i = 0; i < MAX_NODES; i++)
        if (g_node[i].pid > 0) {
            close(g_node[i].to_fd);
            g_node[i].to_fd = -1;
        }
    for (int i = 0; i < MAX_NODES; i++) {
        proc_t *p = &g_node[i];
        if (p->pid <= 0)
            continue;
        int status = reap(p, bound(10000));
        close_pipes(p);
        if (status != 0) {
            char st[64];
            describe_status(status, st, sizeof st);
            fail_msg("%s did not exit cleanly when its input closed: %s", p->name, st);
        }
    }
    g_passed = true;
}

/* ------------------------------------------------------------ checks */

/* Polls `get` until `id`.`name` reads `want` on p (NULL: until it is gone). */
static void wait_value(proc_t *p, const char *id, const char *name, const char *want)
{
    uint64_t deadline = now_ms() + bound(10000);
    char reply[512], expect[512];
    snprintf(expect, sizeof expect, "VALUE %s", want ? want : "");
    for (;;) {
        cmd(p, reply, "get %s %s", id, name);
        if (want ? strcmp(reply, expect) == 0 : strcmp(reply, "MISS") == 0)
            return;
        if (now_ms() >= deadline)
            fail_msg("%s: %s.%s: wanted %s, have '%s'", p->name, id, name,
                     want ? want : "(gone)", reply);
        sleep_ms(10);
    }
}

static void wait_exists(proc_t *p, const char *id, const char *want)
{
    uint64_t deadline = now_ms() + bound(10000);
    char reply[256];
    for (;;) {
        cmd(p, reply, "exists %s", id);
        if (strcmp(reply, want) == 0)
            return;
        if (now_ms() >= deadline)
            fail_msg("%s: exists %s: wanted %s, have '%s'", p->name, id, want, reply);
        sleep_ms(10);
    }
}

/* What a digest needs of the sessions it covers. */
enum { EVERY_SESSION_HELD, ABSENT_COUNTS_AS_STATE };

/* The combined digest of PREFIX0..PREFIX<n-1> on p, or "MISSING <id>". */
static void digest_of(proc_t *p, const char *prefix, int n, int mode, char *out, size_t cap)
{
    /* a 100k-session digest walks the store once; give it room */
    cmdt(p, bound(CMD_MS) * 3, out, cap, "digest %s %d%s", prefix, n,
         mode == ABSENT_COUNTS_AS_STATE ? " absent-ok" : "");
    if (strncmp(out, "ERR", 3) == 0)
        fail_msg("%s: digest %s %d: %s", p->name, prefix, n, out);
}

#define DIGEST_CAP 64

/* Before a convergence failure: what each node holds for the first session
 * they disagree on, and their counters, so the report says what differs. */
static void report_difference(const char *prefix, int n)
{
    char id[300], d[MAX_NODES][DIGEST_CAP], reply[2048];
    for (int k = 0; k < n; k++) {
        snprintf(id, sizeof id, "%s%d", prefix, k);
        bool differ = false;
        int first = -1;
        for (int i = 0; i < MAX_NODES; i++) {
            if (g_node[i].pid <= 0)
                continue;
            cmd(&g_node[i], d[i], "sdigest %s", id);
            if (first < 0)
                first = i;
            else if (strcmp(d[i], d[first]) != 0)
                differ = true;
        }
        if (!differ)
            continue;
        fprintf(stderr, "  first session that differs: %s\n", id);
        for (int i = 0; i < MAX_NODES; i++) {
            if (g_node[i].pid <= 0)
                continue;
            char a[512], b[512], ex[16];
            cmd(&g_node[i], ex, "exists %s", id);
            cmd(&g_node[i], a, "get %s a", id);
            cmd(&g_node[i], b, "get %s b", id);
            cmd(&g_node[i], reply, "stats");
            fprintf(stderr, "    %s: digest %s exists %s a:'%s' b:'%s'\n      %s\n",
                    g_node[i].name, d[i], ex, a, b, reply);
        }
        return;
    }
    fprintf(stderr, "  no single session differs any more\n");
}

/* Waits until every running node holds the `n` sessions (all of them, or as
 * `mode` allows) with one digest, and returns it in `out` (DIGEST_CAP
 * bytes). */
static void wait_same_digest(const char *prefix, int n, int mode, uint64_t ms, char *out)
{
    uint64_t deadline = now_ms() + bound(ms);
    char first[DIGEST_CAP], d[DIGEST_CAP];
    for (;;) {
        bool same = true;
        first[0] = 0;
        const char *why = "";
        for (int i = 0; i < MAX_NODES && same; i++) {
            if (g_node[i].pid <= 0)
                continue;
            digest_of(&g_node[i], prefix, n, mode, d, sizeof d);
            if (strncmp(d, "MISSING", 7) == 0) {
                same = false;
                why = g_node[i].name;
            } else if (!first[0]) {
                snprintf(first, sizeof first, "%s", d);
            } else if (strcmp(first, d) != 0) {
                same = false;
                why = g_node[i].name;
            }
        }
        if (same) {
            snprintf(out, DIGEST_CAP, "%s", first);
            return;
        }
        if (now_ms() >= deadline) {
            report_difference(prefix, n);
            fail_msg("%s0..%d still differ after %" PRIu64 " ms (%s: %s, first: %s)", prefix,
                     n - 1, bound(ms), why, d, first);
        }
        sleep_ms(50);
    }
}

static uint64_t stat_of(proc_t *p, const char *key)
{
    char reply[2048], pat[64];
    cmd(p, reply, "stats");
    snprintf(pat, sizeof pat, " %s=", key);
    /* a leading space so "repaired" does not match inside "…_repaired" */
    char padded[2100];
    snprintf(padded, sizeof padded, " %s", reply);
    const char *s = strstr(padded, pat);
    if (!s)
        fail_msg("%s: no %s in stats '%s'", p->name, key, reply);
    return strtoull(s + strlen(pat), NULL, 10);
}

/* ------------------------------------------------------------ fixtures */

/* Prints the last `lines` lines of a node's log. */
static void dump_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    /* the tail of a log of any size: the last 64 KiB hold enough lines */
    long from = size > 65536 ? size - 65536 : 0;
    char *buf = malloc((size_t) (size - from) + 1);
    if (!buf) {
        fclose(f);
        return;
    }
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, (size_t) (size - from), f);
    fclose(f);
    buf[n] = 0;
    size_t start = n;
    for (int seen = 0; start > 0; start--)
        if (buf[start - 1] == '\n' && start != n && ++seen == lines)
            break;
    fprintf(stderr, "%s", buf + start);
    free(buf);
}

static int setup(void **state)
{
    (void) state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sn-processes-%d-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp",
             (int) getpid(), ++g_test_no);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", g_dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < MAX_NODES; i++) {
        memset(&g_node[i], 0, sizeof g_node[i]);
        g_node[i].to_fd = g_node[i].from_fd = -1;
    }
    g_passed = false;
    return 0;
}

/* Runs after every test, passed or failed: no node outlives its test. */
static int teardown(void **state)
{
    (void) state;
    for (int i = 0; i < MAX_NODES; i++)
        kill_node(&g_node[i]);
    for (int i = 0; i < MAX_NODES; i++) {
        if (!g_node[i].log[0])
            continue;
        if (!g_passed) {
            fprintf(stderr, "  --- %s (%s), last lines of %s:\n", g_node[i].name,
                    g_node[i].addr, g_node[i].log);
            dump_tail(g_node[i].log, 40);
        } else {
            unlink(g_node[i].log);
        }
    }
    if (g_passed)
        rmdir(g_dir);
    else
        fprintf(stderr, "  node logs kept in %s\n", g_dir);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void test_a_write_on_any_process_is_readable_on_the_others(void **state)
{
    (void) state;
    cluster_start(3, NULL, 0);
    for (int w = 0; w < 3; w++) {
        char id[32], value[64];
        snprintf(id, sizeof id, "sess:%d", w);
        snprintf(value, sizeof value, "written on node%d", w);
        put_ok(&g_node[w], id, "user", value);
        for (int r = 0; r < 3; r++)
            wait_value(&g_node[r], id, "user", value);
    }
    cluster_stop();
}

static void test_a_session_deleted_on_one_process_is_gone_on_all(void **state)
{
    (void) state;
    cluster_start(3, NULL, 0);
    put_ok(&g_node[0], "sess:a", "user", "alice");
    for (int r = 0; r < 3; r++)
        wait_value(&g_node[r], "sess:a", "user", "alice");
    char reply[256];
    cmd(&g_node[1], reply, "del sess:a");
    assert_string_equal(reply, "OK");
    for (int r = 0; r < 3; r++) {
        wait_exists(&g_node[r], "sess:a", "0");
        wait_value(&g_node[r], "sess:a", "user", NULL);
    }
    cluster_stop();
}

static void test_a_killed_process_leaves_every_session_served_and_replicated(void **state)
{
    (void) state;
    const int sessions = 300;
    cluster_start(3, NULL, 0);
    char id[32], value[64], reply[512];
    for (int k = 0; k < sessions; k++) {
        snprintf(id, sizeof id, "kill:%d", k);
        snprintf(value, sizeof value, "value-%d", k);
        put_ok(&g_node[k % 3], id, "user", value);
    }
    char before[DIGEST_CAP];
    wait_same_digest("kill:", sessions, EVERY_SESSION_HELD, 20000, before);

    pid_t victim = g_node[0].pid;
    assert_int_equal(kill(victim, SIGKILL), 0);
    int status = reap(&g_node[0], bound(10000));
    close_pipes(&g_node[0]);
    assert_true(status >= 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* the survivors held everything before the kill: no waiting */
    for (int r = 1; r < 3; r++) {
        digest_of(&g_node[r], "kill:", sessions, EVERY_SESSION_HELD, reply, sizeof reply);
        assert_string_equal(reply, before);
        for (int k = 0; k < sessions; k++) {
            char expect[80];
            snprintf(id, sizeof id, "kill:%d", k);
            snprintf(expect, sizeof expect, "VALUE value-%d", k);
            cmd(&g_node[r], reply, "get %s user", id);
            assert_string_equal(reply, expect);
        }
    }
    /* they notice the loss ... */
    wait_alive(3, 1);
    /* ... and go on replicating both ways */
    put_ok(&g_node[1], "kill:after1", "user", "bob");
    put_ok(&g_node[2], "kill:after2", "user", "carol");
    wait_value(&g_node[2], "kill:after1", "user", "bob");
    wait_value(&g_node[1], "kill:after2", "user", "carol");
    cluster_stop();
}

static void test_a_joining_process_ends_with_the_same_100k_sessions(void **state)
{
    (void) state;
    const int sessions = 100000;
    char reply[256], d[DIGEST_CAP], stable[DIGEST_CAP];
    cluster_start(3, NULL, 0);

    uint64_t t0 = now_ms();
    cmdt(&g_node[0], bound(120000), reply, sizeof reply, "fill join: %d 64", sessions);
    assert_string_equal(reply, "OK");
    uint64_t t1 = now_ms();
    /* the donor must hold them all before the join, so the snapshot alone
     * has to bring them */
    wait_same_digest("join:", sessions, EVERY_SESSION_HELD, 60000, stable);
    uint64_t t2 = now_ms();

    /* a fourth node joins, listing the three as peers; they learn of it
     * from its heartbeats. A taken port only means trying another. */
    bool started = false;
    for (int attempt = 0; attempt < START_ATTEMPTS && !started; attempt++) {
        int port;
        pick_ports(1, &port);
        set_addr(&g_node[3], port);
        const char *join[] = {"--join"};
        started = spawn_in(3, 4, join, 1);
    }
    if (!started)
        fail_msg("the joiner could not bind its ports in %d attempts", START_ATTEMPTS);
    /* writes go on while it joins; it must end with those too */
    for (int k = 0; k < 300; k++) {
        char id[32], value[32];
        snprintf(id, sizeof id, "during:%d", k);
        snprintf(value, sizeof value, "v%d", k);
        put_ok(&g_node[k % 3], id, "data", value);
    }
    cmdt(&g_node[3], bound(120000) + 5000, reply, sizeof reply, "ready %" PRIu64,
         bound(120000));
    assert_string_equal(reply, "OK");
    uint64_t t3 = now_ms();

    wait_same_digest("join:", sessions, EVERY_SESSION_HELD, 120000, d);
    assert_string_equal(d, stable);
    wait_same_digest("during:", 300, EVERY_SESSION_HELD, 30000, d);
    uint64_t t4 = now_ms();
    uint64_t snap = stat_of(&g_node[3], "snapshot_sessions");
    print_message("fill %" PRIu64 " ms, replicated %" PRIu64 " ms, joined %" PRIu64
                  " sessions in %" PRIu64 " ms, equal after %" PRIu64 " ms\n",
                  t1 - t0, t2 - t1, snap, t3 - t2, t4 - t2);
    assert_true(snap >= (uint64_t) sessions);
    cluster_stop();
}

static void test_processes_converge_when_a_tenth_of_deltas_are_dropped(void **state)
{
    (void) state;
    const int sessions = 300, writes = 2000;
    const char *drop[] = {"--drop", "0.1"};
    cluster_start(3, drop, 2);
    char id[32], value[32], reply[256];
    for (int k = 0; k < writes; k++) {
        snprintf(id, sizeof id, "drop:%d", k % sessions);
        snprintf(value, sizeof value, "v%d", k);
        put_ok(&g_node[k % 3], id, k % 2 ? "a" : "b", value);
        /* some deletes, on another node than the write, to race with it:
         * that node may not have the session yet, and says so */
        if (k % 97 == 0) {
            cmd(&g_node[(k + 1) % 3], reply, "del %s", id);
            if (strcmp(reply, "OK") != 0 && strcmp(reply, "ERR not found") != 0)
                fail_msg("node%d: del %s answered '%s'", (k + 1) % 3, id, reply);
        }
    }
    /* a session whose last operation was a delete may be a tombstone on
     * one node and already collected on another, until every node has
     * collected it */
    char d[DIGEST_CAP];
    wait_same_digest("drop:", sessions, ABSENT_COUNTS_AS_STATE, 60000, d);
    /* equal is not enough: a session no delete ever touched ends with its
     * last write, on every node (each session is written by one node only,
     * always on the same attribute) */
    for (int s = 0; s < sessions; s++) {
        bool deleted = false;
        int last = -1;
        for (int k = s; k < writes; k += sessions) {
            deleted |= k % 97 == 0;
            last = k;
        }
        if (deleted)
            continue;
        char expect[64];
        snprintf(id, sizeof id, "drop:%d", s);
        snprintf(expect, sizeof expect, "VALUE v%d", last);
        for (int i = 0; i < 3; i++) {
            cmd(&g_node[i], reply, "get %s %s", id, last % 2 ? "a" : "b");
            if (strcmp(reply, expect) != 0)
                fail_msg("node%d: %s ends with '%s', wanted '%s'", i, id, reply, expect);
        }
    }
    uint64_t dropped = 0, repaired = 0, fetched = 0, resyncs = 0;
    for (int i = 0; i < 3; i++) {
        dropped += stat_of(&g_node[i], "deltas_dropped");
        repaired += stat_of(&g_node[i], "repaired");
        fetched += stat_of(&g_node[i], "full_fetches");
        resyncs += stat_of(&g_node[i], "resyncs");
    }
    print_message("dropped %" PRIu64 " deltas; repaired %" PRIu64 " from backlogs, fetched %"
                  PRIu64 " sessions, %" PRIu64 " resyncs\n",
                  dropped, repaired, fetched, resyncs);
    assert_true(dropped > 0);
    assert_true(repaired + fetched + resyncs > 0);
    cluster_stop();
}

static void test_a_write_with_two_acks_is_held_by_both_others_when_it_returns(void **state)
{
    (void) state;
    cluster_start(3, NULL, 0);
    char id[32], reply[256];
    for (int k = 0; k < 50; k++) {
        snprintf(id, sizeof id, "acked:%d", k);
        cmd(&g_node[k % 3], reply, "put2 %s user carol", id);
        assert_string_equal(reply, "OK");
        /* no polling: both others must hold it already */
        for (int r = 0; r < 3; r++) {
            if (r == k % 3)
                continue;
            cmd(&g_node[r], reply, "exists %s", id);
            if (strcmp(reply, "1") != 0)
                fail_msg("%s acknowledged by 2 peers, but %s answers exists=%s", id,
                         g_node[r].name, reply);
        }
    }
    cluster_stop();
}

int main(int argc, char **argv)
{
    if (argc < 2 || access(argv[1], X_OK) != 0) {
        fprintf(stderr, "usage: %s PATH-TO-sn_testnode [cmocka test filter]\n"
                        "skipped: no runnable sn_testnode given\n", argv[0]);
        return SKIP_EXIT;
    }
    g_testnode = argv[1];
    g_scale = SANITIZED ? 4 : 1;
    const char *scale = getenv("SN_TEST_TIMEOUT_SCALE");
    if (scale && atoi(scale) > 0)
        g_scale = (unsigned) atoi(scale);
    if (argc > 2)
        cmocka_set_test_filter(argv[2]);
    /* a node that died must show as EPIPE on write, not end the driver */
    signal(SIGPIPE, SIG_IGN);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_write_on_any_process_is_readable_on_the_others,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_session_deleted_on_one_process_is_gone_on_all,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_killed_process_leaves_every_session_served_and_replicated, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_write_with_two_acks_is_held_by_both_others_when_it_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_processes_converge_when_a_tenth_of_deltas_are_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_joining_process_ends_with_the_same_100k_sessions,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
