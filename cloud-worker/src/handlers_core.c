/* The handlers every worker has: ping (what this cloud serves and its
 * limits), task.status and task.cancel (PROTOCOL.md, Delivery). */
#include "wk.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int h_ping(wk_ctx *c) {
  msgpack_packer *pk = &c->pk;
  msgpack_pack_map(pk, 5);
  wk_pack_str(pk, "worker");
  wk_pack_str(pk, wk_worker_id(c->w));
  wk_pack_kv_int(pk, "ts", nb_now_ms());
  wk_pack_str(pk, "versions");
  msgpack_pack_array(pk, 1);
  msgpack_pack_int(pk, SC_VERSION);
  wk_pack_str(pk, "types");
  wk_pack_cloud_types(c->w, pk);
  wk_pack_str(pk, "limits");
  wk_pack_limits(c->w, pk);
  return 0;
}

static const char *state_name(st_task_state s) {
  switch (s) {
  case ST_TASK_RUNNING:
    return "running";
  case ST_TASK_DONE:
    return "done";
  default:
    return "unknown";
  }
}

static int h_task_status(wk_ctx *c) {
  char id[SC_ID_MAX + 1];
  if (sc_arg_id(c->args, "task", true, id, c->error, sizeof c->error) != 0)
    return 400;
  st_task_state state;
  char *reply = NULL;
  size_t reply_len = 0;
  if (st_task_state_get(c->redis, c->terminal, id, &state, &reply,
                        &reply_len) != 0)
    return wk_redis_down(c);
  msgpack_pack_map(&c->pk, reply != NULL ? 2 : 1);
  wk_pack_str(&c->pk, "state");
  wk_pack_str(&c->pk, state_name(state));
  if (reply != NULL) {
    /* The recorded reply is a msgpack map already: embed it as it is. */
    wk_pack_str(&c->pk, "reply");
    msgpack_sbuffer_write(&c->result, reply, reply_len);
    free(reply);
  }
  return 0;
}

static int h_task_cancel(wk_ctx *c) {
  char id[SC_ID_MAX + 1];
  if (sc_arg_id(c->args, "task", true, id, c->error, sizeof c->error) != 0)
    return 400;
  st_task_state state;
  if (st_task_cancel(c->redis, c->terminal, id, &state) != 0)
    return wk_redis_down(c);
  msgpack_pack_map(&c->pk, 1);
  wk_pack_str(&c->pk, "state");
  wk_pack_str(&c->pk, state_name(state));
  return 0;
}

typedef struct core_config {
  int64_t threads;
} core_config;

static core_config core_cfg;

static const nb_opt core_options[] = {
    {"threads", NB_OPT_INT, "0",
     "threads of the quick pool (ping, status, blob metadata; one Redis "
     "connection each); 0: one per core, at least 2",
     offsetof(core_config, threads), 0, 1024, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

static const wk_pool_spec core_pools[] = {
    {.name = "quick", .threads = &core_cfg.threads},
    {.name = NULL},
};

static const wk_handler core_handlers[] = {
    {.type = "ping", .flags = WK_INLINE, .fn = h_ping},
    {.type = "task.status", .fn = h_task_status},
    {.type = "task.cancel", .fn = h_task_cancel},
    {.type = NULL},
};

const wk_family wk_family_core = {
    .abi = WK_FAMILY_ABI,
    .name = "core",
    .options = core_options,
    .config = &core_cfg,
    .pools = core_pools,
    .handlers = core_handlers,
};
