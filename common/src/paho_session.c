/* The parts of nb_paho.h on Paho's public API that both builds share
 * (cmake/NimbusPaho.cmake): the switch for Paho's trace ring, and how
 * Paho reports the broker's answers to a session's CONNECT and
 * SUBSCRIBE, read one way for the worker and the agent (nb_paho.h). Each
 * side keeps its own session state (the worker a clean session with a
 * will, the agent a persistent one with session slots), but both must
 * read Paho's callbacks alike, and Paho has quirks worth writing down
 * once: a SUBACK's reason codes sit in alt.sub only for a SUBSCRIBE of
 * more than one filter (for one filter, reasonCode holds it and alt holds
 * something else), and a failed CONNECT carries the CONNACK's reason code
 * in `code` when the broker answered, a Paho error code when it did not. */
#include "nb_paho.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- Paho's trace ring, off (both builds: a public call) -------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_trace(void) {
  const char *trace = getenv("MQTT_C_CLIENT_TRACE");
  if (trace == NULL || trace[0] == '\0')
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
}

void nb_paho_init(void) { (void)pthread_once(&init_once, init_trace); }

/* ---- The broker's answers --------------------------------------------- */

int nb_paho_suback_worst(const MQTTAsync_successData5 *d, size_t filters) {
  if (d == NULL)
    return 0;
  if (filters <= 1)
    return (int)d->reasonCode;
  int worst = 0;
  for (int i = 0; i < d->alt.sub.reasonCodeCount; i++)
    if (d->alt.sub.reasonCodes != NULL &&
        (int)d->alt.sub.reasonCodes[i] > worst)
      worst = (int)d->alt.sub.reasonCodes[i];
  return worst;
}

size_t nb_paho_suback_codes(const MQTTAsync_successData5 *d, size_t filters,
                            int *codes, size_t cap) {
  if (d == NULL || cap == 0)
    return 0;
  if (filters <= 1) {
    codes[0] = (int)d->reasonCode;
    return 1;
  }
  size_t n = 0;
  for (int i = 0; i < d->alt.sub.reasonCodeCount && n < cap; i++)
    if (d->alt.sub.reasonCodes != NULL)
      codes[n++] = (int)d->alt.sub.reasonCodes[i];
  return n;
}

int nb_paho_connack_reason(const MQTTAsync_failureData5 *d) {
  if (d == NULL || d->code < MQTTREASONCODE_UNSPECIFIED_ERROR)
    return 0;
  return d->code;
}

void nb_paho_failure_text(const MQTTAsync_failureData5 *d, char *buf,
                          size_t cap) {
  if (d == NULL) {
    snprintf(buf, cap, "no reason given");
    return;
  }
  int reason = nb_paho_connack_reason(d);
  if (reason != 0) {
    const char *rs = MQTTReasonCode_toString((enum MQTTReasonCodes)reason);
    snprintf(buf, cap, "%s (reason 0x%02x)", rs != NULL ? rs : "refused",
             reason);
  } else if (d->message != NULL) {
    snprintf(buf, cap, "%s", d->message);
  } else {
    snprintf(buf, cap, "%s", MQTTAsync_strerror(d->code));
  }
}
