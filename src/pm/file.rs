//! pm files on a file system, mapped with memmap2, each held with
//! `flock(LOCK_EX | LOCK_NB)` while in use. A fill goes through the descriptor
//! (pwrite, then fdatasync), so formatting a file of gigabytes leaves its pages in the
//! page cache and out of the process's resident memory.
//!
//! How a range is made durable depends on where the file lives (`fstatfs` at create
//! and open):
//! - On a RAM file system (tmpfs, ramfs) the mapping is shared and `persist` does
//!   nothing: the pages are the file, so there is nothing to write back.
//! - On a disk file system the mapping is private (copy-on-write). Writes mark their
//!   pages; `persist` writes the marked pages of its range through the descriptor,
//!   then `fdatasync`, then drops the private copies (the mapping reads the file's
//!   pages again, which now hold the same bytes). A store into a shared mapping of a
//!   page that was written back faults, and ext4 journals the file's times there, so
//!   each msync waited for a journal commit as well as the data (`make bench` times a
//!   page both ways on its disk: 110 µs against 76 µs in one run on this project's
//!   machine, 190 against 105 in another). Whole pages go
//!   out, as msync would send them: bytes written but not yet persisted in a page the
//!   range touches become durable early, which the crash rules allow (a page written
//!   back by the kernel does the same). Pages written and not persisted go to the
//!   file as the region is dropped (without a sync), as a shared mapping's would.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions, UncheckedAdvice};

use super::{FILL_PIECE, PmLock, PmRegion, PmStore, in_pieces};
use crate::error::{Errno, Error, Result};

/// The pm store of a real application: files in a directory the caller names.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStore;

struct FileRegion {
    map: MmapMut,
    /// The locked file (the lock lives as long as this descriptor), written through
    /// by `fill` and, on a disk, by `persist`.
    file: File,
    durability: Durability,
}

/// How `persist` makes a range durable (see the module's comment).
enum Durability {
    /// A RAM file system, mapped shared: nothing to do.
    InMemory,
    /// A disk file system, mapped private: the pages written since their last persist
    /// (page numbers), and the page size.
    WriteBack { dirty: BTreeSet<usize>, page: usize },
}

impl FileRegion {
    /// Maps `file` as its file system calls for.
    fn map(file: File) -> Result<FileRegion> {
        let (map, durability) = if on_ram_fs(&file) {
            (map_shared(&file)?, Durability::InMemory)
        } else {
            let dirty = BTreeSet::new();
            (
                map_private(&file)?,
                Durability::WriteBack {
                    dirty,
                    page: page_size(),
                },
            )
        };
        Ok(FileRegion {
            map,
            file,
            durability,
        })
    }

    /// Marks the pages of `len` bytes at `offset` written.
    fn touch(&mut self, offset: usize, len: usize) {
        if let Durability::WriteBack { dirty, page } = &mut self.durability {
            if len > 0 {
                dirty.extend(offset / *page..=(offset + len - 1) / *page);
            }
        }
    }
}

