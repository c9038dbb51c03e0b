//! Durations and sizes as people write them, in one grammar that `spoold`
//! (flags, environment, config file), `spool` and `spool-worker` all share.
//!
//! **Durations**: one or more parts, each a whole number and a unit, largest
//! first or not: `ms`, `s`, `m`, `h`, `d`, `w` (`500ms`, `30s`, `1h30m`,
//! `7d`). Units are lower case; `0` alone needs no unit. A bare number
//! other than zero is refused, because `500` could mean milliseconds or
//! seconds; the message names both spellings.
//!
//! **Sizes**: a whole number of bytes, optionally followed by a unit:
//! `B`; binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); decimal `KB`,
//! `MB`, `GB`, `TB` (powers of 1000). Size units are case-insensitive
//! (`mib` is `MiB`). A single letter (`K`, `M`, `G`, `T`) is refused as
//! ambiguous, with both readings in the message.
//!
//! Fractions (`1.5s`) are refused with the whole-number spelling to use
//! instead. [`format_duration_ms`] and [`format_bytes`] write values in a
//! form that parses back to the same number.

use std::fmt;
use std::time::Duration;

const MS_PER_UNIT: [(&str, u64); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const BYTES_PER_UNIT: [(&str, u64); 9] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Spellings other programs use for a duration unit, with ours.
const DURATION_ALIASES: [(&str, &str); 21] = [
    ("msec", "ms"),
    ("msecs", "ms"),
    ("millis", "ms"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("S", "s"),
    ("min", "m"),
    ("mins", "m"),
    ("minute", "m"),
    ("minutes", "m"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
    ("H", "h"),
    ("day", "d"),
    ("days", "d"),
    ("D", "d"),
    ("week", "w"),
];

/// Why a duration or size could not be read. The message says what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    message: String,
}

impl UnitError {
    fn new(message: String) -> Self {
        UnitError { message }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UnitError {}

impl From<UnitError> for String {
    fn from(error: UnitError) -> String {
        error.message
    }
}

const DURATION_HINT: &str =
    "write a whole number and a unit (ms, s, m, h, d, w), for example 500ms, 30s, 1h30m or 7d";
const SIZE_HINT: &str =
    "write a whole number of bytes with an optional unit (B, KiB, MiB, GiB, TiB, or decimal KB, MB, GB, TB)";

/// Parses a duration into milliseconds (see the module documentation for
/// the grammar).
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let original = text;
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty() {
        return Err(UnitError::new(format!("empty duration; {DURATION_HINT}")));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(0) => Ok(0),
            _ => Err(UnitError::new(format!(
                "{original:?} has no unit: write {text}ms for milliseconds or {text}s for seconds"
            ))),
        };
    }
    let mut total: u64 = 0;
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(UnitError::new(format!(
                "{original:?} is not a duration; {DURATION_HINT}"
            )));
        }
        let number_text = &rest[..digits];
        rest = &rest[digits..];
        if rest.starts_with('.') {
            return Err(UnitError::new(format!(
                "{original:?} has a fraction; write whole numbers of a smaller unit (for example 1s500ms instead of 1.5s)"
            )));
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(&(_, scale)) = MS_PER_UNIT.iter().find(|(name, _)| *name == unit) else {
            return Err(UnitError::new(unknown_duration_unit(original, number_text, unit)));
        };
        let number: u64 = number_text
            .parse()
            .map_err(|_| UnitError::new(format!("{original:?} is too long a duration")))?;
        total = number
            .checked_mul(scale)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| UnitError::new(format!("{original:?} is too long a duration")))?;
    }
    Ok(total)
}

fn unknown_duration_unit(original: &str, number: &str, unit: &str) -> String {
    if unit == "M" {
        return format!(
            "{original:?}: \"M\" is ambiguous; write {number}m for minutes (months are not a unit)"
        );
    }
    if let Some((_, ours)) = DURATION_ALIASES.iter().find(|(alias, _)| *alias == unit) {
        return format!("{original:?}: write {number}{ours} (the unit is {ours:?}, not {unit:?})");
    }
    if let Some((ours, _)) = MS_PER_UNIT
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
    {
        return format!("{original:?}: write {number}{ours} (duration units are lower case)");
    }
    format!("{original:?}: unknown duration unit {unit:?}; {DURATION_HINT}")
}

/// Parses a duration (see the module documentation for the grammar).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    parse_duration_ms(text).map(Duration::from_millis)
}

