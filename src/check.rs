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
use crate::maps::{IoUnits, LISTED_PROBLEMS, MapProblem, MapView, Scan};

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
    /// In use, named by nothing, and known: a new chunk map of a commit that failed,
    /// held (with its io units) until the logical map entries the commit set back can
    /// be persisted, since the file may still hold one naming it. The pm file keeps
    /// failing; the map is freed by the first persist of those entries that succeeds.
    HeldAfterFailedCommit {
        /// The chunk map.
        index: u64,
        /// The io units it holds.
        io_units: u64,
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
            Problem::HeldAfterFailedCommit { index, io_units } => write!(
                f,
                "chunk map {index} ({io_units} io units) is held after a failed commit, until its logical map entries, set back, can be persisted"
            ),
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
    /// The first problems found, at most `LISTED_PROBLEMS` (100), so a badly damaged
    /// volume of any size makes a report of bounded size.
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    pub problems_left_out: u64,
}

impl Report {
    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.problem_count() == 0
    }

    /// Every problem found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.problems_left_out
    }

    /// Lists `problem`, or only counts it once the list is full.
    pub(crate) fn add(&mut self, problem: Problem) {
        if self.problems.len() < LISTED_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_left_out += 1;
        }
    }

    /// The status a caller sees: 0, `EILSEQ` for metadata problems, else `EIO` (data
    /// that fails to read back, or chunk maps held while the pm file fails).
    pub fn errno(&self) -> Option<Errno> {
        // Metadata problems are found before the held maps are listed and any chunk is
        // read back, so when there is one the first listed problem is one.
        let metadata = |p: &Problem| {
            !matches!(
                p,
                Problem::Unreadable { .. } | Problem::HeldAfterFailedCommit { .. }
            )
        };
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
            self.problem_count()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        if self.problems_left_out > 0 {
            write!(f, "\n  ... and {} more, not listed", self.problems_left_out)?;
        }
        Ok(())
    }
}

/// Audits the maps of a loaded volume with nothing in flight against its free maps
/// (`chunk_maps` and `io_units`, which mark what is in use), `held` being the chunk
/// maps (index, io units) held after failed commits. Returns the report and the chunks
/// whose data can be read back.
pub(crate) fn audit<'a>(
    view: MapView<'_>,
    chunk_maps: &FreeMap,
    io_units: &FreeMap,
    held: impl Iterator<Item = &'a (u64, IoUnits)>,
) -> (Report, Vec<u64>) {
    let mut scan = view.scan();
    let mut report = Report {
        chunks_in_use: scan.chunk_maps.count_ones() as u64,
        io_units_referenced: scan.io_units.count_ones() as u64,
        chunks_read: 0,
        problems: std::mem::take(&mut scan.problems)
            .into_iter()
            .map(Problem::Map)
            .collect(),
        problems_left_out: scan.problems_left_out,
    };
    let held: Vec<&(u64, IoUnits)> = held.collect();
    compare(
        &scan,
        chunk_maps,
        io_units,
        view.geo.reserved_io_units,
        &held,
        &mut report,
    );
    (report, scan.chunks)
}

/// Compares a scan with the free maps of a loaded volume (reserved io units aside).
/// What is marked in use and named by nothing is a leak unless `held` has it; the
/// held maps are listed after every leak, so a full list still shows a metadata
/// problem first.
fn compare(
    scan: &Scan,
    chunk_maps: &FreeMap,
    io_units: &FreeMap,
    reserved_io_units: u64,
    held: &[&(u64, IoUnits)],
    report: &mut Report,
) {
    let held_map = |index: usize| held.iter().any(|(i, _)| *i == index as u64);
    let held_unit = |unit: usize| held.iter().any(|(_, units)| units.contains(&(unit as u64)));
    for index in 0..chunk_maps.len() {
        match (scan.chunk_maps.contains(index), chunk_maps.is_used(index)) {
            (false, true) if held_map(index) => {}
            (false, true) => report.add(Problem::LeakedChunkMap {
                index: index as u64,
            }),
            (true, false) => report.add(Problem::FreeChunkMapInUse {
                index: index as u64,
            }),
            _ => {}
        }
    }
    for unit in reserved_io_units as usize..io_units.len() {
        let unit_id = unit as u64;
        match (scan.io_units.contains(unit), io_units.is_used(unit)) {
            (false, true) if held_unit(unit) => {}
            (false, true) => report.add(Problem::LeakedIoUnit { unit: unit_id }),
            (true, false) => report.add(Problem::FreeIoUnitInUse { unit: unit_id }),
            _ => {}
        }
    }
    for (index, units) in held {
        report.add(Problem::HeldAfterFailedCommit {
            index: *index,
            io_units: units.len() as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lists_the_first_problems_and_counts_all() {
        let mut report = Report::default();
        for unit in 0..250 {
            report.add(Problem::LeakedIoUnit { unit });
        }
        assert_eq!(report.problems.len(), LISTED_PROBLEMS);
        assert_eq!(report.problems_left_out, 150);
        assert_eq!(report.problem_count(), 250);
        assert!(!report.is_clean());
        assert_eq!(report.errno(), Some(Errno::EILSEQ));
        let text = report.to_string();
        assert!(text.contains("250 problems"), "{text}");
        assert!(text.contains("... and 150 more, not listed"), "{text}");
        assert_eq!(text.lines().count(), 1 + LISTED_PROBLEMS + 1);
    }
}
