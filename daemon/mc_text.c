/*
 * mc_text.c - memcached's text protocol: the classic commands (get, set,
 * delete, incr, touch, flush_all, stats, ...) and the meta commands (mg,
 * ms, md, ma, mn), with the replies and error strings of memcached 1.6
 * (doc/protocol.txt), so that its clients and its conformance tools see no
 * difference.
 *
 * A request is parsed straight out of the connection's input buffer: the
 * line is found with evbuffer_search_eol and made contiguous with
 * evbuffer_pullup (usually a no-op, the line sits in one chunk), tokenized
 * in place as (pointer, length) pairs, and executed. Nothing is copied or
 * allocated per request on the read path: a hit is written into the output
 * buffer from inside the node's read callback, header and value in one
 * reserved extent. A storage command waits until its whole data block is
 * in the buffer, then runs on it in place; until then the connection only
 * remembers how many bytes it needs (`need`), so a value that trickles in
 * costs one length check per arrival, not a re-parse. A line still without
 * its newline remembers how far it was searched (`scanned`).
 *
 * Refusals follow memcached: a line that cannot be parsed is answered and
 * dropped; once a storage line's length is known, its data block is
 * discarded without being parsed (`swallow`) whatever the refusal, so a
 * value is never read as commands (memcached 1.6's newer behaviour). A line
 * over 2048 bytes closes the connection, whether or not its newline has
 * come, so the answer does not depend on how the input was split; only a
 * multi-key retrieval gets more room. Every refusal is counted:
 * protocol_errors, or store_too_large, store_no_memory,
 * write_concern_failures.
 *
 * noreply silences every reply of the command that carries it, errors
 * included, as memcached 1.6 does; the meta commands' q flag silences only
 * the nominal answers (EN for mg, HD otherwise), never an error.
 *
 * Where sessnode differs from memcached: a key is looked up under its
 * session id (mc_key_id); a TTL reported by the t flag is the inactivity
 * timeout, whole again after this very access; the meta flags that need
 * item state the node does not keep (E anywhere, mg h and R, md I and x)
 * are refused as invalid, and X and Z never appear; a CAS on an append, a
 * delete or an arithmetic is checked, then applied, not in one step (see
 * peek).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "mc_internal.h"

#define MC_LINE_MAX 2048              /* memcached's limit for a line without newline */
#define MC_GETLINE_MAX (32u << 10)    /* a multi-key retrieval line may be longer */
#define MC_TOKENS_MAX 24
#define MC_META_TOKENS_MAX 20         /* memcached: "options flags are too long" */
#define MC_OPAQUE_MAX 32              /* an O token, its letter included */
#define MC_META_HDR_MAX 1024          /* a meta reply line; see meta_flags */
#define MC_GET_REPLY_MAX (64u << 20)  /* the largest reply to one get */

#define BAD_FORMAT "CLIENT_ERROR bad command line format\r\n"
#define BAD_TOKEN "CLIENT_ERROR bad token in command line format\r\n"
#define BAD_EXPTIME "CLIENT_ERROR invalid exptime argument\r\n"
#define BAD_CHUNK "CLIENT_ERROR bad data chunk\r\n"
#define NON_NUMERIC "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
#define TOO_LARGE "SERVER_ERROR object too large for cache\r\n"

typedef struct {
    const char *p;
    size_t n;
} tok_t;

enum { R_DONE, R_WAIT, R_CLOSE };

typedef struct {
    mc_conn_t *c;
    mc_server_t *srv;
    sn_node_t *node;
    struct evbuffer *in, *out;
    const char *line;           /* the command line, without its end of line */
    size_t len;
    size_t linebytes;           /* the line with its end of line */
    size_t consume;             /* bytes of input the request used */
    tok_t tok[MC_TOKENS_MAX];
    size_t ntok;
    bool toomany;               /* more than MC_TOKENS_MAX tokens */
    bool noreply;
} req_t;

#define IS(t, lit) ((t).n == sizeof(lit) - 1 && memcmp((t).p, lit, sizeof(lit) - 1) == 0)

/* ------------------------------------------------------------ parsing */

/* The next space-separated token in [*p, end), as memcached splits: on
 * spaces only, runs of them counting as one. */
static bool next_token(const char **p, const char *end, tok_t *t)
{
    const char *s = *p;
    while (s < end && *s == ' ')
        s++;
    if (s == end) {
        *p = s;
        return false;
    }
    const char *e = memchr(s, ' ', (size_t) (end - s));
    if (!e)
        e = end;
    t->p = s;
    t->n = (size_t) (e - s);
    *p = e;
    return true;
}

static void tokenize(req_t *r)
{
    const char *p = r->line, *end = r->line + r->len;
    tok_t t;
    r->ntok = 0;
    r->toomany = false;
    while (next_token(&p, end, &t)) {
        if (r->ntok == MC_TOKENS_MAX) {
            r->toomany = true;
            break;
        }
        r->tok[r->ntok++] = t;
    }
}

/* Strict decimal numbers: digits only (a leading '-' for the signed
 * kind), no overflow; what memcached's safe_strto* accept, minus the
 * whitespace and '+' that strtoull would also let through. */
