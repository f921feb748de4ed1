/* Error buffers and whole writes: the two helpers every module needs and
 * none should write again. No dependency beyond libc, so the fuzz targets
 * can compile this file alone. */
#include "nb_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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

bool nb_valid_utf8(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned c = u[i];
    size_t len;
    unsigned min, cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len)
      return false;
    for (size_t k = 1; k < len; k++) {
      if ((u[i + k] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (u[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

const char *nb_relpath_problem(const char *s, size_t n) {
  if (s == NULL || n == 0)
    return "is empty";
  if (n > NB_RELPATH_MAX)
    return "is longer than 4096 bytes";
  if (!nb_valid_utf8(s, n))
    return "is not valid UTF-8";
  if (s[0] == '/')
    return "is absolute (starts with /)";
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f))
      return "holds a control character";
    if (i < n && s[i] != '/')
      continue;
    size_t len = i - start;
    if (len == 0)
      return i == n ? "ends with /" : "has an empty component (//)";
    if (len == 1 && s[start] == '.')
      return "has a \".\" component";
    if (len == 2 && s[start] == '.' && s[start + 1] == '.')
      return "has a \"..\" component";
    start = i + 1;
  }
  return NULL;
}
