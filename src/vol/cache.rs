//! The plain contents of recently read or written chunks, so that a chunk read or
//! written in pieces (4 KiB reads or writes of a 16 KiB chunk) is read and decompressed
//! once.
//!
//! An entry names the chunk map its content is stored in, and is used only while the
//! logical map names that one. It is filled by a read that passed its checksum and
//! decompressed to a whole chunk, or by a write whose new content is in its buffer,
//! once the device has written it: under its NEW chunk map, before the group commits.
//! It cannot serve stale data:
//!
//! - Requests sharing a chunk run one at a time (see `split.rs`), and a write or unmap
//!   takes the chunk's entry out when it starts (a clear, its run's), whatever then
//!   happens to it.
//! - A written entry: until its group commits, the logical map names the old chunk map
//!   (the request is outstanding, so nothing reads the chunk meanwhile anyway). If the
//!   group fails, or the write's step panics before the commit (`Engine::recover`),
//!   the logical map keeps the old one and the new one is freed: the entry never
//!   matches. The freed index may be taken again, but only by a write to another chunk
//!   (the entry is keyed by chunk too) or by a write to this chunk, which takes the
//!   entry out as it starts. A panic after the commit leaves the new map the chunk's,
//!   and the entry holds what it stores.
//! - A chunk left all zeros is cleared, never written: nothing fills it.
//!
//! Replacement is first in, first out with a second chance (CLOCK as a queue): the
//! entry filled longest ago goes, unless it was hit since, when it goes to the back
//! instead. A write's entry thus outlasts the fills of the other writes in flight
//! until the next write of its chunk takes it, and the entries of chunks no longer
//! written, filled before them, go first (with slots reused in place, an entry could
//! land just ahead of the hand and go at the next fill: a sequential writer at queue
//! depth 32 read 3 chunks in 4 twice). Lookup is a hash map; both are O(1) (the queue
//! amortized).
//! The cache allocates and copies nothing: a filling piece's buffer trades places with
//! the one the cache no longer needs (see [`ChunkCache::fill`]).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use smallvec::SmallVec;

/// The cache's default budget in bytes: the number of chunks is this over the chunk
/// size, at most [`DEFAULT_CHUNKS`] and at least one.
const DEFAULT_BYTES: usize = 256 << 10;

/// Chunks kept by default: one serves a sequential reader; a few serve several
/// interleaved streams or reads near one another; a sequential writer of 4 KiB blocks
/// at queue depth 32 has 8 chunks in flight, each waiting for its group, and their
/// entries must outlast one another's fills (`make bench`: 8 chunks kept 2 in 3 of
/// them there, 16 all). 16 chunks of the usual 16 KiB are 256 KiB, well within what
/// an idle volume may hold.
const DEFAULT_CHUNKS: usize = 16;

struct Entry {
    /// The chunk map it was read from.
    index: u64,
    plain: Vec<u8>,
    /// Its record in the queue: records with another number are stale.
    seq: u64,
    /// Hit since it was (re)queued.
    hit: bool,
}

pub(crate) struct ChunkCache {
    capacity: usize,
    /// Logical chunk ↦ its entry.
    entries: HashMap<u64, Entry>,
    /// The entries in the order they were filled (or given their second chance): a
    /// chunk and the `seq` it was queued with. A record whose entry was taken out,
    /// refilled or requeued since is stale, skipped when met and dropped when the queue
    /// is compacted.
    queue: VecDeque<(u64, u64)>,
    next_seq: u64,
    /// Reads (and read halves of a write or unmap) served from the cache since load.
    pub(crate) hits: u64,
}

impl ChunkCache {
    /// An empty cache with the default budget for chunks of `chunk_size` bytes.
    pub(crate) fn new(chunk_size: usize) -> ChunkCache {
        ChunkCache::with_capacity((DEFAULT_BYTES / chunk_size).clamp(1, DEFAULT_CHUNKS), 0)
    }

    fn with_capacity(capacity: usize, hits: u64) -> ChunkCache {
        ChunkCache {
            capacity,
            // Room for twice the entries: the table then rehashes in place as
            // replacements leave tombstones, and never grows (or allocates) once made.
            entries: HashMap::with_capacity(2 * capacity),
            queue: VecDeque::new(),
            next_seq: 0,
            hits,
        }
    }

    /// Keeps at most `chunks` chunks (0: none). Drops what it holds: resizing is rare,
    /// and the memory goes back at once.
    pub(crate) fn resize(&mut self, chunks: usize) {
        *self = ChunkCache::with_capacity(chunks, self.hits);
    }

