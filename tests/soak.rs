//! Fault-injection soak: random reads, writes, overwrites and unmaps at queue depth 32
//! against a shadow copy of the volume, a fifth of them across chunk boundaries, in
//! iovecs of any sizes, with about 1 % of backing reads, backing writes and unmaps,
//! compressions and decompressions failing, and about 1 % of their completions
//! delivered twice (to be ignored), in both completion modes, with unload and load
//! cycles. Checked: every read that succeeds returns exactly the model's bytes; every
//! failure carries an injected error and no more requests fail than faults were
//! injected (no stale error); the checker finds nothing wrong at every cycle (no leaked
//! io unit or chunk map), and the statistics match the checker's count. On a pm file of
//! the fixed size nothing is ever full; a third run has the original's smaller pm
//! file, room for 48 of the 64 chunks plus the spare chunk maps of their overwrites:
//! there writes to chunks holding no data may get ENOSPC, overwrites never. A fourth
//! has its pm file say it is on a RAM file system, where writes commit alone.
//!
//! A failed request over several chunks may have changed some of them (each wholly):
//! the model then holds both contents for each such chunk, and the next read of it
//! says which one it has.
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
    unmaps: u64,
    /// Requests over more than one chunk.
    across: u64,
    failed: u64,
    /// Writes to chunks holding no data refused for space.
    enospc: u64,
    reloads: u64,
}

/// The shadow model and the counts, shared with completion callbacks.
struct Model {
    /// What each chunk may hold: one content, or more after a request over several
    /// chunks failed part way.
    chunks: Vec<Vec<Vec<u8>>>,
    counts: Counts,
}

const CHUNK: usize = BLOCKS_PER_CHUNK as usize * LBS;

impl Model {
    /// Applies a write (`Some(bytes)`) or an unmap (`None`) of blocks `offset..` that
    /// completed with `ok`: when it failed, a request within one chunk changed nothing,
    /// one over several may have changed any of them.
    fn apply(&mut self, offset: u64, blocks: u64, bytes: Option<&[u8]>, ok: bool) {
        let single = offset / BLOCKS_PER_CHUNK == (offset + blocks - 1) / BLOCKS_PER_CHUNK;
        if !ok && single {
            return;
        }
        for (chunk, range, at) in pieces(offset, blocks) {
            let old = &self.chunks[chunk as usize];
            let mut now: Vec<Vec<u8>> = Vec::new();
            for candidate in old {
                let mut new = candidate.clone();
                match bytes {
                    Some(bytes) => new[range.clone()].copy_from_slice(&bytes[at..at + range.len()]),
                    None => new[range.clone()].fill(0),
                }
                if !ok && !now.contains(candidate) {
                    now.push(candidate.clone());
                }
                if !now.contains(&new) {
                    now.push(new);
                }
            }
            self.chunks[chunk as usize] = now;
        }
    }

    /// Checks a successful read of blocks `offset..` against the model; what it saw
    /// settles a chunk that had several possible contents.
    fn read(&mut self, offset: u64, blocks: u64, got: &[u8]) {
        for (chunk, range, at) in pieces(offset, blocks) {
            let seen = &got[at..at + range.len()];
            let candidates = &mut self.chunks[chunk as usize];
            candidates.retain(|c| c[range.clone()] == *seen);
            assert!(
                !candidates.is_empty(),
                "read of blocks {offset}+{blocks} returned wrong data in chunk {chunk}"
            );
        }
    }

    /// Whether chunk `chunk` may hold no data (then a write to it may need a chunk map
    /// the original pm file cannot spare).
    fn may_be_empty(&self, chunk: u64) -> bool {
        self.chunks[chunk as usize]
            .iter()
            .any(|c| c.iter().all(|&b| b == 0))
    }
}

/// For blocks `offset..offset + blocks`: each chunk, the byte range in it, and where
/// those bytes start in the request's buffers.
fn pieces(offset: u64, blocks: u64) -> impl Iterator<Item = (u64, std::ops::Range<usize>, usize)> {
    let end = offset + blocks;
    (offset / BLOCKS_PER_CHUNK..=(end - 1) / BLOCKS_PER_CHUNK).map(move |chunk| {
        let start = chunk * BLOCKS_PER_CHUNK;
        let (from, to) = (offset.max(start), end.min(start + BLOCKS_PER_CHUNK));
        let range = (from - start) as usize * LBS..(to - start) as usize * LBS;
        (chunk, range, (from - offset) as usize * LBS)
    })
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

/// The pm file a soak runs on.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pm {
    /// Of the size this library makes.
    Fixed,
    /// Of the original's smaller size.
    Original,
    /// Of the size this library makes, on what says it is a RAM file system: writes
    /// commit alone, at every drain end, rather than in groups.
    OnRamFs,
}

