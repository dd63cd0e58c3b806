//! A codec test double: wraps a [`SyncCodec`], completes inside the call or from
//! [`TestCodec::poll_one`], fails chosen operations, and misbehaves as a buggy codec
//! would (a completion delivered twice, mangled buffers or counts) — the codec side of
//! the fault injection that [`MemBacking`](super::MemBacking) does for the device.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::backing::{DuplicateFn, FaultFn, Mode};
use crate::codec::{Codec, CodecDone, CodecIo, SyncCodec};
use crate::error::Result;

/// Mangles what an operation hands back (is_compress, operation number, the operation,
/// its result), as a codec with a bug might.
pub type CodecTamperFn = Box<dyn FnMut(bool, u64, &mut CodecIo, &mut Result<usize>)>;

struct Pending {
    io: CodecIo,
    done: CodecDone,
    result: Result<usize>,
    /// Deliver a second time (a copy, later in [`Mode::Deferred`]).
    twice: bool,
}

struct State {
    mode: Mode,
    pending: VecDeque<Pending>,
    /// Arguments: is_compress, the operation's number.
    fault: Option<FaultFn>,
    duplicate: Option<DuplicateFn>,
    tamper: Option<CodecTamperFn>,
    duplicates: u64,
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
                duplicate: None,
                tamper: None,
                duplicates: 0,
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

    /// Delivers the completions `duplicate(is_compress, op)` picks twice, as
    /// [`MemBacking::set_duplicate`](super::MemBacking::set_duplicate) does.
    pub fn set_duplicate(&self, duplicate: Option<DuplicateFn>) {
        self.state.borrow_mut().duplicate = duplicate;
    }

    /// Second deliveries made so far.
    pub fn duplicates(&self) -> u64 {
        self.state.borrow().duplicates
    }

    /// Mangles what operations hand back (see [`CodecTamperFn`]).
    pub fn set_tamper(&self, tamper: Option<CodecTamperFn>) {
        self.state.borrow_mut().tamper = tamper;
    }

    /// Operations started so far: the number the next one gets.
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    pub fn pending(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// Completes the oldest pending operation; false when none is pending.
    pub fn poll_one(&self) -> bool {
        let next = self.state.borrow_mut().pending.pop_front();
        match next {
            Some(p) => {
                self.deliver(p);
                true
            }
            None => false,
        }
    }

    /// Completes `p`, and its second delivery when it gets one: right away, or queued.
    fn deliver(&self, p: Pending) {
        let echo = p.twice.then(|| Pending {
            io: CodecIo {
                src: p.io.src.to_vec().into(),
                src_len: p.io.src_len,
                dst: p.io.dst.to_vec().into(),
            },
            done: CodecDone {
                receiver: p.done.receiver.clone(),
                token: p.done.token,
            },
            result: p.result.clone(),
            twice: false,
        });
        let mut s = self.state.borrow_mut();
        s.duplicates += u64::from(echo.is_some());
        // Deferred: queued first, so it comes before whatever this completion sets off.
        let echo = match echo {
            Some(echo) if s.mode == Mode::Deferred => {
                s.pending.push_back(echo);
                None
            }
            other => other,
        };
        drop(s);
        p.done.complete(p.io, p.result);
        if let Some(echo) = echo {
            echo.done.complete(echo.io, echo.result);
        }
    }

    fn run(&self, compress: bool, mut io: CodecIo, done: CodecDone) {
        let mut s = self.state.borrow_mut();
        let op = s.ops;
        s.ops += 1;
        let injected = s.fault.as_mut().and_then(|f| f(compress, op));
        let mut result = match injected {
            Some(e) => Err(e.into()),
            None if compress => self.codec.compress_buf(&io.src[..io.src_len], &mut io.dst),
            None => self
                .codec
                .decompress_buf(&io.src[..io.src_len], &mut io.dst),
        };
        if let Some(tamper) = &mut s.tamper {
            tamper(compress, op, &mut io, &mut result);
        }
        let twice = s.duplicate.as_mut().is_some_and(|f| f(compress, op));
        let p = Pending {
            io,
            done,
            result,
            twice,
        };
        if s.mode == Mode::Deferred {
            s.pending.push_back(p);
        } else {
            drop(s);
            self.deliver(p);
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
