/* The document offload module (process.doc, schemas/SPEC.md) on the
 * offload machinery (handlers_offload.c): zstd compression, character
 * sets through iconv, Markdown through libcmark, and PDFs through
 * libvips's poppler loader (the first page as a picture, the document's
 * facts). libvips is the image module's library too; this module uses it
 * only for PDFs, and leaves it set up (never vips_shutdown) since the two
 * modules share the one libvips of the process.
 *
 * Ops run in order, each from the bytes the one before made: a stage
 * reads its input as a stream (the task's input through the host, or the
 * temporary file the stage before wrote) and writes the next temporary
 * file, the last one the host's output; so zstd and iconv run in constant
 * memory whatever the size. libcmark and the PDF loader need their whole
 * input (cmark's output is one string; poppler seeks), bounded by the
 * offload input limit. Measuring ops (pdf_info, text_stats) pass their
 * input through unchanged and add what they found to the result. */
#include "wk_family.h"

#include "nimbus/errors.h"
#include "sc.h"

#include <cmark.h>
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vips/vips.h>
#include <zstd.h>

#define OPS_MAX 16
#define CHUNK 65536
#define PROGRESS_MS 250

static const wk_host_api *host;

/* ---- Streams ----------------------------------------------------------- */

typedef struct src {
  wk_ctx *c;
  FILE *f; /* a stage's temporary file, or NULL: the task's input */
  uint64_t pos, size;
} src;

/* Reads up to n bytes; 0 at the end, -1 on an error. */
static ssize_t src_read(src *s, void *buf, size_t n) {
  if (s->f != NULL) {
    size_t k = fread(buf, 1, n, s->f);
    return k > 0 || !ferror(s->f) ? (ssize_t)k : -1;
  }
  size_t got = 0;
  if (s->pos >= s->size)
    return 0;
  if (host->input_read(s->c, s->pos, buf, n, &got) != 0)
    return -1;
  s->pos += got;
  return (ssize_t)got;
}

typedef struct sink {
  wk_ctx *c;
  FILE *f; /* the next stage's input, or NULL: the task's output */
  uint64_t n;
  uint64_t cap; /* with f: the most it may hold, the next stage's input */
  int err;      /* NIMBUS_ETOOBIG, NIMBUS_ENOSPC, NIMBUS_EIO */
} sink;

static int sink_write(sink *k, const void *p, size_t n) {
  if (k->err != 0)
    return k->err;
  if (n == 0)
    return 0;
  if (k->f != NULL) {
    /* What one op makes is the next one's input, within the input limit:
     * a zstd bomb between two ops stops here, not in the worker's memory
     * or its temporary directory. */
    if (n > k->cap - k->n)
      k->err = NIMBUS_ETOOBIG;
    else if (fwrite(p, 1, n, k->f) != n)
      k->err = NIMBUS_EIO;
  } else {
    k->err = host->output_write(k->c, p, n);
  }
  k->n += n;
  return k->err;
}

/* A stage's reply code for a sink error. */
static int sink_fail(sink *k) {
  if (k->err == NIMBUS_ETOOBIG && k->f != NULL)
    return host->fail(k->c, 413, "ask for fewer or other ops",
                      "what an op made is over the cloud's input limit "
                      "(%llu bytes) for the next op",
                      (unsigned long long)k->cap);
  if (k->err == NIMBUS_ETOOBIG)
    return host->fail(k->c, 413, "ask for a smaller output",
                      "the output is over the cloud's limit");
  return host->fail(k->c, k->err == NIMBUS_ENOSPC ? 503 : 500, NULL,
                    "the output could not be stored");
}

/* ---- The job ---------------------------------------------------------------
 */

typedef enum op_kind {
  OP_COMPRESS,
  OP_DECOMPRESS,
  OP_TO_UTF8,
  OP_MARKDOWN,
  OP_PDF_THUMB,
  OP_PDF_INFO,
  OP_TEXT_STATS,
} op_kind;

typedef struct op {
  op_kind kind;
  int64_t level, page, width;
  char from[64];
  char format[8];
} op;

