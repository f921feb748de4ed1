/* libFuzzer target of the agent's package extractor (terminal-agent/src/
 * pkg.c, ag_pkg_extract_mem): every input is unpacked, as tar or tar.gz,
 * into an empty directory x inside a scratch directory, and must leave
 * nothing outside x (no ".." escape, no link followed or made, no file
 * anywhere else); whatever is inside x must be regular files and
 * directories only. x is emptied after each input. Build and run with
 * clang, as fuzz_decode (schemas/SPEC.md, section 8):
 *
 *   cmake --build build-fuzz --target fuzz_extract
 *   mkdir -p build-fuzz/corpus-extract
 *   ./build-fuzz/bin/fuzz_extract -max_total_time=60 -malloc_limit_mb=256 \
 *       build-fuzz/corpus-extract
 */
#include "ag_load.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64], target[96];
static int xfd = -1;

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st;
  (void)flag;
  if (ftw->level == 0)
    return 0; /* x itself stays */
  return remove(path);
}

/* Everything below x is a regular file or a directory. */
static int check_one(const char *path, const struct stat *st, int flag,
                     struct FTW *ftw) {
  (void)ftw;
  if (flag == FTW_SL || flag == FTW_SLN ||
      !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode))) {
    fprintf(stderr, "fuzz_extract: %s is not a file or directory\n", path);
    abort();
  }
  return 0;
}

/* The scratch directory goes at exit (x is empty between inputs). */
static void teardown(void) {
  (void)rmdir(target);
  (void)rmdir(root);
}

static void setup(void) {
  strcpy(root, "/tmp/nimbus-fuzz-extract.XXXXXX");
  if (mkdtemp(root) == NULL)
    abort();
  snprintf(target, sizeof target, "%s/x", root);
  if (mkdir(target, 0700) != 0 ||
      (xfd = open(target, O_RDONLY | O_DIRECTORY)) < 0)
    abort();
  atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (xfd < 0)
    setup();
  char err[512];
  /* A small bound, so that large outputs are refused quickly. */
  (void)ag_pkg_extract_mem(data, size, xfd, 1 << 20, err, sizeof err);
  DIR *d = opendir(root);
  if (d == NULL)
    abort();
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
        strcmp(e->d_name, "x") != 0) {
      fprintf(stderr, "fuzz_extract: %s/%s was written outside x\n", root,
              e->d_name);
      abort();
    }
  closedir(d);
  if (nftw(target, check_one, 16, FTW_PHYS) != 0 ||
      nftw(target, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    abort();
  return 0;
}
