//! Early abort for incompressible chunks, in the manner of ZFS: before the expensive
//! compressor runs, a cheap probe decides whether the chunk can shrink enough to be
//! worth it. When it cannot, the codec reports `ENOSPC`, as it does when the output
//! does not fit, and the volume stores the chunk raw, exactly as it would have after
//! compressing in full.
//!
//! The probe refuses a chunk only when two independent signs agree:
//! - the bytes of a sample are nearly uniform: the collision entropy (Rényi order 2,
//!   never above the Shannon entropy, so the test errs towards compressing) is at
//!   least [`MIN_ENTROPY_BITS`] bits a byte, so entropy coding the literals can save
//!   little; and
//! - the chunk shows no repeats: of the [`WORD`]-byte strings at every [`STEP`]th
//!   byte, fewer than 1 in [`MIN_REPEATED`] repeat an earlier one. That sees runs of
//!   one byte and repeats at distances of a multiple of `STEP` (a block written twice,
//!   records of a power-of-two size); a repeat at another distance in data of uniform
//!   bytes goes unseen, and such a chunk is stored raw where zstd might have saved an
//!   io unit.
//!
//! Ordinary data fails the first test on the sample, which reads 2 KiB; random bytes
//! pass both, for well under a microsecond on a 16 KiB chunk, a tenth of what zstd
//! spends on it (the LZ4 pass over the whole chunk an earlier probe ran took about
//! twice as long as this probe). A chunk the probe accepts is compressed exactly as
//! before. On `make bench`'s corpus (64 MiB of /usr/share/doc) the probe refuses no
//! chunk that zstd would store in fewer io units.

/// Inputs shorter than this are compressed without probing: the probe's sample would
/// say little and the compressor is quick on them anyway.
const MIN_INPUT: usize = 4096;
/// The sample: this many runs of [`RUN`] bytes, spread evenly over the input. Runs of
/// consecutive bytes see every lane of a record, where a strided sample might see one.
const RUNS: usize = 8;
const RUN: usize = 256;
/// Entropy, in bits a byte, above which entropy coding cannot save much. Random bytes
/// measure about 7.8 on the sample; text about 4.5 and executables 5 to 6.
const MIN_ENTROPY_BITS: f64 = 7.5;
/// The repeats: the strings of `WORD` bytes every `STEP` bytes, in a table of
/// `1 << TABLE_BITS` entries (a colliding string replaces an earlier one: the table
/// misses some repeats, never invents one, as a hit is the same string).
const STEP: usize = 64;
const WORD: usize = 8;
const TABLE_BITS: u32 = 9;
/// Indexed strings that must repeat for the chunk to count as having repeats: 1 in
/// this many.
const MIN_REPEATED: usize = 16;

/// True when `src` is not worth compressing: the caller then reports that the output
/// does not fit, without compressing.
pub(super) fn incompressible(src: &[u8]) -> bool {
    src.len() >= MIN_INPUT && nearly_uniform(src) && !repeats(src)
}

/// The starts of the sample's runs.
fn runs(src: &[u8]) -> impl Iterator<Item = usize> {
    let stride = src.len() / RUNS;
    (0..RUNS).map(move |run| run * stride)
}

/// Whether the sample's collision entropy, -log2(sum of p²), is at least
/// [`MIN_ENTROPY_BITS`]: sum of count² ≤ n² · 2^-bits, tested in integers.
fn nearly_uniform(src: &[u8]) -> bool {
    // Every line of the sample requested at once, before the counting (whose loads wait
    // on each other through the counts) asks for them one by one: a chunk fresh from
    // the caller is often not in the cache.
    let lines = runs(src).flat_map(|start| (start..start + RUN).step_by(64));
    std::hint::black_box(lines.fold(0u8, |acc, at| acc ^ src[at]));
    let mut counts = [0u32; 256];
    for start in runs(src) {
        for &b in &src[start..start + RUN] {
            counts[usize::from(b)] += 1;
        }
    }
    let collisions: u64 = counts.iter().map(|&c| u64::from(c) * u64::from(c)).sum();
    let n = (RUNS * RUN) as f64;
    (collisions as f64) <= n * n * (-MIN_ENTROPY_BITS).exp2()
}

/// Whether `src` shows repeats: 1 in [`MIN_REPEATED`] of its indexed strings repeat an
/// earlier one.
fn repeats(src: &[u8]) -> bool {
    // Each entry: a string and whether it is one (`false`: empty). Tested without
    // branches, which on random bytes would go either way at random.
    let mut words = [0u64; 1 << TABLE_BITS];
    let mut used = [false; 1 << TABLE_BITS];
    let (mut indexed, mut repeated) = (0, 0);
    for at in (0..=src.len() - WORD).step_by(STEP) {
        let mut w = [0u8; WORD];
        w.copy_from_slice(&src[at..at + WORD]);
        let w = u64::from_le_bytes(w);
        // Fibonacci hashing: the top bits of the product mix all the word's bytes.
        let slot = (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_BITS)) as usize;
        repeated += usize::from(used[slot] & (words[slot] == w));
        indexed += 1;
        words[slot] = w;
        used[slot] = true;
    }
    repeated * MIN_REPEATED >= indexed
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_bytes_are_refused() {
        for seed in 1..50 {
            assert!(incompressible(&random(16384, seed)), "seed {seed}");
            assert!(incompressible(&random(131072, seed)), "seed {seed}");
        }
    }

    #[test]
    fn repeats_or_skewed_bytes_are_kept() {
        // Random 4 KiB four times over: uniform bytes, but LZ4 finds the repeats.
        let block = random(4096, 9);
        assert!(!incompressible(&block.repeat(4)));
        // Random 8 KiB twice.
        assert!(!incompressible(&random(8192, 5).repeat(2)));
        // Random hex digits: no repeats, but 4 bits a byte.
        let hex: Vec<u8> = random(16384, 3)
            .iter()
            .map(|b| b"0123456789abcdef"[usize::from(b & 15)])
            .collect();
        assert!(!incompressible(&hex));
        // Random base64: 6 bits a byte.
        let b64: Vec<u8> = random(16384, 4).iter().map(|b| b'0' + (b & 63)).collect();
        assert!(!incompressible(&b64));
        // Random bytes in the sample's runs, zeros between them.
        let mut holes = vec![0u8; 16384];
        for run in 0..RUNS {
            let at = run * 16384 / RUNS;
            holes[at..at + RUN].copy_from_slice(&random(RUN, run as u64 + 1));
        }
        assert!(!incompressible(&holes));
        // Short inputs are not probed.
        assert!(!incompressible(&random(MIN_INPUT - 1, 7)));
    }
}
