/* `nimbus-agent backup` and `nimbus-agent backups`.
 *
 * backup: walk the PATHs (regular files only; symbolic links are never
 * followed below a PATH), give every file an item name and kind, hash each
 * file with SHA-256 (unless the hash cache knows it unchanged), hand every
 * distinct content to libnimbus-agent's transfer engine (nimbus_blob_upload:
 * blob.has, blob.status to resume, blob.put with up to --jobs tasks in
 * flight across blobs, blob.commit, transient answers retried), then commit
 * the snapshot: the items inline, or in a manifest blob (uploaded the same
 * way) when they are large. This file keeps the walk, the files that share
 * a content, the files that change while they are read, the summary and
 * the progress line; the engine moves the bytes.
 *
 * Every upload is named by the blob's SHA-256 hex, so a later run finds
 * what an interrupted one sent through blob.status, with no local record.
 * Only a few segments are read at a time (pread per segment): memory is
 * about --jobs x 256 KiB whatever the files' sizes.
 *
 * backups: backup.list, every page, as a table or JSON lines. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ag_json.h"
#include "bk.h"
#include "cli.h"
#include "nb_util.h"
#include "sc.h"

const char cli_usage_backup[] =
    "Usage: nimbus-agent backup [--label L] [--jobs N] [--json] [--progress]\n"
    "                           [OPTIONS] PATH...\n"
    "\n"
    "Backs up files and directories (recursively) into a new snapshot of\n"
    "this terminal. Each file becomes an item named by its path relative to\n"
    "its PATH's parent: PATH /x/Phone gives Phone/..., a file PATH its own\n"
    "name. Only regular files are backed up; symbolic links below a PATH\n"
    "are not followed, and they, devices, sockets and pipes are skipped\n"
    "with a line on stderr each. A PATH itself may be a symbolic link.\n"
    "\n"
    "Kinds, by name: *.vcf contact; *.sms.jsonl sms (JSON Lines, one\n"
    "message per line: address, date in ms, type, body; see the README);\n"
    "jpg jpeg png gif heic heif webp bmp tif tiff dng photo; mp4 mov m4v\n"
    "3gp mkv webm avi video; anything else file.\n"
    "\n"
    "Only what the cloud lacks is sent: each file is hashed (SHA-256; a\n"
    "file whose path, size, mtime and inode are unchanged since an earlier\n"
    "run is not read again: <state dir>/hash-cache), the cloud says which\n"
    "contents it has, and the rest goes up in 256 KiB segments, --jobs at\n"
    "a time (default 16). Identical files are sent once. Interrupted (Ctrl-C,\n"
    "lost link, killed), the next run resumes where the cloud's uploads\n"
    "stand, without sending acknowledged segments again. A file that\n"
    "changes while it is backed up is hashed again once; if it changes\n"
    "again it is left out (said on stderr).\n"
    "\n"
    "On a terminal it shows a progress line on stderr and ends with one\n"
    "line for a person. Otherwise (or with --json) it prints one JSON\n"
    "object on stdout:\n"
    "  {\"snapshot\": \"...\", \"items\": N, \"bytes\": N, \"files_hashed\": "
    "N,\n"
    "   \"files_cached\": N, \"blobs_uploaded\": N, \"bytes_sent\": N,\n"
    "   \"skipped\": N, \"failed\": N, \"manifest\": true|false,\n"
    "   \"seconds\": S}\n"
    "bytes_sent counts the segment bytes sent in blob.put by this run;\n"
    "--progress also writes progress as JSON lines on stderr.\n"
    "\n"
    "Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops it at the next step, keeping\n"
    "the hashes made so far; a second Ctrl-C ends it at once. Either way\n"
    "the next run goes on from what the cloud acknowledged.\n"
    "\n"
    "Exit status: 0 ok; 1 the cloud refused (printed); 2 usage, nothing\n"
    "to back up, two items with one name, or some files could not be read\n"
    "(the snapshot is committed without them: see \"failed\"); 3 cannot\n"
    "connect; 4 no reply for --timeout ms (run again to resume); 128 + the\n"
    "signal when stopped (130 for Ctrl-C).\n";

const char cli_usage_backups[] =
    "Usage: nimbus-agent backups [--limit N] [--json] [OPTIONS]\n"
    "\n"
    "Lists this terminal's snapshots, newest first: all of them (page by\n"
    "page), or the newest N with --limit. On a terminal as a table\n"
    "(snapshot, date, items, size, label); otherwise, or with --json, one\n"
    "JSON object per line: {\"snapshot\", \"ts\", \"items\", \"bytes\",\n"
    "\"label\"} (ts in ms since the epoch).\n"
    "Exit status as for nimbus-agent --help.\n";

const char cli_usage_forget[] =
    "Usage: nimbus-agent forget [--json] [OPTIONS] SNAPSHOT...\n"
    "\n"
    "Deletes each SNAPSHOT (an id as `nimbus-agent backups` lists it) of\n"
    "this terminal. What no other snapshot refers to is collected by the\n"
    "cloud once its grace period ends; the other snapshots are untouched.\n"
    "Prints `forgot <id>` per snapshot on a terminal; otherwise, or with\n"
    "--json, one JSON object per line: {\"snapshot\", \"deleted\": true}.\n"
    "A snapshot that does not exist (or is another terminal's) is an error\n"
    "(404) printed on stderr; the others are still deleted, and the exit\n"
    "status is then 1.\n"
    "Exit status as for nimbus-agent --help.\n";

/* ---- State ------------------------------------------------------------- */

typedef struct up_blob up_blob;
typedef struct up_run up_run;

typedef struct up_file {
  char *name; /* the item name */
  char *abs;  /* absolute path */
  const char *kind;
  int64_t size, mtime_ns;
  uint64_t ino, dev; /* as the walk found it: every later open must agree */
  uint8_t sha[32];
  up_blob *blob;
  struct up_file *bnext; /* the next file with the same content */
  int fixed_fd;          /* >= 0: read this fd, not the path (manifest) */
  int changes;           /* times found changed since hashed */
  bool failed;
} up_file;

/* True when the file open at fd is the one the walk found (f->dev and
 * f->ino): not another put at its path since, nor one reached through a
 * directory of the path replaced by a link meanwhile. */
static bool up_same_file(const up_file *f, const struct stat *st) {
  return (uint64_t)st->st_ino == f->ino && (uint64_t)st->st_dev == f->dev;
}

enum {
  BL_UNKNOWN = 0, /* to hand to the transfer engine */
  BL_QUEUED,      /* in the engine (nimbus_blob_upload) */
  BL_PRESENT,     /* the cloud has it for us */
  BL_DONE,        /* committed by this run */
  BL_DROPPED      /* no file has this content any more */
};

/* One content: the engine uploads it from its first file (any will do);
 * the others are the same bytes. */
struct up_blob {
  uint8_t sha[32];
  char hex[65];
  int64_t size;
  int state;
  up_file *files;
  up_run *run;
  int64_t done; /* bytes the engine said are done, in the progress line */
  bool counted; /* its bytes are in the progress total */
};

