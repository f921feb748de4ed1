/* nimbus-agent's sharing verbs (PROTOCOL.md, Sharing): `share FILE`
 * uploads the file through the transfer engine (blob.has first, so content
 * the cloud has is not sent again; resumable; a progress bar on a
 * terminal, JSON lines with --progress on a pipe) and makes a share of it
 * (share.create); `fetch` asks for a share (share.get, by token or by
 * OWNER/NAME) and downloads its blob through the engine (a part file,
 * verified against the SHA-256, renamed into place); `shares` lists own
 * shares and those addressed to this terminal (share.list); `unshare`
 * revokes (share.revoke); `listen` prints notices as they arrive (the
 * library's notice callback). On a terminal each prints lines for a
 * person; on a pipe, or with --json, one JSON object per result. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ag_json.h"
#include "bk.h"
#include "cli.h"
#include "nb_util.h"
#include "sc.h"

const char cli_usage_share[] =
    "Usage: nimbus-agent share FILE [--name N] [--to ID,...] [--expires 7d]\n"
    "                          [--max-downloads N] [--mime M] [--replace]\n"
    "\n"
    "Uploads FILE (only what the cloud lacks; an interrupted run resumes)\n"
    "and shares it. Prints the token and the address OWNER/NAME, either of\n"
    "which `nimbus-agent fetch` takes. --to limits it to those terminals,\n"
    "which get a notice; --expires ends it after that long (a number and a\n"
    "unit: ms, s, m, h or d); --max-downloads lets at most that many\n"
    "terminals fetch it; --replace puts it in place of an earlier share of\n"
    "the same name. Without --mime the cloud reads the type from the\n"
    "file's first bytes. On a pipe (or --json) prints one JSON object:\n"
    "token, name, owner, address, size, stored_size (what the cloud keeps\n"
    "of it: less than size once it is stored compressed, which for a file\n"
    "over 1 MiB happens shortly after), mime, expires_at, blob.\n"
    "Exit status as for nimbus-agent --help.\n";

const char cli_usage_fetch[] =
    "Usage: nimbus-agent fetch [--thumbnail] TOKEN | OWNER/NAME [OUT]\n"
    "\n"
    "Gets a share and downloads its file into OUT (a file, or a directory\n"
    "to put it in under the share's name; default: the share's name here),\n"
    "by way of a part file that is renamed only once its SHA-256 matches;\n"
    "an interrupted fetch resumes. With --thumbnail it downloads the\n"
    "share's thumbnail instead: a JPEG, 256 px on the long side, which the\n"
    "cloud makes of a shared picture (default OUT: NAME.thumb.jpg); a share\n"
    "that has none (not a picture) is exit status 1. On a pipe (or --json)\n"
    "prints one JSON object: token, name, owner, size, mime, blob,\n"
    "thumbnail (when there is one), path.\n"
    "Exit status as for nimbus-agent --help (1: no such share for this\n"
    "terminal, also when it expired, was revoked or used up).\n";

const char cli_usage_shares[] =
    "Usage: nimbus-agent shares [--json]\n"
    "\n"
    "Lists this terminal's own live shares, then those other terminals\n"
    "addressed to it. On a pipe (or --json) one JSON object per share.\n";

const char cli_usage_unshare[] =
    "Usage: nimbus-agent unshare TOKEN...\n"
    "\n"
    "Revokes own shares: fetching them, and reading their files through\n"
    "them, ends at once.\n";

const char cli_usage_listen[] =
    "Usage: nimbus-agent listen [--count N] [--accept | --refuse]\n"
    "                           [--install-dir DIR] [--key nimbus.pub]\n"
    "\n"
    "Prints notices (a new share for this terminal: kind share.new) as they\n"
    "arrive, also those that came while it was away, one line each on a\n"
    "terminal, one JSON object per line on a pipe, until Ctrl-C or, with\n"
    "--count, N notices.\n"
    "\n"
    "An offer of a new agent (kind agent.offer) is answered: on a terminal\n"
    "it asks \"Install nimbus-agent V (size)? [y/N]\"; on a pipe it prints\n"
    "the notice and answers nothing, unless --accept or --refuse answers\n"
    "every offer (then one more JSON line: offer, answer, and what was\n"
    "installed). An accepted offer is installed as `nimbus-agent update`\n"
    "installs (same checks, --install-dir, --key, --allow-downgrade, exit\n"
    "statuses 10-14); a refused one comes again after the cloud's\n"
    "reoffer interval.\n";

/* ---- Helpers ------------------------------------------------------------- */

