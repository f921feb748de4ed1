# Item names backup.commit refuses because no filesystem could restore
# them, and the text rules every name shares (schemas/SPEC.md, Backups): a
# name that is also the directory of another item ("a" and "a/b", in
# either order, with names such as "a-b" that sort between them bytewise),
# inline and through a 20,000-item manifest; a component over 255 bytes
# (255 is fine); C1 control characters (U+009B is CSI) in a name and in
# the label, where U+00A0 is fine. Each refusal is a 400 naming the item,
# and stores nothing.
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
W=$NB_DIR/work
mkdir -p "$W"

nb_terminal alice
printf 'hello' >"$W/hello"
sha=$(sha256sum "$W/hello" | cut -c1-64)
r=$(call blob.put "{\"upload\": \"hello\", \"offset\": 0, \"size\": 5, \"sha256\": \"$sha\"}" --data-file "$W/hello")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "blob.put: $r"
r=$(call blob.commit '{"upload": "hello"}')
nb_assert_eq "$sha" "$(jget "$r" 'r["result"]["blob"]')" "blob.commit: $r"

it() { echo "{\"kind\": \"file\", \"name\": \"$1\", \"blob\": \"$sha\", \"size\": 5}"; }
# commit ITEMS... : backup.commit of the items given; prints the reply.
commit() {
  local items
  items=$(IFS=,; echo "$*")
  call backup.commit "{\"items\": [$items]}"
}
# refused WANT-ERROR WHAT ITEMS...: a 400 whose error is WANT-ERROR.
refused() {
  local want=$1 what=$2 r
  shift 2
  r=$(commit "$@")
  nb_assert_eq "400 $want" "$(jget "$r" 'str(r["code"])+" "+r["error"]')" "$what"
}
snapshots() { jget "$(call backup.list '{}')" 'len(r["result"]["snapshots"])'; }

# A name that is also another item's directory, in either order.
refused 'args.items[1] ("a/b") is inside args.items[0] ("a"), which is a file, not a directory' \
  "a file, then a name inside it" "$(it a)" "$(it a/b)"
refused 'args.items[0] ("a/b/c") is inside args.items[3] ("a"), which is a file, not a directory' \
  "a name inside a file listed after it, with a-b and a.b between them bytewise" \
  "$(it a/b/c)" "$(it a-b)" "$(it a.b)" "$(it a)" "$(it b)"
refused 'args.items[2] ("x/y/z") is inside args.items[0] ("x/y"), which is a file, not a directory' \
  "a clash below a shared directory" "$(it x/y)" "$(it x/w)" "$(it x/y/z)"
nb_assert_eq 0 "$(snapshots)" "nothing stored by the refusals"
# Shared directories, prefixes that are not directories, and the same
# component in other places are all fine.
r=$(commit "$(it a/b)" "$(it a/c)" "$(it ab)" "$(it a-b/x)" "$(it b/a)" "$(it b/a.b)")
nb_assert_eq "ok 6" "$(jget "$r" 'r["status"]+" "+str(r["result"]["items"])')" "names that can be laid out: $r"

# Components: 255 bytes is the most a filesystem names; 256 never restores.
c255=$(printf 'x%.0s' {1..255})
refused 'args.items[1].name has a component longer than 255 bytes' \
  "a 256-byte component" "$(it "d/$c255")" "$(it "d/${c255}y/z")"
r=$(commit "$(it "d/$c255")" "$(it "$c255/$c255")")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "255-byte components: $r"

# C1 control characters are control characters (SPEC.md: none in a name).
refused 'args.items[0].name holds a control character' "CSI (U+009B) in a name" \
  "$(it 'DCIM/\u009b2J.jpg')"
refused 'args.items[1].name holds a control character' "NEL (U+0085) in a name" \
  "$(it ok)" "$(it 'a\u0085b')"
r=$(call backup.commit "{\"items\": [$(it a)], \"label\": \"x\\u009b31m\"}")
nb_assert_eq "400 args.label holds a control character" \
  "$(jget "$r" 'str(r["code"])+" "+r["error"]')" "CSI in the label"
r=$(call backup.commit "{\"items\": [$(it 'no\u00a0break')], \"label\": \"caf\\u00e9\\u00a0\"}")
nb_assert_eq "ok" "$(jget "$r" 'r["status"]')" "U+00A0 in a name and a label: $r"
nb_assert_eq 3 "$(snapshots)" "only the three good commits stored"

# Through a manifest: 20,000 items, one clash between the 7th and the
# 19,999th; the error names both by their place in the manifest.
python3 - "$W/manifest" "$sha" <<'EOF'
import struct, sys
def s(b):
    b = b.encode()
    return (bytes([0xa0 | len(b)]) if len(b) < 32 else b'\xd9' + bytes([len(b)])) + b
