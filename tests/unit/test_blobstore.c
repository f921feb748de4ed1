/* Unit tests of the local blob store (st_blob.h) in a temporary directory:
 * staged segments out of order and their hashes, a commit's atomic move
 * into the content-addressed layout, identical content stored once,
 * ranges read back, staging names that hold no terminal string, a
 * longer leftover staging file cut to the blob's size, the blocks of a
 * failed write given back, and the sweep of abandoned staging files.
 * And the compressed form (blob_pack.c): a document stored compressed,
 * smaller on disk, read back byte for byte at any offset and hashed as
 * it was; random bytes and a cancelled run left as they are; a commit of
 * the same content keeping the compressed copy; a damaged frame refused.
 * And the store over its backend interface (st_blob_backend.h), through a
 * spy backend wrapped around the local one: what the backend is handed,
 * reads that come back short, and a full store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_blob.h"
#include "st_blob_backend.h"

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
    assert_int_equal(st_blobstore_stage(f->s, terminal, up, off, f->bytes + off,
                                        n, SIZE, false),
                     0);
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
    assert_false(st_segsum_ok(f->bytes + i * SEG, n, want, ST_SEGSUM_SHA256));
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
  assert_int_equal(st_blobstore_read(f->s, f->sha, SEG - 500, buf, 1000, &got),
                   0);
  assert_int_equal(got, 1000);
  assert_memory_equal(buf, f->bytes + SEG - 500, 1000);
  assert_int_equal(st_blobstore_read(f->s, f->sha, SIZE - 10, buf, 2000, &got),
                   0);
  assert_int_equal(got, 10);
  assert_memory_equal(buf, f->bytes + SIZE - 10, 10);

  /* The stored blob hashes the same. */
  memset(segs, 0, sizeof segs);
  assert_int_equal(
      st_blobstore_blob_hash(f->s, f->sha, SIZE, whole, segs, NULL, NULL), 0);
  assert_memory_equal(whole, f->sha, 32);
}

