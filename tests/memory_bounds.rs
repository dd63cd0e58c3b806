//! Memory bounded by design, whatever the volume's size: init fills its pm file a
//! piece at a time instead of building a buffer of the file's size, and load of a
//! volume whose maps are damaged everywhere stops at the first problem instead of
//! recording millions of them. Checked on a 16 GiB volume (a 50 MB pm file on tmpfs,
//! a sparse backing device) through a counting global allocator, this binary's own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use reduce::testkit::{filler, slot};
use reduce::{
    Backend, BackingDevice, BackingIo, Errno, FileStore, InitPlan, IoDone, Params, Result, Volume,
    ZstdCodec,
};

/// Counts live heap bytes, their peak, and the largest single allocation.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: every call is passed unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap growth and largest allocation while `f` runs.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (out, peak, LARGEST.load(Ordering::Relaxed))
}

const MIB: usize = 1 << 20;
const BLOCK: u32 = 4096;
const CHUNK: u32 = 16384;
/// 16 GiB of volume: a pm file of about 50 MB.
const CHUNKS: u64 = 1 << 20;

/// A device of any size that stores only the blocks written to it (the metadata),
/// completing inside the call.
#[derive(Clone, Default)]
struct Sparse {
    blocks: std::rc::Rc<RefCell<HashMap<u64, Vec<u8>>>>,
}

impl BackingDevice for Sparse {
    fn blocklen(&self) -> u32 {
        BLOCK
    }

    fn blockcnt(&self) -> u64 {
        (CHUNKS + 128) * u64::from(CHUNK / BLOCK)
    }

    fn read(&self, mut io: BackingIo, done: IoDone) {
        let blocks = self.blocks.borrow();
        for e in io.extents.clone() {
            for k in 0..u64::from(e.lba_count) {
                let at = e.buf_offset + (k * u64::from(BLOCK)) as usize;
                let dst = &mut io.buf[at..at + BLOCK as usize];
                match blocks.get(&(e.lba + k)) {
                    Some(b) => dst.copy_from_slice(b),
                    None => dst.fill(0),
                }
            }
        }
        drop(blocks);
        done.complete(io, Ok(()));
    }

    fn write(&self, io: BackingIo, done: IoDone) {
        for e in &io.extents {
            for k in 0..u64::from(e.lba_count) {
                let at = e.buf_offset + (k * u64::from(BLOCK)) as usize;
                let block = io.buf[at..at + BLOCK as usize].to_vec();
                self.blocks.borrow_mut().insert(e.lba + k, block);
            }
        }
        done.complete(io, Ok(()));
    }
}

fn backend(dev: &Sparse) -> Backend {
    Backend {
        backing: Box::new(dev.clone()),
        codec: Box::new(ZstdCodec),
        store: Box::new(FileStore),
    }
}

fn init(dev: &Sparse, dir: &Path) -> Result<Volume> {
    let params = Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: CHUNK,
        ..Params::default()
    };
    let plan = InitPlan::new(params, BLOCK, dev.blockcnt(), dir)?;
    let s = slot();
    Volume::init(plan, backend(dev), filler(&s));
    s.take().expect("the device completes inside the call")
}

fn load(dev: &Sparse) -> Result<Volume> {
    let s = slot();
    Volume::load(backend(dev), filler(&s));
    s.take().expect("the device completes inside the call")
}

fn unload(vol: &Volume) {
    let s = slot();
    vol.unload(filler(&s));
    s.take().expect("unload completes inside the call").unwrap();
}

/// tmpfs where there is one, so the 50 MB pm file costs no disk I/O.
fn scratch() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

#[test]
fn init_and_load_of_a_large_volume_stay_small() {
    let dir = scratch();
    let dev = Sparse::default();

    let (vol, peak, largest) = measure(|| init(&dev, dir.path()).unwrap());
    let path = vol.pm_path();
    let pm_len = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(pm_len > 48 * MIB, "pm file of {pm_len} bytes");
    assert!(
        largest <= MIB,
        "init allocated {largest} bytes at once for a pm file of {pm_len}"
    );
    assert!(peak < 4 * MIB, "init's heap peaked at {peak} bytes");
    unload(&vol);

    // A clean load needs the free maps (bits) and nothing per chunk.
    let (vol, peak, _) = measure(|| load(&dev).unwrap());
    assert!(peak < 4 * MIB, "a clean load's heap peaked at {peak} bytes");
    unload(&vol);

    // Zero the whole logical map: every chunk names chunk map 0, a million problems.
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(4096)).unwrap();
    let zeros = vec![0u8; MIB];
    for _ in 0..(CHUNKS * 8) as usize / MIB {
        file.write_all(&zeros).unwrap();
    }
    drop(file);
    let (refused, peak, largest) = measure(|| load(&dev));
    let err = refused.err().expect("a zeroed logical map is refused");
    assert_eq!(err, Errno::EILSEQ);
    assert!(err.detail().contains("chunk 0: chunk map 0"), "{err}");
    assert!(
        peak < 4 * MIB && largest <= MIB,
        "refusing the load took {peak} bytes of heap (largest {largest})"
    );
}
