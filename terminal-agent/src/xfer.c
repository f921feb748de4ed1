/* The transfer engine of libnimbus-agent (nimbus/agent.h, "Blobs"):
 * uploads and downloads of blobs, many at once, over one agent, driven by
 * the thread that calls nimbus_xfer_run.
 *
 * Every task goes through a bk_pipe (bk_pipe.c): the agent's thread only
 * queues ended tasks, and this file's state is touched by the run's thread
 * alone, so it takes no lock. One pass of the loop fills the window of
 * `jobs` tasks in this order: hashing of uploads that came without a
 * SHA-256, blob.has for up to SC_HAS_MAX uploads at a time, the segments
 * and commits of the uploads under way, new uploads (blob.status first when
 * there is more than one segment, to resume), then the ranges of the
 * downloads under way and new downloads. At most `jobs` blobs of each
 * direction are under way at once, each with an open file, so memory and
 * file descriptors stay bounded however many transfers are queued; a
 * segment is read from its file (pread) only when its blob.put goes.
 *
 * A transient answer (429, 500, 503) puts the step off until a timer
 * (retry_after plus jitter) runs out; the loop waits for the earliest
 * timer or the next reply, whichever comes first. A transfer that ends
 * early (an error) while tasks of it are in flight stays allocated until
 * the run ends, so those tasks' replies find it; replies to an ended
 * transfer are dropped. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bk_pipe.h"
#include "nb_util.h"
#include "nimbus/agent.h"
#include "sc.h"

/* A commit answered 409/404 (segments lost) starts the upload over from
 * blob.status at most this often; a download whose bytes do not match is
 * fetched again from the start at most this often. */
#define XF_RESTARTS 3
/* retry_after when a transient answer names none, and the longest. */
#define XF_RETRY_DEFAULT_MS 1000
#define XF_RETRY_MAX_MS 30000

enum {
  U_HASH = 0,   /* to be hashed (no SHA-256 given) */
  U_UNKNOWN,    /* to ask blob.has */
  U_ASKING,     /* blob.has in flight */
  U_MISSING,    /* to upload, waiting its turn */
  U_STATUS,     /* blob.status to send (timer) */
  U_STATUSING,  /* blob.status in flight */
  U_PUTTING,    /* segments going */
  U_COMMIT,     /* blob.commit to send (timer) */
  U_COMMITTING, /* blob.commit in flight */
  U_ENDED
};

typedef struct xf_up xf_up;
typedef struct xf_down xf_down;

struct xf_up {
  struct nimbus_xfer *x;
  xf_up *qnext; /* the queue its state is in */
  xf_up *all;   /* every upload of this engine */
  int state;
  char *path;
  int fd; /* the source being read; own_fd when the engine opened it */
  bool own_fd;
  bool open; /* fstat'ed: size, mtime_ns and ino are the source's */
  nimbus_blob_read_fn read;
  void *read_ctx;
  int64_t size, mtime_ns; /* mtime_ns: the source's at open, checked */
  uint64_t ino;
  bool check_id; /* path: mtime_ns and ino must match at open */
  uint8_t sha[32];
  char hex[65];
  int64_t *ranges; /* [off, len] pairs still to send */
  size_t nranges, rcap, ri;
  int64_t roff;    /* next offset within ranges[ri] */
  bool sent_empty; /* the one put of an empty blob went */
  int ops;         /* tasks in flight that refer to it */
  int restarts;
  int64_t not_before, retry_since; /* timers (nb_mono_ms); 0: none */
  int64_t done, bytes;
  bool announced; /* on_progress told the total */
  nimbus_blob_done_cb on_done;
  nimbus_blob_progress_cb on_progress;
  void *ctx;
};

typedef struct xf_chunk {
  struct xf_chunk *next;
  int64_t off;
  nimbus_reply *reply; /* holds the bytes */
} xf_chunk;

struct xf_down {
  struct nimbus_xfer *x;
  xf_down *qnext, *all;
  bool active, ended;
  char hex[65];
  uint8_t sha[32];
  int64_t size; /* -1 until the first reply tells */
  int dirfd;
  char *name, *part;
  int64_t mtime_ms;
  bool set_mtime, keep_part, no_sync;
  int fd;
  EVP_MD_CTX *md;
  int64_t next_req, written;
  xf_chunk *chunks; /* arrived out of order, by offset */
  int64_t *redo;    /* offsets to ask for again */
  size_t nredo, credo;
  int gets, restarts;
  int64_t not_before, retry_since;
  int64_t bytes;
  bool fetched;
  nimbus_blob_done_cb on_done;
  nimbus_blob_progress_cb on_progress;
  void *ctx;
};

struct nimbus_xfer {
  nimbus_agent *agent;
  bk_pipe pipe;
  int jobs, timeout_ms;
  bool (*stop)(void *ctx);
  void *stop_ctx;
  atomic_int cancel;
  bool running;
  uint64_t rng;
  uint8_t *buf; /* one segment */
  /* Uploads: every one (all), and by state. */
  xf_up *uall;
  xf_up *hash_h, *hash_t, *unk_h, *unk_t, *miss_h, *miss_t;
  xf_up **uact;
  size_t nuact;
  int64_t has_not_before, has_retry_since;
  /* Downloads. */
  xf_down *dall;
  xf_down *dq_h, *dq_t;
  xf_down **dact;
  size_t ndact;
  size_t pending; /* transfers not yet ended */
};

typedef struct xf_op {
  bk_op op;
  nimbus_xfer *x;
  xf_up *up;
  xf_down *down;
  xf_up **batch; /* blob.has: the uploads asked about */
  size_t nbatch;
  int64_t off, len;
} xf_op;

/* ---- Small helpers ----------------------------------------------------- */

static bool xf_stopped(void *ctx) {
  nimbus_xfer *x = ctx;
  return atomic_load(&x->cancel) != 0 ||
         (x->stop != NULL && x->stop(x->stop_ctx));
}

/* xorshift64*: jitter only, no secret. */
static uint64_t xf_rand(nimbus_xfer *x) {
  x->rng ^= x->rng >> 12;
  x->rng ^= x->rng << 25;
  x->rng ^= x->rng >> 27;
  return x->rng * 2685821657736338717ULL;
}

/* The cloud said try again later: when. Returns the time (nb_mono_ms) the
 * step may go again, or -1 when that is past the caller's timeout counted
 * from *since (the first transient answer in a row; set here). */
static int64_t xf_retry_at(nimbus_xfer *x, const nimbus_reply *r,
                           int64_t *since) {
  int64_t wait = XF_RETRY_DEFAULT_MS, now = nb_mono_ms();
  msgpack_object res;
  msgpack_zone *z = NULL;
  if (bk_result_map(r, &res, &z))
    (void)bk_obj_int(sc_map_get(&res, "retry_after"), &wait);
  msgpack_zone_free(z);
  if (wait < 0)
    wait = 0;
  if (wait > XF_RETRY_MAX_MS)
    wait = XF_RETRY_MAX_MS;
  wait += (int64_t)(xf_rand(x) % (uint64_t)(wait / 4 + 1));
  if (*since == 0)
    *since = now;
  if (now + wait - *since > x->timeout_ms)
    return -1;
  return now + wait;
}

static bool xf_transient(const nimbus_reply *r) {
  return r->code == 429 || r->code == 500 || r->code == 503;
}

