/* Loading the agent onto terminals (PROTOCOL.md, The agent itself;
 * MISSION.md, Loading the agent): the Redis model of published agent
 * packages, of the offers the cloud makes unasked, and of what each
 * terminal was offered, answered and runs.
 *
 * A package is one (platform, version): its blob (the agent's file as
 * nimbusctl stored it, st_blob_writer), size, SHA-256 and the Ed25519
 * signature of PROTOCOL.md's statement (nb_sign.h), with notes for a
 * person and the time it was published. It holds one reference on its
 * blob (the blob's `refs`, as a snapshot, a share or a module does) until
 * it is withdrawn; then the blob is a candidate of the collector (nb:gc).
 * While a package lives, every terminal may read its blob (nb:agent:blobs,
 * consulted by the worker's one read check). Versions are semantic
 * versions (nb_semver.h) and are unique per platform by precedence:
 * 1.0.0+a and 1.0.0+b are the same version.
 *
 * An offer is the cloud's prompt to one terminal: random id, terminal,
 * platform, version, text, and a state. It is due (in nb:agent:due, by
 * time) when made and again `reoffer_after` after a refusal; a worker's
 * housekeeping takes due offers with st_agent_offers_take, which only one
 * worker wins per offer and due time, sends the notice and records it
 * with st_agent_offer_sent. Every change to an offer bumps its `rev`, and
 * every change is made only if the rev is still the one read, so a notice
 * sent while the terminal's answer lands, or an answer racing a new offer
 * of the operator's, never undoes the other.
 *
 * Offer states: due (made, not sent yet), offered (sent, no answer yet),
 * refused (answered no: due again later), accepted (answered yes: done),
 * dropped (nothing to send when it came due: the terminal runs that
 * version or a newer one, or the platform has no package any more),
 * replaced (the operator offered the terminal again). The last three are
 * final; a final offer is kept ST_AGENT_OFFER_KEEP_MS, then expires.
 *
 * Keys:
 *   nb:agent:pkg:<platform>:<version without +build>
 *                        hash {platform, version, blob, size, sig (64 raw
 *                        bytes), notes, ts}
 *   nb:agent:versions:<platform>  set of the platform's versions
 *   nb:agent:platforms   set of the platforms that have a package
 *   nb:agent:blobs       hash blob hex -> how many packages name it
 *   nb:agent:offer:<id>  hash {terminal, platform, version, text, state,
 *                        rev, created, sent, sends, answered}
 *   nb:agent:due         zset offer id -> when it is due (ms)
 *   nb:agent:term:<terminal>
 *                        hash {platform, installed, reported (what the
 *                        terminal said it runs, and when), offer, state,
 *                        version (its latest offer), offered, accepted,
 *                        refused (when each last happened)}
 *   nb:agent:terminals   set of the terminals that have such a record
 *
 * Every function returns 0 or a nimbus_err: NIMBUS_EREDIS with the reason
 * in st_redis_errstr, NIMBUS_EINVAL for a malformed argument (a platform,
 * version, terminal or offer id that the checks below refuse),
 * NIMBUS_ENOMEM. Strings are borrowed and NUL-terminated unless said. */
#ifndef ST_AGENT_H
#define ST_AGENT_H

#include "nb_semver.h"
#include "st.h"
#include "st_blob.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_AGENT_PLATFORM_MAX 64
#define ST_AGENT_VERSION_MAX NB_SEMVER_MAX
#define ST_AGENT_NOTES_MAX 2048
#define ST_AGENT_TEXT_MAX 256
#define ST_AGENT_OFFER_ID_MAX 64
/* How long a final offer's record stays for nimbusctl agent status. */
#define ST_AGENT_OFFER_KEEP_MS INT64_C(2592000000) /* 30 days */

/* A platform: 1-64 of [A-Za-z0-9._-] ("linux-x86_64"). */
bool st_agent_platform_valid(const char *s, size_t n);
/* An offer id: 1-64 of [A-Za-z0-9_-]. */
bool st_agent_offer_id_valid(const char *s, size_t n);
/* Notes for a person: valid UTF-8 of at most ST_AGENT_NOTES_MAX bytes,
 * with no control character but newline and tab. */
