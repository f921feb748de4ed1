/* The Redis model of blobs (st_blob.h): upload records and their bitmaps
 * of received segments, blob metadata with the per-segment hashes taken
 * at commit, and the set of blobs each terminal may read.
 *
 * Changes that belong to a task's effect (a segment arrived, a commit) are
 * only appended to an st_txn here; the dispatcher applies them with the
 * recorded reply in one script (redis.c), so they happen exactly once per
 * task id. Reads and the one direct change (discarding an upload after a
 * 422) are plain commands. Key names hold only terminal ids
 * ([A-Za-z0-9._-]), upload names ([A-Za-z0-9_-]) and hex, none of which
 * holds ':', so no two keys can collide. */
#include "st_blob.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int upload_keys(char *rec, char *bits, const char *terminal,
                       const char *upload) {
  int n = snprintf(rec, ST_KEY_CAP, "nb:upload:%s:%s", terminal, upload);
  if (n < 0 || n >= ST_KEY_CAP)
    return NIMBUS_EINVAL;
  n = snprintf(bits, ST_KEY_CAP, "nb:upload:%s:%s:bits", terminal, upload);
  return n > 0 && n < ST_KEY_CAP ? 0 : NIMBUS_EINVAL;
}

static unsigned long long parse_u64(const char *s) {
  return s != NULL ? strtoull(s, NULL, 10) : 0;
}

/* The record and its segment bitmap in one script, so a commit cannot land
 * between the two reads (it deletes the bitmap). */
static st_script upload_get_script =
    ST_SCRIPT("return {redis.call('HMGET', KEYS[1], 'size', 'sha256', 'blob', "
              "'staged', 'verified'), "
              "redis.call('GET', KEYS[2])}");

int st_upload_get(st_redis *r, const char *terminal, const char *upload,
                  st_upload *out) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  const char *argv[5] = {NULL, NULL, NULL, rec, bits};
  redisReply *rep = st__eval(r, &upload_get_script, 2, 5, argv, NULL);
  int rc = 0;
  if (rep == NULL)
    return NIMBUS_EREDIS;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_ARRAY ||
      rep->element[0]->elements != 5) {
    rc = st__fail(r, rep, "unexpected answer reading an upload");
    goto out;
  }
  redisReply **e = rep->element[0]->element;
  redisReply *b = rep->element[1];
  if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING ||
      e[1]->len != 32)
    goto out; /* unknown (or expired) */
  out->exists = true;
  out->size = parse_u64(e[0]->str);
  memcpy(out->sha256, e[1]->str, 32);
  out->staged = e[3]->type == REDIS_REPLY_STRING;
  if (e[4]->type == REDIS_REPLY_STRING && e[4]->len == 64) {
    char want[65];
    nb_hex(out->sha256, 32, want);
    out->verified = memcmp(e[4]->str, want, 64) == 0;
  }
  if (e[2]->type == REDIS_REPLY_STRING && e[2]->len == 64) {
    out->committed = true;
    memcpy(out->blob, e[2]->str, 64);
    out->blob[64] = '\0';
  }
  if (b->type == REDIS_REPLY_STRING && b->len > 0) {
    out->bits = malloc(b->len);
    if (out->bits == NULL) {
      rc = NIMBUS_ENOMEM;
      goto out;
    }
    memcpy(out->bits, b->str, b->len);
    out->bits_len = b->len;
  }
out:
  freeReplyObject(rep);
  return rc;
}

void st_upload_fini(st_upload *u) {
  free(u->bits);
  u->bits = NULL;
  u->bits_len = 0;
}

/* Redis numbers bits from the most significant bit of the first byte. */
bool st_upload_has_seg(const st_upload *u, uint64_t i) {
  if (u->committed)
    return true;
  if (i / 8 >= u->bits_len)
    return false;
  return (u->bits[i / 8] >> (7 - i % 8)) & 1;
}

#define RESERVE_AHEAD ((uint64_t)64 * ST_SEGMENT)