static bool sh_table(const cli_cfg *cfg) {
  return !cfg->json && isatty(STDOUT_FILENO);
}

/* --expires: a number and a unit into ms; -1 when malformed. */
static int64_t sh_duration(const char *s) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || v <= 0)
    return -1;
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(end, units[i].unit) == 0)
      return v > INT64_MAX / units[i].ms ? -1 : v * units[i].ms;
  return -1;
}

/* The str of `o` as a new C string ("" when absent). */
static char *sh_str(const msgpack_object *o) {
  if (o == NULL || o->type != MSGPACK_OBJECT_STR)
    return strdup("");
  return strndup(o->via.str.ptr, o->via.str.size);
}

static void sh_date(int64_t ms, char *buf, size_t cap) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  snprintf(buf, cap, "?");
  if (localtime_r(&t, &tm) != NULL)
    strftime(buf, cap, "%Y-%m-%d %H:%M", &tm);
}

/* The options of the library's share calls: --timeout, Ctrl-C. */
static nimbus_share_call sh_opts(const cli_cfg *cfg) {
  nimbus_share_call c = {.timeout_ms = (int)cfg->timeout, .stop = bk_stopped};
  return c;
}

/* The exit status of a share call that returned rc with reply r, after
 * saying what went wrong. */
static int sh_status(nimbus_agent *a, const char *type, int rc,
                     const nimbus_reply *r) {
  if (r == NULL)
    return rc == 0 ? CLI_OK : cli_call_failed(a, type, rc);
  if (!bk_reply_ok(r))
    return cli_cloud_error(r);
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: %s answered no result\n", type);
    return CLI_CLOUD_ERROR;
  }
  return CLI_OK;
}

/* ---- Transfers: one blob through the engine ------------------------------ */

typedef struct sh_xfer {
  bk_progress prog; /* first: the engine's progress goes to bk_progress_bytes */
  int err, code;
  char error[512];
  char blob[65];
  int64_t size;
  bool done;
} sh_xfer;

static void sh_on_done(void *ctx, const nimbus_blob_result *r) {
  sh_xfer *x = ctx;
  x->done = true;
  x->err = r->err;
  x->code = r->code;
  nb_strlcpy(x->blob, r->blob, sizeof x->blob);
  x->size = r->size;
  nb_strlcpy(x->error, r->error != NULL ? r->error : "", sizeof x->error);
  if (r->err == 0)
    x->prog.files_done = 1;
}

/* The exit status of a transfer that ended with x->err. */
static int sh_xfer_status(sh_xfer *x, int run_rc, const char *what) {
  int err = x->err != 0 ? x->err : run_rc;
  if (err == 0)
    return CLI_OK;
  bk_progress_clear(&x->prog);
  if (err == NIMBUS_ECANCELED)
    return bk_signal_status();
  fprintf(stderr, "nimbus-agent: %s: %s\n", what,
          x->error[0] != '\0' ? x->error : nimbus_strerror(err));
  return err == NIMBUS_ETIMEDOUT   ? CLI_TIMEOUT
         : err == NIMBUS_EREFUSED  ? CLI_CONNECT
         : err == NIMBUS_ENOTFOUND ? CLI_CLOUD_ERROR
         : x->code != 0            ? CLI_CLOUD_ERROR
                                   : CLI_USAGE;
}

