/* Unit tests of the protocol module's envelopes: the golden messages in
 * schemas/golden byte for byte in both directions, every malformed input
 * the decoders must refuse (with the sentence they must give and the id
 * they must still echo), and the encoders' refusals. Argument readers and
 * the canonical form are in test_codec_args.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_hex.h"

#include "nimbus/errors.h"
#include "sc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID "3f2b8c1e-9d4a-4b6f-8e21-7c5d0a9f1b36"
#define ID2 "Kx9_mQ2-vT7zR4wL8nB3"
#define SHA "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define TRUNC "the message ends before its declared length"
#define VERR                                                                   \
  "unsupported protocol version: field v must be 1 (this cloud speaks "        \
  "protocol version 1)"
#define IDERR "field id must be 16-64 characters of A-Z a-z 0-9 _ -"

/* ---- Helpers ----------------------------------------------------------- */

/* A message under construction. */
typedef struct mb {
  msgpack_sbuffer sb;
  msgpack_packer pk;
} mb;

static void mb_init(mb *m) {
  msgpack_sbuffer_init(&m->sb);
  msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mb_fini(mb *m) { msgpack_sbuffer_destroy(&m->sb); }

static void mb_str(mb *m, const char *s) {
  assert_int_equal(msgpack_pack_str_with_body(&m->pk, s, strlen(s)), 0);
}

static void mb_map(mb *m, size_t n) {
  assert_int_equal(msgpack_pack_map(&m->pk, n), 0);
}

static void mb_int(mb *m, int64_t v) {
  assert_int_equal(msgpack_pack_int64(&m->pk, v), 0);
}

static void mb_raw(mb *m, const char *hex) {
  uint8_t buf[4096];
  size_t n = unhex(hex, buf, sizeof buf);
  assert_int_equal(msgpack_sbuffer_write(&m->sb, (const char *)buf, n), 0);
}

static const char *source_dir(void) {
  const char *d = getenv("NIMBUS_SOURCE_DIR");
#ifdef NIMBUS_SOURCE_DIR_DEFAULT
  if (d == NULL || *d == '\0')
    d = NIMBUS_SOURCE_DIR_DEFAULT;
#endif
  if (d == NULL)
    fail_msg("NIMBUS_SOURCE_DIR is not set");
  return d;
}

/* Reads schemas/golden/<name>.hex; the caller frees *out. */
static size_t golden(const char *name, uint8_t **out) {
  char path[1024];
  snprintf(path, sizeof path, "%s/schemas/golden/%s.hex", source_dir(), name);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    fail_msg("cannot open %s", path);
  char *text = malloc(1 << 20);
  assert_non_null(text);
  size_t tn = fread(text, 1, (1 << 20) - 1, f);
  fclose(f);
  text[tn] = '\0';
  *out = malloc(tn / 2 + 1);
  assert_non_null(*out);
  size_t n = unhex(text, *out, tn / 2 + 1);
  free(text);
  return n;
}

static void expect_bytes(const msgpack_sbuffer *sb, const char *name) {
  uint8_t *want = NULL;
  size_t n = golden(name, &want);
  if (sb->size != n || memcmp(sb->data, want, n) != 0) {
    print_error("%s: encoded %zu bytes, golden has %zu\n", name, sb->size, n);
    for (size_t i = 0; i < sb->size && i < n; i++) {
      if ((uint8_t)sb->data[i] != want[i]) {
        print_error("first difference at byte %zu: %02x, golden %02x\n", i,
                    (uint8_t)sb->data[i], want[i]);
        break;
      }
    }
    free(want);
    fail();
  }
  free(want);
}

/* Decodes with the named decoder; fills id (task only) and err. */
static int decode_with(const char *dec, const uint8_t *b, size_t n, char *id,
                       char *err, size_t errcap) {
  int rc;
  id[0] = '\0';
  if (strcmp(dec, "task") == 0) {
    sc_task t;
    rc = sc_task_decode(b, n, &t, err, errcap);
    memcpy(id, t.id, sizeof t.id);
    sc_task_fini(&t);
  } else if (strcmp(dec, "reply") == 0) {
    sc_reply r;
    rc = sc_reply_decode(b, n, &r, err, errcap);
    memcpy(id, r.id, sizeof r.id);
    sc_reply_fini(&r);
  } else if (strcmp(dec, "notice") == 0) {
    sc_notice nt;
    rc = sc_notice_decode(b, n, &nt, err, errcap);
    sc_notice_fini(&nt);
  } else {
    msgpack_object o;
    msgpack_zone *z = NULL;
    rc = sc_value_decode(b, n, &o, &z, err, errcap);
    if (rc == 0)
      msgpack_zone_free(z);
    else
      assert_null(z);
  }
  return rc;
}

/* Decodes a task that must fail with `want_err`, echoing `want_id`. */
static void task_fails(const uint8_t *b, size_t n, const char *want_err,
                       const char *want_id) {
  sc_task t;
  char err[256];
  int rc = sc_task_decode(b, n, &t, err, sizeof err);
  assert_int_equal(rc, NIMBUS_EPROTO);
  assert_string_equal(err, want_err);
  assert_string_equal(t.id, want_id);
  assert_null(t.zone_);
  sc_task_fini(&t);
}

static void task_fails_mb(mb *m, const char *want_err, const char *want_id) {
  task_fails((const uint8_t *)m->sb.data, m->sb.size, want_err, want_id);
}

/* A task {v: 1, id: ID, args: <hex>}. */
static void task_with_args(mb *m, const char *args_hex) {
  mb_init(m);
  mb_map(m, 3);
  mb_str(m, "v");
  mb_int(m, 1);
  mb_str(m, "id");
  mb_str(m, ID);
  mb_str(m, "args");
  mb_raw(m, args_hex);
}

static int value_rc(const uint8_t *b, size_t n, char *err, size_t cap) {
  msgpack_object o;
  msgpack_zone *z = NULL;
  int rc = sc_value_decode(b, n, &o, &z, err, cap);
  if (rc == 0)
    msgpack_zone_free(z);
  else
    assert_null(z);
  return rc;
}

static void value_fails_hex(const char *hex, const char *want_err) {
  uint8_t b[4096];
  char err[256];
  size_t n = unhex(hex, b, sizeof b);
  assert_int_equal(value_rc(b, n, err, sizeof err), NIMBUS_EPROTO);
  assert_string_equal(err, want_err);
}

static void value_ok_hex(const char *hex) {
  uint8_t b[4096];
  char err[256];
  size_t n = unhex(hex, b, sizeof b);
  int rc = value_rc(b, n, err, sizeof err);
  if (rc != 0)
    fail_msg("%s: %s", hex, err);
}

/* The golden files that hold valid messages, with their decoder. */
static const struct {
  const char *name, *dec;
} goods[] = {
    {"task_blob_put", "task"},
    {"task_no_args", "task"},
    {"task_ping", "task"},
    {"reply_ok_result", "reply"},
    {"reply_ok_data", "reply"},
    {"reply_error_help", "reply"},
    {"reply_error_noid", "reply"},
    {"reply_progress", "reply"},
    {"notice_agent_offer", "notice"},
    {"task_share_create", "task"},
    {"reply_share_get", "reply"},
    {"notice_share_new", "notice"},
    {"task_agent_answer", "task"},
    {"reply_agent_get", "reply"},
};

/* ---- Golden: encode ---------------------------------------------------- */

static void test_golden_encode_tasks(void **state) {
  (void)state;
  mb args;
  msgpack_sbuffer out;

  mb_init(&args);
  mb_map(&args, 4);
  mb_str(&args, "upload");
  mb_str(&args, "photos-2024");
  mb_str(&args, "offset");
  mb_int(&args, 0);
  mb_str(&args, "size");
  mb_int(&args, 5);
  mb_str(&args, "sha256");
  mb_str(&args, SHA);
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_task_encode(&out, ID, (const uint8_t *)args.sb.data,
                                  args.sb.size, (const uint8_t *)"hello", 5,
                                  true),
                   0);
  expect_bytes(&out, "task_blob_put");
  msgpack_sbuffer_destroy(&out);
  mb_fini(&args);

  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_task_encode(&out, ID2, NULL, 0, NULL, 0, false), 0);
  expect_bytes(&out, "task_no_args");
  msgpack_sbuffer_destroy(&out);

  msgpack_sbuffer_init(&out);
  assert_int_equal(
      sc_task_encode(&out, ID2, (const uint8_t *)"\x80", 1, NULL, 0, false), 0);
  expect_bytes(&out, "task_ping");
  msgpack_sbuffer_destroy(&out);
}

