/* The hash cache: the SHA-256 of files `nimbus-agent backup` (or restore)
 * has read, so that a file whose absolute path, size, mtime (ns) and inode
 * are unchanged is not read again.
 *
 * <state_dir>/hash-cache is text, one file per line after a header:
 *
 *   nimbus-hash-cache 1
 *   <sha256 hex> <size> <mtime ns> <inode> <path>
 *
 * where the path escapes every byte below 0x21, 0x7f and '%' as %XX (so a
 * line holds no space or newline of its own). It is rewritten whole,
 * atomically: a temporary file next to it, fsync, rename, fsync of the
 * directory. A line that does not parse is ignored; the cache only ever
 * spares work, and a wrong entry could only make a backup name a blob
 * whose upload the cloud then refuses (blob.commit checks every byte). */
#include "bk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_util.h"
#include "nimbus/errors.h"

#define BK_HC_HEADER "nimbus-hash-cache 1"

static uint64_t bk_hc_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s != '\0'; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return h;
}

/* The slot of `path`: where it is, or the empty slot where it goes. */
static size_t bk_hc_slot(const bk_hcache *c, const char *path) {
  size_t mask = c->nslots - 1, i = (size_t)bk_hc_hash(path) & mask;
  while (c->slots[i] != 0 && strcmp(c->v[c->slots[i] - 1].path, path) != 0)
    i = (i + 1) & mask;
  return i;
}

static int bk_hc_grow(bk_hcache *c) {
  if (c->n + 1 > c->cap) {
    size_t cap = c->cap != 0 ? 2 * c->cap : 256;
    bk_hcache_entry *v = realloc(c->v, cap * sizeof *v);
    if (v == NULL)
      return NIMBUS_ENOMEM;
    c->v = v;
    c->cap = cap;
  }
  if (2 * (c->n + 1) > c->nslots) {
    size_t ns = c->nslots != 0 ? 2 * c->nslots : 512;
    while (ns < 2 * (c->n + 1))
      ns *= 2;
    size_t *slots = calloc(ns, sizeof *slots);
    if (slots == NULL)
      return NIMBUS_ENOMEM;
    free(c->slots);
    c->slots = slots;
    c->nslots = ns;
    for (size_t k = 0; k < c->n; k++)
      c->slots[bk_hc_slot(c, c->v[k].path)] = k + 1;
  }
  return 0;
}

int bk_hcache_put(bk_hcache *c, const char *path, int64_t size,
                  int64_t mtime_ns, uint64_t ino, const uint8_t sha[32]) {
  bk_hcache_entry *e;
  if (c->nslots != 0 && c->slots[bk_hc_slot(c, path)] != 0) {
    e = &c->v[c->slots[bk_hc_slot(c, path)] - 1];
  } else {
    char *copy = strdup(path);
    if (copy == NULL || bk_hc_grow(c) != 0) {
      free(copy);
      return NIMBUS_ENOMEM;
    }
    e = &c->v[c->n];
    e->path = copy;
    c->slots[bk_hc_slot(c, path)] = ++c->n;
  }
  e->size = size;
  e->mtime_ns = mtime_ns;
  e->ino = ino;
  memcpy(e->sha, sha, 32);
  e->used = true;
  c->dirty = true;
  return 0;
}

const uint8_t *bk_hcache_get(bk_hcache *c, const char *path, int64_t size,
                             int64_t mtime_ns, uint64_t ino) {
  if (c->nslots == 0)
    return NULL;
  size_t k = c->slots[bk_hc_slot(c, path)];
  if (k == 0)
    return NULL;
  bk_hcache_entry *e = &c->v[k - 1];
  if (e->size != size || e->mtime_ns != mtime_ns || e->ino != ino)
    return NULL;
  e->used = true;
  return e->sha;
}

/* Undoes the %XX escapes in place. Returns 0, or -1 for a bad escape. */
static int bk_hc_unescape(char *s) {
  char *w = s;
  for (char *r = s; *r != '\0'; r++) {
    if (*r != '%') {
      *w++ = *r;
      continue;
    }
    int v = 0;
    for (int i = 1; i <= 2; i++) {
      char c = r[i];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                     : -1;
      if (d < 0)
        return -1;
      v = v * 16 + d;
    }
    if (v == 0)
      return -1;
    *w++ = (char)v;
    r += 2;
  }
  *w = '\0';
  return 0;
}

/* One line (without its newline) into the cache; false when it does not
 * parse. */
