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

#include "nimbus/agent.h"

#include <msgpack.h>

/* Blob segments: what one blob.put carries and one blob.get returns. */
#define BK_SEGMENT (256 * 1024)
/* Longest item name (bytes), as the cloud accepts. */
/* Longest snapshot label (bytes). */
#define BK_LABEL_MAX 255
/* Items go inline in backup.commit up to this many encoded bytes, else in
 * a manifest blob: a task may be 272 KiB whole (SC_MAX_TASK). */
#define BK_INLINE_MAX (200 * 1024)
/* The cloud refuses a manifest over 64 MiB or with more items. */
#define BK_MANIFEST_MAX_BYTES (64 * 1024 * 1024)
#define BK_MANIFEST_MAX_ITEMS 200000
/* blob.has takes at most this many hashes. */
#define BK_HAS_BATCH 1000
/* The SHA-256 of no bytes, the empty blob. */
#define BK_EMPTY_SHA256                                                      \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- Names and kinds (bk_util.c) --------------------------------------- */


/* The kind of a file named `name` (its last component is what counts):
 * "contact" (.vcf), "sms" (.sms.jsonl), "photo" (jpg jpeg png gif heic
 * heif webp bmp tif tiff dng), "video" (mp4 mov m4v 3gp mkv webm avi),
 * else "file". Extensions compare without regard to case. */
const char *bk_kind_of(const char *name);

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
int bk_open_parent(int rootfd, const char *name, bool create,
                   const char **base, char *err, size_t errcap);

/* Copies `n` bytes from the start of `in` to `out` (both regular files),
 * in the kernel when it can (copy_file_range), else through a buffer of
 * BK_SEGMENT bytes. Returns 0 or -1 with errno set (EIO when `in` is
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

/* ---- The pipeline (bk_pipe.c) ------------------------------------------- */

typedef struct bk_op bk_op;
/* Finishes an op in the thread that called bk_pipe_step. `reply` is the
 * final reply (the callee may keep it: set *keep, else it is freed), NULL
 * when there is none: op->err is then NIMBUS_EREFUSED (the broker refused
 * the task) or NIMBUS_ECANCELED (bk_pipe_abandon: only free what the op
 * holds). */
typedef void (*bk_op_fn)(bk_op *op, nimbus_reply *reply, bool *keep);

struct bk_op {
  bk_op_fn fn;
  void *ctx;      /* the caller's */
  int64_t a, b;   /* the caller's (offset, length, ...) */
  int err;        /* 0, or NIMBUS_EREFUSED */
  /* private */
  bk_op *next;         /* the ended list */
  bk_op *lprev, *lnext; /* the list of ops in flight */
  nimbus_task *task;
  struct bk_pipe *pipe;
};

typedef struct bk_pipe {
  nimbus_agent *agent;
  int max;      /* tasks in flight at most */
  int inflight; /* submitted, not yet finished by bk_pipe_step */
  int stall_ms; /* bk_pipe_step gives up after this long without a reply */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* CLOCK_MONOTONIC */
  bk_op *head, *tail;  /* ended, to be finished; guarded by mu */
  bk_op *live;         /* in flight (the caller's thread only) */
  int64_t last_reply;  /* nb_mono_ms of the last reply; guarded by mu */
} bk_pipe;

int bk_pipe_init(bk_pipe *p, nimbus_agent *a, int max, int stall_ms);
void bk_pipe_fini(bk_pipe *p);

/* True when another task may go now. */
static inline bool bk_pipe_room(const bk_pipe *p) {
  return p->inflight < p->max;
}

/* Submits a task; `op` (the caller's, with fn set) is finished later by
 * bk_pipe_step and must stay valid until then. Returns 0, or the error of
 * nimbus_submit (then op is not used). */
int bk_pipe_submit(bk_pipe *p, bk_op *op, const char *type,
                   const uint8_t *args, size_t args_len, const uint8_t *data,
                   size_t data_len, bool has_data);

/* Submits one task and runs bk_pipe_step until it has ended (finishing
 * any other that ends meanwhile). Returns 0 and *out, the final reply (the
 * caller frees it); NIMBUS_EREFUSED (the broker refused it; *out NULL);
 * NIMBUS_ETIMEDOUT; or the error of nimbus_submit. */
int bk_pipe_call(bk_pipe *p, const char *type, const uint8_t *args,
                 size_t args_len, nimbus_reply **out);

/* Gives up every task in flight (nimbus_task_release: no callback after
 * this) and finishes each op with reply NULL and err NIMBUS_ECANCELED. */
void bk_pipe_abandon(bk_pipe *p);

/* Waits until at least one task in flight has ended and finishes every
 * ended one (calls their fn). Returns 0; NIMBUS_ETIMEDOUT when no reply,
 * final or progress, came for stall_ms while tasks were in flight;
 * NIMBUS_ECANCELED when bk_interrupted is set (within 200 ms); 0 at once
 * when none is in flight. */
int bk_pipe_step(bk_pipe *p);

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

/* "12.3 MiB" into buf. */
void bk_fmt_bytes(int64_t n, char *buf, size_t cap);

/* Prints "nimbus-agent: <message>" and a newline on stderr, first erasing
 * the progress line of `p` (drawn again by its next bk_progress_show). */
void bk_say(bk_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- msgpack ------------------------------------------------------------ */

/* Packs a str; k: v entries with a str or an int value. */
void bk_pk_str(msgpack_packer *pk, const char *s);
void bk_pk_kv_str(msgpack_packer *pk, const char *k, const char *v);
void bk_pk_kv_int(msgpack_packer *pk, const char *k, int64_t v);
/* True, with *v, when `o` (may be NULL) is an int that fits int64. */
bool bk_obj_int(const msgpack_object *o, int64_t *v);
/* True when `o` (may be NULL) is the str `s`. */
bool bk_obj_str_eq(const msgpack_object *o, const char *s);
/* Decodes the reply's result strictly into *out when it is a map: true,
 * and *zone (free with msgpack_zone_free) holds it; false (and *zone
 * NULL) when the result is absent, malformed or not a map. */
bool bk_result_map(const nimbus_reply *r, msgpack_object *out,
                   msgpack_zone **zone);
/* True for a reply with status "ok". */
bool bk_reply_ok(const nimbus_reply *r);

#endif
