#!/usr/bin/env bash
# scripts/bench share: a share made by one terminal (T1) and fetched by
# another (T2), end to end through a real stack (Mosquitto, Redis,
# workers) on this machine, next to baselines measured in the same run:
#   - one file (default 100 MiB): MB/s of `nimbus-agent share` by T1
#     (upload and share.create) against `backup` of the same file by T1,
#     and of `fetch` by T2 (share.get, download, SHA-256 check, rename)
#     against T1's `restore` of that backup; target: each at least 0.9x of
#     its baseline (the median of the per-round ratios of --rounds rounds,
#     each round with new content, as scripts/bench backup does). Two
#     kinds of file: a text document, which the cloud keeps compressed (its
#     fetch waits until a janitor compressed it, so it reads the compressed
#     form; how long that took after the share is reported too), and random
#     bytes (a video), which it keeps as they are;
#   - share.get of a 1 KiB shared text and blob.get of its bytes, by T2 one
#     after the other (tests/bench/nb-ping-load --op share): p50 and p99 ms
#     at 1 and at 16 in flight, against two pings one after the other
#     through the same stack (--op ping2: the floor of two dependent round
#     trips), the medians of the rounds;
#   - the workers' peak RSS.
# A measurement, not a test: a missed target prints MISS and the exit
# status stays 0; only a run that breaks exits 1 (2: usage).
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

MIB=100
SECS=5

usage() {
  cat <<'USAGE'
usage: scripts/bench share [options]
  Shares a file from one terminal and fetches it on another through a stack
  of its own, next to the backup and restore of the same file, and times
  share.get with a 1 KiB fetch next to two pings; prints a Markdown table
  with the baseline beside each figure and its target (PASS/MISS).
options:
  --mib N        size of the shared file in MiB (default 100)
  --seconds S    measured seconds of each latency run (default 5)
  --jobs N       the agent's tasks in flight for transfers (default 16)
  --rounds R     rounds (default 3); each round changes the files' first
                 bytes, so each backup and share uploads them whole
  --workers N    workers in the stack (default $NIMBUS_WORKERS or 2)
  --no-build     use the binaries as they are
  --keep         keep the stack directory (data, logs) afterwards
environment:
  NIMBUS_BUILD_DIR (default <repo>/build), TMPDIR (where the stack and the
  data live: put it on the disk you want to measure)
Exit status: 0 when the bench ran (PASS or MISS), 1 when it broke, 2 usage.
USAGE
}

while (($#)); do
  bench_opt "$@"
  if ((BENCH_SHIFT)); then shift "$BENCH_SHIFT"; continue; fi
  case $1 in
    --mib) MIB=${2:?}; shift 2 ;;
    --seconds) SECS=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
bench_check_numbers MIB SECS JOBS WORKERS ROUNDS

BENCH_PROGRAMS="nimbus-agent nimbus-worker nimbusctl nb-ping-load"
bench_build nimbus-agent-cli nimbus-worker nimbusctl nimbus_auth nb-ping-load
bench_stack_up share
declare -A PW SD
for t in t1 t2; do
  eval "$(bench_terminal "$t")"
  PW[$t]=$NIMBUS_PASSWORD
  SD[$t]=$NIMBUS_STATE_DIR
done
# as T CMD...: CMD as terminal T.
as() {
  local t=$1
  shift
  NIMBUS_TERMINAL=$t NIMBUS_PASSWORD=${PW[$t]} NIMBUS_STATE_DIR=${SD[$t]} "$@"
}
rcli() {
  REDISCLI_AUTH=$NIMBUS_REDIS_PASSWORD \
    redis-cli -h "$NIMBUS_REDIS_HOST" -p "$NIMBUS_REDIS_PORT" "$@"
}
D=$STACK_DIR/data
mkdir -p "$D/doc" "$D/video"

# --- data -------------------------------------------------------------

BYTES=$((MIB * 1048576))
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.3f", b / 1e6 }')
# Per round and kind: the file's blob twice (backup, share), a restore and
# a fetch; plus the files and a margin.
need_kib=$(((2 + 4 * ROUNDS) * 2 * MIB * 1024 + 1048576))
have_kib=$(df -Pk "$D" | awk 'NR == 2 { print $4 }')
((have_kib >= need_kib)) ||
  die "$((need_kib / 1048576)) GiB free needed under $D for --mib $MIB --rounds $ROUNDS; $((have_kib / 1048576)) GiB there"
say "writing a ${MIB} MiB text document and ${MIB} MiB of random bytes under $D"
# Lines of words drawn from a vocabulary of 20,000 made-up ones: zstd
# keeps about half of it at level 3, one frame per 256 KiB segment.
python3 - "$D/doc/report.txt" "$BYTES" <<'EOF'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(3)
words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
         for _ in range(20000)]
