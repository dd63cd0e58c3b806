//! Init, load, unload and destroy: the steps before and after a volume serves I/O.
//!
//! ```text
//! init:    read the header there ─► lock its pm file (EBUSY if held) ─► create + fill
//!          + persist pm ─► write path region ─► write superblock ─► Ready
//! load:    read superblock + path ─► lock + check pm file ─► rebuild maps ─► Ready
//! destroy: load ─► write zeroed superblock ─► remove pm file
//!                  (removal fails ─► write the superblock back ─► the removal's error)
//! force:   read header ─► lock pm file if any (EBUSY if held) ─► remove it ─► write
//!          zeroed superblock
//! unload:  Ready, nothing outstanding ─► Closed (the pm file's lock goes with it)
//! ```
//!
//! Init writes the superblock last, so an image is loadable only once complete; any
//! failure removes the pm file it made. Every refusal says which check failed, in the
//! error and in the log.
//!
//! One owner per volume: a loaded volume's pm file is locked (see `crate::pm`), so a
//! second load, a destroy, or an init over it (init reads the superblock already on the
//! device and locks the pm file it names for the length of the init) fails with
//! `EBUSY` before changing anything. A device whose superblock names no pm file, or an
//! unlocked one, is overwritten by init, as in the original.
//!
//! Destroy is all or nothing. It clears the signature first and then removes the pm
//! file; if the removal fails it writes the original superblock back and reports the
//! removal's error, leaving the volume intact and loadable. A crash between the steps
//! leaves a device without a signature and, at worst, an orphaned pm file, never a
//! signature naming a pm file that is gone. `destroy_force` is for a volume whose pm
//! file is missing or damaged (so that load, and with it destroy, refuses it): it
//! removes the pm file first and then clears the signature, so a failed removal changes
//! nothing, and a crash between the two leaves a signature without a pm file, which a
//! second forced destroy clears.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::request::Engine;
use super::{Action, Backend, DoneCallback, Event, Info, OpenCallback, Shared, Stats, Volume};
use crate::backing::{BackingDevice, BackingIo, Extent};
use crate::check::{self, Report};
use crate::codec::{Codec, Compression};
use crate::completion::Token;
use crate::error::{Errno, Error, Result};
use crate::format::{
    self, EXTRA_CHUNKS, Geometry, METADATA_SIZE, PATH_OFFSET, Params, REDUCE_PATH_MAX,
    SUPERBLOCK_SIZE,
};
use crate::log::{self, Level};
use crate::maps::Metadata;
use crate::pm::{PmLock, PmStore};

/// A validated init request: final params (uuid chosen, `vol_size` computed) and the
/// pm file path. Made before anything is written, so bad params leave no trace.
#[derive(Clone, Debug)]
pub struct InitPlan {
    /// The params the volume will have: uuid chosen, `vol_size` computed.
    pub params: Params,
    geo: Geometry,
    path: PathBuf,
}

impl InitPlan {
    /// Checks `params` (whose `vol_size` must be 0) against a backing device of
    /// `blockcnt` blocks of `blocklen`; a zero uuid becomes a random one. `EINVAL`,
    /// saying which check failed. `pm_dir` may be any path the OS accepts; a relative
    /// one is made absolute here, so a later load does not depend on the working
    /// directory.
    pub fn new(
        params: Params,
        blocklen: u32,
        blockcnt: u64,
        pm_dir: impl AsRef<Path>,
    ) -> Result<InitPlan> {
        Self::check(params, blocklen, blockcnt, pm_dir.as_ref())
            .map_err(|e| e.context("init").logged())
    }

