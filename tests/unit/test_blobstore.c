/* Unit tests of the local blob store (st_blob.h) in a temporary directory:
 * staged segments out of order and their hashes, a commit's atomic move
 * into the content-addressed layout, identical content stored once,
 * ranges read back, staging names that hold no terminal string, a
 * longer leftover staging file cut to the blob's size, and the sweep of
 * abandoned staging files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_blob.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEG ST_SEGMENT
#define SIZE (2 * SEG + 1000)

typedef struct fixture {
  char tmp[64];
  char root[128];
  st_blobstore *s;
  uint8_t *bytes; /* SIZE bytes of content */
  uint8_t sha[32];
} fixture;

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  if (d == NULL)
    return -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->tmp, sizeof f->tmp, "/tmp/nb-blobstore-XXXXXX");
  assert_non_null(mkdtemp(f->tmp));
  /* Two levels that do not exist yet: open creates them. */
  snprintf(f->root, sizeof f->root, "%s/a/b", f->tmp);
  char err[256] = "";
  assert_int_equal(st_blobstore_open(f->root, &f->s, err, sizeof err), 0);
  /* test_blobstore_plain runs it all through the page cache. */
  const char *plain = getenv("NIMBUS_TEST_PLAIN_IO");
  if (plain != NULL && strcmp(plain, "1") == 0)
    st_blobstore_set_direct(f->s, false);
  f->bytes = malloc(SIZE);
  assert_non_null(f->bytes);
  for (size_t i = 0; i < SIZE; i++)
    f->bytes[i] = (uint8_t)(i * 7 + i / 251);
  nb_sha256(f->bytes, SIZE, f->sha);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[200];
  st_blobstore_free(f->s);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->tmp);
  assert_int_equal(system(cmd), 0);
  free(f->bytes);
  free(f);
  return 0;
}

static void stage_all(fixture *f, const char *terminal, const char *up) {
  /* Out of order, as terminals may send them. */
  const size_t order[3] = {2, 0, 1};
  for (size_t k = 0; k < 3; k++) {
    size_t off = order[k] * SEG;
    size_t n = SIZE - off < SEG ? SIZE - off : SEG;
    assert_int_equal(
        st_blobstore_stage(f->s, terminal, up, off, f->bytes + off, n,
                           SIZE, false), 0);
  }
}

static void test_nsegs(void **state) {
  (void)state;
  assert_int_equal(st_blob_nsegs(0), 0);
  assert_int_equal(st_blob_nsegs(1), 1);
  assert_int_equal(st_blob_nsegs(SEG), 1);
  assert_int_equal(st_blob_nsegs(SEG + 1), 2);
  assert_int_equal(st_blob_nsegs(SIZE), 3);
}

static void test_stage_hash_commit_read(void **state) {
  fixture *f = *state;
  uint8_t whole[32], segs[3][ST_SEGSUM], want[32];
  char dir[256];
  stage_all(f, "alice", "up/../x");
  /* The staging file is named by a hash, never by the terminal's strings. */
  snprintf(dir, sizeof dir, "%s/staging", f->root);
  assert_int_equal(count_files(dir), 1);
  DIR *d = opendir(dir);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.')
      assert_int_equal(strlen(e->d_name), 64);
  closedir(d);

  assert_int_equal(st_blobstore_stage_hash(f->s, "alice", "up/../x", SIZE,
                                           whole, segs, NULL, NULL),
                   0);
  assert_memory_equal(whole, f->sha, 32);
  for (size_t i = 0; i < 3; i++) {
    size_t n = SIZE - i * SEG < SEG ? SIZE - i * SEG : SEG;
    nb_xxh128(f->bytes + i * SEG, n, want);
    assert_memory_equal(segs[i], want, ST_SEGSUM);
    assert_true(st_segsum_ok(f->bytes + i * SEG, n, segs[i], ST_SEGSUM));
    /* A sum of the older kind, SHA-256, is checked as such. */
    nb_sha256(f->bytes + i * SEG, n, want);
    assert_true(st_segsum_ok(f->bytes + i * SEG, n, want, ST_SEGSUM_SHA256));
    assert_false(st_segsum_ok(f->bytes + i * SEG, n, want, ST_SEGSUM));
    /* One changed byte fails either kind. */
    f->bytes[i * SEG + n / 2] ^= 0x40;
    assert_false(st_segsum_ok(f->bytes + i * SEG, n, segs[i], ST_SEGSUM));
    assert_false(
        st_segsum_ok(f->bytes + i * SEG, n, want, ST_SEGSUM_SHA256));
    f->bytes[i * SEG + n / 2] ^= 0x40;
  }
  bool has = true;
  assert_int_equal(st_blobstore_has(f->s, f->sha, &has), 0);
  assert_false(has);
  assert_int_equal(
      st_blobstore_stage_commit(f->s, "alice", "up/../x", SIZE, f->sha), 0);
  assert_int_equal(count_files(dir), 0);
  assert_int_equal(st_blobstore_has(f->s, f->sha, &has), 0);
  assert_true(has);

  char hex[65], path[400];
  struct stat st;
  nb_hex(f->sha, 32, hex);
  snprintf(path, sizeof path, "%s/blobs/%.2s/%s", f->root, hex, hex);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SIZE);

  /* A range across a segment boundary, and one cut short at the end. */
  uint8_t buf[2000];
  size_t got = 0;
  assert_int_equal(st_blobstore_read(f->s, f->sha, SEG - 500, buf, 1000,
                                     &got), 0);
  assert_int_equal(got, 1000);
  assert_memory_equal(buf, f->bytes + SEG - 500, 1000);
  assert_int_equal(st_blobstore_read(f->s, f->sha, SIZE - 10, buf, 2000,
                                     &got), 0);
  assert_int_equal(got, 10);
  assert_memory_equal(buf, f->bytes + SIZE - 10, 10);

  /* The stored blob hashes the same. */
  memset(segs, 0, sizeof segs);
  assert_int_equal(st_blobstore_blob_hash(f->s, f->sha, SIZE, whole, segs,
                                          NULL, NULL), 0);
  assert_memory_equal(whole, f->sha, 32);
}

