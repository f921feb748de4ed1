/* Unit tests of libnimbus-agent and its CLI helpers, mostly without a
 * network:
 * JSON <-> msgpack, the device id file, option checks, submit's checks and
 * max_inflight, and the life of a task as replies reach it (fed straight
 * into ag_agent_on_message, as Paho's receive thread would): final and
 * progress replies, unknown ids, a broker refusal, timeouts, the re-send
 * clock, notices, releasing a task from its own callback; and, against a
 * broker the test plays on a loopback socket, that a task is sent once
 * around a connect's re-send of every task. The agent's
 * sources are compiled into this test, so its internals are visible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ag_internal.h"
#include "ag_json.h"
#include "nb_util.h"
#include "test_mqtt_peer.h"

#define DEV "testdevice01"

/* ---- Helpers ----------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void tmpdir_make(char *buf, size_t cap) {
  snprintf(buf, cap, "/tmp/test_agent.XXXXXX");
  assert_non_null(mkdtemp(buf));
}

static void tmpdir_remove(const char *dir) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *hex_of(const uint8_t *p, size_t n) {
  char *s = malloc(2 * n + 1);
  assert_non_null(s);
  nb_hex(p, n, s);
  return s;
}

/* Packs JSON args and returns their hex. */
static char *args_hex(const char *json) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  char err[128];
  int rc = ag_json_args_pack(json, &sb, err, sizeof err);
  if (rc != 0)
    fail_msg("ag_json_args_pack(%s): %s", json, err);
  char *h = hex_of((const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  return h;
}

/* JSON -> msgpack -> JSON, printed unformatted. */
static char *json_roundtrip(const char *json) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  char err[128];
  assert_int_equal(ag_json_args_pack(json, &sb, err, sizeof err), 0);
  cJSON *j = NULL;
  assert_int_equal(ag_json_from_packed((const uint8_t *)sb.data, sb.size, &j),
                   0);
  char *s = cJSON_PrintUnformatted(j);
  assert_non_null(s);
  cJSON_Delete(j);
  msgpack_sbuffer_destroy(&sb);
  return s;
}

static void opts_fill(nimbus_agent_opts *o) {
  nimbus_agent_opts_init(o);
  o->uri = "tcp://127.0.0.1:1";
  o->terminal = "t1";
  o->password = "pw";
  o->device_id = DEV;
}

/* Options whose device id comes from the state directory `dir`. */
static void opts_stored(nimbus_agent_opts *o, const char *dir) {
  opts_fill(o);
  o->device_id = NULL;
  o->state_dir = dir;
}

/* Writes `text` as the whole of the file at `path`. */
static void file_put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static nimbus_agent *agent_make(int max_inflight, int resend_ms,
                                int resend_max_ms) {
  nimbus_agent_opts o;
  opts_fill(&o);
  o.max_inflight = max_inflight;
  o.resend_ms = resend_ms;
  o.resend_max_ms = resend_max_ms;
  nimbus_agent *a = NULL;
  assert_int_equal(nimbus_agent_new(&o, &a), 0);
  assert_non_null(a);
  return a;
}

static nimbus_task *submit_simple(nimbus_agent *a, const char *id,
                                  const nimbus_submit_opts *base) {
  nimbus_submit_opts so = {0};
  if (base != NULL)
    so = *base;
  so.id = id;
  nimbus_task *t = NULL;
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, &so, 0, &t), 0);
  assert_non_null(t);
  return t;
}

/* Feeds a reply to the agent as if it came from the broker. */
static void feed_reply(nimbus_agent *a, const sc_reply_enc *r) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(sc_reply_encode(&sb, r), 0);
  ag_agent_on_message(a, a->reply_topic, strlen(a->reply_topic), sb.data,
                      sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void feed_ok(nimbus_agent *a, const char *id) {
  static const uint8_t result[] = {0x81, 0xa1, 'k', 0x07}; /* {k: 7} */
  sc_reply_enc r = {.id = id,
                    .status = SC_STATUS_OK,
                    .result = result,
                    .result_len = sizeof result,
                    .data = (const uint8_t *)"xyz",
                    .data_len = 3,
                    .has_data = true};
  feed_reply(a, &r);
}

/* Records callbacks, which run on the agent's thread. */
typedef struct rec {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finals, progresses, notices;
  char status[16];
  int code, err;
  int64_t done, total;
  char kind[65];
  bool release_in_final;
  bool order_ok; /* every progress came before the final */
} rec;

static void rec_init(rec *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->order_ok = true;
}

static void rec_fini(rec *r) {
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
}

static void on_final(void *ctx, nimbus_task *t, const nimbus_reply *rp) {
  rec *r = ctx;
  pthread_mutex_lock(&r->mu);
  r->finals++;
  nb_strlcpy(r->status, rp->status, sizeof r->status);
  r->code = rp->code;
  r->err = rp->err;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->release_in_final)
    nimbus_task_release(t);
}

