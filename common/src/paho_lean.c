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
 * nb_paho_init() (paho_session.c, both builds).
 *
 * One wait, too: MQTTAsync_destroy of a process's last client sets
 * MQTTAsync_tostop and then sleeps 100 ms at a time (usleep(100000)) until
 * Paho's send and receive threads have stopped, which takes them well
 * under a millisecond. So every nimbus-agent command, every
 * nimbus_agent_free and every worker's exit waited a whole 100 ms for
 * nothing (strace: threads gone at +0.5 ms, exit at +100 ms). usleep is
 * wrapped too: that one sleep, and only while a stop is under way
 * (MQTTAsync_tostop set, the caller not one of Paho's two threads),
 * becomes 1 ms naps that end as soon as both threads have stopped, at most
 * the 100 ms asked for. The receive thread's own 100 ms sleep when it has
 * no socket to wait on delayed every connect the same way (nb_paho.h,
 * nb_paho_connecting): within 2 s of a connect it is a 1 ms nap. Every
 * other usleep passes straight through. The globals read here are the
 * archive's own (paho_internal.h). */
#include "nb_paho.h"
#include "nb_util.h"
#include "paho_internal.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

void __wrap_StackTrace_entry(const char *name, int line, int trace_level);
void __wrap_StackTrace_exit(const char *name, int line, void *rc,
                            int trace_level);
void *__wrap_mymalloc(char *file, int line, size_t size);
void *__wrap_myrealloc(char *file, int line, void *p, size_t size);
void __wrap_myfree(char *file, int line, void *p);
int __wrap_usleep(useconds_t us);
int __real_usleep(useconds_t us);

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

/* The one sleep length Paho uses (MQTTAsync_sleep(100L)), and how long
 * after nb_paho_connecting the receive thread naps instead. */
#define PAHO_STOP_SLEEP_US 100000u
#define CONNECT_FAST_MS 2000

static int paho_load(const int *v) {
  return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

/* CLOCK_MONOTONIC ms until which a connect is under way; 0: none. */
static int64_t connect_until_ms;

void nb_paho_connecting(void) {
  __atomic_store_n(&connect_until_ms, nb_mono_ms() + CONNECT_FAST_MS,
                   __ATOMIC_RELEASE);
}

int __wrap_usleep(useconds_t us) {
  pthread_t self = pthread_self();
  if (us != PAHO_STOP_SLEEP_US)
    return __real_usleep(us);
  if (pthread_equal(self, receiveThread_id)) {
    /* Its sleep when no socket is ready: short while a connect is new. */
    int64_t until = __atomic_load_n(&connect_until_ms, __ATOMIC_ACQUIRE);
    return __real_usleep(until != 0 && nb_mono_ms() < until ? 1000 : us);
  }
  if (paho_load(&MQTTAsync_tostop) == 0 || pthread_equal(self, sendThread_id))
    return __real_usleep(us);
  for (useconds_t slept = 0; slept < us; slept += 1000) {
    if (paho_load(&sendThread_state) == 0 &&
        paho_load(&receiveThread_state) == 0)
      return 0;
    (void)__real_usleep(1000);
  }
  return 0;
}
