/* The blob store (st_blob.h): the public calls, which go through a table of
 * backend operations, and the one backend there is today, the local
 * filesystem.
 *
 * Layout under the data directory:
 *   staging/<64 hex>          one file per upload; the name is the SHA-256
 *                             of "<terminal>\n<upload>", so terminal
 *                             strings never become paths
 *   blobs/<2 hex>/<64 hex>    committed blobs, named by their content
 * Durability: a staging write returns after fdatasync (and, for a new
 * file, an fsync of staging/); a commit fsyncs the file, renames it into
 * blobs/<2 hex>/ and fsyncs that directory, so a crash leaves the blob
 * either absent or whole, never half there under its name. Hashing streams
 * the file through OpenSSL's EVP SHA-256 one segment at a time. */
#include "st_blob.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The operations a backend provides; see st_blob.h for each contract. */
typedef struct blob_backend {
  int (*stage)(st_blobstore *s, const char *terminal, const char *upload,
               uint64_t offset, const void *p, size_t n, uint64_t reserve_end,
               bool entry_durable);
  int (*stage_hash)(st_blobstore *s, const char *terminal,
                    const char *upload, uint64_t size, uint8_t whole[32],
                    uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                    void *arg);
  int (*blob_hash)(st_blobstore *s, const uint8_t hash[32], uint64_t size,
                   uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                   st_blob_progress_fn progress, void *arg);
  int (*stage_commit)(st_blobstore *s, const char *terminal,
                      const char *upload, uint64_t size,
                      const uint8_t hash[32]);
  int (*stage_drop)(st_blobstore *s, const char *terminal,
                    const char *upload);
  int (*has)(st_blobstore *s, const uint8_t hash[32], bool *exists);
  int (*read)(st_blobstore *s, const uint8_t hash[32], uint64_t offset,
              void *buf, size_t n, size_t *got);
  int (*sweep)(st_blobstore *s, int64_t max_age_ms, size_t *removed);
  int (*stage_lock)(st_blobstore *s, const char *terminal,
                    const char *upload, int *lock);
  void (*stage_unlock)(st_blobstore *s, int lock);
  int (*remove)(st_blobstore *s, const uint8_t hash[32]);
  int (*each_old)(st_blobstore *s, int64_t max_age_ms,
                  int (*fn)(void *arg, const uint8_t hash[32]), void *arg);
  int (*stage_undo)(st_blobstore *s, const char *terminal,
                    const char *upload, uint64_t offset, size_t n);
  /* Bytes a write may still use where the store keeps its files. */
  int (*space)(st_blobstore *s, uint64_t *avail);
} blob_backend;

struct st_blobstore {
  const blob_backend *ops;
  char *dir;             /* the local backend's root */
  atomic_bool no_direct; /* O_DIRECT refused here, or turned off */
  /* Since when (ms) writes are refused for want of space, 0 while they
   * are not, and when the free space was last looked at
   * (st_blobstore_full_since). */
  _Atomic int64_t full_since;
  _Atomic int64_t full_checked;
};

static _Thread_local char errstr[256];

const char *st_blobstore_errstr(void) { return errstr; }

