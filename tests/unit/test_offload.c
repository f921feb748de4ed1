/* Unit tests of libnimbus-agent's offload call (nimbus/agent.h, "Compute
 * offload"), without a network:
 *
 * - the op-string parser: names, parameters, every kind of value (a whole
 *   number is an int however it is written, else a float64; true/false;
 *   anything else a string), the limits, and a sentence naming the op for
 *   each mistake;
 * - nimbus_offload's checks of its options (nothing is sent, no callback);
 * - a whole run against a cloud the test plays: a thread takes each task
 *   from the agent's table of outstanding tasks as the broker would get
 *   it, checks its args and data, and answers through ag_agent_on_message
 *   as Paho's receive thread would: progress, an inline result written to
 *   a file and to memory, an error's code and words, a 503 with
 *   retry_after sent again with the same id (and one without it, not),
 *   bytes without the result's SHA-256 not trusted, task.cancel on stop,
 *   silence ending in a timeout, a large input uploaded (blob.has) and
 *   named by its hash instead of sent inline, and an output that does
 *   not come inline downloaded (blob.get) into a file and memory, or into
 *   memory alone through a scratch file that is removed.
 *
 * The agent's sources are compiled into this test, so its internals are
 * visible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ag_internal.h"
#include "bk_pipe.h"
#include "nb_util.h"

/* ---- The parser ---------------------------------------------------------- */

typedef struct parsed {
  msgpack_object v;
  msgpack_zone *z;
  uint8_t *buf;
} parsed;

