/* The notice outbox (PROTOCOL.md, Notices): a notice a task sends
 * (share.create's share.new to each addressee) is recorded in Redis with
 * the task's commit, in the same transaction, then published, then
 * removed. A worker that dies between the commit and the publish leaves
 * the record; the housekeeping thread of any worker publishes what is
 * left once it is due (a grace period after the commit, long enough that
 * the committing worker has published and removed it by then), so a
 * notice of a committed task reaches its terminal at least once.
 *
 * Keys:
 *   nb:outbox          zset, member <id>, score: when the notice is due
 *                      for the housekeeping threads (ms)
 *   nb:outbox:<id>     hash {to (terminal id), msg (the encoded notice)}
 * An id is "<terminal>.<task id>.<n>": the task's own, so the same task
 * committed once records each of its notices once.
 *
 * Every function returns 0 or a nimbus_err: NIMBUS_EREDIS with the reason
 * in st_redis_errstr, NIMBUS_EINVAL for a malformed argument,
 * NIMBUS_ENOMEM. */
#ifndef ST_OUTBOX_H
#define ST_OUTBOX_H

#include "st.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An id's longest: 64 + 1 + 64 + 1 + 5. */
#define ST_OUTBOX_ID_MAX 135

/* Writes the id of notice n (0-based) of task (terminal, task id) into
 * out[ST_OUTBOX_ID_MAX + 1]. Returns 0 or NIMBUS_EINVAL. */
int st_outbox_id(char out[ST_OUTBOX_ID_MAX + 1], const char *terminal,
                 const char *task_id, unsigned n);

/* Appends to task effect `t` the record of notice `id` for terminal `to`
 * (msg, len bytes: the encoded notice), due for the housekeeping threads
 * at due_ms. Everything borrowed (copied into t). */
int st_outbox_add_effect(st_txn *t, const char *id, const char *to,
                         const void *msg, size_t len, int64_t due_ms);

/* Removes the records of the n notices ids[] (published). One round
 * trip. */
int st_outbox_done(st_redis *r, const char *const *ids, size_t n);

/* One notice taken from the outbox. */
typedef struct st_outbox_item {
  char id[ST_OUTBOX_ID_MAX + 1];
  char to[65];
  uint8_t *msg; /* owned: st_outbox_items_free */
  size_t len;
} st_outbox_item;

/* Takes up to `max` notices due at now_ms: each is due again at now_ms +
 * lease_ms (for another worker, should this one die before it has
 * published and removed it), and put in out[] (caller storage of `max`
 * items; *n of them filled, release with st_outbox_items_free). Two
 * round trips; a notice another worker took meanwhile is not taken. */
int st_outbox_take(st_redis *r, int64_t now_ms, int64_t lease_ms, size_t max,
                   st_outbox_item *out, size_t *n);

/* Frees what st_outbox_take put in items[0 .. n-1]. */
void st_outbox_items_free(st_outbox_item *items, size_t n);

#endif
