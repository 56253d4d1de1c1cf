/*
 * test_tracker.c - per-origin receive state (gossip/sn_tracker.c).
 *
 * Arrival outcomes (new, duplicate, beyond the window), reordering, gaps
 * held back for the grace period and not repeated within the retry period,
 * lost tails revealed by heartbeats, skip and reset, many origins, a full
 * output buffer, more separate gaps than the tracker keeps spans for, and
 * randomized streams (shuffled, duplicated, partly dropped) checked against
 * a model: the gaps reported are exactly the pseqs that never arrived, and
 * skipping them makes the origin contiguous up to its last pseq.
 *
 * Randomized tests print their seed; set SN_TEST_SEED to replay one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sn_tracker.h"

#define GRACE 50
#define RETRY 200

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*: deterministic for a given seed on every platform */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t rng_below(uint64_t n)
{
    return rng_next() % n;
}

static uint64_t test_seed(void)
{
    const char *s = getenv("SN_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    return (uint64_t) time(NULL) ^ ((uint64_t) clock() << 32);
}

static void receive_all(sn_tracker_t *t, uint64_t origin, uint64_t from, uint64_t to,
                        uint64_t now)
{
    for (uint64_t p = from; p <= to; p++)
        assert_int_equal(sn_tracker_receive(t, origin, p, now), SN_TRACK_NEW);
}

/* Asserts that gaps() at `now` returns exactly the n ranges given as
 * (origin, from, to) triples. */
static void assert_gaps(sn_tracker_t *t, uint64_t now, size_t n, const sn_gap_t *want)
{
    sn_gap_t out[64];
    size_t got = sn_tracker_gaps(t, now, GRACE, RETRY, out, 64);
    if (got != n) {
        for (size_t i = 0; i < got; i++)
            print_message("got gap %zu: origin %llu [%llu, %llu]\n", i,
                          (unsigned long long) out[i].origin,
                          (unsigned long long) out[i].from, (unsigned long long) out[i].to);
    }
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].origin, want[i].origin);
        assert_int_equal(out[i].from, want[i].from);
        assert_int_equal(out[i].to, want[i].to);
    }
}

static void assert_no_gaps(sn_tracker_t *t, uint64_t now)
{
    assert_gaps(t, now, 0, NULL);
}

/* ------------------------------------------------------ basic outcomes */

static void test_destroy_nulls_the_pointer_and_accepts_null(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    assert_non_null(t);
    sn_tracker_receive(t, 1, 1, 0);
    sn_tracker_destroy(&t);
    assert_null(t);
    sn_tracker_destroy(&t);
    sn_tracker_destroy(NULL);
}

static void test_in_order_arrivals_are_new_and_advance_contiguous(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    assert_int_equal(sn_tracker_contiguous(t, 7), 0);
    for (uint64_t p = 1; p <= 10000; p++) {
        assert_int_equal(sn_tracker_receive(t, 7, p, p), SN_TRACK_NEW);
        assert_int_equal(sn_tracker_contiguous(t, 7), p);
    }
    assert_no_gaps(t, 1000000);
    sn_tracker_destroy(&t);
}

static void test_duplicates_are_dropped_below_next_and_in_the_window(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 5, 0);
    assert_int_equal(sn_tracker_receive(t, 1, 3, 0), SN_TRACK_DUPLICATE);   /* below next */
    assert_int_equal(sn_tracker_receive(t, 1, 5, 0), SN_TRACK_DUPLICATE);
    assert_int_equal(sn_tracker_receive(t, 1, 9, 0), SN_TRACK_NEW);         /* out of order */
    assert_int_equal(sn_tracker_receive(t, 1, 9, 0), SN_TRACK_DUPLICATE);   /* in the window */
    assert_int_equal(sn_tracker_contiguous(t, 1), 5);
    sn_tracker_destroy(&t);
}

