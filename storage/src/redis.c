/* Nimbus state in Redis: the claim / recorded-reply machinery that gives
 * each task id exactly one effect (PROTOCOL.md, Delivery), and the registry
 * of task types the pool serves.
 *
 * Every state change that must be atomic runs as one Lua script, so a claim,
 * its renewal and the commit of a task's effect with its reply cannot
 * interleave with another worker's. Scripts are loaded once per connection
 * and called by SHA; a server that forgot them (restart, SCRIPT FLUSH) gets
 * them again. A broken connection is re-made once per call before the call
 * gives up with NIMBUS_EREDIS. */
#include "st.h"
#include "st_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct script {
  const char *src;
  char sha[41];
} script;

/* KEYS: claim, done. ARGV: digest, owner, lease_ms. */
static script claim_script = {
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
    "return {'taken'}\n",
    ""};

/* KEYS: claims. ARGV: owner, lease_ms. Per claim 0 lost, 1 held,
 * 2 held and cancelled. */
static script renew_script = {
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local c = redis.call('HMGET', k, 'owner', 'cancel')\n"
    "  if c[1] == ARGV[1] then\n"
    "    redis.call('PEXPIRE', k, ARGV[2])\n"
    "    if c[2] then out[i] = 2 else out[i] = 1 end\n"
    "  else\n"
    "    out[i] = 0\n"
    "  end\n"
    "end\n"
    "return out\n",
    ""};

/* KEYS: claim, done. ARGV: owner, digest, reply, ttl_ms, ncmds, then per
 * command its argc and arguments. The effect runs only while the claim is
 * ours, every key it requires exists, every key it forbids does not and
 * every hash field it pins is absent or holds the pinned value
 * (pseudo-commands NB-REQUIRE, NB-FORBID and NB-IFEQ, checked before
 * anything is written; no real command starts with "NB-"), and the reply is recorded in the same script: both or neither.
 * Returns 1 done, 0 claim lost, 2 a condition failed. */
static script commit_script = {
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
    "local i = 6\n"
    "for n = 1, tonumber(ARGV[5]) do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  if ARGV[i + 1] == 'NB-REQUIRE' and\n"
    "     redis.call('EXISTS', ARGV[i + 2]) == 0 then return 2 end\n"
    "  if ARGV[i + 1] == 'NB-FORBID' and\n"
    "     redis.call('EXISTS', ARGV[i + 2]) == 1 then return 2 end\n"
    "  if ARGV[i + 1] == 'NB-IFEQ' then\n"
    "    local v = redis.call('HGET', ARGV[i + 2], ARGV[i + 3])\n"
    "    if v and v ~= ARGV[i + 4] then return 2 end\n"
    "  end\n"
    "  i = i + argc + 1\n"
    "end\n"
    "i = 6\n"
    "for n = 1, tonumber(ARGV[5]) do\n"
    "  local argc = tonumber(ARGV[i])\n"
    "  if string.sub(ARGV[i + 1], 1, 3) ~= 'NB-' then\n"
    "    redis.call(unpack(ARGV, i + 1, i + argc))\n"
    "  end\n"
    "  i = i + argc + 1\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[2], 'digest', ARGV[2], 'reply', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "return 1\n",
    ""};

