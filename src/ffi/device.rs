//! The caller's `struct spdk_reduce_backing_dev`, seen by the core as a
//! [`BackingDevice`] and a [`Codec`]. Each operation gets a heap context that owns its
//! buffers and the `cb_args` handed to C; the trampoline C calls frees it and posts the
//! completion to the volume.

use std::ffi::{c_int, c_void};

use libc::iovec;
use smallvec::SmallVec;

use super::boundary::{codec_result, guard, io_result, refuse};
use super::types::{
    FnOf, reduce_backing_codec_fn, reduce_backing_io_fn, spdk_reduce_backing_dev,
    spdk_reduce_vol_cb_args,
};
use crate::backing::{BackingDevice, BackingIo, IoDone};
use crate::codec::{Codec, CodecDone, CodecIo};
use crate::error::Result;
use crate::log::{Level, emit};

type BlockFn = FnOf<reduce_backing_io_fn>;
type CodecFn = FnOf<reduce_backing_codec_fn>;

/// The C device: its pointer (passed back to every call, so the caller's
/// `container_of` works) and the five functions, checked non-NULL once.
#[derive(Clone, Copy)]
pub(crate) struct CDevice {
    dev: *mut spdk_reduce_backing_dev,
    readv: BlockFn,
    writev: BlockFn,
    compress: CodecFn,
    decompress: CodecFn,
    blocklen: u32,
    blockcnt: u64,
}

impl CDevice {
    /// The device `what` was given, refused (`EINVAL`, logged) when it is NULL or any
    /// of its functions is (unmap included, as the original required).
    ///
    /// # Safety
    /// `dev` is NULL or points to a backing device that outlives the volume.
    pub(crate) unsafe fn new(what: &str, dev: *mut spdk_reduce_backing_dev) -> Result<CDevice> {
        // SAFETY: NULL or valid, per the caller.
        let d = unsafe { dev.as_ref() }.ok_or_else(|| refuse(what, "backing_dev is NULL"))?;
        let missing = |member| refuse(what, &format!("backing_dev->{member} is NULL"));
        if d.unmap.is_none() {
            return Err(missing("unmap"));
        }
        Ok(CDevice {
            dev,
            readv: d.readv.ok_or_else(|| missing("readv"))?,
            writev: d.writev.ok_or_else(|| missing("writev"))?,
            compress: d.compress.ok_or_else(|| missing("compress"))?,
            decompress: d.decompress.ok_or_else(|| missing("decompress"))?,
            blocklen: d.blocklen,
            blockcnt: d.blockcnt,
        })
    }

    fn block_io(&self, f: BlockFn, mut io: BackingIo, done: IoDone) {
        // The buffer's heap block does not move when `io` moves into the context, so
        // the iovecs can be made first.
        let base = io.buf.as_mut_ptr();
        let iovs: SmallVec<[iovec; 4]> = io
            .extents
            .iter()
            // SAFETY (pointer arithmetic only): the volume's extents lie within `buf`.
            .map(|e| iovec {
                iov_base: base.wrapping_add(e.buf_offset).cast(),
                iov_len: e.lba_count as usize * self.blocklen as usize,
            })
            .collect();
        let runs: SmallVec<[(u64, u32); 4]> =
            io.extents.iter().map(|e| (e.lba, e.lba_count)).collect();
        let op = Box::into_raw(Box::new(BlockOp {
            args: spdk_reduce_vol_cb_args {
                cb_fn: Some(block_op_done),
                cb_arg: std::ptr::null_mut(),
            },
            // One reference per run, plus this function's own until every run is issued,
            // so a run completing inside the call cannot free the context under us.
            refs: runs.len() + 1,
            result: Ok(()),
            iovs,
            io,
            done: Some(done),
        }));
        // SAFETY: `op` is a live heap context owned by its references; it is reached only
        // through the raw pointer, and this function's reference keeps it alive until
        // `block_op_put` below.
        unsafe {
            (*op).args.cb_arg = op.cast();
            // Taken once, before C holds any of them.
            let first_iov = (*op).iovs.as_mut_ptr();
            for (i, &(lba, lba_count)) in runs.iter().enumerate() {
                f(
                    self.dev,
                    first_iov.add(i),
                    1,
                    lba,
                    lba_count,
                    &raw mut (*op).args,
                );
            }
            block_op_put(op, 0);
        }
    }