static void test_invalid_pseqs_are_dropped_and_create_nothing(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    assert_int_equal(sn_tracker_receive(t, 1, 0, 0), SN_TRACK_DUPLICATE);
    assert_int_equal(sn_tracker_receive(t, 1, UINT64_MAX, 0), SN_TRACK_DUPLICATE);
    assert_int_equal(sn_tracker_origins(t), 0);
    sn_tracker_destroy(&t);
}

static void test_reordering_within_the_window_leaves_no_gap(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    const uint64_t order[] = {1, 4, 3, 6, 2, 5, 8, 7};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        assert_int_equal(sn_tracker_receive(t, 1, order[i], i), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_contiguous(t, 1), 8);
    assert_no_gaps(t, 1000);
    sn_tracker_destroy(&t);
}

static void test_unknown_origin_starts_at_one(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    assert_int_equal(sn_tracker_receive(t, 42, 5, 100), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_contiguous(t, 42), 0);
    assert_gaps(t, 100 + GRACE, 1, (sn_gap_t[]) {{42, 1, 4}});
    sn_tracker_destroy(&t);
}

/* ------------------------------------------------------- gaps and time */

static void test_gap_is_reported_only_after_the_grace_period(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 3, 1000);
    sn_tracker_receive(t, 1, 6, 1000);   /* 4 and 5 noticed missing at 1000 */
    assert_no_gaps(t, 1000);
    assert_no_gaps(t, 1000 + GRACE - 1);
    assert_gaps(t, 1000 + GRACE, 1, (sn_gap_t[]) {{1, 4, 5}});
    sn_tracker_destroy(&t);
}

static void test_late_arrival_within_the_grace_period_is_never_reported(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 3, 1000);
    sn_tracker_receive(t, 1, 5, 1000);
    assert_no_gaps(t, 1000 + GRACE - 1);
    assert_int_equal(sn_tracker_receive(t, 1, 4, 1000 + GRACE - 1), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_contiguous(t, 1), 5);
    assert_no_gaps(t, 1000 + 10 * GRACE);
    sn_tracker_destroy(&t);
}

static void test_gap_is_not_reported_again_within_the_retry_period(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 3, 0);
    sn_tracker_receive(t, 1, 5, 0);
    assert_gaps(t, GRACE, 1, (sn_gap_t[]) {{1, 4, 4}});
    assert_no_gaps(t, GRACE);
    assert_no_gaps(t, GRACE + RETRY - 1);
    assert_gaps(t, GRACE + RETRY, 1, (sn_gap_t[]) {{1, 4, 4}});
    assert_no_gaps(t, GRACE + RETRY + 1);
    /* Repaired at last: never again. */
    assert_int_equal(sn_tracker_receive(t, 1, 4, GRACE + RETRY + 2), SN_TRACK_NEW);
    assert_no_gaps(t, 100 * RETRY);
    sn_tracker_destroy(&t);
}

static void test_new_gap_is_reported_while_an_older_one_waits_for_its_retry(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 3, 0);
    sn_tracker_receive(t, 1, 5, 0);     /* 4 missing since 0 */
    assert_gaps(t, GRACE, 1, (sn_gap_t[]) {{1, 4, 4}});
    sn_tracker_receive(t, 1, 7, 100);   /* 6 missing since 100 */
    assert_gaps(t, 100 + GRACE, 1, (sn_gap_t[]) {{1, 6, 6}});
    assert_gaps(t, GRACE + RETRY, 1, (sn_gap_t[]) {{1, 4, 4}});
    sn_tracker_destroy(&t);
}

static void test_announce_reveals_a_lost_tail(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 3, 1, 7, 0);
    assert_no_gaps(t, 1000);
    sn_tracker_announce(t, 3, 10, 1000);
    assert_no_gaps(t, 1000 + GRACE - 1);
    assert_gaps(t, 1000 + GRACE, 1, (sn_gap_t[]) {{3, 8, 10}});
    assert_int_equal(sn_tracker_contiguous(t, 3), 7);
    sn_tracker_destroy(&t);
}

