# A worker serves only the types its config names (and ping advertises
# just those); a type nobody serves gets 400 from the catch-all group; a
# retained task is never acted on.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--types ping"
nb_stack_up 1
nb_terminal ivan

json=$(nb_agent ping --json) || nb_fail "ping failed"
[[ $json == *'"types":["ping"]'* ]] || nb_fail "ping advertises other types: $json"

set +e
out=$(nb_agent call task.status '{"task": "some-task-id-0000"}' 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status for a type nobody serves"
[[ $out == *'"code":400'* && $out == *'task.status'* ]] ||
  nb_fail "expected 400 naming task.status: $out"

# A retained task (only an admin may publish one) reaches the workers'
# subscriptions when they join, and must be ignored.
out=$NB_DIR/replies.hex
mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
  -u ivan -P "$NIMBUS_PASSWORD" -i ivan.rawsub0001 \
  -t cloud/v1/reply/ivan -F '%x' >"$out" 2>/dev/null &
sub=$!
nb_on_exit "kill $sub 2>/dev/null || true"
sleep 0.5
printf '\x82\xa1v\x01\xa2id\xb3retained-task-00001' >"$NB_DIR/task"
mosquitto_pub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
  -u "$NIMBUS_ADMIN_USER" -P "$NIMBUS_ADMIN_PASSWORD" -i admin-retain \
  -q 1 -r -t cloud/v1/task/ping/ivan -f "$NB_DIR/task"
n=$(nb_stack worker "$NB_DIR") || nb_fail "cannot start another worker"
nb_agent ping >/dev/null || nb_fail "ping after the retained task"
sleep 1
if grep -q "$(printf 'retained-task-00001' | xxd -p | tr -d '\n')" "$out"; then
  nb_fail "a worker answered a retained task"
fi
grep -q WK-RETAINED "$NB_DIR"/worker-*/log &&
  nb_log "a worker saw the retained task and ignored it"
nb_log "ok"
