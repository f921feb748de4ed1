/* process.image: pictures through libvips, as a module of the offload
 * machinery (handlers_offload.c; schemas/SPEC.md, process.image). The
 * worker maps nimbus-image.so, and with it libvips, on the first
 * process.image task; the module exports nothing but nimbus_family_v1 and
 * reaches the worker only through the host table init is handed.
 *
 * A task is one libvips pipeline. The input streams in through a custom
 * VipsSource whose reads are host->input_read (the blob store, or the
 * task's inline data: one path, so a cancel stops a decode either way);
 * every op adds a lazy image; the saver streams the output through a
 * custom VipsTarget whose writes are host->output_write. No pixel is
 * decoded before the header's size has been checked against max_pixels
 * and every op's output size has too, so a small PNG that claims 50000 x
 * 50000 costs its header and a 413. Access is sequential (decoded strip by
 * strip, never whole) unless an op turns the picture (rotate, a vertical
 * flip, autorotate): sequential access would then keep all of it in a
 * line cache in memory anyway, so the picture is opened for random access
 * and libvips decodes it once, into memory or, past its threshold, into a
 * temporary file.
 *
 * libvips reports its work through the "eval" signal of the image being
 * computed (and of the loaded picture while a random-access decode runs);
 * there the module checks host->checkpoint, sends progress (per mille,
 * the decode counted as the first half when there is one), and on a
 * cancel kills the pipeline and makes every later read and write fail, so
 * a decode stops too.
 *
 * Why the settings in init: the operation cache is off (max 0 entries):
 * every task's input is a new source, so an entry could never be hit, but
 * it would keep a task's pictures, and a source whose callbacks point
 * into a task that has ended, alive after the task. Untrusted loaders are
 * blocked, and only the loaders of the formats SPEC.md names are used at
 * all (any other is 415). libvips runs two threads per pipeline: the
 * offload pool's threads are the parallelism across tasks. libvips's
 * error text is one buffer for the whole process, so a message quoted in
 * a 422 may, when two tasks fail at the same instant, be the other's (it
 * names libvips's own condition, never a terminal's data). */
#include "wk_family.h"

#include "sc.h"
#include "nimbus/errors.h"

#include <vips/vips.h>

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* The module's own version: what its output depends on besides libvips's
 * (the cache key holds both, see version below). */
#define IMG_VERSION "2"
#define OPS_MAX 32
#define SIDE_MAX 65535
#define QUALITY_DEFAULT 85
#define VIPS_THREADS 2
/* Progress: none for work under about a second, then about 4 a second. */
#define PROGRESS_FIRST_US 1000000
#define PROGRESS_EVERY_US 250000

static const wk_host_api *host;
static const wk_offload_limits *lim;
/* "1 vips-8.14.1": filled by nimbus_family_v1. */
static char version[64];

/* ---- Arguments ------------------------------------------------------------
 */

typedef enum op_kind {
  OP_BLUR,
  OP_RESIZE,
  OP_THUMBNAIL,
  OP_CROP,
  OP_ROTATE,
  OP_AUTOROTATE,
  OP_FLIP,
  OP_SHARPEN,
  OP_GRAYSCALE,
  OP_STRIP,
} op_kind;

typedef struct op_def {
  const char *name;
  op_kind kind;
  /* Needs the whole picture decoded: the pipeline is opened for random
   * access. */
  bool whole;
} op_def;

static const op_def op_defs[] = {
    {.name = "blur", .kind = OP_BLUR},
    {.name = "resize", .kind = OP_RESIZE},
    {.name = "thumbnail", .kind = OP_THUMBNAIL},
    {.name = "crop", .kind = OP_CROP},
    {.name = "rotate", .kind = OP_ROTATE, .whole = true},
    {.name = "autorotate", .kind = OP_AUTOROTATE, .whole = true},
    {.name = "flip", .kind = OP_FLIP},
    {.name = "sharpen", .kind = OP_SHARPEN},
    {.name = "grayscale", .kind = OP_GRAYSCALE},
    {.name = "strip", .kind = OP_STRIP},
};

typedef struct img_op {
  const op_def *def;
  double sigma;                     /* blur, sharpen */
  int64_t left, top, width, height; /* crop; resize (0: not given) */
  int fit;                          /* resize: 0 contain, 1 fill */
  int64_t size;                     /* thumbnail */
  int crop;                         /* thumbnail: index of crop_names */
  int64_t angle;                    /* rotate */
  int direction;                    /* flip: 0 horizontal, 1 vertical */
} img_op;

