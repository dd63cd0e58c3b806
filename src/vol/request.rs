//! The request state machine: reads and writes of a loaded volume.
//!
//! ```text
//! read:   admit ─ chunk never written ──────────────────────────────────────► finish
//!           └─ read_chunk ─► backing_read_done ─ raw ──────────► chunk_ready ► finish
//!                                  └─ compressed ─► decompress_done ─┘
//! write:  admit ─ partial, chunk written ─► read_chunk ─► ... ─► chunk_ready
//!           └─ whole chunk, or never written ─────────────────► chunk_ready
//!         chunk_ready (merge caller's data) ─► compress_done (allocate) ─► write_chunk_done
//!           ─► commit (persist chunk map, switch logical map entry, free old) ─► finish
//! ```
//!
//! Requests to the same chunk run one at a time in submission order (a per-chunk
//! queue). At most [`MAX_ACTIVE`] requests hold chunk buffers at once; the rest wait
//! in order, so any number may be submitted. Everything a request holds (buffers, a
//! new chunk map and its io units) is released before its caller hears of it.

use std::collections::{HashMap, VecDeque};

use smallvec::SmallVec;

use super::{Action, Token, UserIo};
use crate::backing::{BackingIo, Extent};
use crate::codec::CodecIo;
use crate::error::{Errno, Result};
use crate::format::chunk_checksum;
use crate::maps::{ChunkMap, Metadata, checksum_ok};

/// Requests holding chunk buffers at once. It matches the extra chunk maps, so writes in
/// flight on a volume full of incompressible data still find room.
pub const MAX_ACTIVE: usize = crate::format::EXTRA_CHUNKS as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

/// Where a request is. The completion that arrives next is named after what finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Behind an earlier request to the same chunk, or waiting for buffers.
    Waiting,
    /// Reading the stored chunk: for a read, or the old data of a partial write.
    ReadingChunk,
    DecompressingChunk,
    CompressingChunk,
    /// Compressed, waiting for writes in flight to free space.
    WaitingForSpace,
    WritingChunk,
}

struct Request {
    op: Op,
    chunk: u64,
    /// Byte range of the chunk the caller reads or writes.
    start: usize,
    len: usize,
    user: Box<dyn UserIo>,
    stage: Stage,
    /// The next request to the same chunk, started when this one finishes.
    next: Option<usize>,
    /// Chunk buffers, present while active and not lent to an operation.
    plain: Option<Vec<u8>>,
    packed: Option<Vec<u8>>,
    active: bool,
    /// The stored chunk being read.
    old: Option<ChunkMap>,
    /// The chunk map (index, contents) allocated for the write in flight.
    new: Option<(u64, ChunkMap)>,
    /// Bytes to store: the compressed size, or `chunk_size` for a raw chunk.
    stored_size: usize,
}

