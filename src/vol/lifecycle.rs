//! Init, load, unload and destroy: the steps before and after a volume serves I/O.
//!
//! ```text
//! init:    create + fill + persist pm ─► write path region ─► write superblock ─► Ready
//! load:    read superblock + path ─► check params, size, pm file ─► rebuild maps ─► Ready
//! destroy: load ─► write zeroed superblock ─► remove pm file
//! unload:  Ready, nothing outstanding ─► Closed
//! ```
//!
//! Init writes the superblock last, so an image is loadable only once complete; any
//! failure removes the pm file it made. Every refusal says which check failed, in the
//! error and in the log.

use super::request::Engine;
use super::{Action, DoneCallback, Event, Info, OpenCallback};
use crate::backing::{BackingDevice, BackingIo, Extent};
use crate::check::{self, Report};
use crate::codec::Compression;
use crate::completion::Token;
use crate::error::{Errno, Error, Result};
use crate::format::{
    self, EXTRA_CHUNKS, Geometry, METADATA_SIZE, PATH_OFFSET, Params, REDUCE_PATH_MAX,
    SUPERBLOCK_SIZE,
};
use crate::log::{self, Level};
use crate::maps::Metadata;
use crate::pm::PmStore;

/// A validated init request: final params (uuid chosen, `vol_size` computed) and the
/// pm file path. Made before anything is written, so bad params leave no trace.
#[derive(Clone, Debug)]
pub struct InitPlan {
    /// The params the volume will have: uuid chosen, `vol_size` computed.
    pub params: Params,
    geo: Geometry,
    path: String,
}

impl InitPlan {
    /// Checks `params` (whose `vol_size` must be 0) against a backing device of
    /// `blockcnt` blocks of `blocklen`; a zero uuid becomes a random one. `EINVAL`,
    /// saying which check failed.
    pub fn new(params: Params, blocklen: u32, blockcnt: u64, pm_dir: &str) -> Result<InitPlan> {
        Self::check(params, blocklen, blockcnt, pm_dir).map_err(|e| e.context("init").logged())
    }

    fn check(mut params: Params, blocklen: u32, blockcnt: u64, pm_dir: &str) -> Result<InitPlan> {
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
        let path = format::pm_path(pm_dir, &params.uuid)?;
        Ok(InitPlan { params, geo, path })
    }

