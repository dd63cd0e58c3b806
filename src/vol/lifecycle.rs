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
//! failure removes the pm file it made.

use super::request::Engine;
use super::{Action, DoneCallback, Event, Info, OpenCallback, Token};
use crate::backing::{BackingDevice, BackingIo, Extent};
use crate::check::Report;
use crate::error::{Errno, Result};
use crate::format::{
    self, Geometry, METADATA_SIZE, PATH_OFFSET, Params, REDUCE_PATH_MAX, SUPERBLOCK_SIZE,
};
use crate::maps::Metadata;
use crate::pm::PmStore;

/// A validated init request: final params (uuid chosen, `vol_size` computed) and the
/// pm file path. Made before anything is written, so bad params leave no trace.
#[derive(Clone, Debug)]
pub struct InitPlan {
    pub params: Params,
    geo: Geometry,
    path: String,
}

impl InitPlan {
    /// Checks `params` (whose `vol_size` must be 0) against a backing device of
    /// `blockcnt` blocks of `blocklen`; a zero uuid becomes a random one. `EINVAL`.
    pub fn new(mut params: Params, blocklen: u32, blockcnt: u64, pm_dir: &str) -> Result<InitPlan> {
        if params.vol_size != 0 || params.chunk_size == 0 {
            return Err(Errno::EINVAL);
        }
        let backing_bytes = blockcnt
            .checked_mul(u64::from(blocklen))
            .ok_or(Errno::EINVAL)?;
        params.vol_size = format::vol_size_for(params.chunk_size, backing_bytes);
        if params.vol_size == 0 {
            return Err(Errno::EINVAL);
        }
        if params.uuid == [0; 16] {
            params.uuid = *uuid::Uuid::new_v4().as_bytes();
        }
        let geo = Geometry::new(params, blocklen)?;
        let path = format::pm_path(pm_dir, &params.uuid)?;
        Ok(InitPlan { params, geo, path })
    }

