/* Unit tests of common/'s text checks: UTF-8 validity, the one check of
 * free-text names (no control character, C1 included), the relative paths
 * that snapshot items may be named by (the worker refuses the rest, the
 * agent refuses them again before it writes anything) and the path order
 * that finds a name which is also another item's directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_util.h"

#include <stdlib.h>
#include <string.h>

static bool utf8(const char *s) { return nb_valid_utf8(s, strlen(s)); }

static void test_utf8(void **state) {
  (void)state;
  assert_true(utf8(""));
  assert_true(utf8("plain ascii"));
  assert_true(utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xb7"));
  assert_true(utf8("\xf4\x8f\xbf\xbf"));  /* U+10FFFF */
  assert_false(utf8("\xc3"));             /* truncated */
  assert_false(utf8("\xe2\x82"));         /* truncated */
  assert_false(utf8("\x80"));             /* lone continuation */
  assert_false(utf8("\xc0\xaf"));         /* overlong '/' */
  assert_false(utf8("\xe0\x80\xaf"));     /* overlong '/' */
  assert_false(utf8("\xed\xa0\x80"));     /* surrogate */
  assert_false(utf8("\xf4\x90\x80\x80")); /* above U+10FFFF */
  assert_false(utf8("\xff"));
  /* An embedded NUL is a character, refused by the path check instead. */
  assert_true(nb_valid_utf8("a\0b", 3));
}

static const char *text(const char *s) { return nb_text_problem(s, strlen(s)); }

static void test_text_controls(void **state) {
  (void)state;
  assert_null(text(""));
  assert_null(nb_text_problem(NULL, 0));
  assert_null(text("Holiday 2024 (caf\xc3\xa9) \xe2\x82\xac \xf0\x9f\x93\xb7"));
  assert_null(text("\xc2\xa0"));     /* U+00A0, the first after C1 */
  assert_null(text("~"));            /* U+007E, the last before DEL */
  assert_null(text("\xe2\x80\xa8")); /* U+2028 is a separator, not Cc */
  /* Every C0 character, DEL, and every C1 character U+0080-U+009F. */
  for (unsigned cp = 0; cp <= 0x9f; cp++) {
    char b[3];
    size_t n;
    if (cp < 0x80) {
      b[0] = (char)cp;
      n = 1;
    } else {
      b[0] = (char)(0xc0 | cp >> 6);
      b[1] = (char)(0x80 | (cp & 0x3f));
      n = 2;
    }
    bool control = cp < 0x20 || cp >= 0x7f;
    assert_int_equal(nb_is_control(cp), control);
    const char *why = nb_text_problem(b, n);
    if (control && (why == NULL || strcmp(why, "holds a control character")))
      fail_msg("U+%04X: %s", cp, why ? why : "accepted");
    if (!control && why != NULL)
      fail_msg("U+%04X refused: %s", cp, why);
  }
  assert_false(nb_is_control(0xa0));
  assert_false(nb_is_control(0x202e));
  /* CSI in the middle of a name, as a terminal would act on it. */
  assert_string_equal(text("a\xc2\x9b"
                           "31mred"),
                      "holds a control character");
  /* A lone C1 byte is not UTF-8 at all. */
  assert_string_equal(text("a\x9b"
                           "31m"),
                      "is not valid UTF-8");
  assert_string_equal(text("\xc3"), "is not valid UTF-8");
  assert_string_equal(text("\xc0\x9b"), "is not valid UTF-8"); /* overlong */
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
  for (size_t i = 200; i < NB_RELPATH_MAX; i += 200)
    longest[i] = '/';
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
  assert_string_equal(problem("DCIM/\xc2\x9b"
                              "2J.jpg"),
                      "holds a control character");
  assert_string_equal(problem("\xc2\x85"), "holds a control character");
  assert_string_equal(problem("a/\xc2\x80/b"), "holds a control character");
  assert_string_equal(problem("a/\xc2\x9f"), "holds a control character");
}

/* A component of 255 bytes is the most a filesystem can name (NAME_MAX);
 * 256 can never be restored. */
