//! The C ABI of `spdk/reduce.h`: the only place with `extern "C"`.
//!
//! Handles are opaque boxes. Every function runs inside the panic [`boundary`], checks
//! its pointers (a refusal is logged and reported as `-EINVAL` through the caller's
//! callback), converts callbacks once into the core's traits, and reports errors as
//! `-errno`. A call whose callback is NULL cannot be told anything, so it does nothing
//! (and says so in the log).
//!
//! The `///` comments here become `include/reduce.h` (`make header`), so they speak C;
//! notes for Rust readers are plain `//` comments.

#![allow(non_camel_case_types)]

mod boundary;
mod check;
mod claim;
mod codec;
#[cfg(test)]
pub(crate) mod counting;
mod device;
mod iov;
mod logging;
mod pool;
mod slab;
mod types;

use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_void};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::ptr;
use std::thread::ThreadId;

use libc::iovec;

use boundary::{callback, errno, guard, refuse, status};
use claim::Claim;
use device::CDevice;
use iov::CUserIo;
use types::*;

use crate::error::Result;
use crate::format::Params;
use crate::pm::FileStore;
use crate::vol::{Backend, InitPlan, Op, Volume};

/// A loaded volume. Opaque: the init and load callbacks hand out pointers to it, valid
/// until a successful unload completes.
///
/// A volume belongs to the thread that loaded it (the one that called init or load).
/// Reads, writes, unmaps, unload, check, `spdk_reduce_vol_get_info`,
/// `reduce_vol_get_stats`, `reduce_vol_set_cache_chunks` and
/// `spdk_reduce_vol_print_info` called on another thread are
/// refused and logged: -EPERM through the callback or the return value, on the calling
/// thread (NULL, or nothing, for the functions without either). `spdk_reduce_vol_get_uuid`, `spdk_reduce_vol_get_params` and
/// `spdk_reduce_vol_get_pm_path` may be called from any thread.
pub struct spdk_reduce_vol {
    vol: Volume,
    /// The thread the volume belongs to: every call that touches it must come from here.
    owner: ThreadId,
    params: ParamsBytes,
    info: Cell<spdk_reduce_vol_info>,
    pm_path: CString,
    /// The backing device, claimed until the handle is freed by a successful unload.
    _claim: Claim,
}

impl spdk_reduce_vol {
    fn boxed(vol: Volume, claim: Claim) -> *mut spdk_reduce_vol {
        let params = vol.params().into();
        // The path's bytes as stored; the path region holds no NUL before its end.
        let pm_path = CString::new(vol.pm_path().into_os_string().into_vec()).unwrap_or_default();
        Box::into_raw(Box::new(spdk_reduce_vol {
            vol,
            owner: boundary::this_thread(),
            params,
            info: Cell::default(),
            pm_path,
            _claim: claim,
        }))
    }
}

fn backend(dev: CDevice) -> Backend {
    Backend {
        codec: Box::new(dev.clone()),
        backing: Box::new(dev),
        store: Box::new(FileStore),
    }
}

/// The volume behind a handle, cloned so no reference to the handle outlives this
/// line: an unload run from inside the call may free it. A NULL handle is refused, and
/// so is a call on a thread other than the volume's (`EPERM`).
///
/// # Safety
/// `vol` is NULL or a live handle.
unsafe fn volume(what: &str, vol: *const spdk_reduce_vol) -> Result<Volume> {
    // SAFETY: NULL or live, per the caller.
    let h = unsafe { owned(what, vol) }?.ok_or_else(|| refuse(what, "vol is NULL"))?;
    Ok(h.vol.clone())
}

