/* The Redis model of backups (st_backup.h): snapshot records, the
 * per-terminal index that pages them newest first, and the references they
 * hold on blobs. Key names hold only terminal ids ([A-Za-z0-9._-]),
 * snapshot ids ([0-9a-f-]) and hex, none of which holds ':'. */
#include "st_backup.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blob names per round trip of st_blobs_readable. */
#define READABLE_BATCH 1000

int st_snap_id_new(int64_t ts_ms, char out[ST_SNAP_ID_LEN + 1]) {
  uint8_t rnd[8];
  char hex[17];
  if (nb_random_bytes(rnd, sizeof rnd) != 0)
    return NIMBUS_ESYS;
  nb_hex(rnd, sizeof rnd, hex);
  long long ms = st__ms13(ts_ms);
  char buf[48];
  snprintf(buf, sizeof buf, "%013lld-%s", ms, hex);
  memcpy(out, buf, ST_SNAP_ID_LEN + 1);
  return 0;
}

/* True for exactly what st_snap_id_new makes. */
static bool snap_id_valid(const char *s) {
  if (s == NULL || strlen(s) != ST_SNAP_ID_LEN || s[13] != '-')
    return false;
  for (size_t i = 0; i < ST_SNAP_ID_LEN; i++) {
    char c = s[i];
    if (i == 13)
      continue;
    if (!((c >= '0' && c <= '9') || (i > 13 && c >= 'a' && c <= 'f')))
      return false;
  }
  return true;
}

/* ---- Which blobs a terminal may name ----------------------------------- */

/* KEYS: the access set, then each blob's metadata. ARGV: the blob names,
 * in the same order. Per name its size, or -1. */
static st_script readable_script =
    ST_SCRIPT("local out = {}\n"
              "for i, h in ipairs(ARGV) do\n"
              "  out[i] = -1\n"
              "  if redis.call('SISMEMBER', KEYS[1], h) == 1 then\n"
              "    local s = redis.call('HGET', KEYS[1 + i], 'size')\n"
              "    if s then out[i] = tonumber(s) end\n"
              "  end\n"
              "end\n"
              "return out\n");

/* Runs `script` over the names in batches (see readable_script). */
static int sizes_of(st_redis *r, st_script *script, const char *terminal,
                    const char *const *hex, size_t n, int64_t *sizes) {
  char acc[ST_KEY_CAP];
  if (st__keyf(acc, "nb:access:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  const char **argv = calloc(4 + 2 * READABLE_BATCH, sizeof *argv);
  char(*meta)[ST_KEY_CAP] = calloc(READABLE_BATCH, sizeof *meta);
  if (argv == NULL || meta == NULL) {
    free(argv);
    free(meta);
    return NIMBUS_ENOMEM;
  }
  int rc = 0;
  for (size_t done = 0; rc == 0 && done < n; done += READABLE_BATCH) {
    size_t k = n - done < READABLE_BATCH ? n - done : READABLE_BATCH;
    argv[3] = acc;
    for (size_t i = 0; rc == 0 && i < k; i++) {
      rc = st__keyf(meta[i], "nb:blob:%.64s", hex[done + i]);
      argv[4 + i] = meta[i];
      argv[4 + k + i] = hex[done + i];
    }
    if (rc != 0)
      break;
    redisReply *rep =
        st__eval(r, script, (int)(1 + k), (int)(4 + 2 * k), argv, NULL);
    if (rep == NULL) {
      rc = NIMBUS_EREDIS;
      break;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != k) {
      rc = st__fail(r, rep, "unexpected answer checking blobs");
    } else {
      for (size_t i = 0; i < k; i++)
        sizes[done + i] = rep->element[i]->type == REDIS_REPLY_INTEGER
                              ? (int64_t)rep->element[i]->integer
                              : -1;
    }
    freeReplyObject(rep);
  }
  free(argv);
  free(meta);
  return rc;
}

int st_blobs_readable(st_redis *r, const char *terminal, const char *const *hex,
                      size_t n, int64_t *sizes) {
  return sizes_of(r, &readable_script, terminal, hex, n, sizes);
}

/* ---- Commit and delete --------------------------------------------------- */

static int add_refs(st_txn *t, const uint8_t (*blobs)[32], size_t n,
                    const char *delta, bool require) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char hex[65], meta[ST_KEY_CAP];
    nb_hex(blobs[i], 32, hex);
    snprintf(meta, sizeof meta, "nb:blob:%s", hex);
    if (require)
      rc = st_txn_require(t, meta);
    /* A release never makes metadata a restored Redis lost. */
    const char *argv[4] = {require ? "HINCRBY" : "NB-HINCRBYX", meta, "refs",
                           delta};
    if (rc == 0)
      rc = st_txn_add(t, 4, argv, NULL);
  }
  return rc;
}

