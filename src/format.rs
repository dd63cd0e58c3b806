//! The on-disk and pm-file layout: constants, size formulas, superblock and path
//! encode/decode. Pure functions of bytes and numbers; no I/O happens here.
//!
//! Backing device (byte offsets):
//!
//! ```text
//! 0            SUPERBLOCK_SIZE          METADATA_SIZE
//! | superblock | pm file path, NUL-term. | io unit k, k*io_unit.. (units overlapping
//! |  4096 B    |  REDUCE_PATH_MAX bytes  |  0..METADATA_SIZE are never allocated)
//! ```
//!
//! pm file (the superblock is an identical copy of the backing one):
//!
//! ```text
//! 0            LOGICAL_MAP_OFFSET    chunk_maps_offset              pm_size
//! | superblock | logical map:          | chunk maps: (chunks + 128) x  |
//! |            | u64 per chunk,        | {u32 compressed_size;         |
//! |            | rounded up to 64 B    |  u32 reserved (checksum);     |
//! |            |                       |  u64 io_unit[io_units/chunk]} |
//! |            |                       | rounded up to 64 B            |
//! ```
//!
//! All integers are little-endian (the original wrote native x86-64 structs).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::codec::{CompAlgo, Compression};
use crate::error::{Errno, Error, Result};

/// `"SPDKREDU"`, the first 8 bytes of both superblock copies.
pub const SIGNATURE: &[u8; 8] = b"SPDKREDU";
pub const SUPERBLOCK_SIZE: usize = 4096;
/// Where the params sit in the superblock, and their size (`spdk_reduce_vol_params`).
pub const PARAMS_OFFSET: usize = SIGNATURE.len();
pub const PARAMS_SIZE: usize = 40;
/// Where later SPDK releases keep the compression level (u32) and algorithm (u8),
/// in what the original left as reserved zeros.
pub const COMP_LEVEL_OFFSET: usize = 48;
pub const COMP_ALGO_OFFSET: usize = 52;

/// The pm file path region on the backing device follows the superblock.
pub const PATH_OFFSET: u64 = SUPERBLOCK_SIZE as u64;
pub const REDUCE_PATH_MAX: usize = 4096;
/// Bytes at the start of the backing device that hold metadata, not io units.
pub const METADATA_SIZE: u64 = PATH_OFFSET + REDUCE_PATH_MAX as u64;

/// Length of a lowercase hyphenated uuid, the pm file's name.
pub const UUID_STRING_LEN: usize = 36;

/// Regions of the pm file are rounded up to a cache line.
pub const PM_ALIGNMENT: u64 = 64;
/// Chunk maps beyond one per logical chunk, so that in-flight writes (never in place)
/// find room even on a volume full of incompressible data.
pub const EXTRA_CHUNKS: u64 = 128;
pub const LOGICAL_MAP_OFFSET: u64 = SUPERBLOCK_SIZE as u64;
/// Chunks' worth of io units that must stay free past the metadata on a volume full
/// of uncompressed data, so that an overwrite of a chunk holding data always finds
/// room: it holds its new io units until it commits and frees the old ones. One such
/// chunk's worth lets one overwrite run; the engine makes a write that finds no room
/// while others are writing wait for them to free what they replace, so more
/// overwrites in flight than this wait rather than fail. (Chunk maps need no rule
/// here: the extra ones live in the pm file, apart from the metadata, and the engine
/// holds spares back for overwrites.) Init refuses a geometry without this room
/// ([`Geometry::check_room`]).
pub const OVERWRITE_ROOM_CHUNKS: u64 = 1;
/// An unused logical map entry, io unit slot or (init's fill) chunk map word.
pub const EMPTY_ENTRY: u64 = u64::MAX;
/// A chunk map whose `reserved` word holds this has no checksum: the original never
/// wrote that word, so it kept init's 0xFF fill.
pub const NO_CHECKSUM: u32 = u32::MAX;
/// Chunk map header: `u32 compressed_size; u32 reserved`.
pub const CHUNK_MAP_HEADER: u64 = 8;

/// Largest chunk we accept. The original had no limit; a bound keeps a hostile
/// superblock from asking for gigabyte buffers.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest pm file we create or map (about 440 TB of volume at 16 KiB chunks): a
/// superblock asking for more is refused rather than mapped.
pub const MAX_PM_SIZE: u64 = 1 << 40;

