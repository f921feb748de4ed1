/* The share handlers (PROTOCOL.md, "Sharing"): share.create, share.get,
 * share.list and share.revoke.
 *
 * A share names a blob its owner may read; it never holds bytes. Whoever
 * gets the share (by token, or by owner and name) learns the blob's name
 * and may then blob.get it while the share lives (st_share.h: the grant is
 * checked against the share's record on every read). Everything a
 * terminal cannot have is answered alike: a share that does not exist,
 * has expired, was revoked, is used up or is addressed to others is the
 * same 404 with the same sentence, and so is a blob named by share.create
 * that the caller may not read, so nobody learns of another's data by
 * asking. share.create's effect (the record, its indexes, its name and a
 * reference on the blob) and share.revoke's are committed with the
 * recorded reply, so the same task id twice makes one share; share.get is
 * claimed too (PROTOCOL.md lists it as changing state: it counts a
 * download), though the count itself is its own atomic script, made once
 * per (share, terminal) whatever the task id. Recipients named in `to`
 * get a notice (kind share.new) once the share is committed.
 *
 * A share made without `mime` gets the type libmagic reads from the
 * blob's first 64 KiB (one magic_t per pool thread, made on its first
 * use: libmagic is not thread-safe). A shared blob that is not compressed
 * already (by its type, then by a trial of its first MiB) is kept
 * compressed in the blob store once that makes it 10% smaller
 * (st_blobstore_pack), so share results and the blob's metadata give a
 * stored_size below its size while blob.get serves the same bytes. Up to
 * 1 MiB that is done here, in a few ms, and share.create's result says
 * it; a larger blob is queued (nb:pack) for the janitors (janitor.c),
 * because compressing costs about 7 ms per MiB at level 3 on this
 * project's VMs, more than the upload itself (about 5 ms per MiB), and the
 * terminal would wait twice as long for its token. Its stored_size
 * shows in share.get and share.list seconds later.
 *
 * A picture (a type the image module reads: JPEG, PNG, WebP, TIFF, GIF,
 * HEIF, AVIF) gets a thumbnail, 256 px on the long side, JPEG, turned
 * upright first when its type carries an orientation, made here while the
 * terminal waits: through the offload machinery (wk_offload_blob, the
 * same run, cache and output blob as a process.image task with those
 * ops), so the image module is loaded on demand and nothing of libvips is
 * in this family. The JPEG decoder shrinks on load, so a 12 MP photo
 * takes a few tens of ms (README, Measured), less than its upload; a
 * PNG or TIFF is decoded whole, still bounded by max_pixels. The share
 * holds a reference on the thumbnail as on its blob, and whoever gets the
 * share may read it while the share lives (st_share.h). A worker without
 * the image module, or a picture the module refuses, makes the share
 * without a thumbnail (a WK-SHARE-THUMB line says why): a thumbnail never
 * fails a share, but task.cancel or a lost claim during it do. A video's
 * poster frame will come the same way. */
#include "wk.h"

#include "nb_log.h"
#include "nb_util.h"
#include "nimbus/errors.h"
#include "st_backup.h"
#include "st_result.h"
#include "st_share.h"
#include "wk_modules.h"

#include <magic.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define DOWNLOADS_MAX INT64_C(1000000000)
#define DEFAULT_MIME "application/octet-stream"

/* What a share reads of its blob to sniff its type. */
#define SNIFF_BYTES 65536
/* The largest blob compressed by share.create itself (ST_BLOB_TRIAL: what
 * a trial would read anyway); larger ones go to the janitors. */
#define PACK_HERE_MAX ST_BLOB_TRIAL
/* A thumbnail's long side, px. */
#define THUMB_SIDE 256
#define THUMB_QUALITY 80

typedef struct share_config {
  int64_t max_expires_ms;
  int64_t zstd_level;
} share_config;

static share_config share_cfg;

int wk_share_zstd_level(void) { return (int)share_cfg.zstd_level; }

/* The one answer for every share a terminal may not have. */
static int no_share(wk_ctx *c) {
  return wk_fail(c, 404,
                 "a share may have expired, been revoked, been used up or "
                 "be meant for other terminals: ask its owner for a new one",
                 "there is no share of that name or token for this "
                 "terminal");
}

static int oom(wk_ctx *c) {
  return wk_fail(c, 500, NULL, "the worker is out of memory");
}

/* ---- Arguments ----------------------------------------------------------- */

/* A share name: 1-255 bytes of UTF-8 without control characters and
 * without '/'. Required unless `optional`; *n 0 when absent. */
