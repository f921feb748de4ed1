/* Nimbus state in Redis: the claim / recorded-reply machinery that gives
 * each task id exactly one effect (PROTOCOL.md, Delivery), and the registry
 * of task types the pool serves.
 *
 * Every state change that must be atomic runs as one Lua script, so a claim,
 * its renewal and the commit of a task's effect with its reply cannot
 * interleave with another worker's. Scripts are called by SHA, computed
 * once per process; a server that does not know one (new, restarted,
 * SCRIPT FLUSH) is sent its text instead, once (st__eval). Every key a
 * script touches comes in KEYS, the keys of a task's effect included
 * (st_txn knows which arguments of each command are keys). A broken
 * connection is re-made once per call before the call gives up with
 * NIMBUS_EREDIS. */
#include "st.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEY_PREFIX "nb:"

struct st_redis {
  redisContext *c;
  char *host;
  char *password;
  int port;
  int timeout_ms;
  char errstr[128];
};

/* ---- Scripts ------------------------------------------------------------ */

/* KEYS: claim, done. ARGV: digest, owner, lease_ms. */
static st_script claim_script = ST_SCRIPT(
    "local d = redis.call('HMGET', KEYS[2], 'digest', 'reply')\n"
    "if d[1] then\n"
    "  if d[1] ~= ARGV[1] then return {'conflict'} end\n"
    "  return {'done', d[2]}\n"
    "end\n"
    "local c = redis.call('HMGET', KEYS[1], 'owner', 'digest')\n"
    "if c[1] then\n"
    "  if c[2] ~= ARGV[1] then return {'conflict'} end\n"
    "  return {'running'}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'digest', ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return {'taken'}\n");

/* KEYS: claims. ARGV: owner, lease_ms. Per claim 0 lost, 1 held,
 * 2 held and cancelled. */
static st_script renew_script =
    ST_SCRIPT("local out = {}\n"
              "for i, k in ipairs(KEYS) do\n"
              "  local c = redis.call('HMGET', k, 'owner', 'cancel')\n"
              "  if c[1] == ARGV[1] then\n"
              "    redis.call('PEXPIRE', k, ARGV[2])\n"
              "    if c[2] then out[i] = 2 else out[i] = 1 end\n"
              "  else\n"
              "    out[i] = 0\n"
              "  end\n"
              "end\n"
              "return out\n");

/* KEYS: claim, done, then every key of the effect's commands in order.
 * ARGV: owner, digest, reply, ttl_ms, ncmds, then per command its argc,
 * its spec (one letter per argument: 'k' a key, taken from KEYS in turn,
 * 'v' a value, taken from ARGV in turn) and its values. The effect runs
 * only while the claim is ours, every key it requires exists, every key
 * it forbids does not and every hash field it pins is absent or holds the
 * pinned value (pseudo-commands NB-REQUIRE, NB-FORBID and NB-IFEQ, all
 * checked before anything is written; no real command starts with
 * "NB-"), and the reply is recorded in the same script: both or neither.
 * NB-HINCRBYX is HINCRBY of a hash that exists, nothing of one that does
 * not (a reference released on metadata a restored Redis lost must not
 * leave a bare count of -1 that a later reference brings to 0).
 * Returns 1 done, 0 claim lost, 2 a condition failed. */