static bool parse_u64(tok_t t, uint64_t *out)
{
    if (t.n == 0 || t.n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < t.n; i++) {
        unsigned d = (unsigned char) t.p[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool parse_u32(tok_t t, uint32_t *out)
{
    uint64_t v;
    if (!parse_u64(t, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t) v;
    return true;
}

static bool parse_i64(tok_t t, int64_t *out)
{
    bool neg = t.n > 0 && t.p[0] == '-';
    tok_t digits = {t.p + neg, t.n - neg};
    uint64_t v;
    if (!parse_u64(digits, &v) || v > (uint64_t) INT64_MAX)
        return false;
    *out = neg ? -(int64_t) v : (int64_t) v;
    return true;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Padded standard base64 into out (cap bytes); the decoded length, 0 if
 * the input is not valid base64 or decodes to nothing. */
static size_t b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n == 0 || n % 4)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int v[4];
        size_t have = 4;
        for (size_t j = 0; j < 4; j++) {
            unsigned char ch = (unsigned char) in[i + j];
            if (ch == '=' && last && j >= 2) {
                if (j == 2 && in[i + 3] != '=')
                    return 0;
                have = j;
                break;
            }
            if ((v[j] = b64_value(ch)) < 0)
                return 0;
        }
        size_t bytes = have - 1;
        if (o + bytes > cap)
            return 0;
        uint32_t w = (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12;
        if (have > 2)
            w |= (uint32_t) v[2] << 6;
        if (have > 3)
            w |= (uint32_t) v[3];
        out[o++] = (unsigned char) (w >> 16);
        if (bytes > 1)
            out[o++] = (unsigned char) (w >> 8);
        if (bytes > 2)
            out[o++] = (unsigned char) w;
    }
    return o;
}

/* ------------------------------------------------------------ replies */

static void reply(req_t *r, const char *s, size_t n)
{
    if (!r->noreply)
        evbuffer_add(r->out, s, n);
}

#define REPLY(r, lit) reply((r), lit, sizeof(lit) - 1)

static int client_error(req_t *r, const char *msg)
{
    MC_COUNT(r->srv, protocol_errors, 1);
    reply(r, msg, strlen(msg));
    return R_DONE;
}

static int unknown_command(req_t *r)
{
    MC_COUNT(r->srv, protocol_errors, 1);
    REPLY(r, "ERROR\r\n");
    return R_DONE;
}

/* A storage line refused once its data length is known: the data block
 * that follows is discarded unread. */
static int refuse_data(req_t *r, uint64_t bytes, const char *msg)
{
    r->c->swallow = bytes + 2;
    reply(r, msg, strlen(msg));
    return R_DONE;
}

static bool concern_failed(int rc)
{
    return rc == SN_ETIMEDOUT || rc == SN_EREFUSED || rc == SN_EBUSY;
}

/* The reply to a write the node refused, or applied without the write
 * concern being met. */
static void write_error(req_t *r, int rc)
{
    mc_server_t *srv = r->srv;
    char buf[128];
    int n;
    if (concern_failed(rc)) {
        MC_COUNT(srv, write_concern_failures, 1);
        n = snprintf(buf, sizeof buf, "SERVER_ERROR write not confirmed by peers: %s\r\n",
                     sn_strerror(rc));
    } else if (rc == SN_EFULL) {
        MC_COUNT(srv, store_no_memory, 1);
        n = snprintf(buf, sizeof buf, "SERVER_ERROR out of memory storing object\r\n");
    } else if (rc == SN_ETOOBIG) {
        MC_COUNT(srv, store_too_large, 1);
        n = snprintf(buf, sizeof buf, TOO_LARGE);
    } else if (rc == SN_EBADID) {
        /* a key memcached would take but a session id cannot be: control
         * characters (a tab, say) */
        MC_COUNT(srv, protocol_errors, 1);
        n = snprintf(buf, sizeof buf, BAD_FORMAT);
    } else if (rc == SN_ENOMEM) {
        n = snprintf(buf, sizeof buf, "SERVER_ERROR out of memory\r\n");
    } else {
        n = snprintf(buf, sizeof buf, "SERVER_ERROR %s\r\n", sn_strerror(rc));
    }
    reply(r, buf, (size_t) n);
}

/* Makes the line and `bytes` of data after it contiguous, or asks to wait
 * for them. The pullup may move the line, so it is tokenized again. */
static int pull_data(req_t *r, uint64_t bytes, const char **data)
{
    size_t total = r->linebytes + (size_t) bytes + 2;
    if (evbuffer_get_length(r->in) < total) {
        r->c->need = total;
        return R_WAIT;
    }
    char *base = (char *) evbuffer_pullup(r->in, (ev_ssize_t) total);
    r->consume = total;
    if (!base) {
        reply(r, "SERVER_ERROR out of memory\r\n", 28);
        return R_CLOSE;
    }
    r->line = base;
    tokenize(r);
    *data = base + r->linebytes;
    return R_DONE;
}

static bool data_chunk_ok(const char *data, uint64_t bytes)
{
    return data[bytes] == '\r' && data[bytes + 1] == '\n';
}

/* Deletes a key whose new exptime is already past; memcached stores such
 * an item and never returns it. */
static int expire_now(req_t *r, const char *key, size_t klen)
{
    sn_write_t opts = mc_write_options(r->srv);
    int rc = sn_node_destroy_session(r->node, key, klen, &opts);
    return rc == SN_ENOTFOUND ? 0 : rc;
}

/* ------------------------------------------------------ get, gets, gat */

typedef struct {
    struct evbuffer *out;
    const char *key;
    size_t klen;
    bool cas;
} get_ctx_t;

/* Runs with the session locked: one reserve, one copy of the value. */
static void emit_value(const sn_item_t *it, void *arg)
{
    get_ctx_t *g = arg;
    size_t room = 6 + g->klen + 3 * 21 + 2 + it->value_len + 2;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(g->out, (ev_ssize_t) room, &v, 1) < 1)
        return;
    char *p = v.iov_base;
    memcpy(p, "VALUE ", 6);
    p += 6;
    memcpy(p, g->key, g->klen);
    p += g->klen;
    *p++ = ' ';
    p = put_u64(p, it->flags);
    *p++ = ' ';
    p = put_u64(p, it->value_len);
    if (g->cas) {
        *p++ = ' ';
        p = put_u64(p, it->cas);
    }
    *p++ = '\r';
    *p++ = '\n';
    if (it->value_len)
        memcpy(p, it->value, it->value_len);
    p += it->value_len;
    *p++ = '\r';
    *p++ = '\n';
    v.iov_len = (size_t) (p - (char *) v.iov_base);
    evbuffer_commit_space(g->out, &v, 1);
}

static int cmd_get(req_t *r, bool cas, bool touch)
{
    mc_server_t *srv = r->srv;
    if (r->ntok < 2)
        return unknown_command(r);
    int64_t ttl = -1;
    bool expired = false;
    size_t first = 1;
    if (touch) {
        int64_t exptime;
        if (!parse_i64(r->tok[1], &exptime))
            return client_error(r, BAD_EXPTIME);
        ttl = mc_exptime(srv, exptime, &expired);
        if (expired)
            ttl = -1;
        first = 2;
    }
    /* Keys are read from the line itself: a multi-get may hold more of them
     * than the token array. All are checked before any is answered, so a
     * bad one leaves no partial reply. */
    const char *keys = first < r->ntok ? r->tok[first].p : r->line + r->len;
    const char *end = r->line + r->len, *p = keys;
    tok_t k;
    uint64_t nkeys = 0;
    while (next_token(&p, end, &k)) {
        if (k.n > MC_KEY_MAX)
            return client_error(r, BAD_FORMAT);
        nkeys++;
    }
    /* A reply that could outgrow MC_GET_REPLY_MAX (many keys, large values;
     * a key may even be repeated) is built aside, so that it can be dropped
     * whole for an error; the common one goes straight to the output. */
    struct evbuffer *aside = NULL;
    if (nkeys * srv->s.item_size_max > MC_GET_REPLY_MAX && !(aside = evbuffer_new()))
        return client_error(r, "SERVER_ERROR out of memory writing get response\r\n");
    get_ctx_t g = {.out = aside ? aside : r->out, .cas = cas};
    uint64_t n = 0, hits = 0;
    char idbuf[MC_KEY_MAX];
    for (p = keys; next_token(&p, end, &k);) {
        n++;
        g.key = k.p;
        g.klen = k.n;
        const char *id;
        size_t idlen = mc_key_id(k.p, k.n, idbuf, &id);
        if (sn_node_item_get(r->node, id, idlen, NULL, 0, ttl, emit_value, &g) == 0) {
            hits++;
            if (expired)
                expire_now(r, id, idlen);
        }
        if (aside && evbuffer_get_length(aside) > MC_GET_REPLY_MAX) {
            evbuffer_free(aside);
            MC_COUNT(srv, cmd_get, n);
            return client_error(r, "SERVER_ERROR out of memory writing get response\r\n");
        }
    }
    if (aside) {
        evbuffer_add_buffer(r->out, aside);
        evbuffer_free(aside);
    }
    evbuffer_add(r->out, "END\r\n", 5);
    MC_COUNT(srv, cmd_get, n);
    /* the counters are shared by every thread: no write for a zero */
    if (touch) {
        MC_COUNT(srv, cmd_touch, n);
        if (hits)
            MC_COUNT(srv, touch_hits, hits);
        if (n > hits)
            MC_COUNT(srv, touch_misses, n - hits);
    } else {
        if (hits)
            MC_COUNT(srv, get_hits, hits);
        if (n > hits)
            MC_COUNT(srv, get_misses, n - hits);
    }
    return R_DONE;
}

/* ------------------------------------------------------------ storage */

static int cmd_store(req_t *r, sn_item_mode_t mode)
{
    mc_server_t *srv = r->srv;
    bool is_cas = mode == SN_ITEM_CAS;
    size_t want = is_cas ? 6 : 5;
    if (r->toomany || (r->ntok != want && r->ntok != want + 1))
        return unknown_command(r);
    if (r->ntok == want + 1 && IS(r->tok[want], "noreply"))
        r->noreply = true;
    int64_t bytes;
    if (!parse_i64(r->tok[4], &bytes) || bytes < 0 || bytes > INT32_MAX - 2)
        return client_error(r, BAD_FORMAT);
    uint32_t flags;
    int64_t exptime;
    uint64_t cas = 0;
    if (r->tok[1].n > MC_KEY_MAX || !parse_u32(r->tok[2], &flags) ||
        !parse_i64(r->tok[3], &exptime) || (is_cas && !parse_u64(r->tok[5], &cas))) {
        MC_COUNT(srv, protocol_errors, 1);
        return refuse_data(r, (uint64_t) bytes, BAD_FORMAT);
    }
    if ((uint64_t) bytes > srv->s.item_size_max) {
        MC_COUNT(srv, store_too_large, 1);
        return refuse_data(r, (uint64_t) bytes, TOO_LARGE);
    }
    const char *data;
    int w = pull_data(r, (uint64_t) bytes, &data);
    if (w != R_DONE)
        return w;
    if (!data_chunk_ok(data, (uint64_t) bytes))
        return client_error(r, BAD_CHUNK);
    MC_COUNT(srv, cmd_set, 1);

    char idbuf[MC_KEY_MAX];
    const char *key;
    size_t klen = mc_key_id(r->tok[1].p, r->tok[1].n, idbuf, &key);
    sn_write_t opts = mc_write_options(srv);
    bool expired = false;
    int64_t max_inactive = -1;   /* append and prepend keep the item's */
    if (mode != SN_ITEM_APPEND && mode != SN_ITEM_PREPEND)
        max_inactive = mc_exptime(srv, exptime, &expired);
    int rc;
    if (expired && mode == SN_ITEM_SET) {
        rc = expire_now(r, key, klen);
    } else {
        rc = sn_node_item_store(r->node, key, klen, NULL, 0, mode, data, (size_t) bytes, flags,
                                max_inactive, cas, NULL, &opts);
        if (expired && (rc == 0 || concern_failed(rc))) {
            int drc = expire_now(r, key, klen);
            if (rc == 0)
                rc = drc;
        }
    }
    switch (rc) {
    case 0:
        if (is_cas)
            MC_COUNT(srv, cas_hits, 1);
        REPLY(r, "STORED\r\n");
        break;
    case SN_EEXISTS:
        if (is_cas) {
            MC_COUNT(srv, cas_badval, 1);
            REPLY(r, "EXISTS\r\n");
        } else {
            REPLY(r, "NOT_STORED\r\n");
        }
        break;
    case SN_ENOTFOUND:
        if (is_cas) {
            MC_COUNT(srv, cas_misses, 1);
            REPLY(r, "NOT_FOUND\r\n");
        } else {
            REPLY(r, "NOT_STORED\r\n");
        }
        break;
    default:
        write_error(r, rc);
    }
    return R_DONE;
}

/* ------------------------------------------- delete, incr/decr, touch */

static int cmd_delete(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->toomany || r->ntok < 2 || r->ntok > 4)
        return unknown_command(r);
    if (r->ntok > 2) {
        /* `delete <key> 0` is an old form memcached still takes */
        bool zero = IS(r->tok[2], "0");
        r->noreply = IS(r->tok[r->ntok - 1], "noreply");
        bool valid = (r->ntok == 3 && (zero || r->noreply)) ||
                     (r->ntok == 4 && zero && r->noreply);
        if (!valid)
            return client_error(r, "CLIENT_ERROR bad command line format.  "
                                   "Usage: delete <key> [noreply]\r\n");
    }
    if (r->tok[1].n > MC_KEY_MAX)
        return client_error(r, BAD_FORMAT);
    sn_write_t opts = mc_write_options(srv);
    char idbuf[MC_KEY_MAX];
    const char *id;
    size_t idlen = mc_key_id(r->tok[1].p, r->tok[1].n, idbuf, &id);
    int rc = sn_node_destroy_session(r->node, id, idlen, &opts);
    if (rc == 0) {
        MC_COUNT(srv, delete_hits, 1);
        REPLY(r, "DELETED\r\n");
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        MC_COUNT(srv, delete_misses, 1);
        REPLY(r, "NOT_FOUND\r\n");
    } else {
        if (concern_failed(rc))
            MC_COUNT(srv, delete_hits, 1);
        write_error(r, rc);
    }
    return R_DONE;
}

static int cmd_arith(req_t *r, bool decr)
{
    mc_server_t *srv = r->srv;
    if (r->toomany || r->ntok < 3 || r->ntok > 4)
        return unknown_command(r);
    r->noreply = r->ntok == 4 && IS(r->tok[3], "noreply");
    if (r->tok[1].n > MC_KEY_MAX)
        return client_error(r, BAD_FORMAT);
    uint64_t delta, value = 0;
    if (!parse_u64(r->tok[2], &delta))
        return client_error(r, "CLIENT_ERROR invalid numeric delta argument\r\n");
    sn_write_t opts = mc_write_options(srv);
    char idbuf[MC_KEY_MAX];
    const char *id;
    size_t idlen = mc_key_id(r->tok[1].p, r->tok[1].n, idbuf, &id);
    int rc = sn_node_item_arith(r->node, id, idlen, NULL, 0, decr, delta, 0, 0, -1, &value, NULL,
                                &opts);
    if (rc == 0) {
        if (decr)
            MC_COUNT(srv, decr_hits, 1);
        else
            MC_COUNT(srv, incr_hits, 1);
        char buf[24];
        char *p = put_u64(buf, value);
        *p++ = '\r';
        *p++ = '\n';
        reply(r, buf, (size_t) (p - buf));
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        if (decr)
            MC_COUNT(srv, decr_misses, 1);
        else
            MC_COUNT(srv, incr_misses, 1);
        REPLY(r, "NOT_FOUND\r\n");
    } else if (rc == SN_ENOTNUM) {
        client_error(r, NON_NUMERIC);
    } else {
        write_error(r, rc);
    }
    return R_DONE;
}

static void item_seen(const sn_item_t *it, void *arg)
{
    (void) it;
    (void) arg;
}

static int cmd_touch(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->toomany || r->ntok < 3 || r->ntok > 4)
        return unknown_command(r);
    r->noreply = r->ntok == 4 && IS(r->tok[3], "noreply");
    if (r->tok[1].n > MC_KEY_MAX)
        return client_error(r, BAD_FORMAT);
    int64_t exptime;
    if (!parse_i64(r->tok[2], &exptime))
        return client_error(r, BAD_EXPTIME);
    MC_COUNT(srv, cmd_touch, 1);
    bool expired;
    int64_t ttl = mc_exptime(srv, exptime, &expired);
    char idbuf[MC_KEY_MAX];
    const char *key;
    size_t klen = mc_key_id(r->tok[1].p, r->tok[1].n, idbuf, &key);
    int rc = sn_node_item_get(r->node, key, klen, NULL, 0, expired ? -1 : ttl, item_seen, NULL);
    if (rc == 0 && expired)
        rc = expire_now(r, key, klen);
    if (rc == 0 || concern_failed(rc)) {
        MC_COUNT(srv, touch_hits, 1);
        if (rc == 0)
            REPLY(r, "TOUCHED\r\n");
        else
            write_error(r, rc);
    } else {
        MC_COUNT(srv, touch_misses, 1);
        REPLY(r, "NOT_FOUND\r\n");
    }
    return R_DONE;
}