    /// Chunk `chunk`'s content, if cached from chunk map `index`; counts a hit.
    pub(crate) fn get(&mut self, chunk: u64, index: u64) -> Option<&[u8]> {
        let entry = self.entries.get_mut(&chunk)?;
        if entry.index != index {
            return None;
        }
        entry.hit = true;
        self.hits += 1;
        Some(&entry.plain)
    }

    /// Takes chunk `chunk`'s entry out (a write or unmap of it starts): its content if
    /// it was cached from chunk map `index` (counted as a hit), else `None`, the stale
    /// entry's buffer going to `spares`.
    pub(crate) fn take(
        &mut self,
        chunk: u64,
        index: Option<u64>,
        spares: &mut Vec<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let entry = self.entries.remove(&chunk)?;
        if Some(entry.index) == index {
            self.hits += 1;
            return Some(entry.plain);
        }
        spares.push(entry.plain);
        None
    }

    /// Takes out the entries of chunks in `chunks` (a write or unmap replaces them);
    /// their buffers go to `spares`, for the volume's next requests.
    pub(crate) fn forget(&mut self, chunks: Range<u64>, spares: &mut Vec<Vec<u8>>) {
        // By chunk when the range is short (a write's one chunk), else by entry.
        let gone: SmallVec<[u64; 16]> = if chunks.end - chunks.start <= self.entries.len() as u64 {
            chunks.collect()
        } else {
            let keys = self.entries.keys().copied();
            keys.filter(|c| chunks.contains(c)).collect()
        };
        for chunk in gone {
            spares.extend(self.entries.remove(&chunk).map(|entry| entry.plain));
        }
    }

    /// Keeps `plain`, chunk `chunk`'s content under chunk map `index`, last in the
    /// queue: in place of the chunk's own entry, else of the one the queue gives up
    /// when the cache is full. The buffer trades places, never its bytes: returned is
    /// the one the cache no longer needs (the replaced entry's, of the same size;
    /// `plain` itself when the cache is off), or none while it grows.
    pub(crate) fn fill(&mut self, chunk: u64, index: u64, plain: Vec<u8>) -> Option<Vec<u8>> {
        if self.capacity == 0 {
            return Some(plain);
        }
        let replaced = match self.entries.remove(&chunk) {
            Some(own) => Some(own.plain),
            None if self.entries.len() < self.capacity => None,
            None => {
                let victim = self.victim();
                self.entries.remove(&victim).map(|entry| entry.plain)
            }
        };
        let seq = self.enqueue(chunk);
        self.entries.insert(
            chunk,
            Entry {
                index,
                plain,
                seq,
                hit: false,
            },
        );
        replaced
    }

