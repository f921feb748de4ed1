/* nimbus-agent: the command line on top of libnimbus-agent. One process
 * connects as a terminal, hands one task to the cloud, waits for its final
 * reply and prints it: `ping` for a person (or --json), `call` for any task
 * type with JSON arguments, printing the reply as one JSON object for
 * scripts; `backup`, `backups` and `restore` (cli_backup.c, cli_restore.c)
 * keep many tasks going; `share` and its kin (cli_share.c) share files;
 * `image` (cli_offload.c) hands a picture's processing to the cloud.
 * Options come from the one config table (nb_config.h): flags,
 * NIMBUS_<NAME> environment variables, an optional INI file. The exit
 * status says how it went (see cli_usage). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ag_json.h"
#include "cli.h"
#include "nb_config.h"
#include "nb_util.h"
#include "nimbus/agent.h"
#include "sc.h"

#define CLI_OPT(name, type, def, help, lo, hi)                                 \
  { #name, type, def, help, offsetof(cli_cfg, name), lo, hi, NULL }

static const nb_opt cli_table[] = {
    CLI_OPT(mqtt_host, NB_OPT_STR, "127.0.0.1",
            "the broker's host name or address (also --host)", 0, 0),
    CLI_OPT(mqtt_port, NB_OPT_INT, "1883", "the broker's port (also --port)", 1,
            65535),
    CLI_OPT(terminal, NB_OPT_STR, NULL,
            "terminal id, the MQTT user name (required)", 0, 0),
    CLI_OPT(password, NB_OPT_STR, NULL, "the terminal's password (required)", 0,
            0),
    CLI_OPT(state_dir, NB_OPT_STR, NULL,
            "directory of the agent's state: the device id, backup's hash "
            "cache, and the session slots that let commands run side by side "
            "(default $HOME/.nimbus)",
            0, 0),
    CLI_OPT(prefix, NB_OPT_STR, "cloud/v1", "topic prefix", 0, 0),
    CLI_OPT(timeout, NB_OPT_INT, "10000",
            "milliseconds to wait for the connection and the final reply, "
            "together (backup, backups, restore: for the connection, and "
            "then for any reply while tasks are in flight)",
            1, 86400000),
    CLI_OPT(json, NB_OPT_BOOL, "false",
            "ping: print the result map as JSON; backup, backups, restore: "
            "JSON on stdout also on a terminal",
            0, 0),
    CLI_OPT(progress, NB_OPT_BOOL, "false",
            "call: print progress replies as JSON lines on stderr; backup, "
            "restore: progress as JSON lines on stderr when it is not a "
            "terminal",
            0, 0),
    CLI_OPT(data_file, NB_OPT_STR, NULL,
            "call: send this file's bytes as the task's inline data "
            "(- reads stdin; at most 256 KiB fit)",
            0, 0),
    CLI_OPT(id, NB_OPT_STR, NULL,
            "call, image: the task id, 16-64 of [A-Za-z0-9_-] (default: "
            "random); the same id again is the same task",
            0, 0),
    CLI_OPT(label, NB_OPT_STR, NULL,
            "backup: a label for the snapshot (at most 255 bytes)", 0, 0),
    CLI_OPT(jobs, NB_OPT_INT, "16",
            "backup, restore, share, fetch: tasks in flight at once "
            "(segments of 256 KiB moving)",
            1, 64),
    CLI_OPT(limit, NB_OPT_INT, "0",
            "backups: list at most this many snapshots (0: all)", 0,
            1000000000),
    CLI_OPT(snapshot, NB_OPT_STR, NULL,
            "restore: the snapshot to restore (default: the latest)", 0, 0),
    CLI_OPT(name, NB_OPT_STR, NULL,
            "share: the name others fetch it by (default: the file's name)", 0,
            0),
    CLI_OPT(to, NB_OPT_STR, NULL,
            "share: only these terminals may fetch it, comma-separated ids "
            "(they get a notice); default: anyone with the token or name",
            0, 0),
    CLI_OPT(expires, NB_OPT_STR, NULL,
            "share: how long it lasts: a number and a unit, ms s m h d "
            "(e.g. 7d; default: the cloud's longest, 365 days)",
            0, 0),
    CLI_OPT(max_downloads, NB_OPT_INT, "0",
            "share: at most this many terminals may fetch it (0: no limit)", 0,
            1000000000),
    CLI_OPT(mime, NB_OPT_STR, NULL,
            "share: its MIME type, e.g. image/jpeg (default: the cloud "
            "reads it from the file's first bytes)",
            0, 0),
    CLI_OPT(replace, NB_OPT_BOOL, "false",
            "share: replace the share of the same name", 0, 0),
    CLI_OPT(thumbnail, NB_OPT_BOOL, "false",
            "fetch: the share's thumbnail (a JPEG, 256 px on the long side, "
            "of a shared picture) instead of its file",
            0, 0),
    CLI_OPT(count, NB_OPT_INT, "0",
            "listen: exit after this many notices (0: until Ctrl-C)", 0,
            1000000000),
    CLI_OPT(format, NB_OPT_STR, NULL,
            "image: the output's format, jpeg, png or webp (default: by "
            "OUT's extension, else the input's)",
            0, 0),
    CLI_OPT(quality, NB_OPT_STR, NULL,
            "image: the output's quality, 1-100 for jpeg and webp (default: "
            "the cloud's, 85)",
            0, 0),
    CLI_OPT(blob, NB_OPT_STR, NULL,
            "image: process this blob the cloud already holds for the "
            "terminal (its SHA-256 hex) instead of uploading IN",
            0, 0),
    CLI_OPT(from_backup, NB_OPT_STR, NULL,
            "image: process the item of this name in the latest snapshot "
            "(or --snapshot) instead of uploading IN",
            0, 0),
    CLI_OPT(install_dir, NB_OPT_STR, NULL,
            "version, update, listen: the agent's install directory "
            "(versions/, current, previous; default: the one this binary "
            "runs from)",
            0, 0),
    CLI_OPT(key, NB_OPT_STR, NULL,
            "update, listen: the public key file packages are checked "
            "against (default: nimbus.pub in the install directory, else "
            "the key compiled in)",
            0, 0),
    CLI_OPT(check, NB_OPT_BOOL, "false",
            "update: only say whether an update is available", 0, 0),
    CLI_OPT(allow_downgrade, NB_OPT_BOOL, "false",
            "update, listen: install a package that is not newer than the "
            "running agent",
            0, 0),
    CLI_OPT(rollback, NB_OPT_BOOL, "false",
            "update: make the previous version current again", 0, 0),
    CLI_OPT(accept, NB_OPT_BOOL, "false",
            "listen: accept every offer of the agent and install it", 0, 0),
    CLI_OPT(refuse, NB_OPT_BOOL, "false",
            "listen: refuse every offer of the agent (it comes again later)", 0,
            0),
    {NULL, NB_OPT_STR, NULL, NULL, 0, 0, 0, NULL},
};

/* Short flags for the connection, as in the rest of the project's tools. */
static const struct {
  const char *alias, *name;
} cli_aliases[] = {{"host", "mqtt-host"}, {"port", "mqtt-port"}};

