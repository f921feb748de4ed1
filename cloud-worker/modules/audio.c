/* The audio offload module (process.audio, schemas/SPEC.md): sound
 * decoded and encoded by libsndfile, resampled by libsamplerate, on the
 * offload machinery (handlers_offload.c), which hands it the input, takes
 * its output and does the caching, results and limits common to every
 * process.* type. Only this module includes sndfile.
 *
 * The work streams in blocks of BLOCK frames of float samples through a
 * chain of stages, one per op, so memory stays flat whatever the
 * duration. Two ops need to know something of the whole sound before the
 * first block is written: normalize (the peak where it stands) and a fade
 * out (where the end is). For them the chain runs twice: once to measure
 * (normalize as unity, the frame count at every stage counted), then for
 * real. One measuring pass is enough for the gains because every op is
 * linear in the samples: scaling the input scales everything after it, so
 * the gain of each normalize follows from the raw peak at its place and
 * the gains of the normalizes before it. A fade out before a normalize is
 * the exception: it cannot be applied until the first pass has counted
 * the frames, so a second measuring pass, with the fade, takes the peaks
 * (three passes in all).
 *
 * The input is read through libsndfile's virtual I/O over the host's
 * input_read (random access, as some containers need). The output is
 * written to an unlinked temporary file, since libsndfile seeks back to
 * finish a header, then streamed into the host's output. */
#include "wk_family.h"

#include "nimbus/errors.h"
#include "sc.h"

#include <math.h>
#include <samplerate.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 65536 /* frames per block */
#define OPS_MAX 32
#define CHANNELS_MAX 64
#define PROGRESS_MS 250

static const wk_host_api *host;

/* ---- Input through the host ------------------------------------------------
 */

typedef struct vin {
  wk_ctx *c;
  sf_count_t pos, size;
  int err;
} vin;

static sf_count_t vin_len(void *u) { return ((vin *)u)->size; }

static sf_count_t vin_seek(sf_count_t off, int whence, void *u) {
  vin *v = u;
  sf_count_t to = whence == SEEK_SET   ? off
                  : whence == SEEK_CUR ? v->pos + off
                                       : v->size + off;
  if (to < 0)
    return -1;
  v->pos = to;
  return to;
}

static sf_count_t vin_read(void *ptr, sf_count_t n, void *u) {
  vin *v = u;
  size_t got = 0;
  if (n <= 0 || v->pos >= v->size)
    return 0;
  if (host->input_read(v->c, (uint64_t)v->pos, ptr, (size_t)n, &got) != 0) {
    v->err = NIMBUS_EIO;
    return 0;
  }
  v->pos += (sf_count_t)got;
  return (sf_count_t)got;
}

static sf_count_t vin_write(const void *p, sf_count_t n, void *u) {
  (void)p, (void)n, (void)u;
  return 0;
}

static sf_count_t vin_tell(void *u) { return ((vin *)u)->pos; }

/* ---- Ops ----------------------------------------------------------------- */

typedef enum op_kind {
  OP_NORMALIZE,
  OP_GAIN,
  OP_TRIM,
  OP_FADE,
  OP_MONO,
  OP_RESAMPLE,
  OP_LOUDNESS,
} op_kind;

typedef struct stage {
  op_kind kind;
  double a, b; /* normalize: target dBFS; gain: dB; trim: start, end ms;
                  fade: in, out ms; resample: rate */
  int quality; /* resample: SRC_* */
  int ch_in, ch_out;
  double rate_in, rate_out;
  /* Per pass: */
  int64_t pos;     /* frames that entered this stage */
  int64_t total;   /* frames that enter it in all (measured) */
  double scale;    /* normalize's gain (linear) */
  double raw_peak; /* measured: the peak entering a normalize */
  double peak[CHANNELS_MAX], sumsq[CHANNELS_MAX]; /* loudness */
  SRC_STATE *src;
  float *buf; /* the stage's output block */
  size_t cap; /* frames */
} stage;

