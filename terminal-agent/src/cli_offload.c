/* nimbus-agent's offload verbs (PROTOCOL.md, Compute offload): one front
 * end for every process.* family, each family one entry of of_families
 * (its verb, task type, and the output formats its OUT's extension may
 * name). `image IN OUT --op blur:sigma=4` checks everything it can before
 * it connects (the ops through the library's parser, so a typo costs no
 * round trip), finds the input (IN, uploaded; --blob HASH; or
 * --from-backup NAME, an item of a snapshot, through backup.get), and
 * hands the rest to nimbus_offload: the upload through the transfer
 * engine, the task with its progress and task.cancel on Ctrl-C, the
 * verified download into OUT. It shows a progress bar on a terminal and
 * prints one line for a person, or one JSON object on a pipe, and gives
 * each class of failure an exit status of its own (cli.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_json.h"
#include "bk.h"
#include "cli.h"
#include "nb_util.h"
#include "sc.h"

/* ---- The families ----------------------------------------------------- */

typedef struct of_ext {
  const char *ext, *format;
} of_ext;

typedef struct of_family {
  const char *verb; /* nimbus-agent <verb> */
  const char *type; /* the task type */
  const char *noun; /* what it processes, for messages */
  /* --format's default by OUT's extension (case ignored); NULL-ended. */
  const of_ext *exts;
} of_family;

static const of_ext of_image_exts[] = {{".jpg", "jpeg"},
                                       {".jpeg", "jpeg"},
                                       {".png", "png"},
                                       {".webp", "webp"},
                                       {NULL, NULL}};

static const of_ext of_audio_exts[] = {
    {".wav", "wav"},   {".flac", "flac"}, {".ogg", "ogg"}, {".oga", "ogg"},
    {".opus", "opus"}, {".mp3", "mp3"},   {NULL, NULL}};

/* process.doc takes no `format`: its ops say what comes out. */
static const of_family of_families[] = {
    {.verb = "image",
     .type = "process.image",
     .noun = "picture",
     .exts = of_image_exts},
    {.verb = "audio",
     .type = "process.audio",
     .noun = "sound",
     .exts = of_audio_exts},
    {.verb = "doc", .type = "process.doc", .noun = "document", .exts = NULL},
};

