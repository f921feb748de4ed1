/* Unit tests of nimbus_auth.so's table of served task types
 * (broker-config/route.h): which subscription filters serve which types,
 * the counts per client through subscribe, unsubscribe and disconnect, and
 * which task topics go to <prefix>/unserved/. broker-config/selftest.sh
 * checks the plugin around it against a real mosquitto. */
#include "route.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define PFX "cloud/v1"

/* ---- Filters ----------------------------------------------------------- */

typedef struct filter_case {
  const char *filter;
  ba_serves want;
  const char *type; /* for BA_SERVES_TYPE */
} filter_case;

static const filter_case filters[] = {
    /* what workers subscribe to */
    {"$share/nimbus-ping/" PFX "/task/ping/+", BA_SERVES_TYPE, "ping"},
    {"$share/nimbus-process.image/" PFX "/task/process.image/+", BA_SERVES_TYPE,
     "process.image"},
    {"$share/nimbus-unserved/" PFX "/task/+/+", BA_SERVES_ALL, NULL},
    /* unshared, and other groups: the same */
    {PFX "/task/ping/+", BA_SERVES_TYPE, "ping"},
    {PFX "/task/ping/#", BA_SERVES_TYPE, "ping"},
    {"$share/g/" PFX "/task/blob.put/+", BA_SERVES_TYPE, "blob.put"},
    /* wildcards above the type level take every type */
    {PFX "/task/+/+", BA_SERVES_ALL, NULL},
    {PFX "/task/#", BA_SERVES_ALL, NULL},
    {PFX "/#", BA_SERVES_ALL, NULL},
    {"#", BA_SERVES_ALL, NULL},
    {"+/v1/task/+/+", BA_SERVES_ALL, NULL},
    {"+/+/+/+/+", BA_SERVES_ALL, NULL},
    {"cloud/+/task/ping/+", BA_SERVES_TYPE, "ping"},
    {PFX "/+/ping/+", BA_SERVES_TYPE, "ping"},
    {"$share/g/#", BA_SERVES_ALL, NULL},
    /* one terminal's tasks, other levels, other topics: nothing */
    {PFX "/task/ping/alice", BA_SERVES_NONE, NULL},
    {PFX "/task/+/alice", BA_SERVES_NONE, NULL},
    {PFX "/task/ping", BA_SERVES_NONE, NULL},
    {PFX "/task/ping/+/x", BA_SERVES_NONE, NULL},
    {PFX "/task/ping/+/#", BA_SERVES_NONE, NULL},
    {PFX "/task//+", BA_SERVES_NONE, NULL},
    {PFX "/task", BA_SERVES_NONE, NULL},
    {PFX "/task/", BA_SERVES_NONE, NULL},
    {PFX, BA_SERVES_NONE, NULL},
    {PFX "/reply/+", BA_SERVES_NONE, NULL},
    {PFX "/unserved/+/+", BA_SERVES_NONE, NULL},
    {"$share/nimbus-unserved/" PFX "/unserved/+/+", BA_SERVES_NONE, NULL},
    {PFX "/tasks/ping/+", BA_SERVES_NONE, NULL},
    {"cloud/v2/task/ping/+", BA_SERVES_NONE, NULL},
    {"cloud/v1x/task/ping/+", BA_SERVES_NONE, NULL},
    {"cloud/task/ping/+", BA_SERVES_NONE, NULL},
    {"x/" PFX "/task/ping/+", BA_SERVES_NONE, NULL},
    {"$SYS/#", BA_SERVES_NONE, NULL},
    {"$share/g", BA_SERVES_NONE, NULL},
    {"$share//" PFX "/task/ping/+", BA_SERVES_NONE, NULL},
    {"", BA_SERVES_NONE, NULL},
};

