//! Requests of any shape, unmap, zero chunks and statistics, in both completion modes,
//! against a shadow copy of the volume and the pm file parsed independently
//! (tests/common): reads, writes and unmaps that cross chunks, with iovecs of any sizes,
//! many in flight, complete once, in submission order where they overlap, with the
//! first error; an unmapped or all-zeros chunk takes no space (its entry is empty) and
//! its io units go to the device's unmap, never while a write could take them; the
//! statistics match what was written.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Once};

use common::*;
use reduce::log::Level;
use reduce::testkit::*;
use reduce::*;

const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];

thread_local! {
    static LOGGED: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Messages logged on this thread since the last call (the sink is process-wide).
fn logged() -> Vec<(Level, String)> {
    static SINK: Once = Once::new();
    SINK.call_once(|| {
        reduce::log::set_sink(Some(Arc::new(|level, text: &str| {
            LOGGED.with(|l| l.borrow_mut().push((level, text.to_string())))
        })))
    });
    LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
/// 32 blocks of 512 bytes a chunk, 4 io units of 4 KiB.
const GEO: Geo = Geo::new(512, 4096, 16384, 512, 24);
const BPC: u64 = 32;

/// The stored chunks as the pm file has them, checked against the shadow (exactly the
/// chunks that are not all zeros are stored) and against the volume's counters.
fn check_pm(rig: &Rig, vol: &Volume, shadow: &Shadow) -> Vec<StoredChunk> {
    let pm = rig.pm_persisted();
    let stored = rig.geo.pm().stored(&pm);
    let chunks: Vec<u64> = stored.iter().map(|s| s.chunk).collect();
    assert_eq!(
        chunks,
        shadow.nonzero_chunks(rig.geo.chunk),
        "stored chunks are not exactly those holding data"
    );
    check_stats(vol, rig.geo, &stored);
    let units: u64 = stored.iter().map(|s| s.io_units.len() as u64).sum();
    assert_eq!(
        vol.info().allocated_io_units,
        units + rig.geo.reserved_io_units(),
        "io units leaked"
    );
    stored
}

/// A range of up to `max_chunks` chunks' worth of blocks, anywhere in the volume.
fn any_range(rng: &mut Rng, geo: Geo, max_chunks: u64) -> (u64, u64) {
    let total = geo.total_blocks();
    let length = rng.range(1, max_chunks * geo.blocks_per_chunk()).min(total);
    (rng.below(total - length + 1), length)
}

/// The chunks a block range covers.
fn chunks_of(offset: u64, length: u64) -> std::ops::RangeInclusive<u64> {
    offset / BPC..=(offset + length - 1) / BPC
}

/// What a batch's callbacks saw: completion order, failures.
#[derive(Default)]
struct Seen {
    order: Vec<usize>,
    failures: Vec<String>,
}

/// Submits `n` random reads, writes and unmaps over up to 5 chunks each, with iovecs
/// of any sizes, then delivers everything. Each read must return the shadow as it was
/// when the read was submitted (requests that overlap run in submission order). Returns
/// each request's chunks, in submission order, and what was seen.
fn batch(
    rig: &Rig,
    vol: &Volume,
    shadow: &mut Shadow,
    rng: &mut Rng,
    n: usize,
) -> (Vec<(u64, u64)>, Seen) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut spans = Vec::new();
    for seq in 0..n {
        let (offset, length) = any_range(rng, rig.geo, 5);
        spans.push((offset, length));
        let bytes = length as usize * 512;
        let s = seen.clone();
        match rng.below(10) {
            0..=4 => {
                let data = any_data(rng, bytes);
                shadow.write(offset, &data);
                vol.writev(offset, length, split(rng, &data, 6), move |r, _| {
                    let mut s = s.borrow_mut();
                    s.order.push(seq);
                    if let Err(e) = r {
                        s.failures.push(format!("write {seq}: {e}"));
                    }
                });
            }
            5..=7 => {
                let want = shadow.expect(offset, length).to_vec();
                let segs = split_lens(rng, bytes, 6)
                    .into_iter()
                    .map(|n| vec![0xA5; n])
                    .collect();
                vol.readv(offset, length, segs, move |r, segs| {
                    let mut s = s.borrow_mut();
                    s.order.push(seq);
                    match r {
                        Ok(()) if segs.concat() == want => {}
                        Ok(()) => s.failures.push(format!("read {seq}: wrong data")),
                        Err(e) => s.failures.push(format!("read {seq}: {e}")),
                    }
                });
            }
            _ => {
                shadow.unmap(offset, length);
                vol.unmap(offset, length, move |r| {
                    let mut s = s.borrow_mut();
                    s.order.push(seq);
                    if let Err(e) = r {
                        s.failures.push(format!("unmap {seq}: {e}"));
                    }
                });
            }
        }
        if rng.chance(5) {
            rig.drain();
        }
    }
    rig.drain();
    let seen = Rc::try_unwrap(seen).ok().unwrap().into_inner();
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert_eq!(seen.order.len(), n, "requests lost or completed twice");
    (spans, seen)
}

/// Requests that share a chunk completed in the order they were submitted.
fn assert_overlapping_in_order(spans: &[(u64, u64)], order: &[usize]) {
    let mut position = vec![0; order.len()];
    for (at, &seq) in order.iter().enumerate() {
        position[seq] = at;
    }
    for (i, &(o1, l1)) in spans.iter().enumerate() {
        let c1 = chunks_of(o1, l1);
        for (j, &(o2, l2)) in spans.iter().enumerate().skip(i + 1) {
            let c2 = chunks_of(o2, l2);
            if c1.start() <= c2.end() && c2.start() <= c1.end() {
                assert!(
                    position[i] < position[j],
                    "request {j} (chunks {c2:?}) completed before the earlier {i} (chunks {c1:?})"
                );
            }
        }
    }
}

#[test]
fn crossing_requests_with_odd_iovecs_against_the_shadow() {
    for (mode, seed) in [(Mode::Immediate, 41), (Mode::Deferred, 43)] {
        let rig = Rig::new(GEO, mode, CodecKind::test(mode));
        let mut vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(seed);
        let mut overtaken = 0;
        for round in 0..12 {
            let n = if mode == Mode::Deferred && round % 3 == 0 {
                300
            } else {
                40
            };
            let (spans, seen) = batch(&rig, &vol, &mut shadow, &mut rng, n);
            assert_overlapping_in_order(&spans, &seen.order);
            overtaken += seen.order.windows(2).filter(|w| w[0] > w[1]).count();
            shadow.verify(&rig, &vol);
            check_pm(&rig, &vol, &shadow);
            if round == 6 {
                rig.unload(&vol).unwrap();
                vol = rig.load().unwrap();
                shadow.verify(&rig, &vol);
                check_pm(&rig, &vol, &shadow);
            }
        }
        if mode == Mode::Deferred {
            assert!(overtaken > 0, "requests that share no chunk never overtook");
        }
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

/// The io units each stored chunk has, by chunk.
fn units_by_chunk(stored: &[StoredChunk]) -> std::collections::HashMap<u64, Vec<u64>> {
    stored
        .iter()
        .map(|s| (s.chunk, s.io_units.clone()))
        .collect()
}

/// Io units the device's unmaps covered since `from` runs.
fn unmapped_units(rig: &Rig, from: usize) -> Vec<u64> {
    let per = u64::from(rig.geo.io_unit / rig.geo.blocklen);
    let mut units: Vec<u64> = rig.backing.unmapped()[from..]
        .iter()
        .flat_map(|&(lba, count)| {
            assert_eq!(lba % per, 0, "unmap not on an io unit");
            assert_eq!(u64::from(count) % per, 0, "unmap not whole io units");
            (lba / per..(lba + u64::from(count)) / per).collect::<Vec<_>>()
        })
        .collect();
    units.sort_unstable();
    units
}

#[test]
fn unmap_whole_partial_and_multi_chunk_ranges() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::test(mode));
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(7);
        let fill = |shadow: &mut Shadow, rng: &mut Rng| {
            for chunk in 0..GEO.chunks {
                let data = if chunk % 3 == 0 {
                    rng.bytes(16384)
                } else {
                    prose(rng, 16384)
                };
                rig.write(&vol, chunk * BPC, &data).unwrap();
                shadow.write(chunk * BPC, &data);
            }
        };
        fill(&mut shadow, &mut rng);
        let cases: [(&str, u64, u64); 8] = [
            ("one whole chunk", 2 * BPC, BPC),
            ("part of a chunk", 4 * BPC + 3, 7),
            ("the rest of that chunk", 4 * BPC, 3),
            ("and its tail", 4 * BPC + 10, BPC - 10),
            ("partial, whole, whole, partial", 5 * BPC + 17, 3 * BPC + 1),
            ("whole chunks, many", 10 * BPC, 6 * BPC),
            ("a chunk already empty", 2 * BPC, BPC),
            ("one block", 20 * BPC + 31, 1),
        ];
        for (what, offset, length) in cases {
            let before = units_by_chunk(&check_pm(&rig, &vol, &shadow));
            let runs_before = rig.backing.unmapped().len();
            let writes_before = rig.backing.op_counts().1;
            rig.unmap(&vol, offset, length)
                .unwrap_or_else(|e| panic!("{mode:?} {what}: {e}"));
            shadow.unmap(offset, length);
            let after = units_by_chunk(&check_pm(&rig, &vol, &shadow));
            shadow.verify(&rig, &vol);
            // The device unmapped exactly the io units of the chunks that became empty.
            let mut freed: Vec<u64> = before
                .iter()
                .filter(|(c, _)| !after.contains_key(c))
                .flat_map(|(_, units)| units.clone())
                .collect();
            freed.sort_unstable();
            assert_eq!(
                unmapped_units(&rig, runs_before),
                freed,
                "{mode:?} {what}: device unmaps"
            );
            // Only partly covered chunks that keep data were rewritten.
            let rewritten = (offset / BPC..=(offset + length - 1) / BPC)
                .filter(|c| after.contains_key(c) && before.get(c) != after.get(c))
                .count() as u64;
            assert!(
                rig.backing.op_counts().1 - writes_before <= rewritten,
                "{what}"
            );
        }
        // The whole volume, then it fills again.
        let runs_before = rig.backing.unmapped().len();
        let used = vol.stats().io_units_in_use;
        rig.unmap(&vol, 0, GEO.total_blocks()).unwrap();
        shadow.unmap(0, GEO.total_blocks());
        assert_eq!(vol.stats().chunks_in_use, 0);
        assert_eq!(unmapped_units(&rig, runs_before).len() as u64, used);
        check_pm(&rig, &vol, &shadow);
        assert!(
            rig.pm_persisted()[4096..4096 + 8 * GEO.chunks as usize]
                .iter()
                .all(|&b| b == 0xFF)
        );
        fill(&mut shadow, &mut rng);
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

/// Buffers of some length that are never used, and a completion.
struct Buffers(usize, Box<dyn FnOnce(reduce::Result<()>)>);

impl UserIo for Buffers {
    fn len(&self) -> usize {
        self.0
    }
    fn gather(&self, _: usize, _: &mut [u8]) {}
    fn scatter(&mut self, _: usize, _: &[u8]) {}
    fn complete(self: Box<Self>, result: reduce::Result<()>) {
        (self.1)(result)
    }
}

#[test]
fn unmap_range_errors_and_empty_ranges() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        rig.write(&vol, 0, &text(1, 16384)).unwrap();
        let info = vol.info();
        let total = GEO.total_blocks();
        assert_eq!(rig.unmap(&vol, 5, 0), Ok(()));
        assert_eq!(rig.unmap(&vol, total, 0), Ok(()));
        for (offset, length) in [(total, 1), (total - 1, 2), (u64::MAX, 1), (1, u64::MAX)] {
            assert_eq!(
                rig.unmap(&vol, offset, length),
                Err(Errno::EINVAL.into()),
                "{offset}+{length}"
            );
        }
        assert_eq!(vol.info(), info);
        assert_eq!(rig.read_chunk(&vol, 0).unwrap(), text(1, 16384));
        // An unmap through submit with buffers is refused.
        let s = slot();
        vol.submit(
            Op::Unmap,
            0,
            1,
            Box::new(Buffers(512, Box::new(filler(&s)))),
        );
        assert_eq!(rig.wait(&s), Err(Errno::EINVAL.into()));
        let st = vol.stats();
        assert_eq!((st.unmaps, st.errors), (7, 5));
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn zero_chunks_take_no_space() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::test(mode));
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let codec = rig.codec.double();
        // Zeros into an empty chunk: nothing compressed, written or allocated.
        let (ops, compressions) = (rig.backing.op_counts(), codec.ops());
        rig.write(&vol, 3 * BPC, &[0; 16384]).unwrap();
        rig.write(&vol, 4 * BPC + 5, &[0; 1024]).unwrap();
        rig.write(&vol, 5 * BPC + 5, &vec![0; 40 * 512]).unwrap();
        assert_eq!(rig.backing.op_counts(), ops);
        assert_eq!(codec.ops(), compressions);
        check_pm(&rig, &vol, &shadow);

        // A chunk of data, then zeros over it: empty again, its io units unmapped.
        let data = prose(&mut Rng::new(3), 16384);
        rig.write(&vol, 3 * BPC, &data).unwrap();
        shadow.write(3 * BPC, &data);
        let held = check_pm(&rig, &vol, &shadow)[0].io_units.clone();
        let runs = rig.backing.unmapped().len();
        rig.write(&vol, 3 * BPC, &[0; 16384]).unwrap();
        shadow.write(3 * BPC, &[0; 16384]);
        check_pm(&rig, &vol, &shadow);
        let mut held = held;
        held.sort_unstable();
        assert_eq!(unmapped_units(&rig, runs), held);

        // Partial zeros: the chunk keeps data until the last non-zero block goes.
        let mut data = vec![0u8; 16384];
        data[1000] = 1;
        data[9000] = 2;
        rig.write(&vol, 7 * BPC, &data).unwrap();
        shadow.write(7 * BPC, &data);
        rig.write(&vol, 7 * BPC, &[0; 1024]).unwrap();
        shadow.write(7 * BPC, &[0; 1024]);
        assert_eq!(check_pm(&rig, &vol, &shadow).len(), 1);
        rig.write(&vol, 7 * BPC + 17, &[0; 512]).unwrap();
        shadow.write(7 * BPC + 17, &[0; 512]);
        assert_eq!(check_pm(&rig, &vol, &shadow).len(), 0);

        // Zeros across chunks empty each of them.
        for chunk in 8..12 {
            let data = text(chunk, 16384);
            rig.write(&vol, chunk * BPC, &data).unwrap();
            shadow.write(chunk * BPC, &data);
        }
        let zeros = vec![0u8; 4 * 16384];
        let mut rng = Rng::new(9);
        rig.writev(&vol, 8 * BPC, split(&mut rng, &zeros, 7))
            .unwrap();
        shadow.write(8 * BPC, &zeros);
        assert!(check_pm(&rig, &vol, &shadow).is_empty());
        shadow.verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

/// Each chunk is stored in one run of io units, and read with one device read, however
/// it was overwritten: partial writes change its stored size, and its new run is taken
/// before the old one is freed, so taking the lowest free io units one by one (as the
/// original does) scatters it over the short runs that other chunks freed.
#[test]
fn a_chunk_is_stored_in_one_run_and_read_with_one_device_read() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        vol.set_cache_chunks(0).unwrap();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(17);
        for _ in 0..600 {
            let chunk = rng.below(GEO.chunks);
            let (offset, length) = range_in_chunk(&mut rng, GEO, chunk);
            let data = any_data(&mut rng, (length * 512) as usize);
            rig.write(&vol, offset, &data).unwrap();
            shadow.write(offset, &data);
        }
        let stored = check_pm(&rig, &vol, &shadow);
        let sizes: HashSet<usize> = stored.iter().map(|s| s.io_units.len()).collect();
        assert!(sizes.len() >= 3, "{mode:?}: stored sizes {sizes:?}");
        for s in &stored {
            let units = &s.io_units;
            assert!(
                units.windows(2).all(|w| w[1] == w[0] + 1),
                "{mode:?}: chunk {} in io units {units:?}",
                s.chunk
            );
            let reads = rig.backing.op_counts().0;
            let data = rig.read(&vol, s.chunk * BPC, BPC).unwrap();
            assert_eq!(
                rig.backing.op_counts().0 - reads,
                1,
                "{mode:?}: chunk {}",
                s.chunk
            );
            assert!(
                data == shadow.expect(s.chunk * BPC, BPC),
                "{mode:?}: chunk {}",
                s.chunk
            );
        }
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn statistics_follow_what_was_written() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(5);
        assert_eq!(
            vol.stats(),
            Stats {
                io_units_free: (GEO.chunks + 128) * 4 - 2,
                ..Stats::default()
            }
        );
        // Raw chunks are those of random bytes; the rest compress.
        let mut raw = 0;
        for chunk in 0..10 {
            let data = if chunk % 4 == 1 {
                raw += 1;
                rng.bytes(16384)
            } else {
                text(chunk, 16384)
            };
            rig.write(&vol, chunk * BPC, &data).unwrap();
            shadow.write(chunk * BPC, &data);
        }
        let st = vol.stats();
        assert_eq!((st.chunks_in_use, st.chunks_raw), (10, raw));
        assert!(st.stored_bytes < 10 * 16384);
        check_pm(&rig, &vol, &shadow);
        // Requests: reads, writes, unmaps, and the failed ones.
        rig.read(&vol, 0, 2 * BPC + 3).unwrap();
        rig.read(&vol, 20 * BPC, 1).unwrap();
        rig.unmap(&vol, 1, 1).unwrap();
        assert_eq!(
            rig.read(&vol, GEO.total_blocks(), 1),
            Err(Errno::EINVAL.into())
        );
        let s = slot();
        let f = filler(&s);
        vol.writev(0, 1, vec![vec![1; 100]], move |r, _| f(r));
        assert_eq!(rig.wait(&s), Err(Errno::EINVAL.into()));
        rig.writev(&vol, 3, vec![]).unwrap();
        // The checker's reads do not count.
        assert!(rig.check(&vol).unwrap().is_clean());
        let st = vol.stats();
        assert_eq!(
            (st.reads, st.writes, st.unmaps, st.errors),
            (3, 10 + 2, 1, 2)
        );
        // Space counters are rebuilt at load; request counts start again.
        let space = |s: Stats| {
            (
                s.chunks_in_use,
                s.chunks_raw,
                s.io_units_in_use,
                s.stored_bytes,
            )
        };
        let before = space(vol.stats());
        rig.unload(&vol).unwrap();
        assert_eq!(vol.stats(), Stats::default());
        let vol = rig.load().unwrap();
        assert_eq!(space(vol.stats()), before);
        assert_eq!(vol.stats().writes, 0);
        check_pm(&rig, &vol, &shadow);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn a_failing_piece_fails_its_request_once_with_the_first_error() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        for chunk in 0..8 {
            let data = text(chunk + 20, 16384);
            rig.write(&vol, chunk * BPC, &data).unwrap();
            shadow.write(chunk * BPC, &data);
        }
        // A read over 6 chunks whose third backing read fails.
        let reads = Cell::new(0);
        rig.backing.set_fault(Some(Box::new(move |write, _| {
            reads.set(reads.get() + u32::from(!write));
            (!write && reads.get() == 3).then_some(Errno(libc::ENXIO))
        })));
        let calls = Rc::new(Cell::new(0));
        let s = slot();
        let (f, c) = (filler(&s), calls.clone());
        vol.readv(BPC + 4, 5 * BPC, vec![vec![0; 5 * 16384]], move |r, _| {
            c.set(c.get() + 1);
            f(r)
        });
        assert_eq!(rig.wait(&s), Err(Errno(libc::ENXIO).into()));
        rig.drain();
        assert_eq!(calls.get(), 1);
        rig.backing.set_fault(None);
        // A write over 5 chunks whose second backing write fails: each chunk is old or
        // new, nothing leaks.
        let armed = Cell::new(0);
        rig.backing.set_fault(Some(Box::new(move |write, _| {
            armed.set(armed.get() + u32::from(write));
            (write && armed.get() == 2).then_some(Errno(libc::EROFS))
        })));
        let data = prose(&mut Rng::new(1), 5 * 16384);
        assert_eq!(
            rig.write(&vol, 2 * BPC, &data),
            Err(Errno(libc::EROFS).into())
        );
        rig.backing.set_fault(None);
        let mut unchanged = 0;
        for k in 0..5u64 {
            let got = rig.read_chunk(&vol, 2 + k).unwrap();
            let new = &data[k as usize * 16384..][..16384];
            if got == new {
                shadow.write((2 + k) * BPC, new);
            } else {
                assert_eq!(
                    got,
                    shadow.expect((2 + k) * BPC, BPC),
                    "chunk {} mixed",
                    2 + k
                );
                unchanged += 1;
            }
        }
        assert!(unchanged >= 1);
        check_pm(&rig, &vol, &shadow);
        assert_eq!(vol.stats().errors, 2);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn any_number_in_flight_and_a_huge_unmap() {
    let geo = Geo::small(5000);
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let done = Rc::new(Cell::new(0));
    let mut rng = Rng::new(2);
    let n = 3000;
    for _ in 0..n {
        let (offset, length) = any_range(&mut rng, geo, 3);
        let data = text(offset, length as usize * 512);
        let d = done.clone();
        vol.writev(offset, length, split(&mut rng, &data, 4), move |r, _| {
            r.unwrap();
            d.set(d.get() + 1)
        });
    }
    assert_eq!(vol.info().outstanding, n);
    rig.drain();
    assert_eq!(done.get(), n);
    assert!(vol.stats().chunks_in_use > 1000);
    let d = done.clone();
    vol.unmap(0, geo.total_blocks(), move |r| {
        r.unwrap();
        d.set(d.get() + 1)
    });
    rig.drain();
    assert_eq!(done.get(), n + 1);
    let st = vol.stats();
    assert_eq!((st.chunks_in_use, st.io_units_in_use), (0, 0));
    assert_eq!(vol.info().allocated_io_units, geo.metadata_io_units());
    assert!(rig.check(&vol).unwrap().is_clean());
    rig.unload(&vol).unwrap();
}

#[test]
fn a_failed_device_unmap_costs_nothing_but_a_message() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        rig.write(&vol, 0, &text(4, 16384)).unwrap();
        let free = vol.stats().io_units_free;
        logged();
        rig.backing
            .set_fault(Some(Box::new(|write, _| write.then_some(Errno::EIO))));
        assert_eq!(rig.unmap(&vol, 0, BPC), Ok(()));
        rig.backing.set_fault(None);
        let messages = logged();
        assert!(
            messages
                .iter()
                .any(|(l, m)| *l == Level::Warn && m.contains("failed to unmap")),
            "{messages:?}"
        );
        let st = vol.stats();
        assert_eq!(st.chunks_in_use, 0);
        assert!(st.io_units_free > free, "the io units did not come back");
        assert_eq!(vol.info().allocated_io_units, 2);
        rig.unload(&vol).unwrap();
    }
}

