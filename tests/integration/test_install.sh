# The installed package (cmake/NimbusInstall.cmake), proven rather than
# assumed: `cmake --install` of this build into a temporary prefix gives
# the programs, libnimbus-agent.so.1 exporting nimbus_* only (and
# libnimbus-agent.a the same, when built), the headers with the version
# macros, the plugin and the modules where GNUInstallDirs puts them; the
# installed programs run from the prefix (their RPATH), the installed
# worker takes the prefix's modules; nimbus-agent --print-config masks the
# password. Then the example app
# (examples/backup-one) is built against the installed tree, not the
# build tree, through pkg-config and through find_package, shared and
# static, and each build backs a file up against a real stack.
# ctest: once (the plain build only: see tests/integration/CMakeLists.txt)
source "$(dirname "$0")/lib.sh"

P=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-install.XXXXXX")
nb_on_exit "rm -rf '$P'"
cmake --install "$NIMBUS_BUILD_DIR" --prefix "$P" >"$P.log" 2>&1 ||
  { cat "$P.log" >&2; rm -f "$P.log"; nb_fail "cmake --install failed"; }
rm -f "$P.log"
# Where GNUInstallDirs puts the libraries for this prefix (lib, or
# lib64 on some systems).
LIB=$(cd "$P" && ls -d lib*/libnimbus-agent.so | head -n1)
LIB=${LIB%/libnimbus-agent.so}
[[ -n $LIB ]] || nb_fail "no libnimbus-agent.so installed under $P"
VERSION=$(sed -n 's/^project(nimbus VERSION \([0-9.]*\).*/\1/p' \
  "$NIMBUS_SOURCE_DIR/CMakeLists.txt")
MAJOR=${VERSION%%.*}

for f in bin/nimbus-agent bin/nimbus-worker bin/nimbusctl \
         "$LIB/libnimbus-agent.so.$VERSION" include/nimbus/agent.h \
         include/nimbus/errors.h "$LIB/nimbus/nimbus_auth.so" \
         "$LIB/nimbus/modules/nimbus-image.so" \
         "$LIB/pkgconfig/nimbus-agent.pc" \
         "$LIB/cmake/nimbus-agent/nimbus-agent-config.cmake" \
         "$LIB/cmake/nimbus-agent/nimbus-agent-config-version.cmake"; do
  [[ -f $P/$f ]] || nb_fail "not installed: $f"
done
nb_assert_eq "libnimbus-agent.so.$VERSION" \
  "$(readlink "$P/$LIB/libnimbus-agent.so.$MAJOR")" "libnimbus-agent.so.$MAJOR ->"
nb_assert_eq "libnimbus-agent.so.$MAJOR" \
  "$(readlink "$P/$LIB/libnimbus-agent.so")" "libnimbus-agent.so ->"
