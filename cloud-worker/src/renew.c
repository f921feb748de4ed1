/* Live claims and what keeps them: the renewal thread extends the lease of
 * every claim this worker holds, once every renew_ms and in one round
 * trip, and tells a running handler (through its wk_live flags) when
 * task.cancel asked it to stop or its claim lapsed. The same thread
 * announces the types this worker serves and reads those of every live
 * worker (nb:types), which ping lists and the unserved group consults,
 * publishes the monitor status every 5 s, and runs the built-in families'
 * ticks (wk_family.tick: the agent family's due offers) once a round. */
#include "wk_worker.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *wk_worker_id(const wk_worker *w) { return w->cfg->worker_id; }

static bool type_is(const char *name, const char *type, size_t len) {
  return strlen(name) == len && memcmp(name, type, len) == 0;
}

const wk_served *wk_find_served(const wk_worker *w, const char *type,
                                size_t len) {
  for (size_t i = 0; i < w->nserved; i++)
    if (type_is(w->served[i].h->type, type, len))
      return &w->served[i];
  return NULL;
}

bool wk_cloud_serves(wk_worker *w, const char *type, size_t len) {
  if (wk_find_served(w, type, len) != NULL)
    return true;
  bool found = false;
  pthread_mutex_lock(&w->tmu);
  for (size_t i = 0; i < w->ncloud && !found; i++)
    found = type_is(w->cloud_types[i], type, len);
  pthread_mutex_unlock(&w->tmu);
  return found;
}

void wk_pack_cloud_types(wk_worker *w, msgpack_packer *pk) {
  /* Our own types plus any other live worker's, without duplicates. */
  pthread_mutex_lock(&w->tmu);
  size_t n = w->nserved;
  for (size_t i = 0; i < w->ncloud; i++)
    n +=
        wk_find_served(w, w->cloud_types[i], strlen(w->cloud_types[i])) == NULL;
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < w->nserved; i++)
    wk_pack_str(pk, w->served[i].h->type);
  for (size_t i = 0; i < w->ncloud; i++)
    if (wk_find_served(w, w->cloud_types[i], strlen(w->cloud_types[i])) == NULL)
      wk_pack_str(pk, w->cloud_types[i]);
  pthread_mutex_unlock(&w->tmu);
}

/* ---- Live claims --------------------------------------------------------- */

void wk_live_add(wk_worker *w, wk_live *l) {
  pthread_mutex_lock(&w->lmu);
  l->seq = ++w->live_seq;
  l->next = w->live.next;
  l->prev = &w->live;
  w->live.next->prev = l;
  w->live.next = l;
  pthread_mutex_unlock(&w->lmu);
}

void wk_live_del(wk_worker *w, wk_live *l) {
  pthread_mutex_lock(&w->lmu);
  l->prev->next = l->next;
  l->next->prev = l->prev;
  pthread_mutex_unlock(&w->lmu);
}

/* ---- Renewal and type registry ------------------------------------------- */

static void refresh_types(wk_worker *w, st_redis *r) {
  const char **own = calloc(w->nserved + 1, sizeof *own);
  if (own == NULL)
    return;
  for (size_t i = 0; i < w->nserved; i++)
    own[i] = w->served[i].h->type;
  if (st_types_announce(r, own, w->nserved) != 0)
    NB_WARN("WK-REDIS", "cannot announce types: %s", st_redis_errstr(r));
  free(own);
  char **types = NULL;
  size_t n = 0;
  /* A type counts as served while some worker announced it recently:
   * three renewal rounds of silence plus a margin. */
  int64_t max_age = w->cfg->renew_ms * 10 + 60000;
  if (st_types_list(r, max_age, &types, &n) != 0)
    return;
  pthread_mutex_lock(&w->tmu);
  char **old = w->cloud_types;
  size_t nold = w->ncloud;
  w->cloud_types = types;
  w->ncloud = n;
  pthread_mutex_unlock(&w->tmu);
  for (size_t i = 0; i < nold; i++)
    free(old[i]);
  free(old);
}

/* One claim as the renewal round saw it: copies, so the round trip runs
 * without the lock (a handler that ends meanwhile takes its wk_live off
 * the list and away; its entry here is then simply not applied). */
typedef struct renew_ref {
  char terminal[65];
  char id[SC_ID_MAX + 1];
  uint64_t seq;
} renew_ref;

