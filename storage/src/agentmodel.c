/* The Redis model of agent packages and offers (st_agent.h).
 *
 * A package's key is its version without build metadata, so "the
 * platform already has this version" is one EXISTS inside the publishing
 * script, by precedence, with no version order in Lua: two valid versions
 * are equal exactly when those parts are the same bytes (nb_semver.h).
 * The order itself (which version is newest) is nb_semver_cmp's, in C.
 *
 * Offers change in small scripts that each pin the offer's rev as the
 * caller read it and bump it, so the three writers (nimbusctl making a
 * new offer, the housekeeping that sends one, the worker recording an
 * answer) never act on a state another of them has just left. Taking due
 * offers is one script that lists and re-scores them at once: the first
 * worker's script moves them past now, so another's finds none. */
#include "st_agent.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLATFORMS "nb:agent:platforms"
#define BLOBS ST_AGENT_BLOBS
#define DUE "nb:agent:due"
#define TERMINALS "nb:agent:terminals"

/* ---- Checks and keys ------------------------------------------------------
 */

static bool token_ok(const char *s, size_t n, size_t max, bool dot) {
  if (s == NULL || n == 0 || n > max)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-' || (dot && c == '.')))
      return false;
  }
  return true;
}

bool st_agent_platform_valid(const char *s, size_t n) {
  return token_ok(s, n, ST_AGENT_PLATFORM_MAX, true);
}

bool st_agent_offer_id_valid(const char *s, size_t n) {
  return token_ok(s, n, ST_AGENT_OFFER_ID_MAX, false);
}

bool st_agent_notes_valid(const char *s, size_t n) {
  if (n > ST_AGENT_NOTES_MAX || !nb_valid_utf8(s, n))
    return false;
  /* nb_text_problem refuses every control character; notes may run over
   * lines, so each line is checked on its own, tabs allowed. */
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && s[i] != '\n' && s[i] != '\t')
      continue;
    if (nb_text_problem(s + start, i - start) != NULL)
      return false;
    start = i + 1;
  }
  return true;
}

static bool plat_ok(const char *s) {
  return s != NULL && st_agent_platform_valid(s, strlen(s));
}

static bool ver_ok(const char *s) {
  return s != NULL && nb_semver_valid(s, strlen(s));
}

static int pkg_key(char *out, const char *platform, const char *version) {
  size_t core = nb_semver_core_len(version, strlen(version));
  int n = snprintf(out, ST_KEY_CAP, "nb:agent:pkg:%s:%.*s", platform, (int)core,
                   version);
  return n > 0 && n < ST_KEY_CAP ? 0 : NIMBUS_EINVAL;
}

/* Copies a string reply of at most cap-1 bytes into out; "" otherwise. */
static void copy_str(const redisReply *e, char *out, size_t cap) {
  out[0] = '\0';
  if (e->type == REDIS_REPLY_STRING && e->len < cap) {
    memcpy(out, e->str, e->len);
    out[e->len] = '\0';
  }
}

static int64_t reply_int(const redisReply *e) {
  return e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
}

static void num(char out[24], int64_t v) {
  snprintf(out, 24, "%lld", (long long)v);
}

void st_agent_list_free(char **list, size_t n) { st__strlist_free(list, n); }

static int cmp_semver(const void *a, const void *b) {
  return nb_semver_cmp(*(char *const *)a, *(char *const *)b);
}

/* ---- Packages ------------------------------------------------------------ */

/* KEYS: record, blob metadata, blob sums, tombstone, commit mark, nb:gc,
 * versions, platforms, nb:agent:blobs. ARGV: platform, version, blob hex,
 * size, sig, notes, ts, sums. Returns 0 when recorded, 1 when the version
 * exists (the blob then gets its metadata as any committed blob, with no
 * reference of ours, and is a candidate of the collector), 2 when the
 * blob is being collected. */
