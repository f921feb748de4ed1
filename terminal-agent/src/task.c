/* Tasks in libnimbus-agent: submitting, the table of outstanding tasks,
 * replies arriving, waiting, giving up, and the replies the callers see.
 *
 * A task is one allocation plus its encoded bytes, which are kept so that
 * every re-send sends exactly the same message (PROTOCOL.md, Delivery). It
 * is reference counted under the agent's mutex: one reference for the
 * caller's handle (until nimbus_task_release), one while it is outstanding
 * (in the table), one for each publish Paho still holds (the publish's
 * callback context is the task), and one for each event queued for the
 * agent's thread. So nothing is freed inside a callback that still uses it,
 * and a caller may release a task from its own callback.
 *
 * Replies are decoded on Paho's receive thread (sc_reply_decode, strict and
 * bounded) and copied into one allocation per reply; the waiter is woken
 * through the task's own condition variable, so 64 waiters are not all
 * woken for every reply. */
#include "ag_internal.h"
#include "nb_paho.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nb_util.h"

/* ---- Time -------------------------------------------------------------- */

/* Every condvar of the agent waits on CLOCK_MONOTONIC, like nb_mono_ms. */
void ag_timespec_at(struct timespec *ts, int64_t mono_ms) {
  ts->tv_sec = (time_t)(mono_ms / 1000);
  ts->tv_nsec = (long)(mono_ms % 1000) * 1000000L;
}

/* ---- The table of outstanding tasks ------------------------------------ */

/* Sets t's next re-send to `when` (monotonic ms). When the agent's scan
 * is due later than that, brings it forward and wakes the agent's thread;
 * otherwise (the common case: every task on the same interval) no wake-up
 * is needed. Needs mu. */
static void ag_task_due_locked(nimbus_agent *a, nimbus_task *t, int64_t when) {
  t->next_send = when;
  if (when + a->coalesce_ms < a->loop_deadline) {
    a->loop_deadline = when + a->coalesce_ms;
    pthread_cond_signal(&a->loop_cond);
  }
}

/* FNV-1a: ids are random already, any decent mix will do. */
static size_t ag_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s != '\0'; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return (size_t)h;
}

static nimbus_task *ag_table_find(nimbus_agent *a, const char *id) {
  nimbus_task *t = a->buckets[ag_hash(id) & a->bucket_mask];
  while (t != NULL && strcmp(t->id, id) != 0)
    t = t->hnext;
  return t;
}

static void ag_table_insert(nimbus_agent *a, nimbus_task *t) {
  nimbus_task **b = &a->buckets[ag_hash(t->id) & a->bucket_mask];
  t->hnext = *b;
  *b = t;
  t->oprev = NULL;
  t->onext = a->out_head;
  if (a->out_head != NULL)
    a->out_head->oprev = t;
  a->out_head = t;
  t->in_table = true;
  a->outstanding++;
}

/* Takes `t` out of the table; the caller drops the table's reference. */
static void ag_table_remove(nimbus_agent *a, nimbus_task *t) {
  nimbus_task **p = &a->buckets[ag_hash(t->id) & a->bucket_mask];
  while (*p != t)
    p = &(*p)->hnext;
  *p = t->hnext;
  t->hnext = NULL;
  if (t->oprev != NULL)
    t->oprev->onext = t->onext;
  else
    a->out_head = t->onext;
  if (t->onext != NULL)
    t->onext->oprev = t->oprev;
  t->oprev = t->onext = NULL;
  t->in_table = false;
  a->outstanding--;
  pthread_cond_signal(&a->slot_cond);
}

/* ---- Task lifetime ----------------------------------------------------- */

void ag_task_destroy(nimbus_task *t) {
  pthread_cond_destroy(&t->done_cond);
  free(t->final);
  free(t->msg);
  free(t->topic);
  free(t);
}

void ag_task_unref_locked(nimbus_agent *a, nimbus_task *t) {
  if (--t->refs > 0)
    return;
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    a->all = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  ag_task_destroy(t);
}

