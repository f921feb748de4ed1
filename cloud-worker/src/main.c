/* nimbus-worker: takes tasks from the broker's shared groups, runs them and
 * replies (see wk.h). This file reads the config, starts the worker, prints
 * the one ready line and turns SIGTERM/SIGINT into a drain: stop taking
 * tasks, finish those in flight, exit 0. */
#include "wk.h"

#include "nb_config.h"
#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const nb_opt own_options[] = {
    {"mqtt_host", NB_OPT_STR, "127.0.0.1", "broker host",
     offsetof(wk_config, mqtt_host), 0, 0, NULL},
    {"mqtt_port", NB_OPT_INT, "1883", "broker port",
     offsetof(wk_config, mqtt_port), 1, 65535, NULL},
    {"mqtt_username", NB_OPT_STR, "worker", "broker account (role worker)",
     offsetof(wk_config, mqtt_username), 0, 0, NULL},
    {"mqtt_password", NB_OPT_STR, NULL, "broker account password",
     offsetof(wk_config, mqtt_password), 0, 0, NULL},
    {"redis_host", NB_OPT_STR, "127.0.0.1", "Redis host",
     offsetof(wk_config, redis_host), 0, 0, NULL},
    {"redis_port", NB_OPT_INT, "6379", "Redis port",
     offsetof(wk_config, redis_port), 1, 65535, NULL},
    {"redis_password", NB_OPT_STR, NULL, "Redis password (AUTH)",
     offsetof(wk_config, redis_password), 0, 0, NULL},
    {"worker_id", NB_OPT_STR, NULL,
     "this worker's name and MQTT client id (default: worker-<random>)",
     offsetof(wk_config, worker_id), 0, 0, NULL},
    {"types", NB_OPT_STR, NULL,
     "task types to serve, comma-separated (default: all built-in)",
     offsetof(wk_config, types), 0, 0, NULL},
    {"prefix", NB_OPT_STR, "cloud/v1", "topic prefix",
     offsetof(wk_config, prefix), 0, 0, NULL},
    {"unserved", NB_OPT_STR, "broker",
     "tasks of types no worker serves get 400 from: broker (the tasks "
     "nimbus_auth.so re-routes to <prefix>/unserved/+/+), wildcard (a "
     "catch-all group on <prefix>/task/+/+: for other MQTT 5 brokers, but "
     "every task arrives twice) or off",
     offsetof(wk_config, unserved), 0, 0, NULL},
    {"lease_ms", NB_OPT_INT, "10000", "a task claim's lease",
     offsetof(wk_config, lease_ms), 100, 3600000, NULL},
    {"renew_ms", NB_OPT_INT, "3000", "how often live claims are renewed",
     offsetof(wk_config, renew_ms), 10, 3600000, NULL},
    {"result_ttl_ms", NB_OPT_INT, "86400000",
     "how long a final ok reply is kept for replay",
     offsetof(wk_config, result_ttl_ms), 1000, INT64_C(31536000000), NULL},
    {"upload_ttl_ms", NB_OPT_INT, "86400000",
     "how long an upload not committed is kept",
     offsetof(wk_config, upload_ttl_ms), 1000, INT64_C(31536000000), NULL},
    {"blob_ttl_ms", NB_OPT_INT, "86400000",
     "how long a blob nothing refers to (no snapshot) is kept before it is "
     "collected",
     offsetof(wk_config, blob_ttl_ms), 1000, INT64_C(31536000000), NULL},
    {"outbox_grace_ms", NB_OPT_INT, "10000",
     "a notice of a committed task that its worker did not publish (it "
     "died first) is published by another worker this long after the "
     "commit",
     offsetof(wk_config, outbox_grace_ms), 100, 3600000, NULL},
    {"max_inflight", NB_OPT_INT, "64",
     "tasks a terminal may have queued or running at this worker "
     "(advertised by ping); one more is answered 429 with retry_after",
     offsetof(wk_config, max_inflight), 1, 100000, NULL},
    {"queue", NB_OPT_INT, "1024",
     "tasks received but not started, per pool, at most (then the worker "
     "stops reading and the broker keeps the rest)",
     offsetof(wk_config, queue), 1, 1000000, NULL},
    {"data_dir", NB_OPT_STR, "./var/blobs", "where large objects live",
     offsetof(wk_config, data_dir), 0, 0, NULL},
    {"blob_direct", NB_OPT_BOOL, "true",
     "write whole segments and read uploads at commit with O_DIRECT, past "
     "the page cache (falls back by itself where the filesystem refuses)",
     offsetof(wk_config, blob_direct), 0, 0, NULL},
    {"log_level", NB_OPT_STR, "info", "debug, info, warn or error",
     offsetof(wk_config, log_level), 0, 0, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

static const char usage[] =
    "Usage: nimbus-worker [--config FILE] [options]\n"
    "\n"
    "Takes Nimbus tasks from the MQTT broker through shared subscriptions\n"
    "($share/nimbus-<type>/<prefix>/task/<type>/+), runs them, keeps state\n"
    "in Redis and replies on <prefix>/reply/<terminal>. Run as many as you\n"
    "like against the same broker and Redis: the broker spreads the tasks.\n"
    "A task of a type no worker serves is answered with 400 (--unserved).\n"
    "Prints one line \"nimbus-worker ready ...\" on stderr once it takes\n"
    "tasks. SIGTERM or SIGINT: stop taking tasks, finish those in flight,\n"
    "exit 0.\n"
    "\n"
    "Task types run in pools, each with its own threads and queue, fair\n"
    "across terminals: quick (ping, status, blob metadata; --threads),\n"
    "transfer (blob.put, blob.get, blob.commit, backup.commit;\n"
    "--transfer-threads) and one per heavy family (diag: --diag-threads).\n"
    "--print-config prints the options in effect as a config file and\n"
    "exits.\n";

int main(int argc, char **argv) {
  nb_malloc_for_segments();
  nb_opt *options = NULL;
  wk_offload_locate_modules();
  if (wk_options_merge(own_options, &options) != 0) {
    fprintf(stderr, "nimbus-worker: out of memory\n");
    return 1;
  }
  bool print_config = nb_config_take_flag(&argc, argv, "--print-config");
  wk_config cfg;
  memset(&cfg, 0, sizeof cfg);
  char err[512] = "";
  bool help = false;
  int nrest = 0;
  char **rest = NULL;
  int rc = nb_config_load(options, &cfg, argc, argv, NULL, &help, &nrest, &rest,
                          err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "nimbus-worker: %s\n", err);
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }
  if (print_config && !help) {
    nb_config_print(options, &cfg, stdout);
    nb_config_free(options, &cfg);
    free(options);
    return 0;
  }
  if (help) {
    nb_config_print_help(options, usage, stdout);
    nb_config_free(options, &cfg);
    free(options);
    return 0;
  }
  if (nrest > 0) {
    fprintf(stderr, "nimbus-worker: unexpected argument \"%s\" (see --help)\n",
            rest[0]);
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }
  if (nb_log_set_level(cfg.log_level) != 0) {
    fprintf(stderr,
            "nimbus-worker: log_level must be debug, info, warn or "
            "error, not \"%s\"\n",
            cfg.log_level);
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }
  static const char *const unserved_modes[] = {"broker", "wildcard", "off"};
  size_t mode = 0;
  while (mode < 3 && strcmp(cfg.unserved, unserved_modes[mode]) != 0)
    mode++;
  if (mode == 3) {
    fprintf(stderr,
            "nimbus-worker: unserved must be broker, wildcard or "
            "off, not \"%s\"\n",
            cfg.unserved);
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }
  cfg.unserved_mode = (wk_unserved)mode;
  if (cfg.worker_id == NULL || cfg.worker_id[0] == '\0') {
    char id[32] = "worker-";
    nb_random_id(id + 7, sizeof id - 7, 48);
    free(cfg.worker_id);
    cfg.worker_id = strdup(id);
  }
  if (cfg.worker_id == NULL ||
      !nb_valid_terminal(cfg.worker_id, strlen(cfg.worker_id))) {
    fprintf(stderr, "nimbus-worker: worker_id must be 1-64 characters of "
                    "A-Z a-z 0-9 . _ -\n");
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }
  if (cfg.renew_ms >= cfg.lease_ms) {
    fprintf(stderr,
            "nimbus-worker: renew_ms (%lld) must be shorter than "
            "lease_ms (%lld)\n",
            (long long)cfg.renew_ms, (long long)cfg.lease_ms);
    nb_config_free(options, &cfg);
    free(options);
    return 2;
  }

  /* Signals are taken by this thread alone, with sigwait; every thread
   * started from here on inherits the mask. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  wk_worker *w = NULL;
  rc = wk_worker_new(&cfg, &w, err, sizeof err);
  if (rc == 0)
    rc = wk_worker_start(w, err, sizeof err);
  if (rc != 0) {
    NB_ERROR("WK-START", "%s", err);
    wk_worker_free(w);
    nb_config_free(options, &cfg);
    free(options);
    return 1;
  }
  fprintf(stderr,
          "nimbus-worker ready id=%s mqtt=%s:%lld redis=%s:%lld "
          "types=%s unserved=%s\n",
          cfg.worker_id, cfg.mqtt_host, (long long)cfg.mqtt_port,
          cfg.redis_host, (long long)cfg.redis_port,
          cfg.types != NULL && cfg.types[0] != '\0' ? cfg.types : "all",
          cfg.unserved);

  int sig = 0;
  sigwait(&sigs, &sig);
  NB_INFO("WK-STOP", "signal %d: finishing tasks in flight", sig);
  wk_worker_drain(w);
  wk_worker_free(w);
  NB_INFO("WK-STOPPED", "all tasks finished; bye");
  nb_config_free(options, &cfg);
  free(options);
  return 0;
}
