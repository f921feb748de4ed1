/* The Nimbus accounts store and the broker's access rules, shared by the
 * Mosquitto plugin (nimbus_auth.so) and the nimbusctl tool.
 *
 * The store is one text file, one account a line, `<name>:<role>:<hash>`
 * (docs/architecture.md, "Accounts and the broker plugin"). The rules are
 * pure functions of (role, username, client id, topic, access, retain,
 * prefix), so they are unit tested without a broker. Nothing here logs:
 * errors come back as nimbus_err codes with a sentence in the caller's
 * buffer. Nothing here is thread-safe; the broker calls its plugin from one
 * thread. */
#ifndef BA_ACCOUNTS_H
#define BA_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Roles. BA_ROLE_NONE is never stored: it is what an unknown name has. */
typedef enum ba_role {
  BA_ROLE_NONE = 0,
  BA_ROLE_TERMINAL,
  BA_ROLE_WORKER,
  BA_ROLE_ADMIN,
  BA_ROLE_MONITOR
} ba_role;

/* Returns the static name of `role` ("terminal", ...), or "none". */
const char *ba_role_name(ba_role role);

/* Parses a role name (exact, lower case) into *out. Returns 0, or
 * NIMBUS_EINVAL for anything else ("none" included). `name` is borrowed. */
int ba_role_parse(const char *name, ba_role *out);

/* True when `name` may name an account: 1-64 bytes of [A-Za-z0-9._-], the
 * terminal id rule of PROTOCOL.md, used for every role so that a name never
 * holds the file's separator, a topic separator or an MQTT wildcard. */
bool ba_name_valid(const char *name);

/* ---- Password hashes ------------------------------------------------- */

/* `$pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`: standard base64
 * with padding, 16 bytes of salt and 32 of hash when made here. */
#define BA_HASH_MAX 256
#define BA_ITERATIONS_DEFAULT 20000u
#define BA_ITERATIONS_MIN 1000u
#define BA_ITERATIONS_MAX 10000000u
/* Bounds on what a password may be: MQTT carries it as binary data, but
 * nimbusctl takes it as a C string, so no NUL, and no newline. */
#define BA_PASSWORD_MAX 256

/* Hashes `password` (borrowed, NUL-terminated) with a fresh random salt and
 * `iterations` rounds (BA_ITERATIONS_MIN..MAX) into `out` (cap bytes,
 * BA_HASH_MAX is enough). Returns 0, NIMBUS_EINVAL (iterations out of
 * range, empty or too long password, cap too small) or NIMBUS_ESYS (no
 * randomness or OpenSSL failed). */
int ba_hash_password(const char *password, unsigned iterations, char *out,
                     size_t cap);

/* True when `hash` (borrowed) is a well-formed hash string as above, with
 * iterations in range, 8-64 bytes of salt and 16-64 bytes of hash. */
bool ba_hash_valid(const char *hash);

/* True when `password` matches `hash` (both borrowed). The comparison of
 * the derived bytes takes the same time wherever they differ. A malformed
 * hash matches nothing. Costs one PBKDF2 of the hash's iterations. */
bool ba_verify_password(const char *hash, const char *password);

/* Spends the time ba_verify_password() spends on a default hash and
 * returns false: used for unknown names, so that the time a refusal takes
 * does not tell which terminal ids exist. */
bool ba_verify_dummy(const char *password);

/* Writes a random password of `len` characters of [A-Za-z0-9] (uniform,
 * from OpenSSL's RAND) into `out`, which must hold len+1 bytes. Returns 0,
 * NIMBUS_EINVAL (len 0 or over 128) or NIMBUS_ESYS. */
int ba_random_password(char *out, size_t len);

/* ---- The accounts table ---------------------------------------------- */

typedef struct ba_account {
  char *name; /* owned by the table */
  ba_role role;
  char *hash; /* owned by the table */
} ba_account;

/* Accounts sorted by name, names unique. Read the fields; change it only
 * through the functions below. */
typedef struct ba_accounts {
  ba_account *v;
  size_t n;
  size_t cap;
} ba_accounts;

/* What identifies one version of the accounts file: a rewrite by nimbusctl
 * (a rename) always changes the inode; an edit in place changes the size or
 * the mtime. */
typedef struct ba_file_id {
  uint64_t dev;
  uint64_t ino;
  int64_t size;
  int64_t mtime_sec;
  long mtime_nsec;
} ba_file_id;

/* Returns a new empty table, or NULL when out of memory. Free it with
 * ba_accounts_free(). */
ba_accounts *ba_accounts_new(void);

/* Frees `t` and everything it owns; NULL is a no-op. */
void ba_accounts_free(ba_accounts *t);

/* Parses `len` bytes of file text (borrowed; need not be NUL-terminated)
 * into a new table returned in *out (the caller frees it). Blank lines and
 * lines starting with '#' are skipped. Any other line must be a valid
 * `<name>:<role>:<hash>`; a bad line or a name given twice fails the whole
 * parse, so that a damaged file never grants or drops access in part.
 * Returns 0, NIMBUS_EPROTO (with "line N: why" in errbuf), or
 * NIMBUS_ENOMEM. On error *out is NULL. */
int ba_accounts_parse(const char *text, size_t len, ba_accounts **out,
                      char *errbuf, size_t errcap);

/* Reads and parses the file at `path` (borrowed). On success returns 0,
 * the table in *out (the caller frees it) and, when `id` is not NULL, the
 * identity of the version read (taken from the open file, so it matches
 * the bytes parsed). Returns NIMBUS_ENOTFOUND when the file does not
 * exist, NIMBUS_EIO when it cannot be read, NIMBUS_EPROTO when it does not
 * parse, NIMBUS_ENOMEM; errbuf then says why, naming the file. */
