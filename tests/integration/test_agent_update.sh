# Loading the agent, the terminal's side (README, Loading the agent), on
# one stack of one worker with a short reoffer_after: real packages made
# by scripts/package-agent from this build tree (this version, and the
# next patch version: the same binary with test-agent-next's library),
# published with nimbusctl; `nimbus-agent update` pulls, checks and
# installs into a temporary install directory and the installed binary
# runs (`version`); a wrong key, a tampered signature, a tampered package,
# a size that is not the blob's and an unsafe archive are each refused
# with their own exit status and message, nothing installed; a downgrade
# only with --allow-downgrade; --rollback; `listen --refuse` answers an
# offer, which comes again after reoffer_after, and `listen --accept`
# installs it; agent.answer for an unknown offer is ok.
source "$(dirname "$0")/lib.sh"
REOFFER=1000
NIMBUS_WORKER_FLAGS="--reoffer-after-ms $REOFFER --renew-ms 300" nb_stack_up 1
nb_terminals bob alice
# as T CMD...: CMD as terminal T (alice is the default).
as() { nb_as "$@"; }
ctl() { NIMBUS_DATA_DIR=$NB_DIR/blobs "$NIMBUS_BIN/nimbusctl" "$@"; }
# rc CMD...: CMD's exit status, its stdout in $out and stderr in $err.
rc() {
  local s=0
  out=$("$@" 2>"$NB_DIR/rc.err") || s=$?
  err=$(cat "$NB_DIR/rc.err")
  echo "$*: exit $s: $err" >>"$NB_DIR/calls.log"
  return $s
}
expect() { # expect STATUS WHAT CMD...: CMD exits STATUS
  local want=$1 what=$2 s=0
  shift 2
  rc "$@" || s=$?
  ((s == want)) || nb_fail "$what: exit $s, not $want: $out $err"
}
agent=$NIMBUS_BIN/nimbus-agent

cd "$NB_DIR"
ctl keygen keys >/dev/null || nb_fail "keygen"
ctl keygen other >/dev/null || nb_fail "keygen other"
read -r _ V0 P < <("$NIMBUS_SOURCE_DIR/scripts/package-agent" \
  --build-dir "$NIMBUS_BUILD_DIR" pkg0.tar.gz) || nb_fail "package-agent"
read -r _ V1 P1 < <("$NIMBUS_SOURCE_DIR/scripts/package-agent" \
  --build-dir "$NIMBUS_BUILD_DIR" \
  --lib-dir "$NIMBUS_BUILD_DIR/test-agent-next/lib" pkg1.tar.gz) ||
  nb_fail "package-agent (next)"
nb_assert_eq "$($agent version --json)" "{\"version\":\"$V0\",\"platform\":\"$P\"}" \
  "the build's version"
[[ $P1 == "$P" && $V1 != "$V0" ]] || nb_fail "packages $V0 $P, $V1 $P1"
tar -tzf pkg1.tar.gz | sort | tr '\n' ' ' | grep -q "^bin/ bin/nimbus-agent lib/ lib/libnimbus-agent.so" ||
  nb_fail "package layout: $(tar -tzf pkg1.tar.gz)"
for v in "$V0:pkg0" "$V1:pkg1"; do
  ctl agent publish "${v#*:}.tar.gz" --version "${v%%:*}" --platform "$P" \
    --key keys/nimbus.key --notes "Release ${v%%:*}" >/dev/null ||
    nb_fail "publish $v"