/// The handle, when the call is on the volume's thread (else `EPERM`, logged); `None`
/// for a NULL `vol`. The owner is read before anything else: the rest of the handle is
/// not safe to touch from another thread.
///
/// # Safety
/// `vol` is NULL or a live handle.
unsafe fn owned<'a>(
    what: &str,
    vol: *const spdk_reduce_vol,
) -> Result<Option<&'a spdk_reduce_vol>> {
    if vol.is_null() {
        return Ok(None);
    }
    // SAFETY: live, per the caller; `owner` is set once, so reading it races with
    // nothing.
    boundary::on_owner_thread(what, unsafe { (*vol).owner })?;
    // SAFETY: live, and this is its thread.
    Ok(unsafe { vol.as_ref() })
}

/// A completion for init and load: hands C a new handle, which keeps the device's
/// claim, or NULL and the error, the claim ended first.
fn opened(
    cb_fn: FnOf<spdk_reduce_vol_op_with_handle_complete>,
    cb_arg: *mut c_void,
    claim: Claim,
) -> impl FnOnce(Result<Volume>) {
    move |result| {
        let (handle, code) = match result {
            Ok(vol) => (spdk_reduce_vol::boxed(vol, claim), 0),
            Err(e) => {
                drop(claim);
                (ptr::null_mut(), errno(e))
            }
        };
        // SAFETY: the caller's callback with its own argument.
        unsafe { cb_fn(cb_arg, handle, code) }
    }
}

/// The uuid of a volume, or NULL for a NULL `vol`. Valid until the volume is unloaded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_uuid(vol: *mut spdk_reduce_vol) -> *const spdk_uuid {
    // Safety (Rust): `vol` is NULL or a live handle.
    guard("spdk_reduce_vol_get_uuid", ptr::null(), || {
        // SAFETY: NULL or live, per the caller.
        unsafe { vol.as_ref() }.map_or(ptr::null(), |h| h.params.uuid())
    })
}

/// Initialize a new compressed volume on `backing_dev`, with its pm file in the
/// directory `pm_file_dir` (a file named after the volume's uuid, created with mode
/// 0600). `pm_file_dir` is any path the OS accepts (its bytes are kept as given, UTF-8
/// or not); a relative one is made absolute against the current directory, so a later
/// load does not depend on it.
///
/// `params` and `pm_file_dir` are read during the call only. When they are valid, the
/// call sets `params->vol_size` (which must be 0 on entry) to the size computed from
/// the backing device, and replaces a zero uuid with a random one, before it returns.
/// `backing_dev` must stay valid until the volume is unloaded.
///
/// Init first reads the device's header. A volume already there is overwritten (its pm
/// file is left in place), as in the original, unless that volume is loaded.
///
/// The superblock records the codec, where later SPDK releases keep it: when
/// `backing_dev->compress` is a built-in function (`reduce_zstd_compress`,
/// `reduce_lz4_compress`, or one that `reduce_backing_dev_set_codec` assigned), its
/// algorithm and level; for the caller's own codec, zeros, as the original wrote (and
/// later SPDK writes for a caller that sets nothing). `spdk_reduce_vol_get_info`
/// reports them.
///
/// `cb_fn` gets the new volume and 0, or NULL and:
/// - -EINVAL: `params`, `backing_dev`, one of its functions or `pm_file_dir` is NULL;
///   `vol_size` is not 0; a size is 0, or the chunk size is not a multiple of the io
///   unit and logical block sizes, or the io unit not a multiple of the device's
///   `blocklen`; `pm_file_dir` is empty or too long; the device holds 128 chunks or
///   fewer; io units so small that the metadata's would eat into the room the volume
///   needs (every chunk stored uncompressed, plus one chunk's worth so that an
///   overwrite always finds room: with io unit = chunk, 64 bytes or less);
/// - -EBUSY: `backing_dev` is in use in this process (a volume on it is loaded, or an
///   init, load or destroy on it has not completed), or the volume already on the
///   device is loaded (its pm file is locked, by this process or another). Nothing is
///   changed;
/// - the OS error creating the pm file: -EEXIST, -ENOENT, -EACCES, -ENOSPC, ...;
/// - the error the device's readv or writev completed with.
///
/// A failed init leaves nothing behind: no pm file, no volume signature on the device.
/// While the volume is loaded its pm file is locked (`flock`), so no other handle, in
/// this process or another, can open it. With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_init(
    params: *mut spdk_reduce_vol_params,
    backing_dev: *mut spdk_reduce_backing_dev,
    pm_file_dir: *const c_char,
    cb_fn: spdk_reduce_vol_op_with_handle_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): pointers are NULL or valid; `backing_dev` outlives the volume.
    const WHAT: &str = "spdk_reduce_vol_init";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        // SAFETY: NULL or valid, per the caller.
        let prepared = unsafe { prepare_init(params, backing_dev, pm_file_dir) }
            .and_then(|(plan, dev)| Ok((plan, dev, Claim::take(WHAT, backing_dev)?)));
        match prepared {
            Ok((plan, dev, claim)) => {
                // Like the original, the caller's params show the final uuid and size.
                // SAFETY: checked non-NULL in prepare_init.
                unsafe { *params = plan.params.into() };
                Volume::init(plan, backend(dev), opened(cb_fn, cb_arg, claim));
            }
            // SAFETY: the caller's callback with its own argument.
            Err(e) => unsafe { cb_fn(cb_arg, ptr::null_mut(), errno(e)) },
        }
    })
}

