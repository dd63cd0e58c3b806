//! What a command that fails prints and exits with.
//!
//! Exit codes: 0 done (for `check`: clean), 1 `check` found problems, 2 a usage or
//! operational error (clap exits 2 for usage errors too). Messages name the file and
//! the reason, from the library's error detail and the errno's text; never a panic
//! or a debug dump.

use std::fmt;
use std::process::ExitCode;

use reduce::{Errno, Error};

/// `check` found problems.
pub const PROBLEMS: u8 = 1;
/// Usage or operational error.
pub const FAILED: u8 = 2;

/// A command's failure: the exit code and what to tell the user.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// An operational failure (exit 2).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILED,
            message: message.into(),
            hint: None,
        }
    }

    /// `check` found problems (exit 1), said in `message`.
    pub fn problems(message: impl Into<String>) -> Failure {
        Failure {
            code: PROBLEMS,
            ..Failure::new(message)
        }
    }

    /// The same failure, as problems a check found (exit 1).
    pub fn into_problems(self) -> Failure {
        Failure {
            code: PROBLEMS,
            ..self
        }
    }

    /// Adds what the user can do about it, printed on its own line.
    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// An errno in words, without Rust's " (os error N)".
pub fn errno_text(errno: Errno) -> String {
    let text = errno.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// An error in words: what failed, then the errno's text. `EILSEQ` is the library's
/// "this is not a valid volume", which its C text ("Invalid or incomplete multibyte or
/// wide character") does not say: its detail says it.
pub fn reason(err: &Error) -> String {
    match (err.detail(), err.errno()) {
        ("", Errno::EILSEQ) => "invalid volume data".to_string(),
        ("", errno) => errno_text(errno),
        (detail, Errno::EILSEQ) => detail.to_string(),
        (detail, errno) => format!("{detail}: {}", errno_text(errno)),
    }
}

/// An OS error in words, without Rust's " (os error N)".
pub fn io_reason(err: &std::io::Error) -> String {
    errno_text(Errno::from_io(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(errno_text(Errno::ENOENT), "No such file or directory");
        let e = Error::new(Errno::EIO, "reading block 3");
        assert_eq!(reason(&e), "reading block 3: Input/output error");
        assert_eq!(
            reason(&Error::from(Errno::EBUSY)),
            "Device or resource busy"
        );
        let e = Error::new(Errno::EILSEQ, "no volume signature");
        assert_eq!(reason(&e), "no volume signature");
        assert_eq!(reason(&Error::from(Errno::EILSEQ)), "invalid volume data");
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_reason(&io), "Permission denied");
    }

    #[test]
    fn a_hint_goes_on_its_own_line() {
        let f = Failure::new("vol.img: the volume is in use").hint("stop nbdkit first");
        assert_eq!(
            f.to_string(),
            "vol.img: the volume is in use\nhint: stop nbdkit first"
        );
        assert_eq!(f.code(), ExitCode::from(FAILED));
        assert_eq!(Failure::problems("x").code(), ExitCode::from(PROBLEMS));
    }
}
