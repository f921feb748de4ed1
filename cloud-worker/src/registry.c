/* The registry of handler families: the one list of the families this
 * worker is built with (a new built-in family is its file, one line in
 * `builtin` below and one in CMakeLists.txt), and what the worker makes of
 * it: the merged config table (each family's options beside the worker's
 * own), the types it serves (config `types`), the pools those types run
 * in, ping's limits, and the host table handed to each family. */
#include "wk_worker.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const wk_family *const builtin[] = {
    &wk_family_core, &wk_family_blob,    &wk_family_backup, &wk_family_share,
    &wk_family_diag, &wk_family_offload, &wk_family_agent,
};
#define NBUILTIN (sizeof builtin / sizeof builtin[0])

const wk_family *const *wk_registry(size_t *n) {
  *n = NBUILTIN;
  return builtin;
}

/* ---- The config table ---------------------------------------------------- */

int wk_options_merge(const nb_opt *own, nb_opt **out) {
  size_t n = 0;
  for (const nb_opt *o = own; o->name != NULL; o++)
    n++;
  for (size_t f = 0; f < NBUILTIN; f++)
    for (const nb_opt *o = builtin[f]->options; o != NULL && o->name != NULL;
         o++)
      n++;
  nb_opt *t = calloc(n + 1, sizeof *t);
  if (t == NULL)
    return NIMBUS_ENOMEM;
  size_t i = 0;
  for (const nb_opt *o = own; o->name != NULL; o++)
    t[i++] = *o;
  for (size_t f = 0; f < NBUILTIN; f++)
    for (const nb_opt *o = builtin[f]->options; o != NULL && o->name != NULL;
         o++) {
      t[i] = *o;
      t[i].base = builtin[f]->config;
      i++;
    }
  *out = t; /* t[n] is all zero: the end */
  return 0;
}

/* ---- ping's limits ------------------------------------------------------- */

int wk_limit_add(wk_limits *l, const char *key, int64_t v) {
  if (l->n >= sizeof l->e / sizeof l->e[0])
    return NIMBUS_ENOMEM;
  l->e[l->n].key = key;
  l->e[l->n].v = v;
  l->n++;
  return 0;
}

typedef struct fixed_buf {
  uint8_t *p;
  size_t cap, len;
  bool over;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len) {
  fixed_buf *b = data;
  if (b->len + len > b->cap) {
    b->over = true;
    return -1;
  }
  memcpy(b->p + b->len, buf, len);
  b->len += len;
  return 0;
}

int wk_registry_limits(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  wk_limits l = {.n = 0};
  /* The shared machinery's own: the protocol's sizes, the bound on
   * tasks in flight, the records' and the store's lifetimes, leases. */
  int rc = 0;
  rc |= wk_limit_add(&l, "segment", SC_SEGMENT);
  rc |= wk_limit_add(&l, "message", SC_MAX_MESSAGE);
  rc |= wk_limit_add(&l, "task", SC_MAX_TASK);
  rc |= wk_limit_add(&l, "max_inflight", cfg->max_inflight);
  rc |= wk_limit_add(&l, "result_ttl", cfg->result_ttl_ms);
  rc |= wk_limit_add(&l, "upload_ttl", cfg->upload_ttl_ms);
  rc |= wk_limit_add(&l, "blob_ttl", cfg->blob_ttl_ms);
  rc |= wk_limit_add(&l, "lease", cfg->lease_ms);
  rc |= wk_limit_add(&l, "renew", cfg->renew_ms);
  rc |= wk_limit_add(&l, "resend", 30000);
  rc |= wk_limit_add(&l, "resend_max", 300000);
  /* Every family's, served here or not: a terminal asks one worker and
   * plans for the cloud. */
  for (size_t f = 0; rc == 0 && f < NBUILTIN; f++)
    if (builtin[f]->limits != NULL &&
        (builtin[f]->enabled == NULL || *builtin[f]->enabled))
      rc = builtin[f]->limits(&l);
  fixed_buf b = {w->limits_packed, sizeof w->limits_packed, 0, false};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &b, fixed_write);
  msgpack_pack_map(&pk, l.n);
  for (size_t i = 0; i < l.n; i++)
    wk_pack_kv_int(&pk, l.e[i].key, l.e[i].v);
  if (rc != 0 || b.over) {
    snprintf(err, errcap, "ping's limits do not fit (%zu entries)", l.n);
    return NIMBUS_ENOMEM;
  }
  w->limits_len = b.len;
  return 0;
}

