//! The logical map and the chunk maps, read and written in the pm region, and the
//! free maps that go with them. Load validates every referenced entry here before the
//! volume trusts any of it.

use smallvec::SmallVec;

use crate::alloc::FreeMap;
use crate::check::{self, Report};
use crate::error::{Errno, Result};
use crate::format::{EMPTY_ENTRY, Geometry, NO_CHECKSUM, SUPERBLOCK_SIZE};
use crate::pm::PmRegion;

/// Io unit indices of one chunk; four cover the usual 16 KiB chunk of 4 KiB units.
pub type IoUnits = SmallVec<[u64; 4]>;

/// One chunk as stored: its size on disk, checksum and io units in data order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkMap {
    /// Bytes of compressed data, or `chunk_size` when stored raw.
    pub compressed_size: u32,
    /// [`NO_CHECKSUM`] for chunks the original wrote.
    pub checksum: u32,
    pub io_units: IoUnits,
}

impl ChunkMap {
    pub fn is_raw(&self, geo: &Geometry) -> bool {
        geo.io_units_for(self.compressed_size) == geo.io_units_per_chunk
    }
}

/// The metadata of a loaded volume: the pm region and the free maps.
pub struct Metadata {
    pub geo: Geometry,
    pm: Box<dyn PmRegion>,
    chunk_maps: FreeMap,
    io_units: FreeMap,
}

impl Metadata {
    /// Writes a fresh pm image (superblock, then every map entry empty) and persists
    /// it whole.
    pub fn format(geo: Geometry, mut pm: Box<dyn PmRegion>, superblock: &[u8]) -> Result<Metadata> {
        pm.write(0, superblock);
        let rest = vec![0xFF; pm.len() - SUPERBLOCK_SIZE];
        pm.write(SUPERBLOCK_SIZE, &rest);
        let len = pm.len();
        pm.persist(0, len)?;
        Self::rebuild(geo, pm)
    }

    /// Rebuilds the free maps from the logical map, refusing (`EILSEQ`) a volume the
    /// checker finds anything wrong with: an entry beyond the file, a chunk map named
    /// twice, an invalid size, io units out of range or shared.
    pub fn rebuild(geo: Geometry, pm: Box<dyn PmRegion>) -> Result<Metadata> {
        let usable = geo
            .chunk_maps_in_file(pm.len() as u64)
            .ok_or(Errno::EILSEQ)?;
        let mut meta = Metadata {
            geo,
            chunk_maps: FreeMap::new(usable as usize),
            io_units: FreeMap::new(geo.total_io_units as usize),
            pm,
        };
        let scan = check::scan(&meta);
        if !scan.problems.is_empty() {
            return Err(Errno::EILSEQ);
        }
        for unit in 0..geo.reserved_io_units.min(geo.total_io_units) {
            meta.io_units.claim(unit as usize);
        }
        for index in scan.chunk_maps.ones() {
            meta.chunk_maps.claim(index);
        }
        for unit in scan.io_units.ones() {
            meta.io_units.claim(unit);
        }
        Ok(meta)
    }

    /// Checks the metadata and the free maps against each other (nothing may be in
    /// flight). Returns the report and the chunks whose data can be read back.
    pub fn audit(&self) -> (Report, Vec<u64>) {
        let mut scan = check::scan(self);
        let mut problems = std::mem::take(&mut scan.problems);
        check::compare(
            &scan,
            &self.chunk_maps,
            &self.io_units,
            self.geo.reserved_io_units,
            &mut problems,
        );
        let report = Report {
            chunks_in_use: scan.chunk_maps.count_ones(..) as u64,
            io_units_referenced: scan.io_units.count_ones(..) as u64,
            chunks_read: 0,
            problems,
        };
        (report, scan.chunks)
    }

    pub fn pm(&self) -> &dyn PmRegion {
        self.pm.as_ref()
    }

    /// The chunk map index chunk `chunk` points at, if it was ever written.
    pub fn logical_entry(&self, chunk: u64) -> Option<u64> {
        match self.pm.read_u64(self.geo.logical_entry_offset(chunk)) {
            EMPTY_ENTRY => None,
            index => Some(index),
        }
    }

