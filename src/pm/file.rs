//! pm files on a file system, mapped with memmap2 and persisted with msync, each held
//! with `flock(LOCK_EX | LOCK_NB)` while in use. A fill goes through the descriptor
//! (pwrite, then fdatasync), so formatting a file of gigabytes leaves its pages in the
//! page cache and out of the process's resident memory. On a RAM file system (tmpfs,
//! ramfs: `fstatfs` at create and open) `persist` skips the msync: the pages are the
//! file, so there is nothing to write back.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::{FILL_PIECE, PmLock, PmRegion, PmStore, in_pieces};
use crate::error::{Errno, Error, Result};

/// The pm store of a real application: files in a directory the caller names.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStore;

struct FileRegion {
    map: MmapMut,
    /// The locked file (the lock lives as long as this descriptor), written through
    /// by `fill`.
    file: File,
    /// The file is on a RAM file system: `persist` has nothing to do.
    in_memory: bool,
}

impl FileRegion {
    fn new(map: MmapMut, file: File) -> FileRegion {
        let in_memory = on_ram_fs(&file);
        FileRegion {
            map,
            file,
            in_memory,
        }
    }
}

/// A locked file, not mapped.
struct FileLock {
    _file: File,
}

impl PmLock for FileLock {}

/// An OS error while doing `what` to the pm file.
fn os_error(what: &str, err: &std::io::Error) -> Error {
    Error::new(Errno::from_io(err), what)
}

fn map(file: &File) -> Result<MmapMut> {
    // SAFETY: the file is a regular file this volume created or was pointed at, and the
    // mapping is private to one volume: we hold the file's exclusive lock, so no other
    // volume maps it, and libreduce's contract is that nothing else truncates or
    // rewrites the pm file while the volume is loaded.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| os_error("mapping", &e))
}

/// ramfs's `f_type` (linux/magic.h), which libc does not name.
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

/// Whether `file` lives on tmpfs or ramfs, whose pages are the file: msync writes
/// nothing back there, and a shared mapping loses nothing when the process dies. When
/// `fstatfs` fails, false: `persist` keeps its msync, never wrong, only slower.
fn on_ram_fs(file: &File) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is a buffer of the size fstatfs fills, and the descriptor is ours
    // for the duration of the call.
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it wrote the whole struct.
    let st = unsafe { st.assume_init() };
    matches!(st.f_type, libc::TMPFS_MAGIC | RAMFS_MAGIC)
}

/// Takes the file's exclusive lock without waiting: `EBUSY` when another open file
/// (in this process or another) holds it.
fn lock_exclusive(file: &File) -> Result<()> {
    // SAFETY: a plain syscall on a file descriptor we own for the duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == ErrorKind::WouldBlock {
        return Err(Error::new(
            Errno::EBUSY,
            "locked: its volume is loaded (in this process or another)",
        ));
    }
    Err(os_error("locking", &err))
}

impl PmStore for FileStore {
    fn create(&self, path: &Path, len: u64) -> Result<Box<dyn PmRegion>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| os_error("creating", &e))?;
        // Sized only: the fill that follows allocates the blocks (and is where a full
        // file system shows), which costs one pass over the file instead of two.
        let mapped = lock_exclusive(&file)
            .and_then(|()| {
                file.set_len(len)
                    .map_err(|e| os_error(&format!("sizing to {len} bytes"), &e))
            })
            .and_then(|()| map(&file));
        match mapped {
            Ok(map) => Ok(Box::new(FileRegion::new(map, file))),
            Err(e) => {
                // Nothing is left behind by a failed create; the create error is the
                // one the caller needs.
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    fn open(
        &self,
        path: &Path,
        check_len: &dyn Fn(u64) -> Result<()>,
    ) -> Result<Box<dyn PmRegion>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| os_error("opening", &e))?;
        lock_exclusive(&file)?;
        let meta = file
            .metadata()
            .map_err(|e| os_error("reading the size", &e))?;
        if !meta.is_file() {
            return Err(Error::new(Errno::EILSEQ, "not a regular file"));
        }
        check_len(meta.len())?;
        let map = map(&file)?;
        Ok(Box::new(FileRegion::new(map, file)))
    }

    fn lock(&self, path: &Path) -> Result<Option<Box<dyn PmLock>>> {
        // Non-blocking, so that a FIFO at the path cannot hang the open.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(os_error("opening", &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| os_error("reading the type", &e))?;
        if !meta.is_file() {
            return Err(Error::new(Errno::EILSEQ, "not a regular file"));
        }
        lock_exclusive(&file)?;
        Ok(Some(Box::new(FileLock { _file: file })))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).map_err(|e| os_error("removing", &e))
    }
}

impl PmRegion for FileRegion {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        self.map[offset..offset + data.len()].copy_from_slice(data);
    }

    fn store_u64(&mut self, offset: usize, value: u64) {
        let word = &mut self.map[offset..offset + 8];
        assert_eq!(word.as_ptr().align_offset(8), 0, "pm word not aligned");
        // SAFETY: `word` is 8 bytes inside the mapping, 8-byte aligned (checked above:
        // the map is page aligned and every word offset is a multiple of 8), and the
        // exclusive borrow of the mapping means no other reference aliases it.
        let atomic = unsafe { AtomicU64::from_ptr(word.as_mut_ptr().cast::<u64>()) };
        atomic.store(value.to_le(), Ordering::Release);
    }

    fn persist(&mut self, offset: usize, len: usize) -> Result<()> {
        if self.in_memory {
            // No msync, but a range beyond the file fails as memmap2's check would.
            return match offset.checked_add(len) {
                Some(end) if end <= self.map.len() => Ok(()),
                _ => Err(os_error("persisting", &ErrorKind::InvalidInput.into())),
            };
        }
        self.map
            .flush_range(offset, len)
            .map_err(|e| os_error("persisting", &e))
    }

    fn in_memory(&self) -> bool {
        self.in_memory
    }

    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<()> {
        debug_assert!(offset + len <= self.map.len(), "fill beyond the pm file");
        // The kernel's page allocation and copy are the whole cost of a large fill, and
        // they scale with threads: one per core (up to 4), each writing its own share
        // from the one buffer.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let share = len
            .div_ceil(threads)
            .next_multiple_of(FILL_PIECE)
            .max(FILL_PIECE);
        let piece = vec![byte; FILL_PIECE.min(len)];
        let (file, piece) = (&self.file, &piece[..]);
        let fill_share = move |start: usize| {
            let end = (start + share).min(offset + len);
            in_pieces(start, end - start, piece, |at, bytes| {
                file.write_all_at(bytes, at as u64)
                    .map_err(|e| os_error("filling", &e))
            })
        };
        std::thread::scope(|scope| {
            // A share whose thread cannot be made is filled here, after this one's.
            let others: Vec<_> = (offset + share..offset + len)
                .step_by(share)
                .map(|start| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || fill_share(start))
                        .map_err(|_| start)
                })
                .collect();
            let mine = fill_share(offset);
            others
                .into_iter()
                .map(|other| match other {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|_| Err(Error::new(Errno::EIO, "filling"))),
                    Err(start) => fill_share(start),
                })
                .fold(mine, Result::and)
        })?;
        self.file
            .sync_data()
            .map_err(|e| os_error("persisting the fill", &e))
    }
}
