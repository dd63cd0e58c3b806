//! The test kit: for this crate's tests, benches, examples and fuzz targets, not part
//! of the product. Built only with the `testkit` feature, which the crate's own
//! dev-dependency on itself turns on, so `cargo test` has it and a user's build does
//! not.
//!
//! What it holds: test doubles for everything a volume runs on ([`MemBacking`],
//! [`MemStore`], [`TestCodec`] around [`RleCodec`] or zstd), each completing inside the
//! call or later and failing chosen operations; a [`Journal`] of everything that could
//! reach stable storage, to cut the power at any instant; the [`Rig`] that puts them
//! together with blocking helpers; and deterministic test data ([`Rng`], [`any_data`]).
//!
//! Everything here is safe code: the kit runs under miri with the core.

#![forbid(unsafe_code)]

mod backing;
mod codec;
mod data;
mod geo;
mod journal;
mod rig;
mod rle;
mod store;

pub use backing::{DuplicateFn, FaultFn, MemBacking, Mode, TamperFn};
pub use codec::{CodecTamperFn, TestCodec};
pub use data::{Rng, any_data, data, prose, range_in_chunk, split, split_lens, text};
pub use geo::Geo;
pub use journal::{Crash, Entry, Images, Journal};
pub use rig::{CodecKind, POLL_CAP, Rig, Slot, filler, slot, wait_on};
pub use rle::RleCodec;
pub use store::MemStore;

/// The engine's pool of active requests: tests go beyond it to exercise the queue of
/// waiting ones.
pub use crate::vol::MAX_ACTIVE;

/// Layout facts the fuzz targets need to build a device image from raw input.
pub mod format {
    pub use crate::format::{METADATA_SIZE, PATH_OFFSET, decode_path};
}
