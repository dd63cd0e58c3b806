//! The codec pool for C callers (`reduce_codec_pool_*`): the engine of
//! `codec/pool.rs` carrying the caller's iovecs and completions. Attaching a pool to a
//! device points the device's `compress`/`decompress` members at the trampolines
//! here, which find the pool again from the device pointer they receive (a registry
//! keyed by that pointer), so nothing is embedded in the caller's structure.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libc::iovec;
use smallvec::SmallVec;

use super::boundary::{callback, codec_status, errno, guard, refuse};
use super::codec::{apply, builtin_compression};
use super::iov::checked;
use super::types::{
    FnOf, reduce_backing_codec_fn, spdk_reduce_backing_dev, spdk_reduce_dev_cpl,
    spdk_reduce_vol_cb_args,
};
use crate::codec::pool::{Direction, Engine, Job, SharedCodec, Submitter};
use crate::codec::{Compression, Lz4Codec, SyncCodec, ZstdCodec};
use crate::error::{Errno, Error, Result};

/// A pool of codec threads (see `reduce_codec_pool_create`). Opaque.
pub struct reduce_codec_pool {
    engine: Engine<CJob>,
    /// Polls delivering completions now (a completion may poll again).
    delivering: Cell<u32>,
    destroyed: Cell<bool>,
}

/// Worker threads one pool may have; more is taken for a mistake (a negative count
/// converted to unsigned).
const MAX_THREADS: c_uint = 1024;

/// One compress or decompress from a device's member: the caller's iovec arrays
/// (copied; the buffers they point to are the caller's) and its completion.
struct CJob {
    direction: Direction,
    src: SmallVec<[iovec; 1]>,
    dst: SmallVec<[iovec; 1]>,
    cb_fn: FnOf<spdk_reduce_dev_cpl>,
    cb_arg: *mut c_void,
    status: c_int,
}

// SAFETY: a job moves to one worker thread and back. The buffers its iovecs point to
// are lent by the caller of `compress`/`decompress` until the completion is called
// (the members' contract), and only the thread holding the job touches them; the
// completion and its argument are only called, on the polling thread, never
// dereferenced by us.
unsafe impl Send for CJob {}

impl CJob {
    fn what(&self) -> &'static str {
        match self.direction {
            Direction::Compress => "codec pool compress",
            Direction::Decompress => "codec pool decompress",
        }
    }

    /// Calls the caller's completion with the job's status.
    fn deliver(self) {
        // SAFETY: the caller's completion with its own argument, once.
        unsafe { (self.cb_fn)(self.cb_arg, self.status) }
    }
}

impl Job for CJob {
    fn run(&mut self, codec: &dyn SyncCodec) {
        let direction = self.direction;
        // SAFETY: the iovecs were checked at submission and their buffers stay valid
        // until the completion (see `impl Send`).
        let result = unsafe {
            apply(
                self.what(),
                |src, dst| direction.apply(codec, src, dst),
                self.src.as_ptr(),
                self.src.len() as c_int,
                self.dst.as_ptr(),
                self.dst.len() as c_int,
            )
        };
        self.status = codec_status(result);
    }

    fn fail(&mut self, err: Error) {
        self.status = errno(err);
    }
}

/// A device with a pool attached: the device's address, the pool's, and its queue.
struct Attached {
    dev: usize,
    pool: usize,
    submitter: Submitter<CJob>,
}

