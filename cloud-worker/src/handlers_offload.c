/* The offload machinery (PROTOCOL.md, Compute offload): what every
 * process.* type shares. Which modules a worker serves and their loading
 * on demand are modules.c's (wk_modules.h).
 *
 * For every task of a module's type the machinery, not the module:
 * resolves the input (args.blob, which the caller must be allowed to
 * read, or inline data), enforces the input limit, looks the request up
 * in the result cache (key: the module and its version, the input's
 * SHA-256, the canonical arguments but the input's name), and on a miss
 * runs the module's handler with the input to read and an output to
 * write, then stores the output as a blob (staged segment by segment,
 * hashed, moved into the store as an upload is), records it in the cache
 * (st_result.h), grants the caller the right to read it for result_ttl,
 * and merges blob, size, cached and (for an output of at most one
 * segment) inline data into the module's result map. The tasks are
 * state-changing: claimed, their grant committed with their recorded
 * reply, so a replayed task id answers the same result. */
#include "wk.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_result.h"
#include "wk_modules.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the modules are by default (CMake sets all three): the build
 * tree's NIMBUS_MODULES_DIR for the worker run from the build tree (its
 * executable in NIMBUS_BUILD_BINDIR), else NIMBUS_MODULES_RELDIR from the
 * executable's own directory: an installed worker takes the modules of
 * its own prefix (<prefix>/lib/nimbus/modules), wherever `cmake --install
 * --prefix` put the tree. */
#ifndef NIMBUS_MODULES_DIR
#define NIMBUS_MODULES_DIR "/usr/local/lib/nimbus/modules"
#endif
#ifndef NIMBUS_BUILD_BINDIR
#define NIMBUS_BUILD_BINDIR ""
#endif
#ifndef NIMBUS_MODULES_RELDIR
#define NIMBUS_MODULES_RELDIR "../lib/nimbus/modules"
#endif

static char default_modules_dir[PATH_MAX + sizeof NIMBUS_MODULES_RELDIR] =
    NIMBUS_MODULES_DIR;

void wk_offload_locate_modules(void) {
  char exe[PATH_MAX];
  if (realpath("/proc/self/exe", exe) == NULL)
    return; /* no /proc: the compiled-in directory */
  char *slash = strrchr(exe, '/');
  if (slash == NULL)
    return;
  *slash = '\0';
  char real[PATH_MAX];
  if (NIMBUS_BUILD_BINDIR[0] != '\0' &&
      realpath(NIMBUS_BUILD_BINDIR, real) != NULL && strcmp(real, exe) == 0)
    return; /* the build tree's worker: the build tree's modules */
  snprintf(default_modules_dir, sizeof default_modules_dir, "%s/%s", exe,
           NIMBUS_MODULES_RELDIR);
  /* <prefix>/bin/../lib/nimbus/modules as <prefix>/lib/nimbus/modules when
   * it exists (--print-config shows it so); as it is when not (the worker
   * then says that it finds no such directory). */
  if (realpath(default_modules_dir, real) != NULL)
    memcpy(default_modules_dir, real, strlen(real) + 1);
}

/* An output up to one segment also comes inline (PROTOCOL.md). */
#define INLINE_MAX SC_SEGMENT

typedef struct offload_config {
  char *modules_dir;
  char *modules;
  bool from_storage;
  char *module_key;
  int64_t threads;
  wk_offload_limits lim;
} offload_config;

static offload_config ocfg;

/* ---- The task's input and output ------------------------------------------
 */

typedef struct offload_io {
  /* Input: a stored blob, or the task's inline data. */
  bool in_blob;
  uint8_t in_raw[32];
  const uint8_t *in_mem;
  uint64_t in_size;
  /* The stored input, opened at the first read and kept open to the end
   * (a compressed blob's segment is decompressed once, not once per small
   * read); under mu, since any thread of the module may read. */
  pthread_mutex_t mu;
  st_blob_reader *rd;
  /* Output: staged as upload "out.<task id>" of the terminal (a name no
   * terminal can give: '.' is not allowed in upload names). */
  st_blob_writer *out;
} offload_io;

