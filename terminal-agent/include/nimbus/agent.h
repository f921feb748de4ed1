/* libnimbus-agent: the C API a terminal app embeds to hand tasks to a
 * Nimbus cloud (PROTOCOL.md).
 *
 * The agent holds one MQTT 5 session to the broker (persistent: clean start
 * false, session expiry 7 days by default, so final replies made while the
 * terminal was offline wait for it), with TCP_NODELAY and automatic
 * reconnect. Every submitted task is kept until its final reply arrives and
 * is re-sent, same id and same content, after resend_ms without any reply
 * (doubling up to resend_max_ms; a progress reply restarts the clock) and
 * after every reconnect, until its final reply or until the caller gives it
 * up with nimbus_task_release. Waiting with a timeout never gives a task up.
 * A 429 from the cloud (the terminal has max_inflight tasks at a worker
 * already: nothing was done) is not a final reply: the task is sent again
 * after the reply's retry_after (plus up to a quarter, at random), and the
 * caller sees its real answer.
 *
 * Threading: every function may be called from any thread; one mutex per
 * agent guards its state. The agent runs one thread of its own, which calls
 * every callback, one at a time, and re-sends tasks when their clock runs
 * out; Paho's threads never call the application. Callbacks must not block
 * for long (re-sends wait meanwhile) and must not call nimbus_agent_free.
 * They may call nimbus_submit (with block_ms 0 best: a blocking submit from
 * a callback holds up the other callbacks) and nimbus_task_release, also on
 * the task they were called for. nimbus_agent_free must not run while
 * another thread still uses the agent or its tasks.
 *
 * A task refused by the broker (an MQTT 5 PUBACK reason code of 0x80 or
 * more, e.g. 0x87 not authorised, 0x97 quota exceeded) is final and never
 * sent again (PROTOCOL.md, Transport and identity). The agent then ends the
 * task as it ends any other, so that callers driven by callbacks learn of
 * it: nimbus_task_wait returns NIMBUS_EREFUSED, and on_final is called once
 * with a reply the agent made itself: status "error", code 0, err
 * NIMBUS_EREFUSED, error naming the MQTT reason. A reply from the cloud
 * always has err 0.
 *
 * Errors: every function returns 0 or a nimbus_err (nimbus/errors.h);
 * nimbus_strerror() gives its text and nimbus_agent_errstr() the details of
 * the last failure on that agent. An asynchronous call that fails never
 * calls its callback; one that succeeds calls the final callback exactly
 * once (unless the task is released first). */
#ifndef NIMBUS_AGENT_H
#define NIMBUS_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nimbus/errors.h"
#include "nimbus/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library this process runs with, "MAJOR.MINOR.PATCH"
 * (static storage: never freed). NIMBUS_AGENT_VERSION (nimbus/version.h)
 * is the one the app was compiled against: an app built against 1.2 and
 * run with 1.1 can tell. Never fails. */
const char *nimbus_agent_version(void);

typedef struct nimbus_agent nimbus_agent;
typedef struct nimbus_task nimbus_task;

typedef struct nimbus_agent_opts {
  const char *uri;      /* "tcp://host:port"; required */
  const char *terminal; /* terminal id = MQTT username; required */
  const char *password; /* required */
  /* Directory for the agent's own state (the device id, made once per
   * installation and kept in <state_dir>/device-id). NULL: $NIMBUS_STATE_DIR
   * or ~/.nimbus. */
  const char *state_dir;
  const char *device_id; /* override the stored device id; NULL: stored */
  const char *prefix;    /* topic prefix; NULL: "cloud/v1" */
  int max_inflight;      /* outstanding tasks at most; 0: 64 */
  int resend_ms;         /* first re-send after; 0: 30000 */
  int resend_max_ms;     /* re-send interval cap; 0: 300000 */
  int session_expiry_s;  /* 0: 604800 (7 days) */
  int keepalive_s;       /* 0: 30 */
  bool clean_start;      /* false (persistent) unless set */
} nimbus_agent_opts;

/* Fills `o` with the defaults (all zero/NULL). */
void nimbus_agent_opts_init(nimbus_agent_opts *o);

/* Creates an agent; strings in `opts` are copied. Reads or creates the
 * device id: a file <state_dir>/device-id (mode 0600) holding 16 random
 * characters of [A-Za-z0-9_-], made atomically the first time (the directory
 * is created, mode 0700, if missing) and read every later time. Makes no
 * connection.
 *
 * Agents of one installation (one state directory) may run at the same
 * time, in one process or several: each holds a session slot, a lock on
 * <state_dir>/session.<k>.lock, until nimbus_agent_free (or its process
 * ends). The first holds slot 0 and the client id "<terminal>.<device>",
 * whose persistent session is the installation's own. An agent started
 * while that one runs takes the next free slot k (up to 15) and the client
 * id "<terminal>.<device>-<k>", so that it does not take the other's
 * session over; that session lasts at most a day (session_expiry_s is
 * capped) and ends at its nimbus_agent_free, since the installation's own
 * session receives the same replies and notices. With opts->device_id
 * given, no slot is taken and the client id is always that one.
 *
 * Returns 0 and *out (owned by the caller: nimbus_agent_free),
 * NIMBUS_EINVAL for a missing or malformed option (terminal not 1-64 bytes
 * of [A-Za-z0-9._-], device id not 8-64 of [A-Za-z0-9_-], a prefix with
 * wildcards, a negative number, resend_max_ms below resend_ms,
 * max_inflight over 65535), NIMBUS_EIO when the state directory, the
 * device-id file or a slot's lock file cannot be used or the file holds no
 * valid id, NIMBUS_EINUSE when all 16 slots are held (one only when the
 * stored device id is over 61 bytes), NIMBUS_ESYS, NIMBUS_ENOMEM. */
int nimbus_agent_new(const nimbus_agent_opts *opts, nimbus_agent **out);

/* nimbus_agent_new, also writing a sentence for a person about a failure
 * into `err` (errcap bytes; may be NULL). */
int nimbus_agent_new_err(const nimbus_agent_opts *opts, nimbus_agent **out,
                         char *err, size_t errcap);

