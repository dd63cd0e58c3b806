//! `reduce`: compressed block volumes in the manner of SPDK's libreduce, with its C ABI
//! and on-disk format.
//!
//! A [`Volume`] presents logical blocks and stores them, compressed chunk by chunk, on
//! a [`BackingDevice`] the caller supplies; metadata lives in a memory-mapped pm file.
//! Everything completes through callbacks, inside the call or later.
//!
//! Layers (one concern each): [`format`] (layout, no I/O), [`pm`] (the mapped pm
//! file), [`maps`] and [`alloc`] (logical map, chunk maps, free maps), [`backing`] and
//! [`codec`] (what the caller supplies), [`vol`] (the request state machine), and
//! `ffi` (the C ABI).

pub mod alloc;
pub mod backing;
pub mod check;
pub mod codec;
mod completion;
pub mod error;
pub mod format;
pub mod journal;
pub mod log;
pub mod maps;
pub mod pm;
pub mod testing;
pub mod vol;

mod ffi;

pub use backing::{BackingDevice, BackingIo, Extent, FaultFn, IoDone, MemBacking, Mode};
pub use check::{Problem, Report};
pub use codec::{Codec, CodecDone, CodecIo, RleCodec, SyncCodec, TestCodec, ZstdCodec};
pub use error::{Errno, Error, Result};
pub use format::Params;
pub use journal::{Crash, Entry, Images, Journal};
pub use pm::{FileStore, MemStore, PmRegion, PmStore};
pub use vol::{Backend, Info, InitPlan, Op, UserIo, Volume};
