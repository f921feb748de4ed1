/* Shared plumbing of the benchmark programs: see bench_util.h. */
#include "bench_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int in_list(const char *list, const char *name);

static void usage(FILE *f, const char *prog, const char *extra,
                  const char *summary) {
  fprintf(f, "usage: %s [options]\n%s\n\n", prog, summary);
  fprintf(f, "  --host H          broker host ($NIMBUS_MQTT_HOST, "
             "127.0.0.1)\n"
             "  --port P          broker port ($NIMBUS_MQTT_PORT, 1883)\n"
             "  --user U          MQTT username\n"
             "  --password P      MQTT password\n"
             "  --client-id ID    MQTT client id\n");
  if (strstr(extra, "inflight"))
    fprintf(f, "  --inflight N      requests kept in flight (1)\n");
  if (strstr(extra, "count"))
    fprintf(f, "  --count N         measure N round trips (0: by time)\n");
  if (strstr(extra, "seconds"))
    fprintf(f, "  --seconds S       measure for S seconds (5)\n");
  if (strstr(extra, "warmup"))
    fprintf(f, "  --warmup N        round trips before measuring (1000)\n");
  if (strstr(extra, "req-topic"))
    fprintf(f, "  --req-topic T     request topic (bench/raw/req)\n");
  if (strstr(extra, "reply-topic"))
    fprintf(f, "  --reply-topic T   reply topic (bench/raw/reply)\n");
  if (strstr(extra, "pool"))
    fprintf(f, "  --pool N          diagnostic: hand each message through a "
               "queue to N\n"
               "                    threads first, as Nimbus does (0: "
               "none)\n");
  if (strstr(extra, "state-dir"))
    fprintf(f, "  --state-dir D     agent state directory (a temporary "
               "one)\n");
  if (in_list(extra, "op"))
    fprintf(f, "  --op OP           one round trip: ping, ping2 (two pings, "
               "one after the\n"
               "                    other), share (share.get of --token, "
               "then blob.get of\n"
               "                    the first 1 KiB of --blob); ping\n"
               "  --token T         the share (--op share)\n"
               "  --blob B          its blob (--op share)\n");
}

/* strtol with the whole string checked: atoi would take "12x" as 12. */
static int parse_long(const char *s, long min, long max, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double min, double max, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
    return -1;
  *out = v;
  return 0;
}

/* True when `name` is one of the space-separated words of `list`. */
static int in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  const char *p = list;
  while ((p = strstr(p, name)) != NULL) {
    int starts = p == list || p[-1] == ' ';
    int ends = p[n] == '\0' || p[n] == ' ';
    if (starts && ends)
      return 1;
    p += n;
  }
  return 0;
}