struct up_run {
  const cli_cfg *cfg;
  bk_pipe pipe;      /* backup.commit */
  nimbus_xfer *xfer; /* every blob */
  bk_progress prog;
  bk_hcache cache;
  bool have_cache;
  up_file **files;
  size_t nfiles, capfiles;
  up_blob **btab; /* open addressing by hash */
  size_t bslots, nblobs;
  up_file **rehash; /* changed files, to hash again */
  size_t nrehash, caprehash;
  int64_t rehash_at; /* not before (monotonic ms) */
  uint8_t *buf;      /* one segment */
  /* Counters for the summary. */
  int64_t files_hashed, files_cached, blobs_uploaded, bytes_sent;
  int64_t skipped, failed;
  int status; /* an exit status once something fatal happened */
};

/* A file that changed is hashed again once it has not changed for this
 * long (a writer may still be at it). */
#define UP_SETTLE_MS 1000
/* ... waiting at most this long for it to settle. */
#define UP_SETTLE_MAX_MS 10000

/* Sets a fatal exit status (the first one wins) and stops the transfers
 * under way. */
static void up_fatal(up_run *u, int status) {
  if (u->status == CLI_OK)
    u->status = status;
  if (u->xfer != NULL)
    nimbus_xfer_cancel(u->xfer);
}

/* ---- Blobs ------------------------------------------------------------- */

static size_t up_bslot(const up_run *u, const uint8_t sha[32]) {
  uint64_t h;
  memcpy(&h, sha, sizeof h);
  size_t mask = u->bslots - 1, i = (size_t)h & mask;
  while (u->btab[i] != NULL && memcmp(u->btab[i]->sha, sha, 32) != 0)
    i = (i + 1) & mask;
  return i;
}

/* The blob of this content, made (to be uploaded) when new. */
static up_blob *up_blob_for(up_run *u, const uint8_t sha[32], int64_t size) {
  if (2 * (u->nblobs + 1) > u->bslots) {
    size_t ns = u->bslots != 0 ? 2 * u->bslots : 1024;
    up_blob **t = calloc(ns, sizeof *t);
    if (t == NULL)
      return NULL;
    up_blob **old = u->btab;
    size_t on = u->bslots;
    u->btab = t;
    u->bslots = ns;
    for (size_t i = 0; i < on; i++)
      if (old[i] != NULL)
        u->btab[up_bslot(u, old[i]->sha)] = old[i];
    free(old);
  }
  size_t i = up_bslot(u, sha);
  if (u->btab[i] != NULL)
    return u->btab[i];
  up_blob *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  memcpy(b->sha, sha, 32);
  nb_hex(sha, 32, b->hex);
  b->size = size;
  b->run = u;
  b->state = BL_UNKNOWN;
  u->btab[i] = b;
  u->nblobs++;
  return b;
}

static void up_blob_attach(up_blob *b, up_file *f) {
  f->blob = b;
  f->bnext = b->files;
  b->files = f;
}

static void up_blob_detach(up_blob *b, up_file *f) {
  for (up_file **pp = &b->files; *pp != NULL; pp = &(*pp)->bnext) {
    if (*pp == f) {
      *pp = f->bnext;
      break;
    }
  }
  f->bnext = NULL;
  f->blob = NULL;
}

static void up_file_fail(up_run *u, up_file *f, const char *why) {
  if (f->failed)
    return;
  f->failed = true;
  u->failed++;
  bk_say(&u->prog, "%s: %s; left out of the snapshot", f->abs, why);
  if (f->blob != NULL)
    up_blob_detach(f->blob, f);
}

/* f changed since it was hashed (or vanished): it leaves its blob and
 * waits to be hashed again once the file has been still for a while
 * (up_rehash_all), unless it changed before. */
static void up_file_changed(up_run *u, up_file *f) {
  f->changes++;
  if (f->blob != NULL)
    up_blob_detach(f->blob, f);
  if (f->changes > 1 || f->fixed_fd >= 0) {
    up_file_fail(u, f, "it changed while it was being backed up, twice");
    return;
  }
  bk_say(&u->prog,
         "%s changed while it was being backed up; it will be hashed "
         "again",
         f->abs);
  if (u->nrehash == u->caprehash) {
    size_t cap = u->caprehash != 0 ? 2 * u->caprehash : 16;
    up_file **v = realloc(u->rehash, cap * sizeof *v);
    if (v == NULL) {
      up_file_fail(u, f, "out of memory");
      return;
    }
    u->rehash = v;
    u->caprehash = cap;
  }
  u->rehash[u->nrehash++] = f;
  u->rehash_at = nb_mono_ms() + UP_SETTLE_MS;
}

