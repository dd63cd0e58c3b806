//! The decompressed-chunk cache, from the Rust API, in both completion modes: a chunk
//! read or written in pieces is read and decompressed once (counted at the codec double
//! and the device), and whatever happens in between (writes and unmaps of every shape,
//! failed writes and commits, failed reads, a chunk map index taken again, the checker,
//! a reload) every read returns what the shadow holds.

mod common;

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Errno, Volume};

const GEO: Geo = Geo::new(512, 4096, 16384, 512, 16);
const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];
/// A distinctive errno for injected faults.
const FAULT: Errno = Errno(libc::ENXIO);
/// Logical blocks in a 4 KiB read.
const PIECE: u64 = 4096 / GEO.lbs as u64;

struct Bench {
    rig: Rig,
    vol: Volume,
    shadow: Shadow,
}

impl Bench {
    fn new(mode: Mode) -> Bench {
        let rig = Rig::new(GEO, mode, CodecKind::test(mode));
        let vol = rig.init();
        Bench {
            rig,
            vol,
            shadow: Shadow::new(GEO),
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        self.rig.write(&self.vol, offset, bytes).unwrap();
        self.shadow.write(offset, bytes);
    }

    fn unmap(&mut self, offset: u64, length: u64) {
        self.rig.unmap(&self.vol, offset, length).unwrap();
        self.shadow.unmap(offset, length);
    }

    /// Empties the cache (resizing drops what it holds): of what writes left there too.
    fn drop_cache(&self) {
        self.vol.set_cache_chunks(8).unwrap();
    }

    /// Codec operations and device reads so far.
    fn ops(&self) -> (u64, u64) {
        (
            self.rig.codec.double().ops(),
            self.rig.backing.op_counts().0,
        )
    }

    /// Codec operations and device reads since `before`.
    fn since(&self, before: (u64, u64)) -> (u64, u64) {
        let now = self.ops();
        (now.0 - before.0, now.1 - before.1)
    }

    /// Reads `chunks` 4 KiB at a time, in order, each piece checked against the shadow;
    /// returns the codec operations and device reads it took.
    fn read_pieces(&self, chunks: Range<u64>) -> (u64, u64) {
        let before = self.ops();
        let bpc = GEO.blocks_per_chunk();
        for offset in (chunks.start * bpc..chunks.end * bpc).step_by(PIECE as usize) {
            let got = self.rig.read(&self.vol, offset, PIECE).unwrap();
            assert!(
                got == self.shadow.expect(offset, PIECE),
                "block {offset} differs from the shadow"
            );
        }
        self.since(before)
    }

    /// Writes `chunks` 4 KiB at a time, in order, with compressible data from `seed`;
    /// returns the codec operations and device reads it took.
    fn write_pieces(&mut self, chunks: Range<u64>, seed: u64) -> (u64, u64) {
        let before = self.ops();
        let bpc = GEO.blocks_per_chunk();
        for offset in (chunks.start * bpc..chunks.end * bpc).step_by(PIECE as usize) {
            self.write(offset, &text(seed + offset, 4096));
        }
        self.since(before)
    }
}

/// Compressible data (stored compressed, so a read decompresses).
fn chunk_data(seed: u64) -> Vec<u8> {
    text(seed, GEO.chunk as usize)
}

fn bpc() -> u64 {
    GEO.blocks_per_chunk()
}

#[test]
fn sequential_4k_reads_decompress_each_chunk_once() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..8 {
            b.write(c * bpc(), &chunk_data(c));
        }
        b.drop_cache();
        assert_eq!(
            b.read_pieces(0..8),
            (8, 8),
            "{mode:?}: one read, one decompress a chunk"
        );
        assert_eq!(b.vol.stats().cache_hits, 24, "{mode:?}");
        // Still there: the 8 chunks fit the cache.
        assert_eq!(b.read_pieces(0..8), (0, 0), "{mode:?}");
        // A reload starts empty.
        b.rig.unload(&b.vol).unwrap();
        b.vol = b.rig.load().unwrap();
        assert_eq!(b.vol.stats().cache_hits, 0);
        assert_eq!(b.read_pieces(0..8), (8, 8), "{mode:?}: after a reload");
    }
}

