//! Opening the volume on a backing file, and saying why it cannot be opened.
//!
//! Why a load failed is told by how far it got: the library opens the pm file only
//! after the backing file's superblock and path region check out, so a store that
//! notes that call ([`Probe`]) tells "this file holds no volume" from "the volume is
//! there but its pm file is missing, damaged or locked", without reading the format
//! here or parsing messages.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use reduce::{Backend, Errno, Error, FileDevice, FileStore, PmLock, PmRegion, PmStore, blocking};

use crate::codec::Recorded;
use crate::fail::{Failure, errno_text, reason};

/// The backing file's block length for volumes the command makes: 512, as the nbdkit
/// plugin opens them, so it can serve every one (their io units are multiples of it).
pub const CREATE_BLOCKLEN: u32 = 512;

/// The block length an existing volume is opened with: 1 byte divides any io unit, so
/// a volume made by any program opens, whatever its geometry.
const OPEN_BLOCKLEN: u32 = 1;

/// How opening (or, for a forced destroy, locking) the pm file named by the backing
/// file went.
struct PmOpen {
    path: PathBuf,
    result: Result<(), Error>,
}

/// The file store, noting the pm file a load or destroy opened (or a forced destroy
/// locked) and how that went.
#[derive(Clone, Default)]
struct Probe {
    seen: Rc<RefCell<Option<PmOpen>>>,
}

impl Probe {
    fn note(&self, path: &Path, result: Result<(), &Error>) {
        *self.seen.borrow_mut() = Some(PmOpen {
            path: path.to_path_buf(),
            result: result.map_err(Error::clone),
        });
    }
}

impl PmStore for Probe {
    fn create(&self, path: &Path, len: u64) -> reduce::Result<Box<dyn PmRegion>> {
        FileStore.create(path, len)
    }

    fn open(
        &self,
        path: &Path,
        check_len: &dyn Fn(u64) -> reduce::Result<()>,
    ) -> reduce::Result<Box<dyn PmRegion>> {
        let opened = FileStore.open(path, check_len);
        self.note(path, opened.as_ref().map(|_| ()));
        opened
    }

    fn lock(&self, path: &Path) -> reduce::Result<Option<Box<dyn PmLock>>> {
        let locked = FileStore.lock(path);
        self.note(path, locked.as_ref().map(|_| ()));
        locked
    }

    fn remove(&self, path: &Path) -> reduce::Result<()> {
        FileStore.remove(path)
    }
}

/// Why a volume could not be opened.
pub enum Refusal {
    /// The file holds no volume: no signature, or a header that describes none.
    NoVolume(Error),
    /// The volume's pm file is missing, damaged, of the wrong size or another volume's.
    PmFile { path: PathBuf, err: Error },
    /// The pm file is locked: a program has the volume loaded.
    InUse { path: PathBuf },
    /// The backing file could not be opened.
    NoFile(Error),
    /// Anything else: the backing file or the pm file could not be read, say.
    Other(Error),
}

impl Refusal {
    /// Sorts out a failed load or destroy from what `probe` saw.
    fn of(err: Error, probe: &Probe) -> Refusal {
        let seen = probe.seen.borrow_mut().take();
        match seen {
            None if err.errno() == Errno::EILSEQ => Refusal::NoVolume(err),
            None => Refusal::Other(err),
            Some(PmOpen { path, result }) => match result {
                Err(open) if open.errno() == Errno::EBUSY => Refusal::InUse { path },
                Err(open) if [Errno::ENOENT, Errno::EILSEQ].contains(&open.errno()) => {
                    Refusal::PmFile { path, err: open }
                }
                Err(_) => Refusal::Other(err),
                // Opened, then refused: its superblock or maps.
                Ok(()) if err.errno() == Errno::EILSEQ => Refusal::PmFile { path, err },
                Ok(()) => Refusal::Other(err),
            },
        }
    }

    /// What to tell the user about `file`.
    pub fn failure(&self, file: &Path) -> Failure {
        let file = file.display();
        match self {
            Refusal::NoFile(err) => {
                Failure::new(format!("{file}: {}", errno_text(err.errno())))
            }
            Refusal::NoVolume(err) => {
                Failure::new(format!("{file} holds no reduce volume ({})", reason(err)))
            }
            Refusal::PmFile { path, err } if err.errno() == Errno::ENOENT => {
                Failure::new(format!(
                    "{file}: the volume's pm file {} is missing",
                    path.display()
                ))
                .hint(force_hint(&file))
            }
            Refusal::PmFile { path, err } => Failure::new(format!(
                "{file}: the volume's pm file {} is damaged or belongs to another volume ({})",
                path.display(),
                reason(err)
            ))
            .hint(force_hint(&file)),
            Refusal::InUse { path } => Failure::new(format!(
                "{file}: the volume is in use: its pm file {} is locked by a program that has it loaded",
                path.display()
            ))
            .hint("stop that program (nbdkit serving the volume, say), then try again"),
            Refusal::Other(err) => Failure::new(format!("{file}: {}", reason(err))),
        }
    }
}

