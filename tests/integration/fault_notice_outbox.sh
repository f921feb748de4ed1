# A worker that dies between committing a share and publishing its notice
# (NIMBUS_TEST_FAULT=dispatch:committed:share.create kills it with SIGKILL
# exactly there: the share and its notice's outbox entry are in Redis, no
# reply and no notice went out) loses nothing: another worker's
# housekeeping thread publishes the notice from the outbox once it is due
# (outbox_grace_ms after the commit), bob, who was offline, gets it when
# he comes back (his persistent session kept it), and the outbox is empty
# afterwards. The share.create sent again with the same id replays its
# recorded reply: the same token, and no second share.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--lease-ms 2000 --renew-ms 300 --outbox-grace-ms 1000"
export NIMBUS_TEST_FAULT=dispatch:committed:share.create
nb_stack_up 1
unset NIMBUS_TEST_FAULT

nb_terminals bob alice
# bob's session subscribes once, then he goes offline.
nb_as bob nb_agent ping >/dev/null || nb_fail "bob's ping"

cd "$NB_DIR"
head -c 5000 /dev/urandom >note.bin
sha=$(sha256sum note.bin | cut -c1-64)
r=$(call blob.put "{\"upload\": \"u1\", \"offset\": 0, \"size\": 5000, \"sha256\": \"$sha\"}" --data-file note.bin)
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "blob.put: $r"
r=$(call blob.commit '{"upload": "u1"}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "blob.commit: $r"

id=share-outbox-0123456789abcdef
args="{\"name\": \"note.bin\", \"blob\": \"$sha\", \"to\": [\"bob\"]}"
pid1=$(cat "$NB_DIR/worker-1/pid")
r=$(call share.create "$args" --id "$id" --timeout 3000)
nb_wait_for "! nb_alive $pid1" 10 || nb_fail "worker-1 did not die at the fault point"
grep -q "WK-FAULT NIMBUS_TEST_FAULT=dispatch:committed:share.create" "$NB_DIR/worker-1/log" ||
  nb_fail "worker-1 died elsewhere than at the fault point"
# The window: the share is committed, its notice waits in the outbox.
nb_assert_eq 1 "$(nb_redis zcard nb:outbox)" "the outbox after the crash"
nb_assert_eq bob "$(nb_redis hget "nb:outbox:alice.$id.0" to)" "the notice's addressee"

nb_stack worker "$NB_DIR" >/dev/null || nb_fail "cannot start worker-2"
n=$(nb_as bob timeout 30 "$NIMBUS_BIN/nimbus-agent" listen --count 1) ||
  nb_fail "bob got no notice"
nb_wait_for "[[ \$(nb_redis zcard nb:outbox) == 0 ]]" 10 ||
  nb_fail "the outbox was not emptied"
grep -q "WK-OUTBOX published 1 notice" "$NB_DIR/worker-2/log" ||
  nb_fail "worker-2 did not say it published the notice"

nb_wait_for "[[ \$(nb_redis exists nb:claim:alice:$id) == 0 ]]" 10 ||
  nb_fail "the dead worker's claim did not lapse"
r=$(call share.create "$args" --id "$id")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "share.create sent again: $r"
tok=$(jget "$r" 'r["result"]["token"]')
nb_assert_eq "share.new $tok note.bin alice 5000" \
  "$(jget "$n" '" ".join(str(r[k]) for k in ("kind", "token", "name", "owner", "size"))')" \
  "bob's notice"
r=$(call share.list '{}')
nb_assert_eq 1 "$(jget "$r" 'len(r["result"]["shares"])')" "one share"
nb_assert_eq 0 "$(nb_redis zcard nb:outbox)" "the outbox after the replay"
nb_log "ok"
