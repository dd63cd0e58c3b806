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
//! Between steps a request is parked in its slot with its [`Stage`], which holds
//! exactly what the request owns there; a step takes the request out, moves what it
//! owns along, and parks it again or finishes it. A buffer lent to the device or the
//! codec travels in the operation and comes back with its completion.
//!
//! Requests to the same chunk run one at a time in submission order (a per-chunk
//! queue). At most [`MAX_ACTIVE`] requests hold chunk buffers at once; the rest wait
//! in order, so any number may be submitted. Everything a request holds (buffers, a
//! new chunk map and its io units) is released before its caller hears of it.

use std::collections::{HashMap, VecDeque};

use smallvec::SmallVec;

use super::{Action, UserIo};
use crate::backing::{BackingIo, Extent};
use crate::codec::CodecIo;
use crate::completion::Token;
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
struct Request {
    op: Op,
    chunk: u64,
    /// Byte range of the chunk the caller reads or writes.
    start: usize,
    len: usize,
    user: Box<dyn UserIo>,
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
    /// Writing the new chunk, to commit once its data is on the device; the buffer
    /// with its stored form is lent to the device.
    WritingChunk {
        new: NewChunk,
        kept: Kept,
    },
}

/// A chunk map allocated for a write, with its io units: `map` goes in at `index`.
struct NewChunk {
    index: u64,
    map: ChunkMap,
}

/// A request between steps.
struct Parked {
    request: Request,
    stage: Stage,
}

/// One entry of the request table.
#[derive(Default)]
struct Slot {
    /// The request, unless the slot is free or its request is in hand (being advanced).
    parked: Option<Parked>,
    /// The next request to the same chunk, admitted when this one finishes.
    next: Option<usize>,
}

/// The I/O side of a loaded volume.
pub(crate) struct Engine {
    pub(crate) meta: Metadata,
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
    /// Compressed writes that found no space while others were writing.
    space_waiters: VecDeque<usize>,
}

