/* Paho MQTT C reading a packet in one system call instead of five or six.
 *
 * Paho's receive thread reads each MQTT packet with a recv of 1 byte for
 * the fixed header, one recv of 1 byte per remaining-length byte, and one
 * recv for the rest, and it polls its sockets twice before each packet
 * (src/Socket.c of Debian's libpaho-mqtt 1.3.12: Socket_getch,
 * Socket_getdata, Socket_getReadySocket). A small PUBACK thus costs four
 * system calls to read and a 264-byte reply five, where one recv would
 * do; on the 2-core VM of tests/bench/README.md half of every process's
 * CPU time at 64 tasks in flight is the kernel's, and a phone pays for
 * each wake-up of its radio stack too.
 *
 * The build makes a copy of Paho's static archive in which the library's
 * own calls to recv, poll, writev and close are renamed to the four
 * functions below (objcopy --redefine-sym, CMakeLists.txt); nothing outside the
 * archive is affected, and Paho's logic is untouched.
 *
 * - nb_paho_recv serves a read from the socket's read-ahead buffer first.
 *   A small read that finds the buffer empty reads up to RA_CAP bytes into
 *   it (all the packets the kernel holds, usually) and hands out what was
 *   asked for; a read of RA_CAP bytes or more (a blob segment's body) goes
 *   straight into Paho's buffer after what the read-ahead held. A byte
 *   stream stays a byte stream: the data, its order, end of file (0 once
 *   the buffer is drained) and errors are what the kernel says.
 * - nb_paho_poll reports a socket whose buffer holds bytes as readable
 *   (POLLIN), because the kernel no longer knows about those bytes. Only
 *   when every polled socket has buffered bytes is the kernel not asked;
 *   otherwise it is asked without waiting, for the others. Paho's other
 *   poll, for POLLOUT alone with no wait before every packet it reads
 *   (it reads only from a writable socket), is answered the same way for
 *   a socket whose last write went out whole: had the send buffer filled,
 *   that write would have come back short or with EAGAIN, and then the
 *   kernel is asked again until a write goes out whole. A write that runs
 *   into a full buffer after all is one Paho handles anyway (its pending
 *   writes).
 * - nb_paho_writev is writev, noting whether everything went out. A write
 *   that fails because the connection broke (EPIPE, ECONNRESET, ...) is
 *   reported to Paho as one that would block, after the socket is shut
 *   down both ways: Paho 1.3.12's own handling of a failed publish frees
 *   the message twice (nb_paho.h), while a write that would block leaves
 *   the message in flight, and the hang-up that the shutdown makes sure
 *   of ends the connection the way a lost link always does (the receive
 *   thread reads end of file, closes the socket, and Paho drops the
 *   pending write with it).
 * - nb_paho_close drops the socket's buffer before closing it, so a later
 *   socket with the same number starts empty.
 * - nb_paho_pause_reads makes nb_paho_poll leave POLLIN out (and the
 *   read-ahead unreported) until it is called again to resume, which ends
 *   a poll under way through an eventfd. Paho's receive thread then reads
 *   nothing and delivers nothing: a worker with no room left stops taking
 *   messages without holding that thread in its callback.
 *
 * Paho reads from its one receive thread, but writes and closes from
 * others too; one mutex guards the table. It is held across a recv of a
 * non-blocking socket, never across a call that waits. */
#include "nb_paho.h"

#include "nb_util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Read-ahead per socket: many small packets, and a good part of a
 * segment's body. */
#define RA_CAP 16384

typedef struct {
  size_t off, len; /* unread bytes: data[off, len) */
  uint8_t data[RA_CAP];
} ra_buf;

typedef struct {
  ra_buf *buf;   /* read-ahead, made on the first small read */
  bool write_ok; /* the last writev wrote everything */
} ra_fd;

static pthread_mutex_t ra_mu = PTHREAD_MUTEX_INITIALIZER;
static ra_fd *ra_tab; /* indexed by file descriptor */
static size_t ra_cap;

/* The entry of `fd`, the table grown for it when `make`; NULL when out of
 * range (or no memory: the caller then does without). Needs ra_mu. */
