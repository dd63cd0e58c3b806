//! The error contract (docs/DESIGN.md), row by row, from the Rust API: every failure
//! reaches the callback with the right errno, leaves nothing behind (no pm file, no
//! leaked io unit or chunk map, no changed data), and the next request works.

mod common;

use caps::{CapSet, Capability};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Backend, Errno, FileStore, InitPlan, Params, Volume};

const GEO: Geo = Geo::new(512, 4096, 16384, 512, 16);
const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];
/// A distinctive errno for injected device faults.
const FAULT: Errno = Errno(libc::ENXIO);

fn params(io: u32, lbs: u32, chunk: u32) -> Params {
    Params {
        backing_io_unit_size: io,
        logical_block_size: lbs,
        chunk_size: chunk,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- init: parameters

#[test]
fn init_plan_einval_rows() {
    let ok = params(4096, 512, 16384);
    let blocks_129 = 129 * 32;
    assert!(InitPlan::new(ok, 512, blocks_129, "/pm").is_ok());
    let mut with_size = ok;
    with_size.vol_size = 16384;
    let cases: Vec<(&str, Params, u32, u64, String)> = vec![
        ("vol_size != 0", with_size, 512, blocks_129, "/pm".into()),
        (
            "chunk 0",
            params(4096, 512, 0),
            512,
            blocks_129,
            "/pm".into(),
        ),
        (
            "io unit 0",
            params(0, 512, 16384),
            512,
            blocks_129,
            "/pm".into(),
        ),
        (
            "logical block 0",
            params(4096, 0, 16384),
            512,
            blocks_129,
            "/pm".into(),
        ),
        (
            "chunk % io unit",
            params(3072, 512, 16384),
            512,
            1 << 20,
            "/pm".into(),
        ),
        (
            "chunk % logical block",
            params(4096, 1536, 16384),
            512,
            blocks_129,
            "/pm".into(),
        ),
        (
            "io unit % blocklen",
            params(2048, 4096, 16384),
            4096,
            129 * 4,
            "/pm".into(),
        ),
        ("blocklen 0", ok, 0, blocks_129, "/pm".into()),
        ("pm dir empty", ok, 512, blocks_129, String::new()),
        ("pm dir too long", ok, 512, blocks_129, "d".repeat(4059)),
        ("backing of 128 chunks", ok, 512, 128 * 32, "/pm".into()),
        (
            "backing of 128.9 chunks",
            ok,
            512,
            129 * 32 - 1,
            "/pm".into(),
        ),
        ("backing empty", ok, 512, 0, "/pm".into()),
        ("backing bytes overflow", ok, 512, u64::MAX, "/pm".into()),
    ];
    for (what, p, blocklen, blockcnt, dir) in cases {
        assert_eq!(
            InitPlan::new(p, blocklen, blockcnt, &dir).map(|_| ()),
            Err(Errno::EINVAL.into()),
            "{what}"
        );
    }
    // The longest directory that still fits the path region (an absolute one: a
    // relative one is made absolute first).
    let longest = format!("/{}", "d".repeat(4057));
    assert!(InitPlan::new(ok, 512, blocks_129, &longest).is_ok());
}

// ---------------------------------------------------------------- init: pm file

#[test]
fn init_memstore_eexist_keeps_the_existing_file() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let plan = rig.plan([7; 16]);
    rig.store.insert(plan.pm_path(), b"someone else's".to_vec());
    assert_eq!(errno_of(rig.init_plan(plan.clone())), Errno::EEXIST);
    assert_eq!(rig.store.paths(), vec![plan.pm_path().to_path_buf()]);
    assert_eq!(
        rig.store.current(plan.pm_path()).unwrap(),
        b"someone else's".to_vec()
    );
    assert_eq!(rig.backing.op_counts().1, 0, "backing written");
}

#[test]
fn init_backing_write_failure_leaves_no_pm_file() {
    for mode in MODES {
        // Fail the first write (path region), then only the second (superblock).
        for failing in [0u64, 1] {
            let rig = Rig::new(GEO, mode, CodecKind::Zstd);
            let mut writes = 0;
            rig.backing.set_fault(Some(Box::new(move |is_write, _| {
                if !is_write {
                    return None;
                }
                writes += 1;
                (writes - 1 == failing).then_some(FAULT)
            })));
            assert_eq!(errno_of(rig.init_plan(rig.plan([3; 16]))), FAULT);
            assert!(rig.store.paths().is_empty(), "pm file left behind");
            assert!(
                rig.backing.image()[..8].iter().all(|&b| b == 0),
                "superblock written by a failed init"
            );
            // Nothing half-made loads.
            rig.backing.set_fault(None);
            assert_eq!(errno_of(rig.load()), Errno::EILSEQ);
            // And the same init now works.
            let vol = rig.init_plan(rig.plan([3; 16])).unwrap();
            rig.unload(&vol).unwrap();
        }
    }
}

#[test]
fn init_persist_failure_leaves_nothing() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    rig.store.set_fail_persist(true);
    assert_eq!(errno_of(rig.init_plan(rig.plan([4; 16]))), Errno::EIO);
    assert!(rig.store.paths().is_empty());
    assert_eq!(rig.backing.op_counts().1, 0, "backing written");
}

