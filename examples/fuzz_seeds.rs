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
    let scripts: [&[u8]; 3] = [
        &[0, 1, 0, 7, 2, 1, 0, 7, 5, 0, 0, 0, 2, 1, 0, 7],
        &[
            0, 2, 3, 1, 0, 2, 0, 7, 4, 9, 0, 0, 3, 2, 3, 1, 5, 1, 0, 0, 2, 2, 0, 7,
        ],
        &[
            1, 0, 0, 7, 1, 1, 0, 7, 1, 2, 0, 7, 1, 3, 0, 7, 2, 3, 4, 2, 5, 2, 0, 0,
        ],
    ];
    for (k, script) in scripts.iter().enumerate() {
        fs::write(format!("fuzz/corpus/ops/script-{k}"), script)?;
    }
    Ok(())
}
