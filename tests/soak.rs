//! Fault-injection soak: random reads, writes and overwrites at queue depth 32 against
//! a shadow copy of the volume, with about 1 % of backing reads, backing writes,
//! compressions and decompressions failing, and about 1 % of their completions
//! delivered twice (to be ignored), in both completion modes, with unload and load
//! cycles. Checked: every read that succeeds returns exactly the model's bytes; every
//! failure carries an injected error and no more requests fail than faults were
//! injected (no stale error); the checker finds nothing wrong at every cycle (no leaked
//! io unit or chunk map). On a pm file of the fixed size nothing is ever full; a third
//! run has the original's smaller pm file, room for 48 of the 64 chunks plus the spare
//! chunk maps of their overwrites: there writes to chunks never written may get ENOSPC,
//! overwrites never.
//!
//! `REDUCE_SOAK_OPS` sets the operations per run (`make soak` runs 10^6 each).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

mod common;

use common::PmLayout;
use reduce::testkit::*;
use reduce::*;

const CHUNKS: u64 = 64;
const BLOCKS_PER_CHUNK: u64 = 8;
const LBS: usize = 512;
const QUEUE_DEPTH: usize = 32;
const CYCLE: u64 = 5_000;

const READ_FAULT: Errno = Errno(libc::ENODATA);
const WRITE_FAULT: Errno = Errno(libc::EREMOTEIO);

#[derive(Default, Debug)]
struct Counts {
    reads: u64,
    writes: u64,
    failed: u64,
    /// Writes to chunks holding no data refused for space.
    enospc: u64,
    reloads: u64,
}

/// The shadow model and the counts, shared with completion callbacks.
struct Model {
    bytes: Vec<u8>,
    /// Chunks holding data (written successfully at least once).
    held: [bool; CHUNKS as usize],
    counts: Counts,
}

