/* nimbusctl's commands for code the cloud hands out: the signing key pair
 * (`keygen`) and offload modules kept in the cloud's storage (`module
 * publish|list`), which workers started with modules_from_storage fetch
 * on the first task of their type and load only once the signature checks
 * (cloud-worker/src/modules.c); and what the agent commands (`agent ...`,
 * ctl_agent.c) share with them: one option table, the way into Redis, and
 * the way a file becomes a blob.
 *
 * Publishing writes the file into the blob store (data_dir) through the
 * same writer the workers use for the blobs they make (st_blob_writer:
 * staged, hashed, moved), then records it in Redis with its signature;
 * the secret key is read from its file and never stored anywhere else.
 * Exit codes as the rest of nimbusctl: 0 done, 1 refused or failed, 2
 * usage. */
#include "ctl_code.h"

#include "nb_sign.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st.h"
#include "st_blob.h"
#include "st_module.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_FAILED CTL_EXIT_FAILED
#define EXIT_USAGE CTL_EXIT_USAGE

static const char usage_text[] =
    "Usage:\n"
    "  nimbusctl keygen DIR\n"
    "      Makes an Ed25519 key pair: DIR/nimbus.key (the secret key, mode\n"
    "      0600: keep it off the cloud's machines if you can) and\n"
    "      DIR/nimbus.pub (give it to workers as module_key). An existing\n"
    "      key is never replaced.\n"
    "  nimbusctl module publish FILE --version V --key KEYFILE [--name N]\n"
    "      Stores the offload module FILE (nimbus-<name>.so) in the cloud's\n"
    "      storage, signed with KEYFILE (nimbus.key), as module N (default:\n"
    "      the <name> of the file name) version V. Workers started with\n"
    "      modules_from_storage = true that lack the module fetch it, check\n"
    "      its SHA-256 and signature against module_key, and load it. A new\n"
    "      publication of the same name replaces the old one.\n"
    "  nimbusctl module list\n"
    "      Prints each published module: name, version, size, SHA-256.\n";

static const char usage_storage[] =
    "Storage options (also for the worker: the same environment):\n"
    "  --data-dir D     the blob store ($NIMBUS_DATA_DIR)\n"
    "  --redis-host H   ($NIMBUS_REDIS_HOST, default 127.0.0.1)\n"
    "  --redis-port P   ($NIMBUS_REDIS_PORT, default 6379)\n"
    "  --redis-password-env VAR  read Redis's password from $VAR\n";

typedef ctl_opts opts;

void ctl_say(const char *what, const char *detail) {
  fprintf(stderr, "nimbusctl: %s%s%s\n", what, detail != NULL ? ": " : "",
          detail != NULL ? detail : "");
}
#define say ctl_say

static void usage(FILE *fp) {
  fputs(usage_text, fp);
  fputs(ctl_agent_usage, fp);
  fputs(usage_storage, fp);
}

int ctl_opts_only(const ctl_opts *o, unsigned allowed, const char *command) {
  static const struct {
    unsigned bit;
    const char *flag;
  } flags[] = {{CTL_O_KEY, "--key"},     {CTL_O_VERSION, "--version"},
               {CTL_O_NAME, "--name"},   {CTL_O_PLATFORM, "--platform"},
               {CTL_O_NOTES, "--notes"}, {CTL_O_TEXT, "--text"},
               {CTL_O_ALL, "--all"}};
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if ((o->given & flags[i].bit) != 0 && (allowed & flags[i].bit) == 0) {
      char what[128];
      snprintf(what, sizeof what, "%s takes no %s", command, flags[i].flag);
      say(what, NULL);
      return EXIT_USAGE;
    }
  return 0;
}

static const char *env_or(const char *name, const char *def) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? v : def;
}

