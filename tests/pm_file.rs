//! A pm file on a RAM file system (tmpfs, ramfs) is persisted by doing nothing: the
//! region says it is in memory there, and only there, whether created or opened. The
//! expectation comes from `stat -f`, not from the library's own `fstatfs`. Persist keeps
//! its behaviour otherwise: a range within the file succeeds, one beyond it fails. A
//! fill larger than a piece, shared among threads, covers its range exactly. On a disk,
//! written pages reach the file when a persist touches them or the region goes.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use reduce::{Errno, FileStore, PmStore};

const LEN: usize = 3 * 4096;

/// One test at a time: a test forking `stat` while another holds a region makes the
/// child hold that region's lock too until it execs, and a reopen then meets `EBUSY`.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file system type of `dir` as `stat -f` prints it (hex, no prefix).
fn fs_type(dir: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%t"])
        .arg(dir)
        .output()
        .expect("running stat -f");
    assert!(out.status.success(), "stat -f {}: {:?}", dir.display(), out);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// TMPFS_MAGIC and RAMFS_MAGIC (linux/magic.h).
fn is_ram_fs(hex: &str) -> bool {
    matches!(hex, "1021994" | "858458f6")
}

fn check(dir: &str, want_in_memory: bool) {
    let found = fs_type(Path::new(dir));
    assert_eq!(
        is_ram_fs(&found),
        want_in_memory,
        "this test needs {dir} on {}, but its file system type is 0x{found}",
        if want_in_memory {
            "tmpfs or ramfs"
        } else {
            "a disk file system"
        }
    );
    let tmp = tempfile::tempdir_in(dir).unwrap();
    let path = tmp.path().join("pm");

    let mut region = FileStore.create(&path, LEN as u64).unwrap();
    assert_eq!(region.in_memory(), want_in_memory, "created in {dir}");
    region.fill(0, LEN, 0xff).unwrap();
    region.write(4100, b"persisted");
    region.persist(4096, 4096).unwrap();
    region.persist(0, LEN).unwrap();
    region.persist(LEN, 0).unwrap();
    for (offset, len) in [(4096, LEN), (LEN + 1, 0), (usize::MAX, 2)] {
        let err = region.persist(offset, len).unwrap_err();
        assert_eq!(err.errno(), Errno::EIO, "persist({offset}, {len}) in {dir}");
    }
    drop(region);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[4100..4109], b"persisted");
    assert!(bytes[..4100].iter().all(|&b| b == 0xff));

    let region = FileStore.open(&path, &|_| Ok(())).unwrap();
    assert_eq!(region.in_memory(), want_in_memory, "opened in {dir}");
    assert_eq!(&region.bytes()[4100..4109], b"persisted");
}

#[test]
fn a_pm_file_on_tmpfs_is_in_memory() {
    let _serial = serial();
    check("/dev/shm", true);
}

#[test]
fn a_pm_file_on_disk_is_not_in_memory() {
    let _serial = serial();
    check("/var/tmp", false);
}

/// A fill larger than one piece is shared among threads: every byte of the range gets
/// the fill's byte, and nothing outside it changes, whatever the shares' edges.
#[test]
fn a_large_fill_covers_its_range_exactly() {
    let _serial = serial();
    const MIB: usize = 1 << 20;
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = tmp.path().join("pm");
    let len = 9 * MIB + 3 * 4096;
    let mut region = FileStore.create(&path, len as u64).unwrap();
    let (start, end) = (4096, len - 4096);
    region.fill(start, end - start, 0xa5).unwrap();
    let bytes = region.bytes();
    let wrong =
        |range: std::ops::Range<usize>, want: u8| range.clone().find(|&at| bytes[at] != want);
    assert_eq!(wrong(0..start, 0), None, "before the range");
    assert_eq!(wrong(start..end, 0xa5), None, "in the range");
    assert_eq!(wrong(end..len, 0), None, "after the range");
}

/// On a disk file system, written pages go to the file when a persist's range touches
/// them (whole pages, as msync sends them) or when the region goes, not before; the
/// mapping shows every write throughout, before and after its page went out; a fill
/// over written pages is what the mapping and the file show afterwards; and a reopen
/// sees the region's last bytes.
#[test]
fn on_disk_written_pages_reach_the_file_when_persisted() {
    const PAGE: usize = 4096;
    const LEN: usize = 8 * PAGE;
    let _serial = serial();
    check("/var/tmp", false);
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = tmp.path().join("pm");
    let mut region = FileStore.create(&path, LEN as u64).unwrap();
    region.fill(0, LEN, 0xff).unwrap();
    let file = || std::fs::read(&path).unwrap();

    region.write(100, b"A");
    region.write(3 * PAGE + 5, b"B");
    region.store_u64(5 * PAGE, 0x1122_3344_5566_7788);
    region.persist(3 * PAGE + 5, 1).unwrap();
    let on_disk = file();
    assert_eq!(on_disk[3 * PAGE + 5], b'B', "the persisted byte");
    assert_eq!(on_disk[100], 0xff, "page 0 was not persisted");
    assert_eq!(on_disk[5 * PAGE], 0xff, "page 5 was not persisted");
    let shown = region.bytes();
    assert_eq!(shown[100], b'A');
    assert_eq!(shown[3 * PAGE + 5], b'B', "after its page went out");
    assert_eq!(
        shown[5 * PAGE..5 * PAGE + 8],
        0x1122_3344_5566_7788u64.to_le_bytes()
    );

    // The page written again after it went out is marked again.
    region.write(3 * PAGE + 6, b"C");
    region.persist(3 * PAGE, 1).unwrap();
    assert_eq!(file()[3 * PAGE + 6], b'C');

    // A fill over a written page: the mapping and the file both show the fill.
    region.write(6 * PAGE + 1, b"D");
    region.fill(6 * PAGE, PAGE, 0x11).unwrap();
    assert!(
        region.bytes()[6 * PAGE..7 * PAGE]
            .iter()
            .all(|&b| b == 0x11)
    );
    assert!(file()[6 * PAGE..7 * PAGE].iter().all(|&b| b == 0x11));

    region.persist(0, LEN).unwrap();
    assert!(file() == region.bytes(), "after persisting everything");
    // A page written and never persisted reaches the file as the region goes, as a
    // shared mapping's would.
    region.write(7 * PAGE + 9, b"E");
    assert_eq!(file()[7 * PAGE + 9], 0xff);
    let shown = region.bytes().to_vec();
    drop(region);
    assert!(file() == shown, "after the region went");
    let region = FileStore.open(&path, &|_| Ok(())).unwrap();
    assert!(region.bytes() == shown, "reopened");
}
