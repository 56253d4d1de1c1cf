/*
 * sn_tracker.c - per-origin receive state: contiguous high-water mark,
 * out-of-order window, and the timing of gaps.
 *
 * Origins live in an array of pointers sorted by id. A lookup is a binary
 * search (a dozen comparisons for thousands of origins), preceded by a
 * one-entry cache because arrivals come in runs from the same origin; the
 * sorted order is also the order sn_tracker_gaps() reports in, with no
 * sorting. Adding or forgetting an origin moves pointers, which membership
 * changes make rare. Each origin is its own allocation so the cache and the
 * array can hold stable pointers.
 *
 * Which pseqs above `next` have arrived is a bitmap of SN_TRACKER_WINDOW
 * bits indexed by pseq modulo the window. Only pseqs in
 * (next, next + WINDOW) ever have their bit set, so these indices never
 * collide, and a bit is cleared as next passes it; the bit of `next` itself
 * is always clear. A set would be smaller for sparse arrivals, but the
 * bitmap is 512 bytes whatever a sender does and every operation on it is
 * O(1).
 *
 * Gap timing is the subtle part. A pseq becomes a gap when something above
 * it shows up (an arrival, a heartbeat, a skip): the moment `high` first
 * passes it. Since high only grows, "first noticed" never decreases along
 * the pseqs, and a short sorted list of spans, each [from, to] with one
 * noticed time and one last-reported time, describes every open gap. A span
 * is created when high rises, covering the pseqs it uncovered, and is not
 * split when some of them arrive later: spans only annotate time, while the
 * bitmap decides what is missing, so an arrival never touches the list.
 * Spans die when next passes them. Reporting a span stamps it; a report cut
 * short by the caller's buffer splits the span at the cut so the rest keeps
 * its own stamp. The list has a fixed capacity: past it, new ranges are
 * folded into the last span, trading timing precision (a redundant or late
 * repair request) for bounded memory. The alternative, a time per missing
 * pseq, would cost 8 bytes per slot of the window per origin.
 */
#include "sn_tracker.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* pseq UINT64_MAX is refused so that next = high + 1 never wraps. */
#define SN_TRACKER_PSEQ_MAX (UINT64_MAX - 1)

/* A reported_ms meaning "never reported". */
#define SN_TRACKER_NEVER UINT64_MAX

#define SN_TRACKER_WORDS (SN_TRACKER_WINDOW / 64u)

_Static_assert((SN_TRACKER_WINDOW & (SN_TRACKER_WINDOW - 1)) == 0 && SN_TRACKER_WINDOW >= 64,
               "the window is indexed by masking and scanned by 64-bit words");

typedef struct {
    uint64_t from;         /* inclusive; >= the origin's next */
    uint64_t to;           /* inclusive; <= the origin's high */
    uint64_t noticed_ms;   /* when high first passed these pseqs */
    uint64_t reported_ms;  /* last sn_tracker_gaps() that wrote them, or NEVER */
} sn_tracker_span_t;

typedef struct {
    uint64_t id;
    uint64_t next;   /* every pseq < next is accounted for; >= 1 */
    uint64_t high;   /* highest pseq received, skipped or announced; >= next - 1 */
    uint32_t nspans;
    /* Sorted, disjoint, inside [next, high]; every missing pseq of
     * [next, high] is in one of them (some received ones may be too). */
    sn_tracker_span_t spans[SN_TRACKER_SPANS];
    uint64_t window[SN_TRACKER_WORDS];
} sn_tracker_origin_t;

struct sn_tracker {
    sn_tracker_origin_t **origins;  /* sorted by id */
    size_t count;
    size_t capacity;
    sn_tracker_origin_t *cached;    /* the last origin looked up, or NULL */
    uint64_t now_ms;                /* the latest time the caller gave */
};

/* ---------------------------------------------------------------- window */

static bool sn_tracker_in_window(const sn_tracker_origin_t *o, uint64_t pseq)
{
    return pseq >= o->next && pseq - o->next < SN_TRACKER_WINDOW;
}

