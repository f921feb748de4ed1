/* Offload results (PROTOCOL.md, Compute offload; MISSION.md: processed
 * results are kept for a preset time, then deleted): the Redis model of
 * the result cache and of who may read a result's blob.
 *
 * A result is one entry of the cache, keyed by the SHA-256 of what the
 * output depends on (the module and its version, the input's hash, the
 * canonical arguments: the worker computes it). The entry names the
 * output blob, holds one reference on it (the blob's `refs`, as a
 * snapshot or a share does) and lives until its expiry, which every use
 * of the entry pushes to at least result_ttl from then. A terminal whose
 * task produced or reused the entry may read the blob until the expiry it
 * was granted (nb:rgrant:<terminal>), checked on every blob.get. Once an
 * entry has expired, the janitor's sweep drops it and its reference, and
 * the blob collector frees the blob when nothing else refers to it.
 *
 * Keys:
 *   nb:rcache:<key hex>   hash {blob, size, props (the module's packed
 *                         properties of the output)}
 *   nb:result:expiry      zset, member <key hex>, score: expiry (ms)
 *   nb:rgrant:<terminal>  zset, member <blob hex>, score: until when the
 *                         terminal may read it (ms)
 *
 * Every function returns 0 or a nimbus_err: NIMBUS_EREDIS with the reason
 * in st_redis_errstr, NIMBUS_EINVAL for a malformed argument,
 * NIMBUS_ENOMEM. */
#ifndef ST_RESULT_H
#define ST_RESULT_H

#include "st.h"
#include "st_blob.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_result {
  bool exists;
  char key[65];  /* the entry's key, hex */
  char blob[65]; /* the output blob, hex */
  uint64_t size;
  uint8_t *props; /* owned (st_result_fini); props_len bytes */
  size_t props_len;
} st_result;

/* Frees what `r` owns; a zeroed one is fine. */
void st_result_fini(st_result *r);

/* Reads the entry of `key` (64 hex, borrowed) into *out (caller storage,
 * st_result_fini afterwards); out->exists false when there is none. An
 * entry whose blob was collected meanwhile (it cannot be while the entry
 * holds it, but a Redis restored from an old dump may say otherwise) is
 * reported absent. */
int st_result_get(st_redis *r, const char *key, st_result *out);

/* Records the entry `key` for the output blob `hex` of `size` bytes, whose
 * file the store already holds (moved there after st_blob_commit_begin
 * marked it): the blob's metadata and segment sums (`sums`, `nsegs`
 * entries) when it has none yet, one reference on it, the module's
 * properties (props, props_len bytes, borrowed), and an expiry of at least
 * expires_at. The commit mark of the blob is ended. The first entry
 * recorded under a key wins: when one exists already, its expiry is
 * pushed and *out (caller storage, st_result_fini afterwards) receives it;
 * otherwise *out is the new entry. Returns 0, NIMBUS_ECONFLICT when the
 * blob is being collected (its tombstone: try again later), or
 * NIMBUS_EREDIS. */
int st_result_put(st_redis *r, const char *key, const char *hex, uint64_t size,
                  const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs,
                  const void *props, size_t props_len, int64_t expires_at,
                  st_result *out);

/* Appends to task effect `t`: `terminal` may read the entry's blob until
 * expires_at, and the entry `key` lives at least that long; the effect
 * requires the entry to exist still and to name blob `hex`
 * (st_txn_require, st_txn_pin_field), so a grant never outlives the
 * reference that keeps the blob. Grants that ended before
 * now_ms are dropped on the way. */
int st_result_grant_effect(st_txn *t, const char *terminal, const char *key,
                           const char *hex, int64_t expires_at, int64_t now_ms);

/* The janitor's sweep: drops up to `max` entries whose expiry is at or
 * before now_ms, each with its reference on its blob (the blob becomes a
 * candidate of the collector), and sets *released (may be NULL) to their
 * count. An entry used again since it was listed is kept. */
int st_result_sweep(st_redis *r, int64_t now_ms, size_t max, size_t *released);

#endif
