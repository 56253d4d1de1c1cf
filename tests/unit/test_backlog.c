/*
 * test_backlog.c - the origin's resend buffer (gossip/sn_backlog.c).
 *
 * Order and contents of what is held, the ring wrapping, each
 * bound dropping the oldest, oversize and out-of-sequence pushes leaving the
 * backlog unchanged, lookups on both sides of the range, and a million small
 * pushes staying within both bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sn_backlog.h"

/* ------------------------------------------------------------- helpers */

/* A body whose bytes say which pseq it belongs to. */
static size_t body_for(uint64_t pseq, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t) (pseq * 31u + i);
    return len;
}

static void push_ok(sn_backlog_t *b, uint64_t pseq, size_t len)
{
    uint8_t buf[256];
    assert_true(len <= sizeof buf);
    body_for(pseq, buf, len);
    assert_int_equal(sn_backlog_push(b, pseq, (uint32_t) pseq ^ 0xA5u, buf, len), 0);
}

static void assert_holds(sn_backlog_t *b, uint64_t pseq, size_t len)
{
    const uint8_t *body = NULL;
    size_t got_len = 0;
    uint32_t flags = 0;
    uint8_t want[256];
    assert_int_equal(sn_backlog_get(b, pseq, &body, &got_len, &flags), 0);
    assert_non_null(body);
    assert_int_equal(got_len, len);
    assert_int_equal(flags, (uint32_t) pseq ^ 0xA5u);
    body_for(pseq, want, len);
    assert_memory_equal(body, want, len);
}

static void assert_range(sn_backlog_t *b, uint64_t first, uint64_t last)
{
    assert_int_equal(sn_backlog_first(b), first);
    assert_int_equal(sn_backlog_last(b), last);
}

/* --------------------------------------------------------------- tests */

static void test_new_refuses_zero_bounds(void **state)
{
    (void) state;
    assert_null(sn_backlog_new(0, 10));
    assert_null(sn_backlog_new(1024, 0));
}

static void test_destroy_nulls_the_pointer_and_accepts_null(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1024, 10);
    assert_non_null(b);
    push_ok(b, 1, 10);
    sn_backlog_destroy(&b);
    assert_null(b);
    sn_backlog_destroy(&b);
    sn_backlog_destroy(NULL);
}

static void test_empty_backlog_has_no_range_and_finds_nothing(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1024, 10);
    assert_range(b, 0, 0);
    assert_int_equal(sn_backlog_bytes(b), 0);
    const uint8_t *body = NULL;
    assert_int_equal(sn_backlog_get(b, 0, &body, NULL, NULL), SN_ENOTFOUND);
    assert_int_equal(sn_backlog_get(b, 1, &body, NULL, NULL), SN_ENOTFOUND);
    assert_null(body);
    sn_backlog_destroy(&b);
}

static void test_pushes_are_held_in_order_with_their_flags(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1 << 20, 100);
    for (uint64_t p = 1; p <= 50; p++)
        push_ok(b, p, (size_t) p);
    assert_range(b, 1, 50);
    assert_int_equal(sn_backlog_bytes(b), 50 * 51 / 2);
    for (uint64_t p = 1; p <= 50; p++)
        assert_holds(b, p, (size_t) p);
    sn_backlog_destroy(&b);
}

static void test_first_push_may_start_anywhere(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1024, 10);
    push_ok(b, 1000, 4);
    push_ok(b, 1001, 4);
    assert_range(b, 1000, 1001);
    assert_holds(b, 1000, 4);
    sn_backlog_destroy(&b);
}

static void test_out_of_sequence_push_is_einval_and_changes_nothing(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1024, 10);
    push_ok(b, 5, 4);
    uint8_t x[4] = {0};
    assert_int_equal(sn_backlog_push(b, 5, 0, x, 4), SN_EINVAL);   /* repeat */
    assert_int_equal(sn_backlog_push(b, 7, 0, x, 4), SN_EINVAL);   /* hole */
    assert_int_equal(sn_backlog_push(b, 4, 0, x, 4), SN_EINVAL);   /* backwards */
    assert_int_equal(sn_backlog_push(b, 0, 0, x, 4), SN_EINVAL);
    assert_int_equal(sn_backlog_push(b, 6, 0, NULL, 4), SN_EINVAL);
    assert_int_equal(sn_backlog_push(NULL, 6, 0, x, 4), SN_EINVAL);
    assert_range(b, 5, 5);
    assert_int_equal(sn_backlog_bytes(b), 4);
    assert_holds(b, 5, 4);
    sn_backlog_destroy(&b);
}