static void test_same_content_stored_once(void **state) {
  fixture *f = *state;
  char dir[256], hex[65];
  stage_all(f, "alice", "a");
  stage_all(f, "bob", "b");
  snprintf(dir, sizeof dir, "%s/staging", f->root);
  assert_int_equal(count_files(dir), 2);
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE, f->sha),
                   0);
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
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE, f->sha),
                   0);
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
  assert_int_equal(st_blobstore_stage_commit(f->s, "alice", "a", SIZE, f->sha),
                   0);
  st_blobstore_stage_unlock(f->s, lock);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(atomic_load(&lp.rc), NIMBUS_ECONFLICT);
  uint8_t whole[32];
  uint8_t(*segs)[ST_SEGSUM] = calloc(st_blob_nsegs(SIZE), ST_SEGSUM);
  assert_non_null(segs);
  assert_int_equal(
      st_blobstore_blob_hash(f->s, f->sha, SIZE, whole, segs, NULL, NULL), 0);
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
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "none", SIZE, whole,
                                           segs, NULL, NULL),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(st_blobstore_read(f->s, f->sha, 0, buf, 8, &got),
                   NIMBUS_ENOTFOUND);
  /* One segment staged: the file is shorter than the blob. */
  assert_int_equal(
      st_blobstore_stage(f->s, "carol", "short", 0, f->bytes, SEG, 0, false),
      0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SIZE, whole,
                                           segs, NULL, NULL),
                   NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "shorter"));
  uint64_t done = 0;
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SEG, whole,
                                           segs, stop_after_first, &done),
                   NIMBUS_ECANCELED);
  assert_int_equal(done, SEG);
  assert_int_equal(st_blobstore_stage_drop(f->s, "carol", "short"), 0);
  assert_int_equal(st_blobstore_stage_drop(f->s, "carol", "short"), 0);
  assert_int_equal(st_blobstore_stage_hash(f->s, "carol", "short", SEG, whole,
                                           segs, NULL, NULL),
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
  assert_int_equal(
      st_blobstore_stage_hash(f->s, "dan", "u", 100, whole, segs, NULL, NULL),
      0);
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
                                      64 * (uint64_t)SEG, false),
                   0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 64 * SEG);
  assert_int_equal(
      st_blobstore_stage(f->s, "gus", "p", SEG, f->bytes, SEG, big, true), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 64 * SEG);
  assert_int_equal(st_blobstore_stage(f->s, "gus", "p", 90 * (uint64_t)SEG,
                                      f->bytes, SEG, big, true),
                   0);
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
  const uint64_t sizes[] = {0,
                            1,
                            SEG,
                            SEG + 1,
                            8 * (uint64_t)SEG,
                            9 * (uint64_t)SEG - 7,
                            100 * (uint64_t)SEG + 5,
                            300 * (uint64_t)SEG};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    for (int round = 0; round < 20; round++) {
      for (size_t i = 0; i < sizeof bits; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        bits[i] = (uint8_t)(seed >> 56);
      }
      st_upload u = {.exists = true,
                     .size = sizes[k],
                     .bits = bits,
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
  assert_int_equal(st_blobstore_stage(f->s, "erin", "e", 0, "", 0, 0, false),
                   0);
  assert_int_equal(
      st_blobstore_stage_hash(f->s, "erin", "e", 0, whole, segs, NULL, NULL),
      0);
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

/* The blocks a failed put may have written are given back, the file's
 * length and the other segments' bytes kept; nothing happens without a
 * staging file, or once a commit moved it into the store. */
static void test_stage_undo(void **state) {
  fixture *f = *state;
  char key[64], hex[65], path[600];
  uint8_t d[32];
  struct stat st;
  int n = snprintf(key, sizeof key, "%s\n%s", "hal", "u");
  nb_sha256(key, (size_t)n, d);
  nb_hex(d, 32, hex);
  snprintf(path, sizeof path, "%s/staging/%s", f->root, hex);
  stage_all(f, "hal", "u");
  assert_int_equal(stat(path, &st), 0);
  blkcnt_t before = st.st_blocks;
  assert_int_equal(st_blobstore_stage_undo(f->s, "hal", "u", SEG, SEG), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, SIZE);
  assert_true(st.st_blocks <= before - SEG / 512);
  /* Segment 1 reads back as zeros, the others as they were. */
  uint8_t whole[32], segs[3][ST_SEGSUM], want[ST_SEGSUM];
  assert_int_equal(
      st_blobstore_stage_hash(f->s, "hal", "u", SIZE, whole, segs, NULL, NULL),
      0);
  nb_xxh128(f->bytes, SEG, want);
  assert_memory_equal(segs[0], want, ST_SEGSUM);
  uint8_t *zero = calloc(1, SEG);
  assert_non_null(zero);
  nb_xxh128(zero, SEG, want);
  assert_memory_equal(segs[1], want, ST_SEGSUM);
  free(zero);
  assert_int_equal(st_blobstore_stage_undo(f->s, "hal", "none", 0, SEG), 0);
  assert_int_equal(st_blobstore_stage_undo(f->s, "hal", "u", 0, 0), 0);
  /* After the move into the store, undo leaves the blob alone. */
  stage_all(f, "hal", "u");
  assert_int_equal(st_blobstore_stage_commit(f->s, "hal", "u", SIZE, f->sha),
                   0);
  assert_int_equal(st_blobstore_stage_undo(f->s, "hal", "u", 0, SEG), 0);
  assert_int_equal(
      st_blobstore_blob_hash(f->s, f->sha, SIZE, whole, segs, NULL, NULL), 0);
  assert_memory_equal(whole, f->sha, 32);
}

/* ---- The compressed form --------------------------------------------------
 */

/* Text made of a few hundred words: zstd makes it well under half. */
static uint8_t *text_bytes(size_t n) {
  static const char *const w[] = {"share", "the ",  "cloud", "segment",
                                  "frame", "index", "of ",   "a ",
                                  "blob",  ", ",    "and ",  "terminal"};
  uint8_t *p = malloc(n);
  assert_non_null(p);
  uint32_t x = 12345;
  for (size_t i = 0; i < n;) {
    x = x * 1103515245u + 12345u;
    const char *t = w[(x >> 16) % (sizeof w / sizeof w[0])];
    for (size_t k = 0; t[k] != '\0' && i < n; k++)
      p[i++] = (uint8_t)(t[k] + ((x >> 8) % 7 == 0 && k == 0 ? 1 : 0));
  }
  return p;
}

/* Stages `n` bytes of `p` as upload (terminal, up) and commits them. */
static void commit_bytes(st_blobstore *s, const char *terminal, const char *up,
                         const uint8_t *p, size_t n, uint8_t sha[32]) {
  nb_sha256(p, n, sha);
  for (size_t off = 0; off < n; off += SEG)
    assert_int_equal(st_blobstore_stage(s, terminal, up, off, p + off,
                                        n - off < SEG ? n - off : SEG, n,
                                        false),
                     0);
  assert_int_equal(st_blobstore_stage_commit(s, terminal, up, n, sha), 0);
}

static off_t blob_file_size(const fixture *f, const uint8_t sha[32]) {
  char hex[65], path[400];
  struct stat st;
  nb_hex(sha, 32, hex);
  snprintf(path, sizeof path, "%s/blobs/%.2s/%s", f->root, hex, hex);
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

#define DOC (5 * SEG + 777)

static int stop_at_second(void *arg, uint64_t done, uint64_t total) {
  (void)total;
  *(uint64_t *)arg = done;
  return done > SEG ? NIMBUS_ECANCELED : 0;
}

static void test_pack_document(void **state) {
  fixture *f = *state;
  uint8_t *doc = text_bytes(DOC), sha[32], whole[32];
  uint8_t(*plain)[ST_SEGSUM] = malloc(6 * ST_SEGSUM);
  uint8_t(*sums)[ST_SEGSUM] = malloc(6 * ST_SEGSUM);
  char staging[256];
  assert_non_null(plain);
  assert_non_null(sums);
  snprintf(staging, sizeof staging, "%s/staging", f->root);
  commit_bytes(f->s, "ann", "d", doc, DOC, sha);
  assert_int_equal(
      st_blobstore_blob_hash(f->s, sha, DOC, whole, plain, NULL, NULL), 0);
  uint64_t stored = 0, done = 0;
  /* Stopped half way, it stays as it was, with nothing left beside it. */
  st_blob_pack_opts o = {
      .level = 3, .trial = true, .progress = stop_at_second, .arg = &done};
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored),
                   NIMBUS_ECANCELED);
  assert_int_equal(blob_file_size(f, sha), DOC);
  assert_int_equal(count_files(staging), 0);
  o.progress = NULL;
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored), 0);
  assert_true(stored < DOC / 2);
  assert_int_equal(blob_file_size(f, sha), stored);
  assert_int_equal(count_files(staging), 0);
  uint64_t again = 0;
  assert_int_equal(st_blobstore_stored(f->s, sha, DOC, &again), 0);
  assert_int_equal(again, stored);
  /* Packed already: the same answer, nothing written. */
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &again), 0);
  assert_int_equal(again, stored);
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC + 1, &o, &again),
                   NIMBUS_EIO);

  /* The bytes, as they were, at any offset: whole segments into an aligned
   * buffer (what blob.get asks), across a boundary, the end, past it. */
  uint8_t *buf = NULL;
  assert_int_equal(posix_memalign((void **)&buf, 4096, 2 * SEG + 4096), 0);
  size_t got = 0;
  assert_int_equal(st_blobstore_read(f->s, sha, SEG, buf, 2 * SEG, &got), 0);
  assert_int_equal(got, 2 * SEG);
  assert_memory_equal(buf, doc + SEG, 2 * SEG);
  assert_int_equal(st_blobstore_read(f->s, sha, SEG - 5, buf, 100, &got), 0);
  assert_int_equal(got, 100);
  assert_memory_equal(buf, doc + SEG - 5, 100);
  assert_int_equal(st_blobstore_read(f->s, sha, 5 * SEG, buf, 8192, &got), 0);
  assert_int_equal(got, 777);
  assert_memory_equal(buf, doc + 5 * SEG, 777);
  assert_int_equal(st_blobstore_read(f->s, sha, DOC, buf, 10, &got), 0);
  assert_int_equal(got, 0);
  free(buf);
  uint8_t *all = malloc(DOC);
  assert_non_null(all);
  assert_int_equal(st_blobstore_read(f->s, sha, 0, all, DOC, &got), 0);
  assert_int_equal(got, DOC);
  assert_memory_equal(all, doc, DOC);
  /* Through one reader, in pieces that straddle the segments, to the
   * end and past it. */
  st_blob_reader *rd = NULL;
  assert_int_equal(st_blobstore_reader_open(f->s, sha, &rd), 0);
  memset(all, 0, DOC);
  for (size_t at = 0; at < DOC; at += got) {
    assert_int_equal(st_blob_reader_read(rd, at, all + at, 50000, &got), 0);
    assert_true(got == 50000 || at + got == DOC);
  }
  assert_memory_equal(all, doc, DOC);
  assert_int_equal(st_blob_reader_read(rd, DOC, all, 10, &got), 0);
  assert_int_equal(got, 0);
  st_blob_reader_close(rd);
  st_blob_reader_close(NULL);
  uint8_t nothing[32] = {9};
  assert_int_equal(st_blobstore_reader_open(f->s, nothing, &rd),
                   NIMBUS_ENOTFOUND);
  assert_null(rd);
  free(all);
  /* Hashed as it was: the commit's re-hash sees the same bytes. */
  memset(whole, 0, sizeof whole);
  assert_int_equal(
      st_blobstore_blob_hash(f->s, sha, DOC, whole, sums, NULL, NULL), 0);
  assert_memory_equal(whole, sha, 32);
  assert_memory_equal(sums, plain, 6 * ST_SEGSUM);

  /* The same content committed again keeps the compressed copy. */
  commit_bytes(f->s, "bea", "d2", doc, DOC, sha);
  assert_int_equal(blob_file_size(f, sha), stored);
  assert_int_equal(count_files(staging), 0);
  free(plain);
  free(sums);
  free(doc);
}