static bool sn_tracker_bit(const sn_tracker_origin_t *o, uint64_t pseq)
{
    uint64_t i = pseq & (SN_TRACKER_WINDOW - 1);
    return (o->window[i / 64] >> (i % 64)) & 1u;
}

static void sn_tracker_set_bit(sn_tracker_origin_t *o, uint64_t pseq)
{
    assert(sn_tracker_in_window(o, pseq) && pseq != o->next);
    uint64_t i = pseq & (SN_TRACKER_WINDOW - 1);
    o->window[i / 64] |= UINT64_C(1) << (i % 64);
}

static void sn_tracker_clear_bit(sn_tracker_origin_t *o, uint64_t pseq)
{
    uint64_t i = pseq & (SN_TRACKER_WINDOW - 1);
    o->window[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

/* Drops the spans next has passed. */
static void sn_tracker_trim(sn_tracker_origin_t *o)
{
    uint32_t dead = 0;
    while (dead < o->nspans && o->spans[dead].to < o->next)
        dead++;
    if (dead) {
        memmove(o->spans, o->spans + dead, (o->nspans - dead) * sizeof o->spans[0]);
        o->nspans -= dead;
    }
    if (o->nspans && o->spans[0].from < o->next)
        o->spans[0].from = o->next;
    /* next only passes pseqs received or skipped, all of them <= high. */
    assert(o->high >= o->next - 1);
}

/* Moves next to `to` (> next), forgetting the bits it passes, then over the
 * received pseqs that follow. */
static void sn_tracker_advance(sn_tracker_origin_t *o, uint64_t to)
{
    assert(to > o->next);
    if (to - o->next >= SN_TRACKER_WINDOW) {
        /* Every set bit was below next + WINDOW <= to. */
        memset(o->window, 0, sizeof o->window);
    } else {
        for (uint64_t p = o->next; p < to; p++)
            sn_tracker_clear_bit(o, p);
    }
    o->next = to;
    while (sn_tracker_bit(o, o->next)) {
        sn_tracker_clear_bit(o, o->next);
        o->next++;
    }
    sn_tracker_trim(o);
}

/* ----------------------------------------------------------------- spans */

/* Records that [from, to], just above high, was noticed at now_ms. */
static void sn_tracker_add_span(sn_tracker_origin_t *o, uint64_t from, uint64_t to, uint64_t now_ms)
{
    assert(from > o->high && from <= to);
    if (o->nspans) {
        sn_tracker_span_t *last = &o->spans[o->nspans - 1];
        /* Same time and never reported: one span says it all (it may cover
         * the received pseqs between, which the bitmap tells apart). When
         * the list is full, the last span absorbs the range and its older
         * times stand for it: see "Fragmentation" in the header. */
        if ((last->noticed_ms == now_ms && last->reported_ms == SN_TRACKER_NEVER) ||
            o->nspans == SN_TRACKER_SPANS) {
            last->to = to;
            return;
        }
    }
    o->spans[o->nspans++] = (sn_tracker_span_t) {
        .from = from, .to = to, .noticed_ms = now_ms, .reported_ms = SN_TRACKER_NEVER,
    };
}

/* Raises high to new_high (if higher); the pseqs in (high, new_high] that
 * are not yet received become gaps noticed now. `through` is the last of
 * them that needs a span: new_high itself when it stays missing, new_high - 1
 * when it has just arrived. */
static void sn_tracker_raise(sn_tracker_origin_t *o, uint64_t new_high, uint64_t through, uint64_t now_ms)
{
    if (new_high <= o->high)
        return;
    if (through > o->high)
        sn_tracker_add_span(o, o->high + 1, through, now_ms);
    o->high = new_high;
}

/* --------------------------------------------------------------- origins */

/* The index of origin id, or where it would be inserted. */
static size_t sn_tracker_search(const sn_tracker_t *self, uint64_t id, bool *found)
{
    size_t lo = 0, hi = self->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (self->origins[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < self->count && self->origins[lo]->id == id;
    return lo;
}

static sn_tracker_origin_t *sn_tracker_find(const sn_tracker_t *self, uint64_t id)
{
    if (self->cached && self->cached->id == id)
        return self->cached;
    bool found;
    size_t i = sn_tracker_search(self, id, &found);
    return found ? self->origins[i] : NULL;
}

/* Finds origin id, creating it at next = 1 if unknown. NULL when memory is
 * short. */
static sn_tracker_origin_t *sn_tracker_get(sn_tracker_t *self, uint64_t id)
{
    if (self->cached && self->cached->id == id)
        return self->cached;
    bool found;
    size_t i = sn_tracker_search(self, id, &found);
    if (found)
        return self->cached = self->origins[i];

    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 16;
        sn_tracker_origin_t **origins = realloc(self->origins, capacity * sizeof *origins);
        if (!origins)
            return NULL;
        self->origins = origins;
        self->capacity = capacity;
    }
    sn_tracker_origin_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->id = id;
    o->next = 1;
    o->high = 0;
    memmove(self->origins + i + 1, self->origins + i, (self->count - i) * sizeof *self->origins);
    self->origins[i] = o;
    self->count++;
    return self->cached = o;
}

static void sn_tracker_tick(sn_tracker_t *self, uint64_t now_ms)
{
    if (now_ms > self->now_ms)
        self->now_ms = now_ms;
}

/* ------------------------------------------------------------ public API */

sn_tracker_t *sn_tracker_new(void)
{
    return calloc(1, sizeof(sn_tracker_t));
}

void sn_tracker_destroy(sn_tracker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_tracker_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->origins[i]);
    free(self->origins);
    free(self);
    *self_p = NULL;
}

sn_track_t sn_tracker_receive(sn_tracker_t *self, uint64_t origin, uint64_t pseq, uint64_t now_ms)
{
    if (!self || pseq == 0 || pseq > SN_TRACKER_PSEQ_MAX)
        return SN_TRACK_DUPLICATE;
    sn_tracker_tick(self, now_ms);
    sn_tracker_origin_t *o = sn_tracker_get(self, origin);
    if (!o)
        return SN_TRACK_BEYOND;

    if (pseq < o->next)
        return SN_TRACK_DUPLICATE;
    if (pseq == o->next) {
        /* high >= next - 1 = pseq - 1, so nothing below pseq is uncovered. */
        sn_tracker_raise(o, pseq, pseq - 1, now_ms);
        sn_tracker_advance(o, pseq + 1);
        return SN_TRACK_NEW;
    }
    if (!sn_tracker_in_window(o, pseq)) {
        /* Unrecordable, so pseq itself stays missing with what it overtook. */
        sn_tracker_raise(o, pseq, pseq, now_ms);
        return SN_TRACK_BEYOND;
    }
    if (sn_tracker_bit(o, pseq))
        return SN_TRACK_DUPLICATE;
    sn_tracker_set_bit(o, pseq);
    sn_tracker_raise(o, pseq, pseq - 1, now_ms);
    return SN_TRACK_NEW;
}

void sn_tracker_announce(sn_tracker_t *self, uint64_t origin, uint64_t last_pseq, uint64_t now_ms)
{
    if (!self || last_pseq == 0)
        return;
    sn_tracker_tick(self, now_ms);
    if (last_pseq > SN_TRACKER_PSEQ_MAX)
        last_pseq = SN_TRACKER_PSEQ_MAX;
    sn_tracker_origin_t *o = sn_tracker_get(self, origin);
    if (o)
        sn_tracker_raise(o, last_pseq, last_pseq, now_ms);
}

void sn_tracker_skip(sn_tracker_t *self, uint64_t origin, uint64_t from, uint64_t to)
{
    if (!self)
        return;
    if (from == 0)
        from = 1;
    if (to > SN_TRACKER_PSEQ_MAX)
        to = SN_TRACKER_PSEQ_MAX;
    if (from > to)
        return;
    sn_tracker_origin_t *o = sn_tracker_get(self, origin);
    if (!o || to < o->next)
        return;
    if (from <= o->next) {
        /* Nothing below `to` is left missing, so no span is needed. */
        if (to > o->high)
            o->high = to;
        sn_tracker_advance(o, to + 1);
        return;
    }
    /* The part beyond the window cannot be held and stays a gap, so the
     * span covers the whole range, not just the pseqs below `from`. */
    sn_tracker_raise(o, to, to, self->now_ms);
    for (uint64_t p = from; p <= to && sn_tracker_in_window(o, p); p++)
        sn_tracker_set_bit(o, p);
}

void sn_tracker_reset(sn_tracker_t *self, uint64_t origin, uint64_t next)
{
    if (!self)
        return;
    if (next == 0)
        next = 1;
    if (next > SN_TRACKER_PSEQ_MAX)
        next = SN_TRACKER_PSEQ_MAX;
    sn_tracker_origin_t *o = sn_tracker_get(self, origin);
    if (!o)
        return;
    o->next = next;
    o->high = next - 1;
    o->nspans = 0;
    memset(o->window, 0, sizeof o->window);
}

uint64_t sn_tracker_contiguous(const sn_tracker_t *self, uint64_t origin)
{
    const sn_tracker_origin_t *o = self ? sn_tracker_find(self, origin) : NULL;
    return o ? o->next - 1 : 0;
}

void sn_tracker_forget(sn_tracker_t *self, uint64_t origin)
{
    if (!self)
        return;
    bool found;
    size_t i = sn_tracker_search(self, origin, &found);
    if (!found)
        return;
    if (self->cached == self->origins[i])
        self->cached = NULL;
    free(self->origins[i]);
    memmove(self->origins + i, self->origins + i + 1, (self->count - i - 1) * sizeof *self->origins);
    self->count--;
}

size_t sn_tracker_origins(const sn_tracker_t *self)
{
    return self ? self->count : 0;
}

/* ------------------------------------------------------------- reporting */

static bool sn_tracker_elapsed(uint64_t now_ms, uint64_t since_ms, uint64_t period_ms)
{
    return now_ms >= since_ms && now_ms - since_ms >= period_ms;
}

/* The first missing pseq in [p, hi], or hi + 1. Beyond the window nothing
 * can have been recorded, so everything there is missing. Whole words of
 * received pseqs are skipped at once. */
static uint64_t sn_tracker_next_missing(const sn_tracker_origin_t *o, uint64_t p, uint64_t hi)
{
    while (p <= hi) {
        if (!sn_tracker_in_window(o, p))
            return p;
        uint64_t i = p & (SN_TRACKER_WINDOW - 1);
        if (i % 64 == 0 && o->window[i / 64] == UINT64_MAX) {
            p += 64;
            continue;
        }
        if (!sn_tracker_bit(o, p))
            return p;
        p++;
    }
    return hi + 1;
}

/* The last pseq of the run of missing pseqs starting at p (missing), <= hi. */
static uint64_t sn_tracker_run_end(const sn_tracker_origin_t *o, uint64_t p, uint64_t hi)
{
    while (p < hi) {
        if (!sn_tracker_in_window(o, p + 1))
            return hi;
        if (sn_tracker_bit(o, p + 1))
            return p;
        p++;
    }
    return p;
}

/* Frees a slot when the list is full and span j must be split, by joining
 * the two adjacent spans before j whose report stamps are closest. Every
 * span before j is due and stamped (they come before a due span, and were
 * either just reported or are waiting out their retry period), so the join
 * keeps the later stamp, which repeats neither, and the earlier noticed
 * time, which changes nothing for spans already due. Returns j's new index,
 * or j when there is no such pair. */
static uint32_t sn_tracker_join_reported(sn_tracker_origin_t *o, uint32_t j)
{
    uint32_t best = j;
    uint64_t best_diff = UINT64_MAX;
    for (uint32_t k = 0; k + 1 < j; k++) {
        uint64_t a = o->spans[k].reported_ms, b = o->spans[k + 1].reported_ms;
        if (a == SN_TRACKER_NEVER || b == SN_TRACKER_NEVER)
            continue;
        uint64_t diff = a > b ? a - b : b - a;
        if (diff < best_diff) {
            best = k;
            best_diff = diff;
        }
    }
    if (best == j)
        return j;
    sn_tracker_span_t *a = &o->spans[best], *b = &o->spans[best + 1];
    a->to = b->to;
    if (b->reported_ms > a->reported_ms)
        a->reported_ms = b->reported_ms;
    memmove(b, b + 1, (o->nspans - best - 2) * sizeof *b);
    o->nspans--;
    return j - 1;
}

/* Splits span j at pseq cut (from < cut <= to): the part below is stamped
 * reported at now_ms, the rest keeps its stamp, so a report cut short by
 * the caller's buffer resumes at the cut. When the previous span was
 * stamped by this same report, the part below joins it and no span is
 * added: both are due and reported, so the earlier noticed time they then
 * share changes nothing. When the list is full and no slot can be freed,
 * the whole span is stamped (see "Fragmentation" in the header). */
static void sn_tracker_split(sn_tracker_origin_t *o, uint32_t j, uint64_t cut, uint64_t now_ms)
{
    assert(o->spans[j].from < cut && cut <= o->spans[j].to);
    if (j > 0 && o->spans[j - 1].reported_ms == now_ms) {
        o->spans[j - 1].to = cut - 1;
        o->spans[j].from = cut;
        return;
    }
    if (o->nspans == SN_TRACKER_SPANS) {
        uint32_t moved = sn_tracker_join_reported(o, j);
        if (moved == j) {
            o->spans[j].reported_ms = now_ms;
            return;
        }
        j = moved;
    }
    memmove(&o->spans[j + 1], &o->spans[j], (o->nspans - j) * sizeof o->spans[0]);
    o->nspans++;
    o->spans[j].to = cut - 1;
    o->spans[j].reported_ms = now_ms;
    o->spans[j + 1].from = cut;
}

size_t sn_tracker_gaps(sn_tracker_t *self, uint64_t now_ms, uint64_t grace_ms,
                       uint64_t retry_ms, sn_gap_t *out, size_t max)
{
    if (!self || (!out && max))
        return 0;
    sn_tracker_tick(self, now_ms);
    size_t written = 0;
    for (size_t i = 0; i < self->count; i++) {
        sn_tracker_origin_t *o = self->origins[i];
        for (uint32_t j = 0; j < o->nspans; j++) {
            sn_tracker_span_t *s = &o->spans[j];
            if (!sn_tracker_elapsed(now_ms, s->noticed_ms, grace_ms))
                continue;
            if (s->reported_ms != SN_TRACKER_NEVER &&
                !sn_tracker_elapsed(now_ms, s->reported_ms, retry_ms))
                continue;
            assert(s->from >= o->next && s->to <= o->high);
            uint64_t p = s->from;
            bool wrote = false;  /* some of this span is in out */
            while ((p = sn_tracker_next_missing(o, p, s->to)) <= s->to) {
                uint64_t end = sn_tracker_run_end(o, p, s->to);
                sn_gap_t *prev = written ? &out[written - 1] : NULL;
                /* A run continuing one that ended at the previous span's
                 * last pseq is the same gap. */
                if (prev && prev->origin == o->id && prev->to == p - 1) {
                    prev->to = end;
                } else if (written == max) {
                    if (wrote)
                        sn_tracker_split(o, j, p, now_ms);
                    return written;
                } else {
                    out[written++] = (sn_gap_t) { .origin = o->id, .from = p, .to = end };
                }
                wrote = true;
                p = end + 1;
            }
            s->reported_ms = now_ms;
        }
    }
    return written;
}
