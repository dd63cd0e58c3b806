//! A scene for the command: a temporary directory with a pm directory, the binary, and
//! data whose compressed size is known.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

pub const CHUNK: usize = 16384;
/// The volume's reserve: 128 chunks of the backing file are not its size.
pub const RESERVE: u64 = 128 * CHUNK as u64;

pub struct Scene {
    dir: TempDir,
}

impl Scene {
    pub fn new() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("pm")).expect("pm dir");
        Scene { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pm_dir(&self) -> PathBuf {
        self.path("pm")
    }

    /// The files in the pm directory.
    pub fn pm_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.pm_dir())
            .expect("pm dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    /// `reduce ARGS`, run in the scene's directory.
    pub fn reduce(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("reduce").expect("the reduce binary");
        cmd.current_dir(self.dir.path()).args(args);
        cmd
    }

    /// Creates a volume on a new backing file `name` of `size`, default geometry.
    pub fn create(&self, name: &str, size: &str) -> PathBuf {
        self.reduce(&["create", name, "--pm-dir", "pm", "--size", size])
            .assert()
            .success();
        self.path(name)
    }

    /// `reduce info --json`, parsed.
    pub fn info(&self, name: &str) -> Value {
        let out = self.reduce(&["info", name, "--json"]).assert().success();
        serde_json::from_slice(&out.get_output().stdout).expect("info --json prints JSON")
    }

    pub fn pm_file(&self, name: &str) -> PathBuf {
        PathBuf::from(self.info(name)["pm_file"].as_str().expect("pm_file"))
    }

    /// Writes `data` to the file `name`; returns its path.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, data).expect("write");
        path
    }
}

/// Runs `cmd`, which must fail with `code`; returns its stderr, checked to be a
/// message of `reduce SUBCOMMAND:` and no panic or debug dump.
pub fn fails(cmd: &mut Command, code: i32) -> String {
    let out = cmd.assert().code(code);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).expect("utf-8 stderr");
    for dump in ["panicked", "Error(", "Errno(", "RUST_BACKTRACE", "os error"] {
        assert!(!stderr.contains(dump), "{dump:?} in: {stderr}");
    }
    assert!(stderr.starts_with("reduce "), "{stderr}");
    stderr
}

pub fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success();
    String::from_utf8(out.get_output().stdout.clone()).expect("utf-8 stdout")
}

/// Bytes no compressor shrinks (xorshift).
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bytes that compress to a small fraction (one io unit per chunk).
pub fn text(len: usize) -> Vec<u8> {
    b"reduce stores this sentence in far fewer bytes. "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Bytes `file` takes on disk.
pub fn allocated(file: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(file).expect("metadata").blocks() * 512
}

/// The backing file's bytes of the first io unit holding data past the 8 KiB header:
/// where a test scribbles to damage stored data.
pub fn first_data_offset(file: &Path) -> u64 {
    let bytes = fs::read(file).expect("backing file");
    let unit = 4096;
    (8192..bytes.len())
        .step_by(unit)
        .find(|&at| bytes[at..at + unit].iter().any(|&b| b != 0))
        .expect("a stored chunk") as u64
}
