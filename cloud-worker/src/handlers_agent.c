/* The agent handlers (PROTOCOL.md, The agent itself; MISSION.md, Loading
 * the agent): agent.get, agent.answer and agent.report, and the sending of
 * offers that came due.
 *
 * Packages are published by operators (nimbusctl agent publish: the blob
 * store and st_agent.h); the worker only reads them. agent.get answers
 * the newest package of a platform by semantic-version precedence (or
 * up_to_date), keeping no record. agent.answer records a terminal's yes
 * or no to an offer, and agent.report the version it runs; both commit
 * their effect with the recorded reply (st_agent_answer_effect pins the
 * offer's rev, so an answer racing a send or a new offer is answered 503
 * and sent again rather than applied to a state it did not see).
 *
 * Offers are made by nimbusctl agent offer, which only writes Redis; the
 * notices are sent here, by the worker's housekeeping thread (this
 * family's tick), which takes due offers atomically (st_agent_offers_take:
 * of several workers, one gets each), and sends each as the notice
 * agent.offer naming the platform's newest version, unless the terminal
 * already runs that version or a newer one, or the platform has no
 * package any more: then the offer is dropped. A refused offer is due
 * again reoffer_after_ms later; an offer never answered is not sent again
 * (the broker keeps the notice for a terminal's persistent session), and
 * an operator who wants it sent again offers again. */
#include "wk.h"

#include "nb_log.h"
#include "nb_semver.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_agent.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Due offers one tick takes at most, and how long a taken offer is kept
 * off the due set for its taker: a worker that dies between taking and
 * recording lets another send it once this lapses. */
#define TAKE_MAX 64
#define SEND_LEASE_MS 30000

typedef struct agent_config {
  int64_t reoffer_after_ms;
} agent_config;

static agent_config agent_cfg;

/* ---- Arguments ----------------------------------------------------------- */

/* args.<key> as a platform into out[]; *given false (and 0) when it is
 * optional and absent; else 400 after wk_fail. */