static int xf_err_of_code(int code) {
  switch (code) {
  case 404:
    return NIMBUS_ENOTFOUND;
  case 413:
    return NIMBUS_ETOOBIG;
  case 409:
  case 422:
    return NIMBUS_ECONFLICT;
  default:
    return NIMBUS_EIO;
  }
}

static xf_op *xf_op_new(nimbus_xfer *x, bk_op_fn fn) {
  xf_op *o = calloc(1, sizeof *o);
  if (o != NULL) {
    o->op.fn = fn;
    o->op.ctx = o;
    o->x = x;
  }
  return o;
}

static void xf_pack_upload(msgpack_sbuffer *sb, const char *hex) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  bk_pk_kv_str(&pk, "upload", hex);
}

/* ---- Ending ------------------------------------------------------------ */

typedef struct xf_end {
  int err, code;
  char error[320];
} xf_end;

static void xf_endf(xf_end *e, int err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void xf_endf(xf_end *e, int err, int code, const char *fmt, ...) {
  e->err = err;
  e->code = code;
  e->error[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->error, sizeof e->error, fmt, ap);
    va_end(ap);
  }
}

/* The cloud's error reply `r` to `what` ends the transfer. */
static void xf_end_reply(xf_end *e, const char *what, const nimbus_reply *r) {
  xf_endf(e, xf_err_of_code(r->code), r->code, "%s: error %d: %s", what,
          r->code, r->error != NULL ? r->error : "(no message)");
}

/* A task that came back without a reply (the broker refused it). */
static void xf_end_noreply(nimbus_xfer *x, xf_end *e, const char *what,
                           int err) {
  xf_endf(e, err, 0, "%s: %s", what,
          err == NIMBUS_EREFUSED ? nimbus_agent_errstr(x->agent)
                                 : nimbus_strerror(err));
}

static void xf_remove(void **v, size_t *n, const void *p) {
  for (size_t i = 0; i < *n; i++) {
    if (v[i] == p) {
      memmove(&v[i], &v[i + 1], (*n - i - 1) * sizeof *v);
      (*n)--;
      return;
    }
  }
}

static void xf_up_end(xf_up *u, const xf_end *e, bool moved) {
  nimbus_xfer *x = u->x;
  if (u->state == U_ENDED)
    return;
  u->state = U_ENDED;
  xf_remove((void **)x->uact, &x->nuact, u);
  if (u->own_fd && u->fd >= 0)
    close(u->fd);
  u->fd = -1;
  x->pending--;
  nimbus_blob_result r = {0};
  r.err = e != NULL ? e->err : 0;
  r.code = e != NULL ? e->code : 0;
  r.error = e != NULL && e->err != 0 ? e->error : NULL;
  if (u->hex[0] != '\0')
    memcpy(r.blob, u->hex, sizeof r.blob);
  r.size = u->size;
  r.moved = moved;
  r.bytes = u->bytes;
  r.fd = -1;
  u->on_done(u->ctx, &r);
}

static void xf_down_close(xf_down *d) {
  for (xf_chunk *c = d->chunks, *n; c != NULL; c = n) {
    n = c->next;
    nimbus_reply_free(c->reply);
    free(c);
  }
  d->chunks = NULL;
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
  EVP_MD_CTX_free(d->md);
  d->md = NULL;
  free(d->redo);
  d->redo = NULL;
  d->nredo = d->credo = 0;
}

/* Ends d. Its part file goes unless `keep` (a stop or a timeout: resumed
 * later) or it was renamed. */
static void xf_down_end(xf_down *d, const xf_end *e, bool keep) {
  nimbus_xfer *x = d->x;
  if (d->ended)
    return;
  d->ended = true;
  if (d->active)
    xf_remove((void **)x->dact, &x->ndact, d);
  d->active = false;
  int err = e != NULL ? e->err : 0;
  if (err != 0 && !keep && d->part != NULL)
    (void)unlinkat(d->dirfd, d->part, 0);
  if (err != 0 && d->fd >= 0) {
    close(d->fd);
    d->fd = -1;
  }
  x->pending--;
  nimbus_blob_result r = {0};
  r.err = err;
  r.code = e != NULL ? e->code : 0;
  r.error = err != 0 ? e->error : NULL;
  memcpy(r.blob, d->hex, sizeof r.blob);
  r.size = d->size;
  r.moved = d->fetched;
  r.bytes = d->bytes;
  /* Read-only, as said: a callback cannot write into the verified file
   * through it. */
  char self[40];
  int ro = -1;
  if (err == 0) {
    snprintf(self, sizeof self, "/proc/self/fd/%d", d->fd);
    ro = open(self, O_RDONLY | O_CLOEXEC);
  }
  r.fd = ro >= 0 ? ro : err == 0 ? d->fd : -1; /* no /proc: the part fd */
  d->on_done(d->ctx, &r);
  if (ro >= 0)
    close(ro);
  xf_down_close(d);
}

/* ---- Engine ------------------------------------------------------------ */

void nimbus_xfer_opts_init(nimbus_xfer_opts *o) { memset(o, 0, sizeof *o); }

int nimbus_xfer_new(nimbus_agent *a, const nimbus_xfer_opts *opts,
                    nimbus_xfer **out) {
  nimbus_xfer_opts d;
  nimbus_xfer_opts_init(&d);
  if (opts == NULL)
    opts = &d;
  *out = NULL;
  if (a == NULL || opts->jobs < 0 || opts->timeout_ms < 0)
    return NIMBUS_EINVAL;
  nimbus_xfer *x = calloc(1, sizeof *x);
  if (x == NULL)
    return NIMBUS_ENOMEM;
  x->agent = a;
  x->jobs = opts->jobs > 0 ? opts->jobs : 16;
  x->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
  x->stop = opts->stop;
  x->stop_ctx = opts->stop_ctx;
  atomic_init(&x->cancel, 0);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  x->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)x ^
           (uint64_t)getpid() ^ 0x9e3779b97f4a7c15ULL;
  x->buf = malloc(SC_SEGMENT);
  x->uact = calloc((size_t)x->jobs, sizeof *x->uact);
  x->dact = calloc((size_t)x->jobs, sizeof *x->dact);
  if (x->buf == NULL || x->uact == NULL || x->dact == NULL) {
    free(x->buf);
    free(x->uact);
    free(x->dact);
    free(x);
    return NIMBUS_ENOMEM;
  }
  int rc = bk_pipe_init(&x->pipe, a, x->jobs, x->timeout_ms);
  if (rc != 0) {
    free(x->buf);
    free(x->uact);
    free(x->dact);
    free(x);
    return rc;
  }
  x->pipe.stop = xf_stopped;
  x->pipe.stop_ctx = x;
  *out = x;
  return 0;
}

void nimbus_xfer_cancel(nimbus_xfer *x) { atomic_store(&x->cancel, 1); }

/* Frees every transfer (ended or not: no callbacks). */
static void xf_free_all(nimbus_xfer *x) {
  for (xf_up *u = x->uall, *n; u != NULL; u = n) {
    n = u->all;
    if (u->own_fd && u->fd >= 0)
      close(u->fd);
    free(u->path);
    free(u->ranges);
    free(u);
  }
  x->uall = NULL;
  for (xf_down *d = x->dall, *n; d != NULL; d = n) {
    n = d->all;
    xf_down_close(d);
    free(d->name);
    free(d->part);
    free(d);
  }
  x->dall = NULL;
  x->hash_h = x->hash_t = x->unk_h = x->unk_t = x->miss_h = x->miss_t = NULL;
  x->dq_h = x->dq_t = NULL;
  x->nuact = x->ndact = 0;
  x->pending = 0;
}

