# The installed package (cmake/NimbusInstall.cmake), proven rather than
# assumed: `cmake --install` of this build into a temporary prefix gives
# the programs, libnimbus-agent.so.1 exporting nimbus_* only, the headers,
# the plugin and the modules where GNUInstallDirs puts them; the installed
# programs run from the prefix (their RPATH), the installed worker takes
# the prefix's modules.
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

export PKG_CONFIG_PATH=$P/$LIB/pkgconfig
nb_assert_eq "$VERSION" "$(pkg-config --modversion nimbus-agent)" \
  "pkg-config --modversion"