fn file_backend(backing: &MemBacking) -> Backend {
    Backend {
        backing: Box::new(backing.clone()),
        codec: CodecKind::Zstd.boxed(),
        store: Box::new(FileStore),
    }
}

fn init_with_files(backing: &MemBacking, dir: &str, uuid: [u8; 16]) -> reduce::Result<Volume> {
    let plan = InitPlan::new(
        Params {
            uuid,
            ..GEO.params()
        },
        GEO.blocklen,
        GEO.blockcnt(),
        dir,
    )?;
    let s = slot();
    Volume::init(plan, file_backend(backing), filler(&s));
    wait_on(backing, &s)
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn init_filestore_os_errnos() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let uuid = [0x11; 16];
    let name = "11111111-1111-1111-1111-111111111111";

    // Missing directory: ENOENT, nothing created, device untouched.
    let backing = MemBacking::new(512, GEO.blockcnt(), Mode::Immediate);
    let missing = format!("{dir}/no/such/dir");
    assert_eq!(
        errno_of(init_with_files(&backing, &missing, uuid)),
        Errno::ENOENT
    );
    assert_eq!(backing.op_counts().1, 0, "backing written");
    assert!(dir_entries(tmp.path()).is_empty());

    // Existing file: EEXIST, and the file is left alone.
    std::fs::write(tmp.path().join(name), b"not a pm file").unwrap();
    assert_eq!(
        errno_of(init_with_files(&backing, &dir, uuid)),
        Errno::EEXIST
    );
    assert_eq!(
        std::fs::read(tmp.path().join(name)).unwrap(),
        b"not a pm file"
    );
    assert_eq!(backing.op_counts().1, 0, "backing written");
    std::fs::remove_file(tmp.path().join(name)).unwrap();

    // A failed backing write after the pm file was made: the file goes again.
    backing.set_fault(Some(Box::new(|w, _| w.then_some(FAULT))));
    assert_eq!(errno_of(init_with_files(&backing, &dir, uuid)), FAULT);
    assert!(dir_entries(tmp.path()).is_empty(), "pm file left behind");
    backing.set_fault(None);

    // Success: mode 0600, the fixed-formula size; a trailing '/' is not doubled.
    let vol = init_with_files(&backing, &format!("{dir}/"), uuid).unwrap();
    assert_eq!(
        vol.pm_path(),
        std::path::Path::new(&format!("{dir}/{name}"))
    );
    let meta = std::fs::metadata(tmp.path().join(name)).unwrap();
    assert_eq!(meta.len(), GEO.pm().size as u64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let s = slot();
    vol.unload(filler(&s));
    wait_on(&backing, &s).unwrap();

    // Not writable: EACCES. Root writes anywhere (CAP_DAC_OVERRIDE), so the row runs on
    // a thread of its own that gives that capability up: capabilities are per thread.
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let ro_dir = ro.to_str().unwrap().to_owned();
    std::thread::spawn(move || {
        caps::drop(None, CapSet::Effective, Capability::CAP_DAC_OVERRIDE).unwrap();
        let backing = MemBacking::new(512, GEO.blockcnt(), Mode::Immediate);
        assert_eq!(
            errno_of(init_with_files(&backing, &ro_dir, uuid)),
            Errno(libc::EACCES)
        );
        assert_eq!(backing.op_counts().1, 0, "backing written");
    })
    .join()
    .unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
}

// ---------------------------------------------------------------- load

/// A volume with a compressed chunk (0), a raw chunk (1) and a partial one (5),
/// unloaded: (device image, pm path, pm bytes).
fn saved_volume() -> (Vec<u8>, PathBuf, Vec<u8>, Shadow) {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init();
    let mut shadow = Shadow::new(GEO);
    let writes = [
        (0, text(1, 16384)),
        (32, Rng::new(9).bytes(16384)),
        (5 * 32 + 3, vec![0x42; 2048]),
    ];
    for (offset, data) in writes {
        rig.write(&vol, offset, &data).unwrap();
        shadow.write(offset, &data);
    }
    rig.unload(&vol).unwrap();
    let path = rig.pm_path();
    let pm = rig.store.current(&path).unwrap();
    (rig.backing.image(), path, pm, shadow)
}

fn load_images(image: Vec<u8>, path: &Path, pm: Option<Vec<u8>>) -> (Rig, reduce::Result<Volume>) {
    let rig = Rig {
        geo: GEO,
        backing: MemBacking::from_image(512, image, Mode::Immediate),
        store: MemStore::new(),
        codec: CodecKind::Zstd,
    };
    if let Some(pm) = pm {
        rig.store.insert(path, pm);
    }
    let r = rig.load();
    (rig, r)
}

#[test]
fn load_zeroed_or_tiny_backing_is_eilseq() {
    for mode in MODES {
        let backing = MemBacking::new(512, GEO.blockcnt(), mode);
        let rig = Rig {
            geo: GEO,
            backing,
            store: MemStore::new(),
            codec: CodecKind::Zstd,
        };
        assert_eq!(errno_of(rig.load()), Errno::EILSEQ);
        assert_eq!(rig.destroy(), Err(Errno::EILSEQ.into()));
        assert_eq!(rig.backing.op_counts().1, 0, "a failed load wrote");
    }
    // Smaller than the metadata itself.
    let (rig, r) = load_images(vec![0; 4096], Path::new("/x"), None);
    assert_eq!(errno_of(r), Errno::EILSEQ);
    assert_eq!(rig.backing.op_counts(), (0, 0));
}

#[test]
fn load_good_images_reads_back() {
    let (image, path, pm, shadow) = saved_volume();
    let (rig, r) = load_images(image, &path, Some(pm));
    let vol = r.unwrap();
    shadow.verify(&rig, &vol);
    assert_eq!(vol.info().chunks_in_use, 3);
    rig.unload(&vol).unwrap();
}

#[test]
fn load_with_pm_file_missing_is_the_os_errno() {
    // The original reports pmem_map_file's errno (-ENOENT) here.
    let (image, path, _pm, _) = saved_volume();
    let (rig, r) = load_images(image, &path, None);
    assert_eq!(errno_of(r), Errno::ENOENT);
    assert_eq!(rig.backing.op_counts().1, 0);
}

#[test]
fn load_rejects_bad_pm_files_with_eilseq() {
    let (image, path, pm, shadow) = saved_volume();
    let layout = GEO.pm();
    let entry0 = layout.entry(&pm, 0).unwrap();
    let entry1 = layout.entry(&pm, 1).unwrap();
    let map0 = layout.map_offset(entry0);
    let set_u64 = |pm: &mut Vec<u8>, off: usize, v: u64| {
        pm[off..off + 8].copy_from_slice(&v.to_le_bytes());
    };
    let total_maps = GEO.chunks + 128;
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("one byte longer", Box::new(|pm| pm.push(0xFF))),
        ("64 bytes longer", Box::new(|pm| pm.extend([0xFF; 64]))),
        (
            "64 bytes shorter",
            Box::new(|pm| pm.truncate(pm.len() - 64)),
        ),
        ("superblock only", Box::new(|pm| pm.truncate(4096))),
        ("empty", Box::new(|pm| pm.clear())),
        ("uuid differs", Box::new(|pm| pm[8] ^= 1)),
        ("vol_size differs", Box::new(|pm| pm[40] ^= 0x40)),
        ("reserved superblock byte", Box::new(|pm| pm[100] = 1)),
        ("no signature", Box::new(|pm| pm[0] = b'X')),
        (
            "logical entry = total maps",
            Box::new(move |pm| set_u64(pm, 4096, total_maps)),
        ),
        (
            "logical entry huge",
            Box::new(move |pm| set_u64(pm, 4096 + 8 * 7, 1 << 40)),
        ),
        (
            "logical entry to an empty map",
            Box::new(move |pm| {
                let free = (0..total_maps)
                    .find(|&i| ![entry0, entry1].contains(&i) && Some(i) != layout.entry(pm, 5))
                    .unwrap();
                set_u64(pm, 4096 + 8 * 9, free)
            }),
        ),
        (
            "two chunks share a map",
            Box::new(move |pm| set_u64(pm, 4096 + 8 * 3, entry0)),
        ),
        (
            "io unit beyond the device",
            Box::new(move |pm| set_u64(pm, map0 + 8, GEO.total_io_units())),
        ),
        (
            "io unit in the metadata",
            Box::new(move |pm| set_u64(pm, map0 + 8, 0)),
        ),
        (
            "io unit all-ones",
            Box::new(move |pm| set_u64(pm, map0 + 8, u64::MAX)),
        ),
        (
            "compressed size > chunk",
            Box::new(move |pm| pm[map0..map0 + 4].copy_from_slice(&16385u32.to_le_bytes())),
        ),
        (
            "compressed size 0",
            Box::new(move |pm| pm[map0..map0 + 4].copy_from_slice(&0u32.to_le_bytes())),
        ),
    ];
    for (what, mutate) in &cases {
        let mut bad = pm.clone();
        mutate(&mut bad);
        let (rig, r) = load_images(image.clone(), &path, Some(bad.clone()));
        assert_eq!(r.map(|_| ()), Err(Errno::EILSEQ.into()), "{what}");
        assert_eq!(rig.backing.op_counts().1, 0, "{what}: a failed load wrote");
        assert_eq!(rig.store.current(&path).unwrap(), bad, "{what}: pm changed");
        // The file is not left mapped: putting the good bytes back, it loads.
        rig.store.insert(&path, pm.clone());
        let vol = rig
            .load()
            .unwrap_or_else(|e| panic!("{what}: reload {e:?}"));
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn load_rejects_bad_backing_with_eilseq() {
    let (image, path, pm, _) = saved_volume();
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "one chunk short",
            Box::new(|img| img.truncate(img.len() - 16384)),
        ),
        (
            "one block short",
            Box::new(|img| img.truncate(img.len() - 512)),
        ),
        ("signature", Box::new(|img| img[7] = b'X')),
        (
            "path without NUL",
            Box::new(|img| img[4096..8192].fill(b'a')),
        ),
        ("empty path", Box::new(|img| img[4096] = 0)),
        (
            "chunk size 0 (both copies)",
            Box::new(|img| img[32..36].fill(0)),
        ),
    ];
    for (what, mutate) in &cases {
        let mut bad = image.clone();
        mutate(&mut bad);
        let mut bad_pm = pm.clone();
        if what.starts_with("chunk size") {
            bad_pm[..4096].copy_from_slice(&bad[..4096]);
        }
        let (rig, r) = load_images(bad, &path, Some(bad_pm));
        assert_eq!(r.map(|_| ()), Err(Errno::EILSEQ.into()), "{what}");
        assert_eq!(rig.backing.op_counts().1, 0);
    }
    // A larger device is fine.
    let mut big = image.clone();
    big.extend(vec![0; 16384 * 3]);
    let (rig, r) = load_images(big, &path, Some(pm));
    rig.unload(&r.unwrap()).unwrap();
}

