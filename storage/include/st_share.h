/* Shares (PROTOCOL.md, "Sharing"): the Redis model of a blob one terminal
 * (the owner) hands to others, by token or by owner and name, for a
 * limited time, to a limited number of terminals, or to named ones.
 *
 * A share is a record naming one blob, which it keeps alive with one
 * reference (`refs` of nb:blob:<hex>, as a snapshot does) until it is
 * released. A share ends when it expires, when its owner revokes it, or
 * when a new share of the same owner and name replaces it; revoke and
 * replace only mark the record dead (revoked = 1) and move it to the front
 * of the expiry index, so one path, the janitor's st_share_sweep, releases
 * every ended share: its record, its index entries and its reference, the
 * blob then becoming a candidate of the collector (nb:gc).
 *
 * A download counts once per (share, terminal), in one script
 * (st_share_take) that also checks validity, the addressees and
 * max_downloads, so the limit holds when many terminals ask at the same
 * instant; the owner's own gets never count. A terminal that got a share
 * holds a grant on its blob (nb:sgrant:<terminal>), which blob.get checks
 * together with the share's record on every read (st_blobs_granted):
 * the right ends the moment the share ends, with nothing cached. A
 * picture's share may name a thumbnail, another blob it holds a reference
 * on as it does on its blob; whoever gets the share (its owner too) holds
 * a grant on the thumbnail the same way, and the sweep releases both.
 *
 * Keys (prefix nb:; a name appears only as its SHA-256, so no byte of it
 * ever shapes a key):
 *   nb:share:<token>                 hash {owner, name, blob, mime, size,
 *                                    created, expires_at, max, to, revoked,
 *                                    thumb (a picture's thumbnail, hex)}
 *   nb:share:<token>:got             set of terminals whose download counted
 *   nb:share:<token>:to              set of the addressees (when `to`)
 *   nb:shares:<owner>                sorted set (score 0) of members
 *                                    "<created, 13 digits>.<token>"
 *   nb:shares:in:<terminal>          the same, of shares addressed to it
 *   nb:sharename:<owner>:<sha256 of name, hex>  hash {token}
 *   nb:share:expiry                  sorted set token -> expires_at (ms;
 *                                    moved to the revoke time on revoke)
 *   nb:sgrant:<terminal>             sorted set (score 0) of members
 *                                    "<blob hex>.<token>"
 *
 * Changes made by tasks are appended to an st_txn and applied by the
 * dispatcher with the task's recorded reply (st.h); reads and the
 * janitor's sweep are direct. Every function returns 0 or a nimbus_err:
 * NIMBUS_EREDIS with the reason in st_redis_errstr, NIMBUS_ENOMEM,
 * NIMBUS_EINVAL for a key that would not fit. */
#ifndef ST_SHARE_H
#define ST_SHARE_H

#include "st.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A token: 24 characters of URL-safe base64 ([A-Za-z0-9_-]), 144 bits from
 * the OS's random source (nb_random_id). */
#define ST_SHARE_TOKEN_LEN 24
/* A name: 1-255 bytes of UTF-8 (checked by the handler). */
#define ST_SHARE_NAME_MAX 255
/* A MIME type as stored. */
#define ST_SHARE_MIME_MAX 127
/* Addressees of one share at most. */
#define ST_SHARE_TO_MAX 100
/* A list member: 13 digits, '.', a token. */
#define ST_SHARE_MEMBER_LEN (13 + 1 + ST_SHARE_TOKEN_LEN)

/* Makes a new token into out[ST_SHARE_TOKEN_LEN + 1]. Returns 0 or
 * NIMBUS_ESYS (no randomness). */
int st_share_token_new(char out[ST_SHARE_TOKEN_LEN + 1]);
/* True when `s` (n bytes) has the form of a token. */
bool st_share_token_valid(const char *s, size_t n);
/* True when `s` (n bytes) has the form of a list member (a cursor). */
bool st_share_member_valid(const char *s, size_t n);

/* One share as stored. Strings are NUL-terminated copies. */
typedef struct st_share {
  bool exists;  /* a record was found */
  bool revoked; /* ended by revoke or replace */
  char token[ST_SHARE_TOKEN_LEN + 1];
  char owner[65];
  char name[ST_SHARE_NAME_MAX + 1];
  char blob[65];
  char mime[ST_SHARE_MIME_MAX + 1];
  char thumb[65]; /* the thumbnail blob, hex; "" when none */
  int64_t size, created, expires_at;
  /* st_share_take and st_share_list only: the bytes its blob takes in
   * the store (nb:blob:<hex> stored; `size` while that is not recorded:
   * kept as it is, or not compressed yet). */
  int64_t stored;
  int64_t max_downloads; /* 0: no limit */
  int64_t downloads;     /* terminals whose download counted */
  char (*to)[65];        /* owned: the addressees, or NULL */
  size_t nto;
  char (*got)[65]; /* owned, st_share_read only: who counted */
  size_t ngot;
} st_share;

/* True while `s` is valid at now_ms: it exists, is not revoked and has not
 * expired. */
bool st_share_live(const st_share *s, int64_t now_ms);
/* Frees what a read allocated; safe on a zeroed struct. */
void st_share_fini(st_share *s);