/// Every attached device. A list: a process attaches a handful.
static ATTACHED: Mutex<Vec<Attached>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Attached>> {
    ATTACHED.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find(list: &[Attached], dev: *mut spdk_reduce_backing_dev) -> Option<&Attached> {
    list.iter().find(|a| a.dev == dev as usize)
}

/// The codec called `algo` at `level`, with the levels of `reduce_backing_dev_set_codec`
/// (0: the algorithm's default), or why there is none.
fn named_codec(algo: &[u8], level: c_int) -> std::result::Result<SharedCodec, String> {
    match algo {
        b"zstd" => match u32::try_from(level) {
            Ok(0) => Ok(Arc::new(ZstdCodec)),
            Ok(l) => ZstdCodec::new(l)
                .map(|c| Arc::new(c) as SharedCodec)
                .map_err(|_| format!("zstd level {level}: levels are 1 to 22, or 0 for 1")),
            Err(_) => Err(format!(
                "zstd level {level}: levels are 1 to 22, or 0 for 1"
            )),
        },
        b"lz4" => match level {
            0 | 1 => Ok(Arc::new(Lz4Codec)),
            _ => Err(format!(
                "lz4 level {level}: the built-in LZ4 has one speed (0 or 1)"
            )),
        },
        _ => Err(format!(
            "unknown algo \"{}\" (known: \"zstd\", \"lz4\")",
            String::from_utf8_lossy(algo)
        )),
    }
}

/// What init records in the superblock for `dev`: its pool's algorithm and level when
/// its `compress` member is the pool's, else what the built-in functions record.
///
/// # Safety
/// `dev` is valid.
pub(super) unsafe fn device_compression(dev: *mut spdk_reduce_backing_dev) -> Compression {
    // SAFETY: valid, per the caller.
    let compress = unsafe { (*dev).compress };
    match (compress, find(&registry(), dev)) {
        (Some(f), Some(a)) if std::ptr::fn_addr_eq(f, POOL_COMPRESS) => a.submitter.compression(),
        _ => builtin_compression(compress),
    }
}

/// Create a pool of `threads` worker threads that compress with `algo` at `level`, as
/// `reduce_backing_dev_set_codec` would assign them: "zstd", levels 1 to 22 or 0 for
/// the default, 1 (frames that `reduce_zstd_decompress` reads); "lz4", level 0 or 1
/// (blocks that `reduce_lz4_decompress` reads). A volume initialized on an attached
/// device records the pool's algorithm and level in its superblock.
///
/// Attach it to backing devices with `reduce_codec_pool_attach`, and call
/// `reduce_codec_pool_poll` from the thread of the volumes on those devices: the
/// volumes stay on that thread, the compression runs on the workers, and the
/// completions come back on that thread, from the poll (and only from there: poll it
/// from the poll loop, which also runs waiting operations itself when it has nothing
/// to deliver).
///
/// Returns NULL (with the reason logged) for a NULL or unknown `algo`, a level out of
/// range, 0 threads or more than 1024, or when a thread cannot be started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_codec_pool_create(
    algo: *const c_char,
    level: c_int,
    threads: c_uint,
) -> *mut reduce_codec_pool {
    // Safety (Rust): `algo` is NULL or a NUL-terminated string.
    const WHAT: &str = "reduce_codec_pool_create";
    guard(WHAT, ptr::null_mut(), || {
        if algo.is_null() {
            refuse(WHAT, "algo is NULL");
            return ptr::null_mut();
        }
        // SAFETY: non-NULL and NUL-terminated, per the caller.
        let name = unsafe { CStr::from_ptr(algo) }.to_bytes();
        let codec = match named_codec(name, level) {
            Ok(codec) => codec,
            Err(why) => {
                refuse(WHAT, &why);
                return ptr::null_mut();
            }
        };
        if threads == 0 || threads > MAX_THREADS {
            refuse(
                WHAT,
                &format!("threads is {threads}, not 1..={MAX_THREADS}"),
            );
            return ptr::null_mut();
        }
        match Engine::new(codec, threads as usize) {
            Ok(engine) => Box::into_raw(Box::new(reduce_codec_pool {
                engine,
                delivering: Cell::new(0),
                destroyed: Cell::new(false),
            })),
            Err(e) => {
                e.logged();
                ptr::null_mut()
            }
        }
    })
}

/// Make `pool` the codec of `dev`: sets `dev->compress` and `dev->decompress`. Attach
/// before the volume on `dev` is initialized or loaded (it reads the members then). A
/// device stays attached until the pool is destroyed; one pool serves any number of
/// devices, all on the thread that polls it.
///
/// Returns 0 (also when `dev` is already attached to `pool`), -EINVAL for a NULL
/// `pool` or `dev`, or -EBUSY when `dev` is attached to another pool.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_codec_pool_attach(
    pool: *mut reduce_codec_pool,
    dev: *mut spdk_reduce_backing_dev,
) -> c_int {
    // Safety (Rust): `pool` is NULL or live; `dev` is NULL or valid.
    const WHAT: &str = "reduce_codec_pool_attach";
    guard(WHAT, Errno::EIO.negated(), || {
        // SAFETY: NULL or live, per the caller.
        let Some(p) = (unsafe { pool.as_ref() }) else {
            return refuse(WHAT, "pool is NULL").negated();
        };
        if dev.is_null() {
            return refuse(WHAT, "dev is NULL").negated();
        }
        let mut attached = registry();
        match find(&attached, dev) {
            Some(a) if a.pool != pool as usize => {
                return Error::new(
                    Errno::EBUSY,
                    format!("{WHAT}: dev is attached to another pool"),
                )
                .logged()
                .negated();
            }
            Some(_) => {}
            None => attached.push(Attached {
                dev: dev as usize,
                pool: pool as usize,
                submitter: p.engine.submitter(),
            }),
        }
        // SAFETY: non-NULL and valid, per the caller.
        unsafe {
            (*dev).compress = Some(pool_compress);
            (*dev).decompress = Some(pool_decompress);
        }
        0
    })
}

