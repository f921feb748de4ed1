/* nb-raw-load: the load generator half of the raw MQTT request/reply
 * baseline (see nb_raw_echo.c).
 *
 * Keeps --inflight QoS 1 requests of --size bytes (default 64; 262144 is a
 * blob segment, for the bulk baseline of scripts/bench backup, with the
 * echo's --reply-size 64) outstanding on the request
 * topic; each carries its slot, a sequence number and its send time. When
 * its echo comes back on the reply topic (this client's own subscription)
 * the round trip is recorded and the slot is sent again at once, from the
 * arrival callback, which is also how nb-ping-load refills through the
 * agent. After --warmup round trips it measures for --seconds (or --count
 * round trips) and prints one line:
 *   inflight=N count=C seconds=S rate=R p50_ms=X p99_ms=Y errors=E
 *
 * --pool 1 (diagnostic, off by default) handles each reply on a thread
 * of its own behind a job queue instead of in Paho's callback, as
 * libnimbus-agent does (its callbacks run on the agent's thread), to
 * measure what that hop costs.
 *
 * TCP_NODELAY: linked with Paho's static archive and -Wl,--wrap=connect
 * (CMake target nimbus_paho + nimbus_common's __wrap_connect), as the
 * Nimbus binaries are. No Nimbus protocol code is linked. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "bench_mqtt.h"
#include "bench_queue.h"
#include "bench_util.h"
#include "nb_util.h"

enum { PAYLOAD = 64, MAGIC = 0x4e425257 /* "NBRW" */ };

/* The request payload; the rest up to PAYLOAD bytes is filler. Sent in
 * host byte order: only this process reads it back. */
typedef struct req {
  uint32_t magic;
  uint32_t slot;
  uint64_t seq;
  int64_t sent_ns;
  uint64_t run; /* this run's own: echoes of an earlier run on the same
                 * topics (still in flight when it stopped) are skipped */
} req;

typedef struct slot {
  uint64_t seq; /* sequence of the request outstanding in this slot */
  int pending;  /* 1 while its echo has not come back */
} slot;

typedef struct load {
  MQTTAsync client;
  const bench_opts *o;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  slot *slots;
  uint64_t next_seq;
  uint64_t run;  /* see req.run */
  long stale;    /* echoes of an earlier run, skipped */
  long replies;  /* every accepted echo, warm-up included */
  int measuring; /* warm-up done */
  int done;      /* measurement finished: stop refilling */
  int failed;    /* connection lost or a send failed */
  int64_t t0, t_end, t_last;
  int64_t cpu0, cpu1; /* this process's CPU time at t0 and t_last */
  long errors;        /* sends refused by Paho, unexpected messages */
  bench_lat lat;
  bench_queue *pool; /* NULL: handle replies in Paho's callback */
} load;

/* Gives slot `i` a new request. Called with l->mu held, so arrivals see
 * one consistent slot table. */
static void prepare_slot(load *l, uint32_t i, req *r) {
  r->magic = MAGIC;
  r->run = l->run;
  r->slot = i;
  r->seq = l->next_seq++;
  l->slots[i].seq = r->seq;
  l->slots[i].pending = 1;
}

/* Publishes a prepared request. Called WITHOUT l->mu: MQTTAsync_send
 * takes Paho's client mutex, which Paho holds while it runs on_message,
 * and on_message takes l->mu. */
static int send_req(load *l, req *r) {
  unsigned char small[PAYLOAD];
  size_t n = (size_t)l->o->size;
  /* Paho copies the payload: a big one lives for this call only. */
  unsigned char *buf = n <= sizeof small ? small : malloc(n);
  if (buf == NULL) {
    fprintf(stderr, "nb-raw-load: out of memory\n");
    return -1;
  }
  memset(buf, 'x', n);
  r->sent_ns = bench_now_ns();
  memcpy(buf, r, sizeof *r);
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  int rc = MQTTAsync_send(l->client, l->o->req_topic, (int)n, buf, 1, 0, &ro);
  if (buf != small)
    free(buf);
  if (rc != MQTTASYNC_SUCCESS) {
    pthread_mutex_lock(&l->mu);
    l->errors++;
    l->failed = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    fprintf(stderr, "nb-raw-load: send: %s\n", MQTTAsync_strerror(rc));
    return -1;
  }
  return 0;
}

