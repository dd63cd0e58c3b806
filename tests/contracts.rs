//! The completion contract, and what a buggy or hostile device, codec or caller can do
//! to a volume: completions delivered twice or late (ignored, logged), a panic inside
//! the engine (one request fails with EIO, the volume goes on), map entries scribbled
//! while loaded (EIO, never another chunk's bytes), and a full volume whose pm file has
//! the original's smaller size (overwrites of chunks holding data always succeed;
//! writes to chunks never written get ENOSPC first). Every case in both completion
//! modes, against a shadow model.

mod common;

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::{Arc, Once};

use common::*;
use reduce::log::{self, Level};
use reduce::testkit::*;
use reduce::{Backend, CodecIo, Errno, FileStore, InitPlan, Volume, ZstdCodec};

const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];

thread_local! {
    static LOGGED: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Messages logged on this thread since the last call. The sink is process-wide and
/// tests run on threads of their own, so each reads only its own thread's messages.
fn logged() -> Vec<(Level, String)> {
    static SINK: Once = Once::new();
    SINK.call_once(|| {
        log::set_sink(Some(Arc::new(|level, text: &str| {
            LOGGED.with(|l| l.borrow_mut().push((level, text.to_string())))
        })))
    });
    LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn count(messages: &[(Level, String)], level: Level, words: &[&str]) -> usize {
    messages
        .iter()
        .filter(|(l, text)| *l == level && words.iter().all(|w| text.contains(w)))
        .count()
}

/// `ops` random reads and writes (whole and partial, one to three segments), submitted
/// together and checked against `shadow`.
fn workload(rig: &Rig, vol: &Volume, shadow: &Rc<RefCell<Shadow>>, rng: &mut Rng, ops: usize) {
    let geo = rig.geo;
    let done = Rc::new(Cell::new(0usize));
    for i in 0..ops {
        let chunk = rng.below(geo.chunks);
        let (offset, length) = range_in_chunk(rng, geo, chunk);
        let bytes = (length * u64::from(geo.lbs)) as usize;
        if rng.chance(60) {
            let data = any_data(rng, bytes);
            shadow.borrow_mut().write(offset, &data);
            let done = done.clone();
            vol.writev(offset, length, split(rng, &data, 3), move |r, _| {
                r.expect("write");
                done.set(done.get() + 1);
            });
        } else {
            let want = shadow.borrow().expect(offset, length).to_vec();
            let done = done.clone();
            let segs = split_lens(rng, bytes, 3)
                .into_iter()
                .map(|n| vec![0xA5; n])
                .collect();
            vol.readv(offset, length, segs, move |r, segs| {
                r.expect("read");
                assert!(segs.concat() == want, "op {i}: read returned wrong data");
                done.set(done.get() + 1);
            });
        }
    }
    rig.drain();
    assert_eq!(done.get(), ops, "requests never completed");
}

// ---------------------------------------------------------------- duplicates

/// Every completion, device and codec, delivered twice: right after the first in
/// immediate mode, later (after other operations) in deferred mode. Each second one is
/// ignored with a warning naming it; the data and the maps stay right.
#[test]
fn every_completion_delivered_twice_is_ignored() {
    for mode in MODES {
        let rig = Rig::new(Geo::small(24), mode, CodecKind::test(mode));
        let vol = rig.init();
        logged();
        rig.backing.set_duplicate(Some(Box::new(|_, _| true)));
        rig.codec
            .double()
            .set_duplicate(Some(Box::new(|_, _| true)));
        let shadow = Rc::new(RefCell::new(Shadow::new(rig.geo)));
        let mut rng = Rng::new(11);
        for _ in 0..20 {
            workload(&rig, &vol, &shadow, &mut rng, 10);
        }
        let duplicates = rig.backing.duplicates() + rig.codec.double().duplicates();
        assert!(duplicates > 200, "{mode:?}: {duplicates}");
        let messages = logged();
        assert_eq!(
            count(
                &messages,
                Level::Warn,
                &["ignored a", "completion for request slot"]
            ) as u64,
            duplicates,
            "{mode:?}: {messages:?}"
        );
        assert_eq!(count(&messages, Level::Error, &[]), 0, "{messages:?}");
        rig.backing.set_duplicate(None);
        rig.codec.double().set_duplicate(None);
        shadow.borrow().verify(&rig, &vol);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

/// Every device completion delivered twice during init and destroy: the second copy of
/// one step's completion arrives while the next step's operation is out, and must not
/// be taken for it. An init whose superblock write fails then fails, leaving no pm
/// file; a destroy whose clearing of the superblock fails keeps the volume loadable.
#[test]
fn duplicated_completions_do_not_advance_init_or_destroy() {
    for mode in MODES {
        let rig = Rig::new(Geo::small(16), mode, CodecKind::Rle);
        logged();
        rig.backing.set_duplicate(Some(Box::new(|_, _| true)));
        // Init reads the header (operation 0), writes the path (1), the superblock (2).
        rig.backing.set_fault(Some(Box::new(|_, op| {
            (op == 2).then_some(Errno(libc::EIO))
        })));
        let failed = rig.init_plan(rig.plan([0; 16]));
        assert_eq!(
            failed.err().map(|e| e.errno()),
            Some(Errno(libc::EIO)),
            "{mode:?}"
        );
        assert!(rig.store.paths().is_empty(), "{mode:?}: pm file left");
        rig.backing.set_fault(None);
        let vol = rig.init();
        rig.unload(&vol).unwrap();
        // Destroy reads the header (3 more operations on), then clears the superblock.
        let at = rig.backing.op_counts().0 + rig.backing.op_counts().1 + 1;
        rig.backing.set_fault(Some(Box::new(move |_, op| {
            (op == at).then_some(Errno(libc::EIO))
        })));
        assert_eq!(
            rig.destroy().err().map(|e| e.errno()),
            Some(Errno(libc::EIO)),
            "{mode:?}"
        );
        rig.backing.set_fault(None);
        rig.backing.set_duplicate(None);
        let vol = rig.load().unwrap();
        rig.unload(&vol).unwrap();
        let messages = logged();
        assert!(
            count(&messages, Level::Warn, &["ignored a backing completion"]) >= 4,
            "{mode:?}: {messages:?}"
        );
    }
}

/// Delivers the next backing read twice (the second one later, in deferred mode).
fn duplicate_next_read(rig: &Rig) {
    let armed = Cell::new(true);
    rig.backing.set_duplicate(Some(Box::new(move |write, _| {
        !write && armed.replace(false)
    })));
}

/// A late duplicate arrives while the request slot it names serves another request,
/// waiting for the same kind of completion. It must not be taken for that request's.
#[test]
fn late_duplicate_is_not_taken_by_the_slot_next_request() {
    let geo = Geo::small(8);
    let rig = Rig::new(geo, Mode::Immediate, CodecKind::Zstd);
    let vol = rig.init();
    let (x, y) = (text(1, 4096), text(2, 4096));
    rig.write(&vol, 8, &x).unwrap();
    rig.write(&vol, 16, &y).unwrap();
    rig.set_mode(Mode::Deferred);
    duplicate_next_read(&rig);
    logged();
    assert_eq!(rig.read(&vol, 8, 8).unwrap(), x);
    // The duplicate of that read is pending now; the next read takes the same slot,
    // and its own read is queued behind the duplicate.
    assert_eq!(rig.backing.pending(), 1);
    assert_eq!(rig.read(&vol, 16, 8).unwrap(), y);
    assert_eq!(rig.backing.duplicates(), 1);
    let messages = logged();
    assert_eq!(
        count(&messages, Level::Warn, &["backing", "request slot 0"]),
        1,
        "{messages:?}"
    );
    rig.unload(&vol).unwrap();
}

/// A read-modify-write whose read completion is delivered again while the request is
/// writing: taken as the write's completion it would commit (and report success)
/// before the data is on the device.
#[test]
fn a_write_completes_only_once_its_data_is_written() {
    let geo = Geo::small(8);
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let old = text(3, 4096);
    rig.write(&vol, 8, &old).unwrap();
    duplicate_next_read(&rig);
    let result = slot();
    let f = filler(&result);
    vol.writev(9, 2, vec![vec![0x77; 1024]], move |r, _| f(r));
    assert!(rig.backing.poll_one(), "the old data's read");
    // Now pending: the read's duplicate, then the write.
    assert_eq!(rig.backing.pending(), 2);
    assert!(rig.backing.poll_one(), "the duplicate");
    assert!(
        result.borrow().is_none(),
        "completed before its data was written"
    );
    assert_eq!(rig.backing.pending(), 1);
    assert!(rig.backing.poll_one(), "the write");
    assert_eq!(result.borrow_mut().take(), Some(Ok(())));
    let mut want = old;
    want[512..1536].fill(0x77);
    assert_eq!(rig.read(&vol, 8, 8).unwrap(), want);
    rig.unload(&vol).unwrap();
}

// ---------------------------------------------------------------- engine panics

/// A codec double whose first compress (or decompress) from operation number `from` on
/// hands back an impossible result: a compressed size with no buffer behind it, or a
/// full chunk in a short buffer. The engine trusts its own buffers, so this panics
/// inside it. Each `from` breaks one operation.
fn break_codec_at(rig: &Rig, compress: bool, from: Rc<Cell<Option<u64>>>) {
    rig.codec.double().set_tamper(Some(Box::new(
        move |is_compress, n, io: &mut CodecIo, result: &mut reduce::Result<usize>| {
            if is_compress == compress && from.get().is_some_and(|from| n >= from) {
                from.set(None);
                io.dst = vec![0; if compress { 0 } else { 10 }].into();
                *result = Ok(if compress { 1 } else { 4096 });
            }
        },
    )));
}

/// After a panic in the engine the request fails with EIO and holds nothing; the
/// volume goes on serving (no EBUSY forever at unload).
#[test]
fn a_panic_in_the_engine_fails_one_request_with_eio() {
    for mode in MODES {
        let geo = Geo::small(16);
        let rig = Rig::new(geo, mode, CodecKind::test(mode));
        let vol = rig.init();
        let shadow = Rc::new(RefCell::new(Shadow::new(geo)));
        let mut rng = Rng::new(5);
        workload(&rig, &vol, &shadow, &mut rng, 60);
        // Chunks 3 and 5 hold compressible data, so their reads decompress (a chunk of
        // zeros is not stored at all).
        for chunk in [3u64, 5] {
            let data = text(chunk, 4096);
            rig.write(&vol, chunk * 8, &data).unwrap();
            shadow.borrow_mut().write(chunk * 8, &data);
        }
        let doomed = Rc::new(Cell::new(None));
        for compress in [true, false] {
            break_codec_at(&rig, compress, doomed.clone());
            for (offset, length) in [(3 * 8, 8u64), (5 * 8 + 2, 3)] {
                let info = vol.info();
                logged();
                doomed.set(Some(rig.codec.double().ops()));
                let r = if compress {
                    rig.write(&vol, offset, &vec![0x42; length as usize * 512])
                } else {
                    rig.read(&vol, offset, length).map(drop)
                };
                assert_eq!(r, Err(Errno::EIO.into()), "{mode:?} compress={compress}");
                let messages = logged();
                assert_eq!(
                    count(&messages, Level::Error, &["internal error", "panic"]),
                    1,
                    "{messages:?}"
                );
                assert_eq!(
                    vol.info(),
                    info,
                    "{mode:?}: the failed request left something"
                );
                assert!(rig.check(&vol).unwrap().is_clean());
            }
        }
        rig.codec.double().set_tamper(None);
        // A burst in flight, one of them broken: only that one fails.
        if mode == Mode::Deferred {
            break_codec_at(&rig, true, doomed.clone());
            doomed.set(Some(rig.codec.double().ops() + 7));
            let failures = Rc::new(RefCell::new(Vec::new()));
            for chunk in 0..16u64 {
                let data = any_data(&mut rng, 4096);
                let (f, s, d) = (failures.clone(), shadow.clone(), data.clone());
                vol.writev(chunk * 8, 8, vec![data], move |r, _| match r {
                    Ok(()) => s.borrow_mut().write(chunk * 8, &d),
                    Err(e) => f.borrow_mut().push((chunk, e.errno())),
                });
            }
            rig.drain();
            assert_eq!(failures.borrow().len(), 1, "{:?}", failures.borrow());
            assert_eq!(failures.borrow()[0].1, Errno::EIO);
            rig.codec.double().set_tamper(None);
        }
        workload(&rig, &vol, &shadow, &mut rng, 60);
        shadow.borrow().verify(&rig, &vol);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

/// Three writes queued on one chunk, the middle one failing with a panic: the one
/// behind it still runs (nothing else would wake it), and the chunk ends as the last
/// write left it.
#[test]
fn a_panic_leaves_the_requests_behind_it_running() {
    for mode in MODES {
        let geo = Geo::small(8);
        let rig = Rig::new(geo, mode, CodecKind::test(mode));
        let vol = rig.init();
        let doomed = Rc::new(Cell::new(Some(rig.codec.double().ops() + 1)));
        break_codec_at(&rig, true, doomed);
        let results = Rc::new(RefCell::new(Vec::new()));
        // Not zeros: a chunk of zeros is not compressed.
        for k in 0..3u8 {
            let r = results.clone();
            vol.writev(16, 8, vec![vec![k + 1; 4096]], move |res, _| {
                r.borrow_mut().push((k, res.map_err(|e| e.errno())))
            });
        }
        rig.drain();
        let want = vec![(0, Ok(())), (1, Err(Errno::EIO)), (2, Ok(()))];
        assert_eq!(*results.borrow(), want, "{mode:?}");
        assert_eq!(rig.read(&vol, 16, 8).unwrap(), vec![3; 4096]);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

/// The device hands back a read buffer of the wrong length: the engine's own
/// invariant breaks, that read fails with EIO, and the next read of the chunk works.
#[test]
fn a_panic_on_a_device_completion_fails_that_request() {
    for mode in MODES {
        let geo = Geo::small(8);
        let rig = Rig::new(geo, mode, CodecKind::Zstd);
        let vol = rig.init();
        let data = text(4, 4096);
        rig.write(&vol, 16, &data).unwrap();
        let armed = Cell::new(true);
        rig.backing.set_tamper(Some(Box::new(move |write, _, io| {
            if !write && armed.replace(false) {
                io.buf = Vec::new().into();
            }
        })));
        logged();
        assert_eq!(rig.read(&vol, 16, 8), Err(Errno::EIO.into()));
        assert_eq!(count(&logged(), Level::Error, &["chunk 2", "panic"]), 1);
        assert_eq!(rig.read(&vol, 16, 8).unwrap(), data);
        assert_eq!(vol.info().outstanding, 0);
        rig.unload(&vol).unwrap();
    }
}

// ---------------------------------------------------------------- map entries

/// A volume on real pm files, so the test can scribble on a loaded volume's pm file
/// the way a stray write would (the mapping is shared with the file).
struct OnFile {
    rig: Rig,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    layout: PmLayout,
}

impl OnFile {
    fn new(mode: Mode) -> OnFile {
        let geo = Geo::small(16);
        let rig = Rig::new(geo, mode, CodecKind::Zstd);
        let dir = tempfile::tempdir().unwrap();
        let plan = InitPlan::new(geo.params(), geo.blocklen, geo.blockcnt(), dir.path()).unwrap();
        let path = plan.pm_path().to_path_buf();
        let s = slot();
        Volume::init(plan, Self::backend(&rig), filler(&s));
        rig.wait(&s).unwrap();
        OnFile {
            rig,
            _dir: dir,
            path,
            layout: PmLayout::new(geo, false),
        }
    }

    fn backend(rig: &Rig) -> Backend {
        Backend {
            backing: Box::new(rig.backing.clone()),
            codec: Box::new(ZstdCodec),
            store: Box::new(FileStore),
        }
    }

    fn load(&self) -> Volume {
        let s = slot();
        Volume::load(Self::backend(&self.rig), filler(&s));
        self.rig.wait(&s).unwrap()
    }

    fn pm(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    fn poke(&self, offset: usize, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(&self.path).unwrap();
        f.write_all_at(bytes, offset as u64).unwrap();
    }

    fn set_entry(&self, chunk: u64, index: u64) {
        self.poke(self.layout.entry_offset(chunk), &index.to_le_bytes());
    }
}

/// Map entries scribbled in the pm file of a loaded volume: a logical entry beyond the
/// file, or naming a free chunk map that still holds an older version of the chunk, or
/// a chunk map listing free io units that still hold one. Reads and read-modify-writes
/// fail with EIO, never returning those bytes with status 0; a whole-chunk write over a
/// scribbled entry replaces it and frees nothing it cannot vouch for.
#[test]
fn scribbled_map_entries_are_eio_never_other_bytes() {
    for mode in MODES {
        let f = OnFile::new(mode);
        let rig = &f.rig;
        let vol = f.load();
        let (v1, v2) = (text(1, 4096), prose(&mut Rng::new(2), 4096));
        for chunk in 1..=4 {
            rig.write(&vol, chunk * 8, &v1).unwrap();
        }
        let before = f.pm();
        // Chunk 2 last: its old chunk map and io units are free and hold v1 (nothing
        // allocated since).
        rig.write(&vol, 3 * 8, &v2).unwrap();
        rig.write(&vol, 2 * 8, &v2).unwrap();
        let pm = f.pm();
        let old = |chunk| f.layout.entry(&before, chunk).unwrap();
        let now = |chunk| f.layout.entry(&pm, chunk).unwrap();
        // Chunk 2's entry names its old, free chunk map; chunk 3's chunk map becomes a
        // copy of that one, listing free io units: both read as v1, checksum and all.
        let old_map = f.layout.map_offset(old(2));
        let stride = f.layout.stride;
        f.poke(
            f.layout.map_offset(now(3)),
            &before[old_map..old_map + stride],
        );
        f.set_entry(1, 1 << 40);
        f.set_entry(2, old(2));
        logged();
        for chunk in 1..=3 {
            assert_eq!(
                rig.read(&vol, chunk * 8, 8),
                Err(Errno::EIO.into()),
                "{mode:?}: read of chunk {chunk}"
            );
            assert_eq!(
                rig.write(&vol, chunk * 8 + 1, &[9; 1024]),
                Err(Errno::EIO.into()),
                "{mode:?}: partial write of chunk {chunk}"
            );
        }
        let messages = logged();
        for (chunk, why) in [
            (1, "beyond the pm file"),
            (2, "is free"),
            (3, "free io unit"),
        ] {
            let name = format!("chunk {chunk}:");
            assert_eq!(
                count(&messages, Level::Error, &[&name, why]),
                2,
                "{messages:?}"
            );
        }
        // A whole-chunk write over chunk 4, whose entry now lies beyond the file.
        f.set_entry(4, u64::MAX - 1);
        rig.write(&vol, 4 * 8, &v2).unwrap();
        assert_eq!(rig.read(&vol, 4 * 8, 8).unwrap(), v2);
        assert_eq!(
            count(&logged(), Level::Error, &["chunk 4:", "nothing of it"]),
            1
        );
        // Put the rest back: it reads as before, and a reload finds every map in order.
        f.set_entry(1, now(1));
        f.set_entry(2, now(2));
        let now_map = f.layout.map_offset(now(3));
        f.poke(now_map, &pm[now_map..now_map + stride]);
        assert_eq!(rig.read(&vol, 8, 8).unwrap(), v1);
        assert_eq!(rig.read(&vol, 16, 8).unwrap(), v2);
        assert_eq!(rig.read(&vol, 24, 8).unwrap(), v2);
        rig.unload(&vol).unwrap();
        let vol = f.load();
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}

// ---------------------------------------------------------------- space

/// The chunks that may hold data in a pm file with `maps` chunk maps: the most that
/// leave a spare map for each of them, up to 128 (the writes that can be in flight).
fn chunks_that_fit(maps: u64) -> u64 {
    (0..=maps)
        .take_while(|&n| n + n.min(MAX_ACTIVE as u64) <= maps)
        .last()
        .unwrap()
}

/// A volume of `geo` whose pm file has the original's size when `original`.
fn volume(geo: Geo, mode: Mode, original: bool) -> (Rig, Volume, u64) {
    let rig = Rig::new(geo, mode, CodecKind::test(mode));
    let vol = rig.init();
    let layout = PmLayout::new(geo, original);
    rig.unload(&vol).unwrap();
    let path = rig.pm_path();
    let mut pm = rig.store.current(&path).unwrap();
    pm.truncate(layout.size);
    rig.store.insert(&path, pm);
    let vol = rig.load().unwrap();
    let maps = (layout.size - layout.chunk_maps) as u64 / layout.stride as u64;
    let maps = maps.min(geo.chunks + EXTRA);
    assert_eq!(vol.info().chunk_maps_usable, maps);
    (rig, vol, maps)
}

/// Fills chunks never written until ENOSPC, then overwrites every chunk holding data,
/// whole and in part, many times and many at once: every overwrite succeeds, every
/// write to a chunk never written gets ENOSPC, nothing leaks, the data reads back.
fn overwrites_always_find_room(geo: Geo, original: bool, rounds: usize) {
    for mode in MODES {
        let (rig, vol, maps) = volume(geo, mode, original);
        let fit = chunks_that_fit(maps).min(geo.chunks);
        let bpc = geo.blocks_per_chunk();
        let mut shadow = Shadow::new(geo);
        let mut rng = Rng::new(9);
        let mut held = 0;
        for chunk in 0..geo.chunks {
            let data = rng.bytes(geo.chunk as usize);
            match rig.write(&vol, chunk * bpc, &data) {
                Ok(()) => {
                    shadow.write(chunk * bpc, &data);
                    held += 1;
                }
                Err(e) => assert_eq!(e, Errno::ENOSPC, "{mode:?} chunk {chunk}"),
            }
        }
        assert_eq!(held, fit, "{geo:?} {mode:?}: chunks written before ENOSPC");
        let shadow = Rc::new(RefCell::new(shadow));
        for round in 0..rounds {
            let failures = Rc::new(RefCell::new(Vec::new()));
            for chunk in 0..geo.chunks {
                let (first, length) = if rng.chance(30) {
                    let first = rng.below(bpc);
                    (first, rng.range(1, bpc - first))
                } else {
                    (0, bpc)
                };
                let offset = chunk * bpc + first;
                // Never all zeros: a chunk of zeros takes no space, and its writes
                // never fail for want of it.
                let mut data = any_data(&mut rng, (length * u64::from(geo.lbs)) as usize);
                data[0] |= 1;
                let (f, s) = (failures.clone(), shadow.clone());
                vol.writev(offset, length, vec![data.clone()], move |r, _| match r {
                    Ok(()) => s.borrow_mut().write(offset, &data),
                    Err(e) => f.borrow_mut().push((chunk, e.errno())),
                });
                if mode == Mode::Immediate || rng.chance(10) {
                    rig.drain();
                }
            }
            rig.drain();
            let failures = failures.borrow();
            assert_eq!(
                failures.len() as u64,
                geo.chunks - fit,
                "{geo:?} {mode:?} round {round}: {:?}",
                &failures[..failures.len().min(5)]
            );
            assert!(
                failures
                    .iter()
                    .all(|&(c, e)| c >= fit && e == Errno::ENOSPC),
                "{geo:?} {mode:?} round {round}: an overwrite failed: {:?}",
                failures.iter().find(|&&(c, _)| c < fit)
            );
        }
        assert_eq!(vol.info().chunks_in_use, fit);
        shadow.borrow().verify(&rig, &vol);
        let report = rig.check(&vol).unwrap();
        assert!(report.is_clean(), "{report}");
        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.borrow().verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

/// The original's pm file: 921 chunk maps for 1024 chunks (4 io units a chunk).
#[test]
fn original_pm_file_overwrites_always_find_room() {
    overwrites_always_find_room(Geo::new(512, 512, 2048, 512, 1024), true, 4);
}

/// Small io units, 8 to a chunk, in the original's pm file.
#[test]
fn original_pm_file_small_io_units_overwrites_always_find_room() {
    overwrites_always_find_room(Geo::new(512, 512, 4096, 512, 256), true, 6);
}

/// One io unit a chunk: the original's pm file holds half the chunk maps it needs.
#[test]
fn original_pm_file_one_io_unit_a_chunk_overwrites_always_find_room() {
    overwrites_always_find_room(Geo::new(512, 4096, 4096, 512, 256), true, 6);
}

/// A pm file of the fixed size never holds anything back: every chunk can be written,
/// and overwritten, at small io units too.
#[test]
fn fixed_pm_file_small_io_units_fills_and_overwrites() {
    overwrites_always_find_room(Geo::new(512, 512, 4096, 512, 96), false, 6);
}