/* Connects and subscribes (QoS 1) to the terminal's reply and notice
 * topics, waiting at most timeout_ms (-1: forever). While no broker
 * answers (nothing listening yet, a broker restarting) the connect is
 * tried again after 100 ms, doubling to 2 s, within that time; a refusal
 * by a broker that answered is final at once. Returns 0,
 * NIMBUS_EAUTH (bad credentials, client id refused, banned),
 * NIMBUS_EREFUSED (a subscription refused: SUBACK reason 0x80 or more),
 * NIMBUS_ETIMEDOUT, NIMBUS_EMQTT (no broker there, another refusal),
 * NIMBUS_ENOMEM; nimbus_agent_errstr says more. A failed call may be
 * retried. After a first success the agent reconnects by itself whenever
 * the link drops, subscribes again on every connect and then re-sends
 * every outstanding task (a subscription refused then is tried again
 * after 1 s, doubling to 60 s, with nimbus_agent_errstr saying why, and no
 * task goes until it is granted); calling again is then a no-op returning
 * 0. Tasks submitted before connecting are sent once connected. */
int nimbus_agent_connect(nimbus_agent *a, int timeout_ms);

/* True while the MQTT session is up. */
bool nimbus_agent_connected(const nimbus_agent *a);

/* Disconnects (a clean DISCONNECT, so the broker keeps the session for
 * session_expiry_s; an extra slot's session ends here, see
 * nimbus_agent_new), frees the session slot, and frees. Tasks still outstanding
 * are dropped without their callbacks, and every task handle not yet released
 * is freed too: do not use one afterwards. NULL is a no-op. Must not be called
 * from a callback. */
void nimbus_agent_free(nimbus_agent *a);

/* The client id in use ("<terminal>.<device id>", or
 * "<terminal>.<device id>-<k>" in an extra session slot), borrowed. */
const char *nimbus_agent_client_id(const nimbus_agent *a);
/* Details of the last error on `a` ("" when none): a copy taken under the
 * agent's lock, so any thread may ask while the agent's own threads record
 * a new failure. Borrowed: the calling thread's, valid until its next call
 * of nimbus_agent_errstr. */
const char *nimbus_agent_errstr(const nimbus_agent *a);

/* A reply as the callbacks and nimbus_task_wait see it. `status` is "ok",
 * "error" or "progress". `result` is the packed msgpack map of results (or
 * error details), NULL when absent. Strings are NUL-terminated. `err` is 0
 * for every reply that came from the cloud and NIMBUS_EREFUSED for the one
 * the agent makes when the broker refused the task (see the top of this
 * file). */
typedef struct nimbus_reply {
  const char *id;
  const char *status;
  int code;
  const char *error; /* NULL when absent */
  const char *help;  /* NULL when absent */
  const uint8_t *result;
  size_t result_len;
  const uint8_t *data; /* NULL when absent */
  size_t data_len;
  int64_t done, total; /* progress */
  int err;             /* 0, or NIMBUS_EREFUSED: made by the agent */
} nimbus_reply;

/* Callbacks get a borrowed reply valid only during the call. */
typedef void (*nimbus_reply_cb)(void *ctx, nimbus_task *task,
                                const nimbus_reply *reply);

typedef struct nimbus_submit_opts {
  const char *id;              /* NULL: 22 chars = 132 random bits, URL-safe */
  nimbus_reply_cb on_final;    /* may be NULL: use nimbus_task_wait */
  nimbus_reply_cb on_progress; /* may be NULL */
  void *ctx;
} nimbus_submit_opts;

/* Submits a task of `type` (1-64 bytes of [A-Za-z0-9._-]: one topic level)
 * with `args` (a packed msgpack map, or NULL) and optional inline `data`
 * (has_data). Bytes are copied. Blocks while max_inflight tasks are
 * outstanding, at most block_ms (0: do not block, -1: forever). A task
 * stops counting as outstanding when its final reply arrives or it is
 * released. Returns 0 and *out, a handle owned by the caller until it calls
 * nimbus_task_release (also after the final reply); NIMBUS_EBUSY when still
 * full after block_ms; NIMBUS_EINVAL (bad type, id, args not one msgpack
 * map); NIMBUS_ECONFLICT when a task with this id is already outstanding
 * here; NIMBUS_ETOOBIG for a task over 272 KiB encoded; NIMBUS_ECLOSED when
 * the agent is shutting down; NIMBUS_ENOMEM. The task is sent now if
 * connected, else on connect. `sopts` may be NULL. on_final may run (on the
 * agent's thread) before nimbus_submit has returned. */
int nimbus_submit(nimbus_agent *a, const char *type, const uint8_t *args,
                  size_t args_len, const uint8_t *data, size_t data_len,
                  bool has_data, const nimbus_submit_opts *sopts, int block_ms,
                  nimbus_task **out);

/* The task's id (borrowed, valid until release). */
const char *nimbus_task_id(const nimbus_task *t);

/* Waits at most timeout_ms (-1: forever) for the final reply. Returns 0 and
 * *out, a copy the caller frees with nimbus_reply_free (a cloud error is a
 * reply too: status "error"); NIMBUS_ETIMEDOUT (the task stays outstanding
 * and keeps being re-sent); NIMBUS_EREFUSED when the broker refused the
 * publish (final, not re-sent; *out is NULL; nimbus_agent_errstr names the
 * reason). May be called again, from any thread, also after the end. */
int nimbus_task_wait(nimbus_task *t, int timeout_ms, nimbus_reply **out);

/* Gives the task up (no more re-sends, no callbacks after this returns:
 * called from another thread while the task's callback runs, it waits for
 * that callback to return) and frees the handle. NULL is a no-op. */
void nimbus_task_release(nimbus_task *t);

/* Frees a reply from nimbus_task_wait. NULL is a no-op. */
void nimbus_reply_free(nimbus_reply *r);

/* Called (on the agent's thread, one callback at a time, like every other
 * callback) for each valid notice on <prefix>/notify/<terminal>; `kind`
 * and `notice`, the packed msgpack map (PROTOCOL.md: e.g. kind share.new
 * with token, name, owner, size, mime, expires_at), are borrowed for the
 * call: copy what the app keeps. Set before connecting, so that notices
 * the broker kept while the terminal was away reach it. */
typedef void (*nimbus_notice_cb)(void *ctx, const char *kind,
                                 const uint8_t *notice, size_t len);
void nimbus_agent_on_notice(nimbus_agent *a, nimbus_notice_cb cb, void *ctx);

