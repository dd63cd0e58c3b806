//! The logical map and the chunk maps, read and written in the pm region, and the
//! free maps that go with them. [`MapView`] reads the maps; its [`MapView::scan`] walks
//! everything the logical map references and says what is wrong with it. Load refuses
//! a volume whose scan finds anything, before the volume trusts any of it; the checker
//! (`crate::check`) builds its report on the same scan.
//!
//! The space the chunks in use take ([`Space`]) is counted by the scan at load and kept
//! in step by every commit and clear, so statistics never scan.
//!
//! Memory stays bounded whatever the volume's size or damage: a scan lists at most
//! [`LISTED_PROBLEMS`] problems and counts the rest, load's scan stops at the first
//! problem and keeps no list of chunks, and init fills the pm file a piece of
//! [`FORMAT_PIECE`] bytes at a time.

use std::fmt;
use std::ops::Range;

use fixedbitset::FixedBitSet;
use smallvec::SmallVec;

use crate::alloc::FreeMap;
use crate::error::{Errno, Error, Result};
use crate::format::{EMPTY_ENTRY, Geometry, NO_CHECKSUM, SUPERBLOCK_SIZE};
use crate::log::{self, Level};
use crate::pm::PmRegion;

/// Problems a scan or a check report lists; beyond these it only counts them.
pub const LISTED_PROBLEMS: usize = 100;

/// Bytes init fills and persists at a time, so formatting a pm file needs no buffer
/// of its size.
pub const FORMAT_PIECE: usize = 1 << 20;

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

/// A staged write: chunk `chunk` is to name chunk map `index` instead of `old`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub chunk: u64,
    pub index: u64,
    /// The chunk map the chunk names until the switch, if any.
    pub old: Option<u64>,
}

impl Switch {
    /// The chunks of `group`, for a message.
    fn names(group: &[Switch]) -> String {
        let chunks: Vec<String> = group.iter().map(|s| s.chunk.to_string()).collect();
        match chunks.len() {
            1 => format!("chunk {}", chunks[0]),
            _ => format!("chunks {}", chunks.join(", ")),
        }
    }
}

/// What the chunks holding data take: counted at load, kept in step by every commit and
/// clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// Chunks whose logical map entry names a chunk map.
    pub chunks: u64,
    /// Of those, the ones stored uncompressed.
    pub raw_chunks: u64,
    /// Io units their chunk maps list.
    pub io_units: u64,
    /// The sum of their stored sizes (`compressed_size`).
    pub stored_bytes: u64,
}

impl Space {
    fn add(&mut self, map: &ChunkMap, geo: &Geometry) {
        self.chunks += 1;
        self.raw_chunks += u64::from(map.is_raw(geo));
        self.io_units += map.io_units.len() as u64;
        self.stored_bytes += u64::from(map.compressed_size);
    }

    /// Saturating: a map scribbled on while loaded must not make the counts wrap.
    fn sub(&mut self, map: &ChunkMap, geo: &Geometry) {
        self.chunks = self.chunks.saturating_sub(1);
        self.raw_chunks = self.raw_chunks.saturating_sub(u64::from(map.is_raw(geo)));
        self.io_units = self.io_units.saturating_sub(map.io_units.len() as u64);
        self.stored_bytes = self
            .stored_bytes
            .saturating_sub(u64::from(map.compressed_size));
    }
}

/// Something wrong with what the logical map references, found from the pm file alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapProblem {
    /// A logical map entry names a chunk map the pm file has no room for.
    EntryOutOfRange { chunk: u64, index: u64 },
    /// A chunk map named by a second chunk.
    ChunkMapShared { chunk: u64, index: u64 },
    /// A chunk map with an invalid size, or an io unit outside the data area.
    BadChunkMap { chunk: u64, index: u64 },
    /// An io unit that a second chunk map also holds.
    IoUnitShared { chunk: u64, unit: u64 },
}