static void test_same_content_stored_once(void **state) {
  fixture *f = *state;
  char dir[256], hex[65];
  stage_all(f, "alice", "a");
  stage_all(f, "bob", "b");
  snprintf(dir, sizeof dir, "%s/staging", f->root);
  assert_int_equal(count_files(dir), 2);
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE,
                                             f->sha), 0);
  assert_int_equal(st_blobstore_stage_commit(f->s, "bob", "b", SIZE, f->sha),
                   0);
  assert_int_equal(count_files(dir), 0);
  nb_hex(f->sha, 32, hex);
  snprintf(dir, sizeof dir, "%s/blobs/%.2s", f->root, hex);
  assert_int_equal(count_files(dir), 1);
}

/* rc is read by the test's thread while the other may still write it. */
typedef struct late_put {
  fixture *f;
  atomic_int rc;
} late_put;

static void *put_first_segment(void *arg) {
  late_put *lp = arg;
  uint8_t junk[64];
  memset(junk, 0x5a, sizeof junk);
  atomic_store(&lp->rc, st_blobstore_stage(lp->f->s, "alice", "a", 0, junk,
                                           sizeof junk, 0, false));
  return NULL;
}

typedef struct late_lock {
  fixture *f;
  atomic_int rc;
  int lock;
} late_lock;

static void *lock_staging(void *arg) {
  late_lock *ll = arg;
  int lock = -1;
  int rc = st_blobstore_stage_lock(ll->f->s, "alice", "a", &lock);
  ll->lock = lock;
  atomic_store(&ll->rc, rc);
  return NULL;
}

/* A second commit of the same upload waits for the first one's lock, then
 * learns that nothing is staged any more (the file was moved), instead of
 * getting a lock on a file that is no longer the staging file. */
static void test_commit_during_commit(void **state) {
  fixture *f = *state;
  stage_all(f, "alice", "a");
  int lock = -1;
  assert_int_equal(st_blobstore_stage_lock(f->s, "alice", "a", &lock), 0);
  late_lock ll = {.f = f, .lock = -1};
  atomic_init(&ll.rc, -1);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, lock_staging, &ll), 0);
  usleep(100 * 1000); /* the second commit now waits for the lock */
  assert_int_equal(atomic_load(&ll.rc), -1);
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE,
                                             f->sha), 0);
  st_blobstore_stage_unlock(f->s, lock);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(atomic_load(&ll.rc), NIMBUS_ENOTFOUND);
  assert_int_equal(ll.lock, -1);
}

/* A put that arrives while a commit holds the staging lock waits, then
 * finds the file moved and stores nothing: the stored blob keeps the bytes
 * that were hashed. */
