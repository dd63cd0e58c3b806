//! Shared harness for the integration tests: a volume over `MemBacking` + `MemStore`,
//! blocking helpers that poll the device until a callback fires (panicking instead of
//! hanging), a shadow model of the logical volume, a deterministic RNG, data
//! generators, and an independent parser of the pm layout (written from docs/DESIGN.md §4,
//! not from the library's encoder).

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use reduce::{
    Backend, Codec, Errno, InitPlan, MemBacking, MemStore, Mode, Params, Result, RleCodec,
    TestCodec, Volume, ZstdCodec,
};

/// Poll steps after which a helper gives up: a lost completion must fail the test,
/// not hang it.
pub const POLL_CAP: usize = 5_000_000;

pub const SUPERBLOCK: usize = 4096;
pub const PATH_REGION: usize = 4096;
pub const EXTRA: u64 = 128;
pub const EMPTY: u64 = u64::MAX;

/// Volume geometry as the tests think of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geo {
    pub blocklen: u32,
    pub io_unit: u32,
    pub chunk: u32,
    pub lbs: u32,
    /// Logical chunks of the volume.
    pub chunks: u64,
}

impl Geo {
    pub const fn new(blocklen: u32, io_unit: u32, chunk: u32, lbs: u32, chunks: u64) -> Geo {
        Geo {
            blocklen,
            io_unit,
            chunk,
            lbs,
            chunks,
        }
    }

    /// Blocks of a backing device that holds exactly `chunks + 128` chunks.
    pub fn blockcnt(&self) -> u64 {
        (self.chunks + EXTRA) * u64::from(self.chunk) / u64::from(self.blocklen)
    }

    pub fn vol_bytes(&self) -> usize {
        (self.chunks * u64::from(self.chunk)) as usize
    }

    pub fn blocks_per_chunk(&self) -> u64 {
        u64::from(self.chunk / self.lbs)
    }

    pub fn total_blocks(&self) -> u64 {
        self.chunks * self.blocks_per_chunk()
    }

    pub fn iou_per_chunk(&self) -> u64 {
        u64::from(self.chunk / self.io_unit)
    }

    pub fn total_io_units(&self) -> u64 {
        (self.chunks + EXTRA) * self.iou_per_chunk()
    }

    /// Io units overlapping the 8 KiB of metadata at the start of the device.
    pub fn reserved_io_units(&self) -> u64 {
        (8192u64).div_ceil(u64::from(self.io_unit))
    }

    pub fn params(&self) -> Params {
        Params {
            backing_io_unit_size: self.io_unit,
            logical_block_size: self.lbs,
            chunk_size: self.chunk,
            ..Default::default()
        }
    }

    /// The pm layout of docs/DESIGN.md §4 (fixed formula).
    pub fn pm(&self) -> PmLayout {
        PmLayout::new(*self, false)
    }
}

fn round64(x: u64) -> u64 {
    x.div_ceil(64) * 64
}

/// Offsets in the pm file, computed from docs/DESIGN.md §4.
#[derive(Clone, Copy, Debug)]
pub struct PmLayout {
    pub geo: Geo,
    pub logical_map: usize,
    pub chunk_maps: usize,
    pub stride: usize,
    pub size: usize,
}

impl PmLayout {
    /// `original`: the pre-fix size formula that left out each entry's 8-byte header.
    pub fn new(geo: Geo, original: bool) -> PmLayout {
        let logical_map = SUPERBLOCK;
        let chunk_maps = logical_map + round64(geo.chunks * 8) as usize;
        let stride = 8 + 8 * geo.iou_per_chunk() as usize;
        let counted = if original { stride - 8 } else { stride };
        let size = chunk_maps + round64((geo.chunks + EXTRA) * counted as u64) as usize;
        PmLayout {
            geo,
            logical_map,
            chunk_maps,
            stride,
            size,
        }
    }

    pub fn entry_offset(&self, chunk: u64) -> usize {
        self.logical_map + chunk as usize * 8
    }

    pub fn map_offset(&self, index: u64) -> usize {
        self.chunk_maps + index as usize * self.stride
    }

    pub fn entry(&self, pm: &[u8], chunk: u64) -> Option<u64> {
        match u64_at(pm, self.entry_offset(chunk)) {
            EMPTY => None,
            i => Some(i),
        }
    }

    /// (compressed_size, reserved word, io unit slots) of chunk map `index`.
    pub fn chunk_map(&self, pm: &[u8], index: u64) -> (u32, u32, Vec<u64>) {
        let base = self.map_offset(index);
        let slots = (0..self.geo.iou_per_chunk() as usize)
            .map(|k| u64_at(pm, base + 8 + 8 * k))
            .collect();
        (u32_at(pm, base), u32_at(pm, base + 4), slots)
    }