static const char *const fit_names[] = {"contain", "fill", NULL};
static const char *const crop_names[] = {"none", "centre", "attention", NULL};
static const VipsInteresting crop_vips[] = {
    VIPS_INTERESTING_NONE, VIPS_INTERESTING_CENTRE, VIPS_INTERESTING_ATTENTION};
static const char *const direction_names[] = {"horizontal", "vertical", NULL};

typedef enum img_format { FMT_JPEG, FMT_PNG, FMT_WEBP } img_format;
static const char *const format_names[] = {"jpeg", "png", "webp", NULL};

typedef struct img_args {
  img_op ops[OPS_MAX];
  size_t nops;
  int format; /* -1: the input's, when it is one of format_names */
  int64_t quality;
  bool strip;
  bool whole;
} img_args;

/* True when a terminal's string can be quoted in an error sentence as it
 * is: printable ASCII but the quote and the backslash. */
static bool quotable(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
      return false;
  return n <= 64;
}

/* The sc_arg_* readers name a key "args.<key>"; an op's parameter is
 * "args.ops[i].<key>". */
static int op_bad(wk_ctx *c, size_t i, const char *sc_err) {
  const char *rest = strncmp(sc_err, "args.", 5) == 0 ? sc_err + 5 : sc_err;
  return host->fail(c, 400, NULL, "args.ops[%zu].%s", i, rest);
}

/* Each p_* reads one parameter of op i from its map m: 0 (absent and not
 * required: *out keeps its default) or 400 after host->fail. */
static int p_num(wk_ctx *c, const msgpack_object *m, size_t i, const char *key,
                 bool required, double lo, double hi, double *out) {
  char err[160];
  int rc = sc_arg_num(m, key, required, lo, hi, out, err, sizeof err);
  return rc == 0 || rc == NIMBUS_ENOTFOUND ? 0 : op_bad(c, i, err);
}

static int p_int(wk_ctx *c, const msgpack_object *m, size_t i, const char *key,
                 bool required, int64_t lo, int64_t hi, int64_t *out) {
  char err[160];
  int rc = sc_arg_int(m, key, required, lo, hi, out, err, sizeof err);
  return rc == 0 || rc == NIMBUS_ENOTFOUND ? 0 : op_bad(c, i, err);
}

/* A string parameter that names one of `names` (ended by NULL): *out is
 * its index. */
static int p_choice(wk_ctx *c, const msgpack_object *m, size_t i,
                    const char *key, bool required, const char *const *names,
                    int *out) {
  char err[160], list[96] = "";
  const char *s = NULL;
  size_t n = 0;
  int rc = sc_arg_str(m, key, required, 0, 65536, &s, &n, err, sizeof err);
  if (rc == NIMBUS_ENOTFOUND)
    return 0;
  if (rc != 0)
    return op_bad(c, i, err);
  for (int k = 0; names[k] != NULL; k++) {
    if (strlen(names[k]) == n && memcmp(names[k], s, n) == 0) {
      *out = k;
      return 0;
    }
    size_t at = strlen(list);
    snprintf(list + at, sizeof list - at, "%s%s", k > 0 ? ", " : "", names[k]);
  }
  if (quotable(s, n))
    return host->fail(c, 400, NULL,
                      "args.ops[%zu].%s \"%.*s\" is not one of %s", i, key,
                      (int)n, s, list);
  return host->fail(c, 400, NULL, "args.ops[%zu].%s must be one of %s", i, key,
                    list);
}

