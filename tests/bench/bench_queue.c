/* Job queue for the raw pair's diagnostic --pool option: see
 * bench_queue.h. Built the way the Nimbus worker's queue is (one mutex,
 * one condition variable signalled per job, FIFO list), so that the hop
 * costs what the worker's costs. */
#include "bench_queue.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct qjob {
  struct qjob *next;
  size_t len;
  unsigned char data[];
} qjob;

struct bench_queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  qjob *head, *tail;
  bool stop;
  bench_job_fn fn;
  void *ctx;
  int nthreads;
  pthread_t *threads;
};

static void *serve(void *arg) {
  bench_queue *q = arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->head == NULL && !q->stop)
      pthread_cond_wait(&q->cv, &q->mu);
    if (q->stop)
      break;
    qjob *j = q->head;
    q->head = j->next;
    if (q->head == NULL)
      q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    q->fn(q->ctx, j->data, j->len);
    free(j);
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

bench_queue *bench_queue_new(int threads, bench_job_fn fn, void *ctx) {
  bench_queue *q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->threads = calloc((size_t)threads, sizeof *q->threads);
  if (q->threads == NULL) {
    free(q);
    return NULL;
  }
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->fn = fn;
  q->ctx = ctx;
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&q->threads[i], NULL, serve, q) != 0)
      break;
    q->nthreads++;
  }
  if (q->nthreads == 0) {
    bench_queue_free(q);
    return NULL;
  }
  return q;
}

int bench_queue_push(bench_queue *q, const void *data, size_t len) {
  qjob *j = malloc(sizeof *j + len);
  if (j == NULL)
    return -1;
  j->next = NULL;
  j->len = len;
  memcpy(j->data, data, len);
  pthread_mutex_lock(&q->mu);
  if (q->tail != NULL)
    q->tail->next = j;
  else
    q->head = j;
  q->tail = j;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

void bench_queue_free(bench_queue *q) {
  if (q == NULL)
    return;
  pthread_mutex_lock(&q->mu);
  q->stop = true;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  for (int i = 0; i < q->nthreads; i++)
    pthread_join(q->threads[i], NULL);
  while (q->head != NULL) {
    qjob *j = q->head;
    q->head = j->next;
    free(j);
  }
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  free(q->threads);
  free(q);
}
