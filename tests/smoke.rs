use std::cell::RefCell;
use std::rc::Rc;

use reduce::testkit::{MemBacking, MemStore, Mode};
use reduce::*;

#[test]
fn write_read_reload() {
    let backing = MemBacking::new(512, 20480, Mode::Immediate);
    let store = MemStore::new();
    let backend = || Backend {
        backing: Box::new(backing.clone()),
        codec: Box::new(ZstdCodec),
        store: Box::new(store.clone()),
    };
    let params = Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: 16384,
        ..Default::default()
    };
    let plan = InitPlan::new(params, 512, 20480, "/pm").unwrap();
    let vol: Rc<RefCell<Option<Volume>>> = Rc::default();
    let v2 = vol.clone();
    Volume::init(plan, backend(), move |r| {
        *v2.borrow_mut() = Some(r.unwrap())
    });
    let v = vol.borrow().clone().unwrap();
    let data: Vec<u8> = (0..16384u32).map(|i| (i / 100) as u8).collect();
    let done = Rc::new(RefCell::new(0));
    let d = done.clone();
    v.writev(32, 32, vec![data.clone()], move |r, _| {
        r.unwrap();
        *d.borrow_mut() += 1;
    });
    let d = done.clone();
    let expect = data.clone();
    v.readv(
        32,
        32,
        vec![vec![0; 8192], vec![0; 8192]],
        move |r, segs| {
            r.unwrap();
            assert_eq!(segs.concat(), expect);
            *d.borrow_mut() += 1;
        },
    );
    assert_eq!(*done.borrow(), 2);
    // One io unit of data, two of metadata.
    assert_eq!(v.info().allocated_io_units, 3);
    assert_eq!(v.stats().io_units_in_use, 1);
    v.unload(|r| r.unwrap());
    let vol2: Rc<RefCell<Option<Volume>>> = Rc::default();
    let v3 = vol2.clone();
    Volume::load(backend(), move |r| *v3.borrow_mut() = Some(r.unwrap()));
    let v = vol2.borrow().clone().unwrap();
    let d = done.clone();
    v.readv(40, 8, vec![vec![0; 4096]], move |r, segs| {
        r.unwrap();
        assert_eq!(segs[0], data[4096..8192]);
        *d.borrow_mut() += 1;
    });
    assert_eq!(*done.borrow(), 3);
}