void ag_event_push_locked(nimbus_agent *a, ag_event *ev) {
  ev->next = NULL;
  if (a->ev_tail != NULL)
    a->ev_tail->next = ev;
  else
    a->ev_head = ev;
  a->ev_tail = ev;
  pthread_cond_signal(&a->loop_cond);
}

/* Ends an outstanding task with `reply` (taken). Needs mu. */
static void ag_task_complete_locked(nimbus_agent *a, nimbus_task *t,
                                    nimbus_reply *reply, ag_task_state state) {
  t->final = reply;
  t->state = state;
  ag_table_remove(a, t);
  pthread_cond_broadcast(&t->done_cond);
  if (t->on_final != NULL && !t->released) {
    t->refs++;
    t->final_ev.kind = AG_EV_FINAL;
    t->final_ev.task = t;
    t->final_ev.reply = t->final;
    ag_event_push_locked(a, &t->final_ev);
  }
  ag_task_unref_locked(a, t); /* the table's reference */
}

/* ---- Replies ----------------------------------------------------------- */

nimbus_reply *ag_reply_new(const ag_reply_parts *p) {
  size_t status_len = strlen(p->status);
  size_t total = sizeof(nimbus_reply) + p->id_len + 1 + status_len + 1 +
                 p->result_len + p->data_len;
  if (p->error != NULL)
    total += p->error_len + 1;
  if (p->help != NULL)
    total += p->help_len + 1;
  nimbus_reply *r = malloc(total);
  if (r == NULL)
    return NULL;
  memset(r, 0, sizeof *r);
  char *at = (char *)(r + 1);

  memcpy(at, p->id, p->id_len);
  at[p->id_len] = '\0';
  r->id = at;
  at += p->id_len + 1;
  memcpy(at, p->status, status_len + 1);
  r->status = at;
  at += status_len + 1;
  if (p->error != NULL) {
    memcpy(at, p->error, p->error_len);
    at[p->error_len] = '\0';
    r->error = at;
    at += p->error_len + 1;
  }
  if (p->help != NULL) {
    memcpy(at, p->help, p->help_len);
    at[p->help_len] = '\0';
    r->help = at;
    at += p->help_len + 1;
  }
  if (p->result != NULL) {
    memcpy(at, p->result, p->result_len);
    r->result = (const uint8_t *)at;
    r->result_len = p->result_len;
    at += p->result_len;
  }
  if (p->has_data) {
    if (p->data_len > 0)
      memcpy(at, p->data, p->data_len);
    r->data = (const uint8_t *)at;
    r->data_len = p->data_len;
  }
  r->code = p->code;
  r->done = p->done;
  r->total = p->total;
  r->err = p->err;
  return r;
}

static nimbus_reply *ag_reply_dup(const nimbus_reply *r) {
  ag_reply_parts p = {
      .id = r->id,
      .id_len = strlen(r->id),
      .status = r->status,
      .code = r->code,
      .error = r->error,
      .error_len = r->error != NULL ? strlen(r->error) : 0,
      .help = r->help,
      .help_len = r->help != NULL ? strlen(r->help) : 0,
      .result = r->result,
      .result_len = r->result_len,
      .data = r->data,
      .data_len = r->data_len,
      .has_data = r->data != NULL,
      .done = r->done,
      .total = r->total,
      .err = r->err,
  };
  return ag_reply_new(&p);
}

/* Copies a decoded reply. Runs on Paho's receive thread only, which owns
 * a->scratch. */
static nimbus_reply *ag_reply_from_sc(nimbus_agent *a, const sc_reply *sr) {
  ag_reply_parts p = {
      .id = sr->id,
      .id_len = strlen(sr->id),
      .status = sc_status_name(sr->status),
      .code = sr->code,
      .error = sr->error,
      .error_len = sr->error_len,
      .help = sr->help,
      .help_len = sr->help_len,
      .data = sr->data,
      .data_len = sr->data_len,
      .has_data = sr->has_data,
      .done = sr->done,
      .total = sr->total,
  };
  if (sr->result != NULL) {
    /* The decoder hands out an object, not its bytes: pack it again. */
    msgpack_packer pk;
    a->scratch.size = 0;
    msgpack_packer_init(&pk, &a->scratch, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *sr->result) != 0)
      return NULL;
    p.result = (const uint8_t *)a->scratch.data;
    p.result_len = a->scratch.size;
  }
  return ag_reply_new(&p);
}

