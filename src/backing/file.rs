//! A backing device on a file (or a block device node): positioned reads and writes of
//! each block run, and holes punched for unmaps, completed inside the call.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{BackingDevice, BackingIo, Extent, IoDone};
use crate::error::{Errno, Error, Result};

/// A [`BackingDevice`] on a file: `blockcnt` whole blocks of a chosen `blocklen` (a
/// partial block at the end is not used). Every read and write completes inside the
/// call, with the OS error as its errno, so a [`blocking::Volume`](crate::blocking::Volume)
/// can drive it.
///
/// A write completes once its data is on stable storage (`fdatasync`), as the volume's
/// crash consistency needs: the volume switches its map to new data only after the
/// device has completed writing it. An unmap punches a hole (`fallocate`), so a sparse
/// file gives back the space of what the volume unmaps or leaves all zeros.
///
/// Clones share the open file.
///
/// ```
/// use reduce::FileDevice;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("backing.img");
/// let dev = FileDevice::create(&path, 512, 4096)?;
/// assert_eq!((dev.blocklen(), dev.blockcnt()), (512, 4096));
/// // Opened again later, the size comes from the file.
/// assert_eq!(FileDevice::open(&path, 4096)?.blockcnt(), 512);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileDevice {
    file: Arc<File>,
    blocklen: u32,
    blockcnt: u64,
}

/// An OS error while doing `what`.
fn os_error(what: impl std::fmt::Display, err: &std::io::Error) -> Error {
    Error::new(Errno::from_io(err), format!("{what}: {err}"))
}

impl FileDevice {
    /// Opens an existing file (or block device) for reading and writing, as blocks of
    /// `blocklen` bytes. `EINVAL` for a `blocklen` of 0; the OS errno when it cannot
    /// be opened.
    pub fn open(path: impl AsRef<Path>, blocklen: u32) -> Result<FileDevice> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| os_error(format_args!("opening {}", path.display()), &e))?;
        FileDevice::from_file(file, blocklen)
    }

    /// Creates a new file of `blockcnt` blocks of `blocklen` bytes (sparse: it reads
    /// as zeros). `EEXIST` when the file exists, `EINVAL` for a `blocklen` of 0 or a
    /// size that overflows.
    pub fn create(path: impl AsRef<Path>, blocklen: u32, blockcnt: u64) -> Result<FileDevice> {
        let path = path.as_ref();
        let len = blockcnt
            .checked_mul(u64::from(blocklen))
            .filter(|_| blocklen > 0)
            .ok_or_else(|| {
                Error::new(
                    Errno::EINVAL,
                    format!("a device of {blockcnt} blocks of {blocklen} bytes"),
                )
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| os_error(format_args!("creating {}", path.display()), &e))?;
        if let Err(e) = file.set_len(len) {
            let _ = std::fs::remove_file(path);
            return Err(os_error(format_args!("sizing {}", path.display()), &e));
        }
        FileDevice::from_file(file, blocklen)
    }

    /// A device on a file already open for reading and writing. Its size is taken
    /// now, by seeking to its end (which also works for block devices).
    pub fn from_file(mut file: File, blocklen: u32) -> Result<FileDevice> {
        if blocklen == 0 {
            return Err(Error::new(Errno::EINVAL, "blocklen is 0"));
        }
        let bytes = file
            .seek(SeekFrom::End(0))
            .map_err(|e| os_error("finding the size", &e))?;
        Ok(FileDevice {
            file: Arc::new(file),
            blocklen,
            blockcnt: bytes / u64::from(blocklen),
        })
    }

    /// Block size in bytes.
    pub fn blocklen(&self) -> u32 {
        self.blocklen
    }

    /// Size in blocks.
    pub fn blockcnt(&self) -> u64 {
        self.blockcnt
    }

    /// Where run `e` of a buffer of `buf_len` bytes lies: its byte offset on the device
    /// and its length. `EIO` when it does not fit the device, or the buffer (`None`:
    /// an unmap has none).
    fn place(&self, e: &Extent, buf_len: Option<usize>) -> Result<(u64, usize)> {
        let blocklen = u64::from(self.blocklen);
        let fits_device = e
            .lba
            .checked_add(u64::from(e.lba_count))
            .is_some_and(|end| end <= self.blockcnt);
        let len = usize::try_from(u64::from(e.lba_count) * blocklen).ok();
        let fits_buf = |len: usize| {
            buf_len.is_none_or(|n| e.buf_offset.checked_add(len).is_some_and(|end| end <= n))
        };
        match len {
            Some(len) if fits_device && fits_buf(len) => Ok((e.lba * blocklen, len)),
            _ => Err(Error::new(
                Errno::EIO,
                format!(
                    "{} blocks at block {} do not fit a device of {} blocks{}",
                    e.lba_count,
                    e.lba,
                    self.blockcnt,
                    buf_len.map_or(String::new(), |n| format!(", or a buffer of {n} bytes"))
                ),
            )),
        }
    }

    /// Reads or writes every run of `io`; a write is synced before it counts as done.
    fn transfer(&self, io: &mut BackingIo, write: bool) -> Result<()> {
        let buf_len = io.buf.len();
        for e in &io.extents {
            let (at, len) = self.place(e, Some(buf_len))?;
            let buf = &mut io.buf[e.buf_offset..e.buf_offset + len];
            let done = if write {
                self.file.write_all_at(buf, at)
            } else {
                self.file.read_exact_at(buf, at)
            };
            done.map_err(|err| {
                let what = if write { "writing" } else { "reading" };
                os_error(
                    format_args!("{what} {} blocks at block {}", e.lba_count, e.lba),
                    &err,
                )
            })?;
        }
        if write {
            self.file
                .sync_data()
                .map_err(|e| os_error("syncing written blocks", &e))?;
        }
        Ok(())
    }

    /// Punches a hole over every run of `io`: a file gives the space back, a block
    /// device discards it (or writes zeros, as its driver does). A file system or
    /// device that cannot punch holes leaves the blocks as they are, which is no error:
    /// an unmap is advice, and the volume reads none of them again before writing it.
    fn punch(&self, io: &BackingIo) -> Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        for e in &io.extents {
            let (at, len) = self.place(e, None)?;
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            match fallocate(&*self.file, flags, at, len as u64) {
                Ok(()) => {}
                Err(err)
                    if err == rustix::io::Errno::OPNOTSUPP || err == rustix::io::Errno::NOSYS =>
                {
                    return Ok(());
                }
                Err(err) => {
                    return Err(os_error(
                        format_args!("punching {} blocks at block {}", e.lba_count, e.lba),
                        &err.into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl BackingDevice for FileDevice {
    fn blocklen(&self) -> u32 {
        self.blocklen
    }

    fn blockcnt(&self) -> u64 {
        self.blockcnt
    }

    fn read(&self, mut io: BackingIo, done: IoDone) {
        let result = self.transfer(&mut io, false);
        done.complete(io, result);
    }

    fn write(&self, mut io: BackingIo, done: IoDone) {
        let result = self.transfer(&mut io, true);
        done.complete(io, result);
    }

    fn unmap(&self, io: BackingIo, done: IoDone) {
        let result = self.punch(&io);
        done.complete(io, result);
    }
}
