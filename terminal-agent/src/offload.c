/* nimbus_offload (nimbus/agent.h, "Compute offload"): one process.* task
 * end to end for an app or the CLI, and the parser of op strings both of
 * them use (`blur:sigma=4`).
 *
 * The input and the output move through a transfer engine made for the
 * call (xfer.c: blob.has, resumed uploads, verified and resumed
 * downloads), so there is no second way of moving blobs here. The task
 * itself goes through nimbus_submit and is waited for in slices of 200 ms
 * on the calling thread, which is where every callback of the call runs:
 * the agent's thread only notes the latest progress reply under this
 * call's own mutex, and the waiting thread passes it on, polls `stop` and
 * counts the silence against timeout_ms. The one file this code writes
 * itself is an output that came inline in the reply: checked against the
 * result's SHA-256, then written as the engine writes a download (a part
 * file beside the target, fsync, rename, fsync of the directory). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bk_pipe.h"
#include "nb_util.h"
#include "nimbus/agent.h"
#include "sc.h"

/* Inline input and output: at most one segment (PROTOCOL.md). */
#define OF_INLINE_MAX SC_SEGMENT
#define OF_POLL_MS 200
#define OF_CANCEL_WAIT_MS 3000
#define OF_TIMEOUT_MS 60000
#define OF_RETRY_MAX_MS 30000
#define OF_NAME_MAX 32
/* Parameters of one op string at most: far more than any op has. */
#define OF_PARAMS_MAX 64

/* ---- Op strings ---------------------------------------------------------- */

static bool of_name_ok(const char *s, size_t n, bool param) {
  if (n == 0 || n > OF_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          (param && c >= 'A' && c <= 'Z')))
      return false;
  }
  return true;
}

/* True when s[0..n) is a decimal number: [+-] digits [. digits] [e [+-]
 * digits], or with the digits after the point only. *plain: no point and
 * no exponent (an integer as written). */
static bool of_is_number(const char *s, size_t n, bool *plain) {
  size_t i = 0, digits = 0;
  *plain = true;
  if (i < n && (s[i] == '+' || s[i] == '-'))
    i++;
  while (i < n && s[i] >= '0' && s[i] <= '9')
    i++, digits++;
  if (i < n && s[i] == '.') {
    *plain = false;
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, digits++;
  }
  if (digits == 0)
    return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    *plain = false;
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      i++;
    size_t ed = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, ed++;
    if (ed == 0)
      return false;
  }
  return i == n;
}

/* Packs one VALUE: a number (an int when whole), a bool, or a string.
 * Returns 0, NIMBUS_EINVAL (a number out of range), NIMBUS_ENOMEM. */
static int of_pack_value(msgpack_packer *pk, const char *v, size_t n) {
  bool plain;
  if (of_is_number(v, n, &plain)) {
    char *z = strndup(v, n);
    if (z == NULL)
      return NIMBUS_ENOMEM;
    int rc = 0, prc = 0;
    errno = 0;
    char *end = NULL;
    long long ll = plain ? strtoll(z, &end, 10) : 0;
    if (plain && errno == 0 && end != NULL && *end == '\0') {
      prc = msgpack_pack_int64(pk, ll);
    } else {
      double d = strtod(z, NULL);
      if (!isfinite(d))
        rc = NIMBUS_EINVAL;
      else if (d == trunc(d) && d >= -9223372036854775808.0 &&
               d < 9223372036854775808.0)
        prc = msgpack_pack_int64(pk, (int64_t)d);
      else
        prc = msgpack_pack_double(pk, d);
    }
    free(z);
    return rc != 0 ? rc : prc != 0 ? NIMBUS_ENOMEM : 0;
  }
  if (n == 4 && memcmp(v, "true", 4) == 0)
    return msgpack_pack_true(pk) != 0 ? NIMBUS_ENOMEM : 0;
  if (n == 5 && memcmp(v, "false", 5) == 0)
    return msgpack_pack_false(pk) != 0 ? NIMBUS_ENOMEM : 0;
  if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, v, n) != 0)
    return NIMBUS_ENOMEM;
  return 0;
}