typedef struct job {
  wk_ctx *c;
  op ops[OPS_MAX];
  int n;
  /* What the ops found, for the result. */
  const char *out_format; /* "text", "html", "zstd", "jpeg", ... */
  double ratio;           /* compress: out / in */
  bool has_ratio;
  const char *from;
  int64_t pages;
  char title[256], author[256];
  bool has_info;
  int64_t lines, words, chars;
  const char *encoding;
  bool has_stats;
  int64_t in_done, in_total, last_progress;
} job;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Progress in bytes of the task's input read by the first stage (first),
 * and, in every stage, the cancel checkpoint. 0, or a reply code. */
static int tick(job *j, size_t n, bool first) {
  if (first)
    j->in_done += (int64_t)n;
  int64_t t = now_ms();
  if (t - j->last_progress < PROGRESS_MS)
    return 0;
  j->last_progress = t;
  if (first)
    host->progress(j->c, j->in_done, j->in_total);
  int rc = host->checkpoint(j->c);
  if (rc == NIMBUS_ECANCELED)
    return host->fail(j->c, 499, NULL, "cancelled by task.cancel");
  return rc != 0 ? host->fail(j->c, 500, NULL, "the task's claim lapsed") : 0;
}

static bool str_is(const msgpack_object *o, const char *s) {
  return o != NULL && o->type == MSGPACK_OBJECT_STR &&
         o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static int bad_param(job *j, uint32_t i, const char *err) {
  return host->fail(j->c, 400, NULL, "args.ops[%u].%s", i,
                    strncmp(err, "args.", 5) == 0 ? err + 5 : err);
}

static int parse_ops(job *j) {
  const msgpack_object *ops = NULL;
  char err[256];
  if (sc_arg_array(host->args(j->c), "ops", true, OPS_MAX, &ops, err,
                   sizeof err) != 0)
    return host->fail(j->c, 400, "list 1-16 ops, e.g. [{\"op\": \"compress\"}]",
                      "%s", err);
  if (ops->via.array.size == 0)
    return host->fail(j->c, 400, NULL, "args.ops is empty");
  for (uint32_t i = 0; i < ops->via.array.size; i++) {
    const msgpack_object *o = &ops->via.array.ptr[i];
    op *p = &j->ops[j->n];
    memset(p, 0, sizeof *p);
    if (o->type != MSGPACK_OBJECT_MAP)
      return host->fail(j->c, 400, NULL, "args.ops[%u] is not a map", i);
    const msgpack_object *name = sc_map_get(o, "op");
    if (str_is(name, "compress")) {
      p->kind = OP_COMPRESS;
      p->level = 3;
      if (sc_arg_int(o, "level", false, 1, 19, &p->level, err, sizeof err) ==
          NIMBUS_EINVAL)
        return bad_param(j, i, err);
    } else if (str_is(name, "decompress")) {
      p->kind = OP_DECOMPRESS;
    } else if (str_is(name, "to_utf8")) {
      p->kind = OP_TO_UTF8;
      const char *s = NULL;
      size_t n = 0;
      if (sc_arg_str(o, "from", true, 1, sizeof p->from - 1, &s, &n, err,
                     sizeof err) != 0)
        return bad_param(j, i, err);
      memcpy(p->from, s, n);
      p->from[n] = '\0';
      iconv_t cd = iconv_open("UTF-8", p->from);
      if (cd == (iconv_t)-1)
        return host->fail(j->c, 415,
                          "name a character set iconv knows, "
                          "e.g. latin1, windows-1252, utf-16",
                          "args.ops[%u].from \"%s\" is not a character set "
                          "this cloud converts",
                          i, p->from);
      iconv_close(cd);
    } else if (str_is(name, "markdown_to_html")) {
      p->kind = OP_MARKDOWN;
    } else if (str_is(name, "pdf_thumbnail")) {
      p->kind = OP_PDF_THUMB;
      p->page = 1;
      p->width = 256;
      memcpy(p->format, "jpeg", 5);
      const char *s = NULL;
      size_t n = 0;
      if (sc_arg_int(o, "page", false, 1, 100000, &p->page, err, sizeof err) ==
              NIMBUS_EINVAL ||
          sc_arg_int(o, "width", false, 16, 4096, &p->width, err, sizeof err) ==
              NIMBUS_EINVAL)
        return bad_param(j, i, err);
      int rc = sc_arg_str(o, "format", false, 1, 4, &s, &n, err, sizeof err);
      if (rc == NIMBUS_EINVAL)
        return bad_param(j, i, err);
      if (rc == 0) {
        if (!((n == 4 && memcmp(s, "jpeg", 4) == 0) ||
              (n == 3 && memcmp(s, "png", 3) == 0) ||
              (n == 4 && memcmp(s, "webp", 4) == 0)))
          return host->fail(j->c, 415, NULL,
                            "args.ops[%u].format must be jpeg, png or webp", i);
        memcpy(p->format, s, n);
        p->format[n] = '\0';
      }
    } else if (str_is(name, "pdf_info")) {
      p->kind = OP_PDF_INFO;
    } else if (str_is(name, "text_stats")) {
      p->kind = OP_TEXT_STATS;
    } else {
      return host->fail(j->c, 400,
                        "ops: compress, decompress, to_utf8, markdown_to_html, "
                        "pdf_thumbnail, pdf_info, text_stats",
                        "args.ops[%u].op is not an op of process.doc", i);
    }
    j->n++;
  }
  return 0;
}

/* ---- Stages
 * ------------------------------------------------------------------ */

static int st_compress(job *j, const op *p, src *in, sink *out, bool first) {
  ZSTD_CCtx *z = ZSTD_createCCtx();
  uint8_t *ib = malloc(CHUNK), *ob = malloc(ZSTD_CStreamOutSize());
  int code = 0;
  if (z == NULL || ib == NULL || ob == NULL) {
    code = host->fail(j->c, 500, NULL, "the worker is out of memory");
    goto out;
  }
  ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, (int)p->level);
  ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
  uint64_t total_in = 0;
  for (;;) {
    ssize_t got = src_read(in, ib, CHUNK);
    if (got < 0) {
      code = host->fail(j->c, 500, NULL, "the input could not be read");
      goto out;
    }
    total_in += (uint64_t)got;
    ZSTD_EndDirective mode = got == 0 ? ZSTD_e_end : ZSTD_e_continue;
    ZSTD_inBuffer zi = {ib, (size_t)got, 0};
    size_t left;
    do {
      ZSTD_outBuffer zo = {ob, ZSTD_CStreamOutSize(), 0};
      left = ZSTD_compressStream2(z, &zo, &zi, mode);
      if (ZSTD_isError(left)) {
        code = host->fail(j->c, 500, NULL, "zstd: %s", ZSTD_getErrorName(left));
        goto out;
      }
      if (sink_write(out, ob, zo.pos) != 0) {
        code = sink_fail(out);
        goto out;
      }
    } while (mode == ZSTD_e_end ? left != 0 : zi.pos < zi.size);
    if ((code = tick(j, (size_t)got, first)) != 0)
      goto out;
    if (got == 0)
      break;
  }
  j->out_format = "zstd";
  j->ratio = total_in > 0 ? (double)out->n / (double)total_in : 1.0;
  j->has_ratio = true;
out:
  ZSTD_freeCCtx(z);
  free(ib);
  free(ob);
  return code;
}

