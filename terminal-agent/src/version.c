/* nimbus_agent_version: the version of the library that runs (the
 * macros of nimbus/version.h give the one an app was compiled against),
 * and nimbus_agent_platform. Its own file: a build of the same objects as
 * another version (the integration tests' next version,
 * tests/integration/clients.cmake) links this file compiled with
 * NB_AGENT_VERSION_OVERRIDE. */
#include "nimbus/agent.h"

#ifdef NB_AGENT_VERSION_OVERRIDE
#define NB_AGENT_VERSION_STR NB_AGENT_VERSION_OVERRIDE
#else
#define NB_AGENT_VERSION_STR NIMBUS_AGENT_VERSION
#endif

const char *nimbus_agent_version(void) { return NB_AGENT_VERSION_STR; }

const char *nimbus_agent_platform(void) { return NIMBUS_AGENT_PLATFORM; }
