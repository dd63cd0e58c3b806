//! The volume: its public API, and the one place where work happens — the drain loop.
//!
//! Re-entrancy is handled by never calling out while holding state. Every entry point
//! (a caller's request, a backing or codec completion) only *posts an event* and then
//! drains. Draining pops one event, lets the state machine (`Core::handle`) turn it
//! into actions while it holds the state, then releases the state and performs the
//! actions: backing I/O, codec calls, caller callbacks. Anything those call back into
//! (a completion inside the call, a new request from a callback, an unload) posts an
//! event and returns at once, because the volume is already draining. So the stack
//! stays flat however many requests chain from callbacks, and no borrow is held across
//! a call to the outside. When no event is left, the loop lets the engine commit the
//! group of writes whose data is on the device (`Engine::flush_group`), so that writes
//! ready together share their pm persists.
//!
//! A panic while handling an event is a bug in this library; the drain loop stops it
//! there, fails the request the engine had in hand with `EIO` (releasing what it held)
//! and goes on, so one bug costs one request, not the volume.

mod cache;
mod lifecycle;
mod request;
mod split;
mod user;
mod verify;

pub use lifecycle::InitPlan;
#[cfg(feature = "testkit")]
pub use request::MAX_ACTIVE;
pub use split::Op;
pub use user::{Segments, UserIo, segment_pieces, within_one};

pub(crate) use lifecycle::Core;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::backing::{BackingDevice, BackingIo, IoDone};
use crate::codec::{Codec, CodecDone, CodecIo};
use crate::completion::{Receiver, Ticket, Token};
use crate::error::{Error, Result};
use crate::format::Params;
use crate::log::{self, Level};
use crate::pm::PmStore;

/// Completion of init or load.
pub type OpenCallback = Box<dyn FnOnce(Result<Volume>)>;
/// Completion of unload or destroy.
pub type DoneCallback = Box<dyn FnOnce(Result<()>)>;

/// What a volume runs on: the backing device, the compressor and where pm files live.
pub struct Backend {
    /// The device the volume is stored on.
    pub backing: Box<dyn BackingDevice>,
    /// The compressor of its chunks.
    pub codec: Box<dyn Codec>,
    /// Where its pm file is created, opened and removed.
    pub store: Box<dyn PmStore>,
}

/// Something that happened, waiting to be handled by the drain loop.
pub(crate) enum Event {
    Begin,
    Submit {
        op: Op,
        offset: u64,
        length: u64,
        io: Box<dyn UserIo>,
        /// Counted in the volume's statistics (the checker's reads are not).
        counted: bool,
    },
    Reject {
        op: Op,
        io: Box<dyn UserIo>,
        err: Error,
    },
    Unload(DoneCallback),
    BackingDone {
        token: Token,
        io: BackingIo,
        result: Result<()>,
    },
    CodecDone {
        token: Token,
        io: CodecIo,
        result: Result<usize>,
    },
}

impl Event {
    /// What the event is, for a log message.
    fn name(&self) -> &'static str {
        match self {
            Event::Begin => "the start of init, load or destroy",
            Event::Submit { .. } => "a new request",
            Event::Reject { .. } => "a refused request",
            Event::Unload(_) => "an unload",
            Event::BackingDone { .. } => "a backing completion",
            Event::CodecDone { .. } => "a codec completion",
        }
    }
}

/// A call to the outside, made by the drain loop with no state borrowed.
pub(crate) enum Action {
    Read(BackingIo, Token),
    Write(BackingIo, Token),
    Unmap(BackingIo, Token),
    Compress(CodecIo, Token),
    Decompress(CodecIo, Token),
    Finish(Box<dyn UserIo>, Result<()>),
    Opened(OpenCallback, Result<()>),
    Done(DoneCallback, Result<()>),
}

impl Action {
    /// The request operation the action issues, if it issues one.
    fn ticket(&self) -> Option<Ticket> {
        match self {
            Action::Read(_, Token::Request(t))
            | Action::Write(_, Token::Request(t))
            | Action::Unmap(_, Token::Request(t))
            | Action::Compress(_, Token::Request(t))
            | Action::Decompress(_, Token::Request(t)) => Some(*t),
            _ => None,
        }
    }
}

