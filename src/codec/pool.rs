//! A pool of codec threads, in the manner of SPDK's accel framework: the volume stays
//! on its own thread and hands each compress or decompress to the pool; worker threads
//! do the work; the finished operations come back on the application's thread when it
//! calls `poll`, so the volume never sees another thread.
//!
//! The [`Engine`] moves [`Job`]s between the threads and knows nothing of what they
//! carry: the Rust [`CodecPool`] sends the volume's buffers, the C pool (`ffi/pool.rs`)
//! the caller's iovecs.
//!
//! The polling thread is a worker too. `poll` delivers what the workers finished, and
//! when there is nothing to deliver it runs a queued job itself, so a poll-mode
//! application that spins on `poll` lends its core to the codec instead of burning it.
//! For the same reason the first queued job wakes no worker: at queue depth 1 the
//! poller runs it at once, as an inline codec would, with no thread handoff. Every job
//! beyond it wakes an idle worker.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Codec, CodecDone, CodecIo, Compression, SyncCodec};
use crate::error::{Errno, Error, Result};
use crate::log::{Level, emit};

/// The codec a pool runs on every thread: shared, so it keeps any per-thread state
/// (zstd's contexts) itself.
pub(crate) type SharedCodec = Arc<dyn SyncCodec + Send + Sync>;

/// How long an idle worker spins for the next job before it sleeps: about a poller's
/// round of deliveries, short of a scheduler tick, so a busy machine loses little.
const LINGER: Duration = Duration::from_micros(30);

/// One codec operation, carried to a thread of the pool and back.
pub(crate) trait Job: Send + 'static {
    /// Does the work with `codec` and keeps the result.
    fn run(&mut self, codec: &dyn SyncCodec);
    /// `run` panicked (a bug in the codec): the job must complete with `err`.
    fn fail(&mut self, err: Error);
}

struct Queue<J> {
    jobs: VecDeque<J>,
    /// Workers asleep and not yet signalled.
    idle: usize,
    /// Signals sent and not yet taken by a waking worker: a worker woken without one
    /// (a spurious wakeup) was still counted idle.
    signals: usize,
    stop: bool,
}

struct Shared<J> {
    codec: SharedCodec,
    queue: Mutex<Queue<J>>,
    work: Condvar,
    /// Finished jobs, waiting for `poll`.
    done: Mutex<VecDeque<J>>,
    /// The lengths of `queue.jobs` and `done`, read without their locks, so a spinning
    /// poller with nothing to do does not contend with the workers.
    queued: AtomicUsize,
    finished: AtomicUsize,
    /// Jobs submitted and not yet delivered.
    pending: AtomicUsize,
}

