/* The offload machinery (PROTOCOL.md, Compute offload): what every
 * process.* type shares, and the loading of the modules that do the work.
 *
 * A module is a shared object nimbus-<name>.so in `modules_dir` whose one
 * entry point, nimbus_family_v1 (wk_family.h), returns a family serving
 * process.<name>. The worker learns which modules it serves without
 * loading any (the `modules` option, or the names of the files in
 * modules_dir), announces their types, and loads a module with dlopen the
 * first time a task of its type arrives, so a worker that only ever sees
 * pings and backups never maps libvips. A module that is missing, fails
 * to load, is built for another ABI or does not serve its type answers
 * 503 with a sentence naming the cause (logged once per attempt, tried
 * again at most every 10 s, so a module installed later is picked up);
 * every other type keeps working.
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

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef NIMBUS_MODULES_DIR
#define NIMBUS_MODULES_DIR "/usr/local/lib/nimbus/modules"
#endif

#define MODULES_MAX 16
#define MODULE_NAME_MAX 32
#define RETRY_LOAD_MS 10000
/* An output up to one segment also comes inline (PROTOCOL.md). */
#define INLINE_MAX SC_SEGMENT

typedef struct offload_config {
  char *modules_dir;
  char *modules;
  int64_t threads;
  wk_offload_limits lim;
} offload_config;

static offload_config ocfg;

/* ---- Modules --------------------------------------------------------------
 */

typedef struct module {
  char name[MODULE_NAME_MAX + 1];
  char type[MODULE_NAME_MAX + 9]; /* "process.<name>" */
  pthread_mutex_t mu;
  /* Under mu: */
  bool loaded;
  int64_t failed_at; /* ms of the last failed attempt, 0: none */
  char why[256];     /* its sentence */
  void *dl;
  const wk_family *fam;
  wk_handler_fn fn;
} module;

static module mods[MODULES_MAX];
static size_t nmods;
static wk_handler handlers[MODULES_MAX + 1];

static bool module_name_ok(const char *s, size_t n) {
  if (n == 0 || n > MODULE_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
          s[i] == '_'))
      return false;
  return true;
}

static int h_offload(wk_ctx *c);

static int add_module(const char *name, size_t n, char *err, size_t errcap) {
  if (!module_name_ok(name, n)) {
    snprintf(err, errcap,
             "modules: \"%.*s\" is not a module name (a-z, 0-9, _; at most "
             "%d)",
             (int)n, name, MODULE_NAME_MAX);
    return NIMBUS_ECONFIG;
  }
  for (size_t i = 0; i < nmods; i++)
    if (strlen(mods[i].name) == n && memcmp(mods[i].name, name, n) == 0)
      return 0;
  if (nmods == MODULES_MAX) {
    snprintf(err, errcap, "modules: more than %d modules", MODULES_MAX);
    return NIMBUS_ECONFIG;
  }
  module *m = &mods[nmods];
  memset(m, 0, sizeof *m);
  memcpy(m->name, name, n);
  m->name[n] = '\0';
  memcpy(m->type, "process.", 8);
  memcpy(m->type + 8, name, n);
  m->type[8 + n] = '\0';
  pthread_mutex_init(&m->mu, NULL);
  handlers[nmods] = (wk_handler){.type = m->type,
                                 .flags = WK_STATEFUL,
                                 .pool = "offload",
                                 .fn = h_offload};
  nmods++;
  handlers[nmods] = (wk_handler){.type = NULL};
  return 0;
}

/* Which modules this worker serves: the `modules` list, or else every
 * nimbus-<name>.so in modules_dir (read, not loaded). */
static int offload_prepare(char *err, size_t errcap) {
  nmods = 0;
  handlers[0] = (wk_handler){.type = NULL};
  const char *p = ocfg.modules;
  if (p != NULL && *p != '\0') {
    if (strcmp(p, "none") == 0)
      return 0;
    while (*p != '\0') {
      while (*p == ',' || *p == ' ')
        p++;
      size_t n = strcspn(p, ", ");
      if (n == 0)
        break;
      int rc = add_module(p, n, err, errcap);
      if (rc != 0)
        return rc;
      p += n;
    }
    return 0;
  }
  DIR *d = opendir(ocfg.modules_dir);
  if (d == NULL)
    return 0; /* no modules installed: nothing to serve */
  const struct dirent *e;
  int rc = 0;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n > 10 && strncmp(e->d_name, "nimbus-", 7) == 0 &&
        strcmp(e->d_name + n - 3, ".so") == 0 &&
        module_name_ok(e->d_name + 7, n - 10))
      rc = add_module(e->d_name + 7, n - 10, err, errcap);
  }
  closedir(d);
  return rc;
}