impl fmt::Display for MapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapProblem::EntryOutOfRange { chunk, index } => write!(
                f,
                "chunk {chunk}: logical map names chunk map {index}, beyond the pm file"
            ),
            MapProblem::ChunkMapShared { chunk, index } => write!(
                f,
                "chunk {chunk}: chunk map {index} is already named by another chunk"
            ),
            MapProblem::BadChunkMap { chunk, index } => write!(
                f,
                "chunk {chunk}: chunk map {index} has an invalid size or io unit"
            ),
            MapProblem::IoUnitShared { chunk, unit } => write!(
                f,
                "chunk {chunk}: io unit {unit} also belongs to another chunk"
            ),
        }
    }
}

/// What the logical map references, and what is wrong with it.
pub struct Scan {
    pub chunk_maps: FixedBitSet,
    pub io_units: FixedBitSet,
    /// Chunks whose entry and chunk map are valid, in order (a full scan only).
    pub chunks: Vec<u64>,
    /// The first [`LISTED_PROBLEMS`] problems found.
    pub problems: Vec<MapProblem>,
    /// Problems found beyond those listed.
    pub problems_left_out: u64,
    /// What the chunks found valid take.
    pub space: Space,
}

impl Scan {
    fn add(&mut self, problem: MapProblem) {
        if self.problems.len() < LISTED_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_left_out += 1;
        }
    }
}

/// How much a scan does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Everything: each chunk in use and every problem (for the checker).
    Full,
    /// Until the first problem, listing no chunks: load only needs to know whether to
    /// refuse, and what references what.
    FirstProblem,
}

/// The maps of a pm region, read only.
#[derive(Clone, Copy)]
pub struct MapView<'a> {
    pub geo: &'a Geometry,
    pm: &'a dyn PmRegion,
    /// Chunk maps the file has room for (fewer in the original's undersized files).
    chunk_maps: u64,
}

impl MapView<'_> {
    /// The chunk map index chunk `chunk` points at, if it was ever written.
    pub fn logical_entry(&self, chunk: u64) -> Option<u64> {
        match self.pm.read_u64(self.geo.logical_entry_offset(chunk)) {
            EMPTY_ENTRY => None,
            index => Some(index),
        }
    }

    /// Reads chunk map `index`; `None` when it lies beyond the file or its size or io
    /// units are out of range.
    pub fn read_chunk_map(&self, index: u64) -> Option<ChunkMap> {
        let geo = self.geo;
        if index >= self.chunk_maps {
            return None;
        }
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

    /// Walks the logical map: what it references and what is wrong with it (the
    /// first [`LISTED_PROBLEMS`] problems listed, the rest counted). The free maps are
    /// not consulted.
    pub fn scan(&self) -> Scan {
        self.walk(Depth::Full)
    }

    fn walk(&self, depth: Depth) -> Scan {
        let mut s = Scan {
            chunk_maps: FixedBitSet::with_capacity(self.chunk_maps as usize),
            io_units: FixedBitSet::with_capacity(self.geo.total_io_units as usize),
            chunks: Vec::new(),
            problems: Vec::new(),
            problems_left_out: 0,
            space: Space::default(),
        };
        for chunk in 0..self.geo.chunks {
            if depth == Depth::FirstProblem && !s.problems.is_empty() {
                break;
            }
            let Some(index) = self.logical_entry(chunk) else {
                continue;
            };
            if index >= self.chunk_maps {
                s.add(MapProblem::EntryOutOfRange { chunk, index });
                continue;
            }
            if s.chunk_maps.put(index as usize) {
                s.add(MapProblem::ChunkMapShared { chunk, index });
                continue;
            }
            let Some(map) = self.read_chunk_map(index) else {
                s.add(MapProblem::BadChunkMap { chunk, index });
                continue;
            };
            let mut ok = true;
            for &unit in &map.io_units {
                if s.io_units.put(unit as usize) {
                    s.add(MapProblem::IoUnitShared { chunk, unit });
                    ok = false;
                }
            }
            if ok {
                s.space.add(&map, self.geo);
                if depth == Depth::Full {
                    s.chunks.push(chunk);
                }
            }
        }
        s
    }
}

/// The metadata of a loaded volume: the pm region, the free maps and the space the
/// chunks in use take.
pub struct Metadata {
    pub geo: Geometry,
    pm: Box<dyn PmRegion>,
    chunk_maps: FreeMap,
    io_units: FreeMap,
    space: Space,
}

