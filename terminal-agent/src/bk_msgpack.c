/* The msgpack helpers of the blob transfers and of backup and restore
 * (bk_pipe.h): packing the few shapes of args they send, and reading
 * replies' results with schemas' strict decoder. Built into
 * libnimbus-agent and into the CLI, like bk_pipe.c. */
#include "bk_pipe.h"
#include "nimbus/errors.h"

#include <stdint.h>
#include <string.h>

#include "sc.h"

void bk_pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str_with_body(pk, s, strlen(s));
}

void bk_pk_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  bk_pk_str(pk, k);
  bk_pk_str(pk, v);
}

void bk_pk_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
  bk_pk_str(pk, k);
  msgpack_pack_int64(pk, v);
}

bool bk_obj_int(const msgpack_object *o, int64_t *v) {
  if (o == NULL)
    return false;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
    *v = (int64_t)o->via.u64;
    return true;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *v = o->via.i64;
    return true;
  }
  return false;
}

bool bk_obj_str_eq(const msgpack_object *o, const char *s) {
  return o != NULL && o->type == MSGPACK_OBJECT_STR &&
         o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

bool bk_result_map(const nimbus_reply *r, msgpack_object *out,
                   msgpack_zone **zone) {
  char err[128];
  *zone = NULL;
  if (r->result == NULL || sc_value_decode(r->result, r->result_len, out, zone,
                                           err, sizeof err) != 0)
    return false;
  if (out->type != MSGPACK_OBJECT_MAP) {
    msgpack_zone_free(*zone);
    *zone = NULL;
    return false;
  }
  return true;
}

bool bk_reply_ok(const nimbus_reply *r) { return strcmp(r->status, "ok") == 0; }

int bk_err_of_code(int code) {
  switch (code) {
  case 400:
    return NIMBUS_EINVAL;
  case 404:
    return NIMBUS_ENOTFOUND;
  case 409:
    return NIMBUS_ECONFLICT;
  case 413:
    return NIMBUS_ETOOBIG;
  case 499:
    return NIMBUS_ECANCELED;
  default:
    return NIMBUS_EIO;
  }
}
