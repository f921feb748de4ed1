/* Ed25519 key files and signatures through libsodium (nb_sign.h). The key
 * files are hex text so an operator can read, copy and compare them; the
 * secret one is created with O_EXCL and mode 0600, and refused when
 * others may read it, as ssh refuses a private key. */
#include "nb_sign.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ready(void) { return sodium_init() >= 0 ? 0 : NIMBUS_ESYS; }

static int write_hex_file(const char *path, const uint8_t *key, size_t n,
                          mode_t mode, char *err, size_t errcap) {
  char hex[2 * NB_SIGN_SEC + 2];
  nb_hex(key, n, hex);
  hex[2 * n] = '\n';
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    snprintf(err, errcap, "cannot create %s: %s", path, strerror(errno));
    return errno == EEXIST ? NIMBUS_ECONFLICT : NIMBUS_EIO;
  }
  bool ok = write(fd, hex, 2 * n + 1) == (ssize_t)(2 * n + 1) && fsync(fd) == 0;
  if (close(fd) != 0)
    ok = false;
  sodium_memzero(hex, sizeof hex);
  if (!ok) {
    snprintf(err, errcap, "cannot write %s: %s", path, strerror(errno));
    (void)unlink(path);
    return NIMBUS_EIO;
  }
  return 0;
}

int nb_sign_keygen(const char *dir, char *err, size_t errcap) {
  uint8_t pub[NB_SIGN_PUB], sec[NB_SIGN_SEC];
  char kp[4096], pp[4096];
  if (ready() != 0) {
    snprintf(err, errcap, "libsodium did not start");
    return NIMBUS_ESYS;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errcap, "cannot create %s: %s", dir, strerror(errno));
    return NIMBUS_EIO;
  }
  int a = snprintf(kp, sizeof kp, "%s/nimbus.key", dir);
  int b = snprintf(pp, sizeof pp, "%s/nimbus.pub", dir);
  if (a < 0 || (size_t)a >= sizeof kp || b < 0 || (size_t)b >= sizeof pp) {
    snprintf(err, errcap, "the directory name is too long");
    return NIMBUS_EINVAL;
  }
  if (access(kp, F_OK) == 0) {
    snprintf(err, errcap, "%s exists already: a key is never replaced", kp);
    return NIMBUS_ECONFLICT;
  }
  crypto_sign_keypair(pub, sec);
  int rc = write_hex_file(kp, sec, sizeof sec, 0600, err, errcap);
  sodium_memzero(sec, sizeof sec);
  if (rc == 0) {
    (void)unlink(pp); /* a stale public key of no secret one */
    rc = write_hex_file(pp, pub, sizeof pub, 0644, err, errcap);
    if (rc != 0)
      (void)unlink(kp);
  }
  return rc;
}

static int read_hex_file(const char *path, uint8_t *key, size_t n, bool secret,
                         char *err, size_t errcap) {
  char buf[2 * NB_SIGN_SEC + 8];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errcap, "cannot open the key %s: %s", path, strerror(errno));
    return NIMBUS_EIO;
  }
  struct stat st;
  if (secret && fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
    close(fd);
    snprintf(err, errcap,
             "the secret key %s may be read by others (chmod 600 it)", path);
    return NIMBUS_EAUTH;
  }
  ssize_t got = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (got < 0) {
    snprintf(err, errcap, "cannot read the key %s: %s", path, strerror(errno));
    return NIMBUS_EIO;
  }
  buf[got] = '\0';
  size_t len = strcspn(buf, "\r\n");
  size_t bin = 0;
  int rc = len == 2 * n &&
                   sodium_hex2bin(key, n, buf, len, NULL, &bin, NULL) == 0 &&
                   bin == n
               ? 0
               : NIMBUS_EPROTO;
  sodium_memzero(buf, sizeof buf);
  if (rc != 0)
    snprintf(err, errcap, "%s is not a %s key (%zu hex digits expected)", path,
             secret ? "secret" : "public", 2 * n);
  return rc;
}

int nb_sign_pub_read(const char *path, uint8_t pub[NB_SIGN_PUB], char *err,
                     size_t errcap) {
  return read_hex_file(path, pub, NB_SIGN_PUB, false, err, errcap);
}

int nb_sign_sec_read(const char *path, uint8_t sec[NB_SIGN_SEC], char *err,
                     size_t errcap) {
  return read_hex_file(path, sec, NB_SIGN_SEC, true, err, errcap);
}

size_t nb_sign_statement(char *out, size_t cap, const char *kind,
                         const char *name, const char *version, uint64_t size,
                         const char *sha256_hex) {
  int n = snprintf(out, cap, "%s\n%s\n%s\n%llu\n%s", kind, name, version,
                   (unsigned long long)size, sha256_hex);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int nb_sign(const void *msg, size_t n, const uint8_t sec[NB_SIGN_SEC],
            uint8_t sig[NB_SIGN_SIG]) {
  if (ready() != 0)
    return NIMBUS_ESYS;
  return crypto_sign_detached(sig, NULL, msg, n, sec) == 0 ? 0 : NIMBUS_ESYS;
}

int nb_sign_verify(const void *msg, size_t n, const uint8_t sig[NB_SIGN_SIG],
                   const uint8_t pub[NB_SIGN_PUB]) {
  if (ready() != 0)
    return NIMBUS_EAUTH;
  return crypto_sign_verify_detached(sig, msg, n, pub) == 0 ? 0 : NIMBUS_EAUTH;
}

void nb_sign_wipe(void *p, size_t n) { sodium_memzero(p, n); }
