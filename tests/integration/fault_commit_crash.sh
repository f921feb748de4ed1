# A worker that dies between moving an upload into the blob store and
# recording its commit (NIMBUS_TEST_FAULT=blob.commit:moved kills it with
# SIGKILL exactly there) leaves the blob's file in the store, no record of
# it, and the upload's staging file gone. The same blob.commit sent again
# (same task id) to another worker once the dead one's lease lapsed must
# find the blob in the store, verify it and record it: ok with the blob
# and its size, as the first would have answered; blob.has then says
# present, blob.get serves the bytes, and sending the task once more
# replays the recorded reply.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--lease-ms 2000 --renew-ms 500"
export NIMBUS_TEST_FAULT=blob.commit:moved
nb_stack_up 1
unset NIMBUS_TEST_FAULT
nb_terminal alice
W=$NB_DIR/work
mkdir -p "$W"

# Three segments, the last one short.
size=$((2 * 262144 + 1000))
head -c "$size" /dev/urandom >"$W/f"
sha=$(sha256sum "$W/f" | cut -c1-64)
split -b 262144 -d -a 1 "$W/f" "$W/seg."
for k in 0 1 2; do
  r=$(call blob.put "{\"upload\": \"u1\", \"offset\": $((k * 262144)), \"size\": $size, \"sha256\": \"$sha\"}" --data-file "$W/seg.$k")
  nb_assert_eq ok "$(jget "$r" 'r["status"]')" "put of segment $k: $r"
done

store=$NIMBUS_DIR/blobs/blobs/${sha:0:2}/$sha
id=commit-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
pid1=$(cat "$NB_DIR/worker-1/pid")
r=$(call blob.commit '{"upload": "u1"}' --id "$id" --timeout 3000)
nb_wait_for "! nb_alive $pid1" 10 || nb_fail "worker-1 did not die at the fault point"
grep -q "WK-FAULT NIMBUS_TEST_FAULT=blob.commit:moved" "$NB_DIR/worker-1/log" ||
  nb_fail "worker-1 died elsewhere than at the fault point"
nb_assert_eq "" "$(jget "$r" 'r.get("status", "")' 2>/dev/null || true)" \
  "a reply to the interrupted commit: $r"
# The window the fault opened: the file is in the store, Redis knows
# nothing of the blob, and the upload is not committed.
[[ -f $store ]] || nb_fail "the blob's file is not in the store"
nb_assert_eq 0 "$(nb_redis EXISTS "nb:blob:$sha")" "blob metadata before the re-sent commit"
nb_assert_eq "" "$(nb_redis HGET nb:upload:alice:u1 blob)" "upload committed before the re-sent commit"
nb_assert_eq 0 "$(nb_redis SISMEMBER nb:access:alice "$sha")" "access before the re-sent commit"

nb_stack worker "$NB_DIR" >/dev/null || nb_fail "cannot start worker-2"
nb_wait_for "[[ \$(nb_redis EXISTS nb:claim:alice:$id) == 0 ]]" 10 ||
  nb_fail "the dead worker's claim did not lapse"
r=$(call blob.commit '{"upload": "u1"}' --id "$id")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "re-sent commit: $r"
nb_assert_eq "$sha $size" "$(jget "$r" 'r["result"]["blob"] + " " + str(r["result"]["size"])')" \
  "re-sent commit's result"
grep -q "WK-BLOB-RECOVER upload alice/u1: its blob $sha" "$NB_DIR/worker-2/log" ||
  nb_fail "worker-2 did not take the blob from the store"

r=$(call blob.has "{\"blobs\": [\"$sha\"]}")
nb_assert_eq "[]" "$(jget "$r" 'r["result"]["missing"]')" "blob.has after the re-sent commit: $r"
for k in 0 1 2; do
  r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": $((k * 262144)), \"length\": 262144}")
  nb_assert_eq ok "$(jget "$r" 'r["status"]')" "get of segment $k: $r"
  jget "$r" 'r["data_b64"]' | base64 -d | cmp - "$W/seg.$k" ||
    nb_fail "segment $k reads back differently"
done
r=$(call blob.commit '{"upload": "u1"}' --id "$id")
nb_assert_eq "ok $sha" "$(jget "$r" 'r["status"] + " " + r["result"]["blob"]')" "commit sent once more: $r"
r=$(call blob.status '{"upload": "u1"}')
nb_assert_eq "$size []" "$(jget "$r" 'str(r["result"]["have"]) + " " + str(r["result"]["missing"])')" \
  "blob.status after the commit: $r"
nb_log "ok"
