#![warn(missing_docs)]
//! `reduce`: compressed block volumes in the manner of SPDK's libreduce, with its C ABI
//! and on-disk format.
//!
//! A [`Volume`] presents logical blocks and stores them, compressed chunk by chunk, on
//! a [`BackingDevice`] the caller supplies; metadata lives in a memory-mapped pm file
//! ([`FileStore`]). Everything completes through callbacks, inside the call or later.
//!
//! A volume is made with [`Volume::init`] from an [`InitPlan`] (validated [`Params`]),
//! or opened with [`Volume::load`], over a [`Backend`]: the device ([`FileDevice`], or
//! the caller's own), a [`Codec`] ([`ZstdCodec`](struct@ZstdCodec) at a level, [`Lz4Codec`], or the
//! caller's own, most simply through [`SyncCodec`]) and the pm store. The superblock
//! records the codec's [`Compression`] where later SPDK releases keep it.
//! [`Volume::check`] audits a volume into a [`Report`]. Failures are errno values
//! ([`Errno`]), as in the original. The layers inside are described in
//! `docs/DESIGN.md`.
//!
//! For simple programs, [`blocking::Volume`] returns results instead of calling back,
//! over devices that complete inside the call:
//!
//! ```
//! use reduce::{FileDevice, Lz4Codec, Params, blocking};
//!
//! let dir = tempfile::tempdir()?;
//! // 16 KiB chunks: 128 chunks' worth of the device are the volume's reserve.
//! let device = FileDevice::create(dir.path().join("disk.img"), 4096, (128 + 256) * 4)?;
//! let params = Params {
//!     backing_io_unit_size: 4096,
//!     logical_block_size: 4096,
//!     chunk_size: 16384,
//!     ..Params::default()
//! };
//! let vol = blocking::Volume::init(params, device, Lz4Codec, dir.path())?;
//! vol.write(8, &[1u8; 16384])?; // logical blocks 8..12: chunk 2
//! assert_eq!(vol.info().chunks_in_use, 1);
//! assert_eq!(vol.params().compression.algo, reduce::CompAlgo::LZ4);
//! vol.unload()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod alloc;
mod backing;
pub mod blocking;
mod check;
mod codec;
mod completion;
mod error;
mod ffi;
mod format;
pub mod log;
mod maps;
mod pm;
mod vol;

// Test code, documented for its users in the tests, not as product.
#[cfg(feature = "testkit")]
#[allow(missing_docs)]
pub mod testkit;

pub use backing::{BackingDevice, BackingIo, Extent, FileDevice, IoBuf, IoDone};
pub use check::{Problem, Report};
pub use codec::{
    Codec, CodecDone, CodecIo, CodecPool, CompAlgo, Compression, Lz4Codec, SyncCodec, ZstdCodec,
};
pub use error::{Errno, Error, Result};
pub use format::Params;
pub use maps::MapProblem;
pub use pm::{FileStore, PmLock, PmRegion, PmStore};
pub use vol::{Backend, Info, InitPlan, Op, Stats, UserIo, Volume};
