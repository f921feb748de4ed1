/* Readers for a task's arguments: each looks one key up in the args map,
 * checks its type and bounds, and on failure writes the sentence that the
 * error reply carries, naming the key as args.<key> so a person can find
 * it in what they sent. */
#include "sc_internal.h"

#include "nimbus/errors.h"

#include <inttypes.h>
#include <string.h>

const msgpack_object *sc_map_get(const msgpack_object *map, const char *key) {
  if (map == NULL || key == NULL || map->type != MSGPACK_OBJECT_MAP)
    return NULL;
  for (uint32_t i = 0; i < map->via.map.size; i++) {
    const msgpack_object_kv *kv = &map->via.map.ptr[i];
    if (sc_obj_is(&kv->key, key))
      return &kv->val;
  }
  return NULL;
}

/* Looks `key` up; when it is absent returns the reader's answer for a
 * missing key in *rc and NULL. */
static const msgpack_object *lookup(const msgpack_object *args, const char *key,
                                    bool required, int *rc, char *err,
                                    size_t errcap) {
  const msgpack_object *o = sc_map_get(args, key);
  if (o != NULL) {
    *rc = 0;
    return o;
  }
  if (required) {
    nb_errf(err, errcap, "args.%s is missing", key);
    *rc = NIMBUS_EINVAL;
  } else {
    *rc = NIMBUS_ENOTFOUND;
  }
  return NULL;
}

int sc_arg_str(const msgpack_object *args, const char *key, bool required,
               size_t min, size_t max, const char **s, size_t *n, char *err,
               size_t errcap) {
  int rc;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  if (o->type != MSGPACK_OBJECT_STR || o->via.str.size < min ||
      o->via.str.size > max) {
    if (min == max)
      nb_errf(err, errcap, "args.%s must be a string of exactly %zu bytes", key,
              min);
    else
      nb_errf(err, errcap, "args.%s must be a string of %zu to %zu bytes", key,
              min, max);
    return NIMBUS_EINVAL;
  }
  *s = o->via.str.ptr;
  *n = o->via.str.size;
  return 0;
}

int sc_arg_text(const msgpack_object *args, const char *key, bool required,
                size_t min, size_t max, const char **s, size_t *n, char *err,
                size_t errcap) {
  const char *p = NULL;
  size_t len = 0;
  int rc = sc_arg_str(args, key, required, min, max, &p, &len, err, errcap);
  if (rc != 0)
    return rc;
  const char *why = nb_text_problem(p, len);
  if (why != NULL) {
    nb_errf(err, errcap, "args.%s %s", key, why);
    return NIMBUS_EINVAL;
  }
  *s = p;
  *n = len;
  return 0;
}

int sc_arg_int(const msgpack_object *args, const char *key, bool required,
               int64_t min, int64_t max, int64_t *out, char *err,
               size_t errcap) {
  int rc;
  int64_t v;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  if (!sc_obj_int(o, &v) || v < min || v > max) {
    nb_errf(err, errcap,
            "args.%s must be a whole number from %" PRId64 " to %" PRId64, key,
            min, max);
    return NIMBUS_EINVAL;
  }
  *out = v;
  return 0;
}

int sc_arg_num(const msgpack_object *args, const char *key, bool required,
               double min, double max, double *out, char *err, size_t errcap) {
  int rc;
  double v = 0;
  bool is_num = true;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  switch (o->type) {
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    v = (double)o->via.u64;
    break;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    v = (double)o->via.i64;
    break;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    v = o->via.f64;
    break;
  default:
    is_num = false;
    break;
  }
  /* Written so that NaN fails too. */
  if (is_num && v >= min && v <= max) {
    *out = v;
    return 0;
  }
  nb_errf(err, errcap, "args.%s must be a number from %g to %g", key, min, max);
  return NIMBUS_EINVAL;
}

int sc_arg_bool(const msgpack_object *args, const char *key, bool required,
                bool *out, char *err, size_t errcap) {
  int rc;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  if (o->type != MSGPACK_OBJECT_BOOLEAN) {
    nb_errf(err, errcap, "args.%s must be true or false", key);
    return NIMBUS_EINVAL;
  }
  *out = o->via.boolean;
  return 0;
}

int sc_arg_id(const msgpack_object *args, const char *key, bool required,
              char *out, char *err, size_t errcap) {
  int rc;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  if (o->type != MSGPACK_OBJECT_STR ||
      !sc_id_valid(o->via.str.ptr, o->via.str.size)) {
    nb_errf(err, errcap,
            "args.%s must be a task id: 16-64 characters of A-Z a-z 0-9 _ -",
            key);
    return NIMBUS_EINVAL;
  }
  memcpy(out, o->via.str.ptr, o->via.str.size);
  out[o->via.str.size] = '\0';
  return 0;
}

int sc_arg_array(const msgpack_object *args, const char *key, bool required,
                 size_t max_items, const msgpack_object **arr, char *err,
                 size_t errcap) {
  int rc;
  const msgpack_object *o = lookup(args, key, required, &rc, err, errcap);
  if (o == NULL)
    return rc;
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > max_items) {
    nb_errf(err, errcap, "args.%s must be an array of at most %zu item%s", key,
            max_items, max_items == 1 ? "" : "s");
    return NIMBUS_EINVAL;
  }
  *arr = o;
  return 0;
}
