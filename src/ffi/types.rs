//! The C types of `spdk/reduce.h`, laid out exactly as the original's. Each callback
//! signature is spelled once, here, as a nullable function pointer type; the rest of
//! `ffi` names it, through [`FnOf`] once checked non-NULL.

use std::ffi::{c_char, c_int, c_void};

use libc::iovec;

use crate::codec::{CompAlgo, Compression};
use crate::format::Params;

/// `struct spdk_uuid` (a union of `uint8_t raw[16]` in SPDK; the same 16 bytes).
/// Its C definition comes from the header's preamble, guarded for SPDK's `uuid.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct spdk_uuid {
    pub raw: [u8; 16],
}

/// The parameters of a volume: given to init, stored on the backing device, returned by
/// `spdk_reduce_vol_get_params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct spdk_reduce_vol_params {
    /// The volume's identity; its pm file is named after it. All zeros at init: the
    /// library picks a random (version 4) uuid.
    pub uuid: spdk_uuid,
    /// Size in bytes of the IO unit for the backing device: the unit of allocation
    /// and of backing I/O. Must be greater than 0 and a multiple of the backing
    /// device's `blocklen`.
    pub backing_io_unit_size: u32,
    /// Size in bytes of a logical block, the unit of reads and writes. Must be greater
    /// than 0.
    pub logical_block_size: u32,
    /// Size in bytes of a chunk, the unit of compression. A multiple of both sizes above.
    pub chunk_size: u32,
    /// Total size in bytes of the volume. Must be 0 when passed to
    /// `spdk_reduce_vol_init()`, which computes it from the backing device's size.
    pub vol_size: u64,
}

impl From<&spdk_reduce_vol_params> for Params {
    fn from(p: &spdk_reduce_vol_params) -> Params {
        Params {
            uuid: p.uuid.raw,
            backing_io_unit_size: p.backing_io_unit_size,
            logical_block_size: p.logical_block_size,
            chunk_size: p.chunk_size,
            vol_size: p.vol_size,
            // The 2019 struct has no room for it; init takes it from the codec.
            compression: Compression::UNRECORDED,
        }
    }
}

impl From<Params> for spdk_reduce_vol_params {
    fn from(p: Params) -> spdk_reduce_vol_params {
        spdk_reduce_vol_params {
            uuid: spdk_uuid { raw: p.uuid },
            backing_io_unit_size: p.backing_io_unit_size,
            logical_block_size: p.logical_block_size,
            chunk_size: p.chunk_size,
            vol_size: p.vol_size,
        }
    }
}

/// `struct spdk_reduce_vol_params` as the library hands it out: the struct's bytes,
/// padding included (zeros). Kept as bytes because a Rust value of the struct may lose
/// what its padding holds whenever it is moved, and C may compare all 40 bytes.
#[repr(align(8))]
pub(crate) struct ParamsBytes([u8; size_of::<spdk_reduce_vol_params>()]);

