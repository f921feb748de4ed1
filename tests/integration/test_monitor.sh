# Monitoring through topic subscriptions: each worker keeps a retained JSON
# status on cloud/v1/monitor/worker/<id> (up, with its types and task
# counts); the broker publishes "down" for a worker that vanishes (its
# will), and a worker stopped by SIGTERM says "stopped". A monitor account
# may read these and nothing else.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
nb_terminal judy
"$NIMBUS_BIN/nb-itest" pings 50 >/dev/null || nb_fail "pings failed"

mon_pw=monitor-pw-0001
"$NIMBUS_BIN/nimbusctl" --accounts "$NIMBUS_ACCOUNTS" account add mon \
  --role monitor --password "$mon_pw" >/dev/null
sub() { # COUNT [TOPIC]: the first COUNT messages, within 10 s
  timeout 10 mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
    -V 5 -u mon -P "$mon_pw" -i "mon-$RANDOM" -C "$1" \
    -t "${2:-cloud/v1/monitor/#}"
}
w1=$(sed -n 's/.*ready id=\([^ ]*\).*/\1/p' "$NB_DIR/worker-1/log")
w2=$(sed -n 's/.*ready id=\([^ ]*\).*/\1/p' "$NB_DIR/worker-2/log")
# A worker publishes its status every 5 s, at its lease-renewal ticks, so
# the counts of the pings show within a round or two.
ok_sum() { grep -o '"ok":[0-9]*' | awk -F: '{s += $2} END {print s + 0}'; }
nb_wait_for '(( $(sub 2 | ok_sum) >= 50 ))' 20 || true
out=$(sub 2) || nb_fail "no retained worker status"
for w in "$w1" "$w2"; do
  line=$(grep "\"worker\":\"$w\"" <<<"$out") || nb_fail "no status of $w: $out"
  [[ $line == *'"state":"up"'* && $line == *'"types":["ping"'* ]] ||
    nb_fail "unexpected status of $w: $line"
done
total=$(ok_sum <<<"$out")
((total >= 50)) || nb_fail "task counts do not add up to the 50 pings: $out"

# A monitor reads monitor topics only.
denied=$(timeout 5 mosquitto_sub -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
  -V 5 -u mon -P "$mon_pw" -i mon-denied -t cloud/v1/reply/judy -C 1 -W 2 \
  -d 2>&1 || true)
[[ $denied == *"135"* || $denied == *"0x87"* || $denied == *"not authorised"* ||
   $denied == *"Not authorized"* ]] ||
  nb_fail "a monitor may subscribe to a terminal's replies: $denied"
nb_log "monitor refused a reply topic: $(grep -m1 -iE 'suback' <<<"$denied")"

kill -KILL "$(cat "$NB_DIR/worker-1/pid")"
nb_wait_for "sub 1 cloud/v1/monitor/worker/$w1 | grep -q '\"state\":\"down\"'" 10 ||
  nb_fail "no down status for the killed worker $w1"
nb_stack kill-worker "$NB_DIR" 2 TERM
s=$(sub 1 "cloud/v1/monitor/worker/$w2")
[[ $s == *'"state":"stopped"'* ]] || nb_fail "worker 2 did not say stopped: $s"
nb_log "ok"
