//! pm files in memory. Each file keeps two images: `current` (what a reopen sees after
//! a clean unload, like a page cache) and `persisted` (only ranges passed to
//! `persist`). [`MemStore::power_loss`] throws away everything not persisted.
//!
//! The lock is modelled as a real store has it: a mapped or locked file is held, and
//! opening or locking it again fails with `EBUSY` until its holder drops. A power loss
//! ends every holder, as a crash ends the process holding a file lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::journal::{Entry, Journal};
use crate::error::{Errno, Error, Result};
use crate::pm::{PmLock, PmRegion, PmStore};

#[derive(Default)]
struct MemFile {
    current: Vec<u8>,
    persisted: Vec<u8>,
    /// The region or lock holding the file, by its token. While a region maps the
    /// file, its bytes live in the region until it drops.
    holder: Option<u64>,
}

#[derive(Default)]
struct Files {
    files: HashMap<PathBuf, MemFile>,
    fail_persist: bool,
    /// Successful persists to come before the one that fails (once).
    fail_one_persist: Option<u64>,
    /// Successful persists to come before all later ones fail.
    fail_persists_from: Option<u64>,
    /// A persist that fails still lands (its bytes become durable), as a write that
    /// reached the disk before the flush failed.
    failed_persists_land: bool,
    /// Regions say they are on a RAM file system (`PmRegion::in_memory`); their
    /// persists are still recorded, so a test sees when the volume commits.
    in_memory: bool,
    fail_remove: Option<Errno>,
    journal: Option<Journal>,
    /// The last holder token handed out.
    tokens: u64,
}

impl Files {
    fn record(&self, entry: impl FnOnce() -> Entry) {
        if let Some(j) = &self.journal {
            j.push(entry());
        }
    }

    fn next_token(&mut self) -> u64 {
        self.tokens += 1;
        self.tokens
    }

    /// The file at `path` if `token` still holds it (not removed, no power loss since).
    fn held_by(&mut self, path: &Path, token: u64) -> Option<&mut MemFile> {
        self.files.get_mut(path).filter(|f| f.holder == Some(token))
    }
}

fn busy() -> Error {
    Error::new(Errno::EBUSY, "locked: its volume is loaded")
}

/// An in-memory pm store. Clones share the same files.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Rc<RefCell<Files>>,
}

struct MemRegion {
    path: PathBuf,
    token: u64,
    bytes: Vec<u8>,
    store: MemStore,
}

struct MemLock {
    path: PathBuf,
    token: u64,
    store: MemStore,
}

impl PmLock for MemLock {}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The persisted image of `path`, as a power loss now would leave it.
    pub fn persisted(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .files
            .get(path.as_ref())
            .map(|f| f.persisted.clone())
    }

    /// The image a reopen would see now (for an unmapped file).
    pub fn current(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .files
            .get(path.as_ref())
            .map(|f| f.current.clone())
    }

    /// Puts a file in place, as if persisted (for loading prepared images).
    pub fn insert(&self, path: impl AsRef<Path>, bytes: Vec<u8>) {
        let file = MemFile {
            current: bytes.clone(),
            persisted: bytes,
            holder: None,
        };
        self.inner
            .borrow_mut()
            .files
            .insert(path.as_ref().to_path_buf(), file);
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.inner.borrow().files.keys().cloned().collect()
    }

    /// Whether a region or a lock holds the file at `path`.
    pub fn is_locked(&self, path: impl AsRef<Path>) -> bool {
        self.inner
            .borrow()
            .files
            .get(path.as_ref())
            .is_some_and(|f| f.holder.is_some())
    }

    /// Every file falls back to what was persisted, and every holder is gone, as when
    /// the process dies: regions and locks still alive are inert from now on.
    pub fn power_loss(&self) {
        for f in self.inner.borrow_mut().files.values_mut() {
            f.current = f.persisted.clone();
            f.holder = None;
        }
    }

    /// Records every create, write, persist and remove on `journal` from now on.
    pub fn set_journal(&self, journal: Option<Journal>) {
        self.inner.borrow_mut().journal = journal;
    }

    /// Makes every later `persist` fail with `EIO` (fault injection).
    pub fn set_fail_persist(&self, fail: bool) {
        let mut inner = self.inner.borrow_mut();
        inner.fail_persist = fail;
        inner.fail_persists_from = None;
    }

    /// Makes one later `persist` fail with `EIO`: the one after `after` more succeed.
    pub fn set_fail_one_persist(&self, after: u64) {
        self.inner.borrow_mut().fail_one_persist = Some(after);
    }

    /// Makes every persist fail with `EIO` once `after` more have succeeded, until
    /// `set_fail_persist(false)`.
    pub fn set_fail_persists_from(&self, after: u64) {
        self.inner.borrow_mut().fail_persists_from = Some(after);
    }

    /// Whether a persist that fails (by the injections above) still lands its bytes,
    /// as pages written before the flush failed do on a real file.
    pub fn set_failed_persists_land(&self, land: bool) {
        self.inner.borrow_mut().failed_persists_land = land;
    }

    /// Whether regions report a RAM file system, where persisting costs nothing.
    pub fn set_in_memory(&self, in_memory: bool) {
        self.inner.borrow_mut().in_memory = in_memory;
    }

    /// Makes every later `remove` fail with `errno` (as in a directory made immutable
    /// or read-only), or succeed again with `None`.
    pub fn set_fail_remove(&self, errno: Option<Errno>) {
        self.inner.borrow_mut().fail_remove = errno;
    }
}

