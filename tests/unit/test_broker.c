/* Unit tests of broker-config without a broker: password hashes, the
 * accounts file (parse, load, atomic save, lock), and the whole table of
 * access and client-id rules that nimbus_auth.so enforces
 * (docs/architecture.md, "Accounts and the broker plugin"). The plugin is
 * a thin shell around these functions; broker-config/selftest.sh checks the
 * shell against a real mosquitto. */
#include "accounts.h"
#include "nimbus/errors.h"

#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define PFX "cloud/v1"

static char hash_a[BA_HASH_MAX], hash_b[BA_HASH_MAX];

static int setup_hashes(void **state) {
  (void)state;
  if (ba_hash_password("alice-pw", BA_ITERATIONS_MIN, hash_a, sizeof hash_a) !=
          0 ||
      ba_hash_password("bob-pw", BA_ITERATIONS_MIN, hash_b, sizeof hash_b) != 0)
    return -1;
  return 0;
}

/* ---- Hashes ------------------------------------------------------------*/

static void test_hash_verify(void **state) {
  (void)state;
  char h1[BA_HASH_MAX], h2[BA_HASH_MAX];
  assert_int_equal(
      ba_hash_password("s3cret", BA_ITERATIONS_DEFAULT, h1, sizeof h1), 0);
  assert_int_equal(strncmp(h1, "$pbkdf2-sha256$20000$", 21), 0);
  /* 16 bytes of salt and 32 of hash, standard padded base64. */
  const char *salt = h1 + 21, *dk = strchr(salt, '$');
  assert_non_null(dk);
  assert_int_equal(dk - salt, 24);
  assert_int_equal(strlen(dk + 1), 44);
  assert_true(ba_hash_valid(h1));
  assert_true(ba_verify_password(h1, "s3cret"));
  /* A fresh salt each time. */
  assert_int_equal(
      ba_hash_password("s3cret", BA_ITERATIONS_DEFAULT, h2, sizeof h2), 0);
  assert_string_not_equal(h1, h2);
  assert_true(ba_verify_password(h2, "s3cret"));
}

static void test_hash_wrong_password(void **state) {
  (void)state;
  assert_false(ba_verify_password(hash_a, "alice-pW"));
  assert_false(ba_verify_password(hash_a, "alice-pw "));
  assert_false(ba_verify_password(hash_a, "bob-pw"));
  assert_false(ba_verify_password(hash_a, ""));
  assert_false(ba_verify_password(hash_a, NULL));
  assert_false(ba_verify_password(hash_b, "alice-pw"));
  assert_false(ba_verify_dummy("alice-pw"));
  /* One bit of the stored hash changed: no match. */
  char t[BA_HASH_MAX];
  memcpy(t, hash_a, sizeof t);
  char *last = strrchr(t, '$') + 1;
  last[3] = last[3] == 'A' ? 'B' : 'A';
  assert_true(ba_hash_valid(t));
  assert_false(ba_verify_password(t, "alice-pw"));
}

static void test_hash_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "plain",
      "$pbkdf2-sha1$20000$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$0$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$020000$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$999$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$-20000$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$20000$NfMKPMOPMbZF/3sDqKlI3w==",
      "$pbkdf2-sha256$20000$NfMKPMOPMbZF/3sDqKlI3w$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$20000$NfMKPMOPMbZF/3sDqKlI3w==$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=x",
      "$pbkdf2-sha256$20000$NfMKPMOP MbZF/3sDqKlI3w=$"
      "dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$20000$AAAA$dN4hCk9KZnaxSZ6gGBbKPCyOyu0RQPDGYl/930rlD4E=",
      "$pbkdf2-sha256$20000$NfMKPMOPMbZF/3sDqKlI3w==$AAAA",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (ba_hash_valid(bad[i]))
      fail_msg("hash %zu accepted: \"%s\"", i, bad[i]);
    assert_false(ba_verify_password(bad[i], "x"));
  }
  assert_false(ba_hash_valid(NULL));
  char out[BA_HASH_MAX];
  assert_int_equal(ba_hash_password("", 20000, out, sizeof out), NIMBUS_EINVAL);
  assert_int_equal(ba_hash_password("x", 10, out, sizeof out), NIMBUS_EINVAL);
  assert_int_equal(ba_hash_password("x", 20000, out, 20), NIMBUS_EINVAL);
}

