/* Loading the agent (nimbus/agent.h): the agent.* tasks (agent.get,
 * agent.answer, agent.report), and the install of a package into an
 * install directory (versions/<version>/, the links current and previous
 * swapped with rename(2)) and its rollback. The checks and the extractor
 * are pkg.c's (ag_load.h); the download is the transfer engine's
 * (nimbus_blob_download). */
#include "ag_internal.h"
#include "ag_load.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bk_pipe.h"
#include "nb_semver.h"
#include "nb_util.h"
#include "sc.h"

#define UP_TIMEOUT_DEFAULT 10000
/* The longest pause a busy cloud may ask for between two tries. */
#define UP_RETRY_MAX_MS 30000

/* ---- The agent.* tasks -------------------------------------------------- */

static bool up_on_agent_thread(const nimbus_agent *a) {
  return a->thread_started && pthread_equal(pthread_self(), a->thread);
}

static void up_sleep_ms(int64_t ms) {
  if (ms <= 0)
    return;
  struct timespec ts = {.tv_sec = ms / 1000,
                        .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* One task and its final reply; a transient answer (429, 500, 503) is
 * asked again, with a new id, after its retry_after (1 s when it gives
 * none) plus up to a quarter, while timeout_ms lasts. Returns 0 and *out
 * (an ok or error reply), or the agent's error with a sentence in err. */
static int up_call(nimbus_agent *a, const char *type, const msgpack_sbuffer *sb,
                   int timeout_ms, nimbus_reply **out, char *err,
                   size_t errcap) {
  *out = NULL;
  if (a == NULL || up_on_agent_thread(a)) {
    nb_errf(err, errcap, "%s cannot be asked from the agent's callbacks", type);
    return NIMBUS_EINVAL;
  }
  int64_t deadline = timeout_ms < 0 ? INT64_MAX : nb_mono_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline == INT64_MAX ? -1 : deadline - nb_mono_ms();
    if (left == 0 || left < -1)
      left = 1;
    nimbus_task *t = NULL;
    int rc =
        nimbus_submit(a, type, (const uint8_t *)sb->data, sb->size, NULL, 0,
                      false, NULL, left > INT32_MAX ? -1 : (int)left, &t);
    nimbus_reply *r = NULL;
    if (rc == 0)
      rc = nimbus_task_wait(t, left > INT32_MAX ? -1 : (int)left, &r);
    if (rc != 0) {
      nb_errf(err, errcap, "%s: %s", type,
              rc == NIMBUS_EREFUSED ? nimbus_agent_errstr(a)
                                    : nimbus_strerror(rc));
      nimbus_task_release(t);
      return rc;
    }
    nimbus_task_release(t);
    bool transient = strcmp(r->status, "error") == 0 &&
                     (r->code == 429 || r->code == 500 || r->code == 503);
    if (!transient) {
      *out = r;
      return 0;
    }
    int64_t wait = 1000;
    msgpack_object res;
    msgpack_zone *z = NULL;
    if (bk_result_map(r, &res, &z))
      (void)bk_obj_int(sc_map_get(&res, "retry_after"), &wait);
    msgpack_zone_free(z);
    /* The cloud's word, bounded: never a tight loop, never past --timeout
     * by an overflow. */
    wait = wait < 0 ? 0 : wait > UP_RETRY_MAX_MS ? UP_RETRY_MAX_MS : wait;
    uint8_t j = 0;
    (void)nb_random_bytes(&j, 1);
    wait += wait / 4 * j / 255;
    if (deadline != INT64_MAX && wait >= deadline - nb_mono_ms()) {
      nb_errf(err, errcap, "%s: error %d: %s (still, after %d ms)", type,
              r->code, r->error != NULL ? r->error : "the cloud is busy",
              timeout_ms);
      nimbus_reply_free(r);
      return NIMBUS_ETIMEDOUT;
    }
    nimbus_reply_free(r);
    up_sleep_ms(wait);
  }
}

/* The error of a reply that is not ok, as a nimbus_err with the cloud's
 * words in err. */
static int up_cloud_error(const char *type, const nimbus_reply *r, char *err,
                          size_t errcap) {
  nb_errf(err, errcap, "%s: error %d: %s", type, r->code,
          r->error != NULL ? r->error : "(no message)");
  return r->code == 404   ? NIMBUS_ENOTFOUND
         : r->code == 400 ? NIMBUS_EINVAL
                          : NIMBUS_EIO;
}

/* Copies the str at `key` of `m` into out (cap bytes), when it has from
 * min to cap - 1 bytes and no NUL. */
static bool up_str(const msgpack_object *m, const char *key, size_t min,
                   char *out, size_t cap) {
  const msgpack_object *o = sc_map_get(m, key);
  if (o == NULL || o->type != MSGPACK_OBJECT_STR || o->via.str.size < min ||
      o->via.str.size >= cap || memchr(o->via.str.ptr, 0, o->via.str.size))
    return false;
  memcpy(out, o->via.str.ptr, o->via.str.size);
  out[o->via.str.size] = '\0';
  return true;
}

/* agent.get's result (also an accepted agent.answer's) into *p. */
static int up_pkg_parse(const char *type, const nimbus_reply *r,
                        nimbus_agent_pkg *p, char *err, size_t errcap) {
  memset(p, 0, sizeof *p);
  msgpack_object res;
  msgpack_zone *z = NULL;
  int rc = 0;
  if (!bk_result_map(r, &res, &z)) {
    nb_errf(err, errcap, "%s answered no result map", type);
    return NIMBUS_EPROTO;
  }
  const msgpack_object *utd = sc_map_get(&res, "up_to_date");
  if (res.via.map.size == 0) {
    /* refused, or nothing to install */
  } else if (utd != NULL) {
    if (utd->type != MSGPACK_OBJECT_BOOLEAN || !utd->via.boolean) {
      nb_errf(err, errcap, "%s answered up_to_date that is not true", type);
      rc = NIMBUS_EPROTO;
    }
    p->up_to_date = true;
  } else {
    const msgpack_object *notes = sc_map_get(&res, "notes");
    bool ok =
        up_str(&res, "platform", 1, p->platform, sizeof p->platform) &&
        up_str(&res, "version", 1, p->version, sizeof p->version) &&
        up_str(&res, "blob", 64, p->blob, sizeof p->blob) &&
        up_str(&res, "sha256", 64, p->sha256, sizeof p->sha256) &&
        up_str(&res, "signature", 128, p->signature, sizeof p->signature) &&
        bk_obj_int(sc_map_get(&res, "size"), &p->size) &&
        (notes == NULL || up_str(&res, "notes", 0, p->notes, sizeof p->notes));
    (void)bk_obj_int(sc_map_get(&res, "published"), &p->published);
    if (!ok) {
      nb_errf(err, errcap,
              "%s answered a package without platform, version, blob, "
              "sha256, signature or size as SPEC.md says",
              type);
      rc = NIMBUS_EPROTO;
    }
    p->found = ok;
  }
  msgpack_zone_free(z);
  return rc;
}

/* An empty buffer and its packer, for a task's args. */
static void up_args(msgpack_sbuffer *sb, msgpack_packer *pk) {
  msgpack_sbuffer_init(sb);
  msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

/* Sends the task of `type` with the args packed in sb (destroyed here),
 * waits, and reads an ok reply's package into out (NULL: none wanted).
 * Returns as nimbus_agent_get. */
static int up_task(nimbus_agent *a, const char *type, msgpack_sbuffer *sb,
                   int timeout_ms, nimbus_agent_pkg *out, char *err,
                   size_t errcap) {
  nimbus_reply *r = NULL;
  int rc = up_call(a, type, sb, timeout_ms, &r, err, errcap);
  msgpack_sbuffer_destroy(sb);
  if (rc == 0 && !bk_reply_ok(r))
    rc = up_cloud_error(type, r, err, errcap);
  else if (rc == 0 && out != NULL)
    rc = up_pkg_parse(type, r, out, err, errcap);
  nimbus_reply_free(r);
  return rc;
}

static bool up_platform_ok(const char *s) {
  return nb_valid_terminal(s, strlen(s));
}

static bool up_version_ok(const char *s) {
  return nb_semver_valid(s, strlen(s));
}

int nimbus_agent_get(nimbus_agent *a, const char *platform, const char *have,
                     int timeout_ms, nimbus_agent_pkg *out, char *err,
                     size_t errcap) {
  memset(out, 0, sizeof *out);
  if (platform == NULL)
    platform = nimbus_agent_platform();
  if (!up_platform_ok(platform) || (have != NULL && !up_version_ok(have))) {
    nb_errf(err, errcap,
            "agent.get: a platform is 1-64 of [A-Za-z0-9._-] "
            "and have a semantic version");
    return NIMBUS_EINVAL;
  }
  msgpack_sbuffer sb;
  msgpack_packer pk;
  up_args(&sb, &pk);
  msgpack_pack_map(&pk, have != NULL ? 2 : 1);
  bk_pk_kv_str(&pk, "platform", platform);
  if (have != NULL)
    bk_pk_kv_str(&pk, "have", have);
  return up_task(a, "agent.get", &sb, timeout_ms, out, err, errcap);
}

int nimbus_offer_answer(nimbus_agent *a, const char *offer, bool accept,
                        const char *platform, const char *have, int timeout_ms,
                        nimbus_agent_pkg *out, char *err, size_t errcap) {
  memset(out, 0, sizeof *out);
  if (platform == NULL)
    platform = nimbus_agent_platform();
  if (have == NULL)
    have = nimbus_agent_version();
  if (offer == NULL || offer[0] == '\0' || strlen(offer) > 64 ||
      !up_platform_ok(platform) || !up_version_ok(have)) {
    nb_errf(err, errcap,
            "agent.answer: an offer id is 1-64 bytes, a platform 1-64 of "
            "[A-Za-z0-9._-], have a semantic version");
    return NIMBUS_EINVAL;
  }
  msgpack_sbuffer sb;
  msgpack_packer pk;
  up_args(&sb, &pk);
  msgpack_pack_map(&pk, 4);
  bk_pk_kv_str(&pk, "offer", offer);
  bk_pk_str(&pk, "accept");
  if (accept)
    msgpack_pack_true(&pk);
  else
    msgpack_pack_false(&pk);
  bk_pk_kv_str(&pk, "platform", platform);
  bk_pk_kv_str(&pk, "have", have);
  return up_task(a, "agent.answer", &sb, timeout_ms, out, err, errcap);
}

int nimbus_agent_report(nimbus_agent *a, const char *platform,
                        const char *version, int timeout_ms, char *err,
                        size_t errcap) {
  if (platform == NULL)
    platform = nimbus_agent_platform();
  if (version == NULL || !up_platform_ok(platform) || !up_version_ok(version)) {
    nb_errf(err, errcap,
            "agent.report: a platform is 1-64 of "
            "[A-Za-z0-9._-] and a version a semantic version");
    return NIMBUS_EINVAL;
  }
  msgpack_sbuffer sb;
  msgpack_packer pk;
  up_args(&sb, &pk);
  msgpack_pack_map(&pk, 2);
  bk_pk_kv_str(&pk, "platform", platform);
  bk_pk_kv_str(&pk, "version", version);
  return up_task(a, "agent.report", &sb, timeout_ms, NULL, err, errcap);
}

/* ---- The install directory ---------------------------------------------- */

void nimbus_install_opts_init(nimbus_install_opts *o) {
  memset(o, 0, sizeof *o);
}

/* The version a link (current, previous) of the install directory names:
 * "versions/<version>" with a valid version, into out[65]; "" when there
 * is no such link or it names something else. */
static void up_link_read(int dfd, const char *name, char *out) {
  char buf[128];
  out[0] = '\0';
  ssize_t n = readlinkat(dfd, name, buf, sizeof buf - 1);
  if (n <= 9 || strncmp(buf, "versions/", 9) != 0)
    return;
  buf[n] = '\0';
  const char *v = buf + 9;
  if (strlen(v) <= 64 && up_version_ok(v))
    memcpy(out, v, strlen(v) + 1);
}

/* Points `name` at versions/<version> by renaming a new link over it. */
static int up_link_set(int dfd, const char *name, const char *version,
                       char *err, size_t errcap) {
  char target[80], tmp[96], rnd[12];
  if (nb_random_id(rnd, sizeof rnd, 60) != 0)
    return NIMBUS_ESYS;
  snprintf(target, sizeof target, "versions/%s", version);
  snprintf(tmp, sizeof tmp, ".%s.%s", name, rnd);
  if (symlinkat(target, dfd, tmp) != 0 || renameat(dfd, tmp, dfd, name) != 0) {
    nb_errf(err, errcap, "cannot point %s at %s: %s", name, target,
            strerror(errno));
    (void)unlinkat(dfd, tmp, 0);
    return NIMBUS_EIO;
  }
  return 0;
}

/* Removes `name` below dirfd and everything in it, never following a
 * link (a link is removed as itself). Errors are ignored: what stays is
 * removed by the next install's pruning. */
static void up_rmtree(int dirfd, const char *name) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    (void)unlinkat(dirfd, name, 0);
    return;
  }
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (unlinkat(fd, e->d_name, 0) != 0 && (errno == EISDIR || errno == EPERM))
      up_rmtree(fd, e->d_name);
  }
  closedir(d);
  (void)unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Opens the install directory (made, 0755, when `make`) and takes its
 * lock (an flock on .lock, waited for). Returns 0 with *dfd and *lock. */
