/* Error buffers, whole writes and the text rules of the protocol: UTF-8
 * without control characters (every free-text name a terminal sends) and
 * the relative paths snapshot items are named by, with the path order that
 * puts a directory's contents right after it. One copy of each rule, so the
 * worker that refuses a name and the agent that checks it again agree. No
 * dependency beyond libc, so the fuzz targets can compile this file alone. */
#include "nb_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void nb_errf(char *buf, size_t cap, const char *fmt, ...) {
  if (buf == NULL || cap == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
}

int nb_write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Decodes the UTF-8 sequence at u[i] (i < n) into *cp. Returns its length,
 * or 0 when it is not well-formed (truncated, overlong, a surrogate, above
 * U+10FFFF, a stray continuation byte). */
static size_t utf8_next(const unsigned char *u, size_t n, size_t i,
                        unsigned *cp) {
  unsigned c = u[i];
  size_t len;
  unsigned min, v;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xe0) == 0xc0) {
    len = 2, min = 0x80, v = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, min = 0x800, v = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, min = 0x10000, v = c & 0x07;
  } else {
    return 0;
  }
  if (n - i < len)
    return 0;
  for (size_t k = 1; k < len; k++) {
    if ((u[i + k] & 0xc0) != 0x80)
      return 0;
    v = v << 6 | (u[i + k] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
    return 0;
  *cp = v;
  return len;
}

bool nb_valid_utf8(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned cp;
  for (size_t i = 0, len; i < n; i += len)
    if ((len = utf8_next(u, n, i, &cp)) == 0)
      return false;
  return true;
}

bool nb_is_control(unsigned cp) {
  /* Unicode's general category Cc: C0, DEL and C1. C1 matters as much as
   * C0: U+009B is CSI, which starts an escape sequence on the terminals
   * that print these names, just as ESC [ does. */
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

const char *nb_text_problem(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned cp;
  if (s == NULL && n > 0)
    return "is not valid UTF-8";
  for (size_t i = 0, len; i < n; i += len) {
    if ((len = utf8_next(u, n, i, &cp)) == 0)
      return "is not valid UTF-8";
    if (nb_is_control(cp))
      return "holds a control character";
  }
  return NULL;
}

const char *nb_relpath_problem(const char *s, size_t n) {
  if (s == NULL || n == 0)
    return "is empty";
  if (n > NB_RELPATH_MAX)
    return "is longer than 4096 bytes";
  const char *why = nb_text_problem(s, n);
  if (why != NULL)
    return why;
  if (s[0] == '/')
    return "is absolute (starts with /)";
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && s[i] != '/')
      continue;
    size_t len = i - start;
    if (len == 0)
      return i == n ? "ends with /" : "has an empty component (//)";
    if (len == 1 && s[start] == '.')
      return "has a \".\" component";
    if (len == 2 && s[start] == '.' && s[start + 1] == '.')
      return "has a \"..\" component";
    if (len > NB_COMPONENT_MAX)
      return "has a component longer than 255 bytes";
    start = i + 1;
  }
  return NULL;
}

/* The byte's rank in path order: '/' below every other byte. */
static unsigned path_rank(unsigned char c) {
  return c == '/' ? 0 : (unsigned)c + 1;
}

int nb_relpath_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  for (size_t i = 0; i < n; i++) {
    unsigned x = path_rank((unsigned char)a[i]);
    unsigned y = path_rank((unsigned char)b[i]);
    if (x != y)
      return x < y ? -1 : 1;
  }
  return (an > bn) - (an < bn);
}

bool nb_relpath_within(const char *dir, size_t dn, const char *s, size_t n) {
  return n > dn && s[dn] == '/' && memcmp(s, dir, dn) == 0;
}
