/* Unit tests of common/src/paho_read.c, the read-ahead under Paho's socket
 * reads: over a socketpair, every byte arrives once and in order whatever
 * the read sizes, poll reports what only the read-ahead holds, end of file
 * and "nothing yet" come through as the kernel reports them, a closed
 * socket's unread bytes never reach the next socket with its number, and
 * paused reads report nothing readable until resumed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_paho.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A connected pair; [0] is read through the read-ahead, non-blocking as
 * Paho's sockets are. */
static void pair(int sv[2]) {
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int fl = fcntl(sv[0], F_GETFL);
  assert_int_equal(fcntl(sv[0], F_SETFL, fl | O_NONBLOCK), 0);
}

static void put(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    assert_true(w > 0);
    p += w;
    n -= (size_t)w;
  }
}

static bool kernel_empty(int fd) {
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static void test_small_reads_take_one_recv(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  uint8_t msg[300];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 7 + 1);
  put(sv[1], msg, sizeof msg);

  uint8_t got[300];
  assert_int_equal(nb_paho_recv(sv[0], got, 1, 0), 1);
  /* The first read took everything from the kernel... */
  assert_true(kernel_empty(sv[0]));
  /* ...so only the read-ahead can tell poll that there is more. */
  struct pollfd p = {.fd = sv[0], .events = POLLIN | POLLNVAL};
  assert_int_equal(nb_paho_poll(&p, 1, 5000), 1);
  assert_true(p.revents & POLLIN);
  /* Paho's shape: a length byte, then the body. */
  assert_int_equal(nb_paho_recv(sv[0], got + 1, 1, 0), 1);
  assert_int_equal(nb_paho_recv(sv[0], got + 2, 200, 0), 200);
  assert_int_equal(nb_paho_recv(sv[0], got + 202, 500, 0), 98);
  assert_memory_equal(got, msg, sizeof msg);

  /* Drained: nothing to report, nothing to read. */
  p.revents = 0;
  assert_int_equal(nb_paho_poll(&p, 1, 0), 0);
  errno = 0;
  assert_int_equal(nb_paho_recv(sv[0], got, 1, 0), -1);
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(nb_paho_close(sv[0]), 0);
  close(sv[1]);
}

static void test_large_reads_go_straight_in(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  /* More than the socketpair holds at once: write from a child. */
  size_t n = 200000;
  uint8_t *msg = malloc(n), *got = malloc(n);
  assert_non_null(msg);
  assert_non_null(got);
  for (size_t i = 0; i < n; i++)
    msg[i] = (uint8_t)(i ^ (i >> 8));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    put(sv[1], msg, n);
    _exit(0);
  }
  close(sv[1]);
  /* A header byte, then everything else asked for at once, as Paho reads
   * a segment's body: the read-ahead's bytes first, then the kernel's. */
  size_t have = 0;
  while (have < n) {
    ssize_t r = nb_paho_recv(sv[0], got + have, have == 0 ? 1 : n - have, 0);
    if (r < 0) {
      assert_int_equal(errno, EAGAIN);
      struct pollfd p = {.fd = sv[0], .events = POLLIN};
      assert_true(nb_paho_poll(&p, 1, 5000) >= 0);
      continue;
    }
    assert_true(r > 0);
    have += (size_t)r;
  }
  assert_memory_equal(got, msg, n);
  /* The writer is done and gone: end of file. */
  struct pollfd p = {.fd = sv[0], .events = POLLIN};
  assert_int_equal(nb_paho_poll(&p, 1, 5000), 1);
  assert_int_equal(nb_paho_recv(sv[0], got, 10, 0), 0);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_int_equal(nb_paho_close(sv[0]), 0);
  free(msg);
  free(got);
}

static void test_end_of_file_after_buffered_bytes(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  put(sv[1], (const uint8_t *)"0123456789", 10);
  close(sv[1]);
  char got[16];
  assert_int_equal(nb_paho_recv(sv[0], got, 4, 0), 4);
  assert_int_equal(nb_paho_recv(sv[0], got + 4, 100, 0), 6);
  assert_memory_equal(got, "0123456789", 10);
  assert_int_equal(nb_paho_recv(sv[0], got, 100, 0), 0);
  assert_int_equal(nb_paho_close(sv[0]), 0);
}