    fn check(mut params: Params, blocklen: u32, blockcnt: u64, pm_dir: &Path) -> Result<InitPlan> {
        let invalid = |why: String| Err(Error::new(Errno::EINVAL, why));
        if params.vol_size != 0 {
            return invalid(format!(
                "vol_size is {}; it must be 0, init computes it",
                params.vol_size
            ));
        }
        if params.chunk_size == 0 {
            return invalid("chunk_size is 0".into());
        }
        let Some(backing_bytes) = blockcnt.checked_mul(u64::from(blocklen)) else {
            return invalid(format!(
                "backing device of {blockcnt} blocks of {blocklen} bytes is too large"
            ));
        };
        params.vol_size = format::vol_size_for(params.chunk_size, backing_bytes);
        if params.vol_size == 0 {
            return invalid(format!(
                "backing device too small: {backing_bytes} bytes hold {} chunks of {} bytes, and a volume needs more than {EXTRA_CHUNKS}",
                backing_bytes / u64::from(params.chunk_size),
                params.chunk_size
            ));
        }
        if params.uuid == [0; 16] {
            params.uuid = *uuid::Uuid::new_v4().as_bytes();
        }
        let geo = Geometry::new(params, blocklen)?;
        geo.check_room()?;
        let dir = if pm_dir.is_relative() && !pm_dir.as_os_str().is_empty() {
            std::path::absolute(pm_dir).map_err(|e| {
                Error::new(
                    Errno::from_io(&e),
                    format!("making pm_file_dir {} absolute", pm_dir.display()),
                )
            })?
        } else {
            pm_dir.to_path_buf()
        };
        let path = format::pm_path(&dir, &params.uuid)?;
        Ok(InitPlan { params, geo, path })
    }

    /// Where the pm file will be made: the directory, `/`, the uuid.
    pub fn pm_path(&self) -> &Path {
        &self.path
    }

    /// The superblock records the codec's compression; a codec that reports none
    /// leaves the params' own.
    pub(crate) fn record(&mut self, codec: Compression) {
        if !codec.is_unrecorded() {
            self.params.compression = codec;
            self.geo.params.compression = codec;
        }
    }
}

/// What the load is for.
enum AfterLoad {
    Open(OpenCallback),
    Destroy(DoneCallback),
}

/// A new volume between creating its pm file and writing its superblock.
struct Making {
    meta: Metadata,
    path: PathBuf,
    cb: OpenCallback,
    /// The lock on the pm file of the volume being replaced, if any: held until init
    /// ends so that volume cannot be loaded meanwhile.
    _replaced: Option<Box<dyn PmLock>>,
}

/// A destroy in progress: the volume stays loaded (its pm file locked) to the end.
struct Destroying {
    /// Held for its lock: the volume cannot be loaded while it is being destroyed.
    _meta: Metadata,
    path: PathBuf,
    /// The superblock as it was, to write back if the pm file cannot be removed.
    superblock: Vec<u8>,
    cb: DoneCallback,
}

enum Phase {
    InitStart(InitPlan, OpenCallback),
    InitReadingOld(InitPlan, OpenCallback),
    InitWritingPath(Making),
    InitWritingSuper(Making),
    LoadStart(AfterLoad),
    LoadReadingHeader(AfterLoad),
    /// A forced destroy needs only the header, not a loadable volume.
    ForceStart(DoneCallback),
    ForceReadingHeader(DoneCallback),
    DestroyClearingSuper(Destroying),
    /// The pm file could not be removed (`err`): putting the superblock back.
    DestroyRestoringSuper(Destroying, Error),
    ForceClearingSuper {
        cb: DoneCallback,
        /// The pm file's lock, held until the signature is gone.
        _lock: Option<Box<dyn PmLock>>,
    },
    Ready(Engine),
    Closed,
}

/// All mutable state of a volume; only the drain loop touches it.
pub(crate) struct Core {
    store: Box<dyn PmStore>,
    /// The volume's codec, shared with the drain loop: the engine runs a codec that
    /// works inside the call on the caller's buffers itself.
    codec: Rc<dyn Codec>,
    blocklen: u32,
    blockcnt: u64,
    phase: Phase,
    /// The number of the init, load or destroy operation out, if one is: only its
    /// completion is taken, not a second copy of an earlier step's.
    step_out: Option<u64>,
    /// Those operations issued so far.
    steps: u64,
    /// Params and pm path once known, kept after unload for late queries.
    params: Params,
    path: PathBuf,
}

