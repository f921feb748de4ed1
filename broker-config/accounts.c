/* The accounts file: parsing, loading, atomic saving, locking, and the
 * PBKDF2 password hashes it holds (OpenSSL PKCS5_PBKDF2_HMAC, base64 by
 * EVP_EncodeBlock/EVP_DecodeBlock).
 *
 * The format is simple enough that a line parser of our own is shorter
 * than bending a config library to it: `<name>:<role>:<hash>` where no
 * field can hold a ':' (names are [A-Za-z0-9._-], base64 has no ':'). The
 * table is kept sorted by name so that the broker finds an account with a
 * binary search at every ACL check. */
#include "accounts.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HASH_TAG "$pbkdf2-sha256$"
#define SALT_LEN 16
#define DK_LEN 32
#define SALT_MIN 8
#define DK_MIN 16
#define B64_MAX 64 /* bytes, salt or hash */
#define LINE_MAX_LEN 1024
/* About 1.5 million accounts: far beyond one broker, and a bound on what a
 * damaged or wrong path can make the broker read into memory. */
#define FILE_MAX ((size_t)256 << 20)

/* ---- Roles and names ---------------------------------------------------*/

static const char *const role_names[] = {"none", "terminal", "worker", "admin",
                                         "monitor"};

const char *ba_role_name(ba_role role) {
  if ((unsigned)role >= sizeof role_names / sizeof role_names[0])
    return "none";
  return role_names[role];
}

int ba_role_parse(const char *name, ba_role *out) {
  if (name == NULL)
    return NIMBUS_EINVAL;
  for (size_t i = 1; i < sizeof role_names / sizeof role_names[0]; i++) {
    if (strcmp(name, role_names[i]) == 0) {
      *out = (ba_role)i;
      return 0;
    }
  }
  return NIMBUS_EINVAL;
}

bool ba_name_valid(const char *name) {
  if (name == NULL)
    return false;
  return nb_valid_terminal(name, strnlen(name, 65));
}

/* ---- Base64 ------------------------------------------------------------*/

static bool b64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Decodes standard padded base64 of exactly `n` chars into `out` (cap
 * bytes). EVP_DecodeBlock skips blanks and counts padding as zero bytes,
 * so the text is checked strictly here first. */
static bool b64_decode(const char *s, size_t n, unsigned char *out, size_t cap,
                       size_t *outlen) {
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap || n > 0x7fffffff)
    return false;
  size_t pad = 0;
  if (s[n - 1] == '=')
    pad = s[n - 2] == '=' ? 2 : 1;
  for (size_t i = 0; i < n - pad; i++)
    if (!b64_char(s[i]))
      return false;
  if (EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) < 0)
    return false;
  *outlen = n / 4 * 3 - pad;
  return true;
}

/* ---- Hashes ------------------------------------------------------------*/

typedef struct parsed_hash {
  unsigned iterations;
  unsigned char salt[B64_MAX];
  size_t salt_len;
  unsigned char dk[B64_MAX];
  size_t dk_len;
} parsed_hash;

static bool parse_hash(const char *hash, parsed_hash *p) {
  if (hash == NULL || strnlen(hash, BA_HASH_MAX) >= BA_HASH_MAX)
    return false;
  size_t tag = strlen(HASH_TAG);
  if (strncmp(hash, HASH_TAG, tag) != 0)
    return false;
  const char *s = hash + tag;
  /* Iterations: plain decimal digits, no sign, no leading zero. */
  uint64_t it = 0;
  size_t digits = 0;
  while (s[digits] >= '0' && s[digits] <= '9') {
    if (digits >= 9)
      return false;
    it = it * 10 + (uint64_t)(s[digits] - '0');
    digits++;
  }
  if (digits == 0 || s[digits] != '$' || (s[0] == '0'))
    return false;
  if (it < BA_ITERATIONS_MIN || it > BA_ITERATIONS_MAX)
    return false;
  p->iterations = (unsigned)it;
  const char *salt = s + digits + 1;
  const char *dollar = strchr(salt, '$');
  if (dollar == NULL)
    return false;
  const char *dk = dollar + 1;
  if (!b64_decode(salt, (size_t)(dollar - salt), p->salt, sizeof p->salt,
                  &p->salt_len) ||
      !b64_decode(dk, strlen(dk), p->dk, sizeof p->dk, &p->dk_len))
    return false;
  return p->salt_len >= SALT_MIN && p->dk_len >= DK_MIN;
}