static void test_pack_incompressible(void **state) {
  fixture *f = *state;
  uint8_t *rnd = malloc(DOC), sha[32];
  char staging[256];
  assert_non_null(rnd);
  assert_int_equal(nb_random_bytes(rnd, DOC), 0);
  snprintf(staging, sizeof staging, "%s/staging", f->root);
  commit_bytes(f->s, "cat", "r", rnd, DOC, sha);
  uint64_t stored = 0, done = 0;
  /* The trial gives up after the first 1 MiB: nothing later is read. */
  st_blob_pack_opts o = {
      .level = 3, .trial = true, .progress = stop_at_second, .arg = &done};
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored), 0);
  assert_int_equal(stored, DOC);
  assert_int_equal(done, 0);
  /* Without it, the work stops once the limit is passed. */
  o.trial = false;
  o.progress = NULL;
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored), 0);
  assert_int_equal(stored, DOC);
  assert_int_equal(blob_file_size(f, sha), DOC);
  assert_int_equal(count_files(staging), 0);
  assert_int_equal(st_blobstore_stored(f->s, sha, DOC, &stored), 0);
  assert_int_equal(stored, DOC);
  /* Tiny and absent blobs, and a level zstd has not. */
  uint8_t tiny_sha[32], none[32] = {7};
  commit_bytes(f->s, "cat", "t", (const uint8_t *)"aaaaaaaaaa", 10, tiny_sha);
  assert_int_equal(st_blobstore_pack(f->s, tiny_sha, 10, &o, &stored), 0);
  assert_int_equal(stored, 10);
  assert_int_equal(st_blobstore_pack(f->s, none, DOC, &o, &stored),
                   NIMBUS_ENOTFOUND);
  o.level = 99;
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored),
                   NIMBUS_EINVAL);
  free(rnd);
}