fn force_hint(file: &dyn std::fmt::Display) -> String {
    format!(
        "if the pm file is lost for good, `reduce destroy --force {file}` removes what is left of the volume"
    )
}

/// A backend on `file`, with the probe that sees the pm file opened.
fn backend(file: &Path, codec: Recorded) -> Result<(Backend, Probe), Refusal> {
    let probe = Probe::default();
    let device = FileDevice::open(file, OPEN_BLOCKLEN).map_err(Refusal::NoFile)?;
    let backend = Backend {
        backing: Box::new(device),
        codec: Box::new(codec),
        store: Box::new(probe.clone()),
    };
    Ok((backend, probe))
}

/// A loaded volume with the codec its superblock records, if the library has it.
pub struct Loaded {
    pub vol: blocking::Volume,
    codec: Recorded,
}

impl Loaded {
    /// Loads the volume on `file`.
    pub fn open(file: &Path) -> Result<Loaded, Refusal> {
        let codec = Recorded::default();
        let (backend, probe) = backend(file, codec.clone())?;
        let vol = blocking::Volume::load_backend(backend).map_err(|e| Refusal::of(e, &probe))?;
        codec.choose(vol.params().compression);
        Ok(Loaded { vol, codec })
    }

    /// Fails, naming the volume's compression, when the library has no codec for it
    /// (for the commands that read or write chunks).
    pub fn need_codec(&self, file: &Path) -> Result<(), Failure> {
        if self.codec.is_chosen() {
            return Ok(());
        }
        let c = self.vol.params().compression;
        Err(Failure::new(format!(
            "{}: its chunks are stored with compression {} at level {}, which reduce has no built-in codec for",
            file.display(),
            c.algo,
            c.level
        ))
        .hint("a volume made by the 2019 libreduce records no compression: it is read by the program that made it"))
    }

    /// Unloads the volume.
    pub fn unload(self, file: &Path) -> Result<(), Failure> {
        self.vol
            .unload()
            .map_err(|e| Failure::new(format!("{}: unloading: {}", file.display(), reason(&e))))
    }
}

/// Loads the volume on `file`, or says why it cannot.
pub fn load(file: &Path) -> Result<Loaded, Failure> {
    Loaded::open(file).map_err(|r| r.failure(file))
}

/// Whether `file` holds a volume, loadable or not: its header names a pm file.
/// Returns that pm file.
pub fn holds_volume(file: &Path) -> Result<Option<PathBuf>, Failure> {
    match Loaded::open(file) {
        Ok(loaded) => {
            let path = loaded.vol.pm_path();
            loaded.unload(file)?;
            Ok(Some(path))
        }
        Err(Refusal::PmFile { path, .. } | Refusal::InUse { path }) => Ok(Some(path)),
        Err(Refusal::NoVolume(_)) => Ok(None),
        Err(other) => Err(other.failure(file)),
    }
}

/// Destroys the volume on `file`: clears its signature and removes its pm file. With
/// `force`, whatever the state of its pm file.
pub fn destroy(file: &Path, force: bool) -> Result<(), Refusal> {
    let (backend, probe) = backend(file, Recorded::default())?;
    let result = if force {
        force_destroy(backend)
    } else {
        blocking::Volume::destroy_backend(backend)
    };
    result.map_err(|e| Refusal::of(e, &probe))
}

/// A forced destroy, which the blocking wrapper does not offer; the file device
/// completes it inside the call.
fn force_destroy(backend: Backend) -> reduce::Result<()> {
    let slot: Rc<RefCell<Option<reduce::Result<()>>>> = Rc::default();
    let fill = slot.clone();
    reduce::Volume::destroy_force(backend, move |result| *fill.borrow_mut() = Some(result));
    let result = slot.borrow_mut().take();
    result.unwrap_or_else(|| {
        Err(Error::new(
            Errno(libc::EINPROGRESS),
            "the forced destroy did not complete inside the call",
        ))
    })
}
