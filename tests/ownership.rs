//! One owner per volume, destroy all or nothing, forced destroy, pm paths as bytes and
//! the room a geometry must leave (docs/DESIGN.md, the error contract's ownership rows),
//! from the Rust API: with real pm files (`FileStore`, whose lock is `flock`) and with
//! the in-memory store that models the lock, in both completion modes.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use common::{Shadow, errno_of};
use reduce::testkit::*;
use reduce::{Backend, Errno, FileStore, InitPlan, Params, PmStore, Result, Volume, ZstdCodec};

const GEO: Geo = Geo::small(8);
const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];
const UUID_A: [u8; 16] = [0xA1; 16];
const UUID_B: [u8; 16] = [0xB2; 16];

/// Where a host keeps its pm files.
enum Store {
    Mem(MemStore),
    Files(tempfile::TempDir),
}

/// A backing device and a pm store, with blocking helpers: a stand-in for an
/// application that may open the same volume more than once.
struct Host {
    backing: MemBacking,
    store: Store,
    mode: Mode,
}

impl Host {
    fn mem(mode: Mode) -> Host {
        Host {
            backing: MemBacking::new(GEO.blocklen, GEO.blockcnt(), mode),
            store: Store::Mem(MemStore::new()),
            mode,
        }
    }

    fn files(mode: Mode) -> Host {
        Host {
            backing: MemBacking::new(GEO.blocklen, GEO.blockcnt(), mode),
            store: Store::Files(tempfile::tempdir().unwrap()),
            mode,
        }
    }

    /// Both kinds of store, in both modes.
    fn all() -> Vec<Host> {
        MODES
            .iter()
            .flat_map(|&m| [Host::mem(m), Host::files(m)])
            .collect()
    }

    fn name(&self) -> String {
        let store = match self.store {
            Store::Mem(_) => "MemStore",
            Store::Files(_) => "FileStore",
        };
        format!("{store}, {:?}", self.mode)
    }

    fn dir(&self) -> PathBuf {
        match &self.store {
            Store::Mem(_) => PathBuf::from("/pm"),
            Store::Files(dir) => dir.path().to_path_buf(),
        }
    }

    fn pm_store(&self) -> Box<dyn PmStore> {
        match &self.store {
            Store::Mem(store) => Box::new(store.clone()),
            Store::Files(_) => Box::new(FileStore),
        }
    }

    fn backend(&self) -> Backend {
        Backend {
            backing: Box::new(self.backing.clone()),
            codec: Box::new(ZstdCodec),
            store: self.pm_store(),
        }
    }

    fn plan_in(&self, dir: impl AsRef<Path>, uuid: [u8; 16]) -> InitPlan {
        let params = Params {
            uuid,
            ..GEO.params()
        };
        InitPlan::new(params, GEO.blocklen, GEO.blockcnt(), dir).unwrap()
    }

    fn init(&self, uuid: [u8; 16]) -> Result<Volume> {
        self.init_plan(self.plan_in(self.dir(), uuid))
    }

    fn init_plan(&self, plan: InitPlan) -> Result<Volume> {
        let s = slot();
        Volume::init(plan, self.backend(), filler(&s));
        wait_on(&self.backing, &s)
    }

    fn load(&self) -> Result<Volume> {
        let s = slot();
        Volume::load(self.backend(), filler(&s));
        wait_on(&self.backing, &s)
    }

    fn unload(&self, vol: &Volume) -> Result<()> {
        let s = slot();
        vol.unload(filler(&s));
        wait_on(&self.backing, &s)
    }

    fn destroy(&self) -> Result<()> {
        let s = slot();
        Volume::destroy(self.backend(), filler(&s));
        wait_on(&self.backing, &s)
    }

    fn destroy_force(&self) -> Result<()> {
        let s = slot();
        Volume::destroy_force(self.backend(), filler(&s));
        wait_on(&self.backing, &s)
    }

    fn write(&self, vol: &Volume, chunk: u64, data: &[u8]) -> Result<()> {
        let s = slot();
        let f = filler(&s);
        let bpc = GEO.blocks_per_chunk();
        vol.writev(chunk * bpc, bpc, vec![data.to_vec()], move |r, _| f(r));
        wait_on(&self.backing, &s)
    }

