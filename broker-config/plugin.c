/* nimbus_auth.so: the Mosquitto plugin (API version 5) that enforces
 * PROTOCOL.md's identity and topic rules, which Mosquitto's own ACL file
 * and dynamic security plugin cannot express (FINDINGS.md): the ACL file
 * never checks SUBSCRIBE, so any terminal could join the workers' shared
 * group and silently swallow tasks, and nothing ties a client id to a
 * username, so any account could take over another terminal's session.
 *
 * Options: plugin_opt_accounts FILE (required), plugin_opt_prefix PREFIX
 * (default cloud/v1), plugin_opt_route_unserved true|false (default true:
 * tasks of a type no worker serves are re-published on the unserved
 * topics, route.h). The accounts file is re-read whenever its inode,
 * size or mtime changed: checked at every CONNECT (so an account added by
 * nimbusctl can connect at once) and at most once a second otherwise (so
 * an account deleted loses its rights within a second, and its live
 * connections are closed). A file that fails to parse is logged and
 * ignored; the last good table stays in force. Every ACL check looks the
 * client's username up in the current table: rights follow the file, not
 * the state at CONNECT. Mosquitto calls all of this from its one main
 * thread, so there is no locking. */
#include "accounts.h"
#include "route.h"

#include "nimbus/errors.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
/* The error and log constants live in <mosquitto.h>, which Debian ships in
 * libmosquitto-dev, not mosquitto-dev. Their values are part of the broker's
 * ABI (include/mosquitto.h, 2.0.x), so they are repeated here when that
 * header is absent. */
#if defined(__has_include) && __has_include(<mosquitto.h>)
#include <mosquitto.h>
#else
#define MOSQ_ERR_SUCCESS 0
#define MOSQ_ERR_NOMEM 1
#define MOSQ_ERR_INVAL 3
#define MOSQ_ERR_AUTH 11
#define MOSQ_ERR_ACL_DENIED 12
#define MOSQ_LOG_INFO (1 << 0)
#define MOSQ_LOG_NOTICE (1 << 1)
#define MOSQ_LOG_WARNING (1 << 2)
#define MOSQ_LOG_ERR (1 << 3)
#define MOSQ_LOG_DEBUG (1 << 4)
#endif

_Static_assert(BA_ACCESS_READ == MOSQ_ACL_READ, "access values");
_Static_assert(BA_ACCESS_WRITE == MOSQ_ACL_WRITE, "access values");
_Static_assert(BA_ACCESS_SUBSCRIBE == MOSQ_ACL_SUBSCRIBE, "access values");
_Static_assert(BA_ACCESS_UNSUBSCRIBE == MOSQ_ACL_UNSUBSCRIBE, "access values");

#define EXPORT __attribute__((visibility("default")))
#define CHECK_EVERY_MS 1000

/* Passwords verified lately, so a terminal that reconnects costs one HMAC
 * instead of a PBKDF2 run (about 5 ms of the broker's only thread, during
 * which no message moves). Direct-mapped by account name; an entry holds
 * HMAC-SHA256(key, name, stored hash, password) under a key made at start,
 * so it is worthless outside this process and stops matching the moment
 * the account's stored hash changes (passwd, del and add again). Wrong
 * passwords are never cached: they always pay the full cost. */
#define AUTH_CACHE 4096

typedef struct auth_cache {
  uint8_t key[32];
  uint8_t mac[AUTH_CACHE][32];
  bool used[AUTH_CACHE];
} auth_cache;

typedef struct plugin {
  mosquitto_plugin_id_t *id;
  auth_cache *cache;
  char *path;
  char *prefix;
  ba_accounts *table; /* never NULL once initialised */
  ba_file_id loaded;  /* the file version `table` came from */
  bool have_loaded;   /* false while the file has never been read */
  ba_file_id bad;     /* the last version that failed, not retried */
  bool have_bad;
  bool warned_missing;
  int64_t checked_ms;
  char **kick; /* names deleted since the last tick; their clients go */
  size_t nkick;
  bool tick_ok;
  ba_route *route; /* NULL when route_unserved is off */
  bool route_lost; /* a subscription could not be recorded (memory) */
} plugin;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies an untrusted string for a log line: at most 64 bytes, anything
 * outside printable ASCII as '?', so that no client can forge log lines. */
