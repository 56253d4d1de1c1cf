/*
 * bench_store.c - micro-benchmark of the session store against a plain hash
 * table (czmq's zhashx holding a malloc'd copy of each value).
 *
 * The reference is the least a store must do: map an id to its own copy of
 * the value and hand the bytes back on a read. Everything the store does
 * beyond that (version vectors, stamps, deltas, shard locks, the memory
 * accounting) shows up as the ratio between the two, measured in one process
 * on the same keys, values and access order.
 *
 * Phases, each timed with CLOCK_MONOTONIC and repeated:
 *   put     N sn_store_put(create) of new sessions, one attribute each,
 *           vs N zhashx_insert of a malloc'd copy. The first round runs on
 *           memory the process never touched, so it pays the page faults
 *           (slow on our VMs) and is reported on its own row; it is also
 *           the round that measures memory. Later rounds reuse freed memory
 *           (automatic heap trimming is off) and give the median.
 *   get     N random-order sn_store_get into a caller buffer vs
 *           zhashx_lookup + memcpy into the same kind of buffer.
 *   get xT  the same with T threads; zhashx_lookup writes to the table (a
 *           cached bucket index, even a rehash), so the reference is a
 *           zhashx behind one mutex, which is what sharing one would take.
 *   apply   the deltas of N puts, captured by the sink in decoded form,
 *           applied to an empty store vs zhashx_insert of the same values
 *           into an empty table.
 *   full    the second half of the N sessions put into a store limited to
 *           half the memory the first fill took and holding the first half
 *           (put untimed), so that every timed put evicts a session, vs
 *           zhashx_insert of the same sessions into a table holding the
 *           first half. Also printed: evictions per put, and how much
 *           longer such a put takes than one in the put phase.
 *
 * Memory per session comes from the store's own accounting and from RSS
 * growth (/proc/self/statm) across the first fill, after malloc_trim so that
 * the growth is the fill's own; the value size is subtracted.
 *
 * Any store error ends the run with exit status 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_common.h"
#include "sn_slab.h"
#include "sn_store.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ID_FMT "sess:%016llx"
#define ID_LEN 21                /* "sess:" + 16 hex digits */
#define ID_STRIDE 24             /* NUL-terminated for zhashx, 8-aligned */
#define ATTR_NAME "data"
#define MAX_INACTIVE 1800        /* a typical web session timeout, so the
                                    expiry check on reads is exercised */
#define MAX_REPEAT 64
#define CAP_DOTS 2               /* a new session's delta carries at most one */
#define CAP_ID 32
#define CAP_NAME 16

/* ------------------------------------------------------------ helpers */

/* Error names from the public table itself, so this program needs nothing
 * but the store to link. */