    fn read(&self, vol: &Volume, chunk: u64) -> Result<Vec<u8>> {
        let s = slot();
        let f = filler(&s);
        let bpc = GEO.blocks_per_chunk();
        let buf = vec![0xA5; GEO.chunk as usize];
        vol.readv(chunk * bpc, bpc, vec![buf], move |r, segs| {
            f(r.map(|()| segs.concat()))
        });
        wait_on(&self.backing, &s)
    }

    /// The pm files there are now.
    fn pm_files(&self) -> Vec<PathBuf> {
        let mut files = match &self.store {
            Store::Mem(store) => store.paths(),
            Store::Files(dir) => std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect(),
        };
        files.sort();
        files
    }

    fn pm_path_of(&self, uuid: [u8; 16]) -> PathBuf {
        self.dir()
            .join(uuid::Uuid::from_bytes(uuid).hyphenated().to_string())
    }

    /// Replaces (or with `None` removes) the pm file at `path`, as damage from outside.
    fn put_pm(&self, path: &Path, bytes: Option<Vec<u8>>) {
        match (&self.store, bytes) {
            (Store::Mem(store), Some(bytes)) => store.insert(path, bytes),
            (Store::Mem(store), None) => store.remove(path).unwrap(),
            (Store::Files(_), Some(bytes)) => std::fs::write(path, bytes).unwrap(),
            (Store::Files(_), None) => std::fs::remove_file(path).unwrap(),
        }
    }

    fn header(&self) -> Vec<u8> {
        self.backing.image()[..8192].to_vec()
    }
}

fn has_signature(image: &[u8]) -> bool {
    &image[..8] == b"SPDKREDU"
}

/// A volume with data in chunks 0 and 3, left loaded.
fn populated(host: &Host, uuid: [u8; 16]) -> (Volume, Shadow) {
    let vol = host.init(uuid).unwrap();
    let mut shadow = Shadow::new(GEO);
    for (chunk, seed) in [(0u64, 1u64), (3, 2)] {
        let bytes = data(seed, GEO.chunk as usize);
        host.write(&vol, chunk, &bytes).unwrap();
        shadow.write(chunk * GEO.blocks_per_chunk(), &bytes);
    }
    (vol, shadow)
}

fn verify(host: &Host, vol: &Volume, shadow: &Shadow, at: &str) {
    for chunk in 0..GEO.chunks {
        let bpc = GEO.blocks_per_chunk();
        assert_eq!(
            host.read(vol, chunk).unwrap(),
            shadow.expect(chunk * bpc, bpc),
            "{at}: chunk {chunk}"
        );
    }
}

// ---------------------------------------------------------------- one owner

#[test]
fn a_second_load_is_ebusy_and_changes_nothing() {
    for host in Host::all() {
        let at = host.name();
        let (vol, mut shadow) = populated(&host, UUID_A);
        let image = host.backing.image();
        assert_eq!(errno_of(host.load()), Errno::EBUSY, "{at}");
        assert_eq!(host.backing.image(), image, "{at}: a refused load wrote");
        // The first handle goes on as before, and what it writes is kept.
        let bytes = data(9, GEO.chunk as usize);
        host.write(&vol, 5, &bytes).unwrap();
        shadow.write(5 * GEO.blocks_per_chunk(), &bytes);
        verify(&host, &vol, &shadow, &at);
        host.unload(&vol).unwrap();
        // Unloaded, the lock is gone: it loads, with everything.
        let vol = host.load().unwrap();
        verify(&host, &vol, &shadow, &at);
        host.unload(&vol).unwrap();
        let vol = host.load().unwrap();
        host.unload(&vol).unwrap();
    }
}

#[test]
fn init_over_a_loaded_volume_is_ebusy_and_makes_nothing() {
    for host in Host::all() {
        let at = host.name();
        let (vol, shadow) = populated(&host, UUID_A);
        let image = host.backing.image();
        let files = host.pm_files();
        assert_eq!(files, vec![host.pm_path_of(UUID_A)], "{at}");
        for uuid in [UUID_B, UUID_A, [0; 16]] {
            assert_eq!(errno_of(host.init(uuid)), Errno::EBUSY, "{at}");
            assert_eq!(host.backing.image(), image, "{at}: superblock touched");
            assert_eq!(host.pm_files(), files, "{at}: a pm file was made");
        }
        verify(&host, &vol, &shadow, &at);
        host.unload(&vol).unwrap();
        // Not loaded, it is overwritten as in the original; its pm file stays.
        let vol = host.init(UUID_B).unwrap();
        assert_eq!(vol.params().uuid, UUID_B);
        assert_eq!(
            host.pm_files().len(),
            2,
            "{at}: the replaced volume's pm file is left as the original leaves it"
        );
        host.unload(&vol).unwrap();
        assert_eq!(host.load().unwrap().params().uuid, UUID_B, "{at}");
    }
}

