//! For tests and fuzz targets: a rig of test doubles (device, codec, pm store) in
//! either completion mode, blocking helpers that poll until a callback fires, a
//! deterministic RNG and data of varied compressibility.

use std::cell::RefCell;
use std::rc::Rc;

use crate::backing::{BackingDevice, MemBacking, Mode};
use crate::check::Report;
use crate::codec::{SyncCodec, TestCodec, ZstdCodec};
use crate::error::Result;
use crate::format::{self, Params};
use crate::journal::Images;
use crate::pm::MemStore;
use crate::vol::{Backend, InitPlan, Volume};

/// A small geometry: 512-byte blocks, 1 KiB io units, 4 KiB chunks.
pub fn small_params() -> Params {
    Params {
        backing_io_unit_size: 1024,
        logical_block_size: 512,
        chunk_size: 4096,
        ..Default::default()
    }
}

/// Blocks of 512 bytes a device needs for `chunks` logical chunks of 4 KiB.
pub fn small_blockcnt(chunks: u64) -> u64 {
    (chunks + format::EXTRA_CHUNKS) * 8
}

pub struct Rig {
    pub backing: MemBacking,
    pub codec: TestCodec,
    pub store: MemStore,
}

impl Rig {
    pub fn new(blocklen: u32, blockcnt: u64, mode: Mode) -> Rig {
        Rig::with_codec(blocklen, blockcnt, mode, ZstdCodec)
    }

    /// A rig compressing with `codec` (`RleCodec` under miri, which cannot run zstd).
    pub fn with_codec(
        blocklen: u32,
        blockcnt: u64,
        mode: Mode,
        codec: impl SyncCodec + 'static,
    ) -> Rig {
        Rig {
            backing: MemBacking::new(blocklen, blockcnt, mode),
            codec: TestCodec::new(codec, mode),
            store: MemStore::new(),
        }
    }

    /// A rig holding what a crash left: the device image and the pm files.
    pub fn from_images(blocklen: u32, images: &Images, mode: Mode) -> Rig {
        let rig = Rig {
            backing: MemBacking::from_image(blocklen, images.backing.clone(), mode),
            codec: TestCodec::new(ZstdCodec, mode),
            store: MemStore::new(),
        };
        for (path, bytes) in &images.pm {
            rig.store.insert(path, bytes.clone());
        }
        rig
    }

    pub fn set_mode(&self, mode: Mode) {
        self.backing.set_mode(mode);
        self.codec.set_mode(mode);
    }

    pub fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: Box::new(self.codec.clone()),
            store: Box::new(self.store.clone()),
        }
    }

    /// Delivers one pending completion (codec first); false when nothing is pending.
    pub fn poll_one(&self) -> bool {
        self.codec.poll_one() || self.backing.poll_one()
    }

    pub fn poll_all(&self) {
        while self.poll_one() {}
    }

    /// Polls until `slot` is filled by a callback.
    pub fn wait<T>(&self, slot: &Rc<RefCell<Option<T>>>) -> T {
        loop {
            if let Some(v) = slot.borrow_mut().take() {
                return v;
            }
            assert!(
                self.poll_one(),
                "nothing pending, and the callback never ran"
            );
        }
    }

    pub fn init(&self, params: Params) -> Result<Volume> {
        let plan = InitPlan::new(
            params,
            self.backing.blocklen(),
            self.backing.blockcnt(),
            "/pm",
        )?;
        let slot = Rc::default();
        Volume::init(plan, self.backend(), filler(&slot));
        self.wait(&slot)
    }

    pub fn load(&self) -> Result<Volume> {
        let slot = Rc::default();
        Volume::load(self.backend(), filler(&slot));
        self.wait(&slot)
    }

    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<()> {
        let blocks = (data.len() / vol.params().logical_block_size as usize) as u64;
        let slot = Rc::default();
        let fill = filler(&slot);
        vol.writev(offset, blocks, vec![data.to_vec()], move |r, _| fill(r));
        self.wait(&slot)
    }

    pub fn read(&self, vol: &Volume, offset: u64, blocks: u64) -> Result<Vec<u8>> {
        let len = blocks as usize * vol.params().logical_block_size as usize;
        let slot = Rc::default();
        let fill = filler(&slot);
        vol.readv(offset, blocks, vec![vec![0xA5; len]], move |r, segs| {
            fill(r.map(|()| segs.concat()))
        });
        self.wait(&slot)
    }

    pub fn unload(&self, vol: &Volume) -> Result<()> {
        let slot = Rc::default();
        vol.unload(filler(&slot));
        self.wait(&slot)
    }

    pub fn check(&self, vol: &Volume) -> Result<Report> {
        let slot = Rc::default();
        vol.check(filler(&slot));
        self.wait(&slot)
    }
}

/// A callback that stores its argument in `slot`.
pub fn filler<T: 'static>(slot: &Rc<RefCell<Option<T>>>) -> impl FnOnce(T) + 'static {
    let slot = Rc::clone(slot);
    move |v| *slot.borrow_mut() = Some(v)
}

/// xorshift64*: deterministic, seedable, no dependencies.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

/// `len` bytes of one of several kinds: random (stored raw), text-like, runs, zeros,
/// half random.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let kind = rng.below(5);
    let mut out = vec![0u8; len];
    match kind {
        0 => out.iter_mut().for_each(|b| *b = rng.next_u64() as u8),
        1 => {
            let words = [
                &b"reduce "[..],
                b"chunk ",
                b"volume ",
                b"io unit ",
                b"zstd ",
            ];
            let mut i = 0;
            while i < len {
                let w = words[rng.below(words.len() as u64) as usize];
                let n = w.len().min(len - i);
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        }
        2 => {
            let mut i = 0;
            while i < len {
                let run = (1 + rng.below(200) as usize).min(len - i);
                let b = rng.next_u64() as u8;
                out[i..i + run].fill(b);
                i += run;
            }
        }
        3 => {}
        _ => out[..len / 2]
            .iter_mut()
            .for_each(|b| *b = rng.next_u64() as u8),
    }
    out
}
