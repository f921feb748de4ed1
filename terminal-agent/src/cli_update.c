/* nimbus-agent's verbs for loading the agent itself (README, Loading the
 * agent): `version`, `update` (agent.get, then the library's install:
 * nimbus_agent_install, or its rollback), and the offers `listen` answers
 * (the library's offer callback; cli_share.c's listen calls in here). A
 * thin front end: every check and file operation is the library's. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_json.h"
#include "bk.h"
#include "cli.h"
#include "nb_semver.h"
#include "nb_util.h"

const char cli_usage_version[] =
    "Usage: nimbus-agent version [--json]\n"
    "\n"
    "Prints the version the agent runs (its library's, libnimbus-agent)\n"
    "and the platform it was built for, e.g.\n"
    "  nimbus-agent 0.1.0 (linux-x86_64)\n"
    "and, when it runs from an install directory (or --install-dir names\n"
    "one), which versions are current and previous there. On a pipe (or\n"
    "--json) one JSON object: version, platform, and install_dir, current,\n"
    "previous when known.\n";

const char cli_usage_update[] =
    "Usage: nimbus-agent update [--check] [--allow-downgrade]\n"
    "                           [--install-dir DIR] [--key nimbus.pub]\n"
    "       nimbus-agent update --rollback [--install-dir DIR]\n"
    "\n"
    "Asks the cloud for the newest agent of this platform (agent.get) and,\n"
    "when it is newer than the running one and the one installed in DIR,\n"
    "downloads it (resumable, verified; a progress bar on a terminal),\n"
    "checks its size, SHA-256 and Ed25519 signature against the public\n"
    "key, unpacks it into DIR/versions/<version>/ and points DIR/current\n"
    "at it (DIR/previous at what ran before), then tells the cloud the\n"
    "version it runs (agent.report). A package that fails a check\n"
    "installs nothing. Run the agent as DIR/current/bin/nimbus-agent.\n"
    "\n"
    "  --check            only say whether an update is available\n"
    "  --allow-downgrade  install the cloud's newest even when it is not\n"
    "                     newer than the running or installed version\n"
    "  --rollback         point current back at the previous version (and\n"
    "                     tell the cloud, when a terminal is configured)\n"
    "  --install-dir DIR  where (default: the install directory this\n"
    "                     binary runs from, DIR/versions/V/bin)\n"
    "  --key FILE         the public key (64 hex digits, nimbusctl keygen's\n"
    "                     nimbus.pub; default DIR/nimbus.pub, else the key\n"
    "                     compiled in with -DNIMBUS_AGENT_PUBKEY)\n"
    "\n"
    "On a pipe (or --json) one JSON object: up_to_date, or available with\n"
    "version, size, notes (--check), or installed, previous, install_dir,\n"
    "already, reported, received (bytes downloaded: less than the size\n"
    "when an interrupted download was resumed).\n"
    "\n"
    "Exit status as for nimbus-agent --help; a refused package:\n"
    "  10  size check failed (not the size it was signed with, or too big)\n"
    "  11  sha256 check failed (other bytes than those signed)\n"
    "  12  signature check failed (not signed by the key: tampered, or\n"
    "      another key)\n"
    "  13  archive check failed (damaged, or unsafe: a link, a device, an\n"
    "      absolute path, \"..\", too large; or no bin/nimbus-agent)\n"
    "  14  refused: not newer than the running or installed version\n"
    "      (without --allow-downgrade), or for another platform\n"
    "and 1 for no package for this platform, or no previous version to\n"
    "roll back to.\n";

/* ---- The install directory ------------------------------------------------
 */

/* --install-dir, else the directory this binary runs from when that is an
 * install (DIR/versions/V/bin/nimbus-agent), into out (cap bytes); ""
 * when neither. */
