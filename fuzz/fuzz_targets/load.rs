//! Load of arbitrary bytes: the input is the device's metadata (superblock and path
//! region, 8 KiB) followed by the pm file. The pm file is placed where the path region
//! says. Load must return a volume or an errno — no panic, hang or access outside the
//! file — and a volume it returns must read (data or EIO), check, write and unload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reduce::Errno;
use reduce::testkit::*;

const GEO: Geo = Geo::small(16);

fuzz_target!(|input: &[u8]| {
    let header_len = format::METADATA_SIZE as usize;
    let (header, pm) = input.split_at(input.len().min(header_len));
    let mut images = Images {
        backing: vec![0; (GEO.blockcnt() * u64::from(GEO.blocklen)) as usize],
        ..Default::default()
    };
    images.backing[..header.len()].copy_from_slice(header);
    let region = &images.backing[format::PATH_OFFSET as usize..header_len];
    if let Ok(path) = format::decode_path(region) {
        images.pm.insert(path, pm.to_vec());
    }
    let mode = if input.len().is_multiple_of(2) {
        Mode::Immediate
    } else {
        Mode::Deferred
    };
    let rig = Rig::from_images(GEO, &images, mode, CodecKind::test(mode));
    let Ok(vol) = rig.load() else { return };
    let p = vol.params();
    let blocks = u64::from(p.chunk_size / p.logical_block_size);
    let chunks = p.vol_size / u64::from(p.chunk_size);
    for chunk in 0..chunks.min(64) {
        if let Err(e) = rig.read(&vol, chunk * blocks, blocks) {
            assert_eq!(e, Errno::EIO, "read of a loaded volume failed oddly");
        }
    }
    rig.check(&vol).expect("check of a loaded volume runs");
    let bytes = data(1, p.chunk_size as usize);
    match rig.write(&vol, 0, &bytes) {
        Ok(()) => assert_eq!(rig.read(&vol, 0, blocks).as_deref(), Ok(&bytes[..])),
        Err(e) => assert!(e == Errno::EIO || e == Errno::ENOSPC, "write: {e:?}"),
    }
    rig.unload(&vol).expect("unload");
});