static const char *err_name(int rc)
{
    switch (rc) {
#define ERR_CASE_(name, value, msg) case (value): return "SN_" #name;
        SN_ERRNO_MAP(ERR_CASE_)
#undef ERR_CASE_
    default:
        return "unknown";
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        bench_die("out of memory (%zu bytes)", n);
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* Resident set size in bytes. */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f)
        bench_die("cannot open /proc/self/statm: %s", strerror(errno));
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        bench_die("cannot parse /proc/self/statm");
    fclose(f);
    return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

/* splitmix64's finalizer: a bijection, so distinct inputs give distinct ids. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* --------------------------------------------------------- parameters */

typedef struct {
    size_t sessions;
    size_t value_size;
    int repeat;
    int threads;
    uint32_t touch_interval;     /* 0: the store's default */
    uint64_t seed;
    const char *json;
} params_t;

static void usage(FILE *out)
{
    fputs("usage: bench_store [--sessions N] [--value-size BYTES] [--repeat R]\n"
          "                   [--threads T] [--seed S] [--json FILE]\n"
          "  --sessions N      sessions per phase (default 1000000; 10000 for a smoke run)\n"
          "  --value-size B    attribute value size in bytes (default 1024)\n"
          "  --repeat R        timed rounds per phase (default 5)\n"
          "  --threads T       threads for the concurrent get phase, 0 or 1 to skip (default 2)\n"
          "  --touch-interval MS  the store's touch coalescing interval (default: the store's)\n"
          "  --seed S          seed for ids and the access order (default 1)\n"
          "  --json FILE       also write the results as JSON\n",
          out);
}

static unsigned long long parse_num(const char *flag, const char *s, unsigned long long lo,
                                    unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        bench_die("%s wants an integer in [%llu, %llu], got '%s'", flag, lo, hi, s);
    return v;
}

static void parse_args(int argc, char **argv, params_t *p)
{
    *p = (params_t){.sessions = 1000000, .value_size = 1024, .repeat = 5, .threads = 2,
                    .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            bench_die("unknown option or missing value: %s", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--sessions"))
            p->sessions = (size_t) parse_num(a, v, 1, 100000000);
        else if (!strcmp(a, "--value-size"))
            p->value_size = (size_t) parse_num(a, v, 8, SN_VALUE_MAX_DEFAULT);
        else if (!strcmp(a, "--repeat"))
            p->repeat = (int) parse_num(a, v, 1, MAX_REPEAT);
        else if (!strcmp(a, "--threads"))
            p->threads = (int) parse_num(a, v, 0, 64);
        else if (!strcmp(a, "--touch-interval"))
            p->touch_interval = (uint32_t) parse_num(a, v, 1, UINT32_MAX);
        else if (!strcmp(a, "--seed"))
            p->seed = (uint64_t) parse_num(a, v, 0, UINT64_MAX);
        else if (!strcmp(a, "--json"))
            p->json = v;
        else {
            usage(stderr);
            bench_die("unknown option: %s", a);
        }
    }
}

/* ------------------------------------------------------------ fixture */

typedef struct {
    size_t n;
    size_t vsize;
    char *ids;                   /* n x ID_STRIDE */
    size_t *order;               /* random permutation of 0..n-1 */
    uint8_t *value;              /* template; bytes 0..7 carry the session index */
    uint64_t expect_sum;         /* sum of all session indexes, to check reads */
} fixture_t;

static const char *id_of(const fixture_t *f, size_t i)
{
    return f->ids + i * ID_STRIDE;
}

static void fixture_init(fixture_t *f, const params_t *p)
{
    f->n = p->sessions;
    f->vsize = p->value_size;
    f->ids = xmalloc(f->n * ID_STRIDE);
    f->order = xmalloc(f->n * sizeof *f->order);
    f->value = xmalloc(f->vsize);
    uint64_t rng = p->seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < f->n; i++) {
        int len = snprintf(f->ids + i * ID_STRIDE, ID_STRIDE, ID_FMT,
                           (unsigned long long) mix64(p->seed ^ (i * 0x9e3779b97f4a7c15ull)));
        if (len != ID_LEN)
            bench_die("id length %d, expected %d", len, ID_LEN);
        f->order[i] = i;
    }
    for (size_t i = f->n; i > 1; i--) {
        rng += 0x9e3779b97f4a7c15ull;
        size_t j = (size_t) (mix64(rng) % i);
        size_t t = f->order[i - 1];
        f->order[i - 1] = f->order[j];
        f->order[j] = t;
    }
    for (size_t i = 0; i < f->vsize; i++) {
        rng += 0x9e3779b97f4a7c15ull;
        f->value[i] = (uint8_t) mix64(rng);
    }
    f->expect_sum = (uint64_t) f->n * (uint64_t) (f->n - 1) / 2;
}

static void fixture_free(fixture_t *f)
{
    free(f->ids);
    free(f->order);
    free(f->value);
}

/* Stamps session i into the value template: each session gets its own
 * bytes, and a read can be checked by its first 8. */
static const uint8_t *value_for(const fixture_t *f, size_t i)
{
    uint64_t v = i;
    memcpy(f->value, &v, sizeof v);
    return f->value;
}

static uint64_t value_index(const void *buf)
{
    uint64_t v;
    memcpy(&v, buf, sizeof v);
    return v;
}

/* --------------------------------------------------- delta capture sink */

/* A captured delta in the decoded form sn_store_apply takes, with its own
 * copies of everything the delta points to (a delta lives only during the
 * sink call). This is what a receiver holds after decoding a message, so
 * the apply phase measures the store, not a codec. */
typedef struct {
    sn_delta_t d;
    sn_attr_t attr;
    sn_dot_t vv[CAP_DOTS];
    sn_dot_t dv[CAP_DOTS];
    uint8_t id[CAP_ID];
    uint8_t name[CAP_NAME];
} captured_t;

typedef struct {
    bool on;
    size_t n, cap, vsize;
    captured_t *recs;
    uint8_t *values;             /* cap x vsize */
    const char *error;           /* first capture failure */
} capture_t;

static void copy_dots(sn_vv_t *dst, sn_dot_t *room, const sn_vv_t *src, capture_t *c)
{
    dst->n = 0;
    dst->dots = room;
    if (src->n > CAP_DOTS) {
        c->error = "delta with a longer version vector than expected";
        return;
    }
    if (src->n)
        memcpy(room, src->dots, src->n * sizeof *room);
    dst->n = src->n;
}

static void bench_sink(const sn_delta_t *d, void *arg)
{
    capture_t *c = arg;
    /* Off, the sink touches nothing shared: the threaded gets emit touch
     * deltas from both threads. */
    if (!c->on || c->error)
        return;
    if (d->kind != SN_DELTA_WRITE) {
        c->error = "unexpected delta kind during the capture fill";
        return;
    }
    if (c->n == c->cap) {
        c->error = "more deltas than puts";
        return;
    }
    if (d->id_len >= CAP_ID || d->st.nattrs != 1 || d->st.attrs[0].name_len > CAP_NAME ||
        d->st.attrs[0].removed || d->st.attrs[0].value_len != c->vsize) {
        c->error = "delta shape differs from one put of a new session";
        return;
    }
    captured_t *r = &c->recs[c->n];
    uint8_t *value = c->values + c->n * c->vsize;
    r->d = *d;
    memcpy(r->id, d->id, d->id_len);
    r->id[d->id_len] = 0;      /* the reference table takes C strings */
    r->d.id = r->id;
    copy_dots(&r->d.st.vv, r->vv, &d->st.vv, c);
    copy_dots(&r->d.st.dv, r->dv, &d->st.dv, c);
    r->attr = d->st.attrs[0];
    memcpy(r->name, r->attr.name, r->attr.name_len);
    r->attr.name = r->name;
    memcpy(value, r->attr.value, r->attr.value_len);
    r->attr.value = value;
    r->d.st.attrs = &r->attr;
    c->n++;
}

/* ------------------------------------------------------- the two sides */

static uint32_t g_touch_interval;

/* The timed stores take their blocks from this one slab, as every zhashx
 * takes them from the one malloc heap: a store with a slab of its own gives
 * its pages back to the system, and the rounds after the first fill are
 * meant to measure the tables, not the VM's page faults. Between rounds the
 * slab is reset, so the next store is carved in address order from pages
 * already faulted in, as malloc refills the heap a destroyed table left. */
static sn_slab_t *g_slab;

static sn_store_t *store_new_limited(uint64_t node_id, capture_t *cap, sn_slab_t *slab,
                                     size_t memory_limit)
{
    sn_store_options_t o = {.node_id = node_id, .sink = bench_sink, .sink_arg = cap,
                            .touch_interval_ms = g_touch_interval, .slab = slab,
                            .memory_limit = memory_limit};
    sn_store_t *s = sn_store_new(&o);
    if (!s)
        bench_die("sn_store_new failed");
    return s;
}

static sn_store_t *store_new_with(uint64_t node_id, capture_t *cap, sn_slab_t *slab)
{
    return store_new_limited(node_id, cap, slab, 0);
}

static sn_store_t *store_new(uint64_t node_id, capture_t *cap)
{
    if (!g_slab && !(g_slab = sn_slab_new()))
        bench_die("sn_slab_new failed");
    return store_new_with(node_id, cap, g_slab);
}

static void store_free(sn_store_t **s)
{
    sn_store_destroy(s);
    if (sn_slab_reset(g_slab))
        bench_die("a store still holds blocks of the shared slab");
}

/* The reference's value: a length and the bytes, so a read can hand back
 * exactly what was stored, as the store does. */
typedef struct {
    size_t len;
    uint8_t data[];
} blob_t;

static void blob_free(void **item)
{
    free(*item);
    *item = NULL;
}

static zhashx_t *ref_new(void)
{
    zhashx_t *h = zhashx_new();
    if (!h)
        bench_die("zhashx_new failed");
    zhashx_set_destructor(h, blob_free);
    return h;
}

static void ref_insert(zhashx_t *h, const char *id, const uint8_t *value, size_t len)
{
    blob_t *b = malloc(sizeof *b + len);
    if (!b)
        bench_die("out of memory in the reference table");
    b->len = len;
    memcpy(b->data, value, len);
    if (zhashx_insert(h, id, b) != 0)
        bench_die("zhashx_insert: duplicate id %s", id);
}

/* Puts sessions [lo, hi) of the fixture; their rate. */
static double fill_store_range(const fixture_t *f, sn_store_t *s, size_t lo, size_t hi)
{
    double t0 = now_s();
    for (size_t i = lo; i < hi; i++) {
        int rc = sn_store_put(s, id_of(f, i), ID_LEN, ATTR_NAME, sizeof ATTR_NAME - 1,
                              value_for(f, i), f->vsize, 0, true, MAX_INACTIVE);
        if (rc)
            bench_die("sn_store_put(%s): %s (%d)", id_of(f, i), err_name(rc), rc);
    }
    return (double) (hi - lo) / (now_s() - t0);
}

static double fill_store(const fixture_t *f, sn_store_t *s)
{
    return fill_store_range(f, s, 0, f->n);
}

static double fill_ref_range(const fixture_t *f, zhashx_t *h, size_t lo, size_t hi)
{
    double t0 = now_s();
    for (size_t i = lo; i < hi; i++)
        ref_insert(h, id_of(f, i), value_for(f, i), f->vsize);
    return (double) (hi - lo) / (now_s() - t0);
}

static double fill_ref(const fixture_t *f, zhashx_t *h)
{
    return fill_ref_range(f, h, 0, f->n);
}

/* Gets of order[lo..hi); returns the sum of the session indexes read. */
static uint64_t get_store(const fixture_t *f, sn_store_t *s, size_t lo, size_t hi, uint8_t *buf)
{
    uint64_t sum = 0;
    for (size_t k = lo; k < hi; k++) {
        size_t i = f->order[k];
        size_t len = 0;
        int rc = sn_store_get(s, id_of(f, i), ID_LEN, ATTR_NAME, sizeof ATTR_NAME - 1, buf,
                              f->vsize, &len, NULL);
        if (rc)
            bench_die("sn_store_get(%s): %s (%d)", id_of(f, i), err_name(rc), rc);
        if (len != f->vsize)
            bench_die("sn_store_get(%s): %zu bytes, expected %zu", id_of(f, i), len, f->vsize);
        sum += value_index(buf);
    }
    return sum;
}

static uint64_t get_ref(const fixture_t *f, zhashx_t *h, pthread_mutex_t *lock, size_t lo,
                        size_t hi, uint8_t *buf)
{
    uint64_t sum = 0;
    for (size_t k = lo; k < hi; k++) {
        size_t i = f->order[k];
        if (lock)
            pthread_mutex_lock(lock);
        const blob_t *b = zhashx_lookup(h, id_of(f, i));
        if (!b || b->len > f->vsize)
            bench_die("zhashx_lookup(%s) failed", id_of(f, i));
        memcpy(buf, b->data, b->len);
        if (lock)
            pthread_mutex_unlock(lock);
        sum += value_index(buf);
    }
    return sum;
}

/* ---------------------------------------------------------- threaded gets */

typedef struct {
    const fixture_t *f;
    sn_store_t *store;           /* or the reference: */
    zhashx_t *ref;
    pthread_mutex_t *lock;
    size_t lo, hi;
    uint64_t sum;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uint8_t *buf = xmalloc(w->f->vsize);
    w->sum = w->store ? get_store(w->f, w->store, w->lo, w->hi, buf)
                      : get_ref(w->f, w->ref, w->lock, w->lo, w->hi, buf);
    free(buf);
    return NULL;
}

static double get_threaded(const fixture_t *f, int nthreads, sn_store_t *s, zhashx_t *h,
                           pthread_mutex_t *lock)
{
    pthread_t tid[64];
    worker_t w[64];
    double t0 = now_s();
    for (int t = 0; t < nthreads; t++) {
        w[t] = (worker_t){f, s, h, lock, f->n * (size_t) t / (size_t) nthreads,
                          f->n * (size_t) (t + 1) / (size_t) nthreads, 0};
        if (pthread_create(&tid[t], NULL, worker_main, &w[t]))
            bench_die("pthread_create failed");
    }
    uint64_t sum = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(tid[t], NULL);
        sum += w[t].sum;
    }
    double rate = (double) f->n / (now_s() - t0);
    if (sum != f->expect_sum)
        bench_die("threaded gets returned the wrong values");
    return rate;
}

