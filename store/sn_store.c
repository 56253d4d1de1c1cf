/*
 * sn_store.c - the session store.
 *
 * Layout. The store is split into shards (a power of two, 64 by default),
 * chosen by the high bits of a seeded 64-bit hash of the session id. Each
 * shard is a chained hash table behind its own mutex: readers of different
 * shards never meet, and a read holds one lock for a lookup and a copy. The
 * tables double when their load passes 1.
 *
 * A session is one block (sn_slab.h): a small header (chain link, last access,
 * hash, lengths), the id, and a canonical body holding everything that is
 * replicated except last_access:
 *
 *   varint nvv,  nvv   x (varint node index, varint counter) version vector
 *   varint ndv,  ndv   x (varint vv index, varint counter)   destroy vector
 *   varint meta (0 = none, else max_inactive + 1)
 *        [u64 stamp, varint vv index of origin]               if meta
 *   varint nattr, nattr x (varint name_len, name,
 *        stamp (with meta: zigzag varint of stamp - meta stamp; else u64),
 *        varint origin vv index, varint flags,
 *        varint value_len + 1 (0 = removed), value)
 *
 * The body is a function of the updates a replica has merged and nothing
 * else, so replicas compare bodies (and digests) byte for byte. Reads scan
 * the body in place; writes decode it into an sn_state_t, change that, and
 * encode a new block (as listpacks are rewritten in Redis): sessions are
 * small and written far less often than read, and one block per session
 * keeps the fixed cost per session near 90 bytes.
 *
 * Merge rules (why they converge is in store/README.md): VV, DV and
 * last_access join by pointwise max; meta and attributes survive only from a
 * side whose DV equals the joined DV (invalidation wins over concurrent
 * updates, while a write made after seeing a destroy carries that destroy in
 * its DV and survives); between survivors, the larger (stamp, origin) wins.
 * Stamps are hybrid logical clocks that observe every stamp merged, so a
 * write that follows another causally also wins over it.
 *
 * Memory: every block is accounted with its slab class (or malloc's usable
 * size beyond SN_SLAB_MAX), every bucket array with its size. Past the
 * limit, a write evicts from its own shard the least recently used of a
 * sample of alive sessions (Redis's approximate LRU); tombstones
 * are never evicted, because forgetting one could let a stale update
 * resurrect the session.
 */
#define _GNU_SOURCE
#include "sn_store.h"
#include "sn_slab.h"

#include <assert.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SN_SHARDS_DEFAULT 64
#define SN_SHARDS_MAX 4096
#define SN_EVICT_SAMPLES 16
#define SN_REHASH_STEP 16        /* old buckets rehashed per locked operation */
#define SN_MALLOC_HEADER 8       /* glibc's per-chunk size word */

typedef struct sn_entry {
    struct sn_entry *next;
    uint64_t last_access_ms;
    uint32_t body_len;
    uint8_t id_len;
    uint8_t alive;               /* body has meta */
    uint8_t klass;               /* slab class of the block; 0: malloc'd */
    uint8_t data[];              /* id, then body */
} sn_entry_t;

typedef struct {
    pthread_mutex_t lock;
    sn_entry_t **buckets;
    uint32_t mask;               /* buckets - 1 */
    sn_entry_t **old;            /* the table being rehashed into buckets, or NULL */
    uint32_t old_mask;
    uint32_t moved;              /* old buckets [0, moved) are rehashed */
    uint64_t count;              /* entries */
    uint64_t tombstones;
    bool removed_attrs;          /* some session may hold removed-attribute records */
    uint64_t bytes;              /* accounted: entries + bucket array */
    uint64_t rng;
    sn_store_stats_t stats;      /* per-shard counters, summed on demand */
} shard_t;

/* Node ids are 64-bit, but a session names only a few nodes and the store
 * meets few in its life: bodies store a small index into this table instead
 * (7 bytes saved per version-vector entry). Indexes are store-local, so
 * digests and exported states use the ids. Slots go from empty to filled
 * once and never change, so lookups need no lock; inserts take one. */
#define SN_NODES_MAX 4096
typedef struct {
    pthread_mutex_t lock;
    _Atomic uint32_t n;
    uint64_t ids[SN_NODES_MAX];
    _Atomic uint16_t slots[2 * SN_NODES_MAX];   /* index + 1; 0 = empty */
} node_table_t;

struct sn_store {
    sn_store_options_t opt;
    shard_t *shards;
    uint32_t shard_bits;
    _Atomic uint64_t seq;        /* this node's last dot */
    _Atomic uint64_t hlc;        /* last stamp issued or observed */
    _Atomic uint64_t bytes;      /* sum of shard bytes, for the limit */
    pthread_mutex_t gc_lock;     /* guards gc_stable */
    sn_vv_t gc_stable;
    node_table_t nodes;
    sn_slab_t *slab;             /* session blocks up to SN_SLAB_MAX; ours unless opt.slab */
};

/* ---------------------------------------------------------------- basics */

/* The coarse clock (a few ms of resolution) is read from memory without a
 * syscall or a TSC read: every get consults the clock, and last_access
 * needs no finer grain than expiry's seconds and the touch interval. */
static uint64_t default_clock(void *arg)
{
    (void) arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static uint64_t now_ms(sn_store_t *self)
{
    return self->opt.clock(self->opt.clock_arg);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

/* Seeded multiply-xorshift hash over 8-byte words; the seed is random per
 * store so that clients cannot aim keys at one chain. */
static uint64_t hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    return mix64(h ^ w ^ ((uint64_t) len << 56));
}

uint64_t sn_store_id_hash(const sn_store_t *self, const void *id, size_t id_len)
{
    return hash64(id, id_len, self->opt.hash_seed);
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return mix64(*s);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t hlc_next(sn_store_t *self, uint64_t floor)
{
    uint64_t wall = now_ms(self) << 16;
    uint64_t old = atomic_load(&self->hlc), next;
    do {
        next = max_u64(max_u64(old + 1, wall), floor + 1);
    } while (!atomic_compare_exchange_weak(&self->hlc, &old, next));
    return next;
}

static void hlc_observe(sn_store_t *self, uint64_t stamp)
{
    uint64_t old = atomic_load(&self->hlc);
    while (old < stamp && !atomic_compare_exchange_weak(&self->hlc, &old, stamp))
        ;
}

bool sn_id_valid(const void *id, size_t id_len)
{
    if (!id || id_len == 0 || id_len > SN_ID_MAX)
        return false;
    const uint8_t *p = id;
    for (size_t i = 0; i < id_len; i++)
        if (p[i] <= 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

/* ----------------------------------------------------- version vectors */

uint64_t sn_vv_get(const sn_vv_t *vv, uint64_t node)
{
    uint32_t lo = 0, hi = vv->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (vv->dots[mid].node < node)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < vv->n && vv->dots[lo].node == node ? vv->dots[lo].counter : 0;
}

static int vv_index(const sn_vv_t *vv, uint64_t node)
{
    for (uint32_t i = 0; i < vv->n; i++)
        if (vv->dots[i].node == node)
            return (int) i;
    return -1;
}

bool sn_vv_leq(const sn_vv_t *a, const sn_vv_t *b)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        while (j < b->n && b->dots[j].node < a->dots[i].node)
            j++;
        if (j == b->n || b->dots[j].node != a->dots[i].node ||
            b->dots[j].counter < a->dots[i].counter)
            return false;
    }
    return true;
}

static bool vv_equal(const sn_vv_t *a, const sn_vv_t *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->dots, b->dots, a->n * sizeof *a->dots) == 0);
}

bool sn_vv_valid(const sn_vv_t *vv)
{
    if (vv->n > SN_VV_MAX || (vv->n && !vv->dots))
        return false;
    for (uint32_t i = 0; i < vv->n; i++) {
        if (vv->dots[i].node == 0 || vv->dots[i].counter == 0)
            return false;
        if (i && vv->dots[i - 1].node >= vv->dots[i].node)
            return false;
    }
    return true;
}

/* out->dots must hold a->n + b->n entries. */
static void vv_join(const sn_vv_t *a, const sn_vv_t *b, sn_vv_t *out)
{
    uint32_t i = 0, j = 0, n = 0;
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->dots[i].node < b->dots[j].node))
            out->dots[n++] = a->dots[i++];
        else if (i == a->n || b->dots[j].node < a->dots[i].node)
            out->dots[n++] = b->dots[j++];
        else {
            out->dots[n] = a->dots[i];
            out->dots[n++].counter = max_u64(a->dots[i++].counter, b->dots[j++].counter);
        }
    }
    out->n = n;
}

static int vv_alloc_join(const sn_vv_t *a, const sn_vv_t *b, sn_vv_t *out)
{
    out->n = 0;
    out->dots = malloc((a->n + b->n + 1) * sizeof *out->dots);
    if (!out->dots)
        return SN_ENOMEM;
    vv_join(a, b, out);
    return out->n > SN_VV_MAX ? SN_EINVAL : 0;
}

/* ------------------------------------------------------ GC knowledge */

static bool gc_covers(sn_store_t *self, const sn_vv_t *vv)
{
    pthread_mutex_lock(&self->gc_lock);
    bool yes = self->gc_stable.n && sn_vv_leq(vv, &self->gc_stable);
    pthread_mutex_unlock(&self->gc_lock);
    return yes;
}

/* A destroy vector every member is known to have collected no longer
 * invalidates anything: whatever was concurrent with it is gone everywhere,
 * and whatever came later must survive. */
static bool dv_collected(sn_store_t *self, const sn_vv_t *dv)
{
    return dv->n && gc_covers(self, dv);
}

/* Joins `stable` into what this store knows to be stable. */
static void gc_learn(sn_store_t *self, const sn_vv_t *stable)
{
    if (!stable->n)
        return;
    pthread_mutex_lock(&self->gc_lock);
    if (!sn_vv_leq(stable, &self->gc_stable)) {
        sn_vv_t joined;
        if (vv_alloc_join(&self->gc_stable, stable, &joined) == 0) {
            free(self->gc_stable.dots);
            self->gc_stable = joined;
        } else {
            free(joined.dots);
        }
    }
    pthread_mutex_unlock(&self->gc_lock);
}

/* A malloc'd copy of the stable vector (empty on failure). */
static sn_vv_t gc_copy(sn_store_t *self)
{
    sn_vv_t out = {0, NULL};
    pthread_mutex_lock(&self->gc_lock);
    if (self->gc_stable.n) {
        out.dots = malloc(self->gc_stable.n * sizeof(sn_dot_t));
        if (out.dots) {
            memcpy(out.dots, self->gc_stable.dots, self->gc_stable.n * sizeof(sn_dot_t));
            out.n = self->gc_stable.n;
        }
    }
    pthread_mutex_unlock(&self->gc_lock);
    return out;
}

/* ----------------------------------------------------------- node ids */

static uint32_t node_slot(uint64_t id)
{
    return (uint32_t) mix64(id) & (2 * SN_NODES_MAX - 1);
}