static void up_file_rehash(up_run *u, up_file *f) {
  int fd = open(f->abs, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st, st2;
  uint8_t sha[32];
  int64_t n = 0;
  const char *why = NULL;
  if (fd < 0 || fstat(fd, &st) != 0)
    why = strerror(errno);
  else if (!S_ISREG(st.st_mode))
    why = "not a regular file";
  else if (!up_same_file(f, &st))
    why = "another file took its path since the tree was read";
  else if (bk_hash_fd(fd, u->buf, SC_SEGMENT, sha, &n, NULL, NULL) != 0 ||
           fstat(fd, &st2) != 0)
    why = strerror(errno);
  if (fd >= 0)
    close(fd);
  if (why != NULL) {
    char msg[256];
    snprintf(msg, sizeof msg, "cannot read it: %s", why);
    up_file_fail(u, f, msg);
    return;
  }
  if (n != st.st_size || st2.st_size != st.st_size ||
      st2.st_mtim.tv_sec != st.st_mtim.tv_sec ||
      st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec) {
    up_file_fail(u, f, "it changed while it was being backed up, twice");
    return;
  }
  f->size = st.st_size;
  f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  f->ino = (uint64_t)st.st_ino;
  memcpy(f->sha, sha, 32);
  u->files_hashed++;
  if (u->have_cache)
    (void)bk_hcache_put(&u->cache, f->abs, f->size, f->mtime_ns, f->ino,
                        f->sha);
  up_blob *b = up_blob_for(u, sha, f->size);
  if (b == NULL) {
    up_file_fail(u, f, "out of memory");
    return;
  }
  up_blob_attach(b, f);
  if (b->state == BL_DROPPED)
    b->state = BL_UNKNOWN; /* content seen before and given up: again */
}

/* Gives up on b (the cloud refused it): its files are left out. */
static void up_blob_fail(up_run *u, up_blob *b, const char *why) {
  while (b->files != NULL)
    up_file_fail(u, b->files, why);
  b->state = BL_DROPPED;
}

/* ---- Uploads, through the library's transfer engine -------------------- */

static void up_on_done(void *ctx, const nimbus_blob_result *r);

static void up_on_progress(void *ctx, int64_t done, int64_t total) {
  up_blob *b = ctx;
  up_run *u = b->run;
  if (!b->counted) {
    /* Counted once it is known to need sending. */
    b->counted = true;
    u->prog.bytes_total += total;
    u->prog.files_total++;
  }
  u->prog.bytes_done += done - b->done;
  b->done = done;
  bk_progress_show(&u->prog, false);
}

/* Hands b to the engine, read from its first file. */
static void up_blob_send(up_run *u, up_blob *b) {
  up_file *f = b->files;
  if (f == NULL) {
    b->state = BL_DROPPED;
    return;
  }
  nimbus_blob_upload_opts o;
  nimbus_blob_upload_opts_init(&o);
  if (f->fixed_fd >= 0) {
    o.fd = f->fixed_fd;
  } else {
    /* Read only while it is as hashed (size, mtime, inode). */
    o.path = f->abs;
    o.mtime_ns = f->mtime_ns;
    o.ino = f->ino;
  }
  o.size = f->size;
  o.sha256 = b->sha;
  o.on_done = up_on_done;
  o.on_progress = up_on_progress;
  o.ctx = b;
  int rc = nimbus_blob_upload(u->xfer, &o);
  if (rc != 0) {
    bk_say(&u->prog, "cannot upload %s: %s", f->abs, nimbus_strerror(rc));
    up_fatal(u, CLI_USAGE);
    return;
  }
  b->state = BL_QUEUED;
}

static void up_on_done(void *ctx, const nimbus_blob_result *r) {
  up_blob *b = ctx;
  up_run *u = b->run;
  u->bytes_sent += r->bytes;
  b->state = BL_DROPPED;
  switch (r->err) {
  case 0:
    b->state = r->moved ? BL_DONE : BL_PRESENT;
    if (r->moved) {
      u->blobs_uploaded++;
      u->prog.files_done++;
    }
    return;
  case NIMBUS_ECONFLICT:
  case NIMBUS_EIO:
    if (r->err == NIMBUS_EIO && r->code != 0)
      break; /* the cloud's error */
    /* Its first file changed, vanished or cannot be read: on with the
     * next file of the same content, from what the cloud has. */
    u->prog.bytes_done -= b->done;
    b->done = 0;
    if (b->files != NULL && r->err == NIMBUS_ECONFLICT)
      up_file_changed(u, b->files);
    else if (b->files != NULL)
      up_file_fail(u, b->files, r->error);
    if (b->files != NULL && u->status == CLI_OK)
      up_blob_send(u, b);
    return;
  case NIMBUS_ETOOBIG: {
    char why[400];
    snprintf(why, sizeof why, "the cloud refused it: %s", r->error);
    up_blob_fail(u, b, why);
    return;
  }
  case NIMBUS_ECANCELED:
    return; /* the run is ending: said once by up_transfer */
  case NIMBUS_EREFUSED:
    bk_say(&u->prog, "%s", r->error);
    up_fatal(u, CLI_CONNECT);
    return;
  case NIMBUS_ETIMEDOUT:
    if (u->status == CLI_OK)
      bk_say(&u->prog, "%s; run the same backup again to resume", r->error);
    up_fatal(u, CLI_TIMEOUT);
    return;
  case NIMBUS_ENOMEM:
    bk_say(&u->prog, "out of memory");
    up_fatal(u, CLI_USAGE);
    return;
  default:
    break;
  }
  bk_say(&u->prog, "%s", r->error != NULL ? r->error : nimbus_strerror(r->err));
  up_fatal(u, CLI_CLOUD_ERROR);
}

/* Hashes the files that changed again, once each has been still for
 * UP_SETTLE_MS (waiting at most UP_SETTLE_MAX_MS). */
static void up_rehash_all(up_run *u) {
  int64_t now = nb_mono_ms();
  if (u->rehash_at > now)
    bk_sleep_ms(u->rehash_at - now);
  for (size_t i = 0; i < u->nrehash && !bk_interrupted; i++) {
    up_file *f = u->rehash[i];
    int64_t waited = 0;
    struct stat st;
    while (waited < UP_SETTLE_MAX_MS && !bk_interrupted &&
           lstat(f->abs, &st) == 0) {
      struct timespec rt;
      clock_gettime(CLOCK_REALTIME, &rt);
      int64_t age = bk_ms_of_timespec(rt.tv_sec, rt.tv_nsec) -
                    bk_ms_of_timespec(st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
      if (age >= UP_SETTLE_MS || age < 0)
        break;
      bk_sleep_ms(UP_SETTLE_MS - age);
      waited += UP_SETTLE_MS - age;
    }
    if (!bk_interrupted)
      up_file_rehash(u, f);
  }
  if (bk_interrupted)
    up_fatal(u, bk_signal_status());
  u->nrehash = 0;
}

/* Uploads every blob the cloud may lack (the engine asks blob.has, sends
 * what is missing, resumes what an earlier run left), until every blob is
 * present or done, hashing again the files that changed meanwhile. */
static int up_transfer(up_run *u) {
  for (;;) {
    size_t sent = 0;
    for (size_t i = 0; i < u->bslots && u->status == CLI_OK; i++) {
      up_blob *b = u->btab[i];
      if (b != NULL && b->state == BL_UNKNOWN) {
        up_blob_send(u, b);
        sent++;
      }
    }
    if (u->status != CLI_OK)
      break;
    if (sent == 0 && u->nrehash == 0)
      break;
    int rc = nimbus_xfer_run(u->xfer);
    bk_progress_show(&u->prog, false);
    if (rc == NIMBUS_ETIMEDOUT) {
      bk_say(&u->prog,
             "no reply from the cloud for %d ms; run the same backup "
             "again to resume",
             u->pipe.stall_ms);
      up_fatal(u, CLI_TIMEOUT);
    } else if (rc == NIMBUS_ECANCELED && u->status == CLI_OK) {
      up_fatal(u, bk_interrupted ? bk_signal_status() : CLI_USAGE);
    } else if (rc != 0 && u->status == CLI_OK) {
      bk_say(&u->prog, "uploads: %s", nimbus_strerror(rc));
      up_fatal(u, CLI_USAGE);
    }
    if (u->status != CLI_OK)
      break;
    if (u->nrehash > 0)
      up_rehash_all(u);
  }
  return u->status;
}

/* ---- Walking and hashing ----------------------------------------------- */

static int up_add_file(up_run *u, const char *name, const char *abs,
                       const struct stat *st) {
  const char *why = nb_relpath_problem(name, strlen(name));
  if (why != NULL) {
    u->skipped++;
    bk_say(&u->prog, "skipped %s: its name %s (the cloud does not accept it)",
           abs, why);
    return 0;
  }
  if (u->nfiles == u->capfiles) {
    size_t cap = u->capfiles != 0 ? 2 * u->capfiles : 1024;
    up_file **v = realloc(u->files, cap * sizeof *v);
    if (v == NULL)
      return -1;
    u->files = v;
    u->capfiles = cap;
  }
  up_file *f = calloc(1, sizeof *f);
  if (f == NULL || (f->name = strdup(name)) == NULL ||
      (f->abs = strdup(abs)) == NULL) {
    if (f != NULL)
      free(f->name);
    free(f);
    return -1;
  }
  f->kind = bk_kind_of(name);
  f->size = st->st_size;
  f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
  f->ino = (uint64_t)st->st_ino;
  f->dev = (uint64_t)st->st_dev;
  f->fixed_fd = -1;
  u->files[u->nfiles++] = f;
  return 0;
}

static int up_cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds every regular file below `abs` (a directory), named under `name`
 * ("" for none). `want` (NULL for the tree's root): the directory as lstat
 * found it, which the one opened must be. Returns 0, or -1 when out of
 * memory. */
static int up_walk(up_run *u, const char *abs, const char *name,
                   const struct stat *want) {
  DIR *d = opendir(abs);
  struct stat ds;
  if (d != NULL && want != NULL &&
      (fstat(dirfd(d), &ds) != 0 || ds.st_ino != want->st_ino ||
       ds.st_dev != want->st_dev)) {
    /* Replaced (by a link, say) between the lstat and the open: what it
     * holds now is not what was below the tree. */
    closedir(d);
    u->failed++;
    bk_say(&u->prog,
           "%s: replaced while the tree was read; left out of the snapshot",
           abs);
    return 0;
  }
  if (d == NULL) {
    /* What it holds is missing from the snapshot: a failure, not a skip. */
    u->failed++;
    bk_say(&u->prog,
           "%s: cannot read the directory: %s; left out of the snapshot", abs,
           strerror(errno));
    return 0;
  }
  char **ents = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (n == cap) {
      cap = cap != 0 ? 2 * cap : 64;
      char **v = realloc(ents, cap * sizeof *v);
      if (v == NULL) {
        rc = -1;
        break;
      }
      ents = v;
    }
    if ((ents[n] = strdup(e->d_name)) == NULL) {
      rc = -1;
      break;
    }
    n++;
  }
  closedir(d);
  if (rc == 0)
    qsort(ents, n, sizeof *ents, up_cmp_str);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    size_t al = strlen(abs), nl = strlen(name), el = strlen(ents[i]);
    char *cabs = malloc(al + el + 2), *cname = malloc(nl + el + 2);
    if (cabs == NULL || cname == NULL) {
      free(cabs);
      free(cname);
      rc = -1;
      break;
    }
    snprintf(cabs, al + el + 2, "%s%s%s", abs,
             al > 0 && abs[al - 1] == '/' ? "" : "/", ents[i]);
    snprintf(cname, nl + el + 2, "%s%s%s", name, nl > 0 ? "/" : "", ents[i]);
    struct stat st;
    if (bk_is_part_name(ents[i])) {
      u->skipped++;
      bk_say(&u->prog, "skipped %s: a part file an interrupted restore left",
             cabs);
    } else if (lstat(cabs, &st) != 0) {
      /* Gone since the directory was read: nothing to back up. */
      if (errno == ENOENT) {
        u->skipped++;
        bk_say(&u->prog, "skipped %s: gone while the directory was read", cabs);
      } else {
        u->failed++;
        bk_say(&u->prog, "%s: %s; left out of the snapshot", cabs,
               strerror(errno));
      }
    } else if (S_ISDIR(st.st_mode)) {
      rc = up_walk(u, cabs, cname, &st);
    } else if (S_ISREG(st.st_mode)) {
      rc = up_add_file(u, cname, cabs, &st);
    } else {
      u->skipped++;
      bk_say(&u->prog, "skipped %s: %s", cabs,
             S_ISLNK(st.st_mode) ? "a symbolic link (not followed)"
                                 : "not a regular file");
    }
    free(cabs);
    free(cname);
  }
  for (size_t i = 0; i < n; i++)
    free(ents[i]);
  free(ents);
  return rc;
}

/* One PATH from the command line. */
static int up_walk_arg(up_run *u, const char *arg) {
  char *real = realpath(arg, NULL);
  struct stat st;
  if (real == NULL || stat(real, &st) != 0) {
    bk_say(&u->prog, "cannot back up %s: %s", arg, strerror(errno));
    free(real);
    return 1;
  }
  /* The name: PATH's last component as given, unless it is . or .. */
  char given[PATH_MAX];
  nb_strlcpy(given, arg, sizeof given);
  size_t gl = strlen(given);
  while (gl > 1 && given[gl - 1] == '/')
    given[--gl] = '\0';
  const char *base = strrchr(given, '/');
  base = base != NULL ? base + 1 : given;
  if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || base[0] == '\0') {
    base = strrchr(real, '/');
    base = base != NULL ? base + 1 : real;
  }
  int rc = 0;
  if (S_ISDIR(st.st_mode)) {
    rc = up_walk(u, real, base, NULL) != 0 ? -1 : 0;
  } else if (S_ISREG(st.st_mode)) {
    rc = up_add_file(u, base, real, &st) != 0 ? -1 : 0;
  } else {
    bk_say(&u->prog, "cannot back up %s: not a regular file or a directory",
           arg);
    rc = 1;
  }
  free(real);
  return rc;
}

