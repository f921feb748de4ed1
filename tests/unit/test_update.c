/* Unit tests of loading the agent's pure parts (terminal-agent/src/pkg.c,
 * update.c), no network: a package's checks against SPEC.md's test vector
 * (the package "hello" signed by the key of seed 0x00..0x1f), the version
 * decision, the extractor against hostile archives made here with
 * libarchive's writer (links, devices, absolute paths, "..", a name twice,
 * too many bytes or entries, damaged bytes), nimbus_agent_install's
 * refusals made before anything is fetched (nothing installed), and the
 * link swaps of nimbus_agent_rollback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ag_load.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_util.h"

/* SPEC.md, section 6: reply_agent_get.hex. */
#define HELLO "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define SIG                                                                    \
  "739382afea3b080879e9d107c55c28b59792b4124608a18b4c1bb49f92d0ed8b17ef80fd4e" \
  "5ed68bf989c037c7bbcc5cabba4de466633d74699ed78aa60d8605"
#define PUB "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"

static void golden(nimbus_agent_pkg *p) {
  memset(p, 0, sizeof *p);
  p->found = true;
  strcpy(p->platform, "linux-x86_64");
  strcpy(p->version, "1.2.0");
  strcpy(p->blob, HELLO);
  strcpy(p->sha256, HELLO);
  strcpy(p->signature, SIG);
  p->size = 5;
}

static void pub_of(const char *hex, uint8_t pub[32]) {
  assert_int_equal(nb_unhex32(hex, pub), 0);
}

static void test_check_golden(void **state) {
  (void)state;
  nimbus_agent_pkg p;
  uint8_t pub[32];
  char err[512];
  pub_of(PUB, pub);
  golden(&p);
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_NONE);
  /* Each field the statement names, changed: the signature fails. */
  golden(&p);
  strcpy(p.version, "1.2.1");
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  assert_non_null(strstr(err, "signature check failed"));
  golden(&p);
  strcpy(p.platform, "linux-aarch64");
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  golden(&p);
  p.size = 6;
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  golden(&p);
  p.signature[7] = p.signature[7] == '0' ? '1' : '0';
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  golden(&p);
  p.signature[127] = '\0'; /* short */
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  /* Another key. */
  golden(&p);
  pub_of("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
         pub);
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SIGNATURE);
  pub_of(PUB, pub);
  /* Other bytes than the signed hash: blob and sha256 must agree. */
  golden(&p);
  p.blob[0] = '3';
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SHA256);
  assert_non_null(strstr(err, "sha256 check failed"));
  golden(&p);
  p.sha256[3] = 'F'; /* not lowercase hex */
  strcpy(p.blob, p.sha256);
  assert_int_equal(ag_pkg_check(&p, pub, 0, err, sizeof err),
                   NIMBUS_CHECK_SHA256);
  /* Over the bound the agent takes. */
  golden(&p);
  assert_int_equal(ag_pkg_check(&p, pub, 4, err, sizeof err),
                   NIMBUS_CHECK_SIZE);
  assert_non_null(strstr(err, "size check failed"));
}

static void test_version_cmp(void **state) {
  (void)state;
  assert_int_equal(ag_pkg_version_cmp("1.9.3", "1.10.0"), AG_VER_NEWER);
  assert_int_equal(ag_pkg_version_cmp("1.10.0", "1.9.3"), AG_VER_OLDER);
  assert_int_equal(ag_pkg_version_cmp("1.10.0", "1.10.0"), AG_VER_SAME);
  assert_int_equal(ag_pkg_version_cmp("1.10.0", "1.10.0+build.7"), AG_VER_SAME);
  assert_int_equal(ag_pkg_version_cmp("1.0.0-rc.1", "1.0.0"), AG_VER_NEWER);
  assert_int_equal(ag_pkg_version_cmp("1.0.0", "1.0.0-rc.1"), AG_VER_OLDER);
  assert_int_equal(ag_pkg_version_cmp("1.0.0", "v1.1"), AG_VER_BAD);
  assert_int_equal(ag_pkg_version_cmp("junk", "0.0.1"), AG_VER_NEWER);
}

/* ---- Archives -------------------------------------------------------------
 */

typedef struct ent {
  const char *name;
  mode_t type;
  const char *data; /* files; a link's target for links */
  int64_t size;     /* -1: strlen(data) */
} ent;

