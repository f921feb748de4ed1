/* nimbus_agent_version: the version of the library that runs (the
 * macros of nimbus/version.h give the one an app was compiled against). */
#include "nimbus/agent.h"

const char *nimbus_agent_version(void) { return NIMBUS_AGENT_VERSION; }
