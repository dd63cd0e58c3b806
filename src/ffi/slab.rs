//! Where a C device's completions come back: per device, a slab of entries, one per
//! call into the device, each holding the `spdk_reduce_vol_cb_args` C completes
//! through and the call's iovecs.
//!
//! - Stable: entries sit in pages that never move nor free while the device is in use
//!   (until its volume is unloaded, or its init, load or destroy has completed), so C
//!   may read an `args` at any time, a second time included.
//! - Checked, never trusted: `cb_arg` names an entry, and the entry knows whether a
//!   call is out on it. A completion for an entry with nothing out (a second one, or
//!   one for a finished call) is logged and ignored. Nothing C hands back is freed.
//! - Recycled oldest-first, and only while more than [`MIN_IDLE`] entries are idle:
//!   an entry is used again only after that many later calls have completed, so until
//!   then a stale duplicate is caught. After that it would be taken as the completion
//!   of the entry's new call: that cannot be told apart.
//! - Owned by the thread that made the device (the volume's): a completion arriving on
//!   another thread is logged and ignored without touching anything but the entry's
//!   fixed fields, since the volume is not safe to use from there.
//!
//! No allocation once the slab has grown to the device's concurrency: each call takes
//! an idle entry and the operation's buffers and completion handle move into it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::rc::Rc;
use std::thread::ThreadId;

use libc::iovec;

use super::boundary::{codec_result, guard, io_result, this_thread};
use super::types::spdk_reduce_vol_cb_args;
use crate::backing::{BackingIo, IoDone};
use crate::codec::{CodecDone, CodecIo};
use crate::error::Result;
use crate::log::{Level, emit};

/// Entries per page.
const PAGE: usize = 64;
/// Idle entries kept back before one is reused (see the module notes).
pub(crate) const MIN_IDLE: usize = 256;

pub(crate) const NO_IOV: iovec = iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// One call, for messages.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    Readv { lba: u64, lba_count: u32 },
    Writev { lba: u64, lba_count: u32 },
    Unmap { lba: u64, lba_count: u32 },
    Compress,
    Decompress,
}

impl Call {
    /// The blocks a readv, writev or unmap covers, (lba, lba_count); none for a codec
    /// call.
    pub(crate) fn blocks(self) -> (u64, u32) {
        match self {
            Call::Readv { lba, lba_count }
            | Call::Writev { lba, lba_count }
            | Call::Unmap { lba, lba_count } => (lba, lba_count),
            Call::Compress | Call::Decompress => (0, 0),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Readv { lba, lba_count } => write!(f, "readv of {lba_count} blocks at {lba}"),
            Call::Writev { lba, lba_count } => {
                write!(f, "writev of {lba_count} blocks at {lba}")
            }
            Call::Unmap { lba, lba_count } => write!(f, "unmap of {lba_count} blocks at {lba}"),
            Call::Compress => write!(f, "compress"),
            Call::Decompress => write!(f, "decompress"),
        }
    }
}

/// What C sees of one call, at a fixed address: `args` (whose `cb_arg` is the entry's
/// own address, and `cb_fn` the one trampoline, both set once) and the iovecs.
struct Entry {
    args: spdk_reduce_vol_cb_args,
    iov: [iovec; 2],
    /// Set once, when the page is made.
    slab: *const Slab,
    index: u32,
}

/// A block read, write or unmap, split in one call per run of blocks. It completes when every
/// run has, and the call that issued them is done issuing.
struct BlockOp {
    io: BackingIo,
    done: IoDone,
    /// The first failing run's error.
    result: Result<()>,
    /// Runs still out, plus one while the runs are being issued.
    pending: usize,
    /// Whether the run on the operation's own entry (its first) has completed.
    own_done: bool,
}

/// What an entry is for now.
enum Use {
    /// Nothing out; the call it last served, if any (for messages).
    Idle(Option<Call>),
    /// The first run of a block operation, holding the operation.
    Block { call: Call, op: BlockOp },
    /// A later run of the block operation on entry `head`.
    Run { call: Call, head: u32 },
    Codec {
        call: Call,
        io: CodecIo,
        done: CodecDone,
    },
}

/// A device's entries. Shared by its backing and codec adapters; used only on `owner`.
pub(crate) struct Slab {
    owner: ThreadId,
    /// The slab's own address as the `Rc` holding it gives it out, for the entries: a
    /// completion takes a reference through it, so the slab outlives the completion
    /// even when the volume goes away inside it.
    me: Cell<*const Slab>,
    /// Each page's first entry, of [`PAGE`]. Raw: C and the slab reach entries through
    /// pointers that must stay valid, which a `Box` (asserting unique access whenever
    /// it moves) would not allow. Freed when the slab drops.
    pages: RefCell<Vec<*mut Entry>>,
    uses: RefCell<Vec<Use>>,
    /// Idle entries: never used ones at the front, the rest in the order they finished.
    idle: RefCell<VecDeque<u32>>,
}

