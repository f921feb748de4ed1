/* nimbusctl: manages the accounts file that nimbus_auth.so enforces, while
 * the broker runs (the plugin sees each change at the next CONNECT).
 *
 * Every change is a read-modify-write of the whole file under an flock on
 * `<accounts>.nimbusctl.lock`, ending in an atomic rename, so concurrent
 * calls lose no update and the broker never reads half a file. Passwords
 * are hashed before the lock is taken, to keep its hold short. Exit codes:
 * 0 done, 1 refused or failed (unknown or duplicate name, file errors),
 * 2 usage (bad flags, invalid names, invalid passwords). */
#include "accounts.h"
#include "ctl_code.h"

#include "nimbus/errors.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define PASSWORD_LEN 24

enum { OPT_PASSWORD = 1, OPT_ROLE = 2 };

typedef struct ctx {
  const char *path;
  const char *name;
  const char *password; /* NULL: generate one */
  ba_role role;         /* to add; found, for passwd */
  bool terminal_only;   /* `terminal ...`: other roles are not seen */
} ctx;

typedef struct command {
  const char *object;
  const char *verb;
  int nargs;     /* positional arguments after the verb: 0 or 1 */
  unsigned opts; /* OPT_* it accepts */
  const char *usage;
  const char *help;
  int (*run)(ctx *c);
} command;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("nimbusctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- Output ----------------------------------------------------------- */

static bool shell_safe(const char *s) {
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || strchr("._-+=/:@%,", c) != NULL))
      return false;
  }
  return true;
}

/* Prints `s` so that `eval` in a POSIX shell gives it back unchanged:
 * as is when it is plain, else in single quotes. */
static void print_shell_word(const char *s) {
  if (shell_safe(s) && *s != '\0') {
    fputs(s, stdout);
    return;
  }
  putchar('\'');
  for (; *s; s++) {
    if (*s == '\'')
      fputs("'\\''", stdout);
    else
      putchar(*s);
  }
  putchar('\'');
}

static void print_credentials(ba_role role, const char *name,
                              const char *password) {
  /* Terminals get what nimbus-agent reads; other accounts what the
   * worker's config table reads (NIMBUS_MQTT_USERNAME, ...). */
  if (role == BA_ROLE_TERMINAL)
    printf("export NIMBUS_TERMINAL=%s NIMBUS_PASSWORD=", name);
  else
    printf("export NIMBUS_MQTT_USERNAME=%s NIMBUS_MQTT_PASSWORD=", name);
  print_shell_word(password);
  putchar('\n');
}

static int finish_output(void) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    say("cannot write to standard output");
    return EXIT_REFUSED;
  }
  return 0;
}

/* ---- The accounts file ---------------------------------------------- */

/* Loads the table for reading; a missing file is an empty table. */
static int load(const char *path, ba_accounts **t) {
  char err[512];
  int rc = ba_accounts_load(path, t, NULL, err, sizeof err);
  if (rc == NIMBUS_ENOTFOUND) {
    *t = ba_accounts_new();
    if (*t == NULL) {
      say("out of memory");
      return EXIT_REFUSED;
    }
    return 0;
  }
  if (rc != 0) {
    say("%s", err);
    return EXIT_REFUSED;
  }
  return 0;
}

/* A change to the file: returns 0 to save, or an exit code to give up
 * without saving. */
typedef int (*change_fn)(ba_accounts *t, ctx *c, const char *hash);

static int change(ctx *c, change_fn fn, const char *hash) {
  char err[512];
  int lock = -1, ret;
  ba_accounts *t = NULL;
  if (ba_accounts_lock(c->path, &lock, err, sizeof err) != 0) {
    say("%s", err);
    return EXIT_REFUSED;
  }
  ret = load(c->path, &t);
  if (ret != 0)
    goto done;
  ret = fn(t, c, hash);
  if (ret != 0)
    goto done;
  if (ba_accounts_save(t, c->path, err, sizeof err) != 0) {
    say("%s", err);
    ret = EXIT_REFUSED;
  }
done:
  ba_accounts_free(t);
  ba_accounts_unlock(lock);
  return ret;
}

/* Hashes the given password, or a new random one into `pw`. */
static int make_hash(const ctx *c, char *pw, size_t pwcap, char *hash,
                     size_t hashcap) {
  if (c->password != NULL)
    snprintf(pw, pwcap, "%s", c->password);
  else if (ba_random_password(pw, PASSWORD_LEN) != 0) {
    say("no randomness for a password");
    return EXIT_REFUSED;
  }
  if (ba_hash_password(pw, BA_ITERATIONS_DEFAULT, hash, hashcap) != 0) {
    say("cannot hash the password");
    return EXIT_REFUSED;
  }
  return 0;
}