static void on_progress(void *ctx, nimbus_task *t, const nimbus_reply *rp) {
  (void)t;
  rec *r = ctx;
  pthread_mutex_lock(&r->mu);
  if (r->finals > 0)
    r->order_ok = false;
  r->progresses++;
  r->done = rp->done;
  r->total = rp->total;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void on_notice(void *ctx, const char *kind, const uint8_t *n,
                      size_t len) {
  (void)n;
  (void)len;
  rec *r = ctx;
  pthread_mutex_lock(&r->mu);
  r->notices++;
  nb_strlcpy(r->kind, kind, sizeof r->kind);
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Waits (at most 2 s) until *counter reaches n. */
static void rec_wait(rec *r, const int *counter, int n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 2;
  pthread_mutex_lock(&r->mu);
  while (*counter < n &&
         pthread_cond_timedwait(&r->cv, &r->mu, &ts) != ETIMEDOUT)
    ;
  int got = *counter;
  pthread_mutex_unlock(&r->mu);
  assert_int_equal(got, n);
}

/* Returns once every callback the agent's thread had queued has run: a
 * marker task's final reply is fed after them, and its callback comes
 * last (the thread calls back one at a time, in order). What must not
 * have happened by then did not happen at all, without sleeping on it. */
static void flush_callbacks(nimbus_agent *a, const char *marker_id) {
  rec m;
  rec_init(&m);
  nimbus_submit_opts so = {.on_final = on_final, .ctx = &m};
  nimbus_task *t = submit_simple(a, marker_id, &so);
  feed_ok(a, marker_id);
  rec_wait(&m, &m.finals, 1);
  nimbus_task_release(t);
  rec_fini(&m);
}

static int outstanding(nimbus_agent *a) {
  pthread_mutex_lock(&a->mu);
  int n = a->outstanding;
  pthread_mutex_unlock(&a->mu);
  return n;
}

/* ---- JSON <-> msgpack -------------------------------------------------- */

static void test_json_to_msgpack_bytes(void **state) {
  (void)state;
  struct {
    const char *json, *hex;
  } cases[] = {
      {"{}", "80"},
      {"{\"a\": 1}", "81a16101"},
      {"{\"a\": -1}", "81a161ff"},
      {"{\"a\": 1.5}", "81a161cb3ff8000000000000"},
      /* Whole numbers become ints, also when written with a fraction. */
      {"{\"a\": 2.0}", "81a16102"},
      {"{\"a\": 1e3}", "81a161cd03e8"},
      /* 2^53 is no longer exact in a double: float64. */
      {"{\"a\": 9007199254740992}", "81a161cb4340000000000000"},
      {"{\"a\": 9007199254740991}", "81a161cf001fffffffffffff"},
      {"{\"a\": null, \"b\": true, \"c\": false}", "83a161c0a162c3a163c2"},
      {"{\"s\": \"h\\u00e9\"}", "81a173a368c3a9"},
      {"{\"l\": [1, \"x\", []], \"m\": {\"n\": {}}}",
       "82a16c9301a17890a16d81a16e80"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *h = args_hex(cases[i].json);
    if (strcmp(h, cases[i].hex) != 0)
      fail_msg("%s: expected %s, got %s", cases[i].json, cases[i].hex, h);
    free(h);
  }
}

static void test_json_roundtrip(void **state) {
  (void)state;
  const char *in = "{\"a\":1,\"b\":[1.5,-2,\"x\",true,false,null,{\"c\":{}}],"
                   "\"big\":9007199254740991,\"neg\":-9007199254740991,"
                   "\"u\":\"\xc3\xa9\"}";
  char *out = json_roundtrip(in);
  assert_string_equal(out, in);
  free(out);
}

static void test_json_rejects(void **state) {
  (void)state;
  const char *bad[] = {"[1]",
                       "1",
                       "\"s\"",
                       "{",
                       "{\"a\":1,\"a\":2}",
                       "{\"x\":{\"a\":1,\"b\":2,\"a\":3}}",
                       "",
                       "{} x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[128] = "";
    int rc = ag_json_args_pack(bad[i], &sb, err, sizeof err);
    if (rc != NIMBUS_EINVAL)
      fail_msg("\"%s\": expected EINVAL, got %d", bad[i], rc);
    assert_true(err[0] != '\0');
    assert_int_equal(sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
  }
  /* Deeper than 64 levels. */
  char deep[200];
  size_t n = (size_t)snprintf(deep, sizeof deep, "{\"a\":");
  memset(deep + n, '[', 70);
  memset(deep + n + 70, ']', 70);
  memcpy(deep + n + 140, "}", 2);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  char err[128];
  assert_int_equal(ag_json_args_pack(deep, &sb, err, sizeof err),
                   NIMBUS_EINVAL);
  msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_to_json_kinds(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 5);
  msgpack_pack_str_with_body(&pk, "u", 1);
  msgpack_pack_uint64(&pk, UINT64_MAX);
  msgpack_pack_str_with_body(&pk, "i", 1);
  msgpack_pack_int64(&pk, INT64_MIN);
  msgpack_pack_str_with_body(&pk, "b", 1);
  msgpack_pack_bin_with_body(&pk, "hi!", 3);
  msgpack_pack_str_with_body(&pk, "f", 1);
  msgpack_pack_float(&pk, 0.25f);
  msgpack_pack_str_with_body(&pk, "n", 1);
  msgpack_pack_double(&pk, 1.0 / 0.0);
  cJSON *j = NULL;
  assert_int_equal(ag_json_from_packed((const uint8_t *)sb.data, sb.size, &j),
                   0);
  char *s = cJSON_PrintUnformatted(j);
  assert_string_equal(s, "{\"u\":18446744073709551615,"
                         "\"i\":-9223372036854775808,\"b\":\"aGkh\","
                         "\"f\":0.25,\"n\":null}");
  free(s);
  cJSON_Delete(j);
  msgpack_sbuffer_destroy(&sb);

  /* Malformed msgpack is refused, not read. */
  static const uint8_t inflated[] = {0xdd, 0x04, 0x00, 0x00, 0x00};
  assert_int_equal(ag_json_from_packed(inflated, sizeof inflated, &j),
                   NIMBUS_EPROTO);
  assert_null(j);
}

static void test_reply_to_json(void **state) {
  (void)state;
  static const uint8_t result[] = {0x81, 0xa1, 'k', 0x07};
  ag_reply_parts p = {.id = "abcdefghijklmnop",
                      .id_len = 16,
                      .status = "error",
                      .code = 409,
                      .error = "conflict",
                      .error_len = 8,
                      .help = "use another id",
                      .help_len = 14,
                      .result = result,
                      .result_len = sizeof result,
                      .data = (const uint8_t *)"\x00\x01\x02",
                      .data_len = 3,
                      .has_data = true};
  nimbus_reply *r = ag_reply_new(&p);
  assert_non_null(r);
  cJSON *j = ag_json_from_reply(r);
  char *s = cJSON_PrintUnformatted(j);
  assert_string_equal(
      s, "{\"id\":\"abcdefghijklmnop\",\"status\":\"error\",\"code\":409,"
         "\"error\":\"conflict\",\"help\":\"use another id\","
         "\"result\":{\"k\":7},\"data_size\":3,\"data_b64\":\"AAEC\"}");
  free(s);
  cJSON_Delete(j);
  nimbus_reply_free(r);

  ag_reply_parts q = {.id = "abcdefghijklmnop",
                      .id_len = 16,
                      .status = "progress",
                      .done = 5,
                      .total = 10};
  r = ag_reply_new(&q);
  j = ag_json_from_reply(r);
  s = cJSON_PrintUnformatted(j);
  assert_string_equal(s, "{\"id\":\"abcdefghijklmnop\",\"status\":"
                         "\"progress\",\"code\":0,\"done\":5,\"total\":10}");
  free(s);
  cJSON_Delete(j);
  nimbus_reply_free(r);
}

/* ---- The device id ----------------------------------------------------- */

static void test_device_id(void **state) {
  (void)state;
  char top[64], dir[128], path[160], id1[65], id2[65], err[256];
  tmpdir_make(top, sizeof top);
  snprintf(dir, sizeof dir, "%s/a/b", top); /* made, parents too */
  snprintf(path, sizeof path, "%s/device-id", dir);

  assert_int_equal(ag_device_id_load(dir, id1, sizeof id1, err, sizeof err), 0);
  assert_int_equal(strlen(id1), 16);
  assert_true(nb_valid_token(id1, 16, 16, 16));
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  /* No temporary file is left behind. */
  char tmpl[200];
  snprintf(tmpl, sizeof tmpl, "ls %s | wc -l | grep -qx 1", dir);
  assert_int_equal(system(tmpl), 0);

  /* Read again, not made again. */
  assert_int_equal(ag_device_id_load(dir, id2, sizeof id2, err, sizeof err), 0);
  assert_string_equal(id1, id2);

  /* Another installation gets another id. */
  char dir2[128];
  snprintf(dir2, sizeof dir2, "%s/other", top);
  assert_int_equal(ag_device_id_load(dir2, id2, sizeof id2, err, sizeof err),
                   0);
  assert_string_not_equal(id1, id2);

  /* A file without a valid id is an error, not silently replaced. */
  file_put(path, "bad id!\n");
  assert_int_equal(ag_device_id_load(dir, id2, sizeof id2, err, sizeof err),
                   NIMBUS_EIO);
  assert_non_null(strstr(err, "device-id"));

  /* nimbus_agent_new uses the stored id in the client id. */
  file_put(path, "Stored_Device-42\n");
  nimbus_agent_opts o;
  opts_stored(&o, dir);
  nimbus_agent *a = NULL;
  assert_int_equal(nimbus_agent_new(&o, &a), 0);
  assert_string_equal(nimbus_agent_client_id(a), "t1.Stored_Device-42");
  nimbus_agent_free(a);

  /* ... and $NIMBUS_STATE_DIR when no state_dir is given. */
  o.state_dir = NULL;
  setenv("NIMBUS_STATE_DIR", dir, 1);
  assert_int_equal(nimbus_agent_new(&o, &a), 0);
  assert_string_equal(nimbus_agent_client_id(a), "t1.Stored_Device-42");
  nimbus_agent_free(a);
  unsetenv("NIMBUS_STATE_DIR");

  /* A state directory that cannot be made. */
  snprintf(dir2, sizeof dir2, "%s/file", top);
  file_put(dir2, "");
  snprintf(dir2, sizeof dir2, "%s/file/sub", top);
  o.state_dir = dir2;
  err[0] = '\0';
  assert_int_equal(nimbus_agent_new_err(&o, &a, err, sizeof err), NIMBUS_EIO);
  assert_null(a);
  assert_non_null(strstr(err, "state directory"));
  tmpdir_remove(top);
}

/* Agents of one installation at once each take their own session slot:
 * the first the installation's client id, the others "<device>-<k>", so
 * that none takes another's session over; a slot is free again once its
 * agent is freed; past the 16th, or when the stored id leaves no room for
 * a suffix, nimbus_agent_new says EINUSE. A given device id takes no
 * slot. */
static void test_session_slots(void **state) {
  (void)state;
  char dir[64], path[128], err[256];
  tmpdir_make(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/device-id", dir);
  file_put(path, "Stored_Device-42\n");
  nimbus_agent_opts o;
  opts_stored(&o, dir);
  nimbus_agent *v[AG_SESSION_SLOTS + 1] = {0};
  char want[96];
  for (int k = 0; k < AG_SESSION_SLOTS; k++) {
    assert_int_equal(nimbus_agent_new(&o, &v[k]), 0);
    if (k == 0)
      snprintf(want, sizeof want, "t1.Stored_Device-42");
    else
      snprintf(want, sizeof want, "t1.Stored_Device-42-%d", k);
    assert_string_equal(nimbus_agent_client_id(v[k]), want);
  }
  assert_int_equal(v[1]->session_expiry_s, AG_EXTRA_EXPIRY_S);
  assert_int_equal(v[0]->session_expiry_s, AG_DEFAULT_EXPIRY_S);
  err[0] = '\0';
  assert_int_equal(
      nimbus_agent_new_err(&o, &v[AG_SESSION_SLOTS], err, sizeof err),
      NIMBUS_EINUSE);
  assert_null(v[AG_SESSION_SLOTS]);
  assert_non_null(strstr(err, "running already"));
  nimbus_agent_free(v[3]);
  assert_int_equal(nimbus_agent_new(&o, &v[3]), 0);
  assert_string_equal(nimbus_agent_client_id(v[3]), "t1.Stored_Device-42-3");
  nimbus_agent_free(v[0]);
  assert_int_equal(nimbus_agent_new(&o, &v[0]), 0);
  assert_string_equal(nimbus_agent_client_id(v[0]), "t1.Stored_Device-42");

  /* A given device id: the same client id every time, no slot taken. */
  o.device_id = DEV;
  nimbus_agent *g1 = NULL, *g2 = NULL;
  assert_int_equal(nimbus_agent_new(&o, &g1), 0);
  assert_int_equal(nimbus_agent_new(&o, &g2), 0);
  assert_string_equal(nimbus_agent_client_id(g2), "t1." DEV);
  nimbus_agent_free(g1);
  nimbus_agent_free(g2);
  for (int k = 0; k < AG_SESSION_SLOTS; k++)
    nimbus_agent_free(v[k]);

  /* A stored id of 62 bytes leaves no room for "-<k>": one slot only. */
  char longid[64];
  memset(longid, 'd', 62);
  longid[62] = '\n';
  longid[63] = '\0';
  file_put(path, longid);
  o.device_id = NULL;
  assert_int_equal(nimbus_agent_new(&o, &v[0]), 0);
  assert_int_equal(nimbus_agent_new(&o, &v[1]), NIMBUS_EINUSE);
  nimbus_agent_free(v[0]);
  tmpdir_remove(dir);
}

/* ---- Options ----------------------------------------------------------- */

static void test_agent_new_checks(void **state) {
  (void)state;
  nimbus_agent_opts o;
  nimbus_agent *a = NULL;
  char err[256];

  opts_fill(&o);
  o.terminal = NULL;
  assert_int_equal(nimbus_agent_new_err(&o, &a, err, sizeof err),
                   NIMBUS_EINVAL);
  assert_null(a);
  assert_non_null(strstr(err, "terminal"));

  opts_fill(&o);
  o.uri = NULL;
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.password = NULL;
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.terminal = "a/b";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.terminal = "";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.device_id = "short";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.device_id = "has.dot.in.it";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.prefix = "cloud/#";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.prefix = "cloud/v1/";
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.max_inflight = -1;
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.max_inflight = 70000;
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  opts_fill(&o);
  o.resend_ms = 5000;
  o.resend_max_ms = 1000;
  assert_int_equal(nimbus_agent_new(&o, &a), NIMBUS_EINVAL);
  assert_null(a);
  assert_int_equal(nimbus_agent_new(NULL, &a), NIMBUS_EINVAL);

  /* Defaults and derived names. */
  opts_fill(&o);
  o.terminal = "4915112345678";
  assert_int_equal(nimbus_agent_new(&o, &a), 0);
  assert_string_equal(nimbus_agent_client_id(a), "4915112345678." DEV);
  assert_string_equal(a->reply_topic, "cloud/v1/reply/4915112345678");
  assert_string_equal(a->notify_topic, "cloud/v1/notify/4915112345678");
  assert_int_equal(a->max_inflight, 64);
  assert_int_equal(a->resend_ms, 30000);
  assert_int_equal(a->resend_max_ms, 300000);
  assert_int_equal(a->session_expiry_s, 604800);
  assert_false(a->clean_start);
  assert_false(nimbus_agent_connected(a));
  assert_string_equal(nimbus_agent_errstr(a), "");
  nimbus_agent_free(a);
  nimbus_agent_free(NULL);
}

/* ---- Submitting -------------------------------------------------------- */

static void test_submit_checks(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(4, 0, 0);
  nimbus_task *t = NULL;
  static const uint8_t array[] = {0x91, 0x01}; /* [1], not a map */
  static const uint8_t map[] = {0x81, 0xa1, 'a', 0x01};

  assert_int_equal(nimbus_submit(a, "", NULL, 0, NULL, 0, false, NULL, 0, &t),
                   NIMBUS_EINVAL);
  assert_int_equal(
      nimbus_submit(a, "blob/put", NULL, 0, NULL, 0, false, NULL, 0, &t),
      NIMBUS_EINVAL);
  assert_int_equal(
      nimbus_submit(a, "blob.+", NULL, 0, NULL, 0, false, NULL, 0, &t),
      NIMBUS_EINVAL);
  assert_int_equal(
      nimbus_submit(a, "x", array, sizeof array, NULL, 0, false, NULL, 0, &t),
      NIMBUS_EINVAL);
  assert_int_equal(
      nimbus_submit(a, "x", map, sizeof map - 1, NULL, 0, false, NULL, 0, &t),
      NIMBUS_EINVAL);
  assert_int_equal(nimbus_submit(a, "x", NULL, 3, NULL, 0, false, NULL, 0, &t),
                   NIMBUS_EINVAL);
  assert_int_equal(
      nimbus_submit(a, "x", NULL, 0, NULL, 0, false, NULL, 0, NULL),
      NIMBUS_EINVAL);
  nimbus_submit_opts so = {.id = "too-short"};
  assert_int_equal(nimbus_submit(a, "x", NULL, 0, NULL, 0, false, &so, 0, &t),
                   NIMBUS_EINVAL);
  so.id = "has a space in it!!";
  assert_int_equal(nimbus_submit(a, "x", NULL, 0, NULL, 0, false, &so, 0, &t),
                   NIMBUS_EINVAL);
  assert_null(t);

  /* Too big: the data alone, and data that fits only without the
   * envelope. */
  size_t big = SC_MAX_TASK + 1;
  uint8_t *data = calloc(1, big);
  assert_non_null(data);
  assert_int_equal(nimbus_submit(a, "x", NULL, 0, data, big, true, NULL, 0, &t),
                   NIMBUS_ETOOBIG);
  assert_int_equal(
      nimbus_submit(a, "x", NULL, 0, data, SC_MAX_TASK - 8, true, NULL, 0, &t),
      NIMBUS_ETOOBIG);
  /* A 256 KiB segment fits. */
  assert_int_equal(nimbus_submit(a, "blob.put", map, sizeof map, data,
                                 SC_SEGMENT, true, NULL, 0, &t),
                   0);
  assert_int_equal(strlen(nimbus_task_id(t)), 22);
  assert_string_equal(t->topic, "cloud/v1/task/blob.put/t1");
  /* The kept bytes are the encoded task: decode them back. */
  sc_task dec;
  char err[128];
  assert_int_equal(sc_task_decode(t->msg, t->msg_len, &dec, err, sizeof err),
                   0);
  assert_string_equal(dec.id, nimbus_task_id(t));
  assert_int_equal(dec.data_len, SC_SEGMENT);
  sc_task_fini(&dec);
  nimbus_task_release(t);
  free(data);

  /* Random ids differ; a given id is used as is and may not be doubled. */
  nimbus_task *t1 = submit_simple(a, NULL, NULL);
  nimbus_task *t2 = submit_simple(a, NULL, NULL);
  assert_string_not_equal(nimbus_task_id(t1), nimbus_task_id(t2));
  nimbus_task *t3 = submit_simple(a, "my-own-id_000001", NULL);
  assert_string_equal(nimbus_task_id(t3), "my-own-id_000001");
  so.id = "my-own-id_000001";
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, &so, 0, &t),
      NIMBUS_ECONFLICT);
  /* Once it is over, the id may come again. */
  feed_ok(a, "my-own-id_000001");
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, &so, 0, &t), 0);
  nimbus_task_release(t);
  nimbus_task_release(t1);
  nimbus_task_release(t2);
  nimbus_task_release(t3);
  assert_int_equal(outstanding(a), 0);
  nimbus_agent_free(a);
}

typedef struct releaser {
  nimbus_task *t;
  int after_ms;
} releaser;

static void *release_later(void *arg) {
  releaser *r = arg;
  usleep((useconds_t)r->after_ms * 1000);
  nimbus_task_release(r->t);
  return NULL;
}

static void test_max_inflight(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(2, 0, 0);
  nimbus_task *t1 = submit_simple(a, NULL, NULL);
  nimbus_task *t2 = submit_simple(a, NULL, NULL);
  nimbus_task *t3 = NULL;
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL, 0, &t3),
      NIMBUS_EBUSY);
  int64_t t0 = nb_mono_ms();
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL, 50, &t3),
      NIMBUS_EBUSY);
  assert_true(nb_mono_ms() - t0 >= 50);
  assert_null(t3);

  /* A final reply frees a slot, the handle still held. */
  feed_ok(a, nimbus_task_id(t1));
  assert_int_equal(outstanding(a), 1);
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL, 0, &t3), 0);

  /* A blocked submit wakes when another thread gives a task up. */
  releaser rl = {t2, 50};
  pthread_t th;
  pthread_create(&th, NULL, release_later, &rl);
  nimbus_task *t4 = NULL;
  t0 = nb_mono_ms();
  assert_int_equal(
      nimbus_submit(a, "ping", NULL, 0, NULL, 0, false, NULL, 5000, &t4), 0);
  assert_true(nb_mono_ms() - t0 < 4000);
  pthread_join(th, NULL);
  nimbus_task_release(t1);
  nimbus_task_release(t3);
  nimbus_task_release(t4);
  nimbus_agent_free(a);
}

