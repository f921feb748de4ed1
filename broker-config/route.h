/* Routing of tasks whose type no worker serves, for nimbus_auth.so
 * (plugin option route_unserved, on by default).
 *
 * PROTOCOL.md: a task of a type the cloud does not serve still gets a
 * reply (400). The broker knows which types have a worker: the plugin
 * authorises every SUBSCRIBE, so it records each worker's task
 * subscriptions (`$share/<group>/<prefix>/task/<type>/+`) per client and
 * drops them when that client unsubscribes or disconnects. A task
 * published on `<prefix>/task/<type>/<terminal>` whose type has no
 * subscribed worker is re-published on `<prefix>/unserved/<type>/<terminal>`,
 * where every worker's `$share/nimbus-unserved/<prefix>/unserved/+/+`
 * group answers it; a task of a served type goes where it was sent, so no
 * task reaches a worker twice. A subscription with `+` (or `#`) at the
 * type level serves every type: while one exists nothing is re-routed.
 *
 * Pure data-structure code with no broker in it, so it is unit tested
 * alone; the broker calls its plugin from one thread, so nothing here
 * locks. Clients are opaque pointers, compared, never dereferenced. */
#ifndef BA_ROUTE_H
#define BA_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

/* What one subscription filter takes of the task topics under a prefix. */
typedef enum ba_serves {
  BA_SERVES_NONE = 0, /* no task topic of every terminal */
  BA_SERVES_TYPE,     /* all tasks of one type */
  BA_SERVES_ALL       /* all tasks of every type */
} ba_serves;

/* Reads `filter` (a SUBSCRIBE filter as the client sent it, `$share/<group>/`
 * included; borrowed) under `prefix`. BA_SERVES_TYPE when it matches
 * `<prefix>/task/<T>/<any terminal>` for exactly one non-empty type T, which
 * is then returned in *type (pointing into `filter`) and *type_len;
 * BA_SERVES_ALL when it matches the tasks of every type (`+` or `#` at or
 * above the type level); BA_SERVES_NONE otherwise, e.g. for a filter of one
 * terminal's tasks, of other topics, or `$`-topics. */
ba_serves ba_filter_serves(const char *filter, const char *prefix,
                           const char **type, size_t *type_len);

typedef struct ba_route ba_route;

/* Called when a type gains its first worker subscription (served true) or
 * loses its last one (false); `type` (not NUL-terminated, `len` bytes) is
 * "+" for the subscriptions that serve every type. */
typedef void (*ba_route_change_fn)(const char *type, size_t len, bool served,
                                   void *arg);

/* Returns a new empty table, or NULL when out of memory. `on_change` may be
 * NULL. Free it with ba_route_free(). */
ba_route *ba_route_new(ba_route_change_fn on_change, void *arg);

/* Frees `r` and everything it holds; NULL is a no-op. */
void ba_route_free(ba_route *r);

/* Records that worker `client` subscribed to `filter` (copied) under
 * `prefix`. A filter that serves no task type is ignored, as is the same
 * filter from the same client again (the broker keeps one subscription).
 * Returns 0 or NIMBUS_ENOMEM (then nothing is recorded: the type may be
 * taken for unserved while this subscription lives). */
int ba_route_subscribe(ba_route *r, const void *client, const char *filter,
                       const char *prefix);

/* `client` unsubscribed from `filter`: forgets that subscription, if it
 * was recorded. */
void ba_route_unsubscribe(ba_route *r, const void *client, const char *filter);

/* `client` is gone (disconnected): forgets every subscription it had. */
void ba_route_client_gone(ba_route *r, const void *client);

/* True when some recorded subscription serves task type `type` (`len`
 * bytes, not NUL-terminated), or every type. */
bool ba_route_served(const ba_route *r, const char *type, size_t len);

/* For a publish on `topic` (borrowed): NULL when it goes where it was sent
 * (not a task topic `<prefix>/task/<type>/<terminal>` of exactly those
 * levels, or its type is served); otherwise the part of `topic` after
 * `<prefix>/task/`, i.e. `<type>/<terminal>`, which belongs under
 * `<prefix>/unserved/`. */
const char *ba_route_unserved(const ba_route *r, const char *topic,
                              const char *prefix);

/* Writes `<prefix>/unserved/<rest>` and a NUL into `out` when it fits in
 * `cap` bytes. Returns the length of that topic (without the NUL) either
 * way, so a caller can size `out` with a first call of cap 0. */
size_t ba_unserved_topic(const char *prefix, const char *rest, char *out,
                         size_t cap);

/* Numbers for the tests and the log: recorded subscriptions, distinct
 * types served, subscriptions that serve every type. */
size_t ba_route_subscriptions(const ba_route *r);
size_t ba_route_types(const ba_route *r);
size_t ba_route_serve_all(const ba_route *r);

#endif