impl Engine {
    pub(crate) fn new(meta: Metadata) -> Engine {
        Engine {
            meta,
            slots: Vec::new(),
            free_slots: Vec::new(),
            outstanding: 0,
            chunk_tails: HashMap::new(),
            to_admit: VecDeque::new(),
            waiting: VecDeque::new(),
            active: 0,
            spare_buffers: Vec::new(),
            writing: 0,
            space_waiters: VecDeque::new(),
        }
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Validates and queues a request. Invalid ones complete at once, holding nothing.
    pub(crate) fn submit(
        &mut self,
        op: Op,
        offset: u64,
        length: u64,
        user: Box<dyn UserIo>,
        out: &mut Vec<Action>,
    ) {
        let (chunk, start, len) = match self.locate(offset, length, user.len()) {
            Ok(Some(place)) => place,
            Ok(None) => return out.push(Action::Finish(user, Ok(()))),
            Err(e) => return out.push(Action::Finish(user, Err(e))),
        };
        let request = Request {
            op,
            chunk,
            start,
            len,
            user,
        };
        let id = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        self.park(id, request, Stage::Waiting);
        self.outstanding += 1;
        match self.chunk_tails.insert(chunk, id) {
            Some(prev) => self.slots[prev].next = Some(id),
            None => self.to_admit.push_back(id),
        }
        self.run_admissions(out);
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

    fn park(&mut self, id: usize, request: Request, stage: Stage) {
        self.slots[id].parked = Some(Parked { request, stage });
    }

    /// Takes request `id` in hand, if one is parked there.
    fn unpark(&mut self, id: usize) -> Option<Parked> {
        self.slots.get_mut(id).and_then(|slot| slot.parked.take())
    }

    /// Puts back what [`Engine::unpark`] took when it was not what the step needed.
    fn restore(&mut self, id: usize, parked: Option<Parked>) {
        if let Some(parked) = parked {
            self.slots[id].parked = Some(parked);
        }
    }

    /// Takes in hand request `id`, queued by the engine itself as waiting. Anything
    /// else there stays in place: the queues would be out of step with the slots.
    fn unpark_waiting(&mut self, id: usize) -> Option<Request> {
        match self.unpark(id) {
            Some(Parked {
                request,
                stage: Stage::Waiting,
            }) => Some(request),
            other => {
                debug_assert!(false, "request {id} queued but not waiting");
                self.restore(id, other);
                None
            }
        }
    }

    /// A completion for request `id` that is not waiting for one: the caller's device
    /// or codec completed something twice, or not ours. Logged and ignored; whatever
    /// is parked there stays.
    fn stray(&mut self, id: usize, kind: &str, parked: Option<Parked>) {
        log::emit(
            Level::Warn,
            format_args!(
                "ignored a {kind} completion for request {id}, which is not waiting for one"
            ),
        );
        self.restore(id, parked);
    }

    /// Admits requests that reached the head of their chunk; a loop, not recursion, so
    /// long same-chunk queues that finish at once do not deepen the stack.
    fn run_admissions(&mut self, out: &mut Vec<Action>) {
        while let Some(id) = self.to_admit.pop_front() {
            self.admit(id, out);
        }
    }

    fn admit(&mut self, id: usize, out: &mut Vec<Action>) {
        let Some(mut request) = self.unpark_waiting(id) else {
            return;
        };
        if request.op == Op::Read && self.meta.logical_entry(request.chunk).is_none() {
            request.user.zero();
            return self.finish(id, request, None, Ok(()), out);
        }
        if self.active == MAX_ACTIVE {
            self.park(id, request, Stage::Waiting);
            return self.waiting.push_back(id);
        }
        self.active += 1;
        let buffers = Buffers {
            plain: self.take_buffer(),
            packed: self.take_buffer(),
        };
        self.start(id, request, buffers, out);
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let size = self.meta.geo.chunk_size();
        self.spare_buffers.pop().unwrap_or_else(|| vec![0; size])
    }

    fn start(&mut self, id: usize, request: Request, mut buffers: Buffers, out: &mut Vec<Action>) {
        let whole = request.start == 0 && request.len == self.meta.geo.chunk_size();
        // A whole-chunk write needs nothing of what was there.
        if request.op == Op::Write && whole {
            return self.chunk_ready(id, request, buffers, out);
        }
        match self.meta.lookup(request.chunk) {
            Ok(Some(stored)) => self.read_chunk(id, request, stored, buffers, out),
            Ok(None) => {
                // A chunk never written reads as zeros around the caller's data.
                buffers.plain.fill(0);
                self.chunk_ready(id, request, buffers, out)
            }
            Err(e) => self.finish(id, request, Some(buffers), Err(e.logged()), out),
        }
    }

    fn read_chunk(
        &mut self,
        id: usize,
        request: Request,
        stored: ChunkMap,
        buffers: Buffers,
        out: &mut Vec<Action>,
    ) {
        let extents = self.extents(&stored.io_units);
        let (buf, kept) = buffers.lend(stored.is_raw(&self.meta.geo));
        self.park(id, request, Stage::ReadingChunk { stored, kept });
        out.push(Action::Read(BackingIo { buf, extents }, Token::Request(id)));
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

    /// A backing read or write of request `id` finished.
    pub(crate) fn backing_done(
        &mut self,
        id: usize,
        io: BackingIo,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        match self.unpark(id) {
            Some(Parked {
                request,
                stage: Stage::ReadingChunk { stored, kept },
            }) => self.backing_read_done(id, request, stored, kept.rejoin(io.buf), result, out),
            Some(Parked {
                request,
                stage: Stage::WritingChunk { new, kept },
            }) => self.write_chunk_done(id, request, new, kept.rejoin(io.buf), result, out),
            other => self.stray(id, "backing", other),
        }
        self.run_admissions(out);
    }

    /// A compress or decompress of request `id` finished.
    pub(crate) fn codec_done(
        &mut self,
        id: usize,
        io: CodecIo,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        match self.unpark(id) {
            Some(Parked {
                request,
                stage: Stage::DecompressingChunk,
            }) => self.decompress_done(id, request, io, result, out),
            Some(Parked {
                request,
                stage: Stage::CompressingChunk,
            }) => self.compress_done(id, request, io, result, out),
            other => self.stray(id, "codec", other),
        }
        self.run_admissions(out);
    }

    fn backing_read_done(
        &mut self,
        id: usize,
        request: Request,
        stored: ChunkMap,
        buffers: Buffers,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = result {
            return self.finish(id, request, Some(buffers), Err(e), out);
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
                    request.chunk
                ),
            );
            return self.finish(id, request, Some(buffers), Err(e.logged()), out);
        }
        if raw {
            return self.chunk_ready(id, request, buffers, out);
        }
        self.park(id, request, Stage::DecompressingChunk);
        let io = CodecIo {
            src: buffers.packed,
            src_len: stored_len,
            dst: buffers.plain,
        };
        out.push(Action::Decompress(io, Token::Request(id)));
    }

    fn decompress_done(
        &mut self,
        id: usize,
        request: Request,
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
            Ok(n) if n == chunk_size => return self.chunk_ready(id, request, buffers, out),
            Ok(n) => format!("decompressing gave {n} bytes, not {chunk_size}"),
            Err(e) => match e.detail() {
                "" => format!("the codec failed to decompress it (errno {})", e.errno().0),
                detail => format!("the codec failed to decompress it: {detail}"),
            },
        };
        let e = Error::new(Errno::EIO, format!("chunk {}: {why}", request.chunk));
        self.finish(id, request, Some(buffers), Err(e.logged()), out)
    }

