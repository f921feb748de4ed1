/* The handlers every worker has: ping (what this cloud serves and its
 * limits), task.status and task.cancel (PROTOCOL.md, Delivery). */
#include "wk.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdlib.h>
#include <string.h>

static int h_ping(wk_ctx *c) {
  const wk_config *cfg = c->cfg;
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
  msgpack_pack_map(pk, 12);
  wk_pack_kv_int(pk, "segment", SC_SEGMENT);
  wk_pack_kv_int(pk, "blob_max", cfg->blob_max_bytes);
  wk_pack_kv_int(pk, "message", SC_MAX_MESSAGE);
  wk_pack_kv_int(pk, "task", SC_MAX_TASK);
  wk_pack_kv_int(pk, "max_inflight", cfg->max_inflight);
  wk_pack_kv_int(pk, "result_ttl", cfg->result_ttl_ms);
  wk_pack_kv_int(pk, "upload_ttl", cfg->upload_ttl_ms);
  wk_pack_kv_int(pk, "blob_ttl", cfg->blob_ttl_ms);
  wk_pack_kv_int(pk, "lease", cfg->lease_ms);
  wk_pack_kv_int(pk, "renew", cfg->renew_ms);
  wk_pack_kv_int(pk, "resend", 30000);
  wk_pack_kv_int(pk, "resend_max", 300000);
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

static int redis_down(wk_ctx *c) {
  return wk_fail(c, 503, "try again in a moment",
                 "the cloud's state store is unavailable: %s",
                 st_redis_errstr(c->redis));
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
    return redis_down(c);
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
    return redis_down(c);
  msgpack_pack_map(&c->pk, 1);
  wk_pack_str(&c->pk, "state");
  wk_pack_str(&c->pk, state_name(state));
  return 0;
}

const wk_handler wk_core_handlers[] = {
    {"ping", false, false, WK_RUN_INLINE, h_ping},
    {"task.status", false, false, WK_RUN_QUICK, h_task_status},
    {"task.cancel", false, false, WK_RUN_QUICK, h_task_cancel},
    {NULL, false, false, WK_RUN_QUICK, NULL},
};
