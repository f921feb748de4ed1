#!/usr/bin/env bash
# Checks nimbus_auth.so, nimbusctl and mosquitto.conf.in against a real
# mosquitto: identity (client id tied to the terminal), subscriptions
# authorised (no terminal can join the workers' shared group and swallow
# tasks, FINDINGS.md), publish rules, the 1 MiB limit, tasks of types no
# worker serves re-routed to the unserved topics, and accounts that
# change while the broker runs. It starts its own broker on a free loopback
# port in a temporary directory and stops it by pid on exit.
#
# Usage: broker-config/selftest.sh BUILD_DIR   (BUILD_DIR holds
# bin/nimbusctl and lib/nimbus_auth.so). Exit status 0 when every check
# passes; the first failure prints the broker's log and exits 1.
# SELFTEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

BUILD=${1:?usage: selftest.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CTL=$BUILD/bin/nimbusctl
PLUGIN=$BUILD/lib/nimbus_auth.so
TEMPLATE=$HERE/mosquitto.conf.in
PFX=cloud/v1
HOST=127.0.0.1

for f in "$CTL" "$PLUGIN" "$TEMPLATE"; do
  [[ -e $f ]] || { echo "selftest: missing $f" >&2; exit 2; }
done
for c in mosquitto mosquitto_pub mosquitto_sub stdbuf timeout; do
  command -v "$c" >/dev/null ||
    { echo "selftest: $c not installed" >&2; exit 2; }
done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-broker-selftest.XXXXXX")
BROKER_PID=
CHILDREN=()
CHECKS=0

cleanup() {
  local rc=$? p
  for p in "${CHILDREN[@]+"${CHILDREN[@]}"}"; do
    kill "$p" 2>/dev/null || true
  done
  if [[ -n $BROKER_PID ]]; then
    kill "$BROKER_PID" 2>/dev/null || true
    # Bounded wait: the broker saves its database on the way out.
    for _ in $(seq 50); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$BROKER_PID" 2>/dev/null || true
  fi
  if [[ ${SELFTEST_KEEP:-0} == 1 ]]; then
    echo "selftest: kept $DIR" >&2
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "selftest: FAIL: $*" >&2
  if [[ -f $DIR/mosquitto.log ]]; then
    echo "--- last lines of mosquitto.log" >&2
    tail -n 25 "$DIR/mosquitto.log" >&2
  fi
  exit 1
}
ok() {
  CHECKS=$((CHECKS + 1))
  echo "selftest: ok: $*"
}

export NIMBUS_ACCOUNTS=$DIR/accounts
ctl() { "$CTL" --accounts "$DIR/accounts" "$@"; }

# ---- accounts and broker ------------------------------------------------
ctl account add admin --role admin --password admin-pw >/dev/null
ctl account add worker --role worker --password worker-pw >/dev/null
ctl account add mon --role monitor --password mon-pw >/dev/null
ctl terminal add alice --password alice-pw >/dev/null
ctl terminal add bob --password bob-pw >/dev/null

port_free() {
  # A connection that succeeds means someone listens there already.
  ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

start_broker() {
  local attempt port
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_free "$port" || continue
    sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$DIR|g" -e "s|@PLUGIN@|$PLUGIN|g" \
      -e "s|@ACCOUNTS@|$DIR/accounts|g" -e "s|@PREFIX@|$PFX|g" \
      -e "s|@USER@|$(id -un)|g" "$TEMPLATE" >"$DIR/mosquitto.conf"
    if grep -q '@[A-Z_]*@' "$DIR/mosquitto.conf"; then
      fail "placeholder left in the generated mosquitto.conf"
    fi
    : >"$DIR/mosquitto.log"
    mosquitto -c "$DIR/mosquitto.conf" >"$DIR/stderr" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 100); do
      if grep -q 'mosquitto version .* running' "$DIR/mosquitto.log"; then
        PORT=$port
        return 0
      fi
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    grep -qi 'address already in use' "$DIR/mosquitto.log" "$DIR/stderr" ||
      { cat "$DIR/stderr" >&2; fail "mosquitto did not start"; }
  done
  fail "no free port after 5 attempts"
}
start_broker
ok "mosquitto started on $HOST:$PORT with nimbus_auth.so"
grep -q 'BA-ACCOUNTS-LOAD nimbus_auth: 5 accounts' "$DIR/mosquitto.log" ||
  fail "plugin did not report loading 5 accounts"

# ---- client helpers -----------------------------------------------------
# pub USER PASSWORD CLIENT_ID TOPIC [mosquitto_pub args...]: QoS 1, MQTT 5,
# debug output (CONNACK, PUBACK reason codes) in $OUT.
pub() {
  local u=$1 p=$2 i=$3 t=$4
  shift 4
  OUT=$(timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V 5 -q 1 -d \
    -u "$u" -P "$p" -i "$i" -t "$t" "$@" 2>&1) || true
}
puback_is() { [[ $OUT == *"received PUBACK (Mid: 1, RC:$1)"* ]]; }
# Accepted: 0, or 0x10 "no matching subscribers" (MQTT 5).
puback_ok() { puback_is 0 || puback_is 16; }
# Refused at CONNECT: 0x87 not authorised.
connack_refused() { [[ $OUT == *"CONNACK (135)"* ]]; }
# suback_is "1, 135": the reason codes of the SUBACK, in order, exactly.
suback_is() {
  [[ $'\n'$OUT$'\n' == *$'\n'"Subscribed (mid: 1): $1"$'\n'* ]]
}

# sub_once USER PASSWORD CLIENT_ID [args...]: subscribes, waits 1 s at
# most, leaves the SUBACK in $OUT.
sub_once() {
  local u=$1 p=$2 i=$3
  shift 3
  OUT=$(timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -V 5 -q 1 -d \
    -u "$u" -P "$p" -i "$i" -W 1 "$@" 2>&1) || true
}

# bg_sub NAME USER PASSWORD CLIENT_ID [args...]: a subscriber in the
# background, output in $DIR/NAME.out; returns once its SUBACK arrived.
bg_sub() {
  local name=$1 u=$2 p=$3 i=$4
  shift 4
  # Line-buffered, so that the SUBACK and each message show up at once.
  stdbuf -oL mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -d -u "$u" -P "$p" \
    -i "$i" "$@" >"$DIR/$name.out" 2>&1 &
  BG_PID=$!
  CHILDREN+=("$BG_PID")
  for _ in $(seq 100); do
    grep -q 'received SUBACK' "$DIR/$name.out" && return 0
    kill -0 "$BG_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$DIR/$name.out" >&2
  fail "$name: no SUBACK"
}

# wait_exit PID SECONDS: true if PID ended within SECONDS.
wait_exit() {
  local pid=$1 n=$(($2 * 20))
  for _ in $(seq "$n"); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  return 1
}

# ---- identity -----------------------------------------------------------
pub alice alice-pw alice.selftest01 "$PFX/task/ping/alice" -m t0
puback_ok || fail "alice with its own client id: $OUT"
ok "terminal connects with client id <terminal>.<device> and publishes its task"

pub alice alice-pw bob.selftest01 "$PFX/task/ping/alice" -m t0
connack_refused || fail "alice as bob.selftest01 was not refused: $OUT"
ok "terminal with another terminal's client id is refused (CONNACK 0x87)"

for id in alice alice.short alice.dev.00001 auto-x; do
  pub alice alice-pw "$id" "$PFX/task/ping/alice" -m t0
  connack_refused || fail "alice as client $id was not refused: $OUT"
done
ok "terminal client ids without a valid device part are refused"

pub alice wrong alice.selftest01 "$PFX/task/ping/alice" -m t0
connack_refused || fail "wrong password accepted: $OUT"
pub nobody x nobody.selftest01 "$PFX/task/ping/nobody" -m t0
connack_refused || fail "unknown user accepted: $OUT"
OUT=$(timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V 5 -q 1 -d \
  -i anon.selftest01 -t "$PFX/task/ping/anon" -m t0 2>&1) || true
connack_refused || fail "anonymous client accepted: $OUT"
ok "wrong password, unknown user and no username are refused"

# ---- publish rules ------------------------------------------------------
pub alice alice-pw alice.selftest01 "$PFX/task/ping/bob" -m t0
puback_is 135 || fail "alice published on bob's task topic: $OUT"
pub alice alice-pw alice.selftest01 "$PFX/reply/bob" -m t0
puback_is 135 || fail "alice published on bob's reply topic: $OUT"
pub alice alice-pw alice.selftest01 "$PFX/task/ping/alice" -m t0 -r
puback_is 135 || fail "alice published a retained task: $OUT"
ok "terminal cannot publish another's task, a reply, or a retained task" \
  "(PUBACK 0x87)"

# ---- subscription rules -------------------------------------------------
sub_once alice alice-pw alice.selftest01 -t "$PFX/reply/bob"
suback_is 135 || fail "alice subscribed to bob's replies: $OUT"
sub_once alice alice-pw alice.selftest01 -t "$PFX/reply/+"
suback_is 135 || fail "alice subscribed to $PFX/reply/+: $OUT"
sub_once alice alice-pw alice.selftest01 -t "#"
suback_is 135 || fail "alice subscribed to #: $OUT"
ok "terminal cannot subscribe to another's replies, reply/+ or # (SUBACK 0x87)"

sub_once mon mon-pw mon-1 -t "$PFX/monitor/#" -t "$PFX/#"
suback_is "1, 135" || fail "monitor rules: $OUT"
sub_once worker worker-pw wk-0 -t "$PFX/task/ping/+"
suback_is 135 || fail "worker's non-shared task subscription allowed: $OUT"
ok "monitor gets monitor/# only;" \
  "a worker's non-shared task subscription is refused"

# ---- shared group: no terminal can swallow tasks ------------------------
bg_sub worker worker worker-pw wk-1 -V 5 -v -C 10 -W 8 \
  -t "\$share/nimbus-ping/$PFX/task/ping/+"
WORKER_PID=$BG_PID
grep -qx 'Subscribed (mid: 1): 1' "$DIR/worker.out" ||
  fail "worker's shared subscription refused"
# The terminal stays connected (its own reply topic is granted) while its
# attempt at the shared group is refused.
bg_sub thief alice alice-pw alice.selftest01 -V 5 -v \
  -t "$PFX/reply/alice" -t "\$share/nimbus-ping/$PFX/task/ping/+"
THIEF_PID=$BG_PID
grep -qx 'Subscribed (mid: 1): 1, 135' "$DIR/thief.out" ||
  fail "terminal's shared subscription not refused: $(cat "$DIR/thief.out")"
# An MQTT 3.1.1 terminal is refused the same way (SUBACK 0x80).
OUT=$(timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -V 311 -q 1 -d -c \
  -u bob -P bob-pw -i bob.selftest01 -W 1 -t "$PFX/reply/bob" \
  -t "\$share/nimbus-ping/$PFX/task/ping/+" 2>&1) || true
suback_is "1, 128" || fail "MQTT 3.1.1 terminal: $OUT"
seq 1 10 | sed 's/^/task-/' |
  timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V 5 -q 1 -u alice \
    -P alice-pw -i alice.selftest02 -t "$PFX/task/ping/alice" -l ||
  fail "publishing 10 tasks failed"
wait_exit "$WORKER_PID" 8 || true
got=$(grep -c "^$PFX/task/ping/alice task-" "$DIR/worker.out" || true)
[[ $got == 10 ]] || fail "worker got $got of 10 tasks"
if grep -q "task-" "$DIR/thief.out"; then fail "the terminal received tasks"; fi
ok "worker's shared subscription gets all 10 tasks; the terminal's is refused"

# ---- replies reach their terminal, and only it --------------------------
pub worker worker-pw wk-2 "$PFX/reply/alice" -m reply-1
puback_ok || fail "worker could not publish a reply: $OUT"
for _ in $(seq 40); do
  grep -q "reply-1" "$DIR/thief.out" && break
  sleep 0.05
done
grep -q "^$PFX/reply/alice reply-1" "$DIR/thief.out" ||
  fail "alice did not get its reply"
pub worker worker-pw wk-2 "$PFX/task/ping/alice" -m forged
puback_is 135 || fail "worker could publish a task: $OUT"
ok "worker publishes replies that reach the terminal; it cannot forge tasks"
kill "$THIEF_PID" 2>/dev/null || true

# ---- 1 MiB limit --------------------------------------------------------
bg_sub big admin admin-pw admin-1 -V 5 -v -t "$PFX/task/size/#"
BIG_PID=$BG_PID
head -c 1048576 /dev/zero | tr '\0' 'a' >"$DIR/1mib"
head -c 1153434 /dev/zero | tr '\0' 'b' >"$DIR/1.1mib"
pub alice alice-pw alice.selftest01 "$PFX/task/size/alice" -f "$DIR/1.1mib"
puback_is 149 ||
  fail "1.1 MiB publish not refused with 0x95: $(head -c 400 <<<"$OUT")"
pub alice alice-pw alice.selftest01 "$PFX/task/size/alice" -f "$DIR/1mib"
puback_ok || fail "1 MiB publish refused: $(head -c 400 <<<"$OUT")"
for _ in $(seq 60); do
  grep -q "aaaa" "$DIR/big.out" && break
  sleep 0.05
done
grep -q "aaaa" "$DIR/big.out" || fail "the 1 MiB task was not delivered"
if grep -q "bbbb" "$DIR/big.out"; then fail "the 1.1 MiB task was delivered"; fi
kill "$BIG_PID" 2>/dev/null || true
ok "a 1.1 MiB publish is refused (PUBACK 0x95) and dropped; 1 MiB passes"

# ---- tasks of types no worker serves ------------------------------------
# wait_line FILE PATTERN: true once FILE holds a line matching PATTERN
# (grep -E), within 3 s.
wait_line() {
  for _ in $(seq 60); do
    grep -qE "$2" "$1" && return 0
    sleep 0.05
  done
  return 1
}
grep -q 'BA-ROUTE nimbus_auth: tasks of types no worker serves go to' \
  "$DIR/mosquitto.log" || fail "the plugin did not say it routes unserved tasks"
bg_sub unserved worker worker-pw wk-u1 -V 5 -v \
  -t "\$share/nimbus-unserved/$PFX/unserved/+/+"
UNSERVED_PID=$BG_PID
grep -qx 'Subscribed (mid: 1): 1' "$DIR/unserved.out" ||
  fail "worker's unserved group refused: $(cat "$DIR/unserved.out")"
bg_sub typed worker worker-pw wk-p1 -V 5 -v \
  -t "\$share/nimbus-ping/$PFX/task/ping/+"
TYPED_PID=$BG_PID
seq 1 10 | sed 's/^/typed-/' |
  timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V 5 -q 1 -u alice \
    -P alice-pw -i alice.selftest03 -t "$PFX/task/ping/alice" -l ||
  fail "publishing 10 tasks of a served type failed"
pub alice alice-pw alice.selftest03 "$PFX/task/nothing/alice" -m unserved-1
puback_ok || fail "a task of a type no worker serves was refused: $OUT"
wait_line "$DIR/unserved.out" "^$PFX/unserved/nothing/alice unserved-1\$" ||
  fail "the task of an unserved type did not reach the unserved group:" \
    "$(cat "$DIR/unserved.out")"
wait_line "$DIR/typed.out" "^$PFX/task/ping/alice typed-10\$" ||
  fail "the typed group did not get its 10 tasks"
got=$(grep -c "^$PFX/task/ping/alice typed-" "$DIR/typed.out" || true)
[[ $got == 10 ]] || fail "the typed group got $got of 10 tasks"
if grep -q "typed-" "$DIR/unserved.out"; then
  fail "a task of a served type reached the unserved group too"
fi
if grep -q "unserved-1" "$DIR/typed.out"; then
  fail "the typed group got a task of another type"
fi
ok "a task of a served type reaches its group once and nothing else;" \
  "one of a type no worker serves goes to $PFX/unserved/<type>/<terminal>"

# The type's only worker goes: its tasks are re-routed from then on.
kill "$TYPED_PID" 2>/dev/null || true
wait_exit "$TYPED_PID" 4 || fail "the typed subscriber did not end"
wait_line "$DIR/mosquitto.log" 'BA-ROUTE-UNSERVED .*task type ping' ||
  fail "the broker did not notice that no worker serves ping any more"
pub alice alice-pw alice.selftest03 "$PFX/task/ping/alice" -m orphan-1
puback_ok || fail "a task of a type whose worker left was refused: $OUT"
wait_line "$DIR/unserved.out" "^$PFX/unserved/ping/alice orphan-1\$" ||
  fail "a task of a type whose only worker left was not re-routed"
ok "when a type's only worker disconnects, its tasks are re-routed"

# A worker of the older kind takes every type (task/+/+): nothing is
# re-routed while it is there.
bg_sub wild worker worker-pw wk-w1 -V 5 -v \
  -t "\$share/nimbus-unserved/$PFX/task/+/+"
WILD_PID=$BG_PID
pub alice alice-pw alice.selftest03 "$PFX/task/nothing/alice" -m wild-1
wait_line "$DIR/wild.out" "^$PFX/task/nothing/alice wild-1\$" ||
  fail "the wildcard group did not get the task"
sleep 0.3
if grep -q "wild-1" "$DIR/unserved.out"; then
  fail "a task was re-routed while a worker takes every type"
fi
kill "$WILD_PID" 2>/dev/null || true
wait_exit "$WILD_PID" 4 || fail "the wildcard subscriber did not end"
ok "while a worker subscribes task/+/+ nothing is re-routed"

# Nobody but the plugin puts tasks there, and only workers read them.
pub alice alice-pw alice.selftest03 "$PFX/unserved/ping/alice" -m forged
puback_is 135 || fail "alice published on an unserved topic: $OUT"
pub worker worker-pw wk-2 "$PFX/unserved/ping/alice" -m forged
puback_is 135 || fail "a worker published on an unserved topic: $OUT"
sub_once alice alice-pw alice.selftest03 -t "$PFX/unserved/#" \
  -t "\$share/nimbus-unserved/$PFX/unserved/+/+" -t "$PFX/unserved/ping/alice"
suback_is "135, 135, 135" || fail "alice subscribed to unserved topics: $OUT"
sub_once mon mon-pw mon-1 -t "$PFX/unserved/#"
suback_is 135 || fail "a monitor subscribed to unserved topics: $OUT"
if grep -q "forged" "$DIR/unserved.out"; then
  fail "a forged task reached the unserved group"
fi
kill "$UNSERVED_PID" 2>/dev/null || true
ok "terminals and workers cannot publish on unserved topics (PUBACK 0x87);" \
  "terminals and monitors cannot subscribe to them (SUBACK 0x87)"

# ---- accounts change while the broker runs ------------------------------
ctl terminal add carol --password carol-pw >/dev/null
pub carol carol-pw carol.selftest01 "$PFX/task/ping/carol" -m t0
puback_ok ||
  fail "carol could not connect right after nimbusctl terminal add: $OUT"
ok "nimbusctl terminal add while the broker runs: the terminal connects at once"

bg_sub carol carol carol-pw carol.selftest01 -V 5 -v -t "$PFX/reply/carol"
CAROL_PID=$BG_PID
ctl terminal del carol
pub carol carol-pw carol.selftest02 "$PFX/task/ping/carol" -m t0
connack_refused || fail "deleted carol could still connect: $OUT"
wait_exit "$CAROL_PID" 4 ||
  fail "deleted carol's live connection was not closed"
grep -q 'Received DISCONNECT (152)' "$DIR/carol.out" ||
  fail "carol not disconnected by administrative action:" \
    "$(cat "$DIR/carol.out")"
ok "nimbusctl terminal del: no new connection," \
  "the live one closed (DISCONNECT 0x98)"

ctl terminal passwd bob --password bob-pw-2 >/dev/null
pub bob bob-pw bob.selftest01 "$PFX/task/ping/bob" -m t0
connack_refused || fail "bob's old password still works: $OUT"
pub bob bob-pw-2 bob.selftest01 "$PFX/task/ping/bob" -m t0
puback_ok || fail "bob's new password does not work: $OUT"
ok "nimbusctl terminal passwd takes effect at the next connect"

# A damaged file is ignored (the broker keeps the table it has) and logged.
cp "$DIR/accounts" "$DIR/accounts.good"
echo "this is not an account" >>"$DIR/accounts"
pub alice alice-pw alice.selftest01 "$PFX/task/ping/alice" -m t0
puback_ok || fail "a damaged accounts file locked alice out: $OUT"
grep -q 'BA-ACCOUNTS-BAD' "$DIR/mosquitto.log" ||
  fail "damaged accounts file not logged"
mv "$DIR/accounts.good" "$DIR/accounts"
ok "a damaged accounts file is logged and the last good one stays in force"

echo "selftest: all $CHECKS checks passed"