fn soak(mode: Mode, seed: u64, pm: Pm) {
    let ops = ops_per_mode();
    let original_pm = pm == Pm::Original;
    // One io unit a chunk: the original's pm file holds half the chunk maps it needs.
    let geo = match original_pm {
        false => Geo::small(CHUNKS),
        true => Geo::new(512, 4096, 4096, 512, CHUNKS),
    };
    let rig = Rig::new(geo, mode, CodecKind::test(mode));
    rig.store.set_in_memory(pm == Pm::OnRamFs);
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
        chunks: vec![vec![vec![0; CHUNK]]; CHUNKS as usize],
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
    let mut m = model.borrow_mut();
    for chunk in 0..CHUNKS {
        let got = rig.read(&vol, chunk * BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK);
        let got = got.unwrap_or_else(|e| panic!("chunk {chunk} after the soak: {e}"));
        m.read(chunk * BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK, &got);
    }
    let duplicates = rig.backing.duplicates() + rig.codec.double().duplicates();
    eprintln!(
        "soak {mode:?}, pm file {pm:?}: {} ops ({} reads, {} writes, {} unmaps; {} across \
         chunks) at queue depth {QUEUE_DEPTH}, {} faults injected, {} requests failed \
         with them, {duplicates} completions delivered twice and ignored, {} writes to \
         chunks holding no data refused for space, {} unload/load cycles, {} checker runs \
         clean, 0 mismatches",
        ops,
        m.counts.reads,
        m.counts.writes,
        m.counts.unmaps,
        m.counts.across,
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
    assert!(m.counts.unmaps > 0 && m.counts.across > 0);
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
    let blocks = if rng.chance(20) {
        // Across chunks: into the next one or two.
        let most = (CHUNKS - chunk) * BLOCKS_PER_CHUNK - first;
        rng.range(BLOCKS_PER_CHUNK - first + 1, 3 * BLOCKS_PER_CHUNK)
            .min(most)
    } else if rng.chance(40) {
        BLOCKS_PER_CHUNK - first
    } else {
        1 + rng.below(BLOCKS_PER_CHUNK - first)
    };
    let offset = chunk * BLOCKS_PER_CHUNK + first;
    let len = blocks as usize * LBS;
    let across = first + blocks > BLOCKS_PER_CHUNK;
    in_flight.set(in_flight.get() + 1);
    let (model, in_flight) = (model.clone(), in_flight.clone());
    model.borrow_mut().counts.across += u64::from(across);
    // Up to four segments of any sizes.
    let kind = rng.below(100);
    if kind < 10 {
        vol.unmap(offset, blocks, move |r| {
            let mut m = model.borrow_mut();
            m.counts.unmaps += 1;
            m.apply(offset, blocks, None, r.is_ok());
            // Zeroing part of a chunk is an overwrite of a chunk holding data, which
            // always finds room: never ENOSPC.
            if let Err(e) = r {
                expect_injected(&mut m, e.errno(), true);
            }
            in_flight.set(in_flight.get() - 1);
        });
    } else if kind < 60 {
        let bytes = data(seq, len);
        let segs = split(rng, &bytes, 4);
        vol.writev(offset, blocks, segs, move |r, _| {
            let mut m = model.borrow_mut();
            m.counts.writes += 1;
            m.apply(offset, blocks, Some(&bytes), r.is_ok());
            match r {
                Ok(()) => {}
                // Only a chunk that may hold no data may be refused for space.
                Err(e)
                    if e == Errno::ENOSPC
                        && pieces(offset, blocks).any(|(c, ..)| m.may_be_empty(c)) =>
                {
                    m.counts.enospc += 1
                }
                Err(e) => expect_injected(&mut m, e.errno(), true),
            }
            in_flight.set(in_flight.get() - 1);
        });
    } else {
        let segs = split_lens(rng, len, 4)
            .into_iter()
            .map(|n| vec![0x5A; n])
            .collect();
        vol.readv(offset, blocks, segs, move |r, segs| {
            let mut m = model.borrow_mut();
            m.counts.reads += 1;
            match r {
                Ok(()) => m.read(offset, blocks, &segs.concat()),
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
    let st = vol.stats();
    assert_eq!(
        (st.chunks_in_use, st.io_units_in_use),
        (report.chunks_in_use, report.io_units_referenced)
    );
    rig.backing.set_fault(backing_fault);
    rig.codec.double().set_fault(codec_fault);
}

#[test]
fn soak_immediate() {
    soak(Mode::Immediate, 1, Pm::Fixed);
}

#[test]
fn soak_deferred() {
    soak(Mode::Deferred, 2, Pm::Fixed);
}

#[test]
fn soak_deferred_original_pm_file() {
    soak(Mode::Deferred, 3, Pm::Original);
}

#[test]
fn soak_deferred_pm_file_on_a_ram_file_system() {
    soak(Mode::Deferred, 4, Pm::OnRamFs);
}
