/*
 * test_slab.c - the store's block allocator (store/sn_slab.c).
 *
 * Classes cover every size up to SN_SLAB_MAX with little waste and grow
 * with the size; blocks are usable over their whole class size, never
 * overlap, survive other blocks coming and going, and freed blocks are
 * reused; runs whose blocks were all freed serve other classes; the
 * counters follow; a reset carves again from the first page;
 * threads allocating and freeing at once get distinct blocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "sn_slab.h"

static void test_classes(void **state)
{
    (void) state;
    assert_int_equal(sn_slab_class(SN_SLAB_MAX + 1), 0);
    assert_int_equal(sn_slab_class_size(0), 0);
    uint8_t prev = 0;
    for (size_t size = 1; size <= SN_SLAB_MAX; size++) {
        uint8_t k = sn_slab_class(size);
        assert_true(k >= 1);
        assert_true(k >= prev);  /* larger sizes never map to smaller classes */
        prev = k;
        size_t cs = sn_slab_class_size(k);
        assert_true(cs >= size);
        assert_int_equal(cs % 16, 0);
        /* the class below is too small, so this is the tightest class */
        if (k > 1)
            assert_true(sn_slab_class_size((uint8_t) (k - 1)) < size);
        /* waste: at most 15 bytes up to 2 KiB, at most ~1/16 beyond */
        if (size <= 2048 && size >= 32)
            assert_true(cs - size <= 15);
        else if (size > 2048)
            assert_true(cs - size <= size / 16 + 16);
    }
    assert_int_equal(sn_slab_class_size(sn_slab_class(SN_SLAB_MAX)), SN_SLAB_MAX);
}

/* Fills a block with a pattern that names it. */
static void stamp(uint8_t *b, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t) (tag * 131u + i);
}

static int stamped(const uint8_t *b, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != (uint8_t) (tag * 131u + i))
            return 0;
    return 1;
}

static void test_blocks_hold_their_bytes(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    assert_non_null(s);
    /* several classes, enough blocks to span many pages of each */
    const size_t sizes[] = {1, 40, 200, 1100, 2048, 3000, 9000, SN_SLAB_MAX};
    enum { PER = 300 };
    uint8_t *blocks[8][PER];
    for (int c = 0; c < 8; c++) {
        uint8_t k = sn_slab_class(sizes[c]);
        for (int i = 0; i < PER; i++) {
            blocks[c][i] = sn_slab_alloc(s, k);
            assert_non_null(blocks[c][i]);
            stamp(blocks[c][i], sn_slab_class_size(k), (uint32_t) (c * PER + i));
        }
    }
    sn_slab_stats_t st;
    sn_slab_stats(s, &st);
    assert_int_equal(st.blocks, 8 * PER);
    uint64_t in_use = 0;
    for (int c = 0; c < 8; c++)
        in_use += PER * sn_slab_class_size(sn_slab_class(sizes[c]));
    assert_int_equal(st.in_use, in_use);
    assert_true(st.mapped >= st.in_use);

    /* free every other block, allocate again: the freed ones come back,
     * and nobody else's bytes changed */
    for (int c = 0; c < 8; c++) {
        uint8_t k = sn_slab_class(sizes[c]);
        for (int i = 0; i < PER; i += 2)
            sn_slab_free(s, blocks[c][i], k);
    }
    sn_slab_stats_t half;
    sn_slab_stats(s, &half);
    assert_int_equal(half.blocks, 8 * PER / 2);
    for (int c = 0; c < 8; c++) {
        uint8_t k = sn_slab_class(sizes[c]);
        uint8_t *freed[PER / 2];
        for (int j = 0; j < PER / 2; j++)
            freed[j] = blocks[c][2 * j];
        for (int i = 0; i < PER; i += 2) {
            uint8_t *b = sn_slab_alloc(s, k);
            int found = 0;
            for (int j = 0; j < PER / 2; j++)
                found |= b == freed[j];
            assert_true(found);  /* reused, not carved anew */
            blocks[c][i] = b;
            stamp(b, sn_slab_class_size(k), (uint32_t) (c * PER + i));
        }
    }
    sn_slab_stats_t again;
    sn_slab_stats(s, &again);
    assert_int_equal(again.mapped, st.mapped);
    for (int c = 0; c < 8; c++) {
        size_t n = sn_slab_class_size(sn_slab_class(sizes[c]));
        for (int i = 0; i < PER; i++)
            assert_true(stamped(blocks[c][i], n, (uint32_t) (c * PER + i)));
    }
    sn_slab_destroy(&s);
    assert_null(s);
    sn_slab_destroy(&s);  /* harmless */
}

