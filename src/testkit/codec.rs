//! A codec test double: wraps a [`SyncCodec`], completes inside the call or from
//! [`TestCodec::poll_one`], and fails chosen operations — the codec side of the fault
//! injection that [`MemBacking`](super::MemBacking) does for the device.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::backing::{FaultFn, Mode};
use crate::codec::{Codec, CodecDone, CodecIo, SyncCodec};
use crate::error::Result;

struct Pending {
    io: CodecIo,
    done: CodecDone,
    result: Result<usize>,
}

struct State {
    mode: Mode,
    pending: VecDeque<Pending>,
    /// Arguments: is_compress, the operation's number.
    fault: Option<FaultFn>,
    ops: u64,
}

/// Clones share one queue and one fault function.
#[derive(Clone)]
pub struct TestCodec {
    codec: Rc<dyn SyncCodec>,
    state: Rc<RefCell<State>>,
}

impl TestCodec {
    pub fn new(codec: impl SyncCodec + 'static, mode: Mode) -> TestCodec {
        TestCodec {
            codec: Rc::new(codec),
            state: Rc::new(RefCell::new(State {
                mode,
                pending: VecDeque::new(),
                fault: None,
                ops: 0,
            })),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.borrow_mut().mode = mode;
    }

    /// `fault(is_compress, op)` returning `Some(errno)` fails that operation.
    pub fn set_fault(&self, fault: Option<FaultFn>) {
        self.state.borrow_mut().fault = fault;
    }

    /// Removes the fault function and returns it, to put back later.
    pub fn take_fault(&self) -> Option<FaultFn> {
        self.state.borrow_mut().fault.take()
    }

    pub fn pending(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// Completes the oldest pending operation; false when none is pending.
    pub fn poll_one(&self) -> bool {
        let next = self.state.borrow_mut().pending.pop_front();
        match next {
            Some(p) => {
                p.done.complete(p.io, p.result);
                true
            }
            None => false,
        }
    }

    fn run(&self, compress: bool, mut io: CodecIo, done: CodecDone) {
        let mut s = self.state.borrow_mut();
        let op = s.ops;
        s.ops += 1;
        let injected = s.fault.as_mut().and_then(|f| f(compress, op));
        let result = match injected {
            Some(e) => Err(e.into()),
            None if compress => self.codec.compress_buf(&io.src[..io.src_len], &mut io.dst),
            None => self
                .codec
                .decompress_buf(&io.src[..io.src_len], &mut io.dst),
        };
        let p = Pending { io, done, result };
        if s.mode == Mode::Deferred {
            s.pending.push_back(p);
        } else {
            drop(s);
            p.done.complete(p.io, p.result);
        }
    }
}

impl Codec for TestCodec {
    fn compress(&self, io: CodecIo, done: CodecDone) {
        self.run(true, io, done);
    }

    fn decompress(&self, io: CodecIo, done: CodecDone) {
        self.run(false, io, done);
    }
}