/// # Safety
/// As for [`spdk_reduce_vol_init`].
unsafe fn prepare_init(
    params: *const spdk_reduce_vol_params,
    backing_dev: *mut spdk_reduce_backing_dev,
    pm_file_dir: *const c_char,
) -> Result<(InitPlan, CDevice)> {
    const WHAT: &str = "spdk_reduce_vol_init";
    // SAFETY: NULL or valid, per the caller.
    let params = unsafe { params.as_ref() }.ok_or_else(|| refuse(WHAT, "params is NULL"))?;
    // SAFETY: as above.
    let dev = unsafe { CDevice::new(WHAT, backing_dev) }?;
    if pm_file_dir.is_null() {
        return Err(refuse(WHAT, "pm_file_dir is NULL"));
    }
    // SAFETY: non-NULL and NUL-terminated, per the caller.
    let dir = Path::new(OsStr::from_bytes(
        unsafe { CStr::from_ptr(pm_file_dir) }.to_bytes(),
    ));
    use crate::backing::BackingDevice;
    let params = Params {
        // SAFETY: non-NULL (CDevice::new checked it) and valid, per the caller.
        compression: unsafe { pool::device_compression(backing_dev) },
        ..params.into()
    };
    let plan = InitPlan::new(params, dev.blocklen(), dev.blockcnt(), dir)?;
    Ok((plan, dev))
}

/// Load the compressed volume on `backing_dev`: read its superblock, then open and map
/// its pm file (at the path recorded on the device). `backing_dev` must stay valid
/// until the volume is unloaded.
///
/// `cb_fn` gets the volume and 0, or NULL and:
/// - -EINVAL: `backing_dev` or one of its functions is NULL, or its `blocklen` does
///   not divide 4096;
/// - -EBUSY: the volume is loaded already (its pm file is locked, by this process or
///   another), or `backing_dev` is in use in this process (a volume on it is loaded,
///   or an init, load or destroy on it has not completed);
/// - -EILSEQ: no valid volume: no signature, a device smaller than the stored size
///   needs, a pm file that does not match the device (superblock, size) or with map
///   entries out of range;
/// - the OS error opening the pm file: -ENOENT, -EACCES, ...;
/// - the error the device's readv completed with.
///
/// The loaded volume holds its pm file locked (`flock`) until it is unloaded; a crash
/// leaves no lock behind. With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_load(
    backing_dev: *mut spdk_reduce_backing_dev,
    cb_fn: spdk_reduce_vol_op_with_handle_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `backing_dev` is NULL or valid and outlives the volume.
    const WHAT: &str = "spdk_reduce_vol_load";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        // SAFETY: NULL or valid, per the caller.
        let device = unsafe { CDevice::new(WHAT, backing_dev) }
            .and_then(|dev| Ok((dev, Claim::take(WHAT, backing_dev)?)));
        match device {
            Ok((dev, claim)) => Volume::load(backend(dev), opened(cb_fn, cb_arg, claim)),
            // SAFETY: the caller's callback with its own argument.
            Err(e) => unsafe { cb_fn(cb_arg, ptr::null_mut(), errno(e)) },
        }
    })
}