static const char *printable(const char *s, char *buf, size_t cap) {
  size_t i = 0;
  if (s == NULL)
    return "(none)";
  for (; s[i] != '\0' && i + 1 < cap && i < 64; i++)
    buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  buf[i] = '\0';
  return buf;
}

/* Names in `old` that `new` no longer has: their live clients are closed
 * at the next tick (kicking from inside an auth or ACL callback would pull
 * a client out from under the broker's own loop). */
static void queue_kicks(plugin *pl, const ba_accounts *old,
                        const ba_accounts *new) {
  for (size_t i = 0; i < old->n; i++) {
    if (ba_accounts_find(new, old->v[i].name) != NULL)
      continue;
    char **k = realloc(pl->kick, (pl->nkick + 1) * sizeof *k);
    if (k == NULL)
      return; /* they still lose every right at their next action */
    pl->kick = k;
    pl->kick[pl->nkick] = strdup(old->v[i].name);
    if (pl->kick[pl->nkick] != NULL)
      pl->nkick++;
  }
}

static void refresh(plugin *pl, bool force) {
  ba_file_id now;
  char err[256];
  pl->checked_ms = mono_ms();
  int rc = ba_file_stat(pl->path, &now);
  if (rc != 0) {
    if (!pl->warned_missing)
      mosquitto_log_printf(MOSQ_LOG_WARNING,
                           "BA-ACCOUNTS-MISSING nimbus_auth: cannot stat %s; "
                           "keeping %zu accounts",
                           pl->path, pl->table->n);
    pl->warned_missing = true;
    return;
  }
  pl->warned_missing = false;
  if (!force && pl->have_loaded && ba_file_id_equal(&now, &pl->loaded))
    return;
  if (!force && pl->have_bad && ba_file_id_equal(&now, &pl->bad))
    return;
  ba_accounts *t = NULL;
  ba_file_id id;
  rc = ba_accounts_load(pl->path, &t, &id, err, sizeof err);
  if (rc != 0) {
    pl->bad = now;
    pl->have_bad = true;
    mosquitto_log_printf(MOSQ_LOG_WARNING,
                         "BA-ACCOUNTS-BAD nimbus_auth: %s; keeping the %zu "
                         "accounts loaded before",
                         err, pl->table->n);
    return;
  }
  queue_kicks(pl, pl->table, t);
  ba_accounts_free(pl->table);
  pl->table = t;
  pl->loaded = id;
  pl->have_loaded = true;
  pl->have_bad = false;
  mosquitto_log_printf(MOSQ_LOG_INFO,
                       "BA-ACCOUNTS-LOAD nimbus_auth: %zu accounts from %s",
                       t->n, pl->path);
}

static void maybe_refresh(plugin *pl) {
  if (mono_ms() - pl->checked_ms >= CHECK_EVERY_MS)
    refresh(pl, false);
}

static size_t cache_slot(const char *name) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 16777619u;
  return h % AUTH_CACHE;
}

/* The entry's MAC of (name, hash, password); false when it cannot be made
 * (then the cache is simply not used). */
static bool cache_mac(const auth_cache *c, const char *name, const char *hash,
                      const char *password, uint8_t out[32]) {
  size_t ln = strlen(name) + 1, lh = strlen(hash) + 1, lp = strlen(password);
  unsigned char *buf = malloc(ln + lh + lp + 1);
  unsigned int outlen = 0;
  if (buf == NULL)
    return false;
  memcpy(buf, name, ln);
  memcpy(buf + ln, hash, lh);
  memcpy(buf + ln + lh, password, lp);
  bool ok = HMAC(EVP_sha256(), c->key, sizeof c->key, buf, ln + lh + lp, out,
                 &outlen) != NULL &&
            outlen == 32;
  OPENSSL_cleanse(buf, ln + lh + lp);
  free(buf);
  return ok;
}