static void test_random_password(void **state) {
  (void)state;
  char a[25], b[25];
  assert_int_equal(ba_random_password(a, 24), 0);
  assert_int_equal(ba_random_password(b, 24), 0);
  assert_int_equal(strlen(a), 24);
  for (size_t i = 0; i < 24; i++)
    assert_true((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= 'A' && a[i] <= 'Z') ||
                (a[i] >= '0' && a[i] <= '9'));
  assert_string_not_equal(a, b);
  assert_int_equal(ba_random_password(a, 0), NIMBUS_EINVAL);
}

/* ---- Parsing ---------------------------------------------------------- */

static ba_accounts *parse(const char *text, int want_rc, char *err,
                          size_t cap) {
  ba_accounts *t = (ba_accounts *)1;
  err[0] = '\0';
  int rc = ba_accounts_parse(text, strlen(text), &t, err, cap);
  if (rc != want_rc)
    fail_msg("parse of \"%s\": expected %s, got %s (%s)", text,
             nimbus_errname(want_rc), nimbus_errname(rc), err);
  if (rc != 0)
    assert_null(t);
  return t;
}

static void test_parse_good(void **state) {
  (void)state;
  char text[2048], err[256];
  snprintf(text, sizeof text,
           "# accounts\n"
           "\n"
           "zed.1:terminal:%s\n"
           "w1:worker:%s\n"
           "admin:admin:%s\n"
           "mon_1:monitor:%s\n"
           "+4915112345678:terminal:%s",
           hash_a, hash_b, hash_a, hash_b, hash_a);
  /* '+' is not in a terminal id: that last line is refused. */
  parse(text, NIMBUS_EPROTO, err, sizeof err);
  assert_non_null(strstr(err, "line 7"));
  char *plus = strstr(text, "+4915");
  memmove(plus, plus + 1, strlen(plus));
  ba_accounts *t = parse(text, 0, err, sizeof err);
  assert_int_equal(t->n, 5);
  /* Sorted by name, each found with its role and hash. */
  for (size_t i = 1; i < t->n; i++)
    assert_true(strcmp(t->v[i - 1].name, t->v[i].name) < 0);
  const ba_account *a = ba_accounts_find(t, "zed.1");
  assert_non_null(a);
  assert_int_equal(a->role, BA_ROLE_TERMINAL);
  assert_string_equal(a->hash, hash_a);
  assert_int_equal(ba_accounts_find(t, "w1")->role, BA_ROLE_WORKER);
  assert_int_equal(ba_accounts_find(t, "admin")->role, BA_ROLE_ADMIN);
  assert_int_equal(ba_accounts_find(t, "mon_1")->role, BA_ROLE_MONITOR);
  assert_int_equal(ba_accounts_find(t, "4915112345678")->role,
                   BA_ROLE_TERMINAL);
  assert_true(ba_verify_password(ba_accounts_find(t, "w1")->hash, "bob-pw"));
  assert_null(ba_accounts_find(t, "zed"));
  assert_null(ba_accounts_find(t, "W1"));
  assert_null(ba_accounts_find(t, NULL));
  ba_accounts_free(t);

  t = parse("", 0, err, sizeof err);
  assert_int_equal(t->n, 0);
  ba_accounts_free(t);
  t = parse("\n\n# nothing\n", 0, err, sizeof err);
  assert_int_equal(t->n, 0);
  ba_accounts_free(t);
}

