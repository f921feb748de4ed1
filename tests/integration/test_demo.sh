# `scripts/run --demo`, the first command a new user runs, as they run it:
# it builds (nothing to do here), starts a stack in --dir, calls every task
# type the workers serve, backs up a small phone's data, restores it into
# an empty directory, compares, stops everything and exits 0. The suite
# otherwise never runs scripts/run; a crash the demo finds (a handler
# dying on `{}`) must fail here first.
# ctest: once (the plain build only: the demo calls the handlers the other
# tests call under the sanitizers; see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"

# The stack scripts/run starts lives here; lib.sh's exit handler stops it
# if the test is cut short, scans its logs for sanitizer reports and
# removes it.
NB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-test_demo.XXXXXX")
out=$NB_DIR.out
nb_on_exit "rm -f '$out'"

rc=0
timeout 240 "$NIMBUS_SOURCE_DIR/scripts/run" --demo --dir "$NB_DIR" >"$out" 2>&1 || rc=$?
if ((rc != 0)); then
  cat "$out" >&2
  nb_fail "scripts/run --demo exited $rc"
fi

grep -q '^nimbus ready: broker 127\.0\.0\.1:[0-9]*, redis ' "$out" ||
  { cat "$out" >&2; nb_fail "no ready line"; }
summary=$(grep -E '^demo: [0-9]+ ok, [0-9]+ failed$' "$out") ||
  { cat "$out" >&2; nb_fail "no summary line"; }
nb_assert_eq 0 "$(sed -E 's/.*, ([0-9]+) failed/\1/' <<<"$summary")" "failed demo steps"
# ping twice, every served type once, backup, backups, restore, compare;
# share, fetch, compare; compress, decompress, compare.
served=$(sed -n 's/^task types served: //p' "$out" | wc -w)
((served >= 3)) || nb_fail "ping listed $served task types"
nb_assert_eq "$((served + 12))" "$(sed -E 's/^demo: ([0-9]+) ok.*/\1/' <<<"$summary")" "demo steps ok"
for step in 'nimbus-agent backup --label demo' 'nimbus-agent backups' \
            'nimbus-agent restore' 'restored files equal the backed-up ones' \
            'nimbus-agent share' 'nimbus-agent fetch' 'the fetched share equals the file' \
            'nimbus-agent doc messages.sms.jsonl' 'compressed and back, byte for byte'; do
  grep -E "^  $step.* ok$" "$out" >/dev/null || { cat "$out" >&2; nb_fail "step not ok: $step"; }
done
# Nothing the run started outlives it: every server it began was given a
# path under --dir (scripts/stack removes its pid list on stop).
left=$(pgrep -a -f "$NB_DIR/" || true)
[[ -z $left ]] || nb_fail "still running after scripts/run exited: $left"
diff -r "$NB_DIR/demo/phone" "$NB_DIR/demo/restored/phone" >/dev/null ||
  nb_fail "restored files differ"
exit 0
