/* What the blob store's own files (blobstore.c, blob_pack.c) share and
 * nothing outside them sees: the store itself, its bookkeeping of a full
 * store, and the reader that gives a stored blob's bytes whichever form
 * the backend holds it in, as it is or compressed (st_bin). */
#ifndef ST_BLOB_INTERNAL_H
#define ST_BLOB_INTERNAL_H

#include "st_blob.h"
#include "st_blob_backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct st_blobstore {
  st_blob_be *be;
  const st_blob_backend *ops; /* be->ops, one load fewer on every call */
  /* Since when (ms) writes are refused for want of space, 0 while they
   * are not, and when the free space was last looked at
   * (st_blobstore_full_since). */
  _Atomic int64_t full_since;
  _Atomic int64_t full_checked;
};

/* Notes the outcome `rc` of a write to the backend: NIMBUS_ENOSPC makes
 * the store full, a success ends that (blobstore.c). */
void st__blob_note_write(st_blobstore *s, int rc);

/* An object open for reading its blob's bytes (blob_pack.c). A staging
 * object and a stored blob kept as it is read straight from the backend;
 * a stored blob in the compressed form is read frame by frame, each frame
 * (one segment) decompressed on its own. One thread at a time. */
typedef struct st_bin {
  const st_blob_backend *ops;
  st_blob_rd *rd;
  bool packed;
  uint64_t size;   /* packed: the blob's bytes */
  uint64_t stored; /* packed: the compressed form's bytes */
  /* Packed, made on the first read: the decompression context, a buffer
   * for one frame, and one for a segment read in part (seg_at says which
   * segment it holds, UINT64_MAX none). */
  void *dctx;
  uint8_t *frame;
  uint8_t *seg;
  uint64_t seg_at;
} st_bin;

/* Opens object `name` of namespace `ns` (flags as for the backend's
 * read_open) into *b (caller storage; st__bin_close it after a success).
 * A stored object whose head is its blob's compressed form is read as
 * such. Returns 0, NIMBUS_ENOTFOUND, NIMBUS_ENOMEM or NIMBUS_EIO. */
int st__bin_open(st_blobstore *s, st_blob_ns ns, const uint8_t name[32],
                 unsigned flags, st_bin *b);
/* Reads up to `n` bytes of the blob from `offset` into `buf` (caller
 * storage), as the backend's read does (*got short when less comes at
 * once, 0 only at the end; at most one segment at a time from a
 * compressed blob). Returns 0, NIMBUS_ENOMEM or NIMBUS_EIO (a frame that
 * does not decompress to its segment included). */
int st__bin_read(st_bin *b, uint64_t offset, void *buf, size_t n, size_t *got);
/* st__bin_read until n bytes are in or the blob ends: *got short only at
 * its end. 0 or the first error. */
int st__bin_read_all(st_bin *b, uint64_t offset, void *buf, size_t n,
                     size_t *got);
/* Closes what st__bin_open opened; a zeroed struct is fine. */
void st__bin_close(st_bin *b);

#endif