static void test_golden_encode_replies(void **state) {
  (void)state;
  mb res;
  msgpack_sbuffer out;
  sc_reply_enc r;

  mb_init(&res);
  mb_map(&res, 5);
  mb_str(&res, "worker");
  mb_str(&res, "w-1");
  mb_str(&res, "ts");
  mb_int(&res, 1700000000000);
  mb_str(&res, "versions");
  msgpack_pack_array(&res.pk, 1);
  mb_int(&res, 1);
  mb_str(&res, "types");
  msgpack_pack_array(&res.pk, 2);
  mb_str(&res, "ping");
  mb_str(&res, "task.status");
  mb_str(&res, "limits");
  mb_map(&res, 2);
  mb_str(&res, "segment");
  mb_int(&res, SC_SEGMENT);
  mb_str(&res, "message");
  mb_int(&res, SC_MAX_MESSAGE);
  memset(&r, 0, sizeof r);
  r.id = ID2;
  r.status = SC_STATUS_OK;
  r.result = (const uint8_t *)res.sb.data;
  r.result_len = res.sb.size;
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_reply_encode(&out, &r), 0);
  expect_bytes(&out, "reply_ok_result");
  msgpack_sbuffer_destroy(&out);
  mb_fini(&res);

  mb_init(&res);
  mb_map(&res, 2);
  mb_str(&res, "size");
  mb_int(&res, 5);
  mb_str(&res, "offset");
  mb_int(&res, 0);
  memset(&r, 0, sizeof r);
  r.id = ID;
  r.status = SC_STATUS_OK;
  r.result = (const uint8_t *)res.sb.data;
  r.result_len = res.sb.size;
  r.data = (const uint8_t *)"hello";
  r.data_len = 5;
  r.has_data = true;
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_reply_encode(&out, &r), 0);
  expect_bytes(&out, "reply_ok_data");
  msgpack_sbuffer_destroy(&out);
  mb_fini(&res);

  mb_init(&res);
  mb_map(&res, 1);
  mb_str(&res, "retry_after");
  mb_int(&res, 1500);
  memset(&r, 0, sizeof r);
  r.id = ID;
  r.status = SC_STATUS_ERROR;
  r.code = 429;
  r.error = "too many tasks in flight";
  r.help = "wait for a reply before sending more tasks";
  r.result = (const uint8_t *)res.sb.data;
  r.result_len = res.sb.size;
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_reply_encode(&out, &r), 0);
  expect_bytes(&out, "reply_error_help");
  msgpack_sbuffer_destroy(&out);
  mb_fini(&res);

  memset(&r, 0, sizeof r);
  r.id = "";
  r.status = SC_STATUS_ERROR;
  r.code = 400;
  r.error = "the task is not a msgpack map";
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_reply_encode(&out, &r), 0);
  expect_bytes(&out, "reply_error_noid");
  msgpack_sbuffer_destroy(&out);

  memset(&r, 0, sizeof r);
  r.id = ID;
  r.status = SC_STATUS_PROGRESS;
  r.done = 262144;
  r.total = 1048576;
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_reply_encode(&out, &r), 0);
  expect_bytes(&out, "reply_progress");
  msgpack_sbuffer_destroy(&out);
}

static void test_golden_encode_notice(void **state) {
  (void)state;
  mb f;
  msgpack_object o;
  msgpack_zone *z = NULL;
  msgpack_sbuffer out;
  char err[256];

  mb_init(&f);
  mb_map(&f, 5);
  mb_str(&f, "offer");
  mb_str(&f, "offer-7Hq2");
  mb_str(&f, "platform");
  mb_str(&f, "linux-x86_64");
  mb_str(&f, "version");
  mb_str(&f, "1.2.0");
  mb_str(&f, "size");
  mb_int(&f, 1048576);
  mb_str(&f, "text");
  mb_str(&f, "Nimbus agent 1.2.0 is available");
  assert_int_equal(sc_value_decode((const uint8_t *)f.sb.data, f.sb.size, &o,
                                   &z, err, sizeof err),
                   0);
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_notice_encode(&out, "agent.offer", &o), 0);
  expect_bytes(&out, "notice_agent_offer");
  msgpack_sbuffer_destroy(&out);
  msgpack_zone_free(z);
  mb_fini(&f);

  /* No fields at all: just v and kind. */
  msgpack_sbuffer_init(&out);
  assert_int_equal(sc_notice_encode(&out, "x", NULL), 0);
  assert_int_equal(out.size, 11);
  assert_memory_equal(out.data, "\x82\xa1v\x01\xa4kind\xa1x", 11);
  msgpack_sbuffer_destroy(&out);
}

/* ---- Golden: decode ---------------------------------------------------- */

