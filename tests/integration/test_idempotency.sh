# One effect per task id: the same id again gets the recorded reply and does
# nothing twice; the same id with other content is 409 (key order does not
# count); an error is not recorded; task.status and task.cancel.
source "$(dirname "$0")/lib.sh"
export NIMBUS_WORKER_FLAGS="--diag"
nb_stack_up 2
nb_terminal dave

id=idem-$(date +%s%N)
a=$(nb_agent call diag.sleep '{"ms": 10, "key": "k1"}' --id "$id") ||
  nb_fail "first call failed: $a"
b=$(nb_agent call diag.sleep '{"key": "k1", "ms": 10.0}' --id "$id") ||
  nb_fail "second call (same content, other key order) failed: $b"
nb_assert_eq "$a" "$b" "replayed reply"
[[ $a == *'"runs":1'* ]] || nb_fail "unexpected result: $a"
nb_assert_eq 1 "$(nb_redis GET nb:diag:k1)" "runs counted in Redis"

set +e
c=$(nb_agent call diag.sleep '{"ms": 11, "key": "k1"}' --id "$id" 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status for other content under the same id"
[[ $c == *'"code":409'* ]] || nb_fail "expected 409: $c"
nb_assert_eq 1 "$(nb_redis GET nb:diag:k1)" "runs after the 409"

s=$(nb_agent call task.status "{\"task\": \"$id\"}") || nb_fail "task.status: $s"
[[ $s == *'"state":"done"'* && $s == *'"runs":1'* ]] ||
  nb_fail "task.status of a done task: $s"
s=$(nb_agent call task.status '{"task": "never-seen-0000000"}')
[[ $s == *'"state":"unknown"'* ]] || nb_fail "task.status of an unknown task: $s"

# An error is not recorded: the same id runs again.
fid=fail-$(date +%s%N)
set +e
f=$(nb_agent call diag.sleep '{"key": "k2", "fail": 500}' --id "$fid" 2>/dev/null)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status of a failing task"
[[ $f == *'"code":500'* ]] || nb_fail "expected 500: $f"
s=$(nb_agent call task.status "{\"task\": \"$fid\"}")
[[ $s == *'"state":"unknown"'* ]] || nb_fail "an error was recorded: $s"
nb_assert_eq "" "$(nb_redis GET nb:diag:k2)" "effect of a failed task"

# task.cancel stops a running task at its next checkpoint: final 499.
cid=cancel-$(date +%s%N)
nb_agent call diag.sleep '{"ms": 20000, "key": "k3"}' --id "$cid" \
  --timeout 30000 >"$NB_DIR/cancel.out" 2>/dev/null &
caller=$!
nb_wait_for "nb_redis EXISTS nb:claim:dave:$cid | grep -q 1" 10 ||
  nb_fail "the long task never started"
# Asked from a second device of the terminal: the caller keeps its own
# connection meanwhile. (From the caller's own device, each command would
# take its session over; the 499 could then reach the command instead, and
# the caller, reconnecting, would run the unrecorded task again.)
probe=$NB_DIR/probe
s=$(NIMBUS_STATE_DIR=$probe nb_agent call task.status "{\"task\": \"$cid\"}")
[[ $s == *'"state":"running"'* ]] || nb_fail "task.status of a running task: $s"
s=$(NIMBUS_STATE_DIR=$probe nb_agent call task.cancel "{\"task\": \"$cid\"}")
[[ $s == *'"state":"running"'* ]] || nb_fail "task.cancel: $s"
set +e
wait $caller
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status of the cancelled task"
grep -q '"code":499' "$NB_DIR/cancel.out" || nb_fail "expected 499: $(cat "$NB_DIR/cancel.out")"
nb_assert_eq "" "$(nb_redis GET nb:diag:k3)" "effect of a cancelled task"
s=$(nb_agent call task.cancel "{\"task\": \"$id\"}")
[[ $s == *'"state":"done"'* ]] || nb_fail "task.cancel of a finished task: $s"

# A task with data: the recorded digest covers the data through its
# XXH3-128 (schemas/SPEC.md section 4), so other data is 409. A record left
# by a worker of before that digest (the SHA-256 of the canonical form
# with the data's bytes) still replays for the same content, and is still
# 409 for other data.
W=$NB_DIR/idem-data
mkdir -p "$W"
head -c 1000 /dev/urandom >"$W/seg"
head -c 1000 /dev/urandom >"$W/other"
sha=$(sha256sum "$W/seg" | cut -c1-64)
args="{\"upload\": \"idem\", \"offset\": 0, \"size\": 1000, \"sha256\": \"$sha\"}"
did=data-$(date +%s%N)
a=$(nb_agent call blob.put "$args" --data-file "$W/seg" --id "$did") || nb_fail "blob.put: $a"
b=$(nb_agent call blob.put "$args" --data-file "$W/seg" --id "$did") || nb_fail "blob.put again: $b"
nb_assert_eq "$a" "$b" "replayed reply of a task with data"
set +e
c=$(nb_agent call blob.put "$args" --data-file "$W/other" --id "$did" 2>/dev/null)
set -e
[[ $c == *'"code":409'* ]] || nb_fail "expected 409 for other data: $c"
# The canonical form [type, {sorted args}, data] with the data's bytes, by
# hand (schemas/SPEC.md section 4), and its SHA-256 as an older worker
# recorded it.
legacy_digest() { # DATA-FILE -> the digest, raw, on stdout
  python3 - "$1" "$sha" <<'PY'
import hashlib, struct, sys
data = open(sys.argv[1], "rb").read()
def s(x):
    b = x.encode()
    return (bytes([0xa0 | len(b)]) if len(b) < 32 else bytes([0xd9, len(b)])) + b
body = (b"\x93" + s("blob.put") + b"\x84" + s("offset") + b"\x00" +
        s("sha256") + s(sys.argv[2]) + s("size") + b"\xcd" +
        struct.pack(">H", 1000) + s("upload") + s("idem") +
        b"\xc5" + struct.pack(">H", len(data)) + data)
sys.stdout.buffer.write(hashlib.sha256(body).digest())
PY
}
legacy_digest "$W/seg" >"$W/digest"
nb_assert_eq 1 "$(nb_redis HEXISTS "nb:done:dave:$did" digest)" "the task's record"
nb_redis -x HSET "nb:done:dave:$did" digest <"$W/digest" >/dev/null
b=$(nb_agent call blob.put "$args" --data-file "$W/seg" --id "$did") ||
  nb_fail "blob.put against a legacy record: $b"
nb_assert_eq "$a" "$b" "replayed reply of a legacy record"
set +e
c=$(nb_agent call blob.put "$args" --data-file "$W/other" --id "$did" 2>/dev/null)
set -e
[[ $c == *'"code":409'* ]] || nb_fail "expected 409 for other data against a legacy record: $c"
nb_log "ok"