/// Parses a size into bytes (see the module documentation for the grammar).
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let original = text;
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits == 0 {
        return Err(UnitError::new(format!("{original:?} is not a size; {SIZE_HINT}")));
    }
    let number_text = &text[..digits];
    let unit = text[digits..].trim();
    if unit.starts_with('.') {
        return Err(UnitError::new(format!(
            "{original:?} has a fraction; write a whole number of a smaller unit (for example 1536MiB instead of 1.5GiB)"
        )));
    }
    let scale = match BYTES_PER_UNIT
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
    {
        Some(&(_, scale)) => scale,
        None if unit.is_empty() => 1,
        None => return Err(UnitError::new(unknown_size_unit(original, number_text, unit))),
    };
    let number: u64 = number_text
        .parse()
        .map_err(|_| UnitError::new(format!("{original:?} is too large a size")))?;
    number
        .checked_mul(scale)
        .ok_or_else(|| UnitError::new(format!("{original:?} is too large a size")))
}

fn unknown_size_unit(original: &str, number: &str, unit: &str) -> String {
    let letter = unit.to_ascii_uppercase();
    let letter = letter.trim_end_matches('B');
    if ["K", "M", "G", "T"].contains(&letter) {
        return format!(
            "{original:?}: {unit:?} is ambiguous; write {number}{letter}iB (binary, powers of 1024) or {number}{letter}B (decimal, powers of 1000)"
        );
    }
    format!("{original:?}: unknown size unit {unit:?}; {SIZE_HINT}")
}

/// Milliseconds as whole units, largest first, without weeks: `7d`,
/// `1h30m`, `1s500ms`, `0s`. Parses back to the same value.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    // Weeks read worse than days (`14d`, not `2w`): formatting starts at days.
    for &(unit, scale) in &MS_PER_UNIT[1..] {
        if rest >= scale {
            out.push_str(&format!("{}{unit}", rest / scale));
            rest %= scale;
        }
    }
    out
}

/// Bytes in the largest binary unit that divides them exactly: `1GiB`,
/// `512KiB`, `1000B`. Parses back to the same value.
pub fn format_bytes(bytes: u64) -> String {
    BYTES_PER_UNIT[1..5]
        .iter()
        .rev()
        .find(|&&(_, scale)| bytes >= scale && bytes.is_multiple_of(scale))
        .map(|&(unit, scale)| format!("{}{unit}", bytes / scale))
        .unwrap_or_else(|| format!("{bytes}B"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn durations_in_every_unit_and_compound() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("1w"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms(" 30 s "), Ok(30_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn old_and_foreign_duration_spellings_name_ours() {
        let bare = parse_duration_ms("500").unwrap_err().to_string();
        assert!(bare.contains("500ms") && bare.contains("500s"), "{bare}");
        let minutes = parse_duration_ms("5min").unwrap_err().to_string();
        assert!(minutes.contains("write 5m"), "{minutes}");
        let month = parse_duration_ms("1M").unwrap_err().to_string();
        assert!(month.contains("ambiguous") && month.contains("1m"), "{month}");
        let upper = parse_duration_ms("30MS").unwrap_err().to_string();
        assert!(upper.contains("30ms") && upper.contains("lower case"), "{upper}");
        let fraction = parse_duration_ms("1.5s").unwrap_err().to_string();
        assert!(fraction.contains("1s500ms"), "{fraction}");
        assert!(
            parse_duration_ms("5y")
                .unwrap_err()
                .to_string()
                .contains("unknown duration unit")
        );
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert!(
            parse_duration_ms("99999999999999999999d")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert!(
            parse_duration_ms("9999999999999999d")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("100B"), Ok(100));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("10MiB"), Ok(10 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        assert_eq!(parse_bytes("10gib"), Ok(10 << 30));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes("1kB"), Ok(1_000));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
    }

    #[test]
    fn ambiguous_and_wrong_sizes_name_ours() {
        let letter = parse_bytes("1M").unwrap_err().to_string();
        assert!(
            letter.contains("1MiB") && letter.contains("1MB") && letter.contains("ambiguous"),
            "{letter}"
        );
        let k = parse_bytes("64k").unwrap_err().to_string();
        assert!(k.contains("64KiB") && k.contains("64KB"), "{k}");
        assert!(parse_bytes("1.5GiB").unwrap_err().to_string().contains("1536MiB"));
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(
            parse_bytes("10XB")
                .unwrap_err()
                .to_string()
                .contains("unknown size unit")
        );
        assert!(
            parse_bytes("99999999999TiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    #[test]
    fn formats_read_well() {
        assert_eq!(format_duration_ms(604_800_000), "7d");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(1_500), "1s500ms");
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_bytes(1 << 30), "1GiB");
        assert_eq!(format_bytes(1000), "1000B");
        assert_eq!(format_bytes((1 << 30) + 1), "1073741825B");
    }

    proptest! {
        #[test]
        fn durations_round_trip(ms in any::<u64>()) {
            prop_assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }

        #[test]
        fn sizes_round_trip(bytes in any::<u64>(), shift in 0u32..50) {
            let aligned = (bytes >> shift) << shift;
            prop_assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
            prop_assert_eq!(parse_bytes(&format_bytes(aligned)), Ok(aligned));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,24}") {
            let _ = parse_duration_ms(&text);
            let _ = parse_bytes(&text);
        }
    }
}
