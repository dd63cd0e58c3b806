//! Free-space maps: which chunk maps and which io units are in use. They live only in
//! memory; load rebuilds them from the logical map and the chunk maps it references.

use fixedbitset::FixedBitSet;

/// One bitmap with first-fit allocation. `hint` is at or below the lowest free bit, so
/// a search starts there instead of at 0 without changing which bit is chosen.
#[derive(Clone, Debug)]
pub struct FreeMap {
    used: FixedBitSet,
    hint: usize,
    in_use: usize,
}

impl FreeMap {
    /// A map whose used bits are `used`, `in_use` of them (counted by the caller as it
    /// set them, so that taking over a bitmap of millions of bits costs no pass).
    pub fn from_used(used: FixedBitSet, in_use: usize) -> FreeMap {
        debug_assert_eq!(used.count_ones(..), in_use);
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
        let bits = usize::BITS as usize;
        let blocks = self.used.as_slice();
        let first = self.hint / bits;
        let (offset, block) = blocks[first.min(blocks.len())..]
            .iter()
            .enumerate()
            .find(|(_, b)| **b != usize::MAX)?;
        let index = (first + offset) * bits + block.trailing_ones() as usize;
        if index >= self.used.len() {
            return None;
        }
        self.used.insert(index);
        self.in_use += 1;
        self.hint = index + 1;
        Some(index)
    }

    pub fn free(&mut self, index: usize) {
        debug_assert!(self.used.contains(index), "freeing a free index {index}");
        if self.used.contains(index) {
            self.used.set(index, false);
            self.in_use -= 1;
            self.hint = self.hint.min(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(len: usize) -> FreeMap {
        FreeMap::from_used(FixedBitSet::with_capacity(len), 0)
    }

    #[test]
    fn first_fit_reuses_the_lowest_free() {
        let mut used = FixedBitSet::with_capacity(130);
        used.insert_range(..2);
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
    fn empty_and_word_sized_maps() {
        assert_eq!(empty(0).alloc(), None);
        let mut m = empty(64);
        for i in 0..64 {
            assert_eq!(m.alloc(), Some(i));
        }
        assert_eq!(m.alloc(), None);
    }
}
