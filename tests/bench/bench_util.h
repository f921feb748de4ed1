/* Shared plumbing of the benchmark programs (nb-raw-echo, nb-raw-load,
 * nb-ping-load): command-line options, a monotonic clock, a latency
 * recorder and the one result line scripts/bench parses.
 *
 * Deliberately free of Nimbus protocol code: the raw MQTT pair must measure
 * Paho and Mosquitto alone, so this file knows nothing of tasks or topics
 * beyond the option names. */
#ifndef NB_BENCH_UTIL_H
#define NB_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Options every benchmark program understands. Strings are borrowed from
 * argv or the environment. */
typedef struct bench_opts {
  const char *host;        /* --host, $NIMBUS_MQTT_HOST, "127.0.0.1" */
  int port;                /* --port, $NIMBUS_MQTT_PORT, 1883 */
  const char *user;        /* --user; NULL: anonymous */
  const char *password;    /* --password */
  const char *client_id;   /* --client-id; NULL: the program picks one */
  int inflight;            /* --inflight, 1 */
  long count;              /* --count: measured round trips; 0: by time */
  double seconds;          /* --seconds: measured time when count is 0; 5 */
  long warmup;             /* --warmup: round trips not measured; 1000 */
  const char *req_topic;   /* --req-topic, "bench/raw/req" */
  const char *reply_topic; /* --reply-topic, "bench/raw/reply" */
  const char *state_dir;   /* --state-dir (nb-ping-load only) */
  /* nb-ping-load only: --op, what one round trip is ("ping"; "ping2", two
   * pings one after the other; "share", share.get of --token, then
   * blob.get of the first 1 KiB of --blob). */
  const char *op;
  const char *token;
  const char *blob;
  int pool;        /* --pool: threads behind a queue hop (raw pair only); 0 */
  long size;       /* --size: request payload bytes (nb-raw-load); 64 */
  long reply_size; /* --reply-size: echo only this many bytes of each
                    * request (nb-raw-echo); 0: all of it */
} bench_opts;

/* Fills `o` from the environment and argv. `extra` names the options this
 * program takes beyond the connection ones (a space-separated list such
 * as "inflight count seconds warmup"), so that a flag that would be
 * silently ignored is refused instead. Prints usage and exits 2 on a bad
 * command line, exits 0 after --help. */
void bench_parse(bench_opts *o, int argc, char **argv, const char *prog,
                 const char *extra, const char *summary);

/* Nanoseconds from an arbitrary fixed point (CLOCK_MONOTONIC). */
int64_t bench_now_ns(void);

/* CPU time (user + system) this process has used, all threads, in
 * nanoseconds: what a round trip costs the load generator itself. */
int64_t bench_cpu_ns(void);

/* Grows as needed; latencies in nanoseconds. Not thread-safe: each
 * program records from one callback thread at a time. */
typedef struct bench_lat {
  int64_t *v;
  size_t n, cap;
} bench_lat;

/* Appends one sample. Returns 0, or -1 when out of memory (the sample is
 * lost and the caller reports it). */
int bench_lat_add(bench_lat *l, int64_t ns);
void bench_lat_free(bench_lat *l);

/* Prints the result line on stdout:
 *   inflight=N count=C seconds=S rate=R p50_ms=X p99_ms=Y errors=E cpu_us=U
 * Sorts the samples. `seconds` is the measured interval, `cpu_ns` the CPU
 * time this process used in it (cpu_us is that per round trip). */
void bench_report(bench_lat *l, int inflight, double seconds, long errors,
                  int64_t cpu_ns);

#endif
