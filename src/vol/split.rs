//! A caller's request, of any shape: validated, ordered against the requests before
//! it, cut into pieces (`request.rs` runs them), and completed once, with the first
//! error, when its last piece ends.
//!
//! ```text
//! submit ─ bad ───────────────────────────────────────────────────► complete(EINVAL)
//!   │ length 0 ───────────────────────────────────────────────────► complete(ok)
//!   │ a read within one chunk no request in flight shares, the
//!   │ chunk empty or cached (`request.rs`: read_without_device) ──► complete(ok)
//!   ▼
//! open ─ an earlier request overlaps ─► Blocked ─(the last of them completes)─┐
//!   └───────────────────────────────────────────────────────────────────────┐ │
//!                                                                           ▼ ▼
//! refill: hand out pieces in chunk order, up to PIECES_IN_FLIGHT at once ◄─ piece ends
//!   └─ every piece ended (or one failed and the rest in flight ended) ─► complete
//! ```
//!
//! Order: a request waits until every earlier request that shares a chunk with it has
//! completed, so requests to the same blocks complete in submission order and a read
//! sees every write submitted before it. [`Order`] keeps, for each chunk some request
//! covers, the request submitted last over it, as disjoint runs of chunks: a request
//! over a million chunks costs one run, not a million entries, and its pieces exist only
//! while they run.
//!
//! Pieces: one per chunk the request touches, except that an unmap empties whole chunks
//! a run at a time (one persist of their logical map entries). A piece that fails stops
//! the handing out of more; the request completes once those in flight have ended, with
//! the first error. So a failed write or unmap over many chunks may have changed some
//! of them (each wholly, old or new), as a failed write to one chunk may have changed
//! none.

use std::collections::VecDeque;
use std::ops::Range;

use smallvec::SmallVec;

use super::UserIo;
use crate::error::{Errno, Error, Result};
use crate::format::Geometry;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copies blocks from the volume into the caller's buffers.
    Read,
    /// Stores the caller's buffers in the volume.
    Write,
    /// Discards blocks: they read as zeros afterwards, and a chunk left all zeros takes
    /// no space. Carries no buffers.
    Unmap,
}

/// What one piece of a request does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Piece {
    /// `op` on bytes `start..start + len` of chunk `chunk`, which are bytes `at..` of the
    /// request's buffers (an unmap has none).
    Chunk {
        op: Op,
        chunk: u64,
        start: usize,
        len: usize,
        at: usize,
    },
    /// Empties `count` whole chunks from `first` (an unmap).
    Clear { first: u64, count: u64 },
}

impl Piece {
    /// The piece's chunks, for messages.
    pub(super) fn chunks(&self) -> String {
        match *self {
            Piece::Chunk { chunk, .. } => format!("chunk {chunk}"),
            Piece::Clear { first, count: 1 } => format!("chunk {first}"),
            Piece::Clear { first, count } => format!("chunks {first}..={}", first + count - 1),
        }
    }
}

/// Pieces of one request in flight at once: enough to keep a device and a codec pool
/// busy, few enough that a huge request holds little.
const PIECES_IN_FLIGHT: usize = 32;

/// Io units an unmap frees with one piece at most (the chunks of a run hold at most
/// this many): the list of them stays small whatever the chunk size.
const CLEAR_RUN_IO_UNITS: u64 = 4096;

/// Requests completed since load, by kind, and those that failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) unmaps: u64,
    pub(crate) errors: u64,
}

impl Counts {
    fn record(&mut self, op: Op, failed: bool) {
        match op {
            Op::Read => self.reads += 1,
            Op::Write => self.writes += 1,
            Op::Unmap => self.unmaps += 1,
        }
        self.errors += u64::from(failed);
    }
}

/// The chunks and blocks a valid, non-empty request covers.
#[derive(Clone, Copy)]
pub(super) struct Span {
    /// Logical blocks `offset..offset + length`.
    offset: u64,
    length: u64,
    /// Chunks `first..=last`.
    first: u64,
    last: u64,
}

impl Span {
    /// The piece of `op` over this span that starts at chunk `chunk`.
    fn piece(&self, op: Op, chunk: u64, geo: &Geometry) -> Piece {
        let bpc = u64::from(geo.blocks_per_chunk);
        let lbs = u64::from(geo.params.logical_block_size);
        let (end, chunk_start) = (self.offset + self.length, chunk * bpc);
        let (from, to) = (self.offset.max(chunk_start), end.min(chunk_start + bpc));
        if op == Op::Unmap && from == chunk_start && to == chunk_start + bpc {
            let run = (CLEAR_RUN_IO_UNITS / u64::from(geo.io_units_per_chunk)).max(1);
            let count = (end / bpc - chunk).min(run);
            Piece::Clear {
                first: chunk,
                count,
            }
        } else {
            Piece::Chunk {
                op,
                chunk,
                start: ((from - chunk_start) * lbs) as usize,
                len: ((to - from) * lbs) as usize,
                at: ((from - self.offset) * lbs) as usize,
            }
        }
    }
}

