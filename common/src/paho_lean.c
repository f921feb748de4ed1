/* Paho MQTT C without its debugging bookkeeping.
 *
 * Debian builds libpaho-mqtt3a without PAHO_HIGH_PERFORMANCE, so every
 * function of the library enters and leaves through StackTrace_entry and
 * StackTrace_exit, which take one process-wide mutex each, and every
 * allocation goes through mymalloc, myrealloc and myfree, which take a
 * second process-wide mutex and keep each block in a balanced tree. The
 * receive thread, the send thread and every caller of MQTTAsync_* meet on
 * those two mutexes: at 64 tasks in flight a sixth of the agent's CPU time
 * was futex waits on them (tests/bench/README.md). Both are debugging aids
 * only (a stack dump on a fatal signal, a leak report at exit).
 *
 * We link Paho's static archive with -Wl,--wrap for these five symbols
 * (CMakeLists.txt, nimbus_paho), so the library's own calls land here and
 * do what its PAHO_HIGH_PERFORMANCE build does: no trace bookkeeping,
 * plain malloc, realloc and free. Every block Paho hands out (a message,
 * a topic name) is then freed by its own MQTTAsync_free or
 * MQTTAsync_freeMessage, which reach myfree, so allocation and release
 * always meet the same allocator. Nothing outside the archive is touched.
 *
 * The third piece of bookkeeping, the trace ring that Log() formats every
 * protocol event into under a third mutex, has a public switch:
 * nb_paho_init() below. */
#include "nb_paho.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

void __wrap_StackTrace_entry(const char *name, int line, int trace_level);
void __wrap_StackTrace_exit(const char *name, int line, void *rc,
                            int trace_level);
void *__wrap_mymalloc(char *file, int line, size_t size);
void *__wrap_myrealloc(char *file, int line, void *p, size_t size);
void __wrap_myfree(char *file, int line, void *p);

void __wrap_StackTrace_entry(const char *name, int line, int trace_level) {
  (void)name;
  (void)line;
  (void)trace_level;
}

void __wrap_StackTrace_exit(const char *name, int line, void *rc,
                            int trace_level) {
  (void)name;
  (void)line;
  (void)rc;
  (void)trace_level;
}

void *__wrap_mymalloc(char *file, int line, size_t size) {
  (void)file;
  (void)line;
  return malloc(size);
}

void *__wrap_myrealloc(char *file, int line, void *p, size_t size) {
  (void)file;
  (void)line;
  return realloc(p, size);
}

void __wrap_myfree(char *file, int line, void *p) {
  (void)file;
  (void)line;
  free(p);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_trace(void) {
  const char *trace = getenv("MQTT_C_CLIENT_TRACE");
  if (trace == NULL || trace[0] == '\0')
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
}

void nb_paho_init(void) { (void)pthread_once(&init_once, init_trace); }