/// Unload a volume; it stays on its device and pm file for a later load. `cb_fn` gets:
/// - 0: the volume is closed, its pm file unlocked and `backing_dev` free for another
///   init, load or destroy, and `vol` freed, all before `cb_fn` runs;
/// - -EBUSY: reads or writes are outstanding; the volume stays loaded;
/// - -EINVAL: `vol` is NULL;
/// - -EPERM: called on a thread other than the volume's.
///
/// With `cb_fn` NULL the call does nothing (the volume stays loaded).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_unload(
    vol: *mut spdk_reduce_vol,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `vol` is NULL or a live handle.
    const WHAT: &str = "spdk_reduce_vol_unload";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        // SAFETY: NULL or live, per the caller.
        let volume = match unsafe { volume(WHAT, vol) } {
            Ok(volume) => volume,
            // SAFETY: the caller's callback with its own argument.
            Err(e) => return unsafe { cb_fn(cb_arg, errno(e)) },
        };
        volume.unload(move |result| {
            if result.is_ok() {
                // SAFETY: the handle came from Box::into_raw and is unloaded: nothing
                // uses it any more (the drain loop holds its own reference).
                drop(unsafe { Box::from_raw(vol) });
            }
            // SAFETY: the caller's callback with its own argument.
            unsafe { cb_fn(cb_arg, status(result)) }
        });
    })
}

/// Destroy the volume on `backing_dev`: load it, clear its signature on the device and
/// remove its pm file. All or nothing: when it fails, the volume stays intact and
/// loadable (when the pm file cannot be removed, the superblock is written back).
/// A crash part way leaves either the intact volume or a device without a signature
/// (the pm file then at worst left behind), never a signature whose pm file is gone.
/// `backing_dev` must stay valid until `cb_fn` runs.
///
/// `cb_fn` gets 0, or every error of `spdk_reduce_vol_load` (-EBUSY for a volume that
/// is loaded or a device in use, -EILSEQ for a device without a valid volume, which
/// is left untouched), the error of the device's writev, or the OS error removing the
/// pm file (-EPERM, -EACCES, -EROFS, ...). A volume whose pm file is missing or
/// damaged fails to load, so it cannot be destroyed this way: see
/// `reduce_vol_destroy_force`.
///
/// With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_destroy(
    backing_dev: *mut spdk_reduce_backing_dev,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `backing_dev` is NULL or valid for the duration.
    const WHAT: &str = "spdk_reduce_vol_destroy";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        // SAFETY: NULL or valid, per the caller.
        match unsafe { destroy_start(WHAT, backing_dev) } {
            Ok((dev, claim)) => Volume::destroy(backend(dev), destroyed(cb_fn, cb_arg, claim)),
            // SAFETY: the caller's callback with its own argument.
            Err(e) => unsafe { cb_fn(cb_arg, errno(e)) },
        }
    })
}