/* clang-format off */
static st_script publish_script = ST_SCRIPT(
    "if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end\n"
    ST_LUA_BLOB_META(2, 3, 4, 8)
    "redis.call('DEL', KEYS[5])\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('ZADD', KEYS[6], 'GT', ARGV[7], ARGV[3])\n"
    "  return 1\n"
    "end\n"
    "redis.call('HINCRBY', KEYS[2], 'refs', 1)\n"
    "redis.call('HSET', KEYS[1], 'platform', ARGV[1], 'version',"
    " ARGV[2], 'blob', ARGV[3], 'size', ARGV[4], 'sig', ARGV[5],"
    " 'notes', ARGV[6], 'ts', ARGV[7])\n"
    "redis.call('SADD', KEYS[7], ARGV[2])\n"
    "redis.call('SADD', KEYS[8], ARGV[1])\n"
    "redis.call('HINCRBY', KEYS[9], ARGV[3], 1)\n"
    "return 0\n");
/* clang-format on */

int st_agent_publish(st_redis *r, const st_agent_pkg *p,
                     const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs) {
  char rec[ST_KEY_CAP], vers[ST_KEY_CAP], size[24], ts[24];
  st__blob_keys bk;
  if (!plat_ok(p->platform) || !ver_ok(p->version) ||
      st__blob_keys_of(&bk, p->blob) != 0 ||
      !st_agent_notes_valid(p->notes, strlen(p->notes)) ||
      pkg_key(rec, p->platform, p->version) != 0 ||
      st__keyf(vers, "nb:agent:versions:%s", p->platform) != 0)
    return NIMBUS_EINVAL;
  num(size, (int64_t)p->size);
  num(ts, p->ts);
  const char *argv[20] = {NULL,
                          NULL,
                          NULL,
                          rec,
                          bk.meta,
                          bk.sums,
                          bk.gone,
                          bk.mark,
                          "nb:gc",
                          vers,
                          PLATFORMS,
                          BLOBS,
                          p->platform,
                          p->version,
                          p->blob,
                          size,
                          (const char *)p->sig,
                          p->notes,
                          ts,
                          (const char *)sums};
  size_t lens[20];
  /* argv[16] (the signature) and [19] (the sums) are bytes. */
  for (int i = 0; i < 20; i++)
    lens[i] = argv[i] != NULL && i != 16 && i != 19 ? strlen(argv[i]) : 0;
  lens[16] = sizeof p->sig;
  lens[19] = (size_t)nsegs * ST_SEGSUM;
  redisReply *rep = st__eval(r, &publish_script, 9, 20, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_INTEGER || rep->integer < 0 || rep->integer > 2)
    rc = st__fail(r, rep, "unexpected answer publishing an agent package");
  else if (rep->integer == 1)
    rc = NIMBUS_ECONFLICT;
  else if (rep->integer == 2)
    rc = NIMBUS_ETIMEDOUT;
  freeReplyObject(rep);
  return rc;
}

