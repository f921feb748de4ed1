# process.image end to end (PROTOCOL.md, Compute offload; schemas/SPEC.md,
# process.image) on one stack, with pictures made here once (vips,
# python): every op checked for its effect (sizes, pixels moved where a
# turn or flip puts them, high frequencies after blur and sharpen, one
# band after grayscale, EXIF kept or stripped, autorotate following the
# EXIF orientation); each input format (JPEG, PNG, WebP, TIFF, GIF, HEIF,
# AVIF) and output format (jpeg, png, webp, quality); input as a
# backed-up blob and as inline data; the cache (cached: true, from another
# terminal too, the worker's log saying so), a replayed task id, the
# result's blob readable by its terminal only and collected after
# result_ttl; every failure class (400, 404, 413 with the decompression
# bomb, 415, 422); progress, cancel and ping's p99 while both offload
# threads blur 12-megapixel pictures; and a worker without the module:
# 503 for process.image, ping and backups still served, a picture shared
# without a thumbnail.
source "$(dirname "$0")/lib.sh"
NIMBUS_WORKER_FLAGS="--result-ttl-ms 3000 --blob-ttl-ms 3000
  --offload-max-input 2000000 --offload-max-output 3000000" nb_stack_up 1
nb_terminal bob
PW_BOB=$NIMBUS_PASSWORD SD_BOB=$NIMBUS_STATE_DIR
nb_terminal alice
as_bob() {
  NIMBUS_TERMINAL=bob NIMBUS_PASSWORD=$PW_BOB NIMBUS_STATE_DIR=$SD_BOB "$@"
}
cd "$NB_DIR"
T0=$SECONDS

# ---- the pictures -----------------------------------------------------------
# pic: 320 x 240 of colour noise (every pixel its own, so one can be
# followed through a turn; small enough that every output comes inline);
# small: 160 x 120 of it, to go inline as input too; orient:
# pic as JPEG with EXIF (orientation 6: turn 90 degrees clockwise to
# view; a description); big: 12 megapixels for the load; the bad inputs.
# Python writes what vips cannot make in one call (each vips start costs).
mkdir media in
cat >png.py <<'PY'
# PNG in and out with the standard library only (8 bits, no interlace),
# and the checks that read pixels: lines of "same A X Y B X2 Y2 WHAT"
# (one pixel of A equals one of B), "equal A B WHAT" (all pixels), "hf A
# OP F B WHAT" (the high frequencies of A, OP "<" or ">", F times B's).
import struct, sys, zlib

def chunk(t, b):
    crc = struct.pack(">I", zlib.crc32(t + b))
    return struct.pack(">I", len(b)) + t + b + crc

def write(path, w, h, pix, bands=3):
    ct = {1: 0, 3: 2}[bands]
    n = w * bands
    rows = b"".join(b"\0" + pix[y * n:(y + 1) * n] for y in range(h))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ct, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

def read(path):
    d, i, idat = open(path, "rb").read(), 8, b""
    while i < len(d):
        n, t = struct.unpack(">I4s", d[i:i + 8])
        if t == b"IHDR":
            w, h, depth, ct, _, _, il = struct.unpack(">IIBBBBB",
                                                      d[i + 8:i + 21])
        elif t == b"IDAT":
            idat += d[i + 8:i + 8 + n]
        i += 12 + n
    assert depth == 8 and il == 0, path
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ct]
    raw, stride, rows = zlib.decompress(idat), w * bpp, []
    prev = bytearray(stride)
    for y in range(h):
        at = y * (stride + 1)
        f, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        for x in range(stride) if f else ():
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pr) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows

def hf(img):
    # Mean absolute difference of horizontal neighbours, every 4th row.
    w, h, bpp, rows = img
    s = n = 0
    for r in rows[::4]:
        s += sum(abs(a - b) for a, b in zip(r[bpp:], r[:-bpp]))
        n += len(r) - bpp
    return s / n

