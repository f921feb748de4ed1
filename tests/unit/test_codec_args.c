/* Unit tests of the protocol module's argument readers (types, bounds,
 * missing keys, the sentences they write) and of the canonical form that
 * decides whether a re-sent task has "the same content". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_hex.h"

#include "nimbus/errors.h"
#include "nb_util.h"
#include "sc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID "3f2b8c1e-9d4a-4b6f-8e21-7c5d0a9f1b36"

/* A decoded args map, from hex. */
typedef struct doc {
  msgpack_object o;
  msgpack_zone *z;
  uint8_t buf[1024];
} doc;

static const msgpack_object *doc_load(doc *d, const char *hex) {
  char err[256];
  size_t n = unhex(hex, d->buf, sizeof d->buf);
  d->z = NULL;
  if (sc_value_decode(d->buf, n, &d->o, &d->z, err, sizeof err) != 0)
    fail_msg("%s: %s", hex, err);
  return &d->o;
}

static void doc_free(doc *d) { msgpack_zone_free(d->z); }

/* The arguments used below:
 *   s: "hello", n: 5, neg: -3, f: 2.0, h: 1.5, b: true, a: [1, 2],
 *   id: ID, big: 2^64-1, nil: nil */
#define ARGS                                                                   \
  "8a a1 73 a5 68 65 6c 6c 6f a1 6e 05 a3 6e 65 67 fd a1 66 cb 40 00 00 00 "   \
  "00 00 00 00 a1 68 cb 3f f8 00 00 00 00 00 00 a1 62 c3 a1 61 92 01 02 "      \
  "a2 69 64 d9 24 33 66 32 62 38 63 31 65 2d 39 64 34 61 2d 34 62 36 66 2d "   \
  "38 65 32 31 2d 37 63 35 64 30 61 39 66 31 62 33 36 a3 62 69 67 cf ff ff "   \
  "ff ff ff ff ff ff a3 6e 69 6c c0"

static void test_map_get(void **state) {
  (void)state;
  doc d;
  const msgpack_object *a = doc_load(&d, ARGS);
  assert_int_equal(a->via.map.size, 10);
  assert_non_null(sc_map_get(a, "s"));
  assert_non_null(sc_map_get(a, "nil"));
  assert_null(sc_map_get(a, "x"));
  assert_null(sc_map_get(a, "")); /* no prefix matches */
  assert_null(sc_map_get(a, "ni"));
  assert_null(sc_map_get(NULL, "s"));
  assert_null(sc_map_get(&a->via.map.ptr[0].val, "s")); /* not a map */
  doc_free(&d);
}