/// Written pages not yet persisted go to the file's page cache (no sync) as the region
/// goes, as a shared mapping's would: the file then holds what the volume last had in
/// memory, not an older state the kernel's writeback would have overwritten (say,
/// entries set back after a persist that failed part-way).
impl Drop for FileRegion {
    fn drop(&mut self) {
        if let Durability::WriteBack { dirty, page } = &self.durability {
            for &p in dirty.iter() {
                let range = p * page..((p + 1) * page).min(self.map.len());
                // Nothing to report a failure to; the persisted state stands.
                let _ = self
                    .file
                    .write_all_at(&self.map[range.clone()], range.start as u64);
            }
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

fn map_shared(file: &File) -> Result<MmapMut> {
    // SAFETY: the file is a regular file this volume created or was pointed at, and the
    // mapping is private to one volume: we hold the file's exclusive lock, so no other
    // volume maps it, and libreduce's contract is that nothing else truncates or
    // rewrites the pm file while the volume is loaded.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| os_error("mapping", &e))
}

/// Without a reservation of swap (`MAP_NORESERVE`): a private writable mapping is
/// otherwise charged whole against the commit limit, and the pm file of a volume of
/// many TiB would be refused, though only the pages written between persists are ever
/// copies.
fn map_private(file: &File) -> Result<MmapMut> {
    // SAFETY: as for `map_shared`; the file changes under the mapping only through this
    // region (`fill`, `persist`), with the bytes the mapping already shows or over
    // pages it holds no copy of.
    unsafe { MmapOptions::new().no_reserve_swap().map_copy(file) }
        .map_err(|e| os_error("mapping", &e))
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// ramfs's `f_type` (linux/magic.h), which libc does not name.
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

/// Whether `file` lives on tmpfs or ramfs, whose pages are the file: there is nothing
/// to write back, and a shared mapping loses nothing when the process dies. When
/// `fstatfs` fails, false: `persist` writes back, never wrong, only slower.
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
            .map(|()| file);
        match mapped.and_then(FileRegion::map) {
            Ok(region) => Ok(Box::new(region)),
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
        Ok(Box::new(FileRegion::map(file)?))
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
        self.touch(offset, data.len());
    }

    fn store_u64(&mut self, offset: usize, value: u64) {
        let word = &mut self.map[offset..offset + 8];
        assert_eq!(word.as_ptr().align_offset(8), 0, "pm word not aligned");
        // SAFETY: `word` is 8 bytes inside the mapping, 8-byte aligned (checked above:
        // the map is page aligned and every word offset is a multiple of 8), and the
        // exclusive borrow of the mapping means no other reference aliases it.
        let atomic = unsafe { AtomicU64::from_ptr(word.as_mut_ptr().cast::<u64>()) };
        atomic.store(value.to_le(), Ordering::Release);
        self.touch(offset, 8);
    }

    fn persist(&mut self, offset: usize, len: usize) -> Result<()> {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.map.len() => end,
            _ => return Err(os_error("persisting", &ErrorKind::InvalidInput.into())),
        };
        let Durability::WriteBack { dirty, page } = &mut self.durability else {
            return Ok(());
        };
        let page = *page;
        if len == 0 {
            return Ok(());
        }
        // The written pages the range touches, as runs of consecutive pages.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &p in dirty.range(offset / page..=(end - 1) / page) {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == p => *last = p,
                _ => runs.push((p, p)),
            }
        }
        if runs.is_empty() {
            // Nothing written there since it was last persisted (or filled).
            return Ok(());
        }
        let bytes =
            |(first, last): (usize, usize)| first * page..((last + 1) * page).min(self.map.len());
        for &run in &runs {
            let range = bytes(run);
            self.file
                .write_all_at(&self.map[range.clone()], range.start as u64)
                .map_err(|e| os_error("persisting", &e))?;
        }
        self.file
            .sync_data()
            .map_err(|e| os_error("persisting", &e))?;
        for &run in &runs {
            let range = bytes(run);
            // SAFETY: the range is whole pages of the mapping (the last one cut at the
            // file's end, which madvise rounds up within the mapping's last page), and
            // the file holds exactly their bytes now: dropping the private copies
            // changes nothing the mapping shows, so no reference into it sees a change.
            // A failure only leaves the copies in memory.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, range.len())
            };
            for p in run.0..=run.1 {
                dirty.remove(&p);
            }
        }
        Ok(())
    }

    fn in_memory(&self) -> bool {
        matches!(self.durability, Durability::InMemory)
    }

    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<()> {
        debug_assert!(offset + len <= self.map.len(), "fill beyond the pm file");
        // A private copy of a page in the range would hide the fill from the mapping:
        // written pages there go to the file first, and their copies are dropped.
        self.persist(offset, len)?;
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