const char cli_usage_image[] =
    "Usage: nimbus-agent image IN OUT --op OP [--op OP]... [--format F]\n"
    "                          [--quality Q] [--id ID] [--json] [--progress]\n"
    "                          [OPTIONS]\n"
    "       nimbus-agent image --blob HASH OUT --op OP...\n"
    "       nimbus-agent image --from-backup NAME [--snapshot S] OUT --op ...\n"
    "\n"
    "Has the cloud process a picture (process.image, through libvips) and\n"
    "writes the result to OUT: the work, and the battery it costs, are the\n"
    "cloud's. IN is uploaded first, and only if the cloud lacks it (a\n"
    "second run sends nothing; an interrupted upload resumes). --blob names\n"
    "a blob the cloud holds for this terminal (an earlier result, a file it\n"
    "uploaded or was shared), --from-backup an item of the latest snapshot\n"
    "(or --snapshot S) by its name as `nimbus-agent backup` stored it: then\n"
    "nothing is uploaded at all. The result comes into a hidden part file\n"
    "beside OUT, renamed into place once its SHA-256 matches (a result of\n"
    "at most 256 KiB comes in the reply itself); OUT is never half-written.\n"
    "\n"
    "Ops, applied in order (at most 32), --op NAME[:KEY=VALUE[,KEY=VALUE]]:\n"
    "  blur:sigma=S              Gaussian blur, S from 0.1 to 100\n"
    "  resize:width=W,height=H   scale; one side keeps the aspect, both fit\n"
    "                            inside the box (fit=contain) or fill it\n"
    "                            (fit=fill)\n"
    "  thumbnail:size=N          fit an N x N box "
    "(crop=none|centre|attention)\n"
    "  crop:left=L,top=T,width=W,height=H\n"
    "  rotate:angle=90|180|270   clockwise\n"
    "  autorotate                upright by the EXIF orientation\n"
    "  flip:direction=horizontal|vertical\n"
    "  sharpen[:sigma=S]         unsharp mask, S from 0.1 to 10 (1)\n"
    "  grayscale                 one band\n"
    "  strip                     drop the metadata (EXIF, XMP, ICC)\n"
    "VALUEs: a number (an int when whole), true or false, else a string.\n"
    "schemas/SPEC.md (process.image) lists every op, range and default. Op\n"
    "syntax is checked before anything is sent; the cloud checks the rest.\n"
    "\n"
    "--format jpeg|png|webp: the output's format (default: by OUT's\n"
    "extension, .jpg .jpeg .png .webp; else the input's format). --quality\n"
    "1-100, for jpeg and webp (default 85).\n"
    "\n"
    "On a terminal: a progress bar on stderr (upload, process, download)\n"
    "and one line on stdout: OUT, width x height, format, bands, size, and\n"
    "whether the cloud's result cache answered (then nothing was computed).\n"
    "On a pipe (or --json): one JSON object on stdout, the task's result\n"
    "(blob, size, cached, width, height, bands, format) and path, input,\n"
    "uploaded, inline, bytes_sent, bytes_received, task, seconds;\n"
    "--progress writes progress as JSON lines on stderr.\n"
    "\n"
    "--id ID names the task (16-64 of A-Z a-z 0-9 _ -): the same id again\n"
    "is answered with the recorded result, not computed twice.\n"
    "--timeout MS (10 s) bounds connecting, and then any silence of the\n"
    "cloud (a running task is asked about every few seconds, and answers).\n"
    "Ctrl-C stops it: a running task is cancelled in the cloud\n"
    "(task.cancel); a partial upload or download is kept, and the same\n"
    "command again resumes it, or finds the finished result in the cloud's\n"
    "cache.\n"
    "\n"
    "Exit status:\n"
    "  0  done\n"
    "  1  the cloud answered another error (printed)\n"
    "  2  usage: bad arguments or op syntax (nothing sent), an op or value\n"
    "     the cloud refused (400), or OUT could not be written\n"
    "  3  cannot connect, or the broker refused the task\n"
    "  4  no reply for --timeout ms (run again to resume)\n"
    "  5  not found: no such IN, no such blob for this terminal, no such\n"
    "     backup item or snapshot (404)\n"
    "  6  too large: input, output or pixels over the cloud's limits (413)\n"
    "  7  unsupported format, of the input or --format (415)\n"
    "  8  corrupt or truncated input (422)\n"
    "  9  the cloud cannot serve it: its image module is not installed, or\n"
    "     it is unavailable right now (503; the cloud's words are printed)\n"
    "  130  stopped by Ctrl-C (128 + the signal)\n"
    "\n"
    "Sound and documents go the same way: `nimbus-agent audio` and\n"
    "`nimbus-agent doc` (their --help lists their ops).\n";

/* What audio and doc say beside image's usage: the same front end, other
 * ops. */
#define OF_COMMON_TAIL                                                         \
  "IN is uploaded only if the cloud lacks it; --blob HASH or\n"                \
  "--from-backup NAME [--snapshot S] name input the cloud holds instead.\n"    \
  "The result is written to OUT by way of a part file checked against its\n"   \
  "SHA-256. Progress on a terminal, one JSON object on a pipe (or --json);\n"  \
  "--id, --timeout and Ctrl-C as for `nimbus-agent image` (its --help), and\n" \
  "the same exit statuses: 0 done, 1 other error, 2 usage or 400, 3 no\n"      \
  "connection, 4 no reply, 5 not found, 6 too large (413), 7 unsupported\n"    \
  "format (415), 8 corrupt input (422), 9 the cloud cannot serve it (503),\n"  \
  "130 Ctrl-C.\n"

const char cli_usage_audio[] =
    "Usage: nimbus-agent audio IN OUT --op OP [--op OP]... [--format F]\n"
    "                          [--quality Q] [OPTIONS]\n"
    "       nimbus-agent audio --blob HASH | --from-backup NAME OUT --op ...\n"
    "\n"
    "Has the cloud process a sound (process.audio: libsndfile, libsamplerate)\n"
    "and writes the result to OUT. Ops, in order, --op NAME[:KEY=VALUE,...]:\n"
    "  normalize[:peak=DB]       peak to DB dBFS (-60 to 0, default -1)\n"
    "  gain:db=DB                -60 to 60 dB\n"
    "  trim:start=MS,end=MS      keep [start, end)\n"
    "  fade:in=MS,out=MS         from and to silence\n"
    "  mono                      mix the channels down to one\n"
    "  resample:rate=HZ          8000-192000 (quality=best|medium|fast)\n"
    "  loudness                  measure: peak and RMS in the JSON result\n"
    "--format wav|flac|ogg|opus|mp3 (default: by OUT's extension, else the\n"
    "input's kind); --quality 0-1 for the lossy ones. schemas/SPEC.md\n"
    "(process.audio) lists every range.\n" OF_COMMON_TAIL;

