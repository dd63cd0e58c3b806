//! Error values. The whole library speaks errno, as the original does: an [`Error`]
//! carries the code ([`Errno`], a positive errno value; the C boundary reports `-errno`)
//! and, when the library knows it, a sentence saying what failed: which check refused
//! a load, which chunk read back wrong.

use std::fmt;

use crate::log::{self, Level};

/// A positive errno value (`EINVAL`, `ENOSPC`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// A bad argument or parameter.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// No valid volume: a bad signature, superblock or pm file.
    pub const EILSEQ: Errno = Errno(libc::EILSEQ);
    /// No free io unit or chunk map; a compressed chunk that does not fit.
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    /// Stored data that does not read back; a device's failure.
    pub const EIO: Errno = Errno(libc::EIO);
    /// Requests outstanding, or a volume already open.
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// The pm file exists already.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// The volume is not loaded.
    pub const ENODEV: Errno = Errno(libc::ENODEV);

    /// The value as the C API reports it: `-errno`.
    pub fn negated(self) -> i32 {
        -self.0
    }

    /// Reads a status as a C completion reports it: 0 is success, a negative value is
    /// `-errno`. A positive or out-of-range value is not an errno, so it becomes `EIO`.
    pub fn from_status(status: i32) -> Result<()> {
        match status {
            0 => Ok(()),
            s if s < 0 && s > -4096 => Err(Errno(-s).into()),
            _ => Err(Errno::EIO.into()),
        }
    }

    /// The errno of an OS error, `EIO` when it carries none.
    pub fn from_io(err: &std::io::Error) -> Errno {
        Errno(err.raw_os_error().filter(|&e| e > 0).unwrap_or(libc::EIO))
    }
}

impl From<std::io::Error> for Errno {
    fn from(err: std::io::Error) -> Errno {
        Errno::from_io(&err)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

/// An errno and what failed, in words.
///
/// Two errors are equal when their errnos are: the detail is for people (logs,
/// messages), not for deciding what to do, so it never changes a comparison. An error
/// also compares equal to its bare [`Errno`].
#[derive(Clone)]
pub struct Error {
    errno: Errno,
    /// `None` rather than an empty string, so an error made from a bare errno (the
    /// common case on I/O paths) allocates nothing.
    detail: Option<Box<str>>,
}

impl Error {
    /// An error of `errno` saying what failed (an empty `detail` says nothing).
    pub fn new(errno: Errno, detail: impl Into<String>) -> Error {
        let detail: String = detail.into();
        Error {
            errno,
            detail: (!detail.is_empty()).then(|| detail.into_boxed_str()),
        }
    }

    /// The error's errno.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// What failed; empty when only the errno is known.
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or("")
    }

    /// The value as the C API reports it: `-errno`.
    pub fn negated(&self) -> i32 {
        self.errno.negated()
    }

    /// The same error, said to have happened while doing `what`: "what: detail".
    pub(crate) fn context(self, what: impl fmt::Display) -> Error {
        let detail = match self.detail {
            Some(detail) => format!("{what}: {detail}"),
            None => what.to_string(),
        };
        Error::new(self.errno, detail)
    }

    /// Emits the error through the log sink, so a C caller, who sees only the errno,
    /// can still learn why. Returns it for the caller.
    pub(crate) fn logged(self) -> Error {
        log::emit(Level::Error, format_args!("{self}"));
        self
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Error {
        Error {
            errno,
            detail: None,
        }
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.errno == other.errno
    }
}

impl Eq for Error {}

impl PartialEq<Errno> for Error {
    fn eq(&self, other: &Errno) -> bool {
        self.errno == *other
    }
}

impl PartialEq<Error> for Errno {
    fn eq(&self, other: &Error) -> bool {
        *self == other.errno
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "Error({:?}, {detail:?})", self.errno),
            None => write!(f, "Error({:?})", self.errno),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{detail}: {}", self.errno),
            None => write!(f, "{}", self.errno),
        }
    }
}

impl std::error::Error for Error {}

/// The library's result: a value or an [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_the_detail_before_the_errno() {
        let e = Error::new(Errno::EIO, "checksum mismatch in chunk 3");
        assert_eq!(e.detail(), "checksum mismatch in chunk 3");
        assert_eq!(
            e.to_string(),
            format!("checksum mismatch in chunk 3: {}", Errno::EIO)
        );
        let bare = Error::from(Errno::EIO);
        assert_eq!(bare.detail(), "");
        assert_eq!(bare.to_string(), Errno::EIO.to_string());
        assert_eq!(Error::new(Errno::EIO, "").detail(), "");
    }

    #[test]
    fn equality_is_the_errno_alone() {
        let e = Error::new(Errno::EILSEQ, "no signature");
        assert_eq!(e, Error::from(Errno::EILSEQ));
        assert_eq!(e, Errno::EILSEQ);
        assert_eq!(Errno::EILSEQ, e);
        assert_ne!(e, Errno::EIO);
        assert_eq!(e.errno(), Errno::EILSEQ);
        assert_eq!(e.negated(), -libc::EILSEQ);
    }

    #[test]
    fn context_goes_in_front() {
        let e = Error::new(Errno::EILSEQ, "wrong size").context("pm file /pm/x");
        assert_eq!(e.detail(), "pm file /pm/x: wrong size");
        assert_eq!(
            Error::from(Errno::ENOENT).context("pm file /pm/x").detail(),
            "pm file /pm/x"
        );
    }
}
