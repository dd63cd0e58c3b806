//! An in-memory backing device for tests: completes inside the call or from `poll`,
//! can fail chosen operations, misbehave as a buggy device would (deliver a completion
//! twice, hand back a mangled buffer), and records which writes have completed so a
//! test can cut the power between any two of them. An unmap zeroes its blocks when it
//! completes (so data the volume still needed would fail its checksum), and counts as a
//! write for faults, duplicates and the journal.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use super::journal::{Entry, Journal};
use crate::backing::{BackingDevice, BackingIo, Extent, IoDone};
use crate::error::{Errno, Result};

/// When operations complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inside the read or write call.
    Immediate,
    /// From [`MemBacking::poll`], in submission order.
    Deferred,
}

/// Decides the fate of each operation: `Some(errno)` fails it. Arguments: is_write
/// (true for an unmap too), the operation's number since the device was made.
pub type FaultFn = Box<dyn FnMut(bool, u64) -> Option<Errno>>;

/// Decides which completions are delivered twice: `true` for (is_write, operation
/// number). The second delivery carries a copy of the buffer and changes nothing on the
/// device; it comes right after the first in [`Mode::Immediate`], and in
/// [`Mode::Deferred`] from the back of the queue: after what is pending when the first
/// is delivered, before what that delivery sets off.
pub type DuplicateFn = Box<dyn FnMut(bool, u64) -> bool>;

/// Mangles what an operation hands back (is_write, operation number, the operation), as
/// a device with a bug might: the volume must treat it as its own bug, not crash.
pub type TamperFn = Box<dyn FnMut(bool, u64, &mut BackingIo)>;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Unmap,
}

struct Pending {
    id: u64,
    kind: Kind,
    /// Writes and unmaps: they change the device.
    write: bool,
    io: BackingIo,
    done: IoDone,
    result: Result<()>,
    /// Deliver a second time.
    twice: bool,
    /// This is the second delivery: completes, touches nothing.
    echo: bool,
}

struct State {
    image: Vec<u8>,
    mode: Mode,
    pending: VecDeque<Pending>,
    fault: Option<FaultFn>,
    duplicate: Option<DuplicateFn>,
    tamper: Option<TamperFn>,
    duplicates: u64,
    ops: u64,
    /// Completed writes so far (each write is applied to `image` when it completes).
    writes_completed: u64,
    reads: u64,
    writes: u64,
    /// Completed unmaps' block runs, (lba, lba_count), in completion order.
    unmapped: Vec<(u64, u32)>,
    journal: Option<Journal>,
}

/// A cheap handle: clones share one device.
#[derive(Clone)]
pub struct MemBacking {
    blocklen: u32,
    state: Rc<RefCell<State>>,
}

impl MemBacking {
    pub fn new(blocklen: u32, blockcnt: u64, mode: Mode) -> MemBacking {
        MemBacking::from_image(
            blocklen,
            vec![0; (blockcnt * u64::from(blocklen)) as usize],
            mode,
        )
    }

