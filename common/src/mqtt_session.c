/* The MQTT session layer of nb_session.h: one state machine for the
 * worker's and the agent's connection.
 *
 * States: IDLE (no client), CONNECTING (the first connect, a caller
 * waiting in nb_session_connect), UP (every group granted), DOWN (lost,
 * Paho reconnecting), CLOSED (disconnected on purpose). Each connect,
 * the first and every automatic one, starts a round of SUBSCRIBEs; the
 * round is up once every group of it has its grant. A SUBACK of an
 * earlier round (a SUBSCRIBE queued before a drop goes out after the
 * reconnect beside the new one) grants the same filters on the same
 * connection, so it counts where it lands, and twice changes nothing.
 *
 * A refusal in the first round fails nb_session_connect; in a later one
 * the retry thread (started the first time it is needed) subscribes
 * again after 1 s, doubling to 60 s. Owner callbacks run without mu. */
#include "nb_session.h"

#include "nb_paho.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { NB_MAX_GROUPS = 8 };
enum { S_IDLE, S_CONNECTING, S_UP, S_DOWN, S_CLOSED };

typedef struct sub_ctx {
  nb_session *s;
  size_t group;
} sub_ctx;

struct nb_session {
  nb_session_opts o; /* strings and groups point into our copies */
  char *uri, *client_id, *username, *password, *will_topic;
  void *will_payload;
  nb_sub_group groups[NB_MAX_GROUPS];
  char **filters[NB_MAX_GROUPS];
  sub_ctx sctx[NB_MAX_GROUPS];

  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC */
  /* Written under mu; publishers read it without (nb_session_client). */
  _Atomic(MQTTAsync) client;
  int state;
  bool connecting_call; /* a caller is in nb_session_connect */
  int first_rc;         /* the first round's failure, 0 while none */
  bool first_transient; /* ... and whether trying again may help */
  char first_err[256];
  bool granted[NB_MAX_GROUPS];
  bool subscribe; /* false once unsubscribed: reconnects subscribe no more */
  bool unsub_done, disc_done;
  int64_t resub_due; /* monotonic ms, 0: none */
  int resub_delay_ms;
  bool thread_started, stop;
  pthread_t thread;
};

static char *dup_or_null(const char *s) { return s != NULL ? strdup(s) : NULL; }

static void timespec_at(struct timespec *ts, int64_t mono_ms) {
  ts->tv_sec = (time_t)(mono_ms / 1000);
  ts->tv_nsec = (long)(mono_ms % 1000) * 1000000L;
}

int nb_session_new(const nb_session_opts *o, nb_session **out) {
  *out = NULL;
  if (o == NULL || o->uri == NULL || o->client_id == NULL ||
      o->on_message == NULL || o->ngroups > NB_MAX_GROUPS)
    return NIMBUS_EINVAL;
  nb_session *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NIMBUS_ENOMEM;
  s->o = *o;
  s->uri = strdup(o->uri);
  s->client_id = strdup(o->client_id);
  s->username = dup_or_null(o->username);
  s->password = dup_or_null(o->password);
  s->will_topic = dup_or_null(o->will_topic);
  bool ok = s->uri != NULL && s->client_id != NULL &&
            (o->username == NULL || s->username != NULL) &&
            (o->password == NULL || s->password != NULL) &&
            (o->will_topic == NULL || s->will_topic != NULL);
  if (ok && o->will_topic != NULL && o->will_len > 0) {
    s->will_payload = malloc(o->will_len);
    ok = s->will_payload != NULL;
    if (ok)
      memcpy(s->will_payload, o->will_payload, o->will_len);
  }
  for (size_t g = 0; ok && g < o->ngroups; g++) {
    s->groups[g] = o->groups[g];
    s->filters[g] = calloc(o->groups[g].n + 1, sizeof(char *));
    ok = s->filters[g] != NULL;
    for (size_t i = 0; ok && i < o->groups[g].n; i++)
      ok = (s->filters[g][i] = strdup(o->groups[g].filters[i])) != NULL;
    s->groups[g].filters = (const char *const *)s->filters[g];
    s->sctx[g] = (sub_ctx){.s = s, .group = g};
  }
  s->o.groups = s->groups;
  s->o.uri = s->uri;
  s->o.client_id = s->client_id;
  s->o.username = s->username;
  s->o.password = s->password;
  s->o.will_topic = s->will_topic;
  s->o.will_payload = s->will_payload;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&s->mu, NULL);
  s->subscribe = true;
  if (!ok) {
    nb_session_free(s);
    return NIMBUS_ENOMEM;
  }
  *out = s;
  return 0;
}

