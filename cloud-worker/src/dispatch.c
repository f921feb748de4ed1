/* The dispatcher: one task's way from its bytes to its one reply. A job
 * is decoded once; a task of a type nobody serves, too big or malformed is
 * answered at once; a read-only handler runs and its reply goes out; a
 * state-changing one runs under a claim in Redis (st_task_claim), and its
 * effect is committed together with its recorded reply
 * (st_task_commit: the st_txn_require / st_txn_forbid conditions run in
 * the same script), so a re-sent task is answered from the record and
 * never runs twice. Also the helpers every handler uses (wk.h). */
#include "wk_worker.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_outbox.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Small helpers ----------------------------------------------------- */

void wk_pack_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

int wk_fail(wk_ctx *c, int code, const char *help, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  if (help != NULL)
    nb_strlcpy(c->help, help, sizeof c->help);
  return code;
}

void wk_retry_after(wk_ctx *c, int64_t ms) {
  c->result.size = 0;
  msgpack_pack_map(&c->pk, 1);
  wk_pack_kv_int(&c->pk, "retry_after", ms);
}

int wk_reply_data(wk_ctx *c, const void *p, size_t n) {
  uint8_t *copy = malloc(n > 0 ? n : 1);
  if (copy == NULL)
    return NIMBUS_ENOMEM;
  if (n > 0)
    memcpy(copy, p, n);
  free(c->data);
  c->data = copy;
  c->data_len = n;
  c->has_data = true;
  return 0;
}

int wk_checkpoint(wk_ctx *c) {
  if (c->live == NULL)
    return 0;
  if (atomic_load(&c->live->lost))
    return NIMBUS_ELOST;
  if (atomic_load(&c->live->cancel))
    return NIMBUS_ECANCELED;
  return 0;
}

void wk_count_final(wk_worker *w, int code) {
  atomic_fetch_add(code == 0 ? &w->tasks_ok : &w->tasks_error, 1);
}

/* Encodes and publishes one reply; `c` may be NULL for replies made before a
 * handler context exists. */
static void send_reply(wk_worker *w, msgpack_sbuffer *out, const char *terminal,
                       const sc_reply_enc *r, int qos) {
  out->size = 0;
  if (sc_reply_encode(out, r) != 0) {
    NB_ERROR("WK-ENCODE", "cannot encode a reply for %s", terminal);
    return;
  }
  wk_publish(w, terminal, out->data, out->size, qos);
}

void wk_send_error(wk_worker *w, msgpack_sbuffer *out, const char *terminal,
                   const char *id, int code, const char *error,
                   const char *help, const uint8_t *result, size_t result_len) {
  sc_reply_enc r = {0};
  r.id = id;
  r.status = SC_STATUS_ERROR;
  r.code = code;
  r.error = error;
  r.help = help != NULL && help[0] != '\0' ? help : NULL;
  r.result = result;
  r.result_len = result_len;
  send_reply(w, out, terminal, &r, 1);
  wk_count_final(w, code);
}

void wk_progress(wk_ctx *c, int64_t done, int64_t total) {
  sc_reply_enc r = {0};
  r.id = c->task->id;
  r.status = SC_STATUS_PROGRESS;
  r.done = done;
  r.total = total;
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  send_reply(c->w, &out, c->terminal, &r, 0);
  msgpack_sbuffer_destroy(&out);
}

/* A notice waiting for its task's commit, recorded in the outbox by the
 * commit itself (st_outbox.h). */
typedef struct wk_notice {
  struct wk_notice *next;
  char terminal[65];
  char id[ST_OUTBOX_ID_MAX + 1]; /* its outbox entry */
  size_t len;
  uint8_t buf[]; /* len bytes */
} wk_notice;

int wk_notice_add(wk_ctx *c, const char *terminal, const void *buf,
                  size_t len) {
  unsigned k = 0;
  for (const wk_notice *o = c->notices; o != NULL; o = o->next)
    k++;
  if (c->effect == NULL)
    return NIMBUS_EINVAL;
  wk_notice *n = malloc(sizeof *n + len);
  if (n == NULL)
    return NIMBUS_ENOMEM;
  nb_strlcpy(n->terminal, terminal, sizeof n->terminal);
  n->len = len;
  memcpy(n->buf, buf, len);
  int rc = st_outbox_id(n->id, c->terminal, c->task->id, k);
  if (rc == 0)
    rc = st_outbox_add_effect(c->effect, n->id, terminal, buf, len,
                              nb_now_ms() + c->cfg->outbox_grace_ms);
  if (rc != 0) {
    free(n);
    return rc;
  }
  n->next = c->notices;
  c->notices = n;
  return 0;
}

/* Publishes the task's notices (in the order they were added), then drops
 * the outbox entries of those the client took; the others wait there for
 * a housekeeping thread (wk_outbox_drain). */