static int arg_name(wk_ctx *c, bool optional, const char **s, size_t *n) {
  *s = NULL;
  *n = 0;
  int rc = sc_arg_text(c->args, "name", !optional, 1, ST_SHARE_NAME_MAX, s, n,
                       c->error, sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0) {
    nb_strlcpy(c->help,
               "a name is 1-255 bytes of text, such as "
               "\"holiday.jpg\"",
               sizeof c->help);
    return 400;
  }
  if (memchr(*s, '/', *n) != NULL)
    return wk_fail(c, 400,
                   "a name is one file name, such as "
                   "\"holiday.jpg\", not a path",
                   "args.name holds a \"/\"");
  return 0;
}

/* A MIME type as RFC 6838 names them: type "/" subtype, each 1-63 of
 * [A-Za-z0-9!#$&^_.+-] starting with a letter or digit. */
static bool mime_valid(const char *s, size_t n) {
  size_t part = 0, slash = 0;
  if (n == 0 || n > ST_SHARE_MIME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool alnum = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                 (ch >= '0' && ch <= '9');
    if (ch == '/') {
      if (part == 0 || slash++ > 0)
        return false;
      part = 0;
      continue;
    }
    if (part == 0 && !alnum)
      return false;
    if (!alnum && strchr("!#$&^_.+-", ch) == NULL)
      return false;
    if (++part > 63)
      return false;
  }
  return slash == 1 && part > 0;
}

/* Reads args.to into a new array of distinct terminal ids (*to, *n). */
static int arg_to(wk_ctx *c, char (**to)[65], size_t *n) {
  const msgpack_object *arr = NULL;
  *to = NULL;
  *n = 0;
  int rc = sc_arg_array(c->args, "to", false, ST_SHARE_TO_MAX, &arr, c->error,
                        sizeof c->error);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return 400;
  if (arr->via.array.size == 0)
    return wk_fail(c, 400,
                   "leave args.to out to share with anyone who has "
                   "the token or the name",
                   "args.to names no terminal");
  *to = calloc(arr->via.array.size, sizeof **to);
  if (*to == NULL)
    return oom(c);
  for (uint32_t i = 0; i < arr->via.array.size; i++) {
    const msgpack_object *e = &arr->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_STR ||
        !nb_valid_terminal(e->via.str.ptr, e->via.str.size))
      return wk_fail(c, 400,
                     "a terminal id is its MQTT user name, such as "
                     "\"4915123456789\"",
                     "args.to[%u] is not a terminal id: 1-64 characters of "
                     "A-Z a-z 0-9 . _ -",
                     i);
    bool seen = false;
    for (size_t k = 0; k < *n && !seen; k++)
      seen = strlen((*to)[k]) == e->via.str.size &&
             memcmp((*to)[k], e->via.str.ptr, e->via.str.size) == 0;
    if (!seen) {
      memcpy((*to)[*n], e->via.str.ptr, e->via.str.size);
      (*to)[(*n)++][e->via.str.size] = '\0';
    }
  }
  return 0;
}

/* An optional int argument: 0 when present and valid, else 400 after
 * wk_fail, or 0 with *out unchanged when absent. */
static int arg_int_opt(wk_ctx *c, const char *key, int64_t lo, int64_t hi,
                       int64_t *out, const char *help) {
  int rc =
      sc_arg_int(c->args, key, false, lo, hi, out, c->error, sizeof c->error);
  if (rc == 0 || rc == NIMBUS_ENOTFOUND)
    return 0;
  if (help != NULL)
    nb_strlcpy(c->help, help, sizeof c->help);
  return 400;
}

/* ---- Results and notices ------------------------------------------------- */

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v,
                        size_t n) {
  wk_pack_str(pk, k);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, v, n);
}

/* The share.new notice for one addressee. */
static int queue_notice(wk_ctx *c, const char *to, const char *token,
                        const char *name, size_t name_len, int64_t size,
                        const char *mime, int64_t expires_at) {
  msgpack_sbuffer f, out;
  msgpack_sbuffer_init(&f);
  msgpack_sbuffer_init(&out);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &f, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 6);
  pack_kv_str(&pk, "token", token, strlen(token));
  pack_kv_str(&pk, "name", name, name_len);
  pack_kv_str(&pk, "owner", c->terminal, strlen(c->terminal));
  wk_pack_kv_int(&pk, "size", size);
  pack_kv_str(&pk, "mime", mime, strlen(mime));
  wk_pack_kv_int(&pk, "expires_at", expires_at);
  msgpack_object o;
  msgpack_zone *z = NULL;
  char err[128];
  int rc =
      sc_value_decode((const uint8_t *)f.data, f.size, &o, &z, err, sizeof err);
  if (rc == 0)
    rc = sc_notice_encode(&out, "share.new", &o);
  if (rc == 0)
    rc = wk_notice_add(c, to, out.data, out.size);
  if (z != NULL)
    msgpack_zone_free(z);
  msgpack_sbuffer_destroy(&f);
  msgpack_sbuffer_destroy(&out);
  return rc;
}

