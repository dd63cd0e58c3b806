//! The caller's `struct spdk_reduce_backing_dev`, seen by the core as a
//! [`BackingDevice`] and a [`Codec`]. Each call into C takes an entry of the device's
//! [`Slab`], which holds the operation (buffers, completion) until C completes it and
//! gives C the `cb_args` and iovecs to use, at addresses that stay valid.

use std::rc::Rc;

use libc::iovec;
use smallvec::SmallVec;

use super::boundary::refuse;
use super::codec::Builtin;
use super::slab::{Call, NO_IOV, Slab};
use super::types::{
    FnOf, reduce_backing_codec_fn, reduce_backing_io_fn, reduce_backing_unmap_fn,
    spdk_reduce_backing_dev,
};
use crate::backing::{BackingDevice, BackingIo, IoDone};
use crate::codec::{Codec, CodecDone, CodecIo};
use crate::error::Result;

type BlockFn = FnOf<reduce_backing_io_fn>;
type UnmapFn = FnOf<reduce_backing_unmap_fn>;
type CodecFn = FnOf<reduce_backing_codec_fn>;

/// Which block function an operation calls.
#[derive(Clone, Copy)]
enum BlockCall {
    Readv(BlockFn),
    Writev(BlockFn),
    Unmap(UnmapFn),
}

/// The C device: its pointer (passed back to every call, so the caller's
/// `container_of` works), the five functions, checked non-NULL once, and the slab its
/// completions come back through (one per device, shared by the clones that serve as
/// its backing device and its codec; owned by the thread that made it).
#[derive(Clone)]
pub(crate) struct CDevice {
    dev: *mut spdk_reduce_backing_dev,
    slab: Rc<Slab>,
    readv: BlockFn,
    writev: BlockFn,
    unmap: UnmapFn,
    compress: CodecFn,
    decompress: CodecFn,
    /// The built-ins behind `compress` and `decompress`, when they are ours: the
    /// volume may run those inside the call, on the caller's buffers.
    now_compress: Option<Builtin>,
    now_decompress: Option<Builtin>,
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
        let compress = d.compress.ok_or_else(|| missing("compress"))?;
        let decompress = d.decompress.ok_or_else(|| missing("decompress"))?;
        Ok(CDevice {
            dev,
            slab: Slab::new(),
            readv: d.readv.ok_or_else(|| missing("readv"))?,
            writev: d.writev.ok_or_else(|| missing("writev"))?,
            unmap: d.unmap.ok_or_else(|| missing("unmap"))?,
            compress,
            decompress,
            now_compress: Builtin::compressor(compress),
            now_decompress: Builtin::decompressor(decompress),
            blocklen: d.blocklen,
            blockcnt: d.blockcnt,
        })
    }

    fn block_io(&self, f: BlockCall, mut io: BackingIo, done: IoDone) {
        // The buffer's heap block does not move when `io` moves into the slab, so the
        // iovecs can point into it first. An unmap has no buffer, and no iovec.
        let base = io.buf.as_mut_ptr();
        let blocklen = self.blocklen as usize;
        let runs: SmallVec<[(Call, iovec); 4]> = io
            .extents
            .iter()
            .map(|e| {
                let (lba, lba_count) = (e.lba, e.lba_count);
                let call = match f {
                    BlockCall::Readv(_) => Call::Readv { lba, lba_count },
                    BlockCall::Writev(_) => Call::Writev { lba, lba_count },
                    BlockCall::Unmap(_) => Call::Unmap { lba, lba_count },
                };
                let iov = match f {
                    BlockCall::Unmap(_) => NO_IOV,
                    _ => iovec {
                        // Pointer arithmetic only: the volume's extents lie within `buf`.
                        iov_base: base.wrapping_add(e.buf_offset).cast(),
                        iov_len: lba_count as usize * blocklen,
                    },
                };
                (call, iov)
            })
            .collect();
        let Some(&(first, _)) = runs.first() else {
            return done.complete(io, Ok(()));
        };
        let head = self.slab.block(first, io, done, runs.len());
        for (k, &(call, iov)) in runs.iter().enumerate() {
            let (lba, lba_count) = call.blocks();
            let (iov, args) = self.slab.run(head, k, call, iov);
            match f {
                // SAFETY: `dev` is the caller's device, valid while the volume is; the
                // iovec and args sit in the slab, which outlives the call, and the buffer
                // they point into stays in the slab until the operation completes.
                BlockCall::Readv(f) | BlockCall::Writev(f) => unsafe {
                    f(self.dev, iov, 1, lba, lba_count, args)
                },
                // SAFETY: as above; an unmap passes no buffer.
                BlockCall::Unmap(f) => unsafe { f(self.dev, lba, lba_count, args) },
            }
        }
        self.slab.issued(head);
    }

    fn codec_io(&self, f: CodecFn, call: Call, mut io: CodecIo, done: CodecDone) {
        // As for block_io: the buffers' heap blocks stay put when `io` moves.
        let src = iovec {
            iov_base: io.src.as_mut_ptr().cast(),
            iov_len: io.src_len,
        };
        let dst = iovec {
            iov_base: io.dst.as_mut_ptr().cast(),
            iov_len: io.dst.len(),
        };
        let (src, dst, args) = self.slab.codec(call, io, done, src, dst);
        // SAFETY: as in block_io; the codec's buffers stay in the slab until it
        // completes.
        unsafe { f(self.dev, src, 1, dst, 1, args) };
    }
}

impl BackingDevice for CDevice {
    fn blocklen(&self) -> u32 {
        self.blocklen
    }

    fn blockcnt(&self) -> u64 {
        self.blockcnt
    }

    fn read(&self, io: BackingIo, done: IoDone) {
        self.block_io(BlockCall::Readv(self.readv), io, done);
    }

    fn write(&self, io: BackingIo, done: IoDone) {
        self.block_io(BlockCall::Writev(self.writev), io, done);
    }

    fn unmap(&self, io: BackingIo, done: IoDone) {
        self.block_io(BlockCall::Unmap(self.unmap), io, done);
    }
}

impl Codec for CDevice {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        self.codec_io(self.compress, Call::Compress, io, done);
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        self.codec_io(self.decompress, Call::Decompress, io, done);
    }

    fn compress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        Some(self.now_compress?.compress(src, dst))
    }

    fn decompress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        Some(self.now_decompress?.decompress(src, dst))
    }
}
