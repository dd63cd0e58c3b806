//! `blocking::Volume`: the whole lifecycle over an in-process memory device that
//! completes inside the call, compared with a shadow model; what it says when a device
//! completes later; its own argument checks.

mod common;

use common::*;
use reduce::blocking::Volume;
use reduce::testkit::*;
use reduce::{Backend, Errno, InitPlan, Lz4Codec};

const GEO: Geo = Geo::new(512, 4096, 16384, 512, 20);

fn backend(backing: &MemBacking, store: &MemStore) -> Backend {
    Backend {
        backing: Box::new(backing.clone()),
        codec: Box::new(Lz4Codec),
        store: Box::new(store.clone()),
    }
}

fn plan() -> InitPlan {
    InitPlan::new(GEO.params(), GEO.blocklen, GEO.blockcnt(), "/pm").unwrap()
}

#[test]
fn lifecycle_matches_the_shadow() {
    let backing = MemBacking::new(GEO.blocklen, GEO.blockcnt(), Mode::Immediate);
    let store = MemStore::new();
    let vol = Volume::init_plan(plan(), backend(&backing, &store)).unwrap();
    let mut shadow = Shadow::new(GEO);
    let mut rng = Rng::new(3);
    for round in 0..200 {
        let chunk = rng.below(GEO.chunks);
        let (offset, length) = range_in_chunk(&mut rng, GEO, chunk);
        if round % 3 == 2 {
            let mut got = vec![0xEE; length as usize * 512];
            vol.read(offset, &mut got).unwrap();
            assert_eq!(got, shadow.expect(offset, length), "round {round}");
        } else {
            let data = any_data(&mut rng, length as usize * 512);
            vol.write(offset, &data).unwrap();
            shadow.write(offset, &data);
        }
    }
    assert!(vol.check().unwrap().is_clean());
    assert!(vol.info().chunks_in_use > 0);
    assert_eq!(vol.info().outstanding, 0);
    let path = vol.pm_path();
    vol.unload().unwrap();

    let vol = Volume::load_backend(backend(&backing, &store)).unwrap();
    let mut got = vec![0u8; GEO.vol_bytes()];
    for chunk in 0..GEO.chunks {
        let at = chunk as usize * 16384;
        vol.read(chunk * 32, &mut got[at..at + 16384]).unwrap();
    }
    assert!(
        got == shadow.data,
        "volume differs from the shadow after reload"
    );
    vol.unload().unwrap();

    Volume::destroy_backend(backend(&backing, &store)).unwrap();
    assert!(store.current(&path).is_none(), "pm file left");
    assert_eq!(&backing.image()[..8], &[0; 8], "signature left");
}

#[test]
fn partial_blocks_and_bad_ranges_are_einval() {
    let backing = MemBacking::new(GEO.blocklen, GEO.blockcnt(), Mode::Immediate);
    let store = MemStore::new();
    let vol = Volume::init_plan(plan(), backend(&backing, &store)).unwrap();
    let writes = backing.op_counts().1;
    // Not a whole number of blocks, even when less than one (which the engine would
    // take as an empty request).
    for len in [100, 513, 1023] {
        assert_eq!(
            errno_of(vol.write(0, &vec![1; len])),
            Errno::EINVAL,
            "{len}"
        );
        assert_eq!(
            errno_of(vol.read(0, &mut vec![1; len])),
            Errno::EINVAL,
            "{len}"
        );
    }
    // Past the end of the volume.
    assert_eq!(
        errno_of(vol.write(GEO.total_blocks(), &[1; 512])),
        Errno::EINVAL
    );
    assert_eq!(backing.op_counts().1, writes, "a refused write wrote");
    let mut zeros = vec![9u8; 1024];
    vol.read(4, &mut zeros).unwrap();
    assert!(zeros.iter().all(|&b| b == 0));
    vol.unload().unwrap();
}

#[test]
fn a_device_completing_later_is_einprogress() {
    let backing = MemBacking::new(GEO.blocklen, GEO.blockcnt(), Mode::Deferred);
    let store = MemStore::new();
    let err = Volume::init_plan(plan(), backend(&backing, &store))
        .err()
        .unwrap();
    assert_eq!(err.errno(), Errno(libc::EINPROGRESS));
    assert!(err.detail().contains("complete inside the call"), "{err}");
    // The init goes on, and its volume is dropped when it completes.
    backing.poll();
    assert_eq!(store.paths().len(), 1);

    let backing = MemBacking::new(GEO.blocklen, GEO.blockcnt(), Mode::Immediate);
    let store = MemStore::new();
    let vol = Volume::init_plan(plan(), backend(&backing, &store)).unwrap();
    backing.set_mode(Mode::Deferred);
    let data = text(4, 16384);
    assert_eq!(errno_of(vol.write(0, &data)), Errno(libc::EINPROGRESS));
    // The write itself went on: once the device completes it, it is there.
    backing.poll();
    backing.set_mode(Mode::Immediate);
    let mut got = vec![0u8; 16384];
    vol.read(0, &mut got).unwrap();
    assert_eq!(got, data);
    vol.unload().unwrap();
}