    /// A device holding `image` (whose length is a multiple of `blocklen`).
    pub fn from_image(blocklen: u32, image: Vec<u8>, mode: Mode) -> MemBacking {
        let state = State {
            image,
            mode,
            pending: VecDeque::new(),
            fault: None,
            duplicate: None,
            tamper: None,
            duplicates: 0,
            ops: 0,
            writes_completed: 0,
            reads: 0,
            writes: 0,
            unmapped: Vec::new(),
            journal: None,
        };
        MemBacking {
            blocklen,
            state: Rc::new(RefCell::new(state)),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.borrow_mut().mode = mode;
    }

    /// Records every write submitted and completed on `journal` from now on.
    pub fn set_journal(&self, journal: Option<Journal>) {
        self.state.borrow_mut().journal = journal;
    }

    pub fn set_fault(&self, fault: Option<FaultFn>) {
        self.state.borrow_mut().fault = fault;
    }

    /// Removes the fault function and returns it, to put back later.
    pub fn take_fault(&self) -> Option<FaultFn> {
        self.state.borrow_mut().fault.take()
    }

    /// Delivers the completions `duplicate` picks twice (see [`DuplicateFn`]).
    pub fn set_duplicate(&self, duplicate: Option<DuplicateFn>) {
        self.state.borrow_mut().duplicate = duplicate;
    }

    /// Second deliveries made so far.
    pub fn duplicates(&self) -> u64 {
        self.state.borrow().duplicates
    }

    /// Mangles what operations hand back (see [`TamperFn`]).
    pub fn set_tamper(&self, tamper: Option<TamperFn>) {
        self.state.borrow_mut().tamper = tamper;
    }

    /// A copy of the device's bytes: what completed writes left.
    pub fn image(&self) -> Vec<u8> {
        self.state.borrow().image.clone()
    }

    /// Overwrites bytes of the device directly (corruption tests).
    pub fn poke(&self, offset: usize, bytes: &[u8]) {
        self.state.borrow_mut().image[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Operations submitted and not yet completed.
    pub fn pending(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// (reads, writes) submitted so far (unmaps not counted).
    pub fn op_counts(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.reads, s.writes)
    }

    /// The block runs of the unmaps completed so far, (lba, lba_count), in order.
    pub fn unmapped(&self) -> Vec<(u64, u32)> {
        self.state.borrow().unmapped.clone()
    }

    /// Empties the record [`MemBacking::unmapped`] returns, keeping its room: a test
    /// counting allocations keeps the record from growing.
    pub fn forget_unmapped(&self) {
        self.state.borrow_mut().unmapped.clear();
    }

    pub fn writes_completed(&self) -> u64 {
        self.state.borrow().writes_completed
    }

    /// Completes the oldest pending operation; false when none is pending.
    pub fn poll_one(&self) -> bool {
        let next = self.state.borrow_mut().pending.pop_front();
        match next {
            Some(p) => {
                self.finish(p);
                true
            }
            None => false,
        }
    }

    /// Completes pending operations until none is left (completions may submit more).
    /// Returns how many completed.
    pub fn poll(&self) -> usize {
        let mut n = 0;
        while self.poll_one() {
            n += 1;
        }
        n
    }

    fn submit(&self, kind: Kind, io: BackingIo, done: IoDone) {
        let mut s = self.state.borrow_mut();
        let op = s.ops;
        s.ops += 1;
        match kind {
            Kind::Read => s.reads += 1,
            Kind::Write => s.writes += 1,
            Kind::Unmap => {}
        }
        let write = kind != Kind::Read;
        let mut result = self.check(&s.image, kind, &io);
        if result.is_ok() {
            if let Some(err) = s.fault.as_mut().and_then(|f| f(write, op)) {
                result = Err(err.into());
            }
        }
        if write && result.is_ok() {
            if let Some(j) = &s.journal {
                j.push(Entry::WriteSubmitted {
                    id: op,
                    runs: self
                        .runs(&io.extents)
                        .map(|(dev, buf)| match kind {
                            Kind::Unmap => (dev.start, vec![0; dev.len()]),
                            _ => (dev.start, io.buf[buf].to_vec()),
                        })
                        .collect(),
                });
            }
        }
        let twice = s.duplicate.as_mut().is_some_and(|f| f(write, op));
        let p = Pending {
            id: op,
            kind,
            write,
            io,
            done,
            result,
            twice,
            echo: false,
        };
        if s.mode == Mode::Deferred {
            s.pending.push_back(p);
        } else {
            drop(s);
            self.finish(p);
        }
    }

    fn check(&self, image: &[u8], kind: Kind, io: &BackingIo) -> Result<()> {
        let bl = self.blocklen as usize;
        for e in &io.extents {
            let len = e.lba_count as usize * bl;
            let start = (e.lba as usize).checked_mul(bl).ok_or(Errno::EIO)?;
            let in_buf = kind == Kind::Unmap || e.buf_offset + len <= io.buf.len();
            if start + len > image.len() || !in_buf {
                return Err(Errno::EIO.into());
            }
        }
        Ok(())
    }

    /// (device byte range, buffer byte range) of each extent of a checked operation.
    fn runs<'a>(
        &self,
        extents: &'a [Extent],
    ) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + 'a {
        let bl = self.blocklen as usize;
        extents.iter().map(move |e| {
            let len = e.lba_count as usize * bl;
            let dev = e.lba as usize * bl;
            (dev..dev + len, e.buf_offset..e.buf_offset + len)
        })
    }

    /// Applies (write) or fills (read) the operation's data, then completes it. The
    /// device's borrow is released before the completion runs, so it may submit more.
    fn finish(&self, mut p: Pending) {
        if p.echo {
            self.state.borrow_mut().duplicates += 1;
            return p.done.complete(p.io, p.result);
        }
        if p.result.is_ok() {
            let mut s = self.state.borrow_mut();
            for (dev, buf) in self.runs(&p.io.extents) {
                match p.kind {
                    Kind::Write => s.image[dev].copy_from_slice(&p.io.buf[buf]),
                    Kind::Read => p.io.buf[buf].copy_from_slice(&s.image[dev]),
                    Kind::Unmap => s.image[dev].fill(0),
                }
            }
            if p.kind == Kind::Unmap {
                let runs = p.io.extents.iter().map(|e| (e.lba, e.lba_count));
                s.unmapped.extend(runs);
            }
            if p.write {
                s.writes_completed += 1;
                if let Some(j) = &s.journal {
                    j.push(Entry::WriteCompleted { id: p.id });
                }
            }
        }
        if let Some(tamper) = &mut self.state.borrow_mut().tamper {
            tamper(p.write, p.id, &mut p.io);
        }
        let echo = p.twice.then(|| Pending {
            io: BackingIo {
                buf: p.io.buf.to_vec().into(),
                extents: p.io.extents.clone(),
            },
            done: IoDone {
                receiver: p.done.receiver.clone(),
                token: p.done.token,
            },
            result: p.result.clone(),
            twice: false,
            echo: true,
            ..p
        });
        // Deferred: queued first, so it comes before whatever this completion sets off.
        let echo = match echo {
            Some(echo) if self.state.borrow().mode == Mode::Deferred => {
                self.state.borrow_mut().pending.push_back(echo);
                None
            }
            other => other,
        };
        p.done.complete(p.io, p.result);
        if let Some(echo) = echo {
            self.finish(echo);
        }
    }
}

impl BackingDevice for MemBacking {
    fn blocklen(&self) -> u32 {
        self.blocklen
    }

    fn blockcnt(&self) -> u64 {
        self.state.borrow().image.len() as u64 / u64::from(self.blocklen)
    }

    fn read(&self, io: BackingIo, done: IoDone) {
        self.submit(Kind::Read, io, done);
    }

    fn write(&self, io: BackingIo, done: IoDone) {
        self.submit(Kind::Write, io, done);
    }

    fn unmap(&self, io: BackingIo, done: IoDone) {
        self.submit(Kind::Unmap, io, done);
    }
}
