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
#include "nb_semver.h"
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
static int ag_session_new(nimbus_agent *a);

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
  if ((rc = ag_session_new(a)) != 0)
    goto fail;

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
  /* The DISCONNECT keeps the broker's session of slot 0, the
   * installation's own; an extra slot's session ends with it (Session
   * Expiry Interval 0), since slot 0's session gets the same replies and
   * notices. */
  nb_session_disconnect(a->sess, 200, a->slot > 0 ? 0 : -1);
  nb_session_free(a->sess);
  a->sess = NULL;
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
  /* A platform and a version as agent.get would take them, so that what
   * the app shows and answers is well-formed. */
  ok = ok && nb_valid_terminal(s[1], strlen(s[1])) &&
       nb_semver_valid(s[2], strlen(s[2]));
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

/* Every group granted, on the first connect and after each reconnect:
 * every outstanding task goes again (the agent's thread). A second grant
 * on one connection re-sends nothing. */
static void ag_on_up(void *ctx) {
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  a->client = nb_session_client(a->sess);
  if (!atomic_load(&a->up))
    a->resend_all = true;
  atomic_store(&a->up, true);
  pthread_cond_signal(&a->loop_cond);
  pthread_mutex_unlock(&a->mu);
}

static void ag_on_lost(void *ctx, const char *cause) {
  (void)cause;
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  a->conn_gen++;
  atomic_store(&a->up, false);
  pthread_mutex_unlock(&a->mu);
}

/* A subscription refused on a reconnect: the session tries again; no task
 * goes until it is granted, and nimbus_agent_errstr says why. */
static void ag_on_refused(void *ctx, const char *why) {
  nimbus_agent *a = ctx;
  pthread_mutex_lock(&a->mu);
  nb_strlcpy(a->errstr, why, sizeof a->errstr);
  pthread_mutex_unlock(&a->mu);
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

/* The session's options: a persistent session (unless clean_start) with
 * its expiry, one group of the reply and notice topics at QoS 1. */
static int ag_session_new(nimbus_agent *a) {
  const char *topics[2] = {a->reply_topic, a->notify_topic};
  nb_sub_group g = {.filters = topics, .n = 2, .qos = 1};
  nb_session_opts o = {
      .uri = a->uri,
      .client_id = a->client_id,
      .username = a->terminal,
      .password = a->password,
      .keepalive_s = a->keepalive_s,
      .clean_start = a->clean_start,
      .session_expiry_s = a->session_expiry_s,
      .retry_max_s = 30,
      /* Our table holds every task until its reply and sends it again on
       * connect: Paho must not buffer offline. It counts publishes
       * waiting for the broker's receive maximum as buffered too, hence
       * the room. */
      .send_while_disconnected = false,
      .max_buffered = 4 * AG_MAX_INFLIGHT,
      .groups = &g,
      .ngroups = 1,
      .ctx = a,
      .on_message = ag_on_message_arrived,
      .on_up = ag_on_up,
      .on_lost = ag_on_lost,
      .on_refused = ag_on_refused,
  };
  return nb_session_new(&o, &a->sess);
}

/* ---- Connecting -------------------------------------------------------- */

int nimbus_agent_connect(nimbus_agent *a, int timeout_ms) {
  if (a == NULL)
    return NIMBUS_EINVAL;
  pthread_mutex_lock(&a->mu);
  bool closing = a->closing;
  if (!closing)
    a->errstr[0] = '\0';
  pthread_mutex_unlock(&a->mu);
  if (closing)
    return NIMBUS_ECLOSED;
  char why[AG_ERRSTR];
  int rc = nb_session_connect(a->sess, timeout_ms, why, sizeof why);
  if (rc != 0 && rc != NIMBUS_EBUSY) {
    pthread_mutex_lock(&a->mu);
    nb_strlcpy(a->errstr, why, sizeof a->errstr);
    pthread_mutex_unlock(&a->mu);
  }
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
