# Uploads not committed within upload_ttl are dropped (PROTOCOL.md): with
# a 2 s upload_ttl, a half-done upload's record expires in Redis and its
# staging file is swept from disk; a committed blob stays readable.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--upload-ttl-ms 2000"
nb_stack_up 1
nb_terminal erin
W=$NB_DIR/work
mkdir -p "$W"

head -c 300000 /dev/urandom >"$W/file"
sha=$(sha256sum "$W/file" | cut -c1-64)
head -c 262144 "$W/file" >"$W/seg0"
tail -c 37856 "$W/file" >"$W/seg1"
put() {
  call blob.put "{\"upload\": \"$1\", \"offset\": $2, \"size\": 300000, \"sha256\": \"$sha\"}" --data-file "$3"
}
# One upload committed at once, one left half done.
put done 0 "$W/seg0" >/dev/null
put done 262144 "$W/seg1" >/dev/null
r=$(call blob.commit '{"upload": "done"}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "commit: $r"
r=$(put half 0 "$W/seg0")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "put: $r"
nb_assert_eq 1 "$(find "$NIMBUS_DIR/blobs/staging" -type f | wc -l)" "staging files"

nb_wait_for '[[ $(find "$NIMBUS_DIR/blobs/staging" -type f | wc -l) == 0 ]]' 20 ||
  nb_fail "the abandoned staging file was not swept"
r=$(call blob.status '{"upload": "half"}')
nb_assert_eq 404 "$(jget "$r" 'r["code"]')" "status of the expired upload"
grep -q WK-BLOB-SWEEP "$NIMBUS_DIR"/worker-1/log || nb_fail "no sweep logged"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 262144, \"length\": 262144}")
nb_assert_eq "ok 37856" "$(jget "$r" 'r["status"] + " " + str(r["data_size"])')" "the committed blob after the sweep"
nb_log "ok"