#[test]
fn destroy_of_a_loaded_volume_is_ebusy_and_changes_nothing() {
    for host in Host::all() {
        let at = host.name();
        let (vol, mut shadow) = populated(&host, UUID_A);
        let image = host.backing.image();
        assert_eq!(host.destroy(), Err(Errno::EBUSY.into()), "{at}");
        assert_eq!(host.destroy_force(), Err(Errno::EBUSY.into()), "{at}");
        assert_eq!(
            host.backing.image(),
            image,
            "{at}: the signature was touched"
        );
        assert_eq!(host.pm_files(), vec![host.pm_path_of(UUID_A)], "{at}");
        // Writes after the refused destroy are kept.
        let bytes = data(7, GEO.chunk as usize);
        host.write(&vol, 6, &bytes).unwrap();
        shadow.write(6 * GEO.blocks_per_chunk(), &bytes);
        host.unload(&vol).unwrap();
        let vol = host.load().unwrap();
        verify(&host, &vol, &shadow, &at);
        host.unload(&vol).unwrap();
        host.destroy().unwrap();
        assert!(!has_signature(&host.backing.image()), "{at}");
        assert!(host.pm_files().is_empty(), "{at}");
    }
}

#[test]
fn a_lock_held_outside_the_volume_refuses_load_init_and_destroy() {
    // Another holder of the pm file (another process, or another open in this one):
    // here an exclusive lock taken through the store itself.
    for host in Host::all() {
        let at = host.name();
        let (vol, _) = populated(&host, UUID_A);
        host.unload(&vol).unwrap();
        let image = host.backing.image();
        let held = host
            .pm_store()
            .lock(&host.pm_path_of(UUID_A))
            .unwrap()
            .expect("the pm file exists");
        assert_eq!(errno_of(host.load()), Errno::EBUSY, "{at}");
        assert_eq!(errno_of(host.init(UUID_B)), Errno::EBUSY, "{at}");
        assert_eq!(host.destroy(), Err(Errno::EBUSY.into()), "{at}");
        assert_eq!(host.destroy_force(), Err(Errno::EBUSY.into()), "{at}");
        assert_eq!(host.backing.image(), image, "{at}");
        assert_eq!(host.pm_files(), vec![host.pm_path_of(UUID_A)], "{at}");
        drop(held);
        let vol = host.load().unwrap();
        host.unload(&vol).unwrap();
    }
}

#[test]
fn memstore_models_the_lock() {
    let store = MemStore::new();
    let path = Path::new("/pm/x");
    assert!(store.lock(path).unwrap().is_none(), "no file, no lock");
    store.insert(path, vec![0; 64]);
    let lock = store.lock(path).unwrap().unwrap();
    assert!(store.is_locked(path));
    assert_eq!(store.lock(path).err().unwrap(), Errno::EBUSY);
    assert_eq!(store.open(path, &|_| Ok(())).err().unwrap(), Errno::EBUSY);
    drop(lock);
    assert!(!store.is_locked(path));
    let region = store.open(path, &|_| Ok(())).unwrap();
    assert_eq!(store.lock(path).err().unwrap(), Errno::EBUSY);
    // A power loss ends the process holding the lock; the region left over is inert.
    store.power_loss();
    assert!(!store.is_locked(path));
    let again = store.open(path, &|_| Ok(())).unwrap();
    drop(region);
    assert!(
        store.is_locked(path),
        "a region from before the crash released the lock"
    );
    drop(again);
    assert!(!store.is_locked(path));
}

// ---------------------------------------------------------------- destroy

