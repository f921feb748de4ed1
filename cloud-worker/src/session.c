/* The worker's MQTT session: connecting (a clean session each time, with
 * a will that marks the worker down), the subscriptions to the typed
 * shared groups and the unserved group, the arrival of a task (read off
 * its topic, bounded per terminal, handed to its pool), and publishing
 * replies.
 *
 * Paho acknowledges a QoS 1 task before we see it (FINDINGS.md), so nothing
 * here relies on the broker for delivery: the terminal re-sends until it
 * holds a final reply, and the claim in Redis makes a re-sent task
 * harmless. A task of a type no worker of the cloud serves reaches one
 * worker through the unserved group, which answers it with 400: by
 * default the group of <prefix>/unserved/+/+, where nimbus_auth.so
 * re-routes such tasks; with unserved = wildcard a catch-all group on
 * <prefix>/task/+/+, which also gets a copy of every other task.
 *
 * A terminal may have at most max_inflight tasks in this worker, queued
 * or running (PROTOCOL.md: the agent keeps at most that many outstanding;
 * the cloud may answer 429 with retry_after): one over gets 429 at once,
 * without a claim or a record, so a flood from one terminal neither
 * fills a pool's queue nor pauses the worker's reads for the others. */
#include "wk_worker.h"

#include "nb_log.h"
#include "nb_paho.h"
#include "nb_session.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MQTT 5 subscription identifiers: the typed groups, the unserved group. */
enum { SUB_TYPED = 1, SUB_UNSERVED = 2 };

/* Publishes to <prefix>/<what>/<terminal>; 0 or NIMBUS_EMQTT (logged). */
static int publish_to(wk_worker *w, const char *what, const char *terminal,
                      const void *buf, size_t len, int qos) {
  char topic[256];
  snprintf(topic, sizeof topic, "%s/%s/%s", w->cfg->prefix, what, terminal);
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = (void *)buf;
  m.payloadlen = (int)len;
  m.qos = qos;
  m.retained = 0;
  int rc = nb_paho_send(wk_client(w), topic, &m, NULL);
  if (rc == MQTTASYNC_SUCCESS)
    return 0;
  NB_WARN("WK-PUBLISH-FAILED", "%s to %s not sent: %s", what, terminal,
          MQTTAsync_strerror(rc));
  return NIMBUS_EMQTT;
}

void wk_publish(wk_worker *w, const char *terminal, const void *buf, size_t len,
                int qos) {
  (void)publish_to(w, "reply", terminal, buf, len, qos);
}

int wk_publish_notice(wk_worker *w, const char *terminal, const void *buf,
                      size_t len) {
  return publish_to(w, "notify", terminal, buf, len, 1);
}

/* ---- The in-flight bound ------------------------------------------------- */

typedef struct inflight {
  wk_tnode node; /* first */
  size_t n;
} inflight;

/* Counts `j` in its terminal's tasks; false when the terminal already has
 * max_inflight of them here (or memory ran out): the caller answers 429. */
static bool inflight_take(wk_worker *w, job *j) {
  bool ok = true;
  pthread_mutex_lock(&w->imu);
  inflight *f = (inflight *)wk_tmap_find(&w->inflight, j->terminal, j->thash);
  if (f == NULL) {
    f = calloc(1, sizeof *f);
    if (f != NULL) {
      f->node.hash = j->thash;
      nb_strlcpy(f->node.key, j->terminal, sizeof f->node.key);
      if (wk_tmap_insert(&w->inflight, &f->node) != 0) {
        free(f);
        f = NULL;
      }
    }
  }
  if (f == NULL || f->n >= (size_t)w->cfg->max_inflight)
    ok = false;
  else
    f->n++;
  pthread_mutex_unlock(&w->imu);
  j->counted = ok;
  return ok;
}

void wk_inflight_done(wk_worker *w, job *j) {
  if (!j->counted)
    return;
  pthread_mutex_lock(&w->imu);
  inflight *f = (inflight *)wk_tmap_find(&w->inflight, j->terminal, j->thash);
  if (f != NULL && --f->n == 0) {
    wk_tmap_remove(&w->inflight, &f->node);
    free(f);
  }
  pthread_mutex_unlock(&w->imu);
  j->counted = false;
}