int ctl_redis(const opts *o, st_redis **r) {
  char err[256];
  if (st_redis_connect(o->redis_host, o->redis_port, o->redis_password, 3000, r,
                       err, sizeof err) != 0) {
    say("cannot reach Redis", err);
    return EXIT_FAILED;
  }
  return 0;
}

/* The module's name from its file name nimbus-<name>.so. */
static bool name_from_file(const char *path, char *out, size_t cap) {
  const char *base = strrchr(path, '/');
  base = base != NULL ? base + 1 : path;
  size_t n = strlen(base);
  if (n <= 10 || strncmp(base, "nimbus-", 7) != 0 ||
      strcmp(base + n - 3, ".so") != 0 || n - 10 >= cap)
    return false;
  memcpy(out, base + 7, n - 10);
  out[n - 10] = '\0';
  return true;
}

static bool module_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ST_MODULE_NAME_MAX)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

static bool version_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ST_MODULE_VERSION_MAX)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || strchr(".+-_~", *s) != NULL))
      return false;
  return true;
}

void ctl_stored_fini(ctl_stored *s) {
  st_blob_writer_free(s->w);
  st_blobstore_free(s->store);
  memset(s, 0, sizeof *s);
}

int ctl_store_file(const ctl_opts *o, st_redis *r, const char *file,
                   const char *tag, ctl_stored *out) {
  char err[256], upload[96];
  int code = EXIT_FAILED, fd = -1;
  uint8_t *buf = NULL;
  memset(out, 0, sizeof *out);
  if (st_blobstore_open(o->data_dir, &out->store, err, sizeof err) != 0) {
    say("cannot open the blob store", err);
    return EXIT_FAILED;
  }
  fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    say(file, strerror(errno));
    goto out;
  }
  /* A '.' in the name: no terminal's upload can be called so. */
  snprintf(upload, sizeof upload, "%.64s.%d", tag, (int)getpid());
  buf = malloc(ST_SEGMENT);
  if (buf == NULL || st_blob_writer_new(out->store, "nimbusctl", upload,
                                        UINT64_MAX, &out->w) != 0) {
    say("out of memory", NULL);
    goto out;
  }
  ssize_t got;
  while ((got = read(fd, buf, ST_SEGMENT)) > 0)
    if (st_blob_writer_write(out->w, buf, (size_t)got) != 0) {
      say("cannot write into the blob store", st_blobstore_errstr());
      goto out;
    }
  if (got < 0) {
    say(file, strerror(errno));
    goto out;
  }
  bool gone = false;
  int rc =
      st_blob_writer_finish(out->w, r, "nimbusctl", 60000, out->hex, &gone);
  if (rc != 0 || gone) {
    say("cannot store the file",
        gone ? "the same bytes are being collected right now: try again in "
               "a minute"
        : rc == NIMBUS_EREDIS ? st_redis_errstr(r)
                              : st_blobstore_errstr());
    goto out;
  }
  out->size = st_blob_writer_size(out->w);
  out->sums = st_blob_writer_sums(out->w, &out->nsegs);
  code = 0;
out:
  if (fd >= 0)
    close(fd);
  free(buf);
  return code;
}

