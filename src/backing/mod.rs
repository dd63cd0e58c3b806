//! The backing device the caller supplies: block reads and writes that complete through
//! an [`IoDone`], inside the call or later. Buffers are handed over by value and come
//! back with the completion, so the device owns them while the operation runs and no
//! borrow spans the wait.

mod file;

pub use file::FileDevice;

use smallvec::SmallVec;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::completion::{Receiver, Token};
use crate::error::Result;

/// One contiguous run of blocks, and where its bytes sit in the operation's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The first block.
    pub lba: u64,
    /// How many blocks.
    pub lba_count: u32,
    /// Where the run's `lba_count * blocklen` bytes start in the buffer.
    pub buf_offset: usize,
}

/// The bytes of a [`BackingIo`] or of a [`CodecIo`](crate::CodecIo), seen as a `[u8]`:
/// the volume's own buffer, or a whole chunk of a C caller's buffers, lent for one
/// operation so that the chunk moves between the caller's memory and the device (a
/// chunk stored raw) or the codec without a copy. Only requests made through the C ABI
/// lend their memory, to the C device and its codec functions; a Rust caller's buffers
/// ([`Volume::readv`](crate::Volume::readv) and the like) always go through the
/// volume's. A lent buffer is valid until the operation completes, and the volume
/// completes no request while an operation lending its memory is out; a device or codec
/// must write only into the buffer it writes to (a read's, an output). It may be used
/// on another thread (a pool's worker), as C devices use iovecs.
#[derive(Default)]
pub struct IoBuf(Bytes);

enum Bytes {
    Owned(Vec<u8>),
    /// `'static` stands for "until the operation holding it comes back", which the
    /// volume guarantees (see above); a plain slice, so lending allocates nothing.
    Lent(&'static mut [u8]),
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes::Owned(Vec::new())
    }
}

impl IoBuf {
    /// A view of a caller's memory (made in `ffi`, the one place that may).
    pub(crate) fn lent(bytes: &'static mut [u8]) -> IoBuf {
        IoBuf(Bytes::Lent(bytes))
    }

    /// The volume's own buffer back; `None` for lent memory, which is dropped without
    /// being touched.
    pub(crate) fn into_vec(self) -> Option<Vec<u8>> {
        match self.0 {
            Bytes::Owned(buf) => Some(buf),
            Bytes::Lent(_) => None,
        }
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(buf: Vec<u8>) -> IoBuf {
        IoBuf(Bytes::Owned(buf))
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Owned(buf) => buf,
            Bytes::Lent(bytes) => bytes,
        }
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Bytes::Owned(buf) => buf,
            Bytes::Lent(bytes) => bytes,
        }
    }
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = match self.0 {
            Bytes::Owned(_) => "ours",
            Bytes::Lent(_) => "lent",
        };
        write!(f, "IoBuf({} bytes, {whose})", self.len())
    }
}

/// A read or write: `buf` and the block runs it maps to. A chunk's io units need not
/// be contiguous on the device, so one operation may hold several runs.
#[derive(Debug)]
pub struct BackingIo {
    /// The data: written from, or read into.
    pub buf: IoBuf,
    /// The block runs, each with its place in `buf`.
    pub extents: SmallVec<[Extent; 4]>,
}

/// Completion of one [`BackingIo`]. Call [`IoDone::complete`] exactly once, from inside
/// the call that received it or later, on the volume's thread.
pub struct IoDone {
    pub(crate) receiver: Rc<dyn Receiver<BackingIo, ()>>,
    pub(crate) token: Token,
}

impl IoDone {
    /// Hands the operation back: `Ok` when every run succeeded, else the first error.
    pub fn complete(self, io: BackingIo, result: Result<()>) {
        self.receiver.receive(self.token, io, result);
    }
}

/// A block device. Reads and writes of whole blocks of `blocklen` bytes, each completed
/// exactly once through its [`IoDone`], inside the call or later on the volume's
/// thread. A write must complete only once its data is durable: the volume then
/// switches its maps to the new data.
///
/// [`FileDevice`] is one. A device in memory, completing inside the call (note that it
/// releases its own borrow before completing: the completion may start the next
/// operation at once):
///
/// ```
/// use std::cell::RefCell;
/// use reduce::{BackingDevice, BackingIo, IoDone, Lz4Codec, Params};
///
/// struct Ram(RefCell<Vec<u8>>);
///
/// impl BackingDevice for Ram {
///     fn blocklen(&self) -> u32 {
///         512
///     }
///     fn blockcnt(&self) -> u64 {
///         self.0.borrow().len() as u64 / 512
///     }
///     fn read(&self, mut io: BackingIo, done: IoDone) {
///         for e in &io.extents {
///             let (at, n) = (e.lba as usize * 512, e.lba_count as usize * 512);
///             io.buf[e.buf_offset..][..n].copy_from_slice(&self.0.borrow()[at..at + n]);
///         }
///         done.complete(io, Ok(()));
///     }
///     fn write(&self, io: BackingIo, done: IoDone) {
///         for e in &io.extents {
///             let (at, n) = (e.lba as usize * 512, e.lba_count as usize * 512);
///             self.0.borrow_mut()[at..at + n].copy_from_slice(&io.buf[e.buf_offset..][..n]);
///         }
///         done.complete(io, Ok(()));
///     }
/// }
///
/// let pm_dir = tempfile::tempdir()?;
/// let params = Params {
///     backing_io_unit_size: 4096,
///     logical_block_size: 512,
///     chunk_size: 16384,
///     ..Params::default()
/// };
/// let ram = Ram(RefCell::new(vec![0; (128 + 8) * 16384]));
/// let vol = reduce::blocking::Volume::init(params, ram, Lz4Codec, pm_dir.path())?;
/// vol.write(0, &[42; 4096])?;
/// let mut back = [0; 4096];
/// vol.read(0, &mut back)?;
/// assert_eq!(back, [42; 4096]);
/// vol.unload()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait BackingDevice {
    /// Size of a block in bytes: the unit of every [`Extent`].
    fn blocklen(&self) -> u32;
    /// Size of the device in blocks.
    fn blockcnt(&self) -> u64;
    /// Fills `io.buf` from the device's blocks, then completes `done` with `io`.
    fn read(&self, io: BackingIo, done: IoDone);
    /// Stores `io.buf` in the device's blocks, then completes `done` with `io` once the
    /// data is durable.
    fn write(&self, io: BackingIo, done: IoDone);
    /// Discards the blocks of `io.extents` (`io.buf` is empty): the volume holds nothing
    /// there any more, so a thin-provisioned device may give the space back. What the
    /// blocks read afterwards does not matter to the volume, and neither does an
    /// error (it is logged). The volume asks only for io units it has freed, and allocates
    /// none of them again before this completes. The default does nothing.
    fn unmap(&self, io: BackingIo, done: IoDone) {
        done.complete(io, Ok(()));
    }
}