/* Index of `id`, or -1 if the table doesn't hold it. */
static int node_find(node_table_t *t, uint64_t id)
{
    for (uint32_t i = node_slot(id);; i = (i + 1) & (2 * SN_NODES_MAX - 1)) {
        uint16_t v = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (v == 0)
            return -1;
        if (t->ids[v - 1] == id)
            return v - 1;
    }
}

/* Index of `id`, adding it if needed; SN_EFULL past SN_NODES_MAX ids. */
static int node_intern(node_table_t *t, uint64_t id)
{
    int i = node_find(t, id);
    if (i >= 0)
        return i;
    pthread_mutex_lock(&t->lock);
    i = node_find(t, id);
    if (i < 0) {
        uint32_t n = atomic_load(&t->n);
        if (n == SN_NODES_MAX) {
            i = SN_EFULL;
        } else {
            t->ids[n] = id;
            atomic_store(&t->n, n + 1);
            uint32_t k = node_slot(id);
            while (atomic_load(&t->slots[k]))
                k = (k + 1) & (2 * SN_NODES_MAX - 1);
            atomic_store_explicit(&t->slots[k], (uint16_t) (n + 1), memory_order_release);
            i = (int) n;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return i;
}

size_t sn_store_node_ids(sn_store_t *self, uint64_t *out, size_t max)
{
    /* ids[] is append-only: each of the first n entries is set for good */
    uint32_t n = atomic_load(&self->nodes.n);
    size_t k = 0;
    for (uint32_t i = n; i > 0 && k < max; i--)
        out[k++] = self->nodes.ids[i - 1];
    return k;
}

/* Interns every node of `vv`, so that encoding it cannot fail. */
static int intern_vv(sn_store_t *self, const sn_vv_t *vv)
{
    for (uint32_t i = 0; i < vv->n; i++) {
        int rc = node_intern(&self->nodes, vv->dots[i].node);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------ body encoding */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t) v;
    return p;
}

/* Attribute stamps are kept as the signed distance from the meta stamp:
 * mostly a few bytes instead of eight. */
static uint64_t zigzag(uint64_t diff)
{
    return (diff << 1) ^ (uint64_t) -(int64_t) (diff >> 63);
}

static uint64_t unzigzag(uint64_t z)
{
    return (z >> 1) ^ (uint64_t) -(int64_t) (z & 1);
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t) (v >> (8 * i));
    return p;
}

/* The body is produced by this file alone, so its reader asserts rather
 * than checks. */
static uint64_t get_varint(const uint8_t **pp)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    int shift = 0;
    while (*p & 0x80) {
        v |= (uint64_t) (*p++ & 0x7f) << shift;
        shift += 7;
        assert(shift < 64);
    }
    v |= (uint64_t) *p++ << shift;
    *pp = p;
    return v;
}

static uint64_t get_u64(const uint8_t **pp)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t) p[i] << (8 * i);
    *pp = p + 8;
    return v;
}

static int name_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
    uint32_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;  /* an empty name may come as NULL */
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Encodes `st` (minus last_access); with out == NULL only measures. Every
 * origin must be in st->vv (checked by the callers' validation). With a
 * node table, nodes are written as their (interned) indexes; without one,
 * as ids: the canonical form digests are taken of. */
static size_t body_encode(node_table_t *nodes, const sn_state_t *st, uint8_t *out)
{
    uint8_t buf[10];
    size_t n = 0;
#define EMIT_VARINT(v) \
    do { if (out) out = put_varint(out, (v)); else n += varint_len(v); } while (0)
#define EMIT_U64(v) \
    do { if (out) out = put_u64(out, (v)); else n += 8; } while (0)
#define EMIT_BYTES(p, l) \
    do { if (out) { if (l) memcpy(out, (p), (l)); out += (l); } else n += (l); } while (0)
    (void) buf;
    EMIT_VARINT(st->vv.n);
    for (uint32_t i = 0; i < st->vv.n; i++) {
        if (nodes)
            EMIT_VARINT((uint64_t) node_find(nodes, st->vv.dots[i].node));
        else
            EMIT_U64(st->vv.dots[i].node);
        EMIT_VARINT(st->vv.dots[i].counter);
    }
    EMIT_VARINT(st->dv.n);
    for (uint32_t i = 0; i < st->dv.n; i++) {
        EMIT_VARINT((uint64_t) vv_index(&st->vv, st->dv.dots[i].node));
        EMIT_VARINT(st->dv.dots[i].counter);
    }
    if (st->has_meta) {
        EMIT_VARINT((uint64_t) st->max_inactive + 1);
        EMIT_U64(st->meta_stamp);
        EMIT_VARINT((uint64_t) vv_index(&st->vv, st->meta_origin));
    } else {
        EMIT_VARINT(0);
    }
    EMIT_VARINT(st->nattrs);
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        EMIT_VARINT(a->name_len);
        EMIT_BYTES(a->name, a->name_len);
        if (st->has_meta)
            EMIT_VARINT(zigzag(a->stamp - st->meta_stamp));
        else
            EMIT_U64(a->stamp);
        EMIT_VARINT((uint64_t) vv_index(&st->vv, a->origin));
        EMIT_VARINT(a->flags);
        EMIT_VARINT(a->removed ? 0 : (uint64_t) a->value_len + 1);
        if (!a->removed)
            EMIT_BYTES(a->value, a->value_len);
    }
#undef EMIT_VARINT
#undef EMIT_U64
#undef EMIT_BYTES
    return n;
}

static void state_free(sn_state_t *st)
{
    free(st->vv.dots);
    free(st->dv.dots);
    free(st->attrs);
    memset(st, 0, sizeof *st);
}

/* Decodes an entry into `st`; names and values point into the entry. Each
 * array gets `spare` extra slots for the write that follows. */
static int body_decode(sn_store_t *self, const sn_entry_t *e, sn_state_t *st, uint32_t spare)
{
    memset(st, 0, sizeof *st);
    const uint8_t *p = e->data + e->id_len;
    st->last_access_ms = e->last_access_ms;
    st->vv.n = (uint32_t) get_varint(&p);
    st->vv.dots = malloc((st->vv.n + spare) * sizeof(sn_dot_t));
    if (!st->vv.dots)
        goto nomem;
    for (uint32_t i = 0; i < st->vv.n; i++) {
        st->vv.dots[i].node = self->nodes.ids[get_varint(&p)];
        st->vv.dots[i].counter = get_varint(&p);
    }
    st->dv.n = (uint32_t) get_varint(&p);
    st->dv.dots = malloc((st->dv.n + st->vv.n + spare) * sizeof(sn_dot_t));
    if (!st->dv.dots)
        goto nomem;
    for (uint32_t i = 0; i < st->dv.n; i++) {
        st->dv.dots[i].node = st->vv.dots[get_varint(&p)].node;
        st->dv.dots[i].counter = get_varint(&p);
    }
    uint64_t meta = get_varint(&p);
    if (meta) {
        st->has_meta = true;
        st->max_inactive = (uint32_t) (meta - 1);
        st->meta_stamp = get_u64(&p);
        st->meta_origin = st->vv.dots[get_varint(&p)].node;
    }
    st->nattrs = (uint32_t) get_varint(&p);
    st->attrs = malloc((st->nattrs + spare) * sizeof(sn_attr_t));
    if (!st->attrs)
        goto nomem;
    for (uint32_t i = 0; i < st->nattrs; i++) {
        sn_attr_t *a = &st->attrs[i];
        a->name_len = (uint32_t) get_varint(&p);
        a->name = p;
        p += a->name_len;
        a->stamp = st->has_meta ? st->meta_stamp + unzigzag(get_varint(&p)) : get_u64(&p);
        a->origin = st->vv.dots[get_varint(&p)].node;
        a->flags = (uint32_t) get_varint(&p);
        uint64_t vl = get_varint(&p);
        a->removed = vl == 0;
        a->value = vl ? p : NULL;
        a->value_len = vl ? (uint32_t) (vl - 1) : 0;
        p += a->value_len;
    }
    assert(p == e->data + e->id_len + e->body_len);
    return 0;
nomem:
    state_free(st);
    return SN_ENOMEM;
}

/* Skips the vectors: returns a pointer to the body's meta field. */
static const uint8_t *body_meta(const sn_entry_t *e)
{
    const uint8_t *p = e->data + e->id_len;
    uint64_t nvv = get_varint(&p);
    for (uint64_t i = 0; i < 2 * nvv; i++)
        get_varint(&p);
    uint64_t ndv = get_varint(&p);
    for (uint64_t i = 0; i < 2 * ndv; i++)
        get_varint(&p);
    return p;
}

/* Finds attribute `name` in the body without decoding it. */
static bool body_find_attr(const sn_entry_t *e, const uint8_t *name, uint32_t name_len,
                           sn_attr_t *out)
{
    const uint8_t *p = body_meta(e);
    bool meta = get_varint(&p) != 0;
    uint64_t meta_stamp = 0;
    if (meta) {
        meta_stamp = get_u64(&p);
        get_varint(&p);
    }
    uint64_t nattrs = get_varint(&p);
    for (uint64_t i = 0; i < nattrs; i++) {
        uint32_t nl = (uint32_t) get_varint(&p);
        const uint8_t *nm = p;
        p += nl;
        uint64_t stamp = meta ? meta_stamp + unzigzag(get_varint(&p)) : get_u64(&p);
        get_varint(&p);
        uint32_t flags = (uint32_t) get_varint(&p);
        uint64_t vl = get_varint(&p);
        uint32_t vlen = vl ? (uint32_t) (vl - 1) : 0;
        int c = name_cmp(nm, nl, name, name_len);
        if (c == 0) {
            if (!vl)
                return false;
            out->value = p;
            out->value_len = vlen;
            out->flags = flags;
            out->stamp = stamp;
            return true;
        }
        if (c > 0)
            return false;
        p += vlen;
    }
    return false;
}

static uint32_t body_max_inactive(const sn_entry_t *e)
{
    const uint8_t *p = body_meta(e);
    uint64_t meta = get_varint(&p);
    return meta ? (uint32_t) (meta - 1) : 0;
}

/* ------------------------------------------------------------- shards */

/* Blocks come from the slab (sn_slab.h: pre-faulted pages, no per-block
 * header) up to SN_SLAB_MAX, from malloc beyond. */
static sn_entry_t *block_alloc(sn_store_t *self, size_t need)
{
    uint8_t klass = sn_slab_class(need);
    sn_entry_t *e = klass ? sn_slab_alloc(self->slab, klass) : NULL;
    if (!e) {
        klass = 0;
        e = malloc(need);
    }
    if (e)
        e->klass = klass;
    return e;
}

static void block_free(sn_store_t *self, sn_entry_t *e)
{
    if (e && e->klass)
        sn_slab_free(self->slab, e, e->klass);
    else
        free(e);
}

static size_t block_usable(const sn_entry_t *e)
{
    return e->klass ? sn_slab_class_size(e->klass) : malloc_usable_size((void *) e);
}

/* What a block really costs: its slab class, or malloc's chunk (usable size
 * + its size word). Bucket arrays are accounted on their own. */
static size_t entry_cost(const sn_entry_t *e)
{
    return e->klass ? sn_slab_class_size(e->klass)
                    : malloc_usable_size((void *) e) + SN_MALLOC_HEADER;
}

