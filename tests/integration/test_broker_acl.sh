# The broker's rules hold on a whole stack (real workers, real agent):
# a terminal can neither join the workers' shared group, nor read the
# tasks re-routed to the unserved topics, nor read another terminal's
# replies, and while it tries no task is lost (20 pings and a task of a
# type nobody serves, all answered well inside the agent's first re-send);
# it cannot publish on the unserved topics either; a terminal cannot use a
# client id that is not its own; an account added while the broker runs
# connects at once, a deleted one no longer can. First runs
# broker-config/selftest.sh (the plugin's full rule table against a broker
# of its own made from the same template).
source "$(dirname "$0")/lib.sh"

PFX=cloud/v1

# --- the broker engineer's rule checks ----------------------------------
selftest=$NIMBUS_SOURCE_DIR/broker-config/selftest.sh
[[ -f $selftest ]] || nb_fail "missing $selftest"
# In the sanitizer build the plugin needs the ASan runtime preloaded into
# mosquitto (scripts/stack does the same); the clients selftest.sh runs
# then get it too, so leak checks are off for them all.
asan=$(ldd "$NIMBUS_BUILD_DIR/lib/nimbus_auth.so" 2>/dev/null | awk '/libasan\.so/ {print $3; exit}')
selftest_env=()
if [[ -n $asan ]]; then
  selftest_env=("LD_PRELOAD=$asan" "ASAN_OPTIONS=detect_leaks=0")
fi
if ! out=$(env "${selftest_env[@]+"${selftest_env[@]}"}" \
    timeout 120 bash "$selftest" "$NIMBUS_BUILD_DIR" 2>&1); then
  echo "$out" >&2
  nb_fail "broker-config/selftest.sh failed"
fi
nb_log "selftest: $(tail -n1 <<<"$out")"

# --- on the stack --------------------------------------------------------
nb_stack_up 2
nb_terminal bob
BOB_PW=$NIMBUS_PASSWORD
nb_terminal alice
ALICE_PW=$NIMBUS_PASSWORD

