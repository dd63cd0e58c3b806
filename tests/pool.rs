//! The codec pool as a volume's codec: random reads and writes against a shadow copy
//! with many requests in flight, driven only by polling (the pool and the device), in
//! both device completion modes. Every completion must arrive on the polling thread,
//! the workers must have done part of the codec work, and the volume must read back
//! whole after a reload. Then the pool's failures: a codec that fails or panics on a
//! worker, and bad arguments.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::*;
use reduce::testkit::*;
use reduce::*;

/// zstd, counting the operations each thread ran.
#[derive(Clone, Default)]
struct Tracked {
    by_thread: Arc<Mutex<HashMap<ThreadId, usize>>>,
}

impl Tracked {
    fn note(&self) {
        *self
            .by_thread
            .lock()
            .unwrap()
            .entry(std::thread::current().id())
            .or_default() += 1;
    }

    fn ran_elsewhere(&self, me: ThreadId) -> usize {
        let map = self.by_thread.lock().unwrap();
        map.iter().filter(|(t, _)| **t != me).map(|(_, n)| n).sum()
    }
}

impl SyncCodec for Tracked {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        self.note();
        ZstdCodec.compress_buf(src, dst)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        self.note();
        ZstdCodec.decompress_buf(src, dst)
    }
}

/// A volume whose codec is a pool, and the polling that drives it.
struct Driver {
    pool: CodecPool,
    backing: MemBacking,
    store: MemStore,
    geo: Geo,
}

impl Driver {
    fn new(geo: Geo, mode: Mode, pool: CodecPool) -> Driver {
        Driver {
            pool,
            backing: MemBacking::new(geo.blocklen, geo.blockcnt(), mode),
            store: MemStore::new(),
            geo,
        }
    }

    fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: Box::new(self.pool.clone()),
            store: Box::new(self.store.clone()),
        }
    }

    /// One round of a poll loop: the pool, then the device. False when nothing is in
    /// flight anywhere.
    fn poll(&self) -> bool {
        let codec = self.pool.poll() > 0;
        let device = self.backing.poll_one();
        codec || device || self.pool.in_flight() > 0 || self.backing.pending() > 0
    }

    /// Polls until `slot` is filled (a completion that never comes fails the test).
    fn wait<T>(&self, slot: &Slot<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = slot.borrow_mut().take() {
                return v;
            }
            assert!(self.poll(), "nothing in flight, and the callback never ran");
            assert!(Instant::now() < deadline, "callback never ran");
        }
    }

    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.poll() {
            assert!(Instant::now() < deadline, "never went idle");
        }
    }

    fn init(&self) -> Volume {
        let plan = InitPlan::new(
            self.geo.params(),
            self.geo.blocklen,
            self.geo.blockcnt(),
            "/pm",
        )
        .unwrap();
        let s = slot();
        Volume::init(plan, self.backend(), filler(&s));
        self.wait(&s).unwrap()
    }

    fn load(&self) -> Volume {
        let s = slot();
        Volume::load(self.backend(), filler(&s));
        self.wait(&s).unwrap()
    }

    fn unload(&self, vol: &Volume) {
        let s = slot();
        vol.unload(filler(&s));
        self.wait(&s).unwrap();
    }

    fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<()> {
        let s = slot();
        let f = filler(&s);
        let length = (data.len() / self.geo.lbs as usize) as u64;
        vol.writev(offset, length, vec![data.to_vec()], move |r, _| f(r));
        self.wait(&s)
    }

    fn read(&self, vol: &Volume, offset: u64, length: u64) -> Result<Vec<u8>> {
        let s = slot();
        let f = filler(&s);
        let bytes = length as usize * self.geo.lbs as usize;
        vol.readv(offset, length, vec![vec![0xA5; bytes]], move |r, segs| {
            f(r.map(|()| segs.concat()))
        });
        self.wait(&s)
    }

    fn verify(&self, vol: &Volume, shadow: &Shadow) {
        let bpc = self.geo.blocks_per_chunk();
        for chunk in 0..self.geo.chunks {
            let got = self.read(vol, chunk * bpc, bpc).unwrap();
            assert!(
                got == shadow.expect(chunk * bpc, bpc),
                "chunk {chunk} differs from the shadow"
            );
        }
        let s = slot();
        vol.check(filler(&s));
        assert!(self.wait(&s).unwrap().is_clean());
    }
}