typedef struct job {
  wk_ctx *c;
  stage st[OPS_MAX];
  int n;
  int fmt_out;
  double quality; /* -1: libsndfile's default */
  bool measure;   /* this pass only measures */
  bool totals;    /* every stage's total is known (fades out apply) */
  double out_peak;
  int64_t out_frames;
  /* The input's frames as its header gives them (-1: it does not say);
   * how many fewer a decoder may give (MP3's count can be an estimate);
   * the most a pass reads before 413 (max_duration at the input's
   * rate). */
  int64_t in_frames, in_slack, in_max;
  int64_t max_duration_ms;
  int64_t progress_done, progress_total, last_progress_ms;
} job;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double db_of(double lin) {
  return lin > 0 ? 20.0 * log10(lin) : -INFINITY;
}

/* A number for a result: -inf as the lowest dBFS a float can say. */
static double finite_db(double db) { return isfinite(db) ? db : -1000.0; }

static bool str_is(const msgpack_object *o, const char *s) {
  return o != NULL && o->type == MSGPACK_OBJECT_STR &&
         o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Reads ops into j; a reply code after fail() on a bad one. */
static int parse_ops(job *j, const msgpack_object *args) {
  const msgpack_object *ops = NULL;
  char err[256];
  if (sc_arg_array(args, "ops", true, OPS_MAX, &ops, err, sizeof err) != 0)
    return host->fail(j->c, 400, "list 1-32 ops, e.g. [{\"op\": \"mono\"}]",
                      "%s", err);
  if (ops->via.array.size == 0)
    return host->fail(j->c, 400, NULL, "args.ops is empty");
  for (uint32_t i = 0; i < ops->via.array.size; i++) {
    const msgpack_object *o = &ops->via.array.ptr[i];
    stage *s = &j->st[j->n];
    memset(s, 0, sizeof *s);
    if (o->type != MSGPACK_OBJECT_MAP)
      return host->fail(j->c, 400, NULL, "args.ops[%u] is not a map", i);
    const msgpack_object *name = sc_map_get(o, "op");
    int rc = 0;
    char pfx[32];
    snprintf(pfx, sizeof pfx, "ops[%u]", i);
#define NUM(key, req, lo, hi, out)                                             \
  (rc = sc_arg_num(o, key, req, lo, hi, out, err, sizeof err),                 \
   rc == NIMBUS_EINVAL)
    if (str_is(name, "normalize")) {
      s->kind = OP_NORMALIZE;
      s->a = -1;
      if (NUM("peak", false, -60, 0, &s->a))
        goto bad;
    } else if (str_is(name, "gain")) {
      s->kind = OP_GAIN;
      if (NUM("db", true, -60, 60, &s->a))
        goto bad;
    } else if (str_is(name, "trim")) {
      s->kind = OP_TRIM;
      s->b = INFINITY;
      if (NUM("start", false, 0, 1e12, &s->a) ||
          NUM("end", false, 0, 1e12, &s->b))
        goto bad;
      if (s->b <= s->a)
        return host->fail(j->c, 400, NULL,
                          "args.ops[%u]: end must be after start", i);
    } else if (str_is(name, "fade")) {
      s->kind = OP_FADE;
      if (NUM("in", false, 0, 1e12, &s->a) || NUM("out", false, 0, 1e12, &s->b))
        goto bad;
      if (s->a == 0 && s->b == 0)
        return host->fail(j->c, 400, NULL,
                          "args.ops[%u]: fade needs in or out (ms)", i);
    } else if (str_is(name, "mono")) {
      s->kind = OP_MONO;
    } else if (str_is(name, "resample")) {
      s->kind = OP_RESAMPLE;
      s->quality = SRC_SINC_BEST_QUALITY;
      if (NUM("rate", true, 8000, 192000, &s->a))
        goto bad;
      const msgpack_object *q = sc_map_get(o, "quality");
      if (q != NULL) {
        if (str_is(q, "best"))
          s->quality = SRC_SINC_BEST_QUALITY;
        else if (str_is(q, "medium"))
          s->quality = SRC_SINC_MEDIUM_QUALITY;
        else if (str_is(q, "fast"))
          s->quality = SRC_SINC_FASTEST;
        else
          return host->fail(j->c, 400, NULL,
                            "args.ops[%u].quality must be best, medium or "
                            "fast",
                            i);
      }
    } else if (str_is(name, "loudness")) {
      s->kind = OP_LOUDNESS;
    } else {
      return host->fail(j->c, 400,
                        "ops: normalize, gain, trim, fade, mono, resample, "
                        "loudness",
                        "args.ops[%u].op %s%.*s%s is not an op of "
                        "process.audio",
                        i, name != NULL ? "\"" : "(missing)",
                        name != NULL && name->type == MSGPACK_OBJECT_STR
                            ? (int)name->via.str.size
                            : 0,
                        name != NULL && name->type == MSGPACK_OBJECT_STR
                            ? name->via.str.ptr
                            : "",
                        name != NULL ? "\"" : "");
    }
    j->n++;
    continue;
  bad:
    /* err says "args.<key> ...": the op's keys are under ops[i]. */
    return host->fail(j->c, 400, NULL, "args.%s.%s", pfx,
                      strncmp(err, "args.", 5) == 0 ? err + 5 : err);
#undef NUM
  }
  return 0;
}

typedef struct fmt_name {
  const char *name;
  int format;
} fmt_name;

static const fmt_name formats[] = {
    {"wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16},
    {"flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16},
    {"ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS},
    {"opus", SF_FORMAT_OGG | SF_FORMAT_OPUS},
    {"mp3", SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III},
};

static const char *format_name(int f) {
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
    if (formats[i].format == f)
      return formats[i].name;
  return "?";
}

/* The output format the input's container suggests. */
static int default_format(const SF_INFO *in) {
  switch (in->format & SF_FORMAT_TYPEMASK) {
  case SF_FORMAT_FLAC:
    return SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  case SF_FORMAT_OGG:
    return (in->format & SF_FORMAT_SUBMASK) == SF_FORMAT_OPUS
               ? SF_FORMAT_OGG | SF_FORMAT_OPUS
               : SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  case SF_FORMAT_MPEG:
    return SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
  default:
    return SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  }
}

/* ---- The chain ----------------------------------------------------------- */

static int ensure(stage *s, size_t frames, int ch) {
  if (s->cap >= frames)
    return 0;
  float *b = realloc(s->buf, frames * (size_t)ch * sizeof *b);
  if (b == NULL)
    return NIMBUS_ENOMEM;
  s->buf = b;
  s->cap = frames;
  return 0;
}

static void measure_levels(double *peak, double *sumsq, const float *p,
                           size_t n, int ch) {
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < ch; k++) {
      double v = fabs((double)p[i * (size_t)ch + (size_t)k]);
      if (v > peak[k])
        peak[k] = v;
      sumsq[k] += v * v;
    }
}

/* Runs one block through stage s: in (n frames of s->ch_in channels) to
 * *out, *outn frames of s->ch_out. `last`: the input has ended (a
 * resampler flushes). May pass `in` through as *out. */
static int stage_run(job *j, stage *s, const float *in, size_t n, bool last,
                     const float **out, size_t *outn) {
  int ch = s->ch_in;
  int64_t pos = s->pos;
  s->pos += (int64_t)n;
  switch (s->kind) {
  case OP_NORMALIZE:
  case OP_GAIN: {
    double g = s->kind == OP_GAIN ? pow(10.0, s->a / 20.0) : s->scale;
    if (s->kind == OP_NORMALIZE && j->measure) {
      for (size_t i = 0; i < n * (size_t)ch; i++)
        if (fabs((double)in[i]) > s->raw_peak)
          s->raw_peak = fabs((double)in[i]);
      g = 1.0;
    }
    if (ensure(s, n, ch) != 0)
      return NIMBUS_ENOMEM;
    for (size_t i = 0; i < n * (size_t)ch; i++)
      s->buf[i] = (float)(in[i] * g);
    *out = s->buf;
    *outn = n;
    return 0;
  }
  case OP_TRIM: {
    int64_t a = (int64_t)llround(s->a * s->rate_in / 1000.0);
    int64_t b = isfinite(s->b) ? (int64_t)llround(s->b * s->rate_in / 1000.0)
                               : INT64_MAX;
    int64_t lo = pos > a ? pos : a,
            hi = pos + (int64_t)n < b ? pos + (int64_t)n : b;
    if (hi <= lo) {
      *out = in;
      *outn = 0;
      return 0;
    }
    *out = in + (size_t)(lo - pos) * (size_t)ch;
    *outn = (size_t)(hi - lo);
    return 0;
  }
  case OP_FADE: {
    if (ensure(s, n, ch) != 0)
      return NIMBUS_ENOMEM;
    double fin = s->a * s->rate_in / 1000.0, fout = s->b * s->rate_in / 1000.0;
    for (size_t i = 0; i < n; i++) {
      double t = (double)(pos + (int64_t)i), g = 1.0;
      if (fin > 0 && t < fin)
        g *= t / fin;
      double left = (double)s->total - t;
      if (fout > 0 && left < fout && j->totals)
        g *= left > 0 ? left / fout : 0;
      for (int k = 0; k < ch; k++)
        s->buf[i * (size_t)ch + (size_t)k] =
            (float)(in[i * (size_t)ch + (size_t)k] * g);
    }
    *out = s->buf;
    *outn = n;
    return 0;
  }
  case OP_MONO: {
    if (ensure(s, n, 1) != 0)
      return NIMBUS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
      double sum = 0;
      for (int k = 0; k < ch; k++)
        sum += in[i * (size_t)ch + (size_t)k];
      s->buf[i] = (float)(sum / ch);
    }
    *out = s->buf;
    *outn = n;
    return 0;
  }
  case OP_RESAMPLE: {
    double ratio = s->rate_out / s->rate_in;
    size_t want = (size_t)((double)n * ratio) + 64;
    if (ensure(s, want, ch) != 0)
      return NIMBUS_ENOMEM;
    SRC_DATA d = {.data_in = in,
                  .data_out = s->buf,
                  .input_frames = (long)n,
                  .output_frames = (long)s->cap,
                  .end_of_input = last,
                  .src_ratio = ratio};
    size_t total_out = 0;
    for (;;) {
      d.data_out = s->buf + total_out * (size_t)ch;
      d.output_frames = (long)(s->cap - total_out);
      if (src_process(s->src, &d) != 0)
        return NIMBUS_EIO;
      total_out += (size_t)d.output_frames_gen;
      d.data_in += (size_t)d.input_frames_used * (size_t)ch;
      d.input_frames -= d.input_frames_used;
      if (d.input_frames == 0 && (!last || d.output_frames_gen == 0))
        break;
      if (total_out + 64 > s->cap && ensure(s, s->cap * 2, ch) != 0)
        return NIMBUS_ENOMEM;
    }
    *out = s->buf;
    *outn = total_out;
    return 0;
  }
  case OP_LOUDNESS:
    if (!j->measure)
      measure_levels(s->peak, s->sumsq, in, n, ch);
    *out = in;
    *outn = n;
    return 0;
  }
  return NIMBUS_EINVAL;
}

static void stage_reset(stage *s) {
  s->pos = 0;
  s->raw_peak = 0;
  memset(s->peak, 0, sizeof s->peak);
  memset(s->sumsq, 0, sizeof s->sumsq);
  if (s->src != NULL)
    src_reset(s->src);
}

/* Sets each stage's channels and rates from the input's. */
static int plan(job *j, int ch, double rate) {
  for (int i = 0; i < j->n; i++) {
    stage *s = &j->st[i];
    s->ch_in = ch;
    s->rate_in = rate;
    if (s->kind == OP_MONO)
      ch = 1;
    if (s->kind == OP_RESAMPLE) {
      rate = s->a;
      int e = 0;
      s->src = src_new(s->quality, ch, &e);
      if (s->src == NULL)
        return host->fail(j->c, 500, NULL, "libsamplerate: %s",
                          src_strerror(e));
    }
    s->ch_out = ch;
    s->rate_out = rate;
  }
  return 0;
}

/* What libsndfile read past and only its log tells: a WAV data chunk
 * longer than the file (truncated, unless the length is the placeholder a
 * writer on a pipe leaves, 0x7ffff000 and up), or Ogg pages that failed
 * their checksum or went missing (libogg skips them). NULL when neither. */
static const char *log_damage(SNDFILE *in) {
  char log[4096];
  sf_command(in, SFC_GET_LOG_INFO, log, sizeof log);
  log[sizeof log - 1] = 0;
  if (strstr(log, "Corrupted bitstream") != NULL ||
      strstr(log, "reports a hole") != NULL)
    return "Ogg pages are damaged or missing";
  for (const char *p = log; (p = strstr(p, "data : ")) != NULL; p++) {
    long long claimed = 0, holds = 0;
    if (sscanf(p, "data : %lld (should be %lld)", &claimed, &holds) == 2 &&
        claimed < 0x7ffff000LL)
      return "the header claims more frames than the file holds";
  }
  return NULL;
}

/* One pass over the input: every block through the chain and, unless
 * measuring, into `out`. Returns 0 or a reply code after fail(). */
static int pass(job *j, SNDFILE *in, int ch_in, SNDFILE *out, float *block,
                vin *v) {
  for (int i = 0; i < j->n; i++)
    stage_reset(&j->st[i]);
  if (sf_seek(in, 0, SEEK_SET) < 0)
    return host->fail(j->c, 422, NULL, "the input cannot be read again");
  j->out_frames = 0;
  j->out_peak = 0;
  int ch_out = j->n > 0 ? j->st[j->n - 1].ch_out : ch_in;
  int64_t read = 0;
  for (;;) {
    sf_count_t got = sf_readf_float(in, block, BLOCK);
    if (v->err != 0)
      return host->fail(j->c, 500, NULL, "the input could not be read");
    read += got > 0 ? got : 0;
    if (sf_error(in) != SF_ERR_NO_ERROR)
      return host->fail(j->c, 422, NULL,
                        "the input is corrupt after %lld frames (%s)",
                        (long long)read, sf_strerror(in));
    /* Checked while reading: a header may not say, or understate. */
    if (read > j->in_max)
      return host->fail(j->c, 413, "cut it first, or send a shorter one",
                        "the sound lasts more than %lld ms, this cloud's "
                        "limit",
                        (long long)j->max_duration_ms);
    bool last = got < BLOCK;
    const float *p = block;
    size_t n = got > 0 ? (size_t)got : 0;
    for (int i = 0; i < j->n; i++) {
      int rc = stage_run(j, &j->st[i], p, n, last, &p, &n);
      if (rc == NIMBUS_ENOMEM)
        return host->fail(j->c, 500, NULL, "the worker is out of memory");
      if (rc != 0)
        return host->fail(j->c, 500, NULL, "resampling failed");
    }
    if (!j->measure && n > 0) {
      for (size_t i = 0; i < n * (size_t)ch_out; i++)
        if (fabs((double)p[i]) > j->out_peak)
          j->out_peak = fabs((double)p[i]);
      if (sf_writef_float(out, p, (sf_count_t)n) != (sf_count_t)n)
        return host->fail(j->c, 500, NULL, "encoding failed: %s",
                          sf_strerror(out));
    }
    j->out_frames += (int64_t)n;
    j->progress_done += got > 0 ? got : 0;
    int64_t t = now_ms();
    if (t - j->last_progress_ms >= PROGRESS_MS) {
      j->last_progress_ms = t;
      host->progress(j->c, j->progress_done, j->progress_total);
      int cr = host->checkpoint(j->c);
      if (cr == NIMBUS_ECANCELED)
        return host->fail(j->c, 499, NULL, "cancelled by task.cancel");
      if (cr != 0)
        return host->fail(j->c, 500, NULL, "the task's claim lapsed");
    }
    if (last)
      break;
  }
  /* A decoder that meets a damaged or missing part stops early without an
   * error: fewer frames than the header promised, or none at all from a
   * container that does not say how many, is a truncated or corrupt
   * file, never a shorter sound. */
  if (j->in_frames >= 0 && read + j->in_slack < j->in_frames)
    return host->fail(j->c, 422, NULL,
                      "the input ends after %lld of the %lld frames its "
                      "header promises: it is truncated or corrupt",
                      (long long)read, (long long)j->in_frames);
  if (j->in_frames < 0 && read == 0)
    return host->fail(j->c, 422, NULL,
                      "no sound could be decoded from the input: it is "
                      "truncated or corrupt");
  const char *damage = log_damage(in);
  if (damage != NULL)
    return host->fail(j->c, 422, NULL, "the input is truncated or corrupt: %s",
                      damage);
  return 0;
}

/* ---- The handler --------------------------------------------------------- */

static int copy_out(wk_ctx *c, FILE *tmp) {
  uint8_t buf[65536];
  if (fflush(tmp) != 0 || fseek(tmp, 0, SEEK_SET) != 0)
    return host->fail(c, 500, NULL, "the output could not be read back");
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, tmp)) > 0) {
    int rc = host->output_write(c, buf, n);
    if (rc == NIMBUS_ETOOBIG)
      return host->fail(c, 413, "ask for a shorter or smaller output",
                        "the output is over the cloud's limit");
    if (rc != 0)
      return host->fail(c, rc == NIMBUS_ENOSPC ? 503 : 500, NULL,
                        "the output could not be stored");
  }
  return ferror(tmp) ? host->fail(c, 500, NULL, "the output was lost") : 0;
}

