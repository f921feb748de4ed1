/* The worker: its MQTT session, the job queue and pool threads, the
 * dispatcher that gives every task exactly one effect, and the renewal
 * thread that keeps live claims' leases (see wk.h for the whole way).
 *
 * Paho acknowledges a QoS 1 task before we see it (FINDINGS.md), so nothing
 * here relies on the broker for delivery: the terminal re-sends until it
 * holds a final reply, and the claim in Redis makes a re-sent task
 * harmless. A task of a type no worker of the cloud serves reaches one
 * worker through the unserved group, which answers it with 400: by
 * default the group of <prefix>/unserved/+/+, where nimbus_auth.so
 * re-routes such tasks; with unserved = wildcard a catch-all group on
 * <prefix>/task/+/+, which also gets a copy of every other task. */
#include "wk.h"
#include "st_blob.h"

#include "nb_log.h"
#include "nb_paho.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <MQTTAsync.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MQTT 5 subscription identifiers: the typed groups, the unserved group. */
enum { SUB_TYPED = 1, SUB_UNSERVED = 2 };

/* What a message is to this worker. */
typedef enum job_kind {
  JOB_TASK,     /* <prefix>/task/<type>/<terminal> through a typed group */
  JOB_WILDCARD, /* the catch-all group's copy of a task (unserved=wildcard) */
  JOB_UNSERVED  /* <prefix>/unserved/<type>/<terminal>: the broker re-routed
                   it because no worker was subscribed to its type */
} job_kind;

/* One allocation: the struct, the type and the terminal (each
 * NUL-terminated), then the payload. */
typedef struct job {
  const char *type;
  const char *terminal; /* from the topic, never from the payload */
  const uint8_t *payload; /* Paho's, in msg: a segment is never copied */
  size_t len;
  MQTTAsync_message *msg; /* owned: freed with the job */
  job_kind kind;
  struct job *next;
} job;

/* A lane: a queue and the threads that serve it. Quick handlers (answers in
 * milliseconds) and heavy ones (seconds of CPU or of waiting) have lanes of
 * their own, so a heavy task never delays a quick one, and the quick lane
 * keeps about as many threads as there are cores: more runnable threads
 * than cores only take turns at Paho's one mutex when they publish, which
 * cost a fifth of the throughput at 64 tasks in flight (scripts/bench
 * hops). */
typedef struct lane {
  wk_worker *w;
  pthread_mutex_t mu;
  pthread_cond_t cv;    /* a job arrived, or stop */
  pthread_cond_t idle;  /* queue empty and no job running */
  job *head, *tail;
  size_t qlen, busy;
  size_t cap;           /* qlen at which the lane counts as full */
  bool full;            /* counted in wk_worker.lanes_full */
  bool stop;
  pthread_t *threads;
  size_t nthreads;
} lane;

enum { LANE_QUICK = 0, LANE_HEAVY = 1, LANES = 2 };

struct wk_worker {
  const wk_config *cfg;
  MQTTAsync client;
  const wk_handler **handlers;
  size_t nhandlers;
  char **filters; /* subscriptions: the typed ones, then the unserved one */
  size_t nfilters;
  size_t prefix_len;

  lane lanes[LANES];

  pthread_mutex_t lmu; /* live claims */
  wk_live live;        /* list head */

  pthread_t renew_thread;
  bool renew_started;
  pthread_mutex_t rmu;
  pthread_cond_t rcv;
  bool renew_stop;

  pthread_mutex_t tmu; /* types the cloud serves */
  char **cloud_types;
  size_t ncloud;

  pthread_mutex_t cmu; /* connection and subscription state */
  pthread_cond_t ccv;
  int sub_state;    /* 0 pending, 1 subscribed, -1 refused */
  int subs_pending; /* SUBSCRIBE packets not yet acknowledged */
  bool unsubscribed, disconnected;
  char sub_err[256];
  atomic_bool draining;

  /* For the monitor topic. */
  atomic_uint_fast64_t tasks_ok, tasks_error;
  atomic_uint_fast64_t received; /* messages the broker delivered */
  char monitor_topic[256];
  char *will_payload;
  st_blobstore *blobs; /* the blob store; shared, thread-safe */
  wk_janitor *janitor; /* when there is a blob store */
  struct thread_state *inline_ts; /* Paho's receive thread's (no Redis) */

  /* Full lanes: while any is, Paho does not read from the broker. */
  pthread_mutex_t pause_mu;
  int lanes_full;
  uint64_t pauses;       /* since the last WK-READS-PAUSED line */
  int64_t pause_note_ms; /* when that line was written */
};

/* ---- Small helpers ----------------------------------------------------- */

const char *wk_worker_id(const wk_worker *w) { return w->cfg->worker_id; }

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

static bool type_is(const char *name, const char *type, size_t len) {
  return strlen(name) == len && memcmp(name, type, len) == 0;
}

/* This worker's handler of `type` (`len` bytes), or NULL. */
static const wk_handler *find_handler(const wk_worker *w, const char *type,
                                      size_t len) {
  for (size_t i = 0; i < w->nhandlers; i++)
    if (type_is(w->handlers[i]->type, type, len))
      return w->handlers[i];
  return NULL;
}

/* True when this worker serves `type` (`len` bytes) or another live worker
 * announced it lately (nb:types, read by the renewal thread). */
static bool cloud_serves(wk_worker *w, const char *type, size_t len) {
  if (find_handler(w, type, len) != NULL)
    return true;
  bool found = false;
  pthread_mutex_lock(&w->tmu);
  for (size_t i = 0; i < w->ncloud && !found; i++)
    found = type_is(w->cloud_types[i], type, len);
  pthread_mutex_unlock(&w->tmu);
  return found;
}

void wk_pack_cloud_types(wk_worker *w, msgpack_packer *pk) {
  /* Our own types plus any other live worker's, without duplicates. */
  pthread_mutex_lock(&w->tmu);
  size_t n = w->nhandlers;
  for (size_t i = 0; i < w->ncloud; i++) {
    bool own = false;
    for (size_t j = 0; j < w->nhandlers && !own; j++)
      own = strcmp(w->handlers[j]->type, w->cloud_types[i]) == 0;
    n += !own;
  }
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < w->nhandlers; i++)
    wk_pack_str(pk, w->handlers[i]->type);
  for (size_t i = 0; i < w->ncloud; i++) {
    bool own = false;
    for (size_t j = 0; j < w->nhandlers && !own; j++)
      own = strcmp(w->handlers[j]->type, w->cloud_types[i]) == 0;
    if (!own)
      wk_pack_str(pk, w->cloud_types[i]);
  }
  pthread_mutex_unlock(&w->tmu);
}

