# Helpers every integration test sources: a stack of its own (scripts/stack)
# in a temporary directory, on free loopback ports, stopped and removed at
# exit whatever happens, with the tails of its logs printed when the test
# fails. ctest runs the tests as `bash tests/integration/test_X.sh` with
# NIMBUS_BUILD_DIR and NIMBUS_SOURCE_DIR set; both have defaults so a test
# also runs by hand from the checkout.
#
#   nb_stack_up [WORKERS]    start a stack; exports NIMBUS_MQTT_HOST, ..._PORT,
#                            NIMBUS_REDIS_*, NIMBUS_ADMIN_*, NIMBUS_ACCOUNTS,
#                            NIMBUS_DIR (extra worker flags: NIMBUS_WORKER_FLAGS)
#   nb_terminal ID           add terminal account ID; exports NIMBUS_TERMINAL,
#                            NIMBUS_PASSWORD, NIMBUS_STATE_DIR
#   nb_terminals ID...       nb_terminal for each (the last one stays the
#                            default), remembering each one's account
#   nb_as ID CMD...          run CMD as terminal ID of nb_terminals
#   nb_stack ARGS...         scripts/stack with this build dir
#   nb_agent ARGS...         $NIMBUS_BIN/nimbus-agent
#   nb_redis ARGS...         redis-cli against the stack's redis
#   nb_fail MSG              print FAIL and exit 1
#   nb_assert_eq WANT GOT [WHAT]
#   nb_wait_for CMD TIMEOUT  run CMD (a string, eval'd) until it succeeds;
#                            1 after TIMEOUT seconds
#   nb_log_tail [LINES]      the last lines of every log of the stack
#   nb_pids                  "name pid" of every process the stack started
#   nb_alive PID             true if PID runs (zombies do not count)
#   nb_ping_p99_max          the bound, in ms, on a ping's p99 beside load:
#                            50, or 250 under AddressSanitizer
#   nb_on_exit CMD           run CMD (eval'd) at exit, before the stack stops
#                            (e.g. to end the test's own background clients);
#                            do not replace the EXIT trap
#
# At exit the test's own background jobs are killed, the stack is stopped
# and its directory removed (kept with NIMBUS_KEEP_FAILED=1 when the test
# failed); a test also fails if any log of its stack holds a sanitizer
# report (the ASan build runs the same tests).

set -euo pipefail