static const char cli_usage[] =
    "Usage: nimbus-agent [OPTIONS] VERB [ARGS]\n"
    "\n"
    "Hands tasks to a Nimbus cloud over MQTT, as terminal --terminal.\n"
    "\n"
    "Verbs:\n"
    "  ping                   ask the cloud for a pong: which worker\n"
    "                         answered, how fast, which task types and\n"
    "                         protocol versions it serves\n"
    "  call TYPE [JSON-ARGS]  send any task and print its final reply as\n"
    "                         JSON\n"
    "  backup [--label L] PATH...\n"
    "                         back files and directories up into a new\n"
    "                         snapshot: only what the cloud lacks is sent,\n"
    "                         and an interrupted run resumes\n"
    "  backups [--limit N]    list this terminal's snapshots, newest first\n"
    "  forget SNAPSHOT...     delete snapshots (what nothing else refers to\n"
    "                         is collected by the cloud later)\n"
    "  restore [--snapshot S] DIR\n"
    "                         restore a snapshot (default: the latest) into\n"
    "                         DIR; an interrupted run resumes\n"
    "  share FILE             share a file: prints its token and its\n"
    "                         owner/name address (--to, --expires,\n"
    "                         --max-downloads, --mime, --replace)\n"
    "  fetch [--thumbnail] TOKEN|OWNER/NAME [OUT]\n"
    "                         download a shared file, verified\n"
    "  shares                 list own shares and those meant for this\n"
    "                         terminal\n"
    "  unshare TOKEN...       revoke own shares\n"
    "  listen [--count N] [--accept|--refuse]\n"
    "                         print notices (new shares) as they arrive;\n"
    "                         answer offers of a new agent\n"
    "  image IN OUT --op OP...\n"
    "                         have the cloud process a picture (blur,\n"
    "                         resize, thumbnail, crop, rotate, ...) and\n"
    "                         write the result to OUT; --blob HASH or\n"
    "                         --from-backup NAME instead of IN\n"
    "  audio IN OUT --op OP...\n"
    "                         the same for a sound (normalize, gain, trim,\n"
    "                         fade, mono, resample, loudness)\n"
    "  doc IN OUT --op OP...\n"
    "                         the same for a document (compress, to_utf8,\n"
    "                         markdown_to_html, pdf_thumbnail, ...)\n"
    "  version                the agent's version and platform\n"
    "  update [--check] [--allow-downgrade] [--rollback]\n"
    "                         install the newest agent from the cloud,\n"
    "                         checked and signed, or go back to the\n"
    "                         previous one\n"
    "  help [VERB]            this text, or a verb's (also VERB --help)\n"
    "\n"
    "Exit status:\n"
    "  0  ok\n"
    "  1  the cloud answered with an error (printed on stderr)\n"
    "  2  usage error, or a local problem (file, state directory; backup\n"
    "     and restore: some files could not be read or written)\n"
    "  3  cannot connect: no broker, credentials or client id refused,\n"
    "     subscription refused, or the broker refused the task\n"
    "  4  timed out waiting for the final reply (backup, restore: no reply\n"
    "     at all for --timeout ms; run again to resume)\n"
    "  5  image, audio, doc: not found (no such IN, blob or backup item)\n"
    "  6  image, audio, doc: too large for the cloud's limits (413)\n"
    "  7  image, audio, doc: unsupported format (415)\n"
    "  8  image, audio, doc: corrupt or truncated input (422)\n"
    "  9  image, audio, doc: the cloud cannot serve it: module not installed, "
    "or\n"
    "     unavailable now (503)\n"
    "  10-14  update, listen: a package refused by a check (size, sha256,\n"
    "     signature, archive, version; nimbus-agent update --help)\n"
    "  130  backup, restore, image: stopped by Ctrl-C (128 + the signal;\n"
    "     run again to resume)\n"
    "\n"
    "--host and --port are short for --mqtt-host and --mqtt-port.\n"
    "--print-config prints the options in effect (from the defaults,\n"
    "--config FILE, the environment and the flags) as a config file\n"
    "would set them, the password masked, and exits.\n";

