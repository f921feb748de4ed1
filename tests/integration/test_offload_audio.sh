# process.audio end to end on real servers, with sound made here (speech
# by espeak-ng, tones by sox) and every effect measured independently of
# the module: rates, channels and lengths by soxi, levels by `sox stats`,
# pitch by `sox stat`; MP3 read by sox through libmad (libsox-fmt-mp3), and
# Opus, which sox does not read, decoded for it by opusdec (opus-tools,
# libopusfile). Every input format (WAV, FLAC, Ogg Vorbis,
# Opus, MP3) is read and every output format written; then a blob input,
# the cache, the CLI's verb, and the failure classes (bad op, unknown
# format, not sound, truncated and corrupt files, over max_duration).
source "$(dirname "$0")/lib.sh"

[[ -f $NIMBUS_BUILD_DIR/modules/nimbus-audio.so ]] ||
  nb_fail "the audio module was not built"
for t in espeak-ng sox soxi sndfile-convert opusdec opusinfo; do
  command -v "$t" >/dev/null ||
    nb_fail "$t is not installed (scripts/install-deps installs it)"
done
NIMBUS_WORKER_FLAGS="--max-duration-ms 150000" nb_stack_up 1
nb_terminal alice
T=$NB_DIR/media
mkdir -p "$T"

# Speech, 16 kHz mono, in every input format (sndfile-convert writes Opus
# and MP3 at full scale: it normalizes what it writes as floats). A stereo tone at 16 kHz,
# 2 s: left 0.5 and right 0.25 of full scale (-6.02 and -12.04 dBFS). A
# quiet second with a loud 0.2 s at its end (for a fade out before a
# normalize). 2 s at 44.1 kHz (a blob); 151 s at 8 kHz, 8-bit (over
# max_duration, 150 s); 120 s at 48 kHz (long work, to cancel).
espeak-ng -w "$T/speech22.wav" "Nimbus hands heavy work to the cloud."
sox "$T/speech22.wav" -r 16000 "$T/speech.wav"
sox "$T/speech.wav" "$T/speech.flac"
sox "$T/speech.wav" "$T/speech.ogg"
sndfile-convert -opus "$T/speech.wav" "$T/speech.opus"
sndfile-convert "$T/speech.wav" "$T/speech.mp3"
sox -D -n -r 16000 -b 16 -c 2 "$T/tone.wav" synth 2 sine 440 remix 1v0.5 1v0.25
sox -D -n -r 16000 -b 16 "$T/quiet.wav" synth 1 sine 440 vol 0.1
sox -D -n -r 16000 -b 16 "$T/loud.wav" synth 0.2 sine 440 vol 0.8
sox "$T/quiet.wav" "$T/loud.wav" "$T/ramp.wav"
sox -D -n -r 8000 -b 8 "$T/long.wav" synth 151 sine 440
sox -D -n -r 48000 -b 16 -c 2 "$T/work.wav" synth 120 sine 440
sox -D -n -r 44100 -b 16 -c 2 "$T/mid.wav" synth 2 sine 440 remix 1v0.5 1v0.25
head -c 4000 /dev/urandom >"$T/noise.bin"

