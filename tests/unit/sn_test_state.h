/*
 * sn_test_state.h - cmocka assertions that two sessions' whole states are
 * equal, field by field (vectors, meta, attributes). Include it after
 * cmocka.h.
 */
#ifndef SN_TEST_STATE_H
#define SN_TEST_STATE_H

#include "sn_store.h"

static inline void assert_vv_equal(const sn_vv_t *a, const sn_vv_t *b)
{
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_true(a->dots[i].node == b->dots[i].node);
        assert_true(a->dots[i].counter == b->dots[i].counter);
    }
}

static inline void assert_state_equal(const sn_state_t *a, const sn_state_t *b)
{
    assert_vv_equal(&a->vv, &b->vv);
    assert_vv_equal(&a->dv, &b->dv);
    assert_vv_equal(&a->gc, &b->gc);
    assert_int_equal(a->has_meta, b->has_meta);
    if (a->has_meta) {
        assert_int_equal(a->max_inactive, b->max_inactive);
        assert_true(a->meta_stamp == b->meta_stamp);
        assert_true(a->meta_origin == b->meta_origin);
    }
    assert_true(a->last_access_ms == b->last_access_ms);
    assert_int_equal(a->nattrs, b->nattrs);
    for (uint32_t i = 0; i < a->nattrs; i++) {
        const sn_attr_t *x = &a->attrs[i], *y = &b->attrs[i];
        assert_int_equal(x->name_len, y->name_len);
        assert_non_null(y->name);
        assert_memory_equal(x->name, y->name, x->name_len);
        assert_int_equal(x->removed, y->removed);
        if (x->removed) {
            assert_null(y->value);
            assert_int_equal(y->value_len, 0);
        } else {
            assert_int_equal(x->value_len, y->value_len);
            assert_non_null(y->value);
            assert_memory_equal(x->value, y->value, x->value_len);
        }
        assert_int_equal(x->flags, y->flags);
        assert_true(x->stamp == y->stamp);
        assert_true(x->origin == y->origin);
    }
}

#endif
