//! The caller's side of a read, write or unmap: its buffers and its completion, in one
//! object the volume holds until the request completes. A request that crosses chunks
//! is served piece by piece, each piece copying to or from its own part of the buffers
//! (`offset` below).

use crate::backing::IoBuf;
use crate::error::Result;
use smallvec::SmallVec;
use std::ops::Range;

/// A caller's scatter list and completion. The volume copies between it and its chunk
/// buffers (`gather` for writes, `scatter` for reads), or has a codec work straight on
/// a whole chunk of it (`contiguous`), and calls `complete` once.
pub trait UserIo {
    /// Total bytes of the caller's buffers.
    fn len(&self) -> usize;
    /// Copies the caller's bytes from `offset` on into `dst`.
    fn gather(&self, offset: usize, dst: &mut [u8]);
    /// Copies `src` into the caller's buffers from `offset` on.
    fn scatter(&mut self, offset: usize, src: &[u8]);
    /// Reports the result; the volume holds nothing of the request any more.
    fn complete(self: Box<Self>, result: Result<()>);

    /// The caller's bytes `offset..offset + len` as one slice, when they lie in one
    /// segment: the volume then compresses straight from them. `None` otherwise.
    fn contiguous(&self, _offset: usize, _len: usize) -> Option<&[u8]> {
        None
    }

    /// As [`UserIo::contiguous`], writable: the volume decompresses straight into them.
    fn contiguous_mut(&mut self, _offset: usize, _len: usize) -> Option<&mut [u8]> {
        None
    }

    /// The caller's bytes `offset..offset + len`, when they lie in one segment, lent to
    /// the backing device for one operation: a chunk stored raw is then read into them
    /// or written from them without a copy. Only the C ABI's requests lend (their memory
    /// is the caller's until the request completes, and the volume completes none
    /// while such an operation is out); the default, and Rust callers, `None`.
    fn lend(&mut self, _offset: usize, _len: usize) -> Option<IoBuf> {
        None
    }

    /// True when the buffers hold no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `len` bytes of the caller's buffers from `offset` on with zeros (blocks of
    /// a chunk that holds no data).
    fn zero(&mut self, offset: usize, len: usize) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            self.scatter(offset + done, &ZEROS[..n]);
            done += n;
        }
    }
}

/// For a copy of `len` bytes starting `offset` bytes into a list of segments of
/// `seg_lens`: each piece as (segment index, range in the segment, range in the copy).
pub fn segment_pieces(
    seg_lens: impl Iterator<Item = usize>,
    offset: usize,
    len: usize,
) -> impl Iterator<Item = (usize, Range<usize>, Range<usize>)> {
    let end = offset + len;
    let mut seg_start = 0;
    seg_lens.enumerate().filter_map(move |(i, seg_len)| {
        let (s, e) = (seg_start, seg_start + seg_len);
        seg_start = e;
        let (from, to) = (s.max(offset), e.min(end));
        (from < to).then(|| (i, from - s..to - s, from - offset..to - offset))
    })
}

/// The segment and the range in it that hold all of bytes `offset..offset + len`
/// (`len` > 0) of a list of segments of `seg_lens`, if one does.
pub fn within_one(
    seg_lens: impl Iterator<Item = usize>,
    offset: usize,
    len: usize,
) -> Option<(usize, Range<usize>)> {
    let (i, seg, _) = segment_pieces(seg_lens, offset, len).next()?;
    (seg.len() == len).then_some((i, seg))
}

/// Owned buffers for Rust callers: the segments go back with the result.
pub struct Segments<F: FnOnce(Result<()>, Vec<Vec<u8>>)> {
    segs: Vec<Vec<u8>>,
    cb: F,
}

impl<F: FnOnce(Result<()>, Vec<Vec<u8>>) + 'static> Segments<F> {
    pub fn boxed(segs: Vec<Vec<u8>>, cb: F) -> Box<dyn UserIo> {
        Box::new(Segments { segs, cb })
    }
}

impl<F: FnOnce(Result<()>, Vec<Vec<u8>>)> UserIo for Segments<F> {
    fn len(&self) -> usize {
        self.segs.iter().map(Vec::len).sum()
    }

    fn gather(&self, offset: usize, dst: &mut [u8]) {
        for (i, seg, buf) in segment_pieces(self.segs.iter().map(Vec::len), offset, dst.len()) {
            dst[buf].copy_from_slice(&self.segs[i][seg]);
        }
    }