soname=$(readelf -d "$P/$LIB/libnimbus-agent.so.$VERSION" |
  sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
nb_assert_eq "libnimbus-agent.so.$MAJOR" "$soname" "soname"
# The version script's promise: every symbol it exports is nimbus_*
# (besides the version node itself), and the API is there.
syms=$(nm -D --defined-only "$P/$LIB/libnimbus-agent.so.$MAJOR")
others=$(awk '$3 !~ /^nimbus_/ && $3 !~ /^NIMBUS_AGENT_/' <<<"$syms")
[[ -z $others ]] || nb_fail "libnimbus-agent exports more than nimbus_*: $others"
grep -Eq ' T nimbus_blob_upload(@@.*)?$' <<<"$syms" ||
  nb_fail "nimbus_blob_upload not exported"
# Each module and the plugin installed is the one built.
for m in "$NIMBUS_BUILD_DIR"/modules/nimbus-*.so; do
  cmp -s "$m" "$P/$LIB/nimbus/modules/${m##*/}" ||
    nb_fail "module ${m##*/} not installed as built"
done

# The installed programs run from the prefix, with its library (RPATH),
# not the build tree's.
got=$(ldd "$P/bin/nimbus-agent" | awk '$1 ~ /^libnimbus-agent/ {print $3}')
nb_assert_eq "$(realpath "$P/$LIB/libnimbus-agent.so.$MAJOR")" \
  "$(realpath "$got")" "the installed nimbus-agent's libnimbus-agent"
"$P/bin/nimbus-agent" --help >/dev/null || nb_fail "installed nimbus-agent --help"
"$P/bin/nimbusctl" --help >/dev/null || nb_fail "installed nimbusctl --help"
# The installed worker's default modules_dir is its prefix's; the build
# tree's worker keeps the build tree's.
nb_assert_eq "modules_dir = $(realpath "$P/$LIB/nimbus/modules")" \
  "$("$P/bin/nimbus-worker" --print-config | grep '^modules_dir =')" \
  "installed worker's modules_dir"
nb_assert_eq "modules_dir = $NIMBUS_BUILD_DIR/modules" \
  "$("$NIMBUS_BIN/nimbus-worker" --print-config | grep '^modules_dir =')" \
  "build tree worker's modules_dir"

# nimbus-agent --print-config: the options in effect, from a config file,
# the environment and the flags (later winning), the password masked.
printf 'mqtt_host = broker.example\nmqtt_port = 1999\npassword = fromfile\n' >"$P/agent.conf"
out=$(NIMBUS_TERMINAL=t-env NIMBUS_PASSWORD=hunter2 "$P/bin/nimbus-agent" \
  --config "$P/agent.conf" --port 2000 --print-config)
nb_assert_eq "broker.example 2000 t-env (set)" \
  "$(awk -F' = ' '$1 == "mqtt_host" {h=$2} $1 == "mqtt_port" {p=$2} $1 == "terminal" {t=$2} $1 == "password" {w=$2} END {print h, p, t, w}' <<<"$out")" \
  "nimbus-agent --print-config"
grep -Eq 'hunter2|fromfile' <<<"$out" && nb_fail "--print-config shows the password: $out"

export PKG_CONFIG_PATH=$P/$LIB/pkgconfig
nb_assert_eq "$VERSION" "$(pkg-config --modversion nimbus-agent)" \
  "pkg-config --modversion"

# nimbus/version.h states the project's version; nimbus_agent_version()
# (through the example's usage line, below) says the same at run time.
for part in "MAJOR $MAJOR" "MINOR $(cut -d. -f2 <<<"$VERSION")" \
            "PATCH $(cut -d. -f3 <<<"$VERSION")"; do
  grep -q "^#define NIMBUS_AGENT_VERSION_${part}\$" "$P/include/nimbus/version.h" ||
    nb_fail "version.h has no NIMBUS_AGENT_VERSION_${part}"
done
grep -q "^#define NIMBUS_AGENT_VERSION \"$VERSION\"\$" "$P/include/nimbus/version.h" ||
  nb_fail "version.h has no NIMBUS_AGENT_VERSION \"$VERSION\""

# libnimbus-agent.a (NIMBUS_AGENT_STATIC; scripts/build turns it on):
# one object, whose global symbols are nimbus_* only, Paho inside it.
STATIC=0
if [[ -f $P/$LIB/libnimbus-agent.a ]]; then
  STATIC=1
  defined=$(nm -g --defined-only "$P/$LIB/libnimbus-agent.a" | awk 'NF == 3')
  others=$(awk '$3 !~ /^nimbus_/' <<<"$defined")
  [[ -z $others ]] || nb_fail "libnimbus-agent.a defines more than nimbus_*: $(head -n5 <<<"$others")"
  nb_assert_eq "$(awk '$3 ~ /^nimbus_/ {print $3}' <<<"$syms" | sed 's/@.*//' | sort)" \
    "$(awk '{print $3}' <<<"$defined" | sort)" "libnimbus-agent.a's symbols against the .so's"
  [[ -f $P/$LIB/pkgconfig/nimbus-agent-static.pc &&
     -f $P/$LIB/cmake/nimbus-agent/nimbus-agent-static-targets.cmake ]] ||
    nb_fail "libnimbus-agent.a installed without nimbus-agent-static.pc or nimbus::agent_static"
else
  nb_log "no libnimbus-agent.a in this build (NIMBUS_AGENT_STATIC off): static variant not checked"
fi

# ---- The example app, built against the installed tree ----------------
# In a sanitizer build the library is instrumented, so is the app.
cflags="-O1 -g -Wall -Wextra -Werror"
if [[ ${NIMBUS_SANITIZE:-0} == 1 ]]; then
  cflags+=" -fsanitize=address,undefined -fno-omit-frame-pointer"
fi
EX=$P/example
cp -r "$NIMBUS_SOURCE_DIR/examples/backup-one" "$EX"
builds=(pkgconfig cmake)
# pkg-config: the example's Makefile (RPATH=1: the prefix's lib directory
# written into the program).
PKG_CONFIG_PATH=$P/$LIB/pkgconfig make -s -C "$EX" CFLAGS="$cflags" \
  LDFLAGS="$cflags" RPATH=1 >"$P/make.log" 2>&1 ||
  { cat "$P/make.log" >&2; nb_fail "make (pkg-config) of the example failed"; }
mv "$EX/backup-one" "$P/backup-one-pkgconfig"
# find_package, from the installed prefix only (no package registry, no
# build tree).
cmake_ex() { # cmake_ex BUILD-DIR [-D...]
  local dir=$1
  shift
  cmake -S "$EX" -B "$dir" -DCMAKE_PREFIX_PATH="$P" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_C_FLAGS="$cflags" \
    -DCMAKE_EXE_LINKER_FLAGS="$cflags" "$@" >"$dir.log" 2>&1 &&
    cmake --build "$dir" >>"$dir.log" 2>&1 ||
    { cat "$dir.log" >&2; nb_fail "cmake build of the example failed ($*)"; }
}
cmake_ex "$P/ex-cmake"
mv "$P/ex-cmake/backup-one" "$P/backup-one-cmake"
grep -q "nimbus-agent_DIR:PATH=$P/$LIB/cmake/nimbus-agent" "$P/ex-cmake/CMakeCache.txt" ||
  nb_fail "find_package(nimbus-agent) did not find the installed package"
if ((STATIC)); then
  PKG_CONFIG_PATH=$P/$LIB/pkgconfig make -s -C "$EX" CFLAGS="$cflags" \
    LDFLAGS="$cflags" STATIC=1 >"$P/make.log" 2>&1 ||
    { cat "$P/make.log" >&2; nb_fail "make STATIC=1 of the example failed"; }
  mv "$EX/backup-one" "$P/backup-one-pkgconfig-static"
  cmake_ex "$P/ex-cmake" -DNIMBUS_STATIC=ON
  mv "$P/ex-cmake/backup-one" "$P/backup-one-cmake-static"
  builds+=(pkgconfig-static cmake-static)
fi
for b in "${builds[@]}"; do
  lib=$(ldd "$P/backup-one-$b" | awk '$1 ~ /^libnimbus-agent/ {print $3}')
  if [[ $b == *static ]]; then
    [[ -z $lib ]] || nb_fail "backup-one-$b links $lib, not libnimbus-agent.a"
  else
    nb_assert_eq "$(realpath "$P/$LIB/libnimbus-agent.so.$MAJOR")" \
      "$(realpath "$lib")" "backup-one-$b's libnimbus-agent"
  fi
  out=$("$P/backup-one-$b" 2>&1) && nb_fail "backup-one without FILE exited 0"
  [[ $out == *"(libnimbus-agent $VERSION)"* ]] ||
    nb_fail "backup-one-$b: nimbus_agent_version() is not $VERSION: $out"
done

# ---- ... and run against a real stack -----------------------------------
nb_stack_up 1
nb_terminal app
for b in "${builds[@]}"; do
  f=$NB_DIR/photo-$b.jpg
  head -c $((300000 + RANDOM)) /dev/urandom >"$f"
  out=$("$P/backup-one-$b" "$f" 2>"$NB_DIR/err") ||
    nb_fail "backup-one-$b: $(cat "$NB_DIR/err") $out"
  sha=$(sha256sum "$f" | cut -c1-64)
  grep -q '^pong: {"worker"=>' <<<"$out" || nb_fail "backup-one-$b: no pong: $out"
  grep -qx "uploaded $f: blob $sha ($(stat -c %s "$f") bytes)" <<<"$out" ||
    nb_fail "backup-one-$b: upload line: $out"
  snap=$(sed -n 's/^snapshot: {"snapshot"=>"\([^"]*\)".*/\1/p' <<<"$out")
  [[ -n $snap ]] || nb_fail "backup-one-$b: no snapshot: $out"
  # The cloud holds that snapshot: the file, its blob, its size.
  r=$(call backup.get "{\"snapshot\": \"$snap\"}")
  nb_assert_eq "photo-$b.jpg $sha $(stat -c %s "$f") backup-one" \
    "$(jget "$r" '" ".join([r["result"]["items"][0]["name"], r["result"]["items"][0]["blob"], str(r["result"]["items"][0]["size"]), r["result"]["label"]])')" \
    "backup-one-$b's snapshot in the cloud"
done
nb_log "example built and run: ${builds[*]}"
