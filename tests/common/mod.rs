//! What the integration tests keep independent of the library they check: a parser of
//! the pm layout and its own CRC-32C, written from the on-disk format in
//! docs/DESIGN.md rather than from the library's encoder, and a shadow model of the
//! logical volume. The rig, the test doubles and the data generators are the test
//! kit's (`reduce::testkit`).

#![allow(dead_code)]

use reduce::testkit::{Geo, Rig};
use reduce::{Errno, Result, Volume};

pub const SUPERBLOCK: usize = 4096;
pub const PATH_REGION: usize = 4096;
pub const EXTRA: u64 = 128;
pub const EMPTY: u64 = u64::MAX;

/// Format facts of a geometry, worked out here from the format (not by the library).
pub trait Layout {
    /// The pm layout (fixed formula).
    fn pm(&self) -> PmLayout;
    /// Io units of the whole device.
    fn total_io_units(&self) -> u64;
    /// Io units overlapping the 8 KiB of metadata at the start of the device.
    fn reserved_io_units(&self) -> u64;
}

impl Layout for Geo {
    fn pm(&self) -> PmLayout {
        PmLayout::new(*self, false)
    }

    fn total_io_units(&self) -> u64 {
        (self.chunks + EXTRA) * self.iou_per_chunk()
    }

    fn reserved_io_units(&self) -> u64 {
        (8192u64).div_ceil(u64::from(self.io_unit))
    }
}

fn round64(x: u64) -> u64 {
    x.div_ceil(64) * 64
}

/// Offsets in the pm file, computed from the format.
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
    /// in use). Checks the format's invariants on the way: indices in range, no map or io
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

/// The checksum word of a chunk (on-disk format); a CRC that equals the "no checksum"
/// value would be ambiguous, the library folds it to 0.
pub fn expected_checksum(stored: &[u8]) -> u32 {
    match crc32c(stored) {
        u32::MAX => 0,
        c => c,
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

    /// An unmap: the blocks read as zeros.
    pub fn unmap(&mut self, offset: u64, length: u64) {
        let at = offset as usize * self.lbs;
        self.data[at..at + length as usize * self.lbs].fill(0);
    }

    /// The chunks (of `chunk` bytes) that hold anything but zeros: those a volume must
    /// store.
    pub fn nonzero_chunks(&self, chunk: u32) -> Vec<u64> {
        self.data
            .chunks(chunk as usize)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|&b| b != 0))
            .map(|(i, _)| i as u64)
            .collect()
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

/// The space statistics of an idle volume against its chunks as parsed from its pm
/// file here: chunks in use, those stored raw (compressed size = chunk size), their io
/// units and stored bytes, and every other io unit past the metadata free.
pub fn check_stats(vol: &Volume, geo: Geo, stored: &[StoredChunk]) {
    let st = vol.stats();
    let units: u64 = stored.iter().map(|s| s.io_units.len() as u64).sum();
    let bytes: u64 = stored.iter().map(|s| u64::from(s.size)).sum();
    let raw = stored.iter().filter(|s| s.size == geo.chunk).count() as u64;
    assert_eq!(
        (
            st.chunks_in_use,
            st.chunks_raw,
            st.io_units_in_use,
            st.stored_bytes
        ),
        (stored.len() as u64, raw, units, bytes),
        "stats (chunks, raw, io units, stored bytes) against the pm file"
    );
    assert_eq!(
        st.io_units_free,
        geo.total_io_units() - geo.reserved_io_units() - units,
        "free io units"
    );
}

pub fn errno_of<T>(r: Result<T>) -> Errno {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.errno(),
    }
}

/// A scratch directory for pm files, on tmpfs where there is one: a large pm file then
/// costs no disk I/O, as on the pmem or page-cache file system of a real deployment.
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}