static int fail_io(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records "<what>: <strerror(errno)>" and returns NIMBUS_EIO, or
 * NIMBUS_ENOSPC when the filesystem (or the user's quota) is full. */
static int fail_io(const char *fmt, ...) {
  int e = errno;
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(errstr, sizeof errstr, "%s: %s", what, strerror(e));
  return e == ENOSPC || e == EDQUOT ? NIMBUS_ENOSPC : NIMBUS_EIO;
}

uint64_t st_blob_nsegs(uint64_t size) {
  return (size + ST_SEGMENT - 1) / ST_SEGMENT;
}

/* Checks a segment read back against the sum recorded at commit: the
 * hashing lives here, beside the commit's, not in the Redis model. */
bool st_segsum_ok(const void *p, size_t n, const uint8_t *sum,
                  size_t width) {
  uint8_t d[32];
  if (width == ST_SEGSUM_SHA256)
    nb_sha256(p, n, d);
  else
    nb_xxh128(p, n, d);
  return memcmp(d, sum, width) == 0;
}

/* ---- Local filesystem backend ------------------------------------------- */

#define PATH_CAP 4096

static int stage_path(const st_blobstore *s, const char *terminal,
                      const char *upload, char *out, size_t cap) {
  char key[160];
  uint8_t d[32];
  char hex[65];
  int n = snprintf(key, sizeof key, "%s\n%s", terminal, upload);
  if (n < 0 || (size_t)n >= sizeof key)
    return NIMBUS_EINVAL;
  nb_sha256(key, (size_t)n, d);
  nb_hex(d, 32, hex);
  n = snprintf(out, cap, "%s/staging/%s", s->dir, hex);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

static int blob_path(const st_blobstore *s, const uint8_t hash[32],
                     char *out, size_t cap, char *dir, size_t dircap) {
  char hex[65];
  nb_hex(hash, 32, hex);
  int n = snprintf(dir, dircap, "%s/blobs/%.2s", s->dir, hex);
  if (n < 0 || (size_t)n >= dircap)
    return NIMBUS_EINVAL;
  n = snprintf(out, cap, "%s/%s", dir, hex);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return fail_io("cannot open directory %s", dir);
  int rc = fsync(fd) == 0 ? 0 : fail_io("cannot fsync directory %s", dir);
  close(fd);
  return rc;
}

static int mkdir_p1(const char *dir) {
  if (mkdir(dir, 0700) == 0 || errno == EEXIST)
    return 0;
  return fail_io("cannot create directory %s", dir);
}

/* mkdir_p1, and when the directory is new, an fsync of its parent so the
 * new entry (and what is later put in it) survives a crash. */
static int mkdir_durable(const char *dir) {
  if (mkdir(dir, 0700) != 0)
    return errno == EEXIST ? 0 : fail_io("cannot create directory %s", dir);
  char parent[PATH_CAP];
  nb_strlcpy(parent, dir, sizeof parent);
  char *slash = strrchr(parent, '/');
  if (slash == NULL || slash == parent)
    return 0;
  *slash = '\0';
  return fsync_dir(parent);
}

/* mkdir -p: creates `dir` and every missing parent. */
static int mkdir_p(const char *dir) {
  char tmp[PATH_CAP];
  size_t n = nb_strlcpy(tmp, dir, sizeof tmp);
  if (n >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return fail_io("cannot create directory %.100s", dir);
  }
  for (size_t i = 1; i < n; i++) {
    if (tmp[i] != '/')
      continue;
    tmp[i] = '\0';
    int rc = mkdir_p1(tmp);
    tmp[i] = '/';
    if (rc != 0)
      return rc;
  }
  return mkdir_p1(tmp);
}

/* ---- Reading and writing past the page cache ----------------------------
 * Whole segments are written with O_DIRECT, and a commit reads its staging
 * file the same way: the bytes go between the disk and one buffer, never
 * through page-cache pages, which on this project's VMs cost more CPU than
 * anything else in a backup (tests/bench/README.md). A filesystem that
 * refuses O_DIRECT (tmpfs) makes the store fall back to plain I/O for good;
 * st_blobstore_set_direct turns it off (the worker's blob_direct). */

/* One aligned segment buffer per thread, freed when the thread ends. */
static pthread_key_t seg_key;
static pthread_once_t seg_once = PTHREAD_ONCE_INIT;
static bool seg_key_ok;

static void seg_key_make(void) {
  seg_key_ok = pthread_key_create(&seg_key, free) == 0;
}

static uint8_t *seg_buffer(void) {
  pthread_once(&seg_once, seg_key_make);
  if (!seg_key_ok)
    return NULL;
  void *b = pthread_getspecific(seg_key);
  if (b == NULL) {
    if (posix_memalign(&b, 4096, ST_SEGMENT) != 0)
      return NULL;
    if (pthread_setspecific(seg_key, b) != 0) {
      free(b);
      return NULL;
    }
  }
  return b;
}

static bool direct_on(st_blobstore *s) {
  return !atomic_load_explicit(&s->no_direct, memory_order_relaxed);
}

/* Opens `path` with O_DIRECT and `flags`; -1 when that is not possible
 * here (and then never tried again by this store), or with errno set. */
static int open_direct(st_blobstore *s, const char *path, int flags) {
  if (!direct_on(s))
    return -1;
  int fd = open(path, flags | O_DIRECT | O_CLOEXEC);
  if (fd < 0 && errno == EINVAL)
    atomic_store_explicit(&s->no_direct, true, memory_order_relaxed);
  return fd;
}

/* Writes one whole aligned segment with O_DIRECT through `fd` (the put's
 * own descriptor, opened without it): O_DIRECT is switched on for the
 * write and off again. Returns 0, 1 when it cannot be done so (the caller
 * writes through the page cache), or NIMBUS_EIO. */
static int write_direct(st_blobstore *s, int fd, const char *path,
                        uint64_t off, const void *p) {
  if (!direct_on(s))
    return 1;
  uint8_t *buf = seg_buffer();
  if (buf == NULL)
    return 1;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return 1;
  if (fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) {
    if (errno == EINVAL)
      atomic_store_explicit(&s->no_direct, true, memory_order_relaxed);
    return 1;
  }
  memcpy(buf, p, ST_SEGMENT);
  size_t done = 0;
  int rc = 0;
  while (done < ST_SEGMENT) {
    ssize_t w = pwrite(fd, buf + done, ST_SEGMENT - done, (off_t)(off + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EINVAL && done == 0) {
      atomic_store_explicit(&s->no_direct, true, memory_order_relaxed);
      rc = 1;
      break;
    }
    if (w <= 0) {
      rc = fail_io("cannot write staging file %s", path);
      break;
    }
    done += (size_t)w;
  }
  if (fcntl(fd, F_SETFL, fl) != 0 && rc == 0)
    rc = fail_io("cannot switch O_DIRECT off on staging file %s", path);
  return rc;
}

static int local_stage(st_blobstore *s, const char *terminal,
                       const char *upload, uint64_t offset, const void *p,
                       size_t n, uint64_t reserve_end, bool entry_durable) {
  char path[PATH_CAP], dir[PATH_CAP];
  if (stage_path(s, terminal, upload, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  snprintf(dir, sizeof dir, "%s/staging", s->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail_io("cannot open staging file %s", path);
  /* A commit holds the exclusive lock while it hashes and moves the file:
   * wait for it, then make sure the file is still the one staged under
   * this name, so no byte lands in a blob already hashed or stored. */
  int rc = 0;
  struct stat a, b;
  while (flock(fd, LOCK_SH) != 0) {
    if (errno != EINTR) {
      rc = fail_io("cannot lock staging file %s", path);
      goto out;
    }
  }
  if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino ||
      a.st_dev != b.st_dev) {
    snprintf(errstr, sizeof errstr,
             "upload was committed or discarded while a segment arrived");
    rc = NIMBUS_ECONFLICT;
    goto out;
  }
  /* A write beyond the file's end would extend it: ext4 does that under
   * an exclusive inode lock, one write at a time, with more metadata to
   * commit. Reserving the space of the puts to come (fallocate) lets them
   * overwrite allocated blocks instead, several at once (see
   * st_blobstore_stage). A filesystem without fallocate (EOPNOTSUPP)
   * just extends the file. */
  if (reserve_end > offset + n && offset + n > (uint64_t)a.st_size)
    (void)fallocate(fd, 0, (off_t)offset, (off_t)(reserve_end - offset));
  const char *c = p;
  size_t done = 0;
  if (n == ST_SEGMENT && offset % ST_SEGMENT == 0) {
    rc = write_direct(s, fd, path, offset, p);
    if (rc == 0)
      done = n;
    else if (rc != 1)
      goto out;
    rc = 0;
  }
  while (done < n) {
    ssize_t w = pwrite(fd, c + done, n - done, (off_t)(offset + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      rc = fail_io("cannot write staging file %s", path);
      goto out;
    }
    done += (size_t)w;
  }
  if (fdatasync(fd) != 0) {
    rc = fail_io("cannot fdatasync staging file %s", path);
    goto out;
  }
  /* The file is durable only once its directory entry is. A put that
   * answers ok has made sure of that, and the upload's record says so
   * (st_upload.staged); until then every put makes sure itself, as the
   * one that created the file may not have got that far. */
  if (!entry_durable)
    rc = fsync_dir(dir);
out:
  close(fd);
  return rc;
}

/* Hashes `size` bytes of the open file `fd` (see st_blobstore_stage_hash). */
/* A commit reads in chunks of this many bytes (whole segments), one chunk
 * ahead of the hashing, on a thread of its own. */
#define READ_CHUNK (16 * ST_SEGMENT)

typedef struct reader {
  int fd;
  const char *path;
  uint64_t size;
  uint8_t *buf[2];
  size_t len[2];
  int rc[2];
  bool full[2];
  bool stop;
  char err[sizeof errstr]; /* the reader thread's error text */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} reader;

/* Reads [off, off + n) of r->fd into buf: n rounded up to 4096 bytes for
 * O_DIRECT, the file ending within the last block. */
static int read_chunk(reader *r, uint64_t off, uint8_t *buf, size_t n) {
  size_t want = (n + 4095) & ~(size_t)4095, got = 0;
  while (got < n) {
    ssize_t k = pread(r->fd, buf + got, want - got, (off_t)(off + got));
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return fail_io("cannot read %s", r->path);
    if (k == 0) {
      errno = EIO;
      snprintf(errstr, sizeof errstr, "%.200s is shorter than %llu bytes",
               r->path, (unsigned long long)r->size);
      return NIMBUS_EIO;
    }
    got += (size_t)k;
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
    size_t n = r->size - off < READ_CHUNK ? (size_t)(r->size - off)
                                          : READ_CHUNK;
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

/* Hashes `size` bytes of the open file `fd` (see st_blobstore_stage_hash):
 * a reader thread fills one chunk while this one hashes the other. The
 * error text of a failed read is the reader's; it is copied here. */
static int hash_fd(int fd, const char *path, uint64_t size, uint8_t whole[32],
                   uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                   void *arg) {
  int rc = 0;
  reader r;
  memset(&r, 0, sizeof r);
  r.fd = fd;
  r.path = path;
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
      size_t n = r.len[slot] - at < ST_SEGMENT ? r.len[slot] - at
                                               : ST_SEGMENT;
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

static int hash_path(st_blobstore *s, const char *path, uint64_t size,
                     uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                     st_blob_progress_fn progress, void *arg) {
  /* A small upload's bytes are likely still in the page cache (only
   * whole segments skip it): read them from there. */
  int fd = size > READ_CHUNK ? open_direct(s, path, O_RDONLY) : -1;
  if (fd < 0)
    fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NIMBUS_ENOTFOUND;
    return fail_io("cannot open %s", path);
  }
  int rc = hash_fd(fd, path, size, whole, sums, progress, arg);
  close(fd);
  return rc;
}

static int local_stage_hash(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t size,
                            uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                            st_blob_progress_fn progress, void *arg) {
  char path[PATH_CAP];
  if (stage_path(s, terminal, upload, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  return hash_path(s, path, size, whole, sums, progress, arg);
}

static int local_blob_hash(st_blobstore *s, const uint8_t hash[32],
                           uint64_t size, uint8_t whole[32],
                           uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                           void *arg) {
  char path[PATH_CAP], dir[PATH_CAP];
  if (blob_path(s, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  return hash_path(s, path, size, whole, sums, progress, arg);
}

static int local_has(st_blobstore *s, const uint8_t hash[32], bool *exists) {
  char path[PATH_CAP], dir[PATH_CAP];
  struct stat st;
  if (blob_path(s, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  if (stat(path, &st) == 0) {
    *exists = true;
    return 0;
  }
  if (errno != ENOENT)
    return fail_io("cannot stat %s", path);
  *exists = false;
  return 0;
}

/* Makes an existing blob file durable and checks its size; false when it
 * is not the blob it should be (then the caller replaces it). */
static int existing_ok(const char *path, const char *dir, uint64_t size,
                       bool *ok) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  *ok = false;
  if (fd < 0)
    return errno == ENOENT ? 0 : fail_io("cannot open %s", path);
  int rc = 0;
  if (fstat(fd, &st) != 0)
    rc = fail_io("cannot stat %s", path);
  else if ((uint64_t)st.st_size == size && fsync(fd) == 0)
    *ok = true;
  close(fd);
  if (rc == 0 && *ok)
    rc = fsync_dir(dir);
  return rc;
}

static int local_stage_commit(st_blobstore *s, const char *terminal,
                              const char *upload, uint64_t size,
                              const uint8_t hash[32]) {
  char spath[PATH_CAP], path[PATH_CAP], dir[PATH_CAP];
  if (stage_path(s, terminal, upload, spath, sizeof spath) != 0 ||
      blob_path(s, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  bool ok = false;
  int rc = existing_ok(path, dir, size, &ok);
  if (rc != 0)
    return rc;
  if (ok) {
    /* Identical content is stored once: the copy already there wins. */
    if (unlink(spath) != 0 && errno != ENOENT)
      return fail_io("cannot remove staging file %s", spath);
    return 0;
  }
  int fd = open(spath, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NIMBUS_ENOTFOUND;
    return fail_io("cannot open staging file %s", spath);
  }
  /* An older upload of the same name may have left a longer file. */
  if (ftruncate(fd, (off_t)size) != 0) {
    rc = fail_io("cannot truncate %s", spath);
    close(fd);
    return rc;
  }
  if (fsync(fd) != 0) {
    rc = fail_io("cannot fsync %s", spath);
    close(fd);
    return rc;
  }
  close(fd);
  if ((rc = mkdir_durable(dir)) != 0)
    return rc;
  /* Never replace a blob that appeared meanwhile (another commit of the
   * same content): it is as good as ours. A damaged one (wrong size) was
   * found above and is replaced. */
  unsigned flags = RENAME_NOREPLACE;
  if (renameat2(AT_FDCWD, spath, AT_FDCWD, path, flags) != 0) {
    if (errno == EEXIST && existing_ok(path, dir, size, &ok) == 0 && ok)
      return unlink(spath) == 0 || errno == ENOENT
                 ? 0
                 : fail_io("cannot remove staging file %s", spath);
    if (errno == EEXIST) {
      if (rename(spath, path) != 0)
        return fail_io("cannot move %s to %s", spath, path);
    } else {
      return fail_io("cannot move %s to %s", spath, path);
    }
  }
  return fsync_dir(dir);
}

/* Exclusive lock on a staging file, held by a commit from its hashing to
 * its move (see local_stage). */
static int local_stage_lock(st_blobstore *s, const char *terminal,
                            const char *upload, int *lock) {
  char path[PATH_CAP];
  *lock = -1;
  if (stage_path(s, terminal, upload, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? NIMBUS_ENOTFOUND
                           : fail_io("cannot open staging file %s", path);
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int rc = fail_io("cannot lock staging file %s", path);
      close(fd);
      return rc;
    }
  }
  /* A commit that held the lock before us may have moved the file into the
   * store (or dropped it): then there is nothing staged any more. */
  struct stat a, b;
  if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino ||
      a.st_dev != b.st_dev) {
    close(fd);
    return NIMBUS_ENOTFOUND;
  }
  *lock = fd;
  return 0;
}

static void local_stage_unlock(st_blobstore *s, int lock) {
  (void)s;
  if (lock >= 0)
    close(lock);
}

static int local_stage_drop(st_blobstore *s, const char *terminal,
                            const char *upload) {
  char path[PATH_CAP];
  if (stage_path(s, terminal, upload, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  if (unlink(path) != 0 && errno != ENOENT)
    return fail_io("cannot remove staging file %s", path);
  return 0;
}

static int local_remove(st_blobstore *s, const uint8_t hash[32]) {
  char path[PATH_CAP], dir[PATH_CAP];
  if (blob_path(s, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  if (unlink(path) != 0) {
    if (errno == ENOENT)
      return 0;
    return fail_io("cannot remove blob %s", path);
  }
  /* A removal that a crash forgets leaves a file no record names: wasted
   * space, never a record naming a file that is gone. */
  return fsync_dir(dir);
}

static int local_read(st_blobstore *s, const uint8_t hash[32],
                      uint64_t offset, void *buf, size_t n, size_t *got) {
  char path[PATH_CAP], dir[PATH_CAP];
  *got = 0;
  if (blob_path(s, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  /* Aligned whole blocks into an aligned buffer: past the page cache. */
  int fd = -1;
  if (offset % 4096 == 0 && n % 4096 == 0 && (uintptr_t)buf % 4096 == 0)
    fd = open_direct(s, path, O_RDONLY);
  if (fd < 0)
    fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NIMBUS_ENOTFOUND;
    return fail_io("cannot open %s", path);
  }
  int rc = 0;
  while (*got < n) {
    ssize_t r = pread(fd, (char *)buf + *got, n - *got,
                      (off_t)(offset + *got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = fail_io("cannot read %s", path);
      break;
    }
    if (r == 0)
      break;
    *got += (size_t)r;
  }
  close(fd);
  return rc;
}

static int local_sweep(st_blobstore *s, int64_t max_age_ms,
                       size_t *removed) {
  char dir[PATH_CAP];
  size_t n = 0;
  int rc = 0;
  snprintf(dir, sizeof dir, "%s/staging", s->dir);
  DIR *d = opendir(dir);
  if (d == NULL)
    return fail_io("cannot open directory %s", dir);
  int64_t now = nb_now_ms();
  int dfd = dirfd(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    struct stat st;
    if (e->d_name[0] == '.')
      continue;
    if (fstatat(dfd, e->d_name, &st, 0) != 0)
      continue; /* gone meanwhile: committed or discarded */
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 +
                    st.st_mtim.tv_nsec / 1000000;
    if (now - mtime <= max_age_ms)
      continue;
    if (unlinkat(dfd, e->d_name, 0) == 0)
      n++;
    else if (errno != ENOENT)
      rc = fail_io("cannot remove staging file %s/%.64s", dir, e->d_name);
  }
  closedir(d);
  if (removed != NULL)
    *removed = n;
  return rc;
}

static int local_each_old(st_blobstore *s, int64_t max_age_ms,
                          int (*fn)(void *arg, const uint8_t hash[32]),
                          void *arg) {
  char dir[PATH_CAP];
  snprintf(dir, sizeof dir, "%s/blobs", s->dir);
  DIR *top = opendir(dir);
  if (top == NULL)
    return fail_io("cannot open directory %s", dir);
  int64_t now = nb_now_ms();
  int rc = 0;
  for (struct dirent *e; rc == 0 && (e = readdir(top)) != NULL;) {
    if (e->d_name[0] == '.' || strlen(e->d_name) != 2)
      continue;
    int fd = openat(dirfd(top), e->d_name,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      continue;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
      close(fd);
      continue;
    }
    for (struct dirent *f; rc == 0 && (f = readdir(d)) != NULL;) {
      uint8_t hash[32];
      char hex[65];
      struct stat st;
      /* Exactly the name the store gives a blob (blob_path), no other. */
      if (strlen(f->d_name) != 64 || nb_unhex32(f->d_name, hash) != 0)
        continue;
      nb_hex(hash, 32, hex);
      if (strcmp(hex, f->d_name) != 0 || strncmp(hex, e->d_name, 2) != 0 ||
          fstatat(dirfd(d), f->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISREG(st.st_mode))
        continue;
      int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 +
                      st.st_mtim.tv_nsec / 1000000;
      if (now - mtime > max_age_ms)
        rc = fn(arg, hash);
    }
    closedir(d);
  }
  closedir(top);
  return rc;
}

/* Gives back the blocks of [offset, offset + n) of a staging file, which a
 * put that failed for want of space may have written in part (a short
 * write before ENOSPC): on a full disk every block counts, and these hold
 * nothing acknowledged. Under the shared lock and only while the name is
 * still the file staged, like a put, so a file that a commit moved into
 * the store is never touched. A filesystem that cannot punch holes keeps
 * the blocks until the file goes. */
static int local_stage_undo(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t offset, size_t n) {
  char path[PATH_CAP];
  if (n == 0)
    return 0;
  if (stage_path(s, terminal, upload, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : fail_io("cannot open staging file %s", path);
  int rc = 0;
  struct stat a, b;
  while (flock(fd, LOCK_SH) != 0) {
    if (errno != EINTR) {
      rc = fail_io("cannot lock staging file %s", path);
      goto out;
    }
  }
  if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino ||
      a.st_dev != b.st_dev || (uint64_t)a.st_size <= offset)
    goto out;
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                (off_t)n) != 0 &&
      errno != EOPNOTSUPP)
    rc = fail_io("cannot release a failed write in staging file %s", path);
out:
  close(fd);
  return rc;
}

static int local_space(st_blobstore *s, uint64_t *avail) {
  struct statvfs v;
  if (statvfs(s->dir, &v) != 0)
    return fail_io("cannot stat the filesystem of %s", s->dir);
  *avail = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
  return 0;
}

static const blob_backend local_backend = {
    .stage = local_stage,
    .stage_hash = local_stage_hash,
    .blob_hash = local_blob_hash,
    .stage_commit = local_stage_commit,
    .stage_drop = local_stage_drop,
    .has = local_has,
    .read = local_read,
    .sweep = local_sweep,
    .stage_lock = local_stage_lock,
    .stage_unlock = local_stage_unlock,
    .remove = local_remove,
    .each_old = local_each_old,
    .stage_undo = local_stage_undo,
    .space = local_space,
};

int st_blobstore_open(const char *dir, st_blobstore **out, char *errbuf,
                      size_t errcap) {
  char sub[PATH_CAP];
  st_blobstore *s = calloc(1, sizeof *s);
  int rc = NIMBUS_ENOMEM;
  if (s == NULL)
    goto fail;
  s->ops = &local_backend;
  s->dir = strdup(dir);
  atomic_init(&s->no_direct, false);
  atomic_init(&s->full_since, 0);
  atomic_init(&s->full_checked, 0);
  if (s->dir == NULL)
    goto fail;
  snprintf(errstr, sizeof errstr, "out of memory");
  if ((rc = mkdir_p(dir)) != 0)
    goto fail;
  snprintf(sub, sizeof sub, "%s/staging", dir);
  if ((rc = mkdir_durable(sub)) != 0)
    goto fail;
  snprintf(sub, sizeof sub, "%s/blobs", dir);
  if ((rc = mkdir_durable(sub)) != 0)
    goto fail;
  *out = s;
  return 0;
fail:
  if (errbuf != NULL && errcap > 0)
    snprintf(errbuf, errcap, "blob store %s: %s", dir,
             rc == NIMBUS_ENOMEM ? "out of memory" : errstr);
  st_blobstore_free(s);
  return rc;
}

void st_blobstore_set_direct(st_blobstore *s, bool on) {
  atomic_store_explicit(&s->no_direct, !on, memory_order_relaxed);
}

void st_blobstore_free(st_blobstore *s) {
  if (s == NULL)
    return;
  free(s->dir);
  free(s);
}

/* ---- Public calls: dispatch to the backend ------------------------------ */

/* A full store is one that refused a write for want of space; a write that
 * succeeds ends that (one relaxed load on the way, nothing more). */
static void note_write(st_blobstore *s, int rc) {
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
      s->ops->space(s, &avail) == 0 && avail >= FULL_CLEAR_BYTES) {
    atomic_compare_exchange_strong(&s->full_since, &since, 0);
    return 0;
  }
  return since;
}

int st_blobstore_stage(st_blobstore *s, const char *terminal,
                       const char *upload, uint64_t offset, const void *p,
                       size_t n, uint64_t reserve_end, bool entry_durable) {
  int rc = s->ops->stage(s, terminal, upload, offset, p, n, reserve_end,
                         entry_durable);
  note_write(s, rc);
  return rc;
}

int st_blobstore_stage_undo(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t offset, size_t n) {
  return s->ops->stage_undo(s, terminal, upload, offset, n);
}

int st_blobstore_stage_hash(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t size,
                            uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                            st_blob_progress_fn progress, void *arg) {
  return s->ops->stage_hash(s, terminal, upload, size, whole, sums, progress,
                            arg);
}

int st_blobstore_blob_hash(st_blobstore *s, const uint8_t hash[32],
                           uint64_t size, uint8_t whole[32],
                           uint8_t (*sums)[ST_SEGSUM], st_blob_progress_fn progress,
                           void *arg) {
  return s->ops->blob_hash(s, hash, size, whole, sums, progress, arg);
}

int st_blobstore_stage_commit(st_blobstore *s, const char *terminal,
                              const char *upload, uint64_t size,
                              const uint8_t hash[32]) {
  int rc = s->ops->stage_commit(s, terminal, upload, size, hash);
  note_write(s, rc);
  return rc;
}

int st_blobstore_stage_lock(st_blobstore *s, const char *terminal,
                            const char *upload, int *lock) {
  return s->ops->stage_lock(s, terminal, upload, lock);
}

void st_blobstore_stage_unlock(st_blobstore *s, int lock) {
  s->ops->stage_unlock(s, lock);
}

int st_blobstore_stage_drop(st_blobstore *s, const char *terminal,
                            const char *upload) {
  return s->ops->stage_drop(s, terminal, upload);
}

int st_blobstore_has(st_blobstore *s, const uint8_t hash[32], bool *exists) {
  return s->ops->has(s, hash, exists);
}

int st_blobstore_read(st_blobstore *s, const uint8_t hash[32],
                      uint64_t offset, void *buf, size_t n, size_t *got) {
  return s->ops->read(s, hash, offset, buf, n, got);
}

int st_blobstore_sweep(st_blobstore *s, int64_t max_age_ms, size_t *removed) {
  return s->ops->sweep(s, max_age_ms, removed);
}

int st_blobstore_each_old(st_blobstore *s, int64_t max_age_ms,
                          int (*fn)(void *arg, const uint8_t hash[32]),
                          void *arg) {
  return s->ops->each_old(s, max_age_ms, fn, arg);
}

int st_blobstore_remove(st_blobstore *s, const uint8_t hash[32]) {
  return s->ops->remove(s, hash);
}
