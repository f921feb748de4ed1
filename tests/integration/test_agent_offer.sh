# Loading the agent, the cloud's side (PROTOCOL.md, The agent itself;
# schemas/SPEC.md, The agent itself), on one stack of two workers with a
# short reoffer_after: nimbusctl publishes real packages (tarballs of the
# built nimbus-agent) signed with a key of nimbusctl keygen, checked here
# with openssl; agent.get answers the newest by semantic version (1.10.0
# over 1.9.3 and over a later-published 1.2.0), up_to_date, 404; another
# terminal downloads the package and nothing else became readable; an
# existing version is refused, a withdrawn one unreadable; offers reach a
# terminal online and one offline (its persistent session), a refusal is
# offered again exactly once with two workers ticking, an acceptance
# answers as agent.get and ends the offers, an unknown offer is ok and
# changes nothing, and a terminal that reports the newest version is not
# offered it (at nimbusctl's and at the worker's check).
source "$(dirname "$0")/lib.sh"
REOFFER=1500
NIMBUS_WORKER_FLAGS="--reoffer-after-ms $REOFFER --renew-ms 300 --blob-ttl-ms 4000" \
  nb_stack_up 2

nb_terminals erin dave carol bob alice
# as T CMD...: CMD as terminal T (alice is the default).
as() { nb_as "$@"; }
code() { jget "$1" 'r["code"]'; }
ctl() { NIMBUS_DATA_DIR=$NB_DIR/blobs "$NIMBUS_BIN/nimbusctl" "$@"; }
P=linux-x86_64

# dave's and erin's persistent sessions subscribe, then they go offline.
for t in dave erin; do as "$t" nb_agent ping >/dev/null; done

cd "$NB_DIR"
ctl keygen keys >/dev/null || nb_fail "keygen"
# Real packages: the built agent, each with a VERSION file of its own.
mkpkg() {
  mkdir -p "pkg-$1"
  cp "$NIMBUS_BIN/nimbus-agent" "pkg-$1/"
  echo "$1" >"pkg-$1/VERSION"
  tar -cf "agent-$1.tar" -C "pkg-$1" nimbus-agent VERSION
}
for v in 1.9.3 1.10.0-rc.1 1.10.0 1.2.0; do mkpkg "$v"; done
for v in 1.9.3 1.10.0-rc.1 1.10.0 1.2.0; do
  out=$(ctl agent publish "agent-$v.tar" --version "$v" --platform $P \
    --key keys/nimbus.key --notes "Release $v") || nb_fail "publish $v: $out"
done
nb_assert_eq "1.2.0 1.9.3 1.10.0-rc.1 1.10.0" \
  "$(ctl agent list --platform $P | cut -f2 | tr '\n' ' ' | sed 's/ $//')" \
  "agent list, in version order"

# ---- agent.get: the newest by precedence, signed -------------------------
r=$(call agent.get "{\"platform\": \"$P\"}")
nb_assert_eq "0 1.10.0" "$(jget "$r" 'str(r["code"]) + " " + r["result"]["version"]')" \
  "agent.get: newest"
sha=$(sha256sum agent-1.10.0.tar | cut -d' ' -f1)
size=$(stat -c %s agent-1.10.0.tar)
nb_assert_eq "$sha $sha $size Release 1.10.0 $P" \
  "$(jget "$r" '" ".join(str(r["result"][k]) for k in ("blob","sha256","size","notes","platform"))')" \
  "agent.get's fields"
# The signature, checked by another implementation than ours: openssl,
# with nimbus.pub as a DER SubjectPublicKeyInfo.
jget "$r" 'r["result"]["signature"]' | xxd -r -p >sig.bin
{ printf '302a300506032b6570032100'; cat keys/nimbus.pub; } | xxd -r -p >pub.der
printf 'nimbus-agent\n%s\n%s\n%s\n%s' "$P" 1.10.0 "$size" "$sha" >stmt
openssl pkeyutl -verify -pubin -inkey pub.der -keyform DER -rawin -in stmt \
  -sigfile sig.bin >/dev/null || nb_fail "the signature does not verify"
printf 'nimbus-agent\n%s\n%s\n%s\n%s' "$P" 1.9.3 "$size" "$sha" >stmt.other
! openssl pkeyutl -verify -pubin -inkey pub.der -keyform DER -rawin \
  -in stmt.other -sigfile sig.bin >/dev/null 2>&1 ||
  nb_fail "the signature verifies for another version"