static int parse_op(wk_ctx *c, size_t i, const msgpack_object *m, img_op *op) {
  char err[160];
  const char *name = NULL;
  size_t n = 0;
  if (m->type != MSGPACK_OBJECT_MAP)
    return host->fail(c, 400, NULL,
                      "args.ops[%zu] must be a map {op: NAME, ...}", i);
  int rc = sc_arg_str(m, "op", true, 1, 65536, &name, &n, err, sizeof err);
  if (rc != 0)
    return op_bad(c, i, err);
  memset(op, 0, sizeof *op);
  for (size_t k = 0; k < sizeof op_defs / sizeof op_defs[0]; k++)
    if (strlen(op_defs[k].name) == n && memcmp(op_defs[k].name, name, n) == 0)
      op->def = &op_defs[k];
  if (op->def == NULL) {
    const char *help = "the ops are blur, resize, thumbnail, crop, rotate, "
                       "autorotate, flip, sharpen, grayscale and strip";
    if (quotable(name, n))
      return host->fail(c, 400, help,
                        "args.ops[%zu].op \"%.*s\" is not an op of "
                        "process.image",
                        i, (int)n, name);
    return host->fail(c, 400, help,
                      "args.ops[%zu].op is not an op of process.image", i);
  }
  switch (op->def->kind) {
  case OP_BLUR:
    return p_num(c, m, i, "sigma", true, 0.1, 100, &op->sigma);
  case OP_RESIZE:
    if ((rc = p_int(c, m, i, "width", false, 1, SIDE_MAX, &op->width)) ||
        (rc = p_int(c, m, i, "height", false, 1, SIDE_MAX, &op->height)) ||
        (rc = p_choice(c, m, i, "fit", false, fit_names, &op->fit)))
      return rc;
    if (op->width == 0 && op->height == 0)
      return host->fail(c, 400, NULL,
                        "args.ops[%zu] resize needs width, height or both", i);
    return 0;
  case OP_THUMBNAIL:
    if ((rc = p_int(c, m, i, "size", true, 1, SIDE_MAX, &op->size)))
      return rc;
    return p_choice(c, m, i, "crop", false, crop_names, &op->crop);
  case OP_CROP:
    if ((rc = p_int(c, m, i, "left", true, 0, SIDE_MAX, &op->left)) ||
        (rc = p_int(c, m, i, "top", true, 0, SIDE_MAX, &op->top)) ||
        (rc = p_int(c, m, i, "width", true, 1, SIDE_MAX, &op->width)) ||
        (rc = p_int(c, m, i, "height", true, 1, SIDE_MAX, &op->height)))
      return rc;
    return 0;
  case OP_ROTATE:
    if (sc_map_get(m, "angle") == NULL)
      return host->fail(c, 400, NULL, "args.ops[%zu].angle is missing", i);
    if (sc_arg_int(m, "angle", true, 90, 270, &op->angle, err, sizeof err) !=
            0 ||
        op->angle % 90 != 0)
      return host->fail(c, 400, NULL,
                        "args.ops[%zu].angle must be 90, 180 or 270", i);
    return 0;
  case OP_FLIP:
    return p_choice(c, m, i, "direction", true, direction_names,
                    &op->direction);
  case OP_SHARPEN:
    op->sigma = 1;
    return p_num(c, m, i, "sigma", false, 0.1, 10, &op->sigma);
  case OP_AUTOROTATE:
  case OP_GRAYSCALE:
  case OP_STRIP:
    return 0;
  }
  return 0;
}

/* Reads and checks every argument before a byte of the input is read:
 * 0, or the reply code after host->fail. */
static int parse_args(wk_ctx *c, img_args *a) {
  const msgpack_object *args = host->args(c), *ops = NULL;
  char err[160];
  memset(a, 0, sizeof *a);
  a->format = -1;
  a->quality = QUALITY_DEFAULT;
  int rc = sc_arg_array(args, "ops", true, OPS_MAX, &ops, err, sizeof err);
  if (rc == 0 && ops->via.array.size == 0)
    snprintf(err, sizeof err, "args.ops must be an array of 1 to %d ops",
             OPS_MAX);
  if (rc != 0 || ops->via.array.size == 0)
    return host->fail(c, 400,
                      "give the ops as a list, e.g. [{\"op\": \"blur\", "
                      "\"sigma\": 4}]",
                      "%s", err);
  a->nops = ops->via.array.size;
  for (size_t i = 0; i < a->nops; i++) {
    if ((rc = parse_op(c, i, &ops->via.array.ptr[i], &a->ops[i])) != 0)
      return rc;
    a->strip |= a->ops[i].def->kind == OP_STRIP;
    a->whole |= a->ops[i].def->whole ||
                (a->ops[i].def->kind == OP_FLIP && a->ops[i].direction == 1);
  }
  const char *f = NULL;
  size_t n = 0;
  rc = sc_arg_str(args, "format", false, 0, 65536, &f, &n, err, sizeof err);
  if (rc == NIMBUS_EINVAL)
    return host->fail(c, 400, NULL, "%s", err);
  if (rc == 0) {
    for (int k = 0; format_names[k] != NULL; k++)
      if (strlen(format_names[k]) == n && memcmp(format_names[k], f, n) == 0)
        a->format = k;
    if (a->format < 0 && quotable(f, n))
      return host->fail(c, 415, "ask for jpeg, png or webp",
                        "args.format \"%.*s\" is not one of jpeg, png, webp",
                        (int)n, f);
    if (a->format < 0)
      return host->fail(c, 415, "ask for jpeg, png or webp",
                        "args.format is not one of jpeg, png, webp");
  }
  rc = sc_arg_int(args, "quality", false, 1, 100, &a->quality, err, sizeof err);
  if (rc == NIMBUS_EINVAL)
    return host->fail(c, 400, NULL, "%s", err);
  return 0;
}