/// Locks `m`, ignoring poisoning: jobs run under `catch_unwind` and no lock is held
/// across one, so a poisoned lock still guards consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<J: Job> Shared<J> {
    fn submit(&self, job: J) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut q = lock(&self.queue);
        q.jobs.push_back(job);
        self.queued.store(q.jobs.len(), Ordering::Release);
        // The first job is the poller's (see the module comment). A worker is signalled
        // once: more signals to a waking worker would be system calls for nothing.
        let wake = q.jobs.len() > 1 && q.idle > 0;
        if wake {
            q.idle -= 1;
            q.signals += 1;
        }
        drop(q);
        if wake {
            self.work.notify_one();
        }
    }

    /// A queued job, for the calling thread to run.
    fn take(&self) -> Option<J> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.queue);
        let job = q.jobs.pop_front();
        self.queued.store(q.jobs.len(), Ordering::Release);
        job
    }

    fn run(&self, job: &mut J) {
        if catch_unwind(AssertUnwindSafe(|| job.run(self.codec.as_ref()))).is_err() {
            let err = Error::new(Errno::EIO, "codec pool: the codec panicked").logged();
            job.fail(err);
        }
    }

    /// Spins until a job is queued, for at most [`LINGER`].
    fn linger(&self) {
        let start = Instant::now();
        while self.queued.load(Ordering::Acquire) == 0 && start.elapsed() < LINGER {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    fn finish(&self, job: J) {
        let mut done = lock(&self.done);
        done.push_back(job);
        self.finished.store(done.len(), Ordering::Release);
    }

    fn finished(&self) -> Option<J> {
        if self.finished.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut done = lock(&self.done);
        let job = done.pop_front();
        self.finished.store(done.len(), Ordering::Release);
        job
    }

    fn work(&self) {
        loop {
            let mut q = lock(&self.queue);
            let job = loop {
                if let Some(job) = q.jobs.pop_front() {
                    self.queued.store(q.jobs.len(), Ordering::Release);
                    break job;
                }
                if q.stop {
                    return;
                }
                // The poller submits in bursts, as it delivers: wait a little for the
                // next one before sleeping, which costs the poller a wakeup call.
                drop(q);
                self.linger();
                q = lock(&self.queue);
                if !q.jobs.is_empty() || q.stop {
                    continue;
                }
                q.idle += 1;
                q = self.work.wait(q).unwrap_or_else(PoisonError::into_inner);
                if q.signals > 0 {
                    q.signals -= 1;
                } else {
                    q.idle -= 1;
                }
            };
            drop(q);
            let mut job = job;
            self.run(&mut job);
            self.finish(job);
        }
    }
}

/// Worker threads and the queues between them and the polling thread.
pub(crate) struct Engine<J: Job> {
    shared: Arc<Shared<J>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Submits jobs to an [`Engine`]; cheap to clone, and usable after the engine is gone
/// (the jobs then never run: whoever holds one must know the engine is alive).
pub(crate) struct Submitter<J: Job>(Arc<Shared<J>>);

impl<J: Job> Clone for Submitter<J> {
    fn clone(&self) -> Self {
        Submitter(self.0.clone())
    }
}

impl<J: Job> Submitter<J> {
    pub(crate) fn submit(&self, job: J) {
        self.0.submit(job);
    }

    /// What the engine's codec stores chunks with.
    pub(crate) fn compression(&self) -> Compression {
        self.0.codec.compression()
    }
}

impl<J: Job> Engine<J> {
    /// An engine running `codec` on `threads` worker threads (at least one); `EINVAL`
    /// for 0, or the OS error when a thread cannot be started.
    pub(crate) fn new(codec: SharedCodec, threads: usize) -> Result<Engine<J>> {
        if threads == 0 {
            return Err(Error::new(Errno::EINVAL, "codec pool: 0 threads"));
        }
        let engine = Engine {
            shared: Arc::new(Shared {
                codec,
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    idle: 0,
                    signals: 0,
                    stop: false,
                }),
                work: Condvar::new(),
                done: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
            }),
            workers: Mutex::new(Vec::with_capacity(threads)),
        };
        for i in 0..threads {
            let shared = engine.shared.clone();
            let worker = std::thread::Builder::new()
                .name(format!("reduce-codec-{i}"))
                .spawn(move || shared.work())
                .map_err(|e| {
                    Error::new(
                        Errno::from(e),
                        format!("codec pool: cannot start worker thread {i}"),
                    )
                })?;
            lock(&engine.workers).push(worker);
        }
        Ok(engine)
    }

    /// What the engine's codec stores chunks with.
    pub(crate) fn compression(&self) -> Compression {
        self.shared.codec.compression()
    }

    pub(crate) fn submitter(&self) -> Submitter<J> {
        Submitter(self.shared.clone())
    }

    pub(crate) fn submit(&self, job: J) {
        self.shared.submit(job);
    }

    /// Hands every finished job to `deliver`, on the calling thread; with none
    /// finished, runs one queued job here and delivers it. Returns how many were
    /// delivered. No lock is held while `deliver` runs, so it may submit more.
    pub(crate) fn poll(&self, mut deliver: impl FnMut(J)) -> usize {
        // Only what is finished now: deliveries that finish more (a callback that
        // submits, and a fast worker) are left for the next poll.
        let ready = self.shared.finished.load(Ordering::Acquire);
        let mut n = 0;
        while n < ready {
            let Some(job) = self.shared.finished() else {
                break;
            };
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            deliver(job);
            n += 1;
        }
        if n == 0 {
            if let Some(mut job) = self.shared.take() {
                self.shared.run(&mut job);
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                deliver(job);
                n = 1;
            }
        }
        n
    }

    /// Jobs submitted and not yet handed to `deliver`.
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Finishes every queued job (the calling thread helps), stops the workers and
    /// waits for them. Finished jobs stay for `poll`; jobs submitted afterwards are
    /// left to the calling thread's `poll`.
    pub(crate) fn shut_down(&self) {
        while let Some(mut job) = self.shared.take() {
            self.shared.run(&mut job);
            self.shared.finish(job);
        }
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_all();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            if w.join().is_err() {
                emit(
                    Level::Error,
                    format_args!("codec pool: a worker thread panicked"),
                );
            }
        }
    }
}

