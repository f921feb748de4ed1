/* The typed calls of the share.* types (nimbus/agent.h, Sharing): the
 * task's args packed from C fields, the task run through a pipeline of
 * one (bk_pipe.c: its stall bound and stop poll, as every task of the
 * library's), the result decoded with the strict decoder (bk_result_map)
 * and read field by field, each checked for its type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_pipe.h"
#include "nb_util.h"
#include "nimbus/agent.h"
#include "nimbus/errors.h"
#include "sc.h"

#define SH_TIMEOUT_MS 60000

void nimbus_share_opts_init(nimbus_share_opts *o) { memset(o, 0, sizeof *o); }

/* Runs task `type` with the packed args; decodes an ok reply's result map
 * into *res (its zone into *zone, freed by the caller) when res is not
 * NULL. Hands the reply to *reply or frees it. */
static int sh_run(nimbus_agent *a, const nimbus_share_call *call,
                  const char *type, const msgpack_sbuffer *args,
                  msgpack_object *res, msgpack_zone **zone,
                  nimbus_reply **reply) {
  if (reply != NULL)
    *reply = NULL;
  if (zone != NULL)
    *zone = NULL;
  bk_pipe p;
  int timeout =
      call != NULL && call->timeout_ms > 0 ? call->timeout_ms : SH_TIMEOUT_MS;
  if (bk_pipe_init(&p, a, 1, timeout) != 0)
    return NIMBUS_ENOMEM;
  if (call != NULL) {
    p.stop = call->stop;
    p.stop_ctx = call->stop_ctx;
  }
  nimbus_reply *r = NULL;
  int rc = bk_pipe_call(&p, type, (const uint8_t *)args->data, args->size, &r);
  bk_pipe_fini(&p);
  if (rc != 0)
    return rc;
  if (!bk_reply_ok(r))
    rc = bk_err_of_code(r->code);
  else if (res != NULL && !bk_result_map(r, res, zone))
    rc = NIMBUS_EPROTO;
  if (reply != NULL)
    *reply = r;
  else
    nimbus_reply_free(r);
  return rc;
}

static void sh_str(const msgpack_object *m, const char *key, char *dst,
                   size_t cap) {
  const msgpack_object *o = sc_map_get(m, key);
  dst[0] = '\0';
  if (o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size < cap) {
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
  }
}

static int64_t sh_int(const msgpack_object *m, const char *key) {
  int64_t v = -1;
  return bk_obj_int(sc_map_get(m, key), &v) ? v : -1;
}

/* A share's fields from result map (or share.list item) `m`; false when
 * it lacks a token. */
static bool sh_fill(const msgpack_object *m, nimbus_share *s) {
  if (m->type != MSGPACK_OBJECT_MAP)
    return false;
  sh_str(m, "token", s->token, sizeof s->token);
  sh_str(m, "name", s->name, sizeof s->name);
  sh_str(m, "owner", s->owner, sizeof s->owner);
  sh_str(m, "mime", s->mime, sizeof s->mime);
  sh_str(m, "blob", s->blob, sizeof s->blob);
  sh_str(m, "thumbnail", s->thumbnail, sizeof s->thumbnail);
  s->size = sh_int(m, "size");
  s->stored_size = sh_int(m, "stored_size");
  s->created = sh_int(m, "created");
  s->expires_at = sh_int(m, "expires_at");
  s->max_downloads = sh_int(m, "max_downloads");
  s->downloads = sh_int(m, "downloads");
  return s->token[0] != '\0';
}

/* Runs `type` and fills *out from its result. */
static int sh_run_one(nimbus_agent *a, const nimbus_share_call *call,
                      const char *type, const msgpack_sbuffer *args,
                      nimbus_share *out, nimbus_reply **reply) {
  msgpack_object res;
  msgpack_zone *z = NULL;
  memset(out, 0, sizeof *out);
  int rc = sh_run(a, call, type, args, &res, &z, reply);
  if (rc == 0 && !sh_fill(&res, out))
    rc = NIMBUS_EPROTO;
  msgpack_zone_free(z);
  return rc;
}

