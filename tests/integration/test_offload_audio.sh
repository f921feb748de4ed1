# process.audio end to end on real servers, with sound made here: every op
# checked for its effect (levels, lengths, rates, channels measured on the
# output), each output format read back by the module itself, a blob
# input, the cache, and the failure classes (bad op, bad format, not
# sound, a header that lies about its length, over max_duration).
source "$(dirname "$0")/lib.sh"

[[ -f $NIMBUS_BUILD_DIR/modules/nimbus-audio.so ]] ||
  nb_fail "the audio module was not built"
NIMBUS_WORKER_FLAGS="--max-duration-ms 2500" nb_stack_up 1
nb_terminal alice
T=$NB_DIR/media
mkdir -p "$T"

# Stereo 16-bit WAVs of sines: left at 0.5 and right at 0.25 of full
# scale (-6 and -12 dBFS), 1 s at 16 kHz (inline), 2 s at 44.1 kHz (a
# blob), 3 s at 8 kHz (over max_duration); and one whose header claims an
# hour it does not hold.
python3 - "$T" <<'PY'
import math, struct, sys, wave
d = sys.argv[1]
def tone(path, rate, secs):
    w = wave.open(path, "wb")
    w.setnchannels(2); w.setsampwidth(2); w.setframerate(rate)
    fr = bytearray()
    for i in range(int(rate * secs)):
        s = math.sin(2 * math.pi * 440 * i / rate)
        fr += struct.pack("<hh", int(16383 * s), int(8191 * s))
    w.writeframes(bytes(fr)); w.close()
tone(d + "/short.wav", 16000, 1)
tone(d + "/mid.wav", 44100, 2)
tone(d + "/long.wav", 8000, 3)
b = bytearray(open(d + "/short.wav", "rb").read())
struct.pack_into("<I", b, 40, 16000 * 4 * 3600)   # data chunk size: 1 h
open(d + "/liar.wav", "wb").write(b)
PY

audio() { call process.audio "$1" --data-file "$2"; }
jget() {
  python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$@" <<<"$J"
}
run() { J=$(audio "$1" "$2"); }
code() { jget 'r["code"]'; }
res() { jget '" ".join(str(r["result"].get(k)) for k in sys.argv[2:])' "$@"; }
near() { python3 -c 'import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(abs(a-b)>t)' "$@"; }

# loudness measures; the levels are the input's.
run '{"ops": [{"op": "loudness"}], "format": "wav"}' "$T/short.wav"
[[ $(code) == 0 ]] || nb_fail "loudness: ${J:0:300}"
L=$(jget '"%.2f %.2f %.2f" % (r["result"]["loudness"][0][0]["peak_db"], r["result"]["loudness"][0][1]["peak_db"], r["result"]["loudness"][0][0]["rms_db"])')
read -r lp rp lr <<<"$L"
near "$lp" -6.02 0.1 && near "$rp" -12.04 0.1 && near "$lr" -9.03 0.1 ||
  nb_fail "loudness of the input: $L"
nb_assert_eq "wav 16000 2 16000 1000" "$(res format rate channels frames duration_ms)"

# normalize: the output's peak is the target.
run '{"ops": [{"op": "normalize", "peak": -3}], "format": "flac"}' "$T/short.wav"
near "$(res peak_db)" -3 0.05 || nb_fail "normalize to -3 dBFS: $(res peak_db)"
# gain, mono, resample, trim and fade together, measured by loudness at
# the end: mono of 0.5 and 0.25 is 0.375 (-8.52 dBFS), +2 dB is -6.52.
run '{"ops": [{"op": "gain", "db": 2}, {"op": "mono"}, {"op": "resample", "rate": 8000}, {"op": "trim", "start": 100, "end": 600}, {"op": "loudness"}], "format": "wav"}' "$T/short.wav"
nb_assert_eq "8000 1 4000 500" "$(res rate channels frames duration_ms)" "mono, 8 kHz, 500 ms"
near "$(jget 'r["result"]["loudness"][0][0]["peak_db"]')" -6.52 0.15 ||
  nb_fail "gain after mono: $(jget 'r["result"]["loudness"]')"
# fade: the first and last 100 ms rise from and fall to silence, which a
# loudness after a trim to the first 10 ms shows (near -inf).
run '{"ops": [{"op": "fade", "in": 100, "out": 100}, {"op": "trim", "end": 10}, {"op": "loudness"}]}' "$T/short.wav"
python3 -c 'import sys; sys.exit(float(sys.argv[1]) > -25)' \
  "$(jget 'r["result"]["loudness"][0][0]["peak_db"]')" ||
  nb_fail "the fade in did not start from silence: $(jget 'r["result"]["loudness"]')"

