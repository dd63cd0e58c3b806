//! The built-in LZ4 codec: one raw LZ4 block per chunk (the LZ4 block format: no frame,
//! no size prefix, no checksum), exactly `compressed_size` bytes. That is what later
//! SPDK's software accel module writes for `SPDK_ACCEL_COMP_ALGO_LZ4`
//! (`LZ4_compress_fast_continue` on a freshly reset stream, one block per source
//! buffer; the volume passes one buffer per chunk) and reads back with
//! `LZ4_decompress_safe_continue`, so volumes move between the two.
//!
//! The encoder has one speed, LZ4's default (acceleration 1), so its level is 1.

use std::cell::RefCell;

use lz4_flex::block::{self, CompressTable};

use super::{CompAlgo, Compression, SyncCodec};
use crate::error::{Errno, Result};

/// The level the built-in LZ4 codec records: LZ4's acceleration, 1 being the
/// default (later SPDK accepts 1 to 65537 there).
pub const LEVEL: u32 = 1;

thread_local! {
    // The encoder's hash table, and room for its worst case: it writes only into a
    // buffer that can hold any output, and a chunk's room is the chunk's size.
    static SCRATCH: RefCell<(CompressTable, Vec<u8>)> = RefCell::new((CompressTable::default(), Vec::new()));
}

/// Compresses `src` into the thread's scratch room and hands `then` the block.
fn with_block<T>(src: &[u8], then: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
    SCRATCH.with(|cell| {
        let (table, room) = &mut *cell.borrow_mut();
        let worst = block::get_maximum_output_size(src.len());
        if room.len() < worst {
            room.resize(worst, 0);
        }
        let n = block::compress_into_with_table(src, room, table).map_err(|_| Errno::ENOSPC)?;
        then(&room[..n])
    })
}

/// Compresses `src` into one raw LZ4 block in `dst`; `ENOSPC` when it does not fit.
///
/// LZ4 gets no early-abort probe: on incompressible data it is itself quick, skipping
/// ever faster over bytes where it finds no match.
pub fn lz4_compress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    with_block(src, |block| {
        let out = dst.get_mut(..block.len()).ok_or(Errno::ENOSPC)?;
        out.copy_from_slice(block);
        Ok(block.len())
    })
}

/// Decompresses one raw LZ4 block, all of `src`, into `dst`; `EIO` for anything
/// malformed or too large for `dst`.
pub fn lz4_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    block::decompress_into(src, dst).map_err(|_| Errno::EIO.into())
}

/// LZ4 for Rust callers: raw blocks, as later SPDK stores chunks with its LZ4
/// algorithm.
///
/// ```
/// use reduce::{Lz4Codec, SyncCodec};
///
/// let chunk: Vec<u8> = b"lz4 ".iter().copied().cycle().take(16384).collect();
/// let mut block = vec![0u8; 16384];
/// let n = Lz4Codec.compress_buf(&chunk, &mut block)?;
/// assert!(n < 200);
/// let mut back = vec![0u8; 16384];
/// assert_eq!(Lz4Codec.decompress_buf(&block[..n], &mut back)?, 16384);
/// assert_eq!(back, chunk);
/// # Ok::<(), reduce::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lz4Codec;

impl SyncCodec for Lz4Codec {
    fn compress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        lz4_compress(src, dst)
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        lz4_decompress(src, dst)
    }

    fn compression(&self) -> Compression {
        Compression {
            algo: CompAlgo::LZ4,
            level: LEVEL,
        }
    }
}

// Like zstd's: the codec is a library's, and too slow under miri to be worth it there.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn a_hand_made_block_decodes() {
        // "abcabcabcabc" + "xyz": literals "abc", match offset 3 length 9, then the
        // last literals "xyz" (token 0x35, offset 3, token 0x30).
        let block = [0x35, b'a', b'b', b'c', 3, 0, 0x30, b'x', b'y', b'z'];
        let mut out = [0u8; 15];
        assert_eq!(lz4_decompress(&block, &mut out), Ok(15));
        assert_eq!(&out, b"abcabcabcabcxyz");
        // Too little room, a truncated block, an offset before the start: EIO.
        assert_eq!(
            lz4_decompress(&block, &mut [0u8; 14]),
            Err(Errno::EIO.into())
        );
        assert_eq!(
            lz4_decompress(&block[..5], &mut out),
            Err(Errno::EIO.into())
        );
        let bad = [0x15, b'a', 9, 0, 0x00];
        assert_eq!(lz4_decompress(&bad, &mut out), Err(Errno::EIO.into()));
    }
}