static void pack_results(job *j, const SF_INFO *oi) {
  msgpack_packer *pk = host->packer(j->c);
  int nloud = 0;
  for (int i = 0; i < j->n; i++)
    nloud += j->st[i].kind == OP_LOUDNESS;
  msgpack_pack_map(pk, nloud > 0 ? 7 : 6);
#define KEY(s) msgpack_pack_str_with_body(pk, s, strlen(s))
  KEY("format");
  const char *f = format_name(j->fmt_out);
  msgpack_pack_str_with_body(pk, f, strlen(f));
  KEY("rate");
  msgpack_pack_int64(pk, oi->samplerate);
  KEY("channels");
  msgpack_pack_int64(pk, oi->channels);
  KEY("frames");
  msgpack_pack_int64(pk, j->out_frames);
  KEY("duration_ms");
  msgpack_pack_int64(
      pk, oi->samplerate > 0 ? j->out_frames * 1000 / oi->samplerate : 0);
  KEY("peak_db");
  msgpack_pack_double(pk, finite_db(db_of(j->out_peak)));
  if (nloud > 0) {
    KEY("loudness");
    msgpack_pack_array(pk, (size_t)nloud);
    for (int i = 0; i < j->n; i++) {
      const stage *s = &j->st[i];
      if (s->kind != OP_LOUDNESS)
        continue;
      msgpack_pack_array(pk, (size_t)s->ch_in);
      for (int k = 0; k < s->ch_in; k++) {
        double rms = s->pos > 0 ? sqrt(s->sumsq[k] / (double)s->pos) : 0;
        msgpack_pack_map(pk, 2);
        KEY("peak_db");
        msgpack_pack_double(pk, finite_db(db_of(s->peak[k])));
        KEY("rms_db");
        msgpack_pack_double(pk, finite_db(db_of(rms)));
      }
    }
  }
#undef KEY
}

