#!/usr/bin/env bash
# The NBD export tested with real clients nobody here wrote: qemu-img, qemu-io,
# nbdcopy, nbdinfo, nbdsh (libnbd), fio (its nbd engine), e2fsck, and nbdkit itself
# killed with SIGKILL in the middle of writes.
#
#   PLUGIN=build/nbdkit-reduce-plugin.so REDUCE=target/release/reduce \
#     tests/integration/nbd.sh quick|long
#
# quick (make test, about a minute): every client once, one kill. long (make
# integration): bigger images, fio over block sizes x queue depths x patterns,
# several kills. Each test serves its own new volume.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
# The reduce command: inspects (info --json) and checks the volumes served here.
REDUCE=$(realpath "${REDUCE:?REDUCE must name the reduce command}")

MODE=${1:?quick or long}
case $MODE in
quick) IMAGE_SIZE=64M FILES_BYTES=40000000 KILLS=1 ;;
long) IMAGE_SIZE=512M FILES_BYTES=400000000 KILLS=5 ;;
*) fail "mode: quick or long, not $MODE" ;;
esac
VOL_SIZE=1G # of each volume's backing file (sparse)

# new_volume NAME [PARAM...]: creates a volume in $WORK and serves it; sets VOL.
new_volume() {
	VOL=$WORK/$1.img
	shift
	mkdir -p "$WORK/pm"
	start_nbdkit file="$VOL" create=true size=$VOL_SIZE pm_dir="$WORK/pm" "$@"
}

# restart: a clean shutdown and a fresh load of the same volume, checked first.
restart() {
	stop_nbdkit
	start_nbdkit file="$VOL" check=true
}