static void ag_on_reply(nimbus_agent *a, const void *payload, size_t len) {
  sc_reply sr;
  char err[128];
  if (sc_reply_decode(payload, len, &sr, err, sizeof err) != 0)
    return; /* not for us to judge further: nothing waits on it */
  if (sr.id[0] == '\0')
    goto out;

  pthread_mutex_lock(&a->mu);
  nimbus_task *t = ag_table_find(a, sr.id);
  if (t == NULL) {
    /* Already answered or given up: a duplicate or a late reply. */
    pthread_mutex_unlock(&a->mu);
    goto out;
  }
  if (sr.status == SC_STATUS_PROGRESS) {
    /* The worker is alive and on it: restart the re-send clock, and bring
     * the scan forward when the task's doubled interval had set it. */
    t->interval_ms = a->resend_ms;
    ag_task_due_locked(a, t, nb_mono_ms() + a->resend_ms);
    bool cb = t->on_progress != NULL && !t->released;
    if (cb)
      t->refs++;
    pthread_mutex_unlock(&a->mu);
    if (!cb)
      goto out;
    ag_event *ev = calloc(1, sizeof *ev);
    nimbus_reply *r = ag_reply_from_sc(a, &sr);
    pthread_mutex_lock(&a->mu);
    if (ev != NULL && r != NULL) {
      ev->kind = AG_EV_PROGRESS;
      ev->task = t;
      ev->reply = r;
      ag_event_push_locked(a, ev);
    } else {
      free(ev);
      free(r);
      ag_task_unref_locked(a, t);
    }
    pthread_mutex_unlock(&a->mu);
    goto out;
  }

  if (sr.status == SC_STATUS_ERROR && sr.code == 429) {
    /* Too many tasks in flight at the worker: nothing was done and the
     * task is not answered; it goes again after retry_after (PROTOCOL.md,
     * Delivery), with up to a quarter more so a burst does not come back
     * at one instant. The caller sees its real answer, or its timeout. */
    int64_t wait = 1000;
    const msgpack_object *ra =
        sr.result != NULL ? sc_map_get(sr.result, "retry_after") : NULL;
    if (ra != NULL && ra->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        ra->via.u64 <= 3600000)
      wait = (int64_t)ra->via.u64;
    uint8_t r8 = 0;
    (void)nb_random_bytes(&r8, 1);
    wait += wait / 4 * r8 / 255;
    ag_task_due_locked(a, t, nb_mono_ms() + wait);
    pthread_mutex_unlock(&a->mu);
    goto out;
  }
  t->refs++;
  pthread_mutex_unlock(&a->mu);
  /* Copy outside the lock: data may be 256 KiB. Only this thread ends
   * tasks with replies, but the caller may release `t` meanwhile. */
  nimbus_reply *r = ag_reply_from_sc(a, &sr);
  pthread_mutex_lock(&a->mu);
  if (r != NULL && t->in_table) {
    ag_task_complete_locked(a, t, r, AG_TASK_DONE);
    r = NULL;
  }
  /* Out of memory leaves the task outstanding: a re-send brings the reply
   * again. */
  ag_task_unref_locked(a, t);
  pthread_mutex_unlock(&a->mu);
  free(r);
out:
  sc_reply_fini(&sr);
}

