//! `reduce_vol_check`: the volume checker for C callers.

use std::ffi::{c_char, c_void};

use super::types::{reduce_vol_check_complete, reduce_vol_check_report};
use super::{boundary::guard, spdk_reduce_vol, volume};
use crate::check::Report;
use crate::error::{Errno, Result};

impl From<&Report> for reduce_vol_check_report {
    fn from(r: &Report) -> reduce_vol_check_report {
        let mut out = reduce_vol_check_report {
            chunks_in_use: r.chunks_in_use,
            io_units_referenced: r.io_units_referenced,
            chunks_read: r.chunks_read,
            problems: r.problems.len() as u64,
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

/// Check a loaded volume's invariants: map entries in range, each io unit and chunk
/// map referenced once, the free maps consistent with the maps, and every chunk in use
/// reading back with a valid checksum. Nothing may be in flight (`-EBUSY`).
///
/// # Safety
/// `vol` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_vol_check(
    vol: *mut spdk_reduce_vol,
    cb_fn: reduce_vol_check_complete,
    cb_arg: *mut c_void,
) {
    guard("reduce_vol_check", (), || {
        let Some(cb_fn) = cb_fn else { return };
        let done = move |result: Result<Report>| {
            let (errno, report) = match result {
                Ok(report) => (report.errno().map_or(0, Errno::negated), report),
                Err(e) => (e.negated(), Report::default()),
            };
            let c_report = reduce_vol_check_report::from(&report);
            // SAFETY: the caller's callback with its own argument; the report lives
            // for the call.
            unsafe { cb_fn(cb_arg, errno, &c_report) }
        };
        // SAFETY: NULL or live, per the caller.
        match unsafe { volume(vol) } {
            Some(volume) => volume.check(done),
            None => done(Err(Errno::EINVAL.into())),
        }
    })
}
