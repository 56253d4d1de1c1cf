/*
 * fuzz_mc.c - libFuzzer target for the daemon's memcached engine
 * (daemon/mc_*.c): text and binary protocols, the first byte choosing as
 * for a real connection.
 *
 * One in-process node and engine serve every input (small items and a
 * small memory bound, flushed now and then, so a long run stays small);
 * each input is a fresh connection. It is fed in pieces whose sizes come
 * from the input itself, as a network would split it, and the output is
 * drained after every call. Properties, beyond "no crash, no leak, no
 * sanitizer report":
 *   - one call never leaves more than MC_OUT_HIGH plus one reply in the
 *     output;
 *   - once all input is in and the output drained, the engine has
 *     consumed every whole request: what stays is at most one partial
 *     request (the longest a line or a binary request may be);
 *   - a call that consumed nothing and answered nothing is not repeated,
 *     so a stuck engine shows as a leftover, not a hang.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "mc_proto.h"
#include "sessnode.h"

#define FUZZ_VALUE_MAX 4096
/* the longest partial request: a retrieval line (mc_text.c's
 * MC_GETLINE_MAX), or a storage line and its data block */
#define FUZZ_PARTIAL_MAX ((32u << 10) + FUZZ_VALUE_MAX + 64)
/* the largest single reply: a multi-get may repeat a key, but the engine
 * stops between requests, and one request's reply is bounded by the keys a
 * line can hold times the value size */
#define FUZZ_REPLY_MAX (MC_OUT_HIGH + ((32u << 10) / 2) * (FUZZ_VALUE_MAX + 300u))

static sn_node_t *node;
static mc_server_t *server;
static unsigned long runs;

static void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_mc: property broken: %s\n", what);
    abort();
}

static void teardown(void)
{
    mc_server_destroy(&server);
    sn_node_destroy(&node);
}

static void setup(void)
{
    char cluster[64];
    snprintf(cluster, sizeof cluster, "inproc://fuzz-mc-%d", (int) getpid());
    sn_config_t cfg;
    sn_config_init(&cfg);
    cfg.cluster = cluster;
    cfg.value_max = FUZZ_VALUE_MAX;
    cfg.memory_limit = 8u << 20;
    node = sn_node_new(&cfg);
    if (!node || sn_node_start(node) != 0)
        fuzz_fail("node start");
    mc_settings_t s = {0};
    s.node = node;
    s.item_size_max = FUZZ_VALUE_MAX;
    s.threads = 1;
    s.memory_limit = cfg.memory_limit;
    server = mc_server_new(&s);
    if (!server)
        fuzz_fail("mc_server_new");
    atexit(teardown);
}

/* Runs the engine once and empties the output. */
static int step(mc_conn_t *conn, struct evbuffer *in, struct evbuffer *out)
{
    int rc = mc_conn_process(conn, in, out);
    if (evbuffer_get_length(out) > FUZZ_REPLY_MAX)
        fuzz_fail("output past the high mark");
    evbuffer_drain(out, evbuffer_get_length(out));
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        setup();
    if (++runs % 512 == 0)
        sn_node_flush(node, NULL);
    mc_conn_t *conn = mc_conn_new(server);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    if (!conn || !in || !out)
        fuzz_fail("allocation");
    mc_server_conn_opened(server);

    /* piece sizes from a generator seeded by the input */
    uint32_t seed = (uint32_t) size;
    for (size_t i = 0; i < size && i < 8; i++)
        seed = seed * 31u + data[i];
    int rc = MC_OK;
    size_t off = 0;
    while (off < size && rc == MC_OK) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 300;
        if (n > size - off)
            n = size - off;
        evbuffer_add(in, data + off, n);
        off += n;
        rc = step(conn, in, out);
    }
    /* the engine stops at the output mark; drained, it goes on */
    while (rc == MC_OK) {
        size_t before = evbuffer_get_length(in);
        rc = step(conn, in, out);
        if (evbuffer_get_length(in) == before)
            break;
    }
    if (rc == MC_OK && evbuffer_get_length(in) > FUZZ_PARTIAL_MAX)
        fuzz_fail("whole requests left unread");

    mc_server_conn_closed(server);
    mc_conn_free(conn);
    evbuffer_free(in);
    evbuffer_free(out);
    return 0;
}