/* An agent with room for the engine's jobs and a pipeline of one. */
static int sh_open(cli_cfg *cfg, nimbus_agent **a, bk_pipe *pipe,
                   nimbus_xfer **xfer) {
  int status = cli_connect(cfg, (int)cfg->jobs + 1, CLI_BULK_RESEND_MS,
                           CLI_BULK_RESEND_MAX_MS, a);
  if (status != CLI_OK)
    return status;
  if (bk_pipe_init(pipe, *a, 1, (int)cfg->timeout) != 0) {
    nimbus_agent_free(*a);
    *a = NULL;
    return cli_usage_error("cannot set up the task pipeline");
  }
  pipe->stop = bk_stopped;
  if (xfer != NULL) {
    nimbus_xfer_opts xo;
    nimbus_xfer_opts_init(&xo);
    xo.jobs = (int)cfg->jobs;
    xo.timeout_ms = (int)cfg->timeout;
    xo.stop = bk_stopped;
    if (nimbus_xfer_new(*a, &xo, xfer) != 0) {
      bk_pipe_fini(pipe);
      nimbus_agent_free(*a);
      *a = NULL;
      return cli_usage_error("cannot set up the transfer engine");
    }
  }
  return CLI_OK;
}

static void sh_close(nimbus_agent *a, bk_pipe *pipe, nimbus_xfer *xfer) {
  fflush(stdout);
  nimbus_xfer_free(xfer);
  bk_pipe_abandon(pipe);
  nimbus_agent_free(a);
  bk_pipe_fini(pipe);
}

/* ---- share -------------------------------------------------------------- */

int cli_share(cli_cfg *cfg, int argc, char **argv) {
  if (argc != 2)
    return cli_usage_error("share takes one FILE");
  const char *path = argv[1];
  const char *slash = strrchr(path, '/');
  const char *name = cfg->name[0] != '\0' ? cfg->name
                     : slash != NULL      ? slash + 1
                                          : path;
  if (name[0] == '\0')
    return cli_usage_error("FILE names a directory: give --name");
  int64_t expires = -1;
  if (cfg->expires[0] != '\0' && (expires = sh_duration(cfg->expires)) < 0)
    return cli_usage_error("--expires must be a number and a unit, such as "
                           "30m, 12h or 7d");
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
    fprintf(stderr, "nimbus-agent: %s: %s\n", path,
            errno != 0 && !S_ISDIR(st.st_mode) ? strerror(errno)
                                               : "not a regular file");
    return CLI_USAGE;
  }
  bk_catch_signals();
  nimbus_agent *a = NULL;
  nimbus_xfer *xfer = NULL;
  bk_pipe pipe;
  int status = sh_open(cfg, &a, &pipe, &xfer);
  if (status != CLI_OK)
    return status;
  sh_xfer x;
  memset(&x, 0, sizeof x);
  bk_progress_init(&x.prog, cli_progress_mode(cfg), stderr);
  bk_progress_phase(&x.prog, "upload", st.st_size, 1);
  nimbus_blob_upload_opts o;
  nimbus_blob_upload_opts_init(&o);
  o.path = path;
  o.on_done = sh_on_done;
  o.on_progress = bk_progress_bytes;
  o.ctx = &x;
  int rc = nimbus_blob_upload(xfer, &o);
  if (rc == 0)
    rc = nimbus_xfer_run(xfer);
  if ((status = sh_xfer_status(&x, rc, path)) != CLI_OK)
    goto out;
  bk_progress_finish(&x.prog);

  /* --to: the comma-separated ids, cut in place in a copy. */
  size_t nto = 0;
  char *tos = strdup(cfg->to);
  const char **to = calloc(strlen(cfg->to) / 2 + 1, sizeof *to);
  if (tos == NULL || to == NULL) {
    free(tos);
    free(to);
    status = cli_usage_error("out of memory");
    goto out;
  }
  for (char *p = tos; *p != '\0';) {
    to[nto++] = p;
    p += strcspn(p, ",");
    if (*p == ',')
      *p++ = '\0';
  }
  nimbus_share_opts so;
  nimbus_share_opts_init(&so);
  so.name = name;
  so.blob = x.blob;
  so.mime = cfg->mime[0] != '\0' ? cfg->mime : NULL;
  so.to = to;
  so.nto = nto;
  so.expires_in_ms = expires > 0 ? expires : 0;
  so.max_downloads = cfg->max_downloads;
  so.replace = cfg->replace;
  nimbus_share_call call = sh_opts(cfg);
  nimbus_share sh;
  nimbus_reply *r = NULL;
  rc = nimbus_share_create(a, &so, &call, &sh, &r);
  free(tos);
  free(to);
  status = sh_status(a, "share.create", rc, r);
  msgpack_object res;
  msgpack_zone *z = NULL;
  if (status == CLI_OK && !bk_result_map(r, &res, &z)) {
    fprintf(stderr, "nimbus-agent: share.create answered no result\n");
    status = CLI_CLOUD_ERROR;
  } else if (status == CLI_OK) {
    if (sh_table(cfg)) {
      char bytes[32], kept[64] = "", date[64];
      bk_fmt_bytes(sh.size, bytes, sizeof bytes);
      if (sh.stored_size > 0 && sh.stored_size < sh.size) {
        char sb[32];
        bk_fmt_bytes(sh.stored_size, sb, sizeof sb);
        snprintf(kept, sizeof kept, ", stored compressed in %s", sb);
      }
      sh_date(sh.expires_at, date, sizeof date);
      printf("shared %s (%s, %s%s) until %s\n  token:   %s\n  address: "
             "%s/%s\n",
             sh.name, bytes, sh.mime, kept, date, sh.token, sh.owner, sh.name);
      if (sh.thumbnail[0] != '\0')
        printf("  thumbnail: nimbus-agent fetch --thumbnail %s\n", sh.token);
    } else {
      cJSON *j = ag_json_from_msgpack(&res);
      char *addr = NULL;
      if (j != NULL && asprintf(&addr, "%s/%s", sh.owner, sh.name) >= 0) {
        cJSON_AddStringToObject(j, "address", addr);
        cJSON_AddStringToObject(j, "blob", x.blob);
      }
      free(addr);
      if (cli_print_json(j) != 0)
        status = CLI_CLOUD_ERROR;
      cJSON_Delete(j);
    }
  }
  msgpack_zone_free(z);
  nimbus_reply_free(r);
