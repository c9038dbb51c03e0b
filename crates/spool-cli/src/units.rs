//! Human units on the command line: durations (`500ms`, `30s`, `10m`,
//! `7d`, `1h30m`) and sizes (`512KiB`, `10MiB`, `1GiB`, `100MB`, `4096`).

const MS_PER_UNIT: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

const BYTES_PER_UNIT: [(&str, u64); 10] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("", 1),
];

/// Parses a duration into milliseconds: one or more `<integer><unit>` parts
/// with units `ms`, `s`, `m`, `h`, `d`, `w` (`1h30m` is 90 minutes).
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write for example 500ms, 30s, 10m, 7d".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration; write for example 500ms, 30s, 10m, 7d"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = MS_PER_UNIT
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
            .ok_or_else(|| {
                if unit.is_empty() {
                    format!("{text:?} has no unit; add one of ms, s, m, h, d, w (for example 30s)")
                } else {
                    format!("{text:?}: unknown unit {unit:?}; use ms, s, m, h, d or w")
                }
            })?;
        total = number
            .checked_mul(scale)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(total)
}

/// Parses a size into bytes: an integer with an optional unit, binary
/// (`KiB`, `MiB`, `GiB`, `TiB`) or decimal (`KB`, `MB`, `GB`, `TB`), or `B`.
/// Units are case-insensitive.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits == 0 {
        return Err(format!(
            "{text:?} is not a size; write for example 4096, 512KiB, 10MiB, 1GiB"
        ));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("{text:?}: number too large"))?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let scale = BYTES_PER_UNIT
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, scale)| scale)
        .ok_or_else(|| format!("{text:?}: unknown unit; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"))?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Milliseconds in the largest unit that divides them exactly: `7d`, `90m`,
/// `1500ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    // Weeks read worse than days (`7d`, not `1w`): formatting stops at days.
    MS_PER_UNIT[..5]
        .iter()
        .rev()
        .find(|&&(_, scale)| ms.is_multiple_of(scale))
        .map(|&(unit, scale)| format!("{}{unit}", ms / scale))
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// A duration rounded for reading, in its two largest units: `850ms`,
/// `12.3s`, `4m5s`, `3h20m`, `21d4h`.
pub fn format_age_ms(ms: u64) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match ms {
        0..SECOND => format!("{ms}ms"),
        SECOND..MINUTE if ms.is_multiple_of(SECOND) => format!("{}s", ms / SECOND),
        SECOND..MINUTE => format!("{:.1}s", ms as f64 / SECOND as f64),
        MINUTE..HOUR => format!("{}m{}s", ms / MINUTE, ms % MINUTE / SECOND),
        HOUR..DAY => format!("{}h{}m", ms / HOUR, ms % HOUR / MINUTE),
        _ => format!("{}d{}h", ms / DAY, ms % DAY / HOUR),
    }
}

/// Bytes in the largest binary unit that divides them exactly: `1GiB`,
/// `512KiB`, `1000B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|&&(_, scale)| bytes >= scale && bytes.is_multiple_of(scale))
        .map(|&(unit, scale)| format!("{}{unit}", bytes / scale))
        .unwrap_or_else(|| format!("{bytes}B"))
}

/// Bytes rounded to a readable binary size: `1.5 GiB`, `12 KiB`.
pub fn format_bytes_approx(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("1w"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms(" 0s "), Ok(0));
        assert!(parse_duration_ms("30").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
        assert!(
            parse_duration_ms("9999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("100B"), Ok(100));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        assert_eq!(parse_bytes("10gib"), Ok(10 << 30));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("10XB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [
            0,
            1,
            500,
            1_500,
            30_000,
            600_000,
            5_400_000,
            604_800_000,
            86_400_000 * 3,
        ] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(format_duration_ms(604_800_000), "7d");
        assert_eq!(format_duration_ms(86_400_000 * 3), "3d");
        for bytes in [1, 1000, 1024, 512 * 1024, 1 << 30, (1 << 30) + 1] {
            assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_bytes(1 << 30), "1GiB");
        assert_eq!(format_bytes_approx(1536), "1.5 KiB");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }

    #[test]
    fn ages_read_in_two_units() {
        assert_eq!(format_age_ms(850), "850ms");
        assert_eq!(format_age_ms(30_000), "30s");
        assert_eq!(format_age_ms(12_345), "12.3s");
        assert_eq!(format_age_ms(245_000), "4m5s");
        assert_eq!(format_age_ms(12_000_000), "3h20m");
        assert_eq!(format_age_ms(21 * 86_400_000 + 4 * 3_600_000 + 59_000), "21d4h");
    }
}