static void up_install_dir(const cli_cfg *cfg, char *out, size_t cap) {
  out[0] = '\0';
  if (cfg->install_dir[0] != '\0') {
    nb_strlcpy(out, cfg->install_dir, cap);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return;
  exe[n] = '\0';
  /* .../D/versions/V/bin/nimbus-agent: three slashes back is D. */
  char *cut = exe + n;
  for (int i = 0; i < 4 && cut != NULL; i++) {
    *cut = '\0';
    cut = strrchr(exe, '/');
  }
  if (cut == NULL || strcmp(cut, "/versions") != 0)
    return;
  *cut = '\0';
  nb_strlcpy(out, exe[0] != '\0' ? exe : "/", cap);
}

static bool up_table(const cli_cfg *cfg) {
  return !cfg->json && isatty(STDOUT_FILENO);
}

/* The exit status of a failed install (rc from nimbus_agent_install). */
static int up_install_status(int rc, const nimbus_install_result *r) {
  if (rc == NIMBUS_EAUTH) {
    switch (r->check) {
    case NIMBUS_CHECK_SIZE:
      return CLI_CHECK_SIZE;
    case NIMBUS_CHECK_SHA256:
      return CLI_CHECK_SHA256;
    case NIMBUS_CHECK_SIGNATURE:
      return CLI_CHECK_SIGNATURE;
    case NIMBUS_CHECK_ARCHIVE:
      return CLI_CHECK_ARCHIVE;
    case NIMBUS_CHECK_VERSION:
      return CLI_CHECK_VERSION;
    default:
      break;
    }
  }
  return rc == NIMBUS_ETIMEDOUT                       ? CLI_TIMEOUT
         : rc == NIMBUS_EREFUSED                      ? CLI_CONNECT
         : rc == NIMBUS_ECANCELED                     ? bk_signal_status()
         : rc == NIMBUS_ENOTFOUND || rc == NIMBUS_EIO ? CLI_CLOUD_ERROR
                                                      : CLI_USAGE;
}

/* Installs pkg into dir (nimbus_agent_install), says how it went, and
 * adds the outcome to j when it is not NULL. Returns the exit status. */
static int up_install(const cli_cfg *cfg, nimbus_agent *a,
                      const nimbus_agent_pkg *pkg, const char *dir, cJSON *j) {
  bk_progress prog;
  bk_progress_init(&prog, cli_progress_mode(cfg), stderr);
  bk_progress_phase(&prog, "download", pkg->size, 1);
  nimbus_install_opts o;
  nimbus_install_opts_init(&o);
  o.install_dir = dir;
  o.key_path = cfg->key[0] != '\0' ? cfg->key : NULL;
  o.allow_downgrade = cfg->allow_downgrade;
  o.jobs = (int)cfg->jobs;
  o.timeout_ms = (int)cfg->timeout;
  o.on_progress = bk_progress_bytes;
  o.ctx = &prog;
  o.stop = bk_stopped;
  nimbus_install_result r;
  int rc = nimbus_agent_install(a, pkg, &o, &r);
  if (rc == 0 && !r.already) {
    prog.bytes_done = prog.bytes_total = pkg->size;
    prog.files_done = 1;
    bk_progress_finish(&prog);
  } else {
    bk_progress_clear(&prog);
  }
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: nimbus-agent %s not installed: %s\n",
            pkg->version, r.error);
    return up_install_status(rc, &r);
  }
  if (!r.reported)
    fprintf(stderr, "nimbus-agent: installed, but the cloud was not told: %s\n",
            r.report_error);
  if (j == NULL) {
    char bytes[32];
    bk_fmt_bytes(pkg->size, bytes, sizeof bytes);
    if (r.already)
      printf("nimbus-agent %s is installed already in %s\n", r.version, dir);
    else
      printf("installed nimbus-agent %s (%s) in %s/versions/%s%s%s\n",
             r.version, bytes, dir, r.version,
             r.previous[0] != '\0' ? "; previous: " : "", r.previous);
    printf("  run it as %s/current/bin/nimbus-agent\n", dir);
  } else {
    cJSON_AddStringToObject(j, "installed", r.version);
    cJSON_AddStringToObject(j, "previous", r.previous);
    cJSON_AddStringToObject(j, "install_dir", dir);
    cJSON_AddBoolToObject(j, "already", r.already);
    cJSON_AddBoolToObject(j, "reported", r.reported);
    cJSON_AddNumberToObject(j, "received", (double)r.bytes_received);
  }
  return CLI_OK;
}

