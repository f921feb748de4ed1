/* The blob store (st_blob.h) above its backend (st_blob_backend.h): what
 * every backend shares. It names staging objects by the SHA-256 of
 * "<terminal>\n<upload>", so no backend is ever handed a terminal's
 * string; hashes what is staged or stored in one streaming pass (OpenSSL's
 * EVP SHA-256 of the whole, XXH3-128 of each segment), reading one chunk
 * ahead of the hashing on a thread of its own; checks segments read back
 * against their recorded sums (st_segsum_ok); tells when the store is full
 * (st_blobstore_full_since); and keeps each thread's error text. Every
 * read of a stored blob goes through st_bin (blob_pack.c), so hashing and
 * ranged reads get the blob's bytes whether it is kept as it is or
 * compressed. The rules of the disk itself (fsync of file and directory,
 * then rename; O_DIRECT; O_NOFOLLOW) are the local backend's, in
 * blob_fs.c. */
#include "st_blob_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRSTR_CAP 256

static _Thread_local char errstr[ERRSTR_CAP];

const char *st_blobstore_errstr(void) { return errstr; }

int st_blob_fail_io(const char *fmt, ...) {
  int e = errno;
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(errstr, sizeof errstr, "%s: %s", what, strerror(e));
  return e == ENOSPC || e == EDQUOT ? NIMBUS_ENOSPC : NIMBUS_EIO;
}

void st_blob_set_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, sizeof errstr, fmt, ap);
  va_end(ap);
}

uint64_t st_blob_nsegs(uint64_t size) {
  return (size + ST_SEGMENT - 1) / ST_SEGMENT;
}

/* The staging name of (terminal, upload): a hash, so that what a terminal
 * sends never becomes a path or a key, whatever it holds ("../", NUL). */
static int stage_name(const char *terminal, const char *upload,
                      uint8_t name[32]) {
  char key[160];
  int n = snprintf(key, sizeof key, "%s\n%s", terminal, upload);
  if (n < 0 || (size_t)n >= sizeof key)
    return NIMBUS_EINVAL;
  nb_sha256(key, (size_t)n, name);
  return 0;
}

/* ---- Opening and closing ------------------------------------------------- */

int st_blobstore_new(st_blob_be *be, st_blobstore **out) {
  st_blobstore *s = calloc(1, sizeof *s);
  if (s == NULL) {
    be->ops->free(be);
    return NIMBUS_ENOMEM;
  }
  s->be = be;
  s->ops = be->ops;
  atomic_init(&s->full_since, 0);
  atomic_init(&s->full_checked, 0);
  *out = s;
  return 0;
}

int st_blobstore_open(const char *dir, st_blobstore **out, char *errbuf,
                      size_t errcap) {
  st_blob_be *be = NULL;
  int rc = st_blob_fs_open(dir, &be);
  if (rc == 0)
    rc = st_blobstore_new(be, out);
  if (rc != 0 && errbuf != NULL && errcap > 0)
    snprintf(errbuf, errcap, "blob store %s: %s", dir,
             rc == NIMBUS_ENOMEM ? "out of memory" : errstr);
  return rc;
}

void st_blobstore_set_direct(st_blobstore *s, bool on) {
  if (s->ops->set_direct != NULL)
    s->ops->set_direct(s->be, on);
}

void st_blobstore_free(st_blobstore *s) {
  if (s == NULL)
    return;
  s->ops->free(s->be);
  free(s);
}

/* ---- A full store ---------------------------------------------------------
 * A full store is one that refused a write for want of space; a write that
 * succeeds ends that (one relaxed load on the way, nothing more). */

void st__blob_note_write(st_blobstore *s, int rc) {
  if (rc == NIMBUS_ENOSPC) {
    int64_t zero = 0;
    atomic_compare_exchange_strong(&s->full_since, &zero, nb_now_ms());
  } else if (rc == 0 &&
             atomic_load_explicit(&s->full_since, memory_order_relaxed) != 0) {
    atomic_store(&s->full_since, 0);
  }
}

