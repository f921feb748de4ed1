/* Line-oriented logging to stderr, one write(2) per line so that lines
 * from several threads never interleave. */
#include "nb_log.h"
#include "nimbus/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

nb_log_level nb_log_threshold = NB_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

int nb_log_set_level(const char *name) {
  for (int i = 0; i <= NB_LOG_OFF; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      nb_log_threshold = (nb_log_level)i;
      return 0;
    }
  }
  return NIMBUS_EINVAL;
}

void nb_log_write(nb_log_level level, const char *id, const char *fmt, ...) {
  static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
  char line[1024];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n =
      snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
               tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
               tags[level > NB_LOG_OFF ? NB_LOG_OFF : level], id);
  if (n < 0 || (size_t)n >= sizeof line)
    n = 0;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