/* ---- One task's pipeline --------------------------------------------------
 */

typedef struct img_job {
  wk_ctx *c;
  uint64_t size;      /* the input's */
  uint64_t pos;       /* the source's offset */
  atomic_int in_err;  /* the first failed input_read */
  atomic_int out_err; /* the first failed output_write */
  /* 0, or what host->checkpoint said: NIMBUS_ECANCELED, NIMBUS_ELOST.
   * Set by the eval handler, read by the reads and writes, which may run
   * on other threads of libvips's. */
  atomic_int stop;
  VipsImage *in;  /* the loaded picture (borrowed), to tell its evals */
  bool two_phase; /* a random-access decode comes first */
  pthread_mutex_t mu;
  /* Under mu: */
  int decode_pm, compute_pm, sent_pm;
  gint64 next_us;
} img_job;

/* The VipsSource's "read": the next len bytes of the input. */
static gint64 src_read(VipsSourceCustom *s, void *buf, gint64 len, void *user) {
  img_job *j = user;
  size_t got = 0;
  (void)s;
  if (atomic_load(&j->stop) != 0 || j->in_err != 0 || len < 0)
    return -1;
  int rc = host->input_read(j->c, j->pos, buf, (size_t)len, &got);
  if (rc != 0) {
    j->in_err = rc;
    return -1;
  }
  j->pos += got;
  return (gint64)got;
}

/* The VipsSource's "seek", as lseek(2). Seeking makes the source random
 * access, which TIFF needs. */
static gint64 src_seek(VipsSourceCustom *s, gint64 off, int whence,
                       void *user) {
  img_job *j = user;
  gint64 base;
  (void)s;
  if (whence == SEEK_SET)
    base = 0;
  else if (whence == SEEK_CUR)
    base = (gint64)j->pos;
  else if (whence == SEEK_END)
    base = (gint64)j->size;
  else
    return -1;
  if (off < -base || off > INT64_MAX - base)
    return -1;
  j->pos = (uint64_t)(base + off);
  return (gint64)j->pos;
}

/* The VipsTarget's "write": libvips may call it from a thread of its own. */
static gint64 dst_write(VipsTargetCustom *t, const void *data, gint64 len,
                        void *user) {
  img_job *j = user;
  (void)t;
  if (atomic_load(&j->stop) != 0 || j->out_err != 0 || len < 0)
    return -1;
  int rc = host->output_write(j->c, data, (size_t)len);
  if (rc != 0) {
    j->out_err = rc;
    return -1;
  }
  return len;
}

/* "eval" of the image being computed, or of the loaded picture during a
 * random-access decode (then on the thread that triggered the decode). */
static void on_eval(VipsImage *im, VipsProgress *p, void *user) {
  img_job *j = user;
  int rc = host->checkpoint(j->c);
  if (rc != 0) {
    int zero = 0;
    atomic_compare_exchange_strong(&j->stop, &zero, rc);
    vips_image_set_kill(im, TRUE);
    return;
  }
  int pm = p->tpels > 0 ? (int)(p->npels * 1000 / p->tpels) : 0;
  pm = pm < 0 ? 0 : (pm > 1000 ? 1000 : pm);
  gint64 now = g_get_monotonic_time();
  int send = -1;
  pthread_mutex_lock(&j->mu);
  if (im == j->in && j->two_phase)
    j->decode_pm = pm;
  else
    j->compute_pm = pm;
  int done = j->two_phase ? (j->decode_pm + j->compute_pm) / 2 : j->compute_pm;
  if (now >= j->next_us && done > j->sent_pm) {
    j->sent_pm = send = done;
    j->next_us = now + PROGRESS_EVERY_US;
  }
  pthread_mutex_unlock(&j->mu);
  if (send >= 0)
    host->progress(j->c, send, 1000);
}

/* The first line of libvips's error text (taken, so the buffer is clear
 * for the next failure), at most cap-1 bytes. */
static void vips_why(char *buf, size_t cap) {
  char *e = vips_error_buffer_copy();
  size_t n = e != NULL ? strcspn(e, "\n") : 0;
  while (n > 0 && (e[n - 1] == ' ' || e[n - 1] == '.'))
    n--;
  snprintf(buf, cap, "%.*s", (int)n, n > 0 ? e : "libvips gave no reason");
  g_free(e);
}

/* The formats this module reads, by loader class: the others (PDF, SVG,
 * PPM, FITS, ... most of them untrusted) are refused with 415. */
