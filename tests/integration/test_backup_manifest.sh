# A backup too large to list inline (PROTOCOL.md, Backup and restore:
# `manifest`): 40,000 small files in 40 directories, most of them sharing
# four contents, go up as a handful of blobs plus a manifest blob; the
# snapshot is listed, backup.get names the manifest, and a second device
# restores all 40,000 files byte for byte (the shared contents downloaded
# once each and copied). A second backup of the unchanged tree sends
# nothing, the manifest included.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
W=$NB_DIR/work
mkdir -p "$W"
nb_terminal alice
AS=$NIMBUS_STATE_DIR


# 40 x 1000 files: four shared contents (one of them empty) and, every
# 250th file, one of its own. Written by one python process: fast.
python3 - "$W/src/Phone" <<'EOF'
import os, sys
root = sys.argv[1]
shared = [b"BEGIN:VCARD\nFN:A\nEND:VCARD\n", b"x" * 1500, os.urandom(3000), b""]
t = 1600000000000
for d in range(40):
    p = os.path.join(root, "contacts" if d < 20 else "photos", f"set{d:02d}")
    os.makedirs(p, exist_ok=True)
    for i in range(1000):
        n = d * 1000 + i
        ext = "vcf" if d < 20 else "jpg"
        data = os.urandom(100 + n % 50) if n % 250 == 0 else shared[n % 4]
        f = os.path.join(p, f"item-{i:04d}.{ext}")
        with open(f, "wb") as fh:
            fh.write(data)
        os.utime(f, ns=((t + n) * 1000000, (t + n) * 1000000 + 999999))
EOF
nb_assert_eq 40000 "$(find "$W/src" -type f | wc -l)" "files made"
uniq=160 # 40000 / 250 files of their own

out=$(nb_agent backup --label many "$W/src/Phone" 2>"$W/b1.err") || nb_fail "backup failed: $(cat "$W/b1.err")"
nb_log "backup: $out"
# The four shared contents, the unique ones and the manifest.
nb_assert_eq "40000 true 40000 $((4 + uniq + 1)) 0" \
  "$(jf "$out" items manifest files_hashed blobs_uploaded failed)" "backup (items manifest hashed blobs failed)"
snap=$(jf "$out" snapshot)
r=$(NIMBUS_STATE_DIR=$W/probe nb_agent call backup.get "{\"snapshot\": \"$snap\"}")
python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; sys.exit(0 if "manifest" in r and "items" not in r and r["count"] == 40000 else 1)' <<<"$r" ||
  nb_fail "backup.get does not name a manifest of 40000 items: ${r:0:300}"
nb_assert_eq "$snap many 40000" "$(jf "$(nb_agent backups)" snapshot label items)" "backups"

out=$(nb_agent backup "$W/src/Phone" 2>/dev/null) || nb_fail "second backup failed"
nb_log "second backup: $out"
nb_assert_eq "40000 true 0 40000 0 0" \
  "$(jf "$out" items manifest files_hashed files_cached blobs_uploaded bytes_sent)" \
  "second backup (items manifest hashed cached blobs sent)"

export NIMBUS_STATE_DIR=$W/dev2
out=$(nb_agent restore --snapshot "$snap" "$W/out" 2>"$W/r.err") || nb_fail "restore failed: $(cat "$W/r.err")"
nb_log "restore: $out"
nb_assert_eq "40000 0 $((3 + uniq))" "$(jf "$out" restored failed blobs_downloaded)" \
  "restore (restored failed downloaded; the empty content needs no download)"
diff -r "$W/src" "$W/out" || nb_fail "restored tree differs"
# mtimes to the ms, on a sample.
python3 - "$W/src" "$W/out" <<'EOF' || nb_fail "mtimes differ"
import os, sys
bad = 0
for d in ("contacts/set00", "photos/set39"):
    for f in os.listdir(os.path.join(sys.argv[1], "Phone", d)):
        a = os.stat(os.path.join(sys.argv[1], "Phone", d, f)).st_mtime_ns // 1000000
        b = os.stat(os.path.join(sys.argv[2], "Phone", d, f)).st_mtime_ns // 1000000
        bad += a != b
sys.exit(1 if bad else 0)
EOF
# The agent's own sanitizer reports (the ASan build runs these tests too).
if grep -l -E 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error: ' "$W"/*.err 2>/dev/null; then
  nb_fail "sanitizer report from the agent (files above)"
fi
nb_log "ok"
