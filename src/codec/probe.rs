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
//! - LZ4 over the whole chunk finds almost no repeats: it saves less than
//!   1/[`LZ4_MIN_SAVING`] of the input.
//!
//! Ordinary data fails the first test on the sample, which costs a fraction of a
//! microsecond; random bytes pass both in a few microseconds, several times less than
//! zstd spends on them. A chunk the probe accepts is compressed exactly as before.

use super::lz4;

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
/// LZ4 must save at least 1/16 of the input for the chunk to count as having repeats.
const LZ4_MIN_SAVING: usize = 16;

/// True when `src` is not worth compressing: the caller then reports that the output
/// does not fit, without compressing.
pub(super) fn incompressible(src: &[u8]) -> bool {
    src.len() >= MIN_INPUT
        && nearly_uniform(src)
        // Should LZ4 fail (it has room for its worst case), compress in full.
        && lz4::lz4_len(src).is_ok_and(|n| n > src.len() - src.len() / LZ4_MIN_SAVING)
}

/// Whether the sample's collision entropy, -log2(sum of p²), is at least
/// [`MIN_ENTROPY_BITS`]: sum of count² ≤ n² · 2^-bits, tested in integers.
fn nearly_uniform(src: &[u8]) -> bool {
    let mut counts = [0u32; 256];
    let stride = src.len() / RUNS;
    for run in 0..RUNS {
        for &b in &src[run * stride..run * stride + RUN] {
            counts[usize::from(b)] += 1;
        }
    }
    let collisions: u64 = counts.iter().map(|&c| u64::from(c) * u64::from(c)).sum();
    let n = (RUNS * RUN) as f64;
    (collisions as f64) <= n * n * (-MIN_ENTROPY_BITS).exp2()
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
