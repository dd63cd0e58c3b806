//! A progress bar with throughput for long copies, drawn on stderr when it is a
//! terminal, and the closing summary's numbers.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::size::human;

const TEMPLATE: &str =
    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
}

impl Progress {
    /// A bar for `total` bytes, labelled `what`; none when `quiet`.
    pub fn new(what: &str, total: u64, quiet: bool) -> Progress {
        // indicatif draws nothing on a stderr that is not a terminal.
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress {
            bar,
            start: Instant::now(),
        }
    }

    /// `bytes` more are done.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Removes the bar; returns the time since the start.
    pub fn finish(self) -> Duration {
        self.bar.finish_and_clear();
        self.start.elapsed()
    }
}

/// "1.2 GiB in 3.4 s (361.2 MiB/s)".
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 {
        human((bytes as f64 / secs) as u64)
    } else {
        "-".to_string()
    };
    format!("{} in {secs:.1} s ({per_sec}/s)", human(bytes))
}