static int up_cmp_file(const void *a, const void *b) {
  return strcmp((*(up_file *const *)a)->name, (*(up_file *const *)b)->name);
}

static void up_tick(void *ctx, size_t n) {
  up_run *u = ctx;
  u->prog.bytes_done += (int64_t)n;
  bk_progress_show(&u->prog, false);
}

/* Hashes f (or finds it in the cache) and attaches it to its blob. */
static int up_hash_file(up_run *u, up_file *f, bool cached_pass) {
  const uint8_t *h = u->have_cache ? bk_hcache_get(&u->cache, f->abs, f->size,
                                                   f->mtime_ns, f->ino)
                                   : NULL;
  if (h != NULL) {
    memcpy(f->sha, h, 32);
    u->files_cached++;
  } else if (cached_pass) {
    return 1; /* later */
  } else {
    for (int attempt = 0;; attempt++) {
      int fd = open(f->abs, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      struct stat st, st2;
      int64_t n = 0, before = u->prog.bytes_done;
      if (fd < 0 || fstat(fd, &st) != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot read it: %s", strerror(errno));
        if (fd >= 0)
          close(fd);
        up_file_fail(u, f, why);
        return 0;
      }
      if (!up_same_file(f, &st)) {
        close(fd);
        up_file_fail(u, f,
                     "another file took its path since the tree was read");
        return 0;
      }
      (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
      int rc = S_ISREG(st.st_mode)
                   ? bk_hash_fd(fd, u->buf, SC_SEGMENT, f->sha, &n, up_tick, u)
                   : -1;
      int e = errno;
      if (rc != 0 && bk_interrupted) {
        close(fd);
        return 2; /* stopped: not this file's fault */
      }
      bool same = rc == 0 && fstat(fd, &st2) == 0 && n == st.st_size &&
                  st2.st_size == st.st_size &&
                  st2.st_mtim.tv_sec == st.st_mtim.tv_sec &&
                  st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec;
      close(fd);
      if (rc != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot read it: %s",
                 S_ISREG(st.st_mode) ? strerror(e) : "not a regular file");
        up_file_fail(u, f, why);
        return 0;
      }
      /* What was read is what the size and mtime describe. */
      f->size = st.st_size;
      f->mtime_ns =
          (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
      f->ino = (uint64_t)st.st_ino;
      if (same)
        break;
      u->prog.bytes_done = before;
      if (attempt == 1) {
        up_file_fail(u, f, "it changed while it was being hashed, twice");
        return 0;
      }
    }
    u->files_hashed++;
    if (u->have_cache && bk_hcache_put(&u->cache, f->abs, f->size, f->mtime_ns,
                                       f->ino, f->sha) != 0)
      return -1;
  }
  up_blob *b = up_blob_for(u, f->sha, f->size);
  if (b == NULL)
    return -1;
  up_blob_attach(b, f);
  u->prog.files_done++;
  return 0;
}

/* ---- The snapshot ------------------------------------------------------ */

typedef struct up_sink {
  FILE *f;
  int64_t n;
} up_sink;

static int up_sink_write(void *data, const char *buf, size_t len) {
  up_sink *s = data;
  if (len > 0 && fwrite(buf, 1, len, s->f) != len)
    return -1;
  s->n += (int64_t)len;
  return 0;
}

/* Writes the items array as msgpack into the unlinked temporary file *fd
 * (in the state directory); its size into *n and the item count into
 * *count. */
static int up_write_items(up_run *u, const char *dir, int *fdp, int64_t *n,
                          size_t *count) {
  size_t dl = strlen(dir);
  char *tmp = malloc(dl + sizeof "/manifest.XXXXXX");
  if (tmp == NULL)
    return -1;
  snprintf(tmp, dl + sizeof "/manifest.XXXXXX", "%s/manifest.XXXXXX", dir);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    bk_say(&u->prog, "cannot create a file in %s: %s", dir, strerror(errno));
    free(tmp);
    return -1;
  }
  unlink(tmp);
  free(tmp);
  int fd2 = dup(fd);
  FILE *f = fd2 >= 0 ? fdopen(fd2, "w") : NULL;
  if (f == NULL) {
    if (fd2 >= 0)
      close(fd2);
    close(fd);
    return -1;
  }
  up_sink s = {f, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &s, up_sink_write);
  size_t c = 0;
  for (size_t i = 0; i < u->nfiles; i++) {
    up_file *fl = u->files[i];
    /* Every file's content is in the cloud by now; anything else is a bug
     * that must not reach the snapshot. */
    if (!fl->failed && (fl->blob == NULL || (fl->blob->state != BL_PRESENT &&
                                             fl->blob->state != BL_DONE)))
      up_file_fail(u, fl, "internal error: its content was not uploaded");
    c += !fl->failed;
  }
  msgpack_pack_array(&pk, c);
  for (size_t i = 0; i < u->nfiles; i++) {
    const up_file *fl = u->files[i];
    if (fl->failed)
      continue;
    char hex[65];
    nb_hex(fl->sha, 32, hex);
    msgpack_pack_map(&pk, 5);
    bk_pk_kv_str(&pk, "kind", fl->kind);
    bk_pk_kv_str(&pk, "name", fl->name);
    bk_pk_kv_str(&pk, "blob", hex);
    bk_pk_kv_int(&pk, "size", fl->size);
    int64_t sec = fl->mtime_ns / 1000000000, ns = fl->mtime_ns % 1000000000;
    if (ns < 0) {
      ns += 1000000000;
      sec--;
    }
    bk_pk_kv_int(&pk, "mtime", bk_ms_of_timespec(sec, ns));
  }
  if (fclose(f) != 0) {
    bk_say(&u->prog, "cannot write the list of items: %s", strerror(errno));
    close(fd);
    return -1;
  }
  *fdp = fd;
  *n = s.n;
  *count = c;
  return 0;
}

#define UP_AGAIN (-1)

/* backup.commit with the items inline (read back from items_fd) or the
 * manifest blob. Returns CLI_OK (the snapshot's fields added to summary),
 * UP_AGAIN when the cloud lacks blobs (queued again), or an exit status. */
static int up_commit(up_run *u, int items_fd, int64_t items_len,
                     const up_blob *manifest, cJSON *summary) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  bool label = u->cfg->label[0] != '\0';
  msgpack_pack_map(&pk, label ? 2 : 1);
  if (manifest != NULL) {
    bk_pk_kv_str(&pk, "manifest", manifest->hex);
  } else {
    /* The items array as written, appended whole. */
    uint8_t *items = malloc(items_len > 0 ? (size_t)items_len : 1);
    if (items == NULL ||
        pread(items_fd, items, (size_t)items_len, 0) != items_len) {
      bk_say(&u->prog, "cannot read back the list of items: %s",
             strerror(errno));
      free(items);
      msgpack_sbuffer_destroy(&sb);
      return CLI_USAGE;
    }
    bk_pk_str(&pk, "items");
    msgpack_sbuffer_write(&sb, (const char *)items, (size_t)items_len);
    free(items);
  }
  if (label)
    bk_pk_kv_str(&pk, "label", u->cfg->label);

  nimbus_reply *r = NULL;
  int rc = bk_pipe_call(&u->pipe, "backup.commit", (const uint8_t *)sb.data,
                        sb.size, &r);
  msgpack_sbuffer_destroy(&sb);
  if (rc == NIMBUS_ETIMEDOUT) {
    bk_say(&u->prog,
           "no reply to backup.commit for %d ms; run the same backup "
           "again (nothing will be sent twice)",
           u->pipe.stall_ms);
    return CLI_TIMEOUT;
  }
  if (rc == NIMBUS_EREFUSED) {
    bk_say(&u->prog, "backup.commit: %s", nimbus_agent_errstr(u->pipe.agent));
    return CLI_CONNECT;
  }
  if (rc == NIMBUS_ECANCELED)
    return bk_signal_status();
  if (rc != 0) {
    bk_say(&u->prog, "cannot send backup.commit: %s", nimbus_strerror(rc));
    return CLI_USAGE;
  }
  msgpack_object res;
  msgpack_zone *z = NULL;
  bool have = bk_result_map(r, &res, &z);
  int status = CLI_OK;
  if (bk_reply_ok(r)) {
    const msgpack_object *snap = have ? sc_map_get(&res, "snapshot") : NULL;
    int64_t items = 0, bytes = 0;
    if (snap == NULL || snap->type != MSGPACK_OBJECT_STR ||
        !bk_obj_int(sc_map_get(&res, "items"), &items) ||
        !bk_obj_int(sc_map_get(&res, "bytes"), &bytes)) {
      bk_say(&u->prog, "backup.commit answered without a snapshot");
      status = CLI_CLOUD_ERROR;
    } else {
      char id[512];
      snprintf(id, sizeof id, "%.*s", (int)snap->via.str.size,
               snap->via.str.ptr);
      cJSON_AddStringToObject(summary, "snapshot", id);
      cJSON_AddNumberToObject(summary, "items", (double)items);
      cJSON_AddNumberToObject(summary, "bytes", (double)bytes);
    }
  } else if (r->code == 409 && have && sc_map_get(&res, "missing") != NULL &&
             sc_map_get(&res, "missing")->type == MSGPACK_OBJECT_ARRAY) {
    /* Blobs gone since blob.has said otherwise (or never readable): send
     * them, then commit again. */
    const msgpack_object *m = sc_map_get(&res, "missing");
    const msgpack_object *more = sc_map_get(&res, "more");
    size_t queued = 0;
    for (uint32_t i = 0; i < m->via.array.size; i++) {
      const msgpack_object *h = &m->via.array.ptr[i];
      uint8_t sha[32];
      if (h->type != MSGPACK_OBJECT_STR ||
          !bk_hex_valid(h->via.str.ptr, h->via.str.size) ||
          nb_unhex32(h->via.str.ptr, sha) != 0 || u->bslots == 0)
        continue;
      up_blob *b = u->btab[up_bslot(u, sha)];
      if (b == NULL || b->files == NULL ||
          (b->state != BL_PRESENT && b->state != BL_DONE))
        continue;
      b->state = BL_UNKNOWN; /* blob.has again, then sent */
      queued++;
    }
    if (more != NULL && more->type == MSGPACK_OBJECT_BOOLEAN &&
        more->via.boolean) {
      /* Only the first 1000 were named: ask again about all of them. */
      for (size_t i = 0; i < u->bslots; i++) {
        up_blob *b = u->btab[i];
        if (b != NULL && b->files != NULL &&
            (b->state == BL_PRESENT || b->state == BL_DONE)) {
          b->state = BL_UNKNOWN;
          queued++;
        }
      }
    }
    if (queued == 0) {
      bk_say(&u->prog,
             "backup.commit: the cloud lacks blobs this backup did not "
             "name");
      status = cli_cloud_error(r);
    } else {
      bk_say(&u->prog,
             "the cloud lacks %zu blob(s) it had a moment ago; sending "
             "them",
             queued);
      status = UP_AGAIN;
    }
  } else if (r->code == 429 || r->code == 503) {
    /* Busy, or a blob vanished while the commit ran: check every blob
     * again and commit again after the pause asked for. */
    int64_t wait = 1000;
    if (have)
      bk_obj_int(sc_map_get(&res, "retry_after"), &wait);
    bk_say(&u->prog, "backup.commit: error %d: %s; trying again", r->code,
           r->error != NULL ? r->error : "");
    for (size_t i = 0; i < u->bslots; i++) {
      up_blob *b = u->btab[i];
      if (b != NULL && b->files != NULL &&
          (b->state == BL_PRESENT || b->state == BL_DONE)) {
        b->state = BL_UNKNOWN;
      }
    }
    bk_sleep_ms(wait < 0 ? 0 : wait > 10000 ? 10000 : wait);
    status = UP_AGAIN;
  } else {
    bk_progress_clear(&u->prog);
    status = cli_cloud_error(r);
  }
  msgpack_zone_free(z);
  nimbus_reply_free(r);
  return status;
}