static void test_close_drops_unread_bytes(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  put(sv[1], (const uint8_t *)"stale bytes", 11);
  char c;
  assert_int_equal(nb_paho_recv(sv[0], &c, 1, 0), 1);
  int old = sv[0];
  assert_int_equal(nb_paho_close(sv[0]), 0);
  close(sv[1]);

  /* The next socket gets the lowest free number: the same one. */
  pair(sv);
  assert_int_equal(sv[0], old);
  struct pollfd p = {.fd = sv[0], .events = POLLIN};
  assert_int_equal(nb_paho_poll(&p, 1, 0), 0);
  put(sv[1], (const uint8_t *)"new", 3);
  char got[16];
  assert_int_equal(nb_paho_recv(sv[0], got, sizeof got, 0), 3);
  assert_memory_equal(got, "new", 3);
  assert_int_equal(nb_paho_close(sv[0]), 0);
  close(sv[1]);
}

static void test_poll_merges_kernel_and_buffered(void **state) {
  (void)state;
  int a[2], b[2];
  pair(a);
  pair(b);
  put(a[1], (const uint8_t *)"abc", 3);
  char c;
  assert_int_equal(nb_paho_recv(a[0], &c, 1, 0), 1);
  assert_true(kernel_empty(a[0]));

  /* a has buffered bytes, b nothing: one ready, without waiting. */
  struct pollfd p[2] = {{.fd = a[0], .events = POLLIN},
                        {.fd = b[0], .events = POLLIN}};
  assert_int_equal(nb_paho_poll(p, 2, 5000), 1);
  assert_true(p[0].revents & POLLIN);
  assert_int_equal(p[1].revents, 0);

  /* Now b has bytes in the kernel too: both. */
  put(b[1], (const uint8_t *)"x", 1);
  p[0].revents = p[1].revents = 0;
  assert_int_equal(nb_paho_poll(p, 2, 5000), 2);
  assert_true(p[1].revents & POLLIN);

  /* A POLLOUT-only poll (Paho's write check) is the kernel's answer. */
  struct pollfd w = {.fd = a[0], .events = POLLOUT};
  assert_int_equal(nb_paho_poll(&w, 1, 0), 1);
  assert_int_equal(w.revents, POLLOUT);

  /* MSG_PEEK and friends bypass the read-ahead: the kernel is empty. */
  errno = 0;
  assert_int_equal(nb_paho_recv(a[0], &c, 1, MSG_PEEK), -1);
  assert_int_equal(errno, EAGAIN);
  char got[4];
  assert_int_equal(nb_paho_recv(a[0], got, 4, 0), 2);
  assert_memory_equal(got, "bc", 2);

  for (int i = 0; i < 2; i++) {
    assert_int_equal(nb_paho_close(i == 0 ? a[0] : b[0]), 0);
    close(i == 0 ? a[1] : b[1]);
  }
}