static void send_notices(wk_worker *w, st_redis *r, wk_ctx *c) {
  wk_notice *rev = NULL;
  size_t n = 0, sent = 0;
  while (c->notices != NULL) {
    wk_notice *x = c->notices;
    c->notices = x->next;
    x->next = rev;
    rev = x;
    n++;
  }
  c->notices = rev;
  if (n == 0)
    return;
  const char **ids = calloc(n, sizeof *ids);
  for (const wk_notice *x = rev; x != NULL; x = x->next)
    if (wk_publish_notice(w, x->terminal, x->buf, x->len) == 0 && ids != NULL)
      ids[sent++] = x->id;
  if (ids != NULL && st_outbox_done(r, ids, sent) != 0)
    NB_WARN("WK-OUTBOX",
            "%s/%s: %zu published notices stay in the outbox "
            "(sent again later): %s",
            c->terminal, c->task->id, sent, st_redis_errstr(r));
  free(ids);
}

int wk_outbox_drain(wk_worker *w, st_redis *r) {
  enum { BATCH = 64 };
  st_outbox_item items[BATCH];
  size_t n = 0, total = 0;
  int rc = 0;
  do {
    /* The lease: time to publish a batch and remove it, else another
     * worker's turn. */
    rc = st_outbox_take(r, nb_now_ms(), w->cfg->outbox_grace_ms, BATCH, items,
                        &n);
    if (rc != 0) {
      NB_WARN("WK-OUTBOX", "cannot read the outbox: %s", st_redis_errstr(r));
      break;
    }
    const char *ids[BATCH];
    size_t sent = 0;
    for (size_t i = 0; i < n; i++)
      if (wk_publish_notice(w, items[i].to, items[i].msg, items[i].len) == 0)
        ids[sent++] = items[i].id;
    if ((rc = st_outbox_done(r, ids, sent)) != 0)
      NB_WARN("WK-OUTBOX", "published notices stay in the outbox: %s",
              st_redis_errstr(r));
    st_outbox_items_free(items, n);
    total += sent;
    if (sent < n)
      break; /* the client refuses: the rest waits for the next round */
  } while (rc == 0 && n == BATCH);
  if (total > 0)
    NB_INFO("WK-OUTBOX", "published %zu notice%s that %s left in the outbox",
            total, total == 1 ? "" : "s",
            total == 1 ? "its worker" : "their workers");
  return rc;
}

static void ctx_fini(wk_ctx *c) {
  while (c->notices != NULL) {
    wk_notice *n = c->notices;
    c->notices = n->next;
    free(n);
  }
  msgpack_sbuffer_destroy(&c->result);
  free(c->data);
  st_txn_free(c->effect);
}

/* Encodes the handler's outcome into ts->out; returns its status. */
static void encode_outcome(thread_state *ts, wk_ctx *c, int code,
                           sc_reply_enc *r) {
  memset(r, 0, sizeof *r);
  r->id = c->task->id;
  if (code == 0) {
    r->status = SC_STATUS_OK;
    if (c->result.size == 0)
      msgpack_pack_map(&c->pk, 0);
    r->result = (const uint8_t *)c->result.data;
    r->result_len = c->result.size;
    r->data = c->data;
    r->data_len = c->data_len;
    r->has_data = c->has_data;
  } else {
    r->status = SC_STATUS_ERROR;
    r->code = code;
    r->error = c->error[0] != '\0' ? c->error : "the task failed";
    r->help = c->help[0] != '\0' ? c->help : NULL;
    if (c->result.size > 0) {
      r->result = (const uint8_t *)c->result.data;
      r->result_len = c->result.size;
    }
  }
  ts->out.size = 0;
  if (sc_reply_encode(&ts->out, r) == 0)
    return;
  /* A result the protocol cannot carry (e.g. nested deeper than a message
   * may be) becomes a 500 with nothing of it, never an empty message. */
  NB_ERROR("WK-ENCODE", "cannot encode the reply to %s %s", c->type,
           c->task->id);
  memset(r, 0, sizeof *r);
  r->id = c->task->id;
  r->status = SC_STATUS_ERROR;
  r->code = 500;
  r->error = "the worker could not encode the task's result";
  ts->out.size = 0;
  (void)sc_reply_encode(&ts->out, r);
}

static int digest_write(void *data, const char *buf, size_t len) {
  return EVP_DigestUpdate(data, buf, len) == 1 ? 0 : -1;
}

/* The SHA-256 of the task's canonical form (schemas/SPEC.md section 4),
 * streamed, its data represented as `how` says: SC_CANON_DATA_XXH128 now,
 * SC_CANON_DATA_BYTES for what workers before it recorded. */