/// While the device is unmapping a chunk's io units, a write allocates none of them: the
/// device might discard the new data after writing it.
#[test]
fn freed_io_units_wait_for_the_device_unmap() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::test(Mode::Deferred));
    let vol = rig.init();
    let mut rng = Rng::new(11);
    let old = rng.bytes(16384);
    rig.write(&vol, 0, &old).unwrap();
    let held: HashSet<u64> = GEO.pm().stored(&rig.pm_persisted())[0]
        .io_units
        .iter()
        .copied()
        .collect();
    let free = vol.stats().io_units_free;
    let unmapped = Rc::new(Cell::new(false));
    let u = unmapped.clone();
    vol.unmap(0, BPC, move |r| {
        r.unwrap();
        u.set(true)
    });
    // The entry is cleared and the device has the unmap; the io units are not free.
    assert_eq!(rig.backing.pending(), 1);
    assert_eq!(vol.stats().chunks_in_use, 0);
    assert_eq!(vol.stats().io_units_free, free);
    let new = rng.bytes(16384);
    let written = Rc::new(Cell::new(false));
    let w = written.clone();
    vol.writev(BPC, BPC, vec![new.clone()], move |r, _| {
        r.unwrap();
        w.set(true)
    });
    // Compress: the write allocates while the unmap is still out.
    while rig.codec.poll_one() {}
    rig.drain();
    assert!(unmapped.get() && written.get());
    let stored = GEO.pm().stored(&rig.pm_persisted());
    assert!(
        stored[0].io_units.iter().all(|u| !held.contains(u)),
        "the write took io units being unmapped"
    );
    assert_eq!(rig.read(&vol, BPC, BPC).unwrap(), new);
    assert_eq!(vol.stats().io_units_free, free);
    rig.unload(&vol).unwrap();
}

#[test]
fn the_blocking_volume_unmaps_and_counts() {
    let rig = Rig::new(GEO, Mode::Immediate, CodecKind::Zstd);
    let vol = blocking::Volume::init_plan(rig.plan([0; 16]), rig.backend()).unwrap();
    let data = text(8, 3 * 16384);
    vol.write(BPC / 2, &data).unwrap();
    assert_eq!(vol.stats().chunks_in_use, 4);
    vol.unmap(BPC, 2 * BPC).unwrap();
    let mut back = vec![1u8; 4 * 16384];
    vol.read(0, &mut back).unwrap();
    let mut want = vec![0u8; 4 * 16384];
    want[16384 / 2..16384].copy_from_slice(&data[..16384 / 2]);
    want[3 * 16384..3 * 16384 + 16384 / 2].copy_from_slice(&data[5 * 16384 / 2..]);
    assert_eq!(back, want);
    let st = vol.stats();
    assert_eq!(
        (st.chunks_in_use, st.reads, st.writes, st.unmaps),
        (2, 1, 1, 1)
    );
    vol.unload().unwrap();
}