uint64_t wk_offload_input_size(const wk_ctx *c) {
  return c->offload != NULL ? c->offload->in_size : 0;
}

const uint8_t *wk_offload_input_mem(const wk_ctx *c) {
  return c->offload != NULL ? c->offload->in_mem : NULL;
}

int wk_offload_input_read(wk_ctx *c, uint64_t off, void *buf, size_t n,
                          size_t *got) {
  offload_io *io = c->offload;
  *got = 0;
  if (io == NULL)
    return NIMBUS_EINVAL;
  if (off >= io->in_size || n == 0)
    return 0;
  if (n > io->in_size - off)
    n = (size_t)(io->in_size - off);
  if (!io->in_blob) {
    memcpy(buf, io->in_mem + off, n);
    *got = n;
    return 0;
  }
  pthread_mutex_lock(&io->mu);
  int rc = io->rd != NULL
               ? 0
               : st_blobstore_reader_open(c->blobs, io->in_raw, &io->rd);
  if (rc == 0)
    rc = st_blob_reader_read(io->rd, off, buf, n, got);
  pthread_mutex_unlock(&io->mu);
  /* Gone since the task found it: the collector's doing, an I/O error. */
  return rc == NIMBUS_ENOTFOUND ? NIMBUS_EIO : rc;
}

static void io_init(offload_io *io) {
  memset(io, 0, sizeof *io);
  pthread_mutex_init(&io->mu, NULL);
}

static void io_fini(offload_io *io) {
  st_blob_reader_close(io->rd);
  pthread_mutex_destroy(&io->mu);
  st_blob_writer_free(io->out);
}

int wk_offload_output_write(wk_ctx *c, const void *p, size_t n) {
  offload_io *io = c->offload;
  return io != NULL ? st_blob_writer_write(io->out, p, n) : NIMBUS_EINVAL;
}

const wk_offload_limits *wk_offload_limits_get(void) { return &ocfg.lim; }

/* ---- The cache key ------------------------------------------------------- */

static int buf_write(void *data, const char *p, size_t n) {
  return msgpack_sbuffer_write(data, p, n);
}

/* key = SHA-256 of "nimbus-result/2\n<type>\n<version>\n<module file's
 * SHA-256>\n<input hex>\n"
 * followed by the canonical encoding (SPEC.md section 4) of the task's
 * args without `blob`: the same request on the same bytes, whoever sends
 * it and however its map is ordered. */
static int cache_key(wk_ctx *c, const wk_module *m, const char *in_hex,
                     char key[65]) {
  const msgpack_object *a = c->args;
  msgpack_object_kv kv[64];
  msgpack_object args = *a;
  if (a->type == MSGPACK_OBJECT_MAP) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->via.map.size; i++) {
      const msgpack_object *k = &a->via.map.ptr[i].key;
      if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 4 &&
          memcmp(k->via.str.ptr, "blob", 4) == 0)
        continue;
      if (n == sizeof kv / sizeof kv[0])
        return NIMBUS_ETOOBIG;
      kv[n++] = a->via.map.ptr[i];
    }
    args.via.map.size = n;
    args.via.map.ptr = kv;
  }
  sc_task t = *c->task;
  t.args = &args;
  t.data = NULL;
  t.data_len = 0;
  t.has_data = false;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  char head[512];
  int hn = snprintf(head, sizeof head, "nimbus-result/2\n%s\n%s\n%s\n%s\n",
                    c->type, wk_module_version(m), wk_module_digest(m), in_hex);
  int rc = hn > 0 && (size_t)hn < sizeof head ? 0 : NIMBUS_EINVAL;
  if (rc == 0 && msgpack_sbuffer_write(&sb, head, (size_t)hn) != 0)
    rc = NIMBUS_ENOMEM;
  if (rc == 0)
    rc = sc_task_canonical_write(&sb, buf_write, c->type, &t,
                                 SC_CANON_DATA_BYTES);
  if (rc == 0) {
    uint8_t d[32];
    nb_sha256(sb.data, sb.size, d);
    nb_hex(d, 32, key);
  }
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

/* ---- The result ------------------------------------------------------------
 */