/* ---- Replies ----------------------------------------------------------- */

static void test_final_reply(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 0, 0);
  nimbus_task *t = submit_simple(a, "final-reply-id-001", NULL);
  nimbus_reply *r = NULL;
  assert_int_equal(nimbus_task_wait(t, 0, &r), NIMBUS_ETIMEDOUT);
  assert_int_equal(nimbus_task_wait(t, 30, &r), NIMBUS_ETIMEDOUT);
  assert_null(r);
  assert_int_equal(outstanding(a), 1);

  /* Not ours, broken, or for another id: all ignored. */
  static const uint8_t junk[] = {0xdd, 0x04, 0x00, 0x00, 0x00};
  ag_agent_on_message(a, a->reply_topic, strlen(a->reply_topic), junk,
                      sizeof junk);
  ag_agent_on_message(a, "cloud/v1/reply/other", 20, junk, sizeof junk);
  feed_ok(a, "some-other-id-0001");
  sc_reply_enc noid = {
      .id = "", .status = SC_STATUS_ERROR, .code = 400, .error = "malformed"};
  feed_reply(a, &noid);
  assert_int_equal(nimbus_task_wait(t, 0, &r), NIMBUS_ETIMEDOUT);

  feed_ok(a, "final-reply-id-001");
  assert_int_equal(nimbus_task_wait(t, 1000, &r), 0);
  assert_non_null(r);
  assert_string_equal(r->id, "final-reply-id-001");
  assert_string_equal(r->status, "ok");
  assert_int_equal(r->code, 0);
  assert_int_equal(r->err, 0);
  assert_null(r->error);
  assert_int_equal(r->result_len, 4);
  assert_memory_equal(r->result, "\x81\xa1k\x07", 4);
  assert_int_equal(r->data_len, 3);
  assert_memory_equal(r->data, "xyz", 3);
  nimbus_reply_free(r);
  assert_int_equal(outstanding(a), 0);

  /* A duplicate final changes nothing; waiting again gives it again. */
  sc_reply_enc err = {.id = "final-reply-id-001",
                      .status = SC_STATUS_ERROR,
                      .code = 500,
                      .error = "late"};
  feed_reply(a, &err);
  assert_int_equal(nimbus_task_wait(t, -1, &r), 0);
  assert_string_equal(r->status, "ok");
  nimbus_reply_free(r);
  nimbus_task_release(t);

  /* An error reply is a reply: status, code, error and help. */
  t = submit_simple(a, "final-reply-id-002", NULL);
  sc_reply_enc e2 = {.id = "final-reply-id-002",
                     .status = SC_STATUS_ERROR,
                     .code = 404,
                     .error = "no such blob",
                     .help = "upload it first"};
  feed_reply(a, &e2);
  assert_int_equal(nimbus_task_wait(t, 1000, &r), 0);
  assert_string_equal(r->status, "error");
  assert_int_equal(r->code, 404);
  assert_string_equal(r->error, "no such blob");
  assert_string_equal(r->help, "upload it first");
  assert_null(r->result);
  assert_null(r->data);
  nimbus_reply_free(r);
  nimbus_task_release(t);
  nimbus_agent_free(a);
}

