/*
 * sn_daemon_opts.c - the daemon's flags and its config file.
 *
 * One table of options serves both: a config file's keys are the long flag
 * names without their dashes, and every value goes through the same
 * parser, so a value the command line refuses is refused in the file too,
 * with the same words. The command line is read first and remembers which
 * options it set; the file named by --config then fills in only the
 * others, which is how flags win over the file wherever --config appears.
 *
 * Addresses are resolved here, once, to numeric IPv4: a node is known to
 * its peers by its cluster address string, so two daemons that name the
 * same peer differently ("localhost" and "127.0.0.1") would otherwise see
 * two members. Every refusal prints one line that names the flag (or
 * file:line) and the value, then a pointer to --help, and exits 2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sn_daemon.h"

enum {
    OPT_CONFIG = 256,
    OPT_NAME,
    OPT_LISTEN,
    OPT_CLUSTER,
    OPT_JOIN,
    OPT_MAX_MEMORY,
    OPT_WRITE_CONCERN,
    OPT_WRITE_TIMEOUT,
    OPT_THREADS,
    OPT_ITEM_SIZE_MAX,
    OPT_MAX_CONNECTIONS,
    OPT_JOIN_TIMEOUT,
    OPT_SUSPECT_AFTER,
    OPT_DEAD_AFTER,
    OPT_CERT,
    OPT_ALLOW,
    OPT_INSECURE_BUS,
    OPT_TIER,
    OPT_TIER_QUEUE,
    OPT_TIER_QUEUE_MB,
    OPT_TIER_READ_THROUGH,
    OPT_VERBOSE,
    OPT_HELP,
    OPT_VERSION,
    OPT_END_
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"name", required_argument, NULL, OPT_NAME},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"cluster", required_argument, NULL, OPT_CLUSTER},
    {"join", required_argument, NULL, OPT_JOIN},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"write-concern", required_argument, NULL, OPT_WRITE_CONCERN},
    {"write-timeout", required_argument, NULL, OPT_WRITE_TIMEOUT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"item-size-max", required_argument, NULL, OPT_ITEM_SIZE_MAX},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"join-timeout", required_argument, NULL, OPT_JOIN_TIMEOUT},
    {"suspect-after", required_argument, NULL, OPT_SUSPECT_AFTER},
    {"dead-after", required_argument, NULL, OPT_DEAD_AFTER},
    {"cert", required_argument, NULL, OPT_CERT},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"insecure-bus", no_argument, NULL, OPT_INSECURE_BUS},
    {"tier", required_argument, NULL, OPT_TIER},
    {"tier-queue", required_argument, NULL, OPT_TIER_QUEUE},
    {"tier-queue-mb", required_argument, NULL, OPT_TIER_QUEUE_MB},
    {"tier-read-through", no_argument, NULL, OPT_TIER_READ_THROUGH},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Ranges, quoted by the error messages and --help. */
