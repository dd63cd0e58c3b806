//! Arbitrary operation scripts against a shadow model. The first input byte picks the
//! completion mode (device and, for the codec double, codec) and the codec: the inline
//! zstd codec (so whole-chunk pieces in one segment take the zero-copy path) or the
//! codec double (completing inside the call or later). Then each 6 input bytes are one
//! step: a write or read (ranges crossing chunks, one or several segments of any sizes,
//! or whole chunks one segment each), an unmap, delivering some completions, draining,
//! resizing the chunk cache, switching the completion mode mid-flight, or unload and
//! load. Requests stay in flight until delivered, so a deferred device builds groups.
//!
//! Requests to one chunk run in submission order, so the model changes when a request
//! is submitted and a read expects the model as it was then. At the end: every request
//! completed once, the checker is clean, the statistics agree with the model, and the
//! volume reads back as the model.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use reduce::Volume;
use reduce::testkit::*;

const CHUNKS: u64 = 16;
const BPC: u64 = 8;
const LBS: usize = 512;
const CHUNK_BYTES: usize = BPC as usize * LBS;
const BLOCKS: u64 = CHUNKS * BPC;
/// The longest request, in chunks' worth of blocks.
const MAX_SPAN: u64 = 3;
const STEP: usize = 6;

/// Requests completed since the last load, by kind, and those still owed a callback.
#[derive(Default)]
struct Counts {
    reads: Cell<u64>,
    writes: Cell<u64>,
    unmaps: Cell<u64>,
    outstanding: Cell<u64>,
}

impl Counts {
    fn done(&self, kind: &Cell<u64>) {
        kind.set(kind.get() + 1);
        self.outstanding.set(self.outstanding.get() - 1);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&config, script)) = input.split_first() else {
        return;
    };
    let mut mode = mode_of(config);
    let codec = if config & 2 == 0 {
        CodecKind::Zstd
    } else {
        CodecKind::test(mode)
    };
    let rig = Rig::new(Geo::small(CHUNKS), mode, codec);
    let mut vol = rig.init();
    // Every io unit is either in use or free once the volume is idle.
    let io_units = vol.stats().io_units_free;
    let mut model = vec![0u8; BLOCKS as usize * LBS];
    let counts = Rc::new(Counts::default());
    for (step, op) in script.chunks_exact(STEP).enumerate().take(2000) {
        let seed = (step as u64) << 8 | u64::from(op[5]);
        match op[0] % 10 {
            0 | 1 => {
                let (offset, blocks, lens) = shape(op, seed);
                let range = bytes_of(offset, blocks);
                let bytes = content(op[5], seed, range.len());
                model[range].copy_from_slice(&bytes);
                let segs = cut(&bytes, &lens);
                counts.outstanding.set(counts.outstanding.get() + 1);
                let c = counts.clone();
                vol.writev(offset, blocks, segs, move |r, segs| {
                    r.expect("write");
                    assert!(segs.concat() == bytes, "write handed back other buffers");
                    c.done(&c.writes);
                });
            }
            2 | 3 => {
                let (offset, blocks, lens) = shape(op, seed);
                let want = model[bytes_of(offset, blocks)].to_vec();
                let segs = lens.iter().map(|&n| vec![0xA5; n]).collect();
                counts.outstanding.set(counts.outstanding.get() + 1);
                let c = counts.clone();
                vol.readv(offset, blocks, segs, move |r, segs| {
                    r.expect("read");
                    let got = segs.concat();
                    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                        panic!("read of {blocks} blocks at {offset}: byte {at} differs");
                    }
                    c.done(&c.reads);
                });
            }
            4 => {
                let (offset, blocks) = range(op);
                model[bytes_of(offset, blocks)].fill(0);
                counts.outstanding.set(counts.outstanding.get() + 1);
                let c = counts.clone();
                vol.unmap(offset, blocks, move |r| {
                    r.expect("unmap");
                    c.done(&c.unmaps);
                });
            }
            5 => {
                for _ in 0..op[1] % 32 {
                    rig.poll_one();
                }
            }
            6 => rig.drain(),
            7 => vol
                .set_cache_chunks(u64::from(op[1] % 10))
                .expect("cache size"),
            8 => {
                // Out of order completions: what is queued stays queued, new operations
                // complete inside the call (or the other way round).
                mode = mode_of(op[1]);
                rig.set_mode(mode);
            }
            _ => {
                rig.drain();
                assert_eq!(counts.outstanding.get(), 0, "callbacks owed after a drain");
                check_stats(&vol, &model, io_units, &counts);
                rig.unload(&vol).expect("unload");
                vol = rig.load().expect("load");
                for kind in [&counts.reads, &counts.writes, &counts.unmaps] {
                    kind.set(0);
                }
                mode = mode_of(op[1]);
                rig.set_mode(mode);
            }
        }
    }
    rig.drain();
    assert_eq!(counts.outstanding.get(), 0, "callbacks owed after a drain");
    assert!(rig.check(&vol).expect("check").is_clean());
    check_stats(&vol, &model, io_units, &counts);
    for chunk in 0..CHUNKS {
        let bytes = rig.read(&vol, chunk * BPC, BPC).expect("final read");
        assert!(
            bytes == model[chunk as usize * CHUNK_BYTES..][..CHUNK_BYTES],
            "chunk {chunk}"
        );
    }
});