done
sha1=$(sha256sum pkg1.tar.gz | cut -d' ' -f1)
size1=$(stat -c %s pkg1.tar.gz)
sha0=$(sha256sum pkg0.tar.gz | cut -d' ' -f1)
size0=$(stat -c %s pkg0.tar.gz)
rec=$(nb_redis --scan --pattern "nb:agent:pkg:$P:$V1")
[[ -n $rec ]] || nb_fail "no record of $V1"
# The record keeps the signature's 64 bytes; agent.get gives them as hex.
sig1=$(jget "$(as alice call agent.get "{\"platform\": \"$P\"}")" 'r["result"]["signature"]')
setsig() { xxd -r -p <<<"$1" | nb_redis -x hset "$rec" sig >/dev/null; }
D=$NB_DIR/install
nothing_installed() { # WHAT: D has no current and no versions/$V1
  [[ ! -e $D/current && ! -e $D/versions/$V1 ]] ||
    nb_fail "$1: something was installed: $(ls -la "$D" "$D/versions" 2>&1)"
}

# ---- --check -----------------------------------------------------------------
expect 0 "update --check" as alice "$agent" update --check
nb_assert_eq "True $V1 $V0 Release $V1" \
  "$(jget "$out" '" ".join(str(r[k]) for k in ("available","version","running","notes"))')" \
  "update --check"

# ---- refused packages: nothing installed -------------------------------------
expect 12 "wrong key" as alice "$agent" update --install-dir "$D" --key other/nimbus.pub
grep -q "signature check failed" <<<"$err" || nb_fail "wrong key says: $err"
nothing_installed "wrong key"
# The signature, one digit changed.
bad=$(python3 -c 'import sys; s=sys.argv[1]; print(s[:10] + ("0" if s[10] != "0" else "1") + s[11:])' "$sig1")
setsig "$bad"
expect 12 "tampered signature" as alice "$agent" update --install-dir "$D" --key keys/nimbus.pub
grep -q "signature check failed" <<<"$err" || nb_fail "tampered signature says: $err"
nothing_installed "tampered signature"
# The package: the record names other bytes (the other package's, which
# every terminal may read), with their size, under the old signature.
setsig "$sig1"
nb_redis hset "$rec" blob "$sha0" size "$size0" >/dev/null
expect 12 "tampered package" as alice "$agent" update --install-dir "$D" --key keys/nimbus.pub
grep -q "signature check failed" <<<"$err" || nb_fail "tampered package says: $err"
nothing_installed "tampered package"
# A size the blob does not have, signed as such (with the operator's key,
# through openssl: a mistake, not an attack): refused once the cloud says
# the blob's size, before its bytes are fetched.
sign() { # sign VERSION SIZE SHA: the hex signature of the statement
  { printf '302e020100300506032b657004220420'; head -c 64 keys/nimbus.key; } |
    xxd -r -p >sec.der
  printf 'nimbus-agent\n%s\n%s\n%s\n%s' "$P" "$1" "$2" "$3" >stmt
  openssl pkeyutl -sign -inkey sec.der -keyform DER -rawin -in stmt | xxd -p | tr -d '\n'
}
nb_redis hset "$rec" blob "$sha1" size $((size1 + 1)) >/dev/null
setsig "$(sign "$V1" $((size1 + 1)) "$sha1")"
expect 10 "size" as alice "$agent" update --install-dir "$D" --key keys/nimbus.pub
grep -q "size check failed" <<<"$err" || nb_fail "size says: $err"
nothing_installed "size"
[[ -z $(ls -A "$D/.incoming" 2>/dev/null) ]] || nb_fail "a download was left: $(ls -A "$D/.incoming")"
nb_redis hset "$rec" size "$size1" >/dev/null
setsig "$sig1"

# ---- pull and install ----------------------------------------------------------
# What an interrupted download left (its first 300000 bytes) is resumed.
head -c 300000 pkg1.tar.gz >"$D/.incoming/.$sha1.pkg.part"
expect 0 "update" as alice "$agent" update --install-dir "$D" --key keys/nimbus.pub
received=$(jget "$out" 'r["received"]')
((received > 0 && received <= size1 - 262144)) ||
  nb_fail "received $received of $size1 bytes, resuming 300000"
[[ -z $(ls -A "$D/.incoming") ]] || nb_fail "the download stayed: $(ls -A "$D/.incoming")"
nb_assert_eq "$V1  True False" \
  "$(jget "$out" '" ".join(str(r[k]) for k in ("installed","previous","reported","already"))')" \
  "update's result"
nb_assert_eq "versions/$V1" "$(readlink "$D/current")" "current"
nb_assert_eq "{\"version\":\"$V1\",\"platform\":\"$P\",\"install_dir\":\"$(realpath "$D")\",\"current\":\"$V1\",\"previous\":\"\"}" \
  "$("$D/current/bin/nimbus-agent" version)" "the installed agent's version"
cmp "$D/versions/$V1/lib/$(ls "$D/versions/$V1/lib")" \
  "$NIMBUS_BUILD_DIR/test-agent-next/lib/$(ls "$D/versions/$V1/lib")" ||
  nb_fail "the installed library is not the packed one"
nb_assert_eq "$V1" "$(ctl agent status alice | awk -F'\t' 'NR == 2 {print $3}')" \
  "what alice reported"
# The installed agent finds its install directory, and the key beside it.
cp keys/nimbus.pub "$D/nimbus.pub"
expect 0 "update again" as alice "$D/current/bin/nimbus-agent" update
nb_assert_eq "True $V1" "$(jget "$out" 'str(r["up_to_date"]) + " " + r["running"]')" \
  "up to date"

# ---- offers: refused, offered again, accepted and installed ---------------------
D2=$NB_DIR/install-bob
mkdir -p "$D2"
cp keys/nimbus.pub "$D2/nimbus.pub"
as bob "$agent" ping >/dev/null # bob's persistent session subscribes
out=$(ctl agent offer bob --platform "$P" --text "Faster") || nb_fail "offer: $out"
offer=$(sed -n 's/^offered bob: .* (offer \(.*\))$/\1/p' <<<"$out")
[[ -n $offer ]] || nb_fail "offer id: $out"
t0=$(date +%s%N)
as bob timeout 30 "$agent" listen --refuse --count 2 --install-dir "$D2" >refused.out ||
  nb_fail "listen --refuse: $(cat refused.out)"
took=$((($(date +%s%N) - t0) / 1000000))
nb_assert_eq "agent.offer $offer $V1 Faster|refused|agent.offer $offer $V1 Faster|refused|" \
  "$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(" ".join(r[k] for k in ("kind", "offer", "version", "text")) if "kind" in r
          else r["answer"], end="|")' refused.out)" "listen --refuse"