/* Parses op string `s` (the idx-th, from 1) and packs it as one map. */
static int of_op_parse(msgpack_packer *pk, const char *s, size_t idx, char *err,
                       size_t errcap) {
  const char *colon = strchr(s, ':');
  size_t nl = colon != NULL ? (size_t)(colon - s) : strlen(s);
  struct {
    const char *k, *v;
    size_t kn, vn;
  } par[OF_PARAMS_MAX];
  size_t np = 0;
#define OF_BAD(...)                                                            \
  do {                                                                         \
    char why_[200];                                                            \
    snprintf(why_, sizeof why_, __VA_ARGS__);                                  \
    nb_errf(err, errcap, "op %zu (\"%.60s\"): %s", idx, s, why_);              \
    return NIMBUS_EINVAL;                                                      \
  } while (0)
  if (!of_name_ok(s, nl, false))
    OF_BAD("the op's name must be 1-%d of a-z, 0-9 and _, as in "
           "blur:sigma=4",
           OF_NAME_MAX);
  if (colon != NULL && colon[1] == '\0')
    OF_BAD("nothing after ':' (write NAME:KEY=VALUE,KEY=VALUE)");
  for (const char *p = colon != NULL ? colon + 1 : NULL; p != NULL;) {
    const char *comma = strchr(p, ',');
    size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (len == 0)
      OF_BAD("an empty parameter (two commas, or one at the end)");
    if (eq == NULL)
      OF_BAD("\"%.*s\" has no value (write KEY=VALUE)", (int)len, p);
    size_t kn = (size_t)(eq - p), vn = len - kn - 1;
    if (!of_name_ok(p, kn, true))
      OF_BAD("\"%.*s\" is not a parameter name (1-%d of A-Z, a-z, 0-9 "
             "and _)",
             (int)kn, p, OF_NAME_MAX);
    if (kn == 2 && memcmp(p, "op", 2) == 0)
      OF_BAD("\"op\" is the op's name, not a parameter");
    if (vn == 0)
      OF_BAD("\"%.*s\" has no value (write KEY=VALUE)", (int)kn, p);
    for (size_t i = 0; i < np; i++)
      if (par[i].kn == kn && memcmp(par[i].k, p, kn) == 0)
        OF_BAD("parameter \"%.*s\" is given twice", (int)kn, p);
    if (np == OF_PARAMS_MAX)
      OF_BAD("more than %d parameters", OF_PARAMS_MAX);
    par[np].k = p;
    par[np].kn = kn;
    par[np].v = eq + 1;
    par[np].vn = vn;
    np++;
    p = comma != NULL ? comma + 1 : NULL;
  }
  int rc = 0;
  rc |= msgpack_pack_map(pk, (uint32_t)(1 + np));
  rc |= msgpack_pack_str(pk, 2);
  rc |= msgpack_pack_str_body(pk, "op", 2);
  rc |= msgpack_pack_str(pk, nl);
  rc |= msgpack_pack_str_body(pk, s, nl);
  if (rc != 0)
    return NIMBUS_ENOMEM;
  for (size_t i = 0; i < np; i++) {
    if (msgpack_pack_str(pk, par[i].kn) != 0 ||
        msgpack_pack_str_body(pk, par[i].k, par[i].kn) != 0)
      return NIMBUS_ENOMEM;
    rc = of_pack_value(pk, par[i].v, par[i].vn);
    if (rc == NIMBUS_EINVAL)
      OF_BAD("the number %.*s is out of range", (int)par[i].vn, par[i].v);
    if (rc != 0)
      return rc;
  }
#undef OF_BAD
  return 0;
}

int nimbus_offload_ops_parse(const char *const *ops, size_t n, uint8_t **out,
                             size_t *out_len, char *err, size_t errcap) {
  char dummy[8];
  if (err == NULL) {
    err = dummy;
    errcap = sizeof dummy;
  }
  err[0] = '\0';
  if (out == NULL || out_len == NULL || (ops == NULL && n > 0)) {
    nb_errf(err, errcap, "no place for the ops");
    return NIMBUS_EINVAL;
  }
  *out = NULL;
  *out_len = 0;
  if (n == 0) {
    nb_errf(err, errcap, "no ops: give at least one (e.g. blur:sigma=4)");
    return NIMBUS_EINVAL;
  }
  if (n > NIMBUS_OFFLOAD_OPS_MAX) {
    nb_errf(err, errcap, "%zu ops; a task takes at most %d", n,
            NIMBUS_OFFLOAD_OPS_MAX);
    return NIMBUS_EINVAL;
  }
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int rc = msgpack_pack_array(&pk, n) != 0 ? NIMBUS_ENOMEM : 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (ops[i] == NULL) {
      nb_errf(err, errcap, "op %zu is missing", i + 1);
      rc = NIMBUS_EINVAL;
    } else {
      rc = of_op_parse(&pk, ops[i], i + 1, err, errcap);
    }
  }
  if (rc != 0) {
    if (rc == NIMBUS_ENOMEM)
      nb_errf(err, errcap, "out of memory");
    msgpack_sbuffer_destroy(&sb);
    return rc;
  }
  *out_len = sb.size;
  *out = (uint8_t *)msgpack_sbuffer_release(&sb);
  return 0;
}

/* ---- The run ------------------------------------------------------------- */

typedef struct of_run {
  nimbus_agent *a;
  const nimbus_offload_opts *o;
  nimbus_offload_result *out;
  int timeout_ms;
  nimbus_xfer *x;
  int phase; /* of the transfer running */
  uint64_t rng;

  /* Set by the agent's thread (of_task_progress), under mu. */
  pthread_mutex_t mu;
  int64_t pdone, ptotal;
  bool pnew;
  int64_t last_reply; /* nb_mono_ms of the latest reply of any kind */

  /* The end of the transfer that just ran (of_xfer_done). */
  bool xdone;
  int xerr, xcode;
  char xerror[512];
  char xblob[65];
  bool xmoved;
  int64_t xbytes;
  /* A download whose bytes go to memory too. */
  bool to_mem;
  int memerr;
} of_run;

