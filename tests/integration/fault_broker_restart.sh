# The broker crashes (SIGKILL) with tasks in flight and comes back a second
# later: workers reconnect and subscribe again, the agent reconnects and
# re-sends, and every task completes exactly once (replayed where its reply
# was lost with the broker).
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 2
nb_terminal grace

export NB_ITEST_RESEND_MS=1500 NB_ITEST_TIMEOUT_MS=45000
"$NIMBUS_BIN/nb-itest" sleeps 6 1500 brk >"$NB_DIR/itest.out" 2>&1 &
client=$!
nb_wait_for "[ \$(nb_redis KEYS 'nb:claim:grace:*' | wc -l) -ge 3 ]" 10 ||
  nb_fail "the tasks never started"
nb_stack restart "$NB_DIR" broker --kill --down 1 ||
  nb_fail "the broker did not come back"
nb_log "broker killed and restarted with $(nb_redis KEYS 'nb:claim:grace:*' | wc -l) claims live"

set +e
wait $client
rc=$?
set -e
cat "$NB_DIR/itest.out" >&2
nb_assert_eq 0 "$rc" "client exit status"
nb_assert_eq 6 "$(grep -c '^final .* 0 1$' "$NB_DIR/itest.out")" "ok final replies"
for i in $(seq 0 5); do
  nb_assert_eq 1 "$(nb_redis GET nb:diag:brk-$i)" "runs of brk-$i"
done
# Both workers are back in their groups (each logs WK-SUBSCRIBED once per
# connect, so twice by now), and pings reach both.
for n in 1 2; do
  nb_wait_for "[ \$(grep -c WK-SUBSCRIBED '$NB_DIR/worker-$n/log') -ge 2 ]" 15 ||
    nb_fail "worker-$n did not subscribe again after the restart"
done
out=$("$NIMBUS_BIN/nb-itest" pings 100) || nb_fail "pings after the restart: $out"
[[ $(echo "$out" | wc -l) -eq 2 ]] || nb_fail "not both workers answer: $out"
nb_log "ok"