#define THREADS_MAX 64
#define MAX_MEMORY_MB_MAX (16u * 1024u * 1024u)   /* 16 TiB */
#define WRITE_CONCERN_MAX 255
#define WRITE_TIMEOUT_MAX 600000
#define ITEM_SIZE_MIN 1024u
#define ITEM_SIZE_MAX_MAX (16u << 20)   /* a replicated session fits one 32 MiB frame */
#define MAX_CONNECTIONS_MAX 1000000
#define JOIN_TIMEOUT_MIN 100
#define JOIN_TIMEOUT_MAX 3600000
#define SUSPECT_MIN 300         /* three heartbeats */
#define SUSPECT_MAX 600000
#define DEAD_MIN 400
#define DEAD_MAX 3600000
#define VERBOSE_MAX 2
#define TIER_QUEUE_MIN 1
#define TIER_QUEUE_MAX 100000000
#define TIER_QUEUE_MB_MAX 1048576

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: sessnode [OPTION]...\n"
        "\n"
        "A sessnode daemon: serves memcached clients (text and binary protocols) from\n"
        "a session store that it replicates to every peer over ZeroMQ. With no\n"
        "option it runs one node alone on 127.0.0.1.\n"
        "\n"
        "Options (a config file takes the same names without dashes; flags win):\n"
        "  --config FILE         read 'key = value' lines from FILE (keys: the long\n"
        "                        option names below, without dashes)\n"
        "  --name NAME           this node's name in logs and member lists, up to %d\n"
        "                        bytes (default: HOSTNAME-PORT, PORT of --cluster)\n"
        "  --listen HOST:PORT    where memcached clients connect; HOST is an IPv4\n"
        "                        address, a host name, or * for every interface\n"
        "                        (default %s)\n"
        "  --cluster HOST:PORT   where peers reach this node; it binds PORT (PUB) and\n"
        "                        PORT+1 (ROUTER) (default %s)\n"
        "  --join HOST:PORT[,HOST:PORT...]\n"
        "                        peers' cluster addresses; copy the sessions from the\n"
        "                        first that answers before serving (default: none,\n"
        "                        the node runs alone); may be repeated\n"
        "  --join-timeout MS     how long to wait for a peer to answer the join\n"
        "                        before serving alone (default %d)\n"
        "  --suspect-after MS    a peer not heard from for this long is listed\n"
        "                        suspect (default %d; heartbeats go every 100 ms)\n"
        "  --dead-after MS       ... and dead, and no longer asked for repairs;\n"
        "                        more than --suspect-after (default %d)\n"
        "  --cert FILE           secure the cluster bus with CurveZMQ: this node's\n"
        "                        certificate (NAME.cert from 'sessctl keygen', with\n"
        "                        NAME.cert_secret beside it)\n"
        "  --allow DIR           with --cert: the members' public certificates; a\n"
        "                        peer whose key is not there cannot connect. A\n"
        "                        --join peer is found there by its 'address'\n"
        "  --insecure-bus        allow a plain-text bus on a --cluster address that\n"
        "                        is not loopback (without it, such a node needs\n"
        "                        --cert and --allow)\n"
        "  --tier HOST:PORT[,HOST:PORT...]\n"
        "                        memcached servers that every session written here\n"
        "                        is backed up to (asynchronously); a node that gets\n"
        "                        the sessions from no peer at start loads them from\n"
        "                        there (default: none)\n"
        "  --tier-queue N        sessions waiting for the tier, at most; past it a\n"
        "                        change is not backed up, and counted (default %d)\n"
        "  --tier-queue-mb MB    memory for the copies those sessions wait with\n"
        "                        (encoded when written); past it a session waits\n"
        "                        without one, read again when written (default %d)\n"
        "  --tier-read-through   a read of a session not held here (evicted, say)\n"
        "                        looks for it in the tier first (default: off)\n"
        "  --max-memory MB       memory for sessions; past it the least recently used\n"
        "                        are evicted; 0 = unbounded (default %d)\n"
        "  --item-size-max BYTES largest value, k or m suffix allowed (default 1m,\n"
        "                        at most 16m)\n"
        "  --write-concern K     each write waits until K peers applied it (default 0:\n"
        "                        returns once local and queued for the peers)\n"
        "  --write-timeout MS    how long such a write waits (default %d)\n"
        "  --threads N           worker threads serving clients, 1 to %d (default %d)\n"
        "  --max-connections N   open client connections; more are closed at once\n"
        "                        (default %d)\n"
        "  -v, --verbose         more logging (debug); twice: every connection too\n"
        "  -h, --help            this text\n"
        "  --version             print the version and exit\n"
        "\n"
        "Logs go to stderr, one line each: TIME LEVEL [NAME] MESSAGE. SIGTERM or\n"
        "SIGINT leaves the cluster and exits. Exit status: 0 stopped cleanly,\n"
        "1 runtime failure (cannot bind, ...), 2 bad usage.\n",
        SD_NAME_MAX, SD_DEFAULT_LISTEN, SD_DEFAULT_CLUSTER, SD_DEFAULT_JOIN_TIMEOUT_MS,
        SD_DEFAULT_SUSPECT_MS, SD_DEFAULT_DEAD_MS, SD_DEFAULT_TIER_QUEUE,
        SD_DEFAULT_TIER_QUEUE_MB, SD_DEFAULT_MAX_MEMORY_MB, SD_DEFAULT_WRITE_TIMEOUT_MS, THREADS_MAX,
        SD_DEFAULT_THREADS, SD_DEFAULT_MAX_CONNECTIONS);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sessnode: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'sessnode --help'.\n", stderr);
    va_end(ap);
    exit(SD_EXIT_USAGE);
}

