//! [`Volume::check`]: the checker's metadata audit, then every chunk in use read back
//! through the ordinary read path, which verifies checksums and decompression (the
//! audit empties the cache first, so those reads come from the device).

use std::cell::RefCell;
use std::rc::Rc;

use super::{Op, UserIo, Volume};
use crate::check::{Problem, Report};
use crate::error::Result;

type ReportCallback = Box<dyn FnOnce(Result<Report>)>;

/// A check in progress: the report so far and the reads still out.
struct Run {
    report: Report,
    remaining: usize,
    cb: Option<ReportCallback>,
}

/// A whole-chunk read whose data is only verified, never kept.
struct Probe {
    chunk: u64,
    len: usize,
    run: Rc<RefCell<Run>>,
}

impl UserIo for Probe {
    fn len(&self) -> usize {
        self.len
    }

    fn gather(&self, _offset: usize, _dst: &mut [u8]) {}

    fn scatter(&mut self, _offset: usize, _src: &[u8]) {}

    fn complete(self: Box<Self>, result: Result<()>) {
        let finished = {
            let mut run = self.run.borrow_mut();
            match result {
                Ok(()) => run.report.chunks_read += 1,
                Err(e) => run.report.add(Problem::Unreadable {
                    chunk: self.chunk,
                    errno: e.negated(),
                }),
            }
            run.remaining -= 1;
            (run.remaining == 0).then(|| (run.cb.take(), std::mem::take(&mut run.report)))
        };
        if let Some((Some(cb), report)) = finished {
            cb(Ok(report));
        }
    }
}

impl Volume {
    /// Checks the volume: map entries in range, each chunk map and io unit referenced
    /// once, the free maps marking exactly what is referenced, and every chunk in use
    /// reading back (checksum, decompression). `EBUSY` while requests are outstanding.
    /// Problems go in the report; the volume is left as it was, but for chunk maps held
    /// after failed commits, which it frees if their entries now persist.
    pub fn check(&self, cb: impl FnOnce(Result<Report>) + 'static) {
        let audit = self.shared.core.borrow_mut().audit();
        let (report, chunks) = match audit {
            Ok(audit) => audit,
            Err(e) => return cb(Err(e)),
        };
        if chunks.is_empty() {
            return cb(Ok(report));
        }
        let params = self.params();
        let blocks = u64::from(params.chunk_size / params.logical_block_size);
        let run = Rc::new(RefCell::new(Run {
            report,
            remaining: chunks.len(),
            cb: Some(Box::new(cb)),
        }));
        for chunk in chunks {
            let probe = Probe {
                chunk,
                len: params.chunk_size as usize,
                run: Rc::clone(&run),
            };
            self.post_submit(Op::Read, chunk * blocks, blocks, Box::new(probe), false);
        }
    }
}