impl Core {
    fn new(
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        blocklen: u32,
        blockcnt: u64,
        phase: Phase,
    ) -> Core {
        Core {
            store,
            codec,
            blocklen,
            blockcnt,
            phase,
            step_out: None,
            steps: 0,
            params: Params::default(),
            path: PathBuf::new(),
        }
    }

    pub(crate) fn init(
        plan: InitPlan,
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        cb: OpenCallback,
    ) -> Core {
        let (blocklen, params, path) = (plan.geo.blocklen, plan.params, plan.path.clone());
        let blockcnt = plan.geo.backing_bytes_needed() / u64::from(blocklen);
        let mut core = Core::new(store, codec, blocklen, blockcnt, Phase::InitStart(plan, cb));
        core.params = params;
        core.path = path;
        core
    }

    /// A core for an existing volume on `backing`, starting at `phase`.
    fn on_device(
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        backing: &dyn BackingDevice,
        phase: Phase,
    ) -> Core {
        Core::new(store, codec, backing.blocklen(), backing.blockcnt(), phase)
    }

    pub(crate) fn load(
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        backing: &dyn BackingDevice,
        cb: OpenCallback,
    ) -> Core {
        Core::on_device(store, codec, backing, Phase::LoadStart(AfterLoad::Open(cb)))
    }

    pub(crate) fn destroy(
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        backing: &dyn BackingDevice,
        cb: DoneCallback,
    ) -> Core {
        Core::on_device(
            store,
            codec,
            backing,
            Phase::LoadStart(AfterLoad::Destroy(cb)),
        )
    }

    pub(crate) fn destroy_force(
        store: Box<dyn PmStore>,
        codec: Rc<dyn Codec>,
        backing: &dyn BackingDevice,
        cb: DoneCallback,
    ) -> Core {
        Core::on_device(store, codec, backing, Phase::ForceStart(cb))
    }

    pub(crate) fn params(&self) -> Params {
        self.params
    }

    pub(crate) fn pm_path(&self) -> PathBuf {
        self.path.clone()
    }