static bool is_reserved_key(const msgpack_object *k) {
  static const char *const keys[] = {"blob", "size", "cached"};
  if (k->type != MSGPACK_OBJECT_STR)
    return true;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (k->via.str.size == strlen(keys[i]) &&
        memcmp(k->via.str.ptr, keys[i], k->via.str.size) == 0)
      return true;
  return false;
}

/* Packs the final result: the module's properties (a packed map, or
 * nothing) with blob, size and cached; the inline data when small. */
static int pack_result(wk_ctx *c, const st_result *r, bool cached,
                       const uint8_t *inline_data) {
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  const msgpack_object *props = NULL;
  if (r->props_len > 0 &&
      msgpack_unpack_next(&up, (const char *)r->props, r->props_len, NULL) ==
          MSGPACK_UNPACK_SUCCESS &&
      up.data.type == MSGPACK_OBJECT_MAP)
    props = &up.data;
  uint32_t n = 3;
  for (uint32_t i = 0; props != NULL && i < props->via.map.size; i++)
    if (!is_reserved_key(&props->via.map.ptr[i].key))
      n++;
  msgpack_sbuffer_clear(&c->result);
  msgpack_pack_map(&c->pk, n);
  wk_pack_str(&c->pk, "blob");
  wk_pack_str(&c->pk, r->blob);
  wk_pack_kv_int(&c->pk, "size", (int64_t)r->size);
  wk_pack_str(&c->pk, "cached");
  if (cached)
    msgpack_pack_true(&c->pk);
  else
    msgpack_pack_false(&c->pk);
  for (uint32_t i = 0; props != NULL && i < props->via.map.size; i++)
    if (!is_reserved_key(&props->via.map.ptr[i].key)) {
      msgpack_pack_object(&c->pk, props->via.map.ptr[i].key);
      msgpack_pack_object(&c->pk, props->via.map.ptr[i].val);
    }
  msgpack_unpacked_destroy(&up);
  int rc = 0;
  if (r->size <= INLINE_MAX) {
    uint8_t *tmp = NULL;
    if (inline_data == NULL && r->size > 0) {
      uint8_t raw[32];
      size_t got = 0;
      (void)nb_unhex32(r->blob, raw);
      if ((tmp = malloc(r->size)) == NULL)
        return wk_fail(c, 500, NULL, "the worker is out of memory");
      if (st_blobstore_read(c->blobs, raw, 0, tmp, r->size, &got) != 0 ||
          got != r->size) {
        free(tmp);
        return wk_disk_error(c, "read a result");
      }
      inline_data = tmp;
    }
    rc = wk_reply_data(c, inline_data != NULL ? inline_data : (uint8_t *)"",
                       r->size);
    free(tmp);
    if (rc != 0)
      return wk_fail(c, 500, NULL, "the worker is out of memory");
  }
  return 0;
}

/* ---- The task ---------------------------------------------------------- */

static int resolve_input(wk_ctx *c, offload_io *io, char in_hex[65]) {
  bool has_blob = sc_map_get(c->args, "blob") != NULL;
  if (has_blob == c->task->has_data)
    return wk_fail(c, 400,
                   "name a stored blob in args.blob, or send the bytes "
                   "(at most 256 KiB) as the task's data",
                   has_blob ? "the task has both args.blob and inline data"
                            : "the task has no input: neither args.blob nor "
                              "inline data");
  if (!has_blob && c->task->data_len > SC_SEGMENT)
    return wk_fail(c, 413,
                   "upload the input as a blob and name it in args.blob",
                   "the inline data is %zu bytes; at most %d come inline",
                   c->task->data_len, SC_SEGMENT);
  if (!has_blob) {
    io->in_mem = c->task->data;
    io->in_size = c->task->data_len;
    uint8_t d[32];
    nb_sha256(io->in_mem, io->in_size, d);
    nb_hex(d, 32, in_hex);
  } else {
    int code = wk_arg_blob(c, "blob", in_hex, io->in_raw);
    if (code != 0)
      return code;
    int64_t size = -1;
    if ((code = wk_blob_need(c, in_hex, &size, NULL)) != 0)
      return code;
    io->in_blob = true;
    io->in_size = (uint64_t)size;
  }
  if ((int64_t)io->in_size > ocfg.lim.max_input)
    return wk_fail(c, 413, "send a smaller input",
                   "the input is %llu bytes; this cloud processes at most "
                   "%lld",
                   (unsigned long long)io->in_size,
                   (long long)ocfg.lim.max_input);
  return 0;
}

