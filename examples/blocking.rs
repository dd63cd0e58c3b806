//! A volume on a file, driven by the blocking wrapper: create it, write text into a few
//! chunks, read it back, reload it, destroy it. Everything lives in a temporary
//! directory.
//!
//! Run: `cargo run --example blocking [zstd LEVEL | lz4]`

use std::error::Error;

use reduce::blocking::Volume;
use reduce::{Codec, FileDevice, Lz4Codec, Params, ZstdCodec};

const CHUNK: usize = 16384;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => run(ZstdCodec),
        [name] if name == "lz4" => run(Lz4Codec),
        [name, level] if name == "zstd" => run(ZstdCodec::new(level.parse()?)?),
        _ => Err("usage: blocking [zstd LEVEL | lz4]".into()),
    }
}

fn run(codec: impl Codec + Copy + 'static) -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("backing.img");
    // 64 chunks of volume, and the 128 chunks every volume keeps in reserve.
    let device = FileDevice::create(&image, 512, ((128 + 64) * CHUNK / 512) as u64)?;
    let params = Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: CHUNK as u32,
        ..Params::default()
    };
    let vol = Volume::init(params, device.clone(), codec, dir.path())?;
    let p = vol.params();
    println!(
        "volume {} of {} KiB, pm file {}, compression {} level {}",
        uuid_string(&p.uuid),
        p.vol_size / 1024,
        vol.pm_path().display(),
        p.compression.algo,
        p.compression.level
    );

    let blocks_per_chunk = (CHUNK / 512) as u64;
    let text = |chunk: u64| -> Vec<u8> {
        format!("chunk {chunk}: the quick brown fox jumps over the lazy dog. ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(CHUNK)
            .collect()
    };
    for chunk in [0, 7, 63] {
        vol.write(chunk * blocks_per_chunk, &text(chunk))?;
    }
    let stats = vol.stats();
    println!(
        "3 chunks written: {} io units of 4 KiB hold them (12 uncompressed)",
        stats.io_units_in_use
    );
    vol.unload()?;

    let vol = Volume::load(device.clone(), codec)?;
    let mut back = vec![0u8; CHUNK];
    for chunk in [0, 7, 63] {
        vol.read(chunk * blocks_per_chunk, &mut back)?;
        assert_eq!(back, text(chunk));
    }
    let report = vol.check()?;
    println!(
        "reloaded: {} chunks read back, {} problems",
        report.chunks_read,
        report.problems.len()
    );
    vol.unload()?;
    Volume::destroy(device, codec)?;
    println!("destroyed");
    Ok(())
}

fn uuid_string(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
