//! The C types of `spdk/reduce.h`, laid out exactly as the original's.

use std::ffi::{c_char, c_int, c_void};

use libc::iovec;

use crate::format::Params;

/// `struct spdk_uuid` (a union of `uint8_t raw[16]` in SPDK; the same 16 bytes).
/// Its C definition comes from the header's preamble, guarded for SPDK's `uuid.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct spdk_uuid {
    pub raw: [u8; 16],
}

/// Describes the parameters of an `spdk_reduce_vol`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct spdk_reduce_vol_params {
    pub uuid: spdk_uuid,
    /// Size in bytes of the IO unit for the backing device: the unit of allocation
    /// and of backing I/O. Must be greater than 0 and a multiple of `blocklen`.
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

/// Volume statistics, as later SPDK releases report them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct spdk_reduce_vol_info {
    /// Backing io units holding chunk data.
    pub allocated_io_units: u64,
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

/// Completion of `reduce_vol_check`: 0 when clean, `-EILSEQ` for metadata problems,
/// `-EIO` when only data failed to read back, or the error that kept the check from
/// running (`-EBUSY` with I/O outstanding). `report` is valid during the call only.
pub type reduce_vol_check_complete = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        reduce_errno: c_int,
        report: *const reduce_vol_check_report,
    ),
>;

pub type spdk_reduce_vol_op_complete =
    Option<unsafe extern "C" fn(ctx: *mut c_void, reduce_errno: c_int)>;

pub type spdk_reduce_vol_op_with_handle_complete = Option<
    unsafe extern "C" fn(ctx: *mut c_void, vol: *mut super::spdk_reduce_vol, reduce_errno: c_int),
>;

/// Completion of a backing device operation: 0 or a negative errno for
/// readv/writev/unmap; for compress/decompress, the positive number of bytes written
/// to the destination, or a negative errno.
pub type spdk_reduce_dev_cpl =
    Option<unsafe extern "C" fn(cb_arg: *mut c_void, reduce_errno: c_int)>;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct spdk_reduce_vol_cb_args {
    pub cb_fn: spdk_reduce_dev_cpl,
    pub cb_arg: *mut c_void,
}

/// The backing device: block I/O and compression, each completing through `args`
/// inside the call or later, on the volume's thread.
#[repr(C)]
#[derive(Debug)]
pub struct spdk_reduce_backing_dev {
    pub readv: Option<
        unsafe extern "C" fn(
            dev: *mut spdk_reduce_backing_dev,
            iov: *mut iovec,
            iovcnt: c_int,
            lba: u64,
            lba_count: u32,
            args: *mut spdk_reduce_vol_cb_args,
        ),
    >,
    pub writev: Option<
        unsafe extern "C" fn(
            dev: *mut spdk_reduce_backing_dev,
            iov: *mut iovec,
            iovcnt: c_int,
            lba: u64,
            lba_count: u32,
            args: *mut spdk_reduce_vol_cb_args,
        ),
    >,
    pub unmap: Option<
        unsafe extern "C" fn(
            dev: *mut spdk_reduce_backing_dev,
            lba: u64,
            lba_count: u32,
            args: *mut spdk_reduce_vol_cb_args,
        ),
    >,
    pub compress: Option<
        unsafe extern "C" fn(
            dev: *mut spdk_reduce_backing_dev,
            src_iov: *mut iovec,
            src_iovcnt: c_int,
            dst_iov: *mut iovec,
            dst_iovcnt: c_int,
            args: *mut spdk_reduce_vol_cb_args,
        ),
    >,
    pub decompress: Option<
        unsafe extern "C" fn(
            dev: *mut spdk_reduce_backing_dev,
            src_iov: *mut iovec,
            src_iovcnt: c_int,
            dst_iov: *mut iovec,
            dst_iovcnt: c_int,
            args: *mut spdk_reduce_vol_cb_args,
        ),
    >,
    pub blockcnt: u64,
    pub blocklen: u32,
}

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
    }
}