static int task_digest(const char *type, const sc_task *t, sc_canon_data how,
                       uint8_t digest[32]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned int n = 0;
  int rc = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
               ? sc_task_canonical_write(md, digest_write, type, t, how)
               : NIMBUS_ENOMEM;
  if (rc == 0 && EVP_DigestFinal_ex(md, digest, &n) != 1)
    rc = NIMBUS_ENOMEM;
  EVP_MD_CTX_free(md);
  return rc;
}

const uint8_t wk_retry_1s[16] = {0x81, 0xab, 'r', 'e', 't', 'r',  'y',  '_',
                                 'a',  'f',  't', 'e', 'r', 0xcd, 0x03, 0xe8};

static void run_stateful(thread_state *ts, wk_ctx *c, const wk_handler *h) {
  wk_worker *w = ts->w;
  const wk_config *cfg = w->cfg;
  uint8_t digest[32];
  char *stored = NULL;
  size_t stored_len = 0;
  st_claim_state state;
  int rc = task_digest(c->type, c->task, SC_CANON_DATA_XXH128, digest);
  if (rc == 0)
    rc = st_task_claim(ts->redis, c->terminal, c->task->id, digest,
                       cfg->worker_id, cfg->lease_ms, &state, &stored,
                       &stored_len);
  /* A task with data recorded by a worker of before the XXH3 digest (a
   * re-send across an upgrade) has the digest of its bytes: the same
   * content is not a conflict. */
  if (rc == 0 && state == ST_CLAIM_CONFLICT && c->task->has_data) {
    rc = task_digest(c->type, c->task, SC_CANON_DATA_BYTES, digest);
    if (rc == 0)
      rc = st_task_claim(ts->redis, c->terminal, c->task->id, digest,
                         cfg->worker_id, cfg->lease_ms, &state, &stored,
                         &stored_len);
  }
  if (rc != 0) {
    NB_WARN("WK-REDIS", "claim of %s/%s failed: %s", c->terminal, c->task->id,
            st_redis_errstr(ts->redis));
    wk_send_error(w, &ts->out, c->terminal, c->task->id, 503,
                  "the cloud's state store is unavailable right now",
                  "the agent sends the task again by itself; nothing was done",
                  wk_retry_1s, sizeof wk_retry_1s);
    return;
  }
  switch (state) {
  case ST_CLAIM_DONE:
    wk_publish(w, c->terminal, stored, stored_len, 1);
    wk_count_final(w, 0);
    free(stored);
    return;
  case ST_CLAIM_CONFLICT: {
    char msg[160];
    snprintf(msg, sizeof msg,
             "task id %s was already used for a task with other content",
             c->task->id);
    wk_send_error(w, &ts->out, c->terminal, c->task->id, 409, msg,
                  "give every new task a new id", NULL, 0);
    return;
  }
  case ST_CLAIM_RUNNING: {
    sc_reply_enc r = {0};
    r.id = c->task->id;
    r.status = SC_STATUS_PROGRESS;
    send_reply(w, &ts->out, c->terminal, &r, 0);
    return;
  }
  case ST_CLAIM_TAKEN:
    break;
  }

  wk_live live = {0};
  live.terminal = c->terminal;
  live.id = c->task->id;
  atomic_init(&live.cancel, false);
  atomic_init(&live.lost, false);
  wk_live_add(w, &live);
  c->live = &live;
  c->effect = st_txn_new();
  int code = c->effect != NULL
                 ? h->fn(c)
                 : wk_fail(c, 500, NULL, "the worker is out of memory");
  wk_live_del(w, &live);
  c->live = NULL;
  if (atomic_load(&live.lost)) {
    /* Another worker took the task over after our lease lapsed; its reply
     * is the one that counts. */
    NB_WARN("WK-CLAIM-LOST", "%s/%s: claim lapsed while running; dropped",
            c->terminal, c->task->id);
    return;
  }
  sc_reply_enc r;
  encode_outcome(ts, c, code, &r);
  if (code != 0) {
    if (st_task_release(ts->redis, c->terminal, c->task->id, cfg->worker_id) !=
        0)
      NB_WARN("WK-REDIS", "release of %s/%s failed: %s", c->terminal,
              c->task->id, st_redis_errstr(ts->redis));
    wk_publish(w, c->terminal, ts->out.data, ts->out.size, 1);
    wk_count_final(w, code);
    return;
  }
  rc = st_task_commit(ts->redis, c->terminal, c->task->id, cfg->worker_id,
                      digest, c->effect, ts->out.data, ts->out.size,
                      cfg->result_ttl_ms);
  if (rc == NIMBUS_ELOST) {
    NB_WARN("WK-CLAIM-LOST", "%s/%s: claim lapsed before commit; dropped",
            c->terminal, c->task->id);
    return;
  }
  if (rc == NIMBUS_ECONFLICT) {
    /* Something the effect builds on (a blob, a snapshot) went away while
     * the task ran; a new run sees the current state and answers by it. */
    (void)st_task_release(ts->redis, c->terminal, c->task->id, cfg->worker_id);
    wk_send_error(w, &ts->out, c->terminal, c->task->id, 503,
                  "the cloud's state changed while the task ran; nothing was "
                  "changed",
                  "send the task again", wk_retry_1s, sizeof wk_retry_1s);
    return;
  }
  if (rc != 0) {
    NB_WARN("WK-REDIS", "commit of %s/%s failed: %s", c->terminal, c->task->id,
            st_redis_errstr(ts->redis));
    (void)st_task_release(ts->redis, c->terminal, c->task->id, cfg->worker_id);
    wk_send_error(w, &ts->out, c->terminal, c->task->id, 503,
                  "the cloud could not record the result; nothing was changed",
                  "the agent sends the task again by itself", NULL, 0);
    return;
  }
  wk_fault_point("dispatch:committed", c->type);
  wk_publish(w, c->terminal, ts->out.data, ts->out.size, 1);
  /* After the reply: the effect is committed, so what the notices tell is
   * already there for whoever acts on them. */
  send_notices(w, ts->redis, c);
  wk_count_final(w, 0);
}

