/* One error enum for all of Nimbus, the public agent API included.
 *
 * 0 is the only success. Every function that can fail returns one of these
 * values; results travel through out parameters. The table below is the
 * only place a code is defined: the enum and nimbus_strerror() are both
 * generated from it (the libuv UV_ERRNO_MAP pattern). */
#ifndef NIMBUS_ERRORS_H
#define NIMBUS_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#define NIMBUS_ERRNO_MAP(X)                                                    \
  X(OK, "success")                                                             \
  X(ENOMEM, "out of memory")                                                   \
  X(EINVAL, "invalid argument")                                                \
  X(EPROTO, "malformed message")                                               \
  X(ETOOBIG, "too large")                                                      \
  X(EIO, "input/output error")                                                 \
  X(EREDIS, "Redis error")                                                     \
  X(EMQTT, "MQTT error")                                                       \
  X(ETIMEDOUT, "timed out")                                                    \
  X(ENOTFOUND, "not found")                                                    \
  X(ECONFLICT, "conflict")                                                     \
  X(ECANCELED, "cancelled")                                                    \
  X(EREFUSED, "refused by the broker")                                         \
  X(EAUTH, "not authorised")                                                   \
  X(EBUSY, "too many tasks in flight")                                         \
  X(ECLOSED, "closed")                                                         \
  X(ELOST, "claim lost")                                                       \
  X(ECONFIG, "configuration error")                                            \
  X(ESYS, "system call failed")                                                \
  X(EINUSE, "in use by other agents")                                          \
  X(ENOSPC, "no space left on the storage")

typedef enum nimbus_err {
#define NIMBUS_ERR_ENUM_(name, text) NIMBUS_##name,
  NIMBUS_ERRNO_MAP(NIMBUS_ERR_ENUM_)
#undef NIMBUS_ERR_ENUM_
      NIMBUS_ERR_MAX_
} nimbus_err;

/* Returns a static, human-readable description of `err`; never NULL, also
 * for values outside the enum. Thread-safe. */
const char *nimbus_strerror(int err);

/* Returns the stable symbolic name of `err` ("EPROTO"); never NULL. */
const char *nimbus_errname(int err);

#ifdef __cplusplus
}
#endif
#endif