r=$(call agent.get "{\"platform\": \"$P\", \"have\": \"1.9.3\"}")
nb_assert_eq 1.10.0 "$(jget "$r" 'r["result"]["version"]')" "have 1.9.3"
r=$(call agent.get "{\"platform\": \"$P\", \"have\": \"1.10.0\"}")
nb_assert_eq "{'up_to_date': True}" "$(jget "$r" 'r["result"]')" "have = newest"
r=$(call agent.get "{\"platform\": \"$P\", \"have\": \"2.0.0-alpha\"}")
nb_assert_eq "{'up_to_date': True}" "$(jget "$r" 'r["result"]')" "have newer"
r=$(call agent.get '{"platform": "plan9-mips"}')
nb_assert_eq '404 there is no agent package for platform "plan9-mips"' \
  "$(jget "$r" 'str(r["code"]) + " " + r["error"]')" "unknown platform"
for bad in '{"platform": "a/b"}' "{\"platform\": \"$P\", \"have\": \"v1.2\"}" '{}'; do
  r=$(call agent.get "$bad")
  nb_assert_eq 400 "$(code "$r")" "agent.get $bad"
done

# ---- the package is readable by every terminal, nothing else ---------------
as bob "$NIMBUS_BIN/nb-blob" download "$sha" bob.tar >/dev/null ||
  nb_fail "bob cannot download the package"
cmp agent-1.10.0.tar bob.tar || nb_fail "the package bob got differs"
tar -xOf bob.tar VERSION | grep -qx 1.10.0 || nb_fail "not a real package"
# alice's own blob stays hers; the blob of 1.2.0 goes with its withdrawal.
head -c 300000 /dev/urandom >private.bin
up=$(as alice "$NIMBUS_BIN/nb-blob" upload private.bin) || nb_fail "upload: $up"
mine=$(cut -d' ' -f2 <<<"$up")
r=$(as bob call blob.get "{\"blob\": \"$mine\", \"offset\": 0, \"length\": 16}")
nb_assert_eq 404 "$(code "$r")" "bob reads alice's private blob"
old=$(sha256sum agent-1.2.0.tar | cut -d' ' -f1)
r=$(as carol call blob.get "{\"blob\": \"$old\", \"offset\": 0, \"length\": 16}")
nb_assert_eq 0 "$(code "$r")" "carol reads the 1.2.0 package"
nb_assert_eq 1 "$(nb_redis hget "nb:blob:$sha" refs)" "refs of a package's blob"

# ---- an existing version is refused; withdraw -----------------------------
for v in 1.10.0 1.10.0+build.7; do
  if out=$(ctl agent publish agent-1.2.0.tar --version "$v" --platform $P \
    --key keys/nimbus.key 2>&1); then
    nb_fail "publishing $v again succeeded: $out"
  fi
  grep -q "platform $P already has version 1.10.0" <<<"$out" ||
    nb_fail "publishing $v again: $out"
done
r=$(call agent.get "{\"platform\": \"$P\"}")
nb_assert_eq "1.10.0 $sha" "$(jget "$r" 'r["result"]["version"] + " " + r["result"]["blob"]')" \
  "unchanged by the refusals"
ctl agent withdraw $P 1.2.0 >/dev/null || nb_fail "withdraw"
! ctl agent withdraw $P 1.2.0 2>/dev/null || nb_fail "withdraw twice succeeded"
nb_assert_eq "1.9.3 1.10.0-rc.1 1.10.0" \
  "$(ctl agent list | cut -f2 | tr '\n' ' ' | sed 's/ $//')" "after withdrawing"
r=$(as carol call blob.get "{\"blob\": \"$old\", \"offset\": 0, \"length\": 16}")
nb_assert_eq 404 "$(code "$r")" "the withdrawn package's blob"
nb_assert_eq 0 "$(nb_redis hget "nb:blob:$old" refs)" "refs after withdrawing"
nb_wait_for "[[ \$(nb_redis exists nb:blob:$old) == 0 ]]" 30 ||
  nb_fail "the withdrawn package's blob was not collected"
# (agent-1.2.0.tar's bytes went with it: the refused publishes above
# stored them as a blob nothing refers to.)

# ---- offers ----------------------------------------------------------------
# carol listens on a second device of hers for the whole offer part, so
# every notice is counted, while her calls use her first one.
LS=$NB_DIR/carol-listener
NIMBUS_TERMINAL=carol NIMBUS_PASSWORD=${NB_PASSWORD[carol]} NIMBUS_STATE_DIR=$LS \
  nb_agent ping >/dev/null
# The binary itself, so that $! is the agent (a shell function in the
# background is a subshell, and killing it left the agent running).
NIMBUS_TERMINAL=carol NIMBUS_PASSWORD=${NB_PASSWORD[carol]} NIMBUS_STATE_DIR=$LS \
  "$NIMBUS_BIN/nimbus-agent" listen >carol.notices 2>carol.listen.err &
