//! Volume geometry as the tests think of it. The sizes are worked out here from the
//! on-disk format (docs/DESIGN.md), not taken from the library's `format`, so a test
//! that sizes a device or counts blocks with them checks the library instead of
//! repeating it.

use crate::format::Params;

/// The chunks' worth of spare room every device holds beyond the volume's own.
const EXTRA_CHUNKS: u64 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geo {
    pub blocklen: u32,
    pub io_unit: u32,
    pub chunk: u32,
    /// Logical block size.
    pub lbs: u32,
    /// Logical chunks of the volume.
    pub chunks: u64,
}

impl Geo {
    pub const fn new(blocklen: u32, io_unit: u32, chunk: u32, lbs: u32, chunks: u64) -> Geo {
        Geo {
            blocklen,
            io_unit,
            chunk,
            lbs,
            chunks,
        }
    }

    /// A small geometry, quick to run through many times: 512-byte blocks, 1 KiB io
    /// units, 4 KiB chunks.
    pub const fn small(chunks: u64) -> Geo {
        Geo::new(512, 1024, 4096, 512, chunks)
    }

    /// Blocks of a backing device that holds exactly `chunks + 128` chunks.
    pub fn blockcnt(&self) -> u64 {
        (self.chunks + EXTRA_CHUNKS) * u64::from(self.chunk) / u64::from(self.blocklen)
    }

    pub fn vol_bytes(&self) -> usize {
        (self.chunks * u64::from(self.chunk)) as usize
    }

    pub fn blocks_per_chunk(&self) -> u64 {
        u64::from(self.chunk / self.lbs)
    }

    pub fn total_blocks(&self) -> u64 {
        self.chunks * self.blocks_per_chunk()
    }

    pub fn iou_per_chunk(&self) -> u64 {
        u64::from(self.chunk / self.io_unit)
    }

    /// Io units overlapping the 8 KiB of metadata at the start of the device: never
    /// allocated to chunks, but counted in `allocated_io_units`.
    pub fn metadata_io_units(&self) -> u64 {
        8192u64.div_ceil(u64::from(self.io_unit))
    }

    /// Init parameters for this geometry (random uuid, size from the device).
    pub fn params(&self) -> Params {
        Params {
            backing_io_unit_size: self.io_unit,
            logical_block_size: self.lbs,
            chunk_size: self.chunk,
            ..Default::default()
        }
    }
}
