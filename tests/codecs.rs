//! The built-in codecs in volumes: LZ4 and zstd at chosen levels store and read back in
//! both completion modes; the superblock records the codec where later SPDK keeps it
//! (`comp_level` u32 @48, `comp_algo` u8 @52), checked byte by byte against values
//! written out here; stored chunks decode with decoders independent of the library's
//! (an LZ4 block decoder written from the block format, the zstd crate).

mod common;

use common::*;
use reduce::testkit::*;
use reduce::{
    Backend, Codec, CompAlgo, Compression, Errno, Lz4Codec, Params, Result, SyncCodec, Volume,
    ZstdCodec,
};

const GEO: Geo = Geo::new(512, 4096, 16384, 512, 24);

fn backend(rig: &Rig, codec: impl Codec + 'static) -> Backend {
    Backend {
        backing: Box::new(rig.backing.clone()),
        codec: Box::new(codec),
        store: Box::new(rig.store.clone()),
    }
}

fn init(rig: &Rig, params: Params, codec: impl Codec + 'static) -> Result<Volume> {
    let plan = reduce::InitPlan::new(params, GEO.blocklen, GEO.blockcnt(), "/pm").unwrap();
    let s = slot();
    Volume::init(plan, backend(rig, codec), filler(&s));
    rig.wait(&s)
}

fn load(rig: &Rig, codec: impl Codec + 'static) -> Result<Volume> {
    let s = slot();
    Volume::load(backend(rig, codec), filler(&s));
    rig.wait(&s)
}

/// Bytes 48..56 of both superblock copies: comp_level (LE u32), comp_algo, 3 zeros.
fn comp_bytes(rig: &Rig) -> [u8; 8] {
    let image = rig.backing.image();
    let pm = rig.pm_persisted();
    assert_eq!(&pm[..4096], &image[..4096], "superblock copies differ");
    assert!(image[56..4096].iter().all(|&b| b == 0), "reserved bytes");
    image[48..56].try_into().unwrap()
}

/// Decodes one LZ4 block (the LZ4 block format: sequences of a token, literals, a
/// 2-byte little-endian offset and a match; the last sequence has literals only).
fn lz4_block_decode(mut src: &[u8]) -> Vec<u8> {
    fn length(src: &mut &[u8], nibble: u8) -> usize {
        let mut len = usize::from(nibble);
        if nibble == 15 {
            loop {
                let b = src[0];
                *src = &src[1..];
                len += usize::from(b);
                if b != 255 {
                    break;
                }
            }
        }
        len
    }
    let mut out = Vec::new();
    loop {
        let token = src[0];
        src = &src[1..];
        let literals = length(&mut src, token >> 4);
        out.extend_from_slice(&src[..literals]);
        src = &src[literals..];
        if src.is_empty() {
            return out;
        }
        let offset = usize::from(u16::from_le_bytes([src[0], src[1]]));
        src = &src[2..];
        let len = length(&mut src, token & 15) + 4;
        assert!(offset > 0 && offset <= out.len(), "offset {offset}");
        for _ in 0..len {
            out.push(out[out.len() - offset]);
        }
    }
}

#[test]
fn lz4_blocks_follow_the_block_format() {
    let src: Vec<u8> = (0..16384u32)
        .map(|i| match i % 4096 {
            0..1000 => b'a',
            1000..2000 => (i % 251) as u8,
            _ => (i / 7) as u8,
        })
        .collect();
    let mut dst = vec![0u8; 16384];
    let n = Lz4Codec.compress_buf(&src, &mut dst).unwrap();
    assert!(n < 16384 / 2, "{n}");
    assert_eq!(lz4_block_decode(&dst[..n]), src);
    let mut out = vec![0u8; 16384];
    assert_eq!(Lz4Codec.decompress_buf(&dst[..n], &mut out).unwrap(), 16384);
    assert_eq!(out, src);
}

#[test]
fn lz4_incompressible_data_does_not_fit_but_encodes_with_room() {
    let mut rng = Rng::new(7);
    let src: Vec<u8> = (0..16384).map(|_| rng.below(256) as u8).collect();
    let err = Lz4Codec
        .compress_buf(&src, &mut vec![0u8; 16384])
        .unwrap_err();
    assert_eq!(err, Errno::ENOSPC);
    // With room for the worst case it fits, as a block of mostly literals.
    let mut big = vec![0u8; 16384 + 16384 / 255 + 16];
    let n = Lz4Codec.compress_buf(&src, &mut big).unwrap();
    assert!(n > 16384);
    assert_eq!(lz4_block_decode(&big[..n]), src);
}

/// Writes a mix of whole chunks and partial writes of every kind of data.
fn fill(rig: &Rig, vol: &Volume, shadow: &mut Shadow, seed: u64) {
    let mut rng = Rng::new(seed);
    let bpc = GEO.blocks_per_chunk();
    for chunk in 0..GEO.chunks {
        let data = any_data(&mut rng, 16384);
        rig.write(vol, chunk * bpc, &data).unwrap();
        shadow.write(chunk * bpc, &data);
    }
    for _ in 0..40 {
        let chunk = rng.below(GEO.chunks);
        let (offset, length) = range_in_chunk(&mut rng, GEO, chunk);
        let data = any_data(&mut rng, length as usize * 512);
        rig.write(vol, offset, &data).unwrap();
        shadow.write(offset, &data);
    }
}

