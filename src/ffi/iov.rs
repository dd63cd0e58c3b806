//! The caller's iovecs: checked and copied once, at submission; then the volume copies
//! to and from the buffers they describe, or (a whole chunk in one iovec) has the codec
//! work on them directly. And the C completion of a read or write.

use std::ffi::{c_int, c_void};
use std::ops::{Deref, DerefMut};
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
        // SAFETY: pointer arithmetic within iovec `i`, which holds `seg`.
        let start = unsafe { base.add(seg.start) };
        Some(IoBuf::lent(Box::new(LentChunk { start, len })))
    }

    fn complete(self: Box<Self>, result: Result<()>) {
        // SAFETY: the caller's completion, with the argument it gave.
        unsafe { (self.cb_fn)(self.cb_arg, status(result)) }
    }
}

/// Bytes of a C caller's iovec, lent to the device for one backing operation (see
/// [`IoBuf`]). Dropped without touching them.
struct LentChunk {
    start: NonNull<u8>,
    len: usize,
}

impl Deref for LentChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes of one iovec (checked at submission), valid until the
        // request completes, which the volume lets happen only once the operation
        // holding this came back; the other pieces of the request use other bytes.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl DerefMut for LentChunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; the caller lent these bytes to the request, and only
        // this handle reaches them until it comes back (a read's are written here).
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}