static void test_parse_corrupt(void **state) {
  (void)state;
  static const char *const lines[] = {
      "alice:terminal",          /* missing field */
      "alice:%s",                /* missing role */
      "alice:terminals:%s",      /* unknown role */
      "alice:Terminal:%s",       /* roles are lower case */
      "alice:none:%s",           /* not a stored role */
      ":terminal:%s",            /* empty name */
      "al ice:terminal:%s",      /* space in name */
      "al/ice:terminal:%s",      /* topic separator */
      "al+ice:terminal:%s",      /* wildcard */
      "alice:terminal:%s:extra", /* hash with a ':' in it */
      "alice:terminal:%s\r",     /* CRLF */
      " alice:terminal:%s",      /* leading blank */
      "alice:terminal:plain",    /* not a hash */
  };
  char text[2048], line[1024], err[256];
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    snprintf(line, sizeof line, lines[i], hash_a);
    snprintf(text, sizeof text, "w1:worker:%s\n%s\nw2:worker:%s\n", hash_b,
             line, hash_b);
    parse(text, NIMBUS_EPROTO, err, sizeof err);
    if (strstr(err, "line 2") == NULL)
      fail_msg("case %zu: error \"%s\" does not name line 2", i, err);
  }
  /* A name twice: refused whole, whatever the roles. */
  snprintf(text, sizeof text, "a:worker:%s\nb:admin:%s\na:terminal:%s\n",
           hash_a, hash_a, hash_b);
  parse(text, NIMBUS_EPROTO, err, sizeof err);
  assert_non_null(strstr(err, "\"a\""));
  /* A NUL byte inside a line. */
  snprintf(text, sizeof text, "a:worker:%s\n", hash_a);
  size_t n = strlen(text);
  text[3] = '\0';
  ba_accounts *t = (ba_accounts *)1;
  assert_int_equal(ba_accounts_parse(text, n, &t, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_null(t);
  /* An overlong line. */
  char *big = malloc(3000);
  assert_non_null(big);
  memset(big, 'a', 2999);
  big[2999] = '\0';
  parse(big, NIMBUS_EPROTO, err, sizeof err);
  free(big);
}

/* ---- Files ------------------------------------------------------------ */

static char tmpdir[64];

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test_broker.XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  char p[512];
  while (d && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
  }
  if (d)
    closedir(d);
  rmdir(tmpdir);
  return 0;
}

static size_t count_entries(const char *dir) {
  DIR *d = opendir(dir);
  size_t n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      n++;
  if (d)
    closedir(d);
  return n;
}

static void test_save_load(void **state) {
  (void)state;
  char path[256], err[512];
  ba_file_id id1, id2, st;
  ba_accounts *t = ba_accounts_new(), *u = NULL;
  snprintf(path, sizeof path, "%s/accounts", tmpdir);
  assert_int_equal(ba_accounts_load(path, &u, NULL, err, sizeof err),
                   NIMBUS_ENOTFOUND);
  assert_null(u);
  assert_int_equal(ba_file_stat(path, &st), NIMBUS_ENOTFOUND);

  assert_int_equal(ba_accounts_add(t, "bob", BA_ROLE_TERMINAL, hash_b), 0);
  assert_int_equal(ba_accounts_add(t, "alice", BA_ROLE_TERMINAL, hash_a), 0);
  assert_int_equal(ba_accounts_add(t, "w1", BA_ROLE_WORKER, hash_a), 0);
  assert_int_equal(ba_accounts_save(t, path, err, sizeof err), 0);

  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  /* Only the file itself: no temporary left behind. */
  assert_int_equal(count_entries(tmpdir), 1);

  assert_int_equal(ba_accounts_load(path, &u, &id1, err, sizeof err), 0);
  assert_int_equal(u->n, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(u->v[i].name, t->v[i].name);
    assert_int_equal(u->v[i].role, t->v[i].role);
    assert_string_equal(u->v[i].hash, t->v[i].hash);
  }
  assert_int_equal(ba_file_stat(path, &st), 0);
  assert_true(ba_file_id_equal(&st, &id1));
  ba_accounts_free(u);

  /* The text is exactly the documented format, sorted by name. */
  FILE *fp = fopen(path, "r");
  char line[512];
  assert_non_null(fp);
  assert_non_null(fgets(line, sizeof line, fp));
  char want[512];
  snprintf(want, sizeof want, "alice:terminal:%s\n", hash_a);
  assert_string_equal(line, want);
  fclose(fp);

  /* A rewrite is a new file (a new inode): the plugin sees it even when
   * size and mtime happen to match. */
  assert_int_equal(ba_accounts_set_hash(t, "bob", hash_a), 0);
  assert_int_equal(ba_accounts_save(t, path, err, sizeof err), 0);
  assert_int_equal(ba_accounts_load(path, &u, &id2, err, sizeof err), 0);
  assert_false(ba_file_id_equal(&id1, &id2));
  assert_string_equal(ba_accounts_find(u, "bob")->hash, hash_a);
  ba_accounts_free(u);

  /* A corrupt file is refused whole, with the file named. */
  fp = fopen(path, "a");
  assert_non_null(fp);
  fputs("broken\n", fp);
  fclose(fp);
  assert_int_equal(ba_accounts_load(path, &u, NULL, err, sizeof err),
                   NIMBUS_EPROTO);
  assert_null(u);
  assert_non_null(strstr(err, path));
  assert_non_null(strstr(err, "line 4"));

  /* Saving into a directory that does not exist fails and says so. */
  char nodir[300];
  snprintf(nodir, sizeof nodir, "%s/none/accounts", tmpdir);
  assert_int_equal(ba_accounts_save(t, nodir, err, sizeof err), NIMBUS_EIO);
  assert_non_null(strstr(err, "none"));
  ba_accounts_free(t);
}

