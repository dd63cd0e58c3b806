//! Power loss at every instant of scripted workloads.
//!
//! Each workload (writes, partial or whole, within a chunk or across several; unmaps
//! of whole chunks, parts of chunks and ranges over many; writes of zeros; groups of
//! writes committed together) runs once in each completion mode (a device and codec
//! completing inside the call, and later from a poll loop), its requests submitted
//! together from inside one completion so that written pieces commit in groups, with
//! the durability journal recording every pm write and persist,
//! every backing write and unmap submitted and completed, and each acknowledgement.
//! Then, for every prefix of that journal — every persist, every completion and the
//! instants between — and for both crash images (only what was durable; everything
//! written or submitted), the test loads the volume left behind and checks: load
//! succeeds once init was acknowledged; every chunk reads back as one whole version:
//! the last acknowledged, or one that a request in flight after it produced (an
//! unmapped chunk reads as zeros); the checker finds nothing wrong (no leak, nothing
//! shared, checksums valid); the volume takes new writes.
//!
//! Destroy is cut the same way, after the workload and an unload: at every instant the
//! image either loads with all acknowledged data or has no signature, the pm file at
//! worst left behind; never a signature whose pm file is gone, except in a forced
//! destroy, where a second forced destroy then clears it. Once a destroy is
//! acknowledged the signature and the pm file are gone; a destroy that could not
//! remove the pm file leaves the volume as it was. A crash while a volume is loaded
//! leaves no lock behind: its pm file loads.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;

use reduce::testkit::*;
use reduce::*;

const INIT_DONE: u64 = u64::MAX;
const UNLOAD_DONE: u64 = u64::MAX - 1;
const DESTROY_BEGIN: u64 = u64::MAX - 2;
const DESTROY_DONE: u64 = u64::MAX - 3;
/// A destroy reported its failure: the volume must be as it was.
const DESTROY_FAILED: u64 = u64::MAX - 4;

/// A request of a script.
#[derive(Clone)]
enum Req {
    /// Offset in logical blocks, and the data (any number of blocks, across chunks).
    Write(u64, Vec<u8>),
    /// Offset and length in logical blocks.
    Unmap(u64, u64),
}