const char cli_usage_doc[] =
    "Usage: nimbus-agent doc IN OUT --op OP [--op OP]... [OPTIONS]\n"
    "       nimbus-agent doc --blob HASH | --from-backup NAME OUT --op ...\n"
    "\n"
    "Has the cloud process a document (process.doc) and writes the result\n"
    "to OUT; each op works on what the one before made. Ops:\n"
    "  compress[:level=N]        zstd, N 1-19 (3)\n"
    "  decompress                zstd\n"
    "  to_utf8:from=CHARSET      e.g. latin1, windows-1252, utf-16\n"
    "  markdown_to_html          CommonMark, raw HTML left out\n"
    "  pdf_thumbnail[:page=N,width=W,format=jpeg|png|webp]\n"
    "  pdf_info                  measure: pages, title, author\n"
    "  text_stats                measure: lines, words, characters\n"
    "schemas/SPEC.md (process.doc) lists every range.\n" OF_COMMON_TAIL;

static const of_family *of_family_find(const char *verb) {
  for (size_t i = 0; i < sizeof of_families / sizeof of_families[0]; i++)
    if (strcmp(of_families[i].verb, verb) == 0)
      return &of_families[i];
  return NULL;
}

/* The format OUT's extension names, or NULL. */
static const char *of_format_of(const of_family *f, const char *out) {
  const char *base = strrchr(out, '/');
  const char *dot = strrchr(base != NULL ? base : out, '.');
  for (const of_ext *e = f->exts; dot != NULL && e != NULL && e->ext != NULL;
       e++)
    if (strcasecmp(dot, e->ext) == 0)
      return e->format;
  return NULL;
}

/* ---- Progress ---------------------------------------------------------- */

typedef struct of_show {
  bk_progress prog;
  int phase; /* shown now; 0: none yet */
} of_show;

static void of_on_progress(void *ctx, int phase, int64_t done, int64_t total) {
  static const char *const names[] = {"", "upload", "process", "download"};
  of_show *s = ctx;
  if (phase < NIMBUS_OFFLOAD_UPLOAD || phase > NIMBUS_OFFLOAD_DOWNLOAD)
    return;
  if (phase != s->phase) {
    if (s->phase != 0)
      bk_progress_finish(&s->prog);
    s->phase = phase;
    bk_progress_phase(&s->prog, names[phase], total, 1);
    s->prog.counts = phase == NIMBUS_OFFLOAD_PROCESS;
  }
  s->prog.bytes_done = done;
  s->prog.bytes_total = total;
  if (phase != NIMBUS_OFFLOAD_PROCESS && done == total)
    s->prog.files_done = 1;
  bk_progress_show(&s->prog, false);
}

/* ---- Outcome ----------------------------------------------------------- */

/* The exit status of a failed nimbus_offload, after saying why. */
static int of_failed(int rc, const nimbus_offload_result *res) {
  if (rc == NIMBUS_ECANCELED && bk_interrupted) {
    fprintf(stderr, "nimbus-agent: %s\n", res->error);
    return bk_signal_status();
  }
  if (res->code != 0) {
    fprintf(stderr, "error %d: %s\n", res->code, res->error);
    if (res->help[0] != '\0')
      fprintf(stderr, "help: %s\n", res->help);
    switch (res->code) {
    case 400:
      return CLI_USAGE;
    case 404:
      return CLI_NOT_FOUND;
    case 413:
      return CLI_TOO_LARGE;
    case 415:
      return CLI_UNSUPPORTED;
    case 422:
      return CLI_CORRUPT;
    case 503:
      return CLI_UNAVAILABLE;
    default:
      return CLI_CLOUD_ERROR;
    }
  }
  fprintf(stderr, "nimbus-agent: %s\n", res->error);
  switch (rc) {
  case NIMBUS_ETIMEDOUT:
    return CLI_TIMEOUT;
  case NIMBUS_EREFUSED:
    return CLI_CONNECT;
  case NIMBUS_ENOTFOUND:
    return CLI_NOT_FOUND;
  case NIMBUS_ETOOBIG:
    return CLI_TOO_LARGE;
  case NIMBUS_EPROTO:
    return CLI_CLOUD_ERROR;
  default:
    return CLI_USAGE; /* a local file, memory */
  }
}