/// The I/O side of a loaded volume.
pub(crate) struct Engine {
    pub(crate) meta: Metadata,
    requests: Vec<Option<Request>>,
    free_slots: Vec<usize>,
    outstanding: usize,
    /// The last request queued on each busy chunk.
    chunk_tails: HashMap<u64, usize>,
    /// Requests now at the head of their chunk, to admit.
    to_admit: VecDeque<usize>,
    /// Admitted requests waiting for buffers.
    waiting: VecDeque<usize>,
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
            requests: Vec::new(),
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
            stage: Stage::Waiting,
            next: None,
            plain: None,
            packed: None,
            active: false,
            old: None,
            new: None,
            stored_size: 0,
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.requests[id] = Some(request);
                id
            }
            None => {
                self.requests.push(Some(request));
                self.requests.len() - 1
            }
        };
        self.outstanding += 1;
        match self.chunk_tails.insert(chunk, id) {
            Some(prev) => self.req(prev).next = Some(id),
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
        let end = offset.checked_add(length).ok_or(Errno::EINVAL)?;
        if end > geo.chunks * per_chunk {
            return Err(Errno::EINVAL);
        }
        let chunk = offset / per_chunk;
        if (end - 1) / per_chunk != chunk {
            return Err(Errno::EINVAL);
        }
        if length.checked_mul(lbs) != Some(user_len as u64) {
            return Err(Errno::EINVAL);
        }
        let start = (offset % per_chunk * lbs) as usize;
        Ok(Some((chunk, start, user_len)))
    }

    fn req(&mut self, id: usize) -> &mut Request {
        self.requests[id].as_mut().expect("live request")
    }

    /// Admits requests that reached the head of their chunk; a loop, not recursion, so
    /// long same-chunk queues that finish at once do not deepen the stack.
    fn run_admissions(&mut self, out: &mut Vec<Action>) {
        while let Some(id) = self.to_admit.pop_front() {
            self.admit(id, out);
        }
    }

    fn admit(&mut self, id: usize, out: &mut Vec<Action>) {
        let (op, chunk) = {
            let r = self.req(id);
            (r.op, r.chunk)
        };
        if op == Op::Read && self.meta.logical_entry(chunk).is_none() {
            self.req(id).user.zero();
            return self.finish(id, Ok(()), out);
        }
        if self.active == MAX_ACTIVE {
            return self.waiting.push_back(id);
        }
        self.active += 1;
        let (plain, packed) = (self.take_buffer(), self.take_buffer());
        let r = self.req(id);
        r.active = true;
        r.plain = Some(plain);
        r.packed = Some(packed);
        self.start(id, out);
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let size = self.meta.geo.chunk_size();
        self.spare_buffers.pop().unwrap_or_else(|| vec![0; size])
    }

    fn start(&mut self, id: usize, out: &mut Vec<Action>) {
        let chunk_size = self.meta.geo.chunk_size();
        let (op, chunk, start, len) = {
            let r = self.req(id);
            (r.op, r.chunk, r.start, r.len)
        };
        let whole = start == 0 && len == chunk_size;
        match self.meta.lookup(chunk) {
            Some(stored) if op == Op::Read || !whole => self.read_chunk(id, stored, out),
            Some(_) => self.chunk_ready(id, out),
            None => {
                // A chunk never written reads as zeros around the caller's data.
                if !whole {
                    self.req(id).plain.as_mut().expect("plain buffer").fill(0);
                }
                self.chunk_ready(id, out)
            }
        }
    }

    fn read_chunk(&mut self, id: usize, stored: ChunkMap, out: &mut Vec<Action>) {
        let raw = stored.is_raw(&self.meta.geo);
        let extents = self.extents(&stored.io_units);
        let r = self.req(id);
        let buf = if raw { r.plain.take() } else { r.packed.take() };
        r.old = Some(stored);
        r.stage = Stage::ReadingChunk;
        out.push(Action::Read(
            BackingIo {
                buf: buf.expect("chunk buffer"),
                extents,
            },
            Token::Request(id),
        ));
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
        match self
            .requests
            .get(id)
            .and_then(Option::as_ref)
            .map(|r| r.stage)
        {
            Some(Stage::ReadingChunk) => self.backing_read_done(id, io.buf, result, out),
            Some(Stage::WritingChunk) => self.write_chunk_done(id, io.buf, result, out),
            other => debug_assert!(false, "stray backing completion for {id} in {other:?}"),
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
        match self
            .requests
            .get(id)
            .and_then(Option::as_ref)
            .map(|r| r.stage)
        {
            Some(Stage::DecompressingChunk) => self.decompress_done(id, io, result, out),
            Some(Stage::CompressingChunk) => self.compress_done(id, io, result, out),
            other => debug_assert!(false, "stray codec completion for {id} in {other:?}"),
        }
        self.run_admissions(out);
    }

    fn backing_read_done(
        &mut self,
        id: usize,
        buf: Vec<u8>,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        let geo = self.meta.geo;
        let r = self.req(id);
        let stored = r.old.take().expect("stored chunk");
        let raw = stored.is_raw(&geo);
        let stored_len = stored.compressed_size as usize;
        if let Err(e) = result {
            *(if raw { &mut r.plain } else { &mut r.packed }) = Some(buf);
            return self.finish(id, Err(e), out);
        }
        // Never hand back or merge into data that does not match what was written.
        if !checksum_ok(&stored, &buf[..stored_len]) {
            *(if raw { &mut r.plain } else { &mut r.packed }) = Some(buf);
            return self.finish(id, Err(Errno::EIO), out);
        }
        if raw {
            r.plain = Some(buf);
            return self.chunk_ready(id, out);
        }
        r.stage = Stage::DecompressingChunk;
        let io = CodecIo {
            src: buf,
            src_len: stored_len,
            dst: r.plain.take().expect("plain buffer"),
        };
        out.push(Action::Decompress(io, Token::Request(id)));
    }

    fn decompress_done(
        &mut self,
        id: usize,
        io: CodecIo,
        result: Result<usize>,
        out: &mut Vec<Action>,
    ) {
        let chunk_size = self.meta.geo.chunk_size();
        let r = self.req(id);
        r.packed = Some(io.src);
        r.plain = Some(io.dst);
        match result {
            Ok(n) if n == chunk_size => self.chunk_ready(id, out),
            _ => self.finish(id, Err(Errno::EIO), out),
        }
    }

    /// The chunk's current content is in `plain`: a read copies out and is done; a
    /// write merges the caller's data and compresses.
    fn chunk_ready(&mut self, id: usize, out: &mut Vec<Action>) {
        let r = self.req(id);
        let (start, len) = (r.start, r.len);
        let plain = r.plain.as_mut().expect("plain buffer");
        if r.op == Op::Read {
            r.user.scatter(0, &plain[start..start + len]);
            return self.finish(id, Ok(()), out);
        }
        r.user.gather(0, &mut plain[start..start + len]);
        r.stage = Stage::CompressingChunk;
        let src = r.plain.take().expect("plain buffer");
        let io = CodecIo {
            src_len: src.len(),
            src,
            dst: r.packed.take().expect("packed buffer"),
        };
        out.push(Action::Compress(io, Token::Request(id)));
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
        let r = self.req(id);
        r.plain = Some(io.src);
        r.packed = Some(io.dst);
        r.stored_size = size;
        self.write_chunk(id, out);
    }

    /// Allocates a chunk map and io units for the stored chunk and writes it. When
    /// the volume is out of space while other writes hold allocations, waits for them:
    /// each frees the chunk it replaces. Only with none in flight is it `ENOSPC`.
    fn write_chunk(&mut self, id: usize, out: &mut Vec<Action>) {
        let geo = self.meta.geo;
        let size = self.req(id).stored_size;
        let (index, io_units) = match self.meta.allocate(geo.io_units_for(size as u32)) {
            Ok(allocation) => allocation,
            Err(_) if self.writing > 0 => {
                self.req(id).stage = Stage::WaitingForSpace;
                return self.space_waiters.push_back(id);
            }
            Err(e) => return self.finish(id, Err(e), out),
        };
        let extents = self.extents(&io_units);
        let r = self.req(id);
        let raw = size == geo.chunk_size();
        let mut buf = if raw { r.plain.take() } else { r.packed.take() }.expect("chunk buffer");
        // The last io unit's tail would carry stale bytes of an earlier chunk.
        let written = io_units.len() * geo.io_unit_size();
        buf[size..written].fill(0);
        let map = ChunkMap {
            compressed_size: size as u32,
            checksum: chunk_checksum(&buf[..size]),
            io_units,
        };
        r.new = Some((index, map));
        r.stage = Stage::WritingChunk;
        self.writing += 1;
        out.push(Action::Write(
            BackingIo { buf, extents },
            Token::Request(id),
        ));
    }

    fn write_chunk_done(
        &mut self,
        id: usize,
        buf: Vec<u8>,
        result: Result<()>,
        out: &mut Vec<Action>,
    ) {
        let chunk_size = self.meta.geo.chunk_size();
        let r = self.req(id);
        let chunk = r.chunk;
        let (index, map) = r.new.take().expect("new chunk map");
        if map.compressed_size as usize == chunk_size {
            r.plain = Some(buf);
        } else {
            r.packed = Some(buf);
        }
        let committed = result.and_then(|()| self.meta.commit(chunk, index, &map));
        if committed.is_err() {
            self.meta.release(index, &map.io_units);
        }
        self.writing -= 1;
        self.finish(id, committed, out);
        // Space may have been freed (or nothing holds any more): retry the waiters.
        for waiter in std::mem::take(&mut self.space_waiters) {
            self.write_chunk(waiter, out);
        }
    }

    /// Releases everything `id` holds, lets the next request on its chunk and the next
    /// waiting for buffers go, then reports to the caller.
    fn finish(&mut self, id: usize, result: Result<()>, out: &mut Vec<Action>) {
        let r = self.requests[id].take().expect("live request");
        self.free_slots.push(id);
        self.outstanding -= 1;
        if r.active {
            self.spare_buffers.extend(r.plain);
            self.spare_buffers.extend(r.packed);
            self.active -= 1;
            self.to_admit.extend(self.waiting.pop_front());
        }
        match r.next {
            Some(next) => self.to_admit.push_back(next),
            None => {
                self.chunk_tails.remove(&r.chunk);
            }
        }
        out.push(Action::Finish(r.user, result));
    }
}
