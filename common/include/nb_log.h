/* Logging for the daemons and CLIs: `level, stable id, message` on stderr.
 *
 * Libraries never log; the boundary that decides what an error means logs
 * it once. The level is checked before any formatting is done. */
#ifndef NB_LOG_H
#define NB_LOG_H

typedef enum nb_log_level {
  NB_LOG_DEBUG = 0,
  NB_LOG_INFO = 1,
  NB_LOG_WARN = 2,
  NB_LOG_ERROR = 3,
  NB_LOG_OFF = 4
} nb_log_level;

extern nb_log_level nb_log_threshold;

/* Sets the threshold from a name ("debug", "info", "warn", "error",
 * "off"). Returns 0, or NIMBUS_EINVAL for an unknown name (threshold kept). */
int nb_log_set_level(const char *name);

/* Writes one line `<time> <LEVEL> <id> <message>` to stderr. `id` is a
 * stable identifier such as "WK-REDIS-DOWN"; both strings are borrowed. */
void nb_log_write(nb_log_level level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define NB_LOG(level, id, ...)                                                 \
  do {                                                                         \
    if ((level) >= nb_log_threshold)                                           \
      nb_log_write((level), (id), __VA_ARGS__);                                \
  } while (0)
#define NB_DEBUG(id, ...) NB_LOG(NB_LOG_DEBUG, id, __VA_ARGS__)
#define NB_INFO(id, ...) NB_LOG(NB_LOG_INFO, id, __VA_ARGS__)
#define NB_WARN(id, ...) NB_LOG(NB_LOG_WARN, id, __VA_ARGS__)
#define NB_ERROR(id, ...) NB_LOG(NB_LOG_ERROR, id, __VA_ARGS__)

#endif
