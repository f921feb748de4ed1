/* nimbusctl's keygen and module commands (ctl_code.c). */
#ifndef CTL_CODE_H
#define CTL_CODE_H

#include <stdbool.h>

/* True when `object` (nimbusctl's first word) is one of ctl_code's. */
bool ctl_code_handles(const char *object);

/* Runs `nimbusctl OBJECT ...` with argv[0] the object. Returns the exit
 * status: 0, 1 refused or failed, 2 usage. */
int ctl_code_main(int argc, char **argv);

#endif