struct Script {
    name: &'static str,
    chunks: u64,
    /// Requests submitted together; each group completes before the next starts.
    groups: Vec<Vec<Req>>,
    /// What follows the unload.
    then: Then,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Then {
    Nothing,
    Destroy,
    /// A destroy whose removal of the pm file fails: the superblock is put back.
    DestroyFailingRemove,
    DestroyForce,
}

struct Recording {
    journal: Journal,
    start: Images,
    /// Every request in submission order, as the (chunk, version index) it produces for
    /// each chunk it touches.
    versions_of: Vec<Vec<(u64, usize)>>,
    /// Each chunk's contents, version 0 being zeros, in the order requests ran.
    versions: Vec<Vec<Vec<u8>>>,
    /// For each group, the requests it ends before, and the last version each chunk
    /// has once it is done.
    group_end: Vec<(usize, Vec<usize>)>,
    pm_path: PathBuf,
}

const BLOCKS_PER_CHUNK: u64 = 8;
const CHUNK: usize = 4096;

fn full(chunk: u64, seed: u64) -> Req {
    Req::Write(chunk * BLOCKS_PER_CHUNK, data(seed, CHUNK))
}

fn partial(chunk: u64, first_block: u64, blocks: u64, seed: u64) -> Req {
    Req::Write(
        chunk * BLOCKS_PER_CHUNK + first_block,
        data(seed, blocks as usize * 512),
    )
}

fn random_chunk(chunk: u64, seed: u64) -> Req {
    let mut rng = Rng::new(seed);
    Req::Write(
        chunk * BLOCKS_PER_CHUNK,
        (0..CHUNK).map(|_| rng.next_u64() as u8).collect(),
    )
}

/// Text (never all zeros) over `blocks` blocks from block `first` of chunk `chunk`,
/// crossing into the chunks after it.
fn across(chunk: u64, first: u64, blocks: u64, seed: u64) -> Req {
    Req::Write(
        chunk * BLOCKS_PER_CHUNK + first,
        text(seed, blocks as usize * 512),
    )
}

fn unmap(chunk: u64, first: u64, blocks: u64) -> Req {
    Req::Unmap(chunk * BLOCKS_PER_CHUNK + first, blocks)
}

fn zeros(chunk: u64, first: u64, blocks: u64) -> Req {
    Req::Write(
        chunk * BLOCKS_PER_CHUNK + first,
        vec![0; blocks as usize * 512],
    )
}

fn record(script: &Script, mode: Mode) -> Recording {
    let geo = Geo::small(script.chunks);
    let rig = Rig::new(geo, mode, CodecKind::test(mode));
    let journal = Journal::new();
    rig.backing.set_journal(Some(journal.clone()));
    rig.store.set_journal(Some(journal.clone()));
    let start = Images {
        backing: rig.backing.image(),
        pm: Default::default(),
    };
    let vol = rig.init();
    journal.mark(INIT_DONE);
    assert_eq!(vol.params().vol_size, script.chunks * CHUNK as u64);

    let mut versions = vec![vec![vec![0u8; CHUNK]]; script.chunks as usize];
    let mut versions_of = Vec::new();
    let mut group_end = Vec::new();
    for group in &script.groups {
        let left = Rc::new(Cell::new(group.len()));
        let mut submits: Vec<Box<dyn FnOnce()>> = Vec::new();
        for req in group {
            let id = versions_of.len() as u64;
            let (offset, blocks) = match req {
                Req::Write(offset, bytes) => (*offset, bytes.len() as u64 / 512),
                Req::Unmap(offset, blocks) => (*offset, *blocks),
            };
            // The new version of each chunk the request touches.
            let mut touched = Vec::new();
            for block in offset..offset + blocks {
                let (chunk, at) = (block / BLOCKS_PER_CHUNK, block % BLOCKS_PER_CHUNK);
                let chunk_versions = &mut versions[chunk as usize];
                if touched.last() != Some(&chunk) {
                    touched.push(chunk);
                    chunk_versions.push(chunk_versions.last().unwrap().clone());
                }
                let new = chunk_versions.last_mut().unwrap();
                let at = at as usize * 512;
                match req {
                    Req::Write(_, bytes) => {
                        let from = (block - offset) as usize * 512;
                        new[at..at + 512].copy_from_slice(&bytes[from..from + 512]);
                    }
                    Req::Unmap(..) => new[at..at + 512].fill(0),
                }
            }
            versions_of.push(
                touched
                    .iter()
                    .map(|&c| (c, versions[c as usize].len() - 1))
                    .collect(),
            );
            let (j, left) = (journal.clone(), left.clone());
            let done = move |r: reduce::Result<()>| {
                r.expect("request while recording");
                j.mark(id);
                left.set(left.get() - 1);
            };
            let v = vol.clone();
            submits.push(match req {
                Req::Write(_, bytes) => {
                    let bytes = bytes.clone();
                    Box::new(move || v.writev(offset, blocks, vec![bytes], move |r, _| done(r)))
                }
                Req::Unmap(..) => Box::new(move || v.unmap(offset, blocks, done)),
            });
        }
        // From inside a completion (of an empty request), so that even a device that
        // completes inside the call takes them all in one drain, as a group.
        vol.unmap(0, 0, move |r| {
            r.expect("an empty request");
            submits.into_iter().for_each(|submit| submit());
        });
        while left.get() > 0 {
            assert!(rig.poll_one(), "requests stuck");
        }
        group_end.push((
            versions_of.len(),
            versions.iter().map(|v| v.len() - 1).collect(),
        ));
    }
    let pm_path = vol.pm_path();
    rig.unload(&vol).expect("unload");
    journal.mark(UNLOAD_DONE);
    if script.then != Then::Nothing {
        journal.mark(DESTROY_BEGIN);
        let result = match script.then {
            Then::DestroyForce => {
                let s = slot();
                Volume::destroy_force(rig.backend(), filler(&s));
                rig.wait(&s)
            }
            Then::DestroyFailingRemove => {
                rig.store.set_fail_remove(Some(Errno(libc::EPERM)));
                rig.destroy()
            }
            _ => rig.destroy(),
        };
        if script.then == Then::DestroyFailingRemove {
            assert_eq!(result, Err(Errno(libc::EPERM).into()));
            journal.mark(DESTROY_FAILED);
        } else {
            result.expect("destroy while recording");
            journal.mark(DESTROY_DONE);
        }
    }
    Recording {
        journal,
        start,
        versions_of,
        versions,
        group_end,
        pm_path,
    }
}

#[derive(Default)]
struct Tally {
    points: usize,
    refused_before_init: usize,
    chunks_verified: usize,
    /// Images a destroy left without a signature.
    destroyed: usize,
}

/// Loads and checks what a power loss after `upto` journal entries leaves.
fn survive(rec: &Recording, script: &Script, upto: usize, crash: Crash, tally: &mut Tally) {
    let entries = rec.journal.entries();
    let marks: HashSet<u64> = entries[..upto]
        .iter()
        .filter_map(|e| match e {
            Entry::Mark(m) => Some(*m),
            _ => None,
        })
        .collect();
    let images = rec.journal.replay(&rec.start, upto, crash);
    let geo = Geo::small(script.chunks);
    let rig = Rig::from_images(geo, &images, Mode::Immediate, CodecKind::Zstd);
    let at = format!("{} at {upto}/{} ({crash:?})", script.name, entries.len());
    if marks.contains(&DESTROY_BEGIN) && destroyed(rec, script, &rig, &marks, &at) {
        tally.destroyed += 1;
        tally.points += 1;
        return;
    }
    let vol = match rig.load() {
        Ok(vol) => vol,
        Err(e) => {
            assert!(!marks.contains(&INIT_DONE), "{at}: load failed: {e:?}");
            assert_eq!(e, Errno::EILSEQ, "{at}: half-made volume");
            tally.refused_before_init += 1;
            tally.points += 1;
            return;
        }
    };
    let mut acked = vec![0usize; script.chunks as usize];
    for (id, touched) in rec.versions_of.iter().enumerate() {
        if marks.contains(&(id as u64)) {
            for &(chunk, version) in touched {
                let a = &mut acked[chunk as usize];
                assert!(*a < version, "{at}: same-chunk requests acked out of order");
                *a = version;
            }
        }
    }
    // The versions a chunk may have: the last acknowledged, or one a request after it
    // produced, up to the end of the group in flight (a request whose effects are
    // durable may not have been acknowledged yet when the next one on its chunk runs).
    let in_flight_end = rec
        .group_end
        .iter()
        .find(|(ends, _)| (0..*ends).any(|id| !marks.contains(&(id as u64))))
        .map(|(_, end)| end);
    for chunk in 0..script.chunks {
        let got = rig
            .read(&vol, chunk * BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK)
            .unwrap_or_else(|e| panic!("{at}: chunk {chunk} unreadable: {e:?}"));
        let versions = &rec.versions[chunk as usize];
        let a = acked[chunk as usize];
        let end = in_flight_end.map_or(0, |end| end[chunk as usize]).max(a);
        let allowed = &versions[a..=end];
        assert!(
            allowed.contains(&got),
            "{at}: chunk {chunk} is neither its acknowledged version {a} nor one after it up to {end}"
        );
        tally.chunks_verified += 1;
    }
    let report = rig.check(&vol).expect("check runs");
    assert!(report.is_clean(), "{at}: {report}");
    assert_eq!(
        vol.info().allocated_io_units,
        report.io_units_referenced + geo.metadata_io_units(),
        "{at}: free map and references disagree"
    );
    assert_eq!(vol.stats().io_units_in_use, report.io_units_referenced);
    // The volume goes on working: a write and a read back.
    let fresh = data(upto as u64, CHUNK);
    rig.write(&vol, 0, &fresh).expect("write after crash");
    assert_eq!(rig.read(&vol, 0, BLOCKS_PER_CHUNK).unwrap(), fresh);
    rig.unload(&vol).expect("unload after crash");
    tally.points += 1;
}

/// Checks an image cut during or after a destroy. True when the volume is gone (and
/// properly so); false when it must still load with all its data.
fn destroyed(rec: &Recording, script: &Script, rig: &Rig, marks: &HashSet<u64>, at: &str) -> bool {
    let image = rig.backing.image();
    let signed = &image[..8] == b"SPDKREDU";
    let pm_files = rig.store.paths();
    let pm_left = pm_files.contains(&rec.pm_path);
    if marks.contains(&DESTROY_DONE) {
        assert!(!signed, "{at}: destroy acknowledged, signature still there");
        assert!(!pm_left, "{at}: destroy acknowledged, pm file still there");
    }
    if marks.contains(&DESTROY_FAILED) {
        assert!(
            signed && pm_left,
            "{at}: a failed destroy changed the volume"
        );
    }
    if !signed {
        // Gone: load and destroy agree there is nothing here.
        assert_eq!(rig.load().err(), Some(Errno::EILSEQ.into()), "{at}");
        return true;
    }
    if !pm_left {
        assert_eq!(
            script.then,
            Then::DestroyForce,
            "{at}: a signature without its pm file"
        );
        assert_eq!(rig.load().err(), Some(Errno::ENOENT.into()), "{at}");
        let s = slot();
        Volume::destroy_force(rig.backend(), filler(&s));
        rig.wait(&s)
            .unwrap_or_else(|e| panic!("{at}: second forced destroy: {e}"));
        assert_ne!(&rig.backing.image()[..8], b"SPDKREDU", "{at}");
        return true;
    }
    false
}

/// Records `script` in each completion mode and checks every crash image; the tallies
/// of both.
fn enumerate(script: Script) -> Tally {
    let mut total = Tally::default();
    for mode in [Mode::Deferred, Mode::Immediate] {
        let rec = record(&script, mode);
        let mut tally = Tally::default();
        for upto in 0..=rec.journal.len() {
            for crash in [Crash::Durable, Crash::Landed] {
                survive(&rec, &script, upto, crash, &mut tally);
            }
        }
        eprintln!(
            "crash points: {} ({mode:?}): {} instants x 2 images = {} survived ({} refused \
             before init completed, as they must be; {} destroyed), {} chunk reads verified",
            script.name,
            rec.journal.len() + 1,
            tally.points,
            tally.refused_before_init,
            tally.destroyed,
            tally.chunks_verified
        );
        assert!(
            tally.refused_before_init > 0,
            "the enumeration must cover init"
        );
        total.points += tally.points;
        total.refused_before_init += tally.refused_before_init;
        total.chunks_verified += tally.chunks_verified;
        total.destroyed += tally.destroyed;
    }
    total
}

#[test]
fn full_chunk_writes() {
    let groups = (0..8).map(|c| vec![full(c, c + 1)]).collect();
    enumerate(Script {
        name: "full-chunk writes",
        chunks: 8,
        groups,
        then: Then::Nothing,
    });
}

#[test]
fn partial_chunk_read_modify_write() {
    let groups = vec![
        vec![full(1, 11)],
        vec![partial(1, 2, 3, 12)],
        vec![partial(2, 0, 1, 13)],
        vec![partial(2, 7, 1, 14)],
        vec![partial(1, 0, 8, 15)],
        vec![partial(3, 4, 4, 16)],
    ];
    enumerate(Script {
        name: "partial-chunk RMW",
        chunks: 4,
        groups,
        then: Then::Nothing,
    });
}

#[test]
fn overwrites_of_one_chunk_in_flight() {
    let groups = vec![
        vec![
            full(3, 21),
            partial(3, 1, 2, 22),
            full(3, 23),
            partial(3, 6, 2, 24),
        ],
        vec![random_chunk(3, 25), partial(3, 0, 1, 26)],
    ];
    enumerate(Script {
        name: "same-chunk overwrites",
        chunks: 4,
        groups,
        then: Then::Nothing,
    });
}

#[test]
fn several_requests_in_flight() {
    let mut group = Vec::new();
    for k in 0..12u64 {
        let chunk = k % 6;
        group.push(if k % 3 == 0 {
            partial(chunk, k % 8, 1, 30 + k)
        } else {
            full(chunk, 30 + k)
        });
    }
    enumerate(Script {
        name: "12 in flight",
        chunks: 6,
        groups: vec![group.clone(), group],
        then: Then::Nothing,
    });
}

#[test]
fn volume_near_full() {
    // Every chunk incompressible: only the extra chunks' space stays free, and the
    // overwrites run in it.
    let fill = (0..8).map(|c| random_chunk(c, 40 + c)).collect();
    let again = (0..8).map(|c| random_chunk(c, 50 + c)).collect();
    let tally = enumerate(Script {
        name: "near full",
        chunks: 8,
        groups: vec![fill, again],
        then: Then::Nothing,
    });
    assert!(tally.chunks_verified > 0);
}

#[test]
fn unmaps_whole_partial_and_across_chunks() {
    let fill = (0..6)
        .map(|c| match c % 2 {
            0 => random_chunk(c, 70 + c),
            _ => across(c, 0, 8, 70 + c),
        })
        .collect();
    let groups = vec![
        fill,
        // One whole chunk; part of a chunk (read-modify-write); the tail of one, a
        // whole one and the head of the next.
        vec![unmap(1, 0, 8)],
        vec![unmap(2, 3, 2)],
        vec![unmap(3, 5, 3 + 8 + 2)],
        // Unmaps and writes of one chunk in flight together.
        vec![full(1, 80), unmap(1, 0, 4), unmap(1, 4, 4), full(1, 81)],
        // Everything, chunks already empty included.
        vec![unmap(0, 0, 6 * 8)],
    ];
    let tally = enumerate(Script {
        name: "unmaps",
        chunks: 6,
        groups,
        then: Then::Nothing,
    });
    assert!(tally.chunks_verified > 0);
}

#[test]
fn writes_across_chunks_and_of_zeros() {
    let groups = vec![
        // Overlapping writes across chunks, in flight together.
        vec![
            across(0, 3, 12, 90),
            across(2, 0, 16, 91),
            across(1, 6, 20, 92),
        ],
        // Zeros: a whole chunk, a part that leaves a chunk holding data, across.
        vec![zeros(0, 0, 8), zeros(1, 2, 4), across(3, 7, 2, 93)],
        vec![zeros(1, 0, 40 - 8)],
    ];
    let tally = enumerate(Script {
        name: "across chunks, zeros",
        chunks: 5,
        groups,
        then: Then::Nothing,
    });
    assert!(tally.chunks_verified > 0);
}

#[test]
fn groups_of_writes_commit_together() {
    let groups = vec![
        // Six first writes, committed as one group.
        (0..6).map(|c| full(c, 100 + c)).collect(),
        // Overwrites of the same chunks in the next group, whole and partial, with an
        // unmap and zeros among them.
        vec![
            random_chunk(0, 110),
            partial(1, 2, 3, 111),
            unmap(2, 0, 8),
            full(3, 112),
            zeros(4, 0, 8),
            across(5, 4, 4, 113),
        ],
        // And again, a chunk twice (the second write waits for the first's group), a
        // partial unmap, a write into the chunk the last group emptied.
        vec![
            full(0, 120),
            full(1, 121),
            full(2, 122),
            unmap(3, 2, 3),
            full(4, 123),
            partial(5, 0, 4, 124),
            full(0, 125),
        ],
    ];
    let tally = enumerate(Script {
        name: "groups",
        chunks: 6,
        groups,
        then: Then::Nothing,
    });
    assert!(tally.chunks_verified > 0);
}

/// A small workload, then a destroy of some kind, cut at every instant.
fn destroy_script(name: &'static str, then: Then) -> Tally {
    let tally = enumerate(Script {
        name,
        chunks: 4,
        groups: vec![
            vec![full(0, 61), random_chunk(1, 62)],
            vec![partial(0, 2, 3, 63), full(3, 64)],
        ],
        then,
    });
    assert!(tally.chunks_verified > 0);
    tally
}

#[test]
fn destroy() {
    let tally = destroy_script("destroy", Then::Destroy);
    assert!(
        tally.destroyed > 0,
        "the enumeration must cover the destroy"
    );
}

#[test]
fn destroy_that_cannot_remove_the_pm_file() {
    // The superblock is cleared, then put back: the cut falls in between too.
    let tally = destroy_script("destroy, removal failing", Then::DestroyFailingRemove);
    assert!(tally.destroyed > 0, "no cut between clearing and restoring");
}

#[test]
fn forced_destroy() {
    let tally = destroy_script("forced destroy", Then::DestroyForce);
    assert!(tally.destroyed > 0);
}

#[test]
fn a_crash_while_loaded_leaves_no_lock() {
    let geo = Geo::small(4);
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::test(Mode::Deferred));
    let journal = Journal::new();
    rig.backing.set_journal(Some(journal.clone()));
    let start = Images {
        backing: rig.backing.image(),
        pm: Default::default(),
    };
    let vol = rig.init();
    let bytes = data(77, CHUNK);
    rig.write(&vol, 2 * BLOCKS_PER_CHUNK, &bytes).unwrap();
    // While the volume is loaded its pm file is held.
    assert!(rig.store.is_locked(vol.pm_path()));
    assert_eq!(rig.load().err(), Some(Errno::EBUSY.into()));
    // The process dies with the volume loaded: the device keeps what completed, the
    // pm file what was persisted, and no one holds the lock any more.
    let images = journal.replay(&start, journal.len(), Crash::Durable);
    rig.store.power_loss();
    assert!(!rig.store.is_locked(vol.pm_path()));
    let after = Rig {
        backing: MemBacking::from_image(geo.blocklen, images.backing, Mode::Deferred),
        ..rig.clone()
    };
    let again = after.load().expect("the crashed volume's pm file loads");
    assert_eq!(
        after
            .read(&again, 2 * BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK)
            .unwrap(),
        bytes
    );
    after.unload(&again).unwrap();
    // The handle from before the crash is inert: dropping it takes nothing with it.
    drop(vol);
    let again = after.load().expect("loads again");
    after.unload(&again).unwrap();
}
