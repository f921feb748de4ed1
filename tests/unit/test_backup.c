/* Unit tests of the pure parts of `nimbus-agent backup` and `restore`
 * (terminal-agent/src/bk.h), no network: item name checks (every name a
 * snapshot gives is checked again before restore uses it), kinds, the
 * directory walk that refuses links and files on the way and never leaves
 * the target directory, streaming SHA-256, copies, ms <-> timespec, and the
 * hash cache file (round trip, odd paths, pruning, damaged lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk.h"
#include "nb_util.h"

/* ---- Helpers ----------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void tmpdir_make(char *buf, size_t cap) {
  snprintf(buf, cap, "/tmp/test_backup.XXXXXX");
  assert_non_null(mkdtemp(buf));
}

static void tmpdir_remove(const char *dir) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const void *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(nb_write_all(fd, p, n), 0);
  close(fd);
}

static bool name_ok(const char *s) {
  return nb_relpath_problem(s, strlen(s)) == NULL;
}

/* ---- Names ------------------------------------------------------------- */

static void test_names_valid(void **state) {
  (void)state;
  assert_true(name_ok("a"));
  assert_true(name_ok("Phone/photos/IMG_0001.jpg"));
  assert_true(name_ok("..a/b..c/...")); /* dots inside names are fine */
  assert_true(name_ok(".hidden/.x"));
  assert_true(name_ok("a b/c d "));  /* spaces are fine */
  assert_false(name_ok("a b/c\td")); /* a tab is a control character */
}

static void test_names_valid_utf8(void **state) {
  (void)state;
  assert_true(name_ok("Fotos/M\xc3\xbcnchen.jpg"));     /* ü */
  assert_true(name_ok("\xe5\x90\x8d\xe5\x89\x8d.txt")); /* 名前 */
  assert_true(name_ok("\xf0\x9f\x93\xb7/x"));           /* U+1F4F7 */
  assert_true(name_ok("\xf4\x8f\xbf\xbf"));             /* U+10FFFF */
  char big[NB_RELPATH_MAX + 2];
  memset(big, 'x', sizeof big);
  for (size_t i = 100; i < NB_RELPATH_MAX; i += 100)
    big[i] = '/';
  assert_null(nb_relpath_problem(big, NB_RELPATH_MAX));
  assert_non_null(nb_relpath_problem(big, NB_RELPATH_MAX + 1));
}

static void test_names_invalid(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",     "/etc/passwd", "../evil", "a/../../evil", "a/..", "..",
      ".",    "./a",         "a/./b",   "a//b",         "a/",   "/",
      "a\nb", "a\x01",       "a\x7f",   "\x1b[31m",     "a/b/", "//",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (nb_relpath_problem(bad[i], strlen(bad[i])) == NULL)
      fail_msg("name %zu \"%s\" was accepted", i, bad[i]);
  }
  /* A NUL inside the name's bytes. */
  assert_non_null(nb_relpath_problem("a\0b", 3));
  assert_non_null(nb_relpath_problem(NULL, 0));
}

static void test_names_invalid_utf8(void **state) {
  (void)state;
  static const char *const bad[] = {
      "\xc0\xaf",         /* overlong '/' */
      "\xe0\x80\xaf",     /* overlong '/' again */
      "\xc1\xbf",         /* overlong */
      "\xed\xa0\x80",     /* a surrogate */
      "\xf4\x90\x80\x80", /* above U+10FFFF */
      "\xf8\x88\x80\x80\x80",
      "\xe2\x82", /* cut short */
      "a\x80",    /* a lone continuation byte */
      "\xff",     /* never valid */
      "x/\xc3",   /* cut short at the end */
      "\xc3\x28", /* not a continuation */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *why = nb_relpath_problem(bad[i], strlen(bad[i]));
    if (why == NULL)
      fail_msg("invalid UTF-8 %zu was accepted", i);
    assert_non_null(strstr(why, "UTF-8"));
  }
}

static void test_names_reasons(void **state) {
  (void)state;
  assert_non_null(strstr(nb_relpath_problem("../x", 4), "\"..\""));
  assert_non_null(strstr(nb_relpath_problem("/x", 2), "absolute"));
  assert_non_null(strstr(nb_relpath_problem("a//x", 4), "empty component"));
  assert_non_null(strstr(nb_relpath_problem("a\x01", 2), "control"));
}

