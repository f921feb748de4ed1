# Sharing end to end (PROTOCOL.md, Sharing; schemas/SPEC.md, Shares), on
# one stack of two workers with a short blob_ttl and a short
# share_max_expires: alice shares, bob fetches by token and by owner/name
# byte for byte; `to` is enforced (carol gets 404 and no notice) and a
# notice reaches a recipient that was offline when the share was made;
# max_downloads 2 lets exactly two of three terminals asking at once get
# it; expiry and revoke end both share.get and blob.get; an ended share
# releases its blob, which the janitor then collects; blob.has counts a
# blob a terminal may read through a share as present, so a backup or a
# share of the fetched file sends nothing and outlives the share; the
# library's typed share calls answer as the cloud does; every bad input
# gets its 400/404/409; the same task id twice makes one share. A JPEG
# made here gets a thumbnail (256 px on the long side) that its addressee
# fetches with --thumbnail, another terminal may not read, nobody may once
# the share is revoked, and whose reference the sweep releases; random
# bytes called image/jpeg and a text get none, and are shared all the
# same.
source "$(dirname "$0")/lib.sh"
NIMBUS_WORKER_FLAGS="--blob-ttl-ms 8000 --share-max-expires-ms 600000" \
  nb_stack_up 2

nb_terminals carol dave bob alice
code() { jget "$1" 'r["code"]'; }
# "CODE ERROR" of a reply.
ce() { jget "$1" 'str(r["code"]) + " " + r.get("error", "")'; }
NOSHARE='there is no share of that name or token for this terminal'

# Everyone's persistent session subscribes once, then goes offline, so the
# notices of shares made meanwhile wait for them at the broker.
for t in bob carol dave; do nb_as "$t" nb_agent ping >/dev/null; done

cd "$NB_DIR"
head -c 700000 /dev/urandom >photo.jpg

# ---- share to bob, who is offline; a second share to carol ----------------
s=$(nb_agent share photo.jpg --to bob --mime image/jpeg) || nb_fail "share"
tokA=$(jget "$s" 'r["token"]')
blob=$(jget "$s" 'r["blob"]')
nb_assert_eq alice/photo.jpg "$(jget "$s" 'r["address"]')" "address"
nb_assert_eq 700000 "$(jget "$s" 'r["size"]')" "size"
nb_assert_eq 1 "$(nb_redis hget "nb:blob:$blob" refs)" "refs while shared"
nb_assert_eq None "$(jget "$s" 'r.get("thumbnail")')" "no thumbnail of a corrupt picture"
s=$(nb_agent share photo.jpg --name for-carol --to carol) || nb_fail "share 2"
tokB=$(jget "$s" 'r["token"]')
[[ $tokA =~ ^[A-Za-z0-9_-]{24}$ && $tokA != "$tokB" ]] || nb_fail "tokens $tokA $tokB"

# The notices, kept while they were offline. carol's first is her own
# share's: she got none of bob's.
n=$(nb_as bob timeout 60 "$NIMBUS_BIN/nimbus-agent" listen --count 1) ||
  nb_fail "bob got no notice"
nb_assert_eq "share.new $tokA photo.jpg alice 700000 image/jpeg" \
  "$(jget "$n" '" ".join(str(r[k]) for k in ("kind","token","name","owner","size","mime"))')" \
  "bob's notice"
n=$(nb_as carol timeout 60 "$NIMBUS_BIN/nimbus-agent" listen --count 1) ||
  nb_fail "carol got no notice"
nb_assert_eq "$tokB" "$(jget "$n" 'r["token"]')" "carol's first notice"

# ---- fetch by token and by owner/name, byte for byte -----------------------
mkdir bob
nb_as bob nb_agent fetch "$tokA" bob/ >/dev/null || nb_fail "fetch by token"
cmp photo.jpg bob/photo.jpg || nb_fail "fetched bytes differ"
nb_as bob nb_agent fetch alice/photo.jpg bob/again.jpg >/dev/null ||
  nb_fail "fetch by owner/name"
cmp photo.jpg bob/again.jpg || nb_fail "bytes by name differ"
[[ ! -e bob/.photo.jpg.part && ! -e bob/.again.jpg.part ]] ||
  nb_fail "part files left: $(ls -A bob)"