static void of_fail(of_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void of_fail(of_run *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->out->error, sizeof r->out->error, fmt, ap);
  va_end(ap);
}

static bool of_stopped(of_run *r) {
  return r->o->stop != NULL && r->o->stop(r->o->stop_ctx);
}

/* xorshift64*: jitter only, no secret. */
static uint64_t of_rand(of_run *r) {
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  return r->rng * 2685821657736338717ULL;
}

/* Sleeps until nb_mono_ms reaches `until`, polling stop. 0 or
 * NIMBUS_ECANCELED. */
static int of_sleep_until(of_run *r, int64_t until) {
  for (;;) {
    if (of_stopped(r))
      return NIMBUS_ECANCELED;
    int64_t left = until - nb_mono_ms();
    if (left <= 0)
      return 0;
    if (left > OF_POLL_MS)
      left = OF_POLL_MS;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ---- Transfers through the engine ---------------------------------------- */

static void of_xfer_progress(void *ctx, int64_t done, int64_t total) {
  of_run *r = ctx;
  if (r->o->on_progress != NULL)
    r->o->on_progress(r->o->ctx, r->phase, done, total);
}

/* Reads the verified download into out->data (on the run's thread). */
static void of_read_mem(of_run *r, int fd, int64_t size) {
  nimbus_offload_result *out = r->out;
  if (size < 0 || (uint64_t)size > SIZE_MAX - 1 ||
      (out->data = malloc(size > 0 ? (size_t)size : 1)) == NULL) {
    r->memerr = NIMBUS_ENOMEM;
    return;
  }
  size_t got = 0;
  while (got < (size_t)size) {
    ssize_t k = pread(fd, out->data + got, (size_t)size - got, (off_t)got);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      r->memerr = NIMBUS_EIO;
      free(out->data);
      out->data = NULL;
      return;
    }
    got += (size_t)k;
  }
  out->data_len = got;
}

static void of_xfer_done(void *ctx, const nimbus_blob_result *res) {
  of_run *r = ctx;
  r->xdone = true;
  r->xerr = res->err;
  r->xcode = res->code;
  nb_strlcpy(r->xerror, res->error != NULL ? res->error : "", sizeof r->xerror);
  nb_strlcpy(r->xblob, res->blob, sizeof r->xblob);
  r->xmoved = res->moved;
  r->xbytes = res->bytes;
  if (res->err == 0 && r->to_mem)
    of_read_mem(r, res->fd, res->size);
}

static int of_engine(of_run *r) {
  if (r->x != NULL)
    return 0;
  nimbus_xfer_opts xo;
  nimbus_xfer_opts_init(&xo);
  xo.jobs = r->o->jobs;
  xo.timeout_ms = r->timeout_ms;
  xo.stop = r->o->stop;
  xo.stop_ctx = r->o->stop_ctx;
  int rc = nimbus_xfer_new(r->a, &xo, &r->x);
  if (rc != 0)
    of_fail(r, "cannot make a transfer engine: %s", nimbus_strerror(rc));
  return rc;
}

/* The outcome of the transfer just run: 0, or its error (said in
 * out->error, with the cloud's code when one ended it). */
static int of_xfer_outcome(of_run *r, int run_rc, const char *what) {
  int err = r->xdone ? r->xerr : run_rc != 0 ? run_rc : NIMBUS_EIO;
  if (err == 0 && run_rc != 0)
    err = run_rc;
  if (err == 0)
    return 0;
  r->out->code = r->xcode;
  if (err == NIMBUS_ECANCELED)
    of_fail(r, "%s: stopped", what);
  else if (err == NIMBUS_EREFUSED)
    of_fail(r, "%s: %s", what, nimbus_agent_errstr(r->a));
  else
    of_fail(r, "%s: %s", what,
            r->xerror[0] != '\0' ? r->xerror : nimbus_strerror(err));
  return err;
}

static int of_mem_read(void *ctx, uint8_t *buf, size_t n, int64_t off) {
  const of_run *r = ctx;
  if (off < 0 || (uint64_t)off > r->o->in_len || n > r->o->in_len - (size_t)off)
    return NIMBUS_EIO;
  memcpy(buf, r->o->in_data + off, n);
  return 0;
}

static int of_upload(of_run *r) {
  const nimbus_offload_opts *o = r->o;
  int rc = of_engine(r);
  if (rc != 0)
    return rc;
  nimbus_blob_upload_opts u;
  nimbus_blob_upload_opts_init(&u);
  if (o->in_path != NULL) {
    u.path = o->in_path;
  } else {
    u.read = of_mem_read;
    u.read_ctx = r;
    u.size = (int64_t)o->in_len;
  }
  u.on_done = of_xfer_done;
  u.on_progress = of_xfer_progress;
  u.ctx = r;
  r->phase = NIMBUS_OFFLOAD_UPLOAD;
  r->xdone = false;
  if ((rc = nimbus_blob_upload(r->x, &u)) != 0) {
    of_fail(r, "cannot queue the upload: %s", nimbus_strerror(rc));
    return rc;
  }
  rc = nimbus_xfer_run(r->x);
  if ((rc = of_xfer_outcome(
           r, rc, o->in_path != NULL ? o->in_path : "the input")) != 0)
    return rc;
  nb_strlcpy(r->out->input, r->xblob, sizeof r->out->input);
  r->out->uploaded = r->xmoved;
  r->out->bytes_sent += r->xbytes;
  return 0;
}

/* Downloads the output into `name` (AT_FDCWD; a path) or, with keep_part,
 * into the file `part`, reading it into memory when to_mem. */
static int of_download(of_run *r, const char *name, const char *part,
                       bool to_mem) {
  int rc = of_engine(r);
  if (rc != 0)
    return rc;
  nimbus_blob_download_opts d;
  nimbus_blob_download_opts_init(&d);
  d.blob = r->out->blob;
  d.size = r->out->size;
  d.name = name;
  d.part = part;
  d.keep_part = part != NULL;
  d.no_sync = part != NULL; /* a scratch file, removed once read */
  d.on_done = of_xfer_done;
  d.on_progress = of_xfer_progress;
  d.ctx = r;
  r->phase = NIMBUS_OFFLOAD_DOWNLOAD;
  r->xdone = false;
  r->to_mem = to_mem;
  r->memerr = 0;
  if ((rc = nimbus_blob_download(r->x, &d)) != 0) {
    of_fail(r, "cannot queue the download: %s", nimbus_strerror(rc));
    return rc;
  }
  rc = nimbus_xfer_run(r->x);
  r->to_mem = false;
  if ((rc = of_xfer_outcome(r, rc, "the output")) != 0)
    return rc;
  r->out->bytes_received += r->xbytes;
  if (r->memerr != 0)
    of_fail(r, "cannot read the output into memory: %s",
            nimbus_strerror(r->memerr));
  return r->memerr;
}

/* Writes inline output bytes to `path` as a download would be: the part
 * file .<name>.part beside it, fsync, rename, fsync of the directory. */
static int of_write_file(of_run *r, const char *path, const uint8_t *p,
                         size_t n) {
  const char *slash = strrchr(path, '/');
  size_t dl = slash != NULL ? (size_t)(slash - path) + 1 : 0;
  size_t cap = strlen(path) + sizeof "..part";
  char *part = malloc(cap), *dir = NULL;
  int fd = -1, rc = NIMBUS_EIO;
  if (part == NULL ||
      (dir = dl > 0 ? strndup(path, dl) : strdup(".")) == NULL) {
    of_fail(r, "out of memory");
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  snprintf(part, cap, "%.*s.%s.part", (int)dl, path, path + dl);
  if (path[dl] == '\0') {
    of_fail(r, "%s is no file name", path);
    rc = NIMBUS_EINVAL;
    goto out;
  }
  fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) {
    of_fail(r, "cannot write %s: %s", part, strerror(errno));
    goto out;
  }
  if (nb_write_all(fd, p, n) != 0 || fsync(fd) != 0) {
    of_fail(r, "cannot write %s: %s", part, strerror(errno));
    goto fail_part;
  }
  int c = close(fd);
  fd = -1;
  if (c != 0 || rename(part, path) != 0) {
    of_fail(r, "cannot rename %s into place: %s", part, strerror(errno));
    goto fail_part;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  rc = 0;
  goto out;
fail_part:
  (void)unlink(part);
out:
  if (fd >= 0)
    close(fd);
  free(part);
  free(dir);
  return rc;
}

/* ---- The task ------------------------------------------------------------ */

/* On the agent's thread: note the reply; the waiting thread passes it on. */
static void of_task_progress(void *ctx, nimbus_task *t, const nimbus_reply *p) {
  (void)t;
  of_run *r = ctx;
  pthread_mutex_lock(&r->mu);
  r->last_reply = nb_mono_ms();
  /* A re-sent task the cloud is still running is answered with a
   * progress reply without counts: a sign of life only. */
  if (p->total > 0) {
    r->pdone = p->done;
    r->ptotal = p->total;
    r->pnew = true;
  }
  pthread_mutex_unlock(&r->mu);
}

static void of_progress_flush(of_run *r) {
  pthread_mutex_lock(&r->mu);
  bool fresh = r->pnew;
  int64_t done = r->pdone, total = r->ptotal;
  r->pnew = false;
  pthread_mutex_unlock(&r->mu);
  if (fresh && r->o->on_progress != NULL)
    r->o->on_progress(r->o->ctx, NIMBUS_OFFLOAD_PROCESS, done, total);
}

static int64_t of_last_reply(of_run *r) {
  pthread_mutex_lock(&r->mu);
  int64_t v = r->last_reply;
  pthread_mutex_unlock(&r->mu);
  return v;
}

/* nimbus_submit, blocking in slices while the agent is full, so that stop
 * and the timeout are still heeded. */
static int of_submit(of_run *r, const char *type, const uint8_t *args,
                     size_t args_len, const uint8_t *data, size_t data_len,
                     bool has_data, const nimbus_submit_opts *so,
                     nimbus_task **t) {
  int64_t until = nb_mono_ms() + r->timeout_ms;
  for (;;) {
    int rc = nimbus_submit(r->a, type, args, args_len, data, data_len, has_data,
                           so, OF_POLL_MS, t);
    if (rc != NIMBUS_EBUSY)
      return rc;
    if (of_stopped(r))
      return NIMBUS_ECANCELED;
    if (nb_mono_ms() >= until)
      return NIMBUS_ETIMEDOUT;
  }
}

/* The caller stopped the run while task `t` was out: task.cancel, so the
 * cloud stops at its next checkpoint, and a short wait for the task's own
 * answer (499). Releases t. */
static void of_cancel(of_run *r, nimbus_task *t) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  bk_pk_kv_str(&pk, "task", nimbus_task_id(t));
  nimbus_task *c = NULL;
  nimbus_reply *rep = NULL;
  if (nimbus_submit(r->a, "task.cancel", (const uint8_t *)sb.data, sb.size,
                    NULL, 0, false, NULL, OF_CANCEL_WAIT_MS, &c) == 0) {
    (void)nimbus_task_wait(c, OF_CANCEL_WAIT_MS, &rep);
    nimbus_reply_free(rep);
    rep = NULL;
    nimbus_task_release(c);
  }
  msgpack_sbuffer_destroy(&sb);
  if (nimbus_task_wait(t, OF_CANCEL_WAIT_MS, &rep) == 0 && rep != NULL &&
      strcmp(rep->status, "ok") != 0)
    r->out->code = rep->code;
  nimbus_reply_free(rep);
  nimbus_task_release(t);
  of_fail(r, "stopped: the cloud was asked to cancel task %s", r->out->task_id);
}

/* A 500 or 503 whose result names retry_after: the cloud asks for the
 * same task again in a moment. The wait, or -1 when it is no such reply. */
static int64_t of_retry_after(const nimbus_reply *rep) {
  if (rep->code != 500 && rep->code != 503)
    return -1;
  msgpack_object res;
  msgpack_zone *z = NULL;
  int64_t wait = -1;
  if (bk_result_map(rep, &res, &z) &&
      !bk_obj_int(sc_map_get(&res, "retry_after"), &wait))
    wait = -1;
  msgpack_zone_free(z);
  return wait < 0 ? -1 : wait > OF_RETRY_MAX_MS ? OF_RETRY_MAX_MS : wait;
}

/* Submits the task and waits for its final answer (*final), sending it
 * again (same id) after a transient answer. 0, or an error said in
 * out->error. */
static int of_process(of_run *r, const uint8_t *args, size_t args_len,
                      bool inline_in, nimbus_reply **final) {
  const nimbus_offload_opts *o = r->o;
  nimbus_offload_result *out = r->out;
  int64_t transient_since = 0;
  *final = NULL;
  for (;;) {
    nimbus_submit_opts so = {0};
    so.id = out->task_id[0] != '\0' ? out->task_id : o->id;
    so.on_progress = of_task_progress;
    so.ctx = r;
    nimbus_task *t = NULL;
    pthread_mutex_lock(&r->mu);
    r->last_reply = nb_mono_ms();
    pthread_mutex_unlock(&r->mu);
    int rc =
        of_submit(r, o->type, args, args_len, inline_in ? o->in_data : NULL,
                  inline_in ? o->in_len : 0, inline_in, &so, &t);
    if (rc != 0) {
      if (rc == NIMBUS_ECANCELED)
        of_fail(r, "stopped before the task went");
      else
        of_fail(r, "cannot send the %s task: %s", o->type,
                rc == NIMBUS_EINVAL ? "invalid type or task id"
                : rc == NIMBUS_ETOOBIG
                    ? "it is over 272 KiB with its inline data"
                    : nimbus_strerror(rc));
      return rc;
    }
    nb_strlcpy(out->task_id, nimbus_task_id(t), sizeof out->task_id);
    nimbus_reply *rep = NULL;
    for (;;) {
      rc = nimbus_task_wait(t, OF_POLL_MS, &rep);
      of_progress_flush(r);
      if (rc != NIMBUS_ETIMEDOUT)
        break;
      if (of_stopped(r)) {
        of_cancel(r, t);
        return NIMBUS_ECANCELED;
      }
      if (nb_mono_ms() - of_last_reply(r) > r->timeout_ms) {
        nimbus_task_release(t);
        of_fail(r, "no reply to task %s (%s) for %d ms", out->task_id, o->type,
                r->timeout_ms);
        return NIMBUS_ETIMEDOUT;
      }
    }
    if (rc != 0) {
      of_fail(r, "task %s: %s", out->task_id,
              rc == NIMBUS_EREFUSED ? nimbus_agent_errstr(r->a)
                                    : nimbus_strerror(rc));
      nimbus_task_release(t);
      return rc;
    }
    nimbus_task_release(t);
    int64_t wait = of_retry_after(rep);
    int64_t now = nb_mono_ms();
    if (wait >= 0) {
      wait += (int64_t)(of_rand(r) % (uint64_t)(wait / 4 + 1));
      if (transient_since == 0)
        transient_since = now;
      if (now + wait - transient_since <= r->timeout_ms) {
        nimbus_reply_free(rep);
        if ((rc = of_sleep_until(r, now + wait)) != 0) {
          of_fail(r, "stopped while waiting to send task %s again",
                  out->task_id);
          return rc;
        }
        continue;
      }
    }
    *final = rep;
    return 0;
  }
}

/* ---- Arguments ----------------------------------------------------------- */

static bool of_key_is(const msgpack_object *k, const char *s) {
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(s) &&
         memcmp(k->via.str.ptr, s, k->via.str.size) == 0;
}

/* The task's args: {ops, blob (when named), format, quality, extras...}.
 * `extra` is the decoded extras map or NULL. */
static int of_args_pack(const nimbus_offload_opts *o, const uint8_t *ops,
                        size_t ops_len, const char *blob,
                        const msgpack_object *extra, msgpack_sbuffer *sb) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  uint32_t n = 1 + (blob != NULL) + (o->format != NULL) + (o->quality != 0) +
               (extra != NULL ? extra->via.map.size : 0);
  int rc = msgpack_pack_map(&pk, n);
  bk_pk_str(&pk, "ops");
  rc |= msgpack_sbuffer_write(sb, (const char *)ops, ops_len);
  if (blob != NULL)
    bk_pk_kv_str(&pk, "blob", blob);
  if (o->format != NULL)
    bk_pk_kv_str(&pk, "format", o->format);
  if (o->quality != 0) {
    bk_pk_str(&pk, "quality");
    if (o->quality == trunc(o->quality) && fabs(o->quality) < 9.0e18)
      rc |= msgpack_pack_int64(&pk, (int64_t)o->quality);
    else
      rc |= msgpack_pack_double(&pk, o->quality);
  }
  for (uint32_t i = 0; extra != NULL && i < extra->via.map.size; i++) {
    rc |= msgpack_pack_object(&pk, extra->via.map.ptr[i].key);
    rc |= msgpack_pack_object(&pk, extra->via.map.ptr[i].val);
  }
  return rc != 0 ? NIMBUS_ENOMEM : 0;
}

