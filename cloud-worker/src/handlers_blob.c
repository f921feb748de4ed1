/* The blob handlers (PROTOCOL.md, "Large objects: blobs"): blob.put,
 * blob.status, blob.commit, blob.has and blob.get.
 *
 * Bytes live in the worker's blob store (st_blob.h), state in Redis. A put
 * writes its segment durably to the upload's staging file before it
 * answers, and its bit in the upload's bitmap is set by the dispatcher in
 * the same script that records the reply, so a re-sent put replays and a
 * failed one leaves no bit behind. A commit reads the staging file once,
 * hashes it whole (SHA-256, the blob's name) and per segment (XXH3-128
 * sums), moves it into the content-addressed store and records the sums;
 * blob.get checks every byte it serves against them, so a file damaged on
 * disk is reported, never handed out. Which
 * blobs a terminal may read is a Redis set; a blob it may not read is
 * answered exactly like one that does not exist. */
#include "wk.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_agent.h"
#include "st_backup.h"
#include "st_result.h"
#include "st_share.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a commit keeps the collector off its content (from moving the
 * file until its effect is recorded, normally milliseconds). */
#define COMMITTING_MS 60000

/* blob.has takes at most this many names (PROTOCOL.md). */
#define HAS_MAX SC_HAS_MAX

int wk_redis_down(wk_ctx *c) {
  /* Logged at most once every 10 s per worker: an outage fails every
   * task, and one line says it as well as thousands. */
  static _Atomic int64_t last_ms;
  int64_t now = nb_mono_ms(), last = atomic_load(&last_ms);
  if ((last == 0 || now - last >= 10000) &&
      atomic_compare_exchange_strong(&last_ms, &last, now))
    NB_WARN("WK-REDIS",
            "%s from %s: 503, the state store is unavailable: "
            "%s",
            c->type, c->terminal, st_redis_errstr(c->redis));
  wk_retry_after(c, 1000);
  return wk_fail(c, 503, "try again in a moment",
                 "the cloud's state store is unavailable: %s",
                 st_redis_errstr(c->redis));
}

/* A full store: how long a terminal is asked to wait before it sends
 * again (space comes back when an operator frees it, or the collector
 * removes what nothing refers to), and how often the condition is logged
 * while it lasts (once, not once per segment refused). */
#define FULL_RETRY_MS 30000
#define FULL_LOG_MS 60000

static _Atomic int64_t full_logged;
static atomic_uint_fast64_t full_refused;

/* The answer to a write the store refused for want of space
 * (NIMBUS_ENOSPC): 503 with retry_after, logged at most once a minute with
 * the count of writes refused since the last line. */
int wk_storage_full(wk_ctx *c, const char *what) {
  atomic_fetch_add(&full_refused, 1);
  int64_t now = nb_now_ms(), last = atomic_load(&full_logged);
  if (now - last >= FULL_LOG_MS &&
      atomic_compare_exchange_strong(&full_logged, &last, now)) {
    unsigned long long n = atomic_exchange(&full_refused, 0);
    NB_ERROR("WK-STORAGE-FULL",
             "the blob store is full: %s; %llu write%s "
             "refused since the last report (reported at most once a "
             "minute)",
             st_blobstore_errstr(), n, n == 1 ? "" : "s");
  }
  wk_retry_after(c, FULL_RETRY_MS);
  return wk_fail(c, 503,
                 "send it again after retry_after; what the cloud "
                 "acknowledged is kept",
                 "the cloud's storage is full: it could not %s", what);
}

int wk_disk_error(wk_ctx *c, const char *what) {
  NB_ERROR("WK-BLOB-IO", "%s: %s", what, st_blobstore_errstr());
  return wk_fail(c, 500,
                 "try again later; if it persists, tell the "
                 "cloud's operators",
                 "the cloud could not %s", what);
}

/* ---- Fault injection --------------------------------------------------
 * NIMBUS_TEST_FAULT=<point> in the worker's environment kills the worker
 * with SIGKILL when it reaches that point, as a crash there would, so a
 * test can stop it exactly inside a window that no signal sent from
 * outside can hit reliably (between a commit's move into the store and
 * its record). Unset, which it is in production, it costs one string
 * comparison against NULL. Points: "blob.commit:moved" (handlers_blob.c),
 * "dispatch:committed:<type>" (dispatch.c: a task's effect committed, its
 * reply and notices not yet published). */

static const char *fault_want;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static void fault_read(void) {
  const char *v = getenv("NIMBUS_TEST_FAULT");
  fault_want = v != NULL && v[0] != '\0' ? v : NULL;
}