static void test_callbacks(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 0, 0);
  rec rc;
  rec_init(&rc);
  nimbus_submit_opts so = {
      .on_final = on_final, .on_progress = on_progress, .ctx = &rc};
  nimbus_task *t = submit_simple(a, "callback-task-001", &so);
  sc_reply_enc p = {.id = "callback-task-001",
                    .status = SC_STATUS_PROGRESS,
                    .done = 3,
                    .total = 9};
  feed_reply(a, &p);
  p.done = 6;
  feed_reply(a, &p);
  rec_wait(&rc, &rc.progresses, 2);
  assert_int_equal(rc.done, 6);
  assert_int_equal(rc.total, 9);
  assert_int_equal(outstanding(a), 1); /* progress is not the end */
  feed_ok(a, "callback-task-001");
  rec_wait(&rc, &rc.finals, 1);
  assert_string_equal(rc.status, "ok");
  assert_true(rc.order_ok);
  /* A late duplicate does not call on_final again. */
  feed_ok(a, "callback-task-001");
  flush_callbacks(a, "callback-marker-01");
  pthread_mutex_lock(&rc.mu);
  assert_int_equal(rc.finals, 1);
  pthread_mutex_unlock(&rc.mu);
  nimbus_task_release(t);

  /* A released task gets no callback. */
  rec_fini(&rc);
  rec_init(&rc);
  t = submit_simple(a, "callback-task-002", &so);
  nimbus_task_release(t);
  feed_ok(a, "callback-task-002");
  flush_callbacks(a, "callback-marker-02");
  assert_int_equal(rc.finals, 0);

  /* A callback may release its own task (ASan checks the rest). */
  rec_fini(&rc);
  rec_init(&rc);
  rc.release_in_final = true;
  t = submit_simple(a, "callback-task-003", &so);
  feed_ok(a, "callback-task-003");
  rec_wait(&rc, &rc.finals, 1);
  nimbus_agent_free(a);
  rec_fini(&rc);
}

