# A worker killed with SIGKILL while it holds a claim: the agent keeps
# re-sending, the surviving worker answers progress while the dead one's
# lease is live, then takes the task over once it lapses, and the task
# completes exactly once.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag --lease-ms 2000 --renew-ms 500"
nb_stack_up 2
nb_terminal erin

export NB_ITEST_RESEND_MS=1000 NB_ITEST_TIMEOUT_MS=40000
"$NIMBUS_BIN/nb-itest" sleeps 1 3000 kill >"$NB_DIR/itest.out" 2>&1 &
client=$!
nb_wait_for "grep -q '^submitted' '$NB_DIR/itest.out'" 10 || nb_fail "no task submitted"
id=$(awk '/^submitted/ {print $2}' "$NB_DIR/itest.out")
nb_wait_for "nb_redis EXISTS nb:claim:erin:$id | grep -q 1" 10 ||
  nb_fail "the task was never claimed"
owner=$(nb_redis HGET "nb:claim:erin:$id" owner)
victim=''
for n in 1 2; do
  if grep -q "ready id=$owner " "$NB_DIR/worker-$n/log"; then victim=$n; fi
done
[[ -n $victim ]] || nb_fail "no worker named $owner"
kill -KILL "$(cat "$NB_DIR/worker-$victim/pid")"
nb_log "killed worker-$victim ($owner) holding $id"

set +e
wait $client
rc=$?
set -e
cat "$NB_DIR/itest.out" >&2
nb_assert_eq 0 "$rc" "client exit status"
grep -q "^final $id kill-0 0 1$" "$NB_DIR/itest.out" ||
  nb_fail "expected one ok final reply with runs 1"
nb_assert_eq 1 "$(nb_redis GET nb:diag:kill-0)" "runs counted"
other=$((3 - victim))
grep -q "ready id=" "$NB_DIR/worker-$other/log" || nb_fail "no surviving worker"
nb_log "ok"
