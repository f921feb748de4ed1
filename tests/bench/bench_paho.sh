#!/usr/bin/env bash
# scripts/bench paho: what each Paho build costs (cmake/NimbusPaho.cmake).
# Builds the patched tree and the one on Paho's public API only, then runs
# `scripts/bench ping` and `scripts/bench backup` on each, alternating
# builds within each round so that both see the same machine, and prints
# the medians side by side with their ratio. Each bench run starts a stack
# of its own from its own build (worker, agent, plugin); the raw MQTT echo
# of the ping bench is linked against the same Paho as its build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

usage() {
  cat <<'USAGE'
usage: scripts/bench paho [options]
  scripts/bench ping and scripts/bench backup on the patched Paho build and
  on the public-API build (NIMBUS_PAHO_PATCHED=OFF), R rounds, the two
  builds alternating in each; prints a Markdown table of the medians.
options:
  --rounds R     rounds (default 3)
  --seconds S    measured seconds per ping run (default 5)
  --big-mib N    the backup bench's big file in MiB (default 256)
  --small N      the backup bench's small files (default 2000)
  --no-build     use both trees as they are
environment:
  NIMBUS_BUILD_DIR  the patched tree (default <repo>/build); the public one
                    is the same name with -public
Exit status: 0 when the bench ran, 1 when it broke, 2 usage.
USAGE
}

ROUNDS=3 SECS=5 BIG=256 SMALL=2000 BUILD_FIRST=1
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --big-mib) BIG=$2; shift 2 ;;
    --small) SMALL=$2; shift 2 ;;
    --no-build) BUILD_FIRST=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
say() { echo "bench paho: $*" >&2; }
die() { say "$*"; exit 1; }

PATCHED=${NIMBUS_BUILD_DIR:-$ROOT/build}
[[ $PATCHED == /* ]] || PATCHED=$PWD/$PATCHED
PUBLIC=$PATCHED-public
if ((BUILD_FIRST)); then
  say "building $PATCHED (patched) and $PUBLIC (public API)"
  NIMBUS_PAHO_PATCHED=ON NIMBUS_BUILD_DIR=$PATCHED "$ROOT/scripts/build" >&2 ||
    die "the patched build failed"
  NIMBUS_PAHO_PATCHED=OFF NIMBUS_BUILD_DIR=$PUBLIC "$ROOT/scripts/build" >&2 ||
    die "the public-API build failed"
fi
for d in "$PATCHED" "$PUBLIC"; do
  [[ -x $d/bin/nimbus-worker ]] || die "no build in $d"
done
[[ $(sed -n 's/^NIMBUS_PAHO_BUILD:INTERNAL=//p' "$PATCHED/CMakeCache.txt") == patched ]] ||
  die "$PATCHED is not the patched build"
[[ $(sed -n 's/^NIMBUS_PAHO_BUILD:INTERNAL=//p' "$PUBLIC/CMakeCache.txt") == public ]] ||
  die "$PUBLIC is not the public-API build"

T=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-benchpaho.XXXXXX")
trap 'rm -rf "$T"' EXIT

# Cell c (the first cell is 1) of the Markdown row whose first cell is
# exactly `key`, its first word only (the unit dropped).
cell() {
  awk -F'|' -v k="$2" -v c="$3" '{
      a = $2; gsub(/^ +| +$/, "", a)
      if (a == k) { v = $(c + 1); gsub(/^ +| +$/, "", v); sub(/ .*/, "", v); print v; exit }
    }' "$1"
}

declare -A V=()
add() { V[$1]+=" $2"; }
median() {
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g |
    awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

for ((k = 1; k <= ROUNDS; k++)); do
  for b in patched public; do
    dir=$PATCHED
    [[ $b == public ]] && dir=$PUBLIC
    say "round $k/$ROUNDS, $b: ping"
    NIMBUS_BUILD_DIR=$dir "$ROOT/scripts/bench" ping --no-build --rounds 1 \
      --seconds "$SECS" >"$T/ping" 2>"$T/ping.err" ||
      { cat "$T/ping.err" >&2; die "ping bench failed ($b)"; }
    add "$b.raw1" "$(cell "$T/ping" 1 3)"
    add "$b.p50" "$(cell "$T/ping" 1 6)"
    add "$b.p99" "$(cell "$T/ping" 1 7)"
    add "$b.raw64" "$(cell "$T/ping" 64 2)"
    add "$b.rate64" "$(cell "$T/ping" 64 5)"
    add "$b.cpu_agent" "$(cell "$T/ping" 'nimbus, 64 in flight' 2)"
    add "$b.cpu_worker" "$(cell "$T/ping" 'nimbus, 64 in flight' 4)"
    say "round $k/$ROUNDS, $b: backup"
    NIMBUS_BUILD_DIR=$dir "$ROOT/tests/bench/bench_backup.sh" --no-build \
      --rounds 1 --big-mib "$BIG" --small "$SMALL" >"$T/backup" \
      2>"$T/backup.err" ||
      { cat "$T/backup.err" >&2; die "backup bench failed ($b)"; }
    add "$b.bk" "$(cell "$T/backup" "backup, one $BIG MiB file" 2)"
    add "$b.rs" "$(cell "$T/backup" "restore, one $BIG MiB file" 2)"
    add "$b.bks" "$(cell "$T/backup" "backup, $SMALL files of 1-4 KiB" 2)"
    add "$b.rss" "$(cell "$T/backup" "restore, $SMALL files of 1-4 KiB" 2)"
  done
done

row() { # label key better(lower|higher)
  local p q r
  p=$(median "${V[patched.$2]}")
  q=$(median "${V[public.$2]}")
  r=$(awk -v a="$q" -v b="$p" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')
  printf '| %s | %s | %s | %sx |\n' "$1" "$p" "$q" "$r"
}
echo
echo "scripts/bench paho: $(nproc) cores; $ROUNDS round(s), each: ping" \
  "($SECS s per run) and backup ($BIG MiB, $SMALL small files) on the" \
  "patched build, then on the public-API build; medians; load average" \
  "$(awk '{ print $1 }' /proc/loadavg) at the end"
echo
echo "| measure | patched | public API | public/patched |"
echo "| --- | ---: | ---: | ---: |"
row "ping p50 ms, 1 in flight" p50
row "ping p99 ms, 1 in flight" p99
row "raw MQTT echo p50 ms, 1 in flight (same Paho)" raw1
row "ping rate/s, 64 in flight" rate64
row "raw MQTT echo rate/s, 64 in flight (same Paho)" raw64
row "agent CPU us per ping, 64 in flight" cpu_agent
row "worker CPU us per ping, 64 in flight" cpu_worker
row "backup MB/s, one $BIG MiB file" bk
row "restore MB/s, one $BIG MiB file" rs
row "backup files/s, $SMALL small files" bks
row "restore files/s, $SMALL small files" rss
echo
echo "Per round (patched / public): ping p50${V[patched.p50]} /${V[public.p50]};" \
  "rate 64${V[patched.rate64]} /${V[public.rate64]};" \
  "backup MB/s${V[patched.bk]} /${V[public.bk]}"
