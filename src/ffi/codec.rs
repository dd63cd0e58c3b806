//! Built-in codecs for C callers, with exactly the signature of the backing device's
//! `compress` / `decompress` members: assign them to opt in. They complete inside the
//! call.

use std::ffi::c_int;

use libc::iovec;

use super::boundary::{callback, codec_status, guard, refuse};
use super::iov::checked;
use super::types::{spdk_reduce_backing_dev, spdk_reduce_vol_cb_args};
use crate::codec::{zstd_compress, zstd_decompress};
use crate::error::Result;

type SliceCodec = fn(&[u8], &mut [u8]) -> Result<usize>;

/// Runs `codec` from `src_iov` into `dst_iov` and reports through `args`: the bytes
/// written, or a negative errno.
///
/// # Safety
/// The iovecs describe valid buffers; `args` is NULL or valid until its callback.
unsafe fn run(
    what: &str,
    codec: SliceCodec,
    src_iov: *const iovec,
    src_iovcnt: c_int,
    dst_iov: *const iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // SAFETY: NULL or valid, per the contract. Copy out what the callback needs:
    // `args` may be freed by the callback itself.
    let (cb_fn, cb_arg) = match unsafe { args.as_ref() } {
        Some(&spdk_reduce_vol_cb_args { cb_fn, cb_arg }) => {
            (callback(what, "args->cb_fn", cb_fn), cb_arg)
        }
        None => (callback(what, "args", None), std::ptr::null_mut()),
    };
    let Some(cb_fn) = cb_fn else {
        return;
    };
    // SAFETY: forwarded from the caller.
    let result = unsafe { apply(what, codec, src_iov, src_iovcnt, dst_iov, dst_iovcnt) };
    // SAFETY: the caller's completion with its own argument.
    unsafe { cb_fn(cb_arg, codec_status(result)) };
}

/// Runs `codec` from `src_iov` into `dst_iov`: straight on the buffers when there is
/// one each way (as the volume passes them), else through gathered copies.
///
/// # Safety
/// The iovecs describe valid buffers.
pub(super) unsafe fn apply(
    what: &str,
    codec: impl FnOnce(&[u8], &mut [u8]) -> Result<usize>,
    src_iov: *const iovec,
    src_iovcnt: c_int,
    dst_iov: *const iovec,
    dst_iovcnt: c_int,
) -> Result<usize> {
    let bad = |side: &str, why: &str| refuse(what, &format!("{side}: {why}"));
    // SAFETY: forwarded from the caller.
    let (src, src_len) = unsafe { checked(src_iov, src_iovcnt) }.map_err(|why| bad("src", why))?;
    // SAFETY: as above.
    let (dst, dst_len) = unsafe { checked(dst_iov, dst_iovcnt) }.map_err(|why| bad("dst", why))?;
    let bytes = |v: &iovec| {
        // SAFETY: checked: a non-empty iovec has a non-NULL base, valid per contract.
        (v.iov_len > 0)
            .then(|| unsafe { std::slice::from_raw_parts_mut(v.iov_base.cast::<u8>(), v.iov_len) })
    };
    // The volume passes one iovec each way: no copy. Other callers may scatter.
    if let ([s], [d]) = (src, dst) {
        return codec(
            bytes(s).as_deref().unwrap_or(&[]),
            bytes(d).unwrap_or(&mut []),
        );
    }
    let mut input = Vec::with_capacity(src_len);
    src.iter()
        .filter_map(bytes)
        .for_each(|s| input.extend_from_slice(s));
    let mut output = vec![0u8; dst_len];
    let n = codec(&input, &mut output)?;
    let mut rest = &output[..n];
    for d in dst.iter().filter_map(bytes) {
        let take = rest.len().min(d.len());
        d[..take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
    }
    Ok(n)
}

/// zstd (level 1, one frame per call) with the type of the `compress` member
/// (`reduce_backing_codec_fn`): assign it to use the built-in compressor. Completes
/// inside the call: with the compressed size, -ENOSPC when the frame does not fit in
/// `dst_iov` (the volume then stores the chunk uncompressed), or -EINVAL for a bad
/// iovec array. The device is not used. With `args` or `args->cb_fn` NULL it does
/// nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_zstd_compress(
    _dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // Safety (Rust): as for any `compress` member, the iovecs describe valid buffers and
    // `args` is NULL or valid until its callback.
    guard("reduce_zstd_compress", (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            run(
                "reduce_zstd_compress",
                zstd_compress,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}

/// zstd with the type of the `decompress` member (`reduce_backing_codec_fn`): exactly
/// one frame in `src_iov`. Completes inside the call: with the decompressed size, -EIO
/// for anything malformed or too large for `dst_iov`, or -EINVAL for a bad iovec
/// array. The device is not used. With `args` or `args->cb_fn` NULL it does
/// nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_zstd_decompress(
    _dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // Safety (Rust): as for any `decompress` member.
    guard("reduce_zstd_decompress", (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            run(
                "reduce_zstd_decompress",
                zstd_decompress,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}