void nimbus_xfer_free(nimbus_xfer *x) {
  if (x == NULL)
    return;
  bk_pipe_abandon(&x->pipe);
  xf_free_all(x);
  bk_pipe_fini(&x->pipe);
  free(x->buf);
  free(x->uact);
  free(x->dact);
  free(x);
}

#define XF_PUSH(h, t, e)                                                       \
  do {                                                                         \
    (e)->qnext = NULL;                                                         \
    if ((h) == NULL)                                                           \
      (h) = (e);                                                               \
    else                                                                       \
      (t)->qnext = (e);                                                        \
    (t) = (e);                                                                 \
  } while (0)

static xf_up *xf_up_pop(xf_up **h, xf_up **t) {
  xf_up *u = *h;
  if (u != NULL) {
    *h = u->qnext;
    if (*h == NULL)
      *t = NULL;
    u->qnext = NULL;
  }
  return u;
}

/* ---- Uploads: the source ------------------------------------------------ */

void nimbus_blob_upload_opts_init(nimbus_blob_upload_opts *o) {
  memset(o, 0, sizeof *o);
  o->fd = -1;
  o->size = -1;
}

int nimbus_blob_upload(nimbus_xfer *x, const nimbus_blob_upload_opts *o) {
  int sources = (o->path != NULL) + (o->fd >= 0) + (o->read != NULL);
  if (x == NULL || sources != 1 || o->on_done == NULL ||
      (o->read != NULL && o->size < 0) || o->size < -1)
    return NIMBUS_EINVAL;
  xf_up *u = calloc(1, sizeof *u);
  if (u == NULL || (o->path != NULL && (u->path = strdup(o->path)) == NULL)) {
    free(u);
    return NIMBUS_ENOMEM;
  }
  u->x = x;
  u->fd = o->fd;
  u->read = o->read;
  u->read_ctx = o->read_ctx;
  u->size = o->size;
  u->on_done = o->on_done;
  u->on_progress = o->on_progress;
  u->ctx = o->ctx;
  u->all = x->uall;
  x->uall = u;
  x->pending++;
  if (o->sha256 != NULL && u->size >= 0) {
    memcpy(u->sha, o->sha256, 32);
    nb_hex(u->sha, 32, u->hex);
    u->mtime_ns = o->mtime_ns;
    u->ino = o->ino;
    u->check_id = o->path != NULL && (o->mtime_ns != 0 || o->ino != 0);
    u->state = U_UNKNOWN;
    XF_PUSH(x->unk_h, x->unk_t, u);
  } else {
    u->state = U_HASH;
    XF_PUSH(x->hash_h, x->hash_t, u);
  }
  return 0;
}

/* Opens a path source; checks it against what was hashed when check_id.
 * Returns 0 or ends the upload (false). */
static bool xf_up_open(xf_up *u) {
  xf_end e;
  if (u->path != NULL) {
    u->fd = open(u->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (u->fd < 0) {
      xf_endf(&e, errno == ENOENT ? NIMBUS_ECONFLICT : NIMBUS_EIO, 0,
              "cannot open %s: %s", u->path, strerror(errno));
      xf_up_end(u, &e, false);
      return false;
    }
    u->own_fd = true;
  }
  u->open = true;
  if (u->fd < 0)
    return true; /* a reader */
  struct stat st;
  bool stat_ok = fstat(u->fd, &st) == 0;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    xf_endf(&e, NIMBUS_EIO, 0, "cannot read %s: %s",
            u->path != NULL ? u->path : "the file",
            !stat_ok ? strerror(errno) : "not a regular file");
    xf_up_end(u, &e, false);
    return false;
  }
  int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  if ((u->size >= 0 && st.st_size != u->size) ||
      (u->check_id && (mt != u->mtime_ns || (uint64_t)st.st_ino != u->ino))) {
    xf_endf(&e, NIMBUS_ECONFLICT, 0, "%s changed since it was hashed",
            u->path != NULL ? u->path : "the file");
    xf_up_end(u, &e, false);
    return false;
  }
  u->size = st.st_size;
  u->mtime_ns = mt;
  u->ino = (uint64_t)st.st_ino;
  return true;
}

/* Reads [off, off+n) of the source into buf: 0, or a nimbus_err. */
static int xf_up_read(xf_up *u, uint8_t *buf, size_t n, int64_t off) {
  if (u->read != NULL)
    return n == 0 ? 0 : u->read(u->read_ctx, buf, n, off);
  ssize_t got = n > 0 ? pread(u->fd, buf, n, off) : 0;
  if (got < 0)
    return NIMBUS_EIO;
  struct stat st;
  if ((size_t)got != n || fstat(u->fd, &st) != 0 || st.st_size != u->size ||
      (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec !=
          u->mtime_ns)
    return NIMBUS_ECONFLICT;
  return 0;
}

/* Hashes an upload that came without a SHA-256. */
static void xf_up_hash(xf_up *u) {
  nimbus_xfer *x = u->x;
  xf_end e;
  if (!xf_up_open(u))
    return;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up_end(u, &e, false);
    return;
  }
  int rc = 0;
  for (int64_t off = 0; off < u->size && rc == 0;) {
    size_t n =
        (size_t)(u->size - off < SC_SEGMENT ? u->size - off : SC_SEGMENT);
    rc = xf_up_read(u, x->buf, n, off);
    if (rc == 0)
      EVP_DigestUpdate(md, x->buf, n);
    off += (int64_t)n;
  }
  unsigned len = 0;
  EVP_DigestFinal_ex(md, u->sha, &len);
  EVP_MD_CTX_free(md);
  if (rc != 0) {
    xf_endf(&e, rc, 0, "%s %s while it was hashed",
            u->path != NULL ? u->path : "the source",
            rc == NIMBUS_ECONFLICT ? "changed" : "could not be read");
    xf_up_end(u, &e, false);
    return;
  }
  nb_hex(u->sha, 32, u->hex);
  /* Opened again when its upload starts, and checked to be as hashed. */
  if (u->own_fd) {
    close(u->fd);
    u->fd = -1;
    u->own_fd = false;
    u->open = false;
  }
  u->check_id = u->path != NULL;
  u->state = U_UNKNOWN;
  XF_PUSH(x->unk_h, x->unk_t, u);
}

/* ---- Uploads: the tasks ------------------------------------------------ */

static int xf_ranges_add(xf_up *u, int64_t off, int64_t len) {
  if (u->nranges + 2 > u->rcap) {
    size_t cap = u->rcap != 0 ? 2 * u->rcap : 16;
    int64_t *r = realloc(u->ranges, cap * sizeof *r);
    if (r == NULL)
      return -1;
    u->ranges = r;
    u->rcap = cap;
  }
  u->ranges[u->nranges++] = off;
  u->ranges[u->nranges++] = len;
  return 0;
}

static void xf_ranges_reset(xf_up *u) {
  u->nranges = u->ri = 0;
  u->roff = 0;
  u->sent_empty = false;
}

static void xf_up_progress(xf_up *u) {
  if (u->on_progress != NULL)
    u->on_progress(u->ctx, u->done, u->size);
  u->announced = true;
}

/* Submits o; false (o freed) when it cannot go: the upload (or every one
 * in its batch) ends. */