impl Slab {
    /// An empty slab owned by the calling thread.
    pub(crate) fn new() -> Rc<Slab> {
        let slab = Rc::new(Slab {
            owner: this_thread(),
            me: Cell::new(std::ptr::null()),
            pages: RefCell::new(Vec::new()),
            uses: RefCell::new(Vec::new()),
            idle: RefCell::new(VecDeque::new()),
        });
        slab.me.set(Rc::as_ptr(&slab));
        slab
    }

    /// Starts a block operation of `runs` calls: returns its entry (the first run's),
    /// holding the operation. Issue each run with [`Slab::run`], then call
    /// [`Slab::issued`].
    pub(crate) fn block(&self, call: Call, io: BackingIo, done: IoDone, runs: usize) -> u32 {
        let op = BlockOp {
            io,
            done,
            result: Ok(()),
            pending: runs + 1,
            own_done: false,
        };
        self.take(Use::Block { call, op })
    }

    /// The entry for run `k` of the block operation on `head` (the head's own for the
    /// first), with `iov` in place: the `iovec` and `args` to pass C.
    pub(crate) fn run(
        &self,
        head: u32,
        k: usize,
        call: Call,
        iov: iovec,
    ) -> (*mut iovec, *mut spdk_reduce_vol_cb_args) {
        let index = if k == 0 {
            head
        } else {
            self.take(Use::Run { call, head })
        };
        self.prepare(index, [iov, NO_IOV])
    }

    /// Every run of the operation on `head` is issued: it completes once they are back.
    pub(crate) fn issued(&self, head: u32) {
        self.settle(head, Ok(()));
    }

    /// An entry for a codec call, holding it: the source and destination `iovec`s and
    /// the `args` to pass C.
    pub(crate) fn codec(
        &self,
        call: Call,
        io: CodecIo,
        done: CodecDone,
        src: iovec,
        dst: iovec,
    ) -> (*mut iovec, *mut iovec, *mut spdk_reduce_vol_cb_args) {
        let index = self.take(Use::Codec { call, io, done });
        let (iov, args) = self.prepare(index, [src, dst]);
        // The two iovecs are adjacent in the entry.
        (iov, iov.wrapping_add(1), args)
    }

    /// An idle entry, now serving `use_`: the oldest idle one, once more than
    /// [`MIN_IDLE`] are idle (the slab grows until then).
    fn take(&self, use_: Use) -> u32 {
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= MIN_IDLE {
            self.grow(&mut idle);
        }
        let index = idle.pop_front().expect("the slab just grew");
        self.uses.borrow_mut()[index as usize] = use_;
        index
    }

    /// Adds a page of entries, ahead of the idle ones waiting to be reused.
    fn grow(&self, idle: &mut VecDeque<u32>) {
        let mut pages = self.pages.borrow_mut();
        let first = pages.len() * PAGE;
        let page: Box<[Entry]> = (first..first + PAGE)
            .map(|index| Entry {
                args: spdk_reduce_vol_cb_args {
                    cb_fn: Some(op_done),
                    cb_arg: std::ptr::null_mut(),
                },
                iov: [NO_IOV; 2],
                slab: self.me.get(),
                index: index as u32,
            })
            .collect();
        let page = Box::into_raw(page).cast::<Entry>();
        for k in 0..PAGE {
            // SAFETY: within the page just made, ours alone until its entries are handed
            // to C; its address is final.
            unsafe {
                let entry = page.add(k);
                (*entry).args.cb_arg = entry.cast();
            }
        }
        pages.push(page);
        self.uses
            .borrow_mut()
            .extend((0..PAGE).map(|_| Use::Idle(None)));
        for index in (first..first + PAGE).rev() {
            idle.push_front(index as u32);
        }
    }

    /// Puts `iov` in entry `index`: the addresses of its iovecs and args.
    fn prepare(&self, index: u32, iov: [iovec; 2]) -> (*mut iovec, *mut spdk_reduce_vol_cb_args) {
        let index = index as usize;
        let page = self.pages.borrow()[index / PAGE];
        // SAFETY: the entry is in that page, which lives as long as the slab; C has no
        // call out on it (it was idle), and this thread is the only one that uses it.
        unsafe {
            let entry = page.add(index % PAGE);
            (*entry).iov = iov;
            (&raw mut (*entry).iov[0], &raw mut (*entry).args)
        }
    }