static const char cli_usage_ping[] =
    "Usage: nimbus-agent ping [--json] [OPTIONS]\n"
    "\n"
    "Sends one `ping` task and prints, on success,\n"
    "  pong from <worker> in <ms> ms (types: <type>, ..., versions: 1)\n"
    "where <ms> is the whole round trip of the task (connecting not\n"
    "counted). With --json prints the reply's result map as one JSON\n"
    "object instead (worker, ts, versions, types, limits).\n"
    "Exit status as for nimbus-agent --help.\n";

static const char cli_usage_call[] =
    "Usage: nimbus-agent call TYPE [JSON-ARGS] [--data-file FILE] [--id ID]\n"
    "                         [--progress] [OPTIONS]\n"
    "\n"
    "Sends one task of TYPE (e.g. blob.status) with JSON-ARGS, one JSON\n"
    "object, as its args, and prints the final reply as one JSON object on\n"
    "stdout:\n"
    "  {\"id\": ..., \"status\": \"ok\" or \"error\", \"code\": N,\n"
    "   \"error\": ..., \"help\": ..., \"result\": {...},\n"
    "   \"data_size\": N, \"data_b64\": \"...\"}\n"
    "Keys the reply does not have are left out. Inline data comes whole,\n"
    "base64 (RFC 4648) in data_b64, with its byte count in data_size; bin\n"
    "values inside result come as base64 strings too.\n"
    "\n"
    "JSON to msgpack: whole numbers below 2^53 in magnitude become ints,\n"
    "other numbers float64; strings, true/false, null, arrays and objects\n"
    "map to their msgpack kinds; a key twice in one object is refused.\n"
    "\n"
    "On an error reply it also prints `error <code>: <message>` and, when\n"
    "the cloud gave one, `help: <text>` on stderr, and exits 1. With\n"
    "--progress each progress reply is one JSON line on stderr (id,\n"
    "status, code, done, total).\n"
    "\n"
    "Example: nimbus-agent call blob.has '{\"blobs\": []}'\n"
    "Exit status as for nimbus-agent --help.\n";

