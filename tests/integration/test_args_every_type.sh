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

# Each type's argument names come from its section of schemas/SPEC.md
# (the Args: tables and sentences), so a new service is covered without an
# edit here, and a type the workers serve that SPEC.md does not describe
# fails. Each type gets no args, then every argument at once with a value
# of one wrong kind, for three kinds. One python makes the cases, one
# checks the replies (each start costs).
python3 - "$NIMBUS_SOURCE_DIR/schemas/SPEC.md" $types >"$NB_DIR/cases" <<'PY' ||
import json, re, sys
text = open(sys.argv[1]).read()
heads = list(re.finditer(r'^#{3,4} `([a-z][a-z0-9_.]*)`', text, re.M))
sections = {}
for i, h in enumerate(heads):
    end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
    sections[h.group(1)] = text[h.end():end]
for t in sys.argv[2:]:
    if t not in sections:
        print(f"{t} is served but schemas/SPEC.md has no section for it",
              file=sys.stderr)
        sys.exit(1)
    body = sections[t]
    at = body.find('Args:')
    names = []
    if at >= 0:
        stop = body.find('Result', at)
        part = body[at:stop if stop >= 0 else len(body)]
        names += re.findall(r'^\| `([a-z_]+)`', part, re.M)
        names += re.findall(r'`([a-z_]+)`', re.sub(r'^\|.*$', '', part, flags=re.M))
    names = [n for n in dict.fromkeys(names) if n != 'data']
    print(t + '\t{}')
    for v in (7, "x", []):
        print(t + '\t' + json.dumps({n: v for n in names}))
PY
  nb_fail "cannot make the cases from schemas/SPEC.md"
while IFS=$'\t' read -r t args; do
  r=$(nb_agent call "$t" "$args" --data-file /dev/null --timeout 10000 2>/dev/null || true)
  printf '%s\t%s\t%s\n' "$t" "$args" "${r:-none}" >>"$NB_DIR/replies"
done <"$NB_DIR/cases"
python3 - "$NB_DIR/replies" <<'PY' || nb_fail "a type did not answer as it should (above)"
import json, sys
bad = 0
for line in open(sys.argv[1]):
    t, args, reply = line.rstrip('\n').split('\t', 2)
    try:
        r = json.loads(reply)
    except ValueError:
        print(f"{t} with {args}: no final reply ({reply})", file=sys.stderr)
        bad += 1
        continue
    if not isinstance(r.get("code"), int):
        print(f"{t} with {args}: no code ({reply})", file=sys.stderr)
        bad += 1
    elif r["code"] != 0 and not r.get("error"):
        print(f"{t} with {args}: error {r['code']} without a message",
              file=sys.stderr)
        bad += 1
print(sum(1 for _ in open(sys.argv[1])), "cases", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died"
done
r=$(call ping '{}')
nb_assert_eq ok "$(jget "$r" 'r["status"]')" "ping at the end"
nb_log "ok"
