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

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nimbus_agent nimbus_agent;
typedef struct nimbus_task nimbus_task;

typedef struct nimbus_agent_opts {
  const char *uri;       /* "tcp://host:port"; required */
  const char *terminal;  /* terminal id = MQTT username; required */
  const char *password;  /* required */
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
 * topics, waiting at most timeout_ms (-1: forever). Returns 0,
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
 * nimbus_agent_new), frees the session slot, and frees. Tasks still outstanding are dropped without
 * their callbacks, and every task handle not yet released is freed too: do
 * not use one afterwards. NULL is a no-op. Must not be called from a
 * callback. */
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
  const char *id;          /* NULL: 22 chars = 132 random bits, URL-safe */
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
                  bool has_data, const nimbus_submit_opts *sopts,
                  int block_ms, nimbus_task **out);

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

/* Called (on the agent's thread) for each valid notice on
 * <prefix>/notify/<terminal>; `kind` and `notice`, the packed msgpack map,
 * are borrowed for the call. Set before connecting. */
typedef void (*nimbus_notice_cb)(void *ctx, const char *kind,
                                 const uint8_t *notice, size_t len);
void nimbus_agent_on_notice(nimbus_agent *a, nimbus_notice_cb cb, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