void bench_parse(bench_opts *o, int argc, char **argv, const char *prog,
                 const char *extra, const char *summary) {
  memset(o, 0, sizeof *o);
  o->host = getenv("NIMBUS_MQTT_HOST");
  if (o->host == NULL || o->host[0] == '\0')
    o->host = "127.0.0.1";
  o->port = 1883;
  const char *ep = getenv("NIMBUS_MQTT_PORT");
  long lv = 0;
  if (ep != NULL && ep[0] != '\0') {
    if (parse_long(ep, 1, 65535, &lv) != 0) {
      fprintf(stderr, "%s: bad NIMBUS_MQTT_PORT '%s'\n", prog, ep);
      exit(2);
    }
    o->port = (int)lv;
  }
  o->inflight = 1;
  o->seconds = 5.0;
  o->warmup = 1000;
  o->size = 64;
  o->req_topic = "bench/raw/req";
  o->reply_topic = "bench/raw/reply";
  o->op = "ping";

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout, prog, extra, summary);
      exit(0);
    }
    if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
      fprintf(stderr, "%s: bad argument '%s'\n", prog, a);
      usage(stderr, prog, extra, summary);
      exit(2);
    }
    const char *name = a + 2;
    const char *val = argv[++i];
    int bad = 0;
    int conn = strcmp(name, "host") == 0 || strcmp(name, "port") == 0 ||
               strcmp(name, "user") == 0 || strcmp(name, "password") == 0 ||
               strcmp(name, "client-id") == 0;
    if (!conn && !in_list(extra, name)) {
      bad = 1;
    } else if (strcmp(name, "host") == 0) {
      o->host = val;
    } else if (strcmp(name, "port") == 0) {
      bad = parse_long(val, 1, 65535, &lv);
      o->port = (int)lv;
    } else if (strcmp(name, "user") == 0) {
      o->user = val;
    } else if (strcmp(name, "password") == 0) {
      o->password = val;
    } else if (strcmp(name, "client-id") == 0) {
      o->client_id = val;
    } else if (strcmp(name, "inflight") == 0) {
      bad = parse_long(val, 1, 4096, &lv);
      o->inflight = (int)lv;
    } else if (strcmp(name, "count") == 0) {
      bad = parse_long(val, 0, LONG_MAX / 2, &o->count);
    } else if (strcmp(name, "seconds") == 0) {
      bad = parse_double(val, 0.01, 86400.0, &o->seconds);
    } else if (strcmp(name, "warmup") == 0) {
      bad = parse_long(val, 0, LONG_MAX / 2, &o->warmup);
    } else if (strcmp(name, "req-topic") == 0) {
      o->req_topic = val;
    } else if (strcmp(name, "reply-topic") == 0) {
      o->reply_topic = val;
    } else if (strcmp(name, "pool") == 0) {
      bad = parse_long(val, 0, 256, &lv);
      o->pool = (int)lv;
    } else if (strcmp(name, "size") == 0) {
      bad = parse_long(val, 64, 1048576, &o->size);
    } else if (strcmp(name, "reply-size") == 0) {
      bad = parse_long(val, 0, 1048576, &o->reply_size);
    } else if (strcmp(name, "state-dir") == 0) {
      o->state_dir = val;
    } else if (strcmp(name, "op") == 0) {
      o->op = val;
      bad = strcmp(val, "ping") != 0 && strcmp(val, "ping2") != 0 &&
            strcmp(val, "share") != 0;
    } else if (strcmp(name, "token") == 0) {
      o->token = val;
    } else if (strcmp(name, "blob") == 0) {
      o->blob = val;
    } else {
      bad = 1;
    }
    if (bad) {
      fprintf(stderr, "%s: bad option %s '%s'\n", prog, a, val);
      usage(stderr, prog, extra, summary);
      exit(2);
    }
  }
}

int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_cpu_ns(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

int bench_lat_add(bench_lat *l, int64_t ns) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 65536;
    int64_t *v = realloc(l->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = ns;
  return 0;
}

void bench_lat_free(bench_lat *l) {
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in milliseconds. */
static double pct_ms(const bench_lat *l, double p) {
  if (l->n == 0)
    return 0.0;
  size_t rank = (size_t)(p * (double)l->n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > l->n)
    rank = l->n;
  return (double)l->v[rank - 1] / 1e6;
}

void bench_report(bench_lat *l, int inflight, double seconds, long errors,
                  int64_t cpu_ns) {
  if (l->n > 1)
    qsort(l->v, l->n, sizeof *l->v, cmp_i64);
  double rate = seconds > 0 ? (double)l->n / seconds : 0.0;
  double cpu_us = l->n > 0 ? (double)cpu_ns / 1e3 / (double)l->n : 0.0;
  printf("inflight=%d count=%zu seconds=%.3f rate=%.0f p50_ms=%.3f "
         "p99_ms=%.3f errors=%ld cpu_us=%.1f\n",
         inflight, l->n, seconds, rate, pct_ms(l, 0.50), pct_ms(l, 0.99),
         errors, cpu_us);
  fflush(stdout);
}
