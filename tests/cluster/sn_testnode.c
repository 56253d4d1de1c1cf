/*
 * sn_testnode.c - one sessnode node in its own process, driven over a pipe.
 *
 * The multi-process cluster tests (test_processes.c) need real nodes that
 * replicate over loopback TCP, can be killed with SIGKILL, and can be asked
 * questions by a driver. This program is that node: it runs one sn_node_t
 * configured from its arguments, logs to stderr, and answers a line protocol
 * on stdin/stdout, exactly one reply line per command, flushed at once, so
 * the driver can pair every command with its reply without framing:
 *
 *   put ID NAME VALUE      write (creating the session)    OK | ERR <text>
 *   put2 ID NAME VALUE     the same, waiting for 2 acks    OK | ERR <text>
 *   get ID NAME            read                            VALUE <v> | MISS | ERR <text>
 *   del ID                 destroy the session             OK | ERR <text>
 *   exists ID                                              1 | 0 | ERR <text>
 *   fill PREFIX N SIZE     sessions PREFIX0..PREFIX<N-1>, attribute "data" of
 *                          SIZE bytes                      OK | ERR <text>
 *   digest PREFIX N [absent-ok]
 *                          the per-session digests of those ids, combined in
 *                          order into one 64-bit value     <16 hex digits> | MISSING <id>
 *                          (with absent-ok a session held nowhere counts as
 *                          digest 0: collected tombstones leave nothing behind)
 *   sdigest ID             one session's own digest        <16 hex digits> | MISSING
 *   stats                  sn_node_stats as key=value pairs on one line
 *   members                <count> followed by ADDRESS=STATE per peer
 *   ready MS               sn_node_wait_ready(MS)          OK | ERR <text>
 *   quit                                                   OK, then exits
 *
 * VALUE is the rest of the line after NAME, so it may hold spaces. Before
 * any command the node prints one greeting line, "STARTED <node id>" once
 * its endpoints are bound, or "ERR <text>" and exits: with status 3 when
 * the address was taken (the driver then retries on other ports), 2 for any
 * other failure. End of input ends the node like quit.
 *
 * Everything runs in the main thread; the library's replication thread is
 * the only other one, and it only calls the logger.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sessnode.h"

#define PEERS_MAX 16
#define EXIT_ADDR_TAKEN 3
#define EXIT_FAILURE_START 2

typedef struct {
    sn_node_t *node;
    char name[64];
    uint32_t ack_timeout_ms;
    uint32_t value_max;
    char *buf;                  /* value_max + 1 bytes, for get and fill */
} testnode_t;

static int g_log_level = SN_LOG_INFO;

static void log_stderr(int level, const char *msg, void *arg)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    const char *name = arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    /* one fprintf per line: stdio's lock keeps lines from the node's two
     * threads whole */
    fprintf(stderr, "%02d:%02d:%02d.%03ld %s %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000L, name, level >= 0 && level <= 3 ? levels[level] : "?", msg);
}

static void say(testnode_t *self, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_stderr(SN_LOG_INFO, line, self->name);
}

static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static void reply_rc(int rc)
{
    if (rc == 0)
        reply("OK");
    else
        reply("ERR %s", sn_strerror(rc));
}

/* Splits off the next space-separated word of *p; NULL when none is left. */
static char *next_word(char **p)
{
    char *s = *p;
    while (*s == ' ')
        s++;
    if (!*s)
        return NULL;
    char *e = s;
    while (*e && *e != ' ')
        e++;
    if (*e)
        *e++ = 0;
    *p = e;
    return s;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

/* splitmix64's finaliser: combining through it makes the result depend on
 * the order of the digests and on every bit of each. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void cmd_put(testnode_t *self, char *args, uint32_t acks)
{
    char *id = next_word(&args);
    char *name = next_word(&args);
    if (!id || !name) {
        reply("ERR usage: put ID NAME VALUE");
        return;
    }
    /* the value is the rest of the line, without the one separating space */
    const char *value = args;
    sn_write_t w = {.create = 1, .max_inactive = 0, .acks = acks};
    if (acks)
        w.timeout_ms = self->ack_timeout_ms;
    reply_rc(sn_node_put(self->node, id, strlen(id), name, strlen(name), value, strlen(value),
                         &w));
}