static void test_table_edit(void **state) {
  (void)state;
  ba_accounts *t = ba_accounts_new();
  assert_non_null(t);
  assert_int_equal(ba_accounts_add(t, "a", BA_ROLE_ADMIN, hash_a), 0);
  assert_int_equal(ba_accounts_add(t, "a", BA_ROLE_WORKER, hash_b),
                   NIMBUS_ECONFLICT);
  assert_int_equal(ba_accounts_add(t, "b/c", BA_ROLE_WORKER, hash_b),
                   NIMBUS_EINVAL);
  assert_int_equal(ba_accounts_add(t, "b", BA_ROLE_NONE, hash_b),
                   NIMBUS_EINVAL);
  assert_int_equal(ba_accounts_add(t, "b", BA_ROLE_WORKER, "nope"),
                   NIMBUS_EINVAL);
  char name[70];
  memset(name, 'n', 65);
  name[65] = '\0';
  assert_int_equal(ba_accounts_add(t, name, BA_ROLE_TERMINAL, hash_a),
                   NIMBUS_EINVAL);
  name[64] = '\0';
  assert_int_equal(ba_accounts_add(t, name, BA_ROLE_TERMINAL, hash_a), 0);
  /* Many names, in any order, stay sorted and findable. */
  for (int i = 99; i >= 0; i--) {
    char n[16];
    snprintf(n, sizeof n, "t%03d", (i * 37) % 100);
    assert_int_equal(ba_accounts_add(t, n, BA_ROLE_TERMINAL, hash_a), 0);
  }
  assert_int_equal(t->n, 102);
  for (size_t i = 1; i < t->n; i++)
    assert_true(strcmp(t->v[i - 1].name, t->v[i].name) < 0);
  assert_non_null(ba_accounts_find(t, "t042"));
  assert_int_equal(ba_accounts_del(t, "t042"), 0);
  assert_null(ba_accounts_find(t, "t042"));
  assert_int_equal(ba_accounts_del(t, "t042"), NIMBUS_ENOTFOUND);
  assert_int_equal(ba_accounts_set_hash(t, "zz", hash_a), NIMBUS_ENOTFOUND);
  assert_int_equal(ba_accounts_set_hash(t, "a", "bad"), NIMBUS_EINVAL);
  assert_int_equal(ba_accounts_set_hash(t, "a", hash_b), 0);
  assert_string_equal(ba_accounts_find(t, "a")->hash, hash_b);
  ba_accounts_free(t);
  ba_accounts_free(NULL);
}

/* Several processes adding at once, each a locked read-modify-write, as
 * nimbusctl does: none of the additions is lost. */
static void test_lock_no_lost_update(void **state) {
  (void)state;
  enum { N = 8, EACH = 5 };
  char path[256];
  snprintf(path, sizeof path, "%s/accounts", tmpdir);
  unlink(path);
  pid_t kids[N];
  for (int k = 0; k < N; k++) {
    kids[k] = fork();
    assert_true(kids[k] >= 0);
    if (kids[k] == 0) {
      for (int j = 0; j < EACH; j++) {
        char err[512], name[32];
        int fd;
        ba_accounts *t = NULL;
        snprintf(name, sizeof name, "k%d-%d", k, j);
        if (ba_accounts_lock(path, &fd, err, sizeof err) != 0)
          _exit(1);
        int rc = ba_accounts_load(path, &t, NULL, err, sizeof err);
        if (rc == NIMBUS_ENOTFOUND)
          t = ba_accounts_new();
        else if (rc != 0)
          _exit(2);
        usleep(1000); /* widen the window a lost update would need */
        if (ba_accounts_add(t, name, BA_ROLE_TERMINAL, hash_a) != 0 ||
            ba_accounts_save(t, path, err, sizeof err) != 0)
          _exit(3);
        ba_accounts_free(t);
        ba_accounts_unlock(fd);
      }
      _exit(0);
    }
  }
  for (int k = 0; k < N; k++) {
    int st;
    assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
  }
  char err[512];
  ba_accounts *t = NULL;
  assert_int_equal(ba_accounts_load(path, &t, NULL, err, sizeof err), 0);
  assert_int_equal(t->n, N * EACH);
  ba_accounts_free(t);
  char lock[300];
  snprintf(lock, sizeof lock, "%s.nimbusctl.lock", path);
  assert_int_equal(access(lock, F_OK), 0);
}

