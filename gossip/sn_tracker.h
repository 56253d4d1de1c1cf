/*
 * sn_tracker.h - what a receiver has seen of each origin's publish
 * sequence, and which pseqs it must ask the origin to resend.
 *
 * Module-private header (not installed). Every node numbers the messages it
 * publishes 1, 2, 3... (pseq), contiguously. PUB/SUB may drop any of them,
 * and arrivals may be reordered (a resend overtaken by the live stream,
 * messages relayed by more than one path). For each origin the tracker keeps:
 *
 *   next    every pseq < next has been received or accounted for
 *           (contiguous() == next - 1);
 *   window  which pseqs in (next, next + SN_TRACKER_WINDOW) have arrived out
 *           of order: a fixed bitmap, so memory per origin is bounded
 *           whatever the sender does;
 *   high    the highest pseq received, skipped or announced by a heartbeat;
 *   spans   when each missing pseq in [next, high] was first noticed and
 *           when it was last reported, in at most SN_TRACKER_SPANS ranges.
 *
 * A gap is a pseq in [next, high] that is neither received nor skipped. It
 * is reported by sn_tracker_gaps() only once it has been open for the
 * caller's grace period (it may merely be late), and then at most once per
 * retry period (a repair is under way).
 *
 * Edge cases, as built:
 *   - Reordering within the window: an arrival above next is remembered in
 *     the bitmap and next jumps over it once the pseqs below have come.
 *     Pseqs it overtook become gaps at that moment but are reported only
 *     after the grace period, so a late arrival within it costs nothing.
 *   - Duplicates: an arrival below next, or one already in the bitmap, is
 *     SN_TRACK_DUPLICATE and changes nothing.
 *   - Window overflow: an arrival at or beyond next + SN_TRACKER_WINDOW is
 *     SN_TRACK_BEYOND. The caller applies it, but the tracker cannot record
 *     it: it raises high, so it is a gap, with every pseq below it not yet
 *     received, until received again once the window has moved up (then
 *     SN_TRACK_NEW: re-applying a delta is harmless) or skipped.
 *   - Lost tail: sn_tracker_announce() raises high to the heartbeat's pseq,
 *     making the unreceived tail a gap. An announce at or below high is
 *     ignored: heartbeats can be reordered with the stream too.
 *   - Skip: sn_tracker_skip() of a range that includes already received
 *     pseqs is fine (they stay accounted for). Only the part inside the
 *     window can be held when the range starts above next; a part beyond it
 *     stays a gap.
 *   - Fragmentation: when more than SN_TRACKER_SPANS separately noticed
 *     ranges are open, the newest are merged with the last one and take its
 *     (older) times, so a pseq can be reported before its own grace period
 *     ends, or up to one retry period late. When a report cut short by a
 *     full `out` must split a span and the list is full, two already
 *     reported spans are joined under the later stamp (one of them is
 *     retried later than it would have been), or, with no such pair, the
 *     unwritten rest counts as reported. Each costs at most a redundant or
 *     delayed repair request, never a lost gap.
 *   - Time: times are the caller's clock in milliseconds and should not go
 *     backwards; a gap noticed or reported "in the future" is treated as
 *     fresh.
 *   - Memory: about 1.5 KiB per origin (bitmap and spans are fixed arrays),
 *     whatever the loss pattern; the number of origins is the caller's to
 *     bound (sn_tracker_forget() when a node leaves).
 *
 * Thread-safety: none. The tracker belongs to the replication actor's
 * thread.
 */
#ifndef SN_TRACKER_H_INCLUDED
#define SN_TRACKER_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "sessnode.h"

/* Pseqs above next whose arrival can be remembered (a power of two). */
#define SN_TRACKER_WINDOW 4096u

/* Separately timed ranges of missing pseqs kept per origin. */
#define SN_TRACKER_SPANS 32u

typedef struct sn_tracker sn_tracker_t;

/* What the receiver should do with an arrival. */
typedef enum {
    SN_TRACK_NEW = 0,        /* first time seen: apply it */
    SN_TRACK_DUPLICATE = 1,  /* already seen or accounted for: drop it */
    SN_TRACK_BEYOND = 2      /* too far ahead to record: apply it; it stays a gap */
} sn_track_t;