impl<J: Job> Drop for Engine<J> {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_all();
        for w in std::mem::take(&mut *lock(&self.workers)) {
            // A worker's panic is caught inside it; nothing is left to report.
            let _ = w.join();
        }
    }
}

/// Which way a job goes through the codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Compress,
    Decompress,
}

impl Direction {
    pub(crate) fn apply(self, codec: &dyn SyncCodec, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self {
            Direction::Compress => codec.compress_buf(src, dst),
            Direction::Decompress => codec.decompress_buf(src, dst),
        }
    }
}

/// A volume's codec operation in the Rust pool: the buffers travel; the completion
/// handle stays on the polling thread, in `waiting` at `slot`.
struct RustJob {
    slot: usize,
    direction: Direction,
    io: CodecIo,
    result: Result<usize>,
}

impl Job for RustJob {
    fn run(&mut self, codec: &dyn SyncCodec) {
        let io = &mut self.io;
        self.result = self
            .direction
            .apply(codec, &io.src[..io.src_len], &mut io.dst);
    }

    fn fail(&mut self, err: Error) {
        self.result = Err(err);
    }
}

/// Completion handles of the operations in the pool, by slot.
#[derive(Default)]
struct Waiting {
    slots: Vec<Option<CodecDone>>,
    free: Vec<usize>,
}

impl Waiting {
    fn insert(&mut self, done: CodecDone) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(done);
                i
            }
            None => {
                self.slots.push(Some(done));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) -> Option<CodecDone> {
        let done = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(done)
    }
}

struct Local {
    engine: Engine<RustJob>,
    waiting: RefCell<Waiting>,
}

/// A multi-threaded [`Codec`]: `codec` runs on worker threads, and the volume's
/// completions are delivered by [`CodecPool::poll`] on the thread that calls it, which
/// must be the volume's (the pool, like the volume, stays on the thread that made it).
/// Poll it from the application's poll loop; with nothing to deliver, `poll` runs a
/// queued operation itself.
///
/// Clones share one pool: give one to each volume's [`Backend`](crate::Backend) and
/// keep one to poll. The workers stop when the last clone is dropped; operations still
/// in the pool then are abandoned (a volume holds its clone, so this happens only once
/// nothing can wait for them).
#[derive(Clone)]
pub struct CodecPool {
    local: Rc<Local>,
}

impl CodecPool {
    /// A pool of `threads` worker threads (at least 1) running `codec`. `EINVAL` for
    /// 0 threads, or the OS error when a thread cannot be started.
    pub fn new(codec: impl SyncCodec + Send + Sync + 'static, threads: usize) -> Result<CodecPool> {
        Ok(CodecPool {
            local: Rc::new(Local {
                engine: Engine::new(Arc::new(codec), threads)?,
                waiting: RefCell::default(),
            }),
        })
    }