static int up_open(const char *dir, bool make, int *dfd, int *lock, char *err,
                   size_t errcap) {
  *dfd = -1;
  if (lock != NULL)
    *lock = -1;
  if (dir == NULL || dir[0] == '\0') {
    nb_errf(err, errcap, "no install directory given");
    return NIMBUS_EINVAL;
  }
  if (make && mkdir(dir, 0755) != 0 && errno != EEXIST) {
    nb_errf(err, errcap, "cannot make %s: %s", dir, strerror(errno));
    return NIMBUS_EIO;
  }
  *dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (*dfd < 0) {
    int e = errno;
    nb_errf(err, errcap, "cannot open %s: %s", dir, strerror(e));
    return e == ENOENT ? NIMBUS_ENOTFOUND : NIMBUS_EIO;
  }
  if (lock == NULL)
    return 0;
  *lock =
      openat(*dfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  int rc;
  while ((rc = *lock >= 0 ? flock(*lock, LOCK_EX) : -1) != 0 && errno == EINTR)
    ;
  if (rc != 0) {
    nb_errf(err, errcap, "cannot lock %s/.lock: %s", dir, strerror(errno));
    if (*lock >= 0)
      close(*lock);
    close(*dfd);
    *dfd = *lock = -1;
    return NIMBUS_EIO;
  }
  return 0;
}

static void up_close(int dfd, int lock) {
  if (lock >= 0)
    close(lock);
  if (dfd >= 0)
    close(dfd);
}

int nimbus_agent_installed(const char *install_dir, char *current,
                           char *previous) {
  char cur[65] = "", prev[65] = "", err[8];
  int dfd;
  int rc = up_open(install_dir, false, &dfd, NULL, err, sizeof err);
  if (rc == 0) {
    up_link_read(dfd, "current", cur);
    up_link_read(dfd, "previous", prev);
    close(dfd);
  }
  if (current != NULL)
    memcpy(current, cur, sizeof cur);
  if (previous != NULL)
    memcpy(previous, prev, sizeof prev);
  return rc;
}

/* Whether versions/<v>/bin/nimbus-agent is there, a regular file. */
static bool up_version_there(int dfd, const char *v) {
  char path[96];
  struct stat st;
  snprintf(path, sizeof path, "versions/%s/bin/nimbus-agent", v);
  return fstatat(dfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode);
}

/* Removes from versions/ what neither link names (and leftovers of
 * installs that were interrupted). Holds the lock. */
static void up_prune(int dfd, const char *keep1, const char *keep2) {
  int vfd =
      openat(dfd, "versions", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (vfd < 0)
    return;
  DIR *d = fdopendir(vfd);
  if (d == NULL) {
    close(vfd);
    return;
  }
  /* Names first, removed afterwards: readdir and removal do not mix. */
  char **gone = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
        strcmp(e->d_name, keep1) == 0 || strcmp(e->d_name, keep2) == 0)
      continue;
    if (n == cap) {
      size_t nc = cap != 0 ? 2 * cap : 8;
      char **g = realloc(gone, nc * sizeof *g);
      if (g == NULL)
        break;
      gone = g;
      cap = nc;
    }
    if ((gone[n] = strdup(e->d_name)) != NULL)
      n++;
  }
  for (size_t i = 0; i < n; i++) {
    up_rmtree(vfd, gone[i]);
    free(gone[i]);
  }
  free(gone);
  closedir(d);
}