out:
  sh_close(a, &pipe, xfer);
  return status;
}

/* ---- fetch -------------------------------------------------------------- */

/* Where the file goes: the directory (opened, *dirfd) and the name in it
 * (*base, a new string). `out` may be NULL (the share's name here) or a
 * directory (the share's name in it). */
static int sh_target(const char *out, const char *sname, int *dirfd,
                     char **base) {
  struct stat st;
  char *dir = NULL;
  *dirfd = -1;
  *base = NULL;
  if (out == NULL || (stat(out, &st) == 0 && S_ISDIR(st.st_mode))) {
    /* The cloud's name becomes a file name here: only a plain one. */
    if (strcmp(sname, ".") == 0 || strcmp(sname, "..") == 0 ||
        strchr(sname, '/') != NULL || sname[0] == '\0') {
      fprintf(stderr,
              "nimbus-agent: the share is named \"%s\", which is "
              "no file name: give OUT\n",
              sname);
      return CLI_USAGE;
    }
    dir = strdup(out != NULL ? out : ".");
    *base = strdup(sname);
  } else {
    const char *slash = strrchr(out, '/');
    dir = slash == NULL  ? strdup(".")
          : slash == out ? strdup("/")
                         : strndup(out, (size_t)(slash - out));
    *base = strdup(slash != NULL ? slash + 1 : out);
  }
  if (dir == NULL || *base == NULL) {
    free(dir);
    free(*base);
    *base = NULL;
    return cli_usage_error("out of memory");
  }
  if ((*base)[0] == '\0' || strcmp(*base, ".") == 0 ||
      strcmp(*base, "..") == 0) {
    fprintf(stderr, "nimbus-agent: %s is no file name\n", out);
    free(dir);
    free(*base);
    *base = NULL;
    return CLI_USAGE;
  }
  *dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (*dirfd < 0) {
    fprintf(stderr, "nimbus-agent: %s: %s\n", dir, strerror(errno));
    free(dir);
    free(*base);
    *base = NULL;
    return CLI_USAGE;
  }
  free(dir);
  return CLI_OK;
}

