# Two workers in one shared group share the load: both answer some of 200
# pings, and every ping is answered.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
nb_terminal carol
out=$("$NIMBUS_BIN/nb-itest" pings 200) || nb_fail "pings failed: $out"
nb_log "answers per worker: $(echo $out)"
[[ $(echo "$out" | wc -l) -eq 2 ]] || nb_fail "expected answers from 2 workers: $out"
total=$(echo "$out" | awk '{s += $2} END {print s}')
nb_assert_eq 200 "$total" "pings answered"
echo "$out" | awk '$2 < 1 {exit 1}' || nb_fail "a worker answered none: $out"
nb_log "ok"
