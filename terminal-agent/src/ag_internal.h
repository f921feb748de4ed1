/* The inside of libnimbus-agent, shared by its source files and its unit
 * tests: the agent and task structs, the event queue that carries work from
 * Paho's threads to the agent's own thread, and the internal functions
 * between agent.c (the MQTT session and the agent's thread), task.c
 * (submit, wait, release, replies) and device.c (the device id).
 *
 * Locking: one mutex per agent, `mu`, guards everything below that is not
 * marked otherwise. Paho calls us back holding its own global mutex, and
 * its API functions take that mutex, so we never call an MQTTAsync_*
 * function while holding `mu` (the order is always Paho's mutex, then
 * ours). Tasks are reference counted under `mu`; a task is freed when the
 * last reference goes, never inside a call that holds one. */
#ifndef AG_INTERNAL_H
#define AG_INTERNAL_H

#include <MQTTAsync.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "nb_session.h"
#include "nimbus/agent.h"
#include "sc.h"

#define AG_DEFAULT_PREFIX "cloud/v1"
#define AG_DEFAULT_INFLIGHT 64
#define AG_MAX_INFLIGHT 65535
#define AG_DEFAULT_RESEND_MS 30000
#define AG_DEFAULT_RESEND_MAX_MS 300000
#define AG_DEFAULT_EXPIRY_S 604800
#define AG_DEFAULT_KEEPALIVE_S 30
/* 22 characters of 6 bits: 132 random bits (PROTOCOL.md asks >= 128). */
#define AG_ID_BITS 132
/* The device id made for a new installation: 16 characters, 96 bits. */
#define AG_DEVICE_ID_BITS 96
/* Agents of one installation at once, each on its own session (see
 * nimbus_agent_new); an extra one's session lasts at most a day. */
#define AG_SESSION_SLOTS 16
#define AG_EXTRA_EXPIRY_S 86400
#define AG_ERRSTR 128

typedef enum ag_task_state {
  AG_TASK_PENDING = 0, /* waiting for its final reply */
  AG_TASK_DONE,        /* final reply from the cloud in `final` */
  AG_TASK_REFUSED      /* the broker refused it; `final` is synthetic */
} ag_task_state;

typedef enum ag_event_kind {
  AG_EV_FINAL = 0,
  AG_EV_PROGRESS,
  AG_EV_NOTICE
} ag_event_kind;

/* One piece of work for the agent's thread. A final event lives inside its
 * task (a task ends once); progress and notice events are allocated. */
typedef struct ag_event {
  struct ag_event *next;
  ag_event_kind kind;
  struct nimbus_task *task; /* holds a reference; NULL for a notice */
  nimbus_reply *reply;      /* progress: owned; final: the task's */
  uint8_t *notice;          /* notice: owned packed map */
  size_t notice_len;
  char notice_kind[65];
} ag_event;

struct nimbus_task {
  nimbus_agent *agent;
  char id[SC_ID_MAX + 1];
  char *topic;  /* <prefix>/task/<type>/<terminal> */
  uint8_t *msg; /* the encoded task: every (re-)send sends these bytes */
  size_t msg_len;
  nimbus_reply_cb on_final;
  nimbus_reply_cb on_progress;
  void *ctx;

  int refs;
  /* Publishes of it that Paho still holds, queued or not yet
   * acknowledged (each also holds a reference). With the session kept, a
   * reconnect's re-send leaves these to Paho, which sends the
   * unacknowledged ones again itself. */
  int held;
  /* The connection (ag conn_gen) on which the broker last acknowledged a
   * publish of it; 0: none. */
  uint64_t acked_gen;
  ag_task_state state;
  bool released; /* the caller gave it up: no more callbacks */
  bool in_table; /* outstanding: counted against max_inflight */
  nimbus_reply *final;
  int64_t next_send;        /* monotonic ms of the next re-send */
  int interval_ms;          /* the re-send interval now in force */
  pthread_cond_t done_cond; /* the final reply came */
  ag_event final_ev;

  struct nimbus_task *hnext;         /* hash chain of the table */
  struct nimbus_task *oprev, *onext; /* the outstanding list */
  struct nimbus_task *prev, *next;   /* every live task, for free */
};

struct nimbus_agent {
  /* Read-only after nimbus_agent_new. */
  char *uri, *terminal, *password, *prefix, *client_id;
  char *reply_topic, *notify_topic;
  size_t reply_topic_len, notify_topic_len;
  int max_inflight, resend_ms, resend_max_ms, coalesce_ms;
  int session_expiry_s, keepalive_s;
  int slot;    /* the session slot held (0: the installation's own) */
  int lock_fd; /* holds the slot's lock; -1 when none (a given device id) */
  bool clean_start;

  pthread_mutex_t mu;
  pthread_condattr_t cond_attr; /* CLOCK_MONOTONIC, for every condvar */
  pthread_cond_t slot_cond;     /* a slot freed up, or closing */
  pthread_cond_t loop_cond;     /* work for the agent's thread */
  pthread_cond_t cb_cond;       /* a callback returned */
  pthread_t thread;
  bool thread_started;
  bool closing;

