/* nimbusctl agent: the operator's side of loading the agent onto
 * terminals (MISSION.md, Loading the agent; PROTOCOL.md, The agent
 * itself): publishing signed packages, listing and withdrawing them,
 * offering them to terminals, and what each terminal was offered and
 * runs. It writes only Redis and the blob store (st_agent.h); the workers
 * send the offers' notices (their agent family's tick), so no MQTT
 * account is needed here.
 *
 * A package is stored exactly as a module is (ctl_store_file: the blob
 * writer's path into the store), signed with the same key (nimbusctl
 * keygen) over PROTOCOL.md's statement, and refused before anything is
 * stored when its platform has the version already (and again, atomically,
 * when it is recorded). `offer --all` means every terminal account in the
 * accounts file (when one is found: --accounts, $NIMBUS_ACCOUNTS or
 * $NIMBUS_DIR/broker/accounts) together with every terminal that ever
 * reported its agent or was offered one; each is offered the newest
 * package of the platform it reported, or of --platform when it reported
 * none. Exit codes as the rest of nimbusctl: 0 done, 1 refused or failed,
 * 2 usage. */
#include "accounts.h"
#include "ctl_code.h"

#include "nb_semver.h"
#include "nb_sign.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_FAILED CTL_EXIT_FAILED
#define EXIT_USAGE CTL_EXIT_USAGE

const char ctl_agent_usage[] =
    "  nimbusctl agent publish FILE --version V --platform P --key KEYFILE\n"
    "                          [--notes TEXT]\n"
    "      Stores the agent package FILE for platform P (e.g. linux-x86_64)\n"
    "      as version V (a semantic version: 1.2.0, 1.3.0-rc.1), signed\n"
    "      with KEYFILE over PROTOCOL.md's statement. Every terminal may\n"
    "      then fetch it (agent.get, blob.get). A version the platform has\n"
    "      already is refused.\n"
    "  nimbusctl agent list [--platform P]\n"
    "      Prints each package: platform, version, size, SHA-256, when it\n"
    "      was published; in version order, the newest last.\n"
    "  nimbusctl agent withdraw P V\n"
    "      Withdraws version V of platform P: it is no longer answered nor\n"
    "      readable, and its blob is collected once nothing else holds it.\n"
    "  nimbusctl agent offer TERMINAL... | --all [--platform P] [--text T]\n"
    "      Offers each terminal the newest package of its platform (the one\n"
    "      it reported, else P): the workers send it the notice agent.offer\n"
    "      at once, and again reoffer_after_ms after a refusal. A terminal\n"
    "      that runs that version or a newer one is skipped. --all: every\n"
    "      terminal account of the accounts file (when found) and every\n"
    "      terminal that reported its agent or was offered one before.\n"
    "  nimbusctl agent status [TERMINAL]\n"
    "      Prints per terminal what it reported to run and its latest offer:\n"
    "      state (due, offered, refused, accepted, dropped, replaced), the\n"
    "      version offered, and when it was offered, accepted, refused and\n"
    "      is due again.\n";

/* ---- Helpers --------------------------------------------------------------
 */

static void saidf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void saidf(const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  ctl_say(what, NULL);
}

/* An ISO 8601 UTC time of ms since the epoch into out (cap >= 24), or "-"
 * for 0. */
static const char *when(int64_t ms, char *out, size_t cap) {
  if (ms <= 0) {
    nb_strlcpy(out, "-", cap);
    return out;
  }
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&s, &tm) == NULL ||
      strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    nb_strlcpy(out, "-", cap);
  return out;
}

static bool platform_ok(const char *p) {
  return p != NULL && st_agent_platform_valid(p, strlen(p));
}

static int finish(int code) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    ctl_say("cannot write to standard output", NULL);
    return EXIT_FAILED;
  }
  return code;
}

/* ---- publish --------------------------------------------------------------
 */

