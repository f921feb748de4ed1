# Interrupted transfers resume (PROTOCOL.md, Backup and restore; blobs):
# a backup of a 50 MB video killed with SIGKILL mid-upload is run again
# and completes without sending the segments the cloud acknowledged
# (bytes_sent of the second run < the file, and no more than what
# blob.status said was missing); Ctrl-C stops a backup with status 130
# and the next run sends only the rest; a restore killed mid-download is run
# again and fetches less than the whole (its .part file is kept and
# continued), byte for byte. A file that grows while it is being uploaded
# is hashed again and backed up as it is then.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
W=$NB_DIR/work
mkdir -p "$W/src/Phone/Movies"
nb_terminal alice
AS=$NIMBUS_STATE_DIR

# Segments of upload $1 the cloud has acknowledged (its bitmap in Redis).
acked() { nb_redis BITCOUNT "nb:upload:alice:$1:bits"; }
# kill_when CMD PID TIMEOUT: SIGKILL PID once CMD (eval'd) succeeds; fails
# the test if PID ended by itself first.
kill_when() {
  local cmd=$1 pid=$2 t=$((SECONDS + $3))
  until eval "$cmd" >/dev/null 2>&1; do
    nb_alive "$pid" || nb_fail "the agent ended before it could be interrupted"
    ((SECONDS < t)) || nb_fail "timed out waiting for: $cmd"
    sleep 0.02
  done
  kill -KILL "$pid"
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  nb_assert_eq 137 "$rc" "exit status of the killed agent"
}

V=$W/src/Phone/Movies/trip.mp4
head -c $((50 * 1024 * 1024)) /dev/urandom >"$V"
size=$(stat -c %s "$V")
sha=$(sha256sum "$V" | cut -c1-64)

# ---- backup, killed after a few segments ----
# The binary itself, not through nb_agent: $! must be the agent's pid.
"$NIMBUS_BIN/nimbus-agent" backup --jobs 2 "$W/src/Phone" >"$W/b1.out" 2>"$W/b1.err" &
pid=$!
kill_when "(( \$(acked $sha) >= 8 ))" "$pid" 60
# What the cloud has now; puts in flight when the agent died may still
# land, so it only grows from here.
r=$(NIMBUS_STATE_DIR=$W/probe nb_agent call blob.status "{\"upload\": \"$sha\"}")
have=$(jf "$r" have)
nb_log "killed with $have of $size bytes acknowledged"
((have > 0 && have < size)) || nb_fail "upload not interrupted midway: $r"
[[ -s $W/b1.out ]] && nb_fail "the killed run printed a result"

out=$(nb_agent backup "$W/src/Phone" 2>"$W/b2.err") || nb_fail "second run failed: $(cat "$W/b2.err")"
nb_log "second run: $out"
read -r items sent blobs hashed cached <<<"$(jf "$out" items bytes_sent blobs_uploaded files_hashed files_cached)"
nb_assert_eq "1 1 0 1" "$items $blobs $hashed $cached" "second run (items blobs hashed cached)"
((sent > 0 && sent <= size - have)) ||
  nb_fail "second run sent $sent bytes; at most $((size - have)) were missing"
snap=$(jf "$out" snapshot)

# ---- Ctrl-C: stops at the next step, exit 130, and the next run goes on ----
C=$W/src/Phone/Movies/clip.mp4
head -c $((20 * 1024 * 1024)) /dev/urandom >"$C"
csha=$(sha256sum "$C" | cut -c1-64)
"$NIMBUS_BIN/nimbus-agent" backup --jobs 1 "$W/src/Phone" >"$W/c1.out" 2>"$W/c1.err" &
pid=$!
t=$((SECONDS + 60))
until (($(acked "$csha") >= 4)); do
  nb_alive "$pid" || nb_fail "the backup ended before Ctrl-C: $(cat "$W/c1.err")"
  ((SECONDS < t)) || nb_fail "timed out waiting for clip.mp4's upload"
  sleep 0.02
