//! How a finished backing or codec operation finds its way back to the volume that
//! issued it, without the device and codec layers knowing what a volume is: the volume
//! hands out a [`Receiver`] and a [`Token`] with each operation, and the completion
//! handle gives both back.
//!
//! A token is checked on receipt, never trusted: a request's token names its slot and
//! the operation's generation there, so a completion delivered twice, or late for an
//! operation the slot has since moved past (even to another operation of the same kind,
//! or another request), is recognised, logged and ignored.

use std::fmt;
use std::rc::Rc;

use crate::error::Result;

/// Which outstanding operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// An operation of a read or write request.
    Request(Ticket),
    /// The one init, load or destroy operation in flight, by its number: a step
    /// takes only its own operation's completion.
    Lifecycle(u64),
}

/// One operation of a request: its slot in the request table, and the slot's
/// generation when the operation was issued. Each operation issued from a slot gets a
/// new generation, so only the completion of the operation the slot waits for matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) slot: usize,
    pub(crate) generation: u64,
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request slot {} (operation {})",
            self.slot, self.generation
        )
    }
}

/// Takes completions of operations carrying an `Io` and a result of `T`. Implemented by
/// the volume's shared state; called on the volume's thread, possibly from inside the
/// call that started the operation.
pub(crate) trait Receiver<Io, T> {
    fn receive(self: Rc<Self>, token: Token, io: Io, result: Result<T>);
}