#[test]
fn destroy_that_cannot_remove_the_pm_file_leaves_the_volume_intact() {
    // The store refuses to remove the pm file, as an immutable or read-only directory
    // would (tests/destroy_pinned.rs does it with real files and `chattr +i`).
    for mode in MODES {
        let store = MemStore::new();
        let host = Host {
            store: Store::Mem(store.clone()),
            ..Host::mem(mode)
        };
        let at = host.name();
        let (vol, shadow) = populated(&host, UUID_A);
        host.unload(&vol).unwrap();
        let image = host.backing.image();
        store.set_fail_remove(Some(Errno(libc::EPERM)));
        let err = host.destroy().unwrap_err();
        assert_eq!(err, Errno(libc::EPERM), "{at}: {err}");
        assert!(err.detail().contains("intact"), "{at}: {err}");
        assert_eq!(
            host.backing.image(),
            image,
            "{at}: the superblock was not put back"
        );
        // Retried, it fails the same way, never with "no volume".
        assert_eq!(host.destroy(), Err(Errno(libc::EPERM).into()), "{at}");
        let vol = host.load().unwrap();
        verify(&host, &vol, &shadow, &at);
        host.unload(&vol).unwrap();
        // A forced destroy that cannot remove the pm file changes nothing either.
        assert_eq!(host.destroy_force(), Err(Errno(libc::EPERM).into()), "{at}");
        assert_eq!(host.backing.image(), image, "{at}");
        store.set_fail_remove(None);
        host.destroy().unwrap();
        assert!(!has_signature(&host.backing.image()), "{at}");
        assert!(host.pm_files().is_empty(), "{at}");
        assert_eq!(errno_of(host.load()), Errno::EILSEQ, "{at}");
    }
}

#[test]
fn destroy_force_clears_a_volume_whose_pm_file_is_missing_or_damaged() {
    for host in Host::all() {
        let at = host.name();
        let path = host.pm_path_of(UUID_A);
        let damages: [(&str, Option<Vec<u8>>, Errno); 3] = [
            ("missing", None, Errno::ENOENT),
            ("wrong size", Some(b"not a pm file".to_vec()), Errno::EILSEQ),
            ("zeros", Some(vec![0; GEO_PM_SIZE]), Errno::EILSEQ),
        ];
        for (what, damage, refused) in damages {
            let vol = host.init(UUID_A).unwrap();
            host.unload(&vol).unwrap();
            host.put_pm(&path, damage);
            let header = host.header();
            assert_eq!(host.destroy(), Err(refused.into()), "{at}: {what}");
            assert_eq!(
                host.header(),
                header,
                "{at}: {what}: a refused destroy wrote"
            );
            host.destroy_force().unwrap();
            assert!(!has_signature(&host.backing.image()), "{at}: {what}");
            assert!(host.pm_files().is_empty(), "{at}: {what}: pm file left");
            assert_eq!(errno_of(host.load()), Errno::EILSEQ, "{at}: {what}");
            // Nothing is left to destroy.
            assert_eq!(host.destroy_force(), Err(Errno::EILSEQ.into()), "{at}");
            assert_eq!(host.destroy(), Err(Errno::EILSEQ.into()), "{at}");
        }
        // A healthy volume: the forced destroy removes it all the same.
        let vol = host.init(UUID_A).unwrap();
        host.unload(&vol).unwrap();
        host.destroy_force().unwrap();
        assert!(!has_signature(&host.backing.image()), "{at}");
        assert!(host.pm_files().is_empty(), "{at}");
    }
}

/// The pm file size of `GEO`, by the format's formula.
const GEO_PM_SIZE: usize = {
    let logical = (GEO.chunks * 8).div_ceil(64) * 64;
    let stride = 8 + 8 * (GEO.chunk / GEO.io_unit) as u64;
    (4096 + logical + ((GEO.chunks + 128) * stride).div_ceil(64) * 64) as usize
};

#[test]
fn destroy_force_leaves_what_is_not_a_regular_file() {
    for mode in MODES {
        let host = Host::files(mode);
        let path = host.pm_path_of(UUID_A);
        let vol = host.init(UUID_A).unwrap();
        host.unload(&vol).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"keep").unwrap();
        assert_eq!(host.destroy(), Err(Errno(libc::EISDIR).into()));
        host.destroy_force().unwrap();
        assert!(!has_signature(&host.backing.image()));
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"keep");
        // A path region naming nothing readable: only the signature goes.
        let vol = host.init(UUID_B).unwrap();
        host.unload(&vol).unwrap();
        host.backing.poke(4096, &[b'x'; 4096]);
        assert_eq!(host.destroy(), Err(Errno::EILSEQ.into()));
        host.destroy_force().unwrap();
        assert!(!has_signature(&host.backing.image()));
        assert!(
            host.pm_path_of(UUID_B).exists(),
            "only the named file may go"
        );
    }
}

