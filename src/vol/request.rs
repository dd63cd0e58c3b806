//! The request state machine, chunk by chunk. A caller's request (`split.rs`) is cut
//! into pieces: one per chunk it touches, or for an unmap, one per run of whole chunks.
//! This file runs the pieces.
//!
//! ```text
//! read:   admit ─ chunk empty: zeros, or cached: copy out (read_without_device) ─► finish
//!           └─ read_chunk ─► backing_read_done ─ raw ──────────► chunk_ready ► finish
//!                                  ├─ compressed ─► decompress_done ─┘
//!                                  └─ raw, read into the caller's memory ───► finish
//! write,  admit ─ unmap of an empty chunk ──────────────────────────────────► finish
//! partial   ├─ partial, chunk cached (taken out: start) ───────────► chunk_ready
//! unmap:    ├─ partial, chunk holds data ─► read_chunk ─► ... ─► chunk_ready
//!           └─ whole-chunk write, or chunk empty (zeros around) ─► chunk_ready
//!         chunk_ready (merge the caller's data, or zeros for an unmap)
//!           ├─ all zeros ─► clear ─► (trim_done) ─► finish
//!           └─ compress_done ─► write_chunk (allocate) ─► write_chunk_done (stage the
//!              chunk map, the new content to the cache) ─► Committing, in the group ─►
//!              flush: the group's chunk maps persisted, its entries switched and
//!              persisted ─► free old ─► finish
//!         write_chunk, no space while others hold some ─► (waits) ─► write_chunk
//! clear:  admit ─► clear (empty the entries of a run of whole chunks, persist, free
//!         their chunk maps) ─► the device discards their io units ─► trim_done ─►
//!         the io units are free again ─► finish
//! ```
//!
//! A piece keeps one slot of the piece table from its start to its end. The slot holds
//! what the piece owns beyond its current step (a new chunk map and io units, io units
//! it freed while the device discards them, its claim on buffers); between steps the
//! piece's [`Stage`] is parked there too, holding exactly what the piece owns at that
//! stage. A step takes the stage in hand, moves what it owns along, and parks it again
//! or finishes the piece. A buffer lent to the device or the codec travels in the
//! operation and comes back with its completion.
//!
//! Every operation a piece issues carries a [`Ticket`]: its slot and a generation that
//! changes at each operation, so a completion is taken only if it is the one the slot
//! waits for. Anything else (delivered twice, late, for a piece long gone) is logged
//! and ignored.
//!
//! If a step panics (a bug), the drain loop calls [`Engine::recover`]: the piece in hand
//! ends with `EIO` (so its request fails), releasing its new chunk map and io units, the
//! io units it freed and its claim on buffers. A piece in hand has nothing out: what it
//! waited for came back before the step took it (`accept`), and what the step issued
//! is still in the action list, withdrawn unperformed.
//!
//! That is what keeps the caller's memory safe to lend (see Zero copy): no request
//! completes while an operation lending its memory is out, since a request completes
//! once its last piece ends and a piece ends only in hand. A completion delivered twice
//! or late is dropped under its stale ticket, a lent buffer with it, untouched.
//!
//! Group commit: a written piece does not persist its metadata alone. It writes its
//! chunk map into the pm mapping and waits in the group; the drain loop, once it has
//! no event left, commits the group ([`Engine::flush_group`]) when no operation that
//! could bring another piece into it is out (or at once when the group is full, or when
//! the pm file is on a RAM file system, where a persist costs nothing): one persist of
//! the chunk maps, the entries switched, one persist of the entries, then every piece
//! completes in order. A failed persist fails the whole group.
//!
//! At most [`MAX_ACTIVE`] pieces hold chunk buffers at once; the rest wait in order, so
//! any number may be submitted. Everything a piece holds is released before its request
//! can complete.
//!
//! A read within one chunk that no request in flight shares does the same at submission
//! (`Engine::submit`): when its chunk is empty or cached it completes there, with no
//! piece and no place among the requests in flight.
//!
//! The chunk cache (`cache.rs`): a read that passed its checksum and decompression
//! fills it, and so does a write whose new content is in its `plain` buffer (not one
//! compressed straight from the caller's, nor a raw chunk read into or written from the
//! caller's memory), once written, under its new chunk map
//! (`let_go_caching`; never for the checker). A write or unmap takes its chunk out as
//! it starts, and a clear its run of chunks; until the next fill, the next read goes
//! to the device.
//!
//! Zero copy: a piece that reads or writes a whole chunk whose part of the caller's
//! buffers is one piece of memory ([`UserIo::contiguous`]), with a codec that works
//! inside the call ([`Codec::compress_now`]), skips the codec stages: the step that has
//! the chunk decompresses it straight into the caller's buffer (a read ends there), or
//! compresses it straight from it (a write goes on to `write_chunk`). With a codec that
//! completes later, when the caller can lend that memory ([`UserIo::lend`], C requests
//! only), the codec gets it in place of `plain` ([`Buffers::into_codec`]): it decompresses
//! into it, or compresses from it. A chunk stored raw needs no codec: with that memory
//! lent, the device reads it straight into the caller's buffer (its checksum checked
//! there) or writes it straight from it ([`Kept::Both`], [`Plain::Caller`]).
//!
//! Zero chunks: a chunk whose new content is all zeros (a write of zeros, or what an
//! unmap or a write leaves) is neither compressed nor stored: its logical map entry is
//! emptied, as an unmap does, and it reads as zeros.
//!
//! Space: a write never replaces a chunk in place, so an overwrite needs a second chunk
//! map and its io units until it commits and frees the old ones. Overwrites of chunks
//! that hold data must always find them, whatever the pm file's size, so chunk maps are
//! held back for them (see [`Engine::room_for_new_chunk`]); writes to chunks never
//! written get `ENOSPC` first. Io units need no such rule: chunks holding data never
//! take more than the volume's own share of them, and the device holds
//! [`EXTRA_CHUNKS`](crate::format::EXTRA_CHUNKS) chunks' worth beyond it. The last
//! resort stays: a write that finds no space while others are writing, or while io
//! units are being discarded, waits for them to free what they hold.

use std::collections::VecDeque;
use std::rc::Rc;

use smallvec::SmallVec;

use super::cache::ChunkCache;
use super::split::{Op, Parents, Piece, locate};
use super::{Action, UserIo};
use crate::backing::{BackingIo, Extent, IoBuf};
use crate::codec::{Codec, CodecIo};
use crate::completion::{Ticket, Token};
use crate::error::{Errno, Error, Result};
use crate::format::{Geometry, chunk_checksum};
use crate::log::{self, Level};
use crate::maps::{ChunkMap, IoUnits, Metadata, Switch, checksum_ok};

/// Pieces holding chunk buffers at once. It matches the extra chunk maps, so writes in
/// flight on a volume full of incompressible data still find room.
pub const MAX_ACTIVE: usize = crate::format::EXTRA_CHUNKS as usize;