/* ---- Rules ------------------------------------------------------------ */

#define R BA_ACCESS_READ
#define W BA_ACCESS_WRITE
#define S BA_ACCESS_SUBSCRIBE
#define U BA_ACCESS_UNSUBSCRIBE

typedef struct rule_case {
  ba_role role;
  const char *user;
  const char *client_id;
  const char *topic;
  int access;
  bool retain;
  bool allowed;
} rule_case;

#define TERM BA_ROLE_TERMINAL, "alice", "alice.dev00001"
#define WORK BA_ROLE_WORKER, "w1", "w1-7f3a"
#define MON BA_ROLE_MONITOR, "mon", "mon-1"
#define ADM BA_ROLE_ADMIN, "admin", "whatever"

static const rule_case rules[] = {
    /* terminal: publish only its own tasks, never retained */
    {TERM, PFX "/task/ping/alice", W, false, true},
    {TERM, PFX "/task/process.image/alice", W, false, true},
    {TERM, PFX "/task/ping/bob", W, false, false},
    {TERM, PFX "/task/+/alice", W, false, false},
    {TERM, PFX "/task/ping/+", W, false, false},
    {TERM, PFX "/task/#", W, false, false},
    {TERM, PFX "/task/ping/alice", W, true, false},
    {TERM, PFX "/task//alice", W, false, false},
    {TERM, PFX "/task/a/b/alice", W, false, false},
    {TERM, PFX "/task/ping/alice/x", W, false, false},
    /* a type of 128 bytes, and one longer (its re-routed topic could pass
     * MQTT's length) */
    {TERM,
     PFX "/task/"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "/alice",
     W, false, true},
    {TERM,
     PFX "/task/"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "/alice",
     W, false, false},
    {TERM, PFX "/task/alice", W, false, false},
    {TERM, PFX "/reply/alice", W, false, false},
    {TERM, PFX "/notify/alice", W, false, false},
    {TERM, PFX "/monitor/event/x", W, false, false},
    {TERM, "cloud/v2/task/ping/alice", W, false, false},
    {TERM, "cloud/v1x/task/ping/alice", W, false, false},
    {TERM, "x/" PFX "/task/ping/alice", W, false, false},
    /* terminal: subscribe and read only its own reply and notify */
    {TERM, PFX "/reply/alice", S, false, true},
    {TERM, PFX "/notify/alice", S, false, true},
    {TERM, PFX "/reply/alice", R, false, true},
    {TERM, PFX "/notify/alice", R, false, true},
    {TERM, PFX "/reply/bob", S, false, false},
    {TERM, PFX "/reply/bob", R, false, false},
    {TERM, PFX "/notify/bob", S, false, false},
    {TERM, PFX "/reply/+", S, false, false},
    {TERM, PFX "/reply/#", S, false, false},
    {TERM, PFX "/+/alice", S, false, false},
    {TERM, PFX "/#", S, false, false},
    {TERM, "#", S, false, false},
    {TERM, "+/v1/reply/alice", S, false, false},
    {TERM, PFX "/reply/alice/#", S, false, false},
    {TERM, PFX "/reply/alice/x", S, false, false},
    {TERM, PFX "/task/ping/alice", S, false, false},
    {TERM, PFX "/task/ping/alice", R, false, false},
    {TERM, "$SYS/#", S, false, false},
    /* terminals never join a shared group, not even one of their topics */
    {TERM, "$share/nimbus-ping/" PFX "/task/ping/+", S, false, false},
    {TERM, "$share/nimbus-ping/" PFX "/task/ping/alice", S, false, false},
    {TERM, "$share/g/" PFX "/reply/alice", S, false, false},
    {TERM, "anything/at/all", U, false, true},
    /* the unserved topics are the plugin's alone: a terminal can neither
     * put a task there nor read one */
    {TERM, PFX "/unserved/ping/alice", W, false, false},
    {TERM, PFX "/unserved/nope/alice", W, false, false},
    {TERM, PFX "/unserved/ping/alice", R, false, false},
    {TERM, PFX "/unserved/#", S, false, false},
    {TERM, PFX "/unserved/+/alice", S, false, false},
    {TERM, "$share/nimbus-unserved/" PFX "/unserved/+/+", S, false, false},
    /* a terminal acting under a client id not its own: nothing */
    {BA_ROLE_TERMINAL, "alice", "bob.dev00001", PFX "/task/ping/alice", W,
     false, false},
    {BA_ROLE_TERMINAL, "alice", "alice", PFX "/reply/alice", S, false, false},

    /* worker: only the shared task groups */
    {WORK, "$share/nimbus-ping/" PFX "/task/ping/+", S, false, true},
    {WORK, "$share/nimbus-process.image/" PFX "/task/process.image/+", S, false,
     true},
    {WORK, "$share/nimbus-all/" PFX "/task/+/+", S, false, true},
    {WORK, PFX "/task/ping/+", S, false, false},
    {WORK, PFX "/task/+/+", S, false, false},
    {WORK, PFX "/task/#", S, false, false},
    {WORK, "$share/workers/" PFX "/task/ping/+", S, false, false},
    {WORK, "$share/nimbus-/" PFX "/task/ping/+", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/task/#", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/task/ping/#", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/task/ping/alice", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/task/ping/+/x", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/task//+", S, false, false},
    {WORK, "$share/nimbus-ping/" PFX "/reply/+", S, false, false},
    {WORK, "$share/nimbus-ping/cloud/v2/task/ping/+", S, false, false},
    {WORK, PFX "/reply/alice", S, false, false},
    {WORK, PFX "/monitor/#", S, false, false},
    {WORK, "$share/nimbus-unserved/" PFX "/unserved/+/+", S, false, true},
    {WORK, "$share/nimbus-unserved/" PFX "/unserved/ping/+", S, false, true},
    {WORK, PFX "/unserved/+/+", S, false, false},
    {WORK, PFX "/unserved/#", S, false, false},
    {WORK, "$share/nimbus-unserved/" PFX "/unserved/#", S, false, false},
    {WORK, "$share/nimbus-unserved/" PFX "/unserved/+/alice", S, false, false},
    {WORK, "$share/nimbus-unserved/" PFX "/unservedx/+/+", S, false, false},
    {WORK, "$share/nimbus-unserved/" PFX "/+/+/+", S, false, false},
    {WORK, "$share/unserved/" PFX "/unserved/+/+", S, false, false},
    {WORK, PFX "/unserved/ping/alice", R, false, true},
    {WORK, PFX "/unserved/ping/alice", W, false, false},
    {WORK, PFX "/task/ping/alice", R, false, true},
    {WORK, PFX "/reply/alice", R, false, false},
    {WORK, PFX "/reply/alice", W, false, true},
    {WORK, PFX "/notify/alice", W, false, true},
    {WORK, PFX "/monitor/worker/w1", W, true, true},
    {WORK, PFX "/monitor/event/blob.put", W, false, true},
    {WORK, PFX "/reply/alice/x", W, false, false},
    {WORK, PFX "/task/ping/alice", W, false, false},
    {WORK, "elsewhere", W, false, false},

    /* monitor: monitor topics only, read-only */
    {MON, PFX "/monitor/#", S, false, true},
    {MON, PFX "/monitor/worker/+", S, false, true},
    {MON, PFX "/monitor/worker/w1", R, false, true},
    {MON, PFX "/monitor/event/x", R, false, true},
    {MON, PFX "/#", S, false, false},
    {MON, "#", S, false, false},
    {MON, PFX "/+/worker/w1", S, false, false},
    {MON, PFX "/reply/alice", S, false, false},
    {MON, PFX "/task/ping/alice", R, false, false},
    {MON, PFX "/monitor/event/x", W, false, false},
    {MON, "$share/nimbus-m/" PFX "/monitor/#", S, false, false},
    {MON, PFX "/unserved/ping/alice", R, false, false},
    {MON, PFX "/unserved/ping/alice", W, false, false},

    /* admin: everything */
    {ADM, "#", S, false, true},
    {ADM, "$SYS/#", S, false, true},
    {ADM, "$share/nimbus-ping/" PFX "/task/ping/+", S, false, true},
    {ADM, PFX "/task/ping/alice", W, true, true},
    {ADM, PFX "/reply/bob", W, false, true},
    {ADM, PFX "/reply/bob", R, false, true},

    /* no account: nothing but unsubscribing */
    {BA_ROLE_NONE, "ghost", "ghost.dev00001", PFX "/reply/ghost", S, false,
     false},
    {BA_ROLE_NONE, "ghost", "ghost.dev00001", PFX "/task/ping/ghost", W, false,
     false},
    {BA_ROLE_NONE, "ghost", "ghost.dev00001", PFX "/reply/ghost", U, false,
     true},
    /* published or delivered topics never hold wildcards */
    {ADM, PFX "/task/+/alice", W, false, false},
    {ADM, PFX "/reply/#", R, false, false},
    /* an unknown access kind */
    {ADM, PFX "/reply/alice", 0x10, false, false},
};

static void test_rule_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    const rule_case *c = &rules[i];
    bool got = ba_acl_check(c->role, c->user, c->client_id, c->topic, c->access,
                            c->retain, PFX);
    if (got != c->allowed)
      fail_msg("row %zu: %s %s %s %s%s: expected %s, got %s", i,
               ba_role_name(c->role), c->user,
               c->access == R   ? "read"
               : c->access == W ? "write"
               : c->access == S ? "subscribe"
                                : "other",
               c->topic, c->retain ? " (retain)" : "",
               c->allowed ? "allowed" : "denied", got ? "allowed" : "denied");
  }
}