static void test_announce_lower_than_seen_is_ignored(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 3, 1, 7, 0);
    sn_tracker_announce(t, 3, 7, 0);
    sn_tracker_announce(t, 3, 4, 0);
    sn_tracker_announce(t, 3, 0, 0);
    assert_no_gaps(t, 1000);
    /* Nor does a lower announce re-time a gap already noticed. */
    sn_tracker_announce(t, 3, 9, 1000);
    sn_tracker_announce(t, 3, 8, 2000);
    sn_tracker_announce(t, 3, 9, 2000);
    assert_gaps(t, 1000 + GRACE, 1, (sn_gap_t[]) {{3, 8, 9}});
    assert_int_equal(sn_tracker_contiguous(t, 3), 7);
    sn_tracker_destroy(&t);
}

static void test_ranges_noticed_at_different_times_are_merged_when_both_are_due(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    sn_tracker_receive(t, 1, 1, 0);
    sn_tracker_announce(t, 1, 5, 0);     /* 2..5 since 0 */
    sn_tracker_announce(t, 1, 9, 30);    /* 6..9 since 30 */
    assert_gaps(t, GRACE, 1, (sn_gap_t[]) {{1, 2, 5}});
    /* Once both are due, and the first is due again, one range. */
    assert_gaps(t, GRACE + RETRY, 1, (sn_gap_t[]) {{1, 2, 9}});
    sn_tracker_destroy(&t);
}

static void test_gaps_come_in_origin_order_then_pseq_order(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    const uint64_t origins[] = {300, 10, 2000};
    for (size_t i = 0; i < 3; i++) {
        uint64_t o = origins[i];
        sn_tracker_receive(t, o, 2, 0);
        sn_tracker_receive(t, o, 4, 0);
        sn_tracker_receive(t, o, 5, 0);
        sn_tracker_announce(t, o, 8, 0);
    }
    assert_gaps(t, GRACE, 9, (sn_gap_t[]) {
        {10, 1, 1}, {10, 3, 3}, {10, 6, 8},
        {300, 1, 1}, {300, 3, 3}, {300, 6, 8},
        {2000, 1, 1}, {2000, 3, 3}, {2000, 6, 8},
    });
    sn_tracker_destroy(&t);
}

static void test_a_full_output_resumes_where_it_stopped(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    /* 2, 4, 6 missing, all noticed at 0 in one span; 8 on another origin. */
    for (uint64_t p = 1; p <= 7; p += 2)
        sn_tracker_receive(t, 1, p, 0);
    sn_tracker_announce(t, 2, 1, 0);
    sn_gap_t out[3];
    const uint64_t want[] = {2, 4, 6};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(sn_tracker_gaps(t, GRACE, GRACE, RETRY, out, 1), 1);
        assert_int_equal(out[0].origin, 1);
        assert_int_equal(out[0].from, want[i]);
        assert_int_equal(out[0].to, want[i]);
    }
    assert_int_equal(sn_tracker_gaps(t, GRACE, GRACE, RETRY, out, 1), 1);
    assert_int_equal(out[0].origin, 2);
    assert_int_equal(sn_tracker_gaps(t, GRACE, GRACE, RETRY, out, 1), 0);
    /* A zero-sized output writes nothing and marks nothing reported. */
    assert_int_equal(sn_tracker_gaps(t, GRACE + RETRY, GRACE, RETRY, NULL, 0), 0);
    assert_int_equal(sn_tracker_gaps(t, GRACE + RETRY, GRACE, RETRY, out, 3), 3);
    assert_int_equal(out[0].from, 2);
    assert_int_equal(out[2].from, 6);
    sn_tracker_destroy(&t);
}