bool ba_hash_valid(const char *hash) {
  parsed_hash p;
  return parse_hash(hash, &p);
}

static bool password_ok(const char *password) {
  if (password == NULL)
    return false;
  size_t n = strnlen(password, BA_PASSWORD_MAX + 1);
  return n > 0 && n <= BA_PASSWORD_MAX;
}

int ba_hash_password(const char *password, unsigned iterations, char *out,
                     size_t cap) {
  unsigned char salt[SALT_LEN], dk[DK_LEN];
  char salt64[4 * ((SALT_LEN + 2) / 3) + 1], dk64[4 * ((DK_LEN + 2) / 3) + 1];
  if (!password_ok(password) || iterations < BA_ITERATIONS_MIN ||
      iterations > BA_ITERATIONS_MAX)
    return NIMBUS_EINVAL;
  if (RAND_bytes(salt, sizeof salt) != 1)
    return NIMBUS_ESYS;
  if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof salt,
                        (int)iterations, EVP_sha256(), sizeof dk, dk) != 1)
    return NIMBUS_ESYS;
  EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof salt);
  EVP_EncodeBlock((unsigned char *)dk64, dk, sizeof dk);
  OPENSSL_cleanse(dk, sizeof dk);
  int n = snprintf(out, cap, HASH_TAG "%u$%s$%s", iterations, salt64, dk64);
  if (n < 0 || (size_t)n >= cap)
    return NIMBUS_EINVAL;
  return 0;
}

bool ba_verify_password(const char *hash, const char *password) {
  parsed_hash p;
  unsigned char dk[B64_MAX];
  /* A password no account can have costs what a wrong one costs: the
   * time must not tell an account that exists from one that does not. */
  if (!password_ok(password))
    return ba_verify_dummy(password);
  if (!parse_hash(hash, &p))
    return false;
  if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), p.salt,
                        (int)p.salt_len, (int)p.iterations, EVP_sha256(),
                        (int)p.dk_len, dk) != 1)
    return false;
  bool ok = CRYPTO_memcmp(dk, p.dk, p.dk_len) == 0;
  OPENSSL_cleanse(dk, sizeof dk);
  return ok;
}

bool ba_verify_dummy(const char *password) {
  static const unsigned char salt[SALT_LEN] = "nimbus-dummy-slt";
  unsigned char dk[DK_LEN];
  const char *pw = password_ok(password) ? password : "x";
  PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, sizeof salt,
                    (int)BA_ITERATIONS_DEFAULT, EVP_sha256(), sizeof dk, dk);
  OPENSSL_cleanse(dk, sizeof dk);
  return false;
}

int ba_random_password(char *out, size_t len) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char raw[64];
  size_t have = 0;
  if (len == 0 || len > 128)
    return NIMBUS_EINVAL;
  /* 62 does not divide 256: bytes of 248 and up are thrown away so that
   * every character is equally likely. */
  while (have < len) {
    if (RAND_bytes(raw, sizeof raw) != 1)
      return NIMBUS_ESYS;
    for (size_t i = 0; i < sizeof raw && have < len; i++)
      if (raw[i] < 248)
        out[have++] = alphabet[raw[i] % 62];
  }
  out[len] = '\0';
  OPENSSL_cleanse(raw, sizeof raw);
  return 0;
}

/* ---- The table -------------------------------------------------------- */

ba_accounts *ba_accounts_new(void) { return calloc(1, sizeof(ba_accounts)); }

void ba_accounts_free(ba_accounts *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n; i++) {
    free(t->v[i].name);
    free(t->v[i].hash);
  }
  free(t->v);
  free(t);
}