/// A sequential writer of 4 KiB blocks at queue depth 32, as `make bench` runs it (each
/// completion submits the next write, the device polled): 8 chunks in flight, each
/// write of a chunk waiting for the one before it to commit. With the default cache,
/// every chunk is read and decompressed once: each write's entry outlasts the fills of
/// the others in flight until the next write of its chunk takes it.
#[test]
fn a_sequential_4k_writer_at_queue_depth_32_reads_each_chunk_once() {
    const CHUNKS: u64 = 48;
    let geo = Geo::new(512, 4096, 16384, 512, CHUNKS);
    for mode in MODES {
        let rig = Rig::new(geo, mode, CodecKind::test(mode));
        let vol = rig.init();
        let mut shadow = Shadow::new(geo);
        let bpc = geo.blocks_per_chunk();
        for c in 0..CHUNKS {
            let data = text(c, geo.chunk as usize);
            rig.write(&vol, c * bpc, &data).unwrap();
            shadow.write(c * bpc, &data);
        }
        vol.set_cache_chunks(0).unwrap();
        vol.set_cache_chunks(16).unwrap();
        let before = (rig.codec.double().ops(), rig.backing.op_counts().0);
        let total = CHUNKS * bpc / PIECE;
        let next = Rc::new(Cell::new(0u64));
        let done = Rc::new(Cell::new(0u64));
        fn issue(vol: &Volume, next: &Rc<Cell<u64>>, done: &Rc<Cell<u64>>, total: u64) {
            let n = next.get();
            if n == total {
                return;
            }
            next.set(n + 1);
            let (v, nx, d) = (vol.clone(), next.clone(), done.clone());
            vol.writev(n * PIECE, PIECE, vec![text(1000 + n, 4096)], move |r, _| {
                r.unwrap();
                d.set(d.get() + 1);
                issue(&v, &nx, &d, total);
            });
        }
        for n in 0..32 {
            shadow.write(n * PIECE, &text(1000 + n, 4096));
            issue(&vol, &next, &done, total);
        }
        for n in 32..total {
            shadow.write(n * PIECE, &text(1000 + n, 4096));
        }
        while done.get() < total {
            assert!(rig.poll_one(), "{mode:?}: writes stuck");
        }
        let reads = rig.backing.op_counts().0 - before.1;
        // Per chunk: one decompress, then four compresses.
        let codec = rig.codec.double().ops() - before.0;
        assert_eq!(
            (reads, codec),
            (CHUNKS, CHUNKS * 5),
            "{mode:?}: device reads and codec operations"
        );
        assert_eq!(vol.stats().cache_hits, total - CHUNKS, "{mode:?}");
        for c in 0..CHUNKS {
            assert!(
                rig.read(&vol, c * bpc, bpc).unwrap() == shadow.expect(c * bpc, bpc),
                "{mode:?}: chunk {c} differs from the shadow"
            );
        }
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn cache_size_zero_caches_nothing_and_the_size_bounds_it() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..4 {
            b.write(c * bpc(), &chunk_data(c));
        }
        b.vol.set_cache_chunks(0).unwrap();
        assert_eq!(
            b.read_pieces(0..4),
            (16, 16),
            "{mode:?}: every piece reads its chunk"
        );
        assert_eq!(b.vol.stats().cache_hits, 0);

        b.vol.set_cache_chunks(2).unwrap();
        assert_eq!(b.read_pieces(0..3), (3, 3), "{mode:?}");
        // Three chunks went through a cache of two: reading them again reads at least one.
        let (decompressed, _) = b.read_pieces(0..3);
        assert!(decompressed >= 1, "{mode:?}: a cache of 2 held 3 chunks");

        // Resizing drops what is held.
        b.vol.set_cache_chunks(8).unwrap();
        assert_eq!(b.read_pieces(0..1), (1, 1), "{mode:?}");
    }
}

