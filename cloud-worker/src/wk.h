/* nimbus-worker internals: the worker's config, the per-task context that
 * handlers see, and the helpers handlers share.
 *
 * The way of a task: Paho's callback thread copies the message into a job
 * and queues it in its handler's pool (session.c); the pool takes its
 * queued jobs round-robin across terminals (pool.c), and one of its
 * threads (each with its own Redis context) decodes the job once, finds
 * its handler and, for a state-changing type, claims (terminal, id) in
 * Redis before running it (dispatch.c). The handler fills a result map
 * (and, if it changes state, a list of Redis commands); the dispatcher
 * commits that effect together with the recorded reply while the claim
 * holds and publishes the reply once. A renewal thread keeps live claims'
 * leases and reports cancellations (renew.c). Handlers come in families
 * (wk_family.h), listed in one registry (registry.c). */
#ifndef WK_H
#define WK_H

#include "sc.h"
#include "wk_family.h"
#include "st.h"
#include "st_blob.h"

#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* What a worker does about tasks of types no worker serves (config key
 * `unserved`). */
typedef enum wk_unserved {
  /* Answer 400 to the tasks nimbus_auth.so re-routes to
   * <prefix>/unserved/<type>/<terminal> (group nimbus-unserved, QoS 1). */
  WK_UNSERVED_BROKER = 0,
  /* Join the catch-all group on <prefix>/task/+/+ (QoS 0) and answer the
   * copies whose type no live worker announced: any MQTT 5 broker, but
   * every task reaches the pool twice. */
  WK_UNSERVED_WILDCARD,
  /* Neither: another worker or nobody answers them. */
  WK_UNSERVED_OFF
} wk_unserved;

typedef struct wk_config {
  char *mqtt_host;
  int64_t mqtt_port;
  char *mqtt_username;
  char *mqtt_password;
  char *redis_host;
  int64_t redis_port;
  char *redis_password;
  char *worker_id;
  char *types;
  char *prefix;
  char *unserved;            /* "broker", "wildcard" or "off" */
  wk_unserved unserved_mode; /* parsed from `unserved` by main.c */
  int64_t lease_ms;
  int64_t renew_ms;
  int64_t result_ttl_ms;
  int64_t upload_ttl_ms;
  int64_t blob_ttl_ms;
  int64_t outbox_grace_ms; /* a notice left in the outbox is sent after */
  int64_t max_inflight;
  int64_t queue; /* per pool */
  char *data_dir;
  bool blob_direct;
  char *log_level;
} wk_config;

typedef struct wk_worker wk_worker;

/* A claim this worker holds while its task runs; the renewal thread sets
 * the flags, the handler reads them at its checkpoints. */
typedef struct wk_live {
  const char *terminal;
  const char *id;
  atomic_bool cancel;
  atomic_bool lost;
  uint64_t seq; /* set by wk_live_add: which entry a renewal reply is for */
  struct wk_live *next, *prev;
} wk_live;

/* What a handler sees of one task. Everything is borrowed for the call. */
typedef struct wk_ctx {
  wk_worker *w;
  const wk_config *cfg;
  st_redis *redis;      /* this thread's connection */
  st_blobstore *blobs;  /* the worker's blob store */
  const char *terminal; /* from the topic, never from the payload */
  const char *type;
  const sc_task *task;
  const msgpack_object *args;
  /* The handler packs its result map here (wk_result_*); leave it empty
   * for an empty result. */
  msgpack_sbuffer result;
  msgpack_packer pk;
  /* Optional inline output bytes: set with wk_reply_data (copied). */
  uint8_t *data;
  size_t data_len;
  bool has_data;
  /* State-changing handlers queue their Redis effect here. */
  st_txn *effect;
  wk_live *live; /* NULL for read-only types */
  /* Notices to publish once the task's effect is committed
   * (wk_notice_add); owned, freed with the context. */
  struct wk_notice *notices;
  void *tstate; /* the handler's family's thread state, or NULL */
  /* An offload task's input and output (handlers_offload.c), or NULL. In
   * the context, not in a thread-local: a module's library may read the
   * input and write the output from threads of its own (libvips does). */
  struct offload_io *offload;
  char error[512];
  char help[256];
} wk_ctx;

/* The built-in families (one file each; listed in registry.c). */
extern const wk_family wk_family_core;
extern const wk_family wk_family_blob;
extern const wk_family wk_family_backup;
extern const wk_family wk_family_share;
extern const wk_family wk_family_diag;
extern const wk_family wk_family_offload;
extern const wk_family wk_family_agent;