static int publish(const ctl_opts *o, const char *file) {
  char err[256], tag[128];
  if (o->platform == NULL || !platform_ok(o->platform)) {
    ctl_say("give --platform P: 1-64 of A-Z a-z 0-9 . _ - (linux-x86_64)",
            o->platform);
    return EXIT_USAGE;
  }
  if (o->version == NULL || !nb_semver_valid(o->version, strlen(o->version))) {
    ctl_say("give --version V: a semantic version such as 1.2.0 or "
            "1.3.0-rc.1 (semver.org)",
            o->version);
    return EXIT_USAGE;
  }
  const char *notes = o->notes != NULL ? o->notes : "";
  if (!st_agent_notes_valid(notes, strlen(notes))) {
    ctl_say("--notes: at most 2048 bytes of UTF-8 text (lines and tabs, no "
            "other control characters)",
            NULL);
    return EXIT_USAGE;
  }
  if (o->key == NULL) {
    ctl_say("give --key KEYFILE (nimbus.key of nimbusctl keygen)", NULL);
    return EXIT_USAGE;
  }
  if (o->data_dir == NULL) {
    ctl_say("give --data-dir D (or NIMBUS_DATA_DIR): the workers' blob store",
            NULL);
    return EXIT_USAGE;
  }
  uint8_t sec[NB_SIGN_SEC];
  if (nb_sign_sec_read(o->key, sec, err, sizeof err) != 0) {
    ctl_say("cannot use the key", err);
    return EXIT_FAILED;
  }
  int code = EXIT_FAILED;
  st_redis *r = NULL;
  ctl_stored f;
  memset(&f, 0, sizeof f);
  char **versions = NULL;
  size_t nv = 0;
  if ((code = ctl_redis(o, &r)) != 0)
    goto out;
  code = EXIT_FAILED;
  /* Refused before anything is stored; the record's script checks again. */
  if (st_agent_versions(r, o->platform, &versions, &nv) != 0) {
    ctl_say("cannot read the published versions", st_redis_errstr(r));
    goto out;
  }
  for (size_t i = 0; i < nv; i++)
    if (nb_semver_cmp(versions[i], o->version) == 0) {
      char what[256];
      snprintf(what, sizeof what,
               "platform %s already has version %s: publish a new version "
               "(or withdraw that one first)",
               o->platform, versions[i]);
      ctl_say(what, NULL);
      goto out;
    }
  snprintf(tag, sizeof tag, "agent.%s", o->platform);
  if ((code = ctl_store_file(o, r, file, tag, &f)) != 0)
    goto out;
  code = EXIT_FAILED;
  st_agent_pkg p;
  memset(&p, 0, sizeof p);
  p.exists = true;
  nb_strlcpy(p.platform, o->platform, sizeof p.platform);
  nb_strlcpy(p.version, o->version, sizeof p.version);
  nb_strlcpy(p.blob, f.hex, sizeof p.blob);
  nb_strlcpy(p.notes, notes, sizeof p.notes);
  p.size = f.size;
  p.ts = nb_now_ms();
  char stmt[512];
  size_t sn = nb_sign_statement(stmt, sizeof stmt, "nimbus-agent", p.platform,
                                p.version, p.size, p.blob);
  if (sn == 0 || nb_sign(stmt, sn, sec, p.sig) != 0) {
    ctl_say("cannot sign", NULL);
    goto out;
  }
  int rc = st_agent_publish(r, &p, f.sums, f.nsegs);
  if (rc == NIMBUS_ECONFLICT) {
    saidf("platform %s already has version %s: publish a new version (or "
          "withdraw that one first)",
          p.platform, p.version);
    goto out;
  }
  if (rc != 0) {
    ctl_say("cannot record the package",
            rc == NIMBUS_ETIMEDOUT ? "its blob was collected meanwhile: "
                                     "publish again"
                                   : st_redis_errstr(r));
    goto out;
  }
  printf("published agent %s %s: %llu bytes, sha256 %s\n", p.platform,
         p.version, (unsigned long long)p.size, p.blob);
  code = finish(0);
out:
  nb_sign_wipe(sec, sizeof sec);
  st_agent_list_free(versions, nv);
  ctl_stored_fini(&f);
  st_redis_free(r);
  return code;
}

/* ---- list, withdraw --------------------------------------------------------
 */

static int list_platform(st_redis *r, const char *platform) {
  char **v = NULL, t[32];
  size_t n = 0;
  if (st_agent_versions(r, platform, &v, &n) != 0) {
    ctl_say("cannot list the packages", st_redis_errstr(r));
    return EXIT_FAILED;
  }
  int code = 0;
  for (size_t i = 0; i < n && code == 0; i++) {
    st_agent_pkg p;
    if (!nb_semver_valid(v[i], strlen(v[i])))
      continue;
    if (st_agent_pkg_get(r, platform, v[i], &p) != 0) {
      ctl_say("cannot read a package", st_redis_errstr(r));
      code = EXIT_FAILED;
    } else if (p.exists) {
      printf("%s\t%s\t%llu\t%s\t%s\n", p.platform, p.version,
             (unsigned long long)p.size, p.blob, when(p.ts, t, sizeof t));
    }
  }
  st_agent_list_free(v, n);
  return code;
}