/* ------------------------------------------------------ other commands */

static void stat_line(const char *key, const char *value, void *arg)
{
    evbuffer_add_printf(arg, "STAT %s %s\r\n", key, value);
}

static int cmd_stats(req_t *r)
{
    if (r->ntok == 1) {
        mc_stats_each(r->srv, stat_line, r->out);
    } else if (IS(r->tok[1], "settings")) {
        mc_stats_settings(r->srv, stat_line, r->out);
    } else if (IS(r->tok[1], "reset")) {
        mc_stats_reset(r->srv);
        REPLY(r, "RESET\r\n");
        return R_DONE;
    } else if (IS(r->tok[1], "sizes")) {
        REPLY(r, "STAT sizes_status disabled\r\n");
    } else if (!IS(r->tok[1], "items") && !IS(r->tok[1], "slabs") && !IS(r->tok[1], "conns")) {
        /* memcached's answer to a group it does not know; items, slabs and
         * conns have no meaning here and list nothing */
        return unknown_command(r);
    }
    REPLY(r, "END\r\n");
    return R_DONE;
}

static int cmd_flush_all(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->toomany || r->ntok > 3)
        return unknown_command(r);
    r->noreply = r->ntok > 1 && IS(r->tok[r->ntok - 1], "noreply");
    int64_t delay = 0;
    if (r->ntok == 3 || (r->ntok == 2 && !r->noreply)) {
        if (!parse_i64(r->tok[1], &delay))
            return client_error(r, BAD_EXPTIME);
    }
    /* as for exptimes, a delay beyond 30 days is a Unix time */
    if (delay > MC_REALTIME_MAXDELTA)
        delay -= (int64_t) time(NULL);
    MC_COUNT(srv, cmd_flush, 1);
    mc_flush(srv, delay);
    REPLY(r, "OK\r\n");
    return R_DONE;
}

