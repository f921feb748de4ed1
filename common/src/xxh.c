/* XXH3-128 for the places that need a fast check of bytes, not a
 * cryptographic one (nb_util.h). xxhash is used header-only (inlined), so
 * nothing that does not call nb_xxh128 links anything new. */
#include "nb_util.h"

#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

void nb_xxh128(const void *in, size_t n, uint8_t out[16]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(in, n));
  memcpy(out, c.digest, 16);
}
