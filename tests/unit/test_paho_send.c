/* Unit tests of common/src/paho_send.c: nb_paho_send writes a publish on
 * the calling thread, in order, without waking Paho's send thread, from an
 * application thread and from inside Paho's messageArrived callback; a
 * publish that cannot go yet is still sent later by Paho's send thread; a
 * publish whose write fails (the connection just broke) loses the link and
 * fails once, with no double free (common/src/paho_read.c, nb_paho_writev),
 * whether written on the calling thread or by Paho's send thread.
 *
 * The test plays the broker itself on a loopback socket (MQTT 3.1.1,
 * CONNACK and PUBACK by hand), so that it sees every byte the client
 * writes and decides when the client's packets are acknowledged. Whether
 * the send thread woke is read from its voluntary context switches in
 * /proc; the same count taken over plain MQTTAsync_sendMessage calls shows
 * that the count does see the wake-ups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_paho.h"
#include "test_mqtt_peer.h"

#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define N_MSGS 200

typedef struct {
  int lfd; /* listening socket */
  int fd;  /* the client's connection, broker side */
  MQTTAsync client;
  atomic_int connected;
  atomic_int arrived; /* messages the callback saw */
  atomic_int lost;    /* connection-lost callbacks */
  atomic_int failed;  /* publish failure callbacks */
} fixture;

static void sleep_ms(int ms) { mqtt_peer_sleep_ms(ms); }

static void write_full(int fd, const uint8_t *p, size_t n) {
  assert_int_equal(mqtt_peer_write_full(fd, p, n), 0);
}

/* One MQTT packet: returns its first byte, stores the body. */
static uint8_t read_packet(int fd, uint8_t *body, size_t cap, size_t *len) {
  int h = mqtt_peer_read_packet(fd, body, cap, len);
  assert_true(h >= 0);
  return (uint8_t)h;
}

/* Reads one PUBLISH and checks its topic and payload; acknowledges it when
 * it is QoS 1 and `ack` is set. Returns its packet id (0 at QoS 0). */
static int expect_publish(int fd, const char *topic, const char *payload,
                          bool ack) {
  uint8_t body[512];
  size_t n;
  uint8_t h = read_packet(fd, body, sizeof body, &n);
  assert_int_equal(h >> 4, 3);
  int qos = (h >> 1) & 3;
  size_t tl = (size_t)body[0] << 8 | body[1];
  assert_true(2 + tl <= n);
  assert_int_equal(tl, strlen(topic));
  assert_memory_equal(body + 2, topic, tl);
  size_t off = 2 + tl;
  int id = 0;
  if (qos > 0) {
    id = body[off] << 8 | body[off + 1];
    off += 2;
  }
  assert_int_equal(n - off, strlen(payload));
  assert_memory_equal(body + off, payload, n - off);
  if (qos > 0 && ack) {
    uint8_t puback[4] = {0x40, 2, (uint8_t)(id >> 8), (uint8_t)id};
    write_full(fd, puback, sizeof puback);
  }
  return id;
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  fixture *f = ctx;
  (void)topic_len;
  /* Answer "in/<i>" on "out/<i>" with the same payload, from Paho's
   * receive thread, as the worker answers a ping. */
  char out[64];
  snprintf(out, sizeof out, "out/%s", topic + 3);
  MQTTAsync_message r = MQTTAsync_message_initializer;
  r.payload = m->payload;
  r.payloadlen = m->payloadlen;
  r.qos = 1;
  int rc = nb_paho_send(f->client, out, &r, NULL);
  if (rc == MQTTASYNC_SUCCESS)
    atomic_fetch_add(&f->arrived, 1);
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_connected(void *ctx, MQTTAsync_successData *d) {
  (void)d;
  atomic_store(&((fixture *)ctx)->connected, 1);
}

static void on_lost(void *ctx, char *cause) {
  (void)cause;
  atomic_fetch_add(&((fixture *)ctx)->lost, 1);
}

static void on_pub_failed(void *ctx, MQTTAsync_failureData *d) {
  (void)d;
  atomic_fetch_add(&((fixture *)ctx)->failed, 1);
}

/* Paho's send thread's voluntary context switches so far. */
static long send_thread_switches(void) {
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  long found = -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && found < 0) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
      continue;
    bool is_send = fgets(line, sizeof line, fp) != NULL &&
                   strncmp(line, "MQTTAsync_send", 14) == 0;
    fclose(fp);
    if (!is_send)
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
    fp = fopen(path, "r");
    assert_non_null(fp);
    while (fgets(line, sizeof line, fp) != NULL)
      if (sscanf(line, "voluntary_ctxt_switches: %ld", &found) == 1)
        break;
    fclose(fp);
  }
  closedir(d);
  assert_true(found >= 0);
  return found;
}