static bool str_is(const msgpack_object *o, const char *s) {
  return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static void test_golden_decode_tasks(void **state) {
  (void)state;
  uint8_t *b = NULL;
  size_t n;
  sc_task t;
  char err[256];

  n = golden("task_blob_put", &b);
  assert_int_equal(sc_task_decode(b, n, &t, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_string_equal(t.id, ID);
  assert_int_equal(t.args->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(t.args->via.map.size, 4);
  assert_true(str_is(sc_map_get(t.args, "upload"), "photos-2024"));
  assert_true(str_is(sc_map_get(t.args, "sha256"), SHA));
  assert_int_equal(sc_map_get(t.args, "size")->via.u64, 5);
  assert_true(t.has_data);
  assert_int_equal(t.data_len, 5);
  assert_memory_equal(t.data, "hello", 5);
  /* Inline bytes point into the caller's buffer: no copy. */
  assert_true(t.data >= b && t.data + t.data_len <= b + n);
  sc_task_fini(&t);
  sc_task_fini(&t); /* a second fini is harmless */
  free(b);

  n = golden("task_no_args", &b);
  assert_int_equal(sc_task_decode(b, n, &t, err, sizeof err), 0);
  assert_string_equal(t.id, ID2);
  assert_non_null(t.args);
  assert_int_equal(t.args->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(t.args->via.map.size, 0);
  assert_false(t.has_data);
  assert_null(t.data);
  sc_task_fini(&t);
  free(b);

  n = golden("task_ping", &b);
  assert_int_equal(sc_task_decode(b, n, &t, err, sizeof err), 0);
  assert_string_equal(t.id, ID2);
  assert_int_equal(t.args->type, MSGPACK_OBJECT_MAP);
  assert_int_equal(t.args->via.map.size, 0);
  sc_task_fini(&t);
  free(b);
}

static void test_golden_decode_replies(void **state) {
  (void)state;
  uint8_t *b = NULL;
  size_t n;
  sc_reply r;
  char err[256];
  const msgpack_object *o;

  n = golden("reply_ok_result", &b);
  assert_int_equal(sc_reply_decode(b, n, &r, err, sizeof err), 0);
  assert_string_equal(r.id, ID2);
  assert_int_equal(r.status, SC_STATUS_OK);
  assert_int_equal(r.code, 0);
  assert_null(r.error);
  assert_null(r.help);
  assert_non_null(r.result);
  assert_true(str_is(sc_map_get(r.result, "worker"), "w-1"));
  assert_int_equal(sc_map_get(r.result, "ts")->via.u64, 1700000000000ULL);
  o = sc_map_get(sc_map_get(r.result, "limits"), "segment");
  assert_non_null(o);
  assert_int_equal(o->via.u64, SC_SEGMENT);
  o = sc_map_get(r.result, "types");
  assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
  assert_true(str_is(&o->via.array.ptr[1], "task.status"));
  assert_false(r.has_data);
  sc_reply_fini(&r);
  free(b);

  n = golden("reply_ok_data", &b);
  assert_int_equal(sc_reply_decode(b, n, &r, err, sizeof err), 0);
  assert_true(r.has_data);
  assert_int_equal(r.data_len, 5);
  assert_memory_equal(r.data, "hello", 5);
  assert_int_equal(sc_map_get(r.result, "size")->via.u64, 5);
  sc_reply_fini(&r);
  free(b);

  n = golden("reply_error_help", &b);
  assert_int_equal(sc_reply_decode(b, n, &r, err, sizeof err), 0);
  assert_string_equal(r.id, ID);
  assert_int_equal(r.status, SC_STATUS_ERROR);
  assert_int_equal(r.code, 429);
  assert_int_equal(r.error_len, strlen("too many tasks in flight"));
  assert_memory_equal(r.error, "too many tasks in flight", r.error_len);
  assert_int_equal(r.help_len,
                   strlen("wait for a reply before sending more tasks"));
  assert_memory_equal(r.help, "wait for a reply before sending more tasks",
                      r.help_len);
  assert_int_equal(sc_map_get(r.result, "retry_after")->via.u64, 1500);
  sc_reply_fini(&r);
  free(b);

  n = golden("reply_error_noid", &b);
  assert_int_equal(sc_reply_decode(b, n, &r, err, sizeof err), 0);
  assert_string_equal(r.id, "");
  assert_int_equal(r.code, 400);
  assert_null(r.result);
  sc_reply_fini(&r);
  free(b);

  n = golden("reply_progress", &b);
  assert_int_equal(sc_reply_decode(b, n, &r, err, sizeof err), 0);
  assert_int_equal(r.status, SC_STATUS_PROGRESS);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.done, 262144);
  assert_int_equal(r.total, 1048576);
  sc_reply_fini(&r);
  free(b);
}

static void test_golden_decode_notice(void **state) {
  (void)state;
  uint8_t *b = NULL;
  size_t n = golden("notice_agent_offer", &b);
  sc_notice nt;
  char err[256];
  assert_int_equal(sc_notice_decode(b, n, &nt, err, sizeof err), 0);
  assert_string_equal(nt.kind, "agent.offer");
  assert_int_equal(nt.fields->via.map.size, 7);
  assert_true(str_is(sc_map_get(nt.fields, "offer"), "offer-7Hq2"));
  assert_true(str_is(sc_map_get(nt.fields, "platform"), "linux-x86_64"));
  assert_true(str_is(sc_map_get(nt.fields, "version"), "1.2.0"));
  assert_true(
      str_is(sc_map_get(nt.fields, "text"), "Nimbus agent 1.2.0 is available"));
  assert_int_equal(sc_map_get(nt.fields, "size")->via.u64, 1048576);
  sc_notice_fini(&nt);
  free(b);
}

/* Every valid golden message is also a valid value, and a task is not a
 * reply: the decoders do not accept each other's messages. */
static void test_golden_cross(void **state) {
  (void)state;
  char id[SC_ID_MAX + 1], err[256];
  for (size_t i = 0; i < sizeof goods / sizeof goods[0]; i++) {
    uint8_t *b = NULL;
    size_t n = golden(goods[i].name, &b);
    assert_int_equal(decode_with("value", b, n, id, err, sizeof err), 0);
    if (strcmp(goods[i].dec, "task") == 0) {
      assert_int_equal(decode_with("reply", b, n, id, err, sizeof err),
                       NIMBUS_EPROTO);
      assert_string_equal(
          err, "field status must be \"ok\", \"error\" or \"progress\"");
    }
    if (strcmp(goods[i].dec, "reply") == 0) {
      assert_int_equal(decode_with("notice", b, n, id, err, sizeof err),
                       NIMBUS_EPROTO);
    }
    free(b);
  }
}

/* ---- Golden: malformed ------------------------------------------------- */

static void test_golden_malformed(void **state) {
  (void)state;
  char path[1024], line[1024];
  size_t listed = 0, files = 0;
  snprintf(path, sizeof path, "%s/schemas/golden/malformed/expected.tsv",
           source_dir());
  FILE *f = fopen(path, "r");
  if (f == NULL)
    fail_msg("cannot open %s", path);
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n')
      continue;
    line[strcspn(line, "\n")] = '\0';
    char *name = line, *dec = strchr(name, '\t');
    assert_non_null(dec);
    *dec++ = '\0';
    char *want_id = strchr(dec, '\t');
    assert_non_null(want_id);
    *want_id++ = '\0';
    char *want_err = strchr(want_id, '\t');
    assert_non_null(want_err);
    *want_err++ = '\0';
    if (strcmp(want_id, "-") == 0)
      want_id = "";

    char gname[1100], id[SC_ID_MAX + 1], err[256];
    uint8_t *b = NULL;
    snprintf(gname, sizeof gname, "malformed/%s", name);
    size_t n = golden(gname, &b);
    int rc = decode_with(dec, b, n, id, err, sizeof err);
    if (rc != NIMBUS_EPROTO || strcmp(err, want_err) != 0 ||
        strcmp(id, want_id) != 0)
      fail_msg("%s: rc %d, error \"%s\", id \"%s\"; expected EPROTO, "
               "\"%s\", \"%s\"",
               name, rc, err, id, want_err, want_id);
    free(b);
    listed++;
  }
  fclose(f);

  /* A malformed file nobody lists would silently test nothing. */
  snprintf(path, sizeof path, "%s/schemas/golden/malformed", source_dir());
  DIR *d = opendir(path);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t l = strlen(e->d_name);
    if (l > 4 && strcmp(e->d_name + l - 4, ".hex") == 0)
      files++;
  }
  closedir(d);
  assert_int_equal(listed, files);
  assert_true(listed >= 25);
}

/* ---- Field rules ------------------------------------------------------- */

/* A task {v: <v_hex>, id: <id>}. */
static void task_v_id(mb *m, const char *v_hex, const char *id) {
  mb_init(m);
  mb_map(m, 2);
  mb_str(m, "v");
  mb_raw(m, v_hex);
  mb_str(m, "id");
  mb_str(m, id);
}

static void test_version(void **state) {
  (void)state;
  static const char *bad[] = {
      "00",                 /* 0 */
      "02",                 /* 2 */
      "a131",               /* "1" */
      "cb3ff8000000000000", /* 1.5 */
      "ff",                 /* -1 */
      "c3",                 /* true */
      "c0",                 /* nil */
      "cfffffffffffffffff", /* 2^64-1 */
      "cb7ff8000000000000", /* NaN */
      "91 01",              /* [1] */
      "c4 01 01",           /* bin */
  };
  static const char *good[] = {
      "01",
      "cb3ff0000000000000", /* 1.0 as float64: whole floats count */
      "ca3f800000",         /* 1.0 as float32 */
      "cc01",               /* 1 in a wider int form */
      "d30000000000000001",
  };
  mb m;
  sc_task t;
  char err[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    task_v_id(&m, bad[i], ID);
    task_fails_mb(&m, VERR, ID);
    mb_fini(&m);
  }
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    task_v_id(&m, good[i], ID);
    int rc = sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t, err,
                            sizeof err);
    if (rc != 0)
      fail_msg("v %s: %s", good[i], err);
    sc_task_fini(&t);
    mb_fini(&m);
  }
  /* v missing. */
  mb_init(&m);
  mb_map(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  task_fails_mb(&m, VERR, ID);
  mb_fini(&m);
}

static void test_id_rules(void **state) {
  (void)state;
  char id[80];
  mb m;
  sc_task t;
  char err[256];
  /* Lengths around the bounds. */
  for (size_t len = 0; len <= 70; len++) {
    memset(id, 'a', len);
    id[len] = '\0';
    task_v_id(&m, "01", id);
    int rc = sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t, err,
                            sizeof err);
    if (len >= SC_ID_MIN && len <= SC_ID_MAX) {
      assert_int_equal(rc, 0);
      assert_string_equal(t.id, id);
    } else {
      assert_int_equal(rc, NIMBUS_EPROTO);
      assert_string_equal(err, IDERR);
      assert_string_equal(t.id, "");
    }
    sc_task_fini(&t);
    mb_fini(&m);
  }
  /* Every byte that is not in [A-Za-z0-9_-], at the start and the end. */
  for (int c = 0; c < 256; c++) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    for (int where = 0; where < 2; where++) {
      memcpy(id, ID, sizeof ID);
      id[where ? sizeof ID - 2 : 0] = (char)c;
      mb_init(&m);
      mb_map(&m, 2);
      mb_str(&m, "v");
      mb_int(&m, 1);
      mb_str(&m, "id");
      msgpack_pack_str_with_body(&m.pk, id, sizeof ID - 1);
      int rc = sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t, err,
                              sizeof err);
      assert_int_equal(rc, ok ? 0 : NIMBUS_EPROTO);
      if (!ok) {
        assert_string_equal(err, IDERR);
        assert_string_equal(t.id, "");
      }
      sc_task_fini(&t);
      mb_fini(&m);
    }
  }
  /* Not a string: int, bin holding valid characters, nil, array. */
  static const char *types[] = {"01", "c4 10 61616161616161616161616161616161",
                                "c0", "90"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    mb_init(&m);
    mb_map(&m, 2);
    mb_str(&m, "v");
    mb_int(&m, 1);
    mb_str(&m, "id");
    mb_raw(&m, types[i]);
    task_fails_mb(&m, IDERR, "");
    mb_fini(&m);
  }
  /* Missing. */
  mb_init(&m);
  mb_map(&m, 1);
  mb_str(&m, "v");
  mb_int(&m, 1);
  task_fails_mb(&m,
                "field id is missing; it must be "
                "16-64 characters of "
                "A-Z a-z 0-9 _ -",
                "");
  mb_fini(&m);
}

static void test_args_and_data_types(void **state) {
  (void)state;
  static const struct {
    const char *hex, *name;
  } args_bad[] = {{"90", "an array"},
                  {"a0", "a string"},
                  {"c0", "nil"},
                  {"05", "an integer"},
                  {"c3", "a boolean"},
                  {"c400", "bin"},
                  {"cb3ff0000000000000", "a float"}};
  mb m;
  char want[128];
  for (size_t i = 0; i < sizeof args_bad / sizeof args_bad[0]; i++) {
    task_with_args(&m, args_bad[i].hex);
    snprintf(want, sizeof want, "field args must be a map, not %s",
             args_bad[i].name);
    task_fails_mb(&m, want, ID);
    mb_fini(&m);
  }
  static const struct {
    const char *hex, *name;
  } data_bad[] = {{"a568656c6c6f", "a string"},
                  {"c0", "nil"},
                  {"91c400", "an array"},
                  {"80", "a map"},
                  {"00", "an integer"}};
  for (size_t i = 0; i < sizeof data_bad / sizeof data_bad[0]; i++) {
    mb_init(&m);
    mb_map(&m, 3);
    mb_str(&m, "v");
    mb_int(&m, 1);
    mb_str(&m, "id");
    mb_str(&m, ID);
    mb_str(&m, "data");
    mb_raw(&m, data_bad[i].hex);
    snprintf(want, sizeof want, "field data must be bin, not %s",
             data_bad[i].name);
    task_fails_mb(&m, want, ID);
    mb_fini(&m);
  }
  /* Unknown keys are ignored; an empty bin is data of length 0. */
  sc_task t;
  char err[256];
  mb_init(&m);
  mb_map(&m, 4);
  mb_str(&m, "v");
  mb_int(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  mb_str(&m, "future");
  mb_raw(&m, "92 c0 c3");
  mb_str(&m, "data");
  mb_raw(&m, "c4 00");
  assert_int_equal(sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t,
                                  err, sizeof err),
                   0);
  assert_true(t.has_data);
  assert_int_equal(t.data_len, 0);
  assert_int_equal(t.args->via.map.size, 0);
  sc_task_fini(&t);
  mb_fini(&m);
}