static void cmd_get(testnode_t *self, char *args)
{
    char *id = next_word(&args);
    char *name = next_word(&args);
    if (!id || !name) {
        reply("ERR usage: get ID NAME");
        return;
    }
    size_t len = 0;
    int rc = sn_node_get(self->node, id, strlen(id), name, strlen(name), self->buf,
                         self->value_max, &len, NULL);
    if (rc == SN_ENOTFOUND)
        reply("MISS");
    else if (rc)
        reply("ERR %s", sn_strerror(rc));
    else
        reply("VALUE %.*s", (int) len, self->buf);
}

static void cmd_del(testnode_t *self, char *args)
{
    char *id = next_word(&args);
    if (!id) {
        reply("ERR usage: del ID");
        return;
    }
    reply_rc(sn_node_destroy_session(self->node, id, strlen(id), NULL));
}

static void cmd_exists(testnode_t *self, char *args)
{
    char *id = next_word(&args);
    if (!id) {
        reply("ERR usage: exists ID");
        return;
    }
    int rc = sn_node_exists(self->node, id, strlen(id));
    if (rc < 0)
        reply("ERR %s", sn_strerror(rc));
    else
        reply("%d", rc);
}

static void cmd_fill(testnode_t *self, char *args)
{
    char *prefix = next_word(&args);
    uint64_t n, size;
    if (!prefix || !parse_u64(next_word(&args), &n) || !parse_u64(next_word(&args), &size)) {
        reply("ERR usage: fill PREFIX N SIZE");
        return;
    }
    if (size > self->value_max) {
        reply("ERR %s", sn_strerror(SN_ETOOBIG));
        return;
    }
    sn_write_t w = {.create = 1};
    char id[300];
    for (uint64_t k = 0; k < n; k++) {
        int idlen = snprintf(id, sizeof id, "%s%" PRIu64, prefix, k);
        if (idlen < 0 || (size_t) idlen >= sizeof id) {
            reply("ERR %s", sn_strerror(SN_EBADID));
            return;
        }
        /* each session's value differs, so a session applied under the
         * wrong id changes the digest */
        for (uint64_t j = 0; j < size; j++)
            self->buf[j] = (char) ('a' + (k + j) % 26);
        int rc = sn_node_put(self->node, id, (size_t) idlen, "data", 4, self->buf, size, &w);
        if (rc) {
            say(self, "fill: %s: %s", id, sn_strerror(rc));
            reply("ERR %s", sn_strerror(rc));
            return;
        }
    }
    reply("OK");
}

static void cmd_digest(testnode_t *self, char *args)
{
    char *prefix = next_word(&args);
    uint64_t n;
    if (!prefix || !parse_u64(next_word(&args), &n)) {
        reply("ERR usage: digest PREFIX N [absent-ok]");
        return;
    }
    const char *opt = next_word(&args);
    bool absent_ok = opt && strcmp(opt, "absent-ok") == 0;
    uint64_t h = 0;
    char id[300];
    for (uint64_t k = 0; k < n; k++) {
        int idlen = snprintf(id, sizeof id, "%s%" PRIu64, prefix, k);
        if (idlen < 0 || (size_t) idlen >= sizeof id) {
            reply("ERR %s", sn_strerror(SN_EBADID));
            return;
        }
        uint64_t d = 0;
        int rc = sn_node_digest(self->node, id, (size_t) idlen, &d);
        if (rc == SN_ENOTFOUND && absent_ok) {
            d = 0;
        } else if (rc == SN_ENOTFOUND) {
            reply("MISSING %s", id);
            return;
        } else if (rc) {
            reply("ERR %s", sn_strerror(rc));
            return;
        }
        h = mix64(h ^ d);
    }
    reply("%016" PRIx64, h);
}