static void up_free(up_run *u) {
  for (size_t i = 0; i < u->nfiles; i++) {
    free(u->files[i]->name);
    free(u->files[i]->abs);
    free(u->files[i]);
  }
  free(u->files);
  for (size_t i = 0; i < u->bslots; i++) {
    free(u->btab[i]);
  }
  free(u->btab);
  free(u->rehash);
  free(u->buf);
  if (u->have_cache)
    bk_hcache_free(&u->cache);
}

static void up_summary_print(up_run *u, cJSON *sum, bool json, double seconds) {
  cJSON_AddNumberToObject(sum, "files_hashed", (double)u->files_hashed);
  cJSON_AddNumberToObject(sum, "files_cached", (double)u->files_cached);
  cJSON_AddNumberToObject(sum, "blobs_uploaded", (double)u->blobs_uploaded);
  cJSON_AddNumberToObject(sum, "bytes_sent", (double)u->bytes_sent);
  cJSON_AddNumberToObject(sum, "skipped", (double)u->skipped);
  cJSON_AddNumberToObject(sum, "failed", (double)u->failed);
  cJSON_AddNumberToObject(sum, "seconds",
                          (double)(int64_t)(seconds * 1000) / 1000.0);
  if (json) {
    cli_print_json(sum);
    return;
  }
  const cJSON *snap = cJSON_GetObjectItem(sum, "snapshot");
  const cJSON *items = cJSON_GetObjectItem(sum, "items");
  const cJSON *bytes = cJSON_GetObjectItem(sum, "bytes");
  char total[32], sent[32], rate[32];
  bk_fmt_bytes(bytes != NULL ? (int64_t)bytes->valuedouble : 0, total,
               sizeof total);
  bk_fmt_bytes(u->bytes_sent, sent, sizeof sent);
  bk_fmt_bytes(seconds > 0 ? (int64_t)((double)u->bytes_sent / seconds) : 0,
               rate, sizeof rate);
  printf("snapshot %s: %lld items, %s\n",
         snap != NULL ? snap->valuestring : "?",
         items != NULL ? (long long)items->valuedouble : 0LL, total);
  printf("  %lld files hashed, %lld unchanged (cached); %lld blobs uploaded, "
         "%s sent in %.1f s (%s/s)\n",
         (long long)u->files_hashed, (long long)u->files_cached,
         (long long)u->blobs_uploaded, sent, seconds, rate);
  if (u->skipped > 0 || u->failed > 0)
    printf("  %lld skipped, %lld could not be read (left out; see above)\n",
           (long long)u->skipped, (long long)u->failed);
  fflush(stdout);
}

