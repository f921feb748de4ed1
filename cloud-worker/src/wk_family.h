/* A handler family: what a group of task types (core, blob, backup, diag,
 * later share and the process.* modules) hands the worker, as one struct
 * with designated initialisers, the way a redis command table entry is
 * declared. The worker's registry (registry.c) lists the built-in families;
 * a module will return the same struct from its entry point
 * nimbus_family_v1(), so nothing here bakes in the layout of the worker's
 * own structs: a handler sees its task through wk_ctx, which a module only
 * reaches through the host's table of functions (wk_host_api, the way
 * sqlite hands extensions sqlite3_api_routines).
 *
 * What the worker does for every family, and a family never repeats: the
 * dispatch by type, the claim of a state-changing task, the commit of its
 * Redis effect together with its recorded reply (st_txn_require /
 * st_txn_forbid), leases and cancel, the pools and their fair queues, the
 * janitor, ping's list of types and limits, --help and --print-config. */
#ifndef WK_FAMILY_H
#define WK_FAMILY_H

#include "nb_config.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The version of this header's structs. A family built against another
 * version is refused (a module: with a 503 for its types and a log line).
 * 3: wk_family.tick. */
#define WK_FAMILY_ABI 3

typedef struct wk_ctx wk_ctx;

/* A handler returns 0 with its result packed, or a reply code (400, 404,
 * 409, 499, 500, 503, ...) after wk_fail (or host->fail) filled the
 * message. */
typedef int (*wk_handler_fn)(wk_ctx *c);

/* Flags of a handler. */
enum {
  /* Claimed before it runs, its effect committed with its reply, a re-sent
   * task answered from the record (PROTOCOL.md, Delivery). */
  WK_STATEFUL = 1u << 0,
  /* Run on Paho's receive thread itself, with no hop to a pool: only for
   * read-only handlers that never block and touch no Redis or disk (a
   * blocked receive thread stalls every task of the worker). */
  WK_INLINE = 1u << 1,
};

typedef struct wk_handler {
  const char *type; /* "blob.put"; NULL ends a table */
  unsigned flags;   /* WK_STATEFUL, WK_INLINE */
  /* The pool it runs in, by name ("quick", "transfer", or a pool of the
   * family's own); NULL: the family's first pool. */
  const char *pool;
  wk_handler_fn fn;
} wk_handler;

/* A pool a family brings: its threads and its queue. Each pool has its
 * own threads and its own queue (fair across terminals), so a busy pool
 * never delays another pool's tasks. The thread count is a config option
 * of the family (its value is read through `threads` once the config is
 * loaded); a value of 0 means one per core, at least 2. */
typedef struct wk_pool_spec {
  const char *name;       /* NULL ends a table */
  const int64_t *threads; /* the family's option holding the count */
} wk_pool_spec;

/* Resources a family needs the worker to open before it starts. */
enum {
  WK_NEEDS_BLOBS = 1u << 0, /* the blob store (data_dir) and its janitor */
};

/* The limits a family adds to ping's `limits` map (PROTOCOL.md). */
typedef struct wk_limits wk_limits;
/* Adds limits.<key> = v (key borrowed: a string literal or the family's
 * own storage). Returns 0, or NIMBUS_ENOMEM past the map's capacity. */
int wk_limit_add(wk_limits *l, const char *key, int64_t v);

typedef struct wk_host_api wk_host_api;

/* What the worker's housekeeping thread hands a family's tick: defined in
 * wk.h, for built-in families only. */
typedef struct wk_tick wk_tick;

typedef struct wk_family {
  int abi;          /* WK_FAMILY_ABI */
  const char *name; /* "blob"; unique; a module's: nimbus-<name>.so */
  /* What the family's output depends on besides its input and arguments
   * (its own version and its libraries', e.g. "1.0 vips-8.14.1"): part of
   * the offload result cache's key, so a new version never answers from
   * an old one's results. May be NULL for families without a cache. */
  const char *version;
  unsigned needs; /* WK_NEEDS_* */
  /* Options of the family's own, merged into the worker's one config
   * table (file, environment, flags, --help, --print-config). Their
   * offsets are into `config`. Either may be NULL. */
  const nb_opt *options;
  void *config;
  /* When non-NULL, the family is served only while *enabled is true (an
   * option of its own, e.g. diag's `diag`, off by default). */
  const bool *enabled;
  const wk_pool_spec *pools; /* pools it defines; may be NULL */
  /* Once, after the config is loaded and before the worker reads the
   * handler table: a family whose types depend on the config (the offload
   * family: one type per module) fills its table here. May be NULL. On
   * failure returns a nimbus_err with a sentence in err. */
  int (*prepare)(char *err, size_t errcap);
  /* Once, before any pool thread starts; may be NULL. `host` outlives the
   * family. On failure returns a nimbus_err and writes a sentence into
   * err (errcap bytes): the worker does not start. */
  int (*init)(const wk_host_api *host, char *err, size_t errcap);
  /* Once, after the last of the family's tasks ended; may be NULL. */
  void (*fini)(void);
  /* On each thread of a pool that runs any of the family's handlers,
   * before its first task, and after its last; may be NULL. A thread whose
   * init fails does not start (the worker does not start). */
  int (*thread_init)(void **tstate);
  void (*thread_fini)(void *tstate);
  /* Adds the family's entries to ping's `limits`; may be NULL. Called
   * once, after the config is loaded. */
  int (*limits)(wk_limits *l);
  const wk_handler *handlers; /* ended by an entry with type NULL */
  /* Periodic work of the cloud's own (the agent family: sending offers
   * that came due), for BUILT-IN families only: a module that sets it is
   * refused, since what it is handed (wk_tick: the housekeeping thread's
   * Redis connection, a way to publish notices) is the worker's own
   * structs, not this ABI. Called on the worker's housekeeping thread
   * (renew.c) about once every renew_ms while that thread has Redis, for
   * the families this worker serves types of. It runs between lease
   * renewals, so it must do a bounded amount of work each time (a batch,
   * not a backlog) and never block for long. Work that must happen once
   * in the cloud, whatever the number of workers ticking, is the
   * family's to make atomic in Redis. May be NULL. */
  void (*tick)(wk_tick *t);
} wk_family;

