//! The durability clock of the test doubles: an ordered record of everything that
//! could reach stable storage — pm writes and persists, backing writes submitted and
//! completed — and of marks a test makes (a write acknowledged). Replaying a prefix
//! gives the images a power loss at that instant could leave, so a test can cut the
//! power at every point of a workload, including between two persists of one step.
//!
//! Two images per instant bound what a crash may leave: `Durable` keeps only persisted
//! pm ranges and completed backing writes; `Landed` also lets every pm write and every
//! backing write already submitted reach the media (a kernel flushing dirty pages, a
//! device that wrote but had not yet reported).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

/// One step on the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A pm file was created, `len` bytes of zeros.
    PmCreate {
        path: PathBuf,
        len: usize,
    },
    PmRemove {
        path: PathBuf,
    },
    /// Bytes written into a mapped pm file (not yet durable).
    PmWrite {
        path: PathBuf,
        offset: usize,
        bytes: Vec<u8>,
    },
    /// A persisted range of a pm file: durable from here on.
    PmPersist {
        path: PathBuf,
        offset: usize,
        len: usize,
    },
    /// A backing write handed to the device, as (byte offset, bytes) runs.
    WriteSubmitted {
        id: u64,
        runs: Vec<(usize, Vec<u8>)>,
    },
    /// That write reported success: durable from here on.
    WriteCompleted {
        id: u64,
    },
    /// A test's own marker.
    Mark(u64),
}

/// Which crash image to build from a prefix of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Only what was persisted or completed survives.
    Durable,
    /// Everything written or submitted survives too.
    Landed,
}

/// The images a crash leaves: the backing device and every pm file.
#[derive(Clone, Debug, Default)]
pub struct Images {
    pub backing: Vec<u8>,
    pub pm: BTreeMap<PathBuf, Vec<u8>>,
}

/// A shared, append-only clock. Clones record into the same journal.
#[derive(Clone, Default)]
pub struct Journal {
    entries: Rc<RefCell<Vec<Entry>>>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal::default()
    }

    pub fn push(&self, entry: Entry) {
        self.entries.borrow_mut().push(entry);
    }

    pub fn mark(&self, mark: u64) {
        self.push(Entry::Mark(mark));
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.borrow().clone()
    }

    /// The images a power loss after the first `upto` entries leaves, starting from
    /// `start` (the state when recording began).
    pub fn replay(&self, start: &Images, upto: usize, crash: Crash) -> Images {
        let entries = self.entries.borrow();
        let mut out = start.clone();
        // What each pm file holds in memory (written, maybe not persisted).
        let mut current = start.pm.clone();
        let mut submitted: BTreeMap<u64, &[(usize, Vec<u8>)]> = BTreeMap::new();
        let apply = |image: &mut Vec<u8>, runs: &[(usize, Vec<u8>)]| {
            for (offset, bytes) in runs {
                image[*offset..offset + bytes.len()].copy_from_slice(bytes);
            }
        };
        for entry in &entries[..upto] {
            match entry {
                Entry::PmCreate { path, len } => {
                    current.insert(path.clone(), vec![0; *len]);
                    out.pm.insert(path.clone(), vec![0; *len]);
                }
                Entry::PmRemove { path } => {
                    current.remove(path);
                    out.pm.remove(path);
                }
                Entry::PmWrite {
                    path,
                    offset,
                    bytes,
                } => {
                    if let Some(image) = current.get_mut(path) {
                        image[*offset..offset + bytes.len()].copy_from_slice(bytes);
                    }
                }
                Entry::PmPersist { path, offset, len } => {
                    if let (Some(from), Some(to)) = (current.get(path), out.pm.get_mut(path)) {
                        to[*offset..offset + len].copy_from_slice(&from[*offset..offset + len]);
                    }
                }
                Entry::WriteSubmitted { id, runs } => {
                    submitted.insert(*id, runs);
                }
                Entry::WriteCompleted { id } => {
                    if let Some(runs) = submitted.remove(id) {
                        apply(&mut out.backing, runs);
                    }
                }
                Entry::Mark(_) => {}
            }
        }
        if crash == Crash::Landed {
            for runs in submitted.values() {
                apply(&mut out.backing, runs);
            }
            for (path, image) in current {
                if out.pm.contains_key(&path) {
                    out.pm.insert(path, image);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_only_what_was_durable_unless_landed() {
        let j = Journal::new();
        let p = PathBuf::from("pm");
        j.push(Entry::PmCreate {
            path: p.clone(),
            len: 4,
        });
        j.push(Entry::PmWrite {
            path: p.clone(),
            offset: 0,
            bytes: vec![1, 2],
        });
        j.push(Entry::PmPersist {
            path: p.clone(),
            offset: 0,
            len: 1,
        });
        j.push(Entry::WriteSubmitted {
            id: 7,
            runs: vec![(1, vec![9])],
        });
        let start = Images {
            backing: vec![0; 3],
            pm: BTreeMap::new(),
        };
        let durable = j.replay(&start, j.len(), Crash::Durable);
        assert_eq!(durable.pm[&p], [1, 0, 0, 0]);
        assert_eq!(durable.backing, [0, 0, 0]);
        let landed = j.replay(&start, j.len(), Crash::Landed);
        assert_eq!(landed.pm[&p], [1, 2, 0, 0]);
        assert_eq!(landed.backing, [0, 9, 0]);
        j.push(Entry::WriteCompleted { id: 7 });
        assert_eq!(j.replay(&start, j.len(), Crash::Durable).backing, [0, 9, 0]);
        assert!(j.replay(&start, 0, Crash::Durable).pm.is_empty());
    }
}