NIMBUS_SOURCE_DIR=${NIMBUS_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
NIMBUS_BUILD_DIR=${NIMBUS_BUILD_DIR:-$NIMBUS_SOURCE_DIR/build}
NIMBUS_BIN=$NIMBUS_BUILD_DIR/bin
export NIMBUS_SOURCE_DIR NIMBUS_BUILD_DIR NIMBUS_BIN

NB_TEST=$(basename "${0%.sh}")
NB_DIR=''
NB_ON_EXIT=()
NB_WATCHER=''

nb_on_exit() { NB_ON_EXIT+=("$1"); }

nb_log() { echo "[$NB_TEST] $*" >&2; }

nb_fail() {
  echo "[$NB_TEST] FAIL: $*" >&2
  exit 1
}

nb_assert_eq() {
  local want=$1 got=$2 what=${3:-value}
  if [[ $want != "$got" ]]; then
    nb_fail "$what: expected '$want', got '$got'"
  fi
}

# nb_wait_for CMD TIMEOUT: polls CMD (eval'd, output discarded) every 0.1 s.
nb_wait_for() {
  local cmd=$1 timeout=${2:-10} t
  t=$((SECONDS + timeout))
  while :; do
    if eval "$cmd" >/dev/null 2>&1; then return 0; fi
    ((SECONDS < t)) || return 1
    sleep 0.1
  done
}

nb_stack() {
  NIMBUS_BUILD_DIR=$NIMBUS_BUILD_DIR "$NIMBUS_SOURCE_DIR/scripts/stack" "$@"
}

nb_agent() { "$NIMBUS_BIN/nimbus-agent" "$@"; }

# nb_sub_bg OUT ARGS...: mosquitto_sub in the background (MQTT 5, QoS 1)
# with ARGS (account, client id, topics, format), its output in OUT, and
# already subscribed when this returns: a first run (-E) makes a persistent
# session holding the subscriptions and exits once they are granted; the
# background run resumes that session, so nothing published in between is
# missed. Ends with the test. Sets NB_SUB_PID.
nb_sub_bg() {
  local out=$1
  shift
  local common=(-h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 -c -x 600 -q 1)
  mosquitto_sub "${common[@]}" "$@" -E -W 10 >/dev/null 2>>"$NB_DIR/sub.err" ||
    nb_fail "mosquitto_sub $* could not subscribe: $(cat "$NB_DIR/sub.err")"
  mosquitto_sub "${common[@]}" "$@" >"$out" 2>>"$NB_DIR/sub.err" &
  NB_SUB_PID=$!
  nb_on_exit "kill $NB_SUB_PID 2>/dev/null || true"
}

# call TYPE [JSON-ARGS] [agent flags]: one task through `nimbus-agent
# call`; its reply (JSON) on stdout whatever the exit status.
# The agent's messages go to calls.log in the stack's directory, shown with
# the servers' logs when a test fails (nb_log_tail).
call() {
  local log=/dev/null rc=0
  [[ -n ${NB_DIR:-} && -d $NB_DIR ]] && log=$NB_DIR/calls.log
  nb_agent call "$@" 2>>"$log" || rc=$?
  ((rc == 0)) || echo "(exit $rc: call $1)" >>"$log"
}

# jf JSON KEY...: top-level numbers, booleans and plain strings of the
# agent's one-line JSON (backup, restore summaries), space-separated, in
# the order of the KEYs (python starts slowly).
jf() {
  local j=$1 k v out=()
  shift
  for k; do
    v=$(grep -o "\"$k\":\(\"[^\"]*\"\|[^,}]*\)" <<<"$j" | head -n1) || true
    v=${v#*:}
    v=${v#\"}
    out+=("${v%\"}")
  done
  echo "${out[*]}"
}

# jget JSON EXPR: prints the Python expression EXPR evaluated on the JSON
# document as `r` (e.g. 'r["result"]["have"]'). The JSON goes through
# stdin: a 256 KiB segment in base64 is more than one argument may hold.
# The system's python3 where there is one: a version manager's shim in
# front of it (pyenv's) costs 0.3 s a start, and tests start many.
if [[ -x /usr/bin/python3 ]]; then
  python3() { /usr/bin/python3 "$@"; }
fi

jget() {
  python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2" <<<"$1"
}

nb_redis() {
  REDISCLI_AUTH=$NIMBUS_REDIS_PASSWORD \
    redis-cli -h "$NIMBUS_REDIS_HOST" -p "$NIMBUS_REDIS_PORT" "$@"
}

# Pings kept waiting behind a heavy pool would take seconds; under
# AddressSanitizer, beside other tests on two cores, the scheduler's noise
# alone reaches past 50 ms (60 ms seen).
nb_ping_p99_max() {
  if [[ ${NIMBUS_SANITIZE:-0} == 1 ]]; then echo 250; else echo 50; fi
}

# True if PID is a running process (a zombie, which an init that does not
# reap may keep around, is not running).
nb_alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z && ${st%% *} != X ]]
}

nb_pids() {
  [[ -n $NB_DIR && -f $NB_DIR/procs ]] || return 0
  local name pid
  while read -r name pid _; do echo "$name $pid"; done <"$NB_DIR/procs"
}

nb_log_tail() {
  local n=${1:-25} f
  [[ -n $NB_DIR && -d $NB_DIR ]] || return 0
  for f in "$NB_DIR"/broker/mosquitto.log "$NB_DIR"/redis/redis.log \
           "$NB_DIR"/worker-*/log "$NB_DIR"/calls.log; do
    [[ -f $f ]] || continue
    echo "---- ${f#"$NB_DIR"/} (last $n lines) ----" >&2
    tail -n "$n" "$f" >&2
  done
  echo "---- end of logs ($NB_DIR) ----" >&2
}

# Sanitizer reports in the stack's logs (ASan, UBSan, LSan).
nb__sanitizer_reports() {
  [[ -n $NB_DIR && -d $NB_DIR ]] || return 1
  grep -l -E 'ERROR: (Address|Leak|Undefined)Sanitizer|WARNING: ThreadSanitizer|runtime error: ' \
    "$NB_DIR"/broker/mosquitto.log "$NB_DIR"/worker-*/log 2>/dev/null
}