static bool xf_submit(nimbus_xfer *x, xf_op *o, const char *type,
                      msgpack_sbuffer *sb, const uint8_t *data, size_t len,
                      bool has_data) {
  int rc = bk_pipe_submit(&x->pipe, &o->op, type, (const uint8_t *)sb->data,
                          sb->size, data, len, has_data);
  msgpack_sbuffer_destroy(sb);
  if (rc == 0) {
    if (o->up != NULL)
      o->up->ops++;
    for (size_t i = 0; i < o->nbatch; i++)
      o->batch[i]->ops++;
    if (o->down != NULL)
      o->down->gets++;
    return true;
  }
  xf_end e;
  xf_endf(&e, rc == NIMBUS_EBUSY ? NIMBUS_ETIMEDOUT : rc, 0,
          "cannot send a %s task: %s", type, nimbus_strerror(rc));
  if (o->up != NULL)
    xf_up_end(o->up, &e, false);
  for (size_t i = 0; i < o->nbatch; i++)
    xf_up_end(o->batch[i], &e, false);
  if (o->down != NULL)
    xf_down_end(o->down, &e, true);
  free(o->batch);
  free(o);
  return false;
}

static void xf_on_has(bk_op *op, nimbus_reply *r, bool *keep);
static void xf_on_status(bk_op *op, nimbus_reply *r, bool *keep);
static void xf_on_put(bk_op *op, nimbus_reply *r, bool *keep);
static void xf_on_commit(bk_op *op, nimbus_reply *r, bool *keep);

static void xf_send_has(nimbus_xfer *x) {
  xf_op *o = xf_op_new(x, xf_on_has);
  if (o == NULL || (o->batch = malloc(SC_HAS_MAX * sizeof *o->batch)) == NULL) {
    free(o);
    xf_end e;
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up *u;
    while ((u = xf_up_pop(&x->unk_h, &x->unk_t)) != NULL)
      xf_up_end(u, &e, false);
    return;
  }
  while (o->nbatch < SC_HAS_MAX && x->unk_h != NULL) {
    xf_up *u = xf_up_pop(&x->unk_h, &x->unk_t);
    if (u->state != U_UNKNOWN)
      continue;
    u->state = U_ASKING;
    o->batch[o->nbatch++] = u;
  }
  if (o->nbatch == 0) {
    free(o->batch);
    free(o);
    return;
  }
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  bk_pk_str(&pk, "blobs");
  msgpack_pack_array(&pk, o->nbatch);
  for (size_t i = 0; i < o->nbatch; i++)
    bk_pk_str(&pk, o->batch[i]->hex);
  (void)xf_submit(x, o, "blob.has", &sb, NULL, 0, false);
}

/* u is to be uploaded: its turn comes in the missing queue. */
static void xf_up_missing(nimbus_xfer *x, xf_up *u, bool front) {
  u->state = U_MISSING;
  if (front && x->miss_h != NULL) {
    u->qnext = x->miss_h;
    x->miss_h = u;
  } else {
    XF_PUSH(x->miss_h, x->miss_t, u);
  }
}

static void xf_on_has(bk_op *op, nimbus_reply *r, bool *keep) {
  (void)keep;
  xf_op *o = op->ctx;
  nimbus_xfer *x = o->x;
  int err = op->err;
  for (size_t i = 0; i < o->nbatch; i++)
    o->batch[i]->ops--;
  msgpack_object res;
  msgpack_zone *z = NULL;
  xf_end e = {0};
  const msgpack_object *m = NULL;
  if (r == NULL && err == NIMBUS_ECANCELED) {
    goto out; /* abandoned: the run ends them */
  } else if (r == NULL) {
    xf_end_noreply(x, &e, "blob.has", err);
  } else if (!bk_reply_ok(r) && xf_transient(r)) {
    int64_t at = xf_retry_at(x, r, &x->has_retry_since);
    if (at >= 0) {
      x->has_not_before = at;
      for (size_t i = 0; i < o->nbatch; i++) {
        if (o->batch[i]->state != U_ASKING)
          continue;
        o->batch[i]->state = U_UNKNOWN;
        XF_PUSH(x->unk_h, x->unk_t, o->batch[i]);
      }
      goto out;
    }
    xf_endf(&e, NIMBUS_ETIMEDOUT, r->code,
            "blob.has: error %d for longer than %d ms: %s", r->code,
            x->timeout_ms, r->error != NULL ? r->error : "");
  } else if (!bk_reply_ok(r)) {
    xf_end_reply(&e, "blob.has", r);
  } else if (!bk_result_map(r, &res, &z) ||
             (m = sc_map_get(&res, "missing")) == NULL ||
             m->type != MSGPACK_OBJECT_ARRAY) {
    xf_endf(&e, NIMBUS_EPROTO, 0,
            "blob.has answered without a list of missing blobs");
  } else {
    x->has_retry_since = 0;
    /* `missing` lists blobs in the order asked. */
    uint32_t j = 0;
    for (size_t i = 0; i < o->nbatch; i++) {
      xf_up *u = o->batch[i];
      bool missing =
          j < m->via.array.size && bk_obj_str_eq(&m->via.array.ptr[j], u->hex);
      j += missing;
      if (u->state != U_ASKING)
        continue;
      if (missing)
        xf_up_missing(x, u, false);
      else
        xf_up_end(u, NULL, false); /* the cloud has it for us */
    }
    if (j != m->via.array.size) {
      xf_endf(&e, NIMBUS_EPROTO, 0,
              "blob.has answered with blobs not asked about");
      for (size_t i = 0; i < o->nbatch; i++)
        xf_up_end(o->batch[i], &e, false);
    }
    goto out;
  }
  for (size_t i = 0; i < o->nbatch; i++)
    if (o->batch[i]->state == U_ASKING)
      xf_up_end(o->batch[i], &e, false);
out:
  msgpack_zone_free(z);
  free(o->batch);
  free(o);
}

static void xf_send_upload_task(nimbus_xfer *x, xf_up *u, const char *type,
                                int state, bk_op_fn done) {
  xf_op *o = xf_op_new(x, done);
  if (o == NULL) {
    xf_end e;
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up_end(u, &e, false);
    return;
  }
  o->up = u;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  xf_pack_upload(&sb, u->hex);
  u->state = state;
  (void)xf_submit(x, o, type, &sb, NULL, 0, false);
}

/* u starts uploading: its source opened, then blob.status (resume) unless
 * it is one segment (status would cost as much as sending it). */
static void xf_up_activate(nimbus_xfer *x, xf_up *u) {
  if (!u->open && !xf_up_open(u))
    return;
  x->uact[x->nuact++] = u;
  xf_ranges_reset(u);
  if (u->size > SC_SEGMENT) {
    u->state = U_STATUS;
  } else if (xf_ranges_add(u, 0, u->size) != 0) {
    xf_end e;
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up_end(u, &e, false);
  } else {
    u->done = 0;
    xf_up_progress(u);
    u->state = U_PUTTING;
  }
}

/* u starts over from blob.status (segments the cloud lost). */
static void xf_up_restart(xf_up *u) {
  xf_ranges_reset(u);
  u->state = u->size > SC_SEGMENT ? U_STATUS : U_PUTTING;
  if (u->state == U_PUTTING && xf_ranges_add(u, 0, u->size) != 0) {
    xf_end e;
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up_end(u, &e, false);
    return;
  }
  if (u->state == U_PUTTING) {
    u->done = 0;
    xf_up_progress(u);
  }
}

