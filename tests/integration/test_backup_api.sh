# backup.commit / list / get / delete on the wire (PROTOCOL.md, "Backup and
# restore"): a snapshot of three uploaded blobs committed, read back from a
# second device of the same terminal and by the latest default; nothing
# stored on a 409 (a blob never uploaded, or another terminal's blob named
# by its hash); 404 for another terminal's snapshot; bad items refused with
# 400 (unsafe names, duplicates, wrong size, unknown kind, both items and
# manifest); a manifest of 5,000 items sharing three blobs; paging newest
# first; delete with its replay, and the blobs' reference counts following
# commits and deletes.
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
W=$NB_DIR/work
mkdir -p "$W"

expect() { # expect WANT REPLY-EXPR REPLY WHAT
  nb_assert_eq "$1" "$(jget "$3" "$2")" "$4: $3"
}

# upload FILE: puts FILE in one or more segments and commits it; prints
# the blob's name.
upload() {
  local f=$1 size sha i=0 r
  size=$(stat -c %s "$f")
  sha=$(sha256sum "$f" | cut -c1-64)
  rm -f "$W"/useg*
  (cd "$W" && split -b 262144 -d -a 3 "$f" useg)
  [[ $size -gt 0 ]] || : >"$W/useg000"
  for s in "$W"/useg*; do
    r=$(call blob.put "{\"upload\": \"$sha\", \"offset\": $((i * 262144)), \"size\": $size, \"sha256\": \"$sha\"}" --data-file "$s")
    [[ $(jget "$r" 'r["status"]') == ok ]] || nb_fail "put of $f: $r"
    i=$((i + 1))
  done
  r=$(call blob.commit "{\"upload\": \"$sha\"}")
  [[ $(jget "$r" 'r["result"]["blob"]') == "$sha" ]] || nb_fail "commit of $f: $r"
  echo "$sha"
}

nb_terminal bob
BOB="NIMBUS_TERMINAL=$NIMBUS_TERMINAL NIMBUS_PASSWORD=$NIMBUS_PASSWORD"
nb_terminal alice

printf 'BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nEND:VCARD\n' >"$W/ada.vcf"
head -c 300000 /dev/urandom >"$W/cat.jpg"
head -c 1000 /dev/urandom >"$W/notes.bin"
vcf=$(upload "$W/ada.vcf")
jpg=$(upload "$W/cat.jpg")
bin=$(upload "$W/notes.bin")
refs() { nb_redis HGET "nb:blob:$1" refs; }