/* Verifies `password` for account `a`, through the cache when it can. */
static bool password_ok(plugin *pl, const ba_account *a, const char *password) {
  uint8_t mac[32];
  bool have_mac = pl->cache != NULL &&
                  cache_mac(pl->cache, a->name, a->hash, password, mac);
  size_t slot = cache_slot(a->name);
  if (have_mac && pl->cache->used[slot] &&
      CRYPTO_memcmp(pl->cache->mac[slot], mac, sizeof mac) == 0)
    return true;
  if (!ba_verify_password(a->hash, password))
    return false;
  if (have_mac) {
    memcpy(pl->cache->mac[slot], mac, sizeof mac);
    pl->cache->used[slot] = true;
  }
  return true;
}

static int on_basic_auth(int event, void *event_data, void *userdata) {
  plugin *pl = userdata;
  struct mosquitto_evt_basic_auth *ev = event_data;
  const char *why;
  const char *user = ev->username;
  const char *client_id = mosquitto_client_id(ev->client);
  const ba_account *a = NULL;
  char ubuf[72], cbuf[72];
  (void)event;
  refresh(pl, false);
  if (user == NULL || ev->password == NULL) {
    why = "no username or password";
    goto deny;
  }
  a = ba_accounts_find(pl->table, user);
  if (a == NULL) {
    /* As slow as a wrong password, so refusals do not tell which
     * terminal ids exist. */
    ba_verify_dummy(ev->password);
    why = "unknown account";
    goto deny;
  }
  if (!password_ok(pl, a, ev->password)) {
    why = "wrong password";
    goto deny;
  }
  if (!ba_client_id_ok(a->role, user, client_id)) {
    why = "client id is not <terminal>.<device>";
    goto deny;
  }
  return MOSQ_ERR_SUCCESS;
deny:
  mosquitto_log_printf(MOSQ_LOG_NOTICE,
                       "BA-AUTH-DENY nimbus_auth: user %s client %s: %s",
                       printable(user, ubuf, sizeof ubuf),
                       printable(client_id, cbuf, sizeof cbuf), why);
  return MOSQ_ERR_AUTH;
}

/* Keeps the table of served task types up to date: the broker adds a
 * subscription right after its SUBSCRIBE check passes and removes one right
 * after its UNSUBSCRIBE check, on this same thread. Only workers count: an
 * admin watching the task topics serves nothing. */
static void track_subscription(plugin *pl,
                               const struct mosquitto_evt_acl_check *ev,
                               ba_role role, bool allowed) {
  if (pl->route == NULL)
    return;
  if (ev->access == MOSQ_ACL_UNSUBSCRIBE) {
    ba_route_unsubscribe(pl->route, ev->client, ev->topic);
    return;
  }
  if (ev->access != MOSQ_ACL_SUBSCRIBE || !allowed || role != BA_ROLE_WORKER)
    return;
  if (ba_route_subscribe(pl->route, ev->client, ev->topic, pl->prefix) != 0 &&
      !pl->route_lost) {
    pl->route_lost = true;
    mosquitto_log_printf(MOSQ_LOG_ERR,
                         "BA-ROUTE-NOMEM nimbus_auth: out of memory: a "
                         "worker subscription is not counted, so its type "
                         "may be taken for unserved");
  }
}