/* The result map's int `key`, or -1. */
static int64_t of_res_int(const msgpack_object *m, const char *key) {
  int64_t v = -1;
  return bk_obj_int(sc_map_get(m, key), &v) ? v : -1;
}

static int of_print(const cli_cfg *cfg, const char *out_path,
                    const nimbus_offload_result *res, double secs) {
  msgpack_object m;
  msgpack_zone *z = NULL;
  char err[128];
  if (res->result == NULL ||
      sc_value_decode(res->result, res->result_len, &m, &z, err, sizeof err) !=
          0 ||
      m.type != MSGPACK_OBJECT_MAP) {
    msgpack_zone_free(z);
    fprintf(stderr, "nimbus-agent: the cloud's answer has no result map\n");
    return CLI_CLOUD_ERROR;
  }
  int status = CLI_OK;
  if (!cfg->json && isatty(STDOUT_FILENO)) {
    const msgpack_object *fmt = sc_map_get(&m, "format");
    char size[32], shape[64] = "", bands[32] = "";
    int64_t w = of_res_int(&m, "width"), h = of_res_int(&m, "height"),
            b = of_res_int(&m, "bands");
    bk_fmt_bytes(res->size, size, sizeof size);
    if (w >= 0 && h >= 0)
      snprintf(shape, sizeof shape, "%lld x %lld, ", (long long)w,
               (long long)h);
    if (b >= 0)
      snprintf(bands, sizeof bands, ", %lld band%s", (long long)b,
               b == 1 ? "" : "s");
    printf(
        "wrote %s: %s%.*s%s, %s; %s, %.1f s end to end\n", out_path, shape,
        fmt != NULL && fmt->type == MSGPACK_OBJECT_STR ? (int)fmt->via.str.size
                                                       : 1,
        fmt != NULL && fmt->type == MSGPACK_OBJECT_STR ? fmt->via.str.ptr : "?",
        bands, size,
        res->cached ? "from the cloud's cache (nothing computed)"
                    : "computed by the cloud",
        secs);
    fflush(stdout);
  } else {
    cJSON *j = ag_json_from_msgpack(&m);
    if (j != NULL) {
      cJSON_AddStringToObject(j, "path", out_path);
      if (res->input[0] != '\0')
        cJSON_AddStringToObject(j, "input", res->input);
      cJSON_AddBoolToObject(j, "uploaded", res->uploaded);
      cJSON_AddBoolToObject(j, "inline", res->inline_data);
      cJSON_AddNumberToObject(j, "bytes_sent", (double)res->bytes_sent);
      cJSON_AddNumberToObject(j, "bytes_received", (double)res->bytes_received);
      cJSON_AddStringToObject(j, "task", res->task_id);
      cJSON_AddNumberToObject(j, "seconds",
                              (double)(int64_t)(secs * 1000) / 1000.0);
    }
    if (cli_print_json(j) != 0)
      status = CLI_CLOUD_ERROR;
    cJSON_Delete(j);
  }
  msgpack_zone_free(z);
  return status;
}

/* ---- --from-backup ------------------------------------------------------ */