/// Destroy the volume on `backing_dev` whatever the state of its pm file: for a volume
/// that `spdk_reduce_vol_destroy` refuses because its pm file is missing, damaged or
/// of the wrong size. Removes the pm file named on the device if it exists and is a
/// regular file, then clears the signature. Not all or nothing as the plain destroy
/// is: a crash between the two steps leaves the signature without its pm file, which
/// a second forced destroy clears. `backing_dev` must stay valid until `cb_fn` runs.
///
/// `cb_fn` gets 0, or:
/// - -EINVAL: `backing_dev` or one of its functions is NULL, or its `blocklen` does
///   not divide 4096;
/// - -EBUSY: the pm file is locked (its volume is loaded, in this process or
///   another), or `backing_dev` is in use in this process; nothing is changed;
/// - -EILSEQ: the device has no volume signature at all; nothing is changed;
/// - the OS error removing the pm file (nothing is changed), or the error the
///   device's readv or writev completed with.
///
/// With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_vol_destroy_force(
    backing_dev: *mut spdk_reduce_backing_dev,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `backing_dev` is NULL or valid for the duration.
    const WHAT: &str = "reduce_vol_destroy_force";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        // SAFETY: NULL or valid, per the caller.
        match unsafe { destroy_start(WHAT, backing_dev) } {
            Ok((dev, claim)) => {
                Volume::destroy_force(backend(dev), destroyed(cb_fn, cb_arg, claim))
            }
            // SAFETY: the caller's callback with its own argument.
            Err(e) => unsafe { cb_fn(cb_arg, errno(e)) },
        }
    })
}

/// The checked device of a destroy, claimed.
///
/// # Safety
/// `backing_dev` is NULL or valid until the destroy completes.
unsafe fn destroy_start(
    what: &str,
    backing_dev: *mut spdk_reduce_backing_dev,
) -> Result<(CDevice, Claim)> {
    // SAFETY: NULL or valid, per the caller.
    let dev = unsafe { CDevice::new(what, backing_dev) }?;
    Ok((dev, Claim::take(what, backing_dev)?))
}

/// The completion of a destroy: ends the device's claim, then tells the caller.
fn destroyed(
    cb_fn: FnOf<spdk_reduce_vol_op_complete>,
    cb_arg: *mut c_void,
    claim: Claim,
) -> impl FnOnce(Result<()>) {
    move |result| {
        drop(claim);
        // SAFETY: the caller's callback with its own argument.
        unsafe { cb_fn(cb_arg, status(result)) }
    }
}

/// A read, write or unmap, after its export's guard.
///
/// # Safety
/// `vol` NULL or live; the iovecs valid until completion.
#[allow(clippy::too_many_arguments)]
unsafe fn submit(
    what: &str,
    op: Op,
    vol: *mut spdk_reduce_vol,
    iov: *mut iovec,
    iovcnt: c_int,
    offset: u64,
    length: u64,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    let Some(cb_fn) = callback(what, "cb_fn", cb_fn) else {
        return;
    };
    // SAFETY: NULL or live, per the caller.
    let volume = match unsafe { volume(what, vol) } {
        Ok(volume) => volume,
        // SAFETY: the caller's callback with its own argument.
        Err(e) => return unsafe { cb_fn(cb_arg, errno(e)) },
    };
    // SAFETY: the iovecs are valid until completion, per the caller.
    match unsafe { CUserIo::new(iov, iovcnt, cb_fn, cb_arg) } {
        Ok(io) => volume.submit(op, offset, length, io.boxed()),
        // An empty request succeeds whatever its iovecs, as in the original.
        Err((io, _)) if length == 0 => volume.submit(op, offset, 0, io.boxed()),
        Err((io, why)) => volume.reject(op, io.boxed(), refuse(what, why)),
    }
}

