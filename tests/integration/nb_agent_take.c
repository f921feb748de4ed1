/* nb-agent-take: one st_agent_offers_take against the stack's Redis, as a
 * worker's tick makes it, for the test of the take's one property that
 * timing cannot show reliably: of two takes of the same due offers, only
 * the first gets them (the script moves them past `now` as it lists
 * them). The take's `now` is the clock plus AHEAD_MS, so offers due
 * later (a refused one) are taken at once, before any worker's tick.
 *
 *   nb-agent-take AHEAD_MS     prints the ids taken, one a line
 *
 * Redis from NIMBUS_REDIS_HOST, NIMBUS_REDIS_PORT, NIMBUS_REDIS_PASSWORD.
 * Exit 0, or 1 (with the reason on stderr) when Redis fails. */
#include "nb_util.h"
#include "st.h"
#include "st_agent.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: nb-agent-take AHEAD_MS\n");
    return 2;
  }
  const char *host = getenv("NIMBUS_REDIS_HOST");
  const char *port = getenv("NIMBUS_REDIS_PORT");
  char err[256];
  st_redis *r = NULL;
  if (st_redis_connect(host != NULL ? host : "127.0.0.1",
                       port != NULL ? (int)strtol(port, NULL, 10) : 6379,
                       getenv("NIMBUS_REDIS_PASSWORD"), 3000, &r, err,
                       sizeof err) != 0) {
    fprintf(stderr, "nb-agent-take: %s\n", err);
    return 1;
  }
  static char ids[1000][ST_AGENT_OFFER_ID_MAX + 1];
  size_t n = 0;
  int64_t now = nb_now_ms() + strtoll(argv[1], NULL, 10);
  int rc = st_agent_offers_take(r, now, 30000, 1000, ids, &n);
  if (rc != 0)
    fprintf(stderr, "nb-agent-take: %s\n", st_redis_errstr(r));
  for (size_t i = 0; i < n; i++)
    printf("%s\n", ids[i]);
  st_redis_free(r);
  return rc == 0 ? 0 : 1;
}
