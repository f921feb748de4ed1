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