#[derive(Default)]
struct Log {
    completed: usize,
    failures: Vec<String>,
    wrong_thread: usize,
}

fn shadow_run(geo: Geo, mode: Mode, threads: usize, seed: u64) {
    let codec = Tracked::default();
    let d = Driver::new(geo, mode, CodecPool::new(codec.clone(), threads).unwrap());
    let me = std::thread::current().id();
    let mut vol = d.init();
    let mut shadow = Shadow::new(geo);
    let mut rng = Rng::new(seed);
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut submitted, mut most_in_flight) = (0, 0);
    for round in 0..24 {
        // A burst, sometimes past the engine's active limit, hot chunks included.
        let big = round % 4 == 1;
        let burst = if big {
            MAX_ACTIVE + 20
        } else {
            1 + rng.below(40) as usize
        };
        for _ in 0..burst {
            let chunk = if rng.chance(30) {
                rng.below(3)
            } else {
                rng.below(geo.chunks)
            };
            let (offset, length) = range_in_chunk(&mut rng, geo, chunk);
            let bytes = length as usize * geo.lbs as usize;
            let sink = log.clone();
            let done = move |r: Result<()>, failure: Option<String>| {
                let mut l = sink.borrow_mut();
                l.completed += 1;
                l.wrong_thread += usize::from(std::thread::current().id() != me);
                if let Err(e) = r {
                    l.failures.push(format!("at block {offset}: {e}"));
                }
                l.failures.extend(failure);
            };
            if rng.chance(55) {
                let data = any_data(&mut rng, bytes);
                shadow.write(offset, &data);
                vol.writev(offset, length, split(&mut rng, &data, 4), move |r, _| {
                    done(r, None)
                });
            } else {
                let want = shadow.expect(offset, length).to_vec();
                let lens = split_lens(&mut rng, bytes, 4);
                let segs = lens.iter().map(|&n| vec![0xA5; n]).collect();
                vol.readv(offset, length, segs, move |r, segs| {
                    let wrong = r.is_ok() && segs.concat() != want;
                    done(
                        r,
                        wrong.then(|| format!("read at block {offset}: wrong data")),
                    );
                });
            }
            submitted += 1;
            most_in_flight = most_in_flight.max(submitted - log.borrow().completed);
            // Deliver a few completions at random moments (none in a big burst).
            for _ in 0..if big { 0 } else { rng.below(3) } {
                d.poll();
            }
        }
        d.drain();
        assert_eq!(log.borrow().completed, submitted, "round {round}");
        if round == 12 {
            d.unload(&vol);
            vol = d.load();
        }
    }
    let l = log.borrow();
    assert!(l.failures.is_empty(), "{:?}", l.failures);
    assert_eq!(l.wrong_thread, 0, "completions on another thread");
    assert!(
        most_in_flight > MAX_ACTIVE,
        "{most_in_flight} in flight at most"
    );
    // The poller runs queued codec work itself when it has nothing to deliver, so on a
    // busy machine it may have run all of the above: one more write, left unpolled
    // until a worker has had ample time to take its compress.
    let data = any_data(&mut rng, geo.chunk as usize);
    shadow.write(0, &data);
    vol.writev(0, geo.blocks_per_chunk(), vec![data], |r, _| r.unwrap());
    std::thread::sleep(Duration::from_millis(100));
    d.drain();
    d.verify(&vol, &shadow);
    assert!(
        codec.ran_elsewhere(me) > 0,
        "the workers never ran the codec"
    );
    d.unload(&vol);
    assert_eq!(d.pool.in_flight(), 0);
}

#[test]
fn shadow_with_many_in_flight_immediate_device() {
    shadow_run(Geo::new(512, 4096, 16384, 512, 48), Mode::Immediate, 1, 1);
    shadow_run(Geo::small(64), Mode::Immediate, 3, 2);
}

#[test]
fn shadow_with_many_in_flight_deferred_device() {
    shadow_run(Geo::new(512, 4096, 16384, 512, 48), Mode::Deferred, 1, 3);
    shadow_run(Geo::small(64), Mode::Deferred, 3, 4);
}