static int arg_platform(wk_ctx *c, const char *key, bool required, char *out,
                        bool *given) {
  const char *s = NULL;
  size_t n = 0;
  *given = false;
  int rc = sc_arg_str(c->args, key, required, 1, 256, &s, &n, c->error,
                      sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return 400;
  if (!st_agent_platform_valid(s, n))
    return wk_fail(c, 400, "a platform is named like \"linux-x86_64\"",
                   "args.%s must be 1-64 characters of A-Z a-z 0-9 . _ -", key);
  memcpy(out, s, n);
  out[n] = '\0';
  *given = true;
  return 0;
}

/* args.<key> as a semantic version into out[]; as arg_platform. */
static int arg_version(wk_ctx *c, const char *key, bool required, char *out,
                       bool *given) {
  const char *s = NULL;
  size_t n = 0;
  *given = false;
  int rc = sc_arg_str(c->args, key, required, 1, 256, &s, &n, c->error,
                      sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return 400;
  if (!nb_semver_valid(s, n))
    return wk_fail(c, 400,
                   "versions are semantic versions such as \"1.2.0\" or "
                   "\"1.3.0-rc.1\" (semver.org)",
                   "args.%s is not a semantic version", key);
  memcpy(out, s, n);
  out[n] = '\0';
  *given = true;
  return 0;
}

/* ---- Results --------------------------------------------------------------
 */

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  wk_pack_str(pk, k);
  wk_pack_str(pk, v);
}

/* agent.get's result for the newest package p, given what the terminal
 * runs (have, or NULL). */
static void pack_newest(msgpack_packer *pk, const st_agent_pkg *p,
                        const char *have) {
  if (have != NULL && nb_semver_cmp(have, p->version) >= 0) {
    msgpack_pack_map(pk, 1);
    wk_pack_str(pk, "up_to_date");
    msgpack_pack_true(pk);
    return;
  }
  char sig[2 * sizeof p->sig + 1];
  nb_hex(p->sig, sizeof p->sig, sig);
  msgpack_pack_map(pk, 8);
  pack_kv_str(pk, "platform", p->platform);
  pack_kv_str(pk, "version", p->version);
  pack_kv_str(pk, "blob", p->blob);
  wk_pack_kv_int(pk, "size", (int64_t)p->size);
  pack_kv_str(pk, "sha256", p->blob);
  pack_kv_str(pk, "signature", sig);
  pack_kv_str(pk, "notes", p->notes);
  wk_pack_kv_int(pk, "published", p->ts);
}

/* ---- agent.get ------------------------------------------------------------
 */

static int no_package(wk_ctx *c, const char *platform) {
  return wk_fail(c, 404,
                 "ask the cloud's operators to publish the agent for this "
                 "platform",
                 "there is no agent package for platform \"%s\"", platform);
}

static int h_agent_get(wk_ctx *c) {
  char platform[ST_AGENT_PLATFORM_MAX + 1], have[ST_AGENT_VERSION_MAX + 1];
  bool given = false, has_have = false;
  int code = arg_platform(c, "platform", true, platform, &given);
  if (code == 0)
    code = arg_version(c, "have", false, have, &has_have);
  if (code != 0)
    return code;
  st_agent_pkg p;
  if (st_agent_newest(c->redis, platform, &p) != 0)
    return wk_redis_down(c);
  if (!p.exists)
    return no_package(c, platform);
  pack_newest(&c->pk, &p, has_have ? have : NULL);
  return 0;
}

/* ---- agent.answer ---------------------------------------------------------
 */

static int h_agent_answer(wk_ctx *c) {
  const char *id = NULL;
  size_t id_len = 0;
  bool accept = false, has_plat = false, has_have = false;
  char oid[ST_AGENT_OFFER_ID_MAX + 1], platform[ST_AGENT_PLATFORM_MAX + 1],
      have[ST_AGENT_VERSION_MAX + 1];
  if (sc_arg_str(c->args, "offer", true, 1, 256, &id, &id_len, c->error,
                 sizeof c->error) != 0 ||
      sc_arg_bool(c->args, "accept", true, &accept, c->error,
                  sizeof c->error) != 0)
    return 400;
  int code = arg_platform(c, "platform", false, platform, &has_plat);
  if (code == 0)
    code = arg_version(c, "have", false, have, &has_have);
  if (code != 0)
    return code;
  /* An offer that is not this terminal's to answer (none has that id, it
   * is another terminal's, or it is over) is answered ok, changing
   * nothing: the same answer in each case. */
  if (!st_agent_offer_id_valid(id, id_len))
    return 0;
  memcpy(oid, id, id_len);
  oid[id_len] = '\0';
  st_agent_offer o;
  if (st_agent_offer_get(c->redis, oid, &o) != 0)
    return wk_redis_down(c);
  if (!o.exists || strcmp(o.terminal, c->terminal) != 0 ||
      !st_offer_live(o.state))
    return 0;
  if (!has_plat)
    nb_strlcpy(platform, o.platform, sizeof platform);
  int64_t now = nb_now_ms();
  int64_t again = agent_cfg.reoffer_after_ms > INT64_MAX - now
                      ? INT64_MAX
                      : now + agent_cfg.reoffer_after_ms;
  if (st_agent_answer_effect(c->effect, &o, accept, now, again, platform,
                             has_have ? have : NULL) != 0)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  if (!accept)
    return 0;
  st_agent_pkg p;
  if (st_agent_newest(c->redis, platform, &p) != 0)
    return wk_redis_down(c);
  /* Withdrawn since it was offered, with nothing left: nothing to send. */
  if (p.exists)
    pack_newest(&c->pk, &p, has_have ? have : NULL);
  return 0;
}

/* ---- agent.report ---------------------------------------------------------
 */

static int h_agent_report(wk_ctx *c) {
  char platform[ST_AGENT_PLATFORM_MAX + 1], version[ST_AGENT_VERSION_MAX + 1];
  bool given = false;
  int code = arg_platform(c, "platform", true, platform, &given);
  if (code == 0)
    code = arg_version(c, "version", true, version, &given);
  if (code != 0)
    return code;
  if (st_agent_report_effect(c->effect, c->terminal, platform, version,
                             nb_now_ms()) != 0)
    return wk_fail(c, 500, NULL, "the worker is out of memory");
  msgpack_pack_map(&c->pk, 2);
  pack_kv_str(&c->pk, "platform", platform);
  pack_kv_str(&c->pk, "version", version);
  return 0;
}

/* ---- Sending due offers (the tick) ----------------------------------------
 */

/* Redis trouble on the housekeeping thread, said at most once a minute
 * (every round would fail alike). */
static void tick_trouble(wk_tick *t, const char *what) {
  static _Atomic int64_t last;
  int64_t now = nb_mono_ms(), prev = atomic_load(&last);
  if ((prev == 0 || now - prev >= 60000) &&
      atomic_compare_exchange_strong(&last, &prev, now))
    NB_WARN("WK-AGENT-OFFERS", "%s: %s (offers wait until it works)", what,
            st_redis_errstr(t->redis));
}

/* The agent.offer notice for offer o naming package p, into out. */
static int offer_notice(msgpack_sbuffer *out, const st_agent_offer *o,
                        const st_agent_pkg *p) {
  char text[ST_AGENT_TEXT_MAX + 64];
  if (o->text[0] != '\0')
    nb_strlcpy(text, o->text, sizeof text);
  else
    snprintf(text, sizeof text, "Nimbus agent %s is available", p->version);
  msgpack_sbuffer f;
  msgpack_sbuffer_init(&f);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &f, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 5);
  pack_kv_str(&pk, "offer", o->id);
  pack_kv_str(&pk, "platform", o->platform);
  pack_kv_str(&pk, "version", p->version);
  wk_pack_kv_int(&pk, "size", (int64_t)p->size);
  pack_kv_str(&pk, "text", text);
  msgpack_object obj;
  msgpack_zone *z = NULL;
  char err[128];
  int rc = sc_value_decode((const uint8_t *)f.data, f.size, &obj, &z, err,
                           sizeof err);
  if (rc == 0)
    rc = sc_notice_encode(out, "agent.offer", &obj);
  if (z != NULL)
    msgpack_zone_free(z);
  msgpack_sbuffer_destroy(&f);
  return rc;
}

