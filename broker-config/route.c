/* Which task types have a worker subscribed, and where a task of a type
 * without one goes (route.h). Two tables: every recorded subscription
 * (client, filter, its type), unsorted, scanned only on unsubscribe and
 * disconnect; and the served types with a count of subscriptions each,
 * sorted, so the check made for every published task is one binary
 * search. */
#include "route.h"

#include "nimbus/errors.h"

#include <stdlib.h>
#include <string.h>

typedef struct sub_rec {
  const void *client;
  char *filter;     /* owned */
  const char *type; /* into filter; NULL when it serves every type */
  size_t type_len;
} sub_rec;

typedef struct type_count {
  char *type; /* owned, type_len bytes (not NUL-terminated) */
  size_t len;
  size_t n; /* subscriptions serving it, > 0 */
} type_count;

struct ba_route {
  sub_rec *subs;
  size_t nsubs, capsubs;
  type_count *types; /* sorted by type_cmp */
  size_t ntypes, captypes;
  size_t nall; /* subscriptions serving every type */
  ba_route_change_fn on_change;
  void *arg;
};

/* The length of the level at `s` (up to '/' or the end). */
static size_t level_len(const char *s) { return strcspn(s, "/"); }

static bool is_level(const char *s, size_t n, const char *what) {
  return strlen(what) == n && memcmp(s, what, n) == 0;
}

ba_serves ba_filter_serves(const char *filter, const char *prefix,
                           const char **type, size_t *type_len) {
  if (filter == NULL || prefix == NULL || prefix[0] == '\0')
    return BA_SERVES_NONE;
  const char *f = filter;
  if (strncmp(f, "$share/", 7) == 0) {
    size_t gl = level_len(f + 7);
    if (gl == 0 || f[7 + gl] != '/')
      return BA_SERVES_NONE;
    f += 7 + gl + 1;
  }
  /* `$`-topics are never matched by a wildcard, and no task topic starts
   * with `$` (the prefix may not). */
  if (f[0] == '$')
    return BA_SERVES_NONE;
  /* The prefix levels, then "task": each a '+' or the same literal; a
   * '#' there takes every task. `p` is the rest of the prefix, NULL once
   * it is used up and the "task" level comes. */
  const char *p = prefix;
  for (bool task_level = false; !task_level;) {
    const char *want = p != NULL ? p : "task";
    size_t wl = p != NULL ? level_len(p) : 4;
    task_level = p == NULL;
    size_t fl = level_len(f);
    if (is_level(f, fl, "#"))
      return BA_SERVES_ALL;
    if (!is_level(f, fl, "+") && (fl != wl || memcmp(f, want, wl) != 0))
      return BA_SERVES_NONE;
    if (f[fl] != '/')
      return BA_SERVES_NONE; /* the filter ends above the type level */
    f += fl + 1;
    if (p != NULL)
      p = p[wl] == '\0' ? NULL : p + wl + 1;
  }
  /* The type level, then exactly one level of terminal that takes every
   * terminal. */
  size_t tl = level_len(f);
  if (is_level(f, tl, "#"))
    return BA_SERVES_ALL;
  if (tl == 0 || f[tl] != '/')
    return BA_SERVES_NONE;
  const char *t = f;
  const char *term = f + tl + 1;
  if (!is_level(term, strlen(term), "+") && !is_level(term, strlen(term), "#"))
    return BA_SERVES_NONE;
  if (is_level(t, tl, "+"))
    return BA_SERVES_ALL;
  /* A literal type level holds no wildcard character: the broker refuses
   * such filters (mosquitto_sub_topic_check), so this is only defence. */
  for (size_t i = 0; i < tl; i++)
    if (t[i] == '+' || t[i] == '#')
      return BA_SERVES_NONE;
  *type = t;
  *type_len = tl;
  return BA_SERVES_TYPE;
}

ba_route *ba_route_new(ba_route_change_fn on_change, void *arg) {
  ba_route *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->on_change = on_change;
  r->arg = arg;
  return r;
}

void ba_route_free(ba_route *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->nsubs; i++)
    free(r->subs[i].filter);
  free(r->subs);
  for (size_t i = 0; i < r->ntypes; i++)
    free(r->types[i].type);
  free(r->types);
  free(r);
}

static int type_cmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c != 0)
    return c;
  return al < bl ? -1 : (al > bl ? 1 : 0);
}