/// The volume parameters, as the superblock holds them: the fields of the original's
/// `struct spdk_reduce_vol_params`, and the compression that later SPDK releases added
/// after them.
///
/// At init, `uuid` may be zeros (a random one is chosen) and `vol_size` must be 0 (it
/// is computed from the device). `compression` is recorded as given unless the codec
/// reports its own (see [`Codec::compression`](crate::Codec::compression)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params {
    /// The volume's identity; its pm file is named after it.
    pub uuid: [u8; 16],
    /// The unit of allocation and of I/O on the backing device, in bytes.
    pub backing_io_unit_size: u32,
    /// The unit of reads and writes of the volume, in bytes.
    pub logical_block_size: u32,
    /// The unit of compression, in bytes: a multiple of both sizes above.
    pub chunk_size: u32,
    /// The volume's size in bytes, a multiple of `chunk_size`.
    pub vol_size: u64,
    /// The algorithm and level the chunks are stored with, as recorded at init.
    pub compression: Compression,
}

fn round_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v / align * align)
}

/// `vol_size` for a backing device of `backing_bytes`: all whole chunks but the extra
/// ones. Zero when the device holds no more than the extra chunks.
pub fn vol_size_for(chunk_size: u32, backing_bytes: u64) -> u64 {
    let chunks = backing_bytes / u64::from(chunk_size);
    chunks.saturating_sub(EXTRA_CHUNKS) * u64::from(chunk_size)
}

/// Everything derived from validated params and the backing block length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub params: Params,
    pub blocklen: u32,
    pub io_units_per_chunk: u32,
    pub blocks_per_chunk: u32,
    pub lba_per_io_unit: u32,
    /// Logical chunks (`vol_size / chunk_size`).
    pub chunks: u64,
    /// Chunk maps, and chunks' worth of io units, that the volume owns.
    pub total_chunk_maps: u64,
    pub total_io_units: u64,
    /// Io units overlapping the metadata at the start of the backing device.
    pub reserved_io_units: u64,
    /// Io units that must stay free on a volume full of uncompressed data, for
    /// overwrites: [`OVERWRITE_ROOM_CHUNKS`] chunks' worth.
    pub overwrite_room_io_units: u64,
    pub chunk_maps_offset: u64,
    pub chunk_map_stride: u64,
    /// Size of a pm file made by the fixed formula (what we create).
    pub pm_size: u64,
    /// Size the original (before SPDK's fix) made: its chunk-map region left out
    /// each entry's 8-byte header. Such files load; they hold fewer chunk maps.
    pub pm_size_original: u64,
}