/* The download through the engine: what it ended with. */
typedef struct up_dl {
  nimbus_xfer *x;
  const nimbus_install_opts *o;
  int64_t want; /* the package's size */
  int64_t seen; /* the blob's size, as the engine learnt it; -1 */
  int err;
  char error[256];
  int fd; /* the verified file, dup'ed; -1 */
  int64_t bytes;
} up_dl;

static void up_dl_progress(void *ctx, int64_t done, int64_t total) {
  up_dl *d = ctx;
  if (total != d->want) {
    /* Not the package's size: stop at once, nothing more is fetched. */
    d->seen = total;
    nimbus_xfer_cancel(d->x);
    return;
  }
  if (d->o->on_progress != NULL)
    d->o->on_progress(d->o->ctx, done, total);
}

static void up_dl_done(void *ctx, const nimbus_blob_result *r) {
  up_dl *d = ctx;
  d->err = r->err;
  d->bytes += r->bytes;
  nb_strlcpy(d->error, r->error != NULL ? r->error : "", sizeof d->error);
  if (r->err == 0 && r->fd >= 0)
    d->fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
  if (r->err == 0 && r->size >= 0 && r->size != d->want)
    d->seen = r->size;
}

/* Fetches the package into <install_dir>/.incoming/<sha256>.pkg; returns
 * 0 with *fd (the verified file), or an error with out->check/error. */
