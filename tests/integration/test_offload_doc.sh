# process.doc end to end on real servers: every op checked for its effect
# (zstd round trip byte for byte and smaller, character sets converted and
# bad bytes found at their offset, Markdown rendered safely, a PDF made
# here measured and its page rendered at the asked width), a blob input,
# and the failure classes.
source "$(dirname "$0")/lib.sh"

[[ -f $NIMBUS_BUILD_DIR/modules/nimbus-doc.so ]] || nb_fail "the doc module was not built"
NIMBUS_WORKER_FLAGS="--offload-max-output 1000000 --offload-max-input 10000000" nb_stack_up 1
nb_terminal alice
T=$NB_DIR/media
mkdir -p "$T"
python3 -c 'import sys; sys.stdout.write("the quick brown fox jumps over the lazy dog.\n" * 9000)' >"$T/text.txt"
printf 'caf\xe9 na\xefve\n' >"$T/latin1.txt"
# Japanese in Shift_JIS, made by iconv(1) from UTF-8.
printf '雲に重い仕事を任せる。\nテキストは日本語です。\n' | iconv -f UTF-8 -t SHIFT_JIS >"$T/sjis.txt"
printf '# Title\n\nSome *em* and <script>alert(1)</script>\n' >"$T/a.md"
python3 "$NIMBUS_SOURCE_DIR/tests/integration/mkpdf.py" "$T/two.pdf"

J=''
jget() {
  python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$@" <<<"$J"
}
code() { jget 'r["code"]'; }
res() { jget '" ".join(str(r["result"].get(k)) for k in sys.argv[2:])' "$@"; }
out_to() { jget 'open(sys.argv[2], "wb").write(__import__("base64").b64decode(r.get("data_b64", ""))) and ""' "$1" >/dev/null; }
doc() { J=$(call process.doc "$1" --data-file "$2"); }

# compress, from a blob (the text is 405 KB: more than a message).
hex=$("$NIMBUS_BIN/nb-blob" upload "$T/text.txt" | cut -d' ' -f2)
J=$(call process.doc "{\"blob\": \"$hex\", \"ops\": [{\"op\": \"text_stats\"}, {\"op\": \"compress\", \"level\": 19}]}")
[[ $(code) == 0 ]] || nb_fail "compress: ${J:0:300}"
nb_assert_eq "zstd 9000 81000" "$(res format lines words)" "text_stats then compress"
python3 -c 'import sys; sys.exit(not float(sys.argv[1]) < 0.01)' "$(res ratio)" ||
  nb_fail "zstd -19 of repeated text: ratio $(res ratio)"
out_to "$T/text.zst"
zstd -q -d -c "$T/text.zst" | cmp - "$T/text.txt" || nb_fail "zstd(1) does not read our output back"
# decompress: our own output back, byte for byte.
doc '{"ops": [{"op": "decompress"}]}' "$T/text.zst"
[[ $(code) == 0 ]] || nb_fail "decompress: ${J:0:300}"
sha=$(jget 'r["result"]["blob"]')
nb_assert_eq "$hex" "$sha" "decompress gives the original blob"
nb_assert_eq "$(sha256sum "$T/text.txt" | cut -c1-64)" "$sha" "the blob's name is the text's SHA-256"
J=$(call blob.get "{\"blob\": \"$sha\", \"offset\": 0, \"length\": 45}")
nb_assert_eq "the quick brown fox jumps over the lazy dog." "$(jget 'r["data_b64"]' | base64 -d | head -c 44)" \
  "the decompressed blob's bytes"

# The CLI's verb, from the file: compressed in the cloud, read back here.
nb_agent doc "$T/text.txt" "$T/cli.zst" --op compress:level=19 >/dev/null ||
  nb_fail "nimbus-agent doc failed"
zstd -q -d -c "$T/cli.zst" | cmp - "$T/text.txt" || nb_fail "nimbus-agent doc's output"

# to_utf8 and text_stats of the result.
doc '{"ops": [{"op": "to_utf8", "from": "latin1"}, {"op": "text_stats"}]}' "$T/latin1.txt"
nb_assert_eq "text latin1 11 utf-8" "$(res format from characters encoding)"
out_to "$T/utf8.txt"
iconv -f ISO-8859-1 -t UTF-8 "$T/latin1.txt" | cmp - "$T/utf8.txt" ||
  nb_fail "to_utf8 from latin1 differs from iconv(1): $(cat "$T/utf8.txt")"
doc '{"ops": [{"op": "to_utf8", "from": "shift_jis"}, {"op": "text_stats"}]}' "$T/sjis.txt"
nb_assert_eq "text shift_jis 2 24 utf-8" "$(res format from lines characters encoding)"
out_to "$T/sjis-utf8.txt"
iconv -f SHIFT_JIS -t UTF-8 "$T/sjis.txt" | cmp - "$T/sjis-utf8.txt" ||
  nb_fail "to_utf8 from Shift_JIS differs from iconv(1): $(cat "$T/sjis-utf8.txt")"
