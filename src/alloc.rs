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

    /// Where the run of clear bits from `from` ends: the next set bit, or the end.
    fn clear_run_end(&self, from: usize) -> usize {
        next_bit(&self.words, from, self.len, true).unwrap_or(self.len)
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

/// How far [`FreeMap::alloc_run`] looks for a run at or after the lowest free index
/// (first fit): the words it reads, and of those the ones with a free index it tests
/// for a run. Over the used part of a volume, overwrites leave short runs everywhere
/// (each frees the run its chunk held), and first fit fills them: the used part stays
/// nearly as compact as the original's lowest-free-index allocation keeps it (in a test
/// below, the highest index used stays 9 % above the count in use). Past the search
/// a run goes where the last run taken past it ended, while the indices there are
/// free, or else in a word of 64 free indices (or a row of them, for a longer run),
/// found without a search; and only when there is none, the lowest free indices one by
/// one. The bounds cap what one allocation reads where many words are nearly full.
const RUN_SEARCH_WORDS: usize = 1024;
const RUN_SEARCH_TESTED: usize = 256;
/// Words of 64 free indices tried in turn for a run: one longer than a word needs a
/// row of them, which the first found may not begin.
const FREE_WORDS_TRIED: usize = 16;

/// The indices of `free` (bits set where free, the lower of two consecutive words in
/// the low half) where a run of `count` free bits starts, for `count` at most 64: bit
/// `p` of the result is set when bits `p..p + count` of `free` all are.
fn run_starts(free: u128, count: usize) -> u64 {
    debug_assert!((1..=64).contains(&count));
    // Runs of `have` bits doubled, a run starting at `p` and one starting at `p + step`
    // (`step` at most `have`, so the two overlap or meet) making one.
    let (mut runs, mut have) = (free, 1);
    while have < count {
        let step = have.min(count - have);
        runs &= runs >> step;
        have += step;
    }
    runs as u64
}

/// One bitmap with first-fit allocation. `hint` is at or below the lowest free bit, so
/// a search starts there instead of at 0 without changing which bit is chosen;
/// `clear_word_hint` likewise for the lowest word of 64 free bits, and `fit_hints[n -
/// 1]` for the lowest word where a run of `n` free bits may start. `cursor` is where the
/// last run taken past the first-fit search ended.
#[derive(Clone, Debug)]
pub struct FreeMap {
    used: Bitmap,
    hint: usize,
    clear_word_hint: usize,
    /// Setting bits makes no run; freeing one may make runs that start in its word or
    /// the word before, so a free moves the hints back to that one.
    fit_hints: [usize; 64],
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
            fit_hints: [0; 64],
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
    /// [`RUN_SEARCH_WORDS`] says; `None` when there is no such run there (the caller
    /// then takes the lowest free indices one by one).
    pub fn alloc_run(&mut self, count: usize) -> Option<Range<usize>> {
        let len = self.len();
        let lowest = self.used.first_clear(self.hint)?;
        if let Some(at) = self.first_fit(lowest, count) {
            return Some(self.take(at, count, lowest));
        }
        let at = self.cursor;
        if at < len && !self.used.contains(at) {
            let end = self.used.clear_run_end(at);
            if end - at >= count {
                self.cursor = at + count;
                return Some(self.take(at, count, lowest));
            }
        }
        let mut word = self.clear_word_hint;
        for tried in 0..FREE_WORDS_TRIED {
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
            let end = self.used.clear_run_end(at);
            if end - at >= count {
                self.cursor = at + count;
                return Some(self.take(at, count, lowest));
            }
            word = end / 64 + 1;
        }
        None
    }

    /// The first run of `count` free indices (at most 64) from word `lowest / 64` on,
    /// within the bounds of [`RUN_SEARCH_WORDS`]. The words it finds no run starting in
    /// are not read again for a run of `count` until an index before them is freed: a
    /// writer of one size of run does not search the same short runs each time.
    fn first_fit(&mut self, lowest: usize, count: usize) -> Option<usize> {
        let hint = self.fit_hints.get_mut(count.checked_sub(1)?)?;
        let words = &self.used.words;
        let first = (lowest / 64).max(*hint);
        let end = words.len().min(first + RUN_SEARCH_WORDS);
        let mut tested = 0;
        for i in first..end {
            if words[i] == u64::MAX {
                continue;
            }
            // A run may go on into the next word; bits past the map's end read as free
            // in its last word, and the run found is checked against the end.
            let next = words.get(i + 1).map_or(0, |w| !w);
            let starts = run_starts(u128::from(!words[i]) | u128::from(next) << 64, count);
            if starts != 0 {
                *hint = i;
                let at = i * 64 + starts.trailing_zeros() as usize;
                return (at + count <= self.used.len).then_some(at);
            }
            tested += 1;
            if tested == RUN_SEARCH_TESTED {
                *hint = i + 1;
                return None;
            }
        }
        *hint = end;
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
            let word = (index / 64).saturating_sub(1);
            for hint in &mut self.fit_hints {
                *hint = (*hint).min(word);
            }
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
    // Maps of thousands of words: too slow under miri, with nothing for it to check in
    // this module, all safe code.
    #[cfg_attr(miri, ignore)]
    fn first_fit_finds_runs_across_words_within_its_bounds() {
        assert_eq!(run_starts(u128::MAX, 64), u64::MAX);
        assert_eq!(run_starts(0b0111_0111, 3), 0b0001_0001);
        assert_eq!(run_starts(0b0111_0111, 4), 0);
        assert_eq!(run_starts(0b111 << 62, 3), 1 << 62, "into the next word");
        // A run that begins at the end of one word and ends in the next.
        let mut m = from_picture(&format!("{}.....{}", "#".repeat(62), "#".repeat(59)));
        assert_eq!(m.alloc_run(5), Some(62..67));
        // The map's end is not free: the last word's bits past it are not a run.
        let mut m = from_picture(&format!("{}..", "#".repeat(68)));
        assert_eq!(m.alloc_run(3), None);
        assert_eq!(m.alloc_run(2), Some(68..70));
        // A word searched in vain is passed over by the next search for that length,
        // until an index is freed before it.
        let mut m = from_picture(&format!("{}..{}", ".#".repeat(32), "#".repeat(62)));
        assert_eq!(m.alloc_run(2), Some(64..66));
        assert_eq!(m.fit_hints[1], 1, "word 0 has no run of 2");
        assert_eq!(m.alloc_run(1), Some(0..1), "other lengths search it still");
        m.free(1);
        assert_eq!(
            m.alloc_run(2),
            Some(1..3),
            "freed in word 0: searched again"
        );
        let mut m = from_picture(&format!(
            "{}.{}..{}",
            "#".repeat(63),
            "#".repeat(64),
            "#".repeat(62)
        ));
        assert_eq!(m.alloc_run(2), Some(128..130));
        m.free(64);
        assert_eq!(
            m.alloc_run(2),
            Some(63..65),
            "freed in word 1: a run from word 0"
        );
        // Words after the lowest free index count towards the search's span, full
        // ones too: a run past it, in a word with used indices, is not found (the
        // caller then takes the lowest free indices one by one).
        let first = format!("#.{}", "#".repeat(62));
        let full = "#".repeat(64 * (RUN_SEARCH_WORDS - 1));
        let last = format!("..{}", "#".repeat(62));
        let mut m = from_picture(&format!("{first}{full}{last}"));
        assert_eq!(m.alloc_run(2), None);
        let mut m = from_picture(&format!("{first}{}{last}", &full[64..]));
        let at = 64 * (RUN_SEARCH_WORDS - 1);
        assert_eq!(m.alloc_run(2), Some(at..at + 2), "the span's last word");
    }

    #[test]
    // Maps of thousands of words: too slow under miri, with nothing for it to check in
    // this module, all safe code.
    #[cfg_attr(miri, ignore)]
    fn past_the_first_fit_search_a_run_goes_where_the_last_one_ended_or_in_a_free_word() {
        // More words than the search tests, each with free indices but no two
        // together (within a word or across two); then a word with a used index; then
        // two free words.
        let fragmented = ".#".repeat(32 * RUN_SEARCH_TESTED);
        let f = fragmented.len();
        let p = format!("{fragmented}{}#{}", ".".repeat(63), ".".repeat(128));
        let mut m = from_picture(&p);
        assert_eq!(m.alloc_run(3), Some(f + 64..f + 67), "a free word");
        assert_eq!(
            m.alloc_run(2),
            Some(f + 67..f + 69),
            "where the last run ended"
        );
        assert_eq!(m.alloc_run(4), Some(f + 69..f + 73));
        // A run within the search is still taken first.
        m.free(1);
        assert_eq!(m.alloc_run(3), Some(0..3));
        // The rest of the word after the last run is too short: the next free word.
        let mut m = from_picture(&p[..f + 128]);
        assert_eq!(m.alloc_run(60), Some(f + 64..f + 124));
        assert_eq!(
            m.alloc_run(5),
            None,
            "4 free after the last run, no free word"
        );
        assert_eq!(m.alloc_run(4), Some(f + 124..f + 128));
        // A run longer than a word takes a row of free words.
        let mut m = from_picture(&p);
        assert_eq!(m.alloc_run(100), Some(f + 64..f + 164));
        assert_eq!(m.alloc_run(100), None);
        assert_eq!(m.in_use(), p.matches('#').count() + 100);
    }

    /// Chunks of 1 to 4 io units overwritten at random, each new run taken before the
    /// old one is freed, as a volume does: first fit keeps the used indices within a
    /// little more than the count in use, instead of moving on into indices never used.
    #[test]
    // Maps of thousands of words: too slow under miri, with nothing for it to check in
    // this module, all safe code.
    #[cfg_attr(miri, ignore)]
    fn overwrites_keep_the_used_indices_compact() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut m = empty(64 * 1024);
        let take = |m: &mut FreeMap, count: usize| -> Vec<usize> {
            match m.alloc_run(count) {
                Some(run) => run.collect(),
                None => (0..count).map(|_| m.alloc().unwrap()).collect(),
            }
        };
        let mut chunks: Vec<Vec<usize>> = (0..2000).map(|i| take(&mut m, 1 + i % 4)).collect();
        let mut high = 0;
        for _ in 0..100_000 {
            let c = next(chunks.len());
            let new = take(&mut m, 1 + next(4));
            for &unit in &chunks[c] {
                m.free(unit);
            }
            high = high.max(*new.iter().max().unwrap());
            chunks[c] = new;
        }
        assert_eq!(m.in_use(), chunks.iter().map(Vec::len).sum::<usize>());
        assert!(
            high < m.in_use() + m.in_use() / 4,
            "indices up to {high} used, for {} in use",
            m.in_use()
        );
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