/* share.get's result for share `s`; the owner also sees the counts. */
static void pack_get(wk_ctx *c, const st_share *s) {
  bool own = strcmp(s->owner, c->terminal) == 0;
  msgpack_packer *pk = &c->pk;
  msgpack_pack_map(pk, (own ? 11 : 9) + (s->thumb[0] != '\0'));
  pack_kv_str(pk, "token", s->token, strlen(s->token));
  pack_kv_str(pk, "name", s->name, strlen(s->name));
  pack_kv_str(pk, "owner", s->owner, strlen(s->owner));
  pack_kv_str(pk, "mime", s->mime, strlen(s->mime));
  wk_pack_kv_int(pk, "size", s->size);
  wk_pack_kv_int(pk, "stored_size", s->stored);
  pack_kv_str(pk, "blob", s->blob, strlen(s->blob));
  wk_pack_kv_int(pk, "created", s->created);
  wk_pack_kv_int(pk, "expires_at", s->expires_at);
  if (s->thumb[0] != '\0')
    pack_kv_str(pk, "thumbnail", s->thumb, 64);
  if (own) {
    wk_pack_kv_int(pk, "max_downloads", s->max_downloads);
    wk_pack_kv_int(pk, "downloads", s->downloads);
  }
}

/* ---- The type and the stored form of a shared blob ------------------------
 */

/* A pool thread's libmagic handle, made on its first sniff. */
typedef struct share_thread {
  magic_t magic;
  bool tried; /* magic_open/magic_load ran (magic NULL: they failed) */
  void *mods; /* the offload modules' state on this thread (thumbnails) */
} share_thread;

static int share_thread_init(void **tstate) {
  *tstate = calloc(1, sizeof(share_thread));
  return *tstate != NULL ? 0 : NIMBUS_ENOMEM;
}

static void share_thread_fini(void *tstate) {
  share_thread *t = tstate;
  if (t->magic != NULL)
    magic_close(t->magic);
  wk_modules_thread_fini(t->mods);
  free(t);
}

static magic_t magic_new(char *err, size_t errcap) {
  /* The type alone ("text/plain"), without looking inside compressed
   * files: a share is served as it was uploaded. */
  magic_t m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS);
  if (m == NULL) {
    snprintf(err, errcap, "libmagic: out of memory");
    return NULL;
  }
  if (magic_load(m, NULL) != 0) {
    snprintf(err, errcap, "libmagic cannot load its database: %s",
             magic_error(m) != NULL ? magic_error(m) : "unknown error");
    magic_close(m);
    return NULL;
  }
  return m;
}

/* The MIME type of blob `raw` (`size` bytes) from its first bytes into
 * mime[ST_SHARE_MIME_MAX + 1], or DEFAULT_MIME when libmagic cannot tell
 * (or gives no valid type). Returns 0, or a reply code when the blob
 * cannot be read. */
static int sniff_mime(wk_ctx *c, const uint8_t raw[32], int64_t size,
                      char *mime) {
  nb_strlcpy(mime, DEFAULT_MIME, ST_SHARE_MIME_MAX + 1);
  share_thread *t = c->tstate;
  if (size <= 0 || t == NULL)
    return 0;
  if (!t->tried) {
    char err[256];
    t->tried = true;
    if ((t->magic = magic_new(err, sizeof err)) == NULL)
      NB_WARN("WK-SHARE-MIME", "%s: shares made without a type are %s", err,
              DEFAULT_MIME);
  }
  if (t->magic == NULL)
    return 0;
  size_t n = size < SNIFF_BYTES ? (size_t)size : SNIFF_BYTES, got = 0;
  uint8_t *buf = malloc(n);
  if (buf == NULL)
    return oom(c);
  int rc = st_blobstore_read(c->blobs, raw, 0, buf, n, &got);
  if (rc != 0) {
    free(buf);
    return wk_disk_error(c, "read the shared blob");
  }
  const char *m = magic_buffer(t->magic, buf, got);
  if (m != NULL && mime_valid(m, strlen(m)))
    nb_strlcpy(mime, m, ST_SHARE_MIME_MAX + 1);
  free(buf);
  return 0;
}

/* True for types whose bytes are compressed already (or, as audio, video
 * and pictures are, coded so that zstd gains little): stored as they
 * are without a trial. SVG is text. */