static void test_more_separate_gaps_than_spans_are_all_reported(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    /* Every odd pseq arrives, each at its own time: 4 * SN_TRACKER_SPANS
     * separately noticed gaps, more than the tracker times one by one. */
    const uint64_t n = 8 * SN_TRACKER_SPANS;
    for (uint64_t p = 1; p <= n + 1; p += 2)
        assert_int_equal(sn_tracker_receive(t, 1, p, p), SN_TRACK_NEW);
    bool seen[8 * SN_TRACKER_SPANS + 2] = {false};
    sn_gap_t out[8];
    uint64_t now = 10 * n;
    uint64_t unseen = n / 2;
    /* A small output many times over, as a repair loop would ask; an empty
     * answer means waiting for the retry period. Every gap must come out
     * within a few retry periods. */
    for (int calls = 0; unseen > 0; calls++) {
        assert_true(calls < 1000);
        size_t got = sn_tracker_gaps(t, now, GRACE, RETRY, out, 8);
        for (size_t i = 0; i < got; i++) {
            assert_int_equal(out[i].from, out[i].to);
            assert_true(out[i].from % 2 == 0 && out[i].from <= n);
            if (!seen[out[i].from])
                unseen--;
            seen[out[i].from] = true;
        }
        now += got ? 1 : RETRY;
    }
    assert_true(now < 10 * n + 3 * RETRY);
    /* Repairing all of them makes the origin whole. */
    for (uint64_t p = 2; p <= n; p += 2)
        assert_int_equal(sn_tracker_receive(t, 1, p, now), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_contiguous(t, 1), n + 1);
    assert_no_gaps(t, now + 10 * RETRY);
    sn_tracker_destroy(&t);
}

/* -------------------------------------------------- the window's limit */

static void test_arrival_beyond_the_window_is_beyond_and_stays_a_gap(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    receive_all(t, 1, 1, 10, 0);
    const uint64_t far = 11 + SN_TRACKER_WINDOW;   /* next = 11 */
    assert_int_equal(sn_tracker_receive(t, 1, far - 1, 0), SN_TRACK_NEW);  /* last slot */
    assert_int_equal(sn_tracker_receive(t, 1, far, 0), SN_TRACK_BEYOND);
    assert_int_equal(sn_tracker_receive(t, 1, far, 0), SN_TRACK_BEYOND);   /* still can't hold it */
    /* Everything from next up to and including the unrecordable arrival,
     * except the one held in the last slot of the window. */
    assert_gaps(t, GRACE, 2, (sn_gap_t[]) {{1, 11, far - 2}, {1, far, far}});
    /* Once next moves, the resent pseq fits and is new again. */
    receive_all(t, 1, 11, 20, 1);
    assert_int_equal(sn_tracker_receive(t, 1, far, 1), SN_TRACK_NEW);
    sn_tracker_skip(t, 1, 21, far - 2);
    assert_int_equal(sn_tracker_contiguous(t, 1), far);
    assert_no_gaps(t, 10 * RETRY);
    sn_tracker_destroy(&t);
}

/* ------------------------------------------------------- skip and reset */

static void test_skip_over_received_pseqs_moves_next_past_them(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    sn_tracker_receive(t, 1, 1, 0);
    sn_tracker_receive(t, 1, 3, 0);
    sn_tracker_receive(t, 1, 5, 0);
    sn_tracker_receive(t, 1, 6, 0);
    sn_tracker_receive(t, 1, 8, 0);
    sn_tracker_skip(t, 1, 2, 4);      /* includes the received 3 */
    assert_int_equal(sn_tracker_contiguous(t, 1), 6);
    assert_gaps(t, GRACE, 1, (sn_gap_t[]) {{1, 7, 7}});
    sn_tracker_skip(t, 1, 1, 100);    /* starts below next, ends above high */
    assert_int_equal(sn_tracker_contiguous(t, 1), 100);
    assert_int_equal(sn_tracker_receive(t, 1, 100, 0), SN_TRACK_DUPLICATE);
    assert_int_equal(sn_tracker_receive(t, 1, 101, 0), SN_TRACK_NEW);
    assert_no_gaps(t, 10 * RETRY);
    sn_tracker_destroy(&t);
}