/* An upper bound of entry_cost for a block of `need` bytes: its slab class,
 * or glibc's chunk, the request plus the size word rounded up to 16. */
static size_t cost_bound(size_t need)
{
    uint8_t klass = sn_slab_class(need);
    if (klass)
        return sn_slab_class_size(klass);
    return (need + SN_MALLOC_HEADER + 15) & ~(size_t) 15;
}

static shard_t *shard_of(sn_store_t *self, uint64_t h)
{
    return &self->shards[self->shard_bits ? h >> (64 - self->shard_bits) : 0];
}

static sn_entry_t **find_slot(shard_t *sh, uint32_t h, const void *id, size_t id_len)
{
    if (sh->old && (h & sh->old_mask) >= sh->moved) {
        for (sn_entry_t **pp = &sh->old[h & sh->old_mask]; *pp; pp = &(*pp)->next) {
            sn_entry_t *e = *pp;
            if (e->id_len == id_len && memcmp(e->data, id, id_len) == 0)
                return pp;
        }
    }
    /* not in the old table: here, or where it goes */
    sn_entry_t **pp = &sh->buckets[h & sh->mask];
    for (; *pp; pp = &(*pp)->next) {
        sn_entry_t *e = *pp;
        if (e->id_len == id_len && memcmp(e->data, id, id_len) == 0)
            return pp;
    }
    return pp;
}

static void account(sn_store_t *self, shard_t *sh, int64_t delta)
{
    sh->bytes += (uint64_t) delta;
    atomic_fetch_add(&self->bytes, (uint64_t) delta);
}

/* Incremental rehashing, as Redis's dict does it: a doubling allocates the
 * new table and moves the old one's chains a few buckets per locked
 * operation, so no write pays for the whole shard. Rehashing every chain at
 * once stalled the writer (and a replica's replication thread) for about
 * 0.7 ms per shard at 2,048 sessions, 64 shards in a row as they crossed the
 * same size together: the worst of a node's latency tail. A lookup looks in
 * the old table's bucket until it is moved; new entries go to the new one. */
static void rehash_step(sn_store_t *self, shard_t *sh, uint32_t buckets)
{
    if (!sh->old)
        return;
    for (; buckets && sh->moved <= sh->old_mask; buckets--, sh->moved++) {
        sn_entry_t *e = sh->old[sh->moved];
        while (e) {
            sn_entry_t *next = e->next;
            /* the hash is recomputed rather than stored: 4 bytes per
             * session against one hash per entry at each doubling */
            uint32_t h = (uint32_t) hash64(e->data, e->id_len, self->opt.hash_seed);
            e->next = sh->buckets[h & sh->mask];
            sh->buckets[h & sh->mask] = e;
            e = next;
        }
        sh->old[sh->moved] = NULL;
    }
    if (sh->moved > sh->old_mask) {
        account(self, sh, -(int64_t) (((size_t) sh->old_mask + 1) * sizeof(sn_entry_t *)));
        free(sh->old);
        sh->old = NULL;
    }
}

/* For the walks over every bucket (scans, expiry, collection). */
static void rehash_finish(sn_store_t *self, shard_t *sh)
{
    rehash_step(self, sh, UINT32_MAX);
}

/* Starts moving a shard (not rehashing now) to a table of `nb` buckets.
 * False without the memory: growth never evicts, past the limit chains
 * just get longer, which is still correct. */
static bool shard_resize(sn_store_t *self, shard_t *sh, uint32_t nb)
{
    size_t size = (size_t) nb * sizeof(sn_entry_t *);
    uint64_t before = atomic_fetch_add(&self->bytes, size);
    sn_entry_t **b = NULL;
    if (!self->opt.memory_limit || before + size <= self->opt.memory_limit)
        b = calloc(nb, sizeof *b);
    if (!b) {
        atomic_fetch_sub(&self->bytes, size);
        return false;
    }
    sh->bytes += size;  /* the store-wide counter was raised above */
    sh->old = sh->buckets;
    sh->old_mask = sh->mask;
    sh->moved = 0;
    sh->buckets = b;
    sh->mask = nb - 1;
    return true;
}

static void shard_grow(sn_store_t *self, shard_t *sh)
{
    if (sh->old)
        return;  /* the last doubling is still being rehashed */
    uint32_t nb = (sh->mask + 1) * 2;
    if (nb && shard_resize(self, sh, nb))
        rehash_step(self, sh, SN_REHASH_STEP);
}

static void unlink_entry(sn_store_t *self, shard_t *sh, sn_entry_t **slot)
{
    sn_entry_t *e = *slot;
    *slot = e->next;
    sh->count--;
    if (e->alive)
        sh->stats.sessions--;
    else
        sh->tombstones--;
    account(self, sh, -(int64_t) entry_cost(e));
    block_free(self, e);
}

/* Chain c of a shard's eviction walk: the new table's buckets, then the old
 * one's not yet moved. */
static sn_entry_t **chain_at(shard_t *sh, uint64_t c, uint32_t nb)
{
    return c < nb ? &sh->buckets[c] : &sh->old[sh->moved + (c - nb)];
}

static uint64_t chain_after(uint64_t c, uint64_t chains)
{
    return c + 1 == chains ? 0 : c + 1;
}

/* Starts loading the head of chain *c, and moves *c on to the next. */
static void prefetch_chain(shard_t *sh, uint64_t *c, uint64_t chains, uint32_t nb)
{
    const sn_entry_t *e = *chain_at(sh, *c, nb);
    if (e)
        __builtin_prefetch(e);
    *c = chain_after(*c, chains);
}

/* Evicts the least recently used of a sample of alive sessions in the shard,
 * sparing `keep`. Returns false if there is none to evict. */
static bool evict_one(sn_store_t *self, shard_t *sh, const sn_entry_t *keep)
{
    sn_entry_t **best = NULL;
    int seen = 0;
    uint32_t nb = sh->mask + 1, nold = sh->old ? sh->old_mask + 1 - sh->moved : 0;
    uint64_t chains = (uint64_t) nb + nold;
    uint64_t c = rng_next(&sh->rng) % chains;
    /* The sampled entries lie anywhere in the store's memory, a cache miss
     * each: the loads of the chains' heads are started SN_EVICT_SAMPLES
     * chains ahead of the walk, so that they overlap instead of following
     * one another (a full store spent most of its eviction time waiting). */
    uint64_t ahead = chains < SN_EVICT_SAMPLES ? chains : SN_EVICT_SAMPLES, next = c;
    for (uint64_t k = 0; k < ahead; k++)
        prefetch_chain(sh, &next, chains, nb);
    for (uint64_t k = 0; k < chains && seen < SN_EVICT_SAMPLES; k++) {
        if (k + ahead < chains)
            prefetch_chain(sh, &next, chains, nb);
        for (sn_entry_t **pp = chain_at(sh, c, nb); *pp; pp = &(*pp)->next) {
            if (!(*pp)->alive || *pp == keep)
                continue;
            seen++;
            if (!best || (*pp)->last_access_ms < (*best)->last_access_ms)
                best = pp;
        }
        c = chain_after(c, chains);
    }
    if (!best)
        return false;
    unlink_entry(self, sh, best);
    sh->stats.evictions++;
    return true;
}

/* Evicts one session from a shard other than `sh` (which the caller
 * holds), for a shard with nothing left to evict while the others hold the
 * memory: a few large sessions in a small store leave most shards empty.
 * Another shard is taken only if free (trylock), as two writers doing this
 * must not wait for each other. False if none gave one up. */
static bool evict_elsewhere(sn_store_t *self, shard_t *sh)
{
    uint32_t ns = 1u << self->shard_bits;
    uint32_t start = (uint32_t) rng_next(&sh->rng);
    for (uint32_t k = 0; k < ns; k++) {
        shard_t *o = &self->shards[(start + k) & (ns - 1)];
        if (o == sh || pthread_mutex_trylock(&o->lock) != 0)
            continue;
        bool evicted = evict_one(self, o, NULL);
        pthread_mutex_unlock(&o->lock);
        if (evicted)
            return true;
    }
    return false;
}

/* Reserves `need` bytes against the memory limit, evicting until they fit:
 * from this shard, then, once it has nothing left to evict, from the
 * others. The reservation is taken atomically on the store-wide counter,
 * so writers in different shards cannot both squeeze into the last free
 * bytes; the caller gives it back once the real cost is accounted. */
static int make_room(sn_store_t *self, shard_t *sh, size_t need, const sn_entry_t *keep)
{
    if (!self->opt.memory_limit || need == 0)
        return 0;
    if (need > self->opt.memory_limit) {
        /* could never fit: refuse without emptying the shard first */
        sh->stats.full_errors++;
        return SN_EFULL;
    }
    for (;;) {
        uint64_t before = atomic_fetch_add(&self->bytes, need);
        if (before + need <= self->opt.memory_limit)
            return 0;
        atomic_fetch_sub(&self->bytes, need);
        if (!evict_one(self, sh, keep) && !evict_elsewhere(self, sh)) {
            sh->stats.full_errors++;
            return SN_EFULL;
        }
    }
}

static void release_room(sn_store_t *self, size_t reserved)
{
    if (reserved)
        atomic_fetch_sub(&self->bytes, reserved);
}

/* Reserves a block of `need` bytes (header + id + body) that will replace
 * `old` (NULL: a new entry), evicting to stay under the memory limit;
 * *reserved is what commit_block gives back. The caller then fills the block
 * with commit_block, which cannot fail: a local write takes its dot only once
 * the block is in hand, so a failed write leaves no hole in this node's
 * sequence. */
static int reserve_block(sn_store_t *self, shard_t *sh, const sn_entry_t *old, size_t need,
                         sn_entry_t **out, size_t *reserved)
{
    size_t old_cost = old ? entry_cost(old) : 0;
    size_t est = cost_bound(need);
    *reserved = 0;
    if (self->opt.memory_limit && est > old_cost) {
        int rc = make_room(self, sh, est - old_cost, old);
        if (rc)
            return rc;
        *reserved = est - old_cost;
    }
    *out = block_alloc(self, need);
    if (*out)
        return 0;
    release_room(self, *reserved);
    *reserved = 0;
    return SN_ENOMEM;
}

/* Encodes `st` into `e` (reserved large enough) and puts it in place of the
 * entry for `id`, or inserts it. */
static void commit_block(sn_store_t *self, shard_t *sh, uint32_t h, const uint8_t *id,
                         size_t id_len, const sn_state_t *st, sn_entry_t *e, size_t reserved)
{
    /* eviction may have unlinked an entry before ours in the chain */
    sn_entry_t **slot = find_slot(sh, h, id, id_len);
    sn_entry_t *old = *slot;
    size_t body = body_encode(&self->nodes, st, NULL);
    assert(offsetof(sn_entry_t, data) + id_len + body <= block_usable(e));
    e->next = old ? old->next : NULL;
    e->last_access_ms = st->last_access_ms;
    e->body_len = (uint32_t) body;
    e->id_len = (uint8_t) id_len;
    e->alive = st->has_meta;
    memcpy(e->data, id, id_len);
    body_encode(&self->nodes, st, e->data + id_len);
    for (uint32_t i = 0; i < st->nattrs && !sh->removed_attrs; i++)
        sh->removed_attrs = st->attrs[i].removed;
    *slot = e;
    if (old) {
        if (old->alive)
            sh->stats.sessions--;
        else
            sh->tombstones--;
        account(self, sh, -(int64_t) entry_cost(old));
        block_free(self, old);
    } else {
        sh->count++;
    }
    if (e->alive)
        sh->stats.sessions++;
    else
        sh->tombstones++;
    account(self, sh, (int64_t) entry_cost(e));
    release_room(self, reserved);
    if (!old && sh->count > (uint64_t) sh->mask + 1)
        shard_grow(self, sh);
}

