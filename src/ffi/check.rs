//! `reduce_vol_check`: the volume checker for C callers.

use std::ffi::{c_char, c_void};

use super::boundary::{callback, errno, guard};
use super::types::{reduce_vol_check_complete, reduce_vol_check_report};
use super::{spdk_reduce_vol, volume};
use crate::check::Report;
use crate::error::{Errno, Result};

impl From<&Report> for reduce_vol_check_report {
    fn from(r: &Report) -> reduce_vol_check_report {
        let mut out = reduce_vol_check_report {
            chunks_in_use: r.chunks_in_use,
            io_units_referenced: r.io_units_referenced,
            chunks_read: r.chunks_read,
            problems: r.problem_count(),
            first_problem: [0; 256],
        };
        if let Some(p) = r.problems.first() {
            let text = p.to_string();
            let n = text.len().min(out.first_problem.len() - 1);
            for (dst, &src) in out.first_problem.iter_mut().zip(&text.as_bytes()[..n]) {
                *dst = src as c_char;
            }
        }
        out
    }
}

/// Check a loaded volume: map entries in range, each io unit and chunk map referenced
/// once, the free maps consistent with the maps, and every chunk in use reading back
/// with a valid checksum. Nothing may be in flight. `cb_fn` gets the result and a
/// report (see `reduce_vol_check_complete`). With `cb_fn` NULL the call does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_vol_check(
    vol: *mut spdk_reduce_vol,
    cb_fn: reduce_vol_check_complete,
    cb_arg: *mut c_void,
) {
    // Safety (Rust): `vol` is NULL or a live handle.
    const WHAT: &str = "reduce_vol_check";
    guard(WHAT, (), || {
        let Some(cb_fn) = callback(WHAT, "cb_fn", cb_fn) else {
            return;
        };
        let done = move |result: Result<Report>| {
            let (status, report) = match result {
                Ok(report) => (report.errno().map_or(0, Errno::negated), report),
                Err(e) => (errno(e), Report::default()),
            };
            let c_report = reduce_vol_check_report::from(&report);
            // SAFETY: the caller's callback with its own argument; the report lives
            // for the call.
            unsafe { cb_fn(cb_arg, status, &c_report) }
        };
        // SAFETY: NULL or live, per the caller.
        match unsafe { volume(WHAT, vol) } {
            Ok(volume) => volume.check(done),
            Err(e) => done(Err(e)),
        }
    })
}
