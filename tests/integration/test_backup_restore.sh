# nimbus-agent backup / backups / restore / forget end to end (PROTOCOL.md, Backup
# and restore): a phone-like tree (a vCard, an SMS export, photos, two of
# them identical, a 50 MB video, an empty file, a nested directory, a
# symbolic link that must be skipped) backed up, listed, and restored by a
# second device of the same terminal into an empty directory, byte for
# byte and with every mtime (ms); a second backup of the unchanged tree
# reads and sends nothing; a second restore keeps everything. Another
# terminal can neither read those blobs (blob.get 404, blob.has missing)
# nor name them in a snapshot (409), nor see the snapshot. Names the
# cloud must refuse, and a restore into a directory holding a link that
# points outside it, which must not write through the link.
# ctest: public (also on the public-API Paho build: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
W=$NB_DIR/work
mkdir -p "$W"

nb_terminal alice
A_PW=$NIMBUS_PASSWORD
nb_terminal bob
B_PW=$NIMBUS_PASSWORD
# as TERMINAL DEVICE-DIR CMD...: the agent as that terminal, with its own
# state directory (so its own device id and hash cache).
as() {
  local t=$1 st=$2 pw
  shift 2
  [[ $t == alice ]] && pw=$A_PW || pw=$B_PW
  NIMBUS_TERMINAL=$t NIMBUS_PASSWORD=$pw NIMBUS_STATE_DIR=$W/$st "$@"
}
call() { as "$1" "$2" nb_agent call "${@:3}" 2>/dev/null || true; }

# The tree.
P=$W/src/Phone
mkdir -p "$P/contacts" "$P/sms" "$P/DCIM/Camera" "$P/Movies" "$P/Documents/deep/er"
cat >"$P/contacts/all.vcf" <<'EOF'
BEGIN:VCARD
VERSION:3.0
FN:Ada Lovelace
TEL;TYPE=CELL:+44 20 7946 0000
END:VCARD
EOF
cat >"$P/sms/2025.sms.jsonl" <<'EOF'
{"address": "+4915112345678", "date": 1735689600000, "type": "inbox", "body": "Happy new year!"}
{"address": "+4915112345678", "date": 1735689660000, "type": "sent", "body": "You too \u263a"}
EOF
for i in 1 2 3; do head -c $((300000 + i * 70000)) /dev/urandom >"$P/DCIM/Camera/IMG_000$i.jpg"; done
cp "$P/DCIM/Camera/IMG_0001.jpg" "$P/DCIM/Camera/IMG_0001 (copy).JPG"
head -c $((50 * 1024 * 1024)) /dev/urandom >"$P/Movies/holiday.mp4"
printf 'notes\n' >"$P/Documents/deep/er/notes.txt"
: >"$P/Documents/empty"
ln -s ../contacts/all.vcf "$P/Documents/link.vcf"
# Distinct mtimes with ms in them.
python3 - "$P" <<'EOF'
import os, sys
t = 1700000000123
for root, dirs, files in os.walk(sys.argv[1]):
    for f in sorted(files):
        p = os.path.join(root, f)
        if not os.path.islink(p):
            t += 86400000 + 7
            os.utime(p, ns=(t * 1000000 + 456789, t * 1000000 + 456789))
EOF
nfiles=$(find "$P" -type f | wc -l)
nb_assert_eq 9 "$nfiles" "files in the tree"

# ---- backup ----
out=$(as alice dev1 nb_agent backup --label "phone 1" "$P" 2>"$W/backup1.err") ||
  nb_fail "backup failed: $(cat "$W/backup1.err")"
nb_log "backup 1: $out"
grep -q "Documents/link.vcf: a symbolic link" "$W/backup1.err" ||
  nb_fail "the link was not reported as skipped: $(cat "$W/backup1.err")"
distinct=8 # the copy of IMG_0001 is the same content
distinct_bytes=$(find "$P" -type f ! -name 'IMG_0001 (copy).JPG' -printf '%s\n' | paste -sd+ | bc)
total_bytes=$(find "$P" -type f -printf '%s\n' | paste -sd+ | bc)
nb_assert_eq "9 $total_bytes 9 0 $distinct $distinct_bytes 1 0 false" \
  "$(jf "$out" items bytes files_hashed files_cached blobs_uploaded bytes_sent skipped failed manifest)" \
  "backup 1 summary (items bytes hashed cached blobs sent skipped failed manifest)"
snap=$(jf "$out" snapshot)