int st_snap_commit_effect(st_txn *t, const char *terminal,
                          const st_snap_new *s) {
  char rec[ST_KEY_CAP], idx[ST_KEY_CAP], ts[24], items[24], bytes[24];
  if (st__keyf(rec, "nb:snap:%s:%s", terminal, s->id) != 0 ||
      st__keyf(idx, "nb:snaps:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  snprintf(ts, sizeof ts, "%lld", (long long)s->ts);
  snprintf(items, sizeof items, "%llu", (unsigned long long)s->items);
  snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)s->bytes);
  const char *label = s->label != NULL ? s->label : "";
  const char *argv[14] = {"HSET",
                          rec,
                          "ts",
                          ts,
                          "items",
                          items,
                          "bytes",
                          bytes,
                          "label",
                          label,
                          s->list != NULL ? "list" : "manifest",
                          s->list != NULL ? (const char *)s->list : s->manifest,
                          "blobs",
                          (const char *)s->blobs};
  size_t lens[14] = {4,
                     strlen(rec),
                     2,
                     strlen(ts),
                     5,
                     strlen(items),
                     5,
                     strlen(bytes),
                     5,
                     strlen(label),
                     s->list != NULL ? 4 : 8,
                     s->list != NULL ? s->list_len : strlen(s->manifest),
                     5,
                     s->nblobs * 32};
  const char *zadd[4] = {"ZADD", idx, "0", s->id};
  int rc = add_refs(t, s->blobs, s->nblobs, "1", true);
  if (rc == 0)
    rc = st_txn_add(t, 14, argv, lens);
  if (rc == 0)
    rc = st_txn_add(t, 4, zadd, NULL);
  return rc;
}

int st_snap_delete_effect(st_txn *t, const char *terminal,
                          const st_snapshot *s) {
  char rec[ST_KEY_CAP], idx[ST_KEY_CAP];
  if (st__keyf(rec, "nb:snap:%s:%s", terminal, s->info.id) != 0 ||
      st__keyf(idx, "nb:snaps:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  const char *del[2] = {"DEL", rec};
  const char *zrem[3] = {"ZREM", idx, s->info.id};
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)nb_now_ms());
  int rc = st_txn_require(t, rec);
  if (rc == 0)
    rc = add_refs(t, (const uint8_t(*)[32])s->blobs, s->nblobs, "-1", false);
  /* Each released blob becomes a candidate of the collector, which keeps
   * it while anything else still refers to it. */
  for (size_t i = 0; rc == 0 && i < s->nblobs; i++) {
    char hex[65];
    nb_hex(s->blobs[i], 32, hex);
    const char *zadd[5] = {"ZADD", "nb:gc", "GT", now, hex};
    rc = st_txn_add(t, 5, zadd, NULL);
  }
  if (rc == 0)
    rc = st_txn_add(t, 2, del, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, zrem, NULL);
  return rc;
}

