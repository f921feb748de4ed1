/* Paho MQTT C's own globals and functions that common/src/paho_lean.c and
 * common/src/paho_send.c use: Debian's libpaho-mqtt 1.3.12 (src/MQTTAsync.c,
 * src/MQTTAsyncUtils.c, src/Thread.h). None is in Paho's public header;
 * MQTTAsync_processCommand is static there and made global in the build's
 * copy of the archive (objcopy --globalize-symbol, CMakeLists.txt). A Paho
 * without them fails to link rather than misbehave. Private to common/. */
#ifndef NB_PAHO_INTERNAL_H
#define NB_PAHO_INTERNAL_H

#include <pthread.h>

/* Set when the library is stopping its threads. */
extern int MQTTAsync_tostop;
/* State (enum MQTTAsync_threadStates, STOPPED = 0) and id of Paho's send
 * and receive threads (thread_id_type is pthread_t). */
extern int sendThread_state, receiveThread_state;
extern pthread_t sendThread_id, receiveThread_id;
/* The global mutex (mutex_type is pthread_mutex_t *) and the send thread's
 * condition (cond_type: a pointer to Paho's own condition and mutex). */
extern pthread_mutex_t *mqttasync_mutex;
extern void *send_cond;

/* Runs the first ready command of Paho's queue, as the send thread does;
 * returns non-zero when one ran. Takes Paho's mutexes itself. */
int MQTTAsync_processCommand(void);
/* Wakes a thread waiting on a Paho condition. */
int Thread_signal_cond(void *cond);

#endif