/// Read `length` logical blocks, starting at logical block `offset`, into the `iovcnt`
/// buffers of `iov`: any number of buffers, of any sizes, that hold exactly
/// `length * logical_block_size` bytes in all. The range may cross chunk boundaries
/// (the original refused that with -EINVAL): the library splits it and completes once.
/// Blocks never written, unmapped, or written with zeros read as zeros. The `iov` array
/// is read during the call only; the buffers stay the caller's, and the library writes
/// them until `cb_fn` runs.
///
/// Requests complete in submission order where they share a chunk (a read sees every
/// write submitted before it); others may complete in any order. Any number may be
/// outstanding.
///
/// `cb_fn` gets 0 (also for `length` 0, whatever `iov` and `offset`), or the first
/// error of the chunks the range covers:
/// - -EINVAL: `vol` is NULL; a bad iovec array (negative `iovcnt`, `iov` NULL, an
///   `iov_base` NULL with a length); buffers that do not hold exactly `length` blocks;
///   a range past the end of the volume;
/// - -EPERM: called on a thread other than the volume's;
/// - -EIO: stored data that fails its checksum or does not decompress to a chunk, or
///   map entries in the pm file that name something no chunk may use (an entry out of
///   range, a free chunk map or io unit);
/// - the error the device's readv completed with.
///
/// With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_readv(
    vol: *mut spdk_reduce_vol,
    iov: *mut iovec,
    iovcnt: c_int,
    offset: u64,
    length: u64,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `vol` NULL or live; the iovecs valid until completion.
    const WHAT: &str = "spdk_reduce_vol_readv";
    guard(WHAT, (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            submit(
                WHAT,
                Op::Read,
                vol,
                iov,
                iovcnt,
                offset,
                length,
                cb_fn,
                cb_arg,
            )
        }
    })
}

/// Write `length` logical blocks, starting at logical block `offset`, from the `iovcnt`
/// buffers of `iov`: any number of buffers, of any sizes, that hold exactly
/// `length * logical_block_size` bytes in all. The range may cross chunk boundaries
/// (the original refused that with -EINVAL): the library splits it and completes once.
/// The `iov` array is read during the call only; the buffers stay the caller's, and
/// must not change until `cb_fn` runs. When `cb_fn` gets 0 the data is persisted; a
/// crash before that leaves each chunk old or new, never mixed. A failed write over
/// several chunks may have written some of them (each wholly).
///
/// A chunk whose content becomes all zeros is not compressed nor stored: its logical
/// map entry is emptied (it reads as zeros, in the original library too) and what it
/// held is freed, as `spdk_reduce_vol_unmap` does.
///
/// Ordering as for `spdk_reduce_vol_readv`.
///
/// `cb_fn` gets 0 (also for `length` 0, whatever `iov` and `offset`), or the first
/// error of the chunks the range covers:
/// - -EINVAL, -EPERM: as for `spdk_reduce_vol_readv`;
/// - -ENOSPC: a write to a chunk that holds no data, when the free chunk maps are all
///   held back for overwrites. A write never replaces a chunk in place, so overwriting
///   needs a spare chunk map (and io units) until it frees the old one; the library
///   holds back one spare for each chunk holding data, up to 128 (the writes that can
///   be in flight), so a write to a chunk that holds data always finds room, whatever
///   the size of the pm file. With a pm file of the original's smaller size this caps
///   the chunks that can hold data;
/// - -EIO: a partial-chunk write whose old data fails its checksum or does not
///   decompress, or whose map entries are out of range (as for readv);
/// - the error the device's readv or writev completed with, or the OS error
///   persisting the pm file.
///
/// With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_writev(
    vol: *mut spdk_reduce_vol,
    iov: *mut iovec,
    iovcnt: c_int,
    offset: u64,
    length: u64,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `vol` NULL or live; the iovecs valid until completion.
    const WHAT: &str = "spdk_reduce_vol_writev";
    guard(WHAT, (), || {
        // SAFETY: forwarded from the caller.
        unsafe {
            submit(
                WHAT,
                Op::Write,
                vol,
                iov,
                iovcnt,
                offset,
                length,
                cb_fn,
                cb_arg,
            )
        }
    })
}

