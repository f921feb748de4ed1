/* `nimbus-agent restore [--snapshot S] DIR`.
 *
 * backup.get gives the snapshot's items, inline or in a manifest blob
 * (downloaded, its SHA-256 checked, then decoded strictly with
 * sc_value_decode_limits). Nothing in a snapshot is trusted: every name is
 * checked again (nb_relpath_problem), and every directory below DIR is opened
 * one component at a time relative to the one above with O_NOFOLLOW
 * (bk_open_parent), files with openat(..., O_NOFOLLOW), so nothing is ever
 * written outside DIR, whatever links DIR holds.
 *
 * Each content is downloaded once by libnimbus-agent's transfer engine
 * (nimbus_blob_download: blob.get, up to --jobs ranges in flight across
 * blobs, transient answers retried) into a temporary file next to its
 * first item, ".nimbus-<24 hex>.part" (the hex a hash of the item's name
 * and blob), written strictly in order, so that its size is always how
 * much of it is done and a later run resumes it. Its whole SHA-256 is
 * checked before it gets its final name; other items with the same
 * content are copies of it. Files are then synced (syncfs, once per batch
 * of files rather than one fsync each), renamed into place, and the file
 * system synced again at the end so the new names last too. A part file
 * of an item given up (its name cannot be made, its content cannot be
 * had) is removed; only a stopped or timed-out run leaves part files, for
 * the next. An item whose file is already there with the right size and
 * SHA-256 is kept. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk.h"
#include "cli.h"
#include "nb_util.h"
#include "sc.h"

const char cli_usage_restore[] =
    "Usage: nimbus-agent restore [--snapshot S] [--jobs N] [--json]\n"
    "                            [--progress] [OPTIONS] DIR\n"
    "\n"
    "Restores a snapshot of this terminal (--snapshot, as `nimbus-agent\n"
    "backups` lists them; default: the latest) into DIR, made if missing:\n"
    "every item becomes DIR/<its name>, with its mtime. Items already\n"
    "there with the right size and SHA-256 are kept; other files of those\n"
    "names are replaced; nothing else in DIR is touched.\n"
    "\n"
    "Names are checked again before use: an absolute name, a '..' or empty\n"
    "component, a control character, or a symbolic link or file in place\n"
    "of a directory inside DIR make that item fail (said on stderr), and\n"
    "nothing is ever written outside DIR.\n"
    "\n"
    "Each content is downloaded once, --jobs ranges of 256 KiB at a time\n"
    "(default 16), into a hidden .nimbus-*.part file next to its item, and\n"
    "gets its final name only once its SHA-256 matches; other items with\n"
    "the same content are local copies. Interrupted, a second run with the\n"
    "same arguments keeps what is done and resumes partial downloads.\n"
    "\n"
    "On a terminal it shows a progress line on stderr and ends with one\n"
    "line for a person. Otherwise (or with --json) it prints one JSON\n"
    "object on stdout:\n"
    "  {\"snapshot\": \"...\", \"items\": N, \"bytes\": N, \"restored\": N,\n"
    "   \"kept\": N, \"failed\": N, \"blobs_downloaded\": N,\n"
    "   \"bytes_received\": N, \"seconds\": S}\n"
    "bytes_received counts what blob.get brought this run, the manifest\n"
    "included; --progress also writes progress as JSON lines on stderr.\n"
    "\n"
    "Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops it at the next step: verified\n"
    "files get their names, partial downloads stay for the next run; a\n"
    "second Ctrl-C ends it at once.\n"
    "\n"
    "Exit status: 0 every item restored; 1 the cloud answered an error (no\n"
    "such snapshot, a blob it cannot give); 2 usage, or some items could\n"
    "not be written or had invalid names; 3 cannot connect; 4 no reply for\n"
    "--timeout ms (run again to resume); 128 + the signal when stopped\n"
    "(130 for Ctrl-C).\n";

/* Files waiting for their final name, at most this many or bytes. */
#define RS_BATCH_FILES 256
#define RS_BATCH_BYTES (64 * 1024 * 1024)
/* Values a manifest may hold: as many as the cloud accepts in one
 * (schemas/SPEC.md, backup.commit): 16 per item and the array. */
#define RS_MANIFEST_VALUES                                                     \
  (1 + (size_t)SC_MANIFEST_MAX_ITEMS * SC_MANIFEST_VALUES_PER_ITEM)

enum { RS_TODO = 0, RS_KEPT, RS_DONE, RS_FAILED };

typedef struct rs_blob rs_blob;

typedef struct rs_item {
  char *name;
  uint8_t sha[32];
  int64_t size, mtime;
  bool has_mtime;
  int state;
  rs_blob *blob;
  struct rs_item *bnext; /* the next item of the blob still to write */
} rs_item;

struct rs_blob {
  uint8_t sha[32];
  char hex[65];
  int64_t size;
  rs_item *todo;   /* items still to write */
  rs_item *source; /* an item whose final file holds this content */
  /* Downloaded (by the engine) into target's part file `tmp` in dirfd. */
  rs_item *target;
  int dirfd;
  char tmp[48];
  int64_t done; /* bytes the engine said are done, in the progress line */
  struct rs_run *run;
};

typedef struct rs_pending {
  int dirfd;
  char tmp[48];
  rs_item *item;
} rs_pending;