    pub(crate) fn info(&self) -> Info {
        match &self.phase {
            Phase::Ready(engine) => Info {
                allocated_io_units: engine.meta.io_units_in_use(),
                chunks_in_use: engine.meta.chunk_maps_in_use(),
                chunk_maps_usable: engine.meta.chunk_maps_usable(),
                outstanding: engine.outstanding(),
            },
            _ => Info::default(),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        match &self.phase {
            Phase::Ready(engine) => {
                let space = engine.meta.space();
                let counts = engine.parents.counts;
                Stats {
                    chunks_in_use: space.chunks,
                    chunks_raw: space.raw_chunks,
                    io_units_in_use: space.io_units,
                    io_units_free: engine.meta.io_units_free(),
                    stored_bytes: space.stored_bytes,
                    reads: counts.reads,
                    writes: counts.writes,
                    unmaps: counts.unmaps,
                    errors: counts.errors,
                    cache_hits: engine.cache.hits,
                }
            }
            _ => Stats::default(),
        }
    }

    /// See [`Volume::set_cache_chunks`]: more chunks than the volume has would never be
    /// used.
    pub(crate) fn set_cache_chunks(&mut self, chunks: u64) -> Result<()> {
        let engine = self.engine().ok_or_else(not_loaded)?;
        let chunks = chunks.min(engine.meta.geo.chunks);
        engine
            .cache
            .resize(usize::try_from(chunks).unwrap_or(usize::MAX));
        Ok(())
    }

    /// The checker's audit of a loaded volume with nothing in flight.
    pub(crate) fn audit(&mut self) -> Result<(Report, Vec<u64>)> {
        match &mut self.phase {
            Phase::Ready(engine) if engine.outstanding() > 0 => Err(busy(engine.outstanding())),
            Phase::Ready(engine) => {
                // Chunk maps held after a failed commit are free once their entries
                // persist; those still held are reported as such.
                engine.meta.retry_held();
                let meta = &engine.meta;
                Ok(check::audit(
                    meta.view(),
                    meta.chunk_map_usage(),
                    meta.io_unit_usage(),
                    meta.held_maps(),
                ))
            }
            _ => Err(not_loaded()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let p = &self.params;
        let mut s = format!(
            "vol info:\n\tuuid = {}\n\tbacking_io_unit_size = 0x{:x}\n\tlogical_block_size = 0x{:x}\n\tchunk_size = 0x{:x}\n\tvol_size = 0x{:x}\n\tcomp_algo = {}\n\tcomp_level = {}\n",
            uuid::Uuid::from_bytes(p.uuid).hyphenated(),
            p.backing_io_unit_size,
            p.logical_block_size,
            p.chunk_size,
            p.vol_size,
            p.compression.algo,
            p.compression.level
        );
        if let Phase::Ready(engine) = &self.phase {
            let geo = &engine.meta.geo;
            let info = self.info();
            s += &format!(
                "\ttotal chunks (including extra) = 0x{:x}\n\ttotal chunks (excluding extra) = 0x{:x}\n\tchunk_struct_size = 0x{:x}\npmem info:\n\tpath = {}\n\tsize = 0x{:x}\n\tlogical_map_offset = 0x{:x}\n\tchunk_maps_offset = 0x{:x}\n\tchunk maps usable = {}\n\tchunk maps allocated = {}\n\tallocated io units = {} (metadata included)\n\toutstanding requests = {}\n",
                geo.total_chunk_maps,
                geo.chunks,
                geo.chunk_map_stride,
                self.path.display(),
                engine.meta.pm().len(),
                format::LOGICAL_MAP_OFFSET,
                geo.chunk_maps_offset,
                info.chunk_maps_usable,
                info.chunks_in_use,
                info.allocated_io_units,
                info.outstanding
            );
            let st = self.stats();
            let held = st.chunks_in_use * u64::from(geo.params.chunk_size);
            let ratio = match st.stored_bytes {
                0 => String::new(),
                stored => format!(" ({:.2}:1)", held as f64 / stored as f64),
            };
            s += &format!(
                "stats:\n\tchunks in use = {} of {}\n\tchunks stored raw = {}\n\tio units in use = {}\n\tio units free = {}\n\tstored bytes = {} for {} bytes of chunks{ratio}\n\trequests completed since load = {} reads, {} writes, {} unmaps\n\terrors = {}\n\tcache hits = {}\n",
                st.chunks_in_use,
                geo.chunks,
                st.chunks_raw,
                st.io_units_in_use,
                st.io_units_free,
                st.stored_bytes,
                held,
                st.reads,
                st.writes,
                st.unmaps,
                st.errors,
                st.cache_hits
            );
        }
        s
    }

    /// The request engine, once the volume is loaded.
    pub(crate) fn engine(&mut self) -> Option<&mut Engine> {
        match &mut self.phase {
            Phase::Ready(engine) => Some(engine),
            _ => None,
        }
    }

    /// The state machine's one entry: turns an event into actions, calling nothing
    /// outside.
    pub(crate) fn handle(&mut self, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Begin => self.begin(out),
            Event::Submit {
                op,
                offset,
                length,
                io,
                counted,
            } => match &mut self.phase {
                Phase::Ready(engine) => engine.submit(op, offset, length, io, counted, out),
                _ => out.push(Action::Finish(io, Err(not_loaded()))),
            },
            Event::Reject { op, io, err } => match &mut self.phase {
                Phase::Ready(engine) => engine.complete_at_once(op, io, Err(err), true, out),
                _ => out.push(Action::Finish(io, Err(err))),
            },
            Event::Unload(cb) => out.push(Action::Done(cb, self.unload())),
            Event::BackingDone {
                token: Token::Request(id),
                io,
                result,
            } => match &mut self.phase {
                Phase::Ready(engine) => engine.backing_done(id, io, result, out),
                _ => stray("backing", Token::Request(id)),
            },
            Event::CodecDone {
                token: Token::Request(id),
                io,
                result,
            } => match &mut self.phase {
                Phase::Ready(engine) => engine.codec_done(id, io, result, out),
                _ => stray("codec", Token::Request(id)),
            },
            Event::BackingDone {
                token: token @ Token::Lifecycle(step),
                io,
                result,
            } => match self.step_out {
                Some(out_now) if out_now == step => {
                    self.step_out = None;
                    self.lifecycle_done(io, result, out)
                }
                _ => stray("backing", token),
            },
            Event::CodecDone {
                token: token @ Token::Lifecycle(_),
                ..
            } => stray("codec", token),
        }
    }

    fn unload(&mut self) -> Result<()> {
        match &self.phase {
            Phase::Ready(engine) if engine.outstanding() > 0 => Err(busy(engine.outstanding())),
            Phase::Ready(_) => {
                self.phase = Phase::Closed;
                Ok(())
            }
            _ => Err(not_loaded()),
        }
    }

    /// A write or read of `len` bytes of metadata at byte `offset` of the device.
    fn metadata_io(&self, buf: Vec<u8>, offset: u64) -> BackingIo {
        let blocklen = u64::from(self.blocklen);
        let extent = Extent {
            lba: offset / blocklen,
            lba_count: (buf.len() as u64 / blocklen) as u32,
            buf_offset: 0,
        };
        BackingIo {
            buf: buf.into(),
            extents: [extent].into_iter().collect(),
        }
    }

    /// The token of the next init, load or destroy operation, now the one out.
    fn step(&mut self) -> Token {
        self.steps += 1;
        self.step_out = Some(self.steps);
        Token::Lifecycle(self.steps)
    }

    /// Reads the superblock and path region at the start of the device.
    fn read_header(&mut self, out: &mut Vec<Action>) {
        let header = vec![0u8; METADATA_SIZE as usize];
        let token = self.step();
        out.push(Action::Read(self.metadata_io(header, 0), token));
    }

    /// Writes `superblock` (the original, or zeros to clear the signature).
    fn write_superblock(&mut self, superblock: Vec<u8>, out: &mut Vec<Action>) {
        let token = self.step();
        out.push(Action::Write(self.metadata_io(superblock, 0), token));
    }

    fn begin(&mut self, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::InitStart(plan, cb) => {
                // The plan's geometry leaves room past the metadata, so the device
                // holds a whole header.
                self.read_header(out);
                self.phase = Phase::InitReadingOld(plan, cb);
            }
            Phase::LoadStart(then) => match self.header_readable() {
                Ok(()) => {
                    self.read_header(out);
                    self.phase = Phase::LoadReadingHeader(then);
                }
                Err(e) => self.fail_load(then, e, out),
            },
            Phase::ForceStart(cb) => match self.header_readable() {
                Ok(()) => {
                    self.read_header(out);
                    self.phase = Phase::ForceReadingHeader(cb);
                }
                Err(e) => out.push(Action::Done(cb, Err(force_failed(e)))),
            },
            other => self.phase = other,
        }
    }

    /// Whether the device can hold a volume header: metadata is addressed in whole
    /// blocks (`EINVAL` otherwise), and a device too small for it holds no volume
    /// (`EILSEQ`).
    fn header_readable(&self) -> Result<()> {
        let (blocklen, bytes) = (self.blocklen, self.backing_bytes());
        if blocklen == 0 || SUPERBLOCK_SIZE as u32 % blocklen != 0 {
            let why = format!(
                "backing block length {blocklen} does not divide the {SUPERBLOCK_SIZE}-byte superblock"
            );
            return Err(Error::new(Errno::EINVAL, why));
        }
        if bytes < METADATA_SIZE {
            let why = format!(
                "backing device of {bytes} bytes is smaller than the {METADATA_SIZE}-byte volume header"
            );
            return Err(Error::new(Errno::EILSEQ, why));
        }
        Ok(())
    }

    fn backing_bytes(&self) -> u64 {
        self.blockcnt.saturating_mul(u64::from(self.blocklen))
    }

    /// Init's first step, once the device's header is read: refuse (`EBUSY`) to
    /// replace a volume that is loaded, then create the pm file and write the path
    /// region.
    fn init_over(
        &mut self,
        plan: InitPlan,
        cb: OpenCallback,
        header: &[u8],
        out: &mut Vec<Action>,
    ) {
        let made = self.lock_replaced(header).and_then(|replaced| {
            let region = format::encode_path(&plan.path)?;
            let meta = self.create_pm(&plan)?;
            Ok((replaced, region, meta))
        });
        match made {
            Ok((replaced, region, meta)) => {
                let token = self.step();
                out.push(Action::Write(self.metadata_io(region, PATH_OFFSET), token));
                self.phase = Phase::InitWritingPath(Making {
                    meta,
                    path: plan.path,
                    cb,
                    _replaced: replaced,
                });
            }
            Err(e) => out.push(Action::Opened(cb, Err(e.context("init").logged()))),
        }
    }

    /// Locks the pm file that the superblock in `header` names, if there is one:
    /// `EBUSY` when its volume is loaded. A header without a volume, or naming a pm
    /// file that is missing or unusable, is no obstacle: init overwrites it.
    fn lock_replaced(&self, header: &[u8]) -> Result<Option<Box<dyn PmLock>>> {
        let Some(path) = named_pm_file(header) else {
            return Ok(None);
        };
        match self.store.lock(&path) {
            Err(e) if e.errno() == Errno::EBUSY => Err(e.context(format_args!(
                "the device holds a volume that is loaded (pm file {})",
                path.display()
            ))),
            Ok(lock) => Ok(lock),
            Err(_) => Ok(None),
        }
    }

    fn create_pm(&self, plan: &InitPlan) -> Result<Metadata> {
        let in_file = |e: Error| e.context(format_args!("pm file {}", plan.path.display()));
        let pm = self
            .store
            .create(&plan.path, plan.geo.pm_size)
            .map_err(in_file)?;
        let superblock = format::encode_superblock(&plan.params);
        Metadata::format(plan.geo, pm, &superblock).map_err(|e| {
            let _ = self.store.remove(&plan.path);
            in_file(e)
        })
    }

    /// Reports a refused load or destroy (which begins with reading the header).
    fn fail_load(&mut self, then: AfterLoad, err: Error, out: &mut Vec<Action>) {
        self.phase = Phase::Closed;
        out.push(match then {
            AfterLoad::Open(cb) => Action::Opened(cb, Err(err.context("load").logged())),
            AfterLoad::Destroy(cb) => Action::Done(cb, Err(err.context("destroy").logged())),
        });
    }

    fn lifecycle_done(&mut self, io: BackingIo, result: Result<()>, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::InitReadingOld(plan, cb) => match result {
                Ok(()) => self.init_over(plan, cb, &io.buf, out),
                Err(e) => {
                    let e = e.context("init: reading the header already on the device");
                    out.push(Action::Opened(cb, Err(e.logged())));
                }
            },
            Phase::InitWritingPath(making) => match result {
                Ok(()) => {
                    let superblock = format::encode_superblock(&making.meta.geo.params);
                    self.write_superblock(superblock, out);
                    self.phase = Phase::InitWritingSuper(making);
                }
                Err(e) => {
                    let e = e.context("writing the pm file path to the backing device");
                    self.abandon_init(making, e, out)
                }
            },
            Phase::InitWritingSuper(making) => match result {
                Ok(()) => {
                    self.phase = Phase::Ready(Engine::new(making.meta, self.codec.clone()));
                    out.push(Action::Opened(making.cb, Ok(())));
                }
                Err(e) => {
                    let e = e.context("writing the superblock");
                    self.abandon_init(making, e, out)
                }
            },
            Phase::ForceReadingHeader(cb) => match result
                .map_err(|e| e.context("reading the volume header"))
                .and_then(|()| self.remove_for_force(&io.buf))
            {
                Ok(lock) => {
                    self.write_superblock(vec![0u8; SUPERBLOCK_SIZE], out);
                    self.phase = Phase::ForceClearingSuper { cb, _lock: lock };
                }
                Err(e) => out.push(Action::Done(cb, Err(force_failed(e)))),
            },
            Phase::LoadReadingHeader(then) => match result
                .map_err(|e| e.context("reading the volume header"))
                .and_then(|()| self.open_pm(&io.buf))
            {
                Ok((meta, path)) => {
                    self.params = meta.geo.params;
                    self.path = path.clone();
                    match then {
                        AfterLoad::Open(cb) => {
                            self.phase = Phase::Ready(Engine::new(meta, self.codec.clone()));
                            out.push(Action::Opened(cb, Ok(())));
                        }
                        AfterLoad::Destroy(cb) => {
                            self.write_superblock(vec![0u8; SUPERBLOCK_SIZE], out);
                            self.phase = Phase::DestroyClearingSuper(Destroying {
                                _meta: meta,
                                path,
                                superblock: io.buf[..SUPERBLOCK_SIZE].to_vec(),
                                cb,
                            });
                        }
                    }
                }
                Err(e) => self.fail_load(then, e, out),
            },
            Phase::DestroyClearingSuper(d) => {
                let removed = result
                    .map_err(|e| e.context("clearing the superblock"))
                    .and_then(|()| {
                        self.store.remove(&d.path).map_err(|e| {
                            e.context(format_args!("removing pm file {}", d.path.display()))
                        })
                    });
                match removed {
                    Ok(()) => out.push(Action::Done(d.cb, Ok(()))),
                    // A failed clear may have written part of the block: the original
                    // goes back in either case.
                    Err(e) => {
                        self.write_superblock(d.superblock.clone(), out);
                        self.phase = Phase::DestroyRestoringSuper(d, e);
                    }
                }
            }
            Phase::DestroyRestoringSuper(d, err) => {
                let err = match result {
                    Ok(()) => err.context("destroy (the volume is intact)"),
                    Err(e) => err.context(format_args!(
                        "destroy: writing the superblock back failed too ({e}); the device has no volume signature and pm file {} is left",
                        d.path.display()
                    )),
                };
                out.push(Action::Done(d.cb, Err(err.logged())));
            }
            Phase::ForceClearingSuper { cb, .. } => {
                let cleared =
                    result.map_err(|e| force_failed(e.context("clearing the superblock")));
                out.push(Action::Done(cb, cleared));
            }
            other => {
                // Nothing waits: `step_out` was set only with a step's operation.
                log::emit(
                    Level::Error,
                    format_args!(
                        "internal error: a lifecycle completion with no step waiting for it"
                    ),
                );
                self.phase = other;
            }
        }
    }

