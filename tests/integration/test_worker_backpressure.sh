# A worker whose lane is full stops reading from the broker and goes on
# with what it holds. One heavy thread and a queue of 1: while a task
# runs and another waits, a third would not fit. The worker used to hold
# Paho's receive thread inside its arrival callback until a slot freed,
# with Paho's global mutex held, and the running task's reply needed that
# mutex: the worker hung for good. Now a full lane leaves the task with
# Paho (the callback returns 0 and Paho offers it again later), and the
# patched Paho build also stops reading from the broker until a slot
# frees; every task must end ok, each run once, in either build.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag --diag-threads 1 --queue 1"
nb_stack_up 1
nb_terminal gina

export NB_ITEST_TIMEOUT_MS=40000
set +e
"$NIMBUS_BIN/nb-itest" sleeps 8 200 bp >"$NB_DIR/itest.out" 2>&1
rc=$?
set -e
cat "$NB_DIR/itest.out" >&2
nb_assert_eq 0 "$rc" "client exit status"
nb_assert_eq 8 "$(grep -c '^final .* 0 1$' "$NB_DIR/itest.out")" "ok final replies"
for i in $(seq 0 7); do
  nb_assert_eq 1 "$(nb_redis GET nb:diag:bp-$i)" "runs of bp-$i"
done
# The worker still answers, and reports its full lane.
nb_assert_eq ok "$(jget "$(call ping)" 'r["status"]')" "ping after the burst"
grep -q WK-POOL-FULL "$NB_DIR/worker-1/log" ||
  nb_fail "the worker never found its lane full"
nb_log "ok"