static size_t block_size(sn_store_t *self, const sn_state_t *st, size_t id_len)
{
    return offsetof(sn_entry_t, data) + id_len + body_encode(&self->nodes, st, NULL);
}

/* Puts `st` in place of the entry at *slot (or inserts it). On failure the
 * old entry stays as it was. */
static int store_state(sn_store_t *self, shard_t *sh, sn_entry_t **slot, uint32_t h,
                       const uint8_t *id, size_t id_len, const sn_state_t *st)
{
    int rc = intern_vv(self, &st->vv);
    if (rc)
        return rc;
    size_t need = block_size(self, st, id_len);
    if (need - offsetof(sn_entry_t, data) - id_len > UINT32_MAX)
        return SN_ETOOBIG;
    sn_entry_t *e;
    size_t reserved;
    rc = reserve_block(self, sh, *slot, need, &e, &reserved);
    if (rc == 0)
        commit_block(self, sh, h, id, id_len, st, e, reserved);
    return rc;
}

static bool entry_expired(const sn_entry_t *e, uint64_t now)
{
    if (!e->alive)
        return false;
    uint32_t mi = body_max_inactive(e);
    return mi && now >= e->last_access_ms + (uint64_t) mi * 1000u;
}

/* ------------------------------------------------------------ lifecycle */

