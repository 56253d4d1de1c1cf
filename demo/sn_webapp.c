/*
 * sn_webapp - a small web application that keeps its users' sessions in an
 * embedded libsessnode node: log in, count, log out, from any node.
 *
 *   sn-webapp --http HOST:PORT --cluster HOST:PORT [--join HOST:PORT[,...]]
 *             [--name NAME] [--cert FILE --allow DIR] [--tier HOST:PORT[,...]]
 *
 * --cert/--allow secure the bus with CurveZMQ and --tier backs sessions up
 * to memcached, as the daemon's flags of the same names do.
 *
 * Routes (JSON unless said):
 *   GET  /                 an HTML page: this node, the session, forms
 *   GET  /api/session      {"node", "sid", "user", "counter"}
 *   POST /api/login?user=U a new session for U (cookie SID), counter 0
 *   POST /api/incr         counter + 1 (401 without a session)
 *   POST /api/logout       destroys the session, on every node
 *   GET  /healthz          "ok", for the load balancer's checks
 *   GET  /api/members      this node and its peers: state, last heard, sessions, lag
 *   GET  /status           the cluster status page (refreshes itself from the above)
 *
 * A browser's form post (Accept: text/html) is answered with a redirect
 * to the page instead of the JSON.
 *
 * The session id is 128 random bits in hex; the session holds two
 * attributes, "user" and "counter", and expires after 30 idle minutes. Only
 * the public sessnode.h is used: this is what an application embedding the
 * library looks like.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stddef.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "sessnode.h"

#define SESSION_IDLE_S 1800
#define SID_LEN 32

typedef struct {
    sn_node_t *node;
    char name[64];
} app_t;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void) sig;
    stop = 1;
}

static void log_line(int level, const char *msg, void *arg)
{
    (void) arg;
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    fprintf(stderr, "%s %s\n", names[level & 3], msg);
}

/* The attribute as a C string ("" when absent); false without a session. */
static bool attr(app_t *a, const char *sid, const char *name, char *out, size_t cap)
{
    size_t len = 0;
    uint32_t flags;
    out[0] = 0;
    int rc = sn_node_get(a->node, sid, strlen(sid), name, strlen(name), out, cap - 1, &len,
                         &flags);
    if (rc == 0) {
        out[len] = 0;
        return true;
    }
    return rc == SN_ENOTFOUND && sn_node_exists(a->node, sid, strlen(sid)) == 1;
}

static bool valid_sid(const char *sid)
{
    if (!sid || strlen(sid) != SID_LEN)
        return false;
    for (const char *p = sid; *p; p++)
        if (!strchr("0123456789abcdef", *p))
            return false;
    return true;
}

/* JSON-safe copy: the user name comes from a request */
static void json_str(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\' || c < 0x20 || c == '<' || c == '>' || c == '&')
            n += (size_t) snprintf(out + n, cap - n, "\\u%04x", c);
        else
            out[n++] = (char) c;
    }
    out[n] = 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, const char *cookie)
{
    /* a form posted from the page goes back to the page (303), not to JSON */
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    bool back = status == MHD_HTTP_OK && strcmp(type, "application/json") == 0 && accept &&
                strstr(accept, "text/html");
    if (back) {
        status = MHD_HTTP_SEE_OTHER;
        body = "";
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *) body,
                                                             MHD_RESPMEM_MUST_COPY);
    if (back)
        MHD_add_response_header(r, "Location", "/");
    else
        MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (cookie)
        MHD_add_response_header(r, "Set-Cookie", cookie);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The session's state as JSON (sid NULL or gone: nulls). */
static void state_json(app_t *a, const char *sid, char *out, size_t cap)
{
    char user[256], counter[32], safe_user[1600];
    bool alive = valid_sid(sid) && attr(a, sid, "user", user, sizeof user) &&
                 attr(a, sid, "counter", counter, sizeof counter);
    if (!alive) {
        snprintf(out, cap, "{\"node\":\"%s\",\"sid\":%s%s%s,\"user\":null,\"counter\":null}",
                 a->name, valid_sid(sid) ? "\"" : "", valid_sid(sid) ? sid : "null",
                 valid_sid(sid) ? "\"" : "");
        return;
    }
    json_str(safe_user, sizeof safe_user, user);
    snprintf(out, cap, "{\"node\":\"%s\",\"sid\":\"%s\",\"user\":\"%s\",\"counter\":%ld}",
             a->name, sid, safe_user, strtol(counter, NULL, 10));
}