// ---------------------------------------------------------------- I/O validation

#[test]
fn io_validation_rows() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        rig.write(&vol, 0, &text(2, 16384)).unwrap();
        let info = vol.info();
        let ops = rig.backing.op_counts();
        let pm = rig.pm_persisted();
        let total = GEO.total_blocks();

        // length 0: completes with 0, nothing done.
        let s = slot();
        let f = filler(&s);
        vol.readv(3, 0, vec![], move |r, _| f(r));
        assert_eq!(rig.wait(&s), Ok(()));
        assert_eq!(rig.writev(&vol, 3, vec![]), Ok(()));
        assert_eq!(rig.writev(&vol, total, vec![]), Ok(()));

        // Crossing a chunk boundary is valid (tests/split.rs).
        let bad: Vec<(&str, u64, u64, usize)> = vec![
            ("iov short", 0, 4, 2047),
            ("iov long", 0, 4, 2049),
            ("iov of another length", 0, 4, 512),
            ("past the end", total, 1, 512),
            ("ends past the end", total - 1, 2, 1024),
            ("offset overflows", u64::MAX, 1, 512),
            ("length overflows", 1, u64::MAX, 512),
        ];
        for (what, offset, length, bytes) in bad {
            let s = slot();
            let f = filler(&s);
            vol.readv(offset, length, vec![vec![0; bytes]], move |r, _| f(r));
            assert_eq!(rig.wait(&s), Err(Errno::EINVAL.into()), "read: {what}");
            let s = slot();
            let f = filler(&s);
            vol.writev(offset, length, vec![vec![1; bytes]], move |r, _| f(r));
            assert_eq!(rig.wait(&s), Err(Errno::EINVAL.into()), "write: {what}");
        }
        assert_eq!(vol.info(), info);
        assert_eq!(
            rig.backing.op_counts(),
            ops,
            "invalid requests reached the device"
        );
        assert_eq!(rig.pm_persisted(), pm);
        assert_eq!(rig.read_chunk(&vol, 0).unwrap(), text(2, 16384));
        rig.unload(&vol).unwrap();
    }
}

