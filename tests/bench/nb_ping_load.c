/* nb-ping-load: the Nimbus half of `scripts/bench ping`.
 *
 * The same measurement as nb-raw-load, made through libnimbus-agent: keeps
 * --inflight `ping` tasks outstanding, each refilled from its own on_final
 * callback (as nb-raw-load refills from its arrival callback), and times
 * every task from just before nimbus_submit to its final reply. After
 * --warmup tasks it measures for --seconds (or --count tasks) and prints
 *   inflight=N count=C seconds=S rate=R p50_ms=X p99_ms=Y errors=E
 * where errors counts final replies other than `ok` (they are not timed).
 * With --op, one round trip is a chain of tasks, each sent when the one
 * before it answered ok, timed from the first's submit to the last's final
 * reply: "ping2" is two pings (the floor of two dependent round trips,
 * the baseline of `scripts/bench share`), "share" is share.get of --token
 * and then blob.get of the first 1 KiB of --blob (a small share fetched).
 *
 * Connection: --user is the terminal id, --password its password
 * ($NIMBUS_TERMINAL, $NIMBUS_PASSWORD); --client-id, if given, must be
 * "<terminal>.<device>"; without it the device is "benchload", the same in
 * every run, so that runs resume one persistent session rather than leave
 * one behind each (two loads at once need two --client-id). The agent
 * keeps its state in --state-dir, or in a temporary directory removed at
 * exit. */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "nimbus/agent.h"

#include <msgpack.h>

typedef struct load load;

typedef struct slot {
  load *l;
  int64_t sent_ns; /* the submit of the chain's first task */
  int step;        /* the task of the chain in flight */
} slot;

/* One task of a chain: its type and packed args (NULL: none). */
typedef struct step {
  const char *type;
  msgpack_sbuffer args;
} step;

#define MAX_STEPS 2

struct load {
  nimbus_agent *agent;
  const bench_opts *o;
  step steps[MAX_STEPS];
  int nsteps;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  slot *slots;
  long replies;  /* final replies, warm-up included */
  int measuring; /* warm-up done */
  int done;      /* measurement finished: stop refilling */
  int failed;
  int64_t t0, t_end, t_last;
  int64_t cpu0, cpu1; /* this process's CPU time at t0 and t_last */
  long errors;        /* final replies that are not ok, failed submits */
  /* Slots whose refill the callback could not submit (the agent was
   * still full): the main thread submits them, blocking. */
  int *refill;
  int nrefill;
  long nbusy; /* refills handed to the main thread: the agent was full */
  bench_lat lat;
};

static void on_final(void *ctx, nimbus_task *t, const nimbus_reply *r);

/* Submits slot `s` without holding l->mu (the agent has its own lock and
 * calls on_final, which takes l->mu, from its thread). */
static int submit_slot(slot *s, int block_ms) {
  nimbus_submit_opts so = {0};
  so.on_final = on_final;
  so.ctx = s;
  nimbus_task *t = NULL;
  const step *st = &s->l->steps[s->step];
  if (s->step == 0)
    s->sent_ns = bench_now_ns();
  /* The handle also comes to on_final, which releases it; it may do so
   * before nimbus_submit returns here, so `t` is not used. */
  return nimbus_submit(s->l->agent, st->type,
                       st->args.size > 0 ? (const uint8_t *)st->args.data
                                         : NULL,
                       st->args.size, NULL, 0, false, &so, block_ms, &t);
}