/* What a built-in family's tick (wk_family.tick) sees. Borrowed for the
 * call; used on the housekeeping thread only. */
struct wk_tick {
  wk_worker *w;
  const wk_config *cfg;
  st_redis *redis; /* the housekeeping thread's own connection */
  int64_t now_ms;  /* nb_now_ms() when the round began */
};

/* Publishes `buf` (len bytes, borrowed: an encoded notice,
 * sc_notice_encode) to <prefix>/notify/<terminal> at QoS 1, from a tick.
 * Returns 0 when Paho took it, NIMBUS_EMQTT when it refused (logged; the
 * worker is probably reconnecting: leave the work due and try again). */
int wk_tick_notice(wk_tick *t, const char *terminal, const void *buf,
                   size_t len);

/* The offload machinery's host functions (handlers_offload.c), for
 * wk_host: see wk_host_api in wk_family.h. */
uint64_t wk_offload_input_size(const wk_ctx *c);
int wk_offload_input_read(wk_ctx *c, uint64_t off, void *buf, size_t n,
                          size_t *got);
const uint8_t *wk_offload_input_mem(const wk_ctx *c);
int wk_offload_output_write(wk_ctx *c, const void *p, size_t n);
const wk_offload_limits *wk_offload_limits_get(void);
/* Sets the default of modules_dir for where this executable runs from
 * (handlers_offload.c): the build tree's modules, or those of the prefix
 * the worker was installed into. Call once, before the config is loaded. */
void wk_offload_locate_modules(void);

/* The offload machinery for the other families (share.create's
 * thumbnails): runs the module serving `type` ("process.image") as part of
 * task c, on stored blob in_hex of in_size bytes (the caller checked that
 * c's terminal may read it: wk_blob_need) with arguments `args` (a map,
 * borrowed), exactly as a task of that type would run: through the result
 * cache, the output stored as a blob and kept as a result for result_ttl,
 * and c's terminal granted the right to read it, that grant appended to
 * c->effect (committed with c's reply, required to find the result's
 * entry still there, so the output blob lives at least until then).
 * c's own type, args and result map are left as they are. `mods` is the
 * calling thread's slot for the modules' thread state: NULL at first,
 * made here, released with wk_modules_thread_fini (wk_modules.h) when the
 * thread ends. Returns 0 with *out (caller storage, st_result_fini) naming
 * the output blob, its size and the module's properties (packed map);
 * else a reply code with c->error (and c->help) filled, *out empty: 503
 * when no module serves `type` here or it does not load, the module's own
 * 4xx for its input, 413 over offload_max_input, 499 on task.cancel, 500
 * when the claim lapsed or the disk failed. */
struct st_result;
int wk_offload_blob(wk_ctx *c, void **mods, const char *type,
                    const msgpack_object *args, const char in_hex[65],
                    uint64_t in_size, struct st_result *out);

/* Options of the built-in families that other files read. */
extern int64_t wk_blob_max_bytes; /* handlers_blob.c: blob_max_bytes */
/* handlers_share.c: share_zstd_level, for the janitor's compression of
 * shared documents (read from the config whether or not this worker
 * serves share.*). */
int wk_share_zstd_level(void);

/* Fills c->error (and c->help when non-NULL) and returns `code`, so a
 * handler can `return wk_fail(c, 404, NULL, "no snapshot %s", id);`. */
int wk_fail(wk_ctx *c, int code, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sets the reply's inline data (copied). Returns 0 or NIMBUS_ENOMEM. */
int wk_reply_data(wk_ctx *c, const void *p, size_t n);

/* A checkpoint for long handlers: returns 0 to go on, NIMBUS_ECANCELED when
 * task.cancel asked to stop, NIMBUS_ELOST when the claim lapsed. */
int wk_checkpoint(wk_ctx *c);

/* Queues a notice (`buf`, len bytes: an encoded notice, sc_notice_encode;
 * copied) for <prefix>/notify/<terminal> (copied), published at QoS 1 once
 * the task's effect is committed, and only then: a task that fails, is
 * replayed from its record or loses its claim sends none. For
 * state-changing types only. Returns 0 or NIMBUS_ENOMEM. */
int wk_notice_add(wk_ctx *c, const char *terminal, const void *buf, size_t len);

/* Tests only: with NIMBUS_TEST_FAULT=<point> (or <point>:<detail> when
 * detail is not NULL, e.g. the task's type) in the environment, SIGKILLs
 * the worker when it reaches `point` (handlers_blob.c lists them); else
 * nothing. */
void wk_fault_point(const char *point, const char *detail);

/* Publishes a progress reply (QoS 0) for the task. */
void wk_progress(wk_ctx *c, int64_t done, int64_t total);

/* Packs a str. */
void wk_pack_str(msgpack_packer *pk, const char *s);
/* Packs the map entry k: v. */
void wk_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v);

