//! Large volumes: what init and load cost in memory, checked against a model from the
//! geometry, and (ignored, run by `make scale`) how long they take.
//!
//! The bounds (docs/DESIGN.md, "Scale"): resident memory grows by less than the pm
//! file (init maps in none of it but the superblock, load of an empty volume the
//! logical map only); the heap of a loaded volume is its two free maps (a bit per
//! chunk map and per io unit, and a bit per 64 of those marking the words in use) and
//! at most 1 MiB besides. The volumes sit on sparse
//! files, their pm files on tmpfs where there is one.
//!
//! The heap is measured by a peak-tracking global allocator, this binary's own, and
//! resident memory by the kernel's high-water mark (`VmHWM`, reset through
//! `/proc/self/clear_refs`), so the tests here run one at a time: one test does all the
//! checking, and `make scale` runs the figures with `--test-threads=1`. That allocator
//! writes the zeros of a zeroed allocation, so here the free maps are resident from
//! the start; with the system allocator (`calloc`) they are not.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use peak_alloc::PeakAlloc;

use common::{Layout, PmLayout, scratch};
use reduce::blocking::Volume;
use reduce::testkit::Geo;
use reduce::{FileDevice, Params, ZstdCodec};

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;
const BLOCK: u32 = 4096;
const CHUNK: u32 = 16384;
/// Loads timed in a row: the first pays for faulting the pm file's pages in, and a
/// machine shared with other work shows its noise.
const RUNS: usize = 3;

/// The geometry of a volume of `bytes`: 4 KiB blocks and io units, 16 KiB chunks.
fn geo(bytes: u64) -> Geo {
    Geo::new(BLOCK, BLOCK, CHUNK, BLOCK, bytes / u64::from(CHUNK))
}

/// Heap bytes of the free maps of a loaded volume of `g`: a bit per chunk map and one
/// per io unit of the device, in words of 64, and a word per 64 of those marking the
/// words with a bit set (`src/alloc.rs`).
fn free_map_bytes(g: Geo) -> usize {
    let map = |bits: u64| {
        let words = bits.div_ceil(64);
        (words + words.div_ceil(64)) * 8
    };
    (map(g.chunks + common::EXTRA) + map(g.total_io_units())) as usize
}

/// A line of /proc/self/status, in KiB.
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// What `f` cost: its result, seconds, how far the heap peaked above where it stood,
/// and how far resident memory peaked above where it stood (bytes).
struct Cost<T> {
    out: T,
    seconds: f64,
    heap_peak: usize,
    rss_peak: usize,
}

fn measure<T>(f: impl FnOnce() -> T) -> Cost<T> {
    // Resets VmHWM to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let rss = status_kib("VmRSS:");
    let heap = PEAK.current_usage();
    PEAK.reset_peak_usage();
    let t0 = Instant::now();
    let out = f();
    let seconds = t0.elapsed().as_secs_f64();
    Cost {
        out,
        seconds,
        heap_peak: PEAK.peak_usage().saturating_sub(heap),
        rss_peak: status_kib("VmHWM:").saturating_sub(rss) * 1024,
    }
}

/// A sparse backing file for `g`.
fn device(g: Geo, dir: &Path) -> FileDevice {
    FileDevice::create(dir.join("backing"), g.blocklen, g.blockcnt()).unwrap()
}

fn params() -> Params {
    Params {
        backing_io_unit_size: BLOCK,
        logical_block_size: BLOCK,
        chunk_size: CHUNK,
        ..Params::default()
    }
}

/// Makes every chunk of the (unloaded) volume whose pm file is at `path` hold data:
/// chunk `c` names chunk map `c`, stored raw in the io units right after the metadata,
/// written through the file in pieces so the image costs no memory of its size.
fn fill_every_chunk(g: Geo, path: &Path) {
    let pm = PmLayout::new(g, false);
    let file = File::options().write(true).open(path).unwrap();
    let iou = g.iou_per_chunk();
    let piece = 1 << 16;
    let mut buf = Vec::with_capacity(piece as usize * pm.stride);
    for first in (0..g.chunks).step_by(piece as usize) {
        let chunks = first..(first + piece).min(g.chunks);
        buf.clear();
        for c in chunks.clone() {
            buf.extend_from_slice(&c.to_le_bytes());
        }
        file.write_all_at(&buf, pm.entry_offset(first) as u64)
            .unwrap();
        buf.clear();
        for c in chunks {
            buf.extend_from_slice(&CHUNK.to_le_bytes());
            buf.extend_from_slice(&u32::MAX.to_le_bytes());
            for k in 0..iou {
                buf.extend_from_slice(&(g.reserved_io_units() + c * iou + k).to_le_bytes());
            }
        }
        file.write_all_at(&buf, pm.map_offset(first) as u64)
            .unwrap();
    }
}

