/*
 * test_mc_text.c - the memcached text protocol engine (daemon/mc_text.c,
 * daemon/mc_proto.c), driven directly through mc_conn_process against an
 * in-process node on inproc://: no socket, no daemon.
 *
 * Every reply is compared byte for byte with what memcached 1.6 sends for
 * the same input (doc/protocol.txt; the error strings and token rules were
 * checked against a running memcached 1.6.18). Input is also fed split
 * across calls and one byte at a time, since a client's writes reach the
 * engine in whatever pieces the network makes.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "mc_internal.h"
#include "mc_proto.h"
#include "sessnode.h"

typedef struct {
    sn_node_t *node;
    mc_server_t *srv;
    mc_conn_t *conn;
    struct evbuffer *in, *out;
    char *reply;                /* the output of the last send, NUL-terminated */
    size_t reply_len;
    int rc;                     /* what the last mc_conn_process returned */
} fx_t;

typedef struct {
    uint32_t value_max;
    size_t memory_limit;
    uint32_t write_concern;
} fx_opts_t;

static int fx_setup(void **state, const fx_opts_t *o)
{
    static unsigned seq;
    char cluster[96];
    snprintf(cluster, sizeof cluster, "inproc://mc-text-%d-%u", (int) getpid(), ++seq);
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.cluster = cluster;
    if (o->value_max)
        cfg.value_max = o->value_max;
    cfg.memory_limit = o->memory_limit;
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->node = sn_node_new(&cfg);
    assert_non_null(f->node);
    assert_int_equal(sn_node_start(f->node), 0);
    mc_settings_t s;
    memset(&s, 0, sizeof s);
    s.node = f->node;
    s.item_size_max = o->value_max ? o->value_max : (1u << 20);
    s.write_concern = o->write_concern;
    s.write_timeout_ms = 50;
    s.threads = 4;
    s.memory_limit = o->memory_limit;
    s.version = "9.9.9-test";
    f->srv = mc_server_new(&s);
    assert_non_null(f->srv);
    f->conn = mc_conn_new(f->srv);
    assert_non_null(f->conn);
    mc_server_conn_opened(f->srv);
    f->in = evbuffer_new();
    f->out = evbuffer_new();
    *state = f;
    return 0;
}

static int setup(void **state)
{
    fx_opts_t o = {0};
    return fx_setup(state, &o);
}

static int setup_small_items(void **state)
{
    fx_opts_t o = {.value_max = 1024};
    return fx_setup(state, &o);
}

static int setup_concern(void **state)
{
    fx_opts_t o = {.write_concern = 1};
    return fx_setup(state, &o);
}

static int setup_small_memory(void **state)
{
    fx_opts_t o = {.memory_limit = 64 << 10};
    return fx_setup(state, &o);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    evbuffer_free(f->in);
    evbuffer_free(f->out);
    mc_server_conn_closed(f->srv);
    mc_conn_free(f->conn);
    mc_server_destroy(&f->srv);
    assert_null(f->srv);
    sn_node_destroy(&f->node);
    free(f->reply);
    free(f);
    return 0;
}

/* Takes what the engine wrote since the last call into f->reply. */
static void collect(fx_t *f)
{
    size_t n = evbuffer_get_length(f->out);
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    evbuffer_remove(f->out, buf, n);
    buf[n] = '\0';
    free(f->reply);
    f->reply = buf;
    f->reply_len = n;
}

/* Sends `len` bytes in one piece. */
static const char *sendn(fx_t *f, const void *data, size_t len)
{
    evbuffer_add(f->in, data, len);
    f->rc = mc_conn_process(f->conn, f->in, f->out);
    collect(f);
    return f->reply;
}

static const char *send_str(fx_t *f, const char *s)
{
    return sendn(f, s, strlen(s));
}

/* Sends `len` bytes one at a time, the output of every call gathered. */
static const char *send_bytewise(fx_t *f, const void *data, size_t len)
{
    const unsigned char *p = data;
    struct evbuffer *all = evbuffer_new();
    f->rc = MC_OK;
    for (size_t i = 0; i < len && f->rc == MC_OK; i++) {
        evbuffer_add(f->in, p + i, 1);
        f->rc = mc_conn_process(f->conn, f->in, f->out);
        evbuffer_add_buffer(all, f->out);
    }
    evbuffer_add_buffer(f->out, all);
    evbuffer_free(all);
    collect(f);
    return f->reply;
}

static void print_escaped(const char *label, const char *s, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): \"", label, n);
    for (size_t i = 0; i < n && i < 600; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (ch == '\r')
            fputs("\\r", stderr);
        else if (ch == '\n')
            fputs("\\n", stderr);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(stderr, "\\x%02x", ch);
        else
            fputc(ch, stderr);
    }
    fputs(n > 600 ? "...\"\n" : "\"\n", stderr);
}

static void check_reply(fx_t *f, const char *want, size_t want_len, int line)
{
    if (f->reply_len != want_len || memcmp(f->reply, want, want_len) != 0) {
        fprintf(stderr, "line %d: unexpected reply\n", line);
        print_escaped("  want", want, want_len);
        print_escaped("  got ", f->reply, f->reply_len);
        fail_msg("reply mismatch at line %d", line);
    }
}

/* Sends a string literal and checks the exact reply. */
#define EXPECT(f, input, want)                                                 \
    do {                                                                       \
        sendn((f), (input), sizeof(input) - 1);                                \
        check_reply((f), (want), sizeof(want) - 1, __LINE__);                  \
    } while (0)

/* The same, one byte per call. */
#define EXPECT_BYTEWISE(f, input, want)                                        \
    do {                                                                       \
        send_bytewise((f), (input), sizeof(input) - 1);                        \
        check_reply((f), (want), sizeof(want) - 1, __LINE__);                  \
    } while (0)

#define COUNTER(f, name) atomic_load(&(f)->srv->st.name)

/* The CAS unique of a key, read with gets. */
static uint64_t cas_of(fx_t *f, const char *key)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "gets %s\r\n", key);
    const char *r = send_str(f, cmd);
    unsigned long long cas = 0;
    char k[260];
    unsigned flags, bytes;
    assert_int_equal(sscanf(r, "VALUE %259s %u %u %llu", k, &flags, &bytes, &cas), 4);
    return cas;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fprintf(stderr, "missing \"%s\" in:\n%s\n", needle, hay);
        fail_msg("missing %s", needle);
    }
}

/* ------------------------------------------------------------- storage */

static void test_set_get_round_trip_keeps_crlf_inside_value(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set k 5 0 6\r\na\r\nb\r\n\r\n", "STORED\r\n");
    EXPECT(f, "get k\r\n", "VALUE k 5 6\r\na\r\nb\r\n\r\nEND\r\n");
    EXPECT(f, "set empty 0 0 0\r\n\r\n", "STORED\r\n");
    EXPECT(f, "get empty\r\n", "VALUE empty 0 0\r\n\r\nEND\r\n");
    EXPECT(f, "set big 4294967295 0 3\r\nxyz\r\n", "STORED\r\n");
    EXPECT(f, "get big\r\n", "VALUE big 4294967295 3\r\nxyz\r\nEND\r\n");
    EXPECT(f, "get missing k nothing k\r\n",
           "VALUE k 5 6\r\na\r\nb\r\n\r\nVALUE k 5 6\r\na\r\nb\r\n\r\nEND\r\n");
    /* a bare \n ends a line, as in memcached */
    EXPECT(f, "get k\n", "VALUE k 5 6\r\na\r\nb\r\n\r\nEND\r\n");
    EXPECT(f, "set k 7 0 1 junk\r\nz\r\n", "STORED\r\n");
    EXPECT(f, "get  k   \r\n", "VALUE k 7 1\r\nz\r\nEND\r\n");
    assert_int_equal(COUNTER(f, cmd_set), 4);
    assert_int_equal(COUNTER(f, get_hits), 7);
    assert_int_equal(COUNTER(f, get_misses), 2);
    assert_int_equal(f->rc, MC_OK);
}