/* Index of `name`, or of where it would go, and whether it is there. */
static size_t find_pos(const ba_accounts *t, const char *name, bool *found) {
  size_t lo = 0, hi = t->n;
  *found = false;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(t->v[mid].name, name);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

const ba_account *ba_accounts_find(const ba_accounts *t, const char *name) {
  bool found;
  if (t == NULL || name == NULL)
    return NULL;
  size_t i = find_pos(t, name, &found);
  return found ? &t->v[i] : NULL;
}

static int reserve(ba_accounts *t, size_t want) {
  if (want <= t->cap)
    return 0;
  size_t cap = t->cap ? t->cap * 2 : 16;
  while (cap < want)
    cap *= 2;
  ba_account *v = realloc(t->v, cap * sizeof *v);
  if (v == NULL)
    return NIMBUS_ENOMEM;
  t->v = v;
  t->cap = cap;
  return 0;
}

int ba_accounts_add(ba_accounts *t, const char *name, ba_role role,
                    const char *hash) {
  bool found;
  char *n = NULL, *h = NULL;
  if (!ba_name_valid(name) || role == BA_ROLE_NONE ||
      (unsigned)role > BA_ROLE_MONITOR || !ba_hash_valid(hash))
    return NIMBUS_EINVAL;
  size_t i = find_pos(t, name, &found);
  if (found)
    return NIMBUS_ECONFLICT;
  n = strdup(name);
  h = strdup(hash);
  if (n == NULL || h == NULL || reserve(t, t->n + 1) != 0)
    goto fail;
  memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof t->v[0]);
  t->v[i] = (ba_account){.name = n, .role = role, .hash = h};
  t->n++;
  return 0;
fail:
  free(n);
  free(h);
  return NIMBUS_ENOMEM;
}

int ba_accounts_del(ba_accounts *t, const char *name) {
  bool found;
  if (name == NULL)
    return NIMBUS_ENOTFOUND;
  size_t i = find_pos(t, name, &found);
  if (!found)
    return NIMBUS_ENOTFOUND;
  free(t->v[i].name);
  free(t->v[i].hash);
  memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof t->v[0]);
  t->n--;
  return 0;
}

int ba_accounts_set_hash(ba_accounts *t, const char *name, const char *hash) {
  bool found;
  if (name == NULL)
    return NIMBUS_ENOTFOUND;
  size_t i = find_pos(t, name, &found);
  if (!found)
    return NIMBUS_ENOTFOUND;
  if (!ba_hash_valid(hash))
    return NIMBUS_EINVAL;
  char *h = strdup(hash);
  if (h == NULL)
    return NIMBUS_ENOMEM;
  free(t->v[i].hash);
  t->v[i].hash = h;
  return 0;
}

/* ---- Parsing ---------------------------------------------------------- */

static int cmp_account(const void *a, const void *b) {
  return strcmp(((const ba_account *)a)->name, ((const ba_account *)b)->name);
}

/* Parses one non-blank, non-comment line (NUL-terminated copy in `line`,
 * which it cuts in place) and appends it unsorted. */
static int parse_line(ba_accounts *t, char *line, size_t lineno, char *errbuf,
                      size_t errcap) {
  char *c1 = strchr(line, ':');
  char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  if (c2 == NULL) {
    nb_errf(errbuf, errcap, "line %zu: expected <name>:<role>:<hash>", lineno);
    return NIMBUS_EPROTO;
  }
  *c1 = '\0';
  *c2 = '\0';
  const char *name = line, *role_s = c1 + 1, *hash = c2 + 1;
  ba_role role;
  if (!ba_name_valid(name)) {
    nb_errf(errbuf, errcap, "line %zu: invalid name (1-64 of [A-Za-z0-9._-])",
            lineno);
    return NIMBUS_EPROTO;
  }
  if (ba_role_parse(role_s, &role) != 0) {
    nb_errf(errbuf, errcap, "line %zu: unknown role \"%.16s\"", lineno, role_s);
    return NIMBUS_EPROTO;
  }
  if (!ba_hash_valid(hash)) {
    nb_errf(errbuf, errcap, "line %zu: malformed or unsupported hash", lineno);
    return NIMBUS_EPROTO;
  }
  char *n = strdup(name), *h = strdup(hash);
  if (n == NULL || h == NULL || reserve(t, t->n + 1) != 0) {
    free(n);
    free(h);
    nb_errf(errbuf, errcap, "out of memory");
    return NIMBUS_ENOMEM;
  }
  t->v[t->n++] = (ba_account){.name = n, .role = role, .hash = h};
  return 0;
}

