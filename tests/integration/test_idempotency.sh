# One effect per task id: the same id again gets the recorded reply and does
# nothing twice; the same id with other content is 409 (key order does not
# count); an error is not recorded; task.status and task.cancel.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 2
nb_terminal dave

id=idem-$(date +%s%N)
a=$(nb_agent call diag.sleep '{"ms": 10, "key": "k1"}' --id "$id") ||
  nb_fail "first call failed: $a"
b=$(nb_agent call diag.sleep '{"key": "k1", "ms": 10.0}' --id "$id") ||
  nb_fail "second call (same content, other key order) failed: $b"
nb_assert_eq "$a" "$b" "replayed reply"
[[ $a == *'"runs":1'* ]] || nb_fail "unexpected result: $a"
nb_assert_eq 1 "$(nb_redis GET nb:diag:k1)" "runs counted in Redis"

set +e
c=$(nb_agent call diag.sleep '{"ms": 11, "key": "k1"}' --id "$id" 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status for other content under the same id"
[[ $c == *'"code":409'* ]] || nb_fail "expected 409: $c"
nb_assert_eq 1 "$(nb_redis GET nb:diag:k1)" "runs after the 409"

s=$(nb_agent call task.status "{\"task\": \"$id\"}") || nb_fail "task.status: $s"
[[ $s == *'"state":"done"'* && $s == *'"runs":1'* ]] ||
  nb_fail "task.status of a done task: $s"
s=$(nb_agent call task.status '{"task": "never-seen-0000000"}')
[[ $s == *'"state":"unknown"'* ]] || nb_fail "task.status of an unknown task: $s"

# An error is not recorded: the same id runs again.
fid=fail-$(date +%s%N)
set +e
f=$(nb_agent call diag.sleep '{"key": "k2", "fail": 500}' --id "$fid" 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status of a failing task"
[[ $f == *'"code":500'* ]] || nb_fail "expected 500: $f"
s=$(nb_agent call task.status "{\"task\": \"$fid\"}")
[[ $s == *'"state":"unknown"'* ]] || nb_fail "an error was recorded: $s"
nb_assert_eq "" "$(nb_redis GET nb:diag:k2)" "effect of a failed task"

# task.cancel stops a running task at its next checkpoint: final 499.
cid=cancel-$(date +%s%N)
nb_agent call diag.sleep '{"ms": 20000, "key": "k3"}' --id "$cid" \
  --timeout 30000 >"$NB_DIR/cancel.out" 2>/dev/null &
caller=$!
nb_wait_for "nb_redis EXISTS nb:claim:dave:$cid | grep -q 1" 10 ||
  nb_fail "the long task never started"
s=$(nb_agent call task.status "{\"task\": \"$cid\"}")
[[ $s == *'"state":"running"'* ]] || nb_fail "task.status of a running task: $s"
s=$(nb_agent call task.cancel "{\"task\": \"$cid\"}")
[[ $s == *'"state":"running"'* ]] || nb_fail "task.cancel: $s"
set +e
wait $caller
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status of the cancelled task"
grep -q '"code":499' "$NB_DIR/cancel.out" || nb_fail "expected 499: $(cat "$NB_DIR/cancel.out")"
nb_assert_eq "" "$(nb_redis GET nb:diag:k3)" "effect of a cancelled task"
s=$(nb_agent call task.cancel "{\"task\": \"$id\"}")
[[ $s == *'"state":"done"'* ]] || nb_fail "task.cancel of a finished task: $s"
nb_log "ok"