/* Answers `j` with 429 (on the receive thread: one decode, for its id). */
static void refuse_over_limit(wk_worker *w, job *j) {
  thread_state *ts = w->inline_ts;
  sc_task task;
  char err[64];
  if (sc_task_decode(j->payload, j->len, &task, err, sizeof err) != 0 &&
      task.id[0] == '\0') {
    sc_task_fini(&task);
    return; /* no id to answer; the pool would have said 400 */
  }
  atomic_fetch_add(&w->refused, 1);
  char msg[160];
  snprintf(msg, sizeof msg,
           "this terminal has %lld tasks in flight at "
           "this worker, the most it may have (max_inflight in ping)",
           (long long)w->cfg->max_inflight);
  wk_send_error(w, &ts->out, j->terminal, task.id, 429, msg,
                "wait retry_after ms, or for replies to the tasks in "
                "flight, and send it again",
                wk_retry_1s, sizeof wk_retry_1s);
  sc_task_fini(&task);
}

/* ---- Arrivals ------------------------------------------------------------ */

/* ---- MQTT session -------------------------------------------------------- */

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
  if (kind == JOB_WILDCARD && wk_cloud_serves(w, tp.type, tp.type_len))
    goto out; /* the type's own group has it: the common case, made cheap */
  /* A handler that runs inline (ping) is answered here, on Paho's
   * thread, without the hand-over to a pool thread and back. Any other
   * task goes to its handler's pool; one without a handler here to the
   * quick pool, which answers it (or leaves it, see dispatch.c). A pool
   * with no room leaves the task with Paho, which offers it again after
   * its next read from the socket (every task a pool thread takes ends in
   * a reply whose PUBACK is such a read): the backpressure of both builds
   * (pool.c), and the callback never waits. */
  const wk_served *sv = wk_find_served(w, tp.type, tp.type_len);
  bool inline_task =
      sv != NULL && (sv->h->flags & WK_INLINE) != 0 && kind == JOB_TASK;
  wk_pool *pool = sv != NULL ? sv->pool : &w->pools[0];
  if (!inline_task && wk_pool_full(pool)) {
    atomic_fetch_add(&w->deferred, 1);
    return 0; /* Paho keeps the message and the topic */
  }
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
  j->served = sv;
  j->thash = wk_tmap_hash(terminal);
  j->counted = false;
  if (inline_task) {
    wk_process_job(w->inline_ts, j);
    wk_job_free(j);
  } else if (!inflight_take(w, j)) {
    refuse_over_limit(w, j);
    wk_job_free(j);
  } else if (wk_pool_push(pool, j) != 0) {
    NB_ERROR("WK-NOMEM", "dropped a task: out of memory");
    wk_inflight_done(w, j);
    wk_job_free(j);
  }
out:
  atomic_fetch_add(&w->received, 1); /* once a message, when it is taken */
  if (m != NULL)
    MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

/* ---- The session (nb_session.h) ----------------------------------------- */

static void on_up(void *ctx) {
  wk_worker *w = ctx;
  NB_INFO("WK-SUBSCRIBED", "taking tasks (%zu subscriptions)", w->nfilters);
}

static void on_lost(void *ctx, const char *cause) {
  wk_worker *w = ctx;
  if (!atomic_load(&w->draining))
    NB_WARN("WK-MQTT-LOST", "broker connection lost (%s); reconnecting", cause);
}

static void on_refused(void *ctx, const char *why) {
  (void)ctx;
  NB_ERROR("WK-SUB-REFUSED", "%s; subscribing again after a pause", why);
}

/* ---- Lifecycle ----------------------------------------------------------- */

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

