/* The broker's side of one MQTT connection, for unit tests that play the
 * broker themselves on a loopback socket and so see every byte a client
 * writes and decide when it is answered. Plain functions that return -1 on
 * a failed read or write (a closed socket, or the 3 s receive timeout that
 * mqtt_peer_accept sets), so they also serve a thread other than cmocka's,
 * where a failed assert cannot be raised. Include after cmocka.h. */
#ifndef TEST_MQTT_PEER_H
#define TEST_MQTT_PEER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static inline void mqtt_peer_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A listening socket on a free loopback port; its tcp:// URI in uri[cap].
 * Returns the socket or -1. */
static inline int mqtt_peer_listen(char *uri, size_t cap) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &al) != 0) {
    close(lfd);
    return -1;
  }
  snprintf(uri, cap, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
  return lfd;
}

/* Accepts one client: TCP_NODELAY as Nimbus's broker has it (no 40 ms Nagle
 * waits) and a 3 s receive timeout. Returns the socket or -1. */
static inline int mqtt_peer_accept(int lfd) {
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0)
    return -1;
  int one = 1;
  struct timeval tv = {3, 0};
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Reads exactly n bytes. Returns 0 or -1. */
static inline int mqtt_peer_read_full(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0)
      return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Writes all n bytes. Returns 0 or -1. */
static inline int mqtt_peer_write_full(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One MQTT packet: returns its first byte and stores its body (at most
 * cap bytes) and the body's length; -1 on a failed read or a body longer
 * than cap. */
static inline int mqtt_peer_read_packet(int fd, uint8_t *body, size_t cap,
                                        size_t *len) {
  uint8_t h;
  if (mqtt_peer_read_full(fd, &h, 1) != 0)
    return -1;
  size_t n = 0;
  for (int shift = 0;; shift += 7) {
    uint8_t b;
    if (shift > 21 || mqtt_peer_read_full(fd, &b, 1) != 0)
      return -1;
    n |= (size_t)(b & 0x7f) << shift;
    if ((b & 0x80) == 0)
      break;
  }
  if (n > cap || mqtt_peer_read_full(fd, body, n) != 0)
    return -1;
  *len = n;
  return h;
}

#endif
