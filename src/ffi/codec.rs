//! Built-in codecs for C callers, with exactly the signature of the backing device's
//! `compress` / `decompress` members: assign them to opt in, or let
//! `reduce_backing_dev_set_codec` assign them at a chosen level. They complete inside
//! the call.
//!
//! The zstd level travels in the function pointer: each level has its own compress
//! function (level 1 is `reduce_zstd_compress`). So a device carries its level in its
//! own `compress` member, copies of the structure keep it, and nothing is registered
//! anywhere: no global state, no entry to remove when the device goes away. Init
//! recognises these functions to record the algorithm and level in the superblock.

use std::ffi::{CStr, c_char, c_int};

use libc::iovec;

use super::boundary::{callback, codec_status, guard, refuse};
use super::iov::checked;
use super::types::{
    FnOf, reduce_backing_codec_fn, spdk_reduce_backing_dev, spdk_reduce_vol_cb_args,
};
use crate::codec::{
    CompAlgo, Compression, lz4_compress, lz4_decompress, zstd_compress_at, zstd_decompress,
};
use crate::error::{Errno, Error, Result};

type CodecFn = FnOf<reduce_backing_codec_fn>;

/// zstd levels the built-in compress functions offer, and the one `reduce_zstd_compress`
/// and level 0 of `reduce_backing_dev_set_codec` stand for.
const ZSTD_MAX_LEVEL: u32 = 22;
const ZSTD_DEFAULT_LEVEL: u32 = 1;
/// The level LZ4 records: its acceleration, 1 being LZ4's default and the only speed
/// of the built-in encoder.
const LZ4_LEVEL: u32 = 1;

/// Runs `codec` from `src_iov` into `dst_iov` and reports through `args`: the bytes
/// written, or a negative errno.
///
/// # Safety
/// The iovecs describe valid buffers; `args` is NULL or valid until its callback.
unsafe fn run(
    what: &str,
    codec: impl FnOnce(&[u8], &mut [u8]) -> Result<usize>,
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
/// nothing. `reduce_backing_dev_set_codec` offers the other levels.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_zstd_compress(
    dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // Safety (Rust): as for any `compress` member, the iovecs describe valid buffers and
    // `args` is NULL or valid until its callback.
    // SAFETY: forwarded from the caller.
    unsafe {
        zstd_compress_level::<ZSTD_DEFAULT_LEVEL>(
            dev, src_iov, src_iovcnt, dst_iov, dst_iovcnt, args,
        )
    }
}

/// zstd at `LEVEL`: what `reduce_backing_dev_set_codec` assigns for that level.
///
/// # Safety
/// As for any `compress` member.
unsafe extern "C" fn zstd_compress_level<const LEVEL: u32>(
    _dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    const WHAT: &str = "reduce_zstd_compress";
    guard(WHAT, (), || {
        let codec = |src: &[u8], dst: &mut [u8]| zstd_compress_at(LEVEL, src, dst);
        // SAFETY: forwarded from the caller.
        unsafe { run(WHAT, codec, src_iov, src_iovcnt, dst_iov, dst_iovcnt, args) }
    })
}

