//! Memory bounded by design, whatever the volume's size: init fills its pm file a
//! piece at a time instead of building a buffer of the file's size, and load of a
//! volume whose maps are damaged everywhere stops at the first problem instead of
//! recording millions of them. Checked on a 16 GiB volume (a 50 MB pm file on tmpfs,
//! a sparse backing device) through a peak-tracking global allocator, this binary's own.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::scratch;

use peak_alloc::PeakAlloc;

use reduce::testkit::{filler, slot};
use reduce::{
    Backend, BackingDevice, BackingIo, Errno, FileStore, InitPlan, IoDone, Params, Result, Volume,
    ZstdCodec,
};

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

/// How far the heap grew above where it stood while `f` ran: a buffer the size of the
/// pm file, or a record per chunk, would show as tens of MB.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = PEAK.current_usage();
    PEAK.reset_peak_usage();
    let out = f();
    (out, PEAK.peak_usage().saturating_sub(base))
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

#[test]
fn init_and_load_of_a_large_volume_stay_small() {
    let dir = scratch();
    let dev = Sparse::default();

    let (vol, peak) = measure(|| init(&dev, dir.path()).unwrap());
    let path = vol.pm_path();
    let pm_len = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(pm_len > 48 * MIB, "pm file of {pm_len} bytes");
    assert!(peak < 4 * MIB, "init's heap peaked at {peak} bytes");
    unload(&vol);

    // A clean load needs the free maps (bits) and nothing per chunk.
    let (vol, peak) = measure(|| load(&dev).unwrap());
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
    let (refused, peak) = measure(|| load(&dev));
    let err = refused.err().expect("a zeroed logical map is refused");
    assert_eq!(err, Errno::EILSEQ);
    assert!(err.detail().contains("chunk 0: chunk map 0"), "{err}");
    assert!(
        peak < 4 * MIB,
        "refusing the load took {peak} bytes of heap"
    );
}
