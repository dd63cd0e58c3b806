//! The bytes init and writes leave on the backing device and in the pm file, checked
//! against the on-disk format (docs/DESIGN.md) offset by offset (expectations computed
//! here, not by the library's encoder).

mod common;

use common::*;
use reduce::testkit::*;
use reduce::{InitPlan, Params, Stats, Volume};

const UUID: [u8; 16] = [
    0x5e, 0xd0, 0x7f, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x80, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45,
];
const UUID_STR: &str = "5ed07f1c-1234-4000-8000-abcdef012345";

/// 13 chunks: the logical map (104 B) and chunk-map region (141 x 40 B) both need
/// rounding to 64 B.
const GEO: Geo = Geo::new(512, 4096, 16384, 512, 13);

fn le32(b: &[u8], off: usize) -> u32 {
    u32_at(b, off)
}

#[test]
fn crc32c_reference_vector() {
    // The harness's own CRC-32C against the standard check value.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

fn check_superblock(sb: &[u8], vol_size: u64) {
    assert_eq!(&sb[0..8], b"SPDKREDU");
    assert_eq!(&sb[8..24], &UUID);
    assert_eq!(le32(sb, 24), 4096, "io unit @24");
    assert_eq!(le32(sb, 28), 512, "logical block @28");
    assert_eq!(le32(sb, 32), 16384, "chunk @32");
    assert_eq!(&sb[36..40], &[0; 4], "padding @36");
    assert_eq!(u64_at(sb, 40), vol_size, "vol_size @40");
    // The rig's built-in zstd at level 1: comp_level @48, comp_algo @52 (zstd, 0x80).
    assert_eq!(le32(sb, 48), 1, "comp_level @48");
    assert_eq!(sb[52], 0x80, "comp_algo @52");
    assert!(
        sb[53..4096].iter().all(|&b| b == 0),
        "reserved bytes not zero"
    );
}

#[test]
fn init_layout_backing_and_pm() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    let vol_size = 13 * 16384u64;
    assert_eq!(vol.params().vol_size, vol_size);
    assert_eq!(vol.params().uuid, UUID);

    let image = rig.backing.image();
    assert_eq!(image.len(), (13 + 128) * 16384);
    check_superblock(&image[..4096], vol_size);

    // Path region: dir + "/" + lowercase uuid, NUL, zeros to 8192.
    let path = format!("/pm/{UUID_STR}");
    assert_eq!(vol.pm_path(), std::path::Path::new(&path));
    assert_eq!(&image[4096..4096 + path.len()], path.as_bytes());
    assert!(image[4096 + path.len()..8192].iter().all(|&b| b == 0));
    // Nothing else written.
    assert!(image[8192..].iter().all(|&b| b == 0));

    // pm file: fixed formula size, superblock copy, maps filled with 0xFF.
    assert_eq!(rig.store.paths(), vec![path.clone()]);
    let pm = rig.store.persisted(&path).unwrap();
    let expect_size = 4096 + 128 /* 13*8 -> 128 */ + 5696 /* 141*40=5640 -> 5696 */;
    assert_eq!(GEO.pm().size, expect_size);
    assert_eq!(pm.len(), expect_size);
    assert_eq!(&pm[..4096], &image[..4096], "pm superblock copy");
    assert!(pm[4096..].iter().all(|&b| b == 0xFF), "maps not all-ones");

    let info = vol.info();
    // The metadata's 2 io units, as later SPDK counts them.
    assert_eq!(info.allocated_io_units, 2);
    assert_eq!(
        vol.stats(),
        Stats {
            io_units_free: 141 * 4 - 2,
            ..Stats::default()
        }
    );
    assert_eq!(info.chunks_in_use, 0);
    assert_eq!(info.chunk_maps_usable, 13 + 128);
    assert_eq!(info.outstanding, 0);

    // After a clean unload the file keeps its size and content.
    rig.unload(&vol).unwrap();
    assert_eq!(rig.store.current(&path).unwrap(), pm);
}