static int h_audio(wk_ctx *c) {
  const msgpack_object *args = host->args(c);
  job *j = calloc(1, sizeof *j);
  float *block = NULL;
  SNDFILE *in = NULL, *out = NULL;
  FILE *tmp = NULL;
  int code = 0;
  if (j == NULL)
    return host->fail(c, 500, NULL, "the worker is out of memory");
  j->c = c;
  j->quality = -1;
  if ((code = parse_ops(j, args)) != 0)
    goto out;
  char err[256];
  const char *fs = NULL;
  size_t fl = 0;
  int rc = sc_arg_str(args, "format", false, 1, 16, &fs, &fl, err, sizeof err);
  if (rc == NIMBUS_EINVAL) {
    code = host->fail(c, 400, NULL, "%s", err);
    goto out;
  }
  if (fs != NULL) {
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
      if (strlen(formats[i].name) == fl && memcmp(formats[i].name, fs, fl) == 0)
        j->fmt_out = formats[i].format;
    if (j->fmt_out == 0) {
      code = host->fail(c, 415, "formats: wav, flac, ogg, opus, mp3",
                        "args.format \"%.*s\" is not one of wav, flac, ogg, "
                        "opus, mp3",
                        (int)fl, fs);
      goto out;
    }
  }
  if (sc_arg_num(args, "quality", false, 0, 1, &j->quality, err, sizeof err) ==
      NIMBUS_EINVAL) {
    code = host->fail(c, 400, NULL, "%s", err);
    goto out;
  }

  vin v = {.c = c, .size = (sf_count_t)host->input_size(c)};
  SF_VIRTUAL_IO vio = {vin_len, vin_seek, vin_read, vin_write, vin_tell};
  SF_INFO ii;
  memset(&ii, 0, sizeof ii);
  in = sf_open_virtual(&vio, SFM_READ, &ii, &v);
  if (in == NULL) {
    /* A kind libsndfile knows with a broken header is 422; one it does
     * not know (or an encoding it lacks) is 415. */
    int e = sf_error(NULL);
    code = host->fail(
        c,
        v.err != 0                   ? 500
        : e == SF_ERR_MALFORMED_FILE ? 422
                                     : 415,
        e == SF_ERR_MALFORMED_FILE ? NULL
                                   : "send WAV, FLAC, Ogg Vorbis, Opus or MP3",
        e == SF_ERR_MALFORMED_FILE
            ? "the input is a sound file but truncated or corrupt (%s)"
            : "the input is not sound libsndfile can read (%s)",
        sf_strerror(NULL));
    goto out;
  }
  if (ii.channels < 1 || ii.channels > CHANNELS_MAX || ii.samplerate < 1) {
    code = host->fail(c, 422, NULL,
                      "the input claims %d channels at %d Hz: not a sound",
                      ii.channels, ii.samplerate);
    goto out;
  }
  const wk_offload_limits *lim = host->offload_limits();
  /* SF_COUNT_MAX: the container does not say (an Ogg stream without its
   * end). */
  j->in_frames = ii.frames >= 0 && ii.frames < SF_COUNT_MAX ? ii.frames : -1;
  j->in_slack = (ii.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG
                    ? j->in_frames / 50 + 2304
                    : 0;
  j->max_duration_ms = lim->max_duration;
  double in_max = (double)lim->max_duration * ii.samplerate / 1000.0;
  j->in_max = in_max < 9e18 ? (int64_t)in_max : INT64_MAX;
  double dur_ms =
      j->in_frames > 0 ? (double)j->in_frames * 1000.0 / ii.samplerate : 0;
  /* Uncompressed samples take at least a byte each (FLAC's subtype says
   * PCM too, but its frames are compressed): a header that
   * claims more frames than the file can hold is a lie, found before a
   * loop over frames that are not there. */
  int sub = ii.format & SF_FORMAT_SUBMASK;
  bool pcm = (ii.format & SF_FORMAT_TYPEMASK) != SF_FORMAT_FLAC &&
             (sub == SF_FORMAT_PCM_16 || sub == SF_FORMAT_PCM_24 ||
              sub == SF_FORMAT_PCM_32 || sub == SF_FORMAT_PCM_U8 ||
              sub == SF_FORMAT_PCM_S8 || sub == SF_FORMAT_FLOAT ||
              sub == SF_FORMAT_DOUBLE);
  const char *damage = log_damage(in);
  if (pcm && (double)ii.frames * ii.channels > (double)v.size)
    damage = "the header claims more frames than the file holds";
  if (damage != NULL) {
    code = host->fail(c, 422, NULL, "the input is truncated or corrupt: %s",
                      damage);
    goto out;
  }
  if (dur_ms > (double)lim->max_duration) {
    code = host->fail(c, 413, "cut it first, or send a shorter one",
                      "the sound lasts %.0f ms; this cloud processes at most "
                      "%lld",
                      dur_ms, (long long)lim->max_duration);
    goto out;
  }
  if (j->fmt_out == 0)
    j->fmt_out = default_format(&ii);
  if ((code = plan(j, ii.channels, ii.samplerate)) != 0)
    goto out;
  SF_INFO oi = {.samplerate =
                    (int)(j->n > 0 ? j->st[j->n - 1].rate_out : ii.samplerate),
                .channels = j->n > 0 ? j->st[j->n - 1].ch_out : ii.channels,
                .format = j->fmt_out};
  /* libsndfile's check lets Opus pass at any rate; its encoder takes
   * five. */
  bool opus_rate = oi.samplerate == 8000 || oi.samplerate == 12000 ||
                   oi.samplerate == 16000 || oi.samplerate == 24000 ||
                   oi.samplerate == 48000;
  if (!sf_format_check(&oi) ||
      ((j->fmt_out & SF_FORMAT_SUBMASK) == SF_FORMAT_OPUS && !opus_rate)) {
    code = host->fail(c, 415,
                      (j->fmt_out & SF_FORMAT_SUBMASK) == SF_FORMAT_OPUS
                          ? "Opus takes 8000, 12000, 16000, 24000 or 48000 "
                            "Hz: add a resample op"
                          : NULL,
                      "libsndfile cannot write %s at %d Hz with %d channels",
                      format_name(j->fmt_out), oi.samplerate, oi.channels);
    goto out;
  }
  block = malloc((size_t)BLOCK * (size_t)ii.channels * sizeof *block);
  tmp = tmpfile();
  if (block == NULL || tmp == NULL) {
    code = host->fail(c, 500, NULL, "the worker cannot make its buffers");
    goto out;
  }
  /* Measure first when an op needs the whole sound; twice when a fade out
   * comes before a normalize. */
  int measures = 0;
  bool fade_out = false;
  for (int i = 0; i < j->n; i++) {
    if (j->st[i].kind == OP_NORMALIZE)
      measures = fade_out ? 2 : measures > 0 ? measures : 1;
    if (j->st[i].kind == OP_FADE && j->st[i].b > 0) {
      fade_out = true;
      measures = measures > 0 ? measures : 1;
    }
  }
  int64_t frames = j->in_frames > 0 ? j->in_frames : 0;
  j->progress_total = frames * (measures + 1);
  for (int m = 0; m < measures; m++) {
    j->measure = true;
    if ((code = pass(j, in, ii.channels, NULL, block, &v)) != 0)
      goto out;
    j->totals = true;
    double prior = 1.0;
    for (int i = 0; i < j->n; i++) {
      stage *s = &j->st[i];
      s->total = s->pos;
      if (s->kind != OP_NORMALIZE)
        continue;
      double peak = s->raw_peak * prior;
      s->scale = peak > 0 ? pow(10.0, s->a / 20.0) / peak : 1.0;
      prior *= s->scale;
    }
    j->measure = false;
  }
  out = sf_open_fd(fileno(tmp), SFM_WRITE, &oi, 0);
  if (out == NULL) {
    code = host->fail(c, 500, NULL, "libsndfile cannot start the output: %s",
                      sf_strerror(NULL));
    goto out;
  }
  /* Samples beyond full scale are clipped, never wrapped. */
  sf_command(out, SFC_SET_CLIPPING, NULL, SF_TRUE);
  if (j->quality >= 0)
    sf_command(out, SFC_SET_VBR_ENCODING_QUALITY, &j->quality,
               sizeof j->quality);
  if ((code = pass(j, in, ii.channels, out, block, &v)) != 0)
    goto out;
  if (sf_close(out) != 0) {
    out = NULL;
    code = host->fail(c, 500, NULL, "the output could not be finished");
    goto out;
  }
  out = NULL;
  if ((code = copy_out(c, tmp)) != 0)
    goto out;
  pack_results(j, &oi);
out:
  if (out != NULL)
    sf_close(out);
  if (in != NULL)
    sf_close(in);
  if (tmp != NULL)
    fclose(tmp);
  for (int i = 0; i < j->n; i++) {
    free(j->st[i].buf);
    if (j->st[i].src != NULL)
      src_delete(j->st[i].src);
  }
  free(block);
  free(j);
  return code;
}

/* ---- The family ---------------------------------------------------------- */

static char version[96];

static int audio_init(const wk_host_api *h, char *err, size_t errcap) {
  if (h->abi != WK_FAMILY_ABI) {
    snprintf(err, errcap, "the host has ABI %d", h->abi);
    return NIMBUS_ECONFIG;
  }
  host = h;
  return 0;
}

static const wk_handler audio_handlers[] = {
    {.type = "process.audio",
     .flags = WK_STATEFUL,
     .pool = "offload",
     .fn = h_audio},
    {.type = NULL},
};

static wk_family audio_family = {
    .abi = WK_FAMILY_ABI,
    .name = "audio",
    .init = audio_init,
    .handlers = audio_handlers,
};

__attribute__((visibility("default"))) const wk_family *nimbus_family_v1(void) {
  /* What the output depends on: this module's code and its libraries. */
  snprintf(version, sizeof version, "1 %s %s", sf_version_string(),
           src_get_name(SRC_SINC_BEST_QUALITY));
  audio_family.version = version;
  return &audio_family;
}
