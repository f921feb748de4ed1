/* The worker's state on <prefix>/monitor/worker/<id> (retained JSON), so a
 * monitor that subscribes later sees every worker's last word at once:
 * {"worker", "state" (up, stopping, stopped; "down" is the broker's will
 * for a worker that vanished), "ts", "types", "threads" {pool: threads},
 * "pools" {pool: {"threads", "queued", "running", "done"}}, "tasks" {"ok",
 * "error" (final replies), "received" (messages the broker delivered, the
 * catch-all group's copies included), "refused" (429s past max_inflight),
 * "deferred" (offers of a task left with Paho while its pool was full:
 * Paho offers it again, so one task can count more than once)},
 * "queued", "running" (over every pool), "storage_full" (on workers with
 * the blob store: writes are being refused for want of space)}. */
#include "wk_worker.h"

#include "nb_util.h"

#include <cjson/cJSON.h>
#include <string.h>

char *wk_monitor_json(wk_worker *w, const char *state) {
  cJSON *o = cJSON_CreateObject();
  if (o == NULL)
    return NULL;
  cJSON_AddStringToObject(o, "worker", w->cfg->worker_id);
  cJSON_AddStringToObject(o, "state", state);
  cJSON_AddNumberToObject(o, "ts", (double)nb_now_ms());
  if (strcmp(state, "down") != 0) {
    cJSON *types = cJSON_AddArrayToObject(o, "types");
    for (size_t i = 0; types != NULL && i < w->nserved; i++)
      cJSON_AddItemToArray(types, cJSON_CreateString(w->served[i].h->type));
    cJSON *th = cJSON_AddObjectToObject(o, "threads");
    cJSON *pools = cJSON_AddObjectToObject(o, "pools");
    cJSON *tasks = cJSON_AddObjectToObject(o, "tasks");
    size_t queued = 0, running = 0;
    for (size_t i = 0; i < w->npools; i++) {
      wk_pool *p = &w->pools[i];
      pthread_mutex_lock(&p->mu);
      size_t q = p->qlen, b = p->busy;
      uint64_t done = p->done;
      pthread_mutex_unlock(&p->mu);
      queued += q;
      running += b;
      if (th != NULL)
        cJSON_AddNumberToObject(th, p->name, (double)p->want);
      cJSON *po =
          pools != NULL ? cJSON_AddObjectToObject(pools, p->name) : NULL;
      if (po != NULL) {
        cJSON_AddNumberToObject(po, "threads", (double)p->want);
        cJSON_AddNumberToObject(po, "queued", (double)q);
        cJSON_AddNumberToObject(po, "running", (double)b);
        cJSON_AddNumberToObject(po, "done", (double)done);
      }
    }
    if (tasks != NULL) {
      cJSON_AddNumberToObject(tasks, "ok", (double)atomic_load(&w->tasks_ok));
      cJSON_AddNumberToObject(tasks, "error",
                              (double)atomic_load(&w->tasks_error));
      cJSON_AddNumberToObject(tasks, "received",
                              (double)atomic_load(&w->received));
      cJSON_AddNumberToObject(tasks, "refused",
                              (double)atomic_load(&w->refused));
      cJSON_AddNumberToObject(tasks, "deferred",
                              (double)atomic_load(&w->deferred));
    }
    cJSON_AddNumberToObject(o, "queued", (double)queued);
    cJSON_AddNumberToObject(o, "running", (double)running);
    if (w->blobs != NULL) /* the blob store refuses writes: disk full */
      cJSON_AddBoolToObject(o, "storage_full",
                            st_blobstore_full_since(w->blobs) != 0);
  }
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

void wk_monitor_publish(wk_worker *w, const char *state) {
  MQTTAsync client = wk_client(w);
  if (client == NULL || !MQTTAsync_isConnected(client))
    return;
  char *text = wk_monitor_json(w, state);
  if (text == NULL)
    return;
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.payload = text;
  m.payloadlen = (int)strlen(text);
  m.qos = 1;
  m.retained = 1;
  (void)MQTTAsync_sendMessage(client, w->monitor_topic, &m, NULL);
  cJSON_free(text);
}
