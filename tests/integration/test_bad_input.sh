# Garbage payload, wrong version, unknown type, missing args and an oversized
# task each get an error reply (400 / 413) a person can read, with the id
# echoed when one could be read, and the worker still answers the next ping.
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal bob

out=$NB_DIR/replies.hex
nb_sub_bg "$out" -u bob -P "$NIMBUS_PASSWORD" -i bob.rawsub0001 \
  -t cloud/v1/reply/bob -F '%x'

pub() { # TOPIC-TYPE FILE
  mosquitto_pub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 \
    -u bob -P "$NIMBUS_PASSWORD" -i bob.rawpub0001 -q 1 \
    -t "cloud/v1/task/$1/bob" -f "$2"
}
hex() { printf '%s' "$1" | xxd -p | tr -d '\n'; }
id1=badinput-0000000001
id2=badinput-0000000002
id3=badinput-0000000003

printf 'garbage' >"$NB_DIR/garbage"
# {"v": 2, "id": id1}
printf '\x82\xa1v\x02\xa2id\xb3%s' "$id1" >"$NB_DIR/v2"
# {"v": 1, "id": id2} to a type nobody serves
printf '\x82\xa1v\x01\xa2id\xb3%s' "$id2" >"$NB_DIR/unknown"
# task.status without its required arg
printf '\x82\xa1v\x01\xa2id\xb3%s' "$id3" >"$NB_DIR/noargs"
# 300 KiB of data: over the 272 KiB a task may have
python3 - "$NB_DIR/big" <<'PY'
import sys
data = b"x" * (300 * 1024)
tid = b"badinput-0000000004"
body = b"\x83\xa1v\x01\xa2id" + bytes([0xa0 | len(tid)]) + tid + b"\xa4data\xc6" + len(data).to_bytes(4, "big") + data
open(sys.argv[1], "wb").write(body)
PY

pub ping "$NB_DIR/garbage"
pub ping "$NB_DIR/v2"
pub no.such.type "$NB_DIR/unknown"
pub task.status "$NB_DIR/noargs"
pub ping "$NB_DIR/big"

nb_wait_for "[ \$(wc -l <'$out') -ge 5 ]" 10 ||
  nb_fail "expected 5 replies, got $(wc -l <"$out")"

code400=$(hex $'\xa4code\xcd\x01\x90')
code413=$(hex $'\xa4code\xcd\x01\x9d')
grep -q "$(hex $'\xa2id\xa0')" "$out" || nb_fail "garbage: no reply with id \"\""
for id in $id1 $id2 $id3; do
  line=$(grep "$(hex "$id")" "$out") || nb_fail "no reply echoing $id"
  [[ $line == *"$code400"* ]] || nb_fail "reply to $id is not a 400"
done
line=$(grep "$(hex badinput-0000000004)" "$out") || nb_fail "no reply to the big task"
[[ $line == *"$code413"* ]] || nb_fail "the 300 KiB task did not get 413"
[[ $(grep -c "$code400" "$out") -eq 4 ]] || nb_fail "expected four 400s"
grep -q "$(hex 'must be 1')" "$out" || nb_fail "wrong v: the message does not say v must be 1"
grep -q "$(hex 'no.such.type')" "$out" || nb_fail "unknown type: the message does not name it"
grep -q "$(hex 'args.task')" "$out" || nb_fail "missing arg: the message does not name args.task"

nb_agent ping >/dev/null || nb_fail "the worker no longer answers ping"
log=$NB_DIR/worker-1/log
[[ $(grep -c 'WK-BAD-TASK' "$log") -eq 2 ]] ||
  nb_fail "each malformed task should be logged once: $(grep -c WK-BAD-TASK "$log")"
nb_log "ok"