static void test_kinds(void **state) {
  (void)state;
  assert_string_equal(bk_kind_of("Phone/contacts.vcf"), "contact");
  assert_string_equal(bk_kind_of("A.VCF"), "contact");
  assert_string_equal(bk_kind_of("sms/2024.sms.jsonl"), "sms");
  assert_string_equal(bk_kind_of("X.SMS.JSONL"), "sms");
  assert_string_equal(bk_kind_of("log.jsonl"), "file");
  assert_string_equal(bk_kind_of("p/IMG_1.JPG"), "photo");
  assert_string_equal(bk_kind_of("a.jpeg"), "photo");
  assert_string_equal(bk_kind_of("a.heic"), "photo");
  assert_string_equal(bk_kind_of("raw.dng"), "photo");
  assert_string_equal(bk_kind_of("scan.tiff"), "photo");
  assert_string_equal(bk_kind_of("v/clip.mp4"), "video");
  assert_string_equal(bk_kind_of("clip.MOV"), "video");
  assert_string_equal(bk_kind_of("a.3gp"), "video");
  assert_string_equal(bk_kind_of("a.webm"), "video");
  assert_string_equal(bk_kind_of("a.tar.gz"), "file");
  assert_string_equal(bk_kind_of("README"), "file");
  /* The last component counts, not a directory's name. */
  assert_string_equal(bk_kind_of("pics.jpg/notes"), "file");
  /* A dot file is no extension. */
  assert_string_equal(bk_kind_of(".jpg"), "file");
  assert_string_equal(bk_kind_of(".vcf"), "file");
  assert_string_equal(bk_kind_of("a."), "file");
  assert_true(bk_kind_valid("photo", 5));
  assert_true(bk_kind_valid("sms", 3));
  assert_false(bk_kind_valid("photos", 6));
  assert_false(bk_kind_valid("", 0));
}

static void test_hex(void **state) {
  (void)state;
  assert_true(bk_hex_valid(BK_EMPTY_SHA256, 64));
  char up[65];
  memcpy(up, BK_EMPTY_SHA256, 65);
  up[0] = 'E';
  assert_false(bk_hex_valid(up, 64)); /* lowercase only */
  assert_false(bk_hex_valid(BK_EMPTY_SHA256, 63));
  uint8_t b[32], e[32];
  assert_int_equal(nb_unhex32(up, b), 0); /* either case decodes */
  nb_sha256("", 0, e);
  assert_memory_equal(b, e, 32);
  up[5] = 'g';
  assert_int_equal(nb_unhex32(up, b), -1);
}

/* ---- The directory walk ------------------------------------------------ */

static void test_open_parent_creates(void **state) {
  (void)state;
  char dir[64], err[256];
  tmpdir_make(dir, sizeof dir);
  int root = open(dir, O_RDONLY | O_DIRECTORY);
  assert_true(root >= 0);
  const char *base = NULL;
  int fd =
      bk_open_parent(root, "Phone/photos/a.jpg", true, &base, err, sizeof err);
  assert_true(fd >= 0);
  assert_string_equal(base, "a.jpg");
  int f = openat(fd, base, O_WRONLY | O_CREAT | O_NOFOLLOW, 0644);
  assert_true(f >= 0);
  close(f);
  close(fd);
  char p[200];
  snprintf(p, sizeof p, "%s/Phone/photos/a.jpg", dir);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  /* A name without a directory: the root itself. */
  fd = bk_open_parent(root, "top.txt", false, &base, err, sizeof err);
  assert_true(fd >= 0);
  assert_string_equal(base, "top.txt");
  close(fd);
  /* Missing and not to be created. */
  errno = 0;
  fd = bk_open_parent(root, "nope/deeper/x", false, &base, err, sizeof err);
  assert_int_equal(fd, -1);
  assert_int_equal(errno, ENOENT);
  snprintf(p, sizeof p, "%s/nope", dir);
  assert_int_equal(stat(p, &st), -1);
  close(root);
  tmpdir_remove(dir);
}

/* A link inside the target directory is never followed: a snapshot item
 * "Phone/x" must not land in the link's target. */