#[test]
fn pm_sizes_for_several_geometries() {
    // (geometry, expected pm size written out by hand from the format)
    let cases = [
        // 64 chunks: 4096 + 512 + 192*40=7680
        (Geo::new(512, 4096, 16384, 512, 64), 4096 + 512 + 7680),
        // 7 chunks of 64K, 16K io units: stride 8+4*8=40; 56 -> 64; 135*40=5400 -> 5440
        (Geo::new(512, 16384, 65536, 4096, 7), 4096 + 64 + 5440),
        // 3 chunks of 2K, 512 io units: stride 40; 24 -> 64; 131*40=5240 -> 5248
        (Geo::new(512, 512, 2048, 512, 3), 4096 + 64 + 5248),
        // 5 chunks of 16K with 4K blocks and io units
        (Geo::new(4096, 4096, 16384, 4096, 5), 4096 + 64 + 5376),
        // 1 chunk of 16K, io unit 2K: stride 8+8*8=72; 8 -> 64; 129*72=9288 -> 9344
        (Geo::new(512, 2048, 16384, 512, 1), 4096 + 64 + 9344),
    ];
    for (geo, size) in cases {
        assert_eq!(geo.pm().size, size, "{geo:?}");
        let rig = Rig::new(geo, Mode::Immediate, CodecKind::Zstd);
        let vol = rig.init();
        let pm = rig.pm_persisted();
        assert_eq!(pm.len(), size, "{geo:?}");
        assert_eq!(vol.info().chunk_maps_usable, geo.chunks + 128);
        assert_eq!(vol.params().vol_size, geo.chunks * u64::from(geo.chunk));
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn vol_size_ignores_a_partial_trailing_chunk() {
    // A device with 13 + 128 chunks and a bit: the bit is not a chunk.
    let plan = InitPlan::new(
        Params {
            uuid: UUID,
            ..GEO.params()
        },
        512,
        GEO.blockcnt() + 31,
        "/pm",
    )
    .unwrap();
    assert_eq!(plan.params.vol_size, 13 * 16384);
}

#[test]
fn pm_dir_with_trailing_slash_and_random_uuid() {
    let plan = InitPlan::new(GEO.params(), 512, GEO.blockcnt(), "/some/dir/").unwrap();
    let uuid = plan.params.uuid;
    assert_ne!(uuid, [0; 16]);
    assert_eq!(uuid[6] >> 4, 4, "version 4 uuid");
    assert_eq!(uuid[8] >> 6, 0b10, "RFC 4122 variant");
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    let want = format!(
        "/some/dir/{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    assert_eq!(plan.pm_path(), std::path::Path::new(&want));
    let other = InitPlan::new(GEO.params(), 512, GEO.blockcnt(), "/some/dir/").unwrap();
    assert_ne!(other.params.uuid, uuid, "two random uuids alike");
}

#[test]
fn init_order_pm_then_path_then_superblock() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::Zstd);
    let s = slot();
    Volume::init(rig.plan(UUID), rig.backend(), filler(&s));
    let path = format!("/pm/{UUID_STR}");
    // First the header already on the device is read (to refuse replacing a loaded
    // volume), before anything is made.
    assert_eq!(rig.backing.pending(), 1);
    assert!(
        rig.store.paths().is_empty(),
        "pm file made before the header read"
    );
    assert!(rig.backing.poll_one());
    assert_eq!(rig.backing.op_counts(), (1, 1));
    // Before the first backing write completes the pm file is complete and persisted.
    assert_eq!(rig.backing.pending(), 1);
    let pm = rig.store.persisted(&path).expect("pm created first");
    assert_eq!(pm.len(), GEO.pm().size);
    assert_eq!(&pm[..8], b"SPDKREDU");
    assert!(pm[4096..].iter().all(|&b| b == 0xFF));
    assert!(rig.backing.image().iter().all(|&b| b == 0));
    // First completion: the path region; the superblock is not there yet.
    assert!(rig.backing.poll_one());
    assert!(s.borrow().is_none());
    let image = rig.backing.image();
    assert_eq!(&image[4096..4096 + path.len()], path.as_bytes());
    assert!(
        image[..4096].iter().all(|&b| b == 0),
        "superblock before path done"
    );
    assert_eq!(rig.backing.pending(), 1);
    // Second: the superblock, then the volume.
    assert!(rig.backing.poll_one());
    let vol = s.borrow_mut().take().unwrap().unwrap();
    check_superblock(&rig.backing.image()[..4096], 13 * 16384);
    assert_eq!(rig.backing.op_counts(), (1, 2));
    rig.unload(&vol).unwrap();
}

fn stored_of(rig: &Rig, chunk: u64) -> StoredChunk {
    let pm = rig.pm_persisted();
    GEO.pm()
        .stored(&pm)
        .into_iter()
        .find(|s| s.chunk == chunk)
        .expect("chunk stored")
}

#[test]
fn one_compressed_write_layout() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    let data = text(3, 16384);
    rig.write(&vol, 3 * 32, &data).unwrap();

    let pm = rig.pm_persisted();
    let layout = GEO.pm();
    // Only chunk 3 has a logical map entry.
    for chunk in 0..13 {
        let entry = u64_at(&pm, 4096 + chunk as usize * 8);
        if chunk == 3 {
            assert!(entry < 13 + 128, "entry {entry}");
        } else {
            assert_eq!(entry, u64::MAX, "chunk {chunk}");
        }
    }
    // Logical map padding (13*8=104 .. 128) untouched.
    assert!(pm[4096 + 104..4096 + 128].iter().all(|&b| b == 0xFF));
    let index = u64_at(&pm, 4096 + 3 * 8);
    let base = 4096 + 128 + index as usize * 40;
    let size = le32(&pm, base);
    let reserved = le32(&pm, base + 4);
    assert!(size > 0 && size < 4096 * 3, "compressed size {size}");
    let used = size.div_ceil(4096) as usize;
    let units: Vec<u64> = (0..4).map(|k| u64_at(&pm, base + 8 + 8 * k)).collect();
    for (k, &u) in units.iter().enumerate() {
        if k < used {
            assert!((2..(13 + 128) * 4).contains(&u), "io unit {u}");
        } else {
            assert_eq!(u, u64::MAX, "unused slot {k}");
        }
    }
    // Every other chunk map untouched.
    for i in 0..13 + 128u64 {
        if i != index {
            let b = 4096 + 128 + i as usize * 40;
            assert!(pm[b..b + 40].iter().all(|&x| x == 0xFF), "map {i}");
        }
    }

    // The stored bytes: one zstd frame of exactly `size` bytes, decompressing to the data.
    let image = rig.backing.image();
    let mut stored = Vec::new();
    for &u in &units[..used] {
        stored.extend_from_slice(&image[u as usize * 4096..][..4096]);
    }
    stored.truncate(size as usize);
    assert_eq!(&stored[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    assert_eq!(
        zstd::zstd_safe::find_frame_compressed_size(&stored),
        Ok(size as usize),
        "exactly one frame"
    );
    let plain = zstd::bulk::decompress(&stored, 16384).unwrap();
    assert_eq!(plain, data);
    // Checksum word: crc32c of the stored bytes.
    assert_eq!(reserved, expected_checksum(&stored));
    assert_ne!(reserved, u32::MAX);

    let info = vol.info();
    assert_eq!(info.chunks_in_use, 1);
    assert_eq!(info.allocated_io_units, used as u64 + 2);
    check_stats(&vol, GEO, &layout.stored(&pm));
    assert_eq!(layout.stored(&pm).len(), 1);
    rig.unload(&vol).unwrap();
}

#[test]
fn incompressible_write_is_stored_raw() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    let data = Rng::new(1).bytes(16384);
    rig.write(&vol, 5 * 32, &data).unwrap();
    let s = stored_of(&rig, 5);
    assert_eq!(s.size, 16384);
    assert_eq!(s.io_units.len(), 4);
    let image = rig.backing.image();
    assert_eq!(s.bytes(&image, 4096), data, "raw io units in slot order");
    assert_eq!(s.checksum, expected_checksum(&data));
    assert_eq!(vol.info().allocated_io_units, 4 + 2);
    assert_eq!(
        (vol.stats().chunks_raw, vol.stats().stored_bytes),
        (1, 16384)
    );
    rig.unload(&vol).unwrap();
}

#[test]
fn partial_write_into_fresh_chunk_and_overwrite_is_never_in_place() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    // 1 KiB of text at block 4 of chunk 7; the rest of the chunk is zeros.
    let piece = text(9, 1024);
    rig.write(&vol, 7 * 32 + 4, &piece).unwrap();
    let first = stored_of(&rig, 7);
    let mut want = vec![0u8; 16384];
    want[2048..3072].copy_from_slice(&piece);
    let image = rig.backing.image();
    let plain = zstd::bulk::decompress(&first.bytes(&image, 4096), 16384).unwrap();
    assert_eq!(plain, want);
    assert_eq!(
        first.checksum,
        expected_checksum(&first.bytes(&image, 4096))
    );

    // Overwrite: a new chunk map and new io units; then the old ones are free again.
    let data = Rng::new(2).bytes(16384);
    rig.write(&vol, 7 * 32, &data).unwrap();
    let second = stored_of(&rig, 7);
    assert_ne!(second.index, first.index, "chunk map rewritten in place");
    for u in &second.io_units {
        assert!(
            !first.io_units.contains(u),
            "io unit {u} rewritten in place"
        );
    }
    assert_eq!(second.bytes(&rig.backing.image(), 4096), data);
    let info = vol.info();
    assert_eq!(info.chunks_in_use, 1);
    assert_eq!(info.allocated_io_units, 4 + 2);
    assert_eq!(rig.read_chunk(&vol, 7).unwrap(), data);
    rig.unload(&vol).unwrap();
}