/* This node and its peers as JSON: name, address, state, how long ago
 * each was last heard, the sessions each holds and the replication lag. */
static char *members_json(app_t *a)
{
    static const char *states[] = {"alive", "suspect", "dead", "left"};
    sn_member_t m[64];
    size_t n = 0;
    sn_node_members(a->node, m, 64, &n);
    if (n > 64)
        n = 64;
    sn_node_stats_t st;
    sn_node_stats(a->node, &st);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
    size_t cap = 256 + n * 700;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    char name[400];
    json_str(name, sizeof name, a->name);
    size_t len = (size_t) snprintf(out, cap,
                                   "{\"node\":{\"name\":\"%s\",\"state\":\"self\","
                                   "\"sessions\":%llu},\"members\":[",
                                   name, (unsigned long long) st.sessions);
    for (size_t i = 0; i < n; i++) {
        char peer[400], addr[1600];
        json_str(peer, sizeof peer, m[i].name);
        json_str(addr, sizeof addr, m[i].address);
        char heard[32] = "null";
        if (m[i].last_heard_ms)
            snprintf(heard, sizeof heard, "%llu",
                     (unsigned long long) (now > m[i].last_heard_ms ? now - m[i].last_heard_ms : 0));
        len += (size_t) snprintf(out + len, cap - len,
                                 "%s{\"name\":\"%s\",\"address\":\"%s\",\"state\":\"%s\","
                                 "\"last_heard_ms_ago\":%s,\"sessions\":%llu,\"lag\":%llu}",
                                 i ? "," : "", peer, addr, states[m[i].state & 3], heard,
                                 (unsigned long long) m[i].sessions,
                                 (unsigned long long) m[i].lag);
    }
    snprintf(out + len, cap - len, "]}");
    return out;
}

/* The cluster status page: the member table, refreshed every second from
 * /api/members by the page itself. */