impl Geometry {
    /// Validates params against a backing device of `blocklen`-byte blocks. Errors are
    /// `EINVAL`, saying which param is wrong and why; load makes them `EILSEQ` since
    /// there they come from the disk.
    pub fn new(params: Params, blocklen: u32) -> Result<Geometry> {
        let Params {
            backing_io_unit_size: io_unit,
            logical_block_size: lbs,
            chunk_size: chunk,
            vol_size,
            ..
        } = params;
        let bad = |why: String| Err(Error::new(Errno::EINVAL, why));
        // Metadata is written in whole blocks, so a block must divide the superblock.
        if blocklen == 0 || SUPERBLOCK_SIZE as u32 % blocklen != 0 {
            return bad(format!(
                "backing block length {blocklen} does not divide the {SUPERBLOCK_SIZE}-byte superblock"
            ));
        }
        for (name, value) in [
            ("backing_io_unit_size", io_unit),
            ("logical_block_size", lbs),
            ("chunk_size", chunk),
        ] {
            if value == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if chunk > MAX_CHUNK_SIZE {
            return bad(format!(
                "chunk_size {chunk} is larger than the largest supported, {MAX_CHUNK_SIZE}"
            ));
        }
        if chunk % io_unit != 0 {
            return bad(format!(
                "chunk_size {chunk} is not a multiple of backing_io_unit_size {io_unit}"
            ));
        }
        if chunk % lbs != 0 {
            return bad(format!(
                "chunk_size {chunk} is not a multiple of logical_block_size {lbs}"
            ));
        }
        if io_unit % blocklen != 0 {
            return bad(format!(
                "backing_io_unit_size {io_unit} is not a multiple of the backing block length {blocklen}"
            ));
        }
        if vol_size == 0 || vol_size % u64::from(chunk) != 0 {
            return bad(format!(
                "vol_size {vol_size} is not a positive multiple of chunk_size {chunk}"
            ));
        }
        let too_large = || Error::new(Errno::EINVAL, format!("vol_size {vol_size} is too large"));
        let io_units_per_chunk = chunk / io_unit;
        let chunks = vol_size / u64::from(chunk);
        let total_chunk_maps = chunks.checked_add(EXTRA_CHUNKS).ok_or_else(too_large)?;
        let total_io_units = total_chunk_maps
            .checked_mul(u64::from(io_units_per_chunk))
            .ok_or_else(too_large)?;
        let slots_bytes = u64::from(io_units_per_chunk) * 8;
        let chunk_map_stride = CHUNK_MAP_HEADER + slots_bytes;
        let logical_map_size = chunks
            .checked_mul(8)
            .and_then(|s| round_up(s, PM_ALIGNMENT))
            .ok_or_else(too_large)?;
        let chunk_maps_offset = LOGICAL_MAP_OFFSET + logical_map_size;
        let region = |stride: u64| {
            total_chunk_maps
                .checked_mul(stride)
                .and_then(|s| round_up(s, PM_ALIGNMENT))
                .and_then(|s| s.checked_add(chunk_maps_offset))
                .ok_or_else(too_large)
        };
        let pm_size = region(chunk_map_stride)?;
        let pm_size_original = region(slots_bytes)?;
        // The pm file is mapped whole.
        if pm_size > MAX_PM_SIZE {
            return bad(format!(
                "vol_size {vol_size} needs a pm file of {pm_size} bytes, more than the largest supported, {MAX_PM_SIZE}"
            ));
        }
        Ok(Geometry {
            params,
            blocklen,
            io_units_per_chunk,
            blocks_per_chunk: chunk / lbs,
            lba_per_io_unit: io_unit / blocklen,
            chunks,
            total_chunk_maps,
            total_io_units,
            reserved_io_units: METADATA_SIZE.div_ceil(u64::from(io_unit)),
            overwrite_room_io_units: OVERWRITE_ROOM_CHUNKS * u64::from(io_units_per_chunk),
            chunk_maps_offset,
            chunk_map_stride,
            pm_size,
            pm_size_original,
        })
    }

    /// Whether the layout holds the `vol_size` it reports: the io units past the
    /// metadata must hold every chunk stored uncompressed plus the room overwrites need
    /// ([`OVERWRITE_ROOM_CHUNKS`]). The extra chunks' io units pay for both the
    /// metadata's and that room, so the rule is `EXTRA_CHUNKS x io units per chunk -
    /// reserved_io_units >= overwrite_room_io_units`. Only tiny io units fail it: with
    /// io unit = chunk, 64 bytes or less (at 64 the metadata covers all 128 extra
    /// chunks, and a full volume could overwrite nothing; at 32 it covers 256, and only
    /// 384 of 512 chunks could be written). Init refuses such params (`EINVAL`, with
    /// the sizes); load accepts them, as volumes made elsewhere may have them.
    pub fn check_room(&self) -> Result<()> {
        let per_chunk = u64::from(self.io_units_per_chunk);
        let usable = self.total_io_units.saturating_sub(self.reserved_io_units);
        let data = self.chunks * per_chunk;
        let need = data + self.overwrite_room_io_units;
        if usable >= need {
            return Ok(());
        }
        Err(Error::new(
            Errno::EINVAL,
            format!(
                "backing_io_unit_size {} with chunk_size {} leaves too little room: of {} io units, {} hold the metadata, and the {} chunks need {} plus {} free for an overwrite",
                self.params.backing_io_unit_size,
                self.params.chunk_size,
                self.total_io_units,
                self.reserved_io_units,
                self.chunks,
                data,
                self.overwrite_room_io_units
            ),
        ))
    }

    pub fn chunk_size(&self) -> usize {
        self.params.chunk_size as usize
    }

    pub fn io_unit_size(&self) -> usize {
        self.params.backing_io_unit_size as usize
    }

    /// Backing bytes the volume needs: every chunk map's worth of io units.
    pub fn backing_bytes_needed(&self) -> u64 {
        self.total_chunk_maps * u64::from(self.params.chunk_size)
    }

    /// Byte offset in the pm file of chunk `chunk`'s logical map entry.
    pub fn logical_entry_offset(&self, chunk: u64) -> usize {
        (LOGICAL_MAP_OFFSET + chunk * 8) as usize
    }

    /// Byte offset in the pm file of chunk map `index`.
    pub fn chunk_map_offset(&self, index: u64) -> usize {
        (self.chunk_maps_offset + index * self.chunk_map_stride) as usize
    }

    /// How many chunk maps a pm file of `pm_len` bytes holds: all of them for the
    /// fixed size, fewer for the original's undersized file. `None` for any other size.
    pub fn chunk_maps_in_file(&self, pm_len: u64) -> Option<u64> {
        if pm_len == self.pm_size {
            Some(self.total_chunk_maps)
        } else if pm_len == self.pm_size_original {
            Some(
                ((pm_len - self.chunk_maps_offset) / self.chunk_map_stride)
                    .min(self.total_chunk_maps),
            )
        } else {
            None
        }
    }

    /// Io units a stored chunk of `compressed_size` bytes occupies.
    pub fn io_units_for(&self, compressed_size: u32) -> u32 {
        compressed_size.div_ceil(self.params.backing_io_unit_size)
    }

    /// First backing block of io unit `index`.
    pub fn io_unit_lba(&self, index: u64) -> u64 {
        index * u64::from(self.lba_per_io_unit)
    }
}

/// Encodes the 4096-byte superblock: signature, params, compression level and
/// algorithm, zeros.
pub fn encode_superblock(params: &Params) -> Vec<u8> {
    let mut sb = vec![0u8; SUPERBLOCK_SIZE];
    sb[..PARAMS_OFFSET].copy_from_slice(SIGNATURE);
    sb[PARAMS_OFFSET..PARAMS_OFFSET + PARAMS_SIZE].copy_from_slice(&encode_params(params));
    let Compression { algo, level } = params.compression;
    sb[COMP_LEVEL_OFFSET..COMP_LEVEL_OFFSET + 4].copy_from_slice(&level.to_le_bytes());
    sb[COMP_ALGO_OFFSET] = algo.0;
    sb
}

/// `struct spdk_reduce_vol_params` as bytes: uuid @0, io unit @16, logical block @20,
/// chunk @24, padding @28, vol_size @32.
pub fn encode_params(p: &Params) -> [u8; PARAMS_SIZE] {
    let mut b = [0u8; PARAMS_SIZE];
    b[0..16].copy_from_slice(&p.uuid);
    b[16..20].copy_from_slice(&p.backing_io_unit_size.to_le_bytes());
    b[20..24].copy_from_slice(&p.logical_block_size.to_le_bytes());
    b[24..28].copy_from_slice(&p.chunk_size.to_le_bytes());
    b[32..40].copy_from_slice(&p.vol_size.to_le_bytes());
    b
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Decodes a superblock. `EILSEQ` when it is short or lacks the signature; the params
/// are not validated here (see [`Geometry::new`]), and the compression is taken as it
/// is: any value loads.
pub fn decode_superblock(sb: &[u8]) -> Result<Params> {
    if sb.len() < SUPERBLOCK_SIZE {
        return Err(Error::new(
            Errno::EILSEQ,
            format!("superblock of {} bytes, not {SUPERBLOCK_SIZE}", sb.len()),
        ));
    }
    if &sb[..PARAMS_OFFSET] != SIGNATURE {
        return Err(Error::new(
            Errno::EILSEQ,
            "no volume signature (\"SPDKREDU\") in the superblock",
        ));
    }
    let p = &sb[PARAMS_OFFSET..PARAMS_OFFSET + PARAMS_SIZE];
    Ok(Params {
        uuid: p[0..16].try_into().expect("16 bytes"),
        backing_io_unit_size: u32_at(p, 16),
        logical_block_size: u32_at(p, 20),
        chunk_size: u32_at(p, 24),
        vol_size: u64_at(p, 32),
        compression: Compression {
            algo: CompAlgo(sb[COMP_ALGO_OFFSET]),
            level: u32_at(sb, COMP_LEVEL_OFFSET),
        },
    })
}

/// The path region: the path's bytes (any the OS accepts: a path need not be UTF-8),
/// a NUL, zeros to `REDUCE_PATH_MAX`. `EINVAL` when the path (with its NUL) does not
/// fit or holds a NUL itself.
pub fn encode_path(path: &Path) -> Result<Vec<u8>> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= REDUCE_PATH_MAX || bytes.contains(&0) {
        return Err(Error::new(
            Errno::EINVAL,
            format!(
                "pm file path of {} bytes: it must be 1 to {} bytes without a NUL",
                bytes.len(),
                REDUCE_PATH_MAX - 1
            ),
        ));
    }
    let mut region = vec![0u8; REDUCE_PATH_MAX];
    region[..bytes.len()].copy_from_slice(bytes);
    Ok(region)
}

/// Reads the pm path from its region, bytes as stored: `EILSEQ` unless it is
/// non-empty and NUL-terminated within the region.
pub fn decode_path(region: &[u8]) -> Result<PathBuf> {
    let region = &region[..region.len().min(REDUCE_PATH_MAX)];
    let bad = |why: &str| Error::new(Errno::EILSEQ, format!("pm file path region: {why}"));
    let end = region
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no NUL terminator"))?;
    if end == 0 {
        return Err(bad("empty path"));
    }
    Ok(PathBuf::from(OsString::from_vec(region[..end].to_vec())))
}

/// The pm file path for a volume: `dir/uuid`, without doubling a trailing `/`. The
/// directory's bytes are kept as given. `EINVAL` for an empty directory, one holding a
/// NUL, or one too long to leave room for the name.
pub fn pm_path(dir: &Path, uuid: &[u8; 16]) -> Result<PathBuf> {
    let dir = dir.as_os_str().as_bytes();
    if dir.is_empty() {
        return Err(Error::new(Errno::EINVAL, "pm_file_dir is empty"));
    }
    if dir.contains(&0) {
        return Err(Error::new(Errno::EINVAL, "pm_file_dir holds a NUL byte"));
    }
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    // dir + '/' + uuid + NUL must fit the path region.
    let longest = REDUCE_PATH_MAX - UUID_STRING_LEN - 2;
    if dir.len() > longest {
        return Err(Error::new(
            Errno::EINVAL,
            format!(
                "pm_file_dir is {} bytes long, more than the {longest} that leave room for the file name",
                dir.len()
            ),
        ));
    }
    let name = uuid::Uuid::from_bytes(*uuid).hyphenated().to_string();
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name.as_bytes());
    Ok(PathBuf::from(OsString::from_vec(path)))
}