    /// Delivers the finished operations' completions on this thread, or, with none
    /// finished, runs one queued operation here and delivers it. Returns how many were
    /// delivered (0: nothing was in the pool, or every operation is still running on a
    /// worker).
    pub fn poll(&self) -> usize {
        self.local.engine.poll(|job| {
            let done = self.local.waiting.borrow_mut().remove(job.slot);
            // A slot is filled at submission and emptied only here, once.
            if let Some(done) = done {
                done.complete(job.io, job.result);
            }
        })
    }

    /// Operations submitted and not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.local.engine.in_flight()
    }

    fn submit(&self, direction: Direction, io: CodecIo, done: CodecDone) {
        let slot = self.local.waiting.borrow_mut().insert(done);
        self.local.engine.submit(RustJob {
            slot,
            direction,
            io,
            result: Ok(0),
        });
    }
}

impl Codec for CodecPool {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        self.submit(Direction::Compress, io, done);
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        self.submit(Direction::Decompress, io, done);
    }

    /// The pool stores chunks as its codec does.
    fn compression(&self) -> Compression {
        self.local.engine.compression()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// A job that records which thread ran it.
    struct Probe {
        ran_on: Option<std::thread::ThreadId>,
        failed: bool,
        panic: bool,
    }

    impl Job for Probe {
        fn run(&mut self, _codec: &dyn SyncCodec) {
            assert!(!self.panic, "probe panics on request");
            // Long enough for a woken worker to take some of the queue.
            std::thread::sleep(std::time::Duration::from_micros(200));
            self.ran_on = Some(std::thread::current().id());
        }

        fn fail(&mut self, _err: Error) {
            self.failed = true;
        }
    }

    fn probe(panic: bool) -> Probe {
        Probe {
            ran_on: None,
            failed: false,
            panic,
        }
    }

    fn engine(threads: usize) -> Engine<Probe> {
        Engine::new(Arc::new(crate::codec::ZstdCodec), threads).unwrap()
    }

    #[test]
    fn zero_threads_is_einval() {
        let e = Engine::<Probe>::new(Arc::new(crate::codec::ZstdCodec), 0).err();
        assert_eq!(e.map(|e| e.errno()), Some(Errno::EINVAL));
    }

    #[test]
    fn a_lone_job_is_run_by_the_poller() {
        let e = engine(1);
        e.submit(probe(false));
        let mut got = Vec::new();
        assert_eq!(e.poll(|j| got.push(j)), 1);
        assert_eq!(got[0].ran_on, Some(std::thread::current().id()));
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn queued_jobs_wake_workers_and_come_back_on_poll() {
        let e = engine(2);
        for _ in 0..64 {
            e.submit(probe(false));
        }
        let me = std::thread::current().id();
        let mut got = Vec::new();
        // Spin as a poll-mode application would.
        while got.len() < 64 {
            e.poll(|j| got.push(j));
        }
        assert!(got.iter().all(|j| j.ran_on.is_some() && !j.failed));
        assert!(
            got.iter().any(|j| j.ran_on != Some(me)),
            "no worker ran anything"
        );
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn a_panicking_job_fails_and_the_worker_survives() {
        let e = engine(1);
        e.submit(probe(true));
        e.submit(probe(true));
        e.submit(probe(false));
        let mut got = Vec::new();
        while got.len() < 3 {
            e.poll(|j| got.push(j));
        }
        assert_eq!(got.iter().filter(|j| j.failed).count(), 2);
        assert_eq!(got.iter().filter(|j| j.ran_on.is_some()).count(), 1);
    }

    #[test]
    fn shut_down_finishes_what_was_queued() {
        let e = engine(1);
        for _ in 0..10 {
            e.submit(probe(false));
        }
        e.shut_down();
        let mut got = Vec::new();
        while e.poll(|j| got.push(j)) > 0 {}
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|j| j.ran_on.is_some()));
        // After the workers stopped, a job is the poller's.
        e.submit(probe(false));
        assert_eq!(e.poll(|j| got.push(j)), 1);
    }
}