#[test]
fn writes_and_unmaps_between_reads_are_seen() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..6 {
            b.write(c * bpc(), &chunk_data(10 + c));
        }
        b.read_pieces(0..6);

        // A partial write merges into the cached chunk (no read, no decompress: one
        // compress) and the next reads see it.
        let before = b.ops();
        b.write(bpc() + 3, &data(1, 2048));
        assert_eq!(
            b.since(before),
            (1, 0),
            "{mode:?}: the read half came from the cache"
        );
        b.read_pieces(1..2);

        // A partial unmap, then one that leaves the chunk all zeros (emptied).
        b.unmap(2 * bpc() + 8, 8);
        b.read_pieces(2..3);
        b.unmap(2 * bpc(), 8);
        b.unmap(2 * bpc() + 16, bpc() - 16);
        assert!(b.shadow.expect(2 * bpc(), bpc()).iter().all(|&x| x == 0));
        b.read_pieces(2..3);

        // A whole-chunk unmap, a whole-chunk write, a write of zeros.
        b.unmap(3 * bpc(), bpc());
        b.read_pieces(3..4);
        b.write(4 * bpc(), &chunk_data(99));
        b.read_pieces(4..5);
        b.write(5 * bpc(), &vec![0; GEO.chunk as usize]);
        b.read_pieces(5..6);

        // An unmap over several chunks at once.
        b.read_pieces(0..2);
        b.unmap(0, 2 * bpc());
        b.read_pieces(0..2);

        // Chunk maps freed by overwrites are taken again by later writes: a chunk read,
        // then overwritten twice, may hold the chunk map it was read from again, with
        // other data.
        b.write(6 * bpc(), &chunk_data(6));
        for round in 0..4 {
            b.read_pieces(6..7);
            b.write(6 * bpc(), &chunk_data(200 + round));
            b.write(6 * bpc(), &chunk_data(300 + round));
            b.read_pieces(6..7);
        }
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn a_failed_write_leaves_the_old_data_and_a_committed_one_the_new() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        b.write(0, &chunk_data(1));
        b.write(bpc(), &chunk_data(2));
        b.read_pieces(0..2);

        // The device fails the write: the chunk keeps its old data.
        for (offset, len) in [(3, 2048), (0, GEO.chunk as usize)] {
            b.rig
                .backing
                .set_fault(Some(Box::new(|write, _| write.then_some(FAULT))));
            let r = b.rig.write(&b.vol, offset, &data(5, len));
            b.rig.backing.set_fault(None);
            assert_eq!(errno_of(r), FAULT, "{mode:?}");
            b.read_pieces(0..1);
        }

        // Persisting the pm file fails at the commit: the old data again.
        b.rig.store.set_fail_persist(true);
        let r = b.rig.write(&b.vol, bpc() + 5, &data(6, 1024));
        b.rig.store.set_fail_persist(false);
        assert!(r.is_err(), "{mode:?}: the commit cannot persist");
        b.read_pieces(1..2);

        // The same writes committed: the new data.
        b.write(3, &data(5, 2048));
        b.read_pieces(0..1);
        b.write(bpc() + 5, &data(6, 1024));
        b.read_pieces(1..2);
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn a_failed_read_is_not_cached() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        b.write(0, &chunk_data(1));
        b.drop_cache();
        let codec = b.rig.codec.double().clone();
        codec.set_fault(Some(Box::new(|compress, _| (!compress).then_some(FAULT))));
        assert_eq!(
            errno_of(b.rig.read(&b.vol, 0, PIECE)),
            Errno::EIO,
            "{mode:?}"
        );
        codec.set_fault(None);
        assert_eq!(
            b.read_pieces(0..1),
            (1, 1),
            "{mode:?}: read anew, then cached"
        );

        // A checksum that fails: EIO every time, never data from a cache.
        b.write(bpc(), &chunk_data(2));
        b.drop_cache();
        let layout = PmLayout::new(GEO, false);
        let stored = layout.stored(&b.rig.pm_persisted());
        let unit = stored.iter().find(|s| s.chunk == 1).unwrap().io_units[0];
        b.rig
            .backing
            .poke(unit as usize * GEO.io_unit as usize, b"garbage");
        for _ in 0..2 {
            let r = b.rig.read(&b.vol, bpc(), PIECE);
            assert_eq!(errno_of(r), Errno::EIO, "{mode:?}");
        }
    }
}

