//! Group commit: writes whose data is on the device at once commit their pm metadata
//! together, with one persist of their chunk maps and one of their logical map entries,
//! before any of them completes. Counted here from the durability journal of the
//! in-memory pm store; a failed persist fails the whole group and leaves nothing behind
//! (info and statistics against the checker, data against a shadow copy); a steady
//! stream of reads does not hold a write back; a group is committed once it is full
//! even while more writes are in flight; on a RAM file system a write commits alone at
//! once; a written write still waiting for its group is outstanding (unload says
//! EBUSY).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Errno, Problem, Result, Volume};

/// 4 KiB chunks of 1 KiB io units, 128 chunks.
const GEO: Geo = Geo::small(128);
const MODES: [Mode; 2] = [Mode::Deferred, Mode::Immediate];
const CHUNK: usize = 4096;
const BPC: u64 = 8;

/// Each write's chunk and result, in completion order.
type Results = Rc<RefCell<Vec<(u64, Result<()>)>>>;

/// The pm persists recorded in `journal`.
fn persists(journal: &Journal) -> usize {
    journal
        .entries()
        .iter()
        .filter(|e| matches!(e, Entry::PmPersist { .. }))
        .count()
}

/// Submits every write of `writes` (chunk, data) from inside one completion (of an
/// empty request), so that a device completing inside the call takes them in one drain
/// too; their results go into the returned list, in completion order.
fn submit_together(vol: &Volume, writes: Vec<(u64, Vec<u8>)>) -> Results {
    let results: Results = Rc::default();
    let (v, r) = (vol.clone(), results.clone());
    vol.unmap(0, 0, move |empty| {
        empty.expect("an empty request");
        for (chunk, bytes) in writes {
            let r = r.clone();
            v.writev(chunk * BPC, BPC, vec![bytes], move |result, _| {
                r.borrow_mut().push((chunk, result))
            });
        }
    });
    results
}

/// Delivers completions until `n` results are in.
fn wait_for(rig: &Rig, results: &Results, n: usize) {
    while results.borrow().len() < n {
        assert!(rig.poll_one(), "writes stuck");
    }
}

/// Chunks 0..count of distinct compressible data.
fn writes(count: u64, seed: u64) -> Vec<(u64, Vec<u8>)> {
    (0..count).map(|c| (c, text(seed + c, CHUNK))).collect()
}

#[test]
fn thirty_two_writes_ready_at_once_persist_twice() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::test(mode));
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        // Twice: first writes of the chunks, then overwrites (which free the old maps).
        for seed in [1, 100] {
            let journal = Journal::new();
            rig.store.set_journal(Some(journal.clone()));
            let batch = writes(32, seed);
            for (chunk, bytes) in &batch {
                shadow.write(chunk * BPC, bytes);
            }
            let results = submit_together(&vol, batch);
            wait_for(&rig, &results, 32);
            rig.store.set_journal(None);
            assert!(results.borrow().iter().all(|(_, r)| r.is_ok()), "{mode:?}");
            // One group: its chunk maps, then its logical map entries.
            assert_eq!(persists(&journal), 2, "{mode:?}, seed {seed}");
        }
        shadow.verify(&rig, &vol);
        let report = rig.check(&vol).unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.chunks_in_use, 32);
        rig.unload(&vol).unwrap();
    }
}