static void test_not_a_map(void **state) {
  (void)state;
  static const char *tops[] = {"c0", "01", "a0", "93010203", "c400", "c3"};
  uint8_t b[64];
  for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
    size_t n = unhex(tops[i], b, sizeof b);
    task_fails(b, n, "the task is not a msgpack map", "");
  }
}

/* ---- Structure --------------------------------------------------------- */

static void test_empty(void **state) {
  (void)state;
  char id[SC_ID_MAX + 1], err[256];
  static const char *decs[] = {"task", "reply", "notice", "value"};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(
        decode_with(decs[i], (const uint8_t *)"", 0, id, err, sizeof err),
        NIMBUS_EPROTO);
    assert_string_equal(err, "the message is empty");
    assert_int_equal(decode_with(decs[i], NULL, 0, id, err, sizeof err),
                     NIMBUS_EPROTO);
    assert_string_equal(err, "the message is empty");
  }
}

/* Every proper prefix of every valid golden message is refused as cut off;
 * a task's prefix still gives its id once the whole id is in it. */
static void test_truncated_everywhere(void **state) {
  (void)state;
  char id[SC_ID_MAX + 1], err[256];
  for (size_t i = 0; i < sizeof goods / sizeof goods[0]; i++) {
    uint8_t *b = NULL;
    size_t n = golden(goods[i].name, &b);
    size_t id_end = 0;
    char task_id[SC_ID_MAX + 1] = "";
    bool is_task = strcmp(goods[i].dec, "task") == 0;
    if (is_task) {
      sc_task t;
      assert_int_equal(sc_task_decode(b, n, &t, err, sizeof err), 0);
      memcpy(task_id, t.id, sizeof task_id);
      const uint8_t *p = memmem(b, n, t.id, strlen(t.id));
      assert_non_null(p);
      id_end = (size_t)(p - b) + strlen(t.id);
      sc_task_fini(&t);
    }
    for (size_t len = 0; len < n; len++) {
      /* A fresh copy of exactly len bytes, so ASan sees any over-read. */
      uint8_t *cut = malloc(len ? len : 1);
      memcpy(cut, b, len);
      int rc = decode_with(goods[i].dec, cut, len, id, err, sizeof err);
      if (rc != NIMBUS_EPROTO ||
          strcmp(err, len ? TRUNC : "the message is empty") != 0)
        fail_msg("%s cut to %zu of %zu: rc %d, \"%s\"", goods[i].name, len, n,
                 rc, err);
      if (is_task)
        assert_string_equal(id, len >= id_end ? task_id : "");
      free(cut);
    }
    free(b);
  }
}

static void test_trailing_bytes(void **state) {
  (void)state;
  char id[SC_ID_MAX + 1], err[256];
  static const uint8_t extra[] = {0xc0, 0x00, 0xff, 0x80, 0xc1};
  for (size_t i = 0; i < sizeof goods / sizeof goods[0]; i++) {
    uint8_t *b = NULL;
    size_t n = golden(goods[i].name, &b);
    uint8_t *longer = malloc(n + 2);
    memcpy(longer, b, n);
    for (size_t k = 0; k < sizeof extra; k++) {
      longer[n] = extra[k];
      longer[n + 1] = extra[k];
      assert_int_equal(
          decode_with(goods[i].dec, longer, n + 1, id, err, sizeof err),
          NIMBUS_EPROTO);
      assert_string_equal(err, "the message has 1 byte after its end");
      assert_int_equal(
          decode_with(goods[i].dec, longer, n + 2, id, err, sizeof err),
          NIMBUS_EPROTO);
      assert_string_equal(err, "the message has 2 bytes after its end");
    }
    free(longer);
    free(b);
  }
}

/* `levels` nested arrays, the innermost empty. */
static size_t nest(uint8_t *b, size_t levels, bool maps) {
  size_t n = 0;
  for (size_t i = 0; i + 1 < levels; i++) {
    if (maps) {
      b[n++] = 0x81;
      b[n++] = 0xa1;
      b[n++] = 'k';
    } else {
      b[n++] = 0x91;
    }
  }
  b[n++] = maps ? 0x80 : 0x90;
  return n;
}

static void test_depth(void **state) {
  (void)state;
  uint8_t b[256];
  char err[256];
  for (int maps = 0; maps < 2; maps++) {
    for (size_t levels = 1; levels <= 40; levels++) {
      size_t n = nest(b, levels, maps);
      int rc = value_rc(b, n, err, sizeof err);
      if (levels <= SC_MAX_DEPTH) {
        assert_int_equal(rc, 0);
      } else {
        assert_int_equal(rc, NIMBUS_EPROTO);
        assert_string_equal(err, "nesting deeper than 16 levels");
      }
    }
  }
  /* In a task the top map is level 1 and args level 2: args may hold 14
   * more levels, not 15. */
  mb m;
  sc_task t;
  char hex[600];
  for (size_t inner = 14; inner <= 15; inner++) {
    size_t n = nest(b, inner, false);
    size_t o = 0;
    o += (size_t)snprintf(hex + o, sizeof hex - o, "81 a1 61");
    for (size_t i = 0; i < n; i++)
      o += (size_t)snprintf(hex + o, sizeof hex - o, " %02x", b[i]);
    task_with_args(&m, hex);
    int rc = sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t, err,
                            sizeof err);
    if (inner == 14) {
      assert_int_equal(rc, 0);
    } else {
      assert_int_equal(rc, NIMBUS_EPROTO);
      assert_string_equal(err, "nesting deeper than 16 levels");
      assert_string_equal(t.id, ID);
    }
    sc_task_fini(&t);
    mb_fini(&m);
  }
}

/* Whatever a task may carry, a reply can carry back one level further
 * down (diag.echo's {result: {args: <args>}}): a reply may nest
 * SC_MAX_REPLY_DEPTH levels, one more than a task, and its encoder and
 * decoder agree on that. Once the reply encoder refused the echo of a
 * 16-level task, and diag.echo answered 500. */
