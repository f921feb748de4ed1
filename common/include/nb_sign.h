/* Ed25519 signatures (libsodium) over what the cloud hands out for code to
 * run: offload modules fetched from storage, and agent packages. One key
 * pair, made by `nimbusctl keygen DIR`: DIR/nimbus.key holds the secret key
 * (mode 0600; it never goes into Redis or the blob store) and
 * DIR/nimbus.pub the public key that workers and agents are configured
 * with. Both files are one line of lowercase hex (128 and 64 digits).
 *
 * What is signed is a short text naming exactly what the bytes are, so a
 * signature for one thing never passes for another:
 *   nimbus-module\n<name>\n<version>\n<size>\n<sha256 hex>
 *   nimbus-agent\n<platform>\n<version>\n<size>\n<sha256 hex> (PROTOCOL.md)
 *
 * Every function returns 0 or a nimbus_err, with a sentence in err (errcap
 * bytes) where it takes one. Thread-safe (sodium_init runs once). */
#ifndef NB_SIGN_H
#define NB_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define NB_SIGN_PUB 32
#define NB_SIGN_SEC 64
#define NB_SIGN_SIG 64

/* Makes a key pair into DIR (borrowed; created when absent, mode 0700):
 * nimbus.key (0600, never replaced: NIMBUS_ECONFLICT when it exists) and
 * nimbus.pub. Returns 0, NIMBUS_ECONFLICT, NIMBUS_EIO, NIMBUS_ESYS. */
int nb_sign_keygen(const char *dir, char *err, size_t errcap);

/* Reads a public (NB_SIGN_PUB bytes into pub) or secret key file. A
 * secret key file readable by others than its owner is refused
 * (NIMBUS_EAUTH). Returns 0, NIMBUS_EIO, NIMBUS_EPROTO (not a key),
 * NIMBUS_EAUTH. */
int nb_sign_pub_read(const char *path, uint8_t pub[NB_SIGN_PUB], char *err,
                     size_t errcap);
int nb_sign_sec_read(const char *path, uint8_t sec[NB_SIGN_SEC], char *err,
                     size_t errcap);

/* The text of a module's or a package's statement into out (cap bytes):
 * kind "nimbus-module" or "nimbus-agent". Returns its length, or 0 when
 * it does not fit. */
size_t nb_sign_statement(char *out, size_t cap, const char *kind,
                         const char *name, const char *version, uint64_t size,
                         const char *sha256_hex);

/* Signs the n bytes of msg with sec into sig. Returns 0 or NIMBUS_ESYS. */
int nb_sign(const void *msg, size_t n, const uint8_t sec[NB_SIGN_SEC],
            uint8_t sig[NB_SIGN_SIG]);

/* Overwrites n bytes at p (a secret key) in a way the compiler keeps. */
void nb_sign_wipe(void *p, size_t n);

/* 0 when sig is pub's signature of msg, else NIMBUS_EAUTH. */
int nb_sign_verify(const void *msg, size_t n, const uint8_t sig[NB_SIGN_SIG],
                   const uint8_t pub[NB_SIGN_PUB]);

#endif
