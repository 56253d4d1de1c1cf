/*
 * sn_slab.c - size classes carved from pre-faulted pages (see sn_slab.h).
 */
#define _GNU_SOURCE
#include "sn_slab.h"

#include <pthread.h>
#include <stdbool.h>
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

typedef struct {
    void *free;                  /* freed blocks, linked through their first word */
    char *bump, *end;            /* the faulted-in rest of the class's run */
    char *limit;                 /* the end of its run */
    uint64_t blocks;
} class_t;

struct sn_slab {
    pthread_mutex_t lock;
    class_t cls[CLASSES_MAX];
    char *next, *limit;          /* the rest of the current region */
    char **regions;
    size_t nregions, cap_regions;
    size_t used_regions;         /* regions carved from since the last reset */
    uint64_t mapped, in_use, blocks;
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

/* A fresh run of address space, not yet faulted in; NULL when the system
 * refuses memory. A class carves its blocks from one run end to end, across
 * page boundaries, so only the run's last block wastes space. */
static char *take_run(sn_slab_t *self)
{
    if (self->next == self->limit && self->used_regions < self->nregions) {
        char *r = self->regions[self->used_regions++];  /* kept by a reset */
        self->next = r;
        self->limit = r + REGION;
    } else if (self->next == self->limit) {
        if (self->nregions == self->cap_regions) {
            size_t cap = self->cap_regions ? 2 * self->cap_regions : 16;
            char **r = realloc(self->regions, cap * sizeof *r);
            if (!r)
                return NULL;
            self->regions = r;
            self->cap_regions = cap;
        }
        /* MAP_NORESERVE: a region is address space until its pages are
         * faulted in */
        char *r = mmap(NULL, REGION, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED)
            return NULL;
        POISON(r, REGION);
        self->regions[self->nregions++] = r;
        self->used_regions = self->nregions;
        self->next = r;
        self->limit = r + REGION;
    }
    char *run = self->next;
    self->next += RUN;
    return run;
}

/* Makes room for a block of `size` at c->bump: faults in the next page of
 * the run, or starts a new run. */
static bool grow_class(sn_slab_t *self, class_t *c, size_t size)
{
    if (!c->limit || c->limit - c->end < (ptrdiff_t) PAGE ||
        (size_t) (c->end + PAGE - c->bump) < size) {
        char *run = take_run(self);
        if (!run)
            return false;
        c->bump = c->end = run;
        c->limit = run + RUN;
    }
    /* best effort: without it the page faults in 4 KiB at a time */
    (void) madvise(c->end, PAGE, MADV_POPULATE_WRITE);
    c->end += PAGE;
    self->mapped += PAGE;
    return true;
}

void *sn_slab_alloc(sn_slab_t *self, uint8_t klass)
{
    if (!self || !klass || klass > g_classes)
        return NULL;
    class_t *c = &self->cls[klass];
    size_t size = g_size[klass];
    char *b = NULL;
    pthread_mutex_lock(&self->lock);
    if (c->free) {
        b = c->free;
        UNPOISON(b, size);
        memcpy(&c->free, b, sizeof(void *));
    } else {
        if ((size_t) (c->end - c->bump) < size)
            grow_class(self, c, size);
        if ((size_t) (c->end - c->bump) >= size) {
            b = c->bump;
            c->bump += size;
            UNPOISON(b, size);
        }
    }
    if (b) {
        c->blocks++;
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
    pthread_mutex_lock(&self->lock);
    memcpy(block, &c->free, sizeof(void *));
    c->free = block;
    POISON(block, size);
    c->blocks--;
    self->blocks--;
    self->in_use -= size;
    pthread_mutex_unlock(&self->lock);
}

int sn_slab_reset(sn_slab_t *self)
{
    if (!self)
        return -1;
    pthread_mutex_lock(&self->lock);
    int rc = self->blocks ? -1 : 0;
    if (!rc) {
        memset(self->cls, 0, sizeof self->cls);
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