static module *module_of(const char *type) {
  for (size_t i = 0; i < nmods; i++)
    if (strcmp(mods[i].type, type) == 0)
      return &mods[i];
  return NULL;
}

/* Loads m under its lock; returns true when it is usable. */
static bool module_load(module *m, char *why, size_t whycap) {
  pthread_mutex_lock(&m->mu);
  if (m->loaded) {
    pthread_mutex_unlock(&m->mu);
    return true;
  }
  int64_t now = nb_now_ms();
  if (m->failed_at != 0 && now - m->failed_at < RETRY_LOAD_MS) {
    nb_strlcpy(why, m->why, whycap);
    pthread_mutex_unlock(&m->mu);
    return false;
  }
  char path[1024], msg[512] = "";
  snprintf(path, sizeof path, "%.900s/nimbus-%s.so", ocfg.modules_dir, m->name);
  const wk_family *f = NULL;
  wk_handler_fn fn = NULL;
  char init_err[200] = "";
  /* RTLD_LOCAL: a module's libraries stay its own. */
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  wk_family_entry_fn entry =
      dl != NULL ? (wk_family_entry_fn)dlsym(dl, WK_FAMILY_ENTRY) : NULL;
  if (dl == NULL) {
    snprintf(msg, sizeof msg,
             "the %s module is not installed on this worker or does not "
             "load (%.300s)",
             m->name, dlerror());
  } else if (entry == NULL || (f = entry()) == NULL) {
    snprintf(msg, sizeof msg, "the %s module (%.300s) has no entry point %s",
             m->name, path, WK_FAMILY_ENTRY);
  } else if (f->abi != WK_FAMILY_ABI) {
    snprintf(msg, sizeof msg,
             "the %s module (%.300s) was built for ABI %d; this worker has "
             "%d",
             m->name, path, f->abi, WK_FAMILY_ABI);
  } else {
    for (const wk_handler *h = f->handlers; h != NULL && h->type; h++)
      if (strcmp(h->type, m->type) == 0)
        fn = h->fn;
    if (fn == NULL)
      snprintf(msg, sizeof msg, "the %s module (%.300s) does not serve %s",
               m->name, path, m->type);
    else if (f->init != NULL && f->init(&wk_host, init_err, sizeof init_err))
      snprintf(msg, sizeof msg, "the %s module failed to start: %s", m->name,
               init_err);
  }
  bool ok = fn != NULL && msg[0] == '\0';
  if (ok) {
    m->dl = dl;
    m->fam = f;
    m->fn = fn;
    m->loaded = true;
    NB_INFO("WK-MODULE", "loaded the %s module (%s), version %s", m->name, path,
            f->version != NULL ? f->version : "-");
  } else {
    /* A module that failed stays mapped if it was: its init may have run
     * part way, and unmapping code that registered callbacks is worse. */
    m->failed_at = now;
    nb_strlcpy(m->why, msg, sizeof m->why);
    NB_WARN("WK-MODULE", "%s", msg);
    nb_strlcpy(why, msg, whycap);
  }
  pthread_mutex_unlock(&m->mu);
  return ok;
}

/* ---- Per-thread state ------------------------------------------------------
 * A module's thread_init runs on a pool thread the first time that thread
 * runs one of its tasks, and its thread_fini when the thread ends. */

typedef struct offload_tstate {
  bool inited[MODULES_MAX];
  void *state[MODULES_MAX];
} offload_tstate;

static int offload_thread_init(void **tstate) {
  *tstate = calloc(1, sizeof(offload_tstate));
  return *tstate != NULL ? 0 : NIMBUS_ENOMEM;
}

static void offload_thread_fini(void *tstate) {
  offload_tstate *ts = tstate;
  if (ts == NULL)
    return;
  for (size_t i = 0; i < nmods; i++)
    if (ts->inited[i] && mods[i].fam->thread_fini != NULL)
      mods[i].fam->thread_fini(ts->state[i]);
  free(ts);
}

/* ---- The task's input and output ------------------------------------------
 */

typedef struct offload_io {
  /* Input: a stored blob, or the task's inline data. */
  bool in_blob;
  uint8_t in_raw[32];
  const uint8_t *in_mem;
  uint64_t in_size;
  /* Output: staged as upload "out.<task id>" of the terminal (a name no
   * terminal can give: '.' is not allowed in upload names), one segment
   * buffered. */
  char upload[SC_ID_MAX + 5];
  uint8_t *buf;
  size_t buf_len;
  uint64_t out_size;
  bool staged; /* a staging file exists */
  char out_hex[65];
  int err; /* the first write error */
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
  return st_blobstore_read(c->blobs, io->in_raw, off, buf, n, got);
}