#[test]
fn unload_and_load_keep_bytes() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    rig.write(&vol, 0, &text(1, 16384)).unwrap();
    rig.write(&vol, 12 * 32 + 31, &[0xEE; 512]).unwrap();
    let pm_before = rig.pm_persisted();
    let image_before = rig.backing.image();
    rig.unload(&vol).unwrap();
    let vol = rig.load().unwrap();
    assert_eq!(vol.params().uuid, UUID);
    assert_eq!(vol.info().chunks_in_use, 2);
    rig.unload(&vol).unwrap();
    // Load and unload with no I/O change nothing on the device or in the pm file.
    assert_eq!(rig.backing.image(), image_before);
    assert_eq!(rig.store.current(rig.pm_path()).unwrap(), pm_before);
}

#[test]
fn destroy_clears_signature_and_removes_pm() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init_plan(rig.plan(UUID)).unwrap();
    rig.write(&vol, 0, &text(1, 16384)).unwrap();
    rig.unload(&vol).unwrap();
    let before = rig.backing.image();
    rig.destroy().unwrap();
    assert!(rig.store.paths().is_empty());
    let after = rig.backing.image();
    assert!(after[..8].iter().all(|&b| b == 0), "signature still there");
    // Only the superblock changed.
    assert_eq!(after[4096..], before[4096..]);
    assert_eq!(errno_of(rig.load()), reduce::Errno::EILSEQ);
}

