/* The blob store's backend interface: the table of operations a place that
 * keeps blobs provides to st_blobstore (st_blob.h, blobstore.c), which
 * does the hashing, the checks of what is read back and the bookkeeping of
 * a full store above it. The local or shared filesystem (blob_fs.c,
 * st_blob_fs_open) is the one backend today; an S3-compatible object
 * store is a new file that fills the same table and hands it to
 * st_blobstore_new, with neither the hashing nor the worker changing.
 *
 * A backend keeps objects in two namespaces, each object named by 32
 * bytes: staging (one object per upload while its segments arrive, named
 * by the SHA-256 of "<terminal>\n<upload>", which the store computes) and
 * the store (committed blobs, named by the SHA-256 of their bytes). No
 * operation is ever given a string from a terminal, so no backend can turn
 * one into a path or a key. A stored object holds its blob as it is or in
 * the store's compressed form (blob_pack.c), which the store writes and
 * reads through these same operations: a backend keeps bytes and never
 * decodes them (but for stage_commit's check of an existing copy).
 *
 * Errors: every operation returns 0 or a nimbus_err. A failure of the
 * backend's medium is NIMBUS_EIO, or NIMBUS_ENOSPC when it is full (or a
 * quota is), with a sentence in the calling thread's error text
 * (st_blob_fail_io, st_blob_set_err; read back by st_blobstore_errstr).
 * Other codes are listed per operation.
 *
 * Threads: every operation may be called from many threads at once on one
 * backend, also on the same object; what one writer must not overlap with
 * another is serialised by the backend (stage_lock). A reader handle
 * (read_open) is used by one thread at a time; it may move between threads.
 *
 * Durability: an operation that writes and returns 0 has put what it wrote
 * on stable storage, as each entry says; a crash at any moment leaves a
 * stored blob either absent or whole under its name. */
#ifndef ST_BLOB_BACKEND_H
#define ST_BLOB_BACKEND_H

#include "st_blob.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_blob_backend st_blob_backend;

/* A backend instance. A backend's own state is a struct whose first
 * member is this one (the way sqlite3_file starts a VFS's file), so the
 * store holds one pointer and the operations cast it back. */
typedef struct st_blob_be {
  const st_blob_backend *ops;
} st_blob_be;

/* An object open for reading (read_open), likewise the first member of
 * the backend's own handle. */
typedef struct st_blob_rd {
  /* Names the object in error sentences (a path, a key): the backend's,
   * valid until read_close. */
  const char *what;
} st_blob_rd;

/* The two namespaces (see above). */
typedef enum st_blob_ns { ST_BLOB_STAGING, ST_BLOB_STORE } st_blob_ns;

/* read_open flag: the caller reads mostly whole 4096-byte blocks at
 * offsets that are multiples of 4096 into buffers aligned to 4096, and
 * will not read these bytes again soon, so the backend may bypass its
 * cache (O_DIRECT) for such reads. A hint: a backend that cannot reads the
 * ordinary way, and any read on the handle that is not so aligned (the
 * store reads the head of every stored object, and a compressed one
 * frame by frame) is served the ordinary way. */
#define ST_BLOB_RD_UNCACHED 1u

/* Called by each_old for one stored blob; returns 0 to go on, or a
 * nimbus_err that stops the walk. `hash` is borrowed for the call. */
typedef int (*st_blob_each_fn)(void *arg, const uint8_t hash[32]);

struct st_blob_backend {
  /* Short name for logs ("fs"). */
  const char *name;

  /* ---- Staging ---------------------------------------------------------- */