/* A tar (pax) archive of the entries, gzip'ed when gz, into *out. */
static size_t mk_tar(const ent *e, size_t n, bool gz, uint8_t **out) {
  size_t cap = 1 << 22, used = 0;
  uint8_t *buf = malloc(cap);
  assert_non_null(buf);
  struct archive *w = archive_write_new();
  assert_int_equal(archive_write_set_format_pax_restricted(w), ARCHIVE_OK);
  if (gz)
    assert_int_equal(archive_write_add_filter_gzip(w), ARCHIVE_OK);
  assert_int_equal(archive_write_open_memory(w, buf, cap, &used), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++) {
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e[i].name);
    archive_entry_set_filetype(ae, e[i].type);
    archive_entry_set_perm(ae, e[i].type == AE_IFDIR ? 0755 : 0644);
    if (e[i].type == AE_IFLNK)
      archive_entry_set_symlink(ae, e[i].data);
    size_t len = e[i].type == AE_IFREG && e[i].data != NULL
                     ? (e[i].size >= 0 ? (size_t)e[i].size : strlen(e[i].data))
                     : 0;
    archive_entry_set_size(ae, (la_int64_t)len);
    assert_int_equal(archive_write_header(w, ae), ARCHIVE_OK);
    if (len > 0)
      assert_int_equal(archive_write_data(w, e[i].data, len), (la_ssize_t)len);
    archive_entry_free(ae);
  }
  assert_int_equal(archive_write_close(w), ARCHIVE_OK);
  archive_write_free(w);
  *out = buf;
  return used;
}

/* A fresh directory root/, with the target root/x. */
typedef struct sandbox {
  char root[64];
  int xfd;
} sandbox;

static void sb_open(sandbox *s) {
  strcpy(s->root, "/tmp/nimbus-test-update.XXXXXX");
  assert_non_null(mkdtemp(s->root));
  char x[96];
  snprintf(x, sizeof x, "%s/x", s->root);
  assert_int_equal(mkdir(x, 0700), 0);
  s->xfd = open(x, O_RDONLY | O_DIRECTORY);
  assert_true(s->xfd >= 0);
}