static const struct {
  const char *loader;
  const char *name;
  int format; /* its img_format, -1: not one this module writes */
} loaders[] = {
    {"VipsForeignLoadJpegSource", "jpeg", FMT_JPEG},
    {"VipsForeignLoadPngSource", "png", FMT_PNG},
    {"VipsForeignLoadWebpSource", "webp", FMT_WEBP},
    {"VipsForeignLoadTiffSource", "tiff", -1},
    {"VipsForeignLoadNsgifSource", "gif", -1},
    {"VipsForeignLoadHeifSource", "heif", -1},
};

/* Opens the input for `access`: *out is the picture, header read, pixels
 * not yet; *fmt the index of its loader. 0 or the reply code. */
static int open_input(img_job *j, VipsAccess access, VipsSourceCustom **src,
                      VipsImage **out, size_t *fmt) {
  wk_ctx *c = j->c;
  char why[200];
  *src = vips_source_custom_new();
  if (*src == NULL)
    return host->fail(c, 500, NULL, "libvips could not make a source");
  g_signal_connect(*src, "read", G_CALLBACK(src_read), j);
  g_signal_connect(*src, "seek", G_CALLBACK(src_seek), j);
  const char *loader = vips_foreign_find_load_source(VIPS_SOURCE(*src));
  if (j->in_err != 0)
    return host->fail(c, 500, NULL, "the input could not be read (%s)",
                      nimbus_strerror(j->in_err));
  if (loader == NULL) {
    vips_error_clear();
    return host->fail(c, 415,
                      "send a JPEG, PNG, WebP, TIFF, GIF, HEIF or AVIF picture",
                      "the input is not a picture libvips can read");
  }
  *fmt = sizeof loaders / sizeof loaders[0];
  for (size_t k = 0; k < sizeof loaders / sizeof loaders[0]; k++)
    if (strcmp(loaders[k].loader, loader) == 0)
      *fmt = k;
  if (*fmt == sizeof loaders / sizeof loaders[0])
    return host->fail(
        c, 415, "send a JPEG, PNG, WebP, TIFF, GIF, HEIF or AVIF picture",
        "the input is a picture this cloud does not read (%s)", loader);
  *out = vips_image_new_from_source(VIPS_SOURCE(*src), "", "access", access,
                                    "fail_on", VIPS_FAIL_ON_ERROR, NULL);
  if (*out != NULL)
    return 0;
  if (j->in_err != 0)
    return host->fail(c, 500, NULL, "the input could not be read (%s)",
                      nimbus_strerror(j->in_err));
  vips_why(why, sizeof why);
  return host->fail(c, 422, "send the picture again, whole",
                    "the picture is corrupt or truncated: %s", why);
}

/* The JPEG shrink-on-load factor (1, 2, 4 or 8) for a pipeline whose
 * first op that changes the picture's size is a thumbnail, after nothing
 * but autorotate, grayscale or strip (none of which changes the scale
 * the thumbnail needs: a turn swaps the sides, and the box is square):
 * the largest power of two that still leaves at least the thumbnail's
 * size, as vips_thumbnail does. 1: no fast path. */
static int jpeg_shrink(const img_args *a, int64_t w, int64_t h) {
  for (size_t i = 0; i < a->nops; i++) {
    const img_op *op = &a->ops[i];
    op_kind k = op->def->kind;
    if (k == OP_AUTOROTATE || k == OP_GRAYSCALE || k == OP_STRIP)
      continue;
    if (k != OP_THUMBNAIL)
      return 1;
    /* crop none fits the long side into the box; a crop fills it with
     * the short side. */
    double side =
        op->crop == 0 ? (double)(w > h ? w : h) : (double)(w < h ? w : h);
    double f = side / (double)op->size;
    int s = 8;
    while (s > 1 && f < s)
      s /= 2;
    return s;
  }
  return 1;
}

/* A picture that a thumbnail shrinks to a fraction: a JPEG's decoder can
 * do most of the shrinking itself, from its DCT blocks, at a fraction of
 * the decode's cost (8x: about a tenth of the time of a 12 MP photo). The
 * input is opened again, the same source rewound, with the factor. *in
 * (the picture as opened, header read) is replaced; 0 or the reply
 * code. */
