/*
 * sn_slab.c - size classes carved from pre-faulted pages (see sn_slab.h).
 */
#define _GNU_SOURCE
#include "sn_slab.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older kernels answer EINVAL */
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SN_SLAB_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SN_SLAB_ASAN 1
#endif
#ifdef SN_SLAB_ASAN
/* Blocks not handed out stay poisoned, so AddressSanitizer still reports a
 * use after free or an overflow into a neighbour. */
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void) (p), (void) (n))
#define UNPOISON(p, n) ((void) (p), (void) (n))
#endif

#define PAGE (64u * 1024)       /* faulted in at a time */
#define RUN (1024u * 1024)       /* address space a class carves from at a time */
#define REGION (4u * 1024 * 1024)
#define FINE_MAX 2048u           /* 16-byte steps up to here */
#define CLASSES_MAX 256
#define RUN_HDR 64u              /* a run's header, before its first block */
#define HUGE_AFTER 16            /* regions (64 MiB) mapped before huge pages */

/* A run starts with its header; runs are RUN-aligned (regions are
 * REGION-aligned), so a block finds its run by masking its address. */
typedef struct run {
    struct run *prev, *next;     /* on its class's list of runs with free
                                  * blocks, or (next) on the empty pool */
    void *free;                  /* its freed blocks, linked through their first word */
    char *faulted;               /* its pages are faulted in up to here */
    uint32_t live;               /* its blocks handed out */
    bool listed;                 /* on its class's list */
} run_t;

#define RUN_OF(p) ((run_t *) ((uintptr_t) (p) & ~(uintptr_t) (RUN - 1)))

typedef struct {
    run_t *partial;              /* runs with freed blocks, reused first */
    run_t *carving;              /* the run new blocks are cut from, end to end */
    char *bump;                  /* where the next one is cut */
} class_t;

struct sn_slab {
    pthread_mutex_t lock;
    class_t cls[CLASSES_MAX];
    run_t *empty;                /* runs whose blocks were all freed: any class may take one */
    char *next, *limit;          /* the rest of the current region */
    char **regions;
    size_t nregions, cap_regions;
    size_t used_regions;         /* regions carved from since the last reset */
    uint64_t mapped, in_use, blocks;
    uint64_t carved[CLASSES_MAX / 64];  /* classes that cut blocks since the
                                         * last prefault, one bit each */
};

static uint32_t g_size[CLASSES_MAX];
static unsigned g_classes;      /* valid classes are 1 .. g_classes */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Class k of the fine range holds 16 * (k + 1) bytes, from 32; past
 * FINE_MAX each class is 1/16 larger than the one before (rounded to 16),
 * so a block wastes at most ~6% of itself, and the last is SN_SLAB_MAX. */
static void build_classes(void)
{
    unsigned k = 0;
    for (uint32_t s = 32; s <= FINE_MAX; s += 16)
        g_size[++k] = s;
    uint32_t s = FINE_MAX;
    while (s < SN_SLAB_MAX) {
        s = (s + s / 16 + 15) & ~15u;
        if (s > SN_SLAB_MAX)
            s = SN_SLAB_MAX;
        g_size[++k] = s;
    }
    g_classes = k;
}

uint8_t sn_slab_class(size_t size)
{
    pthread_once(&g_once, build_classes);
    if (size > SN_SLAB_MAX)
        return 0;
    if (size <= FINE_MAX)
        return (uint8_t) (size <= 32 ? 1 : (size + 15) / 16 - 1);
    unsigned lo = FINE_MAX / 16 - 1, hi = g_classes;  /* g_size[lo] < size <= g_size[hi] */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (g_size[mid] < size)
            lo = mid;
        else
            hi = mid;
    }
    return (uint8_t) hi;
}

size_t sn_slab_class_size(uint8_t klass)
{
    pthread_once(&g_once, build_classes);
    return klass && klass <= g_classes ? g_size[klass] : 0;
}

