/* Large objects (PROTOCOL.md, "Large objects: blobs"): the blob store on
 * disk behind a small backend interface, and the Redis model of uploads,
 * blob metadata and per-terminal read access.
 *
 * The store keeps three things apart. Staging files hold an upload while
 * its segments arrive, one file per (terminal, upload) named by the
 * SHA-256 of that pair, so no string from a terminal ever becomes a path.
 * The content-addressed store holds committed blobs, named by the SHA-256
 * of their bytes, filled only by an atomic rename after the file and its
 * directory were fsynced, so a blob is either absent or whole. Identical
 * content is stored once. A stored blob may be kept compressed ("Compressed
 * storage" below), which changes nothing any reader sees. Redis says which
 * segments of an upload arrived, what each committed blob's segments hash
 * to, and who may read what.
 *
 * The store's calls do the hashing and the checks themselves and keep
 * the bytes behind a backend, a table of operations (st_blob_backend.h):
 * the local filesystem (st_blobstore_open) is the only one today, and an
 * S3-compatible one can take its place without the worker changing.
 *
 * Every function returns 0 or a nimbus_err. Those that touch the disk
 * return NIMBUS_EIO with a sentence (strerror included) in the store's
 * errstr, and those that write return NIMBUS_ENOSPC (with the same kind
 * of sentence) when the filesystem, or its quota, is full; those that talk
 * to Redis return NIMBUS_EREDIS with the reason in st_redis_errstr. A
 * store is safe to share between threads: it changes no state after
 * st_blobstore_open but atomic flags (O_DIRECT refused, full since). */
#ifndef ST_BLOB_H
#define ST_BLOB_H

#include "sc_const.h"
#include "st.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every segment but the last is exactly this long (PROTOCOL.md). */
#define ST_SEGMENT SC_SEGMENT

/* Number of segments of a blob of `size` bytes (an empty blob has none). */
uint64_t st_blob_nsegs(uint64_t size);

/* ---- The store on disk --------------------------------------------------- */

typedef struct st_blobstore st_blobstore;

/* Opens the local-filesystem store rooted at `dir` (borrowed), creating
 * <dir>/staging and <dir>/blobs when absent. On success *out is a store the
 * caller owns (st_blobstore_free). On failure returns NIMBUS_EIO or
 * NIMBUS_ENOMEM with a sentence in errbuf (errcap bytes). */
int st_blobstore_open(const char *dir, st_blobstore **out, char *errbuf,
                      size_t errcap);
/* Whether whole segments are written, and uploads read at commit, with
 * O_DIRECT (on by default): past the page cache, whose copies into fresh
 * pages were the largest CPU cost of a backup on this project's VMs
 * (tests/bench/README.md). Where the filesystem refuses O_DIRECT the
 * store turns it off by itself. Call before the store is shared. */
void st_blobstore_set_direct(st_blobstore *s, bool on);
/* Frees the store; NULL is a no-op. Files stay on disk. */
void st_blobstore_free(st_blobstore *s);
/* The last error text of the calling thread's failing call (borrowed,
 * thread-local, valid until that thread's next call). */
const char *st_blobstore_errstr(void);

/* Writes `n` bytes of `p` (borrowed) at `offset` of the staging file of
 * (terminal, upload), creating it when absent, and returns only once the
 * bytes are on disk (fdatasync). When the write lands beyond the file's
 * end and `reserve_end` lies beyond the write, the space up to
 * reserve_end is reserved at once (fallocate), so that the puts to come
 * write into allocated blocks rather than extend the file, which ext4 does
 * one write at a time (st_upload_reserve_end gives the bound; 0: none).
 * The file may then be longer than what it holds: what was received is
 * the upload's bitmap, never the file's length. Unless `entry_durable`
 * says that the file's directory entry is known to be on disk already (an
 * earlier put that answered ok made sure: st_upload.staged), the staging
 * directory is fsynced too. n == 0 only creates the file (an empty blob).
 * Returns 0, NIMBUS_ECONFLICT when a commit moved or dropped the upload
 * meanwhile (nothing written), NIMBUS_ENOSPC when the filesystem is full
 * (part of the segment may be on disk: st_blobstore_stage_undo gives its
 * blocks back), or NIMBUS_EIO. */
int st_blobstore_stage(st_blobstore *s, const char *terminal,
                       const char *upload, uint64_t offset, const void *p,
                       size_t n, uint64_t reserve_end, bool entry_durable);

