/* nb-itest: a terminal for the integration tests that needs more than one
 * task at a time, built on libnimbus-agent exactly as an app would use it.
 *
 *   nb-itest pings N               N pings, 64 in flight; prints one line
 *                                  "<worker> <count>" per worker answering
 *   nb-itest sleeps N MS KEY       N diag.sleep tasks at once (keys KEY-i);
 *                                  prints "submitted <id> <key>" as each
 *                                  leaves, then "final <id> <key> <code>
 *                                  <runs>" for each final reply (and
 *                                  " retry_after=<ms>" when the reply has
 *                                  one); exit 0 only if every reply is ok
 *   nb-itest pinglat N             N pings one after the other (the next
 *                                  sent when the last is answered); prints
 *                                  "p50 <ms> p99 <ms> max <ms>" of their
 *                                  round trips; exit 0 only if all are ok
 *
 * Connection from NIMBUS_MQTT_HOST, NIMBUS_MQTT_PORT, NIMBUS_TERMINAL,
 * NIMBUS_PASSWORD, NIMBUS_STATE_DIR; re-send interval from
 * NB_ITEST_RESEND_MS (default 30000); tasks outstanding at most from
 * NB_ITEST_INFLIGHT (default the agent's, 64); overall bound
 * NB_ITEST_TIMEOUT_MS (default 60000). */
#include "nimbus/agent.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0')
    return def;
  char *end = NULL;
  long n = strtol(v, &end, 10);
  return *end == '\0' ? n : def;
}

static nimbus_agent *connect_agent(void) {
  char uri[256];
  snprintf(uri, sizeof uri, "tcp://%s:%s",
           getenv("NIMBUS_MQTT_HOST") ? getenv("NIMBUS_MQTT_HOST")
                                      : "127.0.0.1",
           getenv("NIMBUS_MQTT_PORT") ? getenv("NIMBUS_MQTT_PORT") : "1883");
  nimbus_agent_opts o;
  nimbus_agent_opts_init(&o);
  o.uri = uri;
  o.terminal = getenv("NIMBUS_TERMINAL");
  o.password = getenv("NIMBUS_PASSWORD");
  o.state_dir = getenv("NIMBUS_STATE_DIR");
  o.resend_ms = (int)env_long("NB_ITEST_RESEND_MS", 30000);
  o.resend_max_ms = o.resend_ms;
  o.max_inflight = (int)env_long("NB_ITEST_INFLIGHT", 0);
  nimbus_agent *a = NULL;
  int rc = nimbus_agent_new(&o, &a);
  if (rc == 0)
    rc = nimbus_agent_connect(a, 10000);
  if (rc != 0) {
    fprintf(stderr, "nb-itest: cannot connect: %s (%s)\n", nimbus_strerror(rc),
            a != NULL ? nimbus_agent_errstr(a) : "");
    nimbus_agent_free(a);
    return NULL;
  }
  return a;
}

/* Looks up a key of the reply's result map. */
static const msgpack_object *result_get(const msgpack_object *map,
                                        const char *key) {
  if (map->type != MSGPACK_OBJECT_MAP)
    return NULL;
  size_t kl = strlen(key);
  for (uint32_t i = 0; i < map->via.map.size; i++) {
    const msgpack_object_kv *kv = &map->via.map.ptr[i];
    if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
        memcmp(kv->key.via.str.ptr, key, kl) == 0)
      return &kv->val;
  }
  return NULL;
}

typedef struct tally {
  char worker[80];
  int count;
} tally;

static int cmd_pings(nimbus_agent *a, int n) {
  nimbus_task **tasks = calloc((size_t)n, sizeof *tasks);
  tally t[16];
  int nt = 0, failed = 0;
  long timeout = env_long("NB_ITEST_TIMEOUT_MS", 60000);
  if (tasks == NULL)
    return 1;
  /* Submit with a bounded window: block while 64 are outstanding. */
  int done = 0;
  for (int i = 0; i < n || done < n;) {
    if (i < n && i - done < 64) {
      int rc = nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL,
                             (int)timeout, &tasks[i]);
      if (rc != 0) {
        fprintf(stderr, "nb-itest: submit: %s\n", nimbus_strerror(rc));
        return 1;
      }
      i++;
      continue;
    }
    nimbus_reply *r = NULL;
    int rc = nimbus_task_wait(tasks[done], (int)timeout, &r);
    if (rc != 0 || r->code != 0) {
      failed++;
    } else {
      msgpack_zone z;
      msgpack_zone_init(&z, 2048);
      msgpack_object obj;
      if (msgpack_unpack((const char *)r->result, r->result_len, NULL, &z,
                         &obj) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *w = result_get(&obj, "worker");
        if (w != NULL && w->type == MSGPACK_OBJECT_STR) {
          char name[80];
          snprintf(name, sizeof name, "%.*s", (int)w->via.str.size,
                   w->via.str.ptr);
          int k = 0;
          while (k < nt && strcmp(t[k].worker, name) != 0)
            k++;
          if (k == nt && nt < 16) {
            snprintf(t[nt].worker, sizeof t[nt].worker, "%s", name);
            t[nt++].count = 0;
          }
          if (k < nt)
            t[k].count++;
        }
      }
      msgpack_zone_destroy(&z);
    }
    nimbus_reply_free(r);
    nimbus_task_release(tasks[done]);
    done++;
  }
  for (int k = 0; k < nt; k++)
    printf("%s %d\n", t[k].worker, t[k].count);
  free(tasks);
  if (failed > 0)
    fprintf(stderr, "nb-itest: %d pings failed\n", failed);
  return failed > 0;
}

