/* The Nimbus wire protocol, version 1 (PROTOCOL.md): task, reply and notice
 * envelopes as C structs, with msgpack encoding and strict, total decoding.
 *
 * Decoding never trusts a declared length: before msgpack-c sees a buffer,
 * a bounded walker checks every declared string, bin, array and map length
 * against the bytes that remain (msgpack-c allocates for a declared length
 * before reading any element, FINDINGS.md), the nesting depth, that map keys
 * are strings and unique, that no ext type or trailing byte is present and
 * that the buffer is complete. Anything else is NIMBUS_EPROTO with a
 * sentence for a person in the caller's error buffer.
 *
 * No I/O and no allocation outside msgpack-c's zone and sbuffer. All
 * functions are thread-safe on distinct objects. */
#ifndef SC_H
#define SC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SC_VERSION 1
/* Largest task a worker accepts: a 256 KiB segment plus envelope room. */
#define SC_MAX_TASK (272 * 1024)
/* The broker's hard limit on any message. */
#define SC_MAX_MESSAGE (1024 * 1024)
#include "sc_const.h" /* SC_SEGMENT and the other protocol constants */
/* Deepest nesting of arrays and maps accepted in a task, a notice or a
 * bare value (the top map is level 1). */
#define SC_MAX_DEPTH 16
/* Deepest nesting in a reply: one level more than a task, because a reply
 * carries back under `result` what a task carried under `args` one level
 * further down (diag.echo's result.args), and whatever a terminal may send
 * must be answerable. The reply encoder and decoder both use it. */
#define SC_MAX_REPLY_DEPTH (SC_MAX_DEPTH + 1)
/* Longest string accepted anywhere in a message. */
#define SC_MAX_STR (64 * 1024)
#define SC_ID_MIN 16
#define SC_ID_MAX 64
/* Most values (every array element, map key and map value, plus the root)
 * one message may hold. Each value costs msgpack-c's zone 24 bytes, so this
 * keeps a decoded message under 3 MiB of zone whatever its shape. */
#define SC_MAX_VALUES (128 * 1024)

/* True when `s` (length `n`) is a task id: SC_ID_MIN-SC_ID_MAX bytes of
 * [A-Za-z0-9_-]. `s` is borrowed; NULL gives false. */
bool sc_id_valid(const char *s, size_t n);

typedef enum sc_status {
  SC_STATUS_OK = 0,
  SC_STATUS_ERROR = 1,
  SC_STATUS_PROGRESS = 2
} sc_status;

/* Returns "ok", "error" or "progress". */
const char *sc_status_name(sc_status s);

/* ---- Decoded documents ------------------------------------------------ */

/* A decoded task. `args` is always a map (an empty one when the task had
 * none). Every pointer inside points into the buffer given to
 * sc_task_decode (which must outlive the task) or into the task's own zone,
 * and stays valid until sc_task_fini. Do not copy an sc_task by value: for
 * a task without args, `args` points into the struct itself. */
typedef struct sc_task {
  char id[SC_ID_MAX + 1]; /* the valid id, or "" when none could be read */
  const msgpack_object *args;
  const uint8_t *data; /* NULL when absent */
  size_t data_len;
  bool has_data;
  /* private */
  msgpack_zone *zone_;
  msgpack_object root_;
  msgpack_object empty_args_;
} sc_task;

/* Decodes and validates one task (v == 1, id, args map, data bin).
 * `buf` is borrowed and must outlive `out`. On success returns 0 and `out`
 * must be released with sc_task_fini. On failure returns NIMBUS_EPROTO (or
 * NIMBUS_ETOOBIG for more than SC_MAX_MESSAGE bytes, NIMBUS_ENOMEM), writes
 * a sentence into err (errcap bytes), still fills out->id with the task's id
 * when a valid one could be read from the buffer, and leaves nothing to
 * release (sc_task_fini is then a harmless no-op). */
int sc_task_decode(const uint8_t *buf, size_t len, sc_task *out, char *err,
                   size_t errcap);
void sc_task_fini(sc_task *t);

/* A decoded reply, for the agent. Pointers as for sc_task; release with
 * sc_reply_fini. `error`/`help` are not NUL-terminated: use the lengths.
 * `result` is NULL when absent. */
