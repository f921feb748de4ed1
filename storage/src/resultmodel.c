/* The Redis model of offload results (st_result.h): the result cache's
 * entries, each holding one reference on its output blob until it
 * expires, the grants that let a terminal read a result's blob, and the
 * janitor's sweep of expired entries.
 *
 * An entry's expiry lives only in the zset nb:result:expiry, pushed with
 * ZADD GT (never pulled back), so concurrent uses from several workers
 * agree on the latest without a read-modify-write. The sweep checks the
 * score again inside its script, so an entry used between the listing and
 * the drop is kept. */
#include "st_result.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPIRY "nb:result:expiry"

void st_result_fini(st_result *r) {
  if (r == NULL)
    return;
  free(r->props);
  r->props = NULL;
  r->props_len = 0;
}

/* Fills *out from the answer {blob, size, props} of an entry (strings or
 * nils). */
static int fill(st_redis *r, const redisReply *blob, const redisReply *size,
                const redisReply *props, const char *key, st_result *out) {
  if (blob->type != REDIS_REPLY_STRING || blob->len != 64 ||
      size->type != REDIS_REPLY_STRING)
    return 0; /* absent (or not one of ours): a miss */
  memcpy(out->blob, blob->str, 64);
  out->blob[64] = '\0';
  if (!nb_is_sha256_hex(out->blob))
    return 0;
  out->size = strtoull(size->str, NULL, 10);
  if (props->type == REDIS_REPLY_STRING && props->len > 0) {
    out->props = malloc(props->len);
    if (out->props == NULL)
      return NIMBUS_ENOMEM;
    memcpy(out->props, props->str, props->len);
    out->props_len = props->len;
  }
  memcpy(out->key, key, 64);
  out->key[64] = '\0';
  out->exists = true;
  (void)r;
  return 0;
}