static int cmd_verbosity(req_t *r)
{
    if (r->toomany || r->ntok < 2 || r->ntok > 3)
        return unknown_command(r);
    r->noreply = IS(r->tok[r->ntok - 1], "noreply");
    uint32_t level;
    if (!parse_u32(r->tok[1], &level))
        return client_error(r, BAD_FORMAT);
    atomic_store_explicit(&r->srv->verbosity, level > 2 ? 2 : (int) level, memory_order_relaxed);
    REPLY(r, "OK\r\n");
    return R_DONE;
}

static int cmd_version(req_t *r)
{
    evbuffer_add_printf(r->out, "VERSION %s\r\n", r->srv->version);
    return R_DONE;
}

/* ------------------------------------------------------- meta commands */

typedef struct {
    const char *key;            /* the session id of the key (mc_key_id) */
    size_t klen;
    tok_t key_tok;              /* the key as sent, echoed by k */
    size_t first;               /* first flag token */
    bool b, q, v;
    bool has_C, has_N, has_T, has_J, has_D;
    char mode;                  /* M's letter; 0 = none */
    uint32_t F;
    uint64_t C, J, D;
    int64_t N, T;
    unsigned char keybuf[MC_KEY_MAX];   /* a b key, decoded */
    char idbuf[MC_KEY_MAX];             /* see mc_key_id */
} meta_t;

/* Checks and reads the flags of a meta command, tokens first.. on. NULL,
 * or memcached's error line. */
