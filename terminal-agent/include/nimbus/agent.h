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
 * Threading: every function may be called from any thread. Callbacks run on
 * the agent's own thread, one at a time; they must not block for long and
 * must not call nimbus_agent_free. They may call nimbus_submit and
 * nimbus_task_release.
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
 * device id. Returns 0 and *out (owned by the caller: nimbus_agent_free),
 * NIMBUS_EINVAL for a missing or malformed option, NIMBUS_EIO when the
 * state directory cannot be used, NIMBUS_ENOMEM. */
int nimbus_agent_new(const nimbus_agent_opts *opts, nimbus_agent **out);

/* Connects and subscribes to the terminal's reply and notice topics,
 * waiting at most timeout_ms. Returns 0, NIMBUS_EAUTH (bad credentials or
 * client id refused), NIMBUS_EREFUSED (a subscription refused),
 * NIMBUS_ETIMEDOUT, NIMBUS_EMQTT. After a first success the agent
 * reconnects by itself whenever the link drops. */
int nimbus_agent_connect(nimbus_agent *a, int timeout_ms);

/* True while the MQTT session is up. */
bool nimbus_agent_connected(const nimbus_agent *a);

/* Disconnects and frees. Tasks still outstanding are dropped without their
 * callbacks. NULL is a no-op. Must not be called from a callback. */
void nimbus_agent_free(nimbus_agent *a);

/* The client id in use ("<terminal>.<device id>"), borrowed. */
const char *nimbus_agent_client_id(const nimbus_agent *a);
/* Details of the last error on `a` (borrowed; "" when none). */
const char *nimbus_agent_errstr(const nimbus_agent *a);

/* A reply as the callbacks and nimbus_task_wait see it. `status` is "ok",
 * "error" or "progress". `result` is the packed msgpack map of results (or
 * error details), NULL when absent. Strings are NUL-terminated. */
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
} nimbus_reply;

/* Callbacks get a borrowed reply valid only during the call. */
typedef void (*nimbus_reply_cb)(void *ctx, nimbus_task *task,
                                const nimbus_reply *reply);

typedef struct nimbus_submit_opts {
  const char *id;          /* NULL: 128 random bits, URL-safe */
  nimbus_reply_cb on_final;    /* may be NULL: use nimbus_task_wait */
  nimbus_reply_cb on_progress; /* may be NULL */
  void *ctx;
} nimbus_submit_opts;

/* Submits a task of `type` with `args` (a packed msgpack map, or NULL) and
 * optional inline `data` (has_data). Bytes are copied. Blocks while
 * max_inflight tasks are outstanding, at most block_ms (0: do not block).
 * Returns 0 and *out, a handle owned by the caller until it calls
 * nimbus_task_release (also after the final reply); NIMBUS_EBUSY when still
 * full after block_ms; NIMBUS_EINVAL; NIMBUS_ETOOBIG for a task over
 * 272 KiB; NIMBUS_ECLOSED when the agent is shutting down. The task is sent
 * now if connected, else on connect. `sopts` may be NULL. */
int nimbus_submit(nimbus_agent *a, const char *type, const uint8_t *args,
                  size_t args_len, const uint8_t *data, size_t data_len,
                  bool has_data, const nimbus_submit_opts *sopts,
                  int block_ms, nimbus_task **out);

/* The task's id (borrowed, valid until release). */
const char *nimbus_task_id(const nimbus_task *t);

/* Waits at most timeout_ms (-1: forever) for the final reply. Returns 0 and
 * *out, a copy the caller frees with nimbus_reply_free; NIMBUS_ETIMEDOUT
 * (the task stays outstanding and keeps being re-sent); NIMBUS_EREFUSED
 * when the broker refused the publish (final, not re-sent; see
 * nimbus_agent_errstr). */
int nimbus_task_wait(nimbus_task *t, int timeout_ms, nimbus_reply **out);

/* Gives the task up (no more re-sends, no callbacks after this returns)
 * and frees the handle. NULL is a no-op. */
void nimbus_task_release(nimbus_task *t);

void nimbus_reply_free(nimbus_reply *r);

/* Called for each notice on cloud/v1/notify/<terminal>; `notice` is the
 * packed msgpack map (borrowed for the call). Set before connecting. */
typedef void (*nimbus_notice_cb)(void *ctx, const char *kind,
                                 const uint8_t *notice, size_t len);
void nimbus_agent_on_notice(nimbus_agent *a, nimbus_notice_cb cb, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
