/*
 * sessctl - the operator's tool: asks one sessnode node about the cluster.
 *
 *   sessctl [--node HOST:PORT] [--json] [--timeout MS] [--cert FILE --allow DIR]
 *           COMMAND [ARG]
 *   sessctl keygen NAME [--dir DIR] [--address HOST:PORT]
 *
 * --node is the node's cluster address (its --cluster); the request goes to
 * the ROUTER socket the node binds on the next port, as a `control` frame
 * of the replication protocol (docs/PROTOCOL.md), and the node answers with
 * one msgpack map, which is printed as a table or, with --json, as JSON.
 *
 * The answer comes from the network, so it is treated like any peer input:
 * the frame goes through sn_msg_decode, and the map is walked once with
 * every declared length and count checked against the bytes left before
 * msgpack-c unpacks it (msgpack-c allocates for declared counts up front).
 */
#define _GNU_SOURCE
#include <czmq.h>
#include <unistd.h>
#include <sys/stat.h>
#include <errno.h>
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mc_key.h"
#include "sessnode.h"
#include "sn_curve.h"
#include "sn_msg.h"
#include "sn_transport.h"

#define DEFAULT_NODE "127.0.0.1:7400"
#define DEFAULT_TIMEOUT_MS 2000

enum { EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: sessctl [--node HOST:PORT] [--json] [--timeout MS]\n"
            "               [--cert FILE --allow DIR] COMMAND [ARG]\n"
            "       sessctl keygen NAME [--dir DIR] [--address HOST:PORT]\n"
            "\n"
            "Asks a sessnode node about its cluster, or makes a node's certificate.\n"
            "\n"
            "Commands:\n"
            "  members          the node and its peers: name, address, state, last heard,\n"
            "                   sessions, replication lag\n"
            "  stats            the node's replication and store figures\n"
            "  session KEY      one session: attributes, flags, version vector, last\n"
            "                   access, expiry; KEY as a memcached client sent it\n"
            "  join HOST:PORT   make the node replicate with the node at that cluster address\n"
            "  leave            make the node leave the cluster (its daemon then exits)\n"
            "  keygen NAME      write a new CURVE certificate: DIR/NAME.cert (public: copy\n"
            "                   it into every member's allow-list directory) and\n"
            "                   DIR/NAME.cert_secret (secret: give it to that node only);\n"
            "                   with --address, the certificate names the node's cluster\n"
            "                   address, so that peers given that address find its key\n"
            "\n"
            "Options may come before or after the command.\n"
            "Options:\n"
            "  --node HOST:PORT the node's cluster address, as given to its --cluster\n"
            "                   (default " DEFAULT_NODE ", or $SESSCTL_NODE)\n"
            "  --json           print the answer as JSON, for scripts\n"
            "  --timeout MS     how long to wait for the answer (default %d)\n"
            "  --cert FILE      for a node whose bus is secured: a certificate whose key is\n"
            "                   on the node's allow-list (default $SESSCTL_CERT)\n"
            "  --allow DIR      ...and the directory of the members' public certificates:\n"
            "                   the node's key is the one whose certificate names its\n"
            "                   address, else --cert's own (default $SESSCTL_ALLOW)\n"
            "  --dir DIR        keygen: where to write (default .)\n"
            "  --address HOST:PORT keygen: the node's cluster address\n"
            "  -h, --help       this text\n"
            "  --version        the version\n"
            "\n"
            "Exit status: 0 done, 1 the node did not answer or refused (keygen: cannot\n"
            "write), 2 bad usage.\n",
            DEFAULT_TIMEOUT_MS);
}

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sessctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'sessctl --help'.\n", stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

/* ------------------------------------------------------------ the answer */

/* True if every length and count in p[0..n) fits in the bytes left and the
 * bytes are exactly one msgpack object. */
