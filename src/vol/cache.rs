//! The plain contents of recently read chunks, so that a chunk read in pieces (4 KiB
//! reads of a 16 KiB chunk) is read and decompressed once.
//!
//! An entry is only ever filled from a read that passed its checksum and decompressed
//! to a whole chunk, and names the chunk map it was read from. It cannot go stale:
//! requests sharing a chunk run one at a time (see `split.rs`), and a write or unmap
//! takes the chunk's entry out when it starts, whatever then happens to it (committed,
//! failed, or failed by a panic). The chunk map index is checked too: after a commit
//! the chunk names a new one, so an entry missed by a bug would not match (a freed
//! index can be taken again, which is why removal at the start is the rule).
//!
//! Replacement is CLOCK: a hit sets an entry's bit, the hand clears bits until it finds
//! an entry without one. Lookup is a hash map; both are O(1) (the hand amortized).
//! Buffers are allocated only as entries are filled, and reused when one is replaced.

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

    /// Keeps `plain`, chunk `chunk`'s content as read from chunk map `index`, in place
    /// of the entry the hand picks when the cache is full. Then the buffers trade
    /// places instead of bytes: `plain` comes back holding the replaced entry's, of the
    /// same size.
    pub(crate) fn fill(&mut self, chunk: u64, index: u64, plain: &mut Vec<u8>) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&at) = self.places.get(&chunk) {
            self.remove(at);
        }
        if self.entries.len() < self.capacity {
            self.places.insert(chunk, self.entries.len());
            return self.entries.push(Entry {
                chunk,
                index,
                plain: plain.clone(),
                referenced: false,
            });
        }
        let at = self.victim();
        let entry = &mut self.entries[at];
        std::mem::swap(&mut entry.plain, plain);
        self.places.remove(&entry.chunk);
        entry.chunk = chunk;
        entry.index = index;
        entry.referenced = false;
        self.places.insert(chunk, at);
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

    /// Fills with chunk `n`'s content; the buffer handed back has its size.
    fn fill(c: &mut ChunkCache, chunk: u64, index: u64, n: u8) {
        let mut plain = self::chunk(n);
        c.fill(chunk, index, &mut plain);
        assert_eq!(plain.len(), 16);
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
    fn size_zero_keeps_nothing() {
        let mut c = ChunkCache::new(16);
        c.resize(0);
        fill(&mut c, 1, 1, 1);
        assert!(c.get(1, 1).is_none());
        assert!(c.entries.is_empty());
    }
}