typedef struct sc_reply {
  char id[SC_ID_MAX + 1]; /* "" when the reply carried "" */
  sc_status status;
  int code;
  const char *error;
  size_t error_len;
  const char *help;
  size_t help_len;
  const msgpack_object *result;
  const uint8_t *data;
  size_t data_len;
  bool has_data;
  int64_t done, total; /* on progress; 0 when absent */
  /* private */
  msgpack_zone *zone_;
  msgpack_object root_;
} sc_reply;

/* Decodes and validates one reply. Errors as for sc_task_decode, except
 * that a reply may nest SC_MAX_REPLY_DEPTH levels, one more than a task. */
int sc_reply_decode(const uint8_t *buf, size_t len, sc_reply *out, char *err,
                    size_t errcap);
void sc_reply_fini(sc_reply *r);

/* A decoded notice: {v: 1, kind: str, ...}. `fields` is the whole top-level
 * map (kind included). Release with sc_notice_fini. */
typedef struct sc_notice {
  char kind[65];
  const msgpack_object *fields;
  msgpack_zone *zone_;
  msgpack_object root_;
} sc_notice;

int sc_notice_decode(const uint8_t *buf, size_t len, sc_notice *out, char *err,
                     size_t errcap);
void sc_notice_fini(sc_notice *n);

/* Decodes any one msgpack value with the same strict checks (used for
 * results and manifests). `out_zone` receives a zone to free with
 * msgpack_zone_free. Errors as above. */
int sc_value_decode(const uint8_t *buf, size_t len, msgpack_object *out,
                    msgpack_zone **out_zone, char *err, size_t errcap);

/* sc_value_decode with other bounds on size and value count, for documents
 * larger than a message (a backup manifest in a blob): at most `max_bytes`
 * bytes (else NIMBUS_ETOOBIG) and `max_values` values (else NIMBUS_EPROTO).
 * Depth and string limits stay SC_MAX_DEPTH and SC_MAX_STR. The zone then
 * costs up to 24 bytes per value. */
int sc_value_decode_limits(const uint8_t *buf, size_t len, size_t max_bytes,
                           size_t max_values, msgpack_object *out,
                           msgpack_zone **out_zone, char *err, size_t errcap);

/* ---- Encoding ---------------------------------------------------------- */

/* Appends a task to `out` (an initialised sbuffer; the caller owns it).
 * `args` is a packed msgpack map or NULL/0 for none (written as absent);
 * `data` is written as bin when has_data. Keys in the order v, id, args,
 * data. Returns 0, NIMBUS_EINVAL (bad id or args not a map) or
 * NIMBUS_ENOMEM. */
int sc_task_encode(msgpack_sbuffer *out, const char *id, const uint8_t *args,
                   size_t args_len, const uint8_t *data, size_t data_len,
                   bool has_data);

/* What a worker sends back. `result` is a packed msgpack map or NULL.
 * Keys in this order: v, id, status, code, error (when non-NULL), help (when
 * non-NULL), result (when non-NULL), data (when has_data), done and total
 * (progress only). All pointers borrowed. */
typedef struct sc_reply_enc {
  const char *id; /* "" when the task had no valid id */
  sc_status status;
  int code;
  const char *error;
  const char *help;
  const uint8_t *result;
  size_t result_len;
  const uint8_t *data;
  size_t data_len;
  bool has_data;
  int64_t done, total;
} sc_reply_enc;

/* Appends a reply to `out`. Refuses (NIMBUS_EINVAL, `out` unchanged) what
 * sc_reply_decode would refuse: an id neither "" nor valid, an unknown
 * status, code other than 0 on ok/progress, code outside 1-999 or a NULL
 * `error` on error, negative done/total on progress, error/help longer
 * than SC_MAX_STR, a result that is not one strictly valid map. Returns 0,
 * NIMBUS_EINVAL or NIMBUS_ENOMEM. */
int sc_reply_encode(msgpack_sbuffer *out, const sc_reply_enc *r);

