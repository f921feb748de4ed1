/* The blob store's local-filesystem backend (st_blob_backend.h): staging
 * and stored blobs as POSIX files under one directory, on a local disk or
 * a shared filesystem. The hashing and the public calls are above it, in
 * blobstore.c.
 *
 * Layout under the data directory:
 *   staging/<64 hex>          one file per upload, named by the 32-byte
 *                             name the store gives it (the SHA-256 of
 *                             "<terminal>\n<upload>"): this backend is
 *                             never handed a terminal's string, so none
 *                             ever becomes a path
 *   blobs/<2 hex>/<64 hex>    committed blobs, named by their content
 * Durability: a staging write returns after fdatasync (and, for a new
 * file, an fsync of staging/); a commit fsyncs the file, renames it into
 * blobs/<2 hex>/ and fsyncs that directory, so a crash leaves the blob
 * either absent or whole, never half there under its name; the switch of
 * a stored blob to its compressed form (stage_replace) writes the new file
 * in staging/, fsyncs it, exchanges it with the blob's file in one
 * renameat2 (RENAME_EXCHANGE) and fsyncs the directory, so a reader finds
 * one form or the other, whole. The walk of
 * blobs/ for the janitor opens nothing through a symbolic link
 * (O_NOFOLLOW) and looks only at names the store gives. Whole segments are
 * written, and big files read, with O_DIRECT, falling back to the page
 * cache for good where the filesystem refuses it. */
#include "st_blob_backend.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PATH_CAP 4096

typedef struct fs_be {
  st_blob_be base;       /* first: the store holds a pointer to it */
  char *dir;             /* the root */
  atomic_bool no_direct; /* O_DIRECT refused here, or turned off */
} fs_be;

typedef struct fs_rd {
  st_blob_rd base; /* first; base.what points at path */
  struct fs_be *f;
  int fd;
  bool uncached; /* opened ST_BLOB_RD_UNCACHED and O_DIRECT allowed */
  bool direct;   /* O_DIRECT is on for fd now */
  char path[];
} fs_rd;

static fs_be *fs_of(st_blob_be *be) { return (fs_be *)be; }