static ra_fd *ra_slot(int fd, bool make) {
  if (fd < 0)
    return NULL;
  size_t i = (size_t)fd;
  if (i < ra_cap)
    return &ra_tab[i];
  if (!make)
    return NULL;
  size_t cap = ra_cap != 0 ? ra_cap : 16;
  while (cap <= i)
    cap *= 2;
  ra_fd *tab = realloc(ra_tab, cap * sizeof *tab);
  if (tab == NULL)
    return NULL;
  memset(tab + ra_cap, 0, (cap - ra_cap) * sizeof *tab);
  ra_tab = tab;
  ra_cap = cap;
  return &ra_tab[i];
}

/* The read-ahead of `fd`, made when `make`. Needs ra_mu. */
static ra_buf *ra_get(int fd, bool make) {
  ra_fd *f = ra_slot(fd, make);
  if (f == NULL || f->buf != NULL || !make)
    return f != NULL ? f->buf : NULL;
  f->buf = malloc(sizeof *f->buf);
  if (f->buf != NULL)
    f->buf->off = f->buf->len = 0;
  return f->buf;
}

static bool ra_buffered(int fd) {
  const ra_buf *b = ra_get(fd, false);
  return b != NULL && b->len > b->off;
}

/* Paho's write check (POLLOUT alone) on a socket whose last write went
 * out whole. Needs ra_mu. */
static bool ra_writable(const struct pollfd *p) {
  const ra_fd *f = p->events == POLLOUT ? ra_slot(p->fd, false) : NULL;
  return f != NULL && f->write_ok;
}

static size_t ra_take(ra_buf *b, uint8_t *out, size_t n) {
  size_t have = b->len - b->off;
  if (n > have)
    n = have;
  memcpy(out, b->data + b->off, n);
  b->off += n;
  if (b->off == b->len)
    b->off = b->len = 0;
  return n;
}

ssize_t nb_paho_recv(int fd, void *buf, size_t n, int flags) {
  if (flags != 0 || n == 0 || buf == NULL)
    return recv(fd, buf, n, flags);
  uint8_t *out = buf;
  pthread_mutex_lock(&ra_mu);
  ra_buf *b = ra_get(fd, false);
  size_t got = b != NULL ? ra_take(b, out, n) : 0;
  ssize_t r = 0;
  if (got < n) {
    if (n - got < RA_CAP && (b != NULL || (b = ra_get(fd, true)) != NULL)) {
      /* The buffer is empty now: fill it, hand out the front. */
      r = recv(fd, b->data, RA_CAP, 0);
      if (r > 0) {
        b->len = (size_t)r;
        got += ra_take(b, out + got, n - got);
      }
    } else {
      r = recv(fd, out + got, n - got, 0);
      if (r > 0)
        got += (size_t)r;
    }
  }
  int saved = errno;
  pthread_mutex_unlock(&ra_mu);
  if (got > 0)
    return (ssize_t)got; /* an error or end of file shows on the next read */
  errno = saved;
  return r; /* 0: end of file; -1: errno from recv */
}

/* Reads paused (nb_paho_pause_reads), and the eventfd that ends a poll
 * made while they were. */
static atomic_bool ra_paused;
static int ra_wake = -1;
static pthread_once_t ra_wake_once = PTHREAD_ONCE_INIT;

