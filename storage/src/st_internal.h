/* What the storage module's own files share and nothing outside sees: the
 * raw command and script calls of redis.c, for the model files beside it
 * (blobmodel.c, backupmodel.c). */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include "st.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>

/* A Lua script, run one way: EVALSHA with its SHA-1, computed from the
 * text once per process (the first call that needs it), and on NOSCRIPT
 * (a server that never saw it, restarted, or flushed its cache) EVAL of
 * the text, which also loads it there. Every key the script touches is
 * passed in KEYS, never built inside it or passed in ARGV, so Redis
 * Cluster can route it. Define with ST_SCRIPT at file scope. */
typedef struct st_script {
  const char *src;
  size_t len;
  atomic_bool ready; /* sha is computed (release/acquire) */
  char sha[41];
} st_script;
#define ST_SCRIPT(text)                                                        \
  { (text), sizeof(text) - 1, false, "" }

/* Runs script `s` with `numkeys` keys: argv[3 .. argc-1] are its KEYS
 * then its ARGV (argv[0..2] are the caller's to leave empty: they are
 * filled here); `lens` gives their lengths, or NULL when all are C
 * strings. Reconnects once on a broken connection. Returns the reply
 * (caller frees), or NULL with the reason in st_redis_errstr, an error
 * reply of the script included. */
redisReply *st__eval(st_redis *r, st_script *s, int numkeys, int argc,
                     const char **argv, size_t *lens);

/* st__eval for a script that answers 0 or 1: 0 with *flag set (flag may
 * be NULL), or NIMBUS_EREDIS (`what`, e.g. "reserving an upload", names
 * the work in the error text for another answer). */
int st__eval_flag(st_redis *r, st_script *s, int numkeys, int argc,
                  const char **argv, size_t *lens, bool *flag,
                  const char *what);

/* Milliseconds clamped to the 13 digits keys and ids spell them with
 * (%013lld: they last until the year 2286), never negative. */
static inline long long st__ms13(int64_t ms) {
  return ms < 0 ? 0 : ms > 9999999999999LL ? 9999999999999LL : (long long)ms;
}

/* Runs one command given as argv (lens NULL: C strings), reconnecting once
 * on a broken connection. Returns the reply, which the caller frees, or
 * NULL with the reason in st_redis_errstr. An error reply is returned as
 * such. */
redisReply *st__cmd(st_redis *r, int argc, const char **argv,
                    const size_t *lens);
/* Sets the context's error text. */
void st__set_err(st_redis *r, const char *what);
/* For a reply that is an error or not of the expected shape: sets the
 * error text to the server's message, or else to `what`, and returns
 * NIMBUS_EREDIS. `rep` may be NULL. */
int st__fail(st_redis *r, const redisReply *rep, const char *what);
/* Runs one command whose answer does not matter beyond success (argv C
 * strings). Returns 0, or NIMBUS_EREDIS for a lost connection or an error
 * reply. */
int st__cmd_ok(st_redis *r, int argc, const char **argv);
/* Reads fields[0..n) (n at most 16) of hash `key` with HMGET. Returns 0
 * with *out the array reply (caller frees) when every field is there as
 * a string, 0 with *out NULL when any is missing (no such record, or one
 * not of our shape: none), or NIMBUS_EREDIS (`what` names the record in
 * the error text). */
int st__hmget(st_redis *r, const char *key, const char *const *fields, size_t n,
              redisReply **out, const char *what);

/* The members of sorted set `key` whose score is at most until_ms, lowest
 * first, at most `max` of them (a queue's due entries, an index's ended
 * ones): 0 with *out, an array reply the caller frees; or NIMBUS_EREDIS
 * (*out NULL; `what`, e.g. "ended shares", names them in the error). */
int st__due(st_redis *r, const char *key, int64_t until_ms, size_t max,
            const char *what, redisReply **out);

/* The room every key name of ours fits in. */
#define ST_KEY_CAP 200

/* Keys more than one model file names: the blobs of published agent
 * packages (agentmodel.c), a terminal's result grants (resultmodel.c);
 * both read by st_blobs_granted (sharemodel.c). */
#define ST_AGENT_BLOBS "nb:agent:blobs"
#define ST_RGRANT_FMT "nb:rgrant:%s"

/* snprintf of one key name into out (ST_KEY_CAP bytes): 0, or
 * NIMBUS_EINVAL when it would not fit. */
int st__keyf(char *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The keys of blob `hex`'s bookkeeping that a script recording a
 * reference to it (a result, a module, an agent package) touches: its
 * metadata (size, refs), its segment sums, its tombstone (the collector
 * is removing it) and its commit mark. */
typedef struct st__blob_keys {
  char meta[96], sums[96], gone[96], mark[96];
} st__blob_keys;

/* Fills *k for hex, which must be 64 lower-case hex digits. Returns 0 or
 * NIMBUS_EINVAL. */
int st__blob_keys_of(st__blob_keys *k, const char *hex);

/* Lua: gives a committed blob its metadata again when a Redis restored
 * from an older state lost it (KEYS[META] its hash, KEYS[SUMS] its sums;
 * ARGV[SIZE] and ARGV[SUMV] their values, all as decimal literals). */
#define ST_LUA_BLOB_META(META, SUMS, SIZE, SUMV)                               \
  "if redis.call('EXISTS', KEYS[" #META "]) == 0 or\n"                         \
  "   redis.call('EXISTS', KEYS[" #SUMS "]) == 0 then\n"                       \
  "  redis.call('HSET', KEYS[" #META "], 'size', ARGV[" #SIZE "])\n"           \
  "  redis.call('SET', KEYS[" #SUMS "], ARGV[" #SUMV "])\n"                    \
  "end\n"

/* The members of set `key` as new strings (sorted bytewise when `sort`):
 * 0 with *out (free with st__strlist_free; NULL when empty) and *n; or
 * NIMBUS_EREDIS (`what` names them in the error) or NIMBUS_ENOMEM, with
 * *out NULL and *n 0. */
int st__smembers(st_redis *r, const char *key, bool sort, char ***out,
                 size_t *n, const char *what);
/* Frees a list of n strings and the list; NULL is a no-op. */
void st__strlist_free(char **list, size_t n);

#endif