impl Metadata {
    /// Writes a fresh pm image (every map entry empty, then the superblock) and
    /// persists it, [`FORMAT_PIECE`] bytes at a time: memory stays bounded however
    /// large the file.
    pub fn format(geo: Geometry, mut pm: Box<dyn PmRegion>, superblock: &[u8]) -> Result<Metadata> {
        let len = pm.len();
        let fill = vec![0xFF; FORMAT_PIECE.min(len - SUPERBLOCK_SIZE)];
        let mut at = SUPERBLOCK_SIZE;
        while at < len {
            let n = fill.len().min(len - at);
            pm.write(at, &fill[..n]);
            pm.persist(at, n)
                .map_err(|e| e.context("persisting the new maps"))?;
            at += n;
        }
        pm.write(0, superblock);
        pm.persist(0, SUPERBLOCK_SIZE)
            .map_err(|e| e.context("persisting the pm file's superblock"))?;
        Self::rebuild(geo, pm)
    }

    /// Rebuilds the free maps from the logical map, refusing (`EILSEQ`) a volume whose
    /// scan finds anything wrong: an entry beyond the file, a chunk map named twice, an
    /// invalid size, io units out of range or shared.
    pub fn rebuild(geo: Geometry, pm: Box<dyn PmRegion>) -> Result<Metadata> {
        let len = pm.len() as u64;
        let usable = geo.chunk_maps_in_file(len).ok_or_else(|| {
            Error::new(
                Errno::EILSEQ,
                format!("a pm file of {len} bytes does not fit the volume's geometry"),
            )
        })?;
        let view = MapView {
            geo: &geo,
            pm: pm.as_ref(),
            chunk_maps: usable,
        };
        let scan = view.walk(Depth::FirstProblem);
        if let Some(first) = scan.problems.first() {
            return Err(Error::new(
                Errno::EILSEQ,
                format!("the maps are damaged (load stops at the first problem): {first}"),
            ));
        }
        let mut meta = Metadata {
            geo,
            chunk_maps: FreeMap::new(usable as usize),
            io_units: FreeMap::new(geo.total_io_units as usize),
            pm,
            space: scan.space,
        };
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

    /// The maps, read only.
    pub fn view(&self) -> MapView<'_> {
        MapView {
            geo: &self.geo,
            pm: self.pm.as_ref(),
            chunk_maps: self.chunk_maps.len() as u64,
        }
    }

    /// Which chunk maps are in use.
    pub fn chunk_map_usage(&self) -> &FreeMap {
        &self.chunk_maps
    }

    /// Which io units are in use (the metadata area's included).
    pub fn io_unit_usage(&self) -> &FreeMap {
        &self.io_units
    }

    pub fn pm(&self) -> &dyn PmRegion {
        self.pm.as_ref()
    }

    /// The chunk map index chunk `chunk` points at, if it was ever written.
    pub fn logical_entry(&self, chunk: u64) -> Option<u64> {
        self.view().logical_entry(chunk)
    }

    /// The chunk currently stored for logical chunk `chunk`: `None` if it was never
    /// written, `EIO` if its entry names a chunk map that no chunk may use (see
    /// [`Metadata::in_use`]).
    pub fn lookup(&self, chunk: u64) -> Result<Option<ChunkMap>> {
        let Some(index) = self.logical_entry(chunk) else {
            return Ok(None);
        };
        self.in_use(index).map(Some).map_err(|why| {
            Error::new(
                Errno::EIO,
                format!(
                    "chunk {chunk}: its logical map entry names chunk map {index}, which {why}"
                ),
            )
        })
    }

    /// Chunk map `index` as a chunk holding data may name it: within the file, valid,
    /// and allocated along with every io unit it lists (load built the free maps from
    /// the maps, and every write since kept them in step). Anything else is a map entry
    /// scribbled while loaded, and must lead neither to a free io unit nor off the file:
    /// the error says which check failed.
    fn in_use(&self, index: u64) -> std::result::Result<ChunkMap, &'static str> {
        if index >= self.chunk_maps_usable() {
            return Err("lies beyond the pm file");
        }
        if !self.chunk_maps.is_used(index as usize) {
            return Err("is free");
        }
        let map = self
            .view()
            .read_chunk_map(index)
            .ok_or("has an invalid size or io unit")?;
        if !map
            .io_units
            .iter()
            .all(|&u| self.io_units.is_used(u as usize))
        {
            return Err("lists a free io unit");
        }
        Ok(map)
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
                    return Err(Errno::ENOSPC.into());
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

