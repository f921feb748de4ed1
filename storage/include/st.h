/* Nimbus state in Redis: task claims and recorded replies (the one-effect-
 * per-task-id machinery of PROTOCOL.md, Delivery), the registry of task
 * types the pool serves, and later snapshots, shares and upload progress.
 *
 * Only this module includes hiredis. An st_redis is one connection and is
 * not thread-safe: give each thread its own (hiredis is not thread-safe).
 * Every function returns 0 or a nimbus_err; on NIMBUS_EREDIS the context's
 * errstr says what Redis or the connection reported.
 *
 * Keys (prefix "nb:" by default):
 *   nb:claim:<terminal>:<id>  hash {owner, digest, cancel}, PEXPIRE = lease
 *   nb:done:<terminal>:<id>   hash {digest, reply}, PEXPIRE = result_ttl
 *   nb:types                  hash type -> last time a worker served it */
#ifndef ST_H
#define ST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_redis st_redis;

/* Connects to Redis at host:port within timeout_ms, authenticating with
 * `password` when it is non-NULL and non-empty. On success *out is a new
 * context the caller owns (st_redis_free). On failure returns
 * NIMBUS_EREDIS and writes the reason into errbuf (errcap bytes). */
int st_redis_connect(const char *host, int port, const char *password,
                     int timeout_ms, st_redis **out, char *errbuf,
                     size_t errcap);
/* Closes and frees; NULL is a no-op. */
void st_redis_free(st_redis *r);
/* The last error text of `r` (borrowed, valid until the next call). */
const char *st_redis_errstr(const st_redis *r);
/* Reconnects a context whose connection broke. Returns 0 or EREDIS. */
int st_redis_reconnect(st_redis *r);

/* ---- Task claims and recorded replies ---------------------------------- */

typedef enum st_claim_state {
  ST_CLAIM_TAKEN = 0, /* the claim is ours: run the task */
  ST_CLAIM_RUNNING,   /* another live claim holds it: answer progress */
  ST_CLAIM_DONE,      /* a recorded reply exists: replay it */
  ST_CLAIM_CONFLICT,  /* the id is known with other content: 409 */
} st_claim_state;

/* Atomically looks at (terminal, id): a recorded reply with the same
 * digest -> DONE and *reply, *reply_len receive a malloc'd copy of it (the
 * caller frees); with another digest -> CONFLICT; a live claim -> RUNNING
 * (or CONFLICT for another digest); nothing -> a new claim owned by `owner`
 * for lease_ms -> TAKEN. `digest` is the 32-byte SHA-256 of the task's
 * canonical content. All strings borrowed. */
int st_task_claim(st_redis *r, const char *terminal, const char *id,
                  const uint8_t digest[32], const char *owner, int64_t lease_ms,
                  st_claim_state *state, char **reply, size_t *reply_len);

/* One claim held by this worker, for st_claims_renew. */
typedef struct st_claim_ref {
  const char *terminal; /* borrowed */
  const char *id;       /* borrowed */
  bool lost;            /* out: the claim is no longer ours */
  bool cancel;          /* out: task.cancel asked to stop it */
} st_claim_ref;

/* Extends each claim in `refs` owned by `owner` to lease_ms from now, in
 * one round trip, and reports per claim whether it was lost or cancelled. */
int st_claims_renew(st_redis *r, const char *owner, int64_t lease_ms,
                    st_claim_ref *refs, size_t n);

/* A list of Redis commands that make up a task's effect, applied atomically
 * together with its recorded reply by st_task_commit. */
typedef struct st_txn st_txn;

/* Returns a new empty transaction (caller frees with st_txn_free) or NULL
 * when out of memory. */
st_txn *st_txn_new(void);
void st_txn_free(st_txn *t);
/* Appends one command of `argc` (1-64) arguments (copied; `argv`/`lens`
 * borrowed; lens NULL: C strings). argv[0] is one of the commands the
 * effect knows the keys of (HSET HSETNX HDEL HINCRBY SET SETBIT DEL UNLINK
 * PEXPIRE EXPIRE SADD SREM ZADD ZREM ZREMRANGEBYSCORE INCR INCRBY, and
 * NB-HINCRBYX: HINCRBY of a hash only while it exists), so that every key
 * reaches the script in KEYS, as Redis Cluster requires. Returns 0,
 * NIMBUS_EINVAL (another command, or argc out of range) or
 * NIMBUS_ENOMEM. */
int st_txn_add(st_txn *t, int argc, const char *const *argv,
               const size_t *lens);
/* Makes the whole effect conditional on `key` (copied) existing when it is
 * committed: if it is gone by then, st_task_commit applies nothing and
 * returns NIMBUS_ECONFLICT. Checked before any command runs, whatever the
 * order of calls. Returns 0 or NIMBUS_ENOMEM. */
int st_txn_require(st_txn *t, const char *key);
/* The opposite: the effect applies only if `key` does not exist then. */
int st_txn_forbid(st_txn *t, const char *key);
/* The effect applies only if field `field` of hash `key` is then absent
 * or holds exactly the `len` bytes of `value` (all copied). */
int st_txn_pin_field(st_txn *t, const char *key, const char *field,
                     const void *value, size_t len);
/* Number of commands queued (requirements included). */
size_t st_txn_count(const st_txn *t);

/* While the claim (terminal, id) is still owned by `owner`, atomically
 * applies `effect` (may be NULL), records `reply` (borrowed) with `digest`
 * for result_ttl_ms and releases the claim. Returns 0, NIMBUS_ELOST when
 * the claim was no longer ours (nothing applied), NIMBUS_ECONFLICT when a
 * condition of the effect (st_txn_require, st_txn_forbid,
 * st_txn_pin_field) fails (nothing applied, the
 * claim still held: release it), or NIMBUS_EREDIS. */
int st_task_commit(st_redis *r, const char *terminal, const char *id,
                   const char *owner, const uint8_t digest[32],
                   const st_txn *effect, const void *reply, size_t reply_len,
                   int64_t result_ttl_ms);

/* Releases the claim if `owner` still holds it, recording nothing (an
 * error reply changes no stored data). */
int st_task_release(st_redis *r, const char *terminal, const char *id,
                    const char *owner);

typedef enum st_task_state {
  ST_TASK_UNKNOWN = 0,
  ST_TASK_RUNNING,
  ST_TASK_DONE
} st_task_state;

/* What is known of (terminal, id). When DONE, *reply receives a malloc'd
 * copy of the recorded reply (caller frees); otherwise *reply is NULL. */
int st_task_state_get(st_redis *r, const char *terminal, const char *id,
                      st_task_state *state, char **reply, size_t *reply_len);

/* Marks a live claim as cancelled; *state reports what was found. Does
 * nothing to an unknown or finished task. */
int st_task_cancel(st_redis *r, const char *terminal, const char *id,
                   st_task_state *state);

/* ---- Types served by the pool ----------------------------------------- */

/* Records that a worker serves each of the `n` types now. */
int st_types_announce(st_redis *r, const char *const *types, size_t n);
/* Returns, as a malloc'd array of malloc'd strings (free each, then the
 * array), the types announced within max_age_ms. */
int st_types_list(st_redis *r, int64_t max_age_ms, char ***types, size_t *n);

/* ---- Diagnostics ------------------------------------------------------- */

/* Appends to `t` the command that counts one run of a diagnostic task under
 * `key` (INCR nb:diag:<key>). */
int st_diag_count_effect(st_txn *t, const char *key);
/* Reads that counter; 0 when absent. */
int st_diag_count_get(st_redis *r, const char *key, int64_t *out);

#endif