typedef struct cli_verb {
  const char *name;
  const char *usage;
  int (*run)(cli_cfg *cfg, int argc, char **argv);
} cli_verb;

static int cli_ping(cli_cfg *cfg, int argc, char **argv);
static int cli_call(cli_cfg *cfg, int argc, char **argv);

static const cli_verb cli_verbs[] = {
    {"ping", cli_usage_ping, cli_ping},
    {"call", cli_usage_call, cli_call},
    {"backup", cli_usage_backup, cli_backup},
    {"backups", cli_usage_backups, cli_backups},
    {"forget", cli_usage_forget, cli_forget},
    {"restore", cli_usage_restore, cli_restore},
    {"share", cli_usage_share, cli_share},
    {"fetch", cli_usage_fetch, cli_fetch},
    {"shares", cli_usage_shares, cli_shares},
    {"unshare", cli_usage_unshare, cli_unshare},
    {"listen", cli_usage_listen, cli_listen},
    /* One front end for every offload family (cli_offload.c). */
    {"version", cli_usage_version, cli_version},
    {"update", cli_usage_update, cli_update},
    {"image", cli_usage_image, cli_offload},
    {"audio", cli_usage_audio, cli_offload},
    {"doc", cli_usage_doc, cli_offload},
};

static const cli_verb *cli_verb_find(const char *name) {
  for (size_t i = 0; i < sizeof cli_verbs / sizeof cli_verbs[0]; i++)
    if (strcmp(cli_verbs[i].name, name) == 0)
      return &cli_verbs[i];
  return NULL;
}

static void cli_help(const cli_verb *v, FILE *fp) {
  nb_config_print_help(cli_table, v != NULL ? v->usage : cli_usage, fp);
}

int cli_usage_error(const char *what) {
  fprintf(stderr, "nimbus-agent: %s\n(nimbus-agent --help tells more)\n", what);
  return CLI_USAGE;
}

static double cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- One task, start to end -------------------------------------------- */

typedef struct cli_task {
  const char *type;
  const uint8_t *args;
  size_t args_len;
  const uint8_t *data;
  size_t data_len;
  bool has_data;
  const char *id;
  bool progress;
  /* Out. */
  nimbus_reply *reply;
  double rtt_ms;
} cli_task;

static void cli_on_progress(void *ctx, nimbus_task *t, const nimbus_reply *r) {
  (void)ctx;
  (void)t;
  cJSON *j = ag_json_from_reply(r);
  char *s = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
  if (s != NULL) {
    fprintf(stderr, "%s\n", s);
    fflush(stderr);
  }
  free(s);
  cJSON_Delete(j);
}

static int cli_connect_cb(const cli_cfg *cfg, int max_inflight, int resend_ms,
                          int resend_max_ms, nimbus_notice_cb cb, void *ctx,
                          nimbus_offer_cb ocb, void *octx, nimbus_agent **out);

int cli_connect(const cli_cfg *cfg, int max_inflight, int resend_ms,
                int resend_max_ms, nimbus_agent **out) {
  return cli_connect_cb(cfg, max_inflight, resend_ms, resend_max_ms, NULL, NULL,
                        NULL, NULL, out);
}

int cli_connect_notices(const cli_cfg *cfg, int max_inflight,
                        nimbus_notice_cb cb, void *ctx, nimbus_agent **out) {
  return cli_connect_cb(cfg, max_inflight, 0, 0, cb, ctx, NULL, NULL, out);
}

int cli_connect_listen(const cli_cfg *cfg, int max_inflight,
                       nimbus_notice_cb cb, void *ctx, nimbus_offer_cb ocb,
                       void *octx, nimbus_agent **out) {
  return cli_connect_cb(cfg, max_inflight, CLI_BULK_RESEND_MS,
                        CLI_BULK_RESEND_MAX_MS, cb, ctx, ocb, octx, out);
}

