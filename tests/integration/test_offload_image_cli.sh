# nimbus-agent image end to end through the real stack and the image
# module, on pictures made here with ImageMagick and checked with vips:
# a blur really blurs (the picture's spread of values drops), the output
# is the result's blob byte for byte; a second run is answered from the
# cloud's cache and sends nothing; ops chain (resize, grayscale), OUT's
# extension picks the format, --quality changes the size; --blob and
# --from-backup process what the cloud holds without an upload; an output
# over 256 KiB is downloaded (verified), a small one comes inline; --id
# replays the recorded result; each failure class has its exit status
# (400: 2, 404: 5, 413: 6, 415: 7, 422: 8) and leaves OUT alone; Ctrl-C
# during the cloud's work exits 130 and cancels the task in the cloud.
# Skipped (77) only when the build has no image module.
# ctest: once (heavy media, run in the plain build only; the image module's
# code runs under the sanitizers in test_offload_image)
source "$(dirname "$0")/lib.sh"
MODULES=$NIMBUS_BUILD_DIR/modules
if [[ ! -f $MODULES/nimbus-image.so ]]; then
  nb_log "SKIP: no image module at $MODULES/nimbus-image.so (it comes with the image branch)"
  exit 77
fi
export NIMBUS_WORKER_FLAGS="--modules-dir $MODULES"
nb_stack_up 1
nb_terminal alice
cd "$NB_DIR"

# j JSON KEY: one value of the CLI's JSON line.
j() { jget "$1" "r[\"$2\"]"; }
run() { # the CLI's JSON on stdout; fails the test if it fails
  local out
  out=$(nb_agent image "$@" 2>>"$NB_DIR/calls.log") || nb_fail "image $* exited $?: $(tail -n 3 "$NB_DIR/calls.log")"
  echo "$out"
}
expect() { # STATUS TEXT ARGS...: exits STATUS, TEXT on stderr
  local want=$1 text=$2 rc=0
  shift 2
  nb_agent image "$@" >out.txt 2>err.txt || rc=$?
  [[ $rc == "$want" ]] || nb_fail "image $* exited $rc, not $want: $(cat err.txt)"
  grep -qF -- "$text" err.txt || nb_fail "image $*: no \"$text\" in: $(cat err.txt)"
}
spread() { identify -format '%[fx:standard_deviation]' "$1"; }
dims() { echo "$(vipsheader -f width "$1") $(vipsheader -f height "$1") $(vipsheader -f bands "$1")"; }

convert -size 640x480 xc: +noise Random -depth 8 -quality 95 in.jpg

# ---- A blur, then the same again from the cache ---------------------------
r=$(run in.jpg out.jpg --op blur:sigma=4)
nb_assert_eq "640 480 jpeg False True" \
  "$(j "$r" width) $(j "$r" height) $(j "$r" format) $(j "$r" cached) $(j "$r" uploaded)" \
  "first blur"
nb_assert_eq "640 480 3" "$(dims out.jpg)" "the output's header"
nb_assert_eq "$(j "$r" blob)" "$(sha256sum out.jpg | cut -c1-64)" "output bytes"
nb_assert_eq "$(stat -c %s out.jpg)" "$(j "$r" size)" "output size"
awk -v a="$(spread in.jpg)" -v b="$(spread out.jpg)" 'BEGIN { exit !(b < a / 3) }' ||
  nb_fail "not blurred: spread $(spread in.jpg) -> $(spread out.jpg)"
[[ ! -e .out.jpg.part ]] || nb_fail "part file left"
blurred=$(j "$r" blob)

r=$(run in.jpg again.jpg --op blur:sigma=4)
nb_assert_eq "True False 0" "$(j "$r" cached) $(j "$r" uploaded) $(j "$r" bytes_sent)" \
  "second blur: cached, nothing sent"
cmp out.jpg again.jpg || nb_fail "the cached output differs"
grep -q "WK-OFFLOAD process.image alice/$(j "$r" task): answered from the cache" \
  worker-1/log || nb_fail "the worker did not answer from its cache"

# ---- Ops in order; the format by OUT's extension; quality -----------------
r=$(run in.jpg small.webp --op resize:width=320)
nb_assert_eq "320 240 webp" "$(j "$r" width) $(j "$r" height) $(j "$r" format)" \
  "resize to webp"
nb_assert_eq "320 240 3" "$(dims small.webp)" "the webp's header"
# (WebP has no one-band pictures: grayscale shows in a PNG.)
r=$(run in.jpg gray.png --op resize:width=320 --op grayscale)
nb_assert_eq "320 240 1 png" \
  "$(j "$r" width) $(j "$r" height) $(j "$r" bands) $(j "$r" format)" "resize+grayscale"