  /* Writes `n` bytes of `p` (borrowed) at `offset` of staging object
   * `name`, creating it when absent; returns once the bytes are durable.
   * When the write lands beyond the object's end and `reserve_end` lies
   * beyond the write, the space up to reserve_end may be reserved (the
   * object may then be longer than what it holds). Unless
   * `entry_durable`, the object's existence itself is made durable too
   * (the first put of an upload; see st_blobstore_stage). n == 0 only
   * creates the object. Waits while a stage_lock on the object is held,
   * and then returns NIMBUS_ECONFLICT, writing nothing, if the object was
   * moved or dropped meanwhile. NIMBUS_ENOSPC may leave part of the
   * write in the object (stage_undo gives it back). */
  int (*stage_write)(st_blob_be *be, const uint8_t name[32], uint64_t offset,
                     const void *p, size_t n, uint64_t reserve_end,
                     bool entry_durable);
  /* Gives back the space of [offset, offset + n) of staging object `name`
   * (a failed write's, never an acknowledged one's: the caller checks).
   * 0 when there is no such object, it was moved meanwhile, or the
   * backend cannot free part of an object. Same exclusion against
   * stage_lock as stage_write. */
  int (*stage_undo)(st_blob_be *be, const uint8_t name[32], uint64_t offset,
                    size_t n);
  /* Takes the exclusive lock on staging object `name` that a commit holds
   * from its hashing to its move: stage_write and stage_undo wait for
   * it. *lock receives a non-negative handle for stage_unlock (-1 on
   * failure). NIMBUS_ENOTFOUND when there is no such object, also when a
   * holder of the lock before this one moved or dropped it. */
  int (*stage_lock)(st_blob_be *be, const uint8_t name[32], int *lock);
  /* Releases a lock from stage_lock; -1 is a no-op. Cannot fail. */
  void (*stage_unlock)(st_blob_be *be, int lock);
  /* Removes staging object `name`; an absent one is fine. */
  int (*stage_drop)(st_blob_be *be, const uint8_t name[32]);
  /* The move into the store: makes staging object `name`, cut to `size`
   * bytes, stored blob `hash`, atomically (a reader of `hash` sees it
   * absent or whole) and durably once this returns 0, the staging object
   * then gone. When the store holds a good copy of `hash` already (its
   * size is `size`), that copy is made durable and the staging object
   * removed instead: identical content is stored once; a stored object
   * in the store's compressed form of the same bytes is such a copy too
   * (st_blob_head_packed tells). The caller has
   * checked that the bytes hash to `hash` (the worker holds the object's
   * stage_lock from that check to this move, so no write comes between).
   * NIMBUS_ENOTFOUND when there is no staging object; NIMBUS_ENOSPC
   * leaves it as it was. */
  int (*stage_commit)(st_blob_be *be, const uint8_t name[32], uint64_t size,
                      const uint8_t hash[32]);
  /* The switch of a stored blob to another form of the same bytes (its
   * compressed form, blob_pack.c): puts staging object `name`, which the
   * caller wrote whole with stage_write, in the place of stored blob
   * `hash`, atomically (a reader of `hash` opens the old object or the
   * new one, each whole, and one that opened the old one reads it to its
   * end) and durably once this returns 0; the old object and the staging
   * name are then gone. Only while the store holds `hash`: when it does
   * not (the collector removed it meanwhile) NIMBUS_ENOTFOUND, the staging
   * object dropped. Takes no stage_lock: staging objects of this kind
   * have names no upload has. */
  int (*stage_replace)(st_blob_be *be, const uint8_t name[32],
                       const uint8_t hash[32]);
  /* For the janitor: removes every staging object not written for more
   * than max_age_ms (abandoned uploads, and what a switch to another form
   * left when it stopped half way) and sets *removed (may be NULL) to
   * their count. Objects removed before an error stay removed. */
  int (*stage_sweep)(st_blob_be *be, int64_t max_age_ms, size_t *removed);

  /* ---- Reading ---------------------------------------------------------- */