static void ra_wake_make(void) {
  ra_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

bool nb_paho_pause_reads(bool pause) {
  pthread_once(&ra_wake_once, ra_wake_make);
  atomic_store(&ra_paused, pause);
  if (!pause && ra_wake >= 0) {
    uint64_t one = 1;
    ssize_t w = write(ra_wake, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already set, the wake is due */
  }
  return true;
}

/* One poll while reads are paused: POLLIN is not asked for (nor is the
 * read-ahead reported), the wake eventfd is. Errors and hang-ups still
 * show, as do POLLOUT waits. Returns what poll returns, counting Paho's
 * entries only; *woken tells whether the eventfd fired. */
static int ra_paused_poll(struct pollfd *fds, nfds_t nfds, int timeout,
                          bool *woken) {
  struct pollfd local[16];
  struct pollfd *p = local;
  *woken = false;
  if (nfds + 1 > sizeof local / sizeof local[0] &&
      (p = malloc((nfds + 1) * sizeof *p)) == NULL)
    return -1; /* errno ENOMEM */
  for (nfds_t i = 0; i < nfds; i++) {
    p[i] = fds[i];
    p[i].events = (short)(p[i].events & ~POLLIN);
    p[i].revents = 0;
  }
  nfds_t n = nfds;
  if (ra_wake >= 0)
    p[n++] = (struct pollfd){.fd = ra_wake, .events = POLLIN};
  else if (timeout < 0 || timeout > 10)
    timeout = 10; /* no eventfd: look again soon */
  int r = poll(p, n, timeout);
  int ready = 0;
  for (nfds_t i = 0; i < nfds; i++) {
    fds[i].revents = r > 0 ? p[i].revents : 0;
    if (fds[i].revents != 0)
      ready++;
  }
  if (r > 0 && n > nfds && p[nfds].revents != 0) {
    uint64_t v;
    ssize_t got = read(ra_wake, &v, sizeof v);
    (void)got;
    *woken = true;
  }
  int saved = errno;
  if (p != local)
    free(p);
  errno = saved;
  return r < 0 ? -1 : ready;
}

int nb_paho_poll(struct pollfd *fds, nfds_t nfds, int timeout) {
  if (atomic_load(&ra_paused)) {
    int64_t end = timeout > 0 ? nb_mono_ms() + timeout : 0;
    for (;;) {
      bool woken;
      int r = ra_paused_poll(fds, nfds, timeout, &woken);
      if (r != 0 || !woken)
        return r; /* a socket to see to, an error, or the time is up */
      if (timeout > 0) {
        int64_t left = end - nb_mono_ms();
        timeout = left > 0 ? (int)left : 0;
      }
      if (!atomic_load(&ra_paused))
        break; /* resumed: poll as usual for the time that is left */
    }
  }
  nfds_t known = 0;
  pthread_mutex_lock(&ra_mu);
  for (nfds_t i = 0; i < nfds; i++)
    if (((fds[i].events & POLLIN) != 0 && ra_buffered(fds[i].fd)) ||
        ra_writable(&fds[i]))
      known++;
  pthread_mutex_unlock(&ra_mu);
  if (known == 0)
    return poll(fds, nfds, timeout);

  if (known < nfds) {
    if (poll(fds, nfds, 0) < 0)
      return -1;
  } else {
    for (nfds_t i = 0; i < nfds; i++)
      fds[i].revents = 0;
  }
  /* Mark the known ones again: only this thread reads, so a buffer found
   * non-empty above is non-empty still, or closed (then left as the
   * kernel reported it). */
  int ready = 0;
  pthread_mutex_lock(&ra_mu);
  for (nfds_t i = 0; i < nfds; i++) {
    if ((fds[i].events & POLLIN) != 0 && ra_buffered(fds[i].fd))
      fds[i].revents |= POLLIN;
    if (ra_writable(&fds[i]))
      fds[i].revents |= POLLOUT;
    if (fds[i].revents != 0)
      ready++;
  }
  pthread_mutex_unlock(&ra_mu);
  return ready;
}

/* A write that failed for a reason other than a full send buffer: the
 * connection is over. Shuts the socket down both ways, so that the
 * receive thread's next poll sees a hang-up and its next read end of
 * file, and returns true; false (nothing done) when fd is no socket. */
static bool ra_write_broken(int fd, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == EBADF || err == ENOTSOCK ||
      err == EINTR)
    return false;
  int type;
  socklen_t tl = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0)
    return false;
  /* ENOTCONN for a socket the peer has reset: it is shut down all the
   * same, and reported as hung up. */
  (void)shutdown(fd, SHUT_RDWR);
  return true;
}

ssize_t nb_paho_writev(int fd, const struct iovec *iov, int iovcnt) {
  ssize_t r = writev(fd, iov, iovcnt);
  int saved = errno;
  if (r < 0 && (saved == EINTR || ra_write_broken(fd, saved)))
    saved = EAGAIN; /* see nb_paho.h: Paho's failed-write path frees twice */
  size_t want = 0;
  for (int i = 0; i < iovcnt; i++)
    want += iov[i].iov_len;
  pthread_mutex_lock(&ra_mu);
  ra_fd *f = ra_slot(fd, true);
  if (f != NULL)
    f->write_ok = r >= 0 && (size_t)r == want;
  pthread_mutex_unlock(&ra_mu);
  errno = saved;
  return r;
}

int nb_paho_close(int fd) {
  pthread_mutex_lock(&ra_mu);
  ra_fd *f = ra_slot(fd, false);
  if (f != NULL) {
    free(f->buf);
    f->buf = NULL;
    f->write_ok = false;
  }
  pthread_mutex_unlock(&ra_mu);
  return close(fd);
}