/* Checks the options; the packed ops into *ops (owned: *own when parsed
 * here) and the decoded extras into *extra (zone *ez). */
static int of_check(of_run *r, const uint8_t **ops, size_t *ops_len,
                    uint8_t **own, msgpack_object *extra, bool *has_extra,
                    msgpack_zone **ez) {
  const nimbus_offload_opts *o = r->o;
  char err[256];
  *has_extra = false;
  if (o->type == NULL || !nb_valid_terminal(o->type, strlen(o->type))) {
    of_fail(r, "type must be a task type such as process.image");
    return NIMBUS_EINVAL;
  }
  int inputs =
      (o->in_path != NULL) + (o->in_blob != NULL) + (o->has_in_data ? 1 : 0);
  if (inputs != 1) {
    of_fail(r,
            "give exactly one input: in_path, in_blob or in_data (%d "
            "given)",
            inputs);
    return NIMBUS_EINVAL;
  }
  if (o->in_blob != NULL && !nb_is_sha256_hex(o->in_blob)) {
    of_fail(r, "in_blob must be a blob's SHA-256, 64 lowercase hex digits");
    return NIMBUS_EINVAL;
  }
  if (o->has_in_data && o->in_data == NULL && o->in_len > 0) {
    of_fail(r, "in_data is NULL with in_len %zu", o->in_len);
    return NIMBUS_EINVAL;
  }
  if (o->in_path != NULL && o->in_path[0] == '\0') {
    of_fail(r, "in_path is empty");
    return NIMBUS_EINVAL;
  }
  if (o->out_path != NULL && o->out_path[0] == '\0') {
    of_fail(r, "out_path is empty");
    return NIMBUS_EINVAL;
  }
  if (o->timeout_ms < 0 || o->jobs < 0 || !isfinite(o->quality)) {
    of_fail(r, "timeout_ms and jobs may not be negative, quality must be a "
               "number");
    return NIMBUS_EINVAL;
  }
  if (o->format != NULL && o->format[0] == '\0') {
    of_fail(r, "format is empty (NULL: the type's default)");
    return NIMBUS_EINVAL;
  }
  if ((o->ops != NULL) == (o->op_strings != NULL)) {
    of_fail(r, "give the ops either packed (ops) or as strings "
               "(op_strings)");
    return NIMBUS_EINVAL;
  }
  if (o->op_strings != NULL) {
    int rc = nimbus_offload_ops_parse(o->op_strings, o->nop_strings, own,
                                      ops_len, err, sizeof err);
    if (rc != 0) {
      of_fail(r, "%s", err);
      return rc;
    }
    *ops = *own;
  } else {
    msgpack_object v;
    msgpack_zone *z = NULL;
    bool ok =
        sc_value_decode(o->ops, o->ops_len, &v, &z, err, sizeof err) == 0 &&
        v.type == MSGPACK_OBJECT_ARRAY && v.via.array.size >= 1 &&
        v.via.array.size <= NIMBUS_OFFLOAD_OPS_MAX;
    for (uint32_t i = 0; ok && i < v.via.array.size; i++) {
      const msgpack_object *e = &v.via.array.ptr[i];
      const msgpack_object *name =
          e->type == MSGPACK_OBJECT_MAP ? sc_map_get(e, "op") : NULL;
      ok = name != NULL && name->type == MSGPACK_OBJECT_STR;
    }
    msgpack_zone_free(z);
    if (!ok) {
      of_fail(r,
              "ops must be a packed array of 1-%d maps, each with an "
              "\"op\" string",
              NIMBUS_OFFLOAD_OPS_MAX);
      return NIMBUS_EINVAL;
    }
    *ops = o->ops;
    *ops_len = o->ops_len;
  }
  if (o->args != NULL) {
    if (sc_value_decode(o->args, o->args_len, extra, ez, err, sizeof err) !=
            0 ||
        extra->type != MSGPACK_OBJECT_MAP) {
      of_fail(r, "args must be one packed msgpack map");
      return NIMBUS_EINVAL;
    }
    static const char *const reserved[] = {"blob", "ops", "format", "quality"};
    for (uint32_t i = 0; i < extra->via.map.size; i++)
      for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
        if (of_key_is(&extra->via.map.ptr[i].key, reserved[k])) {
          of_fail(r, "args may not hold \"%s\": it has its own option",
                  reserved[k]);
          return NIMBUS_EINVAL;
        }
    *has_extra = true;
  }
  return 0;
}

