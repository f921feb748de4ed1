/* nb-raw-echo: the responder half of the raw MQTT request/reply baseline.
 *
 * Subscribes at QoS 1 to the request topic and publishes every payload,
 * unchanged, at QoS 1 to the fixed reply topic. It is what a Nimbus worker
 * does on the wire for a `ping`, minus everything Nimbus: no decoding, no
 * Redis, no dispatch. scripts/bench runs it next to nb-raw-load through the
 * same broker so that Nimbus's figures have a floor to be compared with.
 *
 * TCP_NODELAY: linked with Paho's static archive and -Wl,--wrap=connect
 * (CMake target nimbus_paho + nimbus_common's __wrap_connect), exactly as
 * the Nimbus binaries are, so both sides of the baseline run without
 * Nagle's algorithm (FINDINGS.md).
 *
 * --pool N (diagnostic, off by default) publishes from one of N threads
 * behind a job queue instead of from Paho's callback, as nimbus-worker
 * does, to measure what that hop costs.
 *
 * Prints "nb-raw-echo ready" on stderr once subscribed, runs until SIGINT
 * or SIGTERM, then prints how many messages it echoed. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "bench_mqtt.h"
#include "bench_queue.h"
#include "bench_util.h"
#include "nb_util.h"

typedef struct echo {
  MQTTAsync client;
  const char *reply_topic;
  size_t reply_size; /* 0: echo whole requests */
  atomic_long echoed;
  atomic_long failed;
  atomic_int lost;
  bench_queue *pool; /* NULL: publish from Paho's callback */
} echo;

static void echo_back(void *ctx, void *payload, size_t len) {
  echo *e = ctx;
  /* No response callbacks: the PUBACK needs no action here, and asking
   * for one would add work the Nimbus worker does not do either. */
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  if (e->reply_size > 0 && len > e->reply_size)
    len = e->reply_size;
  int rc =
      MQTTAsync_send(e->client, e->reply_topic, (int)len, payload, 1, 0, &ro);
  if (rc == MQTTASYNC_SUCCESS)
    atomic_fetch_add(&e->echoed, 1);
  else
    atomic_fetch_add(&e->failed, 1);
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  (void)topic_len;
  echo *e = ctx;
  size_t len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
  if (e->pool == NULL)
    echo_back(e, m->payload, len);
  else if (bench_queue_push(e->pool, m->payload, len) != 0)
    atomic_fetch_add(&e->failed, 1);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_lost(void *ctx, char *cause) {
  echo *e = ctx;
  atomic_store(&e->lost, 1);
  fprintf(stderr, "nb-raw-echo: connection lost: %s\n",
          cause != NULL ? cause : "(no cause)");
  /* Wake the main thread, which waits in sigwait. */
  kill(getpid(), SIGTERM);
}

int main(int argc, char **argv) {
  /* The same malloc tuning as the Nimbus binaries, so that the baseline
   * is not slowed by page faults Nimbus avoids. */
  nb_malloc_for_segments();
  bench_opts o;
  bench_parse(&o, argc, argv, "nb-raw-echo",
              "req-topic reply-topic pool reply-size",
              "Echoes each QoS 1 request back to the reply topic, QoS 1 "
              "(only its first --reply-size bytes when that is set).");

  /* Block the stop signals before Paho starts its threads, so that they
   * inherit the mask and only sigwait below ever takes them. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  static echo e;
  e.reply_topic = o.reply_topic;
  e.reply_size = (size_t)o.reply_size;
  atomic_init(&e.echoed, 0);
  atomic_init(&e.failed, 0);
  atomic_init(&e.lost, 0);

  if (o.pool > 0 && (e.pool = bench_queue_new(o.pool, echo_back, &e)) == NULL) {
    fprintf(stderr, "nb-raw-echo: cannot start the pool\n");
    return 1;
  }

  char idbuf[64];
  const char *cid = o.client_id;
  if (cid == NULL) {
    snprintf(idbuf, sizeof idbuf, "nb-raw-echo-%ld", (long)getpid());
    cid = idbuf;
  }
  if (bench_mqtt_connect(&e.client, &o, cid, &e, on_lost, on_message) != 0)
    return 1;
  if (bench_mqtt_subscribe(e.client, o.req_topic) != 0) {
    bench_mqtt_close(&e.client);
    return 1;
  }
  fprintf(stderr, "nb-raw-echo ready\n");

  int sig = 0;
  sigwait(&stop, &sig);
  int lost = atomic_load(&e.lost);
  bench_mqtt_close(&e.client);
  bench_queue_free(e.pool);
  fprintf(stderr, "nb-raw-echo: echoed=%ld failed=%ld\n",
          atomic_load(&e.echoed), atomic_load(&e.failed));
  return lost ? 1 : 0;
}