static const char *meta_parse(req_t *r, size_t first, const char *allowed, meta_t *m)
{
    m->key = r->tok[1].p;
    m->klen = r->tok[1].n;
    m->key_tok = r->tok[1];
    m->first = first;
    m->b = m->q = m->v = false;
    m->has_C = m->has_N = m->has_T = m->has_J = m->has_D = false;
    m->mode = 0;
    m->F = 0;
    m->C = m->J = m->D = 0;
    m->N = m->T = 0;
    if (r->toomany || r->ntok > MC_META_TOKENS_MAX)
        return "CLIENT_ERROR options flags are too long\r\n";
    bool seen[128] = {false};
    for (size_t i = first; i < r->ntok; i++) {
        tok_t t = r->tok[i];
        unsigned char f = (unsigned char) t.p[0];
        if (f >= 127 || seen[f])
            return "CLIENT_ERROR duplicate flag\r\n";
        seen[f] = true;
        if (!strchr(allowed, f))
            return "CLIENT_ERROR invalid flag\r\n";
        tok_t arg = {t.p + 1, t.n - 1};
        switch (f) {
        case 'b':
            m->klen = b64_decode(r->tok[1].p, r->tok[1].n, m->keybuf, sizeof m->keybuf);
            if (m->klen == 0)
                return "CLIENT_ERROR error decoding key\r\n";
            m->key = (const char *) m->keybuf;
            m->b = true;
            break;
        case 'q':
            m->q = true;
            break;
        case 'v':
            m->v = true;
            break;
        case 'C':
            if (!parse_u64(arg, &m->C))
                return BAD_TOKEN;
            m->has_C = true;
            break;
        case 'N':
            if (!parse_i64(arg, &m->N))
                return BAD_TOKEN;
            m->has_N = true;
            break;
        case 'T':
            if (!parse_i64(arg, &m->T))
                return BAD_TOKEN;
            m->has_T = true;
            break;
        case 'F':
            if (!parse_u32(arg, &m->F))
                return BAD_FORMAT;
            break;
        case 'J':
            if (!parse_u64(arg, &m->J))
                return "CLIENT_ERROR invalid numeric initial value\r\n";
            m->has_J = true;
            break;
        case 'D':
            if (!parse_u64(arg, &m->D))
                return "CLIENT_ERROR invalid numeric delta value\r\n";
            m->has_D = true;
            break;
        case 'M':
            m->mode = arg.n ? arg.p[0] : '?';
            break;
        case 'O':
            if (t.n > MC_OPAQUE_MAX)
                return "CLIENT_ERROR opaque token too long\r\n";
            break;
        default:
            break;
        }
    }
    m->klen = mc_key_id(m->key, m->klen, m->idbuf, &m->key);
    return NULL;
}

/* What an item's return flags report. */
typedef struct {
    uint32_t flags;
    int64_t ttl;                /* seconds; -1 = never expires */
    uint64_t cas;
    uint64_t size;
    uint64_t idle;              /* seconds since the last access */
} meta_item_t;

/* Appends the return flags the request asked for, in its order, limited
 * to the letters in `which`. The bound: one k (a key of at most 250 bytes
 * and " b"), one O of at most 32 bytes, and at most 18 numbers of 22 bytes
 * each, well under MC_META_HDR_MAX with the status in front. */
static char *meta_flags(char *p, const req_t *r, const meta_t *m, const meta_item_t *it,
                        const char *which)
{
    for (size_t i = m->first; i < r->ntok; i++) {
        tok_t t = r->tok[i];
        char f = t.p[0];
        if (!strchr(which, f))
            continue;
        *p++ = ' ';
        switch (f) {
        case 'O':
            memcpy(p, t.p, t.n);
            p += t.n;
            break;
        case 'k':
            *p++ = 'k';
            memcpy(p, m->key_tok.p, m->key_tok.n);
            p += m->key_tok.n;
            if (m->b) {
                memcpy(p, " b", 2);
                p += 2;
            }
            break;
        case 'f':
            *p++ = 'f';
            p = put_u64(p, it->flags);
            break;
        case 't':
            *p++ = 't';
            if (it->ttl < 0) {
                memcpy(p, "-1", 2);
                p += 2;
            } else {
                p = put_u64(p, (uint64_t) it->ttl);
            }
            break;
        case 'c':
            *p++ = 'c';
            p = put_u64(p, it->cas);
            break;
        case 's':
            *p++ = 's';
            p = put_u64(p, it->size);
            break;
        case 'l':
            *p++ = 'l';
            p = put_u64(p, it->idle);
            break;
        default:
            p--;
            break;
        }
    }
    return p;
}

static bool has_flag(const req_t *r, const meta_t *m, char f)
{
    for (size_t i = m->first; i < r->ntok; i++)
        if (r->tok[i].p[0] == f)
            return true;
    return false;
}

static int meta_error(req_t *r, const char *msg)
{
    MC_COUNT(r->srv, protocol_errors, 1);
    evbuffer_add(r->out, msg, strlen(msg));
    return R_DONE;
}

/* A status line with the flags that every answer echoes (O, k). */
static void meta_status(req_t *r, const meta_t *m, const char *code)
{
    char hdr[MC_META_HDR_MAX];
    memcpy(hdr, code, 2);
    meta_item_t none = {0};
    char *p = meta_flags(hdr + 2, r, m, &none, "Ok");
    *p++ = '\r';
    *p++ = '\n';
    evbuffer_add(r->out, hdr, (size_t) (p - hdr));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static meta_item_t meta_item(const sn_item_t *it)
{
    uint64_t now = now_ms();
    meta_item_t mi = {
        .flags = it->flags,
        /* every access restarts an inactivity timeout, this one included */
        .ttl = it->max_inactive ? (int64_t) it->max_inactive : -1,
        .cas = it->cas,
        .size = it->value_len,
        .idle = now > it->last_access_ms ? (now - it->last_access_ms) / 1000 : 0,
    };
    return mi;
}

typedef struct {
    req_t *r;
    const meta_t *m;
    bool hit, won;
} mg_ctx_t;

static void mg_emit(const sn_item_t *it, void *arg)
{
    mg_ctx_t *g = arg;
    const meta_t *m = g->m;
    g->hit = true;
    bool value = m->v && !(m->has_C && m->C == it->cas);
    char hdr[MC_META_HDR_MAX];
    char *p = hdr;
    if (value) {
        memcpy(p, "VA ", 3);
        p = put_u64(p + 3, it->value_len);
    } else {
        memcpy(p, "HD", 2);
        p += 2;
    }
    meta_item_t mi = meta_item(it);
    p = meta_flags(p, g->r, m, &mi, "ftcksOl");
    if (g->won) {
        memcpy(p, " W", 2);
        p += 2;
    }
    *p++ = '\r';
    *p++ = '\n';
    size_t hl = (size_t) (p - hdr);
    size_t total = hl + (value ? it->value_len + 2 : 0);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(g->r->out, (ev_ssize_t) total, &v, 1) < 1)
        return;
    char *o = v.iov_base;
    memcpy(o, hdr, hl);
    o += hl;
    if (value) {
        if (it->value_len)
            memcpy(o, it->value, it->value_len);
        o += it->value_len;
        *o++ = '\r';
        *o++ = '\n';
    }
    v.iov_len = (size_t) (o - (char *) v.iov_base);
    evbuffer_commit_space(g->r->out, &v, 1);
}

