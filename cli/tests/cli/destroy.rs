use std::fs;

use crate::common::{Scene, fails, stdout, text};

#[test]
fn destroy_removes_the_pm_file_and_the_signature_and_keeps_the_file() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    s.write("in.raw", &text(16384));
    s.reduce(&["import", "vol.img", "in.raw"])
        .assert()
        .success();
    let out = stdout(&mut s.reduce(&["destroy", "vol.img"]));
    assert!(out.contains("vol.img: volume destroyed"), "{out}");
    assert!(s.pm_files().is_empty());
    assert_eq!(fs::metadata(s.path("vol.img")).unwrap().len(), 8 << 20);
    let err = fails(&mut s.reduce(&["info", "vol.img"]), 2);
    assert!(err.contains("vol.img holds no reduce volume"), "{err}");
    // And the file takes a new volume.
    s.reduce(&["create", "vol.img", "--pm-dir", "pm"])
        .assert()
        .success();
    assert_eq!(s.info("vol.img")["chunks_in_use"], 0);
}

#[test]
fn a_volume_without_its_pm_file_needs_force() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let pm = s.pm_file("vol.img");
    fs::remove_file(&pm).unwrap();
    let err = fails(&mut s.reduce(&["destroy", "vol.img"]), 2);
    assert!(
        err.contains(&format!("pm file {} is missing", pm.display())),
        "{err}"
    );
    assert!(err.contains("reduce destroy --force vol.img"), "{err}");
    s.reduce(&["destroy", "--force", "vol.img"])
        .assert()
        .success();
    let err = fails(&mut s.reduce(&["info", "vol.img"]), 2);
    assert!(err.contains("holds no reduce volume"), "{err}");
}

#[test]
fn force_removes_a_damaged_pm_file() {
    let s = Scene::new();
    s.create("vol.img", "8M");
    let pm = s.pm_file("vol.img");
    fs::write(&pm, b"not a pm file").unwrap();
    let err = fails(&mut s.reduce(&["destroy", "vol.img"]), 2);
    assert!(
        err.contains("damaged or belongs to another volume"),
        "{err}"
    );
    assert!(pm.exists());
    s.reduce(&["destroy", "--force", "vol.img"])
        .assert()
        .success();
    assert!(s.pm_files().is_empty());
    let err = fails(&mut s.reduce(&["destroy", "--force", "vol.img"]), 2);
    assert!(err.contains("vol.img holds no reduce volume"), "{err}");
}

#[test]
fn destroy_names_what_is_wrong() {
    let s = Scene::new();
    let err = fails(&mut s.reduce(&["destroy", "nofile.img"]), 2);
    assert_eq!(
        err,
        "reduce destroy: nofile.img: No such file or directory\n"
    );
    s.write("plain.img", &vec![7; 1 << 20]);
    let err = fails(&mut s.reduce(&["destroy", "plain.img"]), 2);
    assert!(err.contains("plain.img holds no reduce volume"), "{err}");
    assert_eq!(fs::read(s.path("plain.img")).unwrap(), vec![7; 1 << 20]);
}