static st_script commit_script = ST_SCRIPT(
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
    "local cmds, k, i = {}, 2, 6\n"
    "for n = 1, tonumber(ARGV[5]) do\n"
    "  local argc, spec, c = tonumber(ARGV[i]), ARGV[i + 1], {}\n"
    "  i = i + 2\n"
    "  for a = 1, argc do\n"
    "    if string.byte(spec, a) == 107 then\n"
    "      k = k + 1\n"
    "      c[a] = KEYS[k]\n"
    "    else\n"
    "      c[a] = ARGV[i]\n"
    "      i = i + 1\n"
    "    end\n"
    "  end\n"
    "  cmds[n] = c\n"
    "end\n"
    "for _, c in ipairs(cmds) do\n"
    "  if c[1] == 'NB-REQUIRE' and\n"
    "     redis.call('EXISTS', c[2]) == 0 then return 2 end\n"
    "  if c[1] == 'NB-FORBID' and\n"
    "     redis.call('EXISTS', c[2]) == 1 then return 2 end\n"
    "  if c[1] == 'NB-IFEQ' then\n"
    "    local v = redis.call('HGET', c[2], c[3])\n"
    "    if v and v ~= c[4] then return 2 end\n"
    "  end\n"
    "end\n"
    "for _, c in ipairs(cmds) do\n"
    "  if string.sub(c[1], 1, 3) ~= 'NB-' then redis.call(unpack(c))\n"
    "  elseif c[1] == 'NB-HINCRBYX' and redis.call('EXISTS', c[2]) == 1 then\n"
    "    redis.call('HINCRBY', c[2], c[3], c[4])\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[2], 'digest', ARGV[2], 'reply', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "return 1\n");

/* KEYS: claim. ARGV: owner. */
static st_script release_script =
    ST_SCRIPT("if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then\n"
              "  redis.call('DEL', KEYS[1])\n"
              "  return 1\n"
              "end\n"
              "return 0\n");

/* KEYS: claim, done. Returns 0 unknown, 1 running (now cancelled), 2 done. */
static st_script cancel_script =
    ST_SCRIPT("if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end\n"
              "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
              "  redis.call('HSET', KEYS[1], 'cancel', '1')\n"
              "  return 1\n"
              "end\n"
              "return 0\n");

/* ---- Connection --------------------------------------------------------- */

static void set_err(st_redis *r, const char *what) {
  if (r->c != NULL && r->c->err != 0)
    snprintf(r->errstr, sizeof r->errstr, "%.60s: %.60s", what, r->c->errstr);
  else
    snprintf(r->errstr, sizeof r->errstr, "%.120s", what);
}

static int do_connect(st_redis *r) {
  struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
  if (r->c != NULL) {
    redisFree(r->c);
    r->c = NULL;
  }
  r->c = redisConnectWithTimeout(r->host, r->port, tv);
  if (r->c == NULL) {
    set_err(r, "cannot allocate a Redis context");
    return NIMBUS_EREDIS;
  }
  if (r->c->err != 0) {
    set_err(r, "cannot connect to Redis");
    return NIMBUS_EREDIS;
  }
  /* Commands get a generous bound: a lost server must not hang a worker
   * thread forever, but a busy one must not fail healthy calls. */
  struct timeval ctv = {10, 0};
  redisSetTimeout(r->c, ctv);
  if (r->password != NULL && r->password[0] != '\0') {
    redisReply *rep = redisCommand(r->c, "AUTH %s", r->password);
    bool ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
    if (!ok)
      set_err(r, rep != NULL && rep->type == REDIS_REPLY_ERROR
                     ? rep->str
                     : "Redis AUTH failed");
    freeReplyObject(rep);
    if (!ok)
      return NIMBUS_EREDIS;
  }
  return 0;
}

int st_redis_connect(const char *host, int port, const char *password,
                     int timeout_ms, st_redis **out, char *errbuf,
                     size_t errcap) {
  st_redis *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NIMBUS_ENOMEM;
  r->host = strdup(host);
  r->password = password != NULL ? strdup(password) : NULL;
  if (r->host == NULL || (password != NULL && r->password == NULL)) {
    st_redis_free(r);
    return NIMBUS_ENOMEM;
  }
  r->port = port;
  r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
  int rc = do_connect(r);
  if (rc != 0) {
    if (errbuf != NULL && errcap > 0)
      snprintf(errbuf, errcap, "%s (redis %s:%d)", r->errstr, host, port);
    st_redis_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

void st_redis_free(st_redis *r) {
  if (r == NULL)
    return;
  if (r->c != NULL)
    redisFree(r->c);
  free(r->host);
  free(r->password);
  free(r);
}

const char *st_redis_errstr(const st_redis *r) { return r->errstr; }

int st_redis_reconnect(st_redis *r) { return do_connect(r); }

/* Runs one command given as argv; on a broken connection reconnects once
 * and tries again. Returns the reply (caller frees) or NULL with errstr. */
static redisReply *cmd_argv(st_redis *r, int argc, const char **argv,
                            const size_t *lens) {
  for (int attempt = 0; attempt < 2; attempt++) {
    if (r->c == NULL || r->c->err != 0) {
      if (do_connect(r) != 0)
        return NULL;
    }
    redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
    if (rep != NULL)
      return rep;
    set_err(r, "Redis connection lost");
  }
  return NULL;
}

/* ---- Scripts: one way to run them ---------------------------------------- */

/* Serialises the first computation of each script's SHA; afterwards the
 * flag alone is read. */
static pthread_mutex_t sha_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *script_sha(st_script *s) {
  if (atomic_load_explicit(&s->ready, memory_order_acquire))
    return s->sha;
  pthread_mutex_lock(&sha_mu);
  if (!atomic_load_explicit(&s->ready, memory_order_relaxed)) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(s->src, s->len, d, &n, EVP_sha1(), NULL) == 1 && n == 20) {
      nb_hex(d, 20, s->sha);
      atomic_store_explicit(&s->ready, true, memory_order_release);
    }
  }
  pthread_mutex_unlock(&sha_mu);
  /* Should OpenSSL fail (it does not for SHA-1 short of memory), the text
   * is sent each time instead: slower, never wrong. */
  return atomic_load_explicit(&s->ready, memory_order_acquire) ? s->sha : NULL;
}

redisReply *st__eval(st_redis *r, st_script *s, int numkeys, int argc,
                     const char **argv, size_t *lens) {
  char nk[16];
  size_t mine[16];
  size_t *l = lens;
  if (l == NULL) {
    l = argc <= 16 ? mine : malloc((size_t)argc * sizeof *l);
    if (l == NULL) {
      set_err(r, "out of memory");
      return NULL;
    }
    for (int i = 3; i < argc; i++)
      l[i] = strlen(argv[i]);
  }
  snprintf(nk, sizeof nk, "%d", numkeys);
  const char *sha = script_sha(s);
  redisReply *rep = NULL;
  for (int attempt = sha != NULL ? 0 : 1; attempt < 2; attempt++) {
    argv[0] = attempt == 0 ? "EVALSHA" : "EVAL";
    l[0] = strlen(argv[0]);
    argv[1] = attempt == 0 ? sha : s->src;
    l[1] = attempt == 0 ? 40 : s->len;
    argv[2] = nk;
    l[2] = strlen(nk);
    rep = cmd_argv(r, argc, argv, l);
    if (rep == NULL)
      break;
    if (attempt == 0 && rep->type == REDIS_REPLY_ERROR &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
      freeReplyObject(rep);
      rep = NULL;
      continue;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
      set_err(r, rep->str);
      freeReplyObject(rep);
      rep = NULL;
    }
    break;
  }
  if (l != lens && l != mine)
    free(l);
  return rep;
}

/* ---- Keys ---------------------------------------------------------------- */

static int task_key(char *out, size_t cap, const char *kind,
                    const char *terminal, const char *id) {
  int n = snprintf(out, cap, KEY_PREFIX "%s:%s:%s", kind, terminal, id);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

#define KEY_CAP 160

/* ---- Claims -------------------------------------------------------------- */

int st_task_claim(st_redis *r, const char *terminal, const char *id,
                  const uint8_t digest[32], const char *owner, int64_t lease_ms,
                  st_claim_state *state, char **reply, size_t *reply_len) {
  char ck[KEY_CAP], dk[KEY_CAP], lease[24];
  *reply = NULL;
  *reply_len = 0;
  if (task_key(ck, sizeof ck, "claim", terminal, id) != 0 ||
      task_key(dk, sizeof dk, "done", terminal, id) != 0)
    return NIMBUS_EINVAL;
  snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
  const char *argv[8] = {NULL,  NULL, NULL, ck, dk, (const char *)digest,
                         owner, lease};
  size_t lens[8] = {
      0, 0, 0, strlen(ck), strlen(dk), 32, strlen(owner), strlen(lease)};
  redisReply *rep = st__eval(r, &claim_script, 2, 8, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      rep->element[0]->type != REDIS_REPLY_STRING) {
    set_err(r, "unexpected answer to the claim script");
    rc = NIMBUS_EREDIS;
    goto done;
  }
  const char *what = rep->element[0]->str;
  if (strcmp(what, "taken") == 0) {
    *state = ST_CLAIM_TAKEN;
  } else if (strcmp(what, "running") == 0) {
    *state = ST_CLAIM_RUNNING;
  } else if (strcmp(what, "conflict") == 0) {
    *state = ST_CLAIM_CONFLICT;
  } else if (strcmp(what, "done") == 0 && rep->elements == 2 &&
             rep->element[1]->type == REDIS_REPLY_STRING) {
    *reply = malloc(rep->element[1]->len + 1);
    if (*reply == NULL) {
      rc = NIMBUS_ENOMEM;
      goto done;
    }
    memcpy(*reply, rep->element[1]->str, rep->element[1]->len);
    (*reply)[rep->element[1]->len] = '\0';
    *reply_len = rep->element[1]->len;
    *state = ST_CLAIM_DONE;
  } else {
    set_err(r, "unexpected answer to the claim script");
    rc = NIMBUS_EREDIS;
  }
done:
  freeReplyObject(rep);
  return rc;
}

int st_claims_renew(st_redis *r, const char *owner, int64_t lease_ms,
                    st_claim_ref *refs, size_t n) {
  if (n == 0)
    return 0;
  int rc = NIMBUS_ENOMEM;
  size_t argc = 3 + n + 2;
  const char **argv = calloc(argc, sizeof *argv);
  size_t *lens = calloc(argc, sizeof *lens);
  char(*keys)[KEY_CAP] = calloc(n, KEY_CAP);
  redisReply *rep = NULL;
  char lease[24];
  if (argv == NULL || lens == NULL || keys == NULL)
    goto fail;
  for (size_t i = 0; i < n; i++) {
    if (task_key(keys[i], KEY_CAP, "claim", refs[i].terminal, refs[i].id) !=
        0) {
      rc = NIMBUS_EINVAL;
      goto fail;
    }
    argv[3 + i] = keys[i];
    lens[3 + i] = strlen(keys[i]);
  }
  snprintf(lease, sizeof lease, "%lld", (long long)lease_ms);
  argv[3 + n] = owner;
  lens[3 + n] = strlen(owner);
  argv[4 + n] = lease;
  lens[4 + n] = strlen(lease);
  rep = st__eval(r, &renew_script, (int)n, (int)argc, argv, lens);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
    goto fail;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
    set_err(r, "unexpected answer to the renew script");
    rc = NIMBUS_EREDIS;
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    long long v = rep->element[i]->type == REDIS_REPLY_INTEGER
                      ? rep->element[i]->integer
                      : 0;
    refs[i].lost = v == 0;
    refs[i].cancel = v == 2;
  }
  rc = 0;
fail:
  freeReplyObject(rep);
  free(argv);
  free(lens);
  free(keys);
  return rc;
}

/* ---- Effects ------------------------------------------------------------- */

typedef struct txn_arg {
  char *p;
  size_t n;
  bool key; /* goes to KEYS, not ARGV */
} txn_arg;

struct st_txn {
  txn_arg *args; /* for each command: its argc as text, its spec (see
                    commit_script), then its args */
  size_t nargs, cap;
  size_t ncmds;
  size_t nkeys;
};

/* The commands an effect may hold, and which of their arguments are keys:
 * from `first` to `last` (-1: to the end). The pseudo-commands of the
 * conditions name their key first too. */
static const struct txn_cmd {
  const char *name;
  int first, last;
} txn_cmds[] = {
    {"HSET", 1, 1},        {"HSETNX", 1, 1},
    {"HDEL", 1, 1},        {"HINCRBY", 1, 1},
    {"SET", 1, 1},         {"SETBIT", 1, 1},
    {"DEL", 1, -1},        {"UNLINK", 1, -1},
    {"PEXPIRE", 1, 1},     {"EXPIRE", 1, 1},
    {"SADD", 1, 1},        {"SREM", 1, 1},
    {"ZADD", 1, 1},        {"ZREM", 1, 1},
    {"INCR", 1, 1},        {"INCRBY", 1, 1},
    {"NB-REQUIRE", 1, 1},  {"NB-FORBID", 1, 1},
    {"NB-IFEQ", 1, 1},     {"ZREMRANGEBYSCORE", 1, 1},
    {"NB-HINCRBYX", 1, 1},
};

static const struct txn_cmd *txn_cmd_find(const char *name, size_t n) {
  for (size_t i = 0; i < sizeof txn_cmds / sizeof txn_cmds[0]; i++)
    if (strlen(txn_cmds[i].name) == n &&
        strncasecmp(txn_cmds[i].name, name, n) == 0)
      return &txn_cmds[i];
  return NULL;
}

st_txn *st_txn_new(void) { return calloc(1, sizeof(st_txn)); }

void st_txn_free(st_txn *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->nargs; i++)
    free(t->args[i].p);
  free(t->args);
  free(t);
}

