/* The backup handlers (PROTOCOL.md, "Backup and restore"): backup.commit,
 * backup.list, backup.get and backup.delete.
 *
 * A snapshot names blobs; it never holds bytes. backup.commit checks every
 * item (kind, a safe relative name, a blob name, a size, an optional
 * mtime), that names are unique, and that this terminal may read every
 * blob it names and the blob has the stated size; one blob this terminal
 * may not read stores nothing and answers 409 with the missing names, the
 * same answer whether the blob does not exist or belongs to someone else.
 * No item may be named as a directory of another ("a" and "a/b"), and no
 * name component may be longer than 255 bytes: restore could lay out
 * neither on any filesystem, so they are refused here, before anything is
 * stored, rather than found when the snapshot is needed.
 * Item lists too large for a message come as a manifest blob (the same
 * array, msgpack), read whole, checked against its name and decoded with
 * the strict decoder. The snapshot, its index entry and one reference on
 * each blob it names are committed with the recorded reply (st_backup.h),
 * conditional on the blobs' metadata still being there. */
#include "wk.h"

#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_backup.h"

#include <stdlib.h>
#include <string.h>

/* A manifest blob is read whole into memory; these bound it. */
#define MANIFEST_MAX_BYTES ((unsigned)SC_MANIFEST_MAX_BYTES)
#define MANIFEST_MAX_ITEMS SC_MANIFEST_MAX_ITEMS
/* Values a manifest may hold: an item map with its five keys is 11, and
 * unknown keys are allowed, so room for 16 per item. */
#define MANIFEST_MAX_VALUES                                                    \
  (SC_MANIFEST_VALUES_PER_ITEM * MANIFEST_MAX_ITEMS + 1u)
/* A 409 names at most this many missing blobs (PROTOCOL.md). */
#define MISSING_MAX SC_MISSING_MAX
/* backup.list pages. */
#define LIST_DEFAULT SC_LIST_DEFAULT
#define LIST_MAX SC_LIST_MAX

static const char *const kinds[] = SC_ITEM_KINDS;

static int oom(wk_ctx *c) {
  return wk_fail(c, 500, NULL, "the worker is out of memory");
}

/* ---- Items --------------------------------------------------------------- */

/* One checked item; pointers borrow from the decoded document. */
typedef struct item {
  const char *name;
  size_t name_len;
  char blob[65];
  int64_t size;
} item;

/* A str field of map `o`, or NULL. */
static const msgpack_object *str_field(const msgpack_object *o,
                                       const char *key) {
  const msgpack_object *v = sc_map_get(o, key);
  return v != NULL && v->type == MSGPACK_OBJECT_STR ? v : NULL;
}

static int item_fail(wk_ctx *c, const char *where, size_t i, const char *msg) {
  return wk_fail(c, 400,
                 "every item is {kind, name, blob, size, mtime (optional)}; "
                 "schemas/SPEC.md gives the rules",
                 "%s[%zu]%s", where, i, msg);
}

/* Checks item `i` of `where` ("args.items" or "the manifest") into *it. */
static int check_item(wk_ctx *c, const char *where, size_t i,
                      const msgpack_object *o, item *it) {
  char scratch[160];
  if (o->type != MSGPACK_OBJECT_MAP)
    return item_fail(c, where, i, " must be a map");
  const msgpack_object *kind = str_field(o, "kind");
  bool known = false;
  for (size_t k = 0; kind != NULL && k < sizeof kinds / sizeof kinds[0]; k++)
    known |= kind->via.str.size == strlen(kinds[k]) &&
             memcmp(kind->via.str.ptr, kinds[k], kind->via.str.size) == 0;
  if (!known)
    return item_fail(c, where, i,
                     ".kind must be contact, sms, photo, video or file");
  const msgpack_object *name = str_field(o, "name");
  if (name == NULL)
    return item_fail(c, where, i, ".name must be a string");
  const char *why = nb_relpath_problem(name->via.str.ptr, name->via.str.size);
  if (why != NULL) {
    wk_fail(c, 400, "names are relative paths such as \"DCIM/a.jpg\"",
            "%s[%zu].name %s", where, i, why);
    return 400;
  }
  const msgpack_object *blob = str_field(o, "blob");
  if (blob == NULL || !wk_is_blob_name(blob->via.str.ptr, blob->via.str.size))
    return item_fail(c, where, i,
                     ".blob must be a SHA-256: 64 lowercase hex characters");
  if (sc_arg_int(o, "size", true, 0, INT64_MAX, &it->size, scratch,
                 sizeof scratch) != 0)
    return item_fail(c, where, i, ".size must be a whole number of bytes");
  int64_t mtime = 0;
  int rc = sc_arg_int(o, "mtime", false, INT64_MIN, INT64_MAX, &mtime, scratch,
                      sizeof scratch);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return item_fail(c, where, i,
                     ".mtime must be a whole number of ms since 1970");
  it->name = name->via.str.ptr;
  it->name_len = name->via.str.size;
  memcpy(it->blob, blob->via.str.ptr, 64);
  it->blob[64] = '\0';
  return 0;
}