/* How many entries root holds (1: only x; nothing escaped). */
static int sb_count(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void sb_close(sandbox *s) {
  close(s->xfd);
  assert_int_equal(nftw(s->root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Extracts the entries into a sandbox; returns the result, err filled. */
static int extract(const ent *e, size_t n, bool gz, int64_t max, char *err,
                   size_t errcap, sandbox *s) {
  uint8_t *buf = NULL;
  size_t len = mk_tar(e, n, gz, &buf);
  sb_open(s);
  int rc = ag_pkg_extract_mem(buf, len, s->xfd, max, err, errcap);
  free(buf);
  assert_int_equal(sb_count(s->root), 1);
  return rc;
}

static void test_extract_good(void **state) {
  (void)state;
  static const ent e[] = {
      {"./", AE_IFDIR, NULL, 0},
      {"bin/", AE_IFDIR, NULL, 0},
      {"./bin/nimbus-agent", AE_IFREG, "#!/bin/sh\n", -1},
      {"lib/deep/er/libx.so.1", AE_IFREG, "elf", -1},
      {"empty", AE_IFREG, "", -1},
  };
  for (int gz = 0; gz < 2; gz++) {
    sandbox s;
    char err[256] = "";
    int rc = extract(e, 5, gz, 0, err, sizeof err, &s);
    assert_int_equal(rc, 0);
    struct stat st;
    char p[128];
    snprintf(p, sizeof p, "%s/x/lib/deep/er/libx.so.1", s.root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 3);
    assert_int_equal(st.st_mode & 07777, 0644);
    snprintf(p, sizeof p, "%s/x/empty", s.root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 0);
    sb_close(&s);
  }
  /* The execute bit survives (as 0755), nothing else. */
  uint8_t *buf = NULL;
  struct archive *w = archive_write_new();
  size_t cap = 1 << 16, used = 0;
  buf = malloc(cap);
  archive_write_set_format_ustar(w);
  archive_write_open_memory(w, buf, cap, &used);
  struct archive_entry *ae = archive_entry_new();
  archive_entry_set_pathname(ae, "bin/nimbus-agent");
  archive_entry_set_filetype(ae, AE_IFREG);
  archive_entry_set_perm(ae, 04777); /* setuid and world-writable */
  archive_entry_set_size(ae, 2);
  archive_write_header(w, ae);
  archive_write_data(w, "ab", 2);
  archive_entry_free(ae);
  archive_write_close(w);
  archive_write_free(w);
  sandbox s;
  sb_open(&s);
  char err[256];
  assert_int_equal(ag_pkg_extract_mem(buf, used, s.xfd, 0, err, sizeof err), 0);
  free(buf);
  char p[128];
  struct stat st;
  snprintf(p, sizeof p, "%s/x/bin/nimbus-agent", s.root);
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0755);
  sb_close(&s);
}

static void refused(const ent *e, size_t n, int want, const char *says,
                    int64_t max) {
  sandbox s;
  char err[256] = "";
  int rc = extract(e, n, false, max, err, sizeof err, &s);
  if (rc != want || strstr(err, says) == NULL)
    fail_msg("%s: got %d, \"%s\"; want %d, \"%s\"", e[n - 1].name, rc, err,
             want, says);
  sb_close(&s);
}

static void test_extract_hostile(void **state) {
  (void)state;
  const ent f = {"bin/nimbus-agent", AE_IFREG, "x", -1};
  ent e[2] = {f, f};
  e[1] = (ent){"lib/l", AE_IFLNK, "/etc/passwd", 0};
  refused(e, 2, NIMBUS_EPROTO, "is a link", 0);
  e[1] = (ent){"../evil", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "has a \"..\" component", 0);
  e[1] = (ent){"bin/../../evil", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "\"..\"", 0);
  e[1] = (ent){"/tmp/evil", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "absolute", 0);
  e[1] = (ent){"a//b", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "the entry a//b", 0);
  e[1] = (ent){"dev/null", AE_IFCHR, NULL, 0};
  refused(e, 2, NIMBUS_EPROTO, "not a regular file or a directory", 0);
  e[1] = (ent){"fifo", AE_IFIFO, NULL, 0};
  refused(e, 2, NIMBUS_EPROTO, "not a regular file or a directory", 0);
  e[1] = f;
  refused(e, 2, NIMBUS_EPROTO, "holds bin/nimbus-agent twice", 0);
  e[1] = (ent){"bin/nimbus-agent/x", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "as a file and a directory", 0);
  e[1] = (ent){"bin/nimbus-agent", AE_IFDIR, NULL, 0};
  refused(e, 2, NIMBUS_EPROTO, "as a file and a directory", 0);
  e[1] = (ent){"ctl\x01name", AE_IFREG, "x", -1};
  refused(e, 2, NIMBUS_EPROTO, "ctl?name", 0);
  /* Bounded: bytes, then entries. */
  e[1] = (ent){"big", AE_IFREG, "0123456789", -1};
  refused(e, 2, NIMBUS_ETOOBIG, "more than 10 bytes", 10);
  /* ("./" entries count, and cost no directory each.) */
  static ent many[AG_PKG_MAX_ENTRIES + 1];
  for (size_t i = 0; i <= AG_PKG_MAX_ENTRIES; i++)
    many[i] = (ent){"./", AE_IFDIR, NULL, 0};
  refused(many, AG_PKG_MAX_ENTRIES + 1, NIMBUS_ETOOBIG, "more than 4096", 0);
}

static void test_extract_damaged(void **state) {
  (void)state;
  static const ent e[] = {
      {"bin/nimbus-agent", AE_IFREG, "0123456789abcdef", -1}};
  uint8_t *buf = NULL;
  size_t len = mk_tar(e, 1, true, &buf);
  char err[256];
  /* Cut short, or not an archive at all. */
  for (size_t cut = 1; cut < len; cut += len / 7 + 1) {
    sandbox s;
    sb_open(&s);
    int rc = ag_pkg_extract_mem(buf, cut, s.xfd, 0, err, sizeof err);
    assert_int_equal(rc, NIMBUS_EPROTO);
    assert_int_equal(sb_count(s.root), 1);
    sb_close(&s);
  }
  free(buf);
  sandbox s;
  sb_open(&s);
  assert_int_equal(
      ag_pkg_extract_mem("hello, not a tar", 16, s.xfd, 0, err, sizeof err),
      NIMBUS_EPROTO);
  sb_close(&s);
}

/* ---- Install and rollback without a network -------------------------------
 */

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* The refusals made before anything is fetched: nothing installed. */
static void test_install_refusals(void **state) {
  (void)state;
  sandbox s;
  sb_open(&s);
  char dir[128], key[160], other[160];
  snprintf(dir, sizeof dir, "%s/x", s.root);
  snprintf(key, sizeof key, "%s/nimbus.pub", dir);
  put(key, PUB "\n");
  snprintf(other, sizeof other, "%s/other.pub", s.root);
  put(other,
      "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\n");
  nimbus_agent_opts ao;
  nimbus_agent_opts_init(&ao);
  ao.uri = "tcp://127.0.0.1:1";
  ao.terminal = "t1";
  ao.password = "pw";
  ao.state_dir = s.root;
  nimbus_agent *a = NULL;
  assert_int_equal(nimbus_agent_new(&ao, &a), 0);
  nimbus_agent_pkg p;
  golden(&p);
  nimbus_install_opts o;
  nimbus_install_opts_init(&o);
  o.install_dir = dir;
  o.platform = "linux-x86_64";
  nimbus_install_result r;
  /* At or below the running version. */
  o.running = "1.2.0";
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_VERSION);
  assert_non_null(strstr(r.error, "not newer than the running 1.2.0"));
  o.running = "1.10.0";
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_VERSION);
  /* Another platform's. */
  o.running = "1.0.0";
  o.platform = "linux-aarch64";
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_VERSION);
  o.platform = "linux-x86_64";
  /* Another key (given), then a tampered signature (the one beside). */
  o.key_path = other;
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_SIGNATURE);
  o.key_path = NULL;
  p.signature[0] = p.signature[0] == '7' ? '8' : '7';
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_SIGNATURE);
  /* No key file: the key compiled in (update.cmake: SPEC.md's) checks
   * the signature, and the version is what refuses. */
  assert_int_equal(unlink(key), 0);
  golden(&p);
  o.running = "1.2.0";
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_VERSION);
  p.signature[0] = p.signature[0] == '7' ? '8' : '7';
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EAUTH);
  assert_int_equal(r.check, NIMBUS_CHECK_SIGNATURE);
  uint8_t pub[32], want[32];
  char err[256];
  assert_int_equal(ag_pkg_key(NULL, pub, err, sizeof err), 0);
  pub_of(PUB, want);
  assert_memory_equal(pub, want, 32);
  o.running = "1.0.0";
  put(key, PUB "\n");
  /* A key file that is none. */
  o.key_path = dir;
  assert_int_equal(nimbus_agent_install(a, &p, &o, &r), NIMBUS_EINVAL);
  o.key_path = NULL;
  /* Nothing but the lock (and the key) is there. */
  struct stat st;
  char path[200];
  snprintf(path, sizeof path, "%s/current", dir);
  assert_int_not_equal(lstat(path, &st), 0);
  snprintf(path, sizeof path, "%s/versions", dir);
  assert_int_not_equal(lstat(path, &st), 0);
  assert_int_equal(sb_count(dir), 2);
  nimbus_agent_free(a);
  sb_close(&s);
}