    /// Where the pm file will be made: the directory, `/`, the uuid.
    pub fn pm_path(&self) -> &str {
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

enum Phase {
    InitStart(InitPlan, OpenCallback),
    InitWritingPath {
        meta: Metadata,
        path: String,
        cb: OpenCallback,
    },
    InitWritingSuper {
        meta: Metadata,
        path: String,
        cb: OpenCallback,
    },
    LoadStart(AfterLoad),
    LoadReadingHeader(AfterLoad),
    DestroyClearingSuper {
        path: String,
        cb: DoneCallback,
    },
    Ready(Engine),
    Closed,
}

/// All mutable state of a volume; only the drain loop touches it.
pub(crate) struct Core {
    store: Box<dyn PmStore>,
    blocklen: u32,
    blockcnt: u64,
    phase: Phase,
    /// Params and pm path once known, kept after unload for late queries.
    params: Params,
    path: String,
}

impl Core {
    fn new(store: Box<dyn PmStore>, blocklen: u32, blockcnt: u64, phase: Phase) -> Core {
        Core {
            store,
            blocklen,
            blockcnt,
            phase,
            params: Params::default(),
            path: String::new(),
        }
    }

    pub(crate) fn init(plan: InitPlan, store: Box<dyn PmStore>, cb: OpenCallback) -> Core {
        let (blocklen, params, path) = (plan.geo.blocklen, plan.params, plan.path.clone());
        let blockcnt = plan.geo.backing_bytes_needed() / u64::from(blocklen);
        let mut core = Core::new(store, blocklen, blockcnt, Phase::InitStart(plan, cb));
        core.params = params;
        core.path = path;
        core
    }

    pub(crate) fn load(
        store: Box<dyn PmStore>,
        backing: &dyn BackingDevice,
        cb: OpenCallback,
    ) -> Core {
        Core::new(
            store,
            backing.blocklen(),
            backing.blockcnt(),
            Phase::LoadStart(AfterLoad::Open(cb)),
        )
    }

    pub(crate) fn destroy(
        store: Box<dyn PmStore>,
        backing: &dyn BackingDevice,
        cb: DoneCallback,
    ) -> Core {
        Core::new(
            store,
            backing.blocklen(),
            backing.blockcnt(),
            Phase::LoadStart(AfterLoad::Destroy(cb)),
        )
    }

    pub(crate) fn params(&self) -> Params {
        self.params
    }

    pub(crate) fn pm_path(&self) -> String {
        self.path.clone()
    }

    pub(crate) fn info(&self) -> Info {
        match &self.phase {
            Phase::Ready(engine) => Info {
                allocated_io_units: engine.meta.io_units_in_use()
                    - engine.meta.geo.reserved_io_units,
                chunks_in_use: engine.meta.chunk_maps_in_use(),
                chunk_maps_usable: engine.meta.chunk_maps_usable(),
                outstanding: engine.outstanding(),
            },
            _ => Info::default(),
        }
    }

    /// The checker's audit of a loaded volume with nothing in flight.
    pub(crate) fn audit(&self) -> Result<(Report, Vec<u64>)> {
        match &self.phase {
            Phase::Ready(engine) if engine.outstanding() > 0 => Err(busy(engine.outstanding())),
            Phase::Ready(engine) => {
                let meta = &engine.meta;
                Ok(check::audit(
                    meta.view(),
                    meta.chunk_map_usage(),
                    meta.io_unit_usage(),
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
                "\ttotal chunks (including extra) = 0x{:x}\n\ttotal chunks (excluding extra) = 0x{:x}\n\tchunk_struct_size = 0x{:x}\npmem info:\n\tpath = {}\n\tsize = 0x{:x}\n\tlogical_map_offset = 0x{:x}\n\tchunk_maps_offset = 0x{:x}\n\tchunk maps usable = {}\n\tchunks in use = {}\n\tallocated io units = {}\n\toutstanding requests = {}\n",
                geo.total_chunk_maps,
                geo.chunks,
                geo.chunk_map_stride,
                self.path,
                engine.meta.pm().len(),
                format::LOGICAL_MAP_OFFSET,
                geo.chunk_maps_offset,
                info.chunk_maps_usable,
                info.chunks_in_use,
                info.allocated_io_units,
                info.outstanding
            );
        }
        s
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
            } => match &mut self.phase {
                Phase::Ready(engine) => engine.submit(op, offset, length, io, out),
                _ => out.push(Action::Finish(io, Err(not_loaded()))),
            },
            Event::Reject { io, err } => out.push(Action::Finish(io, Err(err))),
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
                token: Token::Lifecycle,
                io,
                result,
            } => self.lifecycle_done(io, result, out),
            Event::CodecDone {
                token: Token::Lifecycle,
                ..
            } => stray("codec", Token::Lifecycle),
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
            buf,
            extents: [extent].into_iter().collect(),
        }
    }

    fn begin(&mut self, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::InitStart(plan, cb) => {
                let created = format::encode_path(&plan.path)
                    .and_then(|region| Ok((self.create_pm(&plan)?, region)));
                match created {
                    Ok((meta, region)) => {
                        out.push(Action::Write(
                            self.metadata_io(region, PATH_OFFSET),
                            Token::Lifecycle,
                        ));
                        let path = plan.path;
                        self.phase = Phase::InitWritingPath { meta, path, cb };
                    }
                    Err(e) => out.push(Action::Opened(cb, Err(e.context("init").logged()))),
                }
            }
            Phase::LoadStart(then) => {
                // Metadata is addressed in whole blocks; a device too small for it
                // cannot hold a volume.
                let (blocklen, bytes) = (self.blocklen, self.backing_bytes());
                if blocklen == 0 || SUPERBLOCK_SIZE as u32 % blocklen != 0 {
                    let why = format!(
                        "backing block length {blocklen} does not divide the {SUPERBLOCK_SIZE}-byte superblock"
                    );
                    return self.fail_load(then, Error::new(Errno::EINVAL, why), out);
                }
                if bytes < METADATA_SIZE {
                    let why = format!(
                        "backing device of {bytes} bytes is smaller than the {METADATA_SIZE}-byte volume header"
                    );
                    return self.fail_load(then, Error::new(Errno::EILSEQ, why), out);
                }
                let header = vec![0u8; METADATA_SIZE as usize];
                out.push(Action::Read(self.metadata_io(header, 0), Token::Lifecycle));
                self.phase = Phase::LoadReadingHeader(then);
            }
            other => self.phase = other,
        }
    }