/// zstd that fails, or panics, on the operations `fault` picks (compress: true; the
/// operation's number).
#[derive(Clone)]
struct Faulty {
    fault: Arc<dyn Fn(bool, u64) -> Option<bool> + Send + Sync>,
    ops: Arc<Mutex<u64>>,
}

impl Faulty {
    fn new(fault: impl Fn(bool, u64) -> Option<bool> + Send + Sync + 'static) -> Faulty {
        Faulty {
            fault: Arc::new(fault),
            ops: Arc::default(),
        }
    }

    fn pick(&self, compress: bool) -> Option<bool> {
        let mut ops = self.ops.lock().unwrap();
        *ops += 1;
        (self.fault)(compress, *ops)
    }
}

impl SyncCodec for Faulty {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self.pick(true) {
            Some(true) => panic!("test codec panics on request"),
            Some(false) => Err(Errno::EIO.into()),
            None => ZstdCodec.compress_buf(src, dst),
        }
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self.pick(false) {
            Some(true) => panic!("test codec panics on request"),
            Some(false) => Err(Errno::EIO.into()),
            None => ZstdCodec.decompress_buf(src, dst),
        }
    }
}

/// A compress that fails or panics in the pool stores the chunk raw; a decompress that
/// does fails the read with EIO. The pool keeps working either way.
#[test]
fn codec_failures_and_panics_in_the_pool() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        let geo = Geo::new(512, 4096, 16384, 512, 8);
        let chunk = text(7, 16384);
        // Compressions 1 and 2 fail (error, then panic); decompressions panic while
        // `broken` is set.
        let broken = Arc::new(Mutex::new(false));
        let b = broken.clone();
        let codec = Faulty::new(move |compress, n| match (compress, n) {
            (true, 1) => Some(false),
            (true, 2) => Some(true),
            (false, _) if *b.lock().unwrap() => Some(true),
            _ => None,
        });
        let d = Driver::new(geo, mode, CodecPool::new(codec, 1).unwrap());
        let vol = d.init();
        for c in 0..3u64 {
            d.write(&vol, c * 32, &chunk).unwrap();
        }
        // Chunks 0 and 1 are stored raw (4 io units each), chunk 2 compressed.
        let info = vol.info();
        assert!(info.allocated_io_units < 12, "{info:?}");
        assert!(info.allocated_io_units >= 9, "{info:?}");
        for c in 0..3u64 {
            assert_eq!(d.read(&vol, c * 32, 32).unwrap(), chunk);
        }
        // From here every read decompresses: the cache holds the chunks just read.
        vol.set_cache_chunks(0).unwrap();
        *broken.lock().unwrap() = true;
        // Raw chunks need no codec; the compressed one cannot be read.
        assert_eq!(d.read(&vol, 0, 32).unwrap(), chunk);
        assert_eq!(errno_of(d.read(&vol, 64, 32)), Errno::EIO);
        *broken.lock().unwrap() = false;
        assert_eq!(d.read(&vol, 64, 32).unwrap(), chunk);
        d.unload(&vol);
    }
}

#[test]
fn zero_threads_is_einval() {
    assert_eq!(errno_of(CodecPool::new(ZstdCodec, 0)), Errno::EINVAL);
}

/// A pool stores chunks as its codec does, so init records the codec's algorithm and
/// level in the superblock, and a reload reads them back.
#[test]
fn init_records_the_pools_codec() {
    let zstd9 = Compression {
        algo: CompAlgo::ZSTD,
        level: 9,
    };
    records(ZstdCodec::new(9).unwrap(), zstd9);
    let lz4 = Compression {
        algo: CompAlgo::LZ4,
        level: 1,
    };
    records(Lz4Codec, lz4);
}

fn records(codec: impl SyncCodec + Send + Sync + 'static, want: Compression) {
    let geo = Geo::small(8);
    let d = Driver::new(geo, Mode::Deferred, CodecPool::new(codec, 1).unwrap());
    let vol = d.init();
    assert_eq!(vol.params().compression, want);
    let data = text(3, geo.chunk as usize);
    d.write(&vol, 0, &data).unwrap();
    d.unload(&vol);
    let vol = d.load();
    assert_eq!(vol.params().compression, want);
    assert_eq!(d.read(&vol, 0, geo.blocks_per_chunk()).unwrap(), data);
    d.unload(&vol);
}
