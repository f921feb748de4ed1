/* backup-one: an app that embeds libnimbus-agent. It connects to a Nimbus
 * cloud, pings it, backs up one file (the file's bytes uploaded as a blob
 * through the library's transfer engine, then a snapshot naming it
 * committed with backup.commit) and prints the cloud's replies.
 *
 *   backup-one FILE
 *
 * The connection comes from the environment, as for nimbus-agent:
 * NIMBUS_MQTT_HOST (127.0.0.1), NIMBUS_MQTT_PORT (1883), NIMBUS_TERMINAL,
 * NIMBUS_PASSWORD, and NIMBUS_STATE_DIR (the agent's state, ~/.nimbus by
 * default). Prints three lines:
 *
 *   pong: {"worker"=>"worker-...", ...}
 *   uploaded FILE: blob <sha256> (<size> bytes)
 *   snapshot: {"snapshot"=>"...", "items"=>1, "bytes"=>...}
 *
 * Exit 0 when the snapshot is stored, 1 when the cloud or the library
 * said no (the reason on stderr), 2 for a wrong command line.
 *
 * Build it against an installed libnimbus-agent (README.md here):
 *   cc -o backup-one backup_one.c \
 *      $(pkg-config --cflags --libs nimbus-agent msgpack)
 * or with CMake: find_package(nimbus-agent), target nimbus::agent. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <msgpack.h>
#include <nimbus/agent.h>

/* Prints a packed msgpack map (a reply's result) after `what`. */
static void print_result(const char *what, const nimbus_reply *r) {
  printf("%s: ", what);
  msgpack_zone zone;
  msgpack_zone_init(&zone, 1024);
  msgpack_object obj;
  if (r->result != NULL &&
      msgpack_unpack((const char *)r->result, r->result_len, NULL, &zone,
                     &obj) == MSGPACK_UNPACK_SUCCESS)
    msgpack_object_print(stdout, obj);
  printf("\n");
  msgpack_zone_destroy(&zone);
}

/* Submits one task and waits up to 30 s for its final reply. Returns 0
 * with *out (nimbus_reply_free) when the cloud answered ok; else 1, the
 * reason on stderr. */
static int call(nimbus_agent *a, const char *type, const uint8_t *args,
                size_t args_len, nimbus_reply **out) {
  nimbus_task *t = NULL;
  nimbus_reply *r = NULL;
  int rc = nimbus_submit(a, type, args, args_len, NULL, 0, false, NULL, -1, &t);
  if (rc == 0)
    rc = nimbus_task_wait(t, 30000, &r);
  nimbus_task_release(t);
  if (rc != 0) {
    fprintf(stderr, "backup-one: %s: %s (%s)\n", type, nimbus_strerror(rc),
            nimbus_agent_errstr(a));
    return 1;
  }
  if (strcmp(r->status, "ok") != 0) {
    fprintf(stderr, "backup-one: %s: %d %s\n", type, r->code,
            r->error != NULL ? r->error : "");
    nimbus_reply_free(r);
    return 1;
  }
  *out = r;
  return 0;
}

/* How the upload ended, from the transfer engine's on_done. */
typedef struct upload {
  int err;
  char blob[65];
  int64_t size;
} upload;

static void on_uploaded(void *ctx, const nimbus_blob_result *r) {
  upload *u = ctx;
  u->err = r->err;
  if (r->err == 0) {
    memcpy(u->blob, r->blob, sizeof u->blob);
    u->size = r->size;
  } else {
    fprintf(stderr, "backup-one: upload: %s\n",
            r->error != NULL ? r->error : nimbus_strerror(r->err));
  }
}

/* Uploads `path` as a blob (blob.has first: content the cloud already has
 * is not sent again). Returns 0 with *u filled, else 1. */
static int upload_file(nimbus_agent *a, const char *path, upload *u) {
  nimbus_xfer *x = NULL;
  int rc = nimbus_xfer_new(a, NULL, &x);
  if (rc == 0) {
    nimbus_blob_upload_opts o;
    nimbus_blob_upload_opts_init(&o);
    o.path = path;
    o.on_done = on_uploaded;
    o.ctx = u;
    u->err = NIMBUS_ECANCELED;
    rc = nimbus_blob_upload(x, &o);
  }
  if (rc == 0)
    rc = nimbus_xfer_run(x);
  nimbus_xfer_free(x);
  if (rc != 0)
    fprintf(stderr, "backup-one: upload: %s\n", nimbus_strerror(rc));
  return rc != 0 || u->err != 0 ? 1 : 0;
}

