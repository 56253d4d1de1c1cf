/*
 * sn_node.c - the public node: a session store and its replication actor.
 *
 * The store is shared by the caller's threads and the actor: session
 * operations run in the caller's thread against the store (sharded locks,
 * no network), and the store hands every local write's delta to the
 * transport's queue from inside the write. A write that asks for
 * acknowledgements marks its thread for the transport around the store
 * call, then waits for the peers' ACKs; reads never wait on anything but a
 * shard lock.
 *
 * A node's id names its writes in every version vector, so two processes
 * must never share one: unless the configuration sets it (tests do), each
 * node draws a random id when it is created, and a restarted process is a
 * new origin to its peers.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "sessnode.h"
#include "sn_store.h"
#include "sn_tier.h"
#include "sn_transport.h"

struct sn_node {
    sn_config_t cfg;
    char *name;
    char *cluster;
    char **peers;
    sn_store_t *store;
    sn_transport_t *transport;
    sn_tier_t *tier;            /* NULL: no memcached tier */
    bool started;
    bool tier_checked;          /* ready: the bootstrap question was settled */
};

/* The store's sink: every local write and touch goes to the peers. */
static void node_sink(const sn_delta_t *delta, void *arg)
{
    sn_node_t *node = arg;
    sn_transport_sink(delta, node->transport);
}

/* With a tier, the store's state sink: every local write, destroy and
 * touch, with the session's new state copied for the tier while the
 * writer (or reader) has it in cache. */
static void node_state_sink(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                            sn_delta_kind_t kind, void *arg)
{
    sn_node_t *node = arg;
    if (node->tier)
        sn_tier_capture(node->tier, id, id_len, st, kind == SN_DELTA_TOUCH);
}

/* A peer's change applied here (replication thread): a session it left
 * not alive has this node's tier copy dropped; then the application's
 * callback. */
static void node_on_change(const void *id, size_t id_len, void *arg)
{
    sn_node_t *node = arg;
    if (node->tier && !sn_store_exists(node->store, id, id_len))
        sn_tier_mark_gone(node->tier, id, id_len);
    if (node->cfg.on_change)
        node->cfg.on_change(id, id_len, node->cfg.on_change_arg);
}

static void node_more_stats(sn_node_stats_t *stats, void *arg)
{
    sn_node_t *node = arg;
    if (node->tier)
        sn_tier_stats(node->tier, stats);
}

SN_EXPORT void sn_config_init(sn_config_t *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->value_max = SN_VALUE_MAX_DEFAULT;
    cfg->heartbeat_ms = 100;
    cfg->repair_grace_ms = 20;
    cfg->join_timeout_ms = 3000;
    cfg->antientropy_ms = 60000;
    cfg->backlog_bytes = 64u << 20;
    cfg->queue_bytes = 256u << 20;
    cfg->write_timeout_ms = 1000;
    cfg->log_level = SN_LOG_INFO;
}

static uint64_t random_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof id, 0) != (ssize_t) sizeof id) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            id = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) ts.tv_sec ^ (uint64_t) getpid();
        }
    }
    return id;
}

