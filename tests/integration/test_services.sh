# The cloud as services: `cmake --install --component cloud` into a
# temporary prefix gives nimbus-worker@.service, which systemd-analyze
# verify accepts (skipped, saying so, where systemd-analyze is missing);
# the worker layers its config files as the unit has it (worker.conf,
# then worker-<instance>.conf when there is one, which wins); the
# production configs of broker-config/production start a real Redis (AOF
# on, a password required) and a real Mosquitto with the installed
# plugin (an account connects, an anonymous client does not), each with
# only the paths and ports of this test put in.
# ctest: once (the plain build only: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"

P=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-services.XXXXXX")
nb_on_exit "rm -rf '$P'"
D=$P/run
mkdir -p "$D"
cmake --install "$NIMBUS_BUILD_DIR" --prefix "$P" --component cloud \
  >"$D/install.log" 2>&1 ||
  { cat "$D/install.log" >&2; nb_fail "cmake --install --component cloud failed"; }
UNIT=$P/lib/systemd/system/nimbus-worker@.service
[[ -f $UNIT && -f $P/lib/sysusers.d/nimbus.conf ]] ||
  nb_fail "unit or sysusers file not installed"
[[ ! -e $P/include ]] || nb_fail "--component cloud installed the headers"
grep -qx "ExecStart=$P/bin/nimbus-worker --config /etc/nimbus/worker.conf --config-if-exists /etc/nimbus/worker-%i.conf" "$UNIT" ||
  nb_fail "the unit does not start the installed worker: $(grep ExecStart "$UNIT")"
for k in Restart=on-failure User=nimbus NoNewPrivileges=yes \
         ProtectSystem=strict StateDirectory=nimbus/blobs; do
  grep -qx "$k" "$UNIT" || nb_fail "the unit has no $k"
done

if command -v systemd-analyze >/dev/null; then
  # Any complaint counts, not only the exit status (an unknown setting is
  # a warning).
  for u in "$UNIT" "$(dirname "$UNIT")/nimbus-worker@1.service"; do
    out=$(systemd-analyze verify "$u" 2>&1) ||
      nb_fail "systemd-analyze verify ${u##*/}: $out"
    [[ -z $out ]] || nb_fail "systemd-analyze verify ${u##*/} complains: $out"
  done
else
  nb_log "systemd-analyze not installed: the unit is not verified"
fi

# The layering the unit relies on: the instance's file wins over
# worker.conf, a missing one is fine, a missing --config is not.
printf 'mqtt_port = 1999\nredis_password = s3cret\ntypes = ping\n' >"$D/worker.conf"
printf 'types = process.image\n' >"$D/worker-image.conf"
W=$P/bin/nimbus-worker
out=$("$W" --config "$D/worker.conf" --config-if-exists "$D/worker-image.conf" --print-config)
nb_assert_eq "1999 process.image (set)" \
  "$(awk -F' = ' '$1 == "mqtt_port" {p=$2} $1 == "types" {t=$2} $1 == "redis_password" {r=$2} END {print p, t, r}' <<<"$out")" \
  "worker.conf + worker-image.conf"
grep -q s3cret <<<"$out" && nb_fail "--print-config shows the password"
out=$("$W" --config "$D/worker.conf" --config-if-exists "$D/worker-2.conf" --print-config)
grep -qx 'types = ping' <<<"$out" || nb_fail "without worker-2.conf: $out"
out=$("$W" --config "$D/nope.conf" --print-config 2>&1) &&
  nb_fail "a missing --config file was accepted"
[[ $out == *"cannot read config file $D/nope.conf"* ]] || nb_fail "missing --config: $out"

# A port free now, below Linux's ephemeral range (32768 up), so that no
# outgoing connection of another test takes it meanwhile (scripts/stack
# picks its ports the same way); a server that still loses the race is
# started again on another one.
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % 22000))
    [[ -n $(ss -Htln "sport = :$p" 2>/dev/null) ]] || { echo "$p"; return; }
  done
}

# Redis with the production config, only its address and places moved.
REDIS_PW=$(sed -n 's/^requirepass //p' "$P/share/doc/nimbus/examples/redis.conf")
for try in 1 2 3 4 5; do
  RP=$(free_port)
  : >"$D/redis.log"
  redis-server "$P/share/doc/nimbus/examples/redis.conf" --port "$RP" \
    --bind 127.0.0.1 --dir "$D" --logfile "$D/redis.log" --supervised no \
    --daemonize no &
  redis_pid=$!
  nb_on_exit "kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null || true"
  nb_wait_for "REDISCLI_AUTH='$REDIS_PW' redis-cli -p $RP ping | grep -q PONG || ! kill -0 $redis_pid 2>/dev/null" 10 || true
  kill -0 "$redis_pid" 2>/dev/null && break
  grep -q "Address already in use" "$D/redis.log" ||
    nb_fail "redis-server with the production config did not start: $(tail -n5 "$D/redis.log")"
  nb_log "redis port $RP was taken meanwhile; trying another"
