//! The panic boundary and errno conversion: every exported function and every
//! trampoline C calls runs inside [`guard`], and every status C sees comes from
//! [`status`].

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Result;

/// Runs `f`, stopping a panic before it reaches C. A panic is a bug in this library;
/// it is reported on stderr and the call returns `fallback`.
pub(crate) fn guard<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        eprintln!("reduce: internal error (panic) in {what}; operation abandoned");
        fallback
    })
}

/// A result as a C completion status: 0 or `-errno`.
pub(crate) fn status(result: Result<()>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => e.negated(),
    }
}
