# SIGTERM with tasks in flight loses none: the worker stops taking tasks,
# finishes what it holds, replies, and exits 0. The agent's re-send is set
# far beyond the test so a lost task cannot be rescued by it.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 2
nb_terminal frank

export NB_ITEST_RESEND_MS=600000 NB_ITEST_TIMEOUT_MS=30000
"$NIMBUS_BIN/nb-itest" sleeps 12 1500 drain >"$NB_DIR/itest.out" 2>&1 &
client=$!
nb_wait_for "[ \$(nb_redis KEYS 'nb:claim:frank:*' | wc -l) -ge 8 ]" 10 ||
  nb_fail "the tasks never started"
pid=$(cat "$NB_DIR/worker-1/pid")
kill -TERM "$pid"
nb_log "SIGTERM to worker-1 with $(nb_redis KEYS 'nb:claim:frank:*' | wc -l) claims live"
set +e
wait $client
rc=$?
set -e
cat "$NB_DIR/itest.out" >&2
nb_assert_eq 0 "$rc" "client exit status"
nb_assert_eq 12 "$(grep -c '^final .* 0 1$' "$NB_DIR/itest.out")" "ok final replies"
for i in $(seq 0 11); do
  nb_assert_eq 1 "$(nb_redis GET nb:diag:drain-$i)" "runs of drain-$i"
done
nb_wait_for "! nb_alive $pid" 10 || nb_fail "worker-1 did not exit"
grep -q WK-STOPPED "$NB_DIR/worker-1/log" || nb_fail "worker-1 did not drain cleanly"
nb_log "ok"