static void test_refused(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(1, 0, 0);
  rec rc;
  rec_init(&rc);
  nimbus_submit_opts so = {.on_final = on_final, .ctx = &rc};
  nimbus_task *t = submit_simple(a, "refused-task-0001", &so);
  assert_int_equal(outstanding(a), 1);
  ag_task_refuse(a, t, MQTTREASONCODE_NOT_AUTHORIZED);
  nimbus_reply *r = (nimbus_reply *)1;
  assert_int_equal(nimbus_task_wait(t, 1000, &r), NIMBUS_EREFUSED);
  assert_null(r);
  assert_int_equal(outstanding(a), 0);
  assert_non_null(strstr(nimbus_agent_errstr(a), "refused-task-0001"));
  assert_non_null(strstr(nimbus_agent_errstr(a), "0x87"));
  rec_wait(&rc, &rc.finals, 1);
  assert_string_equal(rc.status, "error");
  assert_int_equal(rc.code, 0);
  assert_int_equal(rc.err, NIMBUS_EREFUSED);
  /* Final: a reply that comes anyway is ignored. */
  feed_ok(a, "refused-task-0001");
  assert_int_equal(nimbus_task_wait(t, 0, &r), NIMBUS_EREFUSED);
  nimbus_task_release(t);
  nimbus_agent_free(a);
  rec_fini(&rc);
}

