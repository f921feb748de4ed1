/* A mutex-and-condition-variable job queue served by N threads, for the
 * diagnostic --pool option of the raw pair: it adds to the raw path the
 * one thread hop that the Nimbus worker (Paho's thread -> a pool of 16)
 * and the agent (Paho's thread -> the agent's callback thread) each make,
 * so that the cost of that hop can be measured on its own. Off by
 * default: the baseline is plain Paho. */
#ifndef NB_BENCH_QUEUE_H
#define NB_BENCH_QUEUE_H

#include <stddef.h>

typedef struct bench_queue bench_queue;

/* Called on a pool thread for each job; `data` is valid during the call. */
typedef void (*bench_job_fn)(void *ctx, void *data, size_t len);

/* Starts `threads` threads running `fn`. Returns NULL on failure. */
bench_queue *bench_queue_new(int threads, bench_job_fn fn, void *ctx);

/* Queues a copy of `len` bytes at `data`. Returns 0 or -1 (no memory). */
int bench_queue_push(bench_queue *q, const void *data, size_t len);

/* Stops the threads (jobs still queued are dropped) and frees. */
void bench_queue_free(bench_queue *q);

#endif