/// Every stored chunk, decoded by `decode` (raw when stored whole), is the shadow's.
fn check_stored(rig: &Rig, shadow: &Shadow, decode: impl Fn(&[u8]) -> Vec<u8>) -> usize {
    let image = rig.backing.image();
    let bpc = GEO.blocks_per_chunk();
    let mut compressed = 0;
    for s in GEO.pm().stored(&rig.pm_persisted()) {
        let bytes = s.bytes(&image, GEO.io_unit);
        let plain = if s.size == GEO.chunk {
            bytes
        } else {
            compressed += 1;
            decode(&bytes)
        };
        assert_eq!(
            plain,
            shadow.expect(s.chunk * bpc, bpc),
            "chunk {}",
            s.chunk
        );
    }
    compressed
}

#[test]
fn lz4_volumes_store_raw_blocks_and_reload() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = init(&rig, GEO.params(), Lz4Codec).unwrap();
        let want = Compression {
            algo: CompAlgo::LZ4,
            level: 1,
        };
        assert_eq!(vol.params().compression, want);
        assert_eq!(comp_bytes(&rig), [1, 0, 0, 0, 1, 0, 0, 0]);
        let described = vol.describe();
        assert!(described.contains("\tcomp_algo = 1 (lz4)\n"), "{described}");
        assert!(described.contains("\tcomp_level = 1\n"), "{described}");

        let mut shadow = Shadow::new(GEO);
        fill(&rig, &vol, &mut shadow, 11);
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
        let compressed = check_stored(&rig, &shadow, lz4_block_decode);
        assert!(
            compressed > GEO.chunks as usize / 3,
            "{compressed} compressed chunks"
        );

        let vol = load(&rig, Lz4Codec).unwrap();
        assert_eq!(vol.params().compression, want);
        shadow.verify(&rig, &vol);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn lz4_through_a_deferred_codec() {
    // The codec completing later too: a double around the built-in LZ4.
    let rig = Rig::new(
        GEO,
        Mode::Deferred,
        CodecKind::Test(TestCodec::new(Lz4Codec, Mode::Deferred)),
    );
    let vol = rig.init();
    let mut shadow = Shadow::new(GEO);
    fill(&rig, &vol, &mut shadow, 12);
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    assert!(check_stored(&rig, &shadow, lz4_block_decode) > 0);
}

#[test]
fn zstd_levels_are_recorded_and_read_back() {
    for (level, mode) in [
        (1, Mode::Immediate),
        (19, Mode::Deferred),
        (22, Mode::Immediate),
    ] {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let codec = ZstdCodec::new(level).unwrap();
        let vol = init(&rig, GEO.params(), codec).unwrap();
        assert_eq!(
            comp_bytes(&rig),
            [level as u8, 0, 0, 0, 0x80, 0, 0, 0],
            "level {level}"
        );
        let mut shadow = Shadow::new(GEO);
        fill(&rig, &vol, &mut shadow, u64::from(level));
        rig.unload(&vol).unwrap();
        let decode = |b: &[u8]| zstd::bulk::decompress(b, 16384).unwrap();
        assert!(check_stored(&rig, &shadow, decode) > 0);
        // Any level's frames read back with the default codec.
        let vol = load(&rig, ZstdCodec).unwrap();
        assert_eq!(
            vol.params().compression,
            Compression {
                algo: CompAlgo::ZSTD,
                level
            }
        );
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn a_codec_that_does_not_say_records_the_params_or_zeros() {
    // RleCodec reports nothing: zeros, as the original wrote.
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Rle);
    let vol = init(&rig, GEO.params(), RleCodec).unwrap();
    assert_eq!(comp_bytes(&rig), [0; 8]);
    assert!(vol.params().compression.is_unrecorded());
    rig.unload(&vol).unwrap();

    // The caller may say what its codec is.
    let said = Compression {
        algo: CompAlgo::LZ4,
        level: 0x0001_0203,
    };
    let params = Params {
        compression: said,
        ..GEO.params()
    };
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Rle);
    let vol = init(&rig, params, RleCodec).unwrap();
    assert_eq!(comp_bytes(&rig), [3, 2, 1, 0, 1, 0, 0, 0]);
    assert_eq!(vol.params().compression, said);
    rig.unload(&vol).unwrap();

    // A codec that says wins over the params.
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = init(&rig, params, ZstdCodec::new(5).unwrap()).unwrap();
    assert_eq!(comp_bytes(&rig), [5, 0, 0, 0, 0x80, 0, 0, 0]);
    rig.unload(&vol).unwrap();
}

#[test]
fn any_recorded_compression_loads_and_copies_must_agree() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init();
    rig.write(&vol, 0, &text(1, 16384)).unwrap();
    rig.unload(&vol).unwrap();
    let path = rig.pm_path();

    // What later SPDK may have written: deflate at level 5, an algorithm unknown here.
    for (bytes, want) in [
        (
            [5, 0, 0, 0, 0],
            Compression {
                algo: CompAlgo::DEFLATE,
                level: 5,
            },
        ),
        (
            [0xFF, 0xFF, 1, 0, 0x42],
            Compression {
                algo: CompAlgo(0x42),
                level: 0x1FFFF,
            },
        ),
    ] {
        rig.backing.poke(48, &bytes);
        let mut pm = rig.store.current(&path).unwrap();
        pm[48..53].copy_from_slice(&bytes);
        rig.store.insert(&path, pm);
        let vol = rig.load().unwrap();
        assert_eq!(vol.params().compression, want);
        assert_eq!(rig.read(&vol, 0, 32).unwrap(), text(1, 16384));
        rig.unload(&vol).unwrap();
    }
    assert_eq!(CompAlgo(0x42).to_string(), "66 (unknown)");
    assert_eq!(CompAlgo::ZSTD.to_string(), "128 (zstd)");

    // The bytes are part of the superblock both copies must share.
    rig.backing.poke(52, &[1]);
    assert_eq!(errno_of(rig.load()), Errno::EILSEQ);
}
