/* libnimbus-agent's session: creating and freeing an agent, the MQTT 5
 * connection through Paho's MQTTAsync, and the agent's own thread.
 *
 * Paho calls back on its own threads while holding its global mutex, so
 * its callbacks here only record state, queue events and wake someone;
 * the application is called from the agent's thread alone (ag_loop). That
 * thread also re-sends tasks: after every connect (once the subscriptions
 * are granted, so that no reply can be missed) and whenever a task's
 * re-send clock runs out. The clock is scanned at one deadline, the
 * earliest task's, coalesced by a little slack so that a thousand tasks
 * due within a few milliseconds cost one wake-up; submitting a task wakes
 * the thread only when it moves that deadline earlier, which the common
 * case (every task on the same interval) never does. */
#include "ag_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nb_paho.h"
#include "nb_util.h"

/* ---- Small helpers ----------------------------------------------------- */

static char *ag_strdup_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static char *ag_strdup_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s == NULL)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* A topic prefix is one or more levels without wildcards. */
static bool ag_prefix_valid(const char *p) {
  size_t n = strlen(p);
  if (n == 0 || n > 200 || p[0] == '/' || p[n - 1] == '/')
    return false;
  return strpbrk(p, "+#") == NULL;
}

/* ---- Options and lifetime ---------------------------------------------- */

void nimbus_agent_opts_init(nimbus_agent_opts *o) {
  if (o != NULL)
    memset(o, 0, sizeof *o);
}

/* Where the device id lives: the option, $NIMBUS_STATE_DIR, ~/.nimbus. */
static char *ag_state_dir(const nimbus_agent_opts *o) {
  if (o->state_dir != NULL && o->state_dir[0] != '\0')
    return strdup(o->state_dir);
  const char *env = getenv("NIMBUS_STATE_DIR");
  if (env != NULL && env[0] != '\0')
    return strdup(env);
  const char *home = getenv("HOME");
  if (home != NULL && home[0] != '\0')
    return ag_strdup_printf("%s/.nimbus", home);
  return NULL;
}

static int ag_opts_check(const nimbus_agent_opts *o, char *err, size_t errcap) {
  if (o->uri == NULL || o->uri[0] == '\0') {
    nb_errf(err, errcap, "the broker's URI is missing");
    return NIMBUS_EINVAL;
  }
  if (o->terminal == NULL || o->terminal[0] == '\0') {
    nb_errf(err, errcap, "the terminal id is missing");
    return NIMBUS_EINVAL;
  }
  if (!nb_valid_terminal(o->terminal, strlen(o->terminal))) {
    nb_errf(err, errcap,
            "terminal id \"%.64s\" is not 1-64 bytes of [A-Za-z0-9._-]",
            o->terminal);
    return NIMBUS_EINVAL;
  }
  if (o->password == NULL) {
    nb_errf(err, errcap, "the password is missing");
    return NIMBUS_EINVAL;
  }
  if (o->device_id != NULL &&
      !nb_valid_token(o->device_id, strlen(o->device_id), 8, 64)) {
    nb_errf(err, errcap, "device id is not 8-64 bytes of [A-Za-z0-9_-]");
    return NIMBUS_EINVAL;
  }
  if (o->prefix != NULL && !ag_prefix_valid(o->prefix)) {
    nb_errf(err, errcap,
            "topic prefix \"%.64s\" is empty, has a wildcard or a "
            "leading or trailing /",
            o->prefix);
    return NIMBUS_EINVAL;
  }
  if (o->max_inflight < 0 || o->max_inflight > AG_MAX_INFLIGHT ||
      o->resend_ms < 0 || o->resend_max_ms < 0 || o->session_expiry_s < 0 ||
      o->keepalive_s < 0 || o->keepalive_s > 65535) {
    nb_errf(err, errcap, "a numeric option is out of range");
    return NIMBUS_EINVAL;
  }
  int resend = o->resend_ms > 0 ? o->resend_ms : AG_DEFAULT_RESEND_MS;
  int resend_max =
      o->resend_max_ms > 0 ? o->resend_max_ms : AG_DEFAULT_RESEND_MAX_MS;
  if (resend_max < resend) {
    nb_errf(err, errcap, "resend_max_ms (%d) is below resend_ms (%d)",
            resend_max, resend);
    return NIMBUS_EINVAL;
  }
  return 0;
}