mq_args=(-h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" -V 5 -q 1 -d)
bg_pids=()
kill_bg() {
  local p
  for p in "${bg_pids[@]+"${bg_pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
}
nb_on_exit kill_bg

# A terminal that tries to swallow tasks: its own reply topic is granted,
# the workers' shared group and bob's replies are refused (0x87). It stays
# connected, listening, while alice's pings run.
stdbuf -oL mosquitto_sub "${mq_args[@]}" -v -u alice -P "$ALICE_PW" \
  -i alice.thief0001 -t "$PFX/reply/alice" \
  -t "\$share/nimbus-ping/$PFX/task/ping/+" -t "$PFX/reply/bob" \
  -t "\$share/nimbus-ping/$PFX/task/+/+" \
  -t "\$share/nimbus-unserved/$PFX/unserved/+/+" -t "$PFX/unserved/#" \
  >"$NB_DIR/thief.out" 2>&1 &
bg_pids+=($!)
nb_wait_for "grep -q '^Subscribed (mid: 1):' '$NB_DIR/thief.out'" 10 ||
  nb_fail "thief: no SUBACK: $(cat "$NB_DIR/thief.out")"
suback=$(sed -n 's/^Subscribed (mid: 1): //p' "$NB_DIR/thief.out")
nb_assert_eq "1, 135, 135, 135, 135, 135" "$suback" "SUBACK reason codes for alice"

# The same from bob, a second would-be thief (a plain MQTT 3.1.1 client
# this time: SUBACK failure 0x80).
stdbuf -oL mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
  -V 311 -q 1 -d -v -u bob -P "$BOB_PW" -i bob.thief0001 \
  -t "$PFX/reply/bob" -t "\$share/nimbus-ping/$PFX/task/ping/+" \
  >"$NB_DIR/thief2.out" 2>&1 &
bg_pids+=($!)
nb_wait_for "grep -q '^Subscribed (mid: 1):' '$NB_DIR/thief2.out'" 10 ||
  nb_fail "thief2: no SUBACK: $(cat "$NB_DIR/thief2.out")"
nb_assert_eq "1, 128" "$(sed -n 's/^Subscribed (mid: 1): //p' "$NB_DIR/thief2.out")" \
  "SUBACK reason codes for bob (MQTT 3.1.1)"

# 20 pings, each answered within 5 s: a task handed to a thief would only
# come back through the agent's re-send, 30 s later.
for i in $(seq 20); do
  out=$(nb_agent ping --timeout 5000 2>&1) || nb_fail "ping $i of 20 not answered (exit $?): $out"
done
set +e
out=$(nb_agent call no.such.type '{}' --timeout 5000 2>&1)
rc=$?
set -e
[[ $rc == 1 && $out == *'"code":400'* ]] ||
  nb_fail "a task of a type nobody serves: exit $rc: $out"
nb_log "20 of 20 pings and a task of an unserved type answered with two thieves subscribed"
# Both would-be thieves are still connected and never saw a task.
for p in "${bg_pids[@]}"; do nb_alive "$p" || nb_fail "a thief subscriber was disconnected"; done
if grep -q -e "^$PFX/task/" -e "PUBLISH.*$PFX/task/" -e "^$PFX/unserved/" \
    -e "PUBLISH.*$PFX/unserved/" "$NB_DIR/thief.out" "$NB_DIR/thief2.out"; then
  nb_fail "a terminal received a task: $(grep -e "$PFX/task/" -e "$PFX/unserved/" "$NB_DIR"/thief*.out | head -3)"
fi
# alice's own replies reached her listening session too (same topic as
# the agent's): the grant of reply/alice is real.
grep -q "^$PFX/reply/alice " "$NB_DIR/thief.out" ||
  nb_fail "alice's subscriber never saw her replies"
kill_bg
bg_pids=()

# A terminal cannot put a task on the unserved topics itself (PUBACK 0x87).
printf '\x82\xa1v\x01\xa2id\xb3forged-unserved-0001' >"$NB_DIR/forged"
out=$(timeout 10 mosquitto_pub "${mq_args[@]}" -u alice -P "$ALICE_PW" \
  -i alice.forger0001 -t "$PFX/unserved/task.status/alice" \
  -f "$NB_DIR/forged" 2>&1 || true)
[[ $out == *"received PUBACK (Mid: 1, RC:135)"* ]] ||
  nb_fail "alice published on an unserved topic: $out"
if grep -q "forged-unserved" "$NB_DIR"/worker-*/log; then
  nb_fail "a worker saw the forged task"
fi
nb_log "a terminal cannot publish on $PFX/unserved/ (PUBACK 0x87)"

# --- client ids ----------------------------------------------------------
connect_as() { # USER PASSWORD CLIENT_ID: CONNACK outcome in $OUT
  OUT=$(timeout 10 mosquitto_sub "${mq_args[@]}" -u "$1" -P "$2" -i "$3" \
    -t "$PFX/reply/$1" -E -W 5 2>&1) && return 0
  return 1
}
connect_as alice "$ALICE_PW" alice.device0001 || nb_fail "alice with her own client id refused: $OUT"
for id in other.device0001 bob.device0001 alice alice.short; do
  if connect_as alice "$ALICE_PW" "$id"; then nb_fail "alice connected as client $id"; fi
  [[ $OUT == *"CONNACK (135)"* || $OUT == *"not authorised"* ]] ||
    nb_fail "client id $id: expected CONNACK 0x87, got: $OUT"
done
nb_log "a terminal cannot use another's client id (other.device0001, bob.device0001, ...)"

# --- accounts added and deleted live -------------------------------------
(
  nb_terminal carol
  out=$(nb_agent ping --timeout 5000 2>&1) || { echo "carol's first ping failed: $out" >&2; exit 1; }
) || nb_fail "a terminal added while the broker runs cannot work at once"
eval "$(nb_stack terminal "$NB_DIR" carol 2>/dev/null)"  # new password
CAROL_PW=$NIMBUS_PASSWORD
NIMBUS_TERMINAL=carol NIMBUS_PASSWORD=$CAROL_PW NIMBUS_STATE_DIR=$NB_DIR/terminals/carol \
  nb_agent ping --timeout 5000 >/dev/null 2>&1 || nb_fail "carol's reset password does not work"
"$NIMBUS_BIN/nimbusctl" --accounts "$NIMBUS_ACCOUNTS" terminal del carol >/dev/null ||
  nb_fail "nimbusctl terminal del carol failed"
set +e
NIMBUS_TERMINAL=carol NIMBUS_PASSWORD=$CAROL_PW NIMBUS_STATE_DIR=$NB_DIR/terminals/carol \
  nb_agent ping --timeout 5000 >/dev/null 2>&1
rc=$?
set -e
nb_assert_eq 3 "$rc" "nimbus-agent exit status for a deleted terminal"
if connect_as carol "$CAROL_PW" carol.device0001; then nb_fail "deleted carol still connects"; fi
nb_log "accounts: added live works at once, deleted live is refused"