    /// Every stored chunk: (chunk, map index, compressed size, checksum word, io units
    /// in use). Checks docs/DESIGN.md's invariants on the way: indices in range, no map or io
    /// unit shared, unused slots all-ones.
    pub fn stored(&self, pm: &[u8]) -> Vec<StoredChunk> {
        let g = self.geo;
        let mut maps_seen = std::collections::HashSet::new();
        let mut units_seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for chunk in 0..g.chunks {
            let Some(index) = self.entry(pm, chunk) else {
                continue;
            };
            assert!(index < g.chunks + EXTRA, "chunk {chunk}: map {index}");
            assert!(self.map_offset(index) + self.stride <= pm.len());
            assert!(maps_seen.insert(index), "map {index} shared");
            let (size, checksum, slots) = self.chunk_map(pm, index);
            assert!(size > 0 && size <= g.chunk, "chunk {chunk}: size {size}");
            let used = size.div_ceil(g.io_unit) as usize;
            for (k, &u) in slots.iter().enumerate() {
                if k < used {
                    assert!(
                        u >= g.reserved_io_units() && u < g.total_io_units(),
                        "chunk {chunk}: io unit {u}"
                    );
                    assert!(units_seen.insert(u), "io unit {u} shared");
                }
            }
            out.push(StoredChunk {
                chunk,
                index,
                size,
                checksum,
                io_units: slots[..used].to_vec(),
            });
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    pub chunk: u64,
    pub index: u64,
    pub size: u32,
    pub checksum: u32,
    pub io_units: Vec<u64>,
}

impl StoredChunk {
    /// The stored bytes (`size` of them) gathered from the device image.
    pub fn bytes(&self, image: &[u8], io_unit: u32) -> Vec<u8> {
        let iu = io_unit as usize;
        let mut v = Vec::new();
        for &u in &self.io_units {
            v.extend_from_slice(&image[u as usize * iu..][..iu]);
        }
        v.truncate(self.size as usize);
        v
    }
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// CRC-32C (Castagnoli, reflected, init and xorout all-ones), bitwise: our own, so the
/// test does not share the library's checksum code.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// docs/DESIGN.md §4: the checksum word of a chunk; a CRC that equals the "no checksum" value
/// would be ambiguous, the library folds it to 0.
pub fn expected_checksum(stored: &[u8]) -> u32 {
    match crc32c(stored) {
        u32::MAX => 0,
        c => c,
    }
}

#[derive(Clone)]
pub enum CodecKind {
    Zstd,
    Rle,
    /// A codec double (zstd inside) that may complete later, from `poll_one`, and
    /// may be told to fail.
    Test(TestCodec),
}

impl CodecKind {
    pub fn boxed(&self) -> Box<dyn Codec> {
        match self {
            CodecKind::Zstd => Box::new(ZstdCodec),
            CodecKind::Rle => Box::new(RleCodec),
            CodecKind::Test(c) => Box::new(c.clone()),
        }
    }

    /// A zstd codec double completing in `mode`.
    pub fn test(mode: Mode) -> CodecKind {
        CodecKind::Test(TestCodec::new(ZstdCodec, mode))
    }

    pub fn poll_one(&self) -> bool {
        match self {
            CodecKind::Test(c) => c.poll_one(),
            _ => false,
        }
    }
}

pub const PM_DIR: &str = "/pm";

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

impl Rig {
    pub fn new(geo: Geo, mode: Mode, codec: CodecKind) -> Rig {
        Rig {
            geo,
            backing: MemBacking::new(geo.blocklen, geo.blockcnt(), mode),
            store: MemStore::new(),
            codec,
        }
    }

    pub fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: self.codec.boxed(),
            store: Box::new(self.store.clone()),
        }
    }

    /// Polls the device until `slot` is filled. Panics when nothing is pending and the
    /// callback has not run, or after [`POLL_CAP`] completions.
    pub fn wait<T>(&self, slot: &Slot<T>) -> T {
        let mut n = 0;
        loop {
            if let Some(v) = slot.borrow_mut().take() {
                return v;
            }
            assert!(
                self.poll_one(),
                "nothing pending, and the callback never ran"
            );
            n += 1;
            assert!(n < POLL_CAP, "callback never ran after {n} completions");
        }
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

    /// Writes `segs` at block `offset` (`length` derived from their total).
    pub fn writev(&self, vol: &Volume, offset: u64, segs: Vec<Vec<u8>>) -> Result<()> {
        let bytes: usize = segs.iter().map(Vec::len).sum();
        let s = slot();
        let f = filler(&s);
        vol.writev(
            offset,
            (bytes / self.geo.lbs as usize) as u64,
            segs,
            move |r, _| f(r),
        );
        self.wait(&s)
    }

    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8]) -> Result<()> {
        self.writev(vol, offset, vec![data.to_vec()])
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
        self.readv(
            vol,
            offset,
            length,
            &[(length * u64::from(self.geo.lbs)) as usize],
        )
    }