    /// Writes chunk map `index` (already allocated, its data already written) into the
    /// pm mapping, not persisted: nothing names it until [`Metadata::commit_group`]
    /// switches an entry to it, so it may reach the file at any time.
    pub fn stage(&mut self, index: u64, map: &ChunkMap) {
        let geo = self.geo;
        // Inline for chunks of up to 7 io units: no allocation per write.
        let mut entry: SmallVec<[u8; 64]> = SmallVec::with_capacity(geo.chunk_map_stride as usize);
        entry.extend_from_slice(&map.compressed_size.to_le_bytes());
        entry.extend_from_slice(&map.checksum.to_le_bytes());
        for k in 0..geo.io_units_per_chunk as usize {
            let unit = map.io_units.get(k).copied().unwrap_or(EMPTY_ENTRY);
            entry.extend_from_slice(&unit.to_le_bytes());
        }
        self.pm.write(geo.chunk_map_offset(index), &entry);
    }

    /// Commits a group of staged writes, each to a different chunk: one persist of the
    /// range their chunk maps span, then each logical map entry switched with one
    /// aligned store, then one persist of the range the entries span. A crash at any
    /// point leaves each chunk old or new. Nothing is freed here (see
    /// [`Metadata::settle`]). On error every entry is back as it was and the new maps
    /// stay allocated for the caller to release.
    pub fn commit_group(&mut self, group: &[Switch]) -> Result<()> {
        let geo = self.geo;
        let (Some((first_map, last_map)), Some((first_chunk, last_chunk))) = (
            bounds(group.iter().map(|s| s.index)),
            bounds(group.iter().map(|s| s.chunk)),
        ) else {
            return Ok(());
        };
        let at = geo.chunk_map_offset(first_map);
        let len = geo.chunk_map_offset(last_map) + geo.chunk_map_stride as usize - at;
        self.pm.persist(at, len).map_err(|e| {
            e.context(format_args!(
                "{}: persisting their new chunk maps",
                Switch::names(group)
            ))
        })?;
        for s in group {
            self.pm
                .store_u64(geo.logical_entry_offset(s.chunk), s.index);
        }
        let at = geo.logical_entry_offset(first_chunk);
        let len = geo.logical_entry_offset(last_chunk) + 8 - at;
        if let Err(e) = self.pm.persist(at, len) {
            self.unswitch(group);
            return Err(e.context(format_args!(
                "{}: persisting their logical map entries",
                Switch::names(group)
            )));
        }
        Ok(())
    }

    /// Sets back every entry of `group` that names its new chunk map (a commit that
    /// failed, or was cut short).
    pub fn unswitch(&mut self, group: &[Switch]) {
        for s in group {
            let at = self.geo.logical_entry_offset(s.chunk);
            if self.pm.read_u64(at) == s.index {
                self.pm.store_u64(at, s.old.unwrap_or(EMPTY_ENTRY));
            }
        }
    }

    /// After [`Metadata::commit_group`]: chunk `s.chunk` holds `map` now. Its space is
    /// counted, and the chunk map it replaced is freed with its io units.
    pub fn settle(&mut self, s: &Switch, map: &ChunkMap) {
        self.space.add(map, &self.geo);
        if let Some((old_index, old_map)) = self.forget(s.chunk, s.old, s.index) {
            self.release(old_index, &old_map.io_units);
        }
    }