static void test_arg_str(void **state) {
  (void)state;
  doc d;
  const msgpack_object *a = doc_load(&d, ARGS);
  char err[256];
  const char *s = "default";
  size_t n = 99;
  assert_int_equal(sc_arg_str(a, "s", true, 1, 64, &s, &n, err, sizeof err), 0);
  assert_int_equal(n, 5);
  assert_memory_equal(s, "hello", 5);
  s = "default";
  n = 99;
  assert_int_equal(
      sc_arg_str(a, "missing", false, 1, 64, &s, &n, err, sizeof err),
      NIMBUS_ENOTFOUND);
  assert_string_equal(s, "default");
  assert_int_equal(n, 99);
  assert_int_equal(
      sc_arg_str(a, "missing", true, 1, 64, &s, &n, err, sizeof err),
      NIMBUS_EINVAL);
  assert_string_equal(err, "args.missing is missing");
  assert_int_equal(sc_arg_str(a, "s", true, 6, 64, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.s must be a string of 6 to 64 bytes");
  assert_int_equal(sc_arg_str(a, "s", true, 1, 4, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.s must be a string of 1 to 4 bytes");
  assert_int_equal(sc_arg_str(a, "s", true, 4, 4, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.s must be a string of exactly 4 bytes");
  assert_int_equal(sc_arg_str(a, "n", true, 0, 64, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.n must be a string of 0 to 64 bytes");
  assert_int_equal(sc_arg_str(a, "nil", false, 0, 64, &s, &n, NULL, 0),
                   NIMBUS_EINVAL);
  /* No args at all reads as an empty map. */
  assert_int_equal(sc_arg_str(NULL, "s", false, 0, 64, &s, &n, err, 8),
                   NIMBUS_ENOTFOUND);
  doc_free(&d);
}

/* Free text (labels, names): a string as sc_arg_str reads it, and UTF-8
 * without a control character, C1 (U+0080-U+009F, CSI among them) as much
 * as C0 and DEL. */
static void test_arg_text(void **state) {
  (void)state;
  doc d;
  char err[256];
  const char *s = "default";
  size_t n = 99;
  /* {ok: "Caf\u00e9 \u00a0", c1: "a\u009b2J", nel: "\u0085", c0: "a\tb",
   *  del: "\u007f", bad: "a\x9b", num: 5} */
  const msgpack_object *a = doc_load(
      &d, "87 a2 6f 6b a8 43 61 66 c3 a9 20 c2 a0 a2 63 31 a5 61 c2 9b 32 4a "
          "a3 6e 65 6c a2 c2 85 a2 63 30 a3 61 09 62 a3 64 65 6c a1 7f "
          "a3 62 61 64 a2 61 9b a3 6e 75 6d 05");
  assert_int_equal(sc_arg_text(a, "ok", true, 0, 255, &s, &n, err, sizeof err),
                   0);
  assert_int_equal(n, 8);
  assert_memory_equal(s, "Caf\xc3\xa9 \xc2\xa0", 8);
  static const char *const controls[] = {"c1", "nel", "c0", "del"};
  for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++) {
    char want[64];
    s = "default";
    n = 99;
    snprintf(want, sizeof want, "args.%s holds a control character",
             controls[i]);
    assert_int_equal(
        sc_arg_text(a, controls[i], true, 0, 255, &s, &n, err, sizeof err),
        NIMBUS_EINVAL);
    assert_string_equal(err, want);
    assert_string_equal(s, "default"); /* outputs untouched on failure */
    assert_int_equal(n, 99);
  }
  assert_int_equal(sc_arg_text(a, "bad", true, 0, 255, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.bad is not valid UTF-8");
  /* Type, bounds and absence read as sc_arg_str reads them. */
  assert_int_equal(sc_arg_text(a, "num", true, 0, 255, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.num must be a string of 0 to 255 bytes");
  assert_int_equal(sc_arg_text(a, "ok", true, 0, 4, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.ok must be a string of 0 to 4 bytes");
  assert_int_equal(sc_arg_text(a, "x", false, 0, 4, &s, &n, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(sc_arg_text(a, "x", true, 0, 4, &s, &n, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.x is missing");
  doc_free(&d);
}

static void test_arg_int(void **state) {
  (void)state;
  doc d;
  const msgpack_object *a = doc_load(&d, ARGS);
  char err[256];
  int64_t v = 42;
  assert_int_equal(sc_arg_int(a, "n", true, 0, 10, &v, err, sizeof err), 0);
  assert_int_equal(v, 5);
  assert_int_equal(sc_arg_int(a, "neg", true, -3, 0, &v, err, sizeof err), 0);
  assert_int_equal(v, -3);
  /* A whole float is a whole number (PROTOCOL.md conventions). */
  assert_int_equal(sc_arg_int(a, "f", true, 0, 10, &v, err, sizeof err), 0);
  assert_int_equal(v, 2);
  v = 42;
  assert_int_equal(sc_arg_int(a, "h", true, 0, 10, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.h must be a whole number from 0 to 10");
  assert_int_equal(v, 42);
  assert_int_equal(sc_arg_int(a, "n", true, 0, 4, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.n must be a whole number from 0 to 4");
  assert_int_equal(sc_arg_int(a, "n", true, 6, 9, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_int_equal(sc_arg_int(a, "neg", true, 0, 1048576, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.neg must be a whole number from 0 to 1048576");
  /* 2^64-1 does not fit in int64_t even with the widest bounds. */
  assert_int_equal(
      sc_arg_int(a, "big", true, INT64_MIN, INT64_MAX, &v, err, sizeof err),
      NIMBUS_EINVAL);
  assert_int_equal(sc_arg_int(a, "s", true, 0, 10, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_int_equal(sc_arg_int(a, "b", true, 0, 10, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_int_equal(sc_arg_int(a, "x", false, 0, 10, &v, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(v, 42);
  assert_int_equal(sc_arg_int(a, "x", true, 0, 10, &v, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.x is missing");
  doc_free(&d);

  /* Floats at the edges of int64_t, NaN and infinity. */
  static const char *bad[] = {
      "81 a1 78 cb 43 e0 00 00 00 00 00 00", /* 2^63 */
      "81 a1 78 cb c3 e0 00 00 00 00 00 01", /* just below -2^63 */
      "81 a1 78 cb 7f f8 00 00 00 00 00 00", /* NaN */
      "81 a1 78 cb 7f f0 00 00 00 00 00 00", /* inf */
      "81 a1 78 ca 3f c0 00 00",             /* 1.5f */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    a = doc_load(&d, bad[i]);
    assert_int_equal(
        sc_arg_int(a, "x", true, INT64_MIN, INT64_MAX, &v, err, sizeof err),
        NIMBUS_EINVAL);
    doc_free(&d);
  }
  a = doc_load(&d, "81 a1 78 cb c3 e0 00 00 00 00 00 00"); /* -2^63 */
  assert_int_equal(
      sc_arg_int(a, "x", true, INT64_MIN, INT64_MAX, &v, err, sizeof err), 0);
  assert_true(v == INT64_MIN);
  doc_free(&d);
  a = doc_load(&d, "81 a1 78 ca 40 40 00 00"); /* 3.0f */
  assert_int_equal(sc_arg_int(a, "x", true, 0, 3, &v, err, sizeof err), 0);
  assert_int_equal(v, 3);
  doc_free(&d);
}

static void test_arg_num_bool(void **state) {
  (void)state;
  doc d;
  const msgpack_object *a = doc_load(&d, ARGS);
  char err[256];
  double x = -1;
  bool b = false;
  assert_int_equal(sc_arg_num(a, "h", true, 0, 2, &x, err, sizeof err), 0);
  assert_true(x == 1.5);
  assert_int_equal(sc_arg_num(a, "n", true, 0, 5, &x, err, sizeof err), 0);
  assert_true(x == 5.0);
  assert_int_equal(sc_arg_num(a, "neg", true, -3, 0, &x, err, sizeof err), 0);
  assert_true(x == -3.0);
  assert_int_equal(sc_arg_num(a, "h", true, 0, 1, &x, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.h must be a number from 0 to 1");
  assert_int_equal(sc_arg_num(a, "s", true, 0, 100, &x, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.s must be a number from 0 to 100");
  assert_int_equal(sc_arg_num(a, "x", false, 0, 100, &x, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_true(x == -3.0);
  assert_int_equal(sc_arg_bool(a, "b", true, &b, err, sizeof err), 0);
  assert_true(b);
  assert_int_equal(sc_arg_bool(a, "n", true, &b, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.n must be true or false");
  assert_int_equal(sc_arg_bool(a, "x", false, &b, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(sc_arg_bool(a, "x", true, &b, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.x is missing");
  doc_free(&d);
  a = doc_load(&d, "81 a1 78 cb 7f f8 00 00 00 00 00 00"); /* NaN */
  assert_int_equal(sc_arg_num(a, "x", true, -1e308, 1e308, &x, err, sizeof err),
                   NIMBUS_EINVAL);
  doc_free(&d);
}

static void test_arg_id_array(void **state) {
  (void)state;
  doc d;
  const msgpack_object *a = doc_load(&d, ARGS);
  char err[256], id[SC_ID_MAX + 1] = "keep";
  const msgpack_object *arr = NULL;
  assert_int_equal(sc_arg_id(a, "id", true, id, err, sizeof err), 0);
  assert_string_equal(id, ID);
  snprintf(id, sizeof id, "keep");
  assert_int_equal(sc_arg_id(a, "s", true, id, err, sizeof err), NIMBUS_EINVAL);
  assert_string_equal(err, "args.s must be a task id: 16-64 characters of "
                           "A-Z a-z 0-9 _ -");
  assert_string_equal(id, "keep");
  assert_int_equal(sc_arg_id(a, "n", true, id, err, sizeof err), NIMBUS_EINVAL);
  assert_int_equal(sc_arg_id(a, "task", false, id, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(sc_arg_id(a, "task", true, id, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.task is missing");
  assert_int_equal(sc_arg_array(a, "a", true, 2, &arr, err, sizeof err), 0);
  assert_non_null(arr);
  assert_int_equal(arr->via.array.size, 2);
  assert_int_equal(sc_arg_array(a, "a", true, 1, &arr, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_string_equal(err, "args.a must be an array of at most 1 item");
  assert_int_equal(sc_arg_array(a, "s", true, 9, &arr, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_int_equal(sc_arg_array(a, "x", false, 9, &arr, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  doc_free(&d);
}

/* ---- Canonical form ---------------------------------------------------- */

/* Builds the task {v: 1, id: ID, args: <args_hex>?, data: <data_hex>?}
 * and returns the canonical bytes for `type` in *out (caller destroys). */
static void canonical_of(const char *type, const char *args_hex,
                         const char *data_hex, msgpack_sbuffer *out) {
  uint8_t args[512], data[64];
  size_t an = args_hex ? unhex(args_hex, args, sizeof args) : 0;
  size_t dn = data_hex ? unhex(data_hex, data, sizeof data) : 0;
  msgpack_sbuffer enc;
  sc_task t;
  char err[256];
  msgpack_sbuffer_init(&enc);
  assert_int_equal(sc_task_encode(&enc, ID, args_hex ? args : NULL, an, data,
                                  dn, data_hex != NULL),
                   0);
  if (sc_task_decode((const uint8_t *)enc.data, enc.size, &t, err,
                     sizeof err) != 0)
    fail_msg("%s", err);
  msgpack_sbuffer_init(out);
  assert_int_equal(sc_task_canonical(out, type, &t), 0);
  sc_task_fini(&t);
  msgpack_sbuffer_destroy(&enc);
}

static bool same(const char *t1, const char *a1, const char *d1, const char *t2,
                 const char *a2, const char *d2) {
  msgpack_sbuffer x, y;
  canonical_of(t1, a1, d1, &x);
  canonical_of(t2, a2, d2, &y);
  bool eq = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
  msgpack_sbuffer_destroy(&x);
  msgpack_sbuffer_destroy(&y);
  return eq;
}

static void test_canonical_bytes(void **state) {
  (void)state;
  /* ["diag.echo", {"a": "x", "b": 1}, nil] from {b: 1.0, a: "x"}. */
  msgpack_sbuffer c;
  uint8_t want[64];
  size_t n = unhex("93 a9 64 69 61 67 2e 65 63 68 6f 82 a1 61 a1 78 a1 62 01 "
                   "c0",
                   want, sizeof want);
  canonical_of("diag.echo", "82 a1 62 cb 3f f0 00 00 00 00 00 00 a1 61 a1 78",
               NULL, &c);
  assert_int_equal(c.size, n);
  assert_memory_equal(c.data, want, n);
  msgpack_sbuffer_destroy(&c);
  /* With data and no args: args is the empty map. */
  n = unhex("93 a4 70 69 6e 67 80 c4 02 01 02", want, sizeof want);
  canonical_of("ping", NULL, "01 02", &c);
  assert_int_equal(c.size, n);
  assert_memory_equal(c.data, want, n);
  /* Appends: the buffer's earlier content stays. */
  sc_task t;
  memset(&t, 0, sizeof t);
  assert_int_equal(sc_task_canonical(&c, "ping", &t), 0);
  assert_int_equal(c.size, n + 8);
  assert_memory_equal(c.data, want, n);
  assert_int_equal(sc_task_canonical(NULL, "ping", &t), NIMBUS_EINVAL);
  assert_int_equal(sc_task_canonical(&c, NULL, &t), NIMBUS_EINVAL);
  msgpack_sbuffer_destroy(&c);
}

/* A writer that keeps what it is given in pieces, or refuses after `cap`. */
typedef struct pieces {
  char buf[256];
  size_t len, cap, calls;
} pieces;

static int pieces_write(void *data, const char *p, size_t n) {
  pieces *w = data;
  if (w->len + n > w->cap)
    return -1;
  memcpy(w->buf + w->len, p, n);
  w->len += n;
  w->calls++;
  return 0;
}

static void test_canonical_write(void **state) {
  (void)state;
  msgpack_sbuffer c;
  msgpack_sbuffer_init(&c);
  /* The streamed bytes are the collected ones, whatever the pieces. */
  canonical_of("diag.echo", "82 a1 62 cb 3f f0 00 00 00 00 00 00 a1 61 a1 78",
               "01 02 03", &c);
  doc d;
  sc_task t;
  memset(&t, 0, sizeof t);
  t.args = doc_load(&d, "82 a1 62 cb 3f f0 00 00 00 00 00 00 a1 61 a1 78");
  static const uint8_t data[] = {1, 2, 3};
  t.data = data;
  t.data_len = sizeof data;
  t.has_data = true;
  pieces w = {.cap = sizeof w.buf};
  assert_int_equal(sc_task_canonical_write(&w, pieces_write, "diag.echo", &t,
                                           SC_CANON_DATA_BYTES),
                   0);
  assert_true(w.calls > 1);
  assert_int_equal(w.len, c.size);
  assert_memory_equal(w.buf, c.data, c.size);
  /* With the data as its XXH3-128: the same bytes up to the data, which is
   * a 16-byte bin (c4 10) of nb_xxh128 of it. */
  pieces x = {.cap = sizeof x.buf};
  assert_int_equal(sc_task_canonical_write(&x, pieces_write, "diag.echo", &t,
                                           SC_CANON_DATA_XXH128),
                   0);
  size_t head = c.size - 5; /* c4 03 01 02 03 */
  assert_int_equal(x.len, head + 18);
  assert_memory_equal(x.buf, c.data, head);
  uint8_t sum[16];
  nb_xxh128(data, sizeof data, sum);
  assert_int_equal((uint8_t)x.buf[head], 0xc4);
  assert_int_equal((uint8_t)x.buf[head + 1], 16);
  assert_memory_equal(x.buf + head + 2, sum, 16);
  /* Other data, another sum; no data stays nil. */
  static const uint8_t other[] = {1, 2, 4};
  t.data = other;
  pieces y = {.cap = sizeof y.buf};
  assert_int_equal(sc_task_canonical_write(&y, pieces_write, "diag.echo", &t,
                                           SC_CANON_DATA_XXH128),
                   0);
  assert_int_equal(y.len, x.len);
  assert_memory_not_equal(y.buf, x.buf, x.len);
  t.has_data = false;
  pieces z = {.cap = sizeof z.buf};
  assert_int_equal(sc_task_canonical_write(&z, pieces_write, "diag.echo", &t,
                                           SC_CANON_DATA_XXH128),
                   0);
  assert_int_equal((uint8_t)z.buf[z.len - 1], 0xc0);
  t.has_data = true;
  t.data = data;
  /* A writer that fails makes the call fail. */
  pieces small = {.cap = 4};
  assert_int_equal(sc_task_canonical_write(&small, pieces_write, "diag.echo",
                                           &t, SC_CANON_DATA_BYTES),
                   NIMBUS_ENOMEM);
  assert_int_equal(
      sc_task_canonical_write(&w, NULL, "diag.echo", &t, SC_CANON_DATA_BYTES),
      NIMBUS_EINVAL);
  assert_int_equal(sc_task_canonical_write(&w, pieces_write, "diag.echo", &t,
                                           (sc_canon_data)7),
                   NIMBUS_EINVAL);
  doc_free(&d);
  msgpack_sbuffer_destroy(&c);
}

static void test_canonical_equal(void **state) {
  (void)state;
  /* Key order at the top of args and deep inside. */
  assert_true(same("t", "82 a1 61 01 a1 62 02", NULL, "t",
                   "82 a1 62 02 a1 61 01", NULL));
  assert_true(same("t", "81 a1 6d 92 82 a1 78 01 a1 79 02 c0", NULL, "t",
                   "81 a1 6d 92 82 a1 79 02 a1 78 01 c0", NULL));
  /* Bytewise order: "B" < "a" < "aa" < "b", whatever order they came in. */
  assert_true(same("t", "84 a1 42 00 a1 61 01 a2 61 61 02 a1 62 03", NULL, "t",
                   "84 a1 62 03 a2 61 61 02 a1 61 01 a1 42 00", NULL));
  /* 1 and 1.0 (float64 and float32), -2 and -2.0, 0 and -0.0. */
  assert_true(same("t", "81 a1 6e 01", NULL, "t",
                   "81 a1 6e cb 3f f0 00 00 00 00 00 00", NULL));
  assert_true(
      same("t", "81 a1 6e 01", NULL, "t", "81 a1 6e ca 3f 80 00 00", NULL));
  assert_true(same("t", "81 a1 6e fe", NULL, "t",
                   "81 a1 6e cb c0 00 00 00 00 00 00 00", NULL));
  assert_true(same("t", "81 a1 6e 00", NULL, "t",
                   "81 a1 6e cb 80 00 00 00 00 00 00 00", NULL));
  /* 1.5 as float32 and float64 is the same value. */
  assert_true(same("t", "81 a1 6e ca 3f c0 00 00", NULL, "t",
                   "81 a1 6e cb 3f f8 00 00 00 00 00 00", NULL));
  /* Wider encodings of the same int or string. */
  assert_true(same("t", "81 a1 6e 05", NULL, "t",
                   "81 a1 6e cf 00 00 00 00 00 00 00 05", NULL));
  assert_true(same("t", "81 a1 6e d0 05", NULL, "t", "81 a1 6e 05", NULL));
  assert_true(
      same("t", "81 a1 73 a2 68 69", NULL, "t", "81 a1 73 d9 02 68 69", NULL));
  assert_true(same("t", "81 d9 01 73 01", NULL, "t", "81 a1 73 01", NULL));
  assert_true(same("t", "81 a1 62 c4 01 07", NULL, "t",
                   "81 a1 62 c6 00 00 00 01 07", NULL));
  /* Absent args are the empty map. */
  assert_true(same("t", NULL, NULL, "t", "80", NULL));
  assert_true(same("t", NULL, "01 02", "t", "80", "01 02"));
}

static void test_canonical_differ(void **state) {
  (void)state;
  const char *a = "82 a1 61 01 a1 62 02";
  assert_false(same("t", a, NULL, "u", a, NULL));
  assert_false(same("t", a, NULL, "t", "82 a1 61 01 a1 62 03", NULL));
  assert_false(same("t", a, NULL, "t", "83 a1 61 01 a1 62 02 a1 63 c0", NULL));
  assert_false(same("t", a, NULL, "t", "81 a1 61 01", NULL));
  assert_false(same("t", a, "01", "t", a, "02"));
  assert_false(same("t", a, "01", "t", a, "01 00"));
  /* Data absent and data empty are different tasks. */
  assert_false(same("t", a, NULL, "t", a, ""));
  assert_false(same("t", "81 a1 6e 01", NULL, "t",
                    "81 a1 6e cb 3f f8 00 00 00 00 00 00", NULL));
  assert_false(same("t", "81 a1 6e 01", NULL, "t", "81 a1 6e a1 31", NULL));
  assert_false(same("t", "81 a1 6e 01", NULL, "t", "81 a1 6e c3", NULL));
  assert_false(same("t", "81 a1 6e c0", NULL, "t", "81 a1 6e c2", NULL));
  /* str and bin of the same bytes are different values. */
  assert_false(
      same("t", "81 a1 73 a1 61", NULL, "t", "81 a1 73 c4 01 61", NULL));
  /* Array order matters; map key names matter. */
  assert_false(
      same("t", "81 a1 6c 92 01 02", NULL, "t", "81 a1 6c 92 02 01", NULL));
  assert_false(same("t", "81 a1 61 01", NULL, "t", "81 a1 41 01", NULL));
  /* A float that is not whole stays a float: 0.1f is not 0.1. */
  assert_false(same("t", "81 a1 6e ca 3d cc cc cd", NULL, "t",
                    "81 a1 6e cb 3f b9 99 99 99 99 99 9a", NULL));
  /* -1 is not 2^64-1. */
  assert_false(same("t", "81 a1 6e ff", NULL, "t",
                    "81 a1 6e cf ff ff ff ff ff ff ff ff", NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_map_get),
      cmocka_unit_test(test_arg_str),
      cmocka_unit_test(test_arg_text),
      cmocka_unit_test(test_arg_int),
      cmocka_unit_test(test_arg_num_bool),
      cmocka_unit_test(test_arg_id_array),
      cmocka_unit_test(test_canonical_bytes),
      cmocka_unit_test(test_canonical_write),
      cmocka_unit_test(test_canonical_equal),
      cmocka_unit_test(test_canonical_differ),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
