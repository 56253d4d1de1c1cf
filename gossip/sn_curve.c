/*
 * sn_curve.c - CurveZMQ certificates, the shared ZAP handler, and key
 * lookup by address. See sn_curve.h.
 */
#define _GNU_SOURCE
#include "sn_curve.h"

#include <dirent.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

struct sn_curve {
    zcert_t *cert;
    bool zap;                   /* holds a reference on the shared handler */
};

/* The process's ZAP handler: one zauth per ZeroMQ context */
static pthread_mutex_t auth_lock = PTHREAD_MUTEX_INITIALIZER;
static zactor_t *auth;
static unsigned auth_refs;
static char auth_dir[PATH_MAX];

static bool zap_acquire(const char *dir, char *err, size_t errlen)
{
    char real[PATH_MAX];
    struct stat sb;
    if (!realpath(dir, real) || stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "the allow-list directory %s is not a readable directory", dir);
        return false;
    }
    bool ok = true;
    pthread_mutex_lock(&auth_lock);
    if (auth_refs && strcmp(auth_dir, real) != 0) {
        snprintf(err, errlen,
                 "the allow-list directory %s differs from %s, which another node of this "
                 "process uses (one per process)", real, auth_dir);
        ok = false;
    } else if (!auth_refs) {
        auth = zactor_new(zauth, NULL);
        /* zauth answers each command once it is applied: the handler is in
         * place before any socket of ours binds */
        ok = auth && zstr_sendx(auth, "CURVE", real, NULL) == 0 && zsock_wait(auth) == 0;
        if (ok) {
            snprintf(auth_dir, sizeof auth_dir, "%s", real);
        } else {
            zactor_destroy(&auth);
            snprintf(err, errlen, "cannot start the authentication handler");
        }
    }
    if (ok)
        auth_refs++;
    pthread_mutex_unlock(&auth_lock);
    return ok;
}

static void zap_release(void)
{
    pthread_mutex_lock(&auth_lock);
    if (auth_refs && --auth_refs == 0)
        zactor_destroy(&auth);
    pthread_mutex_unlock(&auth_lock);
}

/* Whether the file zcert_load will read parses as a ZPL (zconfig) file. */
static bool parses(const char *cert_path)
{
    char secret[PATH_MAX];
    snprintf(secret, sizeof secret, "%s_secret", cert_path);
    FILE *f = fopen(access(secret, R_OK) == 0 ? secret : cert_path, "r");
    if (!f)
        return false;
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool whole = feof(f) && !ferror(f);
    fclose(f);
    buf[n] = 0;
    if (!whole || strlen(buf) != n)
        return false;   /* too long for a certificate, or binary */
    zconfig_t *root = zconfig_str_load(buf);
    bool ok = root != NULL;
    zconfig_destroy(&root);
    return ok;
}

sn_curve_t *sn_curve_new(const char *cert_path, const char *allow_dir, char *err,
                         size_t errlen)
{
    if (!cert_path) {
        snprintf(err, errlen, "no certificate given");
        return NULL;
    }
    if (access(cert_path, R_OK) != 0) {
        snprintf(err, errlen, "cannot read the certificate %s", cert_path);
        return NULL;
    }
    /* zcert_load reads PATH_secret first, then PATH; a file it cannot
     * parse is refused here first, since that path of zcert_load leaks */
    if (!parses(cert_path)) {
        snprintf(err, errlen, "%s is not a certificate (make one with sessctl keygen)",
                 cert_path);
        return NULL;
    }
    zcert_t *cert = zcert_load(cert_path);
    if (!cert) {
        snprintf(err, errlen, "%s is not a certificate (make one with sessctl keygen)",
                 cert_path);
        return NULL;
    }
    static const unsigned char zero[SN_CURVE_KEY_BIN];
    if (memcmp(zcert_secret_key(cert), zero, sizeof zero) == 0) {
        snprintf(err, errlen,
                 "%s holds no secret key: give the node its own NAME.cert_secret file",
                 cert_path);
        zcert_destroy(&cert);
        return NULL;
    }
    sn_curve_t *self = calloc(1, sizeof *self);
    if (!self) {
        zcert_destroy(&cert);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cert = cert;
    if (allow_dir) {
        if (!zap_acquire(allow_dir, err, errlen)) {
            sn_curve_destroy(&self);
            return NULL;
        }
        self->zap = true;
    }
    return self;
}

void sn_curve_destroy(sn_curve_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_curve_t *self = *self_p;
    if (self->zap)
        zap_release();
    zcert_destroy(&self->cert);
    free(self);
    *self_p = NULL;
}

const char *sn_curve_public_txt(sn_curve_t *self)
{
    return zcert_public_txt(self->cert);
}

void sn_curve_server(sn_curve_t *self, zsock_t *sock)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_server(sock, 1);
    /* a domain makes libzmq consult the ZAP handler (zauth) for every
     * handshake; it is also what zauth's log lines name */
    zsock_set_zap_domain(sock, "sessnode");
}