/* ---- version --------------------------------------------------------------
 */

int cli_version(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("version takes no arguments");
  char dir[PATH_MAX], cur[65] = "", prev[65] = "";
  up_install_dir(cfg, dir, sizeof dir);
  bool installed =
      dir[0] != '\0' && nimbus_agent_installed(dir, cur, prev) == 0;
  if (up_table(cfg)) {
    printf("nimbus-agent %s (%s)\n", nimbus_agent_version(),
           nimbus_agent_platform());
    if (installed)
      printf("  install directory %s: current %s, previous %s\n", dir,
             cur[0] != '\0' ? cur : "none", prev[0] != '\0' ? prev : "none");
    return CLI_OK;
  }
  cJSON *j = cJSON_CreateObject();
  if (j == NULL)
    return cli_usage_error("out of memory");
  cJSON_AddStringToObject(j, "version", nimbus_agent_version());
  cJSON_AddStringToObject(j, "platform", nimbus_agent_platform());
  if (installed) {
    cJSON_AddStringToObject(j, "install_dir", dir);
    cJSON_AddStringToObject(j, "current", cur);
    cJSON_AddStringToObject(j, "previous", prev);
  }
  int status = cli_print_json(j) == 0 ? CLI_OK : CLI_USAGE;
  cJSON_Delete(j);
  return status;
}

/* ---- update ---------------------------------------------------------------
 */

static int up_rollback(cli_cfg *cfg, const char *dir, bool table) {
  nimbus_install_result r;
  int rc = nimbus_agent_rollback(dir, &r);
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: no rollback: %s\n", r.error);
    return rc == NIMBUS_ENOTFOUND ? CLI_CLOUD_ERROR : CLI_USAGE;
  }
  /* Tell the cloud, when there is a terminal to tell it as. */
  bool reported = false;
  if (cfg->terminal[0] != '\0' && cfg->password[0] != '\0') {
    nimbus_agent *a = NULL;
    char err[256];
    if (cli_connect(cfg, 1, CLI_BULK_RESEND_MS, CLI_BULK_RESEND_MAX_MS, &a) ==
        CLI_OK) {
      reported = nimbus_agent_report(a, NULL, r.version, (int)cfg->timeout, err,
                                     sizeof err) == 0;
      if (!reported)
        fprintf(stderr,
                "nimbus-agent: rolled back, but the cloud was not "
                "told: %s\n",
                err);
      nimbus_agent_free(a);
    }
  }
  if (table) {
    printf("rolled back to nimbus-agent %s in %s (previous: %s)\n", r.version,
           dir, r.previous[0] != '\0' ? r.previous : "none");
    return CLI_OK;
  }
  cJSON *j = cJSON_CreateObject();
  if (j == NULL)
    return cli_usage_error("out of memory");
  cJSON_AddStringToObject(j, "current", r.version);
  cJSON_AddStringToObject(j, "previous", r.previous);
  cJSON_AddStringToObject(j, "install_dir", dir);
  cJSON_AddBoolToObject(j, "reported", reported);
  int status = cli_print_json(j) == 0 ? CLI_OK : CLI_USAGE;
  cJSON_Delete(j);
  return status;
}

/* The version the cloud is told this terminal has: the running one, or
 * the installed current when that is newer (an agent that installed an
 * update and runs on until it is started again), so that the cloud
 * neither offers again what is installed nor answers with a version
 * between the two (nimbus_agent_install would refuse it). */