static bool plausible(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    size_t pending = 1;
    while (pending) {
        if (p >= end)
            return false;
        pending--;
        uint8_t b = *p++;
        size_t left = (size_t) (end - p), need = 0, children = 0;
        size_t width = 0;   /* bytes of a length or count field */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        } else if (b <= 0x8f) {
            children = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            need = b & 0x1f;
        } else {
            switch (b) {
            case 0xcc: case 0xd0: need = 1; break;
            case 0xcd: case 0xd1: need = 2; break;
            case 0xca: case 0xce: case 0xd2: need = 4; break;
            case 0xcb: case 0xcf: case 0xd3: need = 8; break;
            case 0xd4: need = 2; break;
            case 0xd5: need = 3; break;
            case 0xd6: need = 5; break;
            case 0xd7: need = 9; break;
            case 0xd8: need = 17; break;
            case 0xc4: case 0xd9: case 0xc7: width = 1; break;
            case 0xc5: case 0xda: case 0xc8: case 0xdc: case 0xde: width = 2; break;
            case 0xc6: case 0xdb: case 0xc9: case 0xdd: case 0xdf: width = 4; break;
            default: return false;  /* 0xc1 */
            }
            if (width) {
                if (left < width)
                    return false;
                uint64_t v = 0;
                for (size_t i = 0; i < width; i++)
                    v = v << 8 | p[i];
                p += width;
                left -= width;
                if (b == 0xdc || b == 0xdd)
                    children = v;
                else if (b == 0xde || b == 0xdf)
                    children = 2 * v;
                else
                    need = v + (b >= 0xc7 && b <= 0xc9 ? 1 : 0);  /* ext: a type byte */
            }
        }
        if (need > left || children > left)
            return false;
        p += need;
        pending += children;
    }
    return p == end;
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static uint64_t get_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = get(map, key);
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

static bool is_nil(const msgpack_object *o)
{
    return !o || o->type == MSGPACK_OBJECT_NIL;
}

/* A string or bin field as a NUL-terminated copy in buf, non-printable
 * bytes as '?'. */
static const char *get_str(const msgpack_object *map, const char *key, char *buf, size_t cap)
{
    const msgpack_object *o = get(map, key);
    buf[0] = 0;
    if (!o)
        return buf;
    const char *p;
    size_t n;
    if (o->type == MSGPACK_OBJECT_STR) {
        p = o->via.str.ptr;
        n = o->via.str.size;
    } else if (o->type == MSGPACK_OBJECT_BIN) {
        p = o->via.bin.ptr;
        n = o->via.bin.size;
    } else {
        return buf;
    }
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    buf[n] = 0;
    return buf;
}

static void json_string(const char *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);   /* a byte, read as Latin-1: values are bytes */
        else
            putchar(c);
    }
    putchar('"');
}

static void json(const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", stdout); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", stdout); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: printf("%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_string(o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: json_string(o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: fputs("null", stdout); break;
    case MSGPACK_OBJECT_ARRAY:
        putchar('[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                putchar(',');
            json(&o->via.array.ptr[i], depth + 1);
        }
        putchar(']');
        break;
    case MSGPACK_OBJECT_MAP:
        putchar('{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                putchar(',');
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR)
                json_string(k->via.str.ptr, k->via.str.size);
            else
                fputs("\"?\"", stdout);
            putchar(':');
            json(&o->via.map.ptr[i].val, depth + 1);
        }
        putchar('}');
        break;
    }
}

static void print_ago(const msgpack_object *o, char *buf, size_t cap)
{
    if (is_nil(o) || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        snprintf(buf, cap, "never");
    else if (o->via.u64 < 10000)
        snprintf(buf, cap, "%" PRIu64 "ms ago", o->via.u64);
    else
        snprintf(buf, cap, "%" PRIu64 "s ago", o->via.u64 / 1000);
}

static void print_members(const msgpack_object *root)
{
    const msgpack_object *self = get(root, "node");
    const msgpack_object *members = get(root, "members");
    char name[128], addr[300], state[16], ago[32];
    printf("%-20s %-22s %-8s %-12s %10s %8s\n", "NAME", "ADDRESS", "STATE", "LAST-HEARD",
           "SESSIONS", "LAG");
    printf("%-20s %-22s %-8s %-12s %10" PRIu64 " %8s\n", get_str(self, "name", name, sizeof name),
           get_str(self, "address", addr, sizeof addr), get_str(self, "state", state, sizeof state),
           "-", get_u64(self, "sessions"), "-");
    if (!members || members->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < members->via.array.size; i++) {
        const msgpack_object *m = &members->via.array.ptr[i];
        print_ago(get(m, "last_heard_ms"), ago, sizeof ago);
        get_str(m, "name", name, sizeof name);
        printf("%-20s %-22s %-8s %-12s %10" PRIu64 " %8" PRIu64 "\n", name[0] ? name : "?",
               get_str(m, "address", addr, sizeof addr), get_str(m, "state", state, sizeof state),
               ago, get_u64(m, "sessions"), get_u64(m, "lag"));
    }
}

static void print_scalar(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN) {
        const char *p = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
        uint32_t n = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
        printf("%.*s", (int) n, p);
    } else {
        json(o, 0);
    }
}

