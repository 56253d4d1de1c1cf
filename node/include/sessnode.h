/*
 * sessnode.h - the public API of libsessnode.
 *
 * sessnode replicates web sessions all-to-all: every node keeps every session
 * in memory and broadcasts each change to its peers over ZeroMQ as a delta,
 * ordered by version vectors, so any node can answer any request locally.
 *
 * This header is the API documentation: every public function is declared
 * and described here, and it is the only header that is installed. It
 * includes nothing but <stddef.h> and <stdint.h>; embedders need no ZeroMQ,
 * czmq or msgpack header to use the library.
 *
 * Errors: functions that can fail return int, 0 on success or one of the
 * negative SN_E* codes below on failure. sn_strerror() and sn_err_name()
 * turn a code into text. Functions that return a pointer return NULL on
 * failure.
 *
 * Symbols: the library is built with hidden visibility; only functions
 * marked SN_EXPORT are part of the ABI.
 */
#ifndef SESSNODE_H_INCLUDED
#define SESSNODE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SN_VERSION_MAJOR 0
#define SN_VERSION_MINOR 1
#define SN_VERSION_PATCH 0

#if defined(__GNUC__) || defined(__clang__)
#define SN_EXPORT __attribute__((visibility("default")))
#else
#define SN_EXPORT
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* One table yields the codes, their names and their messages, so the three
 * cannot drift apart. X(name, value, message); values are stable ABI. */
#define SN_ERRNO_MAP(X)                                   \
    X(EINVAL,   -1, "invalid argument")                   \
    X(ENOMEM,   -2, "out of memory")                      \
    X(EBADID,   -3, "invalid session id")                 \
    X(EBADNAME, -4, "invalid attribute name")             \
    X(ETOOBIG,  -5, "value too large")                    \
    X(ENOTFOUND,-6, "not found")                          \
    X(EEXISTS,  -7, "already exists")                     \
    X(EFULL,    -8, "memory limit reached")               \
    X(EPROTO,   -9, "malformed message")                  \
    X(ETRUNC,  -10, "buffer too small")

enum sn_errno {
#define SN_ERRNO_ENUM_(name, value, msg) SN_##name = (value),
    SN_ERRNO_MAP(SN_ERRNO_ENUM_)
#undef SN_ERRNO_ENUM_
};

/*
 * sn_strerror - describe an error code.
 *
 * err: 0 or a value returned by a sessnode function.
 * Returns a static, NUL-terminated English message: "success" for 0, the
 * table's message for an SN_E* code, "unknown error" for anything else.
 * Never NULL; the caller must not free it. Thread-safe.
 */
SN_EXPORT const char *sn_strerror(int err);

/*
 * sn_err_name - the symbolic name of an error code.
 *
 * err: 0 or a value returned by a sessnode function.
 * Returns a static string such as "SN_ENOTFOUND"; "SN_OK" for 0 and
 * "SN_UNKNOWN" for a value that is not in the table. Never NULL; the caller
 * must not free it. Thread-safe.
 */
SN_EXPORT const char *sn_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * sn_version - the version of the library actually loaded, as
 * "MAJOR.MINOR.PATCH" (compare with the SN_VERSION_* macros the caller was
 * compiled against). Static string; never NULL. Thread-safe.
 */
SN_EXPORT const char *sn_version(void);

/* ------------------------------------------------------------------------ */
/* Node                                                                     */
/* ------------------------------------------------------------------------ */

#ifdef __cplusplus
}
#endif

#endif /* SESSNODE_H_INCLUDED */