size_t st_txn_count(const st_txn *t) { return t != NULL ? t->ncmds : 0; }

static int txn_push(st_txn *t, const char *p, size_t n, bool key) {
  if (t->nargs == t->cap) {
    size_t cap = t->cap != 0 ? t->cap * 2 : 16;
    txn_arg *a = realloc(t->args, cap * sizeof *a);
    if (a == NULL)
      return NIMBUS_ENOMEM;
    t->args = a;
    t->cap = cap;
  }
  char *copy = malloc(n + 1);
  if (copy == NULL)
    return NIMBUS_ENOMEM;
  memcpy(copy, p, n);
  copy[n] = '\0';
  t->args[t->nargs].p = copy;
  t->args[t->nargs].n = n;
  t->args[t->nargs].key = key;
  t->nargs++;
  return 0;
}

int st_txn_require(st_txn *t, const char *key) {
  const char *argv[2] = {"NB-REQUIRE", key};
  return st_txn_add(t, 2, argv, NULL);
}

int st_txn_forbid(st_txn *t, const char *key) {
  const char *argv[2] = {"NB-FORBID", key};
  return st_txn_add(t, 2, argv, NULL);
}

int st_txn_pin_field(st_txn *t, const char *key, const char *field,
                     const void *value, size_t len) {
  const char *argv[4] = {"NB-IFEQ", key, field, value};
  size_t lens[4] = {7, strlen(key), strlen(field), len};
  return st_txn_add(t, 4, argv, lens);
}

