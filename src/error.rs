//! Error values. The whole library speaks errno, as the original does: the core uses
//! [`Errno`] (a positive errno value) and the C boundary turns it into `-errno`.

use std::fmt;

/// A positive errno value (`EINVAL`, `ENOSPC`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EILSEQ: Errno = Errno(libc::EILSEQ);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
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
            s if s < 0 && s > -4096 => Err(Errno(-s)),
            _ => Err(Errno::EIO),
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

pub type Result<T> = std::result::Result<T, Errno>;
