#!/usr/bin/env bash
# Builds and runs the examples in README.md as a reader would: the C program with the
# README's own build commands, and the Rust program against the library's rlib. Run by
# `make test` (target readme-snippets) after `make lib`; fails if either breaks.
#
# Each example is a fenced block whose first line names it:
#   ```c     /* readme.c ...                 the C program
#   ```sh    # build and run readme.c ...    its build commands, run from the repo root
#   ```rust  // readme.rs ...                the Rust program
set -euo pipefail
cd "$(dirname "$0")/.."

LIBDIR=${LIBDIR:-target/release}
OUT=${BUILD:-build}/readme
CC=${CC:-cc}

# extract LANG MARKER: the body of the one ```LANG block whose first line starts with
# MARKER (an error if there is not exactly one).
extract() {
	awk -v lang="$1" -v marker="$2" '
		inblock && $0 == "```" { inblock = 0; next }
		inblock { print; next }
		$0 == "```" lang && (getline first) > 0 && index(first, marker) == 1 {
			inblock = 1; n++; print first
		}
		END {
			if (n != 1) {
				printf "README.md: %d ```%s blocks begin with \"%s\" (want 1)\n", n, lang, marker > "/dev/stderr"
				exit 1
			}
		}' README.md
}

rm -rf "$OUT"
mkdir -p "$OUT/tmp" "$OUT/target"
extract c '/* readme.c' >"$OUT/readme.c"
extract sh '# build and run readme.c' >"$OUT/build.sh"
extract rust '// readme.rs' >"$OUT/readme.rs"

# C. First with every warning an error; then exactly the README's commands, in a
# directory laid out like the repository root (include/, target/release/).
echo "README C example: strict compile"
"$CC" -std=gnu11 -Wall -Wextra -Werror -Iinclude -fsyntax-only "$OUT/readme.c"
ln -s "$PWD/include" "$OUT/include"
ln -s "$PWD/$LIBDIR" "$OUT/target/release"
echo "README C example: the README's commands"
sed 's/^/  | /' "$OUT/build.sh"
(cd "$OUT" && TMPDIR="$PWD/tmp" PATH="$PATH" bash -euo pipefail build.sh)

# Rust: formatted as rustfmt would, then compiled against the library cargo built.
echo "README Rust example"
rustfmt --edition 2024 --check "$OUT/readme.rs"
rustc --edition 2024 -D warnings -C opt-level=1 --crate-type bin --crate-name readme \
	-o "$OUT/readme-rs" "$OUT/readme.rs" \
	--extern reduce="$LIBDIR/libreduce.rlib" -L dependency="$LIBDIR/deps"
TMPDIR="$PWD/$OUT/tmp" "$OUT/readme-rs"

# Both destroy their volume, so no pm file may be left.
if [ -n "$(ls -A "$OUT/tmp")" ]; then
	echo "README examples left files behind: $(ls -A "$OUT/tmp")" >&2
	exit 1
fi
echo "README examples: ok"