int st_txn_add(st_txn *t, int argc, const char *const *argv,
               const size_t *lens) {
  if (argc < 1 || argc > 64)
    return NIMBUS_EINVAL;
  const struct txn_cmd *cmd =
      txn_cmd_find(argv[0], lens != NULL ? lens[0] : strlen(argv[0]));
  if (cmd == NULL)
    return NIMBUS_EINVAL;
  char num[16], spec[65];
  size_t keys = 0;
  for (int i = 0; i < argc; i++) {
    bool key = i >= cmd->first && (cmd->last < 0 || i <= cmd->last);
    spec[i] = key ? 'k' : 'v';
    keys += key;
  }
  int n = snprintf(num, sizeof num, "%d", argc);
  size_t mark = t->nargs;
  int rc = txn_push(t, num, (size_t)n, false);
  if (rc == 0)
    rc = txn_push(t, spec, (size_t)argc, false);
  for (int i = 0; rc == 0 && i < argc; i++)
    rc = txn_push(t, argv[i], lens != NULL ? lens[i] : strlen(argv[i]),
                  spec[i] == 'k');
  if (rc != 0) {
    while (t->nargs > mark)
      free(t->args[--t->nargs].p);
    return rc;
  }
  t->ncmds++;
  t->nkeys += keys;
  return 0;
}