// ---------------------------------------------------------------- pm paths

#[test]
fn pm_paths_are_bytes() {
    for mode in MODES {
        let host = Host::files(mode);
        let dir = host
            .dir()
            .join(OsString::from_vec(b"pm-\xff\xfe-\x80".to_vec()));
        std::fs::create_dir(&dir).unwrap();
        let vol = host.init_plan(host.plan_in(&dir, UUID_A)).unwrap();
        let mut want = dir.as_os_str().as_bytes().to_vec();
        want.extend_from_slice(b"/a1a1a1a1-a1a1-a1a1-a1a1-a1a1a1a1a1a1");
        assert_eq!(vol.pm_path().as_os_str().as_bytes(), &want[..]);
        assert!(vol.pm_path().is_file());
        // The path region holds the same bytes, NUL-terminated.
        let header = host.header();
        assert_eq!(&header[4096..4096 + want.len()], &want[..]);
        assert_eq!(header[4096 + want.len()], 0);
        host.unload(&vol).unwrap();
        let vol = host.load().unwrap();
        assert_eq!(vol.pm_path().as_os_str().as_bytes(), &want[..]);
        host.unload(&vol).unwrap();
        host.destroy().unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}

#[test]
fn a_relative_pm_dir_is_made_absolute() {
    let cwd = std::env::current_dir().unwrap();
    let host = Host::mem(Mode::Immediate);
    let plan = host.plan_in("rel/pm/", UUID_A);
    assert!(plan.pm_path().is_absolute());
    assert_eq!(
        plan.pm_path(),
        cwd.join("rel/pm/a1a1a1a1-a1a1-a1a1-a1a1-a1a1a1a1a1a1")
    );
    let vol = host.init_plan(plan).unwrap();
    host.unload(&vol).unwrap();
    assert!(host.load().unwrap().pm_path().is_absolute());

    // With real files: a relative path to a temporary directory.
    let host = Host::files(Mode::Deferred);
    let up = "../".repeat(cwd.components().count());
    let rel = PathBuf::from(up).join(host.dir().strip_prefix("/").unwrap());
    assert!(rel.is_relative());
    let vol = host.init_plan(host.plan_in(&rel, UUID_A)).unwrap();
    assert!(vol.pm_path().is_absolute(), "{:?}", vol.pm_path());
    assert!(vol.pm_path().starts_with(&cwd));
    host.unload(&vol).unwrap();
    let vol = host.load().unwrap();
    host.unload(&vol).unwrap();
}

// ---------------------------------------------------------------- room

#[test]
fn init_refuses_geometries_that_cannot_hold_their_size() {
    // io unit = chunk: at 64 bytes or less the metadata's io units eat into the room
    // the volume reports (at 64 a full volume could overwrite nothing, at 32 only 384
    // of 512 chunks could be written). At 65 one io unit is left: every chunk can be
    // written and overwritten.
    let cases = [(16, false), (32, false), (64, false), (65, true)];
    for (mode, (io, ok)) in MODES.into_iter().flat_map(|m| cases.map(|c| (m, c))) {
        let geo = Geo::new(1, io, io, 1, 512);
        let store = MemStore::new();
        let backing = MemBacking::new(1, geo.blockcnt(), mode);
        let planned = InitPlan::new(geo.params(), 1, geo.blockcnt(), "/pm");
        if !ok {
            let err = planned.unwrap_err();
            assert_eq!(err, Errno::EINVAL, "io unit {io}");
            assert!(err.detail().contains("room"), "{err}");
            continue;
        }
        let backend = Backend {
            backing: Box::new(backing.clone()),
            codec: Box::new(ZstdCodec),
            store: Box::new(store.clone()),
        };
        let s = slot();
        Volume::init(planned.unwrap(), backend, filler(&s));
        let vol = wait_on(&backing, &s).unwrap();
        // Every chunk takes incompressible data, and every chunk can be overwritten.
        for round in 0..2 {
            for chunk in 0..512u64 {
                let bytes = Rng::new(chunk + 1000 * round).bytes(io as usize);
                let s = slot();
                let f = filler(&s);
                vol.writev(
                    chunk * u64::from(io),
                    u64::from(io),
                    vec![bytes],
                    move |r, _| f(r),
                );
                wait_on(&backing, &s).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            }
        }
    }
}