((took >= REOFFER)) || nb_fail "offered again after $took ms, before $REOFFER"
nb_assert_eq refused "$(ctl agent status bob | awk -F'\t' 'NR == 2 {print $6}')" "bob's state"
[[ ! -e $D2/current ]] || nb_fail "a refused offer installed something"
as bob timeout 30 "$agent" listen --accept --count 1 --install-dir "$D2" >accepted.out ||
  nb_fail "listen --accept: $(cat accepted.out)"
nb_assert_eq "accepted $V1 True" \
  "$(tail -1 accepted.out | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["answer"], r["installed"], r["reported"])')" \
  "listen --accept"
nb_assert_eq "$V1" "$("$D2/current/bin/nimbus-agent" version | jget "$(cat)" 'r["version"]')" \
  "bob's installed agent"
nb_assert_eq "accepted $V1" "$(ctl agent status bob | awk -F'\t' 'NR == 2 {print $6, $3}')" \
  "bob's state after accepting"
r=$(as bob call agent.answer '{"offer": "no-such-offer-0123456789", "accept": true}')
nb_assert_eq "0 {}" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"])')" "an unknown offer"

# ---- downgrade, rollback -----------------------------------------------------------
ctl agent withdraw "$P" "$V1" >/dev/null || nb_fail "withdraw $V1"
expect 0 "update when the newest is older" as alice "$D/current/bin/nimbus-agent" update
nb_assert_eq "True" "$(jget "$out" 'r["up_to_date"]')" "no downgrade unasked"
nb_assert_eq "versions/$V1" "$(readlink "$D/current")" "current after no downgrade"
expect 0 "update --allow-downgrade" as alice "$D/current/bin/nimbus-agent" update --allow-downgrade
nb_assert_eq "$V0 $V1" "$(jget "$out" 'r["installed"] + " " + r["previous"]')" "downgrade"
nb_assert_eq "$V0" "$("$D/current/bin/nimbus-agent" version | jget "$(cat)" 'r["version"]')" \
  "after the downgrade"
expect 0 "rollback" as alice "$D/current/bin/nimbus-agent" update --rollback
nb_assert_eq "$V1 $V0 True" \
  "$(jget "$out" '" ".join(str(r[k]) for k in ("current","previous","reported"))')" "rollback"
nb_assert_eq "$V1" "$("$D/current/bin/nimbus-agent" version | jget "$(cat)" 'r["version"]')" \
  "after the rollback"
nb_assert_eq "$V1" "$(ctl agent status alice | awk -F'\t' 'NR == 2 {print $3}')" \
  "what alice reported after the rollback"
# An agent that runs $V0 while $V1 is installed (it installed it and runs
# on) is never taken back below $V1: a package between the two (signed,
# say an old prerelease) is not newer than what is installed.
ctl agent publish pkg0.tar.gz --version "$V1-rc.1" --platform "$P" \
  --key keys/nimbus.key >/dev/null || nb_fail "publish $V1-rc.1"
expect 0 "update below the installed" as alice "$agent" update --install-dir "$D" \
  --key keys/nimbus.pub
nb_assert_eq "True" "$(jget "$out" 'r["up_to_date"]')" "up to date against the installed $V1"
nb_assert_eq "versions/$V1" "$(readlink "$D/current")" "current after the prerelease"
ctl agent withdraw "$P" "$V1-rc.1" >/dev/null || nb_fail "withdraw $V1-rc.1"

# ---- an unsafe archive, signed: refused, nothing outside touched -------------------
python3 - <<'PY'
import io, tarfile
with tarfile.open("evil.tar.gz", "w:gz") as t:
    for name, data in (("bin/nimbus-agent", b"#!/bin/sh\n"), ("../evil", b"x")):
        i = tarfile.TarInfo(name)
        i.size, i.mode = len(data), 0o755
        t.addfile(i, io.BytesIO(data))
PY
ctl agent publish evil.tar.gz --version 9.9.9 --platform "$P" --key keys/nimbus.key >/dev/null ||
  nb_fail "publish the unsafe package"
expect 13 "unsafe archive" as alice "$D/current/bin/nimbus-agent" update
grep -q 'archive check failed: the entry ../evil has a ".." component' <<<"$err" ||
  nb_fail "unsafe archive says: $err"
[[ ! -e $D/versions/9.9.9 && ! -e $D/evil && ! -e $D/versions/evil ]] ||
  nb_fail "the unsafe archive left files: $(ls -la "$D" "$D/versions")"
nb_assert_eq "versions/$V1" "$(readlink "$D/current")" "current after the unsafe archive"
nb_assert_eq "$V0 $V1" "$(ls "$D/versions" | tr '\n' ' ' | sed 's/ $//')" "versions kept"
nb_log "ok"
