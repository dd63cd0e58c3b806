//! Errors explain themselves: a refused init or load names the check that failed, an
//! `EIO` names the chunk and what went wrong with it, and the log sink gets the same
//! text as the error's `Display`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

mod common;

use common::PmLayout;
use reduce::log::{self, Level};
use reduce::testkit::{Geo, MemBacking, MemStore, Mode};
use reduce::{Backend, BackingDevice, Errno, Error, InitPlan, Params, PmStore, Volume, ZstdCodec};

const BLOCKLEN: u32 = 512;
const CHUNKS: u64 = 16;

fn params() -> Params {
    Params {
        backing_io_unit_size: 1024,
        logical_block_size: 512,
        chunk_size: 4096,
        ..Default::default()
    }
}

/// A device and pm store that complete inside every call, so callbacks have run by the
/// time a call returns.
struct Setup {
    backing: MemBacking,
    store: MemStore,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            backing: MemBacking::new(BLOCKLEN, Geo::small(CHUNKS).blockcnt(), Mode::Immediate),
            store: MemStore::new(),
        }
    }

    fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: Box::new(ZstdCodec),
            store: Box::new(self.store.clone()),
        }
    }

    fn init(&self) -> Volume {
        let plan = InitPlan::new(params(), BLOCKLEN, self.backing.blockcnt(), "/pm").unwrap();
        let slot = Rc::new(RefCell::new(None));
        let s = slot.clone();
        Volume::init(plan, self.backend(), move |r| *s.borrow_mut() = Some(r));
        let vol = slot.borrow_mut().take().expect("init completed");
        vol.unwrap()
    }

    fn load(&self) -> reduce::Result<Volume> {
        let slot = Rc::new(RefCell::new(None));
        let s = slot.clone();
        Volume::load(self.backend(), move |r| *s.borrow_mut() = Some(r));
        let r = slot.borrow_mut().take();
        r.expect("load completed")
    }

    /// Writes a volume, unloads it and returns its pm path.
    fn saved(&self) -> std::path::PathBuf {
        let vol = self.init();
        write(&vol, 3, &text(4096)).unwrap();
        let path = vol.pm_path();
        unload(&vol);
        path
    }
}

fn text(len: usize) -> Vec<u8> {
    b"compressible text "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn write(vol: &Volume, chunk: u64, data: &[u8]) -> reduce::Result<()> {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    vol.writev(chunk * 8, 8, vec![data.to_vec()], move |r, _| {
        *s.borrow_mut() = Some(r)
    });
    let r = slot.borrow_mut().take();
    r.expect("write completed")
}

fn read(vol: &Volume, chunk: u64) -> reduce::Result<Vec<u8>> {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    vol.readv(chunk * 8, 8, vec![vec![0; 4096]], move |r, segs| {
        *s.borrow_mut() = Some(r.map(|()| segs.concat()))
    });
    let r = slot.borrow_mut().take();
    r.expect("read completed")
}

fn unload(vol: &Volume) {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    vol.unload(move |r| *s.borrow_mut() = Some(r));
    let r = slot.borrow_mut().take();
    r.expect("unload completed").unwrap();
}

fn refused_load(setup: &Setup) -> Error {
    match setup.load() {
        Ok(_) => panic!("load succeeded"),
        Err(e) => e,
    }
}

fn assert_says(e: &Error, words: &[&str]) {
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{text:?} does not say {w:?}");
    }
    assert!(text.ends_with(&e.errno().to_string()), "{text:?}");
}

#[test]
fn load_without_signature_says_so() {
    let setup = Setup::new();
    let e = refused_load(&setup);
    assert_eq!(e, Errno::EILSEQ);
    assert_says(&e, &["load", "signature"]);
}

#[test]
fn load_of_a_pm_file_of_the_wrong_size_names_the_file_and_sizes() {
    let setup = Setup::new();
    let path = setup.saved();
    let mut pm = setup.store.current(&path).unwrap();
    let right = pm.len();
    pm.extend_from_slice(&[0xFF; 64]);
    setup.store.insert(&path, pm);
    let e = refused_load(&setup);
    assert_eq!(e, Errno::EILSEQ);
    assert_says(
        &e,
        &[
            path.to_str().unwrap(),
            &(right + 64).to_string(),
            &right.to_string(),
        ],
    );
}

#[test]
fn load_of_a_pm_file_with_another_superblock_says_so() {
    let setup = Setup::new();
    let path = setup.saved();
    let mut pm = setup.store.current(&path).unwrap();
    pm[8] ^= 1; // the uuid's first byte
    setup.store.insert(&path, pm);
    let e = refused_load(&setup);
    assert_eq!(e, Errno::EILSEQ);
    assert_says(&e, &[path.to_str().unwrap(), "superblock differs"]);
}

#[test]
fn load_of_a_missing_pm_file_names_it() {
    let setup = Setup::new();
    let path = setup.saved();
    setup.store.remove(&path).unwrap();
    let e = refused_load(&setup);
    assert_eq!(e, Errno::ENOENT);
    assert_says(&e, &["load", path.to_str().unwrap()]);
}

#[test]
fn invalid_params_name_the_param() {
    let mut p = params();
    p.chunk_size = 4096 + 512;
    let e = InitPlan::new(p, BLOCKLEN, 1 << 20, "/pm").unwrap_err();
    assert_eq!(e, Errno::EINVAL);
    assert_says(
        &e,
        &["init", "chunk_size 4608", "backing_io_unit_size 1024"],
    );

    let e = InitPlan::new(params(), BLOCKLEN, 100 * 8, "/pm").unwrap_err();
    assert_eq!(e, Errno::EINVAL);
    assert_says(&e, &["too small", "409600 bytes"]);
}

#[test]
fn checksum_mismatch_names_the_chunk() {
    let setup = Setup::new();
    let vol = setup.init();
    write(&vol, 5, &text(4096)).unwrap();
    // Find chunk 5's first io unit through the persisted maps, and damage it.
    let pm = setup.store.persisted(vol.pm_path()).unwrap();
    let layout = PmLayout::new(Geo::small(CHUNKS), false);
    let index = layout.entry(&pm, 5).expect("chunk 5 written");
    let unit = layout.chunk_map(&pm, index).2[0];
    setup.backing.poke(unit as usize * 1024 + 10, &[0xEE; 8]);
    let e = read(&vol, 5).unwrap_err();
    assert_eq!(e, Errno::EIO);
    assert_says(&e, &["chunk 5", "checksum"]);
    assert_eq!(
        read(&vol, 3).unwrap(),
        vec![0; 4096],
        "chunk 3 never written"
    );
    unload(&vol);
}

#[test]
fn a_failed_persist_names_the_chunk() {
    let setup = Setup::new();
    let vol = setup.init();
    setup.store.set_fail_persist(true);
    let e = write(&vol, 2, &text(4096)).unwrap_err();
    assert_eq!(e, Errno::EIO);
    assert_says(&e, &["chunk 2", "persisting"]);
    setup.store.set_fail_persist(false);
    unload(&vol);
}

#[test]
fn the_log_gets_the_same_text() {
    let seen: Arc<Mutex<Vec<(Level, String)>>> = Arc::default();
    let sink = seen.clone();
    log::set_sink(Some(Arc::new(move |level, text: &str| {
        sink.lock().unwrap().push((level, text.to_string()))
    })));
    let setup = Setup::new();
    let e = refused_load(&setup);
    log::set_sink(None);
    let want = (Level::Error, e.to_string());
    assert!(seen.lock().unwrap().contains(&want), "{want:?} not logged");
}