    pub fn pm_path(&self) -> &str {
        &self.path
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
            Phase::Ready(engine) if engine.outstanding() > 0 => Err(Errno::EBUSY),
            Phase::Ready(engine) => Ok(engine.meta.audit()),
            _ => Err(Errno::ENODEV),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let p = &self.params;
        let mut s = format!(
            "vol info:\n\tuuid = {}\n\tbacking_io_unit_size = 0x{:x}\n\tlogical_block_size = 0x{:x}\n\tchunk_size = 0x{:x}\n\tvol_size = 0x{:x}\n",
            uuid::Uuid::from_bytes(p.uuid).hyphenated(),
            p.backing_io_unit_size,
            p.logical_block_size,
            p.chunk_size,
            p.vol_size
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
                _ => out.push(Action::Finish(io, Err(Errno::ENODEV))),
            },
            Event::Reject { io, err } => out.push(Action::Finish(io, Err(err))),
            Event::Unload(cb) => out.push(Action::Done(cb, self.unload())),
            Event::BackingDone {
                token: Token::Request(id),
                io,
                result,
            } => {
                if let Phase::Ready(engine) = &mut self.phase {
                    engine.backing_done(id, io, result, out);
                }
            }
            Event::CodecDone {
                token: Token::Request(id),
                io,
                result,
            } => {
                if let Phase::Ready(engine) = &mut self.phase {
                    engine.codec_done(id, io, result, out);
                }
            }
            Event::BackingDone {
                token: Token::Lifecycle,
                io,
                result,
            } => self.lifecycle_done(io, result, out),
            Event::CodecDone {
                token: Token::Lifecycle,
                ..
            } => debug_assert!(false, "no lifecycle codec op"),
        }
    }

    fn unload(&mut self) -> Result<()> {
        match &self.phase {
            Phase::Ready(engine) if engine.outstanding() > 0 => Err(Errno::EBUSY),
            Phase::Ready(_) => {
                self.phase = Phase::Closed;
                Ok(())
            }
            _ => Err(Errno::ENODEV),
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
            Phase::InitStart(plan, cb) => match self.create_pm(&plan) {
                Ok(meta) => {
                    let path = plan.path;
                    let region = format::encode_path(&path).expect("path validated by the plan");
                    out.push(Action::Write(
                        self.metadata_io(region, PATH_OFFSET),
                        Token::Lifecycle,
                    ));
                    self.phase = Phase::InitWritingPath { meta, path, cb };
                }
                Err(e) => out.push(Action::Opened(cb, Err(e))),
            },
            Phase::LoadStart(then) => {
                // Metadata is addressed in whole blocks; a device too small for it
                // cannot hold a volume.
                if self.blocklen == 0 || SUPERBLOCK_SIZE as u32 % self.blocklen != 0 {
                    return self.fail_load(then, Errno::EINVAL, out);
                }
                if self.blockcnt.saturating_mul(u64::from(self.blocklen)) < METADATA_SIZE {
                    return self.fail_load(then, Errno::EILSEQ, out);
                }
                let header = vec![0u8; METADATA_SIZE as usize];
                out.push(Action::Read(self.metadata_io(header, 0), Token::Lifecycle));
                self.phase = Phase::LoadReadingHeader(then);
            }
            other => self.phase = other,
        }
    }

    fn create_pm(&self, plan: &InitPlan) -> Result<Metadata> {
        let pm = self.store.create(&plan.path, plan.geo.pm_size)?;
        let superblock = format::encode_superblock(&plan.params);
        Metadata::format(plan.geo, pm, &superblock).inspect_err(|_| {
            let _ = self.store.remove(&plan.path);
        })
    }

    fn fail_load(&mut self, then: AfterLoad, err: Errno, out: &mut Vec<Action>) {
        self.phase = Phase::Closed;
        out.push(match then {
            AfterLoad::Open(cb) => Action::Opened(cb, Err(err)),
            AfterLoad::Destroy(cb) => Action::Done(cb, Err(err)),
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
                Err(e) => self.abandon_init(meta, &path, cb, e, out),
            },
            Phase::InitWritingSuper { meta, path, cb } => match result {
                Ok(()) => {
                    self.phase = Phase::Ready(Engine::new(meta));
                    out.push(Action::Opened(cb, Ok(())));
                }
                Err(e) => self.abandon_init(meta, &path, cb, e, out),
            },
            Phase::LoadReadingHeader(then) => match result.and_then(|()| self.open_pm(&io.buf)) {
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
                out.push(Action::Done(
                    cb,
                    result.and_then(|()| self.store.remove(&path)),
                ));
            }
            other => {
                debug_assert!(false, "lifecycle completion with nothing in flight");
                self.phase = other;
            }
        }
    }

    fn abandon_init(
        &mut self,
        meta: Metadata,
        path: &str,
        cb: OpenCallback,
        err: Errno,
        out: &mut Vec<Action>,
    ) {
        drop(meta);
        let _ = self.store.remove(path);
        out.push(Action::Opened(cb, Err(err)));
    }

    /// Checks a superblock + path region read from the device and opens the pm file it
    /// names. Nothing from the disk is trusted until checked: bad params, a device too
    /// small, a pm file of the wrong size or with another superblock, map entries out of
    /// range or shared are all `EILSEQ`.
    fn open_pm(&self, header: &[u8]) -> Result<(Metadata, String)> {
        let superblock = &header[..SUPERBLOCK_SIZE];
        let params = format::decode_superblock(superblock)?;
        let geo = Geometry::new(params, self.blocklen).map_err(|_| Errno::EILSEQ)?;
        if self.blockcnt.saturating_mul(u64::from(self.blocklen)) < geo.backing_bytes_needed() {
            return Err(Errno::EILSEQ);
        }
        let path =
            format::decode_path(&header[SUPERBLOCK_SIZE..SUPERBLOCK_SIZE + REDUCE_PATH_MAX])?;
        let pm = self
            .store
            .open(&path, &|len| geo.chunk_maps_in_file(len).is_some())?;
        if &pm.bytes()[..SUPERBLOCK_SIZE] != superblock {
            return Err(Errno::EILSEQ);
        }
        Ok((Metadata::rebuild(geo, pm)?, path))
    }
}