/* ------------------------------------------------------------- results */

typedef struct {
    double v[MAX_REPEAT];
    int n;
} samples_t;

typedef struct {
    double median, min, max;
} summary_t;

static summary_t summarize(const samples_t *s)
{
    double v[MAX_REPEAT];
    memcpy(v, s->v, (size_t) s->n * sizeof *v);
    double median = bench_sort_median(v, s->n);
    return (summary_t) {median, v[0], v[s->n - 1]};
}

typedef struct {
    const char *name;
    const char *ref_name;
    samples_t store, ref;
} phase_t;

typedef struct {
    double store_acct;           /* per session, value excluded, id included */
    double store_rss;
    double ref_rss;
} memory_t;

static void add(samples_t *s, double v)
{
    if (s->n < MAX_REPEAT)
        s->v[s->n++] = v;
}

static void print_rate(const samples_t *s)
{
    summary_t m = summarize(s);
    if (s->n == 1)
        printf(" %10.0f %21s", m.median, "");
    else
        printf(" %10.0f [%9.0f..%9.0f]", m.median, m.min, m.max);
}

static void print_phase(const phase_t *p)
{
    printf("%-22s", p->name);
    print_rate(&p->store);
    print_rate(&p->ref);
    printf(" %7.2f  %s\n", summarize(&p->store).median / summarize(&p->ref).median,
           p->ref_name);
}

