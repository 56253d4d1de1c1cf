/*
 * sn_test_dump.h - prints a session's whole state to stderr, for the
 * failure reports of the tests that compare replicas (an sn_state_fn, so it
 * goes straight to sn_store_export).
 */
#ifndef SN_TEST_DUMP_H
#define SN_TEST_DUMP_H

#include <stdio.h>

#include "sn_store.h"

static inline void sn_test_dump_state(const uint8_t *id, uint32_t id_len, const sn_state_t *st,
                                      void *arg)
{
    (void) arg;
    fprintf(stderr, "    %.*s vv[", (int) id_len, id);
    for (uint32_t i = 0; i < st->vv.n; i++)
        fprintf(stderr, " %llu:%llu", (unsigned long long) st->vv.dots[i].node,
                (unsigned long long) st->vv.dots[i].counter);
    fprintf(stderr, " ] dv[");
    for (uint32_t i = 0; i < st->dv.n; i++)
        fprintf(stderr, " %llu:%llu", (unsigned long long) st->dv.dots[i].node,
                (unsigned long long) st->dv.dots[i].counter);
    fprintf(stderr, " ] meta %d/%u/%llx/%llu la %llu\n", st->has_meta, st->max_inactive,
            (unsigned long long) st->meta_stamp, (unsigned long long) st->meta_origin,
            (unsigned long long) st->last_access_ms);
    for (uint32_t i = 0; i < st->nattrs; i++) {
        const sn_attr_t *a = &st->attrs[i];
        fprintf(stderr, "      %.*s = %s%.*s flags %u stamp %llx origin %llu\n",
                (int) a->name_len, a->name, a->removed ? "(removed)" : "", (int) a->value_len,
                a->value ? (const char *) a->value : "", a->flags,
                (unsigned long long) a->stamp, (unsigned long long) a->origin);
    }
}

#endif
