/* A module built for an older family ABI than the worker's, for
 * test_offload_modules: the worker must refuse it with a 503 naming the
 * mismatch and keep serving everything else. It serves process.oldabi
 * and is never run. */
#include "wk_family.h"

static int h_never(wk_ctx *c) {
  (void)c;
  return 500;
}

static const wk_handler handlers[] = {
    {.type = "process.oldabi", .flags = WK_STATEFUL, .fn = h_never},
    {.type = NULL},
};

static const wk_family family = {
    .abi = WK_FAMILY_ABI - 1,
    .name = "oldabi",
    .handlers = handlers,
};

__attribute__((visibility("default"))) const wk_family *nimbus_family_v1(void) {
  return &family;
}