int cli_backup(cli_cfg *cfg, int argc, char **argv) {
  if (argc < 2)
    return cli_usage_error("backup needs at least one PATH");
  if (strlen(cfg->label) > SC_LABEL_MAX)
    return cli_usage_error("--label must be at most 255 bytes");
  int64_t t0 = nb_mono_ms();
  bk_catch_signals();
  up_run u;
  memset(&u, 0, sizeof u);
  u.cfg = cfg;
  bool tty_out = isatty(STDOUT_FILENO);
  bk_progress_init(&u.prog, cli_progress_mode(cfg), stderr);
  nimbus_agent *a = NULL;
  char *state = NULL;
  int status = CLI_OK, items_fd = -1;
  bool manifest = false;
  up_file *mf = NULL;
  cJSON *sum = cJSON_CreateObject();
  if (sum == NULL || (u.buf = malloc(SC_SEGMENT)) == NULL) {
    status = cli_usage_error("out of memory");
    goto out;
  }

  /* The files. */
  for (int i = 1; i < argc; i++) {
    int rc = up_walk_arg(&u, argv[i]);
    if (rc < 0) {
      status = cli_usage_error("out of memory");
      goto out;
    }
    if (rc > 0)
      status = CLI_USAGE;
  }
  if (status != CLI_OK)
    goto out;
  if (u.nfiles == 0) {
    status = cli_usage_error("nothing to back up: no regular files under "
                             "the given paths");
    goto out;
  }
  qsort(u.files, u.nfiles, sizeof *u.files, up_cmp_file);
  for (size_t i = 1; i < u.nfiles; i++) {
    if (strcmp(u.files[i - 1]->name, u.files[i]->name) == 0) {
      fprintf(stderr,
              "nimbus-agent: %s and %s would both be the item %s; back "
              "them up separately or from distinct directories\n",
              u.files[i - 1]->abs, u.files[i]->abs, u.files[i]->name);
      status = CLI_USAGE;
      goto out;
    }
  }

  if ((status = cli_connect(cfg, (int)cfg->jobs + 1, CLI_BULK_RESEND_MS,
                            CLI_BULK_RESEND_MAX_MS, &a)) != CLI_OK)
    goto out;
  if (bk_pipe_init(&u.pipe, a, 1, (int)cfg->timeout) != 0) {
    status = cli_usage_error("cannot set up the task pipeline");
    goto out;
  }
  u.pipe.stop = bk_stopped;
  nimbus_xfer_opts xo;
  nimbus_xfer_opts_init(&xo);
  xo.jobs = (int)cfg->jobs;
  xo.timeout_ms = (int)cfg->timeout;
  xo.stop = bk_stopped;
  if (nimbus_xfer_new(a, &xo, &u.xfer) != 0 ||
      (state = bk_state_dir(cfg->state_dir)) == NULL) {
    status = cli_usage_error("out of memory, or no state directory");
    goto out_pipe;
  }
  int crc = bk_hcache_load(&u.cache, state);
  if (crc == 0) {
    u.have_cache = true;
  } else {
    fprintf(stderr,
            "nimbus-agent: cannot read %s/hash-cache (%s); every "
            "file is read\n",
            state, nimbus_strerror(crc));
    bk_hcache_free(&u.cache);
  }

  /* Hashes: the cache first, then the files it does not know. */
  int64_t to_hash = 0;
  size_t nhash = 0;
  for (size_t i = 0; i < u.nfiles; i++) {
    int rc = up_hash_file(&u, u.files[i], true);
    if (rc < 0) {
      status = cli_usage_error("out of memory");
      goto out_pipe;
    }
    if (rc > 0) {
      to_hash += u.files[i]->size;
      nhash++;
    }
  }
  bk_progress_phase(&u.prog, "hashing", to_hash, (int64_t)nhash);
  for (size_t i = 0; i < u.nfiles && !bk_interrupted; i++) {
    up_file *f = u.files[i];
    if (f->blob != NULL || f->failed)
      continue;
    if (up_hash_file(&u, f, false) < 0) {
      status = cli_usage_error("out of memory");
      goto out_pipe;
    }
  }
  if (nhash > 0)
    bk_progress_finish(&u.prog);
  /* Kept also when stopped: the next run need not read those again. */
  if (u.have_cache) {
    char err[300];
    if (bk_hcache_save(&u.cache, err, sizeof err) != 0)
      fprintf(stderr, "nimbus-agent: %s\n", err);
  }
  if (bk_interrupted) {
    status = bk_signal_status();
    goto out_stopped;
  }

  /* Uploads, then the snapshot; again if the cloud lost blobs meanwhile. */
  bk_progress_phase(&u.prog, "uploading", 0, 0);
  for (int round = 0;; round++) {
    if ((status = up_transfer(&u)) != CLI_OK)
      break;
    if (mf != NULL) {
      if (mf->blob != NULL)
        up_blob_detach(mf->blob, mf);
      free(mf->abs);
      free(mf);
      mf = NULL;
    }
    if (items_fd >= 0)
      close(items_fd);
    items_fd = -1;
    int64_t len = 0;
    size_t count = 0;
    if (up_write_items(&u, state, &items_fd, &len, &count) != 0) {
      status = CLI_USAGE;
      break;
    }
    if (count == 0) {
      bk_say(&u.prog, "no file could be backed up");
      status = CLI_USAGE;
      break;
    }
    up_blob *mb = NULL;
    manifest = len > BK_INLINE_MAX;
    if (manifest) {
      if (count > SC_MANIFEST_MAX_ITEMS || len > SC_MANIFEST_MAX_BYTES) {
        bk_say(&u.prog,
               "%zu items (%" PRId64 " bytes listed) are more than a "
               "snapshot holds (%d items, %d bytes)",
               count, len, SC_MANIFEST_MAX_ITEMS, SC_MANIFEST_MAX_BYTES);
        status = CLI_USAGE;
        break;
      }
      /* The items go up as a blob of their own, like any file. */
      uint8_t sha[32];
      int64_t n = 0;
      mf = calloc(1, sizeof *mf);
      if (mf == NULL || (mf->abs = strdup("(the list of items)")) == NULL ||
          lseek(items_fd, 0, SEEK_SET) != 0 ||
          bk_hash_fd(items_fd, u.buf, SC_SEGMENT, sha, &n, NULL, NULL) != 0 ||
          (mb = up_blob_for(&u, sha, n)) == NULL) {
        bk_say(&u.prog, "cannot hash the list of items: %s", strerror(errno));
        status = CLI_USAGE;
        break;
      }
      mf->name = mf->abs;
      mf->kind = "file";
      mf->size = n;
      mf->fixed_fd = items_fd;
      memcpy(mf->sha, sha, 32);
      up_blob_attach(mb, mf);
      if (mb->state == BL_DROPPED)
        mb->state = BL_UNKNOWN;
      if ((status = up_transfer(&u)) != CLI_OK)
        break;
      if (mb->state != BL_PRESENT && mb->state != BL_DONE) {
        bk_say(&u.prog, "the list of items could not be uploaded");
        status = CLI_CLOUD_ERROR;
        break;
      }
    }
    bk_progress_finish(&u.prog);
    status = up_commit(&u, items_fd, len, mb, sum);
    if (status != UP_AGAIN)
      break;
    if (round == 3) {
      bk_say(&u.prog,
             "backup.commit failed four times; giving up (run the same "
             "backup again later)");
      status = CLI_CLOUD_ERROR;
      break;
    }
    status = CLI_OK;
  }
  bk_progress_clear(&u.prog);
  if (u.have_cache) {
    char err[300];
    if (bk_hcache_save(&u.cache, err, sizeof err) != 0)
      fprintf(stderr, "nimbus-agent: %s\n", err);
  }
out_stopped:
  if (bk_interrupted) {
    bk_progress_clear(&u.prog);
    fprintf(stderr, "nimbus-agent: stopped; what the cloud acknowledged "
                    "stays: run the same backup again to go on\n");
    status = bk_signal_status();
  }
  if (status == CLI_OK) {
    cJSON_AddBoolToObject(sum, "manifest", manifest);
    up_summary_print(&u, sum, cfg->json || !tty_out,
                     (double)(nb_mono_ms() - t0) / 1000.0);
    if (u.failed > 0)
      status = CLI_USAGE;
  }

out_pipe:
  bk_pipe_abandon(&u.pipe);
  nimbus_xfer_free(u.xfer);
  u.xfer = NULL;
  nimbus_agent_free(a);
  bk_pipe_fini(&u.pipe);
out:
  bk_progress_clear(&u.prog);
  if (mf != NULL) {
    free(mf->abs);
    free(mf);
  }
  if (items_fd >= 0)
    close(items_fd);
  free(state);
  cJSON_Delete(sum);
  up_free(&u);
  return status;
}

