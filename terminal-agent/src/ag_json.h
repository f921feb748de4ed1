/* JSON for the nimbus-agent CLI: task arguments typed as JSON become
 * msgpack, and replies become JSON (cJSON both ways).
 *
 * JSON -> msgpack: objects become maps (a key twice in one object is
 * refused: PROTOCOL.md calls such a map malformed), arrays arrays, strings
 * str, true/false bool, null nil. cJSON parses every number as a double, so
 * a number with a whole value below 2^53 in magnitude becomes a msgpack int
 * (exact), any other number float64; integers beyond 2^53 lose precision.
 * The protocol accepts an int wherever a number is expected.
 *
 * msgpack -> JSON: ints are written exactly (as raw number text, not
 * through a double), floats as numbers (NaN and infinities as null), bin
 * as a base64 string, map keys that are not strings as their JSON text. */
#ifndef AG_JSON_H
#define AG_JSON_H

#include <cjson/cJSON.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "nimbus/agent.h"

/* Parses `text` (NUL-terminated), which must be one JSON object, and
 * appends it to `out` as a msgpack map. Returns 0, or NIMBUS_EINVAL with a
 * sentence in err (errcap bytes), or NIMBUS_ENOMEM. */
int ag_json_args_pack(const char *text, msgpack_sbuffer *out, char *err,
                      size_t errcap);

/* Appends any JSON value `v` (borrowed) to the packer. Same errors. */
int ag_json_pack(const cJSON *v, msgpack_packer *pk, char *err, size_t errcap);

/* A new JSON value for the msgpack object `o` (borrowed), or NULL when out
 * of memory. The caller frees it with cJSON_Delete. */
cJSON *ag_json_from_msgpack(const msgpack_object *o);

/* Decodes one packed msgpack value (strictly: sc_value_decode) into a new
 * JSON value. Returns 0 and *out, NIMBUS_EPROTO or NIMBUS_ENOMEM. */
int ag_json_from_packed(const uint8_t *buf, size_t len, cJSON **out);

/* The reply `r` (borrowed) as a JSON object: id, status, code, then error,
 * help, result, data_size and data_b64 (the inline bytes, base64), done
 * and total, each only when the reply has it. NULL when out of memory or
 * when the result does not decode. */
cJSON *ag_json_from_reply(const nimbus_reply *r);

/* Base64 (RFC 4648, with padding) of `n` bytes, NUL-terminated; the
 * caller frees it. NULL when out of memory. */
char *ag_base64(const uint8_t *p, size_t n);

#endif
