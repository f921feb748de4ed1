/* libFuzzer target for every decoder of the protocol module: the task,
 * reply and notice envelopes, bare values, and the canonical form (both
 * kinds) of each task that decodes. Besides "no crash, no leak, no undefined
 * behaviour" it checks the promises sc.h makes: a failed decode leaves nothing
 * to release and a valid or empty id, a decoded task re-encodes into a task
 * that decodes to the same canonical bytes, and its args can be echoed in a
 * reply (diag.echo).
 *
 * Seeds: the golden files are hex text, so an input made only of hex
 * digits and whitespace is also decoded as hex and fed in as bytes; that
 * way `fuzz_decode schemas/golden` starts from real messages. */
#include "nimbus/errors.h"
#include "sc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "fuzz_decode: broken promise: %s\n", what);
    abort();
  }
}

static void one_task(const uint8_t *buf, size_t len) {
  char err[256];
  sc_task t;
  int rc = sc_task_decode(buf, len, &t, err, sizeof err);
  size_t idn = strlen(t.id);
  check(idn == 0 || sc_id_valid(t.id, idn), "task id valid or empty");
  if (rc != 0) {
    check(t.zone_ == NULL, "failed decode holds no zone");
    check(err[0] != '\0', "failed decode says why");
    sc_task_fini(&t);
    return;
  }
  check(t.args != NULL && t.args->type == MSGPACK_OBJECT_MAP, "args map");

  /* Re-encode the decoded task (args through msgpack-c's packer) and make
   * sure it decodes to the same canonical content. */
  msgpack_sbuffer canon1, args, enc, canon2;
  msgpack_sbuffer_init(&canon1);
  msgpack_sbuffer_init(&args);
  msgpack_sbuffer_init(&enc);
  msgpack_sbuffer_init(&canon2);
  check(sc_task_canonical(&canon1, "fuzz.type", &t) == 0, "canonical");
  msgpack_packer pk;
  msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
  check(msgpack_pack_object(&pk, *t.args) == 0, "pack args");
  check(sc_task_encode(&enc, t.id, (const uint8_t *)args.data, args.size,
                       t.data, t.data_len, t.has_data) == 0,
        "a decoded task re-encodes");
  /* What a task may carry, a reply can carry back one level down, as
   * diag.echo does: {result: {args: <args>}}. */
  msgpack_sbuffer echo, echoed;
  msgpack_sbuffer_init(&echo);
  msgpack_sbuffer_init(&echoed);
  msgpack_packer epk;
  msgpack_packer_init(&epk, &echo, msgpack_sbuffer_write);
  check(msgpack_pack_map(&epk, 1) == 0 &&
            msgpack_pack_str_with_body(&epk, "args", 4) == 0 &&
            msgpack_pack_object(&epk, *t.args) == 0,
        "pack the echo");
  sc_reply_enc er = {.id = t.id,
                     .status = SC_STATUS_OK,
                     .result = (const uint8_t *)echo.data,
                     .result_len = echo.size};
  check(sc_reply_encode(&echoed, &er) == 0, "a decoded task's args echo");
  msgpack_sbuffer_destroy(&echo);
  msgpack_sbuffer_destroy(&echoed);
  sc_task t2;
  check(sc_task_decode((const uint8_t *)enc.data, enc.size, &t2, err,
                       sizeof err) == 0,
        "a re-encoded task decodes");
  check(sc_task_canonical(&canon2, "fuzz.type", &t2) == 0, "canonical 2");
  check(canon1.size == canon2.size &&
            memcmp(canon1.data, canon2.data, canon1.size) == 0,
        "re-encoding keeps the canonical content");
  /* The worker's digest form (data as its XXH3-128) is stable too. */
  msgpack_sbuffer x1, x2;
  msgpack_sbuffer_init(&x1);
  msgpack_sbuffer_init(&x2);
  check(sc_task_canonical_write(&x1, msgpack_sbuffer_write, "fuzz.type", &t,
                                SC_CANON_DATA_XXH128) == 0 &&
            sc_task_canonical_write(&x2, msgpack_sbuffer_write, "fuzz.type",
                                    &t2, SC_CANON_DATA_XXH128) == 0,
        "digest form");
  check(x1.size == x2.size && memcmp(x1.data, x2.data, x1.size) == 0,
        "re-encoding keeps the digest form");
  msgpack_sbuffer_destroy(&x1);
  msgpack_sbuffer_destroy(&x2);
  /* The canonical bytes are themselves a strictly valid value. */
  msgpack_object o;
  msgpack_zone *z = NULL;
  if (canon1.size <= SC_MAX_MESSAGE &&
      sc_value_decode((const uint8_t *)canon1.data, canon1.size, &o, &z, err,
                      sizeof err) == 0)
    msgpack_zone_free(z);
  sc_task_fini(&t2);
  sc_task_fini(&t);
  msgpack_sbuffer_destroy(&canon1);
  msgpack_sbuffer_destroy(&args);
  msgpack_sbuffer_destroy(&enc);
  msgpack_sbuffer_destroy(&canon2);
}

