# Ping round trip through real mosquitto + redis-server + worker; what ping
# advertises; wrong credentials are refused with exit 3.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal alice

out=$(nb_agent ping) || nb_fail "ping failed: $out"
[[ $out == "pong from "* ]] || nb_fail "unexpected ping output: $out"

json=$(nb_agent ping --json) || nb_fail "ping --json failed"
for want in '"versions":[1]' '"ping"' '"task.status"' '"task.cancel"' \
            '"max_inflight":64' '"segment":262144' '"lease":10000'; do
  [[ $json == *"$want"* ]] || nb_fail "ping result lacks $want: $json"
done

set +e
NIMBUS_PASSWORD=wrong nb_agent ping >/dev/null 2>&1
rc=$?
set -e
nb_assert_eq 3 "$rc" "exit status with a wrong password"
nb_log "ok"
