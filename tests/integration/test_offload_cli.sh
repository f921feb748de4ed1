# nimbus-agent image without the image module, so it runs on every
# machine: arguments and op syntax are refused with exit status 2 (and an
# input that is not there with 5) before anything connects (the broker's
# port is dead and --timeout long, so a connection attempt would show as a
# wait and exit 3); against a worker told to serve `modules = image` from
# an empty modules_dir, the cloud's 503 sentence is printed and the exit
# status is 9, whether the input is uploaded, named by --blob or taken
# from a snapshot with --from-backup; OUT is neither made nor left with a
# part file, and one that was there stays as it was; --from-backup with no
# snapshot, or a name the snapshot lacks, is 5; ping keeps working.
source "$(dirname "$0")/lib.sh"
W=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-offload-cli.XXXXXX")
nb_on_exit "rm -rf '$W'"
cd "$W"
printf 'not really a picture' >in.jpg

# expect STATUS TEXT CMD...: CMD exits STATUS and says TEXT on stderr.
expect() {
  local want=$1 text=$2 rc=0
  shift 2
  "$@" >out.txt 2>err.txt || rc=$?
  [[ $rc == "$want" ]] ||
    nb_fail "$* exited $rc, not $want: $(cat err.txt out.txt)"
  grep -qF -- "$text" err.txt || nb_fail "$*: no \"$text\" in: $(cat err.txt)"
}

# ---- Refused before any connection -----------------------------------------
# A closed port and a minute to connect: only a check made before
# connecting exits at once with 2.
dead=(--host 127.0.0.1 --port 1 --terminal nobody --password x --timeout 60000)
t0=$SECONDS
expect 2 'op 1 ("blur:sigma"): "sigma" has no value (write KEY=VALUE)' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op blur:sigma
expect 2 'op 2 ("resize:width=800,,fit=fill"): an empty parameter' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op strip \
  --op resize:width=800,,fit=fill
expect 2 'the op'"'"'s name must be' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op Blur:sigma=4
expect 2 '"op" is the op'"'"'s name' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op blur:op=4
expect 2 'parameter "sigma" is given twice' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op blur:sigma=1,sigma=2
expect 2 'give at least one --op' nb_agent "${dead[@]}" image in.jpg out.jpg
expect 2 '--op needs a value' nb_agent "${dead[@]}" image in.jpg out.jpg --op
ops=()
for i in $(seq 33); do ops+=(--op strip); done
expect 2 '33 ops; a task takes at most 32' \
  nb_agent "${dead[@]}" image in.jpg out.jpg "${ops[@]}"
expect 2 'takes IN and OUT' nb_agent "${dead[@]}" image in.jpg --op strip
expect 2 'takes only OUT' \
  nb_agent "${dead[@]}" image --blob "$(printf %064d 0)" in.jpg out.jpg --op strip
expect 2 'not both' nb_agent "${dead[@]}" image --blob "$(printf %064d 0)" \
  --from-backup a.jpg out.jpg --op strip
expect 2 '--blob must be a blob' \
  nb_agent "${dead[@]}" image --blob ABC out.jpg --op strip
expect 2 '--quality must be a number' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op strip --quality high
expect 2 '--id must be' \
  nb_agent "${dead[@]}" image in.jpg out.jpg --op strip --id short
expect 2 'ping takes no --op' nb_agent "${dead[@]}" ping --op strip
expect 5 'nosuch.jpg: No such file or directory' \
  nb_agent "${dead[@]}" image nosuch.jpg out.jpg --op strip
mkdir adir
expect 2 'adir is not a regular file' \
  nb_agent "${dead[@]}" image adir out.jpg --op strip
expect 2 'is a directory: give OUT a file name' \
  nb_agent "${dead[@]}" image in.jpg adir --op strip
expect 2 'cannot write nodir/out.jpg' \
  nb_agent "${dead[@]}" image in.jpg nodir/out.jpg --op strip
((SECONDS - t0 < 20)) || nb_fail "the checks took $((SECONDS - t0)) s: they connected"
[[ ! -e out.jpg ]] || nb_fail "out.jpg made by a refused command"
# The help names the verb, the op syntax and every exit status.
nb_agent image --help >help.txt
for s in 'blur:sigma=S' 'resize:width=W' '--from-backup NAME' \
  '5  not found' '6  too large' '7  unsupported format' \
  '8  corrupt or truncated input' '9  the cloud cannot serve it' \
  '130  stopped by Ctrl-C' 'nimbus-agent audio'; do
  grep -qF -- "$s" help.txt || nb_fail "image --help lacks \"$s\""
done
nb_agent --help >help-all.txt
grep -q '^  image IN OUT --op OP' help-all.txt || nb_fail "--help lacks image"

# ---- A cloud without its image module --------------------------------------
mkdir "$W/no-modules"
export NIMBUS_WORKER_FLAGS="--modules image --modules-dir $W/no-modules"
nb_stack_up 1
nb_terminal alice
MISSING='error 503: the image module is not installed on this worker or does not load'

expect 9 "$MISSING" nb_agent image in.jpg out.jpg --op blur:sigma=4
grep -qF 'help: ' err.txt || nb_fail "no help line: $(cat err.txt)"
[[ ! -s out.txt ]] || nb_fail "stdout on failure: $(cat out.txt)"
[[ ! -e out.jpg && ! -e .out.jpg.part ]] || nb_fail "OUT or its part file made: $(ls -A)"
# A file already at OUT is left as it was.
printf 'keep me' >kept.jpg
expect 9 "$MISSING" nb_agent image in.jpg kept.jpg --op blur:sigma=4 --json
nb_assert_eq 'keep me' "$(cat kept.jpg)" "OUT after a failure"
# The input was uploaded on the way: --blob names it, nothing is sent.
sha=$(sha256sum in.jpg | cut -c1-64)
r=$(call blob.has "{\"blobs\": [\"$sha\"]}")
nb_assert_eq '[]' "$(jget "$r" 'r["result"]["missing"]')" "the input uploaded"
expect 9 "$MISSING" nb_agent image --blob "$sha" out.jpg --op blur:sigma=4

# --from-backup: no snapshot yet, then a name it lacks, then one it has.
expect 5 'error 404' nb_agent image --from-backup photos/a.jpg out.jpg --op strip
mkdir photos
cp in.jpg photos/a.jpg
nb_agent backup photos >/dev/null || nb_fail "backup"
expect 5 'has no item named "photos/b.jpg"' \
  nb_agent image --from-backup photos/b.jpg out.jpg --op strip
expect 9 "$MISSING" nb_agent image --from-backup photos/a.jpg out.jpg --op strip

# The worker says why once, and serves the rest.
grep -q 'WARN WK-MODULE the image module is not installed' "$NB_DIR"/worker-1/log ||
  nb_fail "no WK-MODULE line in the worker's log"
nb_agent ping >/dev/null || nb_fail "ping after the 503s"