/// A qd32 loop as a benchmark runs it, polled: each completion submits the next write.
#[test]
fn a_queue_depth_of_32_commits_in_groups() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::test(Mode::Deferred));
    let vol = rig.init();
    let journal = Journal::new();
    rig.store.set_journal(Some(journal.clone()));
    const TOTAL: u64 = 512;
    let next = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(0u64));
    fn issue(vol: &Volume, next: &Rc<Cell<u64>>, done: &Rc<Cell<u64>>) {
        let n = next.get();
        if n == TOTAL {
            return;
        }
        next.set(n + 1);
        let (v, nx, d) = (vol.clone(), next.clone(), done.clone());
        vol.writev((n % 128) * BPC, BPC, vec![text(n, CHUNK)], move |r, _| {
            r.unwrap();
            d.set(d.get() + 1);
            issue(&v, &nx, &d);
        });
    }
    for _ in 0..32 {
        issue(&vol, &next, &done);
    }
    while done.get() < TOTAL {
        assert!(rig.poll_one(), "writes stuck");
    }
    rig.store.set_journal(None);
    let per_write = persists(&journal) as f64 / TOTAL as f64;
    eprintln!("qd32: {per_write:.3} pm persists per write");
    // Two per group of about 32 writes (every write alone would take 2 each).
    assert!(per_write <= 0.125, "{per_write} persists per write");
    assert!(rig.check(&vol).unwrap().is_clean());
    rig.unload(&vol).unwrap();
}

/// A volume with chunks 0..4 written (through a codec double completing in `mode`),
/// and its shadow.
fn four_chunks_written(mode: Mode) -> (Rig, Volume, Shadow) {
    let rig = Rig::new(GEO, mode, CodecKind::test(mode));
    let vol = rig.init();
    let mut shadow = Shadow::new(GEO);
    for (chunk, bytes) in writes(4, 10) {
        rig.write(&vol, chunk * BPC, &bytes).unwrap();
        shadow.write(chunk * BPC, &bytes);
    }
    (rig, vol, shadow)
}

/// A failed persist, of the chunk maps or of the entries, fails every write of the
/// group and leaves the volume as it was: counters, statistics and data.
#[test]
fn a_failed_persist_fails_the_whole_group_and_leaves_nothing() {
    for mode in MODES {
        for after in [0, 1] {
            let (rig, vol, mut shadow) = four_chunks_written(mode);
            let (info, stats) = (vol.info(), vol.stats());
            // Overwrites of chunks 0..4 and first writes of 4..8, in one group.
            rig.store.set_fail_one_persist(after);
            let results = submit_together(&vol, writes(8, 50));
            wait_for(&rig, &results, 8);
            let what = format!("{mode:?}, failing persist {after}");
            for (chunk, result) in results.borrow().iter() {
                let e = result.as_ref().expect_err(&what);
                assert_eq!(e.errno(), Errno::EIO, "{what}: chunk {chunk}");
                assert!(e.detail().contains("persisting their"), "{what}: {e}");
                assert!(e.detail().contains("chunks 0, 1, 2"), "{what}: {e}");
            }
            assert_eq!(vol.info(), info, "{what}");
            let stats_after = vol.stats();
            assert_eq!(
                (
                    stats_after.chunks_in_use,
                    stats_after.io_units_in_use,
                    stats_after.io_units_free,
                    stats_after.stored_bytes
                ),
                (
                    stats.chunks_in_use,
                    stats.io_units_in_use,
                    stats.io_units_free,
                    stats.stored_bytes
                ),
                "{what}"
            );
            let report = rig.check(&vol).unwrap();
            assert!(report.is_clean(), "{what}: {report}");
            assert_eq!(
                vol.info().allocated_io_units,
                report.io_units_referenced + GEO.metadata_io_units(),
                "{what}: free map and references disagree"
            );
            shadow.verify(&rig, &vol);
            // Nothing of the failed group is durable either, and the volume goes on.
            rig.unload(&vol).unwrap();
            let vol = rig.load().unwrap();
            shadow.verify(&rig, &vol);
            let results = submit_together(&vol, writes(8, 60));
            wait_for(&rig, &results, 8);
            for (chunk, bytes) in writes(8, 60) {
                shadow.write(chunk * BPC, &bytes);
            }
            shadow.verify(&rig, &vol);
            rig.unload(&vol).unwrap();
        }
    }
}