    /// A completion with `status` for entry `index`, on the owner thread.
    fn complete(&self, index: u32, status: c_int) {
        let mut uses = self.uses.borrow_mut();
        let entry = &mut uses[index as usize];
        match entry {
            Use::Idle(last) => {
                let last = *last;
                drop(uses);
                stray(index, last);
            }
            Use::Block { call, op } if op.own_done => {
                let call = *call;
                drop(uses);
                stray(index, Some(call));
            }
            Use::Block { op, .. } => {
                op.own_done = true;
                drop(uses);
                self.settle(index, io_result(status));
            }
            Use::Run { call, head } => {
                let head = *head;
                *entry = Use::Idle(Some(*call));
                drop(uses);
                self.idle.borrow_mut().push_back(index);
                self.settle(head, io_result(status));
            }
            Use::Codec { call, .. } => {
                let call = *call;
                let Use::Codec { io, done, .. } = std::mem::replace(entry, Use::Idle(Some(call)))
                else {
                    unreachable!("matched a codec entry")
                };
                drop(uses);
                self.idle.borrow_mut().push_back(index);
                done.complete(io, codec_result(status));
            }
        }
    }

    /// One run (or the issuing) of the block operation on `head` is done with
    /// `result`; the last one completes the operation.
    fn settle(&self, head: u32, result: Result<()>) {
        let mut uses = self.uses.borrow_mut();
        let entry = &mut uses[head as usize];
        let Use::Block { call, op } = entry else {
            unreachable!("a run's head holds its operation until every run is back")
        };
        if let (Err(e), Ok(())) = (result, &op.result) {
            op.result = Err(e);
        }
        op.pending -= 1;
        if op.pending > 0 {
            return;
        }
        let call = *call;
        let Use::Block { op, .. } = std::mem::replace(entry, Use::Idle(Some(call))) else {
            unreachable!("matched a block entry")
        };
        drop(uses);
        self.idle.borrow_mut().push_back(head);
        op.done.complete(op.io, op.result);
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        for &page in self.pages.get_mut().iter() {
            let page = std::ptr::slice_from_raw_parts_mut(page, PAGE);
            // SAFETY: made by `Box::into_raw` in `grow`, freed once, here; the device is
            // no longer in use, so C holds none of its entries.
            drop(unsafe { Box::from_raw(page) });
        }
    }
}

/// A completion for an entry with no call out on it: logged and ignored.
fn stray(index: u32, last: Option<Call>) {
    match last {
        Some(call) => emit(
            Level::Warn,
            format_args!(
                "ignored a second completion of a {call} (args entry {index}): it had already completed"
            ),
        ),
        None => emit(
            Level::Warn,
            format_args!("ignored a completion through args entry {index}, never handed out"),
        ),
    }
}

