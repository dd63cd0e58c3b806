//! The rig: a volume's whole backend as test doubles (device, pm store, codec), with
//! blocking helpers that deliver pending completions until a callback fires. A lost
//! completion or a callback run twice fails the test instead of hanging it or going
//! unnoticed.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use super::backing::{MemBacking, Mode};
use super::codec::TestCodec;
use super::geo::Geo;
use super::journal::Images;
use super::rle::RleCodec;
use super::store::MemStore;
use crate::check::Report;
use crate::codec::{Codec, ZstdCodec};
use crate::error::Result;
use crate::format::Params;
use crate::vol::{Backend, InitPlan, Volume};

/// Completions a helper delivers before it gives up: a completion that never comes
/// must fail the test, not hang it.
pub const POLL_CAP: usize = 5_000_000;

/// The directory of the rig's pm files (in its [`MemStore`]).
const PM_DIR: &str = "/pm";

/// The codec a rig's volumes compress with.
#[derive(Clone)]
pub enum CodecKind {
    /// The built-in zstd codec, completing inside the call as a user's would.
    Zstd,
    /// Run-length coding in pure Rust, for miri (which cannot run zstd's C code).
    Rle,
    /// A codec double that may complete later, from `poll_one`, and may be told to fail.
    Test(TestCodec),
}

impl CodecKind {
    /// A zstd codec double completing in `mode`.
    pub fn test(mode: Mode) -> CodecKind {
        CodecKind::Test(TestCodec::new(ZstdCodec, mode))
    }

    pub fn boxed(&self) -> Box<dyn Codec> {
        match self {
            CodecKind::Zstd => Box::new(ZstdCodec),
            CodecKind::Rle => Box::new(RleCodec),
            CodecKind::Test(c) => Box::new(c.clone()),
        }
    }

    /// The codec double, to set its faults or its mode. Panics for a plain codec.
    pub fn double(&self) -> &TestCodec {
        match self {
            CodecKind::Test(c) => c,
            _ => panic!("the rig runs a plain codec, not a double"),
        }
    }

    pub fn poll_one(&self) -> bool {
        match self {
            CodecKind::Test(c) => c.poll_one(),
            _ => false,
        }
    }
}

/// A device, a pm store and a codec: everything a volume runs on.
#[derive(Clone)]
pub struct Rig {
    pub geo: Geo,
    pub backing: MemBacking,
    pub store: MemStore,
    pub codec: CodecKind,
}

/// A callback slot: filled once by a completion.
pub type Slot<T> = Rc<RefCell<Option<T>>>;

pub fn slot<T>() -> Slot<T> {
    Rc::new(RefCell::new(None))
}

/// A callback that fills `slot`, and panics when it is called twice.
pub fn filler<T: 'static>(slot: &Slot<T>) -> impl FnOnce(T) + 'static {
    let s = slot.clone();
    move |v| {
        let old = s.borrow_mut().replace(v);
        assert!(old.is_none(), "callback called twice");
    }
}

/// Calls `poll` until `slot` is filled; see [`Rig::wait`].
fn wait_with<T>(slot: &Slot<T>, mut poll: impl FnMut() -> bool) -> T {
    let mut n = 0;
    loop {
        if let Some(v) = slot.borrow_mut().take() {
            return v;
        }
        assert!(poll(), "nothing pending, and the callback never ran");
        n += 1;
        assert!(n < POLL_CAP, "callback never ran after {n} completions");
    }
}

/// Like [`Rig::wait`], delivering only `backing`'s completions: for a volume whose other
/// parts are not a rig's.
pub fn wait_on<T>(backing: &MemBacking, slot: &Slot<T>) -> T {
    wait_with(slot, || backing.poll_one())
}

impl Rig {
    pub fn new(geo: Geo, mode: Mode, codec: CodecKind) -> Rig {
        Rig {
            geo,
            backing: MemBacking::new(geo.blocklen, geo.blockcnt(), mode),
            store: MemStore::new(),
            codec,
        }
    }

    /// A rig holding what a crash left: the device image and the pm files.
    pub fn from_images(geo: Geo, images: &Images, mode: Mode, codec: CodecKind) -> Rig {
        let rig = Rig {
            geo,
            backing: MemBacking::from_image(geo.blocklen, images.backing.clone(), mode),
            store: MemStore::new(),
            codec,
        };
        for (path, bytes) in &images.pm {
            rig.store.insert(path, bytes.clone());
        }
        rig
    }

    /// Switches the device, and a codec double, to complete in `mode`.
    pub fn set_mode(&self, mode: Mode) {
        self.backing.set_mode(mode);
        if let CodecKind::Test(c) = &self.codec {
            c.set_mode(mode);
        }
    }

