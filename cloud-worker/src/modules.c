/* Offload modules (wk_modules.h): a module is a shared object
 * nimbus-<name>.so whose one entry point, nimbus_family_v1 (wk_family.h),
 * returns a family serving process.<name>. The worker learns which
 * modules it serves without loading any (the `modules` option, or the
 * names of the files in modules_dir), announces their types, and loads a
 * module with dlopen the first time a task of its type arrives, so a
 * worker that only ever sees pings and backups never maps libvips.
 *
 * With modules_from_storage, a module missing from modules_dir is fetched
 * from the cloud's storage (published by `nimbusctl module publish`,
 * st_module.h): its record's Ed25519 signature over "nimbus-module\n<name>
 * \n<version>\n<size>\n<sha256>" must verify against the public key the
 * worker was configured with (module_key), and the copy written into
 * <data_dir>/modules must hash to the signed SHA-256, before it is
 * loaded. A module that is missing, fails a check, fails to load, is
 * built for another ABI or does not serve its type answers 503 with a
 * sentence naming the cause (logged once per attempt, tried again at most
 * every 10 s, so a module installed later is picked up); every other type
 * keeps working. A loaded module is never unloaded. */
#include "wk_modules.h"

#include "nb_log.h"
#include "nb_sign.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_module.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_MAX_ ST_MODULE_NAME_MAX
#define RETRY_LOAD_MS 10000

struct wk_module {
  char name[NAME_MAX_ + 1];
  char type[NAME_MAX_ + 9]; /* "process.<name>" */
  size_t index;
  pthread_mutex_t mu;
  /* Under mu until loaded; read-only afterwards (loaded is atomic). */
  _Atomic bool loaded;
  int64_t failed_at; /* ms of the last failed attempt, 0: none */
  char why[512];     /* its sentence */
  void *dl;
  const wk_family *fam;
  wk_handler_fn fn;
  char digest[65]; /* the SHA-256 of the file loaded, hex */
};

static wk_module mods[WK_MODULES_MAX];
static size_t nmods;
static wk_modules_config mcfg;
static uint8_t pubkey[NB_SIGN_PUB];

static bool name_ok(const char *s, size_t n) {
  if (n == 0 || n > NAME_MAX_)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
          s[i] == '_'))
      return false;
  return true;
}

static int add(const char *name, size_t n, wk_handler *handlers, size_t cap,
               wk_handler_fn fn, char *err, size_t errcap) {
  if (!name_ok(name, n)) {
    snprintf(err, errcap,
             "modules: \"%.*s\" is not a module name (a-z, 0-9, _; at most "
             "%d)",
             (int)n, name, NAME_MAX_);
    return NIMBUS_ECONFIG;
  }
  for (size_t i = 0; i < nmods; i++)
    if (strlen(mods[i].name) == n && memcmp(mods[i].name, name, n) == 0)
      return 0;
  if (nmods == WK_MODULES_MAX || nmods + 1 >= cap) {
    snprintf(err, errcap, "modules: more than %d modules", WK_MODULES_MAX);
    return NIMBUS_ECONFIG;
  }
  wk_module *m = &mods[nmods];
  memset(m, 0, sizeof *m);
  memcpy(m->name, name, n);
  m->name[n] = '\0';
  memcpy(m->type, "process.", 8);
  memcpy(m->type + 8, name, n);
  m->type[8 + n] = '\0';
  m->index = nmods;
  pthread_mutex_init(&m->mu, NULL);
  handlers[nmods] = (wk_handler){
      .type = m->type, .flags = WK_STATEFUL, .pool = "offload", .fn = fn};
  nmods++;
  handlers[nmods] = (wk_handler){.type = NULL};
  return 0;
}