static void test_bad_arguments(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    assert_null(sn_slab_alloc(s, 0));
    assert_null(sn_slab_alloc(s, 255));
    assert_null(sn_slab_alloc(NULL, 1));
    sn_slab_free(s, NULL, 1);
    sn_slab_free(NULL, NULL, 1);
    sn_slab_stats_t st;
    sn_slab_stats(NULL, &st);
    assert_int_equal(st.blocks, 0);
    sn_slab_destroy(&s);
}

static void test_reset(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    uint8_t k = sn_slab_class(1000);
    enum { N = 500 };
    uint8_t *first[N];
    for (int i = 0; i < N; i++)
        first[i] = sn_slab_alloc(s, k);
    assert_int_equal(sn_slab_reset(s), -1);  /* blocks are out */
    for (int i = N - 1; i >= 0; i--)
        sn_slab_free(s, first[i], k);
    assert_int_equal(sn_slab_reset(s), 0);
    sn_slab_stats_t st;
    sn_slab_stats(s, &st);
    assert_int_equal(st.mapped, 0);
    /* carving starts over in address order, on the same pages, and a block
     * of another class is not handed an address still in use */
    for (int i = 0; i < N; i++) {
        uint8_t *b = sn_slab_alloc(s, k);
        assert_ptr_equal(b, first[i]);
        stamp(b, sn_slab_class_size(k), (uint32_t) i);
    }
    uint8_t *other = sn_slab_alloc(s, sn_slab_class(5000));
    assert_non_null(other);
    stamp(other, sn_slab_class_size(sn_slab_class(5000)), 9999);
    for (int i = 0; i < N; i++)
        assert_true(stamped(first[i], sn_slab_class_size(k), (uint32_t) i));
    assert_int_equal(sn_slab_reset(NULL), -1);
    sn_slab_destroy(&s);
}

/* Prefaulting keeps each carving class a page (64 KiB) ahead of its next
 * block and no further, takes no class that carves nothing, and the blocks
 * cut from prefaulted pages hold their bytes. */
static void test_prefault_runs_a_page_ahead(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    assert_int_equal(sn_slab_prefault(s, 8), 0);  /* nothing carved yet */
    uint8_t k = sn_slab_class(1000), k2 = sn_slab_class(300);
    uint8_t *b = sn_slab_alloc(s, k);
    assert_non_null(b);
    sn_slab_stats_t st;
    sn_slab_stats(s, &st);
    uint64_t mapped = st.mapped;
    assert_int_equal(sn_slab_prefault(s, 8), 1);
    assert_int_equal(sn_slab_prefault(s, 8), 0);  /* already a page ahead */
    sn_slab_stats(s, &st);
    assert_int_equal(st.mapped, mapped + 64 * 1024);
    assert_non_null(sn_slab_alloc(s, k2));
    assert_int_equal(sn_slab_prefault(s, 0), 0);  /* a bound of 0 does nothing */
    assert_int_equal(sn_slab_prefault(s, 8), 1);  /* only the new class */
    /* carve past the first page into the prefaulted one */
    size_t size = sn_slab_class_size(k);
    enum { N = 120 };
    uint8_t *blk[N];
    for (int i = 0; i < N; i++) {
        blk[i] = sn_slab_alloc(s, k);
        assert_non_null(blk[i]);
        stamp(blk[i], size, (uint32_t) i);
    }
    for (int i = 0; i < N; i++) {
        assert_true(stamped(blk[i], size, (uint32_t) i));
        sn_slab_free(s, blk[i], k);
    }
    assert_int_equal(sn_slab_prefault(NULL, 8), 0);
    sn_slab_destroy(&s);
}