/* Stores the output the module wrote as a blob and records the result.
 * Returns 0 with *r filled, or a reply code after wk_fail. */
static int store_output(wk_ctx *c, offload_io *io, const char *key,
                        st_result *r, char hex[65]) {
  bool gone = false;
  int rc = st_blob_writer_finish(io->out, c->redis, c->cfg->worker_id,
                                 c->cfg->lease_ms * 3, hex, &gone);
  /* The module's properties belong to an answer with an output: an error
   * carries its own details only. */
  if (rc != 0)
    c->result.size = 0;
  if (rc == NIMBUS_ETOOBIG)
    return wk_fail(c, 413, "ask for a smaller output",
                   "the output is over %lld bytes",
                   (long long)ocfg.lim.max_output);
  if (rc == NIMBUS_ENOSPC)
    return wk_storage_full(c, "store the output");
  if (rc == NIMBUS_EREDIS)
    return wk_redis_down(c);
  if (rc != 0)
    return wk_disk_error(c, "store the output");
  uint64_t nsegs = 0;
  const uint8_t(*sums)[ST_SEGSUM] = st_blob_writer_sums(io->out, &nsegs);
  size_t plen = c->result.size;
  if (!gone)
    rc = st_result_put(c->redis, key, hex, st_blob_writer_size(io->out), sums,
                       nsegs, plen > 0 ? c->result.data : NULL, plen,
                       nb_now_ms() + c->cfg->result_ttl_ms, r);
  if (gone || rc == NIMBUS_ECONFLICT) {
    wk_retry_after(c, 1000);
    return wk_fail(c, 503, "send the task again in a moment",
                   "the output's blob is being collected right now");
  }
  return rc != 0 ? wk_redis_down(c) : 0;
}

/* The part every run shares, process.* task or not: looks c's request (its
 * type and args, on io's input) up in the cache and on a miss runs module
 * m's handler `fn` (its thread state `mstate`) and stores the output; adds
 * c's terminal's read grant to c's effect. *r names the output (caller
 * storage, st_result_fini), *cached tells whether it came from the cache
 * and *inline_out (may stay NULL) is the output when small and just made,
 * borrowed from io->out. io->out is the caller's to free. Returns 0 or a
 * reply code after wk_fail. */
static int run(wk_ctx *c, wk_module *m, wk_handler_fn fn, void *mstate,
               offload_io *io, const char *in_hex, st_result *r, bool *cached,
               const uint8_t **inline_out) {
  char key[65];
  memset(r, 0, sizeof *r);
  *cached = false;
  *inline_out = NULL;
  if (cache_key(c, m, in_hex, key) != 0)
    return wk_fail(c, 400, NULL, "args has too many keys");
  int64_t t0 = nb_now_ms();
  if (st_result_get(c->redis, key, r) != 0)
    return wk_redis_down(c);
  *cached = r->exists;
  if (!*cached) {
    /* The output's staging name is this run's alone: a worker that lost
     * the task's claim and the one that took it over never write into
     * one file. */
    static atomic_uint_fast64_t runs;
    char upload[256], out_hex[65];
    snprintf(upload, sizeof upload, "out.%s.%s.%llu", c->task->id,
             c->cfg->worker_id, (unsigned long long)atomic_fetch_add(&runs, 1));
    if (st_blob_writer_new(c->blobs, c->terminal, upload,
                           (uint64_t)ocfg.lim.max_output, &io->out) != 0)
      return wk_fail(c, 500, NULL, "the worker is out of memory");
    void *saved = c->tstate;
    c->tstate = mstate;
    c->offload = io;
    int code = fn(c);
    c->offload = NULL;
    c->tstate = saved;
    /* Computed, but no longer this worker's to answer, or no longer
     * wanted: nothing is stored. */
    int live = code == 0 ? wk_checkpoint(c) : 0;
    if (live != 0)
      c->result.size = 0;
    if (live == NIMBUS_ECANCELED)
      code = wk_fail(c, 499, NULL, "cancelled by task.cancel");
    else if (live != 0)
      code = wk_fail(c, 500, NULL, "the task's claim lapsed");
    if (code == 0)
      code = store_output(c, io, key, r, out_hex);
    if (code != 0)
      return code;
    /* A small output comes inline from the writer's buffer, unless an
     * earlier task's entry (the same request) won the race. */
    if (strcmp(r->blob, out_hex) == 0)
      *inline_out = st_blob_writer_small(io->out);
  }
  int64_t now = nb_now_ms();
  if (st_result_grant_effect(c->effect, c->terminal, r->key, r->blob,
                             now + c->cfg->result_ttl_ms, now) != 0)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  NB_INFO("WK-OFFLOAD", "%s %s/%s: %s in %lld ms, %llu bytes out", c->type,
          c->terminal, c->task->id,
          *cached ? "answered from the cache" : "computed",
          (long long)(now - t0), (unsigned long long)r->size);
  return 0;
}

