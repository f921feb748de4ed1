# Offload modules are loaded on demand, and only when they are what the
# operator published: a worker whose module directory lacks a module (here
# the audio module) answers its type with a clean 503 naming the cause, as
# it does for a file that is no module and for a module built for another
# ABI, and keeps serving everything else; with modules_from_storage it
# fetches the module that `nimbusctl module publish` stored, refuses one
# whose signature does not check against its module_key (503, log line),
# and loads and serves one that does.
source "$(dirname "$0")/lib.sh"

MODULE=$NIMBUS_BUILD_DIR/modules/nimbus-audio.so
[[ -f $MODULE ]] || nb_fail "the audio module was not built ($MODULE)"
T=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-mods.XXXXXX")
nb_on_exit "rm -rf '$T'"
mkdir "$T/empty" "$T/odd"
echo "not a shared object" >"$T/odd/nimbus-junk.so"
cp "$NIMBUS_BUILD_DIR/test-modules/nimbus-oldabi.so" "$T/odd/"

NIMBUS_WORKER_FLAGS="--modules audio --modules-dir $T/empty" nb_stack_up 1
nb_terminal alice

# A tenth of a second of silence, inline.
python3 - "$T/in.wav" <<'PY'
import sys, wave
w = wave.open(sys.argv[1], "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(b"\0\0\0\0" * 800); w.close()
PY
ops='{"ops": [{"op": "mono"}], "format": "wav"}'

r=$(call ping '{}')
[[ $(jget "$r" '"process.audio" in r["result"]["types"]') == True ]] ||
  nb_fail "ping does not list process.audio: $r"
r=$(call process.audio "$ops" --data-file "$T/in.wav")
nb_assert_eq 503 "$(jget "$r" 'r["code"]')" "process.audio without the module"
[[ $(jget "$r" 'r["error"]') == *"audio module is not installed"* ]] ||
  nb_fail "the 503 does not name the cause: $r"
# Everything else goes on.
r=$(call blob.has '{"blobs": []}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "blob.has beside a missing module"
nb_alive "$(nb_pids | awk '$1 == "worker-1" {print $2}')" ||
  nb_fail "the worker died"

# Publish the module signed with key A.
ctl() { "$NIMBUS_BIN/nimbusctl" "$@"; }
ctl keygen "$T/a" >/dev/null
ctl keygen "$T/b" >/dev/null
[[ $(stat -c %a "$T/a/nimbus.key") == 600 ]] || nb_fail "the secret key is not 0600"
ctl keygen "$T/a" 2>/dev/null && nb_fail "keygen replaced an existing key"
out=$(ctl module publish "$MODULE" --version 1.0 --key "$T/a/nimbus.key" \
  --data-dir "$NB_DIR/blobs")
sha=$(sha256sum "$MODULE" | cut -c1-64)
[[ $out == *"sha256 $sha"* ]] || nb_fail "publish said: $out"
[[ $(ctl module list) == "audio	1.0	$(stat -c %s "$MODULE")	$sha" ]] ||
  nb_fail "module list: $(ctl module list)"

nb_stack kill-worker "$NB_DIR" 1 >/dev/null
# A worker that trusts key B refuses it.
n=$(NIMBUS_WORKER_FLAGS="--modules audio --modules-dir $T/empty \
  --modules-from-storage --module-key $T/b/nimbus.pub" nb_stack worker "$NB_DIR")
r=$(call process.audio "$ops" --data-file "$T/in.wav")
nb_assert_eq 503 "$(jget "$r" 'r["code"]')" "a module signed by another key"
[[ $(jget "$r" 'r["error"]') == *"valid signature"* ]] ||
  nb_fail "the 503 does not say the signature failed: $r"
grep -q 'WK-MODULE.*valid signature' "$NB_DIR/worker-$n/log" ||
  nb_fail "no log line for the refused module"
ls "$NB_DIR/blobs/modules"/nimbus-audio-* >/dev/null 2>&1 &&
  nb_fail "a refused module was copied out"
nb_stack kill-worker "$NB_DIR" "$n" >/dev/null

# One that trusts key A fetches, checks and serves it.
n=$(NIMBUS_WORKER_FLAGS="--modules audio --modules-dir $T/empty \
  --modules-from-storage --module-key $T/a/nimbus.pub" nb_stack worker "$NB_DIR")
r=$(call process.audio "$ops" --data-file "$T/in.wav")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "a module fetched from storage: $r"
nb_assert_eq "1 800 wav False" "$(jget "$r" '" ".join(str(r["result"][k]) for k in ("channels", "frames", "format", "cached"))')"
grep -q "WK-MODULE.*loaded the audio module ($NB_DIR/blobs/modules/nimbus-audio-$sha.so)" \
  "$NB_DIR/worker-$n/log" || nb_fail "the module was not loaded from its checked copy"
# The same request again: from the result cache.
r=$(call process.audio "$ops" --data-file "$T/in.wav")
nb_assert_eq True "$(jget "$r" 'r["result"]["cached"]')" "a repeated request"
# A copy changed on disk since is not trusted by its name: the next worker
# hashes it, copies the module out again, and loads the bytes it checked.
nb_stack kill-worker "$NB_DIR" "$n" >/dev/null
copy=$NB_DIR/blobs/modules/nimbus-audio-$sha.so
cp "$T/odd/nimbus-junk.so" "$copy"
n=$(NIMBUS_WORKER_FLAGS="--modules audio --modules-dir $T/empty \
  --modules-from-storage --module-key $T/a/nimbus.pub" nb_stack worker "$NB_DIR")
r=$(call process.audio "$ops" --data-file "$T/in.wav")
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "a module whose copy was changed: $r"
nb_assert_eq "$sha" "$(sha256sum "$copy" | cut -c1-64)" "the copy, made again"

# A file that is no module, and a module of another ABI: 503 each, and the
# worker lives on.
nb_stack kill-worker "$NB_DIR" "$n" >/dev/null
n=$(NIMBUS_WORKER_FLAGS="--modules junk,oldabi --modules-dir $T/odd" nb_stack worker "$NB_DIR")
r=$(call process.junk '{"ops": []}' --data-file "$T/in.wav")
nb_assert_eq 503 "$(jget "$r" 'r["code"]')" "a module that is no shared object"
[[ $(jget "$r" 'r["error"]') == *"does not load"* ]] || nb_fail "junk: $r"
r=$(call process.oldabi '{"ops": []}' --data-file "$T/in.wav")
nb_assert_eq 503 "$(jget "$r" 'r["code"]')" "a module of another ABI"
[[ $(jget "$r" 'r["error"]') == *"was built for ABI"* ]] || nb_fail "oldabi: $r"
r=$(call blob.has '{"blobs": []}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "blob.has beside broken modules"
nb_log "modules: 503 without, for junk and another ABI; refused with a foreign signature, served when signed"
