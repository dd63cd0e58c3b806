//! Compression, delegated like the backing device: the volume hands over buffers and
//! gets them back with the result through a [`CodecDone`]. Built-in codecs ([`ZstdCodec`](struct@ZstdCodec)
//! at a chosen level, [`Lz4Codec`]) complete inside the call; a caller's codec (hardware,
//! say) may complete later.
//!
//! A codec also says which algorithm and level it stores chunks with ([`Compression`]),
//! so that init records them in the superblock where later SPDK releases keep them.

mod lz4;
pub(crate) mod pool;
mod probe;
mod zstd;

pub use lz4::{Lz4Codec, lz4_compress, lz4_decompress};
pub use pool::CodecPool;
pub use zstd::{ZstdCodec, zstd_compress_at, zstd_decompress};

use std::fmt;
use std::rc::Rc;

use crate::backing::IoBuf;
use crate::completion::{Receiver, Token};
use crate::error::Result;

/// One compress or decompress: read `src[..src_len]`, write into `dst` (its whole
/// length is the room there is). Either may be a C caller's memory, lent for the
/// operation (see [`IoBuf`]): a whole chunk is then compressed straight from the
/// caller's buffer, or decompressed straight into it.
#[derive(Debug)]
pub struct CodecIo {
    /// The input, followed by room the codec ignores.
    pub src: IoBuf,
    /// How many bytes of `src` are input.
    pub src_len: usize,
    /// Where the output goes; its length is the most the codec may write.
    pub dst: IoBuf,
}

impl CodecIo {
    /// The input bytes: `src[..src_len]`.
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

/// A compressor as the volume drives it: each call gets its buffers by value and hands
/// them back through `done`, inside the call or later on the volume's thread.
///
/// `compress` gets one whole chunk and room for `chunk_size` bytes: it completes with
/// the compressed size, or an error (such as `ENOSPC` when the result does not fit),
/// and the volume then stores the chunk uncompressed. `decompress` gets exactly the
/// bytes an earlier `compress` produced and must complete with `chunk_size`.
pub trait Codec {
    /// Compresses `io.input()` into `io.dst`, then completes `done` with `io`.
    fn compress(&self, io: CodecIo, done: CodecDone);
    /// Decompresses `io.input()` into `io.dst`, then completes `done` with `io`.
    fn decompress(&self, io: CodecIo, done: CodecDone);

    /// Compresses `src` into `dst` inside the call, with the result `compress` would
    /// complete with; `None` from a codec that does not work that way (it completes
    /// later, or elsewhere), which the volume then drives through `compress`. A codec
    /// that answers lets the volume compress straight from the caller's buffers.
    fn compress_now(&self, _src: &[u8], _dst: &mut [u8]) -> Option<Result<usize>> {
        None
    }

    /// As [`Codec::compress_now`], for `decompress`: lets the volume decompress straight
    /// into the caller's buffers.
    fn decompress_now(&self, _src: &[u8], _dst: &mut [u8]) -> Option<Result<usize>> {
        None
    }

    /// The algorithm and level this codec stores chunks with, which init records in
    /// the superblock. The default, [`Compression::UNRECORDED`], is for a codec that
    /// does not say.
    fn compression(&self) -> Compression {
        Compression::UNRECORDED
    }
}

/// A codec chosen at run time is a codec too.
impl Codec for Box<dyn Codec> {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        (**self).compress(io, done)
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        (**self).decompress(io, done)
    }

    fn compress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        (**self).compress_now(src, dst)
    }

    fn decompress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        (**self).decompress_now(src, dst)
    }

    fn compression(&self) -> Compression {
        (**self).compression()
    }
}

/// A codec that works in place on slices and completes inside the call.
pub trait SyncCodec {
    /// Compresses `src` into `dst`, returning the bytes written; an error (`ENOSPC`)
    /// when the result does not fit.
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize>;
    /// Decompresses `src` into `dst`, returning the bytes written.
    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize>;

    /// As [`Codec::compression`].
    fn compression(&self) -> Compression {
        Compression::UNRECORDED
    }
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

    fn compress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        Some(self.compress_buf(src, dst))
    }

    fn decompress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        Some(self.decompress_buf(src, dst))
    }

    fn compression(&self) -> Compression {
        SyncCodec::compression(self)
    }
}