void wk_process_job(thread_state *ts, job *j) {
  wk_worker *w = ts->w;
  const char *type = j->type, *terminal = j->terminal;
  size_t type_len = strlen(type);
  const wk_served *sv = j->served;
  const wk_handler *h = sv != NULL ? sv->h : NULL;
  bool unknown = false;
  if (j->kind == JOB_WILDCARD) {
    if (wk_cloud_serves(w, type, type_len))
      return; /* its own group has it (or will: a worker for the type
                 appeared since the copy was queued) */
    unknown = true;
  } else if (j->kind == JOB_UNSERVED && h == NULL) {
    /* A task this worker serves is run as any other, wherever it came
     * from. One that another worker announced lately has its workers away
     * for a moment (restarting, reconnecting): it gets no answer now, the
     * agent sends it again, and by then the broker routes it to them. */
    if (wk_cloud_serves(w, type, type_len)) {
      NB_INFO("WK-UNSERVED-HELD",
              "%s: a %.64s task left unanswered: its "
              "workers are away, but one announced the type lately",
              terminal, type);
      return;
    }
    unknown = true;
  }

  char err[256] = "";
  sc_task task;
  int rc = sc_task_decode(j->payload, j->len, &task, err, sizeof err);
  if (unknown) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "no worker of this cloud serves task type "
             "\"%.64s\"",
             type);
    NB_INFO("WK-UNKNOWN-TYPE", "%s: %s", terminal, msg);
    wk_send_error(w, &ts->out, terminal, task.id, 400, msg,
                  "ping lists the task types this cloud serves", NULL, 0);
    goto done;
  }
  if (j->len > SC_MAX_TASK) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "the task is %zu bytes; a task may be at "
             "most %d bytes",
             j->len, SC_MAX_TASK);
    NB_INFO("WK-TOO-BIG", "%s: %s", terminal, msg);
    wk_send_error(w, &ts->out, terminal, task.id, 413, msg,
                  "send larger data as a blob, in 256 KiB segments", NULL, 0);
    goto done;
  }
  if (rc != 0) {
    NB_INFO("WK-BAD-TASK", "%s: %s task: %s", terminal, type, err);
    wk_send_error(w, &ts->out, terminal, task.id, 400, err, NULL, NULL, 0);
    goto done;
  }
  if (h == NULL) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "this worker does not serve task type "
             "\"%.64s\"",
             type);
    wk_send_error(w, &ts->out, terminal, task.id, 400, msg, NULL, NULL, 0);
    goto done;
  }

  wk_ctx c;
  memset(&c, 0, sizeof c);
  c.w = w;
  c.cfg = w->cfg;
  c.redis = ts->redis;
  c.terminal = terminal;
  c.type = type;
  c.task = &task;
  c.args = task.args;
  c.blobs = w->blobs;
  c.tstate = ts->fstate != NULL ? ts->fstate[sv->family_index] : NULL;
  msgpack_sbuffer_init(&c.result);
  msgpack_packer_init(&c.pk, &c.result, msgpack_sbuffer_write);
  if ((h->flags & WK_STATEFUL) != 0) {
    run_stateful(ts, &c, h);
  } else {
    int code = h->fn(&c);
    sc_reply_enc r;
    encode_outcome(ts, &c, code, &r);
    if (code >= 400 && code < 500)
      NB_INFO("WK-TASK-ERROR", "%s %s/%s: %d %s", type, terminal, task.id, code,
              c.error);
    wk_publish(w, terminal, ts->out.data, ts->out.size, 1);
    wk_count_final(w, code);
  }
  ctx_fini(&c);
done:
  sc_task_fini(&task);
}
