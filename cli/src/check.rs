//! `reduce check`: the volume checker. Exit 0 clean, 1 problems found, 2 could not
//! check.

use reduce::{Errno, Problem};

use crate::args::Check;
use crate::fail::{Failure, errno_text, reason};
use crate::volume::{Loaded, Refusal};

pub fn run(args: &Check) -> Result<(), Failure> {
    let file = &args.file;
    let loaded = match Loaded::open(file) {
        Ok(loaded) => loaded,
        // The volume is there but its metadata is not: that is what a check finds.
        Err(refusal @ Refusal::PmFile { .. }) => {
            return Err(refusal.failure(file).into_problems());
        }
        Err(refusal) => return Err(refusal.failure(file)),
    };
    if let Err(failure) = loaded.need_codec(file) {
        loaded.unload(file)?;
        return Err(failure);
    }
    let chunk_size = u64::from(loaded.vol.params().chunk_size);
    let checked = loaded.vol.check();
    loaded.unload(file)?;
    let report = checked
        .map_err(|e| Failure::new(format!("{}: checking: {}", file.display(), reason(&e))))?;
    say!(
        "{}: {} chunks in use, {} io units referenced, {} chunks read back",
        file.display(),
        report.chunks_in_use,
        report.io_units_referenced,
        report.chunks_read
    );
    for problem in &report.problems {
        say!("  {}", describe(problem, chunk_size));
    }
    if report.problems_left_out > 0 {
        say!("  ... and {} more, not listed", report.problems_left_out);
    }
    match report.problem_count() {
        0 => {
            say!("{}: clean", file.display());
            Ok(())
        }
        n => Err(Failure::problems(format!(
            "{}: {n} problem{} found",
            file.display(),
            if n == 1 { "" } else { "s" }
        ))),
    }
}

/// A problem in words; a chunk that does not read back says where it is and the
/// errno's text.
fn describe(problem: &Problem, chunk_size: u64) -> String {
    match problem {
        Problem::Unreadable { chunk, errno } => format!(
            "chunk {chunk} (volume bytes {}..{}): reading it back failed: {}",
            chunk * chunk_size,
            (chunk + 1) * chunk_size,
            errno_text(Errno(-errno))
        ),
        other => other.to_string(),
    }
}
