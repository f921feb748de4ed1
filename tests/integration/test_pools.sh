# Pools keep the families apart and the terminals fair, and a terminal's
# tasks in flight are bounded (cloud-worker/src/pool.c, session.c):
#  1. A busy heavy pool delays nobody else: while terminal ann keeps the
#     diag pool (2 threads) busy with 100 diag.sleep tasks of 2 s, pings
#     answer with a p99 under 50 ms and a 1 MiB backup completes (its
#     blob.put and commits run in the transfer pool). When blob.put shared
#     one heavy lane with diag.sleep, the backup waited for the backlog.
#  2. Fair within a pool: terminal bob's one diag.sleep of 2 s, queued
#     behind ann's backlog in the same pool, is answered within 8 s. In one
#     FIFO it waited for ann's 98 tasks queued before it (about 100 s).
#  3. The bound: a worker with max_inflight 4 answers a terminal's fifth
#     to eighth task at once with 429 and retry_after (seen on the wire);
#     libnimbus-agent sends those again after retry_after, so all eight
#     end ok, each run exactly once.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag --diag-threads 2 --max-inflight 128"
nb_stack_up 1

nb_terminal ann
ann=(NIMBUS_TERMINAL="$NIMBUS_TERMINAL" NIMBUS_PASSWORD="$NIMBUS_PASSWORD"
  NIMBUS_STATE_DIR="$NB_DIR/state-ann")
nb_terminal bob
bob=(NIMBUS_TERMINAL="$NIMBUS_TERMINAL" NIMBUS_PASSWORD="$NIMBUS_PASSWORD"
  NIMBUS_STATE_DIR="$NB_DIR/state-bob")
nb_terminal cid
cid=(NIMBUS_TERMINAL="$NIMBUS_TERMINAL" NIMBUS_PASSWORD="$NIMBUS_PASSWORD"
  NIMBUS_STATE_DIR="$NB_DIR/state-cid")

# ann's backlog: 100 tasks of 2 s, all at once (the agent's own bound
# raised to match). They cannot all end within the test; the worker is
# killed below.
env "${ann[@]}" NB_ITEST_INFLIGHT=100 NB_ITEST_TIMEOUT_MS=300000 \
  "$NIMBUS_BIN/nb-itest" sleeps 100 2000 backlog >"$NB_DIR/ann.out" \
  2>"$NB_DIR/ann.err" &
ann_pid=$!
nb_on_exit "kill $ann_pid 2>/dev/null || true"
nb_wait_for "(( \$(grep -c '^submitted' '$NB_DIR/ann.out') == 100 ))" 20 ||
  nb_fail "ann's 100 tasks were not sent"
# The worker holds them once their claims start: the first two run.
nb_wait_for '[[ -n $(nb_redis --scan --pattern "nb:claim:ann:*") ]]' 20 ||
  nb_fail "ann's first tasks never started"

# 2. bob's task, in the same pool, behind ann's backlog.
t0=$(date +%s%N)
r=$(env "${bob[@]}" "$NIMBUS_BIN/nimbus-agent" call diag.sleep \
  '{"ms": 2000, "key": "bob"}' --timeout 30000 2>>"$NB_DIR/calls.log" || true)
t1=$(date +%s%N)
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "bob's diag.sleep ($r)"
waited=$(((t1 - t0) / 1000000))
nb_log "bob's 2 s task answered in $waited ms behind ann's backlog"
# Fair: one of ann's running tasks to wait for, then its own 2 s, plus the
# agent's start and connect (a second or more under ThreadSanitizer on a
# loaded machine): well under 8 s. In one FIFO it would be about 100 s.
((waited < 8000)) || nb_fail "bob's task took $waited ms (want < 8000)"

# 1. pings and a 1 MiB upload while the diag pool is still saturated.
out=$(env "${cid[@]}" "$NIMBUS_BIN/nb-ping-load" --inflight 1 --warmup 20 \
  --count 300 2>>"$NB_DIR/calls.log") ||
  nb_fail "nb-ping-load failed: $out"
nb_log "pings while the diag pool is saturated: $out"
p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$out")
errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$out")
nb_assert_eq 0 "$errors" "ping errors"
limit=$(nb_ping_p99_max)
awk -v p="$p99" -v l="$limit" 'BEGIN { exit !(p < l) }' ||
  nb_fail "ping p99 $p99 ms while the diag pool is busy (want < $limit)"

head -c 1048576 /dev/urandom >"$NB_DIR/one-mib.bin"
t0=$(date +%s%N)
r=$(env "${cid[@]}" "$NIMBUS_BIN/nimbus-agent" backup --json \
  --timeout 20000 "$NB_DIR/one-mib.bin" 2>>"$NB_DIR/calls.log") ||
  nb_fail "the 1 MiB backup failed while the diag pool is busy: $r"
t1=$(date +%s%N)
nb_log "1 MiB backup while the diag pool is saturated: $(((t1 - t0) / 1000000)) ms"
read -r failed uploaded <<<"$(jf "$r" failed blobs_uploaded)"
nb_assert_eq 0 "$failed" "items failed"
nb_assert_eq 1 "$uploaded" "blobs uploaded"
# Still saturated when all that was done: the test measured what it says.
(( $(grep -c '^final' "$NB_DIR/ann.out") < 90 )) ||
  nb_fail "ann's backlog drained before the measurements ended"

# 3. A worker with max_inflight 4 (ann's backlog goes with the old one).
kill "$ann_pid" 2>/dev/null || true
nb_stack kill-worker "$NB_DIR" 1 KILL >/dev/null
NIMBUS_WORKER_FLAGS="--diag --diag-threads 2 --max-inflight 4" \
  nb_stack worker "$NB_DIR" >/dev/null || nb_fail "second worker did not start"
# The replies as the broker carries them, beside the agent's own session.
nb_sub_bg "$NB_DIR/cid.replies" -u cid -P "${cid[1]#NIMBUS_PASSWORD=}" \
  -i cid.replywatch -t "cloud/v1/reply/cid" -F '%x'
env "${cid[@]}" NB_ITEST_INFLIGHT=8 NB_ITEST_TIMEOUT_MS=30000 \
  "$NIMBUS_BIN/nb-itest" sleeps 8 1000 bound >"$NB_DIR/cid.out" \
  2>"$NB_DIR/cid.err" || nb_fail "not every bounded task ended ok: $(cat "$NB_DIR/cid.out" "$NB_DIR/cid.err")"
nb_assert_eq 8 "$(grep -c '^final .* 0 1$' "$NB_DIR/cid.out")" "ok final replies"
# code 429 (a4 "code" cd 01ad) with result.retry_after (ab "retry_after").
nb_wait_for "(( \$(grep -c 'a4636f6465cd01ad.*ab72657472795f6166746572' '$NB_DIR/cid.replies') >= 4 ))" 10 ||
  nb_fail "fewer than four 429 replies with retry_after went to cid"
r=$(call ping)
nb_assert_eq 4 "$(jget "$r" 'r["result"]["limits"]["max_inflight"]')" \
  "max_inflight in ping"
# Each ran once: a refused one ran nowhere until it was sent again.
for i in $(seq 0 7); do
  nb_assert_eq 1 "$(nb_redis GET "nb:diag:bound-$i")" "runs of bound-$i"
done
nb_log "ok"