    fn abandon_init(&mut self, making: Making, err: Error, out: &mut Vec<Action>) {
        let Making { meta, path, cb, .. } = making;
        drop(meta);
        let _ = self.store.remove(&path);
        out.push(Action::Opened(cb, Err(err.context("init").logged())));
    }

    /// A forced destroy's first step, given the device's header: `EILSEQ` without a
    /// signature; `EBUSY` when the pm file is locked; else removes the pm file when it
    /// is a regular file (a failed removal is the error, with nothing changed) and
    /// returns its lock, to hold while the signature is cleared. A path region that
    /// names nothing, or a pm file that is missing or not a regular file, leaves only
    /// the signature to clear.
    fn remove_for_force(&self, header: &[u8]) -> Result<Option<Box<dyn PmLock>>> {
        format::decode_superblock(&header[..SUPERBLOCK_SIZE])?;
        let Some(path) = named_pm_file(header) else {
            return Ok(None);
        };
        let in_file = |e: Error| e.context(format_args!("pm file {}", path.display()));
        let lock = match self.store.lock(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(None),
            Err(e) if e.errno() == Errno::EILSEQ => return Ok(None),
            Err(e) => return Err(in_file(e)),
        };
        self.store
            .remove(&path)
            .map_err(|e| in_file(e.context("removing")))?;
        Ok(Some(lock))
    }