void wk_fault_point(const char *point, const char *detail) {
  pthread_once(&fault_once, fault_read);
  if (fault_want == NULL)
    return;
  size_t n = strlen(point);
  if (strncmp(fault_want, point, n) != 0 ||
      (detail == NULL
           ? fault_want[n] != '\0'
           : fault_want[n] != ':' || strcmp(fault_want + n + 1, detail) != 0))
    return;
  NB_ERROR("WK-FAULT", "NIMBUS_TEST_FAULT=%s: the worker kills itself here",
           fault_want);
  raise(SIGKILL);
}

/* Reads args.upload into up[65]: 1-64 of [A-Za-z0-9_-]. */
static int arg_upload(wk_ctx *c, char up[65]) {
  const char *s = NULL;
  size_t n = 0;
  if (sc_arg_str(c->args, "upload", true, 1, 64, &s, &n, c->error,
                 sizeof c->error) != 0)
    return 400;
  if (!nb_valid_token(s, n, 1, 64))
    return wk_fail(c, 400, NULL,
                   "args.upload must be 1-64 characters of A-Z a-z 0-9 _ -");
  memcpy(up, s, n);
  up[n] = '\0';
  return 0;
}

bool wk_is_blob_name(const char *s, size_t n) {
  return n == 64 && nb_is_lower_hex(s, n);
}

int wk_arg_blob(wk_ctx *c, const char *key, char hex[65], uint8_t raw[32]) {
  const char *s = NULL;
  size_t n = 0;
  if (sc_arg_str(c->args, key, true, 1, 64, &s, &n, c->error,
                 sizeof c->error) != 0 ||
      !wk_is_blob_name(s, n))
    return wk_fail(c, 400, NULL,
                   "args.%s must be a SHA-256: 64 lowercase hex characters",
                   key);
  memcpy(hex, s, 64);
  hex[64] = '\0';
  if (raw != NULL)
    (void)nb_unhex32(hex, raw);
  return 0;
}

void wk_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
  wk_pack_str(pk, k);
  msgpack_pack_int64(pk, v);
}

/* Packs "missing": [[offset, length], ...], the ranges of segments of `u`
 * not received yet, neighbours merged. */
static void pack_missing(msgpack_packer *pk, const st_upload *u) {
  uint64_t nsegs = st_blob_nsegs(u->size);
  size_t nranges = 0;
  for (uint64_t i = 0; i < nsegs; i++)
    if (!st_upload_has_seg(u, i) && (i == 0 || st_upload_has_seg(u, i - 1)))
      nranges++;
  wk_pack_str(pk, "missing");
  msgpack_pack_array(pk, nranges);
  for (uint64_t i = 0; i < nsegs;) {
    if (st_upload_has_seg(u, i)) {
      i++;
      continue;
    }
    uint64_t j = i;
    while (j < nsegs && !st_upload_has_seg(u, j))
      j++;
    uint64_t start = i * ST_SEGMENT;
    uint64_t end = j * ST_SEGMENT < u->size ? j * ST_SEGMENT : u->size;
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, start);
    msgpack_pack_uint64(pk, end - start);
    i = j;
  }
}

/* st_upload_get, except that a committed upload whose blob was collected
 * since (PROTOCOL.md: a blob lives while something refers to it) is
 * forgotten, so the same name uploads the content again from scratch.
 * Returns 0 or NIMBUS_EREDIS/ENOMEM. */
static int upload_get(wk_ctx *c, const char *up, st_upload *u) {
  int rc = st_upload_get(c->redis, c->terminal, up, u);
  if (rc != 0 || !u->committed)
    return rc;
  const char *name = u->blob;
  bool may = false, exists = false;
  uint64_t size = 0;
  if (st_blob_access(c->redis, c->terminal, &name, 1, &may) != 0 ||
      (may && st_blob_meta_get(c->redis, u->blob, &exists, &size) != 0))
    return NIMBUS_EREDIS;
  if (may && exists)
    return 0;
  if (st_upload_discard(c->redis, c->terminal, up) != 0)
    return NIMBUS_EREDIS;
  st_upload_fini(u);
  memset(u, 0, sizeof *u);
  return 0;
}