/* ---- backups ----------------------------------------------------------- */

static void bl_row(const msgpack_object *s, bool table) {
  if (!table) {
    cJSON *j = ag_json_from_msgpack(s);
    cli_print_json(j);
    cJSON_Delete(j);
    return;
  }
  const msgpack_object *id = sc_map_get(s, "snapshot");
  const msgpack_object *label = sc_map_get(s, "label");
  int64_t ts = 0, items = 0, bytes = 0;
  bk_obj_int(sc_map_get(s, "ts"), &ts);
  bk_obj_int(sc_map_get(s, "items"), &items);
  bk_obj_int(sc_map_get(s, "bytes"), &bytes);
  char date[64] = "?", size[32];
  time_t t = (time_t)(ts / 1000);
  struct tm tm;
  if (localtime_r(&t, &tm) != NULL)
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  bk_fmt_bytes(bytes, size, sizeof size);
  printf("%-34.*s %-19s %9lld %11s  %.*s\n",
         id != NULL && id->type == MSGPACK_OBJECT_STR ? (int)id->via.str.size
                                                      : 1,
         id != NULL && id->type == MSGPACK_OBJECT_STR ? id->via.str.ptr : "?",
         date, (long long)items, size,
         label != NULL && label->type == MSGPACK_OBJECT_STR
             ? (int)label->via.str.size
             : 0,
         label != NULL && label->type == MSGPACK_OBJECT_STR ? label->via.str.ptr
                                                            : "");
}

