//! The core under miri (`make miri`): the request state machine, maps, free maps and
//! drain loop with in-memory doubles and the pure-Rust RLE codec — no zstd C code, no
//! files. Small on purpose: miri is slow.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use reduce::testkit::*;
use reduce::*;

const CHUNKS: u64 = 4;

fn rig(mode: Mode) -> Rig {
    let codec = CodecKind::Test(TestCodec::new(RleCodec, mode));
    Rig::new(Geo::small(CHUNKS), mode, codec)
}

fn round_trip(mode: Mode) {
    let rig = rig(mode);
    let vol = rig.init();
    let mut model = vec![0u8; CHUNKS as usize * 4096];
    // A compressible chunk, an incompressible (raw) one, partial writes over both.
    let writes: [(u64, Vec<u8>); 4] = [
        (0, vec![7; 4096]),
        (
            8,
            data(3, 4096)
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ i as u8)
                .collect(),
        ),
        (2, vec![9; 1024]),
        (13, vec![1; 512]),
    ];
    for (offset, bytes) in &writes {
        rig.write(&vol, *offset, bytes).unwrap();
        let at = *offset as usize * 512;
        model[at..at + bytes.len()].copy_from_slice(bytes);
    }
    // Same-chunk requests submitted together run in order.
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    vol.writev(16, 1, vec![vec![4; 512]], |r, _| r.unwrap());
    vol.readv(16, 2, vec![vec![0; 1024]], move |r, segs| {
        r.unwrap();
        *s.borrow_mut() = Some(segs.concat());
    });
    model[16 * 512..17 * 512].fill(4);
    rig.drain();
    assert_eq!(seen.borrow().as_deref(), Some(&model[16 * 512..18 * 512]));
    assert!(rig.check(&vol).unwrap().is_clean());
    rig.unload(&vol).unwrap();
    let vol = rig.load().unwrap();
    for chunk in 0..CHUNKS {
        let got = rig.read(&vol, chunk * 8, 8).unwrap();
        assert_eq!(got, model[chunk as usize * 4096..][..4096]);
    }
    rig.unload(&vol).unwrap();
}

#[test]
fn round_trip_immediate() {
    round_trip(Mode::Immediate);
}

#[test]
fn round_trip_deferred() {
    round_trip(Mode::Deferred);
}

/// Each request submitted from the previous one's completion.
#[test]
fn reentrant_chain() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        let rig = rig(mode);
        let vol = rig.init();
        let done = Rc::new(Cell::new(0u32));
        fn step(vol: Volume, n: u32, done: Rc<Cell<u32>>) {
            if n == 0 {
                return;
            }
            let v = vol.clone();
            vol.writev(
                u64::from(n % 32),
                1,
                vec![vec![n as u8; 512]],
                move |r, _| {
                    r.unwrap();
                    done.set(done.get() + 1);
                    step(v, n - 1, done);
                },
            );
        }
        step(vol.clone(), 40, done.clone());
        rig.drain();
        assert_eq!(done.get(), 40);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn backing_fault_releases_everything() {
    let rig = rig(Mode::Deferred);
    let vol = rig.init();
    rig.write(&vol, 0, &[5; 4096]).unwrap();
    let before = vol.info();
    rig.backing
        .set_fault(Some(Box::new(|write, _| write.then_some(Errno::EIO))));
    assert_eq!(rig.write(&vol, 8, &[6; 4096]), Err(Errno::EIO.into()));
    assert_eq!(vol.info(), before);
    rig.backing.set_fault(None);
    assert_eq!(rig.read(&vol, 0, 8).unwrap(), vec![5; 4096]);
    assert!(rig.check(&vol).unwrap().is_clean());
}