    /// The chunk map `old` that chunk `chunk` named until its entry switched (to `new`,
    /// or to empty), now that the switch is persisted: its space is no longer counted,
    /// and it is returned with its index for the caller to free, or `None` when there is
    /// nothing to free. Only a valid old map is: freeing what a scribbled entry names
    /// could free another chunk's map, or the one just written (logged).
    fn forget(&mut self, chunk: u64, old: Option<u64>, new: u64) -> Option<(u64, ChunkMap)> {
        let old_index = old?;
        match self.in_use(old_index) {
            Ok(old_map) if old_index != new => {
                self.space.sub(&old_map, &self.geo);
                Some((old_index, old_map))
            }
            found => {
                log::emit(
                    Level::Error,
                    format_args!(
                        "chunk {chunk}: the chunk map it replaced, {old_index}, {}; nothing of it was freed",
                        found.err().unwrap_or("is the new one")
                    ),
                );
                None
            }
        }
    }

    /// Empties the logical map entries of `chunks`, so they read as zeros (the original
    /// reads an empty entry so too): the entries that name a chunk map are set empty,
    /// each with one aligned store, and persisted with one persist of the range they
    /// span; only then are their chunk maps freed. A crash at any point leaves each
    /// chunk old or empty. Their io units are returned still allocated: the caller frees
    /// them ([`Metadata::release_io_units`]) once the device no longer has them in
    /// hand. On error every entry is back as it was.
    pub fn clear(&mut self, chunks: Range<u64>) -> Result<Vec<u64>> {
        let geo = self.geo;
        let olds: SmallVec<[(u64, u64); 4]> = chunks
            .clone()
            .filter_map(|chunk| Some((chunk, self.logical_entry(chunk)?)))
            .collect();
        let (Some(&(first, _)), Some(&(last, _))) = (olds.first(), olds.last()) else {
            return Ok(Vec::new());
        };
        for &(chunk, _) in &olds {
            self.pm
                .store_u64(geo.logical_entry_offset(chunk), EMPTY_ENTRY);
        }
        let at = geo.logical_entry_offset(first);
        let len = geo.logical_entry_offset(last) + 8 - at;
        if let Err(e) = self.pm.persist(at, len) {
            for &(chunk, old) in &olds {
                self.pm.store_u64(geo.logical_entry_offset(chunk), old);
            }
            return Err(e.context(format_args!(
                "chunks {first}..={last}: persisting their emptied logical map entries"
            )));
        }
        let mut io_units = Vec::new();
        for &(chunk, old) in &olds {
            if let Some((index, old_map)) = self.forget(chunk, Some(old), EMPTY_ENTRY) {
                self.chunk_maps.free(index as usize);
                io_units.extend_from_slice(&old_map.io_units);
            }
        }
        Ok(io_units)
    }

    /// Returns io units that [`Metadata::clear`] handed out to the free map.
    pub fn release_io_units(&mut self, io_units: &[u64]) {
        for &unit in io_units {
            self.io_units.free(unit as usize);
        }
    }

    /// What the chunks in use take.
    pub fn space(&self) -> Space {
        self.space
    }