static const char *up_have(const char *dir, char buf[65]) {
  const char *running = nimbus_agent_version();
  char cur[65];
  if (dir[0] != '\0' && nimbus_agent_installed(dir, cur, NULL) == 0 &&
      cur[0] != '\0' && nb_semver_cmp(cur, running) > 0) {
    memcpy(buf, cur, sizeof cur);
    return buf;
  }
  return running;
}

/* Shows every control character of s (C0, DEL, and C1 as UTF-8) as '?',
 * in place: the cloud's free text (an offer's words, a package's notes)
 * is not signed, and a terminal must not take it for escape sequences. */
static void up_clean(char *s) {
  for (unsigned char *p = (unsigned char *)s; *p != '\0'; p++) {
    if (*p < 0x20 || *p == 0x7f)
      *p = '?';
    else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
      p[0] = p[1] = '?';
  }
}

static int up_get_failed(int rc, const char *err) {
  fprintf(stderr, "nimbus-agent: %s\n", err);
  return rc == NIMBUS_ETIMEDOUT  ? CLI_TIMEOUT
         : rc == NIMBUS_EREFUSED ? CLI_CONNECT
         : rc == NIMBUS_EINVAL   ? CLI_USAGE
                                 : CLI_CLOUD_ERROR;
}

int cli_update(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("update takes no arguments");
  if (cfg->rollback && (cfg->check || cfg->allow_downgrade))
    return cli_usage_error("--rollback goes alone (no --check, no "
                           "--allow-downgrade)");
  bool table = up_table(cfg);
  char dir[PATH_MAX];
  up_install_dir(cfg, dir, sizeof dir);
  if (dir[0] == '\0' && !cfg->check)
    return cli_usage_error("no install directory: give --install-dir DIR "
                           "(or run DIR/current/bin/nimbus-agent)");
  if (cfg->rollback)
    return up_rollback(cfg, dir, table);

  bk_catch_signals();
  nimbus_agent *a = NULL;
  int status = cli_connect(cfg, (int)cfg->jobs + 2, CLI_BULK_RESEND_MS,
                           CLI_BULK_RESEND_MAX_MS, &a);
  if (status != CLI_OK)
    return status;
  char hbuf[65];
  const char *running = up_have(dir, hbuf);
  nimbus_agent_pkg pkg;
  char err[512];
  /* With --allow-downgrade the cloud is not told what runs, so that it
   * answers its newest whatever that is. */
  int rc = nimbus_agent_get(a, NULL, cfg->allow_downgrade ? NULL : running,
                            (int)cfg->timeout, &pkg, err, sizeof err);
  cJSON *j = table ? NULL : cJSON_CreateObject();
  if (rc != 0) {
    status = up_get_failed(rc, err);
    goto out;
  }
  if (!table && j == NULL) {
    status = cli_usage_error("out of memory");
    goto out;
  }
  if (pkg.up_to_date || !pkg.found) {
    if (table)
      printf("up to date: nimbus-agent %s (%s) is the newest\n", running,
             nimbus_agent_platform());
    else {
      cJSON_AddBoolToObject(j, "up_to_date", true);
      cJSON_AddStringToObject(j, "running", nimbus_agent_version());
    }
  } else if (cfg->check) {
    char bytes[32];
    bk_fmt_bytes(pkg.size, bytes, sizeof bytes);
    if (table) {
      printf("update available: nimbus-agent %s (%s), %s %s\n", pkg.version,
             bytes, running == hbuf ? "installed" : "running", running);
      up_clean(pkg.notes);
      if (pkg.notes[0] != '\0')
        printf("  %s\n", pkg.notes);
    } else {
      cJSON_AddBoolToObject(j, "available", true);
      cJSON_AddStringToObject(j, "version", pkg.version);
      cJSON_AddNumberToObject(j, "size", (double)pkg.size);
      cJSON_AddStringToObject(j, "notes", pkg.notes);
      cJSON_AddStringToObject(j, "running", nimbus_agent_version());
    }
  } else {
    status = up_install(cfg, a, &pkg, dir, j);
  }
  if (status == CLI_OK && j != NULL && cli_print_json(j) != 0)
    status = CLI_USAGE;
out:
  cJSON_Delete(j);
  nimbus_agent_free(a);
  fflush(stdout);
  return status;
}