    /// Reads chunk map `index`; `None` when its size or io units are out of range.
    pub fn read_chunk_map(&self, index: u64) -> Option<ChunkMap> {
        let geo = &self.geo;
        let base = geo.chunk_map_offset(index);
        let compressed_size = self.pm.read_u32(base);
        if compressed_size == 0 || compressed_size > geo.params.chunk_size {
            return None;
        }
        let count = geo.io_units_for(compressed_size) as usize;
        let io_units: IoUnits = (0..count)
            .map(|k| self.pm.read_u64(base + 8 + 8 * k))
            .collect();
        let in_range = |u: &u64| *u >= geo.reserved_io_units && *u < geo.total_io_units;
        if !io_units.iter().all(in_range) {
            return None;
        }
        Some(ChunkMap {
            compressed_size,
            checksum: self.pm.read_u32(base + 4),
            io_units,
        })
    }

    /// The chunk currently stored for logical chunk `chunk`.
    pub fn lookup(&self, chunk: u64) -> Option<ChunkMap> {
        self.logical_entry(chunk)
            .and_then(|index| self.read_chunk_map(index))
    }

    /// Reserves a chunk map and `io_unit_count` io units, all or nothing (`ENOSPC`).
    pub fn allocate(&mut self, io_unit_count: u32) -> Result<(u64, IoUnits)> {
        let index = self.chunk_maps.alloc().ok_or(Errno::ENOSPC)?;
        let mut units = IoUnits::new();
        for _ in 0..io_unit_count {
            match self.io_units.alloc() {
                Some(unit) => units.push(unit as u64),
                None => {
                    self.release(index as u64, &units);
                    return Err(Errno::ENOSPC);
                }
            }
        }
        Ok((index as u64, units))
    }

    /// Returns a chunk map and its io units to the free maps.
    pub fn release(&mut self, index: u64, io_units: &[u64]) {
        self.chunk_maps.free(index as usize);
        for &unit in io_units {
            self.io_units.free(unit as usize);
        }
    }

    /// Makes chunk map `index` (already allocated, data already written) the content of
    /// `chunk`: persist the chunk map, then switch and persist the 8-byte logical map
    /// entry, then free what it replaced. A crash at any point leaves the chunk old or
    /// new. On error the new map stays allocated for the caller to release, and the
    /// logical entry is back to the old one.
    pub fn commit(&mut self, chunk: u64, index: u64, map: &ChunkMap) -> Result<()> {
        let geo = self.geo;
        let base = geo.chunk_map_offset(index);
        let mut entry = Vec::with_capacity(geo.chunk_map_stride as usize);
        entry.extend_from_slice(&map.compressed_size.to_le_bytes());
        entry.extend_from_slice(&map.checksum.to_le_bytes());
        for k in 0..geo.io_units_per_chunk as usize {
            let unit = map.io_units.get(k).copied().unwrap_or(EMPTY_ENTRY);
            entry.extend_from_slice(&unit.to_le_bytes());
        }
        self.pm.write(base, &entry);
        self.pm.persist(base, entry.len())?;

        let old = self.logical_entry(chunk);
        let at = geo.logical_entry_offset(chunk);
        self.pm.store_u64(at, index);
        if let Err(e) = self.pm.persist(at, 8) {
            self.pm.store_u64(at, old.unwrap_or(EMPTY_ENTRY));
            return Err(e);
        }
        if let Some(old_index) = old {
            let old_units = self
                .read_chunk_map(old_index)
                .map(|m| m.io_units)
                .unwrap_or_default();
            self.release(old_index, &old_units);
        }
        Ok(())
    }

    /// Io units in use, metadata included.
    pub fn io_units_in_use(&self) -> u64 {
        self.io_units.in_use() as u64
    }

    pub fn chunk_maps_in_use(&self) -> u64 {
        self.chunk_maps.in_use() as u64
    }

    pub fn chunk_maps_usable(&self) -> u64 {
        self.chunk_maps.len() as u64
    }
}

/// Whether a stored chunk's checksum matches its bytes (chunks without one pass).
pub fn checksum_ok(map: &ChunkMap, stored: &[u8]) -> bool {
    map.checksum == NO_CHECKSUM || map.checksum == crate::format::chunk_checksum(stored)
}