    fn scatter(&mut self, offset: usize, src: &[u8]) {
        // The lengths apart from the segments they are copied into; on the stack for
        // the usual few segments, so a read allocates nothing here.
        let lens: SmallVec<[usize; 8]> = self.segs.iter().map(Vec::len).collect();
        for (i, seg, buf) in segment_pieces(lens.into_iter(), offset, src.len()) {
            self.segs[i][seg].copy_from_slice(&src[buf]);
        }
    }

    fn contiguous(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let (i, seg) = within_one(self.segs.iter().map(Vec::len), offset, len)?;
        Some(&self.segs[i][seg])
    }

    fn contiguous_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let (i, seg) = within_one(self.segs.iter().map(Vec::len), offset, len)?;
        Some(&mut self.segs[i][seg])
    }

    fn complete(self: Box<Self>, result: Result<()>) {
        (self.cb)(result, self.segs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_exactly_the_range() {
        let p: Vec<_> = segment_pieces([3, 0, 5, 4].into_iter(), 2, 8).collect();
        assert_eq!(p, vec![(0, 2..3, 0..1), (2, 0..5, 1..6), (3, 0..2, 6..8)]);
        assert_eq!(segment_pieces([4].into_iter(), 0, 0).count(), 0);
    }

    /// A Rust read served from the chunk cache makes one allocation, its request's
    /// box: copying out into a list of segments makes none.
    #[test]
    fn a_cached_read_allocates_only_its_request() {
        use crate::ffi::counting::allocations;
        use crate::testkit::{CodecKind, Geo, Mode, Rig, filler, slot, text};

        for mode in [Mode::Immediate, Mode::Deferred] {
            let geo = Geo::small(4);
            // Run-length coding, so that miri runs this too (it cannot run zstd's C code).
            let rig = Rig::new(geo, mode, CodecKind::Rle);
            let vol = rig.init();
            let chunk = text(1, geo.chunk as usize);
            let written = slot();
            let done = filler(&written);
            vol.writev(
                0,
                geo.blocks_per_chunk(),
                vec![chunk.clone()],
                move |r, _| done(r),
            );
            rig.wait(&written).unwrap();
            // Two blocks at a time, into three segments (one empty), over the chunk.
            let lbs = geo.lbs as usize;
            let mut segs = vec![vec![0; 300], vec![], vec![0; 2 * lbs - 300]];
            let reads = geo.blocks_per_chunk() / 2;
            let back = slot();
            let read_all = |segs: &mut Vec<Vec<u8>>| {
                for r in 0..reads {
                    let done = filler(&back);
                    let lent = std::mem::take(segs);
                    vol.readv(2 * r, 2, lent, move |res, segs| done((res, segs)));
                    let (res, returned) = rig.wait(&back);
                    res.unwrap();
                    *segs = returned;
                    let at = 2 * r as usize * lbs;
                    assert!(segs[1].is_empty(), "{mode:?}, read {r}");
                    assert_eq!(segs[0], chunk[at..at + 300], "{mode:?}, read {r}");
                    assert_eq!(segs[2], chunk[at + 300..at + 2 * lbs], "{mode:?}, read {r}");
                }
            };
            // A first round reads the chunk into the cache, if the write left it out.
            read_all(&mut segs);
            let hits = vol.stats().cache_hits;
            let before = allocations();
            read_all(&mut segs);
            let made = allocations() - before;
            let hits = vol.stats().cache_hits - hits;
            assert_eq!(hits, reads, "{mode:?}: all from the cache");
            assert_eq!(made, reads, "{mode:?}: allocations in {reads} cached reads");
            rig.unload(&vol).unwrap();
        }
    }

    #[test]
    fn within_one_needs_the_whole_range_in_a_segment() {
        assert_eq!(within_one([3, 0, 5, 4].into_iter(), 3, 5), Some((2, 0..5)));
        assert_eq!(within_one([3, 0, 5, 4].into_iter(), 4, 3), Some((2, 1..4)));
        assert_eq!(within_one([3, 0, 5, 4].into_iter(), 2, 2), None);
        assert_eq!(within_one([3, 0, 5, 4].into_iter(), 7, 3), None);
        assert_eq!(within_one([3].into_iter(), 2, 2), None);
    }
}