/* Ends offer o as dropped (it came due with nothing to send). */
static void drop(wk_tick *t, const st_agent_offer *o, const char *why) {
  bool done = false;
  if (st_agent_offer_drop(t->redis, o, t->now_ms, &done) != 0)
    tick_trouble(t, "cannot drop an offer");
  else if (done)
    NB_INFO("WK-AGENT-OFFER", "offer %s to %s dropped: %s", o->id, o->terminal,
            why);
}

/* Sends the due offer `id`, which this worker took. */
static void send_one(wk_tick *t, const char *id) {
  st_agent_offer o;
  st_agent_pkg p;
  st_agent_term term;
  if (st_agent_offer_get(t->redis, id, &o) != 0) {
    tick_trouble(t, "cannot read an offer");
    return; /* due again once the lease lapses */
  }
  if (!o.exists || !st_offer_live(o.state)) {
    /* A member of the due set with no live offer behind it. */
    if (st_agent_due_forget(t->redis, id) != 0)
      tick_trouble(t, "cannot forget a stale offer");
    return;
  }
  if (st_agent_newest(t->redis, o.platform, &p) != 0 ||
      st_agent_term_get(t->redis, o.terminal, &term) != 0) {
    tick_trouble(t, "cannot read what an offer sends");
    return;
  }
  if (!p.exists) {
    drop(t, &o, "its platform has no package any more");
    return;
  }
  if (term.installed[0] != '\0' && strcmp(term.platform, o.platform) == 0 &&
      nb_semver_cmp(term.installed, p.version) >= 0) {
    char why[200];
    snprintf(why, sizeof why, "the terminal runs %s, the newest is %s",
             term.installed, p.version);
    drop(t, &o, why);
    return;
  }
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  bool recorded = false;
  if (offer_notice(&out, &o, &p) != 0) {
    NB_ERROR("WK-AGENT-OFFER", "cannot encode the notice of offer %s", o.id);
  } else if (wk_tick_notice(t, o.terminal, out.data, out.size) != 0) {
    /* Not sent (the worker is reconnecting): the lease brings it back. */
  } else if (st_agent_offer_sent(t->redis, &o, p.version, t->now_ms,
                                 &recorded) != 0) {
    /* Sent, not recorded: sent again once the lease lapses. */
    tick_trouble(t, "cannot record a sent offer");
  } else {
    NB_INFO("WK-AGENT-OFFER", "offer %s sent to %s: %s %s%s", o.id, o.terminal,
            o.platform, p.version,
            recorded ? "" : " (answered or replaced meanwhile)");
  }
  msgpack_sbuffer_destroy(&out);
}

static void agent_tick(wk_tick *t) {
  char ids[TAKE_MAX][ST_AGENT_OFFER_ID_MAX + 1];
  size_t n = 0;
  if (st_agent_offers_take(t->redis, t->now_ms, SEND_LEASE_MS, TAKE_MAX, ids,
                           &n) != 0) {
    tick_trouble(t, "cannot take due offers");
    return;
  }
  for (size_t i = 0; i < n; i++)
    send_one(t, ids[i]);
}

/* ---- The family -----------------------------------------------------------
 */

static const nb_opt agent_options[] = {
    {"reoffer_after_ms", NB_OPT_INT, "86400000",
     "how long after a terminal refused an agent offer it is offered again, "
     "ms (24 h)",
     offsetof(agent_config, reoffer_after_ms), 1, INT64_C(31536000000), NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

static int agent_limits(wk_limits *l) {
  return wk_limit_add(l, "reoffer_after", agent_cfg.reoffer_after_ms);
}

/* Redis only, a few round trips each: the quick pool. */
static const wk_handler agent_handlers[] = {
    {.type = "agent.get", .pool = "quick", .fn = h_agent_get},
    {.type = "agent.answer",
     .flags = WK_STATEFUL,
     .pool = "quick",
     .fn = h_agent_answer},
    {.type = "agent.report",
     .flags = WK_STATEFUL,
     .pool = "quick",
     .fn = h_agent_report},
    {.type = NULL},
};

const wk_family wk_family_agent = {
    .abi = WK_FAMILY_ABI,
    .name = "agent",
    .options = agent_options,
    .config = &agent_cfg,
    .limits = agent_limits,
    .handlers = agent_handlers,
    .tick = agent_tick,
};