static void test_relpath_component(void **state) {
  (void)state;
  char b[NB_RELPATH_MAX];
  memset(b, 'x', sizeof b);
  assert_null(nb_relpath_problem(b, NB_COMPONENT_MAX));
  assert_string_equal(nb_relpath_problem(b, NB_COMPONENT_MAX + 1),
                      "has a component longer than 255 bytes");
  /* In the middle and at the end of a longer name. */
  memcpy(b, "d/", 2);
  b[2 + NB_COMPONENT_MAX] = '/';
  assert_null(nb_relpath_problem(b, 2 + NB_COMPONENT_MAX + 2));
  b[2 + NB_COMPONENT_MAX] = 'x';
  b[2 + NB_COMPONENT_MAX + 1] = '/';
  assert_string_equal(nb_relpath_problem(b, 2 + NB_COMPONENT_MAX + 3),
                      "has a component longer than 255 bytes");
  memset(b, 'x', sizeof b);
  b[0] = 'd';
  b[1] = '/';
  assert_string_equal(nb_relpath_problem(b, 2 + NB_COMPONENT_MAX + 1),
                      "has a component longer than 255 bytes");
  /* 255 bytes of a three-byte character (85 of them) are fine. */
  for (size_t i = 0; i < NB_COMPONENT_MAX; i += 3)
    memcpy(b + i, "\xe5\x90\x8d", 3);
  assert_null(nb_relpath_problem(b, NB_COMPONENT_MAX));
  /* The longest name: 16 components of 255 bytes and 15 slashes, then 1. */
  memset(b, 'y', sizeof b);
  for (size_t i = NB_COMPONENT_MAX; i < sizeof b - 1; i += NB_COMPONENT_MAX + 1)
    b[i] = '/';
  assert_null(nb_relpath_problem(b, 16 * NB_COMPONENT_MAX + 15));
  assert_string_equal(nb_relpath_problem(b, 16 * NB_COMPONENT_MAX + 16),
                      "has a component longer than 255 bytes");
}

static int cmp(const char *a, const char *b) {
  int d = nb_relpath_cmp(a, strlen(a), b, strlen(b));
  return (d > 0) - (d < 0);
}

static int cmp_qsort(const void *a, const void *b) {
  return cmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_relpath_order(void **state) {
  (void)state;
  assert_int_equal(cmp("a", "a"), 0);
  assert_int_equal(cmp("a", "b"), -1);
  assert_int_equal(cmp("b", "a"), 1);
  assert_int_equal(cmp("a", "a/b"), -1);   /* a prefix first */
  assert_int_equal(cmp("a/b", "a-b"), -1); /* '/' below '-' (0x2d) */
  assert_int_equal(cmp("a/b", "a.b"), -1); /* and '.' (0x2e) */
  assert_int_equal(cmp("a/z", "a!"), -1);  /* and '!' (0x21) */
  assert_int_equal(cmp("a-b", "a/b"), 1);
  assert_int_equal(cmp("a\xc3\xa9", "a/"), 1);
  assert_true(nb_relpath_within("a", 1, "a/b", 3));
  assert_true(nb_relpath_within("a/b", 3, "a/b/c/d", 7));
  assert_false(nb_relpath_within("a", 1, "a", 1));
  assert_false(nb_relpath_within("a", 1, "ab", 2));
  assert_false(nb_relpath_within("a", 1, "a-b", 3));
  assert_false(nb_relpath_within("a/b", 3, "a/c/b", 5));
  /* Sorted in path order, a name's contents follow it at once, so a
   * neighbour test finds "a" and "a/b" even with "a-b" and "a.b" (which
   * bytewise order would put between them) in the list. */
  const char *names[] = {"a.b", "a/b", "b", "a-b", "a", "a!", "a/b/c"};
  size_t n = sizeof names / sizeof names[0];
  qsort(names, n, sizeof names[0], cmp_qsort);
  const char *want[] = {"a", "a/b", "a/b/c", "a!", "a-b", "a.b", "b"};
  for (size_t i = 0; i < n; i++)
    assert_string_equal(names[i], want[i]);
  size_t clashes = 0;
  for (size_t i = 1; i < n; i++)
    clashes += nb_relpath_within(names[i - 1], strlen(names[i - 1]), names[i],
                                 strlen(names[i]));
  assert_int_equal(clashes, 2); /* a above a/b, a/b above a/b/c */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_relpath_ok),
      cmocka_unit_test(test_relpath_refused),
      cmocka_unit_test(test_text_controls),
      cmocka_unit_test(test_relpath_component),
      cmocka_unit_test(test_relpath_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