LPID=$!
nb_on_exit "kill $LPID 2>/dev/null || true"
# offers ID: the agent.offer notices of offer ID carol's listener got.
offers() {
  python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    n += r.get("kind") == "agent.offer" and r.get("offer") == sys.argv[2]
print(n)' carol.notices "$1"
}

out=$(ctl agent offer carol dave --platform $P --text "A faster agent") ||
  nb_fail "offer: $out"
oc=$(sed -n 's/^offered carol: .* (offer \(.*\))$/\1/p' <<<"$out")
od=$(sed -n 's/^offered dave: .* (offer \(.*\))$/\1/p' <<<"$out")
[[ $oc =~ ^[A-Za-z0-9_-]{22}$ && $od =~ ^[A-Za-z0-9_-]{22}$ ]] ||
  nb_fail "offer ids: $out"
nb_wait_for "[[ \$(offers $oc) == 1 ]]" 20 || nb_fail "carol got no offer"
n=$(grep -m1 "\"$oc\"" carol.notices)
nb_assert_eq "agent.offer $oc $P 1.10.0 $size A faster agent" \
  "$(jget "$n" '" ".join(str(r[k]) for k in ("kind","offer","platform","version","size","text"))')" \
  "carol's notice"
# dave was offline: his persistent session holds it.
n=$(as dave timeout 30 "$NIMBUS_BIN/nimbus-agent" listen --count 1) ||
  nb_fail "dave got no notice"
nb_assert_eq "agent.offer $od 1.10.0" \
  "$(jget "$n" '" ".join(str(r[k]) for k in ("kind","offer","version"))')" "dave's notice"
nb_assert_eq offered "$(ctl agent status carol | awk -F'\t' 'NR == 2 {print $6}')" \
  "carol's state once sent"

# An unknown offer, and carol's offer answered by bob: ok, nothing changes.
snap() {
  for k in $(nb_redis --scan --pattern 'nb:agent:*' | sort); do
    echo "$k $(nb_redis type "$k") $(nb_redis dump "$k" | od -An -tx1 | tr -d ' \n')"
  done
}
s1=$(snap)
r=$(call agent.answer '{"offer": "no-such-offer-0123456789", "accept": true}')
nb_assert_eq "0 {}" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"])')" "unknown offer"
r=$(as bob call agent.answer "{\"offer\": \"$oc\", \"accept\": false}")
nb_assert_eq "0 {}" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"])')" \
  "another terminal's offer"
nb_assert_eq "$s1" "$(snap)" "the agent records after those answers"

# carol refuses: offered again once after reoffer_after, by one of the two
# workers; an offer not answered is not sent again.
t0=$(date +%s%N)
r=$(as carol call agent.answer "{\"offer\": \"$oc\", \"accept\": false, \"platform\": \"$P\", \"have\": \"1.9.3\"}")
nb_assert_eq "0 {}" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"])')" "refusal"
st=$(ctl agent status carol)
nb_assert_eq "refused 1.9.3" "$(awk -F'\t' 'NR == 2 {print $6, $3}' <<<"$st")" \
  "carol's status after refusing"
nb_wait_for "[[ \$(offers $oc) == 2 ]]" 30 || nb_fail "carol was not offered again"
took=$((($(date +%s%N) - t0) / 1000000))
((took >= REOFFER)) || nb_fail "offered again after $took ms, before $REOFFER"
# No third notice may follow within two more intervals; the burst below
# runs meanwhile, and the count is taken after it (quiet_since waits out
# what is left of the time).
t_refused=$(date +%s%N)
quiet_since() { # T0: sleeps until 2 intervals and a second have passed since T0
  local left=$(((2 * REOFFER + 1000) - ($(date +%s%N) - $1) / 1000000))
  ((left <= 0)) || sleep "$(awk -v ms="$left" 'BEGIN { printf "%.3f", ms / 1000 }')"
}

# The same under contention: 150 offers due at once (more than a tick
# takes), both workers ticking every 300 ms; the workers' logs name each
# publish, so a notice sent twice would show.
ctl agent offer $(seq -f 'burst-%03g' 1 150) --platform $P >burst.out ||
  nb_fail "offer the burst: $(tail -3 burst.out)"
sends() { cat "$NB_DIR"/worker-*/log | grep -c "WK-AGENT-OFFER.* sent to burst-" || true; }
nb_wait_for "(( \$(sends) >= 150 ))" 30 || nb_fail "the burst was sent $(sends) times"
sleep 1
nb_assert_eq 150 "$(sends)" "notices of 150 offers"
nb_assert_eq 150 "$(cat "$NB_DIR"/worker-*/log | sed -n 's/.*WK-AGENT-OFFER.* sent to \(burst-[0-9]*\):.*/\1/p' | sort -u | wc -l)" \
  "terminals of the burst"
