/* Blocking connect and subscribe over Paho MQTTAsync: see bench_mqtt.h.
 *
 * MQTTAsync reports completion on its own threads, so each call waits on a
 * condition variable that its success or failure callback signals. */
#include "bench_mqtt.h"

#include "nb_paho.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done; /* 0 pending, 1 success, -1 failure */
  int rc;   /* reason code or Paho error */
} waiter;

static void waiter_init(waiter *w) {
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->done = 0;
  w->rc = 0;
}

static void waiter_set(waiter *w, int done, int rc) {
  pthread_mutex_lock(&w->mu);
  w->done = done;
  w->rc = rc;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Returns 1, -1, or 0 on timeout. */
static int waiter_wait(waiter *w, int timeout_s) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_s;
  pthread_mutex_lock(&w->mu);
  while (w->done == 0)
    if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0)
      break;
  int d = w->done;
  pthread_mutex_unlock(&w->mu);
  return d;
}

/* Frees `w` unless it timed out: then a late callback may still write to
 * it, so it is left allocated (the programs exit soon after a failure). */
static void waiter_destroy(waiter *w, int d) {
  if (d == 0)
    return;
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

static waiter *waiter_new(void) {
  waiter *w = malloc(sizeof *w);
  if (w == NULL) {
    fprintf(stderr, "out of memory\n");
    return NULL;
  }
  waiter_init(w);
  return w;
}

static void on_ok(void *ctx, MQTTAsync_successData5 *r) {
  /* A SUBACK with a reason code >= 0x80 arrives as a success in Paho. */
  int rc = r != NULL ? (int)r->reasonCode : 0;
  waiter_set(ctx, rc >= 0x80 ? -1 : 1, rc);
}

static void on_fail(void *ctx, MQTTAsync_failureData5 *r) {
  waiter_set(ctx, -1, r != NULL ? (int)r->reasonCode : -1);
}

int bench_mqtt_connect(MQTTAsync *out, const bench_opts *o,
                       const char *client_id, void *ctx,
                       MQTTAsync_connectionLost *lost,
                       MQTTAsync_messageArrived *arrived) {
  char uri[300];
  int n = snprintf(uri, sizeof uri, "tcp://%s:%d", o->host, o->port);
  if (n < 0 || (size_t)n >= sizeof uri) {
    fprintf(stderr, "host name too long\n");
    return -1;
  }
  nb_paho_init();
  MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
  MQTTAsync c = NULL;
  int rc = MQTTAsync_createWithOptions(&c, uri, client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    fprintf(stderr, "MQTTAsync_create: %s\n", MQTTAsync_strerror(rc));
    return -1;
  }
  rc = MQTTAsync_setCallbacks(c, ctx, lost, arrived, NULL);
  if (rc != MQTTASYNC_SUCCESS) {
    fprintf(stderr, "MQTTAsync_setCallbacks: %s\n", MQTTAsync_strerror(rc));
    MQTTAsync_destroy(&c);
    return -1;
  }
  waiter *w = waiter_new();
  if (w == NULL) {
    MQTTAsync_destroy(&c);
    return -1;
  }
  MQTTAsync_connectOptions cn = MQTTAsync_connectOptions_initializer5;
  cn.cleanstart = 1;
  cn.keepAliveInterval = 30;
  cn.username = o->user;
  cn.password = o->password;
  cn.onSuccess5 = on_ok;
  cn.onFailure5 = on_fail;
  cn.context = w;
  nb_paho_connecting();
  rc = MQTTAsync_connect(c, &cn);
  int d = rc == MQTTASYNC_SUCCESS ? waiter_wait(w, 10) : -1;
  if (d != 1) {
    fprintf(stderr, "connect to %s as %s failed: %s (%d)\n", uri, client_id,
            d == 0 ? "timed out" : "refused or unreachable",
            rc != MQTTASYNC_SUCCESS ? rc : w->rc);
    MQTTAsync_destroy(&c);
    waiter_destroy(w, d);
    return -1;
  }
  waiter_destroy(w, d);
  /* TCP_NODELAY in the public-API build, as Nimbus's own sessions have it. */
  (void)nb_paho_connected(uri);
  *out = c;
  return 0;
}

int bench_mqtt_subscribe(MQTTAsync c, const char *topic) {
  waiter *w = waiter_new();
  if (w == NULL)
    return -1;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess5 = on_ok;
  ro.onFailure5 = on_fail;
  ro.context = w;
  int rc = MQTTAsync_subscribe(c, topic, 1, &ro);
  int d = rc == MQTTASYNC_SUCCESS ? waiter_wait(w, 10) : -1;
  if (d != 1)
    fprintf(stderr, "subscribe %s failed: %s (%d)\n", topic,
            d == 0 ? "timed out" : "refused", rc != 0 ? rc : w->rc);
  waiter_destroy(w, d);
  return d == 1 ? 0 : -1;
}

void bench_mqtt_close(MQTTAsync *c) {
  if (*c == NULL)
    return;
  MQTTAsync_disconnectOptions dc = MQTTAsync_disconnectOptions_initializer5;
  dc.timeout = 1000;
  (void)MQTTAsync_disconnect(*c, &dc);
  /* The disconnect is asynchronous; destroy waits for Paho's threads. */
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  MQTTAsync_destroy(c);
}