/// The entries' persist fails after its pages reached the file (new entries durable),
/// and the power goes later: the commit sets the entries back and persists them again
/// before it frees the group's new chunk maps, so the writes that take those maps next
/// cannot be read through the failed writes' entries. With the setting back failing
/// too, the maps are held (in use, named by nothing, and reported so by the check)
/// until a later persist of those entries succeeds; then they are free and the volume
/// is as before.
#[test]
fn chunk_maps_a_failed_commit_may_name_on_the_file_are_not_reused_until_it_cannot() {
    for mode in MODES {
        for retry_fails in [false, true] {
            let what = format!("{mode:?}, the setting back fails too: {retry_fails}");
            let (rig, vol, mut shadow) = four_chunks_written(mode);
            let info = vol.info();
            // The maps' persist succeeds; the entries' fails, landing (and with
            // `retry_fails`, so does every later one until cleared).
            rig.store.set_failed_persists_land(true);
            if retry_fails {
                rig.store.set_fail_persists_from(1);
            } else {
                rig.store.set_fail_one_persist(1);
            }
            let results = submit_together(&vol, writes(8, 50));
            wait_for(&rig, &results, 8);
            assert!(results.borrow().iter().all(|(_, r)| r.is_err()), "{what}");
            let held = vol.info().allocated_io_units - info.allocated_io_units;
            if retry_fails {
                assert!(held > 0, "{what}: the failed group's maps were freed");
                // The check reports them as held (the pm file failing: EIO), not as
                // leaks (damaged metadata: EILSEQ), each with its io units.
                let report = rig.check(&vol).unwrap();
                assert_eq!(report.errno(), Some(Errno::EIO), "{what}: {report}");
                let mut held_units = 0;
                for problem in &report.problems {
                    match problem {
                        Problem::HeldAfterFailedCommit { io_units, .. } => held_units += io_units,
                        other => panic!("{what}: {other}, not a held map: {report}"),
                    }
                }
                assert_eq!(held_units, held, "{what}: {report}");
            } else {
                assert_eq!(held, 0, "{what}");
            }
            rig.store.set_fail_persist(false);
            rig.store.set_failed_persists_land(false);
            // The check persists the held entries first, and frees their maps.
            let report = rig.check(&vol).unwrap();
            assert!(report.is_clean(), "{what}: {report}");
            assert_eq!(vol.info(), info, "{what}");
            // Writes to other chunks take the maps freed.
            for (chunk, bytes) in writes(16, 90).into_iter().skip(8) {
                rig.write(&vol, chunk * BPC, &bytes).unwrap();
                shadow.write(chunk * BPC, &bytes);
            }
            let report = rig.check(&vol).unwrap();
            assert!(report.is_clean(), "{what}: {report}");
            shadow.verify(&rig, &vol);
            rig.store.power_loss();
            let vol = rig.load().unwrap();
            shadow.verify(&rig, &vol);
            assert!(rig.check(&vol).unwrap().is_clean(), "{what}");
            rig.unload(&vol).unwrap();
        }
    }
}

/// Reads do not join a group, so a group does not wait for them: a write completes
/// while a stream of reads, each submitted from the last one's completion, never stops.
#[test]
fn a_stream_of_reads_does_not_hold_a_write_back() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::test(Mode::Deferred));
    let vol = rig.init();
    // Reads served from the chunk cache complete inside the call, so the chain would
    // never return to the poll loop: these must go to the device.
    vol.set_cache_chunks(0).unwrap();
    rig.write(&vol, BPC, &text(1, CHUNK)).unwrap();
    let reads = Rc::new(Cell::new(0u64));
    fn read_on(vol: &Volume, reads: &Rc<Cell<u64>>) {
        let (v, n) = (vol.clone(), reads.clone());
        vol.readv(BPC, BPC, vec![vec![0; CHUNK]], move |r, _| {
            r.unwrap();
            n.set(n.get() + 1);
            read_on(&v, &n);
        });
    }
    for _ in 0..4 {
        read_on(&vol, &reads);
    }
    let written = slot();
    let w = filler(&written);
    vol.writev(0, BPC, vec![text(2, CHUNK)], move |r, _| w(r));
    let mut polls = 0;
    while written.borrow().is_none() {
        assert!(rig.poll_one());
        polls += 1;
        assert!(polls < 100, "the write waits behind the reads");
    }
    assert_eq!(written.borrow_mut().take(), Some(Ok(())));
    assert!(reads.get() > 0);
    // The reads still run, and are outstanding.
    assert_eq!(rig.unload(&vol).err(), Some(Errno::EBUSY.into()));
}