/* Gives back the disk blocks of [offset, offset + n) of the staging file
 * of (terminal, upload): for a put whose st_blobstore_stage failed, of a
 * segment that no earlier put acknowledged (the caller checks the upload's
 * bitmap; bytes of an acknowledged segment would be lost). Nothing when
 * there is no staging file, or it was moved into the store meanwhile, or
 * the filesystem cannot punch holes. Returns 0 or NIMBUS_EIO. */
int st_blobstore_stage_undo(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t offset, size_t n);

/* Since when (ms since the epoch) the store has been refusing writes for
 * want of space (NIMBUS_ENOSPC), or 0 when it is not: from the first
 * write refused until one succeeds, or until the filesystem has 1 MiB
 * free again (looked at at most once a second, by this call). For the
 * worker's monitor status. */
int64_t st_blobstore_full_since(st_blobstore *s);

/* Called every segment while a file is hashed; returns 0 to go on, or a
 * nimbus_err that stops the hashing and is returned by it. */
typedef int (*st_blob_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Bytes of one segment's check sum: XXH3-128 (nb_xxh128) of the segment,
 * recorded at commit (nb:blob:<hex>:sums) and checked by blob.get against
 * damage on disk. The content itself is proven by the whole SHA-256;
 * hashing every segment with SHA-256 too would double a commit's CPU. */
#define ST_SEGSUM 16
/* Blobs committed before the sums were XXH3 recorded the SHA-256 of each
 * segment (nb:blob:<hex>:segs); they are read and checked as such. */
#define ST_SEGSUM_SHA256 32

/* Hashes the first `size` bytes of the staging file of (terminal, upload)
 * in one streaming pass: the whole SHA-256 into `whole` and the check sum
 * of each segment into sums[0 .. st_blob_nsegs(size)-1] (caller storage).
 * `progress` may be NULL. Returns 0, NIMBUS_ENOTFOUND when there is no
 * staging file, NIMBUS_EIO (also when the file is shorter than `size`), or
 * what `progress` returned. */
int st_blobstore_stage_hash(st_blobstore *s, const char *terminal,
                            const char *upload, uint64_t size,
                            uint8_t whole[32], uint8_t (*sums)[ST_SEGSUM],
                            st_blob_progress_fn progress, void *arg);

/* The same for the stored blob `hash`: per-segment sums of its `size`
 * bytes. */
int st_blobstore_blob_hash(st_blobstore *s, const uint8_t hash[32],
                           uint64_t size, uint8_t whole[32],
                           uint8_t (*sums)[ST_SEGSUM],
                           st_blob_progress_fn progress, void *arg);

/* Moves the staging file of (terminal, upload), cut to `size` bytes, into
 * the store as blob `hash`: fsync of the file, rename, fsync of the
 * directory. When the store already holds `hash`, the staging file is
 * removed instead (identical content is stored once). The caller has
 * checked that the content hashes to `hash`. Returns 0, NIMBUS_ENOTFOUND
 * (no staging file), NIMBUS_ENOSPC (the staging file stays as it was) or
 * NIMBUS_EIO. */
int st_blobstore_stage_commit(st_blobstore *s, const char *terminal,
                              const char *upload, uint64_t size,
                              const uint8_t hash[32]);

/* Takes the exclusive lock on the staging of (terminal, upload) for a
 * commit: while it is held, blob.put of that upload waits, and afterwards
 * finds the file moved or dropped and stores nothing (NIMBUS_ECONFLICT from
 * st_blobstore_stage). *lock receives a handle for
 * st_blobstore_stage_unlock. Returns 0, NIMBUS_ENOTFOUND when nothing is
 * staged (also when a commit that held the lock first moved or dropped the
 * file meanwhile), or NIMBUS_EIO. */
int st_blobstore_stage_lock(st_blobstore *s, const char *terminal,
                            const char *upload, int *lock);
/* Releases a lock from st_blobstore_stage_lock; -1 is a no-op. */
void st_blobstore_stage_unlock(st_blobstore *s, int lock);

/* Removes the staging file of (terminal, upload); an absent one is fine.
 * Returns 0 or NIMBUS_EIO. */
int st_blobstore_stage_drop(st_blobstore *s, const char *terminal,
                            const char *upload);

/* Removes staging files not written for more than max_age_ms (uploads
 * abandoned: their Redis records expired with upload_ttl) and sets
 * *removed (may be NULL) to their count. Returns 0 or NIMBUS_EIO (files
 * removed before the error stay removed). */
int st_blobstore_sweep(st_blobstore *s, int64_t max_age_ms, size_t *removed);

/* Calls fn(arg, hash) for each stored blob file not modified for more than
 * max_age_ms (the orphan sweep: st_blob_orphan_take decides). Files whose
 * names are not 64 lowercase hex digits are left alone. fn returns 0 to go
 * on, or a nimbus_err that stops the walk and is returned. Returns 0,
 * NIMBUS_EIO or fn's error. */
int st_blobstore_each_old(st_blobstore *s, int64_t max_age_ms,
                          int (*fn)(void *arg, const uint8_t hash[32]),
                          void *arg);

/* Removes blob `hash` from the store (the collector's last step, after
 * Redis forgot it); an absent one is fine. Returns 0 or NIMBUS_EIO. */
int st_blobstore_remove(st_blobstore *s, const uint8_t hash[32]);

/* Sets *exists to whether the store holds blob `hash`. Returns 0 or
 * NIMBUS_EIO. */
int st_blobstore_has(st_blobstore *s, const uint8_t hash[32], bool *exists);

/* Reads up to `n` bytes of blob `hash` from `offset` into `buf` (caller
 * storage) and sets *got to the count read (short only at the blob's
 * end). With `offset` and `n` multiples of 4096 and `buf` aligned to 4096
 * (posix_memalign) it reads past the page cache (st_blobstore_set_direct).
 * Returns 0, NIMBUS_ENOTFOUND or NIMBUS_EIO. */
int st_blobstore_read(st_blobstore *s, const uint8_t hash[32], uint64_t offset,
                      void *buf, size_t n, size_t *got);

/* A blob open for many reads (an offload's input, read in small pieces
 * at the module's pace): st_blobstore_read without opening the blob and
 * reading its head for each, and, for a blob kept compressed, without
 * decompressing the segment again for each read inside it. One thread
 * at a time. */
typedef struct st_blob_reader st_blob_reader;

/* Opens blob `hash` for st_blob_reader_read: 0 with *out (caller closes
 * it with st_blob_reader_close), NIMBUS_ENOTFOUND, NIMBUS_EIO or
 * NIMBUS_ENOMEM. It reads the blob as it was opened, also when the blob
 * is switched to its other form or collected meanwhile. */
int st_blobstore_reader_open(st_blobstore *s, const uint8_t hash[32],
                             st_blob_reader **out);
/* st_blobstore_read of the open blob: up to n bytes at `offset` into buf,
 * *got short only at the blob's end. 0 or NIMBUS_EIO. */
int st_blob_reader_read(st_blob_reader *r, uint64_t offset, void *buf, size_t n,
                        size_t *got);
/* Closes r; NULL is a no-op. */
void st_blob_reader_close(st_blob_reader *r);

/* ---- Compressed storage ----------------------------------------------------
 * A stored blob may be kept compressed (blob_pack.c): one zstd frame per
 * segment behind an index of where each begins, so that a read of one
 * segment decompresses one frame and never the blob from its start. Its
 * name stays the SHA-256 of its bytes, and every call above
 * (st_blobstore_read, st_blobstore_blob_hash, a commit of the same
 * content) gives and sees those bytes whichever form is on disk. */

/* What a trial compresses (st_blob_pack_opts.trial): the first 1 MiB. */
#define ST_BLOB_TRIAL ((uint64_t)4 * ST_SEGMENT)

typedef struct st_blob_pack_opts {
  int level; /* zstd's level, 1-19 */
  /* Compress the first ST_BLOB_TRIAL bytes at level 1 first, and leave a
   * blob whose first bytes do not shrink by 10% as it is without reading
   * on (a larger blob only: a smaller one is compressed whole anyway). */
  bool trial;
  /* May be NULL: called after each segment with the bytes read so far; a
   * value other than 0 stops the work and is returned. */
  st_blob_progress_fn progress;
  void *arg;
} st_blob_pack_opts;

/* Keeps blob `hash` (`size` bytes) compressed when that makes it at least
 * 10% smaller: writes the compressed form beside it, makes that durable,
 * reads it back and checks that it gives the blob's bytes (every frame,
 * and their SHA-256 against the name: the old form is the only copy),
 * and puts it in the blob's place in one atomic step (the backend's
 * stage_replace), so that a crash at any moment leaves one form or the
 * other, whole, and a reader that has the old form open reads on
 * undisturbed. Sets *stored to the bytes the blob takes in the store
 * afterwards: those of its compressed form (also when it was compressed
 * already), or `size` when it stays as it is. Slow for a big blob (a
 * whole read and zstd's work: about 7 ms per MiB at level 3 on this
 * project's VMs). Returns 0, NIMBUS_EINVAL (a level out of range),
 * NIMBUS_ENOTFOUND (no such blob, also when the collector removed it
 * meanwhile), NIMBUS_ENOSPC, NIMBUS_EIO (also a blob shorter than
 * `size`, one whose compressed form is of another size, a new form that
 * did not read back as the blob), NIMBUS_ENOMEM, or what o->progress
 * returned; after an error the blob is as it was (but for an error after
 * the exchange, the directory's fsync: *stored then says the form on
 * disk), and what was written beside it is gone. A size above
 * UINT64_MAX / 2 is NIMBUS_EINVAL. `o` borrowed. */
int st_blobstore_pack(st_blobstore *s, const uint8_t hash[32], uint64_t size,
                      const st_blob_pack_opts *o, uint64_t *stored);

/* Sets *stored to the bytes blob `hash` (`size` bytes) takes in the store:
 * those of its compressed form, or `size` when it is kept as it is (one
 * small read of its head). Returns 0, NIMBUS_ENOTFOUND or NIMBUS_EIO. */
int st_blobstore_stored(st_blobstore *s, const uint8_t hash[32], uint64_t size,
                        uint64_t *stored);

/* ---- The Redis model -------------------------------------------------------
 * Keys (prefix nb:):
 *   nb:upload:<terminal>:<upload>       hash {size, sha256 (32 raw bytes),
 *                                       blob (hex, once committed)},
 *                                       PEXPIRE upload_ttl
 *   nb:upload:<terminal>:<upload>:bits  string, bit i set = segment i is
 *                                       durable in staging (SETBIT),
 *                                       PEXPIRE upload_ttl
 *   nb:blob:<hex>                       hash {size, refs, stored: the
 *                                       bytes it takes in the store, once
 *                                       a share looked (absent: not known,
 *                                       taken to be size)}
 *   nb:blob:<hex>:sums                  string, the 16-byte XXH3-128 of each
 *                                       segment, in order (ST_SEGSUM)
 *   nb:blob:<hex>:segs                  instead, for blobs committed before
 *                                       the sums: each segment's SHA-256
 *   nb:access:<terminal>                set of the blobs (hex) it may read
 *   nb:blob:<hex>:readers               set of the terminals whose access
 *                                       set holds it
 *   nb:gc                               sorted set: blob -> ms since which
 *                                       it may be unreferenced (set at each
 *                                       commit and each released reference)
 *   nb:blob:<hex>:gone                  tombstone while the collector
 *                                       removes its file
 *   nb:blob:<hex>:committing            a commit of this content is moving
 *                                       it into the store: not collected
 *   nb:pack                             sorted set: blob -> ms from which a
 *                                       janitor may take it to compress it
 *                                       (st_blob_pack_take) */

/* What Redis knows of one upload. */
typedef struct st_upload {
  bool exists;
  uint64_t size;
  uint8_t sha256[32];
  bool committed; /* blob.commit succeeded; `blob` names it */
  bool staged;    /* a put answered ok: the staging file's directory
                     entry is on disk (st_blobstore_stage) */
  bool verified;  /* a commit hashed the staged bytes, found them to be
                     `sha256` and began moving them into the store
                     (st_blob_commit_begin): should it die before its
                     record, the blob is in the store under that name */
  char blob[65];  /* hex, "" unless committed */
  uint8_t *bits;  /* owned: the received-segments bitmap, bits_len bytes */
  size_t bits_len;
} st_upload;

/* Reads the upload (terminal, upload) into *out (caller storage; release
 * with st_upload_fini even on error). An unknown upload gives 0 with
 * out->exists false. Returns 0, NIMBUS_EREDIS or NIMBUS_ENOMEM. */
int st_upload_get(st_redis *r, const char *terminal, const char *upload,
                  st_upload *out);
/* Frees what st_upload_get allocated; safe on a zeroed struct. */
void st_upload_fini(st_upload *u);

/* How far the staging file of upload `u` may be reserved ahead
 * (st_blobstore_stage's reserve_end): from the end of the run of segments
 * received from offset 0, as many bytes as the upload has received, at
 * most 64 segments (16 MiB), never past the blob's end; 0 (none) for a
 * blob of one segment. So space reserved but not yet written never
 * exceeds what the terminal has sent (a first put reserves nothing), and
 * a put far beyond the run reserves nothing. */
uint64_t st_upload_reserve_end(const st_upload *u);
/* True when segment `i` of `u` has arrived. */
bool st_upload_has_seg(const st_upload *u, uint64_t i);
/* Bytes of the blob received so far (the last segment counts its real
 * length). */
uint64_t st_upload_have(const st_upload *u);

/* Fixes the size and hash of upload (terminal, upload) before its first
 * segment is written, so that of two first puts racing with other ones
 * only one writes: creates the record (with ttl_ms) when there is none.
 * *ok is true when the record now has this size and sha256, false when it
 * has others (the caller answers 409 and writes nothing). Returns 0,
 * NIMBUS_EINVAL or NIMBUS_EREDIS. */
int st_upload_reserve(st_redis *r, const char *terminal, const char *upload,
                      uint64_t size, const uint8_t sha256[32], int64_t ttl_ms,
                      bool *ok);

/* Appends to `t` the effect of one durable segment: the first put's size
 * and sha256 (HSETNX: the first one wins), bit `seg`, the `staged` mark
 * (the staging file's directory entry is on disk: later puts need not
 * fsync the directory) and the ttl on both keys. Strings borrowed.
 * Returns 0, NIMBUS_EINVAL or NIMBUS_ENOMEM. */
int st_upload_put_effect(st_txn *t, const char *terminal, const char *upload,
                         uint64_t size, const uint8_t sha256[32], uint64_t seg,
                         int64_t ttl_ms);

/* Appends to `t` lasting read access for `terminal` to blob `hex` (64
 * hex), as a commit of its bytes would give it, required to find the
 * blob's metadata still there: for a blob the terminal may read now
 * through a grant (a share it got) that a record of its own (a snapshot)
 * is to keep. Returns 0, NIMBUS_EINVAL or NIMBUS_ENOMEM. */
int st_blob_access_effect(st_txn *t, const char *terminal, const char *hex);

/* Appends to `t` the effect of a commit of blob `blob` (its SHA-256): the
 * blob's metadata (size and the `nsegs` segment sums of `sums`), read
 * access for `terminal`, the upload marked committed (its bitmap dropped;
 * the record kept for ttl_ms so that committing again gets the same
 * answer), and the blob's grace period restarted. The effect fails
 * (st_task_commit: NIMBUS_ECONFLICT) while the collector removes the
 * blob. */
int st_upload_commit_effect(st_txn *t, const char *terminal, const char *upload,
                            const uint8_t blob[32], uint64_t size,
                            const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs,
                            int64_t ttl_ms);

/* Marks that a commit of upload (terminal, upload), whose bytes were
 * hashed and found to be blob `hex`, is about to move them into the
 * store: for ttl_ms or until its commit effect lands (which removes the
 * mark) the collector leaves the blob alone, and the upload's record
 * (when it still exists) is marked verified for as long as it lives
 * (st_upload.verified), so that a commit sent again after this one died
 * between the move and its record finds the blob in the store rather
 * than nothing staged. When the collector is removing the blob right now,
 * *gone is true and nothing is marked: wait a moment (st_blob_gc_done
 * ends that within milliseconds) and try again. All strings borrowed;
 * `owner` is recorded for diagnosis. Returns 0, NIMBUS_EINVAL or
 * NIMBUS_EREDIS. */
int st_blob_commit_begin(st_redis *r, const char *terminal, const char *upload,
                         const char *hex, const char *owner, int64_t ttl_ms,
                         bool *gone);

/* Deletes the upload's record and bitmap now (the 422 of blob.commit, the
 * one error that changes state). Returns 0 or NIMBUS_EREDIS. */
int st_upload_discard(st_redis *r, const char *terminal, const char *upload);

/* Deletes the record of upload (terminal, upload) if nothing of it was
 * ever acknowledged (no segment in its bitmap, no put answered ok, not
 * committed): what a first put leaves that fixed the upload's size and
 * hash (st_upload_reserve) and then could not write. A put racing it that
 * did write records the size and hash again with its segment
 * (st_upload_put_effect). *removed (may be NULL) says whether it went.
 * Returns 0, NIMBUS_EINVAL or NIMBUS_EREDIS. */
int st_upload_abandon(st_redis *r, const char *terminal, const char *upload,
                      bool *removed);

/* For each of the `n` hex names in `blobs` (borrowed), sets may_read[i]
 * (caller storage) to whether `terminal` may read it. One round trip.
 * Returns 0, NIMBUS_EREDIS or NIMBUS_ENOMEM. */
int st_blob_access(st_redis *r, const char *terminal, const char *const *blobs,
                   size_t n, bool *may_read);

/* Reads the size of blob `hex`; *exists false when there is no metadata.
 * Returns 0 or NIMBUS_EREDIS. */
int st_blob_meta_get(st_redis *r, const char *hex, bool *exists,
                     uint64_t *size);

/* What Redis knows of one stored blob. */
typedef struct st_blob_meta {
  bool exists;
  uint64_t size;
  int64_t stored; /* bytes in the store as recorded; -1 when not recorded */
} st_blob_meta;

/* Reads the metadata of blob `hex` into *out (caller storage); an unknown
 * blob gives 0 with out->exists false. Returns 0 or NIMBUS_EREDIS. */
int st_blob_meta_read(st_redis *r, const char *hex, st_blob_meta *out);

/* ---- Compression -----------------------------------------------------------
 * Which blobs are (to be) kept compressed in the store (st_blobstore_pack).
 * Not part of any task's effect but the queueing: the switch on disk is
 * not transactional with Redis, so its outcome is recorded right after it,
 * and a record lost in a crash is made again the next time a share looks
 * at the blob (the disk is the truth: st_blobstore_stored). */

/* Records that blob `hex` takes `stored` bytes in the store, if its
 * metadata still exists (the collector may have taken it meanwhile), and
 * takes it off the queue. *recorded (may be NULL) says whether it was.
 * Returns 0 or NIMBUS_EREDIS. */
int st_blob_stored_set(st_redis *r, const char *hex, uint64_t stored,
                       bool *recorded);

/* Appends to `t` the queueing of blob `hex` (borrowed) for compression by
 * a janitor, due at now_ms; one already queued keeps its place. Returns 0,
 * NIMBUS_EINVAL or NIMBUS_ENOMEM. */
int st_blob_pack_queue_effect(st_txn *t, const char *hex, int64_t now_ms);

/* Takes the first queued blob due by now_ms into hex[65] and makes it due
 * again at now_ms + lease_ms, so that should this janitor die another one
 * takes it then (renew with st_blob_pack_later while the work lasts).
 * *got is false when none is due. Returns 0 or NIMBUS_EREDIS. */
int st_blob_pack_take(st_redis *r, int64_t now_ms, int64_t lease_ms,
                      char hex[65], bool *got);

/* Makes queued blob `hex` due at when_ms (a renewed lease, or a later try
 * after a full disk); nothing when it is not queued. Returns 0 or
 * NIMBUS_EREDIS. */
int st_blob_pack_later(st_redis *r, const char *hex, int64_t when_ms);

/* Takes blob `hex` off the queue (it is gone, or cannot be read). Returns
 * 0 or NIMBUS_EREDIS. */
int st_blob_pack_drop(st_redis *r, const char *hex);

/* Reads the recorded check sums of segments first .. first+count-1 of
 * blob `hex` into `sums` (caller storage of count * ST_SEGSUM_SHA256
 * bytes), *width bytes each: ST_SEGSUM, or ST_SEGSUM_SHA256 for a blob
 * committed before the XXH3 sums. Returns 0, NIMBUS_ENOTFOUND when fewer
 * are recorded, or NIMBUS_EREDIS. */
int st_blob_sums_get(st_redis *r, const char *hex, uint64_t first,
                     uint64_t count, uint8_t *sums, size_t *width);

/* True when the `n` bytes at `p` match `sum`, a check sum `width` bytes
 * wide as st_blob_sums_get gave it. */
bool st_segsum_ok(const void *p, size_t n, const uint8_t *sum, size_t width);

/* ---- Collection ------------------------------------------------------------
 * A blob nothing refers to (no snapshot; later no share, result or agent
 * package: the `refs` field of its metadata) is collected once it has been
 * so for the grace period: its records and every terminal's access go in
 * one script, then its file. */

/* Lists into out[] (caller storage, `max` entries) up to `max` blobs
 * unreferenced since before cutoff_ms (candidates: refs are checked by
 * st_blob_gc_take) and sets *n. */
int st_blob_gc_candidates(st_redis *r, int64_t cutoff_ms, size_t max,
                          char (*out)[65], size_t *n);

/* Atomically takes blob `hex` out of Redis if it is still unreferenced and
 * was so since before cutoff_ms: its metadata, segment hashes and every
 * terminal's access, leaving a tombstone for gone_ms during which no
 * commit of the same content is recorded. *taken says whether it was
 * (then remove the file: st_blobstore_remove, then st_blob_gc_done) and
 * *size its size. A blob referred to again is dropped from the candidates;
 * one being committed again (st_blob_commit_begin) is kept. */
int st_blob_gc_take(st_redis *r, const char *hex, int64_t cutoff_ms,
                    int64_t gone_ms, bool *taken, uint64_t *size);

/* Ends the tombstone of blob `hex` once its file is removed, so commits of
 * the same content go ahead at once. */
int st_blob_gc_done(st_redis *r, const char *hex);

/* For a stored file that may be an orphan (a crash between a commit's
 * move and its record, or a collection whose removal failed): atomically
 * takes blob `hex` if Redis knows nothing of it (no metadata, no commit
 * under way, no tombstone), leaving a tombstone for gone_ms that holds off
 * commits of the same content, as st_blob_gc_take does. *taken says
 * whether it was (then st_blobstore_remove, then st_blob_gc_done).
 * Returns 0 or NIMBUS_EREDIS. */
int st_blob_orphan_take(st_redis *r, const char *hex, int64_t gone_ms,
                        bool *taken);

/* ---- Writing a blob the cloud makes ----------------------------------------
 * A blob that no terminal uploads (an offload's output, a published
 * module) is written through a writer: its bytes are staged as the
 * upload (owner, upload) segment by segment as they come (one segment
 * buffered), then hashed, marked in Redis as being committed (so the
 * collector keeps the content: st_blob_commit_begin) and moved into the
 * store, exactly as an uploaded blob is. Recording its metadata (size,
 * sums, references) is the caller's (st_result_put, st_module_publish),
 * which also ends the commit mark. A writer is used by one thread. */
typedef struct st_blob_writer st_blob_writer;

/* Starts a blob staged as (owner, upload) (both copied; an upload name no
 * terminal can use, e.g. holding a '.', so it never meets a terminal's
 * upload) in store `s` (borrowed: it outlives the writer), writing at most
 * max_size bytes (NIMBUS_ETOOBIG beyond). Returns 0 and *out (caller
 * frees with st_blob_writer_free), or NIMBUS_ENOMEM. */
int st_blob_writer_new(st_blobstore *s, const char *owner, const char *upload,
                       uint64_t max_size, st_blob_writer **out);
/* Appends n bytes of p (borrowed). Returns 0, NIMBUS_ETOOBIG past
 * max_size, NIMBUS_ENOSPC, NIMBUS_EIO; after an error every later call
 * returns it again. */
int st_blob_writer_write(st_blob_writer *w, const void *p, size_t n);
/* Bytes written so far. */
uint64_t st_blob_writer_size(const st_blob_writer *w);
/* Stages what is buffered, hashes the whole, marks it in r as committed by
 * `mark_owner` for mark_ttl_ms, and moves it into the store: then hex[65]
 * receives its name. *gone true (and nothing moved) when the collector is
 * removing the same content right now: try again later. Returns 0,
 * NIMBUS_EREDIS, NIMBUS_ENOSPC, NIMBUS_EIO, or the write error. */
int st_blob_writer_finish(st_blob_writer *w, st_redis *r,
                          const char *mark_owner, int64_t mark_ttl_ms,
                          char hex[65], bool *gone);
/* After a successful finish: the sums of its segments (borrowed from w,
 * *nsegs entries), for the blob's metadata. */
const uint8_t (*st_blob_writer_sums(const st_blob_writer *w,
                                    uint64_t *nsegs))[ST_SEGSUM];
/* The blob's bytes when all of them are still in the buffer (a blob of at
 * most one segment), else NULL; borrowed from w. */
const uint8_t *st_blob_writer_small(const st_blob_writer *w);
/* Drops the staging file unless finish moved it, and frees; NULL is a
 * no-op. */
void st_blob_writer_free(st_blob_writer *w);

#endif
