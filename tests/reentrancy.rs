//! Re-entrancy: long chains of requests each submitted from the previous completion
//! (on a thread with a small stack, and with the stack spread measured), unload from
//! inside a completion, and thousands of requests submitted at once.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Errno, Volume};

const GEO: Geo = Geo::new(512, 4096, 16384, 512, 16);
const SMALL_STACK: usize = 256 * 1024;

/// Runs `f` on a thread with a 256 KiB stack (volumes are not `Send`, so everything
/// is made inside).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .unwrap()
        .join()
        .expect("chain thread failed");
}

fn stack_addr() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}

struct Chain {
    rig: Rig,
    vol: Volume,
    shadow: RefCell<Shadow>,
    rng: RefCell<Rng>,
    remaining: Cell<usize>,
    completed: Cell<usize>,
    errors: RefCell<Vec<String>>,
    lowest: Cell<usize>,
    highest: Cell<usize>,
}

impl Chain {
    fn note_stack(&self) {
        let a = stack_addr();
        self.lowest.set(self.lowest.get().min(a));
        self.highest.set(self.highest.get().max(a));
    }

    /// Submits the next request; its completion submits the one after.
    fn step(self: &Rc<Self>) {
        self.note_stack();
        let left = self.remaining.get();
        if left == 0 {
            return;
        }
        self.remaining.set(left - 1);
        let bpc = GEO.blocks_per_chunk();
        let (offset, length, write) = {
            let mut rng = self.rng.borrow_mut();
            let chunk = rng.below(GEO.chunks);
            match left % 3 {
                0 => (chunk * bpc, bpc, true),
                1 => {
                    let start = rng.below(bpc);
                    (chunk * bpc + start, rng.range(1, bpc - start), true)
                }
                _ => {
                    let start = rng.below(bpc);
                    (chunk * bpc + start, rng.range(1, bpc - start), false)
                }
            }
        };
        let bytes = length as usize * GEO.lbs as usize;
        let me = Rc::clone(self);
        if write {
            let data = any_data(&mut self.rng.borrow_mut(), bytes);
            let segs = split(&mut self.rng.borrow_mut(), &data, 3);
            self.shadow.borrow_mut().write(offset, &data);
            self.vol.writev(offset, length, segs, move |r, _| {
                if let Err(e) = r {
                    me.errors
                        .borrow_mut()
                        .push(format!("write {offset}: {e:?}"));
                }
                me.completed.set(me.completed.get() + 1);
                me.step();
            });
        } else {
            let want = self.shadow.borrow().expect(offset, length).to_vec();
            let lens = split_lens(&mut self.rng.borrow_mut(), bytes, 3);
            let segs = lens.iter().map(|&n| vec![0; n]).collect();
            self.vol.readv(offset, length, segs, move |r, segs| {
                match r {
                    Err(e) => me.errors.borrow_mut().push(format!("read {offset}: {e:?}")),
                    Ok(()) if segs.concat() != want => me
                        .errors
                        .borrow_mut()
                        .push(format!("read {offset}: wrong data")),
                    Ok(()) => {}
                }
                me.completed.set(me.completed.get() + 1);
                me.step();
            });
        }
    }
}

fn chain(mode: Mode, n: usize) {
    let rig = Rig::new(GEO, mode, CodecKind::Zstd);
    let vol = rig.init();
    let c = Rc::new(Chain {
        rig: rig.clone(),
        vol: vol.clone(),
        shadow: RefCell::new(Shadow::new(GEO)),
        rng: RefCell::new(Rng::new(n as u64)),
        remaining: Cell::new(n),
        completed: Cell::new(0),
        errors: RefCell::new(Vec::new()),
        lowest: Cell::new(usize::MAX),
        highest: Cell::new(0),
    });
    c.step();
    if mode == Mode::Immediate {
        // The whole chain ran inside that one call.
        assert_eq!(c.completed.get(), n);
    }
    c.rig.drain();
    assert_eq!(c.completed.get(), n, "chain stopped");
    assert!(c.errors.borrow().is_empty(), "{:?}", &c.errors.borrow()[..]);
    let spread = c.highest.get() - c.lowest.get();
    // Every completion ran at (about) the same depth: no nesting per request.
    assert!(
        spread < 32 * 1024,
        "stack grew by {spread} bytes over the chain"
    );
    assert_eq!(vol.info().outstanding, 0);
    let shadow = c.shadow.borrow().clone();
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    let vol = rig.load().unwrap();
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    eprintln!("{mode:?}: {n} chained requests, stack spread {spread} bytes");
}

#[test]
fn chain_of_10000_immediate_small_stack() {
    on_small_stack(|| chain(Mode::Immediate, 10_000));
}