static void test_notice(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 0, 0);
  rec rc;
  rec_init(&rc);
  nimbus_agent_on_notice(a, on_notice, &rc);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  assert_int_equal(sc_notice_encode(&sb, "agent.offer", NULL), 0);
  /* On the reply topic it is no reply; on the notice topic it is. */
  ag_agent_on_message(a, a->reply_topic, strlen(a->reply_topic), sb.data,
                      sb.size);
  ag_agent_on_message(a, a->notify_topic, strlen(a->notify_topic), sb.data,
                      sb.size);
  rec_wait(&rc, &rc.notices, 1);
  assert_string_equal(rc.kind, "agent.offer");
  msgpack_sbuffer_destroy(&sb);
  nimbus_agent_free(a);
  rec_fini(&rc);
}

/* The re-send clock runs without a connection too (sending waits for the
 * connect): its interval doubles up to the cap, and a progress reply
 * restarts it. */
static void test_resend_clock(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 20, 80);
  nimbus_task *t = submit_simple(a, "resend-clock-0001", NULL);
  pthread_mutex_lock(&a->mu);
  assert_int_equal(t->interval_ms, 20);
  pthread_mutex_unlock(&a->mu);
  int64_t end = nb_mono_ms() + 2000;
  int iv = 0;
  while (nb_mono_ms() < end && iv != 80) {
    usleep(10000);
    pthread_mutex_lock(&a->mu);
    iv = t->interval_ms;
    pthread_mutex_unlock(&a->mu);
  }
  assert_int_equal(iv, 80);
  sc_reply_enc p = {.id = "resend-clock-0001", .status = SC_STATUS_PROGRESS};
  feed_reply(a, &p);
  pthread_mutex_lock(&a->mu);
  assert_int_equal(t->interval_ms, 20);
  assert_true(t->next_send > nb_mono_ms());
  /* The scan comes as early as the restarted clock, not at the 80 ms the
   * doubled interval had set. */
  assert_true(a->loop_deadline <= t->next_send + a->coalesce_ms);
  pthread_mutex_unlock(&a->mu);
  nimbus_task_release(t);
  nimbus_agent_free(a);
}

/* Freeing an agent with tasks still held drops them (ASan checks). */
static void test_free_with_tasks(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 0, 0);
  rec rc;
  rec_init(&rc);
  nimbus_submit_opts so = {.on_final = on_final, .ctx = &rc};
  (void)submit_simple(a, NULL, &so);
  nimbus_task *done = submit_simple(a, "free-with-tasks-1", &so);
  (void)done;
  feed_ok(a, "free-with-tasks-1");
  nimbus_agent_free(a);
  rec_fini(&rc);
}

/* ---- Against a broker the test plays (MQTT 5, by hand) ---------------- */

/* The broker's side: CONNACK, SUBACK for every filter, PUBACK and a count
 * of every PUBLISH of task `id`, and the Session Expiry Interval of the
 * CONNECT and of the DISCONNECT (-1: absent); runs until the client
 * disconnects. */
typedef struct peer {
  int lfd;
  const char *id;
  /* Connections to serve one after the other (0: 1). With drop_first,
   * the first connection acknowledges no PUBLISH of id and is closed by
   * the peer after it; later CONNACKs say whether the session was kept. */
  int conns;
  bool drop_first, session_present;
  bool refuse_later_once; /* refuse the first SUBSCRIBE after the 1st conn */
  atomic_int refused;     /* SUBACKs that refused */
  atomic_int publishes;   /* PUBLISHes whose payload holds id */
  atomic_int publishes_later, dups_later; /* on connections after the 1st */
  atomic_int subscribed;                  /* SUBACKs sent, all connections */
  atomic_llong connect_expiry, disconnect_expiry;
} peer;

/* The Session Expiry Interval among the MQTT 5 properties at b[off..n)
 * (a length, then the properties), or -1 when absent or unreadable. Knows
 * the properties a CONNECT or a DISCONNECT may carry. */
static long long props_expiry(const uint8_t *b, size_t n, size_t off) {
  size_t len = 0;
  for (int shift = 0; off < n && shift <= 21; shift += 7) {
    uint8_t c = b[off++];
    len |= (size_t)(c & 0x7f) << shift;
    if ((c & 0x80) == 0)
      break;
  }
  size_t end = off + len;
  if (end > n)
    return -1;
  while (off < end) {
    uint8_t id = b[off++];
    size_t fixed = 0;
    if (id == 0x11 && off + 4 <= end)
      return (long long)b[off] << 24 | b[off + 1] << 16 | b[off + 2] << 8 |
             b[off + 3];
    switch (id) {
    case 0x17:
    case 0x19:
      fixed = 1;
      break;
    case 0x21:
    case 0x22:
      fixed = 2;
      break;
    case 0x11:
    case 0x27:
      fixed = 4;
      break;
    case 0x15:
    case 0x16:
    case 0x1f: /* one string or binary */
      if (off + 2 > end)
        return -1;
      fixed = 2 + ((size_t)b[off] << 8 | b[off + 1]);
      break;
    case 0x26: /* user property: two strings */
      if (off + 2 > end)
        return -1;
      fixed = 2 + ((size_t)b[off] << 8 | b[off + 1]);
      if (off + fixed + 2 > end)
        return -1;
      fixed += 2 + ((size_t)b[off + fixed] << 8 | b[off + fixed + 1]);
      break;
    default:
      return -1;
    }
    off += fixed;
  }
  return -1;
}