uint64_t st_upload_reserve_end(const st_upload *u) {
  if (u->committed || u->size <= ST_SEGMENT)
    return 0;
  uint64_t n = st_blob_nsegs(u->size), run = 0;
  size_t i = 0;
  while (i < u->bits_len && u->bits[i] == 0xff && (uint64_t)(i + 1) * 8 <= n)
    i++;
  run = (uint64_t)i * 8;
  while (run < n && st_upload_has_seg(u, run))
    run++;
  uint64_t have = st_upload_have(u);
  uint64_t ahead = have < RESERVE_AHEAD ? have : RESERVE_AHEAD;
  uint64_t start = run * ST_SEGMENT < u->size ? run * ST_SEGMENT : u->size;
  return u->size - start < ahead ? u->size : start + ahead;
}

/* Every put answers with this, so it counts bits a byte at a time rather
 * than segment by segment (a 4 GiB upload has 16,384 segments). */
uint64_t st_upload_have(const st_upload *u) {
  uint64_t n = st_blob_nsegs(u->size);
  if (n == 0)
    return 0;
  if (u->committed)
    return u->size;
  uint64_t full = n / 8, segs = 0;
  size_t nb = u->bits_len < full ? u->bits_len : (size_t)full;
  for (size_t i = 0; i < nb; i++)
    segs += (uint64_t)__builtin_popcount(u->bits[i]);
  for (uint64_t i = full * 8; i < n; i++)
    segs += st_upload_has_seg(u, i);
  /* Only the last segment may be short. */
  uint64_t have = segs * ST_SEGMENT;
  if (st_upload_has_seg(u, n - 1))
    have -= n * ST_SEGMENT - u->size;
  return have;
}

/* KEYS: rec. ARGV: size, sha256, ttl_ms. 1 when the record now says this
 * size and hash (made here or before), 0 when it says others. */
static st_script reserve_script = ST_SCRIPT(
    "local s = redis.call('HMGET', KEYS[1], 'size', 'sha256')\n"
    "if not s[1] then\n"
    "  redis.call('HSET', KEYS[1], 'size', ARGV[1], 'sha256', ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "if s[1] == ARGV[1] and s[2] == ARGV[2] then return 1 end\n"
    "return 0\n");

int st_upload_reserve(st_redis *r, const char *terminal, const char *upload,
                      uint64_t size, const uint8_t sha256[32], int64_t ttl_ms,
                      bool *ok) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP], num[24], ttl[24];
  *ok = false;
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  snprintf(num, sizeof num, "%llu", (unsigned long long)size);
  snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *argv[7] = {NULL, NULL, NULL, rec, num, (const char *)sha256, ttl};
  size_t lens[7] = {0, 0, 0, strlen(rec), strlen(num), 32, strlen(ttl)};
  return st__eval_flag(r, &reserve_script, 1, 7, argv, lens, ok,
                       "reserving an upload");
}

int st_upload_put_effect(st_txn *t, const char *terminal, const char *upload,
                         uint64_t size, const uint8_t sha256[32], uint64_t seg,
                         int64_t ttl_ms) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP], num[24], idx[24], ttl[24];
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  snprintf(num, sizeof num, "%llu", (unsigned long long)size);
  snprintf(idx, sizeof idx, "%llu", (unsigned long long)seg);
  snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  /* The handler fixed size and hash before writing (st_upload_reserve),
   * so a racing first put of other content wrote nothing. Should the
   * record have expired since, the first put to commit fixes them again
   * (HSETNX) and one racing it with others records nothing
   * (st_task_commit: NIMBUS_ECONFLICT); sent again it meets the 409. */
  const char *c1[4] = {"HSETNX", rec, "size", num};
  const char *c2[4] = {"HSETNX", rec, "sha256", (const char *)sha256};
  size_t l2[4] = {6, strlen(rec), 6, 32};
  const char *c3[4] = {"SETBIT", bits, idx, "1"};
  const char *c4[3] = {"PEXPIRE", rec, ttl};
  const char *c5[3] = {"PEXPIRE", bits, ttl};
  const char *c6[4] = {"HSET", rec, "staged", "1"};
  int rc = st_txn_pin_field(t, rec, "size", num, strlen(num));
  if (rc == 0)
    rc = st_txn_pin_field(t, rec, "sha256", sha256, 32);
  if (rc == 0)
    rc = st_txn_add(t, 4, c1, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 4, c2, l2);
  if (rc == 0 && size > 0)
    rc = st_txn_add(t, 4, c3, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 4, c6, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, c4, NULL);
  if (rc == 0 && size > 0)
    rc = st_txn_add(t, 3, c5, NULL);
  return rc;
}

