//! The built-in zstd codec: one standard frame per chunk (content size in the header,
//! no checksum, no dictionary), as the original's users produced with
//! `ZSTD_compressCCtx`, so their volumes read back and ours read in theirs.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

use super::SyncCodec;
use crate::error::{Errno, Result};

/// zstd level of the built-in codec (what the fixtures were written with).
pub const DEFAULT_LEVEL: i32 = 1;

thread_local! {
    // Contexts are costly to make; one per thread serves every volume on it.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `src` into `dst`; `ENOSPC` when the frame does not fit.
pub fn zstd_compress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Compressor::new(DEFAULT_LEVEL).map_err(Errno::from)?),
        };
        c.compress_to_buffer(src, dst)
            .map_err(|_| Errno::ENOSPC.into())
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

/// zstd for Rust callers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZstdCodec;

impl SyncCodec for ZstdCodec {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        zstd_compress(src, dst)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        zstd_decompress(src, dst)
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_content_size_and_no_checksum() {
        let src: Vec<u8> = (0..16384u32).map(|i| (i / 64) as u8).collect();
        let mut dst = vec![0u8; 16384];
        let n = zstd_compress(&src, &mut dst).unwrap();
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
        assert_eq!(zstd_compress(&src, &mut dst), Err(Errno::ENOSPC.into()));
    }
}