/// The stored checksum of a chunk's stored bytes. A CRC equal to [`NO_CHECKSUM`] is
/// folded to 0 so that every stored value reads as "checksummed".
pub fn chunk_checksum(stored: &[u8]) -> u32 {
    // A CRC-32 comes back in a u64's low half.
    match crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, stored) as u32 {
        NO_CHECKSUM => 0,
        crc => crc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(io: u32, lbs: u32, chunk: u32, vol: u64) -> Params {
        Params {
            uuid: [7; 16],
            backing_io_unit_size: io,
            logical_block_size: lbs,
            chunk_size: chunk,
            vol_size: vol,
            compression: Compression::UNRECORDED,
        }
    }

    #[test]
    fn fixture_geometry_matches_manifest() {
        // g1 of the fixtures: 512 chunks of 16 KiB, io unit 4 KiB, blocklen 512.
        let g = Geometry::new(params(4096, 512, 16384, 8 << 20), 512).unwrap();
        assert_eq!(g.chunks, 512);
        assert_eq!(g.chunk_maps_offset, 8192);
        assert_eq!(g.chunk_map_stride, 40);
        assert_eq!(g.pm_size, 33792);
        assert_eq!(g.pm_size_original, 28672);
        assert_eq!(g.chunk_maps_in_file(28672), Some(512));
        assert_eq!(g.chunk_maps_in_file(33792), Some(640));
        assert_eq!(g.chunk_maps_in_file(30000), None);
        assert_eq!(g.reserved_io_units, 2);
        assert_eq!(g.lba_per_io_unit, 8);
        assert_eq!(g.blocks_per_chunk, 32);
        assert_eq!(g.total_io_units, 640 * 4);
    }

    #[test]
    fn params_bytes_follow_the_c_struct() {
        let p = params(0x1000, 0x200, 0x4000, 0x0123_4567_89ab_cdef);
        let b = encode_params(&p);
        assert_eq!(&b[0..16], &[7; 16]);
        assert_eq!(&b[16..20], &[0, 0x10, 0, 0]);
        assert_eq!(&b[20..24], &[0, 2, 0, 0]);
        assert_eq!(&b[24..28], &[0, 0x40, 0, 0]);
        assert_eq!(&b[28..32], &[0; 4]);
        assert_eq!(
            &b[32..40],
            &[0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]
        );
        let sb = encode_superblock(&p);
        assert_eq!(sb.len(), 4096);
        assert_eq!(&sb[0..8], b"SPDKREDU");
        assert_eq!(&sb[8..48], &b);
        assert!(sb[48..].iter().all(|&x| x == 0));
        assert_eq!(decode_superblock(&sb), Ok(p));
    }

    #[test]
    fn compression_sits_where_later_spdk_keeps_it() {
        let p = Params {
            compression: Compression {
                algo: CompAlgo::LZ4,
                level: 0x0102_0304,
            },
            ..params(4096, 512, 16384, 1 << 20)
        };
        let sb = encode_superblock(&p);
        assert_eq!(&sb[8..48], &encode_params(&p));
        assert_eq!(&sb[48..53], &[4, 3, 2, 1, 1]);
        assert!(sb[53..].iter().all(|&x| x == 0));
        assert_eq!(decode_superblock(&sb), Ok(p));
        // Any algorithm byte loads, known or not.
        let mut odd = sb.clone();
        odd[52] = 0x7F;
        assert_eq!(
            decode_superblock(&odd).unwrap().compression.algo,
            CompAlgo(0x7F)
        );
    }

    #[test]
    fn superblock_without_signature_is_eilseq() {
        let mut sb = encode_superblock(&params(4096, 512, 16384, 1 << 20));
        sb[3] ^= 1;
        let err = decode_superblock(&sb).unwrap_err();
        assert_eq!(err, Errno::EILSEQ);
        assert!(err.detail().contains("signature"), "{err}");
        assert_eq!(decode_superblock(&sb[..100]), Err(Errno::EILSEQ.into()));
    }

    #[test]
    fn invalid_geometries_are_einval() {
        let ok = params(4096, 512, 16384, 1 << 20);
        assert!(Geometry::new(ok, 512).is_ok());
        for (p, bl) in [
            (params(0, 512, 16384, 1 << 20), 512),
            (params(4096, 0, 16384, 1 << 20), 512),
            (params(4096, 512, 0, 1 << 20), 512),
            (params(4096, 512, 16384, 0), 512),
            (params(3000, 512, 16384, 1 << 20), 512),
            (params(4096, 3000, 16384, 1 << 20), 512),
            (params(4096, 512, 16384, (1 << 20) + 512), 512),
            (params(512, 512, 16384, 1 << 20), 4096),
            (ok, 0),
            (ok, 8192),
            (ok, 1000),
            (params(4096, 512, MAX_CHUNK_SIZE * 2, 1 << 30), 512),
            (params(4096, 512, 16384, u64::MAX / 16384 * 16384), 512),
        ] {
            let err = Geometry::new(p, bl).unwrap_err();
            assert_eq!(err, Errno::EINVAL, "{p:?} blocklen {bl}");
            assert!(!err.detail().is_empty(), "{p:?} blocklen {bl}: no detail");
        }
    }

    #[test]
    fn vol_size_leaves_out_the_extra_chunks() {
        assert_eq!(vol_size_for(16384, 640 * 16384), 512 * 16384);
        assert_eq!(vol_size_for(16384, 640 * 16384 + 100), 512 * 16384);
        assert_eq!(vol_size_for(16384, 128 * 16384), 0);
        assert_eq!(vol_size_for(16384, 0), 0);
    }

    #[test]
    fn path_region_round_trips_bytes_and_rejects_garbage() {
        let r = encode_path(Path::new("/tmp/x")).unwrap();
        assert_eq!(r.len(), 4096);
        assert_eq!(decode_path(&r).unwrap(), Path::new("/tmp/x"));
        // Any bytes but NUL: a path need not be UTF-8.
        let odd = PathBuf::from(OsString::from_vec(b"/tmp/\xff\xfe/d\x80".to_vec()));
        let r = encode_path(&odd).unwrap();
        assert_eq!(&r[..10], b"/tmp/\xff\xfe/d\x80");
        assert_eq!(r[10], 0);
        assert_eq!(decode_path(&r).unwrap(), odd);
        assert_eq!(decode_path(&[b'a'; 4096]), Err(Errno::EILSEQ.into()));
        assert_eq!(decode_path(&[0; 4096]), Err(Errno::EILSEQ.into()));
        let long = PathBuf::from("a".repeat(4096));
        assert_eq!(encode_path(&long), Err(Errno::EINVAL.into()));
        let nul = PathBuf::from(OsString::from_vec(b"/a\0b".to_vec()));
        assert_eq!(encode_path(&nul), Err(Errno::EINVAL.into()));
    }

    #[test]
    fn pm_path_joins_once_and_keeps_bytes() {
        let u = *uuid::Uuid::parse_str("5ed07f1c-0000-4000-8000-000000000001")
            .unwrap()
            .as_bytes();
        let name = "5ed07f1c-0000-4000-8000-000000000001";
        let join = |dir: &str| pm_path(Path::new(dir), &u);
        assert_eq!(join("/pm").unwrap(), PathBuf::from(format!("/pm/{name}")));
        assert_eq!(join("/pm/").unwrap(), PathBuf::from(format!("/pm/{name}")));
        assert_eq!(join("/").unwrap(), PathBuf::from(format!("/{name}")));
        let odd = OsString::from_vec(b"/pm\xff".to_vec());
        let mut want = b"/pm\xff/".to_vec();
        want.extend_from_slice(name.as_bytes());
        assert_eq!(
            pm_path(Path::new(&odd), &u).unwrap().as_os_str().as_bytes(),
            &want[..]
        );
        assert!(join(&"d".repeat(4058)).is_ok());
        assert_eq!(join(&"d".repeat(4059)), Err(Errno::EINVAL.into()));
        assert_eq!(join(""), Err(Errno::EINVAL.into()));
        let nul = OsString::from_vec(b"/p\0m".to_vec());
        assert_eq!(pm_path(Path::new(&nul), &u), Err(Errno::EINVAL.into()));
    }

    /// The geometry of a device holding exactly `chunks` + 128 chunks.
    fn room(io: u32, chunk: u32, chunks: u64, blocklen: u32) -> Result<Geometry> {
        let g = Geometry::new(
            params(io, blocklen, chunk, chunks * u64::from(chunk)),
            blocklen,
        )?;
        g.check_room().map(|()| g)
    }

    #[test]
    fn room_rule_boundary() {
        // The usual geometry: 510 spare io units, 4 needed.
        let g = room(4096, 16384, 512, 512).unwrap();
        assert_eq!(g.overwrite_room_io_units, 4);
        assert_eq!(g.total_io_units - g.reserved_io_units - 512 * 4, 510);
        // io unit = chunk = 65 bytes: the metadata covers 127 io units and leaves one,
        // room for one overwrite. At 64 bytes it covers all 128: refused.
        let g = room(65, 65, 512, 1).unwrap();
        assert_eq!(g.reserved_io_units, 127);
        let err = room(64, 64, 512, 1).unwrap_err();
        assert_eq!(err, Errno::EINVAL);
        for size in ["64", "640", "128", "512"] {
            assert!(err.detail().contains(size), "{size} missing from: {err}");
        }
        // Smaller io units lose more: at 32 bytes not even the data fits.
        for io in [32, 16] {
            assert_eq!(room(io, io, 512, 16).unwrap_err(), Errno::EINVAL, "{io}");
        }
        // Chunks of several small io units are fine: 64-byte units, 128-byte chunks
        // (256 extra, 128 for the metadata, 2 needed).
        assert!(room(64, 128, 512, 64).is_ok());
        // The rule does not depend on the number of chunks.
        assert_eq!(room(64, 64, 1, 64).unwrap_err(), Errno::EINVAL);
        assert!(room(65, 65, 1, 1).is_ok());
    }
}
