/*
 * sn_backlog.c - the origin's resend buffer, a ring of slots indexed by
 * pseq - first.
 *
 * Because pushes are contiguous, the held pseqs are exactly
 * [first, first + count - 1] and the slot of pseq p is
 * (head + (p - first)) % max_entries: a lookup is one subtraction and one
 * modulo, with no search and no per-entry key. Dropping the oldest is
 * advancing head. The ring has max_entries slots from the start, in one
 * allocation large enough that the kernel maps it lazily, so its pages are
 * faulted in one at a time as the ring first fills. It used to start small
 * and double, and a doubling at 65,536 or 131,072 slots copied megabytes
 * into fresh memory: several ms of page faults at once in the replication
 * thread, long enough to show in the replication latency's tail.
 *
 * Each body is its own copy, from a slab (store/sn_slab.h) up to
 * SN_SLAB_MAX and from malloc beyond: the backlog takes a fresh block for
 * every local write until it is full, and the slab's pages come faulted in
 * 64 KiB at a time instead of one fault per 4 KiB page in the writer's path.
 * A single byte arena wrapping with the slots would save the per-block
 * overhead too, but bodies vary from a few bytes to megabytes, and the arena
 * would have to be as large as the byte budget from the start or be
 * compacted when it grows; separate copies keep memory proportional to what
 * is held. The byte budget counts body bytes
 * only; the slots add at most 24 bytes per entry on top, bounded by
 * max_entries.
 *
 * A push allocates the copy before it drops anything, so a failure leaves
 * the backlog as it was.
 */
#include "sn_backlog.h"
#include "sn_slab.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *body;   /* NULL for an empty body */
    size_t len;
    uint32_t flags;
    uint8_t klass;   /* slab class of body; 0: malloc'd */
} sn_backlog_slot_t;

struct sn_backlog {
    size_t max_bytes;
    uint32_t max_entries;
    sn_backlog_slot_t *slots;
    uint32_t head;       /* slot of `first` */
    uint32_t count;      /* entries held, <= max_entries */
    uint64_t first;      /* pseq in slots[head]; meaningless when count == 0 */
    size_t bytes;        /* sum of the held bodies' lengths */
    sn_slab_t *slab;
};

/* What get() hands out for an empty body, so *body is never NULL. */
static const uint8_t sn_backlog_empty[1];

sn_backlog_t *sn_backlog_new(size_t max_bytes, uint32_t max_entries)
{
    if (max_bytes == 0 || max_entries == 0)
        return NULL;
    sn_backlog_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->max_bytes = max_bytes;
    self->max_entries = max_entries;
    self->slots = calloc(max_entries, sizeof *self->slots);
    self->slab = sn_slab_new();
    if (!self->slab || !self->slots) {
        sn_slab_destroy(&self->slab);
        free(self->slots);
        free(self);
        return NULL;
    }
    return self;
}

static sn_backlog_slot_t *sn_backlog_slot(const sn_backlog_t *self, uint64_t offset)
{
    assert(offset < self->count);
    return &self->slots[(self->head + offset) % self->max_entries];
}

void sn_backlog_destroy(sn_backlog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_backlog_t *self = *self_p;
    for (uint32_t i = 0; i < self->count; i++) {
        sn_backlog_slot_t *s = sn_backlog_slot(self, i);
        if (!s->klass)
            free(s->body);  /* slab blocks go with the slab */
    }
    sn_slab_destroy(&self->slab);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

static void sn_backlog_drop_oldest(sn_backlog_t *self)
{
    sn_backlog_slot_t *s = sn_backlog_slot(self, 0);
    self->bytes -= s->len;
    if (s->klass)
        sn_slab_free(self->slab, s->body, s->klass);
    else
        free(s->body);
    s->body = NULL;
    self->head = (self->head + 1) % self->max_entries;
    self->count--;
    self->first++;
}

int sn_backlog_push(sn_backlog_t *self, uint64_t pseq, uint32_t flags,
                    const void *body, size_t len)
{
    if (!self || pseq == 0 || (len && !body))
        return SN_EINVAL;
    /* The sum cannot wrap: first + count - 1 is a pushed pseq. */
    if (self->count && pseq != self->first + self->count)
        return SN_EINVAL;
    if (len > self->max_bytes)
        return SN_ETOOBIG;

    /* How many of the oldest must go, found before anything is touched so
     * that a failed allocation below leaves the ring intact. */
    uint32_t drop = 0;
    size_t kept_bytes = self->bytes;
    while (drop < self->count &&
           (self->count - drop >= self->max_entries || kept_bytes + len > self->max_bytes)) {
        kept_bytes -= sn_backlog_slot(self, drop)->len;
        drop++;
    }

    uint8_t *copy = NULL;
    uint8_t klass = len ? sn_slab_class(len) : 0;
    if (klass && !(copy = sn_slab_alloc(self->slab, klass)))
        klass = 0;
    if (len && !copy && !(copy = malloc(len)))
        return SN_ENOMEM;
    if (len)
        memcpy(copy, body, len);

    while (drop--)
        sn_backlog_drop_oldest(self);
    if (self->count == 0)
        self->first = pseq;
    sn_backlog_slot_t *s = &self->slots[(self->head + self->count) % self->max_entries];
    s->body = copy;
    s->len = len;
    s->flags = flags;
    s->klass = klass;
    self->count++;
    self->bytes += len;
    assert(self->count <= self->max_entries && self->bytes <= self->max_bytes);
    return 0;
}

int sn_backlog_get(sn_backlog_t *self, uint64_t pseq, const uint8_t **body,
                   size_t *len, uint32_t *flags)
{
    if (!self)
        return SN_EINVAL;
    if (self->count == 0 || pseq < self->first || pseq - self->first >= self->count)
        return SN_ENOTFOUND;
    const sn_backlog_slot_t *s = sn_backlog_slot(self, pseq - self->first);
    if (body)
        *body = s->body ? s->body : sn_backlog_empty;
    if (len)
        *len = s->len;
    if (flags)
        *flags = s->flags;
    return 0;
}

uint64_t sn_backlog_first(const sn_backlog_t *self)
{
    return self && self->count ? self->first : 0;
}

uint64_t sn_backlog_last(const sn_backlog_t *self)
{
    return self && self->count ? self->first + self->count - 1 : 0;
}

size_t sn_backlog_bytes(const sn_backlog_t *self)
{
    return self ? self->bytes : 0;
}

size_t sn_backlog_prefault(sn_backlog_t *self, size_t max_pages)
{
    return self ? sn_slab_prefault(self->slab, max_pages) : 0;
}
