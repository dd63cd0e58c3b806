//! Early abort: the built-in zstd codec refuses incompressible chunks (`ENOSPC`, as when
//! the frame does not fit) after a quick probe instead of compressing them in full, and
//! compresses everything else exactly as zstd alone does. In a volume, refused chunks
//! are stored raw and read back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reduce::testkit::*;
use reduce::{Errno, SyncCodec, ZstdCodec};

const CHUNK: usize = 16384;
const GEO: Geo = Geo::new(512, 4096, 16384, 512, 24);

/// The quickest of a few runs of `f`, to see past a busy machine.
fn quickest(mut f: impl FnMut()) -> Duration {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn random_chunks_are_refused_without_compressing() {
    let mut rng = Rng::new(1);
    let chunks: Vec<Vec<u8>> = (0..16).map(|_| rng.bytes(CHUNK)).collect();
    let mut dst = vec![0u8; CHUNK];
    for level in [1, 3, 19] {
        let codec = ZstdCodec::new(level).unwrap();
        for c in &chunks {
            assert_eq!(codec.compress_buf(c, &mut dst), Err(Errno::ENOSPC.into()));
        }
    }
    // Quickly: at level 19 zstd alone takes far longer on these chunks than the probe,
    // even with the probe unoptimised in a debug build.
    let codec = ZstdCodec::new(19).unwrap();
    let mut full = zstd::bulk::Compressor::new(19).unwrap();
    let probed = quickest(|| {
        for c in &chunks {
            assert!(codec.compress_buf(c, &mut dst).is_err());
        }
    });
    let alone = quickest(|| {
        for c in &chunks {
            assert!(full.compress_to_buffer(c, &mut dst[..]).is_err());
        }
    });
    assert!(
        probed * 2 < alone,
        "probe {probed:?}, zstd in full {alone:?}"
    );
    // With room for more than the input, the frame zstd makes is still returned.
    let mut room = vec![0u8; zstd::zstd_safe::compress_bound(CHUNK)];
    let n = ZstdCodec.compress_buf(&chunks[0], &mut room).unwrap();
    assert!(n > CHUNK);
    assert_eq!(
        zstd::bulk::decompress(&room[..n], CHUNK).unwrap(),
        chunks[0]
    );
}

/// Chunks of compressible data, generated and from this machine's files.
fn compressible() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(2);
    let mut chunks: Vec<Vec<u8>> = (0..32).map(|_| any_data(&mut rng, CHUNK)).collect();
    chunks.push(prose(&mut rng, CHUNK));
    chunks.push(text(3, CHUNK));
    // Random bytes in small hex and base64 alphabets: no repeats for LZ4 to find, but
    // few bits a byte.
    for bits in [4, 6] {
        let mask = (1u8 << bits) - 1;
        chunks.push(rng.bytes(CHUNK).iter().map(|b| b'0' + (b & mask)).collect());
    }
    // Random bytes repeated: uniform bytes, but repeats.
    chunks.push(rng.bytes(CHUNK / 4).repeat(4));
    for path in ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/share/doc"] {
        let Ok(dir) = std::fs::read_dir(path) else {
            continue;
        };
        let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()).take(40) {
            if let Ok(bytes) = std::fs::read(file) {
                chunks.extend(bytes.chunks_exact(CHUNK).take(4).map(<[u8]>::to_vec));
            }
        }
    }
    chunks
}

#[test]
fn compressible_chunks_are_compressed_exactly_as_zstd_does() {
    let chunks = compressible();
    let mut dst = vec![0u8; CHUNK];
    let mut plain = vec![0u8; CHUNK];
    let (mut same, mut refused) = (0, 0);
    for level in [1, 3] {
        let codec = ZstdCodec::new(level).unwrap();
        let mut alone = zstd::bulk::Compressor::new(level as i32).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            let want = alone.compress_to_buffer(c, &mut plain[..]);
            match (codec.compress_buf(c, &mut dst), want) {
                (Ok(n), Ok(m)) => {
                    assert_eq!(dst[..n], plain[..m], "chunk {i} level {level}");
                    same += 1;
                }
                (Err(e), Ok(m)) => {
                    assert_eq!(e, Errno::ENOSPC);
                    // A refused chunk that zstd could compress saves less than an io
                    // unit of 4 KiB: the volume would have stored it raw anyway.
                    assert!(m > CHUNK - 4096, "chunk {i} refused, zstd makes {m} B");
                    refused += 1;
                }
                (Err(_), Err(_)) => {}
                (Ok(n), Err(_)) => panic!("chunk {i}: {n} B where zstd fails"),
            }
        }
    }
    assert!(same > 60, "{same} compressed, {refused} refused");
}

/// Writes random and compressible chunks, checks where they are stored raw, reads back.
fn stored_raw(rig: &Rig) {
    let vol = rig.init();
    let mut shadow = Shadow::new(GEO);
    let mut rng = Rng::new(4);
    let bpc = GEO.blocks_per_chunk();
    for chunk in 0..GEO.chunks {
        let data = if chunk % 2 == 0 {
            rng.bytes(CHUNK)
        } else {
            prose(&mut rng, CHUNK)
        };
        rig.write(&vol, chunk * bpc, &data).unwrap();
        shadow.write(chunk * bpc, &data);
    }
    shadow.verify(rig, &vol);
    rig.unload(&vol).unwrap();
    let image = rig.backing.image();
    let stored = GEO.pm().stored(&rig.pm_persisted());
    assert_eq!(stored.len() as u64, GEO.chunks);
    for s in stored {
        let bytes = s.bytes(&image, GEO.io_unit);
        let want = shadow.expect(s.chunk * bpc, bpc);
        if s.chunk % 2 == 0 {
            assert_eq!(s.size, GEO.chunk, "random chunk {} not raw", s.chunk);
            assert_eq!(bytes, want, "chunk {}", s.chunk);
        } else {
            assert!(s.size < GEO.chunk, "prose chunk {} raw", s.chunk);
            assert_eq!(zstd::bulk::decompress(&bytes, CHUNK).unwrap(), want);
        }
    }
    let vol = rig.load().unwrap();
    shadow.verify(rig, &vol);
    rig.unload(&vol).unwrap();
}

#[test]
fn random_chunks_are_stored_raw_and_read_back() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        stored_raw(&Rig::new(GEO, mode, CodecKind::Zstd));
        // A codec completing later, around the built-in zstd.
        stored_raw(&Rig::new(
            GEO,
            mode,
            CodecKind::Test(TestCodec::new(ZstdCodec, Mode::Deferred)),
        ));
    }
}