/* Appends a notice {v: 1, kind, then every entry of `fields`} to `out`;
 * `fields` is a map object or NULL and must not hold "v" or "kind"; `kind`
 * is 1-64 of [A-Za-z0-9._-]. Returns 0, NIMBUS_EINVAL (`out` unchanged),
 * NIMBUS_ENOMEM. */
int sc_notice_encode(msgpack_sbuffer *out, const char *kind,
                     const msgpack_object *fields);

/* ---- Reading arguments ------------------------------------------------- */
/* Each reader looks `key` up in the map `args`. A missing key gives
 * NIMBUS_ENOTFOUND when !required (the output keeps its default) and
 * NIMBUS_EINVAL with a message when required; a value of the wrong type or
 * out of bounds gives NIMBUS_EINVAL with a sentence such as
 * "args.offset must be a whole number from 0 to 1048576". Returned pointers
 * borrow from the decoded document. */

/* Returns the value of `key` in `map` or NULL. */
const msgpack_object *sc_map_get(const msgpack_object *map, const char *key);

int sc_arg_str(const msgpack_object *args, const char *key, bool required,
               size_t min, size_t max, const char **s, size_t *n, char *err,
               size_t errcap);
/* sc_arg_str for a name or other free text: also UTF-8 without control
 * characters (nb_text_problem, the one check every name field uses), else
 * NIMBUS_EINVAL with "args.<key> holds a control character" or "args.<key>
 * is not valid UTF-8". */
int sc_arg_text(const msgpack_object *args, const char *key, bool required,
                size_t min, size_t max, const char **s, size_t *n, char *err,
                size_t errcap);
/* Accepts an int, or a float that is whole (PROTOCOL.md conventions). */
int sc_arg_int(const msgpack_object *args, const char *key, bool required,
               int64_t min, int64_t max, int64_t *out, char *err,
               size_t errcap);
/* Accepts any number. */
int sc_arg_num(const msgpack_object *args, const char *key, bool required,
               double min, double max, double *out, char *err, size_t errcap);
int sc_arg_bool(const msgpack_object *args, const char *key, bool required,
                bool *out, char *err, size_t errcap);
/* A task id (16-64 of [A-Za-z0-9_-]) copied into out[SC_ID_MAX + 1]. */
int sc_arg_id(const msgpack_object *args, const char *key, bool required,
              char *out, char *err, size_t errcap);
/* An array: `*arr` points to the array object. */
int sc_arg_array(const msgpack_object *args, const char *key, bool required,
                 size_t max_items, const msgpack_object **arr, char *err,
                 size_t errcap);

/* ---- Idempotency ------------------------------------------------------- */

/* Appends to `out` the canonical encoding of (type, args, data): maps with
 * keys sorted bytewise, whole floats written as ints, everything else as
 * msgpack. Two tasks are "the same content" (PROTOCOL.md, Delivery) exactly
 * when these bytes are equal; the worker stores their SHA-256. Returns 0 or
 * NIMBUS_ENOMEM (NIMBUS_EINVAL for a NULL argument). schemas/SPEC.md
 * section 4 gives the exact form. */
int sc_task_canonical(msgpack_sbuffer *out, const char *type, const sc_task *t);
/* How sc_task_canonical_write represents the task's data. */
typedef enum {
  SC_CANON_DATA_BYTES,  /* the bytes themselves, as sc_task_canonical */
  SC_CANON_DATA_XXH128, /* their XXH3-128 (nb_xxh128), a 16-byte bin */
} sc_canon_data;

/* The canonical bytes handed to `write` (msgpack-c's writer callback, with
 * `data`) piece by piece instead of collected, so that a digest can be
 * taken without a copy of the task. With SC_CANON_DATA_XXH128 the data
 * element is replaced by its XXH3-128: what the worker's idempotency
 * digest covers (schemas/SPEC.md section 4), so that a 256 KiB segment is
 * not hashed with SHA-256 once more. Returns 0, NIMBUS_EINVAL, or
 * NIMBUS_ENOMEM (also when `write` failed, i.e. returned non-zero). */
int sc_task_canonical_write(void *data, msgpack_packer_write write,
                            const char *type, const sc_task *t,
                            sc_canon_data how);

#endif