int st_result_get(st_redis *r, const char *key, st_result *out) {
  char ek[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (!nb_is_sha256_hex(key) || st__keyf(ek, "nb:rcache:%s", key) != 0)
    return NIMBUS_EINVAL;
  const char *argv[5] = {"HMGET", ek, "blob", "size", "props"};
  redisReply *rep = st__cmd(r, 5, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3)
    rc = st__fail(r, rep, "unexpected answer reading a result");
  else
    rc = fill(r, rep->element[0], rep->element[1], rep->element[2], key, out);
  freeReplyObject(rep);
  if (rc != 0 || !out->exists)
    return rc;
  /* The entry holds its blob; metadata missing means a Redis restored
   * from an older state: a miss, computed again. */
  bool exists = false;
  uint64_t size = 0;
  if ((rc = st_blob_meta_get(r, out->blob, &exists, &size)) != 0 || !exists) {
    st_result_fini(out);
    memset(out, 0, sizeof *out);
  }
  return rc;
}

/* KEYS: entry, blob metadata, blob sums, tombstone, commit mark, nb:gc,
 * expiry. ARGV: key hex, blob hex, size, sums, props, expires_at, now.
 * Returns {0} for a new entry, {1, blob, size, props} for an existing
 * one (its expiry pushed), {2} when the blob is being collected. */
/* clang-format off */
static st_script put_script = ST_SCRIPT(
    "local h = redis.call('HMGET', KEYS[1], 'blob', 'size', 'props')\n"
    "if h[1] then\n"
    "  redis.call('ZADD', KEYS[7], 'GT', ARGV[6], ARGV[1])\n"
    "  redis.call('DEL', KEYS[5])\n"
    "  return {1, h[1], h[2], h[3]}\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[4]) == 1 then return {2} end\n"
    ST_LUA_BLOB_META(2, 3, 3, 4)
    "redis.call('HINCRBY', KEYS[2], 'refs', 1)\n"
    "redis.call('ZADD', KEYS[6], 'GT', ARGV[7], ARGV[2])\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], 'blob', ARGV[2], 'size', ARGV[3],"
    " 'props', ARGV[5])\n"
    "redis.call('ZADD', KEYS[7], 'GT', ARGV[6], ARGV[1])\n"
    "redis.call('DEL', KEYS[5])\n"
    "return {0}\n");
/* clang-format on */

int st_result_put(st_redis *r, const char *key, const char *hex, uint64_t size,
                  const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs,
                  const void *props, size_t props_len, int64_t expires_at,
                  st_result *out) {
  char ek[ST_KEY_CAP], num[24], exp[24], now[24];
  st__blob_keys bk;
  memset(out, 0, sizeof *out);
  if (!nb_is_sha256_hex(key) || st__keyf(ek, "nb:rcache:%s", key) != 0 ||
      st__blob_keys_of(&bk, hex) != 0)
    return NIMBUS_EINVAL;
  snprintf(num, sizeof num, "%llu", (unsigned long long)size);
  snprintf(exp, sizeof exp, "%lld", (long long)expires_at);
  snprintf(now, sizeof now, "%lld", (long long)nb_now_ms());
  const char *argv[17] = {NULL,
                          NULL,
                          NULL,
                          ek,
                          bk.meta,
                          bk.sums,
                          bk.gone,
                          bk.mark,
                          "nb:gc",
                          EXPIRY,
                          key,
                          hex,
                          num,
                          (const char *)sums,
                          props != NULL ? (const char *)props : "",
                          exp,
                          now};
  /* argv[13] (the sums) and argv[14] (props) are bytes, not strings: no
   * strlen, which would read past their end. */
  size_t lens[17];
  /* argv[13] and [14] are bytes, not strings. */
  for (int i = 0; i < 17; i++)
    lens[i] = argv[i] != NULL && i != 13 && i != 14 ? strlen(argv[i]) : 0;
  lens[13] = (size_t)nsegs * ST_SEGSUM;
  lens[14] = props != NULL ? props_len : 0;
  redisReply *rep = st__eval(r, &put_script, 7, 17, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER) {
    rc = st__fail(r, rep, "unexpected answer recording a result");
  } else if (rep->element[0]->integer == 2) {
    rc = NIMBUS_ECONFLICT;
  } else if (rep->element[0]->integer == 1 && rep->elements == 4) {
    rc = fill(r, rep->element[1], rep->element[2], rep->element[3], key, out);
    if (rc == 0 && !out->exists)
      rc = st__fail(r, rep, "unexpected answer recording a result");
  } else {
    memcpy(out->key, key, 64);
    memcpy(out->blob, hex, 64);
    out->size = size;
    if (props_len > 0) {
      if ((out->props = malloc(props_len)) == NULL) {
        rc = NIMBUS_ENOMEM;
      } else {
        memcpy(out->props, props, props_len);
        out->props_len = props_len;
      }
    }
    out->exists = rc == 0;
  }
  freeReplyObject(rep);
  return rc;
}

int st_result_grant_effect(st_txn *t, const char *terminal, const char *key,
                           const char *hex, int64_t expires_at,
                           int64_t now_ms) {
  char ek[ST_KEY_CAP], gk[ST_KEY_CAP], exp[24], now[24];
  if (!nb_is_sha256_hex(key) || st__keyf(ek, "nb:rcache:%s", key) != 0 ||
      st__keyf(gk, ST_RGRANT_FMT, terminal) != 0)
    return NIMBUS_EINVAL;
  snprintf(exp, sizeof exp, "%lld", (long long)expires_at);
  snprintf(now, sizeof now, "(%lld", (long long)now_ms);
  const char *trim[4] = {"ZREMRANGEBYSCORE", gk, "-inf", now};
  const char *grant[5] = {"ZADD", gk, "GT", exp, hex};
  const char *keep[5] = {"ZADD", EXPIRY, "GT", exp, key};
  /* The entry, and still naming this blob: one swept and made again
   * meanwhile (another output, if a module's is not the same bytes
   * every time) holds no reference on the blob granted. */
  int rc = st_txn_require(t, ek);
  if (rc == 0)
    rc = st_txn_pin_field(t, ek, "blob", hex, 64);
  if (rc == 0)
    rc = st_txn_add(t, 4, trim, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 5, grant, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 5, keep, NULL);
  return rc;
}

/* KEYS: expiry, entry, nb:gc, the blob's metadata as read before.
 * ARGV: key hex, now, blob hex as read before. 1 when dropped, -1 when
 * the entry names another blob now (read it again). An entry's blob does
 * not change while it lives, so -1 only follows a drop and a new put. */
static st_script sweep_script =
    ST_SCRIPT("local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
              "if s and tonumber(s) > tonumber(ARGV[2]) then return 0 end\n"
              "local b = redis.call('HGET', KEYS[2], 'blob')\n"
              "if b and b ~= ARGV[3] then return -1 end\n"
              "redis.call('ZREM', KEYS[1], ARGV[1])\n"
              "redis.call('DEL', KEYS[2])\n"
              "if not b then return 0 end\n"
              "if redis.call('EXISTS', KEYS[4]) == 1 then\n"
              "  redis.call('HINCRBY', KEYS[4], 'refs', -1)\n"
              "  redis.call('ZADD', KEYS[3], 'GT', ARGV[2], b)\n"
              "end\n"
              "return 1\n");

/* Drops the entry `key` if it has expired; *done says whether it went. */
static int sweep_one(st_redis *r, const char *key, const char *now,
                     bool *done) {
  char ek[ST_KEY_CAP], meta[ST_KEY_CAP], blob[65] = "";
  *done = false;
  if (st__keyf(ek, "nb:rcache:%s", key) != 0)
    return NIMBUS_EINVAL;
  for (int tries = 0; tries < 3; tries++) {
    const char *hget[3] = {"HGET", ek, "blob"};
    redisReply *b = st__cmd(r, 3, hget, NULL);
    if (b == NULL)
      return NIMBUS_EREDIS;
    blob[0] = '\0';
    if (b->type == REDIS_REPLY_STRING && b->len == 64) {
      memcpy(blob, b->str, 64);
      blob[64] = '\0';
    }
    freeReplyObject(b);
    /* An entry without a blob of ours still goes; its meta key is then a
     * harmless name that does not exist. */
    if (st__keyf(meta, "nb:blob:%s", nb_is_sha256_hex(blob) ? blob : "-") != 0)
      return NIMBUS_EINVAL;
    const char *argv[10] = {NULL,    NULL, NULL, EXPIRY, ek,
                            "nb:gc", meta, key,  now,    blob};
    redisReply *one = st__eval(r, &sweep_script, 4, 10, argv, NULL);
    if (one == NULL)
      return NIMBUS_EREDIS;
    int rc = 0;
    long long v = one->type == REDIS_REPLY_INTEGER ? one->integer : 0;
    if (one->type != REDIS_REPLY_INTEGER)
      rc = st__fail(r, one, "unexpected answer dropping a result");
    freeReplyObject(one);
    if (rc != 0 || v != -1) {
      *done = v == 1;
      return rc;
    }
  }
  return 0;
}

int st_result_sweep(st_redis *r, int64_t now_ms, size_t max, size_t *released) {
  char now[24];
  if (released != NULL)
    *released = 0;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  redisReply *rep = NULL;
  int rc = st__due(r, EXPIRY, now_ms, max, "expired results", &rep);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < rep->elements && rc == 0; i++) {
    const redisReply *e = rep->element[i];
    char key[65];
    if (e->type != REDIS_REPLY_STRING || e->len != 64)
      continue;
    memcpy(key, e->str, 64);
    key[64] = '\0';
    if (!nb_is_sha256_hex(key))
      continue;
    bool done = false;
    rc = sweep_one(r, key, now, &done);
    if (done && released != NULL)
      (*released)++;
  }
  freeReplyObject(rep);
  return rc;
}