static int add_fn(ba_accounts *t, ctx *c, const char *hash) {
  const ba_account *a = ba_accounts_find(t, c->name);
  if (a != NULL) {
    if (a->role == BA_ROLE_TERMINAL)
      say("terminal %s already exists", c->name);
    else
      say("%s already exists, as a %s account", c->name, ba_role_name(a->role));
    return EXIT_REFUSED;
  }
  if (ba_accounts_add(t, c->name, c->role, hash) != 0) {
    say("cannot add %s", c->name);
    return EXIT_REFUSED;
  }
  return 0;
}

/* The account must exist, and be a terminal for `terminal ...`; sets
 * c->role to its role. */
static int check_exists(const ba_accounts *t, ctx *c) {
  const ba_account *a = ba_accounts_find(t, c->name);
  if (a == NULL) {
    say("no %s named %s", c->terminal_only ? "terminal" : "account", c->name);
    return EXIT_REFUSED;
  }
  if (c->terminal_only && a->role != BA_ROLE_TERMINAL) {
    say("no terminal named %s (%s is a %s account: use nimbusctl account)",
        c->name, c->name, ba_role_name(a->role));
    return EXIT_REFUSED;
  }
  c->role = a->role;
  return 0;
}

static int del_fn(ba_accounts *t, ctx *c, const char *hash) {
  (void)hash;
  int ret = check_exists(t, c);
  if (ret != 0)
    return ret;
  return ba_accounts_del(t, c->name) == 0 ? 0 : EXIT_REFUSED;
}

static int passwd_fn(ba_accounts *t, ctx *c, const char *hash) {
  int ret = check_exists(t, c);
  if (ret != 0)
    return ret;
  return ba_accounts_set_hash(t, c->name, hash) == 0 ? 0 : EXIT_REFUSED;
}

/* ---- Commands ----------------------------------------------------------
 */

static int run_add(ctx *c) {
  char pw[BA_PASSWORD_MAX + 1], hash[BA_HASH_MAX];
  int ret = make_hash(c, pw, sizeof pw, hash, sizeof hash);
  if (ret == 0)
    ret = change(c, add_fn, hash);
  if (ret == 0) {
    print_credentials(c->role, c->name, pw);
    ret = finish_output();
  }
  return ret;
}

static int run_passwd(ctx *c) {
  char pw[BA_PASSWORD_MAX + 1], hash[BA_HASH_MAX];
  int ret = make_hash(c, pw, sizeof pw, hash, sizeof hash);
  if (ret == 0)
    ret = change(c, passwd_fn, hash);
  if (ret == 0) {
    print_credentials(c->role, c->name, pw);
    ret = finish_output();
  }
  return ret;
}

static int run_del(ctx *c) { return change(c, del_fn, NULL); }

static int run_list(ctx *c) {
  ba_accounts *t = NULL;
  int ret = load(c->path, &t);
  if (ret != 0)
    return ret;
  for (size_t i = 0; i < t->n; i++) {
    const ba_account *a = &t->v[i];
    if (!c->terminal_only)
      printf("%s %s\n", a->name, ba_role_name(a->role));
    else if (a->role == BA_ROLE_TERMINAL)
      printf("%s\n", a->name);
  }
  ba_accounts_free(t);
  return finish_output();
}

