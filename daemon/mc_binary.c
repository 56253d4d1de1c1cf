/*
 * mc_binary.c - memcached's binary protocol, every opcode memcached 1.6
 * implements (protocol_binary.h), quiet variants included, with its status
 * codes and error texts, so that binary clients (PHP's memcached session
 * handler among them) see no difference.
 *
 * A request is a 24-byte header and a body of extras, key and value. The
 * header is read with evbuffer_copyout and checked before anything else:
 * the body length it announces is only waited for once the opcode's shape
 * (which extras, whether a key, whether a value) and the value's size have
 * been checked, so a client cannot make the engine buffer more than one
 * legitimate request. The whole request is then made contiguous
 * (evbuffer_pullup, a no-op when it sits in one chunk) and runs in place;
 * a hit is written into the output from inside the node's read callback,
 * header and value in one reserved extent.
 *
 * Refusals follow memcached: a header that breaks the protocol (wrong
 * extras or key for its opcode, a key over 250 bytes, a data type other
 * than raw bytes) is answered EINVAL and the connection closes; a byte
 * other than the request magic where a header must start closes it
 * without a reply. An unknown opcode (SASL included: the daemon has no
 * authentication) is answered and its body discarded, as is a value over
 * the item size limit (E2BIG), whose bytes are dropped as they arrive
 * (`bin_swallow`) rather than waited for. Quiet variants stay silent on
 * success (and the quiet reads on a miss), never on an error. Every
 * refusal is counted, as in the text protocol.
 *
 * Cluster meaning is the text protocol's (docs/MEMCACHED.md): a CAS, on
 * any command, is checked against this node's copy.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "mc_internal.h"

#define HDR_LEN 24
#define REQ_MAGIC 0x80
#define RES_MAGIC 0x81

enum {
    OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_REPLACE = 0x03, OP_DELETE = 0x04,
    OP_INCREMENT = 0x05, OP_DECREMENT = 0x06, OP_QUIT = 0x07, OP_FLUSH = 0x08,
    OP_GETQ = 0x09, OP_NOOP = 0x0a, OP_VERSION = 0x0b, OP_GETK = 0x0c, OP_GETKQ = 0x0d,
    OP_APPEND = 0x0e, OP_PREPEND = 0x0f, OP_STAT = 0x10, OP_SETQ = 0x11, OP_ADDQ = 0x12,
    OP_REPLACEQ = 0x13, OP_DELETEQ = 0x14, OP_INCREMENTQ = 0x15, OP_DECREMENTQ = 0x16,
    OP_QUITQ = 0x17, OP_FLUSHQ = 0x18, OP_APPENDQ = 0x19, OP_PREPENDQ = 0x1a,
    OP_VERBOSITY = 0x1b, OP_TOUCH = 0x1c, OP_GAT = 0x1d, OP_GATQ = 0x1e,
    OP_GATK = 0x23, OP_GATKQ = 0x24,
};

enum {
    ST_OK = 0x00, ST_KEY_ENOENT = 0x01, ST_KEY_EEXISTS = 0x02, ST_E2BIG = 0x03,
    ST_EINVAL = 0x04, ST_NOT_STORED = 0x05, ST_DELTA_BADVAL = 0x06,
    ST_UNKNOWN_COMMAND = 0x81, ST_ENOMEM = 0x82, ST_EINTERNAL = 0x84, ST_ETMPFAIL = 0x86,
};

/* How an opcode's body must look. */
enum { KEY_NONE, KEY_REQUIRED, KEY_OPTIONAL };

typedef enum {
    K_GET, K_STORE, K_CONCAT, K_DELETE, K_ARITH, K_QUIT, K_FLUSH, K_NOOP, K_VERSION,
    K_STAT, K_VERBOSITY, K_TOUCH, K_GAT,
} kind_t;

typedef struct {
    bool known;
    kind_t kind;
    bool quiet;
    bool with_key;              /* GETK, GATK: the reply echoes the key */
    uint8_t ext_a, ext_b;       /* the extras lengths allowed (often one) */
    uint8_t key;                /* KEY_* */
    bool value;                 /* a value may follow */
} shape_t;

#define SHAPE(k, q, wk, ea, eb, key, v) {true, (k), (q), (wk), (ea), (eb), (key), (v)}

