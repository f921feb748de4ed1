/* Encoding of tasks, replies and notices with msgpack-c's packer.
 *
 * The key order is fixed (sc.h) because the golden files and every other
 * implementation's tests compare bytes. Each encoder refuses anything its
 * own decoder would refuse, so the cloud never sends what a terminal must
 * reject, and on failure it leaves the caller's buffer as it found it. */
#include "sc_internal.h"

#include "nimbus/errors.h"

#include <string.h>

static int pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  return msgpack_pack_str_with_body(pk, s, n);
}

/* Appends raw, already validated msgpack bytes. */
static int pack_raw(msgpack_sbuffer *out, const uint8_t *p, size_t n) {
  return msgpack_sbuffer_write(out, (const char *)p, n);
}

int sc_task_encode(msgpack_sbuffer *out, const char *id, const uint8_t *args,
                   size_t args_len, const uint8_t *data, size_t data_len,
                   bool has_data) {
  msgpack_packer pk;
  bool has_args = args != NULL && args_len > 0;
  size_t start;
  int rc = 0;

  if (out == NULL || id == NULL || !sc_id_valid(id, strlen(id)))
    return NIMBUS_EINVAL;
  if (has_data && data == NULL && data_len > 0)
    return NIMBUS_EINVAL;
  if (has_data && data_len > UINT32_MAX)
    return NIMBUS_EINVAL;
  if (has_args) {
    rc = sc_check_packed_map(args, args_len, SC_MAX_DEPTH);
    if (rc != 0)
      return rc;
  }
  start = out->size;
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  rc |= msgpack_pack_map(&pk, 2 + (size_t)has_args + (size_t)has_data);
  rc |= pack_cstr(&pk, "v");
  rc |= msgpack_pack_int(&pk, SC_VERSION);
  rc |= pack_cstr(&pk, "id");
  rc |= pack_cstr(&pk, id);
  if (has_args) {
    rc |= pack_cstr(&pk, "args");
    rc |= pack_raw(out, args, args_len);
  }
  if (has_data) {
    rc |= pack_cstr(&pk, "data");
    rc |= msgpack_pack_bin_with_body(&pk, data, data_len);
  }
  if (rc != 0) {
    out->size = start;
    return NIMBUS_ENOMEM;
  }
  return 0;
}

/* The rules sc_reply_decode enforces, checked before anything is written. */
static bool reply_valid(const sc_reply_enc *r) {
  if (r->id == NULL)
    return false;
  size_t idn = strlen(r->id);
  if (idn != 0 && !sc_id_valid(r->id, idn))
    return false;
  switch (r->status) {
  case SC_STATUS_OK:
    if (r->code != 0)
      return false;
    break;
  case SC_STATUS_PROGRESS:
    if (r->code != 0 || r->done < 0 || r->total < 0)
      return false;
    break;
  case SC_STATUS_ERROR:
    if (r->code <= 0 || r->code > 999 || r->error == NULL)
      return false;
    break;
  default:
    return false;
  }
  if (r->error && strlen(r->error) > SC_MAX_STR)
    return false;
  if (r->help && strlen(r->help) > SC_MAX_STR)
    return false;
  if (r->has_data && r->data == NULL && r->data_len > 0)
    return false;
  if (r->has_data && r->data_len > UINT32_MAX)
    return false;
  return true;
}

int sc_reply_encode(msgpack_sbuffer *out, const sc_reply_enc *r) {
  msgpack_packer pk;
  size_t n = 4, start;
  int rc = 0;

  if (out == NULL || r == NULL || !reply_valid(r))
    return NIMBUS_EINVAL;
  if (r->result != NULL) {
    rc = sc_check_packed_map(r->result, r->result_len, SC_MAX_REPLY_DEPTH);
    if (rc != 0)
      return rc;
  }
  n += (r->error != NULL) + (r->help != NULL) + (r->result != NULL) +
       r->has_data + (r->status == SC_STATUS_PROGRESS ? 2 : 0);
  start = out->size;
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  rc |= msgpack_pack_map(&pk, n);
  rc |= pack_cstr(&pk, "v");
  rc |= msgpack_pack_int(&pk, SC_VERSION);
  rc |= pack_cstr(&pk, "id");
  rc |= pack_cstr(&pk, r->id);
  rc |= pack_cstr(&pk, "status");
  rc |= pack_cstr(&pk, sc_status_name(r->status));
  rc |= pack_cstr(&pk, "code");
  rc |= msgpack_pack_int(&pk, r->code);
  if (r->error) {
    rc |= pack_cstr(&pk, "error");
    rc |= pack_cstr(&pk, r->error);
  }
  if (r->help) {
    rc |= pack_cstr(&pk, "help");
    rc |= pack_cstr(&pk, r->help);
  }
  if (r->result) {
    rc |= pack_cstr(&pk, "result");
    rc |= pack_raw(out, r->result, r->result_len);
  }
  if (r->has_data) {
    rc |= pack_cstr(&pk, "data");
    rc |= msgpack_pack_bin_with_body(&pk, r->data, r->data_len);
  }
  if (r->status == SC_STATUS_PROGRESS) {
    rc |= pack_cstr(&pk, "done");
    rc |= msgpack_pack_int64(&pk, r->done);
    rc |= pack_cstr(&pk, "total");
    rc |= msgpack_pack_int64(&pk, r->total);
  }
  if (rc != 0) {
    out->size = start;
    return NIMBUS_ENOMEM;
  }
  return 0;
}

int sc_notice_encode(msgpack_sbuffer *out, const char *kind,
                     const msgpack_object *fields) {
  msgpack_packer pk;
  size_t start;
  sc_walk_limits lim = {SC_MAX_DEPTH, SC_MAX_VALUES};
  int rc = 0;

  if (out == NULL || kind == NULL || !sc_kind_valid(kind, strlen(kind)))
    return NIMBUS_EINVAL;
  if (fields != NULL && fields->type != MSGPACK_OBJECT_MAP)
    return NIMBUS_EINVAL;
  start = out->size;
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  rc |= msgpack_pack_map(&pk, 2 + (fields ? (size_t)fields->via.map.size : 0));
  rc |= pack_cstr(&pk, "v");
  rc |= msgpack_pack_int(&pk, SC_VERSION);
  rc |= pack_cstr(&pk, "kind");
  rc |= pack_cstr(&pk, kind);
  for (uint32_t i = 0; fields && i < fields->via.map.size; i++) {
    rc |= msgpack_pack_object(&pk, fields->via.map.ptr[i].key);
    rc |= msgpack_pack_object(&pk, fields->via.map.ptr[i].val);
  }
  if (rc != 0) {
    out->size = start;
    return NIMBUS_ENOMEM;
  }
  /* `fields` is an arbitrary tree: rather than re-implement every rule on
   * objects, check the bytes just written with the decoder's own walker
   * (this catches a second "v" or "kind", ext values, depth). */
  rc = sc_walk((const uint8_t *)out->data + start, out->size - start, &lim,
               NULL, 0);
  if (rc != 0) {
    out->size = start;
    return rc == NIMBUS_EPROTO ? NIMBUS_EINVAL : rc;
  }
  return 0;
}