// ---------------------------------------------------------------- ENOSPC

/// A volume whose pm file has the original's size (see the format's note on it): fewer
/// chunk maps than chunks. Writing fresh chunks takes them until only the spares that
/// overwrites need are left (one per chunk holding data, up to MAX_ACTIVE); then writes
/// to chunks never written fail with ENOSPC, change nothing, and the file never grows.
/// Overwrites still succeed (tests/contracts.rs goes on with them).
#[test]
fn enospc_for_fresh_chunks_when_only_spare_chunk_maps_are_left() {
    let geo = Geo::new(512, 512, 2048, 512, 1024);
    let original = PmLayout::new(geo, true);
    // 4096 + 8192 + 1152*32 = 49152 bytes; (49152 - 12288) / 40 = 921 maps.
    assert_eq!(original.size, 49152);
    let usable = 921u64;
    let fresh_limit = usable - MAX_ACTIVE as u64;
    for mode in MODES {
        let rig = Rig::new(geo, mode, CodecKind::Zstd);
        let vol = rig.init();
        rig.unload(&vol).unwrap();
        let path = rig.pm_path();
        let mut pm = rig.store.current(&path).unwrap();
        pm.truncate(original.size);
        rig.store.insert(&path, pm);
        let vol = rig.load().unwrap();
        assert_eq!(vol.info().chunk_maps_usable, usable);

        let mut shadow = Shadow::new(geo);
        let mut rng = Rng::new(77);
        for chunk in 0..fresh_limit {
            // Never all zeros: a chunk of zeros takes no chunk map.
            let mut data = any_data(&mut rng, 2048);
            data[0] |= 1;
            rig.write(&vol, chunk * 4, &data).unwrap();
            shadow.write(chunk * 4, &data);
        }
        let info = vol.info();
        assert_eq!(info.chunks_in_use, fresh_limit);
        let pm_before = rig.pm_persisted();

        // Fresh chunks, whole or partial: all would take a spare.
        for (offset, len) in [(fresh_limit * 4, 4u64), (900 * 4 + 1, 2), (1023 * 4 + 3, 1)] {
            let data = vec![0xC3; len as usize * 512];
            assert_eq!(
                rig.write(&vol, offset, &data),
                Err(Errno::ENOSPC.into()),
                "{mode:?} write at {offset}"
            );
            assert_eq!(vol.info(), info, "counters changed by a failed write");
        }
        assert_eq!(rig.pm_persisted(), pm_before);
        // Overwrites, whole and partial, of chunks holding data.
        for (offset, len) in [(0, 4u64), (17 * 4 + 1, 2), ((fresh_limit - 1) * 4 + 3, 1)] {
            let data = vec![0x3C; len as usize * 512];
            rig.write(&vol, offset, &data).unwrap();
            shadow.write(offset, &data);
        }
        assert_eq!(vol.info().chunks_in_use, fresh_limit);
        shadow.verify(&rig, &vol);
        assert_eq!(rig.pm_persisted().len(), original.size);
        rig.unload(&vol).unwrap();
        assert_eq!(rig.store.current(&path).unwrap().len(), original.size);
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

/// The format (docs/DESIGN.md): "The 128 extra chunk maps and their io units exist so
/// that in-flight writes always find room even when the volume is full of incompressible
/// data."
/// A volume full of incompressible data, then one raw overwrite of every chunk in
/// flight at once: every one succeeds, nothing leaks, the new data reads back.
#[test]
fn in_flight_writes_always_find_room_on_a_full_raw_volume() {
    let geo = Geo::new(512, 4096, 16384, 512, MAX_ACTIVE as u64);
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let mut shadow = Shadow::new(geo);
    let mut rng = Rng::new(3);
    for chunk in 0..geo.chunks {
        let data = rng.bytes(16384);
        rig.write(&vol, chunk * 32, &data).unwrap();
        shadow.write(chunk * 32, &data);
    }
    // Metadata included: 2 io units of 4 KiB.
    assert_eq!(vol.info().allocated_io_units, geo.chunks * 4 + 2);
    let failures = Rc::new(RefCell::new(Vec::new()));
    for chunk in 0..geo.chunks {
        let data = rng.bytes(16384);
        shadow.write(chunk * 32, &data);
        let f = failures.clone();
        vol.writev(chunk * 32, 32, vec![data], move |r, _| {
            if let Err(e) = r {
                f.borrow_mut().push((chunk, e));
            }
        });
    }
    rig.drain();
    assert!(failures.borrow().is_empty(), "{:?}", failures.borrow());
    assert_eq!(vol.info().allocated_io_units, geo.chunks * 4 + 2, "leak");
    assert_eq!(vol.info().chunks_in_use, geo.chunks);
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
}

// ---------------------------------------------------------------- device faults

/// Chunks 2 (compressed), 3 (raw) and 4 (partial) written; returns the shadow.
fn populated(rig: &Rig, vol: &Volume) -> Shadow {
    let mut shadow = Shadow::new(rig.geo);
    for (offset, data) in [
        (2 * 32, text(5, 16384)),
        (3 * 32, Rng::new(8).bytes(16384)),
        (4 * 32 + 8, vec![0x99; 4096]),
    ] {
        rig.write(vol, offset, &data).unwrap();
        shadow.write(offset, &data);
    }
    // Writes leave their chunks in the cache; these tests are about the device's data.
    vol.set_cache_chunks(0).unwrap();
    shadow
}

#[test]
fn backing_read_fault_is_reported_and_leaves_nothing() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let shadow = populated(&rig, &vol);
        let info = vol.info();
        let pm = rig.pm_persisted();
        rig.backing
            .set_fault(Some(Box::new(|w, _| (!w).then_some(FAULT))));
        for chunk in [2, 3, 4] {
            assert_eq!(
                rig.read(&vol, chunk * 32 + 1, 3),
                Err(FAULT.into()),
                "read {chunk}"
            );
            let (_, writes) = rig.backing.op_counts();
            // A partial write must read the old chunk first: it fails, writes nothing.
            assert_eq!(
                rig.write(&vol, chunk * 32 + 1, &[0x11; 1024]),
                Err(FAULT.into()),
                "rmw {chunk}"
            );
            assert_eq!(
                rig.backing.op_counts().1,
                writes,
                "rmw wrote after a failed read"
            );
            assert_eq!(vol.info(), info, "counters changed");
        }
        // A chunk never written needs no read.
        assert_eq!(rig.read(&vol, 9 * 32, 32).unwrap(), vec![0; 16384]);
        assert_eq!(rig.pm_persisted(), pm);
        rig.backing.set_fault(None);
        // No stale error: the next requests work.
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn backing_write_fault_is_reported_and_leaves_nothing() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let mut shadow = populated(&rig, &vol);
        let info = vol.info();
        let pm = rig.pm_persisted();
        rig.backing
            .set_fault(Some(Box::new(|w, _| w.then_some(FAULT))));
        for (offset, data) in [
            (2 * 32, Rng::new(1).bytes(16384)),
            (3 * 32 + 5, text(1, 512)),
            (4 * 32, text(2, 16384)),
            (10 * 32, text(3, 16384)),
            (11 * 32 + 1, vec![7; 512]),
        ] {
            assert_eq!(
                rig.write(&vol, offset, &data),
                Err(FAULT.into()),
                "write at {offset}"
            );
            assert_eq!(vol.info(), info, "counters changed (leak)");
        }
        assert_eq!(rig.pm_persisted(), pm, "pm changed by failed writes");
        shadow.verify(&rig, &vol);
        rig.backing.set_fault(None);
        // The next write works, on the same chunks.
        let data = text(9, 16384);
        rig.write(&vol, 2 * 32, &data).unwrap();
        shadow.write(2 * 32, &data);
        rig.write(&vol, 11 * 32 + 1, &[7; 512]).unwrap();
        shadow.write(11 * 32 + 1, &[7; 512]);
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

/// A failing write with requests queued behind it on the same chunk: they run, and see
/// the old data.
#[test]
fn failed_write_does_not_poison_the_chunk_queue() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let shadow = populated(&rig, &vol);
    let mut failing = true;
    rig.backing.set_fault(Some(Box::new(move |w, _| {
        if w && failing {
            failing = false;
            Some(FAULT)
        } else {
            None
        }
    })));
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l = log.clone();
    vol.writev(2 * 32, 32, vec![vec![0xAB; 16384]], move |r, _| {
        l.borrow_mut().push(format!("w1 {r:?}"))
    });
    let l = log.clone();
    let want = shadow.expect(2 * 32, 32).to_vec();
    vol.readv(2 * 32, 32, vec![vec![0; 16384]], move |r, segs| {
        assert!(segs.concat() == want, "read after the failed write");
        l.borrow_mut().push(format!("r {r:?}"))
    });
    let l = log.clone();
    vol.writev(2 * 32 + 4, 1, vec![vec![0xCD; 512]], move |r, _| {
        l.borrow_mut().push(format!("w2 {r:?}"))
    });
    rig.drain();
    assert_eq!(
        *log.borrow(),
        vec![
            format!("w1 {:?}", Err::<(), reduce::Error>(FAULT.into())),
            "r Ok(())".into(),
            "w2 Ok(())".into()
        ]
    );
    let mut want = shadow.expect(2 * 32, 32).to_vec();
    want[4 * 512..5 * 512].fill(0xCD);
    assert_eq!(rig.read_chunk(&vol, 2).unwrap(), want);
    rig.unload(&vol).unwrap();
}

#[test]
fn pm_persist_failure_on_write_leaves_nothing() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let mut shadow = populated(&rig, &vol);
        let info = vol.info();
        rig.store.set_fail_persist(true);
        assert_eq!(
            rig.write(&vol, 2 * 32, &vec![1; 16384]),
            Err(Errno::EIO.into())
        );
        assert_eq!(
            rig.write(&vol, 7 * 32, &vec![1; 16384]),
            Err(Errno::EIO.into())
        );
        assert_eq!(vol.info(), info);
        rig.store.set_fail_persist(false);
        shadow.verify(&rig, &vol);
        rig.write(&vol, 7 * 32, &[1; 16384]).unwrap();
        shadow.write(7 * 32, &[1; 16384]);
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

// ---------------------------------------------------------------- corruption

#[test]
fn corrupted_stored_data_reads_as_eio_never_wrong_data() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let shadow = populated(&rig, &vol);
        let pm = rig.pm_persisted();
        let stored = GEO.pm().stored(&pm);
        let info = vol.info();
        for chunk in [2u64, 3, 4] {
            let s = stored.iter().find(|s| s.chunk == chunk).unwrap();
            // Garbage inside the stored bytes, in the chunk's first io unit.
            let at = s.io_units[0] as usize * 4096 + (s.size as usize / 2).min(4000);
            let garbage = Rng::new(chunk).bytes(64);
            rig.backing.poke(at, &garbage);
            assert!(
                rig.read_chunk(&vol, chunk) == Err(Errno::EIO.into()),
                "chunk {chunk}"
            );
            assert!(rig.read(&vol, chunk * 32 + 31, 1) == Err(Errno::EIO.into()));
            // A partial write cannot merge into it.
            assert_eq!(
                rig.write(&vol, chunk * 32, &[5; 512]),
                Err(Errno::EIO.into())
            );
            assert_eq!(vol.info(), info);
            assert!(rig.read_chunk(&vol, chunk) == Err(Errno::EIO.into()));
        }
        // Other chunks are fine; a whole-chunk overwrite replaces a corrupt chunk.
        assert_eq!(rig.read_chunk(&vol, 5).unwrap(), shadow.expect(5 * 32, 32));
        rig.write(&vol, 2 * 32, &text(4, 16384)).unwrap();
        assert_eq!(rig.read_chunk(&vol, 2).unwrap(), text(4, 16384));
        rig.unload(&vol).unwrap();
    }
}