    /// The chunk's current content is in `plain`: a read copies out and is done; a
    /// write merges the caller's data and compresses.
    fn chunk_ready(
        &mut self,
        id: usize,
        mut request: Request,
        mut buffers: Buffers,
        out: &mut Vec<Action>,
    ) {
        let range = request.start..request.start + request.len;
        if request.op == Op::Read {
            request.user.scatter(0, &buffers.plain[range]);
            return self.finish(id, request, Some(buffers), Ok(()), out);
        }
        request.user.gather(0, &mut buffers.plain[range]);
        self.park(id, request, Stage::CompressingChunk);
        let io = CodecIo {
            src_len: buffers.plain.len(),
            src: buffers.plain,
            dst: buffers.packed,
        };
        out.push(Action::Compress(io, Token::Request(id)));
    }

    fn compress_done(
        &mut self,
        id: usize,
        request: Request,
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
        self.write_chunk(id, request, buffers, size, out);
    }

    /// Allocates a chunk map and io units for the stored chunk of `size` bytes and
    /// writes it. When the volume is out of space while other writes hold allocations,
    /// waits for them: each frees the chunk it replaces. Only with none in flight is it
    /// `ENOSPC`.
    fn write_chunk(
        &mut self,
        id: usize,
        request: Request,
        buffers: Buffers,
        size: usize,
        out: &mut Vec<Action>,
    ) {
        let geo = self.meta.geo;
        let (index, io_units) = match self.meta.allocate(geo.io_units_for(size as u32)) {
            Ok(allocation) => allocation,
            Err(_) if self.writing > 0 => {
                self.park(id, request, Stage::WaitingForSpace { buffers, size });
                return self.space_waiters.push_back(id);
            }
            Err(e) => return self.finish(id, request, Some(buffers), Err(e), out),
        };
        let extents = self.extents(&io_units);
        let (mut buf, kept) = buffers.lend(size == geo.chunk_size());
        // The last io unit's tail would carry stale bytes of an earlier chunk.
        let written = io_units.len() * geo.io_unit_size();
        buf[size..written].fill(0);
        let map = ChunkMap {
            compressed_size: size as u32,
            checksum: chunk_checksum(&buf[..size]),
            io_units,
        };
        let new = NewChunk { index, map };
        self.park(id, request, Stage::WritingChunk { new, kept });
        self.writing += 1;
        out.push(Action::Write(
            BackingIo { buf, extents },
            Token::Request(id),
        ));
    }

    fn write_chunk_done(
        &mut self,
        id: usize,
        request: Request,
        new: NewChunk,
        buffers: Buffers,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        let NewChunk { index, map } = new;
        // A device error is the device's to explain; a failed commit is ours.
        let committed = result.and_then(|()| {
            let chunk = request.chunk;
            self.meta.commit(chunk, index, &map).map_err(Error::logged)
        });
        if committed.is_err() {
            self.meta.release(index, &map.io_units);
        }
        self.writing -= 1;
        self.finish(id, request, Some(buffers), committed, out);
        // Space may have been freed (or nothing holds any more): retry the waiters.
        for waiter in std::mem::take(&mut self.space_waiters) {
            match self.unpark(waiter) {
                Some(Parked {
                    request,
                    stage: Stage::WaitingForSpace { buffers, size },
                }) => self.write_chunk(waiter, request, buffers, size, out),
                other => {
                    debug_assert!(false, "request {waiter} queued for space but not waiting");
                    self.restore(waiter, other);
                }
            }
        }
    }

    /// Releases everything request `id` holds (`buffers`, if it was active), lets the
    /// next request on its chunk and the next waiting for buffers go, then reports to
    /// the caller.
    fn finish(
        &mut self,
        id: usize,
        request: Request,
        buffers: Option<Buffers>,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        self.free_slots.push(id);
        self.outstanding -= 1;
        if let Some(Buffers { plain, packed }) = buffers {
            self.spare_buffers.push(plain);
            self.spare_buffers.push(packed);
            self.active -= 1;
            self.to_admit.extend(self.waiting.pop_front());
        }
        match self.slots[id].next.take() {
            Some(next) => self.to_admit.push_back(next),
            None => {
                self.chunk_tails.remove(&request.chunk);
            }
        }
        out.push(Action::Finish(request.user, result));
    }
}