/// A full group commits without waiting for the writes still in flight.
#[test]
fn a_full_group_commits_while_more_writes_are_in_flight() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::test(Mode::Immediate));
    let vol = rig.init();
    let journal = Journal::new();
    rig.store.set_journal(Some(journal.clone()));
    let results = submit_together(&vol, writes(100, 7));
    // The first 64 complete before the device has written the rest.
    wait_for(&rig, &results, 1);
    assert_eq!(results.borrow().len(), 64);
    assert!(rig.backing.pending() > 0);
    assert_eq!(persists(&journal), 2);
    wait_for(&rig, &results, 100);
    assert_eq!(persists(&journal), 4);
    rig.store.set_journal(None);
    assert!(results.borrow().iter().all(|(_, r)| r.is_ok()));
    assert!(rig.check(&vol).unwrap().is_clean());
    rig.unload(&vol).unwrap();
}

/// On a pm file whose persists cost nothing (a RAM file system), a written write
/// commits at once: it completes while the other is still out (on the device that
/// completes later, or in the codec that does). Both land, in order, and load back.
#[test]
fn on_a_ram_file_system_a_write_does_not_wait_for_a_group() {
    for (device, codec) in [
        (Mode::Deferred, Mode::Immediate),
        (Mode::Immediate, Mode::Deferred),
    ] {
        let rig = Rig::new(GEO, device, CodecKind::test(codec));
        rig.store.set_in_memory(true);
        let vol = rig.init();
        let journal = Journal::new();
        rig.store.set_journal(Some(journal.clone()));
        let results = submit_together(&vol, writes(2, 3));
        // The first write's one operation out: its device write, or its compression.
        let first = match device {
            Mode::Deferred => rig.backing.poll_one(),
            Mode::Immediate => rig.codec.poll_one(),
        };
        assert!(first, "the first write");
        let what = format!("device {device:?}, codec {codec:?}");
        assert_eq!(results.borrow().len(), 1, "{what}: it waits for the second");
        assert_eq!(results.borrow()[0].0, 0, "{what}");
        assert_eq!(persists(&journal), 2, "{what}");
        assert_eq!(vol.info().outstanding, 1, "{what}");
        wait_for(&rig, &results, 2);
        assert_eq!(persists(&journal), 4, "{what}");
        rig.store.set_journal(None);
        assert!(results.borrow().iter().all(|(_, r)| r.is_ok()), "{what}");
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        for (chunk, bytes) in writes(2, 3) {
            assert_eq!(rig.read_chunk(&vol, chunk).unwrap(), bytes, "{what}");
        }
        assert!(rig.check(&vol).unwrap().is_clean(), "{what}");
        rig.unload(&vol).unwrap();
    }
}

/// A write on the device is outstanding until its group commits: unload says EBUSY,
/// and the volume keeps it.
#[test]
fn a_write_waiting_for_its_group_is_outstanding() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::test(Mode::Immediate));
    let vol = rig.init();
    let results = submit_together(&vol, writes(2, 3));
    assert!(rig.backing.poll_one(), "the first write");
    assert!(results.borrow().is_empty(), "committed without its group");
    assert_eq!(vol.info().outstanding, 2);
    assert_eq!(rig.unload(&vol).err(), Some(Errno::EBUSY.into()));
    wait_for(&rig, &results, 2);
    rig.unload(&vol).unwrap();
    let vol = rig.load().unwrap();
    for (chunk, bytes) in writes(2, 3) {
        assert_eq!(rig.read_chunk(&vol, chunk).unwrap(), bytes);
    }
    rig.unload(&vol).unwrap();
}