/* ---- Blobs: the transfer engine ----------------------------------------
 *
 * A transfer engine moves blobs (PROTOCOL.md, Large objects) over one
 * agent: uploads (SHA-256, blob.has, blob.status to resume what an earlier
 * upload of the same content left, blob.put of the missing segments,
 * blob.commit) and downloads (blob.get of the ranges, written in order into
 * a part file, its SHA-256 checked, then renamed into place; a part file
 * left by an earlier download is resumed). Up to `jobs` tasks are in
 * flight at once, across every transfer queued, so many small blobs move
 * as fast as one large one; blob.has asks about up to 1,000 queued uploads
 * in one task.
 *
 * Transient answers (429, 500 and 503) are not surfaced: the task is sent
 * again after the reply's retry_after (1 s when it has none, with up to a
 * quarter more of random jitter so that many terminals do not come back in
 * step), for as long as timeout_ms allows; only then does the transfer end
 * with NIMBUS_ETIMEDOUT.
 *
 * Threading: an engine is driven by one thread at a time, the one calling
 * nimbus_xfer_run, and every callback of its transfers runs on that thread,
 * from inside nimbus_xfer_run. Callbacks may queue more transfers
 * (nimbus_blob_upload, nimbus_blob_download: they are run by the same
 * nimbus_xfer_run) and must not call nimbus_xfer_run or nimbus_xfer_free.
 * nimbus_xfer_cancel may be called from any thread and from a signal
 * handler. The engine's tasks go through the agent as any other (its
 * max_inflight should leave room for `jobs` of them); other tasks may be
 * submitted on the same agent meanwhile.
 *
 * Errors: nimbus_blob_upload and nimbus_blob_download return 0 or a
 * nimbus_err. One that fails never calls its callback; one that succeeds
 * calls on_done exactly once, from a later nimbus_xfer_run (unless the
 * engine is freed first), with the outcome in nimbus_blob_result.err. */

typedef struct nimbus_xfer nimbus_xfer;

typedef struct nimbus_xfer_opts {
  int jobs;       /* tasks in flight at most; 0: 16 */
  int timeout_ms; /* a transfer ends with NIMBUS_ETIMEDOUT after this long
                     without any reply while tasks are in flight, or after
                     this long of transient answers; 0: 10000 */
  /* Polled at least every 200 ms by nimbus_xfer_run: true stops it as
   * nimbus_xfer_cancel does. NULL: never. Called on the run's thread. */
  bool (*stop)(void *ctx);
  void *stop_ctx;
} nimbus_xfer_opts;

/* Fills `o` with the defaults (all zero/NULL). */
void nimbus_xfer_opts_init(nimbus_xfer_opts *o);

/* Creates an engine over agent `a` (borrowed: it must outlive the engine;
 * it need not be connected yet). `opts` may be NULL (the defaults); it is
 * copied. Returns 0 and *out (owned by the caller: nimbus_xfer_free),
 * NIMBUS_EINVAL (a NULL agent, a negative number), NIMBUS_ENOMEM,
 * NIMBUS_ESYS. */
int nimbus_xfer_new(nimbus_agent *a, const nimbus_xfer_opts *opts,
                    nimbus_xfer **out);

/* Gives up every transfer not yet ended, without its callback (tasks in
 * flight are released; part files stay, for a later download to resume),
 * and frees. NULL is a no-op. Must not be called from a callback or while
 * nimbus_xfer_run runs. */
void nimbus_xfer_free(nimbus_xfer *x);

/* Runs the queued transfers until every one has ended, calling their
 * callbacks (on this thread). Returns 0 when all have ended (each with its
 * own outcome in its callback); NIMBUS_ECANCELED when nimbus_xfer_cancel
 * or opts.stop asked it to stop, or NIMBUS_ETIMEDOUT when no reply came
 * for timeout_ms while tasks were in flight: then every transfer not yet
 * ended ends with that error (its callback is called), part files stay
 * for a later download, and what the cloud acknowledged stays for a later
 * upload. NIMBUS_EINVAL when called from a callback. Returns at once when
 * nothing is queued. A cancel is consumed by the run it stops. */
int nimbus_xfer_run(nimbus_xfer *x);

/* Asks nimbus_xfer_run to stop at its next step (within 200 ms). Any
 * thread; async-signal-safe. A cancel made while no run is going stops the
 * next one at once. */
void nimbus_xfer_cancel(nimbus_xfer *x);

/* How a transfer ended, borrowed by on_done for the call. */
typedef struct nimbus_blob_result {
  /* 0; NIMBUS_ECONFLICT when an upload's source is not what was hashed (it
   * changed or vanished, or the cloud found other bytes than the SHA-256:
   * it then discarded the upload); NIMBUS_ENOTFOUND (the cloud has no such
   * blob for this terminal, download); NIMBUS_ETOOBIG (413: over a limit
   * or the quota); NIMBUS_EPROTO (a reply that is not what PROTOCOL.md
   * says, or downloaded bytes without the blob's SHA-256, twice); NIMBUS_EIO
   * (a file could not be read or written, or the cloud answered another
   * error: see code); NIMBUS_EREFUSED (the broker refused a task);
   * NIMBUS_ETIMEDOUT, NIMBUS_ECANCELED (see nimbus_xfer_run). */
  int err;
  int code;          /* the cloud's code when an answer of it ended this */
  const char *error; /* a sentence for a person when err != 0, else NULL */
  char blob[65];     /* the blob's SHA-256, hex ("" when never known) */
  int64_t size;      /* the blob's size (-1 when never known) */
  /* Upload: true when this transfer committed it, false when the cloud had
   * it already. Download: true when bytes were fetched (false when a part
   * file held them all). */
  bool moved;
  int64_t bytes; /* segment bytes sent (blob.put) or received (blob.get) */
  /* Download, err 0: the verified file, open read-only and positioned
   * nowhere in particular (use pread), valid during the callback (the
   * engine closes it afterwards; dup it to keep it). Else -1. */
  int fd;
} nimbus_blob_result;

/* on_done gets the outcome; on_progress (may be NULL) how many bytes of
 * the blob's size are done: first when the transfer learns what it must
 * move (done = what the cloud or the part file already holds), then after
 * every segment acknowledged or written. Both borrow what they get. */
typedef void (*nimbus_blob_done_cb)(void *ctx, const nimbus_blob_result *r);
typedef void (*nimbus_blob_progress_cb)(void *ctx, int64_t done, int64_t total);

/* Reads exactly `n` bytes at offset `off` of an upload's source into
 * `buf`. Returns 0, NIMBUS_ECONFLICT when the source changed since it was
 * hashed, or NIMBUS_EIO (the transfer ends with that error). Called on
 * the run's thread. */
typedef int (*nimbus_blob_read_fn)(void *ctx, uint8_t *buf, size_t n,
                                   int64_t off);