int st_blob_access_effect(st_txn *t, const char *terminal, const char *hex) {
  char meta[ST_KEY_CAP], acc[ST_KEY_CAP], readers[ST_KEY_CAP];
  int a = snprintf(acc, sizeof acc, "nb:access:%s", terminal);
  if (strlen(hex) != 64 || a < 0 || (size_t)a >= sizeof acc)
    return NIMBUS_EINVAL;
  snprintf(meta, sizeof meta, "nb:blob:%s", hex);
  snprintf(readers, sizeof readers, "nb:blob:%s:readers", hex);
  const char *c1[3] = {"SADD", acc, hex};
  const char *c2[3] = {"SADD", readers, terminal};
  int rc = st_txn_require(t, meta);
  if (rc == 0)
    rc = st_txn_add(t, 3, c1, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, c2, NULL);
  return rc;
}

int st_upload_commit_effect(st_txn *t, const char *terminal, const char *upload,
                            const uint8_t blob[32], uint64_t size,
                            const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs,
                            int64_t ttl_ms) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP], meta[ST_KEY_CAP], segk[ST_KEY_CAP],
      acc[ST_KEY_CAP], num[24], ttl[24], blob_hex[65];
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  nb_hex(blob, 32, blob_hex);
  snprintf(meta, sizeof meta, "nb:blob:%s", blob_hex);
  snprintf(segk, sizeof segk, "nb:blob:%s:sums", blob_hex);
  int n = snprintf(acc, sizeof acc, "nb:access:%s", terminal);
  if (n < 0 || (size_t)n >= sizeof acc)
    return NIMBUS_EINVAL;
  snprintf(num, sizeof num, "%llu", (unsigned long long)size);
  snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *c1[4] = {"HSET", meta, "size", num};
  const char *c2[3] = {"SET", segk, (const char *)sums};
  size_t l2[3] = {3, strlen(segk), (size_t)nsegs * ST_SEGSUM};
  const char *c3[3] = {"SADD", acc, blob_hex};
  /* The record is written whole again, so a commit whose record expired
   * meanwhile leaves a complete one, never a bare "blob" field that a later
   * upload of the same name would inherit. */
  const char *c4[8] = {
      "HSET", rec, "size", num, "sha256", (const char *)blob, "blob", blob_hex};
  size_t l4[8] = {4, strlen(rec), 4, strlen(num), 6, 32, 4, 64};
  const char *c5[3] = {"PEXPIRE", rec, ttl};
  const char *c6[2] = {"DEL", bits};
  /* Who may read it, so the collector can take that back, and since when
   * nothing refers to it (a new upload restarts the grace period). */
  char readers[ST_KEY_CAP], gone[ST_KEY_CAP], committing[ST_KEY_CAP], now[24];
  snprintf(readers, sizeof readers, "nb:blob:%s:readers", blob_hex);
  snprintf(gone, sizeof gone, "nb:blob:%s:gone", blob_hex);
  snprintf(committing, sizeof committing, "nb:blob:%s:committing", blob_hex);
  snprintf(now, sizeof now, "%lld", (long long)nb_now_ms());
  const char *c7[3] = {"SADD", readers, terminal};
  const char *c8[5] = {"ZADD", "nb:gc", "GT", now, blob_hex};
  const char *c9[2] = {"DEL", committing};
  /* Never record a blob whose file the collector is removing (a commit
   * that did not go through st_blob_commit_begin, or outlived its mark). */
  int rc = st_txn_forbid(t, gone);
  if (rc == 0)
    rc = st_txn_add(t, 4, c1, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, c2, l2);
  if (rc == 0)
    rc = st_txn_add(t, 3, c3, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 8, c4, l4);
  if (rc == 0)
    rc = st_txn_add(t, 3, c5, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 2, c6, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, c7, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 5, c8, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 2, c9, NULL);
  return rc;
}

/* KEYS: gone, committing, upload record. ARGV: owner, ttl_ms, hex. The
 * record is marked only while it exists: a bare field would make a record
 * that a later upload of the same name inherits. */
