# Stored blob files that no record names (a crash between a commit's move
# and its record, a removal that failed) are removed by the janitor once
# they were not written for upload_ttl; files that Redis knows stay, and
# so does anything in the store that is not named like a blob. With a 2 s
# upload_ttl the janitor's orphan pass runs every 2 s on files older than
# 4 s.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--upload-ttl-ms 2000 --blob-ttl-ms 600000"
nb_stack_up 1
nb_terminal alice
W=$NB_DIR/work
mkdir -p "$W"
head -c 3000 /dev/urandom >"$W/a"
sha=$(sha256sum "$W/a" | cut -c1-64)
r=$(call blob.put "{\"upload\": \"a1\", \"offset\": 0, \"size\": 3000, \"sha256\": \"$sha\"}" --data-file "$W/a")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "put: $r"
r=$(call blob.commit '{"upload": "a1"}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "commit: $r"
store=$NIMBUS_DIR/blobs/blobs
known=$store/${sha:0:2}/$sha
[[ -f $known ]] || nb_fail "no $known"

# An orphan: a blob file of content nobody recorded, as a crash after the
# move would leave it; and a file not named like a blob.
orphan_sha=$(head -c 64 /dev/urandom | sha256sum | cut -c1-64)
mkdir -p "$store/${orphan_sha:0:2}"
head -c 5000 /dev/urandom >"$store/${orphan_sha:0:2}/$orphan_sha"
echo keep >"$store/${orphan_sha:0:2}/notes.txt"
touch -d '1 hour ago' "$known" "$store/${orphan_sha:0:2}/$orphan_sha" \
  "$store/${orphan_sha:0:2}/notes.txt"

nb_wait_for "[[ ! -e $store/${orphan_sha:0:2}/$orphan_sha ]]" 30 ||
  nb_fail "the orphan file is still there after 30 s"
[[ -f $known ]] || nb_fail "the recorded blob's file was removed"
[[ -f $store/${orphan_sha:0:2}/notes.txt ]] || nb_fail "notes.txt was removed"
nb_assert_eq 0 "$(nb_redis EXISTS "nb:blob:$orphan_sha:gone")" "tombstone after the removal"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 0, \"length\": 3000}")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "get of the recorded blob: $r"
jget "$r" 'r.get("data_b64", "")' | base64 -d | cmp - "$W/a" ||
  nb_fail "the recorded blob reads back differently"
grep -q "WK-GC removed 1 stored file that no record names" "$NB_DIR"/worker-1/log ||
  nb_fail "the worker did not log the removal"
