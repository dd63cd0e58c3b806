//! Randomized reads and writes against a shadow copy of the volume, in both completion
//! modes and several geometries: partial chunks, multi-segment buffers, many requests
//! to the same chunk submitted together, more than MAX_ACTIVE in flight, overwrites,
//! unload + reload in the middle and at the end. After every batch the pm file is
//! parsed independently (on-disk format) and checked against `info()`; at the end every
//! stored chunk's bytes on the device are decoded and compared with the shadow.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use common::*;
use reduce::Volume;
use reduce::testkit::*;

/// What the batch's callbacks report.
#[derive(Default)]
struct Log {
    completed: usize,
    failures: Vec<String>,
    /// Completion order per chunk (sequence numbers).
    order: HashMap<u64, Vec<usize>>,
}

struct Run {
    rig: Rig,
    vol: Volume,
    shadow: Shadow,
    rng: Rng,
    seq: usize,
    ops: usize,
    max_in_flight: usize,
    hot_batches: usize,
}

impl Run {
    fn new(geo: Geo, mode: Mode, seed: u64) -> Run {
        Run::with_rig(Rig::new(geo, mode, CodecKind::Zstd), seed)
    }

    fn with_rig(rig: Rig, seed: u64) -> Run {
        let geo = rig.geo;
        let vol = rig.init();
        Run {
            shadow: Shadow::new(geo),
            rng: Rng::new(seed),
            vol,
            rig,
            seq: 0,
            ops: 0,
            max_in_flight: 0,
            hot_batches: 0,
        }
    }

    fn geo(&self) -> Geo {
        self.rig.geo
    }

    /// Submits one request; its expected outcome comes from the shadow now.
    fn submit(&mut self, log: &Rc<RefCell<Log>>, chunk: u64) {
        let geo = self.geo();
        let (offset, length) = range_in_chunk(&mut self.rng, geo, chunk);
        let bytes = length as usize * geo.lbs as usize;
        let seq = self.seq;
        self.seq += 1;
        self.ops += 1;
        let log = log.clone();
        if self.rng.chance(55) {
            let data = any_data(&mut self.rng, bytes);
            let segs = split(&mut self.rng, &data, 6);
            self.shadow.write(offset, &data);
            self.vol.writev(offset, length, segs, move |r, segs| {
                let mut l = log.borrow_mut();
                l.completed += 1;
                l.order.entry(chunk).or_default().push(seq);
                if let Err(e) = r {
                    l.failures
                        .push(format!("write #{seq} @{offset}+{length}: {e:?}"));
                } else if segs.concat() != data {
                    l.failures
                        .push(format!("write #{seq}: buffers not returned intact"));
                }
            });
        } else {
            let want = self.shadow.expect(offset, length).to_vec();
            let lens = split_lens(&mut self.rng, bytes, 6);
            let segs = lens.iter().map(|&n| vec![0x5A; n]).collect();
            self.vol.readv(offset, length, segs, move |r, segs| {
                let mut l = log.borrow_mut();
                l.completed += 1;
                l.order.entry(chunk).or_default().push(seq);
                match r {
                    Err(e) => l
                        .failures
                        .push(format!("read #{seq} @{offset}+{length}: {e:?}")),
                    Ok(()) => {
                        let got = segs.concat();
                        if got != want {
                            let at = got.iter().zip(&want).position(|(a, b)| a != b);
                            l.failures.push(format!(
                                "read #{seq} @{offset}+{length}: differs at byte {at:?}"
                            ));
                        }
                    }
                }
            });
        }
    }

