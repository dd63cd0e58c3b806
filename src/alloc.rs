//! Free-space maps: which chunk maps and which io units are in use. They live only in
//! memory; load rebuilds them from the logical map and the chunk maps it references.

/// A fixed number of bits, all clear to begin with. Its words come zeroed from the
/// allocator (calloc), not written, so the pages of a large map that is mostly clear
/// are never touched: a 1 TiB volume's 40 MiB of free maps cost no time to make and
/// resident memory only where bits are set.
#[derive(Clone, Debug)]
pub struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    pub fn new(len: usize) -> Bitmap {
        Bitmap {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether bit `index` is set (false beyond the end).
    pub fn contains(&self, index: usize) -> bool {
        index < self.len && self.words[index / 64] & (1 << (index % 64)) != 0
    }

    /// Sets bit `index` (which must be within the map) and says whether it was set
    /// already.
    pub fn put(&mut self, index: usize) -> bool {
        assert!(index < self.len, "bit {index} of {}", self.len);
        let word = &mut self.words[index / 64];
        let bit = 1 << (index % 64);
        let was = *word & bit != 0;
        *word |= bit;
        was
    }

    /// Clears bit `index` (within the map).
    pub fn clear(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    /// Sets bits `0..end` (`end` within the map).
    pub fn set_first(&mut self, end: usize) {
        assert!(end <= self.len, "{end} bits of {}", self.len);
        self.words[..end / 64].fill(u64::MAX);
        if end % 64 != 0 {
            self.words[end / 64] |= (1 << (end % 64)) - 1;
        }
    }

    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The lowest clear bit, for a caller that knows every bit below `from` is set:
    /// the search starts at the word holding `from`.
    fn first_clear(&self, from: usize) -> Option<usize> {
        let first = from / 64;
        let (offset, word) = self
            .words
            .get(first..)?
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let index = (first + offset) * 64 + word.trailing_ones() as usize;
        (index < self.len).then_some(index)
    }
}

/// One bitmap with first-fit allocation. `hint` is at or below the lowest free bit, so
/// a search starts there instead of at 0 without changing which bit is chosen.
#[derive(Clone, Debug)]
pub struct FreeMap {
    used: Bitmap,
    hint: usize,
    in_use: usize,
}

impl FreeMap {
    /// A map whose used bits are `used`, `in_use` of them (counted by the caller as it
    /// set them, so that taking over a bitmap of millions of bits costs no pass).
    pub fn from_used(used: Bitmap, in_use: usize) -> FreeMap {
        debug_assert_eq!(used.count_ones(), in_use);
        FreeMap {
            used,
            hint: 0,
            in_use,
        }
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn is_used(&self, index: usize) -> bool {
        self.used.contains(index)
    }

    /// The lowest free index, now marked used.
    pub fn alloc(&mut self) -> Option<usize> {
        let index = self.used.first_clear(self.hint)?;
        self.used.put(index);
        self.in_use += 1;
        self.hint = index + 1;
        Some(index)
    }

    pub fn free(&mut self, index: usize) {
        debug_assert!(self.used.contains(index), "freeing a free index {index}");
        if self.used.contains(index) {
            self.used.clear(index);
            self.in_use -= 1;
            self.hint = self.hint.min(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(len: usize) -> FreeMap {
        FreeMap::from_used(Bitmap::new(len), 0)
    }

    #[test]
    fn first_fit_reuses_the_lowest_free() {
        let mut used = Bitmap::new(130);
        used.set_first(2);
        let mut m = FreeMap::from_used(used, 2);
        let got: Vec<_> = (0..128).map(|_| m.alloc().unwrap()).collect();
        assert_eq!(got, (2..130).collect::<Vec<_>>());
        assert_eq!(m.alloc(), None);
        assert_eq!(m.in_use(), 130);
        m.free(70);
        m.free(5);
        assert_eq!(m.alloc(), Some(5));
        assert_eq!(m.alloc(), Some(70));
        assert_eq!(m.alloc(), None);
    }

    #[test]
    fn bitmap_bits_across_words() {
        let mut b = Bitmap::new(130);
        b.set_first(70);
        assert!((0..70).all(|i| b.contains(i)));
        assert!(!b.contains(70) && !b.contains(500));
        assert!(!b.put(129));
        assert!(b.put(129), "set already");
        b.clear(3);
        assert_eq!(b.count_ones(), 70, "69 of the first 70 and bit 129");
        assert_eq!(b.first_clear(0), Some(3));
        b.put(3);
        assert_eq!(b.first_clear(64), Some(70));
        b.set_first(130);
        assert_eq!(b.first_clear(0), None);
    }

    #[test]
    fn empty_and_word_sized_maps() {
        assert_eq!(empty(0).alloc(), None);
        let mut m = empty(64);
        for i in 0..64 {
            assert_eq!(m.alloc(), Some(i));
        }
        assert_eq!(m.alloc(), None);
    }
}
