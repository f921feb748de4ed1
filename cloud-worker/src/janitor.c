/* The worker's janitor: a thread of its own, with its own Redis
 * connection, that removes what nobody needs any more so no task ever
 * waits for it:
 *   - staging files of uploads abandoned for upload_ttl (their Redis
 *     records have expired by then), and
 *   - shares that ended (expired, revoked, replaced): their records and
 *     their references on blobs (st_share_sweep), before the blobs' pass
 *     so a blob whose last share ended is a candidate already;
 *   - offload results whose result_ttl ended, likewise (st_result_sweep);
 *   - blobs nothing has referred to for blob_ttl: their records and every
 *     terminal's access in one script (st_blob_gc_take), then the file;
 *   - every tenth pass, stored files that no record names (a crash between
 *     a commit's move and its record, a removal that failed) and that were
 *     not written for upload_ttl: by then no upload can still commit them,
 *     and st_blob_orphan_take holds off a commit of the same content while
 *     the file goes.
 * Every worker of a pool runs one; they may race for the same blob, and
 * the script lets exactly one take it.
 *
 * Besides, every second, it compresses the shared documents share.create
 * queued (nb:pack, too big to compress while the terminal waits: see
 * handlers_share.c), one after another, each under a lease that another
 * janitor takes over should this one die; a worker told to stop ends the
 * one under way at its next segment and leaves it to the others. */
#include "wk.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_result.h"
#include "st_share.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

/* Candidates looked at per round trip. */
#define GC_BATCH 100
/* The longest a collected blob's tombstone holds off commits of the same
 * content, should this worker die between the script and the file's
 * removal; normally st_blob_gc_done ends it at once. */
#define GONE_MS 10000
/* How often the queue of blobs to compress is looked at: a big shared
 * document is compressed about this long after its share, plus its time
 * (about 7 ms per MiB at level 3 here). */
#define PACK_POLL_MS 1000
/* A compression's lease on its queue entry, renewed every third of it
 * while the work goes on. */
#define PACK_LEASE_MS 60000
/* When the disk is full, the next try. */
#define PACK_RETRY_FULL_MS 600000
/* Batches of candidates the collector looks at in one pass, at most. */
#define GC_ROUNDS 20

struct wk_janitor {
  const wk_config *cfg;
  st_blobstore *blobs;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
};

/* Removes a taken blob's file, then ends its tombstone. `what` names it in
 * a warning. Returns false when the file stays (the tombstone then ends by
 * itself). */
static bool remove_taken(wk_janitor *j, st_redis *r, const uint8_t raw[32],
                         const char *hex, const char *what) {
  if (st_blobstore_remove(j->blobs, raw) != 0) {
    NB_WARN("WK-GC", "%s %s: its file stays: %s", what, hex,
            st_blobstore_errstr());
    return false;
  }
  if (st_blob_gc_done(r, hex) != 0)
    NB_WARN("WK-GC", "blob %s: tombstone stays for its ttl: %s", hex,
            st_redis_errstr(r));
  return true;
}

/* One pass of the collector; returns the count of blobs removed. */
static size_t collect(wk_janitor *j, st_redis *r) {
  char(*cand)[65] = malloc(GC_BATCH * sizeof *cand);
  size_t removed = 0, n = 0;
  uint64_t bytes = 0;
  if (cand == NULL)
    return 0;
  int64_t cutoff = nb_now_ms() - j->cfg->blob_ttl_ms;
  /* At most GC_ROUNDS batches a pass: candidates held by a commit mark
   * stay in the set, and a full batch of them must not keep the loop
   * going until the marks lapse. The next pass goes on. */
  int rounds = 0;
  do {
    if (st_blob_gc_candidates(r, cutoff, GC_BATCH, cand, &n) != 0) {
      NB_WARN("WK-GC", "cannot list unreferenced blobs: %s",
              st_redis_errstr(r));
      break;
    }
    for (size_t i = 0; i < n; i++) {
      bool taken = false;
      uint64_t size = 0;
      if (st_blob_gc_take(r, cand[i], cutoff, GONE_MS, &taken, &size) != 0) {
        NB_WARN("WK-GC", "cannot collect blob %s: %s", cand[i],
                st_redis_errstr(r));
        n = 0;
        break;
      }
      if (!taken)
        continue;
      uint8_t raw[32];
      (void)nb_unhex32(cand[i], raw);
      (void)remove_taken(j, r, raw, cand[i], "collected blob");
      removed++;
      bytes += size;
    }
    /* Every candidate of a full batch left the set (taken, or dropped as
     * referred to) unless it was referred to again meanwhile, whose new
     * time is past the cutoff: the loop ends. */
  } while (n == GC_BATCH && ++rounds < GC_ROUNDS);
  if (removed > 0)
    NB_INFO("WK-GC", "collected %zu unreferenced blob%s (%llu bytes)", removed,
            removed == 1 ? "" : "s", (unsigned long long)bytes);
  free(cand);
  return removed;
}

