/*
 * sn_log.h - one log line to the application's sink (sn_config_t.log), for
 * the node's parts that log: the replication actor and the memcached tier.
 */
#ifndef SN_LOG_H_INCLUDED
#define SN_LOG_H_INCLUDED

#include <stdarg.h>

#include "sessnode.h"

/* Formats one line (512 bytes at most) and passes it to `fn` if `level`
 * is at most `max_level`; nothing without a sink. */
void sn_vlogf(sn_log_fn fn, void *arg, int max_level, int level, const char *fmt, va_list ap);

#endif
