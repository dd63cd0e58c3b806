//! The C ABI of `spdk/reduce.h`: the only place with `extern "C"`.
//!
//! Handles are opaque boxes. Every function checks its pointers, converts callbacks
//! once into the core's traits, runs inside the panic [`boundary`], and reports errors
//! as `-errno` through the caller's callback. A callback that is NULL cannot be told
//! anything, so such a call does nothing.

#![allow(non_camel_case_types)]

mod boundary;
mod check;
mod codec;
mod device;
mod iov;
pub mod types;

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use libc::iovec;

use boundary::{guard, status};
use device::CDevice;
use iov::{CUserIo, callback};
use types::*;

use crate::error::{Errno, Result};
use crate::pm::FileStore;
use crate::vol::{Backend, InitPlan, Op, Volume};

/// An open volume, as C holds it.
pub struct spdk_reduce_vol {
    vol: Volume,
    params: spdk_reduce_vol_params,
    info: Cell<spdk_reduce_vol_info>,
    pm_path: CString,
}

impl spdk_reduce_vol {
    fn boxed(vol: Volume) -> *mut spdk_reduce_vol {
        let params = vol.params().into();
        let pm_path = CString::new(vol.pm_path()).unwrap_or_default();
        Box::into_raw(Box::new(spdk_reduce_vol {
            vol,
            params,
            info: Cell::default(),
            pm_path,
        }))
    }
}

fn backend(dev: CDevice) -> Backend {
    Backend {
        backing: Box::new(dev),
        codec: Box::new(dev),
        store: Box::new(FileStore),
    }
}

/// The volume behind a handle, cloned so no reference to the handle outlives this
/// line: an unload run from inside the call may free it.
///
/// # Safety
/// `vol` is NULL or a live handle.
unsafe fn volume(vol: *const spdk_reduce_vol) -> Option<Volume> {
    // SAFETY: NULL or live, per the caller.
    unsafe { vol.as_ref() }.map(|h| h.vol.clone())
}

/// A completion for init and load: hands C a new handle, or NULL and the error.
fn opened(
    cb_fn: unsafe extern "C" fn(*mut c_void, *mut spdk_reduce_vol, c_int),
    cb_arg: *mut c_void,
) -> impl FnOnce(Result<Volume>) {
    move |result| {
        let (handle, errno) = match result {
            Ok(vol) => (spdk_reduce_vol::boxed(vol), 0),
            Err(e) => (ptr::null_mut(), e.negated()),
        };
        // SAFETY: the caller's callback with its own argument.
        unsafe { cb_fn(cb_arg, handle, errno) }
    }
}

/// Get the UUID of a loaded or initialized volume (NULL for a NULL volume).
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_uuid(vol: *mut spdk_reduce_vol) -> *const spdk_uuid {
    // SAFETY: NULL or live, per the caller.
    unsafe { vol.as_ref() }.map_or(ptr::null(), |h| &h.params.uuid)
}