static const shape_t shapes[256] = {
    [OP_GET] = SHAPE(K_GET, false, false, 0, 0, KEY_REQUIRED, false),
    [OP_GETQ] = SHAPE(K_GET, true, false, 0, 0, KEY_REQUIRED, false),
    [OP_GETK] = SHAPE(K_GET, false, true, 0, 0, KEY_REQUIRED, false),
    [OP_GETKQ] = SHAPE(K_GET, true, true, 0, 0, KEY_REQUIRED, false),
    [OP_SET] = SHAPE(K_STORE, false, false, 8, 8, KEY_REQUIRED, true),
    [OP_SETQ] = SHAPE(K_STORE, true, false, 8, 8, KEY_REQUIRED, true),
    [OP_ADD] = SHAPE(K_STORE, false, false, 8, 8, KEY_REQUIRED, true),
    [OP_ADDQ] = SHAPE(K_STORE, true, false, 8, 8, KEY_REQUIRED, true),
    [OP_REPLACE] = SHAPE(K_STORE, false, false, 8, 8, KEY_REQUIRED, true),
    [OP_REPLACEQ] = SHAPE(K_STORE, true, false, 8, 8, KEY_REQUIRED, true),
    [OP_APPEND] = SHAPE(K_CONCAT, false, false, 0, 0, KEY_REQUIRED, true),
    [OP_APPENDQ] = SHAPE(K_CONCAT, true, false, 0, 0, KEY_REQUIRED, true),
    [OP_PREPEND] = SHAPE(K_CONCAT, false, false, 0, 0, KEY_REQUIRED, true),
    [OP_PREPENDQ] = SHAPE(K_CONCAT, true, false, 0, 0, KEY_REQUIRED, true),
    [OP_DELETE] = SHAPE(K_DELETE, false, false, 0, 0, KEY_REQUIRED, false),
    [OP_DELETEQ] = SHAPE(K_DELETE, true, false, 0, 0, KEY_REQUIRED, false),
    [OP_INCREMENT] = SHAPE(K_ARITH, false, false, 20, 20, KEY_REQUIRED, false),
    [OP_INCREMENTQ] = SHAPE(K_ARITH, true, false, 20, 20, KEY_REQUIRED, false),
    [OP_DECREMENT] = SHAPE(K_ARITH, false, false, 20, 20, KEY_REQUIRED, false),
    [OP_DECREMENTQ] = SHAPE(K_ARITH, true, false, 20, 20, KEY_REQUIRED, false),
    [OP_QUIT] = SHAPE(K_QUIT, false, false, 0, 0, KEY_NONE, false),
    [OP_QUITQ] = SHAPE(K_QUIT, true, false, 0, 0, KEY_NONE, false),
    [OP_FLUSH] = SHAPE(K_FLUSH, false, false, 0, 4, KEY_NONE, false),
    [OP_FLUSHQ] = SHAPE(K_FLUSH, true, false, 0, 4, KEY_NONE, false),
    [OP_NOOP] = SHAPE(K_NOOP, false, false, 0, 0, KEY_NONE, false),
    [OP_VERSION] = SHAPE(K_VERSION, false, false, 0, 0, KEY_NONE, false),
    [OP_STAT] = SHAPE(K_STAT, false, false, 0, 0, KEY_OPTIONAL, false),
    [OP_VERBOSITY] = SHAPE(K_VERBOSITY, false, false, 4, 4, KEY_NONE, false),
    [OP_TOUCH] = SHAPE(K_TOUCH, false, false, 4, 4, KEY_REQUIRED, false),
    [OP_GAT] = SHAPE(K_GAT, false, false, 4, 4, KEY_REQUIRED, false),
    [OP_GATQ] = SHAPE(K_GAT, true, false, 4, 4, KEY_REQUIRED, false),
    [OP_GATK] = SHAPE(K_GAT, false, true, 4, 4, KEY_REQUIRED, false),
    [OP_GATKQ] = SHAPE(K_GAT, true, true, 4, 4, KEY_REQUIRED, false),
};

typedef struct {
    uint8_t magic, opcode, extlen, datatype;
    uint16_t keylen, vbucket;
    uint32_t bodylen, opaque;
    uint64_t cas;
} hdr_t;

