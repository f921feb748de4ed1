/* Diagnostic handlers, served only when the config turns `diag` on (off by
 * default): they let the tests and operators prove the delivery machinery
 * (claims, leases, replay, 409, cancel, drain) before and beside the real
 * state-changing handlers.
 *   diag.sleep {ms, key, fail}: state-changing; holds its claim for `ms`,
 *     sending progress each second, then counts one run under `key` in
 *     Redis, committed with its reply; `fail` answers that error instead.
 *   diag.echo {...}: read-only; returns its args and data. */
#include "wk.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stddef.h>
#include <string.h>

#include <time.h>

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static int h_diag_sleep(wk_ctx *c) {
  int64_t ms = 0, fail = 0;
  const char *key = NULL;
  size_t key_len = 0;
  if (sc_arg_int(c->args, "ms", false, 0, 600000, &ms, c->error,
                 sizeof c->error) == NIMBUS_EINVAL ||
      sc_arg_str(c->args, "key", true, 1, 64, &key, &key_len, c->error,
                 sizeof c->error) != 0 ||
      sc_arg_int(c->args, "fail", false, 400, 599, &fail, c->error,
                 sizeof c->error) == NIMBUS_EINVAL)
    return 400;
  char k[65];
  memcpy(k, key, key_len);
  k[key_len] = '\0';
  if (!nb_valid_token(k, key_len, 1, 64))
    return wk_fail(c, 400, NULL,
                   "args.key must be 1-64 characters of A-Z a-z 0-9 _ -");

  int64_t slept = 0, next_progress = 1000;
  while (slept < ms) {
    int64_t step = ms - slept < 20 ? ms - slept : 20;
    sleep_ms(step);
    slept += step;
    int rc = wk_checkpoint(c);
    if (rc == NIMBUS_ECANCELED)
      return wk_fail(c, 499, NULL, "cancelled by task.cancel after %lld ms",
                     (long long)slept);
    if (rc != 0)
      return wk_fail(c, 500, NULL, "the task's claim lapsed");
    if (slept >= next_progress) {
      wk_progress(c, slept, ms);
      next_progress += 1000;
    }
  }
  if (fail != 0)
    return wk_fail(c, (int)fail, NULL, "diag.sleep was asked to fail");

  int64_t runs = 0;
  if (st_diag_count_get(c->redis, k, &runs) != 0)
    return wk_fail(c, 503, NULL, "the cloud's state store is unavailable");
  if (st_diag_count_effect(c->effect, k) != 0)
    return wk_fail(c, 500, NULL, "out of memory");
  msgpack_pack_map(&c->pk, 2);
  wk_pack_str(&c->pk, "runs");
  msgpack_pack_int64(&c->pk, runs + 1);
  wk_pack_str(&c->pk, "slept");
  msgpack_pack_int64(&c->pk, slept);
  return 0;
}

static int h_diag_echo(wk_ctx *c) {
  msgpack_pack_map(&c->pk, 1);
  wk_pack_str(&c->pk, "args");
  msgpack_pack_object(&c->pk, *c->args);
  if (c->task->has_data &&
      wk_reply_data(c, c->task->data, c->task->data_len) != 0)
    return wk_fail(c, 500, NULL, "out of memory");
  return 0;
}

typedef struct diag_config {
  bool diag;
  int64_t threads;
} diag_config;

static diag_config diag_cfg;

static const nb_opt diag_options[] = {
    {"diag", NB_OPT_BOOL, "false",
     "serve the diagnostic task types (diag.sleep, diag.echo)",
     offsetof(diag_config, diag), 0, 0, NULL},
    {"diag_threads", NB_OPT_INT, "16",
     "threads of the diag pool (diag.sleep holds one for its whole sleep)",
     offsetof(diag_config, threads), 1, 1024, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

/* diag.sleep has a pool of its own, like every heavy family: a worker
 * whose diag pool is busy still answers pings and uploads at once. */
static const wk_pool_spec diag_pools[] = {
    {.name = "diag", .threads = &diag_cfg.threads},
    {.name = NULL},
};

static const wk_handler diag_handlers[] = {
    {.type = "diag.sleep", .flags = WK_STATEFUL, .fn = h_diag_sleep},
    {.type = "diag.echo", .pool = "quick", .fn = h_diag_echo},
    {.type = NULL},
};

const wk_family wk_family_diag = {
    .abi = WK_FAMILY_ABI,
    .name = "diag",
    .options = diag_options,
    .config = &diag_cfg,
    .enabled = &diag_cfg.diag,
    .pools = diag_pools,
    .handlers = diag_handlers,
};
