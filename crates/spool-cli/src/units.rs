//! Human units on the command line. Parsing and exact formatting of
//! durations (`500ms`, `1h30m`, `7d`) and sizes (`512KiB`, `100MB`) are
//! `spool_format::units`, the grammar every Spool binary shares; this
//! module adds the rounded forms made for reading (`4m5s`, `1.5 GiB`,
//! `1,234,567`).

pub use spool_format::units::{format_bytes, format_duration_ms, parse_bytes, parse_duration_ms};

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
    fn rounded_forms() {
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