/// Init and load of a 64 GiB volume (a pm file of 192 MiB): resident memory grows by
/// less than the pm file (by the heap, and at load the logical map the scan reads),
/// and the heap holds the free maps and at most 1 MiB more, at its peak and idle.
#[test]
fn init_and_load_stay_within_the_pm_file_and_the_free_maps() {
    let g = geo(64 * GIB);
    let dir = scratch();
    let dev = device(g, dir.path());
    let maps = free_map_bytes(g);
    let bound = maps + MIB;
    let pm_len = PmLayout::new(g, false).size;
    let heap0 = PEAK.current_usage();

    let init = measure(|| Volume::init(params(), dev.clone(), ZstdCodec, dir.path()).unwrap());
    let vol = init.out;
    assert_eq!(
        std::fs::metadata(vol.pm_path()).unwrap().len() as usize,
        pm_len
    );
    assert!(
        init.rss_peak <= pm_len,
        "init's resident memory grew by {} bytes, beyond its pm file of {pm_len}",
        init.rss_peak
    );
    // Of the pm file, only the superblock's page is mapped in: the rest is the heap.
    assert!(
        init.rss_peak <= bound + MIB,
        "init's resident memory grew by {} bytes: more than its heap can explain",
        init.rss_peak
    );
    assert!(
        init.heap_peak <= bound,
        "init's heap peaked at {} bytes, beyond the free maps' {maps} + 1 MiB",
        init.heap_peak
    );
    let idle = PEAK.current_usage() - heap0;
    assert!(
        idle <= bound,
        "an idle volume holds {idle} bytes of heap, beyond the free maps' {maps} + 1 MiB"
    );
    vol.unload().unwrap();

    let load = measure(|| Volume::load(dev.clone(), ZstdCodec).unwrap());
    let vol = load.out;
    assert!(
        load.rss_peak <= pm_len,
        "load's resident memory grew by {} bytes, beyond its pm file of {pm_len}",
        load.rss_peak
    );
    // The scan maps in the logical map and, on an empty volume, no chunk map.
    let logical_map = (g.chunks * 8) as usize;
    assert!(
        load.rss_peak <= logical_map + bound + MIB,
        "load's resident memory grew by {} bytes: more than the logical map of \
         {logical_map} and the heap",
        load.rss_peak
    );
    assert!(
        load.heap_peak <= bound,
        "load's heap peaked at {} bytes, beyond the free maps' {maps} + 1 MiB",
        load.heap_peak
    );
    let idle = PEAK.current_usage() - heap0;
    assert!(idle <= bound, "a loaded volume holds {idle} bytes of heap");
    assert_eq!(vol.info().chunks_in_use, 0);
    vol.unload().unwrap();
}

fn print(what: &str, cost: &Cost<impl Sized>, pm_len: usize) {
    println!(
        "{what}: {:.3} s, resident memory +{:.1} MiB (pm file {:.1} MiB), heap peak +{:.1} MiB",
        cost.seconds,
        cost.rss_peak as f64 / MIB as f64,
        pm_len as f64 / MIB as f64,
        cost.heap_peak as f64 / MIB as f64,
    );
}

/// Figures for a 1 TiB volume, sparse: init, the idle heap, and load.
#[test]
#[ignore = "figures, 3 GiB of tmpfs: make scale"]
fn figures_1_tib_sparse() {
    let g = geo(1 << 40);
    let dir = scratch();
    let dev = device(g, dir.path());
    let pm_len = PmLayout::new(g, false).size;
    let heap0 = PEAK.current_usage();

    let init = measure(|| Volume::init(params(), dev.clone(), ZstdCodec, dir.path()).unwrap());
    print("1 TiB init", &init, pm_len);
    let idle = PEAK.current_usage() - heap0;
    let maps = free_map_bytes(g);
    println!(
        "1 TiB idle heap: {idle} bytes = the free maps' {maps} + {} bytes",
        idle as i64 - maps as i64
    );
    init.out.unload().unwrap();

    for _ in 0..RUNS {
        let load = measure(|| Volume::load(dev.clone(), ZstdCodec).unwrap());
        print("1 TiB sparse load", &load, pm_len);
        load.out.unload().unwrap();
    }
}

/// Figures for a 64 GiB volume with every chunk written: load validates every chunk
/// map.
#[test]
#[ignore = "figures: make scale"]
fn figures_64_gib_full() {
    let g = geo(64 * GIB);
    let dir = scratch();
    let dev = device(g, dir.path());
    let pm_len = PmLayout::new(g, false).size;
    let vol = Volume::init(params(), dev.clone(), ZstdCodec, dir.path()).unwrap();
    let path = vol.pm_path();
    vol.unload().unwrap();
    fill_every_chunk(g, &path);

    for _ in 0..RUNS {
        let load = measure(|| Volume::load(dev.clone(), ZstdCodec).unwrap());
        print("64 GiB full load", &load, pm_len);
        let vol = load.out;
        assert_eq!(vol.info().chunks_in_use, g.chunks);
        assert_eq!(vol.stats().io_units_in_use, g.chunks * g.iou_per_chunk());
        vol.unload().unwrap();
    }
}