static void parse_ok(parsed *p, const char *const *ops, size_t n) {
  size_t len = 0;
  char err[256];
  int rc = nimbus_offload_ops_parse(ops, n, &p->buf, &len, err, sizeof err);
  if (rc != 0)
    fail_msg("parse of \"%s\"...: %s", ops[0], err);
  assert_int_equal(sc_value_decode(p->buf, len, &p->v, &p->z, err, sizeof err),
                   0);
  assert_int_equal(p->v.type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(p->v.via.array.size, n);
}

static void parse_free(parsed *p) {
  msgpack_zone_free(p->z);
  free(p->buf);
}

/* The value of `key` in the single op `s`. */
static msgpack_object one_value(const char *s, const char *key) {
  parsed p;
  parse_ok(&p, &s, 1);
  const msgpack_object *m = &p.v.via.array.ptr[0];
  assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
  const msgpack_object *v = sc_map_get(m, key);
  if (v == NULL)
    fail_msg("\"%s\" has no %s", s, key);
  msgpack_object copy = *v;
  /* Strings are compared before the zone goes: copy them to static. */
  static char sbuf[8][64];
  static int si;
  if (copy.type == MSGPACK_OBJECT_STR) {
    char *d = sbuf[si++ % 8];
    snprintf(d, 64, "%.*s", (int)copy.via.str.size, copy.via.str.ptr);
    copy.via.str.ptr = d;
  }
  parse_free(&p);
  return copy;
}

static void expect_int(const char *s, const char *key, int64_t want) {
  msgpack_object v = one_value(s, key);
  if (v.type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
      v.type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
    fail_msg("%s: %s is of type %d, not an int", s, key, v.type);
  assert_int_equal(v.via.i64, want);
}

static void expect_float(const char *s, const char *key, double want) {
  msgpack_object v = one_value(s, key);
  if (v.type != MSGPACK_OBJECT_FLOAT64)
    fail_msg("%s: %s is of type %d, not a float64", s, key, v.type);
  assert_true(v.via.f64 == want);
}

static void expect_str(const char *s, const char *key, const char *want) {
  msgpack_object v = one_value(s, key);
  if (v.type != MSGPACK_OBJECT_STR)
    fail_msg("%s: %s is of type %d, not a string", s, key, v.type);
  assert_string_equal(v.via.str.ptr, want);
}

static void expect_bad(const char *const *ops, size_t n, const char *want) {
  uint8_t *out = (uint8_t *)"untouched";
  size_t len = 7;
  char err[256];
  assert_int_equal(
      nimbus_offload_ops_parse(ops, n, &out, &len, err, sizeof err),
      NIMBUS_EINVAL);
  assert_null(out);
  assert_int_equal(len, 0);
  if (strstr(err, want) == NULL)
    fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

static void expect_bad1(const char *op, const char *want) {
  expect_bad(&op, 1, want);
}

static void test_parse_values(void **state) {
  (void)state;
  expect_int("blur:sigma=4", "sigma", 4);
  expect_int("blur:sigma=4.0", "sigma", 4);
  expect_int("blur:sigma=4.", "sigma", 4);
  expect_int("x:a=+2", "a", 2);
  expect_int("x:a=-3", "a", -3);
  expect_int("x:a=-0", "a", 0);
  expect_int("x:a=1e3", "a", 1000);
  expect_int("x:a=2.5E1", "a", 25);
  expect_int("x:a=9223372036854775807", "a", INT64_MAX);
  expect_int("x:a=-9223372036854775808", "a", INT64_MIN);
  /* Written as an integer, kept exact beyond a double's 53 bits. */
  expect_int("x:a=9007199254740993", "a", 9007199254740993LL);
  expect_float("blur:sigma=0.5", "sigma", 0.5);
  expect_float("x:a=.25", "a", 0.25);
  expect_float("x:a=1.5e-1", "a", 0.15);
  expect_float("x:a=-2.75", "a", -2.75);
  /* Past int64: a whole number still, but only a float holds it. */
  expect_float("x:a=9223372036854775808", "a", 9223372036854775808.0);

  msgpack_object v = one_value("x:a=true", "a");
  assert_int_equal(v.type, MSGPACK_OBJECT_BOOLEAN);
  assert_true(v.via.boolean);
  v = one_value("x:a=true,b=false", "b");
  assert_int_equal(v.type, MSGPACK_OBJECT_BOOLEAN);
  assert_false(v.via.boolean);

  expect_str("resize:width=800,fit=fill", "fit", "fill");
  expect_str("resize:width=800,fit=fill", "op", "resize");
  expect_int("resize:width=800,fit=fill", "width", 800);
  /* Not decimal numbers, so strings: hex, inf, nan, half a number. */
  expect_str("x:a=0x10", "a", "0x10");
  expect_str("x:a=inf", "a", "inf");
  expect_str("x:a=nan", "a", "nan");
  expect_str("x:a=1e", "a", "1e");
  expect_str("x:a=-", "a", "-");
  expect_str("x:a=.", "a", ".");
  expect_str("x:a=4px", "a", "4px");
  expect_str("x:a=True", "a", "True");
  /* Only the first '=' splits; ':' after the name is the value's own. */
  expect_str("x:a=b=c", "a", "b=c");
  expect_str("x:t=1:2", "t", "1:2");
  expect_str("x:Mixed_Case9=v", "Mixed_Case9", "v");
}

static void test_parse_shape(void **state) {
  (void)state;
  /* An op with no parameters is a map of one; order is kept. */
  const char *ops[] = {"grayscale", "blur:sigma=4", "resize:width=800",
                       "strip"};
  parsed p;
  parse_ok(&p, ops, 4);
  static const char *const names[] = {"grayscale", "blur", "resize", "strip"};
  static const uint32_t sizes[] = {1, 2, 2, 1};
  for (uint32_t i = 0; i < 4; i++) {
    const msgpack_object *m = &p.v.via.array.ptr[i];
    assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(m->via.map.size, sizes[i]);
    /* "op" comes first. */
    assert_true(m->via.map.ptr[0].key.via.str.size == 2 &&
                memcmp(m->via.map.ptr[0].key.via.str.ptr, "op", 2) == 0);
    const msgpack_object *name = sc_map_get(m, "op");
    assert_non_null(name);
    assert_int_equal(name->via.str.size, strlen(names[i]));
    assert_memory_equal(name->via.str.ptr, names[i], strlen(names[i]));
  }
  parse_free(&p);

  /* The exact bytes of one: [{op: "blur", sigma: 4}]. */
  const char *blur = "blur:sigma=4";
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(nimbus_offload_ops_parse(&blur, 1, &buf, &len, NULL, 0), 0);
  static const uint8_t want[] = {0x91, 0x82, 0xa2, 'o', 'p',  0xa4,
                                 'b',  'l',  'u',  'r', 0xa5, 's',
                                 'i',  'g',  'm',  'a', 0x04};
  assert_int_equal(len, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
  free(buf);

  /* 32 ops go; 33 do not. */
  const char *many[NIMBUS_OFFLOAD_OPS_MAX + 1];
  for (size_t i = 0; i <= NIMBUS_OFFLOAD_OPS_MAX; i++)
    many[i] = "strip";
  parse_ok(&p, many, NIMBUS_OFFLOAD_OPS_MAX);
  parse_free(&p);
  expect_bad(many, NIMBUS_OFFLOAD_OPS_MAX + 1, "at most 32");
}

static void test_parse_errors(void **state) {
  (void)state;
  expect_bad(NULL, 0, "no ops");
  expect_bad1("", "the op's name must be");
  expect_bad1("Blur:sigma=4", "the op's name must be");
  expect_bad1("bl-ur", "the op's name must be");
  expect_bad1(":sigma=4", "the op's name must be");
  expect_bad1("a_name_of_thirty_three_characters", "the op's name must be");
  expect_bad1("blur:", "nothing after ':'");
  expect_bad1("blur:sigma", "\"sigma\" has no value");
  expect_bad1("blur:sigma=", "\"sigma\" has no value");
  expect_bad1("blur:=4", "is not a parameter name");
  expect_bad1("blur:si-gma=4", "\"si-gma\" is not a parameter name");
  expect_bad1("blur:op=4", "\"op\" is the op's name");
  expect_bad1("blur:a=1,a=2", "parameter \"a\" is given twice");
  expect_bad1("blur:a=1,", "an empty parameter");
  expect_bad1("blur:a=1,,b=2", "an empty parameter");
  expect_bad1("blur:sigma=1e999", "the number 1e999 is out of range");
  /* The sentence names the op by its place and its text. */
  const char *two[] = {"blur:sigma=4", "resize:width"};
  expect_bad(two, 2, "op 2 (\"resize:width\"): \"width\" has no value");
  const char *hole[] = {"strip", NULL};
  expect_bad(hole, 2, "op 2 is missing");
  /* No place to put the result. */
  char err[128];
  assert_int_equal(
      nimbus_offload_ops_parse(two, 1, NULL, NULL, err, sizeof err),
      NIMBUS_EINVAL);
}

/* ---- An agent without a broker ------------------------------------------- */

static nimbus_agent *agent_make(void) {
  nimbus_agent_opts o;
  nimbus_agent_opts_init(&o);
  o.uri = "tcp://127.0.0.1:1";
  o.terminal = "t1";
  o.password = "pw";
  o.device_id = "testdevice01";
  nimbus_agent *a = NULL;
  assert_int_equal(nimbus_agent_new(&o, &a), 0);
  return a;
}

static int outstanding(nimbus_agent *a) {
  pthread_mutex_lock(&a->mu);
  int n = a->outstanding;
  pthread_mutex_unlock(&a->mu);
  return n;
}

typedef struct calls {
  atomic_int progress, stops;
  atomic_llong last_done[4], last_total[4], count[4];
  pthread_t caller;
  atomic_bool other_thread; /* a callback ran off the calling thread */
  atomic_bool stop_now;
} calls;

static void on_progress(void *ctx, int phase, int64_t done, int64_t total) {
  calls *c = ctx;
  assert_true(phase >= NIMBUS_OFFLOAD_UPLOAD &&
              phase <= NIMBUS_OFFLOAD_DOWNLOAD);
  if (!pthread_equal(pthread_self(), c->caller))
    atomic_store(&c->other_thread, true);
  atomic_fetch_add(&c->progress, 1);
  atomic_store(&c->last_done[phase], done);
  atomic_store(&c->last_total[phase], total);
  atomic_fetch_add(&c->count[phase], 1);
}

static bool on_stop(void *ctx) {
  calls *c = ctx;
  atomic_fetch_add(&c->stops, 1);
  return atomic_load(&c->stop_now);
}

static const char *const blur_op[] = {"blur:sigma=4"};

static void base_opts(nimbus_offload_opts *o, calls *c) {
  nimbus_offload_opts_init(o);
  o->type = "process.image";
  o->in_data = (const uint8_t *)"picture";
  o->in_len = 7;
  o->has_in_data = true;
  o->op_strings = blur_op;
  o->nop_strings = 1;
  o->on_progress = on_progress;
  o->ctx = c;
  o->timeout_ms = 5000;
}

static void expect_einval(nimbus_agent *a, const nimbus_offload_opts *o,
                          const char *want) {
  nimbus_offload_result r;
  assert_int_equal(nimbus_offload(a, o, &r), NIMBUS_EINVAL);
  if (strstr(r.error, want) == NULL)
    fail_msg("error \"%s\" does not say \"%s\"", r.error, want);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.task_id, "");
  assert_null(r.data);
  nimbus_offload_result_fini(&r);
  nimbus_offload_result_fini(&r); /* twice is harmless */
  assert_int_equal(outstanding(a), 0);
}

static void test_offload_checks(void **state) {
  (void)state;
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  nimbus_offload_opts o;
  static const uint8_t not_map[] = {0x91, 0x01};
  static const uint8_t with_blob[] = {0x81, 0xa4, 'b', 'l', 'o', 'b', 0x01};
  static const uint8_t packed_ok[] = {0x91, 0x81, 0xa2, 'o', 'p', 0xa5,
                                      's',  't',  'r',  'i', 'p'};
  static const uint8_t packed_no_op[] = {0x91, 0x80};

  base_opts(&o, &c);
  o.type = NULL;
  expect_einval(a, &o, "type must be");
  o.type = "process/image";
  expect_einval(a, &o, "type must be");
  base_opts(&o, &c);
  o.in_path = "/etc/hostname";
  expect_einval(a, &o, "exactly one input");
  base_opts(&o, &c);
  o.has_in_data = false;
  expect_einval(a, &o, "exactly one input");
  o.in_blob = "ABCDEF";
  expect_einval(a, &o, "64 lowercase hex");
  base_opts(&o, &c);
  o.in_data = NULL;
  expect_einval(a, &o, "in_data is NULL");
  base_opts(&o, &c);
  o.op_strings = NULL;
  expect_einval(a, &o, "either packed");
  o.ops = packed_ok;
  o.ops_len = sizeof packed_ok;
  o.op_strings = blur_op;
  expect_einval(a, &o, "either packed");
  o.op_strings = NULL;
  o.ops = packed_no_op;
  o.ops_len = sizeof packed_no_op;
  expect_einval(a, &o, "each with an \"op\" string");
  o.ops = not_map;
  o.ops_len = sizeof not_map;
  expect_einval(a, &o, "packed array");
  base_opts(&o, &c);
  const char *bad[] = {"blur:sigma"};
  o.op_strings = bad;
  expect_einval(a, &o, "op 1 (\"blur:sigma\"): \"sigma\" has no value");
  base_opts(&o, &c);
  o.args = not_map;
  o.args_len = sizeof not_map;
  expect_einval(a, &o, "args must be one packed msgpack map");
  o.args = with_blob;
  o.args_len = sizeof with_blob;
  expect_einval(a, &o, "may not hold \"blob\"");
  base_opts(&o, &c);
  o.quality = NAN;
  expect_einval(a, &o, "quality must be a number");
  o.quality = 0;
  o.timeout_ms = -1;
  expect_einval(a, &o, "may not be negative");
  base_opts(&o, &c);
  o.format = "";
  expect_einval(a, &o, "format is empty");
  base_opts(&o, &c);
  o.out_path = "";
  expect_einval(a, &o, "out_path is empty");

  nimbus_offload_result r;
  assert_int_equal(nimbus_offload(NULL, &o, &r), NIMBUS_EINVAL);
  assert_int_equal(nimbus_offload(a, NULL, &r), NIMBUS_EINVAL);
  assert_int_equal(nimbus_offload(a, &o, NULL), NIMBUS_EINVAL);
  nimbus_offload_result_fini(NULL);
  /* A call refused for its options calls neither callback. */
  assert_int_equal(atomic_load(&c.progress), 0);
  assert_int_equal(atomic_load(&c.stops), 0);
  nimbus_agent_free(a);
}

/* ---- A cloud played by the test ------------------------------------------ */

enum {
  CLOUD_OK = 0,    /* progress, then ok with the output inline */
  CLOUD_ERROR,     /* 415 with help */
  CLOUD_RETRY,     /* 503 with retry_after, then ok */
  CLOUD_503,       /* 503 without retry_after */
  CLOUD_BAD_BYTES, /* ok, inline bytes without the blob's hash; blob.get 404 */
  CLOUD_CANCEL,    /* nothing until task.cancel, then 499 */
  CLOUD_SILENT,    /* nothing at all */
  CLOUD_UPLOAD,    /* blob.has: nothing missing; then ok naming args.blob */
  CLOUD_DOWNLOAD   /* ok without inline data (as a replay); blob.get served */
};

#define MAX_SEEN 16

typedef struct cloud {
  nimbus_agent *a;
  calls *c;
  int mode;
  atomic_bool quit;
  pthread_t th;
  const uint8_t *out; /* the output it answers with */
  size_t out_len;
  const uint8_t *in; /* the input it expects */
  size_t in_len;
  /* What it saw: each task's type and id, in order. */
  char types[MAX_SEEN][64];
  char ids[MAX_SEEN][SC_ID_MAX + 1];
  atomic_int nseen;
  char process_id[SC_ID_MAX + 1];
  char cancel_target[SC_ID_MAX + 1];
  char blob_arg[65];
  /* The process task's args.format, args.quality (its msgpack type) and
   * args.mode (an extra). */
  char format[16], extra_mode[16];
  int quality_type;
  int64_t quality;
  atomic_int failures; /* checks of the task that failed (on its thread) */
  char failure[256];
} cloud;

static void cloud_fail(cloud *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cloud_fail(cloud *k, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (atomic_fetch_add(&k->failures, 1) == 0)
    vsnprintf(k->failure, sizeof k->failure, fmt, ap);
  va_end(ap);
}

static void cloud_reply(cloud *k, const sc_reply_enc *r) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  if (sc_reply_encode(&sb, r) != 0)
    cloud_fail(k, "cannot encode a reply");
  else
    ag_agent_on_message(k->a, k->a->reply_topic, strlen(k->a->reply_topic),
                        sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000,
                        .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Packs the ok result of a process.image task. */
static void pack_result(msgpack_sbuffer *sb, const char *hex, size_t size,
                        bool cached) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 7);
  bk_pk_kv_str(&pk, "blob", hex);
  bk_pk_kv_int(&pk, "size", (int64_t)size);
  bk_pk_str(&pk, "cached");
  if (cached)
    msgpack_pack_true(&pk);
  else
    msgpack_pack_false(&pk);
  bk_pk_kv_int(&pk, "width", 3);
  bk_pk_kv_int(&pk, "height", 2);
  bk_pk_kv_int(&pk, "bands", 3);
  bk_pk_kv_str(&pk, "format", "webp");
}

static void answer_ok(cloud *k, const char *id, bool honest) {
  uint8_t d[32];
  char hex[65];
  nb_sha256(k->out, k->out_len, d);
  if (!honest)
    d[0] ^= 1;
  nb_hex(d, 32, hex);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  pack_result(&sb, hex, k->out_len, false);
  sc_reply_enc r = {.id = id,
                    .status = SC_STATUS_OK,
                    .result = (const uint8_t *)sb.data,
                    .result_len = sb.size,
                    .data = k->out,
                    .data_len = k->out_len,
                    .has_data = true};
  cloud_reply(k, &r);
  msgpack_sbuffer_destroy(&sb);
}

static void answer_error(cloud *k, const char *id, int code, const char *error,
                         const char *help, const uint8_t *result,
                         size_t result_len) {
  sc_reply_enc r = {.id = id,
                    .status = SC_STATUS_ERROR,
                    .code = code,
                    .error = error,
                    .help = help,
                    .result = result,
                    .result_len = result_len};
  cloud_reply(k, &r);
}

/* The checks every process.image task of these runs must pass. */
static void check_process_args(cloud *k, const sc_task *t) {
  const msgpack_object *f = sc_map_get(t->args, "format");
  const msgpack_object *q = sc_map_get(t->args, "quality");
  const msgpack_object *m = sc_map_get(t->args, "mode");
  if (f != NULL && f->type == MSGPACK_OBJECT_STR)
    snprintf(k->format, sizeof k->format, "%.*s", (int)f->via.str.size,
             f->via.str.ptr);
  if (m != NULL && m->type == MSGPACK_OBJECT_STR)
    snprintf(k->extra_mode, sizeof k->extra_mode, "%.*s", (int)m->via.str.size,
             m->via.str.ptr);
  if (q != NULL) {
    k->quality_type = q->type;
    k->quality = q->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? q->via.i64 : -1;
  }
  const msgpack_object *ops = sc_map_get(t->args, "ops");
  if (ops == NULL || ops->type != MSGPACK_OBJECT_ARRAY ||
      ops->via.array.size != 1) {
    cloud_fail(k, "args.ops is not an array of one");
    return;
  }
  const msgpack_object *sigma = sc_map_get(&ops->via.array.ptr[0], "sigma");
  if (sigma == NULL || sigma->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
      sigma->via.u64 != 4)
    cloud_fail(k, "args.ops[0].sigma is not the int 4");
  if (k->mode == CLOUD_UPLOAD) {
    const msgpack_object *b = sc_map_get(t->args, "blob");
    if (b == NULL || b->type != MSGPACK_OBJECT_STR || b->via.str.size != 64)
      cloud_fail(k, "an uploaded input is not named by args.blob");
    else
      snprintf(k->blob_arg, sizeof k->blob_arg, "%.*s", 64, b->via.str.ptr);
    if (t->has_data)
      cloud_fail(k, "an uploaded input came inline too");
    return;
  }
  if (sc_map_get(t->args, "blob") != NULL)
    cloud_fail(k, "an inline input has args.blob");
  if (!t->has_data || t->data_len != k->in_len ||
      memcmp(t->data, k->in, k->in_len) != 0)
    cloud_fail(k, "the inline data is not the input");
}

static void cloud_handle(cloud *k, const char *type, const sc_task *t) {
  int n = atomic_load(&k->nseen);
  if (n < MAX_SEEN) {
    snprintf(k->types[n], sizeof k->types[n], "%s", type);
    snprintf(k->ids[n], sizeof k->ids[n], "%s", t->id);
    atomic_store(&k->nseen, n + 1);
  }
  if (strcmp(type, "task.cancel") == 0) {
    const msgpack_object *tk = sc_map_get(t->args, "task");
    if (tk != NULL && tk->type == MSGPACK_OBJECT_STR)
      snprintf(k->cancel_target, sizeof k->cancel_target, "%.*s",
               (int)tk->via.str.size, tk->via.str.ptr);
    static const uint8_t running[] = {0x81, 0xa5, 's', 't', 'a', 't', 'e', 0xa7,
                                      'r',  'u',  'n', 'n', 'i', 'n', 'g'};
    sc_reply_enc r = {.id = t->id,
                      .status = SC_STATUS_OK,
                      .result = running,
                      .result_len = sizeof running};
    cloud_reply(k, &r);
    answer_error(k, k->process_id, 499, "the task was cancelled", NULL, NULL,
                 0);
    return;
  }
  if (strcmp(type, "blob.has") == 0) {
    /* {missing: []}: the cloud has it already. */
    static const uint8_t none[] = {0x81, 0xa7, 'm', 'i', 's',
                                   's',  'i',  'n', 'g', 0x90};
    sc_reply_enc r = {.id = t->id,
                      .status = SC_STATUS_OK,
                      .result = none,
                      .result_len = sizeof none};
    cloud_reply(k, &r);
    return;
  }
  if (strcmp(type, "blob.get") == 0 && k->mode == CLOUD_DOWNLOAD) {
    int64_t off = -1, len = -1;
    (void)bk_obj_int(sc_map_get(t->args, "offset"), &off);
    (void)bk_obj_int(sc_map_get(t->args, "length"), &len);
    if (off < 0 || len <= 0 || len > SC_SEGMENT || (size_t)off > k->out_len) {
      cloud_fail(k, "blob.get of %lld at %lld", (long long)len, (long long)off);
      return;
    }
    size_t n = k->out_len - (size_t)off < (size_t)len ? k->out_len - (size_t)off
                                                      : (size_t)len;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    bk_pk_kv_int(&pk, "size", (int64_t)k->out_len);
    bk_pk_kv_int(&pk, "offset", off);
    sc_reply_enc r = {.id = t->id,
                      .status = SC_STATUS_OK,
                      .result = (const uint8_t *)sb.data,
                      .result_len = sb.size,
                      .data = k->out + off,
                      .data_len = n,
                      .has_data = true};
    cloud_reply(k, &r);
    msgpack_sbuffer_destroy(&sb);
    return;
  }
  if (strcmp(type, "blob.get") == 0) {
    answer_error(k, t->id, 404, "there is no such blob", NULL, NULL, 0);
    return;
  }
  if (strcmp(type, "process.image") != 0) {
    cloud_fail(k, "an unexpected task %s", type);
    return;
  }
  snprintf(k->process_id, sizeof k->process_id, "%s", t->id);
  check_process_args(k, t);
  static const uint8_t retry[] = {0x81, 0xab, 'r', 'e', 't', 'r', 'y',
                                  '_',  'a',  'f', 't', 'e', 'r', 0x32};
  switch (k->mode) {
  case CLOUD_OK:
  case CLOUD_UPLOAD: {
    /* Half way, then wait until the caller has seen it, then the end:
     * progress goes through the agent's thread, a final reply does not. */
    sc_reply_enc p = {
        .id = t->id, .status = SC_STATUS_PROGRESS, .done = 500, .total = 1000};
    cloud_reply(k, &p);
    for (int i = 0;
         i < 400 &&
         atomic_load(&k->c->last_done[NIMBUS_OFFLOAD_PROCESS]) != 500;
         i++)
      sleep_ms(5);
    answer_ok(k, t->id, true);
    break;
  }
  case CLOUD_ERROR:
    answer_error(k, t->id, 415,
                 "args.format \"bmp\" is not one of jpeg, png, webp",
                 "ask for jpeg, png or webp", NULL, 0);
    break;
  case CLOUD_RETRY:
    if (n == 0)
      answer_error(k, t->id, 503, "the state store is busy", NULL, retry,
                   sizeof retry);
    else
      answer_ok(k, t->id, true);
    break;
  case CLOUD_503:
    answer_error(k, t->id, 503,
                 "the image module is not installed on this worker", NULL, NULL,
                 0);
    break;
  case CLOUD_BAD_BYTES:
    answer_ok(k, t->id, false);
    break;
  case CLOUD_CANCEL:
    atomic_store(&k->c->stop_now, true);
    break;
  case CLOUD_DOWNLOAD: {
    uint8_t d[32];
    char hex[65];
    nb_sha256(k->out, k->out_len, d);
    nb_hex(d, 32, hex);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_result(&sb, hex, k->out_len, true);
    sc_reply_enc r = {.id = t->id,
                      .status = SC_STATUS_OK,
                      .result = (const uint8_t *)sb.data,
                      .result_len = sb.size};
    cloud_reply(k, &r);
    msgpack_sbuffer_destroy(&sb);
    break;
  }
  case CLOUD_SILENT:
    break;
  }
}

/* Takes each task the agent holds, once, as the broker would hand it on.
 * A task is known by its id and address while it is outstanding; once it
 * has left the table it is forgotten, so a task sent again with the same
 * id (whose handle may reuse the freed one's address) counts again. */
static void *cloud_main(void *arg) {
  cloud *k = arg;
  char done_ids[MAX_SEEN][SC_ID_MAX + 80];
  int ndone = 0;
  while (!atomic_load(&k->quit)) {
    char topic[256] = "", key[SC_ID_MAX + 80] = "";
    uint8_t *msg = NULL;
    size_t len = 0;
    pthread_mutex_lock(&k->a->mu);
    for (int i = 0; i < ndone;) {
      bool live = false;
      for (nimbus_task *t = k->a->out_head; t != NULL && !live; t = t->onext) {
        char kk[sizeof key];
        snprintf(kk, sizeof kk, "%s %p", t->id, (void *)t);
        live = strcmp(done_ids[i], kk) == 0;
      }
      if (live)
        i++;
      else
        memcpy(done_ids[i], done_ids[--ndone], sizeof done_ids[0]);
    }
    for (nimbus_task *t = k->a->out_head; t != NULL; t = t->onext) {
      char kk[sizeof key];
      snprintf(kk, sizeof kk, "%s %p", t->id, (void *)t);
      bool seen = false;
      for (int i = 0; i < ndone; i++)
        seen = seen || strcmp(done_ids[i], kk) == 0;
      if (seen)
        continue;
      snprintf(topic, sizeof topic, "%s", t->topic);
      snprintf(key, sizeof key, "%s", kk);
      msg = malloc(t->msg_len);
      if (msg != NULL)
        memcpy(msg, t->msg, t->msg_len);
      len = t->msg_len;
      break;
    }
    pthread_mutex_unlock(&k->a->mu);
    if (msg == NULL) {
      sleep_ms(2);
      continue;
    }
    if (ndone < MAX_SEEN)
      snprintf(done_ids[ndone++], sizeof done_ids[0], "%s", key);
    /* <prefix>/task/<type>/<terminal> */
    char type[64] = "";
    const char *p = strstr(topic, "/task/");
    if (p != NULL)
      snprintf(type, sizeof type, "%.*s",
               (int)(strchr(p + 6, '/') != NULL ? strchr(p + 6, '/') - (p + 6)
                                                : (ptrdiff_t)strlen(p + 6)),
               p + 6);
    sc_task t;
    char err[128];
    if (sc_task_decode(msg, len, &t, err, sizeof err) != 0) {
      cloud_fail(k, "a task that does not decode: %s", err);
    } else {
      cloud_handle(k, type, &t);
      sc_task_fini(&t);
    }
    free(msg);
  }
  return NULL;
}

static void cloud_start(cloud *k, nimbus_agent *a, calls *c, int mode) {
  memset(k, 0, sizeof *k);
  k->a = a;
  k->c = c;
  k->mode = mode;
  assert_int_equal(pthread_create(&k->th, NULL, cloud_main, k), 0);
}

static void cloud_stop(cloud *k) {
  atomic_store(&k->quit, true);
  pthread_join(k->th, NULL);
  if (atomic_load(&k->failures) != 0)
    fail_msg("the cloud's checks: %s", k->failure);
}

static char tmp_dir[64];

static void tmp_setup(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_offload.XXXXXX");
  assert_non_null(mkdtemp(tmp_dir));
}

static void tmp_teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  assert_int_equal(system(cmd), 0);
}

static size_t file_read(const char *path, uint8_t *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return (size_t)-1;
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

static void test_offload_inline(void **state) {
  (void)state;
  tmp_setup();
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_OK);
  static const uint8_t output[] = "RIFF....WEBPVP8 blurred";
  k.out = output;
  k.out_len = sizeof output - 1;
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;

  char out_path[128], part[160];
  snprintf(out_path, sizeof out_path, "%s/out.webp", tmp_dir);
  snprintf(part, sizeof part, "%s/.out.webp.part", tmp_dir);
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.format = "webp";
  o.quality = 80;
  static const uint8_t extra[] = {0x81, 0xa4, 'm', 'o', 'd', 'e', 0xa1, 'x'};
  o.args = extra;
  o.args_len = sizeof extra;
  o.out_path = out_path;
  o.want_data = true;
  o.stop = on_stop;
  o.stop_ctx = &c;
  nimbus_offload_result r;
  int rc = nimbus_offload(a, &o, &r);
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  assert_string_equal(r.error, "");
  assert_int_equal(r.code, 0);
  assert_int_equal(r.size, (int64_t)k.out_len);
  assert_false(r.cached);
  assert_true(r.inline_data);
  assert_false(r.uploaded);
  assert_string_equal(r.input, "");
  assert_string_equal(r.task_id, k.process_id);
  uint8_t d[32];
  char hex[65];
  nb_sha256(output, k.out_len, d);
  nb_hex(d, 32, hex);
  assert_string_equal(r.blob, hex);
  /* In memory and in the file, byte for byte; no part file left. */
  assert_non_null(r.data);
  assert_int_equal(r.data_len, k.out_len);
  assert_memory_equal(r.data, output, k.out_len);
  uint8_t buf[256];
  assert_int_equal(file_read(out_path, buf, sizeof buf), k.out_len);
  assert_memory_equal(buf, output, k.out_len);
  struct stat st;
  assert_int_equal(stat(part, &st), -1);
  /* The result map as the cloud sent it. */
  msgpack_object m;
  msgpack_zone *z = NULL;
  char err[128];
  assert_int_equal(
      sc_value_decode(r.result, r.result_len, &m, &z, err, sizeof err), 0);
  int64_t w = 0;
  assert_true(bk_obj_int(sc_map_get(&m, "width"), &w));
  assert_int_equal(w, 3);
  assert_true(bk_obj_str_eq(sc_map_get(&m, "format"), "webp"));
  msgpack_zone_free(z);
  /* Progress: the cloud's 500 and 1000 of 1000, and the download whole; on
   * the calling thread only. */
  assert_true(atomic_load(&c.count[NIMBUS_OFFLOAD_PROCESS]) >= 1);
  assert_int_equal(atomic_load(&c.last_total[NIMBUS_OFFLOAD_PROCESS]), 1000);
  assert_int_equal(atomic_load(&c.last_done[NIMBUS_OFFLOAD_DOWNLOAD]),
                   (long long)k.out_len);
  assert_int_equal(atomic_load(&c.count[NIMBUS_OFFLOAD_UPLOAD]), 0);
  assert_false(atomic_load(&c.other_thread));
  assert_true(atomic_load(&c.stops) >= 1);
  /* The args as sent: format, quality as an int, the extra merged in. */
  assert_string_equal(k.format, "webp");
  assert_int_equal(k.quality_type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_int_equal(k.quality, 80);
  assert_string_equal(k.extra_mode, "x");
  /* One task, nothing left outstanding. */
  assert_int_equal(atomic_load(&k.nseen), 1);
  assert_string_equal(k.types[0], "process.image");
  assert_int_equal(outstanding(a), 0);
  nimbus_offload_result_fini(&r);
  assert_null(r.data);
  assert_null(r.result);
  nimbus_agent_free(a);
  tmp_teardown();
}

static void test_offload_error(void **state) {
  (void)state;
  tmp_setup();
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_ERROR);
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  char out_path[128];
  snprintf(out_path, sizeof out_path, "%s/out.bmp", tmp_dir);
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.out_path = out_path;
  o.want_data = true;
  nimbus_offload_result r;
  assert_int_equal(nimbus_offload(a, &o, &r), NIMBUS_EIO);
  cloud_stop(&k);
  assert_int_equal(r.code, 415);
  assert_string_equal(r.error,
                      "args.format \"bmp\" is not one of jpeg, png, webp");
  assert_string_equal(r.help, "ask for jpeg, png or webp");
  assert_null(r.data);
  assert_string_equal(r.blob, "");
  assert_int_equal(r.size, -1);
  struct stat st;
  assert_int_equal(stat(out_path, &st), -1);
  assert_int_equal(atomic_load(&k.nseen), 1);
  nimbus_offload_result_fini(&r);

  /* A 503 without retry_after is the answer: not sent again. */
  cloud_start(&k, a, &c, CLOUD_503);
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  assert_int_equal(nimbus_offload(a, &o, &r), NIMBUS_EIO);
  cloud_stop(&k);
  assert_int_equal(r.code, 503);
  assert_string_equal(r.error,
                      "the image module is not installed on this worker");
  assert_int_equal(atomic_load(&k.nseen), 1);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
  tmp_teardown();
}

static void test_offload_retry(void **state) {
  (void)state;
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_RETRY);
  static const uint8_t output[] = "out";
  k.out = output;
  k.out_len = 3;
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.want_data = true;
  nimbus_offload_result r;
  int64_t t0 = nb_mono_ms();
  int rc = nimbus_offload(a, &o, &r);
  int64_t took = nb_mono_ms() - t0;
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  /* Sent twice, with the same id, after the 50 ms asked for. */
  assert_int_equal(atomic_load(&k.nseen), 2);
  assert_string_equal(k.ids[0], k.ids[1]);
  assert_string_equal(r.task_id, k.ids[0]);
  assert_true(took >= 50);
  assert_int_equal(r.data_len, 3);
  assert_memory_equal(r.data, "out", 3);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
}

static void test_offload_bad_bytes(void **state) {
  (void)state;
  tmp_setup();
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_BAD_BYTES);
  static const uint8_t output[] = "not what the hash says";
  k.out = output;
  k.out_len = sizeof output - 1;
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  char out_path[128];
  snprintf(out_path, sizeof out_path, "%s/out.jpg", tmp_dir);
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.out_path = out_path;
  nimbus_offload_result r;
  /* Inline bytes without the blob's SHA-256 are not written: the blob is
   * asked for instead (blob.get), which this cloud does not have. */
  assert_int_equal(nimbus_offload(a, &o, &r), NIMBUS_ENOTFOUND);
  cloud_stop(&k);
  assert_false(r.inline_data);
  assert_true(atomic_load(&k.nseen) >= 2);
  assert_string_equal(k.types[1], "blob.get");
  struct stat st;
  assert_int_equal(stat(out_path, &st), -1);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
  tmp_teardown();
}

