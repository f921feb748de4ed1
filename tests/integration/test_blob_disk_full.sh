# The blob store's filesystem full (a tmpfs of 8 MiB of the test's own,
# filled by a file of the test's): blob.put answers 503 "the cloud's
# storage is full" with a retry_after, keeps the segments it acknowledged,
# gives back the blocks a failed write took and drops the record of an
# upload of which nothing was stored; nothing half-written shows as a
# blob; the condition is logged once rather than per segment, and the
# worker's monitor status says storage_full while it lasts. Once space is
# freed the same upload goes on from where it was, and a backup that
# failed on the full disk completes, sending only what was missing.
# Needs to mount a tmpfs (root); skipped (77) where that is refused.
source "$(dirname "$0")/lib.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-full.XXXXXX")
if ! mount -t tmpfs -o size=8m nimbus-test "$T" 2>"$T.err"; then
  nb_log "SKIP: cannot mount a tmpfs: $(cat "$T.err")"
  rm -f "$T.err"
  rmdir "$T"
  exit 77
fi
rm -f "$T.err"
# Lazily: the worker still has the store open when this runs.
nb_on_exit "umount -l '$T'; rmdir '$T'"
export NIMBUS_WORKER_FLAGS="--data-dir $T/store"
nb_stack_up 1
nb_terminal alice
W=$NB_DIR/work
mkdir -p "$W"
SEG=262144

avail() { df -B1 --output=avail "$T" | tail -n 1 | tr -d ' '; }
# fill BYTES: leaves about BYTES free on the tmpfs (one more filler file).
nfill=0
fill() {
  nfill=$((nfill + 1))
  fallocate -l $(($(avail) - $1)) "$T/filler.$nfill"
}
put() { # UPLOAD SHA SIZE SEGMENT-INDEX FILE
  call blob.put "{\"upload\": \"$1\", \"offset\": $(($4 * SEG)), \"size\": $3, \"sha256\": \"$2\"}" --data-file "$5"
}
status_code() { jget "$1" 'r["status"] + " " + str(r.get("code", 0))'; }

mon_pw=monitor-pw-0001
"$NIMBUS_BIN/nimbusctl" --accounts "$NIMBUS_ACCOUNTS" account add mon \
  --role monitor --password "$mon_pw" >/dev/null
wid=$(sed -n 's/.*ready id=\([^ ]*\).*/\1/p' "$NB_DIR/worker-1/log")
monitor() { # the worker's retained status
  timeout 10 mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
    -V 5 -u mon -P "$mon_pw" -i "mon-$RANDOM" -C 1 \
    -t "cloud/v1/monitor/worker/$wid"
}
[[ $(monitor) == *'"storage_full":false'* ]] || nb_fail "status before: $(monitor)"

# ---- One upload by hand: two segments fit, the third does not ----
head -c $((4 * SEG)) /dev/urandom >"$W/f"
sha=$(sha256sum "$W/f" | cut -c1-64)
split -b $SEG -d -a 1 "$W/f" "$W/seg."
fill $((2 * SEG + 100 * 1024))
for k in 0 1; do
  r=$(put u1 "$sha" $((4 * SEG)) $k "$W/seg.$k")
  nb_assert_eq "ok 0" "$(status_code "$r")" "put of segment $k: $r"
done
r=$(put u1 "$sha" $((4 * SEG)) 2 "$W/seg.2")
nb_assert_eq "error 503" "$(status_code "$r")" "put on a full disk: $r"
[[ $(jget "$r" 'r["error"]') == "the cloud's storage is full"* ]] ||
  nb_fail "the error does not say the storage is full: $r"
(($(jget "$r" 'r["result"]["retry_after"]') > 0)) || nb_fail "no retry_after: $r"
r=$(put u1 "$sha" $((4 * SEG)) 3 "$W/seg.3")
nb_assert_eq "error 503" "$(status_code "$r")" "second put on a full disk: $r"
# What was acknowledged stays, and the staging file holds just that: the
# failed writes' blocks were given back.
r=$(call blob.status '{"upload": "u1"}')
nb_assert_eq "$((2 * SEG)) [[$((2 * SEG)), $((2 * SEG))]]" \
  "$(jget "$r" 'str(r["result"]["have"]) + " " + str(r["result"]["missing"])')" "status of u1: $r"
