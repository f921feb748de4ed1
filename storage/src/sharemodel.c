/* The Redis model of shares (st_share.h): share records, the owner's and
 * each addressee's index, the name of a share, the expiry index the
 * janitor sweeps, the per-(share, terminal) download count and the grants
 * that let blob.get serve a shared blob while, and only while, its share
 * lives. Key names hold only terminal ids ([A-Za-z0-9._-]), tokens
 * ([A-Za-z0-9_-]) and hex, none of which holds ':'; a share's name appears
 * in a key only as its SHA-256. Every script names the keys it touches in
 * KEYS (some are found by a read first, which is safe: see each), and runs
 * through st__eval (EVALSHA). */
#include "st_share.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Grants looked at per blob.get (a terminal rarely holds more than one
 * share of the same blob; any live one suffices). */
#define GRANTS_MAX 32

static bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int st_share_token_new(char out[ST_SHARE_TOKEN_LEN + 1]) {
  /* 24 characters of 6 random bits each: 144 bits. */
  return nb_random_id(out, ST_SHARE_TOKEN_LEN + 1, 6 * ST_SHARE_TOKEN_LEN) == 0
             ? 0
             : NIMBUS_ESYS;
}

bool st_share_token_valid(const char *s, size_t n) {
  if (s == NULL || n != ST_SHARE_TOKEN_LEN)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!token_char(s[i]))
      return false;
  return true;
}

bool st_share_member_valid(const char *s, size_t n) {
  if (s == NULL || n != ST_SHARE_MEMBER_LEN || s[13] != '.')
    return false;
  for (size_t i = 0; i < 13; i++)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return st_share_token_valid(s + 14, ST_SHARE_TOKEN_LEN);
}

static void member_of(char out[ST_SHARE_MEMBER_LEN + 1], int64_t created,
                      const char *token) {
  long long ms = st__ms13(created);
  char buf[64];
  snprintf(buf, sizeof buf, "%013lld.%.24s", ms, token);
  memcpy(out, buf, ST_SHARE_MEMBER_LEN + 1);
}

static int name_key(char out[ST_KEY_CAP], const char *owner, const char *name,
                    size_t n) {
  uint8_t d[32];
  char hex[65];
  nb_sha256(name, n, d);
  nb_hex(d, 32, hex);
  return st__keyf(out, "nb:sharename:%s:%s", owner, hex);
}

bool st_share_live(const st_share *s, int64_t now_ms) {
  return s->exists && !s->revoked && s->expires_at > now_ms;
}

void st_share_fini(st_share *s) {
  free(s->to);
  free(s->got);
  s->to = NULL;
  s->got = NULL;
  s->nto = s->ngot = 0;
}

/* ---- Decoding script answers --------------------------------------------- */

static void copy_str(char *dst, size_t cap, const redisReply *e) {
  dst[0] = '\0';
  if (e->type == REDIS_REPLY_STRING) {
    size_t n = e->len < cap - 1 ? e->len : cap - 1;
    memcpy(dst, e->str, n);
    dst[n] = '\0';
  }
}

static int64_t num_of(const redisReply *e) {
  if (e->type == REDIS_REPLY_INTEGER)
    return (int64_t)e->integer;
  return e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
}

/* The fields every script returns first, in this order. */
#define FIELDS                                                                 \
  "'owner', 'name', 'blob', 'mime', 'size', 'created', 'expires_at', "         \
  "'max', 'revoked', 'thumb'"
#define NFIELDS 10

static void fill(st_share *s, const char *token, redisReply **e) {
  s->exists = true;
  nb_strlcpy(s->token, token, sizeof s->token);
  copy_str(s->owner, sizeof s->owner, e[0]);
  copy_str(s->name, sizeof s->name, e[1]);
  copy_str(s->blob, sizeof s->blob, e[2]);
  copy_str(s->mime, sizeof s->mime, e[3]);
  s->size = num_of(e[4]);
  s->created = num_of(e[5]);
  s->expires_at = num_of(e[6]);
  s->max_downloads = num_of(e[7]);
  s->revoked =
      e[8]->type == REDIS_REPLY_STRING && e[8]->len == 1 && e[8]->str[0] == '1';
  copy_str(s->thumb, sizeof s->thumb, e[9]);
  if (strlen(s->thumb) != 64)
    s->thumb[0] = '\0';
}