/* A range of missing pseqs of one origin, both ends inclusive. */
typedef struct {
    uint64_t origin;
    uint64_t from;
    uint64_t to;
} sn_gap_t;

/* An empty tracker, or NULL when memory is short. */
sn_tracker_t *sn_tracker_new(void);

/* Frees the tracker, sets *self_p to NULL. Accepts NULL and a pointer to
 * NULL. */
void sn_tracker_destroy(sn_tracker_t **self_p);

/*
 * sn_tracker_receive - record the arrival of `pseq` from `origin` at now_ms.
 *
 * An origin never seen before starts at next = 1 (unless sn_tracker_reset()
 * set it), so its first arrival above 1 opens a gap below it.
 * Returns SN_TRACK_NEW, SN_TRACK_DUPLICATE (pseq < next, already received,
 * or one of the invalid pseqs 0 and UINT64_MAX, which record nothing) or
 * SN_TRACK_BEYOND (pseq >= next + SN_TRACKER_WINDOW). When
 * memory for a new origin cannot be had, SN_TRACK_BEYOND: the caller applies
 * the message, and the origin is created at a later call, which then sees
 * this pseq as missing, so nothing is lost.
 */
sn_track_t sn_tracker_receive(sn_tracker_t *self, uint64_t origin, uint64_t pseq,
                              uint64_t now_ms);

/*
 * sn_tracker_announce - a heartbeat: origin has published up to last_pseq.
 *
 * Every pseq up to last_pseq not received is a gap from now_ms on (a lost
 * tail). Ignored when last_pseq <= the highest pseq already seen or
 * announced. Creates the origin (at next = 1) if unknown.
 */
void sn_tracker_announce(sn_tracker_t *self, uint64_t origin, uint64_t last_pseq,
                         uint64_t now_ms);

/*
 * sn_tracker_gaps - the gaps to repair now.
 *
 * Writes to out[0..max) the missing pseqs that were noticed at least
 * grace_ms ago and were not reported within the last retry_ms, merged into
 * maximal ranges; origins in ascending id order, ranges in ascending pseq
 * order within an origin (a lower pseq is never noticed later than a higher
 * one, so this is oldest first). Returns how many were written.
 * Everything written is remembered as reported at now_ms; a range that did
 * not fit in `max` is not, and comes first in the next call (unless the
 * origin's spans are full, see "Fragmentation" above). With a small
 * `max`, a retry_ms > 0 is what lets later origins through while earlier
 * ones are being repaired.
 * Never allocates. `out` may be NULL when max is 0.
 */
size_t sn_tracker_gaps(sn_tracker_t *self, uint64_t now_ms, uint64_t grace_ms,
                       uint64_t retry_ms, sn_gap_t *out, size_t max);

/*
 * sn_tracker_skip - mark [from, to] of origin as accounted for (repaired by
 * anti-entropy, or covered by a snapshot).
 *
 * Already received pseqs in the range are fine. If the range reaches down
 * to next, next moves past it and past any received pseqs that follow;
 * otherwise the part inside the window is remembered like arrivals, and a
 * part beyond the window stays a gap. A range above the highest pseq seen
 * raises it (the origin has published at least `to`), so the pseqs between
 * become gaps as of the latest time the tracker was given. Ignored when
 * from > to. Creates the origin (at next = 1) if unknown.
 */
void sn_tracker_skip(sn_tracker_t *self, uint64_t origin, uint64_t from, uint64_t to);

/*
 * sn_tracker_reset - start or restart origin at `next` (after a snapshot
 * whose cut is pseq C, next = C + 1), forgetting its window and gaps.
 * A next of 0 is taken as 1. Fails silently only when memory for a new
 * origin is short, leaving the origin unknown.
 */
void sn_tracker_reset(sn_tracker_t *self, uint64_t origin, uint64_t next);

/* The contiguous high-water mark: every pseq <= the returned value has been
 * received or accounted for (next - 1). 0 for an unknown origin. */
uint64_t sn_tracker_contiguous(const sn_tracker_t *self, uint64_t origin);

/* Removes an origin (a node left the cluster); no effect if unknown. */
void sn_tracker_forget(sn_tracker_t *self, uint64_t origin);

/* How many origins are tracked. */
size_t sn_tracker_origins(const sn_tracker_t *self);

#endif /* SN_TRACKER_H_INCLUDED */
