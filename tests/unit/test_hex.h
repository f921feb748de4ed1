/* Hex text to bytes for the unit tests' fixtures (golden messages and
 * hand-written msgpack): upper or lower case, whitespace ignored; a bad
 * character or an odd digit count fails the test. Include after cmocka.h. */
#ifndef TEST_HEX_H
#define TEST_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Writes the bytes of `hex` into out[cap]; returns their count. */
static inline size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  int hi = -1;
  for (const char *p = hex; *p; p++) {
    int v = 0;
    if (*p >= '0' && *p <= '9')
      v = *p - '0';
    else if (*p >= 'a' && *p <= 'f')
      v = *p - 'a' + 10;
    else if (*p >= 'A' && *p <= 'F')
      v = *p - 'A' + 10;
    else if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
      continue;
    else
      fail_msg("bad hex character %c", *p);
    if (hi < 0) {
      hi = v;
    } else {
      assert_true(n < cap);
      out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  assert_int_equal(hi, -1);
  return n;
}

#endif