static void free_strings(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

SN_EXPORT sn_node_t *sn_node_new(const sn_config_t *cfg)
{
    if (!cfg || !cfg->cluster)
        return NULL;
    sn_node_t *node = calloc(1, sizeof *node);
    if (!node)
        return NULL;
    node->cfg = *cfg;
    if (!node->cfg.node_id)
        node->cfg.node_id = random_id();
    if (!node->cfg.heartbeat_ms)
        node->cfg.heartbeat_ms = 100;
    if (!node->cfg.repair_grace_ms)
        node->cfg.repair_grace_ms = 20;
    if (!node->cfg.join_timeout_ms)
        node->cfg.join_timeout_ms = 3000;
    if (!node->cfg.write_timeout_ms)
        node->cfg.write_timeout_ms = 1000;
    size_t np = 0;
    while (cfg->peers && cfg->peers[np])
        np++;
    node->cluster = strdup(cfg->cluster);
    node->name = cfg->name ? strdup(cfg->name) : NULL;
    node->peers = calloc(np + 1, sizeof *node->peers);
    if (!node->cluster || (cfg->name && !node->name) || !node->peers)
        goto fail;
    for (size_t i = 0; i < np; i++)
        if (!(node->peers[i] = strdup(cfg->peers[i])))
            goto fail;
    node->cfg.cluster = node->cluster;
    node->cfg.name = node->name;
    node->cfg.peers = (const char *const *) node->peers;

    sn_transport_options_t to = {
        .node_id = node->cfg.node_id,
        .name = node->cfg.name,
        .cluster = node->cfg.cluster,
        .peers = node->cfg.peers,
        .join = node->cfg.join != 0,
        .heartbeat_ms = node->cfg.heartbeat_ms,
        .suspect_ms = node->cfg.suspect_ms,
        .dead_ms = node->cfg.dead_ms,
        .repair_grace_ms = node->cfg.repair_grace_ms,
        .join_timeout_ms = node->cfg.join_timeout_ms,
        .antientropy_ms = node->cfg.antientropy_ms,
        .backlog_bytes = node->cfg.backlog_bytes,
        .queue_bytes = node->cfg.queue_bytes,
        .curve_cert = node->cfg.curve_cert,
        .curve_allow = node->cfg.curve_allow,
        .drop_rate = node->cfg.test_drop_rate,
        .drop_digest_reps = node->cfg.test_drop_digest_reps,
        .on_change = cfg->tier || cfg->on_change ? node_on_change : NULL,
        .on_change_arg = node,
        .on_leave = node->cfg.on_leave,
        .on_leave_arg = node->cfg.on_leave_arg,
        .more_stats = node_more_stats,
        .more_stats_arg = node,
        .log = node->cfg.log,
        .log_arg = node->cfg.log_arg,
        .log_level = node->cfg.log_level,
    };
    node->transport = sn_transport_new(&to);
    if (!node->transport)
        goto fail;
    sn_store_options_t so = {
        .node_id = node->cfg.node_id,
        .memory_limit = node->cfg.memory_limit,
        .value_max = node->cfg.value_max,
        .sink = node_sink,
        .sink_arg = node,
        .state_sink = cfg->tier ? node_state_sink : NULL,
        .state_sink_arg = node,
    };
    node->store = sn_store_new(&so);
    if (!node->store)
        goto fail;
    if (cfg->tier) {
        sn_tier_options_t tio = {
            .servers = cfg->tier,
            .node_id = node->cfg.node_id,
            .queue_max = cfg->tier_queue,
            .queue_bytes = cfg->tier_queue_bytes,
            .read_through = cfg->tier_read_through != 0,
            .log = cfg->log,
            .log_arg = cfg->log_arg,
            .log_level = node->cfg.log_level,
        };
        node->tier = sn_tier_new(&tio, node->store);
        if (!node->tier)
            goto fail;
    }
    node->cfg.tier = NULL;   /* the caller's string: the tier keeps its copy */
    sn_transport_set_store(node->transport, node->store);
    return node;
fail:
    sn_transport_destroy(&node->transport);
    sn_store_destroy(&node->store);
    free(node->cluster);
    free(node->name);
    free_strings(node->peers);
    free(node);
    return NULL;
}

SN_EXPORT int sn_node_start(sn_node_t *node)
{
    if (!node)
        return SN_EINVAL;
    if (node->started)
        return SN_ESTATE;
    int rc = sn_transport_start(node->transport);
    if (rc == 0)
        node->started = true;
    return rc;
}

SN_EXPORT int sn_node_wait_ready(sn_node_t *node, uint32_t timeout_ms)
{
    if (!node)
        return SN_EINVAL;
    if (!node->started)
        return SN_ESTATE;
    int rc = sn_transport_wait_ready(node->transport, timeout_ms);
    if (rc || !node->tier)
        return rc;
    /* no peer gave the sessions: they come from the tier (the tier's
     * thread loads them while the node already replicates) */
    if (!node->tier_checked) {
        node->tier_checked = true;
        if (!sn_transport_had_donor(node->transport))
            sn_tier_bootstrap(node->tier);
        else
            return 0;
    }
    return sn_tier_bootstrap_done(node->tier, timeout_ms) || !sn_tier_bootstrap_wanted(node->tier)
               ? 0 : SN_ETIMEDOUT;
}

SN_EXPORT void sn_node_destroy(sn_node_t **node_p)
{
    if (!node_p || !*node_p)
        return;
    sn_node_t *node = *node_p;
    /* the tier's thread reads the store: it goes first, after writing what
     * it has queued */
    sn_tier_destroy(&node->tier, node->cfg.tier_flush_ms ? node->cfg.tier_flush_ms : 5000);
    /* the actor next: it applies to the store until it stops */
    sn_transport_destroy(&node->transport);
    sn_store_destroy(&node->store);
    free(node->cluster);
    free(node->name);
    free_strings(node->peers);
    free(node);
    *node_p = NULL;
}

/* Not exported: tests that link the library's objects inspect the store. */
sn_store_t *sn_node_store(sn_node_t *node);
sn_store_t *sn_node_store(sn_node_t *node)
{
    return node ? node->store : NULL;
}

SN_EXPORT uint64_t sn_node_id(const sn_node_t *node)
{
    return node ? node->cfg.node_id : 0;
}

/* Runs one store write with the options' write concern (NULL: none) around
 * it, and publishes what it queued (sn_transport_write_begin/_end). */
#define WITH_CONCERN(node, options, call)                                          \
    do {                                                                           \
        const sn_write_t *o_ = (options);                                          \
        uint32_t acks_ = o_ ? o_->acks : 0;                                        \
        if (acks_ && sn_transport_begin_acked((node)->transport, acks_))           \
            return SN_ENOMEM;                                                      \
        sn_transport_write_begin((node)->transport);                               \
        int rc_ = (call);                                                          \
        sn_transport_write_end((node)->transport);                                 \
        if (acks_) {                                                               \
            uint32_t to_ = o_->timeout_ms ? o_->timeout_ms                         \
                                          : (node)->cfg.write_timeout_ms;          \
            int wrc_ = sn_transport_end_acked((node)->transport, to_);             \
            if (rc_ == 0)                                                          \
                rc_ = wrc_;                                                        \
        }                                                                          \
        return rc_;                                                                \
    } while (0)

SN_EXPORT int sn_node_create(sn_node_t *node, const void *id, size_t id_len,
                             uint32_t max_inactive)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, NULL, sn_store_create(node->store, id, id_len, max_inactive));
}

