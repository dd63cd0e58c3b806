//! The request state machine: reads and writes of a loaded volume.
//!
//! ```text
//! read:   admit ─ chunk never written ──────────────────────────────────────► finish
//!           └─ read_chunk ─► backing_read_done ─ raw ──────────► chunk_ready ► finish
//!                                  └─ compressed ─► decompress_done ─┘
//! write:  admit ─ partial, chunk written ─► read_chunk ─► ... ─► chunk_ready
//!           └─ whole chunk, or never written ─────────────────► chunk_ready
//!         chunk_ready (merge caller's data) ─► compress_done ─► write_chunk (allocate)
//!           ─► write_chunk_done ─► commit (persist chunk map, switch logical map
//!           entry, free old) ─► finish
//!         write_chunk, no space while other writes hold some ─► (waits) ─► write_chunk
//! ```
//!
//! A request keeps one slot of the request table from submission to completion. The
//! slot holds the caller's side and what the request owns beyond its current step (a
//! new chunk map and io units, its claim on buffers); between steps the request's
//! [`Stage`] is parked there too, holding exactly what the request owns at that stage.
//! A step takes the stage in hand, moves what it owns along, and parks it again or
//! finishes the request. A buffer lent to the device or the codec travels in the
//! operation and comes back with its completion.
//!
//! Every operation a request issues carries a [`Ticket`]: its slot and a generation
//! that changes at each operation, so a completion is taken only if it is the one the
//! slot waits for. Anything else (delivered twice, late, for a request long gone) is
//! logged and ignored.
//!
//! If a step panics (a bug), the drain loop calls [`Engine::recover`]: the request in
//! hand completes with `EIO`, releasing its new chunk map and io units and its claim on
//! buffers; whatever it had lent comes back later under a stale ticket and is dropped.
//!
//! Requests to the same chunk run one at a time in submission order (a per-chunk
//! queue). At most [`MAX_ACTIVE`] requests hold chunk buffers at once; the rest wait
//! in order, so any number may be submitted. Everything a request holds (buffers, a
//! new chunk map and its io units) is released before its caller hears of it.
//!
//! Space: a write never replaces a chunk in place, so an overwrite needs a second chunk
//! map and its io units until it commits and frees the old ones. Overwrites of chunks
//! that hold data must always find them, whatever the pm file's size, so chunk maps are
//! held back for them (see [`Engine::room_for_new_chunk`]); writes to chunks never
//! written get `ENOSPC` first. Io units need no such rule: chunks holding data never
//! take more than the volume's own share of them, and the device holds
//! [`EXTRA_CHUNKS`](crate::format::EXTRA_CHUNKS) chunks' worth beyond it. The last
//! resort stays: a write that finds no space while others are writing waits for them
//! to free what they replace.

use std::collections::{HashMap, VecDeque};

use smallvec::SmallVec;

use super::{Action, UserIo};
use crate::backing::{BackingIo, Extent};
use crate::codec::CodecIo;
use crate::completion::{Ticket, Token};
use crate::error::{Errno, Error, Result};
use crate::format::chunk_checksum;
use crate::log::{self, Level};
use crate::maps::{ChunkMap, Metadata, checksum_ok};

/// Requests holding chunk buffers at once. It matches the extra chunk maps, so writes in
/// flight on a volume full of incompressible data still find room.
pub const MAX_ACTIVE: usize = crate::format::EXTRA_CHUNKS as usize;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copies blocks from the volume into the caller's buffers.
    Read,
    /// Stores the caller's buffers in the volume.
    Write,
}

/// What a caller asked for, resolved to one chunk.
#[derive(Clone, Copy)]
struct Request {
    op: Op,
    chunk: u64,
    /// Byte range of the chunk the caller reads or writes.
    start: usize,
    len: usize,
}

/// The two chunk-sized buffers of an active request: `plain` for the chunk's data,
/// `packed` for its compressed form.
struct Buffers {
    plain: Vec<u8>,
    packed: Vec<u8>,
}

impl Buffers {
    /// Lends the buffer that holds the stored form of a chunk (`plain` for a chunk
    /// stored raw, else `packed`) and keeps the other.
    fn lend(self, raw: bool) -> (Vec<u8>, Kept) {
        if raw {
            (
                self.plain,
                Kept {
                    buf: self.packed,
                    raw,
                },
            )
        } else {
            (
                self.packed,
                Kept {
                    buf: self.plain,
                    raw,
                },
            )
        }
    }
}