if __name__ == "__main__":
    cache, bad = {}, 0
    get = lambda p: cache.setdefault(p, read(p))
    for line in sys.stdin:
        n = {"same": 7, "hf": 5}.get(line.split(None, 1)[0], 3)
        f = line.split(None, n)
        if f[0] == "same":
            a, b = get(f[1]), get(f[4])
            pa = a[3][int(f[3])][int(f[2]) * a[2]:(int(f[2]) + 1) * a[2]]
            pb = b[3][int(f[6])][int(f[5]) * b[2]:(int(f[5]) + 1) * b[2]]
            ok, say = pa == pb, f"{list(pa)} and {list(pb)}"
        elif f[0] == "equal":
            ok, say = get(f[1]) == get(f[2]), "the pixels differ"
        else:
            ha, hb = hf(get(f[1])), hf(get(f[4]))
            ok = ha < float(f[3]) * hb if f[2] == "<" else ha > float(f[3]) * hb
            say = f"{ha:.2f} against {hb:.2f}"
        if not ok:
            print(f"FAIL: {f[-1].strip()}: {say}", file=sys.stderr)
            bad += 1
    sys.exit(1 if bad else 0)
PY
python3 - <<'PY'
import os, png
png.write("media/pic.png", 320, 240, os.urandom(320 * 240 * 3))
png.write("in/small.png", 160, 120, os.urandom(160 * 120 * 3))
open("in/small.ppm", "wb").write(b"P6\n160 120\n255\n" +
                                 os.urandom(160 * 120 * 3))