/* ---- The call ------------------------------------------------------------ */

void nimbus_offload_opts_init(nimbus_offload_opts *o) {
  memset(o, 0, sizeof *o);
}

void nimbus_offload_result_fini(nimbus_offload_result *r) {
  if (r == NULL)
    return;
  free(r->result);
  free(r->data);
  memset(r, 0, sizeof *r);
  r->size = -1;
}

/* Takes the final reply: its result into out; 0 for ok (blob and size
 * checked), else the error of its code. *inline_ok: the reply's data is
 * the whole output, verified. */
static int of_take_reply(of_run *r, const nimbus_reply *rep, bool *inline_ok) {
  nimbus_offload_result *out = r->out;
  *inline_ok = false;
  if (rep->result != NULL && rep->result_len > 0) {
    if ((out->result = malloc(rep->result_len)) == NULL) {
      of_fail(r, "out of memory");
      return NIMBUS_ENOMEM;
    }
    memcpy(out->result, rep->result, rep->result_len);
    out->result_len = rep->result_len;
  }
  if (strcmp(rep->status, "ok") != 0) {
    out->code = rep->code;
    of_fail(r, "%s", rep->error != NULL ? rep->error : "the task failed");
    nb_strlcpy(out->help, rep->help != NULL ? rep->help : "", sizeof out->help);
    return bk_err_of_code(rep->code);
  }
  msgpack_object res;
  msgpack_zone *z = NULL;
  const msgpack_object *b = NULL, *c = NULL;
  int64_t size = -1;
  if (bk_result_map(rep, &res, &z)) {
    b = sc_map_get(&res, "blob");
    c = sc_map_get(&res, "cached");
    if (!bk_obj_int(sc_map_get(&res, "size"), &size))
      size = -1;
  }
  bool ok = b != NULL && b->type == MSGPACK_OBJECT_STR &&
            b->via.str.size == 64 && size >= 0;
  if (ok) {
    memcpy(out->blob, b->via.str.ptr, 64);
    out->blob[64] = '\0';
    ok = nb_is_sha256_hex(out->blob);
  }
  out->cached =
      c != NULL && c->type == MSGPACK_OBJECT_BOOLEAN && c->via.boolean;
  msgpack_zone_free(z);
  if (!ok) {
    out->blob[0] = '\0';
    of_fail(r, "the answer to task %s names no output blob and size",
            out->task_id);
    return NIMBUS_EPROTO;
  }
  out->size = size;
  if (rep->data != NULL && (int64_t)rep->data_len == size) {
    uint8_t want[32], got[32];
    (void)nb_unhex32(out->blob, want);
    nb_sha256(rep->data, rep->data_len, got);
    /* Bytes without the blob's SHA-256 are not trusted: downloaded. */
    *inline_ok = memcmp(want, got, 32) == 0;
  }
  out->inline_data = *inline_ok;
  return 0;
}

