/* Offload modules kept in the cloud's storage (MISSION.md: processing
 * programs may live in cloud storage and be fetched when needed): the
 * Redis record of each published module, naming the blob that holds its
 * shared object, with the Ed25519 signature (nb_sign.h) a worker checks
 * before it loads it. A record holds one reference on its blob; a newer
 * publication of the same name replaces it and releases the old blob.
 *
 * Keys: nb:module:<name>  hash {version, blob, size, sig (64 raw bytes),
 *                         ts}
 *       nb:modules        set of the published names
 *
 * Every function returns 0 or a nimbus_err: NIMBUS_EREDIS with the reason
 * in st_redis_errstr, NIMBUS_EINVAL for a malformed argument. */
#ifndef ST_MODULE_H
#define ST_MODULE_H

#include "st.h"
#include "st_blob.h"

#include <stdbool.h>
#include <stdint.h>

#define ST_MODULE_NAME_MAX 32
#define ST_MODULE_VERSION_MAX 64

typedef struct st_module {
  bool exists;
  char name[ST_MODULE_NAME_MAX + 1];
  char version[ST_MODULE_VERSION_MAX + 1];
  char blob[65];
  uint64_t size;
  uint8_t sig[64];
  int64_t ts;
} st_module;

/* Records module m (its blob moved into the store by an st_blob_writer
 * whose commit mark this ends; `sums`, nsegs entries, for the blob's
 * metadata when it has none), replacing an earlier record of the name and
 * releasing that one's blob. Returns 0, NIMBUS_ECONFLICT when the blob is
 * being collected right now (publish again), NIMBUS_EREDIS. */
int st_module_publish(st_redis *r, const st_module *m,
                      const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs);

/* Reads the record of module `name` into *out; out->exists false when
 * there is none. */
int st_module_get(st_redis *r, const char *name, st_module *out);

/* Sets *names (n entries, each and the array malloc'd: the caller frees
 * them) to the published modules' names, sorted. */
int st_module_names(st_redis *r, char ***names, size_t *n);

#endif
