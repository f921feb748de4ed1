/* The worker's own parts, shared by the files it is split into (none of
 * this is for handlers: they see wk.h and wk_family.h):
 *   registry.c  the families, the types this worker serves, the merged
 *               config table, ping's limits, the host table
 *   session.c   the MQTT session: connect, subscriptions, arrivals,
 *               publishing, the per-terminal in-flight bound (429)
 *   pool.c      pools: their threads and their queues, fair across
 *               terminals
 *   dispatch.c  one task's way from decoding to its one reply
 *   renew.c     live claims, the renewal thread, the types of the cloud
 *   monitor.c   the worker's state on <prefix>/monitor/worker/<id>
 *   tmap.c      the map of terminal ids the pools and the bound use
 *   worker.c    creating, starting, draining and freeing the worker */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include "wk.h"

#include <MQTTAsync.h>
#include <pthread.h>

/* ---- tmap.c: terminal id -> entry ------------------------------------- */

/* An entry of a terminal map; embed it as the first member of the
 * caller's struct. Terminal ids are at most 64 characters. */
typedef struct wk_tnode {
  struct wk_tnode *hnext;
  uint64_t hash;
  char key[65];
} wk_tnode;

/* A chained hash map keyed by terminal id. Not thread-safe: its owner's
 * lock guards it. Nodes are the caller's (the map never frees them). */
typedef struct wk_tmap {
  wk_tnode **b;
  size_t nb, n;
} wk_tmap;

uint64_t wk_tmap_hash(const char *key);
/* The node of `key` (hash from wk_tmap_hash), or NULL. */
wk_tnode *wk_tmap_find(const wk_tmap *m, const char *key, uint64_t hash);
/* Inserts `n` (taken: it stays the caller's memory; its key and hash
 * set), growing the table; 0 or NIMBUS_ENOMEM (then `n` is not in). */
int wk_tmap_insert(wk_tmap *m, wk_tnode *n);
void wk_tmap_remove(wk_tmap *m, wk_tnode *n);
/* Frees the table (not the nodes). */
void wk_tmap_fini(wk_tmap *m);

/* ---- Jobs --------------------------------------------------------------- */

/* What a message is to this worker. */
typedef enum job_kind {
  JOB_TASK,     /* <prefix>/task/<type>/<terminal> through a typed group */
  JOB_WILDCARD, /* the catch-all group's copy of a task (unserved=wildcard) */
  JOB_UNSERVED  /* <prefix>/unserved/<type>/<terminal>: the broker re-routed
                   it because no worker was subscribed to its type */
} job_kind;

typedef struct wk_served wk_served;

/* One allocation: the struct, the type and the terminal (each
 * NUL-terminated). */
typedef struct job {
  const char *type;
  const char *terminal;   /* from the topic, never from the payload */
  uint64_t thash;         /* wk_tmap_hash(terminal) */
  const uint8_t *payload; /* Paho's, in msg: a segment is never copied */
  size_t len;
  MQTTAsync_message *msg; /* owned: freed with the job */
  job_kind kind;
  const wk_served *served; /* its handler here, or NULL */
  bool counted;            /* in its terminal's in-flight count */
  struct job *next;
} job;

void wk_job_free(job *j);

/* ---- registry.c --------------------------------------------------------- */

/* A handler this worker serves, with where it runs. */
struct wk_served {
  const wk_handler *h;
  const wk_family *family;
  size_t family_index; /* into the worker's families */
  struct wk_pool *pool;
};

/* Every family the worker was built with, in registry order. */
const wk_family *const *wk_registry(size_t *n);

/* Ping's limits as the worker and its families add them. */
struct wk_limits {
  struct {
    const char *key;
    int64_t v;
  } e[48];
  size_t n;
};

/* Packs ping's limits map of the worker and every registered family into
 * w->limits_packed; 0, or an error with err filled. */
int wk_registry_limits(wk_worker *w, char *err, size_t errcap);
/* Picks the families and handlers cfg->types names (all built-in ones the
 * config enables when empty), makes their pools and calls the families'
 * init; 0, or NIMBUS_ECONFIG / NIMBUS_ENOMEM with err filled. */