/// Deliver the completions of the operations `pool` has finished, on the calling
/// thread (which must be the thread of the volumes on its devices); when none has
/// finished, run one waiting operation on the calling thread and deliver it, so a
/// poll loop that spins here lends its core to the codec. Returns how many
/// completions it delivered, or -EINVAL for a NULL `pool`.
///
/// Completions may submit more work (to this pool too), poll again, and destroy the
/// pool.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_codec_pool_poll(pool: *mut reduce_codec_pool) -> c_int {
    // Safety (Rust): `pool` is NULL or live.
    const WHAT: &str = "reduce_codec_pool_poll";
    guard(WHAT, Errno::EIO.negated(), || {
        // SAFETY: NULL or live, per the caller.
        let Some(p) = (unsafe { pool.as_ref() }) else {
            return refuse(WHAT, "pool is NULL").negated();
        };
        let n = p.deliver();
        if p.delivering.get() == 0 && p.destroyed.get() {
            // A completion destroyed the pool: this poll, the outermost, finishes it.
            // SAFETY: live, and no other poll is delivering on it.
            unsafe { reduce_codec_pool::finish(pool) };
        }
        c_int::try_from(n).unwrap_or(c_int::MAX)
    })
}

/// Destroy `pool`, on the thread that polls it. Operations in flight are not lost:
/// destroy finishes them (with the workers and on the calling thread) and delivers
/// every completion on the calling thread before it returns. Called from inside one of
/// the pool's completions, it does the same when the poll that delivers returns.
///
/// Its devices are detached at once: from then on their `compress` and `decompress`
/// complete inside the call with -ENODEV (a volume then stores what it writes
/// uncompressed, and reads of compressed chunks fail with -EIO), so destroy the pool
/// after unloading the volumes that use it, or point their members at another codec
/// before loading them again. `dev` structures are not touched: they may be freed
/// already. Nothing happens for a NULL `pool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reduce_codec_pool_destroy(pool: *mut reduce_codec_pool) {
    // Safety (Rust): `pool` is NULL or live, and not used after this call.
    const WHAT: &str = "reduce_codec_pool_destroy";
    guard(WHAT, (), || {
        // SAFETY: NULL or live, per the caller.
        let Some(p) = (unsafe { pool.as_ref() }) else {
            refuse(WHAT, "pool is NULL");
            return;
        };
        if p.destroyed.replace(true) {
            refuse(WHAT, "the pool is already being destroyed");
            return;
        }
        registry().retain(|a| a.pool != pool as usize);
        if p.delivering.get() == 0 {
            // SAFETY: live, and no poll is delivering on it.
            unsafe { reduce_codec_pool::finish(pool) };
        }
    })
}

impl reduce_codec_pool {
    /// One poll of the engine, counted so that a destroy from inside a completion
    /// knows to leave the pool to the poll that delivered it.
    fn deliver(&self) -> usize {
        self.delivering.set(self.delivering.get() + 1);
        let n = self.engine.poll(CJob::deliver);
        self.delivering.set(self.delivering.get() - 1);
        n
    }

    /// The end of a destroy: every operation finished and delivered, then the pool
    /// freed.
    ///
    /// # Safety
    /// `pool` came from `reduce_codec_pool_create`, is being destroyed and is not
    /// delivering; nothing uses it after this call.
    unsafe fn finish(pool: *mut reduce_codec_pool) {
        {
            // SAFETY: live until the end of this function. Only shared references are
            // made while completions run: they may still poll the pool.
            let p = unsafe { &*pool };
            p.engine.shut_down();
            while p.deliver() > 0 {}
        }
        // SAFETY: from Box::into_raw in create; nothing refers to it any more.
        drop(unsafe { Box::from_raw(pool) });
    }
}

