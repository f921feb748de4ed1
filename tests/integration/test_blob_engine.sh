# libnimbus-agent's transfer engine on its own (tests/integration/nb_blob.c):
# an upload it hashes itself, sent once and then found present; a download
# verified and renamed into place; a part file left by an earlier download
# resumed (fewer bytes fetched); and a download it gives up on (its name is
# a directory, or too long for the file system) leaves no part file behind.
source "$(dirname "$0")/lib.sh"
nb_stack_up 1
nb_terminal ivan
blob() { "$NIMBUS_BIN/nb-blob" "$@"; }

d=$NB_DIR/data
mkdir -p "$d/out"
head -c 1500000 /dev/urandom >"$d/big"
hex=$(sha256sum "$d/big" | cut -c1-64)

out=$(blob upload "$d/big") || nb_fail "upload: $out"
nb_assert_eq "ok $hex 1500000 1 1500000" "$out" "first upload"
out=$(blob upload "$d/big") || nb_fail "upload again: $out"
nb_assert_eq "ok $hex 1500000 0 0" "$out" "upload of a blob the cloud has"

cd "$d/out"
out=$(blob download "$hex" whole) || nb_fail "download: $out"
nb_assert_eq "ok $hex 1500000 1 1500000" "$out" "download"
cmp -s "$d/big" whole || nb_fail "the downloaded bytes differ"
[[ ! -e .whole.part ]] || nb_fail "the part file stayed after the rename"

# A part file with the first 600000 bytes: only the rest is fetched (the
# size given: without it the part file is started over).
head -c 600000 "$d/big" >.resumed.part
out=$(blob download "$hex" resumed 1500000) || nb_fail "resumed download: $out"
nb_assert_eq "ok $hex 1500000 1 900000" "$out" "resumed download"
cmp -s "$d/big" resumed || nb_fail "the resumed bytes differ"

# A part file another download holds (its lock: another process, a second
# restore of the same name) is left to it, untouched.
printf 'theirs' >.held.part
exec 9>>.held.part
flock -x 9
set +e
out=$(blob download "$hex" held 1500000 9>&-)
rc=$?
set -e
exec 9>&-
nb_assert_eq 1 "$rc" "exit status, a part file held by another download"
[[ $out == "error ECONFLICT 0 .held.part is being downloaded already" ]] ||
  nb_fail "a part file held by another: $out"
nb_assert_eq theirs "$(cat .held.part)" "the other download's part file"
rm -f .held.part

# A part file with another name too (a hard link) is not written through.
printf 'elsewhere' >"$d/other"
ln "$d/other" .linked.part
set +e
out=$(blob download "$hex" linked 1500000)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status, a part file with another name"
[[ $out == "error EIO 0 .linked.part has other names (hard links): not written through" ]] ||
  nb_fail "a hard-linked part file: $out"
nb_assert_eq elsewhere "$(cat "$d/other")" "the file the part file was linked to"
rm -f .linked.part

# Given up: the final name is a directory; the name is too long.
mkdir taken
set +e
out=$(blob download "$hex" taken)
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status, a directory in the way"
[[ $out == "error EIO 0 cannot rename .taken.part into place: Is a directory" ]] ||
  nb_fail "a directory in the way: $out"
[[ ! -e .taken.part ]] || nb_fail "the part file stayed for a directory in the way"
long=$(printf 'n%.0s' $(seq 252))
set +e
out=$(blob download "$hex" "$long")
rc=$?
set -e
nb_assert_eq 1 "$rc" "exit status, a name too long"
[[ $out == *"File name too long"* ]] || nb_fail "a name too long: $out"
left=$(ls -A | grep -c '\.part$' || true)
nb_assert_eq 0 "$left" "part files left in $(pwd)"
nb_log "ok"