/// The buffer a request keeps while the other is lent to the device.
struct Kept {
    buf: Vec<u8>,
    /// Whether the lent one is `plain`.
    raw: bool,
}

impl Kept {
    /// Both buffers again, with the lent one back.
    fn rejoin(self, lent: Vec<u8>) -> Buffers {
        if self.raw {
            Buffers {
                plain: lent,
                packed: self.buf,
            }
        } else {
            Buffers {
                plain: self.buf,
                packed: lent,
            }
        }
    }
}

/// Where a parked request is, and what it owns there. The completion that arrives next
/// is named after what finished.
enum Stage {
    /// Behind an earlier request to the same chunk, or waiting for buffers. Holds none.
    Waiting,
    /// Reading `stored` from the device (for a read, or the old data of a partial
    /// write); the buffer for its stored form is lent to the device.
    ReadingChunk {
        stored: ChunkMap,
        kept: Kept,
    },
    /// Both buffers lent to the codec.
    DecompressingChunk,
    CompressingChunk,
    /// Compressed to `size` bytes; waiting for writes in flight to free space.
    WaitingForSpace {
        buffers: Buffers,
        size: usize,
    },
    /// Writing the new chunk (held in the slot), to commit once its data is on the
    /// device; the buffer with its stored form is lent to the device.
    WritingChunk {
        kept: Kept,
    },
}

/// Who completes an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Backing,
    Codec,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Backing => "backing",
            Kind::Codec => "codec",
        }
    }
}

impl Stage {
    /// Whose completion the stage waits for, if any.
    fn awaits(&self) -> Option<Kind> {
        match self {
            Stage::ReadingChunk { .. } | Stage::WritingChunk { .. } => Some(Kind::Backing),
            Stage::DecompressingChunk | Stage::CompressingChunk => Some(Kind::Codec),
            Stage::Waiting | Stage::WaitingForSpace { .. } => None,
        }
    }
}

/// A chunk map allocated for a write, with its io units: `map` goes in at `index`.
struct NewChunk {
    index: u64,
    map: ChunkMap,
    /// The chunk held data when the map was allocated: the write replaces it, and frees
    /// the old map when it commits.
    replaces: bool,
}

/// One entry of the request table.
struct Slot {
    /// Changes at every operation issued from the slot, when it comes back, and when
    /// the request ends: a completion is taken only with the generation it was issued
    /// with.
    generation: u64,
    /// The caller's side, from submission until the request completes.
    user: Option<Box<dyn UserIo>>,
    request: Request,
    /// The parked request's stage; `None` while a step has it in hand, or when free.
    stage: Option<Stage>,
    /// On its chunk's queue (so its end lets the next one go).
    queued: bool,
    /// The next request to the same chunk, admitted when this one finishes.
    next: Option<usize>,
    /// Holds a pair of chunk buffers (one of the [`MAX_ACTIVE`]).
    active: bool,
    /// The chunk map and io units of its write, from allocation until commit.
    new: Option<NewChunk>,
}

/// The I/O side of a loaded volume.
pub(crate) struct Engine {
    /// Boxed: the engine sits in the volume's phase, beside much smaller ones.
    pub(crate) meta: Box<Metadata>,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    outstanding: usize,
    /// The last request queued on each busy chunk.
    chunk_tails: HashMap<u64, usize>,
    /// Requests now at the head of their chunk, to admit.
    to_admit: VecDeque<usize>,
    /// Admitted requests waiting for buffers.
    waiting: VecDeque<usize>,
    /// Requests holding buffers.
    active: usize,
    spare_buffers: Vec<Vec<u8>>,
    /// Requests writing their chunk, holding a new chunk map and io units.
    writing: usize,
    /// Of those, the ones replacing a chunk that holds data.
    overwriting: u64,
    /// Compressed writes that found no space while others were writing.
    space_waiters: VecDeque<usize>,
    /// The request a step has in hand: the one to fail if the step panics.
    in_hand: Option<usize>,
}