/* ------------------------------------------------------------ values */

/* A decimal number in [min, max]: digits only, no sign, no spaces. */
/* A switch: the flag alone (v NULL) means yes; a file says yes or no. */
static bool parse_yes_no(const char *v, bool *out, char *err, size_t errlen)
{
    if (!v || strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = false;
        return true;
    }
    snprintf(err, errlen, "expected yes or no");
    return false;
}

static bool parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !isdigit((unsigned char) *s))
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char) *s))
            return false;
        unsigned d = (unsigned) (*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* BYTES, BYTESk or BYTESm (KiB, MiB). */
static bool parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char digits[32];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof digits)
        return false;
    uint64_t unit = 1;
    char last = (char) tolower((unsigned char) s[n - 1]);
    if (last == 'k' || last == 'm') {
        unit = last == 'k' ? 1024 : 1024 * 1024;
        n--;
    }
    memcpy(digits, s, n);
    digits[n] = '\0';
    uint64_t v;
    if (!parse_uint(digits, 0, UINT64_MAX / unit, &v))
        return false;
    v *= unit;
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/*
 * HOST:PORT to a numeric IPv4 address. `wildcard`: "*" (and 0.0.0.0) are
 * allowed and mean every interface. `port_max`: a cluster address needs its
 * port + 1 too. On failure writes why into err.
 */