items="[{\"kind\": \"contact\", \"name\": \"Phone/ada.vcf\", \"blob\": \"$vcf\", \"size\": $(stat -c %s "$W/ada.vcf"), \"mtime\": 1700000000123},
        {\"kind\": \"photo\", \"name\": \"Phone/DCIM/cat.jpg\", \"blob\": \"$jpg\", \"size\": 300000},
        {\"kind\": \"file\", \"name\": \"Phone/notes ü.bin\", \"blob\": \"$bin\", \"size\": 1000}]"
cid=commit-$(date +%s%N)-aaaaaaaa
r=$(call backup.commit "{\"items\": $items, \"label\": \"first\"}" --id "$cid")
expect "ok 3 $((300000 + 1000 + $(stat -c %s "$W/ada.vcf")))" 'r["status"]+" "+str(r["result"]["items"])+" "+str(r["result"]["bytes"])' "$r" "commit"
snap1=$(jget "$r" 'r["result"]["snapshot"]')
r2=$(call backup.commit "{\"items\": $items, \"label\": \"first\"}" --id "$cid")
nb_assert_eq "$r" "$r2" "backup.commit sent again (same id) replays"
nb_assert_eq 1 "$(refs "$jpg")" "refs of a blob in one snapshot"

# Read back from a second device of the same terminal, by id and latest.
r=$(call backup.get "{\"snapshot\": \"$snap1\"}" --state-dir "$W/device2")
expect "ok first 3" 'r["status"]+" "+r["result"]["label"]+" "+str(r["result"]["count"])' "$r" "get by id"
expect "Phone/DCIM/cat.jpg $jpg 300000" 'r["result"]["items"][1]["name"]+" "+r["result"]["items"][1]["blob"]+" "+str(r["result"]["items"][1]["size"])' "$r" "item as committed"
expect "1700000000123 Phone/notes ü.bin" 'str(r["result"]["items"][0]["mtime"])+" "+r["result"]["items"][2]["name"]' "$r" "mtime and a UTF-8 name"
r=$(call backup.get '{}')
expect "$snap1" 'r["result"]["snapshot"]' "$r" "latest snapshot"

# 409: a blob never uploaded; nothing stored.
ghost=$(printf ghost | sha256sum | cut -c1-64)
r=$(call backup.commit "{\"items\": [{\"kind\": \"file\", \"name\": \"a\", \"blob\": \"$vcf\", \"size\": $(stat -c %s "$W/ada.vcf")}, {\"kind\": \"file\", \"name\": \"b\", \"blob\": \"$ghost\", \"size\": 5}]}")
expect "409 ['$ghost'] False" 'str(r["code"])+" "+str(r["result"]["missing"])+" "+str(r["result"]["more"])' "$r" "commit naming an absent blob"
r=$(call backup.list '{}')
expect 1 'len(r["result"]["snapshots"])' "$r" "nothing stored by the 409"
nb_assert_eq 1 "$(refs "$vcf")" "refs unchanged by the 409"

# Another terminal: alice's hashes grant nothing, her snapshot is not found.
r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call backup.commit "{\"items\": [{\"kind\": \"photo\", \"name\": \"x.jpg\", \"blob\": \"$jpg\", \"size\": 300000}]}" 2>/dev/null || true)
expect "409 ['$jpg']" 'str(r["code"])+" "+str(r["result"]["missing"])' "$r" "bob names alice's blob"
for t in get delete; do
  r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call "backup.$t" "{\"snapshot\": \"$snap1\"}" 2>/dev/null || true)
  expect 404 'r["code"]' "$r" "bob's backup.$t of alice's snapshot"
done
r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call backup.list '{}' 2>/dev/null || true)
expect 0 'len(r["result"]["snapshots"])' "$r" "bob lists no snapshot"
r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call backup.get '{}' 2>/dev/null || true)
expect 404 'r["code"]' "$r" "bob has no latest snapshot"

# 400s, each with the offending item named.
bad() { # bad ITEM-JSON WHAT [MORE-ARGS]
  local r
  r=$(call backup.commit "{\"items\": [$1]${3:-}}")
  expect 400 'r["code"]' "$r" "$2"
}
it() { echo "{\"kind\": \"${3:-file}\", \"name\": \"$1\", \"blob\": \"$bin\", \"size\": ${2:-1000}}"; }
bad "$(it ../evil)" "a .. name"
bad "$(it /etc/passwd)" "an absolute name"
bad "$(it a//b)" "an empty component"
bad "$(it a/./b)" "a . component"
bad "$(it 'a\u0001b')" "a control character"
bad "$(it x), $(it x)" "a name twice"
bad "$(it x 999)" "a wrong size"
bad "$(it x 1000 music)" "an unknown kind"
bad "$(it x)" "items and manifest" ", \"manifest\": \"$bin\""
bad "$(it x)" "a label with a newline" ", \"label\": \"a\\nb\""
r=$(call backup.commit '{}')
expect 400 'r["code"]' "$r" "neither items nor manifest"

# A manifest: 5,000 items sharing three blobs, uploaded as a blob.
python3 - "$W/manifest" "$vcf" "$jpg" "$bin" "$(stat -c %s "$W/ada.vcf")" <<'EOF'
import struct, sys
def s(b):
    b = b.encode()
    return (bytes([0xa0 | len(b)]) if len(b) < 32 else b'\xd9' + bytes([len(b)])) + b
def u(n):
    return bytes([n]) if n < 128 else b'\xce' + struct.pack('>I', n)