typedef struct nimbus_blob_upload_opts {
  /* The source, one of: */
  const char *path; /* a regular file (copied), opened with O_NOFOLLOW when
                       the upload starts, closed when it ends */
  int fd;           /* -1, or a file read with pread (borrowed: it must stay
                       open until on_done) */
  nimbus_blob_read_fn read; /* or a reader of the caller's */
  void *read_ctx;
  /* Its size: -1 (the default) to take it from the file when it is
   * hashed; required (>= 0) with `read`. */
  int64_t size;
  /* Its SHA-256 (32 bytes, copied) when the caller knows it; NULL: the
   * engine reads the source once to hash it before anything is sent
   * (then a source that changes between that and the upload is
   * NIMBUS_ECONFLICT). A wrong one is NIMBUS_ECONFLICT at blob.commit. */
  const uint8_t *sha256;
  /* With path and sha256: the identity the file had when it was hashed
   * (st_mtim in ns, st_ino), both 0 to check nothing. A file found
   * otherwise is NIMBUS_ECONFLICT. A path or fd source whose size or
   * mtime changes during the upload is NIMBUS_ECONFLICT too. */
  int64_t mtime_ns;
  uint64_t ino;
  nimbus_blob_done_cb on_done; /* required */
  nimbus_blob_progress_cb on_progress;
  void *ctx;
} nimbus_blob_upload_opts;

/* Fills `o` with the defaults: no source, fd -1, size -1. */
void nimbus_blob_upload_opts_init(nimbus_blob_upload_opts *o);

/* Queues an upload; it runs in nimbus_xfer_run. The upload's name on the
 * cloud is the blob's SHA-256 hex, so an upload of the same content that
 * an earlier run (of any process of this terminal) left unfinished is
 * resumed: only the segments blob.status lists as missing are sent. A
 * blob the cloud already has for this terminal is not sent at all
 * (result.moved false). Returns 0; NIMBUS_EINVAL (no source or two, no
 * on_done, a reader without a size, a negative size); NIMBUS_ENOMEM. */
int nimbus_blob_upload(nimbus_xfer *x, const nimbus_blob_upload_opts *o);

typedef struct nimbus_blob_download_opts {
  const char *blob; /* the SHA-256 hex (copied); required */
  int64_t size;     /* its size when known; -1 (the default): learnt */
  /* Where: the final name `name` in directory `dirfd` (AT_FDCWD: the
   * current one), by way of the part file `part` in the same directory
   * (NULL: ".<name>.part"; both copied, neither may hold a '/' unless
   * dirfd is AT_FDCWD). dirfd is borrowed: it must stay open until
   * on_done. Files are opened with O_NOFOLLOW: a link in their place is
   * an error, never followed. */
  int dirfd;
  const char *name;
  const char *part;
  int64_t mtime_ms; /* with set_mtime: the file's mtime, ms since 1970 */
  bool set_mtime;
  /* Leave the verified part file where it is, not renamed (the caller
   * renames it, e.g. a batch at once after one syncfs); name is then
   * unused. */
  bool keep_part;
  /* No fsync of the file and the directory (the caller syncs). */
  bool no_sync;
  nimbus_blob_done_cb on_done; /* required */
  nimbus_blob_progress_cb on_progress;
  void *ctx;
} nimbus_blob_download_opts;

/* Fills `o` with the defaults: size -1, dirfd AT_FDCWD, the rest 0. */
void nimbus_blob_download_opts_init(nimbus_blob_download_opts *o);

/* Queues a download; it runs in nimbus_xfer_run. The part file is opened
 * (created, mode 0666 & ~umask); with opts.size given, what it holds up
 * to that size is taken as the blob's first bytes (hashed again, then the
 * rest fetched); with size -1 it is started over.
 * Once all bytes are there and their SHA-256 is the blob's, the file gets
 * its mtime, is fsynced, renamed to `name` and the directory fsynced
 * (unless keep_part, no_sync). Bytes without the blob's SHA-256 are
 * fetched once more from the start. A download that ends with an error
 * removes its part file (nothing is left behind for a blob given up),
 * except on NIMBUS_ETIMEDOUT and NIMBUS_ECANCELED, where it stays for a
 * later download to resume. Returns 0; NIMBUS_EINVAL (blob not 64
 * lowercase hex, no name, no on_done, a '/' in a name); NIMBUS_ENOMEM. */
int nimbus_blob_download(nimbus_xfer *x, const nimbus_blob_download_opts *o);

/* ---- Compute offload ---------------------------------------------------
 *
 * nimbus_offload runs one offload task (PROTOCOL.md, Compute offload;
 * schemas/SPEC.md, process.image) end to end, on the calling thread:
 *
 * 1. the input reaches the cloud: a file is uploaded through a transfer
 *    engine of its own (nimbus_blob_upload: blob.has first, so content
 *    the cloud already has for this terminal is not sent again; an
 *    upload an earlier run left unfinished resumes); bytes in memory of
 *    at most 256 KiB go inline as the task's data, larger ones are
 *    uploaded the same way; a blob already in the cloud (a backed-up
 *    photo, an earlier result) is named and nothing is uploaded;
 * 2. the task (`type`, args {blob, ops, format, quality, ...}) is
 *    submitted and waited for, its progress replies passed on; a 500 or
 *    503 whose result carries retry_after (the cloud says: again in a
 *    moment) is sent again, same id, after that wait plus jitter, within
 *    timeout_ms; any other error reply is the outcome;
 * 3. the output is written: to out_path through the engine
 *    (nimbus_blob_download: a part file beside it, its SHA-256 checked,
 *    then renamed; an interrupted download resumes), or, when the reply
 *    brought it inline (at most 256 KiB), checked against the result's
 *    SHA-256 and written the same way (part file, fsync, rename, fsync of
 *    the directory); and/or into memory (want_data).
 *
 * Progress: on_progress(ctx, phase, done, total), always on the calling
 * thread from inside nimbus_offload, never after it returns: phase
 * NIMBUS_OFFLOAD_UPLOAD and DOWNLOAD in bytes of the blob (first when the
 * transfer learns what it must move, done being what was there already),
 * NIMBUS_OFFLOAD_PROCESS in the type's unit as the cloud reports it
 * (process.image: per mille of the output's pixels, total 1000).
 *
 * Stopping: `stop` is polled at least every 200 ms; once it returns true
 * the call ends with NIMBUS_ECANCELED: an upload or download stops (what
 * the cloud acknowledged and the part file stay, for a later call to
 * resume); a task the cloud is running gets task.cancel, and the call
 * waits up to 3 s for that answer and up to 3 s more for the task's own
 * (499), so that the cloud stops at its next checkpoint.
 *
 * Threading: blocks the calling thread, which must not be an agent's
 * callback (the agent's thread delivers the progress it waits for). Any
 * number of calls may run at once on one agent, each from its own
 * thread; each takes up to 1 + `jobs` of the agent's max_inflight. */