static void one_reply(const uint8_t *buf, size_t len) {
  char err[256];
  sc_reply r;
  int rc = sc_reply_decode(buf, len, &r, err, sizeof err);
  if (rc != 0) {
    check(r.zone_ == NULL, "failed reply holds no zone");
    return;
  }
  /* What decodes must encode again, to the same fields. */
  msgpack_sbuffer res, enc;
  msgpack_sbuffer_init(&res);
  msgpack_sbuffer_init(&enc);
  if (r.result) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, &res, msgpack_sbuffer_write);
    check(msgpack_pack_object(&pk, *r.result) == 0, "pack result");
  }
  /* error/help are not NUL-terminated and may hold NULs: only re-encode
   * the ones that make plain C strings. */
  char *e = NULL, *h = NULL;
  if (r.error && memchr(r.error, 0, r.error_len) == NULL)
    e = strndup(r.error, r.error_len);
  if (r.help && memchr(r.help, 0, r.help_len) == NULL)
    h = strndup(r.help, r.help_len);
  if ((r.error == NULL || e) && (r.help == NULL || h)) {
    sc_reply_enc re = {
        r.id,       r.status, r.code,
        e,          h,        r.result ? (const uint8_t *)res.data : NULL,
        res.size,   r.data,   r.data_len,
        r.has_data, r.done,   r.total};
    check(sc_reply_encode(&enc, &re) == 0, "a decoded reply re-encodes");
    sc_reply r2;
    check(sc_reply_decode((const uint8_t *)enc.data, enc.size, &r2, err,
                          sizeof err) == 0,
          "a re-encoded reply decodes");
    check(r2.code == r.code && r2.status == r.status &&
              strcmp(r2.id, r.id) == 0,
          "reply fields survive");
    sc_reply_fini(&r2);
  }
  free(e);
  free(h);
  msgpack_sbuffer_destroy(&res);
  msgpack_sbuffer_destroy(&enc);
  sc_reply_fini(&r);
}

static void one_notice(const uint8_t *buf, size_t len) {
  char err[256];
  sc_notice n;
  if (sc_notice_decode(buf, len, &n, err, sizeof err) != 0) {
    check(n.zone_ == NULL, "failed notice holds no zone");
    return;
  }
  check(n.fields && n.fields->type == MSGPACK_OBJECT_MAP, "notice fields");
  /* Re-encode: every field but v and kind, which the encoder writes. */
  uint32_t cnt = n.fields->via.map.size;
  msgpack_object_kv *kv = malloc((cnt ? cnt : 1) * sizeof *kv);
  if (kv) {
    msgpack_object f = {.type = MSGPACK_OBJECT_MAP};
    msgpack_sbuffer sb;
    sc_notice n2;
    for (uint32_t i = 0; i < cnt; i++) {
      const msgpack_object_kv *e = &n.fields->via.map.ptr[i];
      const msgpack_object *k = &e->key;
      if ((k->via.str.size == 1 && k->via.str.ptr[0] == 'v') ||
          (k->via.str.size == 4 && memcmp(k->via.str.ptr, "kind", 4) == 0))
        continue;
      kv[f.via.map.size++] = *e;
    }
    f.via.map.ptr = kv;
    msgpack_sbuffer_init(&sb);
    check(sc_notice_encode(&sb, n.kind, &f) == 0, "a notice re-encodes");
    check(sc_notice_decode((const uint8_t *)sb.data, sb.size, &n2, err,
                           sizeof err) == 0,
          "a re-encoded notice decodes");
    check(strcmp(n2.kind, n.kind) == 0 &&
              n2.fields->via.map.size == n.fields->via.map.size,
          "notice fields survive");
    sc_notice_fini(&n2);
    msgpack_sbuffer_destroy(&sb);
    free(kv);
  }
  sc_notice_fini(&n);
}

