//! The built-in zstd codec: one standard frame per chunk (content size in the header,
//! no checksum, no dictionary), as the original's users produced with
//! `ZSTD_compressCCtx`, so their volumes read back and ours read in theirs. The level
//! changes only how hard the compressor works: any frame decompresses the same way.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

use super::{CompAlgo, Compression, SyncCodec, probe};
use crate::error::{Errno, Error, Result};

/// zstd level of the default codec (what the fixtures were written with).
pub const DEFAULT_LEVEL: u32 = 1;
/// The highest zstd level. Levels start at 1: zstd's negative (fast) levels cannot be
/// recorded in the superblock's unsigned `comp_level`.
pub const MAX_LEVEL: u32 = 22;

thread_local! {
    // Contexts are costly to make; one per level used on a thread serves every volume
    // on it. Few programs use more than one or two levels.
    static COMPRESSORS: RefCell<Vec<(u32, Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Checks a zstd level: `EINVAL` unless it is 1 to [`MAX_LEVEL`].
fn valid(level: u32) -> Result<u32> {
    if (1..=MAX_LEVEL).contains(&level) {
        Ok(level)
    } else {
        Err(Error::new(
            Errno::EINVAL,
            format!("zstd level {level}: levels are 1 to {MAX_LEVEL}"),
        ))
    }
}

/// Compresses `src` into `dst` at `level` (1 to [`MAX_LEVEL`], else `EINVAL`);
/// `ENOSPC` when the frame does not fit. With room for no more than the input, as the
/// volume gives, `ENOSPC` also when a quick probe finds the input incompressible: zstd
/// is then not run at all (the frame it would make saves a few percent at most).
pub fn zstd_compress_at(level: u32, src: &[u8], dst: &mut [u8]) -> Result<usize> {
    let level = valid(level)?;
    if dst.len() <= src.len() && probe::incompressible(src) {
        return Err(Errno::ENOSPC.into());
    }
    COMPRESSORS.with(|cell| {
        let mut contexts = cell.borrow_mut();
        let index = match contexts.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                let c = Compressor::new(level as i32).map_err(Errno::from)?;
                contexts.push((level, c));
                contexts.len() - 1
            }
        };
        // The context itself rather than `compress_to_buffer`, whose error (a frame
        // that does not fit, common for data that barely compresses) allocates.
        let context = contexts[index].1.context_mut();
        context.compress2(dst, src).map_err(|_| {
            // A failed frame stays open, and zstd refuses most setters mid-frame.
            let _ = context.reset(zstd::zstd_safe::ResetDirective::SessionOnly);
            Errno::ENOSPC.into()
        })
    })
}

/// Decompresses exactly one frame in `src` into `dst`; `EIO` for anything malformed.
pub fn zstd_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(Decompressor::new().map_err(Errno::from)?),
        };
        d.decompress_to_buffer(src, dst)
            .map_err(|_| Errno::EIO.into())
    })
}

/// zstd for Rust callers, at a level of 1 to 22. The constant `ZstdCodec` is the
/// default codec, level 1 (so `ZstdCodec` reads as a value, as it did before levels).
///
/// ```
/// use reduce::{SyncCodec, ZstdCodec};
///
/// let chunk = vec![7u8; 16384];
/// let mut frame = vec![0u8; 16384];
/// let n = ZstdCodec::new(19)?.compress_buf(&chunk, &mut frame)?;
/// let mut back = vec![0u8; 16384];
/// // Any level's frames decompress the same way.
/// assert_eq!(ZstdCodec.decompress_buf(&frame[..n], &mut back)?, 16384);
/// assert_eq!(back, chunk);
/// assert!(ZstdCodec::new(0).is_err() && ZstdCodec::new(23).is_err());
/// # Ok::<(), reduce::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZstdCodec {
    level: u32,
}

/// The default zstd codec, level 1.
#[allow(non_upper_case_globals)]
pub const ZstdCodec: ZstdCodec = ZstdCodec {
    level: DEFAULT_LEVEL,
};

impl ZstdCodec {
    /// zstd at `level`: `EINVAL` unless it is 1 to 22.
    pub fn new(level: u32) -> Result<ZstdCodec> {
        Ok(ZstdCodec {
            level: valid(level)?,
        })
    }

    /// The zstd level it compresses at.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl Default for ZstdCodec {
    fn default() -> ZstdCodec {
        ZstdCodec
    }
}

impl SyncCodec for ZstdCodec {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        zstd_compress_at(self.level, src, dst)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        zstd_decompress(src, dst)
    }

    fn compression(&self) -> Compression {
        Compression {
            algo: CompAlgo::ZSTD,
            level: self.level,
        }
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_content_size_and_no_checksum() {
        let src: Vec<u8> = (0..16384u32).map(|i| (i / 64) as u8).collect();
        let mut dst = vec![0u8; 16384];
        let n = zstd_compress_at(DEFAULT_LEVEL, &src, &mut dst).unwrap();
        assert!(n < 4096);
        assert_eq!(&dst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        // Frame header descriptor: single segment, 2-byte content size, no checksum.
        assert_eq!(dst[4], 0x60);
        assert_eq!(u16::from_le_bytes([dst[5], dst[6]]) as usize + 256, 16384);
        let mut out = vec![0u8; 16384];
        assert_eq!(zstd_decompress(&dst[..n], &mut out), Ok(16384));
        assert_eq!(out, src);
        // Trailing garbage after the frame is not accepted.
        dst[n] = 0xAB;
        assert!(zstd_decompress(&dst[..n + 1], &mut out).is_err());
    }

    #[test]
    fn incompressible_data_does_not_fit() {
        let mut x = 0x1234_5678u32;
        let src: Vec<u8> = (0..16384)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut dst = vec![0u8; 16384];
        assert_eq!(
            zstd_compress_at(DEFAULT_LEVEL, &src, &mut dst),
            Err(Errno::ENOSPC.into())
        );
    }

    #[test]
    fn levels_change_the_output_not_the_format() {
        // Text-like data where a higher level finds more.
        let words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon "];
        let mut x = 7u64;
        let src: Vec<u8> = (0..4000)
            .flat_map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[(x >> 60) as usize % words.len()].bytes()
            })
            .take(16384)
            .collect();
        let mut low = vec![0u8; 16384];
        let mut high = vec![0u8; 16384];
        let n1 = zstd_compress_at(1, &src, &mut low).unwrap();
        let n19 = zstd_compress_at(19, &src, &mut high).unwrap();
        assert!(
            n19 < n1,
            "level 19 ({n19} B) not smaller than level 1 ({n1} B)"
        );
        for frame in [&low[..n1], &high[..n19]] {
            let mut out = vec![0u8; 16384];
            assert_eq!(zstd_decompress(frame, &mut out), Ok(16384));
            assert_eq!(out, src);
        }
        // Contexts per level do not mix: level 1 again gives level 1's frame.
        let mut again = vec![0u8; 16384];
        assert_eq!(zstd_compress_at(1, &src, &mut again), Ok(n1));
        assert_eq!(again[..n1], low[..n1]);
        for bad in [0, MAX_LEVEL + 1, u32::MAX] {
            assert_eq!(
                zstd_compress_at(bad, &src, &mut again),
                Err(Errno::EINVAL.into())
            );
            assert_eq!(ZstdCodec::new(bad), Err(Errno::EINVAL.into()));
        }
    }
}