static int stage_path(const fs_be *f, const uint8_t name[32], char *out,
                      size_t cap) {
  char hex[65];
  nb_hex(name, 32, hex);
  int n = snprintf(out, cap, "%s/staging/%s", f->dir, hex);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

static int blob_path(const fs_be *f, const uint8_t hash[32], char *out,
                     size_t cap, char *dir, size_t dircap) {
  char hex[65];
  nb_hex(hash, 32, hex);
  int n = snprintf(dir, dircap, "%s/blobs/%.2s", f->dir, hex);
  if (n < 0 || (size_t)n >= dircap)
    return NIMBUS_EINVAL;
  n = snprintf(out, cap, "%s/%s", dir, hex);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return st_blob_fail_io("cannot open directory %s", dir);
  int rc =
      fsync(fd) == 0 ? 0 : st_blob_fail_io("cannot fsync directory %s", dir);
  close(fd);
  return rc;
}

static int mkdir_p1(const char *dir) {
  if (mkdir(dir, 0700) == 0 || errno == EEXIST)
    return 0;
  return st_blob_fail_io("cannot create directory %s", dir);
}

/* mkdir_p1, and when the directory is new, an fsync of its parent so the
 * new entry (and what is later put in it) survives a crash. */
static int mkdir_durable(const char *dir) {
  if (mkdir(dir, 0700) != 0)
    return errno == EEXIST ? 0
                           : st_blob_fail_io("cannot create directory %s", dir);
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
    return st_blob_fail_io("cannot create directory %.100s", dir);
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
 * refuses O_DIRECT (tmpfs) makes the backend fall back to plain I/O for
 * good; st_blobstore_set_direct turns it off (the worker's blob_direct). */

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

static bool direct_on(fs_be *f) {
  return !atomic_load_explicit(&f->no_direct, memory_order_relaxed);
}

/* Writes one whole aligned segment with O_DIRECT through `fd` (the put's
 * own descriptor, opened without it): O_DIRECT is switched on for the
 * write and off again. Returns 0, 1 when it cannot be done so (the caller
 * writes through the page cache), or NIMBUS_EIO. */
static int write_direct(fs_be *f, int fd, const char *path, uint64_t off,
                        const void *p) {
  if (!direct_on(f))
    return 1;
  uint8_t *buf = seg_buffer();
  if (buf == NULL)
    return 1;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return 1;
  if (fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) {
    if (errno == EINVAL)
      atomic_store_explicit(&f->no_direct, true, memory_order_relaxed);
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
      atomic_store_explicit(&f->no_direct, true, memory_order_relaxed);
      rc = 1;
      break;
    }
    if (w <= 0) {
      rc = st_blob_fail_io("cannot write staging file %s", path);
      break;
    }
    done += (size_t)w;
  }
  if (fcntl(fd, F_SETFL, fl) != 0 && rc == 0)
    rc = st_blob_fail_io("cannot switch O_DIRECT off on staging file %s", path);
  return rc;
}

/* Whether the name `path` still is the file open as `fd`: a commit may
 * have moved it into the store, or a drop removed it, since it was
 * opened. */
static bool still_staged(int fd, const char *path, struct stat *a) {
  struct stat b;
  return fstat(fd, a) == 0 && stat(path, &b) == 0 && a->st_ino == b.st_ino &&
         a->st_dev == b.st_dev;
}

/* ---- Staging ------------------------------------------------------------ */

static int fs_stage_write(st_blob_be *be, const uint8_t name[32],
                          uint64_t offset, const void *p, size_t n,
                          uint64_t reserve_end, bool entry_durable) {
  fs_be *f = fs_of(be);
  char path[PATH_CAP], dir[PATH_CAP];
  if (stage_path(f, name, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  snprintf(dir, sizeof dir, "%s/staging", f->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return st_blob_fail_io("cannot open staging file %s", path);
  /* A commit holds the exclusive lock while it hashes and moves the file:
   * wait for it, then make sure the file is still the one staged under
   * this name, so no byte lands in a blob already hashed or stored. */
  int rc = 0;
  struct stat a;
  while (flock(fd, LOCK_SH) != 0) {
    if (errno != EINTR) {
      rc = st_blob_fail_io("cannot lock staging file %s", path);
      goto out;
    }
  }
  if (!still_staged(fd, path, &a)) {
    st_blob_set_err("upload was committed or discarded while a segment "
                    "arrived");
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
    rc = write_direct(f, fd, path, offset, p);
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
      rc = st_blob_fail_io("cannot write staging file %s", path);
      goto out;
    }
    done += (size_t)w;
  }
  if (fdatasync(fd) != 0) {
    rc = st_blob_fail_io("cannot fdatasync staging file %s", path);
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

/* Gives back the blocks of [offset, offset + n) of a staging file, which a
 * put that failed for want of space may have written in part (a short
 * write before ENOSPC): on a full disk every block counts, and these hold
 * nothing acknowledged. Under the shared lock and only while the name is
 * still the file staged, like a put, so a file that a commit moved into
 * the store is never touched. A filesystem that cannot punch holes keeps
 * the blocks until the file goes. */
static int fs_stage_undo(st_blob_be *be, const uint8_t name[32],
                         uint64_t offset, size_t n) {
  char path[PATH_CAP];
  if (n == 0)
    return 0;
  if (stage_path(fs_of(be), name, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT
               ? 0
               : st_blob_fail_io("cannot open staging file %s", path);
  int rc = 0;
  struct stat a;
  while (flock(fd, LOCK_SH) != 0) {
    if (errno != EINTR) {
      rc = st_blob_fail_io("cannot lock staging file %s", path);
      goto out;
    }
  }
  if (!still_staged(fd, path, &a) || (uint64_t)a.st_size <= offset)
    goto out;
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                (off_t)n) != 0 &&
      errno != EOPNOTSUPP)
    rc = st_blob_fail_io("cannot release a failed write in staging file %s",
                         path);
out:
  close(fd);
  return rc;
}

/* Exclusive lock on a staging file, held by a commit from its hashing to
 * its move (see fs_stage_write). The lock is the open descriptor. */
static int fs_stage_lock(st_blob_be *be, const uint8_t name[32], int *lock) {
  char path[PATH_CAP];
  *lock = -1;
  if (stage_path(fs_of(be), name, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT
               ? NIMBUS_ENOTFOUND
               : st_blob_fail_io("cannot open staging file %s", path);
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      int rc = st_blob_fail_io("cannot lock staging file %s", path);
      close(fd);
      return rc;
    }
  }
  /* A commit that held the lock before us may have moved the file into the
   * store (or dropped it): then there is nothing staged any more. */
  struct stat a;
  if (!still_staged(fd, path, &a)) {
    close(fd);
    return NIMBUS_ENOTFOUND;
  }
  *lock = fd;
  return 0;
}

static void fs_stage_unlock(st_blob_be *be, int lock) {
  (void)be;
  if (lock >= 0)
    close(lock);
}

static int fs_stage_drop(st_blob_be *be, const uint8_t name[32]) {
  char path[PATH_CAP];
  if (stage_path(fs_of(be), name, path, sizeof path) != 0)
    return NIMBUS_EINVAL;
  if (unlink(path) != 0 && errno != ENOENT)
    return st_blob_fail_io("cannot remove staging file %s", path);
  return 0;
}

/* Whether the open file `fd` (`length` bytes) is blob `hash` in the
 * store's compressed form (st_blob_head_packed). */
static bool packed_copy(int fd, const uint8_t hash[32], uint64_t size,
                        uint64_t length) {
  uint8_t head[ST_BLOB_HEAD];
  ssize_t k;
  do
    k = pread(fd, head, sizeof head, 0);
  while (k < 0 && errno == EINTR);
  return k > 0 && st_blob_head_packed(head, (size_t)k, hash, size, length);
}

/* Makes an existing blob file durable and checks its size (or that it is
 * the blob's compressed form); false when it is not the blob it should be
 * (then the caller replaces it). */
static int existing_ok(const char *path, const char *dir,
                       const uint8_t hash[32], uint64_t size, bool *ok) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  *ok = false;
  if (fd < 0)
    return errno == ENOENT ? 0 : st_blob_fail_io("cannot open %s", path);
  int rc = 0;
  if (fstat(fd, &st) != 0)
    rc = st_blob_fail_io("cannot stat %s", path);
  else if (((uint64_t)st.st_size == size ||
            packed_copy(fd, hash, size, (uint64_t)st.st_size)) &&
           fsync(fd) == 0)
    *ok = true;
  close(fd);
  if (rc == 0 && *ok)
    rc = fsync_dir(dir);
  return rc;
}

static int fs_stage_commit(st_blob_be *be, const uint8_t name[32],
                           uint64_t size, const uint8_t hash[32]) {
  fs_be *f = fs_of(be);
  char spath[PATH_CAP], path[PATH_CAP], dir[PATH_CAP];
  if (stage_path(f, name, spath, sizeof spath) != 0 ||
      blob_path(f, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  bool ok = false;
  int rc = existing_ok(path, dir, hash, size, &ok);
  if (rc != 0)
    return rc;
  if (ok) {
    /* Identical content is stored once: the copy already there wins. */
    if (unlink(spath) != 0 && errno != ENOENT)
      return st_blob_fail_io("cannot remove staging file %s", spath);
    return 0;
  }
  int fd = open(spath, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NIMBUS_ENOTFOUND;
    return st_blob_fail_io("cannot open staging file %s", spath);
  }
  /* An older upload of the same name may have left a longer file. */
  if (ftruncate(fd, (off_t)size) != 0) {
    rc = st_blob_fail_io("cannot truncate %s", spath);
    close(fd);
    return rc;
  }
  if (fsync(fd) != 0) {
    rc = st_blob_fail_io("cannot fsync %s", spath);
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
    if (errno == EEXIST && existing_ok(path, dir, hash, size, &ok) == 0 && ok)
      return unlink(spath) == 0 || errno == ENOENT
                 ? 0
                 : st_blob_fail_io("cannot remove staging file %s", spath);
    if (errno == EEXIST) {
      if (rename(spath, path) != 0)
        return st_blob_fail_io("cannot move %s to %s", spath, path);
    } else {
      return st_blob_fail_io("cannot move %s to %s", spath, path);
    }
  }
  return fsync_dir(dir);
}

/* The switch to another form (st_blob_backend.h): the new file fsynced,
 * then exchanged with the blob's in one step, so that the name never
 * points at nothing and never at a file not whole; the exchange fails
 * when the blob is gone, so a blob the collector removed meanwhile is not
 * brought back. The old file ends under the staging name and is removed
 * there (should that fail, the staging sweep does it). */
static int fs_stage_replace(st_blob_be *be, const uint8_t name[32],
                            const uint8_t hash[32]) {
  fs_be *f = fs_of(be);
  char spath[PATH_CAP], path[PATH_CAP], dir[PATH_CAP];
  if (stage_path(f, name, spath, sizeof spath) != 0 ||
      blob_path(f, hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  int fd = open(spath, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT
               ? NIMBUS_ENOTFOUND
               : st_blob_fail_io("cannot open staging file %s", spath);
  int rc = fsync(fd) == 0 ? 0 : st_blob_fail_io("cannot fsync %s", spath);
  close(fd);
  if (rc != 0)
    return rc;
  if (renameat2(AT_FDCWD, spath, AT_FDCWD, path, RENAME_EXCHANGE) != 0) {
    if (errno == ENOENT) {
      (void)unlink(spath);
      return NIMBUS_ENOTFOUND;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
      return st_blob_fail_io("cannot exchange %s and %s", spath, path);
    /* A filesystem without the exchange: the blob is looked for, then
     * renamed over. Should the collector remove it in between, the file
     * stays with no record naming it, and the orphan sweep removes it. */
    struct stat st;
    if (stat(path, &st) != 0) {
      if (errno != ENOENT)
        return st_blob_fail_io("cannot stat %s", path);
      (void)unlink(spath);
      return NIMBUS_ENOTFOUND;
    }
    if (rename(spath, path) != 0)
      return st_blob_fail_io("cannot move %s to %s", spath, path);
    return fsync_dir(dir);
  }
  rc = fsync_dir(dir);
  (void)unlink(spath);
  return rc;
}

static int fs_stage_sweep(st_blob_be *be, int64_t max_age_ms, size_t *removed) {
  char dir[PATH_CAP];
  size_t n = 0;
  int rc = 0;
  snprintf(dir, sizeof dir, "%s/staging", fs_of(be)->dir);
  DIR *d = opendir(dir);
  if (d == NULL)
    return st_blob_fail_io("cannot open directory %s", dir);
  int64_t now = nb_now_ms();
  int dfd = dirfd(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    struct stat st;
    if (e->d_name[0] == '.')
      continue;
    if (fstatat(dfd, e->d_name, &st, 0) != 0)
      continue; /* gone meanwhile: committed or discarded */
    int64_t mtime =
        (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    if (now - mtime <= max_age_ms)
      continue;
    if (unlinkat(dfd, e->d_name, 0) == 0)
      n++;
    else if (errno != ENOENT)
      rc = st_blob_fail_io("cannot remove staging file %s/%.64s", dir,
                           e->d_name);
  }
  closedir(d);
  if (removed != NULL)
    *removed = n;
  return rc;
}

/* ---- Reading ------------------------------------------------------------ */

static int fs_read_open(st_blob_be *be, st_blob_ns ns, const uint8_t name[32],
                        unsigned flags, st_blob_rd **rd) {
  fs_be *f = fs_of(be);
  char path[PATH_CAP], dir[PATH_CAP];
  *rd = NULL;
  int rc = ns == ST_BLOB_STAGING
               ? stage_path(f, name, path, sizeof path)
               : blob_path(f, name, path, sizeof path, dir, sizeof dir);
  if (rc != 0)
    return rc;
  /* Opened through the page cache; O_DIRECT goes on for the first read
   * that is aligned (fs_read), so the small reads of a head or of a
   * compressed frame on the same handle need no second descriptor. */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return NIMBUS_ENOTFOUND;
    return st_blob_fail_io("cannot open %s", path);
  }
  size_t len = strlen(path) + 1;
  fs_rd *r = malloc(sizeof *r + len);
  if (r == NULL) {
    close(fd);
    return NIMBUS_ENOMEM;
  }
  memcpy(r->path, path, len);
  r->base.what = r->path;
  r->f = f;
  r->fd = fd;
  r->uncached = (flags & ST_BLOB_RD_UNCACHED) != 0 && direct_on(f);
  r->direct = false;
  *rd = &r->base;
  return 0;
}

/* Turns O_DIRECT on or off for the handle's descriptor; false when it
 * cannot be turned on here (never tried again by this backend). */
static bool set_direct(fs_rd *r, bool on) {
  int fl = fcntl(r->fd, F_GETFL);
  if (fl < 0 ||
      fcntl(r->fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) != 0) {
    if (on && errno == EINVAL)
      atomic_store_explicit(&r->f->no_direct, true, memory_order_relaxed);
    r->uncached = false;
    return false;
  }
  r->direct = on;
  return true;
}

static int fs_read(st_blob_rd *rd, uint64_t offset, void *buf, size_t n,
                   size_t *got) {
  fs_rd *r = (fs_rd *)rd;
  *got = 0;
  bool aligned = r->uncached && offset % 4096 == 0 && n % 4096 == 0 &&
                 (uintptr_t)buf % 4096 == 0;
  if (aligned != r->direct && !set_direct(r, aligned) && r->direct)
    return st_blob_fail_io("cannot switch O_DIRECT off on %s", r->path);
  for (;;) {
    ssize_t k = pread(r->fd, buf, n, (off_t)offset);
    if (k >= 0) {
      *got = (size_t)k;
      return 0;
    }
    if (errno != EINTR)
      return st_blob_fail_io("cannot read %s", r->path);
  }
}

static void fs_read_close(st_blob_rd *rd) {
  fs_rd *r = (fs_rd *)rd;
  if (r == NULL)
    return;
  close(r->fd);
  free(r);
}

/* ---- The store ---------------------------------------------------------- */

static int fs_has(st_blob_be *be, const uint8_t hash[32], bool *exists) {
  char path[PATH_CAP], dir[PATH_CAP];
  struct stat st;
  if (blob_path(fs_of(be), hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  if (stat(path, &st) == 0) {
    *exists = true;
    return 0;
  }
  if (errno != ENOENT)
    return st_blob_fail_io("cannot stat %s", path);
  *exists = false;
  return 0;
}

static int fs_each_old(st_blob_be *be, int64_t max_age_ms, st_blob_each_fn fn,
                       void *arg) {
  char dir[PATH_CAP];
  snprintf(dir, sizeof dir, "%s/blobs", fs_of(be)->dir);
  DIR *top = opendir(dir);
  if (top == NULL)
    return st_blob_fail_io("cannot open directory %s", dir);
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
    for (struct dirent *g; rc == 0 && (g = readdir(d)) != NULL;) {
      uint8_t hash[32];
      char hex[65];
      struct stat st;
      /* Exactly the name the store gives a blob (blob_path), no other. */
      if (strlen(g->d_name) != 64 || nb_unhex32(g->d_name, hash) != 0)
        continue;
      nb_hex(hash, 32, hex);
      if (strcmp(hex, g->d_name) != 0 || strncmp(hex, e->d_name, 2) != 0 ||
          fstatat(dirfd(d), g->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISREG(st.st_mode))
        continue;
      int64_t mtime =
          (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
      if (now - mtime > max_age_ms)
        rc = fn(arg, hash);
    }
    closedir(d);
  }
  closedir(top);
  return rc;
}

static int fs_remove(st_blob_be *be, const uint8_t hash[32]) {
  char path[PATH_CAP], dir[PATH_CAP];
  if (blob_path(fs_of(be), hash, path, sizeof path, dir, sizeof dir) != 0)
    return NIMBUS_EINVAL;
  if (unlink(path) != 0) {
    if (errno == ENOENT)
      return 0;
    return st_blob_fail_io("cannot remove blob %s", path);
  }
  /* A removal that a crash forgets leaves a file no record names: wasted
   * space, never a record naming a file that is gone. */
  return fsync_dir(dir);
}

/* ---- The backend as a whole --------------------------------------------- */

static int fs_space(st_blob_be *be, uint64_t *avail) {
  fs_be *f = fs_of(be);
  struct statvfs v;
  if (statvfs(f->dir, &v) != 0)
    return st_blob_fail_io("cannot stat the filesystem of %s", f->dir);
  *avail = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
  return 0;
}

static void fs_set_direct(st_blob_be *be, bool on) {
  atomic_store_explicit(&fs_of(be)->no_direct, !on, memory_order_relaxed);
}

static void fs_free(st_blob_be *be) {
  fs_be *f = fs_of(be);
  free(f->dir);
  free(f);
}

static const st_blob_backend fs_backend = {
    .name = "fs",
    .stage_write = fs_stage_write,
    .stage_undo = fs_stage_undo,
    .stage_lock = fs_stage_lock,
    .stage_unlock = fs_stage_unlock,
    .stage_drop = fs_stage_drop,
    .stage_commit = fs_stage_commit,
    .stage_replace = fs_stage_replace,
    .stage_sweep = fs_stage_sweep,
    .read_open = fs_read_open,
    .read = fs_read,
    .read_close = fs_read_close,
    .has = fs_has,
    .each_old = fs_each_old,
    .remove = fs_remove,
    .space = fs_space,
    .set_direct = fs_set_direct,
    .free = fs_free,
};

int st_blob_fs_open(const char *dir, st_blob_be **out) {
  char sub[PATH_CAP];
  int rc = NIMBUS_ENOMEM;
  fs_be *f = calloc(1, sizeof *f);
  *out = NULL;
  if (f == NULL)
    goto fail;
  f->base.ops = &fs_backend;
  atomic_init(&f->no_direct, false);
  if ((f->dir = strdup(dir)) == NULL)
    goto fail;
  if ((rc = mkdir_p(dir)) != 0)
    goto fail;
  snprintf(sub, sizeof sub, "%s/staging", dir);
  if ((rc = mkdir_durable(sub)) != 0)
    goto fail;
  snprintf(sub, sizeof sub, "%s/blobs", dir);
  if ((rc = mkdir_durable(sub)) != 0)
    goto fail;
  *out = &f->base;
  return 0;
fail:
  if (f != NULL)
    fs_free(&f->base);
  return rc;
}