    /// Checks a superblock + path region read from the device and opens the pm file it
    /// names. Nothing from the disk is trusted until checked: bad params, a device too
    /// small, a pm file of the wrong size or with another superblock, map entries out of
    /// range or shared are all `EILSEQ`; a pm file in use is `EBUSY`.
    fn open_pm(&self, header: &[u8]) -> Result<(Metadata, PathBuf)> {
        let superblock = &header[..SUPERBLOCK_SIZE];
        let params = format::decode_superblock(superblock)?;
        let geo = Geometry::new(params, self.blocklen).map_err(|e| {
            Error::new(
                Errno::EILSEQ,
                format!("invalid params in the superblock: {}", e.detail()),
            )
        })?;
        let (have, need) = (self.backing_bytes(), geo.backing_bytes_needed());
        if have < need {
            return Err(Error::new(
                Errno::EILSEQ,
                format!(
                    "backing device too small: {have} bytes, the superblock's params need {need}"
                ),
            ));
        }
        let path =
            format::decode_path(&header[SUPERBLOCK_SIZE..SUPERBLOCK_SIZE + REDUCE_PATH_MAX])?;
        let in_file = |e: Error| e.context(format_args!("pm file {}", path.display()));
        let check_len = |len: u64| match geo.chunk_maps_in_file(len) {
            Some(_) => Ok(()),
            None => Err(Error::new(
                Errno::EILSEQ,
                format!(
                    "{len} bytes, not the {} of this volume's params (or {} as the original sized it)",
                    geo.pm_size, geo.pm_size_original
                ),
            )),
        };
        let pm = self.store.open(&path, &check_len).map_err(in_file)?;
        if &pm.bytes()[..SUPERBLOCK_SIZE] != superblock {
            return Err(in_file(Error::new(
                Errno::EILSEQ,
                "its superblock differs from the backing device's",
            )));
        }
        let meta = Metadata::rebuild(geo, pm).map_err(in_file)?;
        Ok((meta, path))
    }
}