static void renew_live(wk_worker *w, st_redis *r) {
  pthread_mutex_lock(&w->lmu);
  size_t n = 0;
  for (wk_live *l = w->live.next; l != &w->live; l = l->next)
    n++;
  if (n == 0) {
    pthread_mutex_unlock(&w->lmu);
    return;
  }
  renew_ref *copies = calloc(n, sizeof *copies);
  st_claim_ref *refs = calloc(n, sizeof *refs);
  if (copies == NULL || refs == NULL) {
    pthread_mutex_unlock(&w->lmu);
    free(copies);
    free(refs);
    return;
  }
  /* The list is newest first, so the copies are in falling seq order. */
  size_t i = 0;
  for (wk_live *l = w->live.next; l != &w->live; l = l->next, i++) {
    nb_strlcpy(copies[i].terminal, l->terminal, sizeof copies[i].terminal);
    nb_strlcpy(copies[i].id, l->id, sizeof copies[i].id);
    copies[i].seq = l->seq;
    refs[i].terminal = copies[i].terminal;
    refs[i].id = copies[i].id;
  }
  pthread_mutex_unlock(&w->lmu);

  if (st_claims_renew(r, w->cfg->worker_id, w->cfg->lease_ms, refs, n) != 0) {
    NB_WARN("WK-REDIS", "lease renewal failed: %s", st_redis_errstr(r));
  } else {
    /* Both the list and the copies fall in seq: one merge walk applies
     * each verdict to the claim it was for, if it is still running. */
    pthread_mutex_lock(&w->lmu);
    i = 0;
    for (wk_live *l = w->live.next; l != &w->live && i < n; l = l->next) {
      while (i < n && copies[i].seq > l->seq)
        i++;
      if (i < n && copies[i].seq == l->seq) {
        if (refs[i].lost)
          atomic_store(&l->lost, true);
        if (refs[i].cancel)
          atomic_store(&l->cancel, true);
        i++;
      }
    }
    pthread_mutex_unlock(&w->lmu);
  }
  free(copies);
  free(refs);
}

/* ---- Ticks --------------------------------------------------------------- */

int wk_tick_notice(wk_tick *t, const char *terminal, const void *buf,
                   size_t len) {
  return wk_publish_notice(t->w, terminal, buf, len);
}

/* One round of every served family's tick, after the renewals (which a
 * slow tick would otherwise delay past a lease). */
static void run_ticks(wk_worker *w, st_redis *r) {
  wk_tick t = {.w = w, .cfg = w->cfg, .redis = r, .now_ms = nb_now_ms()};
  for (size_t i = 0; i < w->nfamilies; i++)
    if (w->families[i]->tick != NULL)
      w->families[i]->tick(&t);
}

static void *renew_main(void *arg) {
  wk_worker *w = arg;
  st_redis *r = NULL;
  char err[256];
  int64_t next_types = 0;
  pthread_mutex_lock(&w->rmu);
  while (!w->renew_stop) {
    pthread_mutex_unlock(&w->rmu);
    if (r == NULL &&
        st_redis_connect(w->cfg->redis_host, (int)w->cfg->redis_port,
                         w->cfg->redis_password, 2000, &r, err,
                         sizeof err) != 0)
      NB_WARN("WK-REDIS-DOWN", "%s", err);
    if (r != NULL) {
      renew_live(w, r);
      run_ticks(w, r);
      (void)wk_outbox_drain(w, r);
      if (nb_mono_ms() >= next_types) {
        wk_monitor_publish(w, atomic_load(&w->draining) ? "stopping" : "up");
        refresh_types(w, r);
        next_types = nb_mono_ms() + 5000;
      }
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (w->cfg->renew_ms % 1000) * 1000000;
    until.tv_sec += w->cfg->renew_ms / 1000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&w->rmu);
    if (!w->renew_stop)
      pthread_cond_timedwait(&w->rcv, &w->rmu, &until);
  }
  pthread_mutex_unlock(&w->rmu);
  st_redis_free(r);
  return NULL;
}

int wk_renew_start(wk_worker *w) {
  if (pthread_create(&w->renew_thread, NULL, renew_main, w) != 0)
    return NIMBUS_ESYS;
  w->renew_started = true;
  return 0;
}

void wk_renew_stop(wk_worker *w) {
  if (!w->renew_started)
    return;
  pthread_mutex_lock(&w->rmu);
  w->renew_stop = true;
  pthread_cond_broadcast(&w->rcv);
  pthread_mutex_unlock(&w->rmu);
  pthread_join(w->renew_thread, NULL);
  w->renew_started = false;
}