# `to` holds: carol gets the same 404 as for a share that does not exist.
r=$(nb_as carol call share.get "{\"token\": \"$tokA\"}")
nb_assert_eq "404 $NOSHARE" "$(ce "$r")" "carol"
r=$(nb_as carol call share.get '{"owner": "alice", "name": "photo.jpg"}')
nb_assert_eq 404 "$(code "$r")" "carol by name"
r=$(nb_as carol call blob.get "{\"blob\": \"$blob\", \"offset\": 0, \"length\": 4}")
nb_assert_eq 404 "$(code "$r")" "carol's blob.get"
r=$(call share.get '{"token": "AAAAAAAAAAAAAAAAAAAAAAAA"}')
nb_assert_eq "404 $NOSHARE" "$(ce "$r")" "no such token"

# Lists: alice's own in full, bob's inbox.
r=$(call share.list '{}')
nb_assert_eq "for-carol:carol photo.jpg:bob" \
  "$(jget "$r" '" ".join(s["name"]+":"+",".join(s["to"]) for s in r["result"]["shares"])')" \
  "alice's shares"
r=$(nb_as bob call share.list '{"inbox": true}')
nb_assert_eq "$tokA" "$(jget "$r" '" ".join(s["token"] for s in r["result"]["shares"])')" "bob's inbox"
# The same through `nimbus-agent shares` (one JSON object a line on a
# pipe: own shares, then the inbox), and unshare of what is not one's own.
names() { python3 -c 'import json, sys
print(" ".join(sorted(j["name"] + ":" + ",".join(j.get("to", ["-"])) for j in map(json.loads, sys.stdin) if j)))'; }
nb_assert_eq "for-carol:carol photo.jpg:bob" "$(nb_agent shares | names)" "alice's shares (CLI)"
nb_assert_eq "photo.jpg:-" "$(nb_as bob nb_agent shares | names)" "bob's shares (CLI)"
rc=0
nb_as bob nb_agent unshare "$tokA" >/dev/null 2>&1 || rc=$?
nb_assert_eq 1 "$rc" "bob's unshare of alice's share"

# ---- revoke ends share.get and blob.get ---------------------------------
r=$(nb_as bob call blob.get "{\"blob\": \"$blob\", \"offset\": 0, \"length\": 4}")
nb_assert_eq 0 "$(code "$r")" "bob's blob.get while shared"
r=$(nb_as bob call share.revoke "{\"token\": \"$tokA\"}")
nb_assert_eq "404 $NOSHARE" "$(ce "$r")" "revoke by bob"
nb_agent unshare "$tokA" >/dev/null || nb_fail "unshare"
r=$(nb_as bob call share.get "{\"token\": \"$tokA\"}")
nb_assert_eq "404 $NOSHARE" "$(ce "$r")" "after revoke"
r=$(nb_as bob call blob.get "{\"blob\": \"$blob\", \"offset\": 0, \"length\": 4}")
nb_assert_eq 404 "$(code "$r")" "bob's blob.get after revoke"
r=$(call share.revoke "{\"token\": \"$tokA\"}")
nb_assert_eq 404 "$(code "$r")" "revoke twice"

# ---- blob.has counts what a share lets a terminal read: dave's backup of
# the fetched file sends nothing and restores after the share ended; bob's
# share of it sends nothing, and he may still fetch his own share then ----
head -c 70000 /dev/urandom >kept.bin
s=$(nb_agent share kept.bin --to bob,dave) || nb_fail "share kept.bin"
ktok=$(jget "$s" 'r["token"]')
kblob=$(jget "$s" 'r["blob"]')
mkdir dave
for t in bob dave; do
  nb_as "$t" nb_agent fetch "$ktok" "$t/" >/dev/null || nb_fail "$t's fetch of kept.bin"
  r=$(nb_as "$t" call blob.has "{\"blobs\": [\"$kblob\"]}")
  nb_assert_eq 0 "$(jget "$r" 'len(r["result"]["missing"])')" "$t's blob.has, shared"
done
r=$(nb_as carol call blob.has "{\"blobs\": [\"$kblob\"]}")
nb_assert_eq "$kblob" "$(jget "$r" '" ".join(r["result"]["missing"])')" "carol's blob.has"
out=$(cd dave && nb_as dave nb_agent backup kept.bin) || nb_fail "dave's backup of the fetched file"
nb_assert_eq "1 0 0" "$(jf "$out" items blobs_uploaded bytes_sent)" "dave's backup sent nothing"
(cd bob && nb_as bob nb_agent share kept.bin --name kept-again >/dev/null) ||
  nb_fail "bob's share of the fetched file"
nb_agent unshare "$ktok" >/dev/null || nb_fail "unshare kept.bin"
(cd dave && nb_as dave nb_agent restore --snapshot "$(jf "$out" snapshot)" restored >/dev/null) ||
  nb_fail "dave's restore after the revoke"
cmp kept.bin dave/restored/kept.bin || nb_fail "dave's restored bytes differ"
nb_as bob nb_agent fetch bob/kept-again bob/again.bin >/dev/null ||
  nb_fail "bob's fetch of his own share after the revoke"
cmp kept.bin bob/again.bin || nb_fail "bob's own share's bytes differ"

# ---- max_downloads 2, three terminals at the same instant -----------------
s=$(nb_agent share photo.jpg --name two --max-downloads 2) || nb_fail "share two"
tok2=$(jget "$s" 'r["token"]')
pids=()
for t in bob carol dave; do
  nb_as "$t" call share.get "{\"token\": \"$tok2\"}" >"race.$t" &
  pids+=($!)
done
wait "${pids[@]}" # (not a bare wait: the stack's watcher is a job too)
got=$(for t in bob carol dave; do code "$(cat "race.$t")"; done | sort | tr '\n' ' ')
nb_assert_eq "0 0 404 " "$got" "three at once, two may"
for t in bob carol dave; do
  r=$(nb_as "$t" call share.get "{\"token\": \"$tok2\"}")
  nb_assert_eq "$(code "$(cat "race.$t")")" "$(code "$r")" "$t again"
done
r=$(call share.get "{\"token\": \"$tok2\"}")
nb_assert_eq "0 2 2" "$(jget "$r" '" ".join(str(x) for x in (r["code"], r["result"]["downloads"], r["result"]["max_downloads"]))')" \
  "the owner's get does not count"

# ---- expiry: a short expires_in; the configured maximum ------------------
# (Content of its own: bob may hold a live share of photo.jpg's blob. 5 s:
# time for the two checks before it ends, also on a loaded machine.)
head -c 3000 /dev/urandom >brief.txt
s=$(nb_agent share brief.txt --expires 5s) || nb_fail "share brief"
tok3=$(jget "$s" 'r["token"]')
b3=$(jget "$s" 'r["blob"]')
r=$(nb_as bob call share.get "{\"token\": \"$tok3\"}")
nb_assert_eq 0 "$(code "$r")" "before expiry"
r=$(nb_as bob call blob.get "{\"blob\": \"$b3\", \"offset\": 0, \"length\": 4}")
nb_assert_eq 0 "$(code "$r")" "blob.get before expiry"
# While brief.txt's share runs out (waited for below, with the collection
# of gone.txt's blob, so the two waits overlap):
# ---- an ended share releases its blob; the janitor collects it -----------
head -c 5000 /dev/urandom >gone.txt
s=$(nb_agent share gone.txt --name gone) || nb_fail "share gone"
tok4=$(jget "$s" 'r["token"]')
b4=$(jget "$s" 'r["blob"]')
nb_assert_eq 1 "$(nb_redis hget "nb:blob:$b4" refs)" "refs of gone.txt"
nb_agent unshare "$tok4" >/dev/null || nb_fail "unshare gone"
nb_wait_for "[[ \$(nb_redis exists nb:share:$tok4) == 0 ]]" 30 ||
  nb_fail "the revoked share was not released"
nb_assert_eq 0 "$(nb_redis hget "nb:blob:$b4" refs)" "refs after release"
nb_wait_for "[[ \$(code \"\$(nb_as bob call share.get '{\"token\": \"$tok3\"}')\") == 404 ]]" 60 ||
  nb_fail "the share did not expire"
r=$(nb_as bob call share.get "{\"token\": \"$tok3\"}")
nb_assert_eq "404 $NOSHARE" "$(ce "$r")" "expired"
r=$(nb_as bob call blob.get "{\"blob\": \"$b3\", \"offset\": 0, \"length\": 4}")
nb_assert_eq 404 "$(code "$r")" "blob.get after expiry"
r=$(call share.get '{"owner": "alice", "name": "for-carol"}')
left=$(jget "$r" 'r["result"]["expires_at"] - r["result"]["created"]')
nb_assert_eq 600000 "$left" "default lifetime (share_max_expires_ms)"

# ---- ... and the janitor collected gone.txt's blob meanwhile ------------
nb_wait_for "[[ \$(nb_redis exists nb:blob:$b4) == 0 ]]" 30 ||
  nb_fail "the released blob was not collected"
r=$(call share.list '{}')
nb_assert_eq "for-carol two" "$(jget "$r" '" ".join(sorted(s["name"] for s in r["result"]["shares"]))')" \
  "live shares (photo.jpg revoked, brief expired, gone released)"

# ---- pictures get a thumbnail (the image module, through the machinery) ---
# A 1000 x 1500 JPEG made here: its thumbnail is 171 x 256 (the long side
# 256). The share names it; bob, addressed, gets the share and fetches the
# thumbnail; carol, not addressed, may not read it; revoked, nobody may.
mkdir thumbs
vips gaussnoise noise.v 1000 1500 && vips cast noise.v pic.jpg[Q=90] uchar ||
  nb_fail "vips could not make a JPEG"
s=$(nb_agent share pic.jpg --to bob) || nb_fail "share pic.jpg"
tok=$(jget "$s" 'r["token"]')
thumb=$(jget "$s" 'r.get("thumbnail", "")')
[[ $thumb =~ ^[0-9a-f]{64}$ ]] || nb_fail "share.create named no thumbnail: $s"
nb_assert_eq "image/jpeg" "$(jget "$s" 'r["mime"]')" "pic.jpg's type"
nb_assert_eq 2 "$(nb_redis hget "nb:blob:$thumb" refs)" \
  "the thumbnail's references (the share's and its result's)"
r=$(nb_as bob call share.get "{\"token\": \"$tok\"}")
nb_assert_eq "$thumb" "$(jget "$r" 'r["result"].get("thumbnail")')" "share.get's thumbnail"
nb_as bob nb_agent fetch --thumbnail "$tok" thumbs/ >/dev/null || nb_fail "fetch --thumbnail"
nb_assert_eq "$thumb" "$(sha256sum <thumbs/pic.jpg.thumb.jpg | cut -d' ' -f1)" "the thumbnail's bytes"
nb_assert_eq "171 256 jpegload" \
  "$(vipsheader -f width thumbs/pic.jpg.thumb.jpg) $(vipsheader -f height thumbs/pic.jpg.thumb.jpg) $(vipsheader -f vips-loader thumbs/pic.jpg.thumb.jpg)" \
  "the thumbnail's size and format"
nb_assert_eq 404 "$(jget "$(nb_as carol call blob.get "{\"blob\": \"$thumb\", \"offset\": 0, \"length\": 1000}")" 'r["code"]')" \
  "carol's blob.get of the thumbnail"
nb_assert_eq 0 "$(jget "$(nb_as bob call blob.get "{\"blob\": \"$thumb\", \"offset\": 0, \"length\": 1000}")" 'r["code"]')" \
  "bob's blob.get of the thumbnail"
call share.revoke "{\"token\": \"$tok\"}" >/dev/null
nb_assert_eq 404 "$(jget "$(nb_as bob call blob.get "{\"blob\": \"$thumb\", \"offset\": 0, \"length\": 1000}")" 'r["code"]')" \
  "bob's blob.get of the thumbnail after the revoke"
# The janitor's sweep releases the share's reference on it.
nb_wait_for "[[ \$(nb_redis hget nb:blob:$thumb refs) == 1 ]]" 30 ||
  nb_fail "the revoked share still holds its thumbnail"
# Not a picture: no thumbnail, and fetch --thumbnail says so.
echo "a few words" >note.txt
s=$(nb_agent share note.txt) || nb_fail "share note.txt"
nb_assert_eq "text/plain None" "$(jget "$s" 'r["mime"] + " " + str(r.get("thumbnail"))')" \
  "a text's thumbnail"
rc=0
nb_as bob nb_agent fetch --thumbnail "$(jget "$s" 'r["token"]')" thumbs/ >/dev/null 2>&1 || rc=$?
nb_assert_eq 1 "$rc" "fetch --thumbnail of a text"


# ---- the library's typed share calls, apart from the CLI (nb-blob) --------
NBB=$NIMBUS_BIN/nb-blob
out=$("$NBB" share "$blob" lib.bin bob) || nb_fail "nimbus_share_create: $out"
ltok=$(cut -d' ' -f2 <<<"$out")
nb_assert_eq "ok $ltok -" "$out" "nimbus_share_create"
nb_assert_eq "error ECONFLICT 409" "$("$NBB" share "$blob" lib.bin || true)" \
  "nimbus_share_create of a name taken"
nb_assert_eq "ok lib.bin $blob 700000 - -1" "$(nb_as bob "$NBB" get "$ltok")" \
  "nimbus_share_get by bob"
nb_assert_eq "ok lib.bin $blob 700000 - 1" "$("$NBB" get "$ltok")" \
  "nimbus_share_get by the owner (bob's download counted)"
nb_assert_eq "error ENOTFOUND 404" "$(nb_as carol "$NBB" get "$ltok" || true)" \
  "nimbus_share_get by carol"
[[ $("$NBB" list) == *" $ltok"* ]] || nb_fail "nimbus_share_list: $("$NBB" list)"
nb_assert_eq "error ENOTFOUND 404" "$(nb_as bob "$NBB" revoke "$ltok" || true)" \
  "nimbus_share_revoke by bob"
nb_assert_eq ok "$("$NBB" revoke "$ltok")" "nimbus_share_revoke"
nb_assert_eq "error ENOTFOUND 404" "$(nb_as bob "$NBB" get "$ltok" || true)" \
  "nimbus_share_get after the revoke"

# ---- bad inputs ------------------------------------------------------------
long=$(printf 'n%.0s' {1..256})
# A blob of bob's own, which alice may not read.
head -c 1000 /dev/urandom >bobs.bin
bobs=$(jget "$(nb_as bob nb_agent share bobs.bin --name b)" 'r["blob"]')
while IFS='|' read -r want args; do
  r=$(call share.create "$args")
  got="$(code "$r")"
  [[ $got == "$want" ]] || nb_fail "share.create $args: expected $want, got $r"
done <<EOF
400|{"name": "a/b", "blob": "$blob"}
400|{"name": "", "blob": "$blob"}
400|{"name": "$long", "blob": "$blob"}
400|{"name": "tab\there", "blob": "$blob"}
400|{"name": "x", "blob": "nothex"}
400|{"name": "x", "blob": "$blob", "to": ["no/such id"]}
400|{"name": "x", "blob": "$blob", "to": []}
400|{"name": "x", "blob": "$blob", "expires_in": 0}
400|{"name": "x", "blob": "$blob", "expires_in": 600001}
400|{"name": "x", "blob": "$blob", "max_downloads": 0}
400|{"name": "x", "blob": "$blob", "mime": "not a type"}
409|{"name": "two", "blob": "$blob"}
404|{"name": "x", "blob": "$bobs"}
404|{"name": "x", "blob": "$(printf 'f%.0s' {1..64})"}
EOF
r1=$(call share.create "{\"name\": \"x\", \"blob\": \"$bobs\"}")
r2=$(call share.create "{\"name\": \"x\", \"blob\": \"$(printf 'f%.0s' {1..64})\"}")
same='str(r["code"]) + " " + __import__("re").sub("[0-9a-f]{64}", "X", r["error"])'
nb_assert_eq "404 there is no blob X that this terminal may read" \
  "$(jget "$r1" "$same")" "not readable"
nb_assert_eq "$(jget "$r1" "$same")" "$(jget "$r2" "$same")" \
  "not readable and absent answer alike"
r=$(call share.get '{"owner": "alice"}')
nb_assert_eq 400 "$(code "$r")" "share.get without name"
r=$(call share.get "{\"token\": \"$tok2\", \"owner\": \"alice\", \"name\": \"two\"}")
nb_assert_eq 400 "$(code "$r")" "share.get with both"

# replace: the name now gives the new share; the old token is gone.
r=$(call share.create "{\"name\": \"two\", \"blob\": \"$blob\", \"replace\": true}")
tok5=$(jget "$r" 'r["result"]["token"]')
r=$(nb_as bob call share.get '{"owner": "alice", "name": "two"}')
nb_assert_eq "$tok5" "$(jget "$r" 'r["result"]["token"]')" "replaced"
r=$(nb_as bob call share.get "{\"token\": \"$tok2\"}")
nb_assert_eq 404 "$(code "$r")" "the replaced share"

# ---- the same task id twice makes one share --------------------------------
id=share-once-0123456789abcdef
a1=$(call share.create "{\"name\": \"once\", \"blob\": \"$blob\"}" --id "$id")
a2=$(call share.create "{\"name\": \"once\", \"blob\": \"$blob\"}" --id "$id")
nb_assert_eq 0 "$(code "$a2")" "the same id again"
nb_assert_eq "$(jget "$a1" 'r["result"]["token"]')" "$(jget "$a2" 'r["result"]["token"]')" "one token"
r=$(call share.list '{}')
nb_assert_eq 1 "$(jget "$r" 'sum(s["name"] == "once" for s in r["result"]["shares"])')" "one share"
r=$(call share.create "{\"name\": \"once\", \"blob\": \"$blob\"}")
nb_assert_eq 409 "$(code "$r")" "a new id meets the name"

for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died"
done
# Every notice went out from its commit: none was left to the outbox's
# drain (which would have sent it a second time).
! grep -h "WK-OUTBOX" "$NB_DIR"/worker-*/log || nb_fail "notices left in the outbox"
nb_assert_eq 0 "$(nb_redis zcard nb:outbox)" "the outbox"
nb_log "ok"