static int flush_segment(wk_ctx *c, offload_io *io) {
  int rc = st_blobstore_stage(c->blobs, c->terminal, io->upload,
                              io->out_size - io->buf_len, io->buf, io->buf_len,
                              0, io->staged);
  if (rc == 0) {
    io->staged = true;
    io->buf_len = 0;
  }
  return rc;
}

int wk_offload_output_write(wk_ctx *c, const void *p, size_t n) {
  offload_io *io = c->offload;
  if (io == NULL)
    return NIMBUS_EINVAL;
  if (io->err != 0)
    return io->err;
  if ((int64_t)(io->out_size + n) > ocfg.lim.max_output)
    return io->err = NIMBUS_ETOOBIG;
  const uint8_t *b = p;
  while (n > 0) {
    size_t k = SC_SEGMENT - io->buf_len < n ? SC_SEGMENT - io->buf_len : n;
    memcpy(io->buf + io->buf_len, b, k);
    io->buf_len += k;
    io->out_size += k;
    b += k;
    n -= k;
    if (io->buf_len == SC_SEGMENT && (io->err = flush_segment(c, io)) != 0)
      return io->err;
  }
  return 0;
}

const wk_offload_limits *wk_offload_limits_get(void) { return &ocfg.lim; }

/* ---- The cache key ------------------------------------------------------- */

static int buf_write(void *data, const char *p, size_t n) {
  return msgpack_sbuffer_write(data, p, n);
}

/* key = SHA-256 of "nimbus-result/1\n<type>\n<version>\n<input hex>\n"
 * followed by the canonical encoding (SPEC.md section 4) of the task's
 * args without `blob`: the same request on the same bytes, whoever sends
 * it and however its map is ordered. */
