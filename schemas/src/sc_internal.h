/* Declarations shared by the files of the schemas module and by nothing
 * else: the bounded walker that vets a buffer before msgpack-c sees it, the
 * lenient scan that finds a task's id in a broken task, and small helpers
 * for error sentences and numbers. */
#ifndef SC_INTERNAL_H
#define SC_INTERNAL_H

#include "sc.h"
#include "nb_util.h"

#include <stdarg.h>

/* What one walk enforces besides SC_MAX_STR, which always holds. */
typedef struct sc_walk_limits {
  size_t max_depth;  /* at most SC_MAX_REPLY_DEPTH */
  size_t max_values; /* every array element, map key and value, the root */
} sc_walk_limits;

/* Checks that `buf` (len bytes, borrowed) holds exactly one msgpack value
 * that obeys the protocol's rules (sc.h). Returns 0, NIMBUS_EPROTO with a
 * sentence in err, or NIMBUS_ENOMEM when the scratch space for detecting
 * duplicate keys could not be had. An empty buffer is NIMBUS_EPROTO. */
int sc_walk(const uint8_t *buf, size_t len, const sc_walk_limits *lim,
            char *err, size_t errcap);

/* Finds the task id of a possibly broken task: when `buf` starts with a
 * map holding the key "id" exactly once, among the entries that can be
 * read, with a valid id as its value, copies it to out[SC_ID_MAX + 1];
 * otherwise out is "". Never reads past len. */
void sc_salvage_id(const uint8_t *buf, size_t len, char *out);

/* True when `s` (n bytes) is a notice kind: 1-64 bytes of [A-Za-z0-9._-],
 * like "agent.offer". */
bool sc_kind_valid(const char *s, size_t n);

/* Writes `n` bytes of an untrusted key as a quoted, printable excerpt (at
 * most about 40 bytes of it) into out[cap]. */
void sc_quote(char *out, size_t cap, const uint8_t *p, size_t n);

/* "a string", "an array", ... for error sentences. */
const char *sc_type_name(const msgpack_object *o);

/* True when `o` is an int in int64 range or a float with a whole value in
 * int64 range; stores the value in *out. */
bool sc_obj_int(const msgpack_object *o, int64_t *out);

/* True when `o` is a str holding exactly `s`. */
bool sc_obj_is(const msgpack_object *o, const char *s);

/* Checks that [p, p+n) is exactly one strictly valid msgpack map that can
 * sit at depth 2 of a message whose limit is `msg_depth` (a task's args:
 * SC_MAX_DEPTH; a reply's result: SC_MAX_REPLY_DEPTH). Returns 0 or
 * NIMBUS_EINVAL (NIMBUS_ENOMEM when scratch space failed). */
int sc_check_packed_map(const uint8_t *p, size_t n, size_t msg_depth);

#endif
