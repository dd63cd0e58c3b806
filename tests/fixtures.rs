//! The three volumes written by the original C library (tests/fixtures): load, read
//! back exactly `expected.img`, write, reload; and on their undersized pm files
//! (original size formula) writes to chunks never written fail with ENOSPC once only
//! the chunk maps overwrites need are left, overwrites keep working, and the file never
//! grows.

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Errno, Volume};

const FIXTURES: [&str; 3] = [
    "g1-bl512-io4k-c16k-lb512",
    "g2-bl4k-io4k-c16k-lb4k",
    "g3-bl512-io16k-c64k-lb4k",
];

struct Fixture {
    name: &'static str,
    manifest: String,
    geo: Geo,
    backing: Vec<u8>,
    pm: Vec<u8>,
    expected: Vec<u8>,
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn unzstd(path: PathBuf) -> Vec<u8> {
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    zstd::stream::decode_all(f).unwrap()
}

/// The number after `"key":` in the manifest (first occurrence).
fn num(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} not in manifest"))
        + pat.len();
    json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn string(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap() + pat.len();
    let rest = json[at..].trim_start().strip_prefix('"').unwrap();
    rest[..rest.find('"').unwrap()].to_string()
}

impl Fixture {
    fn open(name: &'static str) -> Fixture {
        let d = dir(name);
        let manifest = std::fs::read_to_string(d.join("manifest.json")).unwrap();
        let geo = Geo::new(
            num(&manifest, "blocklen") as u32,
            num(&manifest, "backing_io_unit_size") as u32,
            num(&manifest, "chunk_size") as u32,
            num(&manifest, "logical_block_size") as u32,
            num(&manifest, "chunks"),
        );
        let f = Fixture {
            name,
            geo,
            backing: unzstd(d.join("backing.img.zst")),
            pm: unzstd(d.join("pm.zst")),
            expected: unzstd(d.join("expected.img.zst")),
            manifest,
        };
        assert_eq!(
            f.backing.len() as u64,
            num(&f.manifest, "blockcnt") * u64::from(geo.blocklen)
        );
        assert_eq!(
            f.backing.len() as u64,
            geo.blockcnt() * u64::from(geo.blocklen)
        );
        assert_eq!(f.pm.len() as u64, num(&f.manifest, "pm_file_size"));
        assert_eq!(f.expected.len(), geo.vol_bytes());
        f
    }

    fn pm_path(&self) -> String {
        string(&self.manifest, "stored_pm_path")
    }

    /// The pm layout of the original's (undersized) file.
    fn layout(&self) -> PmLayout {
        let l = PmLayout::new(self.geo, true);
        assert_eq!(l.size, self.pm.len(), "{}: original formula", self.name);
        assert_eq!(
            PmLayout::new(self.geo, false).size as u64,
            num(&self.manifest, "pm_file_size_fixed_formula")
        );
        l
    }

    fn rig(&self, mode: Mode) -> Rig {
        let rig = Rig {
            geo: self.geo,
            backing: MemBacking::from_image(self.geo.blocklen, self.backing.clone(), mode),
            store: MemStore::new(),
            codec: CodecKind::Zstd,
        };
        rig.store.insert(self.pm_path(), self.pm.clone());
        rig
    }