static void test_gets_and_cas(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set c 1 0 2\r\nv1\r\n", "STORED\r\n");
    uint64_t cas = cas_of(f, "c");
    assert_true(cas != 0);
    char cmd[128], want[128];
    snprintf(cmd, sizeof cmd, "cas c 2 0 2 %llu\r\nv2\r\n", (unsigned long long) cas);
    assert_string_equal(send_str(f, cmd), "STORED\r\n");
    uint64_t cas2 = cas_of(f, "c");
    assert_true(cas2 != cas);
    snprintf(want, sizeof want, "VALUE c 2 2 %llu\r\nv2\r\nEND\r\n", (unsigned long long) cas2);
    assert_string_equal(send_str(f, "gets c\r\n"), want);
    /* the old unique no longer matches */
    assert_string_equal(send_str(f, cmd), "EXISTS\r\n");
    EXPECT(f, "cas nokey 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n");
    EXPECT(f, "cas c 0 0 1 x\r\ny\r\nget c\r\n",
           "CLIENT_ERROR bad command line format\r\nVALUE c 2 2\r\nv2\r\nEND\r\n");
    EXPECT(f, "cas c 0 0 1\r\n", "ERROR\r\n");
    assert_int_equal(COUNTER(f, cas_hits), 1);
    assert_int_equal(COUNTER(f, cas_badval), 1);
    assert_int_equal(COUNTER(f, cas_misses), 1);
}

static void test_add_and_replace(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "add a 0 0 1\r\nx\r\n", "STORED\r\n");
    EXPECT(f, "add a 0 0 1\r\ny\r\n", "NOT_STORED\r\n");
    EXPECT(f, "replace nope 0 0 1\r\ny\r\n", "NOT_STORED\r\n");
    EXPECT(f, "replace a 3 0 2\r\nyy\r\n", "STORED\r\n");
    EXPECT(f, "get a nope\r\n", "VALUE a 3 2\r\nyy\r\nEND\r\n");
}

static void test_append_and_prepend(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "append nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    EXPECT(f, "prepend nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    EXPECT(f, "set a 9 0 1\r\nm\r\n", "STORED\r\n");
    /* flags and exptime of append/prepend are ignored */
    EXPECT(f, "append a 1 0 2\r\nyz\r\n", "STORED\r\n");
    EXPECT(f, "prepend a 2 0 2\r\nvw\r\n", "STORED\r\n");
    EXPECT(f, "get a\r\n", "VALUE a 9 5\r\nvwmyz\r\nEND\r\n");
}