/* The connection of the verbs that send one small task at a time
 * (backups, forget): an agent and a pipeline of one. Returns CLI_OK, or
 * the exit status (the error printed). */
static int one_by_one_open(cli_cfg *cfg, nimbus_agent **a, bk_pipe *pipe) {
  int status =
      cli_connect(cfg, 1, CLI_BULK_RESEND_MS, CLI_BULK_RESEND_MAX_MS, a);
  if (status != CLI_OK)
    return status;
  if (bk_pipe_init(pipe, *a, 1, (int)cfg->timeout) != 0) {
    nimbus_agent_free(*a);
    *a = NULL;
    return cli_usage_error("cannot set up the task pipeline");
  }
  pipe->stop = bk_stopped;
  return CLI_OK;
}

static void one_by_one_close(nimbus_agent *a, bk_pipe *pipe) {
  fflush(stdout);
  bk_pipe_abandon(pipe);
  nimbus_agent_free(a);
  bk_pipe_fini(pipe);
}

int cli_backups(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("backups takes no arguments");
  bool table = !cfg->json && isatty(STDOUT_FILENO);
  nimbus_agent *a = NULL;
  bk_pipe pipe;
  int status = one_by_one_open(cfg, &a, &pipe);
  if (status != CLI_OK)
    return status;
  char *cursor = NULL;
  int64_t shown = 0;
  for (;;) {
    int64_t want = 1000;
    if (cfg->limit > 0 && cfg->limit - shown < want)
      want = cfg->limit - shown;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, cursor != NULL ? 2 : 1);
    bk_pk_kv_int(&pk, "limit", want);
    if (cursor != NULL)
      bk_pk_kv_str(&pk, "cursor", cursor);
    nimbus_reply *r = NULL;
    int rc = bk_pipe_call(&pipe, "backup.list", (const uint8_t *)sb.data,
                          sb.size, &r);
    msgpack_sbuffer_destroy(&sb);
    free(cursor);
    cursor = NULL;
    if (rc != 0) {
      status = cli_call_failed(a, "backup.list", rc);
      break;
    }
    if (!bk_reply_ok(r)) {
      status = cli_cloud_error(r);
      nimbus_reply_free(r);
      break;
    }
    msgpack_object res;
    msgpack_zone *z = NULL;
    const msgpack_object *list = NULL, *next = NULL;
    if (bk_result_map(r, &res, &z)) {
      list = sc_map_get(&res, "snapshots");
      next = sc_map_get(&res, "next_cursor");
    }
    if (list == NULL || list->type != MSGPACK_OBJECT_ARRAY) {
      fprintf(stderr, "nimbus-agent: backup.list answered no snapshots\n");
      status = CLI_CLOUD_ERROR;
    } else {
      if (table && shown == 0 && list->via.array.size > 0)
        printf("%-34s %-19s %9s %11s  %s\n", "SNAPSHOT", "DATE", "ITEMS",
               "SIZE", "LABEL");
      for (uint32_t i = 0; i < list->via.array.size; i++) {
        if (list->via.array.ptr[i].type == MSGPACK_OBJECT_MAP)
          bl_row(&list->via.array.ptr[i], table);
        shown++;
      }
      if (next != NULL && next->type == MSGPACK_OBJECT_STR &&
          next->via.str.size > 0 && list->via.array.size > 0 &&
          (cfg->limit == 0 || shown < cfg->limit))
        cursor = strndup(next->via.str.ptr, next->via.str.size);
    }
    msgpack_zone_free(z);
    nimbus_reply_free(r);
    if (status != CLI_OK || cursor == NULL)
      break;
  }
  free(cursor);
  if (status == CLI_OK && table && shown == 0)
    printf("no snapshots\n");
  one_by_one_close(a, &pipe);
  return status;
}

int cli_forget(cli_cfg *cfg, int argc, char **argv) {
  if (argc < 2)
    return cli_usage_error("forget wants at least one snapshot id "
                           "(see nimbus-agent backups)");
  bool table = !cfg->json && isatty(STDOUT_FILENO);
  nimbus_agent *a = NULL;
  bk_pipe pipe;
  int status = one_by_one_open(cfg, &a, &pipe);
  if (status != CLI_OK)
    return status;
  for (int i = 1; i < argc; i++) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    bk_pk_kv_str(&pk, "snapshot", argv[i]);
    nimbus_reply *r = NULL;
    int rc = bk_pipe_call(&pipe, "backup.delete", (const uint8_t *)sb.data,
                          sb.size, &r);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
      char what[200];
      snprintf(what, sizeof what, "backup.delete %s", argv[i]);
      status = cli_call_failed(a, what, rc);
      break; /* the link, not the snapshot: the rest would fail alike */
    }
    if (!bk_reply_ok(r)) {
      fprintf(stderr, "nimbus-agent: snapshot %s: ", argv[i]);
      status = cli_cloud_error(r);
    } else if (table) {
      printf("forgot %s\n", argv[i]);
    } else {
      cJSON *j = cJSON_CreateObject();
      if (j != NULL && cJSON_AddStringToObject(j, "snapshot", argv[i]) &&
          cJSON_AddTrueToObject(j, "deleted"))
        (void)cli_print_json(j);
      cJSON_Delete(j);
    }
    nimbus_reply_free(r);
  }
  one_by_one_close(a, &pipe);
  return status;
}
