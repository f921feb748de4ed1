/* What the storage module's own files share and nothing outside sees: the
 * raw command call of redis.c, for the model files beside it (blobmodel.c)
 * that need plain commands rather than a script. */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include "st.h"

#include <hiredis/hiredis.h>

/* Runs one command given as argv (lens NULL: C strings), reconnecting once
 * on a broken connection. Returns the reply, which the caller frees, or
 * NULL with the reason in st_redis_errstr. An error reply is returned as
 * such. */
redisReply *st__cmd(st_redis *r, int argc, const char **argv,
                    const size_t *lens);
/* Sets the context's error text. */
void st__set_err(st_redis *r, const char *what);
/* For a reply that is an error or not of the expected shape: sets the
 * error text to the server's message, or else to `what`, and returns
 * NIMBUS_EREDIS. `rep` may be NULL. */
int st__fail(st_redis *r, const redisReply *rep, const char *what);
/* Runs one command whose answer does not matter beyond success (argv C
 * strings). Returns 0, or NIMBUS_EREDIS for a lost connection or an error
 * reply. */
int st__cmd_ok(st_redis *r, int argc, const char **argv);

#endif
