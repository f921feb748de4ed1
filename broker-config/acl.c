/* The broker's access rules (docs/architecture.md, "Accounts and the
 * broker plugin"; PROTOCOL.md, "Transport and identity"), as pure
 * functions so that the whole table is unit tested without a broker.
 *
 * Mosquitto 2.0.11 hands a plugin the subscription filter exactly as the
 * client sent it, `$share/<group>/` included, so the shared-group rule is
 * checked here on the full string. A filter is allowed only when every
 * topic it can match is allowed ("covers" below), never because it merely
 * overlaps an allowed pattern: `cloud/v1/reply/+` overlaps a terminal's own
 * reply topic but would also read everyone else's. */
#include "accounts.h"

#include "nb_util.h"

#include <string.h>

#define PREFIX_MAX 200

bool ba_prefix_valid(const char *prefix) {
  if (prefix == NULL || prefix[0] == '\0' || prefix[0] == '$')
    return false;
  size_t n = strnlen(prefix, PREFIX_MAX + 1);
  if (n > PREFIX_MAX)
    return false;
  if (prefix[0] == '/' || prefix[n - 1] == '/' || strstr(prefix, "//"))
    return false;
  return strpbrk(prefix, "+#") == NULL;
}

/* The length of the terminal id when `client_id` has a terminal's shape,
 * <terminal id>.<device id> (the device 8-64 of [A-Za-z0-9_-], so no '.':
 * the last dot parts them), else 0. */
static size_t terminal_shaped(const char *client_id) {
  const char *dot = strrchr(client_id, '.');
  if (dot == NULL || !nb_valid_token(dot + 1, strnlen(dot + 1, 65), 8, 64) ||
      !nb_valid_terminal(client_id, (size_t)(dot - client_id)))
    return 0;
  return (size_t)(dot - client_id);
}

bool ba_client_id_ok(ba_role role, const char *username,
                     const char *client_id) {
  if (username == NULL || client_id == NULL || client_id[0] == '\0')
    return false;
  size_t t = terminal_shaped(client_id);
  switch (role) {
  case BA_ROLE_TERMINAL:
    return t > 0 && ba_name_valid(username) && strlen(username) == t &&
           memcmp(client_id, username, t) == 0;
  case BA_ROLE_WORKER:
  case BA_ROLE_ADMIN:
  case BA_ROLE_MONITOR:
    /* Any id but a terminal's: taking one would end that terminal's
     * session and drop the replies it holds. */
    return t == 0;
  default:
    return false;
  }
}

/* The next level of `s` (up to '/' or the end): its length, and *next set
 * to the level after it or NULL when it was the last. */
static size_t level(const char *s, const char **next) {
  const char *slash = strchr(s, '/');
  if (slash == NULL) {
    *next = NULL;
    return strlen(s);
  }
  *next = slash + 1;
  return (size_t)(slash - s);
}

static bool level_is(const char *s, size_t n, const char *what) {
  return strlen(what) == n && memcmp(s, what, n) == 0;
}

/* True when every topic that `filter` matches is matched by `pattern`.
 * Pattern levels are literals, '+' or a final '#'; a topic is a filter
 * without wildcards, so this also answers "does pattern match topic". */
static bool covers(const char *pattern, const char *filter) {
  const char *p = pattern, *f = filter;
  for (;;) {
    const char *pn, *fn;
    size_t pl = level(p, &pn);
    if (level_is(p, pl, "#"))
      return true; /* also matches the parent level: "a/#" matches "a" */
    if (f == NULL) {
      /* The filter ended; only a last "#" in the pattern would match. */
      return false;
    }
    size_t fl = level(f, &fn);
    if (level_is(p, pl, "+")) {
      if (level_is(f, fl, "#"))
        return false;
    } else if (pl != fl || memcmp(p, f, pl) != 0) {
      return false;
    }
    if (pn == NULL)
      return fn == NULL;
    if (fn == NULL) {
      /* "a/b" against "a/b/#": the parent level is matched by "#". */
      const char *pnn;
      size_t pnl = level(pn, &pnn);
      return pnn == NULL && level_is(pn, pnl, "#");
    }
    p = pn;
    f = fn;
  }
}

/* `<prefix>/<mid>/<rest...>` built into buf; false if it does not fit. */
static bool join(char *buf, size_t cap, const char *prefix, const char *mid,
                 const char *rest) {
  size_t a = strlen(prefix), b = strlen(mid), c = strlen(rest);
  if (a + b + c + 3 > cap)
    return false;
  memcpy(buf, prefix, a);
  buf[a] = '/';
  memcpy(buf + a + 1, mid, b);
  buf[a + 1 + b] = '/';
  memcpy(buf + a + 2 + b, rest, c + 1);
  return true;
}

static bool covered_by(const char *prefix, const char *mid, const char *rest,
                       const char *topic) {
  char pat[PREFIX_MAX + 64];
  return join(pat, sizeof pat, prefix, mid, rest) && covers(pat, topic);
}