static void test_filters(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
    const filter_case *c = &filters[i];
    const char *type = NULL;
    size_t len = 0;
    ba_serves got = ba_filter_serves(c->filter, PFX, &type, &len);
    if (got != c->want)
      fail_msg("row %zu: %s: expected %d, got %d", i, c->filter, c->want, got);
    if (got == BA_SERVES_TYPE &&
        (len != strlen(c->type) || memcmp(type, c->type, len) != 0))
      fail_msg("row %zu: %s: type %.*s, expected %s", i, c->filter, (int)len,
               type, c->type);
  }
}

static void test_filter_prefix(void **state) {
  (void)state;
  const char *type = NULL;
  size_t len = 0;
  assert_int_equal(ba_filter_serves("$share/nimbus-ping/acme/task/ping/+",
                                    "acme", &type, &len),
                   BA_SERVES_TYPE);
  assert_int_equal(len, 4);
  assert_int_equal(ba_filter_serves("a/b/c/task/x/+", "a/b/c", &type, &len),
                   BA_SERVES_TYPE);
  assert_int_equal(len, 1);
  assert_int_equal(ba_filter_serves("a/b/task/x/+", "a/b/c", &type, &len),
                   BA_SERVES_NONE);
  assert_int_equal(ba_filter_serves("a/b/c/d/task/x/+", "a/b/c", &type, &len),
                   BA_SERVES_NONE);
  assert_int_equal(ba_filter_serves("a/#", "a/b/c", &type, &len),
                   BA_SERVES_ALL);
  assert_int_equal(ba_filter_serves(PFX "/task/ping/+", "acme", &type, &len),
                   BA_SERVES_NONE);
  assert_int_equal(ba_filter_serves(NULL, PFX, &type, &len), BA_SERVES_NONE);
  assert_int_equal(ba_filter_serves("#", NULL, &type, &len), BA_SERVES_NONE);
}

/* ---- The table --------------------------------------------------------- */

/* Records every change the table reports, as "+type" and "-type". */
typedef struct changes {
  char log[512];
} changes;

static void on_change(const char *type, size_t len, bool served, void *arg) {
  changes *c = arg;
  size_t n = strlen(c->log);
  snprintf(c->log + n, sizeof c->log - n, "%s%c%.*s", n ? " " : "",
           served ? '+' : '-', (int)len, type);
}

static bool served(const ba_route *r, const char *type) {
  return ba_route_served(r, type, strlen(type));
}

/* Two workers and a third client, told apart by address only. */
static int w1, w2, w3;

static void test_subscribe_and_disconnect(void **state) {
  (void)state;
  changes ch = {""};
  ba_route *r = ba_route_new(on_change, &ch);
  assert_non_null(r);
  assert_false(served(r, "ping"));

  assert_int_equal(
      ba_route_subscribe(r, &w1, "$share/nimbus-ping/" PFX "/task/ping/+", PFX),
      0);
  assert_int_equal(
      ba_route_subscribe(r, &w1,
                         "$share/nimbus-blob.put/" PFX "/task/blob.put/+", PFX),
      0);
  /* the unserved group serves no type: not recorded */
  assert_int_equal(
      ba_route_subscribe(r, &w1, "$share/nimbus-unserved/" PFX "/unserved/+/+",
                         PFX),
      0);
  assert_int_equal(
      ba_route_subscribe(r, &w2, "$share/nimbus-ping/" PFX "/task/ping/+", PFX),
      0);
  /* the same filter again from the same client counts once */
  assert_int_equal(
      ba_route_subscribe(r, &w2, "$share/nimbus-ping/" PFX "/task/ping/+", PFX),
      0);
  assert_int_equal(ba_route_subscriptions(r), 3);
  assert_int_equal(ba_route_types(r), 2);
  assert_true(served(r, "ping"));
  assert_true(served(r, "blob.put"));
  assert_false(served(r, "blob.get"));
  assert_false(served(r, "pin"));
  assert_false(served(r, "pingg"));
  assert_false(served(r, ""));
  assert_true(ba_route_served(r, "ping/alice", 4));
  assert_string_equal(ch.log, "+ping +blob.put");

  /* w1 goes: ping still has w2, blob.put has no one */
  ba_route_client_gone(r, &w1);
  assert_true(served(r, "ping"));
  assert_false(served(r, "blob.put"));
  assert_int_equal(ba_route_subscriptions(r), 1);
  assert_string_equal(ch.log, "+ping +blob.put -blob.put");

  /* a client that never subscribed goes: nothing changes */
  ba_route_client_gone(r, &w3);
  assert_int_equal(ba_route_subscriptions(r), 1);

  ba_route_client_gone(r, &w2);
  assert_false(served(r, "ping"));
  assert_int_equal(ba_route_subscriptions(r), 0);
  assert_int_equal(ba_route_types(r), 0);
  assert_string_equal(ch.log, "+ping +blob.put -blob.put -ping");
  ba_route_free(r);
}

