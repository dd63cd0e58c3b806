#!/usr/bin/env bash
# make nbd-demo: serves a new volume with nbdkit on a unix socket and shows real
# clients using it: nbdinfo describes the export, qemu-img writes a disk image of real
# files onto it and compares it back, qemu-io reads a piece, and the backing file's
# allocation shows the compression. Then a clean shutdown (which unloads the volume).
# Everything lives in a fresh directory under $TMPDIR (default /tmp), removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/integration/lib.sh

run() {
	printf '\n$ %s\n' "$*"
	"$@"
}

VOL=$WORK/volume.img
mkdir -p "$WORK/pm"
echo "== serve a new volume: a 1G sparse backing file, its pm file in $WORK/pm"
printf '\n$ nbdkit --unix %s %s file=%s create=true size=1G pm_dir=%s\n' \
	"$SOCK" "$PLUGIN" "$VOL" "$WORK/pm"
start_nbdkit file="$VOL" create=true size=1G pm_dir="$WORK/pm"
run nbdinfo "$URI"

echo
echo "== a disk image of real files (ext4, from /usr/share and /usr/include)"
disk_image "$WORK/disk.raw" 256M 200000000
printf '%s\n' "$(du -sh --apparent-size "$WORK/disk.raw" | cut -f1) image, $(du -sh "$WORK/disk.raw" | cut -f1) of it allocated"
run qemu-img convert -p -n -f raw -O raw "$WORK/disk.raw" "$URI"
run qemu-img compare -f raw -F raw "$WORK/disk.raw" "$URI"
run qemu-io -f raw -r "$URI" -c "read -v 1024 64"

echo
echo "== what the volume stores"
run du -h "$VOL" "$WORK"/pm/*
echo "(the disk image holds $(du -sh "$WORK/disk.raw" | cut -f1) of data; the backing file allocates what its compressed chunks need)"

echo
echo "== a clean shutdown (SIGTERM): nbdkit unloads the volume"
stop_nbdkit
echo "stopped; serve it again with: nbdkit --unix SOCKET $PLUGIN file=$VOL"
echo
echo "nbd-demo: ok"
