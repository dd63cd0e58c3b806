//! `reduce_set_log_fn`: the log sink for C callers, on top of [`crate::log`].

use std::ffi::{CString, c_int, c_void};
use std::sync::Arc;

use super::boundary::guard;
use super::types::{FnOf, REDUCE_LOG_ERROR, REDUCE_LOG_WARN, reduce_log_fn};
use crate::log::{Level, Sink, set_sink};

/// The caller's `ctx`, handed back untouched.
#[derive(Clone, Copy)]
struct Ctx(*mut c_void);

// SAFETY: the library never dereferences `ctx`; it only passes it back to the caller's
// log function, which the header tells may be called from any thread that runs a
// volume (and from several at once).
unsafe impl Send for Ctx {}
// SAFETY: as above; `Ctx` is never written after construction.
unsafe impl Sync for Ctx {}

impl Ctx {
    fn get(self) -> *mut c_void {
        self.0
    }
}

fn sink(log_fn: FnOf<reduce_log_fn>, ctx: Ctx) -> Sink {
    Arc::new(move |level: Level, msg: &str| {
        let level: c_int = match level {
            Level::Error => REDUCE_LOG_ERROR,
            Level::Warn => REDUCE_LOG_WARN,
        };
        // Messages are our own text; a NUL inside one would cut it short, not fail it.
        let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller's function with its own `ctx`; `msg` outlives the call.
        unsafe { log_fn(ctx.get(), level, msg.as_ptr()) }
    })
}

/// Send the library's messages to `log_fn`: why an init or load was refused (which
/// check failed), each -EIO, each call refused for its arguments (a NULL pointer, a
/// bad iovec array, a NULL callback), a completion the library ignored. Each message
/// is one call, with `ctx` passed back unchanged; its `msg` is valid during that call
/// only. Messages come on the thread that hit the condition, so with volumes on
/// several threads `log_fn` may run on several at once.
///
/// The setting is process-wide and may be changed from any thread at any time. With
/// `log_fn` NULL the default is restored: quiet, unless the environment variable
/// `REDUCE_LOG` is set, then each message goes to stderr.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_set_log_fn(log_fn: reduce_log_fn, ctx: *mut c_void) {
    // Safety (Rust): `log_fn` is NULL or a function that stays callable, from any
    // thread, with `ctx`, until it is replaced.
    guard("reduce_set_log_fn", (), || {
        set_sink(log_fn.map(|f| sink(f, Ctx(ctx))));
    })
}