int nimbus_share_create(nimbus_agent *a, const nimbus_share_opts *o,
                        const nimbus_share_call *call, nimbus_share *out,
                        nimbus_reply **reply) {
  if (reply != NULL)
    *reply = NULL;
  memset(out, 0, sizeof *out);
  if (a == NULL || o == NULL || o->name == NULL || o->blob == NULL ||
      (o->nto > 0 && o->to == NULL) || o->expires_in_ms < 0 ||
      o->max_downloads < 0)
    return NIMBUS_EINVAL;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2 + (o->mime != NULL) + (o->nto > 0) +
                            (o->expires_in_ms > 0) + (o->max_downloads > 0) +
                            o->replace);
  bk_pk_kv_str(&pk, "name", o->name);
  bk_pk_kv_str(&pk, "blob", o->blob);
  if (o->mime != NULL)
    bk_pk_kv_str(&pk, "mime", o->mime);
  if (o->nto > 0) {
    bk_pk_str(&pk, "to");
    msgpack_pack_array(&pk, o->nto);
    for (size_t i = 0; i < o->nto; i++)
      bk_pk_str(&pk, o->to[i] != NULL ? o->to[i] : "");
  }
  if (o->expires_in_ms > 0)
    bk_pk_kv_int(&pk, "expires_in", o->expires_in_ms);
  if (o->max_downloads > 0)
    bk_pk_kv_int(&pk, "max_downloads", o->max_downloads);
  if (o->replace) {
    bk_pk_str(&pk, "replace");
    msgpack_pack_true(&pk);
  }
  int rc = sh_run_one(a, call, "share.create", &sb, out, reply);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

int nimbus_share_get(nimbus_agent *a, const char *token, const char *owner,
                     const char *name, const nimbus_share_call *call,
                     nimbus_share *out, nimbus_reply **reply) {
  if (reply != NULL)
    *reply = NULL;
  memset(out, 0, sizeof *out);
  if (a == NULL || (token == NULL && (owner == NULL || name == NULL)))
    return NIMBUS_EINVAL;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (token != NULL) {
    msgpack_pack_map(&pk, 1);
    bk_pk_kv_str(&pk, "token", token);
  } else {
    msgpack_pack_map(&pk, 2);
    bk_pk_kv_str(&pk, "owner", owner);
    bk_pk_kv_str(&pk, "name", name);
  }
  int rc = sh_run_one(a, call, "share.get", &sb, out, reply);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

int nimbus_share_revoke(nimbus_agent *a, const char *token,
                        const nimbus_share_call *call, nimbus_reply **reply) {
  if (reply != NULL)
    *reply = NULL;
  if (a == NULL || token == NULL)
    return NIMBUS_EINVAL;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  bk_pk_kv_str(&pk, "token", token);
  int rc = sh_run(a, call, "share.revoke", &sb, NULL, NULL, reply);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

int nimbus_share_list(nimbus_agent *a, bool inbox, const char *owner,
                      const char *cursor, size_t limit,
                      const nimbus_share_call *call, nimbus_share **out,
                      size_t *n, char next_cursor[64], nimbus_reply **reply) {
  if (reply != NULL)
    *reply = NULL;
  *out = NULL;
  *n = 0;
  if (a == NULL || limit == 0 || limit > 1000) {
    next_cursor[0] = '\0';
    return NIMBUS_EINVAL;
  }
  bool more = cursor != NULL && cursor[0] != '\0';
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2 + more + (owner != NULL));
  bk_pk_kv_int(&pk, "limit", (int64_t)limit);
  bk_pk_str(&pk, "inbox");
  if (inbox)
    msgpack_pack_true(&pk);
  else
    msgpack_pack_false(&pk);
  if (more)
    bk_pk_kv_str(&pk, "cursor", cursor);
  if (owner != NULL)
    bk_pk_kv_str(&pk, "owner", owner);
  next_cursor[0] = '\0'; /* after the cursor was packed: it may be it */
  msgpack_object res;
  msgpack_zone *z = NULL;
  int rc = sh_run(a, call, "share.list", &sb, &res, &z, reply);
  msgpack_sbuffer_destroy(&sb);
  const msgpack_object *list = rc == 0 ? sc_map_get(&res, "shares") : NULL;
  if (rc == 0 && (list == NULL || list->type != MSGPACK_OBJECT_ARRAY))
    rc = NIMBUS_EPROTO;
  if (rc == 0 && list->via.array.size > 0 &&
      (*out = calloc(list->via.array.size, sizeof **out)) == NULL)
    rc = NIMBUS_ENOMEM;
  for (uint32_t i = 0; rc == 0 && i < list->via.array.size; i++)
    if (sh_fill(&list->via.array.ptr[i], &(*out)[*n]))
      (*n)++;
  if (rc == 0)
    sh_str(&res, "next_cursor", next_cursor, 64);
  if (rc != 0) {
    free(*out);
    *out = NULL;
    *n = 0;
  }
  msgpack_zone_free(z);
  return rc;
}