/// A caller's request from submission to completion.
struct Parent {
    /// The caller's side; `None` once completed (the entry is free).
    user: Option<Box<dyn UserIo>>,
    op: Op,
    /// Counted in [`Counts`] (the checker's own reads are not).
    counted: bool,
    span: Span,
    /// The next chunk to hand out a piece for.
    next: u64,
    /// Pieces handed out and not ended.
    live: usize,
    /// The first error a piece ended with.
    result: Result<()>,
    /// Earlier overlapping requests not yet completed.
    blockers: usize,
    /// Later requests waiting for this one.
    successors: SmallVec<[usize; 2]>,
}

/// The runs of chunks requests cover: each run (first chunk, last chunk, request)
/// names the request submitted last over it. Runs are disjoint, sorted by their first
/// chunk, in a list rather than a tree: they are about as many as the requests in
/// flight, and the list allocates nothing once it has grown to that.
#[derive(Default)]
struct Order {
    runs: Vec<(u64, u64, usize)>,
}

impl Order {
    /// Where the runs overlapping chunks `first..=last` are in the list.
    fn overlapping(&self, first: u64, last: u64) -> Range<usize> {
        let from = self.runs.partition_point(|&(_, end, _)| end < first);
        let to = from + self.runs[from..].partition_point(|&(start, _, _)| start <= last);
        from..to
    }

    /// Request `r` now comes last over `first..=last`: returns the requests it must
    /// wait for (the last over each of its chunks), each once.
    fn enter(&mut self, first: u64, last: u64, r: usize) -> SmallVec<[usize; 4]> {
        let at = self.overlapping(first, last);
        let mut before: SmallVec<[usize; 4]> = SmallVec::new();
        for &(_, _, q) in &self.runs[at.clone()] {
            if !before.contains(&q) {
                before.push(q);
            }
        }
        // What is left of the first and last overlapping runs, either side of the new.
        let head = self.runs[at.clone()]
            .first()
            .filter(|&&(start, _, _)| start < first)
            .map(|&(start, _, q)| (start, first - 1, q));
        let tail = self.runs[at.clone()]
            .last()
            .filter(|&&(_, end, _)| end > last)
            .map(|&(_, end, q)| (last + 1, end, q));
        let new = head.into_iter().chain([(first, last, r)]).chain(tail);
        self.runs.splice(at, new);
        before
    }