/* A transient answer to u's `what`: its step waits, or u ends when that
 * would last past the timeout. Returns false when u ended. */
static bool xf_up_wait(nimbus_xfer *x, xf_up *u, const char *what,
                       const nimbus_reply *r) {
  int64_t at = xf_retry_at(x, r, &u->retry_since);
  if (at >= 0) {
    u->not_before = at;
    return true;
  }
  xf_end e;
  xf_endf(&e, NIMBUS_ETIMEDOUT, r->code,
          "%s: error %d for longer than %d ms: %s", what, r->code,
          x->timeout_ms, r->error != NULL ? r->error : "");
  xf_up_end(u, &e, false);
  return false;
}

/* The start every upload op's reply callback shares: frees the op (its
 * offset and length are copied to *span when span is not NULL) and
 * returns the upload when reply r is to be acted on. NULL when the op was
 * abandoned (the run ends the uploads), when the upload has left `state`
 * (ended, or started over), or when no reply came (then the upload has
 * been ended with what of `what` failed). */
static xf_up *xf_up_reply_begin(bk_op *op, const nimbus_reply *r, int state,
                                const char *what, xf_op *span) {
  xf_op *o = op->ctx;
  nimbus_xfer *x = o->x;
  xf_up *u = o->up;
  int err = op->err;
  if (span != NULL)
    *span = *o;
  free(o);
  u->ops--;
  if (r == NULL && err == NIMBUS_ECANCELED)
    return NULL;
  if (u->state != state)
    return NULL;
  if (r == NULL) {
    xf_end e;
    xf_end_noreply(x, &e, what, err);
    xf_up_end(u, &e, false);
    return NULL;
  }
  return u;
}

static void xf_on_status(bk_op *op, nimbus_reply *r, bool *keep) {
  (void)keep;
  xf_up *u = xf_up_reply_begin(op, r, U_STATUSING, "blob.status", NULL);
  if (u == NULL)
    return;
  nimbus_xfer *x = u->x;
  xf_end e;
  xf_ranges_reset(u);
  if (!bk_reply_ok(r) && r->code == 404) {
    u->retry_since = 0;
    (void)xf_ranges_add(u, 0, u->size);
    u->done = 0;
  } else if (!bk_reply_ok(r) && xf_transient(r)) {
    if (xf_up_wait(x, u, "blob.status", r))
      u->state = U_STATUS;
    return;
  } else if (!bk_reply_ok(r)) {
    xf_end_reply(&e, "blob.status", r);
    xf_up_end(u, &e, false);
    return;
  } else {
    u->retry_since = 0;
    msgpack_object res;
    msgpack_zone *z = NULL;
    int64_t size = -1, missing = 0;
    const msgpack_object *m = NULL;
    if (bk_result_map(r, &res, &z)) {
      (void)bk_obj_int(sc_map_get(&res, "size"), &size);
      m = sc_map_get(&res, "missing");
    }
    bool bad = size != u->size || m == NULL || m->type != MSGPACK_OBJECT_ARRAY;
    int64_t prev_end = 0;
    for (uint32_t i = 0; !bad && i < m->via.array.size; i++) {
      const msgpack_object *p = &m->via.array.ptr[i];
      int64_t off, len;
      /* Ranges of whole segments (the last may end with the blob), in
       * order, apart, inside the blob: the cloud's word is checked
       * without an overflow, and nothing but such a range is sent. */
      if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2 ||
          !bk_obj_int(&p->via.array.ptr[0], &off) ||
          !bk_obj_int(&p->via.array.ptr[1], &len) || off < prev_end ||
          len <= 0 || off % SC_SEGMENT != 0 || off > u->size ||
          len > u->size - off ||
          (len % SC_SEGMENT != 0 && off + len != u->size) ||
          xf_ranges_add(u, off, len) != 0) {
        bad = true;
        break;
      }
      prev_end = off + len;
      missing += len;
    }
    msgpack_zone_free(z);
    if (bad) {
      xf_endf(&e, NIMBUS_EPROTO, 0,
              "blob.status of %s answered what is not a status of a blob "
              "of %" PRId64 " bytes",
              u->hex, u->size);
      xf_up_end(u, &e, false);
      return;
    }
    /* What the cloud has already counts as done. */
    u->done = u->size - missing;
  }
  xf_up_progress(u);
  u->state = U_PUTTING;
}

/* Sends u's next segment. False when u cannot send one now. */
static bool xf_send_put(nimbus_xfer *x, xf_up *u) {
  /* An empty blob is one put of nothing at offset 0. */
  while (u->ri < u->nranges && u->roff >= u->ranges[u->ri + 1] &&
         !(u->size == 0 && !u->sent_empty)) {
    u->ri += 2;
    u->roff = 0;
  }
  if (u->ri >= u->nranges)
    return false;
  int64_t off = u->ranges[u->ri] + u->roff;
  int64_t len = u->size - off < SC_SEGMENT ? u->size - off : SC_SEGMENT;
  /* A range from the cloud ends on a segment end (or the blob's). */
  if (len > u->ranges[u->ri + 1] - u->roff)
    len = u->ranges[u->ri + 1] - u->roff;
  int rc = xf_up_read(u, x->buf, (size_t)len, off);
  xf_end e;
  if (rc != 0) {
    xf_endf(&e, rc, 0, "%s %s while it was uploaded",
            u->path != NULL ? u->path : "the source",
            rc == NIMBUS_ECONFLICT ? "changed" : "could not be read");
    xf_up_end(u, &e, false);
    return false;
  }
  xf_op *o = xf_op_new(x, xf_on_put);
  if (o == NULL) {
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_up_end(u, &e, false);
    return false;
  }
  o->up = u;
  o->off = off;
  o->len = len;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 4);
  bk_pk_kv_str(&pk, "upload", u->hex);
  bk_pk_kv_int(&pk, "offset", off);
  bk_pk_kv_int(&pk, "size", u->size);
  bk_pk_kv_str(&pk, "sha256", u->hex);
  if (!xf_submit(x, o, "blob.put", &sb, x->buf, (size_t)len, true))
    return false;
  u->roff += len;
  u->sent_empty = true;
  u->bytes += len;
  return true;
}

static void xf_on_put(bk_op *op, nimbus_reply *r, bool *keep) {
  (void)keep;
  xf_op span;
  xf_up *u = xf_up_reply_begin(op, r, U_PUTTING, "blob.put", &span);
  if (u == NULL)
    return;
  nimbus_xfer *x = u->x;
  int64_t off = span.off, len = span.len;
  xf_end e;
  if (bk_reply_ok(r)) {
    u->retry_since = 0;
    u->done += len;
    xf_up_progress(u);
  } else if (xf_transient(r)) {
    /* Again once the timer runs out (an empty blob's one put too). */
    if (u->size == 0)
      u->sent_empty = false;
    if (xf_up_wait(x, u, "blob.put", r) && xf_ranges_add(u, off, len) != 0) {
      xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
      xf_up_end(u, &e, false);
    }
  } else {
    xf_end_reply(&e, "blob.put", r);
    xf_up_end(u, &e, false);
  }
}