static void publish(wk_worker *w, const char *terminal, const void *buf,
                    size_t len, int qos);

static void monitor_publish(wk_worker *w, const char *state);
static char *monitor_json(wk_worker *w, const char *state);

/* Counts one final reply for the monitor topic. */
static void count_final(wk_worker *w, int code) {
  atomic_fetch_add(code == 0 ? &w->tasks_ok : &w->tasks_error, 1);
}

static void publish(wk_worker *w, const char *terminal, const void *buf,
                    size_t len, int qos) {
  char topic[256];
  snprintf(topic, sizeof topic, "%s/reply/%s", w->cfg->prefix, terminal);
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)buf;
  m.payloadlen = (int)len;
  m.qos = qos;
  m.retained = 0;
  int rc = nb_paho_send(w->client, topic, &m, NULL);
  if (rc != MQTTASYNC_SUCCESS)
    NB_WARN("WK-PUBLISH-FAILED", "reply to %s not sent: %s", terminal,
            MQTTAsync_strerror(rc));
}

/* Encodes and publishes one reply; `c` may be NULL for replies made before a
 * handler context exists. */
static void send_reply(wk_worker *w, msgpack_sbuffer *out,
                       const char *terminal, const sc_reply_enc *r, int qos) {
  out->size = 0;
  if (sc_reply_encode(out, r) != 0) {
    NB_ERROR("WK-ENCODE", "cannot encode a reply for %s", terminal);
    return;
  }
  publish(w, terminal, out->data, out->size, qos);
}

