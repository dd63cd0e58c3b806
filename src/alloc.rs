//! Free-space maps: which chunk maps and which io units are in use. They live only in
//! memory; load rebuilds them from the logical map and the chunk maps it references.

use std::ops::Range;

/// A fixed number of bits, all clear to begin with. Its words come zeroed from the
/// allocator (calloc), not written, so the pages of a large map that is mostly clear
/// are never touched: a 1 TiB volume's 40 MiB of free maps cost no time to make and
/// resident memory only where bits are set. A second map, a bit per word, marks the
/// words with a bit set, so a word of 64 clear bits is found without reading the
/// words before it.
#[derive(Clone, Debug)]
pub struct Bitmap {
    words: Vec<u64>,
    occupied: Vec<u64>,
    len: usize,
}

impl Bitmap {
    pub fn new(len: usize) -> Bitmap {
        let words = len.div_ceil(64);
        Bitmap {
            words: vec![0; words],
            occupied: vec![0; words.div_ceil(64)],
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
        self.occupied[index / 4096] |= 1 << (index / 64 % 64);
        was
    }

    /// Clears bit `index` (within the map) and says whether its word has no bit set
    /// now.
    pub fn clear(&mut self, index: usize) -> bool {
        let word = &mut self.words[index / 64];
        *word &= !(1 << (index % 64));
        let clear = *word == 0;
        if clear {
            self.occupied[index / 4096] &= !(1 << (index / 64 % 64));
        }
        clear
    }

    /// Sets bits `0..end` (`end` within the map).
    pub fn set_first(&mut self, end: usize) {
        assert!(end <= self.len, "{end} bits of {}", self.len);
        self.words[..end / 64].fill(u64::MAX);
        if end % 64 != 0 {
            self.words[end / 64] |= (1 << (end % 64)) - 1;
        }
        for word in 0..end.div_ceil(64) {
            self.occupied[word / 64] |= 1 << (word % 64);
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

    /// The lowest bit at or after `from` and before `limit` that is `set` (or clear,
    /// with `set` false).
    fn next(&self, from: usize, limit: usize, set: bool) -> Option<usize> {
        next_bit(&self.words, from, limit.min(self.len), set)
    }

    /// The lowest word at or after word `from` with no bit set.
    fn next_clear_word(&self, from: usize) -> Option<usize> {
        next_bit(&self.occupied, from, self.words.len(), false)
    }
}

/// The lowest bit of `words` at or after `from` and before `limit` that is `set` (or
/// clear, with `set` false), reading no word past `limit`'s.
fn next_bit(words: &[u64], from: usize, limit: usize, set: bool) -> Option<usize> {
    if from >= limit {
        return None;
    }
    let flip = if set { 0 } else { u64::MAX };
    let mut i = from / 64;
    // The first word without the bits below `from`.
    let mut word = (words[i] ^ flip) & (u64::MAX << (from % 64));
    while word == 0 {
        i += 1;
        if i * 64 >= limit {
            return None;
        }
        word = words[i] ^ flip;
    }
    let index = i * 64 + word.trailing_zeros() as usize;
    (index < limit).then_some(index)
}

/// How far [`FreeMap::alloc_run`] looks for a run near the lowest free index (first
/// fit): free runs too short it passes over, and indices past the lowest free one.
/// Past that it goes on where its last run taken past that search ended, while the
/// indices there are free, or else takes a word of 64 free indices (or a row of them,
/// for a longer run), found without a search; and only when there is none, the lowest
/// free indices one by one. A long search each time would cost more than the run
/// saves where overwrites have left many short runs.
const RUN_SEARCH_SHORT_RUNS: usize = 16;
const RUN_SEARCH_SPAN: usize = 4096;

/// One bitmap with first-fit allocation. `hint` is at or below the lowest free bit, so
/// a search starts there instead of at 0 without changing which bit is chosen;
/// `clear_word_hint` likewise for the lowest word of 64 free bits. `cursor` is where
/// the last run taken past the first-fit search ended.
#[derive(Clone, Debug)]
pub struct FreeMap {
    used: Bitmap,
    hint: usize,
    clear_word_hint: usize,
    cursor: usize,
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
            clear_word_hint: 0,
            cursor: 0,
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

    /// `count` contiguous free indices, now marked used, found as
    /// [`RUN_SEARCH_SHORT_RUNS`] says; `None` when there is no such run there (the
    /// caller then takes the lowest free indices one by one).
    pub fn alloc_run(&mut self, count: usize) -> Option<Range<usize>> {
        let len = self.len();
        let lowest = self.used.first_clear(self.hint)?;
        let limit = lowest.saturating_add(RUN_SEARCH_SPAN);
        let mut start = Some(lowest);
        for _ in 0..RUN_SEARCH_SHORT_RUNS {
            let Some(at) = start else { break };
            let end = self.used.next(at, len, true).unwrap_or(len);
            if end - at >= count {
                return Some(self.take(at, count, lowest));
            }
            start = self.used.next(end, limit, false);
        }
        let at = self.cursor;
        if at < len && !self.used.contains(at) {
            let end = self.used.next(at, len, true).unwrap_or(len);
            if end - at >= count {
                self.cursor = at + count;
                return Some(self.take(at, count, lowest));
            }
        }
        let mut word = self.clear_word_hint;
        for tried in 0..RUN_SEARCH_SHORT_RUNS {
            let Some(clear) = self.used.next_clear_word(word) else {
                if tried == 0 {
                    self.clear_word_hint = self.used.words.len();
                }
                return None;
            };
            if tried == 0 {
                self.clear_word_hint = clear;
            }
            let at = clear * 64;
            let end = self.used.next(at, len, true).unwrap_or(len);
            if end - at >= count {
                self.cursor = at + count;
                return Some(self.take(at, count, lowest));
            }
            word = end / 64 + 1;
        }
        None
    }

    /// Marks the free run `at..at + count` used; `lowest` is the lowest free index.
    fn take(&mut self, at: usize, count: usize, lowest: usize) -> Range<usize> {
        for index in at..at + count {
            self.used.put(index);
        }
        self.in_use += count;
        if at == lowest {
            self.hint = at + count;
        }
        at..at + count
    }

    pub fn free(&mut self, index: usize) {
        debug_assert!(self.used.contains(index), "freeing a free index {index}");
        if self.used.contains(index) {
            if self.used.clear(index) {
                self.clear_word_hint = self.clear_word_hint.min(index / 64);
            }
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

    /// The map's used bits as a string, `#` used and `.` free.
    fn picture(m: &FreeMap) -> String {
        (0..m.len())
            .map(|i| if m.is_used(i) { '#' } else { '.' })
            .collect()
    }

    fn from_picture(p: &str) -> FreeMap {
        let mut used = Bitmap::new(p.len());
        for (i, c) in p.chars().enumerate() {
            if c == '#' {
                used.put(i);
            }
        }
        FreeMap::from_used(used, p.matches('#').count())
    }

    #[test]
    fn a_run_near_the_lowest_free_index_is_the_first_long_enough() {
        let mut m = from_picture("#.#..#...##....#");
        assert_eq!(m.alloc_run(3), Some(6..9));
        assert_eq!(picture(&m), "#.#..######....#");
        assert_eq!(m.alloc_run(1), Some(1..2), "the lowest free");
        assert_eq!(m.alloc_run(2), Some(3..5));
        assert_eq!(m.alloc_run(5), None, "no run of 5");
        assert_eq!(m.alloc_run(4), Some(11..15));
        assert_eq!(picture(&m), "################");
        assert_eq!(m.in_use(), 16);
        assert_eq!(m.alloc_run(2), None);
        // Runs taken at the lowest free index move the hint past them; single indices
        // are still the lowest free.
        m.free(12);
        m.free(2);
        assert_eq!(m.alloc(), Some(2));
        assert_eq!(m.alloc(), Some(12));
    }

    #[test]
    fn past_the_first_fit_search_a_run_goes_where_the_last_one_ended_or_in_a_free_word() {
        // More short runs than the search passes over, in the first word; the next
        // word has a used bit; the two after are free.
        let mut p = "#.".repeat(RUN_SEARCH_SHORT_RUNS + 1);
        p.push_str(&"#".repeat(64 - p.len()));
        p.push_str(&format!("{}#", ".".repeat(63)));
        p.push_str(&".".repeat(128));
        let mut m = from_picture(&p);
        assert_eq!(m.alloc_run(3), Some(128..131), "a free word");
        assert_eq!(m.alloc_run(2), Some(131..133), "where the last run ended");
        assert_eq!(m.alloc_run(4), Some(133..137));
        // A run near the lowest free index is still taken first.
        m.free(2);
        assert_eq!(m.alloc_run(3), Some(1..4));
        // The rest of the word after the last run is too short: the next free word.
        let mut m = from_picture(&p[..64 * 3]);
        assert_eq!(m.alloc_run(60), Some(128..188));
        assert_eq!(
            m.alloc_run(5),
            None,
            "4 free after the last run, no free word"
        );
        assert_eq!(m.alloc_run(4), Some(188..192));
        // A run longer than a word takes a row of free words.
        let mut m = from_picture(&p);
        assert_eq!(m.alloc_run(100), Some(128..228));
        assert_eq!(m.alloc_run(100), None);
        assert_eq!(m.in_use(), p.matches('#').count() + 100);
    }

    #[test]
    fn free_words_are_tracked_as_bits_are_set_and_cleared() {
        let mut b = Bitmap::new(64 * 70);
        assert_eq!(b.next_clear_word(0), Some(0));
        b.set_first(64 * 2 + 1);
        assert_eq!(b.next_clear_word(0), Some(3));
        b.put(64 * 3 + 5);
        b.put(64 * 3 + 6);
        assert_eq!(b.next_clear_word(0), Some(4));
        assert!(!b.clear(64 * 3 + 5));
        assert_eq!(
            b.next_clear_word(0),
            Some(4),
            "one bit of the word is still set"
        );
        assert!(b.clear(64 * 3 + 6), "the word has no bit set now");
        assert_eq!(b.next_clear_word(0), Some(3));
        assert_eq!(
            b.next_clear_word(66),
            Some(66),
            "past a word of the summary"
        );
        for word in 66..70 {
            b.put(word * 64 + 63);
        }
        assert_eq!(b.next_clear_word(66), None);
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