MQTTAsync nb_session_client(const nb_session *s) {
  return s != NULL ? atomic_load(&((nb_session *)s)->client) : NULL;
}

bool nb_session_up(const nb_session *s) {
  nb_session *m = (nb_session *)s;
  pthread_mutex_lock(&m->mu);
  bool up = m->state == S_UP;
  pthread_mutex_unlock(&m->mu);
  return up;
}

/* ---- Subscribing ------------------------------------------------------- */

static void subscribe_all(nb_session *s);

/* The first round fails with rc; a later one is tried again after a
 * back-off. Needs mu. */
static void refused_locked(nb_session *s, int rc, bool transient,
                           const char *why) {
  if (s->state == S_CONNECTING) {
    if (s->first_rc == 0) {
      s->first_rc = rc;
      s->first_transient = transient;
      nb_strlcpy(s->first_err, why, sizeof s->first_err);
    }
    pthread_cond_broadcast(&s->cv);
    return;
  }
  s->resub_delay_ms = s->resub_delay_ms == 0       ? 1000
                      : s->resub_delay_ms >= 30000 ? 60000
                                                   : s->resub_delay_ms * 2;
  s->resub_due = nb_mono_ms() + s->resub_delay_ms;
  pthread_cond_broadcast(&s->cv);
}