/* A byte changed inside one frame: that segment is refused (zstd's
 * checksum), the others still read. */
static void test_pack_damaged(void **state) {
  fixture *f = *state;
  uint8_t *doc = text_bytes(DOC), sha[32], buf[64];
  char hex[65], path[400];
  commit_bytes(f->s, "dee", "d", doc, DOC, sha);
  uint64_t stored = 0;
  st_blob_pack_opts o = {.level = 3};
  assert_int_equal(st_blobstore_pack(f->s, sha, DOC, &o, &stored), 0);
  assert_true(stored < DOC);
  nb_hex(sha, 32, hex);
  snprintf(path, sizeof path, "%s/blobs/%.2s/%s", f->root, hex, hex);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  /* The index's entries for segments 2 and 3: the middle of frame 2. */
  uint8_t ix[16];
  assert_int_equal(pread(fd, ix, 16, 64 + 8 * 2), 16);
  uint64_t a = 0, e = 0;
  for (int i = 7; i >= 0; i--) {
    a = a << 8 | ix[i];
    e = e << 8 | ix[8 + i];
  }
  uint8_t c = 0;
  off_t at = (off_t)(a + (e - a) / 2);
  assert_int_equal(pread(fd, &c, 1, at), 1);
  c ^= 0x55;
  assert_int_equal(pwrite(fd, &c, 1, at), 1);
  close(fd);
  size_t got = 0;
  assert_int_equal(st_blobstore_read(f->s, sha, 2 * SEG + 10, buf, 8, &got),
                   NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "damaged"));
  assert_int_equal(st_blobstore_read(f->s, sha, 3 * SEG, buf, 8, &got), 0);
  assert_memory_equal(buf, doc + 3 * SEG, 8);
  /* The head's size damaged: refused, never its compressed bytes served
   * as the blob's. */
  fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  c = 0xff;
  assert_int_equal(pwrite(fd, &c, 1, 15), 1);
  close(fd);
  assert_int_equal(st_blobstore_read(f->s, sha, 0, buf, 8, &got), NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "head"));
  free(doc);
}