/* The start mg, md and ma share: the key's length checked, the flags
 * parsed. NULL to go on, else the error line to answer. */
static const char *meta_begin(req_t *r, const char *allowed, meta_t *m)
{
    MC_COUNT(r->srv, cmd_meta, 1);
    if (r->tok[1].n > MC_KEY_MAX)
        return BAD_FORMAT;
    return meta_parse(r, 2, allowed, m);
}

static int cmd_mg(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->ntok < 2)
        return unknown_command(r);
    meta_t m;
    const char *err = meta_begin(r, "bcCfklOPLqstuvNT", &m);
    if (err)
        return meta_error(r, err);
    bool expired = false;
    int64_t touch = -1;
    if (m.has_T) {
        touch = mc_exptime(srv, m.T, &expired);
        if (expired)
            touch = -1;
    }
    mg_ctx_t g = {.r = r, .m = &m};
    int rc = sn_node_item_get(r->node, m.key, m.klen, NULL, 0, touch, mg_emit, &g);
    if (rc == SN_ENOTFOUND && m.has_N) {
        /* autovivify: an empty item, and the W flag to the one client that
         * created it, who is to fill it */
        bool vexp;
        int64_t ttl = mc_exptime(srv, m.N, &vexp);
        sn_write_t opts = mc_write_options(srv);
        int s = vexp ? SN_ENOTFOUND
                     : sn_node_item_store(r->node, m.key, m.klen, NULL, 0, SN_ITEM_ADD, "", 0, 0,
                                          ttl, 0, NULL, &opts);
        if (s == 0 || concern_failed(s))
            g.won = true;
        if (s == 0 || s == SN_EEXISTS || concern_failed(s))
            rc = sn_node_item_get(r->node, m.key, m.klen, NULL, 0, -1, mg_emit, &g);
    }
    if (g.hit && expired)
        expire_now(r, m.key, m.klen);
    if (m.has_T) {
        MC_COUNT(srv, cmd_touch, 1);
        if (g.hit)
            MC_COUNT(srv, touch_hits, 1);
        else
            MC_COUNT(srv, touch_misses, 1);
    } else {
        MC_COUNT(srv, cmd_get, 1);
        if (g.hit)
            MC_COUNT(srv, get_hits, 1);
        else
            MC_COUNT(srv, get_misses, 1);
    }
    if (!g.hit && !m.q)
        meta_status(r, &m, "EN");
    return R_DONE;
}

typedef struct {
    uint64_t cas;
    uint32_t max_inactive;
    size_t size;
} peek_t;

static void peek_item(const sn_item_t *it, void *arg)
{
    peek_t *pk = arg;
    pk->cas = it->cas;
    pk->max_inactive = it->max_inactive;
    pk->size = it->value_len;
}

/* A plain read of an item's CAS unique, TTL and size. For the flag
 * combinations the node has no atomic operation for (a CAS on append,
 * delete or arithmetic): like any CAS here, it is checked against this
 * node's copy, and a write landing between the check and the operation
 * wins over the check. */
static int peek(req_t *r, const meta_t *m, peek_t *pk)
{
    return sn_node_item_get(r->node, m->key, m->klen, NULL, 0, -1, peek_item, pk);
}

static int cmd_ms(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->ntok < 2)
        return unknown_command(r);
    if (r->ntok < 3) {
        MC_COUNT(srv, cmd_meta, 1);
        return meta_error(r, BAD_FORMAT);
    }
    int64_t bytes;
    if (!parse_i64(r->tok[2], &bytes) || bytes < 0 || bytes > INT32_MAX - 2) {
        MC_COUNT(srv, cmd_meta, 1);
        return meta_error(r, BAD_FORMAT);
    }
    meta_t m;
    const char *err = NULL;
    if (r->tok[1].n > MC_KEY_MAX)
        err = BAD_FORMAT;
    else
        err = meta_parse(r, 3, "bcCFIkOPLqsTMN", &m);
    sn_item_mode_t mode = SN_ITEM_SET;
    if (!err) {
        switch (m.mode) {
        case 0:
        case 'S':
            mode = SN_ITEM_SET;
            break;
        case 'E':
            mode = SN_ITEM_ADD;
            break;
        case 'A':
            mode = SN_ITEM_APPEND;
            break;
        case 'P':
            mode = SN_ITEM_PREPEND;
            break;
        case 'R':
            mode = SN_ITEM_REPLACE;
            break;
        default:
            err = "CLIENT_ERROR invalid mode for ms M token\r\n";
        }
    }
    if (err) {
        MC_COUNT(srv, cmd_meta, 1);
        MC_COUNT(srv, protocol_errors, 1);
        return refuse_data(r, (uint64_t) bytes, err);
    }
    if ((uint64_t) bytes > srv->s.item_size_max) {
        MC_COUNT(srv, cmd_meta, 1);
        MC_COUNT(srv, store_too_large, 1);
        return refuse_data(r, (uint64_t) bytes, TOO_LARGE);
    }
    const char *data;
    int w = pull_data(r, (uint64_t) bytes, &data);
    if (w != R_DONE)
        return w;
    MC_COUNT(srv, cmd_meta, 1);
    /* the line may have moved: read its flags again (they passed before) */
    meta_parse(r, 3, "bcCFIkOPLqsTMN", &m);
    if (!data_chunk_ok(data, (uint64_t) bytes))
        return meta_error(r, BAD_CHUNK);
    MC_COUNT(srv, cmd_set, 1);

    bool appending = mode == SN_ITEM_APPEND || mode == SN_ITEM_PREPEND;
    if (m.has_C && (mode == SN_ITEM_SET || mode == SN_ITEM_REPLACE))
        mode = SN_ITEM_CAS;
    bool expired = false;
    int64_t max_inactive = appending ? -1 : m.has_T ? mc_exptime(srv, m.T, &expired) : 0;
    sn_write_t opts = mc_write_options(srv);
    uint64_t cas = 0;
    int rc = 0;
    if (appending && m.has_C) {
        peek_t pk;
        rc = peek(r, &m, &pk);
        if (rc == 0 && pk.cas != m.C)
            rc = SN_EEXISTS;
        if (rc == SN_EBADID)
            rc = SN_ENOTFOUND;
    }
    if (rc == 0 && expired && mode == SN_ITEM_SET) {
        rc = expire_now(r, m.key, m.klen);
    } else if (rc == 0) {
        rc = sn_node_item_store(r->node, m.key, m.klen, NULL, 0, mode, data, (size_t) bytes, m.F,
                                max_inactive, m.C, &cas, &opts);
        if (appending && rc == SN_ENOTFOUND && m.has_N && !m.has_C) {
            /* autovivify on a miss: the data becomes the item */
            bool vexp;
            int64_t ttl = mc_exptime(srv, m.N, &vexp);
            if (!vexp)
                rc = sn_node_item_store(r->node, m.key, m.klen, NULL, 0, SN_ITEM_ADD, data,
                                        (size_t) bytes, m.F, ttl, 0, &cas, &opts);
            if (rc == SN_EEXISTS)
                rc = sn_node_item_store(r->node, m.key, m.klen, NULL, 0, mode, data,
                                        (size_t) bytes, m.F, -1, 0, &cas, &opts);
        }
        if (expired && (rc == 0 || concern_failed(rc))) {
            int drc = expire_now(r, m.key, m.klen);
            if (rc == 0)
                rc = drc;
        }
    }
    const char *code;
    if (rc == 0) {
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_hits, 1);
        code = "HD";
    } else if (rc == SN_EEXISTS) {
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_badval, 1);
        code = mode == SN_ITEM_ADD ? "NS" : "EX";
    } else if (rc == SN_ENOTFOUND) {
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_misses, 1);
        code = mode == SN_ITEM_CAS ? "NF" : "NS";
    } else {
        write_error(r, rc);
        return R_DONE;
    }
    if (rc == 0 && m.q)
        return R_DONE;
    meta_item_t mi = {.cas = rc == 0 ? cas : 0, .size = (uint64_t) bytes};
    if (rc == 0 && appending && has_flag(r, &m, 's')) {
        peek_t pk;
        if (peek(r, &m, &pk) == 0)
            mi.size = pk.size;
    }
    char hdr[MC_META_HDR_MAX];
    memcpy(hdr, code, 2);
    char *p = meta_flags(hdr + 2, r, &m, &mi, "Okcs");
    *p++ = '\r';
    *p++ = '\n';
    evbuffer_add(r->out, hdr, (size_t) (p - hdr));
    return R_DONE;
}