done
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
nb_assert_eq 130 "$rc" "exit status after Ctrl-C"
grep -q "stopped; what the cloud acknowledged stays" "$W/c1.err" || nb_fail "no word of the stop: $(cat "$W/c1.err")"
out=$(nb_agent backup "$W/src/Phone" 2>"$W/c2.err") || nb_fail "run after Ctrl-C failed: $(cat "$W/c2.err")"
nb_log "after Ctrl-C: $out"
sent=$(jf "$out" bytes_sent)
((sent < 20 * 1024 * 1024)) || nb_fail "the run after Ctrl-C sent $sent bytes, the whole clip"
rm "$C"

# ---- restore, killed partway ----
nb_terminal alice >/dev/null
export NIMBUS_STATE_DIR=$W/dev2
part() { find "$W/out" -name '.nimbus-*.part' -size +"$1"k 2>/dev/null | grep -q .; }
"$NIMBUS_BIN/nimbus-agent" restore --jobs 2 --snapshot "$snap" "$W/out" >"$W/r1.out" 2>"$W/r1.err" &
pid=$!
kill_when "part 4096" "$pid" 60
done_bytes=$(find "$W/out" -name '.nimbus-*.part' -printf '%s\n')
nb_log "restore killed with $done_bytes bytes in its .part file"
[[ -f $W/out/Phone/Movies/trip.mp4 ]] && nb_fail "the file got its name before it was complete"
out=$(nb_agent restore --snapshot "$snap" "$W/out" 2>"$W/r2.err") || nb_fail "second restore failed: $(cat "$W/r2.err")"
nb_log "second restore: $out"
read -r restored got <<<"$(jf "$out" restored bytes_received)"
nb_assert_eq 1 "$restored" "restored"
((got <= size - done_bytes)) || nb_fail "the second restore fetched $got bytes; $((size - done_bytes)) were left"
cmp "$V" "$W/out/Phone/Movies/trip.mp4" || nb_fail "restored video differs"
nb_assert_eq "" "$(find "$W/out" -name '.nimbus-*')" "temporary files left"

# ---- a file that grows while it is uploaded ----
export NIMBUS_STATE_DIR=$AS
G=$W/src/Phone/Movies/growing.mp4
head -c $((40 * 1024 * 1024)) /dev/urandom >"$G"
gsha=$(sha256sum "$G" | cut -c1-64)
"$NIMBUS_BIN/nimbus-agent" backup --jobs 2 "$W/src/Phone" >"$W/g.out" 2>"$W/g.err" &
pid=$!
t=$((SECONDS + 60))
until (($(acked "$gsha") >= 4)); do
  nb_alive "$pid" || nb_fail "the backup ended before the file could grow"
  ((SECONDS < t)) || nb_fail "timed out waiting for the upload to start"
  sleep 0.02
done
head -c 1000000 /dev/urandom >>"$G"
wait "$pid" || nb_fail "backup of a growing file failed: $(cat "$W/g.err")"
grep -q "growing.mp4 changed while it was being backed up" "$W/g.err" ||
  nb_fail "the change went unnoticed: $(cat "$W/g.err")"
out=$(cat "$W/g.out")
nb_log "growing file: $out"
nb_assert_eq "2 0" "$(jf "$out" items failed)" "items failed"
export NIMBUS_STATE_DIR=$W/dev2
out=$(nb_agent restore "$W/out2" 2>"$W/r3.err") || nb_fail "restore failed: $(cat "$W/r3.err")"
cmp "$G" "$W/out2/Phone/Movies/growing.mp4" || nb_fail "the grown file was not backed up as it ended"
cmp "$V" "$W/out2/Phone/Movies/trip.mp4" || nb_fail "the video differs"
# The agent's own sanitizer reports (the ASan build runs these tests too).
if grep -l -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error: ' "$W"/*.err 2>/dev/null; then
  nb_fail "sanitizer report from the agent (files above)"
fi
nb_log "ok"