int wk_modules_prepare(const wk_modules_config *cfg, wk_handler *handlers,
                       size_t cap, wk_handler_fn fn, char *err, size_t errcap) {
  mcfg = *cfg;
  nmods = 0;
  handlers[0] = (wk_handler){.type = NULL};
  if (mcfg.from_storage) {
    if (mcfg.key == NULL || *mcfg.key == '\0') {
      snprintf(err, errcap,
               "modules_from_storage needs module_key: the public key file "
               "(nimbus.pub from nimbusctl keygen)");
      return NIMBUS_ECONFIG;
    }
    char kerr[256];
    if (nb_sign_pub_read(mcfg.key, pubkey, kerr, sizeof kerr) != 0) {
      snprintf(err, errcap, "module_key: %s", kerr);
      return NIMBUS_ECONFIG;
    }
  }
  const char *p = mcfg.list;
  if (p != NULL && *p != '\0') {
    if (strcmp(p, "none") == 0)
      return 0;
    while (*p != '\0') {
      while (*p == ',' || *p == ' ')
        p++;
      size_t n = strcspn(p, ", ");
      if (n == 0)
        break;
      int rc = add(p, n, handlers, cap, fn, err, errcap);
      if (rc != 0)
        return rc;
      p += n;
    }
    return 0;
  }
  DIR *d = opendir(mcfg.dir);
  if (d == NULL)
    return 0; /* no modules installed: nothing to serve */
  const struct dirent *e;
  int rc = 0;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n > 10 && strncmp(e->d_name, "nimbus-", 7) == 0 &&
        strcmp(e->d_name + n - 3, ".so") == 0 && name_ok(e->d_name + 7, n - 10))
      rc = add(e->d_name + 7, n - 10, handlers, cap, fn, err, errcap);
  }
  closedir(d);
  return rc;
}

wk_module *wk_module_of(const char *type) {
  for (size_t i = 0; i < nmods; i++)
    if (strcmp(mods[i].type, type) == 0)
      return &mods[i];
  return NULL;
}

const char *wk_module_name(const wk_module *m) { return m->name; }

const char *wk_module_digest(const wk_module *m) { return m->digest; }

const char *wk_module_version(const wk_module *m) {
  return m->fam != NULL && m->fam->version != NULL ? m->fam->version : "";
}

/* ---- Fetching a module from storage -------------------------------------- */

/* The SHA-256 of the file open at fd, from its start, into out, and its
 * length into *size, read through buf (cap bytes). False when it cannot
 * be read. */
static bool fd_sha256(int fd, uint8_t *buf, size_t cap, uint8_t out[32],
                      uint64_t *size) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
  uint64_t off = 0;
  while (ok) {
    ssize_t n = pread(fd, buf, cap, (off_t)off);
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    ok = EVP_DigestUpdate(md, buf, (size_t)n) == 1;
    off += (uint64_t)n;
  }
  unsigned int hl = 0;
  ok = ok && EVP_DigestFinal_ex(md, out, &hl) == 1;
  EVP_MD_CTX_free(md);
  *size = off;
  return ok;
}

/* Copies the published module `rec` from the blob store into
 * <data_dir>/modules/nimbus-<name>-<sha256>.so, checking its SHA-256 on
 * the way (written to a temporary file of its own, fsynced, renamed); a
 * copy there already is hashed again before it is trusted, and one that
 * does not match is copied anew. path receives the file, *fd an open
 * descriptor of exactly the bytes checked, for the caller to load through
 * (/proc/self/fd) and close: no one replaces the file between the check
 * and the load. Returns 0, or an error with a sentence in msg. */
static int copy_out(wk_ctx *c, const st_module *rec, char *path, size_t cap,
                    int *fd_out, char *msg, size_t msgcap) {
  char dir[1024], tmp[1100];
  *fd_out = -1;
  snprintf(dir, sizeof dir, "%.1000s/modules", c->cfg->data_dir);
  snprintf(path, cap, "%s/nimbus-%s-%.64s.so", dir, rec->name, rec->blob);
  snprintf(tmp, sizeof tmp, "%s/.nimbus-%s.XXXXXX", dir, rec->name);
  uint8_t raw[32];
  if (nb_unhex32(rec->blob, raw) != 0) {
    snprintf(msg, msgcap, "the record of the %s module is damaged", rec->name);
    return NIMBUS_EPROTO;
  }
  uint8_t *buf = malloc(ST_SEGMENT);
  if (buf == NULL) {
    snprintf(msg, msgcap, "the worker is out of memory");
    return NIMBUS_ENOMEM;
  }
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    uint8_t had[32];
    uint64_t had_size = 0;
    if (fd_sha256(fd, buf, ST_SEGMENT, had, &had_size) &&
        had_size == rec->size && memcmp(had, raw, 32) == 0) {
      free(buf);
      *fd_out = fd;
      return 0; /* copied before, and still those bytes */
    }
    close(fd);
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(msg, msgcap, "cannot create %.200s: %s", dir, strerror(errno));
    free(buf);
    return NIMBUS_EIO;
  }
  fd = mkostemp(tmp, O_CLOEXEC);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int rc =
      fd >= 0 && md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
          ? 0
          : NIMBUS_EIO;
  for (uint64_t off = 0; rc == 0 && off < rec->size;) {
    size_t want =
        rec->size - off < ST_SEGMENT ? (size_t)(rec->size - off) : ST_SEGMENT;
    size_t got = 0;
    rc = st_blobstore_read(c->blobs, raw, off, buf, want, &got);
    if (rc == 0 && got != want)
      rc = NIMBUS_EIO;
    if (rc == 0 && (write(fd, buf, got) != (ssize_t)got ||
                    EVP_DigestUpdate(md, buf, got) != 1))
      rc = NIMBUS_EIO;
    off += got;
  }
  uint8_t got_hash[32];
  unsigned int hl = 0;
  if (rc == 0 && (EVP_DigestFinal_ex(md, got_hash, &hl) != 1 ||
                  memcmp(got_hash, raw, 32) != 0))
    rc = NIMBUS_EPROTO;
  if (rc == 0 && (fchmod(fd, 0600) != 0 || fsync(fd) != 0))
    rc = NIMBUS_EIO;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = NIMBUS_EIO;
  if (rc != 0) {
    if (fd >= 0) {
      (void)unlink(tmp);
      close(fd);
    }
    snprintf(msg, msgcap,
             rc == NIMBUS_EPROTO
                 ? "the %s module in storage does not match its SHA-256; "
                   "refused"
                 : "cannot copy the %s module out of storage",
             rec->name);
  } else {
    *fd_out = fd; /* the file written and checked, now at path */
  }
  EVP_MD_CTX_free(md);
  free(buf);
  return rc;
}