int ba_accounts_parse(const char *text, size_t len, ba_accounts **out,
                      char *errbuf, size_t errcap) {
  char line[LINE_MAX_LEN + 1];
  int rc = NIMBUS_ENOMEM;
  ba_accounts *t = ba_accounts_new();
  *out = NULL;
  if (t == NULL) {
    nb_errf(errbuf, errcap, "out of memory");
    goto fail;
  }
  size_t pos = 0, lineno = 0;
  while (pos < len) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    size_t n = end - pos;
    lineno++;
    if (n > LINE_MAX_LEN) {
      nb_errf(errbuf, errcap, "line %zu: longer than %d bytes", lineno,
              LINE_MAX_LEN);
      rc = NIMBUS_EPROTO;
      goto fail;
    }
    memcpy(line, text + pos, n);
    line[n] = '\0';
    pos = end + 1;
    if (strlen(line) != n) {
      nb_errf(errbuf, errcap, "line %zu: holds a NUL byte", lineno);
      rc = NIMBUS_EPROTO;
      goto fail;
    }
    if (n == 0 || line[0] == '#')
      continue;
    rc = parse_line(t, line, lineno, errbuf, errcap);
    if (rc != 0)
      goto fail;
  }
  if (t->n > 1)
    qsort(t->v, t->n, sizeof t->v[0], cmp_account);
  for (size_t i = 1; i < t->n; i++) {
    if (strcmp(t->v[i - 1].name, t->v[i].name) == 0) {
      nb_errf(errbuf, errcap, "account \"%s\" is listed twice", t->v[i].name);
      rc = NIMBUS_EPROTO;
      goto fail;
    }
  }
  *out = t;
  return 0;
fail:
  ba_accounts_free(t);
  return rc;
}

/* ---- Files ------------------------------------------------------------ */

static void id_from_stat(const struct stat *st, ba_file_id *id) {
  id->dev = (uint64_t)st->st_dev;
  id->ino = (uint64_t)st->st_ino;
  id->size = (int64_t)st->st_size;
  id->mtime_sec = (int64_t)st->st_mtim.tv_sec;
  id->mtime_nsec = st->st_mtim.tv_nsec;
}

int ba_file_stat(const char *path, ba_file_id *id) {
  struct stat st;
  if (stat(path, &st) != 0)
    return errno == ENOENT ? NIMBUS_ENOTFOUND : NIMBUS_EIO;
  id_from_stat(&st, id);
  return 0;
}

bool ba_file_id_equal(const ba_file_id *a, const ba_file_id *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
}

int ba_accounts_load(const char *path, ba_accounts **out, ba_file_id *id,
                     char *errbuf, size_t errcap) {
  int rc = NIMBUS_EIO;
  int fd = -1;
  char *buf = NULL;
  char why[160];
  struct stat st;
  *out = NULL;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = errno == ENOENT ? NIMBUS_ENOTFOUND : NIMBUS_EIO;
    nb_errf(errbuf, errcap, "cannot open %s: %s", path, strerror(errno));
    goto fail;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    nb_errf(errbuf, errcap, "%s is not a regular file", path);
    goto fail;
  }
  if ((uint64_t)st.st_size > FILE_MAX) {
    nb_errf(errbuf, errcap, "%s is larger than %zu bytes", path, FILE_MAX);
    goto fail;
  }
  /* Read to EOF rather than trusting st_size: an in-place edit may be
   * growing the file; the bound above still holds. */
  size_t cap = (size_t)st.st_size + 1, len = 0;
  buf = malloc(cap);
  if (buf == NULL) {
    rc = NIMBUS_ENOMEM;
    nb_errf(errbuf, errcap, "out of memory reading %s", path);
    goto fail;
  }
  for (;;) {
    if (len == cap) {
      if (cap > FILE_MAX) {
        nb_errf(errbuf, errcap, "%s is larger than %zu bytes", path, FILE_MAX);
        goto fail;
      }
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        rc = NIMBUS_ENOMEM;
        nb_errf(errbuf, errcap, "out of memory reading %s", path);
        goto fail;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      nb_errf(errbuf, errcap, "cannot read %s: %s", path, strerror(errno));
      goto fail;
    }
    if (r == 0)
      break;
    len += (size_t)r;
  }
  rc = ba_accounts_parse(buf, len, out, why, sizeof why);
  if (rc != 0) {
    nb_errf(errbuf, errcap, "%s: %s", path, why);
    goto fail;
  }
  if (id != NULL)
    id_from_stat(&st, id);
  free(buf);
  close(fd);
  return 0;
fail:
  free(buf);
  if (fd >= 0)
    close(fd);
  return rc;
}

/* Splits `path` into its directory (into dir, cap bytes) and base name
 * (returned, borrowed from path). */
static const char *split_path(const char *path, char *dir, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    nb_strlcpy(dir, ".", cap);
    return path;
  }
  size_t n = (size_t)(slash - path);
  if (n == 0)
    n = 1; /* "/accounts": the root directory */
  if (n >= cap)
    n = cap - 1;
  memcpy(dir, path, n);
  dir[n] = '\0';
  return slash + 1;
}