/* ---- Reading ------------------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const redisReply *e) {
  dst[0] = '\0';
  if (e->type == REDIS_REPLY_STRING) {
    size_t n = e->len < cap - 1 ? e->len : cap - 1;
    memcpy(dst, e->str, n);
    dst[n] = '\0';
  }
}

static long long num_of(const redisReply *e) {
  return e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
}

static const char *const snap_fields[7] = {"ts",   "items",    "bytes", "label",
                                           "list", "manifest", "blobs"};

/* The id of the newest snapshot in index `idx` into id[]; "" when none. */
static int newest_id(st_redis *r, const char *idx,
                     char id[ST_SNAP_ID_LEN + 1]) {
  const char *argv[7] = {"ZREVRANGEBYLEX", idx, "+", "-", "LIMIT", "0", "1"};
  redisReply *rep = st__cmd(r, 7, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  id[0] = '\0';
  if (rep->type != REDIS_REPLY_ARRAY)
    rc = st__fail(r, rep, "unexpected answer finding the newest snapshot");
  else if (rep->elements > 0)
    copy_str(id, ST_SNAP_ID_LEN + 1, rep->element[0]);
  freeReplyObject(rep);
  return rc;
}

int st_snap_get(st_redis *r, const char *terminal, const char *id,
                st_snapshot *out) {
  char idx[ST_KEY_CAP], rec[ST_KEY_CAP], want[ST_SNAP_ID_LEN + 1];
  memset(out, 0, sizeof *out);
  if (id != NULL && !snap_id_valid(id))
    return 0;
  if (st__keyf(idx, "nb:snaps:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  redisReply *rep = NULL;
  int rc = 0;
  /* The newest is looked up first, then read: a deletion in between (the
   * record gone) makes it look again, at the one after. */
  for (int tries = 0; tries < 5; tries++) {
    if (id != NULL) {
      memcpy(want, id, ST_SNAP_ID_LEN + 1);
    } else {
      if ((rc = newest_id(r, idx, want)) != 0)
        return rc;
      if (!snap_id_valid(want))
        return 0;
    }
    if (st__keyf(rec, "nb:snap:%s:%s", terminal, want) != 0)
      return NIMBUS_EINVAL;
    const char *argv[9] = {"HMGET", rec};
    memcpy(argv + 2, snap_fields, sizeof snap_fields);
    rep = st__cmd(r, 9, argv, NULL);
    if (rep == NULL)
      return NIMBUS_EREDIS;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 7) {
      rc = st__fail(r, rep, "unexpected answer reading a snapshot");
      goto out;
    }
    if (rep->element[0]->type == REDIS_REPLY_STRING)
      break;
    freeReplyObject(rep);
    rep = NULL;
    if (id != NULL)
      return 0;
  }
  if (rep == NULL)
    return 0;
  redisReply **e = rep->element;
  out->exists = true;
  memcpy(out->info.id, want, ST_SNAP_ID_LEN + 1);
  out->info.ts = num_of(e[0]);
  out->info.items = (uint64_t)num_of(e[1]);
  out->info.bytes = (uint64_t)num_of(e[2]);
  copy_str(out->info.label, sizeof out->info.label, e[3]);
  if (e[4]->type == REDIS_REPLY_STRING) {
    out->list = malloc(e[4]->len > 0 ? e[4]->len : 1);
    if (out->list == NULL) {
      rc = NIMBUS_ENOMEM;
      goto out;
    }
    memcpy(out->list, e[4]->str, e[4]->len);
    out->list_len = e[4]->len;
  }
  copy_str(out->manifest, sizeof out->manifest, e[5]);
  if (e[6]->type == REDIS_REPLY_STRING && e[6]->len >= 32) {
    out->nblobs = e[6]->len / 32;
    out->blobs = malloc(out->nblobs * 32);
    if (out->blobs == NULL) {
      out->nblobs = 0;
      rc = NIMBUS_ENOMEM;
      goto out;
    }
    memcpy(out->blobs, e[6]->str, out->nblobs * 32);
  }
out:
  freeReplyObject(rep);
  return rc;
}

void st_snapshot_fini(st_snapshot *s) {
  free(s->list);
  free(s->blobs);
  s->list = NULL;
  s->blobs = NULL;
  s->list_len = s->nblobs = 0;
}

/* KEYS: snapshot records. Returns ts, items, bytes, label for each ('' for
 * a field that is not there; no ts: the snapshot was deleted). */
static st_script list_script = ST_SCRIPT(
    "local out = {}\n"
    "for _, k in ipairs(KEYS) do\n"
    "  local h = redis.call('HMGET', k, 'ts', 'items', 'bytes', 'label')\n"
    "  for j = 1, 4 do out[#out + 1] = h[j] or '' end\n"
    "end\n"
    "return out\n");

int st_snap_list(st_redis *r, const char *terminal, const char *cursor,
                 size_t limit, st_snap_info *out, size_t *n, bool *more) {
  char idx[ST_KEY_CAP], max[ST_SNAP_ID_LEN + 2], count[24];
  *n = 0;
  *more = false;
  if (limit == 0 || limit > 1000)
    return NIMBUS_EINVAL;
  if (st__keyf(idx, "nb:snaps:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  if (cursor != NULL && cursor[0] != '\0') {
    /* Any cursor orders somewhere; one that is no id simply starts there. */
    snprintf(max, sizeof max, "(%.*s", ST_SNAP_ID_LEN, cursor);
  } else {
    snprintf(max, sizeof max, "+");
  }
  snprintf(count, sizeof count, "%zu", limit + 1);
  /* The page's ids, then their records (the keys of the second call come
   * from the first, so both cannot be one script): a snapshot deleted in
   * between is left out. */
  const char *zargv[7] = {"ZREVRANGEBYLEX", idx, max, "-", "LIMIT", "0", count};
  redisReply *ids = st__cmd(r, 7, zargv, NULL);
  if (ids == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  redisReply *rep = NULL;
  const char **argv = NULL;
  char(*recs)[ST_KEY_CAP] = NULL;
  if (ids->type != REDIS_REPLY_ARRAY) {
    rc = st__fail(r, ids, "unexpected answer listing snapshots");
    goto out;
  }
  *more = ids->elements > limit;
  size_t k = ids->elements > limit ? limit : ids->elements;
  if (k == 0)
    goto out;
  argv = calloc(3 + k, sizeof *argv);
  recs = calloc(k, sizeof *recs);
  if (argv == NULL || recs == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < k; i++) {
    const redisReply *e = ids->element[i];
    if (st__keyf(recs[i], "nb:snap:%s:%s", terminal,
                 e->type == REDIS_REPLY_STRING ? e->str : "") != 0) {
      rc = NIMBUS_EINVAL;
      goto out;
    }
    argv[3 + i] = recs[i];
  }
  rep = st__eval(r, &list_script, (int)k, (int)(3 + k), argv, NULL);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
    goto out;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 * k) {
    rc = st__fail(r, rep, "unexpected answer listing snapshots");
    goto out;
  }
  for (size_t i = 0; i < k; i++) {
    redisReply **e = rep->element + 4 * i;
    if (e[0]->type != REDIS_REPLY_STRING || e[0]->len == 0)
      continue; /* deleted meanwhile */
    st_snap_info *o = &out[(*n)++];
    copy_str(o->id, sizeof o->id, ids->element[i]);
    o->ts = num_of(e[0]);
    o->items = (uint64_t)num_of(e[1]);
    o->bytes = (uint64_t)num_of(e[2]);
    copy_str(o->label, sizeof o->label, e[3]);
  }
out:
  freeReplyObject(rep);
  freeReplyObject(ids);
  free(argv);
  free(recs);
  return rc;
}
