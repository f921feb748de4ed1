/* The Redis model of the notice outbox (st_outbox.h). Ids hold only
 * terminal ids, task ids ([A-Za-z0-9._-]) and digits, so a key built of
 * one holds no ':' but the prefix's. The take is a read, then a script
 * that names every key it touches and checks again that each notice is
 * still due, so two workers taking at once never both take one. */
#include "st_outbox.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOX "nb:outbox"

static bool id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool id_valid(const char *s, size_t n) {
  if (n == 0 || n > ST_OUTBOX_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!id_char(s[i]))
      return false;
  return true;
}

static int rec_key(char out[ST_KEY_CAP], const char *id) {
  if (!id_valid(id, strlen(id)))
    return NIMBUS_EINVAL;
  snprintf(out, ST_KEY_CAP, OUTBOX ":%s", id);
  return 0;
}

int st_outbox_id(char out[ST_OUTBOX_ID_MAX + 1], const char *terminal,
                 const char *task_id, unsigned n) {
  char buf[ST_OUTBOX_ID_MAX + 32];
  int k = snprintf(buf, sizeof buf, "%s.%s.%u", terminal, task_id, n);
  if (k <= 0 || (size_t)k > ST_OUTBOX_ID_MAX || !id_valid(buf, (size_t)k))
    return NIMBUS_EINVAL;
  memcpy(out, buf, (size_t)k + 1);
  return 0;
}

int st_outbox_add_effect(st_txn *t, const char *id, const char *to,
                         const void *msg, size_t len, int64_t due_ms) {
  char rec[ST_KEY_CAP], due[24];
  if (rec_key(rec, id) != 0 || strlen(to) == 0 || strlen(to) > 64)
    return NIMBUS_EINVAL;
  snprintf(due, sizeof due, "%lld", (long long)due_ms);
  const char *hset[6] = {"HSET", rec, "to", to, "msg", (const char *)msg};
  size_t lens[6] = {4, strlen(rec), 2, strlen(to), 3, len};
  const char *zadd[4] = {"ZADD", OUTBOX, due, id};
  int rc = st_txn_add(t, 6, hset, lens);
  if (rc == 0)
    rc = st_txn_add(t, 4, zadd, NULL);
  return rc;
}

/* KEYS: nb:outbox, then the records. ARGV: the ids. */
static st_script done_script = ST_SCRIPT("for i, id in ipairs(ARGV) do\n"
                                         "  redis.call('ZREM', KEYS[1], id)\n"
                                         "  redis.call('DEL', KEYS[1 + i])\n"
                                         "end\n"
                                         "return 0\n");

/* Runs `script` with KEYS nb:outbox and the records of ids[], ARGV the
 * ids and then `extra` (nextra strings). The reply is the caller's. */
static int run_ids(st_redis *r, st_script *script, const char *const *ids,
                   size_t n, const char *const *extra, size_t nextra,
                   redisReply **out) {
  *out = NULL;
  char(*keys)[ST_KEY_CAP] = calloc(n > 0 ? n : 1, sizeof *keys);
  const char **argv = calloc(4 + 2 * n + nextra, sizeof *argv);
  int rc = keys != NULL && argv != NULL ? 0 : NIMBUS_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = rec_key(keys[i], ids[i]);
  if (rc == 0) {
    argv[3] = OUTBOX;
    for (size_t i = 0; i < n; i++) {
      argv[4 + i] = keys[i];
      argv[4 + n + i] = ids[i];
    }
    for (size_t i = 0; i < nextra; i++)
      argv[4 + 2 * n + i] = extra[i];
    *out = st__eval(r, script, (int)(1 + n), (int)(4 + 2 * n + nextra), argv,
                    NULL);
    if (*out == NULL)
      rc = NIMBUS_EREDIS;
  }
  free(keys);
  free(argv);
  return rc;
}

int st_outbox_done(st_redis *r, const char *const *ids, size_t n) {
  if (n == 0)
    return 0;
  redisReply *rep = NULL;
  int rc = run_ids(r, &done_script, ids, n, NULL, 0, &rep);
  if (rc == 0 && rep->type == REDIS_REPLY_ERROR)
    rc = st__fail(r, rep, NULL);
  freeReplyObject(rep);
  return rc;
}

/* KEYS: nb:outbox, then the records. ARGV: the ids, then now, then the
 * new due time. Per id {} (not due any more, or gone: its entry dropped)
 * or {to, msg}. */
static st_script take_script = ST_SCRIPT(
    "local n = #KEYS - 1\n"
    "local now, due = tonumber(ARGV[n + 1]), ARGV[n + 2]\n"
    "local out = {}\n"
    "for i = 1, n do\n"
    "  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])\n"
    "  local h = redis.call('HMGET', KEYS[1 + i], 'to', 'msg')\n"
    "  if s and tonumber(s) <= now and h[1] and h[2] then\n"
    "    redis.call('ZADD', KEYS[1], due, ARGV[i])\n"
    "    out[i] = {h[1], h[2]}\n"
    "  else\n"
    "    if s and not h[1] then redis.call('ZREM', KEYS[1], ARGV[i]) end\n"
    "    out[i] = {}\n"
    "  end\n"
    "end\n"
    "return out\n");

void st_outbox_items_free(st_outbox_item *items, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(items[i].msg);
    items[i].msg = NULL;
  }
}

int st_outbox_take(st_redis *r, int64_t now_ms, int64_t lease_ms, size_t max,
                   st_outbox_item *out, size_t *n) {
  char now[24], due[24];
  *n = 0;
  if (max == 0)
    return 0;
  snprintf(now, sizeof now, "%lld", (long long)now_ms);
  snprintf(due, sizeof due, "%lld", (long long)(now_ms + lease_ms));
  redisReply *ids = NULL, *rep = NULL;
  int rc = st__due(r, OUTBOX, now_ms, max, "the outbox", &ids);
  if (rc != 0)
    return rc;
  const char **idv = NULL;
  size_t k = 0;
  idv = calloc(ids->elements > 0 ? ids->elements : 1, sizeof *idv);
  if (idv == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < ids->elements; i++) {
    const redisReply *e = ids->element[i];
    if (e->type == REDIS_REPLY_STRING && id_valid(e->str, e->len))
      idv[k++] = e->str;
  }
  if (k == 0)
    goto out;
  const char *extra[2] = {now, due};
  if ((rc = run_ids(r, &take_script, idv, k, extra, 2, &rep)) != 0)
    goto out;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != k) {
    rc = st__fail(r, rep, "unexpected answer taking from the outbox");
    goto out;
  }
  for (size_t i = 0; i < k && rc == 0; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_STRING || e->element[0]->len == 0 ||
        e->element[0]->len > 64)
      continue;
    st_outbox_item *it = &out[*n];
    memset(it, 0, sizeof *it);
    nb_strlcpy(it->id, idv[i], sizeof it->id);
    memcpy(it->to, e->element[0]->str, e->element[0]->len);
    it->to[e->element[0]->len] = '\0';
    it->len = e->element[1]->len;
    it->msg = malloc(it->len > 0 ? it->len : 1);
    if (it->msg == NULL) {
      rc = NIMBUS_ENOMEM;
      break;
    }
    memcpy(it->msg, e->element[1]->str, it->len);
    (*n)++;
  }
out:
  if (rc != 0) {
    st_outbox_items_free(out, *n);
    *n = 0;
  }
  freeReplyObject(rep);
  freeReplyObject(ids);
  free(idv);
  return rc;
}
