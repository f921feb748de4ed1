/* Paho MQTT C set up the way Nimbus runs it (common/src/paho_lean.c).
 *
 * Every program and library that links nimbus_paho (Paho's static archive
 * with the --wrap options of CMakeLists.txt) gets this object too. */
#ifndef NB_PAHO_H
#define NB_PAHO_H

/* Turns off Paho's in-memory trace ring before the first client is made:
 * by default the library formats every protocol event into a 400-entry
 * ring under one process-wide mutex, whether or not anyone reads it. Only
 * errors are kept then. When MQTT_C_CLIENT_TRACE is set in the
 * environment (Paho's own switch for a trace on stdout or a file) nothing
 * is changed, so Paho's tracing still works for debugging.
 *
 * Call before MQTTAsync_create*; any thread, any number of times (the
 * work is done once per process). Cannot fail. */
void nb_paho_init(void);

/* Call right before MQTTAsync_connect, and when a connection is lost (Paho
 * then reconnects by itself). Paho's receive thread, when it has
 * no socket to wait on, sleeps 100 ms at a time; it starts (or is idle)
 * before the send thread has made the new connection's socket, so the
 * CONNACK used to be read up to 100 ms late, on every connect. For the
 * next 2 s that sleep is 1 ms instead, so the socket is polled as soon as
 * it exists; after that (no connection: a broker away for long) the
 * receive thread sleeps 100 ms again, as Paho means it to, not waking a
 * phone a thousand times a second. Any thread; cannot fail. */
void nb_paho_connecting(void);

#endif