/* The unit a progress call counts in. */
typedef enum nimbus_offload_phase {
  NIMBUS_OFFLOAD_UPLOAD = 1, /* bytes of the input sent */
  NIMBUS_OFFLOAD_PROCESS,    /* the cloud's done/total for the task */
  NIMBUS_OFFLOAD_DOWNLOAD    /* bytes of the output received */
} nimbus_offload_phase;

typedef void (*nimbus_offload_progress_cb)(void *ctx, int phase, int64_t done,
                                           int64_t total);

/* At most this many ops per task (schemas/SPEC.md, Compute offload). */
#define NIMBUS_OFFLOAD_OPS_MAX 32

typedef struct nimbus_offload_opts {
  const char *type; /* "process.image" (later process.audio, process.doc);
                       required */
  /* The input, exactly one of: */
  const char *in_path;    /* a regular file, uploaded */
  const char *in_blob;    /* 64 lowercase hex: a blob this terminal may read */
  const uint8_t *in_data; /* with has_in_data: in_len bytes (borrowed for the
                             call; inline when at most 256 KiB, else
                             uploaded) */
  size_t in_len;
  bool has_in_data;
  /* The ops, exactly one of: a packed msgpack array of 1-32 maps
   * {op: NAME, PARAM: VALUE, ...}, or 1-32 op strings in the CLI's
   * syntax, parsed by nimbus_offload_ops_parse. */
  const uint8_t *ops;
  size_t ops_len;
  const char *const *op_strings;
  size_t nop_strings;
  const char *format; /* the output's format, e.g. "webp"; NULL: the type's
                         default (process.image: the input's) */
  /* Sent as args.quality when not 0: as an int when whole (process.image:
   * 1-100), else as a float. */
  double quality;
  /* More args, a packed msgpack map (NULL: none), merged in; it may not
   * hold blob, ops, format or quality. */
  const uint8_t *args;
  size_t args_len;
  /* The output, either, both or neither (neither: it stays in the cloud,
   * named by the result's blob, readable for the cloud's result_ttl): */
  const char *out_path; /* a file, replaced atomically; its part file is
                           .<name>.part beside it */
  bool want_data;       /* into result.data */
  /* Where an output wanted only in memory, and too large to come inline,
   * is downloaded to (a file of a random name, mode 0600, removed before
   * the call returns). NULL: $TMPDIR, else /tmp. */
  const char *tmp_dir;
  /* The task id: the same id again (e.g. after a crash) gets the recorded
   * answer, not a second run. NULL: a random one. Copied. */
  const char *id;
  int jobs; /* the engine's tasks in flight at most; 0: 16 */
  /* A phase ends with NIMBUS_ETIMEDOUT after this long without any reply
   * (a progress reply counts), or after this long of transient answers.
   * The agent sends a running task again after its resend_ms and the
   * cloud answers that with progress, so keep this above resend_ms for
   * work that reports no progress of its own. 0: 60000. */
  int timeout_ms;
  nimbus_offload_progress_cb on_progress; /* may be NULL */
  void *ctx;
  bool (*stop)(void *ctx); /* may be NULL; called on the calling thread */
  void *stop_ctx;
} nimbus_offload_opts;

/* Fills `o` with the defaults (all zero/NULL). */
void nimbus_offload_opts_init(nimbus_offload_opts *o);

/* What nimbus_offload found. Every pointer is owned by the result and
 * freed by nimbus_offload_result_fini. */
typedef struct nimbus_offload_result {
  /* The cloud's code when its final answer ended the call (0 on
   * success; 400, 404, 413, 415, 422, 499, 503...), else 0. */
  int code;
  char error[512];  /* a sentence for a person when the call failed: the
                       cloud's own words when code != 0; else "" */
  char help[256];   /* the cloud's help when it gave one; else "" */
  char task_id[65]; /* the task's id ("" when none was submitted) */
  char input[65];   /* the input's blob: given, or uploaded ("" inline) */
  bool uploaded;    /* this call sent the input's bytes as a blob */
  char blob[65];    /* the output's SHA-256 hex ("" until known) */
  int64_t size;     /* the output's size (-1 until known) */
  bool cached;      /* answered from the cloud's result cache */
  bool inline_data; /* the output came inline in the reply */
  /* The final reply's result map, packed (success: blob, size, cached and
   * the type's own keys, e.g. width, height, bands, format; an error: its
   * details), NULL when none. Decode it with any msgpack reader. */
  uint8_t *result;
  size_t result_len;
  uint8_t *data; /* want_data and success: the output's bytes (size of
                    them; non-NULL also when empty), else NULL */
  size_t data_len;
  int64_t bytes_sent;     /* segment bytes uploaded by this call */
  int64_t bytes_received; /* segment bytes downloaded by this call */
} nimbus_offload_result;

/* Runs one offload task as described above. `a` is borrowed (connected or
 * not: tasks go once it is), `o` and everything it points to borrowed for
 * the call. `out` is the caller's storage, filled from scratch by every
 * call (also one that fails: error says why), and must be released with
 * nimbus_offload_result_fini.
 *
 * Returns 0 (the output is where it was asked to be; result, blob, size
 * and cached set), or:
 * - NIMBUS_EINVAL: options wrong (no type, no input or two, no ops or
 *   both forms, an op string that does not parse: error says which and
 *   why, args not a map or holding a reserved key), nothing sent; or the
 *   cloud answered 400 (code 400: an unknown op, a parameter out of its
 *   range);
 * - NIMBUS_ENOTFOUND: 404, no such input blob for this terminal;
 * - NIMBUS_ETOOBIG: 413, input, output or pixels over the cloud's limits;
 * - NIMBUS_ECANCELED: `stop` said so, or someone else's task.cancel (code
 *   499);
 * - NIMBUS_EIO: the cloud answered another error (code says which: 415
 *   unsupported format, 422 corrupt input, 503 the type's module is not
 *   installed or the cloud is unavailable, ...), or the input or output
 *   file could not be read or written (code 0);
 * - NIMBUS_ECONFLICT: the input file changed while it was uploaded; or
 *   409, the task id was used before for another task;
 * - NIMBUS_EPROTO: a reply that is not what PROTOCOL.md says (no blob, or
 *   bytes without the result's SHA-256);
 * - NIMBUS_ETIMEDOUT, NIMBUS_EREFUSED (the broker refused a task),
 *   NIMBUS_ECLOSED, NIMBUS_ENOMEM.
 * Callbacks run only inside the call, on its thread, whether it succeeds
 * or fails; one refused for its options (NIMBUS_EINVAL before anything is
 * sent) calls neither on_progress nor stop. The output file is either the
 * whole verified output or untouched; out->data is set only on success. */