int wk_blobs_readable(wk_ctx *c, const char *const *names, size_t n,
                      int64_t *sizes, bool *granted) {
  if (granted != NULL)
    memset(granted, 0, n * sizeof *granted);
  if (n == 0)
    return 0;
  if (st_blobs_readable(c->redis, c->terminal, names, n, sizes) != 0)
    return NIMBUS_EREDIS;
  /* Or through a share this terminal got, or a result of its own task,
   * while it lives, or a published agent package: checked on every read,
   * with the same work whether the blob exists or not (st_blobs_granted). */
  size_t nother = 0;
  for (size_t i = 0; i < n; i++)
    nother += sizes[i] < 0;
  if (nother == 0)
    return 0;
  const char **other = malloc(nother * sizeof *other);
  int64_t *osize = malloc(nother * sizeof *osize);
  size_t *at = malloc(nother * sizeof *at);
  int rc = other != NULL && osize != NULL && at != NULL ? 0 : NIMBUS_ENOMEM;
  for (size_t i = 0, k = 0; rc == 0 && i < n; i++)
    if (sizes[i] < 0) {
      at[k] = i;
      other[k++] = names[i];
    }
  if (rc == 0 && st_blobs_granted(c->redis, c->terminal, other, nother,
                                  nb_now_ms(), osize) != 0)
    rc = NIMBUS_EREDIS;
  for (size_t k = 0; rc == 0 && k < nother; k++) {
    if (osize[k] < 0)
      continue;
    sizes[at[k]] = osize[k];
    if (granted != NULL)
      granted[at[k]] = true;
  }
  free(other);
  free(osize);
  free(at);
  return rc;
}

int wk_blob_need(wk_ctx *c, const char *hex, int64_t *size, bool *granted) {
  if (wk_blobs_readable(c, &hex, 1, size, granted) != 0)
    return wk_redis_down(c);
  if (*size < 0)
    return wk_fail(c, 404, "upload it first (blob.put, blob.commit)",
                   "there is no blob %s that this terminal may read", hex);
  return 0;
}

static int no_upload(wk_ctx *c, const char *up) {
  return wk_fail(c, 404,
                 "start it again with blob.put; uploads not committed "
                 "within upload_ttl (see ping) are dropped",
                 "there is no upload named \"%s\" for this terminal", up);
}

/* ---- blob.put ------------------------------------------------------------ */

