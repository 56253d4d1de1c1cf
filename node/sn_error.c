/*
 * sn_error.c - text for sessnode's error codes and its version string.
 *
 * Everything here is generated from SN_ERRNO_MAP in sessnode.h, so adding a
 * code to the table gives it a name and a message with no edit in this file.
 * The strings are static: the functions allocate nothing and are safe from
 * any thread.
 */
#include "sessnode.h"

#define SN_STR_(x) #x
#define SN_XSTR_(x) SN_STR_(x)

const char *sn_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define SN_STRERROR_CASE_(name, value, msg) case (value): return msg;
        SN_ERRNO_MAP(SN_STRERROR_CASE_)
#undef SN_STRERROR_CASE_
    default:
        return "unknown error";
    }
}

const char *sn_err_name(int err)
{
    if (err == 0)
        return "SN_OK";
    switch (err) {
#define SN_ERR_NAME_CASE_(name, value, msg) case (value): return "SN_" #name;
        SN_ERRNO_MAP(SN_ERR_NAME_CASE_)
#undef SN_ERR_NAME_CASE_
    default:
        return "SN_UNKNOWN";
    }
}

const char *sn_version(void)
{
    return SN_XSTR_(SN_VERSION_MAJOR) "." SN_XSTR_(SN_VERSION_MINOR) "."
           SN_XSTR_(SN_VERSION_PATCH);
}