/* The blob of the snapshot's item `name` into hex[65]. */
static int of_backup_item(const cli_cfg *cfg, nimbus_agent *a, bk_progress *p,
                          const char *name, char hex[65]) {
  bk_pipe pipe;
  nimbus_xfer *xfer = NULL;
  char *state = bk_state_dir(cfg->state_dir);
  int64_t received = 0;
  if (state == NULL)
    return cli_usage_error("out of memory, or no state directory");
  if (bk_pipe_init(&pipe, a, 1, (int)cfg->timeout) != 0) {
    free(state);
    return cli_usage_error("cannot set up the task pipeline");
  }
  pipe.stop = bk_stopped;
  nimbus_xfer_opts xo;
  nimbus_xfer_opts_init(&xo);
  xo.jobs = (int)cfg->jobs;
  xo.timeout_ms = (int)cfg->timeout;
  xo.stop = bk_stopped;
  int status = CLI_OK;
  if (nimbus_xfer_new(a, &xo, &xfer) != 0) {
    status = cli_usage_error("cannot set up the transfer engine");
    goto out;
  }
  cli_snapshot s;
  status =
      cli_snapshot_get(&pipe, xfer, p, state, cfg->snapshot, &received, &s);
  if (status != CLI_OK) {
    if (s.code == 404)
      status = CLI_NOT_FOUND;
    goto out;
  }
  status = CLI_NOT_FOUND;
  size_t nl = strlen(name);
  for (uint32_t i = 0; s.items.type == MSGPACK_OBJECT_ARRAY &&
                       i < s.items.via.array.size && status == CLI_NOT_FOUND;
       i++) {
    const msgpack_object *it = &s.items.via.array.ptr[i];
    if (it->type != MSGPACK_OBJECT_MAP)
      continue;
    const msgpack_object *n = sc_map_get(it, "name");
    const msgpack_object *b = sc_map_get(it, "blob");
    if (n == NULL || n->type != MSGPACK_OBJECT_STR || n->via.str.size != nl ||
        memcmp(n->via.str.ptr, name, nl) != 0)
      continue;
    if (b == NULL || b->type != MSGPACK_OBJECT_STR ||
        !bk_hex_valid(b->via.str.ptr, b->via.str.size)) {
      fprintf(stderr,
              "nimbus-agent: item \"%s\" of snapshot %s names no "
              "valid blob\n",
              name, s.id);
      status = CLI_CLOUD_ERROR;
      break;
    }
    memcpy(hex, b->via.str.ptr, 64);
    hex[64] = '\0';
    status = CLI_OK;
  }
  if (status == CLI_NOT_FOUND)
    fprintf(stderr,
            "nimbus-agent: snapshot %s has no item named \"%s\" (names are "
            "as `nimbus-agent backup` stored them, e.g. photos/a.jpg)\n",
            s.id, name);
  cli_snapshot_fini(&s);
out:
  bk_pipe_abandon(&pipe);
  nimbus_xfer_free(xfer);
  bk_pipe_fini(&pipe);
  free(state);
  return status;
}

/* ---- The verb ----------------------------------------------------------- */

/* --quality as a number; false when it is none. */
static bool of_quality(const char *s, double *q) {
  char *end = NULL;
  errno = 0;
  *q = strtod(s, &end);
  return s[0] != '\0' && errno == 0 && end != NULL && *end == '\0' &&
         isfinite(*q) && *q != 0;
}

/* Checks OUT: a file name in a directory that exists. */
static int of_check_out(const char *out) {
  struct stat st;
  if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
    fprintf(stderr, "nimbus-agent: %s is a directory: give OUT a file name\n",
            out);
    return CLI_USAGE;
  }
  const char *slash = strrchr(out, '/');
  if (slash != NULL && slash[1] == '\0') {
    fprintf(stderr, "nimbus-agent: %s is no file name\n", out);
    return CLI_USAGE;
  }
  char *dir = slash == NULL  ? strdup(".")
              : slash == out ? strdup("/")
                             : strndup(out, (size_t)(slash - out));
  if (dir == NULL)
    return cli_usage_error("out of memory");
  int status = CLI_OK;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "nimbus-agent: cannot write %s: %s\n", out,
            errno != 0 ? strerror(errno) : "its directory is no directory");
    status = CLI_USAGE;
  }
  free(dir);
  return status;
}

