/* The writer of blobs the cloud makes itself (st_blob.h, "Writing a blob
 * the cloud makes"): an offload's output, a published module. It stages
 * the bytes as an upload of its own and takes the path an uploaded blob
 * takes into the store (hash, commit mark, move), so the store keeps one
 * set of rules for every blob: fsync, rename, never a half file. */
#include "st_blob.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdlib.h>
#include <string.h>

struct st_blob_writer {
  st_blobstore *s;
  char *owner, *upload;
  uint64_t max, size;
  uint8_t *buf; /* one segment */
  size_t buf_len;
  bool staged; /* the staging file exists */
  bool moved;  /* finish moved it into the store */
  int err;
  uint8_t (*sums)[ST_SEGSUM];
  uint64_t nsegs;
};

int st_blob_writer_new(st_blobstore *s, const char *owner, const char *upload,
                       uint64_t max_size, st_blob_writer **out) {
  st_blob_writer *w = calloc(1, sizeof *w);
  *out = NULL;
  if (w == NULL)
    return NIMBUS_ENOMEM;
  w->s = s;
  w->max = max_size;
  w->owner = strdup(owner);
  w->upload = strdup(upload);
  w->buf = malloc(ST_SEGMENT);
  if (w->owner == NULL || w->upload == NULL || w->buf == NULL) {
    st_blob_writer_free(w);
    return NIMBUS_ENOMEM;
  }
  *out = w;
  return 0;
}

/* Stages the buffer at its place (the first write also makes the staging
 * file's directory entry durable). */
static int flush(st_blob_writer *w) {
  int rc = st_blobstore_stage(w->s, w->owner, w->upload, w->size - w->buf_len,
                              w->buf, w->buf_len, 0, w->staged);
  if (rc == 0) {
    w->staged = true;
    w->buf_len = 0;
  }
  return rc;
}

int st_blob_writer_write(st_blob_writer *w, const void *p, size_t n) {
  if (w->err != 0)
    return w->err;
  if (n > w->max - w->size)
    return w->err = NIMBUS_ETOOBIG;
  const uint8_t *b = p;
  while (n > 0) {
    size_t k = ST_SEGMENT - w->buf_len < n ? ST_SEGMENT - w->buf_len : n;
    memcpy(w->buf + w->buf_len, b, k);
    w->buf_len += k;
    w->size += k;
    b += k;
    n -= k;
    if (w->buf_len == ST_SEGMENT && (w->err = flush(w)) != 0)
      return w->err;
  }
  return 0;
}

uint64_t st_blob_writer_size(const st_blob_writer *w) { return w->size; }

int st_blob_writer_finish(st_blob_writer *w, st_redis *r,
                          const char *mark_owner, int64_t mark_ttl_ms,
                          char hex[65], bool *gone) {
  *gone = false;
  if (w->err != 0)
    return w->err;
  if ((!w->staged || w->buf_len > 0) && (w->err = flush(w)) != 0)
    return w->err;
  w->nsegs = st_blob_nsegs(w->size);
  free(w->sums);
  w->sums = calloc(w->nsegs > 0 ? w->nsegs : 1, ST_SEGSUM);
  if (w->sums == NULL)
    return NIMBUS_ENOMEM;
  uint8_t whole[32];
  int rc = st_blobstore_stage_hash(w->s, w->owner, w->upload, w->size, whole,
                                   w->sums, NULL, NULL);
  if (rc != 0)
    return rc;
  nb_hex(whole, 32, hex);
  if ((rc = st_blob_commit_begin(r, w->owner, w->upload, hex, mark_owner,
                                 mark_ttl_ms, gone)) != 0 ||
      *gone)
    return rc;
  if ((rc = st_blobstore_stage_commit(w->s, w->owner, w->upload, w->size,
                                      whole)) != 0)
    return rc;
  w->moved = true;
  return 0;
}

const uint8_t (*st_blob_writer_sums(const st_blob_writer *w,
                                    uint64_t *nsegs))[ST_SEGSUM] {
  *nsegs = w->nsegs;
  return (const uint8_t(*)[ST_SEGSUM])w->sums;
}

const uint8_t *st_blob_writer_small(const st_blob_writer *w) {
  /* A blob of exactly one segment was flushed whole and its bytes are
   * still in the buffer. */
  return w->size <= ST_SEGMENT ? w->buf : NULL;
}

void st_blob_writer_free(st_blob_writer *w) {
  if (w == NULL)
    return;
  if (w->staged && !w->moved)
    (void)st_blobstore_stage_drop(w->s, w->owner, w->upload);
  free(w->owner);
  free(w->upload);
  free(w->buf);
  free(w->sums);
  free(w);
}
