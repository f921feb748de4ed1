# nimbus-agent commands side by side on one device: a long task runs in one
# process while others ping. Each takes its own session slot (client id
# <terminal>.<device> for the first, <terminal>.<device>-<k> for the
# others), so none closes another's connection or takes its session, and
# the long task's final reply reaches its own process (not a ping that
# happens to hold the same session, which would leave the task waiting for
# its 30 s re-send: the call's --timeout would run out first).
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 1
nb_terminal dave

log=$NB_DIR/broker/mosquitto.log
nb_agent call diag.sleep '{"ms": 2500, "key": "side"}' --timeout 15000 \
  >"$NB_DIR/long.out" 2>"$NB_DIR/long.err" &
long=$!
nb_wait_for "test -s '$NIMBUS_STATE_DIR/device-id'" 20 ||
  nb_fail "the first agent made no device id"
dev=$(cat "$NIMBUS_STATE_DIR/device-id")
nb_wait_for "grep -q 'as dave\\.$dev ' '$log'" 20 ||
  nb_fail "the long task's agent did not connect as dave.$dev"

# Pings for as long as the long task runs, so that one of them is
# connected when its reply is published.
pings=0
while kill -0 "$long" 2>/dev/null; do
  out=$(nb_agent ping) || nb_fail "ping beside a running task: $out"
  pings=$((pings + 1))
done
set +e
wait "$long"
rc=$?
set -e
nb_assert_eq 0 "$rc" "exit status of the long task ($(cat "$NB_DIR/long.err"))"
grep -q '"slept":2500' "$NB_DIR/long.out" ||
  nb_fail "long task's reply: $(cat "$NB_DIR/long.out")"
((pings >= 2)) || nb_fail "only $pings pings ran beside the long task"
grep -q "as dave\\.$dev-1 " "$log" ||
  nb_fail "no ping connected as dave.$dev-1"
if grep -q "already connected" "$log"; then
  nb_fail "a session was taken over: $(grep 'already connected' "$log")"
fi

# Alone again, a command holds the device's own session.
nb_agent ping >/dev/null || nb_fail "ping alone"
[[ $(grep -c "as dave\\.$dev " "$log") -ge 2 ]] ||
  nb_fail "the lone ping did not use dave.$dev"
nb_log "ok ($pings pings beside the task)"