static int st_decompress(job *j, src *in, sink *out, bool first) {
  ZSTD_DCtx *z = ZSTD_createDCtx();
  size_t isz = ZSTD_DStreamInSize(), osz = ZSTD_DStreamOutSize();
  uint8_t *ib = malloc(isz), *ob = malloc(osz);
  int code = 0;
  size_t last = 1; /* 0 once a frame ended and nothing follows it */
  bool any = false;
  if (z == NULL || ib == NULL || ob == NULL) {
    code = host->fail(j->c, 500, NULL, "the worker is out of memory");
    goto out;
  }
  for (;;) {
    ssize_t got = src_read(in, ib, isz);
    if (got < 0) {
      code = host->fail(j->c, 500, NULL, "the input could not be read");
      goto out;
    }
    if (got == 0)
      break;
    any = true;
    ZSTD_inBuffer zi = {ib, (size_t)got, 0};
    while (zi.pos < zi.size) {
      ZSTD_outBuffer zo = {ob, osz, 0};
      last = ZSTD_decompressStream(z, &zo, &zi);
      if (ZSTD_isError(last)) {
        code =
            host->fail(j->c, 422, NULL, "the input is not valid zstd data: %s",
                       ZSTD_getErrorName(last));
        goto out;
      }
      if (sink_write(out, ob, zo.pos) != 0) {
        code = sink_fail(out);
        goto out;
      }
    }
    if ((code = tick(j, (size_t)got, first)) != 0)
      goto out;
  }
  /* Flush what the last input left in the decoder. */
  for (;;) {
    ZSTD_inBuffer zi = {ib, 0, 0};
    ZSTD_outBuffer zo = {ob, osz, 0};
    size_t r = ZSTD_decompressStream(z, &zo, &zi);
    if (ZSTD_isError(r) || zo.pos == 0)
      break;
    if (sink_write(out, ob, zo.pos) != 0) {
      code = sink_fail(out);
      goto out;
    }
  }
  if (!any || last != 0)
    code = host->fail(j->c, 422, NULL,
                      "the input is not valid zstd data: it ends inside a "
                      "frame");
  j->out_format = "binary";
out:
  ZSTD_freeDCtx(z);
  free(ib);
  free(ob);
  return code;
}