int cli_offload(cli_cfg *cfg, int argc, char **argv) {
  const of_family *fam = of_family_find(argv[0]);
  if (fam == NULL)
    return cli_usage_error("no such offload verb");
  char err[320];
  bool by_blob = cfg->blob[0] != '\0', by_backup = cfg->from_backup[0] != '\0';
  if (by_blob && by_backup)
    return cli_usage_error("give --blob or --from-backup, not both");
  int want = by_blob || by_backup ? 2 : 3;
  if (argc != want) {
    snprintf(err, sizeof err,
             by_blob || by_backup
                 ? "%s with --blob or --from-backup takes only OUT"
                 : "%s takes IN and OUT (or --blob HASH / --from-backup NAME "
                   "and OUT)",
             fam->verb);
    return cli_usage_error(err);
  }
  const char *in = want == 3 ? argv[1] : NULL, *out_path = argv[want - 1];
  if (cfg->nops == 0)
    return cli_usage_error("give at least one --op, e.g. --op blur:sigma=4");
  uint8_t *ops = NULL;
  size_t ops_len = 0;
  if (nimbus_offload_ops_parse((const char *const *)cfg->ops, cfg->nops, &ops,
                               &ops_len, err, sizeof err) != 0)
    return cli_usage_error(err);
  int status = CLI_OK;
  double quality = 0;
  if (cfg->quality[0] != '\0' && !of_quality(cfg->quality, &quality)) {
    status = cli_usage_error("--quality must be a number, e.g. 80");
    goto out_ops;
  }
  if (cfg->id[0] != '\0' &&
      !nb_valid_token(cfg->id, strlen(cfg->id), SC_ID_MIN, SC_ID_MAX)) {
    status = cli_usage_error("--id must be 16-64 characters of "
                             "[A-Za-z0-9_-]");
    goto out_ops;
  }
  if (by_blob && !bk_hex_valid(cfg->blob, strlen(cfg->blob))) {
    status = cli_usage_error("--blob must be a blob's SHA-256: 64 lowercase "
                             "hex digits");
    goto out_ops;
  }
  if (in != NULL) {
    struct stat st;
    if (stat(in, &st) != 0) {
      fprintf(stderr, "nimbus-agent: %s: %s\n", in, strerror(errno));
      status = errno == ENOENT || errno == ENOTDIR ? CLI_NOT_FOUND : CLI_USAGE;
      goto out_ops;
    }
    if (!S_ISREG(st.st_mode)) {
      fprintf(stderr, "nimbus-agent: %s is not a regular file\n", in);
      status = CLI_USAGE;
      goto out_ops;
    }
  }
  if ((status = of_check_out(out_path)) != CLI_OK)
    goto out_ops;
  const char *format =
      cfg->format[0] != '\0' ? cfg->format : of_format_of(fam, out_path);

  int64_t t0 = nb_mono_ms();
  bk_catch_signals();
  of_show show = {0};
  bk_progress_init(&show.prog, cli_progress_mode(cfg), stderr);
  nimbus_agent *a = NULL;
  /* The engine's jobs, the task, a task.cancel. */
  if ((status = cli_connect(cfg, (int)cfg->jobs + 2, CLI_BULK_RESEND_MS,
                            CLI_BULK_RESEND_MAX_MS, &a)) != CLI_OK)
    goto out_ops;
  char hex[65] = "";
  if (by_backup && (status = of_backup_item(cfg, a, &show.prog,
                                            cfg->from_backup, hex)) != CLI_OK)
    goto out_agent;

  nimbus_offload_opts o;
  nimbus_offload_opts_init(&o);
  o.type = fam->type;
  o.in_path = in;
  o.in_blob = by_blob ? cfg->blob : by_backup ? hex : NULL;
  o.ops = ops;
  o.ops_len = ops_len;
  o.format = format;
  o.quality = quality;
  o.out_path = out_path;
  o.id = cfg->id[0] != '\0' ? cfg->id : NULL;
  o.jobs = (int)cfg->jobs;
  o.timeout_ms = (int)cfg->timeout;
  o.on_progress = of_on_progress;
  o.ctx = &show;
  o.stop = bk_stopped;
  nimbus_offload_result res;
  int rc = nimbus_offload(a, &o, &res);
  if (rc != 0) {
    bk_progress_clear(&show.prog);
    status = of_failed(rc, &res);
  } else {
    if (show.phase != 0)
      bk_progress_finish(&show.prog);
    status =
        of_print(cfg, out_path, &res, (double)(nb_mono_ms() - t0) / 1000.0);
  }
  nimbus_offload_result_fini(&res);
out_agent:
  bk_progress_clear(&show.prog);
  nimbus_agent_free(a);
out_ops:
  free(ops);
  return status;
}