impl PmStore for MemStore {
    fn create(&self, path: &Path, len: u64) -> Result<Box<dyn PmRegion>> {
        let len = usize::try_from(len).map_err(|_| Errno::ENOMEM)?;
        let mut inner = self.inner.borrow_mut();
        if inner.files.contains_key(path) {
            return Err(Errno::EEXIST.into());
        }
        let token = inner.next_token();
        let file = MemFile {
            current: Vec::new(),
            persisted: vec![0; len],
            holder: Some(token),
        };
        inner.files.insert(path.to_path_buf(), file);
        inner.record(|| Entry::PmCreate {
            path: path.to_path_buf(),
            len,
        });
        Ok(Box::new(MemRegion {
            path: path.to_path_buf(),
            token,
            bytes: vec![0; len],
            store: self.clone(),
        }))
    }

    fn open(
        &self,
        path: &Path,
        check_len: &dyn Fn(u64) -> Result<()>,
    ) -> Result<Box<dyn PmRegion>> {
        let mut inner = self.inner.borrow_mut();
        let token = inner.next_token();
        let file = inner.files.get_mut(path).ok_or(Errno::ENOENT)?;
        if file.holder.is_some() {
            return Err(busy());
        }
        check_len(file.current.len() as u64)?;
        file.holder = Some(token);
        let bytes = std::mem::take(&mut file.current);
        Ok(Box::new(MemRegion {
            path: path.to_path_buf(),
            token,
            bytes,
            store: self.clone(),
        }))
    }

    fn lock(&self, path: &Path) -> Result<Option<Box<dyn PmLock>>> {
        let mut inner = self.inner.borrow_mut();
        let token = inner.next_token();
        let Some(file) = inner.files.get_mut(path) else {
            return Ok(None);
        };
        if file.holder.is_some() {
            return Err(busy());
        }
        file.holder = Some(token);
        Ok(Some(Box::new(MemLock {
            path: path.to_path_buf(),
            token,
            store: self.clone(),
        })))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        if !inner.files.contains_key(path) {
            return Err(Errno::ENOENT.into());
        }
        if let Some(errno) = inner.fail_remove {
            return Err(errno.into());
        }
        inner.files.remove(path);
        inner.record(|| Entry::PmRemove {
            path: path.to_path_buf(),
        });
        Ok(())
    }
}

impl PmRegion for MemRegion {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
        self.store.inner.borrow().record(|| Entry::PmWrite {
            path: self.path.clone(),
            offset,
            bytes: data.to_vec(),
        });
    }

    fn store_u64(&mut self, offset: usize, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }

    fn in_memory(&self) -> bool {
        self.store.inner.borrow().in_memory
    }

    fn persist(&mut self, offset: usize, len: usize) -> Result<()> {
        let mut inner = self.store.inner.borrow_mut();
        let fails = inner.fail_persist
            || countdown(&mut inner.fail_persists_from, false)
            || countdown(&mut inner.fail_one_persist, true);
        if fails && !inner.failed_persists_land {
            return Err(Errno::EIO.into());
        }
        if let Some(file) = inner.held_by(&self.path, self.token) {
            file.persisted[offset..offset + len].copy_from_slice(&self.bytes[offset..offset + len]);
        }
        if fails {
            // Landed, but reported failed: no journal entry (nothing the volume may
            // count on), and the crash tests do not use this.
            return Err(Errno::EIO.into());
        }
        inner.record(|| Entry::PmPersist {
            path: self.path.clone(),
            offset,
            len,
        });
        Ok(())
    }
}

/// A countdown of successes before failures: true (a failure) once it has reached 0,
/// which `once` then disarms.
fn countdown(count: &mut Option<u64>, once: bool) -> bool {
    match *count {
        Some(0) => {
            if once {
                *count = None;
            }
            true
        }
        Some(n) => {
            *count = Some(n - 1);
            false
        }
        None => false,
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // A removed file stays removed, and a region that outlived a power loss has no
        // say; otherwise the bytes go back like a page cache and the lock is released.
        if let Some(file) = self
            .store
            .inner
            .borrow_mut()
            .held_by(&self.path, self.token)
        {
            file.current = std::mem::take(&mut self.bytes);
            file.holder = None;
        }
    }
}

impl Drop for MemLock {
    fn drop(&mut self) {
        if let Some(file) = self
            .store
            .inner
            .borrow_mut()
            .held_by(&self.path, self.token)
        {
            file.holder = None;
        }
    }
}