/* Makes c's result {retry_after: ms} and nothing else (what the handler
 * packed before is dropped): for a 503 or 429 whose task the agent is to
 * send again, with the same id, after that long (SPEC.md, Replies). */
void wk_retry_after(wk_ctx *c, int64_t ms);

/* Shared answers of the storage handlers (handlers_blob.c): 503 with
 * retry_after 1000 when Redis is unreachable, 500 (logged with the
 * store's errstr) when the disk fails at `what` ("read the blob"). Both
 * return the code after wk_fail. */
int wk_redis_down(wk_ctx *c);
int wk_disk_error(wk_ctx *c, const char *what);
/* 503 with retry_after 30000 for a write the store refused for want of
 * space (NIMBUS_ENOSPC) while it `what` ("store the segment"), logged at
 * most once a minute with the count refused since. */
int wk_storage_full(wk_ctx *c, const char *what);
/* The one check of every argument that names a blob (PROTOCOL.md, Large
 * objects): returns 0 and sets *size to the size of blob `hex` when the
 * task's terminal may read it (it uploaded it, or a snapshot of its own,
 * a live share it got, a live result of its own task or a published agent
 * package refers to it), and *granted (may be NULL) to whether that right
 * is such a grant only, not its own; else returns 404 (the same answer as
 * for a blob that does not exist) or 503 (Redis down) after wk_fail. */
int wk_blob_need(wk_ctx *c, const char *hex, int64_t *size, bool *granted);
/* The same check for n blobs at once (blob.has, backup.commit): sets
 * sizes[i] (caller storage) to the size of blob names[i] when the task's
 * terminal may read it, else to -1, and granted[i] (may be NULL) to
 * whether that right is a grant only (a share, a result, a published
 * package), not the terminal's own access to it. Returns 0, NIMBUS_EREDIS
 * or NIMBUS_ENOMEM. */
int wk_blobs_readable(wk_ctx *c, const char *const *names, size_t n,
                      int64_t *sizes, bool *granted);
/* True when `s` (n bytes) is a blob name: 64 lowercase hex characters. */
bool wk_is_blob_name(const char *s, size_t n);
/* Reads the required blob name args.<key> into hex[65] and, when raw is
 * non-NULL, its 32 bytes; else returns 400 after wk_fail. */
int wk_arg_blob(wk_ctx *c, const char *key, char hex[65], uint8_t raw[32]);

/* For ping: this worker's id, the types the cloud serves (announced by
 * any live worker), packed as an array into `pk`, and the limits map of
 * the worker and its families, packed into `pk`. */
const char *wk_worker_id(const wk_worker *w);
void wk_pack_cloud_types(wk_worker *w, msgpack_packer *pk);
void wk_pack_limits(const wk_worker *w, msgpack_packer *pk);

/* The worker's config table `own` (ended by a NULL name) followed by every
 * built-in family's options (each with its `base`), in one new table the
 * caller frees with free() (after nb_config_free). 0 or NIMBUS_ENOMEM. */
int wk_options_merge(const nb_opt *own, nb_opt **out);

/* The janitor thread (janitor.c): sweeps abandoned staging files and
 * collects unreferenced blobs of `blobs` (borrowed, as is cfg: both must
 * outlive it). Returns 0 and *out, NIMBUS_ENOMEM or NIMBUS_ESYS. */
typedef struct wk_janitor wk_janitor;
int wk_janitor_start(const wk_config *cfg, st_blobstore *blobs,
                     wk_janitor **out);
/* Stops the thread (after its current pass) and frees; NULL is a no-op. */
void wk_janitor_stop(wk_janitor *j);

/* Lifecycle (worker.c). */
int wk_worker_new(const wk_config *cfg, wk_worker **out, char *err,
                  size_t errcap);
/* Connects, subscribes, starts threads; returns once ready (or fails). */
int wk_worker_start(wk_worker *w, char *err, size_t errcap);
/* Stops taking tasks, finishes those in flight and queued, disconnects. */
void wk_worker_drain(wk_worker *w);
void wk_worker_free(wk_worker *w);

#endif