static void send_error(wk_worker *w, msgpack_sbuffer *out,
                       const char *terminal, const char *id, int code,
                       const char *error, const char *help,
                       const uint8_t *result, size_t result_len) {
  sc_reply_enc r = {0};
  r.id = id;
  r.status = SC_STATUS_ERROR;
  r.code = code;
  r.error = error;
  r.help = help != NULL && help[0] != '\0' ? help : NULL;
  r.result = result;
  r.result_len = result_len;
  send_reply(w, out, terminal, &r, 1);
  count_final(w, code);
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

/* ---- Live claims ---------------------------------------------------------- */

static void live_add(wk_worker *w, wk_live *l) {
  pthread_mutex_lock(&w->lmu);
  l->next = w->live.next;
  l->prev = &w->live;
  w->live.next->prev = l;
  w->live.next = l;
  pthread_mutex_unlock(&w->lmu);
}

static void live_del(wk_worker *w, wk_live *l) {
  pthread_mutex_lock(&w->lmu);
  l->prev->next = l->next;
  l->next->prev = l->prev;
  pthread_mutex_unlock(&w->lmu);
}

/* ---- The dispatcher ------------------------------------------------------- */

typedef struct thread_state {
  wk_worker *w;
  lane *lane;
  st_redis *redis;
  msgpack_sbuffer out;
} thread_state;


static void ctx_fini(wk_ctx *c) {
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

/* The result {retry_after: 1000} of a 503, packed. */
static const uint8_t retry_1s[] = {0x81, 0xab, 'r', 'e', 't', 'r', 'y', '_',
                                   'a', 'f', 't', 'e', 'r', 0xcd, 0x03, 0xe8};

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
    NB_WARN("WK-REDIS", "claim of %s/%s failed: %s", c->terminal,
            c->task->id, st_redis_errstr(ts->redis));
    send_error(w, &ts->out, c->terminal, c->task->id, 503,
               "the cloud's state store is unavailable right now",
               "the agent sends the task again by itself; nothing was done",
               retry_1s, sizeof retry_1s);
    return;
  }
  switch (state) {
  case ST_CLAIM_DONE:
    publish(w, c->terminal, stored, stored_len, 1);
    count_final(w, 0);
    free(stored);
    return;
  case ST_CLAIM_CONFLICT: {
    char msg[160];
    snprintf(msg, sizeof msg,
             "task id %s was already used for a task with other content",
             c->task->id);
    send_error(w, &ts->out, c->terminal, c->task->id, 409, msg,
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
  live_add(w, &live);
  c->live = &live;
  c->effect = st_txn_new();
  int code = c->effect != NULL
                 ? h->fn(c)
                 : wk_fail(c, 500, NULL, "the worker is out of memory");
  live_del(w, &live);
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
    if (st_task_release(ts->redis, c->terminal, c->task->id,
                        cfg->worker_id) != 0)
      NB_WARN("WK-REDIS", "release of %s/%s failed: %s", c->terminal,
              c->task->id, st_redis_errstr(ts->redis));
    publish(w, c->terminal, ts->out.data, ts->out.size, 1);
    count_final(w, code);
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
    (void)st_task_release(ts->redis, c->terminal, c->task->id,
                          cfg->worker_id);
    send_error(w, &ts->out, c->terminal, c->task->id, 503,
               "the cloud's state changed while the task ran; nothing was "
               "changed",
               "send the task again", retry_1s, sizeof retry_1s);
    return;
  }
  if (rc != 0) {
    NB_WARN("WK-REDIS", "commit of %s/%s failed: %s", c->terminal,
            c->task->id, st_redis_errstr(ts->redis));
    (void)st_task_release(ts->redis, c->terminal, c->task->id,
                          cfg->worker_id);
    send_error(w, &ts->out, c->terminal, c->task->id, 503,
               "the cloud could not record the result; nothing was changed",
               "the agent sends the task again by itself", NULL, 0);
    return;
  }
  publish(w, c->terminal, ts->out.data, ts->out.size, 1);
  count_final(w, 0);
}

static void process_job(thread_state *ts, job *j) {
  wk_worker *w = ts->w;
  const char *type = j->type, *terminal = j->terminal;
  size_t type_len = strlen(type);
  const wk_handler *h = find_handler(w, type, type_len);
  bool unknown = false;
  if (j->kind == JOB_WILDCARD) {
    if (cloud_serves(w, type, type_len))
      return; /* its own group has it (or will: a worker for the type
                 appeared since the copy was queued) */
    unknown = true;
  } else if (j->kind == JOB_UNSERVED && h == NULL) {
    /* A task this worker serves is run as any other, wherever it came
     * from. One that another worker announced lately has its workers away
     * for a moment (restarting, reconnecting): it gets no answer now, the
     * agent sends it again, and by then the broker routes it to them. */
    if (cloud_serves(w, type, type_len)) {
      NB_INFO("WK-UNSERVED-HELD", "%s: a %.64s task left unanswered: its "
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
    snprintf(msg, sizeof msg, "no worker of this cloud serves task type "
             "\"%.64s\"", type);
    NB_INFO("WK-UNKNOWN-TYPE", "%s: %s", terminal, msg);
    send_error(w, &ts->out, terminal, task.id, 400, msg,
               "ping lists the task types this cloud serves", NULL, 0);
    goto done;
  }
  if (j->len > SC_MAX_TASK) {
    char msg[160];
    snprintf(msg, sizeof msg, "the task is %zu bytes; a task may be at "
             "most %d bytes", j->len, SC_MAX_TASK);
    NB_INFO("WK-TOO-BIG", "%s: %s", terminal, msg);
    send_error(w, &ts->out, terminal, task.id, 413, msg,
               "send larger data as a blob, in 256 KiB segments", NULL, 0);
    goto done;
  }
  if (rc != 0) {
    NB_INFO("WK-BAD-TASK", "%s: %s task: %s", terminal, type, err);
    send_error(w, &ts->out, terminal, task.id, 400, err, NULL, NULL, 0);
    goto done;
  }
  if (h == NULL) {
    char msg[160];
    snprintf(msg, sizeof msg, "this worker does not serve task type "
             "\"%.64s\"", type);
    send_error(w, &ts->out, terminal, task.id, 400, msg, NULL, NULL, 0);
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
  msgpack_sbuffer_init(&c.result);
  msgpack_packer_init(&c.pk, &c.result, msgpack_sbuffer_write);
  if (h->changes_state) {
    run_stateful(ts, &c, h);
  } else {
    int code = h->fn(&c);
    sc_reply_enc r;
    encode_outcome(ts, &c, code, &r);
    if (code >= 400 && code < 500)
      NB_INFO("WK-TASK-ERROR", "%s %s/%s: %d %s", type, terminal, task.id,
              code, c.error);
    publish(w, terminal, ts->out.data, ts->out.size, 1);
    count_final(w, code);
  }
  ctx_fini(&c);
done:
  sc_task_fini(&task);
}

static void job_free(job *j) {
  if (j->msg != NULL)
    MQTTAsync_freeMessage(&j->msg);
  free(j);
}

/* Counts lane `l` (its mu held) as full or not; Paho reads from the
 * broker only while no lane is full. A pause is noted in the log at most
 * once a minute, with the number of pauses since the last note. */
static void lane_set_full(lane *l, bool full) {
  wk_worker *w = l->w;
  l->full = full;
  pthread_mutex_lock(&w->pause_mu);
  w->lanes_full += full ? 1 : -1;
  nb_paho_pause_reads(w->lanes_full > 0);
  bool note = false;
  uint64_t pauses = 0;
  if (full) {
    w->pauses++;
    int64_t now = nb_mono_ms();
    if (w->pause_note_ms == 0 || now - w->pause_note_ms >= 60000) {
      note = true;
      pauses = w->pauses;
      w->pauses = 0;
      w->pause_note_ms = now;
    }
  }
  pthread_mutex_unlock(&w->pause_mu);
  if (note)
    NB_INFO("WK-READS-PAUSED",
            "%s lane full (%zu tasks waiting, queue = %zu): not reading "
            "from the broker until a thread takes one (%" PRIu64
            " pause(s) since the last note)",
            l == &w->lanes[LANE_HEAVY] ? "heavy" : "quick", l->qlen, l->cap,
            pauses);
}

static void *pool_main(void *arg) {
  thread_state *ts = arg;
  lane *l = ts->lane;
  /* One lock round per job: the lock that records a job's end also takes
   * the next one. */
  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (l->head == NULL && !l->stop)
      pthread_cond_wait(&l->cv, &l->mu);
    if (l->head == NULL)
      break;
    job *j = l->head;
    l->head = j->next;
    if (l->head == NULL)
      l->tail = NULL;
    l->qlen--;
    l->busy++;
    if (l->full && l->qlen < l->cap)
      lane_set_full(l, false);
    pthread_mutex_unlock(&l->mu);

    process_job(ts, j);
    job_free(j);

    pthread_mutex_lock(&l->mu);
    l->busy--;
    if (l->busy == 0 && l->head == NULL)
      pthread_cond_broadcast(&l->idle);
  }
  pthread_mutex_unlock(&l->mu);
  st_redis_free(ts->redis);
  msgpack_sbuffer_destroy(&ts->out);
  free(ts);
  return NULL;
}

static void lane_init(lane *l, wk_worker *w) {
  memset(l, 0, sizeof *l);
  l->w = w;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  pthread_cond_init(&l->idle, NULL);
  l->cap = w->cfg->queue > 0 ? (size_t)w->cfg->queue : 1;
}

/* Queues `j` (Paho's receive thread, in the arrival callback). A lane
 * that reaches its cap pauses Paho's reads (lane_set_full), so that the
 * broker keeps what this worker has no room for and backpressure reaches
 * it through TCP; the callback never waits. It used to wait here for a
 * slot, holding Paho's global mutex, which the pool threads' replies
 * need: a worker whose lane filled up hung for good
 * (tests/integration/test_worker_backpressure.sh). At most the message
 * being delivered when the pause begins goes over the cap. */
static void lane_push(lane *l, job *j) {
  pthread_mutex_lock(&l->mu);
  if (l->tail != NULL)
    l->tail->next = j;
  else
    l->head = j;
  l->tail = j;
  l->qlen++;
  if (!l->full && l->qlen >= l->cap)
    lane_set_full(l, true);
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

/* Waits until the lane has nothing queued or running, then ends its
 * threads. */
static void lane_drain(lane *l) {
  pthread_mutex_lock(&l->mu);
  while (l->head != NULL || l->busy > 0)
    pthread_cond_wait(&l->idle, &l->mu);
  l->stop = true;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  for (size_t i = 0; i < l->nthreads; i++)
    pthread_join(l->threads[i], NULL);
  l->nthreads = 0;
}

static void lane_fini(lane *l) {
  while (l->head != NULL) {
    job *j = l->head;
    l->head = j->next;
    job_free(j);
  }
  free(l->threads);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  pthread_cond_destroy(&l->idle);
}

/* Starts n threads on lane l, each with its own Redis connection. */
static int lane_start(lane *l, size_t n, char *err, size_t errcap) {
  const wk_config *cfg = l->w->cfg;
  l->threads = calloc(n, sizeof *l->threads);
  if (l->threads == NULL)
    return NIMBUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    thread_state *ts = calloc(1, sizeof *ts);
    if (ts == NULL)
      return NIMBUS_ENOMEM;
    ts->w = l->w;
    ts->lane = l;
    msgpack_sbuffer_init(&ts->out);
    int rc = st_redis_connect(cfg->redis_host, (int)cfg->redis_port,
                              cfg->redis_password, 2000, &ts->redis, err,
                              errcap);
    if (rc == 0 && pthread_create(&l->threads[i], NULL, pool_main, ts) != 0) {
      snprintf(err, errcap, "cannot start pool threads");
      st_redis_free(ts->redis);
      rc = NIMBUS_ESYS;
    }
    if (rc != 0) {
      msgpack_sbuffer_destroy(&ts->out);
      free(ts);
      return rc;
    }
    l->nthreads++;
  }
  return 0;
}

/* ---- Renewal and type registry --------------------------------------------- */

static void refresh_types(wk_worker *w, st_redis *r) {
  const char **own = calloc(w->nhandlers + 1, sizeof *own);
  if (own == NULL)
    return;
  for (size_t i = 0; i < w->nhandlers; i++)
    own[i] = w->handlers[i]->type;
  if (st_types_announce(r, own, w->nhandlers) != 0)
    NB_WARN("WK-REDIS", "cannot announce types: %s", st_redis_errstr(r));
  free(own);
  char **types = NULL;
  size_t n = 0;
  /* A type counts as served while some worker announced it recently:
   * three renewal rounds of silence plus a margin. */
  int64_t max_age = w->cfg->renew_ms * 10 + 60000;
  if (st_types_list(r, max_age, &types, &n) != 0)
    return;
  pthread_mutex_lock(&w->tmu);
  char **old = w->cloud_types;
  size_t nold = w->ncloud;
  w->cloud_types = types;
  w->ncloud = n;
  pthread_mutex_unlock(&w->tmu);
  for (size_t i = 0; i < nold; i++)
    free(old[i]);
  free(old);
}

static void renew_live(wk_worker *w, st_redis *r) {
  pthread_mutex_lock(&w->lmu);
  size_t n = 0;
  for (wk_live *l = w->live.next; l != &w->live; l = l->next)
    n++;
  if (n > 0) {
    st_claim_ref *refs = calloc(n, sizeof *refs);
    if (refs != NULL) {
      size_t i = 0;
      for (wk_live *l = w->live.next; l != &w->live; l = l->next, i++) {
        refs[i].terminal = l->terminal;
        refs[i].id = l->id;
      }
      /* Held under the lock so no entry leaves the list meanwhile; one
       * round trip every renew_ms. */
      if (st_claims_renew(r, w->cfg->worker_id, w->cfg->lease_ms, refs, n) ==
          0) {
        i = 0;
        for (wk_live *l = w->live.next; l != &w->live; l = l->next, i++) {
          if (refs[i].lost)
            atomic_store(&l->lost, true);
          if (refs[i].cancel)
            atomic_store(&l->cancel, true);
        }
      } else {
        NB_WARN("WK-REDIS", "lease renewal failed: %s", st_redis_errstr(r));
      }
      free(refs);
    }
  }
  pthread_mutex_unlock(&w->lmu);
}

static void *renew_main(void *arg) {
  wk_worker *w = arg;
  st_redis *r = NULL;
  char err[256];
  int64_t next_types = 0;
  pthread_mutex_lock(&w->rmu);
  while (!w->renew_stop) {
    pthread_mutex_unlock(&w->rmu);
    if (r == NULL &&
        st_redis_connect(w->cfg->redis_host, (int)w->cfg->redis_port,
                         w->cfg->redis_password, 2000, &r, err,
                         sizeof err) != 0)
      NB_WARN("WK-REDIS-DOWN", "%s", err);
    if (r != NULL) {
      renew_live(w, r);
      if (nb_mono_ms() >= next_types) {
        monitor_publish(w, atomic_load(&w->draining) ? "stopping" : "up");
        refresh_types(w, r);
        next_types = nb_mono_ms() + 5000;
      }
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (w->cfg->renew_ms % 1000) * 1000000;
    until.tv_sec += w->cfg->renew_ms / 1000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&w->rmu);
    if (!w->renew_stop)
      pthread_cond_timedwait(&w->rcv, &w->rmu, &until);
  }
  pthread_mutex_unlock(&w->rmu);
  st_redis_free(r);
  return NULL;
}

/* ---- Monitor topic ----------------------------------------------------- */

/* The worker's state as JSON for <prefix>/monitor/worker/<id> (retained):
 * {"worker", "state" (up, stopping, stopped; "down" is the broker's will
 * for a worker that vanished), "ts", "types", "threads", "tasks" {"ok",
 * "error" (final replies), "received" (messages the broker delivered, the
 * catch-all group's copies included)}, "queued", "running"}. Returns a
 * malloc'd string or NULL. */
static char *monitor_json(wk_worker *w, const char *state) {
  cJSON *o = cJSON_CreateObject();
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "worker", w->cfg->worker_id);
  cJSON_AddStringToObject(o, "state", state);
  cJSON_AddNumberToObject(o, "ts", (double)nb_now_ms());
  if (strcmp(state, "down") != 0) {
    cJSON *types = cJSON_AddArrayToObject(o, "types");
    for (size_t i = 0; types != NULL && i < w->nhandlers; i++)
      cJSON_AddItemToArray(types, cJSON_CreateString(w->handlers[i]->type));
    cJSON *th = cJSON_AddObjectToObject(o, "threads");
    cJSON *tasks = cJSON_AddObjectToObject(o, "tasks");
    size_t queued = 0, running = 0;
    for (int i = 0; i < LANES; i++) {
      pthread_mutex_lock(&w->lanes[i].mu);
      queued += w->lanes[i].qlen;
      running += w->lanes[i].busy;
      pthread_mutex_unlock(&w->lanes[i].mu);
    }
    if (th != NULL) {
      cJSON_AddNumberToObject(th, "quick",
                              (double)w->lanes[LANE_QUICK].nthreads);
      cJSON_AddNumberToObject(th, "heavy",
                              (double)w->lanes[LANE_HEAVY].nthreads);
    }
    if (tasks != NULL) {
      cJSON_AddNumberToObject(tasks, "ok", (double)atomic_load(&w->tasks_ok));
      cJSON_AddNumberToObject(tasks, "error",
                              (double)atomic_load(&w->tasks_error));
      cJSON_AddNumberToObject(tasks, "received",
                              (double)atomic_load(&w->received));
    }
    cJSON_AddNumberToObject(o, "queued", (double)queued);
    cJSON_AddNumberToObject(o, "running", (double)running);
    if (w->blobs != NULL) /* the blob store refuses writes: disk full */
      cJSON_AddBoolToObject(o, "storage_full",
                            st_blobstore_full_since(w->blobs) != 0);
  }
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* Publishes the worker's state, retained, so a monitor that subscribes
 * later sees every worker's last word at once. */
static void monitor_publish(wk_worker *w, const char *state) {
  if (w->client == NULL || !MQTTAsync_isConnected(w->client))
    return;
  char *text = monitor_json(w, state);
  if (text == NULL)
    return;
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = text;
  m.payloadlen = (int)strlen(text);
  m.qos = 1;
  m.retained = 1;
  (void)MQTTAsync_sendMessage(w->client, w->monitor_topic, &m, NULL);
  cJSON_free(text);
}

/* ---- MQTT session ------------------------------------------------------------ */

/* The parts of a task topic, pointing into it. */
typedef struct topic_parts {
  const char *type, *terminal;
  size_t type_len, terminal_len;
  bool unserved; /* <prefix>/unserved/..., not <prefix>/task/... */
} topic_parts;

/* Reads "<prefix>/task/<type>/<terminal>" or
 * "<prefix>/unserved/<type>/<terminal>" (`len` bytes, need not be
 * NUL-terminated): the type one non-empty level, the terminal a valid
 * terminal id. The only place a task's topic is read. */
static bool parse_topic(const wk_worker *w, const char *topic, size_t len,
                        topic_parts *tp) {
  size_t pl = w->prefix_len;
  if (len <= pl + 1 || memcmp(topic, w->cfg->prefix, pl) != 0 ||
      topic[pl] != '/')
    return false;
  const char *p = topic + pl + 1, *end = topic + len;
  if ((size_t)(end - p) > 5 && memcmp(p, "task/", 5) == 0) {
    p += 5;
    tp->unserved = false;
  } else if ((size_t)(end - p) > 9 && memcmp(p, "unserved/", 9) == 0) {
    p += 9;
    tp->unserved = true;
  } else {
    return false;
  }
  const char *slash = memchr(p, '/', (size_t)(end - p));
  if (slash == NULL || slash == p)
    return false;
  tp->type = p;
  tp->type_len = (size_t)(slash - p);
  tp->terminal = slash + 1;
  tp->terminal_len = (size_t)(end - tp->terminal);
  return nb_valid_terminal(tp->terminal, tp->terminal_len);
}

static int on_message(void *context, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  wk_worker *w = context;
  job *j = NULL;
  atomic_fetch_add(&w->received, 1);
  if (m->retained) {
    /* PROTOCOL.md: workers never act on a retained task. */
    NB_WARN("WK-RETAINED", "ignored a retained message on %s", topic);
    goto out;
  }
  size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
  topic_parts tp;
  if (!parse_topic(w, topic, tl, &tp)) {
    NB_WARN("WK-BAD-TOPIC", "ignored a message on %.*s", (int)tl, topic);
    goto out;
  }
  job_kind kind = JOB_TASK;
  if (tp.unserved)
    kind = JOB_UNSERVED;
  else if (MQTTProperties_getNumericValue(
               &m->properties, MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER) ==
           SUB_UNSERVED)
    kind = JOB_WILDCARD;
  if (kind == JOB_WILDCARD && cloud_serves(w, tp.type, tp.type_len))
    goto out; /* the type's own group has it: the common case, made cheap */
  size_t plen = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
  j = malloc(sizeof *j + tp.type_len + tp.terminal_len + 2);
  if (j == NULL) {
    NB_ERROR("WK-NOMEM", "dropped a task: out of memory");
    goto out;
  }
  char *type = (char *)(j + 1);
  memcpy(type, tp.type, tp.type_len);
  type[tp.type_len] = '\0';
  char *terminal = type + tp.type_len + 1;
  memcpy(terminal, tp.terminal, tp.terminal_len);
  terminal[tp.terminal_len] = '\0';
  j->type = type;
  j->terminal = terminal;
  /* The job keeps Paho's message (the application frees it, from any
   * thread) rather than a copy of up to a segment. */
  j->payload = plen > 0 ? m->payload : (const uint8_t *)"";
  j->len = plen;
  j->msg = m;
  m = NULL;
  j->kind = kind;
  j->next = NULL;

  /* The handler's lane; the quick one for tasks without a handler here.
   * A handler that runs inline (ping) is answered here, on Paho's thread,
   * without the hand-over to a pool thread and back. */
  const wk_handler *h = find_handler(w, tp.type, tp.type_len);
  if (h != NULL && h->run == WK_RUN_INLINE && kind == JOB_TASK) {
    process_job(w->inline_ts, j);
    job_free(j);
  } else {
    lane_push(
        &w->lanes[h != NULL && h->run == WK_RUN_HEAVY ? LANE_HEAVY : LANE_QUICK],
        j);
  }
out:
  if (m != NULL)
    MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_connection_lost(void *context, char *cause) {
  wk_worker *w = context;
  /* Paho reconnects by itself: read that CONNACK at once too. */
  nb_paho_connecting();
  if (!atomic_load(&w->draining))
    NB_WARN("WK-MQTT-LOST", "broker connection lost (%s); reconnecting",
            cause != NULL ? cause : "no reason given");
}

static void set_sub_state(wk_worker *w, int state, const char *why) {
  pthread_mutex_lock(&w->cmu);
  w->sub_state = state;
  if (why != NULL)
    nb_strlcpy(w->sub_err, why, sizeof w->sub_err);
  pthread_cond_broadcast(&w->ccv);
  pthread_mutex_unlock(&w->cmu);
}

/* Paho reports a SUBACK's reason codes in alt.sub only for a SUBSCRIBE of
 * more than one filter; for one filter (whatever call sent it) reasonCode
 * holds it and alt holds something else. */
static void sub_acked(wk_worker *w, MQTTAsync_successData5 *resp,
                      size_t filters) {
  int worst = 0;
  if (resp != NULL && filters > 1) {
    for (int i = 0; i < resp->alt.sub.reasonCodeCount; i++)
      if ((int)resp->alt.sub.reasonCodes[i] > worst)
        worst = (int)resp->alt.sub.reasonCodes[i];
  } else if (resp != NULL) {
    worst = (int)resp->reasonCode;
  }
  if (worst >= 0x80) {
    const char *rs = MQTTReasonCode_toString((enum MQTTReasonCodes)worst);
    char why[200];
    snprintf(why, sizeof why, "the broker refused a subscription (%s)",
             rs != NULL ? rs : "unknown reason");
    NB_ERROR("WK-SUB-REFUSED", "%s", why);
    set_sub_state(w, -1, why);
    return;
  }
  pthread_mutex_lock(&w->cmu);
  bool done = --w->subs_pending == 0 && w->sub_state == 0;
  if (done) {
    w->sub_state = 1;
    pthread_cond_broadcast(&w->ccv);
  }
  pthread_mutex_unlock(&w->cmu);
  if (done)
    NB_INFO("WK-SUBSCRIBED", "taking tasks (%zu subscriptions)",
            w->nfilters);
}

static void on_typed_sub_ok(void *context, MQTTAsync_successData5 *resp) {
  wk_worker *w = context;
  sub_acked(w, resp, w->nhandlers);
}

static void on_unserved_sub_ok(void *context,
                               MQTTAsync_successData5 *resp) {
  sub_acked(context, resp, 1);
}

static void on_sub_fail(void *context, MQTTAsync_failureData5 *resp) {
  wk_worker *w = context;
  char why[200];
  const char *rs =
      resp != NULL ? MQTTReasonCode_toString(resp->reasonCode) : NULL;
  snprintf(why, sizeof why, "the broker refused a subscription (%s%s%s)",
           rs != NULL ? rs : "no reason code",
           resp != NULL && resp->message != NULL ? ": " : "",
           resp != NULL && resp->message != NULL ? resp->message : "");
  NB_ERROR("WK-SUB-REFUSED", "%s (code %d)", why,
           resp != NULL ? resp->code : 0);
  set_sub_state(w, -1, why);
}

/* Sends the SUBSCRIBE packets: the typed groups (QoS 1, subscription id 1),
 * then the unserved group (id 2): QoS 1 on <prefix>/unserved/+/+, or QoS 0
 * on the catch-all <prefix>/task/+/+ (only the copies of types nobody
 * serves are acted on, and the agent re-sends, so QoS 0 loses nothing
 * there). The typed groups go first: by the time this worker joins the
 * unserved group, the broker counts its types as served. Workers use clean
 * sessions, so this runs on every connect. */
static void subscribe_all(wk_worker *w) {
  int passes = w->cfg->unserved_mode == WK_UNSERVED_OFF ? 1 : 2;
  size_t ntyped = w->nfilters - (size_t)(passes - 1);
  pthread_mutex_lock(&w->cmu);
  w->sub_state = 0;
  w->subs_pending = passes;
  pthread_mutex_unlock(&w->cmu);
  for (int pass = 0; pass < passes; pass++) {
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    MQTTProperty prop;
    prop.identifier = MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER;
    prop.value.integer4 = pass == 0 ? SUB_TYPED : SUB_UNSERVED;
    MQTTProperties props = MQTTProperties_initializer;
    MQTTProperties_add(&props, &prop);
    ro.properties = props;
    ro.onSuccess5 = pass == 0 ? on_typed_sub_ok : on_unserved_sub_ok;
    ro.onFailure5 = on_sub_fail;
    ro.context = w;
    /* A retained task must never be acted on (PROTOCOL.md). A broker
     * forwards a retained publish to existing subscribers with the flag
     * cleared unless they asked for it as published; and none is wanted at
     * subscribe time. */
    MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
    so.retainAsPublished = 1;
    so.retainHandling = 2;
    ro.subscribeOptions = so;
    int rc;
    if (pass == 0) {
      int *qos = calloc(ntyped, sizeof *qos);
      MQTTSubscribe_options *opts = calloc(ntyped, sizeof *opts);
      if (qos == NULL || opts == NULL) {
        free(qos);
        free(opts);
        MQTTProperties_free(&props);
        set_sub_state(w, -1, "out of memory");
        return;
      }
      for (size_t i = 0; i < ntyped; i++) {
        qos[i] = 1;
        opts[i] = so;
      }
      ro.subscribeOptionsList = opts;
      ro.subscribeOptionsCount = (int)ntyped;
      rc = MQTTAsync_subscribeMany(w->client, (int)ntyped, w->filters, qos,
                                   &ro);
      free(qos);
      free(opts);
    } else {
      int qos = w->cfg->unserved_mode == WK_UNSERVED_BROKER ? 1 : 0;
      rc = MQTTAsync_subscribe(w->client, w->filters[ntyped], qos, &ro);
    }
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
      char why[200];
      snprintf(why, sizeof why, "cannot subscribe: %s",
               MQTTAsync_strerror(rc));
      set_sub_state(w, -1, why);
      return;
    }
  }
}

static void on_connected(void *context, char *cause) {
  wk_worker *w = context;
  if (atomic_load(&w->draining))
    return;
  NB_INFO("WK-MQTT-UP", "connected to the broker (%s)",
          cause != NULL ? cause : "connect");
  subscribe_all(w);
}

static void on_connect_fail(void *context, MQTTAsync_failureData5 *resp) {
  wk_worker *w = context;
  char why[200];
  snprintf(why, sizeof why, "cannot connect to the broker: %s",
           resp != NULL && resp->message != NULL
               ? resp->message
               : (resp != NULL ? MQTTReasonCode_toString(resp->reasonCode)
                               : "no reason given"));
  set_sub_state(w, -1, why);
}

/* ---- Lifecycle ----------------------------------------------------------------- */

/* Adds one subscription filter built from `fmt`. */
static int add_filter(wk_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_filter(wk_worker *w, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof buf)
    return NIMBUS_EINVAL;
  char **f = realloc(w->filters, (w->nfilters + 1) * sizeof *f);
  if (f == NULL)
    return NIMBUS_ENOMEM;
  w->filters = f;
  if ((f[w->nfilters] = strdup(buf)) == NULL)
    return NIMBUS_ENOMEM;
  w->nfilters++;
  return 0;
}

static int add_handler(wk_worker *w, const wk_handler *h) {
  for (size_t i = 0; i < w->nhandlers; i++)
    if (w->handlers[i] == h)
      return 0;
  const wk_handler **a =
      realloc(w->handlers, (w->nhandlers + 1) * sizeof *a);
  if (a == NULL)
    return NIMBUS_ENOMEM;
  w->handlers = a;
  a[w->nhandlers++] = h;
  return 0;
}

/* Every built-in handler table. */
static const wk_handler *const builtin_tables[] = {
    wk_core_handlers, wk_diag_handlers, wk_blob_handlers, wk_backup_handlers};
#define NTABLES (sizeof builtin_tables / sizeof builtin_tables[0])

static const wk_handler *lookup_builtin(const wk_config *cfg,
                                        const char *type, size_t n) {
  for (size_t t = 0; t < NTABLES; t++) {
    if (builtin_tables[t] == wk_diag_handlers && !cfg->diag)
      continue;
    for (const wk_handler *h = builtin_tables[t]; h->type != NULL; h++)
      if (strlen(h->type) == n && strncmp(h->type, type, n) == 0)
        return h;
  }
  return NULL;
}

/* Picks the handlers named by cfg->types ("" = every built-in one that the
 * config allows). */
static int choose_handlers(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  int rc = 0;
  if (cfg->types == NULL || cfg->types[0] == '\0') {
    for (size_t t = 0; t < NTABLES && rc == 0; t++) {
      if (builtin_tables[t] == wk_diag_handlers && !cfg->diag)
        continue;
      for (const wk_handler *h = builtin_tables[t]; h->type != NULL && rc == 0;
           h++)
        rc = add_handler(w, h);
    }
    return rc;
  }
  const char *p = cfg->types;
  while (*p != '\0' && rc == 0) {
    while (*p == ',' || *p == ' ')
      p++;
    size_t n = strcspn(p, ", ");
    if (n == 0)
      break;
    const wk_handler *h = lookup_builtin(cfg, p, n);
    if (h == NULL) {
      snprintf(err, errcap, "types: \"%.*s\" is not a task type this worker "
               "can serve%s", (int)n, p,
               strncmp(p, "diag.", 5) == 0 ? " (diag types need --diag)" : "");
      return NIMBUS_ECONFIG;
    }
    rc = add_handler(w, h);
    p += n;
  }
  if (rc == 0 && w->nhandlers == 0) {
    snprintf(err, errcap, "types: no task type to serve");
    return NIMBUS_ECONFIG;
  }
  return rc;
}

int wk_worker_new(const wk_config *cfg, wk_worker **out, char *err,
                  size_t errcap) {
  wk_worker *w = calloc(1, sizeof *w);
  if (w == NULL)
    return NIMBUS_ENOMEM;
  w->cfg = cfg;
  w->prefix_len = strlen(cfg->prefix);
  w->inline_ts = calloc(1, sizeof *w->inline_ts);
  if (w->inline_ts == NULL) {
    free(w);
    return NIMBUS_ENOMEM;
  }
  w->inline_ts->w = w;
  msgpack_sbuffer_init(&w->inline_ts->out);
  w->live.next = w->live.prev = &w->live;
  for (int i = 0; i < LANES; i++)
    lane_init(&w->lanes[i], w);
  pthread_mutex_init(&w->lmu, NULL);
  pthread_mutex_init(&w->rmu, NULL);
  pthread_cond_init(&w->rcv, NULL);
  pthread_mutex_init(&w->tmu, NULL);
  pthread_mutex_init(&w->cmu, NULL);
  pthread_mutex_init(&w->pause_mu, NULL);
  pthread_cond_init(&w->ccv, NULL);
  atomic_init(&w->draining, false);
  atomic_init(&w->tasks_ok, 0);
  atomic_init(&w->tasks_error, 0);
  atomic_init(&w->received, 0);
  int rc = choose_handlers(w, err, errcap);
  bool serves_blobs = false;
  for (size_t i = 0; i < w->nhandlers; i++)
    serves_blobs |= strncmp(w->handlers[i]->type, "blob.", 5) == 0 ||
                    strncmp(w->handlers[i]->type, "backup.", 7) == 0;
  if (rc == 0 && serves_blobs) {
    /* A worker that serves no blob type needs no data directory. */
    rc = st_blobstore_open(cfg->data_dir, &w->blobs, err, errcap);
    if (rc != 0) {
      wk_worker_free(w);
      return NIMBUS_ECONFIG;
    }
    st_blobstore_set_direct(w->blobs, cfg->blob_direct);
  }
  for (size_t i = 0; rc == 0 && i < w->nhandlers; i++)
    rc = add_filter(w, "$share/nimbus-%s/%s/task/%s/+", w->handlers[i]->type,
                    cfg->prefix, w->handlers[i]->type);
  if (rc == 0 && cfg->unserved_mode == WK_UNSERVED_BROKER)
    rc = add_filter(w, "$share/nimbus-unserved/%s/unserved/+/+",
                    cfg->prefix);
  else if (rc == 0 && cfg->unserved_mode == WK_UNSERVED_WILDCARD)
    rc = add_filter(w, "$share/nimbus-unserved/%s/task/+/+", cfg->prefix);
  if (rc == 0) {
    int n = snprintf(w->monitor_topic, sizeof w->monitor_topic,
                     "%s/monitor/worker/%s", cfg->prefix, cfg->worker_id);
    if (n < 0 || (size_t)n >= sizeof w->monitor_topic)
      rc = NIMBUS_EINVAL;
  }
  if (rc != 0) {
    if (rc != NIMBUS_ECONFIG)
      snprintf(err, errcap, "cannot set the worker up: %s",
               nimbus_strerror(rc));
    wk_worker_free(w);
    return rc;
  }
  *out = w;
  return 0;
}

int wk_worker_start(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  int rc;
  char uri[300];
  snprintf(uri, sizeof uri, "tcp://%s:%lld", cfg->mqtt_host,
           (long long)cfg->mqtt_port);

  /* Redis first: a worker that cannot keep state must not take tasks. */
  st_redis *probe = NULL;
  if ((rc = st_redis_connect(cfg->redis_host, (int)cfg->redis_port,
                             cfg->redis_password, 2000, &probe, err,
                             errcap)) != 0)
    return rc;
  st_redis_free(probe);

  if ((rc = lane_start(&w->lanes[LANE_QUICK], (size_t)cfg->threads, err,
                       errcap)) != 0 ||
      (rc = lane_start(&w->lanes[LANE_HEAVY], (size_t)cfg->heavy_threads,
                       err, errcap)) != 0)
    return rc;
  if (pthread_create(&w->renew_thread, NULL, renew_main, w) != 0) {
    snprintf(err, errcap, "cannot start the renewal thread");
    return NIMBUS_ESYS;
  }
  w->renew_started = true;
  if (w->blobs != NULL &&
      wk_janitor_start(cfg, w->blobs, &w->janitor) != 0) {
    snprintf(err, errcap, "cannot start the janitor thread");
    return NIMBUS_ESYS;
  }

  nb_paho_init();
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
  co.sendWhileDisconnected = 1;
  co.maxBufferedMessages = 100000;
  rc = MQTTAsync_createWithOptions(&w->client, uri, cfg->worker_id,
                                   MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    snprintf(err, errcap, "cannot create the MQTT client: %s",
             MQTTAsync_strerror(rc));
    return NIMBUS_EMQTT;
  }
  MQTTAsync_setCallbacks(w->client, w, on_connection_lost, on_message, NULL);
  MQTTAsync_setConnected(w->client, w, on_connected);

  MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer5;
  opts.keepAliveInterval = 20;
  opts.cleanstart = 1;
  opts.automaticReconnect = 1;
  opts.minRetryInterval = 1;
  opts.maxRetryInterval = 5;
  opts.username = cfg->mqtt_username;
  opts.password = cfg->mqtt_password;
  opts.onFailure5 = on_connect_fail;
  opts.context = w;
  /* A worker that vanishes is marked down by the broker. */
  MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
  w->will_payload = monitor_json(w, "down");
  if (w->will_payload != NULL) {
    will.topicName = w->monitor_topic;
    will.message = w->will_payload;
    will.retained = 1;
    will.qos = 1;
    opts.will = &will;
  }
  nb_paho_connecting();
  if ((rc = MQTTAsync_connect(w->client, &opts)) != MQTTASYNC_SUCCESS) {
    snprintf(err, errcap, "cannot connect to the broker at %s: %s", uri,
             MQTTAsync_strerror(rc));
    return NIMBUS_EMQTT;
  }

  /* Ready once every subscription is acknowledged, bounded. */
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 15;
  pthread_mutex_lock(&w->cmu);
  while (w->sub_state == 0) {
    if (pthread_cond_timedwait(&w->ccv, &w->cmu, &until) == ETIMEDOUT)
      break;
  }
  int state = w->sub_state;
  if (state == 1) {
    pthread_mutex_unlock(&w->cmu);
    monitor_publish(w, "up");
    pthread_mutex_lock(&w->cmu);
  }
  if (state != 1)
    snprintf(err, errcap, "%s",
             state == 0 ? "the broker did not answer within 15 s"
                        : w->sub_err);
  pthread_mutex_unlock(&w->cmu);
  return state == 1 ? 0 : NIMBUS_EMQTT;
}

static void on_unsub_done(void *context, MQTTAsync_successData5 *resp) {
  (void)resp;
  wk_worker *w = context;
  pthread_mutex_lock(&w->cmu);
  w->unsubscribed = true;
  pthread_cond_broadcast(&w->ccv);
  pthread_mutex_unlock(&w->cmu);
}

static void on_unsub_fail(void *context, MQTTAsync_failureData5 *resp) {
  (void)resp;
  on_unsub_done(context, NULL);
}

static void on_disc_done(void *context, MQTTAsync_successData5 *resp) {
  (void)resp;
  wk_worker *w = context;
  pthread_mutex_lock(&w->cmu);
  w->disconnected = true;
  pthread_cond_broadcast(&w->ccv);
  pthread_mutex_unlock(&w->cmu);
}

static void on_disc_fail(void *context, MQTTAsync_failureData5 *resp) {
  (void)resp;
  on_disc_done(context, NULL);
}

static void wait_flag(wk_worker *w, bool *flag, int seconds) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += seconds;
  pthread_mutex_lock(&w->cmu);
  while (!*flag)
    if (pthread_cond_timedwait(&w->ccv, &w->cmu, &until) == ETIMEDOUT)
      break;
  pthread_mutex_unlock(&w->cmu);
}

void wk_worker_drain(wk_worker *w) {
  atomic_store(&w->draining, true);
  monitor_publish(w, "stopping");
  if (w->client != NULL && MQTTAsync_isConnected(w->client)) {
    /* Leave the shared groups first, so the broker hands new tasks to the
     * rest of the pool; what already reached us is finished below. */
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_unsub_done;
    ro.onFailure5 = on_unsub_fail;
    ro.context = w;
    if (MQTTAsync_unsubscribeMany(w->client, (int)w->nfilters, w->filters,
                                  &ro) == MQTTASYNC_SUCCESS)
      wait_flag(w, &w->unsubscribed, 5);
  }
  for (int i = 0; i < LANES; i++)
    lane_drain(&w->lanes[i]);
  if (w->renew_started) {
    pthread_mutex_lock(&w->rmu);
    w->renew_stop = true;
    pthread_cond_broadcast(&w->rcv);
    pthread_mutex_unlock(&w->rmu);
    pthread_join(w->renew_thread, NULL);
    w->renew_started = false;
  }
  wk_janitor_stop(w->janitor);
  w->janitor = NULL;
  monitor_publish(w, "stopped");
  if (w->client != NULL && MQTTAsync_isConnected(w->client)) {
    /* Disconnect waits up to its timeout for replies still in flight. */
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    d.timeout = 5000;
    d.onSuccess5 = on_disc_done;
    d.onFailure5 = on_disc_fail;
    d.context = w;
    if (MQTTAsync_disconnect(w->client, &d) == MQTTASYNC_SUCCESS)
      wait_flag(w, &w->disconnected, 6);
  }
}

void wk_worker_free(wk_worker *w) {
  if (w == NULL)
    return;
  if (w->lanes[LANE_QUICK].nthreads > 0 ||
      w->lanes[LANE_HEAVY].nthreads > 0 || w->renew_started)
    wk_worker_drain(w);
  if (w->client != NULL)
    MQTTAsync_destroy(&w->client);
  msgpack_sbuffer_destroy(&w->inline_ts->out);
  free(w->inline_ts);
  for (size_t i = 0; i < w->nfilters; i++)
    free(w->filters[i]);
  free(w->filters);
  free(w->handlers);
  cJSON_free(w->will_payload);
  for (int i = 0; i < LANES; i++)
    lane_fini(&w->lanes[i]);
  for (size_t i = 0; i < w->ncloud; i++)
    free(w->cloud_types[i]);
  free(w->cloud_types);
  pthread_mutex_destroy(&w->lmu);
  pthread_mutex_destroy(&w->rmu);
  pthread_cond_destroy(&w->rcv);
  pthread_mutex_destroy(&w->tmu);
  pthread_mutex_destroy(&w->cmu);
  pthread_mutex_destroy(&w->pause_mu);
  pthread_cond_destroy(&w->ccv);
  st_blobstore_free(w->blobs);
  free(w);
}