SN_EXPORT int sn_node_put(sn_node_t *node, const void *id, size_t id_len, const void *name,
                          size_t name_len, const void *value, size_t value_len,
                          const sn_write_t *options)
{
    if (!node)
        return SN_EINVAL;
    sn_write_t none = {0};
    const sn_write_t *o = options ? options : &none;
    WITH_CONCERN(node, options,
                 sn_store_put(node->store, id, id_len, name, name_len, value, value_len,
                              o->flags, o->create != 0, o->max_inactive));
}

/* A read missed (SN_ENOTFOUND): with read-through on, and the session
 * itself missing here, its copies are fetched from the tier. True if the
 * session is here now, so the read is worth making again. */
static bool read_through(sn_node_t *node, int rc, const void *id, size_t id_len)
{
    if (rc != SN_ENOTFOUND || !node->tier || !node->cfg.tier_read_through ||
        !sn_id_valid(id, id_len) || sn_store_exists(node->store, id, id_len))
        return false;
    /* the copies are kept under their writers' ids: the nodes whose
     * writes this store has seen, latest first, name them */
    uint64_t ids[32];
    size_t n = sn_store_node_ids(node->store, ids, sizeof ids / sizeof ids[0]);
    return sn_tier_fetch(node->tier, id, id_len, ids, n) > 0;
}

/* A touch, made again after a read-through when it missed (the bracket
 * of WITH_CONCERN only marks the thread, so the wait may sit inside it). */
static int touch_through(sn_node_t *node, const void *id, size_t id_len, int64_t max_inactive)
{
    int rc = sn_store_touch(node->store, id, id_len, max_inactive);
    if (read_through(node, rc, id, id_len))
        rc = sn_store_touch(node->store, id, id_len, max_inactive);
    return rc;
}

SN_EXPORT int sn_node_get(sn_node_t *node, const void *id, size_t id_len, const void *name,
                          size_t name_len, void *buf, size_t cap, size_t *value_len,
                          uint32_t *flags)
{
    if (!node)
        return SN_EINVAL;
    int rc = sn_store_get(node->store, id, id_len, name, name_len, buf, cap, value_len, flags);
    if (read_through(node, rc, id, id_len))
        rc = sn_store_get(node->store, id, id_len, name, name_len, buf, cap, value_len, flags);
    return rc;
}

SN_EXPORT int sn_node_remove(sn_node_t *node, const void *id, size_t id_len, const void *name,
                             size_t name_len, const sn_write_t *options)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, options, sn_store_remove(node->store, id, id_len, name, name_len));
}

SN_EXPORT int sn_node_destroy_session(sn_node_t *node, const void *id, size_t id_len,
                                      const sn_write_t *options)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, options, sn_store_destroy_session(node->store, id, id_len));
}

SN_EXPORT int sn_node_touch(sn_node_t *node, const void *id, size_t id_len,
                            int64_t max_inactive)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, NULL, touch_through(node, id, id_len, max_inactive));
}

SN_EXPORT int sn_node_exists(sn_node_t *node, const void *id, size_t id_len)
{
    if (!node)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    if (sn_store_exists(node->store, id, id_len))
        return 1;
    return read_through(node, SN_ENOTFOUND, id, id_len) ? 1 : 0;
}

SN_EXPORT int sn_node_digest(sn_node_t *node, const void *id, size_t id_len, uint64_t *digest)
{
    if (!node)
        return SN_EINVAL;
    return sn_store_digest(node->store, id, id_len, digest);
}