# Each bad start is refused with a message that says what is wrong, and leaves nothing.
t_refusals() {
	mkdir -p "$WORK/pm"
	refused "file=FILE is required"
	refused "No such file or directory" file="$WORK/missing.img"
	truncate -s 64M "$WORK/blank.img"
	refused "not a reduce volume" file="$WORK/blank.img"
	refused "needs size=SIZE" file="$WORK/new.img" create=true pm_dir="$WORK/pm"
	refused "apply only with create=true" file="$WORK/blank.img" pm_dir="$WORK/pm"
	refused "File exists" file="$WORK/blank.img" create=true size=64M pm_dir="$WORK/pm"
	refused "check size, chunk_size" file="$WORK/new.img" create=true size=64M \
		pm_dir="$WORK/pm" chunk_size=10000
	refused "unknown parameter 'colour'" file="$WORK/blank.img" colour=blue
	[ ! -e "$WORK/new.img" ] || fail "a refused create left its file behind"
	[ -z "$(ls -A "$WORK/pm")" ] || fail "a refused create left a pm file: $(ls "$WORK/pm")"

	# A volume whose pm file is gone.
	nbdkit --unix - "$PLUGIN" file="$WORK/lost.img" create=true size=64M \
		pm_dir="$WORK/pm" --run true
	rm "$WORK"/pm/*
	refused "its pm file is missing" file="$WORK/lost.img"
	rm -f "$WORK/blank.img" "$WORK/lost.img"
	passed "refusals: missing and foreign files, bad parameters, lost pm file"
}

# A volume whose stored data was damaged behind its back: served, the damaged chunks
# fail their reads with EIO (never wrong data); with check=true it is not served.
t_damaged() {
	new_volume damaged
	qemu-io -f raw "$URI" -c "write -P 0x3c 0 4M" >/dev/null
	stop_nbdkit
	# The chunks are stored after the superblock: overwrite some of their bytes.
	head -c 65536 /dev/urandom | dd of="$VOL" bs=4096 seek=16 conv=notrunc status=none
	refused "the checker found data that does not read back" file="$VOL" check=true
	start_nbdkit file="$VOL"
	local out
	if out=$(qemu-io -f raw -r "$URI" -c "read -P 0x3c 0 4M" 2>&1); then
		fail "the damaged volume read back without an error: $out"
	fi
	grep -q "Input/output error" <<<"$out" || fail "reading damaged chunks: wanted EIO, got: $out"
	stop_nbdkit
	passed "damaged data: reads fail with EIO, check=true refuses to serve"
}

# What the export tells clients.
t_info() {
	new_volume info
	local size
	size=$(nbdinfo --size "$URI")
	[ "$size" -gt $((1000 << 20)) ] && [ "$size" -le $((1 << 30)) ] ||
		fail "export size $size for a 1G backing file"
	for can in flush fua zero trim multi-conn; do
		nbdinfo --can "$can" "$URI" || fail "the export cannot $can"
	done
	local info
	info=$(nbdinfo "$URI")
	grep -q "block_size_minimum: 512" <<<"$info" || fail "minimum block size not 512"
	grep -q "block_size_preferred: 16384" <<<"$info" || fail "preferred block size not a chunk"
	stop_nbdkit
	passed "nbdinfo: size, flush, fua, zero, trim, multi-conn, block sizes"
}

# A real disk image (ext4 of real files), as qcow2, written with qemu-img convert and
# compared back with qemu-img compare, before and after a restart; then read back
# whole with nbdcopy and checked by e2fsck.
t_qemu_img() {
	new_volume qemu-img
	disk_image "$WORK/disk.raw" "$IMAGE_SIZE" "$FILES_BYTES"
	qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
	qemu-img convert -n -f qcow2 -O raw "$WORK/disk.qcow2" "$URI"
	qemu-img compare -q -f qcow2 -F raw "$WORK/disk.qcow2" "$URI" ||
		fail "qemu-img compare: the export differs from the image"
	restart
	qemu-img compare -q -f qcow2 -F raw "$WORK/disk.qcow2" "$URI" ||
		fail "qemu-img compare after a restart: the export differs from the image"
	nbdcopy "$URI" "$WORK/back.raw"
	cmp -n "$(stat -c %s "$WORK/disk.raw")" "$WORK/disk.raw" "$WORK/back.raw" ||
		fail "nbdcopy read back other bytes than qemu-img wrote"
	truncate -s "$IMAGE_SIZE" "$WORK/back.raw"
	e2fsck -fn "$WORK/back.raw" >"$WORK/e2fsck.out" 2>&1 ||
		fail "e2fsck finds the file system read back damaged"
	stop_nbdkit
	local used
	used=$(du -k "$VOL" | cut -f1)
	rm -f "$WORK/disk.raw" "$WORK/disk.qcow2" "$WORK/back.raw"
	passed "qemu-img convert + compare of an ext4 image of real files ($IMAGE_SIZE, ${used} KiB stored), e2fsck of the copy"
}

# qemu-io writes patterns at offsets and sizes around chunk (16K) and block (512)
# boundaries, zeroes ranges, and reads every byte back, before and after a restart.
t_qemu_io() {
	new_volume qemu-io
	local end
	end=$(nbdinfo --size "$URI")
	# offset length pattern; later lines overwrite parts of earlier ones.
	local -a writes=(
		"0 512 0x11"
		"512 3584 0x12"
		"4096 8192 0x13"
		"12288 8192 0x14"
		"65536 16384 0x15"
		"131072 1048576 0x16"
		"2000000 70000 0x17"
		"$((end - 16384)) 16384 0x18"
		"$((end - 512)) 512 0x19"
		"3000000 65536 0x1a"
		"3001001 999 0x1b"
	)
	# What each range reads back: the patterns, the zeroed range and untouched zeros.
	local -a reads=(
		"0 512 0x11"
		"512 3584 0x12"
		"4096 8192 0x13"
		"12288 8192 0x14"
		"20480 45056 0"
		"65536 16384 0x15"
		"81920 49152 0"
		"131072 1048576 0x16"
		"1179648 820352 0"
		"2000000 70000 0x17"
		"$((end - 16384)) 15872 0x18"
		"$((end - 512)) 512 0x19"
		"3000000 1001 0x1a"
		"3001001 999 0x1b"
		"3002000 8000 0x1a"
		"3010000 20000 0"
		"3030000 35536 0x1a"
	)
	local -a args=() w r
	for w in "${writes[@]}"; do
		set -- $w
		args+=(-c "write -P $3 $1 $2")
	done
	args+=(-c "write -z 3010000 20000" -c flush)
	qemu-io -f raw "$URI" "${args[@]}" >"$WORK/qemu-io.out" ||
		fail "qemu-io writes: $(grep -v '^wrote\|ops;' "$WORK/qemu-io.out")"
	args=()
	for r in "${reads[@]}"; do
		set -- $r
		args+=(-c "read -P $3 $1 $2")
	done
	qemu-io -f raw -r "$URI" "${args[@]}" >"$WORK/qemu-io.out" ||
		fail "qemu-io reads: $(grep -i 'fail' "$WORK/qemu-io.out")"
	restart
	qemu-io -f raw -r "$URI" "${args[@]}" >"$WORK/qemu-io.out" ||
		fail "qemu-io reads after a restart: $(grep -i 'fail' "$WORK/qemu-io.out")"
	stop_nbdkit
	passed "qemu-io: ${#writes[@]} pattern writes and a zeroed range, ${#reads[@]} verified reads, again after a restart"
}

# nbdcopy in and out over 4 connections with 16 requests each: real files, random
# bytes and zeros (which nbdcopy sends as zero requests).
t_nbdcopy() {
	new_volume nbdcopy
	real_files "$WORK/tree" 16000000
	{
		tar -cf - -C "$WORK/tree" .
		head -c 8M /dev/zero
		head -c 8M /dev/urandom
	} >"$WORK/data"
	truncate -s %512 "$WORK/data"
	rm -rf "$WORK/tree" "$WORK/tree.list"
	local n
	n=$(stat -c %s "$WORK/data")
	nbdcopy --connections=4 --requests=16 --flush "$WORK/data" "$URI"
	nbdcopy --connections=4 --requests=16 "$URI" "$WORK/back"
	cmp -n "$n" "$WORK/data" "$WORK/back" || fail "nbdcopy round trip differs"
	restart
	nbdcopy "$URI" "$WORK/back"
	cmp -n "$n" "$WORK/data" "$WORK/back" || fail "nbdcopy round trip differs after a restart"
	stop_nbdkit
	rm -f "$WORK/data" "$WORK/back"
	passed "nbdcopy round trip of $((n >> 20)) MiB over 4 connections, again after a restart"
}

# Requests that are not aligned to logical blocks (libnbd with its alignment checks
# off), against a copy kept by the client; and concurrent unaligned writes to
# different bytes of the same blocks, none of which may be lost.
t_unaligned() {
	new_volume unaligned
	nbdsh -c "
import random
h.set_strict_mode(0)
h.connect_uri('$URI')
rng = random.Random(11)
span = 1 << 20
shadow = bytearray(span)
for i in range(300):
    off = rng.randrange(span - 1)
    n = rng.randrange(1, min(40000, span - off) + 1)
    if rng.random() < 0.2:
        h.zero(n, off)
        shadow[off:off + n] = bytes(n)
    else:
        data = bytes([rng.randrange(256)]) * (n // 2) + rng.randbytes(n - n // 2)
        h.pwrite(data, off)
        shadow[off:off + n] = data
    if i % 20 == 0:
        a = rng.randrange(span - 1)
        b = rng.randrange(a + 1, min(span, a + 100000) + 1)
        assert h.pread(b - a, a) == shadow[a:b], 'unaligned read differs at %d' % a
assert h.pread(span, 0) == shadow, 'the unaligned writes did not all land'

# 64 writes of 100 bytes each, 64 apart: neighbours share blocks, all in flight.
for rnd in range(20):
    base = 4 * span + rnd * 8192
    cookies = []
    for k in range(64):
        data = bytes([rnd + 1]) * 100
        cookies.append(h.aio_pwrite(data, base + k * 64 + 3))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    got = h.pread(64 * 64 + 100, base + 3)
    for k in range(64):
        assert got[k * 64:k * 64 + 100] == bytes([rnd + 1]) * 100, 'write %d of round %d lost' % (k, rnd)

# One zero request of 33 MiB + 13 bytes (two runs), unaligned at both ends, between data.
base, n = 6 * span, (33 << 20) + 13
head, tail = rng.randbytes(4096), rng.randbytes(4096)
h.pwrite(head, base)
h.pwrite(tail, base + n)
h.zero(n - 4096 - 7, base + 4096 + 7)
h.zero(4096, base + 7)
assert h.pread(7, base) == head[:7], 'bytes before a zeroed range changed'
assert h.pread(4096, base + n) == tail, 'bytes after a zeroed range changed'
for off in (base + 7, base + 4103, base + n // 2, base + n - 4096):
    assert h.pread(4096, off) == bytes(4096), 'not zeroed at %d' % off
h.shutdown()
" || fail "nbdsh: unaligned requests"
	stop_nbdkit
	passed "nbdsh: 300 unaligned writes, zeros and reads against a shadow; 20 rounds of 64 concurrent unaligned writes into shared blocks; an unaligned 33 MiB zero"
}

# info_field VOL KEY...: one field of `reduce info --json` (nested KEYs for objects).
info_field() {
	local vol=$1
	shift
	"$REDUCE" info --json "$vol" | python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[k]
print(v)' "$@"
}

# Trim and zero free what they cover whole: after a discard (qemu-io), a trim and a
# zero (nbdsh), reduce info shows the chunks and io units freed, and every range reads
# back as zeros, the rest unchanged; a zero unaligned at both ends zeroes only its bytes.
t_trim() {
	new_volume trim
	# 64 chunks of 16K: text-like data, so each takes one or two io units.
	nbdsh -u "$URI" -c "
import random
rng = random.Random(5)
words = [bytes(rng.choice(b'abcdefgh') for _ in range(rng.randrange(2, 9))) for _ in range(200)]
data = bytearray()
while len(data) < 1 << 20:
    data += rng.choice(words) + b' '
h.pwrite(bytes(data[:1 << 20]), 0)
h.flush()
open('$WORK/trim.data', 'wb').write(bytes(data[:1 << 20]))
"
	stop_nbdkit
	local chunks units free
	chunks=$(info_field "$VOL" stats chunks_in_use)
	units=$(info_field "$VOL" stats io_units_in_use)
	free=$(info_field "$VOL" stats io_units_free)
	[ "$chunks" = 64 ] || fail "64 chunks written, reduce info says $chunks in use"
	start_nbdkit file="$VOL"
	# Chunks 0-15 discarded by qemu-io, 16-31 trimmed and 32-39 zeroed by nbdsh; bytes
	# 700000-700999 (inside chunk 42) zeroed, unaligned.
	qemu-io -f raw -d unmap "$URI" -c "discard 0 256k" >"$WORK/qemu-io.out" ||
		fail "qemu-io discard: $(cat "$WORK/qemu-io.out")"
	nbdsh -u "$URI" -c "
h.trim(256 << 10, 256 << 10)
h.zero(128 << 10, 512 << 10)
h.set_strict_mode(0)
h.zero(1000, 700000)
h.flush()
want = bytearray(open('$WORK/trim.data', 'rb').read())
want[0:640 << 10] = bytes(640 << 10)
want[700000:701000] = bytes(1000)
got = h.pread(1 << 20, 0)
bad = next((i for i in range(len(want)) if got[i] != want[i]), None)
assert bad is None, 'after trim and zero, byte %d reads %r, not %r' % (bad, got[bad], want[bad])
" || fail "nbdsh: trim and zero"
	stop_nbdkit
	local chunks2 units2 free2
	chunks2=$(info_field "$VOL" stats chunks_in_use)
	units2=$(info_field "$VOL" stats io_units_in_use)
	free2=$(info_field "$VOL" stats io_units_free)
	[ "$chunks2" = 24 ] || fail "40 of 64 chunks discarded, reduce info says $chunks2 in use, not 24"
	[ "$units2" -lt "$units" ] && [ $((free2 - free)) = $((units - units2)) ] ||
		fail "io units in use $units -> $units2, free $free -> $free2: not freed"
	"$REDUCE" check "$VOL" >"$WORK/check.out" 2>&1 || fail "reduce check after trim: $(cat "$WORK/check.out")"
	rm -f "$WORK/trim.data"
	passed "trim and zero: qemu-io discard, nbdsh trim and zero free 40 chunks ($((units - units2)) io units), read back as zeros; unaligned zero"
}

# A volume made with lz4 by the reduce command is served with lz4: what the command
# imported reads back over NBD, and what NBD wrote the command exports back.
t_lz4() {
	mkdir -p "$WORK/pm"
	VOL=$WORK/lz4.img
	"$REDUCE" create "$VOL" --pm-dir "$WORK/pm" --size 256M --codec lz4 >/dev/null
	real_files "$WORK/tree" 8000000
	tar -cf "$WORK/data" -C "$WORK/tree" .
	rm -rf "$WORK/tree" "$WORK/tree.list"
	truncate -s 8M "$WORK/data"
	"$REDUCE" import "$VOL" "$WORK/data" >/dev/null 2>&1 || fail "reduce import into the lz4 volume"
	start_nbdkit file="$VOL"
	nbdcopy "$URI" "$WORK/back"
	cmp -n 8388608 "$WORK/back" "$WORK/data" || fail "lz4 volume: NBD reads other bytes than were imported"
	# Reversed halves, written over NBD, for the command to read.
	{ tail -c 4M "$WORK/data"; head -c 4M "$WORK/data"; } >"$WORK/data2"
	nbdcopy --flush "$WORK/data2" "$URI"
	stop_nbdkit
	"$REDUCE" export "$VOL" "$WORK/back" >/dev/null 2>&1 || fail "reduce export of the lz4 volume"
	cmp -n 8388608 "$WORK/data2" "$WORK/back" || fail "lz4 volume: reduce export reads other bytes than NBD wrote"
	local algo
	algo=$(info_field "$VOL" compression algo)
	[ "$algo" = lz4 ] || fail "the lz4 volume now records $algo"
	"$REDUCE" check "$VOL" >"$WORK/check.out" 2>&1 || fail "reduce check of the lz4 volume: $(cat "$WORK/check.out")"

	# The same volume with no codec recorded (as the 2019 original writes: zeros where
	# later SPDK keeps comp_level and comp_algo, in the superblock and its pm copy).
	local pm
	pm=$(info_field "$VOL" pm_file)
	for f in "$VOL" "$pm"; do
		head -c 8 /dev/zero | dd of="$f" bs=1 seek=48 conv=notrunc status=none
	done
	refused "the volume records no codec" file="$VOL"
	rm -f "$WORK/data" "$WORK/data2" "$WORK/back" "$VOL" "$pm"
	passed "lz4 volume: imported data served, NBD writes exported back, checker clean; a volume with no codec recorded is refused"
}

# fio_run NAME FIO-ARGS...: fio's nbd engine against the export, verify=crc32c.
fio_run() {
	local name=$1
	shift
	fio --output="$WORK/fio.out" --ioengine=nbd --uri="$URI" --verify=crc32c \
		--verify_fatal=1 --do_verify=1 --verify_state_save=0 --name="$name" "$@" ||
		fail "fio $name: $(grep -iE 'err|verify' "$WORK/fio.out" | head -5)"
	if grep -qE 'err= *[1-9]' "$WORK/fio.out"; then fail "fio $name reported errors: $(cat "$WORK/fio.out")"; fi
}

# fio with verification: several block sizes, queue depths and patterns; data partly
# compressible so both stored forms are exercised; several jobs at once, each on its
# own connection and region.
t_fio() {
	new_volume fio
	local -a jobs
	if [ "$MODE" = quick ]; then
		jobs=(
			"randwrite 4k 16 1 16m"
			"write 1m 4 1 32m"
			"randwrite 64k 8 4 8m"
		)
	else
		jobs=()
		local rw bs qd
		for rw in randwrite write; do
			for bs in 512 4k 16k 64k 1m; do
				for qd in 1 8 32; do
					jobs+=("$rw $bs $qd 2 32m")
				done
			done
		done
	fi
	local j offset=0
	for j in "${jobs[@]}"; do
		set -- $j
		fio_run "$1-$2-qd$3-x$4" --rw="$1" --bs="$2" --iodepth="$3" --numjobs="$4" \
			--size="$5" --offset=$offset --offset_increment="$5" \
			--buffer_compress_percentage=60 --refill_buffers
		offset=$(((offset + 256 * 1048576) % (768 * 1048576)))
	done
	restart
	stop_nbdkit
	passed "fio nbd engine, verify=crc32c: ${#jobs[@]} jobs (patterns x block sizes x queue depths), checker clean after"
}

# Writers (qemu-io, each on its own regions) write and flush generation after
# generation while nbdkit is killed with SIGKILL. After a restart (the checker runs at
# load: check=true), every region holds its last flushed generation, except that a
# generation in flight at the kill may have landed, whole chunk by whole chunk.
WRITERS=4
REGIONS=16      # per writer
REGION=65536    # bytes: 4 chunks
pattern() { echo $((($1 * 37 + $2 * 11) % 255 + 1)); } # pattern WRITER GEN (GEN >= 1)

writer() {
	local w=$1 gen=1 k
	local -a args
	while :; do
		args=()
		for ((k = 0; k < REGIONS; k++)); do
			args+=(-c "write -P $(pattern "$w" $gen) $(((w * REGIONS + k) * REGION)) $REGION")
		done
		args+=(-c flush)
		qemu-io -f raw "$URI" "${args[@]}" >/dev/null 2>&1 || return 0
		echo $gen >>"$WORK/writer$w.flushed"
		gen=$((gen + 1))
	done
}

t_kill() {
	new_volume kill
	local cycle w
	for ((cycle = 1; cycle <= KILLS; cycle++)); do
		local -a pids=()
		for ((w = 0; w < WRITERS; w++)); do
			writer $w &
			pids+=($!)
		done
		# Once every writer has flushed twice, at a moment that varies.
		local deadline=$((SECONDS + 120))
		while [ $SECONDS -lt $deadline ]; do
			local short=0
			for ((w = 0; w < WRITERS; w++)); do
				[ -f "$WORK/writer$w.flushed" ] &&
					[ "$(wc -l <"$WORK/writer$w.flushed")" -ge 2 ] || short=1
			done
			[ $short = 1 ] || break
			sleep 0.1
		done
		sleep "0.$((RANDOM % 9 + 1))"
		kill_nbdkit
		for w in "${pids[@]}"; do wait "$w"; done
		"$REDUCE" check "$VOL" >"$WORK/check.out" 2>&1 ||
			fail "after SIGKILL $cycle: reduce check: $(cat "$WORK/check.out")"
		start_nbdkit file="$VOL" check=true
		local -a last=()
		for ((w = 0; w < WRITERS; w++)); do
			last+=("$(tail -n 1 "$WORK/writer$w.flushed" 2>/dev/null || echo 0)")
			[ "${last[w]}" -ge 1 ] || fail "writer $w flushed nothing before the kill"
			# The next cycle's writers start after this one's generations.
			rm -f "$WORK/writer$w.flushed"
		done
		nbdsh -u "$URI" -c "
writers, regions, region, chunk = $WRITERS, $REGIONS, $REGION, 16384
last = [$(IFS=,; echo "${last[*]}")]
def pattern(w, gen): return (w * 37 + gen * 11) % 255 + 1
for w in range(writers):
    ok = (pattern(w, last[w]), pattern(w, last[w] + 1))
    for k in range(regions):
        off = (w * regions + k) * region
        data = h.pread(region, off)
        for c in range(0, region, chunk):
            piece = data[c:c + chunk]
            assert any(piece == bytes([p]) * chunk for p in ok), \
                'writer %d region %d chunk %d: flushed generation %d lost (bytes %r...)' % (w, k, c // chunk, last[w], piece[:4])
" || fail "after SIGKILL $cycle: a flushed write did not read back"
		echo "kill $cycle: flushed generations ${last[*]} all read back"
	done
	stop_nbdkit
	passed "SIGKILL during writes x$KILLS: restart loads, the checker is clean, every flushed write reads back"
}

t_refusals
t_damaged
t_info
t_qemu_img
t_qemu_io
t_nbdcopy
t_unaligned
t_trim
t_lz4
t_fio
t_kill
echo "nbd ($MODE): $PASSED passed, 0 failed"