static int cmd_md(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->ntok < 2)
        return unknown_command(r);
    meta_t m;
    const char *err = meta_begin(r, "bCkOPLqT", &m);
    if (err)
        return meta_error(r, err);
    int rc = 0;
    if (m.has_C) {
        peek_t pk;
        rc = peek(r, &m, &pk);
        if (rc == 0 && pk.cas != m.C)
            rc = SN_EEXISTS;
    }
    if (rc == 0) {
        sn_write_t opts = mc_write_options(srv);
        rc = sn_node_destroy_session(r->node, m.key, m.klen, &opts);
    }
    if (rc == 0) {
        MC_COUNT(srv, delete_hits, 1);
        if (!m.q)
            meta_status(r, &m, "HD");
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        MC_COUNT(srv, delete_misses, 1);
        meta_status(r, &m, "NF");
    } else if (rc == SN_EEXISTS) {
        MC_COUNT(srv, delete_misses, 1);
        meta_status(r, &m, "EX");
    } else {
        write_error(r, rc);
    }
    return R_DONE;
}

static int cmd_ma(req_t *r)
{
    mc_server_t *srv = r->srv;
    if (r->ntok < 2)
        return unknown_command(r);
    meta_t m;
    /* memcached's ma has one message for every flag error */
    if (meta_begin(r, "bCNJDTMqOkvtcPL", &m))
        return meta_error(r, r->tok[1].n > MC_KEY_MAX
                                 ? BAD_FORMAT
                                 : "CLIENT_ERROR invalid or duplicate flag\r\n");
    bool decr;
    switch (m.mode) {
    case 0:
    case 'I':
    case '+':
        decr = false;
        break;
    case 'D':
    case '-':
        decr = true;
        break;
    default:
        return meta_error(r, "CLIENT_ERROR invalid mode for ma M token\r\n");
    }
    int rc = 0;
    if (m.has_C) {
        peek_t pk;
        rc = peek(r, &m, &pk);
        if (rc == 0 && pk.cas != m.C)
            rc = SN_EEXISTS;
        else if (rc == SN_ENOTFOUND && m.has_N)
            rc = 0;
    }
    bool nexp = false;
    int64_t nttl = m.has_N ? mc_exptime(srv, m.N, &nexp) : 0;
    uint64_t value = 0, cas = 0;
    if (rc == 0) {
        sn_write_t opts = mc_write_options(srv);
        rc = sn_node_item_arith(r->node, m.key, m.klen, NULL, 0, decr, m.has_D ? m.D : 1,
                                m.has_N && !nexp, m.J, nttl, &value, &cas, &opts);
    }
    if (rc == SN_ENOTFOUND || (rc == SN_EBADID && !m.has_N)) {
        if (decr)
            MC_COUNT(srv, decr_misses, 1);
        else
            MC_COUNT(srv, incr_misses, 1);
        meta_status(r, &m, "NF");
        return R_DONE;
    }
    if (rc == SN_EEXISTS) {
        meta_status(r, &m, "EX");
        return R_DONE;
    }
    if (rc == SN_ENOTNUM)
        return meta_error(r, NON_NUMERIC);
    if (rc != 0) {
        write_error(r, rc);
        return R_DONE;
    }
    if (decr)
        MC_COUNT(srv, decr_hits, 1);
    else
        MC_COUNT(srv, incr_hits, 1);
    meta_item_t mi = {.cas = cas, .ttl = -1};
    if (m.has_T) {
        bool texp;
        int64_t ttl = mc_exptime(srv, m.T, &texp);
        if (texp) {
            expire_now(r, m.key, m.klen);
        } else {
            sn_node_touch(r->node, m.key, m.klen, ttl);
            mi.ttl = ttl ? ttl : -1;
        }
    } else if (has_flag(r, &m, 't')) {
        peek_t pk;
        if (peek(r, &m, &pk) == 0)
            mi.ttl = pk.max_inactive ? (int64_t) pk.max_inactive : -1;
    }
    if (m.q)
        return R_DONE;
    char num[24];
    char *ne = put_u64(num, value);
    size_t nlen = (size_t) (ne - num);
    char hdr[MC_META_HDR_MAX];
    char *p = hdr;
    if (m.v) {
        memcpy(p, "VA ", 3);
        p = put_u64(p + 3, nlen);
    } else {
        memcpy(p, "HD", 2);
        p += 2;
    }
    p = meta_flags(p, r, &m, &mi, "ctOk");
    *p++ = '\r';
    *p++ = '\n';
    if (m.v) {
        memcpy(p, num, nlen);
        p += nlen;
        *p++ = '\r';
        *p++ = '\n';
    }
    evbuffer_add(r->out, hdr, (size_t) (p - hdr));
    return R_DONE;
}

