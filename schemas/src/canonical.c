/* The canonical form of a task's content, for idempotency (PROTOCOL.md,
 * Delivery): the same id sent again with "the same content" replays the
 * recorded reply, with other content it is 409, and "the same" means the
 * same values, not the same bytes. A terminal may re-encode a task on a
 * re-send (a JSON bridge reorders keys, writes 1 as 1.0), so the worker
 * compares [type, canonical(args), data or nil], where maps are sorted
 * bytewise by key, whole floats are written as ints, other floats as
 * float64 and everything else in msgpack-c's smallest form. */
#include "sc_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int key_cmp(const void *a, const void *b) {
  const msgpack_object *x = &(*(const msgpack_object_kv *const *)a)->key;
  const msgpack_object *y = &(*(const msgpack_object_kv *const *)b)->key;
  /* Keys of a decoded task are strings; other types sort by type only,
   * which keeps the order total should one ever be handed in. */
  if (x->type != MSGPACK_OBJECT_STR || y->type != MSGPACK_OBJECT_STR)
    return (x->type > y->type) - (x->type < y->type);
  size_t n =
      x->via.str.size < y->via.str.size ? x->via.str.size : y->via.str.size;
  int c = n ? memcmp(x->via.str.ptr, y->via.str.ptr, n) : 0;
  if (c != 0)
    return c;
  return (x->via.str.size > y->via.str.size) -
         (x->via.str.size < y->via.str.size);
}

static int pack_number(msgpack_packer *pk, double d) {
  /* One NaN, whatever payload bits the sender's NaN had. */
  if (isnan(d))
    return msgpack_pack_double(pk, NAN);
  if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
      (double)(int64_t)d == d)
    return msgpack_pack_int64(pk, (int64_t)d);
  if (d >= 9223372036854775808.0 && d < 18446744073709551616.0 &&
      (double)(uint64_t)d == d)
    return msgpack_pack_uint64(pk, (uint64_t)d);
  return msgpack_pack_double(pk, d);
}

static int canon(msgpack_packer *pk, const msgpack_object *o,
                 msgpack_zone *scratch, int depth) {
  int rc = 0;
  if (depth > SC_MAX_DEPTH)
    return NIMBUS_EINVAL;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return msgpack_pack_nil(pk);
  case MSGPACK_OBJECT_BOOLEAN:
    return o->via.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    return msgpack_pack_uint64(pk, o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return msgpack_pack_int64(pk, o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return pack_number(pk, o->via.f64);
  case MSGPACK_OBJECT_STR:
    return msgpack_pack_str_with_body(pk, o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_BIN:
    return msgpack_pack_bin_with_body(pk, o->via.bin.ptr, o->via.bin.size);
  case MSGPACK_OBJECT_EXT:
    return msgpack_pack_ext_with_body(pk, o->via.ext.ptr, o->via.ext.size,
                                      o->via.ext.type);
  case MSGPACK_OBJECT_ARRAY:
    rc = msgpack_pack_array(pk, o->via.array.size);
    for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++)
      rc = canon(pk, &o->via.array.ptr[i], scratch, depth + 1);
    return rc;
  case MSGPACK_OBJECT_MAP: {
    uint32_t n = o->via.map.size;
    const msgpack_object_kv **idx = NULL;
    rc = msgpack_pack_map(pk, n);
    if (rc != 0 || n == 0)
      return rc;
    /* Sort pointers, never the map itself: the task stays as sent. */
    idx = msgpack_zone_malloc(scratch, (size_t)n * sizeof *idx);
    if (idx == NULL)
      return NIMBUS_ENOMEM;
    for (uint32_t i = 0; i < n; i++)
      idx[i] = &o->via.map.ptr[i];
    qsort(idx, n, sizeof *idx, key_cmp);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
      rc = canon(pk, &idx[i]->key, scratch, depth + 1);
      if (rc == 0)
        rc = canon(pk, &idx[i]->val, scratch, depth + 1);
    }
    return rc;
  }
  }
  return NIMBUS_EINVAL;
}

int sc_task_canonical_write(void *data, msgpack_packer_write write,
                            const char *type, const sc_task *t,
                            sc_canon_data how) {
  msgpack_zone *scratch = NULL;
  msgpack_packer pk;
  msgpack_object empty;
  const msgpack_object *args;
  int rc;

  if (write == NULL || type == NULL || t == NULL ||
      (how != SC_CANON_DATA_BYTES && how != SC_CANON_DATA_XXH128))
    return NIMBUS_EINVAL;
  memset(&empty, 0, sizeof empty);
  empty.type = MSGPACK_OBJECT_MAP;
  args = t->args ? t->args : &empty;
  scratch = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
  if (scratch == NULL)
    return NIMBUS_ENOMEM;
  msgpack_packer_init(&pk, data, write);
  rc = msgpack_pack_array(&pk, 3);
  if (rc == 0)
    rc = msgpack_pack_str_with_body(&pk, type, strlen(type));
  if (rc == 0)
    rc = canon(&pk, args, scratch, 1);
  if (rc == 0 && !t->has_data) {
    rc = msgpack_pack_nil(&pk);
  } else if (rc == 0 && how == SC_CANON_DATA_XXH128) {
    uint8_t sum[16];
    nb_xxh128(t->data, t->data_len, sum);
    rc = msgpack_pack_bin_with_body(&pk, sum, sizeof sum);
  } else if (rc == 0) {
    rc = msgpack_pack_bin_with_body(&pk, t->data, t->data_len);
  }
  msgpack_zone_free(scratch);
  /* msgpack-c reports a failed write as -1: out of memory. */
  return rc == 0 ? 0 : rc > 0 ? rc : NIMBUS_ENOMEM;
}

int sc_task_canonical(msgpack_sbuffer *out, const char *type,
                      const sc_task *t) {
  if (out == NULL)
    return NIMBUS_EINVAL;
  size_t start = out->size;
  int rc = sc_task_canonical_write(out, msgpack_sbuffer_write, type, t,
                                   SC_CANON_DATA_BYTES);
  if (rc != 0)
    out->size = start;
  return rc;
}