static bool parse_hostport(const char *s, bool wildcard, uint32_t port_max, sd_addr_t *out,
                           char *err, size_t errlen)
{
    const char *colon = strrchr(s, ':');
    if (!colon) {
        snprintf(err, errlen, "expected HOST:PORT");
        return false;
    }
    size_t hlen = (size_t) (colon - s);
    if (hlen == 0) {
        snprintf(err, errlen, "expected HOST:PORT, the host is missing");
        return false;
    }
    if (s[0] == '[' || memchr(s, ':', hlen)) {
        snprintf(err, errlen, "IPv6 addresses are not supported; use an IPv4 address");
        return false;
    }
    char host[256];
    if (hlen >= sizeof host) {
        snprintf(err, errlen, "the host name is too long");
        return false;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    uint64_t port;
    if (colon[1] == '\0') {
        snprintf(err, errlen, "expected HOST:PORT, the port is missing");
        return false;
    }
    if (!parse_uint(colon + 1, 1, port_max, &port)) {
        if (port_max < 65535)
            snprintf(err, errlen,
                     "the port must be a number from 1 to %" PRIu32
                     " (the node also binds the next port)", port_max);
        else
            snprintf(err, errlen, "the port must be a number from 1 to %" PRIu32, port_max);
        return false;
    }

    memset(out, 0, sizeof *out);
    out->sa.sin_family = AF_INET;
    out->sa.sin_port = htons((uint16_t) port);
    if (strcmp(host, "*") == 0) {
        out->sa.sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, host, &out->sa.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0 || !res) {
            snprintf(err, errlen, "cannot resolve host '%s': %s", host,
                     rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
            if (res)
                freeaddrinfo(res);
            return false;
        }
        out->sa.sin_addr = ((const struct sockaddr_in *) res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    if (!wildcard && out->sa.sin_addr.s_addr == htonl(INADDR_ANY)) {
        snprintf(err, errlen,
                 "needs the address peers reach this node at, not every interface");
        return false;
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &out->sa.sin_addr, ip, sizeof ip);
    snprintf(out->text, sizeof out->text, "%s:%u", ip, (unsigned) port);
    return true;
}

static bool parse_name(const char *s, char *out, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n == 0 || n > SD_NAME_MAX) {
        snprintf(err, errlen, "expected 1 to %d bytes", SD_NAME_MAX);
        return false;
    }
    if (s[0] == '-') {
        snprintf(err, errlen, "a name cannot start with '-'");
        return false;
    }
    for (const char *p = s; *p; p++)
        if (!isgraph((unsigned char) *p)) {
            snprintf(err, errlen, "expected printable characters without spaces");
            return false;
        }
    memcpy(out, s, n + 1);
    return true;
}

static bool add_peers(sd_opts_t *o, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t) (comma - p) : strlen(p);
        while (n > 0 && isspace((unsigned char) *p)) {
            p++;
            n--;
        }
        while (n > 0 && isspace((unsigned char) p[n - 1]))
            n--;
        char one[300];
        if (n == 0) {
            snprintf(err, errlen, "expected HOST:PORT[,HOST:PORT...], found an empty address");
            return false;
        }
        if (n >= sizeof one) {
            snprintf(err, errlen, "an address is too long");
            return false;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        sd_addr_t a;
        char why[200];
        if (!parse_hostport(one, false, 65534, &a, why, sizeof why)) {
            snprintf(err, errlen, "'%.200s': %.90s", one, why);
            return false;
        }
        sd_addr_t *grown = realloc(o->peers, (o->npeers + 1) * sizeof *grown);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        o->peers = grown;
        o->peers[o->npeers++] = a;
        if (!comma)
            return true;
        p = comma + 1;
    }
}

/*
 * Applies one option's value. On failure writes why into err (the caller
 * adds which flag or line and the value).
 */
static bool apply(sd_opts_t *o, int id, const char *v, char *err, size_t errlen)
{
    uint64_t n;
    switch (id) {
    case OPT_CONFIG:
        free(o->config);
        o->config = strdup(v);
        return o->config != NULL;
    case OPT_NAME:
        return parse_name(v, o->name, err, errlen);
    case OPT_LISTEN:
        return parse_hostport(v, true, 65535, &o->listen, err, errlen);
    case OPT_CLUSTER:
        return parse_hostport(v, false, 65534, &o->cluster, err, errlen);
    case OPT_JOIN:
        return add_peers(o, v, err, errlen);
    case OPT_MAX_MEMORY:
        if (!parse_uint(v, 0, MAX_MEMORY_MB_MAX, &n))
            break;
        o->max_memory_mb = n;
        return true;
    case OPT_WRITE_CONCERN:
        if (!parse_uint(v, 0, WRITE_CONCERN_MAX, &n))
            break;
        o->write_concern = (uint32_t) n;
        return true;
    case OPT_WRITE_TIMEOUT:
        if (!parse_uint(v, 1, WRITE_TIMEOUT_MAX, &n))
            break;
        o->write_timeout_ms = (uint32_t) n;
        return true;
    case OPT_THREADS:
        if (!parse_uint(v, 1, THREADS_MAX, &n))
            break;
        o->threads = (uint32_t) n;
        return true;
    case OPT_ITEM_SIZE_MAX:
        if (!parse_size(v, ITEM_SIZE_MIN, ITEM_SIZE_MAX_MAX, &n)) {
            snprintf(err, errlen, "expected a size from 1k to 16m (BYTES, or a k or m suffix)");
            return false;
        }
        o->item_size_max = (uint32_t) n;
        return true;
    case OPT_MAX_CONNECTIONS:
        if (!parse_uint(v, 1, MAX_CONNECTIONS_MAX, &n))
            break;
        o->max_connections = (uint32_t) n;
        return true;
    case OPT_JOIN_TIMEOUT:
        if (!parse_uint(v, JOIN_TIMEOUT_MIN, JOIN_TIMEOUT_MAX, &n))
            break;
        o->join_timeout_ms = (uint32_t) n;
        return true;
    case OPT_SUSPECT_AFTER:
        if (!parse_uint(v, SUSPECT_MIN, SUSPECT_MAX, &n))
            break;
        o->suspect_ms = (uint32_t) n;
        return true;
    case OPT_DEAD_AFTER:
        if (!parse_uint(v, DEAD_MIN, DEAD_MAX, &n))
            break;
        o->dead_ms = (uint32_t) n;
        return true;
    case OPT_CERT:
    case OPT_ALLOW: {
        char *dst = id == OPT_CERT ? o->cert : o->allow;
        struct stat sb;
        if (!*v || strlen(v) >= sizeof o->cert) {
            snprintf(err, errlen, "expected a path");
            return false;
        }
        if (stat(v, &sb) != 0 || access(v, R_OK) != 0) {
            snprintf(err, errlen, "cannot read it: %s", strerror(errno ? errno : EACCES));
            return false;
        }
        if (id == OPT_ALLOW && !S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "not a directory");
            return false;
        }
        if (id == OPT_CERT && !S_ISREG(sb.st_mode)) {
            snprintf(err, errlen, "not a file");
            return false;
        }
        snprintf(dst, sizeof o->cert, "%s", v);
        return true;
    }
    case OPT_TIER: {
        /* each server checked as --join checks a peer; the list is kept as
         * given (libmemcached resolves names itself) */
        sd_opts_t scratch;
        memset(&scratch, 0, sizeof scratch);
        if (strlen(v) >= sizeof o->tier) {
            snprintf(err, errlen, "the list is too long");
            return false;
        }
        bool ok = add_peers(&scratch, v, err, errlen);
        free(scratch.peers);
        if (!ok)
            return false;
        snprintf(o->tier, sizeof o->tier, "%s", v);
        return true;
    }
    case OPT_TIER_QUEUE:
        if (!parse_uint(v, TIER_QUEUE_MIN, TIER_QUEUE_MAX, &n))
            break;
        o->tier_queue = (uint32_t) n;
        return true;
    case OPT_TIER_QUEUE_MB:
        if (!parse_uint(v, 1, TIER_QUEUE_MB_MAX, &n))
            break;
        o->tier_queue_mb = (uint32_t) n;
        return true;
    case OPT_INSECURE_BUS:  /* yes/no in the file; the flag alone means yes */
        return parse_yes_no(v, &o->insecure_bus, err, errlen);
    case OPT_TIER_READ_THROUGH:
        return parse_yes_no(v, &o->tier_read_through, err, errlen);
    case OPT_VERBOSE:   /* a number in the file; the flag counts itself */
        if (!parse_uint(v, 0, VERBOSE_MAX, &n))
            break;
        o->verbose = (int) n;
        return true;
    default:
        snprintf(err, errlen, "not a setting");
        return false;
    }
    /* every numeric option ends here: say its range */
    uint64_t lo = 0, hi = 0;
    switch (id) {
    case OPT_MAX_MEMORY: hi = MAX_MEMORY_MB_MAX; break;
    case OPT_WRITE_CONCERN: hi = WRITE_CONCERN_MAX; break;
    case OPT_WRITE_TIMEOUT: lo = 1; hi = WRITE_TIMEOUT_MAX; break;
    case OPT_THREADS: lo = 1; hi = THREADS_MAX; break;
    case OPT_MAX_CONNECTIONS: lo = 1; hi = MAX_CONNECTIONS_MAX; break;
    case OPT_JOIN_TIMEOUT: lo = JOIN_TIMEOUT_MIN; hi = JOIN_TIMEOUT_MAX; break;
    case OPT_SUSPECT_AFTER: lo = SUSPECT_MIN; hi = SUSPECT_MAX; break;
    case OPT_DEAD_AFTER: lo = DEAD_MIN; hi = DEAD_MAX; break;
    case OPT_TIER_QUEUE: lo = TIER_QUEUE_MIN; hi = TIER_QUEUE_MAX; break;
    case OPT_TIER_QUEUE_MB: lo = 1; hi = TIER_QUEUE_MB_MAX; break;
    case OPT_VERBOSE: hi = VERBOSE_MAX; break;
    default: break;
    }
    snprintf(err, errlen, "expected a whole number from %" PRIu64 " to %" PRIu64, lo, hi);
    return false;
}

