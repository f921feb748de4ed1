/* An MQTT session as Nimbus keeps one (common/src/session.c), for the
 * worker and the agent alike: the connect options, the first connect
 * (tried again with backoff while no broker answers, for as long as the
 * caller allows), Paho's automatic reconnect, the subscriptions made on
 * every connect (a refusal after a reconnect is tried again, 1 s doubling
 * to 60 s), and the polite end (unsubscribe, DISCONNECT, destroy).
 *
 * What differs between the two sides is options, not code: the worker
 * runs a clean session with a will and two subscription groups, each
 * with its MQTT 5 subscription identifier; the agent a persistent
 * session with a session expiry and one group of two filters.
 *
 * Threads: every callback below runs on one of Paho's threads, never
 * with the session's lock held, so a callback may call nb_session_up or
 * nb_session_client but must not call nb_session_connect, _unsubscribe,
 * _disconnect or _free. */
#ifndef NB_SESSION_H
#define NB_SESSION_H

#include <MQTTAsync.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One SUBSCRIBE packet: `n` filters at one QoS with the same options. */
typedef struct nb_sub_group {
  const char *const *filters; /* copied by nb_session_new */
  size_t n;
  int qos;
  int sub_id;               /* MQTT 5 subscription identifier; 0: none */
  bool retain_as_published; /* subscription options, as MQTT 5 has them */
  int retain_handling;
} nb_sub_group;

typedef struct nb_session_opts {
  const char *uri;       /* e.g. tcp://127.0.0.1:1883 */
  const char *client_id; /* all strings are copied by nb_session_new */
  const char *username, *password; /* NULL: none */
  int keepalive_s;
  bool clean_start;
  int64_t session_expiry_s; /* Session Expiry Interval; -1: not sent */
  int retry_max_s;          /* Paho's reconnect: 1 s doubling to this */
  /* Paho's own buffer of publishes made while disconnected (the worker's
   * replies); 0 with max_buffered as the room for publishes waiting on
   * the broker's receive maximum (the agent re-sends from its table). */
  bool send_while_disconnected;
  int max_buffered;
  /* A will (topic NULL: none); the payload is copied. */
  const char *will_topic;
  const void *will_payload;
  size_t will_len;
  int will_qos;
  bool will_retained;
  const nb_sub_group *groups; /* subscribed in this order on every connect */
  size_t ngroups;
  /* Callbacks (any may be NULL but on_message), each with ctx. */
  void *ctx;
  /* A message: as Paho's MQTTAsync_messageArrived (return 1 once the
   * message and topic are freed, 0 to be called again with it later). */
  int (*on_message)(void *ctx, char *topic, int topic_len,
                    MQTTAsync_message *m);
  /* Every group granted, after the first connect and after each
   * reconnect (the owner may send again what the broker did not ack). */
  void (*on_up)(void *ctx);
  /* The connection dropped (Paho reconnects by itself). */
  void (*on_lost)(void *ctx, const char *cause);
  /* A subscription refused after a reconnect (tried again later), with a
   * sentence that says which. */
  void (*on_refused)(void *ctx, const char *why);
} nb_session_opts;

typedef struct nb_session nb_session;

/* Makes a session (no connection yet) from a copy of *o. Returns 0 and
 * *out (free with nb_session_free), NIMBUS_EINVAL (no uri, client id,
 * on_message, or more than 8 groups), NIMBUS_ENOMEM. */
int nb_session_new(const nb_session_opts *o, nb_session **out);

/* Connects and subscribes, waiting until every group is granted or
 * timeout_ms (-1: forever) has passed. While no broker answers (nothing
 * listening, a broker starting) the connect is tried again after 100 ms,
 * doubling to 2 s, within the time. Returns 0; NIMBUS_EAUTH when the
 * broker refused the client (credentials, client id, banned);
 * NIMBUS_EREFUSED when it refused a subscription; NIMBUS_EMQTT (another
 * refusal, a bad URI, no broker until the time ran out); NIMBUS_ETIMEDOUT
 * (a broker there that did not finish the session in time);
 * NIMBUS_ENOMEM; NIMBUS_EBUSY while another call connects; err (errcap
 * bytes, may be NULL) gets a sentence for a person. A failed call may be
 * made again. After a success Paho reconnects by itself and every
 * connect subscribes again; calling again is a no-op returning 0. */
int nb_session_connect(nb_session *s, int timeout_ms, char *err, size_t errcap);

/* The Paho client, for publishing (any thread, no lock taken): NULL
 * until nb_session_connect makes one. Messages can arrive, and be
 * answered, before that call returns; after a success it is the same
 * client until nb_session_free. A failed connect destroys its client:
 * publish only from on_message, on_up or after a successful connect. */
MQTTAsync nb_session_client(const nb_session *s);

/* True while connected with every group granted. */
bool nb_session_up(const nb_session *s);

/* Leaves every group (waiting up to timeout_ms for the UNSUBACK) and
 * subscribes no more on later reconnects: new tasks go to the rest of a
 * pool while the owner finishes what it holds. No-op when not connected. */
void nb_session_unsubscribe(nb_session *s, int timeout_ms);

/* Sends DISCONNECT (waiting up to timeout_ms for publishes in flight and
 * the broker's answer), with Session Expiry Interval expiry_s unless it
 * is -1 (0 ends a persistent session). Nothing is reconnected after. */
void nb_session_disconnect(nb_session *s, int timeout_ms, int64_t expiry_s);

/* Destroys the client (without a DISCONNECT: call nb_session_disconnect
 * first for a polite end) and frees the session. NULL is a no-op. */
void nb_session_free(nb_session *s);

#endif
