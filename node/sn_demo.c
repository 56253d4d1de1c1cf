/*
 * sn_demo.c - three embedded session stores replicating through encoded
 * deltas, in one process.
 *
 * Each store's delta sink encodes every local write with the wire codec and
 * queues the bytes for the two other stores; "delivering" decodes and
 * applies them. This is the path every replicated write takes; the ZeroMQ
 * transport between processes carries the same bytes. The demo shows a
 * session written on one node read on another, concurrent writes resolving
 * the same way everywhere, a logout winning over a concurrent update, and a
 * lost delta repaired by a full-state merge.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sessnode.h"
#include "sn_store.h"
#include "sn_wire.h"

#define NODES 3
#define QUEUE_MAX 256

typedef struct {
    uint8_t *bytes;
    size_t len;
} msg_t;

typedef struct {
    const char *name;
    sn_store_t *store;
    msg_t inbox[QUEUE_MAX];
    size_t queued;
} node_t;

static node_t nodes[NODES] = {{.name = "alpha"}, {.name = "beta"}, {.name = "gamma"}};

static void sink(const sn_delta_t *d, void *arg)
{
    node_t *from = arg;
    uint8_t *buf;
    size_t len;
    if (sn_wire_encode_delta(d, &buf, &len) != 0)
        return;
    for (int i = 0; i < NODES; i++) {
        node_t *to = &nodes[i];
        if (to == from || to->queued == QUEUE_MAX)
            continue;
        msg_t *m = &to->inbox[to->queued++];
        m->bytes = malloc(len);
        if (!m->bytes) {
            to->queued--;
            continue;
        }
        memcpy(m->bytes, buf, len);
        m->len = len;
    }
    free(buf);
}

static void copy_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    node_t *to = arg;
    uint8_t *buf;
    size_t len;
    if (sn_wire_encode_state(id, id_len, st, &buf, &len) != 0)
        return;
    sn_wire_state_t msg;
    if (sn_wire_decode_state(buf, len, &msg) == 0) {
        sn_store_merge(to->store, msg.id, msg.id_len, &msg.state);
        sn_wire_state_release(&msg);
    }
    free(buf);
}

/* Delivers node n's queue; `lose` drops the first message, as a lossy
 * network might. A delta that reveals the loss is repaired from its origin. */
static void deliver(node_t *n, bool lose)
{
    for (size_t i = 0; i < n->queued; i++) {
        msg_t *m = &n->inbox[i];
        sn_wire_delta_t msg;
        if (lose && i == 0) {
            printf("  (%s loses a delta of %zu bytes)\n", n->name, m->len);
        } else if (sn_wire_decode_delta(m->bytes, m->len, &msg) == 0) {
            int rc = sn_store_apply(n->store, &msg.delta);
            if (rc == SN_APPLY_NEED_FULL) {
                node_t *origin = &nodes[msg.delta.dot.node - 1];
                printf("  %s: delta %llu:%llu reveals a gap; fetching %.*s from %s\n", n->name,
                       (unsigned long long) msg.delta.dot.node,
                       (unsigned long long) msg.delta.dot.counter, (int) msg.delta.id_len,
                       msg.delta.id, origin->name);
                sn_store_export(origin->store, msg.delta.id, msg.delta.id_len, copy_state, n);
            }
            sn_wire_delta_release(&msg);
        }
        free(m->bytes);
    }
    n->queued = 0;
}

static void deliver_all(void)
{
    for (int i = 0; i < NODES; i++)
        deliver(&nodes[i], false);
}

static void show(node_t *n, const char *id, const char *attr)
{
    char buf[256];
    size_t len;
    int rc = sn_store_get(n->store, id, strlen(id), attr, strlen(attr), buf, sizeof buf - 1,
                          &len, NULL);
    if (rc == 0)
        printf("  %-6s %s.%s = \"%.*s\"\n", n->name, id, attr, (int) len, buf);
    else
        printf("  %-6s %s.%s: %s\n", n->name, id, attr, sn_strerror(rc));
}

static void show_all(const char *id, const char *attr)
{
    for (int i = 0; i < NODES; i++)
        show(&nodes[i], id, attr);
}

static int put(node_t *n, const char *id, const char *attr, const char *value)
{
    int rc = sn_store_put(n->store, id, strlen(id), attr, strlen(attr), value, strlen(value), 0,
                          true, 1800);
    if (rc)
        fprintf(stderr, "put on %s: %s\n", n->name, sn_strerror(rc));
    return rc;
}

int main(void)
{
    printf("sessnode %s demo: %d embedded stores replicating through encoded deltas\n\n",
           sn_version(), NODES);
    for (int i = 0; i < NODES; i++) {
        sn_store_options_t opt = {.node_id = (uint64_t) i + 1, .sink = sink, .sink_arg = &nodes[i]};
        nodes[i].store = sn_store_new(&opt);
        if (!nodes[i].store) {
            fprintf(stderr, "cannot create store\n");
            return 1;
        }
    }
    int rc = 0;

    printf("1. alpha logs user 42 in; the session is read on gamma\n");
    rc |= put(&nodes[0], "sess:42", "user", "alice");
    rc |= put(&nodes[0], "sess:42", "cart", "2 books");
    deliver_all();
    show_all("sess:42", "user");

    printf("\n2. beta and gamma set the cart at the same time; every node keeps the same one\n");
    rc |= put(&nodes[1], "sess:42", "cart", "3 books");
    rc |= put(&nodes[2], "sess:42", "cart", "a lamp");
    deliver_all();
    show_all("sess:42", "cart");

    printf("\n3. a lost delta is detected by the next one and repaired with the full session\n");
    rc |= put(&nodes[0], "sess:42", "theme", "dark");
    rc |= put(&nodes[0], "sess:42", "lang", "en");
    deliver(&nodes[1], true);
    deliver(&nodes[2], false);
    show(&nodes[1], "sess:42", "theme");

    printf("\n4. alpha logs the user out while beta, unaware, updates the cart: logout wins\n");
    sn_store_destroy_session(nodes[0].store, "sess:42", 7);
    rc |= put(&nodes[1], "sess:42", "cart", "4 books");
    deliver_all();
    show_all("sess:42", "user");

    printf("\n5. a login after the logout was seen recreates the session\n");
    rc |= put(&nodes[2], "sess:42", "user", "alice");
    deliver_all();
    show_all("sess:42", "user");

    uint64_t d[NODES];
    for (int i = 0; i < NODES; i++)
        sn_store_digest(nodes[i].store, "sess:42", 7, &d[i]);
    printf("\ndigests: %016llx %016llx %016llx (%s)\n", (unsigned long long) d[0],
           (unsigned long long) d[1], (unsigned long long) d[2],
           d[0] == d[1] && d[1] == d[2] ? "identical" : "DIFFERENT");
    if (d[0] != d[1] || d[1] != d[2])
        rc = 1;

    for (int i = 0; i < NODES; i++)
        sn_store_destroy(&nodes[i].store);
    return rc ? 1 : 0;
}