/// The pool attached to `dev`.
fn attached(what: &str, dev: *mut spdk_reduce_backing_dev) -> Result<Submitter<CJob>> {
    find(&registry(), dev)
        .map(|a| a.submitter.clone())
        .ok_or_else(|| {
            Error::new(
                Errno::ENODEV,
                format!("{what}: no codec pool is attached to this device (destroyed?)"),
            )
            .logged()
        })
}

/// Hands one operation of a device member to its pool, or completes it at once with
/// the error that keeps it from going there.
///
/// # Safety
/// As for a `compress` member: the iovecs describe valid buffers until the
/// completion; `args` is NULL or valid until its callback.
unsafe fn offload(
    direction: Direction,
    dev: *mut spdk_reduce_backing_dev,
    src_iov: *const iovec,
    src_iovcnt: c_int,
    dst_iov: *const iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    let what = match direction {
        Direction::Compress => "codec pool compress",
        Direction::Decompress => "codec pool decompress",
    };
    // SAFETY: NULL or valid, per the contract. Copy out what the completion needs:
    // `args` may be freed by the completion itself.
    let (cb_fn, cb_arg) = match unsafe { args.as_ref() } {
        Some(&spdk_reduce_vol_cb_args { cb_fn, cb_arg }) => {
            (callback(what, "args->cb_fn", cb_fn), cb_arg)
        }
        None => (callback(what, "args", None), ptr::null_mut()),
    };
    let Some(cb_fn) = cb_fn else {
        return;
    };
    let job = || -> Result<(Submitter<CJob>, CJob)> {
        let bad = |side: &str, why: &str| refuse(what, &format!("{side}: {why}"));
        // SAFETY: forwarded from the caller.
        let (src, _) = unsafe { checked(src_iov, src_iovcnt) }.map_err(|why| bad("src", why))?;
        // SAFETY: as above.
        let (dst, _) = unsafe { checked(dst_iov, dst_iovcnt) }.map_err(|why| bad("dst", why))?;
        let job = CJob {
            direction,
            src: SmallVec::from_slice(src),
            dst: SmallVec::from_slice(dst),
            cb_fn,
            cb_arg,
            status: 0,
        };
        Ok((attached(what, dev)?, job))
    };
    match job() {
        Ok((pool, job)) => pool.submit(job),
        // SAFETY: the caller's completion with its own argument.
        Err(e) => unsafe { cb_fn(cb_arg, errno(e)) },
    }
}

type CodecFn = FnOf<reduce_backing_codec_fn>;

/// What `reduce_codec_pool_attach` assigns, for comparison by address.
static POOL_COMPRESS: CodecFn = pool_compress;

/// The `compress` member of an attached device.
unsafe extern "C" fn pool_compress(
    dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    guard("codec pool compress", (), || {
        // SAFETY: forwarded from the caller (the member's contract).
        unsafe {
            offload(
                Direction::Compress,
                dev,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}

/// The `decompress` member of an attached device.
unsafe extern "C" fn pool_decompress(
    dev: *mut spdk_reduce_backing_dev,
    src_iov: *mut iovec,
    src_iovcnt: c_int,
    dst_iov: *mut iovec,
    dst_iovcnt: c_int,
    args: *mut spdk_reduce_vol_cb_args,
) {
    guard("codec pool decompress", (), || {
        // SAFETY: forwarded from the caller (the member's contract).
        unsafe {
            offload(
                Direction::Decompress,
                dev,
                src_iov,
                src_iovcnt,
                dst_iov,
                dst_iovcnt,
                args,
            )
        }
    })
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::codec::CompAlgo;

    #[test]
    fn names_and_levels_as_set_codec_takes_them() {
        let zstd = |level| named_codec(b"zstd", level).map(|c| c.compression());
        assert_eq!(zstd(0), Ok(ZstdCodec.compression()));
        assert_eq!(zstd(19).map(|c| c.level), Ok(19));
        assert_eq!(
            named_codec(b"lz4", 0).map(|c| c.compression().algo),
            Ok(CompAlgo::LZ4)
        );
        for (algo, level) in [
            (&b"zstd"[..], 23),
            (b"zstd", -1),
            (b"zstd", i32::MIN),
            (b"lz4", 2),
            (b"gzip", 1),
            (b"", 1),
        ] {
            assert!(named_codec(algo, level).is_err(), "{algo:?} {level}");
        }
    }
}
