//! The pm file: the metadata region the volume maps whole, and where such files live.
//!
//! [`PmRegion`] is one mapped file: read it as bytes, write it, and `persist` a range
//! (written pages through the descriptor and fdatasync for a file on a disk; nothing
//! for a file on tmpfs or ramfs, whose pages are the
//! file), and `fill` a range without mapping it in (init's all-ones
//! maps). [`PmStore`] creates, opens and removes them by path. Paths are
//! bytes, as the OS has them (`Path`), never required to be UTF-8.
//!
//! A volume is open at most once: a region holds an exclusive lock on its file for as
//! long as it lives (`flock(LOCK_EX | LOCK_NB)` for a real file, which conflicts across
//! processes and across separate opens in one process), and opening or locking a file
//! that is held fails with `EBUSY`. The kernel drops the lock with the process, so a
//! crash leaves no stale lock behind. The lock belongs to the open file, so a child
//! forked while it is held holds it too until it execs (the file is close-on-exec)
//! or exits. Two stores:
//! [`FileStore`] (real files, memmap2) and the test kit's `MemStore` (memory, for tests
//! and miri), which keeps apart what was written from what was persisted so a test can
//! cut the power.

mod file;

pub use file::FileStore;

use std::path::Path;

use crate::error::Result;

/// Bytes [`PmRegion::fill`] writes at a time: filling needs no buffer of the file's size.
pub const FILL_PIECE: usize = 1 << 20;

/// Hands `write` the range `offset..offset + len` as pieces of at most `piece.len()`
/// bytes, all from `piece` (one buffer of the fill's byte, reused), stopping at the
/// first error.
fn in_pieces(
    offset: usize,
    len: usize,
    piece: &[u8],
    mut write: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let end = offset + len;
    let mut at = offset;
    while at < end {
        let n = piece.len().min(end - at);
        write(at, &piece[..n])?;
        at += n;
    }
    Ok(())
}

/// One mapped pm file. Offsets and ranges are always within `bytes()`.
pub trait PmRegion {
    /// The whole file, as it is now in memory.
    fn bytes(&self) -> &[u8];
    /// Copies `data` in at `offset` (not yet durable: see `persist`).
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Writes an aligned 8-byte word with a single store, so the logical map entry
    /// switches from old to new chunk map and is never seen torn.
    fn store_u64(&mut self, offset: usize, value: u64);
    /// Makes `len` bytes at `offset` durable: a no-op for a file on a RAM file system
    /// (see [`in_memory`](Self::in_memory)).
    fn persist(&mut self, offset: usize, len: usize) -> Result<()>;

    /// True when the file lives on a RAM file system (tmpfs, ramfs), where its pages
    /// are the file: `persist` then has nothing to write back and does nothing. Nothing
    /// there survives a power cut anyway, and a process crash loses nothing, as the
    /// mapping is shared.
    fn in_memory(&self) -> bool {
        false
    }

    /// Sets `len` bytes at `offset` to `byte` and makes them durable, 1 MiB
    /// (`FILL_PIECE`) at a time. A real file writes them through its descriptor instead, so
    /// that none of its pages is mapped into the process, and every block of the range
    /// is allocated then: a full file system fails here (`ENOSPC`), never later with a
    /// store into the mapping.
    fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<()> {
        let piece = vec![byte; FILL_PIECE.min(len)];
        in_pieces(offset, len, &piece, |at, piece| {
            self.write(at, piece);
            Ok(())
        })?;
        self.persist(offset, len)
    }

    /// The file's size in bytes.
    fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True for an empty file.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian u64 at `offset`.
    fn read_u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(
            self.bytes()[offset..offset + 8]
                .try_into()
                .expect("8 bytes"),
        )
    }

    /// The little-endian u32 at `offset`.
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(
            self.bytes()[offset..offset + 4]
                .try_into()
                .expect("4 bytes"),
        )
    }
}

/// The exclusive lock on a pm file, held without mapping it: dropping it unlocks.
pub trait PmLock {}

/// Where pm files live. Every region and lock handed out holds the file's exclusive
/// lock until dropped.
pub trait PmStore {
    /// Creates `path` exclusively (mode 0600), `len` bytes of zeros, locks and maps it.
    /// Its blocks need not be allocated yet: the caller fills every byte
    /// ([`PmRegion::fill`]) before it stores into the mapping. On failure nothing is
    /// left behind. The OS errno (`EEXIST`, `ENOENT`,
    /// `EACCES`...).
    fn create(&self, path: &Path, len: u64) -> Result<Box<dyn PmRegion>>;
    /// Opens, locks and maps an existing file, but only a regular file (`EILSEQ`
    /// otherwise) whose length `check_len` accepts (else its error): a file that fails
    /// is never mapped. `EBUSY`, before anything else is looked at, when another
    /// holder has it locked.
    fn open(&self, path: &Path, check_len: &dyn Fn(u64) -> Result<()>)
    -> Result<Box<dyn PmRegion>>;
    /// Locks an existing pm file without mapping it (to keep it from being loaded while
    /// its volume is replaced or destroyed): `None` when there is no file at `path`,
    /// `EBUSY` when it is held, `EILSEQ` when it is not a regular file.
    fn lock(&self, path: &Path) -> Result<Option<Box<dyn PmLock>>>;
    /// Removes the file at `path`: the OS errno when it cannot.
    fn remove(&self, path: &Path) -> Result<()>;
}