# ask NAME ARGS IN: process.audio of IN (inline) in the background, the
# reply into $T/NAME.json: the tasks of a batch run side by side, and
# asked waits for them. got NAME [OUT]: J the reply, C its code, the
# output's bytes into OUT.
ASKED=()
ask() {
  call process.audio "$2" --data-file "$3" >"$T/$1.json" &
  ASKED+=($!)
}
asked() {
  ((${#ASKED[@]} == 0)) || wait "${ASKED[@]}"
  ASKED=()
}
got() {
  J=$(<"$T/$1.json")
  [[ $J =~ \"code\":([0-9]+) ]] || nb_fail "no reply for $1: ${J:0:300}"
  C=${BASH_REMATCH[1]}
  if [[ -n ${2:-} ]]; then
    python3 -c 'import base64,json,sys
open(sys.argv[1], "wb").write(base64.b64decode(json.load(sys.stdin).get("data_b64", "")))' "$2" <<<"$J"
  fi
}
res() {
  python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(" ".join(str(r.get(k)) for k in sys.argv[1:]))' "$@" <<<"$J"
}
# wavof FILE: a file sox reads with FILE's sound (Opus decoded at the rate
# it was made at).
wavof() {
  case $1 in
    *.opus)
      opusdec --quiet --float --rate "$(opusinfo "$1" | awk '/Original sample rate/ { print $4 }')" \
        "$1" "$1.wav" && echo "$1.wav" ;;
    *) echo "$1" ;;
  esac
}
# info FILE: "rate channels frames" (soxi).
info() {
  local f
  f=$(wavof "$1")
  echo "$(soxi -r "$f" 2>/dev/null) $(soxi -c "$f" 2>/dev/null) $(soxi -s "$f" 2>/dev/null)"
}
# lev FILE WHAT [EFFECT...]: WHAT ("Pk" or "RMS") level in dBFS of each
# channel (sox stats), after EFFECTs.
lev() {
  local f what=$2
  f=$(wavof "$1")
  shift 2
  sox "$f" -n "$@" stats 2>&1 | awk -v w="$what" '$1 == w && $2 == "lev" {
    s = ""; for (i = (NF > 4 ? 5 : 4); i <= NF; i++) s = s (s == "" ? "" : " ") $i; print s }'
}
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; exit !(d <= t && -d <= t) }'; }

[[ $(lev "$T/tone.wav" Pk) == "-6.02 -12.04" ]] || nb_fail "sox made another tone: $(lev "$T/tone.wav" Pk)"

# Every input format, normalized to -3 dBFS into WAV: the peak sox
# measures is the target, the length and rate are the input's.
want=$(soxi -s "$T/speech.wav")
for fmt in wav flac ogg opus mp3; do
  ask "n-$fmt" '{"ops": [{"op": "normalize", "peak": -3}], "format": "wav"}' "$T/speech.$fmt"
done
for fmt in wav flac ogg opus mp3; do
  ask "o-$fmt" "{\"ops\": [{\"op\": \"normalize\"}], \"format\": \"$fmt\", \"quality\": 0.6}" "$T/tone.wav"
done
asked
for fmt in wav flac ogg opus mp3; do
  got "n-$fmt" "$T/n-$fmt.wav"
  [[ $C == 0 ]] || nb_fail "normalize of $fmt: ${J:0:300}"
  p=$(lev "$T/n-$fmt.wav" Pk)
  near "$p" -3 0.1 || nb_fail "$fmt normalized to -3 dBFS: sox measures $p"
  read -r rate ch frames <<<"$(info "$T/n-$fmt.wav")"
  nb_assert_eq "16000 1" "$rate $ch" "$fmt: rate and channels"
  # Lossy decoders add or drop up to a codec frame or two at the ends.
  near "$frames" "$want" 2400 || nb_fail "$fmt: $frames frames, the input has $want"
  nb_assert_eq "$frames" "$(res frames)" "$fmt: the frames the result names"
done

# Every output format from the stereo tone, normalized to -1 dBFS: sox
# (and sndfile-convert for Opus and MP3) reads it back; the lossless ones
# keep the peak within 0.1 dB, the lossy ones within 1 dB.
for fmt in wav flac ogg opus mp3; do
  got "o-$fmt" "$T/o.$fmt"
  [[ $C == 0 ]] || nb_fail "format $fmt: ${J:0:300}"
  nb_assert_eq "$fmt 16000 2" "$(res format rate channels)" "the result of $fmt"
  read -r rate ch frames <<<"$(info "$T/o.$fmt")"
  nb_assert_eq "16000 2" "$rate $ch" "$fmt read back: rate and channels"
  near "$frames" 32000 2400 || nb_fail "$fmt read back: $frames frames of 32000"
  read -r pl pr <<<"$(lev "$T/o.$fmt" Pk)"
  tol=1
  [[ $fmt == wav || $fmt == flac ]] && tol=0.1
  near "$pl" -1 "$tol" && near "$pr" -7.02 "$tol" || nb_fail "$fmt read back: peaks $pl $pr"
done
[[ $(head -c 4 "$T/o.flac") == fLaC && $(head -c 4 "$T/o.ogg") == OggS ]] ||
  nb_fail "the containers are not what was asked"

ask trim '{"ops": [{"op": "trim", "start": 250, "end": 1250}]}' "$T/tone.wav"
ask rs '{"ops": [{"op": "resample", "rate": 44100}], "format": "flac"}' "$T/tone.wav"
ask mono '{"ops": [{"op": "mono"}, {"op": "gain", "db": 2}, {"op": "loudness"}]}' "$T/tone.wav"
ask fade '{"ops": [{"op": "fade", "in": 200, "out": 200}]}' "$T/tone.wav"
ask fn '{"ops": [{"op": "fade", "out": 400}, {"op": "normalize", "peak": -3}]}' "$T/ramp.wav"
asked
# trim: [250, 1250) ms is 16000 frames exactly; the level is untouched.
got trim "$T/trim.wav"
nb_assert_eq "16000 2 16000" "$(info "$T/trim.wav")" "trim to 1 s"
nb_assert_eq "-6.02 -12.04" "$(lev "$T/trim.wav" Pk)" "the level after a trim"
# resample to 44.1 kHz: the rate, the length, and the pitch (440 Hz).
got rs "$T/rs.flac"
read -r rate ch frames <<<"$(info "$T/rs.flac")"
nb_assert_eq "44100 2" "$rate $ch" "resampled"
near "$frames" 88200 2 || nb_fail "resampled to $frames frames, not 88200"
f=$(sox "$T/rs.flac" -n remix 1 stat 2>&1 | awk '/^Rough/ { print $3 }')
near "$f" 440 5 || nb_fail "the pitch moved: $f Hz"
# mono: one channel, the mean of both (0.375, -8.52 dBFS); gain +2 dB on
# that; loudness where it stands, against sox's RMS of the output.
got mono "$T/mono.wav"
nb_assert_eq "16000 1 32000" "$(info "$T/mono.wav")" "mono"
p=$(lev "$T/mono.wav" Pk)
near "$p" -6.52 0.1 || nb_fail "mono then +2 dB: sox measures $p"
r=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["loudness"][0][0]["rms_db"])' <<<"$J")
near "$r" "$(lev "$T/mono.wav" RMS)" 0.1 || nb_fail "loudness says RMS $r, sox $(lev "$T/mono.wav" RMS)"
# fade in and out over 200 ms: the first and last 10 ms are near silence,
# the middle is untouched.
got fade "$T/fade.wav"
read -r a _ <<<"$(lev "$T/fade.wav" Pk trim 0 0.01)"
read -r z _ <<<"$(lev "$T/fade.wav" Pk trim 1.99)"
read -r m _ <<<"$(lev "$T/fade.wav" Pk trim 0.5 1)"
awk -v a="$a" -v z="$z" 'BEGIN { exit !(a < -25 && z < -25) }' ||
  nb_fail "the fades do not start and end at silence: $a, $z dBFS"
