//! How a finished backing or codec operation finds its way back to the volume that
//! issued it, without the device and codec layers knowing what a volume is: the volume
//! hands out a [`Receiver`] and a [`Token`] with each operation, and the completion
//! handle gives both back.

use std::rc::Rc;

use crate::error::Result;

/// Which outstanding operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A read or write request (its slot in the request table).
    Request(usize),
    /// The one init, load or destroy step in flight.
    Lifecycle,
}

/// Takes completions of operations carrying an `Io` and a result of `T`. Implemented by
/// the volume's shared state; called on the volume's thread, possibly from inside the
/// call that started the operation.
pub(crate) trait Receiver<Io, T> {
    fn receive(self: Rc<Self>, token: Token, io: Io, result: Result<T>);
}