    /// One batch: submit `n` requests (all to a few hot chunks, or spread), then drain.
    fn batch(&mut self, n: usize) {
        let geo = self.geo();
        let log = Rc::new(RefCell::new(Log::default()));
        let hot: Vec<u64> = if self.rng.chance(40) {
            self.hot_batches += 1;
            let k = self.rng.range(1, 3);
            (0..k).map(|_| self.rng.below(geo.chunks)).collect()
        } else {
            Vec::new()
        };
        for _ in 0..n {
            let chunk = if hot.is_empty() {
                self.rng.below(geo.chunks)
            } else {
                hot[self.rng.below(hot.len() as u64) as usize]
            };
            self.submit(&log, chunk);
        }
        let in_flight = self.vol.info().outstanding;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        self.rig.drain();
        let l = log.borrow();
        assert!(l.failures.is_empty(), "failures: {:#?}", l.failures);
        assert_eq!(l.completed, n, "completions");
        for (chunk, seqs) in &l.order {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "chunk {chunk}: completions out of submission order: {seqs:?}"
            );
        }
        assert_eq!(self.vol.info().outstanding, 0);
        self.check_pm();
    }

    /// Submits `n` requests one by one, delivering a random number of completions (in
    /// a random mix of codec and device order) between submissions, then drains.
    fn interleaved_batch(&mut self, n: usize) {
        let geo = self.geo();
        let log = Rc::new(RefCell::new(Log::default()));
        let hot = self.rng.below(geo.chunks);
        for _ in 0..n {
            let chunk = if self.rng.chance(50) {
                hot
            } else {
                self.rng.below(geo.chunks)
            };
            self.submit(&log, chunk);
            self.max_in_flight = self.max_in_flight.max(self.vol.info().outstanding);
            let polls = if self.rng.chance(30) {
                self.rng.below(6)
            } else {
                0
            };
            for _ in 0..polls {
                let (codec, backing) = (&self.rig.codec, &self.rig.backing);
                let codec_first = self.rng.chance(50);
                for use_codec in [codec_first, !codec_first] {
                    let delivered = if use_codec {
                        codec.poll_one()
                    } else {
                        backing.poll_one()
                    };
                    if delivered {
                        break;
                    }
                }
            }
        }
        self.rig.drain();
        let l = log.borrow();
        assert!(l.failures.is_empty(), "failures: {:#?}", l.failures);
        assert_eq!(l.completed, n, "completions");
        for (chunk, seqs) in &l.order {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "chunk {chunk}: completions out of submission order: {seqs:?}"
            );
        }
        assert_eq!(self.vol.info().outstanding, 0);
        self.check_pm();
    }

    /// `info()` against the persisted pm, parsed independently.
    fn check_pm(&self) {
        let pm = self.rig.pm_persisted();
        assert_eq!(pm.len(), self.geo().pm().size);
        let stored = self.geo().pm().stored(&pm);
        let info = self.vol.info();
        assert_eq!(info.chunks_in_use, stored.len() as u64);
        let units: usize = stored.iter().map(|s| s.io_units.len()).sum();
        assert_eq!(
            info.allocated_io_units,
            units as u64 + self.geo().reserved_io_units(),
            "io units leaked"
        );
        check_stats(&self.vol, self.geo(), &stored);
    }

    fn reload(&mut self, mode: Mode) {
        self.rig.unload(&self.vol).unwrap();
        self.rig.backing.set_mode(mode);
        self.vol = self.rig.load().unwrap();
        self.check_pm();
        self.shadow.verify(&self.rig, &self.vol);
    }

    /// Decodes every stored chunk straight from the device image and compares with the
    /// shadow; returns (raw chunks, compressed chunks).
    fn check_device(&self) -> (usize, usize) {
        let geo = self.geo();
        let image = self.rig.backing.image();
        let pm = self.rig.pm_persisted();
        let (mut raw, mut packed) = (0, 0);
        let mut stored_chunks = std::collections::HashSet::new();
        for s in geo.pm().stored(&pm) {
            stored_chunks.insert(s.chunk);
            let bytes = s.bytes(&image, geo.io_unit);
            assert_eq!(s.checksum, expected_checksum(&bytes), "chunk {}", s.chunk);
            let plain = if s.size == geo.chunk {
                raw += 1;
                bytes
            } else {
                packed += 1;
                assert!(s.io_units.len() < geo.iou_per_chunk() as usize);
                zstd::bulk::decompress(&bytes, geo.chunk as usize).unwrap()
            };
            let bpc = geo.blocks_per_chunk();
            assert!(
                plain == self.shadow.expect(s.chunk * bpc, bpc),
                "chunk {} on the device differs from the shadow",
                s.chunk
            );
        }
        // Chunks never written read as zeros in the shadow too.
        for chunk in 0..geo.chunks {
            if !stored_chunks.contains(&chunk) {
                let bpc = geo.blocks_per_chunk();
                assert!(self.shadow.expect(chunk * bpc, bpc).iter().all(|&b| b == 0));
            }
        }
        (raw, packed)
    }
}

fn scenario(geo: Geo, mode: Mode, seed: u64, batches: usize) {
    let mut run = Run::new(geo, mode, seed);
    let other = match mode {
        Mode::Immediate => Mode::Deferred,
        Mode::Deferred => Mode::Immediate,
    };
    for b in 0..batches {
        let n = match mode {
            // Deferred: often more than MAX_ACTIVE at once.
            Mode::Deferred if b % 3 == 0 => run.rng.range(MAX_ACTIVE as u64 + 1, 400) as usize,
            _ => run.rng.range(1, 120) as usize,
        };
        run.batch(n);
        if b == batches / 2 {
            // Reload in the middle (in the other mode for a while), then back.
            run.reload(other);
            run.batch(60);
            run.reload(mode);
        }
    }
    run.reload(mode);
    let (raw, packed) = run.check_device();
    assert!(raw > 0, "no chunk took the raw path");
    assert!(packed > 0, "no chunk was stored compressed");
    if mode == Mode::Deferred {
        assert!(
            run.max_in_flight > MAX_ACTIVE,
            "never more than MAX_ACTIVE in flight ({})",
            run.max_in_flight
        );
    }
    assert!(run.hot_batches > 0);
    run.rig.unload(&run.vol).unwrap();
    eprintln!(
        "{geo:?} {mode:?}: {} ops, max in flight {}, raw {raw}, compressed {packed}",
        run.ops, run.max_in_flight
    );
}