static const char STATUS_PAGE[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>sessnode cluster</title>"
    "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}"
    ".alive,.self{color:#070}.suspect{color:#a60}.dead,.left{color:#a00}</style></head>"
    "<body><h1>Cluster seen from <span id=\"node\">?</span></h1>"
    "<table><thead><tr><th>name</th><th>address</th><th>state</th><th>last heard</th>"
    "<th>sessions</th><th>lag</th></tr></thead><tbody id=\"members\"></tbody></table>"
    "<p id=\"updated\">loading</p><script>\n"
    "function cell(tr, text, cls) { const td = document.createElement('td');\n"
    "  td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }\n"
    "async function refresh() {\n"
    "  try {\n"
    "    const doc = await (await fetch('/api/members', {cache: 'no-store'})).json();\n"
    "    document.getElementById('node').textContent = doc.node.name;\n"
    "    const body = document.getElementById('members'); body.textContent = '';\n"
    "    const rows = [Object.assign({address: '-', last_heard_ms_ago: null, lag: 0}, doc.node)]\n"
    "      .concat(doc.members);\n"
    "    for (const m of rows) { const tr = document.createElement('tr');\n"
    "      tr.dataset.name = m.name; tr.dataset.state = m.state;\n"
    "      cell(tr, m.name); cell(tr, m.address); cell(tr, m.state, m.state);\n"
    "      cell(tr, m.last_heard_ms_ago === null ? '-' : m.last_heard_ms_ago + ' ms ago');\n"
    "      cell(tr, m.sessions); cell(tr, m.lag); body.appendChild(tr); }\n"
    "    document.getElementById('updated').textContent = 'updated ' + new Date().toISOString();\n"
    "  } catch (e) { document.getElementById('updated').textContent = 'no answer: ' + e; }\n"
    "}\n"
    "refresh(); setInterval(refresh, 1000);\n"
    "</script></body></html>";

static int put_attr(app_t *a, const char *sid, const char *name, const char *value)
{
    return sn_node_put(a->node, sid, strlen(sid), name, strlen(name), value, strlen(value),
                       NULL);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req)
{
    (void) version;
    (void) upload;
    app_t *a = cls;
    static int marker;
    if (!*req) {    /* headers only so far */
        *req = &marker;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;   /* bodies are not used */
        return MHD_YES;
    }
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    const char *sid = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "SID");
    char body[4096];
    if (get && strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, "text/plain", "ok\n", NULL);
    if (get && strcmp(url, "/api/session") == 0) {
        state_json(a, sid, body, sizeof body);
        return reply(c, MHD_HTTP_OK, "application/json", body, NULL);
    }
    if (post && strcmp(url, "/api/login") == 0) {
        const char *user = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "user");
        if (!user || !*user || strlen(user) > 200)
            return reply(c, MHD_HTTP_BAD_REQUEST, "application/json",
                         "{\"error\":\"user: 1 to 200 bytes\"}", NULL);
        unsigned char raw[SID_LEN / 2];
        char fresh[SID_LEN + 1], cookie[128];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t) sizeof raw)
            return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                         "{\"error\":\"no randomness\"}", NULL);
        for (size_t i = 0; i < sizeof raw; i++)
            sprintf(fresh + 2 * i, "%02x", raw[i]);
        int rc = sn_node_create(a->node, fresh, SID_LEN, SESSION_IDLE_S);
        if (rc == 0)
            rc = put_attr(a, fresh, "user", user);
        if (rc == 0)
            rc = put_attr(a, fresh, "counter", "0");
        if (rc) {
            snprintf(body, sizeof body, "{\"error\":\"%s\"}", sn_strerror(rc));
            return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", body, NULL);
        }
        snprintf(cookie, sizeof cookie, "SID=%s; Path=/; HttpOnly; SameSite=Lax", fresh);
        state_json(a, fresh, body, sizeof body);
        return reply(c, MHD_HTTP_OK, "application/json", body, cookie);
    }
    if (post && strcmp(url, "/api/incr") == 0) {
        char counter[32];
        if (!valid_sid(sid) || !attr(a, sid, "counter", counter, sizeof counter)) {
            state_json(a, sid, body, sizeof body);
            return reply(c, MHD_HTTP_UNAUTHORIZED, "application/json", body, NULL);
        }
        char next[32];
        snprintf(next, sizeof next, "%ld", strtol(counter, NULL, 10) + 1);
        int rc = put_attr(a, sid, "counter", next);
        if (rc) {
            snprintf(body, sizeof body, "{\"error\":\"%s\"}", sn_strerror(rc));
            return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", body, NULL);
        }
        state_json(a, sid, body, sizeof body);
        return reply(c, MHD_HTTP_OK, "application/json", body, NULL);
    }
    if (post && strcmp(url, "/api/logout") == 0) {
        if (valid_sid(sid))
            sn_node_destroy_session(a->node, sid, SID_LEN, NULL);
        snprintf(body, sizeof body, "{\"node\":\"%s\",\"sid\":%s%s%s,\"destroyed\":true}",
                 a->name, valid_sid(sid) ? "\"" : "", valid_sid(sid) ? sid : "null",
                 valid_sid(sid) ? "\"" : "");
        return reply(c, MHD_HTTP_OK, "application/json", body,
                     "SID=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }
    if (get && strcmp(url, "/api/members") == 0) {
        char *json = members_json(a);
        if (!json)
            return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                         "{\"error\":\"out of memory\"}", NULL);
        enum MHD_Result ret = reply(c, MHD_HTTP_OK, "application/json", json, NULL);
        free(json);
        return ret;
    }
    if (get && strcmp(url, "/status") == 0)
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", STATUS_PAGE, NULL);
    if (get && strcmp(url, "/") == 0) {
        char state[2048];
        state_json(a, sid, state, sizeof state);
        snprintf(body, sizeof body,
                 "<!doctype html><html><head><meta charset=\"utf-8\"><title>sessnode demo"
                 "</title></head><body><h1>Served by <span id=\"node\">%s</span></h1>"
                 "<p>Session: <code id=\"state\">%s</code></p>"
                 "<form method=\"post\" action=\"/api/login\"><input name=\"user\" "
                 "placeholder=\"user\"><button formaction=\"/api/login\" "
                 "onclick=\"this.form.action='/api/login?user='+"
                 "encodeURIComponent(this.form.user.value)\">Log in</button></form>"
                 "<form method=\"post\" action=\"/api/incr\"><button>Count</button></form>"
                 "<form method=\"post\" action=\"/api/logout\"><button>Log out</button>"
                 "</form></body></html>",
                 a->name, state);
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", body, NULL);
    }
    return reply(c, get || post ? MHD_HTTP_NOT_FOUND : MHD_HTTP_METHOD_NOT_ALLOWED,
                 "application/json", "{\"error\":\"no such route\"}", NULL);
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: sn-webapp --http HOST:PORT --cluster HOST:PORT "
                 "[--join HOST:PORT[,...]] [--name NAME] [--cert FILE --allow DIR] "
                 "[--tier HOST:PORT[,...]]\n");
}

