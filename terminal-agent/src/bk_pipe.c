/* Many tasks in flight over one agent, each finished in the caller's
 * thread (bk.h). The agent calls on_final on its own thread; that only
 * queues the op and wakes the caller, which then takes the reply with
 * nimbus_task_wait (a copy it owns), releases the task and calls the op's
 * function. So every piece of the caller's state is touched by one thread,
 * and no lock is held while it runs. */
#include "bk_pipe.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nb_util.h"

static void bk_pipe_on_final(void *ctx, nimbus_task *task,
                             const nimbus_reply *r) {
  (void)r;
  bk_op *op = ctx;
  bk_pipe *p = op->pipe;
  pthread_mutex_lock(&p->mu);
  /* on_final may run before nimbus_submit has returned the handle. */
  op->task = task;
  op->next = NULL;
  if (p->tail != NULL)
    p->tail->next = op;
  else
    p->head = op;
  p->tail = op;
  p->last_reply = nb_mono_ms();
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

static void bk_pipe_on_progress(void *ctx, nimbus_task *task,
                                const nimbus_reply *r) {
  (void)task;
  (void)r;
  bk_op *op = ctx;
  bk_pipe *p = op->pipe;
  pthread_mutex_lock(&p->mu);
  p->last_reply = nb_mono_ms();
  pthread_mutex_unlock(&p->mu);
}

int bk_pipe_init(bk_pipe *p, nimbus_agent *a, int max, int stall_ms) {
  memset(p, 0, sizeof *p);
  p->agent = a;
  p->max = max > 0 ? max : 1;
  p->stall_ms = stall_ms;
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0)
    return NIMBUS_ESYS;
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&p->cond, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0)
    return NIMBUS_ESYS;
  if (pthread_mutex_init(&p->mu, NULL) != 0) {
    pthread_cond_destroy(&p->cond);
    return NIMBUS_ESYS;
  }
  p->last_reply = nb_mono_ms();
  return 0;
}

void bk_pipe_fini(bk_pipe *p) {
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cond);
}

int bk_pipe_submit(bk_pipe *p, bk_op *op, const char *type, const uint8_t *args,
                   size_t args_len, const uint8_t *data, size_t data_len,
                   bool has_data) {
  op->pipe = p;
  op->task = NULL;
  op->err = 0;
  nimbus_submit_opts so = {0};
  so.on_final = bk_pipe_on_final;
  so.on_progress = bk_pipe_on_progress;
  so.ctx = op;
  nimbus_task *t = NULL;
  if (p->inflight == 0) {
    /* The stall clock runs from the first task in flight. */
    pthread_mutex_lock(&p->mu);
    p->last_reply = nb_mono_ms();
    pthread_mutex_unlock(&p->mu);
  }
  int rc = nimbus_submit(p->agent, type, args, args_len, data, data_len,
                         has_data, &so, p->stall_ms, &t);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&p->mu);
  op->task = t;
  pthread_mutex_unlock(&p->mu);
  op->lprev = NULL;
  op->lnext = p->live;
  if (p->live != NULL)
    p->live->lprev = op;
  p->live = op;
  p->inflight++;
  return 0;
}

static void bk_pipe_unlive(bk_pipe *p, bk_op *op) {
  if (op->lprev != NULL)
    op->lprev->lnext = op->lnext;
  else
    p->live = op->lnext;
  if (op->lnext != NULL)
    op->lnext->lprev = op->lprev;
  op->lprev = op->lnext = NULL;
}

void bk_pipe_abandon(bk_pipe *p) {
  /* After a release no callback runs, so nothing is queued afterwards. */
  for (bk_op *op = p->live; op != NULL; op = op->lnext) {
    nimbus_task_release(op->task);
    op->task = NULL;
  }
  pthread_mutex_lock(&p->mu);
  p->head = p->tail = NULL;
  pthread_mutex_unlock(&p->mu);
  while (p->live != NULL) {
    bk_op *op = p->live;
    bk_pipe_unlive(p, op);
    p->inflight--;
    op->err = NIMBUS_ECANCELED;
    bool keep = false;
    op->fn(op, NULL, &keep);
  }
}

int bk_pipe_step(bk_pipe *p) { return bk_pipe_step_until(p, -1); }

int bk_pipe_step_until(bk_pipe *p, int64_t wake) {
  if (p->inflight == 0)
    return 0;
  pthread_mutex_lock(&p->mu);
  while (p->head == NULL) {
    int64_t now = nb_mono_ms(), deadline = p->last_reply + p->stall_ms;
    if (p->stop != NULL && p->stop(p->stop_ctx)) {
      pthread_mutex_unlock(&p->mu);
      return NIMBUS_ECANCELED;
    }
    if (now >= deadline) {
      pthread_mutex_unlock(&p->mu);
      return NIMBUS_ETIMEDOUT;
    }
    if (wake >= 0 && now >= wake) {
      pthread_mutex_unlock(&p->mu);
      return 0;
    }
    /* A signal does not wake the condition: look again now and then. */
    int64_t until = deadline < now + 200 ? deadline : now + 200;
    if (wake >= 0 && wake < until)
      until = wake;
    struct timespec ts = {.tv_sec = until / 1000,
                          .tv_nsec = (long)(until % 1000) * 1000000};
    pthread_cond_timedwait(&p->cond, &p->mu, &ts);
  }
  bk_op *list = p->head;
  p->head = p->tail = NULL;
  pthread_mutex_unlock(&p->mu);

  while (list != NULL) {
    bk_op *op = list;
    list = op->next;
    nimbus_reply *r = NULL;
    /* The final reply is there: this does not wait. */
    int rc = nimbus_task_wait(op->task, 0, &r);
    nimbus_task_release(op->task);
    op->task = NULL;
    op->err = rc;
    bk_pipe_unlive(p, op);
    p->inflight--;
    bool keep = false;
    op->fn(op, rc == 0 ? r : NULL, &keep);
    if (!keep)
      nimbus_reply_free(r);
  }
  return 0;
}

typedef struct bk_call {
  bk_op op;
  nimbus_reply *reply;
  bool done;
} bk_call;

static void bk_call_done(bk_op *op, nimbus_reply *r, bool *keep) {
  bk_call *c = op->ctx;
  c->reply = r;
  c->done = true;
  *keep = true;
}

int bk_pipe_call(bk_pipe *p, const char *type, const uint8_t *args,
                 size_t args_len, nimbus_reply **out) {
  bk_call c = {0};
  c.op.fn = bk_call_done;
  c.op.ctx = &c;
  *out = NULL;
  int rc = bk_pipe_submit(p, &c.op, type, args, args_len, NULL, 0, false);
  if (rc != 0)
    return rc;
  while (rc == 0 && !c.done)
    rc = bk_pipe_step(p);
  if (rc != 0) {
    /* c.op lives on this stack: nothing may refer to it afterwards. */
    bk_pipe_abandon(p);
    return rc;
  }
  if (c.reply == NULL)
    return c.op.err != 0 ? c.op.err : NIMBUS_EREFUSED;
  *out = c.reply;
  return 0;
}
