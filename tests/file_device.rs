//! `FileDevice`: sizes from the file, errors as errnos, a whole volume on a real file
//! whose bytes are checked against the on-disk format (docs/DESIGN.md), and unmaps
//! that punch holes in it.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use common::*;
use reduce::blocking::Volume;
use reduce::{Errno, FileDevice, Lz4Codec, Params, ZstdCodec};

fn params() -> Params {
    Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: 16384,
        ..Params::default()
    }
}

/// Blocks of 512 bytes for 128 spare chunks and `chunks` chunks of 16 KiB.
fn blocks(chunks: u64) -> u64 {
    (128 + chunks) * 32
}

#[test]
fn sizes_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let dev = FileDevice::create(&path, 512, 100).unwrap();
    assert_eq!((dev.blocklen(), dev.blockcnt()), (512, 100));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 51_200);
    // A partial block at the end is not a block.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(51_200 + 300)
        .unwrap();
    assert_eq!(FileDevice::open(&path, 512).unwrap().blockcnt(), 100);
    assert_eq!(FileDevice::open(&path, 4096).unwrap().blockcnt(), 12);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(FileDevice::from_file(file, 1024).unwrap().blockcnt(), 50);
}

#[test]
fn errors_are_errnos() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    assert_eq!(errno_of(FileDevice::open(&path, 512)), Errno::ENOENT);
    FileDevice::create(&path, 512, 8).unwrap();
    assert_eq!(errno_of(FileDevice::create(&path, 512, 8)), Errno::EEXIST);
    assert_eq!(errno_of(FileDevice::open(&path, 0)), Errno::EINVAL);
    let other = dir.path().join("other");
    assert_eq!(errno_of(FileDevice::create(&other, 0, 8)), Errno::EINVAL);
    assert_eq!(
        errno_of(FileDevice::create(&other, 4096, u64::MAX)),
        Errno::EINVAL
    );
    assert!(!other.exists(), "a refused create leaves no file");
    let missing_dir = dir.path().join("no/such/dir");
    assert_eq!(
        errno_of(FileDevice::create(&missing_dir, 512, 8)),
        Errno::ENOENT
    );
}

#[test]
fn a_volume_on_a_file_has_the_format_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let dev = FileDevice::create(&path, 512, blocks(16)).unwrap();
    let vol = Volume::init(
        params(),
        dev.clone(),
        ZstdCodec::new(3).unwrap(),
        dir.path(),
    )
    .unwrap();
    let uuid = vol.params().uuid;
    let data: Vec<u8> = (0..16384u32).map(|i| (i / 100) as u8).collect();
    vol.write(5 * 32, &data).unwrap();
    let pm_path = vol.pm_path();
    vol.unload().unwrap();

    // The file holds the superblock, the path region and the chunk, per the format.
    let image = std::fs::read(&path).unwrap();
    assert_eq!(&image[0..8], b"SPDKREDU");
    assert_eq!(&image[8..24], &uuid);
    assert_eq!(u32_at(&image, 24), 4096);
    assert_eq!(u32_at(&image, 32), 16384);
    assert_eq!(u64_at(&image, 40), 16 * 16384);
    assert_eq!(u32_at(&image, 48), 3, "comp_level");
    assert_eq!(image[52], 0x80, "comp_algo (zstd)");
    let region = &image[4096..8192];
    let end = region.iter().position(|&b| b == 0).unwrap();
    assert_eq!(&region[..end], pm_path.as_os_str().as_encoded_bytes());
    let pm = std::fs::read(&pm_path).unwrap();
    assert_eq!(&pm[..4096], &image[..4096]);
    let geo = reduce::testkit::Geo::new(512, 4096, 16384, 512, 16);
    let stored = geo.pm().stored(&pm);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].chunk, 5);
    let frame = stored[0].bytes(&image, 4096);
    assert_eq!(zstd::bulk::decompress(&frame, 16384).unwrap(), data);

    // Written outside the volume, seen by a fresh device on the same file.
    let vol = Volume::load(FileDevice::open(&path, 512).unwrap(), ZstdCodec).unwrap();
    let mut back = vec![0u8; 16384];
    vol.read(5 * 32, &mut back).unwrap();
    assert_eq!(back, data);
    vol.unload().unwrap();
}