/* Times one echo and sends its slot again. */
static void on_reply(void *ctx, void *payload, size_t len) {
  int64_t now = bench_now_ns();
  load *l = ctx;
  req r;
  /* The echo may send back only the start (its --reply-size). */
  int ok = len >= sizeof r && len <= (size_t)l->o->size;
  if (ok) {
    memcpy(&r, payload, sizeof r);
    ok = r.magic == MAGIC;
  }
  int stale = ok && r.run != l->run;
  ok = ok && (stale || r.slot < (uint32_t)l->o->inflight);

  int again = 0;
  pthread_mutex_lock(&l->mu);
  if (!ok) {
    l->errors++;
  } else if (stale) {
    l->stale++;
  } else if (l->slots[r.slot].pending && l->slots[r.slot].seq == r.seq) {
    /* A duplicate (a QoS 1 re-delivery) fails the seq test and is
     * ignored. */
    l->slots[r.slot].pending = 0;
    l->replies++;
    if (l->measuring && !l->done) {
      if (bench_lat_add(&l->lat, now - r.sent_ns) != 0)
        l->errors++;
      l->t_last = now;
      if ((l->o->count > 0 && (long)l->lat.n >= l->o->count) ||
          (l->o->count == 0 && now >= l->t_end)) {
        l->done = 1;
        l->cpu1 = bench_cpu_ns();
        pthread_cond_signal(&l->cv);
      }
    } else if (!l->measuring && l->replies >= l->o->warmup) {
      l->measuring = 1;
      l->t0 = now;
      l->t_last = now;
      l->t_end = now + (int64_t)(l->o->seconds * 1e9);
      l->cpu0 = bench_cpu_ns();
    }
    if (!l->done && !l->failed) {
      prepare_slot(l, r.slot, &r);
      again = 1;
    }
  }
  pthread_mutex_unlock(&l->mu);
  if (again)
    (void)send_req(l, &r);
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  (void)topic_len;
  load *l = ctx;
  size_t len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
  if (l->pool == NULL) {
    on_reply(l, m->payload, len);
  } else if (bench_queue_push(l->pool, m->payload, len) != 0) {
    pthread_mutex_lock(&l->mu);
    l->errors++;
    pthread_mutex_unlock(&l->mu);
  }
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_lost(void *ctx, char *cause) {
  load *l = ctx;
  fprintf(stderr, "nb-raw-load: connection lost: %s\n",
          cause != NULL ? cause : "(no cause)");
  pthread_mutex_lock(&l->mu);
  l->failed = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

int main(int argc, char **argv) {
  /* The same malloc tuning as the Nimbus binaries, so that the baseline
   * is not slowed by page faults Nimbus avoids. */
  nb_malloc_for_segments();
  bench_opts o;
  bench_parse(&o, argc, argv, "nb-raw-load",
              "inflight count seconds warmup req-topic reply-topic pool size",
              "Raw MQTT QoS 1 request/reply load against nb-raw-echo.");

  static load l;
  l.o = &o;
  pthread_mutex_init(&l.mu, NULL);
  pthread_cond_init(&l.cv, NULL);
  l.slots = calloc((size_t)o.inflight, sizeof *l.slots);
  if (l.slots == NULL) {
    fprintf(stderr, "nb-raw-load: out of memory\n");
    return 1;
  }
  l.measuring = o.warmup == 0;
  l.run = ((uint64_t)getpid() << 40) ^ (uint64_t)bench_now_ns();
  if (o.pool > 0 && (l.pool = bench_queue_new(o.pool, on_reply, &l)) == NULL) {
    fprintf(stderr, "nb-raw-load: cannot start the pool\n");
    return 1;
  }

  char idbuf[64];
  const char *cid = o.client_id;
  if (cid == NULL) {
    snprintf(idbuf, sizeof idbuf, "nb-raw-load-%ld", (long)getpid());
    cid = idbuf;
  }
  if (bench_mqtt_connect(&l.client, &o, cid, &l, on_lost, on_message) != 0)
    return 1;
  if (bench_mqtt_subscribe(l.client, o.reply_topic) != 0) {
    bench_mqtt_close(&l.client);
    return 1;
  }

  pthread_mutex_lock(&l.mu);
  if (l.measuring) {
    l.t0 = l.t_last = bench_now_ns();
    l.t_end = l.t0 + (int64_t)(o.seconds * 1e9);
    l.cpu0 = bench_cpu_ns();
  }
  pthread_mutex_unlock(&l.mu);
  for (int i = 0; i < o.inflight; i++) {
    req r;
    pthread_mutex_lock(&l.mu);
    prepare_slot(&l, (uint32_t)i, &r);
    pthread_mutex_unlock(&l.mu);
    if (send_req(&l, &r) != 0)
      break;
  }

  pthread_mutex_lock(&l.mu);
  /* Wait for the end; a run that makes no progress for 10 s is broken
   * (lost messages, a dead responder), not slow. */
  long seen = -1;
  while (!l.done && !l.failed) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    seen = l.replies;
    if (pthread_cond_timedwait(&l.cv, &l.mu, &dl) != 0 && l.replies == seen &&
        !l.done) {
      fprintf(stderr, "nb-raw-load: no reply for 10 s after %ld\n", l.replies);
      l.failed = 1;
    }
  }
  int failed = l.failed;
  double secs = (double)(l.t_last - l.t0) / 1e9;
  pthread_mutex_unlock(&l.mu);

  bench_mqtt_close(&l.client);
  bench_queue_free(l.pool);
  if (failed) {
    fprintf(stderr, "nb-raw-load: run failed after %ld replies\n", l.replies);
    return 1;
  }
  if (l.stale > 0)
    fprintf(stderr, "nb-raw-load: skipped %ld echoes of an earlier run\n",
            l.stale);
  bench_report(&l.lat, o.inflight, secs, l.errors, l.cpu1 - l.cpu0);
  bench_lat_free(&l.lat);
  free(l.slots);
  return 0;
}