    fn backing_bytes(&self) -> u64 {
        self.blockcnt.saturating_mul(u64::from(self.blocklen))
    }

    fn create_pm(&self, plan: &InitPlan) -> Result<Metadata> {
        let in_file = |e: Error| e.context(format_args!("pm file {}", plan.path));
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

    /// Reports a refused load or destroy (which begins with a load).
    fn fail_load(&mut self, then: AfterLoad, err: Error, out: &mut Vec<Action>) {
        self.phase = Phase::Closed;
        out.push(match then {
            AfterLoad::Open(cb) => Action::Opened(cb, Err(err.context("load").logged())),
            AfterLoad::Destroy(cb) => Action::Done(cb, Err(err.context("destroy").logged())),
        });
    }

    fn lifecycle_done(&mut self, io: BackingIo, result: Result<()>, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::InitWritingPath { meta, path, cb } => match result {
                Ok(()) => {
                    let superblock = format::encode_superblock(&meta.geo.params);
                    out.push(Action::Write(
                        self.metadata_io(superblock, 0),
                        Token::Lifecycle,
                    ));
                    self.phase = Phase::InitWritingSuper { meta, path, cb };
                }
                Err(e) => {
                    let e = e.context("writing the pm file path to the backing device");
                    self.abandon_init(meta, &path, cb, e, out)
                }
            },
            Phase::InitWritingSuper { meta, path, cb } => match result {
                Ok(()) => {
                    self.phase = Phase::Ready(Engine::new(meta));
                    out.push(Action::Opened(cb, Ok(())));
                }
                Err(e) => {
                    let e = e.context("writing the superblock");
                    self.abandon_init(meta, &path, cb, e, out)
                }
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
                            self.phase = Phase::Ready(Engine::new(meta));
                            out.push(Action::Opened(cb, Ok(())));
                        }
                        AfterLoad::Destroy(cb) => {
                            drop(meta);
                            let zeros = vec![0u8; SUPERBLOCK_SIZE];
                            out.push(Action::Write(self.metadata_io(zeros, 0), Token::Lifecycle));
                            self.phase = Phase::DestroyClearingSuper { path, cb };
                        }
                    }
                }
                Err(e) => self.fail_load(then, e, out),
            },
            Phase::DestroyClearingSuper { path, cb } => {
                let removed = result
                    .map_err(|e| e.context("clearing the superblock"))
                    .and_then(|()| {
                        let in_file = |e: Error| e.context(format_args!("pm file {path}"));
                        self.store.remove(&path).map_err(in_file)
                    });
                out.push(Action::Done(
                    cb,
                    removed.map_err(|e| e.context("destroy").logged()),
                ));
            }
            other => {
                stray("backing", Token::Lifecycle);
                self.phase = other;
            }
        }
    }

    fn abandon_init(
        &mut self,
        meta: Metadata,
        path: &str,
        cb: OpenCallback,
        err: Error,
        out: &mut Vec<Action>,
    ) {
        drop(meta);
        let _ = self.store.remove(path);
        out.push(Action::Opened(cb, Err(err.context("init").logged())));
    }

    /// Checks a superblock + path region read from the device and opens the pm file it
    /// names. Nothing from the disk is trusted until checked: bad params, a device too
    /// small, a pm file of the wrong size or with another superblock, map entries out of
    /// range or shared are all `EILSEQ`.
    fn open_pm(&self, header: &[u8]) -> Result<(Metadata, String)> {
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
        let in_file = |e: Error| e.context(format_args!("pm file {path}"));
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