/* Free space at which a store that was full is no longer said to be. */
#define FULL_CLEAR_BYTES ((uint64_t)4 * ST_SEGMENT)

int64_t st_blobstore_full_since(st_blobstore *s) {
  int64_t since = atomic_load(&s->full_since);
  if (since == 0)
    return 0;
  int64_t now = nb_now_ms(), checked = atomic_load(&s->full_checked);
  uint64_t avail = 0;
  if (now - checked >= 1000 &&
      atomic_compare_exchange_strong(&s->full_checked, &checked, now) &&
      s->ops->space(s->be, &avail) == 0 && avail >= FULL_CLEAR_BYTES) {
    atomic_compare_exchange_strong(&s->full_since, &since, 0);
    return 0;
  }
  return since;
}

/* ---- Hashing ---------------------------------------------------------------
 * A commit reads in chunks of this many bytes (whole segments), one chunk
 * ahead of the hashing, on a thread of its own. */
#define READ_CHUNK (16 * ST_SEGMENT)

typedef struct reader {
  st_bin *in;
  uint64_t size;
  uint8_t *buf[2];
  size_t len[2];
  int rc[2];
  bool full[2];
  bool stop;
  char err[ERRSTR_CAP]; /* the reader thread's error text */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} reader;

/* Reads [off, off + n) of the object into buf: n rounded up to 4096 bytes
 * for an uncached read, the object ending within the last block. */
static int read_chunk(reader *r, uint64_t off, uint8_t *buf, size_t n) {
  size_t want = (n + 4095) & ~(size_t)4095, got = 0;
  while (got < n) {
    size_t k = 0;
    int rc = st__bin_read(r->in, off + got, buf + got, want - got, &k);
    if (rc != 0)
      return rc;
    if (k == 0) {
      st_blob_set_err("%.200s is shorter than %llu bytes", r->in->rd->what,
                      (unsigned long long)r->size);
      return NIMBUS_EIO;
    }
    got += k;
  }
  return 0;
}

static void *reader_main(void *arg) {
  reader *r = arg;
  int slot = 0;
  for (uint64_t off = 0; off < r->size; off += READ_CHUNK, slot ^= 1) {
    pthread_mutex_lock(&r->mu);
    while (r->full[slot] && !r->stop)
      pthread_cond_wait(&r->cv, &r->mu);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    if (stop)
      break;
    size_t n =
        r->size - off < READ_CHUNK ? (size_t)(r->size - off) : READ_CHUNK;
    int rc = read_chunk(r, off, r->buf[slot], n);
    pthread_mutex_lock(&r->mu);
    if (rc != 0)
      snprintf(r->err, sizeof r->err, "%s", errstr);
    r->len[slot] = n;
    r->rc[slot] = rc;
    r->full[slot] = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc != 0)
      break;
  }
  return NULL;
}

/* Hashes `size` bytes of the open object `in` (see st_blobstore_stage_hash):
 * a reader thread fills one chunk while this one hashes the other. The
 * error text of a failed read is the reader's; it is copied here. */
