//! A small core test for miri (`MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri
//! test --test miri_shadow`): MemStore + MemBacking + RleCodec only (no zstd C code, no
//! files), a tiny geometry, both completion modes. Checks reads against a shadow copy,
//! partial-chunk read-modify-write, same-chunk queueing, unload + reload, a short
//! re-entrant chain and a device fault.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::{Errno, Volume};

/// 512-byte blocks and io units, 2 KiB chunks (4 io units), 4 chunks.
const GEO: Geo = Geo::new(512, 512, 2048, 512, 4);
const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];

fn rig(mode: Mode) -> Rig {
    Rig::new(GEO, mode, CodecKind::Rle)
}

#[test]
fn miri_round_trip_rmw_and_queueing() {
    for mode in MODES {
        let rig = rig(mode);
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(1);
        // Compressible whole chunk, incompressible (raw) whole chunk, partial writes
        // into a fresh chunk and into both stored ones (read-modify-write).
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![7; 2048]),
            (4, rng.bytes(2048)),
            (9, vec![3; 1024]),
            (1, rng.bytes(512)),
            (6, vec![0; 512]),
        ];
        for (offset, data) in writes {
            let segs = split(&mut rng, &data, 3);
            rig.writev(&vol, offset, segs).unwrap();
            shadow.write(offset, &data);
        }
        let info = vol.info();
        assert_eq!(info.chunks_in_use, 3);
        // Chunk 1 is raw (4 io units); chunks 0 and 2 compress to fewer. The metadata
        // takes some more.
        let data_units = info.allocated_io_units - GEO.metadata_io_units();
        assert!((6..=10).contains(&data_units), "{data_units}");
        let st = vol.stats();
        assert_eq!((st.chunks_in_use, st.chunks_raw), (3, 1));
        assert_eq!(st.io_units_in_use, data_units);

        // Same-chunk requests submitted together run in order.
        let seen: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let mut expected = Vec::new();
        for i in 0..6u8 {
            if i % 2 == 0 {
                let data = vec![0x40 + i; 512];
                shadow.write(12 + u64::from(i % 4), &data);
                vol.writev(12 + u64::from(i % 4), 1, vec![data], |r, _| r.unwrap());
            } else {
                expected.push(shadow.expect(12, 4).to_vec());
                let s = seen.clone();
                vol.readv(12, 4, vec![vec![0; 700], vec![0; 1348]], move |r, segs| {
                    r.unwrap();
                    s.borrow_mut().push(segs.concat());
                });
            }
        }
        rig.drain();
        assert_eq!(*seen.borrow(), expected);
        assert_eq!(vol.info().outstanding, 0);

        rig.unload(&vol).unwrap();
        let vol = rig.load().unwrap();
        shadow.verify(&rig, &vol);
        assert_eq!(
            rig.readv(&vol, 5, 2, &[100, 924]).unwrap(),
            shadow.expect(5, 2)
        );
        rig.unload(&vol).unwrap();
    }
}

fn chain_step(vol: Volume, shadow: Rc<RefCell<Shadow>>, left: Rc<Cell<u32>>, bad: Rc<Cell<u32>>) {
    let n = left.get();
    if n == 0 {
        return;
    }
    left.set(n - 1);
    let offset = u64::from(n * 5 % 16);
    let again = vol.clone();
    if n % 2 == 0 {
        let data = vec![n as u8; 512];
        shadow.borrow_mut().write(offset, &data);
        vol.writev(offset, 1, vec![data], move |r, _| {
            if r.is_err() {
                bad.set(bad.get() + 1);
            }
            chain_step(again, shadow, left, bad);
        });
    } else {
        let want = shadow.borrow().expect(offset, 1).to_vec();
        vol.readv(offset, 1, vec![vec![0; 512]], move |r, segs| {
            if r.is_err() || segs[0] != want {
                bad.set(bad.get() + 1);
            }
            chain_step(again, shadow, left, bad);
        });
    }
}

#[test]
fn miri_reentrant_chain() {
    for mode in MODES {
        let rig = rig(mode);
        let vol = rig.init();
        let shadow = Rc::new(RefCell::new(Shadow::new(GEO)));
        let left = Rc::new(Cell::new(50));
        let bad = Rc::new(Cell::new(0));
        chain_step(vol.clone(), shadow.clone(), left.clone(), bad.clone());
        rig.drain();
        assert_eq!(left.get(), 0);
        assert_eq!(bad.get(), 0);
        shadow.borrow().verify(&rig, &vol);
        rig.unload(&vol).unwrap();
    }
}

#[test]
fn miri_backing_fault() {
    for mode in MODES {
        let rig = rig(mode);
        let vol = rig.init();
        rig.write(&vol, 0, &[5; 2048]).unwrap();
        let info = vol.info();
        let fault = Errno(libc::ENXIO);
        rig.backing
            .set_fault(Some(Box::new(move |w, _| w.then_some(fault))));
        assert_eq!(rig.write(&vol, 0, &[6; 512]), Err(fault.into()));
        assert_eq!(rig.write(&vol, 8, &[6; 2048]), Err(fault.into()));
        assert_eq!(vol.info(), info);
        rig.backing
            .set_fault(Some(Box::new(move |w, _| (!w).then_some(fault))));
        assert_eq!(rig.read(&vol, 1, 1), Err(fault.into()));
        assert_eq!(vol.info(), info);
        rig.backing.set_fault(None);
        assert_eq!(rig.read_chunk(&vol, 0).unwrap(), vec![5; 2048]);
        rig.write(&vol, 0, &[6; 512]).unwrap();
        let mut want = vec![5; 2048];
        want[..512].fill(6);
        assert_eq!(rig.read_chunk(&vol, 0).unwrap(), want);
        rig.unload(&vol).unwrap();
    }
}

/// Requests across chunks, unmaps and chunks of zeros, in flight together.
#[test]
fn miri_across_chunks_unmap_and_zeros() {
    for mode in MODES {
        let rig = rig(mode);
        let vol = rig.init();
        let mut shadow = Shadow::new(GEO);
        let mut rng = Rng::new(3);
        // Blocks 2..14: the tail of chunk 0, chunks 1 and 2, the head of chunk 3.
        let data = rng.bytes(12 * 512);
        shadow.write(2, &data);
        vol.writev(2, 12, split(&mut rng, &data, 4), |r, _| r.unwrap());
        let want = shadow.expect(1, 14).to_vec();
        vol.readv(1, 14, vec![vec![0; 3000], vec![0; 4168]], move |r, segs| {
            r.unwrap();
            assert_eq!(segs.concat(), want);
        });
        // Chunk 1 whole, and the first half of chunk 2: chunk 2 keeps data.
        shadow.unmap(4, 6);
        vol.unmap(4, 6, |r| r.unwrap());
        // Zeros over the rest of chunk 3's data: it holds none any more.
        shadow.write(12, &[0; 1024]);
        vol.writev(12, 2, vec![vec![0; 1024]], |r, _| r.unwrap());
        rig.drain();
        let st = vol.stats();
        assert_eq!(st.chunks_in_use, 2);
        assert_eq!((st.reads, st.writes, st.unmaps), (1, 2, 1));
        shadow.verify(&rig, &vol);
        assert!(rig.check(&vol).unwrap().is_clean());
        rig.unload(&vol).unwrap();
    }
}
