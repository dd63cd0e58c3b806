//! Arbitrary operation sequences against a shadow model: each 4 input bytes are one
//! step (write, read, poll some completions, unload and load, switch completion
//! mode). Every successful read must return the model's bytes.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use reduce::Volume;
use reduce::testkit::*;

const CHUNKS: u64 = 8;
const BPC: u64 = 8;

fuzz_target!(|input: &[u8]| {
    let rig = Rig::new(
        Geo::small(CHUNKS),
        Mode::Deferred,
        CodecKind::test(Mode::Deferred),
    );
    let mut vol = rig.init();
    let model = Rc::new(RefCell::new(vec![0u8; (CHUNKS * BPC) as usize * 512]));
    for (step, op) in input.chunks_exact(4).enumerate().take(2000) {
        let chunk = u64::from(op[1]) % CHUNKS;
        let first = u64::from(op[2]) % BPC;
        let blocks = 1 + u64::from(op[3]) % (BPC - first);
        let offset = chunk * BPC + first;
        let range = offset as usize * 512..(offset + blocks) as usize * 512;
        match op[0] % 6 {
            0 | 1 => {
                let bytes = data(step as u64 ^ u64::from(op[0]), range.len());
                let m = model.clone();
                vol.writev(offset, blocks, vec![bytes.clone()], move |r, _| {
                    r.expect("write");
                    m.borrow_mut()[range].copy_from_slice(&bytes);
                });
            }
            2 | 3 => {
                let m = model.clone();
                let segs = vec![vec![0; range.len()]];
                vol.readv(offset, blocks, segs, move |r, segs| {
                    r.expect("read");
                    assert!(segs[0] == m.borrow()[range], "read returned wrong data");
                });
            }
            4 => {
                for _ in 0..op[1] % 16 {
                    rig.poll_one();
                }
            }
            _ => {
                rig.drain();
                vol = reload(&rig, &vol);
                let mode = if op[1] % 2 == 0 {
                    Mode::Immediate
                } else {
                    Mode::Deferred
                };
                rig.set_mode(mode);
            }
        }
    }
    rig.drain();
    assert!(rig.check(&vol).expect("check").is_clean());
    let want = model.borrow().clone();
    for chunk in 0..CHUNKS {
        let bytes = rig.read(&vol, chunk * BPC, BPC).expect("final read");
        assert!(
            bytes == want[chunk as usize * 4096..][..4096],
            "chunk {chunk}"
        );
    }
});

fn reload(rig: &Rig, vol: &Volume) -> Volume {
    rig.unload(vol).expect("unload");
    rig.load().expect("load")
}
