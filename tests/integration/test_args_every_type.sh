# Every task type the workers serve (as ping lists them) gets a final reply
# to arguments that are missing or of the wrong type, and the worker lives
# on: a 400 a person can read, or an ordinary answer where the argument is
# optional. (A bad snapshot argument to backup.delete once killed the
# worker; `scripts/run --demo` found it, no test did.)
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal alice

r=$(call ping '{}')
types=$(jget "$r" '" ".join(r["result"]["types"])')
[[ -n $types ]] || nb_fail "ping listed no types: $r"

# Every argument name of PROTOCOL.md, each with a value of the wrong type.
wrong='{"snapshot": 5, "blob": 7, "blobs": "x", "upload": [], "offset": "x",
  "size": "q", "sha256": 1, "length": [], "items": 3, "manifest": 1,
  "label": 5, "cursor": 1, "limit": "a", "task": 9}'
for t in $types; do
  for args in '{}' "$wrong"; do
    r=$(nb_agent call "$t" "$args" --data-file /dev/null --timeout 10000 2>/dev/null || true)
    code=$(jget "$r" 'r["code"]' 2>/dev/null || true)
    [[ $code =~ ^[0-9]+$ ]] || nb_fail "$t with $args: no final reply ($r)"
    if [[ $code != 0 ]]; then
      msg=$(jget "$r" 'r.get("error", "")')
      [[ -n $msg ]] || nb_fail "$t with $args: error $code without a message"
    fi
  done
done
for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died"
done
r=$(call ping '{}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "ping at the end"
nb_log "ok"