with open(path, "w") as f:
    size = 0
    while size < n:
        line = " ".join(rnd.choices(words, k=4000)) + ".\n"
        line = line[: n - size]
        f.write(line)
        size += len(line)
EOF
head -c "$BYTES" /dev/urandom >"$D/video/clip.mp4"
python3 -c 'import sys; sys.stdout.write(("a short note to share, " * 60)[:1024])' >"$D/note.txt"
sync

COMMON=(--json --timeout 3600000 --jobs "$JOBS")
AGENT=("$BIN/nimbus-agent")
# secs_of OUT-JSON CMD...: run_agent's seconds.
secs_of() { local s _r; read -r s _r < <(run_agent "$@"); echo "$s"; }

# --- transfers ----------------------------------------------------------

LOAD1=$(awk '{ print $1 }' /proc/loadavg)
declare -A V=()  # kind.measure -> space-separated values, one per round
KINDS=(doc video)
declare -A FILE=([doc]=$D/doc/report.txt [video]=$D/video/clip.mp4)
for ((r = 1; r <= ROUNDS; r++)); do
  for k in "${KINDS[@]}"; do
    f=${FILE[$k]}
    # New content for the backup, and again for the share: each uploads
    # the whole file (blob.has would find it otherwise).
    printf 'backup %05d ' "$r" | dd of="$f" bs=1 seek=0 conv=notrunc status=none
    say "round $r/$ROUNDS, $k: backup by t1"
    bb=$(as t1 secs_of "$D/bb.json" "${AGENT[@]}" backup "${COMMON[@]}" \
      --label "$k $r" "$(dirname "$f")")
    [[ $(jfield bytes_sent <"$D/bb.json") == "$BYTES" ]] ||
      die "the backup sent $(jfield bytes_sent <"$D/bb.json") bytes, not $BYTES"
    snap=$(jfield snapshot <"$D/bb.json")
    say "round $r/$ROUNDS, $k: restore by t1"
    br=$(as t1 secs_of "$D/br.json" "${AGENT[@]}" restore "${COMMON[@]}" \
      --snapshot "$snap" "$D/restore-$k-$r")
    cmp -s "$f" "$D/restore-$k-$r/$(basename "$(dirname "$f")")/$(basename "$f")" ||
      die "the restored file differs"

    printf 'share  %05d ' "$r" | dd of="$f" bs=1 seek=0 conv=notrunc status=none
    say "round $r/$ROUNDS, $k: share by t1"
    sh=$(as t1 secs_of "$D/sh.json" "${AGENT[@]}" share "${COMMON[@]}" \
      --name "$k-$r" "$f")
    t_shared=$(now)
    read -r token blob < <(python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["token"], r["blob"])' <"$D/sh.json")
    # The document is fetched in its compressed form: wait for it.
    waited=''
    if [[ $k == doc ]]; then
      until [[ -n $(rcli hget "nb:blob:$blob" stored) ]]; do
        (($(awk -v a="$t_shared" -v b="$(now)" 'BEGIN { print (b - a > 300) }'))) &&
          die "the document was not looked at within 300 s"
        sleep 0.05
      done
      waited=$(awk -v a="$t_shared" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
      stored=$(rcli hget "nb:blob:$blob" stored)
      ((stored < BYTES)) || die "the document was not kept compressed ($stored bytes)"
      V[$k.stored]+=" $stored"
      V[$k.waited]+=" $waited"
    fi
    say "round $r/$ROUNDS, $k: fetch by t2"
    fe=$(as t2 secs_of "$D/fe.json" "${AGENT[@]}" fetch "${COMMON[@]}" "$token" \
      "$D/fetch-$k-$r")
    cmp -s "$f" "$D/fetch-$k-$r" || die "the fetched file differs"
    V[$k.bb]+=" $(fdiv "$MB" "$bb")"
    V[$k.br]+=" $(fdiv "$MB" "$br")"
    V[$k.sh]+=" $(fdiv "$MB" "$sh")"
    V[$k.fe]+=" $(fdiv "$MB" "$fe")"
    V[$k.rsh]+=" $(ratio "$bb" "$sh")"
    V[$k.rfe]+=" $(ratio "$br" "$fe")"
    say "round $r/$ROUNDS, $k: backup $(fdiv "$MB" "$bb"), share $(fdiv "$MB" "$sh") MB/s; restore $(fdiv "$MB" "$br"), fetch $(fdiv "$MB" "$fe") MB/s${waited:+; compressed $waited s after the share}"
  done
done
W_HWM=$(worker_hwm)

# --- latency ------------------------------------------------------------

say "a 1 KiB share for the latency runs"
as t1 "${AGENT[@]}" share --json --name note.txt "$D/note.txt" >"$D/note.json" ||
  die "sharing the note failed"
NTOKEN=$(jfield token <"$D/note.json")
NBLOB=$(jfield blob <"$D/note.json")
NSTORED=$(jfield stored_size <"$D/note.json")
# load OP INFLIGHT: one nb-ping-load run as t2; prints its result line.
load() {
  local out
  out=$("$BIN/nb-ping-load" --host "$NIMBUS_MQTT_HOST" --port "$NIMBUS_MQTT_PORT" \
    --user t2 --password "${PW[t2]}" --state-dir "$STACK_DIR/load-state" \
    --op "$1" --token "$NTOKEN" --blob "$NBLOB" --inflight "$2" \
    --seconds "$SECS" --warmup 200) || die "nb-ping-load --op $1 --inflight $2 failed"
  grep -q ' errors=0 ' <<<"$out" || die "nb-ping-load --op $1: $out"
  say "$1, $2 in flight: $out"
  echo "$out"
}
mkdir -p "$STACK_DIR/load-state"
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
for ((r = 1; r <= ROUNDS; r++)); do
  for n in 1 16; do
    for op in ping2 share; do
      line=$(load "$op" "$n")
      V[lat.$op.$n.p50]+=" $(field p50_ms "$line")"
      V[lat.$op.$n.p99]+=" $(field p99_ms "$line")"
    done
  done
done
LOAD2=$(awk '{ print $1 }' /proc/loadavg)

# --- the table ------------------------------------------------------------

# shellcheck disable=SC2086
med() { median ${V[$1]}; }
mb() { printf '%.1f' "$(med "$1")"; }
W_MAX=0
for kb in $W_HWM; do ((kb > W_MAX)) && W_MAX=$kb; done
echo
echo "scripts/bench share: $(nproc) cores, $WORKERS worker(s), --jobs $JOBS," \
  "$ROUNDS round(s), data and stack on $(df -P "$STACK_DIR" | awk 'NR == 2 { print $1 }');" \
  "load average $LOAD1 before, $LOAD2 after"
echo
echo "| measure | value | baseline | ratio | target | |"
echo "| --- | ---: | ---: | ---: | --- | --- |"
for k in "${KINDS[@]}"; do
  if [[ $k == doc ]]; then
    what="$MIB MiB text document"
    how="kept compressed: $(fdiv "$(med doc.stored)" 1048576) MiB, done $(med doc.waited) s after the share"
  else
    what="$MIB MiB of random bytes"
    how="kept as it is"
  fi
  printf '| share by t1, %s | %s MB/s | backup by t1 %s MB/s | %.2f | >= 0.9x | %s |\n' \
    "$what" "$(mb "$k.sh")" "$(mb "$k.bb")" "$(med "$k.rsh")" "$(ok_if "$(med "$k.rsh") >= 0.9")"
  printf '| fetch by t2, %s (%s) | %s MB/s | restore by t1 %s MB/s | %.2f | >= 0.9x | %s |\n' \
    "$what" "$how" "$(mb "$k.fe")" "$(mb "$k.br")" "$(med "$k.rfe")" "$(ok_if "$(med "$k.rfe") >= 0.9")"
done
for n in 1 16; do
  for p in p50 p99; do
    a=$(med "lat.share.$n.$p") b=$(med "lat.ping2.$n.$p")
    printf '| share.get + 1 KiB fetch, %d in flight, %s | %s ms | ping + ping %s ms | %s | | |\n' \
      "$n" "$p" "$a" "$b" "$(ratio "$a" "$b")"
  done
done
printf '| peak RSS, each worker, through the transfers | %s MiB (max of%s KiB) | | | <= 128 MiB | %s |\n' \
  "$(fdiv "$W_MAX" 1024)" "$W_HWM" "$(ok_if "$W_MAX <= 128 * 1024")"
echo
echo "The 1 KiB note is stored in $NSTORED bytes. Rounds (MB/s; ratio to the baseline):"
for k in "${KINDS[@]}"; do
  read -ra a <<<"${V[$k.sh]}"
  read -ra b <<<"${V[$k.bb]}"
  read -ra c <<<"${V[$k.fe]}"
  read -ra d <<<"${V[$k.br]}"
  read -ra e <<<"${V[$k.rsh]}"
  read -ra g <<<"${V[$k.rfe]}"
  for ((i = 0; i < ROUNDS; i++)); do
    echo "  $k, round $((i + 1)): share ${a[i]} (${e[i]}x of backup ${b[i]}), fetch ${c[i]} (${g[i]}x of restore ${d[i]})"
  done
done
