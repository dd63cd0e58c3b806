//! Throughput of the volume against the compressor alone. The goal is "speed at the
//! limit of the compressor": the volume's write path should cost little more than
//! compressing, and its read path little more than decompressing. Criterion measures
//! each; the summary at the end prints the ratios.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use reduce::testkit::{MemBacking, MemStore, Mode, Rng, prose};
use reduce::{Backend, InitPlan, Params, SyncCodec, Volume, ZstdCodec};

const CHUNK: usize = 16384;
const CHUNKS: usize = 256;

/// Text-like data that compresses about 2.4:1, like a file system's worth of files.
fn corpus() -> Vec<u8> {
    prose(&mut Rng::new(1), CHUNK * CHUNKS)
}

fn volume() -> Volume {
    let backing = MemBacking::new(
        4096,
        ((CHUNKS + 129) * CHUNK / 4096) as u64,
        Mode::Immediate,
    );
    let params = Params {
        backing_io_unit_size: 4096,
        logical_block_size: 512,
        chunk_size: CHUNK as u32,
        ..Params::default()
    };
    let plan = InitPlan::new(
        params,
        4096,
        ((CHUNKS + 129) * CHUNK / 4096) as u64,
        "/bench",
    )
    .expect("plan");
    let backend = Backend {
        backing: Box::new(backing),
        codec: Box::new(ZstdCodec),
        store: Box::new(MemStore::new()),
    };
    let slot: Rc<Cell<Option<Volume>>> = Rc::default();
    let out = slot.clone();
    Volume::init(plan, backend, move |r| out.set(Some(r.expect("init"))));
    slot.take().expect("immediate init")
}

/// Writes every chunk once, each from the previous one's completion (queue depth 1).
fn write_all(vol: &Volume, data: &[u8]) {
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        vol.writev(
            (i * CHUNK / 512) as u64,
            (CHUNK / 512) as u64,
            vec![chunk.to_vec()],
            |r, _| r.expect("write"),
        );
    }
}

fn read_all(vol: &Volume) {
    for i in 0..CHUNKS {
        vol.readv(
            (i * CHUNK / 512) as u64,
            (CHUNK / 512) as u64,
            vec![vec![0; CHUNK]],
            |r, b| {
                r.expect("read");
                black_box(b);
            },
        );
    }
}

fn compress_all(data: &[u8], dst: &mut [u8]) {
    for chunk in data.chunks(CHUNK) {
        black_box(ZstdCodec.compress_buf(chunk, dst).ok());
    }
}

fn decompress_all(frames: &[Vec<u8>], dst: &mut [u8]) {
    for f in frames {
        black_box(ZstdCodec.decompress_buf(f, dst).expect("frame"));
    }
}

fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut dst = vec![0u8; CHUNK];
    data.chunks(CHUNK)
        .map(|c| {
            let n = ZstdCodec.compress_buf(c, &mut dst).expect("fits");
            dst[..n].to_vec()
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let data = corpus();
    let frames = frames(&data);
    let mut dst = vec![0u8; CHUNK];
    let mut g = c.benchmark_group("16KiB chunks");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("zstd compress only", |b| {
        b.iter(|| compress_all(&data, &mut dst))
    });
    let vol = volume();
    g.bench_function("volume write (compress + store)", |b| {
        b.iter(|| write_all(&vol, &data))
    });
    g.bench_function("zstd decompress only", |b| {
        b.iter(|| decompress_all(&frames, &mut dst))
    });
    g.bench_function("volume read (load + decompress)", |b| {
        b.iter(|| read_all(&vol))
    });
    g.finish();
}

/// Best of several timed passes, in MB/s.
fn rate(bytes: usize, mut pass: impl FnMut()) -> f64 {
    let best = (0..15)
        .map(|_| {
            let t = Instant::now();
            pass();
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::MAX);
    bytes as f64 / best.as_secs_f64() / 1e6
}

fn ratios() {
    let data = corpus();
    let frames = frames(&data);
    let mut dst = vec![0u8; CHUNK];
    let vol = volume();
    let compress = rate(data.len(), || compress_all(&data, &mut dst));
    let write = rate(data.len(), || write_all(&vol, &data));
    let decompress = rate(data.len(), || decompress_all(&frames, &mut dst));
    let read = rate(data.len(), || read_all(&vol));
    let stored = vol.stats().io_units_in_use * 4096;
    println!("\nreduce throughput summary (in-memory backing, zstd level 1, 16 KiB chunks):");
    println!(
        "  compression ratio        {:.2}:1",
        data.len() as f64 / stored as f64
    );
    println!(
        "  write  {write:8.0} MB/s  vs compress   {compress:8.0} MB/s  ratio {:.2}",
        write / compress
    );
    println!(
        "  read   {read:8.0} MB/s  vs decompress {decompress:8.0} MB/s  ratio {:.2}",
        read / decompress
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    ratios();
}
