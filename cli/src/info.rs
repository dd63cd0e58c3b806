//! `reduce info`: what a volume is and how much room its data takes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use reduce::{CompAlgo, Compression, Params, Stats};
use serde::Serialize;

use crate::args::Info;
use crate::fail::{Failure, io_reason};
use crate::size::human;
use crate::volume;

/// Everything `info` reports; `--json` prints it as it is.
#[derive(Debug, Serialize)]
struct Summary {
    file: String,
    uuid: String,
    pm_file: String,
    compression: CompressionInfo,
    /// The volume's size in bytes.
    vol_size: u64,
    chunk_size: u32,
    io_unit_size: u32,
    logical_block_size: u32,
    /// Chunks in the volume, and those holding data.
    chunks: u64,
    chunks_in_use: u64,
    /// Bytes of the chunks in use, uncompressed.
    logical_bytes: u64,
    /// Bytes they are stored in: the io units they take in the backing file.
    stored_bytes: u64,
    /// logical_bytes / stored_bytes; null while nothing is stored.
    ratio: Option<f64>,
    /// The backing file's size, and the bytes it takes on disk.
    backing_size: u64,
    backing_allocated: u64,
    stats: StatsInfo,
}

/// The volume's own statistics (`Volume::stats`), kept up to date at every write and
/// unmap.
#[derive(Debug, Serialize)]
struct StatsInfo {
    /// Chunks that hold data, and those of them stored uncompressed.
    chunks_in_use: u64,
    chunks_raw: u64,
    /// The sum of the chunks' compressed sizes (a raw chunk counts a whole chunk).
    stored_bytes: u64,
    /// Io units those chunks take, and those free to allocate.
    io_units_in_use: u64,
    io_units_free: u64,
}

impl From<Stats> for StatsInfo {
    fn from(s: Stats) -> Self {
        StatsInfo {
            chunks_in_use: s.chunks_in_use,
            chunks_raw: s.chunks_raw,
            stored_bytes: s.stored_bytes,
            io_units_in_use: s.io_units_in_use,
            io_units_free: s.io_units_free,
        }
    }
}

#[derive(Debug, Serialize)]
struct CompressionInfo {
    /// "zstd", "lz4", "deflate", or null for an algorithm reduce does not know.
    algo: Option<&'static str>,
    /// The value stored in the superblock.
    algo_id: u8,
    level: u32,
}

pub fn run(args: &Info) -> Result<(), Failure> {
    let file = &args.file;
    let loaded = volume::load(file)?;
    let summary = summarize(file, &loaded.vol);
    loaded.unload(file)?;
    let summary = summary?;
    if args.json {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| Failure::new(format!("{}: writing JSON: {e}", file.display())))?;
        say!("{text}");
    } else {
        print(&summary);
    }
    Ok(())
}

fn summarize(file: &Path, vol: &reduce::blocking::Volume) -> Result<Summary, Failure> {
    // The stats, not `info`: its allocated io units count the metadata's too.
    let (p, stats) = (vol.params(), vol.stats());
    let on_disk = std::fs::metadata(file)
        .map_err(|e| Failure::new(format!("{}: {}", file.display(), io_reason(&e))))?;
    let logical_bytes = stats.chunks_in_use * u64::from(p.chunk_size);
    let stored_bytes = stats.io_units_in_use * u64::from(p.backing_io_unit_size);
    Ok(Summary {
        file: file.display().to_string(),
        uuid: uuid(&p),
        pm_file: vol.pm_path().display().to_string(),
        compression: CompressionInfo {
            algo: p.compression.algo.name(),
            algo_id: p.compression.algo.0,
            level: p.compression.level,
        },
        vol_size: p.vol_size,
        chunk_size: p.chunk_size,
        io_unit_size: p.backing_io_unit_size,
        logical_block_size: p.logical_block_size,
        chunks: p.vol_size / u64::from(p.chunk_size),
        chunks_in_use: stats.chunks_in_use,
        logical_bytes,
        stored_bytes,
        ratio: (stored_bytes > 0).then(|| logical_bytes as f64 / stored_bytes as f64),
        backing_size: on_disk.len(),
        // st_blocks counts 512-byte units whatever the file system's block.
        backing_allocated: on_disk.blocks() * 512,
        stats: stats.into(),
    })
}

fn print(s: &Summary) {
    let percent = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    };
    let compression = compression_name(Compression {
        algo: CompAlgo(s.compression.algo_id),
        level: s.compression.level,
    });
    say!("file:          {}", s.file);
    say!("uuid:          {}", s.uuid);
    say!("pm file:       {}", s.pm_file);
    say!("compression:   {compression}");
    say!(
        "volume size:   {} ({} bytes)",
        human(s.vol_size),
        s.vol_size
    );
    say!(
        "geometry:      chunk {}, io unit {}, logical block {}",
        human(u64::from(s.chunk_size)),
        human(u64::from(s.io_unit_size)),
        human(u64::from(s.logical_block_size))
    );
    say!(
        "chunks in use: {} of {} ({:.1}%)",
        s.chunks_in_use,
        s.chunks,
        percent(s.chunks_in_use, s.chunks)
    );
    say!(
        "logical bytes: {} ({} bytes) in the chunks in use",
        human(s.logical_bytes),
        s.logical_bytes
    );
    say!(
        "stored bytes:  {} ({} bytes) in io units",
        human(s.stored_bytes),
        s.stored_bytes
    );
    match s.ratio {
        Some(ratio) => say!("ratio:         {ratio:.2} (logical / stored)"),
        None => say!("ratio:         - (nothing stored)"),
    }
    say!(
        "raw chunks:    {} of the chunks in use (stored uncompressed)",
        s.stats.chunks_raw
    );
    say!(
        "compressed:    {} ({} bytes) of data in the chunks in use",
        human(s.stats.stored_bytes),
        s.stats.stored_bytes
    );
    say!(
        "io units:      {} in use, {} free",
        s.stats.io_units_in_use,
        s.stats.io_units_free
    );
    say!(
        "backing file:  {} ({} bytes), {} allocated on disk",
        human(s.backing_size),
        s.backing_size,
        human(s.backing_allocated)
    );
}

/// The volume's uuid, as its pm file is named.
pub fn uuid(p: &Params) -> String {
    uuid::Uuid::from_bytes(p.uuid).hyphenated().to_string()
}

/// "zstd level 3", or the recorded numbers for an algorithm reduce does not know.
pub fn compression_name(c: Compression) -> String {
    match c.algo.name() {
        Some(name) => format!("{name} level {}", c.level),
        None => format!("unknown algorithm {} level {}", c.algo.0, c.level),
    }
}
