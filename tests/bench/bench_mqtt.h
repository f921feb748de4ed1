/* Blocking connect and subscribe over Paho MQTTAsync for the raw MQTT
 * benchmark pair (nb-raw-echo, nb-raw-load). Plain MQTT 5, clean start, no
 * persistence: the smallest client that does the same wire work as a
 * Nimbus agent and worker, with nothing of Nimbus in the path. */
#ifndef NB_BENCH_MQTT_H
#define NB_BENCH_MQTT_H

#include <MQTTAsync.h>

#include "bench_util.h"

/* Creates a client for tcp://host:port with `client_id` and `ctx` as the
 * callbacks' context, sets the callbacks, connects (clean start, MQTT 5)
 * and waits at most 10 s. Returns 0 or -1 with a message on stderr. */
int bench_mqtt_connect(MQTTAsync *out, const bench_opts *o,
                       const char *client_id, void *ctx,
                       MQTTAsync_connectionLost *lost,
                       MQTTAsync_messageArrived *arrived);

/* Subscribes to `topic` at QoS 1 and waits for the SUBACK (10 s at most).
 * Returns 0, or -1 when it failed or the broker refused it. */
int bench_mqtt_subscribe(MQTTAsync c, const char *topic);

/* Disconnects (waiting at most 1 s for acknowledgements) and destroys. */
void bench_mqtt_close(MQTTAsync *c);

#endif
