//! The caller's iovecs: checked and copied once, at submission; then the volume copies
//! to and from the buffers they describe, or (a whole chunk in one iovec) has the codec
//! work on them directly. And the C completion of a read or write.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use libc::iovec;
use smallvec::SmallVec;

use super::boundary::status;
use super::types::{FnOf, spdk_reduce_vol_op_complete};
use crate::backing::IoBuf;
use crate::error::Result;
use crate::vol::{UserIo, segment_pieces, within_one};

/// Checks an iovec array: refused for a negative count, a NULL array with entries, a
/// NULL base with a length, or lengths that overflow, with the reason in C terms.
/// Returns the array and its total.
///
/// # Safety
/// `iov` must point to `iovcnt` readable iovecs when it is not NULL.
pub(crate) unsafe fn checked<'a>(
    iov: *const iovec,
    iovcnt: c_int,
) -> std::result::Result<(&'a [iovec], usize), &'static str> {
    let count = usize::try_from(iovcnt).map_err(|_| "the iovec count is negative")?;
    if count == 0 {
        return Ok((&[], 0));
    }
    if iov.is_null() {
        return Err("the iovec array is NULL");
    }
    // SAFETY: non-NULL, and the caller promises `iovcnt` entries.
    let list = unsafe { std::slice::from_raw_parts(iov, count) };
    let mut total = 0usize;
    for v in list {
        if v.iov_base.is_null() && v.iov_len != 0 {
            return Err("an iovec has a NULL iov_base and a nonzero iov_len");
        }
        total = total
            .checked_add(v.iov_len)
            .ok_or("the iovec lengths overflow")?;
    }
    Ok((list, total))
}

/// A C read or write: a copy of its iovec array (the caller's may be gone once the call
/// returns, for instance an array on the stack of the callback that submitted it, while
/// the request waits), and its completion callback.
pub(crate) struct CUserIo {
    /// Inline for a few iovecs: no allocation per request.
    iovs: SmallVec<[iovec; 4]>,
    len: usize,
    cb_fn: FnOf<spdk_reduce_vol_op_complete>,
    cb_arg: *mut c_void,
}

impl CUserIo {
    /// The request, or `Err` carrying one with no buffers (to fail through the volume)
    /// and the reason, when the iovecs are bad.
    ///
    /// # Safety
    /// As [`checked`]; the buffers must stay valid until the callback runs.
    pub(crate) unsafe fn new(
        iov: *const iovec,
        iovcnt: c_int,
        cb_fn: FnOf<spdk_reduce_vol_op_complete>,
        cb_arg: *mut c_void,
    ) -> std::result::Result<CUserIo, (CUserIo, &'static str)> {
        let empty = CUserIo {
            iovs: SmallVec::new(),
            len: 0,
            cb_fn,
            cb_arg,
        };
        // SAFETY: forwarded from the caller.
        match unsafe { checked(iov, iovcnt) } {
            Ok((list, len)) => Ok(CUserIo {
                iovs: SmallVec::from_slice(list),
                len,
                ..empty
            }),
            Err(why) => Err((empty, why)),
        }
    }

    /// The request in a box, a spare one when this thread has one.
    pub(crate) fn boxed(self) -> Box<CUserIo> {
        match SPARE.try_with(|spare| spare.borrow_mut().pop()) {
            Ok(Some(mut spare)) => {
                *spare = self;
                spare
            }
            _ => Box::new(self),
        }
    }
}

impl UserIo for CUserIo {
    fn len(&self) -> usize {
        self.len
    }

    fn gather(&self, offset: usize, dst: &mut [u8]) {
        let list = &self.iovs;
        for (i, seg, buf) in segment_pieces(list.iter().map(|v| v.iov_len), offset, dst.len()) {
            // SAFETY: `seg` lies within iovec `i` (checked at submission), whose base is
            // non-NULL (it has bytes) and valid for reads until completion; `dst` is our
            // own buffer, disjoint.
            let src = unsafe {
                std::slice::from_raw_parts(list[i].iov_base.cast::<u8>().add(seg.start), seg.len())
            };
            dst[buf].copy_from_slice(src);
        }
    }

    fn scatter(&mut self, offset: usize, src: &[u8]) {
        let list = &self.iovs;
        for (i, seg, buf) in segment_pieces(list.iter().map(|v| v.iov_len), offset, src.len()) {
            // SAFETY: as in `gather`, for writes; `src` is our own buffer, disjoint.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src[buf].as_ptr(),
                    list[i].iov_base.cast::<u8>().add(seg.start),
                    seg.len(),
                )
            };
        }
    }

    fn contiguous(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let list = &self.iovs;
        let (i, seg) = within_one(list.iter().map(|v| v.iov_len), offset, len)?;
        // SAFETY: as in `gather`: `seg` lies within iovec `i`, non-NULL and valid for
        // reads until completion; the slice lives no longer than this borrow of the
        // request, which the volume holds until it completes it.
        Some(unsafe {
            std::slice::from_raw_parts(list[i].iov_base.cast::<u8>().add(seg.start), seg.len())
        })
    }

    fn contiguous_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let list = &self.iovs;
        let (i, seg) = within_one(list.iter().map(|v| v.iov_len), offset, len)?;
        // SAFETY: as in `contiguous`, for writes: the caller lent these bytes to the
        // read until its completion, and nothing of ours points into them.
        Some(unsafe {
            std::slice::from_raw_parts_mut(list[i].iov_base.cast::<u8>().add(seg.start), seg.len())
        })
    }

    fn lend(&mut self, offset: usize, len: usize) -> Option<IoBuf> {
        let list = &self.iovs;
        let (i, seg) = within_one(list.iter().map(|v| v.iov_len), offset, len)?;
        // Non-NULL: iovec `i` has bytes (`len` > 0), checked at submission.
        let base = NonNull::new(list[i].iov_base.cast::<u8>())?;
        // SAFETY: `seg` lies within iovec `i` (checked at submission), whose bytes the
        // caller lent to the request until its completion. The volume completes no
        // request while an operation holding lent bytes is out, and lets go of them when
        // it comes back: the `'static` slice is used only while they are valid. Other
        // pieces of the request use other bytes and nothing of ours points into these,
        // so whichever thread holds it (a codec pool's worker) has them to itself, as
        // a C device or codec has the memory behind an iovec.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(base.as_ptr().add(seg.start), seg.len()) };
        Some(IoBuf::lent(bytes))
    }

    fn complete(mut self: Box<Self>, result: Result<()>) {
        let (cb_fn, cb_arg) = (self.cb_fn, self.cb_arg);
        // Spare before the callback, which may submit the next request.
        self.iovs.clear();
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_MAX {
                spare.push(self);
            }
        });
        // SAFETY: the caller's completion, with the argument it gave.
        unsafe { cb_fn(cb_arg, status(result)) }
    }
}