static bool body_has(const uint8_t *b, size_t n, const char *s) {
  size_t k = strlen(s);
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(b + i, s, k) == 0)
      return true;
  return false;
}

/* Serves one connection; returns when it ends. */
static void peer_serve(peer *p, int fd, int conn) {
  uint8_t body[4096];
  size_t n;
  int h;
  while ((h = mqtt_peer_read_packet(fd, body, sizeof body, &n)) >= 0) {
    int kind = h >> 4;
    if (kind == 1) { /* CONNECT: accepted, no properties */
      /* "MQTT", level, flags, keep-alive, then the properties. */
      atomic_store(&p->connect_expiry, props_expiry(body, n, 10));
      const uint8_t ack[] = {0x20, 3, conn > 0 && p->session_present, 0, 0};
      (void)mqtt_peer_write_full(fd, ack, sizeof ack);
    } else if (kind == 8 && n >= 3) { /* SUBSCRIBE: granted QoS 1 each */
      size_t off = 2 + 1 + body[2];   /* id, properties (short) */
      uint8_t ack[64] = {0x90, 0, body[0], body[1], 0};
      size_t k = 5;
      while (off + 2 <= n && k < sizeof ack) {
        off += 2 + ((size_t)body[off] << 8 | body[off + 1]) + 1;
        ack[k++] = 1;
      }
      ack[1] = (uint8_t)(k - 2);
      if (conn > 0 && p->refuse_later_once && atomic_load(&p->refused) == 0) {
        memset(ack + 5, 0x87, k - 5); /* not authorised */
        atomic_fetch_add(&p->refused, 1);
      } else {
        atomic_fetch_add(&p->subscribed, 1);
      }
      (void)mqtt_peer_write_full(fd, ack, k);
    } else if (kind == 3 && n >= 2) { /* PUBLISH, QoS 1 */
      size_t off = 2 + ((size_t)body[0] << 8 | body[1]);
      if (off + 2 <= n) {
        const uint8_t ack[] = {0x40, 2, body[off], body[off + 1]};
        bool ours = body_has(body + off, n - off, p->id);
        if (ours) {
          atomic_fetch_add(&p->publishes, 1);
          if (conn > 0) {
            atomic_fetch_add(&p->publishes_later, 1);
            if (h & 0x08)
              atomic_fetch_add(&p->dups_later, 1);
          } else if (p->drop_first) {
            return; /* unacknowledged, and the link goes */
          }
        }
        (void)mqtt_peer_write_full(fd, ack, sizeof ack);
      }
    } else if (kind == 12) { /* PINGREQ */
      const uint8_t resp[] = {0xd0, 0};
      (void)mqtt_peer_write_full(fd, resp, sizeof resp);
    } else if (kind == 14) { /* DISCONNECT: reason, properties */
      atomic_store(&p->disconnect_expiry, props_expiry(body, n, 1));
      return;
    }
  }
}

static void *peer_run(void *arg) {
  peer *p = arg;
  for (int c = 0; c < (p->conns > 0 ? p->conns : 1); c++) {
    int fd = mqtt_peer_accept(p->lfd);
    if (fd < 0)
      break;
    peer_serve(p, fd, c);
    close(fd);
  }
  return NULL;
}

/* Waits (at most max_ms) until the peer's counter reaches n; returns it. */
static int peer_wait(atomic_int *counter, int n, int max_ms) {
  for (int waited = 0; atomic_load(counter) < n && waited < max_ms;
       waited += 10)
    mqtt_peer_sleep_ms(10);
  return atomic_load(counter);
}

/* Starts the peer on a free port and an agent with `o` connected to it. */
static nimbus_agent *peer_connect(peer *p, pthread_t *th,
                                  nimbus_agent_opts *o) {
  char uri[64];
  atomic_init(&p->connect_expiry, -1);
  atomic_init(&p->disconnect_expiry, -1);
  p->lfd = mqtt_peer_listen(uri, sizeof uri);
  assert_true(p->lfd >= 0);
  assert_int_equal(pthread_create(th, NULL, peer_run, p), 0);
  o->uri = uri;
  nimbus_agent *a = NULL;
  assert_int_equal(nimbus_agent_new(o, &a), 0);
  o->uri = NULL;
  assert_int_equal(nimbus_agent_connect(a, 5000), 0);
  assert_int_equal(atomic_load(&p->subscribed), 1);
  return a;
}

/* Frees the agent (its DISCONNECT ends the peer) and the peer. */
static void peer_end(peer *p, pthread_t th, nimbus_agent *a) {
  nimbus_agent_free(a);
  pthread_join(th, NULL);
  close(p->lfd);
}

/* A task submitted just after a connect, while that connect's re-send of
 * every outstanding task is still to run on the agent's thread, is sent
 * once, not once by nimbus_submit and again by the re-send: the second
 * copy's reply would wait in the session and be taken as the final reply
 * by the next process that uses the same id. The window is held open
 * here: the re-send flag is raised again without waking the agent's
 * thread, as the subscription callback leaves it until that thread runs. */
static void test_connect_resend_once(void **state) {
  (void)state;
  peer p = {.id = "connect-once-0001"};
  pthread_t th;
  nimbus_agent_opts o;
  opts_fill(&o);
  nimbus_agent *a = peer_connect(&p, &th, &o);

  pthread_mutex_lock(&a->mu);
  a->resend_all = true;
  pthread_mutex_unlock(&a->mu);
  nimbus_task *t = submit_simple(a, p.id, NULL);
  (void)peer_wait(&p.publishes, 1, 2000);
  mqtt_peer_sleep_ms(300); /* time for a second copy to arrive */
  assert_int_equal(atomic_load(&p.publishes), 1);

  nimbus_task_release(t);
  peer_end(&p, th, a);
}

/* The link drops while a task's publish is unacknowledged. When the broker
 * kept the session, Paho sends that publish again itself (DUP), and the
 * reconnect's re-send must not add a copy; when it did not, Paho drops the
 * publish and the re-send sends the task once. */