/* `topic` equals `<prefix>/<mid>/<name>`. */
static bool is_own(const char *prefix, const char *mid, const char *name,
                   const char *topic) {
  char want[PREFIX_MAX + 96];
  return join(want, sizeof want, prefix, mid, name) && strcmp(want, topic) == 0;
}

/* `<prefix>/task/<type>/<name>` with one non-empty, wildcard-free level of
 * type. */
static bool is_own_task(const char *prefix, const char *name,
                        const char *topic) {
  size_t pl = strlen(prefix);
  if (strncmp(topic, prefix, pl) != 0 || strncmp(topic + pl, "/task/", 6))
    return false;
  const char *type = topic + pl + 6;
  const char *slash = strchr(type, '/');
  /* A type is a short name (SPEC.md, Conventions): a longer level would
   * make a re-routed topic (<prefix>/unserved/...) longer than MQTT's. */
  if (slash == NULL || slash == type || slash - type > BA_TYPE_MAX)
    return false;
  for (const char *c = type; c < slash; c++)
    if (*c == '+' || *c == '#')
      return false;
  return strcmp(slash + 1, name) == 0;
}

/* `$share/nimbus-<group>/<prefix>/<mid>/<type or +>/+`, where `mid` is
 * "task" (the typed groups) or "unserved" (tasks the plugin re-routed
 * because no worker serves their type). */
static bool is_worker_share(const char *prefix, const char *mid,
                            const char *filter) {
  static const char share[] = "$share/nimbus-";
  if (strncmp(filter, share, sizeof share - 1) != 0)
    return false;
  const char *group = filter + sizeof share - 1;
  const char *slash = strchr(group, '/');
  if (slash == NULL || slash == group)
    return false;
  for (const char *c = group; c < slash; c++)
    if (*c == '+' || *c == '#')
      return false;
  const char *f = slash + 1;
  size_t pl = strlen(prefix), ml = strlen(mid);
  if (strncmp(f, prefix, pl) != 0 || f[pl] != '/' ||
      strncmp(f + pl + 1, mid, ml) != 0 || f[pl + 1 + ml] != '/')
    return false;
  const char *type = f + pl + ml + 2;
  const char *tail = strchr(type, '/');
  if (tail == NULL || tail == type || strcmp(tail, "/+") != 0)
    return false;
  size_t tl = (size_t)(tail - type);
  if (level_is(type, tl, "+"))
    return true;
  for (const char *c = type; c < tail; c++)
    if (*c == '+' || *c == '#')
      return false;
  return true;
}

static bool terminal_rules(const char *user, const char *client_id,
                           const char *topic, int access, bool retain,
                           const char *prefix) {
  /* Checked again here, not only at CONNECT: it costs little and keeps a
   * session that somehow got another client id from acting. */
  if (!ba_client_id_ok(BA_ROLE_TERMINAL, user, client_id))
    return false;
  switch (access) {
  case BA_ACCESS_WRITE:
    return !retain && is_own_task(prefix, user, topic);
  case BA_ACCESS_SUBSCRIBE:
  case BA_ACCESS_READ:
    return is_own(prefix, "reply", user, topic) ||
           is_own(prefix, "notify", user, topic);
  default:
    return false;
  }
}

static bool worker_rules(const char *topic, int access, const char *prefix) {
  switch (access) {
  case BA_ACCESS_SUBSCRIBE:
    return is_worker_share(prefix, "task", topic) ||
           is_worker_share(prefix, "unserved", topic);
  case BA_ACCESS_READ:
    return covered_by(prefix, "task", "#", topic) ||
           covered_by(prefix, "unserved", "#", topic);
  case BA_ACCESS_WRITE:
    return covered_by(prefix, "reply", "+", topic) ||
           covered_by(prefix, "notify", "+", topic) ||
           covered_by(prefix, "monitor", "#", topic);
  default:
    return false;
  }
}

bool ba_acl_check(ba_role role, const char *username, const char *client_id,
                  const char *topic, int access, bool retain,
                  const char *prefix) {
  if (access == BA_ACCESS_UNSUBSCRIBE)
    return true;
  if (username == NULL || client_id == NULL || topic == NULL ||
      prefix == NULL || !ba_prefix_valid(prefix))
    return false;
  /* A published or delivered topic never holds a wildcard; the broker
   * rejects such a PUBLISH itself, but this must not depend on it. */
  if ((access == BA_ACCESS_WRITE || access == BA_ACCESS_READ) &&
      strpbrk(topic, "+#") != NULL)
    return false;
  switch (role) {
  case BA_ROLE_ADMIN:
    return access == BA_ACCESS_READ || access == BA_ACCESS_WRITE ||
           access == BA_ACCESS_SUBSCRIBE;
  case BA_ROLE_TERMINAL:
    return terminal_rules(username, client_id, topic, access, retain, prefix);
  case BA_ROLE_WORKER:
    return worker_rules(topic, access, prefix);
  case BA_ROLE_MONITOR:
    return (access == BA_ACCESS_SUBSCRIBE || access == BA_ACCESS_READ) &&
           covered_by(prefix, "monitor", "#", topic);
  default:
    return false;
  }
}