void wk_pack_limits(const wk_worker *w, msgpack_packer *pk) {
  /* Already a packed map: written as it is. */
  pk->callback(pk->data, (const char *)w->limits_packed, w->limits_len);
}

/* ---- Choosing what to serve ---------------------------------------------- */

static bool family_on(const wk_family *f) {
  return f->enabled == NULL || *f->enabled;
}

/* The handler of `type` (n bytes) among the built-in families, and its
 * family, whether enabled or not. */
static const wk_handler *lookup(const char *type, size_t n,
                                const wk_family **fam) {
  for (size_t f = 0; f < NBUILTIN; f++)
    for (const wk_handler *h = builtin[f]->handlers; h != NULL && h->type; h++)
      if (strlen(h->type) == n && strncmp(h->type, type, n) == 0) {
        *fam = builtin[f];
        return h;
      }
  return NULL;
}

static const wk_pool_spec *find_pool_spec(const char *name) {
  for (size_t f = 0; f < NBUILTIN; f++)
    for (const wk_pool_spec *p = builtin[f]->pools; p != NULL && p->name; p++)
      if (strcmp(p->name, name) == 0)
        return p;
  return NULL;
}

/* The pool named `name`, made (not started) on first use. */
static wk_pool *pool_for(wk_worker *w, const char *name, char *err,
                         size_t errcap) {
  for (size_t i = 0; i < w->npools; i++)
    if (strcmp(w->pools[i].name, name) == 0)
      return &w->pools[i];
  const wk_pool_spec *spec = find_pool_spec(name);
  if (spec == NULL) {
    snprintf(err, errcap, "no family defines the pool \"%s\"", name);
    return NULL;
  }
  int64_t n = spec->threads != NULL ? *spec->threads : 0;
  if (n <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = cores > 2 ? cores : 2;
  }
  /* The pools array is sized for the worst case up front (see
   * wk_registry_choose), so pointers into it stay put. */
  wk_pool *p = &w->pools[w->npools++];
  wk_pool_init(p, w, spec->name, (size_t)n, (size_t)w->cfg->queue);
  return p;
}

static size_t family_index(wk_worker *w, const wk_family *f) {
  for (size_t i = 0; i < w->nfamilies; i++)
    if (w->families[i] == f)
      return i;
  w->families[w->nfamilies] = f;
  return w->nfamilies++;
}

static int serve(wk_worker *w, const wk_family *f, const wk_handler *h,
                 char *err, size_t errcap) {
  for (size_t i = 0; i < w->nserved; i++)
    if (w->served[i].h == h)
      return 0;
  const char *pname = h->pool;
  if (pname == NULL && f->pools != NULL && f->pools[0].name != NULL)
    pname = f->pools[0].name;
  if (pname == NULL) {
    snprintf(err, errcap,
             "family %s: %s names no pool and the family has "
             "none",
             f->name, h->type);
    return NIMBUS_ECONFIG;
  }
  if ((h->flags & WK_INLINE) != 0 && (h->flags & WK_STATEFUL) != 0) {
    snprintf(err, errcap,
             "family %s: %s cannot be both inline and "
             "state-changing",
             f->name, h->type);
    return NIMBUS_ECONFIG;
  }
  wk_pool *p = pool_for(w, pname, err, errcap);
  if (p == NULL)
    return NIMBUS_ECONFIG;
  wk_served *s = &w->served[w->nserved++];
  s->h = h;
  s->family = f;
  s->family_index = family_index(w, f);
  s->pool = p;
  return 0;
}

