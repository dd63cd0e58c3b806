//! Sizes as people write and read them: `16K`, `4KiB`, `1G`, `512`.
//!
//! Every suffix is binary (K = 1024), as in qemu-img and nbdkit, whose users type the
//! same sizes at them. `KB` and the like are refused rather than guessed: some mean
//! 1000 by them, some 1024.

/// The suffixes, each a power of 1024.
const UNITS: [&str; 7] = ["B", "K", "M", "G", "T", "P", "E"];

/// Parses a size: digits, then optionally one of `B K M G T P E` (any case), the
/// letters after B also spelled `KiB`, `MiB`, ... An error says what is wrong.
pub fn parse(text: &str) -> Result<u64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: it must start with digits (such as 16K, 4KiB, 1G or 512)"
        ));
    }
    if suffix.starts_with(['.', ',']) {
        return Err(format!(
            "{text:?}: sizes are whole numbers (1536M rather than 1.5G)"
        ));
    }
    let unit = suffix.strip_suffix("iB").unwrap_or(suffix);
    let power = match UNITS
        .iter()
        .position(|u| u.eq_ignore_ascii_case(unit))
        .or(unit.is_empty().then_some(0))
    {
        // "BiB" is no unit.
        Some(0) if unit.len() < suffix.len() => None,
        found => found,
    };
    let Some(power) = power else {
        return Err(format!(
            "{text:?}: unknown size suffix {suffix:?}; use B, K, M, G, T, P or E (powers of 1024), or KiB, MiB, ..."
        ));
    };
    let too_large = || format!("{text:?} is too large (more than 2^64 - 1 bytes)");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number
        .checked_mul(1u64 << (10 * power))
        .ok_or_else(too_large)
}

/// As [`parse`], for sizes that must fit 32 bits (the volume's geometry).
pub fn parse_u32(text: &str) -> Result<u32, String> {
    let bytes = parse(text)?;
    u32::try_from(bytes).map_err(|_| format!("{text:?} is too large (at most 4G - 1 bytes)"))
}

/// A size for people: the largest unit it is at least one of, with one decimal where
/// it is not whole (`512 B`, `16 KiB`, `1.5 GiB`).
pub fn human(bytes: u64) -> String {
    let power = (1..UNITS.len())
        .rev()
        .find(|&p| bytes >= 1u64 << (10 * p))
        .unwrap_or(0);
    if power == 0 {
        return format!("{bytes} B");
    }
    let unit = 1u64 << (10 * power);
    let name = format!("{}iB", UNITS[power]);
    if bytes % unit == 0 {
        return format!("{} {name}", bytes / unit);
    }
    let tenths = (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("512"), Ok(512));
        assert_eq!(parse("512B"), Ok(512));
        assert_eq!(parse("512b"), Ok(512));
        assert_eq!(parse("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn suffixes_are_powers_of_1024_in_any_case() {
        assert_eq!(parse("16K"), Ok(16384));
        assert_eq!(parse("16k"), Ok(16384));
        assert_eq!(parse("4KiB"), Ok(4096));
        assert_eq!(parse("4kiB"), Ok(4096));
        assert_eq!(parse("3M"), Ok(3 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("5T"), Ok(5 << 40));
        assert_eq!(parse("1P"), Ok(1 << 50));
        assert_eq!(parse("15E"), Ok(15 << 60));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(parse("16E").unwrap_err().contains("too large"));
        assert!(
            parse("18446744073709551616")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse("17179869184G").unwrap_err().contains("too large"));
    }

    #[test]
    fn geometry_sizes_fit_32_bits() {
        assert_eq!(parse_u32("16K"), Ok(16384));
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert!(parse_u32("4G").unwrap_err().contains("at most 4G - 1"));
        assert!(parse_u32("4x").unwrap_err().contains("unknown size suffix"));
    }

    #[test]
    fn malformed_sizes_say_why() {
        for bad in ["", "K", "-1", " 16K", "+4"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("must start with digits"), "{bad:?}: {err}");
        }
        for bad in ["1.5G", "2,5M"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("sizes are whole numbers"), "{bad:?}: {err}");
        }
        for bad in ["16KB", "16X", "16 K", "16K ", "1BiB", "4iB", "16Ki", "1GG"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("unknown size suffix"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn human_picks_the_largest_whole_unit() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1 KiB");
        assert_eq!(human(16384), "16 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3 GiB");
        assert_eq!(human((1 << 30) + (1 << 29)), "1.5 GiB");
        // Rounded to the nearest tenth: 1.96 is 2.0.
        assert_eq!(human(2007), "2.0 KiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn what_human_prints_parses_back_when_whole() {
        for bytes in [512, 4096, 16384, 1 << 20, 10 << 30] {
            let text = human(bytes).replace(' ', "");
            assert_eq!(parse(&text), Ok(bytes), "{text}");
        }
    }
}