/// Records the buffer sizes each codec call sees.
#[derive(Clone, Default)]
struct Recorder {
    calls: std::rc::Rc<std::cell::RefCell<Vec<(bool, usize, usize)>>>,
}

impl reduce::SyncCodec for Recorder {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> reduce::Result<usize> {
        self.calls.borrow_mut().push((true, src.len(), dst.len()));
        reduce::ZstdCodec.compress_buf(src, dst)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> reduce::Result<usize> {
        self.calls.borrow_mut().push((false, src.len(), dst.len()));
        reduce::ZstdCodec.decompress_buf(src, dst)
    }
}

/// The format: compress gets a whole chunk into a chunk_size buffer; decompress gets
/// exactly compressed_size bytes (not the padded io units) into chunk_size bytes.
#[test]
fn codec_calls_get_exactly_the_bytes_they_need() {
    let rec = Recorder::default();
    let backing = MemBacking::new(512, GEO.blockcnt(), Mode::Immediate);
    let store = MemStore::new();
    let s = slot();
    Volume::init(
        InitPlan::new(GEO.params(), 512, GEO.blockcnt(), "/pm").unwrap(),
        reduce::Backend {
            backing: Box::new(backing.clone()),
            codec: Box::new(rec.clone()),
            store: Box::new(store.clone()),
        },
        filler(&s),
    );
    let vol = wait_on(&backing, &s).unwrap();
    let write = |offset: u64, data: Vec<u8>| {
        let s = slot();
        let f = filler(&s);
        vol.writev(
            offset,
            (data.len() / 512) as u64,
            vec![data],
            move |r, _| f(r),
        );
        wait_on(&backing, &s).unwrap();
    };
    write(0, text(1, 16384));
    assert_eq!(*rec.calls.borrow(), vec![(true, 16384, 16384)]);
    rec.calls.borrow_mut().clear();
    // A partial write into a compressed chunk: decompress, then compress the whole.
    write(5, vec![1; 1024]);
    let pm_size = {
        let pm = store.persisted(vol.pm_path()).unwrap();
        GEO.pm().stored(&pm)[0].size
    };
    let calls = rec.calls.borrow().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1], (true, 16384, 16384));
    let (is_compress, src_len, dst_len) = calls[0];
    assert!(!is_compress);
    assert_eq!(dst_len, 16384);
    // The size stored before this write (the frame of text(1)):
    let first = zstd::bulk::compress(&text(1, 16384), 1).unwrap().len();
    assert_eq!(src_len, first, "decompress got more than the frame");
    rec.calls.borrow_mut().clear();
    // The partial write left the chunk in the cache: dropped (resizing), so the read
    // decompresses it.
    vol.set_cache_chunks(8).unwrap();
    let s2 = slot();
    let f = filler(&s2);
    vol.readv(0, 32, vec![vec![0; 16384]], move |r, _| f(r));
    wait_on(&backing, &s2).unwrap();
    assert_eq!(*rec.calls.borrow(), vec![(false, pm_size as usize, 16384)]);
}
