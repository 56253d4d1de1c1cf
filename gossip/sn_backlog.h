/*
 * sn_backlog.h - the origin's resend buffer: the last messages this node
 * published, kept by publish sequence (pseq) so that a receiver that lost
 * some can ask for them again.
 *
 * Module-private header (not installed). Pseqs are contiguous: each push
 * carries last() + 1, so the backlog always holds one unbroken run
 * [first(), last()] and a lookup is an index computation. The run is bounded
 * both by a byte budget (the sum of the bodies' lengths) and by an entry
 * count; a push that would exceed either drops the oldest entries until it
 * fits. A receiver asking for a pseq older than first() has lost it for
 * good and must fall back to anti-entropy.
 *
 * Ownership: the backlog copies every body it is given and owns the copies.
 *
 * Thread-safety: none. The backlog belongs to the replication actor's
 * thread, which alone pushes and reads it.
 */
#ifndef SN_BACKLOG_H_INCLUDED
#define SN_BACKLOG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"

typedef struct sn_backlog sn_backlog_t;

/*
 * sn_backlog_new - an empty backlog.
 *
 * max_bytes:   the most body bytes held at once; also the largest body
 *              accepted. Must be > 0.
 * max_entries: the most messages held at once. Must be > 0.
 * Returns NULL when a bound is 0 or memory is short. Slots are allocated as
 * the backlog fills, so a generous max_entries costs nothing up front.
 */
sn_backlog_t *sn_backlog_new(size_t max_bytes, uint32_t max_entries);

/* Frees the backlog and every body it holds, sets *self_p to NULL. Accepts
 * NULL and a pointer to NULL. */
void sn_backlog_destroy(sn_backlog_t **self_p);

/*
 * sn_backlog_push - append a copy of a published message.
 *
 * pseq:  its publish sequence: last() + 1, or any value > 0 when the
 *        backlog is empty (a node restarting its numbering mid-way).
 * flags: stored and returned as is.
 * body, len: the encoded message, copied; body may be NULL when len is 0.
 * Returns 0, or: SN_EINVAL for a NULL self, pseq 0, a pseq other than
 * last() + 1, or a NULL body with len > 0; SN_ETOOBIG when len > max_bytes;
 * SN_ENOMEM. On any failure the backlog is unchanged.
 * On success the oldest entries are dropped until both bounds hold, so the
 * new message itself is always kept.
 */
int sn_backlog_push(sn_backlog_t *self, uint64_t pseq, uint32_t flags,
                    const void *body, size_t len);

/*
 * sn_backlog_get - look up a held message, in O(1).
 *
 * body, len, flags: receive the message; any of them may be NULL. *body
 *        points into the backlog (never NULL, even for an empty body) and
 *        stays valid until the next push or destroy; the caller must not
 *        free it.
 * Returns 0, or SN_ENOTFOUND when pseq < first(), pseq > last() or the
 * backlog is empty (outputs untouched); SN_EINVAL for a NULL self.
 */
int sn_backlog_get(sn_backlog_t *self, uint64_t pseq, const uint8_t **body,
                   size_t *len, uint32_t *flags);

/* The oldest pseq held, 0 when empty. */
uint64_t sn_backlog_first(const sn_backlog_t *self);

/* The newest pseq held, 0 when empty. */
uint64_t sn_backlog_last(const sn_backlog_t *self);

/* Faults in ahead the memory the next pushes will take (sn_slab_prefault),
 * at most `max_pages` slab pages; returns how many. */
size_t sn_backlog_prefault(sn_backlog_t *self, size_t max_pages);

/* The sum of the held bodies' lengths (always <= max_bytes). */
size_t sn_backlog_bytes(const sn_backlog_t *self);

#endif /* SN_BACKLOG_H_INCLUDED */