int nimbus_offload(nimbus_agent *a, const nimbus_offload_opts *o,
                   nimbus_offload_result *out);

/* Frees what `r` holds and empties it. NULL is a no-op; so is a second
 * call. */
void nimbus_offload_result_fini(nimbus_offload_result *r);

/* Parses `n` op strings (each borrowed) into a packed msgpack array of n
 * maps, the form nimbus_offload_opts.ops takes. The syntax, the CLI's:
 *
 *   NAME[:KEY=VALUE[,KEY=VALUE]...]      e.g. blur:sigma=4
 *                                            resize:width=800,fit=fill
 *
 * NAME is 1-32 of [a-z0-9_]; KEY is 1-32 of [A-Za-z0-9_], not "op", once
 * per op; VALUE is 1 or more bytes without ',': a decimal number (an int
 * when it is whole, "4" and "4.0" alike, else a float64), true or false
 * (a bool), anything else a string ("fill"). At most
 * NIMBUS_OFFLOAD_OPS_MAX ops, at least one. Returns 0 and *out (owned by
 * the caller: free()) with *out_len; NIMBUS_EINVAL with a sentence naming
 * the op and what is wrong in `err` (errcap bytes; may be NULL);
 * NIMBUS_ENOMEM. */
int nimbus_offload_ops_parse(const char *const *ops, size_t n, uint8_t **out,
                             size_t *out_len, char *err, size_t errcap);

/* ---- Loading the agent: its version, packages, offers, installs -------
 *
 * The agent loads itself onto terminals (PROTOCOL.md, The agent itself;
 * schemas/SPEC.md, The agent itself): it asks for the newest package of
 * its platform (agent.get), or the cloud offers one unasked (the notice
 * agent.offer) and the user answers (agent.answer); an accepted or pulled
 * package is downloaded, checked and installed by nimbus_agent_install,
 * which then tells the cloud the version it runs (agent.report).
 *
 * A package is a tar archive (gzip-compressed or not) holding
 * bin/nimbus-agent and lib/libnimbus-agent.so.N (regular files; the
 * binary finds the library through its RPATH $ORIGIN/../lib), made by
 * scripts/package-agent. An install directory holds
 *   versions/<version>/   one directory per installed version
 *   current -> versions/<version>    what runs (a symbolic link)
 *   previous -> versions/<version>   what ran before, for a rollback
 *   nimbus.pub            the public key packages are checked against
 *                         (optional: see nimbus_install_opts.key_path)
 * and, while an install runs, .lock and .incoming/ (the download).
 *
 * Threading: nimbus_agent_get, nimbus_offer_answer, nimbus_agent_report
 * and nimbus_agent_install block the calling thread until the cloud's
 * answer (or timeout_ms) and must not be called from a callback of the
 * agent (its thread delivers the replies they wait for): they return
 * NIMBUS_EINVAL there. They may run on any other thread, several at once.
 * nimbus_agent_rollback touches no agent. */
/* The platform the loaded library was built for ("linux-x86_64", 1-64 of
 * [A-Za-z0-9._-]; NIMBUS_AGENT_PLATFORM, nimbus/version.h). Static
 * storage; never NULL. nimbus_agent_version() (above) is the version the
 * agent runs, the one it compares packages with. */
const char *nimbus_agent_platform(void);

/* A package as the cloud describes it (agent.get's result; also that of
 * an accepted agent.answer). Plain storage: no pointers, nothing to free. */
typedef struct nimbus_agent_pkg {
  /* true: the cloud has nothing newer than the `have` it was told (the
   * rest is empty). */
  bool up_to_date;
  /* true: the fields below describe a package. false with up_to_date
   * false: the answer named none (a refused offer; an accepted one whose
   * platform has no package any more; an offer not this terminal's). */
  bool found;
  char platform[65];
  char version[65];
  char blob[65];   /* the package's blob, SHA-256 hex */
  char sha256[65]; /* its SHA-256 hex (the same as blob) */
  char signature[129];
  int64_t size;      /* bytes */
  int64_t published; /* ms since the epoch */
  char notes[2049];  /* the operator's notes for a person (may be "") */
} nimbus_agent_pkg;

/* agent.get: the newest package of `platform` (NULL: nimbus_agent_platform)
 * for a terminal that runs `have` (NULL: say nothing, so the cloud answers
 * its newest whatever runs). Waits at most timeout_ms (-1: forever). A
 * transient answer (500, 503, 429) is asked again after its retry_after
 * within that time. Returns 0 and *out (up_to_date, or found); or
 * NIMBUS_ENOTFOUND (404: no package for that platform), NIMBUS_EINVAL (a
 * malformed platform or have, checked before sending; or the cloud's
 * 400; or called from a callback), NIMBUS_EPROTO (a result that is not
 * what SPEC.md says), NIMBUS_EIO (another error of the cloud),
 * NIMBUS_ETIMEDOUT, NIMBUS_EREFUSED (the broker refused the task),
 * NIMBUS_ECLOSED, NIMBUS_ENOMEM. A sentence for a person goes into err
 * (errcap bytes; may be NULL): the cloud's own words when it answered an
 * error. */
int nimbus_agent_get(nimbus_agent *a, const char *platform, const char *have,
                     int timeout_ms, nimbus_agent_pkg *out, char *err,
                     size_t errcap);

/* An offer as the notice agent.offer brings it. Every string is borrowed
 * for the callback's call only (copy what the app keeps); all are
 * NUL-terminated and non-NULL. */
typedef struct nimbus_agent_offer {
  const char *offer;    /* the offer's id, for nimbus_offer_answer */
  const char *platform; /* the platform the package is for */
  const char *version;  /* the package's version */
  const char *text;     /* the operator's words for a person (may be "") */
  int64_t size;         /* the package's size in bytes */
} nimbus_agent_offer;

