/* TCP_NODELAY on the session's socket in either Paho build
 * (cmake/NimbusPaho.cmake): the patched build sets it before connect
 * (__wrap_connect), the public-API build once connected
 * (nb_paho_connected, from nb_session's onConnected). Without it every
 * QoS 1 exchange waits for a delayed ACK (FINDINGS.md).
 *
 * The test plays the broker on a loopback socket (MQTT 5 CONNACK by hand)
 * and finds the client's socket by itself: the one whose local port is the
 * peer address the listener accepted. It checks the option after the
 * first connect and after Paho's automatic reconnect (a new socket), that
 * a socket of the process connected elsewhere is left as it was, and that
 * the build the library says it is matches the one CMake chose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_paho.h"
#include "nb_session.h"
#include "test_mqtt_peer.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

static atomic_int ups;

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *m) {
  (void)ctx;
  (void)topic_len;
  MQTTAsync_freeMessage(&m);
  MQTTAsync_free(topic);
  return 1;
}

static void on_up(void *ctx) {
  (void)ctx;
  atomic_fetch_add(&ups, 1);
}

/* Accepts the client's connection, reads its CONNECT and grants it (MQTT 5
 * CONNACK: no session present, success, no properties). Returns the
 * peer's socket or -1. */
static int peer_grant(int lfd) {
  int fd = mqtt_peer_accept(lfd);
  if (fd < 0)
    return -1;
  uint8_t body[512];
  size_t len;
  static const uint8_t connack[] = {0x20, 0x03, 0x00, 0x00, 0x00};
  if (mqtt_peer_read_packet(fd, body, sizeof body, &len) != 0x10 ||
      mqtt_peer_write_full(fd, connack, sizeof connack) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

typedef struct peer_job {
  int lfd, fd;
} peer_job;

static void *peer_main(void *arg) {
  peer_job *pj = arg;
  pj->fd = peer_grant(pj->lfd);
  return NULL;
}

static int local_port(int fd) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &al) != 0 ||
      a.sin_family != AF_INET)
    return -1;
  return ntohs(a.sin_port);
}

/* The process's socket whose local port is `port`, or -1. */
static int socket_with_local_port(int port) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int found = -1;
  const struct dirent *e;
  while (found < 0 && (e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd != dirfd(d) && e->d_name[0] != '.' && local_port(fd) == port)
      found = fd;
  }
  closedir(d);
  return found;
}

/* TCP_NODELAY of the client socket the peer socket `pfd` is connected
 * to. */
static int client_nodelay(int pfd) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  assert_int_equal(getpeername(pfd, (struct sockaddr *)&a, &al), 0);
  int cfd = socket_with_local_port(ntohs(a.sin_port));
  assert_true(cfd >= 0);
  int on = 0;
  socklen_t ol = sizeof on;
  assert_int_equal(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &on, &ol), 0);
  return on;
}

static void test_build_is_the_configured_one(void **state) {
  (void)state;
  assert_string_equal(nb_paho_build(), NB_PAHO_PATCHED ? "patched" : "public");
}

static void test_nodelay_on_connect_and_reconnect(void **state) {
  (void)state;
  char uri[64];
  int lfd = mqtt_peer_listen(uri, sizeof uri);
  assert_true(lfd >= 0);
  /* A connection of the process's own to somewhere else: not Paho's. */
  char other_uri[64];
  int olfd = mqtt_peer_listen(other_uri, sizeof other_uri);
  assert_true(olfd >= 0);
  struct sockaddr_in oa;
  socklen_t oal = sizeof oa;
  assert_int_equal(getsockname(olfd, (struct sockaddr *)&oa, &oal), 0);
  int ofd = socket(AF_INET, SOCK_STREAM, 0);
  /* The system call itself: the patched build wraps connect() in every
   * program that links Paho through nimbus_paho, this test included. */
  assert_int_equal(
      syscall(SYS_connect, ofd, (struct sockaddr *)&oa, (socklen_t)sizeof oa),
      0);
  /* No accept may wait for ever. */
  struct timeval tv = {5, 0};
  assert_int_equal(setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);

  nb_session_opts o = {.uri = uri,
                       .client_id = "nodelay-test",
                       .keepalive_s = 30,
                       .clean_start = true,
                       .session_expiry_s = -1,
                       .retry_max_s = 1,
                       .max_buffered = 16,
                       .on_message = on_message,
                       .on_up = on_up};
  nb_session *s = NULL;
  assert_int_equal(nb_session_new(&o, &s), 0);

  /* The first connect: the peer grants it on a thread of its own while
   * nb_session_connect waits. */
  peer_job pj = {.lfd = lfd, .fd = -1};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, peer_main, &pj), 0);
  char err[256] = "";
  int rc = nb_session_connect(s, 5000, err, sizeof err);
  pthread_join(t, NULL);
  if (rc != 0)
    print_message("nb_session_connect: %s\n", err);
  assert_int_equal(rc, 0);
  assert_true(pj.fd >= 0);
  assert_int_equal(client_nodelay(pj.fd), 1);

  /* The link drops; Paho reconnects by itself on a new socket (1 s). The
   * session is up again once the CONNACK is read, a moment after it is
   * written: give it 5 s. */
  close(pj.fd);
  pj.fd = peer_grant(lfd);
  assert_true(pj.fd >= 0);
  int on = 0;
  for (int i = 0; i < 500; i++) {
    on = client_nodelay(pj.fd);
    if (on && atomic_load(&ups) >= 2)
      break;
    mqtt_peer_sleep_ms(10);
  }
  assert_int_equal(on, 1);
  assert_true(atomic_load(&ups) >= 2);

  /* The process's other connection kept its own setting. */
  on = 1;
  socklen_t ol = sizeof on;
  assert_int_equal(getsockopt(ofd, IPPROTO_TCP, TCP_NODELAY, &on, &ol), 0);
  assert_int_equal(on, 0);

  nb_session_disconnect(s, 200, -1);
  nb_session_free(s);
  close(pj.fd);
  close(ofd);
  close(olfd);
  close(lfd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_build_is_the_configured_one),
      cmocka_unit_test(test_nodelay_on_connect_and_reconnect),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