static int st_to_utf8(job *j, const op *p, src *in, sink *out, bool first) {
  iconv_t cd = iconv_open("UTF-8", p->from);
  char *ib = malloc(CHUNK + 8), *ob = malloc(4 * CHUNK + 64);
  int code = 0;
  size_t carry = 0;
  uint64_t offset = 0; /* of ib[0] in the input */
  if (cd == (iconv_t)-1 || ib == NULL || ob == NULL) {
    code = host->fail(j->c, 500, NULL, "the converter cannot start");
    goto out;
  }
  for (;;) {
    ssize_t got = src_read(in, ib + carry, CHUNK);
    if (got < 0) {
      code = host->fail(j->c, 500, NULL, "the input could not be read");
      goto out;
    }
    size_t avail = carry + (size_t)got;
    char *ip = ib;
    size_t il = avail;
    while (il > 0) {
      char *op_ = ob;
      size_t ol = 4 * CHUNK + 64;
      size_t r = iconv(cd, &ip, &il, &op_, &ol);
      if (sink_write(out, ob, (size_t)(op_ - ob)) != 0) {
        code = sink_fail(out);
        goto out;
      }
      if (r != (size_t)-1 || errno == E2BIG)
        continue;
      if (errno == EINVAL && got > 0)
        break; /* a sequence cut by the chunk: carry it over */
      code = host->fail(j->c, 422, "name the character set the text is in",
                        "the input holds bytes that are not valid %s at "
                        "offset %llu",
                        p->from,
                        (unsigned long long)(offset + (uint64_t)(ip - ib)));
      goto out;
    }
    offset += (uint64_t)(ip - ib);
    carry = il;
    memmove(ib, ip, carry);
    if ((code = tick(j, (size_t)got, first)) != 0)
      goto out;
    if (got == 0)
      break;
  }
  j->out_format = "text";
  j->from = p->from;
out:
  if (cd != (iconv_t)-1)
    iconv_close(cd);
  free(ib);
  free(ob);
  return code;
}