sn_slab_t *sn_slab_new(void)
{
    pthread_once(&g_once, build_classes);
    sn_slab_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

void sn_slab_destroy(sn_slab_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_slab_t *self = *self_p;
    for (size_t i = 0; i < self->nregions; i++) {
        UNPOISON(self->regions[i], REGION);
        munmap(self->regions[i], REGION);
    }
    free(self->regions);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

/* REGION bytes of address space aligned to REGION, so that every run in it
 * is RUN-aligned; NULL when the system refuses. */
static char *map_region(void)
{
    /* MAP_NORESERVE: a region is address space until its pages are
     * faulted in */
    char *m = mmap(NULL, 2 * (size_t) REGION, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *r = (char *) (((uintptr_t) m + REGION - 1) & ~(uintptr_t) (REGION - 1));
    if (r > m)
        munmap(m, (size_t) (r - m));
    munmap(r + REGION, (size_t) (m + 2 * (size_t) REGION - (r + REGION)));
    return r;
}

/* Faults in the next PAGE of run `r` (best effort: without it the pages
 * fault in 4 KiB at a time). */
static void fault_in(sn_slab_t *self, run_t *r)
{
    (void) madvise(r->faulted, PAGE, MADV_POPULATE_WRITE);
    r->faulted += PAGE;
    self->mapped += PAGE;
}

/* A run for a class to carve: an emptied one (its pages already faulted
 * in), else fresh address space; NULL when the system refuses memory. */
static run_t *take_run(sn_slab_t *self)
{
    run_t *r = self->empty;
    if (r) {
        self->empty = r->next;
        r->next = NULL;
        return r;
    }
    if (self->next == self->limit && self->used_regions < self->nregions) {
        char *reg = self->regions[self->used_regions++];  /* kept by a reset */
        self->next = reg;
        self->limit = reg + REGION;
    } else if (self->next == self->limit) {
        if (self->nregions == self->cap_regions) {
            size_t cap = self->cap_regions ? 2 * self->cap_regions : 16;
            char **regs = realloc(self->regions, cap * sizeof *regs);
            if (!regs)
                return NULL;
            self->regions = regs;
            self->cap_regions = cap;
        }
        char *reg = map_region();
        if (!reg)
            return NULL;
        /* A large store's blocks lie all over its memory, and with 4 KiB
         * pages nearly every session touched is also a TLB miss: 2 MiB
         * pages (where transparent huge pages are on, as with the usual
         * "madvise") made puts into a full store of 1M sessions of 1 KiB,
         * each evicting one, and random reads of them a sixth faster
         * (docs/BENCHMARKS.md). The first regions stay on small pages, as
         * a huge page fills in whole (up to 2 MiB more resident than
         * faulted in, per class being carved), which only a large store
         * can spare. */
        if (self->nregions >= HUGE_AFTER)
            (void) madvise(reg, REGION, MADV_HUGEPAGE);
        POISON(reg, REGION);
        self->regions[self->nregions++] = reg;
        self->used_regions = self->nregions;
        self->next = reg;
        self->limit = reg + REGION;
    }
    r = (run_t *) self->next;
    self->next += RUN;
    UNPOISON(r, RUN_HDR);
    memset(r, 0, sizeof *r);
    r->faulted = (char *) r;
    fault_in(self, r);
    return r;
}

static void list_run(class_t *c, run_t *r)
{
    r->prev = NULL;
    r->next = c->partial;
    if (c->partial)
        c->partial->prev = r;
    c->partial = r;
    r->listed = true;
}

static void unlist_run(class_t *c, run_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->partial = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->listed = false;
}

/* A run none of whose blocks is handed out goes to the pool any class takes
 * runs from: after sessions grow into the next class, the runs of the class
 * they left serve new blocks of whatever size instead of staying reserved. */
static void empty_run(sn_slab_t *self, class_t *c, run_t *r)
{
    if (r->listed)
        unlist_run(c, r);
    r->free = NULL;
    r->next = self->empty;
    self->empty = r;
}

/* Makes room for a block of `size` at c->bump: faults in the next page of
 * the run, or starts carving another. */
static bool grow_class(sn_slab_t *self, class_t *c, size_t size)
{
    run_t *r = c->carving;
    if (!r || (size_t) ((char *) r + RUN - c->bump) < size) {
        run_t *fresh = take_run(self);
        if (!fresh)
            return false;
        if (r && r->live == 0)
            empty_run(self, c, r);
        c->carving = r = fresh;
        c->bump = (char *) r + RUN_HDR;
    }
    while ((size_t) (r->faulted - c->bump) < size)
        fault_in(self, r);
    return true;
}

void *sn_slab_alloc(sn_slab_t *self, uint8_t klass)
{
    if (!self || !klass || klass > g_classes)
        return NULL;
    class_t *c = &self->cls[klass];
    size_t size = g_size[klass];
    char *b = NULL;
    run_t *r = NULL;
    pthread_mutex_lock(&self->lock);
    if ((r = c->partial)) {
        b = r->free;
        UNPOISON(b, size);
        memcpy(&r->free, b, sizeof(void *));
        if (!r->free)
            unlist_run(c, r);
    } else if (grow_class(self, c, size)) {
        r = c->carving;
        b = c->bump;
        c->bump += size;
        UNPOISON(b, size);
        self->carved[klass / 64] |= (uint64_t) 1 << (klass % 64);
    }
    if (b) {
        r->live++;
        self->blocks++;
        self->in_use += size;
    }
    pthread_mutex_unlock(&self->lock);
    return b;
}

void sn_slab_free(sn_slab_t *self, void *block, uint8_t klass)
{
    if (!self || !block || !klass || klass > g_classes)
        return;
    class_t *c = &self->cls[klass];
    size_t size = g_size[klass];
    run_t *r = RUN_OF(block);
    pthread_mutex_lock(&self->lock);
    memcpy(block, &r->free, sizeof(void *));
    r->free = block;
    POISON(block, size);
    r->live--;
    if (r->live == 0 && r != c->carving)
        empty_run(self, c, r);
    else if (!r->listed)
        list_run(c, r);
    self->blocks--;
    self->in_use -= size;
    pthread_mutex_unlock(&self->lock);
}

size_t sn_slab_prefault(sn_slab_t *self, size_t max_pages)
{
    char *todo[8];
    size_t n = 0;
    if (!self)
        return 0;
    if (max_pages > sizeof todo / sizeof *todo)
        max_pages = sizeof todo / sizeof *todo;
    pthread_mutex_lock(&self->lock);
    /* only the classes that carved since the last call can have come
     * within a page of their faulted end */
    for (unsigned w = 0; w < CLASSES_MAX / 64 && n < max_pages; w++) {
        while (self->carved[w] && n < max_pages) {
            unsigned k = w * 64 + (unsigned) __builtin_ctzll(self->carved[w]);
            self->carved[w] &= self->carved[w] - 1;
            class_t *c = &self->cls[k];
            run_t *r = c->carving;
            if (r && (size_t) (r->faulted - c->bump) < PAGE &&
                r->faulted < (char *) r + RUN) {
                /* claimed now, faulted below: a block cut from it meanwhile
                 * just takes its page faults as it would have anyway */
                todo[n++] = r->faulted;
                r->faulted += PAGE;
                self->mapped += PAGE;
            }
        }
    }
    pthread_mutex_unlock(&self->lock);
    for (size_t i = 0; i < n; i++)
        (void) madvise(todo[i], PAGE, MADV_POPULATE_WRITE);
    return n;
}

int sn_slab_reset(sn_slab_t *self)
{
    if (!self)
        return -1;
    pthread_mutex_lock(&self->lock);
    int rc = self->blocks ? -1 : 0;
    if (!rc) {
        memset(self->cls, 0, sizeof self->cls);
        memset(self->carved, 0, sizeof self->carved);
        self->empty = NULL;
        for (size_t i = 0; i < self->nregions; i++)
            POISON(self->regions[i], REGION);
        self->used_regions = 0;
        self->next = self->limit = NULL;
        self->mapped = 0;
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

void sn_slab_stats(sn_slab_t *self, sn_slab_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!self)
        return;
    pthread_mutex_lock(&self->lock);
    out->mapped = self->mapped;
    out->in_use = self->in_use;
    out->blocks = self->blocks;
    pthread_mutex_unlock(&self->lock);
}
