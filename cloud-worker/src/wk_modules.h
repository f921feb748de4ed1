/* Offload modules (modules.c): which ones a worker serves, and their
 * loading on demand, from modules_dir or, when allowed, from the cloud's
 * storage after their signature is checked. The offload machinery
 * (handlers_offload.c) is their only user. */
#ifndef WK_MODULES_H
#define WK_MODULES_H

#include "wk.h"

#include <stdbool.h>
#include <stddef.h>

#define WK_MODULES_MAX 16

typedef struct wk_module wk_module;

typedef struct wk_modules_config {
  const char *dir;   /* modules_dir */
  const char *list;  /* `modules`: names, "", or "none" */
  bool from_storage; /* modules_from_storage */
  const char *key;   /* module_key: the public key file */
} wk_modules_config;

/* Reads which modules to serve (cfg->list, or else every nimbus-<name>.so
 * in cfg->dir, read, not loaded; cfg is copied) and fills handlers[] (cap
 * entries, ended by a NULL type) with one entry per module: process.<name>
 * run by `fn` in pool "offload". With from_storage, also reads the public
 * key. Returns 0, or NIMBUS_ECONFIG with a sentence in err. */
int wk_modules_prepare(const wk_modules_config *cfg, wk_handler *handlers,
                       size_t cap, wk_handler_fn fn, char *err, size_t errcap);

/* The module serving `type`, or NULL. */
wk_module *wk_module_of(const char *type);

/* Loads m on first use (once; a failure is tried again at most every 10
 * s) from the module directory or, failing that and when allowed, from
 * storage through the task's Redis and blob store; on this thread, runs
 * its thread_init the first time (`tstate`: the offload family's thread
 * state). Returns true with *fn the type's handler and *mstate the
 * module's thread state; false with a sentence in why (whycap bytes) for
 * the 503. */
bool wk_module_get(wk_module *m, wk_ctx *c, void *tstate, wk_handler_fn *fn,
                   void **mstate, char *why, size_t whycap);

/* The loaded module's name, version and the SHA-256 (hex) of the file it
 * was loaded from (version and digest: the cache key's parts). */
const char *wk_module_name(const wk_module *m);
const char *wk_module_version(const wk_module *m);
const char *wk_module_digest(const wk_module *m);

/* The offload family's per-thread state; thread_fini runs the modules'. */
int wk_modules_thread_init(void **tstate);
void wk_modules_thread_fini(void *tstate);
/* Runs every loaded module's fini. */
void wk_modules_fini(void);

#endif