static int module_unavailable(wk_ctx *c, const char *why) {
  return wk_fail(c, 503,
                 "another worker may serve it; else the operator installs "
                 "the module",
                 "%s", why);
}

static int h_offload(wk_ctx *c) {
  wk_module *m = wk_module_of(c->type);
  char why[512];
  wk_handler_fn fn = NULL;
  void *mstate = NULL;
  if (m == NULL)
    return module_unavailable(c, "no module serves this type");
  if (!wk_module_get(m, c, c->tstate, &fn, &mstate, why, sizeof why))
    return module_unavailable(c, why);
  offload_io io;
  io_init(&io);
  char in_hex[65];
  int code = resolve_input(c, &io, in_hex);
  if (code != 0) {
    io_fini(&io);
    return code;
  }
  st_result r;
  bool cached = false;
  const uint8_t *inline_out = NULL;
  code = run(c, m, fn, mstate, &io, in_hex, &r, &cached, &inline_out);
  if (code == 0)
    code = pack_result(c, &r, cached, inline_out);
  io_fini(&io);
  st_result_fini(&r);
  return code;
}

int wk_offload_blob(wk_ctx *c, void **mods, const char *type,
                    const msgpack_object *args, const char in_hex[65],
                    uint64_t in_size, st_result *out) {
  memset(out, 0, sizeof *out);
  wk_module *m = wk_module_of(type);
  char why[512];
  wk_handler_fn fn = NULL;
  void *mstate = NULL;
  if (m == NULL)
    return module_unavailable(c, "no module serves this type on this worker");
  if (*mods == NULL && wk_modules_thread_init(mods) != 0)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  if (!wk_module_get(m, c, *mods, &fn, &mstate, why, sizeof why))
    return module_unavailable(c, why);
  if ((int64_t)in_size > ocfg.lim.max_input)
    return wk_fail(c, 413, NULL,
                   "the input is %llu bytes; this cloud processes at most "
                   "%lld",
                   (unsigned long long)in_size, (long long)ocfg.lim.max_input);
  offload_io io;
  io_init(&io);
  if (nb_unhex32(in_hex, io.in_raw) != 0) {
    io_fini(&io);
    return wk_fail(c, 400, NULL, "%s is not a blob name", in_hex);
  }
  io.in_blob = true;
  io.in_size = in_size;
  /* The run sees a task of `type` with `args` and a result map of its
   * own: c's stay as they are. */
  wk_ctx sub = *c;
  sub.type = type;
  sub.args = args;
  sub.data = NULL;
  sub.data_len = 0;
  sub.has_data = false;
  msgpack_sbuffer_init(&sub.result);
  msgpack_packer_init(&sub.pk, &sub.result, msgpack_sbuffer_write);
  bool cached = false;
  const uint8_t *inline_out = NULL;
  int code = run(&sub, m, fn, mstate, &io, in_hex, out, &cached, &inline_out);
  c->notices = sub.notices;
  if (code != 0) {
    nb_strlcpy(c->error, sub.error, sizeof c->error);
    nb_strlcpy(c->help, sub.help, sizeof c->help);
    st_result_fini(out);
    memset(out, 0, sizeof *out);
  }
  free(sub.data);
  msgpack_sbuffer_destroy(&sub.result);
  io_fini(&io);
  return code;
}