static void test_skip_above_next_is_held_like_arrivals(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    sn_tracker_receive(t, 1, 1, 500);
    sn_tracker_skip(t, 1, 5, 7);      /* the origin has published 7 */
    assert_int_equal(sn_tracker_contiguous(t, 1), 1);
    assert_gaps(t, 500 + GRACE, 1, (sn_gap_t[]) {{1, 2, 4}});
    assert_int_equal(sn_tracker_receive(t, 1, 6, 600), SN_TRACK_DUPLICATE);
    receive_all(t, 1, 2, 4, 600);
    assert_int_equal(sn_tracker_contiguous(t, 1), 7);
    sn_tracker_skip(t, 1, 9, 3);      /* empty range */
    sn_tracker_skip(t, 1, 2, 5);      /* already accounted for */
    assert_int_equal(sn_tracker_contiguous(t, 1), 7);
    sn_tracker_destroy(&t);
}

static void test_reset_starts_an_origin_at_the_cut_and_forgets_its_window(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    sn_tracker_reset(t, 9, 101);      /* snapshot cut at 100 */
    assert_int_equal(sn_tracker_contiguous(t, 9), 100);
    assert_int_equal(sn_tracker_receive(t, 9, 50, 0), SN_TRACK_DUPLICATE);
    assert_int_equal(sn_tracker_receive(t, 9, 101, 0), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_receive(t, 9, 105, 0), SN_TRACK_NEW);
    sn_tracker_announce(t, 9, 110, 0);
    /* A restart lower down: the window and gaps above are forgotten. */
    sn_tracker_reset(t, 9, 11);
    assert_int_equal(sn_tracker_contiguous(t, 9), 10);
    assert_no_gaps(t, 10 * RETRY);
    assert_int_equal(sn_tracker_receive(t, 9, 105, 0), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_receive(t, 9, 11, 0), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_contiguous(t, 9), 11);
    sn_tracker_reset(t, 8, 0);        /* 0 means the beginning */
    assert_int_equal(sn_tracker_contiguous(t, 8), 0);
    assert_int_equal(sn_tracker_receive(t, 8, 1, 0), SN_TRACK_NEW);
    sn_tracker_destroy(&t);
}

/* -------------------------------------------------------------- origins */

static void test_many_origins_are_tracked_independently_and_forgotten(void **state)
{
    (void) state;
    sn_tracker_t *t = sn_tracker_new();
    const uint64_t n = 3000;
    /* Ids inserted in a scrambled order: i * a large odd number. */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t id = i * UINT64_C(0x9E3779B97F4A7C15);
        receive_all(t, id, 1, i % 7 + 1, 0);
    }
    assert_int_equal(sn_tracker_origins(t), n);
    for (uint64_t i = 0; i < n; i++)
        assert_int_equal(sn_tracker_contiguous(t, i * UINT64_C(0x9E3779B97F4A7C15)), i % 7 + 1);
    for (uint64_t i = 0; i < n; i += 2)
        sn_tracker_forget(t, i * UINT64_C(0x9E3779B97F4A7C15));
    sn_tracker_forget(t, 12345);      /* unknown: no effect */
    assert_int_equal(sn_tracker_origins(t), n / 2);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t id = i * UINT64_C(0x9E3779B97F4A7C15);
        assert_int_equal(sn_tracker_contiguous(t, id), i % 2 ? i % 7 + 1 : 0);
    }
    /* A forgotten origin comes back fresh. */
    assert_int_equal(sn_tracker_receive(t, 0, 1, 0), SN_TRACK_NEW);
    assert_int_equal(sn_tracker_origins(t), n / 2 + 1);
    sn_tracker_destroy(&t);
}