impl From<Params> for ParamsBytes {
    fn from(p: Params) -> ParamsBytes {
        use std::mem::offset_of;
        let c = spdk_reduce_vol_params::from(p);
        let mut b = [0u8; size_of::<spdk_reduce_vol_params>()];
        let mut put = |offset: usize, bytes: &[u8]| {
            b[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(offset_of!(spdk_reduce_vol_params, uuid), &c.uuid.raw);
        put(
            offset_of!(spdk_reduce_vol_params, backing_io_unit_size),
            &c.backing_io_unit_size.to_ne_bytes(),
        );
        put(
            offset_of!(spdk_reduce_vol_params, logical_block_size),
            &c.logical_block_size.to_ne_bytes(),
        );
        put(
            offset_of!(spdk_reduce_vol_params, chunk_size),
            &c.chunk_size.to_ne_bytes(),
        );
        put(
            offset_of!(spdk_reduce_vol_params, vol_size),
            &c.vol_size.to_ne_bytes(),
        );
        ParamsBytes(b)
    }
}

impl ParamsBytes {
    /// The struct, for C to read.
    pub(crate) fn as_ptr(&self) -> *const spdk_reduce_vol_params {
        self.0.as_ptr().cast()
    }

    /// Its `uuid` member.
    pub(crate) fn uuid(&self) -> *const spdk_uuid {
        self.0[std::mem::offset_of!(spdk_reduce_vol_params, uuid)..]
            .as_ptr()
            .cast()
    }
}

/// `comp_algo` value: deflate (SPDK's `SPDK_ACCEL_COMP_ALGO_DEFLATE`). Also what a
/// volume holds whose creator recorded no algorithm: the 2019 original, or a caller's
/// own codec.
pub const REDUCE_COMP_ALGO_DEFLATE: u32 = 0;

/// `comp_algo` value: LZ4, one raw LZ4 block per chunk (SPDK's
/// `SPDK_ACCEL_COMP_ALGO_LZ4`).
pub const REDUCE_COMP_ALGO_LZ4: u32 = 1;

/// `comp_algo` value: zstd, one frame per chunk (this library's own value: SPDK has
/// none for zstd).
pub const REDUCE_COMP_ALGO_ZSTD: u32 = 128;

// The header spells the values out; they are the core's.
const _: () = assert!(
    REDUCE_COMP_ALGO_DEFLATE == CompAlgo::DEFLATE.0 as u32
        && REDUCE_COMP_ALGO_LZ4 == CompAlgo::LZ4.0 as u32
        && REDUCE_COMP_ALGO_ZSTD == CompAlgo::ZSTD.0 as u32
);

/// Volume statistics, as later SPDK releases report them (`allocated_io_units`), and
/// what this library adds after them. See also `reduce_vol_get_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct spdk_reduce_vol_info {
    /// Backing io units marked allocated, counted as later SPDK releases count them:
    /// those of the volume's metadata at the start of the device (8 KiB: 2 io units of
    /// 4 KiB), those holding chunk data, and those of writes in flight or being
    /// unmapped on the device.
    pub allocated_io_units: u64,
    /// The compression level recorded in the superblock at init (`comp_level`, where
    /// later SPDK releases keep it): the zstd level, or 1 for LZ4. 0 when not recorded.
    pub comp_level: u32,
    /// The compression algorithm recorded in the superblock at init (`comp_algo`):
    /// `REDUCE_COMP_ALGO_ZSTD` or `REDUCE_COMP_ALGO_LZ4` when the volume was made with
    /// a built-in codec; `REDUCE_COMP_ALGO_DEFLATE` (0) when it was made with the
    /// caller's own codec or by the original library, which record nothing; or
    /// another value written by later SPDK.
    pub comp_algo: u32,
}

/// Statistics of a loaded volume, from `reduce_vol_get_stats` (this library's
/// extension). Members are only ever added at the end, so a program built against an
/// older, shorter struct keeps working: it passes its own `sizeof`.
///
/// The space members describe the chunks that hold data, kept up to date at every write
/// and unmap (no scan): a chunk never written, unmapped, or whose content is all zeros
/// holds none and takes no space. The request members count since the volume was
/// loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct reduce_vol_stats {
    /// Chunks that hold data.
    pub chunks_in_use: u64,
    /// Of those, the ones stored uncompressed (compression would have saved no io unit).
    pub chunks_raw: u64,
    /// Backing io units those chunks take.
    pub io_units_in_use: u64,
    /// Backing io units free to allocate (not counting those of writes in flight, or
    /// those being unmapped on the backing device).
    pub io_units_free: u64,
    /// Bytes those chunks are stored in: the sum of their compressed sizes, a chunk
    /// stored uncompressed counting `chunk_size`.
    pub stored_bytes: u64,
    /// Reads completed since load, failed ones included.
    pub reads: u64,
    /// Writes completed since load, failed ones included.
    pub writes: u64,
    /// Unmaps completed since load, failed ones included.
    pub unmaps: u64,
    /// Of the reads, writes and unmaps completed since load, those that completed with
    /// an error.
    pub errors: u64,
    /// Chunk reads served from the volume's cache since load, with no backing read
    /// and no decompress: pieces of reads, and the read halves of partial writes and
    /// unmaps (see `reduce_vol_set_cache_chunks`).
    pub cache_hits: u64,
}

impl From<crate::vol::Stats> for reduce_vol_stats {
    fn from(s: crate::vol::Stats) -> reduce_vol_stats {
        reduce_vol_stats {
            chunks_in_use: s.chunks_in_use,
            chunks_raw: s.chunks_raw,
            io_units_in_use: s.io_units_in_use,
            io_units_free: s.io_units_free,
            stored_bytes: s.stored_bytes,
            reads: s.reads,
            writes: s.writes,
            unmaps: s.unmaps,
            errors: s.errors,
            cache_hits: s.cache_hits,
        }
    }
}