/* ---- Offers (listen) ------------------------------------------------------
 */

typedef struct up_offer {
  struct up_offer *next;
  char offer[65], platform[65], version[65];
  char *text;
  int64_t size;
} up_offer;

struct cli_offers {
  pthread_mutex_t mu;
  up_offer *head, *tail; /* guarded by mu */
  cli_cfg *cfg;
  bool table, ask;
  atomic_llong *seen;
  char dir[PATH_MAX];
};

int cli_offers_new(cli_cfg *cfg, bool table, atomic_llong *seen,
                   cli_offers **out) {
  if (cfg->accept && cfg->refuse)
    return cli_usage_error("--accept and --refuse exclude each other");
  cli_offers *q = calloc(1, sizeof *q);
  if (q == NULL)
    return cli_usage_error("out of memory");
  pthread_mutex_init(&q->mu, NULL);
  q->cfg = cfg;
  q->table = table;
  q->seen = seen;
  up_install_dir(cfg, q->dir, sizeof q->dir);
  /* Asked on a terminal only with somewhere to install: else shown. */
  q->ask = table && !cfg->accept && !cfg->refuse && isatty(STDIN_FILENO) &&
           q->dir[0] != '\0';
  if (cfg->accept && q->dir[0] == '\0') {
    cli_offers_free(q);
    return cli_usage_error("listen installs accepted offers: give "
                           "--install-dir DIR (or run "
                           "DIR/current/bin/nimbus-agent)");
  }
  *out = q;
  return CLI_OK;
}

void cli_offers_free(cli_offers *q) {
  if (q == NULL)
    return;
  for (up_offer *o = q->head, *n; o != NULL; o = n) {
    n = o->next;
    free(o->text);
    free(o);
  }
  pthread_mutex_destroy(&q->mu);
  free(q);
}

/* On the agent's thread: a copy goes to the main thread's queue. */
void cli_offers_cb(void *ctx, const nimbus_agent_offer *off) {
  cli_offers *q = ctx;
  up_offer *o = calloc(1, sizeof *o);
  if (o == NULL || (o->text = strdup(off->text)) == NULL) {
    free(o);
    return;
  }
  nb_strlcpy(o->offer, off->offer, sizeof o->offer);
  nb_strlcpy(o->platform, off->platform, sizeof o->platform);
  nb_strlcpy(o->version, off->version, sizeof o->version);
  o->size = off->size;
  pthread_mutex_lock(&q->mu);
  if (q->tail != NULL)
    q->tail->next = o;
  else
    q->head = o;
  q->tail = o;
  pthread_mutex_unlock(&q->mu);
}

/* y or n from the person at the terminal; false on anything else. */
static bool up_ask(const up_offer *o) {
  char bytes[32], line[64];
  bk_fmt_bytes(o->size, bytes, sizeof bytes);
  printf("Install nimbus-agent %s (%s)? [y/N] ", o->version, bytes);
  fflush(stdout);
  if (fgets(line, sizeof line, stdin) == NULL)
    return false;
  return line[0] == 'y' || line[0] == 'Y';
}

/* The answer to an accepted offer names another version than the one
 * the person said yes to: asked about that one. */
static bool up_ask_again(const up_offer *o, const nimbus_agent_pkg *pkg) {
  up_offer now = *o;
  nb_strlcpy(now.version, pkg->version, sizeof now.version);
  now.size = pkg->size;
  printf("the cloud now has nimbus-agent %s instead of %s\n", pkg->version,
         o->version);
  return up_ask(&now);
}