static void test_pollout_after_whole_writes(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  int fl = fcntl(sv[1], F_GETFL);
  assert_int_equal(fcntl(sv[1], F_SETFL, fl | O_NONBLOCK), 0);
  char chunk[4096];
  memset(chunk, 'w', sizeof chunk);
  struct iovec iov = {.iov_base = chunk, .iov_len = sizeof chunk};

  /* A whole write: the next write check needs no system call, and says
   * writable. */
  assert_int_equal(nb_paho_writev(sv[0], &iov, 1), (ssize_t)sizeof chunk);
  struct pollfd w = {.fd = sv[0], .events = POLLOUT};
  assert_int_equal(nb_paho_poll(&w, 1, 0), 1);
  assert_int_equal(w.revents, POLLOUT);

  /* Fill the pair until a write comes back short or EAGAIN... */
  ssize_t r;
  do {
    r = nb_paho_writev(sv[0], &iov, 1);
  } while (r == (ssize_t)sizeof chunk);
  assert_true(r < (ssize_t)sizeof chunk);
  /* ...then the kernel answers, and it says full. */
  w.revents = 0;
  assert_int_equal(nb_paho_poll(&w, 1, 0), 0);
  assert_int_equal(w.revents, 0);

  /* Drained by the reader, a whole write makes it known writable again. */
  char sink[65536];
  while (read(sv[1], sink, sizeof sink) > 0)
    ;
  w.revents = 0;
  assert_int_equal(nb_paho_poll(&w, 1, 1000), 1);
  assert_int_equal(nb_paho_writev(sv[0], &iov, 1), (ssize_t)sizeof chunk);
  assert_int_equal(nb_paho_close(sv[0]), 0);

  /* Closing forgets it: a new socket with that number, full from the
   * start, is asked about and reported full. */
  int old = sv[0];
  close(sv[1]);
  int sv2[2];
  pair(sv2);
  assert_int_equal(sv2[0], old);
  while (write(sv2[0], chunk, sizeof chunk) > 0)
    ;
  w.revents = 0;
  assert_int_equal(nb_paho_poll(&w, 1, 0), 0);
  nb_paho_close(sv2[0]);
  close(sv2[1]);
}

static int64_t ms_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 +
         (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void *resume_later(void *arg) {
  (void)arg;
  struct timespec d = {0, 100 * 1000000L};
  nanosleep(&d, NULL);
  nb_paho_pause_reads(false);
  return NULL;
}

static void test_paused_reads(void **state) {
  (void)state;
  int sv[2];
  pair(sv);
  const uint8_t msg[4] = {1, 2, 3, 4};
  put(sv[1], msg, sizeof msg);
  uint8_t got[4];
  /* One byte read: the rest sits in the read-ahead, one more byte in the
   * kernel. */
  assert_int_equal(nb_paho_recv(sv[0], got, 1, 0), 1);
  put(sv[1], msg, 1);

  nb_paho_pause_reads(true);
  struct pollfd p = {.fd = sv[0], .events = POLLIN};
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* Neither the read-ahead nor the kernel's byte is reported... */
  assert_int_equal(nb_paho_poll(&p, 1, 60), 0);
  assert_int_equal(p.revents, 0);
  assert_true(ms_since(&t0) >= 50);
  /* ...but a write check still is. */
  struct pollfd w = {.fd = sv[0], .events = POLLOUT};
  assert_int_equal(nb_paho_poll(&w, 1, 0), 1);
  assert_true((w.revents & POLLOUT) != 0);

  /* Resuming from another thread ends a long poll at once, and the bytes
   * are there. */
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, resume_later, NULL), 0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  p.revents = 0;
  assert_int_equal(nb_paho_poll(&p, 1, 5000), 1);
  assert_true((p.revents & POLLIN) != 0);
  int64_t waited = ms_since(&t0);
  assert_true(waited >= 80 && waited < 2000);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(nb_paho_recv(sv[0], got, 4, 0), 4);
  assert_memory_equal(got, ((const uint8_t[]){2, 3, 4, 1}), 4);

  /* Paused again, a poll waits its time out with a byte in the kernel;
   * resumed, the byte shows at once. */
  put(sv[1], msg, 1);
  nb_paho_pause_reads(true);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  p.revents = 0;
  assert_int_equal(nb_paho_poll(&p, 1, 60), 0);
  assert_true(ms_since(&t0) >= 50);
  nb_paho_pause_reads(false);
  assert_int_equal(nb_paho_poll(&p, 1, 0), 1);
  close(sv[0]);
  close(sv[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_reads_take_one_recv),
      cmocka_unit_test(test_large_reads_go_straight_in),
      cmocka_unit_test(test_end_of_file_after_buffered_bytes),
      cmocka_unit_test(test_close_drops_unread_bytes),
      cmocka_unit_test(test_poll_merges_kernel_and_buffered),
      cmocka_unit_test(test_pollout_after_whole_writes),
      cmocka_unit_test(test_paused_reads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
