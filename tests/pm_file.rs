//! A pm file on a RAM file system (tmpfs, ramfs) is persisted by doing nothing: the
//! region says it is in memory there, and only there, whether created or opened. The
//! expectation comes from `stat -f`, not from the library's own `fstatfs`. Persist keeps
//! its behaviour otherwise: a range within the file succeeds, one beyond it fails. A
//! fill larger than a piece, shared among threads, covers its range exactly.

use std::path::Path;
use std::process::Command;

use reduce::{Errno, FileStore, PmStore};

const LEN: usize = 3 * 4096;

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
    check("/dev/shm", true);
}

#[test]
fn a_pm_file_on_disk_is_not_in_memory() {
    check("/var/tmp", false);
}

/// A fill larger than one piece is shared among threads: every byte of the range gets
/// the fill's byte, and nothing outside it changes, whatever the shares' edges.
#[test]
fn a_large_fill_covers_its_range_exactly() {
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