static int cli_connect_cb(const cli_cfg *cfg, int max_inflight, int resend_ms,
                          int resend_max_ms, nimbus_notice_cb cb, void *ctx,
                          nimbus_offer_cb ocb, void *octx, nimbus_agent **out) {
  nimbus_agent *a = NULL;
  char uri[300], err[256];

  /* nb_config gives "" for a string option that was not set. */
  if (cfg->terminal[0] == '\0')
    return cli_usage_error("no terminal id: give --terminal or set "
                           "NIMBUS_TERMINAL");
  if (cfg->password[0] == '\0')
    return cli_usage_error("no password: give --password or set "
                           "NIMBUS_PASSWORD");
  /* An IPv6 address goes in brackets. */
  snprintf(uri, sizeof uri,
           strchr(cfg->mqtt_host, ':') != NULL ? "tcp://[%s]:%d"
                                               : "tcp://%s:%d",
           cfg->mqtt_host, (int)cfg->mqtt_port);

  nimbus_agent_opts o;
  nimbus_agent_opts_init(&o);
  o.uri = uri;
  o.terminal = cfg->terminal;
  o.password = cfg->password;
  o.state_dir = cfg->state_dir[0] != '\0' ? cfg->state_dir : NULL;
  o.prefix = cfg->prefix;
  o.max_inflight = max_inflight;
  o.resend_ms = resend_ms;
  o.resend_max_ms = resend_max_ms;
  int rc = nimbus_agent_new_err(&o, &a, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: %s: %s\n", nimbus_strerror(rc), err);
    return CLI_USAGE;
  }
  if (cb != NULL)
    nimbus_agent_on_notice(a, cb, ctx);
  if (ocb != NULL)
    nimbus_agent_on_offer(a, ocb, octx);
  /* No broker there yet (it is starting, or restarting): the library
   * tries again with backoff for as long as --timeout allows. A refusal
   * (credentials, ACL) is final at once. */
  rc = nimbus_agent_connect(a, cfg->timeout);
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: cannot connect to %s as %s: %s (%s)\n", uri,
            nimbus_agent_client_id(a), nimbus_strerror(rc),
            nimbus_agent_errstr(a));
    nimbus_agent_free(a);
    return CLI_CONNECT;
  }
  *out = a;
  return CLI_OK;
}

/* Connects, submits, waits. Returns an exit status; on CLI_OK the final
 * reply (ok or error) is in ct->reply. */
static int cli_run_task(const cli_cfg *cfg, cli_task *ct) {
  int status = CLI_OK;
  nimbus_agent *a = NULL;
  nimbus_task *t = NULL;
  double start = cli_now_ms();

  /* One task: max_inflight 1 is plenty. Re-sent after 4 s without a
   * reply (doubling to 30 s), not the library's 30 s: a command waits for
   * its answer, and a task that reached the broker while no worker was
   * subscribed (the workers reconnecting) is lost until it is sent again;
   * sending it again is harmless (same id). */
  if ((status = cli_connect(cfg, 1, CLI_BULK_RESEND_MS, CLI_BULK_RESEND_MAX_MS,
                            &a)) != CLI_OK)
    return status;

  nimbus_submit_opts so = {0};
  so.id = ct->id;
  so.on_progress = ct->progress ? cli_on_progress : NULL;
  double t0 = cli_now_ms();
  int rc = nimbus_submit(a, ct->type, ct->args, ct->args_len, ct->data,
                         ct->data_len, ct->has_data, &so, 0, &t);
  if (rc != 0) {
    fprintf(stderr, "nimbus-agent: cannot send the task: %s\n",
            nimbus_strerror(rc));
    status = CLI_USAGE;
    goto out;
  }
  double left = (double)cfg->timeout - (t0 - start);
  rc = nimbus_task_wait(t, left > 0 ? (int)left : 0, &ct->reply);
  ct->rtt_ms = cli_now_ms() - t0;
  if (rc == NIMBUS_ETIMEDOUT) {
    fprintf(stderr, "nimbus-agent: no final reply to task %s within %lld ms\n",
            nimbus_task_id(t), (long long)cfg->timeout);
    status = CLI_TIMEOUT;
  } else if (rc == NIMBUS_EREFUSED) {
    fprintf(stderr, "nimbus-agent: %s\n", nimbus_agent_errstr(a));
    status = CLI_CONNECT;
  } else if (rc != 0) {
    fprintf(stderr, "nimbus-agent: waiting for task %s: %s\n",
            nimbus_task_id(t), nimbus_strerror(rc));
    status = CLI_CONNECT;
  }

out:
  nimbus_task_release(t);
  nimbus_agent_free(a);
  return status;
}