    /// Io units free to allocate.
    pub fn io_units_free(&self) -> u64 {
        (self.io_units.len() - self.io_units.in_use()) as u64
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

/// The least and the greatest of `values`; `None` when there are none.
fn bounds(values: impl Iterator<Item = u64> + Clone) -> Option<(u64, u64)> {
    Some((values.clone().min()?, values.max()?))
}

/// Whether a stored chunk's checksum matches its bytes (chunks without one pass).
pub fn checksum_ok(map: &ChunkMap, stored: &[u8]) -> bool {
    map.checksum == NO_CHECKSUM || map.checksum == crate::format::chunk_checksum(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Params;

    /// A pm image in a plain vector.
    struct Image(Vec<u8>);

    impl PmRegion for Image {
        fn bytes(&self) -> &[u8] {
            &self.0
        }

        fn write(&mut self, offset: usize, data: &[u8]) {
            self.0[offset..offset + data.len()].copy_from_slice(data);
        }

        fn store_u64(&mut self, offset: usize, value: u64) {
            self.write(offset, &value.to_le_bytes());
        }

        fn persist(&mut self, _offset: usize, _len: usize) -> Result<()> {
            Ok(())
        }
    }

    /// A volume of `chunks` chunks whose logical map is all zeros: every entry names
    /// chunk map 0, which is empty.
    fn zeroed_logical_map(chunks: u64) -> (Geometry, Image) {
        let params = Params {
            uuid: [1; 16],
            backing_io_unit_size: 1024,
            logical_block_size: 512,
            chunk_size: 4096,
            vol_size: chunks * 4096,
            ..Params::default()
        };
        let geo = Geometry::new(params, 512).unwrap();
        let mut pm = vec![0xFF; geo.pm_size as usize];
        let map = geo.logical_entry_offset(0)..geo.logical_entry_offset(chunks);
        pm[map].fill(0);
        (geo, Image(pm))
    }

    #[test]
    fn scan_lists_the_first_problems_and_counts_the_rest() {
        let (geo, pm) = zeroed_logical_map(1000);
        let view = MapView {
            geo: &geo,
            pm: &pm,
            chunk_maps: geo.total_chunk_maps,
        };
        let scan = view.scan();
        assert_eq!(scan.problems.len(), LISTED_PROBLEMS);
        assert_eq!(scan.problems_left_out, 1000 - LISTED_PROBLEMS as u64);
        assert_eq!(scan.problems.len() as u64 + scan.problems_left_out, 1000);
        // Chunk 0 finds chunk map 0 empty; every later chunk names it again.
        assert_eq!(
            scan.problems[0],
            MapProblem::BadChunkMap { chunk: 0, index: 0 }
        );
        assert_eq!(
            scan.problems[99],
            MapProblem::ChunkMapShared {
                chunk: 99,
                index: 0
            }
        );
        assert!(scan.chunks.is_empty());
    }

    #[test]
    fn load_stops_at_the_first_problem() {
        let (geo, pm) = zeroed_logical_map(1000);
        let view = MapView {
            geo: &geo,
            pm: &pm,
            chunk_maps: geo.total_chunk_maps,
        };
        let scan = view.walk(Depth::FirstProblem);
        assert_eq!((scan.problems.len(), scan.problems_left_out), (1, 0));
        let err = Metadata::rebuild(geo, Box::new(pm)).err().unwrap();
        assert_eq!(err, Errno::EILSEQ);
        assert!(
            err.detail()
                .contains("chunk 0: chunk map 0 has an invalid size"),
            "{err}"
        );
    }

    #[test]
    fn format_fills_in_pieces() {
        use std::cell::Cell;
        use std::rc::Rc;

        /// Keeps the largest write it saw.
        struct Pieces(Image, Rc<Cell<usize>>);
        impl PmRegion for Pieces {
            fn bytes(&self) -> &[u8] {
                self.0.bytes()
            }
            fn write(&mut self, offset: usize, data: &[u8]) {
                self.1.set(self.1.get().max(data.len()));
                self.0.write(offset, data);
            }
            fn store_u64(&mut self, offset: usize, value: u64) {
                self.0.store_u64(offset, value);
            }
            fn persist(&mut self, _offset: usize, _len: usize) -> Result<()> {
                Ok(())
            }
        }
        // 45,000 chunks: a pm file of about 2.2 MB, three pieces.
        let params = Params {
            uuid: [1; 16],
            backing_io_unit_size: 4096,
            logical_block_size: 512,
            chunk_size: 16384,
            vol_size: 45_000 * 16384,
            ..Params::default()
        };
        let geo = Geometry::new(params, 512).unwrap();
        let len = geo.pm_size as usize;
        assert!(len > 2 * FORMAT_PIECE);
        let largest = Rc::new(Cell::new(0));
        let pm = Pieces(Image(vec![0; len]), largest.clone());
        let sb = crate::format::encode_superblock(&params);
        let meta = Metadata::format(geo, Box::new(pm), &sb).unwrap();
        assert_eq!(largest.get(), FORMAT_PIECE);
        assert_eq!(&meta.pm().bytes()[..SUPERBLOCK_SIZE], &sb[..]);
        // One comparison, not a loop over the bytes, so that miri runs it quickly.
        assert!(meta.pm().bytes()[SUPERBLOCK_SIZE..] == vec![0xFF; len - SUPERBLOCK_SIZE][..]);
        assert_eq!(meta.chunk_maps_in_use(), 0);
    }
}