int st_task_commit(st_redis *r, const char *terminal, const char *id,
                   const char *owner, const uint8_t digest[32],
                   const st_txn *effect, const void *reply, size_t reply_len,
                   int64_t result_ttl_ms) {
  char ck[KEY_CAP], dk[KEY_CAP], ttl[24], ncmds[24];
  if (task_key(ck, sizeof ck, "claim", terminal, id) != 0 ||
      task_key(dk, sizeof dk, "done", terminal, id) != 0)
    return NIMBUS_EINVAL;
  size_t extra = effect != NULL ? effect->nargs : 0;
  size_t nkeys = effect != NULL ? effect->nkeys : 0;
  size_t argc = 3 + 2 + 5 + extra;
  const char **argv = calloc(argc, sizeof *argv);
  size_t *lens = calloc(argc, sizeof *lens);
  int rc = NIMBUS_ENOMEM;
  redisReply *rep = NULL;
  if (argv == NULL || lens == NULL)
    goto fail;
  snprintf(ttl, sizeof ttl, "%lld", (long long)result_ttl_ms);
  snprintf(ncmds, sizeof ncmds, "%zu", st_txn_count(effect));
  /* KEYS: the claim, the record, the effect's keys; then ARGV. */
  size_t k = 3, v = 5 + nkeys;
  argv[k] = ck;
  lens[k++] = strlen(ck);
  argv[k] = dk;
  lens[k++] = strlen(dk);
  argv[v] = owner;
  lens[v++] = strlen(owner);
  argv[v] = (const char *)digest;
  lens[v++] = 32;
  argv[v] = reply;
  lens[v++] = reply_len;
  argv[v] = ttl;
  lens[v++] = strlen(ttl);
  argv[v] = ncmds;
  lens[v++] = strlen(ncmds);
  for (size_t i = 0; i < extra; i++) {
    size_t *at = effect->args[i].key ? &k : &v;
    argv[*at] = effect->args[i].p;
    lens[(*at)++] = effect->args[i].n;
  }
  rep = st__eval(r, &commit_script, (int)(2 + nkeys), (int)argc, argv, lens);
  if (rep == NULL) {
    rc = NIMBUS_EREDIS;
    goto fail;
  }
  if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 2) {
    set_err(r, "a key the effect requires is gone");
    rc = NIMBUS_ECONFLICT;
  } else {
    rc = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1 ? 0
                                                               : NIMBUS_ELOST;
  }