int cli_cloud_error(const nimbus_reply *r) {
  fprintf(stderr, "error %d: %s\n", r->code,
          r->error != NULL ? r->error : "(no message)");
  if (r->help != NULL)
    fprintf(stderr, "help: %s\n", r->help);
  return CLI_CLOUD_ERROR;
}

int cli_call_failed(nimbus_agent *a, const char *what, int rc) {
  fprintf(stderr, "nimbus-agent: %s: %s\n", what,
          rc == NIMBUS_EREFUSED ? nimbus_agent_errstr(a) : nimbus_strerror(rc));
  return rc == NIMBUS_ETIMEDOUT  ? CLI_TIMEOUT
         : rc == NIMBUS_EREFUSED ? CLI_CONNECT
                                 : CLI_USAGE;
}

int cli_progress_mode(const cli_cfg *cfg) {
  return isatty(STDERR_FILENO) ? 1 : cfg->progress ? 2 : 0;
}

int cli_print_json(cJSON *j) {
  char *s = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
  if (s == NULL) {
    fprintf(stderr, "nimbus-agent: cannot print the reply as JSON\n");
    return -1;
  }
  printf("%s\n", s);
  fflush(stdout);
  free(s);
  return 0;
}

/* ---- ping -------------------------------------------------------------- */

/* Appends the array's items, strings or ints, joined by ", ". */
static void cli_join(const msgpack_object *arr, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
    return;
  for (uint32_t i = 0; i < arr->via.array.size && n < cap; i++) {
    const msgpack_object *e = &arr->via.array.ptr[i];
    const char *sep = i > 0 ? ", " : "";
    int w = 0;
    if (e->type == MSGPACK_OBJECT_STR)
      w = snprintf(out + n, cap - n, "%s%.*s", sep, (int)e->via.str.size,
                   e->via.str.ptr);
    else if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      w = snprintf(out + n, cap - n, "%s%llu", sep,
                   (unsigned long long)e->via.u64);
    if (w > 0)
      n += (size_t)w;
  }
}

static int cli_ping(cli_cfg *cfg, int argc, char **argv) {
  (void)argv;
  if (argc > 1)
    return cli_usage_error("ping takes no arguments");
  cli_task ct = {.type = "ping"};
  int status = cli_run_task(cfg, &ct);
  if (status != CLI_OK)
    return status;
  nimbus_reply *r = ct.reply;
  if (strcmp(r->status, "ok") != 0) {
    status = cli_cloud_error(r);
    goto out;
  }
  msgpack_object res;
  msgpack_zone *zone = NULL;
  char err[128];
  if (r->result == NULL ||
      sc_value_decode(r->result, r->result_len, &res, &zone, err, sizeof err) !=
          0 ||
      res.type != MSGPACK_OBJECT_MAP) {
    fprintf(stderr, "nimbus-agent: the pong has no result map\n");
    status = CLI_CLOUD_ERROR;
    goto out;
  }
  if (cfg->json) {
    cJSON *j = ag_json_from_msgpack(&res);
    if (cli_print_json(j) != 0)
      status = CLI_CLOUD_ERROR;
    cJSON_Delete(j);
  } else {
    const msgpack_object *w = sc_map_get(&res, "worker");
    char types[2048], versions[128];
    cli_join(sc_map_get(&res, "types"), types, sizeof types);
    cli_join(sc_map_get(&res, "versions"), versions, sizeof versions);
    printf("pong from %.*s in %.2f ms (types: %s, versions: %s)\n",
           w != NULL && w->type == MSGPACK_OBJECT_STR ? (int)w->via.str.size
                                                      : 1,
           w != NULL && w->type == MSGPACK_OBJECT_STR ? w->via.str.ptr : "?",
           ct.rtt_ms, types, versions);
  }
  msgpack_zone_free(zone);
out:
  nimbus_reply_free(r);
  return status;
}

/* ---- call -------------------------------------------------------------- */