nb__cleanup() {
  local rc=$? reports
  trap - EXIT INT TERM HUP
  set +e
  [[ -n $NB_WATCHER ]] && kill "$NB_WATCHER" 2>/dev/null
  local c
  for c in "${NB_ON_EXIT[@]+"${NB_ON_EXIT[@]}"}"; do eval "$c"; done
  # Whatever the test left running in the background (a mosquitto_sub, a
  # client) ends with it: it would otherwise outlive the test, retrying a
  # broker that is gone.
  local jobs_left
  jobs_left=$(jobs -p)
  [[ -n $jobs_left ]] && kill $jobs_left 2>/dev/null
  if [[ -n $NB_DIR && -d $NB_DIR ]]; then
    nb_stack stop "$NB_DIR" >/dev/null 2>"$NB_DIR/stop.err"
    if (($? != 0)); then
      nb_log "scripts/stack stop failed:"
      cat "$NB_DIR/stop.err" >&2
      rc=1
    fi
    if reports=$(nb__sanitizer_reports); then
      nb_log "FAIL: sanitizer report in: $reports"
      local f
      for f in $reports; do
        grep -n -A 30 -E 'ERROR: (Address|Leak|Undefined)Sanitizer|WARNING: ThreadSanitizer|runtime error: ' "$f" | head -n 60 >&2
      done
      rc=1
    fi
    if ((rc != 0)); then
      nb_log_tail 40
    fi
    if ((rc != 0)) && [[ -n ${NIMBUS_KEEP_FAILED:-} ]]; then
      nb_log "kept $NB_DIR"
    else
      rm -rf "$NB_DIR"
    fi
  fi
  if ((rc == 0)); then nb_log "PASS"; else nb_log "FAILED (exit $rc)"; fi
  exit "$rc"
}

# A signal (ctest's timeout, Ctrl-C) still stops the stack: the EXIT trap
# runs when the shell exits through these.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap nb__cleanup EXIT

nb_stack_up() {
  local workers=${1:-2} out
  [[ -z $NB_DIR ]] || nb_fail "nb_stack_up called twice"
  NB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-$NB_TEST.XXXXXX")
  if ! out=$(nb_stack start "$NB_DIR" --workers "$workers"); then
    nb_fail "scripts/stack start failed"
  fi
  eval "$out"
  [[ ${NIMBUS_DIR:-} == "$NB_DIR" ]] || nb_fail "stack start printed no exports"
  # Should this shell die without running its EXIT trap (SIGKILL, as from
  # a test harness's timeout), a watcher in its own session stops the
  # stack and removes the directory. nb__cleanup ends the watcher first.
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
    NIMBUS_BUILD_DIR=$4 "$2" stop "$3"; rm -rf "$3"' _ "$$" \
    "$NIMBUS_SOURCE_DIR/scripts/stack" "$NB_DIR" "$NIMBUS_BUILD_DIR" \
    </dev/null >/dev/null 2>&1 &
  NB_WATCHER=$!
  nb_log "stack up in $NB_DIR (mqtt $NIMBUS_MQTT_PORT, redis $NIMBUS_REDIS_PORT, $workers workers)"
}

declare -A NB_PASSWORD=() NB_STATE_DIR=()
nb_terminals() {
  local t
  for t; do
    nb_terminal "$t"
    NB_PASSWORD[$t]=$NIMBUS_PASSWORD
    NB_STATE_DIR[$t]=$NIMBUS_STATE_DIR
  done
}

nb_as() {
  local t=$1
  shift
  NIMBUS_TERMINAL=$t NIMBUS_PASSWORD=${NB_PASSWORD[$t]} \
    NIMBUS_STATE_DIR=${NB_STATE_DIR[$t]} "$@"
}

nb_terminal() {
  local id=$1 out
  [[ -n $NB_DIR ]] || nb_fail "nb_terminal before nb_stack_up"
  out=$(nb_stack terminal "$NB_DIR" "$id") || nb_fail "scripts/stack terminal $id failed"
  eval "$out"
}

# nb_cancel_midway TYPE ARGS ID TOTAL: runs an offload task TYPE with ARGS
# as task ID with --progress, cancels it at its first progress reply and
# checks that it was running then, that it ended with 499 "cancelled by
# task.cancel", and that every progress reply counted against TOTAL and
# rose, short of it.
nb_cancel_midway() {
  local type=$1 args=$2 id=$3 total=$4 out=$NB_DIR/cancel-$3 pid r
  nb_agent call "$type" "$args" --progress --timeout 60000 --id "$id" \
    >"$out.json" 2>"$out.err" &
  pid=$!
  nb_wait_for "grep -q '\"progress\"' '$out.err'" 30 || nb_fail "$id: no progress: $(cat "$out.err")"
  r=$(call task.cancel "{\"task\": \"$id\"}")
  [[ $r == *'"state":"running"'* ]] || nb_fail "$id: cancel: $r"
  wait "$pid" || true
  r=$(<"$out.json")
  [[ $r == *'"code":499'* && $r == *"cancelled by task.cancel"* ]] ||
    nb_fail "$id: the cancelled task: $r $(tail -n 3 "$out.err")"
  python3 - "$out.err" "$total" <<'PY' || nb_fail "$id: progress: $(cat "$out.err")"
import json, sys
total = int(sys.argv[2])
p = [json.loads(l) for l in open(sys.argv[1]) if '"progress"' in l]
done = [x["done"] for x in p]
assert p and all(x["total"] == total for x in p), p
assert done == sorted(done) and 0 < done[-1] < total, done
PY
}
