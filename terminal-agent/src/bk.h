/* The inside of `nimbus-agent backup`, `backups` and `restore`, shared by
 * cli_backup.c, cli_restore.c and tests/unit/test_backup.c:
 *
 * - item names and kinds (PROTOCOL.md, Backup and restore): the same rules
 *   the cloud applies, checked again locally on every name read from a
 *   snapshot before it comes near the file system;
 * - the restore side's directory walk, which opens every component
 *   relative to the directory above it with O_NOFOLLOW, so that nothing is
 *   ever created or written outside the target directory;
 * - streaming SHA-256 of a file, and the hash cache (hashcache.c): the
 *   SHA-256 of files already read, keyed by (absolute path, size, mtime in
 *   ns, inode), kept in <state_dir>/hash-cache;
 * - a pipeline of tasks over one agent (bk_pipe.c): many tasks in flight,
 *   each finished in the calling thread, one at a time;
 * - the progress line on stderr.
 *
 * Nothing here is thread-safe unless said otherwise: the CLI runs all of
 * it on its main thread. */
#ifndef BK_H
#define BK_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bk_pipe.h"
#include "sc_const.h"
#include "nimbus/agent.h"

#include <msgpack.h>

/* Items go inline in backup.commit up to this many encoded bytes, else in
 * a manifest blob: a task may be 272 KiB whole (SC_MAX_TASK). */
#define BK_INLINE_MAX (200 * 1024)
/* The SHA-256 of no bytes, the empty blob. */
#define BK_EMPTY_SHA256                                                        \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- Names and kinds (bk_util.c) --------------------------------------- */

/* The kind of a file named `name` (its last component is what counts):
 * "contact" (.vcf), "sms" (.sms.jsonl), "photo" (jpg jpeg png gif heic
 * heif webp bmp tif tiff dng), "video" (mp4 mov m4v 3gp mkv webm avi),
 * else "file". Extensions compare without regard to case. */
const char *bk_kind_of(const char *name);

/* True when the last component of item name or path `name` has the form
 * of restore's part files, ".nimbus-<24 lower hex>.part": a leftover of
 * an interrupted restore, never backed up, and never restored (it could
 * be taken for another item's part file and resumed into). */
bool bk_is_part_name(const char *name);

/* True when `s` (n bytes) is one of the five kinds. */
bool bk_kind_valid(const char *s, size_t n);

/* True when `s` (n bytes) is 64 lowercase hex characters. */
bool bk_hex_valid(const char *s, size_t n);

/* ---- Files (bk_util.c) -------------------------------------------------- */

/* Called with the bytes just read while hashing, for a progress line. */
typedef void (*bk_tick_fn)(void *ctx, size_t n);

/* SHA-256 of everything `fd` yields from its current position to its end,
 * read with read() into `buf` (cap bytes). Writes the hash into out[32]
 * and the bytes read into *n. Returns 0, or -1 with errno set (EINTR when
 * bk_interrupted was set meanwhile). */
int bk_hash_fd(int fd, uint8_t *buf, size_t cap, uint8_t out[32], int64_t *n,
               bk_tick_fn tick, void *ctx);

/* Opens the directory that holds item `name` (already checked with
 * nb_relpath_problem) below `rootfd`, one component at a time with openat(...,
 * O_DIRECTORY | O_NOFOLLOW), creating missing ones with mkdirat when
 * `create`. A symbolic link, or anything but a directory, on the way is
 * refused: nothing below is ever reached through a link. Returns the
 * directory's fd (the caller closes it) and points *base at the last
 * component of `name`; or -1 with errno set (ELOOP or ENOTDIR for a link
 * or a file on the way, ENOENT when missing and !create) and a sentence
 * in err. */
int bk_open_parent(int rootfd, const char *name, bool create, const char **base,
                   char *err, size_t errcap);

/* Copies `n` bytes from the start of `in` to `out` (both regular files),
 * in the kernel when it can (copy_file_range), else through a buffer of
 * SC_SEGMENT bytes. Returns 0 or -1 with errno set (EIO when `in` is
 * shorter). */
int bk_copy_fd(int in, int out, int64_t n);

/* mtime in ms since the epoch (rounded down, also before 1970) of a stat
 * time; and the timespec for a time in ms. */
int64_t bk_ms_of_timespec(int64_t sec, int64_t nsec);
void bk_timespec_of_ms(int64_t ms, int64_t *sec, int64_t *nsec);

/* The agent's state directory, as the library finds it: `opt` when set,
 * else $NIMBUS_STATE_DIR, else $HOME/.nimbus. A new string, or NULL. */
char *bk_state_dir(const char *opt);

/* ---- Interruption (bk_util.c) ------------------------------------------- */

