/*
 * test_curve.c - CurveZMQ on the bus (gossip/sn_curve.c and its use by the
 * transport), in one process.
 *
 * Keys: Z85 round trips and malformed keys refused. Lookup of a peer's key
 * by the `address` in its certificate: with or without tcp://, a host name
 * resolved, secret files and unrelated certificates skipped, a missing
 * directory. Loading: a missing file, a file that is no certificate, a
 * public certificate without its secret, a missing allow-list, and a
 * second allow-list directory in the same process are refused with a
 * message; the same directory is shared. Nodes: two nodes secured through
 * sn_config_t replicate (the second knows the first only by address); a
 * third whose certificate is not in the allow-list neither receives nor
 * injects, and the first counts the refusals; a node configured with a
 * certificate but no allow-list is refused.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <czmq.h>
#include <stdbool.h>

#include "sessnode.h"
#include "sn_curve.h"

static char tmp[64];

/* Writes DIR/NAME.cert and DIR/NAME.cert_secret with an optional address;
 * copies the public key into key (if not NULL). */
static void make_cert(const char *dir, const char *name, const char *address, char *key)
{
    zcert_t *c = zcert_new();
    assert_non_null(c);
    if (address)
        zcert_set_meta(c, SN_CURVE_META_ADDRESS, "%s", address);
    char path[256];
    snprintf(path, sizeof path, "%s/%s.cert", dir, name);
    assert_int_equal(zcert_save(c, path), 0);
    if (key)
        snprintf(key, SN_CURVE_KEY_TXT, "%s", zcert_public_txt(c));
    zcert_destroy(&c);
}

static void sub(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmp, name);
}

static int setup(void **state)
{
    (void) state;
    snprintf(tmp, sizeof tmp, "/tmp/sn-test-curve.XXXXXX");
    assert_non_null(mkdtemp(tmp));
    return 0;
}

static int teardown(void **state)
{
    (void) state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_keys_round_trip(void **state)
{
    (void) state;
    unsigned char bin[SN_CURVE_KEY_BIN], back[SN_CURVE_KEY_BIN];
    for (int i = 0; i < SN_CURVE_KEY_BIN; i++)
        bin[i] = (unsigned char) (i * 37 + 1);
    char txt[SN_CURVE_KEY_TXT];
    sn_curve_key_encode(bin, txt);
    assert_int_equal(strlen(txt), SN_CURVE_KEY_TXT - 1);
    assert_true(sn_curve_key_decode(txt, strlen(txt), back));
    assert_memory_equal(bin, back, sizeof bin);
    assert_false(sn_curve_key_decode(txt, strlen(txt) - 1, back));
    assert_false(sn_curve_key_decode("", 0, back));
}

static void test_key_for_address(void **state)
{
    (void) state;
    char dir[128], k1[SN_CURVE_KEY_TXT], k2[SN_CURVE_KEY_TXT], got[SN_CURVE_KEY_TXT];
    sub(dir, sizeof dir, "lookup");
    assert_int_equal(mkdir(dir, 0700), 0);
    make_cert(dir, "one", "127.0.0.1:7400", k1);
    make_cert(dir, "two", "tcp://localhost:7500", k2);
    make_cert(dir, "nameless", NULL, NULL);
    assert_true(sn_curve_key_for(dir, "tcp://127.0.0.1:7400", got));
    assert_string_equal(got, k1);
    assert_true(sn_curve_key_for(dir, "127.0.0.1:7400", got));
    assert_string_equal(got, k1);
    assert_true(sn_curve_key_for(dir, "tcp://127.0.0.1:7500", got));
    assert_string_equal(got, k2);
    assert_false(sn_curve_key_for(dir, "tcp://127.0.0.1:7401", got));
    assert_false(sn_curve_key_for(dir, "tcp://127.0.0.2:7400", got));
    char missing[128];
    sub(missing, sizeof missing, "no-such-dir");
    assert_false(sn_curve_key_for(missing, "127.0.0.1:7400", got));
    assert_false(sn_curve_key_for(NULL, "127.0.0.1:7400", got));
}

static void test_load_errors(void **state)
{
    (void) state;
    char dir[128], allow[128], other[128], path[256], err[512];
    sub(dir, sizeof dir, "load");
    sub(allow, sizeof allow, "load-allow");
    sub(other, sizeof other, "load-other");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(allow, 0700), 0);
    assert_int_equal(mkdir(other, 0700), 0);

    snprintf(path, sizeof path, "%s/absent.cert", dir);
    assert_null(sn_curve_new(path, allow, err, sizeof err));
    assert_non_null(strstr(err, "cannot read"));

    snprintf(path, sizeof path, "%s/garbage.cert", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("this is : not { a certificate\n\tat all\n", f);
    fclose(f);
    assert_null(sn_curve_new(path, allow, err, sizeof err));
    assert_non_null(strstr(err, "not a certificate"));

    /* a public certificate alone: a node cannot use it */
    zcert_t *c = zcert_new();
    snprintf(path, sizeof path, "%s/public.cert", dir);
    assert_int_equal(zcert_save_public(c, path), 0);
    zcert_destroy(&c);
    assert_null(sn_curve_new(path, allow, err, sizeof err));
    assert_non_null(strstr(err, "no secret key"));

    make_cert(dir, "good", NULL, NULL);
    snprintf(path, sizeof path, "%s/good.cert", dir);
    char absent_dir[160];
    snprintf(absent_dir, sizeof absent_dir, "%s/none", allow);
    assert_null(sn_curve_new(path, absent_dir, err, sizeof err));
    assert_non_null(strstr(err, "not a readable directory"));

    /* the secret file's own path works as well as the public one */
    char secret[300];
    snprintf(secret, sizeof secret, "%s_secret", path);
    sn_curve_t *a = sn_curve_new(secret, allow, err, sizeof err);
    assert_non_null(a);
    sn_curve_t *b = sn_curve_new(path, allow, err, sizeof err);
    assert_non_null(b);
    assert_string_equal(sn_curve_public_txt(a), sn_curve_public_txt(b));
    /* one ZAP handler per process: another directory is refused */
    assert_null(sn_curve_new(path, other, err, sizeof err));
    assert_non_null(strstr(err, "one per process"));
    sn_curve_destroy(&a);
    sn_curve_destroy(&b);
    assert_null(b);
    /* ...until no node uses the first */
    sn_curve_t *o = sn_curve_new(path, other, err, sizeof err);
    assert_non_null(o);
    sn_curve_destroy(&o);
}

/* ------------------------------------------------------------ nodes */

static bool bindable(int port)
{
    zsock_t *s = zsock_new(ZMQ_PAIR);
    bool ok = s && zsock_bind(s, "tcp://127.0.0.1:%d", port) == port;
    zsock_destroy(&s);
    return ok;
}

/* a port free with the next one (a node binds both) */
static int free_port(void)
{
    static int base;
    if (!base)
        base = 20000 + (int) (getpid() % 20000);
    for (;;) {
        base += 2;
        if (base > 60000)
            base = 20000;
        if (bindable(base) && bindable(base + 1))
            return base;
    }
}

static sn_node_t *secured_node(const char *name, int port, const char *peer, const char *cert,
                               const char *allow)
{
    char cluster[64];
    static char peer_buf[4][64];
    static int next;
    snprintf(cluster, sizeof cluster, "tcp://127.0.0.1:%d", port);
    const char *peers[2] = {NULL, NULL};
    if (peer) {
        char *p = peer_buf[next++ % 4];
        snprintf(p, 64, "%s", peer);
        peers[0] = p;
    }
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.name = name;
    cfg.cluster = cluster;
    cfg.peers = peers;
    cfg.heartbeat_ms = 50;
    cfg.curve_cert = cert;
    cfg.curve_allow = allow;
    sn_node_t *n = sn_node_new(&cfg);
    assert_non_null(n);
    assert_int_equal(sn_node_start(n), 0);
    return n;
}

static bool has_value(sn_node_t *n, const char *id, const char *want)
{
    char buf[64];
    size_t len;
    uint32_t flags;
    int rc = sn_node_get(n, id, strlen(id), "v", 1, buf, sizeof buf, &len, &flags);
    return rc == 0 && len == strlen(want) && memcmp(buf, want, len) == 0;
}

static bool wait_value(sn_node_t *n, const char *id, const char *want, int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        if (has_value(n, id, want))
            return true;
        usleep(20000);
    }
    return has_value(n, id, want);
}