static int up_download(nimbus_agent *a, int dfd, const nimbus_agent_pkg *p,
                       const nimbus_install_opts *o, nimbus_install_result *out,
                       int *fd) {
  *fd = -1;
  if (mkdirat(dfd, ".incoming", 0700) != 0 && errno != EEXIST) {
    nb_errf(out->error, sizeof out->error, "cannot make %s/.incoming: %s",
            o->install_dir, strerror(errno));
    return NIMBUS_EIO;
  }
  int ifd =
      openat(dfd, ".incoming", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (ifd < 0) {
    nb_errf(out->error, sizeof out->error, "cannot open %s/.incoming: %s",
            o->install_dir, strerror(errno));
    return NIMBUS_EIO;
  }
  char name[80], part[96];
  snprintf(name, sizeof name, "%s.pkg", p->sha256);
  snprintf(part, sizeof part, ".%s.part", name);
  int rc = 0;
  /* A part file an interrupted call left is resumed (the size given);
   * should that fail on its bytes, once more from the start. */
  struct stat st;
  bool resume = fstatat(ifd, part, &st, AT_SYMLINK_NOFOLLOW) == 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    nimbus_xfer_opts xo;
    nimbus_xfer_opts_init(&xo);
    xo.jobs = o->jobs;
    xo.timeout_ms = o->timeout_ms;
    xo.stop = o->stop;
    xo.stop_ctx = o->stop_ctx;
    up_dl d = {.o = o, .want = p->size, .seen = -1, .err = 0, .fd = -1};
    if ((rc = nimbus_xfer_new(a, &xo, &d.x)) != 0)
      break;
    nimbus_blob_download_opts dl;
    nimbus_blob_download_opts_init(&dl);
    dl.blob = p->blob;
    dl.size = resume ? p->size : -1;
    dl.dirfd = ifd;
    dl.name = name;
    dl.part = part;
    dl.on_done = up_dl_done;
    dl.on_progress = up_dl_progress;
    dl.ctx = &d;
    rc = nimbus_blob_download(d.x, &dl);
    int run = rc == 0 ? nimbus_xfer_run(d.x) : rc;
    nimbus_xfer_free(d.x);
    out->bytes_received += d.bytes;
    if (rc != 0)
      break;
    if (d.seen >= 0) {
      (void)unlinkat(ifd, part, 0);
      (void)unlinkat(ifd, name, 0);
      if (d.fd >= 0)
        close(d.fd);
      out->check = NIMBUS_CHECK_SIZE;
      nb_errf(out->error, sizeof out->error,
              "size check failed: the package is %lld bytes, its blob %lld",
              (long long)p->size, (long long)d.seen);
      rc = NIMBUS_EAUTH;
      break;
    }
    rc = d.err != 0 ? d.err : run;
    if (rc == NIMBUS_EPROTO && resume) {
      resume = false;
      continue;
    }
    if (rc == NIMBUS_EPROTO) {
      out->check = NIMBUS_CHECK_SHA256;
      nb_errf(out->error, sizeof out->error,
              "sha256 check failed: the bytes fetched are not those of "
              "SHA-256 %.16s... (%s)",
              p->sha256, d.error);
      rc = NIMBUS_EAUTH;
    } else if (rc != 0) {
      nb_errf(out->error, sizeof out->error, "downloading the package: %s",
              d.error[0] != '\0' ? d.error : nimbus_strerror(rc));
    } else if (d.fd < 0 || fstat(d.fd, &st) != 0 || st.st_size != p->size) {
      out->check = NIMBUS_CHECK_SIZE;
      nb_errf(out->error, sizeof out->error,
              "size check failed: the package is %lld bytes, the file "
              "fetched %lld",
              (long long)p->size, d.fd >= 0 ? (long long)st.st_size : -1LL);
      rc = NIMBUS_EAUTH;
    }
    if (rc == 0)
      *fd = d.fd;
    else if (d.fd >= 0)
      close(d.fd);
    break;
  }
  /* The package file itself goes once extracted (or refused); the fd
   * holds it meanwhile. */
  (void)unlinkat(ifd, name, 0);
  close(ifd);
  return rc;
}