/* Writes the output where it was asked for. */
static int of_output(of_run *r, const nimbus_reply *rep, bool inline_ok) {
  const nimbus_offload_opts *o = r->o;
  nimbus_offload_result *out = r->out;
  int rc = 0;
  if (o->out_path != NULL) {
    if (inline_ok) {
      if (o->on_progress != NULL)
        o->on_progress(o->ctx, NIMBUS_OFFLOAD_DOWNLOAD, out->size, out->size);
      rc = of_write_file(r, o->out_path, rep->data, rep->data_len);
    } else {
      rc = of_download(r, o->out_path, NULL, o->want_data);
    }
    if (rc != 0)
      return rc;
  }
  if (!o->want_data || out->data != NULL)
    return 0;
  if (inline_ok) {
    if ((out->data = malloc(rep->data_len > 0 ? rep->data_len : 1)) == NULL) {
      of_fail(r, "out of memory");
      return NIMBUS_ENOMEM;
    }
    memcpy(out->data, rep->data, rep->data_len);
    out->data_len = rep->data_len;
    return 0;
  }
  /* Only into memory: by way of a scratch file of ours (mode 0600, made
   * here with O_EXCL, so nobody else's file is ever written or read). */
  const char *dir = o->tmp_dir;
  if (dir == NULL || dir[0] == '\0')
    dir = getenv("TMPDIR");
  if (dir == NULL || dir[0] == '\0')
    dir = "/tmp";
  size_t cap = strlen(dir) + sizeof "/.nimbus-offload-XXXXXX";
  char *tmp = malloc(cap);
  if (tmp == NULL) {
    of_fail(r, "out of memory");
    return NIMBUS_ENOMEM;
  }
  snprintf(tmp, cap, "%s/.nimbus-offload-XXXXXX", dir);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    of_fail(r, "cannot make a scratch file in %s: %s", dir, strerror(errno));
    free(tmp);
    return NIMBUS_EIO;
  }
  close(fd);
  rc = of_download(r, NULL, tmp, true);
  (void)unlink(tmp);
  free(tmp);
  return rc;
}

