/* nb-blob: one blob moved through libnimbus-agent's transfer engine
 * (nimbus_blob_upload, nimbus_blob_download), or shared through its typed
 * share calls (nimbus_share_*), for the integration tests of the
 * library's own guarantees, apart from what the CLI adds on top.
 *
 *   nb-blob upload FILE            the engine hashes FILE and uploads it
 *   nb-blob download HEX NAME [SIZE]  into NAME (by way of .NAME.part);
 *                                  with SIZE, a part file is resumed
 *   nb-blob share HEX NAME [TO]    nimbus_share_create: "ok TOKEN THUMBNAIL"
 *   nb-blob get TOKEN              nimbus_share_get: "ok NAME BLOB SIZE
 *                                  THUMBNAIL DOWNLOADS" (- for "")
 *   nb-blob list                   nimbus_share_list: "ok N TOKEN..."
 *   nb-blob revoke TOKEN           nimbus_share_revoke: "ok"
 * (a call that fails: "error ERRNAME CODE", the reply's code or 0)
 *
 * Connection from NIMBUS_MQTT_HOST, NIMBUS_MQTT_PORT, NIMBUS_TERMINAL,
 * NIMBUS_PASSWORD, NIMBUS_STATE_DIR. Prints one line: "ok HEX SIZE MOVED
 * BYTES" (exit 0) or "error ERRNAME CODE MESSAGE" (exit 1); 2 for usage
 * or no connection. */
#include <fcntl.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nimbus/agent.h"

static void on_done(void *ctx, const nimbus_blob_result *r) {
  int *rc = ctx;
  if (r->err == 0) {
    printf("ok %s %" PRId64 " %d %" PRId64 "\n", r->blob, r->size,
           r->moved ? 1 : 0, r->bytes);
    *rc = 0;
  } else {
    printf("error %s %d %s\n", nimbus_errname(r->err), r->code,
           r->error != NULL ? r->error : "");
    *rc = 1;
  }
}

static const char *dash(const char *s) { return s[0] != '\0' ? s : "-"; }

/* The share calls: the exit status, after the line. */
static int share_cmd(nimbus_agent *a, int argc, char **argv) {
  nimbus_share s;
  nimbus_reply *r = NULL;
  nimbus_share *page = NULL;
  size_t n = 0;
  char next[64];
  int rc;
  if (strcmp(argv[1], "share") == 0) {
    nimbus_share_opts o;
    nimbus_share_opts_init(&o);
    o.blob = argv[2];
    o.name = argv[3];
    const char *to[1] = {argc > 4 ? argv[4] : NULL};
    o.to = to;
    o.nto = argc > 4 ? 1 : 0;
    if ((rc = nimbus_share_create(a, &o, NULL, &s, &r)) == 0)
      printf("ok %s %s\n", s.token, dash(s.thumbnail));
  } else if (strcmp(argv[1], "get") == 0) {
    if ((rc = nimbus_share_get(a, argv[2], NULL, NULL, NULL, &s, &r)) == 0)
      printf("ok %s %s %" PRId64 " %s %" PRId64 "\n", s.name, s.blob, s.size,
             dash(s.thumbnail), s.downloads);
  } else if (strcmp(argv[1], "list") == 0) {
    if ((rc = nimbus_share_list(a, false, NULL, NULL, 1000, NULL, &page, &n,
                                next, &r)) == 0) {
      printf("ok %zu", n);
      for (size_t i = 0; i < n; i++)
        printf(" %s", page[i].token);
      printf("\n");
    }
    free(page);
  } else if ((rc = nimbus_share_revoke(a, argv[2], NULL, &r)) == 0) {
    printf("ok\n");
  }
  if (rc != 0)
    printf("error %s %d\n", nimbus_errname(rc), r != NULL ? r->code : 0);
  nimbus_reply_free(r);
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  bool share = argc >= 2 &&
               (strcmp(argv[1], "get") == 0 || strcmp(argv[1], "revoke") == 0 ||
                strcmp(argv[1], "list") == 0 ||
                (strcmp(argv[1], "share") == 0 && argc >= 4));
  if (!share &&
      (argc < 3 ||
       (strcmp(argv[1], "upload") != 0 && strcmp(argv[1], "download") != 0) ||
       (strcmp(argv[1], "download") == 0 && argc != 4 && argc != 5))) {
    fprintf(stderr, "usage: nb-blob upload FILE | download HEX NAME [SIZE] | "
                    "share HEX NAME [TO] | get TOKEN | list | revoke TOKEN\n");
    return 2;
  }
  if (share && strcmp(argv[1], "list") != 0 && argc < 3) {
    fprintf(stderr, "nb-blob: %s wants an argument\n", argv[1]);
    return 2;
  }
  const char *host = getenv("NIMBUS_MQTT_HOST"),
             *port = getenv("NIMBUS_MQTT_PORT");
  char uri[256];
  snprintf(uri, sizeof uri, "tcp://%s:%s", host != NULL ? host : "127.0.0.1",
           port != NULL ? port : "1883");
  nimbus_agent_opts o;
  nimbus_agent_opts_init(&o);
  o.uri = uri;
  o.terminal = getenv("NIMBUS_TERMINAL");
  o.password = getenv("NIMBUS_PASSWORD");
  o.state_dir = getenv("NIMBUS_STATE_DIR");
  nimbus_agent *a = NULL;
  nimbus_xfer *x = NULL;
  int rc = nimbus_agent_new(&o, &a);
  if (rc == 0)
    rc = nimbus_agent_connect(a, 10000);
  if (rc == 0)
    rc = nimbus_xfer_new(a, NULL, &x);
  if (rc != 0) {
    fprintf(stderr, "nb-blob: %s\n", nimbus_strerror(rc));
    nimbus_agent_free(a);
    return 2;
  }
  if (share) {
    int st = share_cmd(a, argc, argv);
    nimbus_xfer_free(x);
    nimbus_agent_free(a);
    return st;
  }
  int status = 2;
  if (strcmp(argv[1], "upload") == 0) {
    nimbus_blob_upload_opts u;
    nimbus_blob_upload_opts_init(&u);
    u.path = argv[2];
    u.on_done = on_done;
    u.ctx = &status;
    rc = nimbus_blob_upload(x, &u);
  } else {
    nimbus_blob_download_opts d;
    nimbus_blob_download_opts_init(&d);
    d.blob = argv[2];
    d.name = argv[3];
    if (argc == 5)
      d.size = strtoll(argv[4], NULL, 10);
    d.on_done = on_done;
    d.ctx = &status;
    rc = nimbus_blob_download(x, &d);
  }
  if (rc == 0)
    rc = nimbus_xfer_run(x);
  if (rc != 0)
    fprintf(stderr, "nb-blob: %s\n", nimbus_strerror(rc));
  nimbus_xfer_free(x);
  nimbus_agent_free(a);
  return status;
}