/* Extracts fd into versions/<version>, by way of a new directory. */
static int up_unpack(int dfd, int fd, const nimbus_agent_pkg *p,
                     const nimbus_install_opts *o, nimbus_install_result *out) {
  if (mkdirat(dfd, "versions", 0755) != 0 && errno != EEXIST) {
    nb_errf(out->error, sizeof out->error, "cannot make %s/versions: %s",
            o->install_dir, strerror(errno));
    return NIMBUS_EIO;
  }
  int vfd =
      openat(dfd, "versions", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  char tmp[32], rnd[12];
  if (vfd < 0 || nb_random_id(rnd, sizeof rnd, 60) != 0) {
    nb_errf(out->error, sizeof out->error, "cannot open %s/versions: %s",
            o->install_dir, strerror(errno));
    if (vfd >= 0)
      close(vfd);
    return NIMBUS_EIO;
  }
  snprintf(tmp, sizeof tmp, ".tmp-%s", rnd);
  int tfd = -1, rc = 0;
  if (mkdirat(vfd, tmp, 0700) != 0 ||
      (tfd = openat(vfd, tmp,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
    nb_errf(out->error, sizeof out->error, "cannot make %s/versions/%s: %s",
            o->install_dir, tmp, strerror(errno));
    close(vfd);
    return NIMBUS_EIO;
  }
  char why[400];
  struct stat st;
  if (lseek(fd, 0, SEEK_SET) != 0) {
    nb_errf(out->error, sizeof out->error, "cannot read the package: %s",
            strerror(errno));
    rc = NIMBUS_EIO;
  } else if ((rc = ag_pkg_extract(fd, tfd, o->max_unpacked, why, sizeof why)) !=
             0) {
    if (rc == NIMBUS_EIO || rc == NIMBUS_ENOMEM) {
      nb_errf(out->error, sizeof out->error, "unpacking the package: %s", why);
    } else {
      out->check = NIMBUS_CHECK_ARCHIVE;
      nb_errf(out->error, sizeof out->error, "archive check failed: %s", why);
      rc = NIMBUS_EAUTH;
    }
  } else if (fstatat(tfd, "bin/nimbus-agent", &st, AT_SYMLINK_NOFOLLOW) != 0 ||
             !S_ISREG(st.st_mode) || (st.st_mode & 0100) == 0) {
    out->check = NIMBUS_CHECK_ARCHIVE;
    nb_errf(out->error, sizeof out->error,
            "archive check failed: the package holds no executable "
            "bin/nimbus-agent");
    rc = NIMBUS_EAUTH;
  } else if (fchmod(tfd, 0755) != 0 || syncfs(tfd) != 0) {
    nb_errf(out->error, sizeof out->error, "cannot write %s/versions: %s",
            o->install_dir, strerror(errno));
    rc = NIMBUS_EIO;
  }
  close(tfd);
  if (rc == 0) {
    /* An older copy of this version (not current: that was checked) makes
     * room; then the new one takes its name at once. */
    up_rmtree(vfd, p->version);
    if (renameat(vfd, tmp, vfd, p->version) != 0 || fsync(vfd) != 0) {
      nb_errf(out->error, sizeof out->error,
              "cannot rename into %s/versions/%s: %s", o->install_dir,
              p->version, strerror(errno));
      rc = NIMBUS_EIO;
    }
  }
  if (rc != 0)
    up_rmtree(vfd, tmp);
  close(vfd);
  return rc;
}

int nimbus_agent_install(nimbus_agent *a, const nimbus_agent_pkg *pkg,
                         const nimbus_install_opts *o,
                         nimbus_install_result *out) {
  memset(out, 0, sizeof *out);
  if (a == NULL || pkg == NULL || o == NULL || !pkg->found) {
    nb_errf(out->error, sizeof out->error,
            "nimbus_agent_install needs an agent and a package found");
    return NIMBUS_EINVAL;
  }
  if (up_on_agent_thread(a)) {
    nb_errf(out->error, sizeof out->error,
            "nimbus_agent_install cannot run in the agent's callbacks");
    return NIMBUS_EINVAL;
  }
  const char *platform =
      o->platform != NULL ? o->platform : nimbus_agent_platform();
  const char *running =
      o->running != NULL ? o->running : nimbus_agent_version();
  int timeout = o->timeout_ms > 0 ? o->timeout_ms : UP_TIMEOUT_DEFAULT;
  int dfd, lock;
  int rc =
      up_open(o->install_dir, true, &dfd, &lock, out->error, sizeof out->error);
  if (rc != 0)
    return rc;

  /* The key: given, beside the install, or compiled in. */
  char keyfile[4200];
  const char *kp = o->key_path;
  if (kp == NULL && faccessat(dfd, "nimbus.pub", R_OK, 0) == 0) {
    snprintf(keyfile, sizeof keyfile, "%s/nimbus.pub", o->install_dir);
    kp = keyfile;
  }
  uint8_t pub[32];
  char why[400];
  if ((rc = ag_pkg_key(kp, pub, why, sizeof why)) != 0) {
    nb_errf(out->error, sizeof out->error, "%s%s", why,
            kp == NULL ? " (give a key file, or put nimbus.pub in the install "
                         "directory)"
                       : "");
    rc = NIMBUS_EINVAL;
    goto out;
  }
  if ((out->check = ag_pkg_check(pkg, pub, o->max_package, out->error,
                                 sizeof out->error)) != NIMBUS_CHECK_NONE) {
    rc = NIMBUS_EAUTH;
    goto out;
  }
  if (strcmp(pkg->platform, platform) != 0) {
    out->check = NIMBUS_CHECK_VERSION;
    nb_errf(out->error, sizeof out->error,
            "refused: the package is for %s, this agent runs on %s",
            pkg->platform, platform);
    rc = NIMBUS_EAUTH;
    goto out;
  }
  char cur[65], prev[65];
  up_link_read(dfd, "current", cur);
  up_link_read(dfd, "previous", prev);
  bool cur_there = cur[0] != '\0' && up_version_there(dfd, cur);
  if (strcmp(cur, pkg->version) == 0 && cur_there) {
    out->already = true;
  } else if (!o->allow_downgrade &&
             (ag_pkg_version_cmp(running, pkg->version) != AG_VER_NEWER ||
              (cur_there && nb_semver_cmp(pkg->version, cur) <= 0))) {
    /* Newer than what runs and than what is installed: an agent that
     * installed a version and runs on is no way back to an older one. */
    bool vs_cur = ag_pkg_version_cmp(running, pkg->version) == AG_VER_NEWER;
    out->check = NIMBUS_CHECK_VERSION;
    nb_errf(out->error, sizeof out->error,
            "refused: %s is not newer than the %s %s (a downgrade must be "
            "allowed)",
            pkg->version, vs_cur ? "installed" : "running",
            vs_cur ? cur : running);
    rc = NIMBUS_EAUTH;
    goto out;
  }
  if (!out->already) {
    int fd = -1;
    if ((rc = up_download(a, dfd, pkg, o, out, &fd)) != 0)
      goto out;
    rc = up_unpack(dfd, fd, pkg, o, out);
    close(fd);
    if (rc != 0)
      goto out;
    /* previous first: a crash between the two leaves both naming what
     * ran, never a link to nothing. */
    if (cur[0] != '\0' && strcmp(cur, pkg->version) != 0) {
      if ((rc = up_link_set(dfd, "previous", cur, out->error,
                            sizeof out->error)) != 0)
        goto out;
      nb_strlcpy(prev, cur, sizeof prev);
    }
    if ((rc = up_link_set(dfd, "current", pkg->version, out->error,
                          sizeof out->error)) != 0)
      goto out;
    (void)fsync(dfd);
    up_prune(dfd, pkg->version, prev);
  }
  nb_strlcpy(out->version, pkg->version, sizeof out->version);
  up_link_read(dfd, "previous", out->previous);
  if (!o->no_report) {
    char rerr[256];
    out->reported = nimbus_agent_report(a, platform, pkg->version, timeout,
                                        rerr, sizeof rerr) == 0;
    if (!out->reported)
      nb_strlcpy(out->report_error, rerr, sizeof out->report_error);
  }
out:
  up_close(dfd, lock);
  return rc;
}

int nimbus_agent_rollback(const char *install_dir, nimbus_install_result *out) {
  memset(out, 0, sizeof *out);
  int dfd, lock;
  int rc =
      up_open(install_dir, false, &dfd, &lock, out->error, sizeof out->error);
  if (rc != 0)
    return rc;
  char cur[65], prev[65];
  up_link_read(dfd, "current", cur);
  up_link_read(dfd, "previous", prev);
  if (prev[0] == '\0' || strcmp(prev, cur) == 0 ||
      !up_version_there(dfd, prev)) {
    /* previous == current: an install or rollback stopped between its
     * two links; there is nothing else to go back to. */
    nb_errf(out->error, sizeof out->error,
            "%s holds no previous version to return to", install_dir);
    rc = NIMBUS_ENOTFOUND;
  } else if ((cur[0] != '\0' &&
              (rc = up_link_set(dfd, "previous", cur, out->error,
                                sizeof out->error)) != 0) ||
             (rc = up_link_set(dfd, "current", prev, out->error,
                               sizeof out->error)) != 0) {
    /* said */
  } else {
    (void)fsync(dfd);
    nb_strlcpy(out->version, prev, sizeof out->version);
    nb_strlcpy(out->previous, cur, sizeof out->previous);
  }
  up_close(dfd, lock);
  return rc;
}