static int h_blob_put(wk_ctx *c) {
  char up[65], sha_hex[65];
  uint8_t sha[32];
  int64_t size = 0, off = 0;
  st_upload u = {0};
  int code = 0;
  if ((code = arg_upload(c, up)) != 0 ||
      (code = wk_arg_blob(c, "sha256", sha_hex, sha)) != 0)
    return code;
  if (sc_arg_int(c->args, "size", true, 0, INT64_MAX, &size, c->error,
                 sizeof c->error) != 0 ||
      sc_arg_int(c->args, "offset", true, 0, INT64_MAX, &off, c->error,
                 sizeof c->error) != 0)
    return 400;
  if (size > wk_blob_max_bytes)
    return wk_fail(c, 413, "split the data into smaller blobs",
                   "the blob is %lld bytes; this cloud accepts blobs of at "
                   "most %lld bytes",
                   (long long)size, (long long)wk_blob_max_bytes);
  if (!c->task->has_data)
    return wk_fail(c, 400, NULL,
                   "blob.put carries the segment's bytes in the task's "
                   "data, and this task has none");
  if (off % ST_SEGMENT != 0 || (size == 0 ? off != 0 : off >= size))
    return wk_fail(c, 400,
                   "segments start at multiples of 262144 below the blob's "
                   "size",
                   "args.offset %lld is not the start of a segment of a "
                   "%lld-byte blob",
                   (long long)off, (long long)size);
  uint64_t want =
      (uint64_t)(size - off) < ST_SEGMENT ? (uint64_t)(size - off) : ST_SEGMENT;
  if (c->task->data_len != want)
    return wk_fail(c, 400,
                   "every segment is 262144 bytes; only the last is "
                   "shorter (size - offset)",
                   "the segment at offset %lld of a %lld-byte blob must be "
                   "%llu bytes, not %zu",
                   (long long)off, (long long)size, (unsigned long long)want,
                   c->task->data_len);

  if (upload_get(c, up, &u) != 0) {
    code = wk_redis_down(c);
    goto out;
  }
  if (u.exists && (u.size != (uint64_t)size || memcmp(u.sha256, sha, 32))) {
    char had[65];
    nb_hex(u.sha256, 32, had);
    code =
        wk_fail(c, 409, "give other content a new upload name",
                "upload \"%s\" was started for a blob of %llu bytes with "
                "SHA-256 %s; this segment says %lld bytes and %s",
                up, (unsigned long long)u.size, had, (long long)size, sha_hex);
    goto out;
  }
  if (!u.exists) {
    /* A first put: fix size and hash before writing, so that a racing
     * first put of other content writes nothing (it gets the 409). */
    bool ok = false;
    if (st_upload_reserve(c->redis, c->terminal, up, (uint64_t)size, sha,
                          c->cfg->upload_ttl_ms, &ok) != 0) {
      code = wk_redis_down(c);
      goto out;
    }
    if (!ok) {
      code = wk_fail(c, 409, "give other content a new upload name",
                     "upload \"%s\" was just started by another put for a "
                     "blob of another size or SHA-256; this segment was not "
                     "stored",
                     up);
      goto out;
    }
  }
  u.size = (uint64_t)size;
  uint64_t seg = (uint64_t)off / ST_SEGMENT;
  uint64_t have = st_upload_have(&u);
  /* A verified upload has every segment, and its bytes may be in the store
   * already (a commit that died before its record): a stray put must not
   * start a new staging file that the commit sent again would hash. */
  if (!u.committed && !u.verified) {
    int src = st_blobstore_stage(c->blobs, c->terminal, up, (uint64_t)off,
                                 c->task->data, c->task->data_len,
                                 st_upload_reserve_end(&u), u.staged);
    if (src == NIMBUS_ECONFLICT) {
      code = wk_fail(c, 409, "ask blob.status, or start a new upload",
                     "upload \"%s\" was committed or discarded while this "
                     "segment arrived; it was not stored",
                     up);
      goto out;
    }
    if (src == NIMBUS_ENOSPC) {
      /* Keep what was acknowledged; give back what this put wrote of a
       * segment nobody acknowledged, and the record of an upload of which
       * nothing was (this put's reserve made it). */
      if (!st_upload_has_seg(&u, seg) &&
          st_blobstore_stage_undo(c->blobs, c->terminal, up, (uint64_t)off,
                                  c->task->data_len) != 0)
        NB_WARN("WK-BLOB-IO", "%s", st_blobstore_errstr());
      if (!u.staged && have == 0 &&
          st_upload_abandon(c->redis, c->terminal, up, NULL) != 0)
        NB_WARN("WK-REDIS", "cannot drop the record of upload %s/%s: %s",
                c->terminal, up, st_redis_errstr(c->redis));
      code = wk_storage_full(c, "store the segment");
      goto out;
    }
    if (src != 0) {
      code = wk_disk_error(c, "store the segment");
      goto out;
    }
    if (st_upload_put_effect(c->effect, c->terminal, up, (uint64_t)size, sha,
                             seg, c->cfg->upload_ttl_ms) != 0) {
      code = wk_fail(c, 500, NULL, "the worker is out of memory");
      goto out;
    }
    if (!st_upload_has_seg(&u, seg))
      have += want;
  }
  msgpack_pack_map(&c->pk, 1);
  wk_pack_kv_int(&c->pk, "have", (int64_t)have);
out:
  st_upload_fini(&u);
  return code;
}

/* ---- blob.status --------------------------------------------------------- */

static int h_blob_status(wk_ctx *c) {
  char up[65];
  st_upload u = {0};
  int code = arg_upload(c, up);
  if (code != 0)
    return code;
  if (upload_get(c, up, &u) != 0)
    code = wk_redis_down(c);
  else if (!u.exists)
    code = no_upload(c, up);
  if (code == 0) {
    msgpack_pack_map(&c->pk, 3);
    wk_pack_kv_int(&c->pk, "size", (int64_t)u.size);
    wk_pack_kv_int(&c->pk, "have", (int64_t)st_upload_have(&u));
    pack_missing(&c->pk, &u);
  }
  st_upload_fini(&u);
  return code;
}

/* ---- blob.commit --------------------------------------------------------- */

/* Called per segment while a commit hashes: stops on task.cancel or a lost
 * claim and reports progress about every 64 MiB. */
static int commit_progress(void *arg, uint64_t done, uint64_t total) {
  wk_ctx *c = arg;
  int rc = wk_checkpoint(c);
  if (rc != 0)
    return rc;
  if (done % (64u * 1024 * 1024) == 0 && done < total)
    wk_progress(c, (int64_t)done, (int64_t)total);
  return 0;
}

/* The result of a commit already recorded: {blob, size}. */
static void pack_committed(wk_ctx *c, const st_upload *u) {
  msgpack_pack_map(&c->pk, 2);
  wk_pack_str(&c->pk, "blob");
  wk_pack_str(&c->pk, u->blob);
  wk_pack_kv_int(&c->pk, "size", (int64_t)u->size);
}

