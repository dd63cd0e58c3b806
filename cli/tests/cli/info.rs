use std::fs;

use reduce::{FileDevice, ZstdCodec, blocking};

use crate::common::{CHUNK, Scene, allocated, fails, random, stdout, text};

#[test]
fn info_reports_stored_against_logical_bytes() {
    let s = Scene::new();
    s.create("vol.img", "16M");
    let free_when_empty = s.info("vol.img")["stats"]["io_units_free"]
        .as_u64()
        .unwrap();
    // 6 chunks of text (one 4 KiB io unit each), 2 of random bytes (stored whole: 4 io
    // units), 2 of zeros (not stored).
    let mut image = text(6 * CHUNK);
    image.extend(random(2 * CHUNK, 7));
    image.extend(vec![0; 2 * CHUNK]);
    s.write("image.raw", &image);
    s.reduce(&["import", "vol.img", "image.raw"])
        .assert()
        .success();

    let info = s.info("vol.img");
    let (logical, stored) = (8 * CHUNK as u64, (6 + 2 * 4) * 4096u64);
    assert_eq!(info["chunks_in_use"], 8);
    assert_eq!(info["chunks"], 16 * 64 - 128);
    assert_eq!(info["logical_bytes"], logical);
    assert_eq!(info["stored_bytes"], stored);
    assert_eq!(
        info["ratio"].as_f64().unwrap(),
        logical as f64 / stored as f64
    );
    assert_eq!(info["backing_size"], 16 << 20);
    assert_eq!(info["backing_allocated"], allocated(&s.path("vol.img")));
    assert_eq!(info["file"], "vol.img");
    let pm = info["pm_file"].as_str().unwrap();
    assert_eq!(
        s.pm_files(),
        vec![s.pm_dir().join(info["uuid"].as_str().unwrap())]
    );
    assert!(pm.ends_with(info["uuid"].as_str().unwrap()));

    // The volume's own statistics: the random chunks are the raw ones; the text
    // compresses into less than its io units.
    let stats = &info["stats"];
    assert_eq!(stats["chunks_in_use"], 8);
    assert_eq!(stats["chunks_raw"], 2);
    assert_eq!(stats["io_units_in_use"], 6 + 2 * 4);
    assert_eq!(stats["io_units_free"], free_when_empty - (6 + 2 * 4));
    let compressed = stats["stored_bytes"].as_u64().unwrap();
    assert!(
        compressed > 2 * CHUNK as u64 && compressed < 2 * CHUNK as u64 + 6 * 4096,
        "{compressed} compressed bytes for 2 raw chunks and 6 of text"
    );

    let out = stdout(&mut s.reduce(&["info", "vol.img"]));
    for line in [
        "file:          vol.img".to_string(),
        format!("uuid:          {}", info["uuid"].as_str().unwrap()),
        format!("pm file:       {pm}"),
        "compression:   zstd level 1".to_string(),
        "volume size:   14 MiB (14680064 bytes)".to_string(),
        "geometry:      chunk 16 KiB, io unit 4 KiB, logical block 512 B".to_string(),
        "chunks in use: 8 of 896 (0.9%)".to_string(),
        "logical bytes: 128 KiB (131072 bytes) in the chunks in use".to_string(),
        "stored bytes:  56 KiB (57344 bytes) in io units".to_string(),
        "ratio:         2.29 (logical / stored)".to_string(),
        "raw chunks:    2 of the chunks in use (stored uncompressed)".to_string(),
        format!("({compressed} bytes) of data in the chunks in use"),
        format!("io units:      14 in use, {} free", free_when_empty - 14),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
}

#[test]
fn info_of_an_empty_volume_has_no_ratio() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let info = s.info("vol.img");
    assert_eq!(info["stored_bytes"], 0);
    assert!(info["ratio"].is_null());
    assert_eq!(info["stats"]["chunks_in_use"], 0);
    assert_eq!(info["stats"]["io_units_in_use"], 0);
    assert_eq!(info["stats"]["stored_bytes"], 0);
    let out = stdout(&mut s.reduce(&["info", "vol.img"]));
    assert!(out.contains("ratio:         - (nothing stored)"), "{out}");
    assert!(out.contains("compressed:    0 B (0 bytes)"), "{out}");
}

#[test]
fn a_missing_file_is_named() {
    let s = Scene::new();
    let err = fails(&mut s.reduce(&["info", "nofile.img"]), 2);
    assert_eq!(err, "reduce info: nofile.img: No such file or directory\n");
    let err = fails(&mut s.reduce(&["info", "pm"]), 2);
    assert!(err.contains("pm: Is a directory"), "{err}");
}

#[test]
fn a_file_that_holds_no_volume_is_named() {
    let s = Scene::new();
    s.write("random.img", &random(1 << 20, 3));
    let err = fails(&mut s.reduce(&["info", "random.img"]), 2);
    assert!(err.contains("random.img holds no reduce volume"), "{err}");
    assert!(err.contains("no volume signature"), "{err}");
    s.write("empty.img", &[]);
    let err = fails(&mut s.reduce(&["info", "empty.img"]), 2);
    assert!(err.contains("empty.img holds no reduce volume"), "{err}");
}