static void test_oversize_body_is_etoobig_and_changes_nothing(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(100, 10);
    push_ok(b, 1, 60);
    push_ok(b, 2, 40);
    uint8_t big[101] = {0};
    assert_int_equal(sn_backlog_push(b, 3, 0, big, sizeof big), SN_ETOOBIG);
    assert_range(b, 1, 2);
    assert_int_equal(sn_backlog_bytes(b), 100);
    assert_holds(b, 1, 60);
    assert_holds(b, 2, 40);
    /* Exactly the budget is accepted, and evicts everything else. */
    assert_int_equal(sn_backlog_push(b, 3, 0, big, 100), 0);
    assert_range(b, 3, 3);
    assert_int_equal(sn_backlog_bytes(b), 100);
    sn_backlog_destroy(&b);
}

static void test_entry_bound_drops_the_oldest(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1 << 20, 8);
    for (uint64_t p = 1; p <= 8; p++)
        push_ok(b, p, 10);
    assert_range(b, 1, 8);
    push_ok(b, 9, 10);
    assert_range(b, 2, 9);
    assert_int_equal(sn_backlog_bytes(b), 80);
    assert_int_equal(sn_backlog_get(b, 1, NULL, NULL, NULL), SN_ENOTFOUND);
    for (uint64_t p = 2; p <= 9; p++)
        assert_holds(b, p, 10);
    sn_backlog_destroy(&b);
}

static void test_byte_bound_drops_as_many_oldest_as_needed(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(100, 1000);
    for (uint64_t p = 1; p <= 10; p++)
        push_ok(b, p, 10);
    assert_range(b, 1, 10);
    assert_int_equal(sn_backlog_bytes(b), 100);
    push_ok(b, 11, 35);   /* needs four 10-byte entries gone */
    assert_range(b, 5, 11);
    assert_int_equal(sn_backlog_bytes(b), 95);
    push_ok(b, 12, 5);    /* fits exactly */
    assert_range(b, 5, 12);
    assert_int_equal(sn_backlog_bytes(b), 100);
    for (uint64_t p = 5; p <= 10; p++)
        assert_holds(b, p, 10);
    assert_holds(b, 11, 35);
    assert_holds(b, 12, 5);
    sn_backlog_destroy(&b);
}

static void test_ring_wraps_around_many_times_keeping_order(void **state)
{
    (void) state;
    /* 13 is no power of two, so slot arithmetic is checked off the easy case. */
    sn_backlog_t *b = sn_backlog_new(1 << 20, 13);
    for (uint64_t p = 1; p <= 500; p++) {
        push_ok(b, p, (size_t) (p % 17));
        uint64_t first = p > 13 ? p - 12 : 1;
        assert_range(b, first, p);
        /* After every push, every held entry is still the right one. */
        for (uint64_t q = first; q <= p; q++)
            assert_holds(b, q, (size_t) (q % 17));
    }
    sn_backlog_destroy(&b);
}

static void test_ring_wraps_under_the_byte_bound(void **state)
{
    (void) state;
    /* The byte bound keeps few entries held while the head wanders round
     * the ring; smaller bodies then let the run lengthen across the wrap. */
    sn_backlog_t *b = sn_backlog_new(160, 1000);
    uint64_t p = 1;
    for (; p <= 40; p++)
        push_ok(b, p, 20);      /* 8 held, head wandering */
    for (; p <= 200; p++)
        push_ok(b, p, 1);       /* 160 one-byte entries by the end */
    assert_range(b, 41, 200);
    assert_int_equal(sn_backlog_bytes(b), 160);
    for (uint64_t q = 41; q <= 200; q++)
        assert_holds(b, q, 1);
    sn_backlog_destroy(&b);
}

static void test_lookups_outside_the_range_are_enotfound(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(1 << 20, 4);
    for (uint64_t p = 1; p <= 10; p++)
        push_ok(b, p, 8);
    assert_range(b, 7, 10);
    const uint8_t *body = (const uint8_t *) "untouched";
    size_t len = 12345;
    uint32_t flags = 777;
    uint64_t outside[] = {0, 1, 6, 11, 12, UINT64_MAX};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        assert_int_equal(sn_backlog_get(b, outside[i], &body, &len, &flags), SN_ENOTFOUND);
        assert_string_equal((const char *) body, "untouched");
        assert_int_equal(len, 12345);
        assert_int_equal(flags, 777);
    }
    assert_int_equal(sn_backlog_get(NULL, 7, &body, &len, &flags), SN_EINVAL);
    sn_backlog_destroy(&b);
}