static void test_unsubscribe(void **state) {
  (void)state;
  changes ch = {""};
  ba_route *r = ba_route_new(on_change, &ch);
  assert_non_null(r);
  const char *ping = "$share/nimbus-ping/" PFX "/task/ping/+";
  const char *ping2 = "$share/other/" PFX "/task/ping/+";
  assert_int_equal(ba_route_subscribe(r, &w1, ping, PFX), 0);
  assert_int_equal(ba_route_subscribe(r, &w1, ping2, PFX), 0);
  /* another client's filter, or one never made, is not ours to drop */
  ba_route_unsubscribe(r, &w2, ping);
  ba_route_unsubscribe(r, &w1, "$share/nimbus-ping/" PFX "/task/ping/#");
  ba_route_unsubscribe(r, &w1, NULL);
  assert_int_equal(ba_route_subscriptions(r), 2);
  /* the same type through two subscriptions: served until both go */
  ba_route_unsubscribe(r, &w1, ping);
  assert_true(served(r, "ping"));
  ba_route_unsubscribe(r, &w1, ping2);
  assert_false(served(r, "ping"));
  ba_route_unsubscribe(r, &w1, ping2);
  assert_string_equal(ch.log, "+ping -ping");
  /* subscribed again after leaving */
  assert_int_equal(ba_route_subscribe(r, &w1, ping, PFX), 0);
  assert_true(served(r, "ping"));
  ba_route_free(r);
}

static void test_serve_all(void **state) {
  (void)state;
  changes ch = {""};
  ba_route *r = ba_route_new(on_change, &ch);
  assert_non_null(r);
  const char *all = "$share/nimbus-unserved/" PFX "/task/+/+";
  assert_int_equal(ba_route_subscribe(r, &w1, all, PFX), 0);
  assert_int_equal(ba_route_subscribe(r, &w2, all, PFX), 0);
  assert_int_equal(ba_route_serve_all(r), 2);
  assert_true(served(r, "anything"));
  assert_null(ba_route_unserved(r, PFX "/task/anything/alice", PFX));
  ba_route_client_gone(r, &w1);
  assert_true(served(r, "anything"));
  ba_route_unsubscribe(r, &w2, all);
  assert_false(served(r, "anything"));
  assert_int_equal(ba_route_serve_all(r), 0);
  assert_string_equal(ch.log, "++ -+");
  ba_route_free(r);
}

/* Many clients and types, dropped in another order than they came: the
 * sorted type table and the counts stay right. */