static void *retry_thread(void *arg) {
  nb_session *s = arg;
  pthread_mutex_lock(&s->mu);
  while (!s->stop) {
    if (s->resub_due == 0) {
      pthread_cond_wait(&s->cv, &s->mu);
      continue;
    }
    struct timespec ts;
    timespec_at(&ts, s->resub_due);
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
      continue;
    if (s->stop || s->resub_due == 0 || nb_mono_ms() < s->resub_due)
      continue;
    s->resub_due = 0;
    MQTTAsync client =
        s->subscribe && s->state != S_CLOSED ? atomic_load(&s->client) : NULL;
    pthread_mutex_unlock(&s->mu);
    /* Paho's calls take Paho's lock, which its threads hold while they
     * call us (and we take mu): never with mu held. */
    if (client != NULL && MQTTAsync_isConnected(client))
      subscribe_all(s);
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* A refusal after the first round: says so and makes sure the retry
 * thread runs. Without mu. */
static void refused_later(nb_session *s, int rc, const char *why) {
  pthread_mutex_lock(&s->mu);
  bool first = s->state == S_CONNECTING;
  refused_locked(s, rc, false, why);
  if (!first && !s->thread_started && !s->stop)
    s->thread_started = pthread_create(&s->thread, NULL, retry_thread, s) == 0;
  pthread_mutex_unlock(&s->mu);
  if (!first && s->o.on_refused != NULL)
    s->o.on_refused(s->o.ctx, why);
}

/* Group g granted with reason codes[0..n). */
static void group_answered(nb_session *s, size_t g, const int *codes,
                           size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (codes[i] >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
      char why[256];
      const char *rs = MQTTReasonCode_toString((enum MQTTReasonCodes)codes[i]);
      snprintf(why, sizeof why,
               "the broker refused the subscription to %s: %s (reason 0x%02x)",
               i < s->groups[g].n ? s->groups[g].filters[i] : "a filter",
               rs != NULL ? rs : "unknown reason", codes[i]);
      refused_later(s, NIMBUS_EREFUSED, why);
      return;
    }
  }
  pthread_mutex_lock(&s->mu);
  if (s->state != S_CONNECTING && s->state != S_UP && s->state != S_DOWN) {
    pthread_mutex_unlock(&s->mu);
    return;
  }
  s->granted[g] = true;
  bool all = true;
  for (size_t i = 0; i < s->o.ngroups; i++)
    all = all && s->granted[i];
  bool news =
      all && s->state != S_UP && (s->state != S_CONNECTING || s->first_rc == 0);
  if (news) {
    s->state = S_UP;
    s->resub_due = 0;
    s->resub_delay_ms = 0;
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  if (news && s->o.on_up != NULL)
    s->o.on_up(s->o.ctx);
}

static void on_suback(void *ctx, MQTTAsync_successData5 *d) {
  sub_ctx *c = ctx;
  int codes[64];
  size_t want = c->s->groups[c->group].n;
  size_t n = nb_paho_suback_codes(d, want, codes, 64);
  group_answered(c->s, c->group, codes, n);
}

static void on_subfail(void *ctx, MQTTAsync_failureData5 *d) {
  /* Without a reason code the connection dropped before the SUBACK: the
   * next connect subscribes again. */
  if (d != NULL && (int)d->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
    sub_ctx *c = ctx;
    int code = (int)d->reasonCode;
    group_answered(c->s, c->group, &code, 1);
  }
}

/* A new round: one SUBSCRIBE per group. Without mu. */
static void subscribe_all(nb_session *s) {
  pthread_mutex_lock(&s->mu);
  MQTTAsync client = atomic_load(&s->client);
  bool go = s->subscribe && client != NULL;
  for (size_t g = 0; g < s->o.ngroups; g++)
    s->granted[g] = false;
  pthread_mutex_unlock(&s->mu);
  if (!go)
    return;
  if (s->o.ngroups == 0) {
    group_answered(s, 0, NULL, 0); /* nothing to subscribe: up at once */
    return;
  }
  for (size_t g = 0; g < s->o.ngroups; g++) {
    const nb_sub_group *grp = &s->groups[g];
    if (grp->n == 0) {
      group_answered(s, g, NULL, 0);
      continue;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    if (grp->sub_id > 0) {
      MQTTProperty prop = {.identifier =
                               MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER,
                           .value.integer4 = (unsigned)grp->sub_id};
      MQTTProperties_add(&props, &prop);
    }
    ro.properties = props;
    ro.onSuccess5 = on_suback;
    ro.onFailure5 = on_subfail;
    ro.context = &s->sctx[g];
    MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
    so.retainAsPublished = grp->retain_as_published ? 1 : 0;
    so.retainHandling = (unsigned char)grp->retain_handling;
    ro.subscribeOptions = so;
    int rc;
    if (grp->n == 1) {
      rc = MQTTAsync_subscribe(client, grp->filters[0], grp->qos, &ro);
    } else {
      int *qos = calloc(grp->n, sizeof *qos);
      MQTTSubscribe_options *opts = calloc(grp->n, sizeof *opts);
      rc = MQTTASYNC_FAILURE;
      if (qos != NULL && opts != NULL) {
        for (size_t i = 0; i < grp->n; i++) {
          qos[i] = grp->qos;
          opts[i] = so;
        }
        ro.subscribeOptionsList = opts;
        ro.subscribeOptionsCount = (int)grp->n;
        rc = MQTTAsync_subscribeMany(client, (int)grp->n,
                                     (char *const *)grp->filters, qos, &ro);
      }
      free(qos);
      free(opts);
    }
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
      char why[200];
      snprintf(why, sizeof why, "cannot subscribe: %s", MQTTAsync_strerror(rc));
      refused_later(s, NIMBUS_EMQTT, why);
      return;
    }
  }
}

/* ---- Paho's connection callbacks --------------------------------------- */

static void on_connected(void *ctx, char *cause) {
  (void)cause;
  nb_session *s = ctx;
  /* TCP_NODELAY, in the public-API build (nb_paho.h). */
  (void)nb_paho_connected(s->uri);
  pthread_mutex_lock(&s->mu);
  bool live =
      s->state == S_CONNECTING || s->state == S_UP || s->state == S_DOWN;
  pthread_mutex_unlock(&s->mu);
  if (live)
    subscribe_all(s);
}

static void on_lost(void *ctx, char *cause) {
  nb_session *s = ctx;
  pthread_mutex_lock(&s->mu);
  bool tell = s->state == S_UP || s->state == S_DOWN;
  if (s->state == S_UP)
    s->state = S_DOWN;
  s->resub_due = 0; /* the reconnect subscribes anyway */
  pthread_mutex_unlock(&s->mu);
  /* Paho reconnects by itself: read that CONNACK at once too. */
  nb_paho_connecting();
  if (tell && s->o.on_lost != NULL)
    s->o.on_lost(s->o.ctx, cause != NULL ? cause : "no reason given");
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  nb_session *s = ctx;
  return s->o.on_message(s->o.ctx, topic, topic_len, m);
}

/* Set so that Paho forgets the failure callback after the first success
 * (it clears both only when a success callback is set). */
static void on_connect_ok(void *ctx, MQTTAsync_successData5 *d) {
  (void)ctx;
  (void)d;
}

static int connack_err(int code) {
  switch (code) {
  case MQTTREASONCODE_CLIENT_IDENTIFIER_NOT_VALID:
  case MQTTREASONCODE_BAD_USER_NAME_OR_PASSWORD:
  case MQTTREASONCODE_NOT_AUTHORIZED:
  case MQTTREASONCODE_BANNED:
  case MQTTREASONCODE_BAD_AUTHENTICATION_METHOD:
    return NIMBUS_EAUTH;
  default:
    return NIMBUS_EMQTT;
  }
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *d) {
  nb_session *s = ctx;
  int reason = nb_paho_connack_reason(d);
  char what[160], why[256];
  nb_paho_failure_text(d, what, sizeof what);
  if (reason != 0)
    snprintf(why, sizeof why, "the broker refused the connection as %s: %s",
             s->client_id, what);
  else
    snprintf(why, sizeof why, "cannot connect to %s: %s", s->uri, what);
  pthread_mutex_lock(&s->mu);
  /* Paho also calls this while a client given up on is destroyed. */
  if (s->state == S_CONNECTING)
    refused_locked(s, reason != 0 ? connack_err(reason) : NIMBUS_EMQTT,
                   reason == 0, why);
  pthread_mutex_unlock(&s->mu);
}

/* ---- Connecting -------------------------------------------------------- */

/* One MQTTAsync_connect of the existing client. 0 or a Paho code. */
static int start_connect(nb_session *s, int timeout_ms) {
  MQTTProperties props = MQTTProperties_initializer;
  if (s->o.session_expiry_s >= 0) {
    MQTTProperty expiry = {.identifier =
                               MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL,
                           .value.integer4 = (unsigned)s->o.session_expiry_s};
    if (MQTTProperties_add(&props, &expiry) != 0)
      return MQTTASYNC_FAILURE;
  }
  MQTTAsync_connectOptions c = MQTTAsync_connectOptions_initializer5;
  c.keepAliveInterval = s->o.keepalive_s;
  c.cleanstart = s->o.clean_start ? 1 : 0;
  c.username = s->username;
  c.password = s->password;
  c.connectTimeout =
      timeout_ms > 0 && timeout_ms < 30000 ? (timeout_ms + 999) / 1000 : 30;
  c.automaticReconnect = 1;
  c.minRetryInterval = 1;
  c.maxRetryInterval = s->o.retry_max_s > 0 ? s->o.retry_max_s : 30;
  c.connectProperties = &props;
  c.onSuccess5 = on_connect_ok;
  c.onFailure5 = on_connect_fail;
  c.context = s;
  MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
  if (s->will_topic != NULL) {
    will.topicName = s->will_topic;
    will.message = NULL;
    will.payload.data = s->will_payload;
    will.payload.len = (int)s->o.will_len;
    will.retained = s->o.will_retained ? 1 : 0;
    will.qos = s->o.will_qos;
    c.will = &will;
  }
  nb_paho_connecting();
  int rc = MQTTAsync_connect(atomic_load(&s->client), &c);
  MQTTProperties_free(&props);
  return rc;
}

/* A new client with our callbacks; NULL with *prc on failure. */
static MQTTAsync make_client(nb_session *s, int *prc) {
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
  co.sendWhileDisconnected = s->o.send_while_disconnected ? 1 : 0;
  co.maxBufferedMessages = s->o.max_buffered;
  MQTTAsync client = NULL;
  *prc = MQTTAsync_createWithOptions(&client, s->uri, s->client_id,
                                     MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (*prc != MQTTASYNC_SUCCESS)
    return NULL;
  MQTTAsync_setCallbacks(client, s, on_lost, on_message, NULL);
  MQTTAsync_setConnected(client, s, on_connected);
  return client;
}

/* Destroys a client given up on: callbacks it still makes (Paho calls
 * back inside MQTTAsync_destroy, so without mu) find the session idle. */
static void drop_client(nb_session *s, MQTTAsync client) {
  pthread_mutex_lock(&s->mu);
  s->state = S_IDLE;
  atomic_store(&s->client, NULL);
  pthread_mutex_unlock(&s->mu);
  MQTTAsync_destroy(&client);
}

int nb_session_connect(nb_session *s, int timeout_ms, char *err,
                       size_t errcap) {
  if (s == NULL)
    return NIMBUS_EINVAL;
  pthread_mutex_lock(&s->mu);
  int busy = s->connecting_call                       ? NIMBUS_EBUSY
             : s->state == S_UP || s->state == S_DOWN ? -1
             : s->state == S_CLOSED                   ? NIMBUS_ECLOSED
                                                      : 0;
  if (busy == 0)
    s->connecting_call = true;
  pthread_mutex_unlock(&s->mu);
  if (busy != 0)
    return busy < 0 ? 0 : busy;

  int64_t deadline = timeout_ms < 0 ? INT64_MAX : nb_mono_ms() + timeout_ms;
  nb_paho_init();
  int rc = 0, last_rc = 0;
  char why[256] = "", last_why[256] = "";
  /* Each try has a client of its own: Paho's reconnect starts only after
   * a first success, and a failed client is not connected again. */
  for (int64_t pause = 100;; pause = pause < 1000 ? 2 * pause : 2000) {
    int prc;
    MQTTAsync client = make_client(s, &prc);
    if (client == NULL) {
      rc = NIMBUS_EMQTT;
      snprintf(why, sizeof why, "cannot use broker URI %s: %s", s->uri,
               MQTTAsync_strerror(prc));
      break;
    }
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->client, client);
    s->state = S_CONNECTING;
    s->first_rc = 0;
    s->first_err[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    int64_t left = deadline - nb_mono_ms();
    prc = start_connect(s, left > INT32_MAX ? -1 : (int)left);
    if (prc != MQTTASYNC_SUCCESS) {
      rc = NIMBUS_EMQTT;
      snprintf(why, sizeof why, "cannot connect to %s: %s", s->uri,
               MQTTAsync_strerror(prc));
      drop_client(s, client);
      break;
    }
    pthread_mutex_lock(&s->mu);
    while (s->state == S_CONNECTING && s->first_rc == 0) {
      if (deadline == INT64_MAX) {
        pthread_cond_wait(&s->cv, &s->mu);
      } else {
        struct timespec ts;
        timespec_at(&ts, deadline);
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
          break;
      }
    }
    bool up = s->state == S_UP;
    rc = up ? 0 : s->first_rc;
    bool transient = s->first_transient;
    nb_strlcpy(why, s->first_err, sizeof why);
    pthread_mutex_unlock(&s->mu);
    if (up)
      break;
    drop_client(s, client);
    if (rc == 0 && last_rc != 0) {
      /* The time ran out while trying again: say why the tries failed. */
      rc = last_rc;
      nb_strlcpy(why, last_why, sizeof why);
      break;
    }
    if (rc == 0) {
      rc = NIMBUS_ETIMEDOUT;
      snprintf(why, sizeof why, "no session with %s within %d ms", s->uri,
               timeout_ms);
      break;
    }
    last_rc = rc;
    nb_strlcpy(last_why, why, sizeof last_why);
    left = deadline - nb_mono_ms();
    if (!transient || left <= 0)
      break;
    /* No broker there yet (it is starting, or restarting). */
    int64_t nap = pause < left ? pause : left;
    struct timespec ts = {.tv_sec = (time_t)(nap / 1000),
                          .tv_nsec = (long)(nap % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  pthread_mutex_lock(&s->mu);
  s->connecting_call = false;
  pthread_mutex_unlock(&s->mu);
  if (rc != 0 && err != NULL && errcap > 0)
    nb_strlcpy(err, why, errcap);
  return rc;
}

/* ---- The end ----------------------------------------------------------- */

static void on_unsub(void *ctx, MQTTAsync_successData5 *d) {
  (void)d;
  nb_session *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->unsub_done = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_unsub_fail(void *ctx, MQTTAsync_failureData5 *d) {
  (void)d;
  on_unsub(ctx, NULL);
}

static void on_disc(void *ctx, MQTTAsync_successData5 *d) {
  (void)d;
  nb_session *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->disc_done = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_disc_fail(void *ctx, MQTTAsync_failureData5 *d) {
  (void)d;
  on_disc(ctx, NULL);
}

/* Waits with mu held until *flag or timeout_ms. */
static void wait_flag_locked(nb_session *s, const bool *flag, int timeout_ms) {
  struct timespec ts;
  timespec_at(&ts, nb_mono_ms() + timeout_ms);
  while (!*flag && pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
    ;
}

void nb_session_unsubscribe(nb_session *s, int timeout_ms) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  s->subscribe = false;
  s->resub_due = 0;
  MQTTAsync client = atomic_load(&s->client);
  s->unsub_done = false;
  pthread_mutex_unlock(&s->mu);
  if (client == NULL || !MQTTAsync_isConnected(client))
    return;
  size_t n = 0;
  for (size_t g = 0; g < s->o.ngroups; g++)
    n += s->groups[g].n;
  char **all = calloc(n + 1, sizeof *all);
  if (all == NULL)
    return;
  n = 0;
  for (size_t g = 0; g < s->o.ngroups; g++)
    for (size_t i = 0; i < s->groups[g].n; i++)
      all[n++] = s->filters[g][i];
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess5 = on_unsub;
  ro.onFailure5 = on_unsub_fail;
  ro.context = s;
  if (n > 0 && MQTTAsync_unsubscribeMany(client, (int)n, all, &ro) ==
                   MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&s->mu);
    wait_flag_locked(s, &s->unsub_done, timeout_ms);
    pthread_mutex_unlock(&s->mu);
  }
  free(all);
}

void nb_session_disconnect(nb_session *s, int timeout_ms, int64_t expiry_s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  MQTTAsync client = atomic_load(&s->client);
  bool live = client != NULL && s->state != S_CLOSED;
  s->state = client != NULL ? S_CLOSED : s->state;
  s->subscribe = false;
  s->disc_done = false;
  pthread_mutex_unlock(&s->mu);
  if (!live || !MQTTAsync_isConnected(client))
    return;
  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
  d.timeout = timeout_ms;
  d.onSuccess5 = on_disc;
  d.onFailure5 = on_disc_fail;
  d.context = s;
  if (expiry_s >= 0) {
    MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL,
                      .value.integer4 = (unsigned)expiry_s};
    (void)MQTTProperties_add(&d.properties, &p);
  }
  if (MQTTAsync_disconnect(client, &d) == MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&s->mu);
    wait_flag_locked(s, &s->disc_done, timeout_ms + 1000);
    pthread_mutex_unlock(&s->mu);
  }
  MQTTProperties_free(&d.properties);
}

void nb_session_free(nb_session *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  s->stop = true;
  s->state = S_CLOSED;
  MQTTAsync client = atomic_load(&s->client);
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (s->thread_started)
    pthread_join(s->thread, NULL);
  /* Paho calls back inside MQTTAsync_destroy: without mu, with s alive. */
  if (client != NULL)
    MQTTAsync_destroy(&client);
  for (size_t g = 0; g < NB_MAX_GROUPS; g++) {
    for (size_t i = 0; s->filters[g] != NULL && s->filters[g][i] != NULL; i++)
      free(s->filters[g][i]);
    free(s->filters[g]);
  }
  free(s->uri);
  free(s->client_id);
  free(s->username);
  free(s->password);
  free(s->will_topic);
  free(s->will_payload);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