static void cmd_sdigest(testnode_t *self, char *args)
{
    char *id = next_word(&args);
    if (!id) {
        reply("ERR usage: sdigest ID");
        return;
    }
    uint64_t d = 0;
    int rc = sn_node_digest(self->node, id, strlen(id), &d);
    if (rc == SN_ENOTFOUND)
        reply("MISSING");
    else if (rc)
        reply("ERR %s", sn_strerror(rc));
    else
        reply("%016" PRIx64, d);
}

static void cmd_stats(testnode_t *self)
{
    sn_node_stats_t s;
    sn_node_stats(self->node, &s);
#define F(x) #x "=%" PRIu64
    reply(F(sessions) " " F(tombstones) " " F(bytes) " " F(evictions) " " F(expired) " "
          F(writes) " " F(deltas_sent) " " F(deltas_received) " " F(deltas_dropped) " "
          F(duplicates) " " F(gaps_detected) " " F(repairs_requested) " " F(repaired) " "
          F(full_fetches) " " F(resyncs) " " F(bad_frames) " " F(queue_overflows) " "
          F(acks_timed_out) " " F(bytes_sent) " " F(bytes_received) " "
          F(snapshot_sessions) " " F(peers_alive),
          s.sessions, s.tombstones, s.bytes, s.evictions, s.expired, s.writes, s.deltas_sent,
          s.deltas_received, s.deltas_dropped, s.duplicates, s.gaps_detected,
          s.repairs_requested, s.repaired, s.full_fetches, s.resyncs, s.bad_frames,
          s.queue_overflows, s.acks_timed_out, s.bytes_sent, s.bytes_received,
          s.snapshot_sessions, s.peers_alive);
#undef F
}

static void cmd_members(testnode_t *self)
{
    static const char *const states[] = {"alive", "suspect", "dead"};
    sn_member_t m[PEERS_MAX * 2];
    size_t count = 0;
    int rc = sn_node_members(self->node, m, sizeof m / sizeof m[0], &count);
    if (rc) {
        reply("ERR %s", sn_strerror(rc));
        return;
    }
    char line[PEERS_MAX * 2 * 300 + 32];
    size_t off = (size_t) snprintf(line, sizeof line, "%zu", count);
    for (size_t i = 0; i < count && i < sizeof m / sizeof m[0] && off < sizeof line; i++) {
        int st = m[i].state;
        off += (size_t) snprintf(line + off, sizeof line - off, " %s=%s", m[i].address,
                                 st >= 0 && st <= 2 ? states[st] : "?");
    }
    reply("%s", line);
}

static void cmd_ready(testnode_t *self, char *args)
{
    uint64_t ms;
    if (!parse_u64(next_word(&args), &ms) || ms > UINT32_MAX) {
        reply("ERR usage: ready MS");
        return;
    }
    reply_rc(sn_node_wait_ready(self->node, (uint32_t) ms));
}

/* Runs one command line; false when the node should stop. */
static bool run_command(testnode_t *self, char *line)
{
    char *args = line;
    char *cmd = next_word(&args);
    if (!cmd)
        reply("ERR empty command");
    else if (strcmp(cmd, "put") == 0)
        cmd_put(self, args, 0);
    else if (strcmp(cmd, "put2") == 0)
        cmd_put(self, args, 2);
    else if (strcmp(cmd, "get") == 0)
        cmd_get(self, args);
    else if (strcmp(cmd, "del") == 0)
        cmd_del(self, args);
    else if (strcmp(cmd, "exists") == 0)
        cmd_exists(self, args);
    else if (strcmp(cmd, "fill") == 0)
        cmd_fill(self, args);
    else if (strcmp(cmd, "digest") == 0)
        cmd_digest(self, args);
    else if (strcmp(cmd, "sdigest") == 0)
        cmd_sdigest(self, args);
    else if (strcmp(cmd, "stats") == 0)
        cmd_stats(self);
    else if (strcmp(cmd, "members") == 0)
        cmd_members(self);
    else if (strcmp(cmd, "ready") == 0)
        cmd_ready(self, args);
    else if (strcmp(cmd, "quit") == 0) {
        reply("OK");
        return false;
    } else
        reply("ERR unknown command %s", cmd);
    return true;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sn_testnode --cluster tcp://127.0.0.1:PORT [--peer ADDR]... [--join]\n"
            "                   [--id N] [--drop RATE] [--name NAME] [--heartbeat MS]\n"
            "                   [--join-timeout MS] [--ack-timeout MS] [--log-level 0-3]\n"
            "Runs one node; commands on stdin, one reply line each on stdout.\n");
}