static void test_put_during_commit(void **state) {
  fixture *f = *state;
  stage_all(f, "alice", "a");
  int lock = -1;
  assert_int_equal(st_blobstore_stage_lock(f->s, "alice", "a", &lock), 0);
  late_put lp = {.f = f};
  atomic_init(&lp.rc, -1);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, put_first_segment, &lp), 0);
  usleep(100 * 1000); /* the put is now waiting for the lock */
  assert_int_equal(atomic_load(&lp.rc), -1);
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE,
                                             f->sha), 0);
  st_blobstore_stage_unlock(f->s, lock);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(atomic_load(&lp.rc), NIMBUS_ECONFLICT);
  uint8_t whole[32];
  uint8_t(*segs)[ST_SEGSUM] = calloc(st_blob_nsegs(SIZE), ST_SEGSUM);
  assert_non_null(segs);
  assert_int_equal(st_blobstore_blob_hash(f->s, f->sha, SIZE, whole, segs,
                                          NULL, NULL), 0);
  assert_memory_equal(whole, f->sha, 32);
  free(segs);
  /* Without a staging file there is nothing to lock. */
  assert_int_equal(st_blobstore_stage_lock(f->s, "alice", "zz", &lock),
                   NIMBUS_ENOTFOUND);
}

static int stop_after_first(void *arg, uint64_t done, uint64_t total) {
  (void)total;
  *(uint64_t *)arg = done;
  return NIMBUS_ECANCELED;
}

static void test_missing_short_cancel_drop(void **state) {
  fixture *f = *state;
  uint8_t whole[32], segs[3][ST_SEGSUM];
  size_t got = 0;
  uint8_t buf[8];
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "none", SIZE,
                                           whole, segs, NULL, NULL),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(st_blobstore_read(f->s, f->sha, 0, buf, 8, &got),
                   NIMBUS_ENOTFOUND);
  /* One segment staged: the file is shorter than the blob. */
  assert_int_equal(st_blobstore_stage(f->s, "carol", "short", 0, f->bytes,
                                      SEG, 0, false), 0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SIZE,
                                           whole, segs, NULL, NULL),
                   NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "shorter"));
  uint64_t done = 0;
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SEG,
                                           whole, segs, stop_after_first,
                                           &done),
                   NIMBUS_ECANCELED);
  assert_int_equal(done, SEG);
  assert_int_equal(st_blobstore_stage_drop(f->s, "carol", "short"), 0);
  assert_int_equal(st_blobstore_stage_drop(f->s, "carol", "short"), 0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SEG,
                                           whole, segs, NULL, NULL),
                   NIMBUS_ENOTFOUND);
}

static void test_leftover_longer_file_is_cut(void **state) {
  fixture *f = *state;
  uint8_t whole[32], segs[1][ST_SEGSUM], sha[32];
  char hex[65], path[400];
  struct stat st;
  /* An older, longer upload under the same name left two segments. */
  stage_all(f, "dan", "u");
  /* The new blob is the first 100 bytes. */
  nb_sha256(f->bytes, 100, sha);
  assert_int_equal(
      st_blobstore_stage(f->s, "dan", "u", 0, f->bytes, 100, 100, false), 0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "dan", "u", 100, whole,
                                           segs, NULL, NULL), 0);
  assert_memory_equal(whole, sha, 32);
  assert_int_equal(st_blobstore_stage_commit(f->s, "dan", "u", 100, sha), 0);
  nb_hex(sha, 32, hex);
  snprintf(path, sizeof path, "%s/blobs/%.2s/%s", f->root, hex, hex);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 100);
}

/* A segment that lands beyond the staging file's end reserves the space
 * up to reserve_end; within the file nothing changes; without a bound
 * nothing is reserved. */
static void test_stage_reserve(void **state) {
  fixture *f = *state;
  char key[64], hex[65], path[600];
  uint8_t d[32];
  struct stat st;
  const uint64_t big = 100 * (uint64_t)SEG;
  int n = snprintf(key, sizeof key, "%s\n%s", "gus", "p");
  nb_sha256(key, (size_t)n, d);
  nb_hex(d, 32, hex);
  snprintf(path, sizeof path, "%s/staging/%s", f->root, hex);
  assert_int_equal(st_blobstore_stage(f->s, "gus", "p", 0, f->bytes, SEG,
                                      64 * (uint64_t)SEG, false), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 64 * SEG);
  assert_int_equal(
      st_blobstore_stage(f->s, "gus", "p", SEG, f->bytes, SEG, big, true), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 64 * SEG);
  assert_int_equal(st_blobstore_stage(f->s, "gus", "p", 90 * (uint64_t)SEG,
                                      f->bytes, SEG, big, true), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((uint64_t)st.st_size, big);
  assert_int_equal(
      st_blobstore_stage(f->s, "gus", "q", 0, f->bytes, SEG, 0, false), 0);
  n = snprintf(key, sizeof key, "%s\n%s", "gus", "q");
  nb_sha256(key, (size_t)n, d);
  nb_hex(d, 32, hex);
  snprintf(path, sizeof path, "%s/staging/%s", f->root, hex);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SEG);
}

static void set_seg(uint8_t *bits, uint64_t i) {
  bits[i / 8] |= (uint8_t)(0x80 >> (i % 8));
}