sn_store_t *sn_store_new(const sn_store_options_t *options)
{
    if (!options || options->node_id == 0)
        return NULL;
    sn_store_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->opt = *options;
    if (!self->opt.value_max)
        self->opt.value_max = SN_VALUE_MAX_DEFAULT;
    if (!self->opt.shards)
        self->opt.shards = SN_SHARDS_DEFAULT;
    if (!self->opt.touch_interval_ms)
        self->opt.touch_interval_ms = 1000;
    if (!self->opt.clock)
        self->opt.clock = default_clock;
    uint32_t ns = self->opt.shards;
    if (ns > SN_SHARDS_MAX || (ns & (ns - 1))) {
        free(self);
        return NULL;
    }
    if (!self->opt.hash_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        self->opt.hash_seed = mix64((uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^
                                    (uint64_t) (uintptr_t) self) | 1;
    }
    while ((1u << self->shard_bits) < ns)
        self->shard_bits++;
    self->shards = calloc(ns, sizeof *self->shards);
    self->slab = options->slab ? options->slab : sn_slab_new();
    if (!self->shards || !self->slab) {
        free(self->shards);
        if (!options->slab)
            sn_slab_destroy(&self->slab);
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->gc_lock, NULL);
    pthread_mutex_init(&self->nodes.lock, NULL);
    for (uint32_t i = 0; i < ns; i++) {
        shard_t *sh = &self->shards[i];
        pthread_mutex_init(&sh->lock, NULL);
        sh->mask = 15;
        sh->buckets = calloc(16, sizeof *sh->buckets);
        sh->rng = self->opt.hash_seed + i;
        if (!sh->buckets) {
            self->opt.shards = i + 1;
            sn_store_destroy(&self);
            return NULL;
        }
        account(self, sh, 16 * sizeof *sh->buckets);
    }
    return self;
}

void sn_store_destroy(sn_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_store_t *self = *self_p;
    for (uint32_t i = 0; i < self->opt.shards; i++) {
        shard_t *sh = &self->shards[i];
        /* a table being rehashed: moved buckets are empty in the old one */
        sn_entry_t **tables[2] = {sh->buckets, sh->old};
        uint32_t sizes[2] = {sh->buckets ? sh->mask + 1 : 0, sh->old ? sh->old_mask + 1 : 0};
        for (int t = 0; t < 2; t++)
            for (uint32_t b = 0; b < sizes[t]; b++) {
                sn_entry_t *e = tables[t][b];
                while (e) {
                    sn_entry_t *next = e->next;
                    if (!e->klass || self->opt.slab)
                        block_free(self, e);  /* else they go with the pages below */
                    e = next;
                }
            }
        free(sh->buckets);
        free(sh->old);
        pthread_mutex_destroy(&sh->lock);
    }
    free(self->shards);
    if (!self->opt.slab)
        sn_slab_destroy(&self->slab);
    free(self->gc_stable.dots);
    pthread_mutex_destroy(&self->gc_lock);
    pthread_mutex_destroy(&self->nodes.lock);
    free(self);
    *self_p = NULL;
}

/* --------------------------------------------------------- local writes */

/* A locked session lookup, shared by every operation. */
typedef struct {
    shard_t *sh;
    uint32_t h;
    sn_entry_t **slot;
} lookup_t;

static lookup_t lock_lookup(sn_store_t *self, const void *id, size_t id_len)
{
    uint64_t h = hash64(id, id_len, self->opt.hash_seed);
    lookup_t l = {shard_of(self, h), (uint32_t) h, NULL};
    pthread_mutex_lock(&l.sh->lock);
    rehash_step(self, l.sh, SN_REHASH_STEP);
    l.slot = find_slot(l.sh, l.h, id, id_len);
    return l;
}

static void emit(sn_store_t *self, const sn_delta_t *d)
{
    if (self->opt.sink)
        self->opt.sink(d, self->opt.sink_arg);
}

/* Sets node's counter in `vv` (sorted), inserting the entry if needed;
 * vv->dots has a spare slot. */
static void place_dot(sn_vv_t *vv, sn_dot_t dot)
{
    uint32_t i = 0;
    while (i < vv->n && vv->dots[i].node < dot.node)
        i++;
    if (i < vv->n && vv->dots[i].node == dot.node) {
        vv->dots[i].counter = dot.counter;
        return;
    }
    memmove(&vv->dots[i + 1], &vv->dots[i], (vv->n - i) * sizeof(sn_dot_t));
    vv->dots[i] = dot;
    vv->n++;
}

static void set_meta(sn_store_t *self, sn_state_t *st, uint32_t max_inactive)
{
    st->has_meta = true;
    st->max_inactive = max_inactive;
    st->meta_stamp = hlc_next(self, st->meta_stamp);
    st->meta_origin = self->opt.node_id;
}

/* Inserts or replaces attribute `a` in sorted `st->attrs` (spare slot). */
static void put_attr(sn_state_t *st, const sn_attr_t *a)
{
    uint32_t i = 0;
    int c = 1;
    while (i < st->nattrs &&
           (c = name_cmp(st->attrs[i].name, st->attrs[i].name_len, a->name, a->name_len)) < 0)
        i++;
    if (i < st->nattrs && c == 0) {
        st->attrs[i] = *a;
        return;
    }
    memmove(&st->attrs[i + 1], &st->attrs[i], (st->nattrs - i) * sizeof(sn_attr_t));
    st->attrs[i] = *a;
    st->nattrs++;
}

static sn_attr_t *find_attr(sn_state_t *st, const void *name, size_t name_len)
{
    for (uint32_t i = 0; i < st->nattrs; i++)
        if (name_cmp(st->attrs[i].name, st->attrs[i].name_len, name, (uint32_t) name_len) == 0)
            return &st->attrs[i];
    return NULL;
}

enum { OP_CREATE, OP_PUT, OP_REMOVE, OP_DESTROY, OP_TOUCH_META, OP_ITEM };

/* Item modes past sn_item_mode_t's: memcached's incr and decr. */
enum { ITEM_INCR = 100, ITEM_DECR = 101 };

typedef struct {
    int op;
    const void *name;
    size_t name_len;
    const void *value;
    size_t value_len;
    uint32_t flags;
    bool create;
    uint32_t max_inactive;
    /* OP_ITEM */
    int mode;                   /* sn_item_mode_t or ITEM_INCR/ITEM_DECR */
    int64_t item_max_inactive;  /* -1: keep */
    uint64_t cas;               /* SN_ITEM_CAS: the expected stamp */
    uint64_t delta, initial;    /* incr/decr */
    uint64_t *cas_out;
    uint64_t *number_out;       /* incr/decr result */
} write_t;

/* memcached's rule for incr/decr: the whole value is decimal digits, at
 * most 20 of them, below 2^64. */
static bool parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        uint64_t d = (uint64_t) (p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static size_t format_u64(uint64_t v, char *buf)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

/* The checks and the new value of an item write, against the session as
 * it is under the lock. Sets w->value/value_len/flags (the value may be
 * *scratch, malloc'd, which the caller frees), and whether the write sets
 * the session's meta. */
static int item_prepare(sn_store_t *self, sn_state_t *st, bool alive_now, write_t *w,
                        uint8_t **scratch, char *number, bool *meta)
{
    sn_attr_t *a = alive_now ? find_attr(st, w->name, w->name_len) : NULL;
    bool exists = a && !a->removed;
    *meta = w->item_max_inactive >= 0;
    switch (w->mode) {
    case SN_ITEM_SET:
        return 0;
    case SN_ITEM_ADD:
        return exists ? SN_EEXISTS : 0;
    case SN_ITEM_REPLACE:
        return exists ? 0 : SN_ENOTFOUND;
    case SN_ITEM_CAS:
        if (!exists)
            return SN_ENOTFOUND;
        return a->stamp == w->cas ? 0 : SN_EEXISTS;
    case SN_ITEM_APPEND:
    case SN_ITEM_PREPEND: {
        if (!exists)
            return SN_ENOTFOUND;
        *meta = false;
        size_t total = (size_t) a->value_len + w->value_len;
        if (total > self->opt.value_max)
            return SN_ETOOBIG;
        uint8_t *buf = malloc(total ? total : 1);
        if (!buf)
            return SN_ENOMEM;
        const uint8_t *add = w->value;
        if (w->mode == SN_ITEM_APPEND) {
            memcpy(buf, a->value, a->value_len);
            if (w->value_len)
                memcpy(buf + a->value_len, add, w->value_len);
        } else {
            if (w->value_len)
                memcpy(buf, add, w->value_len);
            memcpy(buf + w->value_len, a->value, a->value_len);
        }
        *scratch = buf;
        w->value = buf;
        w->value_len = total;
        w->flags = a->flags;
        return 0;
    }
    case ITEM_INCR:
    case ITEM_DECR: {
        uint64_t v;
        if (!exists) {
            if (!w->create)
                return SN_ENOTFOUND;
            v = w->initial;
            w->flags = 0;
        } else {
            if (!parse_u64(a->value, a->value_len, &v))
                return SN_ENOTNUM;
            if (w->mode == ITEM_INCR)
                v += w->delta;   /* wraps at 2^64, as memcached's does */
            else
                v = v > w->delta ? v - w->delta : 0;
            w->flags = a->flags;
            *meta = false;
        }
        w->value = number;
        w->value_len = format_u64(v, number);
        if (w->number_out)
            *w->number_out = v;
        return 0;
    }
    default:
        return SN_EINVAL;
    }
}


/* Every local write: decode, change, reserve the new block, take the dot(s),
 * commit, emit. A write may be two updates (a destroy of an expired session
 * and the create that replaces it); each gets its own dot and delta. */
static int local_write(sn_store_t *self, const void *id, size_t id_len, const write_t *w)
{
    if (!self)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    bool puts = w->op == OP_PUT || w->op == OP_ITEM;
    if ((puts || w->op == OP_REMOVE) &&
        (w->name_len > SN_NAME_MAX || (w->name_len && !w->name)))
        return SN_EBADNAME;
    if (puts && w->value_len > self->opt.value_max)
        return SN_ETOOBIG;
    if (puts && w->value_len && !w->value)
        return SN_EINVAL;
    if (w->op == OP_ITEM && w->item_max_inactive > (int64_t) UINT32_MAX)
        return SN_EINVAL;

    uint64_t now = now_ms(self);
    const uint64_t me = self->opt.node_id;
    lookup_t l = lock_lookup(self, id, id_len);
    shard_t *sh = l.sh;
    sn_entry_t *e = *l.slot;
    sn_state_t st;
    sn_dot_t *ctx0_dots = NULL, *dw_gc = NULL;
    int rc = 0;
    if (e) {
        rc = body_decode(self, e, &st, 2);
    } else {
        memset(&st, 0, sizeof st);
        st.vv.dots = malloc(2 * sizeof(sn_dot_t));
        st.dv.dots = malloc(2 * sizeof(sn_dot_t));
        st.attrs = malloc(2 * sizeof(sn_attr_t));
        if (!st.vv.dots || !st.dv.dots || !st.attrs) {
            state_free(&st);
            rc = SN_ENOMEM;
        }
    }
    if (rc) {
        pthread_mutex_unlock(&sh->lock);
        return rc;
    }

    bool alive = e && e->alive;
    bool expired = e && entry_expired(e, now);
    bool may_create = w->op == OP_CREATE || (w->op == OP_PUT && w->create) ||
                      (w->op == OP_ITEM && (w->mode == SN_ITEM_SET || w->mode == SN_ITEM_ADD ||
                                            ((w->mode == ITEM_INCR || w->mode == ITEM_DECR) &&
                                             w->create)));
    bool creating = may_create && (!alive || expired);
    /* An item write computes its value here, under the lock, from the
     * session as it is: that is what makes add, cas and incr atomic. */
    write_t iw;
    uint8_t *scratch = NULL;
    char number[20];
    bool item_meta = false;
    if (w->op == OP_ITEM) {
        iw = *w;
        w = &iw;
        rc = item_prepare(self, &st, alive && !expired, &iw, &scratch, number, &item_meta);
        if (rc == 0 && iw.value_len > self->opt.value_max)
            rc = SN_ETOOBIG;
        if (rc)
            goto out;
    }
    bool sets_meta = creating || w->op == OP_TOUCH_META || item_meta;
    uint32_t new_max_inactive = w->op == OP_ITEM
        ? (w->item_max_inactive >= 0 ? (uint32_t) w->item_max_inactive
                                     : (creating ? 0 : st.max_inactive))
        : w->max_inactive;
    /* An expired session is replaced, not revived: destroy it first so that
     * replicas still holding it drop its attributes too. */
    bool destroying = w->op == OP_DESTROY || (creating && alive && expired);
    bool writing = w->op != OP_DESTROY;
    if (w->op == OP_CREATE && alive && !expired)
        rc = SN_EEXISTS;
    else if (!creating && (!alive || expired))
        rc = SN_ENOTFOUND;
    else if (w->op == OP_REMOVE) {
        sn_attr_t *a = find_attr(&st, w->name, w->name_len);
        if (!a || a->removed)
            rc = SN_ENOTFOUND;
    }
    if (rc)
        goto out;

    /* contexts: the VV before each update */
    ctx0_dots = malloc(2 * (st.vv.n + 1) * sizeof(sn_dot_t));
    if (!ctx0_dots) {
        rc = SN_ENOMEM;
        goto out;
    }
    sn_dot_t *ctx1_dots = ctx0_dots + st.vv.n + 1;
    memcpy(ctx0_dots, st.vv.dots, st.vv.n * sizeof(sn_dot_t));
    sn_vv_t ctx0 = {st.vv.n, ctx0_dots}, ctx1 = ctx0;

    st.last_access_ms = max_u64(st.last_access_ms, now);
    const uint64_t provisional = atomic_load(&self->seq) + 2;
    if (destroying) {
        place_dot(&st.vv, (sn_dot_t){me, provisional});
        memcpy(st.dv.dots, st.vv.dots, st.vv.n * sizeof(sn_dot_t));
        st.dv.n = st.vv.n;
        st.has_meta = false;
        st.max_inactive = 0;
        st.meta_stamp = 0;
        st.meta_origin = 0;
        st.nattrs = 0;
    }
    sn_attr_t attr = {0};
    if (writing) {
        place_dot(&st.vv, (sn_dot_t){me, provisional});
        if (sets_meta)
            set_meta(self, &st, new_max_inactive);
        if (w->op == OP_PUT || w->op == OP_REMOVE || w->op == OP_ITEM) {
            sn_attr_t *old = find_attr(&st, w->name, w->name_len);
            attr.name = w->name_len ? w->name : (const uint8_t *) "";
            attr.name_len = (uint32_t) w->name_len;
            attr.stamp = hlc_next(self, old ? old->stamp : 0);
            attr.origin = me;
            if (w->op != OP_REMOVE) {
                attr.value = w->value_len ? w->value : (const uint8_t *) "";
                attr.value_len = (uint32_t) w->value_len;
                attr.flags = w->flags;
            } else {
                attr.removed = true;
            }
            put_attr(&st, &attr);
        }
    }

    sn_entry_t *block;
    size_t reserved;
    rc = intern_vv(self, &st.vv);
    if (rc)
        goto out;
    /* Sized with the sequence as it is now; see below for the real one. */
    rc = reserve_block(self, sh, e, block_size(self, &st, id_len), &block, &reserved);
    if (rc)
        goto out;

    /* The block is ours: take the real dots. */
    sn_delta_t dd = {.kind = SN_DELTA_DESTROY, .id = id, .id_len = (uint32_t) id_len};
    sn_delta_t dw = {.kind = SN_DELTA_WRITE, .id = id, .id_len = (uint32_t) id_len};
    if (destroying) {
        dd.dot = (sn_dot_t){me, atomic_fetch_add(&self->seq, 1) + 1};
        place_dot(&st.dv, dd.dot);
        place_dot(&st.vv, dd.dot);
        dd.st.vv = ctx0;
        dd.st.last_access_ms = st.last_access_ms;
        ctx1.dots = ctx1_dots;
        memcpy(ctx1_dots, ctx0_dots, ctx0.n * sizeof(sn_dot_t));
        place_dot(&ctx1, dd.dot);
    }
    if (writing) {
        dw.dot = (sn_dot_t){me, atomic_fetch_add(&self->seq, 1) + 1};
        place_dot(&st.vv, dw.dot);
        dw.st.vv = ctx1;
        dw.st.dv = st.dv;
        dw.st.has_meta = sets_meta;
        dw.st.max_inactive = st.max_inactive;
        dw.st.meta_stamp = st.meta_stamp;
        dw.st.meta_origin = st.meta_origin;
        dw.st.last_access_ms = st.last_access_ms;
        dw.st.nattrs = (w->op == OP_PUT || w->op == OP_REMOVE || w->op == OP_ITEM) ? 1 : 0;
        dw.st.attrs = &attr;
    }
    /* Other writers may have taken dots meanwhile, and a counter's varint
     * can be a byte longer than the provisional one. The class's rounding
     * mostly absorbs it; otherwise the block grows. Only an out-of-memory
     * failure here leaves a sequence number unused. */
    size_t real = block_size(self, &st, id_len);
    if (real > block_usable(block)) {
        sn_entry_t *bigger = block_alloc(self, real);
        block_free(self, block);
        if (!bigger) {
            release_room(self, reserved);
            rc = SN_ENOMEM;
            goto out;
        }
        block = bigger;
    }
    /* one copy of the stable vector for the state sink and a new
     * session's delta */
    sn_vv_t gc = {0, NULL};
    if (self->opt.state_sink || (writing && !e)) {
        gc = gc_copy(self);
        dw_gc = gc.dots;
    }
    if (self->opt.state_sink) {
        /* before the commit: st's names and values may point into the old
         * entry, which the commit frees */
        st.gc = gc;
        self->opt.state_sink((const uint8_t *) id, (uint32_t) id_len, &st,
                             writing ? SN_DELTA_WRITE : SN_DELTA_DESTROY,
                             self->opt.state_sink_arg);
        st.gc = (sn_vv_t){0, NULL};
    }
    if (writing && !e)
        dw.st.gc = gc;
    commit_block(self, sh, l.h, id, id_len, &st, block, reserved);
    if (w->op == OP_ITEM && w->cas_out)
        *w->cas_out = attr.stamp;
    if (destroying) {
        sh->stats.writes++;
        emit(self, &dd);
    }
    if (writing) {
        sh->stats.writes++;
        emit(self, &dw);
    }
out:
    free(scratch);
    free(dw_gc);
    free(ctx0_dots);
    state_free(&st);
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

int sn_store_create(sn_store_t *self, const void *id, size_t id_len, uint32_t max_inactive)
{
    write_t w = {.op = OP_CREATE, .max_inactive = max_inactive};
    return local_write(self, id, id_len, &w);
}

int sn_store_put(sn_store_t *self, const void *id, size_t id_len, const void *name,
                 size_t name_len, const void *value, size_t value_len, uint32_t flags,
                 bool create, uint32_t max_inactive)
{
    write_t w = {.op = OP_PUT, .name = name, .name_len = name_len, .value = value,
                 .value_len = value_len, .flags = flags, .create = create,
                 .max_inactive = max_inactive};
    return local_write(self, id, id_len, &w);
}

int sn_store_item_store(sn_store_t *self, const void *id, size_t id_len, const void *name,
                        size_t name_len, sn_item_mode_t mode, const void *value,
                        size_t value_len, uint32_t flags, int64_t max_inactive, uint64_t cas,
                        uint64_t *cas_out)
{
    if ((unsigned) mode > SN_ITEM_CAS)
        return SN_EINVAL;
    write_t w = {.op = OP_ITEM, .name = name, .name_len = name_len, .value = value,
                 .value_len = value_len, .flags = flags, .mode = (int) mode,
                 .item_max_inactive = max_inactive, .cas = cas, .cas_out = cas_out};
    return local_write(self, id, id_len, &w);
}

int sn_store_item_arith(sn_store_t *self, const void *id, size_t id_len, const void *name,
                        size_t name_len, bool decr, uint64_t delta, bool create,
                        uint64_t initial, int64_t max_inactive, uint64_t *value_out,
                        uint64_t *cas_out)
{
    write_t w = {.op = OP_ITEM, .name = name, .name_len = name_len,
                 .mode = decr ? ITEM_DECR : ITEM_INCR, .create = create, .delta = delta,
                 .initial = initial, .item_max_inactive = create ? max_inactive : -1,
                 .cas_out = cas_out, .number_out = value_out};
    return local_write(self, id, id_len, &w);
}

int sn_store_remove(sn_store_t *self, const void *id, size_t id_len, const void *name,
                    size_t name_len)
{
    write_t w = {.op = OP_REMOVE, .name = name, .name_len = name_len};
    return local_write(self, id, id_len, &w);
}

int sn_store_destroy_session(sn_store_t *self, const void *id, size_t id_len)
{
    write_t w = {.op = OP_DESTROY};
    return local_write(self, id, id_len, &w);
}

/* Moves last_access to `now` and emits a touch delta when the access
 * crosses a touch_interval boundary: peers then lag at most one interval
 * behind, and a hot session costs at most one message per interval. */
static void access_entry(sn_store_t *self, shard_t *sh, sn_entry_t *e, uint64_t now)
{
    uint64_t before = e->last_access_ms;
    if (now <= before)
        return;
    e->last_access_ms = now;
    uint64_t iv = self->opt.touch_interval_ms;
    if (now / iv != before / iv) {
        sn_delta_t d = {.kind = SN_DELTA_TOUCH, .id = e->data, .id_len = e->id_len};
        d.st.last_access_ms = now;
        sh->stats.touches_sent++;
        emit(self, &d);
        if (self->opt.state_sink) {
            sn_state_t st;
            bool built = body_decode(self, e, &st, 0) == 0;
            if (built)
                st.gc = gc_copy(self);
            self->opt.state_sink(e->data, e->id_len, built ? &st : NULL, SN_DELTA_TOUCH,
                                 self->opt.state_sink_arg);
            if (built) {
                free(st.gc.dots);
                st.gc = (sn_vv_t){0, NULL};
                state_free(&st);
            }
        }
    }
}

int sn_store_touch(sn_store_t *self, const void *id, size_t id_len, int64_t max_inactive)
{
    if (max_inactive > (int64_t) UINT32_MAX)
        return SN_EINVAL;
    if (max_inactive >= 0) {
        write_t w = {.op = OP_TOUCH_META, .max_inactive = (uint32_t) max_inactive};
        return local_write(self, id, id_len, &w);
    }
    if (!self)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    uint64_t now = now_ms(self);
    lookup_t l = lock_lookup(self, id, id_len);
    sn_entry_t *e = *l.slot;
    int rc = SN_ENOTFOUND;
    if (e && e->alive && !entry_expired(e, now)) {
        access_entry(self, l.sh, e, now);
        rc = 0;
    }
    pthread_mutex_unlock(&l.sh->lock);
    return rc;
}

/* ---------------------------------------------------------------- reads */

static void count_expired(sn_store_t *self, lookup_t *l)
{
    l->sh->stats.expired++;
    unlink_entry(self, l->sh, l->slot);
}

static int read_attr(sn_store_t *self, const void *id, size_t id_len, const void *name,
                     size_t name_len, void *buf, size_t cap, void **heap, size_t *value_len,
                     uint32_t *flags, sn_item_fn fn, void *fn_arg)
{
    if (!self)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    if (name_len > SN_NAME_MAX || (name_len && !name))
        return SN_EBADNAME;
    uint64_t now = now_ms(self);
    lookup_t l = lock_lookup(self, id, id_len);
    sn_entry_t *e = *l.slot;
    int rc = SN_ENOTFOUND;
    sn_attr_t a;
    if (!e || !e->alive) {
        /* missing or destroyed: a miss */
    } else if (entry_expired(e, now)) {
        count_expired(self, &l);
    } else if (body_find_attr(e, name, (uint32_t) name_len, &a)) {
        rc = 0;
        if (fn) {
            sn_item_t it = {.value = a.value, .value_len = a.value_len, .flags = a.flags,
                            .cas = a.stamp, .max_inactive = body_max_inactive(e),
                            .last_access_ms = e->last_access_ms};
            fn(&it, fn_arg);
        } else if (heap) {
            *heap = malloc(a.value_len ? a.value_len : 1);
            if (!*heap)
                rc = SN_ENOMEM;
            else
                memcpy(*heap, a.value, a.value_len);
        } else if (a.value_len > cap) {
            rc = SN_ETRUNC;
            if (cap)
                memcpy(buf, a.value, cap);
        } else if (a.value_len) {
            memcpy(buf, a.value, a.value_len);
        }
        if (value_len)
            *value_len = a.value_len;
        if (flags)
            *flags = a.flags;
        access_entry(self, l.sh, e, now);
    } else {
        access_entry(self, l.sh, e, now);
    }
    pthread_mutex_unlock(&l.sh->lock);
    return rc;
}

int sn_store_get(sn_store_t *self, const void *id, size_t id_len, const void *name,
                 size_t name_len, void *buf, size_t cap, size_t *value_len, uint32_t *flags)
{
    if (cap && !buf)
        return SN_EINVAL;
    return read_attr(self, id, id_len, name, name_len, buf, cap, NULL, value_len, flags, NULL,
                     NULL);
}

int sn_store_item_get(sn_store_t *self, const void *id, size_t id_len, const void *name,
                      size_t name_len, sn_item_fn fn, void *arg)
{
    if (!fn)
        return SN_EINVAL;
    return read_attr(self, id, id_len, name, name_len, NULL, 0, NULL, NULL, NULL, fn, arg);
}

int sn_store_get_alloc(sn_store_t *self, const void *id, size_t id_len, const void *name,
                       size_t name_len, void **value, size_t *value_len, uint32_t *flags)
{
    if (!value)
        return SN_EINVAL;
    *value = NULL;
    return read_attr(self, id, id_len, name, name_len, NULL, 0, value, value_len, flags, NULL,
                     NULL);
}

bool sn_store_exists(sn_store_t *self, const void *id, size_t id_len)
{
    if (!self || !sn_id_valid(id, id_len))
        return false;
    uint64_t now = now_ms(self);
    lookup_t l = lock_lookup(self, id, id_len);
    sn_entry_t *e = *l.slot;
    bool yes = e && e->alive && !entry_expired(e, now);
    pthread_mutex_unlock(&l.sh->lock);
    return yes;
}

/* ---------------------------------------------------------------- merge */

static bool attr_wins(const sn_attr_t *a, const sn_attr_t *b)
{
    if (a->stamp != b->stamp)
        return a->stamp > b->stamp;
    if (a->origin != b->origin)
        return a->origin > b->origin;
    /* Same write seen twice, or hostile input: any total order will do. */
    if (a->removed != b->removed)
        return a->removed;
    if (a->flags != b->flags)
        return a->flags > b->flags;
    return name_cmp(a->value ? a->value : (const uint8_t *) "", a->value_len,
                    b->value ? b->value : (const uint8_t *) "", b->value_len) > 0;
}

/* Joins `l` (local, may be NULL) and `r` into `out`. Pointers in `out` refer
 * into both inputs. */
static int state_join(const sn_state_t *l, const sn_state_t *r, sn_state_t *out)
{
    static const sn_state_t empty;
    if (!l)
        l = &empty;
    memset(out, 0, sizeof *out);
    int rc = vv_alloc_join(&l->vv, &r->vv, &out->vv);
    if (rc == 0)
        rc = vv_alloc_join(&l->dv, &r->dv, &out->dv);
    out->attrs = malloc((l->nattrs + r->nattrs + 1) * sizeof(sn_attr_t));
    if (rc == 0 && !out->attrs)
        rc = SN_ENOMEM;
    if (rc) {
        state_free(out);
        return rc;
    }
    bool lok = vv_equal(&l->dv, &out->dv);
    bool rok = vv_equal(&r->dv, &out->dv);
    out->last_access_ms = max_u64(l->last_access_ms, r->last_access_ms);

    const sn_state_t *meta = NULL;
    if (lok && l->has_meta)
        meta = l;
    if (rok && r->has_meta) {
        sn_attr_t ma = {.stamp = meta ? meta->meta_stamp : 0, .origin = meta ? meta->meta_origin : 0};
        sn_attr_t mb = {.stamp = r->meta_stamp, .origin = r->meta_origin};
        if (!meta || attr_wins(&mb, &ma) ||
            (mb.stamp == ma.stamp && mb.origin == ma.origin && r->max_inactive > meta->max_inactive))
            meta = r;
    }
    if (meta) {
        out->has_meta = true;
        out->max_inactive = meta->max_inactive;
        out->meta_stamp = meta->meta_stamp;
        out->meta_origin = meta->meta_origin;
    }

    uint32_t i = 0, j = 0, ln = lok ? l->nattrs : 0, rn = rok ? r->nattrs : 0;
    while (i < ln || j < rn) {
        int c = i == ln ? 1 : j == rn ? -1
                : name_cmp(l->attrs[i].name, l->attrs[i].name_len, r->attrs[j].name,
                           r->attrs[j].name_len);
        if (c < 0)
            out->attrs[out->nattrs++] = l->attrs[i++];
        else if (c > 0)
            out->attrs[out->nattrs++] = r->attrs[j++];
        else {
            out->attrs[out->nattrs++] = attr_wins(&r->attrs[j], &l->attrs[i]) ? r->attrs[j]
                                                                                : l->attrs[i];
            i++;
            j++;
        }
    }
    if (out->nattrs > SN_ATTRS_MAX) {
        state_free(out);
        return SN_EINVAL;
    }
    return 0;
}

/* Checks what a peer sent before anything is merged: a state that breaks
 * the invariants the body encoding relies on is refused whole. */
static int state_check(sn_store_t *self, const sn_state_t *st)
{
    if (!sn_vv_valid(&st->vv) || !sn_vv_valid(&st->dv) || !sn_vv_leq(&st->dv, &st->vv) ||
        !sn_vv_valid(&st->gc))
        return SN_EINVAL;
    if (st->nattrs > SN_ATTRS_MAX || (st->nattrs && !st->attrs))
        return SN_EINVAL;
    if (st->has_meta && (st->meta_origin == 0 || sn_vv_get(&st->vv, st->meta_origin) == 0))
        return SN_EINVAL;
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        if (a->name_len > SN_NAME_MAX || (a->name_len && !a->name))
            return SN_EINVAL;
        if (!a->removed && (a->value_len > self->opt.value_max || (a->value_len && !a->value)))
            return SN_ETOOBIG;
        if (a->origin == 0 || sn_vv_get(&st->vv, a->origin) == 0)
            return SN_EINVAL;
        if (i && name_cmp(st->attrs[i - 1].name, st->attrs[i - 1].name_len, a->name,
                          a->name_len) >= 0)
            return SN_EINVAL;
    }
    return 0;
}

static void observe_stamps(sn_store_t *self, const sn_state_t *st)
{
    if (st->has_meta)
        hlc_observe(self, st->meta_stamp);
    for (uint32_t i = 0; i < st->nattrs; i++)
        hlc_observe(self, st->attrs[i].stamp);
}

/* A tombstone whose destroy every member has collected stands for nothing:
 * a session created afresh after the collection must not be invalidated by
 * a copy that a slower replica still holds. Only tombstones are treated so;
 * a live session keeps its destroy vector, because a replica that has not
 * learnt the stable vector yet would otherwise judge its updates concurrent
 * with the destroy and drop them. */
static bool collected_tombstone(sn_store_t *self, const sn_state_t *st)
{
    return !st->has_meta && (dv_collected(self, &st->dv) || gc_covers(self, &st->vv));
}

/* Joins `r` into the entry at l->slot, whose decoded state the caller
 * passes as `cur` (NULL: no entry; then `r` is inserted). `write` says
 * that `r` is a write delta's fragment: it carries the session's meta only
 * when the write made it, so without meta it is not a tombstone, and the
 * destroy vector it carries (the writer's, which a recreated session keeps)
 * being collected says nothing against it. */
static int join_into(sn_store_t *self, lookup_t *l, const uint8_t *id, size_t id_len,
                     const sn_state_t *cur, const sn_state_t *r, bool write)
{
    sn_state_t out;
    if (!write && collected_tombstone(self, r))
        return SN_APPLY_IGNORED;
    bool forgotten = cur && collected_tombstone(self, cur);
    if (forgotten) {
        /* a write that did not create the session was made on a copy
         * that had not seen the destroy: the destroy wins */
        if (write && !r->has_meta)
            return SN_APPLY_IGNORED;
        cur = NULL;
    }
    int rc = state_join(cur, r, &out);
    if (rc == 0) {
        if (!out.has_meta && out.dv.n == 0)
            /* Neither alive nor a tombstone. Against a collected tombstone
             * that is a write made concurrently with a destroy every member
             * has seen: the destroy wins, as it would against the tombstone
             * itself, and nothing is left to keep. Otherwise the input was
             * not a session. */
            rc = forgotten ? SN_APPLY_IGNORED : SN_EINVAL;
        else
            rc = store_state(self, l->sh, l->slot, l->h, id, id_len, &out);
        state_free(&out);
    }
    return rc;
}

int sn_store_apply(sn_store_t *self, const sn_delta_t *d)
{
    if (!self || !d)
        return SN_EINVAL;
    if (!sn_id_valid(d->id, d->id_len))
        return SN_EBADID;
    if (d->kind == SN_DELTA_TOUCH) {
        lookup_t l = lock_lookup(self, d->id, d->id_len);
        sn_entry_t *e = *l.slot;
        int rc = SN_APPLY_IGNORED;
        uint64_t now = now_ms(self);
        /* An expired session stays expired unless the touch itself is
         * recent enough to keep it: an access elsewhere that arrived late. */
        if (e && e->alive && entry_expired(e, now) &&
            now >= d->st.last_access_ms + (uint64_t) body_max_inactive(e) * 1000u)
            e = NULL;
        if (e && e->alive) {
            rc = d->st.last_access_ms > e->last_access_ms ? SN_APPLY_APPLIED : SN_APPLY_DUPLICATE;
            e->last_access_ms = max_u64(e->last_access_ms, d->st.last_access_ms);
        }
        pthread_mutex_unlock(&l.sh->lock);
        return rc;
    }
    if (d->kind != SN_DELTA_WRITE && d->kind != SN_DELTA_DESTROY)
        return SN_EINVAL;
    if (d->dot.node == 0 || d->dot.counter == 0 || !sn_vv_valid(&d->st.vv) ||
        sn_vv_get(&d->st.vv, d->dot.node) >= d->dot.counter)
        return SN_EINVAL;

    /* The fragment as a state: VV = context + dot. */
    sn_state_t r = d->st;
    sn_dot_t vv_dots[d->st.vv.n + 1];
    sn_vv_t dotvv = {1, (sn_dot_t *) &d->dot};
    r.vv.dots = vv_dots;
    vv_join(&d->st.vv, &dotvv, &r.vv);
    if (d->kind == SN_DELTA_DESTROY) {
        r.dv = r.vv;
        r.has_meta = false;
        r.nattrs = 0;
    } else {
        for (uint32_t i = 0; i < r.nattrs; i++)
            if (r.attrs[i].origin != d->dot.node)
                return SN_EINVAL;
        if (r.has_meta && r.meta_origin != d->dot.node)
            return SN_EINVAL;
    }
    int rc = state_check(self, &r);
    if (rc)
        return rc;
    observe_stamps(self, &r);
    gc_learn(self, &r.gc);

    lookup_t l = lock_lookup(self, d->id, d->id_len);
    sn_entry_t *e = *l.slot;
    sn_state_t cur;
    bool decoded = false;
    if (e) {
        rc = body_decode(self, e, &cur, 0);
        decoded = rc == 0;
        if (rc == 0) {
            if (sn_vv_get(&cur.vv, d->dot.node) >= d->dot.counter)
                rc = SN_APPLY_DUPLICATE;
            else if (d->kind == SN_DELTA_WRITE && !sn_vv_leq(&d->st.vv, &cur.vv))
                rc = SN_APPLY_NEED_FULL;
        }
    } else {
        pthread_mutex_lock(&self->gc_lock);
        bool collected = self->gc_stable.n && sn_vv_get(&self->gc_stable, d->dot.node) >= d->dot.counter;
        pthread_mutex_unlock(&self->gc_lock);
        if (collected)
            rc = SN_APPLY_DUPLICATE;
        else if (d->kind == SN_DELTA_WRITE && (d->st.vv.n != 0 || !r.has_meta))
            rc = SN_APPLY_NEED_FULL;
    }
    if (rc == 0) {
        /* cur's names and values point into the old block: the join is
         * encoded before store_state frees it */
        rc = join_into(self, &l, d->id, d->id_len, decoded ? &cur : NULL, &r,
                       d->kind == SN_DELTA_WRITE);
        if (rc == 0)
            rc = SN_APPLY_APPLIED;
        else if (rc == SN_APPLY_IGNORED)
            rc = SN_APPLY_DUPLICATE;
    }
    if (decoded)
        state_free(&cur);
    if (rc == SN_APPLY_APPLIED)
        l.sh->stats.applied++;
    else if (rc == SN_APPLY_DUPLICATE)
        l.sh->stats.duplicates++;
    else if (rc == SN_APPLY_NEED_FULL)
        l.sh->stats.need_full++;
    pthread_mutex_unlock(&l.sh->lock);
    return rc;
}

int sn_store_merge(sn_store_t *self, const void *id, size_t id_len, const sn_state_t *st)
{
    if (!self || !st)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    int rc = state_check(self, st);
    if (rc)
        return rc;
    if (!st->has_meta && st->dv.n == 0)
        return SN_EINVAL;
    observe_stamps(self, st);
    gc_learn(self, &st->gc);
    uint64_t now = now_ms(self);
    lookup_t l = lock_lookup(self, id, id_len);
    sn_entry_t *e = *l.slot;
    sn_state_t cur;
    bool decoded = false;
    if (!e) {
        if (collected_tombstone(self, st))
            rc = SN_APPLY_IGNORED;
        else if (st->has_meta && st->max_inactive &&
                 now >= st->last_access_ms + (uint64_t) st->max_inactive * 1000u)
            rc = SN_APPLY_IGNORED;
    } else {
        rc = body_decode(self, e, &cur, 0);
        decoded = rc == 0;
        if (rc == 0 && sn_vv_leq(&st->vv, &cur.vv)) {
            /* holds every update the peer has; only last_access may move */
            rc = st->last_access_ms > e->last_access_ms ? SN_APPLY_APPLIED : SN_APPLY_DUPLICATE;
            e->last_access_ms = max_u64(e->last_access_ms, st->last_access_ms);
        }
    }
    if (rc == 0) {
        rc = join_into(self, &l, id, id_len, decoded ? &cur : NULL, st, false);
        if (rc == 0)
            rc = SN_APPLY_APPLIED;
    }
    if (decoded)
        state_free(&cur);
    if (rc == SN_APPLY_APPLIED)
        l.sh->stats.merges++;
    pthread_mutex_unlock(&l.sh->lock);
    return rc;
}

/* How many sessions ahead of its merge a session's bucket is fetched; its
 * chain's first entry is fetched half as far ahead, once the bucket is in. */
#define SN_MERGE_AHEAD 8

/* Asks for the cache lines a merge of `it` will read: its bucket, or with
 * `chain` (once the bucket is in) the chain's first entry. */
static void prefetch_lookup(sn_store_t *self, const sn_store_item_t *it, bool chain)
{
    if (!sn_id_valid(it->id, it->id_len))
        return;  /* its merge refuses it */
    uint64_t h = hash64(it->id, it->id_len, self->opt.hash_seed);
    shard_t *sh = shard_of(self, h);
    pthread_mutex_lock(&sh->lock);
    sn_entry_t **tables[2] = {sh->buckets, sh->old};
    uint32_t masks[2] = {sh->mask, sh->old_mask};
    for (int k = 0; k < 2 && tables[k]; k++) {
        sn_entry_t **slot = &tables[k][(uint32_t) h & masks[k]];
        if (!chain)
            __builtin_prefetch(slot);
        else if (*slot)
            __builtin_prefetch(*slot);
    }
    pthread_mutex_unlock(&sh->lock);
}

void sn_store_merge_many(sn_store_t *self, const sn_store_item_t *items, size_t n, int *rc)
{
    if (!items || !rc)
        return;
    for (size_t i = 0; i < n + SN_MERGE_AHEAD; i++) {
        if (self && i < n)
            prefetch_lookup(self, &items[i], false);
        if (self && i >= SN_MERGE_AHEAD / 2 && i - SN_MERGE_AHEAD / 2 < n)
            prefetch_lookup(self, &items[i - SN_MERGE_AHEAD / 2], true);
        if (i >= SN_MERGE_AHEAD) {
            const sn_store_item_t *it = &items[i - SN_MERGE_AHEAD];
            rc[i - SN_MERGE_AHEAD] = sn_store_merge(self, it->id, it->id_len, it->st);
        }
    }
}

/* ------------------------------------------------- export, scan, digest */

static int visit(sn_store_t *self, sn_entry_t *e, const sn_vv_t *gc, sn_state_fn fn, void *arg)
{
    sn_state_t st;
    int rc = body_decode(self, e, &st, 0);
    if (rc)
        return rc;
    st.gc = *gc;
    fn(e->data, e->id_len, &st, arg);
    st.gc = (sn_vv_t){0, NULL};
    state_free(&st);
    return 0;
}

int sn_store_export(sn_store_t *self, const void *id, size_t id_len, sn_state_fn fn, void *arg)
{
    if (!self || !fn)
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    sn_vv_t gc = gc_copy(self);
    lookup_t l = lock_lookup(self, id, id_len);
    int rc = *l.slot ? visit(self, *l.slot, &gc, fn, arg) : SN_ENOTFOUND;
    pthread_mutex_unlock(&l.sh->lock);
    free(gc.dots);
    return rc;
}

static uint32_t rev32(uint32_t v)
{
    v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
    v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
    v = ((v >> 4) & 0x0f0f0f0fu) | ((v & 0x0f0f0f0fu) << 4);
    v = ((v >> 8) & 0x00ff00ffu) | ((v & 0x00ff00ffu) << 8);
    return (v >> 16) | (v << 16);
}

/* The bucket after `v` in reversed-bit order; 0 once the table is done. */
static uint32_t scan_next(uint32_t v, uint32_t mask)
{
    return rev32(rev32(v | ~mask) + 1);
}

/* A scan reads every session it passes, and the sessions sit in memory in
 * no relation to bucket order: each would stall it on a cache miss for its
 * bucket, one for its first line and more for its body. Those are asked for
 * ahead: a bucket SCAN_AHEAD buckets before it is read, its first session
 * half as far ahead, and that session's body the bucket before. */
#define SCAN_AHEAD 4
#define SCAN_BODY_LINES 16

static void prefetch_body(const sn_entry_t *e)
{
    size_t len = sizeof *e + e->id_len + e->body_len;
    if (len > SCAN_BODY_LINES * 64)
        len = SCAN_BODY_LINES * 64;  /* past that the hardware keeps up */
    for (size_t off = 64; off < len; off += 64)
        __builtin_prefetch((const char *) e + off);
}

/* The bucket cursor advances in reversed-bit order (Redis's dictScan), so a
 * table that doubles between calls neither skips buckets nor revisits more
 * than the ones that split. */
int sn_store_scan(sn_store_t *self, uint64_t *cursor, size_t max_visits, sn_state_fn fn, void *arg)
{
    if (!self || !cursor || !fn)
        return SN_EINVAL;
    uint32_t shard = (uint32_t) (*cursor >> 32);
    uint32_t v = (uint32_t) *cursor;
    size_t visits = 0;
    sn_vv_t gc = gc_copy(self);
    while (shard < self->opt.shards && visits < (max_visits ? max_visits : 1)) {
        shard_t *sh = &self->shards[shard];
        pthread_mutex_lock(&sh->lock);
        rehash_finish(self, sh);
        /* ahead[k] is the bucket k + 1 after v, or 0 past the end */
        uint32_t ahead[SCAN_AHEAD];
        uint32_t a = v;
        for (int k = 0; k < SCAN_AHEAD; k++) {
            a = k == 0 || a ? scan_next(a, sh->mask) : 0;  /* v = 0 starts the table */
            ahead[k] = a;
            if (a)
                __builtin_prefetch(&sh->buckets[a & sh->mask]);
        }
        do {
            const sn_entry_t *n;
            if (ahead[0] && (n = sh->buckets[ahead[0] & sh->mask]))
                prefetch_body(n);
            if (ahead[SCAN_AHEAD / 2 - 1] && (n = sh->buckets[ahead[SCAN_AHEAD / 2 - 1] & sh->mask]))
                __builtin_prefetch(n);
            for (sn_entry_t *e = sh->buckets[v & sh->mask]; e; e = e->next) {
                if (e->next)
                    __builtin_prefetch(e->next);
                if (visit(self, e, &gc, fn, arg) == 0)
                    visits++;
            }
            v = ahead[0];
            memmove(&ahead[0], &ahead[1], (SCAN_AHEAD - 1) * sizeof *ahead);
            a = ahead[SCAN_AHEAD - 2];
            ahead[SCAN_AHEAD - 1] = a ? scan_next(a, sh->mask) : 0;
            if (ahead[SCAN_AHEAD - 1])
                __builtin_prefetch(&sh->buckets[ahead[SCAN_AHEAD - 1] & sh->mask]);
        } while (v != 0 && visits < (max_visits ? max_visits : 1));
        pthread_mutex_unlock(&sh->lock);
        if (v == 0)
            shard++;
    }
    free(gc.dots);
    *cursor = ((uint64_t) shard << 32) | v;
    return shard < self->opt.shards;
}

int sn_store_digest(sn_store_t *self, const void *id, size_t id_len, uint64_t *digest)
{
    return sn_store_digest_vv(self, id, id_len, digest, NULL);
}

int sn_store_digest_vv(sn_store_t *self, const void *id, size_t id_len, uint64_t *digest,
                       sn_vv_t *vv)
{
    if (!self || (!digest && !vv))
        return SN_EINVAL;
    if (!sn_id_valid(id, id_len))
        return SN_EBADID;
    lookup_t l = lock_lookup(self, id, id_len);
    sn_entry_t *e = *l.slot;
    int rc = SN_ENOTFOUND;
    sn_state_t st;
    if (e && (rc = body_decode(self, e, &st, 0)) == 0) {
        if (digest) {
            /* the canonical form (node ids, not this store's indexes),
             * hashed with a fixed seed: digests are compared across nodes */
            size_t n = body_encode(NULL, &st, NULL);
            uint8_t *buf = malloc(n ? n : 1);
            if (buf) {
                body_encode(NULL, &st, buf);
                *digest = hash64(buf, n, 0x5e55a0de5e55a0deull);
                free(buf);
            } else {
                rc = SN_ENOMEM;
            }
        }
        if (vv && rc == 0) {
            *vv = st.vv;
            st.vv = (sn_vv_t) {0};
        }
        state_free(&st);
    }
    pthread_mutex_unlock(&l.sh->lock);
    return rc;
}

/* ------------------------------------------------------ expiry and GC */

size_t sn_store_expire(sn_store_t *self)
{
    if (!self)
        return 0;
    size_t removed = 0;
    uint64_t now = now_ms(self);
    for (uint32_t s = 0; s < self->opt.shards; s++) {
        shard_t *sh = &self->shards[s];
        pthread_mutex_lock(&sh->lock);
        rehash_finish(self, sh);
        for (uint32_t b = 0; b <= sh->mask; b++) {
            sn_entry_t **pp = &sh->buckets[b];
            while (*pp) {
                if (entry_expired(*pp, now)) {
                    lookup_t l = {sh, 0, pp};
                    count_expired(self, &l);
                    removed++;
                } else {
                    pp = &(*pp)->next;
                }
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
    return removed;
}

/* Collects one shard with the stable vector `known`. Alive sessions are
 * decoded only in a shard that may hold removed-attribute records, so a
 * pass over a store without tombstones or removals costs a walk of the
 * chains, not a decode of every session. */
static size_t gc_shard(sn_store_t *self, shard_t *sh, const sn_vv_t *known)
{
    size_t removed = 0;
    pthread_mutex_lock(&sh->lock);
    if (!sh->tombstones && !sh->removed_attrs) {
        pthread_mutex_unlock(&sh->lock);
        return 0;
    }
    rehash_finish(self, sh);
    bool scan_alive = sh->removed_attrs;
    bool removals_left = false;
    for (uint32_t b = 0; b <= sh->mask; b++) {
        sn_entry_t **pp = &sh->buckets[b];
        while (*pp) {
            sn_entry_t *e = *pp;
            sn_state_t st;
            if (e->alive && !scan_alive) {
                pp = &e->next;
                continue;
            }
            if (body_decode(self, e, &st, 0)) {
                pp = &e->next;
                continue;
            }
            bool covered = sn_vv_leq(&st.vv, known);
            bool dv_gone = st.dv.n && sn_vv_leq(&st.dv, known);
            if (!e->alive && (covered || dv_gone)) {
                state_free(&st);
                unlink_entry(self, sh, pp);
                sh->stats.gc_removed++;
                removed++;
                continue;
            }
            uint32_t n = st.nattrs;
            if (covered) {
                n = 0;
                for (uint32_t i = 0; i < st.nattrs; i++)
                    if (!st.attrs[i].removed)
                        st.attrs[n++] = st.attrs[i];
            }
            for (uint32_t i = 0; i < n && !removals_left; i++)
                removals_left = st.attrs[i].removed;
            if (n != st.nattrs) {
                st.nattrs = n;
                /* replaces *pp in place; the chain stays intact */
                store_state(self, sh, pp,
                            (uint32_t) hash64(e->data, e->id_len, self->opt.hash_seed), e->data,
                            e->id_len, &st);
            }
            state_free(&st);
            pp = &(*pp)->next;
        }
    }
    if (scan_alive)
        sh->removed_attrs = removals_left;
    pthread_mutex_unlock(&sh->lock);
    return removed;
}

size_t sn_store_gc_step(sn_store_t *self, const sn_vv_t *stable, uint32_t *shard)
{
    if (!self || !stable || !shard || !sn_vv_valid(stable) || *shard >= self->opt.shards)
        return 0;
    if (*shard == 0)
        gc_learn(self, stable);
    sn_vv_t known = gc_copy(self);
    size_t removed = gc_shard(self, &self->shards[*shard], &known);
    (*shard)++;
    free(known.dots);
    return removed;
}

size_t sn_store_gc(sn_store_t *self, const sn_vv_t *stable)
{
    size_t removed = 0;
    uint32_t shard = 0;
    if (!self)
        return 0;
    while (shard < self->opt.shards) {
        uint32_t before = shard;
        removed += sn_store_gc_step(self, stable, &shard);
        if (shard == before)
            break;  /* refused: invalid vector */
    }
    return removed;
}

/* ------------------------------------------------------------- queries */

void sn_store_stats(sn_store_t *self, sn_store_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!self)
        return;
    for (uint32_t s = 0; s < self->opt.shards; s++) {
        shard_t *sh = &self->shards[s];
        pthread_mutex_lock(&sh->lock);
        const sn_store_stats_t *c = &sh->stats;
        out->sessions += c->sessions;
        out->tombstones += sh->tombstones;
        out->bytes += sh->bytes;
        out->evictions += c->evictions;
        out->expired += c->expired;
        out->writes += c->writes;
        out->touches_sent += c->touches_sent;
        out->applied += c->applied;
        out->duplicates += c->duplicates;
        out->need_full += c->need_full;
        out->merges += c->merges;
        out->gc_removed += c->gc_removed;
        out->full_errors += c->full_errors;
        pthread_mutex_unlock(&sh->lock);
    }
}

int sn_store_reserve(sn_store_t *self, size_t sessions)
{
    if (!self)
        return SN_EINVAL;
    size_t per = sessions / self->opt.shards + 1;
    if (per > (size_t) 1 << 30)
        per = (size_t) 1 << 30;
    uint32_t nb = 16;
    while (nb < per)
        nb *= 2;  /* tables double past a load of 1, so this many never do */
    for (uint32_t i = 0; i < self->opt.shards; i++) {
        shard_t *sh = &self->shards[i];
        pthread_mutex_lock(&sh->lock);
        rehash_finish(self, sh);
        if (nb > sh->mask + 1 && shard_resize(self, sh, nb))
            rehash_finish(self, sh);
        pthread_mutex_unlock(&sh->lock);
    }
    return 0;
}

size_t sn_store_prefault(sn_store_t *self, size_t max_pages)
{
    return self ? sn_slab_prefault(self->slab, max_pages) : 0;
}

uint32_t sn_store_shards(const sn_store_t *self)
{
    return self ? self->opt.shards : 0;
}

uint64_t sn_store_seq(sn_store_t *self)
{
    return self ? atomic_load(&self->seq) : 0;
}