static void xf_on_commit(bk_op *op, nimbus_reply *r, bool *keep) {
  (void)keep;
  xf_up *u = xf_up_reply_begin(op, r, U_COMMITTING, "blob.commit", NULL);
  if (u == NULL)
    return;
  nimbus_xfer *x = u->x;
  xf_end e;
  msgpack_object res;
  msgpack_zone *z = NULL;
  bool have = bk_result_map(r, &res, &z);
  if (bk_reply_ok(r)) {
    int64_t size = -1;
    if (!have || !bk_obj_str_eq(sc_map_get(&res, "blob"), u->hex) ||
        !bk_obj_int(sc_map_get(&res, "size"), &size) || size != u->size) {
      xf_endf(&e, NIMBUS_EPROTO, 0, "blob.commit of %s answered another blob",
              u->hex);
      xf_up_end(u, &e, false);
    } else {
      xf_up_end(u, NULL, true);
    }
  } else if ((r->code == 409 || r->code == 404) &&
             ++u->restarts <= XF_RESTARTS) {
    /* Incomplete (segments lost) or the staging file vanished: send what
     * the cloud lacks. */
    xf_up_restart(u);
  } else if (r->code == 422) {
    /* The bytes sent are not the content hashed: the source changed (the
     * cloud has discarded the upload). */
    xf_endf(&e, NIMBUS_ECONFLICT, 422,
            "the bytes sent do not have the SHA-256 %s: %s", u->hex,
            r->error != NULL ? r->error : "");
    xf_up_end(u, &e, false);
  } else if (xf_transient(r)) {
    if (xf_up_wait(x, u, "blob.commit", r))
      u->state = U_COMMIT;
  } else {
    xf_end_reply(&e, "blob.commit", r);
    xf_up_end(u, &e, false);
  }
  msgpack_zone_free(z);
}

/* ---- Downloads --------------------------------------------------------- */

void nimbus_blob_download_opts_init(nimbus_blob_download_opts *o) {
  memset(o, 0, sizeof *o);
  o->size = -1;
  o->dirfd = AT_FDCWD;
}

/* The default part file of `name`: ".<base>.part" beside it. */
static char *xf_part_of(const char *name) {
  const char *slash = strrchr(name, '/');
  size_t dl = slash != NULL ? (size_t)(slash - name) + 1 : 0;
  size_t n = strlen(name) + sizeof "..part";
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%.*s.%s.part", (int)dl, name, name + dl);
  return p;
}

int nimbus_blob_download(nimbus_xfer *x, const nimbus_blob_download_opts *o) {
  if (x == NULL || !nb_is_sha256_hex(o->blob) || o->on_done == NULL ||
      o->size < -1 || (!o->keep_part && (o->name == NULL || o->name[0] == 0)))
    return NIMBUS_EINVAL;
  if (o->keep_part && o->part == NULL && o->name == NULL)
    return NIMBUS_EINVAL;
  if (o->dirfd != AT_FDCWD &&
      ((o->name != NULL && strchr(o->name, '/') != NULL) ||
       (o->part != NULL && strchr(o->part, '/') != NULL)))
    return NIMBUS_EINVAL;
  xf_down *d = calloc(1, sizeof *d);
  if (d == NULL)
    return NIMBUS_ENOMEM;
  d->name = o->name != NULL ? strdup(o->name) : NULL;
  d->part = o->part != NULL ? strdup(o->part) : xf_part_of(o->name);
  if ((o->name != NULL && d->name == NULL) || d->part == NULL) {
    free(d->name);
    free(d->part);
    free(d);
    return NIMBUS_ENOMEM;
  }
  d->x = x;
  memcpy(d->hex, o->blob, 65);
  (void)nb_unhex32(d->hex, d->sha);
  d->size = o->size;
  d->dirfd = o->dirfd;
  d->mtime_ms = o->mtime_ms;
  d->set_mtime = o->set_mtime;
  d->keep_part = o->keep_part;
  d->no_sync = o->no_sync;
  d->fd = -1;
  d->on_done = o->on_done;
  d->on_progress = o->on_progress;
  d->ctx = o->ctx;
  d->all = x->dall;
  x->dall = d;
  XF_PUSH(x->dq_h, x->dq_t, d);
  x->pending++;
  return 0;
}

static void xf_on_get(bk_op *op, nimbus_reply *reply, bool *keep);

static void xf_down_progress(xf_down *d) {
  if (d->on_progress != NULL && d->size >= 0)
    d->on_progress(d->ctx, d->written, d->size);
}

/* Opens (or resumes) d's part file. False when d ended. */
static bool xf_down_start(nimbus_xfer *x, xf_down *d) {
  xf_end e;
  d->fd = openat(d->dirfd, d->part, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                 0666);
  struct stat st;
  if (d->fd < 0 || fstat(d->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    xf_endf(&e, NIMBUS_EIO, 0, "cannot write %s: %s", d->part,
            d->fd < 0 ? strerror(errno) : "not a regular file");
    /* Not ours to remove: something else may be in its place. */
    xf_down_end(d, &e, true);
    return false;
  }
  /* A part file with another name too (a hard link to a file elsewhere)
   * is not written through. */
  if (st.st_nlink != 1) {
    xf_endf(&e, NIMBUS_EIO, 0,
            "%s has other names (hard links): not written through", d->part);
    xf_down_end(d, &e, true);
    return false;
  }
  /* One download per part file, in this process or another (a second
   * restore of the same name): the other's truncation would put holes
   * under bytes this one has hashed. */
  if (flock(d->fd, LOCK_EX | LOCK_NB) != 0) {
    xf_endf(&e, NIMBUS_ECONFLICT, 0, "%s is being downloaded already", d->part);
    xf_down_end(d, &e, true);
    return false;
  }
  d->md = EVP_MD_CTX_new();
  if (d->md == NULL || EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1) {
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_down_end(d, &e, false);
    return false;
  }
  /* What an earlier run wrote, in order, is kept: hash it and go on. */
  int64_t have = st.st_size;
  if (d->size < 0 || have > d->size) {
    have = ftruncate(d->fd, 0) == 0 ? 0 : -1;
  }
  for (int64_t off = 0; have > 0 && off < have;) {
    size_t want = (size_t)(have - off < SC_SEGMENT ? have - off : SC_SEGMENT);
    ssize_t got = pread(d->fd, x->buf, want, off);
    if (got <= 0) {
      have = -1;
      break;
    }
    EVP_DigestUpdate(d->md, x->buf, (size_t)got);
    off += got;
  }
  if (have < 0) {
    xf_endf(&e, NIMBUS_EIO, 0, "cannot read back %s: %s", d->part,
            strerror(errno));
    xf_down_end(d, &e, false);
    return false;
  }
  d->written = d->next_req = have;
  d->active = true;
  x->dact[x->ndact++] = d;
  xf_down_progress(d);
  return true;
}

/* All bytes are there: check, then mtime, sync and name. */
static void xf_down_finish(xf_down *d) {
  uint8_t sha[32];
  unsigned len = 0;
  xf_end e;
  EVP_DigestFinal_ex(d->md, sha, &len);
  if (memcmp(sha, d->sha, 32) != 0) {
    /* Not the content named (a damaged part file from an earlier run):
     * once more from the start. */
    if (d->size > 0 && ++d->restarts <= 1 && ftruncate(d->fd, 0) == 0 &&
        EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) == 1) {
      d->written = d->next_req = 0;
      xf_down_progress(d);
      return;
    }
    xf_endf(&e, NIMBUS_EPROTO, 0,
            "the downloaded bytes do not have the blob's SHA-256 %s", d->hex);
    xf_down_end(d, &e, false);
    return;
  }
  if (d->set_mtime) {
    int64_t s = d->mtime_ms / 1000, ms = d->mtime_ms % 1000;
    if (ms < 0) {
      ms += 1000;
      s--;
    }
    struct timespec ts[2] = {{.tv_sec = 0, .tv_nsec = UTIME_OMIT},
                             {.tv_sec = (time_t)s, .tv_nsec = ms * 1000000}};
    if (futimens(d->fd, ts) != 0) {
      xf_endf(&e, NIMBUS_EIO, 0, "cannot set the mtime of %s: %s", d->part,
              strerror(errno));
      xf_down_end(d, &e, false);
      return;
    }
  }
  if (!d->no_sync && fsync(d->fd) != 0) {
    xf_endf(&e, NIMBUS_EIO, 0, "cannot sync %s: %s", d->part, strerror(errno));
    xf_down_end(d, &e, false);
    return;
  }
  if (!d->keep_part) {
    if (renameat(d->dirfd, d->part, d->dirfd, d->name) != 0) {
      xf_endf(&e, NIMBUS_EIO, 0, "cannot rename %s into place: %s", d->part,
              strerror(errno));
      xf_down_end(d, &e, false);
      return;
    }
    if (!d->no_sync) {
      /* The new name lasts once its directory is synced too. */
      int dfd = d->dirfd;
      char *dir = NULL;
      const char *slash = strrchr(d->name, '/');
      if (d->dirfd == AT_FDCWD) {
        dir = slash != NULL ? strndup(d->name, (size_t)(slash - d->name + 1))
                            : strdup(".");
        dfd = dir != NULL ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
      }
      if (dfd >= 0)
        (void)fsync(dfd);
      if (dfd >= 0 && dfd != d->dirfd)
        close(dfd);
      free(dir);
    }
    /* Renamed: nothing of ours is left to remove, whatever comes. */
    free(d->part);
    d->part = NULL;
  }
  xf_down_end(d, NULL, false);
}