static void test_empty_body_is_held_with_a_non_null_pointer(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(16, 4);
    assert_int_equal(sn_backlog_push(b, 1, 9, NULL, 0), 0);
    const uint8_t *body = NULL;
    size_t len = 99;
    uint32_t flags = 0;
    assert_int_equal(sn_backlog_get(b, 1, &body, &len, &flags), 0);
    assert_non_null(body);
    assert_int_equal(len, 0);
    assert_int_equal(flags, 9);
    assert_int_equal(sn_backlog_bytes(b), 0);
    sn_backlog_destroy(&b);
}

static void test_body_is_copied_not_borrowed(void **state)
{
    (void) state;
    sn_backlog_t *b = sn_backlog_new(64, 4);
    char buf[8] = "abcdefg";
    assert_int_equal(sn_backlog_push(b, 1, 0, buf, sizeof buf), 0);
    memset(buf, 'x', sizeof buf);
    const uint8_t *body = NULL;
    assert_int_equal(sn_backlog_get(b, 1, &body, NULL, NULL), 0);
    assert_memory_equal(body, "abcdefg", 8);
    sn_backlog_destroy(&b);
}

static void test_a_million_small_pushes_stay_within_both_bounds(void **state)
{
    (void) state;
    /* 5000 entries average 57500 bytes, so each bound binds in turn as the
     * sizes of the newest entries drift. */
    const size_t max_bytes = 57500;
    const uint32_t max_entries = 5000;
    sn_backlog_t *b = sn_backlog_new(max_bytes, max_entries);
    uint8_t buf[64];
    for (uint64_t p = 1; p <= 1000000; p++) {
        size_t len = (size_t) ((p * 7) % 24);
        body_for(p, buf, len);
        assert_int_equal(sn_backlog_push(b, p, (uint32_t) p, buf, len), 0);
        if ((p & 1023) == 0) {
            uint64_t first = sn_backlog_first(b);
            assert_int_equal(sn_backlog_last(b), p);
            assert_true(p - first + 1 <= max_entries);
            assert_true(sn_backlog_bytes(b) <= max_bytes);
        }
    }
    /* The newest are all there, and nothing below first is. */
    uint64_t first = sn_backlog_first(b);
    assert_true(first > 1000000 - max_entries);
    size_t sum = 0;
    for (uint64_t p = first; p <= 1000000; p++) {
        const uint8_t *body = NULL;
        size_t len = 0;
        uint32_t flags = 0;
        assert_int_equal(sn_backlog_get(b, p, &body, &len, &flags), 0);
        assert_int_equal(len, (size_t) ((p * 7) % 24));
        assert_int_equal(flags, (uint32_t) p);
        body_for(p, buf, len);
        assert_memory_equal(body, buf, len);
        sum += len;
    }
    assert_int_equal(sum, sn_backlog_bytes(b));
    assert_int_equal(sn_backlog_get(b, first - 1, NULL, NULL, NULL), SN_ENOTFOUND);
    sn_backlog_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_refuses_zero_bounds),
        cmocka_unit_test(test_destroy_nulls_the_pointer_and_accepts_null),
        cmocka_unit_test(test_empty_backlog_has_no_range_and_finds_nothing),
        cmocka_unit_test(test_pushes_are_held_in_order_with_their_flags),
        cmocka_unit_test(test_first_push_may_start_anywhere),
        cmocka_unit_test(test_out_of_sequence_push_is_einval_and_changes_nothing),
        cmocka_unit_test(test_oversize_body_is_etoobig_and_changes_nothing),
        cmocka_unit_test(test_entry_bound_drops_the_oldest),
        cmocka_unit_test(test_byte_bound_drops_as_many_oldest_as_needed),
        cmocka_unit_test(test_ring_wraps_around_many_times_keeping_order),
        cmocka_unit_test(test_ring_wraps_under_the_byte_bound),
        cmocka_unit_test(test_lookups_outside_the_range_are_enotfound),
        cmocka_unit_test(test_empty_body_is_held_with_a_non_null_pointer),
        cmocka_unit_test(test_body_is_copied_not_borrowed),
        cmocka_unit_test(test_a_million_small_pushes_stay_within_both_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