int wk_registry_choose(wk_worker *w, char *err, size_t errcap);
/* Calls the families' fini. */
void wk_registry_fini(wk_worker *w);

/* ---- pool.c -------------------------------------------------------------- */

typedef struct tqueue tqueue;

/* A pool: its threads, and its jobs queued per terminal; the threads take
 * the terminals in turn, one job each, so one terminal's backlog delays
 * another terminal's task by at most one task per busy thread. */
typedef struct wk_pool {
  wk_worker *w;
  const char *name; /* the spec's */
  size_t want;      /* threads to start */
  pthread_mutex_t mu;
  pthread_cond_t cv;             /* a job arrived, or stop */
  pthread_cond_t idle;           /* nothing queued and no job running */
  wk_tmap terms;                 /* terminal -> its tqueue, while it has jobs */
  tqueue *ring_head, *ring_tail; /* terminals with jobs, in turn */
  size_t qlen, busy;
  size_t cap;       /* qlen at which the pool counts as full */
  atomic_bool full; /* written under mu, counted in wk_worker.pools_full */
  bool stop;
  pthread_t *threads;
  size_t nthreads;
  uint64_t done; /* jobs finished */
} wk_pool;

void wk_pool_init(wk_pool *p, wk_worker *w, const char *name, size_t want,
                  size_t cap);
/* Starts the pool's threads, each with its own Redis connection and each
 * serving family's thread state. 0, or an error with err filled. */
int wk_pool_start(wk_pool *p, char *err, size_t errcap);
/* Queues `j` (taken); never waits (see pool.c). Only the arrival callback
 * calls it, after wk_pool_full said false. NIMBUS_ENOMEM leaves `j` the
 * caller's. */
int wk_pool_push(wk_pool *p, job *j);
/* True while `p` holds `queue` tasks not yet started: the arrival callback
 * then leaves a task for it with Paho (returns 0 from messageArrived, so
 * Paho offers it again later). Any thread; no lock. */
bool wk_pool_full(wk_pool *p);
/* Waits until nothing is queued or running, then ends the threads. */
void wk_pool_drain(wk_pool *p);
void wk_pool_fini(wk_pool *p);

/* ---- dispatch.c --------------------------------------------------------- */

/* A pool thread's own things (and the receive thread's, for inline
 * handlers: no Redis there). */
typedef struct thread_state {
  wk_worker *w;
  wk_pool *pool;
  st_redis *redis;
  msgpack_sbuffer out;
  void **fstate; /* per family index: its thread state, or NULL */
} thread_state;

/* The result {retry_after: 1000} of a 503 or a 429, packed once for the
 * dispatcher and the in-flight bound (dispatch.c). */
extern const uint8_t wk_retry_1s[16];

/* Runs one job to its reply (or to its silence, where that is right). */
void wk_process_job(thread_state *ts, job *j);
/* Encodes and publishes an error reply; `result` (packed map) may be
 * NULL. Counts it as a final reply. */
void wk_send_error(wk_worker *w, msgpack_sbuffer *out, const char *terminal,
                   const char *id, int code, const char *error,
                   const char *help, const uint8_t *result, size_t result_len);

/* ---- session.c ----------------------------------------------------------- */

/* Publishes `buf` to <prefix>/reply/<terminal>. */
void wk_publish(wk_worker *w, const char *terminal, const void *buf, size_t len,
                int qos);
/* Publishes `buf` (a notice) to <prefix>/notify/<terminal> at QoS 1.
 * Returns 0, or NIMBUS_EMQTT when Paho refused it (logged). */
int wk_publish_notice(wk_worker *w, const char *terminal, const void *buf,
                      size_t len);
/* Makes the MQTT session (no connection yet) from the filters and the
 * monitor topic; before any of the worker's threads start. 0 or an error
 * with a sentence in err. */
int wk_session_make(wk_worker *w, char *err, size_t errcap);

/* ---- dispatch.c: the notice outbox ----------------------------------------
 */