static void *ag_loop(void *arg);

int nimbus_agent_new(const nimbus_agent_opts *opts, nimbus_agent **out) {
  return nimbus_agent_new_err(opts, out, NULL, 0);
}

int nimbus_agent_new_err(const nimbus_agent_opts *opts, nimbus_agent **out,
                         char *err, size_t errcap) {
  int rc;
  nimbus_agent *a = NULL;
  char *state_dir = NULL;
  char device[SC_ID_MAX + 1];
  char localerr[AG_ERRSTR];

  if (err == NULL || errcap == 0) {
    err = localerr;
    errcap = sizeof localerr;
  }
  err[0] = '\0';
  if (out != NULL)
    *out = NULL;
  if (opts == NULL || out == NULL) {
    nb_errf(err, errcap, "no options or no place for the agent");
    return NIMBUS_EINVAL;
  }
  if ((rc = ag_opts_check(opts, err, errcap)) != 0)
    return rc;
  /* OpenSSL sets its generator up (reading its config, seeding) at the
   * first use, which takes milliseconds: pay that here rather than in the
   * first task's round trip. Without random bytes there are no task ids. */
  unsigned char warm;
  if (nb_random_bytes(&warm, 1) != 0) {
    nb_errf(err, errcap, "no random bytes for task ids");
    return NIMBUS_ESYS;
  }
  int slot = 0, lock_fd = -1;
  if (opts->device_id != NULL) {
    nb_strlcpy(device, opts->device_id, sizeof device);
  } else {
    state_dir = ag_state_dir(opts);
    if (state_dir == NULL) {
      nb_errf(err, errcap, "no state directory: set NIMBUS_STATE_DIR or HOME");
      return NIMBUS_EINVAL;
    }
    rc = ag_device_id_load(state_dir, device, sizeof device, err, errcap);
    /* An extra slot's device id is "<device>-<k>", within the 64 bytes. */
    if (rc == 0)
      rc = ag_session_slot_take(
          state_dir, strlen(device) + 3 <= SC_ID_MAX ? AG_SESSION_SLOTS : 1,
          &slot, &lock_fd, err, errcap);
    free(state_dir);
    if (rc != 0)
      return rc;
  }

  a = calloc(1, sizeof *a);
  if (a == NULL) {
    if (lock_fd >= 0)
      close(lock_fd);
    return NIMBUS_ENOMEM;
  }
  a->slot = slot;
  a->lock_fd = lock_fd;
  /* Synchronisation first, so that nimbus_agent_free can undo any part. */
  if (pthread_mutex_init(&a->mu, NULL) != 0) {
    if (lock_fd >= 0)
      close(lock_fd);
    free(a);
    return NIMBUS_ESYS;
  }
  pthread_condattr_init(&a->cond_attr);
  pthread_condattr_setclock(&a->cond_attr, CLOCK_MONOTONIC);
  pthread_cond_init(&a->slot_cond, &a->cond_attr);
  pthread_cond_init(&a->loop_cond, &a->cond_attr);
  pthread_cond_init(&a->state_cond, &a->cond_attr);
  pthread_cond_init(&a->cb_cond, &a->cond_attr);
  msgpack_sbuffer_init(&a->scratch);
  atomic_init(&a->up, false);
  a->conn_gen = 1;
  a->loop_deadline = INT64_MAX;

  a->max_inflight =
      opts->max_inflight > 0 ? opts->max_inflight : AG_DEFAULT_INFLIGHT;
  a->resend_ms = opts->resend_ms > 0 ? opts->resend_ms : AG_DEFAULT_RESEND_MS;
  a->resend_max_ms =
      opts->resend_max_ms > 0 ? opts->resend_max_ms : AG_DEFAULT_RESEND_MAX_MS;
  a->coalesce_ms = a->resend_ms / 32 < 250 ? a->resend_ms / 32 : 250;
  a->session_expiry_s =
      opts->session_expiry_s > 0 ? opts->session_expiry_s : AG_DEFAULT_EXPIRY_S;
  if (a->slot > 0 && a->session_expiry_s > AG_EXTRA_EXPIRY_S)
    a->session_expiry_s = AG_EXTRA_EXPIRY_S;
  a->keepalive_s =
      opts->keepalive_s > 0 ? opts->keepalive_s : AG_DEFAULT_KEEPALIVE_S;
  a->clean_start = opts->clean_start;

  const char *prefix = opts->prefix != NULL ? opts->prefix : AG_DEFAULT_PREFIX;
  a->uri = strdup(opts->uri);
  a->terminal = strdup(opts->terminal);
  a->password = strdup(opts->password);
  a->prefix = strdup(prefix);
  a->client_id =
      a->slot == 0
          ? ag_strdup_printf("%s.%s", opts->terminal, device)
          : ag_strdup_printf("%s.%s-%d", opts->terminal, device, a->slot);
  a->reply_topic = ag_strdup_printf("%s/reply/%s", prefix, opts->terminal);
  a->notify_topic = ag_strdup_printf("%s/notify/%s", prefix, opts->terminal);
  size_t nb = 16;
  while (nb < 2 * (size_t)a->max_inflight)
    nb *= 2;
  a->buckets = calloc(nb, sizeof *a->buckets);
  a->bucket_mask = nb - 1;
  if (a->uri == NULL || a->terminal == NULL || a->password == NULL ||
      a->prefix == NULL || a->client_id == NULL || a->reply_topic == NULL ||
      a->notify_topic == NULL || a->buckets == NULL) {
    rc = NIMBUS_ENOMEM;
    goto fail;
  }
  a->reply_topic_len = strlen(a->reply_topic);
  a->notify_topic_len = strlen(a->notify_topic);

  if (pthread_create(&a->thread, NULL, ag_loop, a) != 0) {
    nb_errf(err, errcap, "cannot start the agent's thread");
    rc = NIMBUS_ESYS;
    goto fail;
  }
  a->thread_started = true;
  *out = a;
  return 0;

fail:
  nimbus_agent_free(a);
  return rc;
}