static void test_offload_cancel(void **state) {
  (void)state;
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_CANCEL);
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.stop = on_stop;
  o.stop_ctx = &c;
  nimbus_offload_result r;
  int64_t t0 = nb_mono_ms();
  assert_int_equal(nimbus_offload(a, &o, &r), NIMBUS_ECANCELED);
  int64_t took = nb_mono_ms() - t0;
  cloud_stop(&k);
  /* task.cancel named the running task; its 499 ended the wait at once. */
  assert_int_equal(atomic_load(&k.nseen), 2);
  assert_string_equal(k.types[1], "task.cancel");
  assert_string_equal(k.cancel_target, k.process_id);
  assert_int_equal(r.code, 499);
  assert_true(took < 2000);
  assert_non_null(strstr(r.error, "cancel"));
  assert_int_equal(outstanding(a), 0);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
}

static void test_offload_timeout(void **state) {
  (void)state;
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  cloud k;
  cloud_start(&k, a, &c, CLOUD_SILENT);
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.timeout_ms = 300;
  o.id = "a-task-id-of-the-caller";
  nimbus_offload_result r;
  int64_t t0 = nb_mono_ms();
  assert_int_equal(nimbus_offload(a, &o, &r), NIMBUS_ETIMEDOUT);
  int64_t took = nb_mono_ms() - t0;
  cloud_stop(&k);
  assert_true(took >= 300 && took < 2000);
  assert_string_equal(r.task_id, "a-task-id-of-the-caller");
  assert_string_equal(k.ids[0], "a-task-id-of-the-caller");
  assert_non_null(strstr(r.error, "no reply"));
  assert_int_equal(outstanding(a), 0);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
}