static void test_incr_and_decr(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "incr n 1\r\n", "NOT_FOUND\r\n");
    EXPECT(f, "decr n 1\r\n", "NOT_FOUND\r\n");
    EXPECT(f, "set n 5 0 2\r\n10\r\n", "STORED\r\n");
    EXPECT(f, "incr n 5\r\n", "15\r\n");
    EXPECT(f, "decr n 100\r\n", "0\r\n");
    EXPECT(f, "incr n 18446744073709551615\r\n", "18446744073709551615\r\n");
    EXPECT(f, "incr n 2\r\n", "1\r\n");
    EXPECT(f, "get n\r\n", "VALUE n 5 1\r\n1\r\nEND\r\n");
    EXPECT(f, "incr n 18446744073709551616\r\n",
           "CLIENT_ERROR invalid numeric delta argument\r\n");
    EXPECT(f, "incr n x\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n");
    EXPECT(f, "incr n -1\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n");
    EXPECT(f, "set t 0 0 2\r\nab\r\n", "STORED\r\n");
    EXPECT(f, "incr t 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    EXPECT(f, "decr t 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    EXPECT(f, "set big 0 0 21\r\n184467440737095516150\r\n", "STORED\r\n");
    EXPECT(f, "incr big 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    EXPECT(f, "incr\r\nincr n\r\nincr n 1 2 3\r\n", "ERROR\r\nERROR\r\nERROR\r\n");
    assert_int_equal(COUNTER(f, incr_hits), 3);
    assert_int_equal(COUNTER(f, decr_hits), 1);
    assert_int_equal(COUNTER(f, incr_misses), 1);
    assert_int_equal(COUNTER(f, decr_misses), 1);
}

static void test_touch_gat_and_gats(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "touch zz 10\r\n", "NOT_FOUND\r\n");
    EXPECT(f, "set a 5 0 1\r\nx\r\n", "STORED\r\n");
    EXPECT(f, "touch a 100\r\n", "TOUCHED\r\n");
    EXPECT(f, "mg a t\r\n", "HD t100\r\n");
    EXPECT(f, "touch a x\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    EXPECT(f, "touch a\r\n", "ERROR\r\n");
    EXPECT(f, "gat 200 a zz a\r\n", "VALUE a 5 1\r\nx\r\nVALUE a 5 1\r\nx\r\nEND\r\n");
    EXPECT(f, "mg a t\r\n", "HD t200\r\n");
    uint64_t cas = cas_of(f, "a");
    char want[128];
    snprintf(want, sizeof want, "VALUE a 5 1 %llu\r\nx\r\nEND\r\n", (unsigned long long) cas);
    assert_string_equal(send_str(f, "gats 0 a\r\n"), want);
    EXPECT(f, "mg a t\r\n", "HD t-1\r\n");
    EXPECT(f, "gat x a\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    EXPECT(f, "gat 100\r\n", "END\r\n");
    EXPECT(f, "gat\r\n", "ERROR\r\n");
    /* an exptime already past returns the item one last time */
    EXPECT(f, "gat -1 a\r\n", "VALUE a 5 1\r\nx\r\nEND\r\n");
    EXPECT(f, "get a\r\n", "END\r\n");
    EXPECT(f, "set a 0 0 1\r\nx\r\ntouch a -1\r\nget a\r\n", "STORED\r\nTOUCHED\r\nEND\r\n");
    assert_int_equal(COUNTER(f, touch_hits), 6);
    assert_int_equal(COUNTER(f, touch_misses), 2);
}

static void test_delete(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "delete zz\r\n", "NOT_FOUND\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\n", "STORED\r\n");
    EXPECT(f, "delete d\r\n", "DELETED\r\n");
    EXPECT(f, "get d\r\n", "END\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\n", "STORED\r\n");
    EXPECT(f, "delete d 0\r\n", "DELETED\r\n");
    EXPECT(f, "delete d 1\r\n",
           "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    EXPECT(f, "delete\r\ndelete a b c d\r\n", "ERROR\r\nERROR\r\n");
    assert_int_equal(COUNTER(f, delete_hits), 2);
    assert_int_equal(COUNTER(f, delete_misses), 1);
}

static void test_expired_exptime_deletes_and_still_stores(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set e 0 0 1\r\nx\r\nset e 0 -1 1\r\ny\r\nget e\r\n", "STORED\r\nSTORED\r\nEND\r\n");
    /* an absolute time in the past */
    EXPECT(f, "set e 0 0 1\r\nx\r\nset e 0 1000000000 1\r\ny\r\nget e\r\n",
           "STORED\r\nSTORED\r\nEND\r\n");
    EXPECT(f, "set e 0 0 1\r\nx\r\nadd e 0 -1 1\r\ny\r\nget e\r\n",
           "STORED\r\nNOT_STORED\r\nVALUE e 0 1\r\nx\r\nEND\r\n");
    EXPECT(f, "replace e 0 -1 1\r\ny\r\nget e\r\n", "STORED\r\nEND\r\n");
    /* an absolute time in the future is a relative one */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "set e 0 %lld 1\r\nz\r\n", (long long) time(NULL) + 1000);
    assert_string_equal(send_str(f, cmd), "STORED\r\n");
    const char *r = send_str(f, "mg e t\r\n");
    long long ttl = 0;
    assert_int_equal(sscanf(r, "HD t%lld", &ttl), 1);
    assert_true(ttl >= 998 && ttl <= 1000);
}

/* ------------------------------------------------------------ flush_all */

static void test_flush_all_now(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n", "STORED\r\nSTORED\r\n");
    EXPECT(f, "flush_all\r\n", "OK\r\n");
    EXPECT(f, "get a b\r\n", "END\r\n");
    EXPECT(f, "set a 0 0 1\r\nx\r\nflush_all 0\r\nget a\r\n", "STORED\r\nOK\r\nEND\r\n");
    EXPECT(f, "flush_all abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    EXPECT(f, "flush_all -1\r\n", "OK\r\n");
    EXPECT(f, "flush_all 1 2 3\r\n", "ERROR\r\n");
    assert_int_equal(COUNTER(f, cmd_flush), 3);
}

static void test_flush_all_delayed_runs_on_tick(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set a 0 0 1\r\nx\r\n", "STORED\r\n");
    EXPECT(f, "flush_all 1\r\n", "OK\r\n");
    /* nothing has run the due flush yet */
    assert_int_equal(sn_node_exists(f->node, "a", 1), 1);
    bool gone = false;
    for (int i = 0; i < 25 && !gone; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        mc_server_tick(f->srv);
        gone = sn_node_exists(f->node, "a", 1) == 0;
    }
    assert_true(gone);
    EXPECT(f, "get a\r\n", "END\r\n");
    /* a later flush_all replaces a pending one */
    EXPECT(f, "set a 0 0 1\r\nx\r\nflush_all 100\r\nflush_all 0\r\nset b 0 0 1\r\ny\r\n",
           "STORED\r\nOK\r\nOK\r\nSTORED\r\n");
    assert_int_equal(atomic_load(&f->srv->flush_at), 0);
    EXPECT(f, "get a b\r\n", "VALUE b 0 1\r\ny\r\nEND\r\n");
}

/* -------------------------------------------------------------- noreply */

static void test_noreply_silences_every_reply(void **state)
{
    fx_t *f = *state;
    EXPECT(f,
           "set a 0 0 1 noreply\r\nx\r\n"
           "add a 0 0 1 noreply\r\nx\r\n"
           "add b 0 0 1 noreply\r\n1\r\n"
           "replace a 0 0 1 noreply\r\ny\r\n"
           "replace zz 0 0 1 noreply\r\ny\r\n"
           "append a 0 0 1 noreply\r\nz\r\n"
           "prepend a 0 0 1 noreply\r\nw\r\n"
           "cas a 0 0 1 1 noreply\r\nq\r\n"
           "incr b 5 noreply\r\n"
           "decr b 2 noreply\r\n"
           "incr a 1 noreply\r\n"
           "incr b x noreply\r\n"
           "touch a 10 noreply\r\n"
           "touch zz 10 noreply\r\n"
           "delete zz noreply\r\n"
           "delete zz 0 noreply\r\n"
           "delete zz 5 noreply\r\n"
           "verbosity 1 noreply\r\n"
           "verbosity noreply\r\n"
           "flush_all x noreply\r\n"
           "mn\r\n",
           "MN\r\n");
    EXPECT(f, "get a b\r\n", "VALUE a 0 3\r\nwyz\r\nVALUE b 0 1\r\n4\r\nEND\r\n");
    EXPECT(f, "delete a noreply\r\nflush_all noreply\r\nflush_all 0 noreply\r\nget a b\r\n",
           "END\r\n");
    /* a bad data chunk too: its remaining "\n" is an empty line */
    EXPECT(f, "set a 0 0 1 noreply\r\nxx\r\nmn\r\n", "ERROR\r\nMN\r\n");
}

/* ------------------------------------------------------ malformed input */

static void test_unknown_commands_get_error(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "bogus\r\n", "ERROR\r\n");
    EXPECT(f, "\r\n", "ERROR\r\n");
    EXPECT(f, "GET a\r\n", "ERROR\r\n");
    EXPECT(f, "get\r\n", "ERROR\r\n");
    EXPECT(f, "gets\r\n", "ERROR\r\n");
    EXPECT(f, "set a 0 0\r\n", "ERROR\r\n");
    EXPECT(f, "set a 0 0 1 2 3 4\r\nx\r\n", "ERROR\r\nERROR\r\n");
    EXPECT(f, "mg\r\nmd\r\nma\r\nms\r\n", "ERROR\r\nERROR\r\nERROR\r\nERROR\r\n");
    EXPECT(f, "verbosity\r\n", "ERROR\r\n");
    EXPECT(f, "\x01\x02\r\n", "ERROR\r\n");
    assert_int_equal(COUNTER(f, protocol_errors), 14);
    assert_int_equal(f->rc, MC_OK);
}

static void test_bad_command_lines_are_refused(void **state)
{
    fx_t *f = *state;
    /* unknown length: nothing to skip, the data line is a command */
    EXPECT(f, "set a 0 0 -1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    EXPECT(f, "set a 0 0 1x\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    EXPECT(f, "set a 0 0 2147483646\r\n", "CLIENT_ERROR bad command line format\r\n");
    /* known length: the data block is skipped */
    EXPECT(f, "set a x 0 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    EXPECT(f, "set a -1 0 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    EXPECT(f, "set a 4294967296 0 1\r\nx\r\nmn\r\n",
           "CLIENT_ERROR bad command line format\r\nMN\r\n");
    EXPECT(f, "set a 0 1x 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    EXPECT(f, "get a\r\n", "END\r\n");
    EXPECT(f, "verbosity x\r\n", "CLIENT_ERROR bad command line format\r\n");
    assert_int_equal(COUNTER(f, protocol_errors), 10);
}

static void test_bad_data_chunk(void **state)
{
    fx_t *f = *state;
    /* 3 bytes then "d\r": not \r\n; the "\n" left is an empty line */
    EXPECT(f, "set a 0 0 3\r\nabcd\r\nget a\r\n",
           "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n");
    EXPECT(f, "set a 0 0 3\r\nab\r\n\r\nget a\r\n",
           "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n");
    EXPECT(f, "set a 0 0 3\r\nabc\n\nget a\r\n", "CLIENT_ERROR bad data chunk\r\nEND\r\n");
    EXPECT(f, "ms a 3\r\nabcxy\r\nmn\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n");
    assert_int_equal(COUNTER(f, cmd_set), 0);
}

static void test_data_block_split_across_calls(void **state)
{
    fx_t *f = *state;
    assert_string_equal(send_str(f, "set a 1 0 10\r\n"), "");
    assert_string_equal(send_str(f, "0123"), "");
    assert_string_equal(send_str(f, "456789"), "");
    assert_string_equal(send_str(f, "\r"), "");
    assert_string_equal(send_str(f, "\nget a\r"), "STORED\r\n");
    assert_string_equal(send_str(f, "\n"), "VALUE a 1 10\r\n0123456789\r\nEND\r\n");
    /* a line split in the middle of its \r\n */
    assert_string_equal(send_str(f, "get a\r"), "");
    assert_string_equal(send_str(f, "\n"), "VALUE a 1 10\r\n0123456789\r\nEND\r\n");
    EXPECT_BYTEWISE(f, "set b 2 0 4\r\nx\r\ny\r\nget b\r\n",
                    "STORED\r\nVALUE b 2 4\r\nx\r\ny\r\nEND\r\n");
    assert_int_equal(evbuffer_get_length(f->in), 0);
}

static void test_oversize_value_is_swallowed(void **state)
{
    fx_t *f = *state;   /* item_size_max 1024 */
    size_t n = 5000;
    char *buf = malloc(n + 100);
    assert_non_null(buf);
    int hl = snprintf(buf, 100, "set big 0 0 %zu\r\n", n);
    /* a data block full of commands must not be executed */
    for (size_t i = 0; i < n; i++)
        buf[hl + i] = "get x\r\n"[i % 7];
    memcpy(buf + hl + n, "\r\nget big\r\n", 11);
    size_t total = (size_t) hl + n + 11;
    sendn(f, buf, total);
    check_reply(f, "SERVER_ERROR object too large for cache\r\nEND\r\n", 46, __LINE__);
    /* the same in pieces, and one byte at a time */
    sendn(f, buf, 7);
    sendn(f, buf + 7, 2000);
    check_reply(f, "SERVER_ERROR object too large for cache\r\n", 41, __LINE__);
    sendn(f, buf + 2007, total - 2007);
    check_reply(f, "END\r\n", 5, __LINE__);
    send_bytewise(f, buf, total);
    check_reply(f, "SERVER_ERROR object too large for cache\r\nEND\r\n", 46, __LINE__);
    free(buf);
    /* at the limit is fine */
    char *v = malloc(1024 + 64);
    assert_non_null(v);
    hl = snprintf(v, 64, "set ok 0 0 1024\r\n");
    memset(v + hl, 'v', 1024);
    memcpy(v + hl + 1024, "\r\n", 2);
    assert_string_equal(sendn(f, v, (size_t) hl + 1026), "STORED\r\n");
    /* an append that would pass the limit */
    EXPECT(f, "append ok 0 0 1\r\nx\r\n", "SERVER_ERROR object too large for cache\r\n");
    free(v);
    EXPECT(f, "set big 0 0 1025 noreply\r\n", "");
    assert_int_equal(f->conn->swallow, 1027);
    assert_int_equal(COUNTER(f, store_too_large), 5);
}

static void test_key_over_250_bytes_is_refused(void **state)
{
    fx_t *f = *state;
    char k250[251], k251[252], cmd[700];
    memset(k250, 'k', 250);
    k250[250] = '\0';
    memset(k251, 'k', 251);
    k251[251] = '\0';
    snprintf(cmd, sizeof cmd, "set %s 0 0 1\r\nx\r\n", k250);
    assert_string_equal(send_str(f, cmd), "STORED\r\n");
    snprintf(cmd, sizeof cmd, "get %s\r\n", k250);
    assert_true(strncmp(send_str(f, cmd), "VALUE kkk", 9) == 0);

    const char *bad = "CLIENT_ERROR bad command line format\r\n";
    const char *forms[] = {
        "get %s\r\n",           "get a %s a\r\n",      "gets %s\r\n",
        "gat 0 %s\r\n",         "delete %s\r\n",       "incr %s 1\r\n",
        "touch %s 0\r\n",       "mg %s v\r\n",         "md %s\r\n",
        "ma %s\r\n",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        snprintf(cmd, sizeof cmd, forms[i], k251);
        assert_string_equal(send_str(f, cmd), bad);
    }
    /* a storage command's data block is skipped */
    snprintf(cmd, sizeof cmd, "set %s 0 0 5\r\nget a\r\nmn\r\n", k251);
    assert_string_equal(send_str(f, cmd), "CLIENT_ERROR bad command line format\r\nMN\r\n");
    snprintf(cmd, sizeof cmd, "ms %s 5\r\nget a\r\nmn\r\n", k251);
    assert_string_equal(send_str(f, cmd), "CLIENT_ERROR bad command line format\r\nMN\r\n");
}

static void test_keys_with_control_characters(void **state)
{
    fx_t *f = *state;
    /* memcaslap's keys start with control bytes; memcached takes them */
    EXPECT(f, "set \x10\x10key 1 0 1\r\nx\r\nget \x10\x10key\r\n",
           "STORED\r\nVALUE \x10\x10key 1 1\r\nx\r\nEND\r\n");
    EXPECT(f, "set a\tb 0 0 1\r\ny\r\nget a\tb\r\n", "STORED\r\nVALUE a\tb 0 1\r\ny\r\nEND\r\n");
    /* stored under an escaped session id that no other key maps to */
    assert_int_equal(sn_node_exists(f->node, "%10%10key", 9), 1);
    assert_int_equal(sn_node_exists(f->node, "a%09b", 5), 1);
    EXPECT(f, "get a%09b\r\n", "END\r\n");
    EXPECT(f, "set a%09b 0 0 1\r\nz\r\nget a%09b a\tb\r\n",
           "STORED\r\nVALUE a%09b 0 1\r\nz\r\nVALUE a\tb 0 1\r\ny\r\nEND\r\n");
    assert_int_equal(sn_node_exists(f->node, "a%2509b", 7), 1);
    EXPECT(f, "incr \x7f 1\r\ndelete a\tb\r\nget a\tb\r\n", "NOT_FOUND\r\nDELETED\r\nEND\r\n");
    EXPECT(f, "mg EBBrZXk= b v k\r\n", "VA 1 kEBBrZXk= b\r\nx\r\n");
    EXPECT(f, "ms AQ== 1 b\r\nq\r\nget \x01\r\n", "HD\r\nVALUE \x01 0 1\r\nq\r\nEND\r\n");
    /* a key whose escaped form passes 250 bytes can hold nothing */
    char cmd[512];
    int n = sprintf(cmd, "set ");
    memset(cmd + n, 1, 100);
    n += 100;
    n += sprintf(cmd + n, " 0 0 1\r\nx\r\nget ");
    memset(cmd + n, 1, 100);
    n += 100;
    n += sprintf(cmd + n, "\r\n");
    sendn(f, cmd, (size_t) n);
    check_reply(f, "CLIENT_ERROR bad command line format\r\nEND\r\n", 43, __LINE__);
}

static void test_pipelined_commands_in_one_buffer(void **state)
{
    fx_t *f = *state;
    EXPECT(f,
           "set a 0 0 1\r\n1\r\nset b 0 0 2\r\n22\r\nget a b c\r\nincr a 9\r\n"
           "delete b\r\nget a b\r\nmn\r\nversion\r\n",
           "STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 2\r\n22\r\nEND\r\n10\r\n"
           "DELETED\r\nVALUE a 0 2\r\n10\r\nEND\r\nMN\r\nVERSION 9.9.9-test\r\n");
}

static void test_long_lines(void **state)
{
    fx_t *f = *state;
    /* a multi-get longer than 2048 bytes, split anywhere */
    char *line = malloc(8192);
    assert_non_null(line);
    size_t n = (size_t) sprintf(line, "get");
    for (int i = 0; i < 200; i++)
        n += (size_t) sprintf(line + n, " key-number-%04d", i);
    n += (size_t) sprintf(line + n, " a\r\n");
    assert_true(n > 3000);
    EXPECT(f, "set a 0 0 1\r\nx\r\n", "STORED\r\n");
    sendn(f, line, 1500);
    assert_int_equal(f->reply_len, 0);
    sendn(f, line + 1500, n - 1500);
    check_reply(f, "VALUE a 0 1\r\nx\r\nEND\r\n", 21, __LINE__);
    free(line);
    /* anything else past 2048 bytes without a newline closes */
    char junk[2100];
    memset(junk, 'x', sizeof junk);
    sendn(f, junk, 2048);
    assert_int_equal(f->rc, MC_OK);
    assert_int_equal(f->reply_len, 0);
    sendn(f, junk, 1);
    check_reply(f, "CLIENT_ERROR line too long\r\n", 28, __LINE__);
    assert_int_equal(f->rc, MC_CLOSE);
    assert_int_equal(evbuffer_get_length(f->in), 0);
}

static void test_long_line_with_newline_closes_too(void **state)
{
    fx_t *f = *state;
    char buf[3000];
    memset(buf, 'x', sizeof buf);
    memcpy(buf + sizeof buf - 2, "\r\n", 2);
    sendn(f, buf, sizeof buf);
    check_reply(f, "CLIENT_ERROR line too long\r\n", 28, __LINE__);
    assert_int_equal(f->rc, MC_CLOSE);
}

static void test_huge_multi_get_is_refused_whole(void **state)
{
    fx_t *f = *state;   /* item_size_max 1 MiB: replies over 64 MiB are refused */
    size_t n = 1u << 20;
    char *buf = malloc(n + 64);
    assert_non_null(buf);
    int hl = snprintf(buf, 64, "set big 0 0 %zu\r\n", n);
    memset(buf + hl, 'b', n);
    memcpy(buf + hl + n, "\r\n", 2);
    assert_string_equal(sendn(f, buf, (size_t) hl + n + 2), "STORED\r\n");
    free(buf);
    char line[1024];
    size_t l = (size_t) sprintf(line, "get");
    for (int i = 0; i < 70; i++)
        l += (size_t) sprintf(line + l, " big");
    l += (size_t) sprintf(line + l, "\r\nmn\r\n");
    sendn(f, line, l);
    check_reply(f, "SERVER_ERROR out of memory writing get response\r\nMN\r\n", 53, __LINE__);
    /* many keys, a small reply: built aside, then sent */
    l = (size_t) sprintf(line, "set s 0 0 1\r\nx\r\nget");
    for (int i = 0; i < 80; i++)
        l += (size_t) sprintf(line + l, " miss%d", i);
    l += (size_t) sprintf(line + l, " s\r\n");
    sendn(f, line, l);
    check_reply(f, "STORED\r\nVALUE s 0 1\r\nx\r\nEND\r\n", 29, __LINE__);
}

/* ------------------------------------------------------- meta commands */

static void test_meta_get(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set a 3 0 2\r\nhi\r\n", "STORED\r\n");
    EXPECT(f, "mg a\r\n", "HD\r\n");
    EXPECT(f, "mg a v\r\n", "VA 2\r\nhi\r\n");
    uint64_t cas = cas_of(f, "a");
    char want[256], cmd[128];
    snprintf(want, sizeof want, "VA 2 f3 t-1 c%llu ka s2\r\nhi\r\n", (unsigned long long) cas);
    assert_string_equal(send_str(f, "mg a v f t c k s\r\n"), want);
    EXPECT(f, "mg a s v Oabc q k\r\n", "VA 2 s2 Oabc ka\r\nhi\r\n");
    EXPECT(f, "mg a q\r\n", "HD\r\n");
    EXPECT(f, "mg zz v\r\n", "EN\r\n");
    EXPECT(f, "mg zz v k Oxy\r\n", "EN kzz Oxy\r\n");
    EXPECT(f, "mg zz v q k Oabc\r\nmn\r\n", "MN\r\n");
    EXPECT(f, "mg a l\r\n", "HD l0\r\n");
    EXPECT(f, "mg a P L u v\r\n", "VA 2\r\nhi\r\n");
    /* C: the value only if the unique differs */
    snprintf(cmd, sizeof cmd, "mg a v C%llu\r\n", (unsigned long long) cas);
    assert_string_equal(send_str(f, cmd), "HD\r\n");
    snprintf(cmd, sizeof cmd, "mg a v C%llu\r\n", (unsigned long long) cas + 1);
    assert_string_equal(send_str(f, cmd), "VA 2\r\nhi\r\n");
    /* T: touch */
    EXPECT(f, "mg a v T30 t\r\n", "VA 2 t30\r\nhi\r\n");
    EXPECT(f, "mg a t\r\n", "HD t30\r\n");
    EXPECT(f, "mg a T-1\r\nmg a\r\n", "HD\r\nEN\r\n");
    /* base64 keys: "YQ==" is "a" */
    EXPECT(f, "set a 3 0 2\r\nhi\r\n", "STORED\r\n");
    EXPECT(f, "mg YQ== b v k\r\n", "VA 2 kYQ== b\r\nhi\r\n");
    EXPECT(f, "mg YWJj b v k Oo\r\n", "EN kYWJj b Oo\r\n");
    EXPECT(f, "mg !!! b v\r\n", "CLIENT_ERROR error decoding key\r\n");
    EXPECT(f, "mg YQ b v\r\n", "CLIENT_ERROR error decoding key\r\n");
    /* N: autovivify; the creator wins */
    EXPECT(f, "mg viv v N30 t\r\n", "VA 0 t30 W\r\n\r\n");
    EXPECT(f, "mg viv v N30 t s\r\n", "VA 0 t30 s0\r\n\r\n");
    /* refusals */
    EXPECT(f, "mg a zz\r\n", "CLIENT_ERROR invalid flag\r\n");
    EXPECT(f, "mg a v v\r\n", "CLIENT_ERROR duplicate flag\r\n");
    EXPECT(f, "mg a h\r\n", "CLIENT_ERROR invalid flag\r\n");
    EXPECT(f, "mg a Tx\r\n", "CLIENT_ERROR bad token in command line format\r\n");
    EXPECT(f, "mg a T\r\n", "CLIENT_ERROR bad token in command line format\r\n");
    EXPECT(f, "mg a Cx\r\n", "CLIENT_ERROR bad token in command line format\r\n");
    EXPECT(f, "mg a O12345678901234567890123456789012\r\n",
           "CLIENT_ERROR opaque token too long\r\n");
    EXPECT(f, "mg a O1234567890123456789012345678901\r\n",
           "HD O1234567890123456789012345678901\r\n");
    EXPECT(f, "mg a v f t c k s O1 q u l P L N1 T1 C1 1 2 3 4\r\n",
           "CLIENT_ERROR options flags are too long\r\n");
    /* q never hides an error */
    EXPECT(f, "mg a q zz\r\n", "CLIENT_ERROR invalid flag\r\n");
}

static void test_meta_set(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "ms m 2\r\nhi\r\n", "HD\r\n");
    EXPECT(f, "mg m v f t\r\n", "VA 2 f0 t-1\r\nhi\r\n");
    const char *r = send_str(f, "ms m 3 F5 T100 c k Oq1 s\r\nhey\r\n");
    unsigned long long c = 0;
    assert_int_equal(sscanf(r, "HD c%llu km Oq1 s3\r\n", &c), 1);
    assert_int_equal(c, cas_of(f, "m"));
    EXPECT(f, "mg m v f t\r\n", "VA 3 f5 t100\r\nhey\r\n");
    EXPECT(f, "ms m 2 q\r\nhi\r\nmn\r\n", "MN\r\n");
    /* modes */
    EXPECT(f, "ms m 2 ME\r\nxx\r\n", "NS\r\n");
    EXPECT(f, "ms new 2 ME\r\nxx\r\n", "HD\r\n");
    EXPECT(f, "ms nope 2 MR\r\nxx\r\n", "NS\r\n");
    EXPECT(f, "ms m 2 MR\r\nrr\r\n", "HD\r\n");
    EXPECT(f, "ms nope 2 MA\r\nxx\r\n", "NS\r\n");
    EXPECT(f, "ms m 2 MA s\r\naa\r\n", "HD s4\r\n");
    EXPECT(f, "ms m 2 MP\r\npp\r\n", "HD\r\n");
    EXPECT(f, "ms m 1 MS\r\nS\r\nmg m v\r\n", "HD\r\nVA 1\r\nS\r\n");
    EXPECT(f, "ms viv 2 MA N30\r\nvv\r\nmg viv v t\r\n", "HD\r\nVA 2 t30\r\nvv\r\n");
    /* invalid mode or flag: refused, data skipped */
    EXPECT(f, "ms m 2 MX\r\nhi\r\nmn\r\n", "CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n");
    EXPECT(f, "ms m 2 zz\r\nhi\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n");
    EXPECT(f, "ms m 2 Fx\r\nhi\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    EXPECT(f, "ms m 2 C\r\nhi\r\nmn\r\n",
           "CLIENT_ERROR bad token in command line format\r\nMN\r\n");
    EXPECT(f, "ms m 2 q zz\r\nhi\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n");
    /* no or bad length: nothing to skip */
    EXPECT(f, "ms m\r\nhi\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\nMN\r\n");
    EXPECT(f, "ms m x\r\nhi\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\nMN\r\n");
    /* CAS */
    EXPECT(f, "ms m 2 C1\r\nhi\r\n", "EX\r\n");
    EXPECT(f, "ms nope 2 C1\r\nhi\r\n", "NF\r\n");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ms m 2 C%llu\r\nok\r\n", (unsigned long long) cas_of(f, "m"));
    assert_string_equal(send_str(f, cmd), "HD\r\n");
    snprintf(cmd, sizeof cmd, "ms m 2 MA C%llu\r\n++\r\n", (unsigned long long) cas_of(f, "m"));
    assert_string_equal(send_str(f, cmd), "HD\r\n");
    EXPECT(f, "ms m 2 MA C1 Oz\r\n--\r\n", "EX Oz\r\n");
    EXPECT(f, "ms m 2 C1 I\r\nhi\r\n", "EX\r\n");
    EXPECT(f, "mg m v\r\n", "VA 4\r\nok++\r\n");
    /* base64 key */
    EXPECT(f, "ms Yg== 1 b k\r\nB\r\nget b\r\n", "HD kYg== b\r\nVALUE b 0 1\r\nB\r\nEND\r\n");
    /* an expired TTL stores nothing */
    EXPECT(f, "ms m 2 T-1\r\nhi\r\nmg m v\r\n", "HD\r\nEN\r\n");
    assert_int_equal(COUNTER(f, cas_badval), 2);
    assert_int_equal(COUNTER(f, cas_misses), 1);
}

static void test_meta_set_too_large(void **state)
{
    fx_t *f = *state;   /* item_size_max 1024 */
    char buf[2200];
    int hl = snprintf(buf, 64, "ms big 2000 Oz\r\n");
    memset(buf + hl, 'x', 2000);
    memcpy(buf + hl + 2000, "\r\nmn\r\n", 6);
    sendn(f, buf, (size_t) hl + 2006);
    check_reply(f, "SERVER_ERROR object too large for cache\r\nMN\r\n", 45, __LINE__);
    assert_int_equal(COUNTER(f, store_too_large), 1);
}

static void test_meta_delete(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "md nope\r\n", "NF\r\n");
    EXPECT(f, "md nope q\r\nmn\r\n", "NF\r\nMN\r\n");
    EXPECT(f, "md nope k Ox\r\n", "NF knope Ox\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\nmd d k Ox\r\n", "STORED\r\nHD kd Ox\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\nmd d q\r\nmn\r\nget d\r\n", "STORED\r\nMN\r\nEND\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\nmd d C1\r\n", "STORED\r\nEX\r\n");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "md d C%llu\r\n", (unsigned long long) cas_of(f, "d"));
    assert_string_equal(send_str(f, cmd), "HD\r\n");
    EXPECT(f, "set d 0 0 1\r\nx\r\nmd ZA== b\r\nget d\r\n", "STORED\r\nHD\r\nEND\r\n");
    EXPECT(f, "md d zz\r\n", "CLIENT_ERROR invalid flag\r\n");
    EXPECT(f, "md d I\r\n", "CLIENT_ERROR invalid flag\r\n");
}

static void test_meta_arithmetic(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "ma nope\r\n", "NF\r\n");
    EXPECT(f, "ma nope q\r\nmn\r\n", "NF\r\nMN\r\n");
    EXPECT(f, "ma nope v Ox k\r\n", "NF Ox knope\r\n");
    EXPECT(f, "ma n N0 J13 v\r\n", "VA 2\r\n13\r\n");
    EXPECT(f, "ma n N0 J13 v\r\n", "VA 2\r\n14\r\n");
    EXPECT(f, "ma n v t k Ox\r\n", "VA 2 t-1 kn Ox\r\n15\r\n");
    const char *r = send_str(f, "ma n c\r\n");
    unsigned long long c = 0;
    assert_int_equal(sscanf(r, "HD c%llu", &c), 1);
    assert_int_equal(c, cas_of(f, "n"));
    EXPECT(f, "ma n D10 v\r\n", "VA 2\r\n26\r\n");
    EXPECT(f, "ma n MD D100 v\r\n", "VA 1\r\n0\r\n");
    EXPECT(f, "ma n M+ v\r\n", "VA 1\r\n1\r\n");
    EXPECT(f, "ma n M- v\r\n", "VA 1\r\n0\r\n");
    EXPECT(f, "ma n MI D18446744073709551615 v\r\n", "VA 20\r\n18446744073709551615\r\n");
    EXPECT(f, "ma n v\r\n", "VA 1\r\n0\r\n");
    EXPECT(f, "ma n q v\r\nmn\r\n", "MN\r\n");
    EXPECT(f, "ma n T30 t v\r\n", "VA 1 t30\r\n2\r\n");
    EXPECT(f, "ma n t\r\n", "HD t30\r\n");
    EXPECT(f, "ma n C1 v\r\n", "EX\r\n");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ma n C%llu v\r\n", (unsigned long long) cas_of(f, "n"));
    assert_string_equal(send_str(f, cmd), "VA 1\r\n4\r\n");
    EXPECT(f, "ma bg== b N0 v k\r\n", "VA 1 kbg== b\r\n5\r\n");
    /* refusals */
    EXPECT(f, "set s 0 0 1\r\nx\r\nma s\r\n",
           "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    EXPECT(f, "ma n MX v\r\n", "CLIENT_ERROR invalid mode for ma M token\r\n");
    EXPECT(f, "ma n Dx v\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
    EXPECT(f, "ma n D18446744073709551616\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
    EXPECT(f, "ma n v v\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
    EXPECT(f, "ma n zz\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
}

static void test_meta_noop(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "mn\r\n", "MN\r\n");
    EXPECT(f, "mn x\r\n", "MN\r\n");
    EXPECT(f, "mn\n", "MN\r\n");
}

/* ---------------------------------------------------------------- stats */

static void test_stats(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "set a 0 0 1\r\nx\r\nget a b\r\n", "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    const char *r = send_str(f, "stats\r\n");
    const char *keys[] = {
        "STAT pid ", "STAT uptime ", "STAT time ", "STAT version 9.9.9-test\r\n",
        "STAT libevent ", "STAT pointer_size ", "STAT rusage_user ", "STAT rusage_system ",
        "STAT curr_connections 1\r\n", "STAT total_connections 1\r\n",
        "STAT rejected_connections 0\r\n", "STAT cmd_get 2\r\n", "STAT cmd_set 1\r\n",
        "STAT cmd_flush 0\r\n", "STAT cmd_touch 0\r\n", "STAT get_hits 1\r\n",
        "STAT get_misses 1\r\n", "STAT get_expired ", "STAT delete_misses ",
        "STAT delete_hits ", "STAT incr_misses ", "STAT incr_hits ", "STAT decr_misses ",
        "STAT decr_hits ", "STAT cas_misses ", "STAT cas_hits ", "STAT cas_badval ",
        "STAT touch_hits ", "STAT touch_misses ", "STAT store_too_large ",
        "STAT store_no_memory ", "STAT bytes_read ", "STAT bytes_written ",
        "STAT limit_maxbytes 0\r\n", "STAT threads 4\r\n", "STAT bytes ",
        "STAT curr_items 1\r\n", "STAT evictions ", "STAT expired ",
        "STAT protocol_errors 0\r\n", "STAT write_concern_failures 0\r\n",
        "STAT cluster_node_id ", "STAT cluster_peers 0\r\n", "STAT cluster_peers_alive 0\r\n",
        "STAT repl_deltas_sent ", "STAT repl_deltas_received ", "STAT repl_duplicates ",
        "STAT repl_gaps_detected ", "STAT repl_repaired ", "STAT repl_full_fetches ",
        "STAT repl_resyncs ", "STAT repl_resync_retries ", "STAT repl_bad_frames ",
        "STAT repl_bytes_sent ",
        "STAT repl_bytes_received ", "STAT repl_snapshot_sessions ", "STAT repl_tombstones ",
        "STAT repl_queue_overflows ", "STAT repl_acks_timed_out ",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_contains(r, keys[i]);
    size_t len = strlen(r);
    assert_true(len > 5 && strcmp(r + len - 5, "END\r\n") == 0);
    /* bytes: "set a 0 0 1\r\nx\r\nget a b\r\n" in, its replies out */
    assert_contains(r, "STAT bytes_read 25\r\n");
    assert_contains(r, "STAT bytes_written 29\r\n");
    assert_true(strstr(r, "STAT pid ") < strstr(r, "STAT cmd_get "));
    assert_true(strstr(r, "STAT cmd_get ") < strstr(r, "STAT repl_deltas_sent "));

    r = send_str(f, "stats settings\r\n");
    assert_contains(r, "STAT item_size_max 1048576\r\n");
    assert_contains(r, "STAT num_threads 4\r\n");
    assert_contains(r, "STAT maxbytes 0\r\n");
    assert_contains(r, "STAT cas_enabled yes\r\n");
    len = strlen(r);
    assert_true(strcmp(r + len - 5, "END\r\n") == 0);
    EXPECT(f, "stats bogus\r\n", "ERROR\r\n");
    EXPECT(f, "stats items\r\n", "END\r\n");
    EXPECT(f, "stats sizes\r\n", "STAT sizes_status disabled\r\nEND\r\n");
    EXPECT(f, "stats reset\r\n", "RESET\r\n");
    r = send_str(f, "stats  \r\n");
    assert_contains(r, "STAT cmd_get 0\r\n");
    assert_contains(r, "STAT curr_connections 1\r\n");
}

static void test_verbosity_version_and_quit(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "verbosity 1\r\n", "OK\r\n");
    assert_int_equal(atomic_load(&f->srv->verbosity), 1);
    EXPECT(f, "verbosity 1 noreply\r\nversion\r\n", "VERSION 9.9.9-test\r\n");
    EXPECT(f, "version x\r\n", "VERSION 9.9.9-test\r\n");
    EXPECT(f, "quit\r\nget a\r\n", "");
    assert_int_equal(f->rc, MC_CLOSE);
}

static void test_default_version_reads_as_memcached_1_6(void **state)
{
    fx_t *f = *state;
    mc_settings_t s = f->srv->s;
    s.version = NULL;
    mc_server_t *srv = mc_server_new(&s);
    assert_non_null(srv);
    char want[64];
    snprintf(want, sizeof want, "1.6.18-sessnode-%s", sn_version());
    assert_string_equal(srv->version, want);
    mc_server_destroy(&srv);
    mc_server_destroy(&srv);
    assert_null(mc_server_new(NULL));
    mc_settings_t none;
    memset(&none, 0, sizeof none);
    assert_null(mc_server_new(&none));
    assert_null(mc_conn_new(NULL));
    mc_conn_free(NULL);
}

static void test_first_byte_picks_the_protocol(void **state)
{
    fx_t *f = *state;
    /* 0x80 first: binary, never read as text (a binary NOOP here) */
    static const unsigned char noop[24] = {0x80, 0x0a};
    sendn(f, noop, sizeof noop);
    assert_true(f->reply_len == 0 || (unsigned char) f->reply[0] == 0x81);
    assert_int_equal(f->conn->proto, MC_PROTO_BINARY);
    /* text first: the connection stays text */
    mc_conn_t *text = mc_conn_new(f->srv);
    assert_non_null(text);
    mc_conn_free(f->conn);
    f->conn = text;
    EXPECT(f, "mn\r\n", "MN\r\n");
    /* its second byte, 0x0a, ends a line "\x80"; 22 zero bytes follow */
    sendn(f, noop, sizeof noop);
    check_reply(f, "ERROR\r\n", 7, __LINE__);
    assert_int_equal(f->conn->proto, MC_PROTO_TEXT);
    EXPECT(f, "\r\n", "ERROR\r\n");
    /* nothing in, nothing decided */
    mc_conn_t *idle = mc_conn_new(f->srv);
    assert_int_equal(mc_conn_process(idle, f->in, f->out), MC_OK);
    assert_int_equal(idle->proto, MC_PROTO_UNKNOWN);
    mc_conn_free(idle);
}

static void test_quit_with_arguments_closes(void **state)
{
    fx_t *f = *state;
    EXPECT(f, "get a\r\nquit extra\r\n", "END\r\n");
    assert_int_equal(f->rc, MC_CLOSE);
}

/* ----------------------------------------- the node's refusals as replies */

static void test_write_concern_not_met(void **state)
{
    fx_t *f = *state;   /* write_concern 1, no peer, 50 ms */
    const char *want = "SERVER_ERROR write not confirmed by peers: ";
    const char *r = send_str(f, "set a 0 0 1\r\nx\r\n");
    assert_true(strncmp(r, want, strlen(want)) == 0);
    assert_true(strcmp(r + strlen(r) - 2, "\r\n") == 0);
    /* applied locally all the same */
    EXPECT(f, "get a\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n");
    r = send_str(f, "ms m 1\r\nx\r\n");
    assert_true(strncmp(r, want, strlen(want)) == 0);
    EXPECT(f, "set b 0 0 1 noreply\r\nx\r\n", "");
    assert_int_equal(COUNTER(f, write_concern_failures), 3);
    /* reads need no acknowledgement */
    EXPECT(f, "mg b v\r\n", "VA 1\r\nx\r\n");
}

static void test_out_of_memory_storing(void **state)
{
    fx_t *f = *state;   /* memory_limit 64 KiB */
    size_t n = 100 << 10;
    char *buf = malloc(n + 64);
    assert_non_null(buf);
    int hl = snprintf(buf, 64, "set huge 0 0 %zu\r\n", n);
    memset(buf + hl, 'h', n);
    memcpy(buf + hl + n, "\r\n", 2);
    sendn(f, buf, (size_t) hl + n + 2);
    check_reply(f, "SERVER_ERROR out of memory storing object\r\n", 43, __LINE__);
    free(buf);
    assert_int_equal(COUNTER(f, store_no_memory), 1);
    EXPECT(f, "get huge\r\n", "END\r\n");
}

/* ------------------------------------------------------- chunked input */

/* Everything, fed one byte per call, answers exactly as when fed whole. */
static void test_byte_at_a_time_matches_whole(void **state)
{
    fx_t *f = *state;
    static const char script[] =
        "set a 1 0 5\r\nab\r\nc\r\n"
        "get a\r\n"
        "add a 0 0 1\r\nx\r\n"
        "append a 0 0 2\r\n!!\r\n"
        "incr n 1\r\n"
        "set n 0 0 1\r\n7\r\n"
        "incr n 3\r\n"
        "touch a 50\r\n"
        "gat 60 a n\r\n"
        "bogus\r\n"
        "set a 0 0 3\r\nabcd\r\n"
        "mg a v f t k Oop\r\n"
        "ms b 3 F2 T0\r\nb\nb\r\n"
        "mg b v f\r\n"
        "ma n v D5\r\n"
        "md n q\r\n"
        "mg n v\r\n"
        "delete a\r\n"
        "delete a\r\n"
        "verbosity 0\r\n"
        "version\r\n"
        "mn\r\n";
    sendn(f, script, sizeof script - 1);
    assert_int_equal(f->rc, MC_OK);
    char *whole = strdup(f->reply);
    assert_non_null(whole);
    assert_contains(whole, "MN\r\n");
    EXPECT(f, "flush_all\r\n", "OK\r\n");
    send_bytewise(f, script, sizeof script - 1);
    assert_int_equal(f->rc, MC_OK);
    assert_string_equal(f->reply, whole);
    assert_string_equal(whole,
                        "STORED\r\nVALUE a 1 5\r\nab\r\nc\r\nEND\r\nNOT_STORED\r\nSTORED\r\n"
                        "NOT_FOUND\r\nSTORED\r\n10\r\nTOUCHED\r\n"
                        "VALUE a 1 7\r\nab\r\nc!!\r\nVALUE n 0 2\r\n10\r\nEND\r\n"
                        "ERROR\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n"
                        "VA 7 f1 t60 ka Oop\r\nab\r\nc!!\r\nHD\r\nVA 3 f2\r\nb\nb\r\n"
                        "VA 2\r\n15\r\nEN\r\nDELETED\r\nNOT_FOUND\r\nOK\r\n"
                        "VERSION 9.9.9-test\r\nMN\r\n");
    free(whole);
}

/* --------------------------------------------------- randomized scripts */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: reproducible from the printed seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t) ((rng_state * 2685821657736338717ull) >> 33) % n;
}

static void gen_data(struct evbuffer *b, uint32_t n)
{
    static const char alphabet[] = "ab09 \r\n\t-+";
    for (uint32_t i = 0; i < n; i++)
        evbuffer_add(b, &alphabet[rnd(sizeof alphabet - 1)], 1);
}

static const char *gen_key(void)
{
    static char long_key[252];
    static const char *keys[] = {"k0", "k1", "k2", "k3", "n0", "n1"};
    if (rnd(40) == 0) {
        memset(long_key, 'L', 251);
        long_key[251] = '\0';
        return long_key;
    }
    return keys[rnd(sizeof keys / sizeof keys[0])];
}

static const char *gen_exptime(void)
{
    static const char *e[] = {"0", "0", "100", "-1", "x", "2592001"};
    return e[rnd(sizeof e / sizeof e[0])];
}

/* One command, well formed or not, appended to b. No gets, cas values,
 * stats or idle times: the script must answer the same on a fresh node. */
static void gen_command(struct evbuffer *b)
{
    static const char *stores[] = {"set", "add", "replace", "append", "prepend"};
    static const char *mg_flags[] = {" v", " f", " t", " k", " s", " q", " O7", " T50", " N30"};
    static const char *ms_flags[] = {" F3", " T0", " k", " q", " ME", " MA", " MP", " MR",
                                     " I", " Oz", " s", " N9"};
    static const char *ma_flags[] = {" N0", " J5", " D3", " v", " q", " MD", " t", " Ok"};
    struct evbuffer *cmd = evbuffer_new();
    uint32_t n = rnd(24);
    switch (rnd(14)) {
    case 0:
    case 1:
    case 2: {
        uint32_t len = rnd(12) ? rnd(40) : 2000;
        evbuffer_add_printf(cmd, "%s %s %u %s %u%s\r\n", stores[rnd(5)], gen_key(), rnd(9),
                            gen_exptime(), len, rnd(6) ? "" : " noreply");
        gen_data(cmd, len);
        evbuffer_add(cmd, "\r\n", 2);
        break;
    }
    case 3:
        evbuffer_add_printf(cmd, "%s %s %s\r\n", rnd(2) ? "get" : "get", gen_key(), gen_key());
        break;
    case 4:
        evbuffer_add_printf(cmd, "%s %s %s\r\n", rnd(2) ? "gat" : "touch", gen_exptime(),
                            gen_key());
        break;
    case 5:
        evbuffer_add_printf(cmd, "%s %s %u%s\r\n", rnd(2) ? "incr" : "decr", gen_key(),
                            rnd(20), rnd(6) ? "" : " noreply");
        break;
    case 6:
        evbuffer_add_printf(cmd, "delete %s%s\r\n", gen_key(), rnd(4) ? "" : " noreply");
        break;
    case 7: {
        evbuffer_add_printf(cmd, "mg %s", gen_key());
        for (uint32_t i = 0; i < n % 5; i++)
            evbuffer_add_printf(cmd, "%s", mg_flags[rnd(sizeof mg_flags / sizeof mg_flags[0])]);
        evbuffer_add(cmd, "\r\n", 2);
        break;
    }
    case 8: {
        uint32_t len = rnd(30);
        evbuffer_add_printf(cmd, "ms %s %u", gen_key(), len);
        for (uint32_t i = 0; i < n % 4; i++)
            evbuffer_add_printf(cmd, "%s", ms_flags[rnd(sizeof ms_flags / sizeof ms_flags[0])]);
        evbuffer_add(cmd, "\r\n", 2);
        gen_data(cmd, len);
        evbuffer_add(cmd, "\r\n", 2);
        break;
    }
    case 9: {
        evbuffer_add_printf(cmd, "ma %s", gen_key());
        for (uint32_t i = 0; i < n % 4; i++)
            evbuffer_add_printf(cmd, "%s", ma_flags[rnd(sizeof ma_flags / sizeof ma_flags[0])]);
        evbuffer_add(cmd, "\r\n", 2);
        break;
    }
    case 10:
        evbuffer_add_printf(cmd, "md %s%s\r\n", gen_key(), rnd(2) ? " q" : "");
        break;
    case 11: {
        static const char *misc[] = {"mn\r\n", "version\r\n", "verbosity 1\r\n", "flush_all\r\n",
                                     "\r\n", "bogus x\r\n", "mn\n"};
        evbuffer_add_printf(cmd, "%s", misc[rnd(sizeof misc / sizeof misc[0])]);
        break;
    }
    default: {
        /* noise: a line of random printable bytes */
        for (uint32_t i = 0; i < n + 1; i++) {
            char ch = (char) (0x21 + rnd(94));
            evbuffer_add(cmd, &ch, 1);
        }
        evbuffer_add(cmd, "\r\n", 2);
    }
    }
    if (rnd(20) == 0) {
        /* corrupt one byte: a bad length, a bad data chunk, a split line */
        size_t len = evbuffer_get_length(cmd);
        unsigned char *p = evbuffer_pullup(cmd, -1);
        p[rnd((uint32_t) len)] = "x\r\n 9"[rnd(5)];
    }
    evbuffer_add_buffer(b, cmd);
    evbuffer_free(cmd);
}

/* Feeds `len` bytes in random pieces to a fresh connection; the output. */
static char *run_chunked(fx_t *f, const unsigned char *p, size_t len, bool whole, size_t *out_len)
{
    mc_conn_t *conn = mc_conn_new(f->srv);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    int rc = MC_OK;
    for (size_t i = 0; i < len && rc == MC_OK;) {
        size_t piece = whole ? len : 1 + rnd(rnd(4) ? 16 : 300);
        if (piece > len - i)
            piece = len - i;
        evbuffer_add(in, p + i, piece);
        i += piece;
        rc = mc_conn_process(conn, in, out);
    }
    *out_len = evbuffer_get_length(out);
    char *s = malloc(*out_len + 1);
    assert_non_null(s);
    evbuffer_remove(out, s, *out_len);
    s[*out_len] = '\0';
    evbuffer_free(in);
    evbuffer_free(out);
    mc_conn_free(conn);
    return s;
}

static void test_random_scripts_answer_alike_whole_and_in_pieces(void **state)
{
    fx_t *f = *state;
    const char *env = getenv("MC_TEXT_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t) time(NULL) ^ (uint64_t) getpid();
    if (!seed)
        seed = 1;
    printf("test_random_scripts: MC_TEXT_SEED=%llu\n", (unsigned long long) seed);
    rng_state = seed;
    for (int round = 0; round < 150; round++) {
        struct evbuffer *script = evbuffer_new();
        /* a text command first: the first byte picks the protocol */
        evbuffer_add(script, "mn\r\n", 4);
        for (int i = 0; i < 30; i++)
            gen_command(script);
        size_t len = evbuffer_get_length(script);
        const unsigned char *p = evbuffer_pullup(script, -1);
        mc_flush(f->srv, 0);
        size_t wl, cl;
        char *w = run_chunked(f, p, len, true, &wl);
        mc_flush(f->srv, 0);
        char *c = run_chunked(f, p, len, false, &cl);
        if (wl != cl || memcmp(w, c, wl) != 0) {
            fprintf(stderr, "round %d differs (MC_TEXT_SEED=%llu)\n", round,
                    (unsigned long long) seed);
            print_escaped("  script", (const char *) p, len);
            print_escaped("  whole ", w, wl);
            print_escaped("  pieces", c, cl);
            fail_msg("whole and chunked input answered differently");
        }
        free(w);
        free(c);
        evbuffer_free(script);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_set_get_round_trip_keeps_crlf_inside_value),
        T(test_gets_and_cas),
        T(test_add_and_replace),
        T(test_append_and_prepend),
        T(test_incr_and_decr),
        T(test_touch_gat_and_gats),
        T(test_delete),
        T(test_expired_exptime_deletes_and_still_stores),
        T(test_flush_all_now),
        T(test_flush_all_delayed_runs_on_tick),
        T(test_noreply_silences_every_reply),
        T(test_unknown_commands_get_error),
        T(test_bad_command_lines_are_refused),
        T(test_bad_data_chunk),
        T(test_data_block_split_across_calls),
        cmocka_unit_test_setup_teardown(test_oversize_value_is_swallowed, setup_small_items,
                                        teardown),
        T(test_key_over_250_bytes_is_refused),
        T(test_keys_with_control_characters),
        T(test_pipelined_commands_in_one_buffer),
        T(test_long_lines),
        T(test_long_line_with_newline_closes_too),
        T(test_huge_multi_get_is_refused_whole),
        T(test_meta_get),
        T(test_meta_set),
        cmocka_unit_test_setup_teardown(test_meta_set_too_large, setup_small_items, teardown),
        T(test_meta_delete),
        T(test_meta_arithmetic),
        T(test_meta_noop),
        T(test_stats),
        T(test_verbosity_version_and_quit),
        T(test_quit_with_arguments_closes),
        T(test_first_byte_picks_the_protocol),
        T(test_default_version_reads_as_memcached_1_6),
        cmocka_unit_test_setup_teardown(test_write_concern_not_met, setup_concern, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory_storing, setup_small_memory,
                                        teardown),
        T(test_byte_at_a_time_matches_whole),
        T(test_random_scripts_answer_alike_whole_and_in_pieces),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
