# Shared by the NBD scripts (sourced): a work directory removed at exit, nbdkit with
# the plugin started and stopped by its pid, and data made of real files.
#
# Needs PLUGIN (the plugin to serve with). Every tool is required: make deps installs
# them, and a missing one fails here rather than skip a test.
set -euo pipefail

PLUGIN=$(realpath "${PLUGIN:?PLUGIN must name the nbdkit plugin}")
# mke2fs and e2fsck live in /usr/sbin; libnbd's nbdsh needs Debian's python3, which
# comes before any other python3 on PATH.
PATH=/usr/bin:$PATH:/usr/sbin:/sbin
for tool in nbdkit nbdinfo nbdcopy nbdsh qemu-img qemu-io fio mke2fs e2fsck; do
	command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing: run make deps" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reduce-nbd.XXXXXX")
SOCK=$WORK/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
LOG=$WORK/nbdkit.log
NBDKIT_PID=
PASSED=0

cleanup() {
	if [ -n "$NBDKIT_PID" ]; then
		kill -KILL "$NBDKIT_PID" 2>/dev/null || true
		wait "$NBDKIT_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -s "$LOG" ]; then
		echo "--- the end of nbdkit's log:" >&2
		tail -n 30 "$LOG" >&2
	fi
	exit 1
}

LAP=$SECONDS
passed() {
	PASSED=$((PASSED + 1))
	echo "ok - $* ($((SECONDS - LAP)) s)"
	LAP=$SECONDS
}

# start_nbdkit PARAM...: serves the plugin with PARAMs on $SOCK, in the background;
# returns once nbdkit accepts connections (it writes its pid file then).
start_nbdkit() {
	rm -f "$SOCK" "$WORK/nbdkit.pid"
	echo "--- nbdkit $*" >>"$LOG"
	nbdkit --foreground --exit-with-parent --unix "$SOCK" --pidfile "$WORK/nbdkit.pid" \
		--threads 16 "$PLUGIN" "$@" >>"$LOG" 2>&1 &
	NBDKIT_PID=$!
	local i
	for i in $(seq 600); do
		[ -s "$WORK/nbdkit.pid" ] && return 0
		kill -0 "$NBDKIT_PID" 2>/dev/null || break
		sleep 0.05
	done
	fail "nbdkit did not start: nbdkit $*"
}

# stop_nbdkit: a clean shutdown (SIGTERM), which unloads the volume; nbdkit must exit 0.
stop_nbdkit() {
	kill -TERM "$NBDKIT_PID"
	local rc=0
	wait "$NBDKIT_PID" || rc=$?
	NBDKIT_PID=
	[ "$rc" = 0 ] || fail "nbdkit exited with $rc on SIGTERM"
}

# kill_nbdkit: as a crash would, with no chance to unload.
kill_nbdkit() {
	kill -KILL "$NBDKIT_PID"
	wait "$NBDKIT_PID" 2>/dev/null || true
	NBDKIT_PID=
}

# refused MESSAGE PARAM...: nbdkit with PARAMs must fail to start, saying MESSAGE.
refused() {
	local want=$1 out rc=0
	shift
	out=$(nbdkit --unix - "$PLUGIN" "$@" --run true 2>&1) || rc=$?
	[ "$rc" != 0 ] || fail "nbdkit started with $*"
	grep -qF -- "$want" <<<"$out" || fail "nbdkit $*: wanted \"$want\", got: $out"
}

# real_files DIR MAX_BYTES: copies regular files from /usr/share and /usr/include, up to
# MAX_BYTES in all, into DIR (their paths kept).
real_files() {
	local dir=$1 max=$2
	mkdir -p "$dir"
	find /usr/share/doc /usr/share/common-licenses /usr/include /usr/share/perl5 \
		-type f -size -2M -printf '%s\t%p\n' 2>/dev/null |
		LC_ALL=C sort -t "$(printf '\t')" -k 2 |
		awk -F'\t' -v max="$max" 't + $1 <= max { t += $1; print $2 }' >"$dir.list"
	[ -s "$dir.list" ] || fail "no real files found under /usr/share and /usr/include"
	tar -cf - -T "$dir.list" 2>/dev/null | tar -xf - -C "$dir"
}

# disk_image IMG SIZE MAX_BYTES: an ext4 disk image of SIZE holding real files.
disk_image() {
	local img=$1 size=$2 max=$3
	real_files "$WORK/tree" "$max"
	mke2fs -q -F -t ext4 -b 4096 -d "$WORK/tree" "$img" "$size" >/dev/null
	rm -rf "$WORK/tree" "$WORK/tree.list"
}