static bool mime_compressed(const char *m) {
  static const char *const prefixes[] = {
      "video/", "audio/", "font/woff",
      /* Office and OpenDocument files are ZIP archives. */
      "application/vnd.openxmlformats-officedocument.",
      "application/vnd.oasis.opendocument."};
  static const char *const exact[] = {"application/zip",
                                      "application/gzip",
                                      "application/x-gzip",
                                      "application/zstd",
                                      "application/x-zstd",
                                      "application/x-xz",
                                      "application/x-bzip2",
                                      "application/x-lzip",
                                      "application/x-lzma",
                                      "application/x-lz4",
                                      "application/x-brotli",
                                      "application/x-7z-compressed",
                                      "application/vnd.rar",
                                      "application/x-rar",
                                      "application/x-rar-compressed",
                                      "application/java-archive",
                                      "application/vnd.android.package-archive",
                                      "application/epub+zip"};
  if (strncmp(m, "image/", 6) == 0)
    return strcmp(m, "image/svg+xml") != 0;
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(m, prefixes[i], strlen(prefixes[i])) == 0)
      return true;
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp(m, exact[i]) == 0)
      return true;
  return false;
}

static int pack_checkpoint(void *arg, uint64_t done, uint64_t total) {
  (void)done, (void)total;
  return wk_checkpoint(arg);
}

/* How shared blob `hex` (`size` bytes, of type `mime`) is stored: sets
 * *stored to the bytes it takes in the store now, compressing it here
 * when it is small and worth it, and *queue when a janitor should try
 * (st_blob_pack_queue_effect). What is on disk is the truth: a record
 * that a crash lost, or that disagrees, is made again. Returns 0 or a
 * reply code after wk_fail. */
static int share_stored(wk_ctx *c, const uint8_t raw[32], const char *hex,
                        int64_t size, const char *mime, int64_t *stored,
                        bool *queue) {
  st_blob_meta meta;
  uint64_t on_disk = 0;
  *stored = size;
  *queue = false;
  if (st_blob_meta_read(c->redis, hex, &meta) != 0)
    return wk_redis_down(c);
  int rc = st_blobstore_stored(c->blobs, raw, (uint64_t)size, &on_disk);
  if (rc != 0)
    return wk_disk_error(c, "read the shared blob");
  bool known = meta.stored == (int64_t)on_disk;
  if ((int64_t)on_disk == size &&
      (known || size == 0 || mime_compressed(mime))) {
    return 0; /* kept as it is: tried before, empty, or compressed */
  }
  if ((int64_t)on_disk == size && size > (int64_t)PACK_HERE_MAX) {
    *queue = true;
    return 0;
  }
  if ((int64_t)on_disk == size) {
    st_blob_pack_opts o = {.level = (int)share_cfg.zstd_level,
                           .progress = pack_checkpoint,
                           .arg = c};
    rc = st_blobstore_pack(c->blobs, raw, (uint64_t)size, &o, &on_disk);
    if (rc == NIMBUS_ECANCELED)
      return wk_fail(c, 499, NULL, "share.create was cancelled by task.cancel");
    if (rc == NIMBUS_ELOST)
      return wk_fail(c, 500, NULL, "the task's claim lapsed");
    if (rc == NIMBUS_ENOSPC || rc == NIMBUS_ENOTFOUND) {
      /* The share goes ahead with the blob as it is: no room for a copy
       * beside it now, or it is being collected (the effect's condition
       * on its metadata then answers). */
      on_disk = (uint64_t)size;
      known = true;
    } else if (rc != 0) {
      return wk_disk_error(c, "compress the shared blob");
    } else {
      known = false;
    }
  }
  *stored = (int64_t)on_disk;
  if (!known && st_blob_stored_set(c->redis, hex, on_disk, NULL) != 0)
    return wk_redis_down(c);
  return 0;
}

/* ---- Thumbnails ---------------------------------------------------------- */

/* The picture types process.image reads, and whether they may carry an
 * orientation to turn the thumbnail upright by. */
static const struct {
  const char *mime;
  bool oriented;
} pictures[] = {
    {"image/jpeg", true}, {"image/png", false}, {"image/webp", false},
    {"image/tiff", true}, {"image/gif", false}, {"image/heif", true},
    {"image/heic", true}, {"image/avif", true},
};

/* The process.image arguments of a share's thumbnail into *args (a map
 * packed into sb, unpacked into up: both the caller's to destroy). */