typedef struct rs_run {
  const cli_cfg *cfg;
  bk_pipe pipe;      /* backup.get */
  nimbus_xfer *xfer; /* every blob, the manifest included */
  bk_progress prog;
  bk_hcache cache;
  bool have_cache;
  int rootfd;
  char *rootabs; /* realpath of DIR, for the hash cache */
  rs_item *items;
  size_t nitems;
  rs_blob **btab;
  size_t bslots, nblobs;
  rs_blob **queue; /* blobs to download, in order */
  size_t nqueue, qnext;
  size_t outstanding; /* handed to the engine, not yet ended */
  /* The directory of the last item (items come sorted, so mostly the
   * next one's too): its path below DIR and an fd; and the last path
   * found missing. */
  char *dc_path, *dm_path;
  size_t dc_len, dm_len;
  int dc_fd;
  rs_pending *pend;
  size_t npend;
  int64_t pend_bytes;
  uint8_t *buf;
  /* Counters. */
  int64_t restored, kept, failed, cloud_failed, blobs_downloaded,
      bytes_received;
  int status;
} rs_run;

/* Sets a fatal exit status (the first one wins) and stops the downloads
 * under way (their part files stay for the next run). */
static void rs_fatal(rs_run *r, int status) {
  if (r->status == CLI_OK)
    r->status = status;
  if (r->xfer != NULL)
    nimbus_xfer_cancel(r->xfer);
}

static void rs_item_fail(rs_run *r, rs_item *it, bool cloud, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

static void rs_item_fail(rs_run *r, rs_item *it, bool cloud, const char *fmt,
                         ...) {
  if (it->state == RS_FAILED)
    return;
  it->state = RS_FAILED;
  r->failed++;
  if (cloud)
    r->cloud_failed++;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  bk_say(&r->prog, "%s: %s; not restored", it->name, msg);
}

/* ---- The manifest ------------------------------------------------------ */

typedef struct rs_mf {
  nimbus_xfer *xfer;
  bk_progress *prog;
  int64_t *received;
  int fd; /* the verified manifest (dup), or -1 */
  int64_t size;
  bool too_big;
  int err;
  char error[320];
} rs_mf;

static void rs_mf_progress(void *ctx, int64_t done, int64_t total) {
  rs_mf *m = ctx;
  (void)done;
  if (total > SC_MANIFEST_MAX_BYTES && !m->too_big) {
    m->too_big = true;
    nimbus_xfer_cancel(m->xfer);
  }
  m->prog->bytes_total = total;
  m->prog->bytes_done = done;
  bk_progress_show(m->prog, false);
}

static void rs_mf_done(void *ctx, const nimbus_blob_result *res) {
  rs_mf *m = ctx;
  m->err = res->err;
  *m->received += res->bytes;
  if (res->err == 0) {
    m->fd = dup(res->fd);
    m->size = res->size;
    if (m->fd < 0)
      m->err = NIMBUS_ESYS;
  } else if (res->error != NULL) {
    snprintf(m->error, sizeof m->error, "%s", res->error);
  }
}

/* Downloads the manifest `hex` into an unlinked file in the state
 * directory through the transfer engine (which checks its SHA-256).
 * Returns CLI_OK and the file (*fd) and size (*size), or an exit status. */
static int rs_manifest_fetch(nimbus_xfer *xfer, bk_progress *prog, int stall_ms,
                             int64_t *received, const char *state,
                             const char *hex, int *fdp, int64_t *sizep) {
  size_t dl = strlen(state);
  char *tmp = malloc(dl + sizeof "/manifest.XXXXXX");
  if (tmp == NULL)
    return cli_usage_error("out of memory");
  snprintf(tmp, dl + sizeof "/manifest.XXXXXX", "%s/manifest.XXXXXX", state);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "nimbus-agent: cannot create a file in %s: %s\n", state,
            strerror(errno));
    free(tmp);
    return CLI_USAGE;
  }
  close(fd);
  rs_mf m = {.xfer = xfer, .prog = prog, .received = received, .fd = -1};
  nimbus_blob_download_opts o;
  nimbus_blob_download_opts_init(&o);
  o.blob = hex;
  o.part = tmp;
  o.keep_part = true;
  o.no_sync = true; /* read now, unlinked: never needed after a crash */
  o.on_done = rs_mf_done;
  o.on_progress = rs_mf_progress;
  o.ctx = &m;
  bk_progress_phase(prog, "manifest", 0, 1);
  int rc = nimbus_blob_download(xfer, &o);
  if (rc == 0)
    rc = nimbus_xfer_run(xfer);
  unlink(tmp); /* the engine leaves it on a stop or a timeout */
  free(tmp);
  int status = CLI_OK;
  if (m.too_big) {
    fprintf(stderr, "nimbus-agent: the snapshot's manifest: larger than "
                    "64 MiB\n");
    status = CLI_CLOUD_ERROR;
  } else if (rc == NIMBUS_ECANCELED || m.err == NIMBUS_ECANCELED) {
    status = bk_signal_status();
  } else if (rc == NIMBUS_ETIMEDOUT || m.err == NIMBUS_ETIMEDOUT) {
    fprintf(stderr, "nimbus-agent: no reply from the cloud for %d ms\n",
            stall_ms);
    status = CLI_TIMEOUT;
  } else if (rc != 0) {
    fprintf(stderr, "nimbus-agent: cannot fetch the manifest: %s\n",
            nimbus_strerror(rc));
    status = CLI_USAGE;
  } else if (m.err == NIMBUS_EREFUSED) {
    fprintf(stderr, "nimbus-agent: %s\n", m.error);
    status = CLI_CONNECT;
  } else if (m.err != 0) {
    fprintf(stderr, "nimbus-agent: the snapshot's manifest: %s\n",
            m.error[0] != '\0' ? m.error : nimbus_strerror(m.err));
    status = CLI_CLOUD_ERROR;
  }
  if (status != CLI_OK) {
    if (m.fd >= 0)
      close(m.fd);
    return status;
  }
  bk_progress_clear(prog);
  *fdp = m.fd;
  *sizep = m.size;
  return CLI_OK;
}