/// Discard `length` logical blocks starting at logical block `offset` (as later SPDK
/// releases declare it): afterwards they read as zeros. A chunk the range covers whole
/// becomes empty: its logical map entry is emptied and persisted (a crash leaves it old
/// or empty), then its chunk map and io units are freed, and the backing device's
/// `unmap` is called for those io units (see `reduce_backing_unmap_fn`). A chunk the
/// range covers in part has those blocks zeroed by a read-modify-write, and becomes
/// empty in the same way if nothing else in it is non-zero. The range may cross chunk
/// boundaries; the call completes once.
///
/// An unmapped chunk is only an empty logical map entry (all-ones), which the original
/// library reads as zeros too: a volume unmapped here still loads there.
///
/// Ordering as for `spdk_reduce_vol_readv`. When `cb_fn` gets 0 the unmap is persisted.
///
/// `cb_fn` gets 0 (also for `length` 0), or the first error of the chunks the range
/// covers:
/// - -EINVAL: `vol` is NULL, or the range runs past the end of the volume;
/// - -EPERM: called on a thread other than the volume's;
/// - -EIO: a partly covered chunk whose stored data fails its checksum or does not
///   decompress, or map entries in the pm file that name something no chunk may use;
/// - -ENOSPC: a partly covered chunk whose new content needs a chunk map while the free
///   ones are held back for overwrites (see `spdk_reduce_vol_writev`);
/// - the error the device's readv or writev completed with, or the OS error persisting
///   the pm file. An error of the device's unmap is not: it is logged, and the io units
///   are free again.
///
/// With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_unmap(
    vol: *mut spdk_reduce_vol,
    offset: u64,
    length: u64,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `vol` is NULL or a live handle.
    const WHAT: &str = "spdk_reduce_vol_unmap";
    guard(WHAT, (), || {
        // SAFETY: an unmap has no iovecs: NULL and 0 are a valid empty array.
        unsafe {
            submit(
                WHAT,
                Op::Unmap,
                vol,
                ptr::null_mut(),
                0,
                offset,
                length,
                cb_fn,
                cb_arg,
            )
        }
    })
}

/// The parameters of a volume, or NULL for a NULL `vol`. Valid until the volume is
/// unloaded. All 40 bytes are defined: the padding after `chunk_size` is zeros, so the
/// structure can be compared with memcmp.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_params(
    vol: *mut spdk_reduce_vol,
) -> *const spdk_reduce_vol_params {
    // Safety (Rust): `vol` is NULL or a live handle.
    guard("spdk_reduce_vol_get_params", ptr::null(), || {
        // SAFETY: NULL or live, per the caller.
        unsafe { vol.as_ref() }.map_or(ptr::null(), |h| h.params.as_ptr())
    })
}

/// The path of the volume's pm file, NUL-terminated, or NULL for a NULL `vol`: the
/// bytes as stored on the device (not necessarily UTF-8). Valid until the volume is
/// unloaded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_pm_path(vol: *const spdk_reduce_vol) -> *const c_char {
    // Safety (Rust): `vol` is NULL or a live handle.
    guard("spdk_reduce_vol_get_pm_path", ptr::null(), || {
        // SAFETY: NULL or live, per the caller.
        unsafe { vol.as_ref() }.map_or(ptr::null(), |h| h.pm_path.as_ptr())
    })
}

/// Current statistics of the volume, as later SPDK releases report them (see
/// `struct spdk_reduce_vol_info`), and the compression recorded in its superblock, or
/// NULL for a NULL `vol` or on a thread other than the volume's. Valid until the next
/// call of this function on the volume, or until it is unloaded. More statistics:
/// `reduce_vol_get_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_info(
    vol: *const spdk_reduce_vol,
) -> *const spdk_reduce_vol_info {
    // Safety (Rust): `vol` is NULL or a live handle.
    guard("spdk_reduce_vol_get_info", ptr::null(), || {
        // SAFETY: NULL or live, per the caller.
        let Ok(Some(h)) = (unsafe { owned("spdk_reduce_vol_get_info", vol) }) else {
            return ptr::null();
        };
        let compression = h.vol.params().compression;
        h.info.set(spdk_reduce_vol_info {
            allocated_io_units: h.vol.info().allocated_io_units,
            comp_level: compression.level,
            comp_algo: compression.algo.0.into(),
        });
        h.info.as_ptr().cast_const()
    })
}

