//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::size;

const EXIT_CODES: &str = "\
Sizes: a number of bytes, or with a suffix K, M, G, T, P or E (powers of 1024; KiB,
MiB, ... too): 16K, 4KiB, 10G.

Exit codes:
  0  done; for check: the volume is clean
  1  check: the volume has problems (each is listed), or its pm file is missing,
     damaged or another volume's
  2  a usage error, or the command could not do its work (a missing file, a file that
     holds no volume, a volume in use, a damaged or foreign pm file, bad geometry, a
     volume too small for the image, an I/O error); the message says which";

/// Compressed block volumes on files: create, inspect, check, fill, read out and
/// destroy them.
///
/// A volume lives in a backing FILE (a regular file, sparse, or a block device), its
/// metadata in a pm file in a directory of its own (--pm-dir), whose path the FILE
/// records. Each command takes the volume for itself while it runs: one that another
/// program has loaded (nbdkit serving it, say) is refused as in use.
#[derive(Debug, Parser)]
#[command(name = "reduce", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Create(Create),
    Info(Info),
    Check(Check),
    /// Copy a raw IMAGE into the volume, from its first byte.
    ///
    /// Chunks of zeros are skipped (where the volume holds zeros already), so a sparse
    /// or mostly empty image is quick and takes no room. The image must fit the volume;
    /// the volume's bytes past the image's end stay as they are.
    #[command(after_help = EXIT_CODES)]
    Import(Copy),
    /// Copy the whole volume out to a raw IMAGE, made or emptied first.
    ///
    /// Chunks of zeros are skipped, so a regular file IMAGE is sparse. IMAGE ends up
    /// the volume's size.
    #[command(after_help = EXIT_CODES)]
    Export(Copy),
    Destroy(Destroy),
}

/// Make a volume on FILE; with --size, make FILE first (sparse).
///
/// The volume is FILE's size less 128 chunks, which stay free so that writes always
/// find room, even when every chunk is incompressible. FILE must not hold a volume
/// already: destroy that first.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct Create {
    /// The backing file (without --size it must exist: a file or a block device).
    pub file: PathBuf,
    /// The directory for the volume's pm file (its metadata, named after its uuid); it
    /// must exist.
    #[arg(long, value_name = "DIR")]
    pub pm_dir: PathBuf,
    /// Make FILE of this size (sparse: it takes room on disk as chunks are written).
    #[arg(long, value_parser = size::parse)]
    pub size: Option<u64>,
    /// The unit of compression: a multiple of --io-unit and --block-size.
    #[arg(long, default_value = "16K", value_parser = size::parse_u32)]
    pub chunk_size: u32,
    /// The unit of allocation in FILE: a multiple of 512.
    #[arg(long, default_value = "4K", value_parser = size::parse_u32)]
    pub io_unit: u32,
    /// The volume's logical block: the unit of its reads and writes.
    #[arg(long, default_value = "512", value_parser = size::parse_u32)]
    pub block_size: u32,
    /// The compressor of the chunks.
    #[arg(long, value_enum, default_value_t = CodecName::Zstd)]
    pub codec: CodecName,
    /// The compression level: zstd 1 (fastest, the default) to 22; lz4 has one level, 1.
    #[arg(long, value_name = "N")]
    pub level: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CodecName {
    Zstd,
    Lz4,
}

/// Show a volume's geometry, uuid, pm file, compression and space used.
///
/// Space: the chunks holding data, their bytes (logical), the io units they are stored
/// in (stored), the ratio of the two, and the backing file's size and allocation.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct Info {
    /// The backing file.
    pub file: PathBuf,
    /// Print one JSON object instead (sizes in bytes).
    #[arg(long)]
    pub json: bool,
}

/// Check a volume's metadata and read every chunk in use back.
///
/// Each chunk's checksum and decompression are verified. Exit 0 when the volume is
/// clean, 1 when it has problems (listed), 2 when it could not be checked.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct Check {
    /// The backing file.
    pub file: PathBuf,
}

/// The arguments of import and export.
#[derive(Debug, Args)]
pub struct Copy {
    /// The backing file.
    pub file: PathBuf,
    /// The raw image.
    pub image: PathBuf,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Destroy the volume on FILE: clear its signature and remove its pm file.
///
/// FILE itself stays.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct Destroy {
    /// The backing file.
    pub file: PathBuf,
    /// Also when the volume's pm file is missing or damaged (which a plain destroy
    /// refuses, since it loads the volume first).
    #[arg(long)]
    pub force: bool,
}
