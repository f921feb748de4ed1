/* JSON <-> msgpack for the nimbus-agent CLI (see ag_json.h for the
 * mapping). cJSON does the JSON; msgpack-c's packer and schemas' strict
 * decoder do the msgpack. */
#include "ag_json.h"

#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nimbus/errors.h"
#include "sc.h"

/* Deeper than any valid message (SC_MAX_DEPTH), shallow enough for the
 * stack. */
#define AG_JSON_MAX_DEPTH 64
/* 2^53: every integer up to here is exact in a double. */
#define AG_EXACT_INT 9007199254740992.0

char *ag_base64(const uint8_t *p, size_t n) {
  if (n > (size_t)INT32_MAX / 4 * 3)
    return NULL;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (out == NULL)
    return NULL;
  EVP_EncodeBlock((unsigned char *)out, p, (int)n);
  return out;
}

static int ag_pack_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  return msgpack_pack_str_with_body(pk, s, n);
}

static int ag_json_pack_depth(const cJSON *v, msgpack_packer *pk, int depth,
                              char *err, size_t errcap) {
  if (depth > AG_JSON_MAX_DEPTH) {
    snprintf(err, errcap, "JSON nested deeper than %d levels",
             AG_JSON_MAX_DEPTH);
    return NIMBUS_EINVAL;
  }
  int rc = 0;
  if (cJSON_IsNull(v)) {
    rc = msgpack_pack_nil(pk);
  } else if (cJSON_IsTrue(v)) {
    rc = msgpack_pack_true(pk);
  } else if (cJSON_IsFalse(v)) {
    rc = msgpack_pack_false(pk);
  } else if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (isfinite(d) && floor(d) == d && fabs(d) < AG_EXACT_INT)
      rc = msgpack_pack_int64(pk, (int64_t)d);
    else
      rc = msgpack_pack_double(pk, d);
  } else if (cJSON_IsString(v)) {
    rc = ag_pack_str(pk, v->valuestring);
  } else if (cJSON_IsArray(v)) {
    rc = msgpack_pack_array(pk, (size_t)cJSON_GetArraySize(v));
    for (const cJSON *e = v->child; rc == 0 && e != NULL; e = e->next)
      rc = ag_json_pack_depth(e, pk, depth + 1, err, errcap);
    return rc;
  } else if (cJSON_IsObject(v)) {
    for (const cJSON *e = v->child; e != NULL; e = e->next) {
      for (const cJSON *f = e->next; f != NULL; f = f->next) {
        if (strcmp(e->string, f->string) == 0) {
          snprintf(err, errcap, "key \"%.64s\" appears twice in an object",
                   e->string);
          return NIMBUS_EINVAL;
        }
      }
    }
    rc = msgpack_pack_map(pk, (size_t)cJSON_GetArraySize(v));
    for (const cJSON *e = v->child; rc == 0 && e != NULL; e = e->next) {
      if ((rc = ag_pack_str(pk, e->string)) == 0)
        rc = ag_json_pack_depth(e, pk, depth + 1, err, errcap);
    }
    return rc;
  } else {
    snprintf(err, errcap, "unsupported JSON value");
    return NIMBUS_EINVAL;
  }
  return rc == 0 ? 0 : NIMBUS_ENOMEM;
}

int ag_json_pack(const cJSON *v, msgpack_packer *pk, char *err, size_t errcap) {
  int rc = ag_json_pack_depth(v, pk, 0, err, errcap);
  /* msgpack's packer reports failure as -1: only allocation fails. */
  if (rc < 0) {
    snprintf(err, errcap, "out of memory");
    return NIMBUS_ENOMEM;
  }
  return rc;
}

int ag_json_args_pack(const char *text, msgpack_sbuffer *out, char *err,
                      size_t errcap) {
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithOpts(text, &end, 1);
  if (v == NULL) {
    size_t at = end != NULL && end >= text ? (size_t)(end - text) : 0;
    snprintf(err, errcap, "JSON-ARGS is not valid JSON (near byte %zu)", at);
    return NIMBUS_EINVAL;
  }
  int rc = 0;
  if (!cJSON_IsObject(v)) {
    snprintf(err, errcap,
             "JSON-ARGS must be a JSON object, like "
             "'{\"key\": 1}'");
    rc = NIMBUS_EINVAL;
  } else {
    msgpack_packer pk;
    size_t start = out->size;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    rc = ag_json_pack(v, &pk, err, errcap);
    if (rc != 0)
      out->size = start;
  }
  cJSON_Delete(v);
  return rc;
}