/* What the worker hands a family (a module reaches the task only through
 * these; built-in families may also use wk.h). Every pointer a function
 * returns is borrowed for the handler's call. */
struct wk_host_api {
  int abi; /* WK_FAMILY_ABI */
  /* Fills the error message (and help when non-NULL); returns `code`. */
  int (*fail)(wk_ctx *c, int code, const char *help, const char *fmt, ...)
      __attribute__((format(printf, 4, 5)));
  msgpack_packer *(*packer)(wk_ctx *c); /* the result map goes here */
  const msgpack_object *(*args)(const wk_ctx *c);
  const char *(*terminal)(const wk_ctx *c); /* from the topic */
  const char *(*task_id)(const wk_ctx *c);
  /* The task's inline data, or NULL (then *len is 0). */
  const uint8_t *(*data)(const wk_ctx *c, size_t *len);
  /* Sets the reply's inline data (copied); 0 or NIMBUS_ENOMEM. */
  int (*reply_data)(wk_ctx *c, const void *p, size_t n);
  /* 0 to go on, NIMBUS_ECANCELED (task.cancel) or NIMBUS_ELOST. */
  int (*checkpoint)(wk_ctx *c);
  void (*progress)(wk_ctx *c, int64_t done, int64_t total);
  /* This thread's state from the family's thread_init, or NULL. */
  void *(*thread_state)(const wk_ctx *c);
  /* level: 0 debug, 1 info, 2 warn, 3 error; id a stable log id. */
  void (*log)(int level, const char *id, const char *fmt, ...)
      __attribute__((format(printf, 3, 4)));

  /* ---- Offload (the handlers of a module's family: process.*) ----------
   * The machinery (handlers_offload.c) has, before the module's handler
   * runs, resolved the task's input (args.blob, readable by the caller, or
   * inline data), checked it against the limits and looked it up in the
   * result cache; after the handler returns 0 it stores what the handler
   * wrote as the output blob, keeps it as a result for result_ttl and adds
   * `blob`, `size`, `cached` (and inline `data` for a small output) to the
   * result map. The handler validates its own arguments (ops, format:
   * 400, 415), reads the input, writes the output, and packs into
   * packer() one map of the output's own properties (e.g. width, height,
   * format): the machinery merges it into the result. */
  /* The input's size in bytes. */
  uint64_t (*input_size)(const wk_ctx *c);
  /* Reads up to n bytes of the input at `off` into buf; *got is short only
   * at the end. 0, or NIMBUS_EIO (the handler answers 500 through fail()
   * with input_errstr). Any thread may call it for its own task. */
  int (*input_read)(wk_ctx *c, uint64_t off, void *buf, size_t n, size_t *got);
  /* The input's bytes when they are in memory (inline data), else NULL. */
  const uint8_t *(*input_mem)(const wk_ctx *c);
  /* Appends n bytes (borrowed) to the output. 0, NIMBUS_ETOOBIG past the
   * output limit (offload_max_output), NIMBUS_ENOSPC, NIMBUS_EIO. Any
   * thread may call it for its own task, one call at a time. */
  int (*output_write)(wk_ctx *c, const void *p, size_t n);
  /* The limits the operator configured for offload work. */
  const struct wk_offload_limits *(*offload_limits)(void);
};

/* The offload limits (config options of the offload family). */
typedef struct wk_offload_limits {
  int64_t max_input;    /* bytes of input at most (413) */
  int64_t max_output;   /* bytes of output at most (413) */
  int64_t max_pixels;   /* pixels of a picture, input or output (413) */
  int64_t max_memory;   /* bytes a module's library may cache (libvips) */
  int64_t max_duration; /* ms of audio or video (413) */
} wk_offload_limits;

/* A module's one entry point (dlsym), returning its family, borrowed for
 * as long as the module stays loaded (a worker never unloads one). */
typedef const wk_family *(*wk_family_entry_fn)(void);
#define WK_FAMILY_ENTRY "nimbus_family_v1"

/* The worker's host table (registry.c). */
extern const wk_host_api wk_host;

#endif