int nimbus_offload(nimbus_agent *a, const nimbus_offload_opts *o,
                   nimbus_offload_result *out) {
  if (out == NULL)
    return NIMBUS_EINVAL;
  memset(out, 0, sizeof *out);
  out->size = -1;
  if (a == NULL || o == NULL) {
    nb_errf(out->error, sizeof out->error, "no agent or no options");
    return NIMBUS_EINVAL;
  }
  of_run r;
  memset(&r, 0, sizeof r);
  r.a = a;
  r.o = o;
  r.out = out;
  r.timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : OF_TIMEOUT_MS;
  r.rng = (uint64_t)nb_mono_ms() * 0x9E3779B97F4A7C15ULL | 1;
  pthread_mutex_init(&r.mu, NULL);

  const uint8_t *ops = NULL;
  size_t ops_len = 0;
  uint8_t *own_ops = NULL;
  msgpack_object extra;
  msgpack_zone *ez = NULL;
  bool has_extra = false;
  nimbus_reply *rep = NULL;
  msgpack_sbuffer args;
  msgpack_sbuffer_init(&args);
  int rc = of_check(&r, &ops, &ops_len, &own_ops, &extra, &has_extra, &ez);
  if (rc != 0)
    goto out;

  bool inline_in = o->has_in_data && o->in_len <= OF_INLINE_MAX;
  if (o->in_blob != NULL)
    nb_strlcpy(out->input, o->in_blob, sizeof out->input);
  else if (!inline_in && (rc = of_upload(&r)) != 0)
    goto out;
  if ((rc = of_args_pack(o, ops, ops_len, inline_in ? NULL : out->input,
                         has_extra ? &extra : NULL, &args)) != 0) {
    of_fail(&r, "out of memory");
    goto out;
  }
  if ((rc = of_process(&r, (const uint8_t *)args.data, args.size, inline_in,
                       &rep)) != 0)
    goto out;
  bool inline_ok = false;
  if ((rc = of_take_reply(&r, rep, &inline_ok)) != 0)
    goto out;
  rc = of_output(&r, rep, inline_ok);

out:
  if (rc != 0) {
    free(out->data);
    out->data = NULL;
    out->data_len = 0;
    if (out->error[0] == '\0')
      nb_errf(out->error, sizeof out->error, "%s", nimbus_strerror(rc));
  } else {
    out->error[0] = '\0';
  }
  nimbus_reply_free(rep);
  nimbus_xfer_free(r.x);
  msgpack_sbuffer_destroy(&args);
  msgpack_zone_free(ez);
  free(own_ops);
  pthread_mutex_destroy(&r.mu);
  return rc;
}
