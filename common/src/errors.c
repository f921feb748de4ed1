/* The text and names of Nimbus error codes, from NIMBUS_ERRNO_MAP. */
#include "nimbus/errors.h"

const char *nimbus_strerror(int err) {
  switch (err) {
#define NIMBUS_ERR_TEXT_(name, text)                                           \
  case NIMBUS_##name:                                                          \
    return text;
    NIMBUS_ERRNO_MAP(NIMBUS_ERR_TEXT_)
#undef NIMBUS_ERR_TEXT_
  default:
    return "unknown error";
  }
}

const char *nimbus_errname(int err) {
  switch (err) {
#define NIMBUS_ERR_NAME_(name, text)                                           \
  case NIMBUS_##name:                                                          \
    return #name;
    NIMBUS_ERRNO_MAP(NIMBUS_ERR_NAME_)
#undef NIMBUS_ERR_NAME_
  default:
    return "EUNKNOWN";
  }
}