/// zstd with the type of the `decompress` member (`reduce_backing_codec_fn`): exactly
/// one frame in `src_iov`, of any level. Completes inside the call: with the
/// decompressed size, -EIO for anything malformed or too large for `dst_iov`, or
/// -EINVAL for a bad iovec array. The device is not used. With `args` or
/// `args->cb_fn` NULL it does nothing.
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
    const WHAT: &str = "reduce_zstd_decompress";
    guard(WHAT, (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            run(
                WHAT,
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

/// LZ4 with the type of the `compress` member (`reduce_backing_codec_fn`): one raw LZ4
/// block (the LZ4 block format, no frame), as later SPDK's LZ4 stores a chunk, at
/// LZ4's default speed (acceleration 1). Completes inside the call: with the
/// compressed size, -ENOSPC when the block does not fit in `dst_iov` (the volume then
/// stores the chunk uncompressed), or -EINVAL for a bad iovec array. The device is not
/// used. With `args` or `args->cb_fn` NULL it does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_lz4_compress(
    _dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // Safety (Rust): as for any `compress` member.
    const WHAT: &str = "reduce_lz4_compress";
    guard(WHAT, (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            run(
                WHAT,
                lz4_compress,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}

/// LZ4 with the type of the `decompress` member (`reduce_backing_codec_fn`): exactly
/// one raw LZ4 block in `src_iov` (whatever wrote it: this library, or the reference
/// LZ4 library under later SPDK). Completes inside the call: with the decompressed
/// size, -EIO for anything malformed or too large for `dst_iov`, or -EINVAL for a bad
/// iovec array. The device is not used. With `args` or `args->cb_fn` NULL it does
/// nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_lz4_decompress(
    _dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    // Safety (Rust): as for any `decompress` member.
    const WHAT: &str = "reduce_lz4_decompress";
    guard(WHAT, (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            run(
                WHAT,
                lz4_decompress,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}

macro_rules! zstd_levels {
    ($($level:literal)*) => {
        [reduce_zstd_compress $(, zstd_compress_level::<$level>)*]
    };
}

// One compress function per zstd level, level 1 first. A static, so that the functions
// assigned and the functions recognised are the same addresses.
static ZSTD_COMPRESS: [CodecFn; ZSTD_MAX_LEVEL as usize] =
    zstd_levels!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22);
static LZ4_COMPRESS: CodecFn = reduce_lz4_compress;
static ZSTD_DECOMPRESS: CodecFn = reduce_zstd_decompress;
static LZ4_DECOMPRESS: CodecFn = reduce_lz4_decompress;

/// The algorithm and level a device's `compress` member stores chunks with, when it is
/// one of the built-in functions; [`Compression::UNRECORDED`] for the caller's own.
pub(crate) fn builtin_compression(compress: reduce_backing_codec_fn) -> Compression {
    let Some(f) = compress else {
        return Compression::UNRECORDED;
    };
    if std::ptr::fn_addr_eq(f, LZ4_COMPRESS) {
        return Compression {
            algo: CompAlgo::LZ4,
            level: LZ4_LEVEL,
        };
    }
    match ZSTD_COMPRESS
        .iter()
        .position(|&g| std::ptr::fn_addr_eq(f, g))
    {
        Some(i) => Compression {
            algo: CompAlgo::ZSTD,
            level: i as u32 + 1,
        },
        None => Compression::UNRECORDED,
    }
}

/// The built-in pair for `algo` at `level` (0: the algorithm's default).
/// The Rust behind a built-in codec function, which a volume runs itself, inside the
/// call and on its own (or the caller's) buffers, rather than through the C round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Zstd { level: u32 },
    Lz4,
}

impl Builtin {
    /// The built-in behind the `compress` member `f`, if it is one.
    pub(crate) fn compressor(f: CodecFn) -> Option<Builtin> {
        match builtin_compression(Some(f)) {
            Compression {
                algo: CompAlgo::ZSTD,
                level,
            } => Some(Builtin::Zstd { level }),
            Compression {
                algo: CompAlgo::LZ4,
                ..
            } => Some(Builtin::Lz4),
            _ => None,
        }
    }

    /// The built-in behind the `decompress` member `f`, if it is one.
    pub(crate) fn decompressor(f: CodecFn) -> Option<Builtin> {
        if std::ptr::fn_addr_eq(f, ZSTD_DECOMPRESS) {
            Some(Builtin::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            })
        } else if std::ptr::fn_addr_eq(f, LZ4_DECOMPRESS) {
            Some(Builtin::Lz4)
        } else {
            None
        }
    }

    pub(crate) fn compress(self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self {
            Builtin::Zstd { level } => zstd_compress_at(level, src, dst),
            Builtin::Lz4 => lz4_compress(src, dst),
        }
    }

    pub(crate) fn decompress(self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self {
            Builtin::Zstd { .. } => zstd_decompress(src, dst),
            Builtin::Lz4 => lz4_decompress(src, dst),
        }
    }
}

fn builtin_pair(algo: &str, level: c_int) -> Result<(CodecFn, CodecFn)> {
    let bad = |why: String| Error::new(Errno::EINVAL, why);
    match algo {
        "zstd" => {
            let level = match u32::try_from(level) {
                Ok(0) => ZSTD_DEFAULT_LEVEL,
                Ok(l) if l <= ZSTD_MAX_LEVEL => l,
                _ => {
                    return Err(bad(format!(
                        "zstd level {level}: levels are 1 to {ZSTD_MAX_LEVEL}, or 0 for the default ({ZSTD_DEFAULT_LEVEL})"
                    )));
                }
            };
            Ok((ZSTD_COMPRESS[level as usize - 1], ZSTD_DECOMPRESS))
        }
        "lz4" => match level {
            0 | 1 => Ok((LZ4_COMPRESS, LZ4_DECOMPRESS)),
            _ => Err(bad(format!(
                "lz4 level {level}: the built-in LZ4 has one speed, acceleration 1 (level 0 or 1)"
            ))),
        },
        other => Err(bad(format!(
            "unknown algorithm \"{other}\": the built-in ones are \"zstd\" and \"lz4\""
        ))),
    }
}

/// Set `dev->compress` and `dev->decompress` to the built-in codec `algo` ("zstd" or
/// "lz4") at `level`:
/// - zstd: 1 (fastest) to 22 (smallest), or 0 for the default, 1;
/// - lz4: 0 or 1 (one raw LZ4 block per chunk, at LZ4's default acceleration, 1).
///
/// The level is carried by the function assigned to `dev->compress` (each zstd level
/// has its own), so the setting belongs to the device structure alone: nothing is
/// registered, copying the structure copies it, and there is nothing to undo before
/// freeing the device. It takes effect at the next init or load on the device; init
/// records the algorithm and level in the volume's superblock (see
/// `spdk_reduce_vol_get_info`).
///
/// Returns 0, or -EINVAL (logged, `dev` unchanged) for a NULL `dev` or `algo`, an
/// unknown algorithm, or a level out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_backing_dev_set_codec(
    dev: *mut spdk_reduce_backing_dev,
    algo: *const c_char,
    level: c_int,
) -> c_int {
    // Safety (Rust): `dev` is NULL or a valid device the caller owns; `algo` is NULL or
    // a NUL-terminated string.
    const WHAT: &str = "reduce_backing_dev_set_codec";
    guard(WHAT, Errno::EIO.negated(), || {
        // SAFETY: NULL or valid, per the caller; no volume uses the structure's
        // members while it is being changed (they are read at init and load).
        let Some(dev) = (unsafe { dev.as_mut() }) else {
            return refuse(WHAT, "dev is NULL").negated();
        };
        if algo.is_null() {
            return refuse(WHAT, "algo is NULL").negated();
        }
        // SAFETY: non-NULL and NUL-terminated, per the caller.
        let name = unsafe { CStr::from_ptr(algo) }.to_string_lossy();
        match builtin_pair(&name, level) {
            Ok((compress, decompress)) => {
                dev.compress = Some(compress);
                dev.decompress = Some(decompress);
                0
            }
            Err(e) => refuse(WHAT, e.detail()).negated(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_has_its_own_function() {
        for (i, &f) in ZSTD_COMPRESS.iter().enumerate() {
            for &g in &ZSTD_COMPRESS[i + 1..] {
                assert!(
                    !std::ptr::fn_addr_eq(f, g),
                    "level {} shares a function",
                    i + 1
                );
            }
            assert!(!std::ptr::fn_addr_eq(f, LZ4_COMPRESS));
        }
    }

    #[test]
    fn assigned_pairs_are_recognised() {
        for level in 0..=22 {
            let (c, d) = builtin_pair("zstd", level).unwrap();
            let want = level.max(1) as u32;
            assert_eq!(
                builtin_compression(Some(c)),
                Compression {
                    algo: CompAlgo::ZSTD,
                    level: want
                }
            );
            assert!(std::ptr::fn_addr_eq(d, ZSTD_DECOMPRESS));
        }
        for level in [0, 1] {
            let (c, d) = builtin_pair("lz4", level).unwrap();
            assert_eq!(builtin_compression(Some(c)).algo, CompAlgo::LZ4);
            assert!(std::ptr::fn_addr_eq(d, LZ4_DECOMPRESS));
        }
        // The exported function has one address in a real build (the C tests assign it
        // directly); miri gives each use of a function a fresh one.
        if !cfg!(miri) {
            assert_eq!(
                builtin_compression(Some(reduce_zstd_compress)).level,
                ZSTD_DEFAULT_LEVEL
            );
        }
        // Decompress functions and a caller's own do not record anything.
        assert!(builtin_compression(Some(reduce_zstd_decompress)).is_unrecorded());
        assert!(builtin_compression(None).is_unrecorded());
        for (algo, level) in [
            ("zstd", -1),
            ("zstd", 23),
            ("lz4", 2),
            ("lz4", -1),
            ("gzip", 1),
            ("", 0),
        ] {
            assert_eq!(
                builtin_pair(algo, level).unwrap_err(),
                Errno::EINVAL,
                "{algo} {level}"
            );
        }
    }
}