/* Writes the chunks that are next in order. */
static void xf_down_drain(xf_down *d) {
  xf_end e;
  while (d->chunks != NULL && d->chunks->off < d->written) {
    /* Asked twice (a reply duplicated): drop it. */
    xf_chunk *c = d->chunks;
    d->chunks = c->next;
    nimbus_reply_free(c->reply);
    free(c);
  }
  bool wrote = false;
  while (d->chunks != NULL && d->chunks->off == d->written) {
    xf_chunk *c = d->chunks;
    d->chunks = c->next;
    size_t n = c->reply->data_len;
    if (n > 0 && pwrite(d->fd, c->reply->data, n, c->off) != (ssize_t)n) {
      xf_endf(&e, NIMBUS_EIO, 0, "cannot write %s: %s", d->part,
              strerror(errno));
      nimbus_reply_free(c->reply);
      free(c);
      xf_down_end(d, &e, false);
      return;
    }
    EVP_DigestUpdate(d->md, c->reply->data, n);
    d->written += (int64_t)n;
    nimbus_reply_free(c->reply);
    free(c);
    wrote = true;
  }
  if (wrote)
    xf_down_progress(d);
  if (d->size >= 0 && d->written == d->size && d->gets == 0 &&
      d->chunks == NULL)
    xf_down_finish(d);
}

static bool xf_send_get(nimbus_xfer *x, xf_down *d) {
  /* Until the size is known, one range at a time. */
  if (d->ended || d->fd < 0 || (d->size < 0 && d->gets > 0) ||
      (d->nredo == 0 && d->size >= 0 && d->next_req >= d->size))
    return false;
  /* At most `jobs` segments ahead of what is written: ranges that come
   * before one that is late (a segment the cloud answers 500 for, again
   * and again) wait in memory, and no more than that many. */
  if (d->nredo == 0 &&
      d->next_req - d->written >= (int64_t)x->jobs * SC_SEGMENT)
    return false;
  xf_op *o = xf_op_new(x, xf_on_get);
  if (o == NULL) {
    xf_end e;
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_down_end(d, &e, true);
    return false;
  }
  o->down = d;
  o->off = d->nredo > 0 ? d->redo[d->nredo - 1] : d->next_req;
  o->len = d->size < 0 || d->size - o->off >= SC_SEGMENT ? SC_SEGMENT
                                                         : d->size - o->off;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  bk_pk_kv_str(&pk, "blob", d->hex);
  bk_pk_kv_int(&pk, "offset", o->off);
  bk_pk_kv_int(&pk, "length", o->len);
  int64_t off = o->off, len = o->len;
  if (!xf_submit(x, o, "blob.get", &sb, NULL, 0, false))
    return false;
  if (d->nredo > 0 && d->redo[d->nredo - 1] == off)
    d->nredo--;
  else
    d->next_req = off + len;
  return true;
}

/* Checks a blob.get reply for [off, off+len) of d. Returns the bytes or
 * NULL (why in e). */
static const uint8_t *xf_get_check(xf_down *d, const nimbus_reply *r,
                                   int64_t off, int64_t len, xf_end *e) {
  msgpack_object res;
  msgpack_zone *z = NULL;
  int64_t bsize = -1, roff = -1;
  if (bk_result_map(r, &res, &z)) {
    (void)bk_obj_int(sc_map_get(&res, "size"), &bsize);
    (void)bk_obj_int(sc_map_get(&res, "offset"), &roff);
  }
  msgpack_zone_free(z);
  if (bsize < 0 || (d->size >= 0 && bsize != d->size) || roff != off) {
    xf_endf(e, NIMBUS_EPROTO, 0,
            "blob.get answered size %" PRId64 " offset %" PRId64 " for %" PRId64
            " at %" PRId64,
            bsize, roff, d->size, off);
    return NULL;
  }
  int64_t want = bsize - off < len ? bsize - off : len;
  if (want < 0 || (int64_t)r->data_len != want ||
      (want > 0 && r->data == NULL)) {
    xf_endf(e, NIMBUS_EPROTO, 0,
            "blob.get answered %zu bytes at %" PRId64 " where %" PRId64
            " were due",
            r->data_len, off, want);
    return NULL;
  }
  d->size = bsize;
  return r->data != NULL ? r->data : (const uint8_t *)"";
}