typedef struct {
    mc_conn_t *c;
    mc_server_t *srv;
    sn_node_t *node;
    struct evbuffer *out;
    hdr_t h;
    const shape_t *shape;
    const uint8_t *ext;
    const uint8_t *key;         /* the key as sent */
    const uint8_t *value;
    uint32_t vlen;
    const char *id;             /* the key's session id (mc_key_id) */
    size_t idlen;
    char idbuf[MC_KEY_MAX];
} req_t;

enum { R_DONE, R_CLOSE };

/* ------------------------------------------------------------ encoding */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t) get32(p) << 32 | get32(p + 4);
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
    return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    return put32(put32(p, (uint32_t) (v >> 32)), (uint32_t) v);
}

static void parse_header(const uint8_t *b, hdr_t *h)
{
    h->magic = b[0];
    h->opcode = b[1];
    h->keylen = get16(b + 2);
    h->extlen = b[4];
    h->datatype = b[5];
    h->vbucket = get16(b + 6);
    h->bodylen = get32(b + 8);
    h->opaque = get32(b + 12);
    h->cas = get64(b + 16);
}

static uint8_t *put_header(uint8_t *p, const hdr_t *req, uint16_t status, uint16_t keylen,
                           uint8_t extlen, uint32_t bodylen, uint64_t cas)
{
    p[0] = RES_MAGIC;
    p[1] = req->opcode;
    put16(p + 2, keylen);
    p[4] = extlen;
    p[5] = 0;
    put16(p + 6, status);
    put32(p + 8, bodylen);
    put32(p + 12, req->opaque);   /* the client's own, echoed unread */
    put64(p + 16, cas);
    return p + HDR_LEN;
}

/* One response, assembled in a single reserved extent. */
static void respond(req_t *r, uint16_t status, const void *ext, uint8_t extlen, const void *key,
                    uint16_t keylen, const void *val, uint32_t vlen, uint64_t cas)
{
    size_t len = HDR_LEN + extlen + keylen + (size_t) vlen;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(r->out, (ev_ssize_t) len, &v, 1) < 1)
        return;
    uint8_t *p = put_header(v.iov_base, &r->h, status, keylen, extlen,
                            (uint32_t) (extlen + keylen + vlen), cas);
    if (extlen)
        memcpy(p, ext, extlen);
    p += extlen;
    if (keylen)
        memcpy(p, key, keylen);
    p += keylen;
    if (vlen)
        memcpy(p, val, vlen);
    v.iov_len = len;
    evbuffer_commit_space(r->out, &v, 1);
}

static void ok(req_t *r, uint64_t cas)
{
    if (!r->shape->quiet)
        respond(r, ST_OK, NULL, 0, NULL, 0, NULL, 0, cas);
}

static const char *status_text(uint16_t status)
{
    switch (status) {
    case ST_KEY_ENOENT: return "Not found";
    case ST_KEY_EEXISTS: return "Data exists for key.";
    case ST_E2BIG: return "Too large.";
    case ST_EINVAL: return "Invalid arguments";
    case ST_NOT_STORED: return "Not stored.";
    case ST_DELTA_BADVAL: return "Non-numeric server-side value for incr or decr";
    case ST_UNKNOWN_COMMAND: return "Unknown command";
    case ST_ENOMEM: return "Out of memory";
    default: return "Internal error";
    }
}

/* Errors are sent whether or not the command is quiet. */
static void error_text(req_t *r, uint16_t status, const char *text)
{
    respond(r, status, NULL, 0, NULL, 0, text, (uint32_t) strlen(text), 0);
}

static void error(req_t *r, uint16_t status)
{
    if (status == ST_EINVAL || status == ST_UNKNOWN_COMMAND)
        MC_COUNT(r->srv, protocol_errors, 1);
    error_text(r, status, status_text(status));
}

static bool concern_failed(int rc)
{
    return rc == SN_ETIMEDOUT || rc == SN_EREFUSED || rc == SN_EBUSY;
}

/* The reply to a write the node refused, or applied without the write
 * concern being met. */