/* One offer: shown, answered (or not), installed when accepted. */
static int up_offer_handle(cli_offers *q, nimbus_agent *a, const up_offer *o) {
  cli_cfg *cfg = q->cfg;
  char bytes[32];
  bk_fmt_bytes(o->size, bytes, sizeof bytes);
  if (q->table) {
    up_clean(o->text);
    printf("the cloud offers nimbus-agent %s for %s (%s)%s%s\n", o->version,
           o->platform, bytes, o->text[0] != '\0' ? ": " : "", o->text);
  } else {
    cJSON *n = cJSON_CreateObject();
    if (n != NULL) {
      cJSON_AddNumberToObject(n, "v", 1);
      cJSON_AddStringToObject(n, "kind", "agent.offer");
      cJSON_AddStringToObject(n, "offer", o->offer);
      cJSON_AddStringToObject(n, "platform", o->platform);
      cJSON_AddStringToObject(n, "version", o->version);
      cJSON_AddNumberToObject(n, "size", (double)o->size);
      cJSON_AddStringToObject(n, "text", o->text);
      (void)cli_print_json(n);
    }
    cJSON_Delete(n);
  }
  bool accept;
  if (cfg->accept || cfg->refuse)
    accept = cfg->accept;
  else if (q->ask)
    accept = up_ask(o);
  else {
    /* On a pipe, unasked: no answer. */
    if (q->table)
      printf("  (not answered: nimbus-agent listen --install-dir DIR asks, "
             "--accept or --refuse answers)\n");
    return CLI_OK;
  }
  nimbus_agent_pkg pkg;
  char err[512], hbuf[65];
  int rc = nimbus_offer_answer(a, o->offer, accept, NULL, up_have(q->dir, hbuf),
                               (int)cfg->timeout, &pkg, err, sizeof err);
  if (rc != 0)
    return up_get_failed(rc, err);
  cJSON *j = q->table ? NULL : cJSON_CreateObject();
  if (j != NULL) {
    cJSON_AddStringToObject(j, "offer", o->offer);
    cJSON_AddStringToObject(j, "answer", accept ? "accepted" : "refused");
  }
  int status = CLI_OK;
  if (!accept) {
    if (q->table)
      printf("refused: the cloud offers it again later\n");
  } else if (!pkg.found) {
    if (q->table)
      printf("nothing to install: %s\n",
             pkg.up_to_date ? "this agent runs the newest already"
                            : "the offer is over, or its package gone");
    else if (j != NULL)
      cJSON_AddBoolToObject(j, "up_to_date", pkg.up_to_date);
  } else if (strcmp(pkg.version, o->version) != 0 &&
             !(q->ask && up_ask_again(o, &pkg))) {
    /* The answer names the newest package, which may be another than
     * the one offered (published since): a person who said yes to one
     * version is asked again; with --accept any is taken. */
    if (q->table)
      printf("not installed: the cloud now has nimbus-agent %s, not the %s "
             "offered (nimbus-agent update installs the newest)\n",
             pkg.version, o->version);
    else if (j != NULL)
      cJSON_AddStringToObject(j, "not_installed", pkg.version);
  } else {
    status = up_install(cfg, a, &pkg, q->dir, j);
  }
  if (j != NULL)
    (void)cli_print_json(j);
  cJSON_Delete(j);
  fflush(stdout);
  return status;
}

int cli_offers_step(cli_offers *q, nimbus_agent *a) {
  int status = CLI_OK;
  for (;;) {
    pthread_mutex_lock(&q->mu);
    up_offer *o = q->head;
    if (o != NULL && (q->head = o->next) == NULL)
      q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    if (o == NULL)
      break;
    int st = up_offer_handle(q, a, o);
    if (status == CLI_OK)
      status = st;
    free(o->text);
    free(o);
    atomic_fetch_add(q->seen, 1);
  }
  return status;
}
