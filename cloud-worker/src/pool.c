/* Pools: a queue and the threads that serve it, one pool per name
 * ("quick", "transfer", and one per heavy family), so a busy pool never
 * delays another pool's tasks. The quick pool keeps about as many threads
 * as there are cores: more runnable threads than cores only take turns at
 * Paho's one mutex when they publish, which cost a fifth of the
 * throughput at 64 tasks in flight (scripts/bench hops).
 *
 * Within a pool the queue is fair across terminals: each terminal with
 * queued jobs has a queue of its own (FIFO: one terminal's tasks keep
 * their order), and the terminals wait in a ring; a thread takes the job
 * at the head of the first terminal's queue and sends that terminal to
 * the back of the ring. So a terminal that queued 100 slow tasks delays
 * another terminal's task by at most one task per busy thread, where a
 * single FIFO made it wait for the whole backlog (a small backup.commit
 * waited 59.9 s behind another terminal's heavy tasks). */
#include "wk_worker.h"

#include "nb_log.h"
#include "nb_paho.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A terminal's jobs in one pool, while it has any. */
struct tqueue {
  wk_tnode node; /* first: the pool's map holds it */
  job *head, *tail;
  tqueue *next; /* in the ring */
};

void wk_job_free(job *j) {
  if (j->msg != NULL)
    MQTTAsync_freeMessage(&j->msg);
  free(j);
}

/* Counts pool `p` (its mu held) as full or not. While a pool is full the
 * arrival callback leaves its tasks with Paho (it returns 0: Paho keeps
 * the message and offers it again later), and, in the patched build,
 * Paho reads nothing from the broker (nb_paho_pause_reads), so the
 * broker keeps the rest and TCP pushes back. A full pool is noted in the
 * log at most once a minute, with the number of times since the last
 * note. */
static void pool_set_full(wk_pool *p, bool full) {
  wk_worker *w = p->w;
  atomic_store(&p->full, full);
  pthread_mutex_lock(&w->pause_mu);
  w->pools_full += full ? 1 : -1;
  bool paused = nb_paho_pause_reads(w->pools_full > 0);
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
    NB_INFO("WK-POOL-FULL",
            "%s pool full (%zu tasks waiting, queue = %zu): %s until a "
            "thread takes one (%" PRIu64 " time(s) since the last note)",
            p->name, p->qlen, p->cap,
            paused ? "not reading from the broker"
                   : "its tasks wait in Paho's queue",
            pauses);
}

/* Takes the next job in turn (mu held, the pool not empty). */
static job *pool_take(wk_pool *p) {
  tqueue *q = p->ring_head;
  job *j = q->head;
  q->head = j->next;
  j->next = NULL;
  p->ring_head = q->next;
  if (p->ring_head == NULL)
    p->ring_tail = NULL;
  q->next = NULL;
  if (q->head == NULL) {
    q->tail = NULL;
    wk_tmap_remove(&p->terms, &q->node);
    free(q);
  } else {
    /* To the back of the ring: the other terminals go first. */
    if (p->ring_tail != NULL)
      p->ring_tail->next = q;
    else
      p->ring_head = q;
    p->ring_tail = q;
  }
  p->qlen--;
  return j;
}

static void thread_state_free(thread_state *ts) {
  wk_worker *w = ts->w;
  for (size_t i = 0; ts->fstate != NULL && i < w->nfamilies; i++)
    if (ts->fstate[i] != NULL && w->families[i]->thread_fini != NULL)
      w->families[i]->thread_fini(ts->fstate[i]);
  free(ts->fstate);
  st_redis_free(ts->redis);
  msgpack_sbuffer_destroy(&ts->out);
  free(ts);
}

static void *pool_main(void *arg) {
  thread_state *ts = arg;
  wk_pool *p = ts->pool;
  wk_worker *w = p->w;
  /* One lock round per job: the lock that records a job's end also takes
   * the next one. */
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->ring_head == NULL && !p->stop)
      pthread_cond_wait(&p->cv, &p->mu);
    if (p->ring_head == NULL)
      break;
    job *j = pool_take(p);
    p->busy++;
    if (atomic_load(&p->full) && p->qlen < p->cap)
      pool_set_full(p, false);
    pthread_mutex_unlock(&p->mu);

    wk_process_job(ts, j);
    wk_inflight_done(w, j);
    wk_job_free(j);

    pthread_mutex_lock(&p->mu);
    p->busy--;
    p->done++;
    if (p->busy == 0 && p->ring_head == NULL)
      pthread_cond_broadcast(&p->idle);
  }
  pthread_mutex_unlock(&p->mu);
  thread_state_free(ts);
  return NULL;
}