near "$m" -6.02 0.05 || nb_fail "the fade reached the middle: $m"
# A fade out over 400 ms, longer than the loud end (0.8 becomes at most
# 0.4), then normalize: the peak is the target after the fade, not 6 dB
# below it as it would be from the peak before the fade.
got fn "$T/fn.wav"
p=$(lev "$T/fn.wav" Pk)
near "$p" -3 0.1 || nb_fail "normalize after a fade out: sox measures $p"

# A blob input (more than a message), and the cache for a repeat.
up=$("$NIMBUS_BIN/nb-blob" upload "$T/mid.wav")
hex=$(cut -d' ' -f2 <<<"$up")
args="{\"blob\": \"$hex\", \"ops\": [{\"op\": \"mono\"}, {\"op\": \"normalize\"}], \"format\": \"flac\"}"
J=$(call process.audio "$args")
nb_assert_eq "44100 1 88200 False" "$(res rate channels frames cached)" "blob input"
out=$(res blob)
J=$(call process.audio "$args")
nb_assert_eq "True $out" "$(res cached blob)" "the same request again"
nb_assert_eq 1 "$(grep -c 'process.audio.*answered from the cache' "$NB_DIR/worker-1/log")"

# Progress and cancel: 120 s normalized (read twice) and resampled at the
# best quality takes seconds; its progress counts input frames of both
# passes, rising; task.cancel ends it with 499.
hex=$("$NIMBUS_BIN/nb-blob" upload "$T/work.wav" | cut -d' ' -f2)
nb_cancel_midway process.audio "{\"blob\": \"$hex\", \"ops\": [{\"op\": \"normalize\"}, {\"op\": \"resample\", \"rate\": 44100}]}" \
  offload-audio-cancel-0001 $((2 * 120 * 48000))