static void ag_on_notice(nimbus_agent *a, const void *payload, size_t len) {
  sc_notice n;
  char err[128];
  pthread_mutex_lock(&a->mu);
  bool wanted = a->notice_cb != NULL;
  pthread_mutex_unlock(&a->mu);
  if (!wanted || sc_notice_decode(payload, len, &n, err, sizeof err) != 0)
    return;
  ag_event *ev = calloc(1, sizeof *ev);
  uint8_t *copy = malloc(len > 0 ? len : 1);
  if (ev == NULL || copy == NULL) {
    free(ev);
    free(copy);
    sc_notice_fini(&n);
    return;
  }
  memcpy(copy, payload, len);
  ev->kind = AG_EV_NOTICE;
  ev->notice = copy;
  ev->notice_len = len;
  nb_strlcpy(ev->notice_kind, n.kind, sizeof ev->notice_kind);
  sc_notice_fini(&n);
  pthread_mutex_lock(&a->mu);
  ag_event_push_locked(a, ev);
  pthread_mutex_unlock(&a->mu);
}

void ag_agent_on_message(nimbus_agent *a, const char *topic, size_t topic_len,
                         const void *payload, size_t len) {
  if (topic_len == a->reply_topic_len &&
      memcmp(topic, a->reply_topic, topic_len) == 0)
    ag_on_reply(a, payload, len);
  else if (topic_len == a->notify_topic_len &&
           memcmp(topic, a->notify_topic, topic_len) == 0)
    ag_on_notice(a, payload, len);
}