SN_EXPORT void sn_node_stats(sn_node_t *node, sn_node_stats_t *stats)
{
    if (!stats)
        return;
    memset(stats, 0, sizeof *stats);
    if (!node)
        return;
    sn_transport_stats(node->transport, stats);
    if (node->tier)
        sn_tier_stats(node->tier, stats);
    sn_store_stats_t ss;
    sn_store_stats(node->store, &ss);
    stats->sessions = ss.sessions;
    stats->tombstones = ss.tombstones;
    stats->bytes = ss.bytes;
    stats->evictions = ss.evictions;
    stats->expired = ss.expired;
    stats->writes = ss.writes;
}

SN_EXPORT int sn_node_members(sn_node_t *node, sn_member_t *out, size_t max, size_t *count)
{
    if (!node)
        return SN_EINVAL;
    return sn_transport_members(node->transport, out, max, count);
}

/* ------------------------------------------------------------------ items */

SN_EXPORT int sn_node_item_store(sn_node_t *node, const void *id, size_t id_len,
                                 const void *name, size_t name_len, sn_item_mode_t mode,
                                 const void *value, size_t value_len, uint32_t flags,
                                 int64_t max_inactive, uint64_t cas, uint64_t *cas_out,
                                 const sn_write_t *options)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, options,
                 sn_store_item_store(node->store, id, id_len, name, name_len, mode, value,
                                     value_len, flags, max_inactive, cas, cas_out));
}

SN_EXPORT int sn_node_item_get(sn_node_t *node, const void *id, size_t id_len,
                               const void *name, size_t name_len, int64_t touch,
                               sn_item_fn fn, void *arg)
{
    if (!node || !fn)
        return SN_EINVAL;
    if (touch >= 0) {
        int rc = sn_node_touch(node, id, id_len, touch);
        if (rc)
            return rc;
    }
    int rc = sn_store_item_get(node->store, id, id_len, name, name_len, fn, arg);
    if (read_through(node, rc, id, id_len))
        rc = sn_store_item_get(node->store, id, id_len, name, name_len, fn, arg);
    return rc;
}

SN_EXPORT int sn_node_item_arith(sn_node_t *node, const void *id, size_t id_len,
                                 const void *name, size_t name_len, int decr, uint64_t delta,
                                 int create, uint64_t initial, int64_t max_inactive,
                                 uint64_t *value_out, uint64_t *cas_out,
                                 const sn_write_t *options)
{
    if (!node)
        return SN_EINVAL;
    WITH_CONCERN(node, options,
                 sn_store_item_arith(node->store, id, id_len, name, name_len, decr != 0, delta,
                                     create != 0, initial, max_inactive, value_out, cas_out));
}

typedef struct {
    uint8_t (*ids)[SN_ID_MAX];
    uint8_t *lens;
    size_t n, cap;
    bool failed;
} id_list_t;

static void collect_alive(const uint8_t *id, uint32_t id_len, const sn_state_t *st, void *arg)
{
    id_list_t *l = arg;
    if (!st->has_meta || l->failed)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        void *ids = realloc(l->ids, cap * sizeof *l->ids);
        if (ids)
            l->ids = ids;
        void *lens = realloc(l->lens, cap);
        if (lens)
            l->lens = lens;
        if (!ids || !lens) {
            l->failed = true;
            return;
        }
        l->cap = cap;
    }
    memcpy(l->ids[l->n], id, id_len);
    l->lens[l->n++] = (uint8_t) id_len;
}

/* A scan may visit a session twice, and its callback runs with a shard
 * locked, so the ids are gathered first and destroyed after, a chunk at a
 * time; a second visit's destroy simply finds nothing alive. */
SN_EXPORT int sn_node_flush(sn_node_t *node, uint64_t *count)
{
    if (!node)
        return SN_EINVAL;
    uint64_t destroyed = 0, cursor = 0;
    id_list_t l = {0};
    int more, rc = 0;
    do {
        l.n = 0;
        more = sn_store_scan(node->store, &cursor, 4096, collect_alive, &l);
        if (l.failed) {
            rc = SN_ENOMEM;
            break;
        }
        for (size_t i = 0; i < l.n; i++) {
            sn_transport_write_begin(node->transport);
            int r = sn_store_destroy_session(node->store, l.ids[i], l.lens[i]);
            sn_transport_write_end(node->transport);
            if (r == 0)
                destroyed++;
        }
    } while (more > 0);
    free(l.ids);
    free(l.lens);
    if (count)
        *count = destroyed;
    return rc;
}

SN_EXPORT int sn_node_leave(sn_node_t *node, uint32_t timeout_ms)
{
    if (!node)
        return SN_EINVAL;
    if (!node->started)
        return SN_ESTATE;
    return sn_transport_leave(node->transport, timeout_ms);
}