int ba_accounts_load(const char *path, ba_accounts **out, ba_file_id *id,
                     char *errbuf, size_t errcap);

/* Writes `t` to `path` atomically: a temporary file in the same directory,
 * written, fsynced, given mode 0600 (and the owner of the file it replaces,
 * when the caller may set it), renamed over `path`, then the directory
 * fsynced. A reader sees the old file or the new one, never a mix. Returns
 * 0, or NIMBUS_EIO with the reason in errbuf (the old file is then intact
 * and no temporary file is left). */
int ba_accounts_save(const ba_accounts *t, const char *path, char *errbuf,
                     size_t errcap);

/* Stats `path` into *id. Returns 0, NIMBUS_ENOTFOUND, or NIMBUS_EIO. */
int ba_file_stat(const char *path, ba_file_id *id);

/* True when `a` and `b` name the same version of a file. */
bool ba_file_id_equal(const ba_file_id *a, const ba_file_id *b);

/* Returns the account named `name` (borrowed), or NULL. The pointer is
 * borrowed from `t` and valid until `t` is changed or freed. */
const ba_account *ba_accounts_find(const ba_accounts *t, const char *name);

/* Adds an account; `name` and `hash` are copied. Returns 0, NIMBUS_EINVAL
 * (invalid name, role or hash), NIMBUS_ECONFLICT (name taken) or
 * NIMBUS_ENOMEM. */
int ba_accounts_add(ba_accounts *t, const char *name, ba_role role,
                    const char *hash);

/* Removes the account `name`. Returns 0 or NIMBUS_ENOTFOUND. */
int ba_accounts_del(ba_accounts *t, const char *name);

/* Replaces the hash of account `name` with a copy of `hash`. Returns 0,
 * NIMBUS_ENOTFOUND, NIMBUS_EINVAL (invalid hash) or NIMBUS_ENOMEM. */
int ba_accounts_set_hash(ba_accounts *t, const char *name, const char *hash);

/* Takes an exclusive flock(2) on `<accounts path>.nimbusctl.lock`
 * (created 0600 if missing), waiting for other holders: the
 * read-modify-write of nimbusctl runs under it so that concurrent calls
 * lose no update. The name is our own: a script that wraps nimbusctl in
 * `flock <accounts>.lock` must not deadlock with it (flock locks belong to
 * open files, so a child locking the same file again waits forever).
 * Returns 0 and the lock's descriptor in *fd (release with
 * ba_accounts_unlock()), or NIMBUS_EIO with the reason in errbuf. */
int ba_accounts_lock(const char *path, int *fd, char *errbuf, size_t errcap);

/* Releases a lock from ba_accounts_lock(); -1 is a no-op. */
void ba_accounts_unlock(int fd);

/* ---- Rules ------------------------------------------------------------ */

/* Access kinds, equal in value to Mosquitto's MOSQ_ACL_* (the plugin
 * checks that at compile time). */
#define BA_ACCESS_READ 0x01
#define BA_ACCESS_WRITE 0x02
#define BA_ACCESS_SUBSCRIBE 0x04
#define BA_ACCESS_UNSUBSCRIBE 0x08

#define BA_PREFIX_DEFAULT "cloud/v1"

/* The longest task type a terminal may publish to (SPEC.md, Conventions):
 * bytes of its topic level. */
#define BA_TYPE_MAX 128

/* True when `prefix` can prefix Nimbus topics: 1-200 bytes, no empty
 * level (so no leading, trailing or doubled '/'), no '+', '#' or NUL, not
 * starting with '$'. */
bool ba_prefix_valid(const char *prefix);

/* True when an account of `role` named `username` may use `client_id`
 * (all borrowed; NULL never passes). A terminal T must use `T.<device>`,
 * the device 8-64 bytes of [A-Za-z0-9_-]; other roles may use any
 * non-empty client id but one of that shape, a terminal's (taking it
 * would end that terminal's session and its waiting replies). */
bool ba_client_id_ok(ba_role role, const char *username, const char *client_id);

/* True when the client (`role`, `username`, `client_id`) may do `access`
 * (one BA_ACCESS_* value) on `topic` under `prefix` (all borrowed).
 * `topic` is the subscription filter as the client sent it for SUBSCRIBE
 * (`$share/<group>/<filter>` included), the publish topic for WRITE (with
 * its `retain` flag), the topic delivered for READ. UNSUBSCRIBE is always
 * allowed; NULL arguments, BA_ROLE_NONE and an unknown access never are.
 * The table is in docs/architecture.md:
 *   terminal T (whose client id must still pass ba_client_id_ok):
 *     WRITE <prefix>/task/<type>/T, one level of type, no retain;
 *     SUBSCRIBE and READ exactly <prefix>/reply/T and <prefix>/notify/T.
 *   worker: SUBSCRIBE only $share/nimbus-<group>/<prefix>/task/<type|+>/+
 *     and $share/nimbus-<group>/<prefix>/unserved/<type|+>/+; READ
 *     <prefix>/task/# and <prefix>/unserved/#; WRITE <prefix>/reply/+,
 *     <prefix>/notify/+, <prefix>/monitor/#.
 *   Nobody but an admin may publish on <prefix>/unserved/#: only the
 *   plugin puts tasks there (route.h).
 *   monitor: SUBSCRIBE and READ <prefix>/monitor/#.
 *   admin: everything. */
bool ba_acl_check(ba_role role, const char *username, const char *client_id,
                  const char *topic, int access, bool retain,
                  const char *prefix);

#endif
