//! Zero copy: a read or write of a whole chunk whose buffer is one piece of memory, with
//! a codec that works inside the call, is decompressed straight into the caller's
//! buffer, or compressed straight from it; anything else goes through the volume's own
//! buffers. Both give the same bytes, in both completion modes of the device, with a
//! codec inside the call and one completing later; a decompress that fails into the
//! caller's buffer fails the read with `EIO`.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use reduce::testkit::*;
use reduce::*;

const MODES: [Mode; 2] = [Mode::Immediate, Mode::Deferred];
/// 32 blocks of 512 bytes a chunk, 4 io units of 4 KiB.
const GEO: Geo = Geo::new(512, 4096, 16384, 512, 24);
const CHUNK: usize = 16384;
const BPC: u64 = 32;

/// How a codec call met its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// Through `compress_now` / `decompress_now`, with the caller's buffer (its address)
    /// as the source of a compress or the destination of a decompress.
    Now { compress: bool, user: usize },
    /// Through `compress` / `decompress`, on the volume's buffers.
    Later { compress: bool },
}

/// zstd, recording each call; its decompress inside the call may be told to fail,
/// after scribbling over the destination.
#[derive(Clone, Default)]
struct Spy {
    calls: Rc<RefCell<Vec<Call>>>,
    fail_now: Rc<Cell<Option<Result<usize>>>>,
}

impl Spy {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl Codec for Spy {
    fn compress(&self, mut io: CodecIo, done: CodecDone) {
        self.calls.borrow_mut().push(Call::Later { compress: true });
        let result = ZstdCodec.compress_buf(&io.src[..io.src_len], &mut io.dst);
        done.complete(io, result);
    }

    fn decompress(&self, mut io: CodecIo, done: CodecDone) {
        self.calls
            .borrow_mut()
            .push(Call::Later { compress: false });
        let result = ZstdCodec.decompress_buf(&io.src[..io.src_len], &mut io.dst);
        done.complete(io, result);
    }

    fn compress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        self.calls.borrow_mut().push(Call::Now {
            compress: true,
            user: src.as_ptr() as usize,
        });
        Some(ZstdCodec.compress_buf(src, dst))
    }

    fn decompress_now(&self, src: &[u8], dst: &mut [u8]) -> Option<Result<usize>> {
        self.calls.borrow_mut().push(Call::Now {
            compress: false,
            user: dst.as_ptr() as usize,
        });
        if let Some(result) = self.fail_now.take() {
            let half = dst.len() / 2;
            dst[..half].fill(0xEE);
            return Some(result);
        }
        Some(ZstdCodec.decompress_buf(src, dst))
    }
}

fn init_with(rig: &Rig, codec: Box<dyn Codec>) -> Volume {
    let backend = Backend {
        codec,
        ..rig.backend()
    };
    let s = slot();
    Volume::init(rig.plan([0; 16]), backend, filler(&s));
    rig.wait(&s).unwrap()
}

fn write_segs(rig: &Rig, vol: &Volume, offset: u64, segs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let blocks = segs.iter().map(Vec::len).sum::<usize>() as u64 / 512;
    let s = slot();
    let f = filler(&s);
    vol.writev(offset, blocks, segs, move |r, segs| f(r.map(|()| segs)));
    rig.wait(&s)
}

fn read_segs(rig: &Rig, vol: &Volume, offset: u64, segs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let blocks = segs.iter().map(Vec::len).sum::<usize>() as u64 / 512;
    let s = slot();
    let f = filler(&s);
    vol.readv(offset, blocks, segs, move |r, segs| f(r.map(|()| segs)));
    rig.wait(&s)
}

/// Compressible, incompressible (stored raw) and all-zeros chunks.
fn contents(rng: &mut Rng) -> Vec<Vec<u8>> {
    vec![
        text(rng.next_u64(), CHUNK),
        any_data(rng, CHUNK),
        rng.bytes(CHUNK),
        vec![0; CHUNK],
    ]
}

/// Segment lengths for `bytes`: one segment, a few of any size, and one byte first.
fn shapes(rng: &mut Rng, bytes: usize) -> Vec<Vec<usize>> {
    vec![vec![bytes], split_lens(rng, bytes, 4), vec![1, bytes - 1]]
}

fn cut(data: &[u8], lens: &[usize]) -> Vec<Vec<u8>> {
    let mut at = 0;
    lens.iter()
        .map(|&n| {
            at += n;
            data[at - n..at].to_vec()
        })
        .collect()
}