bool st_agent_notes_valid(const char *s, size_t n);

/* ---- Packages ------------------------------------------------------------ */

typedef struct st_agent_pkg {
  bool exists;
  char platform[ST_AGENT_PLATFORM_MAX + 1];
  char version[ST_AGENT_VERSION_MAX + 1];
  char blob[65]; /* = the SHA-256 hex of its bytes */
  uint64_t size;
  uint8_t sig[64];
  char notes[ST_AGENT_NOTES_MAX + 1];
  int64_t ts; /* published, ms since the epoch */
} st_agent_pkg;

/* Records package p, whose blob an st_blob_writer moved into the store
 * (its commit mark ends here; `sums`, nsegs entries, become the blob's
 * metadata when it has none), with one reference on the blob. Returns 0,
 * NIMBUS_ECONFLICT when the platform already has that version (by
 * precedence; nothing recorded, the blob left to the collector),
 * NIMBUS_ETIMEDOUT when the blob's commit mark lapsed and the collector
 * took it meanwhile (publish again), NIMBUS_EINVAL, NIMBUS_EREDIS. */
int st_agent_publish(st_redis *r, const st_agent_pkg *p,
                     const uint8_t (*sums)[ST_SEGSUM], uint64_t nsegs);

/* Reads the package (platform, version) into *out (caller storage);
 * out->exists false when there is none. */
int st_agent_pkg_get(st_redis *r, const char *platform, const char *version,
                     st_agent_pkg *out);

/* Reads the platform's newest package by precedence into *out;
 * out->exists false when the platform has none. */
int st_agent_newest(st_redis *r, const char *platform, st_agent_pkg *out);

/* Sets *versions (n entries; each and the array malloc'd: free each, then
 * the array; NULL when none) to the platform's versions, oldest first. */
int st_agent_versions(st_redis *r, const char *platform, char ***versions,
                      size_t *n);

/* Sets *platforms (n entries, malloc'd as above) to the platforms that
 * have a package, sorted bytewise. */
int st_agent_platforms(st_redis *r, char ***platforms, size_t *n);

/* Withdraws package (platform, version): its record goes, its blob is no
 * longer readable through it, and its reference is released (the blob a
 * candidate of the collector from now_ms). *found says whether there was
 * one. Offers already made stay; each sends the newest version left when
 * it comes due (or is dropped when none is). */
int st_agent_withdraw(st_redis *r, const char *platform, const char *version,
                      int64_t now_ms, bool *found);

/* ---- Offers and terminals ------------------------------------------------ */

typedef enum st_offer_state {
  ST_OFFER_NONE = 0, /* no offer */
  ST_OFFER_DUE,
  ST_OFFER_OFFERED,
  ST_OFFER_REFUSED,
  ST_OFFER_ACCEPTED,
  ST_OFFER_DROPPED,
  ST_OFFER_REPLACED,
} st_offer_state;

/* The state's name ("due", "offered", ...; "none"), static. */
const char *st_offer_state_name(st_offer_state s);
/* True for the states an answer or a send still acts on: due, offered,
 * refused. */
bool st_offer_live(st_offer_state s);

typedef struct st_agent_offer {
  bool exists;
  char id[ST_AGENT_OFFER_ID_MAX + 1];
  char terminal[65];
  char platform[ST_AGENT_PLATFORM_MAX + 1];
  char version[ST_AGENT_VERSION_MAX + 1];
  char text[ST_AGENT_TEXT_MAX + 1];
  st_offer_state state;
  int64_t rev;      /* bumped by every change: what the next one pins */
  int64_t created;  /* ms */
  int64_t sent;     /* the latest notice, ms; 0: never */
  int64_t sends;    /* notices sent */
  int64_t answered; /* the latest answer, ms; 0: none */
} st_agent_offer;

typedef struct st_agent_term {
  bool exists;
  char terminal[65];
  char platform[ST_AGENT_PLATFORM_MAX + 1]; /* "" until it reported */
  char installed[ST_AGENT_VERSION_MAX + 1]; /* "" until it reported */
  int64_t reported;                         /* ms; 0: never */
  char offer[ST_AGENT_OFFER_ID_MAX + 1];    /* its latest offer, or "" */
  st_offer_state state;                     /* that offer's */
  char version[ST_AGENT_VERSION_MAX + 1];   /* that offer's */
  int64_t offered, accepted, refused;       /* ms of the latest; 0: never */
  int64_t due; /* when that offer is (next) due to be sent; 0: it is not */
} st_agent_term;