static void write_error(req_t *r, int rc)
{
    char buf[96];
    if (concern_failed(rc)) {
        MC_COUNT(r->srv, write_concern_failures, 1);
        snprintf(buf, sizeof buf, "Write not confirmed by peers: %s", sn_strerror(rc));
        error_text(r, ST_ETMPFAIL, buf);
    } else if (rc == SN_EFULL) {
        MC_COUNT(r->srv, store_no_memory, 1);
        error(r, ST_ENOMEM);
    } else if (rc == SN_ETOOBIG) {
        MC_COUNT(r->srv, store_too_large, 1);
        error(r, ST_E2BIG);
    } else if (rc == SN_EBADID) {
        /* a key whose escaped form passes MC_KEY_MAX */
        error(r, ST_EINVAL);
    } else if (rc == SN_ENOMEM) {
        error(r, ST_ENOMEM);
    } else {
        snprintf(buf, sizeof buf, "%s", sn_strerror(rc));
        error_text(r, ST_EINTERNAL, buf);
    }
}

/* ------------------------------------------------------------ commands */

static int64_t exptime_of(req_t *r, const uint8_t *p, bool *expired)
{
    return mc_exptime(r->srv, (int64_t) get32(p), expired);
}

/* Deletes a key whose new exptime is already past; memcached stores such
 * an item and never returns it. */
static int expire_now(req_t *r)
{
    sn_write_t opts = mc_write_options(r->srv);
    int rc = sn_node_destroy_session(r->node, r->id, r->idlen, &opts);
    return rc == SN_ENOTFOUND ? 0 : rc;
}

typedef struct {
    uint64_t cas;
    bool found;
} peek_t;

static void peek_item(const sn_item_t *it, void *arg)
{
    peek_t *pk = arg;
    pk->cas = it->cas;
    pk->found = true;
}

/* A CAS on a command the node has no atomic form of (append, delete,
 * arithmetic): checked against this node's copy, then applied; a write
 * landing in between wins over the check, as documented for the text
 * protocol's meta commands. Returns 0, or the status to answer. */
static uint16_t check_cas(req_t *r)
{
    if (r->h.cas == 0)
        return 0;
    peek_t pk = {0};
    sn_node_item_get(r->node, r->id, r->idlen, NULL, 0, -1, peek_item, &pk);
    if (!pk.found) {
        MC_COUNT(r->srv, cas_misses, 1);
        return ST_KEY_ENOENT;
    }
    if (pk.cas != r->h.cas) {
        MC_COUNT(r->srv, cas_badval, 1);
        return ST_KEY_EEXISTS;
    }
    MC_COUNT(r->srv, cas_hits, 1);
    return 0;
}

/* Runs with the session locked: one reserve, one copy of the value. */
static void emit_hit(const sn_item_t *it, void *arg)
{
    req_t *r = arg;
    bool touch_only = r->shape->kind == K_TOUCH;
    uint16_t keylen = r->shape->with_key ? r->h.keylen : 0;
    uint32_t vlen = touch_only ? 0 : (uint32_t) it->value_len;
    uint8_t flags[4];
    put32(flags, it->flags);
    respond(r, ST_OK, flags, 4, r->key, keylen, it->value, vlen, it->cas);
}

/* GET, GETQ, GETK, GETKQ, GAT, GATQ, GATK, GATKQ and TOUCH. */
static int cmd_get(req_t *r)
{
    mc_server_t *srv = r->srv;
    kind_t kind = r->shape->kind;
    bool touch = kind != K_GET, expired = false;
    int64_t ttl = -1;
    if (touch) {
        ttl = exptime_of(r, r->ext, &expired);
        if (expired)
            ttl = -1;
        MC_COUNT(srv, cmd_touch, 1);
    }
    if (kind != K_TOUCH)
        MC_COUNT(srv, cmd_get, 1);
    int rc = r->idlen ? sn_node_item_get(r->node, r->id, r->idlen, NULL, 0, ttl, emit_hit, r)
                      : SN_ENOTFOUND;
    if (rc == 0 && expired)
        expire_now(r);
    if (rc == 0) {
        if (touch)
            MC_COUNT(srv, touch_hits, 1);
        else
            MC_COUNT(srv, get_hits, 1);
        return R_DONE;
    }
    if (touch)
        MC_COUNT(srv, touch_misses, 1);
    else
        MC_COUNT(srv, get_misses, 1);
    if (r->shape->quiet)
        return R_DONE;
    /* memcached answers a K variant's miss with the key and no text */
    if (r->shape->with_key)
        respond(r, ST_KEY_ENOENT, NULL, 0, r->key, r->h.keylen, NULL, 0, 0);
    else
        error(r, ST_KEY_ENOENT);
    return R_DONE;
}

