# The configure check that guards the patched Paho build
# (cmake/NimbusPahoCheck.cmake, cmake/NimbusPaho.cmake): it takes the one
# archive the patches were read against and refuses each way an archive
# can differ where a patch depends on it: another version, Paho's TLS
# variant (SSL_read past the read-ahead), a call the build renames that is
# not there, a Paho waiting with select(). NIMBUS_PAHO_PATCHED=ON fails
# the configure on such an archive; AUTO falls back to the public API.
# The build under test chose as the check says.
# ctest: once (the plain build only: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"

T=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-pahocheck.XXXXXX")
nb_on_exit "rm -rf '$T'"
CHECK=$NIMBUS_SOURCE_DIR/cmake/NimbusPahoCheck.cmake
cache() { sed -n "s/^$1:[A-Z]*=//p" "$NIMBUS_BUILD_DIR/CMakeCache.txt"; }

A=$(cache PAHO_ASYNC_STATIC)
[[ -f $A ]] || { echo "no Paho static archive on this machine: nothing to check" >&2; exit 77; }
# CMake wraps its messages: one line, single spaces.
flat() { tr -s ' \n' '  '; }
check() {
  local o rc=0
  o=$(cmake -DARCHIVE="$1" -P "$CHECK" 2>&1) || rc=$?
  flat <<<"$o"
  return "$rc"
}

# The system's archive, and what the build under test made of it.
if out=$(check "$A"); then verdict=patched; else verdict=public; fi
nb_log "system archive: $out"
case $(cache NIMBUS_PAHO_PATCHED) in
  AUTO) nb_assert_eq "$verdict" "$(cache NIMBUS_PAHO_BUILD)" "the AUTO build's choice" ;;
  OFF) nb_assert_eq public "$(cache NIMBUS_PAHO_BUILD)" "the OFF build" ;;
  ON) nb_assert_eq patched "$(cache NIMBUS_PAHO_BUILD)" "the ON build" ;;
esac
[[ $verdict == patched ]] || { echo "the system's Paho is not the patched one: $out" >&2; exit 77; }

# Another version: the same archive with its version string changed.
V=$(grep -ao 'MQTTAsyncV3_Version [0-9.]*' "$A" | head -n1 | cut -d' ' -f2)
other=${V%.*}.$(( ${V##*.} == 9 ? 8 : ${V##*.} + 1 ))
[[ ${#other} == "${#V}" ]] || other=${V%.*}.0
LC_ALL=C sed "s/MQTTAsyncV3_Version $V/MQTTAsyncV3_Version $other/g" "$A" >"$T/version.a"
out=$(check "$T/version.a") && nb_fail "another version passed: $out"
grep -q "is Paho '$other', the patches fit $V only" <<<"$out" ||
  nb_fail "the version refusal does not say so: $out"

# A call the build renames, missing (here recv, as if Paho read with read()).
objcopy --redefine-sym recv=read "$A" "$T/norecv.a"
out=$(check "$T/norecv.a") && nb_fail "an archive without recv passed: $out"
grep -q "never calls recv" <<<"$out" || nb_fail "the recv refusal does not say so: $out"

# A Paho that waits with select() (PAHO_USE_SELECT).
objcopy --redefine-sym getsockopt=select "$A" "$T/select.a"
out=$(check "$T/select.a") && nb_fail "an archive calling select passed: $out"
grep -q "PAHO_USE_SELECT" <<<"$out" || nb_fail "the select refusal does not say so: $out"

# The TLS variant, when the system has it.
TLS=${A%mqtt3a.a}mqtt3as.a
if [[ -f $TLS ]]; then
  out=$(check "$TLS") && nb_fail "the TLS archive passed: $out"
  grep -q "TLS variant" <<<"$out" || nb_fail "the TLS refusal does not say so: $out"
fi

# ON with an archive that does not fit fails the configure, and says why;
# AUTO with it configures on the public API.
out=$(cmake -S "$NIMBUS_SOURCE_DIR" -B "$T/on" -DNIMBUS_PAHO_PATCHED=ON \
      -DPAHO_ASYNC_STATIC="$T/norecv.a" 2>&1 | flat) && nb_fail "ON configured with a bad archive"
grep -q "NIMBUS_PAHO_PATCHED=ON, but the archive never calls recv" <<<"$out" ||
  nb_fail "the ON configure does not say why: $out"
out=$(cmake -S "$NIMBUS_SOURCE_DIR" -B "$T/auto" -DNIMBUS_PAHO_PATCHED=AUTO \
      -DPAHO_ASYNC_STATIC="$T/norecv.a" 2>&1 | flat) ||
  nb_fail "AUTO did not configure: $out"
grep -q "Paho: public API, shared .*not patched: the archive never calls recv" <<<"$out" ||
  nb_fail "AUTO did not fall back to the public API: $out"
nb_log "ok"