/// Initialize a new compressed volume on `backing_dev`, with its pm file in
/// `pm_file_dir`. `params->vol_size` must be 0; on return it holds the computed size,
/// and a zero uuid is replaced by a random one. Completes with the new volume, or NULL
/// and a negative errno (nothing is left behind).
///
/// # Safety
/// Pointers are NULL or valid; `backing_dev` outlives the volume.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_init(
    params: *mut spdk_reduce_vol_params,
    backing_dev: *mut spdk_reduce_backing_dev,
    pm_file_dir: *const c_char,
    cb_fn: spdk_reduce_vol_op_with_handle_complete,
    cb_arg: *mut c_void,
) {
    guard("spdk_reduce_vol_init", (), || {
        let Some(cb_fn) = cb_fn else { return };
        let done = opened(cb_fn, cb_arg);
        // SAFETY: NULL or valid, per the caller.
        let prepared = unsafe { prepare_init(params, backing_dev, pm_file_dir) };
        match prepared {
            Ok((plan, dev)) => {
                // Like the original, the caller's params show the final uuid and size.
                // SAFETY: checked non-NULL in prepare_init.
                unsafe { *params = plan.params.into() };
                Volume::init(plan, backend(dev), done);
            }
            Err(e) => done(Err(e)),
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
    // SAFETY: NULL or valid, per the caller.
    let params = unsafe { params.as_ref() }.ok_or(Errno::EINVAL)?;
    // SAFETY: as above.
    let dev = unsafe { CDevice::new(backing_dev) }?;
    if pm_file_dir.is_null() {
        return Err(Errno::EINVAL.into());
    }
    // SAFETY: non-NULL and NUL-terminated, per the caller.
    let dir = unsafe { CStr::from_ptr(pm_file_dir) }
        .to_str()
        .map_err(|_| Errno::EINVAL)?;
    use crate::backing::BackingDevice;
    let plan = InitPlan::new(params.into(), dev.blocklen(), dev.blockcnt(), dir)?;
    Ok((plan, dev))
}

/// Load the compressed volume on `backing_dev`.
///
/// # Safety
/// `backing_dev` is NULL or valid and outlives the volume.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_load(
    backing_dev: *mut spdk_reduce_backing_dev,
    cb_fn: spdk_reduce_vol_op_with_handle_complete,
    cb_arg: *mut c_void,
) {
    guard("spdk_reduce_vol_load", (), || {
        let Some(cb_fn) = cb_fn else { return };
        let done = opened(cb_fn, cb_arg);
        // SAFETY: NULL or valid, per the caller.
        match unsafe { CDevice::new(backing_dev) } {
            Ok(dev) => Volume::load(backend(dev), done),
            Err(e) => done(Err(e)),
        }
    })
}

/// Unload a volume. `-EBUSY` while I/O is outstanding (the volume stays loaded);
/// on success the handle is freed before `cb_fn` runs.
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_unload(
    vol: *mut spdk_reduce_vol,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    guard("spdk_reduce_vol_unload", (), || {
        let Some(cb_fn) = cb_fn else { return };
        // SAFETY: NULL or live, per the caller.
        let Some(volume) = (unsafe { volume(vol) }) else {
            // SAFETY: the caller's callback with its own argument.
            return unsafe { cb_fn(cb_arg, -libc::EINVAL) };
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

/// Destroy the volume on `backing_dev`: load it, clear its signature, remove its pm
/// file. A device without a volume gets `-EILSEQ` and is left untouched.
///
/// # Safety
/// `backing_dev` is NULL or valid for the duration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_destroy(
    backing_dev: *mut spdk_reduce_backing_dev,
    cb_fn: spdk_reduce_vol_op_complete,
    cb_arg: *mut c_void,
) {
    guard("spdk_reduce_vol_destroy", (), || {
        let Some(cb_fn) = cb_fn else { return };
        // SAFETY: the caller's callback with its own argument.
        let done = move |result| unsafe { cb_fn(cb_arg, status(result)) };
        // SAFETY: NULL or valid, per the caller.
        match unsafe { CDevice::new(backing_dev) } {
            Ok(dev) => Volume::destroy(backend(dev), done),
            Err(e) => done(Err(e)),
        }
    })
}

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
    guard(what, (), || {
        let Some(cb_fn) = callback(cb_fn) else { return };
        // SAFETY: NULL or live, per the caller.
        let Some(volume) = (unsafe { volume(vol) }) else {
            // SAFETY: the caller's callback with its own argument.
            return unsafe { cb_fn(cb_arg, -libc::EINVAL) };
        };
        // SAFETY: the iovecs are valid until completion, per the caller.
        match unsafe { CUserIo::new(iov, iovcnt, cb_fn, cb_arg) } {
            Ok(io) => volume.submit(op, offset, length, Box::new(io)),
            // An empty request succeeds whatever its iovecs, as in the original.
            Err((io, _)) if length == 0 => volume.submit(op, offset, 0, Box::new(io)),
            Err((io, e)) => volume.reject(Box::new(io), e),
        }
    })
}

/// Read `length` logical blocks at `offset` (in logical blocks) into `iov`. The range
/// must lie within one chunk and `iov` must hold exactly `length` blocks.
///
/// # Safety
/// `vol` NULL or live; the iovecs valid until completion.
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
    // SAFETY: forwarded from the caller.
    unsafe {
        submit(
            "spdk_reduce_vol_readv",
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
}

/// Write `length` logical blocks at `offset` from `iov`; same rules as readv.
///
/// # Safety
/// `vol` NULL or live; the iovecs valid until completion.
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
    // SAFETY: forwarded from the caller.
    unsafe {
        submit(
            "spdk_reduce_vol_writev",
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
}

/// The volume's parameters (NULL for a NULL volume).
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_params(
    vol: *mut spdk_reduce_vol,
) -> *const spdk_reduce_vol_params {
    // SAFETY: NULL or live, per the caller.
    unsafe { vol.as_ref() }.map_or(ptr::null(), |h| &h.params)
}

/// The path of the volume's pm file (NULL for a NULL volume).
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_pm_path(vol: *const spdk_reduce_vol) -> *const c_char {
    // SAFETY: NULL or live, per the caller.
    unsafe { vol.as_ref() }.map_or(ptr::null(), |h| h.pm_path.as_ptr())
}

/// Current statistics of the volume (NULL for a NULL volume); valid until the next
/// call or unload.
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_get_info(
    vol: *const spdk_reduce_vol,
) -> *const spdk_reduce_vol_info {
    guard("spdk_reduce_vol_get_info", ptr::null(), || {
        // SAFETY: NULL or live, per the caller.
        let Some(h) = (unsafe { vol.as_ref() }) else {
            return ptr::null();
        };
        h.info.set(spdk_reduce_vol_info {
            allocated_io_units: h.vol.info().allocated_io_units,
        });
        h.info.as_ptr().cast_const()
    })
}

/// Print the volume's geometry and pm layout to stderr.
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spdk_reduce_vol_print_info(vol: *mut spdk_reduce_vol) {
    guard("spdk_reduce_vol_print_info", (), || {
        // SAFETY: NULL or live, per the caller.
        let Some(h) = (unsafe { vol.as_ref() }) else {
            return;
        };
        eprint!("{}", h.vol.describe());
    })
}