static void json_samples(FILE *out, const char *key, const samples_t *s)
{
    summary_t m = summarize(s);
    fprintf(out, "\"%s\": {\"median\": %.0f, \"min\": %.0f, \"max\": %.0f, \"runs\": [", key,
            m.median, m.min, m.max);
    for (int i = 0; i < s->n; i++)
        fprintf(out, "%s%.0f", i ? ", " : "", s->v[i]);
    fputs("]}", out);
}

static void write_json(const char *path, const params_t *p, const phase_t *ph, int nph,
                       const memory_t *m, double seconds)
{
    FILE *out = fopen(path, "w");
    if (!out)
        bench_die("cannot write %s: %s", path, strerror(errno));
    fprintf(out,
            "{\n  \"benchmark\": \"store\",\n  \"sessions\": %zu,\n  \"value_size\": %zu,\n"
            "  \"id_len\": %d,\n  \"attr_name\": \"%s\",\n  \"repeat\": %d,\n"
            "  \"threads\": %d,\n  \"touch_interval_ms\": %u,\n  \"seconds\": %.1f,\n"
            "  \"phases\": [\n",
            p->sessions, p->value_size, ID_LEN, ATTR_NAME, p->repeat, p->threads,
            p->touch_interval, seconds);
    int last = nph - 1;
    while (last > 0 && !ph[last].store.n)
        last--;
    for (int i = 0; i < nph; i++) {
        if (!ph[i].store.n)
            continue;
        fprintf(out, "    {\"name\": \"%s\", \"reference\": \"%s\", ", ph[i].name,
                ph[i].ref_name);
        json_samples(out, "store_ops", &ph[i].store);
        fputs(", ", out);
        json_samples(out, "reference_ops", &ph[i].ref);
        fprintf(out, ", \"ratio\": %.3f}%s\n",
                summarize(&ph[i].store).median / summarize(&ph[i].ref).median,
                i < last ? "," : "");
    }
    fprintf(out,
            "  ],\n  \"memory_overhead_bytes_per_session\": {\n"
            "    \"store_accounting_incl_id\": %.1f, \"store_accounting_excl_id\": %.1f,\n"
            "    \"store_rss_incl_id\": %.1f, \"store_rss_excl_id\": %.1f,\n"
            "    \"zhashx_rss_incl_id\": %.1f, \"zhashx_rss_excl_id\": %.1f\n  }\n}\n",
            m->store_acct, m->store_acct - ID_LEN, m->store_rss, m->store_rss - ID_LEN,
            m->ref_rss, m->ref_rss - ID_LEN);
    if (fclose(out))
        bench_die("cannot write %s: %s", path, strerror(errno));
}

