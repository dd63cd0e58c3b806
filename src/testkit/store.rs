//! pm files in memory. Each file keeps two images: `current` (what a reopen sees after
//! a clean unload, like a page cache) and `persisted` (only ranges passed to
//! `persist`). [`MemStore::power_loss`] throws away everything not persisted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::journal::{Entry, Journal};
use crate::error::{Errno, Result};
use crate::pm::{PmRegion, PmStore};

#[derive(Default)]
struct MemFile {
    current: Vec<u8>,
    persisted: Vec<u8>,
    /// Set while a region maps the file: its bytes live in the region until it drops.
    mapped: bool,
}

#[derive(Default)]
struct Files {
    files: HashMap<String, MemFile>,
    fail_persist: bool,
    journal: Option<Journal>,
}

impl Files {
    fn record(&self, entry: impl FnOnce() -> Entry) {
        if let Some(j) = &self.journal {
            j.push(entry());
        }
    }
}

/// An in-memory pm store. Clones share the same files.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Rc<RefCell<Files>>,
}

struct MemRegion {
    path: String,
    bytes: Vec<u8>,
    store: MemStore,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The persisted image of `path`, as a power loss now would leave it.
    pub fn persisted(&self, path: &str) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .files
            .get(path)
            .map(|f| f.persisted.clone())
    }

    /// The image a reopen would see now (for an unmapped file).
    pub fn current(&self, path: &str) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .files
            .get(path)
            .map(|f| f.current.clone())
    }

    /// Puts a file in place, as if persisted (for loading prepared images).
    pub fn insert(&self, path: &str, bytes: Vec<u8>) {
        let file = MemFile {
            current: bytes.clone(),
            persisted: bytes,
            mapped: false,
        };
        self.inner.borrow_mut().files.insert(path.to_string(), file);
    }

    pub fn paths(&self) -> Vec<String> {
        self.inner.borrow().files.keys().cloned().collect()
    }

    /// Every file falls back to what was persisted.
    pub fn power_loss(&self) {
        for f in self.inner.borrow_mut().files.values_mut() {
            f.current = f.persisted.clone();
        }
    }

    /// Records every create, write, persist and remove on `journal` from now on.
    pub fn set_journal(&self, journal: Option<Journal>) {
        self.inner.borrow_mut().journal = journal;
    }

    /// Makes every later `persist` fail with `EIO` (fault injection).
    pub fn set_fail_persist(&self, fail: bool) {
        self.inner.borrow_mut().fail_persist = fail;
    }
}

impl PmStore for MemStore {
    fn create(&self, path: &str, len: u64) -> Result<Box<dyn PmRegion>> {
        let len = usize::try_from(len).map_err(|_| Errno::ENOMEM)?;
        let mut inner = self.inner.borrow_mut();
        if inner.files.contains_key(path) {
            return Err(Errno::EEXIST.into());
        }
        let file = MemFile {
            current: Vec::new(),
            persisted: vec![0; len],
            mapped: true,
        };
        inner.files.insert(path.to_string(), file);
        inner.record(|| Entry::PmCreate {
            path: path.to_string(),
            len,
        });
        Ok(Box::new(MemRegion {
            path: path.to_string(),
            bytes: vec![0; len],
            store: self.clone(),
        }))
    }

    fn open(&self, path: &str, check_len: &dyn Fn(u64) -> Result<()>) -> Result<Box<dyn PmRegion>> {
        let mut inner = self.inner.borrow_mut();
        let file = inner.files.get_mut(path).ok_or(Errno::ENOENT)?;
        if file.mapped {
            return Err(Errno::EBUSY.into());
        }
        check_len(file.current.len() as u64)?;
        file.mapped = true;
        let bytes = std::mem::take(&mut file.current);
        Ok(Box::new(MemRegion {
            path: path.to_string(),
            bytes,
            store: self.clone(),
        }))
    }

    fn remove(&self, path: &str) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.files.remove(path).ok_or(Errno::ENOENT)?;
        inner.record(|| Entry::PmRemove {
            path: path.to_string(),
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

    fn persist(&mut self, offset: usize, len: usize) -> Result<()> {
        let mut inner = self.store.inner.borrow_mut();
        if inner.fail_persist {
            return Err(Errno::EIO.into());
        }
        if let Some(file) = inner.files.get_mut(&self.path) {
            file.persisted[offset..offset + len].copy_from_slice(&self.bytes[offset..offset + len]);
        }
        inner.record(|| Entry::PmPersist {
            path: self.path.clone(),
            offset,
            len,
        });
        Ok(())
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // A removed file stays removed; otherwise the bytes go back like a page cache.
        if let Some(file) = self.store.inner.borrow_mut().files.get_mut(&self.path) {
            file.current = std::mem::take(&mut self.bytes);
            file.mapped = false;
        }
    }
}