pub(crate) struct Shared {
    core: RefCell<Core>,
    events: RefCell<VecDeque<Event>>,
    draining: Cell<bool>,
    /// The drain loop's action list, kept between drains so a request allocates none.
    actions: Cell<Vec<Action>>,
    backing: Box<dyn BackingDevice>,
    codec: Rc<dyn Codec>,
}

/// Clears the draining flag however the loop ends (a panicking callback included), so
/// the volume is not left deaf.
struct DrainGuard<'a>(&'a Cell<bool>);

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Shared {
    /// Queues `event` and drains, unless a drain further up the stack will see it.
    fn post(self: &Rc<Self>, event: Event) {
        self.events.borrow_mut().push_back(event);
        if !self.draining.get() {
            self.drain();
        }
    }

    fn drain(self: &Rc<Self>) {
        self.draining.set(true);
        let _guard = DrainGuard(&self.draining);
        // Only one drain runs at a time (`draining`); a panic out of one loses the list.
        let mut actions = self.actions.take();
        loop {
            let mut event = self.events.borrow_mut().pop_front();
            // No event left: the moment to commit the group of written pieces (the one
            // place it happens, see `Engine::flush_group`).
            let idle = event.is_none();
            let mut what = event
                .as_ref()
                .map_or("the commit of a group of writes", Event::name);
            // The event (or the commit), then (after a panic that failed a request)
            // what it left undone, until a step runs through or a panic fails no
            // request.
            loop {
                let step = catch_unwind(AssertUnwindSafe(|| {
                    let mut core = self.core.borrow_mut();
                    if let Some(event) = event.take() {
                        core.handle(event, &mut actions);
                    } else if let Some(engine) = core.engine() {
                        if idle {
                            engine.flush_group(&mut actions);
                        } else {
                            engine.resume(&mut actions);
                        }
                    }
                }));
                match step {
                    Ok(()) => break,
                    Err(panic) if self.recover(what, panic.as_ref(), &mut actions) => {
                        what = "the work left after a panic";
                    }
                    Err(_) => break,
                }
            }
            if idle && actions.is_empty() {
                self.actions.set(actions);
                break;
            }
            for action in actions.drain(..) {
                self.perform(action);
            }
        }
    }

    /// After a panic while handling `what`: the request the engine had in hand fails
    /// with `EIO` (logged); the volume goes on. False when no request was in hand.
    fn recover(&self, what: &str, panic: &(dyn Any + Send), actions: &mut Vec<Action>) -> bool {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        let why = format!("panic while handling {what}: {message}");
        let failed = self
            .core
            .borrow_mut()
            .engine()
            .and_then(|engine| engine.recover(&why, actions));
        if failed.is_none() {
            log::emit(
                Level::Error,
                format_args!("internal error ({why}); no request was affected"),
            );
        }
        failed.is_some()
    }

    fn perform(self: &Rc<Self>, action: Action) {
        let io_done = |token| IoDone {
            receiver: self.clone(),
            token,
        };
        let codec_done = |token| CodecDone {
            receiver: self.clone(),
            token,
        };
        match action {
            Action::Read(io, token) => self.backing.read(io, io_done(token)),
            Action::Write(io, token) => self.backing.write(io, io_done(token)),
            Action::Unmap(io, token) => self.backing.unmap(io, io_done(token)),
            Action::Compress(io, token) => self.codec.compress(io, codec_done(token)),
            Action::Decompress(io, token) => self.codec.decompress(io, codec_done(token)),
            Action::Finish(user, result) => user.complete(result),
            Action::Opened(cb, result) => cb(result.map(|()| Volume {
                shared: Rc::clone(self),
            })),
            Action::Done(cb, result) => cb(result),
        }
    }

    fn start(core: Core, backend_backing: Box<dyn BackingDevice>, codec: Rc<dyn Codec>) {
        let shared = Rc::new(Shared {
            core: RefCell::new(core),
            events: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
            actions: Cell::new(Vec::new()),
            backing: backend_backing,
            codec,
        });
        shared.post(Event::Begin);
    }
}

impl Receiver<BackingIo, ()> for Shared {
    fn receive(self: Rc<Self>, token: Token, io: BackingIo, result: Result<()>) {
        self.post(Event::BackingDone { token, io, result });
    }
}

impl Receiver<CodecIo, usize> for Shared {
    fn receive(self: Rc<Self>, token: Token, io: CodecIo, result: Result<usize>) {
        self.post(Event::CodecDone { token, io, result });
    }
}