static void test_offload_upload(void **state) {
  (void)state;
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  /* One byte over a segment: uploaded and named, not inline. */
  size_t n = SC_SEGMENT + 1;
  uint8_t *in = malloc(n);
  assert_non_null(in);
  for (size_t i = 0; i < n; i++)
    in[i] = (uint8_t)(i * 7);
  cloud k;
  cloud_start(&k, a, &c, CLOUD_UPLOAD);
  static const uint8_t output[] = "small";
  k.out = output;
  k.out_len = 5;
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.in_data = in;
  o.in_len = n;
  o.want_data = true;
  nimbus_offload_result r;
  int rc = nimbus_offload(a, &o, &r);
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  uint8_t d[32];
  char hex[65];
  nb_sha256(in, n, d);
  nb_hex(d, 32, hex);
  assert_string_equal(k.types[0], "blob.has");
  assert_string_equal(k.types[1], "process.image");
  assert_string_equal(k.blob_arg, hex);
  assert_string_equal(r.input, hex);
  assert_false(r.uploaded); /* the cloud had it */
  assert_int_equal(r.bytes_sent, 0);
  assert_memory_equal(r.data, "small", 5);
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
  free(in);

  /* Exactly a segment still goes inline. */
  a = agent_make();
  in = calloc(1, SC_SEGMENT);
  assert_non_null(in);
  cloud_start(&k, a, &c, CLOUD_OK);
  atomic_store(&c.last_done[NIMBUS_OFFLOAD_PROCESS], 0);
  k.out = output;
  k.out_len = 5;
  k.in = in;
  k.in_len = SC_SEGMENT;
  base_opts(&o, &c);
  o.in_data = in;
  o.in_len = SC_SEGMENT;
  o.want_data = true;
  rc = nimbus_offload(a, &o, &r);
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  assert_int_equal(atomic_load(&k.nseen), 1);
  assert_string_equal(r.input, "");
  nimbus_offload_result_fini(&r);
  nimbus_agent_free(a);
  free(in);
}