/* SET, ADD, REPLACE and their quiet forms; a CAS in the header makes any
 * of them a compare-and-swap, as in memcached. */
static int cmd_store(req_t *r)
{
    mc_server_t *srv = r->srv;
    uint8_t op = r->h.opcode;
    sn_item_mode_t mode = op == OP_ADD || op == OP_ADDQ           ? SN_ITEM_ADD
                          : op == OP_REPLACE || op == OP_REPLACEQ ? SN_ITEM_REPLACE
                                                                  : SN_ITEM_SET;
    if (r->h.cas)
        mode = SN_ITEM_CAS;
    MC_COUNT(srv, cmd_set, 1);
    uint32_t flags = get32(r->ext);
    bool expired = false;
    int64_t max_inactive = exptime_of(r, r->ext + 4, &expired);
    sn_write_t opts = mc_write_options(srv);
    uint64_t cas = 0;
    int rc;
    if (expired && mode == SN_ITEM_SET) {
        rc = expire_now(r);
    } else {
        rc = sn_node_item_store(r->node, r->id, r->idlen, NULL, 0, mode, r->value, r->vlen, flags,
                                max_inactive, r->h.cas, &cas, &opts);
        if (expired && (rc == 0 || concern_failed(rc))) {
            int drc = expire_now(r);
            if (rc == 0)
                rc = drc;
        }
    }
    switch (rc) {
    case 0:
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_hits, 1);
        ok(r, cas);
        break;
    case SN_EEXISTS:
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_badval, 1);
        error(r, ST_KEY_EEXISTS);
        break;
    case SN_ENOTFOUND:
        if (mode == SN_ITEM_CAS)
            MC_COUNT(srv, cas_misses, 1);
        error(r, ST_KEY_ENOENT);
        break;
    default:
        write_error(r, rc);
    }
    return R_DONE;
}

/* APPEND, PREPEND and their quiet forms. */
static int cmd_concat(req_t *r)
{
    MC_COUNT(r->srv, cmd_set, 1);
    uint16_t st = check_cas(r);
    if (st) {
        /* memcached answers a missing item NOT_STORED here, CAS or not */
        error(r, st == ST_KEY_ENOENT ? ST_NOT_STORED : st);
        return R_DONE;
    }
    uint8_t op = r->h.opcode;
    sn_item_mode_t mode = op == OP_APPEND || op == OP_APPENDQ ? SN_ITEM_APPEND : SN_ITEM_PREPEND;
    sn_write_t opts = mc_write_options(r->srv);
    uint64_t cas = 0;
    int rc = sn_node_item_store(r->node, r->id, r->idlen, NULL, 0, mode, r->value, r->vlen, 0, -1,
                                0, &cas, &opts);
    if (rc == 0)
        ok(r, cas);
    else if (rc == SN_ENOTFOUND)
        error(r, ST_NOT_STORED);
    else
        write_error(r, rc);
    return R_DONE;
}

static int cmd_delete(req_t *r)
{
    mc_server_t *srv = r->srv;
    uint16_t st = check_cas(r);
    if (st) {
        if (st == ST_KEY_ENOENT)
            MC_COUNT(srv, delete_misses, 1);
        error(r, st);
        return R_DONE;
    }
    sn_write_t opts = mc_write_options(srv);
    int rc = sn_node_destroy_session(r->node, r->id, r->idlen, &opts);
    if (rc == 0) {
        MC_COUNT(srv, delete_hits, 1);
        ok(r, 0);
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        MC_COUNT(srv, delete_misses, 1);
        error(r, ST_KEY_ENOENT);
    } else {
        if (concern_failed(rc))
            MC_COUNT(srv, delete_hits, 1);
        write_error(r, rc);
    }
    return R_DONE;
}

/* INCREMENT, DECREMENT and their quiet forms: extras are the delta, the
 * initial value and an exptime, 0xffffffff meaning "do not create". */