    pub fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: self.codec.boxed(),
            store: Box::new(self.store.clone()),
        }
    }

    /// Delivers pending completions, codec first, until `slot` is filled. Panics when
    /// nothing is pending and the callback has not run, or after [`POLL_CAP`]
    /// completions.
    pub fn wait<T>(&self, slot: &Slot<T>) -> T {
        wait_with(slot, || self.poll_one())
    }

    /// Delivers one pending completion, codec first; false when nothing is pending.
    pub fn poll_one(&self) -> bool {
        self.codec.poll_one() || self.backing.poll_one()
    }

    /// Completes every pending operation (completions may submit more).
    pub fn drain(&self) {
        let mut n = 0;
        while self.poll_one() {
            n += 1;
            assert!(n < POLL_CAP, "device never went idle");
        }
    }

    pub fn plan(&self, uuid: [u8; 16]) -> InitPlan {
        let params = Params {
            uuid,
            ..self.geo.params()
        };
        InitPlan::new(params, self.geo.blocklen, self.geo.blockcnt(), PM_DIR).unwrap()
    }

    /// A new volume of the rig's geometry, with a random uuid.
    pub fn init(&self) -> Volume {
        self.init_plan(self.plan([0; 16])).unwrap()
    }

    pub fn init_plan(&self, plan: InitPlan) -> Result<Volume> {
        let s = slot();
        Volume::init(plan, self.backend(), filler(&s));
        self.wait(&s)
    }

    pub fn load(&self) -> Result<Volume> {
        let s = slot();
        Volume::load(self.backend(), filler(&s));
        self.wait(&s)
    }

    pub fn unload(&self, vol: &Volume) -> Result<()> {
        let s = slot();
        vol.unload(filler(&s));
        self.wait(&s)
    }

    pub fn destroy(&self) -> Result<()> {
        let s = slot();
        Volume::destroy(self.backend(), filler(&s));
        self.wait(&s)
    }

    pub fn check(&self, vol: &Volume) -> Result<Report> {
        let s = slot();
        vol.check(filler(&s));
        self.wait(&s)
    }

    /// Writes `segs` at block `offset` (`length` derived from their total). Block sizes
    /// come from the volume, which need not have the rig's geometry (a loaded image).
    pub fn writev(&self, vol: &Volume, offset: u64, segs: Vec<Vec<u8>>) -> Result<()> {
        let bytes: usize = segs.iter().map(Vec::len).sum();
        let lbs = vol.params().logical_block_size as usize;
        let s = slot();
        let f = filler(&s);
        vol.writev(offset, (bytes / lbs) as u64, segs, move |r, _| f(r));
        self.wait(&s)
    }

    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<()> {
        self.writev(vol, offset, vec![data.to_vec()])
    }

    /// Unmaps `length` blocks at `offset`.
    pub fn unmap(&self, vol: &Volume, offset: u64, length: u64) -> Result<()> {
        let s = slot();
        vol.unmap(offset, length, filler(&s));
        self.wait(&s)
    }

    /// Reads `length` blocks at `offset` into segments of `seg_lens` bytes.
    pub fn readv(
        &self,
        vol: &Volume,
        offset: u64,
        length: u64,
        seg_lens: &[usize],
    ) -> Result<Vec<u8>> {
        let segs = seg_lens.iter().map(|&n| vec![0xA5; n]).collect();
        let s = slot();
        let f = filler(&s);
        vol.readv(offset, length, segs, move |r, segs| {
            f(r.map(|()| segs.concat()))
        });
        self.wait(&s)
    }

    pub fn read(&self, vol: &Volume, offset: u64, length: u64) -> Result<Vec<u8>> {
        let lbs = u64::from(vol.params().logical_block_size);
        self.readv(vol, offset, length, &[(length * lbs) as usize])
    }

    /// Reads chunk `chunk` whole.
    pub fn read_chunk(&self, vol: &Volume, chunk: u64) -> Result<Vec<u8>> {
        let p = vol.params();
        let bpc = u64::from(p.chunk_size / p.logical_block_size);
        self.read(vol, chunk * bpc, bpc)
    }

    /// The pm file's path (there is exactly one).
    pub fn pm_path(&self) -> PathBuf {
        let paths = self.store.paths();
        assert_eq!(paths.len(), 1, "pm files: {paths:?}");
        paths[0].clone()
    }

    /// The persisted pm image.
    pub fn pm_persisted(&self) -> Vec<u8> {
        self.store.persisted(self.pm_path()).unwrap()
    }
}