static int cache_key(wk_ctx *c, const module *m, const char *in_hex,
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
  char head[256];
  int hn = snprintf(head, sizeof head, "nimbus-result/1\n%s\n%s\n%s\n", m->type,
                    m->fam->version != NULL ? m->fam->version : "", in_hex);
  int rc = hn > 0 && (size_t)hn < sizeof head ? 0 : NIMBUS_EINVAL;
  if (rc == 0 && msgpack_sbuffer_write(&sb, head, (size_t)hn) != 0)
    rc = NIMBUS_ENOMEM;
  if (rc == 0)
    rc = sc_task_canonical_write(&sb, buf_write, m->type, &t,
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
    if (wk_blob_readable(c, in_hex, &size) != 0)
      return wk_redis_down(c);
    if (size < 0)
      return wk_fail(c, 404, "upload it first (blob.put, blob.commit)",
                     "there is no blob %s that this terminal may read", in_hex);
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
                        st_result *r) {
  if ((!io->staged || io->buf_len > 0) && (io->err = flush_segment(c, io)) != 0)
    return io->err == NIMBUS_ENOSPC ? wk_fail(c, 503, "try again later",
                                              "the cloud's storage is full")
                                    : wk_disk_error(c, "store the output");
  uint64_t nsegs = st_blob_nsegs(io->out_size);
  uint8_t(*sums)[ST_SEGSUM] = calloc(nsegs > 0 ? nsegs : 1, ST_SEGSUM);
  uint8_t whole[32];
  char hex[65];
  if (sums == NULL)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  int code = 0,
      rc = st_blobstore_stage_hash(c->blobs, c->terminal, io->upload,
                                   io->out_size, whole, sums, NULL, NULL);
  bool gone = false;
  if (rc != 0) {
    code = wk_disk_error(c, "hash the output");
    goto out;
  }
  nb_hex(whole, 32, hex);
  memcpy(io->out_hex, hex, sizeof hex);
  if (st_blob_commit_begin(c->redis, c->terminal, io->upload, hex,
                           c->cfg->worker_id, c->cfg->lease_ms * 3,
                           &gone) != 0) {
    code = wk_redis_down(c);
    goto out;
  }
  if (gone) {
    code = wk_fail(c, 503, "send the task again in a moment",
                   "the output's blob is being collected right now");
    goto out;
  }
  if ((rc = st_blobstore_stage_commit(c->blobs, c->terminal, io->upload,
                                      io->out_size, whole)) != 0) {
    code = rc == NIMBUS_ENOSPC ? wk_fail(c, 503, "try again later",
                                         "the cloud's storage is full")
                               : wk_disk_error(c, "store the output");
    goto out;
  }
  io->staged = false;
  size_t plen = c->result.size;
  rc = st_result_put(c->redis, key, hex, io->out_size,
                     (const uint8_t(*)[ST_SEGSUM])sums, nsegs,
                     plen > 0 ? c->result.data : NULL, plen,
                     nb_now_ms() + c->cfg->result_ttl_ms, r);
  if (rc == NIMBUS_ECONFLICT)
    code = wk_fail(c, 503, "send the task again in a moment",
                   "the output's blob is being collected right now");
  else if (rc != 0)
    code = wk_redis_down(c);
out:
  free(sums);
  return code;
}

static int h_offload(wk_ctx *c) {
  module *m = module_of(c->type);
  char why[256];
  if (m == NULL || !module_load(m, why, sizeof why))
    return wk_fail(c, 503,
                   "another worker may serve it; else the operator installs "
                   "the module",
                   "%s", m != NULL ? why : "no module serves this type");
  offload_io io;
  memset(&io, 0, sizeof io);
  char in_hex[65], key[65];
  int code = resolve_input(c, &io, in_hex);
  if (code != 0)
    return code;
  if (cache_key(c, m, in_hex, key) != 0)
    return wk_fail(c, 400, NULL, "args has too many keys");
  int64_t t0 = nb_now_ms();
  st_result r;
  if (st_result_get(c->redis, key, &r) != 0)
    return wk_redis_down(c);
  bool cached = r.exists;
  const uint8_t *inline_out = NULL;
  if (!cached) {
    snprintf(io.upload, sizeof io.upload, "out.%s", c->task->id);
    io.buf = malloc(SC_SEGMENT);
    if (io.buf == NULL)
      return wk_fail(c, 500, NULL, "the worker is out of memory");
    offload_tstate *ts = c->tstate;
    size_t mi = (size_t)(m - mods);
    void *saved = c->tstate;
    if (!ts->inited[mi] && m->fam->thread_init != NULL &&
        m->fam->thread_init(&ts->state[mi]) != 0) {
      free(io.buf);
      return wk_fail(c, 503, "send the task again later",
                     "the %s module could not start on this thread", m->name);
    }
    ts->inited[mi] = true;
    c->tstate = ts->state[mi];
    c->offload = &io;
    code = m->fn(c);
    c->offload = NULL;
    c->tstate = saved;
    if (code == 0 && io.err == NIMBUS_ETOOBIG)
      code = wk_fail(c, 413, "ask for a smaller output",
                     "the output is over %lld bytes",
                     (long long)ocfg.lim.max_output);
    if (code == 0)
      code = store_output(c, &io, key, &r);
    if (io.staged || code != 0)
      (void)st_blobstore_stage_drop(c->blobs, c->terminal, io.upload);
    /* The last segment still in the buffer is the whole output when it
     * is small enough to come inline. */
    if (code == 0 && io.out_size <= INLINE_MAX &&
        strcmp(r.blob, io.out_hex) == 0)
      inline_out = io.buf;
    if (code != 0) {
      free(io.buf);
      st_result_fini(&r);
      return code;
    }
  }
  int64_t now = nb_now_ms();
  code = pack_result(c, &r, cached, inline_out);
  if (code == 0 &&
      st_result_grant_effect(c->effect, c->terminal, r.key, r.blob,
                             now + c->cfg->result_ttl_ms, now) != 0)
    code = wk_fail(c, 500, NULL, "the worker is out of memory");
  if (code == 0)
    NB_INFO("WK-OFFLOAD", "%s %s/%s: %s in %lld ms, %llu bytes out", c->type,
            c->terminal, c->task->id,
            cached ? "answered from the cache" : "computed",
            (long long)(now - t0), (unsigned long long)r.size);
  free(io.buf);
  st_result_fini(&r);
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

static void offload_fini(void) {
  for (size_t i = 0; i < nmods; i++)
    if (mods[i].loaded && mods[i].fam->fini != NULL)
      mods[i].fam->fini();
}

#define LIM(f) (offsetof(offload_config, lim) + offsetof(wk_offload_limits, f))

static const nb_opt offload_options[] = {
    {"modules_dir", NB_OPT_STR, NIMBUS_MODULES_DIR,
     "where the offload modules (nimbus-<name>.so) are",
     offsetof(offload_config, modules_dir), 0, 0, NULL},
    {"modules", NB_OPT_STR, NULL,
     "offload modules to serve, e.g. \"image,audio\" (process.image, ...); "
     "empty: every module in modules_dir; \"none\": none",
     offsetof(offload_config, modules), 0, 0, NULL},
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
    .fini = offload_fini,
    .thread_init = offload_thread_init,
    .thread_fini = offload_thread_fini,
    .limits = offload_limits_add,
    .handlers = handlers,
};