/* Publishes the notices in the outbox (st_outbox.h) that are due (their
 * worker did not publish them within outbox_grace_ms of the commit: it
 * died, or its client refused), in batches, each taken under a lease of
 * outbox_grace_ms, and removes those the client took. On the
 * housekeeping thread, with its connection `r`. Returns 0 or
 * NIMBUS_EREDIS (logged). */
int wk_outbox_drain(wk_worker *w, st_redis *r);

/* Connects, subscribes and waits (bounded) for every SUBACK. */
int wk_session_start(wk_worker *w, char *err, size_t errcap);
/* Leaves the shared groups (bounded wait). */
void wk_session_unsubscribe(wk_worker *w);
/* Disconnects, letting replies in flight go out (bounded wait). */
void wk_session_disconnect(wk_worker *w);
/* Builds the subscription filters of the served types. */
int wk_session_filters(wk_worker *w);

/* The worker's Paho client (NULL before the session is made), for
 * publishing from any thread. */
MQTTAsync wk_client(const wk_worker *w);
/* A job left the worker: its terminal's in-flight count goes down. */
void wk_inflight_done(wk_worker *w, job *j);

/* ---- renew.c ------------------------------------------------------------- */

void wk_live_add(wk_worker *w, wk_live *l);
void wk_live_del(wk_worker *w, wk_live *l);
int wk_renew_start(wk_worker *w);
void wk_renew_stop(wk_worker *w);
/* True when this worker serves `type` (`len` bytes) or another live worker
 * announced it lately. */
bool wk_cloud_serves(wk_worker *w, const char *type, size_t len);
/* This worker's handler of `type`, or NULL. */
const wk_served *wk_find_served(const wk_worker *w, const char *type,
                                size_t len);

/* ---- monitor.c ----------------------------------------------------------- */

/* The worker's state as JSON (malloc'd, cJSON_free), or NULL. */
char *wk_monitor_json(wk_worker *w, const char *state);
void wk_monitor_publish(wk_worker *w, const char *state);

/* ---- The worker ---------------------------------------------------------- */

struct wk_worker {
  const wk_config *cfg;
  struct nb_session *sess; /* the MQTT session (nb_session.h) */

  /* The families this worker runs (enabled ones), and what it serves. */
  const wk_family **families;
  size_t nfamilies;
  wk_served *served;
  size_t nserved;
  wk_pool *pools;
  size_t npools;
  uint8_t limits_packed[1024]; /* ping's limits map, packed once */
  size_t limits_len;

  char **filters; /* subscriptions: the typed ones, then the unserved one */
  size_t nfilters;
  size_t prefix_len;

  pthread_mutex_t lmu; /* live claims */
  wk_live live;        /* list head */
  uint64_t live_seq;   /* under lmu: the next wk_live.seq */

  pthread_t renew_thread;
  bool renew_started;
  pthread_mutex_t rmu;
  pthread_cond_t rcv;
  bool renew_stop;

  pthread_mutex_t tmu; /* types the cloud serves */
  char **cloud_types;
  size_t ncloud;

  atomic_bool draining;

  /* Tasks each terminal has in this worker (queued or running). */
  pthread_mutex_t imu;
  wk_tmap inflight;
  atomic_uint_fast64_t refused; /* 429s for being over max_inflight */

  /* For the monitor topic. */
  atomic_uint_fast64_t tasks_ok, tasks_error;
  atomic_uint_fast64_t received; /* messages the broker delivered */
  /* Offers of a message left with Paho for want of room (pool.c). */
  atomic_uint_fast64_t deferred;
  char monitor_topic[256];
  char *will_payload;
  st_blobstore *blobs;     /* the blob store; shared, thread-safe */
  wk_janitor *janitor;     /* when there is a blob store */
  thread_state *inline_ts; /* Paho's receive thread's (no Redis) */

  /* Full pools: while any is, Paho does not read from the broker. */
  pthread_mutex_t pause_mu;
  int pools_full;
  uint64_t pauses;       /* since the last WK-READS-PAUSED line */
  int64_t pause_note_ms; /* when that line was written */
};

/* Counts one final reply for the monitor topic. */
void wk_count_final(wk_worker *w, int code);

#endif