/* Reads the whole of `in` into memory (NUL-terminated). */
static int slurp(job *j, src *in, bool first, char **buf, size_t *len) {
  size_t cap = CHUNK, n = 0;
  char *b = malloc(cap + 1);
  if (b == NULL)
    return host->fail(j->c, 500, NULL, "the worker is out of memory");
  for (;;) {
    if (cap - n < CHUNK) {
      char *nb = realloc(b, cap * 2 + 1);
      if (nb == NULL) {
        free(b);
        return host->fail(j->c, 500, NULL, "the worker is out of memory");
      }
      b = nb;
      cap *= 2;
    }
    ssize_t got = src_read(in, b + n, CHUNK);
    if (got < 0) {
      free(b);
      return host->fail(j->c, 500, NULL, "the input could not be read");
    }
    n += (size_t)got;
    int code = tick(j, (size_t)got, first);
    if (code != 0) {
      free(b);
      return code;
    }
    if (got == 0)
      break;
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return 0;
}

static int st_markdown(job *j, src *in, sink *out, bool first) {
  char *md = NULL;
  size_t n = 0;
  int code = slurp(j, in, first, &md, &n);
  if (code != 0)
    return code;
  /* Safe: raw HTML and dangerous links are left out (cmark's default
   * since 0.29: CMARK_OPT_UNSAFE is not given); invalid UTF-8 replaced. */
  char *html = cmark_markdown_to_html(
      md, n, CMARK_OPT_DEFAULT | CMARK_OPT_VALIDATE_UTF8);
  free(md);
  if (html == NULL)
    return host->fail(j->c, 500, NULL, "the worker is out of memory");
  if (sink_write(out, html, strlen(html)) != 0)
    code = sink_fail(out);
  free(html);
  j->out_format = "html";
  return code;
}

/* Opens the PDF in buf for vips, after checking its page count. */
static int pdf_open(job *j, const char *buf, size_t n, int page,
                    VipsImage **img, int64_t *pages) {
  VipsImage *x = NULL;
  /* Again at every load: the image module, loaded after this one, blocks
   * every untrusted loader when it starts (it names the loaders it takes
   * itself, so this does not open PDFs to it). */
  vips_operation_block_set("VipsForeignLoadPdf", FALSE);
  if (vips_pdfload_buffer((void *)buf, n, &x, "page", page - 1, NULL) != 0) {
    vips_error_clear();
    return host->fail(j->c, 422, "send a PDF",
                      "the input is not a PDF poppler can read, or it has no "
                      "page %d",
                      page);
  }
  int np = 1;
  if (vips_image_get_typeof(x, "n-pages"))
    (void)vips_image_get_int(x, "n-pages", &np);
  *pages = np;
  *img = x;
  return 0;
}

static int st_pdf(job *j, const op *p, src *in, sink *out, bool first) {
  char *pdf = NULL;
  size_t n = 0;
  int code = slurp(j, in, first, &pdf, &n);
  if (code != 0)
    return code;
  VipsImage *img = NULL, *thumb = NULL;
  int64_t pages = 0;
  if ((code = pdf_open(j, pdf, n, p->kind == OP_PDF_THUMB ? (int)p->page : 1,
                       &img, &pages)) != 0)
    goto out;
  const wk_offload_limits *lim = host->offload_limits();
  if (p->kind == OP_PDF_INFO) {
    const char *s = NULL;
    j->pages = pages;
    j->title[0] = j->author[0] = '\0';
    if (vips_image_get_typeof(img, "pdf-title") &&
        vips_image_get_string(img, "pdf-title", &s) == 0)
      snprintf(j->title, sizeof j->title, "%s", s);
    if (vips_image_get_typeof(img, "pdf-author") &&
        vips_image_get_string(img, "pdf-author", &s) == 0)
      snprintf(j->author, sizeof j->author, "%s", s);
    j->has_info = true;
    j->out_format = "pdf";
    if (sink_write(out, pdf, n) != 0)
      code = sink_fail(out);
    goto out;
  }
  /* Render at the scale that gives `width` directly, within the pixel
   * limit (a page 1 m wide must not be rendered at 72 dpi first). */
  double scale = (double)p->width / vips_image_get_width(img);
  double h = vips_image_get_height(img) * scale;
  if ((double)p->width * h > (double)lim->max_pixels) {
    code = host->fail(j->c, 413, "ask for a narrower thumbnail",
                      "a page %lld pixels wide would be %.0f high: over "
                      "max_pixels",
                      (long long)p->width, h);
    goto out;
  }
  g_object_unref(img);
  img = NULL;
  bool ok = vips_pdfload_buffer(pdf, n, &img, "page", (int)p->page - 1, "scale",
                                scale, NULL) == 0;
  /* Pages are drawn on a transparent ground: flatten onto white. */
  if (ok && vips_image_hasalpha(img)) {
    double white[] = {255.0};
    VipsArrayDouble *bg = vips_array_double_new(white, 1);
    ok = vips_flatten(img, &thumb, "background", bg, NULL) == 0;
    vips_area_unref(VIPS_AREA(bg));
  } else if (ok) {
    thumb = img;
    g_object_ref(thumb);
  }
  if (!ok) {
    vips_error_clear();
    code = host->fail(j->c, 422, NULL, "the page could not be rendered");
    goto out;
  }
  void *obuf = NULL;
  size_t olen = 0;
  int rc = strcmp(p->format, "png") == 0
               ? vips_pngsave_buffer(thumb, &obuf, &olen, NULL)
           : strcmp(p->format, "webp") == 0
               ? vips_webpsave_buffer(thumb, &obuf, &olen, NULL)
               : vips_jpegsave_buffer(thumb, &obuf, &olen, "Q", 85, NULL);
  if (rc != 0) {
    vips_error_clear();
    code = host->fail(j->c, 500, NULL, "the thumbnail could not be encoded");
    goto out;
  }
  if (sink_write(out, obuf, olen) != 0)
    code = sink_fail(out);
  g_free(obuf);
  j->out_format = strcmp(p->format, "jpeg") == 0  ? "jpeg"
                  : strcmp(p->format, "png") == 0 ? "png"
                                                  : "webp";
  j->pages = pages;
out:
  if (thumb != NULL)
    g_object_unref(thumb);
  if (img != NULL)
    g_object_unref(img);
  free(pdf);
  return code;
}

/* Counts lines, words and characters and guesses the encoding, passing
 * the bytes through. */
static int st_text_stats(job *j, src *in, sink *out, bool first) {
  uint8_t *b = malloc(CHUNK);
  if (b == NULL)
    return host->fail(j->c, 500, NULL, "the worker is out of memory");
  int64_t lines = 0, words = 0, chars = 0;
  bool in_word = false, ascii = true, utf8 = true, binary = false, ended = true;
  int need = 0; /* continuation bytes a UTF-8 sequence still needs */
  int code = 0;
  for (;;) {
    ssize_t got = src_read(in, b, CHUNK);
    if (got < 0) {
      code = host->fail(j->c, 500, NULL, "the input could not be read");
      break;
    }
    for (ssize_t i = 0; i < got; i++) {
      uint8_t c = b[i];
      if (c == 0)
        binary = true;
      if (c >= 0x80)
        ascii = false;
      if (need > 0) {
        if ((c & 0xC0) != 0x80)
          utf8 = false;
        need--;
        continue;
      }
      if (c >= 0xF0 && c < 0xF8)
        need = 3;
      else if (c >= 0xE0)
        need = 2;
      else if (c >= 0xC2)
        need = 1;
      else if (c >= 0x80)
        utf8 = false;
      chars++;
      bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r' ||
                   c == '\f' || c == '\v';
      if (c == '\n')
        lines++;
      if (!space && !in_word)
        words++;
      in_word = !space;
    }
    if (got > 0)
      ended = b[got - 1] == '\n';
    if (sink_write(out, b, (size_t)got) != 0) {
      code = sink_fail(out);
      break;
    }
    if ((code = tick(j, (size_t)got, first)) != 0)
      break;
    if (got == 0)
      break;
  }
  free(b);
  if (!ended)
    lines++; /* a last line without its newline is a line too */
  j->lines = lines;
  j->words = words;
  j->chars = chars;
  j->encoding = binary              ? "binary"
                : ascii             ? "ascii"
                : utf8 && need == 0 ? "utf-8"
                                    : "unknown 8-bit";
  j->has_stats = true;
  if (!binary && strcmp(j->out_format, "binary") == 0)
    j->out_format = "text";
  return code;
}

/* ---- The handler -----------------------------------------------------------
 */

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  msgpack_pack_str_with_body(pk, k, strlen(k));
  msgpack_pack_str_with_body(pk, v, strlen(v));
}