static void test_rule_prefix(void **state) {
  (void)state;
  const char *p = "acme/nimbus";
  assert_true(ba_acl_check(TERM, "acme/nimbus/task/ping/alice", W, false, p));
  assert_false(ba_acl_check(TERM, PFX "/task/ping/alice", W, false, p));
  assert_true(ba_acl_check(TERM, "acme/nimbus/reply/alice", S, false, p));
  assert_false(ba_acl_check(TERM, PFX "/reply/alice", S, false, p));
  assert_true(ba_acl_check(WORK, "$share/nimbus-ping/acme/nimbus/task/ping/+",
                           S, false, p));
  assert_false(ba_acl_check(WORK, "$share/nimbus-ping/" PFX "/task/ping/+", S,
                            false, p));
  assert_true(ba_acl_check(MON, "acme/nimbus/monitor/#", S, false, p));
  /* A bad prefix allows nothing. */
  assert_false(ba_acl_check(ADM, "#", S, false, "a/+"));
  assert_false(ba_acl_check(ADM, "#", S, false, NULL));
  assert_false(ba_acl_check(TERM, NULL, W, false, PFX));

  assert_true(ba_prefix_valid("cloud/v1"));
  assert_true(ba_prefix_valid("x"));
  assert_false(ba_prefix_valid(""));
  assert_false(ba_prefix_valid("/cloud"));
  assert_false(ba_prefix_valid("cloud/"));
  assert_false(ba_prefix_valid("cloud//v1"));
  assert_false(ba_prefix_valid("cloud/+"));
  assert_false(ba_prefix_valid("cloud/#"));
  assert_false(ba_prefix_valid("$SYS"));
}