    /// Request `r` over `first..=last` completed: its runs that no later request
    /// covered go.
    fn leave(&mut self, first: u64, last: u64, r: usize) {
        let at = self.overlapping(first, last);
        let mut i = at.start;
        for _ in at {
            if self.runs[i].2 == r {
                self.runs.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// The callers' requests in flight and their order.
#[derive(Default)]
pub(crate) struct Parents {
    table: Vec<Parent>,
    free: Vec<usize>,
    order: Order,
    /// Requests that may hand out more pieces, or complete.
    pub(super) to_refill: VecDeque<usize>,
    /// Requests submitted and not completed.
    outstanding: usize,
    pub(crate) counts: Counts,
}

impl Parents {
    /// The caller's side of request `r`, which is in flight.
    pub(super) fn user(&mut self, r: usize) -> &mut dyn UserIo {
        self.table[r]
            .user
            .as_deref_mut()
            .expect("a request in flight has its caller's side")
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Whether request `r` is the checker's (not counted): its reads must come from the
    /// device, and would only crowd the cache.
    pub(super) fn is_checker(&self, r: usize) -> bool {
        !self.table[r].counted
    }

    /// Counts a request that completed without running (refused, or empty).
    pub(super) fn record(&mut self, op: Op, failed: bool) {
        self.counts.record(op, failed);
    }

    /// A piece of request `r` ended with `result`: the first error is the request's.
    pub(super) fn piece_done(&mut self, r: usize, result: Result<()>) {
        let p = &mut self.table[r];
        p.live -= 1;
        if let (Err(e), Ok(())) = (result, &p.result) {
            p.result = Err(e);
        }
        self.to_refill.push_back(r);
    }

    /// A new request over `span`, after every earlier one it overlaps: queued to hand
    /// out pieces at once when none is in flight.
    pub(super) fn open(&mut self, op: Op, span: Span, user: Box<dyn UserIo>, counted: bool) {
        let parent = Parent {
            user: Some(user),
            op,
            counted,
            span,
            next: span.first,
            live: 0,
            result: Ok(()),
            blockers: 0,
            successors: SmallVec::new(),
        };
        let r = match self.free.pop() {
            Some(r) => {
                self.table[r] = parent;
                r
            }
            None => {
                self.table.push(parent);
                self.table.len() - 1
            }
        };
        self.outstanding += 1;
        for q in self.order.enter(span.first, span.last, r) {
            self.table[q].successors.push(r);
            self.table[r].blockers += 1;
        }
        if self.table[r].blockers == 0 {
            self.to_refill.push_back(r);
        }
    }

    /// The next piece of request `r`, or `None` when it should hand out no more (all
    /// handed out, a piece failed, or as many in flight as it may have).
    pub(super) fn next_piece(&mut self, r: usize, geo: &Geometry) -> Option<Piece> {
        let p = &mut self.table[r];
        if p.live >= PIECES_IN_FLIGHT || p.next > p.span.last || p.result.is_err() {
            return None;
        }
        let piece = p.span.piece(p.op, p.next, geo);
        p.next += match piece {
            Piece::Clear { count, .. } => count,
            Piece::Chunk { .. } => 1,
        };
        p.live += 1;
        Some(piece)
    }

    /// The one piece of a request over `span` when the span lies within one chunk and
    /// no request in flight shares it: such a request may end before it is opened (see
    /// `Engine::submit`), as nothing of its chunk can change meanwhile.
    pub(super) fn lone_piece(&self, op: Op, span: Span, geo: &Geometry) -> Option<Piece> {
        let alone =
            span.first == span.last && self.order.overlapping(span.first, span.last).is_empty();
        alone.then(|| span.piece(op, span.first, geo))
    }

    /// Whether request `r` has handed out all it will and every piece has ended.
    pub(super) fn done(&self, r: usize) -> bool {
        let p = &self.table[r];
        p.live == 0 && (p.next > p.span.last || p.result.is_err())
    }

    /// Request `r` is in flight and no earlier request holds it back.
    pub(super) fn runnable(&self, r: usize) -> bool {
        self.table
            .get(r)
            .is_some_and(|p| p.user.is_some() && p.blockers == 0)
    }

    /// Completes request `r`: the requests waiting for it go (once nothing else holds
    /// them back); returns its caller's side and result.
    pub(super) fn close(&mut self, r: usize) -> (Box<dyn UserIo>, Result<()>) {
        let p = &mut self.table[r];
        let user = p.user.take().expect("a request completes once");
        let result = std::mem::replace(&mut p.result, Ok(()));
        let successors = std::mem::take(&mut p.successors);
        let (span, op, counted) = (p.span, p.op, p.counted);
        self.order.leave(span.first, span.last, r);
        for s in successors {
            let next = &mut self.table[s];
            next.blockers -= 1;
            if next.blockers == 0 {
                self.to_refill.push_back(s);
            }
        }
        self.free.push(r);
        self.outstanding -= 1;
        if counted {
            self.counts.record(op, result.is_err());
        }
        (user, result)
    }
}

/// The span of a request, `None` for an empty one; `EINVAL` for a range outside the
/// volume, or buffers that do not hold exactly its blocks (an unmap has none).
pub(super) fn locate(
    geo: &Geometry,
    op: Op,
    offset: u64,
    length: u64,
    user_len: usize,
) -> Result<Option<Span>> {
    if length == 0 {
        return Ok(None);
    }
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
    let want = match op {
        Op::Unmap => Some(0),
        Op::Read | Op::Write => length.checked_mul(lbs),
    };
    if want != Some(user_len as u64) {
        return invalid(match op {
            Op::Unmap => {
                format!("an unmap carries no buffers, and these hold {user_len} bytes")
            }
            _ => format!("buffers of {user_len} bytes for {length} blocks of {lbs} bytes"),
        });
    }
    Ok(Some(Span {
        offset,
        length,
        first: offset / per_chunk,
        last: (end - 1) / per_chunk,
    }))
}

#[cfg(test)]
mod tests {
    use super::{Op, Order, Parents, Piece, locate};
    use crate::format::{Geometry, Params};
    use crate::vol::Segments;

    /// 512-byte blocks, 16 KiB chunks (32 blocks), 64 chunks.
    fn geometry() -> Geometry {
        let params = Params {
            backing_io_unit_size: 4096,
            logical_block_size: 512,
            chunk_size: 16384,
            vol_size: 64 * 16384,
            ..Default::default()
        };
        Geometry::new(params, 512).unwrap()
    }

    #[test]
    fn a_lone_piece_is_a_request_within_one_chunk_that_none_in_flight_shares() {
        let geo = geometry();
        let mut parents = Parents::default();
        let lone = |parents: &Parents, offset, length| {
            let span = locate(&geo, Op::Read, offset, length, length as usize * 512).unwrap();
            match parents.lone_piece(Op::Read, span.unwrap(), &geo) {
                Some(Piece::Chunk {
                    chunk,
                    start,
                    len,
                    at,
                    ..
                }) => Some((chunk, start, len, at)),
                _ => None,
            }
        };
        // Blocks 36..44: chunk 1, bytes 2048..6144 of it.
        assert_eq!(lone(&parents, 36, 8), Some((1, 2048, 4096, 0)));
        assert_eq!(lone(&parents, 32, 32), Some((1, 0, 16384, 0)));
        // Over chunks 1 and 2.
        assert_eq!(lone(&parents, 60, 8), None);
        // An unmap in flight over chunk 2: chunk 1 stays alone, 2 does not, until the
        // unmap completes.
        let unmap = locate(&geo, Op::Unmap, 64, 32, 0).unwrap().unwrap();
        parents.open(
            Op::Unmap,
            unmap,
            Segments::boxed(Vec::new(), |_, _| {}),
            true,
        );
        let r = parents.to_refill.pop_front().unwrap();
        assert_eq!(lone(&parents, 36, 8), Some((1, 2048, 4096, 0)));
        assert_eq!(lone(&parents, 70, 2), None);
        let _ = parents.close(r);
        assert_eq!(lone(&parents, 70, 2), Some((2, 3072, 1024, 0)));
    }

    #[test]
    fn a_request_waits_for_the_last_one_over_each_of_its_chunks() {
        let mut o = Order::default();
        assert!(o.enter(0, 9, 1).is_empty());
        assert_eq!(o.enter(4, 4, 2).as_slice(), &[1]);
        assert!(o.enter(20, 20, 3).is_empty());
        // Over 1 (twice, around 2), 2 and 3: each once.
        assert_eq!(o.enter(0, 30, 4).as_slice(), &[1, 2, 3]);
        assert_eq!(o.runs.len(), 1);
        assert_eq!(o.enter(30, 31, 5).as_slice(), &[4]);
        o.leave(0, 30, 4);
        assert_eq!(o.runs, [(30, 31, 5)]);
        o.leave(30, 31, 5);
        assert!(o.runs.is_empty());
    }

    #[test]
    fn leaving_keeps_the_runs_of_later_requests() {
        let mut o = Order::default();
        o.enter(0, 9, 1);
        o.enter(3, 5, 2);
        o.leave(0, 9, 1);
        assert_eq!(o.runs, [(3, 5, 2)]);
    }

    /// Random requests entering and leaving, against a model that keeps the last
    /// request over each chunk.
    #[test]
    fn the_runs_match_a_chunk_by_chunk_model() {
        const CHUNKS: usize = 48;
        let mut rng = crate::testkit::Rng::new(7);
        let mut o = Order::default();
        let mut model: [Option<usize>; CHUNKS] = [None; CHUNKS];
        let mut live: Vec<(u64, u64, usize)> = Vec::new();
        for r in 0..4000 {
            if live.len() > 24 || (!live.is_empty() && rng.below(3) == 0) {
                let (first, last, q) = live.swap_remove(rng.below(live.len() as u64) as usize);
                o.leave(first, last, q);
                for c in &mut model[first as usize..=last as usize] {
                    if *c == Some(q) {
                        *c = None;
                    }
                }
            } else {
                let first = rng.below(CHUNKS as u64);
                let last = (first + rng.below(6)).min(CHUNKS as u64 - 1);
                let mut expected: Vec<usize> = Vec::new();
                for c in &mut model[first as usize..=last as usize] {
                    if let Some(q) = *c {
                        if !expected.contains(&q) {
                            expected.push(q);
                        }
                    }
                    *c = Some(r);
                }
                assert_eq!(o.enter(first, last, r).as_slice(), expected.as_slice());
                live.push((first, last, r));
            }
            let mut seen: [Option<usize>; CHUNKS] = [None; CHUNKS];
            let mut next = 0;
            for &(start, end, q) in &o.runs {
                assert!(start >= next && start <= end, "{:?}", o.runs);
                next = end + 1;
                for c in &mut seen[start as usize..=end as usize] {
                    *c = Some(q);
                }
            }
            assert_eq!(seen, model, "after request {r}");
        }
    }
}