static void print_flat(const msgpack_object *root)
{
    if (root->type != MSGPACK_OBJECT_MAP)
        return;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        printf("%-20.*s ", (int) k->via.str.size, k->via.str.ptr);
        print_scalar(&root->via.map.ptr[i].val);
        putchar('\n');
    }
}

static void print_time_ms(uint64_t ms)
{
    time_t s = (time_t) (ms / 1000);
    struct tm tm;
    char buf[32];
    gmtime_r(&s, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    printf("%s.%03uZ", buf, (unsigned) (ms % 1000));
}

static void print_session(const msgpack_object *root)
{
    char buf[300];
    const msgpack_object *alive = get(root, "alive");
    bool is_alive = alive && alive->type == MSGPACK_OBJECT_BOOLEAN && alive->via.boolean;
    printf("id             %s\n", get_str(root, "id", buf, sizeof buf));
    printf("state          %s\n", is_alive ? "alive" : "destroyed or expired");
    printf("last access    ");
    print_time_ms(get_u64(root, "last_access_ms"));
    uint64_t mi = get_u64(root, "max_inactive");
    const msgpack_object *left = get(root, "expires_in_ms");
    printf("\nmax inactive   %" PRIu64 " s%s\n", mi, mi ? "" : " (never expires)");
    if (!is_nil(left))
        printf("expires in     %.1f s\n", (double) left->via.u64 / 1000.0);
    const char *vecs[] = {"version_vector", "destroy_vector"};
    for (int v = 0; v < 2; v++) {
        printf("%-14s ", v ? "destroy vector" : "version vector");
        json(get(root, vecs[v]) ? get(root, vecs[v]) : &(msgpack_object){0}, 0);
        putchar('\n');
    }
    const msgpack_object *attrs = get(root, "attributes");
    if (!attrs || attrs->type != MSGPACK_OBJECT_ARRAY)
        return;
    printf("attributes     %u\n", attrs->via.array.size);
    for (uint32_t i = 0; i < attrs->via.array.size; i++) {
        const msgpack_object *a = &attrs->via.array.ptr[i];
        char name[300], origin[32], preview[64];
        get_str(a, "name", name, sizeof name);
        get_str(a, "origin", origin, sizeof origin);
        const msgpack_object *removed = get(a, "removed");
        bool gone = removed && removed->type == MSGPACK_OBJECT_BOOLEAN && removed->via.boolean;
        printf("  %-20s flags %-10" PRIu64 " size %-8" PRIu64 " cas %-20" PRIu64 " origin %s",
               name[0] ? name : "(the memcached value)", get_u64(a, "flags"), get_u64(a, "size"),
               get_u64(a, "cas"), origin);
        if (gone)
            printf("  (removed)\n");
        else
            printf("  \"%s\"\n", get_str(a, "value", preview, sizeof preview));
    }
}

/* ------------------------------------------------------------ the request */

/* Writes NAME.cert and NAME.cert_secret in dir; never over existing files,
 * since a lost secret key would lock a node out of its cluster. */
static int keygen(const char *name, const char *dir, const char *address)
{
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char) *p) && !strchr("-_.", *p))
            usage_error("keygen: the name '%s' may hold letters, digits, '-', '_' and '.' only",
                        name);
    char path[4096], secret[4200];
    if (snprintf(path, sizeof path, "%s/%s.cert", dir, name) >= (int) sizeof path)
        usage_error("keygen: --dir is too long");
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (access(path, F_OK) == 0 || access(secret, F_OK) == 0) {
        fprintf(stderr, "sessctl: %s or %s exists already; not overwriting it\n", path,
                secret);
        return 1;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        fprintf(stderr, "sessctl: cannot make a key pair\n");
        return 1;
    }
    zcert_set_meta(cert, "name", "%s", name);
    if (address)
        zcert_set_meta(cert, SN_CURVE_META_ADDRESS, "%s", address);
    /* the secret file is created unreadable to others from the start */
    mode_t old = umask(077);
    int rc = zcert_save(cert, path);
    umask(old);
    if (rc == 0)
        rc = chmod(path, 0644);
    if (rc != 0) {
        fprintf(stderr, "sessctl: cannot write %s: %s\n", path, strerror(errno));
        zcert_destroy(&cert);
        return 1;
    }
    printf("public key %s\n%s (public: into every member's allow-list directory)\n"
           "%s (secret: this node's --cert reads it; keep it private)\n",
           zcert_public_txt(cert), path, secret);
    zcert_destroy(&cert);
    return 0;
}