#[test]
fn chain_of_10000_deferred_small_stack() {
    on_small_stack(|| chain(Mode::Deferred, 10_000));
}

#[test]
fn unload_from_inside_a_completion() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let vol = rig.init();
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let (l, v) = (log.clone(), vol.clone());
        vol.writev(0, 32, vec![text(1, 16384)], move |r, _| {
            l.borrow_mut().push(format!("write {r:?}"));
            let l2 = l.clone();
            v.unload(move |r| l2.borrow_mut().push(format!("unload {r:?}")));
            // A request after the unload is refused, not served.
            let l3 = l.clone();
            v.readv(0, 1, vec![vec![0; 512]], move |r, _| {
                l3.borrow_mut().push(format!("late read ok={}", r.is_ok()))
            });
        });
        rig.drain();
        assert_eq!(
            *log.borrow(),
            vec!["write Ok(())", "unload Ok(())", "late read ok=false"],
            "{mode:?}"
        );
        assert_eq!(rig.backing.pending(), 0);
        let vol = rig.load().unwrap();
        assert_eq!(rig.read_chunk(&vol, 0).unwrap(), text(1, 16384));
        rig.unload(&vol).unwrap();
    }
}

/// Unload from a completion while another request is still out: EBUSY; from the last
/// completion: OK. Writes that commit in one group complete together, so the request
/// still out is a read (which no group waits for).
#[test]
fn unload_from_completion_with_io_outstanding() {
    let rig = Rig::new(GEO, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    rig.write(&vol, 2 * 32, &text(2, 16384)).unwrap();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let unload_then = |chunk: u64| {
        let (l, v) = (log.clone(), vol.clone());
        move |r: reduce::Result<()>, _: Vec<Vec<u8>>| {
            r.unwrap();
            v.unload(move |r| {
                l.borrow_mut()
                    .push(format!("{chunk}: {:?}", r.map_err(|e| e.errno())))
            });
        }
    };
    for chunk in 0..2u64 {
        vol.writev(chunk * 32, 32, vec![text(chunk, 16384)], unload_then(chunk));
    }
    vol.readv(2 * 32, 32, vec![vec![0; 16384]], unload_then(2));
    rig.drain();
    let busy = format!("{:?}", Err::<(), _>(Errno::EBUSY));
    assert_eq!(
        *log.borrow(),
        vec![
            format!("0: {busy}"),
            format!("1: {busy}"),
            "2: Ok(())".to_string()
        ]
    );
    let vol = rig.load().unwrap();
    for chunk in 0..3 {
        assert_eq!(rig.read_chunk(&vol, chunk).unwrap(), text(chunk, 16384));
    }
    rig.unload(&vol).unwrap();
}

/// 2,000 requests (reads and writes, whole and partial, many to the same chunks)
/// submitted at once before any completes.
#[test]
fn two_thousand_at_once_deferred() {
    let geo = Geo::new(512, 4096, 16384, 512, 64);
    let rig = Rig::new(geo, Mode::Deferred, CodecKind::Zstd);
    let vol = rig.init();
    let mut shadow = Shadow::new(geo);
    let mut rng = Rng::new(2000);
    let ok = Rc::new(Cell::new(0usize));
    let bad: Rc<RefCell<Vec<String>>> = Rc::default();
    for i in 0..2000 {
        let chunk = rng.below(geo.chunks);
        let (offset, length) = range_in_chunk(&mut rng, geo, chunk);
        let bytes = length as usize * 512;
        let (ok, bad) = (ok.clone(), bad.clone());
        if rng.chance(60) {
            let data = any_data(&mut rng, bytes);
            shadow.write(offset, &data);
            let segs = split(&mut rng, &data, 4);
            vol.writev(offset, length, segs, move |r, _| match r {
                Ok(()) => ok.set(ok.get() + 1),
                Err(e) => bad.borrow_mut().push(format!("#{i} write: {e:?}")),
            });
        } else {
            let want = shadow.expect(offset, length).to_vec();
            vol.readv(
                offset,
                length,
                vec![vec![0; bytes]],
                move |r, segs| match r {
                    Ok(()) if segs[0] == want => ok.set(ok.get() + 1),
                    other => bad.borrow_mut().push(format!("#{i} read: {other:?}")),
                },
            );
        }
    }
    // Only reads of never-written chunks may complete without the device.
    assert_eq!(vol.info().outstanding, 2000 - ok.get());
    assert!(vol.info().outstanding > 1500);
    rig.drain();
    assert!(bad.borrow().is_empty(), "{:?}", bad.borrow());
    assert_eq!(ok.get(), 2000);
    assert_eq!(vol.info().outstanding, 0);
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
    let vol = rig.load().unwrap();
    shadow.verify(&rig, &vol);
    rig.unload(&vol).unwrap();
}