static int cmd_sleeps(nimbus_agent *a, int n, long ms, const char *key) {
  nimbus_task **tasks = calloc((size_t)n, sizeof *tasks);
  char(*keys)[64] = calloc((size_t)n, 64);
  long timeout = env_long("NB_ITEST_TIMEOUT_MS", 60000);
  int bad = 0;
  if (tasks == NULL || keys == NULL)
    return 1;
  for (int i = 0; i < n; i++) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    snprintf(keys[i], 64, "%s-%d", key, i);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "ms", 2);
    msgpack_pack_int64(&pk, ms);
    msgpack_pack_str_with_body(&pk, "key", 3);
    msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
    int rc = nimbus_submit(a, "diag.sleep", (const uint8_t *)sb.data, sb.size,
                           NULL, 0, false, NULL, (int)timeout, &tasks[i]);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
      fprintf(stderr, "nb-itest: submit: %s\n", nimbus_strerror(rc));
      return 1;
    }
    printf("submitted %s %s\n", nimbus_task_id(tasks[i]), keys[i]);
    fflush(stdout);
  }
  for (int i = 0; i < n; i++) {
    nimbus_reply *r = NULL;
    int rc = nimbus_task_wait(tasks[i], (int)timeout, &r);
    if (rc != 0) {
      printf("final %s %s none %s\n", nimbus_task_id(tasks[i]), keys[i],
             nimbus_strerror(rc));
      bad++;
      nimbus_task_release(tasks[i]);
      continue;
    }
    long long runs = -1, retry_after = -1;
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object obj;
    if (r->result != NULL &&
        msgpack_unpack((const char *)r->result, r->result_len, NULL, &z,
                       &obj) == MSGPACK_UNPACK_SUCCESS) {
      const msgpack_object *v = result_get(&obj, "runs");
      if (v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        runs = (long long)v->via.u64;
      v = result_get(&obj, "retry_after");
      if (v != NULL && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        retry_after = (long long)v->via.u64;
    }
    msgpack_zone_destroy(&z);
    if (retry_after >= 0)
      printf("final %s %s %d %lld retry_after=%lld\n", nimbus_task_id(tasks[i]),
             keys[i], r->code, runs, retry_after);
    else
      printf("final %s %s %d %lld\n", nimbus_task_id(tasks[i]), keys[i],
             r->code, runs);
    fflush(stdout);
    bad += r->code != 0;
    nimbus_reply_free(r);
    nimbus_task_release(tasks[i]);
  }
  free(tasks);
  free(keys);
  return bad > 0;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int cmd_pinglat(nimbus_agent *a, int n) {
  long timeout = env_long("NB_ITEST_TIMEOUT_MS", 60000);
  double *ms = calloc(n > 0 ? (size_t)n : 1, sizeof *ms);
  int failed = 0;
  if (ms == NULL || n <= 0) {
    free(ms);
    return 1;
  }
  for (int i = 0; i < n; i++) {
    nimbus_task *t = NULL;
    nimbus_reply *r = NULL;
    double t0 = now_ms();
    int rc = nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL,
                           (int)timeout, &t);
    if (rc == 0)
      rc = nimbus_task_wait(t, (int)timeout, &r);
    ms[i] = now_ms() - t0;
    failed += rc != 0 || r->code != 0;
    nimbus_reply_free(r);
    nimbus_task_release(t);
  }
  qsort(ms, (size_t)n, sizeof *ms, cmp_double);
  printf("p50 %.1f p99 %.1f max %.1f\n", ms[(n - 1) / 2],
         ms[(size_t)((n - 1) * 0.99 + 0.5)], ms[n - 1]);
  free(ms);
  if (failed > 0)
    fprintf(stderr, "nb-itest: %d pings failed\n", failed);
  return failed > 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: nb-itest pings N | sleeps N MS KEY | pinglat N\n");
    return 2;
  }
  nimbus_agent *a = connect_agent();
  if (a == NULL)
    return 3;
  int rc = 2;
  if (strcmp(argv[1], "pings") == 0)
    rc = cmd_pings(a, (int)strtol(argv[2], NULL, 10));
  else if (strcmp(argv[1], "sleeps") == 0 && argc == 5)
    rc = cmd_sleeps(a, (int)strtol(argv[2], NULL, 10),
                    strtol(argv[3], NULL, 10), argv[4]);
  else if (strcmp(argv[1], "pinglat") == 0)
    rc = cmd_pinglat(a, (int)strtol(argv[2], NULL, 10));
  else
    fprintf(stderr, "usage: nb-itest pings N | sleeps N MS KEY | pinglat N\n");
  nimbus_agent_free(a);
  return rc;
}