static int shrink_on_load(img_job *j, const img_args *a, size_t fmt,
                          VipsSourceCustom **src, VipsImage **in) {
  if (loaders[fmt].format != FMT_JPEG)
    return 0;
  int s = jpeg_shrink(a, vips_image_get_width(*in), vips_image_get_height(*in));
  if (s == 1)
    return 0;
  VipsImage *small = NULL;
  g_object_unref(*in);
  *in = NULL;
  if (vips_source_rewind(VIPS_SOURCE(*src)) == 0)
    (void)vips_jpegload_source(VIPS_SOURCE(*src), &small, "shrink", s, "access",
                               a->whole ? VIPS_ACCESS_RANDOM
                                        : VIPS_ACCESS_SEQUENTIAL,
                               "fail_on", VIPS_FAIL_ON_ERROR, NULL);
  if (small == NULL) {
    char why[200];
    if (j->in_err != 0)
      return host->fail(j->c, 500, NULL, "the input could not be read (%s)",
                        nimbus_strerror(j->in_err));
    vips_why(why, sizeof why);
    return host->fail(j->c, 422, "send the picture again, whole",
                      "the picture is corrupt or truncated: %s", why);
  }
  *in = small;
  return 0;
}

/* 413 when a picture of w x h is over the limit; `what` says whose. */
static int check_pixels(wk_ctx *c, int64_t w, int64_t h, const char *what) {
  if (w * h <= lim->max_pixels)
    return 0;
  return host->fail(c, 413, "ask for a smaller picture",
                    "%s %" PRId64 " x %" PRId64 " pixels; this cloud processes "
                    "at most %" PRId64,
                    what, w, h, lim->max_pixels);
}

/* Adds op i to the pipeline: *out a new image from `in` (both references
 * the caller's). 0, or the reply code. */
static int apply_op(wk_ctx *c, size_t i, const img_op *op, VipsImage *in,
                    VipsImage **out) {
  int64_t w = vips_image_get_width(in), h = vips_image_get_height(in);
  char what[64];
  int rc = 0, code;
  snprintf(what, sizeof what, "args.ops[%zu] (%s) would make a picture of", i,
           op->def->name);
  switch (op->def->kind) {
  case OP_BLUR:
    rc = vips_gaussblur(in, out, op->sigma, NULL);
    break;
  case OP_RESIZE: {
    double hs, vs;
    if (op->width != 0 && op->height != 0 && op->fit == 1) {
      hs = (double)op->width / (double)w;
      vs = (double)op->height / (double)h;
    } else if (op->width != 0 && op->height != 0) {
      hs = vs =
          fmin((double)op->width / (double)w, (double)op->height / (double)h);
    } else if (op->width != 0) {
      hs = vs = (double)op->width / (double)w;
    } else {
      hs = vs = (double)op->height / (double)h;
    }
    int64_t ow = llround((double)w * hs), oh = llround((double)h * vs);
    if ((code = check_pixels(c, ow < 1 ? 1 : ow, oh < 1 ? 1 : oh, what)))
      return code;
    rc = vips_resize(in, out, hs, "vscale", vs, NULL);
    break;
  }
  case OP_THUMBNAIL:
    /* Never enlarged (SIZE_DOWN); the orientation is autorotate's. */
    rc = vips_thumbnail_image(in, out, (int)op->size, "height", (int)op->size,
                              "size", VIPS_SIZE_DOWN, "crop",
                              crop_vips[op->crop], "no_rotate", TRUE, NULL);
    break;
  case OP_CROP:
    if (op->left + op->width > w || op->top + op->height > h)
      return host->fail(c, 400, NULL,
                        "args.ops[%zu] crop box %" PRId64 "+%" PRId64
                        " %" PRId64 "x%" PRId64 " is not inside the %" PRId64
                        "x%" PRId64 " picture",
                        i, op->left, op->top, op->width, op->height, w, h);
    rc = vips_extract_area(in, out, (int)op->left, (int)op->top, (int)op->width,
                           (int)op->height, NULL);
    break;
  case OP_ROTATE:
    rc = vips_rot(in, out,
                  op->angle == 90    ? VIPS_ANGLE_D90
                  : op->angle == 180 ? VIPS_ANGLE_D180
                                     : VIPS_ANGLE_D270,
                  NULL);
    break;
  case OP_AUTOROTATE:
    rc = vips_autorot(in, out, NULL);
    break;
  case OP_FLIP:
    rc = vips_flip(in, out,
                   op->direction == 0 ? VIPS_DIRECTION_HORIZONTAL
                                      : VIPS_DIRECTION_VERTICAL,
                   NULL);
    break;
  case OP_SHARPEN:
    /* libvips's defaults are made for print: flat areas (m1 0) are left
     * alone, so a soft picture hardly changes. m1 1 and m2 2 sharpen
     * flat and jagged areas alike, as sharp's sharpen does. */
    rc = vips_sharpen(in, out, "sigma", op->sigma, "m1", 1.0, "m2", 2.0, NULL);
    break;
  case OP_GRAYSCALE:
    rc = vips_colourspace(in, out, VIPS_INTERPRETATION_B_W, NULL);
    break;
  case OP_STRIP:
    /* The saver drops the metadata (strip); the pixels stay. */
    *out = in;
    g_object_ref(in);
    break;
  }
  if (rc != 0) {
    char why[200];
    vips_why(why, sizeof why);
    return host->fail(c, 422, NULL,
                      "args.ops[%zu] (%s) cannot be applied to this picture: "
                      "%s",
                      i, op->def->name, why);
  }
  return check_pixels(c, vips_image_get_width(*out),
                      vips_image_get_height(*out), what);
}