/// Whole chunks (one, and two in one request) written and read through buffers of
/// every shape, in both device modes, with a codec inside the call and one completing
/// later: the bytes read are the shadow's, and the pm file stores exactly the chunks
/// that hold data.
#[test]
fn whole_chunks_round_trip_through_buffers_of_any_shape() {
    for mode in MODES {
        for codec in [CodecKind::Zstd, CodecKind::test(Mode::Deferred)] {
            let deferred_codec = matches!(codec, CodecKind::Test(_));
            let rig = Rig::new(GEO, mode, codec);
            let vol = rig.init();
            let mut shadow = Shadow::new(GEO);
            let mut rng = Rng::new(9);
            let mut chunk = 0;
            for data in contents(&mut rng) {
                for chunks in [1, 2] {
                    let data = data.repeat(chunks);
                    for lens in shapes(&mut rng, data.len()) {
                        let offset = chunk * BPC;
                        write_segs(&rig, &vol, offset, cut(&data, &lens)).unwrap();
                        shadow.write(offset, &data);
                        let back =
                            read_segs(&rig, &vol, offset, cut(&vec![0xA5; data.len()], &lens));
                        assert_eq!(
                            back.unwrap().concat(),
                            data,
                            "{mode:?}, deferred codec {deferred_codec}, segments {lens:?}"
                        );
                        chunk = (chunk + chunks as u64) % (GEO.chunks - 1);
                    }
                }
            }
            shadow.verify(&rig, &vol);
            let stored = rig.geo.pm().stored(&rig.pm_persisted());
            let chunks: Vec<u64> = stored.iter().map(|s| s.chunk).collect();
            assert_eq!(chunks, shadow.nonzero_chunks(GEO.chunk));
            check_stats(&vol, GEO, &stored);
            rig.unload(&vol).unwrap();
        }
    }
}

/// Which calls go straight to the caller's buffer: exactly the whole-chunk pieces whose
/// buffer is one segment (each chunk of a two-chunk request in one segment too).
#[test]
fn only_whole_chunks_in_one_segment_use_the_callers_buffer() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let spy = Spy::default();
        let vol = init_with(&rig, Box::new(spy.clone()));
        let mut rng = Rng::new(3);
        let data = text(5, 2 * CHUNK);

        // One segment over two chunks: each chunk compressed from its own half of it.
        let segs = vec![data.clone()];
        let base = segs[0].as_ptr() as usize;
        let segs = write_segs(&rig, &vol, 0, segs).unwrap();
        assert_eq!(segs[0].as_ptr() as usize, base);
        let now = |compress, user| Call::Now { compress, user };
        assert_eq!(spy.take(), [now(true, base), now(true, base + CHUNK)]);
        let reads = vec![vec![0; 2 * CHUNK]];
        let base = reads[0].as_ptr() as usize;
        let reads = read_segs(&rig, &vol, 0, reads).unwrap();
        assert_eq!(reads.concat(), data);
        assert_eq!(spy.take(), [now(false, base), now(false, base + CHUNK)]);

        // Several segments, or part of a chunk: through the volume's buffers. Such a
        // write leaves the chunk in the cache, so reading it back needs no codec;
        // dropped (resizing), it is decompressed into the volume's buffer.
        let lens = [CHUNK / 2, CHUNK / 2];
        write_segs(&rig, &vol, 0, cut(&data[..CHUNK], &lens)).unwrap();
        assert_eq!(spy.take(), [Call::Later { compress: true }]);
        let back = read_segs(&rig, &vol, 0, cut(&[0; CHUNK], &lens)).unwrap();
        assert_eq!(back.concat(), data[..CHUNK]);
        assert_eq!(spy.take(), []);
        vol.set_cache_chunks(8).unwrap();
        let back = read_segs(&rig, &vol, 0, cut(&[0; CHUNK], &lens)).unwrap();
        assert_eq!(back.concat(), data[..CHUNK]);
        assert_eq!(spy.take(), [Call::Later { compress: false }]);
        // The read through the volume's buffers filled the chunk cache: part of the
        // chunk again needs no codec at all.
        let back = read_segs(&rig, &vol, 1, vec![vec![0; 512]]).unwrap();
        assert_eq!(back.concat(), data[512..1024]);
        assert_eq!(spy.take(), []);

        // A random chunk is refused by the probe and stored raw from a copy; a raw chunk
        // is read without the codec.
        let random = rng.bytes(CHUNK);
        write_segs(&rig, &vol, BPC * 3, vec![random.clone()]).unwrap();
        assert!(matches!(spy.take()[..], [Call::Now { compress: true, .. }]));
        assert_eq!(
            read_segs(&rig, &vol, BPC * 3, vec![vec![0; CHUNK]]).unwrap()[0],
            random
        );
        assert_eq!(spy.take(), []);
        assert_eq!(vol.stats().chunks_raw, 1);
        rig.unload(&vol).unwrap();
    }
}

/// A decompress into the caller's buffer that fails, or gives the wrong size, fails the
/// read with `EIO` (whatever it left in the buffer is not reported as data), and the
/// chunk still reads back whole afterwards.
#[test]
fn a_failed_decompress_into_the_callers_buffer_is_eio() {
    for mode in MODES {
        let rig = Rig::new(GEO, mode, CodecKind::Zstd);
        let spy = Spy::default();
        let vol = init_with(&rig, Box::new(spy.clone()));
        let data = text(8, CHUNK);
        rig.write(&vol, BPC, &data).unwrap();
        let failures = [
            Err(Errno::EINVAL.into()),
            Ok(CHUNK - 1),
            Err(Error::new(Errno::EIO, "corrupt frame")),
        ];
        for failure in failures {
            spy.fail_now.set(Some(failure.clone()));
            let r = read_segs(&rig, &vol, BPC, vec![vec![0; CHUNK]]);
            assert_eq!(errno_of(r), Errno::EIO, "{mode:?}, {failure:?}");
            assert!(spy.fail_now.take().is_none(), "the read went another way");
            assert_eq!(rig.read_chunk(&vol, 1).unwrap(), data);
        }
        assert_eq!(vol.stats().errors, 3);
        assert_eq!(vol.info().outstanding, 0);
        rig.unload(&vol).unwrap();
    }
}
