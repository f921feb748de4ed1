# The README's commands, run: every fenced block right after a line
# `<!-- doc-test -->` runs, in the order of the README, in one bash with
# -euo pipefail (so a command that fails fails the test); a block after
# `<!-- doc-test file=NAME -->` is written to NAME first (e.g. the C
# program the next block compiles). They run in a directory that looks
# like the checkout after ./scripts/run: scripts/ (the real ones), build/
# (this build), var/ (a stack of their own, with its demo terminal), and
# HOME in it, so "$HOME/nimbus" is a prefix of its own.
# ctest: once (the plain build only: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal demo

W=$NB_DIR/readme
mkdir -p "$W/home"
ln -s "$NIMBUS_SOURCE_DIR/scripts" "$W/scripts"
ln -s "$NIMBUS_BUILD_DIR" "$W/build"
ln -s "$NB_DIR" "$W/var"

# The marked blocks as one script; a marker without a fence after it, or
# a fence never closed, is an error of the README.
python3 - "$NIMBUS_SOURCE_DIR/README.md" >"$W/readme.sh" <<'PY' ||
import re, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
out, i, n = [], 0, 0
while i < len(lines):
    m = re.fullmatch(r"<!-- doc-test(?: file=([A-Za-z0-9._-]+))? -->", lines[i])
    i += 1
    if not m:
        continue
    if i >= len(lines) or not lines[i].startswith("```"):
        sys.exit(f"README.md:{i}: doc-test marker without a fenced block after it")
    start = i + 1
    end = start
    while end < len(lines) and lines[end] != "```":
        end += 1
    if end == len(lines):
        sys.exit(f"README.md:{i + 1}: fenced block never closed")
    body = "\n".join(lines[start:end])
    n += 1
    out.append(f"echo '---- README.md:{start}' >&2")
    if m.group(1):
        out.append(f"cat >{m.group(1)} <<'NIMBUS_DOC_EOF'\n{body}\nNIMBUS_DOC_EOF")
    else:
        out.append(body)
    i = end + 1
if n == 0:
    sys.exit("README.md has no doc-test blocks")
print("\n".join(out))
PY
  nb_fail "cannot extract the README's doc-test blocks"
nb_log "$(grep -c '^echo .---- README.md:' "$W/readme.sh") README blocks to run"

# In a sanitizer build the library is instrumented, and so must be what
# the README compiles against it.
prelude=''
if [[ ${NIMBUS_SANITIZE:-0} == 1 ]]; then
  prelude='cc() { command cc -fsanitize=address,undefined "$@"; }'
fi
if ! (cd "$W" && HOME=$W/home bash -euo pipefail -c "$prelude
source ./readme.sh" >"$W/out" 2>&1); then
  tail -n 30 "$W/out" >&2
  nb_fail "a README block failed (its output above; README.md:LINE marks each block)"
fi
# What the blocks say they print.
grep -q '^pong from ' "$W/out" || nb_fail "no pong from the README's ping: $(cat "$W/out")"
grep -qx 'ok' "$W/out" || nb_fail "the README's hello printed no ok: $(cat "$W/out")"
[[ -x $W/home/nimbus/bin/nimbus-agent ]] ||
  nb_fail "the README's cmake --install put no nimbus-agent in \$HOME/nimbus"
