/* Unit tests of common/'s text checks: UTF-8 validity and the relative
 * paths that snapshot items may be named by (the worker refuses the rest,
 * the agent refuses them again before it writes anything). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_util.h"

#include <string.h>

static bool utf8(const char *s) { return nb_valid_utf8(s, strlen(s)); }

static void test_utf8(void **state) {
  (void)state;
  assert_true(utf8(""));
  assert_true(utf8("plain ascii"));
  assert_true(utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xb7"));
  assert_true(utf8("\xf4\x8f\xbf\xbf"));   /* U+10FFFF */
  assert_false(utf8("\xc3"));              /* truncated */
  assert_false(utf8("\xe2\x82"));          /* truncated */
  assert_false(utf8("\x80"));              /* lone continuation */
  assert_false(utf8("\xc0\xaf"));          /* overlong '/' */
  assert_false(utf8("\xe0\x80\xaf"));      /* overlong '/' */
  assert_false(utf8("\xed\xa0\x80"));      /* surrogate */
  assert_false(utf8("\xf4\x90\x80\x80"));  /* above U+10FFFF */
  assert_false(utf8("\xff"));
  /* An embedded NUL is a character, refused by the path check instead. */
  assert_true(nb_valid_utf8("a\0b", 3));
}

static const char *problem(const char *s) {
  return nb_relpath_problem(s, strlen(s));
}

static void test_relpath_ok(void **state) {
  (void)state;
  assert_null(problem("a"));
  assert_null(problem("DCIM/2024/IMG_0001.jpg"));
  assert_null(problem("..a/b.."));
  assert_null(problem(".hidden/.x"));
  assert_null(problem("caf\xc3\xa9/men\xc3\xbc.txt"));
  char longest[NB_RELPATH_MAX + 1];
  memset(longest, 'x', NB_RELPATH_MAX);
  assert_null(nb_relpath_problem(longest, NB_RELPATH_MAX));
  assert_non_null(nb_relpath_problem(longest, NB_RELPATH_MAX + 1));
}

static void test_relpath_refused(void **state) {
  (void)state;
  assert_string_equal(problem(""), "is empty");
  assert_non_null(nb_relpath_problem(NULL, 0));
  assert_string_equal(problem("/etc/passwd"), "is absolute (starts with /)");
  assert_string_equal(problem(".."), "has a \"..\" component");
  assert_string_equal(problem("a/../../b"), "has a \"..\" component");
  assert_string_equal(problem("a/.."), "has a \"..\" component");
  assert_string_equal(problem("./a"), "has a \".\" component");
  assert_string_equal(problem("a/./b"), "has a \".\" component");
  assert_string_equal(problem("a//b"), "has an empty component (//)");
  assert_string_equal(problem("a/"), "ends with /");
  assert_string_equal(problem("a\nb"), "holds a control character");
  assert_string_equal(problem("a\x7f"), "holds a control character");
  assert_string_equal(nb_relpath_problem("a\0b", 3),
                      "holds a control character");
  assert_string_equal(problem("a\xff"), "is not valid UTF-8");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_relpath_ok),
      cmocka_unit_test(test_relpath_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
