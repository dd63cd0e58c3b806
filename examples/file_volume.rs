//! A small command-line tool for compressed volumes on image files (or block devices),
//! with blocks of 512 bytes, 4 KiB io units and 16 KiB chunks.
//!
//! ```text
//! cargo run --example file_volume -- create IMAGE PM_DIR MIB [zstd[:LEVEL] | lz4]
//! cargo run --example file_volume -- write IMAGE BLOCK < data    (whole 512-byte blocks)
//! cargo run --example file_volume -- read IMAGE BLOCK COUNT > data
//! cargo run --example file_volume -- info IMAGE
//! cargo run --example file_volume -- check IMAGE
//! cargo run --example file_volume -- destroy IMAGE
//! ```
//!
//! `create` makes IMAGE (MIB mebibytes, of which 2 MiB are the volume's reserve) and
//! the pm file in PM_DIR. The other commands load the volume with the codec its
//! superblock records. Reads and writes may span chunks; they go chunk by chunk.

use std::error::Error;
use std::io::{Read, Write};
use std::path::Path;

use reduce::blocking::Volume;
use reduce::{Codec, FileDevice, Lz4Codec, Params, ZstdCodec};

const BLOCK: u64 = 512;
const CHUNK: u64 = 16384;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["create", image, pm_dir, mib, rest @ ..] => create(image, pm_dir, mib.parse()?, rest),
        ["write", image, block] => write(image, block.parse()?),
        ["read", image, block, count] => read(image, block.parse()?, count.parse()?),
        ["info", image] => info(image),
        ["check", image] => check(image),
        ["destroy", image] => {
            let vol = open(image)?;
            let codec = vol.params().compression.builtin();
            vol.unload()?;
            Volume::destroy(device(image)?, codec.unwrap_or_else(|| Box::new(ZstdCodec)))?;
            Ok(())
        }
        _ => Err(
            "usage: file_volume create|write|read|info|check|destroy ... (see the source)".into(),
        ),
    }
}

fn device(image: &str) -> Result<FileDevice> {
    Ok(FileDevice::open(image, BLOCK as u32)?)
}

fn create(image: &str, pm_dir: &str, mib: u64, codec: &[&str]) -> Result<()> {
    let codec: Box<dyn Codec> = match codec {
        [] | ["zstd"] => Box::new(ZstdCodec),
        ["lz4"] => Box::new(Lz4Codec),
        [other] => match other.strip_prefix("zstd:") {
            Some(level) => Box::new(ZstdCodec::new(level.parse()?)?),
            None => return Err(format!("unknown codec {other}").into()),
        },
        _ => return Err("one codec at most".into()),
    };
    let device = FileDevice::create(image, BLOCK as u32, mib * 1024 * 1024 / BLOCK)?;
    let params = Params {
        backing_io_unit_size: 4096,
        logical_block_size: BLOCK as u32,
        chunk_size: CHUNK as u32,
        ..Params::default()
    };
    match Volume::init(params, device, codec, Path::new(pm_dir)) {
        Ok(vol) => {
            println!("created; pm file {}", vol.pm_path().display());
            Ok(vol.unload()?)
        }
        Err(e) => {
            let _ = std::fs::remove_file(image);
            Err(e.into())
        }
    }
}

/// Loads the volume with the codec its superblock records (zstd reads any zstd level;
/// the reload gives writes the recorded level).
fn open(image: &str) -> Result<Volume> {
    let vol = Volume::load(device(image)?, ZstdCodec)?;
    let recorded = vol.params().compression;
    match recorded.builtin() {
        Some(codec) if codec.compression() != ZstdCodec.compression() => {
            vol.unload()?;
            Ok(Volume::load(device(image)?, codec)?)
        }
        _ => Ok(vol),
    }
}

/// The pieces of `count` blocks at `block` that stay within one chunk each.
fn pieces(block: u64, count: u64) -> impl Iterator<Item = (u64, u64)> {
    let per_chunk = CHUNK / BLOCK;
    let end = block + count;
    std::iter::successors(Some(block), move |&b| Some((b / per_chunk + 1) * per_chunk))
        .take_while(move |&b| b < end)
        .map(move |b| (b, ((b / per_chunk + 1) * per_chunk).min(end) - b))
}

fn write(image: &str, block: u64) -> Result<()> {
    let mut data = Vec::new();
    std::io::stdin().read_to_end(&mut data)?;
    if data.len() as u64 % BLOCK != 0 {
        return Err(format!("{} bytes are not whole {BLOCK}-byte blocks", data.len()).into());
    }
    let vol = open(image)?;
    for (b, n) in pieces(block, data.len() as u64 / BLOCK) {
        let at = ((b - block) * BLOCK) as usize;
        vol.write(b, &data[at..at + (n * BLOCK) as usize])?;
    }
    Ok(vol.unload()?)
}

fn read(image: &str, block: u64, count: u64) -> Result<()> {
    let vol = open(image)?;
    let mut out = std::io::stdout().lock();
    for (b, n) in pieces(block, count) {
        let mut buf = vec![0u8; (n * BLOCK) as usize];
        vol.read(b, &mut buf)?;
        out.write_all(&buf)?;
    }
    Ok(vol.unload()?)
}

fn info(image: &str) -> Result<()> {
    let vol = open(image)?;
    let (p, s) = (vol.params(), vol.stats());
    println!("pm file:     {}", vol.pm_path().display());
    println!(
        "size:        {} bytes in {} chunks of {}",
        p.vol_size,
        p.vol_size / CHUNK,
        p.chunk_size
    );
    println!(
        "compression: {} level {}",
        p.compression.algo, p.compression.level
    );
    println!(
        "in use:      {} chunks in {} io units of {} bytes",
        s.chunks_in_use, s.io_units_in_use, p.backing_io_unit_size
    );
    Ok(vol.unload()?)
}

fn check(image: &str) -> Result<()> {
    let vol = open(image)?;
    let report = vol.check()?;
    vol.unload()?;
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{} chunks read back, {} problems",
        report.chunks_read,
        report.problems.len()
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err("the volume has problems".into())
    }
}
