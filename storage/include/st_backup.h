/* Backups (PROTOCOL.md, "Backup and restore"): snapshots per terminal in
 * Redis, and the reference counts that keep the blobs they name alive.
 *
 * A snapshot is a record of its time, label, item count and bytes, plus
 * either the item list itself (the msgpack array the terminal sent inline)
 * or the name of the manifest blob that holds it, and the distinct blobs it
 * refers to (manifest included), each counted once in that blob's `refs`.
 * Snapshots of a terminal are indexed by id in one sorted set whose members
 * all have score 0, so ids sort by bytes: an id starts with its time in
 * milliseconds, zero-padded to 13 digits, which makes "newest first" a
 * reverse lexical range and a page cursor simply the last id seen.
 *
 * Keys (prefix nb:):
 *   nb:snaps:<terminal>       sorted set of snapshot ids (score 0)
 *   nb:snap:<terminal>:<id>   hash {ts, items, bytes, label, list | manifest,
 *                             blobs (32-byte hashes, concatenated)}
 *   nb:blob:<hex>             hash field refs: snapshots (later shares,
 *                             results) referring to the blob
 *
 * Changes are appended to an st_txn and applied by the dispatcher with the
 * task's recorded reply (st.h); reads are direct. Every function returns 0
 * or a nimbus_err: NIMBUS_EREDIS with the reason in st_redis_errstr,
 * NIMBUS_ENOMEM, NIMBUS_EINVAL for a key that would not fit. */
#ifndef ST_BACKUP_H
#define ST_BACKUP_H

#include "st.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Snapshot ids: 13 digits of ms, '-', 16 hex digits. */
#define ST_SNAP_ID_LEN 30
/* Longest label kept (bytes). */
#define ST_LABEL_MAX 255

/* Makes a new snapshot id for time ts_ms into out[ST_SNAP_ID_LEN + 1].
 * Returns 0 or NIMBUS_ESYS (no randomness). */
int st_snap_id_new(int64_t ts_ms, char out[ST_SNAP_ID_LEN + 1]);

/* For each of the `n` blob names (64-char hex, borrowed) in `hex`, sets
 * sizes[i] (caller storage) to the blob's size when it exists and
 * `terminal` may read it, else to -1. One round trip per 1,000 names. */
int st_blobs_readable(st_redis *r, const char *terminal, const char *const *hex,
                      size_t n, int64_t *sizes);

/* What a new snapshot holds; everything borrowed. Exactly one of list
 * (the packed items array) and manifest (hex) is set. */
typedef struct st_snap_new {
  const char *id;
  int64_t ts;
  uint64_t items, bytes;
  const char *label; /* "" or NULL: none */
  const uint8_t *list;
  size_t list_len;
  const char *manifest;
  const uint8_t (*blobs)[32]; /* distinct, manifest included */
  size_t nblobs;
} st_snap_new;

/* Appends to `t` the commit of snapshot `s` of `terminal`: the record, its
 * index entry and one more reference on each blob, the whole effect
 * required to find every blob's metadata still there (st_txn_require), so
 * a blob collected meanwhile makes the commit fail rather than refer to
 * nothing. */
int st_snap_commit_effect(st_txn *t, const char *terminal,
                          const st_snap_new *s);

/* A snapshot's summary, as backup.list shows it. */
typedef struct st_snap_info {
  char id[ST_SNAP_ID_LEN + 1];
  int64_t ts;
  uint64_t items, bytes;
  char label[ST_LABEL_MAX + 1];
} st_snap_info;

/* A whole snapshot record. */
typedef struct st_snapshot {
  bool exists;
  st_snap_info info;
  uint8_t *list; /* owned: the packed items array, or NULL */
  size_t list_len;
  char manifest[65];    /* hex, or "" */
  uint8_t (*blobs)[32]; /* owned: distinct blobs referred to */
  size_t nblobs;
} st_snapshot;

/* Reads snapshot `id` of `terminal` (NULL: its newest) into *out (caller
 * storage; release with st_snapshot_fini even on error). out->exists is
 * false when there is none. `id` must be a valid id or NULL (anything else
 * simply does not exist). */
int st_snap_get(st_redis *r, const char *terminal, const char *id,
                st_snapshot *out);
/* Frees what st_snap_get allocated; safe on a zeroed struct. */
void st_snapshot_fini(st_snapshot *s);

/* Lists up to `limit` (1-1000) snapshots of `terminal`, newest first,
 * starting after `cursor` (an id, or NULL/"" for the newest) into out[]
 * (caller storage, `limit` entries); *n is the count and *more whether
 * older ones follow. One round trip. */
int st_snap_list(st_redis *r, const char *terminal, const char *cursor,
                 size_t limit, st_snap_info *out, size_t *n, bool *more);

/* Appends to `t` the deletion of snapshot `s` of `terminal` (as read by
 * st_snap_get): the record, its index entry and its references on its
 * blobs, required to find the record still there, so that two deletions
 * racing each other release the references once. */
int st_snap_delete_effect(st_txn *t, const char *terminal,
                          const st_snapshot *s);

#endif