/* ----------------------------------------------------- randomized streams */

#define MAX_ORIGINS 3
#define MAX_PSEQ 20000

typedef struct {
    uint64_t id;
    uint64_t last;                  /* pseqs 1..last are published */
    uint64_t sent;                  /* blocks delivered up to here */
    uint64_t next;                  /* the model's contiguous mark + 1 */
    bool recorded[MAX_PSEQ + 2];    /* what the tracker should hold */
    bool dropped[MAX_PSEQ + 2];     /* never delivered by the stream */
    uint64_t reported_at[MAX_PSEQ + 2];   /* 0: never reported */
} stream_t;

/* The model's prediction for an arrival, applied to the model. */
static sn_track_t model_receive(stream_t *s, uint64_t p)
{
    if (p < s->next || s->recorded[p])
        return SN_TRACK_DUPLICATE;
    if (p - s->next >= SN_TRACKER_WINDOW)
        return SN_TRACK_BEYOND;
    s->recorded[p] = true;
    while (s->next <= s->last && s->recorded[s->next])
        s->next++;
    return SN_TRACK_NEW;
}

static void deliver(sn_tracker_t *t, stream_t *s, uint64_t p, uint64_t now)
{
    sn_track_t want = model_receive(s, p);
    sn_track_t got = sn_tracker_receive(t, s->id, p, now);
    if (got != want)
        print_message("origin %llu pseq %llu: got %d, want %d\n",
                      (unsigned long long) s->id, (unsigned long long) p, got, want);
    assert_int_equal(got, want);
}

/* Checks one gaps() answer: every pseq in it is missing, none repeats
 * within the retry period, and the ranges are sorted. Returns how many
 * pseqs were reported. */
static uint64_t check_gaps(stream_t *streams, size_t nstreams, const sn_gap_t *out, size_t n,
                           uint64_t now, bool dropped_only)
{
    uint64_t count = 0;
    for (size_t i = 0; i < n; i++) {
        stream_t *s = NULL;
        for (size_t k = 0; k < nstreams; k++)
            if (streams[k].id == out[i].origin)
                s = &streams[k];
        assert_non_null(s);
        assert_true(out[i].from <= out[i].to && out[i].to <= s->last);
        if (i > 0 && out[i - 1].origin == out[i].origin)
            assert_true(out[i - 1].to + 1 < out[i].from);
        for (uint64_t p = out[i].from; p <= out[i].to; p++) {
            assert_false(s->recorded[p]);
            assert_true(p >= s->next);
            if (dropped_only)
                assert_true(s->dropped[p]);
            if (s->reported_at[p])
                assert_true(now - s->reported_at[p] >= RETRY);
            s->reported_at[p] = now;
            count++;
        }
    }
    return count;
}

/*
 * Streams from up to three origins, interleaved block by block. Inside a
 * block of up to 64 pseqs the order is shuffled and some are dropped; any
 * earlier pseq may be delivered again as a duplicate. A heartbeat follows
 * each block, and gaps are asked for between blocks with a grace period of
 * a block's length, so nothing still in flight is ever reported. With
 * `repair`, reported gaps are resent a little later (and streams may
 * outrun the window); without, streams stay within the window and the
 * gaps reported at the end must be exactly the dropped pseqs.
 */
