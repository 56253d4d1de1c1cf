/*
 * mc_key.h - how a memcached key becomes a session id; shared by the
 * memcached engine and sessctl.
 */
#ifndef MC_KEY_H_INCLUDED
#define MC_KEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define MC_KEY_MAX 250  /* memcached's longest key */

/* The session id a key is stored under. A session id may not hold bytes
 * <= 0x20 or 0x7f, which memcached keys may (memcaslap's keys start with
 * control characters; binary keys are any bytes), so those, and '%' to
 * keep distinct keys distinct, are written as %XX. A key without any of
 * them, the common case, is its own id: *id = key, nothing copied.
 * Otherwise *id = buf (MC_KEY_MAX bytes). Returns the id's length, or 0 if
 * it would pass MC_KEY_MAX bytes (such a key can hold nothing). Both
 * protocols must use it, so that they see the same items. */
size_t mc_key_id(const void *key, size_t klen, char *buf, const char **id);

#endif