static void test_open_parent_refuses_links(void **state) {
  (void)state;
  char dir[64], outside[64], err[256], p[200], q[200];
  tmpdir_make(dir, sizeof dir);
  tmpdir_make(outside, sizeof outside);
  snprintf(p, sizeof p, "%s/Phone", dir);
  assert_int_equal(symlink(outside, p), 0);
  snprintf(p, sizeof p, "%s/a", dir);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/a/up", dir);
  assert_int_equal(symlink("..", p), 0);
  snprintf(p, sizeof p, "%s/file", dir);
  write_file(p, "x", 1);
  int root = open(dir, O_RDONLY | O_DIRECTORY);
  assert_true(root >= 0);
  const char *base;
  static const char *const names[] = {"Phone/x", "Phone/new/x", "a/up/x",
                                      "a/up/a/up/x", "file/x"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    errno = 0;
    int fd = bk_open_parent(root, names[i], true, &base, err, sizeof err);
    if (fd >= 0)
      fail_msg("%s went through a link or a file", names[i]);
    assert_true(errno == ELOOP || errno == ENOTDIR);
    assert_non_null(strstr(err, "not a directory"));
  }
  /* Nothing was made outside. */
  snprintf(q, sizeof q, "%s/new", outside);
  struct stat st;
  assert_int_equal(stat(q, &st), -1);
  close(root);
  tmpdir_remove(dir);
  tmpdir_remove(outside);
}

/* ---- Files ------------------------------------------------------------- */