int wk_registry_choose(wk_worker *w, char *err, size_t errcap) {
  const wk_config *cfg = w->cfg;
  size_t nh = 0, np = 1;
  /* Families whose types come from the config fill their tables first. */
  for (size_t f = 0; f < NBUILTIN; f++)
    if (builtin[f]->prepare != NULL && family_on(builtin[f])) {
      int rc = builtin[f]->prepare(err, errcap);
      if (rc != 0)
        return rc;
    }
  for (size_t f = 0; f < NBUILTIN; f++) {
    if (builtin[f]->abi != WK_FAMILY_ABI) {
      snprintf(err, errcap,
               "family %s: built for ABI %d, this worker has "
               "%d",
               builtin[f]->name, builtin[f]->abi, WK_FAMILY_ABI);
      return NIMBUS_ECONFIG;
    }
    for (const wk_handler *h = builtin[f]->handlers; h != NULL && h->type; h++)
      nh++;
    for (const wk_pool_spec *p = builtin[f]->pools; p != NULL && p->name; p++)
      np++;
  }
  w->served = calloc(nh > 0 ? nh : 1, sizeof *w->served);
  w->pools = calloc(np, sizeof *w->pools);
  w->families = calloc(NBUILTIN, sizeof *w->families);
  if (w->served == NULL || w->pools == NULL || w->families == NULL)
    return NIMBUS_ENOMEM;
  /* The quick pool always: it answers tasks nobody here serves. */
  if (pool_for(w, "quick", err, errcap) == NULL)
    return NIMBUS_ECONFIG;

  int rc = 0;
  if (cfg->types == NULL || cfg->types[0] == '\0') {
    for (size_t f = 0; f < NBUILTIN && rc == 0; f++) {
      if (!family_on(builtin[f]))
        continue;
      for (const wk_handler *h = builtin[f]->handlers;
           h != NULL && h->type != NULL && rc == 0; h++)
        rc = serve(w, builtin[f], h, err, errcap);
    }
  } else {
    const char *p = cfg->types;
    while (*p != '\0' && rc == 0) {
      while (*p == ',' || *p == ' ')
        p++;
      size_t n = strcspn(p, ", ");
      if (n == 0)
        break;
      const wk_family *f = NULL;
      const wk_handler *h = lookup(p, n, &f);
      if (h == NULL || !family_on(f)) {
        snprintf(err, errcap,
                 "types: \"%.*s\" is not a task type this "
                 "worker can serve%s%s%s",
                 (int)n, p, h != NULL ? " (its family is off: see --" : "",
                 h != NULL ? f->name : "", h != NULL ? ")" : "");
        return NIMBUS_ECONFIG;
      }
      rc = serve(w, f, h, err, errcap);
      p += n;
    }
    if (rc == 0 && w->nserved == 0) {
      snprintf(err, errcap, "types: no task type to serve");
      return NIMBUS_ECONFIG;
    }
  }
  for (size_t i = 0; rc == 0 && i < w->nfamilies; i++) {
    const wk_family *f = w->families[i];
    if (f->init != NULL && (rc = f->init(&wk_host, err, errcap)) != 0) {
      /* The families before it are finished by wk_registry_fini. */
      w->nfamilies = i;
      return rc;
    }
  }
  return rc;
}

void wk_registry_fini(wk_worker *w) {
  for (size_t i = w->nfamilies; i > 0; i--)
    if (w->families[i - 1]->fini != NULL)
      w->families[i - 1]->fini();
  w->nfamilies = 0;
}

/* ---- The host table ------------------------------------------------------ */

static msgpack_packer *host_packer(wk_ctx *c) { return &c->pk; }
static const msgpack_object *host_args(const wk_ctx *c) { return c->args; }
static const char *host_terminal(const wk_ctx *c) { return c->terminal; }
static const char *host_task_id(const wk_ctx *c) { return c->task->id; }
static const uint8_t *host_data(const wk_ctx *c, size_t *len) {
  *len = c->task->has_data ? c->task->data_len : 0;
  return c->task->has_data ? c->task->data : NULL;
}
static void *host_thread_state(const wk_ctx *c) { return c->tstate; }

static void host_log(int level, const char *id, const char *fmt, ...) {
  static const nb_log_level levels[] = {NB_LOG_DEBUG, NB_LOG_INFO, NB_LOG_WARN,
                                        NB_LOG_ERROR};
  nb_log_level lv = levels[level < 0 ? 0 : (level > 3 ? 3 : level)];
  if (lv < nb_log_threshold)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  nb_log_write(lv, id, "%s", msg);
}

const wk_host_api wk_host = {
    .abi = WK_FAMILY_ABI,
    .fail = wk_fail,
    .packer = host_packer,
    .args = host_args,
    .terminal = host_terminal,
    .task_id = host_task_id,
    .data = host_data,
    .reply_data = wk_reply_data,
    .checkpoint = wk_checkpoint,
    .progress = wk_progress,
    .thread_state = host_thread_state,
    .log = host_log,
    .input_size = wk_offload_input_size,
    .input_read = wk_offload_input_read,
    .input_mem = wk_offload_input_mem,
    .output_write = wk_offload_output_write,
    .offload_limits = wk_offload_limits_get,
};