/* Finds module m in storage, checks its signature and copies it out:
 * path receives the file, *fd (caller closes) the bytes checked, to load.
 * Returns 0, or an error with msg. */
static int fetch(wk_module *m, wk_ctx *c, char *path, size_t cap, int *fd,
                 char *msg, size_t msgcap) {
  *fd = -1;
  st_module rec;
  if (st_module_get(c->redis, m->name, &rec) != 0) {
    snprintf(msg, msgcap, "the state store is unavailable");
    return NIMBUS_EREDIS;
  }
  if (!rec.exists) {
    snprintf(msg, msgcap,
             "the %s module is neither installed on this worker (%.200s) nor "
             "published in storage",
             m->name, mcfg.dir);
    return NIMBUS_ENOTFOUND;
  }
  char stmt[512];
  size_t n = nb_sign_statement(stmt, sizeof stmt, "nimbus-module", rec.name,
                               rec.version, rec.size, rec.blob);
  if (n == 0 || nb_sign_verify(stmt, n, rec.sig, pubkey) != 0) {
    snprintf(msg, msgcap,
             "the %s module in storage (version %s) does not carry a valid "
             "signature of the configured module_key; refused",
             m->name, rec.version);
    return NIMBUS_EAUTH;
  }
  int rc = copy_out(c, &rec, path, cap, fd, msg, msgcap);
  if (rc == 0) /* the bytes at *fd hash to the record's name */
    nb_strlcpy(m->digest, rec.blob, sizeof m->digest);
  return rc;
}

/* ---- Loading --------------------------------------------------------------
 */