static void test_many(void **state) {
  (void)state;
  static int clients[40];
  ba_route *r = ba_route_new(NULL, NULL);
  assert_non_null(r);
  char filter[128];
  for (int c = 0; c < 40; c++)
    for (int t = 0; t < 30; t++) {
      if ((c + t) % 3 != 0)
        continue;
      snprintf(filter, sizeof filter, "$share/nimbus-t%d/" PFX "/task/t%d/+", t,
               t);
      assert_int_equal(ba_route_subscribe(r, &clients[c], filter, PFX), 0);
    }
  assert_int_equal(ba_route_types(r), 30);
  for (int c = 39; c >= 0; c -= 2)
    ba_route_client_gone(r, &clients[c]);
  char type[16];
  for (int t = 0; t < 30; t++) {
    /* left: even clients; type t is served by client c when (c+t)%3 == 0 */
    bool want = false;
    for (int c = 0; c < 40; c += 2)
      want |= (c + t) % 3 == 0;
    snprintf(type, sizeof type, "t%d", t);
    assert_int_equal(served(r, type), want);
  }
  for (int c = 0; c < 40; c += 2)
    ba_route_client_gone(r, &clients[c]);
  assert_int_equal(ba_route_types(r), 0);
  assert_int_equal(ba_route_subscriptions(r), 0);
  ba_route_free(r);
}

/* ---- Where a task goes ------------------------------------------------- */

static void test_unserved_topics(void **state) {
  (void)state;
  ba_route *r = ba_route_new(NULL, NULL);
  assert_non_null(r);
  assert_int_equal(
      ba_route_subscribe(r, &w1, "$share/nimbus-ping/" PFX "/task/ping/+", PFX),
      0);
  /* a served type goes where it was sent */
  assert_null(ba_route_unserved(r, PFX "/task/ping/alice", PFX));
  /* an unserved one is re-routed: the rest after <prefix>/task/ */
  const char *rest = ba_route_unserved(r, PFX "/task/task.status/alice", PFX);
  assert_non_null(rest);
  assert_string_equal(rest, "task.status/alice");
  /* not a task topic of exactly <prefix>/task/<type>/<terminal> */
  assert_null(ba_route_unserved(r, PFX "/reply/alice", PFX));
  assert_null(ba_route_unserved(r, PFX "/monitor/worker/w1", PFX));
  assert_null(ba_route_unserved(r, PFX "/unserved/x/alice", PFX));
  assert_null(ba_route_unserved(r, PFX "/task/x", PFX));
  assert_null(ba_route_unserved(r, PFX "/task/x/", PFX));
  assert_null(ba_route_unserved(r, PFX "/task//alice", PFX));
  assert_null(ba_route_unserved(r, PFX "/task/x/alice/more", PFX));
  assert_null(ba_route_unserved(r, "cloud/v2/task/x/alice", PFX));
  assert_null(ba_route_unserved(r, "cloud/v1x/task/x/alice", PFX));
  assert_null(ba_route_unserved(r, "cloud", PFX));
  /* the prefix is the one configured */
  assert_non_null(ba_route_unserved(r, "acme/task/x/alice", "acme"));
  assert_null(ba_route_unserved(r, "acme/task/ping/alice", "acme"));
  assert_null(ba_route_unserved(r, PFX "/task/x/alice", "acme"));

  char out[64];
  size_t n = ba_unserved_topic(PFX, "task.status/alice", out, sizeof out);
  assert_int_equal(n, strlen(PFX "/unserved/task.status/alice"));
  assert_string_equal(out, PFX "/unserved/task.status/alice");
  /* too small: nothing written, the length still told */
  char tiny[8] = "keep";
  assert_int_equal(ba_unserved_topic(PFX, "x/alice", tiny, sizeof tiny),
                   strlen(PFX "/unserved/x/alice"));
  assert_string_equal(tiny, "keep");
  assert_int_equal(ba_unserved_topic(PFX, "x/alice", NULL, 0),
                   strlen(PFX "/unserved/x/alice"));
  ba_route_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_filters),
      cmocka_unit_test(test_filter_prefix),
      cmocka_unit_test(test_subscribe_and_disconnect),
      cmocka_unit_test(test_unsubscribe),
      cmocka_unit_test(test_serve_all),
      cmocka_unit_test(test_many),
      cmocka_unit_test(test_unserved_topics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