/* Connects a client with Paho's in-flight window of `window` QoS 1
 * publishes to the broker this test plays. */
static int setup_window(void **state, int window) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  nb_paho_init();
  char uri[64];
  f->lfd = mqtt_peer_listen(uri, sizeof uri);
  assert_true(f->lfd >= 0);

  assert_int_equal(MQTTAsync_create(&f->client, uri, "paho-send-test",
                                    MQTTCLIENT_PERSISTENCE_NONE, NULL),
                   MQTTASYNC_SUCCESS);
  assert_int_equal(
      MQTTAsync_setCallbacks(f->client, f, on_lost, on_message, NULL),
      MQTTASYNC_SUCCESS);
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.cleansession = 1;
  /* Not Paho's default (3.1.1, then 3.1 when that fails): a lost link is
   * then lost, not retried as 3.1 at once. */
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.keepAliveInterval = 60;
  co.maxInflight = window;
  co.onSuccess = on_connected;
  co.context = f;
  nb_paho_connecting();
  assert_int_equal(MQTTAsync_connect(f->client, &co), MQTTASYNC_SUCCESS);

  f->fd = mqtt_peer_accept(f->lfd);
  assert_true(f->fd >= 0);
  uint8_t body[256];
  size_t n;
  assert_int_equal(read_packet(f->fd, body, sizeof body, &n) >> 4, 1);
  const uint8_t connack[4] = {0x20, 2, 0, 0};
  write_full(f->fd, connack, sizeof connack);
  for (int i = 0; i < 300 && !atomic_load(&f->connected); i++)
    sleep_ms(10);
  assert_true(atomic_load(&f->connected));
  *state = f;
  return 0;
}

static int setup(void **state) { return setup_window(state, 1000); }

/* A window of 1: a second QoS 1 publish waits for the first's PUBACK. */
static int setup_window1(void **state) { return setup_window(state, 1); }

static int teardown(void **state) {
  fixture *f = *state;
  MQTTAsync_destroy(&f->client);
  close(f->fd);
  close(f->lfd);
  free(f);
  return 0;
}

/* One publish at a time, each read by the broker before the next is
 * made, so that every hand-over would find the send thread asleep. */
static long publish_one_by_one(fixture *f, bool direct, const char *tag) {
  long before = send_thread_switches();
  for (int i = 0; i < N_MSGS; i++) {
    char topic[32], payload[32];
    snprintf(topic, sizeof topic, "%s/%d", tag, i);
    snprintf(payload, sizeof payload, "payload %d", i);
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = payload;
    m.payloadlen = (int)strlen(payload);
    m.qos = 1;
    int rc = direct ? nb_paho_send(f->client, topic, &m, NULL)
                    : MQTTAsync_sendMessage(f->client, topic, &m, NULL);
    assert_int_equal(rc, MQTTASYNC_SUCCESS);
    (void)expect_publish(f->fd, topic, payload, true);
  }
  return send_thread_switches() - before;
}

static void test_sent_on_the_calling_thread(void **state) {
  fixture *f = *state;
  long queued = publish_one_by_one(f, false, "queued");
  long direct = publish_one_by_one(f, true, "direct");
  /* MQTTAsync_sendMessage wakes the send thread for each publish; the
   * count sees it. nb_paho_send leaves it asleep (it wakes once a second
   * by itself). */
  assert_true(queued >= N_MSGS / 2);
  assert_true(direct <= 10);
}

static void test_sent_from_a_callback(void **state) {
  fixture *f = *state;
  long before = send_thread_switches();
  for (int i = 0; i < N_MSGS; i++) {
    char topic[32], payload[32];
    int tl = snprintf(topic, sizeof topic, "in/%d", i);
    int pl = snprintf(payload, sizeof payload, "ping %d", i);
    uint8_t pkt[96];
    size_t n = 0;
    pkt[n++] = 0x30; /* PUBLISH, QoS 0 */
    pkt[n++] = (uint8_t)(2 + tl + pl);
    pkt[n++] = 0;
    pkt[n++] = (uint8_t)tl;
    memcpy(pkt + n, topic, (size_t)tl);
    n += (size_t)tl;
    memcpy(pkt + n, payload, (size_t)pl);
    n += (size_t)pl;
    write_full(f->fd, pkt, n);
    char out[32];
    snprintf(out, sizeof out, "out/%d", i);
    /* Within the socket's 3 s timeout: a reply left to the send thread's
     * own once-a-second wake-up would make 200 of them take minutes. */
    (void)expect_publish(f->fd, out, payload, true);
  }
  assert_int_equal(atomic_load(&f->arrived), N_MSGS);
  assert_true(send_thread_switches() - before <= 10);
}