#[test]
fn device_errors_reach_the_caller_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    FileDevice::create(&path, 512, blocks(16)).unwrap();
    // Opened read-only: every write fails with the OS error (EBADF).
    let dev = FileDevice::from_file(File::open(&path).unwrap(), 512).unwrap();
    let pm_dir = dir.path().join("pm");
    std::fs::create_dir(&pm_dir).unwrap();
    let err = Volume::init(params(), dev, Lz4Codec, &pm_dir)
        .err()
        .unwrap();
    assert_eq!(err.errno(), Errno(libc::EBADF), "{err}");
    assert!(err.detail().contains("writing"), "{err}");
    assert_eq!(
        std::fs::read_dir(&pm_dir).unwrap().count(),
        0,
        "pm file left"
    );

    // A file cut short after init: the volume does not fit any more (EILSEQ).
    let dev = FileDevice::open(&path, 512).unwrap();
    let vol = Volume::init(params(), dev.clone(), Lz4Codec, &pm_dir).unwrap();
    vol.unload().unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(blocks(15) * 512)
        .unwrap();
    let short = FileDevice::open(&path, 512).unwrap();
    assert_eq!(errno_of(Volume::load(short, Lz4Codec)), Errno::EILSEQ);
    // A device whose file shrinks under it: the read of a chunk cut off is short,
    // an EIO for the read, and the volume stays usable.
    let path2 = dir.path().join("dev2");
    let dev = FileDevice::create(&path2, 512, blocks(16)).unwrap();
    let vol = Volume::init(params(), dev, Lz4Codec, &pm_dir).unwrap();
    let mut rng = reduce::testkit::Rng::new(5);
    let noise = reduce::testkit::any_data(&mut rng, 16384);
    vol.write(0, &noise).unwrap();
    vol.write(32, &[7u8; 16384]).unwrap();
    File::options()
        .write(true)
        .open(&path2)
        .unwrap()
        .set_len(8192)
        .unwrap();
    let mut buf = vec![0u8; 16384];
    let err = vol.read(0, &mut buf).unwrap_err();
    assert_eq!(err.errno(), Errno::EIO, "{err}");
    assert!(err.detail().contains("reading"), "{err}");
    vol.unload().unwrap();
    let f = File::open(&path2).unwrap();
    let mut sb = [0u8; 8];
    f.read_exact_at(&mut sb, 0).unwrap();
    assert_eq!(&sb, b"SPDKREDU");
}

/// Unmapping gives a sparse file its space back: the blocks the volume's chunks took are
/// allocated after the writes and holes after the unmap, the data reads back as zeros,
/// the volume's own regions stay, and what is left reads right after a reload.
#[test]
fn unmapped_chunks_become_holes_in_the_file() {
    use std::os::unix::fs::MetadataExt;
    const CHUNKS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let dev = FileDevice::create(&path, 512, blocks(16)).unwrap();
    let vol = Volume::init(params(), dev, ZstdCodec, dir.path()).unwrap();
    // Random bytes: stored raw, 16 KiB a chunk.
    let mut rng = reduce::testkit::Rng::new(11);
    let data: Vec<Vec<u8>> = (0..CHUNKS).map(|_| rng.bytes(16384)).collect();
    for (c, d) in data.iter().enumerate() {
        vol.write(c as u64 * 32, d).unwrap();
    }
    // Bytes allocated to the file (st_blocks counts 512-byte units).
    let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
    let written = allocated();
    assert!(written >= CHUNKS * 16384, "{written} bytes allocated");
    // The last chunk stays; the others go.
    vol.unmap(0, (CHUNKS - 1) * 32).unwrap();
    let freed = written - allocated();
    assert!(
        freed >= (CHUNKS - 1) * 16384,
        "{freed} bytes given back of {}",
        (CHUNKS - 1) * 16384
    );
    let mut back = vec![1u8; 16384];
    vol.read(0, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0));
    assert!(vol.check().unwrap().is_clean());
    vol.unload().unwrap();
    let vol = Volume::load(FileDevice::open(&path, 512).unwrap(), ZstdCodec).unwrap();
    vol.read((CHUNKS - 1) * 32, &mut back).unwrap();
    assert!(back == data[CHUNKS as usize - 1], "the chunk kept");
    vol.unload().unwrap();
}