int cli_snapshot_get(bk_pipe *pipe, nimbus_xfer *xfer, bk_progress *prog,
                     const char *state, const char *snapshot, int64_t *received,
                     cli_snapshot *out) {
  memset(out, 0, sizeof *out);
  out->count = out->bytes = -1;
  out->map = MAP_FAILED;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  bool named = snapshot != NULL && snapshot[0] != '\0';
  msgpack_pack_map(&pk, named ? 1 : 0);
  if (named) {
    bk_pk_str(&pk, "snapshot");
    bk_pk_str(&pk, snapshot);
  }
  int rc = bk_pipe_call(pipe, "backup.get", (const uint8_t *)sb.data, sb.size,
                        &out->reply);
  msgpack_sbuffer_destroy(&sb);
  if (rc == NIMBUS_ECANCELED)
    return bk_signal_status();
  if (rc != 0)
    return cli_call_failed(pipe->agent, "backup.get", rc);
  if (!bk_reply_ok(out->reply)) {
    out->code = out->reply->code;
    int st = cli_cloud_error(out->reply);
    cli_snapshot_fini(out);
    return st;
  }
  msgpack_object res;
  const msgpack_object *snap = NULL, *items = NULL, *man = NULL;
  if (bk_result_map(out->reply, &res, &out->zone)) {
    snap = sc_map_get(&res, "snapshot");
    items = sc_map_get(&res, "items");
    man = sc_map_get(&res, "manifest");
    bk_obj_int(sc_map_get(&res, "count"), &out->count);
    bk_obj_int(sc_map_get(&res, "bytes"), &out->bytes);
  }
  if (snap == NULL || snap->type != MSGPACK_OBJECT_STR ||
      (items == NULL && (man == NULL || man->type != MSGPACK_OBJECT_STR ||
                         !bk_hex_valid(man->via.str.ptr, man->via.str.size)))) {
    fprintf(stderr, "nimbus-agent: backup.get answered neither items nor a "
                    "manifest\n");
    cli_snapshot_fini(out);
    return CLI_CLOUD_ERROR;
  }
  snprintf(out->id, sizeof out->id, "%.*s", (int)snap->via.str.size,
           snap->via.str.ptr);
  if (items != NULL) {
    out->items = *items;
    return CLI_OK;
  }
  char hex[65];
  snprintf(hex, sizeof hex, "%.*s", 64, man->via.str.ptr);
  int fd = -1;
  int64_t size = 0;
  int status = rs_manifest_fetch(xfer, prog, pipe->stall_ms, received, state,
                                 hex, &fd, &size);
  if (status != CLI_OK) {
    cli_snapshot_fini(out);
    return status;
  }
  char err[256];
  out->map = size > 0 ? mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0)
                      : MAP_FAILED;
  out->map_len = (size_t)size;
  close(fd);
  if (out->map == MAP_FAILED) {
    fprintf(stderr, "nimbus-agent: cannot map the manifest: %s\n",
            size > 0 ? strerror(errno) : "it is empty");
    status = CLI_CLOUD_ERROR;
  } else if (sc_value_decode_limits(out->map, (size_t)size,
                                    SC_MANIFEST_MAX_BYTES, RS_MANIFEST_VALUES,
                                    &out->items, &out->mzone, err,
                                    sizeof err) != 0) {
    fprintf(stderr, "nimbus-agent: the manifest does not decode: %s\n", err);
    status = CLI_CLOUD_ERROR;
  }
  if (status != CLI_OK)
    cli_snapshot_fini(out);
  return status;
}

void cli_snapshot_fini(cli_snapshot *s) {
  msgpack_zone_free(s->mzone);
  msgpack_zone_free(s->zone);
  if (s->map != MAP_FAILED && s->map != NULL)
    munmap(s->map, s->map_len);
  nimbus_reply_free(s->reply);
  s->mzone = s->zone = NULL;
  s->map = MAP_FAILED;
  s->reply = NULL;
}

/* ---- Items ------------------------------------------------------------- */

static int rs_cmp_item(const void *a, const void *b) {
  return strcmp(((const rs_item *)a)->name, ((const rs_item *)b)->name);
}

/* Copies the items array `arr` into r->items, refusing (and counting)
 * those that are not valid. */
