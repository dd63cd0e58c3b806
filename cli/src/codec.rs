//! The codec a volume's superblock records, chosen once the volume is loaded.
//!
//! Loading reads the superblock and the pm file but no chunk, so a volume can be
//! loaded with this codec still empty, and the codec its superblock names filled in
//! before anything is compressed or decompressed: one load, whatever the codec.

use std::cell::OnceCell;
use std::rc::Rc;

use reduce::{Codec, CodecDone, CodecIo, Compression, Errno, Error};

/// A codec filled in after load; clones share it.
#[derive(Clone, Default)]
pub struct Recorded(Rc<OnceCell<Box<dyn Codec>>>);

impl Recorded {
    /// Fills in the built-in codec that stores chunks as `compression` says: false
    /// when there is none (a volume of the 2019 libreduce records none; a caller's own
    /// codec may record an algorithm this library lacks).
    pub fn choose(&self, compression: Compression) -> bool {
        match compression.builtin() {
            Some(codec) => self.0.set(codec).is_ok(),
            None => false,
        }
    }

    /// Whether a codec was filled in.
    pub fn is_chosen(&self) -> bool {
        self.0.get().is_some()
    }
}

/// A codec that was not filled in: a chunk would be stored uncompressed and could not
/// be read; the commands that read or write chunks refuse such volumes before that.
fn missing() -> Error {
    Error::new(
        Errno::EINVAL,
        "no built-in codec for this volume's compression",
    )
}

impl Codec for Recorded {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        match self.0.get() {
            Some(codec) => codec.compress(io, done),
            None => done.complete(io, Err(missing())),
        }
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        match self.0.get() {
            Some(codec) => codec.decompress(io, done),
            None => done.complete(io, Err(missing())),
        }
    }

    fn compression(&self) -> Compression {
        self.0
            .get()
            .map_or(Compression::UNRECORDED, |codec| codec.compression())
    }
}