/// What `reduce_vol_check` found (this library's extension; not in the original).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct reduce_vol_check_report {
    /// Chunks whose logical map entry is set.
    pub chunks_in_use: u64,
    /// Io units referenced by those chunks.
    pub io_units_referenced: u64,
    /// Chunks read back and verified (checksum, decompression).
    pub chunks_read: u64,
    /// Problems found; 0 for a clean volume.
    pub problems: u64,
    /// The first problem, described; an empty string when there is none.
    pub first_problem: [c_char; 256],
}

/// Completion of `reduce_vol_check`: `ctx` is the caller's `cb_arg`; `reduce_errno` is
/// 0 when the volume is clean, -EILSEQ for metadata problems, -EIO when only data
/// failed to read back or chunk maps are held after commits the pm file failed, or
/// the error that kept the check from running (-EINVAL for a NULL volume, -EBUSY with
/// I/O outstanding, -EPERM on a thread other than the volume's). `report` is valid
/// during the call only.
pub type reduce_vol_check_complete = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        reduce_errno: c_int,
        report: *const reduce_vol_check_report,
    ),
>;

/// Completion of unload, destroy, readv, writev and unmap: `ctx` is the caller's `cb_arg`;
/// `reduce_errno` is 0 or a negative errno (each function lists its values). Called
/// exactly once per call, possibly before the call returns.
pub type spdk_reduce_vol_op_complete =
    Option<unsafe extern "C" fn(ctx: *mut c_void, reduce_errno: c_int)>;

/// Completion of init and load: `ctx` is the caller's `cb_arg`. On success
/// `reduce_errno` is 0 and `vol` is the volume: keep it, it is the handle every later
/// call on this volume takes, and the library hands it out nowhere else. It stays valid
/// until a successful unload completes. On failure `vol` is NULL and `reduce_errno` a
/// negative errno. Called exactly once per call, possibly before the call returns.
pub type spdk_reduce_vol_op_with_handle_complete = Option<
    unsafe extern "C" fn(ctx: *mut c_void, vol: *mut super::spdk_reduce_vol, reduce_errno: c_int),
>;

/// Completion of a backing device operation, called as `args->cb_fn(args->cb_arg,
/// reduce_errno)`: for readv, writev and unmap, 0 or a negative errno; for compress and
/// decompress, the positive number of bytes written to the destination, or a negative
/// errno.
pub type spdk_reduce_dev_cpl =
    Option<unsafe extern "C" fn(cb_arg: *mut c_void, reduce_errno: c_int)>;

/// How a backing device operation reports back: call `cb_fn(cb_arg, status)` exactly
/// once, inside the operation's call or later, on the volume's thread (the thread that
/// called init, load or destroy). The structure belongs to the library; it stays valid
/// until the volume is unloaded (or its init, load or destroy has completed), and each
/// call into the device gets its own.
///
/// The library checks completions instead of trusting them:
/// - a completion delivered twice, or for an operation no longer in flight, is logged
///   (`REDUCE_LOG_WARN`) and ignored;
/// - a completion on another thread is logged (`REDUCE_LOG_ERROR`) and ignored, since
///   the volume is not safe to touch from there: the operation stays in flight until
///   it is completed on the volume's thread.
///
/// Limits: structures are reused oldest first, and only after at least 256 later
/// operations have completed; a duplicate arriving after its structure was reused is
/// taken as the completion of the operation now using it, which cannot be told apart.
/// No completion may come once the volume is unloaded: the structures are freed then.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct spdk_reduce_vol_cb_args {
    /// The library's completion function (never NULL).
    pub cb_fn: spdk_reduce_dev_cpl,
    /// Its argument, to pass back unchanged.
    pub cb_arg: *mut c_void,
}

/// The type of the `readv` and `writev` members of `struct spdk_reduce_backing_dev`:
/// transfer `lba_count` blocks of `dev->blocklen` bytes starting at block `lba`,
/// to (readv) or from (writev) the `iovcnt` buffers of `iov`, which hold exactly
/// `lba_count * blocklen` bytes in all. The array and the buffers belong to the library
/// and stay valid until the completion. Complete through `args` with 0 or a negative
/// errno; the library passes an error on to the request that needed the transfer.
pub type reduce_backing_io_fn = Option<
    unsafe extern "C" fn(
        dev: *mut spdk_reduce_backing_dev,
        iov: *mut iovec,
        iovcnt: c_int,
        lba: u64,
        lba_count: u32,
        args: *mut spdk_reduce_vol_cb_args,
    ),