static void one_value(const uint8_t *buf, size_t len) {
  char err[256];
  msgpack_object o;
  msgpack_zone *z = NULL;
  if (sc_value_decode(buf, len, &o, &z, err, sizeof err) == 0) {
    /* A strictly valid value packs back to exactly the same length or
     * shorter (msgpack-c writes the smallest form). */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    check(msgpack_pack_object(&pk, o) == 0, "pack value");
    check(sb.size <= len, "smallest form is not longer");
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_free(z);
  } else {
    check(z == NULL, "failed value holds no zone");
  }
}

/* Runs every argument reader over the keys the args map holds, so their
 * type and bound checks meet every kind of value. */
static void read_args(const msgpack_object *args) {
  char err[128], id[SC_ID_MAX + 1];
  char key[32];
  for (uint32_t i = 0; i < args->via.map.size && i < 8; i++) {
    const msgpack_object *k = &args->via.map.ptr[i].key;
    if (k->via.str.size >= sizeof key)
      continue;
    memcpy(key, k->via.str.ptr, k->via.str.size);
    key[k->via.str.size] = '\0';
    const char *s;
    size_t n;
    int64_t iv;
    double d;
    bool b;
    const msgpack_object *arr;
    sc_arg_str(args, key, true, 1, 64, &s, &n, err, sizeof err);
    sc_arg_int(args, key, true, -5, INT64_MAX, &iv, err, sizeof err);
    sc_arg_num(args, key, false, -1e9, 1e9, &d, err, sizeof err);
    sc_arg_bool(args, key, false, &b, err, sizeof err);
    sc_arg_id(args, key, false, id, err, sizeof err);
    sc_arg_array(args, key, false, 3, &arr, err, sizeof err);
  }
}

/* The input as the args of an otherwise valid task: random bytes rarely
 * make a whole valid task, so this is how the canonical form and the
 * argument readers meet every kind of value. */
static void as_args(const uint8_t *buf, size_t len) {
  static const uint8_t head[] = {0x83, 0xa1, 'v', 0x01, 0xa2, 'i', 'd', 0xb0,
                                 'f',  'u',  'z', 'z',  'f',  'u', 'z', 'z',
                                 'f',  'u',  'z', 'z',  'f',  'u', 'z', 'z',
                                 0xa4, 'a',  'r', 'g',  's'};
  uint8_t *task = malloc(sizeof head + len);
  if (task == NULL)
    return;
  memcpy(task, head, sizeof head);
  if (len)
    memcpy(task + sizeof head, buf, len);
  one_task(task, sizeof head + len);
  char err[256];
  sc_task t;
  if (sc_task_decode(task, sizeof head + len, &t, err, sizeof err) == 0) {
    read_args(t.args);
    sc_task_fini(&t);
  }
  free(task);
}

static void all(const uint8_t *buf, size_t len) {
  one_task(buf, len);
  one_reply(buf, len);
  one_notice(buf, len);
  one_value(buf, len);
  as_args(buf, len);
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Exactly `size` bytes of heap, so ASan sees any read past the end. */
  uint8_t *copy = malloc(size ? size : 1);
  if (copy == NULL)
    return 0;
  if (size)
    memcpy(copy, data, size);
  all(copy, size);

  size_t n = 0, digits = 0;
  int hi = -1;
  bool hex = size > 0;
  for (size_t i = 0; i < size && hex; i++) {
    uint8_t c = data[i];
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r')
      continue;
    int v = hexval(c);
    if (v < 0) {
      hex = false;
    } else if (hi < 0) {
      hi = v;
      digits++;
    } else {
      copy[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  if (hex && digits > 0) {
    /* Shrink to exactly n bytes so over-reads stay visible. */
    uint8_t *bytes = malloc(n ? n : 1);
    if (bytes) {
      memcpy(bytes, copy, n);
      all(bytes, n);
      free(bytes);
    }
  }
  free(copy);
  return 0;
}