static void test_hash_fd(void **state) {
  (void)state;
  char dir[64], p[128];
  tmpdir_make(dir, sizeof dir);
  snprintf(p, sizeof p, "%s/f", dir);
  uint8_t buf[100], out[32], want[32];
  int64_t n = -1;

  write_file(p, "", 0);
  int fd = open(p, O_RDONLY);
  assert_int_equal(bk_hash_fd(fd, buf, sizeof buf, out, &n, NULL, NULL), 0);
  close(fd);
  assert_int_equal(n, 0);
  char hex[65];
  nb_hex(out, 32, hex);
  assert_string_equal(hex, BK_EMPTY_SHA256);

  write_file(p, "abc", 3);
  fd = open(p, O_RDONLY);
  assert_int_equal(bk_hash_fd(fd, buf, sizeof buf, out, &n, NULL, NULL), 0);
  close(fd);
  nb_hex(out, 32, hex);
  assert_string_equal(
      hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  /* Larger than the buffer many times over, odd length. */
  size_t big = 1000 * 1000 + 7;
  uint8_t *data = malloc(big);
  assert_non_null(data);
  for (size_t i = 0; i < big; i++)
    data[i] = (uint8_t)(i * 31 + (i >> 9));
  write_file(p, data, big);
  nb_sha256(data, big, want);
  fd = open(p, O_RDONLY);
  assert_int_equal(bk_hash_fd(fd, buf, sizeof buf, out, &n, NULL, NULL), 0);
  close(fd);
  assert_int_equal(n, (int64_t)big);
  assert_memory_equal(out, want, 32);
  free(data);
  tmpdir_remove(dir);
}

static void test_copy_fd(void **state) {
  (void)state;
  char dir[64], a[128], b[128];
  tmpdir_make(dir, sizeof dir);
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  size_t n = 3 * SC_SEGMENT + 11;
  uint8_t *data = malloc(n), *back = malloc(n);
  assert_non_null(data);
  assert_non_null(back);
  for (size_t i = 0; i < n; i++)
    data[i] = (uint8_t)(i ^ (i >> 8));
  write_file(a, data, n);
  int in = open(a, O_RDONLY), out = open(b, O_RDWR | O_CREAT | O_TRUNC, 0644);
  assert_int_equal(bk_copy_fd(in, out, (int64_t)n), 0);
  assert_int_equal(pread(out, back, n, 0), (ssize_t)n);
  assert_memory_equal(back, data, n);
  /* Asked for more than there is. */
  errno = 0;
  assert_int_equal(bk_copy_fd(in, out, (int64_t)n + 1), -1);
  assert_int_equal(errno, EIO);
  close(in);
  close(out);
  free(data);
  free(back);
  tmpdir_remove(dir);
}

static void test_times(void **state) {
  (void)state;
  int64_t s, ns;
  assert_int_equal(bk_ms_of_timespec(1700000000, 123999999), 1700000000123);
  bk_timespec_of_ms(1700000000123, &s, &ns);
  assert_int_equal(s, 1700000000);
  assert_int_equal(ns, 123000000);
  /* Before 1970: rounds down, nsec stays in 0..999999999. */
  bk_timespec_of_ms(-1, &s, &ns);
  assert_int_equal(s, -1);
  assert_int_equal(ns, 999000000);
  assert_int_equal(bk_ms_of_timespec(s, ns), -1);
  bk_timespec_of_ms(-1500, &s, &ns);
  assert_int_equal(s, -2);
  assert_int_equal(ns, 500000000);
  assert_int_equal(bk_ms_of_timespec(-2, 500000000), -1500);
}

/* ---- The hash cache ---------------------------------------------------- */

static void sha_of(const char *s, uint8_t out[32]) {
  nb_sha256(s, strlen(s), out);
}

static void test_hcache_round_trip(void **state) {
  (void)state;
  char dir[64], err[256];
  tmpdir_make(dir, sizeof dir);
  bk_hcache c;
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 0);
  uint8_t h1[32], h2[32], h3[32];
  sha_of("one", h1);
  sha_of("two", h2);
  sha_of("three", h3);
  /* Paths with a space, a newline, a percent sign, UTF-8. */
  const char *p1 = "/data/My Photos/a.jpg";
  const char *p2 = "/data/odd\nname%41.txt";
  const char *p3 = "/data/M\xc3\xbcnchen/\x01x";
  assert_int_equal(bk_hcache_put(&c, p1, 10, 1700000000123456789, 42, h1), 0);
  assert_int_equal(bk_hcache_put(&c, p2, 0, -5, 7, h2), 0);
  assert_int_equal(bk_hcache_put(&c, p3, 1 << 30, 1, 9, h3), 0);
  /* Replacing keeps one entry. */
  assert_int_equal(bk_hcache_put(&c, p1, 11, 1700000000123456789, 42, h1), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(bk_hcache_save(&c, err, sizeof err), 0);
  bk_hcache_free(&c);

  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.bad_lines, 0);
  const uint8_t *g = bk_hcache_get(&c, p1, 11, 1700000000123456789, 42);
  assert_non_null(g);
  assert_memory_equal(g, h1, 32);
  g = bk_hcache_get(&c, p2, 0, -5, 7);
  assert_non_null(g);
  assert_memory_equal(g, h2, 32);
  g = bk_hcache_get(&c, p3, 1 << 30, 1, 9);
  assert_non_null(g);
  assert_memory_equal(g, h3, 32);
  /* Any part of the key differing is a miss. */
  assert_null(bk_hcache_get(&c, p1, 10, 1700000000123456789, 42));
  assert_null(bk_hcache_get(&c, p1, 11, 1700000000123456788, 42));
  assert_null(bk_hcache_get(&c, p1, 11, 1700000000123456789, 43));
  assert_null(bk_hcache_get(&c, "/data/other", 11, 1, 42));
  bk_hcache_free(&c);
  tmpdir_remove(dir);
}

/* Entries not used in a run survive a save only while their file is still
 * exactly as recorded. */
static void test_hcache_prune(void **state) {
  (void)state;
  char dir[64], err[256], keep[128], gone[128], changed[128];
  tmpdir_make(dir, sizeof dir);
  snprintf(keep, sizeof keep, "%s/keep", dir);
  snprintf(gone, sizeof gone, "%s/gone", dir);
  snprintf(changed, sizeof changed, "%s/changed", dir);
  write_file(keep, "k", 1);
  write_file(gone, "g", 1);
  write_file(changed, "c", 1);
  struct stat sk, sg, sc;
  assert_int_equal(stat(keep, &sk), 0);
  assert_int_equal(stat(gone, &sg), 0);
  assert_int_equal(stat(changed, &sc), 0);
  uint8_t h[32];
  sha_of("x", h);
  bk_hcache c;
  assert_int_equal(bk_hcache_load(&c, dir), 0);
#define MT(st)                                                                 \
  ((int64_t)(st).st_mtim.tv_sec * 1000000000 + (st).st_mtim.tv_nsec)
  bk_hcache_put(&c, keep, sk.st_size, MT(sk), sk.st_ino, h);
  bk_hcache_put(&c, gone, sg.st_size, MT(sg), sg.st_ino, h);
  bk_hcache_put(&c, changed, sc.st_size, MT(sc), sc.st_ino, h);
  assert_int_equal(bk_hcache_save(&c, err, sizeof err), 0);
  bk_hcache_free(&c);

  unlink(gone);
  write_file(changed, "cc", 2);
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 3);
  c.dirty = true; /* as a run that hashed something would leave it */
  assert_int_equal(bk_hcache_save(&c, err, sizeof err), 0);
  bk_hcache_free(&c);

  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 1);
  assert_non_null(bk_hcache_get(&c, keep, sk.st_size, MT(sk), sk.st_ino));
  bk_hcache_free(&c);