fn force_failed(err: Error) -> Error {
    err.context("forced destroy").logged()
}

/// The pm file a device's header names: `None` without a signature or a readable path.
fn named_pm_file(header: &[u8]) -> Option<PathBuf> {
    format::decode_superblock(&header[..SUPERBLOCK_SIZE]).ok()?;
    format::decode_path(&header[SUPERBLOCK_SIZE..SUPERBLOCK_SIZE + REDUCE_PATH_MAX]).ok()
}

impl Volume {
    /// Destroys the volume on `backend.backing` whatever the state of its pm file
    /// (missing, damaged, of the wrong size), for when [`Volume::destroy`] refuses it:
    /// removes the pm file if it exists and is a regular file, then clears the
    /// signature. `EBUSY` when the pm file is locked (its volume is loaded); `EILSEQ`
    /// when the device has no signature at all; a pm file that cannot be removed is
    /// the error, with nothing changed.
    pub fn destroy_force(backend: Backend, cb: impl FnOnce(Result<()>) + 'static) {
        let codec: Rc<dyn Codec> = backend.codec.into();
        let core = Core::destroy_force(
            backend.store,
            codec.clone(),
            backend.backing.as_ref(),
            Box::new(cb),
        );
        Shared::start(core, backend.backing, codec);
    }
}

/// `EBUSY` while `outstanding` requests are in flight.
fn busy(outstanding: usize) -> Error {
    Error::new(
        Errno::EBUSY,
        format!("{outstanding} request(s) outstanding"),
    )
}

fn not_loaded() -> Error {
    Error::new(Errno::ENODEV, "the volume is not loaded")
}

/// A completion for an operation not in flight: a caller's device or codec completed
/// something twice, or for another volume. Ignored, never trusted.
fn stray(kind: &str, token: Token) {
    log::emit(
        Level::Warn,
        format_args!("ignored a {kind} completion for {token:?}, which is not in flight"),
    );
}