static void test_client_id(void **state) {
  (void)state;
  const ba_role T = BA_ROLE_TERMINAL;
  char id[128];
  assert_true(ba_client_id_ok(T, "alice", "alice.dev00001"));
  assert_true(ba_client_id_ok(T, "alice", "alice.abcdefgh"));
  assert_true(ba_client_id_ok(T, "alice", "alice.A_b-C_d-09"));
  assert_true(ba_client_id_ok(T, "4915112345678", "4915112345678.k3Jx_9-pQ"));
  /* Terminal ids may hold dots; the device may not. */
  assert_true(ba_client_id_ok(T, "a.b", "a.b.dev00001"));
  assert_false(ba_client_id_ok(T, "a.b", "a.dev00001"));
  assert_false(ba_client_id_ok(T, "a", "a.b.dev00001"));
  /* missing device */
  assert_false(ba_client_id_ok(T, "alice", "alice"));
  assert_false(ba_client_id_ok(T, "alice", "alice."));
  /* device too short (7) and too long (65); 64 is fine */
  assert_false(ba_client_id_ok(T, "alice", "alice.abc1234"));
  snprintf(id, sizeof id, "alice.%065d", 0);
  assert_false(ba_client_id_ok(T, "alice", id));
  snprintf(id, sizeof id, "alice.%064d", 0);
  assert_true(ba_client_id_ok(T, "alice", id));
  /* another terminal's prefix, or a longer name sharing ours */
  assert_false(ba_client_id_ok(T, "alice", "bob.dev00001"));
  assert_false(ba_client_id_ok(T, "alice", "alicex.dev00001"));
  assert_false(ba_client_id_ok(T, "alice", "alic.edev00001"));
  /* extra dots, other separators or characters */
  assert_false(ba_client_id_ok(T, "alice", "alice.dev.00001"));
  assert_false(ba_client_id_ok(T, "alice", "alice..dev00001"));
  assert_false(ba_client_id_ok(T, "alice", "alice-dev00001"));
  assert_false(ba_client_id_ok(T, "alice", "alice/dev00001"));
  assert_false(ba_client_id_ok(T, "alice", "alice.dev0000+"));
  assert_false(ba_client_id_ok(T, "alice", "alice.dev 0001"));
  assert_false(ba_client_id_ok(T, "alice", "ALICE.dev00001"));
  assert_false(ba_client_id_ok(T, "alice", ""));
  assert_false(ba_client_id_ok(T, "alice", NULL));
  assert_false(ba_client_id_ok(T, NULL, "alice.dev00001"));
  /* Other roles: any non-empty client id but a terminal's (one of the
   * shape T.<device>, which would end that terminal's session); no
   * account: none. */
  assert_true(ba_client_id_ok(BA_ROLE_WORKER, "w1", "w1-7f3a"));
  assert_true(ba_client_id_ok(BA_ROLE_WORKER, "w1", "auto-1234"));
  assert_true(ba_client_id_ok(BA_ROLE_MONITOR, "m", "m"));
  assert_true(ba_client_id_ok(BA_ROLE_ADMIN, "admin", "admin.probe"));
  assert_true(ba_client_id_ok(BA_ROLE_ADMIN, "admin", "a.b.dev0000+"));
  assert_false(ba_client_id_ok(BA_ROLE_ADMIN, "admin", "alice.dev00001"));
  assert_false(ba_client_id_ok(BA_ROLE_WORKER, "w1", "alice.dev00001"));
  assert_false(ba_client_id_ok(BA_ROLE_MONITOR, "m", "a.b.device-01"));
  assert_false(ba_client_id_ok(BA_ROLE_WORKER, "w1", ""));
  assert_false(ba_client_id_ok(BA_ROLE_NONE, "x", "x.dev00001"));
}