# The same request again: from the result cache.
doc '{"ops": [{"op": "to_utf8", "from": "shift_jis"}, {"op": "text_stats"}]}' "$T/sjis.txt"
nb_assert_eq "True" "$(res cached)" "a repeated request"
doc '{"ops": [{"op": "to_utf8", "from": "utf-8"}]}' "$T/latin1.txt"
nb_assert_eq 422 "$(code)" "latin-1 bytes read as UTF-8"
[[ $(jget 'r["error"]') == *"offset 3"* ]] || nb_fail "the 422 names the offset: ${J:0:300}"
doc '{"ops": [{"op": "to_utf8", "from": "klingon"}]}' "$T/latin1.txt"
nb_assert_eq 415 "$(code)" "an unknown character set"

# markdown_to_html, safely.
doc '{"ops": [{"op": "markdown_to_html"}]}' "$T/a.md"
out_to "$T/a.html"
grep -q '<h1>Title</h1>' "$T/a.html" && grep -q '<em>em</em>' "$T/a.html" ||
  nb_fail "markdown: $(cat "$T/a.html")"
grep -q '<script>' "$T/a.html" && nb_fail "raw HTML passed through: $(cat "$T/a.html")"

# pdf_info and pdf_thumbnail.
doc '{"ops": [{"op": "pdf_info"}]}' "$T/two.pdf"
nb_assert_eq "pdf 2" "$(res format pages)"
nb_assert_eq "Quarterly report|Ada Lovelace" "$(jget 'r["result"]["title"] + "|" + r["result"]["author"]')"
doc '{"ops": [{"op": "pdf_thumbnail", "page": 2, "width": 150, "format": "png"}]}' "$T/two.pdf"
[[ $(code) == 0 ]] || nb_fail "pdf_thumbnail: ${J:0:300}"
out_to "$T/page2.png"
nb_assert_eq "150 200 3" "$(vipsheader -f width "$T/page2.png") $(vipsheader -f height "$T/page2.png") $(vipsheader -f bands "$T/page2.png")" \
  "page 2 at 150 px wide, flattened"
doc '{"ops": [{"op": "pdf_thumbnail", "page": 3}]}' "$T/two.pdf"
nb_assert_eq 422 "$(code)" "a page the PDF does not have"
doc '{"ops": [{"op": "pdf_info"}]}' "$T/a.md"
nb_assert_eq 422 "$(code)" "pdf_info of Markdown"

# Progress and cancel: 8 MB of log lines at level 19 take seconds (and
# would come to some 520 KB, within the 1 MB output limit); progress
# counts input bytes against the input's size; task.cancel ends it with
# 499.
awk 'BEGIN { srand(12); while (n < 8000000) { l = sprintf("%d %s ms=%d", 1700000000 + int(n / 4000), rand() < 0.5 ? "INFO" : "WARN", rand() * 100); print l; n += length(l) + 1 } }' >"$T/log.txt"
hex=$("$NIMBUS_BIN/nb-blob" upload "$T/log.txt" | cut -d' ' -f2)
nb_cancel_midway process.doc "{\"blob\": \"$hex\", \"ops\": [{\"op\": \"compress\", \"level\": 19}]}" \
  offload-doc-cancel-0001 "$(stat -c %s "$T/log.txt")"

# Failures and limits.
doc '{"ops": [{"op": "decompress"}]}' "$T/a.md"
nb_assert_eq 422 "$(code)" "decompress of what is not zstd"
head -c 20 "$T/text.zst" >"$T/cut.zst"
doc '{"ops": [{"op": "decompress"}]}' "$T/cut.zst"
nb_assert_eq 422 "$(code)" "a truncated zstd frame"
# A zstd bomb: 20 MB of zeros compress to a few hundred bytes; the output
# stops at offload_max_output (1 MB here).
head -c 20000000 /dev/zero | zstd -q -19 -c >"$T/bomb.zst"
doc '{"ops": [{"op": "decompress"}]}' "$T/bomb.zst"
nb_assert_eq 413 "$(code)" "a zstd bomb"
# The same between two ops: what decompress makes for text_stats stops at
# offload_max_input (10 MB here), in the temporary file, not in memory.
doc '{"ops": [{"op": "decompress"}, {"op": "text_stats"}]}' "$T/bomb.zst"
nb_assert_eq "413 what an op made is over the cloud's input limit (10000000 bytes) for the next op" \
  "$(jget 'str(r["code"]) + " " + r["error"]')" "a zstd bomb between two ops"
# Inline data over a segment (the task itself is still within 272 KiB).
head -c 270000 /dev/zero >"$T/big.bin"
doc '{"ops": [{"op": "compress"}]}' "$T/big.bin"
nb_assert_eq "413 the inline data is 270000 bytes; at most 262144 come inline" \
  "$(jget 'str(r["code"]) + " " + r["error"]')" "inline data over 256 KiB"
doc '{"ops": [{"op": "compress", "level": 25}]}' "$T/a.md"
nb_assert_eq 400 "$(code)" "level out of range"
doc '{"ops": [{"op": "shred"}]}' "$T/a.md"
nb_assert_eq 400 "$(code)" "an unknown op"
nb_alive "$(nb_pids | awk '$1 == "worker-1" {print $2}')" || nb_fail "the worker died"
nb_log "doc: zstd, iconv, cmark, PDFs, failures"