    fn shadow(&self) -> Shadow {
        Shadow {
            data: self.expected.clone(),
            lbs: self.geo.lbs as usize,
        }
    }
}

/// The chunks of `pm` holding data, and the stored bytes decoded from `image` with an
/// independent zstd (raw when `compressed_size == chunk_size`), compared with `shadow`.
fn check_device(geo: Geo, layout: &PmLayout, pm: &[u8], image: &[u8], shadow: &Shadow) {
    let bpc = geo.blocks_per_chunk();
    let stored = layout.stored(pm);
    for s in &stored {
        let bytes = s.bytes(image, geo.io_unit);
        let plain = if s.size == geo.chunk {
            bytes.clone()
        } else {
            zstd::bulk::decompress(&bytes, geo.chunk as usize).unwrap()
        };
        assert!(
            plain == shadow.expect(s.chunk * bpc, bpc),
            "chunk {}",
            s.chunk
        );
        assert!(
            s.checksum == u32::MAX || s.checksum == expected_checksum(&bytes),
            "chunk {}: checksum word",
            s.chunk
        );
    }
    for chunk in 0..geo.chunks {
        if !stored.iter().any(|s| s.chunk == chunk) {
            assert!(shadow.expect(chunk * bpc, bpc).iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn fixture_metadata_matches_manifest() {
    for name in FIXTURES {
        let f = Fixture::open(name);
        let layout = f.layout();
        let stored = layout.stored(&f.pm);
        assert_eq!(
            stored.len() as u64,
            num(&f.manifest, "chunks_written"),
            "{name}"
        );
        let units: usize = stored.iter().map(|s| s.io_units.len()).sum();
        assert_eq!(units as u64, num(&f.manifest, "io_units_in_use"), "{name}");
        let raw = stored.iter().filter(|s| s.size == f.geo.chunk).count();
        assert_eq!(raw as u64, num(&f.manifest, "chunks_stored_raw"), "{name}");
        let top = stored.iter().map(|s| s.index).max().unwrap();
        assert_eq!(
            top,
            num(&f.manifest, "highest_chunk_map_index_used"),
            "{name}"
        );
        // The original never writes the reserved word.
        assert!(stored.iter().all(|s| s.checksum == u32::MAX), "{name}");
        // Our own decoding of the device reproduces expected.img.
        check_device(f.geo, &layout, &f.pm, &f.backing, &f.shadow());
    }
}

fn read_all_whole(rig: &Rig, vol: &Volume, f: &Fixture) {
    let bpc = f.geo.blocks_per_chunk();
    for chunk in 0..f.geo.chunks {
        let got = rig.read_chunk(vol, chunk).unwrap();
        assert!(
            got == f.expected[(chunk * bpc) as usize * f.geo.lbs as usize..]
                [..f.geo.chunk as usize],
            "{}: chunk {chunk}",
            f.name
        );
    }
}

/// Every chunk in random pieces over several iovecs, all submitted together.
fn read_all_pieces(rig: &Rig, vol: &Volume, shadow: &Shadow, seed: u64) {
    let geo = rig.geo;
    let mut rng = Rng::new(seed);
    let bad: Rc<RefCell<Vec<String>>> = Rc::default();
    let done = Rc::new(RefCell::new(0usize));
    let mut submitted = 0;
    for chunk in 0..geo.chunks {
        for _ in 0..2 {
            let (offset, length) = range_in_chunk(&mut rng, geo, chunk);
            let lens = split_lens(&mut rng, (length * u64::from(geo.lbs)) as usize, 4);
            let want = shadow.expect(offset, length).to_vec();
            let (bad, done) = (bad.clone(), done.clone());
            vol.readv(
                offset,
                length,
                lens.iter().map(|&n| vec![0xEE; n]).collect(),
                move |r, segs| {
                    *done.borrow_mut() += 1;
                    if r.is_err() || segs.concat() != want {
                        bad.borrow_mut().push(format!("{offset}+{length}: {r:?}"));
                    }
                },
            );
            submitted += 1;
        }
    }
    rig.drain();
    assert_eq!(*done.borrow(), submitted);
    assert!(bad.borrow().is_empty(), "{:?}", bad.borrow());
}

#[test]
fn fixtures_read_back_exactly() {
    for name in FIXTURES {
        let f = Fixture::open(name);
        for mode in [Mode::Immediate, Mode::Deferred] {
            let rig = f.rig(mode);
            let vol = rig.load().unwrap_or_else(|e| panic!("{name}: load {e:?}"));
            let p = vol.params();
            assert_eq!(p.chunk_size, f.geo.chunk);
            assert_eq!(p.vol_size, f.geo.vol_bytes() as u64);
            assert_eq!(
                uuid_string(&p.uuid),
                string(&f.manifest, "uuid"),
                "{name}: uuid"
            );
            // The original left comp_level @48 and comp_algo @52 as reserved zeros: no
            // compression recorded, whatever codec wrote the chunks.
            assert!(f.backing[48..56].iter().all(|&b| b == 0), "{name}");
            assert_eq!(p.compression, reduce::Compression::UNRECORDED, "{name}");
            let info = vol.info();
            assert_eq!(info.chunks_in_use, num(&f.manifest, "chunks_written"));
            // allocated_io_units counts the metadata's too, as later SPDK does.
            let units = num(&f.manifest, "io_units_in_use");
            assert_eq!(info.allocated_io_units, units + f.geo.metadata_io_units());
            let st = vol.stats();
            assert_eq!(
                (st.chunks_in_use, st.chunks_raw, st.io_units_in_use),
                (
                    num(&f.manifest, "chunks_written"),
                    num(&f.manifest, "chunks_stored_raw"),
                    units
                ),
                "{name}: stats"
            );
            assert_eq!(
                info.chunk_maps_usable,
                num(&f.manifest, "chunk_maps_fitting_in_file")
            );
            read_all_whole(&rig, &vol, &f);
            read_all_pieces(&rig, &vol, &f.shadow(), 1);
            rig.unload(&vol).unwrap();
            // Reading changes nothing.
            assert_eq!(rig.store.current(f.pm_path()).unwrap(), f.pm, "{name}");
            assert!(rig.backing.image() == f.backing, "{name}: device changed");
        }
    }
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn write_then_fill(name: &'static str, mode: Mode) {
    let f = Fixture::open(name);
    let geo = f.geo;
    let layout = f.layout();
    let bpc = geo.blocks_per_chunk();
    let rig = f.rig(mode);
    let path = f.pm_path();
    let vol = rig.load().unwrap();
    let mut shadow = f.shadow();
    let mut rng = Rng::new(0xF1);
    let stored = layout.stored(&f.pm);
    let written: Vec<u64> = stored.iter().map(|s| s.chunk).collect();
    let raw: Vec<u64> = stored
        .iter()
        .filter(|s| s.size == geo.chunk)
        .map(|s| s.chunk)
        .collect();
    let fresh: Vec<u64> = (0..geo.chunks).filter(|c| !written.contains(c)).collect();

    // Partial writes into the original's chunks (read-modify-write of its frames),
    // whole overwrites of raw ones, a few fresh chunks.
    let mut targets: Vec<(u64, u64)> = Vec::new();
    for &c in written.iter().step_by(5) {
        let start = rng.below(bpc);
        targets.push((c * bpc + start, rng.range(1, bpc - start)));
    }
    for &c in raw.iter().step_by(3) {
        targets.push((c * bpc, bpc));
    }
    for &c in fresh.iter().step_by(40) {
        targets.push((c * bpc + 1, bpc - 1));
    }
    for &(offset, length) in &targets {
        let data = any_data(&mut rng, (length * u64::from(geo.lbs)) as usize);
        let segs = split(&mut rng, &data, 4);
        rig.writev(&vol, offset, segs).unwrap();
        shadow.write(offset, &data);
    }
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    assert_eq!(
        rig.store.current(&path).unwrap().len(),
        f.pm.len(),
        "pm grew"
    );
    let vol = rig.load().unwrap();
    shadow.verify(&rig, &vol);

    // Fill chunks never written, until the file's chunk maps are down to the spares
    // overwrites need (one per chunk holding data, up to 128): then ENOSPC for them.
    let usable = vol.info().chunk_maps_usable;
    assert_eq!(usable, geo.chunks);
    let fresh_limit = usable - 128;
    for chunk in 0..geo.chunks {
        let bpc_bytes = geo.chunk as usize;
        if shadow.expect(chunk * bpc, bpc).iter().all(|&b| b == 0) {
            // Never written (or written with zeros): write it now, with something
            // other than zeros (a chunk of zeros takes no chunk map).
            let mut data = any_data(&mut rng, bpc_bytes);
            data[0] |= 1;
            let in_use = vol.info().chunks_in_use;
            match rig.write(&vol, chunk * bpc, &data) {
                Ok(()) => shadow.write(chunk * bpc, &data),
                Err(e) if in_use == fresh_limit && e == Errno::ENOSPC => {}
                Err(e) => panic!("{name}: fill chunk {chunk} with {in_use} in use: {e:?}"),
            }
        }
    }
    let info = vol.info();
    assert_eq!(info.chunks_in_use, fresh_limit, "{name}");
    let pm_full = rig.pm_persisted();
    assert_eq!(pm_full.len(), f.pm.len());
    let fresh: Vec<u64> = (0..geo.chunks)
        .filter(|&c| layout.entry(&pm_full, c).is_none())
        .collect();

    // A chunk never written: ENOSPC, nothing changes.
    let data = vec![0x3C; geo.chunk as usize];
    assert_eq!(
        rig.write(&vol, fresh[0] * bpc, &data),
        Err(Errno::ENOSPC.into()),
        "{name}: fresh write"
    );
    assert_eq!(vol.info(), info, "{name}: counters changed");
    assert_eq!(rig.pm_persisted(), pm_full, "{name}: pm changed");
    // Every chunk holding data can still be overwritten, whole or in part.
    for chunk in (0..geo.chunks).filter(|c| !fresh.contains(c)) {
        let (offset, length) = if chunk % 2 == 0 {
            (chunk * bpc, bpc)
        } else {
            (chunk * bpc + 1, 1)
        };
        // Not all zeros, which would empty the chunk.
        let mut data = any_data(&mut rng, (length * u64::from(geo.lbs)) as usize);
        data[0] |= 1;
        rig.write(&vol, offset, &data)
            .unwrap_or_else(|e| panic!("{name}: overwrite of chunk {chunk}: {e:?}"));
        shadow.write(offset, &data);
    }
    assert_eq!(vol.info().chunks_in_use, fresh_limit, "{name}");
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    let pm_now = rig.store.current(&path).unwrap();
    assert_eq!(pm_now.len(), f.pm.len(), "{name}: pm grew");
    check_device(geo, &layout, &pm_now, &rig.backing.image(), &shadow);
    let vol = rig.load().unwrap();
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
}

#[test]
fn g1_write_reload_and_enospc_beyond_pm_file() {
    write_then_fill(FIXTURES[0], Mode::Immediate);
}

#[test]
fn g2_write_reload_and_enospc_beyond_pm_file() {
    write_then_fill(FIXTURES[1], Mode::Deferred);
}

#[test]
fn g3_write_reload_and_enospc_beyond_pm_file() {
    write_then_fill(FIXTURES[2], Mode::Immediate);
}
