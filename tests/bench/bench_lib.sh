# shellcheck shell=bash
# What the benches of a whole stack share, sourced by bench_backup.sh and
# bench_share.sh: the build directory, messages, the options each takes
# (--workers, --jobs, --rounds, --no-build, --keep), a stack of its own in
# a temporary directory (scripts/stack), stopped and removed at exit
# whatever happens, terminal accounts, the raw MQTT baseline, and the
# arithmetic and timing helpers.
#
#   bench_opt ARGS...        takes one common option from the front of
#                            ARGS: sets BENCH_SHIFT to the words it used,
#                            0 when the first is not one of them
#   bench_check_numbers V... each named variable a whole number >= 1 (else
#                            exit 2)
#   bench_build TARGET...    scripts/build of those targets, unless
#                            --no-build; then checks $BIN/<program> of the
#                            programs named in BENCH_PROGRAMS
#   bench_stack_up NAME      the stack: exports its NIMBUS_* variables, sets
#                            STACK_DIR and WORKER_PIDS, stops it at exit
#   bench_terminal ID        a terminal account; prints its export line
#   bench_on_exit CMD        runs CMD (eval'd) at exit, before the stack
#                            stops
#   bench_raw_mqtt SECONDS   the raw 256 KiB QoS 1 baseline (nb-raw-*):
#                            sets RAW_MBS
#   now, fdiv, ratio, ok_if, median, jfield, worker_hwm, run_agent
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${NIMBUS_BUILD_DIR:-$ROOT/build}
[[ $BUILD == /* ]] || BUILD=$PWD/$BUILD
export NIMBUS_BUILD_DIR=$BUILD
BIN=$BUILD/bin

WORKERS=${NIMBUS_WORKERS:-2}
JOBS=16
ROUNDS=3
BUILD_FIRST=1
KEEP=0
STACK_DIR=''
WORKER_PIDS=''
BENCH_ON_EXIT=()
ECHO_PID=''

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

bench_opt() {
  BENCH_SHIFT=0
  case ${1:-} in
    --jobs) JOBS=${2:?--jobs wants a value}; BENCH_SHIFT=2 ;;
    --rounds) ROUNDS=${2:?--rounds wants a value}; BENCH_SHIFT=2 ;;
    --workers) WORKERS=${2:?--workers wants a value}; BENCH_SHIFT=2 ;;
    --no-build) BUILD_FIRST=0; BENCH_SHIFT=1 ;;
    --keep) KEEP=1; BENCH_SHIFT=1 ;;
  esac
}

bench_check_numbers() {
  local v
  for v; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { say "$v wants a number >= 1"; exit 2; }
  done
}

bench_build() {
  if ((BUILD_FIRST)); then
    say "building the agent and the stack in $BUILD"
    "$ROOT/scripts/build" --target "$@" >&2 || die "build failed"
  fi
  local f
  for f in ${BENCH_PROGRAMS:-}; do
    [[ -x $BIN/$f ]] || die "missing $BIN/$f (build it, or drop --no-build)"
  done
}

bench_on_exit() { BENCH_ON_EXIT+=("$1"); }

bench__cleanup() {
  local rc=$? c
  trap - EXIT INT TERM
  for c in "${BENCH_ON_EXIT[@]+"${BENCH_ON_EXIT[@]}"}"; do eval "$c" || true; done
  if [[ -n $ECHO_PID ]]; then
    kill -TERM "$ECHO_PID" 2>/dev/null || true
    wait "$ECHO_PID" 2>/dev/null || true
  fi
  if [[ -n $STACK_DIR ]]; then
    "$ROOT/scripts/stack" stop "$STACK_DIR" >&2 || rc=1
    if ((KEEP)); then say "kept $STACK_DIR"; else rm -rf "$STACK_DIR"; fi
  fi
  exit "$rc"
}

bench_stack_up() {
  STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-bench-$1.XXXXXX")
  trap bench__cleanup EXIT
  trap 'exit 130' INT TERM
  local line
  line=$(NIMBUS_WORKERS=$WORKERS "$ROOT/scripts/stack" start "$STACK_DIR") ||
    die "scripts/stack start failed"
  eval "$line"
  WORKER_PIDS=$(awk '$1 ~ /^worker-/ { printf " %s", $2 }' "$STACK_DIR/procs")
  [[ -n $WORKER_PIDS ]] || die "no worker pids in $STACK_DIR/procs"
}

bench_terminal() {
  "$ROOT/scripts/stack" terminal "$STACK_DIR" "$1" ||
    die "scripts/stack terminal $1 failed"
}

# bench_raw_mqtt SECONDS: what MQTT alone carries here, MB/s into RAW_MBS
# (not in a subshell: the responder must end with this shell): Paho QoS 1
# requests of 256 KiB, $JOBS in flight, through the stack's broker to a
# responder that acks each with 64 bytes (tests/bench/nb-raw-*, no Nimbus
# code), as the admin account.
bench_raw_mqtt() {
  local conn=(--host "$NIMBUS_MQTT_HOST" --port "$NIMBUS_MQTT_PORT"
    --user "$NIMBUS_ADMIN_USER" --password "$NIMBUS_ADMIN_PASSWORD")
  local rt="bench/raw/$$" log=$STACK_DIR/raw-echo.log t line rate
  "$BIN/nb-raw-echo" "${conn[@]}" --client-id "bench-bulk-echo-$$" \
    --req-topic "$rt/req" --reply-topic "$rt/reply" --reply-size 64 \
    2>"$log" &
  ECHO_PID=$!
  t=$((SECONDS + 10))
  until grep -q 'nb-raw-echo ready' "$log"; do
    kill -0 "$ECHO_PID" 2>/dev/null || die "nb-raw-echo exited: $(cat "$log")"
    ((SECONDS < t)) || die "nb-raw-echo not ready within 10 s"
    sleep 0.05
  done
  line=$("$BIN/nb-raw-load" "${conn[@]}" --client-id "bench-bulk-load-$$" \
    --req-topic "$rt/req" --reply-topic "$rt/reply" --size 262144 \
    --inflight "$JOBS" --seconds "$1" --warmup 200) || die "nb-raw-load failed"
  rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$line")
  [[ -n $rate ]] || die "no rate from nb-raw-load: $line"
  kill -TERM "$ECHO_PID" 2>/dev/null || true
  wait "$ECHO_PID" 2>/dev/null || true
  ECHO_PID=''
  RAW_MBS=$(awk -v r="$rate" 'BEGIN { printf "%.1f", r * 262144 / 1e6 }')
}

# The system's python3 where there is one: a version manager's shim in
# front of it (pyenv's) costs 0.3 s a start, which the timings between
# agent runs would count.
if [[ -x /usr/bin/python3 ]]; then
  python3() { /usr/bin/python3 "$@"; }
fi

now() { date +%s.%N; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }'; }
# ok_if EXPR: PASS when the awk expression EXPR (numbers only) holds.
ok_if() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
jfield() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# median of the arguments (numbers): the mean of the middle two of an even
# count.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Peak RSS in KiB of the worker processes, from the kernel's high-water mark.
worker_hwm() {
  local p out=''
  for p in $WORKER_PIDS; do
    out+=" $(awk '/^VmHWM/ { print $2 }' "/proc/$p/status")"
  done
  echo "$out"
}
# run_agent OUT-JSON CMD...: runs the agent, its JSON summary into
# OUT-JSON; prints "<seconds> <peak RSS KiB>".
run_agent() {
  local out=$1
  shift
  python3 - "$out" "$@" <<'EOF'
import resource, subprocess, sys, time
out = sys.argv[1]
t = time.monotonic()
with open(out, "wb") as f:
    rc = subprocess.run(sys.argv[2:], stdout=f).returncode
dt = time.monotonic() - t
if rc != 0:
    sys.exit("agent exited %d: %s" % (rc, " ".join(sys.argv[2:])))
print("%.3f %d" % (dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
EOF
}