static void run_random_streams(uint64_t seed, bool repair)
{
    rng_state = seed ? seed : 1;
    size_t nstreams = 1 + (size_t) rng_below(MAX_ORIGINS);
    stream_t *streams = calloc(nstreams, sizeof *streams);
    assert_non_null(streams);
    uint64_t block = 1 + rng_below(64);
    uint64_t drop_pct = rng_below(25);
    uint64_t dup_pct = rng_below(10);
    uint64_t max_out = 1 + rng_below(32);
    for (size_t k = 0; k < nstreams; k++) {
        streams[k].id = (rng_next() & ~UINT64_C(3)) | k;   /* distinct */
        uint64_t cap = repair ? MAX_PSEQ : SN_TRACKER_WINDOW;
        streams[k].last = 1 + rng_below(cap);
        streams[k].next = 1;
    }

    sn_tracker_t *t = sn_tracker_new();
    uint64_t now = 1;
    sn_gap_t out[32];
    /* Resends scheduled by the repair loop: (stream, pseq, due time). */
    typedef struct { size_t k; uint64_t p; uint64_t due; } resend_t;
    size_t nresend = 0, resend_cap = 1024;
    resend_t *resends = malloc(resend_cap * sizeof *resends);
    assert_non_null(resends);

    for (;;) {
        /* Pick a stream with something left to send. */
        size_t live[MAX_ORIGINS], nlive = 0;
        for (size_t k = 0; k < nstreams; k++)
            if (streams[k].sent < streams[k].last)
                live[nlive++] = k;
        if (nlive == 0)
            break;
        stream_t *s = &streams[live[rng_below(nlive)]];

        uint64_t from = s->sent + 1;
        uint64_t to = from + block - 1 > s->last ? s->last : from + block - 1;
        uint64_t order[64];
        size_t n = 0;
        for (uint64_t p = from; p <= to; p++)
            order[n++] = p;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t) rng_below(i);
            uint64_t tmp = order[i - 1];
            order[i - 1] = order[j];
            order[j] = tmp;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t p = order[i];
            if (rng_below(100) < drop_pct) {
                s->dropped[p] = true;
            } else {
                deliver(t, s, p, now);
                now++;
            }
            if (rng_below(100) < dup_pct) {
                /* Another copy of something already held. Duplicates do
                 * not advance time: the grace period covers the block's
                 * own reordering only. */
                uint64_t q = 1 + rng_below(p);
                if (q < s->next || s->recorded[q])
                    deliver(t, s, q, now);
            }
        }
        s->sent = to;
        sn_tracker_announce(t, s->id, to, now);

        /* The repair loop's turn: due resends, then a request. */
        for (size_t i = 0; i < nresend;) {
            if (resends[i].due <= now) {
                stream_t *r = &streams[resends[i].k];
                deliver(t, r, resends[i].p, now);
                resends[i] = resends[--nresend];
            } else {
                i++;
            }
        }
        size_t got = sn_tracker_gaps(t, now, block, RETRY, out, max_out);
        check_gaps(streams, nstreams, out, got, now, !repair);
        if (repair) {
            for (size_t i = 0; i < got; i++) {
                size_t k = 0;
                while (streams[k].id != out[i].origin)
                    k++;
                for (uint64_t p = out[i].from; p <= out[i].to; p++) {
                    if (nresend == resend_cap) {
                        resend_cap *= 2;
                        resends = realloc(resends, resend_cap * sizeof *resends);
                        assert_non_null(resends);
                    }
                    resends[nresend++] = (resend_t) { k, p, now + 1 + rng_below(RETRY / 2) };
                }
            }
        }
    }

    /* Final heartbeats, then everything is due: the gaps reported must be
     * exactly what the tracker does not hold, and without repair, exactly
     * the dropped pseqs. */
    for (size_t k = 0; k < nstreams; k++)
        sn_tracker_announce(t, streams[k].id, streams[k].last, now);
    now += block + RETRY;
    uint64_t missing = 0;
    for (size_t k = 0; k < nstreams; k++)
        for (uint64_t p = streams[k].next; p <= streams[k].last; p++) {
            missing += !streams[k].recorded[p];
            if (!repair)
                assert_true(streams[k].recorded[p] != streams[k].dropped[p]);
        }
    size_t cap = 2 * SN_TRACKER_WINDOW + 2 * MAX_PSEQ;
    sn_gap_t *all = malloc(cap * sizeof *all);
    assert_non_null(all);
    size_t got = sn_tracker_gaps(t, now, block, RETRY, all, cap);
    assert_true(got < cap);
    assert_int_equal(check_gaps(streams, nstreams, all, got, now, !repair), missing);
    assert_int_equal(sn_tracker_gaps(t, now, block, RETRY, all, cap), 0);

    /* Skipping the reported gaps makes every origin whole. */
    for (size_t i = 0; i < got; i++)
        sn_tracker_skip(t, all[i].origin, all[i].from, all[i].to);
    for (size_t k = 0; k < nstreams; k++)
        assert_int_equal(sn_tracker_contiguous(t, streams[k].id), streams[k].last);
    assert_int_equal(sn_tracker_gaps(t, now + 10 * RETRY, block, RETRY, all, cap), 0);
    assert_int_equal(sn_tracker_origins(t), nstreams);

    free(all);
    free(resends);
    free(streams);
    sn_tracker_destroy(&t);
}