/* Reads FILE (or stdin for "-") whole, refusing more than a task holds. */
static int cli_read_file(const char *path, uint8_t **out, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "nimbus-agent: cannot open %s: %s\n", path,
            strerror(errno));
    return CLI_USAGE;
  }
  size_t cap = SC_MAX_TASK + 1, n = 0;
  uint8_t *buf = malloc(cap);
  int status = CLI_OK;
  if (buf == NULL) {
    fprintf(stderr, "nimbus-agent: out of memory\n");
    status = CLI_USAGE;
    goto out;
  }
  while (n < cap) {
    size_t r = fread(buf + n, 1, cap - n, f);
    if (r == 0)
      break;
    n += r;
  }
  if (ferror(f)) {
    fprintf(stderr, "nimbus-agent: cannot read %s\n", path);
    status = CLI_USAGE;
  } else if (n > SC_MAX_TASK) {
    /* The library refuses a task over SC_MAX_TASK with its envelope too;
     * this only spares reading a huge file whole. */
    fprintf(stderr,
            "nimbus-agent: %s is larger than a task may be (%d bytes); "
            "upload it as a blob\n",
            path, SC_MAX_TASK);
    status = CLI_USAGE;
  }
out:
  if (f != stdin)
    fclose(f);
  if (status != CLI_OK) {
    free(buf);
    return status;
  }
  *out = buf;
  *len = n;
  return CLI_OK;
}

static int cli_call(cli_cfg *cfg, int argc, char **argv) {
  int status = CLI_OK;
  uint8_t *data = NULL;
  size_t data_len = 0;
  msgpack_sbuffer args;
  msgpack_sbuffer_init(&args);
  char err[256];

  if (argc < 2)
    return cli_usage_error("call needs a task TYPE");
  if (argc > 3)
    return cli_usage_error("call takes TYPE and at most one JSON-ARGS");
  /* nb_config gives "" for a string option that was not set. */
  if (cfg->id[0] != '\0' &&
      !nb_valid_token(cfg->id, strlen(cfg->id), SC_ID_MIN, SC_ID_MAX))
    return cli_usage_error("--id must be 16-64 characters of "
                           "[A-Za-z0-9_-]");
  if (!nb_valid_terminal(argv[1], strlen(argv[1])))
    return cli_usage_error("TYPE must be 1-64 characters of "
                           "[A-Za-z0-9._-], like blob.status");
  if (argc == 3 && ag_json_args_pack(argv[2], &args, err, sizeof err) != 0) {
    status = cli_usage_error(err);
    goto out;
  }
  if (cfg->data_file[0] != '\0' &&
      (status = cli_read_file(cfg->data_file, &data, &data_len)) != CLI_OK)
    goto out;

  cli_task ct = {
      .type = argv[1],
      .args = args.size > 0 ? (const uint8_t *)args.data : NULL,
      .args_len = args.size,
      .data = data,
      .data_len = data_len,
      .has_data = data != NULL,
      .id = cfg->id[0] != '\0' ? cfg->id : NULL,
      .progress = cfg->progress,
  };
  status = cli_run_task(cfg, &ct);
  if (status != CLI_OK)
    goto out;
  cJSON *j = ag_json_from_reply(ct.reply);
  if (cli_print_json(j) != 0)
    status = CLI_CLOUD_ERROR;
  cJSON_Delete(j);
  if (strcmp(ct.reply->status, "ok") != 0)
    status = cli_cloud_error(ct.reply);
  nimbus_reply_free(ct.reply);

out:
  free(data);
  msgpack_sbuffer_destroy(&args);
  return status;
}

/* ---- main -------------------------------------------------------------- */

/* Copies argv, turning --host/--port into --mqtt-host/--mqtt-port and
 * taking --help out (nb_config_load stops at --help, and we still want the
 * verb), and every --op OP (or --op=OP) out into *ops, in order: an option
 * given many times, which the table does not hold. Strings made here are
 * listed in `owned`; *ops (its own array) points into argv. A --op without
 * its value sets *op_missing. */
