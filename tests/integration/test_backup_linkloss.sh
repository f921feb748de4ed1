# A lost link in the middle of a backup and of a restore (the broker
# killed and back a second later): the agent reconnects by itself and
# sends again what had no reply (the cloud replays what it had done), and
# the same run completes: a snapshot that restores byte for byte.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
W=$NB_DIR/work
mkdir -p "$W/src/Phone/Movies"
nb_terminal alice

acked() { nb_redis BITCOUNT "nb:upload:alice:$1:bits"; }
V=$W/src/Phone/Movies/trip.mp4
head -c $((30 * 1024 * 1024)) /dev/urandom >"$V"
sha=$(sha256sum "$V" | cut -c1-64)

# The binary itself, so that $! is the agent.
"$NIMBUS_BIN/nimbus-agent" backup --jobs 2 --timeout 30000 "$W/src/Phone" >"$W/b.out" 2>"$W/b.err" &
pid=$!
nb_wait_for "(( \$(acked $sha) >= 8 ))" 60 || nb_fail "the upload never started"
nb_alive "$pid" || nb_fail "the backup ended before the link was cut"
nb_stack restart "$NB_DIR" broker --kill --down 1 >/dev/null || nb_fail "the broker did not come back"
nb_log "broker killed and back with $(acked "$sha") segments acknowledged"
rc=0
wait "$pid" || rc=$?
nb_assert_eq 0 "$rc" "backup exit status ($(cat "$W/b.err"))"
nb_log "backup: $(cat "$W/b.out")"
grep -q '"items":1,' "$W/b.out" || nb_fail "no snapshot: $(cat "$W/b.out")"

export NIMBUS_STATE_DIR=$W/dev2
"$NIMBUS_BIN/nimbus-agent" restore --jobs 2 --timeout 30000 "$W/out" >"$W/r.out" 2>"$W/r.err" &
pid=$!
nb_wait_for "find '$W/out' -name '.nimbus-*.part' -size +2048k | grep -q ." 60 ||
  nb_fail "the download never started"
nb_alive "$pid" || nb_fail "the restore ended before the link was cut"
nb_stack restart "$NB_DIR" broker --kill --down 1 >/dev/null || nb_fail "the broker did not come back"
rc=0
wait "$pid" || rc=$?
nb_assert_eq 0 "$rc" "restore exit status ($(cat "$W/r.err"))"
nb_log "restore: $(cat "$W/r.out")"
cmp "$V" "$W/out/Phone/Movies/trip.mp4" || nb_fail "restored video differs"
if grep -l -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error: ' "$W"/*.err 2>/dev/null; then
  nb_fail "sanitizer report from the agent (files above)"
fi
nb_log "ok"