/* The signal (SIGINT, SIGTERM, SIGHUP) that asked the run to stop, once
 * bk_catch_signals ran; 0 until then. The loops of backup and restore
 * stop at their next chance, keep what is done (the hash cache, verified
 * files) and exit with 128 + the signal. A second signal ends the process
 * at once (the handler is reset after the first). */
extern volatile sig_atomic_t bk_interrupted;
void bk_catch_signals(void);

/* The exit status of a run stopped by bk_interrupted: 128 + the signal. */
static inline int bk_signal_status(void) { return 128 + (int)bk_interrupted; }

/* True once bk_interrupted is set: the stop hook of bk_pipe and of the
 * transfer engine (ctx unused). */
bool bk_stopped(void *ctx);

/* Sleeps `ms`, less when bk_interrupted is set. */
void bk_sleep_ms(int64_t ms);

/* ---- The hash cache (hashcache.c) --------------------------------------- */

typedef struct bk_hcache_entry {
  char *path; /* absolute */
  int64_t size, mtime_ns;
  uint64_t ino;
  uint8_t sha[32];
  bool used; /* looked up or put during this run */
} bk_hcache_entry;

typedef struct bk_hcache {
  char *file; /* <state_dir>/hash-cache */
  bk_hcache_entry *v;
  size_t n, cap;
  size_t *slots; /* open addressing by path: index + 1, 0 = empty */
  size_t nslots; /* a power of two, at least 2n */
  bool dirty;
  size_t bad_lines; /* lines of the file that did not parse (ignored) */
} bk_hcache;

/* Reads <dir>/hash-cache into `c` (a missing file is an empty cache; lines
 * that do not parse are ignored and counted). Returns 0, or NIMBUS_ENOMEM,
 * or NIMBUS_EIO when the file exists but cannot be read. */
int bk_hcache_load(bk_hcache *c, const char *dir);

/* The hash of `path` if the cache holds it with exactly this size, mtime
 * and inode; NULL otherwise. Marks the entry used. */
const uint8_t *bk_hcache_get(bk_hcache *c, const char *path, int64_t size,
                             int64_t mtime_ns, uint64_t ino);

/* Records (replaces) the hash of `path`. Returns 0 or NIMBUS_ENOMEM. */
int bk_hcache_put(bk_hcache *c, const char *path, int64_t size,
                  int64_t mtime_ns, uint64_t ino, const uint8_t sha[32]);

/* Writes the cache when it changed: a temporary file in the same
 * directory, fsync, rename over hash-cache. Entries used during this run
 * are kept; the others only while lstat still finds a regular file there
 * with the same size, mtime and inode. Returns 0, or NIMBUS_EIO with a
 * sentence in err. */
int bk_hcache_save(bk_hcache *c, char *err, size_t errcap);

void bk_hcache_free(bk_hcache *c);

/* ---- Progress (bk_util.c) ----------------------------------------------- */

typedef struct bk_progress {
  int mode; /* 0 quiet, 1 a line redrawn on a terminal, 2 JSON lines */
  const char *phase;
  int64_t bytes_done, bytes_total;
  int64_t files_done, files_total;
  int64_t start_ms, last_ms, shown_ms;
  int64_t rate_bytes, rate_ms; /* a window for the rate */
  double rate;                 /* bytes per second, smoothed */
  FILE *fp;
  bool drawn; /* a line is on the terminal without its newline */
  /* The phase counts steps, not bytes (the cloud's done/total of an
   * offload task): shown as a percentage, and as done/total in JSON.
   * Set after bk_progress_phase, which clears it. */
  bool counts;
} bk_progress;

/* mode as above, writing to fp (stderr). */
void bk_progress_init(bk_progress *p, int mode, FILE *fp);
/* A new phase: counters reset. */
void bk_progress_phase(bk_progress *p, const char *phase, int64_t bytes_total,
                       int64_t files_total);
/* Redraws at most every 200 ms (or now when `force`). */
void bk_progress_show(bk_progress *p, bool force);
/* Erases the line on a terminal (before printing anything else; the next
 * bk_progress_show draws it again). */
void bk_progress_clear(bk_progress *p);
/* Shows the phase's last state and, on a terminal, leaves it there. */
void bk_progress_finish(bk_progress *p);
/* A transfer's progress callback (nimbus_blob_progress_cb's shape) for a
 * ctx that is a bk_progress, or a struct whose first member is one: sets
 * the phase's bytes done and total and redraws (bk_progress_show). */
void bk_progress_bytes(void *ctx, int64_t done, int64_t total);

/* "12.3 MiB" into buf. */
void bk_fmt_bytes(int64_t n, char *buf, size_t cap);

/* Prints "nimbus-agent: <message>" and a newline on stderr, first erasing
 * the progress line of `p` (drawn again by its next bk_progress_show). */
void bk_say(bk_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