/// A compression algorithm as the superblock records it (`comp_algo`, the byte at
/// offset 52). Values below 0x80 are SPDK's `enum spdk_accel_comp_algo`, which later
/// SPDK releases store there; 0x80 and above are this library's own, for algorithms
/// SPDK has no value for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompAlgo(pub u8);

impl CompAlgo {
    /// `SPDK_ACCEL_COMP_ALGO_DEFLATE`. Also what every volume holds whose creator did
    /// not record an algorithm (the 2019 original, a caller's own codec): those bytes
    /// were reserved zeros.
    pub const DEFLATE: CompAlgo = CompAlgo(0);
    /// `SPDK_ACCEL_COMP_ALGO_LZ4`: one raw LZ4 block per chunk.
    pub const LZ4: CompAlgo = CompAlgo(1);
    /// zstd, which SPDK's enum lacks: one zstd frame per chunk.
    pub const ZSTD: CompAlgo = CompAlgo(0x80);

    /// "deflate", "lz4", "zstd", or `None` for a value this library does not know.
    pub fn name(self) -> Option<&'static str> {
        match self {
            CompAlgo::DEFLATE => Some("deflate"),
            CompAlgo::LZ4 => Some("lz4"),
            CompAlgo::ZSTD => Some("zstd"),
            _ => None,
        }
    }
}

impl fmt::Debug for CompAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompAlgo({self})")
    }
}

impl fmt::Display for CompAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{} (unknown)", self.0),
        }
    }
}

/// The algorithm and level a volume's chunks are stored with, as its superblock
/// records them: `comp_level` (u32 at offset 48) and `comp_algo` (u8 at offset 52),
/// where later SPDK releases keep them. The library records them at init and reports
/// them; it does not pick the codec from them (the caller supplies the codec, as in
/// the original).
///
/// ```
/// use reduce::{Codec, CompAlgo, Compression, Lz4Codec, ZstdCodec};
///
/// assert_eq!(ZstdCodec.compression(), Compression { algo: CompAlgo::ZSTD, level: 1 });
/// assert_eq!(ZstdCodec::new(9)?.compression().level, 9);
/// assert_eq!(Lz4Codec.compression(), Compression { algo: CompAlgo::LZ4, level: 1 });
/// # Ok::<(), reduce::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Compression {
    /// The algorithm (`comp_algo`).
    pub algo: CompAlgo,
    /// Its level (`comp_level`): the zstd level, LZ4's acceleration; 0 when not
    /// recorded.
    pub level: u32,
}

impl Compression {
    /// Zeros: what the original wrote (the bytes were reserved) and what a codec that
    /// does not say records. Later SPDK reads it as deflate at level 0.
    pub const UNRECORDED: Compression = Compression {
        algo: CompAlgo::DEFLATE,
        level: 0,
    };

    /// True for [`Compression::UNRECORDED`].
    pub fn is_unrecorded(&self) -> bool {
        *self == Compression::UNRECORDED
    }

    /// The built-in codec that stores chunks this way: zstd at the recorded level, or
    /// LZ4. `None` for any other algorithm or level (deflate, an unrecorded one).
    ///
    /// ```
    /// use reduce::{CompAlgo, Compression};
    ///
    /// let zstd9 = Compression { algo: CompAlgo::ZSTD, level: 9 };
    /// assert_eq!(zstd9.builtin().unwrap().compression(), zstd9);
    /// assert!(Compression::UNRECORDED.builtin().is_none());
    /// // The built-in LZ4 has one speed.
    /// assert!(Compression { algo: CompAlgo::LZ4, level: 1 }.builtin().is_some());
    /// assert!(Compression { algo: CompAlgo::LZ4, level: 2 }.builtin().is_none());
    /// ```
    pub fn builtin(&self) -> Option<Box<dyn Codec>> {
        match (self.algo, self.level) {
            (CompAlgo::ZSTD, level) => Some(Box::new(ZstdCodec::new(level).ok()?)),
            (CompAlgo::LZ4, lz4::LEVEL) => Some(Box::new(Lz4Codec)),
            _ => None,
        }
    }
}
