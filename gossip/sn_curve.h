/*
 * sn_curve.h - CurveZMQ on the replication bus: this node's certificate,
 * the allow-list of member keys, and finding a peer's public key.
 *
 * Module-private header. Every server socket (PUB, ROUTER) authenticates
 * its clients against the allow-list through czmq's zauth, which answers
 * ZeroMQ's ZAP requests; every client socket (SUB, DEALER) must name the
 * public key of the server it connects to. Certificates are czmq's zcert
 * files: NAME.cert (public, goes in the allow-list directories) and
 * NAME.cert_secret (stays on the node).
 *
 * ZAP has one handler per ZeroMQ context and czmq has one context per
 * process, so every node of a process shares one zauth and one allow-list
 * directory; a node asking for another directory is refused.
 */
#ifndef SN_CURVE_H_INCLUDED
#define SN_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

/* Z85 text of a 32-byte key, with its terminating NUL */
#define SN_CURVE_KEY_TXT 41
#define SN_CURVE_KEY_BIN 32

/* The metadata field of a public certificate that names the member's
 * cluster address, so that a node given only an address (a seed, or
 * sessctl's --node) can find the key to connect with. */
#define SN_CURVE_META_ADDRESS "address"

typedef struct sn_curve sn_curve_t;

/* Loads this node's certificate (the public file or its _secret twin; the
 * secret key must be there) and, if allow_dir is not NULL, starts or
 * shares the process's ZAP handler on that directory. NULL with a message
 * in err (one English sentence) on failure. */
sn_curve_t *sn_curve_new(const char *cert_path, const char *allow_dir, char *err,
                         size_t errlen);
void sn_curve_destroy(sn_curve_t **self_p);

/* This node's public key, Z85. */
const char *sn_curve_public_txt(sn_curve_t *self);

/* Makes a socket a CURVE server with this node's keys; before bind. */
void sn_curve_server(sn_curve_t *self, zsock_t *sock);

/* Makes a socket a CURVE client with this node's keys that expects the
 * server key `server_txt` (Z85) on its next connect. One socket may
 * connect to several servers: each connect keeps the key set before it. */
void sn_curve_client(sn_curve_t *self, zsock_t *sock, const char *server_txt);

/* Finds in `dir` the public certificate whose `address` metadata names
 * `address` (HOST:PORT, with or without tcp://; a host name there is
 * resolved), and copies its key into key_txt. */
bool sn_curve_key_for(const char *dir, const char *address, char key_txt[SN_CURVE_KEY_TXT]);

/* Z85 <-> binary for 32-byte keys; false on a malformed key. */
bool sn_curve_key_decode(const char *txt, size_t len, unsigned char bin[SN_CURVE_KEY_BIN]);
void sn_curve_key_encode(const unsigned char bin[SN_CURVE_KEY_BIN],
                         char txt[SN_CURVE_KEY_TXT]);

#endif
