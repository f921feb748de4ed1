/* TCP_NODELAY for Paho's sockets.
 *
 * Paho MQTT C never sets TCP_NODELAY, so every QoS 1 exchange waits for the
 * peer's delayed ACK: 88 ms instead of 0.2 ms per task (FINDINGS.md). Paho
 * has no socket option hook. Our binaries and libnimbus-agent link Paho's
 * static archive with -Wl,--wrap=connect, so Paho's connect() calls land
 * here and nobody else's are touched (an app embedding the agent keeps its
 * own connect()). Nagle's algorithm is turned off before the connection is
 * made; a failure to do so is harmless and ignored. */
#include "nb_paho.h"

#include <netinet/in.h>
#include <stddef.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int __real_connect(int fd, const struct sockaddr *addr, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len);

int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  if (addr != NULL &&
      (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
        type == SOCK_STREAM) {
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  }
  return __real_connect(fd, addr, len);
}

/* The socket has it from before its connect: nothing is left to do. */
int nb_paho_connected(const char *uri) {
  (void)uri;
  return 0;
}

const char *nb_paho_build(void) { return "patched"; }
