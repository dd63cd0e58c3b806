#!/usr/bin/env bash
# make install into a staging directory (DESTDIR) as a packager would, then use what it
# installed as a user would: a C program built with `pkg-config --cflags --libs reduce`
# and nothing else, run against the staged library (LD_LIBRARY_PATH: the staged
# library is not where the dynamic linker looks); the same program linked statically
# (pkg-config --static: Libs.private); the installed nbdkit plugin served by nbdkit.
# Then make uninstall, which must leave no file behind. Run by make test (install-test).
# (Checks read whole outputs: `| grep -q` would end a pipeline early, and pipefail
# would count the writer's SIGPIPE as a failure.)
set -euo pipefail
cd "$(dirname "$0")/../.."

MAKE=${MAKE:-make}
CC=${TEST_CC:-cc}
PREFIX=/usr/local
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/reduce-install.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root # the DESTDIR
OUT=$STAGE/out
mkdir -p "$ROOT" "$OUT/pm"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

"$MAKE" -s --no-print-directory install DESTDIR="$ROOT" PREFIX="$PREFIX" >"$OUT/install.log" ||
	fail "make install: $(cat "$OUT/install.log")"

# Every file, at its place, and nothing else.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
real=libreduce.so.0.${version#*.}
want="bin/reduce
include/reduce.h
include/spdk/reduce.h
lib/$real
lib/libreduce.a
lib/libreduce.so -> libreduce.so.0
lib/libreduce.so.0 -> $real
lib/nbdkit/plugins/nbdkit-reduce-plugin.so
lib/pkgconfig/reduce.pc"
want=$(LC_ALL=C sort <<<"$want")
got=$(cd "$ROOT$PREFIX" && find . ! -type d -printf '%P%l\n' | sed 's/\(libreduce\.so\(\.0\)\?\)\(libreduce\)/\1 -> \3/' | LC_ALL=C sort)
[ "$got" = "$want" ] || fail "installed files:
$got
wanted:
$want"
readelf -d "$ROOT$PREFIX/lib/$real" | grep 'SONAME.*\[libreduce\.so\.0\]' >/dev/null ||
	fail "$real does not have the soname libreduce.so.0"
"$ROOT$PREFIX/bin/reduce" --help | grep -q '^  create ' || fail "the installed reduce command does not run"
grep -qx "prefix=$PREFIX" "$ROOT$PREFIX/lib/pkgconfig/reduce.pc" ||
	fail "reduce.pc does not name the prefix $PREFIX"
grep -q "$ROOT" "$ROOT$PREFIX/lib/pkgconfig/reduce.pc" && fail "reduce.pc names the staging directory"
echo "ok - make install DESTDIR=... PREFIX=$PREFIX: $(echo "$got" | wc -l) files, $real with soname libreduce.so.0"

# pkg-config finds only the staged reduce.pc, and prefixes its paths with the staging
# root (as for a sysroot).
export PKG_CONFIG_LIBDIR=$ROOT$PREFIX/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$ROOT
[ "$(pkg-config --modversion reduce)" = "$version" ] || fail "pkg-config --modversion reduce"
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is the point
"$CC" -std=gnu11 -Wall -Wextra -Werror -o "$OUT/installed" c_tests/install/installed.c \
	$(pkg-config --cflags --libs reduce)
LD_LIBRARY_PATH=$ROOT$PREFIX/lib ldd "$OUT/installed" | grep "libreduce.so.0 => $ROOT$PREFIX/lib/" >/dev/null ||
	fail "the program does not resolve libreduce.so.0 to the staged library"
LD_LIBRARY_PATH=$ROOT$PREFIX/lib "$OUT/installed" "$OUT/pm"
echo "ok - a C program built with pkg-config --cflags --libs reduce runs against the staged libreduce.so"

# Static: libreduce.a first (-Bstatic), then what Libs.private says it needs.
# shellcheck disable=SC2046
"$CC" -std=gnu11 -o "$OUT/installed-static" c_tests/install/installed.c \
	$(pkg-config --cflags reduce) -Wl,--as-needed -Wl,-Bstatic -lreduce -Wl,-Bdynamic \
	$(pkg-config --static --libs reduce)
readelf -d "$OUT/installed-static" | grep libreduce >/dev/null && fail "the static build needs libreduce.so"
"$OUT/installed-static" "$OUT/pm"
echo "ok - the same program linked with libreduce.a and pkg-config --static --libs reduce"
[ -z "$(ls -A "$OUT/pm")" ] || fail "the programs left pm files: $(ls "$OUT/pm")"

# The installed plugin finds the staged library next to it (its runpath is relative).
plugin=$ROOT$PREFIX/lib/nbdkit/plugins/nbdkit-reduce-plugin.so
nbdkit --unix - "$plugin" file="$OUT/vol.img" create=true size=64M pm_dir="$OUT/pm" \
	--run 'qemu-io -f raw "$uri" -c "write -P 0x5a 0 1M" -c "read -P 0x5a 0 1M"' >"$OUT/nbd.log" 2>&1 ||
	fail "nbdkit with the installed plugin: $(cat "$OUT/nbd.log")"
ldd "$plugin" | grep "libreduce.so.0 => $ROOT$PREFIX/lib/" >/dev/null ||
	fail "the installed plugin does not resolve libreduce.so.0 beside it"
echo "ok - nbdkit serves a volume with the installed plugin"

"$MAKE" -s --no-print-directory uninstall DESTDIR="$ROOT" PREFIX="$PREFIX" >"$OUT/uninstall.log" ||
	fail "make uninstall: $(cat "$OUT/uninstall.log")"
left=$(find "$ROOT" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "ok - make uninstall removed every file"
echo "install: 5 passed, 0 failed"