int main(int argc, char **argv)
{
    sn_config_t cfg;
    sn_config_init(&cfg);
    const char *peers[PEERS_MAX + 1];
    int npeers = 0;
    testnode_t self = {.ack_timeout_ms = 10000};
    /* a joiner may start before its donor is heard; the test bounds the
     * whole join itself */
    cfg.join_timeout_ms = 30000;
    const char *name = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        if (strcmp(a, "--join") == 0) {
            cfg.join = 1;
            continue;
        }
        if (!v) {
            usage();
            return EXIT_FAILURE_START;
        }
        i++;
        if (strcmp(a, "--cluster") == 0)
            cfg.cluster = v;
        else if (strcmp(a, "--peer") == 0 && npeers < PEERS_MAX)
            peers[npeers++] = v;
        else if (strcmp(a, "--id") == 0 && parse_u64(v, &n))
            cfg.node_id = n;
        else if (strcmp(a, "--drop") == 0)
            cfg.test_drop_rate = strtod(v, NULL);
        else if (strcmp(a, "--name") == 0)
            name = v;
        else if (strcmp(a, "--heartbeat") == 0 && parse_u64(v, &n) && n && n <= UINT32_MAX)
            cfg.heartbeat_ms = (uint32_t) n;
        else if (strcmp(a, "--join-timeout") == 0 && parse_u64(v, &n) && n <= UINT32_MAX)
            cfg.join_timeout_ms = (uint32_t) n;
        else if (strcmp(a, "--ack-timeout") == 0 && parse_u64(v, &n) && n <= UINT32_MAX)
            self.ack_timeout_ms = (uint32_t) n;
        else if (strcmp(a, "--log-level") == 0 && parse_u64(v, &n) && n <= SN_LOG_DEBUG)
            g_log_level = (int) n;
        else {
            usage();
            return EXIT_FAILURE_START;
        }
    }
    if (!cfg.cluster) {
        usage();
        return EXIT_FAILURE_START;
    }
    peers[npeers] = NULL;
    cfg.peers = peers;
    if (name)
        snprintf(self.name, sizeof self.name, "%s", name);
    else
        snprintf(self.name, sizeof self.name, "%s", cfg.cluster);
    cfg.name = self.name;
    cfg.log = log_stderr;
    cfg.log_arg = self.name;
    cfg.log_level = g_log_level;
    self.value_max = cfg.value_max;

    /* a driver that went away must end us through EPIPE and EOF, not a
     * signal in the middle of a library call */
    signal(SIGPIPE, SIG_IGN);

    self.buf = malloc((size_t) self.value_max + 1);
    self.node = sn_node_new(&cfg);
    if (!self.buf || !self.node) {
        reply("ERR %s", self.buf ? "bad configuration" : sn_strerror(SN_ENOMEM));
        free(self.buf);
        return EXIT_FAILURE_START;
    }
    int rc = sn_node_start(self.node);
    if (rc) {
        say(&self, "start: %s", sn_strerror(rc));
        reply("ERR %s", sn_strerror(rc));
        sn_node_destroy(&self.node);
        free(self.buf);
        return rc == SN_EADDR ? EXIT_ADDR_TAKEN : EXIT_FAILURE_START;
    }
    say(&self, "started as node %" PRIu64 " on %s, %d peer(s)%s, drop %.3f",
        sn_node_id(self.node), cfg.cluster, npeers, cfg.join ? ", joining" : "",
        cfg.test_drop_rate);
    reply("STARTED %" PRIu64, sn_node_id(self.node));

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!run_command(&self, line))
            break;
    }
    say(&self, "stopping");
    free(line);
    sn_node_destroy(&self.node);
    free(self.buf);
    return 0;
}
