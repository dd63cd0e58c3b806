//! A tiny pure-Rust run-length codec. It exists so the core can be tested under miri
//! (which cannot run zstd's C code) with real compressed and raw chunks.

use crate::codec::SyncCodec;
use crate::error::{Errno, Result};

/// Pairs of (run length 1..=255, byte).
#[derive(Clone, Copy, Debug, Default)]
pub struct RleCodec;

impl SyncCodec for RleCodec {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        let mut out = 0;
        let mut i = 0;
        while i < src.len() {
            let byte = src[i];
            let run = src[i..]
                .iter()
                .take(255)
                .take_while(|&&b| b == byte)
                .count();
            if out + 2 > dst.len() {
                return Err(Errno::ENOSPC.into());
            }
            dst[out] = run as u8;
            dst[out + 1] = byte;
            out += 2;
            i += run;
        }
        Ok(out)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        if src.len() % 2 != 0 {
            return Err(Errno::EIO.into());
        }
        let mut out = 0;
        for pair in src.chunks_exact(2) {
            let run = pair[0] as usize;
            if run == 0 || out + run > dst.len() {
                return Err(Errno::EIO.into());
            }
            dst[out..out + run].fill(pair[1]);
            out += run;
        }
        Ok(out)
    }
}
