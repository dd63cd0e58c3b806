//! The volume checker: what must hold of a volume's metadata, found out from the pm
//! file alone, and compared with the free maps of a loaded volume.
//!
//! Invariants: every logical map entry is empty or names a chunk map inside the pm
//! file; no chunk map is named twice; every named chunk map has a valid size and its
//! io units lie past the metadata area and inside the device; no io unit belongs to
//! two chunk maps. For a loaded volume with nothing in flight, the free maps mark in
//! use exactly what is referenced (else a leak, or a unit a later write would
//! overwrite). Stored data is checked by [`crate::Volume::check`], which reads every
//! chunk back through the read path (checksum, then decompression).
//!
//! The structural part is the maps' own scan ([`MapView::scan`]), which load runs too
//! and refuses a volume with any problem (`EILSEQ`), so what load accepts and what the
//! checker calls clean cannot drift apart.

use std::fmt;

use crate::alloc::FreeMap;
use crate::error::Errno;
use crate::maps::{MapProblem, MapView, Scan};

/// One thing wrong with a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Something wrong with what the logical map references (see [`MapProblem`]).
    Map(MapProblem),
    /// Marked in use but referenced by no chunk: lost space.
    LeakedChunkMap {
        /// The chunk map.
        index: u64,
    },
    /// Marked in use but referenced by no chunk: lost space.
    LeakedIoUnit {
        /// The io unit.
        unit: u64,
    },
    /// Referenced but marked free: a later write could overwrite live data.
    FreeChunkMapInUse {
        /// The chunk map.
        index: u64,
    },
    /// Referenced but marked free: a later write could overwrite live data.
    FreeIoUnitInUse {
        /// The io unit.
        unit: u64,
    },
    /// Reading the chunk back failed: `EIO` for a checksum mismatch or data that does
    /// not decompress to a whole chunk, or the backing device's error.
    Unreadable {
        /// The logical chunk.
        chunk: u64,
        /// The read's status: a negative errno.
        errno: i32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Map(problem) => problem.fmt(f),
            Problem::LeakedChunkMap { index } => {
                write!(f, "chunk map {index} is marked in use but unreferenced")
            }
            Problem::LeakedIoUnit { unit } => {
                write!(f, "io unit {unit} is marked in use but unreferenced")
            }
            Problem::FreeChunkMapInUse { index } => {
                write!(f, "chunk map {index} is referenced but marked free")
            }
            Problem::FreeIoUnitInUse { unit } => {
                write!(f, "io unit {unit} is referenced but marked free")
            }
            Problem::Unreadable { chunk, errno } => {
                write!(f, "chunk {chunk}: reading it back failed with {}", -errno)
            }
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Chunks whose logical map entry is set.
    pub chunks_in_use: u64,
    /// Io units referenced by those chunks.
    pub io_units_referenced: u64,
    /// Chunks read back and verified.
    pub chunks_read: u64,
    /// Everything found wrong, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The status a caller sees: 0, `EILSEQ` for metadata problems, else `EIO`.
    pub fn errno(&self) -> Option<Errno> {
        let metadata = |p: &Problem| !matches!(p, Problem::Unreadable { .. });
        if self.problems.iter().any(metadata) {
            Some(Errno::EILSEQ)
        } else if self.is_clean() {
            None
        } else {
            Some(Errno::EIO)
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} chunks in use, {} io units referenced, {} chunks read back, {} problems",
            self.chunks_in_use,
            self.io_units_referenced,
            self.chunks_read,
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Audits the maps of a loaded volume with nothing in flight against its free maps
/// (`chunk_maps` and `io_units`, which mark what is in use). Returns the report and
/// the chunks whose data can be read back.
pub(crate) fn audit(
    view: MapView<'_>,
    chunk_maps: &FreeMap,
    io_units: &FreeMap,
) -> (Report, Vec<u64>) {
    let mut scan = view.scan();
    let mut problems: Vec<Problem> = std::mem::take(&mut scan.problems)
        .into_iter()
        .map(Problem::Map)
        .collect();
    compare(
        &scan,
        chunk_maps,
        io_units,
        view.geo.reserved_io_units,
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

/// Compares a scan with the free maps of a loaded volume (reserved io units aside).
fn compare(
    scan: &Scan,
    chunk_maps: &FreeMap,
    io_units: &FreeMap,
    reserved_io_units: u64,
    problems: &mut Vec<Problem>,
) {
    for index in 0..chunk_maps.len() {
        match (scan.chunk_maps.contains(index), chunk_maps.is_used(index)) {
            (false, true) => problems.push(Problem::LeakedChunkMap {
                index: index as u64,
            }),
            (true, false) => problems.push(Problem::FreeChunkMapInUse {
                index: index as u64,
            }),
            _ => {}
        }
    }
    for unit in reserved_io_units as usize..io_units.len() {
        let unit_id = unit as u64;
        match (scan.io_units.contains(unit), io_units.is_used(unit)) {
            (false, true) => problems.push(Problem::LeakedIoUnit { unit: unit_id }),
            (true, false) => problems.push(Problem::FreeIoUnitInUse { unit: unit_id }),
            _ => {}
        }
    }
}
