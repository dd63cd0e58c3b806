//! Hostile bytes: bits flipped and bytes overwritten in the backing image (superblock,
//! path, stored chunks) and in the pm file (superblock copy, logical map, chunk maps).
//! Load either refuses (EILSEQ, or ENOENT when the stored path no longer names the pm
//! file) or succeeds; then every chunk reads back exactly or fails with EIO — never
//! wrong data, never a crash — and the checker is clean only if every read succeeded.

use reduce::testkit::*;
use reduce::*;

const CHUNKS: u64 = 16;
const BPC: u64 = 8;

struct Base {
    images: Images,
    model: Vec<Vec<u8>>,
    data_end: usize,
}

fn base() -> Base {
    let rig = Rig::new(Geo::small(CHUNKS), Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init();
    let mut model = vec![vec![0u8; 4096]; CHUNKS as usize];
    for c in 0..CHUNKS - 2 {
        let bytes = data(100 + c, 4096);
        rig.write(&vol, c * BPC, &bytes).unwrap();
        model[c as usize] = bytes;
    }
    // A partial write over a compressed chunk, so some chunk maps are reused.
    let part = data(7, 1024);
    rig.write(&vol, 3 * BPC + 2, &part).unwrap();
    model[3][1024..2048].copy_from_slice(&part);
    let used = vol.info().allocated_io_units; // the metadata io units included
    let path = vol.pm_path();
    rig.unload(&vol).unwrap();
    let mut images = Images {
        backing: rig.backing.image(),
        ..Default::default()
    };
    images
        .pm
        .insert(path.clone(), rig.store.current(&path).unwrap());
    Base {
        images,
        model,
        data_end: used as usize * 1024,
    }
}

#[derive(Default, Debug)]
struct Outcome {
    refused: u64,
    loaded: u64,
    reads_exact: u64,
    reads_eio: u64,
}

/// Loads `images` and checks the contract; `what` names the damage for messages.
fn try_damaged(base: &Base, images: &Images, what: &str, out: &mut Outcome) {
    let rig = Rig::from_images(Geo::small(CHUNKS), images, Mode::Immediate, CodecKind::Zstd);
    let vol = match rig.load() {
        Ok(vol) => vol,
        Err(e) => {
            assert!(
                e == Errno::EILSEQ || e == Errno::ENOENT,
                "{what}: load failed with {e:?}"
            );
            out.refused += 1;
            return;
        }
    };
    out.loaded += 1;
    let mut all_exact = true;
    for c in 0..CHUNKS {
        match rig.read(&vol, c * BPC, BPC) {
            Ok(got) => {
                assert!(
                    got == base.model[c as usize],
                    "{what}: chunk {c} read wrong data"
                );
                out.reads_exact += 1;
            }
            Err(e) => {
                assert_eq!(e, Errno::EIO, "{what}: chunk {c}");
                out.reads_eio += 1;
                all_exact = false;
            }
        }
    }
    let report = rig.check(&vol).unwrap();
    assert_eq!(
        report.is_clean(),
        all_exact,
        "{what}: checker disagrees: {report}"
    );
    rig.unload(&vol).unwrap();
}

fn damage(base: &Base, seed: u64, out: &mut Outcome) {
    let mut rng = Rng::new(seed);
    let mut images = base.images.clone();
    // Where: the pm file anywhere, the superblock and path region, or stored chunks.
    let (target, what, range) = match rng.below(10) {
        0..=3 => {
            let pm = images.pm.values_mut().next().unwrap();
            let len = pm.len();
            (pm, "pm", 0..len)
        }
        4 => (&mut images.backing, "superblock", 0..8192),
        _ => (&mut images.backing, "data", 8192..base.data_end),
    };
    let at = range.start + rng.below(range.len() as u64) as usize;
    if rng.chance(70) {
        target[at] ^= 1 << rng.below(8);
    } else {
        let n = (1 + rng.below(64) as usize).min(target.len() - at);
        for b in &mut target[at..at + n] {
            *b = rng.next_u64() as u8;
        }
    }
    try_damaged(
        base,
        &images,
        &format!("{what} damaged at {at} (seed {seed})"),
        out,
    );
}

#[test]
fn the_undamaged_base_reads_back() {
    let base = base();
    let mut out = Outcome::default();
    try_damaged(&base, &base.images, "undamaged", &mut out);
    assert_eq!(out.reads_exact, CHUNKS);
}

#[test]
fn flipped_bits_and_garbage_never_return_wrong_data() {
    let base = base();
    let mut out = Outcome::default();
    for seed in 0..3000 {
        damage(&base, seed, &mut out);
    }
    eprintln!("corruption: 3000 damaged images: {out:?}");
    assert!(
        out.refused > 0 && out.reads_eio > 0,
        "damage never detected: {out:?}"
    );
}

#[test]
fn every_bit_of_one_chunk_map_entry() {
    // Exhaustively: each bit of chunk 5's logical map entry and chunk map.
    let base = base();
    let path = base.images.pm.keys().next().unwrap().clone();
    let pm = &base.images.pm[&path];
    let entry_at = 4096 + 5 * 8;
    let index = u64::from_le_bytes(pm[entry_at..entry_at + 8].try_into().unwrap()) as usize;
    let stride = 8 + 8 * 4;
    let chunk_maps = pm.len() - (CHUNKS as usize + 128) * stride;
    let map_at = chunk_maps + index * stride;
    let mut out = Outcome::default();
    for byte in (entry_at..entry_at + 8).chain(map_at..map_at + stride) {
        for bit in 0..8 {
            let mut images = base.images.clone();
            images.pm.get_mut(&path).unwrap()[byte] ^= 1 << bit;
            try_damaged(
                &base,
                &images,
                &format!("pm byte {byte} bit {bit}"),
                &mut out,
            );
        }
    }
    eprintln!("corruption: chunk 5's map entries, every bit: {out:?}");
}
