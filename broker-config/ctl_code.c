/* nimbusctl's commands for code the cloud hands out: the signing key pair
 * (`keygen`) and offload modules kept in the cloud's storage (`module
 * publish|list`), which workers started with modules_from_storage fetch
 * on the first task of their type and load only once the signature checks
 * (cloud-worker/src/modules.c). Agent packages (`agent publish`) will use
 * the same key and the same path into the store.
 *
 * Publishing writes the module into the blob store (data_dir) through the
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_FAILED 1
#define EXIT_USAGE 2

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
    "      Prints each published module: name, version, size, SHA-256.\n"
    "Storage options (also for the worker: the same environment):\n"
    "  --data-dir D     the blob store ($NIMBUS_DATA_DIR)\n"
    "  --redis-host H   ($NIMBUS_REDIS_HOST, default 127.0.0.1)\n"
    "  --redis-port P   ($NIMBUS_REDIS_PORT, default 6379)\n"
    "  --redis-password-env VAR  read Redis's password from $VAR\n";

typedef struct opts {
  const char *data_dir, *redis_host, *key, *version, *name;
  int redis_port;
  const char *redis_password;
} opts;

static void say(const char *what, const char *detail) {
  fprintf(stderr, "nimbusctl: %s%s%s\n", what, detail != NULL ? ": " : "",
          detail != NULL ? detail : "");
}

static const char *env_or(const char *name, const char *def) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? v : def;
}

static int connect_redis(const opts *o, st_redis **r) {
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

static int publish(const opts *o, const char *file) {
  char name[ST_MODULE_NAME_MAX + 1], err[256], upload[64], hex[65];
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
  int code = EXIT_FAILED, fd = -1;
  st_blobstore *store = NULL;
  st_blob_writer *w = NULL;
  st_redis *r = NULL;
  uint8_t *buf = NULL;
  if (st_blobstore_open(o->data_dir, &store, err, sizeof err) != 0) {
    say("cannot open the blob store", err);
    goto out;
  }
  if ((code = connect_redis(o, &r)) != 0)
    goto out;
  code = EXIT_FAILED;
  fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    say(file, strerror(errno));
    goto out;
  }
  snprintf(upload, sizeof upload, "module.%s.%d", name, (int)getpid());
  buf = malloc(ST_SEGMENT);
  if (buf == NULL ||
      st_blob_writer_new(store, "nimbusctl", upload, UINT64_MAX, &w) != 0) {
    say("out of memory", NULL);
    goto out;
  }
  ssize_t got;
  while ((got = read(fd, buf, ST_SEGMENT)) > 0)
    if (st_blob_writer_write(w, buf, (size_t)got) != 0) {
      say("cannot write into the blob store", st_blobstore_errstr());
      goto out;
    }
  if (got < 0) {
    say(file, strerror(errno));
    goto out;
  }
  bool gone = false;
  if (st_blob_writer_finish(w, r, "nimbusctl", 60000, hex, &gone) != 0 ||
      gone) {
    say("cannot store the module",
        gone ? "the same bytes are being collected right now: publish again "
               "in a minute"
             : st_blobstore_errstr());
    goto out;
  }
  st_module m = {
      .exists = true, .size = st_blob_writer_size(w), .ts = nb_now_ms()};
  nb_strlcpy(m.name, name, sizeof m.name);
  nb_strlcpy(m.version, o->version, sizeof m.version);
  memcpy(m.blob, hex, sizeof m.blob);
  char stmt[512];
  size_t sn = nb_sign_statement(stmt, sizeof stmt, "nimbus-module", m.name,
                                m.version, m.size, m.blob);
  if (sn == 0 || nb_sign(stmt, sn, sec, m.sig) != 0) {
    say("cannot sign", NULL);
    goto out;
  }
  uint64_t nsegs = 0;
  const uint8_t(*sums)[ST_SEGSUM] = st_blob_writer_sums(w, &nsegs);
  int rc = st_module_publish(r, &m, sums, nsegs);
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
  if (fd >= 0)
    close(fd);
  free(buf);
  st_blob_writer_free(w);
  st_redis_free(r);
  st_blobstore_free(store);
  return code;
}

static int list(const opts *o) {
  st_redis *r = NULL;
  int code = connect_redis(o, &r);
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
  return strcmp(object, "keygen") == 0 || strcmp(object, "module") == 0;
}

int ctl_code_main(int argc, char **argv) {
  enum { O_DATA = 256, O_RHOST, O_RPORT, O_RPASS, O_KEY, O_VERSION, O_NAME };
  static const struct option longopts[] = {
      {"data-dir", required_argument, NULL, O_DATA},
      {"redis-host", required_argument, NULL, O_RHOST},
      {"redis-port", required_argument, NULL, O_RPORT},
      {"redis-password-env", required_argument, NULL, O_RPASS},
      {"key", required_argument, NULL, O_KEY},
      {"version", required_argument, NULL, O_VERSION},
      {"name", required_argument, NULL, O_NAME},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  opts o = {.data_dir = env_or("NIMBUS_DATA_DIR", NULL),
            .redis_host = env_or("NIMBUS_REDIS_HOST", "127.0.0.1"),
            .redis_port =
                (int)strtol(env_or("NIMBUS_REDIS_PORT", "6379"), NULL, 10),
            .redis_password = env_or("NIMBUS_REDIS_PASSWORD", NULL)};
  int opt;
  optind = 0;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case O_DATA:
      o.data_dir = optarg;
      break;
    case O_RHOST:
      o.redis_host = optarg;
      break;
    case O_RPORT: {
      char *end = NULL;
      long p = strtol(optarg, &end, 10);
      if (end == optarg || *end != '\0' || p < 1 || p > 65535) {
        say("--redis-port takes a port number", optarg);
        return EXIT_USAGE;
      }
      o.redis_port = (int)p;
      break;
    }
    case O_RPASS:
      o.redis_password = getenv(optarg);
      break;
    case O_KEY:
      o.key = optarg;
      break;
    case O_VERSION:
      o.version = optarg;
      break;
    case O_NAME:
      o.name = optarg;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    default:
      fputs(usage_text, stderr);
      return EXIT_USAGE;
    }
  }
  const char *object = argv[0];
  int rest = argc - optind;
  char **pos = argv + optind;
  if (strcmp(object, "keygen") == 0 && rest == 1) {
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
    return publish(&o, pos[1]);
  if (strcmp(object, "module") == 0 && rest == 1 && strcmp(pos[0], "list") == 0)
    return list(&o);
  fputs(usage_text, stderr);
  return EXIT_USAGE;
}