static int ask(const char *node, const char *command, const char *arg, int timeout_ms,
               const char *cert, const char *allow, sn_msg_decoded_t *answer)
{
    char cluster[300], pub[300], router[300];
    snprintf(cluster, sizeof cluster, "%s%s", strstr(node, "://") ? "" : "tcp://", node);
    if (sn_transport_endpoints(cluster, pub, sizeof pub, router, sizeof router))
        usage_error("--node '%s': want HOST:PORT (the node's --cluster address)", node);
    zsys_set_logstream(NULL);
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    if (dealer && cert) {
        char err[4400], key[SN_CURVE_KEY_TXT];
        sn_curve_t *curve = sn_curve_new(cert, NULL, err, sizeof err);
        if (!curve) {
            fprintf(stderr, "sessctl: --cert: %s\n", err);
            zsock_destroy(&dealer);
            return 1;
        }
        /* no certificate naming the address: the node is taken to be the
         * one whose certificate this is, as when an operator uses a
         * node's own certificate on its host */
        if (!sn_curve_key_for(allow, cluster, key))
            snprintf(key, sizeof key, "%s", sn_curve_public_txt(curve));
        sn_curve_client(curve, dealer, key);
        sn_curve_destroy(&curve);
    }
    if (!dealer || zsock_connect(dealer, "%s", router) < 0) {
        fprintf(stderr, "sessctl: cannot connect to %s\n", router);
        zsock_destroy(&dealer);
        return 1;
    }
    zsock_set_linger(dealer, 0);
    sn_msg_t m = {.type = SN_MSG_CONTROL};
    m.u.control.command = (const uint8_t *) command;
    m.u.control.command_len = (uint32_t) strlen(command);
    m.u.control.arg = (const uint8_t *) (arg ? arg : "");
    m.u.control.arg_len = arg ? (uint32_t) strlen(arg) : 0;
    uint8_t *frame;
    size_t len;
    if (sn_msg_encode(&m, &frame, &len)) {
        fprintf(stderr, "sessctl: argument too long (at most 255 bytes)\n");
        zsock_destroy(&dealer);
        return EXIT_USAGE;
    }
    zframe_t *f = zframe_new(frame, len);
    free(frame);
    zframe_send(&f, dealer, 0);
    zpoller_t *poller = zpoller_new(dealer, NULL);
    void *ready = zpoller_wait(poller, timeout_ms);
    zpoller_destroy(&poller);
    if (!ready) {
        fprintf(stderr,
                "sessctl: no answer from %s within %d ms (is a sessnode running there? "
                "--node takes the node's --cluster address; requests go to port+1. "
                "A node with a secured bus answers only a --cert on its allow-list)\n",
                node, timeout_ms);
        zsock_destroy(&dealer);
        return 1;
    }
    zframe_t *reply = zframe_recv(dealer);
    zsock_destroy(&dealer);
    int rc = reply ? sn_msg_decode(zframe_data(reply), zframe_size(reply), answer) : SN_EPROTO;
    zframe_destroy(&reply);
    if (rc || answer->msg.type != SN_MSG_CONTROL_REP) {
        fprintf(stderr, "sessctl: %s sent an answer that is not a sessnode control reply\n",
                node);
        if (rc == 0)
            sn_msg_release(answer);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *node = getenv("SESSCTL_NODE") ? getenv("SESSCTL_NODE") : DEFAULT_NODE;
    bool as_json = false;
    int timeout_ms = DEFAULT_TIMEOUT_MS;
    const char *cert = getenv("SESSCTL_CERT"), *allow = getenv("SESSCTL_ALLOW");
    const char *dir = ".", *address = NULL;
    static const struct option opts[] = {
        {"node", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'},
        {"cert", required_argument, NULL, 'c'},
        {"allow", required_argument, NULL, 'a'},
        {"dir", required_argument, NULL, 'd'},
        {"address", required_argument, NULL, 'A'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': node = optarg; break;
        case 'j': as_json = true; break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == 0 || *end || v <= 0 || v > 3600000)
                usage_error("--timeout '%s': want milliseconds, 1..3600000", optarg);
            timeout_ms = (int) v;
            break;
        }
        case 'c': cert = optarg; break;
        case 'a': allow = optarg; break;
        case 'd': dir = optarg; break;
        case 'A': address = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("sessctl %s\n", sn_version()); return 0;
        case '?':
            if (optopt)
                usage_error("option -%c is unknown or lacks its value", optopt);
            usage_error("option '%s' is unknown or lacks its value", argv[optind - 1]);
            break;
        default: usage_error("bad option");
        }
    }
    if (optind >= argc)
        usage_error("no command (members, stats, session KEY, join HOST:PORT, leave, keygen NAME)");
    const char *cmd = argv[optind++];
    const char *arg = NULL;
    if (strcmp(cmd, "keygen") == 0) {
        if (optind >= argc)
            usage_error("keygen needs a NAME (the node's name: NAME.cert is written)");
        const char *name = argv[optind++];
        if (optind < argc)
            usage_error("unexpected argument '%s'", argv[optind]);
        if (address) {
            char full[300], pub[300], router[300];
            snprintf(full, sizeof full, "%s%s", strstr(address, "://") ? "" : "tcp://", address);
            if (sn_transport_endpoints(full, pub, sizeof pub, router, sizeof router))
                usage_error("--address '%s': want HOST:PORT (the node's --cluster)", address);
        }
        return keygen(name, dir, address);
    }
    if (!cert != !allow)
        usage_error("%s needs %s too (the node's key is found there by its address)",
                    cert ? "--cert" : "--allow", cert ? "--allow" : "--cert");
    if (address || strcmp(dir, ".") != 0)
        usage_error("--dir and --address are for keygen");
    bool wants_arg = strcmp(cmd, "session") == 0 || strcmp(cmd, "join") == 0;
    if (!wants_arg && strcmp(cmd, "members") && strcmp(cmd, "stats") && strcmp(cmd, "leave"))
        usage_error("unknown command '%s'", cmd);
    if (wants_arg) {
        if (optind >= argc)
            usage_error("%s needs an argument (%s)", cmd,
                        strcmp(cmd, "join") == 0 ? "HOST:PORT" : "a session id");
        arg = argv[optind++];
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);

    /* `session` takes the key a memcached client used: the daemon stores
     * it under mc_key_id's mapping (docs/MEMCACHED.md) */
    char idbuf[MC_KEY_MAX + 1];
    if (strcmp(cmd, "session") == 0) {
        const char *id;
        size_t n = mc_key_id(arg, strlen(arg), idbuf, &id);
        if (n == 0)
            usage_error("session: '%s' is longer than a key may be (%d bytes)", arg,
                        MC_KEY_MAX);
        if (id == idbuf) {
            idbuf[n] = '\0';
            arg = idbuf;
        }
    }
    sn_msg_decoded_t answer;
    int rc = ask(node, cmd, arg, timeout_ms, cert, allow, &answer);
    if (rc)
        return rc;
    const sn_msg_t *m = &answer.msg;
    if (m->u.control_rep.status) {
        fprintf(stderr, "sessctl: %s: %.*s\n", node, (int) m->u.control_rep.body_len,
                (const char *) m->u.control_rep.body);
        sn_msg_release(&answer);
        return 1;
    }
    if (!plausible(m->u.control_rep.body, m->u.control_rep.body_len)) {
        fprintf(stderr, "sessctl: %s: malformed answer\n", node);
        sn_msg_release(&answer);
        return 1;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *) m->u.control_rep.body, m->u.control_rep.body_len,
                            &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "sessctl: %s: malformed answer\n", node);
        rc = 1;
    } else if (as_json) {
        json(&u.data, 0);
        putchar('\n');
    } else if (strcmp(cmd, "members") == 0) {
        print_members(&u.data);
    } else if (strcmp(cmd, "session") == 0) {
        print_session(&u.data);
    } else if (strcmp(cmd, "join") == 0) {
        printf("%s now replicates with %s\n", node, arg);
    } else if (strcmp(cmd, "leave") == 0) {
        printf("%s left the cluster\n", node);
    } else {
        print_flat(&u.data);
    }
    msgpack_unpacked_destroy(&u);
    sn_msg_release(&answer);
    return rc;
}