static void test_random_streams_report_exactly_the_dropped_pseqs(void **state)
{
    (void) state;
    uint64_t seed = test_seed();
    print_message("seed %llu (SN_TEST_SEED=%llu to replay)\n",
                  (unsigned long long) seed, (unsigned long long) seed);
    rng_state = seed ? seed : 1;
    for (int round = 0; round < 100; round++) {
        uint64_t round_seed = rng_next();
        uint64_t saved = rng_state;
        run_random_streams(round_seed, false);
        rng_state = saved;
    }
}

static void test_random_streams_with_repairs_become_whole(void **state)
{
    (void) state;
    uint64_t seed = test_seed();
    print_message("seed %llu (SN_TEST_SEED=%llu to replay)\n",
                  (unsigned long long) seed, (unsigned long long) seed);
    rng_state = seed ? seed : 1;
    for (int round = 0; round < 30; round++) {
        uint64_t round_seed = rng_next();
        uint64_t saved = rng_state;
        run_random_streams(round_seed, true);
        rng_state = saved;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_nulls_the_pointer_and_accepts_null),
        cmocka_unit_test(test_in_order_arrivals_are_new_and_advance_contiguous),
        cmocka_unit_test(test_duplicates_are_dropped_below_next_and_in_the_window),
        cmocka_unit_test(test_invalid_pseqs_are_dropped_and_create_nothing),
        cmocka_unit_test(test_reordering_within_the_window_leaves_no_gap),
        cmocka_unit_test(test_unknown_origin_starts_at_one),
        cmocka_unit_test(test_gap_is_reported_only_after_the_grace_period),
        cmocka_unit_test(test_late_arrival_within_the_grace_period_is_never_reported),
        cmocka_unit_test(test_gap_is_not_reported_again_within_the_retry_period),
        cmocka_unit_test(test_new_gap_is_reported_while_an_older_one_waits_for_its_retry),
        cmocka_unit_test(test_announce_reveals_a_lost_tail),
        cmocka_unit_test(test_announce_lower_than_seen_is_ignored),
        cmocka_unit_test(test_ranges_noticed_at_different_times_are_merged_when_both_are_due),
        cmocka_unit_test(test_gaps_come_in_origin_order_then_pseq_order),
        cmocka_unit_test(test_a_full_output_resumes_where_it_stopped),
        cmocka_unit_test(test_more_separate_gaps_than_spans_are_all_reported),
        cmocka_unit_test(test_arrival_beyond_the_window_is_beyond_and_stays_a_gap),
        cmocka_unit_test(test_skip_over_received_pseqs_moves_next_past_them),
        cmocka_unit_test(test_skip_above_next_is_held_like_arrivals),
        cmocka_unit_test(test_reset_starts_an_origin_at_the_cut_and_forgets_its_window),
        cmocka_unit_test(test_many_origins_are_tracked_independently_and_forgotten),
        cmocka_unit_test(test_random_streams_report_exactly_the_dropped_pseqs),
        cmocka_unit_test(test_random_streams_with_repairs_become_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