# Each output format, read back by the module (its own decoder).
for fmt in wav flac ogg opus mp3; do
  rate=16000
  [[ $fmt == opus ]] && rate=24000
  run "{\"ops\": [{\"op\": \"resample\", \"rate\": $rate}], \"format\": \"$fmt\", \"quality\": 0.6}" "$T/short.wav"
  [[ $(code) == 0 ]] || nb_fail "format $fmt: ${J:0:300}"
  jget 'open(sys.argv[2], "wb").write(__import__("base64").b64decode(r["data_b64"]))' "$T/out.$fmt" >/dev/null
  run '{"ops": [{"op": "loudness"}]}' "$T/out.$fmt"
  [[ $(code) == 0 ]] || nb_fail "reading back $fmt: ${J:0:300}"
  nb_assert_eq "$fmt" "$(res format)" "the default format follows the input"
  near "$(jget 'r["result"]["loudness"][0][0]["peak_db"]')" -6.02 1.0 ||
    nb_fail "$fmt lost the level: $(jget 'r["result"]["loudness"]')"
done

# A blob input (2 s, more than a message): and the cache for a repeat.
up=$("$NIMBUS_BIN/nb-blob" upload "$T/mid.wav")
hex=$(cut -d' ' -f2 <<<"$up")
args="{\"blob\": \"$hex\", \"ops\": [{\"op\": \"mono\"}, {\"op\": \"normalize\"}], \"format\": \"flac\"}"
J=$(call process.audio "$args")
nb_assert_eq "44100 1 88200 False" "$(res rate channels frames cached)" "blob input"
out=$(res blob)
J=$(call process.audio "$args")
nb_assert_eq "True $out" "$(res cached blob)" "the same request again"
nb_assert_eq 1 "$(grep -c 'process.audio.*answered from the cache' "$NB_DIR/worker-1/log")"
J=$(call blob.get "{\"blob\": \"$out\", \"offset\": 0, \"length\": 16}")
nb_assert_eq 0 "$(code)" "the result blob is readable by its terminal"

head -c 4000 /dev/urandom >"$T/noise.bin"
# The CLI's verb: upload, task, verified download, in one.
out=$(nb_agent audio "$T/mid.wav" "$T/cli.flac" --op mono --op normalize:peak=-2 --json)
[[ $(head -c 4 "$T/cli.flac") == fLaC ]] || nb_fail "nimbus-agent audio wrote no FLAC: $out"
J="{\"result\": $out}"
nb_assert_eq "flac 1 88200" "$(res format channels frames)" "nimbus-agent audio's result"
nb_agent audio "$T/mid.wav" "$T/x.wav" --op swirl >/dev/null 2>&1 && nb_fail "a bad op passed"
nb_agent audio "$T/noise.bin" "$T/x.wav" --op mono >/dev/null 2>&1 || st=$?
nb_assert_eq 7 "${st:-0}" "nimbus-agent audio of what is not sound: exit 7"

# Failures.
run '{"ops": [{"op": "swirl"}]}' "$T/short.wav"
nb_assert_eq 400 "$(code)" "unknown op"
run '{"ops": [{"op": "gain", "db": 99}]}' "$T/short.wav"
nb_assert_eq 400 "$(code)" "gain out of range"
[[ $(jget 'r["error"]') == *"ops[0].db"* ]] || nb_fail "the 400 names the parameter: ${J:0:300}"
run '{"ops": [{"op": "mono"}], "format": "aac"}' "$T/short.wav"
nb_assert_eq 415 "$(code)" "unknown format"
run '{"ops": [{"op": "resample", "rate": 44100}], "format": "opus"}' "$T/short.wav"
nb_assert_eq 415 "$(code)" "opus at 44.1 kHz"
run '{"ops": [{"op": "mono"}]}' "$T/noise.bin"
nb_assert_eq 415 "$(code)" "not sound"
# A header claiming an hour that the file does not hold: refused (422),
# or read for what it holds (libsndfile bounds the data chunk by the
# file), never an hour of frames that are not there.
run '{"ops": [{"op": "mono"}]}' "$T/liar.wav"
c=$(code)
[[ $c == 422 || ($c == 0 && $(res frames) == 16000) ]] ||
  nb_fail "a header claiming an hour: ${J:0:300}"
run '{"ops": [{"op": "mono"}]}' "$T/long.wav"
nb_assert_eq 413 "$(code)" "3 s over max_duration_ms 2500"
nb_alive "$(nb_pids | awk '$1 == "worker-1" {print $2}')" || nb_fail "the worker died"
nb_log "audio: ops measured, 5 formats, blob input, cache, failures"
