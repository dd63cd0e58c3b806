use std::fs;

use predicates::str::contains;

use crate::common::{RESERVE, Scene, allocated, fails, stdout};

#[test]
fn create_makes_a_sparse_file_and_a_volume_of_its_size_less_the_reserve() {
    let s = Scene::new();
    let out = stdout(&mut s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "64M"]));
    let vol = s.path("vol.img");
    assert_eq!(fs::metadata(&vol).unwrap().len(), 64 << 20);
    assert!(allocated(&vol) < 1 << 20, "not sparse: {}", allocated(&vol));
    let info = s.info("vol.img");
    assert_eq!(info["vol_size"], (64 << 20) - RESERVE);
    assert_eq!(info["chunk_size"], 16384);
    assert_eq!(info["io_unit_size"], 4096);
    assert_eq!(info["logical_block_size"], 512);
    assert_eq!(info["compression"]["algo"], "zstd");
    assert_eq!(info["compression"]["level"], 1);
    assert_eq!(info["chunks_in_use"], 0);
    // One pm file, named after the uuid, which the message names too.
    let uuid = info["uuid"].as_str().unwrap();
    assert_eq!(s.pm_files(), vec![s.pm_dir().join(uuid)]);
    assert!(out.contains("created a volume of 62 MiB"), "{out}");
    assert!(out.contains(uuid), "{out}");
}

#[test]
fn create_records_the_geometry_and_codec_asked_for() {
    let s = Scene::new();
    s.reduce(&[
        "create",
        "vol.img",
        "--pm-dir",
        "pm",
        "--size",
        "16M",
        "--chunk-size",
        "32K",
        "--io-unit",
        "8KiB",
        "--block-size",
        "4K",
        "--codec",
        "lz4",
    ])
    .assert()
    .success();
    let info = s.info("vol.img");
    assert_eq!(info["chunk_size"], 32768);
    assert_eq!(info["io_unit_size"], 8192);
    assert_eq!(info["logical_block_size"], 4096);
    assert_eq!(info["vol_size"], (16 << 20) - 128 * 32768);
    assert_eq!(info["compression"]["algo"], "lz4");
    assert_eq!(info["compression"]["algo_id"], 1);

    s.reduce(&[
        "create", "z.img", "--pm-dir", "pm", "--size", "8M", "--level", "9",
    ])
    .assert()
    .success();
    assert_eq!(s.info("z.img")["compression"]["level"], 9);
}

#[test]
fn create_uses_an_existing_file_without_size() {
    let s = Scene::new();
    let vol = s.write("vol.img", &[]);
    fs::File::options()
        .write(true)
        .open(&vol)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    s.reduce(&["create", "vol.img", "--pm-dir", "pm"])
        .assert()
        .success();
    assert_eq!(s.info("vol.img")["vol_size"], (8 << 20) - RESERVE);

    let err = fails(&mut s.reduce(&["create", "new.img", "--pm-dir", "pm"]), 2);
    assert_eq!(
        err,
        "reduce create: new.img: No such file or directory\nhint: with --size SIZE, create makes the file\n"
    );
}

#[test]
fn create_refuses_a_file_that_holds_a_volume() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let uuid = s.info("vol.img")["uuid"].clone();
    let err = fails(&mut s.reduce(&["create", "vol.img", "--pm-dir", "pm"]), 2);
    assert!(err.contains("vol.img holds a volume already"), "{err}");
    assert!(err.contains("reduce destroy vol.img"), "{err}");
    // Untouched: the same volume, one pm file.
    assert_eq!(s.info("vol.img")["uuid"], uuid);
    assert_eq!(s.pm_files().len(), 1);

    // So is one whose pm file is gone.
    fs::remove_file(&s.pm_files()[0]).unwrap();
    let err = fails(&mut s.reduce(&["create", "vol.img", "--pm-dir", "pm"]), 2);
    assert!(err.contains("holds a volume already"), "{err}");
}