/* Releases, a batch at a time, what ended and held blobs: shares
 * (st_share_sweep) or offload results (st_result_sweep), before the
 * blobs' pass, so what they held is collected in the same round. */
typedef int (*sweep_fn)(st_redis *r, int64_t now_ms, size_t max,
                        size_t *released);

static void sweep_ended(st_redis *r, sweep_fn fn, const char *what) {
  size_t released = 0, total = 0;
  do {
    if (fn(r, nb_now_ms(), GC_BATCH, &released) != 0) {
      NB_WARN("WK-GC", "cannot release ended %ss: %s", what,
              st_redis_errstr(r));
      break;
    }
    total += released;
  } while (released == GC_BATCH);
  if (total > 0)
    NB_INFO("WK-GC", "released %zu ended %s%s", total, what,
            total == 1 ? "" : "s");
}

typedef struct orphan_walk {
  wk_janitor *j;
  st_redis *r;
  size_t removed;
} orphan_walk;

static int orphan_one(void *arg, const uint8_t hash[32]) {
  orphan_walk *o = arg;
  char hex[65];
  bool taken = false;
  nb_hex(hash, 32, hex);
  if (st_blob_orphan_take(o->r, hex, GONE_MS, &taken) != 0)
    return NIMBUS_EREDIS;
  if (!taken)
    return 0;
  if (remove_taken(o->j, o->r, hash, hex, "orphan blob"))
    o->removed++;
  return 0;
}

/* One pass of the orphan sweep over files older than max_age_ms. */
static void orphans(wk_janitor *j, st_redis *r, int64_t max_age_ms) {
  orphan_walk o = {.j = j, .r = r};
  int rc = st_blobstore_each_old(j->blobs, max_age_ms, orphan_one, &o);
  if (rc == NIMBUS_EREDIS)
    NB_WARN("WK-GC", "orphan sweep: %s", st_redis_errstr(r));
  else if (rc != 0)
    NB_WARN("WK-BLOB-IO", "orphan sweep: %s", st_blobstore_errstr());
  if (o.removed > 0)
    NB_INFO("WK-GC", "removed %zu stored file%s that no record names",
            o.removed, o.removed == 1 ? "" : "s");
}

static bool stopping(wk_janitor *j) {
  pthread_mutex_lock(&j->mu);
  bool stop = j->stop;
  pthread_mutex_unlock(&j->mu);
  return stop;
}

typedef struct pack_run {
  wk_janitor *j;
  st_redis *r;
  const char *hex;
  int64_t renewed;
} pack_run;

static int pack_progress(void *arg, uint64_t done, uint64_t total) {
  pack_run *p = arg;
  (void)done, (void)total;
  if (stopping(p->j))
    return NIMBUS_ECANCELED;
  int64_t now = nb_now_ms();
  if (now - p->renewed >= PACK_LEASE_MS / 3) {
    if (st_blob_pack_later(p->r, p->hex, now + PACK_LEASE_MS) != 0)
      NB_WARN("WK-PACK", "blob %s: cannot renew its lease: %s", p->hex,
              st_redis_errstr(p->r));
    p->renewed = now;
  }
  return 0;
}

/* Compresses the queued blobs that are due, until none is or the worker
 * stops. */