  /* The MQTT session (nb_session.h: connect, reconnect, subscribe).
   * `client` is its Paho client, set (under mu) when the session first
   * comes up, before `up` becomes true, and kept until nimbus_agent_free. */
  nb_session *sess;
  MQTTAsync client;
  atomic_bool up;    /* connected and subscribed: tasks may go */
  uint64_t conn_gen; /* counts connections: 1, then one more per loss */

  /* Outstanding tasks: a hash table by id (chained, power-of-two buckets,
   * at least twice max_inflight) and a list for the re-send scan. */
  nimbus_task **buckets;
  size_t bucket_mask;
  nimbus_task *out_head; /* outstanding tasks (oprev/onext) */
  int outstanding;
  nimbus_task *all; /* every live task (prev/next), for nimbus_agent_free */

  /* The agent's thread: events to deliver, re-sends to make. */
  ag_event *ev_head, *ev_tail;
  bool resend_all;       /* just (re)connected: send every task */
  int64_t loop_deadline; /* monotonic ms of the next re-send scan */
  nimbus_task *cb_task;  /* whose callback runs now, or NULL */
  nimbus_task **sendv;   /* the agent's thread's batch of sends */
  size_t sendcap;

  nimbus_notice_cb notice_cb;
  void *notice_ctx;
  nimbus_offer_cb offer_cb; /* agent.offer notices, when set */
  void *offer_ctx;

  /* Used by Paho's receive thread only (one per client): a buffer to pack
   * a reply's result into, kept to spare an allocation per reply. */
  msgpack_sbuffer scratch;

  char errstr[AG_ERRSTR];
};

/* ---- task.c ------------------------------------------------------------- */

/* Fills `ts` for pthread_cond_timedwait on the agent's CLOCK_MONOTONIC
 * condvars with the monotonic time `mono_ms` (nb_mono_ms). */
void ag_timespec_at(struct timespec *ts, int64_t mono_ms);

/* Drops one reference; frees the task when it was the last. Needs mu. */
void ag_task_unref_locked(nimbus_agent *a, nimbus_task *t);

/* Publishes the task's bytes once. The caller holds one reference on `t`,
 * which this call takes over (Paho's completion callback drops it). Must
 * not hold mu. A publish Paho does not accept is simply dropped: the
 * re-send clock or the next connect sends the task again. */
void ag_task_send(nimbus_agent *a, MQTTAsync client, nimbus_task *t);

/* Handles one message from the broker (reply or notice), on Paho's
 * receive thread or a test. `payload` is borrowed. Replies that do not
 * decode or name no outstanding task are ignored. */
void ag_agent_on_message(nimbus_agent *a, const char *topic, size_t topic_len,
                         const void *payload, size_t len);

/* Ends task `t` as refused by the broker with MQTT reason `reason`. */
void ag_task_refuse(nimbus_agent *a, nimbus_task *t, int reason);

/* Puts an event at the tail of the agent's queue and wakes its thread.
 * Needs mu. */
void ag_event_push_locked(nimbus_agent *a, ag_event *ev);

/* Frees a task unconditionally (nimbus_agent_free only). */
void ag_task_destroy(nimbus_task *t);

/* The parts of a reply; ag_reply_new copies them into one allocation that
 * nimbus_reply_free releases. Lengths go with every pointer; NULL pointers
 * are absent fields. */
typedef struct ag_reply_parts {
  const char *id;
  size_t id_len;
  const char *status;
  int code;
  const char *error;
  size_t error_len;
  const char *help;
  size_t help_len;
  const uint8_t *result;
  size_t result_len;
  const uint8_t *data;
  size_t data_len;
  bool has_data;
  int64_t done, total;
  int err;
} ag_reply_parts;

nimbus_reply *ag_reply_new(const ag_reply_parts *p);

/* ---- device.c ----------------------------------------------------------- */

/* Reads the device id kept in <dir>/device-id, or makes one (16 random
 * characters, written atomically, mode 0600; the directory is created,
 * mode 0700, when missing). Writes it NUL-terminated into `out` (cap >= 65)
 * and returns 0, or returns NIMBUS_EIO (with a sentence in err) when the
 * directory or file cannot be used or the file holds no valid id,
 * NIMBUS_ESYS when no random bytes could be had. */
int ag_device_id_load(const char *dir, char *out, size_t cap, char *err,
                      size_t errcap);

/* Takes the first free one of the installation's `slots` session slots:
 * slot k is an exclusive flock(2) on <dir>/session.<k>.lock, held through
 * the returned descriptor (close-on-exec) until it is closed or the
 * process ends, so a crash frees it too. Returns 0 with *slot and *fd,
 * NIMBUS_EINUSE when every slot is held, NIMBUS_EIO (with a sentence in
 * err) when a lock file cannot be opened or locked. */
int ag_session_slot_take(const char *dir, int slots, int *slot, int *fd,
                         char *err, size_t errcap);

#endif