static int hash_rd(st_bin *in, uint64_t size, uint8_t whole[32],
                   uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                   void *arg) {
  int rc = 0;
  reader r;
  memset(&r, 0, sizeof r);
  r.in = in;
  r.size = size;
  EVP_MD_CTX *all = EVP_MD_CTX_new();
  bool started = false;
  /* One chunk or less (most uploads: contacts, messages, photos) is read
   * here, without a thread and into a buffer of its size. */
  bool one = size <= READ_CHUNK;
  size_t cap = one ? ((size_t)size + 4095) & ~(size_t)4095 : READ_CHUNK;
  if (cap == 0)
    cap = 4096;
  if (all == NULL || EVP_DigestInit_ex(all, EVP_sha256(), NULL) != 1 ||
      posix_memalign((void **)&r.buf[0], 4096, cap) != 0 ||
      (!one && posix_memalign((void **)&r.buf[1], 4096, cap) != 0)) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  pthread_t th;
  if (one) {
    r.len[0] = (size_t)size;
    r.full[0] = true;
    if (size > 0 && (r.rc[0] = read_chunk(&r, 0, r.buf[0], (size_t)size)) != 0)
      snprintf(r.err, sizeof r.err, "%s", errstr);
  } else if (pthread_create(&th, NULL, reader_main, &r) != 0) {
    rc = NIMBUS_ENOMEM;
    goto fini;
  } else {
    started = true;
  }
  uint64_t off = 0, seg = 0;
  for (int slot = 0; off < size && rc == 0; slot ^= 1) {
    pthread_mutex_lock(&r.mu);
    while (!r.full[slot])
      pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    if ((rc = r.rc[slot]) != 0) {
      snprintf(errstr, sizeof errstr, "%s", r.err);
      break;
    }
    for (size_t at = 0; at < r.len[slot] && rc == 0; at += ST_SEGMENT) {
      size_t n = r.len[slot] - at < ST_SEGMENT ? r.len[slot] - at : ST_SEGMENT;
      if (EVP_DigestUpdate(all, r.buf[slot] + at, n) != 1) {
        rc = NIMBUS_ENOMEM;
        break;
      }
      nb_xxh128(r.buf[slot] + at, n, sums[seg++]);
      off += n;
      if (progress != NULL)
        rc = progress(arg, off, size);
    }
    pthread_mutex_lock(&r.mu);
    r.full[slot] = false;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
  }
  if (rc == 0) {
    unsigned int dl = 0;
    if (EVP_DigestFinal_ex(all, whole, &dl) != 1)
      rc = NIMBUS_ENOMEM;
  }
fini:
  if (started) {
    pthread_mutex_lock(&r.mu);
    r.stop = true;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    pthread_join(th, NULL);
  }
  pthread_cond_destroy(&r.cv);
  pthread_mutex_destroy(&r.mu);
out:
  EVP_MD_CTX_free(all);
  free(r.buf[0]);
  free(r.buf[1]);
  return rc;
}

static int hash_object(st_blobstore *s, st_blob_ns ns, const uint8_t name[32],
                       uint64_t size, uint8_t whole[32],
                       uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                       void *arg) {
  /* A small upload's bytes are likely still in the page cache (only
   * whole segments skip it): read them from there. A big one is read in
   * whole aligned chunks into aligned buffers (read_chunk), past it. */
  st_bin in;
  int rc = st__bin_open(s, ns, name,
                        size > READ_CHUNK ? ST_BLOB_RD_UNCACHED : 0, &in);
  if (rc != 0)
    return rc;
  rc = hash_rd(&in, size, whole, sums, progress, arg);
  st__bin_close(&in);
  return rc;
}

int st_blobstore_stage_hash(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t size,
                            uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                            st_blob_progress_fn progress, void *arg) {
  uint8_t name[32];
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  return hash_object(s, ST_BLOB_STAGING, name, size, whole, sums, progress,
                     arg);
}

int st_blobstore_blob_hash(st_blobstore *s, const uint8_t hash[32],
                           uint64_t size, uint8_t whole[32],
                           uint8_t (*sums)[ST_SEGSUM],
                           st_blob_progress_fn progress, void *arg) {
  return hash_object(s, ST_BLOB_STORE, hash, size, whole, sums, progress, arg);
}

bool st_segsum_ok(const void *p, size_t n, const uint8_t *sum, size_t width) {
  uint8_t d[32];
  if (width == ST_SEGSUM_SHA256)
    nb_sha256(p, n, d);
  else
    nb_xxh128(p, n, d);
  return memcmp(d, sum, width) == 0;
}

