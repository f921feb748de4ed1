/* nb-blob: one blob moved through libnimbus-agent's transfer engine
 * (nimbus_blob_upload, nimbus_blob_download), for the integration tests
 * of the library's own guarantees, apart from what the CLI adds on top.
 *
 *   nb-blob upload FILE            the engine hashes FILE and uploads it
 *   nb-blob download HEX NAME [SIZE]  into NAME (by way of .NAME.part);
 *                                  with SIZE, a part file is resumed
 *
 * Connection from NIMBUS_MQTT_HOST, NIMBUS_MQTT_PORT, NIMBUS_TERMINAL,
 * NIMBUS_PASSWORD, NIMBUS_STATE_DIR. Prints one line: "ok HEX SIZE MOVED
 * BYTES" (exit 0) or "error ERRNAME CODE MESSAGE" (exit 1); 2 for usage
 * or no connection. */
#include <fcntl.h>
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

int main(int argc, char **argv) {
  if (argc < 3 ||
      (strcmp(argv[1], "upload") != 0 && strcmp(argv[1], "download") != 0) ||
      (strcmp(argv[1], "download") == 0 && argc != 4 && argc != 5)) {
    fprintf(stderr, "usage: nb-blob upload FILE | download HEX NAME [SIZE]\n");
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