static void ag_on_disconnected(void *ctx, MQTTAsync_successData5 *d) {
  (void)d;
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  a->disconnected = true;
  pthread_cond_broadcast(&a->state_cond);
  pthread_mutex_unlock(&a->mu);
}

static void ag_on_disconnect_failed(void *ctx, MQTTAsync_failureData5 *d) {
  (void)d;
  ag_on_disconnected(ctx, NULL);
}

/* Ends the session politely and destroys the client. The DISCONNECT keeps
 * the broker's session of slot 0, the installation's own; an extra slot's
 * session ends with it (Session Expiry Interval 0), since slot 0's session
 * gets the same replies and notices. Paho calls back inside
 * MQTTAsync_destroy for publishes it still holds, so mu must not be
 * held. */
static void ag_client_close(nimbus_agent *a, MQTTAsync client,
                            bool disconnect) {
  if (client == NULL)
    return;
  if (disconnect && MQTTAsync_isConnected(client)) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    d.timeout = 200;
    d.onSuccess5 = ag_on_disconnected;
    d.onFailure5 = ag_on_disconnect_failed;
    d.context = a;
    if (a->slot > 0) {
      MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL,
                        .value.integer4 = 0};
      /* Without the property the session merely lasts its day. */
      (void)MQTTProperties_add(&d.properties, &p);
    }
    pthread_mutex_lock(&a->mu);
    a->disconnected = false;
    pthread_mutex_unlock(&a->mu);
    if (MQTTAsync_disconnect(client, &d) == MQTTASYNC_SUCCESS) {
      struct timespec ts;
      ag_timespec_at(&ts, nb_mono_ms() + 1000);
      pthread_mutex_lock(&a->mu);
      while (!a->disconnected &&
             pthread_cond_timedwait(&a->state_cond, &a->mu, &ts) == 0)
        ;
      pthread_mutex_unlock(&a->mu);
    }
    MQTTProperties_free(&d.properties);
  }
  MQTTAsync_destroy(&client);
}