/* Makes a new offer of `version` of `platform` to `terminal` with `text`
 * (at most ST_AGENT_TEXT_MAX bytes), due at now_ms; the terminal's earlier
 * offer, if still live, is replaced. id[] (ST_AGENT_OFFER_ID_MAX + 1
 * bytes) receives the new offer's id (22 random URL-safe characters).
 * Returns 0, NIMBUS_ESYS (no randomness), NIMBUS_EINVAL, NIMBUS_EREDIS. */
int st_agent_offer_new(st_redis *r, const char *terminal, const char *platform,
                       const char *version, const char *text, int64_t now_ms,
                       char id[ST_AGENT_OFFER_ID_MAX + 1]);

/* Reads offer `id` into *out (caller storage); out->exists false when
 * there is none (never made, or expired; an id that could be no offer's
 * is simply none). */
int st_agent_offer_get(st_redis *r, const char *id, st_agent_offer *out);

/* Takes up to `max` offers due at or before now_ms: each is moved to
 * now_ms + lease_ms in the due set in the same script that lists it, so
 * of several workers taking at once exactly one gets each, and should the
 * taker die before st_agent_offer_sent (or _drop) records what it did,
 * the offer is due again once the lease ends. ids (caller storage, max
 * entries) receive the ids taken; *n their count. The caller reads each
 * (st_agent_offer_get), then sends it, or drops it. */
int st_agent_offers_take(st_redis *r, int64_t now_ms, int64_t lease_ms,
                         size_t max, char (*ids)[ST_AGENT_OFFER_ID_MAX + 1],
                         size_t *n);

/* Records that offer o (as read: its rev is pinned) was sent at now_ms,
 * naming `version` (the newest of its platform then): state offered, out
 * of the due set, on the terminal's record. *recorded false, and nothing
 * changed, when the offer changed since it was read (the terminal
 * answered, the operator offered again). */
int st_agent_offer_sent(st_redis *r, const st_agent_offer *o,
                        const char *version, int64_t now_ms, bool *recorded);

/* Ends offer o (as read, rev pinned) as dropped: it came due with nothing
 * to send. *recorded as for st_agent_offer_sent. */
int st_agent_offer_drop(st_redis *r, const st_agent_offer *o, int64_t now_ms,
                        bool *recorded);

/* Drops a due-set member that names no offer record (made by a crash or
 * an expired record). */
int st_agent_due_forget(st_redis *r, const char *id);

/* Appends to task effect `t` the answer of o's terminal to offer o (as
 * read: the effect requires the record and pins its rev, so it fails
 * with NIMBUS_ECONFLICT at commit if anything changed it meanwhile):
 * accepted, the offer is done; refused, it is due again at due_again_ms.
 * The terminal's record notes the answer and when; `platform` and `have`
 * (may be NULL; a valid platform and version) become what it reported to
 * run. */
int st_agent_answer_effect(st_txn *t, const st_agent_offer *o, bool accept,
                           int64_t now_ms, int64_t due_again_ms,
                           const char *platform, const char *have);

/* Appends to task effect `t` that `terminal` runs `version` of the agent
 * for `platform` since now_ms. */
int st_agent_report_effect(st_txn *t, const char *terminal,
                           const char *platform, const char *version,
                           int64_t now_ms);

/* Reads the record of `terminal` into *out (caller storage); out->exists
 * false when it has none (never offered, never reported). */
int st_agent_term_get(st_redis *r, const char *terminal, st_agent_term *out);

/* Sets *terminals (n entries, malloc'd as st_agent_versions's) to every
 * terminal that has a record, sorted bytewise. */
int st_agent_terminals(st_redis *r, char ***terminals, size_t *n);

/* Frees a list of the calls above (n entries); NULL is a no-op. */
void st_agent_list_free(char **list, size_t n);

#endif