    /// Reads chunk `chunk` whole.
    pub fn read_chunk(&self, vol: &Volume, chunk: u64) -> Result<Vec<u8>> {
        let bpc = self.geo.blocks_per_chunk();
        self.read(vol, chunk * bpc, bpc)
    }

    /// The pm file's path (there is exactly one).
    pub fn pm_path(&self) -> String {
        let paths = self.store.paths();
        assert_eq!(paths.len(), 1, "pm files: {paths:?}");
        paths[0].clone()
    }

    /// The persisted pm image.
    pub fn pm_persisted(&self) -> Vec<u8> {
        self.store.persisted(&self.pm_path()).unwrap()
    }
}

pub fn wait_on<T>(backing: &MemBacking, slot: &Slot<T>) -> T {
    let mut n = 0;
    loop {
        if let Some(v) = slot.borrow_mut().take() {
            return v;
        }
        assert!(
            backing.poll_one(),
            "nothing pending on the device, and the callback never ran"
        );
        n += 1;
        assert!(n < POLL_CAP, "callback never ran after {n} completions");
    }
}

/// The logical volume as it must read: every write applied in submission order.
#[derive(Clone)]
pub struct Shadow {
    pub data: Vec<u8>,
    pub lbs: usize,
}

impl Shadow {
    pub fn new(geo: Geo) -> Shadow {
        Shadow {
            data: vec![0; geo.vol_bytes()],
            lbs: geo.lbs as usize,
        }
    }

    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        let at = offset as usize * self.lbs;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn expect(&self, offset: u64, length: u64) -> &[u8] {
        let at = offset as usize * self.lbs;
        &self.data[at..at + length as usize * self.lbs]
    }

    /// Reads the whole volume chunk by chunk and compares.
    pub fn verify(&self, rig: &Rig, vol: &Volume) {
        for chunk in 0..rig.geo.chunks {
            let got = rig.read_chunk(vol, chunk).unwrap();
            let bpc = rig.geo.blocks_per_chunk();
            let want = self.expect(chunk * bpc, bpc);
            if got != want {
                let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!("chunk {chunk} differs from the shadow at byte {first}");
            }
        }
    }
}

/// splitmix64: small, deterministic, good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Data of varied compressibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Random,
    Zeros,
    Text,
    Half,
    Byte,
}

pub const KINDS: [Kind; 5] = [
    Kind::Random,
    Kind::Zeros,
    Kind::Text,
    Kind::Half,
    Kind::Byte,
];

pub fn gen_data(rng: &mut Rng, kind: Kind, n: usize) -> Vec<u8> {
    match kind {
        Kind::Random => rng.bytes(n),
        Kind::Zeros => vec![0; n],
        Kind::Text => text(rng.next_u64(), n),
        Kind::Half => {
            let mut v = rng.bytes(n / 2);
            v.resize(n, 0);
            v
        }
        Kind::Byte => vec![rng.range(1, 255) as u8; n],
    }
}

pub fn any_data(rng: &mut Rng, n: usize) -> Vec<u8> {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    gen_data(rng, kind, n)
}

/// Repeating text with a seed-dependent start (compresses well).
pub fn text(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "compressed ",
        "volume ",
        "chunk ",
        "backing ",
        "device ",
        "logical ",
        "block ",
        "map ",
        "io unit ",
        "persist ",
    ];
    let mut v = Vec::with_capacity(n + 16);
    let mut i = seed as usize;
    while v.len() < n {
        v.extend_from_slice(WORDS[i % WORDS.len()].as_bytes());
        i = i.wrapping_mul(7).wrapping_add(3);
    }
    v.truncate(n);
    v
}

/// Cuts `data` into segments of random sizes (any sizes, not block multiples; the
/// occasional empty one).
pub fn split(rng: &mut Rng, data: &[u8], max_segs: usize) -> Vec<Vec<u8>> {
    let segs = rng.range(1, max_segs as u64) as usize;
    let mut cuts: Vec<usize> = (1..segs)
        .map(|_| rng.below(data.len() as u64 + 1) as usize)
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        out.push(data[prev..c].to_vec());
        prev = c;
    }
    out
}

/// Segment lengths (summing to `total`) for a read.
pub fn split_lens(rng: &mut Rng, total: usize, max_segs: usize) -> Vec<usize> {
    split(rng, &vec![0; total], max_segs)
        .iter()
        .map(Vec::len)
        .collect()
}

/// A random range inside one chunk: (offset, length) in blocks.
pub fn range_in_chunk(rng: &mut Rng, geo: Geo, chunk: u64) -> (u64, u64) {
    let bpc = geo.blocks_per_chunk();
    if rng.chance(35) {
        return (chunk * bpc, bpc);
    }
    let start = rng.below(bpc);
    let len = rng.range(1, bpc - start);
    (chunk * bpc + start, len)
}

pub fn errno_of<T>(r: Result<T>) -> Errno {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e,
    }
}