    fn codec_io(&self, f: CodecFn, io: CodecIo, done: CodecDone) {
        let op = Box::into_raw(Box::new(CodecOp {
            args: spdk_reduce_vol_cb_args {
                cb_fn: Some(codec_op_done),
                cb_arg: std::ptr::null_mut(),
            },
            src: iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: io.src_len,
            },
            dst: iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: io.dst.len(),
            },
            io,
            done,
        }));
        // SAFETY: `op` is live until the trampoline frees it, which may happen inside
        // `f`: nothing touches `op` after the call.
        unsafe {
            (*op).args.cb_arg = op.cast();
            (*op).src.iov_base = (*op).io.src.as_mut_ptr().cast();
            (*op).dst.iov_base = (*op).io.dst.as_mut_ptr().cast();
            f(
                self.dev,
                &raw mut (*op).src,
                1,
                &raw mut (*op).dst,
                1,
                &raw mut (*op).args,
            );
        }
    }
}

struct BlockOp {
    args: spdk_reduce_vol_cb_args,
    refs: usize,
    result: Result<()>,
    iovs: SmallVec<[iovec; 4]>,
    io: BackingIo,
    done: Option<IoDone>,
}

/// Drops one reference of a block operation, recording the first error; the last one
/// completes it.
///
/// # Safety
/// `op` came from `block_io` and still has the reference being dropped.
unsafe fn block_op_put(op: *mut BlockOp, status: c_int) {
    // SAFETY: per the contract, `op` is live; once `refs` is 0 nothing else holds it.
    unsafe {
        // The first failing run's error is the operation's.
        if let (Err(e), Ok(())) = (io_result(status), &(*op).result) {
            (*op).result = Err(e);
        }
        (*op).refs -= 1;
        if (*op).refs == 0 {
            let op = Box::from_raw(op);
            let BlockOp {
                io, done, result, ..
            } = *op;
            if let Some(done) = done {
                done.complete(io, result);
            }
        }
    }
}

/// A completion with a NULL `cb_arg` cannot be ours: logged and ignored.
fn foreign(what: &str, cb_arg: *mut c_void) -> bool {
    if cb_arg.is_null() {
        emit(
            Level::Warn,
            format_args!("{what} with a NULL cb_arg ignored"),
        );
    }
    cb_arg.is_null()
}

unsafe extern "C" fn block_op_done(cb_arg: *mut c_void, reduce_errno: c_int) {
    guard("backing completion", (), || {
        if foreign("backing completion", cb_arg) {
            return;
        }
        // SAFETY: C hands back the `cb_arg` we gave it with this trampoline.
        unsafe { block_op_put(cb_arg.cast(), reduce_errno) }
    })
}

struct CodecOp {
    args: spdk_reduce_vol_cb_args,
    src: iovec,
    dst: iovec,
    io: CodecIo,
    done: CodecDone,
}

unsafe extern "C" fn codec_op_done(cb_arg: *mut c_void, reduce_errno: c_int) {
    guard("codec completion", (), || {
        if foreign("codec completion", cb_arg) {
            return;
        }
        // SAFETY: C hands back the `cb_arg` we gave it, once.
        let op = unsafe { Box::from_raw(cb_arg.cast::<CodecOp>()) };
        op.done.complete(op.io, codec_result(reduce_errno));
    })
}

impl BackingDevice for CDevice {
    fn blocklen(&self) -> u32 {
        self.blocklen
    }

    fn blockcnt(&self) -> u64 {
        self.blockcnt
    }

    fn read(&self, io: BackingIo, done: IoDone) {
        self.block_io(self.readv, io, done);
    }

    fn write(&self, io: BackingIo, done: IoDone) {
        self.block_io(self.writev, io, done);
    }
}

impl Codec for CDevice {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        self.codec_io(self.compress, io, done);
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        self.codec_io(self.decompress, io, done);
    }
}