/* ---- The store over its backend interface --------------------------------
 * A spy backend forwards every operation to a local one and notes what it
 * was given; it can refuse writes for want of space, say how much space
 * there is, and return reads in short pieces. */

typedef struct spy_be {
  st_blob_be base;
  st_blob_be *in;
  uint8_t staged[32]; /* the last staging name stage_write got */
  int write_rc;       /* when not 0, stage_write returns it */
  uint64_t avail;     /* what space says */
  size_t max_read;    /* when not 0, no read returns more */
  atomic_size_t reads;
  unsigned writes;      /* stage_write calls */
  unsigned drop_before; /* not 0: the object goes before write number N */
} spy_be;

static spy_be *spy_of(st_blob_be *be) { return (spy_be *)be; }
#define IN(be) (spy_of(be)->in)

static int spy_stage_write(st_blob_be *be, const uint8_t name[32],
                           uint64_t offset, const void *p, size_t n,
                           uint64_t reserve_end, bool entry_durable) {
  memcpy(spy_of(be)->staged, name, 32);
  if (spy_of(be)->write_rc != 0)
    return spy_of(be)->write_rc;
  if (++spy_of(be)->writes == spy_of(be)->drop_before)
    assert_int_equal(IN(be)->ops->stage_drop(IN(be), name), 0);
  return IN(be)->ops->stage_write(IN(be), name, offset, p, n, reserve_end,
                                  entry_durable);
}
static int spy_stage_undo(st_blob_be *be, const uint8_t name[32],
                          uint64_t offset, size_t n) {
  return IN(be)->ops->stage_undo(IN(be), name, offset, n);
}
static int spy_stage_lock(st_blob_be *be, const uint8_t name[32], int *lock) {
  return IN(be)->ops->stage_lock(IN(be), name, lock);
}
static void spy_stage_unlock(st_blob_be *be, int lock) {
  IN(be)->ops->stage_unlock(IN(be), lock);
}
static int spy_stage_drop(st_blob_be *be, const uint8_t name[32]) {
  return IN(be)->ops->stage_drop(IN(be), name);
}
static int spy_stage_commit(st_blob_be *be, const uint8_t name[32],
                            uint64_t size, const uint8_t hash[32]) {
  return IN(be)->ops->stage_commit(IN(be), name, size, hash);
}
static int spy_stage_replace(st_blob_be *be, const uint8_t name[32],
                             const uint8_t hash[32]) {
  return IN(be)->ops->stage_replace(IN(be), name, hash);
}
static int spy_stage_sweep(st_blob_be *be, int64_t max_age_ms,
                           size_t *removed) {
  return IN(be)->ops->stage_sweep(IN(be), max_age_ms, removed);
}

/* The spy's handle: the local backend's, and the cap on each read. */
typedef struct spy_rd {
  st_blob_rd base;
  st_blob_rd *in;
  const st_blob_backend *ops;
  spy_be *be;
} spy_rd;

