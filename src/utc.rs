//! UTC timestamps without a calendar crate: RFC 3339 for reports and the compact
//! `yyyymmddThhmmssZ` form that names archives (it sorts as it reads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// (year, month, day, hour, minute, second) of a time, in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil: exact for every day of the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2026-12-03T14:10:00Z`
pub fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20261203T141000Z`
pub fn compact(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Milliseconds since the epoch (0 for times before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-12-03T14:10:00Z`, or `2026-12-03T14:10:00.250Z` when there are milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let whole = rfc3339(from_unix_ms(ms));
    match ms % 1000 {
        0 => whole,
        frac => format!("{}.{frac:03}Z", &whole[..whole.len() - 1]),
    }
}

/// Parses an RFC 3339 time (`2026-12-01T03:00:00Z`, with optional fractions of a
/// second and a `Z` or `+hh:mm` offset) into milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time (like 2026-12-01T03:00:00Z)");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = &text[range];
        match part.bytes().all(|c| c.is_ascii_digit()) {
            true => part.parse().map_err(|_| bad()),
            false => Err(bad()),
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let (millis, zone) = fraction(&text[19..]).ok_or_else(bad)?;
    let offset = zone_offset(zone).ok_or_else(bad)?;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs * 1000 + millis).map_err(|_| format!("{text:?} is before 1970"))
}

/// Splits `.123Z` into milliseconds and the zone designator.
fn fraction(rest: &str) -> Option<(i64, &str)> {
    let Some(digits) = rest.strip_prefix('.') else {
        return Some((0, rest));
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let millis = format!("{:0<3}", &digits[..end.min(3)]).parse().ok()?;
    Some((millis, &digits[end..]))
}

/// Seconds east of UTC of `Z` or `+hh:mm` / `-hh:mm`.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let b = zone.as_bytes();
    if b.len() != 6 || b[3] != b':' || !matches!(b[0], b'+' | b'-') {
        return None;
    }
    let hours: i64 = zone[1..3].parse().ok()?;
    let minutes: i64 = zone[4..6].parse().ok()?;
    let offset = hours * 3600 + minutes * 60;
    Some(if b[0] == b'-' { -offset } else { offset })
}

/// Days since the epoch of a civil date (the inverse of `civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `text` has exactly the form `compact` produces.
pub fn is_compact(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_known_times() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(compact(at(951_782_400)), "20000229T000000Z");
        assert_eq!(rfc3339(at(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
        assert_eq!(compact(at(1_764_771_000)), "20251203T141000Z");
    }

    #[test]
    fn parses_what_it_formats_and_other_rfc3339_forms() {
        for secs in [0, 951_782_400, 1_709_251_199, 1_764_771_000, 4_102_444_800] {
            let text = rfc3339(at(secs));
            assert_eq!(parse_rfc3339(&text), Ok(secs * 1000), "{text}");
        }
        assert_eq!(rfc3339_ms(1_764_771_000_250), "2025-12-03T14:10:00.250Z");
        assert_eq!(
            parse_rfc3339("2025-12-03T14:10:00.250Z"),
            Ok(1_764_771_000_250)
        );
        assert_eq!(
            parse_rfc3339("2025-12-03T15:10:00.25+01:00"),
            Ok(1_764_771_000_250)
        );
        assert_eq!(
            parse_rfc3339("2025-12-03t14:10:00.123456z"),
            Ok(1_764_771_000_123)
        );
        for bad in [
            "",
            "2025-12-03",
            "2025-12-03T14:10:00",
            "2025-02-30T00:00:00Z",
            "2025-12-03T24:00:00Z",
            "2025-12-03T14:10:00+1:00",
            "2025-12-03T14:10:00.Z",
            "yesterday",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recognizes_the_compact_form() {
        assert!(is_compact("20261203T141000Z"));
        assert!(!is_compact("20261203T141000"));
        assert!(!is_compact("2026120XT141000Z"));
        assert!(!is_compact("20261203-141000Z"));
    }
}