#undef MT
  tmpdir_remove(dir);
}

static void test_hcache_damaged(void **state) {
  (void)state;
  char dir[64], p[128];
  tmpdir_make(dir, sizeof dir);
  snprintf(p, sizeof p, "%s/hash-cache", dir);
  uint8_t h[32];
  char hex[65];
  sha_of("ok", h);
  nb_hex(h, 32, hex);
  char text[2048];
  snprintf(text, sizeof text,
           "nimbus-hash-cache 1\n"
           "%s 5 100 7 /good/one\n"
           "zz%s 5 100 7 /bad/hex\n"
           "%s five 100 7 /bad/size\n"
           "%s 5 100 7 relative/path\n"
           "%s 5 100 7 /bad/escape%%4\n"
           "%s 5 100\n"
           "%s 6 100 8 /good/two%%20x\n",
           hex, hex + 2, hex, hex, hex, hex, hex);
  write_file(p, text, strlen(text));
  bk_hcache c;
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.bad_lines, 5);
  assert_non_null(bk_hcache_get(&c, "/good/one", 5, 100, 7));
  assert_non_null(bk_hcache_get(&c, "/good/two x", 6, 100, 8));
  bk_hcache_free(&c);

  /* Another header: nothing is trusted. */
  snprintf(text, sizeof text, "nimbus-hash-cache 2\n%s 5 100 7 /good/one\n",
           hex);
  write_file(p, text, strlen(text));
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 0);
  bk_hcache_free(&c);
  tmpdir_remove(dir);
}

/* Many entries: the table grows and every one is still found. */
static void test_hcache_many(void **state) {
  (void)state;
  char dir[64], err[256], p[64];
  tmpdir_make(dir, sizeof dir);
  bk_hcache c;
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  uint8_t h[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(p, sizeof p, "/d/%d", i);
    memset(h, i & 0xff, sizeof h);
    assert_int_equal(bk_hcache_put(&c, p, i, i, (uint64_t)i, h), 0);
  }
  assert_int_equal(bk_hcache_save(&c, err, sizeof err), 0);
  bk_hcache_free(&c);
  assert_int_equal(bk_hcache_load(&c, dir), 0);
  assert_int_equal(c.n, 5000);
  for (int i = 0; i < 5000; i++) {
    snprintf(p, sizeof p, "/d/%d", i);
    const uint8_t *g = bk_hcache_get(&c, p, i, i, (uint64_t)i);
    assert_non_null(g);
    assert_int_equal(g[31], i & 0xff);
  }
  bk_hcache_free(&c);
  tmpdir_remove(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_valid),
      cmocka_unit_test(test_names_valid_utf8),
      cmocka_unit_test(test_names_invalid),
      cmocka_unit_test(test_names_invalid_utf8),
      cmocka_unit_test(test_names_reasons),
      cmocka_unit_test(test_kinds),
      cmocka_unit_test(test_hex),
      cmocka_unit_test(test_open_parent_creates),
      cmocka_unit_test(test_open_parent_refuses_links),
      cmocka_unit_test(test_hash_fd),
      cmocka_unit_test(test_copy_fd),
      cmocka_unit_test(test_times),
      cmocka_unit_test(test_hcache_round_trip),
      cmocka_unit_test(test_hcache_prune),
      cmocka_unit_test(test_hcache_damaged),
      cmocka_unit_test(test_hcache_many),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
