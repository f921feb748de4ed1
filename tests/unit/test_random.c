/* Unit tests of nb_random_bytes (common/src/util.c): bytes served from a
 * pool per thread never repeat, across refills, and a forked child never
 * gets its parent's pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_util.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_draws_differ_across_refills(void **state) {
  (void)state;
  enum { N = 200 }; /* 200 x 16 bytes: several refills of the pool */
  static unsigned char got[N][16];
  for (int i = 0; i < N; i++)
    assert_int_equal(nb_random_bytes(got[i], sizeof got[i]), 0);
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      assert_memory_not_equal(got[i], got[j], sizeof got[i]);
  /* Large requests go straight to OpenSSL. */
  unsigned char big[4096];
  assert_int_equal(nb_random_bytes(big, sizeof big), 0);
  assert_memory_not_equal(big, big + 2048, 2048);
}

static void test_child_of_fork_draws_its_own(void **state) {
  (void)state;
  unsigned char first[16], parent[16], child[16];
  assert_int_equal(nb_random_bytes(first, sizeof first), 0); /* pool filled */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    unsigned char b[16];
    int ok = nb_random_bytes(b, sizeof b) == 0 &&
             write(fds[1], b, sizeof b) == (ssize_t)sizeof b;
    _exit(ok ? 0 : 1);
  }
  assert_int_equal(nb_random_bytes(parent, sizeof parent), 0);
  assert_int_equal(read(fds[0], child, sizeof child), (ssize_t)sizeof child);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  /* Same pool in both would have handed both the same next bytes. */
  assert_memory_not_equal(parent, child, sizeof parent);
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_draws_differ_across_refills),
      cmocka_unit_test(test_child_of_fork_draws_its_own),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