/// Writes a group commits at most: a group is committed once it has this many even
/// while more writes are in flight, so a steady stream of writes does not hold back
/// the first of them for ever.
const GROUP_MAX: usize = 64;

/// The two chunk-sized buffers of an active piece: `plain` for the chunk's data,
/// `packed` for its compressed form.
struct Buffers {
    plain: Vec<u8>,
    packed: Vec<u8>,
}

impl Buffers {
    /// Lends the buffer that holds the stored form of a chunk (`plain` for a chunk
    /// stored raw, else `packed`) and keeps the other.
    fn lend(self, raw: bool) -> (IoBuf, Kept) {
        let (lent, buf) = if raw {
            (self.plain, self.packed)
        } else {
            (self.packed, self.plain)
        };
        (lent.into(), Kept::Other { buf, raw })
    }

    /// Lends both buffers to the codec, or, when the caller's memory `user` stands in
    /// for `plain`, `packed` alone, keeping `plain` (returned). A compress reads
    /// `src_len` bytes of `plain` into `packed`, a decompress the other way.
    fn into_codec(
        self,
        user: Option<IoBuf>,
        compress: bool,
        src_len: usize,
    ) -> (CodecIo, Option<Vec<u8>>) {
        let (plain, kept) = match user {
            Some(user) => (user, Some(self.plain)),
            None => (self.plain.into(), None),
        };
        let packed = self.packed.into();
        let (src, dst) = if compress {
            (plain, packed)
        } else {
            (packed, plain)
        };
        (CodecIo { src, src_len, dst }, kept)
    }

    /// Both buffers back from the codec (see [`Buffers::into_codec`]), with `kept`; and
    /// the caller's memory, when that stood in for `plain`.
    fn from_codec(io: CodecIo, kept: Option<Vec<u8>>, compress: bool) -> (Buffers, Option<IoBuf>) {
        let (plain, packed) = if compress {
            (io.src, io.dst)
        } else {
            (io.dst, io.src)
        };
        let ours = |buf: IoBuf| {
            buf.into_vec()
                .expect("the codec hands back the buffers it was lent")
        };
        let packed = ours(packed);
        match kept {
            Some(kept) => (
                Buffers {
                    plain: kept,
                    packed,
                },
                Some(plain),
            ),
            None => (
                Buffers {
                    plain: ours(plain),
                    packed,
                },
                None,
            ),
        }
    }
}

/// What a piece keeps while the device reads or writes the stored form of its chunk:
/// where that goes, or comes from.
enum Kept {
    /// The other of our buffers: the lent one is `plain` when `raw`, else `packed`.
    Other { buf: Vec<u8>, raw: bool },
    /// Both of ours: the device works in the caller's memory (a whole chunk stored raw,
    /// in one piece of it).
    Both(Buffers),
}

impl Kept {
    /// Both buffers again, with the lent one back; and the caller's memory, when that
    /// was lent.
    fn rejoin(self, lent: IoBuf) -> (Buffers, Option<IoBuf>) {
        match self {
            Kept::Both(buffers) => (buffers, Some(lent)),
            Kept::Other { buf, raw } => {
                let lent = lent
                    .into_vec()
                    .expect("the device hands back the buffer it was lent");
                let buffers = if raw {
                    Buffers {
                        plain: lent,
                        packed: buf,
                    }
                } else {
                    Buffers {
                        plain: buf,
                        packed: lent,
                    }
                };
                (buffers, None)
            }
        }
    }
}

/// Where a parked piece is, and what it owns there. The completion that arrives next
/// is named after what finished.
enum Stage {
    /// Waiting to be admitted, or for buffers. Holds none.
    Waiting,
    /// Reading `stored` from the device (for a read, or the old data of a partial
    /// write or unmap) into the buffer for its stored form, or (a whole-chunk read of
    /// a raw chunk) into the caller's memory.
    ReadingChunk {
        stored: ChunkMap,
        kept: Kept,
    },
    /// Both buffers lent to the codec; or, for a whole chunk in one piece of a C
    /// caller's memory, that memory and `packed`, the piece keeping `plain`. Decompressing
    /// into `plain` (or the caller's memory), or compressing from it.
    DecompressingChunk {
        plain: Option<Vec<u8>>,
    },
    CompressingChunk {
        plain: Option<Vec<u8>>,
    },
    /// Compressed to `size` bytes; waiting for writes in flight to free space.
    WaitingForSpace {
        buffers: Buffers,
        size: usize,
        plain: Plain,
    },
    /// Writing the new chunk (held in the slot), to commit once its data is on the
    /// device; the buffer with its stored form, or the caller's memory, is lent to it.
    WritingChunk {
        kept: Kept,
        plain: Plain,
    },
    /// The device is discarding the io units the piece freed (held in the slot).
    Trimming,
    /// The new chunk's data is on the device and its chunk map in the pm mapping, not
    /// persisted; in the group, waiting for its commit. Holds no buffers.
    Committing,
}

/// What a write's `plain` buffer holds once its chunk is compressed.
enum Plain {
    /// The chunk's new content (merged there, or copied to be stored raw): once
    /// written, it goes to the cache.
    New,
    /// Nothing of it: the chunk was compressed straight from the caller's buffer.
    Stale,
    /// Nothing of it: the chunk is stored raw, written straight from the caller's
    /// memory, lent here. Not cached: none of our buffers holds it.
    Caller(IoBuf),
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
            Stage::ReadingChunk { .. } | Stage::WritingChunk { .. } | Stage::Trimming => {
                Some(Kind::Backing)
            }
            Stage::DecompressingChunk { .. } | Stage::CompressingChunk { .. } => Some(Kind::Codec),
            Stage::Waiting | Stage::WaitingForSpace { .. } | Stage::Committing => None,
        }
    }
}

/// A chunk map allocated for a write, with its io units: `map` goes in at `index`.
struct NewChunk {
    index: u64,
    map: ChunkMap,
    /// The chunk map the chunk named when this one was allocated: the write replaces
    /// it, and frees it once committed. Nothing else changes the chunk meanwhile (one
    /// piece per chunk runs at a time).
    old: Option<u64>,
}

/// One entry of the piece table.
struct Slot {
    /// Changes at every operation issued from the slot, when it comes back, and when
    /// the piece ends: a completion is taken only with the generation it was issued
    /// with.
    generation: u64,
    /// The request the piece belongs to; `None` when the slot is free.
    parent: Option<usize>,
    piece: Piece,
    /// The parked piece's stage; `None` while a step has it in hand, or when free.
    stage: Option<Stage>,
    /// Holds a pair of chunk buffers (one of the [`MAX_ACTIVE`]).
    active: bool,
    /// The chunk map and io units of its write, from allocation until commit.
    new: Option<NewChunk>,
    /// Io units it freed, held out of the free map while the device discards them, so
    /// no write can take one and have its data discarded.
    freed: IoUnits,
    /// It has an operation out that counts in [`Engine::pending`].
    pending: bool,
}