static int on_acl_check(int event, void *event_data, void *userdata) {
  plugin *pl = userdata;
  struct mosquitto_evt_acl_check *ev = event_data;
  (void)event;
  maybe_refresh(pl);
  const char *user = mosquitto_client_username(ev->client);
  const ba_account *a = ba_accounts_find(pl->table, user);
  ba_role role = a ? a->role : BA_ROLE_NONE;
  bool ok = ba_acl_check(role, user, mosquitto_client_id(ev->client), ev->topic,
                         ev->access, ev->retain, pl->prefix);
  if (ev->access == MOSQ_ACL_SUBSCRIBE || ev->access == MOSQ_ACL_UNSUBSCRIBE)
    track_subscription(pl, ev, role, ok);
  if (!ok && ev->access != MOSQ_ACL_READ) {
    /* A refused READ is routine (a terminal's persistent session outliving
     * its account); a refused SUBSCRIBE or PUBLISH is worth a line. */
    char ubuf[72], tbuf[72];
    mosquitto_log_printf(
        MOSQ_LOG_NOTICE, "BA-ACL-DENY nimbus_auth: user %s %s %s%s",
        printable(user, ubuf, sizeof ubuf),
        ev->access == MOSQ_ACL_SUBSCRIBE ? "subscribe" : "publish",
        printable(ev->topic, tbuf, sizeof tbuf), ev->retain ? " (retain)" : "");
  }
  return ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

/* A task of a type no worker serves is published again on
 * <prefix>/unserved/<type>/<terminal>, where the workers' unserved group
 * answers it; the original goes on to the subscribers it has, which are
 * no workers (an MQTT 5 publisher gets PUBACK 0x10, no matching
 * subscribers, as for any topic no one reads).
 *
 * It is a new message rather than the same one with its topic replaced,
 * because who frees a replaced topic changed within Mosquitto 2.0:
 * 2.0.11 leaves the old topic to the plugin (measured: a plugin that does
 * not free it leaks every re-routed task's topic), later 2.0 releases free
 * it themselves, and a plugin that freed it there would free it twice.
 * mosquitto_broker_publish() means the same on every 2.0 release: it takes
 * a payload from mosquitto_malloc() and frees it after use. */
static int on_message(int event, void *event_data, void *userdata) {
  plugin *pl = userdata;
  struct mosquitto_evt_message *ev = event_data;
  (void)event;
  const char *rest = ba_route_unserved(pl->route, ev->topic, pl->prefix);
  if (rest == NULL)
    return MOSQ_ERR_SUCCESS;
  size_t n = ba_unserved_topic(pl->prefix, rest, NULL, 0);
  if (n > 65535) /* past MQTT's topic length: the ACL keeps it out */
    return MOSQ_ERR_SUCCESS;
  char *topic = malloc(n + 1);
  void *payload = NULL;
  if (topic == NULL || (ev->payloadlen > 0 &&
                        (payload = mosquitto_malloc(ev->payloadlen)) == NULL)) {
    free(topic);
    mosquitto_log_printf(MOSQ_LOG_ERR,
                         "BA-ROUTE-NOMEM nimbus_auth: out of memory: a task "
                         "of an unserved type was not re-routed");
    return MOSQ_ERR_SUCCESS; /* the terminal sends it again */
  }
  (void)ba_unserved_topic(pl->prefix, rest, topic, n + 1);
  if (ev->payloadlen > 0)
    memcpy(payload, ev->payload, ev->payloadlen);
  int rc = mosquitto_broker_publish(NULL, topic, (int)ev->payloadlen, payload,
                                    ev->qos, false, NULL);
  if (rc != MOSQ_ERR_SUCCESS) {
    mosquitto_free(payload);
    char tbuf[72];
    mosquitto_log_printf(MOSQ_LOG_WARNING,
                         "BA-ROUTE-FAILED nimbus_auth: could not re-route "
                         "%s (error %d)",
                         printable(ev->topic, tbuf, sizeof tbuf), rc);
  }
  free(topic);
  return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata) {
  plugin *pl = userdata;
  struct mosquitto_evt_disconnect *ev = event_data;
  (void)event;
  ba_route_client_gone(pl->route, ev->client);
  return MOSQ_ERR_SUCCESS;
}

/* One line each time a task type gains its first worker subscription or
 * loses its last one, so the log tells where its tasks went. */
static void on_route_change(const char *type, size_t len, bool served,
                            void *arg) {
  plugin *pl = arg;
  char tbuf[72], copy[72];
  size_t n = len < sizeof copy - 1 ? len : sizeof copy - 1;
  memcpy(copy, type, n);
  copy[n] = '\0';
  if (served)
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "BA-ROUTE-SERVED nimbus_auth: a worker serves task "
                         "type %s",
                         printable(copy, tbuf, sizeof tbuf));
  else
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "BA-ROUTE-UNSERVED nimbus_auth: no worker serves "
                         "task type %s any more; its tasks go to "
                         "%s/unserved/",
                         printable(copy, tbuf, sizeof tbuf), pl->prefix);
}