static st_script begin_script =
    ST_SCRIPT("if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
              "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
              "if redis.call('EXISTS', KEYS[3]) == 1 then\n"
              "  redis.call('HSET', KEYS[3], 'verified', ARGV[3])\n"
              "end\n"
              "return 1\n");

int st_blob_commit_begin(st_redis *r, const char *terminal, const char *upload,
                         const char *hex, const char *owner, int64_t ttl_ms,
                         bool *gone) {
  char gk[ST_KEY_CAP], ck[ST_KEY_CAP], rec[ST_KEY_CAP], bits[ST_KEY_CAP],
      ttl[24];
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  snprintf(gk, sizeof gk, "nb:blob:%.64s:gone", hex);
  snprintf(ck, sizeof ck, "nb:blob:%.64s:committing", hex);
  snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  const char *argv[9] = {NULL, NULL, NULL, gk, ck, rec, owner, ttl, hex};
  redisReply *rep = st__eval(r, &begin_script, 3, 9, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_INTEGER) {
    rc = st__fail(r, rep, "unexpected answer marking a commit");
  } else {
    *gone = rep->integer == 0;
  }
  freeReplyObject(rep);
  return rc;
}

int st_upload_discard(st_redis *r, const char *terminal, const char *upload) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP];
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  const char *argv[3] = {"DEL", rec, bits};
  return st__cmd_ok(r, 3, argv);
}

/* KEYS: rec, bits. */
static st_script abandon_script =
    ST_SCRIPT("if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
              "local f = redis.call('HMGET', KEYS[1], 'staged', 'blob')\n"
              "if f[1] or f[2] then return 0 end\n"
              "return redis.call('DEL', KEYS[1])\n");

int st_upload_abandon(st_redis *r, const char *terminal, const char *upload,
                      bool *removed) {
  char rec[ST_KEY_CAP], bits[ST_KEY_CAP];
  if (removed != NULL)
    *removed = false;
  if (upload_keys(rec, bits, terminal, upload) != 0)
    return NIMBUS_EINVAL;
  const char *argv[5] = {NULL, NULL, NULL, rec, bits};
  return st__eval_flag(r, &abandon_script, 2, 5, argv, NULL, removed,
                       "abandoning an upload");
}

int st_blob_access(st_redis *r, const char *terminal, const char *const *blobs,
                   size_t n, bool *may_read) {
  char acc[ST_KEY_CAP];
  if (n == 0)
    return 0;
  int k = snprintf(acc, sizeof acc, "nb:access:%s", terminal);
  if (k < 0 || (size_t)k >= sizeof acc)
    return NIMBUS_EINVAL;
  const char **argv = calloc(n + 2, sizeof *argv);
  if (argv == NULL)
    return NIMBUS_ENOMEM;
  argv[0] = "SMISMEMBER";
  argv[1] = acc;
  for (size_t i = 0; i < n; i++)
    argv[2 + i] = blobs[i];
  redisReply *rep = st__cmd(r, (int)n + 2, argv, NULL);
  free(argv);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
    rc = st__fail(r, rep, "unexpected SMISMEMBER answer");
  } else {
    for (size_t i = 0; i < n; i++)
      may_read[i] = rep->element[i]->type == REDIS_REPLY_INTEGER &&
                    rep->element[i]->integer == 1;
  }
  freeReplyObject(rep);
  return rc;
}

