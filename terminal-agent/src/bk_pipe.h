/* A pipeline of tasks over one agent (bk_pipe.c), and the msgpack helpers
 * of the blob transfers (bk_msgpack.c): many tasks in flight, each
 * finished in the thread that drives the pipeline, one at a time. Built
 * into libnimbus-agent (its transfer engine, xfer.c, runs on it; hidden
 * there, as every symbol but nimbus_*) and into the CLI (backup.commit,
 * backup.get, backup.list and delete go through it).
 *
 * Nothing here is thread-safe unless said otherwise: one thread drives a
 * pipeline; the agent's thread only queues ended tasks into it. */
#ifndef BK_PIPE_H
#define BK_PIPE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "nimbus/agent.h"

typedef struct bk_op bk_op;
/* Finishes an op in the thread that called bk_pipe_step. `reply` is the
 * final reply (the callee may keep it: set *keep, else it is freed), NULL
 * when there is none: op->err is then NIMBUS_EREFUSED (the broker refused
 * the task) or NIMBUS_ECANCELED (bk_pipe_abandon: only free what the op
 * holds). */
typedef void (*bk_op_fn)(bk_op *op, nimbus_reply *reply, bool *keep);

struct bk_op {
  bk_op_fn fn;
  void *ctx;    /* the caller's */
  int64_t a, b; /* the caller's (offset, length, ...) */
  int err;      /* 0, or NIMBUS_EREFUSED */
  /* private */
  bk_op *next;          /* the ended list */
  bk_op *lprev, *lnext; /* the list of ops in flight */
  nimbus_task *task;
  struct bk_pipe *pipe;
};

typedef struct bk_pipe {
  nimbus_agent *agent;
  int max;      /* tasks in flight at most */
  int inflight; /* submitted, not yet finished by bk_pipe_step */
  int stall_ms; /* bk_pipe_step gives up after this long without a reply */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* CLOCK_MONOTONIC */
  bk_op *head, *tail;  /* ended, to be finished; guarded by mu */
  bk_op *live;         /* in flight (the caller's thread only) */
  int64_t last_reply;  /* nb_mono_ms of the last reply; guarded by mu */
  /* Polled (at least every 200 ms) while bk_pipe_step waits: true stops
   * the wait with NIMBUS_ECANCELED. NULL: never. Set after init. */
  bool (*stop)(void *ctx);
  void *stop_ctx;
} bk_pipe;

int bk_pipe_init(bk_pipe *p, nimbus_agent *a, int max, int stall_ms);
void bk_pipe_fini(bk_pipe *p);

/* True when another task may go now. */
static inline bool bk_pipe_room(const bk_pipe *p) {
  return p->inflight < p->max;
}

/* Submits a task; `op` (the caller's, with fn set) is finished later by
 * bk_pipe_step and must stay valid until then. Returns 0, or the error of
 * nimbus_submit (then op is not used). */
int bk_pipe_submit(bk_pipe *p, bk_op *op, const char *type, const uint8_t *args,
                   size_t args_len, const uint8_t *data, size_t data_len,
                   bool has_data);

/* Submits one task and runs bk_pipe_step until it has ended (finishing
 * any other that ends meanwhile). Returns 0 and *out, the final reply (the
 * caller frees it); NIMBUS_EREFUSED (the broker refused it; *out NULL);
 * NIMBUS_ETIMEDOUT; or the error of nimbus_submit. */
int bk_pipe_call(bk_pipe *p, const char *type, const uint8_t *args,
                 size_t args_len, nimbus_reply **out);

/* Gives up every task in flight (nimbus_task_release: no callback after
 * this) and finishes each op with reply NULL and err NIMBUS_ECANCELED. */
void bk_pipe_abandon(bk_pipe *p);

/* Waits until at least one task in flight has ended and finishes every
 * ended one (calls their fn). Returns 0; NIMBUS_ETIMEDOUT when no reply,
 * final or progress, came for stall_ms while tasks were in flight;
 * NIMBUS_ECANCELED when p->stop says so (within 200 ms); 0 at once when
 * none is in flight. */
int bk_pipe_step(bk_pipe *p);

/* bk_pipe_step that also returns 0, having finished nothing, once the
 * monotonic clock (nb_mono_ms) reaches `until` (a timer of the caller's:
 * a retry that is due). until < 0: no such bound. */
int bk_pipe_step_until(bk_pipe *p, int64_t until);

/* ---- msgpack ------------------------------------------------------------ */

/* Packs a str; k: v entries with a str or an int value. */
void bk_pk_str(msgpack_packer *pk, const char *s);
void bk_pk_kv_str(msgpack_packer *pk, const char *k, const char *v);
void bk_pk_kv_int(msgpack_packer *pk, const char *k, int64_t v);
/* True, with *v, when `o` (may be NULL) is an int that fits int64. */
bool bk_obj_int(const msgpack_object *o, int64_t *v);
/* True when `o` (may be NULL) is the str `s`. */
bool bk_obj_str_eq(const msgpack_object *o, const char *s);
/* Decodes the reply's result strictly into *out when it is a map: true,
 * and *zone (free with msgpack_zone_free) holds it; false (and *zone
 * NULL) when the result is absent, malformed or not a map. */
bool bk_result_map(const nimbus_reply *r, msgpack_object *out,
                   msgpack_zone **zone);
/* True for a reply with status "ok". */
bool bk_reply_ok(const nimbus_reply *r);
/* The nimbus_err a library call returns for the cloud's error `code`
 * (nimbus_offload, nimbus_share_*): 400 NIMBUS_EINVAL, 404
 * NIMBUS_ENOTFOUND, 409 NIMBUS_ECONFLICT, 413 NIMBUS_ETOOBIG, 499
 * NIMBUS_ECANCELED, any other NIMBUS_EIO. */
int bk_err_of_code(int code);

#endif