/// The `cb_fn` of every entry: C calls it as `args->cb_fn(args->cb_arg, status)`.
unsafe extern "C" fn op_done(cb_arg: *mut c_void, reduce_errno: c_int) {
    guard("backing device completion", (), || {
        if cb_arg.is_null() {
            return emit(
                Level::Warn,
                format_args!("backing device completion with a NULL cb_arg ignored"),
            );
        }
        let entry = cb_arg.cast::<Entry>().cast_const();
        // SAFETY: a non-NULL `cb_arg` is one this library gave out with `op_done`: an
        // entry of a slab that lives as long as its device is in use. Its `slab` and
        // `index`, and the slab's `owner`, never change after they are set, so reading
        // them races with nothing, on any thread.
        let (slab, index, owner) =
            unsafe { ((*entry).slab, (*entry).index, (*(*entry).slab).owner) };
        if owner != this_thread() {
            return emit(
                Level::Error,
                format_args!(
                    "ignored a backing device completion (args entry {index}) on a thread other than its volume's: the operation stays in flight"
                ),
            );
        }
        // SAFETY: on the owner thread the slab is this thread's to use; `slab` came from
        // the `Rc` that holds it (`Slab::me`), which is alive (as above). The reference
        // taken here keeps it so until the completion is over, even if the volume (and
        // with it every other holder) goes away inside it.
        let slab = unsafe {
            Rc::increment_strong_count(slab);
            Rc::from_raw(slab)
        };
        slab.complete(index, reduce_errno);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::{Receiver, Ticket, Token};
    use crate::error::Errno;

    /// What reached the volume: (buffer length, result) per completion.
    #[derive(Default)]
    struct Got {
        blocks: RefCell<Vec<(usize, Result<()>)>>,
        codec: RefCell<Vec<(usize, Result<usize>)>>,
    }

    impl Receiver<BackingIo, ()> for Got {
        fn receive(self: Rc<Self>, _: Token, io: BackingIo, result: Result<()>) {
            self.blocks.borrow_mut().push((io.buf.len(), result));
        }
    }

    impl Receiver<CodecIo, usize> for Got {
        fn receive(self: Rc<Self>, _: Token, io: CodecIo, result: Result<usize>) {
            self.codec.borrow_mut().push((io.src.len(), result));
        }
    }

    const TOKEN: Token = Token::Request(Ticket {
        slot: 0,
        generation: 1,
    });

    /// Completes as C does: through the args, reading both members at call time.
    fn c_completes(args: *mut spdk_reduce_vol_cb_args, status: c_int) {
        // SAFETY: args from the slab, alive as long as it is.
        let a = unsafe { *args };
        // SAFETY: the library's own completion with its own argument.
        unsafe { a.cb_fn.expect("cb_fn set")(a.cb_arg, status) }
    }

    fn block(slab: &Slab, got: &Rc<Got>, runs: usize) -> Vec<*mut spdk_reduce_vol_cb_args> {
        let call = Call::Readv {
            lba: 8,
            lba_count: 1,
        };
        let io = BackingIo {
            buf: vec![0; 512 * runs].into(),
            extents: Default::default(),
        };
        let done = IoDone {
            receiver: got.clone(),
            token: TOKEN,
        };
        let head = slab.block(call, io, done, runs);
        let args = (0..runs)
            .map(|k| slab.run(head, k, call, NO_IOV).1)
            .collect();
        slab.issued(head);
        args
    }

    #[test]
    fn a_block_operation_completes_once_all_runs_are_back_and_duplicates_are_ignored() {
        let slab = Slab::new();
        let got = Rc::new(Got::default());
        let args = block(&slab, &got, 3);
        c_completes(args[1], 0);
        c_completes(args[1], 0);
        c_completes(args[0], -libc::ENXIO);
        c_completes(args[0], 0);
        assert!(got.blocks.borrow().is_empty(), "completed with a run out");
        c_completes(args[2], 0);
        c_completes(args[2], 0);
        c_completes(args[0], 0);
        assert_eq!(
            *got.blocks.borrow(),
            vec![(1536, Err(Errno(libc::ENXIO).into()))]
        );
    }

    #[test]
    fn a_codec_operation_completes_once() {
        let slab = Slab::new();
        let got = Rc::new(Got::default());
        let io = CodecIo {
            src: vec![1; 64].into(),
            src_len: 64,
            dst: vec![0; 64].into(),
        };
        let done = CodecDone {
            receiver: got.clone(),
            token: TOKEN,
        };
        let (src, dst, args) = slab.codec(Call::Compress, io, done, NO_IOV, NO_IOV);
        assert_eq!(dst, src.wrapping_add(1));
        c_completes(args, 17);
        c_completes(args, 17);
        c_completes(args, -libc::EIO);
        assert_eq!(*got.codec.borrow(), vec![(64, Ok(17))]);
    }

    /// Holds the slab, as the volume does, and lets it go inside the completion, as an
    /// unload from the caller's callback does.
    struct LastHolder(RefCell<Option<Rc<Slab>>>);

    impl Receiver<CodecIo, usize> for LastHolder {
        fn receive(self: Rc<Self>, _: Token, _: CodecIo, result: Result<usize>) {
            assert_eq!(result, Ok(3));
            self.0.borrow_mut().take();
        }
    }

    #[test]
    fn the_slab_outlives_a_completion_that_lets_the_volume_go() {
        let slab = Slab::new();
        let holder = Rc::new(LastHolder(RefCell::new(Some(slab.clone()))));
        let io = CodecIo {
            src: vec![1; 8].into(),
            src_len: 8,
            dst: vec![0; 8].into(),
        };
        let done = CodecDone {
            receiver: holder.clone(),
            token: TOKEN,
        };
        let (_, _, args) = slab.codec(Call::Decompress, io, done, NO_IOV, NO_IOV);
        drop(slab);
        c_completes(args, 3);
        assert!(holder.0.borrow().is_none());
    }

    /// An entry serves again only after more than MIN_IDLE later operations have
    /// completed; until then a stale duplicate through it is caught.
    #[test]
    fn entries_are_reused_oldest_first_after_min_idle_others() {
        let slab = Slab::new();
        let got = Rc::new(Got::default());
        let first = block(&slab, &got, 1)[0];
        c_completes(first, 0);
        let mut reused_after = None;
        for n in 1..=2 * MIN_IDLE {
            let args = block(&slab, &got, 1)[0];
            if args == first {
                reused_after = Some(n);
                break;
            }
            c_completes(args, 0);
            c_completes(first, 0);
        }
        assert!(
            reused_after.is_some_and(|n| n > MIN_IDLE),
            "{reused_after:?}"
        );
        assert_eq!(got.blocks.borrow().len(), reused_after.unwrap());
    }
}
