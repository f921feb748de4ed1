# The text rules item names and labels share (schemas/SPEC.md, Backups):
# C1 control characters (U+009B is CSI) are control characters, refused
# in a name and in the label with a 400 naming the item, where U+00A0 is
# fine; nothing is stored by a refusal.
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
nb_assert_eq 1 "$(snapshots)" "only the good commit stored"

nb_log "ok"