static int publish(const opts *o, const char *file) {
  char name[ST_MODULE_NAME_MAX + 1], err[256];
  if (o->name != NULL)
    nb_strlcpy(name, o->name, sizeof name);
  else if (!name_from_file(file, name, sizeof name)) {
    say("give --name N: the file is not named nimbus-<name>.so", file);
    return EXIT_USAGE;
  }
  if (!module_name_ok(name) || (o->name != NULL && strlen(o->name) > 32)) {
    say("a module name is 1-32 of a-z 0-9 _", name);
    return EXIT_USAGE;
  }
  if (o->version == NULL || !version_ok(o->version)) {
    say("give --version V: 1-64 of A-Z a-z 0-9 . + - _ ~", o->version);
    return EXIT_USAGE;
  }
  if (o->key == NULL) {
    say("give --key KEYFILE (nimbus.key of nimbusctl keygen)", NULL);
    return EXIT_USAGE;
  }
  if (o->data_dir == NULL) {
    say("give --data-dir D (or NIMBUS_DATA_DIR): the workers' blob store",
        NULL);
    return EXIT_USAGE;
  }
  uint8_t sec[NB_SIGN_SEC];
  if (nb_sign_sec_read(o->key, sec, err, sizeof err) != 0) {
    say("cannot use the key", err);
    return EXIT_FAILED;
  }
  int code = EXIT_FAILED;
  st_redis *r = NULL;
  ctl_stored f;
  memset(&f, 0, sizeof f);
  char tag[64];
  snprintf(tag, sizeof tag, "module.%s", name);
  if ((code = ctl_redis(o, &r)) != 0 ||
      (code = ctl_store_file(o, r, file, tag, &f)) != 0)
    goto out;
  code = EXIT_FAILED;
  st_module m = {.exists = true, .size = f.size, .ts = nb_now_ms()};
  nb_strlcpy(m.name, name, sizeof m.name);
  nb_strlcpy(m.version, o->version, sizeof m.version);
  memcpy(m.blob, f.hex, sizeof m.blob);
  char stmt[512];
  size_t sn = nb_sign_statement(stmt, sizeof stmt, "nimbus-module", m.name,
                                m.version, m.size, m.blob);
  if (sn == 0 || nb_sign(stmt, sn, sec, m.sig) != 0) {
    say("cannot sign", NULL);
    goto out;
  }
  int rc = st_module_publish(r, &m, f.sums, f.nsegs);
  if (rc != 0) {
    say("cannot record the module",
        rc == NIMBUS_ECONFLICT ? "its blob is being collected: publish again"
                               : st_redis_errstr(r));
    goto out;
  }
  printf("published module %s version %s: %llu bytes, sha256 %s\n", m.name,
         m.version, (unsigned long long)m.size, m.blob);
  code = 0;
out:
  nb_sign_wipe(sec, sizeof sec);
  ctl_stored_fini(&f);
  st_redis_free(r);
  return code;
}

static int list(const opts *o) {
  st_redis *r = NULL;
  int code = ctl_redis(o, &r);
  if (code != 0)
    return code;
  char **names = NULL;
  size_t n = 0;
  if (st_module_names(r, &names, &n) != 0) {
    say("cannot list the modules", st_redis_errstr(r));
    st_redis_free(r);
    return EXIT_FAILED;
  }
  for (size_t i = 0; i < n; i++) {
    st_module m;
    if (st_module_get(r, names[i], &m) == 0 && m.exists)
      printf("%s\t%s\t%llu\t%s\n", m.name, m.version,
             (unsigned long long)m.size, m.blob);
    free(names[i]);
  }
  free(names);
  st_redis_free(r);
  return 0;
}

bool ctl_code_handles(const char *object) {
  return strcmp(object, "keygen") == 0 || strcmp(object, "module") == 0 ||
         strcmp(object, "agent") == 0;
}

/* The command line's options: each a text field of ctl_opts (`field`)
 * and the CTL_O_* bit of the commands that take it (0: every command's
 * storage option). --redis-port, --redis-password-env and --all are
 * read by the code below the table. */
typedef struct ctl_optdef {
  const char *name;
  int has_arg;
  size_t field;
  unsigned bit;
} ctl_optdef;

#define CTL_TEXT(n, f, b)                                                      \
  { n, required_argument, offsetof(ctl_opts, f), b }
