# What blob.put, blob.commit, blob.status, blob.has and blob.get refuse,
# and that a refusal changes nothing: 413 over blob_max_bytes (which ping
# advertises), 400 for a misaligned offset or a wrongly sized segment, 409
# for a size or SHA-256 other than the upload's first put, 422 for bytes
# that do not hash to the declared SHA-256 (and the upload is gone
# afterwards), 404 for an unknown upload, 400 for names that are not
# SHA-256 hex.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--blob-max-bytes 1000000"
nb_stack_up 1
nb_terminal carol
W=$NB_DIR/work
mkdir -p "$W"

code() { jget "$1" 'r.get("code")'; }

head -c 600000 /dev/urandom >"$W/file"
sha=$(sha256sum "$W/file" | cut -c1-64)
head -c 262144 "$W/file" >"$W/seg0"
dd if="$W/file" of="$W/seg1" bs=262144 skip=1 count=1 2>/dev/null
head -c 1000 "$W/file" >"$W/small"
put() { # put UPLOAD OFFSET SIZE SHA FILE
  call blob.put "{\"upload\": \"$1\", \"offset\": $2, \"size\": $3, \"sha256\": \"$4\"}" --data-file "$5"
}

r=$(nb_agent ping --json)
nb_assert_eq 1000000 "$(jget "$r" 'r["limits"]["blob_max"]')" "ping's limits.blob_max"
r=$(put big 0 1000001 "$sha" "$W/seg0")
nb_assert_eq 413 "$(code "$r")" "a blob over blob_max_bytes: $r"
r=$(put u1 1000 600000 "$sha" "$W/seg0")
nb_assert_eq 400 "$(code "$r")" "a misaligned offset: $r"
r=$(put u1 0 600000 "$sha" "$W/small")
nb_assert_eq 400 "$(code "$r")" "a segment of the wrong size: $r"
r=$(put u1 786432 600000 "$sha" "$W/seg0")
nb_assert_eq 400 "$(code "$r")" "an offset past the end: $r"
r=$(call blob.put "{\"upload\": \"u1\", \"offset\": 0, \"size\": 600000, \"sha256\": \"$sha\"}")
nb_assert_eq 400 "$(code "$r")" "a put without data: $r"
r=$(put ../u1 0 600000 "$sha" "$W/seg0")
nb_assert_eq 400 "$(code "$r")" "an upload name with a slash: $r"
r=$(put u1 0 600000 "${sha^^}" "$W/seg0")
nb_assert_eq 400 "$(code "$r")" "an upper-case sha256: $r"
r=$(call blob.status '{"upload": "u1"}')
nb_assert_eq 404 "$(code "$r")" "status after refused puts only: $r"
nb_assert_eq 0 "$(find "$NIMBUS_DIR/blobs/staging" -type f | wc -l)" "staging files after refused puts"

r=$(put u1 0 600000 "$sha" "$W/seg0")
nb_assert_eq "ok 262144" "$(jget "$r" 'r["status"] + " " + str(r["result"]["have"])')" "first put"
r=$(put u1 262144 600001 "$sha" "$W/seg1")
nb_assert_eq 409 "$(code "$r")" "a put with another size: $r"
other=$(sha256sum "$W/small" | cut -c1-64)
r=$(put u1 262144 600000 "$other" "$W/seg1")
nb_assert_eq 409 "$(code "$r")" "a put with another sha256: $r"
r=$(call blob.status '{"upload": "u1"}')
nb_assert_eq "600000 262144 [[262144, 337856]]" \
  "$(jget "$r" 'str(r["result"]["size"]) + " " + str(r["result"]["have"]) + " " + str(r["result"]["missing"])')" \
  "status after the conflicting puts"