static void pack_queued(wk_janitor *j, st_redis *r) {
  while (!stopping(j)) {
    char hex[65];
    bool got = false;
    st_blob_meta m;
    if (st_blob_pack_take(r, nb_now_ms(), PACK_LEASE_MS, hex, &got) != 0 ||
        (got && st_blob_meta_read(r, hex, &m) != 0)) {
      NB_WARN("WK-PACK", "cannot read the queue of blobs to compress: %s",
              st_redis_errstr(r));
      return;
    }
    if (!got)
      return;
    if (!m.exists) { /* collected since */
      if (st_blob_pack_drop(r, hex) != 0)
        NB_WARN("WK-PACK", "blob %s: %s", hex, st_redis_errstr(r));
      continue;
    }
    uint8_t raw[32];
    (void)nb_unhex32(hex, raw);
    pack_run p = {.j = j, .r = r, .hex = hex, .renewed = nb_now_ms()};
    st_blob_pack_opts o = {.level = wk_share_zstd_level(),
                           .trial = true,
                           .progress = pack_progress,
                           .arg = &p};
    uint64_t stored = m.size;
    int64_t t0 = nb_mono_ms();
    int rc = st_blobstore_pack(j->blobs, raw, m.size, &o, &stored);
    int rrc = 0;
    if (rc == 0) {
      rrc = st_blob_stored_set(r, hex, stored, NULL);
      if (stored < m.size)
        NB_INFO("WK-PACK",
                "blob %s kept compressed: %llu bytes in %llu (%lld ms)", hex,
                (unsigned long long)m.size, (unsigned long long)stored,
                (long long)(nb_mono_ms() - t0));
    } else if (rc == NIMBUS_ECANCELED) {
      rrc = st_blob_pack_later(r, hex, nb_now_ms()); /* to the others */
    } else if (rc == NIMBUS_ENOTFOUND) {
      rrc = st_blob_pack_drop(r, hex);
    } else if (rc == NIMBUS_ENOSPC || rc == NIMBUS_ENOMEM) {
      /* Room on disk or in memory comes back: tried again later. */
      NB_WARN("WK-PACK",
              "blob %s: no room for its compressed form, tried "
              "again later: %s",
              hex,
              rc == NIMBUS_ENOMEM ? "out of memory" : st_blobstore_errstr());
      rrc = st_blob_pack_later(r, hex, nb_now_ms() + PACK_RETRY_FULL_MS);
    } else {
      /* Unreadable (blob.get reports it too), or its new form did not read
       * back as the blob: recorded as kept as it is, not tried again and
       * again. */
      NB_WARN("WK-PACK", "blob %s stays as it is: %s", hex,
              st_blobstore_errstr());
      rrc = st_blob_stored_set(r, hex, m.size, NULL);
    }
    if (rrc != 0) {
      NB_WARN("WK-PACK", "blob %s: %s", hex, st_redis_errstr(r));
      return;
    }
  }
}

static void *janitor_main(void *arg) {
  wk_janitor *j = arg;
  const wk_config *cfg = j->cfg;
  st_redis *r = NULL;
  char err[256];
  /* Abandoned staging: idle for upload_ttl plus a margin belongs to no
   * live upload (its records expire upload_ttl after its last put, which
   * follows the file's last write). */
  int64_t ttl = cfg->upload_ttl_ms;
  int64_t margin = ttl < 60000 ? ttl : 60000;
  /* Each job runs about ten times per period, at most once a minute. */
  int64_t every = (ttl < cfg->blob_ttl_ms ? ttl : cfg->blob_ttl_ms) / 10;
  every = every < 100 ? 100 : every > 60000 ? 60000 : every;
  unsigned pass = 0;
  int64_t next = 0; /* nb_mono_ms() of the next sweeps and collection */
  pthread_mutex_lock(&j->mu);
  while (!j->stop) {
    pthread_mutex_unlock(&j->mu);
    if (nb_mono_ms() >= next) {
      size_t swept = 0;
      if (st_blobstore_sweep(j->blobs, ttl + margin, &swept) != 0)
        NB_WARN("WK-BLOB-IO", "staging sweep: %s", st_blobstore_errstr());
      if (swept > 0)
        NB_INFO("WK-BLOB-SWEEP", "removed %zu abandoned staging files", swept);
      if (r == NULL &&
          st_redis_connect(cfg->redis_host, (int)cfg->redis_port,
                           cfg->redis_password, 2000, &r, err, sizeof err) != 0)
        NB_WARN("WK-REDIS-DOWN", "janitor: %s", err);
      if (r != NULL) {
        sweep_ended(r, st_share_sweep, "share");
        sweep_ended(r, st_result_sweep, "result");
      }
      if (r != NULL)
        collect(j, r);
      if (r != NULL && pass++ % 10 == 9)
        orphans(j, r, ttl + margin);
      next = nb_mono_ms() + every;
    }
    if (r != NULL)
      pack_queued(j, r);
    int64_t wait = next - nb_mono_ms();
    wait = wait < 1 ? 1 : wait > PACK_POLL_MS ? PACK_POLL_MS : wait;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (wait % 1000) * 1000000;
    until.tv_sec += wait / 1000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&j->mu);
    if (!j->stop)
      pthread_cond_timedwait(&j->cv, &j->mu, &until);
  }
  pthread_mutex_unlock(&j->mu);
  st_redis_free(r);
  return NULL;
}

int wk_janitor_start(const wk_config *cfg, st_blobstore *blobs,
                     wk_janitor **out) {
  wk_janitor *j = calloc(1, sizeof *j);
  if (j == NULL)
    return NIMBUS_ENOMEM;
  j->cfg = cfg;
  j->blobs = blobs;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  if (pthread_create(&j->thread, NULL, janitor_main, j) != 0) {
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
    return NIMBUS_ESYS;
  }
  *out = j;
  return 0;
}

void wk_janitor_stop(wk_janitor *j) {
  if (j == NULL)
    return;
  pthread_mutex_lock(&j->mu);
  j->stop = true;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  pthread_join(j->thread, NULL);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}