int ba_accounts_save(const ba_accounts *t, const char *path, char *errbuf,
                     size_t errcap) {
  char dir[4096], tmp[4096 + 64];
  char line[LINE_MAX_LEN + 2];
  char *out = NULL;
  size_t len = 0, cap = 0;
  int fd = -1, dfd = -1;
  bool tmp_made = false;
  struct stat old;
  const char *base = split_path(path, dir, sizeof dir);
  if (strlen(path) >= sizeof dir || *base == '\0') {
    nb_errf(errbuf, errcap, "invalid accounts path %s", path);
    return NIMBUS_EIO;
  }
  /* The whole text first, so that one write() carries it. */
  for (size_t i = 0; i < t->n; i++) {
    int n = snprintf(line, sizeof line, "%s:%s:%s\n", t->v[i].name,
                     ba_role_name(t->v[i].role), t->v[i].hash);
    if (n < 0 || (size_t)n >= sizeof line)
      goto fail_nomem;
    if (len + (size_t)n > cap) {
      size_t ncap = cap ? cap * 2 : 4096;
      while (ncap < len + (size_t)n)
        ncap *= 2;
      char *nb = realloc(out, ncap);
      if (nb == NULL)
        goto fail_nomem;
      out = nb;
      cap = ncap;
    }
    memcpy(out + len, line, (size_t)n);
    len += (size_t)n;
  }
  snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base);
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    nb_errf(errbuf, errcap, "cannot create a file in %s: %s", dir,
            strerror(errno));
    goto fail;
  }
  tmp_made = true;
  /* The broker reads this file as the user it runs as. When nimbusctl runs
   * as root for a file that belongs to that user, the new file must belong
   * to it too, or the broker could no longer read its accounts. */
  if (stat(path, &old) == 0 &&
      (old.st_uid != geteuid() || old.st_gid != getegid()) &&
      fchown(fd, old.st_uid, old.st_gid) != 0) {
    nb_errf(errbuf, errcap, "cannot give the new %s to its owner: %s", path,
            strerror(errno));
    goto fail;
  }
  if (fchmod(fd, 0600) != 0 || nb_write_all(fd, out, len) != 0 ||
      fsync(fd) != 0) {
    nb_errf(errbuf, errcap, "cannot write %s: %s", tmp, strerror(errno));
    goto fail;
  }
  if (close(fd) != 0) {
    fd = -1;
    nb_errf(errbuf, errcap, "cannot write %s: %s", tmp, strerror(errno));
    goto fail;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    nb_errf(errbuf, errcap, "cannot rename %s to %s: %s", tmp, path,
            strerror(errno));
    goto fail;
  }
  tmp_made = false;
  /* The rename is durable only once the directory is. */
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) != 0) {
    nb_errf(errbuf, errcap, "cannot sync directory %s: %s", dir,
            strerror(errno));
    goto fail;
  }
  close(dfd);
  free(out);
  return 0;
fail_nomem:
  nb_errf(errbuf, errcap, "out of memory writing %s", path);
fail:
  if (fd >= 0)
    close(fd);
  if (dfd >= 0)
    close(dfd);
  if (tmp_made)
    unlink(tmp);
  free(out);
  return NIMBUS_EIO;
}

int ba_accounts_lock(const char *path, int *fd, char *errbuf, size_t errcap) {
  char lock[4096 + 32];
  int n = snprintf(lock, sizeof lock, "%s.nimbusctl.lock", path);
  *fd = -1;
  if (n < 0 || (size_t)n >= sizeof lock) {
    nb_errf(errbuf, errcap, "accounts path too long");
    return NIMBUS_EIO;
  }
  int f = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (f < 0) {
    nb_errf(errbuf, errcap, "cannot open lock file %s: %s", lock,
            strerror(errno));
    return NIMBUS_EIO;
  }
  while (flock(f, LOCK_EX) != 0) {
    if (errno != EINTR) {
      nb_errf(errbuf, errcap, "cannot lock %s: %s", lock, strerror(errno));
      close(f);
      return NIMBUS_EIO;
    }
  }
  *fd = f;
  return 0;
}

void ba_accounts_unlock(int fd) {
  if (fd < 0)
    return;
  flock(fd, LOCK_UN);
  close(fd);
}