#define PW_USAGE "[--password P | --password-stdin]"
static const command commands[] = {
    {"terminal", "add", 1, OPT_PASSWORD, "terminal add ID " PW_USAGE,
     "Adds terminal ID (1-64 of [A-Za-z0-9._-]) and prints\n"
     "  export NIMBUS_TERMINAL=ID NIMBUS_PASSWORD=<password>\n"
     "The password is 24 random characters of [A-Za-z0-9] unless given\n"
     "(--password-stdin reads one line). The terminal must connect with\n"
     "client id ID.<device>, the device 8-64 of [A-Za-z0-9_-].",
     run_add},
    {"terminal", "del", 1, 0, "terminal del ID",
     "Deletes terminal ID: it can no longer connect, loses every right at\n"
     "once, and its live connections are closed within a second.",
     run_del},
    {"terminal", "list", 0, 0, "terminal list",
     "Prints every terminal id, one a line, in byte order.", run_list},
    {"terminal", "passwd", 1, OPT_PASSWORD, "terminal passwd ID " PW_USAGE,
     "Gives terminal ID a new password (random unless given) and prints\n"
     "  export NIMBUS_TERMINAL=ID NIMBUS_PASSWORD=<password>\n"
     "Connections made with the old password stay open until they end.",
     run_passwd},
    {"account", "add", 1, OPT_PASSWORD | OPT_ROLE,
     "account add NAME --role worker|admin|monitor " PW_USAGE,
     "Adds an account and prints\n"
     "  export NIMBUS_MQTT_USERNAME=NAME NIMBUS_MQTT_PASSWORD=<password>\n"
     "(what nimbus-worker reads). worker: takes tasks from the shared\n"
     "groups and publishes replies, notices and monitor topics; monitor:\n"
     "reads <prefix>/monitor/#; admin: everything. --role terminal is\n"
     "`terminal add`.",
     run_add},
    {"account", "del", 1, 0, "account del NAME",
     "Deletes the account NAME, of any role.", run_del},
    {"account", "list", 0, 0, "account list",
     "Prints every account as `NAME ROLE`, one a line, in byte order of\n"
     "NAME, terminals included.",
     run_list},
    {"account", "passwd", 1, OPT_PASSWORD, "account passwd NAME " PW_USAGE,
     "Gives the account NAME a new password (random unless given) and\n"
     "prints its export line, as `add` does.",
     run_passwd},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage_all(FILE *fp) {
  fputs("Usage: nimbusctl [--accounts FILE] COMMAND [ARGS]\n"
        "Manages the Nimbus broker accounts file (the broker sees each\n"
        "change at its next CONNECT, without a restart), the signing key,\n"
        "and the offload modules published to the cloud's storage.\n\n"
        "Commands:\n",
        fp);
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(fp, "  nimbusctl %s\n", commands[i].usage);
  fputs(
      "  nimbusctl keygen DIR\n"
      "  nimbusctl module publish FILE --version V --key KEYFILE\n"
      "  nimbusctl module list\n"
      "  nimbusctl agent publish FILE --version V --platform P --key KEYFILE\n"
      "  nimbusctl agent list [--platform P]\n"
      "  nimbusctl agent withdraw P V\n"
      "  nimbusctl agent offer TERMINAL... | --all [--platform P] [--text T]\n"
      "  nimbusctl agent status [TERMINAL]\n",
      fp);
  fputs("\nThe accounts file is --accounts FILE, else $NIMBUS_ACCOUNTS, else\n"
        "$NIMBUS_DIR/broker/accounts. `nimbusctl terminal --help`,\n"
        "`nimbusctl terminal add --help`, `nimbusctl agent --help` and so\n"
        "on say more; `nimbusctl module --help` for keygen and modules.\n"
        "Exit status: 0 done, 1 refused or failed, 2 usage.\n",
        fp);
}

static void usage_object(FILE *fp, const char *object) {
  fprintf(fp, "Usage:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].object, object) == 0)
      fprintf(fp, "  nimbusctl [--accounts FILE] %s\n", commands[i].usage);
  fprintf(fp, "`nimbusctl %s VERB --help` says more.\n", object);
}

static void usage_command(FILE *fp, const command *cmd) {
  fprintf(fp, "Usage: nimbusctl [--accounts FILE] %s\n%s\n", cmd->usage,
          cmd->help);
}

static bool object_known(const char *object) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].object, object) == 0)
      return true;
  return false;
}

/* A given password becomes part of an MQTT CONNECT and of a shell line we
 * print: printable, 1..BA_PASSWORD_MAX bytes. */
