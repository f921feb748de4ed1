/* The Redis model of published offload modules (st_module.h). */
#include "st_module.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ST_MODULE_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
          s[i] == '_'))
      return false;
  return true;
}

/* KEYS: record, blob metadata, blob sums, tombstone, commit mark, nb:gc,
 * the metadata of the blob the record named when read before, nb:modules.
 * ARGV: version, blob hex, size, sig, ts, sums, the old blob hex ("" when
 * none), name. Returns 0 when recorded, 2 when the blob is being collected, 3
 * when the record changed since it was read (read it again). */
/* clang-format off */
static st_script publish_script = ST_SCRIPT(
    "local old = redis.call('HGET', KEYS[1], 'blob') or ''\n"
    "if old ~= ARGV[7] then return 3 end\n"
    "if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end\n"
    ST_LUA_BLOB_META(2, 3, 3, 6)
    "redis.call('HINCRBY', KEYS[2], 'refs', 1)\n"
    "redis.call('ZADD', KEYS[6], 'GT', ARGV[5], ARGV[2])\n"
    "if old ~= '' and redis.call('EXISTS', KEYS[7]) == 1 then\n"
    "  redis.call('HINCRBY', KEYS[7], 'refs', -1)\n"
    "  redis.call('ZADD', KEYS[6], 'GT', ARGV[5], old)\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'version', ARGV[1], 'blob', ARGV[2],"
    " 'size', ARGV[3], 'sig', ARGV[4], 'ts', ARGV[5])\n"
    "redis.call('DEL', KEYS[5])\n"
    "redis.call('SADD', KEYS[8], ARGV[8])\n"
    "return 0\n");
/* clang-format on */

int st_module_publish(st_redis *r, const st_module *m,
                      const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs) {
  char rec[ST_KEY_CAP], oldmeta[ST_KEY_CAP], size[24], ts[24];
  st__blob_keys bk;
  if (!name_ok(m->name) || st__blob_keys_of(&bk, m->blob) != 0)
    return NIMBUS_EINVAL;
  snprintf(rec, sizeof rec, "nb:module:%s", m->name);
  snprintf(size, sizeof size, "%llu", (unsigned long long)m->size);
  snprintf(ts, sizeof ts, "%lld", (long long)m->ts);
  for (int tries = 0; tries < 5; tries++) {
    st_module old;
    int rc = st_module_get(r, m->name, &old);
    if (rc != 0)
      return rc;
    snprintf(oldmeta, sizeof oldmeta, "nb:blob:%s",
             old.exists ? old.blob : "-");
    const char *argv[19] = {NULL,
                            NULL,
                            NULL,
                            rec,
                            bk.meta,
                            bk.sums,
                            bk.gone,
                            bk.mark,
                            "nb:gc",
                            oldmeta,
                            "nb:modules",
                            m->version,
                            m->blob,
                            size,
                            (const char *)m->sig,
                            ts,
                            (const char *)sums,
                            old.exists ? old.blob : "",
                            m->name};
    size_t lens[19];
    /* argv[14] (the signature) and [16] (the sums) are bytes. */
    for (int i = 0; i < 19; i++)
      lens[i] = argv[i] != NULL && i != 14 && i != 16 ? strlen(argv[i]) : 0;
    lens[14] = sizeof m->sig;
    lens[16] = (size_t)nsegs * ST_SEGSUM;
    redisReply *rep = st__eval(r, &publish_script, 8, 19, argv, lens);
    if (rep == NULL)
      return NIMBUS_EREDIS;
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (v < 0)
      rc = st__fail(r, rep, "unexpected answer publishing a module");
    freeReplyObject(rep);
    if (rc != 0)
      return rc;
    if (v == 0)
      return 0;
    if (v == 2)
      return NIMBUS_ECONFLICT;
  }
  st__set_err(r, "the module's record kept changing while it was published");
  return NIMBUS_EREDIS;
}

int st_module_get(st_redis *r, const char *name, st_module *out) {
  char rec[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (!name_ok(name))
    return NIMBUS_EINVAL;
  snprintf(rec, sizeof rec, "nb:module:%s", name);
  static const char *const fields[] = {"version", "blob", "size", "sig", "ts"};
  redisReply *rep = NULL;
  int rc = st__hmget(r, rec, fields, 5, &rep, "a module");
  if (rep == NULL)
    return rc;
  redisReply **e = rep->element;
  if (e[0]->len <= ST_MODULE_VERSION_MAX && e[1]->len == 64 &&
      e[3]->len == sizeof out->sig) {
    nb_strlcpy(out->name, name, sizeof out->name);
    memcpy(out->version, e[0]->str, e[0]->len);
    out->version[e[0]->len] = '\0';
    memcpy(out->blob, e[1]->str, 64);
    out->blob[64] = '\0';
    out->size = strtoull(e[2]->str, NULL, 10);
    memcpy(out->sig, e[3]->str, sizeof out->sig);
    out->ts = strtoll(e[4]->str, NULL, 10);
    out->exists = true;
  }
  freeReplyObject(rep);
  return 0;
}

int st_module_names(st_redis *r, char ***names, size_t *n) {
  return st__smembers(r, "nb:modules", true, names, n, "modules");
}