static void put(sn_node_t *n, const char *id, const char *value)
{
    assert_int_equal(sn_node_create(n, id, strlen(id), 600), 0);
    assert_int_equal(sn_node_put(n, id, strlen(id), "v", 1, value, strlen(value), NULL), 0);
}

static void test_secured_nodes(void **state)
{
    (void) state;
    char keys[128], allow[128], acert[256], bcert[256], xcert[256], addr[64];
    sub(keys, sizeof keys, "node-keys");
    sub(allow, sizeof allow, "node-allow");
    assert_int_equal(mkdir(keys, 0700), 0);
    assert_int_equal(mkdir(allow, 0700), 0);
    int pa = free_port(), pb = free_port(), px = free_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", pa);
    make_cert(keys, "a", addr, NULL);
    make_cert(keys, "b", NULL, NULL);
    make_cert(keys, "x", NULL, NULL);
    snprintf(acert, sizeof acert, "%s/a.cert", keys);
    snprintf(bcert, sizeof bcert, "%s/b.cert", keys);
    snprintf(xcert, sizeof xcert, "%s/x.cert", keys);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' '%s/'", acert, bcert, allow);
    assert_int_equal(system(cmd), 0);

    /* a certificate without an allow-list would let anyone in */
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.cluster = "tcp://127.0.0.1:1";
    cfg.curve_cert = acert;
    assert_null(sn_node_new(&cfg));

    char seed[64];
    snprintf(seed, sizeof seed, "tcp://127.0.0.1:%d", pa);
    sn_node_t *a = secured_node("a", pa, NULL, acert, allow);
    sn_node_t *b = secured_node("b", pb, seed, bcert, allow);
    /* x is not in the allow-list; the same process shares its ZAP handler */
    sn_node_t *x = secured_node("x", px, seed, xcert, allow);
    put(a, "from-a", "hello");
    assert_true(wait_value(b, "from-a", "hello", 5000));
    put(b, "from-b", "back");
    assert_true(wait_value(a, "from-b", "back", 5000));
    put(x, "from-x", "intruder");
    put(a, "from-a-2", "again");
    assert_true(wait_value(b, "from-a-2", "again", 5000));
    usleep(500000);
    assert_false(has_value(a, "from-x", "intruder"));
    assert_false(has_value(b, "from-x", "intruder"));
    assert_false(has_value(x, "from-a", "hello"));
    assert_false(has_value(x, "from-a-2", "again"));
    sn_node_stats_t st;
    sn_node_stats(a, &st);
    assert_true(st.auth_refused > 0);
    assert_int_equal(st.peers_alive, 1);
    sn_node_stats(x, &st);
    assert_int_equal(st.peers_alive, 0);
    sn_node_destroy(&x);
    sn_node_destroy(&b);
    sn_node_destroy(&a);
}

int main(void)
{
    zsys_init();
    zsys_set_logstream(NULL);   /* zconfig's parse errors are expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_round_trip),
        cmocka_unit_test(test_key_for_address),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_secured_nodes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