static int list(const ctl_opts *o) {
  if (o->platform != NULL && !platform_ok(o->platform)) {
    ctl_say("--platform: 1-64 of A-Z a-z 0-9 . _ -", o->platform);
    return EXIT_USAGE;
  }
  st_redis *r = NULL;
  int code = ctl_redis(o, &r);
  if (code != 0)
    return code;
  char **plats = NULL;
  size_t n = 0;
  if (o->platform != NULL) {
    code = list_platform(r, o->platform);
  } else if (st_agent_platforms(r, &plats, &n) != 0) {
    ctl_say("cannot list the platforms", st_redis_errstr(r));
    code = EXIT_FAILED;
  } else {
    for (size_t i = 0; i < n && code == 0; i++)
      if (platform_ok(plats[i]))
        code = list_platform(r, plats[i]);
  }
  st_agent_list_free(plats, n);
  st_redis_free(r);
  return finish(code);
}

static int withdraw(const ctl_opts *o, const char *platform,
                    const char *version) {
  if (!platform_ok(platform) || !nb_semver_valid(version, strlen(version))) {
    ctl_say("agent withdraw takes a platform (linux-x86_64) and a semantic "
            "version (1.2.0)",
            NULL);
    return EXIT_USAGE;
  }
  st_redis *r = NULL;
  int code = ctl_redis(o, &r);
  if (code != 0)
    return code;
  bool found = false;
  if (st_agent_withdraw(r, platform, version, nb_now_ms(), &found) != 0) {
    ctl_say("cannot withdraw the package", st_redis_errstr(r));
    code = EXIT_FAILED;
  } else if (!found) {
    saidf("platform %s has no version %s (nimbusctl agent list shows what "
          "there is)",
          platform, version);
    code = EXIT_FAILED;
  } else {
    printf("withdrew agent %s %s\n", platform, version);
    code = finish(0);
  }
  st_redis_free(r);
  return code;
}

/* ---- offer ----------------------------------------------------------------
 */

/* A set of terminal ids, kept sorted and unique. */
typedef struct names {
  char **v;
  size_t n, cap;
} names;

static int names_add(names *s, const char *id) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i], id) == 0)
      return 0;
  if (s->n == s->cap) {
    size_t cap = s->cap > 0 ? 2 * s->cap : 16;
    char **v = realloc(s->v, cap * sizeof *v);
    if (v == NULL)
      return NIMBUS_ENOMEM;
    s->v = v;
    s->cap = cap;
  }
  if ((s->v[s->n] = strdup(id)) == NULL)
    return NIMBUS_ENOMEM;
  s->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The accounts file as nimbusctl finds it, or NULL when none is named. */
static const char *accounts_path(const ctl_opts *o, char *buf, size_t cap) {
  const char *p = o->accounts;
  if (p == NULL || *p == '\0')
    p = getenv("NIMBUS_ACCOUNTS");
  if (p == NULL || *p == '\0') {
    const char *dir = getenv("NIMBUS_DIR");
    if (dir == NULL || *dir == '\0')
      return NULL;
    int n = snprintf(buf, cap, "%s/broker/accounts", dir);
    return n > 0 && (size_t)n < cap ? buf : NULL;
  }
  return p;
}

/* --all: the terminal accounts (when an accounts file is found) and the
 * terminals the cloud has an agent record of. */