/// Counters of a loaded volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Info {
    /// Io units marked allocated, as later SPDK releases report them
    /// (`allocated_io_units`): those of the metadata area at the start of the device,
    /// those holding chunk data, and those of writes in flight or being unmapped.
    pub allocated_io_units: u64,
    /// Chunk maps allocated: chunks that hold data, and writes in flight.
    pub chunks_in_use: u64,
    /// Chunk maps the pm file has room for.
    pub chunk_maps_usable: u64,
    /// Requests submitted and not completed.
    pub outstanding: usize,
}

/// Statistics of a loaded volume: the space its data takes, kept up to date at every
/// commit (not by scanning), and the requests completed since it was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Chunks that hold data. A chunk never written, unmapped, or written with zeros
    /// holds none: it reads as zeros and takes no space.
    pub chunks_in_use: u64,
    /// Of those, the ones stored uncompressed (compression saved no io unit).
    pub chunks_raw: u64,
    /// Io units those chunks take.
    pub io_units_in_use: u64,
    /// Io units free to allocate (not counting those of writes in flight, or those
    /// being unmapped on the device).
    pub io_units_free: u64,
    /// Bytes those chunks are stored in (the sum of their compressed sizes; a raw chunk
    /// counts `chunk_size`).
    pub stored_bytes: u64,
    /// Reads completed since load, failed ones included.
    pub reads: u64,
    /// Writes completed since load, failed ones included.
    pub writes: u64,
    /// Unmaps completed since load, failed ones included.
    pub unmaps: u64,
    /// Of the reads, writes and unmaps completed since load, those that failed.
    pub errors: u64,
    /// Chunk reads served from the cache since load, without the device or the codec:
    /// pieces of reads, and the read halves of partial writes and unmaps.
    pub cache_hits: u64,
}

/// A compressed volume. Single-threaded, like SPDK: every call, and every backing and
/// codec completion, happens on the thread that made it. Separate volumes may live on
/// separate threads.
#[derive(Clone)]
pub struct Volume {
    shared: Rc<Shared>,
}

impl Volume {
    /// Creates a volume: pm file, path region, then the superblock. `cb` gets the
    /// volume, or the error with nothing left behind. The superblock records the
    /// codec's [`Compression`](crate::Compression) (or, for a codec that reports none,
    /// the plan's).
    pub fn init(mut plan: InitPlan, backend: Backend, cb: impl FnOnce(Result<Volume>) + 'static) {
        plan.record(backend.codec.compression());
        let codec: Rc<dyn Codec> = backend.codec.into();
        let core = Core::init(plan, backend.store, codec.clone(), Box::new(cb));
        Shared::start(core, backend.backing, codec);
    }

    /// Opens the volume on `backend.backing`.
    pub fn load(backend: Backend, cb: impl FnOnce(Result<Volume>) + 'static) {
        let codec: Rc<dyn Codec> = backend.codec.into();
        let core = Core::load(
            backend.store,
            codec.clone(),
            backend.backing.as_ref(),
            Box::new(cb),
        );
        Shared::start(core, backend.backing, codec);
    }

    /// Loads the volume, clears its signature and removes its pm file.
    pub fn destroy(backend: Backend, cb: impl FnOnce(Result<()>) + 'static) {
        let codec: Rc<dyn Codec> = backend.codec.into();
        let core = Core::destroy(
            backend.store,
            codec.clone(),
            backend.backing.as_ref(),
            Box::new(cb),
        );
        Shared::start(core, backend.backing, codec);
    }

    /// Runs `op` on `length` logical blocks at `offset` through the caller's `io` (whose
    /// buffers hold exactly those blocks; an unmap's hold none). The range may cross
    /// chunk boundaries: the request is split inside and completes once, with the first
    /// error. Requests that share a chunk complete in the order they were submitted.
    pub fn submit(&self, op: Op, offset: u64, length: u64, io: Box<dyn UserIo>) {
        self.post_submit(op, offset, length, io, true);
    }

    fn post_submit(&self, op: Op, offset: u64, length: u64, io: Box<dyn UserIo>, counted: bool) {
        self.shared.post(Event::Submit {
            op,
            offset,
            length,
            io,
            counted,
        });
    }