int st_blob_meta_get(st_redis *r, const char *hex, bool *exists,
                     uint64_t *size) {
  char meta[ST_KEY_CAP];
  snprintf(meta, sizeof meta, "nb:blob:%.64s", hex);
  const char *argv[3] = {"HGET", meta, "size"};
  redisReply *rep = st__cmd(r, 3, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  *exists = rep->type == REDIS_REPLY_STRING;
  *size = *exists ? parse_u64(rep->str) : 0;
  if (rep->type == REDIS_REPLY_ERROR)
    rc = st__fail(r, rep, NULL);
  freeReplyObject(rep);
  return rc;
}

int st_blob_meta_read(st_redis *r, const char *hex, st_blob_meta *out) {
  char meta[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  out->stored = -1;
  snprintf(meta, sizeof meta, "nb:blob:%.64s", hex);
  const char *argv[4] = {"HMGET", meta, "size", "stored"};
  redisReply *rep = st__cmd(r, 4, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
    rc = st__fail(r, rep, "unexpected answer reading a blob's metadata");
  } else if (rep->element[0]->type == REDIS_REPLY_STRING) {
    out->exists = true;
    out->size = parse_u64(rep->element[0]->str);
    if (rep->element[1]->type == REDIS_REPLY_STRING)
      out->stored = (int64_t)parse_u64(rep->element[1]->str);
  }
  freeReplyObject(rep);
  return rc;
}

/* ---- Compression ------------------------------------------------------- */

/* KEYS: meta, nb:pack. ARGV: stored, hex. */
static st_script stored_script =
    ST_SCRIPT("redis.call('ZREM', KEYS[2], ARGV[2])\n"
              "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
              "redis.call('HSET', KEYS[1], 'stored', ARGV[1])\n"
              "return 1\n");

int st_blob_stored_set(st_redis *r, const char *hex, uint64_t stored,
                       bool *recorded) {
  char meta[ST_KEY_CAP], num[24], name[65];
  if (recorded != NULL)
    *recorded = false;
  snprintf(meta, sizeof meta, "nb:blob:%.64s", hex);
  snprintf(num, sizeof num, "%llu", (unsigned long long)stored);
  nb_strlcpy(name, hex, sizeof name);
  const char *argv[7] = {NULL, NULL, NULL, meta, "nb:pack", num, name};
  return st__eval_flag(r, &stored_script, 2, 7, argv, NULL, recorded,
                       "recording a blob's size");
}

int st_blob_pack_queue_effect(st_txn *t, const char *hex, int64_t now_ms) {
  char now[24], name[65];
  if (strlen(hex) != 64)
    return NIMBUS_EINVAL;
  nb_strlcpy(name, hex, sizeof name);
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  const char *argv[5] = {"ZADD", "nb:pack", "NX", now, name};
  return st_txn_add(t, 5, argv, NULL);
}

/* KEYS: nb:pack. ARGV: now, due again. The first due, or nil. */
static st_script pack_take_script =
    ST_SCRIPT("local e = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],"
              " 'LIMIT', 0, 1)\n"
              "if #e == 0 then return false end\n"
              "redis.call('ZADD', KEYS[1], 'XX', ARGV[2], e[1])\n"
              "return e[1]\n");

int st_blob_pack_take(st_redis *r, int64_t now_ms, int64_t lease_ms,
                      char hex[65], bool *got) {
  char now[24], until[24];
  *got = false;
  hex[0] = '\0';
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  snprintf(until, sizeof until, "%lld", (long long)(now_ms + lease_ms));
  const char *argv[6] = {NULL, NULL, NULL, "nb:pack", now, until};
  redisReply *rep = st__eval(r, &pack_take_script, 1, 6, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type == REDIS_REPLY_STRING && rep->len == 64) {
    memcpy(hex, rep->str, 64);
    hex[64] = '\0';
    *got = true;
  } else if (rep->type != REDIS_REPLY_NIL) {
    rc = st__fail(r, rep, "unexpected answer taking a blob to compress");
  }
  freeReplyObject(rep);
  return rc;
}

int st_blob_pack_later(st_redis *r, const char *hex, int64_t when_ms) {
  char when[24], name[65];
  snprintf(when, sizeof when, "%lld", (long long)when_ms);
  nb_strlcpy(name, hex, sizeof name);
  const char *argv[5] = {"ZADD", "nb:pack", "XX", when, name};
  return st__cmd_ok(r, 5, argv);
}

int st_blob_pack_drop(st_redis *r, const char *hex) {
  char name[65];
  nb_strlcpy(name, hex, sizeof name);
  const char *argv[3] = {"ZREM", "nb:pack", name};
  return st__cmd_ok(r, 3, argv);
}

/* GETRANGE of records first .. first+count-1, each `width` bytes, of key
 * `key` into out; NIMBUS_ENOTFOUND when fewer are there. */
static int sums_range(st_redis *r, const char *key, size_t width,
                      uint64_t first, uint64_t count, uint8_t *out) {
  char a[24], b[24];
  snprintf(a, sizeof a, "%llu", (unsigned long long)(first * width));
  snprintf(b, sizeof b, "%llu",
           (unsigned long long)((first + count) * width - 1));
  const char *argv[4] = {"GETRANGE", key, a, b};
  redisReply *rep = st__cmd(r, 4, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type == REDIS_REPLY_ERROR)
    rc = st__fail(r, rep, NULL);
  else if (rep->type != REDIS_REPLY_STRING || rep->len != (size_t)count * width)
    rc = NIMBUS_ENOTFOUND;
  else
    memcpy(out, rep->str, rep->len);
  freeReplyObject(rep);
  return rc;
}

int st_blob_sums_get(st_redis *r, const char *hex, uint64_t first,
                     uint64_t count, uint8_t *sums, size_t *width) {
  char key[ST_KEY_CAP];
  *width = ST_SEGSUM;
  if (count == 0)
    return 0;
  snprintf(key, sizeof key, "nb:blob:%.64s:sums", hex);
  int rc = sums_range(r, key, ST_SEGSUM, first, count, sums);
  if (rc != NIMBUS_ENOTFOUND)
    return rc;
  /* Committed before XXH3 sums: the SHA-256 of each segment. */
  snprintf(key, sizeof key, "nb:blob:%.64s:segs", hex);
  *width = ST_SEGSUM_SHA256;
  return sums_range(r, key, ST_SEGSUM_SHA256, first, count, sums);
}

/* ---- Collection of unreferenced blobs ---------------------------------- */

int st_blob_gc_candidates(st_redis *r, int64_t cutoff_ms, size_t max,
                          char (*out)[65], size_t *n) {
  *n = 0;
  redisReply *rep = NULL;
  int rc = st__due(r, "nb:gc", cutoff_ms, max, "unreferenced blobs", &rep);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < rep->elements && *n < max; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING || e->len != 64)
      continue;
    memcpy(out[*n], e->str, 64);
    out[(*n)++][64] = '\0';
  }
  freeReplyObject(rep);
  return 0;
}

