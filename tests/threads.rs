//! A volume belongs to one thread, as in SPDK; separate volumes on separate threads
//! run at once. Each thread here owns a volume with its pm file in a shared directory
//! (real files) and drives random I/O against its own model, in its own completion
//! mode, with a reload, then destroys it.

use std::cell::RefCell;
use std::rc::Rc;

use reduce::testkit::*;
use reduce::*;

const THREADS: u64 = 6;
const CHUNKS: u64 = 32;

fn one_volume(dir: &str, seed: u64) -> u64 {
    let mode = if seed % 2 == 0 {
        Mode::Immediate
    } else {
        Mode::Deferred
    };
    let geo = Geo::small(CHUNKS);
    let rig = Rig::new(geo, mode, CodecKind::Zstd);
    let backend = || Backend {
        backing: Box::new(rig.backing.clone()),
        codec: Box::new(ZstdCodec),
        store: Box::new(FileStore),
    };
    let plan = InitPlan::new(geo.params(), geo.blocklen, geo.blockcnt(), dir).unwrap();
    let path = plan.pm_path().to_path_buf();
    let slot = Rc::new(RefCell::new(None));
    Volume::init(plan, backend(), filler(&slot));
    let mut vol = rig.wait(&slot).expect("init");
    let mut model = vec![0u8; CHUNKS as usize * 4096];
    let mut rng = Rng::new(seed);
    for op in 0..3000u64 {
        let chunk = rng.below(CHUNKS);
        let first = rng.below(8);
        let blocks = 1 + rng.below(8 - first);
        let offset = chunk * 8 + first;
        let range = offset as usize * 512..(offset + blocks) as usize * 512;
        if rng.chance(50) {
            let bytes = data(seed * 10_000 + op, range.len());
            rig.write(&vol, offset, &bytes).unwrap();
            model[range].copy_from_slice(&bytes);
        } else {
            assert_eq!(rig.read(&vol, offset, blocks).unwrap(), model[range]);
        }
        if op == 1500 {
            rig.unload(&vol).unwrap();
            let slot = Rc::new(RefCell::new(None));
            Volume::load(backend(), filler(&slot));
            vol = rig.wait(&slot).expect("reload");
        }
    }
    for chunk in 0..CHUNKS {
        let want = &model[chunk as usize * 4096..][..4096];
        assert_eq!(rig.read(&vol, chunk * 8, 8).unwrap(), want);
    }
    assert!(rig.check(&vol).unwrap().is_clean());
    rig.unload(&vol).unwrap();
    let slot = Rc::new(RefCell::new(None));
    Volume::destroy(backend(), filler(&slot));
    rig.wait(&slot).expect("destroy");
    assert!(!path.exists(), "destroy left the pm file");
    3000
}

#[test]
fn volumes_on_separate_threads() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_string();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let d = dir_path.clone();
            std::thread::spawn(move || one_volume(&d, t + 1))
        })
        .collect();
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("threads: {THREADS} volumes on {THREADS} threads, {ops} requests, all verified");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