static int spy_read_open(st_blob_be *be, st_blob_ns ns, const uint8_t name[32],
                         unsigned flags, st_blob_rd **rd) {
  spy_rd *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NIMBUS_ENOMEM;
  int rc = IN(be)->ops->read_open(IN(be), ns, name, flags, &r->in);
  if (rc != 0) {
    free(r);
    return rc;
  }
  r->base.what = r->in->what;
  r->ops = IN(be)->ops;
  r->be = spy_of(be);
  *rd = &r->base;
  return 0;
}
static int spy_read(st_blob_rd *rd, uint64_t offset, void *buf, size_t n,
                    size_t *got) {
  spy_rd *r = (spy_rd *)rd;
  atomic_fetch_add(&r->be->reads, 1);
  if (r->be->max_read != 0 && n > r->be->max_read)
    n = r->be->max_read;
  return r->ops->read(r->in, offset, buf, n, got);
}
static void spy_read_close(st_blob_rd *rd) {
  spy_rd *r = (spy_rd *)rd;
  r->ops->read_close(r->in);
  free(r);
}
static int spy_has(st_blob_be *be, const uint8_t hash[32], bool *exists) {
  return IN(be)->ops->has(IN(be), hash, exists);
}
static int spy_each_old(st_blob_be *be, int64_t max_age_ms, st_blob_each_fn fn,
                        void *arg) {
  return IN(be)->ops->each_old(IN(be), max_age_ms, fn, arg);
}
static int spy_remove(st_blob_be *be, const uint8_t hash[32]) {
  return IN(be)->ops->remove(IN(be), hash);
}
static int spy_space(st_blob_be *be, uint64_t *avail) {
  *avail = spy_of(be)->avail;
  return 0;
}
static void spy_free(st_blob_be *be) {
  IN(be)->ops->free(IN(be));
  free(be);
}

/* No set_direct: the store must do without it. */
static const st_blob_backend spy_ops = {
    .name = "spy",
    .stage_write = spy_stage_write,
    .stage_undo = spy_stage_undo,
    .stage_lock = spy_stage_lock,
    .stage_unlock = spy_stage_unlock,
    .stage_drop = spy_stage_drop,
    .stage_commit = spy_stage_commit,
    .stage_replace = spy_stage_replace,
    .stage_sweep = spy_stage_sweep,
    .read_open = spy_read_open,
    .read = spy_read,
    .read_close = spy_read_close,
    .has = spy_has,
    .each_old = spy_each_old,
    .remove = spy_remove,
    .space = spy_space,
    .free = spy_free,
};

/* A store over a spy around a local backend in f->tmp/spy; *spy stays the
 * store's (freed with it). */
static st_blobstore *spy_store(fixture *f, spy_be **spy) {
  char dir[200];
  snprintf(dir, sizeof dir, "%s/spy", f->tmp);
  spy_be *b = calloc(1, sizeof *b);
  assert_non_null(b);
  b->base.ops = &spy_ops;
  atomic_init(&b->reads, 0);
  assert_int_equal(st_blob_fs_open(dir, &b->in), 0);
  st_blobstore *s = NULL;
  assert_int_equal(st_blobstore_new(&b->base, &s), 0);
  st_blobstore_set_direct(s, true); /* a no-op without the operation */
  *spy = b;
  return s;
}

/* The backend is handed the SHA-256 of "<terminal>\n<upload>" as the
 * staging name, never the strings; the hashing and ranged reads above it
 * take reads that come back a few bytes at a time. */
static void test_backend_names_short_reads(void **state) {
  fixture *f = *state;
  spy_be *spy = NULL;
  st_blobstore *s = spy_store(f, &spy);
  const char *up = "../../etc/passwd";
  uint8_t want[32];
  char key[64];
  int n = snprintf(key, sizeof key, "mallory\n%s", up);
  nb_sha256(key, (size_t)n, want);
  assert_int_equal(
      st_blobstore_stage(s, "mallory", up, 0, f->bytes, SIZE, 0, false), 0);
  assert_memory_equal(spy->staged, want, 32);
  spy->max_read = 1000;
  uint8_t whole[32], segs[3][ST_SEGSUM];
  assert_int_equal(
      st_blobstore_stage_hash(s, "mallory", up, SIZE, whole, segs, NULL, NULL),
      0);
  assert_memory_equal(whole, f->sha, 32);
  assert_true(atomic_load(&spy->reads) >= SIZE / 1000);
  for (size_t i = 0; i < 3; i++) {
    size_t len = SIZE - i * SEG < SEG ? SIZE - i * SEG : SEG;
    assert_true(st_segsum_ok(f->bytes + i * SEG, len, segs[i], ST_SEGSUM));
  }
  assert_int_equal(st_blobstore_stage_commit(s, "mallory", up, SIZE, f->sha),
                   0);
  uint8_t *buf = malloc(SIZE);
  assert_non_null(buf);
  size_t got = 0;
  assert_int_equal(st_blobstore_read(s, f->sha, 10, buf, SIZE, &got), 0);
  assert_int_equal(got, SIZE - 10);
  assert_memory_equal(buf, f->bytes + 10, SIZE - 10);
  free(buf);
  /* A stored blob hashed through short reads too. */
  memset(whole, 0, sizeof whole);
  assert_int_equal(
      st_blobstore_blob_hash(s, f->sha, SIZE, whole, segs, NULL, NULL), 0);
  assert_memory_equal(whole, f->sha, 32);
  /* A blob the backend does not hold, and a short staging object. */
  uint8_t other[32] = {1};
  assert_int_equal(st_blobstore_read(s, other, 0, whole, 8, &got),
                   NIMBUS_ENOTFOUND);
  assert_int_equal(
      st_blobstore_stage(s, "mallory", "b", 0, f->bytes, 100, 0, false), 0);
  assert_int_equal(
      st_blobstore_stage_hash(s, "mallory", "b", SIZE, whole, segs, NULL, NULL),
      NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "shorter"));
  st_blobstore_free(s);
}

