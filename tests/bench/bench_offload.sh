#!/usr/bin/env bash
# scripts/bench offload: the mission's claim in numbers (issue 13). A
# 12-megapixel JPEG made on this machine is blurred (sigma 4, JPEG out,
# quality 85 on every side) through a real stack of its own (Mosquitto,
# Redis, one worker with the image module), and, in the same run on the
# same file, locally:
#   - end to end (`nimbus-agent image`: upload, process, download with
#     verification) against `vips gaussblur`: target at most 2.0x its wall
#     time;
#   - the worker's processing alone (its WK-OFFLOAD line, "computed in N
#     ms") against the same: target at most 1.2x;
#   - ImageMagick (`convert -gaussian-blur 0x4`): its time and ratio;
#   - the terminal's own CPU seconds (user + sys of the nimbus-agent
#     process, getrusage of the child) against the CPU seconds of the
#     local vips blur: target at most 20%, the time and battery the
#     terminal saves;
#   - a cache hit (the same picture and ops again): end to end ms.
# Each round's picture differs from the others by bytes after its JPEG
# end marker (which decoders ignore), so every round uploads and computes
# anew and all three tools read the same file. Medians of --rounds rounds.
#
# Music (issue 14): a 10-minute 44.1 kHz stereo 16-bit WAV made here (pink
# noise and a tone, 106 MB) normalized to -1 dBFS into FLAC by
# `nimbus-agent audio` against `sox --norm=-1 in.wav out.flac` locally:
# end to end and the worker's part against sox's wall time, the
# terminal's CPU seconds against sox's (target 20%), and the worker's
# peak RSS above its idle RSS while it works (target 64 MiB: the kernel's
# high-water mark, reset through /proc/PID/clear_refs before each run).
# Documents: a 50 MB text log made here compressed at zstd level 19 by
# `nimbus-agent doc` against `zstd -19` locally, the same measures. Each
# round's sound differs in its last frame, its log in a last line.
# A measurement, not a test: a missed target prints MISS and the exit
# status stays 0; only a run that breaks exits 1 (2: usage).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${NIMBUS_BUILD_DIR:-$ROOT/build}
[[ $BUILD == /* ]] || BUILD=$PWD/$BUILD
export NIMBUS_BUILD_DIR=$BUILD
BIN=$BUILD/bin

WIDTH=4000
HEIGHT=3000
SIGMA=4
QUALITY=85
ROUNDS=3
BUILD_FIRST=1
KEEP=0
IM=1
PARTS=image,audio,doc

usage() {
  cat <<'USAGE'
usage: scripts/bench offload [options]
  Blurs a 12-megapixel JPEG made here through a stack of its own
  (nimbus-agent image, the image module) and locally with vips and
  ImageMagick on the same file, and prints a Markdown table: end to end
  and the worker's processing against vips, ImageMagick's time, the
  terminal's CPU seconds against a local blur's, and a cache hit, each
  with its baseline and target (PASS/MISS).
options:
  --size WxH     the picture (default 4000x3000, 12 megapixels)
  --sigma S      the blur's sigma (default 4)
  --rounds R     rounds (default 3); the table gives medians
  --no-imagemagick  leave ImageMagick out (about 17 s a round here)
  --only LIST    the parts to run, of image,audio,doc (default all three)
  --no-build     use the binaries as they are
  --keep         keep the stack directory (logs) afterwards
environment:
  NIMBUS_BUILD_DIR (default <repo>/build); the image module is
  $NIMBUS_BUILD_DIR/modules/nimbus-image.so
Exit status: 0 when the bench ran (PASS or MISS), 1 when it broke, 2 usage.
USAGE
}

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --size)
      [[ ${2:-} =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { usage >&2; exit 2; }
      WIDTH=${BASH_REMATCH[1]} HEIGHT=${BASH_REMATCH[2]}
      shift 2 ;;
    --sigma) SIGMA=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --no-imagemagick) IM=0; shift ;;
    --only) PARTS=${2:?}; shift 2 ;;
    --no-build) BUILD_FIRST=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { say "--rounds wants a number >= 1"; exit 2; }
[[ $SIGMA =~ ^[0-9]+(\.[0-9]+)?$ ]] || { say "--sigma wants a number"; exit 2; }
[[ ,$PARTS, =~ ^(,(image|audio|doc))+,$ ]] || { say "--only wants a list of image, audio, doc"; exit 2; }
part() { [[ ,$PARTS, == *,$1,* ]]; }
# The real tools, not a wrapper in front of them that a PATH may hold.
if part image; then
  VIPS=$(command -v vips) || die "vips is not installed (libvips-tools)"
  CONVERT=/usr/bin/convert
  [[ -x $CONVERT ]] || CONVERT=$(command -v convert) || die "ImageMagick's convert is not installed"
fi
if part audio; then
  SOX=$(command -v sox) || die "sox is not installed (scripts/install-deps)"
fi
if part doc; then
  ZSTD=$(command -v zstd) || die "zstd is not installed (scripts/install-deps)"
fi

if ((BUILD_FIRST)); then
  say "building the agent, the stack and the offload modules in $BUILD"
  "$ROOT/scripts/build" >&2 || die "build failed"
fi
for f in nimbus-agent nimbus-worker nimbusctl; do
  [[ -x $BIN/$f ]] || die "missing $BIN/$f (build it, or drop --no-build)"
done
for m in image audio doc; do
  if part "$m" && [[ ! -f $BUILD/modules/nimbus-$m.so ]]; then
    die "no $m module at $BUILD/modules/nimbus-$m.so"
  fi
done

STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-bench-offload.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$ROOT/scripts/stack" stop "$STACK_DIR" >&2 || rc=1
  if ((KEEP)); then say "kept $STACK_DIR"; else rm -rf "$STACK_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$(NIMBUS_WORKER_FLAGS="${NIMBUS_WORKER_FLAGS:-} --modules-dir $BUILD/modules" \
  NIMBUS_WORKERS=1 "$ROOT/scripts/stack" start "$STACK_DIR")" ||
  die "scripts/stack start failed"
eval "$("$ROOT/scripts/stack" terminal "$STACK_DIR" bench)" ||
  die "scripts/stack terminal failed"
export NIMBUS_STATE_DIR=$STACK_DIR/agent-state
WLOG=$STACK_DIR/worker-1/log
D=$STACK_DIR/data
mkdir -p "$D"

# --- helpers ------------------------------------------------------------

# timed OUT CMD...: runs CMD, stdout into OUT; prints "wall user sys" in
# seconds (getrusage of the child alone).
timed() {
  python3 - "$@" <<'EOF'
import os, subprocess, sys, time
out = sys.argv[1]
t = time.monotonic()
with open(out, "wb") as f:
    p = subprocess.Popen(sys.argv[2:], stdout=f)
    _, status, ru = os.wait4(p.pid, 0)
dt = time.monotonic() - t
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit("exited %d: %s" % (os.waitstatus_to_exitcode(status), " ".join(sys.argv[2:])))
print("%.4f %.4f %.4f" % (dt, ru.ru_utime, ru.ru_stime))
EOF
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
ok_if() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
secs() { awk -v a="$1" 'BEGIN { printf "%.3f", a }'; }
jf() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
WPID=$(awk '$1 == "worker-1" { print $2 }' "$STACK_DIR/procs")
[[ -n $WPID ]] || die "no worker pid in $STACK_DIR/procs"
# worker_kib FIELD: the worker's VmRSS or VmHWM in KiB.
worker_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$WPID/status"; }
# worker_ms TYPE TASK: the worker's processing of TASK, "computed in N
# ms" of its WK-OFFLOAD line, in seconds.
worker_ms() {
  local ms
  ms=$(sed -n "s|.*WK-OFFLOAD $1 bench/$2: computed in \([0-9]*\) ms.*|\1|p" "$WLOG")
  [[ -n $ms ]] || die "no WK-OFFLOAD line for task $2 in $WLOG"
  awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }'
}
cpu() { awk -v u="$1" -v s="$2" 'BEGIN { print u + s }'; }
# The rounds of the music and document parts fill the arrays L_W, L_CPU,
# L_OUT (the local tool: wall and CPU seconds, output bytes) and O_W,
# O_CPU, O_WORK, O_RSS, O_OUT (the offload).
# local_run STDOUT OUT CMD...: the local tool's CMD, which writes OUT (or
# its stdout, into STDOUT).
local_run() {
  local w u s stdout=$1 out=$2
  shift 2
  read -r w u s <<<"$(timed "$stdout" "$@")"
  [[ -n $s ]] || die "failed: $*"
  L_W+=("$w") L_CPU+=("$(cpu "$u" "$s")") L_OUT+=("$(stat -c %s "$out")")
}
# offload_run TYPE JSON OUT CMD...: runs the agent's CMD (which writes
# OUT), its JSON summary into JSON; checks that it was computed anew and
# that OUT is its result's blob; adds its wall and CPU seconds (user +
# sys), the worker's processing (seconds), the worker's peak RSS above its
# idle RSS meanwhile (MiB; Linux: writing 5 to clear_refs resets the
# high-water mark) and the output's bytes; says the round's figures.
offload_run() {
  local type=$1 json=$2 out=$3 idle w u s hwm
  shift 3
  idle=$(worker_kib VmRSS)
  echo 5 >"/proc/$WPID/clear_refs" || die "cannot reset the worker's VmHWM"
  read -r w u s <<<"$(timed "$json" "$@")"
  [[ -n $s ]] || die "the agent failed: $*"
  hwm=$(worker_kib VmHWM)
  [[ $(jf "$json" cached) == False ]] || die "$json: answered from the cache"
  [[ $(sha256sum "$out" | cut -c1-64) == "$(jf "$json" blob)" ]] ||
    die "$out is not the result's blob"
  O_W+=("$w") O_CPU+=("$(cpu "$u" "$s")") O_WORK+=("$(worker_ms "$type" "$(jf "$json" task)")")
  O_RSS+=("$(awk -v h="$hwm" -v i="$idle" 'BEGIN { printf "%.1f", (h - i) / 1024 }')")
  O_OUT+=("$(jf "$json" size)")
  say "round $r/$ROUNDS: locally ${L_W[-1]} s (cpu ${L_CPU[-1]} s), end to end $w s" \
    "(agent cpu ${O_CPU[-1]} s, worker ${O_WORK[-1]} s, +${O_RSS[-1]} MiB)"
}
# offload_table WHAT LOCAL RSS_TARGET: the rows of a part from the medians
# of the arrays L_W, L_CPU (the local tool), O_W, O_CPU, O_WORK, O_RSS
# (the offload); RSS_TARGET in MiB, or empty.
offload_table() {
  local v vc e k c m
  v=$(median "${L_W[@]}") vc=$(median "${L_CPU[@]}") e=$(median "${O_W[@]}")
  k=$(median "${O_WORK[@]}") c=$(median "${O_CPU[@]}") m=$(median "${O_RSS[@]}")
  echo
  echo "| measure | value | baseline (same run, same file) | ratio | target | |"
  echo "| --- | ---: | --- | ---: | --- | --- |"
  printf '| end to end: upload, process, download (nimbus-agent %s) | %s s | %s locally %s s | %s | | |\n' \
    "$1" "$(secs "$e")" "$2" "$(secs "$v")" "$(ratio "$e" "$v")"
  printf '| the worker'"'"'s processing alone (WK-OFFLOAD) | %s s | %s locally %s s | %s | | |\n' \
    "$(secs "$k")" "$2" "$(secs "$v")" "$(ratio "$k" "$v")"
  printf '| the terminal'"'"'s CPU: user + sys of nimbus-agent | %s s | %s locally, user + sys %s s | %s | <= 0.20x | %s |\n' \
    "$(secs "$c")" "$2" "$(secs "$vc")" "$(awk -v a="$c" -v b="$vc" 'BEGIN { printf "%.3f", a / b }')" \
    "$(ok_if "$c <= 0.2 * $vc")"
  if [[ -n $3 ]]; then
    printf '| the worker'"'"'s peak RSS above idle while it works | %s MiB | | | <= %s MiB | %s |\n' \
      "$m" "$3" "$(ok_if "$m <= $3")"
  else
    printf '| the worker'"'"'s peak RSS above idle while it works | %s MiB | | | (printed) | |\n' "$m"
  fi
  echo
  echo "Rounds (seconds): $2 ${L_W[*]}; its cpu ${L_CPU[*]}; end to end ${O_W[*]};" \
    "worker ${O_WORK[*]}; agent cpu ${O_CPU[*]}; worker RSS above idle (MiB) ${O_RSS[*]}"
}

if part image; then
  AGENT=("$BIN/nimbus-agent" image --json --timeout 600000)
  OPS=(--op "blur:sigma=$SIGMA" --format jpeg --quality "$QUALITY")
  # --- data -----------------------------------------------------------------

  MP=$(awk -v w="$WIDTH" -v h="$HEIGHT" 'BEGIN { printf "%.1f", w * h / 1e6 }')
  say "making a ${WIDTH}x$HEIGHT ($MP MP) JPEG with ImageMagick (plasma, quality 90)"
  "$CONVERT" -seed 7 -size "${WIDTH}x$HEIGHT" plasma:fractal -quality 90 "$D/photo.jpg"
  IN_BYTES=$(stat -c %s "$D/photo.jpg")
  # picture N: the photo with "round N" after its end marker.
  picture() { { cat "$D/photo.jpg"; printf 'nimbus bench round %s\n' "$1"; } >"$D/in-$1.jpg"; }

  say "warming up: the worker loads the module, the page cache holds the tools"
  picture warm
  timed "$D/warm.json" "${AGENT[@]}" "$D/in-warm.jpg" "$D/warm-out.jpg" "${OPS[@]}" >/dev/null ||
    die "the offload failed: is the image module loadable? $(tail -n 3 "$WLOG")"
  "$VIPS" gaussblur "$D/in-warm.jpg" "$D/warm-vips.jpg[Q=$QUALITY]" "$SIGMA"

  LOAD1=$(awk '{ print $1 }' /proc/loadavg)
  E2E=() WORK=() VIPS_W=() VIPS_CPU=() IM_W=() CPU=() HIT=() OUT_BYTES=()
  for ((r = 1; r <= ROUNDS; r++)); do
    picture "$r"
    in=$D/in-$r.jpg
    say "round $r/$ROUNDS: vips gaussblur locally"
    read -r w u s < <(timed /dev/null "$VIPS" gaussblur "$in" "$D/vips-$r.jpg[Q=$QUALITY]" "$SIGMA")
    VIPS_W+=("$w") VIPS_CPU+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')")
    say "round $r/$ROUNDS: nimbus-agent image (upload, process, download)"
    read -r w u s < <(timed "$D/e2e-$r.json" "${AGENT[@]}" "$in" "$D/out-$r.jpg" "${OPS[@]}")
    [[ $(jf "$D/e2e-$r.json" cached) == False ]] || die "round $r was answered from the cache"
    [[ $(jf "$D/e2e-$r.json" uploaded) == True ]] || die "round $r uploaded nothing"
    [[ $(sha256sum "$D/out-$r.jpg" | cut -c1-64) == "$(jf "$D/e2e-$r.json" blob)" ]] ||
      die "round $r: the output is not the result's blob"
    E2E+=("$w") CPU+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')")
    OUT_BYTES+=("$(jf "$D/e2e-$r.json" size)")
    task=$(jf "$D/e2e-$r.json" task)
    WORK+=("$(worker_ms process.image "$task")")
    say "round $r/$ROUNDS: the same again (the cloud's cache)"
    read -r w _ _ < <(timed "$D/hit-$r.json" "${AGENT[@]}" "$in" "$D/hit-$r.jpg" "${OPS[@]}")
    [[ $(jf "$D/hit-$r.json" cached) == True ]] || die "round $r's repeat was not a cache hit"
    HIT+=("$w")
    if ((IM)); then
      say "round $r/$ROUNDS: ImageMagick convert -gaussian-blur 0x$SIGMA locally"
      read -r w _ _ < <(timed /dev/null "$CONVERT" "$in" -gaussian-blur "0x$SIGMA" -quality "$QUALITY" "$D/im-$r.jpg")
      IM_W+=("$w")
    fi
    say "round $r/$ROUNDS: vips ${VIPS_W[-1]} s (cpu ${VIPS_CPU[-1]} s), end to end ${E2E[-1]} s (agent cpu ${CPU[-1]} s, worker ${WORK[-1]} s), cache hit ${HIT[-1]} s${IM_W:+, ImageMagick ${IM_W[-1]} s}"
    rm -f "$D/vips-$r.jpg" "$D/out-$r.jpg" "$D/hit-$r.jpg" "$D/im-$r.jpg"
  done
  # What of the local blur's wall time is the vips program starting (the
  # worker has libvips loaded already): its start alone, for the reader.
  START=()
  for ((r = 1; r <= ROUNDS; r++)); do
    read -r w _ _ < <(timed /dev/null "$VIPS" --version)
    START+=("$w")
  done
  LOAD2=$(awk '{ print $1 }' /proc/loadavg)

  # --- the table --------------------------------------------------------------

  V=$(median "${VIPS_W[@]}")
  VC=$(median "${VIPS_CPU[@]}")
  E=$(median "${E2E[@]}")
  K=$(median "${WORK[@]}")
  C=$(median "${CPU[@]}")
  H=$(median "${HIT[@]}")
  O=$(median "${OUT_BYTES[@]}")
  echo
  echo "scripts/bench offload: $(nproc) cores, one worker (offload_threads 2)," \
    "${WIDTH}x$HEIGHT JPEG ($MP MP, $IN_BYTES bytes in, $O out), blur sigma $SIGMA," \
    "JPEG quality $QUALITY out; medians of $ROUNDS round(s); load average $LOAD1 before, $LOAD2 after"
  echo
  echo "| measure | value | baseline (same run, same file) | ratio | target | |"
  echo "| --- | ---: | --- | ---: | --- | --- |"
  printf '| end to end: upload, process, download (nimbus-agent image) | %s s | vips gaussblur locally %s s | %s | <= 2.0x | %s |\n' \
    "$(secs "$E")" "$(secs "$V")" "$(ratio "$E" "$V")" "$(ok_if "$E <= 2.0 * $V")"
  printf '| the worker'"'"'s processing alone (WK-OFFLOAD) | %s s | vips gaussblur locally %s s | %s | <= 1.2x | %s |\n' \
    "$(secs "$K")" "$(secs "$V")" "$(ratio "$K" "$V")" "$(ok_if "$K <= 1.2 * $V")"
  if ((IM)); then
    I=$(median "${IM_W[@]}")
    printf '| ImageMagick convert -gaussian-blur 0x%s locally | %s s | vips gaussblur locally %s s | %s | (printed) | |\n' \
      "$SIGMA" "$(secs "$I")" "$(secs "$V")" "$(ratio "$I" "$V")"
    printf '| end to end against ImageMagick locally | %s s | ImageMagick %s s | %s | | |\n' \
      "$(secs "$E")" "$(secs "$I")" "$(ratio "$E" "$I")"
  fi
  printf '| the terminal'"'"'s CPU: user + sys of nimbus-agent | %s s | vips gaussblur locally, user + sys %s s | %s | <= 0.20x | %s |\n' \
    "$(secs "$C")" "$(secs "$VC")" "$(ratio "$C" "$VC")" "$(ok_if "$C <= 0.2 * $VC")"
  printf '| cache hit: the same picture and ops again, end to end | %s ms | the first run %s s | %s | | |\n' \
    "$(awk -v h="$H" 'BEGIN { printf "%.0f", h * 1000 }')" "$(secs "$E")" "$(ratio "$H" "$E")"
  printf '| for reference: vips --version, the local program starting alone | %s s | | | | |\n' \
    "$(secs "$(median "${START[@]}")")"
  echo
  echo "Rounds (seconds): vips ${VIPS_W[*]}; vips cpu ${VIPS_CPU[*]}; end to end ${E2E[*]};" \
    "worker ${WORK[*]}; agent cpu ${CPU[*]}; cache hit ${HIT[*]}${IM_W:+; ImageMagick ${IM_W[*]}}"
fi

# --- music ------------------------------------------------------------------

if part audio; then
  AGENT=("$BIN/nimbus-agent" audio --json --timeout 600000)
  say "making a 10-minute 44.1 kHz stereo WAV with sox (pink noise and a tone)"
  "$SOX" -D -n -r 44100 -b 16 -c 2 "$D/music.wav" synth 600 pinknoise synth 600 sine mix 440 remix 1v0.5 1v0.4
  WAV_BYTES=$(stat -c %s "$D/music.wav")
  WAV_FRAMES=$(soxi -s "$D/music.wav")
  # sound N: the music with its last frame set to N (a new sound each round).
  sound() {
    cp "$D/music.wav" "$D/in-$1.wav"
    printf '%08x' "$2" | xxd -r -p | dd of="$D/in-$1.wav" bs=1 seek=$((WAV_BYTES - 4)) conv=notrunc status=none
  }
  say "warming up: the worker loads the audio module"
  "$SOX" -n -r 44100 -b 16 -c 2 "$D/warm.wav" synth 1 sine 440
  "${AGENT[@]}" "$D/warm.wav" "$D/warm.flac" --op normalize:peak=-1 >/dev/null ||
    die "the audio offload failed: is the audio module loadable? $(tail -n 3 "$WLOG")"
  LOAD1=$(awk '{ print $1 }' /proc/loadavg)
  L_W=() L_CPU=() L_OUT=() O_W=() O_CPU=() O_WORK=() O_RSS=() O_OUT=()
  for ((r = 1; r <= ROUNDS; r++)); do
    sound "$r" "$r"
    in=$D/in-$r.wav
    say "round $r/$ROUNDS: sox --norm=-1 to FLAC locally"
    local_run /dev/null "$D/sox-$r.flac" "$SOX" --norm=-1 "$in" "$D/sox-$r.flac"
    say "round $r/$ROUNDS: nimbus-agent audio normalize to FLAC (upload, process, download)"
    offload_run process.audio "$D/a-$r.json" "$D/out-$r.flac" \
      "${AGENT[@]}" "$in" "$D/out-$r.flac" --op normalize:peak=-1
    [[ $(soxi -s "$D/out-$r.flac") == "$WAV_FRAMES" ]] || die "round $r: the FLAC lost frames"
    rm -f "$in" "$D/sox-$r.flac" "$D/out-$r.flac"
  done
  LOAD2=$(awk '{ print $1 }' /proc/loadavg)
  echo
  echo "scripts/bench offload (music): $(nproc) cores, one worker, a 10-minute 44.1 kHz" \
    "stereo 16-bit WAV ($WAV_BYTES bytes) normalized to -1 dBFS into FLAC" \
    "($(median "${O_OUT[@]}") bytes; sox's $(median "${L_OUT[@]}")); medians of $ROUNDS round(s);" \
    "load average $LOAD1 before, $LOAD2 after"
  offload_table audio "sox --norm=-1 to FLAC" 64
fi

# --- documents --------------------------------------------------------------

if part doc; then
  AGENT=("$BIN/nimbus-agent" doc --json --timeout 600000)
  say "making a 50 MB text log with awk"
  awk 'BEGIN {
    srand(14); split("INFO INFO INFO INFO DEBUG WARN ERROR", lv, " ")
    split("auth storage worker broker janitor agent", svc, " ")
    split("request served|claim taken|blob stored|session opened|retrying after timeout|cache hit|segment verified", msg, "|")
    t = 1700000000; n = 0
    while (n < 50000000) {
      t += int(rand() * 3)
      line = sprintf("%s.%03d %-5s %s[%d]: %s id=%08x bytes=%d ms=%.1f", strftime("%Y-%m-%dT%H:%M:%S", t, 1),
        int(rand() * 1000), lv[int(rand() * 7) + 1], svc[int(rand() * 6) + 1], 1000 + int(rand() * 64),
        msg[int(rand() * 7) + 1], int(rand() * 4294967295), int(rand() * 1048576), rand() * 250)
      print line; n += length(line) + 1
    } }' >"$D/log.txt"
  LOG_BYTES=$(stat -c %s "$D/log.txt")
  say "warming up: the worker loads the doc module"
  head -c 100000 "$D/log.txt" >"$D/warm.txt"
  "${AGENT[@]}" "$D/warm.txt" "$D/warm.zst" --op compress:level=19 >/dev/null ||
    die "the doc offload failed: is the doc module loadable? $(tail -n 3 "$WLOG")"
  LOAD1=$(awk '{ print $1 }' /proc/loadavg)
  L_W=() L_CPU=() L_OUT=() O_W=() O_CPU=() O_WORK=() O_RSS=() O_OUT=()
  for ((r = 1; r <= ROUNDS; r++)); do
    in=$D/log-$r.txt
    { cat "$D/log.txt"; echo "nimbus bench round $r"; } >"$in"
    say "round $r/$ROUNDS: zstd -19 locally"
    local_run "$D/z-$r.zst" "$D/z-$r.zst" "$ZSTD" -q -19 -c "$in"
    say "round $r/$ROUNDS: nimbus-agent doc compress:level=19 (upload, process, download)"
    offload_run process.doc "$D/d-$r.json" "$D/out-$r.zst" \
      "${AGENT[@]}" "$in" "$D/out-$r.zst" --op compress:level=19
    "$ZSTD" -q -d -c "$D/out-$r.zst" | cmp -s - "$in" || die "round $r: the log does not come back"
    rm -f "$in" "$D/z-$r.zst" "$D/out-$r.zst"
  done
  LOAD2=$(awk '{ print $1 }' /proc/loadavg)
  echo
  echo "scripts/bench offload (documents): $(nproc) cores, one worker, a $LOG_BYTES-byte text log" \
    "compressed at zstd level 19 ($(median "${O_OUT[@]}") bytes; zstd -19's $(median "${L_OUT[@]}"));" \
    "medians of $ROUNDS round(s); load average $LOAD1 before, $LOAD2 after"
  offload_table doc "zstd -19" ""
fi