/* Loads m (its lock held). Returns true when it is usable; else msg. */
static bool load(wk_module *m, wk_ctx *c, char *msg, size_t msgcap) {
  char path[1200], via[64] = "";
  int fd = -1;
  snprintf(path, sizeof path, "%.900s/nimbus-%s.so", mcfg.dir, m->name);
  if (access(path, F_OK) != 0 && mcfg.from_storage) {
    if (fetch(m, c, path, sizeof path, &fd, msg, msgcap) != 0)
      return false;
    /* The very bytes hashed, whatever the name points at by now. */
    snprintf(via, sizeof via, "/proc/self/fd/%d", fd);
  }
  const wk_family *f = NULL;
  wk_handler_fn fn = NULL;
  char init_err[200] = "";
  /* Its bytes' name joins the result cache's key (wk_module_digest): a
   * module built again serves nothing an older build computed. One
   * fetched from storage has it already (its blob's name). */
  if (fd < 0) {
    uint8_t buf[65536], d[32];
    uint64_t size = 0;
    m->digest[0] = '\0';
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0 &&
        fd_sha256(fd, buf, sizeof buf, d, &size))
      nb_hex(d, 32, m->digest);
  }
  /* RTLD_LOCAL: a module's libraries stay its own. */
  void *dl = dlopen(via[0] != '\0' ? via : path, RTLD_NOW | RTLD_LOCAL);
  if (fd >= 0)
    close(fd); /* the mapping holds the file */
  wk_family_entry_fn entry =
      dl != NULL ? (wk_family_entry_fn)dlsym(dl, WK_FAMILY_ENTRY) : NULL;
  if (dl == NULL) {
    snprintf(msg, msgcap,
             "the %s module is not installed on this worker or does not "
             "load (%.200s)",
             m->name, dlerror());
  } else if (entry == NULL || (f = entry()) == NULL) {
    snprintf(msg, msgcap, "the %s module (%.200s) has no entry point %s",
             m->name, path, WK_FAMILY_ENTRY);
  } else if (f->abi != WK_FAMILY_ABI) {
    snprintf(msg, msgcap,
             "the %s module (%.200s) was built for ABI %d; this worker has "
             "%d",
             m->name, path, f->abi, WK_FAMILY_ABI);
  } else if (f->tick != NULL) {
    /* A tick is handed the worker's own structs (wk.h): built-in only. */
    snprintf(msg, msgcap,
             "the %s module (%.200s) sets a tick, which only built-in "
             "families may",
             m->name, path);
  } else {
    for (const wk_handler *h = f->handlers; h != NULL && h->type; h++)
      if (strcmp(h->type, m->type) == 0)
        fn = h->fn;
    if (fn == NULL)
      snprintf(msg, msgcap, "the %s module (%.200s) does not serve %s", m->name,
               path, m->type);
    else if (f->init != NULL && f->init(&wk_host, init_err, sizeof init_err))
      snprintf(msg, msgcap, "the %s module failed to start: %s", m->name,
               init_err);
  }
  if (msg[0] != '\0')
    return false; /* a module that failed stays mapped if it was: its init
                     may have run part way */
  m->dl = dl;
  m->fam = f;
  m->fn = fn;
  NB_INFO("WK-MODULE", "loaded the %s module (%s), version %s", m->name, path,
          f->version != NULL ? f->version : "-");
  return true;
}

/* ---- Per-thread state ------------------------------------------------------
 * A module's thread_init runs on a pool thread the first time that thread
 * runs one of its tasks, and its thread_fini when the thread ends. */

typedef struct modules_tstate {
  bool inited[WK_MODULES_MAX];
  void *state[WK_MODULES_MAX];
} modules_tstate;

int wk_modules_thread_init(void **tstate) {
  *tstate = calloc(1, sizeof(modules_tstate));
  return *tstate != NULL ? 0 : NIMBUS_ENOMEM;
}

void wk_modules_thread_fini(void *tstate) {
  modules_tstate *ts = tstate;
  if (ts == NULL)
    return;
  for (size_t i = 0; i < nmods; i++)
    if (ts->inited[i] && mods[i].fam->thread_fini != NULL)
      mods[i].fam->thread_fini(ts->state[i]);
  free(ts);
}

bool wk_module_get(wk_module *m, wk_ctx *c, void *tstate, wk_handler_fn *fn,
                   void **mstate, char *why, size_t whycap) {
  if (!m->loaded) {
    pthread_mutex_lock(&m->mu);
    bool ok = m->loaded;
    int64_t now = nb_now_ms();
    if (!ok && m->failed_at != 0 && now - m->failed_at < RETRY_LOAD_MS) {
      nb_strlcpy(why, m->why, whycap);
    } else if (!ok) {
      char msg[512] = "";
      ok = load(m, c, msg, sizeof msg);
      if (ok) {
        m->loaded = true;
      } else {
        m->failed_at = now;
        nb_strlcpy(m->why, msg, sizeof m->why);
        nb_strlcpy(why, msg, whycap);
        NB_WARN("WK-MODULE", "%s", msg);
      }
    }
    pthread_mutex_unlock(&m->mu);
    if (!ok)
      return false;
  }
  modules_tstate *ts = tstate;
  if (!ts->inited[m->index]) {
    if (m->fam->thread_init != NULL &&
        m->fam->thread_init(&ts->state[m->index]) != 0) {
      snprintf(why, whycap, "the %s module could not start on this thread",
               m->name);
      return false;
    }
    ts->inited[m->index] = true;
  }
  *fn = m->fn;
  *mstate = ts->state[m->index];
  return true;
}

void wk_modules_fini(void) {
  for (size_t i = 0; i < nmods; i++)
    if (mods[i].loaded && mods[i].fam->fini != NULL)
      mods[i].fam->fini();
}
