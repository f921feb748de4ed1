# Unreferenced blobs are collected after blob_ttl, referenced ones never
# (PROTOCOL.md, "Large objects: blobs"; issue: collection). With a 10 s
# blob_ttl: a blob no snapshot names goes (records, file, every terminal's
# access), blobs named by snapshots stay past the ttl, and deleting one
# snapshot frees only what no other snapshot still names.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--blob-ttl-ms 10000"
nb_stack_up 1
W=$NB_DIR/work
mkdir -p "$W"
upload() { # upload FILE: one segment, committed; prints the blob name
  local sha size r
  sha=$(sha256sum "$1" | cut -c1-64)
  size=$(stat -c %s "$1")
  r=$(call blob.put "{\"upload\": \"$sha\", \"offset\": 0, \"size\": $size, \"sha256\": \"$sha\"}" --data-file "$1")
  [[ $(jget "$r" 'r["status"]') == ok ]] || nb_fail "put of $1: $r"
  r=$(call blob.commit "{\"upload\": \"$sha\"}")
  [[ $(jget "$r" 'r["status"]') == ok ]] || nb_fail "commit of $1: $r"
  echo "$sha"
}
file_of() { echo "$NIMBUS_DIR/blobs/blobs/${1:0:2}/$1"; }
# janitor_passes N: returns once the janitor has finished N - 1 whole passes
# and begun another. Each pass first sweeps the staging files older than
# upload_ttl (a day), then collects: a file dated two days back goes at the
# start of the next pass.
janitor_passes() {
  local k f
  for ((k = 1; k <= $1; k++)); do
    f=$NIMBUS_DIR/blobs/staging/janitor-marker-$k
    : >"$f"
    touch -d '2 days ago' "$f"
    nb_wait_for "[[ ! -e $f ]]" 10 || nb_fail "the janitor never swept $f"
  done
}
item() { echo "{\"kind\": \"file\", \"name\": \"$1\", \"blob\": \"$2\", \"size\": 1000}"; }

for f in a b c; do head -c 1000 /dev/urandom >"$W/$f"; done
nb_terminal bob
BOB="NIMBUS_TERMINAL=$NIMBUS_TERMINAL NIMBUS_PASSWORD=$NIMBUS_PASSWORD"
nb_terminal alice
# (Snapshots within blob_ttl of the uploads, however slow the machine.)
A=$(upload "$W/a")
B=$(upload "$W/b")
r=$(call backup.commit "{\"items\": [$(item a "$A"), $(item b "$B")]}")
S1=$(jget "$r" 'r["result"]["snapshot"]')
r=$(call backup.commit "{\"items\": [$(item b "$B")]}")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "second snapshot: $r"
C=$(upload "$W/c")
# bob uploads the same bytes as A: stored once, and he may read it.
(export $BOB; upload "$W/a" >/dev/null)
nb_assert_eq 1 "$(nb_redis SISMEMBER nb:access:bob "$A")" "bob's access to A"

# C, named by nothing, goes; A and B stay well past the ttl.
nb_wait_for "[[ ! -e $(file_of "$C") ]]" 25 || nb_fail "unreferenced blob C was not collected"
r=$(call blob.get "{\"blob\": \"$C\", \"offset\": 0, \"length\": 10}")
nb_assert_eq 404 "$(jget "$r" 'r["code"]')" "blob.get of a collected blob"
r=$(call blob.has "{\"blobs\": [\"$A\", \"$B\", \"$C\"]}")
nb_assert_eq "['$C']" "$(jget "$r" 'r["result"]["missing"]')" "blob.has after C was collected"
nb_assert_eq 0 "$(nb_redis EXISTS "nb:blob:$C")" "C's metadata"
grep -q "WK-GC.*collected 1 unreferenced blob" "$NIMBUS_DIR"/worker-1/log || nb_fail "no collection logged"
# A whole later pass of the collector, and A and B are still there.
janitor_passes 2
for x in "$A" "$B"; do
  [[ -e $(file_of "$x") ]] || nb_fail "blob $x named by a snapshot was collected"
  r=$(call blob.get "{\"blob\": \"$x\", \"offset\": 0, \"length\": 1000}")
  nb_assert_eq "ok 1000" "$(jget "$r" 'r["status"]+" "+str(r["data_size"])')" "referenced blob readable"
done

# Deleting S1 frees A (bob's access to it goes too), not B (S2 names it).
r=$(call backup.delete "{\"snapshot\": \"$S1\"}")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "delete: $r"
nb_wait_for "[[ ! -e $(file_of "$A") ]]" 25 || nb_fail "A was not collected after its snapshot went"
nb_assert_eq 0 "$(nb_redis SISMEMBER nb:access:bob "$A")" "bob's access to collected A"
r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call blob.has "{\"blobs\": [\"$A\"]}" 2>/dev/null || true)
nb_assert_eq "['$A']" "$(jget "$r" 'r["result"]["missing"]')" "bob must upload A again"
janitor_passes 2
[[ -e $(file_of "$B") ]] || nb_fail "B, still named by a snapshot, was collected"
r=$(call blob.get "{\"blob\": \"$B\", \"offset\": 0, \"length\": 1000}")
nb_assert_eq "ok" "$(jget "$r" 'r["status"]')" "B still readable"

# Content collected a moment ago can be uploaded and committed again.
nb_wait_for "[[ \$(nb_redis EXISTS nb:blob:$A:gone) == 0 ]]" 5 || nb_fail "A's tombstone stayed"
nb_assert_eq "$A" "$(upload "$W/a")" "A uploaded again after its collection"
r=$(call blob.get "{\"blob\": \"$A\", \"offset\": 0, \"length\": 1000}")
nb_assert_eq "ok 1000" "$(jget "$r" 'r["status"]+" "+str(r["data_size"])')" "A readable again"

# A snapshot whose blob's metadata a Redis restored from an older state
# lost: deleting it releases nothing it cannot find (no bare refs of -1
# that a later reference would bring to 0 while that one still names it).
head -c 1000 /dev/urandom >"$W/d"
D=$(upload "$W/d")
r=$(call backup.commit "{\"items\": [$(item d "$D")]}")
S3=$(jget "$r" 'r["result"]["snapshot"]')
nb_redis DEL "nb:blob:$D" >/dev/null
r=$(call backup.delete "{\"snapshot\": \"$S3\"}")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "delete of a snapshot whose blob lost its metadata: $r"
nb_assert_eq 0 "$(nb_redis EXISTS "nb:blob:$D")" "D's metadata after the release"
nb_log "ok"