/* A write the backend refuses for want of space makes the store full
 * since then; a write that succeeds ends it, and so does free space found
 * at the first look. */
static void test_backend_full(void **state) {
  fixture *f = *state;
  spy_be *spy = NULL;
  st_blobstore *s = spy_store(f, &spy);
  assert_int_equal(st_blobstore_full_since(s), 0);
  spy->write_rc = NIMBUS_ENOSPC;
  int64_t t0 = nb_now_ms();
  assert_int_equal(st_blobstore_stage(s, "ivy", "a", 0, f->bytes, 10, 0, false),
                   NIMBUS_ENOSPC);
  int64_t since = st_blobstore_full_since(s); /* looks: avail is 0 */
  assert_true(since >= t0 && since <= nb_now_ms());
  spy->write_rc = 0;
  assert_int_equal(st_blobstore_stage(s, "ivy", "a", 0, f->bytes, 10, 0, false),
                   0);
  assert_int_equal(st_blobstore_full_since(s), 0);
  st_blobstore_free(s);

  s = spy_store(f, &spy);
  spy->write_rc = NIMBUS_ENOSPC;
  spy->avail = 1 << 30;
  assert_int_equal(st_blobstore_stage(s, "ivy", "a", 0, f->bytes, 10, 0, false),
                   NIMBUS_ENOSPC);
  assert_int_equal(st_blobstore_full_since(s), 0);
  st_blobstore_free(s);
}

/* The staging object of a new form removed between two of its writes (as
 * the sweep of abandoned staging would) and made again by the next, its
 * start a hole: the pack reads it back, finds it is not the blob, and
 * leaves the blob as it was. */
static void test_pack_lost_writes(void **state) {
  fixture *f = *state;
  spy_be *spy = NULL;
  st_blobstore *s = spy_store(f, &spy);
  uint8_t *doc = text_bytes(DOC), sha[32];
  char staging[256];
  snprintf(staging, sizeof staging, "%s/spy/staging", f->tmp);
  commit_bytes(s, "fay", "d", doc, DOC, sha);
  spy->writes = 0;
  spy->drop_before = 2; /* the frames, then (dropped) the head */
  uint64_t stored = 0;
  st_blob_pack_opts o = {.level = 3};
  assert_int_equal(st_blobstore_pack(s, sha, DOC, &o, &stored), NIMBUS_EIO);
  assert_non_null(strstr(st_blobstore_errstr(), "compressed form"));
  assert_int_equal(stored, DOC);
  assert_int_equal(count_files(staging), 0);
  uint8_t *all = malloc(DOC);
  assert_non_null(all);
  size_t got = 0;
  assert_int_equal(st_blobstore_read(s, sha, 0, all, DOC, &got), 0);
  assert_int_equal(got, DOC);
  assert_memory_equal(all, doc, DOC);
  spy->drop_before = 0;
  assert_int_equal(st_blobstore_pack(s, sha, DOC, &o, &stored), 0);
  assert_true(stored < DOC / 2);
  memset(all, 0, DOC);
  assert_int_equal(st_blobstore_read(s, sha, 0, all, DOC, &got), 0);
  assert_memory_equal(all, doc, DOC);
  free(all);
  free(doc);
  st_blobstore_free(s);
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
      cmocka_unit_test_setup_teardown(test_leftover_longer_file_is_cut, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stage_reserve, setup, teardown),
      cmocka_unit_test(test_upload_reserve_end),
      cmocka_unit_test(test_upload_have),
      cmocka_unit_test_setup_teardown(test_commit_during_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_put_during_commit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stage_undo, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pack_document, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pack_incompressible, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_pack_damaged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pack_lost_writes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backend_names_short_reads, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_backend_full, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
