//! The backing device the caller supplies: block reads and writes that complete through
//! an [`IoDone`], inside the call or later. Buffers are handed over by value and come
//! back with the completion, so the device owns them while the operation runs and no
//! borrow spans the wait.

mod file;

pub use file::FileDevice;

use smallvec::SmallVec;

use std::rc::Rc;

use crate::completion::{Receiver, Token};
use crate::error::Result;

/// One contiguous run of blocks, and where its bytes sit in the operation's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lba: u64,
    pub lba_count: u32,
    pub buf_offset: usize,
}

/// A read or write: `buf` and the block runs it maps to. A chunk's io units need not
/// be contiguous on the device, so one operation may hold several runs.
#[derive(Debug)]
pub struct BackingIo {
    pub buf: Vec<u8>,
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

/// A block device. Reads and writes of whole blocks of `blocklen` bytes.
pub trait BackingDevice {
    fn blocklen(&self) -> u32;
    fn blockcnt(&self) -> u64;
    fn read(&self, io: BackingIo, done: IoDone);
    fn write(&self, io: BackingIo, done: IoDone);
}