>;

/// The type of the `unmap` member of `struct spdk_reduce_backing_dev`: discard
/// `lba_count` blocks of `dev->blocklen` bytes starting at block `lba`, and complete
/// through `args` with 0 or a negative errno.
///
/// The library calls it for the io units a chunk held when the chunk becomes empty (an
/// unmap of the volume, or a chunk written with zeros), once the chunk's emptied map
/// entry is persisted, so a thin-provisioned device can give the space back. It never
/// asks for io units that hold data, and it allocates none of them again before this
/// completes, so a later write to them cannot be overtaken by the discard. What the
/// blocks read afterwards does not matter to the library, and neither does an error (it
/// is logged): a device with nothing to give back may complete at once with 0. It is
/// not called for io units an overwrite frees (they are taken again soon).
pub type reduce_backing_unmap_fn = Option<
    unsafe extern "C" fn(
        dev: *mut spdk_reduce_backing_dev,
        lba: u64,
        lba_count: u32,
        args: *mut spdk_reduce_vol_cb_args,
    ),
>;

/// The type of the `compress` and `decompress` members of
/// `struct spdk_reduce_backing_dev`: read the `src_iovcnt` buffers of `src_iov`, write
/// the result into the `dst_iovcnt` buffers of `dst_iov`, and complete through `args`
/// with the positive number of bytes written, or a negative errno. The arrays and the
/// buffers stay valid until the completion. The arrays belong to the library; a
/// buffer is the library's, or, for a request that reads or writes a whole chunk
/// within one of its iovecs, that part of the caller's own buffer (the source of a
/// compress, the destination of a decompress), lent by the request: write only into
/// the destination.
///
/// compress receives one whole chunk (`chunk_size` bytes) and a destination of
/// `chunk_size` bytes. When the compressed output does not fit (or compression fails),
/// complete with a negative errno such as -ENOSPC: the library then stores the chunk
/// uncompressed. Output that saves no io unit is stored uncompressed as well.
///
/// decompress receives exactly the bytes an earlier compress produced and a
/// destination of `chunk_size` bytes, and must complete with `chunk_size`. A negative
/// errno or any other count fails the read with -EIO.
///
/// `reduce_zstd_compress`, `reduce_zstd_decompress`, `reduce_lz4_compress` and
/// `reduce_lz4_decompress` have this type (see also `reduce_backing_dev_set_codec`).
pub type reduce_backing_codec_fn = Option<
    unsafe extern "C" fn(
        dev: *mut spdk_reduce_backing_dev,
        src_iov: *mut iovec,
        src_iovcnt: c_int,
        dst_iov: *mut iovec,
        dst_iovcnt: c_int,
        args: *mut spdk_reduce_vol_cb_args,
    ),
>;

/// The backing device a volume is stored on, supplied by the caller: block I/O on
/// `blockcnt` blocks of `blocklen` bytes, and the compressor. Every `lba` and
/// `lba_count` counts blocks of `blocklen` bytes.
///
/// The library passes this pointer unchanged to every function, so a caller may embed
/// the structure in its own and recover that with container_of. The structure must
/// stay valid and unchanged from the init, load or destroy call until the volume is
/// unloaded (or the init, load or destroy has failed or completed).
///
/// Each function completes through its `args` (see `struct spdk_reduce_vol_cb_args`),
/// inside the call or later, on the volume's thread: a completion delivered twice, or
/// on another thread, is logged and ignored. All five must be set: init, load and
/// destroy refuse a device with a NULL member (-EINVAL). The library supplies
/// built-in codecs for the codec members: `reduce_zstd_compress` and
/// `reduce_zstd_decompress`, `reduce_lz4_compress` and `reduce_lz4_decompress`, or
/// any of them at a chosen level through `reduce_backing_dev_set_codec`.
#[repr(C)]
#[derive(Debug)]
pub struct spdk_reduce_backing_dev {
    /// Read blocks into the library's buffers.
    pub readv: reduce_backing_io_fn,
    /// Write blocks from the library's buffers.
    pub writev: reduce_backing_io_fn,
    /// Discard blocks the volume no longer uses (see `reduce_backing_unmap_fn`). Must be
    /// set, as the original library required.
    pub unmap: reduce_backing_unmap_fn,
    /// Compress one chunk.
    pub compress: reduce_backing_codec_fn,
    /// Decompress one chunk.
    pub decompress: reduce_backing_codec_fn,
    /// Size of the device in blocks.
    pub blockcnt: u64,
    /// Size of a block in bytes: the unit of `lba` and `lba_count`. A divisor of 4096
    /// (the metadata at the start of the device is read and written in whole blocks)
    /// and of the volume's `backing_io_unit_size`.
    pub blocklen: u32,
}