#[test]
fn the_checker_reads_the_device_not_the_cache() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        b.write(0, &chunk_data(1));
        b.read_pieces(0..1);
        let layout = PmLayout::new(GEO, false);
        let unit = layout.stored(&b.rig.pm_persisted())[0].io_units[0];
        b.rig
            .backing
            .poke(unit as usize * GEO.io_unit as usize, b"garbage");
        let report = b.rig.check(&b.vol).unwrap();
        assert!(!report.is_clean(), "{mode:?}: {report:?}");
        // The cache still holds what was read before the device was damaged behind the
        // volume's back; the checker's reads neither used nor replaced it.
        assert_eq!(b.read_pieces(0..1), (0, 0), "{mode:?}");
    }
}

#[test]
fn set_cache_chunks_after_unload_is_enodev() {
    let b = Bench::new(Mode::Immediate);
    b.rig.unload(&b.vol).unwrap();
    assert_eq!(errno_of(b.vol.set_cache_chunks(4)), Errno::ENODEV);
}

#[test]
fn sequential_4k_writes_read_and_decompress_each_chunk_once() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..4 {
            b.write(c * bpc(), &chunk_data(c));
        }
        b.drop_cache();
        // Each piece compresses; only the first of a chunk reads and decompresses it,
        // the next ones merge into what the one before left in the cache.
        assert_eq!(
            b.write_pieces(0..4, 50),
            (4 + 16, 4),
            "{mode:?}: one read, one decompress a chunk"
        );
        assert_eq!(b.vol.stats().cache_hits, 12, "{mode:?}");
        // The last piece's chunk is there for reads.
        assert_eq!(b.read_pieces(0..4), (0, 0), "{mode:?}");

        // Chunks never written: zeros around the first piece, no device read at all.
        assert_eq!(b.write_pieces(4..6, 60), (8, 0), "{mode:?}");
        assert_eq!(b.read_pieces(4..6), (0, 0), "{mode:?}");

        // A whole chunk written through several segments passes through the volume's
        // buffer: kept too.
        let whole = chunk_data(7);
        let segs = whole.chunks(5000).map(<[u8]>::to_vec).collect();
        b.rig.writev(&b.vol, 6 * bpc(), segs).unwrap();
        b.shadow.write(6 * bpc(), &whole);
        assert_eq!(b.read_pieces(6..7), (0, 0), "{mode:?}");

        // All of it is on the device, too.
        b.drop_cache();
        b.read_pieces(0..7);
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn unmaps_after_writes_merge_into_the_cached_chunk() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        b.write(0, &chunk_data(1));
        b.drop_cache();
        assert_eq!(b.write_pieces(0..1, 20), (5, 1), "{mode:?}");
        // A partial unmap merges zeros into what the writes left: one compress, no read.
        let before = b.ops();
        b.unmap(8, 8);
        assert_eq!(b.since(before), (1, 0), "{mode:?}");
        assert_eq!(b.read_pieces(0..1), (0, 0), "{mode:?}");
        // Unmapping the rest leaves zeros: the chunk is emptied, not kept.
        b.unmap(0, 8);
        b.unmap(16, bpc() - 16);
        assert_eq!(b.read_pieces(0..1), (0, 0), "{mode:?}");
        // Written again in pieces: zeros around the first, then the cache.
        assert_eq!(b.write_pieces(0..1, 30), (4, 0), "{mode:?}");
        // A whole-chunk unmap after writes, then partial writes: zeros around them.
        b.unmap(0, bpc());
        b.read_pieces(0..1);
        assert_eq!(b.write_pieces(0..1, 40), (4, 0), "{mode:?}");
        b.drop_cache();
        b.read_pieces(0..1);
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn a_failed_write_after_cached_writes_leaves_the_old_data() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        b.write(0, &chunk_data(1));
        b.write(bpc(), &chunk_data(2));
        b.drop_cache();
        // Both chunks are in the cache, from their writes.
        assert_eq!(b.write_pieces(0..2, 80), (10, 2), "{mode:?}");
        assert_eq!(b.read_pieces(0..2), (0, 0), "{mode:?}");

        // The device fails a 4 KiB write: the chunk keeps its old data, read from the
        // device (the write took the chunk out as it started).
        b.rig
            .backing
            .set_fault(Some(Box::new(|write, _| write.then_some(FAULT))));
        let r = b.rig.write(&b.vol, PIECE, &text(90, 4096));
        b.rig.backing.set_fault(None);
        assert_eq!(errno_of(r), FAULT, "{mode:?}");
        assert_eq!(b.read_pieces(0..1), (1, 1), "{mode:?}");

        // Persisting fails at the commit, the chunk maps' (0) or the entries' (1): the
        // write's content went into the cache under a chunk map the chunk never named,
        // so the old data is read from the device.
        for after in [0, 1] {
            assert_eq!(b.read_pieces(1..2).1, 0, "{mode:?}: chunk 1 is cached");
            b.rig.store.set_fail_one_persist(after);
            let r = b.rig.write(&b.vol, bpc() + PIECE, &text(91 + after, 4096));
            assert!(r.is_err(), "{mode:?}: persist {after} fails");
            assert_eq!(b.read_pieces(1..2), (1, 1), "{mode:?}: persist {after}");
        }

        // The chunk maps those writes freed are taken again, by another chunk and by
        // chunk 1 itself, written in pieces: every read still matches the shadow.
        b.write(2 * bpc(), &chunk_data(3));
        b.write_pieces(1..2, 95);
        b.read_pieces(0..3);
        b.drop_cache();
        b.read_pieces(0..3);
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn cache_size_zero_writes_read_each_time() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..2 {
            b.write(c * bpc(), &chunk_data(c));
        }
        b.vol.set_cache_chunks(0).unwrap();
        assert_eq!(
            b.write_pieces(0..2, 10),
            (16, 8),
            "{mode:?}: every piece reads, decompresses and compresses its chunk"
        );
        assert_eq!(b.read_pieces(0..2), (8, 8), "{mode:?}");
        assert_eq!(b.vol.stats().cache_hits, 0, "{mode:?}");
        b.shadow.verify(&b.rig, &b.vol);
    }
}

#[test]
fn queued_4k_writes_read_and_decompress_each_chunk_once() {
    for mode in MODES {
        let mut b = Bench::new(mode);
        for c in 0..4 {
            b.write(c * bpc(), &chunk_data(c));
        }
        b.drop_cache();
        // 16 writes in flight at once: those sharing a chunk run one after another, each
        // merging into what the one before left.
        let before = b.ops();
        let done = std::rc::Rc::new(std::cell::Cell::new(0));
        for offset in (0..4 * bpc()).step_by(PIECE as usize) {
            let piece = text(70 + offset, 4096);
            b.shadow.write(offset, &piece);
            let done = done.clone();
            b.vol.writev(offset, PIECE, vec![piece], move |r, _| {
                r.unwrap();
                done.set(done.get() + 1);
            });
        }
        b.rig.drain();
        assert_eq!(done.get(), 16, "{mode:?}");
        assert_eq!(b.since(before), (4 + 16, 4), "{mode:?}");
        assert_eq!(b.read_pieces(0..4), (0, 0), "{mode:?}");
        b.drop_cache();
        b.read_pieces(0..4);
        b.shadow.verify(&b.rig, &b.vol);
    }
}
