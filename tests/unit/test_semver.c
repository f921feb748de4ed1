/* Unit tests of the semantic-version order (common/src/semver.c), the one
 * by which the cloud picks the newest agent package and decides that a
 * terminal already runs what it would offer: what is a version and what
 * is not, and SemVer 2.0.0's precedence, its own example chain included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_semver.h"

#include <stdio.h>
#include <string.h>

static bool valid(const char *s) { return nb_semver_valid(s, strlen(s)); }

static void test_semver_valid(void **state) {
  (void)state;
  static const char *const good[] = {"0.0.0",
                                     "1.2.3",
                                     "1.10.0",
                                     "10.20.30",
                                     "1.0.0-alpha",
                                     "1.0.0-alpha.1",
                                     "1.0.0-0.3.7",
                                     "1.0.0-x.7.z.92",
                                     "1.0.0-x-y-z.--",
                                     "1.0.0+20130313144700",
                                     "1.0.0-beta+exp.sha.5114f85",
                                     "1.0.0+21AF26D3----117B344092BD",
                                     "1.0.0-rc.1+build.001",
                                     "99999999999999999999999.0.0"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!valid(good[i]))
      fail_msg("expected \"%s\" to be a version", good[i]);
  static const char *const bad[] = {
      "",          "1",      "1.2",      "1.2.3.4",
      "v1.2.3",    "01.2.3", "1.02.3",   "1.2.03",
      "1.2.3-",    "1.2.3+", "1.2.3-01", "1.2.3-a..b",
      "1.2.3-a.",  "1.2.3 ", " 1.2.3",   "1.2.3-\xc3\xa9",
      "1.2.3+a+b", "1..3",   "-1.2.3",   "1.2.3-a_b",
      "a.b.c",     "1.2.-3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (valid(bad[i]))
      fail_msg("expected \"%s\" not to be a version", bad[i]);
  /* The length bound, and bytes after the given length do not count. */
  char longv[80];
  memset(longv, '1', sizeof longv);
  memcpy(longv, "1.2.", 4);
  longv[NB_SEMVER_MAX] = '\0';
  assert_true(nb_semver_valid(longv, NB_SEMVER_MAX));
  assert_false(nb_semver_valid(longv, NB_SEMVER_MAX + 1));
  assert_true(nb_semver_valid("1.2.3garbage", 5));
  assert_false(nb_semver_valid(NULL, 0));
  /* A build suffix of numeric identifiers may have leading zeros. */
  assert_true(valid("1.0.0+001"));
}

static int sign(int v) { return v < 0 ? -1 : (v > 0 ? 1 : 0); }

static void expect_order(const char *lo, const char *hi) {
  int c = sign(nb_semver_cmp(lo, hi)), r = sign(nb_semver_cmp(hi, lo));
  if (c != -1 || r != 1)
    fail_msg("expected %s < %s: cmp gave %d and %d", lo, hi, c, r);
}

static void expect_equal(const char *a, const char *b) {
  int c = nb_semver_cmp(a, b), r = nb_semver_cmp(b, a);
  if (c != 0 || r != 0)
    fail_msg("expected %s == %s: cmp gave %d and %d", a, b, c, r);
}

static void test_semver_order(void **state) {
  (void)state;
  /* Numbers as numbers, not text. */
  expect_order("1.9.3", "1.10.0");
  expect_order("1.2.9", "1.2.10");
  expect_order("9.0.0", "10.0.0");
  expect_order("0.9.9", "1.0.0");
  expect_order("2.0.0", "99999999999999999999999.0.0");
  /* SemVer 2.0.0's own chain (section 11). */
  static const char *const chain[] = {
      "1.0.0-alpha",  "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
      "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1",       "1.0.0",
      "1.0.1-alpha",  "1.0.1",         "1.1.0-rc.1",       "1.1.0"};
  size_t n = sizeof chain / sizeof chain[0];
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      expect_order(chain[i], chain[j]);
  /* Numeric identifiers before alphanumeric ones, and as numbers. */
  expect_order("1.0.0-2", "1.0.0-10");
  expect_order("1.0.0-999", "1.0.0-a");
  expect_order("1.0.0-rc.9", "1.0.0-rc.10");
  expect_order("1.0.0-rc1", "1.0.0-rc2");
  expect_order("1.0.0-A", "1.0.0-a");             /* ASCII */
  expect_order("1.0.0-alpha.1", "1.0.0-alpha-1"); /* "alpha" < "alpha-1" */
  /* Build metadata does not count. */
  expect_equal("1.0.0+a", "1.0.0+b");
  expect_equal("1.0.0", "1.0.0+build.7");
  expect_equal("1.0.0-rc.1+x", "1.0.0-rc.1");
  expect_order("1.0.0-rc.1+zzz", "1.0.0+aaa");
  expect_equal("1.2.3", "1.2.3");
  /* Invalid versions before valid ones, bytewise among themselves. */
  expect_order("v9.9.9", "0.0.0");
  expect_order("", "0.0.1");
  expect_order("abc", "abd");
  expect_equal("junk", "junk");
}

static void test_semver_core_len(void **state) {
  (void)state;
  assert_int_equal(nb_semver_core_len("1.2.3", 5), 5);
  assert_int_equal(nb_semver_core_len("1.2.3+b.1", 9), 5);
  assert_int_equal(nb_semver_core_len("1.2.3-rc.1+b", 12), 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_semver_valid),
      cmocka_unit_test(test_semver_order),
      cmocka_unit_test(test_semver_core_len),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