static void on_final(void *ctx, nimbus_task *t, const nimbus_reply *r) {
  int64_t now = bench_now_ns();
  slot *s = ctx;
  load *l = s->l;
  int ok = r != NULL && r->status != NULL && strcmp(r->status, "ok") == 0;
  nimbus_task_release(t);

  /* A chain that goes on is no round trip yet: its next task goes out. */
  int next = ok && s->step + 1 < l->nsteps;
  s->step = next ? s->step + 1 : 0;
  pthread_mutex_lock(&l->mu);
  if (!next) {
    l->replies++;
    if (!ok) {
      l->errors++;
      if (l->errors <= 5)
        fprintf(stderr, "nb-ping-load: final reply %s %d: %s\n",
                r && r->status ? r->status : "?", r ? r->code : 0,
                r && r->error ? r->error : "");
    }
    if (l->measuring && !l->done) {
      if (ok && bench_lat_add(&l->lat, now - s->sent_ns) != 0)
        l->errors++;
      l->t_last = now;
      if ((l->o->count > 0 && (long)l->lat.n >= l->o->count) ||
          (l->o->count == 0 && now >= l->t_end)) {
        l->done = 1;
        l->cpu1 = bench_cpu_ns();
        pthread_cond_signal(&l->cv);
      }
    } else if (!l->measuring && l->replies >= l->o->warmup) {
      l->measuring = 1;
      l->t0 = l->t_last = now;
      l->t_end = now + (int64_t)(l->o->seconds * 1e9);
      l->cpu0 = bench_cpu_ns();
    }
  }
  int again = !l->done && !l->failed;
  pthread_mutex_unlock(&l->mu);
  if (!again)
    return;

  int rc = submit_slot(s, 0);
  if (rc == 0)
    return;
  pthread_mutex_lock(&l->mu);
  if (rc == NIMBUS_EBUSY) {
    l->refill[l->nrefill++] = (int)(s - l->slots);
    l->nbusy++;
  } else {
    fprintf(stderr, "nb-ping-load: submit: %s\n", nimbus_strerror(rc));
    l->failed = 1;
  }
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

static void pack_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

/* The chain of --op into l->steps. Returns 0, or 2 after a usage line. */
static int steps_make(load *l, const bench_opts *o) {
  for (int i = 0; i < MAX_STEPS; i++) {
    msgpack_sbuffer_init(&l->steps[i].args);
    l->steps[i].type = "ping";
  }
  l->nsteps = strcmp(o->op, "ping") == 0 ? 1 : 2;
  if (strcmp(o->op, "share") != 0)
    return 0;
  if (o->token == NULL || o->blob == NULL) {
    fprintf(stderr, "nb-ping-load: --op share needs --token and --blob\n");
    return 2;
  }
  msgpack_packer pk;
  l->steps[0].type = "share.get";
  msgpack_packer_init(&pk, &l->steps[0].args, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  pack_str(&pk, "token");
  pack_str(&pk, o->token);
  l->steps[1].type = "blob.get";
  msgpack_packer_init(&pk, &l->steps[1].args, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 3);
  pack_str(&pk, "blob");
  pack_str(&pk, o->blob);
  pack_str(&pk, "offset");
  msgpack_pack_int(&pk, 0);
  pack_str(&pk, "length");
  msgpack_pack_int(&pk, 1024);
  return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int main(int argc, char **argv) {
  bench_opts o;
  bench_parse(&o, argc, argv, "nb-ping-load",
              "inflight count seconds warmup state-dir op token blob",
              "Nimbus `ping` tasks (or chains of tasks: --op) through "
              "libnimbus-agent, N in flight.");
  if (o.user == NULL)
    o.user = getenv("NIMBUS_TERMINAL");
  if (o.password == NULL)
    o.password = getenv("NIMBUS_PASSWORD");
  if (o.user == NULL || o.password == NULL) {
    fprintf(stderr, "nb-ping-load: --user and --password (or "
                    "NIMBUS_TERMINAL, NIMBUS_PASSWORD) are required\n");
    return 2;
  }

  char device[80];
  if (o.client_id != NULL) {
    size_t ul = strlen(o.user);
    if (strncmp(o.client_id, o.user, ul) != 0 || o.client_id[ul] != '.') {
      fprintf(stderr, "nb-ping-load: --client-id must be %s.<device>\n",
              o.user);
      return 2;
    }
    snprintf(device, sizeof device, "%s", o.client_id + ul + 1);
  } else {
    /* One device for every run, as one phone running the bench again and
     * again: its persistent session is resumed each time. A new device per
     * run left a session behind that the broker kept filling with every
     * later reply to the terminal (up to max_queued_messages): by the
     * third run it stored each reply three times over, and the rate fell
     * run after run. */
    snprintf(device, sizeof device, "benchload");
  }

  char tmpdir[] = "/tmp/nb-ping-load.XXXXXX";
  const char *state = o.state_dir;
  if (state == NULL) {
    if (mkdtemp(tmpdir) == NULL) {
      perror("nb-ping-load: mkdtemp");
      return 1;
    }
    state = tmpdir;
  }

  char uri[300];
  snprintf(uri, sizeof uri, "tcp://%s:%d", o.host, o.port);
  nimbus_agent_opts ao;
  nimbus_agent_opts_init(&ao);
  ao.uri = uri;
  ao.terminal = o.user;
  ao.password = o.password;
  ao.state_dir = state;
  ao.device_id = device;
  if (o.inflight > 64)
    ao.max_inflight = o.inflight;

  static load l;
  l.o = &o;
  if (steps_make(&l, &o) != 0)
    return 2;
  pthread_mutex_init(&l.mu, NULL);
  pthread_cond_init(&l.cv, NULL);
  l.slots = calloc((size_t)o.inflight, sizeof *l.slots);
  l.refill = calloc((size_t)o.inflight, sizeof *l.refill);
  int status = 1;
  if (l.slots == NULL || l.refill == NULL) {
    fprintf(stderr, "nb-ping-load: out of memory\n");
    goto out;
  }
  for (int i = 0; i < o.inflight; i++)
    l.slots[i].l = &l;
  l.measuring = o.warmup == 0;

  int rc = nimbus_agent_new(&ao, &l.agent);
  if (rc != 0) {
    fprintf(stderr, "nb-ping-load: agent: %s\n", nimbus_strerror(rc));
    goto out;
  }
  rc = nimbus_agent_connect(l.agent, 10000);
  if (rc != 0) {
    fprintf(stderr, "nb-ping-load: connect to %s as %s: %s (%s)\n", uri, o.user,
            nimbus_strerror(rc), nimbus_agent_errstr(l.agent));
    goto out;
  }

  if (l.measuring) {
    l.t0 = l.t_last = bench_now_ns();
    l.t_end = l.t0 + (int64_t)(o.seconds * 1e9);
    l.cpu0 = bench_cpu_ns();
  }
  for (int i = 0; i < o.inflight; i++) {
    rc = submit_slot(&l.slots[i], 10000);
    if (rc != 0) {
      fprintf(stderr, "nb-ping-load: submit: %s\n", nimbus_strerror(rc));
      pthread_mutex_lock(&l.mu);
      l.failed = 1;
      pthread_mutex_unlock(&l.mu);
      break;
    }
  }

  /* Wait for the end, submitting the refills the callback could not.
   * A run that makes no progress for 10 s is broken, not slow. */
  pthread_mutex_lock(&l.mu);
  while (!l.done && !l.failed) {
    if (l.nrefill > 0) {
      slot *s = &l.slots[l.refill[--l.nrefill]];
      pthread_mutex_unlock(&l.mu);
      rc = submit_slot(s, 10000);
      pthread_mutex_lock(&l.mu);
      if (rc != 0) {
        fprintf(stderr, "nb-ping-load: submit: %s\n", nimbus_strerror(rc));
        l.failed = 1;
      }
      continue;
    }
    long seen = l.replies;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    if (pthread_cond_timedwait(&l.cv, &l.mu, &dl) != 0 && l.replies == seen &&
        !l.done && l.nrefill == 0) {
      fprintf(stderr, "nb-ping-load: no reply for 10 s after %ld\n", l.replies);
      l.failed = 1;
    }
  }
  int failed = l.failed;
  double secs = (double)(l.t_last - l.t0) / 1e9;
  pthread_mutex_unlock(&l.mu);

  /* Outstanding tasks are dropped without callbacks. */
  nimbus_agent_free(l.agent);
  l.agent = NULL;
  if (failed) {
    fprintf(stderr, "nb-ping-load: run failed after %ld replies\n", l.replies);
  } else {
    if (l.nbusy > 0)
      fprintf(stderr,
              "nb-ping-load: %ld refills found the agent full and "
              "went through the main thread\n",
              l.nbusy);
    bench_report(&l.lat, o.inflight, secs, l.errors, l.cpu1 - l.cpu0);
    status = 0;
  }

out:
  nimbus_agent_free(l.agent);
  if (state == tmpdir)
    (void)nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  bench_lat_free(&l.lat);
  free(l.slots);
  free(l.refill);
  for (int i = 0; i < MAX_STEPS; i++)
    msgpack_sbuffer_destroy(&l.steps[i].args);
  return status;
}