out, vcf, jpg, bin_, vsize = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
blobs = [(vcf, vsize, 'contact'), (jpg, 300000, 'photo'), (bin_, 1000, 'file')]
n = 5000
parts = [b'\xdd' + struct.pack('>I', n)]
for i in range(n):
    h, size, kind = blobs[i % 3]
    parts.append(b'\x84' + s('kind') + s(kind) + s('name')
                 + s('all/%05d.%s' % (i, kind)) + s('blob')
                 + (b'\xd9\x40' + h.encode()) + s('size') + u(size))
open(out, 'wb').write(b''.join(parts))
EOF
man=$(upload "$W/manifest")
r=$(call backup.commit "{\"manifest\": \"$man\", \"label\": \"big\"}" --timeout 60000)
expect "ok 5000" 'r["status"]+" "+str(r["result"]["items"])' "$r" "commit through a manifest"
snap2=$(jget "$r" 'r["result"]["snapshot"]')
r=$(call backup.get '{}')
expect "$snap2 $man 5000 False" 'r["result"]["snapshot"]+" "+r["result"]["manifest"]+" "+str(r["result"]["count"])+" "+str("items" in r["result"])' "$r" "get of a manifest snapshot"
nb_assert_eq 2 "$(refs "$jpg")" "refs: two snapshots name the photo"
nb_assert_eq 1 "$(refs "$man")" "refs: the snapshot names its manifest"
r=$(env $BOB "$NIMBUS_BIN/nimbus-agent" call backup.commit "{\"manifest\": \"$man\"}" 2>/dev/null || true)
expect "409 ['$man']" 'str(r["code"])+" "+str(r["result"]["missing"])' "$r" "bob names alice's manifest"

# Paging, newest first.
sleep 0.01
r=$(call backup.commit "{\"items\": [], \"label\": \"empty\"}")
snap3=$(jget "$r" 'r["result"]["snapshot"]')
r=$(call backup.list '{"limit": 2}')
expect "$snap3 $snap2 True" '" ".join(s["snapshot"] for s in r["result"]["snapshots"])+" "+str("next_cursor" in r["result"])' "$r" "first page"
cur=$(jget "$r" 'r["result"]["next_cursor"]')
r=$(call backup.list "{\"limit\": 2, \"cursor\": \"$cur\"}")
expect "$snap1 first 3 False" '" ".join(s["snapshot"]+" "+s["label"]+" "+str(s["items"]) for s in r["result"]["snapshots"])+" "+str("next_cursor" in r["result"])' "$r" "last page"
r=$(call backup.list '{"limit": 1001}')
expect 400 'r["code"]' "$r" "limit over 1000"

# Delete: replayed with its id, then 404; references released once.
did=delete-$(date +%s%N)-aaaaaaa
r=$(call backup.delete "{\"snapshot\": \"$snap2\"}" --id "$did")
expect "ok $snap2" 'r["status"]+" "+r["result"]["snapshot"]' "$r" "delete"
r2=$(call backup.delete "{\"snapshot\": \"$snap2\"}" --id "$did")
nb_assert_eq "$r" "$r2" "delete sent again (same id) replays"
r=$(call backup.delete "{\"snapshot\": \"$snap2\"}")
expect 404 'r["code"]' "$r" "delete of a deleted snapshot"
r=$(call backup.get "{\"snapshot\": \"$snap2\"}")
expect 404 'r["code"]' "$r" "get of a deleted snapshot"
nb_assert_eq "1 0" "$(refs "$jpg") $(refs "$man")" "refs after the delete"
r=$(call backup.list '{}')
expect "$snap3 $snap1" '" ".join(s["snapshot"] for s in r["result"]["snapshots"])' "$r" "list after the delete"
# Bad snapshot arguments are a 400, and the worker lives on (they once
# freed an uninitialised snapshot and killed it).
r=$(call backup.delete '{}')
expect 400 'r["code"]' "$r" "delete without a snapshot"
r=$(call backup.delete '{"snapshot": 5}')
expect 400 'r["code"]' "$r" "delete with a number for a snapshot"
r=$(call backup.get '{"snapshot": "not an id!"}')
expect 400 'r["code"]' "$r" "get with a malformed snapshot id"
for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died on a bad argument"
done
r=$(call backup.list '{}')
expect ok 'r["status"]' "$r" "list after the bad arguments"
nb_log "ok"