/* Reads share `token` (any string: one of another form simply does not
 * exist) into *out (caller storage; release with st_share_fini even on
 * error), with its addressees and the terminals whose download counted,
 * whatever its state: out->exists is false when there is no record. */
int st_share_read(st_redis *r, const char *token, st_share *out);

/* The token of the share `owner` holds under `name` (n bytes, borrowed)
 * into token[ST_SHARE_TOKEN_LEN + 1]; "" when there is none. The share it
 * names may have ended (st_share_read tells). */
int st_share_name_lookup(st_redis *r, const char *owner, const char *name,
                         size_t n, char token[ST_SHARE_TOKEN_LEN + 1]);

/* share.get's one atomic step: if share `token` is live at now_ms and
 * either `terminal` owns it, or it is for `terminal` (no addressees, or
 * `terminal` among them) and `terminal`'s download already counted or
 * fewer than max_downloads terminals have one, counts `terminal`'s
 * download (once: not the owner's) together with its grant on the blob
 * (and on the thumbnail, the owner's too),
 * and fills *out (caller storage, without `to` and `got`; release with
 * st_share_fini) with exists true, and its blob's stored size (a second
 * round trip). Otherwise changes nothing and sets
 * out->exists false: the caller cannot tell absent, ended, used up and
 * not-for-you apart, and must not. */
int st_share_take(st_redis *r, const char *token, const char *terminal,
                  int64_t now_ms, st_share *out);

/* For each of the n blob names (64 hex, borrowed) in `hex`, sets sizes[i]
 * (caller storage) to the blob's size when it exists and `terminal` may
 * read it through a grant, live at now_ms, other than its access set: a
 * share it got (its download counted: an owner reads its own blob
 * through its own access), a result of its own task (st_result.h), or a
 * published agent package, which every terminal may read (st_agent.h);
 * else to -1. Nothing is cached, so an ended share ends the right at
 * once. One script per 256 names, doing the same for every name whether
 * there is such a blob or not (no answer, and no time, tells a blob that
 * exists from one that does not), and one more per name the terminal
 * holds share grants on. Returns 0, NIMBUS_EINVAL (a name not 64 lower
 * hex) or NIMBUS_EREDIS. */
int st_blobs_granted(st_redis *r, const char *terminal, const char *const *hex,
                     size_t n, int64_t now_ms, int64_t *sizes);

/* What a new share holds; everything borrowed. */
typedef struct st_share_new {
  const char *token, *owner, *blob, *mime;
  const char *thumb; /* the thumbnail blob (hex), or NULL */
  const char *name;  /* name_len bytes, checked by the caller */
  size_t name_len;
  int64_t size, created, expires_at, max_downloads;
  const char *const *to; /* distinct valid terminal ids, or NULL */
  size_t nto;
} st_share_new;

/* Appends to `t` the creation of share `s`: the record, its addressees,
 * its index entries, its name and its expiry, and one reference on its
 * blob (and on its thumbnail, when s->thumb), the whole effect required
 * to find the blobs' metadata still there and the token unused. `old` (may be
 * NULL) is the share the owner's name pointed to when the handler looked
 * (st_share_name_lookup, then st_share_read): with `old` NULL the name must
 * still be free at commit; with `old` given the name must still point to it,
 * and when its record exists and is not revoked it is ended (revoked) in the
 * same effect (replace), required to be still there. A condition that fails
 * makes st_task_commit return NIMBUS_ECONFLICT, nothing applied. */
int st_share_create_effect(st_txn *t, const st_share_new *s,
                           const st_share *old);

/* Appends to `t` the revoke of live share `s` (as read): marked revoked,
 * due at once in the expiry index (now_ms), required to find the record
 * still there. The janitor's sweep releases it. */
int st_share_revoke_effect(st_txn *t, const st_share *s, int64_t now_ms);

/* Lists up to `limit` (1-1000) shares, newest first, after `cursor` (a
 * member, or NULL/"" for the newest) of the index of `terminal`: its own
 * shares, or with `inbox` those addressed to it. Only shares live at
 * now_ms and, when `owner` is non-NULL, of that owner are put in out[]
 * (caller storage, `limit` entries, each released with st_share_fini;
 * without `got`). *n is their count, and *next (caller storage of
 * ST_SHARE_MEMBER_LEN + 1) the cursor of the next page, "" when the index
 * ends here. Three round trips (the third for their blobs' stored
 * sizes). */
int st_share_list(st_redis *r, const char *terminal, bool inbox,
                  const char *owner, const char *cursor, size_t limit,
                  int64_t now_ms, st_share *out, size_t *n, char *next);

/* The janitor's step: releases up to `max` shares that ended by now_ms
 * (expired or revoked): the record, its sets, its index entries, its name
 * when it still points to it, the grants on its blob and thumbnail, and
 * its references on them, which become candidates of the collector. Each share
 * goes in one script that first checks it has ended, so workers racing for the
 * same share release it once. *released (may be NULL) counts them. */
int st_share_sweep(st_redis *r, int64_t now_ms, size_t max, size_t *released);

#endif
