# Lua scripts run one way (storage/src/redis.c, st__eval): by EVALSHA, the
# SHA computed once per process, the text sent (EVAL) only to a server
# that does not know the script yet. A backup, its listing and reading,
# which run every script of the upload and snapshot models many times,
# then show EVALSHA for nearly every call and at most one EVAL per script
# and process (worker and janitor: two connections' worth); after SCRIPT
# FLUSH the same holds again, and the backup still completes.
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal alice
W=$NB_DIR/work
mkdir -p "$W/src/a" "$W/src/b"
for k in 1 2 3 4 5 6; do head -c $((k * 70000)) /dev/urandom >"$W/src/a/f$k"; done
head -c $((3 * 1024 * 1024)) /dev/urandom >"$W/src/b/big"

# storage/src defines 13 scripts (ST_SCRIPT); the bound leaves room for
# more without letting a script sent as text on every call pass.
maxeval=32
calls() { # COMMAND: its call count in INFO commandstats
  nb_redis INFO commandstats | tr -d '\r' |
    sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
run() { # one backup, its listing and its snapshot read
  local out
  out=$(nb_agent backup "$W/src" 2>"$W/b.err") || nb_fail "backup failed: $(cat "$W/b.err")"
  r=$(call backup.list '{}')
  nb_assert_eq ok "$(jget "$r" 'r["status"]')" "backup.list: $r"
  r=$(call backup.get '{}')
  nb_assert_eq ok "$(jget "$r" 'r["status"]')" "backup.get: $r"
}

nb_redis CONFIG RESETSTAT >/dev/null
run
eval1=$(calls eval)
sha1=$(calls evalsha)
nb_log "first run: $sha1 EVALSHA, $eval1 EVAL"
((sha1 >= 50)) || nb_fail "only $sha1 EVALSHA calls"
((eval1 <= maxeval)) || nb_fail "$eval1 EVAL calls: the scripts' text was sent again and again"
nb_assert_eq 0 "$(calls script\|load)" "SCRIPT LOAD calls"

# A server that forgot its scripts is sent them again, once.
nb_redis SCRIPT FLUSH >/dev/null
nb_redis CONFIG RESETSTAT >/dev/null
echo more >>"$W/src/a/f1"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$W/src/b/big2"
run
eval2=$(calls eval)
sha2=$(calls evalsha)
nb_log "after SCRIPT FLUSH: $sha2 EVALSHA, $eval2 EVAL"
((sha2 >= 15)) || nb_fail "only $sha2 EVALSHA calls after the flush"
((eval2 >= 1 && eval2 <= maxeval)) || nb_fail "$eval2 EVAL calls after the flush"
nb_log "ok"
