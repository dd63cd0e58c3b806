//! A blocking wrapper for simple programs and tests: each call returns the result
//! instead of passing it to a callback.
//!
//! It drives only backing devices and codecs that complete inside the call, such as
//! [`FileDevice`](crate::FileDevice) and the built-in codecs ([`ZstdCodec`](struct@crate::ZstdCodec),
//! [`Lz4Codec`](crate::Lz4Codec)): it has no poll loop to run. An operation that has
//! not completed when the call returns fails with `EINPROGRESS` (the operation itself
//! goes on, and its result is dropped); use [`crate::Volume`] for devices that complete
//! later.
//!
//! ```
//! use reduce::blocking::Volume;
//! use reduce::{FileDevice, Params, ZstdCodec};
//!
//! let dir = tempfile::tempdir()?;
//! // 16 KiB chunks: 128 of them are the volume's reserve, the rest its size.
//! let device = FileDevice::create(dir.path().join("backing"), 512, (128 + 64) * 32)?;
//! let params = Params {
//!     backing_io_unit_size: 4096,
//!     logical_block_size: 512,
//!     chunk_size: 16384,
//!     ..Params::default()
//! };
//! let vol = Volume::init(params, device.clone(), ZstdCodec, dir.path())?;
//! assert_eq!(vol.params().vol_size, 64 * 16384);
//!
//! let data: Vec<u8> = b"hello, reduce! ".iter().copied().cycle().take(16384).collect();
//! vol.write(32, &data)?; // logical block 32: chunk 1
//! let mut back = vec![0u8; 16384];
//! vol.read(32, &mut back)?;
//! assert_eq!(back, data);
//! assert!(vol.check()?.is_clean());
//!
//! // Reads and writes may cross chunks; an unmap frees what a chunk held.
//! vol.write(16, &vec![7u8; 16384])?; // blocks 16..48: chunks 0 and 1
//! vol.unmap(32, 32)?; // chunk 1, whole: it reads as zeros and takes no space
//! let stats = vol.stats();
//! assert_eq!((stats.chunks_in_use, stats.writes, stats.unmaps), (1, 2, 1));
//! vol.unmap(16, 16)?; // the second half of chunk 0: it is left all zeros
//! assert_eq!(vol.stats().chunks_in_use, 0);
//! vol.read(0, &mut back)?;
//! assert_eq!(back, vec![0u8; 16384]);
//! vol.write(32, &data)?;
//! vol.unload()?;
//!
//! // Everything is on the device and in the pm file: load it again.
//! let vol = Volume::load(device.clone(), ZstdCodec)?;
//! vol.read(32, &mut back)?;
//! assert_eq!(back, data);
//! vol.unload()?;
//! Volume::destroy(device, ZstdCodec)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::backing::BackingDevice;
use crate::check::Report;
use crate::codec::Codec;
use crate::error::{Errno, Error, Result};
use crate::format::Params;
use crate::pm::FileStore;
use crate::vol::{self, Backend, Info, InitPlan, Stats};

/// Runs `start`, which must call the callback it is given before it returns.
fn now<T: 'static>(what: &str, start: impl FnOnce(Box<dyn FnOnce(T)>)) -> Result<T> {
    let slot: Rc<RefCell<Option<T>>> = Rc::default();
    let fill = slot.clone();
    start(Box::new(move |value| *fill.borrow_mut() = Some(value)));
    let value = slot.borrow_mut().take();
    value.ok_or_else(|| {
        Error::new(
            Errno(libc::EINPROGRESS),
            format!(
                "{what}: the device or codec did not complete inside the call (blocking::Volume drives only those that do)"
            ),
        )
    })
}

fn backend(device: impl BackingDevice + 'static, codec: impl Codec + 'static) -> Backend {
    Backend {
        backing: Box::new(device),
        codec: Box::new(codec),
        store: Box::new(FileStore),
    }
}

/// A loaded volume whose calls block until they are done. See the [module](self)
/// documentation for which devices it drives.
pub struct Volume {
    inner: vol::Volume,
}

impl Volume {
    /// Creates a volume on `device`, compressing with `codec`, its pm file in `pm_dir`
    /// (see [`InitPlan::new`] for `params`). The superblock records the codec's
    /// [`Compression`](crate::Compression).
    pub fn init(
        params: Params,
        device: impl BackingDevice + 'static,
        codec: impl Codec + 'static,
        pm_dir: impl AsRef<Path>,
    ) -> Result<Volume> {
        let plan = InitPlan::new(
            params,
            device.blocklen(),
            device.blockcnt(),
            pm_dir.as_ref(),
        )?;
        Volume::init_plan(plan, backend(device, codec))
    }

