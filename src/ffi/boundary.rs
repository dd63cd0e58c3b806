//! The rules of the C boundary, each in one place:
//!
//! - every exported function and every trampoline C calls runs inside [`guard`], so a
//!   panic never crosses into C;
//! - a call whose callback is NULL cannot report, so it does nothing, and says so in
//!   the log ([`callback`]);
//! - what the boundary refuses itself (a NULL argument, bad iovecs) is logged and
//!   becomes `EINVAL` ([`refuse`]);
//! - statuses cross in both directions only through [`errno`], [`status`],
//!   [`codec_status`], [`io_result`] and [`codec_result`];
//! - a volume belongs to the thread that made it: a call on another thread is refused
//!   with `EPERM` ([`on_owner_thread`]).

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::{self, ThreadId};

use crate::error::{Errno, Error, Result};
use crate::log::{Level, emit};

/// Runs `f`, stopping a panic before it reaches C. A panic is a bug in this library;
/// it is logged and the call returns `fallback`.
pub(crate) fn guard<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        emit(
            Level::Error,
            format_args!("{what}: internal error (panic); operation abandoned"),
        );
        fallback
    })
}

/// The caller's callback (the argument `name`), or `None` (logged) when it is NULL:
/// then the call cannot report anything, so it does nothing.
pub(crate) fn callback<F>(what: &str, name: &str, cb_fn: Option<F>) -> Option<F> {
    if cb_fn.is_none() {
        emit(
            Level::Error,
            format_args!("{what}: {name} is NULL, so the call cannot report; ignored"),
        );
    }
    cb_fn
}

/// Refuses a call for `why` (which argument is wrong, in C terms): logged, and the
/// error the caller's callback gets (`EINVAL`).
pub(crate) fn refuse(what: &str, why: &str) -> Error {
    Error::new(Errno::EINVAL, format!("{what}: {why}")).logged()
}

thread_local! {
    static THIS_THREAD: ThreadId = thread::current().id();
}

/// The calling thread, cheaply: every read or write checks it.
pub(crate) fn this_thread() -> ThreadId {
    THIS_THREAD.with(|id| *id)
}

/// Refuses (`EPERM`, logged) a call of `what` on a volume owned by `owner` when it is
/// made on another thread: a volume's state is not safe to touch from there.
pub(crate) fn on_owner_thread(what: &str, owner: ThreadId) -> Result<()> {
    if owner == this_thread() {
        return Ok(());
    }
    Err(Error::new(
        Errno(libc::EPERM),
        format!("{what}: called on a thread other than the volume's (which loaded it); refused"),
    )
    .logged())
}

/// A failure as C sees it: `-errno`.
pub(crate) fn errno(e: Error) -> c_int {
    e.negated()
}

/// A result as a C completion status: 0 or `-errno`.
pub(crate) fn status(result: Result<()>) -> c_int {
    result.map_or_else(errno, |()| 0)
}

/// A backing device's completion status: 0, or `-errno` (anything else is `EIO`).
pub(crate) fn io_result(status: c_int) -> Result<()> {
    Errno::from_status(status)
}

/// A codec's completion status: the bytes it wrote, or `-errno`.
pub(crate) fn codec_result(status: c_int) -> Result<usize> {
    match usize::try_from(status) {
        Ok(n) => Ok(n),
        Err(_) => io_result(status).map(|()| 0),
    }
}

/// A codec's result as its completion status: the bytes written, or `-errno`.
pub(crate) fn codec_status(result: Result<usize>) -> c_int {
    match result.and_then(|n| c_int::try_from(n).map_err(|_| Error::from(Errno::EINVAL))) {
        Ok(n) => n,
        Err(e) => errno(e),
    }
}
