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
//! problem and keeps no list of chunks (its bitmaps become the free maps), and init
//! fills the pm file through [`PmRegion::fill`], which maps none of it in.
//!
//! Time bounded too: a scan compares the logical map a block of entries at a time
//! and skips blocks that are all empty, so a sparse volume's load runs at memory speed;
//! init knows its maps are empty and scans nothing.

use std::fmt;
use std::ops::Range;

use smallvec::SmallVec;

use crate::alloc::{Bitmap, FreeMap};
use crate::error::{Errno, Error, Result};
use crate::format::{EMPTY_ENTRY, Geometry, NO_CHECKSUM, SUPERBLOCK_SIZE};
use crate::log::{self, Level};
use crate::pm::PmRegion;

/// Problems a scan or a check report lists; beyond these it only counts them.
pub const LISTED_PROBLEMS: usize = 100;

/// Bytes of logical map entries a scan compares at once: 64 entries.
const SCAN_BLOCK: usize = 512;

/// Io unit indices of one chunk (or what an unmap frees); four, inline, cover the usual
/// 16 KiB chunk of 4 KiB units.
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
/// Each names the logical chunk whose entry leads to it (`chunk`), and the chunk map
/// (`index`) or io unit (`unit`) at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields, named the same in every variant, are described above
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
    pub chunk_maps: Bitmap,
    pub io_units: Bitmap,
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

/// The little-endian u64 of 8 bytes.
fn u64_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// The little-endian u32 of 4 bytes.
fn u32_of(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// The maps of a pm region, read only.
#[derive(Clone, Copy)]
pub struct MapView<'a> {
    pub geo: &'a Geometry,
    /// The whole pm file, read directly rather than a word per call.
    pm: &'a [u8],
    /// Chunk maps the file has room for (fewer in the original's undersized files).
    chunk_maps: u64,
}