    /// Queues `chunk` last; returns its record's number. The queue is compacted once
    /// stale records outnumber the entries, so it stays within twice the capacity.
    fn enqueue(&mut self, chunk: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((chunk, seq));
        if self.queue.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.queue
                .retain(|(c, s)| c == &chunk || entries.get(c).is_some_and(|e| e.seq == *s));
        }
        seq
    }

    /// The chunk whose entry goes: the first in the queue not hit since it was queued.
    /// One that was hit goes to the back instead (its second chance). The cache is
    /// full and not empty.
    fn victim(&mut self) -> u64 {
        loop {
            let (chunk, seq) = self
                .queue
                .pop_front()
                .expect("every entry has its record in the queue");
            let Some(entry) = self.entries.get_mut(&chunk) else {
                continue;
            };
            if entry.seq != seq {
                continue;
            }
            if !std::mem::take(&mut entry.hit) {
                return chunk;
            }
            let seq = self.enqueue(chunk);
            if let Some(entry) = self.entries.get_mut(&chunk) {
                entry.seq = seq;
            }
        }
    }

    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkCache;

    fn chunk(n: u8) -> Vec<u8> {
        vec![n; 16]
    }

    /// Fills with chunk `n`'s content; a buffer handed back has its size.
    fn fill(c: &mut ChunkCache, chunk: u64, index: u64, n: u8) {
        if let Some(back) = c.fill(chunk, index, self::chunk(n)) {
            assert_eq!(back.len(), 16);
        }
    }

    #[test]
    fn default_budget_is_bounded_in_bytes() {
        assert_eq!(ChunkCache::new(16 << 10).capacity, 16);
        assert_eq!(ChunkCache::new(64 << 10).capacity, 4);
        assert_eq!(ChunkCache::new(16 << 20).capacity, 1);
        assert_eq!(ChunkCache::new(4 << 10).capacity, 16);
    }

    #[test]
    fn an_entry_matches_only_its_chunk_map() {
        let mut c = ChunkCache::new(16);
        c.resize(2);
        fill(&mut c, 1, 10, 1);
        assert_eq!(c.get(1, 10), Some(&chunk(1)[..]));
        assert_eq!(c.get(1, 11), None);
        assert_eq!(c.get(2, 10), None);
        assert_eq!(c.hits, 1);
        // Taken out whatever the index; content only for the right one, the stale
        // buffer to the spares.
        let mut spares = Vec::new();
        assert_eq!(c.take(1, Some(11), &mut spares), None);
        assert_eq!(spares, [chunk(1)]);
        assert_eq!(c.get(1, 10), None);
        fill(&mut c, 1, 10, 1);
        assert_eq!(c.take(1, Some(10), &mut spares), Some(chunk(1)));
        assert_eq!(c.take(1, Some(10), &mut spares), None);
        assert_eq!(spares.len(), 1);
        assert_eq!(c.hits, 2);
    }

    #[test]
    fn clock_keeps_what_was_hit() {
        let mut c = ChunkCache::new(16);
        c.resize(2);
        fill(&mut c, 1, 1, 1);
        fill(&mut c, 2, 2, 2);
        assert!(c.get(1, 1).is_some());
        fill(&mut c, 3, 3, 3);
        assert!(c.get(2, 2).is_none(), "the entry not hit goes");
        assert_eq!(c.get(1, 1), Some(&chunk(1)[..]));
        assert_eq!(c.get(3, 3), Some(&chunk(3)[..]));
        // Refilling a chunk replaces its entry, never duplicates it.
        fill(&mut c, 3, 4, 4);
        assert_eq!(c.get(3, 3), None);
        assert_eq!(c.get(3, 4), Some(&chunk(4)[..]));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_entry_filled_longest_ago_goes_first() {
        let mut c = ChunkCache::new(16);
        c.resize(3);
        for n in 1..=3 {
            fill(&mut c, u64::from(n), 0, n);
        }
        // A write takes 2 out; 4 takes its room, later than 1 and 3.
        assert_eq!(c.take(2, Some(0), &mut Vec::new()), Some(chunk(2)));
        fill(&mut c, 4, 0, 4);
        fill(&mut c, 5, 0, 5);
        assert!(c.get(1, 0).is_none(), "1 was filled first");
        fill(&mut c, 6, 0, 6);
        assert!(c.get(3, 0).is_none(), "then 3");
        for n in 4..=6 {
            assert_eq!(c.get(n, 0), Some(&chunk(n as u8)[..]), "{n} stays");
        }
        // The queue of records stays bounded however many fills and takes there are.
        for n in 0..1000 {
            fill(&mut c, 10 + n % 7, n, 1);
            c.take(10 + (n + 3) % 7, None, &mut Vec::new());
        }
        assert!(c.queue.len() <= 2 * 3 + 1, "{} records", c.queue.len());
    }

    #[test]
    fn forget_removes_a_range_and_keeps_places_right() {
        let mut c = ChunkCache::new(16);
        c.resize(4);
        for n in 0..4 {
            fill(&mut c, u64::from(n), 0, n);
        }
        let mut spares = Vec::new();
        c.forget(1..3, &mut spares);
        assert_eq!(spares, [chunk(1), chunk(2)]);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(0, 0), Some(&chunk(0)[..]));
        assert_eq!(c.get(3, 0), Some(&chunk(3)[..]));
        assert!(c.get(1, 0).is_none() && c.get(2, 0).is_none());
        // A range longer than the cache holds, by entry.
        c.forget(0..1000, &mut spares);
        assert_eq!(c.len(), 0);
        spares.sort();
        assert_eq!(spares, [chunk(0), chunk(1), chunk(2), chunk(3)]);
    }

    #[test]
    fn fill_trades_buffers() {
        let mut c = ChunkCache::new(16);
        c.resize(2);
        assert_eq!(c.fill(1, 1, chunk(1)), None, "it grows");
        assert_eq!(c.fill(2, 2, chunk(2)), None, "it grows");
        assert_eq!(
            c.fill(1, 3, chunk(3)),
            Some(chunk(1)),
            "the chunk's own entry"
        );
        assert_eq!(c.fill(4, 4, chunk(4)), Some(chunk(2)), "the hand's pick");
        assert_eq!(c.get(1, 3), Some(&chunk(3)[..]));
        assert_eq!(c.get(4, 4), Some(&chunk(4)[..]));
        c.resize(0);
        assert_eq!(
            c.fill(5, 5, chunk(5)),
            Some(chunk(5)),
            "off: the buffer itself"
        );
    }

    #[test]
    fn size_zero_keeps_nothing() {
        let mut c = ChunkCache::new(16);
        c.resize(0);
        fill(&mut c, 1, 1, 1);
        assert!(c.get(1, 1).is_none());
        assert_eq!(c.len(), 0);
    }
}