#define CTL_SPECIAL ((size_t)-1)
static const ctl_optdef optdefs[] = {
    CTL_TEXT("data-dir", data_dir, 0),
    CTL_TEXT("redis-host", redis_host, 0),
    {"redis-port", required_argument, CTL_SPECIAL, 0},
    {"redis-password-env", required_argument, CTL_SPECIAL, 0},
    CTL_TEXT("key", key, CTL_O_KEY),
    CTL_TEXT("version", version, CTL_O_VERSION),
    CTL_TEXT("name", name, CTL_O_NAME),
    CTL_TEXT("platform", platform, CTL_O_PLATFORM),
    CTL_TEXT("notes", notes, CTL_O_NOTES),
    CTL_TEXT("text", text, CTL_O_TEXT),
    {"all", no_argument, CTL_SPECIAL, CTL_O_ALL},
};
enum { NOPTDEFS = sizeof optdefs / sizeof optdefs[0] };

/* Sets what option i (of optdefs) with argument `arg` sets. 0 or
 * EXIT_USAGE (said). */
static int ctl_set_opt(opts *o, size_t i, const char *arg) {
  const ctl_optdef *d = &optdefs[i];
  o->given |= d->bit;
  if (d->field != CTL_SPECIAL) {
    *(const char **)(void *)((char *)o + d->field) = arg;
  } else if (strcmp(d->name, "redis-port") == 0) {
    char *end = NULL;
    long p = strtol(arg, &end, 10);
    if (end == arg || *end != '\0' || p < 1 || p > 65535) {
      say("--redis-port takes a port number", arg);
      return EXIT_USAGE;
    }
    o->redis_port = (int)p;
  } else if (strcmp(d->name, "redis-password-env") == 0) {
    o->redis_password = getenv(arg);
  } else {
    o->all = true;
  }
  return 0;
}

int ctl_code_main(int argc, char **argv, const char *accounts) {
  struct option longopts[NOPTDEFS + 2];
  for (size_t i = 0; i < NOPTDEFS; i++)
    longopts[i] = (struct option){optdefs[i].name, optdefs[i].has_arg, NULL,
                                  256 + (int)i};
  longopts[NOPTDEFS] = (struct option){"help", no_argument, NULL, 'h'};
  longopts[NOPTDEFS + 1] = (struct option){NULL, 0, NULL, 0};
  opts o = {.data_dir = env_or("NIMBUS_DATA_DIR", NULL),
            .redis_host = env_or("NIMBUS_REDIS_HOST", "127.0.0.1"),
            .redis_port =
                (int)strtol(env_or("NIMBUS_REDIS_PORT", "6379"), NULL, 10),
            .redis_password = env_or("NIMBUS_REDIS_PASSWORD", NULL),
            .accounts = accounts};
  int opt;
  optind = 0;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (opt >= 256 && opt < 256 + (int)NOPTDEFS) {
      int code = ctl_set_opt(&o, (size_t)(opt - 256), optarg);
      if (code != 0)
        return code;
    } else if (opt == 'h') {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  const char *object = argv[0];
  int rest = argc - optind;
  char **pos = argv + optind;
  if (strcmp(object, "agent") == 0)
    return ctl_agent_main(&o, pos, rest);
  int code = 0;
  if (strcmp(object, "keygen") == 0 && rest == 1) {
    if ((code = ctl_opts_only(&o, 0, "keygen")) != 0)
      return code;
    char err[512];
    int rc = nb_sign_keygen(pos[0], err, sizeof err);
    if (rc != 0) {
      say("keygen", err);
      return EXIT_FAILED;
    }
    printf("made %s/nimbus.key (secret, 0600) and %s/nimbus.pub\n", pos[0],
           pos[0]);
    return 0;
  }
  if (strcmp(object, "module") == 0 && rest == 2 &&
      strcmp(pos[0], "publish") == 0)
    return (code = ctl_opts_only(&o, CTL_O_KEY | CTL_O_VERSION | CTL_O_NAME,
                                 "module publish")) != 0
               ? code
               : publish(&o, pos[1]);
  if (strcmp(object, "module") == 0 && rest == 1 && strcmp(pos[0], "list") == 0)
    return (code = ctl_opts_only(&o, 0, "module list")) != 0 ? code : list(&o);
  usage(stderr);
  return EXIT_USAGE;
}