thread_local! {
    /// The boxes of completed C requests, for the next ones on this thread (a volume's):
    /// once as many have been made as are in flight, a request allocates nothing.
    // The boxes are what is kept: each goes back to the volume as a `Box<dyn UserIo>`.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<CUserIo>>> = const { RefCell::new(Vec::new()) };
}

/// Spare boxes kept per thread, about 110 bytes each.
const SPARE_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{CodecKind, Geo, Mode, Rig, RleCodec, Rng, TestCodec};
    use crate::vol::{Op, Volume};
    use smallvec::smallvec;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Stores the status a request completed with in the `c_int` at `ctx`.
    unsafe extern "C" fn store_status(ctx: *mut c_void, status: c_int) {
        // SAFETY: `ctx` is the test's own status cell, alive until it has been read.
        unsafe { *ctx.cast::<c_int>() = status };
    }

    /// A request over `segs` (the caller's buffers), completing into `status`.
    fn request(segs: &mut [Vec<u8>], status: &mut c_int) -> Box<CUserIo> {
        let iovs: Vec<iovec> = segs
            .iter_mut()
            .map(|s| iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        let ctx = (status as *mut c_int).cast();
        // SAFETY: the iovecs describe `segs`, which the tests keep until completion.
        let io = unsafe { CUserIo::new(iovs.as_ptr(), iovs.len() as c_int, store_status, ctx) };
        Box::new(io.ok().expect("valid iovecs"))
    }

    #[test]
    fn lend_gives_the_callers_bytes_only_within_one_iovec() {
        let mut segs = vec![vec![0u8; 100], vec![0u8; 50]];
        let mut status = 1;
        // The addresses before lending: while lent, the bytes are the lent slice's alone.
        let (first, second) = (segs[0][10..].as_ptr(), segs[1].as_ptr());
        let mut io = request(&mut segs, &mut status);
        let mut lent = io.lend(10, 80).expect("within the first iovec");
        assert_eq!((lent.as_ptr(), lent.len()), (first, 80));
        lent.fill(7);
        drop(lent);
        assert!(io.lend(90, 20).is_none(), "across two iovecs");
        assert!(io.lend(140, 20).is_none(), "past the end");
        let lent = io.lend(100, 50).expect("the second iovec");
        assert_eq!(lent.as_ptr(), second);
        drop(lent);
        assert_eq!(segs[0][9..91], [&[0][..], &[7; 80], &[0]].concat()[..]);
    }

    /// Where the device's reads and writes had their bytes, in order.
    type Seen = Rc<RefCell<Vec<(bool, *const u8)>>>;

    fn rig(mode: Mode) -> (Rig, Volume, Seen) {
        // Pure Rust, and inside the call: a raw write goes straight, under miri too.
        let rig = Rig::new(Geo::small(8), mode, CodecKind::Rle);
        let vol = rig.init();
        vol.set_cache_chunks(0).unwrap();
        let seen = Seen::default();
        let s = seen.clone();
        rig.backing.set_tamper(Some(Box::new(move |write, _, io| {
            s.borrow_mut().push((write, io.buf.as_ptr()))
        })));
        (rig, vol, seen)
    }

    /// Runs `op` on chunk `chunk` (4 KiB, 8 blocks) through `segs` to its end.
    fn run(rig: &Rig, vol: &Volume, op: Op, chunk: u64, segs: &mut [Vec<u8>]) -> c_int {
        let mut status = 1;
        vol.submit(op, chunk * 8, 8, request(segs, &mut status));
        rig.drain();
        status
    }

    /// Writes `data` (a whole chunk) to chunk 2 in one iovec and to chunk 3 in two,
    /// then reads both back in one iovec and in halves: what `seen` records (is_write,
    /// address) must be the caller's buffer in one iovec and only then.
    fn straight_in_one_iovec(rig: &Rig, vol: &Volume, seen: &Seen, data: &[u8], mode: Mode) {
        let mut one = vec![data.to_vec()];
        assert_eq!(run(rig, vol, Op::Write, 2, &mut one), 0);
        assert_eq!(seen.take(), [(true, one[0].as_ptr())], "{mode:?}");
        let mut two = vec![data[..1000].to_vec(), data[1000..].to_vec()];
        assert_eq!(run(rig, vol, Op::Write, 3, &mut two), 0);
        let wrote = seen.take();
        assert!(wrote.iter().all(|&(w, at)| w && at != two[0].as_ptr()));
        for chunk in [2, 3] {
            let mut back = vec![vec![0u8; 4096]];
            assert_eq!(run(rig, vol, Op::Read, chunk, &mut back), 0);
            assert_eq!(seen.take(), [(false, back[0].as_ptr())], "{mode:?}");
            assert_eq!(back[0], data);
            let mut halves = vec![vec![0u8; 2048], vec![0u8; 2048]];
            assert_eq!(run(rig, vol, Op::Read, chunk, &mut halves), 0);
            assert!(seen.take().iter().all(|&(_, at)| at != halves[0].as_ptr()));
            assert_eq!(halves.concat(), data);
        }
    }

    /// A chunk of random bytes (stored raw) in one iovec: the device writes it from the
    /// caller's buffer and reads it back into the caller's buffer; in two iovecs,
    /// through ours. The bytes are right either way.
    #[test]
    fn a_raw_chunk_moves_between_the_device_and_one_iovec() {
        for mode in [Mode::Immediate, Mode::Deferred] {
            let (rig, vol, seen) = rig(mode);
            straight_in_one_iovec(&rig, &vol, &seen, &Rng::new(3).bytes(4096), mode);
            assert_eq!(vol.stats().chunks_raw, 2);
            rig.unload(&vol).unwrap();
        }
    }

    /// A codec that completes later (a C caller's own, say) gets a whole chunk in one
    /// iovec as the caller's memory: it compresses from it and decompresses into it. In
    /// two iovecs, it gets our buffers. The bytes are right either way.
    #[test]
    fn a_codec_that_completes_later_works_in_one_iovec() {
        for mode in [Mode::Immediate, Mode::Deferred] {
            // Pure Rust, so that miri runs it too.
            let codec = TestCodec::new(RleCodec, mode);
            let rig = Rig::new(Geo::small(8), mode, CodecKind::Test(codec.clone()));
            let vol = rig.init();
            vol.set_cache_chunks(0).unwrap();
            let seen = Seen::default();
            let s = seen.clone();
            codec.set_tamper(Some(Box::new(move |compress, _, io, _| {
                let at = if compress { &io.src } else { &io.dst };
                s.borrow_mut().push((compress, at.as_ptr()))
            })));
            let data: Vec<u8> = (0..4096).map(|i| (i / 300 + 1) as u8).collect();
            straight_in_one_iovec(&rig, &vol, &seen, &data, mode);
            let st = vol.stats();
            assert_eq!((st.chunks_raw, st.errors), (0, 0));
            rig.unload(&vol).unwrap();
        }
    }

    /// The device hands back something else than the caller's memory it was lent: the
    /// engine's invariant breaks, and the drain loop's recovery fails that read with
    /// EIO once the operation is back (not before: the device held the caller's
    /// memory). The next read of the chunk works.
    #[test]
    fn a_panic_with_the_callers_memory_lent_fails_that_read_once_it_is_back() {
        for mode in [Mode::Immediate, Mode::Deferred] {
            let (rig, vol, _) = rig(mode);
            let data = Rng::new(4).bytes(4096);
            assert_eq!(run(&rig, &vol, Op::Write, 1, &mut [data.clone()]), 0);
            let lent = Rc::new(RefCell::new(None));
            let l = lent.clone();
            rig.backing.set_tamper(Some(Box::new(move |write, _, io| {
                if !write {
                    *l.borrow_mut() = Some(io.buf.as_ptr());
                    io.buf = Vec::new().into();
                }
            })));
            let mut back = vec![vec![0u8; 4096]];
            let mut status = 1;
            vol.submit(Op::Read, 8, 8, request(&mut back, &mut status));
            if mode == Mode::Deferred {
                assert_eq!(status, 1, "completed with the device holding its memory");
                assert_eq!(rig.backing.pending(), 1);
            }
            rig.drain();
            assert_eq!(status, -libc::EIO);
            assert_eq!(lent.take(), Some(back[0].as_ptr()), "{mode:?}");
            rig.backing.set_tamper(None);
            assert_eq!(run(&rig, &vol, Op::Read, 1, &mut back), 0);
            assert_eq!(back[0], data);
            assert_eq!(vol.info().outstanding, 0);
            rig.unload(&vol).unwrap();
        }
    }

    /// Requests through the C boundary allocate nothing once the volume has served as
    /// many as are in flight: whole chunks in one iovec and in two (compressible, stored
    /// raw by the probe or after zstd tried, zeros), reads of a whole chunk and of a
    /// block, partial writes (read-modify-write), unmaps of a chunk and of a block;
    /// eight at a time, with a device completing inside the call and later.
    #[test]
    // Not under miri, which cannot run zstd's C code (and would take minutes): the
    // unsafe code this runs, the tests above run there.
    #[cfg_attr(miri, ignore)]
    fn requests_allocate_nothing_once_warm() {
        const CHUNKS: usize = 8;
        const CHUNK: usize = 4096;
        const BLOCK: usize = 512;
        for mode in [Mode::Immediate, Mode::Deferred] {
            let rig = Rig::new(Geo::small(CHUNKS as u64), mode, CodecKind::Zstd);
            let vol = rig.init();
            let mut rng = Rng::new(5);
            // Per chunk, what writes take: text; random bytes (the probe stores them raw);
            // zeros; random bytes, below 150 where the probe samples (the first half of
            // each eighth), which zstd is tried on and cannot fit in the chunk's room.
            let mut data: Vec<[Vec<u8>; 4]> = (0..CHUNKS as u64)
                .map(|c| {
                    let low = (rng.bytes(CHUNK).into_iter().enumerate())
                        .map(|(i, b)| if i % 512 < 256 { b % 150 } else { b })
                        .collect();
                    [
                        crate::testkit::text(c, CHUNK),
                        rng.bytes(CHUNK),
                        vec![0; CHUNK],
                        low,
                    ]
                })
                .collect();
            let mut reads = vec![vec![0u8; CHUNK]; CHUNKS];
            let mut status: Vec<c_int> = vec![0; CHUNKS];
            let iov = |buf: &mut [u8]| iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // Rounds of one request per chunk; a request's kind moves on each round.
            let mut round = |r: usize| {
                let cells = status.as_mut_ptr();
                for c in 0..CHUNKS {
                    let kind = (r + c) % 8;
                    let src = &mut data[c][r / 8 % 4][..];
                    let (head, tail) = src.split_at_mut(1000);
                    let (rhead, rtail) = reads[c].split_at_mut(1000);
                    // What each kind moves: (op, first block in the chunk, blocks, buffers).
                    type Kind<'a> = (Op, u64, u64, SmallVec<[&'a mut [u8]; 2]>);
                    let (op, first, blocks, bufs): Kind = match kind {
                        0 => (Op::Write, 0, 8, smallvec![src]),
                        1 => (Op::Write, 0, 8, smallvec![head, tail]),
                        2 => (Op::Read, 0, 8, smallvec![&mut reads[c][..]]),
                        3 => (Op::Read, 0, 8, smallvec![rhead, rtail]),
                        4 => (Op::Read, 3, 1, smallvec![&mut rhead[..BLOCK]]),
                        5 => (Op::Write, 5, 1, smallvec![&mut head[..BLOCK]]),
                        6 => (Op::Unmap, 0, 8, SmallVec::new()),
                        _ => (Op::Unmap, 2, 1, SmallVec::new()),
                    };
                    let iovs: SmallVec<[iovec; 2]> = bufs.into_iter().map(iov).collect();
                    // SAFETY: cell `c` of the statuses, each request's own; every
                    // pointer into them comes from `cells`, so none stales another.
                    let cell = unsafe { cells.add(c) };
                    // SAFETY: as above.
                    unsafe { cell.write(1) };
                    // SAFETY: the iovecs describe buffers of this test, which outlive
                    // the round (drained below); the cell too.
                    let io = unsafe {
                        CUserIo::new(
                            iovs.as_ptr(),
                            iovs.len() as c_int,
                            store_status,
                            cell.cast(),
                        )
                    };
                    let io = io.ok().expect("valid iovecs").boxed();
                    vol.submit(op, c as u64 * 8 + first, blocks, io);
                }
                rig.drain();
                rig.backing.forget_unmapped();
                assert_eq!(status, [0; CHUNKS], "{mode:?}, round {r}");
            };
            let (warm, counted) = (24, 48);
            for r in 0..warm {
                round(r);
            }
            let before = super::super::counting::allocations();
            for r in warm..warm + counted {
                round(r);
            }
            let made = super::super::counting::allocations() - before;
            assert_eq!(made, 0, "{mode:?}: allocations in {counted} warm rounds");
            rig.unload(&vol).unwrap();
        }
    }
}
