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
//! Replacement is CLOCK: a hit sets an entry's bit, the hand clears bits until it finds
//! an entry without one. Lookup is a hash map; both are O(1) (the hand amortized).
//! The cache allocates and copies nothing: a filling piece's buffer trades places with
//! the one the cache no longer needs (see [`ChunkCache::fill`]).

use std::collections::HashMap;

/// The cache's default budget in bytes: the number of chunks is this over the chunk
/// size, at most [`DEFAULT_CHUNKS`] and at least one.
const DEFAULT_BYTES: usize = 256 << 10;

/// Chunks kept by default: one serves a sequential reader; a few serve several
/// interleaved streams or reads near one another. 8 chunks of the usual 16 KiB are
/// 128 KiB, well within what an idle volume may hold.
const DEFAULT_CHUNKS: usize = 8;

struct Entry {
    chunk: u64,
    /// The chunk map it was read from.
    index: u64,
    plain: Vec<u8>,
    /// Hit since the hand last passed.
    referenced: bool,
}

pub(crate) struct ChunkCache {
    capacity: usize,
    entries: Vec<Entry>,
    /// Logical chunk ↦ its place in `entries`.
    places: HashMap<u64, usize>,
    hand: usize,
    /// Reads (and read halves of a write or unmap) served from the cache since load.
    pub(crate) hits: u64,
}

impl ChunkCache {
    /// An empty cache with the default budget for chunks of `chunk_size` bytes.
    pub(crate) fn new(chunk_size: usize) -> ChunkCache {
        ChunkCache {
            capacity: (DEFAULT_BYTES / chunk_size).clamp(1, DEFAULT_CHUNKS),
            entries: Vec::new(),
            places: HashMap::new(),
            hand: 0,
            hits: 0,
        }
    }

    /// Keeps at most `chunks` chunks (0: none). Drops what it holds: resizing is rare,
    /// and the memory goes back at once.
    pub(crate) fn resize(&mut self, chunks: usize) {
        *self = ChunkCache {
            capacity: chunks,
            entries: Vec::new(),
            places: HashMap::new(),
            hand: 0,
            hits: self.hits,
        };
    }

    /// Chunk `chunk`'s content, if cached from chunk map `index`; counts a hit.
    pub(crate) fn get(&mut self, chunk: u64, index: u64) -> Option<&[u8]> {
        let entry = &mut self.entries[*self.places.get(&chunk)?];
        if entry.index != index {
            return None;
        }
        entry.referenced = true;
        self.hits += 1;
        Some(&entry.plain)
    }

    /// Takes chunk `chunk`'s entry out (a write or unmap of it starts): its content if
    /// it was cached from chunk map `index` (counted as a hit), else `None`.
    pub(crate) fn take(&mut self, chunk: u64, index: Option<u64>) -> Option<Vec<u8>> {
        let entry = self.remove(*self.places.get(&chunk)?);
        (Some(entry.index) == index).then(|| {
            self.hits += 1;
            entry.plain
        })
    }

    /// Takes out the entries of chunks in `chunks` (an unmap empties them).
    pub(crate) fn forget(&mut self, chunks: std::ops::Range<u64>) {
        let mut at = 0;
        while at < self.entries.len() {
            if chunks.contains(&self.entries[at].chunk) {
                self.remove(at);
            } else {
                at += 1;
            }
        }
    }

    /// Keeps `plain`, chunk `chunk`'s content under chunk map `index`, in place of the
    /// entry the hand picks when the cache is full. The buffer trades places, never its
    /// bytes: returned is the one the cache no longer needs (the replaced entry's, of
    /// the same size; `plain` itself when the cache is off), or none while it grows.
    pub(crate) fn fill(&mut self, chunk: u64, index: u64, plain: Vec<u8>) -> Option<Vec<u8>> {
        if self.capacity == 0 {
            return Some(plain);
        }
        // A chunk's entry is replaced, never duplicated; its buffer goes back.
        let old = self
            .places
            .get(&chunk)
            .copied()
            .map(|at| self.remove(at).plain);
        if self.entries.len() < self.capacity {
            self.places.insert(chunk, self.entries.len());
            self.entries.push(Entry {
                chunk,
                index,
                plain,
                referenced: false,
            });
            return old;
        }
        let at = self.victim();
        let entry = &mut self.entries[at];
        let replaced = std::mem::replace(&mut entry.plain, plain);
        self.places.remove(&entry.chunk);
        entry.chunk = chunk;
        entry.index = index;
        entry.referenced = false;
        self.places.insert(chunk, at);
        Some(replaced)
    }

    /// The entry to replace: the first without its bit from the hand on, clearing the
    /// bits it passes. The cache is full and not empty.
    fn victim(&mut self) -> usize {
        loop {
            self.hand %= self.entries.len();
            let entry = &mut self.entries[self.hand];
            if !std::mem::take(&mut entry.referenced) {
                return self.hand;
            }
            self.hand += 1;
        }
    }

    /// Removes the entry at `at`; the last one moves into its place.
    fn remove(&mut self, at: usize) -> Entry {
        let entry = self.entries.swap_remove(at);
        self.places.remove(&entry.chunk);
        if let Some(moved) = self.entries.get(at) {
            self.places.insert(moved.chunk, at);
        }
        entry
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
        assert_eq!(ChunkCache::new(16 << 10).capacity, 8);
        assert_eq!(ChunkCache::new(64 << 10).capacity, 4);
        assert_eq!(ChunkCache::new(16 << 20).capacity, 1);
        assert_eq!(ChunkCache::new(4 << 10).capacity, 8);
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
        // Taken out whatever the index; content only for the right one.
        assert_eq!(c.take(1, Some(11)), None);
        assert_eq!(c.get(1, 10), None);
        fill(&mut c, 1, 10, 1);
        assert_eq!(c.take(1, Some(10)), Some(chunk(1)));
        assert_eq!(c.take(1, Some(10)), None);
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
        assert_eq!(c.entries.len(), 2);
    }

    #[test]
    fn forget_removes_a_range_and_keeps_places_right() {
        let mut c = ChunkCache::new(16);
        c.resize(4);
        for n in 0..4 {
            fill(&mut c, u64::from(n), 0, n);
        }
        c.forget(1..3);
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.get(0, 0), Some(&chunk(0)[..]));
        assert_eq!(c.get(3, 0), Some(&chunk(3)[..]));
        assert!(c.get(1, 0).is_none() && c.get(2, 0).is_none());
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
        assert!(c.entries.is_empty());
    }
}