/// Receives the library's messages (see `reduce_set_log_fn`): `ctx` is the caller's
/// `ctx`, `level` is `REDUCE_LOG_ERROR` or `REDUCE_LOG_WARN`, and `msg` is one line of
/// text without a newline, NUL-terminated and valid only during the call.
pub type reduce_log_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, level: c_int, msg: *const c_char)>;

/// A message about a failure: an init or load refused and why, an -EIO, a call
/// refused because of its arguments.
pub const REDUCE_LOG_ERROR: c_int = 1;

/// A message about something the library ignored, such as a completion delivered
/// twice.
pub const REDUCE_LOG_WARN: c_int = 2;

// What the rest of `ffi` stores once a nullable C function pointer is checked: the
// function type inside the `Option`, named from the one spelling above.
pub(crate) trait Nullable {
    type Fn: Copy;
}

impl<F: Copy> Nullable for Option<F> {
    type Fn = F;
}

/// The non-NULL function of a nullable C function pointer type.
pub(crate) type FnOf<T> = <T as Nullable>::Fn;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_original() {
        assert_eq!(size_of::<spdk_uuid>(), 16);
        assert_eq!(size_of::<spdk_reduce_vol_params>(), 40);
        assert_eq!(offset_of!(spdk_reduce_vol_params, backing_io_unit_size), 16);
        assert_eq!(offset_of!(spdk_reduce_vol_params, logical_block_size), 20);
        assert_eq!(offset_of!(spdk_reduce_vol_params, chunk_size), 24);
        assert_eq!(offset_of!(spdk_reduce_vol_params, vol_size), 32);
        assert_eq!(size_of::<spdk_reduce_vol_cb_args>(), 16);
        assert_eq!(offset_of!(spdk_reduce_backing_dev, compress), 24);
        assert_eq!(offset_of!(spdk_reduce_backing_dev, blockcnt), 40);
        assert_eq!(offset_of!(spdk_reduce_backing_dev, blocklen), 48);
        assert_eq!(size_of::<spdk_reduce_backing_dev>(), 56);
        assert_eq!(size_of::<ParamsBytes>(), 40);
        assert_eq!(std::mem::align_of::<ParamsBytes>(), 8);
        assert_eq!(offset_of!(spdk_reduce_vol_info, comp_level), 8);
        assert_eq!(offset_of!(spdk_reduce_vol_info, comp_algo), 12);
        assert_eq!(size_of::<spdk_reduce_vol_info>(), 16);
        assert_eq!(offset_of!(reduce_vol_stats, stored_bytes), 32);
        assert_eq!(offset_of!(reduce_vol_stats, errors), 64);
        assert_eq!(offset_of!(reduce_vol_stats, cache_hits), 72);
        assert_eq!(size_of::<reduce_vol_stats>(), 80);
    }

    #[test]
    fn handed_out_params_have_zero_padding() {
        let p = Params {
            uuid: [0xAB; 16],
            backing_io_unit_size: 4096,
            logical_block_size: 512,
            chunk_size: 16384,
            vol_size: 0x0102_0304_0506_0708,
            compression: Compression::UNRECORDED,
        };
        let b = ParamsBytes::from(p);
        assert_eq!(&b.0[0..16], &[0xAB; 16]);
        assert_eq!(&b.0[16..28], &[0, 0x10, 0, 0, 0, 2, 0, 0, 0, 0x40, 0, 0]);
        assert_eq!(&b.0[28..32], &[0; 4]);
        assert_eq!(&b.0[32..40], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(b.uuid().cast::<u8>(), b.as_ptr().cast::<u8>());
    }
}