static const struct option *find_opt(const char *name, size_t len)
{
    for (const struct option *p = long_opts; p->name; p++)
        if (strlen(p->name) == len && memcmp(p->name, name, len) == 0)
            return p;
    return NULL;
}

/* ------------------------------------------------------------ the file */

static char *trim(char *s)
{
    while (isspace((unsigned char) *s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char) e[-1]))
        *--e = '\0';
    return s;
}

static void read_config(sd_opts_t *o, const char *path, const bool *set)
{
    FILE *f = fopen(path, "r");
    if (!f)
        usage_error("--config '%s': cannot read it: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    bool file_join = false;
    char err[300];
    while ((len = getline(&line, &cap, f)) != -1) {
        lineno++;
        if ((size_t) len != strlen(line)) {
            fclose(f);
            free(line);
            usage_error("%s:%u: a NUL byte; is this a config file?", path, lineno);
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, sizeof err, "%s", s);
            fclose(f);
            free(line);
            usage_error("%s:%u: expected 'key = value', found '%s'", path, lineno, err);
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = trim(eq + 1);
        const struct option *opt = find_opt(key, strlen(key));
        if (!opt || opt->val == OPT_CONFIG || opt->val == OPT_HELP || opt->val == OPT_VERSION) {
            snprintf(err, sizeof err, "%s", key);
            fclose(f);
            free(line);
            usage_error("%s:%u: unknown key '%s'", path, lineno, err);
        }
        if (set[opt->val - OPT_CONFIG])
            continue;   /* the command line set it */
        if (opt->val == OPT_JOIN && !file_join) {
            /* the file's join lines add up, starting from an empty list */
            o->npeers = 0;
            file_join = true;
        }
        char why[250];
        if (!apply(o, opt->val, value, why, sizeof why)) {
            char shown[120];
            snprintf(shown, sizeof shown, "%s", value);
            char key_copy[40];
            snprintf(key_copy, sizeof key_copy, "%s", key);
            fclose(f);
            free(line);
            usage_error("%s:%u: %s '%s': %s", path, lineno, key_copy, shown, why);
        }
    }
    bool failed = ferror(f);
    int saved = errno;
    fclose(f);
    free(line);
    if (failed)
        usage_error("--config '%s': cannot read it: %s", path, strerror(saved));
}

/* ------------------------------------------------------------ the whole */

static void defaults(sd_opts_t *o)
{
    memset(o, 0, sizeof *o);
    char err[200];
    if (!parse_hostport(SD_DEFAULT_LISTEN, true, 65535, &o->listen, err, sizeof err) ||
        !parse_hostport(SD_DEFAULT_CLUSTER, false, 65534, &o->cluster, err, sizeof err))
        abort();  /* the defaults are numeric: cannot fail */
    o->max_memory_mb = SD_DEFAULT_MAX_MEMORY_MB;
    o->write_timeout_ms = SD_DEFAULT_WRITE_TIMEOUT_MS;
    o->threads = SD_DEFAULT_THREADS;
    o->item_size_max = SD_DEFAULT_ITEM_SIZE_MAX;
    o->max_connections = SD_DEFAULT_MAX_CONNECTIONS;
    o->join_timeout_ms = SD_DEFAULT_JOIN_TIMEOUT_MS;
    o->suspect_ms = SD_DEFAULT_SUSPECT_MS;
    o->dead_ms = SD_DEFAULT_DEAD_MS;
    o->tier_queue = SD_DEFAULT_TIER_QUEUE;
    o->tier_queue_mb = SD_DEFAULT_TIER_QUEUE_MB;
}

/* Drops duplicate peers and this node's own address, so that every daemon
 * of a cluster can be given the same --join list. */
static void tidy_peers(sd_opts_t *o)
{
    size_t kept = 0;
    for (size_t i = 0; i < o->npeers; i++) {
        bool drop = strcmp(o->peers[i].text, o->cluster.text) == 0;
        for (size_t j = 0; j < kept && !drop; j++)
            drop = strcmp(o->peers[i].text, o->peers[j].text) == 0;
        if (!drop)
            o->peers[kept++] = o->peers[i];
    }
    o->npeers = kept;
}

/* The client port must not be one of the two cluster ports on the same
 * address: that daemon could never start, so say so as bad usage. */
static void check_overlap(const sd_opts_t *o)
{
    unsigned lport = ntohs(o->listen.sa.sin_port), cport = ntohs(o->cluster.sa.sin_port);
    bool same_host = o->listen.sa.sin_addr.s_addr == o->cluster.sa.sin_addr.s_addr ||
                     o->listen.sa.sin_addr.s_addr == htonl(INADDR_ANY);
    if (same_host && (lport == cport || lport == cport + 1))
        usage_error("--listen %s overlaps the cluster ports %u and %u of --cluster %s",
                    o->listen.text, cport, cport + 1, o->cluster.text);
}

/* A bus that leaves the machine is secured, unless the operator says
 * otherwise in so many words: anyone who can reach a plain-text bus reads
 * every session and can write any. */
static void check_security(const sd_opts_t *o)
{
    if (!o->cert[0] != !o->allow[0])
        usage_error("%s needs %s too: a certificate without an allow-list would let any "
                    "key in, an allow-list without a certificate secures nothing",
                    o->cert[0] ? "--cert" : "--allow", o->cert[0] ? "--allow" : "--cert");
    bool loopback = (ntohl(o->cluster.sa.sin_addr.s_addr) >> 24) == 127;
    if (!o->cert[0] && !loopback && !o->insecure_bus)
        usage_error("--cluster %s is not a loopback address: secure the bus with --cert and "
                    "--allow (see 'sessctl keygen'), or say --insecure-bus",
                    o->cluster.text);
}

static void check_tier(const sd_opts_t *o)
{
    if (o->tier_read_through && !o->tier[0])
        usage_error("--tier-read-through needs --tier: there is no tier to read through to");
}

static void default_name(sd_opts_t *o)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "sessnode");
    host[sizeof host - 1] = '\0';
    /* the short host name: the domain rarely tells nodes apart */
    char *dot = strchr(host, '.');
    if (dot && dot != host)
        *dot = '\0';
    char port[8];
    snprintf(port, sizeof port, "-%u", (unsigned) ntohs(o->cluster.sa.sin_port));
    size_t room = SD_NAME_MAX - strlen(port);
    snprintf(o->name, sizeof o->name, "%.*s%s", (int) room, host, port);
    for (char *p = o->name; *p; p++)
        if (!isgraph((unsigned char) *p))
            *p = '_';
}

