# Tasks of types no worker serves, routed by the broker (workers with
# unserved = broker, the default; nimbus_auth.so re-routes them to
# cloud/v1/unserved/<type>/<terminal>):
# - a task of a type nobody serves gets 400 through that route;
# - every task reaches the workers exactly once: the messages the workers
#   received (their monitor status) equal the final replies they sent;
# - diag.echo answers the deepest task a decoder accepts (its reply nests
#   one level deeper);
# - when a type's only worker disconnects, its tasks are re-routed; while
#   the type's announcement is recent they are left unanswered (the agent
#   sends them again), once it is old they get 400; a worker for the type
#   that comes back takes them again.
source "$(dirname "$0")/lib.sh"
PFX=cloud/v1
export NIMBUS_WORKER_FLAGS="--types ping"
nb_stack_up 1
NIMBUS_WORKER_FLAGS="--diag --types ping,diag.echo" nb_stack worker "$NB_DIR" \
  >/dev/null || nb_fail "cannot start worker 2"
nb_terminal ivan

# An admin watches the unserved topics (admins never count as workers).
nb_sub_bg "$NB_DIR/unserved.topics" -u "$NIMBUS_ADMIN_USER" \
  -P "$NIMBUS_ADMIN_PASSWORD" -i admin-unserved -t "$PFX/unserved/#" -F '%t'

# --- a type nobody serves: 400 through the broker's route ----------------
set +e
out=$(nb_agent call task.status '{"task": "some-task-id-0000"}' 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status for a type nobody serves"
[[ $out == *'"code":400'* && $out == *'task.status'* ]] ||
  nb_fail "expected 400 naming task.status: $out"
nb_wait_for "grep -qx '$PFX/unserved/task.status/ivan' '$NB_DIR/unserved.topics'" 5 ||
  nb_fail "the task did not go through $PFX/unserved/: $(cat "$NB_DIR/unserved.topics")"
grep -q WK-UNKNOWN-TYPE "$NB_DIR"/worker-*/log ||
  nb_fail "no worker logged the unknown type"
nb_log "task.status: 400 through $PFX/unserved/task.status/ivan"

# --- served types: each task reaches the workers once ---------------------
"$NIMBUS_BIN/nb-itest" pings 200 >/dev/null || nb_fail "pings failed"
for i in 1 2 3 4 5; do
  out=$(nb_agent call diag.echo "{\"i\": $i}") || nb_fail "diag.echo $i: $out"
done
# The deepest task a decoder accepts (16 levels: the task, args and 14
# arrays) is echoed, in a reply one level deeper (once a 500).
deep="{\"a\": $(printf '[%.0s' {1..14})$(printf ']%.0s' {1..14})}"
out=$(nb_agent call diag.echo "$deep") || nb_fail "diag.echo of a 16-level task: $out"
nb_assert_eq "$deep" "$(jget "$out" 'json.dumps(r["result"]["args"])')" \
  "diag.echo of a 16-level task"
if grep -qv "^$PFX/unserved/task.status/ivan\$" "$NB_DIR/unserved.topics"; then
  nb_fail "a task of a served type went to $PFX/unserved/: $(cat "$NB_DIR/unserved.topics")"
fi
# Sums over both workers' retained status (every 5 s): "<ok+error> <received>".
counts() {
  timeout 5 mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
    -u "$NIMBUS_ADMIN_USER" -P "$NIMBUS_ADMIN_PASSWORD" -i "admin-mon-$RANDOM" \
    -t "$PFX/monitor/worker/+" -C 2 -W 3 2>/dev/null |
    awk '{ match($0, /"ok":[0-9]+/); ok += substr($0, RSTART + 5, RLENGTH - 5)
           match($0, /"error":[0-9]+/); er += substr($0, RSTART + 8, RLENGTH - 8)
           match($0, /"received":[0-9]+/); rc += substr($0, RSTART + 11, RLENGTH - 11) }
         END { print ok + er, rc }'
}
# At least the 206 tasks above (the agent sends nothing else unasked).
nb_wait_for '[[ $(counts | cut -d" " -f1) -ge 206 ]]' 15 ||
  nb_fail "the workers' status never counted the tasks: $(counts)"
read -r finals received < <(counts)
nb_log "workers: $finals final replies, $received messages received"
nb_assert_eq "$finals" "$received" "messages received by the workers (one per task)"

# --- the only worker of a type goes ----------------------------------------
nb_stack kill-worker "$NB_DIR" 2 KILL >/dev/null
nb_wait_for "grep -q 'BA-ROUTE-UNSERVED .*task type diag.echo' '$NB_DIR/broker/mosquitto.log'" 10 ||
  nb_fail "the broker did not notice that no worker serves diag.echo"
# Worker 1 still has diag.echo announced by worker 2 a moment ago: it
# leaves the task unanswered, and the agent would send it again.
set +e
out=$(nb_agent call diag.echo '{}' --timeout 3000 2>&1)
rc=$?
set -e
nb_assert_eq 4 "$rc" "exit status while the type's announcement is recent (timed out): $out"
grep -q "^$PFX/unserved/diag.echo/ivan\$" "$NB_DIR/unserved.topics" ||
  nb_fail "diag.echo was not re-routed after its worker left"
grep -q 'WK-UNSERVED-HELD .*diag.echo' "$NB_DIR/worker-1/log" ||
  nb_fail "worker 1 did not hold the re-routed diag.echo task"
nb_log "diag.echo re-routed after its worker left, held while announced lately"
# The announcement grows old (here: removed), and the same gets 400.
nb_redis HDEL nb:types diag.echo >/dev/null
answered_400() {
  local out
  out=$(nb_agent call diag.echo '{}' --timeout 2000 2>/dev/null) || true
  [[ $out == *'"code":400'* && $out == *'diag.echo'* ]]
}
nb_wait_for answered_400 20 ||
  nb_fail "diag.echo never got 400 once its announcement was gone"
nb_log "diag.echo: 400 once no worker announced it"
# ping, which worker 1 serves, still goes to its group.
nb_agent ping >/dev/null || nb_fail "ping after worker 2 left"
if grep -q "^$PFX/unserved/ping/" "$NB_DIR/unserved.topics"; then
  nb_fail "ping was re-routed although worker 1 serves it"
fi

# --- a worker for the type comes back --------------------------------------
NIMBUS_WORKER_FLAGS="--diag --types diag.echo" nb_stack worker "$NB_DIR" \
  >/dev/null || nb_fail "cannot start worker 3"
n=$(grep -c "^$PFX/unserved/diag.echo/ivan\$" "$NB_DIR/unserved.topics")
out=$(nb_agent call diag.echo '{"back": true}') || nb_fail "diag.echo with worker 3: $out"
[[ $out == *'"back":true'* ]] || nb_fail "unexpected diag.echo reply: $out"
# A marker on a topic under unserved/ that no worker's group matches: had
# the task been re-routed, the broker would have done so before worker 3
# saw it, so that copy reaches the admin's subscription before the marker.
mosquitto_pub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
  -u "$NIMBUS_ADMIN_USER" -P "$NIMBUS_ADMIN_PASSWORD" -i admin-marker \
  -q 1 -t "$PFX/unserved/marker/after/back" -m marker
nb_wait_for "grep -qx '$PFX/unserved/marker/after/back' '$NB_DIR/unserved.topics'" 10 ||
  nb_fail "the marker never reached the admin's subscription"
nb_assert_eq "$n" "$(grep -c "^$PFX/unserved/diag.echo/ivan\$" "$NB_DIR/unserved.topics")" \
  "diag.echo tasks re-routed after worker 3 subscribed"
nb_log "ok"