static void xf_on_get(bk_op *op, nimbus_reply *reply, bool *keep) {
  xf_op *o = op->ctx;
  nimbus_xfer *x = o->x;
  xf_down *d = o->down;
  int64_t off = o->off, len = o->len;
  int err = op->err;
  free(o);
  d->gets--;
  if (d->ended || (reply == NULL && err == NIMBUS_ECANCELED))
    return;
  xf_end e;
  if (reply == NULL) {
    xf_end_noreply(x, &e, "blob.get", err);
    xf_down_end(d, &e, true);
    return;
  }
  if (!bk_reply_ok(reply)) {
    if (xf_transient(reply)) {
      int64_t at = xf_retry_at(x, reply, &d->retry_since);
      if (at < 0) {
        xf_endf(&e, NIMBUS_ETIMEDOUT, reply->code,
                "blob.get: error %d for longer than %d ms: %s", reply->code,
                x->timeout_ms, reply->error != NULL ? reply->error : "");
        xf_down_end(d, &e, true);
        return;
      }
      d->not_before = at;
      /* Asked for again before any new range. */
      if (d->nredo == d->credo) {
        size_t cap = d->credo != 0 ? 2 * d->credo : 8;
        int64_t *v = realloc(d->redo, cap * sizeof *v);
        if (v == NULL) {
          xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
          xf_down_end(d, &e, true);
          return;
        }
        d->redo = v;
        d->credo = cap;
      }
      d->redo[d->nredo++] = off;
      return;
    }
    xf_end_reply(&e, "blob.get", reply);
    xf_down_end(d, &e, false);
    return;
  }
  d->retry_since = 0;
  bool first = d->size < 0;
  const uint8_t *data = xf_get_check(d, reply, off, len, &e);
  if (data == NULL) {
    xf_down_end(d, &e, false);
    return;
  }
  if (first) {
    len = d->size - off < len ? d->size - off : len;
    xf_down_progress(d);
  }
  if ((int64_t)reply->data_len != len) {
    xf_endf(&e, NIMBUS_EPROTO, 0, "blob.get answered a short range");
    xf_down_end(d, &e, false);
    return;
  }
  d->bytes += (int64_t)reply->data_len;
  d->fetched = true;
  xf_chunk *c = malloc(sizeof *c);
  if (c == NULL) {
    xf_endf(&e, NIMBUS_ENOMEM, 0, "out of memory");
    xf_down_end(d, &e, true);
    return;
  }
  c->off = off;
  c->reply = reply;
  *keep = true;
  xf_chunk **pp = &d->chunks;
  while (*pp != NULL && (*pp)->off < off)
    pp = &(*pp)->next;
  c->next = *pp;
  *pp = c;
  xf_down_drain(d);
}

/* ---- The loop ---------------------------------------------------------- */

/* Fills the window. Returns the earliest timer still running (nb_mono_ms)
 * or -1 when none. */
static int64_t xf_fill(nimbus_xfer *x) {
  int64_t timer = -1;
#define XF_TIMER(t)                                                            \
  do {                                                                         \
    if (timer < 0 || (t) < timer)                                              \
      timer = (t);                                                             \
  } while (0)
  bool moved = true;
  while (moved && bk_pipe_room(&x->pipe)) {
    moved = false;
    int64_t now = nb_mono_ms();
    timer = -1;
    if (x->hash_h != NULL) {
      xf_up_hash(xf_up_pop(&x->hash_h, &x->hash_t));
      moved = true;
      continue;
    }
    if (x->unk_h != NULL) {
      if (now >= x->has_not_before) {
        xf_send_has(x);
        moved = true;
        continue;
      }
      XF_TIMER(x->has_not_before);
    }
    for (size_t i = 0; i < x->nuact && bk_pipe_room(&x->pipe); i++) {
      xf_up *u = x->uact[i];
      if (u->not_before > now) {
        XF_TIMER(u->not_before);
        continue;
      }
      if (u->state == U_STATUS) {
        xf_send_upload_task(x, u, "blob.status", U_STATUSING, xf_on_status);
        moved = true;
      } else if (u->state == U_PUTTING) {
        while (bk_pipe_room(&x->pipe) && u->state == U_PUTTING &&
               xf_send_put(x, u))
          moved = true;
        if (u->state == U_PUTTING && u->ops == 0 && u->ri >= u->nranges)
          u->state = U_COMMIT;
      }
      if (u->state == U_COMMIT && bk_pipe_room(&x->pipe)) {
        xf_send_upload_task(x, u, "blob.commit", U_COMMITTING, xf_on_commit);
        moved = true;
      }
      /* uact may have lost u (it ended). */
      if (i < x->nuact && x->uact[i] != u)
        i--;
    }
    while (bk_pipe_room(&x->pipe) && x->nuact < (size_t)x->jobs &&
           x->miss_h != NULL) {
      xf_up *u = xf_up_pop(&x->miss_h, &x->miss_t);
      if (u->state != U_MISSING)
        continue;
      xf_up_activate(x, u);
      moved = true;
    }
    for (size_t i = 0; i < x->ndact && bk_pipe_room(&x->pipe); i++) {
      xf_down *d = x->dact[i];
      if (d->nredo > 0 && d->not_before > now) {
        XF_TIMER(d->not_before);
        continue;
      }
      while (bk_pipe_room(&x->pipe) && !d->ended && xf_send_get(x, d))
        moved = true;
      if (i < x->ndact && x->dact[i] != d)
        i--;
    }
    while (bk_pipe_room(&x->pipe) && x->ndact < (size_t)x->jobs &&
           x->dq_h != NULL) {
      xf_down *d = x->dq_h;
      x->dq_h = d->qnext;
      if (x->dq_h == NULL)
        x->dq_t = NULL;
      if (!xf_down_start(x, d))
        continue;
      moved = true;
      /* Resumed whole: finish it now. */
      if (d->size >= 0 && d->written == d->size)
        xf_down_drain(d);
    }
  }
  return timer;
#undef XF_TIMER
}

/* Ends every transfer not yet ended with `err` (a stop or a timeout). */
static void xf_end_all(nimbus_xfer *x, int err) {
  xf_end e;
  if (err == NIMBUS_ECANCELED)
    xf_endf(&e, err, 0, "stopped");
  else if (err == NIMBUS_ETIMEDOUT)
    xf_endf(&e, err, 0, "no reply from the cloud for %d ms", x->timeout_ms);
  else
    xf_endf(&e, err, 0, "internal error: transfers stuck");
  /* A callback may queue more (at the heads, which the loops have
   * passed): again until none is left, each ended once (ending an ended
   * one is a no-op). */
  for (int round = 0; round < 64 && x->pending > 0; round++) {
    for (xf_up *u = x->uall; u != NULL; u = u->all)
      xf_up_end(u, &e, false);
    for (xf_down *d = x->dall; d != NULL; d = d->all)
      xf_down_end(d, &e, true);
  }
}

int nimbus_xfer_run(nimbus_xfer *x) {
  if (x->running)
    return NIMBUS_EINVAL;
  x->running = true;
  int err = 0;
  /* Until every transfer has ended; then the tasks of ended ones still in
   * flight are given up (their replies would find them freed). */
  while (x->pending > 0 || x->pipe.inflight > 0) {
    if (xf_stopped(x)) {
      err = NIMBUS_ECANCELED;
      break;
    }
    int64_t timer = xf_fill(x);
    if (x->pending == 0) {
      /* Every transfer has ended: what is still in flight belongs to
       * ones that ended early, and nothing waits for its answer (one that
       * never comes must not turn the run into a timeout). */
      bk_pipe_abandon(&x->pipe);
      break;
    }
    if (x->pipe.inflight == 0) {
      if (timer < 0) {
        /* Nothing in flight, nothing waiting for a timer, yet not all
         * ended: a bug, which must not spin. */
        err = NIMBUS_EIO;
        break;
      }
      int64_t now = nb_mono_ms();
      int64_t slice = timer - now < 100 ? timer - now : 100;
      if (slice > 0) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000};
        nanosleep(&ts, NULL);
      }
      continue;
    }
    int rc = bk_pipe_step_until(&x->pipe, timer);
    if (rc != 0) {
      err = rc;
      break;
    }
  }
  if (err != 0) {
    /* Nothing in flight may outlive the run: the ops point into it. */
    bk_pipe_abandon(&x->pipe);
    xf_end_all(x, err);
  }
  /* Every transfer has ended and nothing is in flight: free them. */
  xf_free_all(x);
  if (err == NIMBUS_ECANCELED)
    atomic_store(&x->cancel, 0);
  x->running = false;
  return err;
}
