use std::fs;

use reduce::{FileDevice, Lz4Codec, blocking};

use crate::common::{CHUNK, RESERVE, Scene, allocated, fails, random, stdout, text};

/// An image of every kind of chunk, ending part way through a logical block.
fn mixed() -> Vec<u8> {
    let mut image = text(3 * CHUNK);
    image.extend(vec![0; 4 * CHUNK]);
    image.extend(random(2 * CHUNK, 5));
    image.extend(vec![0; CHUNK]);
    image.extend(random(CHUNK + 700, 9));
    image
}

#[test]
fn import_then_export_gives_the_image_back() {
    let s = Scene::new();
    s.create("vol.img", "16M");
    let image = mixed();
    s.write("in.raw", &image);
    let out = stdout(&mut s.reduce(&["import", "vol.img", "in.raw"]));
    // 3 text + 2 random + 2 random (the last, partial one included); 5 of zeros.
    assert!(
        out.contains("into vol.img: 7 chunks written, 5 chunks of zeros skipped"),
        "{out}"
    );
    assert!(out.contains("MiB/s)") || out.contains("KiB/s)"), "{out}");
    assert_eq!(s.info("vol.img")["chunks_in_use"], 7);

    let out = stdout(&mut s.reduce(&["export", "vol.img", "out.raw"]));
    let vol_size = (16 << 20) - RESERVE;
    let chunks = vol_size / CHUNK as u64;
    assert!(
        out.contains(&format!(
            "7 chunks of data, {} chunks of zeros skipped",
            chunks - 7
        )),
        "{out}"
    );
    let back = fs::read(s.path("out.raw")).unwrap();
    assert_eq!(back.len() as u64, vol_size);
    assert_eq!(&back[..image.len()], &image[..]);
    assert!(back[image.len()..].iter().all(|&b| b == 0));
    // Sparse: the skipped chunks are holes.
    let on_disk = allocated(&s.path("out.raw"));
    assert!(on_disk <= 8 * CHUNK as u64, "{on_disk} bytes allocated");
}

#[test]
fn import_leaves_the_volume_past_the_image_alone_and_clears_zeros_over_data() {
    let s = Scene::new();
    s.create("vol.img", "16M");
    let first = random(8 * CHUNK, 21);
    s.write("first.raw", &first);
    s.reduce(&["import", "vol.img", "first.raw"])
        .assert()
        .success();
    // A shorter image, zeros in its second chunk: that chunk is written as zeros (the
    // volume held data there), the rest of the volume keeps the first image's bytes.
    let mut second = text(4 * CHUNK + 512);
    second[CHUNK..2 * CHUNK].fill(0);
    s.write("second.raw", &second);
    let out = stdout(&mut s.reduce(&["import", "vol.img", "second.raw"]));
    assert!(
        out.contains("4 chunks written, 0 chunks of zeros skipped, 1 chunks cleared"),
        "{out}"
    );

    s.reduce(&["export", "vol.img", "out.raw", "--quiet"])
        .assert()
        .success()
        .stdout("");
    let back = fs::read(s.path("out.raw")).unwrap();
    assert_eq!(&back[..second.len()], &second[..]);
    assert_eq!(&back[second.len()..first.len()], &first[second.len()..]);
}

#[test]
fn an_image_larger_than_the_volume_is_refused_before_writing() {
    let s = Scene::new();
    // 2 MiB of file, 128 chunks of it the reserve: a 256 KiB volume.
    s.create("vol.img", "2304K");
    let vol_size = s.info("vol.img")["vol_size"].as_u64().unwrap();
    assert_eq!(vol_size, 256 << 10);
    s.write("big.raw", &random(vol_size as usize + 512, 3));
    let err = fails(&mut s.reduce(&["import", "vol.img", "big.raw"]), 2);
    assert!(
        err.contains("vol.img: the volume is too small for big.raw"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(s.info("vol.img")["chunks_in_use"], 0);
    // Exactly the volume's size fits, incompressible as it is.
    s.write("fits.raw", &random(vol_size as usize, 4));
    s.reduce(&["import", "vol.img", "fits.raw"])
        .assert()
        .success();
    assert_eq!(s.info("vol.img")["chunks_in_use"], vol_size / CHUNK as u64);
    s.reduce(&["check", "vol.img"]).assert().success();
}

#[test]
fn import_and_export_name_what_is_wrong() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let err = fails(&mut s.reduce(&["import", "vol.img", "nothere.raw"]), 2);
    assert_eq!(
        err,
        "reduce import: nothere.raw: No such file or directory\n"
    );
    s.write("in.raw", &text(CHUNK));
    let err = fails(&mut s.reduce(&["import", "novol.img", "in.raw"]), 2);
    assert_eq!(err, "reduce import: novol.img: No such file or directory\n");
    let err = fails(&mut s.reduce(&["import", "in.raw", "in.raw"]), 2);
    assert!(
        err.contains("in.raw is the volume's own backing file"),
        "{err}"
    );
    let err = fails(&mut s.reduce(&["export", "vol.img", "nodir/out.raw"]), 2);
    assert_eq!(
        err,
        "reduce export: nodir/out.raw: No such file or directory\n"
    );
    let err = fails(&mut s.reduce(&["export", "in.raw", "out.raw"]), 2);
    assert!(err.contains("in.raw holds no reduce volume"), "{err}");
    assert!(!s.path("out.raw").exists());
}

#[test]
fn export_refuses_the_volume_s_own_file() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    s.write("in.raw", &text(2 * CHUNK));
    s.reduce(&["import", "vol.img", "in.raw"])
        .assert()
        .success();
    let err = fails(&mut s.reduce(&["export", "vol.img", "./vol.img"]), 2);
    assert!(
        err.contains("./vol.img is the volume's own backing file vol.img"),
        "{err}"
    );
    assert_eq!(s.info("vol.img")["chunks_in_use"], 2);
    s.reduce(&["check", "vol.img"]).assert().success();
}

#[test]
fn export_overwrites_an_existing_image_whole() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    s.write("out.raw", &random(16 << 20, 8));
    s.reduce(&["export", "vol.img", "out.raw"])
        .assert()
        .success();
    let back = fs::read(s.path("out.raw")).unwrap();
    assert_eq!(back.len() as u64, (8 << 20) - RESERVE);
    assert!(back.iter().all(|&b| b == 0));
}

#[test]
fn an_lz4_volume_round_trips_and_reads_back_in_the_library() {
    let s = Scene::new();
    s.reduce(&[
        "create",
        "vol.img",
        "--pm-dir",
        "pm",
        "--size",
        "8M",
        "--codec",
        "lz4",
        "--block-size",
        "4K",
    ])
    .assert()
    .success();
    let image = mixed();
    s.write("in.raw", &image);
    s.reduce(&["import", "vol.img", "in.raw"])
        .assert()
        .success();
    s.reduce(&["check", "vol.img"]).assert().success();
    // What the command wrote, the library reads with the recorded codec.
    let vol = blocking::Volume::load(FileDevice::open(s.path("vol.img"), 512).unwrap(), Lz4Codec)
        .unwrap();
    let mut back = vec![0u8; image.len().next_multiple_of(4096)];
    for (i, piece) in back.chunks_mut(CHUNK).enumerate() {
        vol.read((i * CHUNK / 4096) as u64, piece).unwrap();
    }
    vol.unload().unwrap();
    assert_eq!(&back[..image.len()], &image[..]);
    assert!(back[image.len()..].iter().all(|&b| b == 0));
}
