/* Decoding of the three envelopes (task, reply, notice) and of bare values.
 *
 * Every decoder runs the bounded walker over the whole buffer first and
 * hands the buffer to msgpack-c only when it passed; msgpack-c then builds
 * the object tree in a zone of its own, with strings and bins pointing
 * into the caller's buffer. The envelope checks that follow read that tree
 * and say in a sentence what is wrong, because the sentence travels back
 * to a person in the error reply. */
#include "sc_internal.h"

#include "nimbus/errors.h"

#include <string.h>

#define ID_RULE "16-64 characters of A-Z a-z 0-9 _ -"

/* Walks, then unpacks. On success *zone holds the tree of *root. */
static int decode_root(const uint8_t *buf, size_t len, size_t max_bytes,
                       size_t max_depth, size_t max_values, msgpack_zone **zone,
                       msgpack_object *root, char *err, size_t errcap) {
  sc_walk_limits lim = {max_depth, max_values};
  msgpack_zone *z = NULL;
  size_t off = 0;
  int rc;

  *zone = NULL;
  if (buf == NULL && len > 0) {
    nb_errf(err, errcap, "no buffer was given");
    return NIMBUS_EINVAL;
  }
  if (len > max_bytes) {
    nb_errf(err, errcap,
            "the message is %zu bytes, more than the %zu "
            "accepted",
            len, max_bytes);
    return NIMBUS_ETOOBIG;
  }
  rc = sc_walk(buf, len, &lim, err, errcap);
  if (rc != 0)
    goto fail;
  z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
  if (z == NULL) {
    nb_errf(err, errcap, "out of memory");
    rc = NIMBUS_ENOMEM;
    goto fail;
  }
  switch (msgpack_unpack((const char *)buf, len, &off, z, root)) {
  case MSGPACK_UNPACK_SUCCESS:
    break;
  case MSGPACK_UNPACK_NOMEM_ERROR:
    nb_errf(err, errcap, "out of memory");
    rc = NIMBUS_ENOMEM;
    goto fail;
  default:
    /* The walker accepts nothing msgpack-c rejects; this is a guard. */
    nb_errf(err, errcap, "the message is not valid msgpack");
    rc = NIMBUS_EPROTO;
    goto fail;
  }
  *zone = z;
  return 0;

fail:
  if (z)
    msgpack_zone_free(z);
  return rc;
}

/* Checks field v. `who` names the side that speaks version 1. */
static bool check_v(const msgpack_object *root, const char *who, char *err,
                    size_t errcap) {
  int64_t v = 0;
  const msgpack_object *o = sc_map_get(root, "v");
  if (o != NULL && sc_obj_int(o, &v) && v == SC_VERSION)
    return true;
  nb_errf(err, errcap,
          "unsupported protocol version: field v must be %d (this %s speaks "
          "protocol version %d)",
          SC_VERSION, who, SC_VERSION);
  return false;
}

/* ---- Task -------------------------------------------------------------- */

int sc_task_decode(const uint8_t *buf, size_t len, sc_task *out, char *err,
                   size_t errcap) {
  msgpack_zone *z = NULL;
  const msgpack_object *o;
  int rc;

  memset(out, 0, sizeof *out);
  nb_errf(err, errcap, "%s", "");
  rc = decode_root(buf, len, SC_MAX_MESSAGE, SC_MAX_DEPTH, SC_MAX_VALUES, &z,
                   &out->root_, err, errcap);
  if (rc != 0)
    goto fail;
  rc = NIMBUS_EPROTO;
  if (out->root_.type != MSGPACK_OBJECT_MAP) {
    nb_errf(err, errcap, "the task is not a msgpack map");
    goto fail;
  }
  if (!check_v(&out->root_, "cloud", err, errcap))
    goto fail;
  o = sc_map_get(&out->root_, "id");
  if (o == NULL) {
    nb_errf(err, errcap, "field id is missing; it must be " ID_RULE);
    goto fail;
  }
  if (o->type != MSGPACK_OBJECT_STR ||
      !sc_id_valid(o->via.str.ptr, o->via.str.size)) {
    nb_errf(err, errcap, "field id must be " ID_RULE);
    goto fail;
  }
  memcpy(out->id, o->via.str.ptr, o->via.str.size);
  out->id[o->via.str.size] = '\0';
  o = sc_map_get(&out->root_, "args");
  if (o != NULL && o->type != MSGPACK_OBJECT_MAP) {
    nb_errf(err, errcap, "field args must be a map, not %s", sc_type_name(o));
    goto fail;
  }
  out->empty_args_.type = MSGPACK_OBJECT_MAP;
  out->args = o ? o : &out->empty_args_;
  o = sc_map_get(&out->root_, "data");
  if (o != NULL) {
    if (o->type != MSGPACK_OBJECT_BIN) {
      nb_errf(err, errcap, "field data must be bin, not %s", sc_type_name(o));
      goto fail;
    }
    out->has_data = true;
    out->data = (const uint8_t *)o->via.bin.ptr;
    out->data_len = o->via.bin.size;
  }
  out->zone_ = z;
  return 0;

fail:
  if (z)
    msgpack_zone_free(z);
  memset(out, 0, sizeof *out);
  /* The error reply echoes the id whenever one can be read (PROTOCOL.md). */
  sc_salvage_id(buf, len, out->id);
  return rc;
}