static int cmd_arith(req_t *r)
{
    mc_server_t *srv = r->srv;
    uint8_t op = r->h.opcode;
    bool decr = op == OP_DECREMENT || op == OP_DECREMENTQ;
    uint64_t delta = get64(r->ext), initial = get64(r->ext + 8);
    uint32_t exptime = get32(r->ext + 16);
    bool create = exptime != 0xffffffffu, expired = false;
    int64_t max_inactive = create ? exptime_of(r, r->ext + 16, &expired) : -1;
    uint16_t st = check_cas(r);
    if (st) {
        error(r, st);
        return R_DONE;
    }
    sn_write_t opts = mc_write_options(srv);
    uint64_t value = 0, cas = 0;
    int rc = sn_node_item_arith(r->node, r->id, r->idlen, NULL, 0, decr, delta, create, initial,
                                max_inactive, &value, &cas, &opts);
    if (rc == 0 || concern_failed(rc)) {
        if (decr)
            MC_COUNT(srv, decr_hits, 1);
        else
            MC_COUNT(srv, incr_hits, 1);
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        if (decr)
            MC_COUNT(srv, decr_misses, 1);
        else
            MC_COUNT(srv, incr_misses, 1);
    }
    if (rc == 0 && expired)
        rc = expire_now(r);
    if (rc == 0) {
        if (!r->shape->quiet) {
            uint8_t body[8];
            put64(body, value);
            respond(r, ST_OK, NULL, 0, NULL, 0, body, 8, cas);
        }
    } else if (rc == SN_ENOTFOUND || rc == SN_EBADID) {
        error(r, ST_KEY_ENOENT);
    } else if (rc == SN_ENOTNUM) {
        error(r, ST_DELTA_BADVAL);
    } else {
        write_error(r, rc);
    }
    return R_DONE;
}

static int cmd_flush(req_t *r)
{
    int64_t delay = r->h.extlen == 4 ? (int64_t) get32(r->ext) : 0;
    /* as for exptimes, a delay beyond 30 days is a Unix time */
    if (delay > MC_REALTIME_MAXDELTA)
        delay -= (int64_t) time(NULL);
    MC_COUNT(r->srv, cmd_flush, 1);
    mc_flush(r->srv, delay);
    ok(r, 0);
    return R_DONE;
}

static void stat_packet(const char *key, const char *value, void *arg)
{
    req_t *r = arg;
    size_t klen = strlen(key), vlen = strlen(value);
    respond(r, ST_OK, NULL, 0, key, (uint16_t) klen, value, (uint32_t) vlen, 0);
}

static bool key_is(const req_t *r, const char *s)
{
    size_t n = strlen(s);
    return r->h.keylen == n && memcmp(r->key, s, n) == 0;
}

/* One packet per statistic, then an empty one that ends the list. */
static int cmd_stat(req_t *r)
{
    if (r->h.keylen == 0) {
        mc_stats_each(r->srv, stat_packet, r);
    } else if (key_is(r, "settings")) {
        mc_stats_settings(r->srv, stat_packet, r);
    } else if (key_is(r, "reset")) {
        mc_stats_reset(r->srv);
    } else if (!key_is(r, "items") && !key_is(r, "slabs") && !key_is(r, "conns") &&
               !key_is(r, "sizes")) {
        error(r, ST_KEY_ENOENT);
        return R_DONE;
    }
    respond(r, ST_OK, NULL, 0, NULL, 0, NULL, 0, 0);
    return R_DONE;
}

static int execute(req_t *r)
{
    switch (r->shape->kind) {
    case K_GET:
    case K_GAT:
    case K_TOUCH:
        return cmd_get(r);
    case K_STORE:
        return cmd_store(r);
    case K_CONCAT:
        return cmd_concat(r);
    case K_DELETE:
        return cmd_delete(r);
    case K_ARITH:
        return cmd_arith(r);
    case K_QUIT:
        ok(r, 0);
        return R_CLOSE;
    case K_FLUSH:
        return cmd_flush(r);
    case K_NOOP:
        ok(r, 0);
        return R_DONE;
    case K_VERSION: {
        const char *v = r->srv->version;
        respond(r, ST_OK, NULL, 0, NULL, 0, v, (uint32_t) strlen(v), 0);
        return R_DONE;
    }
    case K_STAT:
        return cmd_stat(r);
    case K_VERBOSITY: {
        uint32_t level = get32(r->ext);
        atomic_store_explicit(&r->srv->verbosity, level > 2 ? 2 : (int) level,
                              memory_order_relaxed);
        ok(r, 0);
        return R_DONE;
    }
    }
    return R_DONE;
}