impl Engine {
    pub(crate) fn new(meta: Metadata) -> Engine {
        Engine {
            meta: Box::new(meta),
            slots: Vec::new(),
            free_slots: Vec::new(),
            outstanding: 0,
            chunk_tails: HashMap::new(),
            to_admit: VecDeque::new(),
            waiting: VecDeque::new(),
            active: 0,
            spare_buffers: Vec::new(),
            writing: 0,
            overwriting: 0,
            space_waiters: VecDeque::new(),
            in_hand: None,
        }
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Takes a request: into a slot first, so it is answered whatever happens next;
    /// then validated (an invalid one completes at once, holding nothing) and queued.
    pub(crate) fn submit(
        &mut self,
        op: Op,
        offset: u64,
        length: u64,
        user: Box<dyn UserIo>,
        out: &mut Vec<Action>,
    ) {
        let user_len = user.len();
        let id = self.open_slot(user);
        let (chunk, start, len) = match self.locate(offset, length, user_len) {
            Ok(Some(place)) => place,
            Ok(None) => return self.complete(id, Ok(()), out),
            Err(e) => return self.complete(id, Err(e), out),
        };
        let slot = &mut self.slots[id];
        slot.request = Request {
            op,
            chunk,
            start,
            len,
        };
        slot.queued = true;
        self.park(id, Stage::Waiting);
        match self.chunk_tails.insert(chunk, id) {
            Some(prev) => self.slots[prev].next = Some(id),
            None => self.to_admit.push_back(id),
        }
        self.run_admissions(out);
    }

    /// A slot for a new request, with the caller's side in it, in hand.
    fn open_slot(&mut self, user: Box<dyn UserIo>) -> usize {
        let slot = Slot {
            generation: 0,
            user: Some(user),
            request: Request {
                op: Op::Read,
                chunk: 0,
                start: 0,
                len: 0,
            },
            stage: None,
            queued: false,
            next: None,
            active: false,
            new: None,
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                // The generation goes on from the slot's last request, so none of that
                // request's tickets can match this one's.
                let generation = self.slots[id].generation;
                self.slots[id] = Slot { generation, ..slot };
                id
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.outstanding += 1;
        self.in_hand = Some(id);
        id
    }

    /// (chunk, byte start, byte length) of a request, `None` for an empty one.
    fn locate(
        &self,
        offset: u64,
        length: u64,
        user_len: usize,
    ) -> Result<Option<(u64, usize, usize)>> {
        if length == 0 {
            return Ok(None);
        }
        let geo = &self.meta.geo;
        let lbs = u64::from(geo.params.logical_block_size);
        let per_chunk = u64::from(geo.blocks_per_chunk);
        let blocks = geo.chunks * per_chunk;
        let invalid = |why: String| Err(Error::new(Errno::EINVAL, why));
        let end = match offset.checked_add(length) {
            Some(end) if end <= blocks => end,
            _ => {
                return invalid(format!(
                    "blocks {offset}+{length} run past the end of the volume ({blocks} blocks)"
                ));
            }
        };
        let chunk = offset / per_chunk;
        if (end - 1) / per_chunk != chunk {
            return invalid(format!(
                "blocks {offset}+{length} cross a chunk boundary ({per_chunk} blocks a chunk)"
            ));
        }
        if length.checked_mul(lbs) != Some(user_len as u64) {
            return invalid(format!(
                "buffers of {user_len} bytes for {length} blocks of {lbs} bytes"
            ));
        }
        let start = (offset % per_chunk * lbs) as usize;
        Ok(Some((chunk, start, user_len)))
    }

    fn request(&self, id: usize) -> Request {
        self.slots[id].request
    }

    /// The caller's side of request `id`, which is in flight.
    fn user(&mut self, id: usize) -> &mut dyn UserIo {
        self.slots[id]
            .user
            .as_deref_mut()
            .expect("a request in flight has its caller's side")
    }

    fn park(&mut self, id: usize, stage: Stage) {
        self.slots[id].stage = Some(stage);
        self.in_hand = None;
    }

    /// Takes in hand request `id`, queued by the engine itself as waiting (for its
    /// chunk, buffers or space). Anything else there stays in place: the queues would
    /// be out of step with the slots.
    fn take_queued(&mut self, id: usize) -> Option<Stage> {
        let slot = &mut self.slots[id];
        match slot.stage.take() {
            Some(stage @ (Stage::Waiting | Stage::WaitingForSpace { .. })) => {
                self.in_hand = Some(id);
                Some(stage)
            }
            other => {
                debug_assert!(false, "request {id} queued but not waiting");
                slot.stage = other;
                None
            }
        }
    }

    /// A new generation for an operation request `id` issues: the token it goes out
    /// with.
    fn issue(&mut self, id: usize) -> Token {
        let slot = &mut self.slots[id];
        slot.generation += 1;
        Token::Request(Ticket {
            slot: id,
            generation: slot.generation,
        })
    }

    /// Takes in hand the request a `kind` completion with `ticket` belongs to, if it is
    /// the operation that request waits for. Anything else is logged and ignored: the
    /// caller's device or codec completed something twice, late, or not ours.
    fn accept(&mut self, ticket: Ticket, kind: Kind) -> Option<Stage> {
        let why = match self.slots.get_mut(ticket.slot) {
            None => "there is no such request",
            Some(slot) if slot.user.is_none() => "that request has completed",
            Some(slot) if slot.generation != ticket.generation => {
                "that request is not waiting for this operation (delivered twice, or late)"
            }
            Some(slot) => match &slot.stage {
                Some(stage) if stage.awaits() == Some(kind) => {
                    slot.generation += 1;
                    self.in_hand = Some(ticket.slot);
                    return slot.stage.take();
                }
                _ => "that request is not waiting for this kind of completion",
            },
        };
        log::emit(
            Level::Warn,
            format_args!("ignored a {} completion for {ticket}: {why}", kind.name()),
        );
        None
    }

    /// Admits requests that reached the head of their chunk; a loop, not recursion, so
    /// long same-chunk queues that finish at once do not deepen the stack.
    fn run_admissions(&mut self, out: &mut Vec<Action>) {
        while let Some(id) = self.to_admit.pop_front() {
            self.admit(id, out);
        }
    }

    fn admit(&mut self, id: usize, out: &mut Vec<Action>) {
        if self.take_queued(id).is_none() {
            return;
        }
        let request = self.request(id);
        if request.op == Op::Read && self.meta.logical_entry(request.chunk).is_none() {
            self.user(id).zero();
            return self.finish(id, None, Ok(()), out);
        }
        if self.active == MAX_ACTIVE {
            self.park(id, Stage::Waiting);
            return self.waiting.push_back(id);
        }
        self.active += 1;
        self.slots[id].active = true;
        let buffers = Buffers {
            plain: self.take_buffer(),
            packed: self.take_buffer(),
        };
        self.start(id, buffers, out);
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let size = self.meta.geo.chunk_size();
        self.spare_buffers.pop().unwrap_or_else(|| vec![0; size])
    }

    fn start(&mut self, id: usize, mut buffers: Buffers, out: &mut Vec<Action>) {
        let request = self.request(id);
        let whole = request.start == 0 && request.len == self.meta.geo.chunk_size();
        // A whole-chunk write needs nothing of what was there.
        if request.op == Op::Write && whole {
            return self.chunk_ready(id, buffers, out);
        }
        match self.meta.lookup(request.chunk) {
            Ok(Some(stored)) => self.read_chunk(id, stored, buffers, out),
            Ok(None) => {
                // A chunk never written reads as zeros around the caller's data.
                buffers.plain.fill(0);
                self.chunk_ready(id, buffers, out)
            }
            Err(e) => self.finish(id, Some(buffers), Err(e.logged()), out),
        }
    }

    fn read_chunk(&mut self, id: usize, stored: ChunkMap, buffers: Buffers, out: &mut Vec<Action>) {
        let extents = self.extents(&stored.io_units);
        let (buf, kept) = buffers.lend(stored.is_raw(&self.meta.geo));
        self.park(id, Stage::ReadingChunk { stored, kept });
        let token = self.issue(id);
        out.push(Action::Read(BackingIo { buf, extents }, token));
    }

    /// Block runs for io units laid out one after another in a chunk buffer; adjacent
    /// units merge into one run.
    fn extents(&self, io_units: &[u64]) -> SmallVec<[Extent; 4]> {
        let geo = &self.meta.geo;
        let mut extents: SmallVec<[Extent; 4]> = SmallVec::new();
        for (k, &unit) in io_units.iter().enumerate() {
            let lba = geo.io_unit_lba(unit);
            match extents.last_mut() {
                Some(last) if last.lba + u64::from(last.lba_count) == lba => {
                    last.lba_count += geo.lba_per_io_unit
                }
                _ => extents.push(Extent {
                    lba,
                    lba_count: geo.lba_per_io_unit,
                    buf_offset: k * geo.io_unit_size(),
                }),
            }
        }
        extents
    }

    /// A backing read or write finished.
    pub(crate) fn backing_done(
        &mut self,
        ticket: Ticket,
        io: BackingIo,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        let id = ticket.slot;
        match self.accept(ticket, Kind::Backing) {
            Some(Stage::ReadingChunk { stored, kept }) => {
                self.backing_read_done(id, stored, kept.rejoin(io.buf), result, out)
            }
            Some(Stage::WritingChunk { kept }) => {
                self.write_chunk_done(id, kept.rejoin(io.buf), result, out)
            }
            // Refused (and logged) by `accept`, which hands out only a stage that waits
            // for the device.
            _ => {}
        }
        self.run_admissions(out);
    }

    /// A compress or decompress finished.
    pub(crate) fn codec_done(
        &mut self,
        ticket: Ticket,
        io: CodecIo,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let id = ticket.slot;
        match self.accept(ticket, Kind::Codec) {
            Some(Stage::DecompressingChunk) => self.decompress_done(id, io, result, out),
            Some(Stage::CompressingChunk) => self.compress_done(id, io, result, out),
            // Refused (and logged) by `accept`, which hands out only a stage that waits
            // for the codec.
            _ => {}
        }
        self.run_admissions(out);
    }

    fn backing_read_done(
        &mut self,
        id: usize,
        stored: ChunkMap,
        buffers: Buffers,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = result {
            return self.finish(id, Some(buffers), Err(e), out);
        }
        let raw = stored.is_raw(&self.meta.geo);
        let stored_len = stored.compressed_size as usize;
        let data = if raw { &buffers.plain } else { &buffers.packed };
        // Never hand back or merge into data that does not match what was written.
        if !checksum_ok(&stored, &data[..stored_len]) {
            let e = Error::new(
                Errno::EIO,
                format!(
                    "chunk {}: checksum mismatch in its {stored_len} stored bytes",
                    self.request(id).chunk
                ),
            );
            return self.finish(id, Some(buffers), Err(e.logged()), out);
        }
        if raw {
            return self.chunk_ready(id, buffers, out);
        }
        self.park(id, Stage::DecompressingChunk);
        let io = CodecIo {
            src: buffers.packed,
            src_len: stored_len,
            dst: buffers.plain,
        };
        let token = self.issue(id);
        out.push(Action::Decompress(io, token));
    }

    fn decompress_done(
        &mut self,
        id: usize,
        io: CodecIo,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let chunk_size = self.meta.geo.chunk_size();
        let buffers = Buffers {
            plain: io.dst,
            packed: io.src,
        };
        let why = match result {
            Ok(n) if n == chunk_size => return self.chunk_ready(id, buffers, out),
            Ok(n) => format!("decompressing gave {n} bytes, not {chunk_size}"),
            Err(e) => match e.detail() {
                "" => format!("the codec failed to decompress it (errno {})", e.errno().0),
                detail => format!("the codec failed to decompress it: {detail}"),
            },
        };
        let chunk = self.request(id).chunk;
        let e = Error::new(Errno::EIO, format!("chunk {chunk}: {why}"));
        self.finish(id, Some(buffers), Err(e.logged()), out)
    }

    /// The chunk's current content is in `plain`: a read copies out and is done; a
    /// write merges the caller's data and compresses.
    fn chunk_ready(&mut self, id: usize, mut buffers: Buffers, out: &mut Vec<Action>) {
        let request = self.request(id);
        let range = request.start..request.start + request.len;
        if request.op == Op::Read {
            self.user(id).scatter(0, &buffers.plain[range]);
            return self.finish(id, Some(buffers), Ok(()), out);
        }
        self.user(id).gather(0, &mut buffers.plain[range]);
        self.park(id, Stage::CompressingChunk);
        let io = CodecIo {
            src_len: buffers.plain.len(),
            src: buffers.plain,
            dst: buffers.packed,
        };
        let token = self.issue(id);
        out.push(Action::Compress(io, token));
    }

    fn compress_done(
        &mut self,
        id: usize,
        io: CodecIo,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let geo = self.meta.geo;
        let chunk_size = geo.chunk_size();
        // Store compressed only when it saves an io unit; a failed compress stores raw.
        let size = match result {
            Ok(n)
                if n > 0
                    && n <= chunk_size
                    && geo.io_units_for(n as u32) < geo.io_units_per_chunk =>
            {
                n
            }
            _ => chunk_size,
        };
        let buffers = Buffers {
            plain: io.src,
            packed: io.dst,
        };
        self.write_chunk(id, buffers, size, out);
    }

    /// The rule that keeps overwrites from running out of chunk maps: a write to a chunk
    /// that holds no data may take a chunk map only if, counting it, the chunks holding
    /// data (or being written for the first time) plus one spare map for each of them,
    /// up to [`MAX_ACTIVE`] spares, fit in the chunk maps the pm file has. An overwrite
    /// holds its spare from allocation until it commits; one request per chunk runs at a
    /// time and at most `MAX_ACTIVE` hold buffers, so that many spares cover every
    /// overwrite that can be in flight at once.
    fn room_for_new_chunk(&self) -> bool {
        let held = self.meta.chunk_maps_in_use() - self.overwriting + 1;
        held + held.min(MAX_ACTIVE as u64) <= self.meta.chunk_maps_usable()
    }

    /// Allocates a chunk map and io units for the stored chunk of `size` bytes and
    /// writes it. A chunk never written gets `ENOSPC` when the spare chunk maps are
    /// all that is left. When the volume is out of space while other writes hold
    /// allocations, waits for them: each frees the chunk it replaces. Only with none in
    /// flight is it `ENOSPC`.
    fn write_chunk(&mut self, id: usize, buffers: Buffers, size: usize, out: &mut Vec<Action>) {
        let geo = self.meta.geo;
        let chunk = self.request(id).chunk;
        let replaces = self.meta.logical_entry(chunk).is_some();
        if !replaces && !self.room_for_new_chunk() {
            let e = Error::new(
                Errno::ENOSPC,
                format!(
                    "chunk {chunk}: never written, and the {} free chunk maps are held back for overwrites of the chunks that hold data",
                    self.meta.chunk_maps_usable() - self.meta.chunk_maps_in_use()
                ),
            );
            return self.finish(id, Some(buffers), Err(e), out);
        }
        let (index, io_units) = match self.meta.allocate(geo.io_units_for(size as u32)) {
            Ok(allocation) => allocation,
            Err(_) if self.writing > 0 => {
                self.park(id, Stage::WaitingForSpace { buffers, size });
                return self.space_waiters.push_back(id);
            }
            Err(e) => return self.finish(id, Some(buffers), Err(e), out),
        };
        let extents = self.extents(&io_units);
        let written = io_units.len() * geo.io_unit_size();
        // In the slot before anything else can go wrong, so it is never lost.
        self.hold_new(
            id,
            NewChunk {
                index,
                map: ChunkMap {
                    compressed_size: size as u32,
                    checksum: 0,
                    io_units,
                },
                replaces,
            },
        );
        let (mut buf, kept) = buffers.lend(size == geo.chunk_size());
        // The last io unit's tail would carry stale bytes of an earlier chunk.
        buf[size..written].fill(0);
        self.new_chunk(id).map.checksum = chunk_checksum(&buf[..size]);
        self.park(id, Stage::WritingChunk { kept });
        let token = self.issue(id);
        out.push(Action::Write(BackingIo { buf, extents }, token));
    }

    /// Request `id` now holds `new` (and counts among the writes in flight).
    fn hold_new(&mut self, id: usize, new: NewChunk) {
        self.writing += 1;
        self.overwriting += u64::from(new.replaces);
        self.slots[id].new = Some(new);
    }

    /// The new chunk of request `id`, which is writing.
    fn new_chunk(&mut self, id: usize) -> &mut NewChunk {
        self.slots[id]
            .new
            .as_mut()
            .expect("a write in flight holds its new chunk")
    }

    /// Takes back the new chunk request `id` holds, if any: no longer a write in flight.
    fn drop_new(&mut self, id: usize) -> Option<NewChunk> {
        let new = self.slots[id].new.take()?;
        self.writing -= 1;
        self.overwriting -= u64::from(new.replaces);
        Some(new)
    }

    fn write_chunk_done(
        &mut self,
        id: usize,
        buffers: Buffers,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        let chunk = self.request(id).chunk;
        // A device error is the device's to explain; a failed commit is ours.
        let committed = match result {
            Ok(()) => {
                let new = self.slots[id]
                    .new
                    .as_ref()
                    .expect("a write in flight holds its new chunk");
                self.meta
                    .commit(chunk, new.index, &new.map)
                    .map_err(Error::logged)
            }
            Err(e) => Err(e),
        };
        if let Some(new) = self.drop_new(id) {
            if committed.is_err() {
                self.meta.release(new.index, &new.map.io_units);
            }
        }
        self.finish(id, Some(buffers), committed, out);
        self.retry_space_waiters(out);
    }

    /// Space may have been freed (or nothing holds any more): retries the writes waiting
    /// for it, each once (one that still finds none queues again).
    fn retry_space_waiters(&mut self, out: &mut Vec<Action>) {
        for _ in 0..self.space_waiters.len() {
            let Some(waiter) = self.space_waiters.pop_front() else {
                break;
            };
            if let Some(Stage::WaitingForSpace { buffers, size }) = self.take_queued(waiter) {
                self.write_chunk(waiter, buffers, size, out);
            }
        }
    }

    /// Releases everything request `id` holds (`buffers`, if it was active), lets the
    /// next request on its chunk and the next waiting for buffers go, then reports to
    /// the caller.
    fn finish(
        &mut self,
        id: usize,
        buffers: Option<Buffers>,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        if let Some(Buffers { plain, packed }) = buffers {
            self.spare_buffers.push(plain);
            self.spare_buffers.push(packed);
        }
        self.end(id, result, out);
    }

    /// Gives up request `id`'s claim on buffers and its place in its chunk's queue,
    /// then completes it.
    fn end(&mut self, id: usize, result: Result<()>, out: &mut Vec<Action>) {
        let slot = &mut self.slots[id];
        let (was_active, was_queued) = (slot.active, slot.queued);
        slot.active = false;
        slot.queued = false;
        let next = slot.next.take();
        if was_active {
            self.active -= 1;
            self.to_admit.extend(self.waiting.pop_front());
        }
        if was_queued {
            match next {
                Some(next) => self.to_admit.push_back(next),
                None => {
                    self.chunk_tails.remove(&self.slots[id].request.chunk);
                }
            }
        }
        self.complete(id, result, out);
    }

    /// Frees slot `id` and reports `result` to its caller. Its generation moves on, so
    /// nothing still out under its tickets is taken.
    fn complete(&mut self, id: usize, result: Result<()>, out: &mut Vec<Action>) {
        let slot = &mut self.slots[id];
        slot.generation += 1;
        slot.stage = None;
        let user = slot.user.take();
        self.free_slots.push(id);
        self.outstanding -= 1;
        self.in_hand = None;
        out.extend(user.map(|user| Action::Finish(user, result)));
    }

    /// Goes on after [`Engine::recover`]: the step that panicked may have left requests
    /// to admit, or writes waiting for space that nothing in flight will wake.
    pub(crate) fn resume(&mut self, out: &mut Vec<Action>) {
        self.retry_space_waiters(out);
        self.run_admissions(out);
    }

    /// After a step panicked (`why`): completes the request it had in hand with `EIO`.
    /// Its new chunk map and io units go back unless its commit already made them the
    /// chunk's; operations it issued in this step are withdrawn from `out` (their
    /// buffers were never lent), and anything lent earlier comes back under a stale
    /// ticket and is dropped. Returns the slot, or `None` when no request was in hand.
    pub(crate) fn recover(&mut self, why: &str, out: &mut Vec<Action>) -> Option<usize> {
        let id = self.in_hand.take()?;
        out.retain(|action| action.ticket().is_none_or(|t| t.slot != id));
        let chunk = self.request(id).chunk;
        if let Some(new) = self.drop_new(id) {
            if self.meta.logical_entry(chunk) != Some(new.index) {
                self.meta.release(new.index, &new.map.io_units);
            }
        }
        let what = if self.slots[id].queued {
            format!("chunk {chunk}")
        } else {
            "a request".to_string()
        };
        let e = Error::new(
            Errno::EIO,
            format!("{what}: internal error ({why}); the request failed"),
        );
        self.end(id, Err(e.logged()), out);
        Some(id)
    }
}