/* An array reply of terminal ids into a new array (*out, *n). */
static int ids_of(const redisReply *e, char (**out)[65], size_t *n) {
  *out = NULL;
  *n = 0;
  if (e->type != REDIS_REPLY_ARRAY || e->elements == 0)
    return 0;
  *out = calloc(e->elements, sizeof **out);
  if (*out == NULL)
    return NIMBUS_ENOMEM;
  for (size_t i = 0; i < e->elements; i++)
    copy_str((*out)[(*n)++], 65, e->element[i]);
  return 0;
}

/* ---- Reading ------------------------------------------------------------- */

/* KEYS: blob metadata. Each one's stored size, or '' when not recorded. */
static st_script stored_script =
    ST_SCRIPT("local out = {}\n"
              "for i, k in ipairs(KEYS) do\n"
              "  out[i] = redis.call('HGET', k, 'stored') or ''\n"
              "end\n"
              "return out\n");

/* Sets stored of shares[0 .. n-1] from their blobs' metadata: a blob
 * compressed in the store after its share was made shows its new size. */
static int fill_stored(st_redis *r, st_share *shares, size_t n) {
  for (size_t i = 0; i < n; i++)
    shares[i].stored = shares[i].size;
  if (n == 0)
    return 0;
  char(*keys)[ST_KEY_CAP] = calloc(n, sizeof *keys);
  const char **argv = calloc(3 + n, sizeof *argv);
  int rc = 0;
  redisReply *rep = NULL;
  if (keys == NULL || argv == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if ((rc = st__keyf(keys[i], "nb:blob:%.64s", shares[i].blob)) != 0)
      goto out;
    argv[3 + i] = keys[i];
  }
  rep = st__eval(r, &stored_script, (int)n, (int)(3 + n), argv, NULL);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
  } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
    rc = st__fail(r, rep, "unexpected answer reading stored sizes");
  } else {
    for (size_t i = 0; i < n; i++)
      if (rep->element[i]->type == REDIS_REPLY_STRING &&
          rep->element[i]->len > 0)
        shares[i].stored = num_of(rep->element[i]);
  }
out:
  freeReplyObject(rep);
  free(keys);
  free(argv);
  return rc;
}

/* KEYS: record, got, to. Returns {} or {fields..., to[], got[]}. */
static st_script read_script =
    ST_SCRIPT("local h = redis.call('HMGET', KEYS[1], " FIELDS ")\n"
              "if not h[1] then return {} end\n"
              "h[11] = redis.call('SMEMBERS', KEYS[3])\n"
              "h[12] = redis.call('SMEMBERS', KEYS[2])\n"
              "return h\n");

static int share_keys(const char *token, char rec[ST_KEY_CAP],
                      char got[ST_KEY_CAP], char to[ST_KEY_CAP]) {
  if (st__keyf(rec, "nb:share:%s", token) != 0 ||
      st__keyf(got, "nb:share:%s:got", token) != 0 ||
      st__keyf(to, "nb:share:%s:to", token) != 0)
    return NIMBUS_EINVAL;
  return 0;
}

