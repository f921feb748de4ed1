/* The worker's life: made from its config (the families and types it
 * serves, their pools, the blob store when a family needs it), started
 * (Redis first, then the pools, the renewal thread, the janitor, and last
 * the MQTT session, so that no task arrives before there is someone to
 * run it), drained (leave the shared groups, finish what arrived, stop the
 * threads, disconnect) and freed. The parts are in the files wk_worker.h
 * lists. */
#include "wk_worker.h"

#include "nb_session.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wk_worker_new(const wk_config *cfg, wk_worker **out, char *err,
                  size_t errcap) {
  wk_worker *w = calloc(1, sizeof *w);
  if (w == NULL)
    return NIMBUS_ENOMEM;
  w->cfg = cfg;
  w->prefix_len = strlen(cfg->prefix);
  w->inline_ts = calloc(1, sizeof *w->inline_ts);
  if (w->inline_ts == NULL) {
    free(w);
    return NIMBUS_ENOMEM;
  }
  w->inline_ts->w = w;
  msgpack_sbuffer_init(&w->inline_ts->out);
  w->live.next = w->live.prev = &w->live;
  pthread_mutex_init(&w->lmu, NULL);
  pthread_mutex_init(&w->rmu, NULL);
  pthread_cond_init(&w->rcv, NULL);
  pthread_mutex_init(&w->tmu, NULL);
  pthread_mutex_init(&w->imu, NULL);
  pthread_mutex_init(&w->pause_mu, NULL);
  atomic_init(&w->draining, false);
  atomic_init(&w->tasks_ok, 0);
  atomic_init(&w->tasks_error, 0);
  atomic_init(&w->received, 0);
  atomic_init(&w->deferred, 0);
  atomic_init(&w->refused, 0);
  int rc = wk_registry_choose(w, err, errcap);
  if (rc == 0)
    rc = wk_registry_limits(w, err, errcap);
  bool needs_blobs = false;
  for (size_t i = 0; rc == 0 && i < w->nfamilies; i++)
    needs_blobs |= (w->families[i]->needs & WK_NEEDS_BLOBS) != 0;
  if (rc == 0 && needs_blobs) {
    /* A worker that serves no blob type needs no data directory. */
    rc = st_blobstore_open(cfg->data_dir, &w->blobs, err, errcap);
    if (rc != 0)
      rc = NIMBUS_ECONFIG;
    else
      st_blobstore_set_direct(w->blobs, cfg->blob_direct);
  }
  if (rc == 0)
    rc = wk_session_filters(w);
  if (rc == 0) {
    int n = snprintf(w->monitor_topic, sizeof w->monitor_topic,
                     "%s/monitor/worker/%s", cfg->prefix, cfg->worker_id);
    if (n < 0 || (size_t)n >= sizeof w->monitor_topic)
      rc = NIMBUS_EINVAL;
  }
  /* Made before any thread starts: they all read w->sess. */
  if (rc == 0 && (rc = wk_session_make(w, err, errcap)) != 0)
    rc = NIMBUS_ECONFIG;
  if (rc != 0) {
    if (rc != NIMBUS_ECONFIG)
      snprintf(err, errcap, "cannot set the worker up: %s",
               nimbus_strerror(rc));
    wk_worker_free(w);
    return rc;
  }
  *out = w;
  return 0;
}

int wk_worker_start(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  int rc;

  /* Redis first: a worker that cannot keep state must not take tasks. */
  st_redis *probe = NULL;
  if ((rc = st_redis_connect(cfg->redis_host, (int)cfg->redis_port,
                             cfg->redis_password, 2000, &probe, err, errcap)) !=
      0)
    return rc;
  st_redis_free(probe);

  for (size_t i = 0; i < w->npools; i++)
    if ((rc = wk_pool_start(&w->pools[i], err, errcap)) != 0)
      return rc;
  if (wk_renew_start(w) != 0) {
    snprintf(err, errcap, "cannot start the renewal thread");
    return NIMBUS_ESYS;
  }
  if (w->blobs != NULL && wk_janitor_start(cfg, w->blobs, &w->janitor) != 0) {
    snprintf(err, errcap, "cannot start the janitor thread");
    return NIMBUS_ESYS;
  }
  if ((rc = wk_session_start(w, err, errcap)) != 0)
    return rc;
  wk_monitor_publish(w, "up");
  return 0;
}

void wk_worker_drain(wk_worker *w) {
  atomic_store(&w->draining, true);
  wk_monitor_publish(w, "stopping");
  wk_session_unsubscribe(w);
  for (size_t i = 0; i < w->npools; i++)
    wk_pool_drain(&w->pools[i]);
  wk_renew_stop(w);
  wk_janitor_stop(w->janitor);
  w->janitor = NULL;
  wk_monitor_publish(w, "stopped");
  wk_session_disconnect(w);
}

void wk_worker_free(wk_worker *w) {
  if (w == NULL)
    return;
  bool running = w->renew_started;
  for (size_t i = 0; i < w->npools; i++)
    running |= w->pools[i].nthreads > 0;
  if (running)
    wk_worker_drain(w);
  nb_session_free(w->sess);
  w->sess = NULL;
  wk_registry_fini(w);
  msgpack_sbuffer_destroy(&w->inline_ts->out);
  free(w->inline_ts);
  for (size_t i = 0; i < w->nfilters; i++)
    free(w->filters[i]);
  free(w->filters);
  cJSON_free(w->will_payload);
  for (size_t i = 0; i < w->npools; i++)
    wk_pool_fini(&w->pools[i]);
  free(w->pools);
  free(w->served);
  free(w->families);
  /* Nothing is in flight once the pools are drained. */
  wk_tmap_fini(&w->inflight);
  for (size_t i = 0; i < w->ncloud; i++)
    free(w->cloud_types[i]);
  free(w->cloud_types);
  pthread_mutex_destroy(&w->lmu);
  pthread_mutex_destroy(&w->rmu);
  pthread_cond_destroy(&w->rcv);
  pthread_mutex_destroy(&w->tmu);
  pthread_mutex_destroy(&w->imu);
  pthread_mutex_destroy(&w->pause_mu);
  st_blobstore_free(w->blobs);
  free(w);
}