static void test_echo_depth(void **state) {
  (void)state;
  assert_int_equal(SC_MAX_REPLY_DEPTH, SC_MAX_DEPTH + 1);
  uint8_t b[256];
  char err[256];
  for (int maps = 0; maps < 2; maps++) {
    /* Every depth a task may have: args, then 0-14 levels inside it. */
    for (size_t inner = 0; inner + 2 <= SC_MAX_DEPTH; inner++) {
      mb args, res, task;
      mb_init(&args);
      mb_map(&args, 1);
      mb_str(&args, "a");
      if (inner == 0)
        mb_int(&args, 1);
      else
        assert_int_equal(msgpack_sbuffer_write(&args.sb, (const char *)b,
                                               nest(b, inner, maps)),
                         0);
      mb_init(&task);
      assert_int_equal(sc_task_encode(&task.sb, ID,
                                      (const uint8_t *)args.sb.data,
                                      args.sb.size, NULL, 0, false),
                       0);
      sc_task t;
      assert_int_equal(sc_task_decode((const uint8_t *)task.sb.data,
                                      task.sb.size, &t, err, sizeof err),
                       0);
      /* What h_diag_echo writes. */
      mb_init(&res);
      mb_map(&res, 1);
      mb_str(&res, "args");
      assert_int_equal(msgpack_pack_object(&res.pk, *t.args), 0);
      sc_reply_enc r;
      memset(&r, 0, sizeof r);
      r.id = ID;
      r.status = SC_STATUS_OK;
      r.result = (const uint8_t *)res.sb.data;
      r.result_len = res.sb.size;
      msgpack_sbuffer out;
      msgpack_sbuffer_init(&out);
      if (sc_reply_encode(&out, &r) != 0)
        fail_msg("the echo of a task %zu levels deep (%s) is refused",
                 inner + 2, maps ? "maps" : "arrays");
      sc_reply rd;
      if (sc_reply_decode((const uint8_t *)out.data, out.size, &rd, err,
                          sizeof err) != 0)
        fail_msg("the echo of a task %zu levels deep does not decode: %s",
                 inner + 2, err);
      /* The args came back as they went. */
      const msgpack_object *back = sc_map_get(rd.result, "args");
      assert_non_null(back);
      mb again;
      mb_init(&again);
      assert_int_equal(msgpack_pack_object(&again.pk, *back), 0);
      assert_int_equal(again.sb.size, args.sb.size);
      assert_memory_equal(again.sb.data, args.sb.data, args.sb.size);
      mb_fini(&again);
      sc_reply_fini(&rd);
      msgpack_sbuffer_destroy(&out);
      sc_task_fini(&t);
      mb_fini(&res);
      mb_fini(&task);
      mb_fini(&args);
    }
    /* A result one level deeper than a reply may be: the encoder refuses
     * it and the decoder would too. result is level 2, so it may hold
     * SC_MAX_REPLY_DEPTH - 1 levels itself. */
    for (size_t levels = SC_MAX_REPLY_DEPTH - 1; levels <= SC_MAX_REPLY_DEPTH;
         levels++) {
      uint8_t res[256];
      size_t rn = 0;
      res[rn++] = 0x81; /* {k: <levels - 1 more>} */
      res[rn++] = 0xa1;
      res[rn++] = 'k';
      rn += nest(res + rn, levels - 1, maps);
      sc_reply_enc r;
      memset(&r, 0, sizeof r);
      r.id = ID;
      r.status = SC_STATUS_OK;
      r.result = res;
      r.result_len = rn;
      msgpack_sbuffer out;
      msgpack_sbuffer_init(&out);
      int rc = sc_reply_encode(&out, &r);
      if (levels == SC_MAX_REPLY_DEPTH - 1) {
        assert_int_equal(rc, 0);
        sc_reply rd;
        assert_int_equal(sc_reply_decode((const uint8_t *)out.data, out.size,
                                         &rd, err, sizeof err),
                         0);
        sc_reply_fini(&rd);
        /* The same bytes one level deeper: the reply decoder's limit. */
        uint8_t deeper[300];
        memcpy(deeper, out.data, out.size);
        size_t dn = out.size;
        /* Replace the innermost empty container with a one-element one
         * holding an empty one: one level more, same shape. */
        assert_true(deeper[dn - 1] == (maps ? 0x80 : 0x90));
        if (maps) {
          deeper[dn - 1] = 0x81;
          deeper[dn++] = 0xa1;
          deeper[dn++] = 'k';
          deeper[dn++] = 0x80;
        } else {
          deeper[dn - 1] = 0x91;
          deeper[dn++] = 0x90;
        }
        assert_int_equal(sc_reply_decode(deeper, dn, &rd, err, sizeof err),
                         NIMBUS_EPROTO);
        assert_string_equal(err, "nesting deeper than 17 levels");
        sc_reply_fini(&rd);
      } else {
        assert_int_equal(rc, NIMBUS_EINVAL);
        assert_int_equal(out.size, 0);
      }
      msgpack_sbuffer_destroy(&out);
    }
  }
}

static void test_huge_lengths(void **state) {
  (void)state;
  /* Declared lengths with nothing (or too little) behind them. msgpack-c
   * would allocate for the array and map ones before reading anything. */
  static const char *heads[] = {
      "dd 04 00 00 00",
      "dd ff ff ff ff",
      "dc ff ff",
      "9f",
      "df ff ff ff ff",
      "df 04 00 00 00",
      "de ff ff",
      "8f",
      "db ff ff ff ff",
      "db 7f ff ff ff",
      "da ff ff",
      "d9 ff",
      "bf",
      "c6 ff ff ff ff",
      "c5 ff ff",
      "c4 ff",
      "dd",
      "dd 04 00",
      "df 00",
      "db 00 00 00",
      "cf 00 00",
      "cb 3f f0",
      "ca",
      "d3",
      "9f 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e",
      "dd 00 00 03 e8 c0",
      "8f a1 61",
      "82 a1 61 01 a1 62",
  };
  char hex[128];
  mb m;
  for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
    value_fails_hex(heads[i], TRUNC);
    /* The same deep inside a task: still refused, and the id (which
     * precedes it) still echoed. */
    snprintf(hex, sizeof hex, "81 a1 61 %s", heads[i]);
    task_with_args(&m, hex);
    task_fails_mb(&m, TRUNC, ID);
    mb_fini(&m);
  }
  /* A map's declared pairs need two bytes each, not one. */
  value_fails_hex("82 a1 61 01 a1", TRUNC);
  /* Siblings count too: an array of 3 whose first element claims all
   * the remaining bytes for itself. */
  value_fails_hex("93 92 00 00 00", TRUNC);
  value_ok_hex("93 92 00 00 00 00");
}

static void test_long_strings(void **state) {
  (void)state;
  size_t big = SC_MAX_STR + 1;
  uint8_t *b = malloc(big + 8);
  char err[256];
  /* A str of SC_MAX_STR bytes is fine, one more is not. */
  b[0] = 0xda;
  b[1] = (uint8_t)(SC_MAX_STR >> 8);
  b[2] = (uint8_t)(SC_MAX_STR & 0xff);
  memset(b + 3, 'x', SC_MAX_STR);
  if (SC_MAX_STR <= 0xffff) {
    assert_int_equal(value_rc(b, 3 + SC_MAX_STR, err, sizeof err), 0);
  }
  b[0] = 0xdb;
  b[1] = 0;
  b[2] = (uint8_t)(SC_MAX_STR >> 16);
  b[3] = (uint8_t)(SC_MAX_STR >> 8);
  b[4] = (uint8_t)SC_MAX_STR;
  memset(b + 5, 'x', SC_MAX_STR);
  assert_int_equal(value_rc(b, 5 + SC_MAX_STR, err, sizeof err), 0);
  b[2] = (uint8_t)(big >> 16);
  b[3] = (uint8_t)(big >> 8);
  b[4] = (uint8_t)big;
  memset(b + 5, 'x', big);
  assert_int_equal(value_rc(b, 5 + big, err, sizeof err), NIMBUS_EPROTO);
  assert_string_equal(err, "a string is longer than 65536 bytes");
  /* bin is not a string: large bins are what tasks carry. */
  b[0] = 0xc6;
  assert_int_equal(value_rc(b, 5 + big, err, sizeof err), 0);
  free(b);

  /* An overlong id: refused as an id before anything else. */
  char id[200];
  memset(id, 'a', sizeof id - 1);
  id[sizeof id - 1] = '\0';
  mb m;
  task_v_id(&m, "01", id);
  task_fails_mb(&m, IDERR, "");
  mb_fini(&m);
}