/* The bands of the file the saver writes from an image of `bands`: JPEG
 * drops alpha, WebP is always RGB or RGBA, PNG keeps what it gets (but
 * CMYK, which it turns into RGB). */
static int saved_bands(int format, VipsImage *im) {
  int b = vips_image_get_bands(im);
  bool cmyk = vips_image_get_interpretation(im) == VIPS_INTERPRETATION_CMYK;
  if (format == FMT_JPEG)
    return cmyk ? 4 : (b <= 2 ? 1 : 3);
  if (cmyk)
    return 3;
  if (format == FMT_WEBP)
    return b == 2 || b >= 4 ? 4 : 3;
  return b > 4 ? 4 : b;
}

/* Saves `im` through a custom target into the task's output. */
static int save(img_job *j, VipsImage *im, const img_args *a, int format) {
  VipsTargetCustom *t = vips_target_custom_new();
  if (t == NULL)
    return -1;
  g_signal_connect(t, "write", G_CALLBACK(dst_write), j);
  int q = (int)a->quality, rc;
  if (format == FMT_JPEG)
    rc = vips_jpegsave_target(im, VIPS_TARGET(t), "Q", q, "strip", a->strip,
                              NULL);
  else if (format == FMT_PNG)
    rc = vips_pngsave_target(im, VIPS_TARGET(t), "strip", a->strip, NULL);
  else
    rc = vips_webpsave_target(im, VIPS_TARGET(t), "Q", q, "strip", a->strip,
                              NULL);
  g_signal_handlers_disconnect_by_data(t, j);
  g_object_unref(t);
  return rc;
}

/* The answer to a pipeline that failed while it computed. */
static int compute_failed(img_job *j) {
  wk_ctx *c = j->c;
  int stop = atomic_load(&j->stop);
  char why[200];
  vips_why(why, sizeof why);
  if (stop == NIMBUS_ECANCELED)
    return host->fail(c, 499, NULL, "cancelled by task.cancel");
  if (stop != 0)
    return host->fail(c, 500, NULL, "the task's claim lapsed");
  if (j->in_err != 0)
    return host->fail(c, 500, NULL, "the input could not be read (%s)",
                      nimbus_strerror(j->in_err));
  if (j->out_err == NIMBUS_ETOOBIG)
    return host->fail(c, 413, "ask for a smaller picture or a lower quality",
                      "the output is over %" PRId64 " bytes", lim->max_output);
  if (j->out_err == NIMBUS_ENOSPC)
    return host->fail(c, 503, "try again later", "the cloud's storage is full");
  if (j->out_err != 0)
    return host->fail(c, 500, NULL, "the output could not be stored (%s)",
                      nimbus_strerror(j->out_err));
  return host->fail(c, 422, "send the picture again, whole",
                    "the picture is corrupt or truncated: %s", why);
}