static int rs_items_take(rs_run *r, const msgpack_object *arr) {
  if (arr->type != MSGPACK_OBJECT_ARRAY) {
    fprintf(stderr, "nimbus-agent: the snapshot's items are not a list\n");
    return CLI_CLOUD_ERROR;
  }
  r->items = calloc(arr->via.array.size + 1, sizeof *r->items);
  if (r->items == NULL)
    return cli_usage_error("out of memory");
  for (uint32_t i = 0; i < arr->via.array.size; i++) {
    const msgpack_object *m = &arr->via.array.ptr[i];
    const msgpack_object *kind = NULL, *name = NULL, *blob = NULL;
    int64_t size = -1, mtime = 0;
    const char *why = NULL;
    if (m->type != MSGPACK_OBJECT_MAP) {
      why = "not a map";
    } else {
      kind = sc_map_get(m, "kind");
      name = sc_map_get(m, "name");
      blob = sc_map_get(m, "blob");
      if (name == NULL || name->type != MSGPACK_OBJECT_STR)
        why = "no name";
      else if ((why = nb_relpath_problem(name->via.str.ptr,
                                         name->via.str.size)) != NULL) {
      } else if (kind == NULL || kind->type != MSGPACK_OBJECT_STR ||
                 !bk_kind_valid(kind->via.str.ptr, kind->via.str.size))
        why = "no valid kind";
      else if (blob == NULL || blob->type != MSGPACK_OBJECT_STR ||
               !bk_hex_valid(blob->via.str.ptr, blob->via.str.size))
        why = "no valid blob hash";
      else if (!bk_obj_int(sc_map_get(m, "size"), &size) || size < 0)
        why = "no valid size";
      else if (sc_map_get(m, "mtime") != NULL &&
               !bk_obj_int(sc_map_get(m, "mtime"), &mtime))
        why = "an mtime that is not a whole number";
    }
    if (why != NULL || name == NULL || blob == NULL) {
      r->failed++;
      if (name != NULL && name->type == MSGPACK_OBJECT_STR) {
        /* Printed with control characters shown as '?'. */
        char shown[128];
        size_t k = 0;
        for (uint32_t j = 0; j < name->via.str.size && k + 1 < sizeof shown;
             j++) {
          unsigned char c = (unsigned char)name->via.str.ptr[j];
          shown[k++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
        }
        shown[k] = '\0';
        fprintf(stderr, "nimbus-agent: item %u \"%s\": %s; not restored\n", i,
                shown, why);
      } else {
        fprintf(stderr, "nimbus-agent: item %u: %s; not restored\n", i, why);
      }
      continue;
    }
    rs_item *it = &r->items[r->nitems];
    if ((it->name = strndup(name->via.str.ptr, name->via.str.size)) == NULL)
      return cli_usage_error("out of memory");
    (void)nb_unhex32(blob->via.str.ptr, it->sha);
    it->size = size;
    it->mtime = mtime;
    it->has_mtime = sc_map_get(m, "mtime") != NULL;
    r->nitems++;
  }
  qsort(r->items, r->nitems, sizeof *r->items, rs_cmp_item);
  for (size_t i = 1; i < r->nitems; i++)
    if (strcmp(r->items[i - 1].name, r->items[i].name) == 0)
      rs_item_fail(r, &r->items[i], false, "a second item of this name");
  for (size_t i = 0; i < r->nitems; i++)
    if (bk_is_part_name(r->items[i].name))
      rs_item_fail(r, &r->items[i], false,
                   "the name of a restore's part file, which restore "
                   "writes beside its items");
  return CLI_OK;
}

/* ---- Blobs ------------------------------------------------------------- */

static size_t rs_bslot(const rs_run *r, const uint8_t sha[32]) {
  uint64_t h;
  memcpy(&h, sha, sizeof h);
  size_t mask = r->bslots - 1, i = (size_t)h & mask;
  while (r->btab[i] != NULL && memcmp(r->btab[i]->sha, sha, 32) != 0)
    i = (i + 1) & mask;
  return i;
}

static int rs_blobs_make(rs_run *r) {
  size_t ns = 1024;
  while (ns < 2 * r->nitems + 2)
    ns *= 2;
  if ((r->btab = calloc(ns, sizeof *r->btab)) == NULL)
    return -1;
  r->bslots = ns;
  for (size_t i = 0; i < r->nitems; i++) {
    rs_item *it = &r->items[i];
    size_t k = rs_bslot(r, it->sha);
    if (r->btab[k] == NULL) {
      rs_blob *b = calloc(1, sizeof *b);
      if (b == NULL)
        return -1;
      memcpy(b->sha, it->sha, 32);
      nb_hex(b->sha, 32, b->hex);
      b->size = it->size;
      b->dirfd = -1;
      b->run = r;
      r->btab[k] = b;
      r->nblobs++;
    }
    it->blob = r->btab[k];
    /* One content has one size: another would be a copy cut short (or
     * padded) counted as restored. */
    if (it->size != it->blob->size)
      rs_item_fail(r, it, true,
                   "its size differs from that of another item of the same "
                   "content");
  }
  return 0;
}

/* ---- Writing files ----------------------------------------------------- */

/* The temporary name of item `it`: ".nimbus-<24 hex>.part", the hex from
 * the SHA-256 of its name and its blob, so that a later run finds it. */
static void rs_tmp_name(const rs_item *it, char out[48]) {
  size_t n = strlen(it->name);
  uint8_t *buf = malloc(n + 33), h[32];
  char hex[65];
  if (buf != NULL) {
    memcpy(buf, it->name, n);
    buf[n] = 0;
    memcpy(buf + n + 1, it->sha, 32);
    nb_sha256(buf, n + 33, h);
    free(buf);
  } else {
    nb_sha256(it->sha, 32, h);
  }
  nb_hex(h, 12, hex);
  snprintf(out, 48, ".nimbus-%.24s.part", hex);
}

static int rs_set_mtime(int fd, const rs_item *it) {
  if (!it->has_mtime)
    return 0;
  int64_t sec, nsec;
  bk_timespec_of_ms(it->mtime, &sec, &nsec);
  struct timespec ts[2] = {{.tv_sec = 0, .tv_nsec = UTIME_OMIT},
                           {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec}};
  return futimens(fd, ts);
}

/* Syncs the batch of written files, renames them into place and records
 * their hashes. */
static void rs_flush(rs_run *r) {
  if (r->npend == 0)
    return;
  /* One syncfs per file system instead of an fsync per file. */
  dev_t done[8];
  size_t ndone = 0;
  for (size_t i = 0; i < r->npend; i++) {
    struct stat st;
    if (fstat(r->pend[i].dirfd, &st) != 0)
      continue;
    bool seen = false;
    for (size_t k = 0; k < ndone; k++)
      seen = seen || done[k] == st.st_dev;
    if (seen)
      continue;
    if (syncfs(r->pend[i].dirfd) != 0)
      bk_say(&r->prog, "syncfs: %s", strerror(errno));
    if (ndone < sizeof done / sizeof done[0])
      done[ndone++] = st.st_dev;
  }
  for (size_t i = 0; i < r->npend; i++) {
    rs_pending *p = &r->pend[i];
    rs_item *it = p->item;
    const char *base = strrchr(it->name, '/');
    base = base != NULL ? base + 1 : it->name;
    struct stat st;
    if (renameat(p->dirfd, p->tmp, p->dirfd, base) != 0) {
      /* Given up (a directory of that name, a name too long): the part
       * file must not stay behind, as no later run could use it. */
      int e = errno;
      (void)unlinkat(p->dirfd, p->tmp, 0);
      rs_item_fail(r, it, false, "cannot rename %s into place: %s", p->tmp,
                   strerror(e));
    } else {
      it->state = RS_DONE;
      r->restored++;
      if (it->blob->source == NULL)
        it->blob->source = it;
      if (r->have_cache &&
          fstatat(p->dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        size_t n = strlen(r->rootabs) + strlen(it->name) + 2;
        char *abs = malloc(n);
        if (abs != NULL) {
          snprintf(abs, n, "%s/%s", r->rootabs, it->name);
          (void)bk_hcache_put(&r->cache, abs, st.st_size,
                              (int64_t)st.st_mtim.tv_sec * 1000000000 +
                                  st.st_mtim.tv_nsec,
                              (uint64_t)st.st_ino, it->sha);
          free(abs);
        }
      }
    }
    close(p->dirfd);
  }
  r->npend = 0;
  r->pend_bytes = 0;
}

/* `fd` (item it's temporary file `tmp` in dirfd) is complete: closed, and
 * queued for its final name. Takes dirfd. */
static void rs_pend(rs_run *r, rs_item *it, int dirfd, const char *tmp) {
  rs_pending *p = &r->pend[r->npend++];
  p->dirfd = dirfd;
  snprintf(p->tmp, sizeof p->tmp, "%s", tmp);
  p->item = it;
  r->pend_bytes += it->size;
  if (r->npend == RS_BATCH_FILES || r->pend_bytes >= RS_BATCH_BYTES)
    rs_flush(r);
}

/* bk_open_parent through the cache of the last directory. */
static int rs_open_parent(rs_run *r, const char *name, bool create,
                          const char **base, char *err, size_t errcap) {
  const char *slash = strrchr(name, '/');
  size_t plen = slash != NULL ? (size_t)(slash - name) : 0;
  *base = slash != NULL ? slash + 1 : name;
  if (r->dc_path != NULL && r->dc_len == plen &&
      memcmp(r->dc_path, name, plen) == 0)
    return dup(r->dc_fd);
  if (create) {
    free(r->dm_path);
    r->dm_path = NULL;
  } else if (r->dm_path != NULL && r->dm_len == plen &&
             memcmp(r->dm_path, name, plen) == 0) {
    nb_errf(err, errcap, "%.*s is missing", (int)plen, name);
    errno = ENOENT;
    return -1;
  }
  int fd = bk_open_parent(r->rootfd, name, create, base, err, errcap);
  int e = errno;
  char *copy = strndup(name, plen);
  if (copy != NULL && fd >= 0) {
    int keep = dup(fd);
    if (keep >= 0) {
      if (r->dc_path != NULL)
        close(r->dc_fd);
      free(r->dc_path);
      r->dc_path = copy;
      r->dc_len = plen;
      r->dc_fd = keep;
      copy = NULL;
    }
  } else if (copy != NULL && e == ENOENT) {
    free(r->dm_path);
    r->dm_path = copy;
    r->dm_len = plen;
    copy = NULL;
  }
  free(copy);
  errno = e;
  return fd;
}

/* Opens the directory of item `it`, creating what is missing. */
static int rs_dir(rs_run *r, rs_item *it, const char **base) {
  char err[512];
  int fd = rs_open_parent(r, it->name, true, base, err, sizeof err);
  if (fd < 0)
    rs_item_fail(r, it, false, "%s", err);
  return fd;
}

/* Writes item `it` as a copy of `n` bytes of `src`. */
static void rs_copy_to(rs_run *r, rs_item *it, int src) {
  const char *base;
  char tmp[48];
  int dirfd = rs_dir(r, it, &base);
  if (dirfd < 0)
    return;
  rs_tmp_name(it, tmp);
  /* A new file of our own: whatever has the name (a FIFO, whose open
   * would block for ever, a hard link to a file elsewhere) is removed,
   * and one put there meanwhile makes the create fail. */
  (void)unlinkat(dirfd, tmp, 0);
  int fd = openat(dirfd, tmp,
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0 || (it->size > 0 && bk_copy_fd(src, fd, it->size) != 0) ||
      rs_set_mtime(fd, it) != 0) {
    rs_item_fail(r, it, false, "cannot write %s: %s", tmp, strerror(errno));
    if (fd >= 0) {
      close(fd);
      unlinkat(dirfd, tmp, 0);
    }
    close(dirfd);
    return;
  }
  close(fd);
  r->prog.bytes_done += it->size;
  r->prog.files_done++;
  rs_pend(r, it, dirfd, tmp);
}

/* Opens the final file of item `src` (restored or kept) for reading. */
static int rs_open_final(rs_run *r, rs_item *src) {
  const char *base;
  char err[512];
  int dirfd = rs_open_parent(r, src->name, false, &base, err, sizeof err);
  if (dirfd < 0)
    return -1;
  int fd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  close(dirfd);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
                  st.st_size != src->size)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Every item of b still to write, as copies of `src`. */
static void rs_copies(rs_run *r, rs_blob *b, int src, rs_item *except) {
  for (rs_item *it = b->todo; it != NULL; it = it->bnext)
    if (it != except && it->state == RS_TODO)
      rs_copy_to(r, it, src);
}

/* ---- Downloads, through the library's transfer engine ------------------ */

static void rs_blob_fail(rs_run *r, rs_blob *b, bool cloud, const char *why) {
  for (rs_item *it = b->todo; it != NULL; it = it->bnext)
    if (it->state == RS_TODO)
      rs_item_fail(r, it, cloud, "%s", why);
}

static void rs_feed(rs_run *r);

static void rs_on_progress(void *ctx, int64_t done, int64_t total) {
  rs_blob *b = ctx;
  (void)total;
  b->run->prog.bytes_done += done - b->done;
  b->done = done;
  bk_progress_show(&b->run->prog, false);
}

static void rs_on_done(void *ctx, const nimbus_blob_result *res) {
  rs_blob *b = ctx;
  rs_run *r = b->run;
  rs_item *t = b->target;
  int dirfd = b->dirfd;
  b->dirfd = -1;
  r->outstanding--;
  r->bytes_received += res->bytes;
  switch (res->err) {
  case 0:
    r->blobs_downloaded++;
    r->prog.files_done++;
    /* The other items with this content, from the verified bytes. */
    rs_copies(r, b, res->fd, t);
    rs_pend(r, t, dirfd, b->tmp);
    dirfd = -1;
    break;
  case NIMBUS_ECANCELED:
  case NIMBUS_ETIMEDOUT:
    /* The part file stays for the next run; said by rs_download. */
    if (res->err == NIMBUS_ETIMEDOUT && r->status == CLI_OK)
      bk_say(&r->prog, "%s; run the same restore again to resume", res->error);
    rs_fatal(r, res->err == NIMBUS_ETIMEDOUT ? CLI_TIMEOUT : r->status);
    break;
  case NIMBUS_EREFUSED:
    bk_say(&r->prog, "%s", res->error);
    rs_fatal(r, CLI_CONNECT);
    break;
  case NIMBUS_ENOMEM:
    bk_say(&r->prog, "out of memory");
    rs_fatal(r, CLI_USAGE);
    break;
  case NIMBUS_EIO:
    if (res->code == 0) {
      /* Here, not the cloud: the part file could not be written. */
      rs_blob_fail(r, b, false, res->error);
      break;
    }
    /* fall through */
  default: {
    char why[400];
    snprintf(why, sizeof why, "the cloud cannot give its content: %s",
             res->error);
    rs_blob_fail(r, b, true, why);
    break;
  }
  }
  if (dirfd >= 0)
    close(dirfd);
  rs_feed(r);
}

/* Hands b to the engine, into the part file of the first item still to
 * write whose directory can be made. False when there is none. */
static bool rs_blob_send(rs_run *r, rs_blob *b) {
  for (rs_item *t = b->todo; t != NULL; t = t->bnext) {
    if (t->state != RS_TODO)
      continue;
    const char *base;
    int dirfd = rs_dir(r, t, &base);
    if (dirfd < 0)
      continue;
    b->target = t;
    b->dirfd = dirfd;
    b->done = 0;
    rs_tmp_name(t, b->tmp);
    nimbus_blob_download_opts o;
    nimbus_blob_download_opts_init(&o);
    o.blob = b->hex;
    o.size = b->size;
    o.dirfd = dirfd;
    o.part = b->tmp;
    o.keep_part = true; /* renamed in batches after one syncfs: rs_flush */
    o.no_sync = true;
    o.set_mtime = t->has_mtime;
    o.mtime_ms = t->mtime;
    o.on_done = rs_on_done;
    o.on_progress = rs_on_progress;
    o.ctx = b;
    int rc = nimbus_blob_download(r->xfer, &o);
    if (rc != 0) {
      close(dirfd);
      b->dirfd = -1;
      bk_say(&r->prog, "cannot download %s: %s", b->hex, nimbus_strerror(rc));
      rs_fatal(r, CLI_USAGE);
      return false;
    }
    r->outstanding++;
    return true;
  }
  return false;
}

/* Keeps the engine fed: a few more blobs than it moves at once (each holds
 * an open directory until it ends). */
static void rs_feed(rs_run *r) {
  while (r->status == CLI_OK && r->qnext < r->nqueue &&
         r->outstanding < 2 * (size_t)r->cfg->jobs)
    (void)rs_blob_send(r, r->queue[r->qnext++]);
}

static void rs_download(rs_run *r) {
  rs_feed(r);
  int rc = nimbus_xfer_run(r->xfer);
  if (rc == NIMBUS_ETIMEDOUT) {
    if (r->status == CLI_OK)
      bk_say(&r->prog,
             "no reply from the cloud for %d ms; run the same restore "
             "again to resume",
             r->pipe.stall_ms);
    rs_fatal(r, CLI_TIMEOUT);
  } else if (rc == NIMBUS_ECANCELED && r->status == CLI_OK) {
    rs_fatal(r, bk_interrupted ? bk_signal_status() : CLI_USAGE);
  } else if (rc != 0 && r->status == CLI_OK) {
    bk_say(&r->prog, "downloads: %s", nimbus_strerror(rc));
    rs_fatal(r, CLI_USAGE);
  }
}

/* ---- What is there already --------------------------------------------- */

/* Looks at DIR/<name> of every item: kept when it has the content,
 * failed when something other than a regular file is in the way, else to
 * write. */
static void rs_check_existing(rs_run *r) {
  int64_t to_check = 0;
  size_t nchk = 0;
  bool *check = calloc(r->nitems + 1, sizeof *check);
  if (check == NULL) {
    bk_say(&r->prog, "out of memory");
    rs_fatal(r, CLI_USAGE);
    return;
  }
  for (size_t i = 0; i < r->nitems; i++) {
    rs_item *it = &r->items[i];
    if (it->state != RS_TODO)
      continue;
    const char *base;
    char err[512];
    int dirfd = rs_open_parent(r, it->name, false, &base, err, sizeof err);
    if (dirfd < 0) {
      if (errno != ENOENT)
        rs_item_fail(r, it, false, "%s", err);
      continue;
    }
    struct stat st;
    if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISREG(st.st_mode))
        rs_item_fail(r, it, false, "%s is in the way and is not a regular file",
                     S_ISLNK(st.st_mode)   ? "a symbolic link"
                     : S_ISDIR(st.st_mode) ? "a directory"
                                           : "something");
      else if (st.st_size == it->size) {
        check[i] = true;
        to_check += it->size;
        nchk++;
      }
    }
    close(dirfd);
  }
  if (nchk > 0)
    bk_progress_phase(&r->prog, "checking", to_check, (int64_t)nchk);
  for (size_t i = 0; i < r->nitems && r->status == CLI_OK; i++) {
    if (bk_interrupted) {
      rs_fatal(r, bk_signal_status());
      break;
    }
    if (!check[i])
      continue;
    rs_item *it = &r->items[i];
    const char *base;
    char err[512];
    int dirfd = rs_open_parent(r, it->name, false, &base, err, sizeof err);
    /* O_NONBLOCK: a FIFO put there since the look above must not stop the
     * restore (fstat below tells it is no regular file). */
    int fd = dirfd >= 0 ? openat(dirfd, base,
                                 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                        : -1;
    struct stat st;
    uint8_t sha[32];
    bool same = false;
    char *abs = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_size == it->size) {
      size_t n = strlen(r->rootabs) + strlen(it->name) + 2;
      if ((abs = malloc(n)) != NULL)
        snprintf(abs, n, "%s/%s", r->rootabs, it->name);
      int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
      const uint8_t *h = r->have_cache && abs != NULL
                             ? bk_hcache_get(&r->cache, abs, st.st_size, mt,
                                             (uint64_t)st.st_ino)
                             : NULL;
      int64_t got = 0;
      if (h != NULL) {
        same = memcmp(h, it->sha, 32) == 0;
        r->prog.bytes_done += it->size;
      } else if (bk_hash_fd(fd, r->buf, SC_SEGMENT, sha, &got, NULL, NULL) ==
                     0 &&
                 got == it->size) {
        same = memcmp(sha, it->sha, 32) == 0;
        r->prog.bytes_done += it->size;
      }
      if (same && it->has_mtime &&
          bk_ms_of_timespec(st.st_mtim.tv_sec, st.st_mtim.tv_nsec) !=
              it->mtime) {
        if (rs_set_mtime(fd, it) != 0 || fstat(fd, &st) != 0)
          same = false;
      }
      if (same && r->have_cache && abs != NULL)
        (void)bk_hcache_put(&r->cache, abs, st.st_size,
                            (int64_t)st.st_mtim.tv_sec * 1000000000 +
                                st.st_mtim.tv_nsec,
                            (uint64_t)st.st_ino, it->sha);
    }
    free(abs);
    if (fd >= 0)
      close(fd);
    if (dirfd >= 0)
      close(dirfd);
    if (same) {
      it->state = RS_KEPT;
      r->kept++;
      if (it->blob->source == NULL)
        it->blob->source = it;
    }
    r->prog.files_done++;
    bk_progress_show(&r->prog, false);
  }
  if (nchk > 0)
    bk_progress_finish(&r->prog);
  free(check);
}

