/* nb_paho.h on Paho's public API only (NIMBUS_PAHO_PATCHED off,
 * cmake/NimbusPaho.cmake): for any Paho 1.3.x from 1.3.9, shared or
 * static, whatever its build options.
 *
 * What the patched build does inside Paho is not done here: no read-ahead
 * (Paho reads each packet in four or five recv calls), publishes go out
 * through Paho's send thread (a wake-up per message), Paho keeps its
 * debugging bookkeeping if it was built with it, and its 100 ms naps on
 * connect and destroy stay as they are. README, Measured, says what that
 * costs.
 *
 * TCP_NODELAY has to hold anyway: without it every QoS 1 exchange waits
 * for the peer's delayed ACK (88 ms instead of 0.2 ms a task, FINDINGS.md),
 * and Paho neither sets it nor has a socket hook. Its socket is not in the
 * public API either, so nb_paho_connected looks for it among the process's
 * descriptors once a connection is made (Paho's onConnected callback, for
 * the first connect and every reconnect) and sets the option there. Only
 * the CONNECT and CONNACK go before it; setting it on a connected socket
 * takes effect at once. */
#include "nb_paho.h"

#include "nb_util.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *nb_paho_build(void) { return "public"; }

void nb_paho_connecting(void) {}

bool nb_paho_pause_reads(bool pause) {
  (void)pause;
  return false;
}

int nb_paho_send(MQTTAsync client, const char *topic, MQTTAsync_message *msg,
                 MQTTAsync_responseOptions *opts) {
  return MQTTAsync_sendMessage(client, topic, msg, opts);
}

/* The broker's numeric address and port from a Paho URI
 * ("tcp://127.0.0.1:1883", "mqtt://[::1]:1883", "host:port"): *port 0 when
 * it cannot be read; *addr_ok false when the host is a name (matching is
 * then by port only: no DNS lookup on Paho's thread). */
static void broker_of(const char *uri, struct sockaddr_storage *addr,
                      bool *addr_ok, int *port) {
  *addr_ok = false;
  *port = 0;
  const char *p = strstr(uri, "://");
  p = p != NULL ? p + 3 : uri;
  char host[256];
  const char *colon;
  if (*p == '[') {
    const char *close = strchr(p, ']');
    if (close == NULL || close[1] != ':')
      return;
    snprintf(host, sizeof host, "%.*s", (int)(close - p - 1), p + 1);
    colon = close + 1;
  } else {
    colon = strrchr(p, ':');
    if (colon == NULL)
      return;
    snprintf(host, sizeof host, "%.*s", (int)(colon - p), p);
  }
  char *end = NULL;
  long v = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || (*end != '\0' && *end != '/') || v <= 0 || v > 65535)
    return;
  *port = (int)v;
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  if (getaddrinfo(host, colon + 1, &hints, &res) == 0 && res != NULL &&
      res->ai_addrlen <= sizeof *addr) {
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addr_ok = true;
  }
  if (res != NULL)
    freeaddrinfo(res);
}

static int port_of(const struct sockaddr_storage *a) {
  if (a->ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)a)->sin_port);
  if (a->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
  return 0;
}

static bool same_host(const struct sockaddr_storage *a,
                      const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return false;
  if (a->ss_family == AF_INET)
    return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                  &((const struct sockaddr_in *)b)->sin_addr,
                  sizeof(struct in_addr)) == 0;
  return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                &((const struct sockaddr_in6 *)b)->sin6_addr,
                sizeof(struct in6_addr)) == 0;
}

/* Sets TCP_NODELAY on `fd` when it is a TCP socket connected to the
 * broker and does not have it yet; true when it was set here. */
static bool nodelay_if_broker(int fd, const struct sockaddr_storage *broker,
                              bool addr_ok, int port) {
  int type = 0;
  socklen_t tl = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
      type != SOCK_STREAM)
    return false;
  struct sockaddr_storage peer;
  socklen_t pl = sizeof peer;
  if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 ||
      (peer.ss_family != AF_INET && peer.ss_family != AF_INET6) ||
      port_of(&peer) != port || (addr_ok && !same_host(&peer, broker)))
    return false;
  int on = 0;
  socklen_t ol = sizeof on;
  if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &ol) == 0 && on != 0)
    return false;
  int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
}

int nb_paho_connected(const char *uri) {
  if (uri == NULL)
    return 0;
  struct sockaddr_storage broker;
  memset(&broker, 0, sizeof broker);
  bool addr_ok;
  int port;
  broker_of(uri, &broker, &addr_ok, &port);
  if (port == 0)
    return 0;
  int set = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d != NULL) {
    int self = dirfd(d);
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      char *end = NULL;
      long fd = strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || fd == self)
        continue;
      set += nodelay_if_broker((int)fd, &broker, addr_ok, port) ? 1 : 0;
    }
    closedir(d);
    return set;
  }
  /* No /proc: every descriptor number up to the limit (at most 4096). */
  long max = sysconf(_SC_OPEN_MAX);
  if (max <= 0 || max > 4096)
    max = 4096;
  for (int fd = 0; fd < (int)max; fd++)
    set += nodelay_if_broker(fd, &broker, addr_ok, port) ? 1 : 0;
  return set;
}
