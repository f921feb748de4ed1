# Redis goes away and comes back: tasks that need it get 503 with
# retry_after (nothing done), those that do not (ping) go on, the worker
# reconnects by itself, and what was recorded before survives (AOF).
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 1
nb_terminal heidi

id=before-$(date +%s%N)
nb_agent call diag.sleep '{"key": "r1"}' --id "$id" >/dev/null ||
  nb_fail "diag.sleep before the outage failed"
sleep 1.2 # appendfsync everysec: let the AOF catch up

pid=$(cat "$NB_DIR/redis/redis.pid")
kill -KILL "$pid"
nb_wait_for "! nb_alive $pid" 10 || nb_fail "redis did not die"

nb_agent ping >/dev/null || nb_fail "ping needs no Redis, yet failed"
set +e
out=$(nb_agent call diag.sleep '{"key": "r2"}' 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status while Redis is down"
[[ $out == *'"code":503'* && $out == *'"retry_after"'* ]] ||
  nb_fail "expected 503 with retry_after: $out"

nb_stack restart "$NB_DIR" redis || nb_fail "redis did not come back"
out=$(nb_agent call diag.sleep '{"key": "r2"}') ||
  nb_fail "diag.sleep after Redis came back: $out"
nb_assert_eq 1 "$(nb_redis GET nb:diag:r2)" "runs of r2"
s=$(nb_agent call task.status "{\"task\": \"$id\"}")
[[ $s == *'"state":"done"'* ]] || nb_fail "the recorded reply was lost: $s"
nb_assert_eq 1 "$(nb_redis GET nb:diag:r1)" "runs of r1"
nb_log "ok"