impl MapView<'_> {
    /// The chunk map index chunk `chunk` points at, if it was ever written.
    pub fn logical_entry(&self, chunk: u64) -> Option<u64> {
        match u64_of(&self.pm[self.geo.logical_entry_offset(chunk)..]) {
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
        let entry = &self.pm[base..base + geo.chunk_map_stride as usize];
        let compressed_size = u32_of(entry);
        if compressed_size == 0 || compressed_size > geo.params.chunk_size {
            return None;
        }
        let count = geo.io_units_for(compressed_size) as usize;
        let mut io_units = IoUnits::new();
        for slot in entry[8..].chunks_exact(8).take(count) {
            let unit = u64_of(slot);
            if unit < geo.reserved_io_units || unit >= geo.total_io_units {
                return None;
            }
            io_units.push(unit);
        }
        Some(ChunkMap {
            compressed_size,
            checksum: u32_of(&entry[4..]),
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
            chunk_maps: Bitmap::new(self.chunk_maps as usize),
            io_units: Bitmap::new(self.geo.total_io_units as usize),
            chunks: Vec::new(),
            problems: Vec::new(),
            problems_left_out: 0,
            space: Space::default(),
        };
        let geo = self.geo;
        let map = &self.pm[geo.logical_entry_offset(0)..geo.logical_entry_offset(geo.chunks)];
        let per_block = SCAN_BLOCK / 8;
        for b in blocks_in_use(map, SPLIT_SEARCH) {
            let block = &map[b * SCAN_BLOCK..map.len().min((b + 1) * SCAN_BLOCK)];
            let first = (b * per_block) as u64;
            for (chunk, entry) in (first..).zip(block.chunks_exact(8)) {
                let index = u64_of(entry);
                if index == EMPTY_ENTRY {
                    continue;
                }
                self.visit(&mut s, chunk, index, depth);
                if depth == Depth::FirstProblem && !s.problems.is_empty() {
                    return s;
                }
            }
        }
        s
    }

    /// Takes chunk `chunk`, whose entry names chunk map `index`, into the scan.
    fn visit(&self, s: &mut Scan, chunk: u64, index: u64, depth: Depth) {
        if index >= self.chunk_maps {
            s.add(MapProblem::EntryOutOfRange { chunk, index });
            return;
        }
        if s.chunk_maps.put(index as usize) {
            s.add(MapProblem::ChunkMapShared { chunk, index });
            return;
        }
        let Some(map) = self.read_chunk_map(index) else {
            s.add(MapProblem::BadChunkMap { chunk, index });
            return;
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
}

/// Logical maps from this size up are searched on two threads (a 1 TiB volume's is
/// 512 MiB, read at memory speed).
const SPLIT_SEARCH: usize = 32 << 20;

/// The blocks of [`SCAN_BLOCK`] bytes of logical map `map` that hold an entry, in
/// order. Most blocks of most volumes hold none: one AND over a block tells (it
/// vectorizes), and a map of `split_from` bytes or more is searched in two halves at
/// once, for load's time.
fn blocks_in_use(map: &[u8], split_from: usize) -> Vec<usize> {
    let search = |part: &[u8], first: usize| -> Vec<usize> {
        let blocks = (first..).zip(part.chunks(SCAN_BLOCK));
        let in_use = blocks.filter(|(_, block)| block.iter().fold(0xFF, |all, &b| all & b) != 0xFF);
        in_use.map(|(b, _)| b).collect()
    };
    if map.len() < split_from {
        return search(map, 0);
    }
    let half = map.len() / 2 / SCAN_BLOCK * SCAN_BLOCK;
    let (front, back) = map.split_at(half);
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("reduce-load".into())
            .spawn_scoped(scope, || search(back, half / SCAN_BLOCK));
        let mut found = search(front, 0);
        match helper.map(|h| h.join()) {
            Ok(Ok(rest)) => found.extend(rest),
            // No thread to be had (or it failed): the second half here.
            _ => found.extend(search(back, half / SCAN_BLOCK)),
        }
        found
    })
}

/// Chunk maps a pm file of this size has room for (`EILSEQ` when the file does not fit
/// the geometry).
fn usable_chunk_maps(geo: &Geometry, pm: &dyn PmRegion) -> Result<u64> {
    let len = pm.len() as u64;
    geo.chunk_maps_in_file(len).ok_or_else(|| {
        Error::new(
            Errno::EILSEQ,
            format!("a pm file of {len} bytes does not fit the volume's geometry"),
        )
    })
}

/// The metadata of a loaded volume: the pm region, the free maps and the space the
/// chunks in use take.
pub struct Metadata {
    pub geo: Geometry,
    pm: Box<dyn PmRegion>,
    chunk_maps: FreeMap,
    io_units: FreeMap,
    space: Space,
    /// The logical map entries (offset, length in the pm file) of the last failed
    /// commit, when even setting them back could not be persisted: the file may hold
    /// new ones, naming the group's new maps. Taken by [`Metadata::release_group`].
    unsettled: Option<(usize, usize)>,
    /// New chunk maps (index, io units) of failed commits, held rather than freed
    /// until the entries that may name them are persisted as set back
    /// ([`Metadata::retry_held`]).
    held: Vec<Held>,
}

/// Chunk maps held after a failed commit: the range of logical map entries (offset and
/// length in the pm file) to persist first, and the maps (index, io units).
type Held = ((usize, usize), Vec<(u64, IoUnits)>);

impl Metadata {
    /// Writes a fresh pm image and persists it: every byte all-ones (every map entry
    /// empty, as the original fills it), then the superblock, so the file never holds
    /// a superblock over maps that are not yet empty. The maps are known empty, so
    /// nothing is scanned.
    pub fn format(geo: Geometry, mut pm: Box<dyn PmRegion>, superblock: &[u8]) -> Result<Metadata> {
        let usable = usable_chunk_maps(&geo, pm.as_ref())?;
        let len = pm.len();
        pm.fill(0, len, 0xFF)
            .map_err(|e| e.context("filling the new maps"))?;
        pm.write(0, superblock);
        pm.persist(0, SUPERBLOCK_SIZE)
            .map_err(|e| e.context("persisting the pm file's superblock"))?;
        Ok(Self::assemble(
            geo,
            pm,
            Bitmap::new(usable as usize),
            Bitmap::new(geo.total_io_units as usize),
            Space::default(),
        ))
    }

    /// Rebuilds the free maps from the logical map, refusing (`EILSEQ`) a volume whose
    /// scan finds anything wrong: an entry beyond the file, a chunk map named twice, an
    /// invalid size, io units out of range or shared.
    pub fn rebuild(geo: Geometry, pm: Box<dyn PmRegion>) -> Result<Metadata> {
        let usable = usable_chunk_maps(&geo, pm.as_ref())?;
        let view = MapView {
            geo: &geo,
            pm: pm.bytes(),
            chunk_maps: usable,
        };
        let scan = view.walk(Depth::FirstProblem);
        if let Some(first) = scan.problems.first() {
            return Err(Error::new(
                Errno::EILSEQ,
                format!("the maps are damaged (load stops at the first problem): {first}"),
            ));
        }
        Ok(Self::assemble(
            geo,
            pm,
            scan.chunk_maps,
            scan.io_units,
            scan.space,
        ))
    }

    /// The metadata of a volume whose chunks take `space` and whose chunk maps and io
    /// units in use are those set in `chunk_maps` and `io_units` (one bit for each map
    /// and unit `space` counts, nothing else): the bitmaps become the free maps, with
    /// the io units of the metadata area marked used.
    fn assemble(
        geo: Geometry,
        pm: Box<dyn PmRegion>,
        chunk_maps: Bitmap,
        mut io_units: Bitmap,
        space: Space,
    ) -> Metadata {
        let reserved = geo.reserved_io_units.min(geo.total_io_units);
        io_units.set_first(reserved as usize);
        Metadata {
            geo,
            chunk_maps: FreeMap::from_used(chunk_maps, space.chunks as usize),
            io_units: FreeMap::from_used(io_units, (space.io_units + reserved) as usize),
            pm,
            space,
            unsettled: None,
            held: Vec::new(),
        }
    }

    /// The maps, read only.
    pub fn view(&self) -> MapView<'_> {
        MapView {
            geo: &self.geo,
            pm: self.pm.bytes(),
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

    /// The chunk maps (index, io units) held after failed commits.
    pub fn held_maps(&self) -> impl Iterator<Item = &(u64, IoUnits)> {
        self.held.iter().flat_map(|(_, maps)| maps)
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
    /// Out of chunk maps, frees those held after a failed commit if it now can.
    ///
    /// The io units are contiguous where the free map finds a run of them
    /// ([`FreeMap::alloc_run`]), so the chunk is read back with one device operation;
    /// else they are the lowest free ones, as the original takes them. Taken that way
    /// alone, overwrites (which free a chunk's units after taking the new ones) left
    /// chunks scattered over the short runs they freed: after `make bench`'s random
    /// 4 KiB writes, 2.5 device reads a chunk, and reads 5 to 11 % slower.
    pub fn allocate(&mut self, io_unit_count: u32) -> Result<(u64, IoUnits)> {
        let index = match self.chunk_maps.alloc() {
            Some(index) => index,
            None if !self.held.is_empty() => {
                self.retry_held();
                self.chunk_maps.alloc().ok_or(Errno::ENOSPC)?
            }
            None => return Err(Errno::ENOSPC.into()),
        };
        let mut units = IoUnits::new();
        if let Some(run) = self.io_units.alloc_run(io_unit_count as usize) {
            units.extend(run.map(|unit| unit as u64));
            return Ok((index as u64, units));
        }
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

    /// Gives back the new chunk maps (index, io units) of a group whose commit failed
    /// ([`Metadata::commit_group`]'s error). When the entries the commit set back could
    /// not be persisted, a new one may still reach the file (a persist that fails may
    /// have written some of its pages): the maps are then held, not freed, so that no
    /// later write takes one that an entry on the file may name, until
    /// [`Metadata::retry_held`] persists those entries.
    pub fn release_group(&mut self, maps: Vec<(u64, IoUnits)>) {
        match self.unsettled.take() {
            Some(entries) if !maps.is_empty() => {
                log::emit(
                    Level::Error,
                    format_args!(
                        "{} new chunk map(s) of a failed commit are held, not freed, until their logical map entries, set back, are persisted",
                        maps.len()
                    ),
                );
                self.held.push((entries, maps));
            }
            _ => {
                for (index, io_units) in maps {
                    self.release(index, &io_units);
                }
            }
        }
    }

    /// Persists the entries behind the chunk maps held after failed commits (see
    /// [`Metadata::release_group`]) and frees the maps of each range that now is.
    /// Called before each commit and clear, when the maps run out, and by the check.
    pub fn retry_held(&mut self) {
        for ((at, len), maps) in std::mem::take(&mut self.held) {
            match self.pm.persist(at, len) {
                Ok(()) => {
                    for (index, io_units) in maps {
                        self.release(index, &io_units);
                    }
                }
                Err(_) => self.held.push(((at, len), maps)),
            }
        }
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
        self.retry_held();
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
            // Whole pages may have reached the file before the flush failed: the old
            // entries go back there too, or the new maps stay held (`release_group`).
            if self.pm.persist(at, len).is_err() {
                self.unsettled = Some((at, len));
            }
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
    pub fn clear(&mut self, chunks: Range<u64>) -> Result<IoUnits> {
        self.retry_held();
        let geo = self.geo;
        let olds: SmallVec<[(u64, u64); 4]> = chunks
            .clone()
            .filter_map(|chunk| Some((chunk, self.logical_entry(chunk)?)))
            .collect();
        let (Some(&(first, _)), Some(&(last, _))) = (olds.first(), olds.last()) else {
            return Ok(IoUnits::new());
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
        let mut io_units = IoUnits::new();
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
    use crate::pm::FILL_PIECE;

    /// The blocks holding an entry, found on one thread and on two, against a block
    /// by block look: maps of a partial last block and of one block, entries at the
    /// first and last byte of a block and at the halves' seam.
    #[test]
    fn the_blocks_in_use_are_found_on_one_thread_and_on_two() {
        for (blocks, tail) in [(1, 0), (2, 0), (9, 0), (9, 24), (40, 8)] {
            let mut map = vec![0xFFu8; blocks * SCAN_BLOCK + tail];
            let seam = map.len() / 2 / SCAN_BLOCK * SCAN_BLOCK;
            for at in [
                0,
                SCAN_BLOCK - 1,
                seam,
                seam.saturating_sub(1),
                map.len() - 1,
            ] {
                map[at] = 0;
            }
            let expected: Vec<usize> = (0..map.len().div_ceil(SCAN_BLOCK))
                .filter(|b| map[b * SCAN_BLOCK..map.len().min((b + 1) * SCAN_BLOCK)].contains(&0))
                .collect();
            assert_eq!(
                blocks_in_use(&map, usize::MAX),
                expected,
                "{blocks} blocks + {tail}"
            );
            assert_eq!(
                blocks_in_use(&map, 0),
                expected,
                "{blocks} blocks + {tail}, split"
            );
        }
        assert!(blocks_in_use(&[0xFF; 4 * SCAN_BLOCK], 0).is_empty());
    }

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
            pm: &pm.0,
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
            pm: &pm.0,
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
    fn scan_finds_entries_at_every_place_in_a_block() {
        // 1000 chunks: 15 whole blocks of 64 entries and a partial one.
        let (geo, mut pm) = zeroed_logical_map(1000);
        let map = geo.logical_entry_offset(0)..geo.logical_entry_offset(1000);
        pm.0[map].fill(0xFF);
        let chunks = [0, 1, 63, 64, 127, 500, 959, 960, 999];
        for (index, &chunk) in chunks.iter().enumerate() {
            let index = index as u64;
            let mut entry = 1024u32.to_le_bytes().to_vec();
            entry.extend_from_slice(&NO_CHECKSUM.to_le_bytes());
            entry.extend_from_slice(&(geo.reserved_io_units + index).to_le_bytes());
            pm.write(geo.chunk_map_offset(index), &entry);
            pm.store_u64(geo.logical_entry_offset(chunk), index);
        }
        let view = MapView {
            geo: &geo,
            pm: &pm.0,
            chunk_maps: geo.total_chunk_maps,
        };
        let scan = view.scan();
        assert_eq!(scan.problems, []);
        assert_eq!(scan.chunks, chunks);
        assert_eq!(scan.space.io_units, chunks.len() as u64);
        let meta = Metadata::rebuild(geo, Box::new(pm)).unwrap();
        assert_eq!(meta.chunk_maps_in_use(), chunks.len() as u64);
        assert_eq!(
            meta.io_units_in_use(),
            geo.reserved_io_units + chunks.len() as u64
        );
    }

    #[test]
    fn format_fills_in_pieces_then_writes_the_superblock() {
        use std::cell::RefCell;
        use std::rc::Rc;

        /// Keeps the largest write it saw and every persist, in order.
        #[derive(Default)]
        struct Seen {
            largest: usize,
            persists: Vec<(usize, usize)>,
        }
        struct Pieces(Image, Rc<RefCell<Seen>>);
        impl PmRegion for Pieces {
            fn bytes(&self) -> &[u8] {
                self.0.bytes()
            }
            fn write(&mut self, offset: usize, data: &[u8]) {
                let mut seen = self.1.borrow_mut();
                seen.largest = seen.largest.max(data.len());
                self.0.write(offset, data);
            }
            fn store_u64(&mut self, offset: usize, value: u64) {
                self.0.store_u64(offset, value);
            }
            fn persist(&mut self, offset: usize, len: usize) -> Result<()> {
                self.1.borrow_mut().persists.push((offset, len));
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
        assert!(len > 2 * FILL_PIECE);
        let seen = Rc::new(RefCell::new(Seen::default()));
        let pm = Pieces(Image(vec![0; len]), seen.clone());
        let sb = crate::format::encode_superblock(&params);
        let meta = Metadata::format(geo, Box::new(pm), &sb).unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.largest, FILL_PIECE);
        // The whole file durable before the superblock is.
        assert_eq!(seen.persists, [(0, len), (0, SUPERBLOCK_SIZE)]);
        assert_eq!(&meta.pm().bytes()[..SUPERBLOCK_SIZE], &sb[..]);
        // One comparison, not a loop over the bytes, so that miri runs it quickly.
        assert!(meta.pm().bytes()[SUPERBLOCK_SIZE..] == vec![0xFF; len - SUPERBLOCK_SIZE][..]);
        assert_eq!(meta.chunk_maps_in_use(), 0);
        assert_eq!(meta.io_units_in_use(), geo.reserved_io_units);
    }
}