/* ------------------------------------------------------------ framing */

/* Whether a header fits its opcode's shape; memcached closes on one that
 * does not. */
static bool well_formed(const hdr_t *h, const shape_t *s)
{
    if (h->datatype != 0 || (uint32_t) h->keylen + h->extlen > h->bodylen)
        return false;
    if (h->extlen != s->ext_a && h->extlen != s->ext_b)
        return false;
    if (h->keylen > MC_KEY_MAX || (s->key == KEY_REQUIRED && h->keylen == 0) ||
        (s->key == KEY_NONE && h->keylen != 0))
        return false;
    return s->value || h->bodylen == (uint32_t) h->keylen + h->extlen;
}

/* Refuses a header: answers `status` for it, as a reply to its opcode and
 * opaque. */
static void refuse(mc_conn_t *c, struct evbuffer *out, const hdr_t *h, uint16_t status)
{
    req_t r = {.c = c, .srv = c->srv, .node = c->srv->s.node, .out = out, .h = *h};
    static const shape_t none = {0};
    r.shape = &none;
    error(&r, status);
}

int mc_binary_process(mc_conn_t *c, struct evbuffer *in, struct evbuffer *out)
{
    mc_server_t *srv = c->srv;
    for (;;) {
        if (c->bin_swallow) {
            size_t n = evbuffer_get_length(in);
            if (n > c->bin_swallow)
                n = (size_t) c->bin_swallow;
            evbuffer_drain(in, n);
            c->bin_swallow -= n;
            if (c->bin_swallow)
                return MC_OK;
        }
        size_t avail = evbuffer_get_length(in);
        if (avail == 0 || evbuffer_get_length(out) > MC_OUT_HIGH)
            return MC_OK;
        uint8_t raw[HDR_LEN];
        evbuffer_copyout(in, raw, avail < HDR_LEN ? avail : HDR_LEN);
        if (raw[0] != REQ_MAGIC) {
            /* no way to find the next request: memcached closes too */
            MC_COUNT(srv, protocol_errors, 1);
            return MC_CLOSE;
        }
        if (avail < HDR_LEN)
            return MC_OK;
        hdr_t h;
        parse_header(raw, &h);
        const shape_t *s = &shapes[h.opcode];
        if (!s->known) {
            evbuffer_drain(in, HDR_LEN);
            c->bin_swallow = h.bodylen;
            refuse(c, out, &h, ST_UNKNOWN_COMMAND);
            continue;
        }
        if (!well_formed(&h, s)) {
            evbuffer_drain(in, HDR_LEN);
            refuse(c, out, &h, ST_EINVAL);
            return MC_CLOSE;
        }
        uint32_t vlen = h.bodylen - h.keylen - h.extlen;
        if (vlen > srv->s.item_size_max) {
            /* memcached reads the key and drops the value; the key has
             * no use here either */
            MC_COUNT(srv, store_too_large, 1);
            evbuffer_drain(in, HDR_LEN);
            c->bin_swallow = h.bodylen;
            refuse(c, out, &h, ST_E2BIG);
            continue;
        }
        size_t total = HDR_LEN + (size_t) h.bodylen;
        if (avail < total)
            return MC_OK;
        const uint8_t *base = evbuffer_pullup(in, (ev_ssize_t) total);
        if (!base) {
            refuse(c, out, &h, ST_ENOMEM);
            return MC_CLOSE;
        }
        req_t r = {.c = c, .srv = srv, .node = srv->s.node, .out = out, .h = h, .shape = s};
        r.ext = base + HDR_LEN;
        r.key = r.ext + h.extlen;
        r.value = r.key + h.keylen;
        r.vlen = vlen;
        if (h.keylen)
            r.idlen = mc_key_id(r.key, h.keylen, r.idbuf, &r.id);
        int rc = execute(&r);
        evbuffer_drain(in, total);
        if (rc == R_CLOSE)
            return MC_CLOSE;
    }
}