static int thumb_args(bool oriented, msgpack_sbuffer *sb, msgpack_unpacked *up,
                      const msgpack_object **args) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  wk_pack_str(&pk, "ops");
  msgpack_pack_array(&pk, oriented ? 2 : 1);
  if (oriented) {
    msgpack_pack_map(&pk, 1);
    pack_kv_str(&pk, "op", "autorotate", 10);
  }
  msgpack_pack_map(&pk, 2);
  pack_kv_str(&pk, "op", "thumbnail", 9);
  wk_pack_kv_int(&pk, "size", THUMB_SIDE);
  pack_kv_str(&pk, "format", "jpeg", 4);
  wk_pack_kv_int(&pk, "quality", THUMB_QUALITY);
  if (msgpack_unpack_next(up, sb->data, sb->size, NULL) !=
      MSGPACK_UNPACK_SUCCESS)
    return NIMBUS_ENOMEM;
  *args = &up->data;
  return 0;
}

/* Makes the thumbnail of picture `hex` (`size` bytes, of type `mime`)
 * into thumb[65] ("" when it is not a picture or none could be made: a
 * log line says why). Returns 0, or 499/500 after wk_fail when the task
 * was cancelled or lost its claim meanwhile (the share then fails as any
 * task would). */
static int share_thumbnail(wk_ctx *c, const char *hex, int64_t size,
                           const char *mime, char thumb[65]) {
  thumb[0] = '\0';
  size_t k = 0, n = sizeof pictures / sizeof pictures[0];
  while (k < n && strcmp(pictures[k].mime, mime) != 0)
    k++;
  share_thread *t = c->tstate;
  if (k == n || size <= 0 || t == NULL)
    return 0;
  msgpack_sbuffer sb;
  msgpack_unpacked up;
  msgpack_sbuffer_init(&sb);
  msgpack_unpacked_init(&up);
  const msgpack_object *args = NULL;
  st_result r;
  memset(&r, 0, sizeof r);
  int64_t t0 = nb_mono_ms();
  int code = thumb_args(pictures[k].oriented, &sb, &up, &args);
  if (code == 0)
    code = wk_offload_blob(c, &t->mods, "process.image", args, hex,
                           (uint64_t)size, &r);
  else
    code = wk_fail(c, 500, NULL, "the worker is out of memory");
  msgpack_unpacked_destroy(&up);
  msgpack_sbuffer_destroy(&sb);
  if (code == 0) {
    nb_strlcpy(thumb, r.blob, 65);
    NB_DEBUG("WK-SHARE-THUMB", "%s/%s: thumbnail %s of %s in %lld ms",
             c->terminal, c->task->id, thumb, hex,
             (long long)(nb_mono_ms() - t0));
    st_result_fini(&r);
    return 0;
  }
  int stop = wk_checkpoint(c);
  if (stop == NIMBUS_ECANCELED)
    return wk_fail(c, 499, NULL, "share.create was cancelled by task.cancel");
  if (stop != 0)
    return wk_fail(c, 500, NULL, "the task's claim lapsed");
  NB_INFO("WK-SHARE-THUMB",
          "%s/%s: share of %s (%s) made without a "
          "thumbnail: %d %s",
          c->terminal, c->task->id, hex, mime, code, c->error);
  c->error[0] = c->help[0] = '\0';
  return 0;
}

/* ---- share.create -------------------------------------------------------- */

