# Races between tasks of one upload, each pair sent at once to a pool of
# two workers: two commits of the same upload under different task ids
# both answer with the blob (the one that finds the file moved gives the
# other's answer, no 404), and two first puts of one upload with different
# sizes: exactly one fixes the upload, the other is refused (409, or 503
# when it lost inside the commit script) and left no trace.
source "$(dirname "$0")/lib.sh"
nb_stack_up 2
nb_terminal rita
W=$NB_DIR/work
mkdir -p "$W"

head -c $((4 * 262144)) /dev/urandom >"$W/file"
size=$(stat -c %s "$W/file")
sha=$(sha256sum "$W/file" | cut -c1-64)
(cd "$W" && split -b 262144 -d -a 2 file seg)

for round in 1 2 3; do
  up=race$round
  for i in $(seq 0 3); do
    r=$(call blob.put "{\"upload\": \"$up\", \"offset\": $((i * 262144)), \"size\": $size, \"sha256\": \"$sha\"}" --data-file "$W/seg$(printf %02d "$i")")
    [[ $(jget "$r" 'r["status"]') == ok ]] || nb_fail "put $i: $r"
  done
  # Two devices of the terminal: one client id each (one would take the
  # other's MQTT session).
  call blob.commit "{\"upload\": \"$up\"}" --state-dir "$W/dev1" >"$W/c1" &
  p1=$!
  call blob.commit "{\"upload\": \"$up\"}" --state-dir "$W/dev2" >"$W/c2" &
  wait $p1 $!
  for f in c1 c2; do
    r=$(cat "$W/$f")
    nb_assert_eq "ok $sha" "$(jget "$r" 'r["status"]+" "+r["result"]["blob"]')" "round $round, commit $f"
  done
done

# Two first puts with different sizes (and hashes) for one upload.
head -c 1000 /dev/urandom >"$W/x"
head -c 2000 /dev/urandom >"$W/y"
for round in 1 2 3; do
  up=first$round
  call blob.put "{\"upload\": \"$up\", \"offset\": 0, \"size\": 1000, \"sha256\": \"$(sha256sum "$W/x" | cut -c1-64)\"}" --data-file "$W/x" --state-dir "$W/dev1" >"$W/p1" &
  p1=$!
  call blob.put "{\"upload\": \"$up\", \"offset\": 0, \"size\": 2000, \"sha256\": \"$(sha256sum "$W/y" | cut -c1-64)\"}" --data-file "$W/y" --state-dir "$W/dev2" >"$W/p2" &
  wait $p1 $!
  a=$(jget "$(cat "$W/p1")" 'r["code"]')
  b=$(jget "$(cat "$W/p2")" 'r["code"]')
  case "$a $b" in
    "0 409"|"0 503") win=1000 ;;
    "409 0"|"503 0") win=2000 ;;
    *) nb_fail "round $round: racing first puts answered $a and $b" ;;
  esac
  r=$(call blob.status "{\"upload\": \"$up\"}")
  nb_assert_eq "$win $win []" "$(jget "$r" 'str(r["result"]["size"])+" "+str(r["result"]["have"])+" "+str(r["result"]["missing"])')" "round $round: the winner's upload"
  r=$(call blob.commit "{\"upload\": \"$up\"}")
  nb_assert_eq "ok $win" "$(jget "$r" 'r["status"]+" "+str(r["result"]["size"])')" "round $round: commit of the winner's bytes"
done
nb_log "ok"
