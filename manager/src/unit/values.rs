//! systemd's value syntax shared by directives: booleans, time spans (`systemd.time(7)`),
//! sizes, octal modes.

use std::time::Duration;

use super::model::TIMEOUT_INFINITY;

/// Parses a systemd boolean (`yes/no`, `true/false`, `on/off`, `1/0`, `y/n`, `t/f`).
pub fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Parses a systemd time span (`systemd.time(7)`): `infinity`, or numbers (decimals allowed)
/// each followed by an optional unit, e.g. `5`, `5s`, `500ms`, `1min 30s`, `2h30min`. A number
/// without a unit is seconds. `infinity` is [`TIMEOUT_INFINITY`]; `None` if invalid or too large.
pub fn parse_timespan(value: &str) -> Option<Duration> {
    parse_timespan_in(value, NS_PER_SEC)
}

/// [`parse_timespan`] where a number without a unit counts `bare_unit_ns` nanoseconds (systemd
/// reads `LimitRTTIME=` in microseconds, for one).
pub fn parse_timespan_in(value: &str, bare_unit_ns: u128) -> Option<Duration> {
    let value = value.trim();
    if value == "infinity" {
        return Some(TIMEOUT_INFINITY);
    }
    if value.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns = if unit.is_empty() {
            bare_unit_ns
        } else {
            unit_nanoseconds(unit)?
        };
        // Whole part, then the fraction digit by digit, all in exact integer nanoseconds.
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?)?;
        let mut scale = unit_ns;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            total_ns = total_ns.checked_add(u128::from(digit - b'0') * scale)?;
        }
        rest = tail.trim_start();
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits.
    let nanos = u32::try_from(total_ns % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Nanoseconds in a second and a microsecond, for [`parse_timespan_in`].
pub const NS_PER_SEC: u128 = 1_000_000_000;
pub const NS_PER_USEC: u128 = 1_000;

fn unit_nanoseconds(unit: &str) -> Option<u128> {
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "" | "s" | "sec" | "second" | "seconds" => S,
        "ns" | "nsec" => 1,
        "us" | "usec" | "µs" | "μs" => US,
        "ms" | "msec" => MS,
        "m" | "min" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hour" | "hours" => 3_600 * S,
        "d" | "day" | "days" => 86_400 * S,
        "w" | "week" | "weeks" => 604_800 * S,
        "M" | "month" | "months" => 2_629_800 * S,
        "y" | "year" | "years" => 31_557_600 * S,
        _ => return None,
    })
}

/// Parses a size in bytes with systemd's base-1024 suffixes (`512`, `64K`, `1.5G`, `2T`;
/// `B`, `K`, `M`, `G`, `T`, `P`, `E`). `None` if invalid or above `u64::MAX`.
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let number_len = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_len);
    let shift = match suffix.trim_start() {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') {
        return None;
    }
    let unit: u128 = 1 << shift;
    let mut total = whole.parse::<u128>().ok()?.checked_mul(unit)?;
    // The fraction as one exact ratio (at most 18 digits count), rounded down to a byte.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let exponent = u32::try_from(fraction.len()).ok()?;
        total = total.checked_add(digits * unit / 10u128.pow(exponent))?;
    }
    u64::try_from(total).ok()
}

/// Parses an octal file mode or mask (`0755`, `022`, `7`) of at most `max`.
pub fn parse_mode(value: &str, max: u32) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_follow_systemd_time() {
        let cases = [
            ("5", Duration::from_secs(5)),
            ("5s", Duration::from_secs(5)),
            (" 5 s ", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1min 30s", Duration::from_secs(90)),
            ("2h30min", Duration::from_secs(9000)),
            ("1.5s", Duration::from_millis(1500)),
            (".5min", Duration::from_secs(30)),
            ("1d", Duration::from_secs(86_400)),
            ("10us", Duration::from_micros(10)),
            ("0", Duration::ZERO),
            ("infinity", TIMEOUT_INFINITY),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timespan(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn invalid_timespans_are_refused() {
        for text in [
            "",
            "s",
            "5x",
            "-5s",
            "1..2s",
            "5s garbage",
            "99999999999999999999999y",
        ] {
            assert_eq!(parse_timespan(text), None, "{text}");
        }
    }

    #[test]
    fn booleans_follow_systemd() {
        for yes in ["1", "yes", "Y", "true", "t", "ON"] {
            assert_eq!(parse_boolean(yes), Some(true), "{yes}");
        }
        for no in ["0", "no", "N", "false", "f", "Off"] {
            assert_eq!(parse_boolean(no), Some(false), "{no}");
        }
        assert_eq!(parse_boolean("maybe"), None);
    }

    #[test]
    fn sizes_take_base_1024_suffixes() {
        let cases = [
            ("512", 512),
            ("512B", 512),
            ("64K", 65_536),
            ("1M", 1 << 20),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            ("0", 0),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn invalid_sizes_are_refused() {
        for text in ["", "K", "5X", "-5", "1..2K", "16E", "5 K garbage"] {
            assert_eq!(parse_size(text), None, "{text}");
        }
    }

    #[test]
    fn modes_are_octal_and_bounded() {
        assert_eq!(parse_mode("0755", 0o7777), Some(0o755));
        assert_eq!(parse_mode("022", 0o777), Some(0o22));
        assert_eq!(parse_mode("7", 0o777), Some(7));
        for bad in ["", "0o755", "0789", "-022", "10000"] {
            assert_eq!(parse_mode(bad, 0o7777), None, "{bad}");
        }
    }

    #[test]
    fn a_bare_number_can_count_another_unit() {
        assert_eq!(
            parse_timespan_in("500", NS_PER_USEC),
            Some(Duration::from_micros(500))
        );
        assert_eq!(
            parse_timespan_in("2s", NS_PER_USEC),
            Some(Duration::from_secs(2))
        );
    }
}