/* ---- The verb ---------------------------------------------------------- */

/* backup.get: the snapshot's items into r->items. */
static int rs_snapshot(rs_run *r, const char *state, cJSON *sum) {
  cli_snapshot s;
  int status = cli_snapshot_get(&r->pipe, r->xfer, &r->prog, state,
                                r->cfg->snapshot, &r->bytes_received, &s);
  if (status != CLI_OK)
    return status;
  cJSON_AddStringToObject(sum, "snapshot", s.id);
  if (s.count >= 0)
    cJSON_AddNumberToObject(sum, "items", (double)s.count);
  if (s.bytes >= 0)
    cJSON_AddNumberToObject(sum, "bytes", (double)s.bytes);
  status = rs_items_take(r, &s.items);
  cli_snapshot_fini(&s);
  return status;
}

static void rs_free(rs_run *r) {
  for (size_t i = 0; i < r->nitems; i++)
    free(r->items[i].name);
  free(r->items);
  for (size_t i = 0; i < r->bslots; i++) {
    if (r->btab[i] != NULL) {
      if (r->btab[i]->dirfd >= 0)
        close(r->btab[i]->dirfd);
      free(r->btab[i]);
    }
  }
  free(r->btab);
  free(r->queue);
  for (size_t i = 0; i < r->npend; i++)
    close(r->pend[i].dirfd);
  free(r->pend);
  free(r->buf);
  free(r->rootabs);
  if (r->rootfd >= 0)
    close(r->rootfd);
  if (r->dc_path != NULL)
    close(r->dc_fd);
  free(r->dc_path);
  free(r->dm_path);
  if (r->have_cache)
    bk_hcache_free(&r->cache);
}

