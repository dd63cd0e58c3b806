//! Writes the fuzz targets' seed corpus (`make fuzz-seeds`): for `load`, real volumes'
//! metadata + pm file, fresh and after writes; for `ops`, a few operation scripts.

use std::fs;

use reduce::testkit::*;

fn load_seed(writes: u64) -> Vec<u8> {
    let rig = Rig::new(Geo::small(16), Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init();
    for k in 0..writes {
        rig.write(&vol, (k % 16) * 8, &data(k, 4096))
            .expect("write");
    }
    let path = vol.pm_path();
    rig.unload(&vol).expect("unload");
    let mut seed = rig.backing.image()[..format::METADATA_SIZE as usize].to_vec();
    seed.extend(rig.store.current(&path).expect("pm file"));
    seed
}

fn main() -> std::io::Result<()> {
    fs::create_dir_all("fuzz/corpus/load")?;
    fs::create_dir_all("fuzz/corpus/ops")?;
    for writes in [0, 5, 40] {
        fs::write(
            format!("fuzz/corpus/load/volume-{writes}-writes"),
            load_seed(writes),
        )?;
    }
    // ops: a config byte (bit 0 deferred, bit 1 the codec double), then 6-byte steps
    // (see fuzz/fuzz_targets/ops.rs): [kind, offset lo, offset hi, length, shape, content].
    let scripts: [&[u8]; 3] = [
        // Immediate, inline zstd: whole chunks (zero copy), reads across chunks in one
        // and several segments, an unmap, no cache, a reload.
        &[
            0, 0, 0, 0, 2, 0, 1, 2, 0, 0, 2, 0, 1, 2, 4, 0, 10, 1, 0, 3, 4, 0, 20, 14, 7, 4, 6, 0,
            12, 0, 0, 2, 0, 0, 23, 2, 3, 7, 0, 0, 0, 0, 0, 1, 20, 0, 15, 14, 2, 9, 0, 0, 0, 0, 0,
            2, 16, 0, 23, 6, 1,
        ],
        // Deferred device and codec double: writes pile up in flight (groups), reads of
        // the same chunks queue behind them, some completions, a mid-flight switch.
        &[
            3, 0, 0, 0, 15, 1, 1, 1, 4, 0, 9, 2, 2, 0, 8, 0, 7, 0, 3, 2, 0, 0, 23, 10, 5, 0, 40, 0,
            8, 1, 1, 5, 7, 0, 0, 0, 0, 2, 40, 0, 8, 6, 0, 8, 0, 0, 0, 0, 0, 3, 0, 0, 23, 14, 4, 2,
            0, 0, 9, 0, 6, 6, 0, 0, 0, 0, 0, 2, 0, 0, 23, 1, 0,
        ],
        // Deferred device, inline zstd: overwrites and unmaps of one chunk in flight
        // together, the cache resized, a reload in the other mode.
        &[
            1, 0, 64, 0, 7, 0, 1, 1, 64, 0, 3, 2, 2, 4, 66, 0, 2, 0, 0, 2, 64, 0, 7, 1, 0, 7, 2, 0,
            0, 0, 0, 0, 64, 0, 7, 0, 3, 5, 3, 0, 0, 0, 0, 3, 60, 0, 15, 6, 0, 9, 0, 0, 0, 0, 0, 2,
            56, 0, 23, 1, 0,
        ],
    ];
    for (k, script) in scripts.iter().enumerate() {
        fs::write(format!("fuzz/corpus/ops/script-{k}"), script)?;
    }
    Ok(())
}