int st_share_read(st_redis *r, const char *token, st_share *out) {
  char rec[ST_KEY_CAP], got[ST_KEY_CAP], to[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (!st_share_token_valid(token, strlen(token)))
    return 0;
  if (share_keys(token, rec, got, to) != 0)
    return NIMBUS_EINVAL;
  const char *argv[6] = {NULL, NULL, NULL, rec, got, to};
  redisReply *rep = st__eval(r, &read_script, 3, 6, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY ||
      (rep->elements != 0 && rep->elements != NFIELDS + 2)) {
    rc = st__fail(r, rep, "unexpected answer reading a share");
  } else if (rep->elements > 0) {
    fill(out, token, rep->element);
    rc = ids_of(rep->element[NFIELDS], &out->to, &out->nto);
    if (rc == 0)
      rc = ids_of(rep->element[NFIELDS + 1], &out->got, &out->ngot);
    out->downloads = (int64_t)out->ngot;
  }
  freeReplyObject(rep);
  return rc;
}

int st_share_name_lookup(st_redis *r, const char *owner, const char *name,
                         size_t n, char token[ST_SHARE_TOKEN_LEN + 1]) {
  char key[ST_KEY_CAP];
  token[0] = '\0';
  if (name_key(key, owner, name, n) != 0)
    return NIMBUS_EINVAL;
  const char *argv[3] = {"HGET", key, "token"};
  redisReply *rep = st__cmd(r, 3, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type == REDIS_REPLY_ERROR)
    rc = st__fail(r, rep, NULL);
  else if (rep->type == REDIS_REPLY_STRING &&
           st_share_token_valid(rep->str, rep->len))
    copy_str(token, ST_SHARE_TOKEN_LEN + 1, rep);
  freeReplyObject(rep);
  return rc;
}

/* ---- share.get: check and count in one step -------------------------------
 * KEYS: record, got, to, the terminal's grants. ARGV: terminal, now,
 * token. Returns {0}, or {1, fields..., downloads}. Whoever gets a share
 * with a thumbnail, its owner too (who did not upload the thumbnail),
 * holds a grant on the thumbnail. */
static st_script take_script = ST_SCRIPT(
    "local h = redis.call('HMGET', KEYS[1], " FIELDS ", 'to')\n"
    "if not h[1] or h[9] == '1' then return {0} end\n"
    "if tonumber(h[7]) <= tonumber(ARGV[2]) then return {0} end\n"
    "if h[1] ~= ARGV[1] then\n"
    "  if h[11] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0"
    " then return {0} end\n"
    "  if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then\n"
    "    local max = tonumber(h[8])\n"
    "    if max > 0 and redis.call('SCARD', KEYS[2]) >= max then"
    " return {0} end\n"
    "    redis.call('SADD', KEYS[2], ARGV[1])\n"
    "    redis.call('ZADD', KEYS[4], 0, h[3] .. '.' .. ARGV[3])\n"
    "  end\n"
    "end\n"
    "if h[10] and h[10] ~= '' then\n"
    "  redis.call('ZADD', KEYS[4], 0, h[10] .. '.' .. ARGV[3])\n"
    "end\n"
    "return {1, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9],"
    " h[10], redis.call('SCARD', KEYS[2])}\n");

int st_share_take(st_redis *r, const char *token, const char *terminal,
                  int64_t now_ms, st_share *out) {
  char rec[ST_KEY_CAP], got[ST_KEY_CAP], to[ST_KEY_CAP], grants[ST_KEY_CAP],
      now[24];
  memset(out, 0, sizeof *out);
  if (!st_share_token_valid(token, strlen(token)))
    return 0;
  if (share_keys(token, rec, got, to) != 0 ||
      st__keyf(grants, "nb:sgrant:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  const char *argv[10] = {NULL, NULL,   NULL,     rec, got,
                          to,   grants, terminal, now, token};
  redisReply *rep = st__eval(r, &take_script, 4, 10, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      (rep->elements != 1 && rep->elements != NFIELDS + 2)) {
    rc = st__fail(r, rep, "unexpected answer getting a share");
  } else if (rep->elements > 1) {
    fill(out, token, rep->element + 1);
    out->downloads = num_of(rep->element[NFIELDS + 1]);
  }
  freeReplyObject(rep);
  if (rc == 0 && out->exists)
    rc = fill_stored(r, out, 1);
  return rc;
}

/* ---- blob.get's check ------------------------------------------------------
 * KEYS: share records. ARGV: now. 1 when any is live. */
static st_script live_script = ST_SCRIPT(
    "for _, k in ipairs(KEYS) do\n"
    "  local h = redis.call('HMGET', k, 'expires_at', 'revoked')\n"
    "  if h[1] and h[2] ~= '1' and tonumber(h[1]) > tonumber(ARGV[1]) then"
    " return 1 end\n"
    "end\n"
    "return 0\n");

/* KEYS: the terminal's share grants, its result grants, nb:agent:blobs,
 * then each name's metadata. ARGV: now, GRANTS_MAX, then the names. Per
 * name {its size or "", 1 when a live result grant or a published
 * package makes it readable else 0, the share grants' members (up to
 * GRANTS_MAX)}: the same four commands for every name, whether there is
 * such a blob or not. */
static st_script granted_script = ST_SCRIPT(
    "local out = {}\n"
    "local now = tonumber(ARGV[1])\n"
    "for i = 4, #KEYS do\n"
    "  local hex = ARGV[i - 1]\n"
    "  local size = redis.call('HGET', KEYS[i], 'size')\n"
    "  local g = redis.call('ZSCORE', KEYS[2], hex)\n"
    "  local pub = redis.call('HEXISTS', KEYS[3], hex)\n"
    "  local ok = 0\n"
    "  if (g and tonumber(g) > now) or pub == 1 then ok = 1 end\n"
    "  local t = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. hex .. '.',\n"
    "                       '(' .. hex .. '/', 'LIMIT', 0, ARGV[2])\n"
    "  out[#out + 1] = {size or '', ok, t}\n"
    "end\n"
    "return out\n");

#define GRANTED_BATCH 256

/* Whether any of the shares named by grant members `m` (n of them,
 * "<hex>.<token>") is live at now. */
static int shares_live(st_redis *r, redisReply *const *m, size_t n,
                       const char *now, bool *ok) {
  char keys[GRANTS_MAX][ST_KEY_CAP];
  const char *argv[4 + GRANTS_MAX] = {NULL};
  size_t k = 0;
  *ok = false;
  for (size_t i = 0; i < n && k < GRANTS_MAX; i++) {
    if (m[i]->type != REDIS_REPLY_STRING ||
        m[i]->len != 64 + 1 + ST_SHARE_TOKEN_LEN ||
        st__keyf(keys[k], "nb:share:%.*s", ST_SHARE_TOKEN_LEN,
                 m[i]->str + 65) != 0)
      continue;
    argv[3 + k] = keys[k];
    k++;
  }
  if (k == 0)
    return 0;
  argv[3 + k] = now;
  return st__eval_flag(r, &live_script, (int)k, (int)(4 + k), argv, NULL, ok,
                       "checking shares");
}

int st_blobs_granted(st_redis *r, const char *terminal, const char *const *hex,
                     size_t n, int64_t now_ms, int64_t *sizes) {
  char sg[ST_KEY_CAP], rg[ST_KEY_CAP], now[24], lim[16];
  if (st__keyf(sg, "nb:sgrant:%s", terminal) != 0 ||
      st__keyf(rg, ST_RGRANT_FMT, terminal) != 0)
    return NIMBUS_EINVAL;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  snprintf(lim, sizeof lim, "%d", GRANTS_MAX);
  const char **argv = calloc(8 + 2 * GRANTED_BATCH, sizeof *argv);
  char(*meta)[ST_KEY_CAP] = calloc(GRANTED_BATCH, sizeof *meta);
  int rc = argv != NULL && meta != NULL ? 0 : NIMBUS_ENOMEM;
  for (size_t done = 0; rc == 0 && done < n; done += GRANTED_BATCH) {
    size_t k = n - done < GRANTED_BATCH ? n - done : GRANTED_BATCH;
    argv[3] = sg;
    argv[4] = rg;
    argv[5] = ST_AGENT_BLOBS;
    argv[6 + k] = now;
    argv[7 + k] = lim;
    for (size_t i = 0; rc == 0 && i < k; i++) {
      if (!nb_is_sha256_hex(hex[done + i]) ||
          st__keyf(meta[i], "nb:blob:%s", hex[done + i]) != 0)
        rc = NIMBUS_EINVAL;
      argv[6 + i] = meta[i];
      argv[8 + k + i] = hex[done + i];
    }
    if (rc != 0)
      break;
    redisReply *rep = st__eval(r, &granted_script, (int)(3 + k),
                               (int)(8 + 2 * k), argv, NULL);
    if (rep == NULL) {
      rc = NIMBUS_EREDIS;
      break;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != k)
      rc = st__fail(r, rep, "unexpected answer checking grants");
    for (size_t i = 0; rc == 0 && i < k; i++) {
      const redisReply *e = rep->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
          e->element[0]->type != REDIS_REPLY_STRING ||
          e->element[1]->type != REDIS_REPLY_INTEGER ||
          e->element[2]->type != REDIS_REPLY_ARRAY) {
        rc = st__fail(r, NULL, "unexpected answer checking grants");
        break;
      }
      bool ok = e->element[1]->integer == 1;
      /* Share grants are the terminal's own: what they cost to check
       * tells it nothing of blobs it may not read. */
      if (!ok && e->element[2]->elements > 0)
        rc = shares_live(r, e->element[2]->element, e->element[2]->elements,
                         now, &ok);
      sizes[done + i] = ok && e->element[0]->len > 0
                            ? strtoll(e->element[0]->str, NULL, 10)
                            : -1;
    }
    freeReplyObject(rep);
  }
  free(argv);
  free(meta);
  return rc;
}

/* ---- Effects ------------------------------------------------------------- */

static int add(st_txn *t, int argc, const char *const *argv) {
  return st_txn_add(t, argc, argv, NULL);
}

int st_share_create_effect(st_txn *t, const st_share_new *s,
                           const st_share *old) {
  char rec[ST_KEY_CAP], got[ST_KEY_CAP], to[ST_KEY_CAP], idx[ST_KEY_CAP],
      nkey[ST_KEY_CAP], meta[ST_KEY_CAP], member[ST_SHARE_MEMBER_LEN + 1],
      size[24], created[24], expires[24], max[24];
  if (share_keys(s->token, rec, got, to) != 0 ||
      st__keyf(idx, "nb:shares:%s", s->owner) != 0 ||
      name_key(nkey, s->owner, s->name, s->name_len) != 0 ||
      st__keyf(meta, "nb:blob:%.64s", s->blob) != 0)
    return NIMBUS_EINVAL;
  member_of(member, s->created, s->token);
  snprintf(size, sizeof size, "%lld", (long long)s->size);
  snprintf(created, sizeof created, "%lld", (long long)s->created);
  snprintf(expires, sizeof expires, "%lld", (long long)s->expires_at);
  snprintf(max, sizeof max, "%lld", (long long)s->max_downloads);
  int rc = st_txn_require(t, meta);
  bool thumb = s->thumb != NULL && s->thumb[0] != '\0';
  char tmeta[ST_KEY_CAP];
  if (thumb && st__keyf(tmeta, "nb:blob:%.64s", s->thumb) != 0)
    return NIMBUS_EINVAL;
  if (rc == 0 && thumb)
    rc = st_txn_require(t, tmeta);
  if (rc == 0)
    rc = st_txn_forbid(t, rec);
  if (rc == 0 && old == NULL)
    rc = st_txn_forbid(t, nkey);
  if (rc == 0 && old != NULL)
    rc = st_txn_pin_field(t, nkey, "token", old->token, strlen(old->token));
  if (rc == 0 && old != NULL && old->exists && !old->revoked) {
    /* Replace: the old share ends now; the janitor releases it. Its record
     * must still be there, or the effect would make a partial one. */
    char orec[ST_KEY_CAP];
    if (st__keyf(orec, "nb:share:%s", old->token) != 0)
      return NIMBUS_EINVAL;
    const char *mark[4] = {"HSET", orec, "revoked", "1"};
    const char *due[4] = {"ZADD", "nb:share:expiry", created, old->token};
    rc = st_txn_require(t, orec);
    if (rc == 0)
      rc = add(t, 4, mark);
    if (rc == 0)
      rc = add(t, 4, due);
  }
  const char *ref[4] = {"HINCRBY", meta, "refs", "1"};
  const char *tref[4] = {"HINCRBY", tmeta, "refs", "1"};
  const char *hset[22] = {"HSET",       rec,
                          "owner",      s->owner,
                          "name",       s->name,
                          "blob",       s->blob,
                          "mime",       s->mime,
                          "size",       size,
                          "created",    created,
                          "expires_at", expires,
                          "max",        max,
                          "to",         s->nto > 0 ? "1" : "0",
                          "thumb",      thumb ? s->thumb : ""};
  int nh = thumb ? 22 : 20;
  size_t hlens[22];
  /* The name is counted, not NUL-terminated (it borrows from the task). */
  for (int i = 0; i < nh; i++)
    hlens[i] = i == 5 ? s->name_len : strlen(hset[i]);
  const char *zidx[4] = {"ZADD", idx, "0", member};
  const char *zexp[4] = {"ZADD", "nb:share:expiry", expires, s->token};
  const char *name[4] = {"HSET", nkey, "token", s->token};
  if (rc == 0)
    rc = add(t, 4, ref);
  if (rc == 0 && thumb)
    rc = add(t, 4, tref);
  if (rc == 0)
    rc = st_txn_add(t, nh, hset, hlens);
  for (size_t i = 0; rc == 0 && i < s->nto; i++) {
    char inbox[ST_KEY_CAP];
    if (st__keyf(inbox, "nb:shares:in:%s", s->to[i]) != 0)
      return NIMBUS_EINVAL;
    const char *sadd[3] = {"SADD", to, s->to[i]};
    const char *zin[4] = {"ZADD", inbox, "0", member};
    rc = add(t, 3, sadd);
    if (rc == 0)
      rc = add(t, 4, zin);
  }
  if (rc == 0)
    rc = add(t, 4, zidx);
  if (rc == 0)
    rc = add(t, 4, zexp);
  if (rc == 0)
    rc = add(t, 4, name);
  return rc;
}

int st_share_revoke_effect(st_txn *t, const st_share *s, int64_t now_ms) {
  char rec[ST_KEY_CAP], now[24];
  if (st__keyf(rec, "nb:share:%s", s->token) != 0)
    return NIMBUS_EINVAL;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  const char *mark[4] = {"HSET", rec, "revoked", "1"};
  const char *due[4] = {"ZADD", "nb:share:expiry", now, s->token};
  int rc = st_txn_require(t, rec);
  if (rc == 0)
    rc = add(t, 4, mark);
  if (rc == 0)
    rc = add(t, 4, due);
  return rc;
}

/* ---- Listing ------------------------------------------------------------- */

/* KEYS: per share its record, got and to. Per share {} or {fields...,
 * downloads, to[]}. */
static st_script list_script =
    ST_SCRIPT("local out = {}\n"
              "for i = 1, #KEYS, 3 do\n"
              "  local h = redis.call('HMGET', KEYS[i], " FIELDS ")\n"
              "  if h[1] then\n"
              "    h[11] = redis.call('SCARD', KEYS[i + 1])\n"
              "    h[12] = redis.call('SMEMBERS', KEYS[i + 2])\n"
              "    out[#out + 1] = h\n"
              "  else\n"
              "    out[#out + 1] = {}\n"
              "  end\n"
              "end\n"
              "return out\n");

int st_share_list(st_redis *r, const char *terminal, bool inbox,
                  const char *owner, const char *cursor, size_t limit,
                  int64_t now_ms, st_share *out, size_t *n, char *next) {
  char idx[ST_KEY_CAP], max[ST_SHARE_MEMBER_LEN + 2], count[24];
  *n = 0;
  next[0] = '\0';
  if (limit == 0 || limit > 1000)
    return NIMBUS_EINVAL;
  if (st__keyf(idx, inbox ? "nb:shares:in:%s" : "nb:shares:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  if (cursor != NULL && cursor[0] != '\0')
    snprintf(max, sizeof max, "(%.*s", ST_SHARE_MEMBER_LEN, cursor);
  else
    nb_strlcpy(max, "+", sizeof max);
  snprintf(count, sizeof count, "%zu", limit + 1);
  const char *zargv[7] = {"ZREVRANGEBYLEX", idx, max, "-", "LIMIT", "0", count};
  redisReply *ids = st__cmd(r, 7, zargv, NULL);
  if (ids == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  char(*keys)[ST_KEY_CAP] = NULL;
  const char **argv = NULL;
  redisReply *rep = NULL;
  if (ids->type != REDIS_REPLY_ARRAY) {
    rc = st__fail(r, ids, "unexpected answer listing shares");
    goto out;
  }
  size_t got = ids->elements > limit ? limit : ids->elements;
  for (size_t i = 0; i < got; i++)
    if (ids->element[i]->type != REDIS_REPLY_STRING ||
        !st_share_member_valid(ids->element[i]->str, ids->element[i]->len)) {
      rc = st__fail(r, NULL, "a share index holds a malformed member");
      goto out;
    }
  if (ids->elements > limit)
    copy_str(next, ST_SHARE_MEMBER_LEN + 1, ids->element[limit - 1]);
  if (got == 0)
    goto out;
  keys = calloc(3 * got, sizeof *keys);
  argv = calloc(3 + 3 * got, sizeof *argv);
  if (keys == NULL || argv == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < got; i++) {
    const char *token = ids->element[i]->str + 14;
    if ((rc = share_keys(token, keys[3 * i], keys[3 * i + 1],
                         keys[3 * i + 2])) != 0)
      goto out;
    for (size_t k = 0; k < 3; k++)
      argv[3 + 3 * i + k] = keys[3 * i + k];
  }
  rep =
      st__eval(r, &list_script, (int)(3 * got), (int)(3 + 3 * got), argv, NULL);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
    goto out;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != got) {
    rc = st__fail(r, rep, "unexpected answer listing shares");
    goto out;
  }
  for (size_t i = 0; i < got && rc == 0; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != NFIELDS + 2)
      continue; /* released since the index was read */
    st_share *s = &out[*n];
    memset(s, 0, sizeof *s);
    char token[ST_SHARE_TOKEN_LEN + 1];
    memcpy(token, ids->element[i]->str + 14, ST_SHARE_TOKEN_LEN);
    token[ST_SHARE_TOKEN_LEN] = '\0';
    fill(s, token, e->element);
    s->downloads = num_of(e->element[NFIELDS]);
    if (!st_share_live(s, now_ms) ||
        (owner != NULL && strcmp(owner, s->owner) != 0))
      continue;
    rc = ids_of(e->element[NFIELDS + 1], &s->to, &s->nto);
    (*n)++;
  }
  if (rc == 0)
    rc = fill_stored(r, out, *n);
out:
  if (rc != 0) {
    for (size_t i = 0; i < *n; i++)
      st_share_fini(&out[i]);
    *n = 0;
  }
  freeReplyObject(rep);
  freeReplyObject(ids);
  free(keys);
  free(argv);
  return rc;
}

/* ---- The janitor's sweep ---------------------------------------------------
 * KEYS: record, got, to, expiry, owner's index, name, blob metadata, nb:gc,
 * the thumbnail's metadata (the blob's again when there is none), then the
 * addressees' indexes, then the grant sets of those who got it and the
 * owner's. ARGV: token, member, now, blob hex, number of addressees, grant
 * member, thumbnail hex or '', its grant member or ''.
 * The keys found by the read before are exactly those of the share's
 * final state: an ended share gains no addressee and no download (the
 * record's check below makes sure it has ended). Returns 1 when released,
 * 0 when not (gone already, or not ended: no index was stale then). */
static st_script sweep_script = ST_SCRIPT(
    "local h = redis.call('HMGET', KEYS[1], 'expires_at', 'revoked')\n"
    "if not h[1] then redis.call('ZREM', KEYS[4], ARGV[1]) return 0 end\n"
    "if h[2] ~= '1' and tonumber(h[1]) > tonumber(ARGV[3]) then return 0"
    " end\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])\n"
    "redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "redis.call('ZREM', KEYS[5], ARGV[2])\n"
    "if redis.call('HGET', KEYS[6], 'token') == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[6])\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[7]) == 1 then\n"
    "  redis.call('HINCRBY', KEYS[7], 'refs', -1)\n"
    "  redis.call('ZADD', KEYS[8], 'GT', ARGV[3], ARGV[4])\n"
    "end\n"
    "if ARGV[7] ~= '' and redis.call('EXISTS', KEYS[9]) == 1 then\n"
    "  redis.call('HINCRBY', KEYS[9], 'refs', -1)\n"
    "  redis.call('ZADD', KEYS[8], 'GT', ARGV[3], ARGV[7])\n"
    "end\n"
    "local ni = tonumber(ARGV[5])\n"
    "for i = 10, 9 + ni do redis.call('ZREM', KEYS[i], ARGV[2]) end\n"
    "for i = 10 + ni, #KEYS do\n"
    "  redis.call('ZREM', KEYS[i], ARGV[6])\n"
    "  if ARGV[8] ~= '' then redis.call('ZREM', KEYS[i], ARGV[8]) end\n"
    "end\n"
    "return 1\n");

/* KEYS: record, expiry. ARGV: token, now. An index entry of a share that
 * is gone is dropped; one of a live share gets its expiry back. */
static st_script mend_script = ST_SCRIPT(
    "local h = redis.call('HMGET', KEYS[1], 'expires_at', 'revoked')\n"
    "if not h[1] then redis.call('ZREM', KEYS[2], ARGV[1]) return 0 end\n"
    "if h[2] ~= '1' and tonumber(h[1]) > tonumber(ARGV[2]) then\n"
    "  redis.call('ZADD', KEYS[2], h[1], ARGV[1])\n"
    "end\n"
    "return 0\n");

/* Releases one ended share; *done says whether this call did. */
static int sweep_one(st_redis *r, const char *token, int64_t now_ms,
                     bool *done) {
  st_share s;
  char now[24];
  *done = false;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  int rc = st_share_read(r, token, &s);
  if (rc != 0) {
    st_share_fini(&s);
    return rc;
  }
  if (!s.exists || st_share_live(&s, now_ms)) {
    /* Gone already, or due later (a stale score): mend the index. */
    char rec[ST_KEY_CAP], got[ST_KEY_CAP], to[ST_KEY_CAP];
    if ((rc = share_keys(token, rec, got, to)) == 0) {
      const char *argv[7] = {NULL,  NULL, NULL, rec, "nb:share:expiry",
                             token, now};
      redisReply *rep = st__eval(r, &mend_script, 2, 7, argv, NULL);
      if (rep == NULL)
        rc = NIMBUS_EREDIS;
      freeReplyObject(rep);
    }
    st_share_fini(&s);
    return rc;
  }
  size_t nkeys = 9 + s.nto + s.ngot + 1;
  char(*keys)[ST_KEY_CAP] = calloc(nkeys, sizeof *keys);
  const char **argv = calloc(3 + nkeys + 8, sizeof *argv);
  char member[ST_SHARE_MEMBER_LEN + 1], gmember[64 + 1 + 25],
      tmember[64 + 1 + 25] = "", nto[24];
  if (keys == NULL || argv == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  member_of(member, s.created, s.token);
  snprintf(gmember, sizeof gmember, "%.64s.%s", s.blob, s.token);
  if (s.thumb[0] != '\0')
    snprintf(tmember, sizeof tmember, "%.64s.%s", s.thumb, s.token);
  snprintf(nto, sizeof nto, "%zu", s.nto);
  if ((rc = share_keys(s.token, keys[0], keys[1], keys[2])) != 0 ||
      (rc = st__keyf(keys[4], "nb:shares:%s", s.owner)) != 0 ||
      (rc = name_key(keys[5], s.owner, s.name, strlen(s.name))) != 0 ||
      (rc = st__keyf(keys[6], "nb:blob:%.64s", s.blob)) != 0 ||
      (rc = st__keyf(keys[8], "nb:blob:%.64s",
                     s.thumb[0] != '\0' ? s.thumb : s.blob)) != 0)
    goto out;
  nb_strlcpy(keys[3], "nb:share:expiry", ST_KEY_CAP);
  nb_strlcpy(keys[7], "nb:gc", ST_KEY_CAP);
  for (size_t i = 0; i < s.nto && rc == 0; i++)
    rc = st__keyf(keys[9 + i], "nb:shares:in:%s", s.to[i]);
  for (size_t i = 0; i < s.ngot && rc == 0; i++)
    rc = st__keyf(keys[9 + s.nto + i], "nb:sgrant:%s", s.got[i]);
  if (rc == 0)
    rc = st__keyf(keys[nkeys - 1], "nb:sgrant:%s", s.owner);
  if (rc != 0)
    goto out;
  for (size_t i = 0; i < nkeys; i++)
    argv[3 + i] = keys[i];
  const char *tail[8] = {s.token, member,  now,     s.blob,
                         nto,     gmember, s.thumb, tmember};
  for (size_t i = 0; i < 8; i++)
    argv[3 + nkeys + i] = tail[i];
  redisReply *rep =
      st__eval(r, &sweep_script, (int)nkeys, (int)(3 + nkeys + 8), argv, NULL);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
  } else if (rep->type != REDIS_REPLY_INTEGER) {
    rc = st__fail(r, rep, "unexpected answer releasing a share");
  } else {
    *done = rep->integer == 1;
  }
  freeReplyObject(rep);
out:
  free(keys);
  free(argv);
  st_share_fini(&s);
  return rc;
}

int st_share_sweep(st_redis *r, int64_t now_ms, size_t max, size_t *released) {
  if (released != NULL)
    *released = 0;
  redisReply *rep = NULL;
  int rc = st__due(r, "nb:share:expiry", now_ms, max, "ended shares", &rep);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < rep->elements && rc == 0; i++) {
    const redisReply *e = rep->element[i];
    char token[ST_SHARE_TOKEN_LEN + 1];
    if (e->type != REDIS_REPLY_STRING || !st_share_token_valid(e->str, e->len))
      continue;
    memcpy(token, e->str, ST_SHARE_TOKEN_LEN);
    token[ST_SHARE_TOKEN_LEN] = '\0';
    bool done = false;
    rc = sweep_one(r, token, now_ms, &done);
    if (done && released != NULL)
      (*released)++;
  }
  freeReplyObject(rep);
  return rc;
}