fail:
  freeReplyObject(rep);
  free(argv);
  free(lens);
  return rc;
}

int st_task_release(st_redis *r, const char *terminal, const char *id,
                    const char *owner) {
  char ck[KEY_CAP];
  if (task_key(ck, sizeof ck, "claim", terminal, id) != 0)
    return NIMBUS_EINVAL;
  const char *argv[5] = {NULL, NULL, NULL, ck, owner};
  size_t lens[5] = {0, 0, 0, strlen(ck), strlen(owner)};
  redisReply *rep = st__eval(r, &release_script, 1, 5, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  freeReplyObject(rep);
  return 0;
}

int st_task_state_get(st_redis *r, const char *terminal, const char *id,
                      st_task_state *state, char **reply, size_t *reply_len) {
  char ck[KEY_CAP], dk[KEY_CAP];
  *reply = NULL;
  *reply_len = 0;
  if (task_key(ck, sizeof ck, "claim", terminal, id) != 0 ||
      task_key(dk, sizeof dk, "done", terminal, id) != 0)
    return NIMBUS_EINVAL;
  const char *argv[3] = {"HGET", dk, "reply"};
  redisReply *rep = cmd_argv(r, 3, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  if (rep->type == REDIS_REPLY_STRING) {
    *reply = malloc(rep->len + 1);
    if (*reply == NULL) {
      freeReplyObject(rep);
      return NIMBUS_ENOMEM;
    }
    memcpy(*reply, rep->str, rep->len);
    (*reply)[rep->len] = '\0';
    *reply_len = rep->len;
    *state = ST_TASK_DONE;
    freeReplyObject(rep);
    return 0;
  }
  freeReplyObject(rep);
  const char *argv2[2] = {"EXISTS", ck};
  rep = cmd_argv(r, 2, argv2, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  *state = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1
               ? ST_TASK_RUNNING
               : ST_TASK_UNKNOWN;
  freeReplyObject(rep);
  return 0;
}

int st_task_cancel(st_redis *r, const char *terminal, const char *id,
                   st_task_state *state) {
  char ck[KEY_CAP], dk[KEY_CAP];
  if (task_key(ck, sizeof ck, "claim", terminal, id) != 0 ||
      task_key(dk, sizeof dk, "done", terminal, id) != 0)
    return NIMBUS_EINVAL;
  const char *argv[5] = {NULL, NULL, NULL, ck, dk};
  size_t lens[5] = {0, 0, 0, strlen(ck), strlen(dk)};
  redisReply *rep = st__eval(r, &cancel_script, 2, 5, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
  *state = v == 2 ? ST_TASK_DONE : v == 1 ? ST_TASK_RUNNING : ST_TASK_UNKNOWN;
  freeReplyObject(rep);
  return 0;
}

/* ---- Types --------------------------------------------------------------- */

int st_types_announce(st_redis *r, const char *const *types, size_t n) {
  if (n == 0)
    return 0;
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)nb_now_ms());
  size_t argc = 2 + 2 * n;
  const char **argv = calloc(argc, sizeof *argv);
  if (argv == NULL)
    return NIMBUS_ENOMEM;
  argv[0] = "HSET";
  argv[1] = KEY_PREFIX "types";
  for (size_t i = 0; i < n; i++) {
    argv[2 + 2 * i] = types[i];
    argv[3 + 2 * i] = now;
  }
  redisReply *rep = cmd_argv(r, (int)argc, argv, NULL);
  free(argv);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = rep->type == REDIS_REPLY_ERROR ? NIMBUS_EREDIS : 0;
  if (rc != 0)
    set_err(r, rep->str);
  freeReplyObject(rep);
  return rc;
}

int st_types_list(st_redis *r, int64_t max_age_ms, char ***types, size_t *n) {
  *types = NULL;
  *n = 0;
  const char *argv[2] = {"HGETALL", KEY_PREFIX "types"};
  redisReply *rep = cmd_argv(r, 2, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY) {
    set_err(r, "unexpected answer to HGETALL");
    rc = NIMBUS_EREDIS;
    goto done;
  }
  *types = calloc(rep->elements / 2 + 1, sizeof **types);
  if (*types == NULL) {
    rc = NIMBUS_ENOMEM;
    goto done;
  }
  int64_t now = nb_now_ms();
  for (size_t i = 0; i + 1 < rep->elements; i += 2) {
    long long seen = strtoll(rep->element[i + 1]->str, NULL, 10);
    if (now - seen > max_age_ms)
      continue;
    char *t = strdup(rep->element[i]->str);
    if (t == NULL) {
      rc = NIMBUS_ENOMEM;
      goto done;
    }
    (*types)[(*n)++] = t;
  }
done:
  if (rc != 0 && *types != NULL) {
    for (size_t i = 0; i < *n; i++)
      free((*types)[i]);
    free(*types);
    *types = NULL;
    *n = 0;
  }
  freeReplyObject(rep);
  return rc;
}

/* ---- Diagnostics --------------------------------------------------------- */

int st_diag_count_effect(st_txn *t, const char *key) {
  char k[KEY_CAP];
  int n = snprintf(k, sizeof k, KEY_PREFIX "diag:%s", key);
  if (n < 0 || (size_t)n >= sizeof k)
    return NIMBUS_EINVAL;
  const char *argv[2] = {"INCR", k};
  return st_txn_add(t, 2, argv, NULL);
}

int st_diag_count_get(st_redis *r, const char *key, int64_t *out) {
  char k[KEY_CAP];
  int n = snprintf(k, sizeof k, KEY_PREFIX "diag:%s", key);
  if (n < 0 || (size_t)n >= sizeof k)
    return NIMBUS_EINVAL;
  const char *argv[2] = {"GET", k};
  redisReply *rep = cmd_argv(r, 2, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  *out = rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : 0;
  freeReplyObject(rep);
  return 0;
}

/* ---- For the other model files (st_internal.h) -------------------------- */

redisReply *st__cmd(st_redis *r, int argc, const char **argv,
                    const size_t *lens) {
  return cmd_argv(r, argc, argv, lens);
}

void st__set_err(st_redis *r, const char *what) { set_err(r, what); }

int st__fail(st_redis *r, const redisReply *rep, const char *what) {
  set_err(r, rep != NULL && rep->type == REDIS_REPLY_ERROR ? rep->str
             : what != NULL                                ? what
                            : "unexpected answer from Redis");
  return NIMBUS_EREDIS;
}

int st__due(st_redis *r, const char *key, int64_t until_ms, size_t max,
            const char *what, redisReply **out) {
  char until[24], lim[24], msg[96];
  snprintf(until, sizeof until, "%lld", (long long)until_ms);
  snprintf(lim, sizeof lim, "%zu", max);
  const char *argv[7] = {"ZRANGEBYSCORE", key, "-inf", until,
                         "LIMIT",         "0", lim};
  *out = cmd_argv(r, 7, argv, NULL);
  if (*out == NULL)
    return NIMBUS_EREDIS;
  if ((*out)->type == REDIS_REPLY_ARRAY)
    return 0;
  snprintf(msg, sizeof msg, "unexpected answer listing %s", what);
  int rc = st__fail(r, *out, msg);
  freeReplyObject(*out);
  *out = NULL;
  return rc;
}

int st__cmd_ok(st_redis *r, int argc, const char **argv) {
  redisReply *rep = cmd_argv(r, argc, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = rep->type == REDIS_REPLY_ERROR ? st__fail(r, rep, NULL) : 0;
  freeReplyObject(rep);
  return rc;
}

int st__hmget(st_redis *r, const char *key, const char *const *fields, size_t n,
              redisReply **out, const char *what) {
  *out = NULL;
  const char *argv[18] = {"HMGET", key};
  if (n > 16)
    return NIMBUS_EINVAL;
  for (size_t i = 0; i < n; i++)
    argv[2 + i] = fields[i];
  redisReply *rep = cmd_argv(r, (int)n + 2, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
    char msg[160];
    snprintf(msg, sizeof msg, "unexpected answer reading %s", what);
    int rc = st__fail(r, rep, msg);
    freeReplyObject(rep);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    if (rep->element[i]->type != REDIS_REPLY_STRING) {
      freeReplyObject(rep);
      return 0;
    }
  }
  *out = rep;
  return 0;
}

int st__eval_flag(st_redis *r, st_script *s, int numkeys, int argc,
                  const char **argv, size_t *lens, bool *flag,
                  const char *what) {
  redisReply *rep = st__eval(r, s, numkeys, argc, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_INTEGER) {
    char msg[160];
    snprintf(msg, sizeof msg, "unexpected answer %s", what);
    rc = st__fail(r, rep, msg);
  } else if (flag != NULL) {
    *flag = rep->integer == 1;
  }
  freeReplyObject(rep);
  return rc;
}

int st__keyf(char *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out, ST_KEY_CAP, fmt, ap);
  va_end(ap);
  return n > 0 && n < ST_KEY_CAP ? 0 : NIMBUS_EINVAL;
}

int st__blob_keys_of(st__blob_keys *k, const char *hex) {
  if (!nb_is_sha256_hex(hex))
    return NIMBUS_EINVAL;
  snprintf(k->meta, sizeof k->meta, "nb:blob:%s", hex);
  snprintf(k->sums, sizeof k->sums, "nb:blob:%s:sums", hex);
  snprintf(k->gone, sizeof k->gone, "nb:blob:%s:gone", hex);
  snprintf(k->mark, sizeof k->mark, "nb:blob:%s:committing", hex);
  return 0;
}

void st__strlist_free(char **list, size_t n) {
  if (list == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(list[i]);
  free(list);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int st__smembers(st_redis *r, const char *key, bool sort, char ***out,
                 size_t *n, const char *what) {
  *out = NULL;
  *n = 0;
  const char *argv[2] = {"SMEMBERS", key};
  redisReply *rep = cmd_argv(r, 2, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = 0;
  if (rep->type != REDIS_REPLY_ARRAY) {
    char msg[160];
    snprintf(msg, sizeof msg, "unexpected answer listing %s", what);
    rc = st__fail(r, rep, msg);
  } else if (rep->elements > 0) {
    if ((*out = calloc(rep->elements, sizeof **out)) == NULL)
      rc = NIMBUS_ENOMEM;
    for (size_t i = 0; rc == 0 && i < rep->elements; i++) {
      const redisReply *e = rep->element[i];
      if (e->type != REDIS_REPLY_STRING)
        continue;
      if (((*out)[*n] = strdup(e->str)) == NULL)
        rc = NIMBUS_ENOMEM;
      else
        (*n)++;
    }
    if (rc == 0 && sort)
      qsort(*out, *n, sizeof **out, cmp_str);
  }
  freeReplyObject(rep);
  if (rc != 0) {
    st__strlist_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return rc;
}