void wk_pool_init(wk_pool *p, wk_worker *w, const char *name, size_t want,
                  size_t cap) {
  memset(p, 0, sizeof *p);
  p->w = w;
  p->name = name;
  p->want = want;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  pthread_cond_init(&p->idle, NULL);
  p->cap = cap > 0 ? cap : 1;
}

/* Queues `j` (Paho's receive thread, in the arrival callback, which has
 * seen wk_pool_full false: only that thread queues, so there is room). A
 * pool that reaches its cap is full (pool_set_full); the callback never
 * waits for room. It used to wait here for a slot, holding Paho's global
 * mutex, which the pool threads' replies need: a worker whose pool
 * filled up hung for good (tests/integration/test_worker_backpressure.sh). */
int wk_pool_push(wk_pool *p, job *j) {
  pthread_mutex_lock(&p->mu);
  tqueue *q = (tqueue *)wk_tmap_find(&p->terms, j->terminal, j->thash);
  if (q == NULL) {
    q = calloc(1, sizeof *q);
    if (q == NULL) {
      pthread_mutex_unlock(&p->mu);
      return NIMBUS_ENOMEM;
    }
    q->node.hash = j->thash;
    nb_strlcpy(q->node.key, j->terminal, sizeof q->node.key);
    if (wk_tmap_insert(&p->terms, &q->node) != 0) {
      pthread_mutex_unlock(&p->mu);
      free(q);
      return NIMBUS_ENOMEM;
    }
    if (p->ring_tail != NULL)
      p->ring_tail->next = q;
    else
      p->ring_head = q;
    p->ring_tail = q;
  }
  j->next = NULL;
  if (q->tail != NULL)
    q->tail->next = j;
  else
    q->head = j;
  q->tail = j;
  p->qlen++;
  if (!atomic_load(&p->full) && p->qlen >= p->cap)
    pool_set_full(p, true);
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

bool wk_pool_full(wk_pool *p) { return atomic_load(&p->full); }

void wk_pool_drain(wk_pool *p) {
  pthread_mutex_lock(&p->mu);
  while (p->ring_head != NULL || p->busy > 0)
    pthread_cond_wait(&p->idle, &p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  p->nthreads = 0;
}

void wk_pool_fini(wk_pool *p) {
  while (p->ring_head != NULL) {
    job *j = pool_take(p);
    wk_job_free(j);
  }
  wk_tmap_fini(&p->terms);
  free(p->threads);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  pthread_cond_destroy(&p->idle);
}

/* True when some handler of family `fi` runs in pool `p`. */
static bool pool_serves_family(const wk_pool *p, size_t fi) {
  const wk_worker *w = p->w;
  for (size_t i = 0; i < w->nserved; i++)
    if (w->served[i].pool == p && w->served[i].family_index == fi)
      return true;
  return false;
}

int wk_pool_start(wk_pool *p, char *err, size_t errcap) {
  wk_worker *w = p->w;
  const wk_config *cfg = w->cfg;
  p->threads = calloc(p->want > 0 ? p->want : 1, sizeof *p->threads);
  if (p->threads == NULL)
    return NIMBUS_ENOMEM;
  for (size_t i = 0; i < p->want; i++) {
    thread_state *ts = calloc(1, sizeof *ts);
    if (ts == NULL)
      return NIMBUS_ENOMEM;
    ts->w = w;
    ts->pool = p;
    msgpack_sbuffer_init(&ts->out);
    ts->fstate =
        calloc(w->nfamilies > 0 ? w->nfamilies : 1, sizeof *ts->fstate);
    int rc = ts->fstate != NULL ? 0 : NIMBUS_ENOMEM;
    for (size_t f = 0; rc == 0 && f < w->nfamilies; f++) {
      if (w->families[f]->thread_init == NULL || !pool_serves_family(p, f))
        continue;
      rc = w->families[f]->thread_init(&ts->fstate[f]);
      if (rc != 0)
        snprintf(err, errcap,
                 "family %s: a %s pool thread could not be "
                 "set up: %s",
                 w->families[f]->name, p->name, nimbus_strerror(rc));
    }
    if (rc == 0)
      rc = st_redis_connect(cfg->redis_host, (int)cfg->redis_port,
                            cfg->redis_password, 2000, &ts->redis, err, errcap);
    if (rc == 0 && pthread_create(&p->threads[i], NULL, pool_main, ts) != 0) {
      snprintf(err, errcap, "cannot start the %s pool's threads", p->name);
      rc = NIMBUS_ESYS;
    }
    if (rc != 0) {
      thread_state_free(ts);
      return rc;
    }
    p->nthreads++;
  }
  return 0;
}
