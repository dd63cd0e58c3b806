use std::fs;
use std::os::unix::fs::FileExt;

use reduce::{FileDevice, ZstdCodec, blocking};

use crate::common::{CHUNK, Scene, fails, first_data_offset, random, stdout, text};

/// The pm file's logical map: a u64 chunk-map index per chunk, from byte 4096 (the pm
/// file format in docs/DESIGN.md).
const LOGICAL_MAP_OFFSET: u64 = 4096;

fn filled(s: &Scene) {
    s.create("vol.img", "16M");
    let mut image = text(3 * CHUNK);
    image.extend(random(2 * CHUNK, 11));
    s.write("image.raw", &image);
    s.reduce(&["import", "vol.img", "image.raw"])
        .assert()
        .success();
}

#[test]
fn a_clean_volume_checks_clean() {
    let s = Scene::new();
    filled(&s);
    let out = stdout(&mut s.reduce(&["check", "vol.img"]));
    assert_eq!(
        out,
        "vol.img: 5 chunks in use, 11 io units referenced, 5 chunks read back\nvol.img: clean\n"
    );
}

#[test]
fn damaged_data_is_listed_and_exits_1() {
    let s = Scene::new();
    filled(&s);
    let vol = s.path("vol.img");
    let at = first_data_offset(&vol);
    fs::File::options()
        .write(true)
        .open(&vol)
        .unwrap()
        .write_all_at(b"scribbled", at)
        .unwrap();
    let out = s.reduce(&["check", "vol.img"]).assert().code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(stdout.contains("5 chunks in use"), "{stdout}");
    assert_eq!(
        stdout
            .matches("reading it back failed: Input/output error")
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(stderr, "reduce check: vol.img: 1 problem found\n");
}

#[test]
fn damaged_maps_are_a_problem_found() {
    let s = Scene::new();
    filled(&s);
    let pm = s.pm_file("vol.img");
    fs::File::options()
        .write(true)
        .open(&pm)
        .unwrap()
        .write_all_at(&0x1234_5678u64.to_le_bytes(), LOGICAL_MAP_OFFSET)
        .unwrap();
    let err = fails(&mut s.reduce(&["check", "vol.img"]), 1);
    assert!(
        err.contains("damaged or belongs to another volume"),
        "{err}"
    );
    assert!(err.contains("the maps are damaged"), "{err}");
    // Every other command says so too, and gives up (exit 2).
    let err = fails(&mut s.reduce(&["info", "vol.img"]), 2);
    assert!(err.contains("the maps are damaged"), "{err}");
}

#[test]
fn a_missing_or_foreign_pm_file_is_a_problem_found() {
    let s = Scene::new();
    s.create("a.img", "8M");
    s.create("b.img", "8M");
    let (a, b) = (s.pm_file("a.img"), s.pm_file("b.img"));
    fs::copy(&b, &a).unwrap();
    let err = fails(&mut s.reduce(&["check", "a.img"]), 1);
    assert!(err.contains("its superblock differs"), "{err}");
    fs::remove_file(&a).unwrap();
    let err = fails(&mut s.reduce(&["check", "a.img"]), 1);
    assert!(
        err.contains(&format!("pm file {} is missing", a.display())),
        "{err}"
    );
}

#[test]
fn what_cannot_be_checked_exits_2() {
    let s = Scene::new();
    let err = fails(&mut s.reduce(&["check", "nofile.img"]), 2);
    assert!(
        err.contains("nofile.img: No such file or directory"),
        "{err}"
    );
    s.write("zeros.img", &vec![0; 1 << 20]);
    let err = fails(&mut s.reduce(&["check", "zeros.img"]), 2);
    assert!(err.contains("zeros.img holds no reduce volume"), "{err}");

    let vol = s.create("vol.img", "8M");
    let loaded = blocking::Volume::load(FileDevice::open(&vol, 512).unwrap(), ZstdCodec).unwrap();
    let err = fails(&mut s.reduce(&["check", "vol.img"]), 2);
    assert!(err.contains("in use"), "{err}");
    loaded.unload().unwrap();
}