static void test_blocked_publish_goes_later(void **state) {
  fixture *f = *state;
  /* Paho's in-flight window is 1: the first publish is not acknowledged
   * yet, so the second cannot go on the calling thread... */
  const char *p1 = "first", *p2 = "second";
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.qos = 1;
  m.payload = (void *)p1;
  m.payloadlen = (int)strlen(p1);
  assert_int_equal(nb_paho_send(f->client, "blocked/1", &m, NULL),
                   MQTTASYNC_SUCCESS);
  int id = expect_publish(f->fd, "blocked/1", p1, false);
  m.payload = (void *)p2;
  m.payloadlen = (int)strlen(p2);
  assert_int_equal(nb_paho_send(f->client, "blocked/2", &m, NULL),
                   MQTTASYNC_SUCCESS);
  /* ...and nothing more is written while the window is full. */
  uint8_t c;
  assert_true(recv(f->fd, &c, 1, MSG_DONTWAIT) < 0);
  uint8_t puback[4] = {0x40, 2, (uint8_t)(id >> 8), (uint8_t)id};
  write_full(f->fd, puback, sizeof puback);
  /* Paho's send thread sends it once the window opens. */
  (void)expect_publish(f->fd, "blocked/2", p2, true);
}

/* The client's end of the connection: the socket of this process whose
 * local address is the broker's peer. */
static int client_socket(const fixture *f) {
  struct sockaddr_storage want, a;
  socklen_t wl = sizeof want;
  assert_int_equal(getpeername(f->fd, (struct sockaddr *)&want, &wl), 0);
  for (int fd = 3; fd < 1024; fd++) {
    socklen_t al = sizeof a;
    if (fd != f->fd && fd != f->lfd &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0 && al == wl &&
        memcmp(&a, &want, al) == 0)
      return fd;
  }
  fail_msg("the client's socket is not among this process's");
  return -1;
}

/* A QoS 1 publish written into a connection that has just broken (its
 * write fails: EPIPE here, ECONNRESET when a killed broker's host answers
 * with a reset) before Paho's receive thread has noticed. Paho 1.3.12
 * then frees the publish's topic and payload, which the in-flight copy it
 * has just stored still points to, and frees them again when that copy
 * goes (at once here: a clean session; on the next connect otherwise).
 * The link must simply be lost, and the publish fail once. */
static void publish_into_broken_link(fixture *f, bool direct) {
  assert_int_equal(shutdown(client_socket(f), SHUT_WR), 0);
  char payload[300];
  memset(payload, 'x', sizeof payload);
  MQTTAsync_message m = MQTTAsync_message_initializer;
  m.qos = 1;
  m.payload = payload;
  m.payloadlen = (int)sizeof payload;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onFailure = on_pub_failed;
  ro.context = f;
  int rc = direct ? nb_paho_send(f->client, "broken/1", &m, &ro)
                  : MQTTAsync_sendMessage(f->client, "broken/1", &m, &ro);
  assert_int_equal(rc, MQTTASYNC_SUCCESS);
  for (int i = 0;
       i < 300 && (atomic_load(&f->lost) == 0 || atomic_load(&f->failed) == 0);
       i++)
    sleep_ms(10);
  assert_int_equal(atomic_load(&f->lost), 1);
  assert_int_equal(atomic_load(&f->failed), 1);
  assert_false(MQTTAsync_isConnected(f->client));
}

static void test_publish_into_broken_link(void **state) {
  publish_into_broken_link(*state, true);
}

static void test_publish_into_broken_link_queued(void **state) {
  publish_into_broken_link(*state, false);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sent_on_the_calling_thread, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sent_from_a_callback, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_blocked_publish_goes_later,
                                      setup_window1, teardown),
      cmocka_unit_test_setup_teardown(test_publish_into_broken_link, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_publish_into_broken_link_queued,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