int main(int argc, char **argv)
{
    const char *http = NULL, *cluster = NULL, *join = NULL, *name = NULL;
    const char *cert = NULL, *allow = NULL, *tier = NULL;
    static const struct option opts[] = {
        {"http", required_argument, NULL, 'H'},   {"cluster", required_argument, NULL, 'c'},
        {"join", required_argument, NULL, 'j'},   {"name", required_argument, NULL, 'n'},
        {"cert", required_argument, NULL, 'C'},   {"allow", required_argument, NULL, 'A'},
        {"tier", required_argument, NULL, 'T'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'H': http = optarg; break;
        case 'c': cluster = optarg; break;
        case 'j': join = optarg; break;
        case 'n': name = optarg; break;
        case 'C': cert = optarg; break;
        case 'A': allow = optarg; break;
        case 'T': tier = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *colon = http ? strrchr(http, ':') : NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (!cluster || !colon || optind < argc ||
        inet_pton(AF_INET, strndupa(http, (size_t) (colon - http)), &sa.sin_addr) != 1 ||
        atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
        fprintf(stderr, "sn-webapp: --http IPv4:PORT and --cluster HOST:PORT are needed\n");
        usage(stderr);
        return 2;
    }
    sa.sin_port = htons((uint16_t) atoi(colon + 1));

    app_t app;
    snprintf(app.name, sizeof app.name, "%s", name ? name : cluster);
    /* ZeroMQ binds addresses, not names: a host name (a container's, say)
     * is resolved here to its IPv4 address, which peers then see */
    char cluster_url[300], host[256];
    const char *ccolon = strrchr(cluster, ':');
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (!ccolon || ccolon - cluster >= (ptrdiff_t) sizeof host) {
        fprintf(stderr, "sn-webapp: --cluster HOST:PORT\n");
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int) (ccolon - cluster), cluster);
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        fprintf(stderr, "sn-webapp: cannot resolve %s\n", host);
        return 2;
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *) res->ai_addr)->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    snprintf(cluster_url, sizeof cluster_url, "tcp://%s%s", ip, ccolon);
    char *peer_urls[16] = {0};
    const char *peers[17] = {0};
    size_t np = 0;
    for (char *list = join ? strdupa(join) : NULL, *tok = list ? strtok(list, ",") : NULL;
         tok && np < 16; tok = strtok(NULL, ",")) {
        if (asprintf(&peer_urls[np], "tcp://%s", tok) < 0)
            return 1;
        peers[np] = peer_urls[np];
        np++;
    }
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.name = app.name;
    cfg.cluster = cluster_url;
    cfg.peers = peers;
    cfg.join = np > 0;
    cfg.log = log_line;
    cfg.curve_cert = cert;      /* both or neither: sn_node_new refuses one alone */
    cfg.curve_allow = allow;
    cfg.tier = tier;
    app.node = sn_node_new(&cfg);
    int rc = app.node ? sn_node_start(app.node) : SN_EINVAL;
    if (rc == 0)
        rc = sn_node_wait_ready(app.node, 30000);
    if (rc) {
        fprintf(stderr, "sn-webapp: cannot start the node on %s: %s\n", cluster, sn_strerror(rc));
        sn_node_destroy(&app.node);
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, handle,
        &app, MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "sn-webapp: cannot listen on %s: %s\n", http, strerror(errno));
        sn_node_destroy(&app.node);
        return 1;
    }
    fprintf(stderr, "INFO %s: http://%s/ (cluster %s)\n", app.name, http, cluster);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop)
        pause();
    MHD_stop_daemon(d);
    sn_node_leave(app.node, 1000);
    sn_node_destroy(&app.node);
    for (size_t i = 0; i < np; i++)
        free(peer_urls[i]);
    return 0;
}