static void test_duplicate_keys(void **state) {
  (void)state;
  mb m;
  /* Top level: v twice, id twice (then no id can be echoed), other keys. */
  mb_init(&m);
  mb_map(&m, 3);
  mb_str(&m, "v");
  mb_int(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  mb_str(&m, "v");
  mb_int(&m, 1);
  task_fails_mb(&m, "a map holds the key \"v\" twice", ID);
  mb_fini(&m);

  mb_init(&m);
  mb_map(&m, 3);
  mb_str(&m, "v");
  mb_int(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  mb_str(&m, "id");
  mb_str(&m, ID2);
  task_fails_mb(&m, "a map holds the key \"id\" twice", "");
  mb_fini(&m);

  /* Nested: in args, in a map inside an array, in a map in a map. */
  static const char *nested[] = {
      "82 a1 61 01 a1 61 02",
      "81 a1 6c 92 80 82 a1 78 01 a1 78 01",
      "81 a1 6d 81 a1 6e 82 a1 78 c0 a1 78 c0",
  };
  static const char *keys[] = {"a", "x", "x"};
  char want[64];
  for (size_t i = 0; i < 3; i++) {
    task_with_args(&m, nested[i]);
    snprintf(want, sizeof want, "a map holds the key \"%s\" twice", keys[i]);
    task_fails_mb(&m, want, ID);
    mb_fini(&m);
  }
  /* The same key in two different maps is fine. */
  task_with_args(&m, "82 a1 61 81 a1 61 01 a1 62 81 a1 61 02");
  sc_task t;
  char err[256];
  assert_int_equal(sc_task_decode((const uint8_t *)m.sb.data, m.sb.size, &t,
                                  err, sizeof err),
                   0);
  sc_task_fini(&t);
  mb_fini(&m);
  /* Keys that differ only in length or in their last byte are distinct. */
  value_ok_hex("83 a1 61 01 a2 61 61 02 a2 61 62 03");
  value_ok_hex("82 a0 01 a1 00 02");

  /* Large maps take the sorting path: dup anywhere, and no false alarm. */
  for (size_t size = 9; size <= 300; size += 97) {
    for (size_t dup_at = 0; dup_at <= size; dup_at += size / 3 + 1) {
      mb_init(&m);
      mb_map(&m, size + (dup_at < size));
      char key[16];
      for (size_t k = 0; k < size; k++) {
        snprintf(key, sizeof key, "k%zu", (k * 7919) % size);
        mb_str(&m, key);
        mb_int(&m, (int64_t)k);
      }
      if (dup_at < size) {
        snprintf(key, sizeof key, "k%zu", dup_at);
        mb_str(&m, key);
        mb_int(&m, 0);
      }
      char err2[256];
      int rc =
          value_rc((const uint8_t *)m.sb.data, m.sb.size, err2, sizeof err2);
      if (dup_at < size) {
        assert_int_equal(rc, NIMBUS_EPROTO);
        snprintf(want, sizeof want, "a map holds the key \"k%zu\" twice",
                 dup_at);
        assert_string_equal(err2, want);
      } else {
        assert_int_equal(rc, 0);
      }
      mb_fini(&m);
    }
  }
  /* A key that is long or not printable is shown safely. */
  value_fails_hex("82 a2 0a 22 01 a2 0a 22 02",
                  "a map holds the key \"\\x0a\\x22\" twice");
  char hex[512];
  size_t o = (size_t)snprintf(hex, sizeof hex, "82 b0");
  for (int i = 0; i < 16; i++)
    o += (size_t)snprintf(hex + o, sizeof hex - o, " 7a");
  o += (size_t)snprintf(hex + o, sizeof hex - o, " 01 d9 30");
  for (int i = 0; i < 48; i++)
    o += (size_t)snprintf(hex + o, sizeof hex - o, " 7a");
  o += (size_t)snprintf(hex + o, sizeof hex - o, " 01 ");
  value_ok_hex(hex);
  o = (size_t)snprintf(hex, sizeof hex, "82 d9 30");
  for (int i = 0; i < 48; i++)
    o += (size_t)snprintf(hex + o, sizeof hex - o, " 7a");
  o += (size_t)snprintf(hex + o, sizeof hex - o, " 01 d9 30");
  for (int i = 0; i < 48; i++)
    o += (size_t)snprintf(hex + o, sizeof hex - o, " 7a");
  snprintf(hex + o, sizeof hex - o, " 02");
  value_fails_hex(hex, "a map holds the key "
                       "\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\"... "
                       "twice");
}

static void test_nonstring_keys(void **state) {
  (void)state;
  static const struct {
    const char *hex, *name;
  } keys[] = {{"01", "an integer"},
              {"ff", "an integer"},
              {"c0", "nil"},
              {"c2", "a boolean"},
              {"c4 01 61", "bin"},
              {"90", "an array"},
              {"80", "a map"},
              {"cb 3f f0 00 00 00 00 00 00", "a float"},
              {"d4 01 00", "an ext value"}};
  char hex[128], want[128];
  mb m;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    snprintf(hex, sizeof hex, "81 %s 01", keys[i].hex);
    snprintf(want, sizeof want, "a map key must be a string, not %s",
             keys[i].name);
    if (strncmp(keys[i].hex, "d4", 2) == 0)
      snprintf(want, sizeof want,
               "the message holds a msgpack ext value, which this protocol "
               "does not use");
    value_fails_hex(hex, want);
    task_with_args(&m, hex);
    task_fails_mb(&m, want, ID);
    mb_fini(&m);
  }
  /* At the top level of a task, before the id: nothing to echo. */
  value_fails_hex("82 01 01 a1 76 01",
                  "a map key must be a string, not an integer");
}

static void test_ext_and_reserved(void **state) {
  (void)state;
  static const char *exts[] = {
      "d4 01 00",
      "d5 01 00 00",
      "d6 ff 00 00 00 00",
      "d7 01 00 00 00 00 00 00 00 00",
      "d8 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
      "c7 00 01",
      "c7 01 01 00",
      "c8 00 01 01 00",
      "c9 00 00 00 01 01 00",
  };
  const char *ext_err = "the message holds a msgpack ext value, which this "
                        "protocol does not use";
  char hex[128];
  mb m;
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    value_fails_hex(exts[i], ext_err);
    snprintf(hex, sizeof hex, "92 01 %s", exts[i]);
    value_fails_hex(hex, ext_err);
    snprintf(hex, sizeof hex, "81 a1 74 %s", exts[i]);
    task_with_args(&m, hex);
    task_fails_mb(&m, ext_err, ID);
    mb_fini(&m);
  }
  value_fails_hex("c1", "the byte 0xc1 is not valid msgpack");
  value_fails_hex("92 01 c1", "the byte 0xc1 is not valid msgpack");
}

static void test_value_count(void **state) {
  (void)state;
  /* The root plus n nils: SC_MAX_VALUES in all is the most. */
  size_t n = SC_MAX_VALUES - 1;
  uint8_t *b = malloc(n + 2 + 5);
  char err[256];
  b[0] = 0xdd;
  b[1] = (uint8_t)(n >> 24);
  b[2] = (uint8_t)(n >> 16);
  b[3] = (uint8_t)(n >> 8);
  b[4] = (uint8_t)n;
  memset(b + 5, 0xc0, n + 1);
  assert_int_equal(value_rc(b, 5 + n, err, sizeof err), 0);
  n++;
  b[1] = (uint8_t)(n >> 24);
  b[2] = (uint8_t)(n >> 16);
  b[3] = (uint8_t)(n >> 8);
  b[4] = (uint8_t)n;
  assert_int_equal(value_rc(b, 5 + n, err, sizeof err), NIMBUS_EPROTO);
  assert_string_equal(err, "the message holds more than 131072 values");
  /* A caller may allow more for a manifest. */
  msgpack_object o;
  msgpack_zone *z = NULL;
  assert_int_equal(
      sc_value_decode_limits(b, 5 + n, 5 + n, n + 1, &o, &z, err, sizeof err),
      0);
  assert_int_equal(o.via.array.size, n);
  msgpack_zone_free(z);
  z = NULL;
  assert_int_equal(
      sc_value_decode_limits(b, 5 + n, 4 + n, n + 1, &o, &z, err, sizeof err),
      NIMBUS_ETOOBIG);
  assert_null(z);
  free(b);
}

static void test_too_big(void **state) {
  (void)state;
  /* A task whose data makes it one byte over the broker's limit: refused
   * as too big, with its id still echoed. */
  size_t head = 1 + 2 + 1 + 3 + 2 + (sizeof ID - 1) + 5 + 5;
  size_t dlen = SC_MAX_MESSAGE - head;
  uint8_t *data = calloc(1, dlen + 1);
  msgpack_sbuffer sb;
  sc_task t;
  char err[256];
  msgpack_sbuffer_init(&sb);
  assert_int_equal(sc_task_encode(&sb, ID, NULL, 0, data, dlen, true), 0);
  assert_int_equal(sb.size, SC_MAX_MESSAGE);
  assert_int_equal(
      sc_task_decode((const uint8_t *)sb.data, sb.size, &t, err, sizeof err),
      0);
  assert_int_equal(t.data_len, dlen);
  sc_task_fini(&t);
  msgpack_sbuffer_clear(&sb);
  assert_int_equal(sc_task_encode(&sb, ID, NULL, 0, data, dlen + 1, true), 0);
  assert_int_equal(
      sc_task_decode((const uint8_t *)sb.data, sb.size, &t, err, sizeof err),
      NIMBUS_ETOOBIG);
  assert_string_equal(err, "the message is 1048577 bytes, more than the "
                           "1048576 accepted");
  assert_string_equal(t.id, ID);
  msgpack_sbuffer_destroy(&sb);
  free(data);
}