/* ---- Staging ------------------------------------------------------------- */

int st_blobstore_stage(st_blobstore *s, const char *terminal,
                       const char *upload, uint64_t offset, const void *p,
                       size_t n, uint64_t reserve_end, bool entry_durable) {
  uint8_t name[32];
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  int rc = s->ops->stage_write(s->be, name, offset, p, n, reserve_end,
                               entry_durable);
  st__blob_note_write(s, rc);
  return rc;
}

int st_blobstore_stage_undo(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t offset, size_t n) {
  uint8_t name[32];
  if (n == 0)
    return 0;
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  return s->ops->stage_undo(s->be, name, offset, n);
}

int st_blobstore_stage_commit(st_blobstore *s, const char *terminal,
                              const char *upload, uint64_t size,
                              const uint8_t hash[32]) {
  uint8_t name[32];
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  int rc = s->ops->stage_commit(s->be, name, size, hash);
  st__blob_note_write(s, rc);
  return rc;
}

int st_blobstore_stage_lock(st_blobstore *s, const char *terminal,
                            const char *upload, int *lock) {
  uint8_t name[32];
  *lock = -1;
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  return s->ops->stage_lock(s->be, name, lock);
}

void st_blobstore_stage_unlock(st_blobstore *s, int lock) {
  s->ops->stage_unlock(s->be, lock);
}

int st_blobstore_stage_drop(st_blobstore *s, const char *terminal,
                            const char *upload) {
  uint8_t name[32];
  if (stage_name(terminal, upload, name) != 0)
    return NIMBUS_EINVAL;
  return s->ops->stage_drop(s->be, name);
}

int st_blobstore_sweep(st_blobstore *s, int64_t max_age_ms, size_t *removed) {
  return s->ops->stage_sweep(s->be, max_age_ms, removed);
}

/* ---- The store ----------------------------------------------------------- */

int st_blobstore_has(st_blobstore *s, const uint8_t hash[32], bool *exists) {
  return s->ops->has(s->be, hash, exists);
}

int st_blobstore_read(st_blobstore *s, const uint8_t hash[32], uint64_t offset,
                      void *buf, size_t n, size_t *got) {
  st_bin in;
  *got = 0;
  /* Aligned whole blocks into an aligned buffer: past the page cache. */
  unsigned flags =
      offset % 4096 == 0 && n % 4096 == 0 && (uintptr_t)buf % 4096 == 0
          ? ST_BLOB_RD_UNCACHED
          : 0;
  int rc = st__bin_open(s, ST_BLOB_STORE, hash, flags, &in);
  if (rc != 0)
    return rc;
  rc = st__bin_read_all(&in, offset, buf, n, got);
  st__bin_close(&in);
  return rc;
}

struct st_blob_reader {
  st_bin in;
};

int st_blobstore_reader_open(st_blobstore *s, const uint8_t hash[32],
                             st_blob_reader **out) {
  *out = NULL;
  st_blob_reader *r = malloc(sizeof *r);
  if (r == NULL)
    return NIMBUS_ENOMEM;
  int rc = st__bin_open(s, ST_BLOB_STORE, hash, 0, &r->in);
  if (rc != 0) {
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

int st_blob_reader_read(st_blob_reader *r, uint64_t offset, void *buf, size_t n,
                        size_t *got) {
  return st__bin_read_all(&r->in, offset, buf, n, got);
}

void st_blob_reader_close(st_blob_reader *r) {
  if (r == NULL)
    return;
  st__bin_close(&r->in);
  free(r);
}

int st_blobstore_each_old(st_blobstore *s, int64_t max_age_ms,
                          int (*fn)(void *arg, const uint8_t hash[32]),
                          void *arg) {
  return s->ops->each_old(s->be, max_age_ms, fn, arg);
}

int st_blobstore_remove(st_blobstore *s, const uint8_t hash[32]) {
  return s->ops->remove(s->be, hash);
}