out, sha = sys.argv[1], sys.argv[2]
names = ['m/%05d' % i for i in range(20000)]
names[19998] = 'm/00006/inside'
parts = [b'\xdd' + struct.pack('>I', len(names))]
for n in names:
    parts.append(b'\x84' + s('kind') + s('file') + s('name') + s(n) + s('blob')
                 + b'\xd9\x40' + sha.encode() + s('size') + b'\x05')
open(out, 'wb').write(b''.join(parts))
EOF
msha=$(sha256sum "$W/manifest" | cut -c1-64)
msize=$(stat -c %s "$W/manifest")
rm -f "$W"/mseg*
(cd "$W" && split -b 262144 -d -a 3 manifest mseg)
i=0
for f in "$W"/mseg*; do
  r=$(call blob.put "{\"upload\": \"manifest\", \"offset\": $((i * 262144)), \"size\": $msize, \"sha256\": \"$msha\"}" --data-file "$f")
  nb_assert_eq ok "$(jget "$r" 'r["status"]')" "manifest put $i: $r"
  i=$((i + 1))
done
r=$(call blob.commit '{"upload": "manifest"}')
nb_assert_eq "$msha" "$(jget "$r" 'r["result"]["blob"]')" "manifest commit: $r"
t0=$(date +%s%N)
r=$(call backup.commit "{\"manifest\": \"$msha\"}" --timeout 60000)
t1=$(date +%s%N)
nb_assert_eq '400 the manifest[19998] ("m/00006/inside") is inside the manifest[6] ("m/00006"), which is a file, not a directory' \
  "$(jget "$r" 'str(r["code"])+" "+r["error"]')" "a clash in a manifest"
nb_log "20,000-item manifest refused in $(((t1 - t0) / 1000000)) ms"
nb_assert_eq 3 "$(snapshots)" "nothing stored by the manifest's refusal"

# Restore's part files (".nimbus-<24 hex>.part" beside their items): a
# backup leaves one out, and a restore does not write an item so named
# (another item's download could take it for its own part file).
part=.nimbus-0123456789abcdef01234567.part
mkdir -p "$W/tree/d"
printf 'hello' >"$W/tree/d/f"
printf 'left' >"$W/tree/d/$part"
out=$(nb_agent backup "$W/tree" --json 2>"$W/b.err") || nb_fail "backup: $(cat "$W/b.err")"
nb_assert_eq "1 1" "$(jget "$out" '"%d %d" % (r["items"], r["skipped"])')" "a part file left out"
grep -q "skipped .*$part: a part file an interrupted restore left" "$W/b.err" ||
  nb_fail "the skip was not said: $(cat "$W/b.err")"
r=$(commit "$(it d/f)" "$(it "d/$part")")
snap=$(jget "$r" 'r["result"]["snapshot"]')
set +e
out=$(nb_agent restore --snapshot "$snap" "$W/back" --json 2>"$W/r.err")
set -e
nb_assert_eq "1 1" "$(jget "$out" '"%d %d" % (r["restored"], r["failed"])')" \
  "a restore of an item named as a part file: $(cat "$W/r.err")"
[[ ! -e $W/back/d/$part ]] || nb_fail "the item named as a part file was written"

# A FIFO where restore makes a copy's part file (another item of the same
# content): removed and replaced by a file of restore's own, not opened
# (an open for writing would wait for a reader for ever).
r=$(commit "$(it c/a)" "$(it c/b)")
snap=$(jget "$r" 'r["result"]["snapshot"]')
fifo=$(python3 -c 'import hashlib, sys
h = hashlib.sha256(b"c/b\0" + bytes.fromhex(sys.argv[1])).hexdigest()
print(".nimbus-%s.part" % h[:24])' "$sha")
mkdir -p "$W/back2/c"
mkfifo "$W/back2/c/$fifo"
out=$(timeout 30 "$NIMBUS_BIN/nimbus-agent" restore --snapshot "$snap" "$W/back2" --json 2>"$W/r2.err") ||
  nb_fail "restore beside a FIFO: $out $(cat "$W/r2.err")"
nb_assert_eq "2 0" "$(jget "$out" '"%d %d" % (r["restored"], r["failed"])')" "restore beside a FIFO"
nb_assert_eq hello "$(cat "$W/back2/c/b")" "the copy made beside a FIFO"
[[ ! -e $W/back2/c/$fifo ]] || nb_fail "the FIFO stayed"
nb_log "ok"