/* KEYS: claim. ARGV: owner. */
static script release_script = {
    "if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    ""};

/* KEYS: claim, done. Returns 0 unknown, 1 running (now cancelled), 2 done. */
static script cancel_script = {
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('HSET', KEYS[1], 'cancel', '1')\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    ""};

static script *const all_scripts[] = {&claim_script, &renew_script,
                                      &commit_script, &release_script,
                                      &cancel_script};

/* ---- Connection --------------------------------------------------------- */

static void set_err(st_redis *r, const char *what) {
  if (r->c != NULL && r->c->err != 0)
    snprintf(r->errstr, sizeof r->errstr, "%.60s: %.60s", what, r->c->errstr);
  else
    snprintf(r->errstr, sizeof r->errstr, "%.120s", what);
}

static int load_scripts(st_redis *r) {
  for (size_t i = 0; i < sizeof all_scripts / sizeof all_scripts[0]; i++) {
    script *s = all_scripts[i];
    redisReply *rep = redisCommand(r->c, "SCRIPT LOAD %s", s->src);
    if (rep == NULL || rep->type != REDIS_REPLY_STRING || rep->len != 40) {
      set_err(r, rep != NULL && rep->type == REDIS_REPLY_ERROR
                     ? rep->str
                     : "cannot load a Lua script");
      freeReplyObject(rep);
      return NIMBUS_EREDIS;
    }
    /* Same text, same SHA on every server: writing it again is harmless. */
    memcpy(s->sha, rep->str, 40);
    s->sha[40] = '\0';
    freeReplyObject(rep);
  }
  return 0;
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
  return load_scripts(r);
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

/* Calls a loaded script by SHA; loads the scripts again when the server no
 * longer knows it (restart without persistence of the script cache). */
static redisReply *eval(st_redis *r, script *s, int numkeys, int argc,
                        const char **argv, size_t *lens) {
  /* argv[0..2] are reserved for EVALSHA sha numkeys. */
  char nk[16];
  snprintf(nk, sizeof nk, "%d", numkeys);
  for (int attempt = 0; attempt < 2; attempt++) {
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = s->sha;
    lens[1] = 40;
    argv[2] = nk;
    lens[2] = strlen(nk);
    redisReply *rep = cmd_argv(r, argc, argv, lens);
    if (rep == NULL)
      return NULL;
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
      freeReplyObject(rep);
      if (load_scripts(r) != 0)
        return NULL;
      continue;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
      set_err(r, rep->str);
      freeReplyObject(rep);
      return NULL;
    }
    return rep;
  }
  return NULL;
}

/* ---- Keys ---------------------------------------------------------------- */

static int task_key(char *out, size_t cap, const char *kind,
                    const char *terminal, const char *id) {
  int n = snprintf(out, cap, KEY_PREFIX "%s:%s:%s", kind, terminal, id);
  return n > 0 && (size_t)n < cap ? 0 : NIMBUS_EINVAL;
}

#define KEY_CAP 160

/* ---- Claims --------------------------------------------------------------- */

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
  const char *argv[8] = {NULL, NULL, NULL, ck, dk, (const char *)digest,
                         owner, lease};
  size_t lens[8] = {0, 0, 0, strlen(ck), strlen(dk), 32, strlen(owner),
                    strlen(lease)};
  redisReply *rep = eval(r, &claim_script, 2, 8, argv, lens);
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
    if (task_key(keys[i], KEY_CAP, "claim", refs[i].terminal, refs[i].id) != 0) {
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
  rep = eval(r, &renew_script, (int)n, (int)argc, argv, lens);
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

/* ---- Effects ---------------------------------------------------------------- */

typedef struct txn_arg {
  char *p;
  size_t n;
} txn_arg;

struct st_txn {
  txn_arg *args; /* for each command: its argc as text, then its args */
  size_t nargs, cap;
  size_t ncmds;
};

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

static int txn_push(st_txn *t, const char *p, size_t n) {
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
  char num[16];
  int n = snprintf(num, sizeof num, "%d", argc);
  size_t mark = t->nargs;
  int rc = txn_push(t, num, (size_t)n);
  for (int i = 0; rc == 0 && i < argc; i++)
    rc = txn_push(t, argv[i], lens != NULL ? lens[i] : strlen(argv[i]));
  if (rc != 0) {
    while (t->nargs > mark)
      free(t->args[--t->nargs].p);
    return rc;
  }
  t->ncmds++;
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
  size_t argc = 3 + 2 + 5 + extra;
  const char **argv = calloc(argc, sizeof *argv);
  size_t *lens = calloc(argc, sizeof *lens);
  int rc = NIMBUS_ENOMEM;
  redisReply *rep = NULL;
  if (argv == NULL || lens == NULL)
    goto fail;
  snprintf(ttl, sizeof ttl, "%lld", (long long)result_ttl_ms);
  snprintf(ncmds, sizeof ncmds, "%zu", st_txn_count(effect));
  argv[3] = ck;
  lens[3] = strlen(ck);
  argv[4] = dk;
  lens[4] = strlen(dk);
  argv[5] = owner;
  lens[5] = strlen(owner);
  argv[6] = (const char *)digest;
  lens[6] = 32;
  argv[7] = reply;
  lens[7] = reply_len;
  argv[8] = ttl;
  lens[8] = strlen(ttl);
  argv[9] = ncmds;
  lens[9] = strlen(ncmds);
  for (size_t i = 0; i < extra; i++) {
    argv[10 + i] = effect->args[i].p;
    lens[10 + i] = effect->args[i].n;
  }
  rep = eval(r, &commit_script, 2, (int)argc, argv, lens);
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
  redisReply *rep = eval(r, &release_script, 1, 5, argv, lens);
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
  redisReply *rep = eval(r, &cancel_script, 2, 5, argv, lens);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
  *state = v == 2 ? ST_TASK_DONE : v == 1 ? ST_TASK_RUNNING : ST_TASK_UNKNOWN;
  freeReplyObject(rep);
  return 0;
}

/* ---- Types ------------------------------------------------------------------- */

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

int st_types_list(st_redis *r, int64_t max_age_ms, char ***types,
                  size_t *n) {
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

/* ---- Diagnostics ------------------------------------------------------------- */

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
  set_err(r, rep != NULL && rep->type == REDIS_REPLY_ERROR
                 ? rep->str
                 : what != NULL ? what : "unexpected answer from Redis");
  return NIMBUS_EREDIS;
}

int st__cmd_ok(st_redis *r, int argc, const char **argv) {
  redisReply *rep = cmd_argv(r, argc, argv, NULL);
  if (rep == NULL)
    return NIMBUS_EREDIS;
  int rc = rep->type == REDIS_REPLY_ERROR ? st__fail(r, rep, NULL) : 0;
  freeReplyObject(rep);
  return rc;
}