void sc_task_fini(sc_task *t) {
  if (t == NULL)
    return;
  if (t->zone_)
    msgpack_zone_free(t->zone_);
  t->zone_ = NULL;
  t->args = NULL;
  t->data = NULL;
  t->data_len = 0;
  t->has_data = false;
}

/* ---- Reply ------------------------------------------------------------- */

/* Reads an optional whole number >= 0 into *out. */
static bool opt_count(const msgpack_object *root, const char *key, int64_t *out,
                      bool *present, char *err, size_t errcap) {
  const msgpack_object *o = sc_map_get(root, key);
  *present = o != NULL;
  if (o == NULL)
    return true;
  if (sc_obj_int(o, out) && *out >= 0)
    return true;
  nb_errf(err, errcap, "field %s must be a whole number of at least 0", key);
  return false;
}

/* Reads an optional string field. */
static bool opt_str(const msgpack_object *root, const char *key, const char **s,
                    size_t *n, char *err, size_t errcap) {
  const msgpack_object *o = sc_map_get(root, key);
  if (o == NULL)
    return true;
  if (o->type != MSGPACK_OBJECT_STR) {
    nb_errf(err, errcap, "field %s must be a string, not %s", key,
            sc_type_name(o));
    return false;
  }
  *s = o->via.str.ptr;
  *n = o->via.str.size;
  return true;
}

int sc_reply_decode(const uint8_t *buf, size_t len, sc_reply *out, char *err,
                    size_t errcap) {
  msgpack_zone *z = NULL;
  const msgpack_object *o;
  int64_t code = 0;
  bool has_done = false, has_total = false;
  int rc;

  memset(out, 0, sizeof *out);
  nb_errf(err, errcap, "%s", "");
  rc = decode_root(buf, len, SC_MAX_MESSAGE, SC_MAX_REPLY_DEPTH, SC_MAX_VALUES,
                   &z, &out->root_, err, errcap);
  if (rc != 0)
    goto fail;
  rc = NIMBUS_EPROTO;
  if (out->root_.type != MSGPACK_OBJECT_MAP) {
    nb_errf(err, errcap, "the reply is not a msgpack map");
    goto fail;
  }
  if (!check_v(&out->root_, "terminal", err, errcap))
    goto fail;
  o = sc_map_get(&out->root_, "id");
  if (o == NULL || o->type != MSGPACK_OBJECT_STR ||
      (o->via.str.size != 0 && !sc_id_valid(o->via.str.ptr, o->via.str.size))) {
    nb_errf(err, errcap, "field id must be \"\" or " ID_RULE);
    goto fail;
  }
  memcpy(out->id, o->via.str.ptr, o->via.str.size);
  out->id[o->via.str.size] = '\0';

  o = sc_map_get(&out->root_, "status");
  if (sc_obj_is(o, "ok")) {
    out->status = SC_STATUS_OK;
  } else if (sc_obj_is(o, "error")) {
    out->status = SC_STATUS_ERROR;
  } else if (sc_obj_is(o, "progress")) {
    out->status = SC_STATUS_PROGRESS;
  } else {
    nb_errf(err, errcap,
            "field status must be \"ok\", \"error\" or \"progress\"");
    goto fail;
  }
  o = sc_map_get(&out->root_, "code");
  if (o == NULL || !sc_obj_int(o, &code) || code < 0 || code > 999) {
    nb_errf(err, errcap, "field code must be a whole number from 0 to 999");
    goto fail;
  }
  if (out->status != SC_STATUS_ERROR && code != 0) {
    nb_errf(err, errcap, "a reply with status %s must have code 0",
            sc_status_name(out->status));
    goto fail;
  }
  if (out->status == SC_STATUS_ERROR && code == 0) {
    nb_errf(err, errcap, "an error reply must have a code other than 0");
    goto fail;
  }
  out->code = (int)code;
  if (!opt_str(&out->root_, "error", &out->error, &out->error_len, err,
               errcap) ||
      !opt_str(&out->root_, "help", &out->help, &out->help_len, err, errcap))
    goto fail;
  if (out->status == SC_STATUS_ERROR && out->error == NULL) {
    nb_errf(err, errcap,
            "an error reply must say what went wrong in field "
            "error");
    goto fail;
  }
  o = sc_map_get(&out->root_, "result");
  if (o != NULL && o->type != MSGPACK_OBJECT_MAP) {
    nb_errf(err, errcap, "field result must be a map, not %s", sc_type_name(o));
    goto fail;
  }
  out->result = o;
  o = sc_map_get(&out->root_, "data");
  if (o != NULL) {
    if (o->type != MSGPACK_OBJECT_BIN) {
      nb_errf(err, errcap, "field data must be bin, not %s", sc_type_name(o));
      goto fail;
    }
    out->has_data = true;
    out->data = (const uint8_t *)o->via.bin.ptr;
    out->data_len = o->via.bin.size;
  }
  if (!opt_count(&out->root_, "done", &out->done, &has_done, err, errcap) ||
      !opt_count(&out->root_, "total", &out->total, &has_total, err, errcap))
    goto fail;
  if (out->status == SC_STATUS_PROGRESS && (!has_done || !has_total)) {
    nb_errf(err, errcap, "a progress reply must have fields done and total");
    goto fail;
  }
  out->zone_ = z;
  return 0;

fail:
  if (z)
    msgpack_zone_free(z);
  memset(out, 0, sizeof *out);
  return rc;
}