int wk_session_filters(wk_worker *w) {
  const wk_config *cfg = w->cfg;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < w->nserved; i++)
    rc = add_filter(w, "$share/nimbus-%s/%s/task/%s/+", w->served[i].h->type,
                    cfg->prefix, w->served[i].h->type);
  if (rc == 0 && cfg->unserved_mode == WK_UNSERVED_BROKER)
    rc = add_filter(w, "$share/nimbus-unserved/%s/unserved/+/+", cfg->prefix);
  else if (rc == 0 && cfg->unserved_mode == WK_UNSERVED_WILDCARD)
    rc = add_filter(w, "$share/nimbus-unserved/%s/task/+/+", cfg->prefix);
  return rc;
}

/* The subscriptions: the typed groups (QoS 1, subscription id 1), then
 * the unserved group (id 2): QoS 1 on <prefix>/unserved/+/+, or QoS 0 on
 * the catch-all <prefix>/task/+/+ (only the copies of types nobody serves
 * are acted on, and the agent re-sends, so QoS 0 loses nothing there).
 * The typed groups go first: by the time this worker joins the unserved
 * group, the broker counts its types as served. A retained task must
 * never be acted on (PROTOCOL.md): a broker forwards a retained publish
 * to existing subscribers with the flag cleared unless they asked for it
 * as published, and none is wanted at subscribe time. Workers use clean
 * sessions, so the session subscribes on every connect. */
int wk_session_make(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  char uri[300];
  snprintf(uri, sizeof uri, "tcp://%s:%lld", cfg->mqtt_host,
           (long long)cfg->mqtt_port);
  bool unserved = cfg->unserved_mode != WK_UNSERVED_OFF;
  size_t ntyped = w->nfilters - (unserved ? 1 : 0);
  nb_sub_group groups[2] = {
      {.filters = (const char *const *)w->filters,
       .n = ntyped,
       .qos = 1,
       .sub_id = SUB_TYPED,
       .retain_as_published = true,
       .retain_handling = 2},
      {.filters = (const char *const *)w->filters + ntyped,
       .n = 1,
       .qos = cfg->unserved_mode == WK_UNSERVED_BROKER ? 1 : 0,
       .sub_id = SUB_UNSERVED,
       .retain_as_published = true,
       .retain_handling = 2},
  };
  /* A worker that vanishes is marked down by the broker. */
  w->will_payload = wk_monitor_json(w, "down");
  nb_session_opts o = {
      .uri = uri,
      .client_id = cfg->worker_id,
      .username = cfg->mqtt_username,
      .password = cfg->mqtt_password,
      .keepalive_s = 20,
      .clean_start = true,
      .session_expiry_s = -1,
      .retry_max_s = 5,
      .send_while_disconnected = true,
      .max_buffered = 100000,
      .will_topic = w->will_payload != NULL ? w->monitor_topic : NULL,
      .will_payload = w->will_payload,
      .will_len = w->will_payload != NULL ? strlen(w->will_payload) : 0,
      .will_qos = 1,
      .will_retained = true,
      .groups = groups,
      .ngroups = unserved ? 2 : 1,
      .ctx = w,
      .on_message = on_message,
      .on_up = on_up,
      .on_lost = on_lost,
      .on_refused = on_refused,
  };
  int rc = nb_session_new(&o, &w->sess);
  if (rc != 0)
    snprintf(err, errcap, "cannot make the MQTT session: %s",
             nimbus_strerror(rc));
  return rc;
}

int wk_session_start(wk_worker *w, char *err, size_t errcap) {
  /* Ready once every subscription is granted; a broker still starting is
   * waited for, up to 15 s. */
  char why[256];
  int rc;
  if ((rc = nb_session_connect(w->sess, 15000, why, sizeof why)) != 0) {
    snprintf(err, errcap, "%s", why);
    return NIMBUS_EMQTT;
  }
  return 0;
}

MQTTAsync wk_client(const wk_worker *w) { return nb_session_client(w->sess); }

void wk_session_unsubscribe(wk_worker *w) {
  /* Leave the shared groups first, so the broker hands new tasks to the
   * rest of the pool; what already reached us is finished by the caller. */
  nb_session_unsubscribe(w->sess, 5000);
}

void wk_session_disconnect(wk_worker *w) {
  /* Disconnect waits up to its timeout for replies still in flight. */
  nb_session_disconnect(w->sess, 5000, -1);
}