static void test_roles_and_names(void **state) {
  (void)state;
  ba_role r;
  assert_int_equal(ba_role_parse("terminal", &r), 0);
  assert_int_equal(r, BA_ROLE_TERMINAL);
  assert_int_equal(ba_role_parse("monitor", &r), 0);
  assert_int_equal(r, BA_ROLE_MONITOR);
  assert_int_equal(ba_role_parse("none", &r), NIMBUS_EINVAL);
  assert_int_equal(ba_role_parse("Admin", &r), NIMBUS_EINVAL);
  assert_int_equal(ba_role_parse(NULL, &r), NIMBUS_EINVAL);
  assert_string_equal(ba_role_name(BA_ROLE_WORKER), "worker");
  assert_string_equal(ba_role_name((ba_role)42), "none");
  assert_true(ba_name_valid("a"));
  assert_true(ba_name_valid("A-b_c.9"));
  assert_false(ba_name_valid(""));
  assert_false(ba_name_valid("a:b"));
  assert_false(ba_name_valid("a b"));
  assert_false(ba_name_valid("a#"));
  assert_false(ba_name_valid(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash_verify),
      cmocka_unit_test(test_hash_wrong_password),
      cmocka_unit_test(test_hash_malformed),
      cmocka_unit_test(test_random_password),
      cmocka_unit_test(test_parse_good),
      cmocka_unit_test(test_parse_corrupt),
      cmocka_unit_test_setup_teardown(test_save_load, setup_dir, teardown_dir),
      cmocka_unit_test(test_table_edit),
      cmocka_unit_test_setup_teardown(test_lock_no_lost_update, setup_dir,
                                      teardown_dir),
      cmocka_unit_test(test_rule_table),
      cmocka_unit_test(test_rule_prefix),
      cmocka_unit_test(test_client_id),
      cmocka_unit_test(test_roles_and_names),
  };
  return cmocka_run_group_tests(tests, setup_hashes, NULL);
}