/* The reservation bound: as much as received, at most 64 segments, from
 * the end of the run received from offset 0, never past the blob. */
static void test_upload_reserve_end(void **state) {
  (void)state;
  uint8_t bits[200];
  const uint64_t S = SEG;
  st_upload u = {.exists = true, .size = S, .bits = bits};
  memset(bits, 0, sizeof bits);
  assert_int_equal(st_upload_reserve_end(&u), 0); /* one segment */
  u.size = 1000 * S;
  u.bits_len = sizeof bits;
  assert_int_equal(st_upload_reserve_end(&u), 0); /* nothing received */
  for (uint64_t i = 0; i < 10; i++)
    set_seg(bits, i);
  assert_int_equal(st_upload_reserve_end(&u), 20 * S);
  for (uint64_t i = 10; i < 100; i++)
    set_seg(bits, i);
  assert_int_equal(st_upload_reserve_end(&u), 164 * S);
  u.size = 120 * S + 5;
  assert_int_equal(st_upload_reserve_end(&u), u.size);
  /* Scattered: 0, 50 and 90 received; the run ends at segment 1. */
  memset(bits, 0, sizeof bits);
  u.size = 1000 * S;
  set_seg(bits, 0);
  set_seg(bits, 50);
  set_seg(bits, 90);
  assert_int_equal(st_upload_reserve_end(&u), 4 * S);
  u.committed = true;
  assert_int_equal(st_upload_reserve_end(&u), 0);
}

/* st_upload_have against a count segment by segment, over sizes that end
 * inside a byte of the bitmap, short bitmaps and random bits. */
static void test_upload_have(void **state) {
  (void)state;
  uint8_t bits[40];
  uint64_t seed = 12345;
  const uint64_t sizes[] = {0, 1, SEG, SEG + 1, 8 * (uint64_t)SEG,
                            9 * (uint64_t)SEG - 7, 100 * (uint64_t)SEG + 5,
                            300 * (uint64_t)SEG};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    for (int round = 0; round < 20; round++) {
      for (size_t i = 0; i < sizeof bits; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        bits[i] = (uint8_t)(seed >> 56);
      }
      st_upload u = {.exists = true, .size = sizes[k], .bits = bits,
                     .bits_len = (size_t)(round % 5) * 10};
      uint64_t n = st_blob_nsegs(u.size), want = 0;
      for (uint64_t i = 0; i < n; i++)
        if (i / 8 < u.bits_len && (bits[i / 8] >> (7 - i % 8)) & 1)
          want += i + 1 < n ? SEG : u.size - i * SEG;
      assert_int_equal(st_upload_have(&u), want);
      u.committed = true;
      assert_int_equal(st_upload_have(&u), u.size);
    }
  }
}

static void test_empty_blob(void **state) {
  fixture *f = *state;
  uint8_t whole[32], segs[1][ST_SEGSUM], sha[32];
  nb_sha256("", 0, sha);
  assert_int_equal(
      st_blobstore_stage(f->s, "erin", "e", 0, "", 0, 0, false), 0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "erin", "e", 0, whole, segs,
                                           NULL, NULL), 0);
  assert_memory_equal(whole, sha, 32);
  assert_int_equal(st_blobstore_stage_commit(f->s, "erin", "e", 0, sha), 0);
  bool has = false;
  assert_int_equal(st_blobstore_has(f->s, sha, &has), 0);
  assert_true(has);
}

static void test_sweep(void **state) {
  fixture *f = *state;
  char dir[256], path[600];
  stage_all(f, "old", "u");
  stage_all(f, "new", "u");
  snprintf(dir, sizeof dir, "%s/staging", f->root);
  DIR *d = opendir(dir);
  assert_non_null(d);
  /* Age one file by an hour. */
  int aged = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL && aged == 0;) {
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= 3600;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    aged = 1;
  }
  closedir(d);
  size_t removed = 99;
  assert_int_equal(st_blobstore_sweep(f->s, 600000, &removed), 0);
  assert_int_equal(removed, 1);
  assert_int_equal(count_files(dir), 1);
  assert_int_equal(st_blobstore_sweep(f->s, 600000, &removed), 0);
  assert_int_equal(removed, 0);
  assert_int_equal(count_files(dir), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nsegs),
      cmocka_unit_test_setup_teardown(test_stage_hash_commit_read, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_same_content_stored_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_missing_short_cancel_drop, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_leftover_longer_file_is_cut,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stage_reserve, setup, teardown),
      cmocka_unit_test(test_upload_reserve_end),
      cmocka_unit_test(test_upload_have),
      cmocka_unit_test_setup_teardown(test_commit_during_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_put_during_commit, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