/// Chunks as the original wrote them carry no checksum (0xFFFFFFFF): then the codec is
/// the only guard, and a failed or short decompress is EIO.
#[test]
fn decompress_failures_without_checksum_are_eio() {
    let (image, path, pm, shadow) = saved_volume();
    let layout = GEO.pm();
    let s = layout
        .stored(&pm)
        .into_iter()
        .find(|s| s.chunk == 0)
        .unwrap();
    assert!(s.size < 16384, "chunk 0 compressed");
    let base = layout.map_offset(s.index);
    let frame_of = |n: usize| {
        let src: Vec<u8> = (0..n).map(|i| (i / 64) as u8).collect();
        zstd::bulk::compress(&src, 1).unwrap()
    };
    type Case = (&'static str, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("checksum dropped, data intact", None),
        ("garbage frame", Some(Rng::new(5).bytes(s.size as usize))),
        ("frame of half a chunk", Some(frame_of(8192))),
        ("frame of two chunks", Some(frame_of(32768))),
        ("truncated frame", {
            let f = frame_of(16384);
            Some(f[..f.len() - 3].to_vec())
        }),
    ];
    for (what, frame) in cases {
        let mut pm = pm.clone();
        pm[base + 4..base + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut image = image.clone();
        if let Some(frame) = &frame {
            assert!(frame.len() <= 4096 * s.io_units.len(), "{what}");
            pm[base..base + 4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
            let mut off = 0;
            for &u in &s.io_units {
                let n = (frame.len() - off).min(4096);
                let at = u as usize * 4096;
                image[at..at + n].copy_from_slice(&frame[off..off + n]);
                off += n;
                if off == frame.len() {
                    break;
                }
            }
            // Fewer io units may now be in use: mark the rest free in the map.
            let used = frame.len().div_ceil(4096);
            for k in used..4 {
                pm[base + 8 + 8 * k..base + 16 + 8 * k].fill(0xFF);
            }
        }
        let (rig, r) = load_images(image, &path, Some(pm));
        let vol = r.unwrap_or_else(|e| panic!("{what}: load {e:?}"));
        let got = rig.read_chunk(&vol, 0);
        if frame.is_none() {
            assert_eq!(got.unwrap(), shadow.expect(0, 32), "{what}");
        } else {
            assert!(got == Err(Errno::EIO.into()), "{what}: not EIO");
            let info = vol.info();
            assert_eq!(
                rig.write(&vol, 1, &[3; 512]),
                Err(Errno::EIO.into()),
                "{what}: rmw"
            );
            assert_eq!(vol.info(), info);
        }
        // The rest of the volume is unaffected.
        assert_eq!(rig.read_chunk(&vol, 1).unwrap(), shadow.expect(32, 32));
        rig.unload(&vol).unwrap();
    }
}

// ---------------------------------------------------------------- unload

#[test]
fn unload_with_outstanding_io_is_ebusy() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let done = Rc::new(RefCell::new(0));
    for chunk in 0..4 {
        let d = done.clone();
        vol.writev(chunk * 32, 32, vec![text(chunk, 16384)], move |r, _| {
            r.unwrap();
            *d.borrow_mut() += 1;
        });
    }
    assert_eq!(vol.info().outstanding, 4);
    let s = slot();
    vol.unload(filler(&s));
    // Reported at once, without waiting for the I/O.
    assert_eq!(s.borrow_mut().take(), Some(Err(Errno::EBUSY.into())));
    // The volume still works.
    assert!(rig.backing.poll_one());
    assert_eq!(rig.unload(&vol), Err(Errno::EBUSY.into()));
    rig.drain();
    assert_eq!(*done.borrow(), 4);
    assert_eq!(vol.info().outstanding, 0);
    rig.unload(&vol).unwrap();
    // Once closed, requests and a second unload fail rather than touch anything.
    let ops = rig.backing.op_counts();
    assert!(rig.read(&vol, 0, 1).is_err());
    assert!(rig.write(&vol, 0, &[1; 512]).is_err());
    assert!(rig.unload(&vol).is_err());
    assert_eq!(rig.backing.op_counts(), ops);
    let vol = rig.load().unwrap();
    for chunk in 0..4 {
        assert_eq!(rig.read_chunk(&vol, chunk).unwrap(), text(chunk, 16384));
    }
    rig.unload(&vol).unwrap();
}

// ---------------------------------------------------------------- codec results

/// A zstd codec whose results can be bent: `compress_result` / `decompress_result`
/// map the true result to the one reported.
#[derive(Clone)]
struct Bent {
    compress: Rc<dyn Fn(reduce::Result<usize>) -> reduce::Result<usize>>,
    decompress: Rc<dyn Fn(reduce::Result<usize>) -> reduce::Result<usize>>,
}

impl reduce::SyncCodec for Bent {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> reduce::Result<usize> {
        (self.compress)(reduce::ZstdCodec.compress_buf(src, dst))
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> reduce::Result<usize> {
        (self.decompress)(reduce::ZstdCodec.decompress_buf(src, dst))
    }
}

fn bent_volume(codec: Bent) -> (MemBacking, MemStore, Volume) {
    let backing = MemBacking::new(512, GEO.blockcnt(), Mode::Immediate);
    let store = MemStore::new();
    let plan = InitPlan::new(GEO.params(), 512, GEO.blockcnt(), "/pm").unwrap();
    let s = slot();
    Volume::init(
        plan,
        Backend {
            backing: Box::new(backing.clone()),
            codec: Box::new(codec),
            store: Box::new(store.clone()),
        },
        filler(&s),
    );
    let vol = wait_on(&backing, &s).unwrap();
    (backing, store, vol)
}

fn sync_write(backing: &MemBacking, vol: &Volume, offset: u64, data: &[u8]) -> reduce::Result<()> {
    let s = slot();
    let f = filler(&s);
    vol.writev(
        offset,
        (data.len() / 512) as u64,
        vec![data.to_vec()],
        move |r, _| f(r),
    );
    wait_on(backing, &s)
}

fn sync_read(
    backing: &MemBacking,
    vol: &Volume,
    offset: u64,
    length: u64,
) -> reduce::Result<Vec<u8>> {
    let s = slot();
    let f = filler(&s);
    vol.readv(
        offset,
        length,
        vec![vec![0; length as usize * 512]],
        move |r, segs| f(r.map(|()| segs.concat())),
    );
    wait_on(backing, &s)
}

/// The error contract: "compress fails or saves nothing → store uncompressed".
#[test]
fn compress_failure_or_no_saving_stores_raw() {
    type Bend = Rc<dyn Fn(reduce::Result<usize>) -> reduce::Result<usize>>;
    let cases: Vec<(&str, Bend)> = vec![
        ("error", Rc::new(|_| Err(Errno::ENOSPC.into()))),
        ("zero bytes", Rc::new(|_| Ok(0))),
        ("more than the buffer", Rc::new(|_| Ok(16385))),
        ("exactly chunk_size", Rc::new(|_| Ok(16384))),
        ("needs every io unit", Rc::new(|_| Ok(12289))),
    ];
    for (what, bend) in cases {
        let codec = Bent {
            compress: bend,
            decompress: Rc::new(|r| r),
        };
        let (backing, store, vol) = bent_volume(codec);
        let data = text(3, 16384);
        sync_write(&backing, &vol, 2 * 32, &data).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let pm = store.persisted(vol.pm_path()).unwrap();
        let s = &GEO.pm().stored(&pm)[0];
        assert_eq!(s.size, 16384, "{what}: not stored raw");
        assert_eq!(s.bytes(&backing.image(), 4096), data, "{what}");
        assert_eq!(vol.stats().io_units_in_use, 4);
        assert_eq!(
            sync_read(&backing, &vol, 2 * 32, 32).unwrap(),
            data,
            "{what}"
        );
        // A partial write into the raw chunk (raw read, merge, compress again).
        sync_write(&backing, &vol, 2 * 32 + 3, &[1; 512]).unwrap();
        let mut want = data.clone();
        want[1536..2048].fill(1);
        assert_eq!(
            sync_read(&backing, &vol, 2 * 32, 32).unwrap(),
            want,
            "{what}"
        );
    }
}

/// The error contract: "decompress fails or returns a size other than chunk_size → EIO".
#[test]
fn decompress_failure_or_short_result_is_eio() {
    type Bend = Rc<dyn Fn(reduce::Result<usize>) -> reduce::Result<usize>>;
    let cases: Vec<(&str, Bend)> = vec![
        ("error", Rc::new(|_| Err(Errno::EINVAL.into()))),
        ("one byte short", Rc::new(|r| r.map(|n| n - 1))),
        ("zero", Rc::new(|_| Ok(0))),
        ("one byte long", Rc::new(|r| r.map(|n| n + 1))),
    ];
    for (what, bend) in cases {
        let codec = Bent {
            compress: Rc::new(|r| r),
            decompress: bend,
        };
        let (backing, _store, vol) = bent_volume(codec);
        sync_write(&backing, &vol, 0, &text(1, 16384)).unwrap();
        let raw = Rng::new(1).bytes(16384);
        sync_write(&backing, &vol, 32, &raw).unwrap();
        let info = vol.info();
        assert_eq!(
            sync_read(&backing, &vol, 0, 32).map(|_| ()),
            Err(Errno::EIO.into()),
            "{what}"
        );
        assert_eq!(
            sync_read(&backing, &vol, 4, 1).map(|_| ()),
            Err(Errno::EIO.into()),
            "{what}"
        );
        assert_eq!(
            sync_write(&backing, &vol, 4, &[9; 512]),
            Err(Errno::EIO.into()),
            "{what}: rmw"
        );
        assert_eq!(vol.info(), info, "{what}");
        // A raw chunk needs no decompress; a whole overwrite needs no read.
        assert_eq!(sync_read(&backing, &vol, 32, 32).unwrap(), raw, "{what}");
        sync_write(&backing, &vol, 0, &raw).unwrap();
        assert_eq!(sync_read(&backing, &vol, 0, 32).unwrap(), raw, "{what}");
    }
}