/* Blocks that all move to the next class, as sessions do when an update
 * makes them a few bytes larger: the runs they leave serve the new class
 * instead of staying reserved for the old one. */
static void test_emptied_runs_serve_other_classes(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    uint8_t small = sn_slab_class(1100), big = sn_slab_class(1120);
    assert_true(big > small);
    size_t ss = sn_slab_class_size(small), bs = sn_slab_class_size(big);
    enum { N = 4000 };  /* about 4.4 MB: several runs */
    uint8_t **b = calloc(N, sizeof *b);
    assert_non_null(b);
    for (int i = 0; i < N; i++) {
        b[i] = sn_slab_alloc(s, small);
        assert_non_null(b[i]);
        stamp(b[i], ss, (uint32_t) i);
    }
    sn_slab_stats_t before, after;
    sn_slab_stats(s, &before);
    for (int i = 0; i < N; i++) {
        uint8_t *nb = sn_slab_alloc(s, big);
        assert_non_null(nb);
        assert_true(stamped(b[i], ss, (uint32_t) i));
        stamp(nb, bs, (uint32_t) i + N);
        sn_slab_free(s, b[i], small);
        b[i] = nb;
    }
    sn_slab_stats(s, &after);
    /* kept apart, the two classes would need twice the pages */
    assert_true(after.mapped < before.mapped + (3u << 20));
    assert_int_equal(after.blocks, N);
    for (int i = 0; i < N; i++) {
        assert_true(stamped(b[i], bs, (uint32_t) i + N));
        sn_slab_free(s, b[i], big);
    }
    sn_slab_stats(s, &after);
    assert_int_equal(after.blocks, 0);
    assert_int_equal(after.in_use, 0);
    free(b);
    sn_slab_destroy(&s);
}

typedef struct {
    sn_slab_t *slab;
    uint32_t tag;
    int ok;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    enum { LIVE = 64, ROUNDS = 20000 };
    uint8_t *live[LIVE] = {0};
    uint8_t klass[LIVE] = {0};
    uint32_t seed = w->tag * 2654435761u + 1;
    w->ok = 1;
    for (int r = 0; r < ROUNDS; r++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int) ((seed >> 8) % LIVE);
        if (live[i]) {
            if (!stamped(live[i], sn_slab_class_size(klass[i]), w->tag + (uint32_t) i))
                w->ok = 0;
            sn_slab_free(w->slab, live[i], klass[i]);
            live[i] = NULL;
        } else {
            klass[i] = sn_slab_class(1 + (seed >> 12) % 3000);
            live[i] = sn_slab_alloc(w->slab, klass[i]);
            if (!live[i]) {
                w->ok = 0;
                break;
            }
            stamp(live[i], sn_slab_class_size(klass[i]), w->tag + (uint32_t) i);
        }
    }
    for (int i = 0; i < LIVE; i++)
        if (live[i])
            sn_slab_free(w->slab, live[i], klass[i]);
    return NULL;
}

static void test_threads(void **state)
{
    (void) state;
    sn_slab_t *s = sn_slab_new();
    enum { T = 4 };
    pthread_t th[T];
    worker_t w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker_t){.slab = s, .tag = (uint32_t) (i + 1) * 1000};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_true(w[i].ok);
    }
    sn_slab_stats_t st;
    sn_slab_stats(s, &st);
    assert_int_equal(st.blocks, 0);
    assert_int_equal(st.in_use, 0);
    sn_slab_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_blocks_hold_their_bytes),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_prefault_runs_a_page_ahead),
        cmocka_unit_test(test_emptied_runs_serve_other_classes),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