    /// Creates a volume from a checked plan on any backend (a test's in-memory pm
    /// store, say).
    pub fn init_plan(plan: InitPlan, backend: Backend) -> Result<Volume> {
        let inner = now("init", |cb| vol::Volume::init(plan, backend, cb))??;
        Ok(Volume { inner })
    }

    /// Loads the volume on `device` (its pm file is where the device says), to
    /// decompress with `codec`.
    pub fn load(
        device: impl BackingDevice + 'static,
        codec: impl Codec + 'static,
    ) -> Result<Volume> {
        Volume::load_backend(backend(device, codec))
    }

    /// Loads the volume on any backend.
    pub fn load_backend(backend: Backend) -> Result<Volume> {
        let inner = now("load", |cb| vol::Volume::load(backend, cb))??;
        Ok(Volume { inner })
    }

    /// Destroys the volume on `device`: clears its signature and removes its pm file.
    pub fn destroy(
        device: impl BackingDevice + 'static,
        codec: impl Codec + 'static,
    ) -> Result<()> {
        Volume::destroy_backend(backend(device, codec))
    }

    /// Destroys the volume on any backend.
    pub fn destroy_backend(backend: Backend) -> Result<()> {
        now("destroy", |cb| vol::Volume::destroy(backend, cb))?
    }

    /// Reads `buf.len()` bytes, a whole number of logical blocks, starting at logical
    /// block `offset` (the range may cross chunks). Blocks never written, or unmapped,
    /// read as zeros. Errors as for
    /// [`crate::Volume::readv`].
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let blocks = self.blocks(buf.len())?;
        let segs = vec![vec![0u8; buf.len()]];
        let (result, segs) = now("read", |cb| {
            self.inner
                .readv(offset, blocks, segs, move |result, segs| cb((result, segs)))
        })?;
        result?;
        buf.copy_from_slice(&segs[0]);
        Ok(())
    }

    /// Writes `buf`, a whole number of logical blocks, starting at logical block
    /// `offset` (the range may cross chunks; a chunk left all zeros takes no space).
    /// When it returns `Ok`, the write is durable: a crash at any time
    /// leaves each chunk either old or new, never mixed. Errors as for
    /// [`crate::Volume::writev`].
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let blocks = self.blocks(buf.len())?;
        let (result, _) = now("write", |cb| {
            self.inner
                .writev(offset, blocks, vec![buf.to_vec()], move |result, segs| {
                    cb((result, segs))
                })
        })?;
        result
    }

    /// Discards `length` logical blocks starting at logical block `offset`: they read as
    /// zeros afterwards, and chunks left all zeros take no space (see
    /// [`crate::Volume::unmap`]). The range may cross chunks.
    pub fn unmap(&self, offset: u64, length: u64) -> Result<()> {
        now("unmap", |cb| self.inner.unmap(offset, length, cb))?
    }

    /// Logical blocks in `len` bytes: `EINVAL` unless it is a whole number of them.
    fn blocks(&self, len: usize) -> Result<u64> {
        let lbs = self.inner.params().logical_block_size as usize;
        if len % lbs != 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!("{len} bytes are not a whole number of {lbs}-byte logical blocks"),
            ));
        }
        Ok((len / lbs) as u64)
    }

    /// Checks the volume's metadata and reads every chunk in use back (see
    /// [`crate::Volume::check`]).
    pub fn check(&self) -> Result<Report> {
        now("check", |cb| self.inner.check(cb))?
    }

    /// Closes the volume; it stays on its device and pm file for a later
    /// [`load`](Volume::load).
    pub fn unload(self) -> Result<()> {
        now("unload", |cb| self.inner.unload(cb))?
    }

    /// The volume's parameters, as its superblock holds them.
    pub fn params(&self) -> Params {
        self.inner.params()
    }

    /// The volume's counters.
    pub fn info(&self) -> Info {
        self.inner.info()
    }

    /// The volume's statistics: space in use and requests completed since load.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The path of the volume's pm file.
    pub fn pm_path(&self) -> PathBuf {
        self.inner.pm_path()
    }

    /// The callback-driven volume underneath, for what this wrapper does not offer.
    pub fn inner(&self) -> &vol::Volume {
        &self.inner
    }
}
