/*
 * consumer.c - an embedder's first program: include the installed header,
 * link the installed library, call it. Exits 0 only if the library loaded at
 * run time agrees with the header it was compiled against.
 */
#include <sessnode.h>

#include <stdio.h>
#include <string.h>

#define STR_(x) #x
#define XSTR_(x) STR_(x)

int main(void)
{
    const char *expect_version = XSTR_(SN_VERSION_MAJOR) "." XSTR_(
        SN_VERSION_MINOR) "." XSTR_(SN_VERSION_PATCH);
    const char *version = sn_version();
    const char *msg = sn_strerror(SN_ENOTFOUND);

    printf("sessnode %s: %s\n", version, msg);
    if (strcmp(version, expect_version) != 0) {
        fprintf(stderr, "header says %s, library says %s\n", expect_version,
                version);
        return 1;
    }
    if (strcmp(msg, "not found") != 0 ||
        strcmp(sn_err_name(SN_ENOTFOUND), "SN_ENOTFOUND") != 0) {
        fprintf(stderr, "unexpected text for SN_ENOTFOUND\n");
        return 1;
    }
    return 0;
}