fn ops_per_mode() -> u64 {
    std::env::var("REDUCE_SOAK_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000)
}

/// Duplicate functions delivering about 1 % of completions twice.
fn duplicate(rig: &Rig, seed: u64) {
    let mut rng = Rng::new(seed ^ 0xD0B1E);
    rig.backing
        .set_duplicate(Some(Box::new(move |_, _| rng.chance(1))));
    let mut rng = Rng::new(seed ^ 0xD0B1E ^ 0xC0DEC);
    rig.codec
        .double()
        .set_duplicate(Some(Box::new(move |_, _| rng.chance(1))));
}

/// Fault functions failing about 1 % of operations, counting what they inject.
fn inject(rig: &Rig, seed: u64, faults: &Rc<Cell<u64>>) {
    let (f, mut rng) = (faults.clone(), Rng::new(seed));
    rig.backing.set_fault(Some(Box::new(move |write, _| {
        rng.chance(1).then(|| {
            f.set(f.get() + 1);
            if write { WRITE_FAULT } else { READ_FAULT }
        })
    })));
    let (f, mut rng) = (faults.clone(), Rng::new(seed ^ 0xC0DEC));
    rig.codec.double().set_fault(Some(Box::new(move |_, _| {
        rng.chance(1).then(|| {
            f.set(f.get() + 1);
            Errno::EIO
        })
    })));
}

/// The pm file of the original's size: the fixed one, its chunk-map region counted
/// without each entry's 8-byte header (tests/common's layout).
fn shrink_pm(rig: &Rig) {
    let path = rig.pm_path();
    let mut pm = rig.store.current(&path).unwrap();
    pm.truncate(PmLayout::new(rig.geo, true).size);
    rig.store.insert(&path, pm);
}

fn soak(mode: Mode, seed: u64, original_pm: bool) {
    let ops = ops_per_mode();
    // One io unit a chunk: the original's pm file holds half the chunk maps it needs.
    let geo = match original_pm {
        false => Geo::small(CHUNKS),
        true => Geo::new(512, 4096, 4096, 512, CHUNKS),
    };
    let rig = Rig::new(geo, mode, CodecKind::test(mode));
    let mut vol = rig.init();
    if original_pm {
        rig.unload(&vol).unwrap();
        shrink_pm(&rig);
        vol = rig.load().unwrap();
        assert_eq!(vol.info().chunk_maps_usable, 96);
    }
    let faults = Rc::new(Cell::new(0u64));
    inject(&rig, seed, &faults);
    duplicate(&rig, seed);
    let model = Rc::new(RefCell::new(Model {
        bytes: vec![0; CHUNKS as usize * BLOCKS_PER_CHUNK as usize * LBS],
        held: [false; CHUNKS as usize],
        counts: Counts::default(),
    }));
    let in_flight = Rc::new(Cell::new(0usize));
    let mut rng = Rng::new(seed);
    let mut submitted = 0u64;
    let mut checks = 0u64;
    while submitted < ops {
        while in_flight.get() < QUEUE_DEPTH && submitted < ops {
            submit(&vol, &mut rng, &model, &in_flight, submitted);
            submitted += 1;
            if submitted % CYCLE == 0 {
                break;
            }
        }
        if mode == Mode::Deferred && in_flight.get() > 0 && !rig.poll_one() {
            panic!("requests in flight and nothing pending");
        }
        if submitted % CYCLE == 0 || submitted == ops {
            rig.drain();
            assert_eq!(in_flight.get(), 0, "requests lost");
            audit(&rig, &vol, &model, &faults);
            checks += 1;
            rig.unload(&vol).expect("unload");
            vol = reload(&rig);
            model.borrow_mut().counts.reloads += 1;
        }
    }
    rig.drain();
    rig.backing.set_fault(None);
    rig.codec.double().set_fault(None);
    rig.backing.set_duplicate(None);
    rig.codec.double().set_duplicate(None);
    let m = model.borrow();
    for chunk in 0..CHUNKS {
        let want = &m.bytes[(chunk * BLOCKS_PER_CHUNK) as usize * LBS..][..4096];
        let got = rig.read(&vol, chunk * BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK);
        assert_eq!(got.as_deref(), Ok(want), "chunk {chunk} after the soak");
    }
    let duplicates = rig.backing.duplicates() + rig.codec.double().duplicates();
    let pm = if original_pm { "original" } else { "fixed" };
    eprintln!(
        "soak {mode:?}, {pm} pm file: {} ops ({} reads, {} writes) at queue depth \
         {QUEUE_DEPTH}, {} faults injected, {} requests failed with them, {duplicates} \
         completions delivered twice and ignored, {} fresh-chunk writes refused for space, \
         {} unload/load cycles, {} checker runs clean, 0 mismatches",
        ops,
        m.counts.reads,
        m.counts.writes,
        faults.get(),
        m.counts.failed,
        m.counts.enospc,
        m.counts.reloads,
        checks
    );
    assert!(
        faults.get() > 0 && m.counts.failed > 0,
        "no fault was exercised"
    );
    assert!(duplicates > 0, "no duplicate was delivered");
    assert_eq!(m.counts.enospc > 0, original_pm, "space refusals");
}

/// Loads again; a load that meets an injected read fault fails with it and is retried.
fn reload(rig: &Rig) -> Volume {
    loop {
        match rig.load() {
            Ok(vol) => return vol,
            Err(e) => assert_eq!(e, READ_FAULT, "load failed"),
        }
    }
}

/// Submits one random request; its completion checks it against the model.
fn submit(
    vol: &Volume,
    rng: &mut Rng,
    model: &Rc<RefCell<Model>>,
    in_flight: &Rc<Cell<usize>>,
    seq: u64,
) {
    let chunk = rng.below(CHUNKS);
    let first = rng.below(BLOCKS_PER_CHUNK);
    let blocks = if rng.chance(40) {
        BLOCKS_PER_CHUNK - first
    } else {
        1 + rng.below(BLOCKS_PER_CHUNK - first)
    };
    let offset = chunk * BLOCKS_PER_CHUNK + first;
    let range = offset as usize * LBS..(offset + blocks) as usize * LBS;
    // Up to three segments of varied sizes.
    let len = range.len();
    let cut1 = rng.below(len as u64 / LBS as u64 + 1) as usize * LBS;
    let cut2 = cut1 + rng.below(((len - cut1) / LBS) as u64 + 1) as usize * LBS;
    let cuts = [0, cut1, cut2, len];
    in_flight.set(in_flight.get() + 1);
    let (model, in_flight) = (model.clone(), in_flight.clone());
    if rng.chance(55) {
        let bytes = data(seq, len);
        let segs = cuts
            .windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .collect();
        vol.writev(offset, blocks, segs, move |r, _| {
            let mut m = model.borrow_mut();
            m.counts.writes += 1;
            match r {
                Ok(()) => {
                    m.bytes[range].copy_from_slice(&bytes);
                    // A chunk left all zeros holds no data.
                    let whole = chunk as usize * 4096..(chunk as usize + 1) * 4096;
                    m.held[chunk as usize] = m.bytes[whole].iter().any(|&b| b != 0);
                }
                // Only a chunk holding no data may be refused for space.
                Err(e) if e == Errno::ENOSPC && !m.held[chunk as usize] => m.counts.enospc += 1,
                Err(e) => expect_injected(&mut m, e.errno(), true),
            }
            in_flight.set(in_flight.get() - 1);
        });
    } else {
        let segs = cuts.windows(2).map(|w| vec![0x5A; w[1] - w[0]]).collect();
        vol.readv(offset, blocks, segs, move |r, segs| {
            let mut m = model.borrow_mut();
            m.counts.reads += 1;
            match r {
                Ok(()) => assert!(
                    segs.concat() == m.bytes[range.clone()],
                    "read of blocks {range:?} returned wrong data"
                ),
                Err(e) => expect_injected(&mut m, e.errno(), false),
            }
            in_flight.set(in_flight.get() - 1);
        });
    }
}

/// A failed request must carry an injected error: a backing read fault or a failed
/// decompression (EIO) for either kind, a backing write fault for writes.
fn expect_injected(m: &mut Model, e: Errno, write: bool) {
    let ok = e == READ_FAULT || e == Errno::EIO || (write && e == WRITE_FAULT);
    assert!(ok, "request failed with {e:?}, which was never injected");
    m.counts.failed += 1;
}

fn audit(rig: &Rig, vol: &Volume, model: &Rc<RefCell<Model>>, faults: &Rc<Cell<u64>>) {
    let m = model.borrow();
    assert!(
        m.counts.failed <= faults.get(),
        "{} failures from {} faults: a stale error",
        m.counts.failed,
        faults.get()
    );
    drop(m);
    // The checker reads every chunk: without faults, so a failure is real.
    let (backing_fault, codec_fault) = (rig.backing.take_fault(), rig.codec.double().take_fault());
    let report = rig.check(vol).expect("check runs");
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        vol.info().allocated_io_units,
        report.io_units_referenced + rig.geo.metadata_io_units()
    );
    assert_eq!(vol.stats().io_units_in_use, report.io_units_referenced);
    rig.backing.set_fault(backing_fault);
    rig.codec.double().set_fault(codec_fault);
}

#[test]
fn soak_immediate() {
    soak(Mode::Immediate, 1, false);
}

#[test]
fn soak_deferred() {
    soak(Mode::Deferred, 2, false);
}

#[test]
fn soak_deferred_original_pm_file() {
    soak(Mode::Deferred, 3, true);
}