void sc_reply_fini(sc_reply *r) {
  if (r == NULL)
    return;
  if (r->zone_)
    msgpack_zone_free(r->zone_);
  r->zone_ = NULL;
  r->result = NULL;
  r->error = r->help = NULL;
  r->data = NULL;
  r->has_data = false;
}

/* ---- Notice ------------------------------------------------------------ */

bool sc_kind_valid(const char *s, size_t n) {
  if (s == NULL || n < 1 || n > 64)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
      return false;
  }
  return true;
}

int sc_notice_decode(const uint8_t *buf, size_t len, sc_notice *out, char *err,
                     size_t errcap) {
  msgpack_zone *z = NULL;
  const msgpack_object *o;
  int rc;

  memset(out, 0, sizeof *out);
  nb_errf(err, errcap, "%s", "");
  rc = decode_root(buf, len, SC_MAX_MESSAGE, SC_MAX_DEPTH, SC_MAX_VALUES, &z,
                   &out->root_, err, errcap);
  if (rc != 0)
    goto fail;
  rc = NIMBUS_EPROTO;
  if (out->root_.type != MSGPACK_OBJECT_MAP) {
    nb_errf(err, errcap, "the notice is not a msgpack map");
    goto fail;
  }
  if (!check_v(&out->root_, "terminal", err, errcap))
    goto fail;
  o = sc_map_get(&out->root_, "kind");
  if (o == NULL || o->type != MSGPACK_OBJECT_STR ||
      !sc_kind_valid(o->via.str.ptr, o->via.str.size)) {
    nb_errf(err, errcap,
            "field kind must be 1-64 characters of A-Z a-z 0-9 . _ -");
    goto fail;
  }
  memcpy(out->kind, o->via.str.ptr, o->via.str.size);
  out->kind[o->via.str.size] = '\0';
  out->fields = &out->root_;
  out->zone_ = z;
  return 0;

fail:
  if (z)
    msgpack_zone_free(z);
  memset(out, 0, sizeof *out);
  return rc;
}

void sc_notice_fini(sc_notice *n) {
  if (n == NULL)
    return;
  if (n->zone_)
    msgpack_zone_free(n->zone_);
  n->zone_ = NULL;
  n->fields = NULL;
}

/* ---- Bare values ------------------------------------------------------- */

int sc_value_decode_limits(const uint8_t *buf, size_t len, size_t max_bytes,
                           size_t max_values, msgpack_object *out,
                           msgpack_zone **out_zone, char *err, size_t errcap) {
  nb_errf(err, errcap, "%s", "");
  memset(out, 0, sizeof *out);
  return decode_root(buf, len, max_bytes, SC_MAX_DEPTH, max_values, out_zone,
                     out, err, errcap);
}

int sc_value_decode(const uint8_t *buf, size_t len, msgpack_object *out,
                    msgpack_zone **out_zone, char *err, size_t errcap) {
  return sc_value_decode_limits(buf, len, SC_MAX_MESSAGE, SC_MAX_VALUES, out,
                                out_zone, err, errcap);
}

/* ---- Helpers ----------------------------------------------------------- */

const char *sc_status_name(sc_status s) {
  switch (s) {
  case SC_STATUS_OK:
    return "ok";
  case SC_STATUS_ERROR:
    return "error";
  case SC_STATUS_PROGRESS:
    return "progress";
  }
  return "invalid";
}

const char *sc_type_name(const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return "nil";
  case MSGPACK_OBJECT_BOOLEAN:
    return "a boolean";
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return "an integer";
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return "a float";
  case MSGPACK_OBJECT_STR:
    return "a string";
  case MSGPACK_OBJECT_ARRAY:
    return "an array";
  case MSGPACK_OBJECT_MAP:
    return "a map";
  case MSGPACK_OBJECT_BIN:
    return "bin";
  case MSGPACK_OBJECT_EXT:
    return "an ext value";
  }
  return "an unknown type";
}

bool sc_obj_int(const msgpack_object *o, int64_t *out) {
  switch (o->type) {
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    if (o->via.u64 > (uint64_t)INT64_MAX)
      return false;
    *out = (int64_t)o->via.u64;
    return true;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    *out = o->via.i64;
    return true;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64: {
    double d = o->via.f64;
    /* The range test also rejects NaN; only then is the cast defined. */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
      return false;
    int64_t i = (int64_t)d;
    if ((double)i != d)
      return false;
    *out = i;
    return true;
  }
  default:
    return false;
  }
}

bool sc_obj_is(const msgpack_object *o, const char *s) {
  size_t n = strlen(s);
  return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
         (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}