typedef void (*nimbus_offer_cb)(void *ctx, const nimbus_agent_offer *offer);

/* Calls `cb` (with `ctx`) for each notice agent.offer that holds every
 * field above with its type (SPEC.md, section 3), a platform of 1-64 of
 * [A-Za-z0-9._-] and a semantic version, on the agent's thread
 * like every callback (one at a time, see the top of this file). While a
 * callback is set, such offers go to it and not to the notice callback;
 * other notices, and agent.offer notices lacking any of that, still go to the
 * notice callback. The callback must not block: to ask the user and
 * answer, hand the offer (copied) to another thread, which calls
 * nimbus_offer_answer. Set it before connecting, so that offers the
 * broker kept while the terminal was away reach it. NULL cb: none. */
void nimbus_agent_on_offer(nimbus_agent *a, nimbus_offer_cb cb, void *ctx);

/* agent.answer: accepts or refuses offer `offer` (an offer's id, 1-64
 * bytes), telling the cloud the terminal's `platform` and the version it
 * runs `have` (NULL: nimbus_agent_platform(), nimbus_agent_version()).
 * Accepted, *out is as for nimbus_agent_get (found: install it with
 * nimbus_agent_install; up_to_date: the terminal runs the newest already);
 * refused, *out is empty (neither found nor up_to_date) and the cloud
 * offers it again after its reoffer interval. An offer that is not this
 * terminal's to answer (unknown, answered already) is answered ok with an
 * empty result too. Returns and waits as nimbus_agent_get. */
int nimbus_offer_answer(nimbus_agent *a, const char *offer, bool accept,
                        const char *platform, const char *have, int timeout_ms,
                        nimbus_agent_pkg *out, char *err, size_t errcap);

/* agent.report: tells the cloud that the terminal runs `version` of
 * `platform` (NULL: nimbus_agent_platform()), so that it is not offered
 * that version or an older one. Returns and waits as nimbus_agent_get. */
int nimbus_agent_report(nimbus_agent *a, const char *platform,
                        const char *version, int timeout_ms, char *err,
                        size_t errcap);

/* Which check a package failed (nimbus_install_result.check). */
typedef enum nimbus_install_check {
  NIMBUS_CHECK_NONE = 0,
  NIMBUS_CHECK_SIZE,      /* its bytes are not `size` long, or it is over
                             max_package */
  NIMBUS_CHECK_SHA256,    /* its bytes do not have the SHA-256 `sha256`, or
                             blob and sha256 differ */
  NIMBUS_CHECK_SIGNATURE, /* the signature is not the key's over
                             nimbus-agent\n<platform>\n<version>\n<size>\n
                             <sha256> */
  NIMBUS_CHECK_ARCHIVE,   /* not a package: damaged, unsafe (a link, a
                             device, an absolute path, ".."), over
                             max_unpacked, or without bin/nimbus-agent */
  NIMBUS_CHECK_VERSION    /* at or below the running version (without
                             allow_downgrade), or for another platform */
} nimbus_install_check;

typedef struct nimbus_install_opts {
  const char *install_dir; /* required; created (0755) when missing */
  /* The public key file (64 hex digits, nimbus.pub). NULL:
   * <install_dir>/nimbus.pub when it exists, else the key compiled in
   * (CMake option NIMBUS_AGENT_PUBKEY), else the install fails
   * (NIMBUS_EINVAL: no key to check against). */
  const char *key_path;
  /* The version compared with: NULL: nimbus_agent_version(). */
  const char *running;
  /* The platform the package must be for: NULL: nimbus_agent_platform(). */
  const char *platform;
  /* Install a version at or below `running` too. */
  bool allow_downgrade;
  /* Do not send agent.report after installing. */
  bool no_report;
  int64_t max_package;  /* bytes; 0: 256 MiB */
  int64_t max_unpacked; /* bytes of files in the archive; 0: 512 MiB */
  int jobs;             /* the transfer engine's tasks in flight; 0: 16 */
  int timeout_ms;       /* as nimbus_xfer_opts.timeout_ms; and for
                           agent.report; 0: 10000 */
  nimbus_blob_progress_cb on_progress; /* the download, on the calling
                                          thread; may be NULL */
  void *ctx;
  bool (*stop)(void *ctx); /* may be NULL; polled on the calling thread */
  void *stop_ctx;
} nimbus_install_opts;

/* Fills `o` with the defaults (all zero/NULL). */
void nimbus_install_opts_init(nimbus_install_opts *o);

/* What an install or a rollback did, the caller's storage. */
typedef struct nimbus_install_result {
  int check;              /* a nimbus_install_check: the one that failed */
  char error[512];        /* a sentence for a person when the call failed */
  char version[65];       /* current now ("" when none) */
  char previous[65];      /* previous now ("" when none) */
  bool already;           /* install: `version` was current already */
  bool reported;          /* agent.report was answered ok */
  char report_error[256]; /* why not, when it was sent and failed */
  int64_t bytes_received; /* segment bytes downloaded */
} nimbus_install_result;

/* Installs package `pkg` (found, from nimbus_agent_get or an accepted
 * nimbus_offer_answer) into o->install_dir, on the calling thread:
 *
 * 1. checks what the cloud said: the platform, the version against
 *    o->running (NIMBUS_CHECK_VERSION), blob = sha256 (SHA256), the size
 *    against max_package (SIZE), and the signature over the package's
 *    statement with the public key (SIGNATURE);
 * 2. downloads the blob through a transfer engine of its own
 *    (nimbus_blob_download into <install_dir>/.incoming: resumed when an
 *    earlier call was interrupted, its SHA-256 checked) and checks its
 *    size and SHA-256 against pkg (SIZE, SHA256);
 * 3. extracts it (only regular files and directories, relative paths
 *    without "..", at most max_unpacked bytes: ARCHIVE) into a new
 *    directory beside versions/<version>, which must then hold
 *    bin/nimbus-agent, and renames it to versions/<version>;
 * 4. points `previous` at what `current` pointed at and `current` at
 *    versions/<version>, each by renaming a new symbolic link over the
 *    old one (rename(2): a reader sees the old link or the new, never
 *    none), removes the versions neither link names, and the download;
 * 5. sends agent.report (unless o->no_report); its failure does not undo
 *    the install (out->reported false, report_error says why).
 * A version that is current already is not downloaded again (out->already;
 * it is still reported). One install or rollback at a time per directory
 * (an flock on <install_dir>/.lock; another waits). A package failing a
 * check installs nothing and changes neither link.
 *
 * Returns 0; NIMBUS_EAUTH (a check failed: out->check says which, error
 * why); NIMBUS_EINVAL (options: no install_dir, a pkg not found, no key,
 * a key file that is not one; or called from a callback); NIMBUS_EIO
 * (the install directory cannot be written, or the cloud answered the
 * download with an error); NIMBUS_ENOTFOUND (the cloud has no such blob:
 * withdrawn meanwhile); NIMBUS_ETIMEDOUT, NIMBUS_ECANCELED (stop: the part
 * file stays for the next call to resume), NIMBUS_EREFUSED, NIMBUS_ENOMEM.
 * `a` and everything `pkg` and `o` point to are borrowed for the call. */