static void mk_version(const char *dir, const char *v) {
  char p[256];
  snprintf(p, sizeof p, "%s/versions", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/versions/%s", dir, v);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/versions/%s/bin", dir, v);
  assert_int_equal(mkdir(p, 0755), 0);
  snprintf(p, sizeof p, "%s/versions/%s/bin/nimbus-agent", dir, v);
  put(p, v);
}

static void test_rollback(void **state) {
  (void)state;
  sandbox s;
  sb_open(&s);
  char dir[128], link[160];
  snprintf(dir, sizeof dir, "%s/x", s.root);
  nimbus_install_result r;
  char cur[65], prev[65];
  assert_int_equal(nimbus_agent_installed(dir, cur, prev), 0);
  assert_string_equal(cur, "");
  assert_int_equal(nimbus_agent_rollback(dir, &r), NIMBUS_ENOTFOUND);
  mk_version(dir, "1.0.0");
  mk_version(dir, "1.1.0");
  snprintf(link, sizeof link, "%s/current", dir);
  assert_int_equal(symlink("versions/1.1.0", link), 0);
  assert_int_equal(nimbus_agent_rollback(dir, &r), NIMBUS_ENOTFOUND);
  snprintf(link, sizeof link, "%s/previous", dir);
  assert_int_equal(symlink("versions/1.0.0", link), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(nimbus_agent_rollback(dir, &r), 0);
    assert_string_equal(r.version, i == 0 ? "1.0.0" : "1.1.0");
    assert_string_equal(r.previous, i == 0 ? "1.1.0" : "1.0.0");
    assert_int_equal(nimbus_agent_installed(dir, cur, prev), 0);
    assert_string_equal(cur, r.version);
    assert_string_equal(prev, r.previous);
  }
  /* A link that names something else is no version. */
  unlink(link);
  assert_int_equal(symlink("/etc", link), 0);
  assert_int_equal(nimbus_agent_rollback(dir, &r), NIMBUS_ENOTFOUND);
  assert_int_equal(nimbus_agent_installed(dir, cur, prev), 0);
  assert_string_equal(prev, "");
  char none[160];
  snprintf(none, sizeof none, "%s/none", s.root);
  assert_int_equal(nimbus_agent_installed(none, cur, prev), NIMBUS_ENOTFOUND);
  sb_close(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_check_golden),
      cmocka_unit_test(test_version_cmp),
      cmocka_unit_test(test_extract_good),
      cmocka_unit_test(test_extract_hostile),
      cmocka_unit_test(test_extract_damaged),
      cmocka_unit_test(test_install_refusals),
      cmocka_unit_test(test_rollback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
