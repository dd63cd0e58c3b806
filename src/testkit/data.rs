//! Deterministic test data: a seedable generator, data of varied compressibility
//! (stored raw, compressed to a few bytes or to about half), text that compresses like
//! real files, and segments and ranges as requests take them.

use super::geo::Geo;

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
enum Kind {
    /// Incompressible: stored raw.
    Random,
    Zeros,
    /// A repeating word list: compresses to almost nothing.
    Text,
    /// Random, then zeros: compresses to about half.
    Half,
    /// One byte throughout.
    Byte,
}

const KINDS: [Kind; 5] = [
    Kind::Random,
    Kind::Zeros,
    Kind::Text,
    Kind::Half,
    Kind::Byte,
];

fn gen_data(rng: &mut Rng, kind: Kind, n: usize) -> Vec<u8> {
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

/// `n` bytes of a kind chosen by `rng`.
pub fn any_data(rng: &mut Rng, n: usize) -> Vec<u8> {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    gen_data(rng, kind, n)
}

/// `n` bytes of a kind chosen by `seed`: the same for the same seed.
pub fn data(seed: u64, n: usize) -> Vec<u8> {
    any_data(&mut Rng::new(seed), n)
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

/// Words in random order, one in seven replaced by 8 random bytes: about 2.4:1 at zstd
/// level 1 in 16 KiB chunks, like a file system's worth of files.
pub fn prose(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "volume", "chunk", "the", "of", "compress", "backing", "io", "unit", "map", "persist",
        "logical", "block", "write", "read", "request", "queue", "poll", "device", "spdk", "and",
    ];
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        let x = rng.next_u64();
        if x % 7 == 0 {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        } else {
            v.extend_from_slice(WORDS[(x / 7 % WORDS.len() as u64) as usize].as_bytes());
            v.push(b' ');
        }
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