/// Fill the first `out_size` bytes of `*out` with the volume's statistics (see
/// `struct reduce_vol_stats`). Pass `sizeof(struct reduce_vol_stats)`: a program built
/// against an older, shorter struct gets the members it knows, and bytes beyond the
/// struct this library knows are set to zero. Returns 0, or:
/// - -EINVAL: `vol` or `out` is NULL (with `out_size` not 0);
/// - -EPERM: called on a thread other than the volume's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_vol_get_stats(
    vol: *const spdk_reduce_vol,
    out: *mut reduce_vol_stats,
    out_size: usize,
) -> c_int {
    // Safety (Rust): `vol` is NULL or a live handle; `out` NULL or `out_size` writable
    // bytes.
    const WHAT: &str = "reduce_vol_get_stats";
    guard(WHAT, -libc::EIO, || {
        // SAFETY: NULL or live, per the caller.
        let h = match unsafe { owned(WHAT, vol) } {
            Ok(Some(h)) => h,
            Ok(None) => return errno(refuse(WHAT, "vol is NULL")),
            Err(e) => return errno(e),
        };
        if out_size == 0 {
            return 0;
        }
        if out.is_null() {
            return errno(refuse(WHAT, "out is NULL"));
        }
        let stats = reduce_vol_stats::from(h.vol.stats());
        // SAFETY: the struct is plain `u64`s without padding; reading its bytes is
        // reading initialized memory.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const stats).cast::<u8>(),
                size_of::<reduce_vol_stats>(),
            )
        };
        let n = out_size.min(bytes.len());
        // SAFETY: `out` holds `out_size` writable bytes, per the caller; ours are
        // disjoint from it.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), n);
            ptr::write_bytes(out.cast::<u8>().add(n), 0, out_size - n);
        }
        0
    })
}

/// Keep the contents of up to `chunks` recently read or written chunks of the volume
/// in memory, so that a chunk read or written in pieces (4 KiB reads or writes of a
/// 16 KiB chunk, say) is read from the backing device and decompressed once; 0 keeps
/// none. The default is 16 chunks, or fewer when chunks are larger than 16 KiB (256
/// KiB in all, and at least one chunk). Memory is taken only as chunks are read or
/// written, up to `chunks` times `chunk_size`. Writes and unmaps of a chunk take it out
/// of the cache when they start, and the new content they leave there serves reads
/// only once committed, so a read never returns stale data, whether they succeed or
/// fail; `reduce_vol_check` reads from the device. Setting the size empties the cache.
/// Returns 0, or:
/// - -EINVAL: `vol` is NULL;
/// - -EPERM: called on a thread other than the volume's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_vol_set_cache_chunks(
    vol: *mut spdk_reduce_vol,
    chunks: u64,
) -> c_int {
    // Safety (Rust): `vol` is NULL or a live handle.
    const WHAT: &str = "reduce_vol_set_cache_chunks";
    guard(WHAT, -libc::EIO, || {
        // SAFETY: NULL or live, per the caller.
        let vol = unsafe { volume(WHAT, vol) };
        status(vol.and_then(|vol| vol.set_cache_chunks(chunks)))
    })
}

/// Print the volume's geometry, recorded compression, pm layout and statistics (as
/// `reduce_vol_get_stats` reports them) to stderr (nothing for a NULL `vol`, or on a
/// thread other than the volume's).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_print_info(vol: *mut spdk_reduce_vol) {
    // Safety (Rust): `vol` is NULL or a live handle.
    guard("spdk_reduce_vol_print_info", (), || {
        // SAFETY: NULL or live, per the caller.
        let Ok(Some(h)) = (unsafe { owned("spdk_reduce_vol_print_info", vol) }) else {
            return;
        };
        eprint!("{}", h.vol.describe());
    })
}