/* KEYS: nb:gc, meta, sums, readers, gone, committing, segs (the sums of
 * blobs committed before XXH3), then the access set of each reader the
 * caller read (SMEMBERS readers). ARGV: hex, cutoff, gone_ms, then those
 * readers' terminal ids. Returns -2 when the readers are no longer those
 * (read them again), -1 when the blob is kept (still referred to,
 * referred to again since it was listed, or being committed again), else
 * its size (0 when unknown): its records are gone and the tombstone holds
 * off commits of the same content until the file is removed. */
static st_script gc_script = ST_SCRIPT(
    "local since = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if not since or tonumber(since) > tonumber(ARGV[2]) then return -1 end\n"
    "if redis.call('EXISTS', KEYS[6]) == 1 then return -1 end\n"
    "local refs = tonumber(redis.call('HGET', KEYS[2], 'refs') or '0')\n"
    "if refs > 0 then\n"
    "  redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "  return -1\n"
    "end\n"
    "local n = #KEYS - 7\n"
    "if redis.call('SCARD', KEYS[4]) ~= n then return -2 end\n"
    "for i = 1, n do\n"
    "  if redis.call('SISMEMBER', KEYS[4], ARGV[3 + i]) == 0 then\n"
    "    return -2\n"
    "  end\n"
    "end\n"
    "local size = tonumber(redis.call('HGET', KEYS[2], 'size') or '0')\n"
    "for i = 1, n do\n"
    "  redis.call('SREM', KEYS[7 + i], ARGV[1])\n"
    "end\n"
    "redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[7])\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('SET', KEYS[5], '1', 'PX', ARGV[3])\n"
    "return size\n");

/* One try of gc_script with the readers as SMEMBERS gives them now; *again
 * when they changed in between. */