const G_512_4K_16K_512: Geo = Geo::new(512, 4096, 16384, 512, 48);
const G_4K_4K_16K_4K: Geo = Geo::new(4096, 4096, 16384, 4096, 48);
const G_512_16K_64K_4K: Geo = Geo::new(512, 16384, 65536, 4096, 24);
const G_512_512_2K_512: Geo = Geo::new(512, 512, 2048, 512, 96);

#[test]
fn shadow_512_4k_16k_512_immediate() {
    scenario(G_512_4K_16K_512, Mode::Immediate, 11, 150);
}

#[test]
fn shadow_512_4k_16k_512_deferred() {
    scenario(G_512_4K_16K_512, Mode::Deferred, 12, 150);
}

#[test]
fn shadow_4k_4k_16k_4k_immediate() {
    scenario(G_4K_4K_16K_4K, Mode::Immediate, 21, 150);
}

#[test]
fn shadow_4k_4k_16k_4k_deferred() {
    scenario(G_4K_4K_16K_4K, Mode::Deferred, 22, 150);
}

#[test]
fn shadow_512_16k_64k_4k_immediate() {
    scenario(G_512_16K_64K_4K, Mode::Immediate, 31, 100);
}

#[test]
fn shadow_512_16k_64k_4k_deferred() {
    scenario(G_512_16K_64K_4K, Mode::Deferred, 32, 100);
}

#[test]
fn shadow_512_512_2k_512_deferred() {
    scenario(G_512_512_2K_512, Mode::Deferred, 41, 150);
}

/// Many writes and reads to one chunk submitted together: each read sees exactly the
/// writes submitted before it, and the last write wins.
#[test]
fn same_chunk_queue_in_submission_order() {
    let geo = G_512_4K_16K_512;
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let mut shadow = Shadow::new(geo);
    let mut rng = Rng::new(5);
    type Seen = Rc<RefCell<Vec<(usize, Vec<u8>)>>>;
    let seen: Seen = Rc::default();
    let mut expected = Vec::new();
    let chunk = 9;
    for i in 0..300 {
        // Each write stamps block (i % 32) with a value unique to i; reads read it all.
        if i % 3 == 2 {
            let want = shadow.expect(chunk * 32, 32).to_vec();
            expected.push((i, want));
            let s = seen.clone();
            vol.readv(chunk * 32, 32, vec![vec![0; 16384]], move |r, segs| {
                r.unwrap();
                s.borrow_mut().push((i, segs.concat()));
            });
        } else {
            let block = rng.below(32);
            let data = vec![(i % 251) as u8 + 1; 512];
            shadow.write(chunk * 32 + block, &data);
            vol.writev(chunk * 32 + block, 1, vec![data], |r, _| r.unwrap());
        }
    }
    assert_eq!(vol.info().outstanding, 300);
    rig.drain();
    assert_eq!(*seen.borrow(), expected);
    assert_eq!(
        rig.read_chunk(&vol, chunk).unwrap(),
        shadow.expect(chunk * 32, 32)
    );
    assert_eq!(vol.info().chunks_in_use, 1);
    rig.unload(&vol).unwrap();
}

/// A codec that completes later too, completions delivered in random codec/device
/// order between submissions, and one compress in five failing (error contract: stored
/// uncompressed, never an error to the caller).
#[test]
fn shadow_deferred_codec_interleaved_with_compress_faults() {
    let geo = G_512_4K_16K_512;
    let codec = CodecKind::test(Mode::Deferred);
    let CodecKind::Test(double) = &codec else {
        unreachable!()
    };
    double.set_fault(Some(Box::new(|compress, op| {
        (compress && op % 5 == 3).then_some(reduce::Errno::EIO)
    })));
    let rig = Rig {
        geo,
        backing: MemBacking::new(geo.blocklen, geo.blockcnt(), Mode::Deferred),
        store: MemStore::new(),
        codec,
    };
    let mut run = Run::with_rig(rig, 77);
    for b in 0..60 {
        let n = run.rng.range(1, 500) as usize;
        run.interleaved_batch(n);
        if b == 30 {
            run.reload(Mode::Deferred);
        }
    }
    run.reload(Mode::Deferred);
    let (raw, packed) = run.check_device();
    assert!(raw > 0 && packed > 0, "raw {raw}, compressed {packed}");
    assert!(run.max_in_flight > MAX_ACTIVE);
    run.rig.unload(&run.vol).unwrap();
}