void sn_curve_client(sn_curve_t *self, zsock_t *sock, const char *server_txt)
{
    zcert_apply(self->cert, sock);
    zsock_set_curve_serverkey(sock, server_txt);
}

bool sn_curve_key_decode(const char *txt, size_t len, unsigned char bin[SN_CURVE_KEY_BIN])
{
    char buf[SN_CURVE_KEY_TXT];
    if (len != SN_CURVE_KEY_TXT - 1)
        return false;
    memcpy(buf, txt, len);
    buf[len] = 0;
    return zmq_z85_decode(bin, buf) != NULL;
}

void sn_curve_key_encode(const unsigned char bin[SN_CURVE_KEY_BIN], char txt[SN_CURVE_KEY_TXT])
{
    zmq_z85_encode(txt, bin, SN_CURVE_KEY_BIN);
}

/* HOST:PORT from an address, without a tcp:// prefix */
static const char *bare(const char *address)
{
    return strncmp(address, "tcp://", 6) == 0 ? address + 6 : address;
}

/* Whether two HOST:PORT name the same endpoint: the same text, or the
 * same port and a host that resolves to the other's IPv4 address. */
static bool same_endpoint(const char *a, const char *b)
{
    a = bare(a);
    b = bare(b);
    if (strcmp(a, b) == 0)
        return true;
    const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');
    if (!ca || !cb || strcmp(ca, cb) != 0)
        return false;
    char ha[256], hb[256];
    if (ca - a >= (ptrdiff_t) sizeof ha || cb - b >= (ptrdiff_t) sizeof hb)
        return false;
    snprintf(ha, sizeof ha, "%.*s", (int) (ca - a), a);
    snprintf(hb, sizeof hb, "%.*s", (int) (cb - b), b);
    struct in_addr ia, ib;
    struct addrinfo hints = {.ai_family = AF_INET}, *res;
    if (inet_pton(AF_INET, hb, &ib) != 1)
        return false;   /* our own addresses are numeric */
    if (inet_pton(AF_INET, ha, &ia) != 1) {
        if (getaddrinfo(ha, NULL, &hints, &res) != 0)
            return false;
        ia = ((struct sockaddr_in *) res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    return ia.s_addr == ib.s_addr;
}

bool sn_curve_key_for(const char *dir, const char *address, char key_txt[SN_CURVE_KEY_TXT])
{
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 7 && strcmp(e->d_name + n - 7, "_secret") == 0))
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int) sizeof path)
            continue;
        zcert_t *cert = zcert_load(path);
        if (!cert)
            continue;
        const char *meta = zcert_meta(cert, SN_CURVE_META_ADDRESS);
        if (meta && same_endpoint(meta, address)) {
            snprintf(key_txt, SN_CURVE_KEY_TXT, "%s", zcert_public_txt(cert));
            found = true;
        }
        zcert_destroy(&cert);
    }
    closedir(d);
    return found;
}