void ag_task_refuse(nimbus_agent *a, nimbus_task *t, int reason) {
  char text[160];
  snprintf(text, sizeof text,
           "the broker refused the task (MQTT reason 0x%02x: %s)", reason,
           MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
  ag_reply_parts p = {
      .id = t->id,
      .id_len = strlen(t->id),
      .status = "error",
      .error = text,
      .error_len = strlen(text),
      .err = NIMBUS_EREFUSED,
  };
  nimbus_reply *r = ag_reply_new(&p);
  pthread_mutex_lock(&a->mu);
  if (r != NULL && t->in_table) {
    /* errstr is short; a cut-off reason still names the task. */
    if (snprintf(a->errstr, sizeof a->errstr, "task %s: %s", t->id, text) >=
        (int)sizeof a->errstr)
      a->errstr[sizeof a->errstr - 1] = '\0';
    ag_task_complete_locked(a, t, r, AG_TASK_REFUSED);
    r = NULL;
  }
  pthread_mutex_unlock(&a->mu);
  free(r);
}

/* ---- Sending ----------------------------------------------------------- */

/* How a publish Paho held ended. */
typedef enum {
  AG_PUB_ACKED,   /* the broker acknowledged it (or refused it: final) */
  AG_PUB_DROPPED, /* Paho dropped it: a session cleaned, the client gone */
  AG_PUB_NOT_SENT /* Paho would not take it: the clock or a connect sends */
} ag_pub_end;

/* Paho no longer holds one publish of `t`: drops its reference. A dropped
 * one makes the task due at once, so a copy that a reconnect's re-send
 * left to Paho is not left to the clock. One Paho would not take is left
 * to the clock, as retrying it at once could spin. */
static void ag_task_unhold(nimbus_agent *a, nimbus_task *t, ag_pub_end how) {
  pthread_mutex_lock(&a->mu);
  t->held--;
  if (how == AG_PUB_ACKED)
    t->acked_gen = a->conn_gen;
  else if (how == AG_PUB_DROPPED && t->in_table)
    ag_task_due_locked(a, t, nb_mono_ms());
  ag_task_unref_locked(a, t);
  pthread_mutex_unlock(&a->mu);
}

static void ag_on_pub_ok(void *ctx, MQTTAsync_successData5 *d) {
  (void)d;
  nimbus_task *t = ctx;
  ag_task_unhold(t->agent, t, AG_PUB_ACKED);
}

/* Paho also calls this, with reason code 0, for publishes it drops when
 * the session is cleaned or the client destroyed: only a PUBACK reason of
 * 0x80 or more is the broker's refusal. */
static void ag_on_pub_fail(void *ctx, MQTTAsync_failureData5 *d) {
  nimbus_task *t = ctx;
  bool refused =
      d != NULL && (int)d->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR;
  if (refused)
    ag_task_refuse(t->agent, t, (int)d->reasonCode);
  ag_task_unhold(t->agent, t, refused ? AG_PUB_ACKED : AG_PUB_DROPPED);
}

void ag_task_send(nimbus_agent *a, MQTTAsync client, nimbus_task *t) {
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = t->msg;
  m.payloadlen = (int)t->msg_len;
  m.qos = 1;
  m.retained = 0;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess5 = ag_on_pub_ok;
  ro.onFailure5 = ag_on_pub_fail;
  ro.context = t;
  if (nb_paho_send(client, t->topic, &m, &ro) != MQTTASYNC_SUCCESS)
    ag_task_unhold(a, t, AG_PUB_NOT_SENT);
}

/* ---- The public task API ---------------------------------------------- */

/* Waits on `cond` until the monotonic deadline (-1: forever). Returns the
 * pthread result (ETIMEDOUT when the deadline passed). Needs mu. */
static int ag_cond_wait_until(nimbus_agent *a, pthread_cond_t *cond,
                              int64_t deadline) {
  if (deadline < 0)
    return pthread_cond_wait(cond, &a->mu);
  struct timespec ts;
  ag_timespec_at(&ts, deadline);
  return pthread_cond_timedwait(cond, &a->mu, &ts);
}

int nimbus_submit(nimbus_agent *a, const char *type, const uint8_t *args,
                  size_t args_len, const uint8_t *data, size_t data_len,
                  bool has_data, const nimbus_submit_opts *sopts, int block_ms,
                  nimbus_task **out) {
  int rc = 0;
  nimbus_task *t = NULL;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);

  if (out != NULL)
    *out = NULL;
  if (a == NULL || type == NULL || out == NULL ||
      (args == NULL && args_len > 0) ||
      (has_data && data == NULL && data_len > 0))
    return NIMBUS_EINVAL;
  size_t type_len = strlen(type);
  /* The type is one topic level: the terminal-id alphabet fits it. */
  if (!nb_valid_terminal(type, type_len))
    return NIMBUS_EINVAL;
  if (!has_data)
    data_len = 0;
  if (args_len > SC_MAX_TASK || data_len > SC_MAX_TASK - args_len)
    return NIMBUS_ETOOBIG;

  t = calloc(1, sizeof *t);
  if (t == NULL)
    return NIMBUS_ENOMEM;
  if (sopts != NULL && sopts->id != NULL) {
    size_t n = strlen(sopts->id);
    if (!nb_valid_token(sopts->id, n, SC_ID_MIN, SC_ID_MAX)) {
      free(t);
      return NIMBUS_EINVAL;
    }
    memcpy(t->id, sopts->id, n + 1);
  } else if (nb_random_id(t->id, sizeof t->id, AG_ID_BITS) != 0) {
    free(t);
    return NIMBUS_ESYS;
  }
  if (pthread_cond_init(&t->done_cond, &a->cond_attr) != 0) {
    free(t);
    return NIMBUS_ESYS;
  }
  /* From here on ag_task_destroy cleans up. */
  rc = sc_task_encode(&sb, t->id, args, args_len, data, data_len, has_data);
  if (rc != 0)
    goto fail;
  if (sb.size > SC_MAX_TASK) {
    rc = NIMBUS_ETOOBIG;
    goto fail;
  }
  size_t topic_cap = strlen(a->prefix) + type_len + strlen(a->terminal) + 8;
  t->topic = malloc(topic_cap);
  if (t->topic == NULL) {
    rc = NIMBUS_ENOMEM;
    goto fail;
  }
  snprintf(t->topic, topic_cap, "%s/task/%s/%s", a->prefix, type, a->terminal);
  t->msg_len = sb.size;
  t->msg = (uint8_t *)msgpack_sbuffer_release(&sb);
  /* The sbuffer starts at 8 KiB; a ping is 40 bytes, kept for as long as
   * the caller holds the handle. Shrinking in place is cheap. */
  uint8_t *fit = realloc(t->msg, t->msg_len);
  if (fit != NULL)
    t->msg = fit;
  t->agent = a;
  t->on_final = sopts != NULL ? sopts->on_final : NULL;
  t->on_progress = sopts != NULL ? sopts->on_progress : NULL;
  t->ctx = sopts != NULL ? sopts->ctx : NULL;
  t->interval_ms = a->resend_ms;

  pthread_mutex_lock(&a->mu);
  int64_t deadline = block_ms > 0 ? nb_mono_ms() + block_ms : -1;
  while (!a->closing && a->outstanding >= a->max_inflight) {
    if (block_ms == 0 ||
        ag_cond_wait_until(a, &a->slot_cond, deadline) == ETIMEDOUT)
      break;
  }
  if (a->closing)
    rc = NIMBUS_ECLOSED;
  else if (a->outstanding >= a->max_inflight)
    rc = NIMBUS_EBUSY;
  else if (ag_table_find(a, t->id) != NULL)
    rc = NIMBUS_ECONFLICT;
  if (rc != 0) {
    pthread_mutex_unlock(&a->mu);
    goto fail;
  }
  ag_table_insert(a, t);
  t->refs = 2; /* the caller's handle and the table */
  t->next = a->all;
  if (a->all != NULL)
    a->all->prev = t;
  a->all = t;
  ag_task_due_locked(a, t, nb_mono_ms() + a->resend_ms);
  MQTTAsync client = NULL;
  if (atomic_load(&a->up) && !a->resend_all) {
    /* Else the next connect sends it (see ag_loop). While a connect's
     * re-send of every task is pending, that re-send takes this one too:
     * sending it here as well would send it twice, and the second reply
     * would wait in the session for whoever uses the id next. */
    client = a->client;
    t->refs++;
    t->held++;
  }
  pthread_mutex_unlock(&a->mu);

  *out = t;
  if (client != NULL)
    ag_task_send(a, client, t);
  return 0;

fail:
  msgpack_sbuffer_destroy(&sb);
  ag_task_destroy(t);
  return rc;
}