# Kinds and names as committed.
r=$(call alice dev1 backup.get "{\"snapshot\": \"$snap\"}")
nb_assert_eq "Phone/DCIM/Camera/IMG_0001 (copy).JPG:photo Phone/DCIM/Camera/IMG_0001.jpg:photo Phone/DCIM/Camera/IMG_0002.jpg:photo Phone/DCIM/Camera/IMG_0003.jpg:photo Phone/Documents/deep/er/notes.txt:file Phone/Documents/empty:file Phone/Movies/holiday.mp4:video Phone/contacts/all.vcf:contact Phone/sms/2025.sms.jsonl:sms" \
  "$(jget "$r" '" ".join(i["name"] + ":" + i["kind"] for i in sorted(r["result"]["items"], key=lambda i: i["name"]))')" \
  "items of the snapshot"
nb_assert_eq "phone 1 9" "$(jget "$r" 'r["result"]["label"] + " " + str(r["result"]["count"])')" "label and count"
m=$(jget "$r" '[i["mtime"] for i in r["result"]["items"] if i["name"].endswith("all.vcf")][0]')
want_m=$(python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime_ns // 1000000)' "$P/contacts/all.vcf")
nb_assert_eq "$want_m" "$m" "mtime of all.vcf in ms"

# The listing.
l=$(as alice dev1 nb_agent backups)
nb_assert_eq "$snap phone 1 9 $total_bytes" "$(jf "$l" snapshot label items bytes)" "backups"

# ---- restore on a second device of the same terminal ----
out=$(as alice dev2 nb_agent restore "$W/restored" 2>"$W/restore1.err") ||
  nb_fail "restore failed: $(cat "$W/restore1.err")"
nb_log "restore 1: $out"
nb_assert_eq "$snap 9 0 0 $((distinct - 1))" \
  "$(jf "$out" snapshot restored kept failed blobs_downloaded)" \
  "restore 1 summary (the empty file and the copy need no download)"
rm "$P/Documents/link.vcf"
diff -r "$W/src" "$W/restored" || nb_fail "the restored tree differs"
ls -A "$W/restored/Phone/DCIM/Camera" | grep -q nimbus && nb_fail "temporary files left"
# mtimes to the ms.
python3 - "$W/src" "$W/restored" <<'EOF' || nb_fail "mtimes differ"
import os, sys
a, b = sys.argv[1], sys.argv[2]
bad = 0
for root, dirs, files in os.walk(a):
    for f in files:
        p = os.path.join(root, f)
        q = os.path.join(b, os.path.relpath(p, a))
        ma, mb = os.stat(p).st_mtime_ns // 1000000, os.stat(q).st_mtime_ns // 1000000
        if ma != mb:
            print(f"{q}: mtime {mb} ms, want {ma}", file=sys.stderr)
            bad += 1
sys.exit(1 if bad else 0)
EOF
ln -s ../contacts/all.vcf "$P/Documents/link.vcf"

# ---- the same tree again: nothing read, nothing sent ----
out=$(as alice dev1 nb_agent backup --label "phone 2" "$P" 2>/dev/null) || nb_fail "backup 2 failed"
nb_log "backup 2: $out"
nb_assert_eq "9 0 9 0 0" \
  "$(jf "$out" items files_hashed files_cached blobs_uploaded bytes_sent)" \
  "backup 2 (items hashed cached blobs sent)"
snap2=$(jf "$out" snapshot)
[[ $snap2 != "$snap" ]] || nb_fail "the second backup has the first's id"
l=$(as alice dev1 nb_agent backups)
nb_assert_eq "2 $snap2" "$(wc -l <<<"$l") $(jf "$(head -n1 <<<"$l")" snapshot)" "two snapshots, newest first"
nb_assert_eq "$snap2" "$(jf "$(as alice dev1 nb_agent backups --limit 1)" snapshot)" "backups --limit 1"

# A second restore keeps every file (checked by size and SHA-256).
out=$(as alice dev2 nb_agent restore --snapshot "$snap" "$W/restored" 2>/dev/null) || nb_fail "restore 2 failed"
nb_assert_eq "0 9 0 0" "$(jf "$out" restored kept blobs_downloaded bytes_received)" \
  "restore 2 (restored kept downloaded received)"
# A file changed in place is put right, and only its blob comes down.
printf 'tampered' | dd of="$W/restored/Phone/Documents/deep/er/notes.txt" conv=notrunc 2>/dev/null
out=$(as alice dev2 nb_agent restore "$W/restored" 2>/dev/null) || nb_fail "restore 3 failed"
nb_assert_eq "1 8 1" "$(jf "$out" restored kept blobs_downloaded)" \
  "restore 3 (restored kept downloaded)"
cmp "$P/Documents/deep/er/notes.txt" "$W/restored/Phone/Documents/deep/er/notes.txt" || nb_fail "notes.txt not put right"

# ---- another terminal ----
video=$(sha256sum "$P/Movies/holiday.mp4" | cut -c1-64)
vcf=$(sha256sum "$P/contacts/all.vcf" | cut -c1-64)
vsize=$(stat -c %s "$P/Movies/holiday.mp4")
r=$(call bob bob1 blob.get "{\"blob\": \"$video\", \"offset\": 0, \"length\": 100}")
nb_assert_eq 404 "$(jf "$r" code)" "bob's blob.get of alice's video"
r=$(call bob bob1 blob.has "{\"blobs\": [\"$video\", \"$vcf\"]}")
nb_assert_eq "['$video', '$vcf']" "$(jget "$r" 'r["result"]["missing"]')" "bob's blob.has"
r=$(call bob bob1 backup.commit "{\"items\": [{\"kind\": \"video\", \"name\": \"v.mp4\", \"blob\": \"$video\", \"size\": $vsize}]}")
nb_assert_eq "409 ['$video'] False" "$(jget "$r" 'str(r["code"]) + " " + str(r["result"]["missing"]) + " " + str(r["result"]["more"])')" \
  "bob's backup.commit naming alice's blob"
r=$(call bob bob1 backup.get "{\"snapshot\": \"$snap\"}")
nb_assert_eq 404 "$(jf "$r" code)" "bob's backup.get of alice's snapshot"
set +e
as bob bob1 nb_agent restore "$W/bob-out" >/dev/null 2>"$W/bob.err"
rc=$?
set -e
nb_assert_eq 1 "$rc" "bob's restore with no snapshot (exit status)"
grep -q "error 404" "$W/bob.err" || nb_fail "bob's restore: $(cat "$W/bob.err")"
nb_assert_eq "" "$(as bob bob1 nb_agent backups)" "bob's backups"

# ---- names the cloud refuses ----
for name in '../evil' '/etc/passwd' 'a//b' 'a/./b' 'a/' 'x/../../y'; do
  r=$(call alice dev1 backup.commit "{\"items\": [{\"kind\": \"contact\", \"name\": \"$name\", \"blob\": \"$vcf\", \"size\": $(stat -c %s "$P/contacts/all.vcf")}]}")
  nb_assert_eq 400 "$(jf "$r" code)" "backup.commit of the name $name: $r"
done

# ---- a link inside the target directory is never followed ----
mkdir -p "$W/outside" "$W/trap"
ln -s "$W/outside" "$W/trap/Phone"
set +e
out=$(as alice dev2 nb_agent restore --snapshot "$snap" "$W/trap" 2>"$W/trap.err")
rc=$?
set -e
nb_assert_eq 2 "$rc" "restore through a link (exit status)"
nb_assert_eq "0 9" "$(jf "$out" restored failed)" "restore through a link (restored failed)"
grep -q "Phone is not a directory" "$W/trap.err" || nb_fail "no word of the link: $(cat "$W/trap.err")"
nb_assert_eq "" "$(ls -A "$W/outside")" "files written through the link"
# forget: bob cannot delete alice's snapshot (404, nothing deleted); alice
# deletes the first one, and one that does not exist in the same call:
# the good one goes, the bad one is a 404 on stderr, exit status 1.
set +e
out=$(as bob bob1 nb_agent forget "$snap" 2>"$W/forget-bob.err")
rc=$?
set -e
nb_assert_eq 1 "$rc" "bob's forget of alice's snapshot (exit status)"
grep -q "error 404" "$W/forget-bob.err" || nb_fail "bob's forget: $(cat "$W/forget-bob.err")"
nb_assert_eq 2 "$(as alice dev1 nb_agent backups | wc -l)" "alice's snapshots after bob's forget"
set +e
out=$(as alice dev2 nb_agent forget "$snap" 1795000000000-0000000000000000 2>"$W/forget.err")
rc=$?
set -e
nb_assert_eq 1 "$rc" "forget with one unknown snapshot (exit status)"
nb_assert_eq "$snap true" "$(jf "$out" snapshot deleted)" "forget output"
grep -q "snapshot 1795000000000-0000000000000000: error 404" "$W/forget.err" ||
  nb_fail "forget of an unknown snapshot: $(cat "$W/forget.err")"
l=$(as alice dev1 nb_agent backups)
nb_assert_eq "1 $snap2" "$(wc -l <<<"$l") $(jf "$l" snapshot)" "snapshots after forget"
# The agent's own sanitizer reports (the ASan build runs these tests too).
if grep -l -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error: ' "$W"/*.err 2>/dev/null; then
  nb_fail "sanitizer report from the agent (files above)"
fi
nb_log "ok"