static int h_share_create(wk_ctx *c) {
  const char *name = NULL, *mime_s = NULL;
  size_t name_len = 0, mime_len = 0;
  char hex[65], mime[ST_SHARE_MIME_MAX + 1], token[ST_SHARE_TOKEN_LEN + 1],
      old_token[ST_SHARE_TOKEN_LEN + 1], thumb[65] = "";
  uint8_t raw[32];
  int64_t expires_in = share_cfg.max_expires_ms, max_downloads = 0, size = -1,
          stored = -1;
  bool replace = false, queue = false, granted = false;
  char(*to)[65] = NULL;
  size_t nto = 0;
  const char **tov = NULL;
  st_share old;
  memset(&old, 0, sizeof old);

  int code = arg_name(c, false, &name, &name_len);
  if (code == 0)
    code = wk_arg_blob(c, "blob", hex, raw);
  if (code != 0)
    return code;
  int rc = sc_arg_str(c->args, "mime", false, 1, ST_SHARE_MIME_MAX, &mime_s,
                      &mime_len, c->error, sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  if (rc == 0 && !mime_valid(mime_s, mime_len))
    return wk_fail(c, 400, "leave it out when unsure",
                   "args.mime is not a MIME type such as \"image/jpeg\"");
  bool sniff = rc != 0;
  nb_strlcpy(mime, DEFAULT_MIME, sizeof mime);
  if (rc == 0) {
    memcpy(mime, mime_s, mime_len);
    mime[mime_len] = '\0';
  }
  if ((code = arg_int_opt(c, "expires_in", 1, share_cfg.max_expires_ms,
                          &expires_in,
                          "expires_in is in ms; ping's "
                          "limits.share_max_expires is the longest")) != 0 ||
      (code = arg_int_opt(c, "max_downloads", 1, DOWNLOADS_MAX, &max_downloads,
                          "leave it out for no limit")) != 0)
    return code;
  rc = sc_arg_bool(c->args, "replace", false, &replace, c->error,
                   sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  if ((code = arg_to(c, &to, &nto)) != 0)
    goto out;

  if ((code = wk_blob_need(c, hex, &size, &granted)) != 0)
    goto out;
  int64_t now = nb_now_ms();
  if (st_share_name_lookup(c->redis, c->terminal, name, name_len, old_token) !=
          0 ||
      (old_token[0] != '\0' && st_share_read(c->redis, old_token, &old) != 0)) {
    code = wk_redis_down(c);
    goto out;
  }
  if (old_token[0] != '\0' && !old.exists)
    nb_strlcpy(old.token, old_token, sizeof old.token); /* a stale name */
  if (st_share_live(&old, now) && !replace) {
    code = wk_fail(c, 409,
                   "pass replace: true to put the new file in its place, or "
                   "choose another name",
                   "this terminal already shares a file named \"%.*s\"",
                   (int)(name_len > 200 ? 200 : name_len), name);
    goto out;
  }
  if ((sniff && (code = sniff_mime(c, raw, size, mime)) != 0) ||
      (code = share_stored(c, raw, hex, size, mime, &stored, &queue)) != 0 ||
      (code = share_thumbnail(c, hex, size, mime, thumb)) != 0)
    goto out;
  if (st_share_token_new(token) != 0) {
    code = wk_fail(c, 500, NULL, "the worker has no source of randomness");
    goto out;
  }
  tov = calloc(nto > 0 ? nto : 1, sizeof *tov);
  if (tov == NULL) {
    code = oom(c);
    goto out;
  }
  for (size_t i = 0; i < nto; i++)
    tov[i] = to[i];
  int64_t expires_at =
      expires_in > INT64_MAX - now ? INT64_MAX : now + expires_in;
  st_share_new sn = {.token = token,
                     .owner = c->terminal,
                     .blob = hex,
                     .mime = mime,
                     .thumb = thumb[0] != '\0' ? thumb : NULL,
                     .name = name,
                     .name_len = name_len,
                     .size = size,
                     .created = now,
                     .expires_at = expires_at,
                     .max_downloads = max_downloads,
                     .to = tov,
                     .nto = nto};
  if (st_share_create_effect(c->effect, &sn,
                             old_token[0] != '\0' ? &old : NULL) != 0 ||
      (queue && st_blob_pack_queue_effect(c->effect, hex, now) != 0) ||
      /* A blob it may read only through a grant (a share it got) becomes
       * its own: its share outlives the grant, and so must its own right
       * to fetch it (an owner's get grants nothing). */
      (granted && st_blob_access_effect(c->effect, c->terminal, hex) != 0)) {
    code = oom(c);
    goto out;
  }
  for (size_t i = 0; i < nto; i++)
    if (strcmp(to[i], c->terminal) != 0 &&
        queue_notice(c, to[i], token, name, name_len, size, mime, expires_at) !=
            0) {
      code = oom(c);
      goto out;
    }
  msgpack_pack_map(&c->pk, thumb[0] != '\0' ? 8 : 7);
  pack_kv_str(&c->pk, "token", token, strlen(token));
  pack_kv_str(&c->pk, "name", name, name_len);
  pack_kv_str(&c->pk, "owner", c->terminal, strlen(c->terminal));
  wk_pack_kv_int(&c->pk, "size", size);
  wk_pack_kv_int(&c->pk, "stored_size", stored);
  pack_kv_str(&c->pk, "mime", mime, strlen(mime));
  wk_pack_kv_int(&c->pk, "expires_at", expires_at);
  if (thumb[0] != '\0')
    pack_kv_str(&c->pk, "thumbnail", thumb, 64);
out:
  st_share_fini(&old);
  free(tov);
  free(to);
  return code;
}

/* ---- share.get ----------------------------------------------------------- */

static int h_share_get(wk_ctx *c) {
  const char *tok = NULL, *owner = NULL, *name = NULL;
  size_t tok_len = 0, owner_len = 0, name_len = 0;
  char token[ST_SHARE_TOKEN_LEN + 1] = "", owner_id[65];
  int rc = sc_arg_str(c->args, "token", false, 0, 256, &tok, &tok_len, c->error,
                      sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  int orc = sc_arg_str(c->args, "owner", false, 0, 256, &owner, &owner_len,
                       c->error, sizeof c->error);
  if (orc != 0 && orc != NIMBUS_ENOTFOUND)
    return 400;
  int code = arg_name(c, true, &name, &name_len);
  if (code != 0)
    return code;
  bool by_token = rc == 0, by_name = orc == 0 || name != NULL;
  if (by_token == by_name || (by_name && (orc != 0 || name == NULL)))
    return wk_fail(c, 400,
                   "the token is what share.create answered; the "
                   "name is the owner's name for the file",
                   "share.get takes args.token, or args.owner and "
                   "args.name");
  if (by_name) {
    if (!nb_valid_terminal(owner, owner_len))
      return wk_fail(c, 400, NULL,
                     "args.owner is not a terminal id: 1-64 characters of "
                     "A-Z a-z 0-9 . _ -");
    memcpy(owner_id, owner, owner_len);
    owner_id[owner_len] = '\0';
    if (st_share_name_lookup(c->redis, owner_id, name, name_len, token) != 0)
      return wk_redis_down(c);
  } else if (st_share_token_valid(tok, tok_len)) {
    memcpy(token, tok, tok_len);
    token[tok_len] = '\0';
  }
  /* No such name: the same take still runs, on a token no share has (a
   * new random one), so that the time of the answer does not tell a name
   * that is not for this terminal from one that does not exist. A token
   * that cannot be one is answered at once: its form is public. */
  if (token[0] == '\0' && (!by_name || st_share_token_new(token) != 0))
    return no_share(c);
  st_share s;
  if (st_share_take(c->redis, token, c->terminal, nb_now_ms(), &s) != 0)
    code = wk_redis_down(c);
  else if (!s.exists)
    code = no_share(c);
  else
    pack_get(c, &s);
  st_share_fini(&s);
  return code;
}

/* ---- share.list ---------------------------------------------------------- */

static void pack_item(msgpack_packer *pk, const st_share *s, bool own) {
  msgpack_pack_map(pk, own ? 12 + (s->thumb[0] != '\0') : 8);
  pack_kv_str(pk, "token", s->token, strlen(s->token));
  pack_kv_str(pk, "name", s->name, strlen(s->name));
  pack_kv_str(pk, "owner", s->owner, strlen(s->owner));
  pack_kv_str(pk, "mime", s->mime, strlen(s->mime));
  wk_pack_kv_int(pk, "size", s->size);
  wk_pack_kv_int(pk, "stored_size", s->stored);
  wk_pack_kv_int(pk, "created", s->created);
  wk_pack_kv_int(pk, "expires_at", s->expires_at);
  if (!own)
    return;
  pack_kv_str(pk, "blob", s->blob, strlen(s->blob));
  if (s->thumb[0] != '\0')
    pack_kv_str(pk, "thumbnail", s->thumb, 64);
  wk_pack_kv_int(pk, "max_downloads", s->max_downloads);
  wk_pack_kv_int(pk, "downloads", s->downloads);
  wk_pack_str(pk, "to");
  msgpack_pack_array(pk, s->nto);
  for (size_t i = 0; i < s->nto; i++)
    wk_pack_str(pk, s->to[i]);
}

static int h_share_list(wk_ctx *c) {
  const char *owner = NULL, *cur = NULL;
  size_t owner_len = 0, cur_len = 0;
  char owner_id[65] = "", cursor[ST_SHARE_MEMBER_LEN + 1] = "";
  int64_t limit = LIST_DEFAULT;
  bool inbox = false;
  int rc = sc_arg_str(c->args, "owner", false, 0, 256, &owner, &owner_len,
                      c->error, sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  if (rc == 0) {
    if (!nb_valid_terminal(owner, owner_len))
      return wk_fail(c, 400, NULL,
                     "args.owner is not a terminal id: 1-64 characters of "
                     "A-Z a-z 0-9 . _ -");
    memcpy(owner_id, owner, owner_len);
    owner_id[owner_len] = '\0';
  }
  rc = sc_arg_str(c->args, "cursor", false, 0, 256, &cur, &cur_len, c->error,
                  sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  if (rc == 0 && cur_len > 0) {
    if (!st_share_member_valid(cur, cur_len))
      return wk_fail(c, 400, "pass next_cursor from the previous page",
                     "args.cursor is not a cursor of share.list");
    memcpy(cursor, cur, cur_len);
    cursor[cur_len] = '\0';
  }
  rc = sc_arg_int(c->args, "limit", false, 1, LIST_MAX, &limit, c->error,
                  sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  rc = sc_arg_bool(c->args, "inbox", false, &inbox, c->error, sizeof c->error);
  if (rc != 0 && rc != NIMBUS_ENOTFOUND)
    return 400;
  /* Another owner's shares: only those addressed to this terminal. */
  bool self = owner_id[0] == '\0' || strcmp(owner_id, c->terminal) == 0;
  if (!self)
    inbox = true;
  st_share *page = calloc((size_t)limit, sizeof *page);
  if (page == NULL)
    return oom(c);
  size_t n = 0;
  char next[ST_SHARE_MEMBER_LEN + 1];
  int code = 0;
  if (st_share_list(c->redis, c->terminal, inbox,
                    owner_id[0] != '\0' ? owner_id : NULL, cursor,
                    (size_t)limit, nb_now_ms(), page, &n, next) != 0) {
    code = wk_redis_down(c);
  } else {
    msgpack_pack_map(&c->pk, next[0] != '\0' ? 2 : 1);
    wk_pack_str(&c->pk, "shares");
    msgpack_pack_array(&c->pk, n);
    for (size_t i = 0; i < n; i++)
      pack_item(&c->pk, &page[i], strcmp(page[i].owner, c->terminal) == 0);
    if (next[0] != '\0') {
      wk_pack_str(&c->pk, "next_cursor");
      wk_pack_str(&c->pk, next);
    }
  }
  for (size_t i = 0; i < n; i++)
    st_share_fini(&page[i]);
  free(page);
  return code;
}

/* ---- share.revoke -------------------------------------------------------- */

static int h_share_revoke(wk_ctx *c) {
  const char *tok = NULL;
  size_t tok_len = 0;
  char token[ST_SHARE_TOKEN_LEN + 1];
  int rc = sc_arg_str(c->args, "token", true, 1, 256, &tok, &tok_len, c->error,
                      sizeof c->error);
  if (rc != 0)
    return 400;
  if (!st_share_token_valid(tok, tok_len))
    return no_share(c);
  memcpy(token, tok, tok_len);
  token[tok_len] = '\0';
  st_share s;
  int64_t now = nb_now_ms();
  int code = 0;
  if (st_share_read(c->redis, token, &s) != 0)
    code = wk_redis_down(c);
  else if (!st_share_live(&s, now) || strcmp(s.owner, c->terminal) != 0)
    code = no_share(c); /* someone else's is the same as none */
  else if (st_share_revoke_effect(c->effect, &s, now) != 0)
    code = oom(c);
  if (code == 0) {
    msgpack_pack_map(&c->pk, 1);
    pack_kv_str(&c->pk, "token", token, strlen(token));
  }
  st_share_fini(&s);
  return code;
}

/* ---- The family ---------------------------------------------------------- */

static const nb_opt share_options[] = {
    {"share_max_expires_ms", NB_OPT_INT, "31536000000",
     "longest a share may last, ms (share.create's expires_in, and its "
     "default; 365 days)",
     offsetof(share_config, max_expires_ms), 1, INT64_C(3153600000000), NULL},
    {"share_zstd_level", NB_OPT_INT, "3",
     "zstd level of shared documents kept compressed in the blob store "
     "(1 fastest, 19 smallest)",
     offsetof(share_config, zstd_level), 1, 19, NULL},
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

/* libmagic's database is looked for once at start, so that a worker that
 * cannot sniff says so among its first lines. It still starts: uploads
 * and backups do not need libmagic, and shares then get DEFAULT_MIME. */
static int share_init(const wk_host_api *host, char *err, size_t errcap) {
  (void)host, (void)err, (void)errcap;
  char why[256];
  magic_t m = magic_new(why, sizeof why);
  if (m == NULL)
    NB_WARN("WK-SHARE-MIME", "%s: shares made without a type will be %s", why,
            DEFAULT_MIME);
  else
    magic_close(m);
  return 0;
}

static int share_limits(wk_limits *l) {
  return wk_limit_add(l, "share_max_expires", share_cfg.max_expires_ms);
}

/* share.create reads the blob (its head; its first 64 KiB for a type; a
 * small one whole to compress it): the transfer pool, whose threads wait
 * on the disk. The others are Redis only, a few round trips each: the
 * quick pool. */
static const wk_handler share_handlers[] = {
    {.type = "share.create",
     .flags = WK_STATEFUL,
     .pool = "transfer",
     .fn = h_share_create},
    {.type = "share.get",
     .flags = WK_STATEFUL,
     .pool = "quick",
     .fn = h_share_get},
    {.type = "share.list", .pool = "quick", .fn = h_share_list},
    {.type = "share.revoke",
     .flags = WK_STATEFUL,
     .pool = "quick",
     .fn = h_share_revoke},
    {.type = NULL},
};

const wk_family wk_family_share = {
    .abi = WK_FAMILY_ABI,
    .name = "share",
    .needs = WK_NEEDS_BLOBS,
    .options = share_options,
    .config = &share_cfg,
    .init = share_init,
    .thread_init = share_thread_init,
    .thread_fini = share_thread_fini,
    .limits = share_limits,
    .handlers = share_handlers,
};