  /* Opens object `name` of namespace `ns` for reading; `flags` is 0 or
   * ST_BLOB_RD_UNCACHED. On success *rd is a handle the caller owns until
   * read_close. NIMBUS_ENOTFOUND when there is no such object,
   * NIMBUS_ENOMEM, NIMBUS_EIO. */
  int (*read_open)(st_blob_be *be, st_blob_ns ns, const uint8_t name[32],
                   unsigned flags, st_blob_rd **rd);
  /* One read of up to `n` bytes at `offset` into `buf` (caller storage):
   * *got is the count, short when the backend returns less at once, 0
   * only at the object's end; on a handle opened ST_BLOB_RD_UNCACHED a
   * short count of an aligned read is a multiple of 4096 but at the end,
   * so that the caller's next read stays aligned. The caller loops; a
   * backend does not, so that each call is one request to its medium.
   * Any offset and length may be asked, on any handle. */
  int (*read)(st_blob_rd *rd, uint64_t offset, void *buf, size_t n,
              size_t *got);
  /* Closes a handle from read_open; NULL is a no-op. Cannot fail. */
  void (*read_close)(st_blob_rd *rd);

  /* ---- The store -------------------------------------------------------- */

  /* Sets *exists to whether the store holds blob `hash`. */
  int (*has)(st_blob_be *be, const uint8_t hash[32], bool *exists);
  /* For the janitor: calls fn(arg, hash) for each stored blob not
   * modified for more than max_age_ms; objects whose names are not ones
   * the store gives are left alone. Returns 0, NIMBUS_EIO or fn's error. */
  int (*each_old)(st_blob_be *be, int64_t max_age_ms, st_blob_each_fn fn,
                  void *arg);
  /* Removes blob `hash` durably (a crash afterwards does not bring it
   * back); an absent one is fine. */
  int (*remove)(st_blob_be *be, const uint8_t hash[32]);

  /* ---- The backend as a whole ------------------------------------------ */

  /* Sets *avail to the bytes a write may still use (for telling when a
   * full store is no longer full). */
  int (*space)(st_blob_be *be, uint64_t *avail);
  /* Turns bypassing the backend's cache (O_DIRECT) on or off; called
   * before the store is shared. NULL where the backend has no such cache. */
  void (*set_direct)(st_blob_be *be, bool on);
  /* Frees the instance; objects stay. NULL is never passed. */
  void (*free)(st_blob_be *be);
};

/* ---- For backends: the store's services --------------------------------- */

/* Puts a store on top of backend instance `be` (taken: freed with the
 * store, or at once when this fails). On success *out is a store the
 * caller owns (st_blobstore_free). Returns 0 or NIMBUS_ENOMEM. */
int st_blobstore_new(st_blob_be *be, st_blobstore **out);

/* Records "<what>: <strerror(errno)>" as the calling thread's error text
 * and returns NIMBUS_ENOSPC when errno says the medium or a quota is full
 * (ENOSPC, EDQUOT), else NIMBUS_EIO. Call right after the failing call,
 * before anything can change errno. */
int st_blob_fail_io(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records a sentence as the calling thread's error text. */
void st_blob_set_err(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* The head of a stored object: its first ST_BLOB_HEAD bytes are enough to
 * tell the store's compressed form of a blob (blob_pack.c) from the blob
 * as it is. */
#define ST_BLOB_HEAD 64

/* True when `head` (n bytes, the first of a stored object `length` bytes
 * long; borrowed) begins the store's compressed form of blob `hash` of
 * `size` bytes, whole: what stage_commit keeps as a good copy of `hash`
 * beside one that is `size` bytes long. The head names the blob by its
 * SHA-256, so no blob as it is can be mistaken for the compressed form of
 * itself (its bytes would have to hold their own hash). */
bool st_blob_head_packed(const uint8_t *head, size_t n, const uint8_t hash[32],
                         uint64_t size, uint64_t length);

/* ---- Backends ------------------------------------------------------------ */

/* The local (or shared) filesystem rooted at `dir` (borrowed; blob_fs.c),
 * creating <dir>/staging and <dir>/blobs when absent. On success *out is
 * an instance the caller owns (st_blobstore_new takes it). Returns 0,
 * NIMBUS_ENOMEM, or NIMBUS_EIO with the error text set. */
int st_blob_fs_open(const char *dir, st_blob_be **out);

#endif
