//! Destroy all or nothing with real files: a pm file that cannot be removed (its
//! directory made immutable with `chattr +i`, which stops even root) fails the destroy
//! with the OS error and leaves the volume intact and loadable.
//!
//! A binary of its own: `chattr` runs as a child process, and a child forked while
//! another test holds a pm file's lock would hold that lock too until it execs.

use std::path::Path;
use std::process::Command;

use reduce::testkit::*;
use reduce::{Backend, Errno, FileStore, InitPlan, Result, Volume, ZstdCodec};

const GEO: Geo = Geo::small(8);

/// Makes `dir` immutable while it lives; `None` where the file system or the user
/// cannot.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(dir: &'a Path) -> Option<Immutable<'a>> {
        chattr("+i", dir).then_some(Immutable(dir))
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        chattr("-i", self.0);
    }
}

fn chattr(flag: &str, dir: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn backend(backing: &MemBacking) -> Backend {
    Backend {
        backing: Box::new(backing.clone()),
        codec: Box::new(ZstdCodec),
        store: Box::new(FileStore),
    }
}

fn run<T: 'static>(backing: &MemBacking, start: impl FnOnce(Backend, Box<dyn FnOnce(T)>)) -> T {
    let s = slot();
    start(backend(backing), Box::new(filler(&s)));
    wait_on(backing, &s)
}

fn load(backing: &MemBacking) -> Result<Volume> {
    run(backing, Volume::load)
}

fn unload(backing: &MemBacking, vol: &Volume) -> Result<()> {
    let s = slot();
    vol.unload(filler(&s));
    wait_on(backing, &s)
}

fn destroy(backing: &MemBacking) -> Result<()> {
    run(backing, Volume::destroy)
}

fn destroy_force(backing: &MemBacking) -> Result<()> {
    run(backing, Volume::destroy_force)
}

fn write_chunk(backing: &MemBacking, vol: &Volume, chunk: u64, bytes: Vec<u8>) {
    let s = slot();
    let f = filler(&s);
    let bpc = GEO.blocks_per_chunk();
    vol.writev(chunk * bpc, bpc, vec![bytes], move |r, _| f(r));
    wait_on(backing, &s).unwrap();
}

fn read_chunk(backing: &MemBacking, vol: &Volume, chunk: u64) -> Vec<u8> {
    let s = slot();
    let f = filler(&s);
    let bpc = GEO.blocks_per_chunk();
    vol.readv(
        chunk * bpc,
        bpc,
        vec![vec![0; GEO.chunk as usize]],
        move |r, segs| f(r.map(|()| segs.concat())),
    );
    wait_on(backing, &s).unwrap()
}

#[test]
fn destroy_in_an_immutable_directory_leaves_the_volume_intact() {
    for mode in [Mode::Immediate, Mode::Deferred] {
        let dir = tempfile::tempdir().unwrap();
        let backing = MemBacking::new(GEO.blocklen, GEO.blockcnt(), mode);
        let plan = InitPlan::new(GEO.params(), GEO.blocklen, GEO.blockcnt(), dir.path()).unwrap();
        let pm_path = plan.pm_path().to_path_buf();
        let vol = run(&backing, |b, cb| Volume::init(plan, b, cb)).unwrap();
        let bytes = data(5, GEO.chunk as usize);
        write_chunk(&backing, &vol, 2, bytes.clone());
        unload(&backing, &vol).unwrap();
        let image = backing.image();

        let Some(pinned) = Immutable::set(dir.path()) else {
            eprintln!("chattr +i is not available here: skipped");
            return;
        };
        let err = destroy(&backing).unwrap_err();
        assert_eq!(err, Errno(libc::EPERM), "{err}");
        assert!(err.detail().contains("intact"), "{err}");
        assert_eq!(backing.image(), image, "the superblock was not put back");
        assert!(pm_path.is_file());
        // A retry fails the same way, never with "no volume here".
        assert_eq!(destroy(&backing), Err(Errno(libc::EPERM).into()));
        // A forced destroy that cannot remove the pm file changes nothing either.
        assert_eq!(destroy_force(&backing), Err(Errno(libc::EPERM).into()));
        assert_eq!(backing.image(), image);
        let vol = load(&backing).unwrap();
        assert_eq!(read_chunk(&backing, &vol, 2), bytes);
        unload(&backing, &vol).unwrap();
        drop(pinned);

        destroy(&backing).unwrap();
        assert!(!pm_path.exists());
        assert_ne!(&backing.image()[..8], b"SPDKREDU");
        assert_eq!(load(&backing).err().unwrap(), Errno::EILSEQ);
    }
}