/* ---- The family ---------------------------------------------------------- */

static int offload_limits_add(wk_limits *l) {
  int rc = 0;
  rc |= wk_limit_add(l, "offload_input", ocfg.lim.max_input);
  rc |= wk_limit_add(l, "offload_output", ocfg.lim.max_output);
  rc |= wk_limit_add(l, "max_pixels", ocfg.lim.max_pixels);
  rc |= wk_limit_add(l, "max_duration", ocfg.lim.max_duration);
  return rc;
}

static wk_handler handlers[WK_MODULES_MAX + 1];

static int offload_prepare(char *err, size_t errcap) {
  wk_modules_config mc = {.dir = ocfg.modules_dir,
                          .list = ocfg.modules,
                          .from_storage = ocfg.from_storage,
                          .key = ocfg.module_key};
  return wk_modules_prepare(&mc, handlers, sizeof handlers / sizeof *handlers,
                            h_offload, err, errcap);
}

#define LIM(f) (offsetof(offload_config, lim) + offsetof(wk_offload_limits, f))

static const nb_opt offload_options[] = {
    {"modules_dir", NB_OPT_STR, default_modules_dir,
     "where the offload modules (nimbus-<name>.so) are",
     offsetof(offload_config, modules_dir), 0, 0, NULL},
    {"modules", NB_OPT_STR, NULL,
     "offload modules to serve, e.g. \"image,audio\" (process.image, ...); "
     "empty: every module in modules_dir; \"none\": none",
     offsetof(offload_config, modules), 0, 0, NULL},
    {"modules_from_storage", NB_OPT_BOOL, "false",
     "fetch a module missing from modules_dir from the cloud's storage "
     "(nimbusctl module publish), checked against module_key",
     offsetof(offload_config, from_storage), 0, 0, NULL},
    {"module_key", NB_OPT_STR, NULL,
     "the public key file (nimbus.pub of nimbusctl keygen) that modules "
     "fetched from storage must be signed with",
     offsetof(offload_config, module_key), 0, 0, NULL},
    {"offload_threads", NB_OPT_INT, "2",
     "threads of the offload pool: offload tasks run at once at most",
     offsetof(offload_config, threads), 1, 256, NULL},
    {"offload_max_input", NB_OPT_INT, "536870912",
     "bytes of an offload task's input at most (413 beyond)", LIM(max_input), 0,
     INT64_MAX, NULL},
    {"offload_max_output", NB_OPT_INT, "536870912",
     "bytes of an offload task's output at most (413 beyond)", LIM(max_output),
     0, INT64_MAX, NULL},
    {"max_pixels", NB_OPT_INT, "100000000",
     "pixels of a picture at most, input or output (413 beyond; checked "
     "before decoding)",
     LIM(max_pixels), 1, INT64_MAX, NULL},
    {"offload_max_memory", NB_OPT_INT, "268435456",
     "bytes an offload module's library may keep cached (libvips)",
     LIM(max_memory), 0, INT64_MAX, NULL},
    {"max_duration_ms", NB_OPT_INT, "7200000",
     "ms of audio or video at most (413 beyond)", LIM(max_duration), 1,
     INT64_MAX, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

/* The offload pool: its threads cap the offload jobs a worker runs at
 * once, and a busy one never delays the quick or transfer pools. */
static const wk_pool_spec offload_pools[] = {
    {.name = "offload", .threads = &ocfg.threads},
    {.name = NULL},
};

const wk_family wk_family_offload = {
    .abi = WK_FAMILY_ABI,
    .name = "offload",
    .needs = WK_NEEDS_BLOBS,
    .options = offload_options,
    .config = &ocfg,
    .pools = offload_pools,
    .prepare = offload_prepare,
    .fini = wk_modules_fini,
    .thread_init = wk_modules_thread_init,
    .thread_fini = wk_modules_thread_fini,
    .limits = offload_limits_add,
    .handlers = handlers,
};
