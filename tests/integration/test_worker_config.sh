# A worker serves only the types its config names (and ping advertises
# just those); with unserved = wildcard (for brokers without nimbus_auth's
# re-routing) a type nobody serves gets 400 from the catch-all group on
# cloud/v1/task/+/+, which the broker then never re-routes around; a
# retained task is never acted on; unserved = off joins no such group, and
# an unknown unserved value is refused. (unserved = broker, the default:
# test_unserved.sh.)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--types ping --unserved wildcard"
nb_stack_up 1
nb_terminal ivan
grep -q 'nimbus-worker ready .* unserved=wildcard' "$NB_DIR/worker-1/log" ||
  nb_fail "worker 1 is not in wildcard mode"

json=$(nb_agent ping --json) || nb_fail "ping failed"
[[ $json == *'"types":["ping"]'* ]] || nb_fail "ping advertises other types: $json"

set +e
out=$(nb_agent call task.status '{"task": "some-task-id-0000"}' 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status for a type nobody serves"
[[ $out == *'"code":400'* && $out == *'task.status'* ]] ||
  nb_fail "expected 400 naming task.status: $out"
grep -q 'WK-UNKNOWN-TYPE' "$NB_DIR/worker-1/log" ||
  nb_fail "the worker did not log the unknown type"
# The catch-all subscription takes every type: the broker re-routes nothing.
grep -q 'BA-ROUTE-SERVED .*task type +$' "$NB_DIR/broker/mosquitto.log" ||
  nb_fail "the broker did not count the catch-all group as serving every type"
if grep -q 'BA-ROUTE-UNSERVED' "$NB_DIR/broker/mosquitto.log"; then
  nb_fail "the broker re-routed around a catch-all group"
fi

# A retained task (only an admin may publish one) reaches the workers'
# subscriptions when they join, and must be ignored.
out=$NB_DIR/replies.hex
nb_sub_bg "$out" -u ivan -P "$NIMBUS_PASSWORD" -i ivan.rawsub0001 \
  -t cloud/v1/reply/ivan -F '%x'
printf '\x82\xa1v\x01\xa2id\xb3retained-task-00001' >"$NB_DIR/task"
mosquitto_pub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
  -u "$NIMBUS_ADMIN_USER" -P "$NIMBUS_ADMIN_PASSWORD" -i admin-retain \
  -q 1 -r -t cloud/v1/task/ping/ivan -f "$NB_DIR/task"
n=$(nb_stack worker "$NB_DIR") || nb_fail "cannot start another worker"
# Marker pings, sent after the retained task reached both workers, until
# each worker has answered one: a worker takes its messages in order, so by
# then each has met the retained task (worker 1 when it was published, the
# new one when it subscribed); once the last marker's reply is in $out,
# a reply to the retained task would be there too.
declare -A answered=()
for ((k = 10; k < 50 && ${#answered[@]} < 2; k++)); do
  mid=retained-marker-$k-00
  r=$(nb_agent call ping --id "$mid") || nb_fail "marker ping $k: $r"
  answered[$(jget "$r" 'r["result"]["worker"]')]=1
done
((${#answered[@]} == 2)) || nb_fail "40 marker pings did not reach both workers"
nb_wait_for "grep -q '$(printf %s "$mid" | xxd -p | tr -d '\n')' '$out'" 10 ||
  nb_fail "the last marker's reply never reached the raw subscriber"
if grep -q "$(printf 'retained-task-00001' | xxd -p | tr -d '\n')" "$out"; then
  nb_fail "a worker answered a retained task"
fi
grep -q WK-RETAINED "$NB_DIR"/worker-*/log &&
  nb_log "a worker saw the retained task and ignored it"

# unserved = off: the typed group alone.
n=$(NIMBUS_WORKER_FLAGS="--types ping --unserved off" nb_stack worker \
  "$NB_DIR") || nb_fail "cannot start a worker with --unserved off"
grep -q 'WK-SUBSCRIBED .*(1 subscriptions)' "$NB_DIR/worker-$n/log" ||
  nb_fail "a worker with --unserved off: $(grep WK-SUBSCRIBED "$NB_DIR/worker-$n/log")"
set +e
out=$("$NIMBUS_BIN/nimbus-worker" --unserved maybe 2>&1)
rc=$?
set -e
nb_assert_eq 2 "$rc" "exit status for --unserved maybe"
[[ $out == *'unserved must be broker, wildcard or off'* ]] ||
  nb_fail "unexpected message for --unserved maybe: $out"
nb_log "ok"