static void reconnect_case(bool session_present, int dups_want) {
  peer p = {.id = session_present ? "reconnect-kept-01" : "reconnect-new-001",
            .conns = 2,
            .drop_first = true,
            .session_present = session_present};
  pthread_t th;
  nimbus_agent_opts o;
  opts_fill(&o);
  nimbus_agent *a = peer_connect(&p, &th, &o);
  nimbus_task *t = submit_simple(a, p.id, NULL);
  /* Paho reconnects after 1 s; the second SUBACK starts the re-send. */
  assert_int_equal(peer_wait(&p.subscribed, 2, 5000), 2);
  (void)peer_wait(&p.publishes_later, 1, 2000);
  mqtt_peer_sleep_ms(300); /* time for a second copy to arrive */
  assert_int_equal(atomic_load(&p.publishes_later), 1);
  assert_int_equal(atomic_load(&p.dups_later), dups_want);
  nimbus_task_release(t);
  peer_end(&p, th, a);
}

static void test_reconnect_session_kept(void **state) {
  (void)state;
  reconnect_case(true, 1);
}

static void test_reconnect_session_new(void **state) {
  (void)state;
  reconnect_case(false, 0);
}

/* A subscription refused on a reconnect does not leave the agent stuck
 * offline until the link drops again: it says why and subscribes again
 * after a back-off, and then it is up. */
static void test_resubscribe_after_refusal(void **state) {
  (void)state;
  peer p = {.id = "resubscribe-0001",
            .conns = 2,
            .drop_first = true,
            .session_present = true,
            .refuse_later_once = true};
  pthread_t th;
  nimbus_agent_opts o;
  opts_fill(&o);
  nimbus_agent *a = peer_connect(&p, &th, &o);
  nimbus_task *t = submit_simple(a, p.id, NULL); /* its publish drops */
  assert_int_equal(peer_wait(&p.refused, 1, 5000), 1);
  mqtt_peer_sleep_ms(100);
  assert_false(nimbus_agent_connected(a));
  assert_non_null(strstr(nimbus_agent_errstr(a), "refused the subscription"));
  assert_int_equal(peer_wait(&p.subscribed, 2, 5000), 2);
  for (int i = 0; i < 100 && !nimbus_agent_connected(a); i++)
    mqtt_peer_sleep_ms(10);
  assert_true(nimbus_agent_connected(a));
  nimbus_task_release(t);
  peer_end(&p, th, a);
}

/* The session of an extra slot lasts at most a day, and ends with a clean
 * DISCONNECT (Session Expiry Interval 0); slot 0's, the installation's own,
 * keeps its 7 days through the DISCONNECT. */
static void test_extra_session_ends(void **state) {
  (void)state;
  char dir[64];
  tmpdir_make(dir, sizeof dir);
  nimbus_agent_opts o;
  opts_stored(&o, dir);
  nimbus_agent *first = NULL;
  assert_int_equal(nimbus_agent_new(&o, &first), 0); /* slot 0, idle */

  peer p = {.id = "extra-session-01"};
  pthread_t th;
  nimbus_agent *extra = peer_connect(&p, &th, &o);
  assert_non_null(strstr(nimbus_agent_client_id(extra), "-1"));
  peer_end(&p, th, extra);
  assert_int_equal(atomic_load(&p.connect_expiry), AG_EXTRA_EXPIRY_S);
  assert_int_equal(atomic_load(&p.disconnect_expiry), 0);

  nimbus_agent_free(first);
  peer q = {.id = "own-session-0001"};
  nimbus_agent *own = peer_connect(&q, &th, &o);
  assert_null(strstr(nimbus_agent_client_id(own), "-1"));
  peer_end(&q, th, own);
  assert_int_equal(atomic_load(&q.connect_expiry), AG_DEFAULT_EXPIRY_S);
  assert_int_equal(atomic_load(&q.disconnect_expiry), -1);
  tmpdir_remove(dir);
}

/* Without a broker, connect tries again until its time is up, then fails
 * with EMQTT and says why. */
static void test_connect_refused(void **state) {
  (void)state;
  nimbus_agent *a = agent_make(0, 0, 0);
  int64_t t0 = nb_mono_ms();
  assert_int_equal(nimbus_agent_connect(a, 700), NIMBUS_EMQTT);
  int64_t took = nb_mono_ms() - t0;
  assert_true(took >= 600 && took < 3000);
  assert_non_null(strstr(nimbus_agent_errstr(a), "cannot connect to"));
  assert_false(nimbus_agent_connected(a));
  /* May be tried again. */
  assert_int_equal(nimbus_agent_connect(a, 300), NIMBUS_EMQTT);
  nimbus_agent_free(a);
}

/* common/src/paho_lean.c wraps usleep for Paho's two 100 ms sleeps. Any
 * other usleep, and that very length outside a Paho stop, must still sleep
 * the whole time asked (this binary links the wrap: nimbus_paho). */
static void test_usleep_passes_through(void **state) {
  (void)state;
  const useconds_t asks[] = {1000, 50000, 100000};
  for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
    int64_t t0 = nb_mono_ms();
    assert_int_equal(usleep(asks[i]), 0);
    int64_t took = nb_mono_ms() - t0;
    assert_true(took >= (int64_t)(asks[i] / 1000) - 1);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_usleep_passes_through),
      cmocka_unit_test(test_json_to_msgpack_bytes),
      cmocka_unit_test(test_json_roundtrip),
      cmocka_unit_test(test_json_rejects),
      cmocka_unit_test(test_msgpack_to_json_kinds),
      cmocka_unit_test(test_reply_to_json),
      cmocka_unit_test(test_device_id),
      cmocka_unit_test(test_session_slots),
      cmocka_unit_test(test_agent_new_checks),
      cmocka_unit_test(test_submit_checks),
      cmocka_unit_test(test_max_inflight),
      cmocka_unit_test(test_final_reply),
      cmocka_unit_test(test_callbacks),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_notice),
      cmocka_unit_test(test_resend_clock),
      cmocka_unit_test(test_free_with_tasks),
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test(test_connect_resend_once),
      cmocka_unit_test(test_extra_session_ends),
      cmocka_unit_test(test_reconnect_session_kept),
      cmocka_unit_test(test_reconnect_session_new),
      cmocka_unit_test(test_resubscribe_after_refusal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