/* ------------------------------------------------------------ dispatch */

static int dispatch(req_t *r)
{
    if (r->ntok == 0)
        return unknown_command(r);
    tok_t cmd = r->tok[0];
    const char *s = cmd.p;
    switch (cmd.n) {
    case 2:
        if (s[0] != 'm')
            break;
        switch (s[1]) {
        case 'g':
            return cmd_mg(r);
        case 's':
            return cmd_ms(r);
        case 'd':
            return cmd_md(r);
        case 'a':
            return cmd_ma(r);
        case 'n':
            MC_COUNT(r->srv, cmd_meta, 1);
            evbuffer_add(r->out, "MN\r\n", 4);
            return R_DONE;
        }
        break;
    case 3:
        if (IS(cmd, "get"))
            return cmd_get(r, false, false);
        if (IS(cmd, "set"))
            return cmd_store(r, SN_ITEM_SET);
        if (IS(cmd, "gat"))
            return cmd_get(r, false, true);
        if (IS(cmd, "add"))
            return cmd_store(r, SN_ITEM_ADD);
        if (IS(cmd, "cas"))
            return cmd_store(r, SN_ITEM_CAS);
        break;
    case 4:
        if (IS(cmd, "gets"))
            return cmd_get(r, true, false);
        if (IS(cmd, "incr"))
            return cmd_arith(r, false);
        if (IS(cmd, "decr"))
            return cmd_arith(r, true);
        if (IS(cmd, "gats"))
            return cmd_get(r, true, true);
        if (IS(cmd, "quit"))
            return R_CLOSE;
        break;
    case 5:
        if (IS(cmd, "touch"))
            return cmd_touch(r);
        if (IS(cmd, "stats"))
            return cmd_stats(r);
        break;
    case 6:
        if (IS(cmd, "delete"))
            return cmd_delete(r);
        if (IS(cmd, "append"))
            return cmd_store(r, SN_ITEM_APPEND);
        break;
    case 7:
        if (IS(cmd, "replace"))
            return cmd_store(r, SN_ITEM_REPLACE);
        if (IS(cmd, "prepend"))
            return cmd_store(r, SN_ITEM_PREPEND);
        if (IS(cmd, "version"))
            return cmd_version(r);
        break;
    case 9:
        if (IS(cmd, "flush_all"))
            return cmd_flush_all(r);
        if (IS(cmd, "verbosity"))
            return cmd_verbosity(r);
        break;
    }
    return unknown_command(r);
}

/* Whether the input starts with a retrieval command, whose line may be
 * longer than MC_LINE_MAX (many keys). */
static bool retrieval_line(struct evbuffer *in)
{
    char buf[16];
    ev_ssize_t n = evbuffer_copyout(in, buf, sizeof buf);
    if (n <= 0)
        return false;
    const char *p = buf, *end = buf + n;
    while (p < end && *p == ' ')
        p++;
    size_t left = (size_t) (end - p);
    return (left >= 4 && (memcmp(p, "get ", 4) == 0 || memcmp(p, "gat ", 4) == 0)) ||
           (left >= 5 && (memcmp(p, "gets ", 5) == 0 || memcmp(p, "gats ", 5) == 0));
}

static int line_too_long(mc_conn_t *c, struct evbuffer *in, struct evbuffer *out)
{
    MC_COUNT(c->srv, protocol_errors, 1);
    evbuffer_add(out, "CLIENT_ERROR line too long\r\n", 28);
    evbuffer_drain(in, evbuffer_get_length(in));
    return R_CLOSE;
}

/* Executes the request at the front of `in`, if it is whole. */
static int one_request(mc_conn_t *c, struct evbuffer *in, struct evbuffer *out, size_t avail)
{
    struct evbuffer_ptr from;
    size_t eol_len;
    if (c->scanned >= avail)
        c->scanned = 0;
    evbuffer_ptr_set(in, &from, c->scanned, EVBUFFER_PTR_SET);
    struct evbuffer_ptr eol = evbuffer_search_eol(in, &from, &eol_len, EVBUFFER_EOL_LF);
    if (eol.pos < 0) {
        if (avail > MC_LINE_MAX && (avail > MC_GETLINE_MAX || !retrieval_line(in)))
            return line_too_long(c, in, out);
        c->scanned = avail;
        c->need = avail + 1;
        return R_WAIT;
    }
    c->scanned = 0;
    size_t pos = (size_t) eol.pos;
    if (pos > MC_LINE_MAX && (pos > MC_GETLINE_MAX || !retrieval_line(in)))
        return line_too_long(c, in, out);

    req_t r;
    r.c = c;
    r.srv = c->srv;
    r.node = c->srv->s.node;
    r.in = in;
    r.out = out;
    r.linebytes = pos + 1;
    r.consume = r.linebytes;
    r.noreply = false;
    r.line = (const char *) evbuffer_pullup(in, (ev_ssize_t) r.linebytes);
    if (!r.line)
        return R_WAIT;
    r.len = pos > 0 && r.line[pos - 1] == '\r' ? pos - 1 : pos;
    tokenize(&r);
    int rc = dispatch(&r);
    if (rc != R_WAIT)
        evbuffer_drain(in, r.consume);
    return rc;
}

int mc_text_process(mc_conn_t *c, struct evbuffer *in, struct evbuffer *out)
{
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (c->swallow) {
            size_t n = avail < c->swallow ? avail : (size_t) c->swallow;
            evbuffer_drain(in, n);
            c->swallow -= n;
            if (c->swallow)
                return MC_OK;
            avail -= n;
        }
        if (avail == 0 || avail < c->need || evbuffer_get_length(out) > MC_OUT_HIGH)
            return MC_OK;
        c->need = 0;
        int rc = one_request(c, in, out, avail);
        if (rc == R_WAIT)
            return MC_OK;
        if (rc == R_CLOSE)
            return MC_CLOSE;
    }
}