/* backup.commit's args (schemas/SPEC.md, Backups): one item of kind
 * "file" named after the file, its blob, size and mtime, and a label. */
static void pack_commit(msgpack_sbuffer *sb, const char *name, const upload *u,
                        int64_t mtime_ms) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  msgpack_pack_str_with_body(&pk, "items", 5);
  msgpack_pack_array(&pk, 1);
  msgpack_pack_map(&pk, 5);
  msgpack_pack_str_with_body(&pk, "kind", 4);
  msgpack_pack_str_with_body(&pk, "file", 4);
  msgpack_pack_str_with_body(&pk, "name", 4);
  msgpack_pack_str_with_body(&pk, name, strlen(name));
  msgpack_pack_str_with_body(&pk, "blob", 4);
  msgpack_pack_str_with_body(&pk, u->blob, 64);
  msgpack_pack_str_with_body(&pk, "size", 4);
  msgpack_pack_int64(&pk, u->size);
  msgpack_pack_str_with_body(&pk, "mtime", 5);
  msgpack_pack_int64(&pk, mtime_ms);
  msgpack_pack_str_with_body(&pk, "label", 5);
  msgpack_pack_str_with_body(&pk, "backup-one", 10);
}

int main(int argc, char **argv) {
  if (argc != 2 || argv[1][0] == '-') {
    fprintf(stderr, "usage: backup-one FILE  (libnimbus-agent %s)\n",
            nimbus_agent_version());
    return 2;
  }
  struct stat st;
  if (stat(argv[1], &st) != 0 || !S_ISREG(st.st_mode)) {
    fprintf(stderr, "backup-one: %s is not a regular file\n", argv[1]);
    return 2;
  }
  const char *host = getenv("NIMBUS_MQTT_HOST");
  const char *port = getenv("NIMBUS_MQTT_PORT");
  char uri[300];
  snprintf(uri, sizeof uri, "tcp://%s:%s", host != NULL ? host : "127.0.0.1",
           port != NULL ? port : "1883");

  /* Connect. */
  nimbus_agent_opts o;
  nimbus_agent_opts_init(&o);
  o.uri = uri;
  o.terminal = getenv("NIMBUS_TERMINAL");
  o.password = getenv("NIMBUS_PASSWORD");
  o.state_dir = getenv("NIMBUS_STATE_DIR");
  nimbus_agent *a = NULL;
  char err[256] = "";
  int rc = nimbus_agent_new_err(&o, &a, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "backup-one: %s\n",
            err[0] != '\0' ? err : nimbus_strerror(rc));
    return 1;
  }
  rc = nimbus_agent_connect(a, 10000);
  if (rc != 0) {
    fprintf(stderr, "backup-one: cannot connect to %s: %s\n", uri,
            nimbus_agent_errstr(a));
    nimbus_agent_free(a);
    return 1;
  }

  /* Ping. */
  nimbus_reply *r = NULL;
  int status = call(a, "ping", NULL, 0, &r);
  if (status == 0) {
    print_result("pong", r);
    nimbus_reply_free(r);
  }

  /* Back the file up: its bytes as a blob, then a snapshot naming it. */
  upload u = {0};
  if (status == 0)
    status = upload_file(a, argv[1], &u);
  if (status == 0) {
    printf("uploaded %s: blob %s (%" PRId64 " bytes)\n", argv[1], u.blob,
           u.size);
    const char *name = strrchr(argv[1], '/');
    name = name != NULL ? name + 1 : argv[1];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_commit(&sb, name, &u,
                (int64_t)st.st_mtim.tv_sec * 1000 +
                    st.st_mtim.tv_nsec / 1000000);
    status = call(a, "backup.commit", (const uint8_t *)sb.data, sb.size, &r);
    msgpack_sbuffer_destroy(&sb);
  }
  if (status == 0) {
    print_result("snapshot", r);
    nimbus_reply_free(r);
  }
  nimbus_agent_free(a);
  return status;
}
