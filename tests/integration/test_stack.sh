# scripts/stack does what docs/architecture.md says: every process up and
# recorded, redis with AOF and a password, mosquitto with TCP_NODELAY, all
# files under the stack's directory, terminal accounts usable at once,
# redis data kept across a restart, and `stop` ending every process it
# started.
# ctest: once (the plain build only: it checks scripts/stack, not memory;
# see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"

nb_stack_up 2
D=$NIMBUS_DIR

# --- every process alive, pid files per the layout ---------------------
nb_stack status "$D" >/dev/null || { nb_stack status "$D" >&2 || true; nb_fail "status: not all alive"; }
for f in broker/mosquitto.pid redis/redis.pid worker-1/pid worker-2/pid; do
  [[ -s $D/$f ]] || nb_fail "missing pid file $f"
  nb_alive "$(cat "$D/$f")" || nb_fail "process of $f is not running"
done
nb_assert_eq 4 "$(nb_pids | wc -l)" "processes recorded"
for f in env worker.conf broker/mosquitto.conf broker/accounts \
         broker/mosquitto.log redis/redis.conf redis/redis.log; do
  [[ -f $D/$f ]] || nb_fail "missing $f"
done
[[ -d $D/blobs ]] || nb_fail "missing blobs/"
grep -q "nimbus-worker ready id=w1-" "$D/worker-1/log" || nb_fail "worker-1 never said ready"
grep -q "nimbus-worker ready id=w2-" "$D/worker-2/log" || nb_fail "worker-2 never said ready"

# --- redis: AOF on, password required, our directory ------------------
nb_assert_eq "appendonly yes" "$(nb_redis config get appendonly | paste -sd' ')" "redis appendonly"
nb_assert_eq "dir $D/redis" "$(nb_redis config get dir | paste -sd' ')" "redis dir"
noauth=$(redis-cli -h "$NIMBUS_REDIS_HOST" -p "$NIMBUS_REDIS_PORT" ping 2>&1 || true)
[[ $noauth == *NOAUTH* ]] || nb_fail "redis answered without a password: $noauth"
ls "$D"/redis/appendonlydir/*.aof >/dev/null 2>&1 || nb_fail "no AOF file under $D/redis"

# --- mosquitto config --------------------------------------------------
grep -Eq '^[[:space:]]*set_tcp_nodelay[[:space:]]+true' "$D/broker/mosquitto.conf" ||
  nb_fail "mosquitto.conf lacks set_tcp_nodelay true"
! grep -Eq '@[A-Z_]+@' "$D/broker/mosquitto.conf" || nb_fail "placeholder left in mosquitto.conf"
grep -q "$NIMBUS_BUILD_DIR/lib/nimbus_auth.so" "$D/broker/mosquitto.conf" ||
  nb_fail "mosquitto.conf does not load the plugin from the build dir"
grep -q 127.0.0.1 "$D/broker/mosquitto.conf" || nb_fail "broker not bound to loopback"

# --- listening on loopback only ----------------------------------------
for p in "$NIMBUS_MQTT_PORT" "$NIMBUS_REDIS_PORT"; do
  addrs=$(ss -Htln "sport = :$p" | awk '{print $4}' | sort -u | paste -sd' ')
  nb_assert_eq "127.0.0.1:$p" "$addrs" "listeners on port $p"
done

# --- every file a process holds open is under D ------------------------
while read -r name pid; do
  for fd in /proc/"$pid"/fd/*; do
    t=$(readlink "$fd" 2>/dev/null) || continue
    [[ $t == /* ]] || continue               # sockets, pipes, anon inodes
    case $t in /dev/*|/proc/*|"$NIMBUS_BUILD_DIR"/*) continue ;; esac
    [[ $t == "$D"/* ]] || nb_fail "$name (pid $pid) holds $t open, outside $D"
  done
done < <(nb_pids)
# Data paths in the generated configs point under D too.
grep -q "^data_dir = $D/blobs\$" "$D/worker.conf" || nb_fail "worker.conf data_dir not under $D"
if grep -E '^[[:space:]]*(persistence_location|log_dest file|pid_file|password_file|acl_file)' "$D/broker/mosquitto.conf" |
   grep -v -F "$D/" | grep -q .; then
  nb_fail "mosquitto.conf names a path outside $D"
fi

# --- a terminal account works at once ----------------------------------
nb_terminal alice
nb_assert_eq alice "$NIMBUS_TERMINAL" NIMBUS_TERMINAL
[[ -n $NIMBUS_PASSWORD ]] || nb_fail "no password printed"
nb_assert_eq "$D/terminals/alice" "$NIMBUS_STATE_DIR" NIMBUS_STATE_DIR
mosquitto_sub -V 5 -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
  -u alice -P "$NIMBUS_PASSWORD" -i alice.device0001 \
  -t cloud/v1/reply/alice -E -W 5 ||
  nb_fail "terminal alice could not connect and subscribe to its reply topic"
if mosquitto_sub -V 5 -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
     -u alice -P "wrong$NIMBUS_PASSWORD" -i alice.device0001 \
     -t cloud/v1/reply/alice -E -W 5 2>/dev/null; then
  nb_fail "a wrong password was accepted"
fi
[[ -x $NIMBUS_BIN/nimbus-agent ]] || nb_fail "missing $NIMBUS_BIN/nimbus-agent"
out=$(timeout 30 "$NIMBUS_BIN/nimbus-agent" ping 2>&1) || nb_fail "nimbus-agent ping failed (exit $?): $out"
nb_log "nimbus-agent ping: $out"
[[ -s $NIMBUS_STATE_DIR/device-id ]] || nb_fail "agent kept no device id in $NIMBUS_STATE_DIR"

# --- redis data survives stop and start ---------------------------------
nb_assert_eq OK "$(nb_redis set nimbus:test:stack kept)" "redis set"
pids=$(nb_pids | awk '{print $2}')
nb_stack stop "$D" 2>/dev/null || nb_fail "stack stop failed"
for p in $pids; do
  ! nb_alive "$p" || nb_fail "pid $p still alive after stack stop"
done
[[ ! -e $D/broker/mosquitto.pid && ! -e $D/worker-1/pid ]] || nb_fail "pid files left after stop"
nb_stack status "$D" >/dev/null 2>&1 && nb_fail "status says alive after stop"

eval "$(nb_stack start "$D" --workers 1)" || nb_fail "restart in the same directory failed"
nb_assert_eq kept "$(nb_redis get nimbus:test:stack)" "redis value after restart"
# Terminal accounts survive a restart too.
mosquitto_sub -V 5 -h "$NIMBUS_MQTT_HOST" -p "$NIMBUS_MQTT_PORT" \
  -u alice -P "$NIMBUS_PASSWORD" -i alice.device0001 \
  -t cloud/v1/reply/alice -E -W 5 || nb_fail "alice refused after restart"

# --- one more worker, and kill-worker ----------------------------------
n=$(nb_stack worker "$D" 2>/dev/null) || nb_fail "stack worker failed"
nb_assert_eq 2 "$n" "number of the added worker"
nb_alive "$(cat "$D/worker-2/pid")" || nb_fail "added worker not running"
nb_stack kill-worker "$D" 2 TERM 2>/dev/null || nb_fail "kill-worker failed"
pids=$(nb_pids | awk '{print $2}')
nb_stack stop "$D" 2>/dev/null || nb_fail "second stack stop failed"
for p in $pids; do
  ! nb_alive "$p" || nb_fail "pid $p still alive after second stop"
done