# Bytes that do not hash to the declared SHA-256: 422, upload discarded.
r=$(put bad 0 1000 "$sha" "$W/small")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "put under a wrong hash: $r"
r=$(call blob.commit '{"upload": "bad"}')
nb_assert_eq 422 "$(code "$r")" "commit of bytes with another hash: $r"
r=$(call blob.status '{"upload": "bad"}')
nb_assert_eq 404 "$(code "$r")" "status of the discarded upload: $r"
r=$(call blob.commit '{"upload": "bad"}')
nb_assert_eq 404 "$(code "$r")" "commit of the discarded upload: $r"
nb_assert_eq 1 "$(find "$NIMBUS_DIR/blobs/staging" -type f | wc -l)" "staging files (u1 only)"
nb_assert_eq 0 "$(find "$NIMBUS_DIR/blobs/blobs" -type f | wc -l)" "files in the store"
r=$(call blob.has "{\"blobs\": [\"$sha\"]}")
nb_assert_eq "['$sha']" "$(jget "$r" 'r["result"]["missing"]')" "blob.has after the 422"

r=$(call blob.status '{"upload": "never"}')
nb_assert_eq 404 "$(code "$r")" "status of an unknown upload: $r"
r=$(call blob.has '{"blobs": ["abc"]}')
nb_assert_eq 400 "$(code "$r")" "blob.has with a short name: $r"
r=$(call blob.has "{\"blobs\": [\"${sha^^}\"]}")
nb_assert_eq 400 "$(code "$r")" "blob.has with upper-case hex: $r"
r=$(call blob.has "{\"blobs\": $(python3 -c 'print(["0"*64]*1001)' | tr "'" '"')}")
nb_assert_eq 400 "$(code "$r")" "blob.has with 1001 names: $r"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 0, \"length\": 0}")
nb_assert_eq 400 "$(code "$r")" "blob.get of length 0: $r"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 0, \"length\": 262145}")
nb_assert_eq 400 "$(code "$r")" "blob.get of more than a segment: $r"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 0, \"length\": 10}")
nb_assert_eq 404 "$(code "$r")" "blob.get of a blob never committed: $r"

# Complete u1; then the upload limit does not stop a blob under it.
tail -c +524289 "$W/file" >"$W/seg2"
put u1 262144 600000 "$sha" "$W/seg1" >/dev/null
r=$(put u1 524288 600000 "$sha" "$W/seg2")
nb_assert_eq "ok 600000" "$(jget "$r" 'r["status"] + " " + str(r["result"]["have"])')" "last put of u1"
r=$(call blob.commit '{"upload": "u1"}')
nb_assert_eq "ok $sha" "$(jget "$r" 'r["status"] + " " + r["result"]["blob"]')" "commit of u1"
# A put to a committed upload changes nothing and says it is whole.
r=$(put u1 0 600000 "$sha" "$W/seg0")
nb_assert_eq "ok 600000" "$(jget "$r" 'r["status"] + " " + str(r["result"]["have"])')" "put after the commit"
nb_assert_eq 0 "$(find "$NIMBUS_DIR/blobs/staging" -type f | wc -l)" "staging files after the commit"
r=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 600001, \"length\": 10}")
nb_assert_eq 400 "$(code "$r")" "blob.get past the end: $r"

# Another terminal asking about carol's blob, and about one that does not
# exist, gets the same answer through the same work: the grant checks
# (the only users of ZRANGEBYLEX and HEXISTS) run for every name it may
# not read, so no answer and no time tells the two apart.
nb_terminal dave
grant_cmds() {
  nb_redis info commandstats |
    awk -F'[:=,]' '/^cmdstat_(zrangebylex|hexists):/ {s += $3} END {print s + 0}'
}
names() { python3 -c 'import sys; print(str([sys.argv[1]] * 1000).replace("'"'"'", "\""))' "$1"; }
before=$(grant_cmds)
r=$(call blob.has "{\"blobs\": $(names "$sha")}")
nb_assert_eq 1000 "$(jget "$r" 'len(r["result"]["missing"])')" "dave: carol's blob is missing for him"
mid=$(grant_cmds)
r=$(call blob.has "{\"blobs\": $(names "$(printf '%064d' 7)")}")
nb_assert_eq 1000 "$(jget "$r" 'len(r["result"]["missing"])')" "dave: no such blob"
after=$(grant_cmds)
nb_assert_eq "$((mid - before))" "$((after - mid))" "grant checks, carol's blob against none"
((mid - before >= 2000)) || nb_fail "grant checks for 1000 names: $((mid - before))"
nb_log "ok"