done
REDISCLI_AUTH=$REDIS_PW redis-cli -p "$RP" ping | grep -q PONG ||
  nb_fail "redis-server with the production config did not start: $(tail -n5 "$D/redis.log")"
nb_assert_eq "yes noeviction" \
  "$(REDISCLI_AUTH=$REDIS_PW redis-cli -p "$RP" config get appendonly | tail -n1) $(REDISCLI_AUTH=$REDIS_PW redis-cli -p "$RP" config get maxmemory-policy | tail -n1)" \
  "production redis: AOF and eviction"
[[ $(redis-cli -p "$RP" get x 2>&1) == *NOAUTH* ]] ||
  nb_fail "production redis answers without the password"

# Mosquitto with the production config and the installed plugin.
"$P/bin/nimbusctl" --accounts "$D/accounts" account add w1 --role worker \
  --password pw-w1 >/dev/null || nb_fail "nimbusctl account add"
# A plugin of a sanitizer build needs its runtime loaded first in the
# uninstrumented mosquitto, as scripts/stack does it (and mosquitto's own
# leaks at exit are not the plugin's).
menv=()
rt=$(ldd "$P/lib/nimbus/nimbus_auth.so" | awk '/lib(asan|tsan)\.so/ {print $3; exit}')
if [[ -n $rt ]]; then
  printf 'leak:%s\n' mosquitto__malloc mosquitto__calloc mosquitto__realloc \
    mosquitto__strdup >"$D/lsan.supp"
  menv=("LD_PRELOAD=$rt" "LSAN_OPTIONS=suppressions=$D/lsan.supp:print_suppressions=0")
fi
for try in 1 2 3 4 5; do
  MP=$(free_port)
  sed -e "s|^listener 1883\$|listener $MP 127.0.0.1|" \
      -e "s|^plugin /usr/local/lib/nimbus/nimbus_auth.so\$|plugin $P/lib/nimbus/nimbus_auth.so|" \
      -e "s|^plugin_opt_accounts .*|plugin_opt_accounts $D/accounts|" \
      -e "s|^persistence_location .*|persistence_location $D/|" \
      -e "/^log_dest syslog\$/d" \
      -e "s|^log_dest file .*|log_dest file $D/mosquitto.log|" \
      -e "s|^pid_file .*|pid_file $D/mosquitto.pid|" \
      -e "s|^user mosquitto\$|user $(id -un)|" \
      "$P/share/doc/nimbus/examples/mosquitto.conf" >"$D/mosquitto.conf"
  : >"$D/mosquitto.log"
  env "${menv[@]+"${menv[@]}"}" mosquitto -c "$D/mosquitto.conf" >"$D/mosquitto.out" 2>&1 &
  mosq_pid=$!
  nb_on_exit "kill $mosq_pid 2>/dev/null; wait $mosq_pid 2>/dev/null || true"
  nb_wait_for "mosquitto_pub -p $MP -V 5 -u w1 -P pw-w1 -i w1 -t cloud/v1/monitor/worker/w1 -n -q 1 || ! kill -0 $mosq_pid 2>/dev/null" 10 || true
  kill -0 "$mosq_pid" 2>/dev/null && break
  grep -q "Address already in use" "$D/mosquitto.out" "$D/mosquitto.log" ||
    nb_fail "production mosquitto did not start: $(cat "$D/mosquitto.out"; tail -n5 "$D/mosquitto.log")"
  nb_log "mosquitto port $MP was taken meanwhile; trying another"
done
nb_assert_eq 8 "$(diff "$P/share/doc/nimbus/examples/mosquitto.conf" "$D/mosquitto.conf" | grep -c '^<')" \
  "lines of the production mosquitto.conf changed for the test"
mosquitto_pub -p "$MP" -V 5 -u w1 -P pw-w1 -i w1 -t cloud/v1/monitor/worker/w1 -n -q 1 ||
  nb_fail "production mosquitto: the worker account cannot publish: $(cat "$D/mosquitto.out"; tail -n5 "$D/mosquitto.log")"
mosquitto_pub -p "$MP" -V 5 -t x -n -q 1 2>/dev/null &&
  nb_fail "production mosquitto accepts an anonymous client"
grep -q "nimbus" "$D/mosquitto.log" || nb_fail "the plugin said nothing at start: $(cat "$D/mosquitto.log")"
nb_log "unit verified; production redis and mosquitto started"