# Over max_duration (a blob: more than a message).
hex=$("$NIMBUS_BIN/nb-blob" upload "$T/long.wav" | cut -d' ' -f2)
J=$(call process.audio "{\"blob\": \"$hex\", \"ops\": [{\"op\": \"mono\"}]}")
[[ $J == *'"code":413'* ]] || nb_fail "151 s over max_duration_ms 150000: ${J:0:300}"

# The CLI's verb: upload, task, verified download, in one.
out=$(nb_agent audio "$T/mid.wav" "$T/cli.flac" --op mono --op normalize:peak=-2 --json)
nb_assert_eq "44100 1 88200" "$(info "$T/cli.flac")" "nimbus-agent audio's output: $out"
near "$(lev "$T/cli.flac" Pk)" -2 0.1 || nb_fail "nimbus-agent audio: peak $(lev "$T/cli.flac" Pk)"
nb_agent audio "$T/mid.wav" "$T/x.wav" --op swirl >/dev/null 2>&1 && nb_fail "a bad op passed"
nb_agent audio "$T/noise.bin" "$T/x.wav" --op mono >/dev/null 2>&1 || st=$?
nb_assert_eq 7 "${st:-0}" "nimbus-agent audio of what is not sound: exit 7"

# Failures, asked side by side. Truncated (the first half) and corrupt
# (2 KB of noise, always the same, a third of the way in) files of each
# kind whose decoder can tell: 422, never a shorter sound. (A WAV's
# samples are any bytes; an Opus stream cut before its end does not say
# how long it was: both are read for what they hold.)
for f in speech.wav speech.flac speech.ogg speech.mp3; do
  s=$(stat -c %s "$T/$f")
  head -c $((s / 2)) "$T/$f" >"$T/cut-$f"
done
python3 -c 'import random, sys
for f in sys.argv[2:]:
    b = bytearray(open(sys.argv[1] + "/" + f, "rb").read())
    random.seed(1)
    for i in range(len(b) // 3, len(b) // 3 + 2000): b[i] = random.randrange(256)
    open(sys.argv[1] + "/bad-" + f, "wb").write(b)' "$T" speech.flac speech.ogg speech.mp3
# A WAV written to a pipe leaves a placeholder length: read, not refused.
sox "$T/speech.wav" -t wav - 2>/dev/null >"$T/piped.wav"
mono='{"ops": [{"op": "mono"}]}'
cases=(
  "400|unknown op|{\"ops\": [{\"op\": \"swirl\"}]}|tone.wav"
  "400|gain out of range|{\"ops\": [{\"op\": \"gain\", \"db\": 99}]}|tone.wav"
  "415|unknown format|{\"ops\": [{\"op\": \"mono\"}], \"format\": \"aac\"}|tone.wav"
  "415|opus at 44.1 kHz|{\"ops\": [{\"op\": \"resample\", \"rate\": 44100}], \"format\": \"opus\"}|tone.wav"
  "415|not sound|$mono|noise.bin"
  "0|a WAV from a pipe|$mono|piped.wav"
)
for f in speech.wav speech.flac speech.ogg speech.mp3; do
  cases+=("422|the first half of $f|$mono|cut-$f")
done
for f in speech.flac speech.ogg speech.mp3; do
  cases+=("422|$f with noise inside|$mono|bad-$f")
done
for i in "${!cases[@]}"; do
  IFS='|' read -r _ _ args f <<<"${cases[i]}"
  ask "f$i" "$args" "$T/$f"
  ((i % 4 != 3)) || asked
done
asked
for i in "${!cases[@]}"; do
  IFS='|' read -r code what _ _ <<<"${cases[i]}"
  got "f$i"
  nb_assert_eq "$code" "$C" "$what: ${J:0:200}"
  case $what in
    "gain out of range")
      [[ $J == *"ops[0].db"* ]] || nb_fail "the 400 names the parameter: ${J:0:300}" ;;
    "a WAV from a pipe")
      nb_assert_eq "$want" "$(res frames)" "the frames of a WAV from a pipe" ;;
  esac
done
nb_alive "$(nb_pids | awk '$1 == "worker-1" {print $2}')" || nb_fail "the worker died"
nb_log "audio: every op measured by sox, 5 formats in and out, blob input, cache, failures"