static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
  msgpack_pack_str_with_body(pk, k, strlen(k));
  msgpack_pack_int64(pk, v);
}

static void pack_results(job *j) {
  msgpack_packer *pk = host->packer(j->c);
  size_t n = 1 + (j->has_ratio ? 1 : 0) + (j->from != NULL ? 1 : 0) +
             (j->pages > 0 ? 1 : 0) + (j->has_info ? 2 : 0) +
             (j->has_stats ? 4 : 0);
  msgpack_pack_map(pk, n);
  pack_kv_str(pk, "format", j->out_format);
  if (j->has_ratio) {
    msgpack_pack_str_with_body(pk, "ratio", 5);
    msgpack_pack_double(pk, j->ratio);
  }
  if (j->from != NULL)
    pack_kv_str(pk, "from", j->from);
  if (j->pages > 0)
    pack_kv_int(pk, "pages", j->pages);
  if (j->has_info) {
    pack_kv_str(pk, "title", j->title);
    pack_kv_str(pk, "author", j->author);
  }
  if (j->has_stats) {
    pack_kv_int(pk, "lines", j->lines);
    pack_kv_int(pk, "words", j->words);
    pack_kv_int(pk, "characters", j->chars);
    pack_kv_str(pk, "encoding", j->encoding);
  }
}

