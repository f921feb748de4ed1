/* The nimbus-agent CLI's shared parts: its configuration (one nb_config
 * table, cli.c), exit statuses, and the helpers the verbs in cli.c,
 * cli_backup.c, cli_restore.c and cli_share.c use. */
#ifndef CLI_H
#define CLI_H

#include <cjson/cJSON.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nimbus/agent.h"

struct bk_pipe;
struct bk_progress;

enum {
  CLI_OK = 0,
  CLI_CLOUD_ERROR = 1,
  CLI_USAGE = 2,
  CLI_CONNECT = 3,
  CLI_TIMEOUT = 4,
  /* The offload verbs (cli_offload.c) tell the failure's class apart. */
  CLI_NOT_FOUND = 5,   /* the input: no such file, blob or backup item */
  CLI_TOO_LARGE = 6,   /* 413: over the cloud's limits */
  CLI_UNSUPPORTED = 7, /* 415: a format it cannot read or write */
  CLI_CORRUPT = 8,     /* 422: the input is corrupt or truncated */
  CLI_UNAVAILABLE = 9, /* 503: the module is not installed, or the cloud
                          cannot serve it now */
  /* update, listen (cli_update.c): a package refused by a check. */
  CLI_CHECK_SIZE = 10,
  CLI_CHECK_SHA256 = 11,
  CLI_CHECK_SIGNATURE = 12,
  CLI_CHECK_ARCHIVE = 13,
  CLI_CHECK_VERSION = 14 /* not newer than the running one, or for another
                            platform */
};

typedef struct cli_cfg {
  char *mqtt_host;
  int64_t mqtt_port;
  char *terminal;
  char *password;
  char *state_dir;
  char *prefix;
  int64_t timeout;
  bool json;
  bool progress;
  char *data_file;
  char *id;
  char *label;
  int64_t jobs;
  int64_t limit;
  char *snapshot;
  /* share, fetch, listen (cli_share.c) */
  char *name;
  char *to;
  char *expires;
  int64_t max_downloads;
  char *mime;
  bool replace;
  bool thumbnail; /* fetch: the share's thumbnail, not its file */
  int64_t count;
  /* image (cli_offload.c) */
  char *format;
  char *quality;
  char *blob;
  char *from_backup;
  /* version, update, listen (cli_update.c) */
  char *install_dir;
  char *key;
  bool check;
  bool allow_downgrade;
  bool rollback;
  bool accept;
  bool refuse;
  /* Every --op, in order: collected by main before the table is read
   * (nb_config keeps one value per option); borrowed from argv. */
  char **ops;
  size_t nops;
} cli_cfg;

/* Prints "nimbus-agent: <what>" and a pointer to --help; CLI_USAGE. */
int cli_usage_error(const char *what);

/* Prints the cloud's error (and help) for a person; CLI_CLOUD_ERROR. */
int cli_cloud_error(const nimbus_reply *r);
/* For a task that got no final reply (rc from the agent, not 0): prints
 * "nimbus-agent: <what>: <reason>" on stderr (the broker's words when it
 * refused) and returns the exit status: CLI_TIMEOUT, CLI_CONNECT or
 * CLI_USAGE. `a` and `what` borrowed. */
int cli_call_failed(nimbus_agent *a, const char *what, int rc);

/* Prints `j` as one line of JSON on stdout. 0, or -1 (said on stderr). */
int cli_print_json(cJSON *j);
/* The bk_progress_init mode a transfer of this run shows: 1 a bar on
 * stderr when stderr is a terminal, else 2 (JSON lines) with --progress,
 * else 0 (none). */
int cli_progress_mode(const cli_cfg *cfg);

/* The verbs that keep many tasks going (backup, backups, restore) re-send
 * a task that had no reply sooner than the library's 30 s: after a lost
 * link the agent may be back before the workers and its re-sent tasks
 * find nobody to take them; they wait for this, not for --timeout. */
#define CLI_BULK_RESEND_MS 4000
#define CLI_BULK_RESEND_MAX_MS 30000

/* A new agent for cfg's terminal with room for `max_inflight` tasks,
 * re-sending after `resend_ms` (0: the library's default, doubling up to
 * resend_max_ms), connected. Returns CLI_OK and *out, or the exit status
 * after saying why on stderr. */
int cli_connect(const cli_cfg *cfg, int max_inflight, int resend_ms,
                int resend_max_ms, nimbus_agent **out);
/* cli_connect that also hands every notice to `cb` (with `ctx`, on the
 * agent's thread: nimbus_agent_on_notice), set before the connection so
 * that notices queued while the terminal was away are not missed. */