/* Keeps the collector off blob `hex` from before the store is looked at
 * until the commit of upload `up` is recorded, and marks the upload
 * verified (st_blob_commit_begin); should the collector be removing an old
 * copy right now, waits until the file is gone. Returns 0 or a reply code
 * after wk_fail. */
static int commit_begin(wk_ctx *c, const char *up, const char *hex) {
  bool gone = true;
  for (int tries = 0; gone && tries < 100; tries++) {
    if (tries > 0)
      nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    if (st_blob_commit_begin(c->redis, c->terminal, up, hex, c->cfg->worker_id,
                             COMMITTING_MS, &gone) != 0)
      return wk_redis_down(c);
  }
  if (gone) {
    wk_retry_after(c, 1000);
    return wk_fail(c, 503, "send blob.commit again in a moment",
                   "an old copy of blob %s is being removed", hex);
  }
  return 0;
}

/* Queues the commit's effect (st_upload_commit_effect) and packs its
 * result {blob, size}. Returns 0 or a reply code after wk_fail. */
static int commit_record(wk_ctx *c, const char *up, const uint8_t blob[32],
                         uint64_t size, const uint8_t (*sums)[ST_SEGSUM],
                         uint64_t nsegs) {
  char hex[65];
  if (st_upload_commit_effect(c->effect, c->terminal, up, blob, size, sums,
                              nsegs, c->cfg->upload_ttl_ms) != 0)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  nb_hex(blob, 32, hex);
  msgpack_pack_map(&c->pk, 2);
  wk_pack_str(&c->pk, "blob");
  wk_pack_str(&c->pk, hex);
  wk_pack_kv_int(&c->pk, "size", (int64_t)size);
  return 0;
}

/* The commit of a verified upload whose staging file is gone: a commit
 * before this one hashed the staged bytes, found them to be the declared
 * blob, moved them into the store (or found the same content there) and
 * died before its record. The blob is then in the store under the hash
 * the upload's first put declared: it is hashed again, so that what is
 * recorded is what the store holds, and recorded as that commit would
 * have. Sets *absent (and answers nothing) when the store does not hold
 * it. Returns 0 or a reply code after wk_fail. */
static int commit_stored(wk_ctx *c, const char *up, const st_upload *u,
                         uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs,
                         bool *absent) {
  char hex[65];
  uint8_t whole[32];
  *absent = false;
  nb_hex(u->sha256, 32, hex);
  int code = commit_begin(c, up, hex);
  if (code != 0)
    return code;
  int rc = st_blobstore_blob_hash(c->blobs, u->sha256, u->size, whole, sums,
                                  commit_progress, c);
  if (rc == NIMBUS_ENOTFOUND) {
    *absent = true;
    return 0;
  }
  if (rc == NIMBUS_ECANCELED)
    return wk_fail(c, 499, NULL, "blob.commit was cancelled by task.cancel");
  if (rc == NIMBUS_ELOST)
    return wk_fail(c, 500, NULL, "the task's claim lapsed");
  if (rc != 0)
    return wk_disk_error(c, "read the committed blob");
  if (memcmp(whole, u->sha256, 32) != 0) {
    NB_ERROR("WK-BLOB-DAMAGED",
             "blob %s: its file in the store does not "
             "hash to its name",
             hex);
    return wk_fail(c, 500, "the cloud's operators must restore it",
                   "blob %s is damaged on disk", hex);
  }
  /* The hash may outlast the mark (a big blob on a slow disk), and the
   * collector take the file meanwhile, the open descriptor reading on:
   * the mark is set again, and then (the collector cannot take it now)
   * the file must still be there. */
  if ((code = commit_begin(c, up, hex)) != 0)
    return code;
  bool there = false;
  if (st_blobstore_has(c->blobs, u->sha256, &there) != 0)
    return wk_disk_error(c, "read the committed blob");
  if (!there) {
    *absent = true;
    return 0;
  }
  NB_INFO("WK-BLOB-RECOVER",
          "upload %s/%s: its blob %s was moved into the "
          "store by a commit that did not record it; recorded now",
          c->terminal, up, hex);
  return commit_record(c, up, u->sha256, u->size,
                       (const uint8_t(*)[ST_SEGSUM])sums, nsegs);
}