static int h_process_image(wk_ctx *c) {
  img_args args, *a = &args;
  img_job j;
  VipsSourceCustom *src = NULL;
  VipsImage *in = NULL, *cur = NULL;
  size_t fmt = 0;
  memset(&j, 0, sizeof j);
  j.c = c;
  j.size = host->input_size(c);
  atomic_init(&j.stop, 0);
  pthread_mutex_init(&j.mu, NULL);
  int code = parse_args(c, a);
  if (code != 0)
    goto fail;
  code = open_input(&j, a->whole ? VIPS_ACCESS_RANDOM : VIPS_ACCESS_SEQUENTIAL,
                    &src, &in, &fmt);
  if (code != 0)
    goto fail;
  if ((code = check_pixels(c, vips_image_get_width(in),
                           vips_image_get_height(in), "the picture is")) != 0)
    goto fail;
  host->log(0, "IMG-TASK", "%s: %s of %d x %d, %zu ops, %s access",
            host->task_id(c), loaders[fmt].name, vips_image_get_width(in),
            vips_image_get_height(in), a->nops,
            a->whole ? "random" : "sequential");
  if ((code = shrink_on_load(&j, a, fmt, &src, &in)) != 0)
    goto fail;
  cur = in;
  g_object_ref(cur);
  for (size_t i = 0; i < a->nops; i++) {
    VipsImage *next = NULL;
    if ((code = apply_op(c, i, &a->ops[i], cur, &next)) != 0) {
      if (next != NULL)
        g_object_unref(next);
      goto fail;
    }
    g_object_unref(cur);
    cur = next;
  }
  int format = a->format >= 0             ? a->format
               : loaders[fmt].format >= 0 ? loaders[fmt].format
                                          : FMT_JPEG;
  j.in = in;
  j.two_phase = a->whole;
  j.next_us = g_get_monotonic_time() + PROGRESS_FIRST_US;
  vips_image_set_progress(cur, TRUE);
  g_signal_connect(cur, "eval", G_CALLBACK(on_eval), &j);
  if (j.two_phase && cur != in)
    g_signal_connect(in, "eval", G_CALLBACK(on_eval), &j);
  if (save(&j, cur, a, format) != 0) {
    code = compute_failed(&j);
    goto fail;
  }
  msgpack_packer *pk = host->packer(c);
  msgpack_pack_map(pk, 4);
  msgpack_pack_str_with_body(pk, "width", 5);
  msgpack_pack_int64(pk, vips_image_get_width(cur));
  msgpack_pack_str_with_body(pk, "height", 6);
  msgpack_pack_int64(pk, vips_image_get_height(cur));
  msgpack_pack_str_with_body(pk, "bands", 5);
  msgpack_pack_int64(pk, saved_bands(format, cur));
  msgpack_pack_str_with_body(pk, "format", 6);
  msgpack_pack_str_with_body(pk, format_names[format],
                             strlen(format_names[format]));
fail:
  /* Nothing of libvips's may call into this task once it has ended. */
  if (cur != NULL) {
    g_signal_handlers_disconnect_by_data(cur, &j);
    g_object_unref(cur);
  }
  if (in != NULL) {
    g_signal_handlers_disconnect_by_data(in, &j);
    g_object_unref(in);
  }
  if (src != NULL) {
    g_signal_handlers_disconnect_by_data(src, &j);
    g_object_unref(src);
  }
  pthread_mutex_destroy(&j.mu);
  return code;
}

/* ---- The family -----------------------------------------------------------
 */

/* libvips's warnings (a loader's about a damaged input, mostly) are about
 * one task's input: the worker's log at debug level, not its stderr. */
static void on_vips_log(const gchar *domain, GLogLevelFlags level,
                        const gchar *msg, gpointer user) {
  (void)user;
  host->log(level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL) ? 2 : 0,
            "IMG-VIPS", "%s: %s", domain != NULL ? domain : "vips", msg);
}

static int image_init(const wk_host_api *h, char *err, size_t errcap) {
  if (h->abi != WK_FAMILY_ABI) {
    snprintf(err, errcap, "the worker's host table is ABI %d, not %d", h->abi,
             WK_FAMILY_ABI);
    return NIMBUS_ECONFIG;
  }
  host = h;
  lim = h->offload_limits();
  if (VIPS_INIT("nimbus-worker") != 0) {
    snprintf(err, errcap, "libvips did not start: %s", vips_error_buffer());
    return NIMBUS_ECONFIG;
  }
  g_log_set_handler("VIPS", G_LOG_LEVEL_MASK, on_vips_log, NULL);
  vips_block_untrusted_set(TRUE);
  vips_cache_set_max(0);
  vips_cache_set_max_mem((size_t)lim->max_memory);
  vips_concurrency_set(VIPS_THREADS);
  return 0;
}

/* No vips_shutdown: the doc module uses the same libvips of the process,
 * and the worker only finishes its families on its way out. */
static void image_fini(void) {}

static int image_thread_init(void **tstate) {
  *tstate = NULL;
  return 0;
}

/* A pool thread that ran libvips gives back libvips's buffers of it. */
static void image_thread_fini(void *tstate) {
  (void)tstate;
  vips_thread_shutdown();
}

static const wk_handler image_handlers[] = {
    {.type = "process.image", .flags = WK_STATEFUL, .fn = h_process_image},
    {.type = NULL},
};

static const wk_family image_family = {
    .abi = WK_FAMILY_ABI,
    .name = "image",
    .version = version,
    .init = image_init,
    .fini = image_fini,
    .thread_init = image_thread_init,
    .thread_fini = image_thread_fini,
    .handlers = image_handlers,
};

__attribute__((visibility("default"))) const wk_family *nimbus_family_v1(void) {
  if (version[0] == '\0')
    snprintf(version, sizeof version, "%s vips-%s", IMG_VERSION,
             vips_version_string());
  return &image_family;
}
