# Shared documents kept compressed in the blob store, and the type of a
# share made without one (PROTOCOL.md, Sharing; schemas/SPEC.md, Shares):
# a 3 MiB text document that a backup already holds is shared; a janitor
# compresses it (share.get's stored_size below its size, the blob's file
# on disk that small, its metadata saying so); another terminal fetches
# it byte for byte, the backup's restore gives it back, and a commit of
# the same content by another terminal keeps the compressed copy. Random
# bytes stay as they are (stored_size == size); a small text shared
# without --mime is text/plain and compressed by share.create itself; a
# PNG made here is image/png and left alone.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2

nb_terminals bob alice
# The blob's file in the store, and its size.
blob_file() { echo "$NB_DIR/blobs/blobs/${1:0:2}/$1"; }
file_size() { stat -c %s "$(blob_file "$1")"; }
# share.get's stored_size of token $1 (as the owner: no download counted).
stored_of() { jget "$(call share.get "{\"token\": \"$1\"}")" 'r["result"]["stored_size"]'; }

cd "$NB_DIR"
mkdir docs
python3 - <<'EOF'
import random, struct, zlib
rnd = random.Random(12)
words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
         for _ in range(3000)]
def text(n):
    out, size = [], 0
    while size < n:
        line = " ".join(rnd.choice(words) for _ in range(rnd.randint(6, 14))) + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n].encode()
open("docs/report.txt", "wb").write(text(3 * 1048576 + 12345))
open("note.txt", "wb").write(text(20000))
raw = b"".join(b"\0" + bytes((x * 5 + y) % 256 for x in range(96)) for y in range(32))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open("pic.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
                            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOF
head -c 3000000 /dev/urandom >noise.bin
size=$(stat -c %s docs/report.txt)

# ---- a document a backup holds, shared: compressed by a janitor ----------
b=$(nb_agent backup docs) || nb_fail "backup"
snap=$(jf "$b" snapshot)
s=$(nb_agent share docs/report.txt) || nb_fail "share report.txt"
tok=$(jget "$s" 'r["token"]')
blob=$(jget "$s" 'r["blob"]')
nb_assert_eq "$(sha256sum <docs/report.txt | cut -d' ' -f1)" "$blob" "blob name"
# Over 1 MiB: queued for a janitor, so share.create still says the size.
nb_assert_eq "text/plain $size $size" \
  "$(jget "$s" '" ".join(str(r[k]) for k in ("mime", "size", "stored_size"))')" \
  "sniffed type and size"
nb_wait_for "(( \$(stored_of $tok) < $size ))" 60 ||
  nb_fail "report.txt was not compressed: stored_size $(stored_of "$tok")"
stored=$(stored_of "$tok")
((stored * 10 <= size * 9)) || nb_fail "stored_size $stored of $size"
nb_assert_eq "$stored" "$(file_size "$blob")" "the compressed file's size"
# The file is switched first, then the record is made (and the queue
# entry removed, in the same script): on a busy machine share.get, which
# reads the file, can be a moment ahead of the record.
nb_wait_for "[[ \$(nb_redis hget nb:blob:$blob stored) == $stored ]]" 10 ||
  nb_fail "metadata: stored $(nb_redis hget "nb:blob:$blob" stored), file $stored"
nb_assert_eq 0 "$(nb_redis zcard nb:pack)" "the queue, done"
r=$(call share.list '{}')
nb_assert_eq "$stored" "$(jget "$r" 'r["result"]["shares"][0]["stored_size"]')" \
  "share.list's stored_size"

# bob fetches the original bytes; the backup restores them.
mkdir bob
nb_as bob nb_agent fetch "$tok" bob/ >/dev/null || nb_fail "bob's fetch"
cmp docs/report.txt bob/report.txt || nb_fail "bob's bytes differ"
nb_assert_eq "$blob" "$(sha256sum <bob/report.txt | cut -d' ' -f1)" "bob's SHA-256"
nb_agent restore --snapshot "$snap" restored >/dev/null || nb_fail "restore"
cmp docs/report.txt restored/docs/report.txt || nb_fail "restored bytes differ"
# A range across a segment's end, as any terminal may ask it.
r=$(nb_as bob call blob.get "{\"blob\": \"$blob\", \"offset\": 262100, \"length\": 100}")
nb_assert_eq "$(tail -c +262101 docs/report.txt | head -c 100 | base64 -w0)" \
  "$(jget "$r" 'r["data_b64"]')" "a range across segments"

# A record a crash lost (between the switch on disk and its record) is made
# again by the next share of the blob: the file is the truth.
nb_redis hdel "nb:blob:$blob" stored >/dev/null
s=$(call share.create "{\"name\": \"again\", \"blob\": \"$blob\"}")
nb_assert_eq "$stored" "$(jget "$s" 'r["result"]["stored_size"]')" "stored_size again"
nb_assert_eq "$stored" "$(nb_redis hget "nb:blob:$blob" stored)" "metadata again"

# The same content uploaded by bob: the commit keeps the compressed copy.
mkdir bobdocs
cp docs/report.txt bobdocs/
nb_as bob nb_agent backup bobdocs >/dev/null || nb_fail "bob's backup"
nb_assert_eq "$stored" "$(file_size "$blob")" "after a commit of the same content"

# ---- random bytes: tried, left as they are ---------------------------------
s=$(nb_agent share noise.bin) || nb_fail "share noise.bin"
nb_assert_eq "application/octet-stream 3000000 3000000" \
  "$(jget "$s" '" ".join(str(r[k]) for k in ("mime", "size", "stored_size"))')" \
  "noise.bin's share"
nblob=$(jget "$s" 'r["blob"]')
nb_wait_for "[[ \$(nb_redis hget nb:blob:$nblob stored) == 3000000 ]]" 60 ||
  nb_fail "noise.bin was not looked at"
nb_assert_eq 3000000 "$(stored_of "$(jget "$s" 'r["token"]')")" "noise.bin stored_size"
nb_assert_eq 3000000 "$(file_size "$nblob")" "noise.bin's file"

# ---- small files without --mime: sniffed; text compressed at once ---------
s=$(nb_agent share note.txt) || nb_fail "share note.txt"
nb_assert_eq "text/plain 20000" "$(jget "$s" 'r["mime"] + " " + str(r["size"])')" "note.txt"
nstored=$(jget "$s" 'r["stored_size"]')
((nstored * 10 <= 20000 * 9)) || nb_fail "note.txt's stored_size $nstored"
nb_assert_eq "$nstored" "$(file_size "$(jget "$s" 'r["blob"]')")" "note.txt's file"
s=$(nb_agent share pic.png) || nb_fail "share pic.png"
psize=$(stat -c %s pic.png)
nb_assert_eq "image/png $psize $psize" \
  "$(jget "$s" '" ".join(str(r[k]) for k in ("mime", "size", "stored_size"))')" \
  "pic.png's share"
nb_assert_eq "$psize" "$(file_size "$(jget "$s" 'r["blob"]')")" "pic.png's file"
nb_as bob nb_agent fetch alice/note.txt bob/ >/dev/null || nb_fail "fetch note.txt"
cmp note.txt bob/note.txt || nb_fail "note.txt's bytes differ"

[[ -z $(ls -A "$NB_DIR/blobs/staging") ]] ||
  nb_fail "left in staging: $(ls -A "$NB_DIR/blobs/staging")"
for p in $(nb_pids | awk '$1 ~ /^worker/ {print $2}'); do
  nb_alive "$p" || nb_fail "worker $p died"
done
nb_log "ok"