int cli_restore(cli_cfg *cfg, int argc, char **argv) {
  if (argc != 2)
    return cli_usage_error("restore needs one DIR to restore into");
  const char *dir = argv[1];
  int64_t t0 = nb_mono_ms();
  bk_catch_signals();
  rs_run r;
  memset(&r, 0, sizeof r);
  r.cfg = cfg;
  r.rootfd = -1;
  bool tty_out = isatty(STDOUT_FILENO);
  bk_progress_init(&r.prog, cli_progress_mode(cfg), stderr);
  nimbus_agent *a = NULL;
  char *state = NULL;
  int status;
  cJSON *sum = cJSON_CreateObject();
  if (sum == NULL || (r.buf = malloc(SC_SEGMENT)) == NULL ||
      (r.pend = calloc(RS_BATCH_FILES, sizeof *r.pend)) == NULL ||
      (state = bk_state_dir(cfg->state_dir)) == NULL) {
    status = cli_usage_error("out of memory, or no state directory");
    goto out;
  }
  if ((status = cli_connect(cfg, (int)cfg->jobs + 1, CLI_BULK_RESEND_MS,
                            CLI_BULK_RESEND_MAX_MS, &a)) != CLI_OK)
    goto out;
  nimbus_xfer_opts xo;
  nimbus_xfer_opts_init(&xo);
  xo.jobs = (int)cfg->jobs;
  xo.timeout_ms = (int)cfg->timeout;
  xo.stop = bk_stopped;
  if (bk_pipe_init(&r.pipe, a, 1, (int)cfg->timeout) != 0 ||
      nimbus_xfer_new(a, &xo, &r.xfer) != 0) {
    nimbus_agent_free(a);
    a = NULL;
    status = cli_usage_error("cannot set up the task pipeline");
    goto out;
  }
  r.pipe.stop = bk_stopped;
  if ((status = rs_snapshot(&r, state, sum)) != CLI_OK)
    goto out_pipe;

  /* DIR, made when missing. */
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "nimbus-agent: cannot create %s: %s\n", dir,
            strerror(errno));
    status = CLI_USAGE;
    goto out_pipe;
  }
  r.rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (r.rootfd < 0 || (r.rootabs = realpath(dir, NULL)) == NULL) {
    fprintf(stderr, "nimbus-agent: cannot open the directory %s: %s\n", dir,
            strerror(errno));
    status = CLI_USAGE;
    goto out_pipe;
  }
  if (bk_hcache_load(&r.cache, state) == 0)
    r.have_cache = true;
  else
    bk_hcache_free(&r.cache);
  if (rs_blobs_make(&r) != 0) {
    status = cli_usage_error("out of memory");
    goto out_pipe;
  }

  rs_check_existing(&r);
  if ((status = r.status) != CLI_OK)
    goto out_pipe;

  /* What is left to write, by content. */
  int64_t todo_bytes = 0, todo_files = 0;
  rs_item **tails = calloc(r.bslots, sizeof *tails);
  if (tails == NULL ||
      (r.queue = calloc(r.nblobs + 1, sizeof *r.queue)) == NULL) {
    free(tails);
    status = cli_usage_error("out of memory");
    goto out_pipe;
  }
  for (size_t i = 0; i < r.nitems; i++) {
    rs_item *it = &r.items[i];
    if (it->state != RS_TODO)
      continue;
    size_t k = rs_bslot(&r, it->sha);
    if (tails[k] == NULL)
      it->blob->todo = it;
    else
      tails[k]->bnext = it;
    tails[k] = it;
    todo_bytes += it->size;
    todo_files++;
  }
  free(tails);
  bk_progress_phase(&r.prog, "restoring", todo_bytes, todo_files);
  for (size_t k = 0; k < r.bslots; k++) {
    rs_blob *b = r.btab[k];
    if (b == NULL || b->todo == NULL)
      continue;
    if (b->size == 0) {
      /* Nothing to download: the empty content is known. */
      if (strcmp(b->hex, BK_EMPTY_SHA256) != 0) {
        rs_blob_fail(&r, b, true, "size 0 but not the empty blob");
        continue;
      }
      rs_copies(&r, b, -1, NULL);
      continue;
    }
    int src = b->source != NULL ? rs_open_final(&r, b->source) : -1;
    if (src >= 0) {
      rs_copies(&r, b, src, NULL);
      close(src);
    } else {
      r.queue[r.nqueue++] = b;
    }
  }
  rs_download(&r);
  rs_flush(&r);
  /* Every item ends restored, kept or failed; anything else is a bug that
   * must not pass for success. */
  for (size_t i = 0; i < r.nitems && r.status == CLI_OK; i++)
    if (r.items[i].state == RS_TODO)
      rs_item_fail(&r, &r.items[i], false,
                   "internal error: it was never written");
  /* The new names, durable. */
  if (syncfs(r.rootfd) != 0)
    bk_say(&r.prog, "syncfs: %s", strerror(errno));
  bk_progress_finish(&r.prog);
  if (r.have_cache) {
    char err[300];
    if (bk_hcache_save(&r.cache, err, sizeof err) != 0)
      bk_say(&r.prog, "%s", err);
  }
  status = r.status;
  if (status == CLI_OK) {
    bk_progress_clear(&r.prog);
    double secs = (double)(nb_mono_ms() - t0) / 1000.0;
    cJSON_AddNumberToObject(sum, "restored", (double)r.restored);
    cJSON_AddNumberToObject(sum, "kept", (double)r.kept);
    cJSON_AddNumberToObject(sum, "failed", (double)r.failed);
    cJSON_AddNumberToObject(sum, "blobs_downloaded",
                            (double)r.blobs_downloaded);
    cJSON_AddNumberToObject(sum, "bytes_received", (double)r.bytes_received);
    cJSON_AddNumberToObject(sum, "seconds",
                            (double)(int64_t)(secs * 1000) / 1000.0);
    if (cfg->json || !tty_out) {
      cli_print_json(sum);
    } else {
      char got[32], rate[32];
      bk_fmt_bytes(r.bytes_received, got, sizeof got);
      bk_fmt_bytes(secs > 0 ? (int64_t)((double)r.bytes_received / secs) : 0,
                   rate, sizeof rate);
      const cJSON *snap = cJSON_GetObjectItem(sum, "snapshot");
      printf("snapshot %s into %s: %lld restored, %lld already there, %lld "
             "failed; %s received in %.1f s (%s/s)\n",
             snap != NULL ? snap->valuestring : "?", dir, (long long)r.restored,
             (long long)r.kept, (long long)r.failed, got, secs, rate);
      fflush(stdout);
    }
    status = r.cloud_failed > 0 ? CLI_CLOUD_ERROR
             : r.failed > 0     ? CLI_USAGE
                                : CLI_OK;
  }

out_pipe:
  if (bk_interrupted) {
    rs_flush(&r);
    bk_say(&r.prog, "stopped; what is restored stays, and partial downloads "
                    "are kept: run the same restore again to go on");
    status = bk_signal_status();
  }
  bk_pipe_abandon(&r.pipe);
  nimbus_xfer_free(r.xfer);
  r.xfer = NULL;
  nimbus_agent_free(a);
  bk_pipe_fini(&r.pipe);
out:
  bk_progress_clear(&r.prog);
  free(state);
  cJSON_Delete(sum);
  rs_free(&r);
  return status;
}