/* The id is echoed from tasks broken in every other way. */
static void test_id_echo(void **state) {
  (void)state;
  mb m;
  /* Something unreadable before the id does not hide it as long as its
   * length can be followed: ext, deep nesting, duplicate keys. */
  static const char *before[] = {
      "d6 ff 00 00 00 00",
      "91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 90",
      "82 a1 61 01 a1 61 01",
      "81 01 02",
  };
  static const char *errs[] = {
      ("the message holds a msgpack ext value, which this protocol does "
       "not use"),
      "nesting deeper than 16 levels",
      "a map holds the key \"a\" twice",
      "a map key must be a string, not an integer",
  };
  for (size_t i = 0; i < sizeof before / sizeof before[0]; i++) {
    mb_init(&m);
    mb_map(&m, 3);
    mb_str(&m, "args");
    mb_raw(&m, before[i]);
    mb_str(&m, "v");
    mb_int(&m, 1);
    mb_str(&m, "id");
    mb_str(&m, ID);
    task_fails_mb(&m, errs[i], ID);
    mb_fini(&m);
  }
  /* A map key that is not a string at the top level is skipped. */
  mb_init(&m);
  mb_map(&m, 3);
  mb_raw(&m, "05 05");
  mb_str(&m, "id");
  mb_str(&m, ID);
  mb_str(&m, "v");
  mb_int(&m, 1);
  task_fails_mb(&m, "a map key must be a string, not an integer", ID);
  mb_fini(&m);
  /* Cut off right after the id, and cut off inside the id. */
  mb_init(&m);
  mb_map(&m, 4);
  mb_str(&m, "v");
  mb_int(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  task_fails_mb(&m, TRUNC, ID);
  task_fails((const uint8_t *)m.sb.data, m.sb.size - 1, TRUNC, "");
  mb_fini(&m);
  /* A wrong v, wrong args, wrong data all echo. */
  task_v_id(&m, "02", ID2);
  task_fails_mb(&m, VERR, ID2);
  mb_fini(&m);
}

/* ---- Replies and notices ----------------------------------------------- */

/* A reply {v: 1, id: ID, status: <s>, code: <code_hex>, <extra...>}. */
static int reply_rc(const char *status, const char *code_hex, size_t nextra,
                    const char *extra_hex, char *err, sc_reply *out) {
  mb m;
  sc_reply r;
  mb_init(&m);
  mb_map(&m, 4 + nextra);
  mb_str(&m, "v");
  mb_int(&m, 1);
  mb_str(&m, "id");
  mb_str(&m, ID);
  mb_str(&m, "status");
  mb_str(&m, status);
  mb_str(&m, "code");
  mb_raw(&m, code_hex);
  if (extra_hex)
    mb_raw(&m, extra_hex);
  int rc = sc_reply_decode((const uint8_t *)m.sb.data, m.sb.size,
                           out ? out : &r, err, 256);
  if (out == NULL)
    sc_reply_fini(&r);
  mb_fini(&m);
  return rc;
}

#define ERR_FIELD "a5 65 72 72 6f 72 a4 6f 6f 70 73" /* error: "oops" */

static void test_reply_rules(void **state) {
  (void)state;
  char err[256];
  sc_reply r;
  assert_int_equal(reply_rc("ok", "00", 0, NULL, err, NULL), 0);
  assert_int_equal(reply_rc("error", "cd 01 f4", 1, ERR_FIELD, err, &r), 0);
  assert_int_equal(r.code, 500);
  assert_int_equal(r.error_len, 4);
  sc_reply_fini(&r);
  /* A whole float is a whole number. */
  assert_int_equal(
      reply_rc("error", "cb 40 7a d0 00 00 00 00 00", 1, ERR_FIELD, err, &r),
      0);
  assert_int_equal(r.code, 429);
  sc_reply_fini(&r);

  static const char *statuses[] = {"", "OK", "done", "errors"};
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(reply_rc(statuses[i], "00", 0, NULL, err, NULL),
                     NIMBUS_EPROTO);
    assert_string_equal(
        err, "field status must be \"ok\", \"error\" or \"progress\"");
  }
  static const char *codes[] = {"ff", "cd 03 e8", "a3 32 30 30", "c0",
                                "cb 3f f8 00 00 00 00 00 00"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(reply_rc("error", codes[i], 1, ERR_FIELD, err, NULL),
                     NIMBUS_EPROTO);
    assert_string_equal(err, "field code must be a whole number from 0 to 999");
  }
  assert_int_equal(reply_rc("ok", "cd 01 90", 0, NULL, err, NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "a reply with status ok must have code 0");
  assert_int_equal(reply_rc("error", "00", 1, ERR_FIELD, err, NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "an error reply must have a code other than 0");
  assert_int_equal(reply_rc("error", "cd 01 90", 0, NULL, err, NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err,
                      "an error reply must say what went wrong in field error");
  assert_int_equal(
      reply_rc("error", "cd 01 90", 1, "a5 65 72 72 6f 72 01", err, NULL),
      NIMBUS_EPROTO);
  assert_string_equal(err, "field error must be a string, not an integer");
  assert_int_equal(reply_rc("ok", "00", 1, "a4 68 65 6c 70 c4 00", err, NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field help must be a string, not bin");
  assert_int_equal(
      reply_rc("ok", "00", 1, "a6 72 65 73 75 6c 74 90", err, NULL),
      NIMBUS_EPROTO);
  assert_string_equal(err, "field result must be a map, not an array");
  assert_int_equal(reply_rc("ok", "00", 1, "a4 64 61 74 61 a0", err, NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field data must be bin, not a string");
  /* Progress needs done and total, both whole and >= 0. */
  assert_int_equal(
      reply_rc("progress", "00", 1, "a4 64 6f 6e 65 01", err, NULL),
      NIMBUS_EPROTO);
  assert_string_equal(err, "a progress reply must have fields done and "
                           "total");
  assert_int_equal(reply_rc("progress", "00", 2,
                            "a4 64 6f 6e 65 ff a5 74 6f 74 61 6c 01", err,
                            NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field done must be a whole number of at least 0");
  assert_int_equal(reply_rc("progress", "00", 2,
                            "a4 64 6f 6e 65 01 a5 74 6f 74 61 6c a1 32", err,
                            NULL),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field total must be a whole number of at least 0");
  assert_int_equal(reply_rc("progress", "00", 2,
                            "a4 64 6f 6e 65 01 a5 74 6f 74 61 6c 02", err, &r),
                   0);
  assert_int_equal(r.done, 1);
  assert_int_equal(r.total, 2);
  sc_reply_fini(&r);

  /* id: "" or a valid id; v must be 1; the top must be a map. */
  uint8_t b[128];
  char id[SC_ID_MAX + 1];
  size_t n = unhex("84 a1 76 01 a2 69 64 a3 61 62 63 a6 73 74 61 74 75 73 "
                   "a2 6f 6b a4 63 6f 64 65 00",
                   b, sizeof b);
  assert_int_equal(decode_with("reply", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field id must be \"\" or 16-64 characters of "
                           "A-Z a-z 0-9 _ -");
  n = unhex("83 a1 76 01 a6 73 74 61 74 75 73 a2 6f 6b a4 63 6f 64 65 00", b,
            sizeof b);
  assert_int_equal(decode_with("reply", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "field id must be \"\" or 16-64 characters of "
                           "A-Z a-z 0-9 _ -");
  n = unhex("84 a1 76 02 a2 69 64 a0 a6 73 74 61 74 75 73 a2 6f 6b a4 63 6f "
            "64 65 00",
            b, sizeof b);
  assert_int_equal(decode_with("reply", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "unsupported protocol version: field v must be 1 "
                           "(this terminal speaks protocol version 1)");
  n = unhex("90", b, sizeof b);
  assert_int_equal(decode_with("reply", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "the reply is not a msgpack map");
}

static void test_notice_rules(void **state) {
  (void)state;
  static const char *kinds[] = {"a0", "01", "a3 61 2f 62",
                                "d9 41 "
                                "61616161616161616161616161616161"
                                "61616161616161616161616161616161"
                                "61616161616161616161616161616161"
                                "61616161616161616161616161616161"
                                "61"};
  uint8_t b[256];
  char id[SC_ID_MAX + 1], err[256], hex[512];
  for (size_t i = 0; i < 4; i++) {
    snprintf(hex, sizeof hex, "82 a1 76 01 a4 6b 69 6e 64 %s", kinds[i]);
    size_t n = unhex(hex, b, sizeof b);
    assert_int_equal(decode_with("notice", b, n, id, err, sizeof err),
                     NIMBUS_EPROTO);
    assert_string_equal(
        err, "field kind must be 1-64 characters of A-Z a-z 0-9 . _ -");
  }
  size_t n = unhex("82 a1 76 00 a4 6b 69 6e 64 a1 78", b, sizeof b);
  assert_int_equal(decode_with("notice", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "unsupported protocol version: field v must be 1 "
                           "(this terminal speaks protocol version 1)");
  n = unhex("a1 78", b, sizeof b);
  assert_int_equal(decode_with("notice", b, n, id, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_string_equal(err, "the notice is not a msgpack map");
  /* 64 characters with every allowed kind of character is fine. */
  n = unhex("82 a1 76 01 a4 6b 69 6e 64 d9 40 "
            "2e5f2d30394158617a2e5f2d30394158617a2e5f2d30394158617a2e5f2d"
            "30394158617a2e5f2d30394158617a2e5f2d30394158617a2e5f2d303941"
            "58617a2e",
            b, sizeof b);
  assert_int_equal(decode_with("notice", b, n, id, err, sizeof err), 0);
}

static void test_value_scalars(void **state) {
  (void)state;
  static const char *ok[] = {"c0",
                             "c2",
                             "c3",
                             "00",
                             "7f",
                             "e0",
                             "ff",
                             "cc ff",
                             "cd ff ff",
                             "ce ff ff ff ff",
                             "cf ff ff ff ff ff ff ff ff",
                             "d0 80",
                             "d1 80 00",
                             "d2 80 00 00 00",
                             "d3 80 00 00 00 00 00 00 00",
                             "ca 00 00 00 00",
                             "cb 00 00 00 00 00 00 00 00",
                             "a0",
                             "c4 00",
                             "90",
                             "80",
                             "d9 01 61",
                             "da 00 01 61",
                             "db 00 00 00 01 61",
                             "c5 00 01 00",
                             "c6 00 00 00 01 00",
                             "dc 00 01 c0",
                             "dd 00 00 00 01 c0",
                             "de 00 01 a0 c0",
                             "df 00 00 00 01 a0 c0"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    value_ok_hex(ok[i]);
  /* The decoded tree is what msgpack-c makes of the same bytes. */
  uint8_t b[64];
  size_t n = unhex("93 01 a2 68 69 cb 3f f8 00 00 00 00 00 00", b, sizeof b);
  msgpack_object o;
  msgpack_zone *z = NULL;
  char err[256];
  assert_int_equal(sc_value_decode(b, n, &o, &z, err, sizeof err), 0);
  assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(o.via.array.size, 3);
  assert_int_equal(o.via.array.ptr[0].via.u64, 1);
  assert_true(str_is(&o.via.array.ptr[1], "hi"));
  assert_true(o.via.array.ptr[2].via.f64 == 1.5);
  msgpack_zone_free(z);
  /* A NULL error buffer is allowed. */
  z = NULL;
  assert_int_equal(sc_value_decode(b, n - 1, &o, &z, NULL, 0), NIMBUS_EPROTO);
  assert_null(z);
  /* A small error buffer truncates, never overflows. */
  char small[8];
  assert_int_equal(sc_value_decode(b, n - 1, &o, &z, small, sizeof small),
                   NIMBUS_EPROTO);
  assert_string_equal(small, "the mes");
}

/* ---- Encoders ---------------------------------------------------------- */

static void test_encode_refusals(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  /* The buffer's earlier content must survive every refusal. */
  msgpack_sbuffer_write(&sb, "xyz", 3);
  static const char *bad_ids[] = {"", "short", "3f2b8c1e 9d4a-4b6f-8e21",
                                  "3f2b8c1e/9d4a-4b6f-8e21",
                                  ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                   "aaaaaaaaaaaaaaaaaaaaaaaa")};
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(sc_task_encode(&sb, bad_ids[i], NULL, 0, NULL, 0, false),
                     NIMBUS_EINVAL);
  assert_int_equal(sc_task_encode(&sb, NULL, NULL, 0, NULL, 0, false),
                   NIMBUS_EINVAL);
  assert_int_equal(sc_task_encode(NULL, ID, NULL, 0, NULL, 0, false),
                   NIMBUS_EINVAL);
  static const char *bad_args[] = {
      "90",
      "a0",
      "c0",
      "80 c0",
      "81 a1 61",
      "82 a1 61 01 a1 61 02",
      "81 01 01",
      "81 a1 61 d4 00 00",
      /* args plus 15 levels: the task would nest 17 deep. */
      "81 a1 61 91 91 91 91 91 91 91 91 91 91 91 91 91 91 90",
  };
  uint8_t b[128];
  for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
    size_t n = unhex(bad_args[i], b, sizeof b);
    assert_int_equal(sc_task_encode(&sb, ID, b, n, NULL, 0, false),
                     NIMBUS_EINVAL);
  }
  assert_int_equal(sc_task_encode(&sb, ID, NULL, 0, NULL, 3, true),
                   NIMBUS_EINVAL);
  assert_int_equal(sb.size, 3);
  /* One level less is exactly the deepest a task may be. */
  size_t n16 =
      unhex("81 a1 61 91 91 91 91 91 91 91 91 91 91 91 91 91 90", b, sizeof b);
  assert_int_equal(sc_task_encode(&sb, ID, b, n16, NULL, 0, false), 0);
  sb.size = 3;

  sc_reply_enc r;
  memset(&r, 0, sizeof r);
  r.id = ID;
  r.status = SC_STATUS_OK;
  assert_int_equal(sc_reply_encode(&sb, &r), 0);
  sb.size = 3;
  r.code = 400; /* ok with a code */
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.status = SC_STATUS_ERROR; /* error without text */
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.error = "x";
  r.code = 0; /* error with code 0 */
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.code = 1000;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.code = 400;
  r.status = (sc_status)7;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.status = SC_STATUS_ERROR;
  r.id = "not an id";
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.id = NULL;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.id = ID;
  r.result = (const uint8_t *)"\x91\x01";
  r.result_len = 2;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.result = (const uint8_t *)"\x81\xa1k";
  r.result_len = 3;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  r.result = NULL;
  r.status = SC_STATUS_PROGRESS;
  r.code = 0;
  r.error = NULL;
  r.done = -1;
  assert_int_equal(sc_reply_encode(&sb, &r), NIMBUS_EINVAL);
  assert_int_equal(sc_reply_encode(&sb, NULL), NIMBUS_EINVAL);
  assert_int_equal(sb.size, 3);

  /* Notices: the kind's rule, fields a map, no second v or kind. */
  assert_int_equal(sc_notice_encode(&sb, "", NULL), NIMBUS_EINVAL);
  assert_int_equal(sc_notice_encode(&sb, "a/b", NULL), NIMBUS_EINVAL);
  assert_int_equal(sc_notice_encode(&sb, NULL, NULL), NIMBUS_EINVAL);
  msgpack_object o;
  msgpack_zone *z = NULL;
  char err[256];
  size_t n = unhex("81 a1 76 02", b, sizeof b);
  assert_int_equal(sc_value_decode(b, n, &o, &z, err, sizeof err), 0);
  assert_int_equal(sc_notice_encode(&sb, "agent.offer", &o), NIMBUS_EINVAL);
  msgpack_zone_free(z);
  n = unhex("81 a4 6b 69 6e 64 02", b, sizeof b);
  assert_int_equal(sc_value_decode(b, n, &o, &z, err, sizeof err), 0);
  assert_int_equal(sc_notice_encode(&sb, "agent.offer", &o), NIMBUS_EINVAL);
  msgpack_zone_free(z);
  n = unhex("91 01", b, sizeof b);
  assert_int_equal(sc_value_decode(b, n, &o, &z, err, sizeof err), 0);
  assert_int_equal(sc_notice_encode(&sb, "agent.offer", &o), NIMBUS_EINVAL);
  msgpack_zone_free(z);
  assert_int_equal(sb.size, 3);
  assert_memory_equal(sb.data, "xyz", 3);
  msgpack_sbuffer_destroy(&sb);
}

/* What the encoders write, the decoders read back unchanged. */
static void test_roundtrip(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  sc_task t;
  sc_reply r;
  char err[256];
  uint8_t data[300];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i * 31);
  msgpack_sbuffer_init(&sb);
  assert_int_equal(sc_task_encode(&sb, ID2, (const uint8_t *)"\x81\xa1k\x01", 4,
                                  data, sizeof data, true),
                   0);
  assert_int_equal(
      sc_task_decode((const uint8_t *)sb.data, sb.size, &t, err, sizeof err),
      0);
  assert_string_equal(t.id, ID2);
  assert_int_equal(sc_map_get(t.args, "k")->via.u64, 1);
  assert_int_equal(t.data_len, sizeof data);
  assert_memory_equal(t.data, data, sizeof data);
  sc_task_fini(&t);

  sc_reply_enc e;
  memset(&e, 0, sizeof e);
  e.id = ID2;
  e.status = SC_STATUS_PROGRESS;
  e.done = INT64_MAX;
  e.total = INT64_MAX;
  e.has_data = true; /* empty inline bytes */
  msgpack_sbuffer_clear(&sb);
  assert_int_equal(sc_reply_encode(&sb, &e), 0);
  assert_int_equal(
      sc_reply_decode((const uint8_t *)sb.data, sb.size, &r, err, sizeof err),
      0);
  assert_int_equal(r.status, SC_STATUS_PROGRESS);
  assert_int_equal(r.done, INT64_MAX);
  assert_true(r.has_data);
  assert_int_equal(r.data_len, 0);
  sc_reply_fini(&r);
  msgpack_sbuffer_destroy(&sb);

  assert_string_equal(sc_status_name(SC_STATUS_OK), "ok");
  assert_string_equal(sc_status_name(SC_STATUS_ERROR), "error");
  assert_string_equal(sc_status_name(SC_STATUS_PROGRESS), "progress");
  assert_true(sc_id_valid(ID, strlen(ID)));
  assert_false(sc_id_valid(NULL, 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_encode_tasks),
      cmocka_unit_test(test_golden_encode_replies),
      cmocka_unit_test(test_golden_encode_notice),
      cmocka_unit_test(test_golden_decode_tasks),
      cmocka_unit_test(test_golden_decode_replies),
      cmocka_unit_test(test_golden_decode_notice),
      cmocka_unit_test(test_golden_cross),
      cmocka_unit_test(test_golden_malformed),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_id_rules),
      cmocka_unit_test(test_args_and_data_types),
      cmocka_unit_test(test_not_a_map),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_trailing_bytes),
      cmocka_unit_test(test_depth),
      cmocka_unit_test(test_echo_depth),
      cmocka_unit_test(test_huge_lengths),
      cmocka_unit_test(test_long_strings),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_nonstring_keys),
      cmocka_unit_test(test_ext_and_reserved),
      cmocka_unit_test(test_value_count),
      cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_id_echo),
      cmocka_unit_test(test_reply_rules),
      cmocka_unit_test(test_notice_rules),
      cmocka_unit_test(test_value_scalars),
      cmocka_unit_test(test_encode_refusals),
      cmocka_unit_test(test_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