void nimbus_agent_free(nimbus_agent *a) {
  if (a == NULL)
    return;
  pthread_mutex_lock(&a->mu);
  a->closing = true;
  pthread_cond_broadcast(&a->slot_cond);
  pthread_cond_signal(&a->loop_cond);
  pthread_mutex_unlock(&a->mu);
  if (a->thread_started)
    pthread_join(a->thread, NULL);
  ag_client_close(a, a->client, true);
  a->client = NULL;

  /* No thread but ours is left: free what remains. */
  while (a->ev_head != NULL) {
    ag_event *ev = a->ev_head;
    a->ev_head = ev->next;
    if (ev->kind == AG_EV_PROGRESS) {
      free(ev->reply);
      free(ev);
    } else if (ev->kind == AG_EV_NOTICE) {
      free(ev->notice);
      free(ev);
    }
  }
  while (a->all != NULL) {
    nimbus_task *t = a->all;
    a->all = t->next;
    ag_task_destroy(t);
  }
  msgpack_sbuffer_destroy(&a->scratch);
  free(a->sendv);
  free(a->buckets);
  free(a->uri);
  free(a->terminal);
  free(a->password);
  free(a->prefix);
  free(a->client_id);
  free(a->reply_topic);
  free(a->notify_topic);
  if (a->lock_fd >= 0)
    close(a->lock_fd); /* the session slot is free again */
  pthread_cond_destroy(&a->slot_cond);
  pthread_cond_destroy(&a->loop_cond);
  pthread_cond_destroy(&a->state_cond);
  pthread_cond_destroy(&a->cb_cond);
  pthread_condattr_destroy(&a->cond_attr);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

const char *nimbus_agent_client_id(const nimbus_agent *a) {
  return a != NULL ? a->client_id : NULL;
}

const char *nimbus_agent_errstr(const nimbus_agent *a) {
  /* The agent's threads write errstr (under mu) whenever a connect or a
   * subscription fails; the caller gets a copy taken under the same lock,
   * so it never reads a line half rewritten. */
  static _Thread_local char copy[sizeof a->errstr];
  if (a == NULL)
    return "";
  nimbus_agent *m = (nimbus_agent *)a;
  pthread_mutex_lock(&m->mu);
  memcpy(copy, a->errstr, sizeof copy);
  pthread_mutex_unlock(&m->mu);
  copy[sizeof copy - 1] = '\0';
  return copy;
}

bool nimbus_agent_connected(const nimbus_agent *a) {
  return a != NULL && atomic_load(&a->up);
}

void nimbus_agent_on_notice(nimbus_agent *a, nimbus_notice_cb cb, void *ctx) {
  if (a == NULL)
    return;
  pthread_mutex_lock(&a->mu);
  a->notice_cb = cb;
  a->notice_ctx = ctx;
  pthread_mutex_unlock(&a->mu);
}

void nimbus_agent_on_offer(nimbus_agent *a, nimbus_offer_cb cb, void *ctx) {
  if (a == NULL)
    return;
  pthread_mutex_lock(&a->mu);
  a->offer_cb = cb;
  a->offer_ctx = ctx;
  pthread_mutex_unlock(&a->mu);
}

/* Hands the notice agent.offer (packed, len bytes) to cb when it holds
 * offer, platform, version, text (str) and size (int). Returns false,
 * having called nothing, when it does not. */
static bool ag_offer_deliver(nimbus_offer_cb cb, void *ctx,
                             const uint8_t *notice, size_t len) {
  msgpack_object m;
  msgpack_zone *z = NULL;
  char err[64];
  if (sc_value_decode(notice, len, &m, &z, err, sizeof err) != 0)
    return false;
  static const char *const keys[] = {"offer", "platform", "version", "text"};
  char *s[4] = {NULL, NULL, NULL, NULL};
  const msgpack_object *size = sc_map_get(&m, "size");
  bool ok = m.type == MSGPACK_OBJECT_MAP && size != NULL &&
            size->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            size->via.u64 <= INT64_MAX;
  for (size_t i = 0; ok && i < 4; i++) {
    const msgpack_object *o = sc_map_get(&m, keys[i]);
    ok = o != NULL && o->type == MSGPACK_OBJECT_STR &&
         memchr(o->via.str.ptr, 0, o->via.str.size) == NULL &&
         (s[i] = strndup(o->via.str.ptr, o->via.str.size)) != NULL;
  }
  if (ok) {
    nimbus_agent_offer off = {.offer = s[0],
                              .platform = s[1],
                              .version = s[2],
                              .text = s[3],
                              .size = (int64_t)size->via.u64};
    cb(ctx, &off);
  }
  for (size_t i = 0; i < 4; i++)
    free(s[i]);
  msgpack_zone_free(z);
  return ok;
}

/* ---- Paho's callbacks -------------------------------------------------- */

/* The first connect failed: tell nimbus_agent_connect. Later failures
 * (while Paho reconnects by itself) change nothing. Needs mu. */
static void ag_first_connect_failed_locked(nimbus_agent *a, int rc) {
  if (a->conn_state != AG_CONN_CONNECTING)
    return;
  a->conn_state = AG_CONN_FAILED;
  a->connect_rc = rc;
  pthread_cond_broadcast(&a->state_cond);
}

/* The subscriptions failed: the first connect fails; on a reconnect the
 * agent's thread tries again after a back-off (the agent sends nothing
 * until they are granted, and nimbus_agent_errstr says why). Needs mu. */
static void ag_sub_failed_locked(nimbus_agent *a, int rc) {
  if (a->conn_state == AG_CONN_CONNECTING) {
    ag_first_connect_failed_locked(a, rc);
    return;
  }
  a->resub_delay_ms = a->resub_delay_ms == 0       ? 1000
                      : a->resub_delay_ms >= 30000 ? 60000
                                                   : a->resub_delay_ms * 2;
  a->resub_due = nb_mono_ms() + a->resub_delay_ms;
  if (a->resub_due < a->loop_deadline) {
    a->loop_deadline = a->resub_due;
    pthread_cond_signal(&a->loop_cond);
  }
}

static int ag_connack_err(int code) {
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

/* Set so that Paho forgets the failure callback after the first success
 * (it clears both only when a success callback is set). */
static void ag_on_connect_ok(void *ctx, MQTTAsync_successData5 *d) {
  (void)ctx;
  (void)d;
}

static void ag_on_connect_fail(void *ctx, MQTTAsync_failureData5 *d) {
  nimbus_agent *a = ctx;
  int reason = nb_paho_connack_reason(d);
  char what[160];
  nb_paho_failure_text(d, what, sizeof what);
  pthread_mutex_lock(&a->mu);
  if (a->conn_state != AG_CONN_CONNECTING) {
    /* Paho also calls this while we destroy a client we gave up on. */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  if (reason != 0) {
    nb_errf(a->errstr, sizeof a->errstr,
            "the broker refused the connection as %s: %s", a->client_id, what);
    ag_first_connect_failed_locked(a, ag_connack_err(reason));
  } else {
    nb_errf(a->errstr, sizeof a->errstr, "cannot connect to %s: %s", a->uri,
            what);
    ag_first_connect_failed_locked(a, NIMBUS_EMQTT);
  }
  pthread_mutex_unlock(&a->mu);
}

/* Any code of 0x80 or more in a SUBACK is a refusal. */
static void ag_subscribed(nimbus_agent *a, const int *codes, int n) {
  pthread_mutex_lock(&a->mu);
  if (a->conn_state != AG_CONN_CONNECTING && a->conn_state != AG_CONN_UP) {
    pthread_mutex_unlock(&a->mu);
    return;
  }
  for (int i = 0; i < n; i++) {
    if (codes[i] >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
      snprintf(a->errstr, sizeof a->errstr,
               "the broker refused the subscription to %s: %s "
               "(reason 0x%02x)",
               i == 0 ? a->reply_topic : a->notify_topic,
               MQTTReasonCode_toString((enum MQTTReasonCodes)codes[i]),
               codes[i]);
      ag_sub_failed_locked(a, NIMBUS_EREFUSED);
      pthread_mutex_unlock(&a->mu);
      return;
    }
  }
  a->conn_state = AG_CONN_UP;
  a->resub_due = 0;
  a->resub_delay_ms = 0;
  /* A second SUBACK on one connection (a SUBSCRIBE queued before a drop
   * goes out after the reconnect next to the new one) re-sends nothing. */
  if (!atomic_load(&a->up))
    a->resend_all = true;
  atomic_store(&a->up, true);
  pthread_cond_signal(&a->loop_cond);
  pthread_cond_broadcast(&a->state_cond);
  pthread_mutex_unlock(&a->mu);
}

static void ag_on_suback(void *ctx, MQTTAsync_successData5 *d) {
  int codes[2] = {0, 0};
  size_t n = nb_paho_suback_codes(d, 2, codes, 2);
  ag_subscribed(ctx, codes, (int)n);
}

static void ag_on_subfail(void *ctx, MQTTAsync_failureData5 *d) {
  /* Without a reason code the connection dropped before the SUBACK: the
   * next connect subscribes again. */
  if (d != NULL && (int)d->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
    int code = (int)d->reasonCode;
    ag_subscribed(ctx, &code, 1);
  }
}

/* Subscribes to the reply and notice topics; the SUBACK ends in
 * ag_subscribed. Without mu. */
static void ag_subscribe(nimbus_agent *a, MQTTAsync client) {
  char *topics[2] = {a->reply_topic, a->notify_topic};
  int qos[2] = {1, 1};
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess5 = ag_on_suback;
  ro.onFailure5 = ag_on_subfail;
  ro.context = a;
  int rc = MQTTAsync_subscribeMany(client, 2, topics, qos, &ro);
  if (rc != MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&a->mu);
    snprintf(a->errstr, sizeof a->errstr, "cannot subscribe: %s",
             MQTTAsync_strerror(rc));
    ag_sub_failed_locked(a, NIMBUS_EMQTT);
    pthread_mutex_unlock(&a->mu);
  }
}

/* Every connect, the first and each automatic reconnect: subscribe, even
 * though a persistent session keeps the subscriptions (a new session, or
 * one the broker lost, would not). */
static void ag_on_connected(void *ctx, char *cause) {
  (void)cause;
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  MQTTAsync client = a->client;
  bool live =
      a->conn_state == AG_CONN_CONNECTING || a->conn_state == AG_CONN_UP;
  pthread_mutex_unlock(&a->mu);
  if (live && client != NULL)
    ag_subscribe(a, client);
}

static void ag_on_connection_lost(void *ctx, char *cause) {
  (void)cause;
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  a->conn_gen++;
  a->resub_due = 0; /* the reconnect subscribes anyway */
  atomic_store(&a->up, false);
  pthread_mutex_unlock(&a->mu);
  /* Paho reconnects by itself: read that CONNACK at once too. */
  nb_paho_connecting();
}

static int ag_on_message_arrived(void *ctx, char *topic, int topic_len,
                                 MQTTAsync_message *m) {
  nimbus_agent *a = ctx;
  size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
  ag_agent_on_message(a, topic, tl, m->payload,
                      m->payloadlen > 0 ? (size_t)m->payloadlen : 0);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

/* ---- Connecting -------------------------------------------------------- */

int nimbus_agent_connect(nimbus_agent *a, int timeout_ms) {
  int rc = 0;
  MQTTAsync client = NULL;
  MQTTProperties props = MQTTProperties_initializer;

  if (a == NULL)
    return NIMBUS_EINVAL;
  pthread_mutex_lock(&a->mu);
  if (a->closing)
    rc = NIMBUS_ECLOSED;
  else if (a->conn_state == AG_CONN_CONNECTING)
    rc = NIMBUS_EBUSY;
  else if (a->conn_state == AG_CONN_UP)
    rc = -1; /* already done */
  else {
    a->conn_state = AG_CONN_CONNECTING;
    a->errstr[0] = '\0';
  }
  pthread_mutex_unlock(&a->mu);
  if (rc != 0)
    return rc < 0 ? 0 : rc;

  nb_paho_init();
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
  /* Our table holds every task until its reply and sends it again on
   * connect: Paho must not buffer offline. It counts publishes waiting
   * for the broker's receive maximum as buffered too, hence the room. */
  co.sendWhileDisconnected = 0;
  co.maxBufferedMessages = 4 * AG_MAX_INFLIGHT;
  int prc = MQTTAsync_createWithOptions(&client, a->uri, a->client_id,
                                        MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (prc != MQTTASYNC_SUCCESS) {
    client = NULL;
    rc = NIMBUS_EMQTT;
    pthread_mutex_lock(&a->mu);
    snprintf(a->errstr, sizeof a->errstr, "cannot use broker URI %s: %s",
             a->uri, MQTTAsync_strerror(prc));
    pthread_mutex_unlock(&a->mu);
    goto fail;
  }
  pthread_mutex_lock(&a->mu);
  a->client = client;
  pthread_mutex_unlock(&a->mu);
  MQTTAsync_setCallbacks(client, a, ag_on_connection_lost,
                         ag_on_message_arrived, NULL);
  MQTTAsync_setConnected(client, a, ag_on_connected);

  MQTTProperty expiry;
  expiry.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
  expiry.value.integer4 = (unsigned int)a->session_expiry_s;
  if (MQTTProperties_add(&props, &expiry) != 0) {
    rc = NIMBUS_ENOMEM;
    goto fail;
  }
  MQTTAsync_connectOptions c = MQTTAsync_connectOptions_initializer5;
  c.keepAliveInterval = a->keepalive_s;
  c.cleanstart = a->clean_start ? 1 : 0;
  c.username = a->terminal;
  c.password = a->password;
  c.connectTimeout =
      timeout_ms > 0 && timeout_ms < 30000 ? (timeout_ms + 999) / 1000 : 30;
  c.automaticReconnect = 1;
  c.minRetryInterval = 1;
  c.maxRetryInterval = 30;
  c.connectProperties = &props;
  c.onSuccess5 = ag_on_connect_ok;
  c.onFailure5 = ag_on_connect_fail;
  c.context = a;
  nb_paho_connecting();
  prc = MQTTAsync_connect(client, &c);
  MQTTProperties_free(&props);
  if (prc != MQTTASYNC_SUCCESS) {
    rc = NIMBUS_EMQTT;
    pthread_mutex_lock(&a->mu);
    snprintf(a->errstr, sizeof a->errstr, "cannot connect to %s: %s", a->uri,
             MQTTAsync_strerror(prc));
    pthread_mutex_unlock(&a->mu);
    goto fail;
  }

  pthread_mutex_lock(&a->mu);
  if (timeout_ms < 0) {
    while (a->conn_state == AG_CONN_CONNECTING)
      pthread_cond_wait(&a->state_cond, &a->mu);
  } else {
    struct timespec ts;
    ag_timespec_at(&ts, nb_mono_ms() + timeout_ms);
    while (a->conn_state == AG_CONN_CONNECTING &&
           pthread_cond_timedwait(&a->state_cond, &a->mu, &ts) == 0)
      ;
  }
  if (a->conn_state == AG_CONN_UP) {
    pthread_mutex_unlock(&a->mu);
    return 0;
  }
  if (a->conn_state == AG_CONN_FAILED) {
    rc = a->connect_rc;
  } else {
    rc = NIMBUS_ETIMEDOUT;
    snprintf(a->errstr, sizeof a->errstr, "no session with %s within %d ms",
             a->uri, timeout_ms);
    /* Callbacks still to come from this client must change nothing. */
    a->conn_state = AG_CONN_FAILED;
  }
  pthread_mutex_unlock(&a->mu);

fail:
  MQTTProperties_free(&props);
  /* up never became true, so no send uses `client`: destroy it. */
  ag_client_close(a, client, false);
  pthread_mutex_lock(&a->mu);
  a->client = NULL;
  a->conn_state = AG_CONN_NONE;
  pthread_mutex_unlock(&a->mu);
  return rc;
}

/* ---- The agent's thread ------------------------------------------------ */

/* Picks the tasks to send now: all outstanding ones after a connect, else
 * those whose clock ran out (their interval doubles, up to the cap). Sets
 * the next scan's deadline. Each picked task gets a reference for the
 * send. Returns how many are in a->sendv. Needs mu. */
static size_t ag_collect_locked(nimbus_agent *a, int64_t now, bool all) {
  bool up = atomic_load(&a->up);
  size_t n = 0;
  int64_t earliest = INT64_MAX;
  if (up && a->sendcap < (size_t)a->outstanding) {
    size_t cap = (size_t)a->outstanding;
    nimbus_task **v = realloc(a->sendv, cap * sizeof *v);
    if (v != NULL) {
      a->sendv = v;
      a->sendcap = cap;
    }
  }
  for (nimbus_task *t = a->out_head; t != NULL; t = t->onext) {
    if (all || t->next_send <= now) {
      if (!all && t->next_send <= now) {
        t->interval_ms = t->interval_ms > a->resend_max_ms / 2
                             ? a->resend_max_ms
                             : t->interval_ms * 2;
      }
      /* Re-sent now (or, offline, by the next connect): restart the clock
       * with the interval now in force. */
      t->next_send = now + t->interval_ms;
      /* A connect's re-send leaves a publish Paho still holds to Paho: it
       * sends an unacknowledged one again itself when the broker kept the
       * session (and the broker may acknowledge that copy before the
       * subscriptions that start this re-send are granted), and drops it
       * (ag_on_pub_fail makes the task due) when not. */
      bool paho_has = t->held > 0 || t->acked_gen == a->conn_gen;
      if (up && n < a->sendcap && !(all && paho_has)) {
        t->refs++;
        t->held++;
        a->sendv[n++] = t;
      }
    }
    if (t->next_send < earliest)
      earliest = t->next_send;
  }
  a->loop_deadline =
      earliest == INT64_MAX ? INT64_MAX : earliest + a->coalesce_ms;
  if (a->resub_due != 0 && a->resub_due < a->loop_deadline)
    a->loop_deadline = a->resub_due;
  return n;
}

/* Delivers one event with mu held on entry and exit (released around the
 * application's callback). */
static void ag_deliver_locked(nimbus_agent *a, ag_event *ev) {
  if (ev->kind == AG_EV_NOTICE) {
    nimbus_notice_cb cb = a->notice_cb;
    void *ctx = a->notice_ctx;
    nimbus_offer_cb ocb = a->offer_cb;
    void *octx = a->offer_ctx;
    pthread_mutex_unlock(&a->mu);
    bool offered = ocb != NULL && strcmp(ev->notice_kind, "agent.offer") == 0 &&
                   ag_offer_deliver(ocb, octx, ev->notice, ev->notice_len);
    if (cb != NULL && !offered)
      cb(ctx, ev->notice_kind, ev->notice, ev->notice_len);
    free(ev->notice);
    free(ev);
    pthread_mutex_lock(&a->mu);
    return;
  }
  nimbus_task *t = ev->task;
  if (!t->released) {
    nimbus_reply_cb cb = ev->kind == AG_EV_FINAL ? t->on_final : t->on_progress;
    a->cb_task = t;
    pthread_mutex_unlock(&a->mu);
    cb(t->ctx, t, ev->reply);
    pthread_mutex_lock(&a->mu);
    a->cb_task = NULL;
    pthread_cond_broadcast(&a->cb_cond);
  }
  if (ev->kind == AG_EV_PROGRESS) {
    free(ev->reply);
    free(ev);
  }
  ag_task_unref_locked(a, t); /* the event's reference; may free t */
}

static void *ag_loop(void *arg) {
  nimbus_agent *a = arg;
  pthread_mutex_lock(&a->mu);
  while (!a->closing) {
    int64_t now = nb_mono_ms();
    size_t n = 0;
    if (a->resub_due != 0 && now >= a->resub_due) {
      a->resub_due = 0;
      MQTTAsync client = a->client;
      pthread_mutex_unlock(&a->mu);
      ag_subscribe(a, client);
      pthread_mutex_lock(&a->mu);
      continue;
    }
    /* Re-sends before callbacks, so that a stream of replies cannot
     * starve the clock. */
    if (a->resend_all) {
      a->resend_all = false;
      n = ag_collect_locked(a, now, true);
    } else if (now >= a->loop_deadline) {
      n = ag_collect_locked(a, now, false);
    } else if (a->ev_head != NULL) {
      ag_event *ev = a->ev_head;
      a->ev_head = ev->next;
      if (a->ev_head == NULL)
        a->ev_tail = NULL;
      ag_deliver_locked(a, ev);
      continue;
    }
    if (n > 0) {
      MQTTAsync client = a->client;
      for (size_t i = 0; i < n; i++) {
        nimbus_task *t = a->sendv[i];
        /* Given up since it was collected: not sent any more. */
        if (!t->in_table) {
          t->held--;
          ag_task_unref_locked(a, t);
          continue;
        }
        pthread_mutex_unlock(&a->mu);
        ag_task_send(a, client, t);
        pthread_mutex_lock(&a->mu);
      }
      continue;
    }
    if (a->ev_head != NULL || now >= a->loop_deadline)
      continue;
    if (a->loop_deadline == INT64_MAX) {
      pthread_cond_wait(&a->loop_cond, &a->mu);
    } else {
      struct timespec ts;
      ag_timespec_at(&ts, a->loop_deadline);
      pthread_cond_timedwait(&a->loop_cond, &a->mu, &ts);
    }
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}
