/*
 * mc_key.c - the session id a memcached key is stored under (mc_key.h).
 * Its own file because sessctl, which links no memcached engine, maps a
 * key the same way so an operator can look up what a client stored.
 */
#include <string.h>

#include "mc_key.h"

static bool escaped_in_id(unsigned char ch)
{
    return ch <= 0x20 || ch == 0x7f || ch == '%';
}

size_t mc_key_id(const void *key, size_t klen, char *buf, const char **id)
{
    const unsigned char *k = key;
    size_t i = 0;
    *id = key;
    while (i < klen && !escaped_in_id(k[i]))
        i++;
    if (i == klen)
        return klen <= MC_KEY_MAX ? klen : 0;
    static const char hex[] = "0123456789ABCDEF";
    size_t n = i;
    if (n > MC_KEY_MAX)
        return 0;
    memcpy(buf, k, i);
    for (; i < klen; i++) {
        if (escaped_in_id(k[i])) {
            if (n + 3 > MC_KEY_MAX)
                return 0;
            buf[n++] = '%';
            buf[n++] = hex[k[i] >> 4];
            buf[n++] = hex[k[i] & 15];
        } else {
            if (n + 1 > MC_KEY_MAX)
                return 0;
            buf[n++] = (char) k[i];
        }
    }
    *id = buf;
    return n;
}