static char **cli_argv_rewrite(int argc, char **argv, bool *help, char ***owned,
                               int *nowned, char ***ops, size_t *nops,
                               bool *op_missing) {
  char **v = calloc((size_t)argc + 1, sizeof *v);
  char **own = calloc((size_t)argc + 1, sizeof *own);
  char **opv = calloc((size_t)argc + 1, sizeof *opv);
  if (v == NULL || own == NULL || opv == NULL) {
    free(v);
    free(own);
    free(opv);
    return NULL;
  }
  int n = 0, no = 0;
  size_t nop = 0;
  bool flags = true;
  for (int i = 0; i < argc; i++) {
    char *s = argv[i];
    if (i > 0 && flags && strcmp(s, "--") == 0)
      flags = false;
    if (i > 0 && flags && strcmp(s, "--help") == 0) {
      *help = true;
      continue;
    }
    if (i > 0 && flags && strcmp(s, "--op") == 0) {
      if (i + 1 < argc)
        opv[nop++] = argv[++i];
      else
        *op_missing = true;
      continue;
    }
    if (i > 0 && flags && strncmp(s, "--op=", 5) == 0) {
      opv[nop++] = s + 5;
      continue;
    }
    for (size_t k = 0; i > 0 && flags && k < 2; k++) {
      size_t al = strlen(cli_aliases[k].alias);
      if (strncmp(s, "--", 2) == 0 &&
          strncmp(s + 2, cli_aliases[k].alias, al) == 0 &&
          (s[2 + al] == '\0' || s[2 + al] == '=')) {
        size_t cap = strlen(s) + strlen(cli_aliases[k].name) + 1;
        char *r = malloc(cap);
        if (r != NULL) {
          snprintf(r, cap, "--%s%s", cli_aliases[k].name, s + 2 + al);
          own[no++] = r;
          s = r;
        }
        break;
      }
    }
    v[n++] = s;
  }
  v[n] = NULL;
  *owned = own;
  *nowned = no;
  *ops = opv;
  *nops = nop;
  return v;
}

int main(int argc, char **argv) {
  nb_malloc_for_segments();
  cli_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  bool help = false, help2 = false;
  char **owned = NULL;
  int nowned = 0, nrest = 0, status = CLI_USAGE;
  char **rest = NULL;
  char err[256];

  char **ops = NULL;
  size_t nops = 0;
  bool op_missing = false;
  bool print_config = nb_config_take_flag(&argc, argv, "--print-config");
  char **v = cli_argv_rewrite(argc, argv, &help, &owned, &nowned, &ops, &nops,
                              &op_missing);
  if (v == NULL) {
    fprintf(stderr, "nimbus-agent: out of memory\n");
    return CLI_USAGE;
  }
  int vc = 0;
  while (v[vc] != NULL)
    vc++;
  int rc = nb_config_load(cli_table, &cfg, vc, v, NULL, &help2, &nrest, &rest,
                          err, sizeof err);
  if (rc != 0) {
    if (help) {
      cli_help(NULL, stdout);
      status = CLI_OK;
    } else {
      status = cli_usage_error(err);
    }
    goto out;
  }
  if (print_config && !help) {
    nb_config_print(cli_table, &cfg, stdout);
    status = CLI_OK;
    goto out;
  }
  if (nrest == 0) {
    if (help) {
      cli_help(NULL, stdout);
      status = CLI_OK;
    } else {
      status = cli_usage_error("no verb given");
    }
    goto out;
  }
  if (strcmp(rest[0], "help") == 0) {
    const cli_verb *hv = nrest > 1 ? cli_verb_find(rest[1]) : NULL;
    if (nrest > 1 && hv == NULL) {
      status = cli_usage_error("no such verb");
      goto out;
    }
    cli_help(hv, stdout);
    status = CLI_OK;
    goto out;
  }
  const cli_verb *verb = cli_verb_find(rest[0]);
  if (verb == NULL) {
    snprintf(err, sizeof err, "unknown verb \"%.64s\"", rest[0]);
    status = cli_usage_error(err);
    goto out;
  }
  if (help) {
    cli_help(verb, stdout);
    status = CLI_OK;
    goto out;
  }
  if (op_missing) {
    status = cli_usage_error("--op needs a value, e.g. --op blur:sigma=4");
    goto out;
  }
  if (nops > 0 && verb->run != cli_offload) {
    snprintf(err, sizeof err, "%s takes no --op", verb->name);
    status = cli_usage_error(err);
    goto out;
  }
  cfg.ops = ops;
  cfg.nops = nops;
  status = verb->run(&cfg, nrest, rest);

out:
  nb_config_free(cli_table, &cfg);
  for (int i = 0; i < nowned; i++)
    free(owned[i]);
  free(owned);
  free(ops);
  free(v);
  return status;
}