/// The I/O side of a loaded volume.
pub(crate) struct Engine {
    /// Boxed: the engine sits in the volume's phase, beside much smaller ones.
    pub(crate) meta: Box<Metadata>,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    /// The callers' requests, their order, and the counts of those completed.
    pub(super) parents: Parents,
    /// Pieces to admit: new ones, and ones that waited for buffers.
    to_admit: VecDeque<usize>,
    /// Admitted pieces waiting for buffers.
    waiting: VecDeque<usize>,
    /// Pieces holding buffers.
    active: usize,
    spare_buffers: Vec<Vec<u8>>,
    /// Pieces writing their chunk, holding a new chunk map and io units.
    writing: usize,
    /// Of those, the ones replacing a chunk that holds data.
    overwriting: u64,
    /// Pieces holding io units they freed while the device discards them.
    trimming: usize,
    /// Compressed writes that found no space while others were writing.
    space_waiters: VecDeque<usize>,
    /// The piece a step has in hand: the one to fail if the step panics. While a
    /// group's persists are in hand, its first piece (still `Committing`).
    in_hand: Option<usize>,
    /// Written pieces waiting for their group's commit (`Committing`), in order.
    group: VecDeque<usize>,
    /// Pieces of a group whose commit is durable, still to complete, in order.
    committed: VecDeque<usize>,
    /// The list `flush` hands the group's switches in, kept: a group commits per write
    /// on a RAM file system, and no write should allocate for it.
    switches: Vec<Switch>,
    /// Operations out (backing or codec) of pieces that may still join the group: those
    /// of writes and unmaps before they are written, not reads and not discards. The
    /// group waits for them, since each one's completion comes back through the drain
    /// loop; nothing else can keep a piece waiting (see [`Engine::flush_group`]).
    pending: usize,
    /// Recently read chunks' plain contents.
    pub(super) cache: ChunkCache,
    /// The volume's codec, for the whole-chunk pieces it can run inside the call
    /// straight on the caller's buffers ([`Codec::compress_now`]); the drain loop
    /// drives the rest.
    codec: Rc<dyn Codec>,
}

/// What a whole-chunk write found in the caller's buffer, compressing straight from it.
enum FromUser {
    /// Only zeros: nothing to store.
    Zeros,
    /// To be stored in this many bytes: compressed into `packed`, or (the chunk size)
    /// raw, from where [`Plain`] says.
    Stored(usize, Plain),
    /// For the codec to compress, from the caller's memory (lent: a C request, and a
    /// codec that completes later).
    Lent(IoBuf),
}

/// The bytes a chunk compressed with `result` is stored in: compressed only when that
/// saves an io unit; a failed compress stores it raw (`chunk_size`).
fn stored_size(geo: &Geometry, result: Result<usize>) -> usize {
    let chunk_size = geo.chunk_size();
    match result {
        Ok(n)
            if n > 0 && n <= chunk_size && geo.io_units_for(n as u32) < geo.io_units_per_chunk =>
        {
            n
        }
        _ => chunk_size,
    }
}

/// Has the cache fetch all of `buf`, a line at a time, ahead of a codec that reads it
/// in its own order: a chunk fresh from the caller is often in no cache, and a codec
/// fed from memory waits on it line by line (`make bench`: sequential writes compressed
/// straight from the caller's buffer ran 4 % slower than after a copy, until warmed).
fn warm(buf: &[u8]) {
    std::hint::black_box(buf.iter().step_by(64).fold(0, |acc, &x| acc ^ x));
}

/// Ends read `piece` into `user` when it needs no device read: an empty chunk reads as
/// zeros, and (with `use_cache`) a chunk cached from the chunk map its entry names is
/// copied from the cache. False when it needs the device.
fn read_without_device(
    meta: &Metadata,
    cache: &mut ChunkCache,
    piece: Piece,
    user: &mut dyn UserIo,
    use_cache: bool,
) -> bool {
    let Piece::Chunk {
        chunk,
        start,
        len,
        at,
        ..
    } = piece
    else {
        return false;
    };
    match meta.logical_entry(chunk) {
        None => user.zero(at, len),
        Some(_) if !use_cache => return false,
        Some(index) => match cache.get(chunk, index) {
            Some(plain) => user.scatter(at, &plain[start..start + len]),
            None => return false,
        },
    }
    true
}