int st_agent_pkg_get(st_redis *r, const char *platform, const char *version,
                     st_agent_pkg *out) {
  char rec[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (!plat_ok(platform) || !ver_ok(version) ||
      pkg_key(rec, platform, version) != 0)
    return NIMBUS_EINVAL;
  static const char *const fields[] = {"platform", "version", "blob", "size",
                                       "sig",      "notes",   "ts"};
  redisReply *rep = NULL;
  int rc = st__hmget(r, rec, fields, 7, &rep, "an agent package");
  if (rep == NULL)
    return rc;
  redisReply **e = rep->element;
  /* A record not of this shape is not one of ours: none. */
  if (e[2]->len == 64 && e[4]->len == sizeof out->sig) {
    copy_str(e[0], out->platform, sizeof out->platform);
    copy_str(e[1], out->version, sizeof out->version);
    copy_str(e[2], out->blob, sizeof out->blob);
    out->size = strtoull(e[3]->str, NULL, 10);
    memcpy(out->sig, e[4]->str, sizeof out->sig);
    copy_str(e[5], out->notes, sizeof out->notes);
    out->ts = reply_int(e[6]);
    out->exists = out->platform[0] != '\0' && out->version[0] != '\0' &&
                  nb_is_sha256_hex(out->blob);
  }
  freeReplyObject(rep);
  return 0;
}

int st_agent_versions(st_redis *r, const char *platform, char ***versions,
                      size_t *n) {
  char vers[ST_KEY_CAP];
  *versions = NULL;
  *n = 0;
  if (!plat_ok(platform) ||
      st__keyf(vers, "nb:agent:versions:%s", platform) != 0)
    return NIMBUS_EINVAL;
  int rc = st__smembers(r, vers, false, versions, n, "versions");
  if (rc == 0 && *n > 1)
    qsort(*versions, *n, sizeof **versions, cmp_semver);
  return rc;
}

int st_agent_platforms(st_redis *r, char ***platforms, size_t *n) {
  return st__smembers(r, PLATFORMS, true, platforms, n, "platforms");
}

int st_agent_newest(st_redis *r, const char *platform, st_agent_pkg *out) {
  char **v = NULL;
  size_t n = 0;
  memset(out, 0, sizeof *out);
  int rc = st_agent_versions(r, platform, &v, &n);
  /* Newest first; a version whose record is gone (a withdrawal between
   * the two reads) gives way to the next. */
  for (size_t i = n; rc == 0 && i > 0 && !out->exists; i--)
    if (ver_ok(v[i - 1]))
      rc = st_agent_pkg_get(r, platform, v[i - 1], out);
  st_agent_list_free(v, n);
  return rc;
}

/* KEYS: record, versions, platforms, nb:agent:blobs, blob metadata (as
 * read), nb:gc. ARGV: blob hex as read, now, platform. Returns 0 when
 * there is no record, 1 when withdrawn, -1 when the record names another
 * blob now (read it again). */
static st_script withdraw_script =
    ST_SCRIPT("local b = redis.call('HGET', KEYS[1], 'blob')\n"
              "if not b then return 0 end\n"
              "if b ~= ARGV[1] then return -1 end\n"
              "local v = redis.call('HGET', KEYS[1], 'version')\n"
              "redis.call('DEL', KEYS[1])\n"
              "if v then redis.call('SREM', KEYS[2], v) end\n"
              "if redis.call('SCARD', KEYS[2]) == 0 then\n"
              "  redis.call('SREM', KEYS[3], ARGV[3])\n"
              "end\n"
              "if redis.call('HINCRBY', KEYS[4], b, -1) <= 0 then\n"
              "  redis.call('HDEL', KEYS[4], b)\n"
              "end\n"
              "if redis.call('EXISTS', KEYS[5]) == 1 then\n"
              "  redis.call('HINCRBY', KEYS[5], 'refs', -1)\n"
              "  redis.call('ZADD', KEYS[6], 'GT', ARGV[2], b)\n"
              "end\n"
              "return 1\n");

int st_agent_withdraw(st_redis *r, const char *platform, const char *version,
                      int64_t now_ms, bool *found) {
  char rec[ST_KEY_CAP], vers[ST_KEY_CAP], meta[ST_KEY_CAP], now[24];
  *found = false;
  if (!plat_ok(platform) || !ver_ok(version) ||
      pkg_key(rec, platform, version) != 0 ||
      st__keyf(vers, "nb:agent:versions:%s", platform) != 0)
    return NIMBUS_EINVAL;
  num(now, now_ms);
  for (int tries = 0; tries < 5; tries++) {
    st_agent_pkg p;
    int rc = st_agent_pkg_get(r, platform, version, &p);
    if (rc != 0)
      return rc;
    if (st__keyf(meta, "nb:blob:%s", p.exists ? p.blob : "-") != 0)
      return NIMBUS_EINVAL;
    const char *argv[12] = {
        NULL,      NULL,    NULL, rec,     vers,
        PLATFORMS, BLOBS,   meta, "nb:gc", p.exists ? p.blob : "",
        now,       platform};
    redisReply *rep = st__eval(r, &withdraw_script, 6, 12, argv, NULL);
    if (rep == NULL)
      return NIMBUS_EREDIS;
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -2;
    if (v == -2)
      rc = st__fail(r, rep, "unexpected answer withdrawing a package");
    freeReplyObject(rep);
    if (rc != 0)
      return rc;
    if (v >= 0) {
      *found = v == 1;
      return 0;
    }
  }
  st__set_err(r, "the package's record kept changing while it was withdrawn");
  return NIMBUS_EREDIS;
}

/* ---- Offers -------------------------------------------------------------- */

static const char *const state_names[] = {
    [ST_OFFER_NONE] = "none",         [ST_OFFER_DUE] = "due",
    [ST_OFFER_OFFERED] = "offered",   [ST_OFFER_REFUSED] = "refused",
    [ST_OFFER_ACCEPTED] = "accepted", [ST_OFFER_DROPPED] = "dropped",
    [ST_OFFER_REPLACED] = "replaced",
};
#define NSTATES (sizeof state_names / sizeof state_names[0])

const char *st_offer_state_name(st_offer_state s) {
  return (size_t)s < NSTATES ? state_names[s] : "none";
}

bool st_offer_live(st_offer_state s) {
  return s == ST_OFFER_DUE || s == ST_OFFER_OFFERED || s == ST_OFFER_REFUSED;
}

static st_offer_state state_parse(const redisReply *e) {
  if (e->type != REDIS_REPLY_STRING)
    return ST_OFFER_NONE;
  for (size_t i = 0; i < NSTATES; i++)
    if (strcmp(e->str, state_names[i]) == 0)
      return (st_offer_state)i;
  return ST_OFFER_NONE;
}

/* KEYS: the new offer, due, the terminal's record, terminals, the
 * terminal's latest offer as read (or a name that is none). ARGV: id,
 * terminal, platform, version, text, now, the latest offer's id as read
 * ("" none), keep ms. Returns 0, or 3 when the terminal's latest offer
 * changed since it was read (read it again). */
static st_script offer_new_script = ST_SCRIPT(
    "local cur = redis.call('HGET', KEYS[3], 'offer') or ''\n"
    "if cur ~= ARGV[7] then return 3 end\n"
    "if cur ~= '' then\n"
    "  redis.call('ZREM', KEYS[2], cur)\n"
    "  local st = redis.call('HGET', KEYS[5], 'state')\n"
    "  if st == 'due' or st == 'offered' or st == 'refused' then\n"
    "    redis.call('HSET', KEYS[5], 'state', 'replaced')\n"
    "    redis.call('HINCRBY', KEYS[5], 'rev', 1)\n"
    "    redis.call('PEXPIRE', KEYS[5], ARGV[8])\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'terminal', ARGV[2], 'platform', ARGV[3],"
    " 'version', ARGV[4], 'text', ARGV[5], 'state', 'due', 'rev', 1,"
    " 'created', ARGV[6], 'sent', 0, 'sends', 0, 'answered', 0)\n"
    "redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])\n"
    "redis.call('HSET', KEYS[3], 'offer', ARGV[1], 'state', 'due',"
    " 'version', ARGV[4])\n"
    "redis.call('SADD', KEYS[4], ARGV[2])\n"
    "return 0\n");

int st_agent_offer_new(st_redis *r, const char *terminal, const char *platform,
                       const char *version, const char *text, int64_t now_ms,
                       char id[ST_AGENT_OFFER_ID_MAX + 1]) {
  char rec[ST_KEY_CAP], term[ST_KEY_CAP], old[ST_KEY_CAP], now[24], keep[24];
  id[0] = '\0';
  if (terminal == NULL || !nb_valid_terminal(terminal, strlen(terminal)) ||
      !plat_ok(platform) || !ver_ok(version) || text == NULL ||
      strlen(text) > ST_AGENT_TEXT_MAX ||
      st__keyf(term, "nb:agent:term:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  /* 132 random bits: nobody guesses another terminal's offer (though an
   * answer to one is refused anyway: it must be the terminal's own). */
  if (nb_random_id(id, ST_AGENT_OFFER_ID_MAX + 1, 132) != 0)
    return NIMBUS_ESYS;
  if (st__keyf(rec, "nb:agent:offer:%s", id) != 0)
    return NIMBUS_EINVAL;
  num(now, now_ms);
  num(keep, ST_AGENT_OFFER_KEEP_MS);
  for (int tries = 0; tries < 5; tries++) {
    st_agent_term t;
    int rc = st_agent_term_get(r, terminal, &t);
    if (rc != 0)
      return rc;
    if (st__keyf(old, "nb:agent:offer:%s",
                 t.offer[0] != '\0' ? t.offer : "-") != 0)
      return NIMBUS_EINVAL;
    const char *argv[16] = {
        NULL, NULL,     NULL,     rec,     DUE,  term, TERMINALS, old,
        id,   terminal, platform, version, text, now,  t.offer,   keep};
    redisReply *rep = st__eval(r, &offer_new_script, 5, 16, argv, NULL);
    if (rep == NULL)
      return NIMBUS_EREDIS;
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (v != 0 && v != 3)
      rc = st__fail(r, rep, "unexpected answer recording an offer");
    freeReplyObject(rep);
    if (rc != 0 || v == 0)
      return rc;
  }
  st__set_err(r, "the terminal's offers kept changing while one was made");
  return NIMBUS_EREDIS;
}

int st_agent_offer_get(st_redis *r, const char *id, st_agent_offer *out) {
  char rec[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (id == NULL || !st_agent_offer_id_valid(id, strlen(id)))
    return 0; /* no offer could have that id */
  if (st__keyf(rec, "nb:agent:offer:%s", id) != 0)
    return NIMBUS_EINVAL;
  const char *argv[12] = {"HMGET",   rec,    "terminal", "platform",
                          "version", "text", "state",    "rev",
                          "created", "sent", "sends",    "answered"};
  redisReply *rep = st__cmd(r, 12, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 10) {
    rc = st__fail(r, rep, "unexpected answer reading an offer");
  } else {
    redisReply **e = rep->element;
    nb_strlcpy(out->id, id, sizeof out->id);
    copy_str(e[0], out->terminal, sizeof out->terminal);
    copy_str(e[1], out->platform, sizeof out->platform);
    copy_str(e[2], out->version, sizeof out->version);
    copy_str(e[3], out->text, sizeof out->text);
    out->state = state_parse(e[4]);
    out->rev = reply_int(e[5]);
    out->created = reply_int(e[6]);
    out->sent = reply_int(e[7]);
    out->sends = reply_int(e[8]);
    out->answered = reply_int(e[9]);
    /* A record without these is not one of ours: none. */
    out->exists = out->terminal[0] != '\0' && plat_ok(out->platform) &&
                  out->state != ST_OFFER_NONE && out->rev > 0;
    if (!out->exists)
      memset(out, 0, sizeof *out);
  }
  freeReplyObject(rep);
  return rc;
}

/* KEYS: due. ARGV: now, max, now + lease. The due offers, each moved past
 * now in the same step. */
static st_script take_script =
    ST_SCRIPT("local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',"
              " ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))\n"
              "for _, id in ipairs(ids) do\n"
              "  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)\n"
              "end\n"
              "return ids\n");

int st_agent_offers_take(st_redis *r, int64_t now_ms, int64_t lease_ms,
                         size_t max, char (*ids)[ST_AGENT_OFFER_ID_MAX + 1],
                         size_t *n) {
  char now[24], lim[24], until[24];
  *n = 0;
  if (max == 0)
    return 0;
  num(now, now_ms);
  num(lim, (int64_t)max);
  num(until, now_ms + (lease_ms > 0 ? lease_ms : 1));
  const char *argv[7] = {NULL, NULL, NULL, DUE, now, lim, until};
  redisReply *rep = st__eval(r, &take_script, 1, 7, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY) {
    rc = st__fail(r, rep, "unexpected answer taking due offers");
  } else {
    for (size_t i = 0; i < rep->elements && *n < max; i++) {
      const redisReply *e = rep->element[i];
      if (e->type == REDIS_REPLY_STRING && e->len <= ST_AGENT_OFFER_ID_MAX) {
        memcpy(ids[*n], e->str, e->len);
        ids[(*n)++][e->len] = '\0';
      }
    }
  }
  freeReplyObject(rep);
  return rc;
}

/* KEYS: offer, due, the terminal's record. ARGV: id, rev as read, the new
 * state, version ("" keeps it), now, keep ms ("" keeps the offer for
 * good). Returns 1 when changed, 0 when the rev moved on meanwhile. */
static st_script settle_script = ST_SCRIPT(
    "if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[2] then return 0 end\n"
    "redis.call('HINCRBY', KEYS[1], 'rev', 1)\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[3])\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'version', ARGV[4])"
    " end\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "local mine = redis.call('HGET', KEYS[3], 'offer') == ARGV[1]\n"
    "if ARGV[3] == 'offered' then\n"
    "  redis.call('HSET', KEYS[1], 'sent', ARGV[5])\n"
    "  redis.call('HINCRBY', KEYS[1], 'sends', 1)\n"
    "  if mine then\n"
    "    redis.call('HSET', KEYS[3], 'offered', ARGV[5])\n"
    "  end\n"
    "end\n"
    "if mine then\n"
    "  redis.call('HSET', KEYS[3], 'state', ARGV[3])\n"
    "  if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], 'version', ARGV[4])"
    " end\n"
    "end\n"
    "if ARGV[6] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end\n"
    "return 1\n");

static int settle(st_redis *r, const st_agent_offer *o, const char *state,
                  const char *version, int64_t now_ms, bool final,
                  bool *recorded) {
  char rec[ST_KEY_CAP], term[ST_KEY_CAP], rev[24], now[24], keep[24];
  *recorded = false;
  if (!o->exists || st__keyf(rec, "nb:agent:offer:%s", o->id) != 0 ||
      st__keyf(term, "nb:agent:term:%s", o->terminal) != 0)
    return NIMBUS_EINVAL;
  num(rev, o->rev);
  num(now, now_ms);
  num(keep, ST_AGENT_OFFER_KEEP_MS);
  const char *argv[12] = {NULL,  NULL,
                          NULL,  rec,
                          DUE,   term,
                          o->id, rev,
                          state, version != NULL ? version : "",
                          now,   final ? keep : ""};
  redisReply *rep = st__eval(r, &settle_script, 3, 12, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_INTEGER)
    rc = st__fail(r, rep, "unexpected answer recording an offer");
  else
    *recorded = rep->integer == 1;
  freeReplyObject(rep);
  return rc;
}

int st_agent_offer_sent(st_redis *r, const st_agent_offer *o,
                        const char *version, int64_t now_ms, bool *recorded) {
  if (!ver_ok(version))
    return NIMBUS_EINVAL;
  return settle(r, o, "offered", version, now_ms, false, recorded);
}

int st_agent_offer_drop(st_redis *r, const st_agent_offer *o, int64_t now_ms,
                        bool *recorded) {
  return settle(r, o, "dropped", NULL, now_ms, true, recorded);
}

int st_agent_due_forget(st_redis *r, const char *id) {
  const char *argv[3] = {"ZREM", DUE, id};
  return st__cmd_ok(r, 3, argv);
}

int st_agent_answer_effect(st_txn *t, const st_agent_offer *o, bool accept,
                           int64_t now_ms, int64_t due_again_ms,
                           const char *platform, const char *have) {
  char rec[ST_KEY_CAP], term[ST_KEY_CAP], rev[24], now[24], due[24], keep[24];
  if (!o->exists || st__keyf(rec, "nb:agent:offer:%s", o->id) != 0 ||
      st__keyf(term, "nb:agent:term:%s", o->terminal) != 0 ||
      (platform != NULL && !plat_ok(platform)) ||
      (have != NULL && !ver_ok(have)))
    return NIMBUS_EINVAL;
  num(rev, o->rev);
  num(now, now_ms);
  num(due, due_again_ms);
  num(keep, ST_AGENT_OFFER_KEEP_MS);
  const char *state = accept ? "accepted" : "refused";
  const char *mark[6] = {"HSET", rec, "state", state, "answered", now};
  const char *bump[4] = {"HINCRBY", rec, "rev", "1"};
  const char *tmark[6] = {
      "HSET", term, "state", state, accept ? "accepted" : "refused", now};
  const char *zrem[3] = {"ZREM", DUE, o->id};
  const char *zadd[4] = {"ZADD", DUE, due, o->id};
  const char *expire[3] = {"PEXPIRE", rec, keep};
  int rc = st_txn_require(t, rec);
  if (rc == 0)
    rc = st_txn_pin_field(t, rec, "rev", rev, strlen(rev));
  if (rc == 0)
    rc = st_txn_add(t, 6, mark, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 4, bump, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 6, tmark, NULL);
  if (rc == 0)
    rc = accept ? st_txn_add(t, 3, zrem, NULL) : st_txn_add(t, 4, zadd, NULL);
  if (rc == 0 && accept)
    rc = st_txn_add(t, 3, expire, NULL);
  if (rc == 0 && platform != NULL && have != NULL)
    rc = st_agent_report_effect(t, o->terminal, platform, have, now_ms);
  return rc;
}

int st_agent_report_effect(st_txn *t, const char *terminal,
                           const char *platform, const char *version,
                           int64_t now_ms) {
  char term[ST_KEY_CAP], now[24];
  if (terminal == NULL || !nb_valid_terminal(terminal, strlen(terminal)) ||
      !plat_ok(platform) || !ver_ok(version) ||
      st__keyf(term, "nb:agent:term:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  num(now, now_ms);
  const char *set[8] = {"HSET",      term,    "platform", platform,
                        "installed", version, "reported", now};
  const char *add[3] = {"SADD", TERMINALS, terminal};
  int rc = st_txn_add(t, 8, set, NULL);
  if (rc == 0)
    rc = st_txn_add(t, 3, add, NULL);
  return rc;
}

int st_agent_term_get(st_redis *r, const char *terminal, st_agent_term *out) {
  char term[ST_KEY_CAP];
  memset(out, 0, sizeof *out);
  if (terminal == NULL || !nb_valid_terminal(terminal, strlen(terminal)) ||
      st__keyf(term, "nb:agent:term:%s", terminal) != 0)
    return NIMBUS_EINVAL;
  const char *argv[11] = {"HMGET",    term,       "platform", "installed",
                          "reported", "offer",    "state",    "version",
                          "offered",  "accepted", "refused"};
  redisReply *rep = st__cmd(r, 11, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 9) {
    rc = st__fail(r, rep, "unexpected answer reading a terminal's agent");
  } else {
    redisReply **e = rep->element;
    nb_strlcpy(out->terminal, terminal, sizeof out->terminal);
    copy_str(e[0], out->platform, sizeof out->platform);
    copy_str(e[1], out->installed, sizeof out->installed);
    out->reported = reply_int(e[2]);
    copy_str(e[3], out->offer, sizeof out->offer);
    out->state = state_parse(e[4]);
    copy_str(e[5], out->version, sizeof out->version);
    out->offered = reply_int(e[6]);
    out->accepted = reply_int(e[7]);
    out->refused = reply_int(e[8]);
    bool any = false;
    for (size_t i = 0; i < rep->elements; i++)
      any = any || e[i]->type == REDIS_REPLY_STRING;
    out->exists = any;
    /* What does not pass the checks was not written by us: not there. */
    if (!plat_ok(out->platform))
      out->platform[0] = '\0';
    if (!ver_ok(out->installed))
      out->installed[0] = '\0';
    if (!st_agent_offer_id_valid(out->offer, strlen(out->offer)))
      out->offer[0] = '\0';
  }
  freeReplyObject(rep);
  if (rc != 0 || out->offer[0] == '\0')
    return rc;
  const char *zs[3] = {"ZSCORE", DUE, out->offer};
  if ((rep = st__cmd(r, 3, zs, NULL)) == NULL)
    return NIMBUS_EREDIS;
  if (rep->type == REDIS_REPLY_STRING)
    out->due = strtoll(rep->str, NULL, 10);
  else if (rep->type != REDIS_REPLY_NIL)
    rc = st__fail(r, rep, "unexpected answer reading an offer's due time");
  freeReplyObject(rep);
  return rc;
}

int st_agent_terminals(st_redis *r, char ***terminals, size_t *n) {
  return st__smembers(r, TERMINALS, true, terminals, n, "terminals");
}