const char *nimbus_task_id(const nimbus_task *t) {
  return t != NULL ? t->id : NULL;
}

int nimbus_task_wait(nimbus_task *t, int timeout_ms, nimbus_reply **out) {
  if (out != NULL)
    *out = NULL;
  if (t == NULL || out == NULL)
    return NIMBUS_EINVAL;
  nimbus_agent *a = t->agent;
  pthread_mutex_lock(&a->mu);
  int64_t deadline = timeout_ms >= 0 ? nb_mono_ms() + timeout_ms : -1;
  while (t->state == AG_TASK_PENDING && timeout_ms != 0) {
    if (ag_cond_wait_until(a, &t->done_cond, deadline) == ETIMEDOUT)
      break;
  }
  ag_task_state state = t->state;
  pthread_mutex_unlock(&a->mu);
  /* t->final is fixed once the state is not pending. */
  if (state == AG_TASK_PENDING)
    return NIMBUS_ETIMEDOUT;
  if (state == AG_TASK_REFUSED)
    return NIMBUS_EREFUSED;
  *out = ag_reply_dup(t->final);
  return *out != NULL ? 0 : NIMBUS_ENOMEM;
}

void nimbus_task_release(nimbus_task *t) {
  if (t == NULL)
    return;
  nimbus_agent *a = t->agent;
  pthread_mutex_lock(&a->mu);
  t->released = true;
  if (t->in_table) {
    ag_table_remove(a, t);
    ag_task_unref_locked(a, t); /* the table's reference */
  }
  /* No callback after we return: wait for one running on the agent's
   * thread, unless that is us (a callback releasing its own task). */
  while (a->cb_task == t && !pthread_equal(pthread_self(), a->thread))
    pthread_cond_wait(&a->cb_cond, &a->mu);
  ag_task_unref_locked(a, t); /* the caller's handle */
  pthread_mutex_unlock(&a->mu);
}

void nimbus_reply_free(nimbus_reply *r) { free(r); }