int cli_connect_notices(const cli_cfg *cfg, int max_inflight,
                        nimbus_notice_cb cb, void *ctx, nimbus_agent **out);

/* cli_connect_notices that also hands every offer (notice agent.offer)
 * to `ocb` (with `octx`; nimbus_agent_on_offer), which then does not reach
 * `cb`. */
int cli_connect_listen(const cli_cfg *cfg, int max_inflight,
                       nimbus_notice_cb cb, void *ctx, nimbus_offer_cb ocb,
                       void *octx, nimbus_agent **out);

/* A snapshot as backup.get gives it (cli_restore.c): its id, counts and
 * items (an array, inline in the reply or decoded from its manifest),
 * borrowed from the private fields until cli_snapshot_fini. */
typedef struct cli_snapshot {
  char id[256];
  int64_t count, bytes; /* -1 when the reply did not say */
  int code;             /* the cloud's code when it answered an error */
  msgpack_object items;
  /* private */
  nimbus_reply *reply;
  msgpack_zone *zone, *mzone;
  void *map;
  size_t map_len;
} cli_snapshot;

/* backup.get of `snapshot` (NULL or "": the latest) through `pipe`; a
 * manifest is downloaded through `xfer` into an unlinked file in the state
 * directory `state`, its SHA-256 checked, shown on `prog`, its bytes added
 * to *received, and decoded within the cloud's own bounds. Returns CLI_OK
 * and *out (release with cli_snapshot_fini), or the exit status after
 * saying why on stderr (out->code then holds the cloud's code, if any).
 * Everything is borrowed. */
int cli_snapshot_get(struct bk_pipe *pipe, nimbus_xfer *xfer,
                     struct bk_progress *prog, const char *state,
                     const char *snapshot, int64_t *received,
                     cli_snapshot *out);
void cli_snapshot_fini(cli_snapshot *s);

/* Verbs in their own files. */
extern const char cli_usage_backup[], cli_usage_backups[], cli_usage_forget[],
    cli_usage_restore[];
int cli_backup(cli_cfg *cfg, int argc, char **argv);
int cli_backups(cli_cfg *cfg, int argc, char **argv);
/* nimbus-agent forget SNAPSHOT...: backup.delete of each (cli_backup.c). */
int cli_forget(cli_cfg *cfg, int argc, char **argv);
int cli_restore(cli_cfg *cfg, int argc, char **argv);
/* Sharing (cli_share.c): share FILE, fetch TOKEN|OWNER/NAME [OUT], shares,
 * unshare TOKEN..., listen. */
extern const char cli_usage_share[], cli_usage_fetch[], cli_usage_shares[],
    cli_usage_unshare[], cli_usage_listen[];
int cli_share(cli_cfg *cfg, int argc, char **argv);
int cli_fetch(cli_cfg *cfg, int argc, char **argv);
int cli_shares(cli_cfg *cfg, int argc, char **argv);
int cli_unshare(cli_cfg *cfg, int argc, char **argv);
int cli_listen(cli_cfg *cfg, int argc, char **argv);
/* Offload (cli_offload.c): one front end for every process.* family,
 * argv[0] naming the family's verb (image, audio, doc). */
extern const char cli_usage_image[], cli_usage_audio[], cli_usage_doc[];
int cli_offload(cli_cfg *cfg, int argc, char **argv);

/* Loading the agent (cli_update.c): version, update [--check]
 * [--allow-downgrade] [--rollback], and the offers listen answers. */
extern const char cli_usage_version[], cli_usage_update[];
int cli_version(cli_cfg *cfg, int argc, char **argv);
int cli_update(cli_cfg *cfg, int argc, char **argv);
/* listen's offers: cli_offers_cb (the agent's offer callback, on its
 * thread) queues a copy of each; cli_offers_step, on the main thread,
 * shows each queued offer (a line on a terminal, its notice as JSON on a
 * pipe), answers it (--accept, --refuse, or y/n asked on a terminal; on
 * a pipe without either, no answer), installs an accepted one into the
 * install directory as `update` does, and adds one to *seen per offer.
 * cli_offers_new checks the options (CLI_USAGE when they conflict, or an
 * install would have no directory); everything borrowed must outlive
 * the queue. Returns an exit status (the first failure of the step). */
typedef struct cli_offers cli_offers;
int cli_offers_new(cli_cfg *cfg, bool table, atomic_llong *seen,
                   cli_offers **out);
void cli_offers_free(cli_offers *q);
void cli_offers_cb(void *ctx, const nimbus_agent_offer *offer);
int cli_offers_step(cli_offers *q, nimbus_agent *a);

#endif