    /// Completes `io` (a request of `op`) with `err` in order with the volume's other
    /// completions (for requests refused before they reach the volume, such as a bad
    /// iovec).
    pub fn reject(&self, op: Op, io: Box<dyn UserIo>, err: impl Into<Error>) {
        self.shared.post(Event::Reject {
            op,
            io,
            err: err.into(),
        });
    }

    /// Reads into `segs` (whose lengths add up to `length` blocks, of any sizes); they
    /// come back in `cb`. The range may cross chunks.
    pub fn readv(
        &self,
        offset: u64,
        length: u64,
        segs: Vec<Vec<u8>>,
        cb: impl FnOnce(Result<()>, Vec<Vec<u8>>) + 'static,
    ) {
        self.submit(Op::Read, offset, length, Segments::boxed(segs, cb));
    }

    /// Writes `segs` (`length` blocks in all, in segments of any sizes); they come back
    /// in `cb`. The range may cross chunks. A chunk whose new content is all zeros is
    /// not stored: it takes no space and reads as zeros. When `cb` gets
    /// `Ok`, the write is durable (the device completes a write only once its data is
    /// durable, and the volume persists its maps before completing): a crash at any
    /// moment leaves each chunk either old or new, never mixed.
    pub fn writev(
        &self,
        offset: u64,
        length: u64,
        segs: Vec<Vec<u8>>,
        cb: impl FnOnce(Result<()>, Vec<Vec<u8>>) + 'static,
    ) {
        self.submit(Op::Write, offset, length, Segments::boxed(segs, cb));
    }

    /// Discards `length` logical blocks at `offset`: afterwards they read as zeros. A
    /// chunk left all zeros (every chunk the range covers whole) takes no space any more:
    /// its logical map entry is emptied, its chunk map and io units freed, and the
    /// device's [`unmap`](BackingDevice::unmap) is told of the io units. A chunk the range
    /// covers in part has those blocks zeroed by a read-modify-write. The range may cross
    /// chunks; `cb` gets `Ok` once it is durable, or the first error. `EINVAL` for a
    /// range outside the volume.
    pub fn unmap(&self, offset: u64, length: u64, cb: impl FnOnce(Result<()>) + 'static) {
        self.submit(Op::Unmap, offset, length, Box::new(NoBuffers(Box::new(cb))));
    }

    /// Closes the volume: `EBUSY` while requests are outstanding.
    pub fn unload(&self, cb: impl FnOnce(Result<()>) + 'static) {
        self.shared.post(Event::Unload(Box::new(cb)));
    }

    /// Keeps the plain contents of up to `chunks` recently read or written chunks (0:
    /// none), so that a chunk read or written in pieces is read and decompressed once.
    /// Memory is taken as chunks are read or written, up to `chunks` times the chunk
    /// size; the default is 16 chunks, or fewer of chunks over 16 KiB (256 KiB, at
    /// least one chunk). Drops what the cache holds.
    /// `ENODEV` once the volume is unloaded.
    pub fn set_cache_chunks(&self, chunks: u64) -> Result<()> {
        self.shared.core.borrow_mut().set_cache_chunks(chunks)
    }

    /// The volume's parameters (as stored in its superblock).
    pub fn params(&self) -> Params {
        self.shared.core.borrow().params()
    }

    /// The pm file's path, bytes as stored on the device.
    pub fn pm_path(&self) -> std::path::PathBuf {
        self.shared.core.borrow().pm_path()
    }

    /// The volume's counters; all zeros once it is unloaded.
    pub fn info(&self) -> Info {
        self.shared.core.borrow().info()
    }

    /// The volume's statistics; all zeros once it is unloaded.
    pub fn stats(&self) -> Stats {
        self.shared.core.borrow().stats()
    }

    /// A description of the geometry, pm layout, counters and statistics, for logs.
    pub fn describe(&self) -> String {
        self.shared.core.borrow().describe()
    }
}

/// The caller's side of an unmap: no buffers, a completion.
struct NoBuffers(Box<dyn FnOnce(Result<()>)>);

impl UserIo for NoBuffers {
    fn len(&self) -> usize {
        0
    }

    fn gather(&self, _offset: usize, _dst: &mut [u8]) {}

    fn scatter(&mut self, _offset: usize, _src: &[u8]) {}

    fn complete(self: Box<Self>, result: Result<()>) {
        (self.0)(result)
    }
}