int cli_fetch(cli_cfg *cfg, int argc, char **argv) {
  if (argc < 2 || argc > 3)
    return cli_usage_error("fetch takes TOKEN or OWNER/NAME, and maybe OUT");
  const char *what = argv[1], *slash = strchr(what, '/');
  char *owner = NULL;
  if (slash != NULL) {
    if (slash == what || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
      return cli_usage_error("fetch: OWNER/NAME is a terminal id, one '/', "
                             "and the share's name");
    if ((owner = strndup(what, (size_t)(slash - what))) == NULL)
      return cli_usage_error("out of memory");
  }
  bk_catch_signals();
  nimbus_agent *a = NULL;
  nimbus_xfer *xfer = NULL;
  bk_pipe pipe;
  int status = sh_open(cfg, &a, &pipe, &xfer);
  if (status != CLI_OK) {
    free(owner);
    return status;
  }
  nimbus_reply *r = NULL;
  msgpack_zone *z = NULL;
  char *sname = NULL, *blob = NULL, *base = NULL;
  int dirfd = -1;
  nimbus_share_call call = sh_opts(cfg);
  nimbus_share sh;
  int rc = nimbus_share_get(a, slash == NULL ? what : NULL, owner,
                            slash != NULL ? slash + 1 : NULL, &call, &sh, &r);
  free(owner);
  msgpack_object res;
  if ((status = sh_status(a, "share.get", rc, r)) != CLI_OK)
    goto out;
  if (!bk_result_map(r, &res, &z)) {
    fprintf(stderr, "nimbus-agent: share.get answered no result\n");
    status = CLI_CLOUD_ERROR;
    goto out;
  }
  int64_t size = sh.size;
  sname = strdup(sh.name);
  if (cfg->thumbnail) {
    /* Its size is learnt from the cloud's first answer. */
    size = -1;
    blob = strdup(sh.thumbnail);
    char *tname = NULL;
    if (blob == NULL || blob[0] == '\0' || sname == NULL ||
        asprintf(&tname, "%s.thumb.jpg", sname) < 0) {
      fprintf(stderr,
              "nimbus-agent: the share %s has no thumbnail: the cloud "
              "makes one of pictures only\n",
              what);
      status = CLI_CLOUD_ERROR;
      goto out;
    }
    free(sname);
    sname = tname;
  } else {
    blob = strdup(sh.blob);
  }
  if ((status = sh_target(argc == 3 ? argv[2] : NULL, sname, &dirfd, &base)) !=
      CLI_OK)
    goto out;
  sh_xfer x;
  memset(&x, 0, sizeof x);
  bk_progress_init(&x.prog, cli_progress_mode(cfg), stderr);
  bk_progress_phase(&x.prog, "download", size, 1);
  nimbus_blob_download_opts o;
  nimbus_blob_download_opts_init(&o);
  o.blob = blob;
  o.size = size;
  o.dirfd = dirfd;
  o.name = base;
  o.on_done = sh_on_done;
  o.on_progress = bk_progress_bytes;
  o.ctx = &x;
  rc = nimbus_blob_download(xfer, &o);
  if (rc == 0)
    rc = nimbus_xfer_run(xfer);
  if ((status = sh_xfer_status(&x, rc, sname)) != CLI_OK)
    goto out;
  bk_progress_finish(&x.prog);
  char *full = NULL;
  if (argc == 3) {
    struct stat st;
    bool dir = stat(argv[2], &st) == 0 && S_ISDIR(st.st_mode);
    size_t n = strlen(argv[2]);
    bool sep = n > 0 && argv[2][n - 1] == '/';
    if (asprintf(&full, dir ? (sep ? "%s%s" : "%s/%s") : "%s", argv[2], base) <
        0)
      full = NULL;
  } else {
    full = strdup(base);
  }
  struct stat got;
  if (size < 0 && stat(full != NULL ? full : base, &got) == 0)
    size = (int64_t)got.st_size; /* a thumbnail's, learnt on the way */
  if (sh_table(cfg)) {
    char bytes[32];
    bk_fmt_bytes(size, bytes, sizeof bytes);
    printf("fetched %s (%s) into %s\n", sname, bytes,
           full != NULL ? full : base);
  } else {
    cJSON *j = ag_json_from_msgpack(&res);
    if (j != NULL)
      cJSON_AddStringToObject(j, "path", full != NULL ? full : base);
    if (cli_print_json(j) != 0)
      status = CLI_CLOUD_ERROR;
    cJSON_Delete(j);
  }
  free(full);
out:
  if (dirfd >= 0)
    close(dirfd);
  free(base);
  free(sname);
  free(blob);
  msgpack_zone_free(z);
  nimbus_reply_free(r);
  sh_close(a, &pipe, xfer);
  return status;
}

/* ---- shares ------------------------------------------------------------- */

static void sh_row(const msgpack_object *s, bool table) {
  if (!table) {
    cJSON *j = ag_json_from_msgpack(s);
    cli_print_json(j);
    cJSON_Delete(j);
    return;
  }
  char *token = sh_str(sc_map_get(s, "token"));
  char *name = sh_str(sc_map_get(s, "name"));
  char *owner = sh_str(sc_map_get(s, "owner"));
  int64_t size = 0, exp = 0, got = -1, max = 0;
  bk_obj_int(sc_map_get(s, "size"), &size);
  bk_obj_int(sc_map_get(s, "expires_at"), &exp);
  bk_obj_int(sc_map_get(s, "downloads"), &got);
  bk_obj_int(sc_map_get(s, "max_downloads"), &max);
  char bytes[32], date[64], dl[48] = "";
  bk_fmt_bytes(size, bytes, sizeof bytes);
  sh_date(exp, date, sizeof date);
  if (got >= 0 && max > 0)
    snprintf(dl, sizeof dl, "%lld/%lld", (long long)got, (long long)max);
  else if (got >= 0)
    snprintf(dl, sizeof dl, "%lld", (long long)got);
  printf("%-24s %-16.16s %10s %-16s %9s  %s\n", token, owner, bytes, date, dl,
         name);
  free(token);
  free(name);
  free(owner);
}

int cli_shares(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("shares takes no arguments");
  bool table = sh_table(cfg);
  nimbus_agent *a = NULL;
  bk_pipe pipe;
  int status = sh_open(cfg, &a, &pipe, NULL);
  if (status != CLI_OK)
    return status;
  int64_t shown = 0;
  nimbus_share_call call = sh_opts(cfg);
  /* Own shares, then those addressed to this terminal; each row printed
   * from the result as the cloud sent it (own shares' `to` included). */
  for (int inbox = 0; inbox < 2 && status == CLI_OK; inbox++) {
    char cursor[64] = "";
    do {
      nimbus_reply *r = NULL;
      nimbus_share *page = NULL;
      size_t n = 0;
      int rc = nimbus_share_list(a, inbox == 1, NULL, cursor, 1000, &call,
                                 &page, &n, cursor, &r);
      free(page);
      msgpack_object res;
      msgpack_zone *z = NULL;
      const msgpack_object *list = NULL;
      status = sh_status(a, "share.list", rc, r);
      if (status == CLI_OK && bk_result_map(r, &res, &z))
        list = sc_map_get(&res, "shares");
      for (uint32_t i = 0; list != NULL && i < list->via.array.size; i++) {
        if (table && shown == 0)
          printf("%-24s %-16s %10s %-16s %9s  %s\n", "TOKEN", "OWNER", "SIZE",
                 "EXPIRES", "FETCHED", "NAME");
        sh_row(&list->via.array.ptr[i], table);
        shown++;
      }
      msgpack_zone_free(z);
      nimbus_reply_free(r);
    } while (status == CLI_OK && cursor[0] != '\0');
  }
  if (status == CLI_OK && table && shown == 0)
    printf("no shares\n");
  sh_close(a, &pipe, NULL);
  return status;
}

/* ---- unshare ------------------------------------------------------------ */

int cli_unshare(cli_cfg *cfg, int argc, char **argv) {
  if (argc < 2)
    return cli_usage_error("unshare wants at least one TOKEN (see "
                           "nimbus-agent shares)");
  bool table = sh_table(cfg);
  nimbus_agent *a = NULL;
  bk_pipe pipe;
  int status = sh_open(cfg, &a, &pipe, NULL);
  if (status != CLI_OK)
    return status;
  nimbus_share_call call = sh_opts(cfg);
  for (int i = 1; i < argc; i++) {
    nimbus_reply *r = NULL;
    int rc = nimbus_share_revoke(a, argv[i], &call, &r);
    if (r == NULL) {
      status = sh_status(a, "share.revoke", rc, r);
      break; /* the link, not the share: the rest would fail alike */
    }
    if (!bk_reply_ok(r)) {
      fprintf(stderr, "nimbus-agent: share %s: ", argv[i]);
      status = cli_cloud_error(r);
    } else if (table) {
      printf("unshared %s\n", argv[i]);
    } else {
      cJSON *j = cJSON_CreateObject();
      if (j != NULL && cJSON_AddStringToObject(j, "token", argv[i]) &&
          cJSON_AddTrueToObject(j, "revoked"))
        (void)cli_print_json(j);
      cJSON_Delete(j);
    }
    nimbus_reply_free(r);
  }
  sh_close(a, &pipe, NULL);
  return status;
}

/* ---- listen ------------------------------------------------------------- */

typedef struct sh_listen {
  bool table;
  atomic_llong seen;
} sh_listen;

/* On the agent's thread; stdout is only written here while it runs. */
static void sh_on_notice(void *ctx, const char *kind, const uint8_t *notice,
                         size_t len) {
  sh_listen *l = ctx;
  cJSON *j = NULL;
  if (ag_json_from_packed(notice, len, &j) != 0 || j == NULL)
    return;
  if (l->table && strcmp(kind, "share.new") == 0) {
    const cJSON *owner = cJSON_GetObjectItem(j, "owner");
    const cJSON *name = cJSON_GetObjectItem(j, "name");
    const cJSON *token = cJSON_GetObjectItem(j, "token");
    const cJSON *size = cJSON_GetObjectItem(j, "size");
    char bytes[32];
    bk_fmt_bytes(cJSON_IsNumber(size) ? (int64_t)size->valuedouble : 0, bytes,
                 sizeof bytes);
    printf("%s shares %s (%s): nimbus-agent fetch %s\n",
           cJSON_IsString(owner) ? owner->valuestring : "?",
           cJSON_IsString(name) ? name->valuestring : "?", bytes,
           cJSON_IsString(token) ? token->valuestring : "?");
    fflush(stdout);
  } else if (l->table) {
    printf("notice %s\n", kind);
    fflush(stdout);
  } else {
    (void)cli_print_json(j);
  }
  cJSON_Delete(j);
  atomic_fetch_add(&l->seen, 1);
}

int cli_listen(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("listen takes no arguments");
  sh_listen l = {.table = sh_table(cfg)};
  atomic_init(&l.seen, 0);
  cli_offers *offers = NULL;
  int status = cli_offers_new(cfg, l.table, &l.seen, &offers);
  if (status != CLI_OK)
    return status;
  bk_catch_signals();
  nimbus_agent *a = NULL;
  status = cli_connect_listen(cfg, (int)cfg->jobs + 2, sh_on_notice, &l,
                              cli_offers_cb, offers, &a);
  if (status != CLI_OK) {
    cli_offers_free(offers);
    return status;
  }
  while (!bk_interrupted &&
         (cfg->count == 0 || atomic_load(&l.seen) < cfg->count)) {
    int st = cli_offers_step(offers, a);
    if (status == CLI_OK)
      status = st;
    if (cfg->count == 0 || atomic_load(&l.seen) < cfg->count)
      bk_sleep_ms(100);
  }
  nimbus_agent_free(a);
  cli_offers_free(offers);
  fflush(stdout);
  return bk_interrupted ? bk_signal_status() : status;
}
