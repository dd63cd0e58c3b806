//! `reduce`: compressed block volumes in the manner of SPDK's libreduce, with its C ABI
//! and on-disk format.
//!
//! A [`Volume`] presents logical blocks and stores them, compressed chunk by chunk, on
//! a [`BackingDevice`] the caller supplies; metadata lives in a memory-mapped pm file
//! ([`FileStore`]). Everything completes through callbacks, inside the call or later.
//!
//! A volume is made with [`Volume::init`] from an [`InitPlan`] (validated [`Params`]),
//! or opened with [`Volume::load`], over a [`Backend`]: the device, a [`Codec`]
//! ([`ZstdCodec`], or the caller's own, most simply through [`SyncCodec`]) and the pm
//! store. [`Volume::check`] audits it into a [`Report`]. Failures are errno values
//! ([`Errno`]), as in the original. The layers inside are described in
//! `docs/DESIGN.md`.

mod alloc;
mod backing;
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

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backing::{BackingDevice, BackingIo, Extent, IoDone};
pub use check::{Problem, Report};
pub use codec::{Codec, CodecDone, CodecIo, CodecPool, SyncCodec, ZstdCodec};
pub use error::{Errno, Error, Result};
pub use format::Params;
pub use pm::{FileStore, PmLock, PmRegion, PmStore};
pub use vol::{Backend, Info, InitPlan, Op, UserIo, Volume};
