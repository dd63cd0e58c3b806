//! Compression, delegated like the backing device: the volume hands over buffers and
//! gets them back with the result through a [`CodecDone`]. Built-in codecs complete
//! inside the call; a caller's codec (hardware, say) may complete later.

pub(crate) mod pool;
mod zstd;

pub use pool::CodecPool;
pub use zstd::{ZstdCodec, zstd_compress, zstd_decompress};

use std::rc::Rc;

use crate::completion::{Receiver, Token};
use crate::error::Result;

/// One compress or decompress: read `src[..src_len]`, write into `dst` (its whole
/// length is the room there is).
#[derive(Debug)]
pub struct CodecIo {
    pub src: Vec<u8>,
    pub src_len: usize,
    pub dst: Vec<u8>,
}

impl CodecIo {
    pub fn input(&self) -> &[u8] {
        &self.src[..self.src_len]
    }
}

/// Completion of one [`CodecIo`]: the bytes written to `dst`, or an error.
pub struct CodecDone {
    pub(crate) receiver: Rc<dyn Receiver<CodecIo, usize>>,
    pub(crate) token: Token,
}

impl CodecDone {
    /// Hands the operation back with the bytes written to `dst`, or the error.
    pub fn complete(self, io: CodecIo, result: Result<usize>) {
        self.receiver.receive(self.token, io, result);
    }
}

pub trait Codec {
    fn compress(&self, io: CodecIo, done: CodecDone);
    fn decompress(&self, io: CodecIo, done: CodecDone);
}

/// A codec that works in place on slices and completes inside the call.
pub trait SyncCodec {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize>;
    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize>;
}

impl<T: SyncCodec> Codec for T {
    fn compress(&self, mut io: CodecIo, done: CodecDone) {
        let result = self.compress_buf(&io.src[..io.src_len], &mut io.dst);
        done.complete(io, result);
    }

    fn decompress(&self, mut io: CodecIo, done: CodecDone) {
        let result = self.decompress_buf(&io.src[..io.src_len], &mut io.dst);
        done.complete(io, result);
    }
}