quiet_since "$t_refused"
nb_assert_eq 2 "$(offers "$oc")" "notices of carol's offer (two workers)"
grep -h "WK-AGENT-OFFER.*offer $oc sent" "$NB_DIR"/worker-*/log | wc -l |
  grep -qx 2 || nb_fail "the workers' logs do not say two sends"

# carol accepts: the result is agent.get's, and there are no more offers.
g=$(call agent.get "{\"platform\": \"$P\", \"have\": \"1.9.3\"}")
id=agent-accept-0123456789abcdef
r=$(as carol call agent.answer "{\"offer\": \"$oc\", \"accept\": true, \"have\": \"1.9.3\"}" --id $id)
nb_assert_eq "$(jget "$g" 'sorted(r["result"].items())')" \
  "$(jget "$r" 'sorted(r["result"].items())')" "accept: as agent.get"
r2=$(as carol call agent.answer "{\"offer\": \"$oc\", \"accept\": true, \"have\": \"1.9.3\"}" --id $id)
nb_assert_eq "$(jget "$r" 'r["result"]')" "$(jget "$r2" 'r["result"]')" "the same id replays"
r=$(as carol call agent.answer "{\"offer\": \"$oc\", \"accept\": false}")
nb_assert_eq "0 {}" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"])')" \
  "answering an accepted offer again"
nb_assert_eq accepted "$(ctl agent status carol | awk -F'\t' 'NR == 2 {print $6}')" \
  "carol's state after accepting"
# No notice after the acceptance: counted once bob's and dave's cases
# below have had their time.
t_accepted=$(date +%s%N)

# ---- a terminal that runs the newest version is not offered it -----------
r=$(as bob call agent.report "{\"platform\": \"$P\", \"version\": \"1.10.0\"}")
nb_assert_eq "0 1.10.0" "$(jget "$r" 'str(r["code"]) + " " + r["result"]["version"]')" "report"
out=$(ctl agent offer bob) || nb_fail "offer bob: $out"
nb_assert_eq "skipped bob: it runs 1.10.0 already (the newest is 1.10.0)" "$out" "offer bob"
nb_assert_eq none "$(ctl agent status bob | awk -F'\t' 'NR == 2 {print $6}')" "bob's state"
# dave refuses, then reports the newest before the offer comes due again:
# the worker drops it rather than send it.
r=$(as dave call agent.answer "{\"offer\": \"$od\", \"accept\": false}")
nb_assert_eq 0 "$(code "$r")" "dave refuses"
# What makes each due offer one worker's: of two takes, only the first
# gets it (taken here ahead of its due time, so before any worker's tick;
# given back, due now, once dave has reported).
t1=$("$NIMBUS_BIN/nb-agent-take" 600000) || nb_fail "take: $t1"
t2=$("$NIMBUS_BIN/nb-agent-take" 600000) || nb_fail "take again: $t2"
nb_assert_eq "$od|" "$t1|$t2" "two takes of dave's refused offer"
r=$(as dave call agent.report "{\"platform\": \"$P\", \"version\": \"1.10.0\"}")
nb_assert_eq 0 "$(code "$r")" "dave reports"
nb_redis zadd nb:agent:due XX "$(date +%s%3N)" "$od" >/dev/null
nb_wait_for "[[ \$(ctl agent status dave | awk -F'\t' 'NR == 2 {print \$6}') == dropped ]]" 30 ||
  nb_fail "dave's offer was not dropped: $(ctl agent status dave)"
if n=$(as dave timeout 3 "$NIMBUS_BIN/nimbus-agent" listen --count 1); then
  nb_fail "dave was offered what he runs: $n"
fi

quiet_since "$t_accepted"
nb_assert_eq 2 "$(offers "$oc")" "notices after the acceptance"

# --all: every terminal account, each by its own platform; erin (offline,
# never reported) gets one with --platform.
out=$(ctl agent offer --all --platform $P) || nb_fail "offer --all: $out"
for t in alice carol erin; do
  grep -q "^offered $t: $P 1.10.0" <<<"$out" || nb_fail "offer --all: $t: $out"
done
for t in bob dave; do
  grep -q "^skipped $t: it runs 1.10.0" <<<"$out" || nb_fail "offer --all: $t: $out"
done
n=$(as erin timeout 30 "$NIMBUS_BIN/nimbus-agent" listen --count 1) ||
  nb_fail "erin got no notice"
nb_assert_eq "agent.offer 1.10.0 Nimbus agent 1.10.0 is available" \
  "$(jget "$n" '" ".join(str(r[k]) for k in ("kind","version","text"))')" "erin's notice"

for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died"
done
nb_log "ok"