nb_assert_eq "320 240 1" "$(dims gray.png)" "the png's header"
run in.jpg q30.jpg --op strip --quality 30 >/dev/null
run in.jpg q95.jpg --op strip --quality 95 >/dev/null
(($(stat -c %s q30.jpg) < $(stat -c %s q95.jpg))) ||
  nb_fail "quality 30 is not smaller: $(stat -c %s q30.jpg) vs $(stat -c %s q95.jpg)"

# ---- What the cloud holds: a result, a backed-up photo ---------------------
r=$(run --blob "$blurred" turned.png --op rotate:angle=90)
nb_assert_eq "480 640 png False 0" \
  "$(j "$r" width) $(j "$r" height) $(j "$r" format) $(j "$r" uploaded) $(j "$r" bytes_sent)" \
  "--blob"
nb_assert_eq "480 640 3" "$(dims turned.png)" "turned.png"
mkdir photos
convert -size 200x100 xc: +noise Random -depth 8 photos/cat.png
nb_agent backup photos >/dev/null || nb_fail "backup"
r=$(run --from-backup photos/cat.png thumb.jpg --op thumbnail:size=50)
nb_assert_eq "50 25 jpeg 0 $(sha256sum photos/cat.png | cut -c1-64)" \
  "$(j "$r" width) $(j "$r" height) $(j "$r" format) $(j "$r" bytes_sent) $(j "$r" input)" \
  "--from-backup"

# ---- Inline or downloaded --------------------------------------------------
[[ $(j "$r" inline) == True ]] || nb_fail "a small output did not come inline: $r"
convert -size 1600x1200 xc: +noise Random -depth 8 big.png
r=$(run big.png big-out.png --op strip)
(($(j "$r" size) > 262144)) || nb_fail "the big output is small: $r"
nb_assert_eq "False $(j "$r" blob)" "$(j "$r" inline) $(sha256sum big-out.png | cut -c1-64)" \
  "a downloaded output"
(($(j "$r" bytes_received) >= $(j "$r" size))) || nb_fail "not downloaded: $r"

# ---- A task id replays its recorded result ---------------------------------
id=offload-replay-$RANDOM$RANDOM
r1=$(run in.jpg id1.jpg --op blur:sigma=2 --id "$id")
r2=$(run in.jpg id2.jpg --op blur:sigma=2 --id "$id")
nb_assert_eq "$(j "$r1" blob) $id" "$(j "$r2" blob) $(j "$r2" task)" "replay"
cmp id1.jpg id2.jpg || nb_fail "replayed output differs"

# ---- Every failure class, OUT left alone ------------------------------------
printf 'keep' >keep.jpg
expect 2 'is not an op of process.image' in.jpg keep.jpg --op swirl:angle=3
expect 2 'error 400' in.jpg keep.jpg --op blur:sigma=1000
expect 7 'error 415' in.jpg keep.jpg --op strip --format bmp
head -c 3000 /dev/urandom >noise.bin
expect 7 'error 415' noise.bin keep.jpg --op strip
convert -size 300x300 xc: +noise Random png:whole.png
head -c $(($(stat -c %s whole.png) / 2)) whole.png >half.png
expect 8 'error 422' half.png keep.jpg --op blur:sigma=2
# A PNG whose header claims 50,000 x 50,000 pixels, a few bytes long.
python3 - <<'PY'
import struct, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
open("bomb.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
    chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
PY
expect 6 'error 413' bomb.png keep.jpg --op strip
expect 5 'error 404' --blob "$(printf '%064d' 0)" keep.jpg --op strip
nb_assert_eq keep "$(cat keep.jpg)" "OUT after the failures"
[[ ! -e .keep.jpg.part ]] || nb_fail "a part file after a failure"

# ---- Ctrl-C while the cloud works: 130, and the task cancelled -------------
convert -size 4000x3000 xc: +noise Random -depth 8 -quality 90 large.jpg
id=offload-cancel-$RANDOM$RANDOM
# The binary itself, not the nb_agent function: a function in the
# background is a subshell, which the signal would reach instead.
"$NIMBUS_BIN/nimbus-agent" image large.jpg slow.jpg --op blur:sigma=100 \
  --id "$id" --progress --timeout 60000 >slow.out 2>slow.err &
pid=$!
nb_wait_for "grep -q '\"phase\":\"process\"' slow.err" 60 ||
  nb_fail "no progress from the cloud: $(cat slow.err)"
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
nb_assert_eq 130 "$rc" "exit status after Ctrl-C ($(tail -n 2 slow.err))"
grep -q 'the cloud was asked to cancel' slow.err || nb_fail "no cancel said: $(cat slow.err)"
[[ ! -e slow.jpg ]] || nb_fail "slow.jpg written after a cancel"
not_running() {
  local s
  s=$(call task.status "{\"task\": \"$id\"}")
  [[ $(jget "$s" 'r["result"]["state"]') != running ]]
}
nb_wait_for not_running 10 || nb_fail "the task still runs in the cloud after the cancel"