static int h_blob_commit(wk_ctx *c) {
  char up[65], hex[65], want_hex[65];
  st_upload u = {0};
  uint8_t(*sums)[ST_SEGSUM] = NULL;
  uint8_t whole[32];
  int lock = -1;
  int code = arg_upload(c, up);
  if (code != 0)
    return code;
  if (upload_get(c, up, &u) != 0) {
    code = wk_redis_down(c);
    goto out;
  }
  if (!u.exists) {
    code = no_upload(c, up);
    goto out;
  }
  if (u.committed) {
    /* Committed before under another task id: the same answer. */
    pack_committed(c, &u);
    goto out;
  }
  if (st_upload_have(&u) != u.size) {
    msgpack_pack_map(&c->pk, 1);
    pack_missing(&c->pk, &u);
    code = wk_fail(c, 409,
                   "send the missing segments with blob.put, then "
                   "commit again",
                   "upload \"%s\" is incomplete: %llu of %llu bytes arrived",
                   up, (unsigned long long)st_upload_have(&u),
                   (unsigned long long)u.size);
    goto out;
  }
  uint64_t nsegs = st_blob_nsegs(u.size);
  sums = malloc((nsegs > 0 ? nsegs : 1) * sizeof *sums);
  if (sums == NULL) {
    code = wk_fail(c, 500, NULL, "the worker is out of memory");
    goto out;
  }
  nb_hex(u.sha256, 32, want_hex);
  /* Puts of this upload wait until the bytes hashed are the bytes stored
   * (see st_blobstore_stage_lock). */
  int rc = st_blobstore_stage_lock(c->blobs, c->terminal, up, &lock);
  if (rc == NIMBUS_ENOTFOUND) {
    /* Another commit of this upload (another task id) may have moved the
     * file while this one waited for the lock: give its answer once it is
     * recorded. */
    for (int tries = 0; tries < 40; tries++) {
      st_upload_fini(&u);
      if (upload_get(c, up, &u) != 0) {
        code = wk_redis_down(c);
        goto out;
      }
      if (!u.exists || u.committed)
        break;
      nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    }
    if (u.committed) {
      pack_committed(c, &u);
      goto out;
    }
    if (u.exists && u.verified) {
      bool absent = false;
      code = commit_stored(c, up, &u, sums, nsegs, &absent);
      if (code != 0 || !absent)
        goto out;
    }
    /* Its segments were swept, or the blob a commit moved into the store
     * before it died was removed since. The declared hash alone grants
     * nothing (a terminal could name another's blob; only a commit that
     * hashed the staged bytes marks the upload verified): the upload
     * starts over, which costs little when the content is stored
     * already. */
    if (st_upload_discard(c->redis, c->terminal, up) != 0)
      NB_WARN("WK-REDIS", "cannot discard upload %s/%s: %s", c->terminal, up,
              st_redis_errstr(c->redis));
    code = wk_fail(c, 404, "upload the file again under a new upload name",
                   "the uploaded segments of \"%s\" are no longer on the "
                   "cloud's disk",
                   up);
    goto out;
  }
  if (rc == 0)
    rc = st_blobstore_stage_hash(c->blobs, c->terminal, up, u.size, whole, sums,
                                 commit_progress, c);
  if (rc == NIMBUS_ECANCELED) {
    code = wk_fail(c, 499, NULL, "blob.commit was cancelled by task.cancel");
    goto out;
  }
  if (rc == NIMBUS_ELOST) {
    code = wk_fail(c, 500, NULL, "the task's claim lapsed");
    goto out;
  }
  if (rc != 0) {
    code = wk_disk_error(c, "read the uploaded blob");
    goto out;
  }
  nb_hex(whole, 32, hex);
  if (memcmp(whole, u.sha256, 32) != 0) {
    /* The one error that changes state (PROTOCOL.md): bytes that do not
     * match their declared hash are of no use to anyone. */
    if (st_upload_discard(c->redis, c->terminal, up) != 0)
      NB_WARN("WK-REDIS", "cannot discard upload %s/%s: %s", c->terminal, up,
              st_redis_errstr(c->redis));
    if (st_blobstore_stage_drop(c->blobs, c->terminal, up) != 0)
      NB_WARN("WK-BLOB-IO", "cannot drop staging of %s/%s: %s", c->terminal, up,
              st_blobstore_errstr());
    code = wk_fail(c, 422, "upload the file again from the start",
                   "the uploaded bytes of \"%s\" have SHA-256 %s, not the "
                   "declared %s; the upload was discarded",
                   up, hex, want_hex);
    goto out;
  }
  if ((code = commit_begin(c, up, hex)) != 0)
    goto out;
  rc = st_blobstore_stage_commit(c->blobs, c->terminal, up, u.size, whole);
  if (rc != 0) {
    code = rc == NIMBUS_ENOSPC
               ? wk_storage_full(c, "move the upload into the blob store")
               : wk_disk_error(c, "move the upload into the blob store");
    goto out;
  }
  /* From here until the dispatcher records the effect, a crash leaves the
   * blob in the store and the upload verified: commit_stored. */
  wk_fault_point("blob.commit:moved", NULL);
  code = commit_record(c, up, whole, u.size, (const uint8_t(*)[ST_SEGSUM])sums,
                       nsegs);
out:
  st_blobstore_stage_unlock(c->blobs, lock);
  free(sums);
  st_upload_fini(&u);
  return code;
}