/* ---------------------------------------------------------------- main */

enum { PH_PUT_COLD, PH_PUT, PH_PUT_FULL, PH_GET, PH_GET_MT, PH_APPLY, PH_COUNT };

int main(int argc, char **argv)
{
    params_t p;
    parse_args(argc, argv, &p);
    g_touch_interval = p.touch_interval;
    double t_start = now_s();

    /* Freed memory stays in the process, so that rounds after the first
     * measure the tables rather than the VM's page faults; the first fill
     * of each side still starts from untouched memory. */
    if (!mallopt(M_TRIM_THRESHOLD, -1))
        bench_die("mallopt failed");

    fixture_t f;
    fixture_init(&f, &p);
    capture_t cap = {.vsize = f.vsize, .cap = f.n};
    uint8_t *buf = xmalloc(f.vsize);
    char model[128];
    cpu_model(model, sizeof model);

    printf("sessnode store micro-benchmark\n");
    printf("  sessions %zu, value %zu B, ids \"sess:%%016llx\" (%d B, e.g. %s),\n"
           "  one attribute per session named \"%s\" (%zu B), max_inactive %d s\n",
           f.n, f.vsize, ID_LEN, id_of(&f, 0), ATTR_NAME, sizeof ATTR_NAME - 1, MAX_INACTIVE);
    printf("  repeat %d, threads %d, cpu %s, %ld online\n", p.repeat, p.threads, model,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("  reference: czmq %d.%d.%d zhashx, key -> malloc'd copy of the value\n",
           CZMQ_VERSION_MAJOR, CZMQ_VERSION_MINOR, CZMQ_VERSION_PATCH);
    fflush(stdout);

    phase_t ph[PH_COUNT] = {
        [PH_PUT_COLD] = {.name = "put (first fill)", .ref_name = "zhashx_insert"},
        [PH_PUT] = {.name = "put", .ref_name = "zhashx_insert"},
        [PH_PUT_FULL] = {.name = "put, store full", .ref_name = "zhashx_insert (no limit)"},
        [PH_GET] = {.name = "get", .ref_name = "zhashx_lookup+memcpy"},
        [PH_GET_MT] = {.name = "get", .ref_name = "zhashx_lookup+memcpy, one mutex"},
        [PH_APPLY] = {.name = "apply", .ref_name = "zhashx_insert"},
    };
    char mt_name[32];
    snprintf(mt_name, sizeof mt_name, "get, %d threads", p.threads);
    ph[PH_GET_MT].name = mt_name;
    memory_t mem;

    /* First fill: untouched memory, and the memory figures. */
    malloc_trim(0);
    uint64_t rss0 = rss_bytes();
    zhashx_t *ref = ref_new();
    add(&ph[PH_PUT_COLD].ref, fill_ref(&f, ref));
    mem.ref_rss = (double) (rss_bytes() - rss0) / (double) f.n - (double) f.vsize;

    malloc_trim(0);
    rss0 = rss_bytes();
    sn_store_t *store = store_new(1, &cap);
    add(&ph[PH_PUT_COLD].store, fill_store(&f, store));
    mem.store_rss = (double) (rss_bytes() - rss0) / (double) f.n - (double) f.vsize;
    sn_store_stats_t st;
    sn_store_stats(store, &st);
    if (st.sessions != f.n)
        bench_die("store holds %" PRIu64 " sessions after %zu puts", st.sessions, f.n);
    mem.store_acct = (double) st.bytes / (double) f.n - (double) f.vsize;
    uint64_t full_bytes = st.bytes;
    zhashx_destroy(&ref);
    store_free(&store);

    /* Put rounds on reused memory; the order alternates so that drift in
     * the machine's speed hits both sides alike. */
    for (int r = 0; r < p.repeat; r++) {
        for (int side = 0; side < 2; side++) {
            if ((side == 0) == (r % 2 == 0)) {
                ref = ref_new();
                add(&ph[PH_PUT].ref, fill_ref(&f, ref));
                if (r + 1 < p.repeat)
                    zhashx_destroy(&ref);
            } else {
                store = store_new(1, &cap);
                add(&ph[PH_PUT].store, fill_store(&f, store));
                store_free(&store);
            }
        }
    }

    /* The store for the reads is filled with the sink capturing every
     * delta (untimed: the copies would weigh on the put figure). */
    cap.recs = xmalloc(f.n * sizeof *cap.recs);
    cap.values = xmalloc(f.n * f.vsize);
    store = store_new_with(1, &cap, NULL);  /* lives beside the replicas */
    cap.on = true;
    fill_store(&f, store);
    cap.on = false;
    if (cap.error)
        bench_die("delta capture: %s", cap.error);
    if (cap.n != f.n)
        bench_die("captured %zu deltas from %zu puts", cap.n, f.n);

    for (int r = 0; r < p.repeat; r++) {
        for (int side = 0; side < 2; side++) {
            double t0 = now_s();
            uint64_t sum;
            if ((side == 0) == (r % 2 == 0)) {
                sum = get_ref(&f, ref, NULL, 0, f.n, buf);
                add(&ph[PH_GET].ref, (double) f.n / (now_s() - t0));
            } else {
                sum = get_store(&f, store, 0, f.n, buf);
                add(&ph[PH_GET].store, (double) f.n / (now_s() - t0));
            }
            if (sum != f.expect_sum)
                bench_die("gets returned the wrong values");
        }
    }

    sn_store_stats(store, &st);
    double touches = (double) st.touches_sent / ((double) p.repeat * (double) f.n);

    int nphases = PH_COUNT;
    if (p.threads >= 2) {
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        for (int r = 0; r < p.repeat; r++) {
            if (r % 2 == 0) {
                add(&ph[PH_GET_MT].ref, get_threaded(&f, p.threads, NULL, ref, &lock));
                add(&ph[PH_GET_MT].store, get_threaded(&f, p.threads, store, NULL, NULL));
            } else {
                add(&ph[PH_GET_MT].store, get_threaded(&f, p.threads, store, NULL, NULL));
                add(&ph[PH_GET_MT].ref, get_threaded(&f, p.threads, NULL, ref, &lock));
            }
        }
    }
    zhashx_destroy(&ref);
    sn_store_destroy(&store);

    /* Apply: each captured delta is a new session's first write, so every
     * one must merge. */
    for (int r = 0; r < p.repeat; r++) {
        for (int side = 0; side < 2; side++) {
            if ((side == 0) == (r % 2 == 0)) {
                ref = ref_new();
                double t0 = now_s();
                for (size_t k = 0; k < cap.n; k++)
                    ref_insert(ref, (const char *) cap.recs[k].id, cap.recs[k].attr.value,
                               cap.recs[k].attr.value_len);
                add(&ph[PH_APPLY].ref, (double) cap.n / (now_s() - t0));
                zhashx_destroy(&ref);
            } else {
                sn_store_t *replica = store_new(2, &cap);
                double t0 = now_s();
                for (size_t k = 0; k < cap.n; k++) {
                    int rc = sn_store_apply(replica, &cap.recs[k].d);
                    if (rc != SN_APPLY_APPLIED)
                        bench_die("sn_store_apply(%.*s): %s (%d)", (int) cap.recs[k].d.id_len,
                            (const char *) cap.recs[k].d.id,
                            rc < 0 ? err_name(rc) : "not applied", rc);
                }
                add(&ph[PH_APPLY].store, (double) cap.n / (now_s() - t0));
                sn_store_stats(replica, &st);
                if (st.sessions != f.n || st.applied != cap.n)
                    bench_die("replica holds %" PRIu64 " sessions after %zu deltas", st.sessions,
                        cap.n);
                if (r == 0) {
                    uint64_t sum = get_store(&f, replica, 0, f.n, buf);
                    if (sum != f.expect_sum)
                        bench_die("the replica returned the wrong values");
                }
                store_free(&replica);
            }
        }
    }

    /* Puts into a full store: a memory limit of half what the fill took,
     * the first half of the sessions put untimed, so that each timed put of
     * the second half evicts one session (sampled from the whole store's
     * memory). The reference inserts the same second half into a table
     * holding the first. */
    size_t half = f.n / 2;
    uint64_t evictions = 0;
    for (int r = 0; r < p.repeat; r++) {
        for (int side = 0; side < 2; side++) {
            if ((side == 0) == (r % 2 == 0)) {
                ref = ref_new();
                fill_ref_range(&f, ref, 0, half);
                add(&ph[PH_PUT_FULL].ref, fill_ref_range(&f, ref, half, f.n));
                zhashx_destroy(&ref);
            } else {
                store = store_new_limited(1, &cap, g_slab, (size_t) full_bytes / 2);
                fill_store_range(&f, store, 0, half);
                sn_store_stats(store, &st);
                uint64_t before = st.evictions;
                add(&ph[PH_PUT_FULL].store, fill_store_range(&f, store, half, f.n));
                sn_store_stats(store, &st);
                evictions += st.evictions - before;
                store_free(&store);
            }
        }
    }

    printf("\nops/s%17s %10s [%9s..%9s] %10s [%9s..%9s] %7s  reference\n", "", "store", "min",
           "max", "zhashx", "min", "max", "ratio");
    for (int i = 0; i < nphases; i++)
        if (ph[i].store.n)
            print_phase(&ph[i]);
    printf("  (first fill: one round on untouched memory, page faults included;\n"
           "   other rows: median of %d rounds, [min..max], ratio = store / zhashx medians)\n",
           p.repeat);
    printf("  put, store full: %.2f evictions a put, %.0f ns more a put than into room\n",
           (double) evictions / ((double) p.repeat * (double) (f.n - half)),
           1e9 / summarize(&ph[PH_PUT_FULL].store).median -
               1e9 / summarize(&ph[PH_PUT].store).median);
    printf("  single-threaded gets emitted %.2f touch deltas per read (touch interval %s)\n",
           touches, p.touch_interval ? "set by --touch-interval" : "the store's default");

    printf("\nmemory per session beyond the %zu B value   incl. id   excl. id (%d B)\n", f.vsize,
           ID_LEN);
    printf("  store, own accounting (stats.bytes / N) %10.1f %10.1f\n", mem.store_acct,
           mem.store_acct - ID_LEN);
    printf("  store, RSS growth over the first fill   %10.1f %10.1f\n", mem.store_rss,
           mem.store_rss - ID_LEN);
    printf("  zhashx, RSS growth over the first fill  %10.1f %10.1f\n", mem.ref_rss,
           mem.ref_rss - ID_LEN);

    double get_ratio = summarize(&ph[PH_GET].store).median / summarize(&ph[PH_GET].ref).median;
    double worst = mem.store_acct > mem.store_rss ? mem.store_acct : mem.store_rss;
    printf("\ntargets\n");
    printf("  get >= 50%% of zhashx                     %s (%.0f%%)\n",
           get_ratio >= 0.5 ? "met" : "MISSED", get_ratio * 100);
    printf("  overhead <= 100 B per session, incl. id  %s (%.0f B, larger of the two measures)\n",
           worst <= 100 ? "met" : "MISSED", worst);
    printf("  overhead <= 100 B per session, excl. id  %s (%.0f B)\n",
           worst - ID_LEN <= 100 ? "met" : "MISSED", worst - ID_LEN);

    double seconds = now_s() - t_start;
    printf("\ntotal %.1f s\n", seconds);
    if (p.json)
        write_json(p.json, &p, ph, nphases, &mem, seconds);

    free(cap.recs);
    free(cap.values);
    free(buf);
    fixture_free(&f);
    sn_slab_destroy(&g_slab);
    return 0;
}