/// Random device faults (reads and writes) and codec faults (compress and decompress)
/// with many requests in flight. The model here is applied at completion time: requests
/// to one chunk complete in submission order and touch only that chunk, so a write
/// that succeeds changes the shadow when it completes, a failed request changes
/// nothing, and a read must match the shadow when it completes. Failures may only be
/// the injected errno (device) or EIO (decompress); a failed compress is stored raw.
#[test]
fn shadow_random_faults_completion_model() {
    use reduce::Errno;
    const FAULT: Errno = Errno(libc::ENXIO);
    let geo = G_512_4K_16K_512;
    for (mode, seed) in [(Mode::Deferred, 1u64), (Mode::Immediate, 2)] {
        let codec = CodecKind::test(mode);
        let CodecKind::Test(double) = &codec else {
            unreachable!()
        };
        let rig = Rig {
            geo,
            backing: MemBacking::new(geo.blocklen, geo.blockcnt(), mode),
            store: MemStore::new(),
            codec: codec.clone(),
        };
        let vol = rig.init();
        let shadow = Rc::new(RefCell::new(Shadow::new(geo)));
        let mut rng = Rng::new(seed);
        let mut fault_rng = Rng::new(seed + 100);
        rig.backing.set_fault(Some(Box::new(move |_, _| {
            fault_rng.chance(4).then_some(FAULT)
        })));
        let mut codec_rng = Rng::new(seed + 200);
        double.set_fault(Some(Box::new(move |_, _| {
            codec_rng.chance(4).then_some(Errno::EIO)
        })));
        let failures: Rc<RefCell<Vec<String>>> = Rc::default();
        let counts = Rc::new(RefCell::new((0usize, 0usize)));
        let mut submitted = 0;
        for _ in 0..40 {
            for _ in 0..rng.range(1, 300) {
                let chunk = rng.below(8);
                let (offset, length) = range_in_chunk(&mut rng, geo, chunk);
                let bytes = length as usize * 512;
                let (shadow, failures, counts) = (shadow.clone(), failures.clone(), counts.clone());
                submitted += 1;
                if rng.chance(55) {
                    let data = any_data(&mut rng, bytes);
                    let segs = split(&mut rng, &data, 3);
                    vol.writev(offset, length, segs, move |r, _| {
                        let mut c = counts.borrow_mut();
                        match r {
                            Ok(()) => {
                                c.0 += 1;
                                shadow.borrow_mut().write(offset, &data);
                            }
                            Err(e) if e == FAULT || e == Errno::EIO => c.1 += 1,
                            Err(e) => failures.borrow_mut().push(format!("write: {e:?}")),
                        }
                    });
                } else {
                    vol.readv(offset, length, vec![vec![0; bytes]], move |r, segs| {
                        let mut c = counts.borrow_mut();
                        match r {
                            Ok(()) => {
                                c.0 += 1;
                                if segs[0] != shadow.borrow().expect(offset, length) {
                                    failures
                                        .borrow_mut()
                                        .push(format!("read {offset}+{length}: wrong data"));
                                }
                            }
                            Err(e) if e == FAULT || e == Errno::EIO => c.1 += 1,
                            Err(e) => failures.borrow_mut().push(format!("read: {e:?}")),
                        }
                    });
                }
            }
            rig.drain();
            assert!(failures.borrow().is_empty(), "{:?}", failures.borrow());
            let (ok, failed) = *counts.borrow();
            assert_eq!(ok + failed, submitted);
            assert_eq!(vol.info().outstanding, 0);
            // No leak: counters match the pm file, parsed independently.
            let pm = rig.pm_persisted();
            let stored = geo.pm().stored(&pm);
            let info = vol.info();
            assert_eq!(info.chunks_in_use, stored.len() as u64);
            let units: usize = stored.iter().map(|s| s.io_units.len()).sum();
            assert_eq!(
                info.allocated_io_units,
                units as u64 + geo.reserved_io_units()
            );
            check_stats(&vol, geo, &stored);
        }
        let (ok, failed) = *counts.borrow();
        assert!(failed > 50 && ok > failed, "ok {ok}, failed {failed}");
        rig.backing.set_fault(None);
        double.set_fault(None);
        let shadow = shadow.borrow().clone();
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
        eprintln!("{mode:?}: {ok} ok, {failed} failed by injection");
    }
}