static bool bk_hc_parse(bk_hcache *c, char *line, int *rc) {
  uint8_t sha[32];
  char *p = line, *end;
  if (strlen(line) < 66 || line[64] != ' ' || nb_unhex32(line, sha) != 0)
    return false;
  p = line + 65;
  errno = 0;
  long long size = strtoll(p, &end, 10);
  if (errno != 0 || end == p || *end != ' ' || size < 0)
    return false;
  p = end + 1;
  long long mt = strtoll(p, &end, 10);
  if (errno != 0 || end == p || *end != ' ')
    return false;
  p = end + 1;
  unsigned long long ino = strtoull(p, &end, 10);
  if (errno != 0 || end == p || *end != ' ')
    return false;
  p = end + 1;
  if (p[0] != '/' || strchr(p, ' ') != NULL || bk_hc_unescape(p) != 0)
    return false;
  *rc = bk_hcache_put(c, p, size, mt, ino, sha);
  if (*rc == 0)
    c->v[c->slots[bk_hc_slot(c, p)] - 1].used = false;
  return true;
}

int bk_hcache_load(bk_hcache *c, const char *dir) {
  memset(c, 0, sizeof *c);
  size_t n = strlen(dir) + sizeof "/hash-cache";
  if ((c->file = malloc(n)) == NULL)
    return NIMBUS_ENOMEM;
  snprintf(c->file, n, "%s/hash-cache", dir);
  FILE *f = fopen(c->file, "re");
  if (f == NULL)
    return errno == ENOENT ? 0 : NIMBUS_EIO;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int rc = 0;
  bool first = true;
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    if (len > 0 && line[len - 1] == '\n')
      line[--len] = '\0';
    if (first) {
      first = false;
      if (strcmp(line, BK_HC_HEADER) != 0) {
        /* Another format: start afresh. */
        c->bad_lines++;
        break;
      }
      continue;
    }
    if (!bk_hc_parse(c, line, &rc))
      c->bad_lines++;
  }
  free(line);
  bool err = ferror(f);
  fclose(f);
  if (rc != 0)
    return rc;
  c->dirty = c->bad_lines > 0;
  return err ? NIMBUS_EIO : 0;
}

/* Still true of the file? (for entries not used in this run) */
static bool bk_hc_valid(const bk_hcache_entry *e) {
  struct stat st;
  return lstat(e->path, &st) == 0 && S_ISREG(st.st_mode) &&
         st.st_size == e->size && (uint64_t)st.st_ino == e->ino &&
         (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec ==
             e->mtime_ns;
}

static void bk_hc_write_path(FILE *f, const char *p) {
  for (; *p != '\0'; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch < 0x21 || ch == 0x7f || ch == '%')
      fprintf(f, "%%%02X", ch);
    else
      fputc(ch, f);
  }
}

int bk_hcache_save(bk_hcache *c, char *err, size_t errcap) {
  if (!c->dirty || c->file == NULL)
    return 0;
  size_t n = strlen(c->file) + sizeof ".XXXXXX";
  char *tmp = malloc(n);
  if (tmp == NULL) {
    nb_errf(err, errcap, "out of memory");
    return NIMBUS_EIO;
  }
  snprintf(tmp, n, "%s.XXXXXX", c->file);
  int fd = mkostemp(tmp, O_CLOEXEC);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL) {
    nb_errf(err, errcap, "cannot write the hash cache next to %s: %s", c->file,
            strerror(errno));
    if (fd >= 0) {
      close(fd);
      unlink(tmp);
    }
    free(tmp);
    return NIMBUS_EIO;
  }
  fprintf(f, "%s\n", BK_HC_HEADER);
  char hex[65];
  for (size_t i = 0; i < c->n; i++) {
    const bk_hcache_entry *e = &c->v[i];
    if (!e->used && !bk_hc_valid(e))
      continue;
    nb_hex(e->sha, 32, hex);
    fprintf(f, "%s %" PRId64 " %" PRId64 " %" PRIu64 " ", hex, e->size,
            e->mtime_ns, e->ino);
    bk_hc_write_path(f, e->path);
    fputc('\n', f);
  }
  bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
  int e = errno;
  ok = fclose(f) == 0 && ok;
  if (ok && rename(tmp, c->file) != 0) {
    e = errno;
    ok = false;
  }
  if (!ok) {
    nb_errf(err, errcap, "cannot write the hash cache %s: %s", c->file,
            strerror(e));
    unlink(tmp);
    free(tmp);
    return NIMBUS_EIO;
  }
  free(tmp);
  /* The new name survives a power cut once its directory is synced. */
  char *slash = strrchr(c->file, '/');
  if (slash != NULL) {
    *slash = '\0';
    int dfd = open(slash == c->file ? "/" : c->file,
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    *slash = '/';
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
  c->dirty = false;
  return 0;
}

void bk_hcache_free(bk_hcache *c) {
  for (size_t i = 0; i < c->n; i++)
    free(c->v[i].path);
  free(c->v);
  free(c->slots);
  free(c->file);
  memset(c, 0, sizeof *c);
}