/* ---- blob.has ------------------------------------------------------------ */

static int h_blob_has(wk_ctx *c) {
  const msgpack_object *arr = NULL;
  if (sc_arg_array(c->args, "blobs", true, HAS_MAX, &arr, c->error,
                   sizeof c->error) != 0)
    return 400;
  size_t n = arr->via.array.size;
  const char **names = calloc(n > 0 ? n : 1, sizeof *names);
  char(*copies)[65] = calloc(n > 0 ? n : 1, sizeof *copies);
  int64_t *sizes = calloc(n > 0 ? n : 1, sizeof *sizes);
  int code = 0;
  if (names == NULL || copies == NULL || sizes == NULL) {
    code = wk_fail(c, 500, NULL, "the worker is out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    const msgpack_object *o = &arr->via.array.ptr[i];
    if (o->type != MSGPACK_OBJECT_STR ||
        !wk_is_blob_name(o->via.str.ptr, o->via.str.size)) {
      code = wk_fail(c, 400, NULL,
                     "args.blobs[%zu] must be a SHA-256: 64 lowercase hex "
                     "characters",
                     i);
      goto out;
    }
    memcpy(copies[i], o->via.str.ptr, 64);
    copies[i][64] = '\0';
    names[i] = copies[i];
  }
  /* Present: what this terminal may read, by the one check blob.get
   * makes, so a file it fetched through a share is not sent again. */
  if (wk_blobs_readable(c, names, n, sizes, NULL) != 0) {
    code = wk_redis_down(c);
    goto out;
  }
  size_t nmissing = 0;
  for (size_t i = 0; i < n; i++)
    nmissing += sizes[i] < 0;
  msgpack_pack_map(&c->pk, 1);
  wk_pack_str(&c->pk, "missing");
  msgpack_pack_array(&c->pk, nmissing);
  for (size_t i = 0; i < n; i++)
    if (sizes[i] < 0)
      wk_pack_str(&c->pk, names[i]);
out:
  free(sizes);
  free(copies);
  free(names);
  return code;
}

/* ---- blob.get ------------------------------------------------------------ */

static int h_blob_get(wk_ctx *c) {
  char hex[65];
  uint8_t raw[32];
  int64_t off = 0, len = 0;
  uint8_t *buf = NULL;
  uint8_t *want = NULL;
  int code = wk_arg_blob(c, "blob", hex, raw);
  if (code != 0)
    return code;
  if (sc_arg_int(c->args, "offset", true, 0, INT64_MAX, &off, c->error,
                 sizeof c->error) != 0 ||
      sc_arg_int(c->args, "length", true, 1, ST_SEGMENT, &len, c->error,
                 sizeof c->error) != 0)
    return 400;
  int64_t readable = -1;
  if ((code = wk_blob_need(c, hex, &readable, NULL)) != 0)
    return code;
  uint64_t size = (uint64_t)readable;
  if ((uint64_t)off > size)
    return wk_fail(c, 400, NULL,
                   "args.offset %lld is past the end of the %llu-byte blob",
                   (long long)off, (unsigned long long)size);
  uint64_t n = size - (uint64_t)off < (uint64_t)len ? size - (uint64_t)off
                                                    : (uint64_t)len;
  if (n > 0) {
    /* Serve only bytes whose whole segments match the sums recorded at
     * commit. */
    uint64_t s0 = (uint64_t)off / ST_SEGMENT;
    uint64_t s1 = ((uint64_t)off + n - 1) / ST_SEGMENT;
    uint64_t count = s1 - s0 + 1;
    uint64_t start = s0 * ST_SEGMENT;
    uint64_t span =
        count * ST_SEGMENT < size - start ? count * ST_SEGMENT : size - start;
    /* Aligned, and whole 4 KiB blocks, so the store can read past the
     * page cache (st_blobstore_read). */
    size_t cap = ((size_t)span + 4095) & ~(size_t)4095;
    if (posix_memalign((void **)&buf, 4096, cap) != 0)
      buf = NULL;
    want = malloc(count * ST_SEGSUM_SHA256);
    if (buf == NULL || want == NULL) {
      code = wk_fail(c, 500, NULL, "the worker is out of memory");
      goto out;
    }
    size_t width = ST_SEGSUM;
    int rc = st_blob_sums_get(c->redis, hex, s0, count, want, &width);
    if (rc == NIMBUS_EREDIS) {
      code = wk_redis_down(c);
      goto out;
    }
    size_t got = 0;
    if (rc == 0)
      rc = st_blobstore_read(c->blobs, raw, start, buf, cap, &got);
    if (rc == NIMBUS_EIO) {
      code = wk_disk_error(c, "read the blob");
      goto out;
    }
    for (uint64_t i = 0; rc == 0 && i < count; i++) {
      uint64_t a = i * ST_SEGMENT;
      uint64_t b = a + ST_SEGMENT < span ? a + ST_SEGMENT : span;
      if (got < b) {
        rc = NIMBUS_EIO;
        break;
      }
      if (!st_segsum_ok(buf + a, b - a, want + i * width, width))
        rc = NIMBUS_EIO;
    }
    if (rc != 0) {
      NB_ERROR("WK-BLOB-DAMAGED",
               "blob %s, segments %llu-%llu: missing, "
               "short or not matching the hashes recorded at commit",
               hex, (unsigned long long)s0, (unsigned long long)s1);
      code = wk_fail(c, 500,
                     "the cloud's operators must restore it; the "
                     "bytes are not handed out",
                     "blob %s is damaged on disk", hex);
      goto out;
    }
    if (wk_reply_data(c, buf + ((uint64_t)off - start), (size_t)n) != 0) {
      code = wk_fail(c, 500, NULL, "the worker is out of memory");
      goto out;
    }
  } else if (wk_reply_data(c, "", 0) != 0) {
    code = wk_fail(c, 500, NULL, "the worker is out of memory");
    goto out;
  }
  msgpack_pack_map(&c->pk, 2);
  wk_pack_kv_int(&c->pk, "size", (int64_t)size);
  wk_pack_kv_int(&c->pk, "offset", off);
out:
  free(want);
  free(buf);
  return code;
}

typedef struct blob_config {
  int64_t blob_max_bytes;
  int64_t transfer_threads;
} blob_config;

static blob_config blob_cfg;

int64_t wk_blob_max_bytes;

static const nb_opt blob_options[] = {
    {"blob_max_bytes", NB_OPT_INT, "4294967296",
     "largest blob a terminal may upload, bytes (else 413)",
     offsetof(blob_config, blob_max_bytes), 0, INT64_C(1099511627776), NULL},
    {"transfer_threads", NB_OPT_INT, "16",
     "threads of the transfer pool (blob.put, blob.get, blob.commit, "
     "backup.commit: they wait on the disk), so uploads never wait behind "
     "other work",
     offsetof(blob_config, transfer_threads), 1, 1024, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

static const wk_pool_spec blob_pools[] = {
    {.name = "transfer", .threads = &blob_cfg.transfer_threads},
    {.name = NULL},
};

static int blob_init(const wk_host_api *host, char *err, size_t errcap) {
  (void)host, (void)err, (void)errcap;
  wk_blob_max_bytes = blob_cfg.blob_max_bytes;
  return 0;
}

static int blob_limits(wk_limits *l) {
  return wk_limit_add(l, "blob_max", blob_cfg.blob_max_bytes);
}

static const wk_handler blob_handlers[] = {
    {.type = "blob.put", .flags = WK_STATEFUL, .fn = h_blob_put},
    {.type = "blob.status", .pool = "quick", .fn = h_blob_status},
    {.type = "blob.commit", .flags = WK_STATEFUL, .fn = h_blob_commit},
    {.type = "blob.has", .pool = "quick", .fn = h_blob_has},
    {.type = "blob.get", .fn = h_blob_get},
    {.type = NULL},
};

const wk_family wk_family_blob = {
    .abi = WK_FAMILY_ABI,
    .name = "blob",
    .needs = WK_NEEDS_BLOBS,
    .options = blob_options,
    .config = &blob_cfg,
    .pools = blob_pools,
    .init = blob_init,
    .limits = blob_limits,
    .handlers = blob_handlers,
};
