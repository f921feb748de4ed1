#!/usr/bin/env bash
# scripts/bench soak: memory and correctness of a whole stack under a long
# mixed load, with workers killed now and then. Several terminals at once
# (default 6), each with three loops, all through nimbus-agent or
# libnimbus-agent:
#   - pings: a burst of --ping-burst `ping` tasks (4 in flight) every
#     second through tests/bench/nb-ping-load, one fixed device per
#     terminal (its persistent session resumed by every burst);
#   - diag.sleep: one task after another (200-800 ms each, a key of its
#     own), `nimbus-agent call --id`, the same id again if a call ends
#     without a final reply, as a terminal would;
#   - backups: every --backup-every seconds a few of the terminal's files
#     change and `nimbus-agent backup` runs (again, resuming, if it fails);
#     each snapshot's expected content is kept as a sha256sum list.
# Every --kill-every seconds a worker is killed (SIGKILL and SIGTERM in
# turn) and another started in its place (scripts/stack kill-worker,
# worker).
#
# Every --sample seconds it records each stack process's RSS (VmRSS), and
# from the broker's $SYS topics its own count of allocated bytes
# (heap/current), stored messages, clients and retained messages; Redis's
# used_memory. After the load it keeps sampling for --tail seconds with no
# load at all, then (with gdb) asks mosquitto's allocator what it holds
# (malloc_stats: bytes from the system, bytes in use) and calls
# malloc_trim(0) in it, to tell memory in use from memory glibc keeps;
# then it restores every snapshot and compares it with its list, and
# reads every diag.sleep key's run count from Redis.
#
# It prints the RSS of every process over time (a row a minute), then per
# process: idle (the baseline, before any load, in the same run), start,
# peak, end of load, after the tail, and the slope (least squares, MiB per
# minute, over the load); and the task counts: sent, final, duplicates
# (a key counted more than once), lost (a final ok whose run is not in
# Redis, or a task with no final reply at all), snapshots verified.
# A measurement, not a test: the exit status is 0 when the soak ran, even
# with losses (they are printed); 1 when it broke; 2 usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${NIMBUS_BUILD_DIR:-$ROOT/build}
[[ $BUILD == /* ]] || BUILD=$PWD/$BUILD
export NIMBUS_BUILD_DIR=$BUILD
BIN=$BUILD/bin

MINUTES=5
TERMINALS=6
WORKERS=${NIMBUS_WORKERS:-2}
KILL_EVERY=60
SAMPLE=5
TAIL=60
PING_BURST=50
BACKUP_EVERY=20
BACKUP_MIB=1
STRAY=0
BUILD_FIRST=1
KEEP=0
PROBE=1

usage() {
  cat <<'USAGE'
usage: scripts/bench soak [options]
  Mixed load (pings, diag.sleep tasks, backups) from several terminals
  through a stack of its own for N minutes, a worker killed now and then;
  prints every process's RSS over time (idle, start, peak, end, after an
  idle tail, slope per minute), what mosquitto's allocator holds, and the
  task counts (sent, final, duplicates, lost; snapshots restored and
  verified).
options:
  --minutes N       minutes of load (default 5)
  --terminals N     terminals, each with its three loops (default 6)
  --workers N       workers in the stack (default $NIMBUS_WORKERS or 2)
  --kill-every S    seconds between worker kills, 0: none (default 60)
  --sample S        seconds between samples (default 5)
  --tail S          seconds sampled after the load stops (default 60)
  --ping-burst N    pings per terminal per second (default 50)
  --backup-every S  seconds between a terminal's backups (default 20)
  --backup-mib N    size of each terminal's big file, MiB (default 1); it
                    changes every other backup and then goes up whole
                    (256 KiB segments through the broker)
  --stray-devices N each terminal first connects N devices that never come
                    back (a fresh state directory each, one ping), as a
                    reinstalled app or a throwaway test directory leaves
                    them: their sessions stay and collect replies
                    (default 0)
  --no-probe        do not attach gdb to mosquitto after the tail
  --no-build        use the binaries as they are
  --keep            keep the stack directory (logs, samples) afterwards
environment:
  NIMBUS_BUILD_DIR (default <repo>/build), TMPDIR (where the stack
  lives), NIMBUS_WORKER_FLAGS (added to the soak's own: --diag and a
  lease of 3 s so that a killed worker's claims lapse quickly)
Exit status: 0 when the soak ran, 1 when it broke, 2 usage.
USAGE
}

say() { echo "bench: $(date +%H:%M:%S) $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

num() { [[ $2 =~ ^[0-9]+$ ]] || { say "$1 wants a whole number"; exit 2; }; }
while (($#)); do
  case $1 in
    --minutes) MINUTES=${2:?}; shift 2 ;;
    --terminals) TERMINALS=${2:?}; shift 2 ;;
    --workers) WORKERS=${2:?}; shift 2 ;;
    --kill-every) KILL_EVERY=${2:?}; shift 2 ;;
    --sample) SAMPLE=${2:?}; shift 2 ;;
    --tail) TAIL=${2:?}; shift 2 ;;
    --ping-burst) PING_BURST=${2:?}; shift 2 ;;
    --backup-every) BACKUP_EVERY=${2:?}; shift 2 ;;
    --backup-mib) BACKUP_MIB=${2:?}; shift 2 ;;
    --stray-devices) STRAY=${2:?}; shift 2 ;;
    --no-probe) PROBE=0; shift ;;
    --no-build) BUILD_FIRST=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
num --minutes "$MINUTES"; num --terminals "$TERMINALS"; num --workers "$WORKERS"
num --kill-every "$KILL_EVERY"; num --sample "$SAMPLE"; num --tail "$TAIL"
num --ping-burst "$PING_BURST"; num --backup-every "$BACKUP_EVERY"
num --backup-mib "$BACKUP_MIB"; num --stray-devices "$STRAY"
((MINUTES >= 1 && TERMINALS >= 1 && WORKERS >= 1 && SAMPLE >= 1 &&
  BACKUP_EVERY >= 1)) || { say "--minutes, --terminals, --workers," \
  "--sample and --backup-every want at least 1"; exit 2; }
if ((PROBE)) && ! command -v gdb >/dev/null; then
  say "no gdb: the allocator probe is skipped"
  PROBE=0
fi

if ((BUILD_FIRST)); then
  say "building the agent, the bench tools and the stack in $BUILD"
  "$ROOT/scripts/build" --target nimbus-agent-cli nimbus-worker nimbusctl \
    nimbus_auth nb-ping-load >&2 || die "build failed"
fi
for f in nimbus-agent nimbus-worker nimbusctl nb-ping-load; do
  [[ -x $BIN/$f ]] || die "missing $BIN/$f (build it, or drop --no-build)"
done

STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-bench-soak.XXXXXX")
S=$STACK_DIR/soak          # the soak's own records
mkdir -p "$S"
LOOP_PIDS=()
SYS_PID=''
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  touch "$S/stop" 2>/dev/null || true
  for p in "${LOOP_PIDS[@]}" $SYS_PID; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${LOOP_PIDS[@]}" $SYS_PID; do
    wait "$p" 2>/dev/null || true
  done
  "$ROOT/scripts/stack" stop "$STACK_DIR" >&2 || rc=1
  if ((KEEP)); then say "kept $STACK_DIR"; else rm -rf "$STACK_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A killed worker's claims must lapse well within a call's re-send.
export NIMBUS_WORKER_FLAGS="--diag --lease-ms 3000 --renew-ms 1000${NIMBUS_WORKER_FLAGS:+ $NIMBUS_WORKER_FLAGS}"
eval "$(NIMBUS_WORKERS=$WORKERS "$ROOT/scripts/stack" start "$STACK_DIR")" ||
  die "scripts/stack start failed"
for ((i = 1; i <= TERMINALS; i++)); do
  "$ROOT/scripts/stack" terminal "$STACK_DIR" "soak$i" >/dev/null ||
    die "scripts/stack terminal soak$i failed"
done
BROKER_PID=$(awk '$1 == "mosquitto" { print $2 }' "$STACK_DIR/procs")
REDIS_PID=$(awk '$1 == "redis" { print $2 }' "$STACK_DIR/procs")
BROKER_MALLOC=$(cat "$STACK_DIR/broker/malloc")
[[ $BROKER_MALLOC != GLIBC_TUNABLES= ]] ||
  BROKER_MALLOC='GLIBC_TUNABLES empty (glibc defaults)'
BROKER_MALLOC+="; $(grep -E '^max_queued_(messages|bytes)' \
  "$STACK_DIR/broker/mosquitto.conf" | tr '\n' ' ')"
redis() {
  REDISCLI_AUTH=$NIMBUS_REDIS_PASSWORD redis-cli -h "$NIMBUS_REDIS_HOST" \
    -p "$NIMBUS_REDIS_PORT" "$@"
}

# --- sampling ---------------------------------------------------------

# The broker's own figures, every 10 s (its sys_interval), as
# "<topic> <value>" lines.
mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
  -u "$NIMBUS_ADMIN_USER" -P "$NIMBUS_ADMIN_PASSWORD" -i "admin-soaksys-$$" \
  -t '$SYS/broker/heap/current' -t '$SYS/broker/store/messages/count' \
  -t '$SYS/broker/store/messages/bytes' -t '$SYS/broker/clients/total' \
  -t '$SYS/broker/clients/disconnected' \
  -t '$SYS/broker/retained messages/count' -v >"$S/sys.log" 2>&1 &
SYS_PID=$!

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# sys_value NAME: the last value the broker published for $SYS/broker/NAME.
sys_value() {
  awk -v t="\$SYS/broker/$1" 'substr($0, 1, length(t) + 1) == t " " {
    v = substr($0, length(t) + 2) } END { print (v == "" ? "-" : v) }' \
    "$S/sys.log"
}
# One sample: "t phase name pid rss_kib" for every live stack process and
# "t phase sys.NAME - value" for the broker's and Redis's own figures.
sample_once() {
  local t phase name pid start rss v
  t=$(elapsed)
  phase=$(cat "$S/phase")
  while read -r name pid start; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) ||
      continue
    [[ -n $rss ]] && echo "$t $phase $name $pid $rss"
  done <"$STACK_DIR/procs"
  for v in heap/current store/messages/count store/messages/bytes \
      clients/total clients/disconnected; do
    echo "$t $phase sys.${v//\//.} - $(sys_value "$v")"
  done
  echo "$t $phase sys.retained - $(sys_value 'retained messages/count')"
  v=$(redis info memory 2>/dev/null | tr -d '\r' |
    awk -F: '$1 == "used_memory" { print $2 }')
  echo "$t $phase redis.used_memory - ${v:--}"
}
sampler() {
  while [[ ! -f $S/sampler-stop ]]; do
    sample_once >>"$S/samples"
    sleep "$SAMPLE"
  done
}

# --- the load -----------------------------------------------------------

stopping() { [[ -f $S/stop ]]; }

# ping_loop I: a burst of pings a second, as terminal soakI's device
# "pingload" (one persistent session, resumed by every burst).
ping_loop() {
  local i=$1 line rc t
  # shellcheck disable=SC1090
  source "$STACK_DIR/terminals/soak$i/env"
  while ! stopping; do
    t=$SECONDS
    rc=0
    line=$("$BIN/nb-ping-load" --client-id "soak$i.pingload" --inflight 4 \
      --warmup 0 --count "$PING_BURST" 2>>"$S/ping-$i.err") || rc=$?
    echo "rc=$rc $line" >>"$S/pings"
    ((SECONDS > t)) || sleep 1
  done
}

# diag_loop I: diag.sleep tasks one after another, each key its own; a
# call that ends without a final reply is sent again with the same id.
diag_loop() {
  local i=$1 k=0 id out rc tries
  # shellcheck disable=SC1090
  source "$STACK_DIR/terminals/soak$i/env"
  while ! stopping; do
    k=$((k + 1))
    id=$(printf 'soak%02d-diag-%06d' "$i" "$k")
    tries=0
    echo "sent $id" >>"$S/diag"
    while :; do
      tries=$((tries + 1))
      rc=0
      out=$("$BIN/nimbus-agent" call --id "$id" --timeout 60000 diag.sleep \
        "{\"ms\": $((200 + RANDOM % 600)), \"key\": \"$id\"}" \
        2>>"$S/diag-$i.err") || rc=$?
      # 3: no connection, 4: no final reply in time: the same task again.
      if ((rc == 3 || rc == 4)) && ((tries < 5)); then
        continue
      fi
      break
    done
    if ((rc == 0)); then
      echo "final $id ok tries=$tries" >>"$S/diag"
    elif ((rc == 1)); then
      echo "final $id error tries=$tries $(tr -d '\n ' <<<"$out")" >>"$S/diag"
    else
      echo "nofinal $id rc=$rc tries=$tries" >>"$S/diag"
    fi
  done
}

# backup_loop I: change a few files, back up, keep the expected content.
backup_loop() {
  local i=$1 n=0 d rc tries out snap f t
  # shellcheck disable=SC1090
  source "$STACK_DIR/terminals/soak$i/env"
  d=$S/t$i
  mkdir -p "$d/data/notes" "$d/lists"
  for ((f = 0; f < 20; f++)); do
    head -c $((1024 + RANDOM % 7168)) /dev/urandom >"$d/data/notes/n$f.txt"
  done
  head -c $((BACKUP_MIB * 1048576)) /dev/urandom >"$d/data/video.mp4"
  while ! stopping; do
    t=$SECONDS
    n=$((n + 1))
    for f in $((RANDOM % 20)) $((RANDOM % 20)) $((RANDOM % 20)); do
      head -c $((1024 + RANDOM % 7168)) /dev/urandom >"$d/data/notes/n$f.txt"
    done
    # The big file changes every other time: half the backups upload it
    # whole (its first bytes change, so it is a new blob).
    ((n % 2)) && head -c 4096 /dev/urandom |
      dd of="$d/data/video.mp4" conv=notrunc status=none
    (cd "$d" && find data -type f | sort | xargs sha256sum) >"$d/lists/$n"
    tries=0
    while :; do
      tries=$((tries + 1))
      rc=0
      out=$("$BIN/nimbus-agent" backup --json --jobs 4 --timeout 60000 \
        --label "soak $n" "$d/data" 2>>"$S/backup-$i.err") || rc=$?
      ((rc == 0 || tries >= 5)) && break
    done
    snap=$(sed -n 's/.*"snapshot":"\([^"]*\)".*/\1/p' <<<"$out")
    if ((rc == 0)) && [[ -n $snap ]]; then
      echo "backup $i $n $snap tries=$tries" >>"$S/backups"
    else
      echo "backupfail $i $n rc=$rc tries=$tries" >>"$S/backups"
    fi
    while ! stopping && ((SECONDS < t + BACKUP_EVERY)); do sleep 1; done
  done
}

# killer: a worker killed every KILL_EVERY seconds, SIGKILL and SIGTERM in
# turn, and another started in its place.
killer() {
  local k=0 victims n sig name pid
  while :; do
    local t=$((SECONDS + KILL_EVERY))
    while ! stopping && ((SECONDS < t)); do sleep 1; done
    stopping && return 0
    k=$((k + 1))
    # Recorded workers still alive (a killed one stays in the record).
    victims=()
    while read -r name pid _; do
      [[ $name == worker-* && -d /proc/$pid ]] && victims+=("${name#worker-}")
    done <"$STACK_DIR/procs"
    ((${#victims[@]})) || continue
    n=${victims[RANDOM % ${#victims[@]}]}
    if ((k % 2)); then sig=KILL; else sig=TERM; fi
    if "$ROOT/scripts/stack" kill-worker "$STACK_DIR" "$n" "$sig" \
        2>>"$S/killer.err"; then
      echo "$(elapsed) kill worker-$n SIG$sig" >>"$S/kills"
    else
      echo "$(elapsed) kill worker-$n SIG$sig failed" >>"$S/kills"
    fi
    n=$("$ROOT/scripts/stack" worker "$STACK_DIR" 2>>"$S/killer.err") ||
      { echo "$(elapsed) worker start failed" >>"$S/kills"; continue; }
    echo "$(elapsed) start worker-$n" >>"$S/kills"
  done
}

LOAD1=$(awk '{ print $1 }' /proc/loadavg)
echo idle >"$S/phase"
: >"$S/pings"; : >"$S/diag"; : >"$S/backups"; : >"$S/kills"
sampler &
LOOP_PIDS+=($!)
# The idle baseline: the stack up, no load, two samples.
sleep $((2 * SAMPLE))
say "load: $TERMINALS terminals for $MINUTES min, a worker killed every ${KILL_EVERY}s"
echo load >"$S/phase"
for ((i = 1; i <= TERMINALS; i++)); do
  for ((k = 1; k <= STRAY; k++)); do
    # shellcheck disable=SC1090
    (source "$STACK_DIR/terminals/soak$i/env" &&
      NIMBUS_STATE_DIR=$S/stray-$i-$k "$BIN/nimbus-agent" ping >/dev/null) ||
      die "the stray device $k of soak$i could not ping"
  done
done
for ((i = 1; i <= TERMINALS; i++)); do
  ping_loop "$i" & LOOP_PIDS+=($!)
  diag_loop "$i" & LOOP_PIDS+=($!)
  backup_loop "$i" & LOOP_PIDS+=($!)
done
if ((KILL_EVERY > 0)); then killer & LOOP_PIDS+=($!); fi
END=$((SECONDS + MINUTES * 60))
while ((SECONDS < END)); do
  sleep 30
  say "$(elapsed)s: mosquitto $(awk '/^VmRSS/ { print $2 }' \
    "/proc/$BROKER_PID/status") KiB, $(grep -c '^final' "$S/diag") diag" \
    "finals, $(grep -c '^backup ' "$S/backups") backups," \
    "$(wc -l <"$S/kills") kill lines"
done
touch "$S/stop"
say "load stopped; waiting for the loops to finish their current step"
for p in "${LOOP_PIDS[@]:1}"; do wait "$p" || true; done
echo tail >"$S/phase"
LOAD2=$(awk '{ print $1 }' /proc/loadavg)
say "tail: ${TAIL}s without load"
sleep "$TAIL"
touch "$S/sampler-stop"
wait "${LOOP_PIDS[0]}" || true
echo end >"$S/phase"
sample_once >>"$S/samples"
LOOP_PIDS=()

# --- the allocator probe ----------------------------------------------

# malloc_stats() prints to the broker's stderr, its log (scripts/stack).
probe_stats() {
  timeout 60 gdb -p "$BROKER_PID" -batch -ex 'call (void)malloc_stats()' \
    >/dev/null 2>&1 || return 1
  sleep 0.2
  awk '/^Total \(incl. mmap\):/ { t = 1; next }
       t && /system bytes/ { s = $NF } t && /in use bytes/ { u = $NF; t = 0 }
       END { print s, u }' "$STACK_DIR/broker/mosquitto.log"
}
PROBE_LINE=''
if ((PROBE)); then
  rss_a=$(awk '/^VmRSS/ { print $2 }' "/proc/$BROKER_PID/status")
  heap_a=$(sys_value heap/current)
  if st_a=$(probe_stats) &&
     timeout 60 gdb -p "$BROKER_PID" -batch -ex 'call (int)malloc_trim(0)' \
       >/dev/null 2>&1 && st_b=$(probe_stats); then
    rss_b=$(awk '/^VmRSS/ { print $2 }' "/proc/$BROKER_PID/status")
    PROBE_LINE="$rss_a $rss_b $st_a $st_b $heap_a"
  else
    say "gdb could not attach to mosquitto: probe skipped"
  fi
fi

# --- verification -------------------------------------------------------

say "restoring every snapshot and comparing it with its list"
verified=0 mismatched=0
while read -r kind i n snap _; do
  [[ $kind == backup ]] || continue
  r=$S/restore-$i-$n
  # shellcheck disable=SC1090
  if (source "$STACK_DIR/terminals/soak$i/env" &&
      "$BIN/nimbus-agent" restore --json --timeout 60000 --snapshot "$snap" \
        "$r" >/dev/null 2>>"$S/restore.err") &&
     (cd "$r" && find data -type f | sort | xargs sha256sum) |
       cmp -s - "$S/t$i/lists/$n"; then
    verified=$((verified + 1))
  else
    mismatched=$((mismatched + 1))
    echo "snapshot $snap (terminal soak$i, backup $n) did not restore as backed up" >>"$S/restore.err"
  fi
  rm -rf "$r"
done <"$S/backups"

# Run counts of every diag.sleep key (nb:diag:<key>).
grep '^sent ' "$S/diag" | awk '{ print $2 }' >"$S/diag-keys"
: >"$S/diag-runs"
if [[ -s $S/diag-keys ]]; then
  split -l 500 "$S/diag-keys" "$S/diag-keys."
  for f in "$S"/diag-keys.*; do
    # shellcheck disable=SC2046
    redis --raw MGET $(sed 's/^/nb:diag:/' "$f") |
      awk '{ print ($0 == "" ? 0 : $0) }' >"$f.runs"
    paste -d' ' "$f" "$f.runs" >>"$S/diag-runs"
  done
fi

# --- report ---------------------------------------------------------------

python3 - "$S" "$SAMPLE" "$MINUTES" "$TERMINALS" "$WORKERS" "$KILL_EVERY" \
  "$PING_BURST" "$BACKUP_EVERY s (big file $BACKUP_MIB MiB)" "$TAIL" "$LOAD1" "$LOAD2" "$(nproc)" \
  "$verified" "$mismatched" "$PROBE_LINE" "$BROKER_MALLOC" \
  "$STRAY" <<'EOF'
import collections, re, sys
(s, sample, minutes, terms, workers, kill_every, burst, bevery, tail, l1, l2,
 cores, verified, mismatched, probe, bmalloc, stray) = sys.argv[1:]
MiB = 1024.0

rows = []  # (t, phase, name, pid, value)
for line in open(s + "/samples"):
    p = line.split()
    if len(p) != 5 or p[4] == "-":
        continue
    try:
        rows.append((float(p[0]), p[1], p[2], p[3], float(p[4])))
    except ValueError:
        pass

def fit(pts):
    """Least-squares slope of (t seconds, v) in v per minute."""
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    d = sum((t - mt) ** 2 for t, _ in pts)
    return 0.0 if d == 0 else sum((t - mt) * (v - mv) for t, v in pts) / d * 60

print()
print("scripts/bench soak: %s cores shared with other work; %s terminals, %s "
      "worker(s), %s min of load, a worker killed every %s s (SIGKILL and "
      "SIGTERM in turn), %s pings per terminal per second, a backup per "
      "terminal every %s, diag.sleep one after another; %s s of idle tail; "
      "load average %s before, %s at the end of the load"
      % (cores, terms, workers, minutes, kill_every, burst, bevery, tail,
         l1, l2))
print()
print("mosquitto's malloc: %s; devices per terminal that connected once and "
      "never came back: %s" % (bmalloc, stray))

# RSS over time: one row a minute (the sample nearest each minute mark).
series = collections.defaultdict(list)  # key -> [(t, phase, v)]
for t, ph, name, pid, v in rows:
    key = name if not name.startswith("worker-") else "%s (pid %s)" % (name, pid)
    series[key].append((t, ph, v))
procs = [k for k in series if not k.startswith(("sys.", "redis.used"))]
procs.sort(key=lambda k: (k != "mosquitto", k != "redis", k))
extra = ["sys.heap.current", "sys.store.messages.count",
         "sys.store.messages.bytes", "sys.clients.total",
         "sys.clients.disconnected", "sys.retained", "redis.used_memory"]
load_start = min((t for t, ph, *_ in rows if ph == "load"), default=0)
ts = sorted({t for t, *_ in rows})
print()
print("RSS over time, MiB (t: seconds since the stack was up; workers: the "
      "sum of those alive; broker: its own count of allocated bytes and its "
      "stored messages, from $SYS):")
print()
print("| t s | phase | mosquitto RSS | broker heap | stored msgs | stored "
      "MiB | clients (offline) | redis RSS | redis used | workers RSS (n) |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
marks, nxt = [], 0.0
for t in ts:
    if t >= nxt:
        marks.append(t)
        nxt = t + 60
if ts and ts[-1] not in marks:
    marks.append(ts[-1])
def at(key, t):
    v = [x for x in series.get(key, []) if x[0] == t]
    return v[0][2] if v else None
def f(v, div=MiB, fmt="%.1f"):
    return "-" if v is None else fmt % (v / div)
for t in marks:
    ph = [r[1] for r in rows if r[0] == t][0]
    ws = [x[2] for k, xs in series.items() if k.startswith("worker-")
          for x in xs if x[0] == t]
    cl, dc = at("sys.clients.total", t), at("sys.clients.disconnected", t)
    print("| %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s (%d) |" % (
        t, ph, f(at("mosquitto", t)), f(at("sys.heap.current", t), MiB * MiB),
        f(at("sys.store.messages.count", t), 1, "%.0f"),
        f(at("sys.store.messages.bytes", t), MiB * MiB),
        "-" if cl is None else "%.0f (%.0f)" % (cl, dc or 0),
        f(at("redis", t)), f(at("redis.used_memory", t), MiB * MiB),
        "%.1f" % (sum(ws) / MiB), len(ws)))

print()
print("Per process, MiB: idle is the baseline before any load; slope: least "
      "squares over the load, MiB per minute:")
print()
print("| process | samples | idle | start of load | peak | end of load | "
      "after the tail | slope MiB/min |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def stats(key, div):
    xs = series[key]
    idle = [v for t, ph, v in xs if ph == "idle"]
    load = [(t, v) for t, ph, v in xs if ph == "load"]
    after = [v for t, ph, v in xs if ph in ("tail", "end")]
    allv = [v for _, _, v in xs]
    g = lambda v: "-" if v is None else "%.1f" % (v / div)
    return (len(xs), g(idle[-1] if idle else None),
            g(load[0][1] if load else None), g(max(allv)),
            g(load[-1][1] if load else None), g(after[-1] if after else None),
            "%+.2f" % (fit(load) / div))
for key in procs + ["sys.heap.current", "sys.store.messages.bytes",
                    "redis.used_memory"]:
    if key not in series:
        continue
    name = {"sys.heap.current": "mosquitto's own allocations ($SYS heap)",
            "sys.store.messages.bytes": "mosquitto's stored messages ($SYS)",
            "redis.used_memory": "redis used_memory"}.get(key, key)
    div = MiB if key in procs else MiB * MiB
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % ((name,) + stats(key, div)))

if probe:
    p = probe.split()
    rss_a, rss_b, sys_a, use_a, sys_b, use_b = (float(x) for x in p[:6])
    heap = p[6]
    print()
    print("mosquitto's allocator after the tail (gdb: malloc_stats, then "
          "malloc_trim(0)): RSS %.1f MiB; glibc holds %.1f MiB from the system, "
          "%.1f MiB of it in use (the broker's own count: %s MiB); after "
          "malloc_trim(0): RSS %.1f MiB, %.1f MiB from the system, %.1f MiB "
          "in use." % (rss_a / MiB, sys_a / MiB / MiB, use_a / MiB / MiB,
                       "-" if heap == "-" else "%.1f" % (float(heap) / MiB / MiB),
                       rss_b / MiB, sys_b / MiB / MiB, use_b / MiB / MiB))

# Task counts.
pings = errs = bursts = failed = 0
for line in open(s + "/pings"):
    bursts += 1
    m = re.search(r"count=(\d+).*errors=(\d+)", line)
    if line.startswith("rc=0") and m:
        pings += int(m.group(1))
        errs += int(m.group(2))
    else:
        failed += 1
sent = ok = err = nofinal = 0
for line in open(s + "/diag"):
    w = line.split()
    if w[0] == "sent": sent += 1
    elif w[0] == "final" and w[2] == "ok": ok += 1
    elif w[0] == "final": err += 1
    elif w[0] == "nofinal": nofinal += 1
finals = {}
for line in open(s + "/diag"):
    w = line.split()
    if w[0] in ("final", "nofinal"):
        finals[w[1]] = w[2] if w[0] == "final" else "none"
dup = lost = 0
runs_seen = 0
for line in open(s + "/diag-runs"):
    k, r = line.split()
    r = int(r)
    runs_seen += r
    if r > 1: dup += 1
    if r == 0 and finals.get(k) == "ok": lost += 1
unfinished = sent - len(finals)
bk = bf = retried = 0
for line in open(s + "/backups"):
    w = line.split()
    if w[0] == "backup":
        bk += 1
        if w[4] != "tries=1": retried += 1
    else:
        bf += 1
kills = [l for l in open(s + "/kills") if " kill " in l]
print()
print("Tasks (%d worker kills):" % len(kills))
print()
print("| task | sent | final ok | final error | no final | duplicates | lost |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
print("| ping (bursts of %s, 4 in flight) | %d bursts | %d | %d | %d bursts "
      "failed (no reply for 10 s) | - | - |" % (burst, bursts, pings, errs, failed))
print("| diag.sleep (runs counted in Redis: %d) | %d | %d | %d | %d (+%d cut "
      "short at the end) | %d | %d |" % (runs_seen, sent, ok, err, nofinal,
                                          unfinished, dup, lost))
print("| backup (then restore of every snapshot) | %d | %d (%d after a "
      "retry) | %d | - | - | %s restored and verified, %s not |"
      % (bk + bf, bk, retried, bf, verified, mismatched))
EOF
if [[ -s $S/restore.err ]]; then
  echo; echo "restore problems:"; head -n 20 "$S/restore.err"
fi