static int on_reload(int event, void *event_data, void *userdata) {
  (void)event;
  (void)event_data;
  refresh(userdata, true);
  return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata) {
  plugin *pl = userdata;
  (void)event;
  (void)event_data;
  maybe_refresh(pl);
  for (size_t i = 0; i < pl->nkick; i++) {
    /* Still gone now: a file caught half written, or an account deleted
     * and added again since, keeps its clients. */
    if (ba_accounts_find(pl->table, pl->kick[i]) == NULL) {
      mosquitto_log_printf(MOSQ_LOG_NOTICE,
                           "BA-ACCOUNT-GONE nimbus_auth: closing the "
                           "connections of deleted account %s",
                           pl->kick[i]);
      mosquitto_kick_client_by_username(pl->kick[i], false);
    }
    free(pl->kick[i]);
  }
  free(pl->kick);
  pl->kick = NULL;
  pl->nkick = 0;
  return MOSQ_ERR_SUCCESS;
}

static void plugin_free(plugin *pl) {
  if (pl == NULL)
    return;
  for (size_t i = 0; i < pl->nkick; i++)
    free(pl->kick[i]);
  free(pl->kick);
  ba_accounts_free(pl->table);
  ba_route_free(pl->route);
  free(pl->path);
  free(pl->prefix);
  if (pl->cache != NULL) {
    OPENSSL_cleanse(pl->cache, sizeof *pl->cache);
    free(pl->cache);
  }
  free(pl);
}

EXPORT int mosquitto_plugin_version(int supported_version_count,
                                    const int *supported_versions) {
  for (int i = 0; i < supported_version_count; i++)
    if (supported_versions[i] == 5)
      return 5;
  return -1;
}

EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                 void **userdata, struct mosquitto_opt *options,
                                 int option_count) {
  char err[256];
  int rc = MOSQ_ERR_NOMEM;
  plugin *pl = calloc(1, sizeof *pl);
  if (pl == NULL)
    goto fail;
  pl->id = identifier;
  /* Without a cache every CONNECT pays PBKDF2: slower, still correct. */
  pl->cache = calloc(1, sizeof *pl->cache);
  if (pl->cache != NULL && RAND_bytes(pl->cache->key, 32) != 1) {
    free(pl->cache);
    pl->cache = NULL;
  }
  bool route_unserved = true;
  for (int i = 0; i < option_count; i++) {
    char **slot = NULL;
    if (strcmp(options[i].key, "accounts") == 0)
      slot = &pl->path;
    else if (strcmp(options[i].key, "prefix") == 0)
      slot = &pl->prefix;
    else if (strcmp(options[i].key, "route_unserved") == 0) {
      if (strcmp(options[i].value, "true") == 0)
        route_unserved = true;
      else if (strcmp(options[i].value, "false") == 0)
        route_unserved = false;
      else {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "BA-CONFIG nimbus_auth: plugin_opt_route_unserved "
                             "must be true or false, not \"%s\"",
                             options[i].value);
        rc = MOSQ_ERR_INVAL;
        goto fail;
      }
      continue;
    }
    if (slot == NULL) {
      /* A misspelt option would otherwise leave a default in force. */
      mosquitto_log_printf(MOSQ_LOG_ERR,
                           "BA-CONFIG nimbus_auth: unknown option "
                           "plugin_opt_%s",
                           options[i].key);
      rc = MOSQ_ERR_INVAL;
      goto fail;
    }
    free(*slot);
    *slot = strdup(options[i].value);
    if (*slot == NULL)
      goto fail;
  }
  if (pl->path == NULL || pl->path[0] == '\0') {
    mosquitto_log_printf(MOSQ_LOG_ERR, "BA-CONFIG nimbus_auth: "
                                       "plugin_opt_accounts is required");
    rc = MOSQ_ERR_INVAL;
    goto fail;
  }
  if (pl->prefix == NULL && (pl->prefix = strdup(BA_PREFIX_DEFAULT)) == NULL)
    goto fail;
  if (!ba_prefix_valid(pl->prefix)) {
    mosquitto_log_printf(MOSQ_LOG_ERR,
                         "BA-CONFIG nimbus_auth: invalid plugin_opt_prefix "
                         "\"%s\" (levels without wildcards, no leading $)",
                         pl->prefix);
    rc = MOSQ_ERR_INVAL;
    goto fail;
  }
  int lrc =
      ba_accounts_load(pl->path, &pl->table, &pl->loaded, err, sizeof err);
  if (lrc == NIMBUS_ENOTFOUND) {
    /* Let the broker come up before the first account exists; every
     * CONNECT looks again. */
    mosquitto_log_printf(MOSQ_LOG_WARNING,
                         "BA-ACCOUNTS-MISSING nimbus_auth: %s does not exist "
                         "yet; no account can connect until it does",
                         pl->path);
    pl->table = ba_accounts_new();
    if (pl->table == NULL)
      goto fail;
  } else if (lrc != 0) {
    /* At start there is no older table to fall back on: refuse to run
     * rather than run with no accounts. */
    mosquitto_log_printf(MOSQ_LOG_ERR, "BA-ACCOUNTS-BAD nimbus_auth: %s", err);
    rc = MOSQ_ERR_INVAL;
    goto fail;
  } else {
    pl->have_loaded = true;
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "BA-ACCOUNTS-LOAD nimbus_auth: %zu accounts from %s, "
                         "prefix %s",
                         pl->table->n, pl->path, pl->prefix);
  }
  pl->checked_ms = mono_ms();
  if (route_unserved && (pl->route = ba_route_new(on_route_change, pl)) == NULL)
    goto fail;
  if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH,
                                  on_basic_auth, NULL, pl) != 0 ||
      mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check,
                                  NULL, pl) != 0 ||
      mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL,
                                  pl) != 0 ||
      (pl->route != NULL &&
       (mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message,
                                    NULL, pl) != 0 ||
        mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT,
                                    on_disconnect, NULL, pl) != 0))) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "BA-CONFIG nimbus_auth: cannot "
                                       "register callbacks");
    rc = MOSQ_ERR_INVAL;
    goto fail_registered;
  }
  mosquitto_log_printf(MOSQ_LOG_INFO,
                       "BA-ROUTE nimbus_auth: tasks of types no worker "
                       "serves %s",
                       pl->route != NULL ? "go to <prefix>/unserved/"
                                         : "are not re-routed "
                                           "(route_unserved false)");
  /* Without ticks, deleted accounts still lose every right at once; only
   * their idle connections stay open. */
  pl->tick_ok = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick,
                                            NULL, pl) == 0;
  *userdata = pl;
  return MOSQ_ERR_SUCCESS;
fail_registered:
  mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth,
                                NULL);
  mosquitto_callback_unregister(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check,
                                NULL);
  mosquitto_callback_unregister(identifier, MOSQ_EVT_RELOAD, on_reload, NULL);
  if (pl->route != NULL) {
    mosquitto_callback_unregister(identifier, MOSQ_EVT_MESSAGE, on_message,
                                  NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_DISCONNECT,
                                  on_disconnect, NULL);
  }
fail:
  plugin_free(pl);
  return rc;
}

EXPORT int mosquitto_plugin_cleanup(void *userdata,
                                    struct mosquitto_opt *options,
                                    int option_count) {
  plugin *pl = userdata;
  (void)options;
  (void)option_count;
  if (pl == NULL)
    return MOSQ_ERR_SUCCESS;
  mosquitto_callback_unregister(pl->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth,
                                NULL);
  mosquitto_callback_unregister(pl->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
  mosquitto_callback_unregister(pl->id, MOSQ_EVT_RELOAD, on_reload, NULL);
  if (pl->tick_ok)
    mosquitto_callback_unregister(pl->id, MOSQ_EVT_TICK, on_tick, NULL);
  if (pl->route != NULL) {
    mosquitto_callback_unregister(pl->id, MOSQ_EVT_MESSAGE, on_message, NULL);
    mosquitto_callback_unregister(pl->id, MOSQ_EVT_DISCONNECT, on_disconnect,
                                  NULL);
  }
  plugin_free(pl);
  return MOSQ_ERR_SUCCESS;
}