fn mode_of(byte: u8) -> Mode {
    if byte & 1 == 0 {
        Mode::Immediate
    } else {
        Mode::Deferred
    }
}

/// A range of up to [`MAX_SPAN`] chunks' worth of blocks, anywhere in the volume.
fn range(op: &[u8]) -> (u64, u64) {
    let offset = u64::from(u16::from_le_bytes([op[1], op[2]])) % BLOCKS;
    let blocks = 1 + u64::from(op[3]) % (MAX_SPAN * BPC).min(BLOCKS - offset);
    (offset, blocks)
}

/// A request's range and its segments' byte lengths: whole chunks one segment each
/// (the zero-copy path), one segment, or up to 4 segments cut anywhere.
fn shape(op: &[u8], seed: u64) -> (u64, u64, Vec<usize>) {
    let (offset, blocks) = range(op);
    match op[4] % 4 {
        0 => {
            let first = offset / BPC;
            let chunks = (1 + u64::from(op[3]) % MAX_SPAN).min(CHUNKS - first);
            (
                first * BPC,
                chunks * BPC,
                vec![CHUNK_BYTES; chunks as usize],
            )
        }
        1 => (offset, blocks, vec![blocks as usize * LBS]),
        _ => {
            let total = blocks as usize * LBS;
            let lens = split_lens(&mut Rng::new(seed), total, 1 + usize::from(op[4] >> 2) % 4);
            (offset, blocks, lens)
        }
    }
}

fn bytes_of(offset: u64, blocks: u64) -> std::ops::Range<usize> {
    offset as usize * LBS..(offset + blocks) as usize * LBS
}

/// Zeros (a chunk left all zeros is freed), incompressible, compressible, or mostly
/// zeros.
fn content(pick: u8, seed: u64, n: usize) -> Vec<u8> {
    match pick % 4 {
        0 => vec![0; n],
        1 => data(seed, n),
        2 => text(seed, n),
        _ => {
            let mut v = vec![0; n];
            v[(seed as usize * 131) % n] = pick | 1;
            v
        }
    }
}

fn cut(bytes: &[u8], lens: &[usize]) -> Vec<Vec<u8>> {
    let mut rest = bytes;
    lens.iter()
        .map(|&n| {
            let (seg, tail) = rest.split_at(n);
            rest = tail;
            seg.to_vec()
        })
        .collect()
}

/// The statistics of an idle volume against the model: a chunk is stored exactly when
/// the model holds anything but zeros there, in at least one io unit and at most a
/// chunk's worth; no io unit is lost; every completed request is counted, none failed.
fn check_stats(vol: &Volume, model: &[u8], io_units: u64, counts: &Counts) {
    let st = vol.stats();
    let nonzero = model
        .chunks(CHUNK_BYTES)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64;
    let per_chunk = (CHUNK_BYTES / 1024) as u64;
    assert_eq!(st.chunks_in_use, nonzero, "chunks in use: {st:?}");
    assert!(st.chunks_raw <= nonzero, "raw chunks: {st:?}");
    assert!(
        (nonzero..=nonzero * per_chunk).contains(&st.io_units_in_use),
        "io units in use: {st:?}"
    );
    assert_eq!(
        st.io_units_in_use + st.io_units_free,
        io_units,
        "io units: {st:?}"
    );
    assert!(
        st.stored_bytes <= nonzero * CHUNK_BYTES as u64 && st.stored_bytes >= nonzero,
        "stored bytes: {st:?}"
    );
    assert_eq!(
        (st.reads, st.writes, st.unmaps, st.errors),
        (
            counts.reads.get(),
            counts.writes.get(),
            counts.unmaps.get(),
            0
        ),
        "requests counted: {st:?}"
    );
}