static int all_terminals(const ctl_opts *o, st_redis *r, names *out) {
  char buf[4096], err[512];
  const char *path = accounts_path(o, buf, sizeof buf);
  if (path != NULL) {
    ba_accounts *t = NULL;
    int rc = ba_accounts_load(path, &t, NULL, err, sizeof err);
    if (rc != 0 && rc != NIMBUS_ENOTFOUND) {
      ctl_say("cannot read the accounts file", err);
      return EXIT_FAILED;
    }
    for (size_t i = 0; rc == 0 && i < t->n; i++)
      if (t->v[i].role == BA_ROLE_TERMINAL && names_add(out, t->v[i].name) != 0)
        rc = NIMBUS_ENOMEM;
    ba_accounts_free(t);
    if (rc == NIMBUS_ENOMEM) {
      ctl_say("out of memory", NULL);
      return EXIT_FAILED;
    }
  }
  char **known = NULL;
  size_t n = 0;
  if (st_agent_terminals(r, &known, &n) != 0) {
    ctl_say("cannot list the terminals", st_redis_errstr(r));
    return EXIT_FAILED;
  }
  int code = 0;
  for (size_t i = 0; i < n && code == 0; i++)
    if (nb_valid_terminal(known[i], strlen(known[i])) &&
        names_add(out, known[i]) != 0) {
      ctl_say("out of memory", NULL);
      code = EXIT_FAILED;
    }
  st_agent_list_free(known, n);
  if (out->n > 1)
    qsort(out->v, out->n, sizeof *out->v, cmp_str);
  return code;
}

/* Offers one terminal what its platform's newest package is. Returns 0
 * (offered, or skipped with a line saying why), or EXIT_FAILED. */
static int offer_one(const ctl_opts *o, st_redis *r, const char *terminal,
                     bool named) {
  st_agent_term t;
  st_agent_pkg p;
  if (st_agent_term_get(r, terminal, &t) != 0) {
    ctl_say("cannot read the terminal's record", st_redis_errstr(r));
    return EXIT_FAILED;
  }
  const char *platform = t.platform[0] != '\0' ? t.platform : o->platform;
  if (o->platform != NULL && t.platform[0] != '\0' &&
      strcmp(t.platform, o->platform) != 0) {
    printf("skipped %s: it runs the agent for %s, not %s\n", terminal,
           t.platform, o->platform);
    return 0;
  }
  if (platform == NULL) {
    if (!named) {
      printf("skipped %s: its platform is not known (it never reported an "
             "agent): give --platform P\n",
             terminal);
      return 0;
    }
    saidf("%s never reported its platform: give --platform P", terminal);
    return EXIT_FAILED;
  }
  if (st_agent_newest(r, platform, &p) != 0) {
    ctl_say("cannot read the packages", st_redis_errstr(r));
    return EXIT_FAILED;
  }
  if (!p.exists) {
    saidf("there is no agent package for platform %s (offering %s)", platform,
          terminal);
    return EXIT_FAILED;
  }
  if (t.installed[0] != '\0' && strcmp(t.platform, platform) == 0 &&
      nb_semver_cmp(t.installed, p.version) >= 0) {
    printf("skipped %s: it runs %s already (the newest is %s)\n", terminal,
           t.installed, p.version);
    return 0;
  }
  char id[ST_AGENT_OFFER_ID_MAX + 1];
  int rc = st_agent_offer_new(r, terminal, platform, p.version,
                              o->text != NULL ? o->text : "", nb_now_ms(), id);
  if (rc != 0) {
    ctl_say("cannot record the offer",
            rc == NIMBUS_EREDIS ? st_redis_errstr(r) : nimbus_strerror(rc));
    return EXIT_FAILED;
  }
  printf("offered %s: %s %s (offer %s)\n", terminal, platform, p.version, id);
  return 0;
}

static int offer(const ctl_opts *o, char **terms, int n) {
  if ((n > 0) == o->all) {
    ctl_say("agent offer takes terminal ids or --all (not both)", NULL);
    return EXIT_USAGE;
  }
  if (o->platform != NULL && !platform_ok(o->platform)) {
    ctl_say("--platform: 1-64 of A-Z a-z 0-9 . _ -", o->platform);
    return EXIT_USAGE;
  }
  if (o->text != NULL && (strlen(o->text) > ST_AGENT_TEXT_MAX ||
                          nb_text_problem(o->text, strlen(o->text)) != NULL)) {
    ctl_say("--text: at most 256 bytes of one line of UTF-8 text", NULL);
    return EXIT_USAGE;
  }
  for (int i = 0; i < n; i++)
    if (!nb_valid_terminal(terms[i], strlen(terms[i]))) {
      saidf("invalid terminal id \"%s\": 1-64 characters of [A-Za-z0-9._-]",
            terms[i]);
      return EXIT_USAGE;
    }
  st_redis *r = NULL;
  int code = ctl_redis(o, &r);
  if (code != 0)
    return code;
  names all = {0};
  if (o->all)
    code = all_terminals(o, r, &all);
  if (code == 0 && o->all && all.n == 0)
    printf("no terminal to offer to\n");
  int failed = 0;
  for (size_t i = 0; code == 0 && i < (o->all ? all.n : (size_t)n); i++)
    if (offer_one(o, r, o->all ? all.v[i] : terms[i], !o->all) != 0)
      failed = EXIT_FAILED;
  for (size_t i = 0; i < all.n; i++)
    free(all.v[i]);
  free(all.v);
  st_redis_free(r);
  return finish(code != 0 ? code : failed);
}