static bool password_usable(const char *p) {
  size_t n = strlen(p);
  if (n == 0 || n > BA_PASSWORD_MAX)
    return false;
  for (; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

/* One line from stdin, without its newline, into buf (cap bytes). */
static bool read_password_line(char *buf, size_t cap) {
  if (fgets(buf, (int)cap, stdin) == NULL)
    return false;
  size_t n = strlen(buf);
  if (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  else if (!feof(stdin))
    return false; /* longer than the buffer */
  if (n > 0 && buf[n - 1] == '\r')
    buf[--n] = '\0';
  return true;
}

static int run_command(const command *cmd, const char *path, int argc,
                       char **argv) {
  enum { O_STDIN = 256 };
  static const struct option longopts[] = {
      {"password", required_argument, NULL, 'p'},
      {"password-stdin", no_argument, NULL, O_STDIN},
      {"role", required_argument, NULL, 'r'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  ctx c = {.path = path, .role = BA_ROLE_TERMINAL};
  const char *role = NULL, *refused = NULL;
  char stdin_pw[BA_PASSWORD_MAX + 3];
  bool from_stdin = false;
  int opt;
  c.terminal_only = strcmp(cmd->object, "terminal") == 0;
  /* argv[0] is the verb; options may come before or after the name. */
  optind = 0;
  opterr = 1;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'h':
      usage_command(stdout, cmd);
      return 0;
    case 'p':
    case O_STDIN:
      if (!(cmd->opts & OPT_PASSWORD)) {
        refused = opt == 'p' ? "--password" : "--password-stdin";
        goto no_such_option;
      }
      if (opt == 'p')
        c.password = optarg;
      else
        from_stdin = true;
      break;
    case 'r':
      if (!(cmd->opts & OPT_ROLE)) {
        refused = "--role";
        goto no_such_option;
      }
      role = optarg;
      break;
    default:
      usage_command(stderr, cmd);
      return EXIT_USAGE;
    }
  }
  if (argc - optind != cmd->nargs) {
    say("%s %s takes %s", cmd->object, cmd->verb,
        cmd->nargs ? "one name" : "no arguments");
    usage_command(stderr, cmd);
    return EXIT_USAGE;
  }
  if (cmd->nargs == 1) {
    c.name = argv[optind];
    if (!ba_name_valid(c.name)) {
      say("invalid %s \"%s\": it must be 1-64 characters of "
          "[A-Za-z0-9._-] (PROTOCOL.md)",
          c.terminal_only ? "terminal id" : "account name", c.name);
      return EXIT_USAGE;
    }
  }
  if (from_stdin && c.password != NULL) {
    say("give --password or --password-stdin, not both");
    return EXIT_USAGE;
  }
  if (from_stdin) {
    if (!read_password_line(stdin_pw, sizeof stdin_pw)) {
      say("cannot read a password line of at most %d bytes from stdin",
          BA_PASSWORD_MAX);
      return EXIT_USAGE;
    }
    c.password = stdin_pw;
  }
  if (c.password != NULL && !password_usable(c.password)) {
    say("invalid password: 1-%d printable characters", BA_PASSWORD_MAX);
    return EXIT_USAGE;
  }
  if (cmd->opts & OPT_ROLE) {
    if (role == NULL) {
      say("%s %s needs --role worker|admin|monitor", cmd->object, cmd->verb);
      return EXIT_USAGE;
    }
    if (ba_role_parse(role, &c.role) != 0) {
      say("invalid role \"%s\": worker, admin, monitor or terminal", role);
      return EXIT_USAGE;
    }
  }
  return cmd->run(&c);
no_such_option:
  say("%s %s takes no %s", cmd->object, cmd->verb, refused);
  usage_command(stderr, cmd);
  return EXIT_USAGE;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"accounts", required_argument, NULL, 'a'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *path = NULL;
  char dirpath[4096];
  int opt;
  /* '+': stop at the command, whose own flags are parsed later. */
  while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'a':
      path = optarg;
      break;
    case 'h':
      usage_all(stdout);
      return 0;
    default:
      usage_all(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    usage_all(stderr);
    return EXIT_USAGE;
  }
  const char *object = argv[optind];
  /* keygen, module and agent need no accounts file (agent offer --all
   * reads it when it finds one). */
  if (ctl_code_handles(object))
    return ctl_code_main(argc - optind, argv + optind, path);
  if (!object_known(object)) {
    say("unknown command \"%s\"", object);
    usage_all(stderr);
    return EXIT_USAGE;
  }
  if (optind + 1 >= argc || strcmp(argv[optind + 1], "--help") == 0 ||
      strcmp(argv[optind + 1], "-h") == 0) {
    bool help = optind + 1 < argc;
    usage_object(help ? stdout : stderr, object);
    return help ? 0 : EXIT_USAGE;
  }
  const char *verb = argv[optind + 1];
  const command *cmd = NULL;
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].object, object) == 0 &&
        strcmp(commands[i].verb, verb) == 0)
      cmd = &commands[i];
  if (cmd == NULL) {
    say("unknown command \"%s %s\"", object, verb);
    usage_object(stderr, object);
    return EXIT_USAGE;
  }
  if (path == NULL || *path == '\0')
    path = getenv("NIMBUS_ACCOUNTS");
  if (path == NULL || *path == '\0') {
    const char *dir = getenv("NIMBUS_DIR");
    if (dir != NULL && *dir != '\0') {
      int n = snprintf(dirpath, sizeof dirpath, "%s/broker/accounts", dir);
      if (n > 0 && (size_t)n < sizeof dirpath)
        path = dirpath;
    }
  }
  /* --help needs no accounts file. */
  bool wants_help = false;
  for (int i = optind + 2; i < argc && strcmp(argv[i], "--") != 0; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      wants_help = true;
  if ((path == NULL || *path == '\0') && !wants_help) {
    say("no accounts file: use --accounts FILE, or set NIMBUS_ACCOUNTS or "
        "NIMBUS_DIR");
    return EXIT_USAGE;
  }
  return run_command(cmd, path, argc - optind - 1, argv + optind + 1);
}