/* The index of `type` in r->types, or where it would go (*found false). */
static size_t type_find(const ba_route *r, const char *type, size_t len,
                        bool *found) {
  size_t lo = 0, hi = r->ntypes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = type_cmp(r->types[mid].type, r->types[mid].len, type, len);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

static void changed(const ba_route *r, const char *type, size_t len,
                    bool served) {
  if (r->on_change != NULL)
    r->on_change(type, len, served, r->arg);
}

/* Counts one more subscription for `type` (NULL: every type). */
static int type_add(ba_route *r, const char *type, size_t len) {
  if (type == NULL) {
    if (r->nall++ == 0)
      changed(r, "+", 1, true);
    return 0;
  }
  bool found;
  size_t i = type_find(r, type, len, &found);
  if (found) {
    r->types[i].n++;
    return 0;
  }
  if (r->ntypes == r->captypes) {
    size_t cap = r->captypes ? r->captypes * 2 : 16;
    type_count *t = realloc(r->types, cap * sizeof *t);
    if (t == NULL)
      return NIMBUS_ENOMEM;
    r->types = t;
    r->captypes = cap;
  }
  char *copy = malloc(len);
  if (copy == NULL)
    return NIMBUS_ENOMEM;
  memcpy(copy, type, len);
  memmove(&r->types[i + 1], &r->types[i], (r->ntypes - i) * sizeof r->types[0]);
  r->types[i].type = copy;
  r->types[i].len = len;
  r->types[i].n = 1;
  r->ntypes++;
  changed(r, type, len, true);
  return 0;
}

/* Counts one subscription less for `type` (NULL: every type). */
static void type_del(ba_route *r, const char *type, size_t len) {
  if (type == NULL) {
    if (r->nall > 0 && --r->nall == 0)
      changed(r, "+", 1, false);
    return;
  }
  bool found;
  size_t i = type_find(r, type, len, &found);
  if (!found || --r->types[i].n > 0)
    return;
  type_count gone = r->types[i];
  memmove(&r->types[i], &r->types[i + 1],
          (r->ntypes - i - 1) * sizeof r->types[0]);
  r->ntypes--;
  changed(r, gone.type, gone.len, false);
  free(gone.type);
}

static size_t sub_find(const ba_route *r, const void *client,
                       const char *filter) {
  for (size_t i = 0; i < r->nsubs; i++)
    if (r->subs[i].client == client && strcmp(r->subs[i].filter, filter) == 0)
      return i;
  return r->nsubs;
}

int ba_route_subscribe(ba_route *r, const void *client, const char *filter,
                       const char *prefix) {
  const char *type = NULL;
  size_t len = 0;
  ba_serves s = ba_filter_serves(filter, prefix, &type, &len);
  if (s == BA_SERVES_NONE || sub_find(r, client, filter) < r->nsubs)
    return 0;
  if (r->nsubs == r->capsubs) {
    size_t cap = r->capsubs ? r->capsubs * 2 : 64;
    sub_rec *v = realloc(r->subs, cap * sizeof *v);
    if (v == NULL)
      return NIMBUS_ENOMEM;
    r->subs = v;
    r->capsubs = cap;
  }
  char *copy = strdup(filter);
  if (copy == NULL)
    return NIMBUS_ENOMEM;
  sub_rec *rec = &r->subs[r->nsubs];
  rec->client = client;
  rec->filter = copy;
  rec->type = s == BA_SERVES_TYPE ? copy + (type - filter) : NULL;
  rec->type_len = s == BA_SERVES_TYPE ? len : 0;
  if (type_add(r, rec->type, rec->type_len) != 0) {
    free(copy);
    return NIMBUS_ENOMEM;
  }
  r->nsubs++;
  return 0;
}

/* Forgets subscription i (the last one takes its place). */
static void sub_drop(ba_route *r, size_t i) {
  sub_rec rec = r->subs[i];
  r->subs[i] = r->subs[--r->nsubs];
  type_del(r, rec.type, rec.type_len);
  free(rec.filter);
}

void ba_route_unsubscribe(ba_route *r, const void *client, const char *filter) {
  if (filter == NULL)
    return;
  size_t i = sub_find(r, client, filter);
  if (i < r->nsubs)
    sub_drop(r, i);
}

void ba_route_client_gone(ba_route *r, const void *client) {
  for (size_t i = 0; i < r->nsubs;) {
    if (r->subs[i].client == client)
      sub_drop(r, i); /* the last one moved to i: look at i again */
    else
      i++;
  }
}

bool ba_route_served(const ba_route *r, const char *type, size_t len) {
  bool found = false;
  if (r->nall > 0)
    return true;
  (void)type_find(r, type, len, &found);
  return found;
}

const char *ba_route_unserved(const ba_route *r, const char *topic,
                              const char *prefix) {
  size_t pl = strlen(prefix);
  if (strncmp(topic, prefix, pl) != 0 || strncmp(topic + pl, "/task/", 6))
    return NULL;
  const char *rest = topic + pl + 6;
  size_t tl = level_len(rest);
  if (tl == 0 || rest[tl] != '/')
    return NULL;
  const char *term = rest + tl + 1;
  size_t ml = level_len(term);
  if (ml == 0 || term[ml] != '\0')
    return NULL;
  return ba_route_served(r, rest, tl) ? NULL : rest;
}

size_t ba_unserved_topic(const char *prefix, const char *rest, char *out,
                         size_t cap) {
  static const char mid[] = "/unserved/";
  size_t pl = strlen(prefix), ml = sizeof mid - 1, rl = strlen(rest);
  size_t n = pl + ml + rl;
  if (n < cap) {
    memcpy(out, prefix, pl);
    memcpy(out + pl, mid, ml);
    memcpy(out + pl + ml, rest, rl + 1);
  }
  return n;
}

size_t ba_route_subscriptions(const ba_route *r) { return r->nsubs; }
size_t ba_route_types(const ba_route *r) { return r->ntypes; }
size_t ba_route_serve_all(const ba_route *r) { return r->nall; }