static int h_doc(wk_ctx *c) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL)
    return host->fail(c, 500, NULL, "the worker is out of memory");
  j->c = c;
  j->out_format = "binary";
  j->in_total = (int64_t)host->input_size(c);
  int code = parse_ops(j);
  FILE *prev = NULL;
  for (int i = 0; code == 0 && i < j->n; i++) {
    src in = {.c = c, .f = prev, .size = host->input_size(c)};
    sink out = {.c = c, .cap = (uint64_t)host->offload_limits()->max_input};
    bool last = i == j->n - 1;
    if (!last && (out.f = tmpfile()) == NULL) {
      code = host->fail(c, 500, NULL,
                        "the worker cannot make a temporary "
                        "file");
      break;
    }
    const op *p = &j->ops[i];
    bool first = i == 0;
    switch (p->kind) {
    case OP_COMPRESS:
      code = st_compress(j, p, &in, &out, first);
      break;
    case OP_DECOMPRESS:
      code = st_decompress(j, &in, &out, first);
      break;
    case OP_TO_UTF8:
      code = st_to_utf8(j, p, &in, &out, first);
      break;
    case OP_MARKDOWN:
      code = st_markdown(j, &in, &out, first);
      break;
    case OP_PDF_THUMB:
    case OP_PDF_INFO:
      code = st_pdf(j, p, &in, &out, first);
      break;
    case OP_TEXT_STATS:
      code = st_text_stats(j, &in, &out, first);
      break;
    }
    if (prev != NULL)
      fclose(prev);
    prev = out.f;
    if (prev != NULL && code == 0 &&
        (fflush(prev) != 0 || fseek(prev, 0, SEEK_SET) != 0))
      code = host->fail(c, 500, NULL, "a temporary file failed");
  }
  if (prev != NULL)
    fclose(prev);
  if (code == 0)
    pack_results(j);
  free(j);
  return code;
}

/* ---- The family ---------------------------------------------------------- */

static char version[128];

static int doc_init(const wk_host_api *h, char *err, size_t errcap) {
  if (h->abi != WK_FAMILY_ABI) {
    snprintf(err, errcap, "the host has ABI %d", h->abi);
    return NIMBUS_ECONFIG;
  }
  host = h;
  if (VIPS_INIT("nimbus-doc") != 0) {
    snprintf(err, errcap, "libvips did not start: %s", vips_error_buffer());
    vips_error_clear();
    return NIMBUS_ECONFIG;
  }
  /* Terminal input: no loader libvips marks untrusted, but for the one
   * this module exists to run. Debian's libvips marks poppler's PDF loader
   * untrusted too; PDFs are what process.doc takes, so that loader alone
   * is allowed again (and the image module names the loaders it accepts
   * itself, so a PDF never reaches process.image through this). */
  vips_block_untrusted_set(TRUE);
  vips_operation_block_set("VipsForeignLoadPdf", FALSE);
  vips_cache_set_max_mem((size_t)h->offload_limits()->max_memory);
  return 0;
}

static const wk_handler doc_handlers[] = {
    {.type = "process.doc",
     .flags = WK_STATEFUL,
     .pool = "offload",
     .fn = h_doc},
    {.type = NULL},
};

static wk_family doc_family = {
    .abi = WK_FAMILY_ABI,
    .name = "doc",
    .init = doc_init,
    .handlers = doc_handlers,
};

__attribute__((visibility("default"))) const wk_family *nimbus_family_v1(void) {
  snprintf(version, sizeof version, "1 zstd-%s cmark-%s vips-%s",
           ZSTD_versionString(), cmark_version_string(), vips_version_string());
  doc_family.version = version;
  return &doc_family;
}