/* Path order (nb_relpath_cmp): equal names end up side by side, and so do
 * a name and the first name inside it as a directory. */
static int cmp_name(const void *a, const void *b) {
  const item *x = *(const item *const *)a, *y = *(const item *const *)b;
  return nb_relpath_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* Bytes of a name shown in an error sentence. */
static int shown(size_t n) { return (int)(n > 200 ? 200 : n); }

static int cmp_hex(const void *a, const void *b) {
  return memcmp(*(const char *const *)a, *(const char *const *)b, 64);
}

/* What backup.commit learned of its items. */
typedef struct item_set {
  item *items;
  size_t n;
  const char **uniq; /* distinct blob names, sorted; point into items */
  size_t nuniq;
  uint64_t bytes;
} item_set;

static void item_set_fini(item_set *s) {
  free(s->items);
  free(s->uniq);
}

/* Checks every item of the array `arr`, that names are unique and that
 * none is a directory of another, and collects the distinct blobs. */
static int check_items(wk_ctx *c, const char *where, const msgpack_object *arr,
                       item_set *s) {
  size_t n = arr->via.array.size;
  s->n = n;
  s->items = calloc(n > 0 ? n : 1, sizeof *s->items);
  s->uniq = calloc(n > 0 ? n : 1, sizeof *s->uniq);
  item **byname = calloc(n > 0 ? n : 1, sizeof *byname);
  int code = 0;
  if (s->items == NULL || s->uniq == NULL || byname == NULL) {
    code = oom(c);
    goto out;
  }
  for (size_t i = 0; i < n && code == 0; i++) {
    code = check_item(c, where, i, &arr->via.array.ptr[i], &s->items[i]);
    byname[i] = &s->items[i];
    s->uniq[i] = s->items[i].blob;
  }
  if (code != 0)
    goto out;
  /* Restore lays the names out as files in directories, so no name may
   * also be the directory of another ("a" and "a/b", in either order):
   * in path order, every such pair has a clash between neighbours, which
   * keeps this O(n log n) for a manifest's 200,000 items. */
  qsort(byname, n, sizeof *byname, cmp_name);
  for (size_t i = 1; i < n; i++) {
    const item *x = byname[i - 1], *y = byname[i];
    if (cmp_name(&byname[i - 1], &byname[i]) == 0) {
      code = wk_fail(c, 400, "give every item its own name",
                     "%s names \"%.*s\" twice", where, shown(y->name_len),
                     y->name);
      goto out;
    }
    if (nb_relpath_within(x->name, x->name_len, y->name, y->name_len)) {
      code =
          wk_fail(c, 400,
                  "a name cannot be both a file and a directory: rename "
                  "one of the two",
                  "%s[%zu] (\"%.*s\") is inside %s[%zu] (\"%.*s\"), "
                  "which is a file, not a directory",
                  where, (size_t)(y - s->items), shown(y->name_len), y->name,
                  where, (size_t)(x - s->items), shown(x->name_len), x->name);
      goto out;
    }
  }
  qsort(s->uniq, n, sizeof *s->uniq, cmp_hex);
  for (size_t i = 0; i < n; i++)
    if (s->nuniq == 0 || memcmp(s->uniq[s->nuniq - 1], s->uniq[i], 64) != 0)
      s->uniq[s->nuniq++] = s->uniq[i];
out:
  free(byname);
  return code;
}

/* Answers 409 with `missing`: the names in `names` whose size is -1. */
static int missing_blobs(wk_ctx *c, const char *const *names,
                         const int64_t *sizes, size_t n) {
  size_t nmissing = 0;
  for (size_t i = 0; i < n; i++)
    nmissing += sizes[i] < 0;
  size_t shown = nmissing < MISSING_MAX ? nmissing : MISSING_MAX;
  msgpack_pack_map(&c->pk, 2);
  wk_pack_str(&c->pk, "missing");
  msgpack_pack_array(&c->pk, shown);
  for (size_t i = 0, k = 0; i < n && k < shown; i++)
    if (sizes[i] < 0) {
      wk_pack_str(&c->pk, names[i]);
      k++;
    }
  wk_pack_str(&c->pk, "more");
  if (nmissing > shown)
    msgpack_pack_true(&c->pk);
  else
    msgpack_pack_false(&c->pk);
  return wk_fail(c, 409,
                 "upload them (blob.has tells which), then commit again; "
                 "nothing was stored",
                 "%zu blob%s named by this backup %s not stored or not "
                 "readable by this terminal",
                 nmissing, nmissing == 1 ? "" : "s",
                 nmissing == 1 ? "is" : "are");
}

/* ---- Manifests ----------------------------------------------------------- */

/* Reads the manifest blob `hex` (size bytes) whole into *buf (malloc'd)
 * and checks it against its name. */
static int read_manifest(wk_ctx *c, const char *hex, uint64_t size,
                         uint8_t **buf) {
  uint8_t raw[32], got_hash[32];
  (void)nb_unhex32(hex, raw);
  *buf = malloc(size > 0 ? size : 1);
  if (*buf == NULL)
    return oom(c);
  uint64_t off = 0;
  while (off < size) {
    size_t want = size - off < (1u << 20) ? (size_t)(size - off) : (1u << 20);
    size_t got = 0;
    int rc = st_blobstore_read(c->blobs, raw, off, *buf + off, want, &got);
    if (rc == 0 && got == 0)
      rc = NIMBUS_EIO;
    if (rc != 0)
      return wk_disk_error(c, "read the backup's manifest");
    off += got;
  }
  nb_sha256(*buf, size, got_hash);
  if (memcmp(got_hash, raw, 32) != 0)
    return wk_fail(c, 500,
                   "the cloud's operators must restore it; nothing was "
                   "stored",
                   "the manifest blob %s is damaged on disk", hex);
  return 0;
}

/* ---- backup.commit ------------------------------------------------------- */

static int arg_label(wk_ctx *c, char label[ST_LABEL_MAX + 1]) {
  const char *s = NULL;
  size_t n = 0;
  label[0] = '\0';
  int rc = sc_arg_text(c->args, "label", false, 0, ST_LABEL_MAX, &s, &n,
                       c->error, sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return 400;
  memcpy(label, s, n);
  label[n] = '\0';
  return 0;
}

static int h_backup_commit(wk_ctx *c) {
  char label[ST_LABEL_MAX + 1], mhex[65] = "", id[ST_SNAP_ID_LEN + 1];
  const msgpack_object *items = sc_map_get(c->args, "items");
  const msgpack_object *manifest = sc_map_get(c->args, "manifest");
  item_set set = {0};
  uint8_t *mbuf = NULL;
  msgpack_zone *mzone = NULL;
  msgpack_object mdoc;
  msgpack_sbuffer list;
  uint8_t(*raw)[32] = NULL;
  int64_t *sizes = NULL;
  bool *granted = NULL, mgranted = false;
  msgpack_sbuffer_init(&list);
  int code = arg_label(c, label);
  if (code != 0)
    return code;
  if ((items == NULL) == (manifest == NULL))
    return wk_fail(c, 400,
                   "send the items inline, or in a blob when they do not "
                   "fit in a message",
                   "backup.commit takes exactly one of args.items and "
                   "args.manifest");
  if (manifest != NULL) {
    if ((code = wk_arg_blob(c, "manifest", mhex, NULL)) != 0)
      return code;
    const char *name = mhex;
    int64_t msize = -1;
    if (wk_blobs_readable(c, &name, 1, &msize, &mgranted) != 0)
      return wk_redis_down(c);
    if (msize < 0)
      return missing_blobs(c, &name, &msize, 1);
    if ((uint64_t)msize > MANIFEST_MAX_BYTES)
      return wk_fail(c, 413, "split the backup into several snapshots",
                     "the manifest is %lld bytes; at most %u are accepted",
                     (long long)msize, MANIFEST_MAX_BYTES);
    if ((code = read_manifest(c, mhex, (uint64_t)msize, &mbuf)) != 0)
      goto out;
    char err[256];
    int rc = sc_value_decode_limits(mbuf, (size_t)msize, MANIFEST_MAX_BYTES,
                                    MANIFEST_MAX_VALUES, &mdoc, &mzone, err,
                                    sizeof err);
    if (rc == NIMBUS_ENOMEM) {
      code = oom(c);
      goto out;
    }
    if (rc != 0) {
      code = wk_fail(c, rc == NIMBUS_ETOOBIG ? 413 : 400,
                     "a manifest is one msgpack array of items",
                     "the manifest cannot be read: %s", err);
      goto out;
    }
    if (mdoc.type != MSGPACK_OBJECT_ARRAY) {
      code = wk_fail(c, 400, "a manifest is one msgpack array of items",
                     "the manifest is not an array");
      goto out;
    }
    if (mdoc.via.array.size > MANIFEST_MAX_ITEMS) {
      code = wk_fail(c, 413, "split the backup into several snapshots",
                     "the manifest lists %u items; at most %d are accepted",
                     mdoc.via.array.size, MANIFEST_MAX_ITEMS);
      goto out;
    }
    items = &mdoc;
    if ((code = wk_checkpoint(c)) != 0) {
      code = wk_fail(c, code == NIMBUS_ECANCELED ? 499 : 500, NULL,
                     "backup.commit was stopped: %s", nimbus_strerror(code));
      goto out;
    }
  } else if (items->type != MSGPACK_OBJECT_ARRAY) {
    return wk_fail(c, 400, NULL, "args.items must be an array of items");
  }
  if ((code = check_items(c, manifest != NULL ? "the manifest" : "args.items",
                          items, &set)) != 0)
    goto out;

  sizes = malloc((set.nuniq > 0 ? set.nuniq : 1) * sizeof *sizes);
  granted = malloc((set.nuniq > 0 ? set.nuniq : 1) * sizeof *granted);
  raw = malloc((set.nuniq + 1) * sizeof *raw);
  if (sizes == NULL || granted == NULL || raw == NULL) {
    code = oom(c);
    goto out;
  }
  if (wk_blobs_readable(c, set.uniq, set.nuniq, sizes, granted) != 0) {
    code = wk_redis_down(c);
    goto out;
  }
  for (size_t i = 0; i < set.nuniq; i++)
    if (sizes[i] < 0) {
      code = missing_blobs(c, set.uniq, sizes, set.nuniq);
      goto out;
    }
  for (size_t i = 0; i < set.n; i++) {
    const char *key = set.items[i].blob;
    const char **hit =
        bsearch(&key, set.uniq, set.nuniq, sizeof *set.uniq, cmp_hex);
    int64_t real = sizes[hit - set.uniq];
    if (real != set.items[i].size) {
      code = wk_fail(c, 400, "size is the blob's size in bytes",
                     "item %zu (\"%.*s\") says %lld bytes, but blob %s has "
                     "%lld",
                     i, shown(set.items[i].name_len), set.items[i].name,
                     (long long)set.items[i].size, key, (long long)real);
      goto out;
    }
    set.bytes += (uint64_t)real;
  }

  size_t nraw = 0;
  for (size_t i = 0; i < set.nuniq; i++)
    (void)nb_unhex32(set.uniq[i], raw[nraw++]);
  if (mhex[0] != '\0') {
    /* The manifest is referred to too, unless it also is an item. */
    const char *key = mhex;
    if (bsearch(&key, set.uniq, set.nuniq, sizeof *set.uniq, cmp_hex) == NULL)
      (void)nb_unhex32(mhex, raw[nraw++]);
  } else {
    msgpack_packer lp;
    msgpack_packer_init(&lp, &list, msgpack_sbuffer_write);
    if (msgpack_pack_object(&lp, *items) != 0) {
      code = oom(c);
      goto out;
    }
  }
  if (st_snap_id_new(nb_now_ms(), id) != 0) {
    code = wk_fail(c, 500, NULL, "the worker has no source of randomness");
    goto out;
  }
  st_snap_new sn = {.id = id,
                    .ts = nb_now_ms(),
                    .items = set.n,
                    .bytes = set.bytes,
                    .label = label,
                    .list = mhex[0] == '\0' ? (const uint8_t *)list.data : NULL,
                    .list_len = list.size,
                    .manifest = mhex,
                    .blobs = (const uint8_t(*)[32])raw,
                    .nblobs = nraw};
  if (st_snap_commit_effect(c->effect, c->terminal, &sn) != 0) {
    code = oom(c);
    goto out;
  }
  /* A blob it may read only through a grant (a share it got) becomes its
   * own: the snapshot keeps it, and a restore must read it after the
   * share has ended. */
  for (size_t i = 0; i < set.nuniq; i++)
    if (granted[i] &&
        st_blob_access_effect(c->effect, c->terminal, set.uniq[i]) != 0) {
      code = oom(c);
      goto out;
    }
  if (mgranted && st_blob_access_effect(c->effect, c->terminal, mhex) != 0) {
    code = oom(c);
    goto out;
  }
  msgpack_pack_map(&c->pk, 3);
  wk_pack_str(&c->pk, "snapshot");
  wk_pack_str(&c->pk, id);
  wk_pack_kv_int(&c->pk, "items", (int64_t)set.n);
  wk_pack_kv_int(&c->pk, "bytes", (int64_t)set.bytes);
out:
  msgpack_sbuffer_destroy(&list);
  free(raw);
  free(sizes);
  free(granted);
  item_set_fini(&set);
  if (mzone != NULL)
    msgpack_zone_free(mzone);
  free(mbuf);
  return code;
}

/* ---- backup.get / backup.delete ------------------------------------------ */

/* Reads args.snapshot (optional unless `required`) into id; "" = absent.
 * An argument that is no snapshot id of ours is simply not found later. */
static int arg_snapshot(wk_ctx *c, bool required, char id[65]) {
  const char *s = NULL;
  size_t n = 0;
  id[0] = '\0';
  int rc = sc_arg_str(c->args, "snapshot", required, 1, 64, &s, &n, c->error,
                      sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return 400;
  if (!nb_valid_token(s, n, 1, 64))
    return wk_fail(c, 400, "backup.list gives the snapshot ids",
                   "args.snapshot is not a snapshot id");
  memcpy(id, s, n);
  id[n] = '\0';
  return 0;
}

/* Reads the snapshot named by the task (latest when unnamed) into *s, or
 * answers 400 or 404. *s is always fit for st_snapshot_fini afterwards. */
static int find_snapshot(wk_ctx *c, bool required, st_snapshot *s) {
  char id[65];
  memset(s, 0, sizeof *s);
  int code = arg_snapshot(c, required, id);
  if (code != 0)
    return code;
  if (st_snap_get(c->redis, c->terminal, id[0] != '\0' ? id : NULL, s) != 0)
    return wk_redis_down(c);
  if (s->exists)
    return 0;
  if (id[0] == '\0')
    return wk_fail(c, 404, "back something up first (backup.commit)",
                   "this terminal has no snapshot");
  return wk_fail(c, 404, "backup.list gives this terminal's snapshots",
                 "this terminal has no snapshot \"%s\"", id);
}

static void pack_info(msgpack_packer *pk, const st_snap_info *in) {
  wk_pack_str(pk, "snapshot");
  wk_pack_str(pk, in->id);
  wk_pack_kv_int(pk, "ts", in->ts);
  wk_pack_kv_int(pk, "items", (int64_t)in->items);
  wk_pack_kv_int(pk, "bytes", (int64_t)in->bytes);
  wk_pack_str(pk, "label");
  wk_pack_str(pk, in->label);
}

static int h_backup_get(wk_ctx *c) {
  st_snapshot s;
  int code = find_snapshot(c, false, &s);
  if (code == 0) {
    /* items is the list itself here (PROTOCOL.md); count says how many. */
    msgpack_pack_map(&c->pk, 6);
    wk_pack_str(&c->pk, "snapshot");
    wk_pack_str(&c->pk, s.info.id);
    wk_pack_kv_int(&c->pk, "ts", s.info.ts);
    wk_pack_str(&c->pk, "label");
    wk_pack_str(&c->pk, s.info.label);
    wk_pack_kv_int(&c->pk, "count", (int64_t)s.info.items);
    wk_pack_kv_int(&c->pk, "bytes", (int64_t)s.info.bytes);
    if (s.list != NULL) {
      wk_pack_str(&c->pk, "items");
      msgpack_sbuffer_write(&c->result, (const char *)s.list, s.list_len);
    } else {
      wk_pack_str(&c->pk, "manifest");
      wk_pack_str(&c->pk, s.manifest);
    }
  }
  st_snapshot_fini(&s);
  return code;
}

static int h_backup_delete(wk_ctx *c) {
  st_snapshot s;
  int code = find_snapshot(c, true, &s);
  if (code == 0 && st_snap_delete_effect(c->effect, c->terminal, &s) != 0)
    code = oom(c);
  if (code == 0) {
    msgpack_pack_map(&c->pk, 1);
    wk_pack_str(&c->pk, "snapshot");
    wk_pack_str(&c->pk, s.info.id);
  }
  st_snapshot_fini(&s);
  return code;
}

/* ---- backup.list --------------------------------------------------------- */

static int h_backup_list(wk_ctx *c) {
  const char *cur = NULL;
  size_t curlen = 0;
  char cursor[ST_SNAP_ID_LEN + 1] = "";
  int64_t limit = LIST_DEFAULT;
  int rc = sc_arg_str(c->args, "cursor", false, 0, 64, &cur, &curlen, c->error,
                      sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  if (rc == 0) {
    if (curlen > ST_SNAP_ID_LEN || !nb_valid_token(cur, curlen, 0, 64))
      return wk_fail(c, 400, "pass next_cursor from the previous page",
                     "args.cursor is not a cursor of backup.list");
    memcpy(cursor, cur, curlen);
    cursor[curlen] = '\0';
  }
  rc = sc_arg_int(c->args, "limit", false, 1, LIST_MAX, &limit, c->error,
                  sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  st_snap_info *page = calloc((size_t)limit, sizeof *page);
  if (page == NULL)
    return oom(c);
  size_t n = 0;
  bool more = false;
  int code = 0;
  if (st_snap_list(c->redis, c->terminal, cursor, (size_t)limit, page, &n,
                   &more) != 0) {
    code = wk_redis_down(c);
  } else {
    msgpack_pack_map(&c->pk, more ? 2 : 1);
    wk_pack_str(&c->pk, "snapshots");
    msgpack_pack_array(&c->pk, n);
    for (size_t i = 0; i < n; i++) {
      msgpack_pack_map(&c->pk, 5);
      pack_info(&c->pk, &page[i]);
    }
    if (more) {
      wk_pack_str(&c->pk, "next_cursor");
      wk_pack_str(&c->pk, page[n - 1].id);
    }
  }
  free(page);
  return code;
}

/* backup.commit may read a manifest of up to 100,000 items from the blob
 * store: the transfer pool's, beside the blob handlers. */
static const wk_handler backup_handlers[] = {
    {.type = "backup.commit",
     .flags = WK_STATEFUL,
     .pool = "transfer",
     .fn = h_backup_commit},
    {.type = "backup.list", .pool = "quick", .fn = h_backup_list},
    {.type = "backup.get", .pool = "quick", .fn = h_backup_get},
    {.type = "backup.delete",
     .flags = WK_STATEFUL,
     .pool = "quick",
     .fn = h_backup_delete},
    {.type = NULL},
};

const wk_family wk_family_backup = {
    .abi = WK_FAMILY_ABI,
    .name = "backup",
    .needs = WK_NEEDS_BLOBS,
    .handlers = backup_handlers,
};