static cJSON *ag_json_raw_int(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static cJSON *ag_json_raw_int(const char *fmt, ...) {
  char buf[32];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return cJSON_CreateRaw(buf);
}

/* A NUL-terminated copy of a msgpack str, for cJSON. */
static char *ag_strndup(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL)
    return NULL;
  if (n > 0)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static cJSON *ag_json_from_msgpack_depth(const msgpack_object *o, int depth) {
  if (depth > AG_JSON_MAX_DEPTH)
    return NULL;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return cJSON_CreateNull();
  case MSGPACK_OBJECT_BOOLEAN:
    return cJSON_CreateBool(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    return ag_json_raw_int("%" PRIu64, o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return ag_json_raw_int("%" PRId64, o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return isfinite(o->via.f64) ? cJSON_CreateNumber(o->via.f64)
                                : cJSON_CreateNull();
  case MSGPACK_OBJECT_STR: {
    char *s = ag_strndup(o->via.str.ptr, o->via.str.size);
    cJSON *j = s != NULL ? cJSON_CreateString(s) : NULL;
    free(s);
    return j;
  }
  case MSGPACK_OBJECT_BIN: {
    char *s = ag_base64((const uint8_t *)o->via.bin.ptr, o->via.bin.size);
    cJSON *j = s != NULL ? cJSON_CreateString(s) : NULL;
    free(s);
    return j;
  }
  case MSGPACK_OBJECT_ARRAY: {
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t i = 0; arr != NULL && i < o->via.array.size; i++) {
      cJSON *e = ag_json_from_msgpack_depth(&o->via.array.ptr[i], depth + 1);
      if (e == NULL || !cJSON_AddItemToArray(arr, e)) {
        cJSON_Delete(e);
        cJSON_Delete(arr);
        return NULL;
      }
    }
    return arr;
  }
  case MSGPACK_OBJECT_MAP: {
    cJSON *obj = cJSON_CreateObject();
    for (uint32_t i = 0; obj != NULL && i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      char *key = NULL;
      if (kv->key.type == MSGPACK_OBJECT_STR) {
        key = ag_strndup(kv->key.via.str.ptr, kv->key.via.str.size);
      } else {
        cJSON *k = ag_json_from_msgpack_depth(&kv->key, depth + 1);
        key = k != NULL ? cJSON_PrintUnformatted(k) : NULL;
        cJSON_Delete(k);
      }
      cJSON *val = ag_json_from_msgpack_depth(&kv->val, depth + 1);
      if (key == NULL || val == NULL || !cJSON_AddItemToObject(obj, key, val)) {
        free(key);
        cJSON_Delete(val);
        cJSON_Delete(obj);
        return NULL;
      }
      free(key);
    }
    return obj;
  }
  default:
    return cJSON_CreateNull(); /* ext: the decoder refuses it anyway */
  }
}

cJSON *ag_json_from_msgpack(const msgpack_object *o) {
  return ag_json_from_msgpack_depth(o, 0);
}

int ag_json_from_packed(const uint8_t *buf, size_t len, cJSON **out) {
  msgpack_object o;
  msgpack_zone *zone = NULL;
  char err[128];
  *out = NULL;
  int rc = sc_value_decode(buf, len, &o, &zone, err, sizeof err);
  if (rc != 0)
    return rc;
  *out = ag_json_from_msgpack(&o);
  msgpack_zone_free(zone);
  return *out != NULL ? 0 : NIMBUS_ENOMEM;
}

static int ag_json_add_int(cJSON *obj, const char *key, int64_t v) {
  cJSON *n = ag_json_raw_int("%" PRId64, v);
  if (n == NULL || !cJSON_AddItemToObject(obj, key, n)) {
    cJSON_Delete(n);
    return NIMBUS_ENOMEM;
  }
  return 0;
}

cJSON *ag_json_from_reply(const nimbus_reply *r) {
  cJSON *j = cJSON_CreateObject();
  cJSON *result = NULL;
  char *b64 = NULL;
  if (j == NULL)
    goto fail;
  if (cJSON_AddStringToObject(j, "id", r->id) == NULL ||
      cJSON_AddStringToObject(j, "status", r->status) == NULL ||
      cJSON_AddNumberToObject(j, "code", r->code) == NULL)
    goto fail;
  if (r->error != NULL && cJSON_AddStringToObject(j, "error", r->error) == NULL)
    goto fail;
  if (r->help != NULL && cJSON_AddStringToObject(j, "help", r->help) == NULL)
    goto fail;
  if (r->result != NULL) {
    if (ag_json_from_packed(r->result, r->result_len, &result) != 0 ||
        !cJSON_AddItemToObject(j, "result", result))
      goto fail;
    result = NULL;
  }
  if (r->data != NULL) {
    b64 = ag_base64(r->data, r->data_len);
    if (b64 == NULL ||
        cJSON_AddNumberToObject(j, "data_size", (double)r->data_len) == NULL ||
        cJSON_AddStringToObject(j, "data_b64", b64) == NULL)
      goto fail;
    free(b64);
    b64 = NULL;
  }
  if (strcmp(r->status, "progress") == 0 &&
      (ag_json_add_int(j, "done", r->done) != 0 ||
       ag_json_add_int(j, "total", r->total) != 0))
    goto fail;
  return j;

fail:
  free(b64);
  cJSON_Delete(result);
  cJSON_Delete(j);
  return NULL;
}