#[test]
fn a_loaded_volume_is_in_use() {
    let s = Scene::new();
    let vol = s.create("vol.img", "8M");
    let pm = s.pm_file("vol.img");
    let loaded = blocking::Volume::load(FileDevice::open(&vol, 512).unwrap(), ZstdCodec).unwrap();
    for cmd in ["info", "check", "destroy"] {
        let err = fails(&mut s.reduce(&[cmd, "vol.img"]), 2);
        assert!(err.contains("vol.img: the volume is in use"), "{err}");
        assert!(
            err.contains(&format!("pm file {} is locked", pm.display())),
            "{err}"
        );
        assert!(err.contains("hint: stop that program"), "{err}");
    }
    let err = fails(&mut s.reduce(&["destroy", "--force", "vol.img"]), 2);
    assert!(err.contains("vol.img: the volume is in use"), "{err}");
    s.write("image.raw", &text(CHUNK));
    for cmd in ["import", "export"] {
        let err = fails(&mut s.reduce(&[cmd, "vol.img", "image.raw"]), 2);
        assert!(err.contains("the volume is in use"), "{err}");
    }
    assert_eq!(fs::read(s.path("image.raw")).unwrap(), text(CHUNK));
    loaded.unload().unwrap();
    // Free again, and nothing was changed.
    assert_eq!(s.info("vol.img")["chunks_in_use"], 0);
}

#[test]
fn a_missing_pm_file_is_named_with_the_way_out() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let pm = s.pm_file("vol.img");
    fs::remove_file(&pm).unwrap();
    let err = fails(&mut s.reduce(&["info", "vol.img"]), 2);
    assert!(
        err.contains(&format!(
            "vol.img: the volume's pm file {} is missing",
            pm.display()
        )),
        "{err}"
    );
    assert!(err.contains("reduce destroy --force vol.img"), "{err}");
}

#[test]
fn a_damaged_pm_file_is_named() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let pm = s.pm_file("vol.img");
    let len = fs::metadata(&pm).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&pm)
        .unwrap()
        .set_len(len - 64)
        .unwrap();
    let err = fails(&mut s.reduce(&["info", "vol.img"]), 2);
    assert!(
        err.contains(&format!(
            "vol.img: the volume's pm file {} is damaged or belongs to another volume",
            pm.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} bytes, not the {len}", len - 64)),
        "{err}"
    );
    assert!(err.contains("reduce destroy --force vol.img"), "{err}");
}

#[test]
fn a_foreign_pm_file_is_named() {
    let s = Scene::new();
    s.create("a.img", "8M");
    s.create("b.img", "8M");
    let (a, b) = (s.pm_file("a.img"), s.pm_file("b.img"));
    fs::copy(&b, &a).unwrap();
    let err = fails(&mut s.reduce(&["info", "a.img"]), 2);
    assert!(
        err.contains("damaged or belongs to another volume"),
        "{err}"
    );
    assert!(
        err.contains("its superblock differs from the backing device's"),
        "{err}"
    );
    // b is its own volume still.
    s.reduce(&["info", "b.img"]).assert().success();
}

/// A caller's own codec that records no compression, as every codec of the 2019
/// libreduce: it stores every chunk uncompressed.
struct Unrecorded;

impl reduce::SyncCodec for Unrecorded {
    fn compress_buf(&self, _: &[u8], _: &mut [u8]) -> reduce::Result<usize> {
        Err(reduce::Errno::ENOSPC.into())
    }

    fn decompress_buf(&self, src: &[u8], dst: &mut [u8]) -> reduce::Result<usize> {
        dst[..src.len()].copy_from_slice(src);
        Ok(src.len())
    }
}

#[test]
fn a_volume_without_a_recorded_codec_is_described_but_not_read() {
    let s = Scene::new();
    let device = FileDevice::create(s.path("vol.img"), 512, (8 << 20) / 512).unwrap();
    let params = reduce::Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: CHUNK as u32,
        ..Default::default()
    };
    let vol = blocking::Volume::init(params, device, Unrecorded, s.pm_dir()).unwrap();
    vol.write(0, &text(CHUNK)).unwrap();
    vol.unload().unwrap();

    let info = s.info("vol.img");
    assert_eq!(info["compression"]["algo"], "deflate");
    assert_eq!(info["compression"]["level"], 0);
    assert_eq!(info["chunks_in_use"], 1);
    let out = stdout(&mut s.reduce(&["info", "vol.img"]));
    assert!(out.contains("compression:   deflate level 0"), "{out}");
    s.write("in.raw", &random(CHUNK, 1));
    for args in [
        &["check", "vol.img"][..],
        &["import", "vol.img", "in.raw"],
        &["export", "vol.img", "out.raw"],
    ] {
        let err = fails(&mut s.reduce(args), 2);
        assert!(
            err.contains("vol.img: its chunks are stored with compression 0 (deflate) at level 0, which reduce has no built-in codec for"),
            "{err}"
        );
    }
    assert!(!s.path("out.raw").exists());
    assert_eq!(s.info("vol.img")["chunks_in_use"], 1);
    s.reduce(&["destroy", "vol.img"]).assert().success();
    assert!(s.pm_files().is_empty());
}

#[test]
fn a_reader_that_stops_early_is_no_panic() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    // The reader is gone before the command has loaded the volume and prints.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reduce"))
        .current_dir(s.path(""))
        .args(["info", "vol.img"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(out.status.success(), "{:?}", out.status);
}