open("media/huge.bin", "wb").write(os.urandom(2100000))
PY
for f in jpg webp tif gif heic avif; do vips copy media/pic.png "media/pic.$f"; done
vips black media/big.jpg 4000 3000 --bands 3
python3 - <<'PY'
import png, struct, zlib
d = open("media/pic.jpg", "rb").read()
desc = b"nimbus test\x00"
tiff = b"II*\x00" + struct.pack("<IH", 8, 2)
tiff += struct.pack("<HHII", 0x010E, 2, len(desc), 8 + 2 + 2 * 12 + 4)
tiff += struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0) + desc
app1 = b"Exif\x00\x00" + tiff
open("media/orient.jpg", "wb").write(
    d[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + d[2:])
open("in/trunc.jpg", "wb").write(d[: len(d) * 6 // 10])
s = open("in/small.png", "rb").read()
open("in/trunc.png", "wb").write(s[: len(s) // 2])
# The bomb: a valid header claiming 50000 x 50000 RGB, one small
# compressed row, the end.
open("in/bomb.png", "wb").write(b"\x89PNG\r\n\x1a\n"
    + png.chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
    + png.chunk(b"IDAT", zlib.compress(b"\0" * 150001)) + png.chunk(b"IEND", b""))
open("in/notpic.bin", "wb").write(bytes(range(256)) * 4)
PY
# The inputs live as a backup of alice's: what a terminal has in the
# cloud already, and what no blob_ttl collects.
nb_agent backup media >/dev/null 2>backup.err || nb_fail "backup: $(cat backup.err)"
declare -A H
for f in media/*; do H[${f#media/}]=$(sha256sum "$f" | cut -c1-64); done
nb_log "pictures made and backed up in $((SECONDS - T0)) s"

# pi NAME JSON [call flags]: one process.image task. Sets R (the reply),
# CODE, ERR (code and error), P ("width height bands format cached" of
# the result) and B (the output blob); when ok the output's bytes are in
# NAME.out (the inline data, else fetched with nb-blob).
cat >reply.py <<'PY'
import base64, json, sys
r = json.loads(sys.stdin.read() or "{}")
res = r.get("result", {})
if r.get("code") == 0 and "data_b64" in r:
    open(sys.argv[1], "wb").write(base64.b64decode(r["data_b64"]))
print(r.get("code", "none"), res.get("blob", "-"),
      "inline" if "data_b64" in r else "fetch",
      *(str(res.get(k, "-")).lower() for k in
        ("width", "height", "bands", "format", "cached")))
print(r.get("code", "none"), r.get("error", ""))
PY
pi() {
  local name=$1 args=$2 how
  shift 2
  R=$(call process.image "$args" "$@")
  { read -r CODE B how P && read -r ERR; } < <(python3 reply.py "$name.out" <<<"$R")
  if [[ $CODE == 0 && $how == fetch ]]; then
    "$NIMBUS_BIN/nb-blob" download "$B" "$name.out" >/dev/null ||
      nb_fail "$name: cannot fetch the output $B"
  fi
  return 0
}
# task IN OPS [EXTRA]: sets A, the args of a task on IN (a backed-up
# picture by name, or @FILE: that file's bytes inline) with OPS (the ops:
# JSON maps, comma-separated; "-" for none at all) and the members EXTRA
# ('"format": "png"'), and D, the flags that send the inline data.
task() {
  local m=() IFS=,
  D=()
  if [[ $1 == @* ]]; then
    D=(--data-file "${1#@}")
  else
    m+=("\"blob\": \"${H[$1]}\"")
  fi
  [[ $2 == - ]] || m+=("\"ops\": [$2]")
  [[ -z ${3:-} ]] || m+=("$3")
  A="{${m[*]}}"
}
# ok NAME WANT IN OPS [EXTRA [call flags]]: the task's result must be WANT
# ("width height bands format cached"); its output file is checked
# against it later (check_files).
declare -A WANT
ok() {
  local name=$1 want=$2
  task "$3" "$4" "${5:-}"
  shift $(($# < 5 ? $# : 5))
  pi "$name" "$A" "${D[@]+"${D[@]}"}" "$@"
  nb_assert_eq "0 $want" "$CODE $P" "$name ($A): $R"
  WANT[$name]=$want
}
# fails CODE ERROR IN OPS [EXTRA [call flags]]: the task fails so.
fails() {
  local want="$1 $2"
  task "$3" "$4" "${5:-}"
  shift $(($# < 5 ? $# : 5))
  pi fail "$A" "${D[@]+"${D[@]}"}" "$@"
  nb_assert_eq "$want" "$ERR" "$A"
}
# check_files: every output made by ok since the last call is, as
# vipsheader reads the file, what its result said (size, bands, format).
check_files() {
  local line n got files=()
  local re='^(.*)\.out: ([0-9]+)x([0-9]+) [a-z]+, ([0-9]+) bands?,.* ([a-z]+)load$'
  for n in "${!WANT[@]}"; do files+=("$n.out"); done
  ((${#files[@]})) || nb_fail "check_files: no output to check"
  while read -r line; do
    [[ $line =~ $re ]] || nb_fail "vipsheader: $line"
    n=${BASH_REMATCH[1]}
    [[ -v WANT[$n] ]] || nb_fail "vipsheader named $n.out, which ok did not make"
    got="${BASH_REMATCH[2]} ${BASH_REMATCH[3]} ${BASH_REMATCH[4]} ${BASH_REMATCH[5]}"
    nb_assert_eq "$(cut -d' ' -f1-4 <<<"${WANT[$n]}")" "$got" "$n.out's header"
    unset "WANT[$n]"
  done < <(vipsheader "${files[@]}" 2>&1)
  ((${#WANT[@]} == 0)) || nb_fail "vipsheader did not read: ${!WANT[*]}"
}
get16() { call blob.get "{\"blob\": \"$1\", \"offset\": 0, \"length\": 16}"; }
# gt A B: true when the number A is greater than B.
gt() {
  python3 -c 'import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))' \
    "$1" "$2"
}

# ---- a result to watch expire (result_ttl 3 s, blob_ttl 3 s) ----------------
ok ttl "77 58 3 png false" pic.png '{"op": "resize", "width": 77}'
unset "WANT[ttl]"
TTL_BLOB=$B
nb_assert_eq 0 "$(jget "$(get16 "$B")" 'r["code"]')" "alice reads her result's blob"
nb_assert_eq 404 "$(jget "$(as_bob get16 "$B")" 'r["code"]')" \
  "bob may not read alice's result"
[[ -f blobs/blobs/${B:0:2}/$B ]] || nb_fail "no file for the result's blob"

# ---- every op, for its effect (PNG in and out: the pixels are exact) -------
ok r1 "160 120 3 png false" pic.png '{"op": "resize", "width": 160}'
ok r2 "80 60 3 png false" pic.png '{"op": "resize", "height": 60}'
ok r3 "100 75 3 png false" pic.png '{"op": "resize", "width": 100, "height": 100}'
ok r4 "100 50 3 png false" pic.png \
  '{"op": "resize", "width": 100, "height": 50, "fit": "fill"}'
ok t1 "100 75 3 png false" pic.png '{"op": "thumbnail", "size": 100}'
ok t2 "100 100 3 png false" pic.png \
  '{"op": "thumbnail", "size": 100, "crop": "centre"}'
ok t3 "90 90 3 png false" pic.png \
  '{"op": "thumbnail", "size": 90, "crop": "attention"}'
ok t4 "320 240 3 png false" pic.png '{"op": "thumbnail", "size": 1000}'
ok c1 "100 50 3 png false" pic.png \
  '{"op": "crop", "left": 10, "top": 20, "width": 100, "height": 50}'
ok o90 "240 320 3 png false" pic.png '{"op": "rotate", "angle": 90}'
ok o180 "320 240 3 png false" pic.png '{"op": "rotate", "angle": 180}'
ok o270 "240 320 3 png false" pic.png '{"op": "rotate", "angle": 270}'
ok fh "320 240 3 png false" pic.png '{"op": "flip", "direction": "horizontal"}'
ok fv "320 240 3 png false" pic.png '{"op": "flip", "direction": "vertical"}'
ok bl "320 240 3 png false" pic.png '{"op": "blur", "sigma": 4}'
ok bl2 "320 240 3 png false" pic.png '{"op": "blur", "sigma": 1.5}'
ok sh "320 240 3 png false" pic.png '{"op": "blur", "sigma": 1.5}, {"op": "sharpen"}'
ok gr "320 240 1 png false" pic.png '{"op": "grayscale"}'
ok grj "320 240 1 jpeg false" pic.png '{"op": "grayscale"}' '"format": "jpeg"'
# autorotate: orientation 6 turns the 320 x 240 picture upright to
# 240 x 320, and the tag says upright (1) from then on.
ok ar "240 320 3 png false" orient.jpg '{"op": "autorotate"}' '"format": "png"'
# A thumbnail after it: the JPEG decoder shrinks 2x on load (the fast
# path), and the thumbnail is still of the upright picture.
ok at "75 100 3 jpeg false" orient.jpg '{"op": "autorotate"}, {"op": "thumbnail", "size": 100}'
# EXIF: kept through the pipeline, dropped by strip.
ok ex "160 120 3 jpeg false" orient.jpg '{"op": "resize", "width": 160}'
ok st "160 120 3 jpeg false" orient.jpg \
  '{"op": "strip"}, {"op": "resize", "width": 160}'
check_files
# The pixels: crop cuts where it says; rotate (clockwise) and flip put the
# input's top-left pixel where the turn or mirror takes it; blur takes the
# high frequencies away and sharpen brings some back; autorotate's
# picture is the input turned as vips autorot turns it.
vips autorot media/orient.jpg want.png
python3 png.py <<'EOF2' || nb_fail "pixels (above)"
same media/pic.png 10 20 c1.out 0 0 crop's first pixel
same media/pic.png 109 69 c1.out 99 49 crop's last pixel
same media/pic.png 0 0 o90.out 239 0 rotate 90: top-left to top-right
same media/pic.png 0 239 o90.out 0 0 rotate 90: bottom-left to top-left
same media/pic.png 0 0 o180.out 319 239 rotate 180
same media/pic.png 0 0 o270.out 0 319 rotate 270: top-left to bottom-left
same media/pic.png 0 0 fh.out 319 0 flip horizontal
same media/pic.png 5 7 fh.out 314 7 flip horizontal, inside
same media/pic.png 0 0 fv.out 0 239 flip vertical
same media/pic.png 0 0 t4.out 0 0 a thumbnail larger than the picture leaves it
hf bl.out < 0.1 media/pic.png blur sigma 4 against the input
hf sh.out > 1.1 bl2.out sharpen against the blurred input
equal ar.out want.png autorotate against vips autorot
EOF2
vipsheader -a ex.out | grep -q '^exif-ifd0-ImageDescription: nimbus test' ||
  nb_fail "the EXIF did not come through: $(vipsheader -a ex.out)"
! vipsheader -a st.out | grep -q -i '^exif' ||
  nb_fail "strip left EXIF: $(vipsheader -a st.out | grep -i exif)"
! vipsheader -a ar.out | grep -qiE '^(exif-ifd0-)?orientation: [2-8]' ||
  nb_fail "autorotate kept the orientation: $(vipsheader -a ar.out | grep -i orient)"
nb_log "every op checked in $((SECONDS - T0)) s"

# ---- formats in and out -----------------------------------------------------
# The default output is the input's format when it is jpeg, png or webp.
for f in jpg:jpeg png:png webp:webp tif:jpeg gif:jpeg heic:jpeg avif:jpeg; do
  ok "in_${f%:*}" "64 48 3 ${f#*:} false" "pic.${f%:*}" \
    '{"op": "resize", "width": 64}'
done
for f in jpeg png webp; do
  ok "out_$f" "64 48 3 $f false" pic.tif '{"op": "resize", "width": 64}' \
    "\"format\": \"$f\""
done
for q in 20 95; do
  ok "q$q" "200 150 3 webp false" pic.png '{"op": "resize", "width": 200}' \
    "\"format\": \"webp\", \"quality\": $q"
done
(($(stat -c %s q20.out) * 2 < $(stat -c %s q95.out))) ||
  nb_fail "quality: $(stat -c %s q20.out) bytes at 20, $(stat -c %s q95.out) at 95"
# Inline input; the reply's inline data is the output blob's bytes.
ok inl "160 120 3 png false" @in/small.png \
  '{"op": "flip", "direction": "horizontal"}'
nb_assert_eq "$B" "$(sha256sum inl.out | cut -c1-64)" "inline output's name"
check_files
nb_log "formats checked in $((SECONDS - T0)) s"

# ---- the cache, replay -------------------------------------------------------
# The same request again (keys in another order, a whole float): cached,
# the same blob, and the worker did not compute it. From bob, who sends
# the same bytes inline: cached too, and he may read the result.
ok k1 "160 120 3 webp false" @in/small.png '{"op": "blur", "sigma": 2}' \
  '"format": "webp"'
K=$B
pi k2 '{"format": "webp", "ops": [{"sigma": 2.0, "op": "blur"}]}' \
  --data-file in/small.png
nb_assert_eq "0 $K 160 120 3 webp true" "$CODE $B $P" "the same request again: $R"
as_bob pi k3 '{"ops": [{"op": "blur", "sigma": 2}], "format": "webp"}' \
  --data-file in/small.png
nb_assert_eq "0 $K true" "$CODE $B ${P##* }" "bob's same request: $R"
nb_assert_eq 2 "$(grep -c 'process.image .*answered from the cache' worker-1/log)" \
  "cache hits in the worker's log"
nb_assert_eq 0 "$(jget "$(as_bob get16 "$K")" 'r["code"]')" \
  "bob reads the result his task reused"
# A replayed task id: the recorded reply, the same blob, computed once.
ID=offload-image-replay-0001
ok rp1 "99 74 3 png false" pic.png '{"op": "resize", "width": 99}' '' --id "$ID"
RB=$B
ok rp2 "99 74 3 png false" pic.png '{"op": "resize", "width": 99}' '' --id "$ID"
nb_assert_eq "$RB" "$B" "the replayed blob"
nb_assert_eq 1 "$(grep -c "alice/$ID:" worker-1/log)" "runs of the replayed task"

# ---- failures -------------------------------------------------------------
fails 400 'args.ops is missing' pic.png -
fails 400 'args.ops must be an array of 1 to 32 ops' pic.png ''
fails 400 'args.ops[0].op "swirl" is not an op of process.image' \
  pic.png '{"op": "swirl"}'
fails 400 'args.ops[1].sigma must be a number from 0.1 to 100' \
  pic.png '{"op": "grayscale"}, {"op": "blur", "sigma": 0}'
fails 400 'args.ops[0].sigma is missing' pic.png '{"op": "blur"}'
fails 400 'args.ops[0].angle must be 90, 180 or 270' \
  pic.png '{"op": "rotate", "angle": 45}'
fails 400 'args.ops[0].direction "up" is not one of horizontal, vertical' \
  pic.png '{"op": "flip", "direction": "up"}'
fails 400 'args.ops[0] resize needs width, height or both' \
  pic.png '{"op": "resize"}'
fails 400 'args.ops[0].width must be a whole number from 1 to 65535' \
  pic.png '{"op": "resize", "width": 65536}'
fails 400 'args.quality must be a whole number from 1 to 100' \
  pic.png '{"op": "strip"}' '"quality": 0'
fails 400 \
  'args.ops[1] crop box 600+0 100x100 is not inside the 200x150 picture' \
  pic.png '{"op": "resize", "width": 200},
    {"op": "crop", "left": 600, "top": 0, "width": 100, "height": 100}'
fails 415 'args.format "bmp" is not one of jpeg, png, webp' \
  pic.png '{"op": "strip"}' '"format": "bmp"'
fails 415 'the input is not a picture libvips can read' \
  @in/notpic.bin '{"op": "strip"}'
fails 415 \
  'the input is a picture this cloud does not read (VipsForeignLoadPpmSource)' \
  @in/small.ppm '{"op": "strip"}'
for f in trunc.jpg trunc.png; do
  pi fail '{"ops": [{"op": "grayscale"}]}' --data-file "in/$f"
  [[ $ERR == '422 the picture is corrupt or truncated: '* ]] || nb_fail "$f: $R"
done
# The bomb: refused from its header, at once.
t=$(date +%s%N)
MAX='this cloud processes at most 100000000'
fails 413 "the picture is 50000 x 50000 pixels; $MAX" \
  @in/bomb.png '{"op": "blur", "sigma": 1}'
nb_log "the bomb refused in $((($(date +%s%N) - t) / 1000000)) ms (the whole call)"
fails 413 "args.ops[0] (resize) would make a picture of 65535 x 49151 pixels; $MAX" \
  pic.png '{"op": "resize", "width": 65535}'
fails 413 'the input is 2100000 bytes; this cloud processes at most 2000000' \
  huge.bin '{"op": "strip"}'
fails 413 'the output is over 3000000 bytes' \
  pic.png '{"op": "resize", "width": 3000}'
as_bob fails 404 "there is no blob ${H[pic.png]} that this terminal may read" \
  pic.png '{"op": "strip"}'
fails 400 'the task has both args.blob and inline data' \
  pic.png '{"op": "strip"}' '' --data-file in/small.png
nb_log "failures checked in $((SECONDS - T0)) s"

# ---- load: progress, ping's p99, cancel -------------------------------------
# Two blurs of 12 megapixels, one per offload thread; pings meanwhile.
# B, cancelled after the pings, is the longer by far, so that the cancel
# finds it in the middle of its work.
task big.jpg '{"op": "blur", "sigma": 30}'
nb_agent call process.image "$A" --progress --timeout 60000 >loadA.json 2>loadA.err &
LA=$!
task big.jpg '{"op": "blur", "sigma": 60}'
nb_agent call process.image "$A" --progress --timeout 60000 \
  --id offload-image-cancel-0001 >loadB.json 2>loadB.err &
LB=$!
nb_wait_for 'grep -q "\"progress\"" loadA.err &&
  grep -q "\"progress\"" loadB.err' 30 ||
  nb_fail "no progress from the two blurs"
LAT=$("$NIMBUS_BIN/nb-itest" pinglat 300) || nb_fail "pings under load failed"
nb_alive "$LA" && nb_alive "$LB" || nb_fail "a blur ended before the pings did"
nb_log "ping under load (both offload threads blurring): $LAT ms"
read -r _ p50 _ p99 _ max <<<"$LAT"
limit=$(nb_ping_p99_max)
gt "$limit" "$p99" || nb_fail "ping p99 $p99 ms under load (over $limit)"
r=$(call task.cancel '{"task": "offload-image-cancel-0001"}')
nb_assert_eq running "$(jget "$r" 'r["result"]["state"]')" "cancel: $r"
wait "$LB" || true
nb_assert_eq "499 cancelled by task.cancel" \
  "$(jget "$(cat loadB.json)" 'str(r["code"]) + " " + r.get("error", "")')" \
  "the cancelled blur ($(cat loadB.json) $(tail -n 3 loadB.err))"
wait "$LA" || nb_fail "the other blur failed: $(cat loadA.json)"
nb_assert_eq "0 4000 3000 jpeg" \
  "$(jf "$(cat loadA.json)" code width height format)" \
  "the blur that ran"
python3 - loadA.err <<'PY' || nb_fail "progress: $(cat loadA.err)"
import json, sys
p = [json.loads(l) for l in open(sys.argv[1]) if '"progress"' in l]
done = [x["done"] for x in p]
assert p and all(x["total"] == 1000 for x in p), p
assert done == sorted(done) and 0 < done[-1] <= 1000, done
print(f"{len(p)} progress replies, done {done}", file=sys.stderr)
PY
nb_log "load checked in $((SECONDS - T0)) s"

# ---- the result expired: its blob is collected -------------------------------
nb_wait_for "[[ ! -e blobs/blobs/${TTL_BLOB:0:2}/$TTL_BLOB ]]" 20 ||
  nb_fail "the expired result's blob was not collected"
nb_assert_eq 404 "$(jget "$(get16 "$TTL_BLOB")" 'r["code"]')" \
  "blob.get of the expired result"

# ---- a worker without the module ------------------------------------------
nb_stack kill-worker "$NB_DIR" 1 >/dev/null
mkdir empty
NIMBUS_WORKER_FLAGS="--modules image --modules-dir $NB_DIR/empty" \
  nb_stack worker "$NB_DIR" >/dev/null || nb_fail "the second worker did not start"
task pic.png '{"op": "strip"}'
pi fail "$A"
[[ $ERR == '503 the image module is not installed on this worker or does not'* ]] ||
  nb_fail "process.image without the module: $R"
nb_assert_eq 0 "$(jget "$(call ping '{}')" 'r["code"]')" "ping without the module"
mkdir more && echo "a note" >more/note.txt
nb_agent backup more >/dev/null 2>backup2.err || nb_fail "backup: $(cat backup2.err)"
nb_assert_eq 1 "$(jf "$(nb_agent backups --limit 1)" items)" \
  "backups without the module"
# A picture shared here is shared all the same, without a thumbnail.
s=$(nb_agent share media/pic.png --name without-module) || nb_fail "share without the module"
nb_assert_eq "image/png None" "$(jget "$s" 'r["mime"] + " " + str(r.get("thumbnail"))')" \
  "a share without the module"
grep -q "WK-SHARE-THUMB .* made without a thumbnail: 503" worker-2/log ||
  nb_fail "worker 2 did not say why the share has no thumbnail"
! grep -q 'WK-MODULE loaded' worker-2/log || nb_fail "worker 2 loaded a module"
nb_log "ok in $((SECONDS - T0)) s"