void sd_opts_parse(sd_opts_t *o, int argc, char **argv)
{
    defaults(o);
    bool set[OPT_END_ - OPT_CONFIG] = {false};
    bool help = false, version = false;
    int verbose_flags = 0;
    char err[300];

    opterr = 0;
    optind = 1;
    int c;
    /* "+" would stop at the first non-option; permuting lets a stray
     * argument be reported wherever it is */
    while ((c = getopt_long(argc, argv, ":hv", long_opts, NULL)) != -1) {
        const char *arg = argv[optind - 1];
        switch (c) {
        case 'h':
        case OPT_HELP:
            help = true;
            continue;
        case 'v':
        case OPT_VERBOSE:
            verbose_flags++;
            continue;
        case OPT_VERSION:
            version = true;
            continue;
        case ':':
            usage_error("%s needs a value", arg);
        case '?':
            if (optopt && optopt < 256)
                usage_error("unknown flag '-%c'", optopt);
            if (strncmp(arg, "--", 2) == 0) {
                const char *eq = strchr(arg, '=');
                const struct option *p = eq ? find_opt(arg + 2, (size_t) (eq - arg - 2)) : NULL;
                if (p && p->has_arg == no_argument)
                    usage_error("--%s takes no value, found '%s'", p->name, arg);
            }
            usage_error("unknown flag '%s'", arg);
        default:
            break;
        }
        if (!apply(o, c, optarg, err, sizeof err)) {
            const char *name = "?";
            for (const struct option *p = long_opts; p->name; p++)
                if (p->val == c)
                    name = p->name;
            usage_error("--%s '%s': %s", name, optarg, err);
        }
        set[c - OPT_CONFIG] = true;
    }
    if (optind < argc)
        usage_error("unexpected argument '%s' (options start with --)", argv[optind]);
    if (help) {
        usage(stdout);
        exit(0);
    }
    if (version) {
        printf("sessnode %s\n", sn_version());
        exit(0);
    }
    if (verbose_flags)
        set[OPT_VERBOSE - OPT_CONFIG] = true;
    if (o->config)
        read_config(o, o->config, set);
    if (verbose_flags)
        o->verbose = verbose_flags > VERBOSE_MAX ? VERBOSE_MAX : verbose_flags;
    tidy_peers(o);
    check_overlap(o);
    if (o->dead_ms <= o->suspect_ms)
        usage_error("--dead-after %u must be more than --suspect-after %u", o->dead_ms,
                    o->suspect_ms);
    check_security(o);
    check_tier(o);
    if (!o->name[0])
        default_name(o);
}

void sd_opts_free(sd_opts_t *o)
{
    free(o->config);
    free(o->peers);
    o->config = NULL;
    o->peers = NULL;
    o->npeers = 0;
}
