//! Timestamps on the command line: RFC 3339 (`2026-11-27T10:00:00Z`,
//! `2026-11-27T10:00:00.250+02:00`) or `@<epoch-ms>`, parsed by hand into
//! Unix epoch milliseconds; and the reverse for display.

/// Parses `@<epoch-ms>` or an RFC 3339 date-time with `Z` or a `±HH:MM`
/// offset into Unix epoch milliseconds. Fractions of a second below a
/// millisecond are dropped.
pub fn parse_timestamp_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Some(epoch) = text.strip_prefix('@') {
        return epoch.parse().map_err(|_| {
            format!("{text:?}: after @ comes a Unix time in milliseconds, like @1764237600000")
        });
    }
    parse_rfc3339(text).map_err(|reason| {
        format!(
            "{text:?} is not a timestamp ({reason}); write RFC 3339 like 2026-11-27T10:00:00Z or @<epoch-ms>"
        )
    })
}

fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return Err("too short".into());
    }
    let year = number(bytes, 0, 4)?;
    expect(bytes, 4, b'-')?;
    let month = number(bytes, 5, 2)?;
    expect(bytes, 7, b'-')?;
    let day = number(bytes, 8, 2)?;
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return Err("expected T between date and time".into());
    }
    let hour = number(bytes, 11, 2)?;
    expect(bytes, 13, b':')?;
    let minute = number(bytes, 14, 2)?;
    expect(bytes, 16, b':')?;
    let second = number(bytes, 17, 2)?;
    let mut at = 19;
    let mut millis = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err("expected digits after the decimal point".into());
        }
        // Milliseconds: the first three digits, padded.
        for i in 0..3 {
            let digit = if start + i < at {
                i64::from(bytes[start + i] - b'0')
            } else {
                0
            };
            millis = millis * 10 + digit;
        }
    }
    let offset_minutes = match bytes.get(at) {
        Some(b'Z' | b'z') if at + 1 == bytes.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == bytes.len() => {
            let hours = number(bytes, at + 1, 2)?;
            expect(bytes, at + 3, b':')?;
            let minutes = number(bytes, at + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range".into());
            }
            let offset = hours * 60 + minutes;
            if sign == b'-' { -offset } else { offset }
        }
        _ => return Err("expected Z or an offset like +02:00 at the end".into()),
    };
    if !(1..=12).contains(&month) {
        return Err("month out of range".into());
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range".into());
    }
    // 60 is a leap second, which Unix time folds into the next one.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time out of range".into());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

fn number(bytes: &[u8], at: usize, len: usize) -> Result<i64, String> {
    let digits = bytes.get(at..at + len).ok_or("too short")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("expected {len} digits at position {}", at + 1));
    }
    Ok(digits
        .iter()
        .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')))
}

fn expect(bytes: &[u8], at: usize, wanted: u8) -> Result<(), String> {
    if bytes.get(at) == Some(&wanted) {
        Ok(())
    } else {
        Err(format!("expected '{}' at position {}", wanted as char, at + 1))
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The local clock in Unix epoch milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix epoch milliseconds as RFC 3339 in UTC with milliseconds:
/// `2026-11-27T10:00:00.000Z`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let seconds = ms.div_euclid(1_000);
    let millis = ms.rem_euclid(1_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offsets() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp_ms("2026-11-27T10:00:00Z"), Ok(1_795_773_600_000));
        assert_eq!(
            parse_timestamp_ms("2026-11-27T12:00:00+02:00"),
            Ok(1_795_773_600_000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-27T05:30:00-04:30"),
            Ok(1_795_773_600_000)
        );
        assert_eq!(parse_timestamp_ms("2026-11-27t10:00:00z"), Ok(1_795_773_600_000));
        assert_eq!(parse_timestamp_ms("2026-11-27 10:00:00Z"), Ok(1_795_773_600_000));
        assert_eq!(parse_timestamp_ms("2000-02-29T23:59:59Z"), Ok(951_868_799_000));
        assert_eq!(parse_timestamp_ms("1969-12-31T23:59:59Z"), Ok(-1_000));
    }

    #[test]
    fn fractions_keep_milliseconds() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.5Z"), Ok(1_500));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.25Z"), Ok(1_250));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.123456789Z"), Ok(1_123));
        assert!(parse_timestamp_ms("1970-01-01T00:00:01.Z").is_err());
    }

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(parse_timestamp_ms("@1795773600000"), Ok(1_795_773_600_000));
        assert_eq!(parse_timestamp_ms("@-5"), Ok(-5));
        assert!(parse_timestamp_ms("@soon").is_err());
    }

    #[test]
    fn malformed_dates_are_refused_with_a_reason() {
        for bad in [
            "2026-11-27",
            "2026-11-27T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:60:00Z",
            "2026-11-27T10:00:00+2:00",
            "2026-11-27T10:00:00+02:00junk",
            "2026/11/27T10:00:00Z",
            "yesterday",
        ] {
            let error = parse_timestamp_ms(bad).unwrap_err();
            assert!(error.contains("RFC 3339"), "{bad}: {error}");
        }
    }

    #[test]
    fn formatting_is_the_inverse() {
        for ms in [
            0,
            1,
            999,
            951_868_799_000,
            1_795_773_600_123,
            -1_000,
            253_402_300_799_999,
        ] {
            let text = format_timestamp_ms(ms);
            assert_eq!(parse_timestamp_ms(&text), Ok(ms), "{text}");
        }
        assert_eq!(format_timestamp_ms(1_795_773_600_123), "2026-11-27T10:00:00.123Z");
    }
}