#[test]
fn create_with_size_refuses_an_existing_file() {
    let s = Scene::new();
    let vol = s.write("vol.img", b"precious");
    let err = fails(
        &mut s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "8M"]),
        2,
    );
    assert!(err.contains("vol.img: File exists"), "{err}");
    assert!(err.contains("without --size"), "{err}");
    assert_eq!(fs::read(vol).unwrap(), b"precious");
    assert!(s.pm_files().is_empty());
}

#[test]
fn bad_geometry_is_refused_and_leaves_nothing() {
    let s = Scene::new();
    for (args, why) in [
        (
            &["--chunk-size", "5000"][..],
            "chunk_size 5000 is not a multiple of backing_io_unit_size 4096",
        ),
        (
            &["--block-size", "3000"][..],
            "chunk_size 16384 is not a multiple of logical_block_size 3000",
        ),
        (
            &["--io-unit", "256", "--chunk-size", "1K"][..],
            "backing_io_unit_size 256 is not a multiple of the backing block length 512",
        ),
        (&["--chunk-size", "0"][..], "chunk_size is 0"),
    ] {
        let mut cmd = s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "8M"]);
        let err = fails(cmd.args(args), 2);
        assert!(err.contains("vol.img: bad geometry"), "{err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!s.path("vol.img").exists(), "{args:?} left the file");
        assert!(s.pm_files().is_empty());
    }
}

#[test]
fn a_file_too_small_for_a_volume_is_refused() {
    let s = Scene::new();
    let err = fails(
        &mut s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "2M"]),
        2,
    );
    assert!(err.contains("backing device too small"), "{err}");
    assert!(!s.path("vol.img").exists());
    let err = fails(
        &mut s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "1000"]),
        2,
    );
    assert!(
        err.contains("--size 1000: not a whole number of 512-byte blocks"),
        "{err}"
    );
}

#[test]
fn a_missing_pm_dir_is_named_with_what_to_do() {
    let s = Scene::new();
    let err = fails(
        &mut s.reduce(&["create", "vol.img", "--pm-dir", "nodir", "--size", "8M"]),
        2,
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(err.contains("nodir/"), "{err}");
    assert!(err.contains("mkdir -p nodir"), "{err}");
    assert!(!s.path("vol.img").exists());
}

#[test]
fn codec_levels_out_of_range_are_refused() {
    let s = Scene::new();
    let create = || s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "8M"]);
    let err = fails(create().args(["--level", "23"]), 2);
    assert!(err.contains("zstd level 23: levels are 1 to 22"), "{err}");
    let err = fails(create().args(["--level", "0"]), 2);
    assert!(err.contains("zstd level 0"), "{err}");
    let err = fails(create().args(["--codec", "lz4", "--level", "2"]), 2);
    assert!(err.contains("lz4 has one level, 1"), "{err}");
    assert!(!s.path("vol.img").exists());
}

#[test]
fn usage_errors_exit_2_with_clap_messages() {
    let s = Scene::new();
    s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--size", "16KB"])
        .assert()
        .code(2)
        .stderr(contains("unknown size suffix \"KB\""));
    s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--chunk-size", "4G"])
        .assert()
        .code(2)
        .stderr(contains("at most 4G - 1 bytes"));
    s.reduce(&["create", "vol.img"])
        .assert()
        .code(2)
        .stderr(contains("--pm-dir"));
    s.reduce(&["create", "vol.img", "--pm-dir", "pm", "--codec", "gzip"])
        .assert()
        .code(2)
        .stderr(contains("possible values: zstd, lz4"));
    s.reduce(&["frobnicate"]).assert().code(2);
    assert!(!s.path("vol.img").exists());
}

#[test]
fn help_documents_the_exit_codes() {
    let s = Scene::new();
    for args in [&["--help"][..], &["check", "--help"], &["import", "--help"]] {
        let out = stdout(&mut s.reduce(args));
        assert!(out.contains("Exit codes:"), "{out}");
        assert!(out.contains("1  check: the volume has problems"), "{out}");
    }
}