/* An output that does not come inline (over a segment, or a replayed
 * answer) is downloaded through the engine: into OUT and memory at once,
 * or only into memory by way of a scratch file that is removed. */
static void test_offload_download(void **state) {
  (void)state;
  tmp_setup();
  nimbus_agent *a = agent_make();
  calls c = {0};
  c.caller = pthread_self();
  size_t n = 2 * SC_SEGMENT + 12345;
  uint8_t *big = malloc(n);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)(i * 31 + 7);
  cloud k;
  cloud_start(&k, a, &c, CLOUD_DOWNLOAD);
  k.out = big;
  k.out_len = n;
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  char out_path[128], part[160];
  snprintf(out_path, sizeof out_path, "%s/big.png", tmp_dir);
  snprintf(part, sizeof part, "%s/.big.png.part", tmp_dir);
  nimbus_offload_opts o;
  base_opts(&o, &c);
  o.out_path = out_path;
  o.want_data = true;
  nimbus_offload_result r;
  int rc = nimbus_offload(a, &o, &r);
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  assert_false(r.inline_data);
  assert_true(r.cached);
  assert_int_equal(r.size, (int64_t)n);
  assert_int_equal(r.bytes_received, (int64_t)n);
  assert_int_equal(r.data_len, n);
  assert_memory_equal(r.data, big, n);
  uint8_t *back = malloc(n + 1);
  assert_non_null(back);
  assert_int_equal(file_read(out_path, back, n + 1), n);
  assert_memory_equal(back, big, n);
  free(back);
  struct stat st;
  assert_int_equal(stat(part, &st), -1);
  assert_int_equal(atomic_load(&c.last_done[NIMBUS_OFFLOAD_DOWNLOAD]),
                   (long long)n);
  assert_int_equal(atomic_load(&c.last_total[NIMBUS_OFFLOAD_DOWNLOAD]),
                   (long long)n);
  nimbus_offload_result_fini(&r);
  unlink(out_path);

  /* Only into memory: the scratch file in tmp_dir is gone afterwards. */
  cloud_start(&k, a, &c, CLOUD_DOWNLOAD);
  k.out = big;
  k.out_len = n;
  k.in = (const uint8_t *)"picture";
  k.in_len = 7;
  base_opts(&o, &c);
  o.want_data = true;
  o.tmp_dir = tmp_dir;
  rc = nimbus_offload(a, &o, &r);
  cloud_stop(&k);
  if (rc != 0)
    fail_msg("nimbus_offload: %s: %s", nimbus_errname(rc), r.error);
  assert_int_equal(r.data_len, n);
  assert_memory_equal(r.data, big, n);
  nimbus_offload_result_fini(&r);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", tmp_dir);
  assert_int_equal(system(cmd), 0);
  nimbus_agent_free(a);
  free(big);
  tmp_teardown();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_values),
      cmocka_unit_test(test_parse_shape),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_offload_checks),
      cmocka_unit_test(test_offload_inline),
      cmocka_unit_test(test_offload_error),
      cmocka_unit_test(test_offload_retry),
      cmocka_unit_test(test_offload_bad_bytes),
      cmocka_unit_test(test_offload_cancel),
      cmocka_unit_test(test_offload_timeout),
      cmocka_unit_test(test_offload_upload),
      cmocka_unit_test(test_offload_download),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