/* ---- status ---------------------------------------------------------------
 */

static int status(const ctl_opts *o, char **terms, int n) {
  if (n > 1) {
    ctl_say("agent status takes at most one terminal id", NULL);
    return EXIT_USAGE;
  }
  if (n == 1 && !nb_valid_terminal(terms[0], strlen(terms[0]))) {
    saidf("invalid terminal id \"%s\": 1-64 characters of [A-Za-z0-9._-]",
          terms[0]);
    return EXIT_USAGE;
  }
  st_redis *r = NULL;
  int code = ctl_redis(o, &r);
  if (code != 0)
    return code;
  char **list = NULL;
  size_t nl = 0;
  if (n == 0 && st_agent_terminals(r, &list, &nl) != 0) {
    ctl_say("cannot list the terminals", st_redis_errstr(r));
    st_redis_free(r);
    return EXIT_FAILED;
  }
  printf("TERMINAL\tPLATFORM\tINSTALLED\tREPORTED\tOFFER\tSTATE\tVERSION\t"
         "OFFERED\tACCEPTED\tREFUSED\tDUE\n");
  size_t count = n == 1 ? 1 : nl;
  for (size_t i = 0; i < count && code == 0; i++) {
    const char *id = n == 1 ? terms[0] : list[i];
    st_agent_term t;
    char a[32], b[32], c[32], d[32], e[32];
    if (!nb_valid_terminal(id, strlen(id)))
      continue;
    if (st_agent_term_get(r, id, &t) != 0) {
      ctl_say("cannot read a terminal's record", st_redis_errstr(r));
      code = EXIT_FAILED;
      break;
    }
    printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id,
           t.platform[0] != '\0' ? t.platform : "-",
           t.installed[0] != '\0' ? t.installed : "-",
           when(t.reported, a, sizeof a), t.offer[0] != '\0' ? t.offer : "-",
           st_offer_state_name(t.state), t.version[0] != '\0' ? t.version : "-",
           when(t.offered, b, sizeof b), when(t.accepted, c, sizeof c),
           when(t.refused, d, sizeof d), when(t.due, e, sizeof e));
  }
  st_agent_list_free(list, nl);
  st_redis_free(r);
  return finish(code);
}

/* ---- The command ----------------------------------------------------------
 */

int ctl_agent_main(const ctl_opts *o, char **pos, int n) {
  const char *verb = n > 0 ? pos[0] : "";
  int code = 0;
  if (strcmp(verb, "publish") == 0 && n == 2)
    return (code = ctl_opts_only(
                o, CTL_O_KEY | CTL_O_VERSION | CTL_O_PLATFORM | CTL_O_NOTES,
                "agent publish")) != 0
               ? code
               : publish(o, pos[1]);
  if (strcmp(verb, "list") == 0 && n == 1)
    return (code = ctl_opts_only(o, CTL_O_PLATFORM, "agent list")) != 0
               ? code
               : list(o);
  if (strcmp(verb, "withdraw") == 0 && n == 3)
    return (code = ctl_opts_only(o, 0, "agent withdraw")) != 0
               ? code
               : withdraw(o, pos[1], pos[2]);
  if (strcmp(verb, "offer") == 0)
    return (code = ctl_opts_only(o, CTL_O_ALL | CTL_O_PLATFORM | CTL_O_TEXT,
                                 "agent offer")) != 0
               ? code
               : offer(o, pos + 1, n - 1);
  if (strcmp(verb, "status") == 0)
    return (code = ctl_opts_only(o, 0, "agent status")) != 0
               ? code
               : status(o, pos + 1, n - 1);
  fputs("Usage:\n", stderr);
  fputs(ctl_agent_usage, stderr);
  return EXIT_USAGE;
}
