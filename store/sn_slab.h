/*
 * sn_slab.h - the store's block allocator: size classes carved from large
 * mappings whose pages are faulted in ahead of use.
 *
 * Sessions are blocks of a few hundred bytes to a few KiB, created at
 * thousands per second and, on a joining node, by the hundred thousand in a
 * second. Taken from malloc, every fresh 4 KiB page of them costs a page
 * fault when first written, and a fault costs ~11 us on our VMs (3 s per GiB;
 * see ../shared/NOTES.md), more than the rest of storing a session. glibc
 * also grows a thread's arena a page at a time (one mprotect each), and the
 * store's writes come from the replication thread's arena.
 *
 * So blocks up to SN_SLAB_MAX come from size classes (16-byte steps up to
 * 2 KiB, then 1/16 steps), carved end to end from 1 MiB runs of 4 MiB
 * mappings, each run faulted in 64 KiB ahead of the class's next block
 * (MADV_POPULATE_WRITE, one call instead of 16 faults; where the kernel lacks
 * it, pages fault in as usual). A freed block goes on its run's free list
 * and is reused by the next block of that class. A run whose blocks have
 * all been freed goes to a pool that every class takes runs from, pages
 * still faulted in: when an update makes sessions a few bytes larger and
 * they move to the next class, the runs they leave serve that class instead
 * of staying reserved for the old one (100,000 sessions of 1 KiB, each
 * updated once: 115 MB of RSS, against 211-222 MB with runs kept per
 * class). Pages go back to the system only when the store is destroyed, as
 * in memcached's slabs. Larger blocks use malloc.
 *
 * Past the first 64 MiB, mappings are marked for transparent huge pages
 * (MADV_HUGEPAGE; used where the system's setting is "madvise" or
 * "always"): a large store's sessions are read, written and sampled for
 * eviction at random over all its memory, and with 4 KiB pages nearly every
 * one touched is a TLB miss as well as a cache miss. A huge page is faulted
 * in whole, so a class being carved may hold up to 2 MiB more resident than
 * it has faulted in; a small store, which could not spare that, keeps small
 * pages.
 *
 * One mutex guards it all: it is taken for a few instructions under a shard
 * lock, so it is the innermost lock of the store.
 */
#ifndef SN_SLAB_H
#define SN_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define SN_SLAB_MAX (32u * 1024)

typedef struct sn_slab sn_slab_t;

typedef struct {
    uint64_t mapped;     /* bytes of pages taken from the system */
    uint64_t in_use;     /* bytes of the classes of the blocks handed out */
    uint64_t blocks;     /* blocks handed out */
} sn_slab_stats_t;

sn_slab_t *sn_slab_new(void);

/* Unmaps every page: blocks still handed out become invalid. */
void sn_slab_destroy(sn_slab_t **self_p);

/* The class of a block of `size` bytes: 1.. for slab sizes, 0 when `size`
 * is larger than SN_SLAB_MAX (the caller then uses malloc). */
uint8_t sn_slab_class(size_t size);

/* The usable size of class `klass` (> 0). */
size_t sn_slab_class_size(uint8_t klass);

/* A block of class `klass`, or NULL when the system refuses memory. */
void *sn_slab_alloc(sn_slab_t *self, uint8_t klass);

/* Gives back a block of class `klass` that sn_slab_alloc returned. */
void sn_slab_free(sn_slab_t *self, void *block, uint8_t klass);

/* Faults in, ahead of need, the next page of each class's current run that
 * has less than a page faulted beyond its next block, at most `max_pages`
 * pages in all; returns how many. A thread with time to spare (the
 * replication thread before it sleeps) so pays for the page faults the next
 * allocations would otherwise take on their way. The faulting runs outside
 * the slab's lock. */
size_t sn_slab_prefault(sn_slab_t *self, size_t max_pages);

/* Forgets every block and starts carving again from the first page, keeping
 * the pages (and their faults paid): for a process that fills and empties
 * stores in turn, such as a benchmark. Refused (-1) while any block is
 * handed out; 0 otherwise. `mapped` restarts from 0. */
int sn_slab_reset(sn_slab_t *self);

void sn_slab_stats(sn_slab_t *self, sn_slab_stats_t *out);

#endif