static int gc_take_once(st_redis *r, const char *hex, const char *cut,
                        const char *gms, bool *again, bool *taken,
                        uint64_t *size) {
  char keys[7][ST_KEY_CAP];
  const char *suffix[7] = {NULL,          "",     ":sums", ":readers", ":gone",
                           ":committing", ":segs"};
  snprintf(keys[0], ST_KEY_CAP, "nb:gc");
  for (int i = 1; i < 7; i++)
    snprintf(keys[i], ST_KEY_CAP, "nb:blob:%.64s%s", hex, suffix[i]);
  *again = false;
  const char *sm[2] = {"SMEMBERS", keys[3]};
  redisReply *readers = st__cmd(r, 2, sm, NULL);
  if (readers == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  const char **argv = NULL;
  char(*acc)[ST_KEY_CAP] = NULL;
  redisReply *rep = NULL;
  if (readers->type != REDIS_REPLY_ARRAY) {
    rc = st__fail(r, readers, "unexpected answer listing a blob's readers");
    goto out;
  }
  size_t n = readers->elements;
  argv = calloc(3 + 7 + 2 * n + 3, sizeof *argv);
  acc = calloc(n > 0 ? n : 1, sizeof *acc);
  if (argv == NULL || acc == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  size_t k = 3;
  for (int i = 0; i < 7; i++)
    argv[k++] = keys[i];
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = readers->element[i];
    int w = snprintf(acc[i], ST_KEY_CAP, "nb:access:%s",
                     e->type == REDIS_REPLY_STRING ? e->str : "");
    if (w < 0 || w >= ST_KEY_CAP) {
      rc = NIMBUS_EINVAL;
      goto out;
    }
    argv[k++] = acc[i];
  }
  argv[k++] = hex;
  argv[k++] = cut;
  argv[k++] = gms;
  for (size_t i = 0; i < n; i++)
    argv[k++] = readers->element[i]->type == REDIS_REPLY_STRING
                    ? readers->element[i]->str
                    : "";
  rep = st__eval(r, &gc_script, (int)(7 + n), (int)k, argv, NULL);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
  } else if (rep->type != REDIS_REPLY_INTEGER) {
    rc = st__fail(r, rep, "unexpected answer collecting a blob");
  } else if (rep->integer == -2) {
    *again = true;
  } else if (rep->integer >= 0) {
    *taken = true;
    *size = (uint64_t)rep->integer;
  }
out:
  freeReplyObject(rep);
  freeReplyObject(readers);
  free(argv);
  free(acc);
  return rc;
}

int st_blob_gc_take(st_redis *r, const char *hex, int64_t cutoff_ms,
                    int64_t gone_ms, bool *taken, uint64_t *size) {
  char cut[24], gms[24];
  *taken = false;
  *size = 0;
  snprintf(cut, sizeof cut, "%lld", (long long)cutoff_ms);
  snprintf(gms, sizeof gms, "%lld", (long long)gone_ms);
  /* Readers change only when a terminal commits the same content meanwhile
   * (which also makes the blob referred to again): a few tries suffice,
   * and a blob not taken now is a candidate again at the next pass. */
  bool again = true;
  int rc = 0;
  for (int tries = 0; rc == 0 && again && tries < 3; tries++)
    rc = gc_take_once(r, hex, cut, gms, &again, taken, size);
  return rc;
}

int st_blob_gc_done(st_redis *r, const char *hex) {
  char gone[ST_KEY_CAP];
  snprintf(gone, sizeof gone, "nb:blob:%.64s:gone", hex);
  const char *argv[2] = {"DEL", gone};
  return st__cmd_ok(r, 2, argv);
}

/* KEYS: meta, committing, gone. ARGV: gone_ms. */
static st_script orphan_script =
    ST_SCRIPT("if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then\n"
              "  return 0\n"
              "end\n"
              "redis.call('SET', KEYS[3], 'orphan', 'PX', ARGV[1])\n"
              "return 1\n");

int st_blob_orphan_take(st_redis *r, const char *hex, int64_t gone_ms,
                        bool *taken) {
  char meta[ST_KEY_CAP], ck[ST_KEY_CAP], gk[ST_KEY_CAP], ttl[24];
  *taken = false;
  snprintf(meta, sizeof meta, "nb:blob:%.64s", hex);
  snprintf(ck, sizeof ck, "nb:blob:%.64s:committing", hex);
  snprintf(gk, sizeof gk, "nb:blob:%.64s:gone", hex);
  snprintf(ttl, sizeof ttl, "%lld", (long long)gone_ms);
  const char *argv[7] = {NULL, NULL, NULL, meta, ck, gk, ttl};
  return st__eval_flag(r, &orphan_script, 3, 7, argv, NULL, taken,
                       "taking an orphan blob");
}