/// True when `buf` holds only zeros; stops at the first block that does not.
fn all_zero(buf: &[u8]) -> bool {
    // A block at a time: the OR of a block vectorizes, the exit between blocks is cheap.
    let mut blocks = buf.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

impl Engine {
    pub(crate) fn new(meta: Metadata, codec: Rc<dyn Codec>) -> Engine {
        let cache = ChunkCache::new(meta.geo.chunk_size());
        Engine {
            cache,
            meta: Box::new(meta),
            slots: Vec::new(),
            free_slots: Vec::new(),
            parents: Parents::default(),
            to_admit: VecDeque::new(),
            waiting: VecDeque::new(),
            active: 0,
            spare_buffers: Vec::new(),
            writing: 0,
            overwriting: 0,
            trimming: 0,
            space_waiters: VecDeque::new(),
            in_hand: None,
            group: VecDeque::new(),
            committed: VecDeque::new(),
            switches: Vec::new(),
            pending: 0,
            codec,
        }
    }

    /// A slot for a new piece of request `parent`, queued to be admitted.
    pub(super) fn open_slot(&mut self, parent: usize, piece: Piece) {
        let slot = Slot {
            generation: 0,
            parent: Some(parent),
            piece,
            stage: Some(Stage::Waiting),
            active: false,
            new: None,
            freed: IoUnits::new(),
            pending: false,
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                // The generation goes on from the slot's last piece, so none of that
                // piece's tickets can match this one's.
                let generation = self.slots[id].generation;
                self.slots[id] = Slot { generation, ..slot };
                id
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.to_admit.push_back(id);
    }

    /// Admits the pieces waiting to start and lets requests hand out more pieces or
    /// complete; a loop, not recursion, so that pieces finishing at once (a long
    /// request over empty chunks, a chain of same-chunk requests) do not deepen the
    /// stack.
    pub(super) fn run(&mut self, out: &mut Vec<Action>) {
        loop {
            if let Some(id) = self.to_admit.pop_front() {
                self.admit(id, out);
            } else if let Some(parent) = self.parents.to_refill.pop_front() {
                self.refill(parent, out);
            } else {
                break;
            }
        }
    }

    fn piece(&self, id: usize) -> Piece {
        self.slots[id].piece
    }

    /// The caller's side of the request piece `id` belongs to.
    fn user(&mut self, id: usize) -> &mut dyn UserIo {
        let parent = self.slots[id]
            .parent
            .expect("a piece in flight belongs to a request");
        self.parents.user(parent)
    }

    fn park(&mut self, id: usize, stage: Stage) {
        self.slots[id].stage = Some(stage);
        self.in_hand = None;
    }

    /// Takes in hand piece `id`, queued by the engine itself as waiting (to start, for
    /// buffers or space). Anything else there stays in place: the queues would be out
    /// of step with the slots.
    fn take_queued(&mut self, id: usize) -> Option<Stage> {
        let slot = &mut self.slots[id];
        match slot.stage.take() {
            Some(stage @ (Stage::Waiting | Stage::WaitingForSpace { .. })) => {
                self.in_hand = Some(id);
                Some(stage)
            }
            other => {
                debug_assert!(false, "piece {id} queued but not waiting");
                slot.stage = other;
                None
            }
        }
    }

    /// A new generation for an operation piece `id` issues: the token it goes out with.
    /// The piece is parked in the stage that awaits it.
    fn issue(&mut self, id: usize) -> Token {
        let joins = matches!(
            self.slots[id].piece,
            Piece::Chunk {
                op: Op::Write | Op::Unmap,
                ..
            }
        ) && !matches!(self.slots[id].stage, Some(Stage::Trimming));
        let slot = &mut self.slots[id];
        if joins {
            slot.pending = true;
            self.pending += 1;
        }
        slot.generation += 1;
        Token::Request(Ticket {
            slot: id,
            generation: slot.generation,
        })
    }

    /// Takes in hand the piece a `kind` completion with `ticket` belongs to, if it is
    /// the operation that piece waits for. Anything else is logged and ignored: the
    /// caller's device or codec completed something twice, late, or not ours.
    fn accept(&mut self, ticket: Ticket, kind: Kind) -> Option<Stage> {
        let why = match self.slots.get_mut(ticket.slot) {
            None => "there is no such request",
            Some(slot) if slot.parent.is_none() => "that request has completed",
            Some(slot) if slot.generation != ticket.generation => {
                "that request is not waiting for this operation (delivered twice, or late)"
            }
            Some(slot) => match &slot.stage {
                Some(stage) if stage.awaits() == Some(kind) => {
                    slot.generation += 1;
                    if std::mem::take(&mut slot.pending) {
                        self.pending -= 1;
                    }
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

    fn admit(&mut self, id: usize, out: &mut Vec<Action>) {
        if self.take_queued(id).is_none() {
            return;
        }
        let (op, chunk) = match self.piece(id) {
            Piece::Clear { first, count } => return self.clear(id, first..first + count, out),
            Piece::Chunk { op, chunk, .. } => (op, chunk),
        };
        match op {
            Op::Read if self.read_at_admission(id) => return self.finish(id, None, Ok(())),
            // An empty chunk has nothing to discard.
            Op::Unmap if self.meta.logical_entry(chunk).is_none() => {
                return self.finish(id, None, Ok(()));
            }
            _ => {}
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
        self.start(id, op, chunk, buffers, out);
    }

    /// Ends read piece `id` if it needs no device read (see [`read_without_device`]);
    /// the checker's reads must come from the device, and would only crowd the cache.
    fn read_at_admission(&mut self, id: usize) -> bool {
        let piece = self.piece(id);
        let parent = self.slots[id]
            .parent
            .expect("a piece in flight belongs to a request");
        let use_cache = !self.parents.is_checker(parent);
        let user = self.parents.user(parent);
        read_without_device(&self.meta, &mut self.cache, piece, user, use_cache)
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let size = self.meta.geo.chunk_size();
        self.spare_buffers.pop().unwrap_or_else(|| vec![0; size])
    }

    fn start(
        &mut self,
        id: usize,
        op: Op,
        chunk: u64,
        mut buffers: Buffers,
        out: &mut Vec<Action>,
    ) {
        let whole = match self.piece(id) {
            Piece::Chunk { start, len, .. } => start == 0 && len == self.meta.geo.chunk_size(),
            Piece::Clear { .. } => true,
        };
        // A write or unmap takes the chunk out of the cache as it starts, whatever
        // becomes of it; the read half of a partial one uses what was there.
        if op == Op::Write && whole {
            self.cache.forget(chunk..chunk + 1, &mut self.spare_buffers);
            // A whole-chunk write needs nothing of what was there.
            return self.chunk_ready(id, buffers, out);
        }
        let cached = match op {
            Op::Read => None,
            Op::Write | Op::Unmap => {
                let index = self.meta.logical_entry(chunk);
                self.cache.take(chunk, index, &mut self.spare_buffers)
            }
        };
        if let Some(plain) = cached {
            // The entry was taken under the chunk map the logical map names now, which
            // was checked when the entry was filled: no lookup. The cache's buffer
            // trades places with ours, which goes back to the spares: the cache takes
            // it back when this write fills it.
            let spare = std::mem::replace(&mut buffers.plain, plain);
            self.spare_buffers.push(spare);
            return self.chunk_ready(id, buffers, out);
        }
        match self.meta.lookup(chunk) {
            Ok(Some(stored)) => self.read_chunk(id, stored, buffers, out),
            Ok(None) => {
                // A chunk never written reads as zeros around the caller's data.
                buffers.plain.fill(0);
                self.chunk_ready(id, buffers, out)
            }
            Err(e) => self.finish(id, Some(buffers), Err(e.logged())),
        }
    }

    /// Has the device read `stored`: a raw chunk a read wants whole, straight into the
    /// caller's memory when it can be lent (see [`UserIo::lend`]); else into ours.
    fn read_chunk(&mut self, id: usize, stored: ChunkMap, buffers: Buffers, out: &mut Vec<Action>) {
        let extents = self.extents(&stored.io_units);
        let raw = stored.is_raw(&self.meta.geo);
        let (buf, kept) = match raw.then(|| self.lend_user(id, Op::Read)).flatten() {
            Some(user) => (user, Kept::Both(buffers)),
            None => buffers.lend(raw),
        };
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

    /// A backing read, write or unmap finished.
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
                let (buffers, user) = kept.rejoin(io.buf);
                self.backing_read_done(id, stored, buffers, user, result, out)
            }
            Some(Stage::WritingChunk { kept, plain }) => {
                // The caller's memory, if lent, is dropped untouched: the write is done.
                let (buffers, _) = kept.rejoin(io.buf);
                self.write_chunk_done(id, buffers, plain, result, out)
            }
            Some(Stage::Trimming) => self.trim_done(id, result, out),
            // Refused (and logged) by `accept`, which hands out only a stage that waits
            // for the device.
            _ => {}
        }
        self.run(out);
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
            Some(Stage::DecompressingChunk { plain }) => {
                self.decompress_done(id, io, plain, result, out)
            }
            Some(Stage::CompressingChunk { plain }) => {
                self.compress_done(id, io, plain, result, out)
            }
            // Refused (and logged) by `accept`, which hands out only a stage that waits
            // for the codec.
            _ => {}
        }
        self.run(out);
    }

    /// The stored chunk is in our buffers, or in the caller's memory (`user`, lent).
    fn backing_read_done(
        &mut self,
        id: usize,
        stored: ChunkMap,
        buffers: Buffers,
        user: Option<IoBuf>,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = result {
            return self.finish(id, Some(buffers), Err(e));
        }
        let raw = stored.is_raw(&self.meta.geo);
        let stored_len = stored.compressed_size as usize;
        let data = match &user {
            Some(user) => &user[..],
            None if raw => &buffers.plain[..],
            None => &buffers.packed[..],
        };
        // Never hand back or merge into data that does not match what was written. In
        // the caller's memory it is there already: the read fails, as one decompressed
        // there does.
        if !checksum_ok(&stored, &data[..stored_len]) {
            let e = Error::new(
                Errno::EIO,
                format!(
                    "{}: checksum mismatch in its {stored_len} stored bytes",
                    self.piece(id).chunks()
                ),
            );
            return self.finish(id, Some(buffers), Err(e.logged()));
        }
        if user.is_some() {
            // Read straight into the caller's memory: nothing of it in ours to cache.
            return self.finish(id, Some(buffers), Ok(()));
        }
        if raw {
            return self.chunk_ready(id, buffers, out);
        }
        if let Some(result) = self.decompress_into_user(id, &buffers.packed[..stored_len]) {
            let result = self.decompressed(id, result).map_err(Error::logged);
            return self.finish(id, Some(buffers), result);
        }
        // A codec that completes later decompresses a whole chunk straight into the
        // caller's memory, when it can be lent.
        let user = self.lend_user(id, Op::Read);
        let (io, plain) = buffers.into_codec(user, false, stored_len);
        self.park(id, Stage::DecompressingChunk { plain });
        let token = self.issue(id);
        out.push(Action::Decompress(io, token));
    }

    /// A read of the whole chunk decompressed straight into the caller's buffer, when
    /// that is one piece of memory and the codec works inside the call: the chunk never
    /// passes through ours. `None` (nothing written) when any of that does not hold. On
    /// failure the caller's buffer may hold part of an output: the read fails.
    fn decompress_into_user(&mut self, id: usize, packed: &[u8]) -> Option<Result<usize>> {
        let (parent, at, len) = self.whole_chunk(id, Op::Read)?;
        let dst = self.parents.user(parent).contiguous_mut(at, len)?;
        self.codec.decompress_now(packed, dst)
    }

    /// The caller's memory for the whole chunk of piece `id` of `op`, lent to the
    /// device, when it is one piece of memory the caller can lend.
    fn lend_user(&mut self, id: usize, op: Op) -> Option<IoBuf> {
        let (parent, at, len) = self.whole_chunk(id, op)?;
        self.parents.user(parent).lend(at, len)
    }

    /// For a piece `id` of `op` that covers its whole chunk: its request, and where
    /// the chunk lies in the request's buffers (offset and length).
    fn whole_chunk(&self, id: usize, op: Op) -> Option<(usize, usize, usize)> {
        match self.piece(id) {
            Piece::Chunk {
                op: piece_op,
                start: 0,
                len,
                at,
                ..
            } if piece_op == op && len == self.meta.geo.chunk_size() => {
                Some((self.slots[id].parent?, at, len))
            }
            _ => None,
        }
    }

    /// What a decompress of piece `id`'s chunk gave: the whole chunk, or `EIO` with
    /// what went wrong.
    fn decompressed(&self, id: usize, result: Result<usize>) -> Result<()> {
        let chunk_size = self.meta.geo.chunk_size();
        let why = match result {
            Ok(n) if n == chunk_size => return Ok(()),
            Ok(n) => format!("decompressing gave {n} bytes, not {chunk_size}"),
            Err(e) => match e.detail() {
                "" => format!("the codec failed to decompress it (errno {})", e.errno().0),
                detail => format!("the codec failed to decompress it: {detail}"),
            },
        };
        Err(Error::new(
            Errno::EIO,
            format!("{}: {why}", self.piece(id).chunks()),
        ))
    }

    fn decompress_done(
        &mut self,
        id: usize,
        io: CodecIo,
        plain: Option<Vec<u8>>,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let (buffers, user) = Buffers::from_codec(io, plain, false);
        match self.decompressed(id, result) {
            Ok(()) if user.is_none() => self.chunk_ready(id, buffers, out),
            // Decompressed into the caller's memory: nothing of it in ours to cache.
            Ok(()) => self.finish(id, Some(buffers), Ok(())),
            Err(e) => self.finish(id, Some(buffers), Err(e.logged())),
        }
    }

    /// The chunk's current content is in `plain`: a read copies out and is done; a
    /// write merges the caller's data, an unmap zeros its range. A result of all zeros
    /// is not stored: the chunk is emptied. Anything else is compressed.
    fn chunk_ready(&mut self, id: usize, mut buffers: Buffers, out: &mut Vec<Action>) {
        let Piece::Chunk {
            op,
            chunk,
            start,
            len,
            at,
        } = self.piece(id)
        else {
            unreachable!("only a chunk piece reads or merges a chunk")
        };
        let range = start..start + len;
        match op {
            Op::Read => {
                self.user(id).scatter(at, &buffers.plain[range]);
                // Its checksum and decompression passed on the way here.
                match self.meta.logical_entry(chunk) {
                    Some(index) => self.let_go_caching(id, index, buffers),
                    None => self.let_go(id, buffers),
                }
                return self.end(id, Ok(()));
            }
            Op::Write => {
                match self.compress_from_user(id, &mut buffers) {
                    Some(FromUser::Zeros) => {
                        self.let_go(id, buffers);
                        return self.clear(id, chunk..chunk + 1, out);
                    }
                    Some(FromUser::Stored(size, plain)) => {
                        return self.write_chunk(id, buffers, size, plain, out);
                    }
                    Some(FromUser::Lent(user)) => {
                        return self.compress(id, buffers, Some(user), out);
                    }
                    None => {}
                }
                self.user(id).gather(at, &mut buffers.plain[range])
            }
            Op::Unmap => buffers.plain[range].fill(0),
        }
        if all_zero(&buffers.plain) {
            self.let_go(id, buffers);
            return self.clear(id, chunk..chunk + 1, out);
        }
        self.compress(id, buffers, None, out);
    }

    /// Has the codec compress piece `id`'s chunk: from `plain`, or from the caller's
    /// memory (`user`, lent).
    fn compress(
        &mut self,
        id: usize,
        buffers: Buffers,
        user: Option<IoBuf>,
        out: &mut Vec<Action>,
    ) {
        let (io, plain) = buffers.into_codec(user, true, self.meta.geo.chunk_size());
        self.park(id, Stage::CompressingChunk { plain });
        let token = self.issue(id);
        out.push(Action::Compress(io, token));
    }

    /// A write of the whole chunk compressed straight from the caller's buffer, when
    /// that is one piece of memory: inside the call by a codec that works so, or later
    /// by the codec with that memory lent to it. To be stored raw, the chunk is written
    /// from the caller's memory when it can be lent, else copied into ours. `None`
    /// (nothing done) when any of that does not hold.
    fn compress_from_user(&mut self, id: usize, buffers: &mut Buffers) -> Option<FromUser> {
        let geo = self.meta.geo;
        let (parent, at, len) = self.whole_chunk(id, Op::Write)?;
        let user = self.parents.user(parent);
        let src = user.contiguous(at, len)?;
        if all_zero(src) {
            return Some(FromUser::Zeros);
        }
        warm(src);
        let Some(result) = self.codec.compress_now(src, &mut buffers.packed) else {
            return user.lend(at, len).map(FromUser::Lent);
        };
        let size = stored_size(&geo, result);
        if size < len {
            return Some(FromUser::Stored(size, Plain::Stale));
        }
        let plain = match user.lend(at, len) {
            Some(lent) => Plain::Caller(lent),
            None => {
                user.gather(at, &mut buffers.plain);
                Plain::New
            }
        };
        Some(FromUser::Stored(size, plain))
    }

    /// Empties `chunks` (see [`Metadata::clear`]), then has the device discard the io
    /// units they held, keeping them out of the free map until it is done.
    fn clear(&mut self, id: usize, chunks: std::ops::Range<u64>, out: &mut Vec<Action>) {
        self.cache.forget(chunks.clone(), &mut self.spare_buffers);
        let mut freed = match self.meta.clear(chunks) {
            Ok(freed) => freed,
            Err(e) => return self.finish(id, None, Err(e.logged())),
        };
        if freed.is_empty() {
            return self.finish(id, None, Ok(()));
        }
        freed.sort_unstable();
        let extents = self.trim_extents(&freed);
        self.trimming += 1;
        self.slots[id].freed = freed;
        self.park(id, Stage::Trimming);
        let token = self.issue(id);
        out.push(Action::Unmap(
            BackingIo {
                buf: IoBuf::default(),
                extents,
            },
            token,
        ));
    }

    /// Block runs of sorted io units: adjacent ones merge, up to what one run can count.
    fn trim_extents(&self, sorted: &[u64]) -> SmallVec<[Extent; 4]> {
        let geo = &self.meta.geo;
        let mut extents: SmallVec<[Extent; 4]> = SmallVec::new();
        for &unit in sorted {
            let lba = geo.io_unit_lba(unit);
            match extents.last_mut() {
                Some(last)
                    if last.lba + u64::from(last.lba_count) == lba
                        && last.lba_count <= u32::MAX - geo.lba_per_io_unit =>
                {
                    last.lba_count += geo.lba_per_io_unit
                }
                _ => extents.push(Extent {
                    lba,
                    lba_count: geo.lba_per_io_unit,
                    buf_offset: 0,
                }),
            }
        }
        extents
    }

    /// The device has discarded what piece `id` freed (or failed to, which costs
    /// nothing but the space it could have given back): the io units are free again.
    fn trim_done(&mut self, id: usize, result: Result<()>, out: &mut Vec<Action>) {
        let freed = self.drop_freed(id);
        if let Err(e) = result {
            log::emit(
                Level::Warn,
                format_args!(
                    "{}: the device failed to unmap the {} io units they no longer use ({e}); they are free again",
                    self.piece(id).chunks(),
                    freed.len()
                ),
            );
        }
        self.meta.release_io_units(&freed);
        self.finish(id, None, Ok(()));
        self.retry_space_waiters(out);
    }

    /// Takes back the io units piece `id` freed, if any: no longer being discarded.
    fn drop_freed(&mut self, id: usize) -> IoUnits {
        let freed = std::mem::take(&mut self.slots[id].freed);
        if !freed.is_empty() {
            self.trimming -= 1;
        }
        freed
    }

    fn compress_done(
        &mut self,
        id: usize,
        io: CodecIo,
        plain: Option<Vec<u8>>,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let size = stored_size(&self.meta.geo, result);
        let (buffers, user) = Buffers::from_codec(io, plain, true);
        let plain = match user {
            None => Plain::New,
            // To be stored raw: written straight from the caller's memory, lent again.
            Some(user) if size == self.meta.geo.chunk_size() => Plain::Caller(user),
            Some(_) => Plain::Stale,
        };
        self.write_chunk(id, buffers, size, plain, out);
    }

    /// The rule that keeps overwrites from running out of chunk maps: a write to a chunk
    /// that holds no data may take a chunk map only if, counting it, the chunks holding
    /// data (or being written for the first time) plus one spare map for each of them,
    /// up to [`MAX_ACTIVE`] spares, fit in the chunk maps the pm file has. An overwrite
    /// holds its spare from allocation until it commits; one piece per chunk runs at a
    /// time and at most `MAX_ACTIVE` hold buffers, so that many spares cover every
    /// overwrite that can be in flight at once.
    fn room_for_new_chunk(&self) -> bool {
        let held = self.meta.chunk_maps_in_use() - self.overwriting + 1;
        held + held.min(MAX_ACTIVE as u64) <= self.meta.chunk_maps_usable()
    }

    /// The chunk of chunk piece `id`.
    fn chunk_of(&self, id: usize) -> u64 {
        match self.piece(id) {
            Piece::Chunk { chunk, .. } | Piece::Clear { first: chunk, .. } => chunk,
        }
    }

    /// Allocates a chunk map and io units for the stored chunk of `size` bytes and
    /// writes it. A chunk never written gets `ENOSPC` when the spare chunk maps are
    /// all that is left. When the volume is out of space while other pieces hold some
    /// (writing, or having freed io units the device is discarding), waits for them.
    /// Only with none in flight is it `ENOSPC`. `plain`: what `buffers.plain` holds.
    fn write_chunk(
        &mut self,
        id: usize,
        buffers: Buffers,
        size: usize,
        plain: Plain,
        out: &mut Vec<Action>,
    ) {
        let geo = self.meta.geo;
        let chunk = self.chunk_of(id);
        let old = self.meta.logical_entry(chunk);
        if old.is_none() && !self.room_for_new_chunk() {
            let e = Error::new(
                Errno::ENOSPC,
                format!(
                    "chunk {chunk}: never written, and the {} free chunk maps are held back for overwrites of the chunks that hold data",
                    self.meta.chunk_maps_usable() - self.meta.chunk_maps_in_use()
                ),
            );
            return self.finish(id, Some(buffers), Err(e));
        }
        let (index, io_units) = match self.meta.allocate(geo.io_units_for(size as u32)) {
            Ok(allocation) => allocation,
            Err(_) if self.writing > 0 || self.trimming > 0 => {
                self.park(
                    id,
                    Stage::WaitingForSpace {
                        buffers,
                        size,
                        plain,
                    },
                );
                return self.space_waiters.push_back(id);
            }
            Err(e) => return self.finish(id, Some(buffers), Err(e)),
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
                old,
            },
        );
        let (mut buf, kept, plain) = match plain {
            Plain::Caller(user) => (user, Kept::Both(buffers), Plain::Stale),
            plain => {
                let (buf, kept) = buffers.lend(size == geo.chunk_size());
                (buf, kept, plain)
            }
        };
        // The last io unit's tail would carry stale bytes of an earlier chunk (ours
        // only: a raw chunk fills its io units).
        if size < written {
            buf[size..written].fill(0);
        }
        self.new_chunk(id).map.checksum = chunk_checksum(&buf[..size]);
        self.park(id, Stage::WritingChunk { kept, plain });
        let token = self.issue(id);
        out.push(Action::Write(BackingIo { buf, extents }, token));
    }

    /// Piece `id` now holds `new` (and counts among the writes in flight).
    fn hold_new(&mut self, id: usize, new: NewChunk) {
        self.writing += 1;
        self.overwriting += u64::from(new.old.is_some());
        self.slots[id].new = Some(new);
    }

    /// The new chunk of piece `id`, which is writing.
    fn new_chunk(&mut self, id: usize) -> &mut NewChunk {
        self.slots[id]
            .new
            .as_mut()
            .expect("a write in flight holds its new chunk")
    }

    /// Takes back the new chunk piece `id` holds, if any: no longer a write in flight.
    fn drop_new(&mut self, id: usize) -> Option<NewChunk> {
        let new = self.slots[id].new.take()?;
        self.writing -= 1;
        self.overwriting -= u64::from(new.old.is_some());
        Some(new)
    }

    /// The new chunk is on the device (or the device failed: the piece fails and gives
    /// its new chunk map back). Its chunk map goes into the pm mapping, and the piece
    /// joins the group, to be committed with it (see [`Engine::flush_group`]); its
    /// buffers are free for others already, but for a `plain` holding the new content,
    /// which goes to the cache under the new chunk map.
    fn write_chunk_done(
        &mut self,
        id: usize,
        buffers: Buffers,
        plain: Plain,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = result {
            if let Some(new) = self.drop_new(id) {
                self.meta.release(new.index, &new.map.io_units);
            }
            self.finish(id, Some(buffers), Err(e));
            return self.retry_space_waiters(out);
        }
        let new = self.new_chunk(id);
        let (index, map) = (new.index, new.map.clone());
        self.meta.stage(index, &map);
        // The entry is used only once the logical map names `index`: after the commit,
        // never if the group fails (see `cache.rs`).
        match plain {
            Plain::New => self.let_go_caching(id, index, buffers),
            Plain::Stale | Plain::Caller(_) => self.let_go(id, buffers),
        }
        self.park(id, Stage::Committing);
        self.group.push_back(id);
        if self.group.len() >= GROUP_MAX {
            self.flush(out);
        }
    }

    /// Called by the drain loop when it has no event left: commits the group once no
    /// operation that may still join it is out. Until then one is, and its completion
    /// comes back through the drain loop, which calls this again; so a written piece
    /// never waits without something on the way to commit it. Pieces waiting for
    /// buffers or space are not out: they wait for the group, not it for them.
    ///
    /// On a pm file whose persists cost nothing (a RAM file system) there is nothing to
    /// save by waiting, and a write held back idles its share of a codec pool: the
    /// group commits at once.
    pub(crate) fn flush_group(&mut self, out: &mut Vec<Action>) {
        if self.pending == 0 || self.meta.pm().in_memory() {
            self.flush(out);
        }
    }

    /// Commits the group (see [`Metadata::commit_group`]), then completes its pieces in
    /// order: each frees the chunk map it replaced and ends. A failed commit fails
    /// every piece of the group, each giving its new chunk map back.
    fn flush(&mut self, out: &mut Vec<Action>) {
        if !self.group.is_empty() {
            let switches = self.switches();
            // The group is in hand: a panic now fails all of it (see `recover`).
            self.in_hand = self.group.front().copied();
            let committed = self.meta.commit_group(&switches);
            self.in_hand = None;
            self.switches = switches;
            match committed {
                Ok(()) => self.committed.extend(self.group.drain(..)),
                Err(e) => self.fail_group(e.logged()),
            }
        }
        self.complete_committed();
        self.retry_space_waiters(out);
        self.run(out);
    }

    /// The switches of the group's pieces, in order, in the engine's reused list.
    fn switches(&mut self) -> Vec<Switch> {
        let mut switches = std::mem::take(&mut self.switches);
        switches.clear();
        switches.extend(self.group.iter().map(|&id| {
            let new = self.slots[id]
                .new
                .as_ref()
                .expect("a piece in the group holds its new chunk");
            Switch {
                chunk: self.chunk_of(id),
                index: new.index,
                old: new.old,
            }
        }));
        switches
    }

    /// Takes in hand piece `id`, just taken from the group or the committed, where it
    /// was parked as `Committing`.
    fn take_committing(&mut self, id: usize) {
        let stage = self.slots[id].stage.take();
        debug_assert!(matches!(stage, Some(Stage::Committing)), "piece {id}");
        self.in_hand = Some(id);
    }

    /// Ends every piece of the group with `e`, in order, each giving back its new chunk
    /// map (its entry is the old one: the commit set it back), freed or held as
    /// [`Metadata::release_group`] decides, before any request completes.
    fn fail_group(&mut self, e: Error) {
        let mut maps = Vec::with_capacity(self.group.len());
        while let Some(id) = self.group.pop_front() {
            self.take_committing(id);
            if let Some(new) = self.drop_new(id) {
                maps.push((new.index, new.map.io_units));
            }
            self.end(id, Err(e.clone()));
        }
        self.meta.release_group(maps);
    }

    /// Completes the pieces of a committed group, in order.
    fn complete_committed(&mut self) {
        while let Some(id) = self.committed.pop_front() {
            self.take_committing(id);
            let chunk = self.chunk_of(id);
            let new = self
                .drop_new(id)
                .expect("a committed piece holds its new chunk");
            let switch = Switch {
                chunk,
                index: new.index,
                old: new.old,
            };
            self.meta.settle(&switch, &new.map);
            self.end(id, Ok(()));
        }
    }

    /// Space may have been freed (or nothing holds any more): retries the writes waiting
    /// for it, each once (one that still finds none queues again).
    fn retry_space_waiters(&mut self, out: &mut Vec<Action>) {
        for _ in 0..self.space_waiters.len() {
            let Some(waiter) = self.space_waiters.pop_front() else {
                break;
            };
            if let Some(Stage::WaitingForSpace {
                buffers,
                size,
                plain,
            }) = self.take_queued(waiter)
            {
                self.write_chunk(waiter, buffers, size, plain, out);
            }
        }
    }

    /// Returns piece `id`'s buffers and gives up its claim on them: the next piece
    /// waiting for buffers may go.
    fn let_go(&mut self, id: usize, buffers: Buffers) {
        self.spare_buffers.push(buffers.plain);
        self.spare_buffers.push(buffers.packed);
        self.drop_claim(id);
    }

    /// As [`Engine::let_go`], but `plain`, the content of piece `id`'s chunk as stored
    /// in chunk map `index`, stays in the cache, trading places with a buffer the cache
    /// no longer needs. Not the checker's (it must neither use nor fill the cache), nor
    /// a buffer of another size (handed back so by a codec with a bug).
    fn let_go_caching(&mut self, id: usize, index: u64, buffers: Buffers) {
        let checker = self.slots[id]
            .parent
            .is_some_and(|parent| self.parents.is_checker(parent));
        let Buffers { plain, packed } = buffers;
        let spare = if checker || plain.len() != self.meta.geo.chunk_size() {
            Some(plain)
        } else {
            self.cache.fill(self.chunk_of(id), index, plain)
        };
        self.spare_buffers.extend(spare);
        self.spare_buffers.push(packed);
        self.drop_claim(id);
    }

    fn drop_claim(&mut self, id: usize) {
        let slot = &mut self.slots[id];
        if slot.active {
            slot.active = false;
            self.active -= 1;
            self.to_admit.extend(self.waiting.pop_front());
        }
    }

    /// Releases everything piece `id` holds (`buffers`, if it has them back) and ends
    /// it with `result`.
    fn finish(&mut self, id: usize, buffers: Option<Buffers>, result: Result<()>) {
        if let Some(buffers) = buffers {
            self.let_go(id, buffers);
        }
        self.end(id, result);
    }

    /// Gives up piece `id`'s claim on buffers, frees its slot (its generation moves on,
    /// so nothing still out under its tickets is taken) and reports `result` to its
    /// request.
    fn end(&mut self, id: usize, result: Result<()>) {
        self.drop_claim(id);
        let slot = &mut self.slots[id];
        slot.generation += 1;
        slot.stage = None;
        if std::mem::take(&mut slot.pending) {
            // Recovery ended it after it issued an operation, withdrawn unperformed.
            self.pending -= 1;
        }
        let parent = slot.parent.take();
        self.free_slots.push(id);
        self.in_hand = None;
        if let Some(parent) = parent {
            self.parents.piece_done(parent, result);
        }
    }

    /// Goes on after [`Engine::recover`]: the step that panicked may have left pieces
    /// to admit, or writes waiting for space that nothing in flight will wake.
    pub(crate) fn resume(&mut self, out: &mut Vec<Action>) {
        self.complete_committed();
        self.retry_space_waiters(out);
        self.run(out);
    }

    /// After a step panicked (`why`): ends the piece it had in hand with `EIO`. Its new
    /// chunk map and io units go back unless its commit already made them the chunk's,
    /// and so do the io units it freed; operations it issued in this step are withdrawn
    /// from `out` (their buffers were never lent); nothing it issued earlier is out (it
    /// is in hand), so its request may complete. Returns the slot, or `None` when no
    /// piece was in hand.
    pub(crate) fn recover(&mut self, why: &str, out: &mut Vec<Action>) -> Option<usize> {
        let id = self.in_hand.take()?;
        if matches!(self.slots[id].stage, Some(Stage::Committing)) {
            // The group's persists were in hand: the whole group fails, its entries
            // set back (its new maps may be durable; nothing durable names them).
            let switches = self.switches();
            self.meta.unswitch(&switches);
            let e = Error::new(
                Errno::EIO,
                format!(
                    "internal error ({why}) while committing a group of {} writes; they failed",
                    switches.len()
                ),
            );
            self.fail_group(e.logged());
            return Some(id);
        }
        // In hand: nothing of it is out but what this step issued (see the header).
        debug_assert!(self.slots[id].stage.is_none(), "piece {id} in hand");
        out.retain(|action| action.ticket().is_none_or(|t| t.slot != id));
        let chunk = self.chunk_of(id);
        if let Some(new) = self.drop_new(id) {
            if self.meta.logical_entry(chunk) != Some(new.index) {
                self.meta.release(new.index, &new.map.io_units);
            }
        }
        let freed = self.drop_freed(id);
        self.meta.release_io_units(&freed);
        let e = Error::new(
            Errno::EIO,
            format!(
                "{}: internal error ({why}); the request failed",
                self.piece(id).chunks()
            ),
        );
        self.end(id, Err(e.logged()));
        Some(id)
    }
}

impl Engine {
    pub(crate) fn outstanding(&self) -> usize {
        self.parents.outstanding()
    }

    /// Takes a request: an invalid or empty one completes at once, holding nothing;
    /// any other is ordered after the earlier ones it overlaps and runs piece by piece.
    /// `counted`: whether it counts in the volume's statistics.
    pub(crate) fn submit(
        &mut self,
        op: Op,
        offset: u64,
        length: u64,
        user: Box<dyn UserIo>,
        counted: bool,
        out: &mut Vec<Action>,
    ) {
        let geo = self.meta.geo;
        match locate(&geo, op, offset, length, user.len()) {
            Ok(Some(span)) => {
                // A read of one chunk that no request in flight shares ends here when it
                // needs no device read (most of a chunk read in pieces: a cache hit),
                // without a place in the request table or the piece table.
                let mut user = user;
                if op == Op::Read && counted {
                    if let Some(piece) = self.parents.lone_piece(op, span, &geo) {
                        let (meta, cache) = (&self.meta, &mut self.cache);
                        if read_without_device(meta, cache, piece, user.as_mut(), true) {
                            return self.complete_at_once(op, user, Ok(()), counted, out);
                        }
                    }
                }
                self.parents.open(op, span, user, counted);
                self.run(out);
            }
            Ok(None) => self.complete_at_once(op, user, Ok(()), counted, out),
            Err(e) => self.complete_at_once(op, user, Err(e), counted, out),
        }
    }

    /// Completes a request that ran no piece (refused, empty, or a read that needed no
    /// device read), counting it.
    pub(crate) fn complete_at_once(
        &mut self,
        op: Op,
        user: Box<dyn UserIo>,
        result: Result<()>,
        counted: bool,
        out: &mut Vec<Action>,
    ) {
        if counted {
            self.parents.record(op, result.is_err());
        }
        out.push(Action::Finish(user, result));
    }

    /// Request `r` hands out what pieces it may, and completes once it is done.
    pub(super) fn refill(&mut self, r: usize, out: &mut Vec<Action>) {
        if !self.parents.runnable(r) {
            return;
        }
        let geo = self.meta.geo;
        while let Some(piece) = self.parents.next_piece(r, &geo) {
            self.open_slot(r, piece);
        }
        if self.parents.done(r) {
            let (user, result) = self.parents.close(r);
            out.push(Action::Finish(user, result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::all_zero;

    #[test]
    fn zero_scan_finds_any_nonzero_byte() {
        assert!(all_zero(&[]));
        for len in [1, 63, 64, 65, 200, 4096] {
            let mut buf = vec![0u8; len];
            assert!(all_zero(&buf));
            for at in [0, len / 2, len - 1] {
                buf[at] = 1;
                assert!(!all_zero(&buf), "len {len}, byte {at}");
                buf[at] = 0;
            }
        }
    }
}