staged=("$T"/store/staging/*)
nb_assert_eq 1 "${#staged[@]}" "staging files"
nb_assert_eq $((2 * SEG)) "$(stat -c '%b * %B' "${staged[0]}" | bc)" \
  "bytes the staging file holds on disk"
# A first put that could not write leaves no upload behind.
head -c 5000 /dev/urandom >"$W/g"
gsha=$(sha256sum "$W/g" | cut -c1-64)
fill 0
r=$(put u2 "$gsha" 5000 0 "$W/g")
nb_assert_eq "error 503" "$(status_code "$r")" "first put of u2: $r"
nb_assert_eq 0 "$(nb_redis EXISTS nb:upload:alice:u2)" "record of u2"
r=$(call blob.status '{"upload": "u2"}')
nb_assert_eq "error 404" "$(status_code "$r")" "status of u2: $r"
# Nothing shows as a blob.
r=$(call blob.has "{\"blobs\": [\"$sha\", \"$gsha\"]}")
nb_assert_eq "2" "$(jget "$r" 'len(r["result"]["missing"])')" "blob.has: $r"
[[ -z $(find "$T/store/blobs" -type f) ]] || nb_fail "files in the store: $(find "$T/store/blobs" -type f)"
nb_assert_eq 1 "$(grep -c WK-STORAGE-FULL "$NB_DIR/worker-1/log")" "WK-STORAGE-FULL lines for 3 refused puts"
nb_wait_for "monitor | grep -q '\"storage_full\":true'" 20 ||
  nb_fail "the monitor status does not say storage_full: $(monitor)"

# ---- Space freed: the upload goes on where it was ----
rm -f "$T"/filler.*
for k in 2 3; do
  r=$(put u1 "$sha" $((4 * SEG)) $k "$W/seg.$k")
  nb_assert_eq "ok 0" "$(status_code "$r")" "put of segment $k after space was freed: $r"
done
r=$(call blob.commit '{"upload": "u1"}')
nb_assert_eq "ok $sha" "$(jget "$r" 'r["status"] + " " + r["result"]["blob"]')" "commit of u1: $r"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": $((2 * SEG)), \"length\": $SEG}")
jget "$r" 'r["data_b64"]' | base64 -d | cmp - "$W/seg.2" || nb_fail "segment 2 reads back differently"
nb_wait_for "monitor | grep -q '\"storage_full\":false'" 20 ||
  nb_fail "the monitor status still says storage_full: $(monitor)"

# ---- A backup that fails on the full disk, then completes ----
mkdir -p "$W/src/Movies"
V=$W/src/Movies/clip.mp4
head -c $((5 * 1024 * 1024)) /dev/urandom >"$V"
vsize=$(stat -c %s "$V")
vsha=$(sha256sum "$V" | cut -c1-64)
fill $((2 * 1024 * 1024))
rc=0
nb_agent backup "$W/src" >"$W/b1.out" 2>"$W/b1.err" || rc=$?
((rc != 0)) || nb_fail "the backup succeeded on a full disk: $(cat "$W/b1.out")"
grep -q "the cloud's storage is full" "$W/b1.err" ||
  nb_fail "the failed backup does not say why: $(cat "$W/b1.err")"
r=$(call blob.status "{\"upload\": \"$vsha\"}")
have=$(jget "$r" 'r["result"]["have"]')
nb_log "backup stopped by the full disk with $have of $vsize bytes acknowledged"
((have > 0 && have < vsize)) || nb_fail "nothing, or everything, acknowledged: $r"
nb_assert_eq 1 "$(grep -c WK-STORAGE-FULL "$NB_DIR/worker-1/log")" "WK-STORAGE-FULL lines within a minute"
[[ ! -e $T/store/blobs/${vsha:0:2}/$vsha ]] || nb_fail "the incomplete blob is in the store"

rm -f "$T"/filler.*
out=$(nb_agent backup "$W/src" 2>"$W/b2.err") || nb_fail "the backup after space was freed failed: $(cat "$W/b2.err")"
nb_log "after space was freed: $out"
read -r items sent blobs <<<"$(jf "$out" items bytes_sent blobs_uploaded)"
nb_assert_eq "1 1" "$items $blobs" "items, blobs uploaded"
((sent > 0 && sent <= vsize - have)) ||
  nb_fail "the second run sent $sent bytes; $((vsize - have)) were missing"
r=$(call blob.has "{\"blobs\": [\"$vsha\"]}")
nb_assert_eq "[]" "$(jget "$r" 'r["result"]["missing"]')" "blob.has after the backup: $r"
nb_log "ok"