int nimbus_agent_install(nimbus_agent *a, const nimbus_agent_pkg *pkg,
                         const nimbus_install_opts *o,
                         nimbus_install_result *out);

/* Makes `previous` current again and `current` previous, by the same
 * link swaps (no network; report the version with nimbus_agent_report).
 * Returns 0 with out->version (now current) and out->previous;
 * NIMBUS_ENOTFOUND when there is no previous version (or its directory
 * is gone); NIMBUS_EIO; NIMBUS_EINVAL (no install_dir). */
int nimbus_agent_rollback(const char *install_dir, nimbus_install_result *out);

/* What `install_dir` holds: the versions current and previous point at
 * (each "" when none) into current[65] and previous[65] (either may be
 * NULL). Returns 0, NIMBUS_ENOTFOUND (no such directory), NIMBUS_EIO. */
int nimbus_agent_installed(const char *install_dir, char *current,
                           char *previous);

/* ---- Sharing: typed calls ----------------------------------------------
 *
 * One call per share.* type (PROTOCOL.md, Sharing; schemas/SPEC.md,
 * Shares): each submits its task on `a`, waits for the final reply on the
 * calling thread and decodes the result into C fields. The bytes move
 * through the transfer engine as for any blob: upload the file with
 * nimbus_blob_upload and share the blob it names; after nimbus_share_get,
 * download share.blob (or share.thumbnail) with nimbus_blob_download
 * while the share lives.
 *
 * Every call takes a nimbus_share_call (NULL: the defaults) and may hand
 * back the final reply itself (`reply` non-NULL: *reply, freed by the
 * caller with nimbus_reply_free; NULL when no reply came), for its error
 * sentence and help or the result map as the cloud sent it. Returns 0 on
 * an ok reply; for an error reply the error of its code: NIMBUS_EINVAL
 * (400: a bad name, mime, expires_in, `to`), NIMBUS_ENOTFOUND (404: no
 * such share for this terminal, or a blob it may not read), NIMBUS_ECONFLICT
 * (409: the name is taken without replace), NIMBUS_EIO (another code:
 * 503...); without one NIMBUS_ETIMEDOUT, NIMBUS_EREFUSED (the broker
 * refused the task), NIMBUS_ECANCELED (call->stop), NIMBUS_EPROTO (an ok
 * reply without the result SPEC.md gives), NIMBUS_EINVAL (options wrong:
 * nothing sent), NIMBUS_ENOMEM. Threading: blocks the calling thread,
 * which must not be an agent's callback; calls may run at once from
 * several threads on one agent. */

/* A share as a result gives it. Strings are NUL-terminated copies; a
 * field the result leaves out is "" (strings) or -1 (numbers). */
typedef struct nimbus_share {
  char token[25];
  char name[256];
  char owner[65];
  char mime[128];
  char blob[65];      /* share.get, and own shares in share.list */
  char thumbnail[65]; /* a picture's thumbnail, SHA-256 hex; "" when none */
  int64_t size, stored_size, created, expires_at;
  int64_t max_downloads, downloads; /* the owner's view only */
} nimbus_share;

typedef struct nimbus_share_call {
  /* The call ends with NIMBUS_ETIMEDOUT after this long without a reply
   * (progress included); 0: 60000. */
  int timeout_ms;
  bool (*stop)(void *ctx); /* polled every 200 ms at least; may be NULL */
  void *stop_ctx;
} nimbus_share_call;

typedef struct nimbus_share_opts {
  const char *name;      /* required: 1-255 bytes of UTF-8, no '/' */
  const char *blob;      /* required: SHA-256 hex of a blob this terminal may
                            read */
  const char *mime;      /* NULL: the cloud reads the type from the bytes */
  const char *const *to; /* nto terminal ids that alone may get it (each
                            gets a share.new notice); NULL: anyone with
                            the token or owner and name */
  size_t nto;
  int64_t expires_in_ms; /* 0: the cloud's longest */
  int64_t max_downloads; /* 0: no limit */
  bool replace;          /* take the place of a live share of that name */
} nimbus_share_opts;

/* Fills `o` with the defaults (all zero/NULL). */
void nimbus_share_opts_init(nimbus_share_opts *o);

/* share.create: *out (caller storage) the new share (token, name, owner,
 * size, stored_size, mime, expires_at, thumbnail). */
int nimbus_share_create(nimbus_agent *a, const nimbus_share_opts *o,
                        const nimbus_share_call *call, nimbus_share *out,
                        nimbus_reply **reply);

/* share.get by `token`, or (token NULL) by `owner` and `name`: counts this
 * terminal's download; *out the share, its blob included. */
int nimbus_share_get(nimbus_agent *a, const char *token, const char *owner,
                     const char *name, const nimbus_share_call *call,
                     nimbus_share *out, nimbus_reply **reply);

/* share.revoke of own share `token`. */
int nimbus_share_revoke(nimbus_agent *a, const char *token,
                        const nimbus_share_call *call, nimbus_reply **reply);

/* One page of share.list: this terminal's own live shares, or with
 * `inbox` those addressed to it (of `owner` only, when not NULL), after
 * `cursor` (NULL or "": the newest), at most `limit` (1-1000). *out (a
 * new array of *n shares, free() it; NULL when none; the addressees of
 * own shares are in the reply's result only) and next_cursor (caller
 * storage of 64 bytes, which may be `cursor` itself: "" when the list
 * ends here). */
int nimbus_share_list(nimbus_agent *a, bool inbox, const char *owner,
                      const char *cursor, size_t limit,
                      const nimbus_share_call *call, nimbus_share **out,
                      size_t *n, char next_cursor[64], nimbus_reply **reply);

#ifdef __cplusplus
}
#endif
#endif
