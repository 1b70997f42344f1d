//! Local time as `journalctl` shows and takes it: `Dec 01 14:03:22` in the short output, and
//! the `--since`/`--until` forms `2026-12-01 14:00:00`, `2026-12-01`, `14:00`, `now`, `today`,
//! `yesterday`, `tomorrow`, `-5min`, `+1h`, `5min ago` and `@1796133600` (systemd.time(7)).
//! The zone is the C library's (`TZ`, else /etc/localtime).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimeError {
    #[error(
        "{value:?} is not a time (forms: '2026-12-01 14:00:00', '14:00', 'today', 'yesterday', '-5min', '@EPOCH')"
    )]
    Parse { value: String },
    #[error("{value:?} does not exist in the local time zone")]
    NoSuchLocalTime { value: String },
}

const USEC: i64 = 1_000_000;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A local calendar time, as `struct tm` has it (month 1-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

fn local(usec: i64) -> Option<Civil> {
    let secs = libc::time_t::try_from(usec.div_euclid(USEC)).ok()?;
    // SAFETY: tm is plain data, written whole by localtime_r, which only reads `secs`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: i64::from(tm.tm_mon) + 1,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
    })
}

/// The epoch microseconds of a local time (mktime: out-of-range fields carry over, so day 0
/// is the last of the month before; the zone's daylight saving time is looked up).
fn epoch_usec(c: Civil) -> Option<i64> {
    let int = |v: i64| libc::c_int::try_from(v).ok();
    // SAFETY: tm is plain data; every field mktime reads is set below.
    let secs = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = int(c.year - 1900)?;
        tm.tm_mon = int(c.month - 1)?;
        tm.tm_mday = int(c.day)?;
        tm.tm_hour = int(c.hour)?;
        tm.tm_min = int(c.minute)?;
        tm.tm_sec = int(c.second)?;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    if secs == -1 {
        return None;
    }
    secs.checked_mul(USEC)
}

/// `Dec 01 14:03:22`, in local time, as journalctl's short output.
pub fn format_short(usec: i64) -> String {
    match local(usec) {
        Some(c) => format!(
            "{} {:02} {:02}:{:02}:{:02}",
            MONTHS[(c.month - 1).clamp(0, 11) as usize],
            c.day,
            c.hour,
            c.minute,
            c.second
        ),
        None => format!("@{}", usec.div_euclid(USEC)),
    }
}

/// Parses a `--since`/`--until` value into epoch microseconds; `now_usec` anchors the relative
/// forms.
pub fn parse(value: &str, now_usec: i64) -> Result<i64, TimeError> {
    let bad = || TimeError::Parse {
        value: value.to_string(),
    };
    let missing = || TimeError::NoSuchLocalTime {
        value: value.to_string(),
    };
    let v = value.trim();
    if let Some(epoch) = v.strip_prefix('@') {
        return epoch_value(epoch).ok_or_else(bad);
    }
    let midnight = |days: i64| {
        let today = local(now_usec).ok_or_else(missing)?;
        epoch_usec(Civil {
            day: today.day + days,
            hour: 0,
            minute: 0,
            second: 0,
            ..today
        })
        .ok_or_else(missing)
    };
    match v {
        "now" => return Ok(now_usec),
        "today" => return midnight(0),
        "yesterday" => return midnight(-1),
        "tomorrow" => return midnight(1),
        _ => {}
    }
    if let Some(ago) = v.strip_suffix(" ago") {
        return Ok(now_usec - span(ago).ok_or_else(bad)?);
    }
    if let Some(rest) = v.strip_prefix('-') {
        return Ok(now_usec - span(rest).ok_or_else(bad)?);
    }
    if let Some(rest) = v.strip_prefix('+') {
        return Ok(now_usec + span(rest).ok_or_else(bad)?);
    }
    let (date, time) = match v.split_once([' ', 'T']) {
        Some((d, t)) => (Some(d), Some(t)),
        None if v.contains('-') => (Some(v), None),
        None => (None, Some(v)),
    };
    let today = local(now_usec).ok_or_else(missing)?;
    let (year, month, day) = match date {
        Some(d) => {
            let parts = numbers(d, '-').ok_or_else(bad)?;
            let [y, m, d] = parts[..] else {
                return Err(bad());
            };
            if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
                return Err(bad());
            }
            (y, m, d)
        }
        None => (today.year, today.month, today.day),
    };
    let (hour, minute, second) = match time {
        Some(t) => {
            let parts = numbers(t, ':').ok_or_else(bad)?;
            let (h, m, s) = match parts[..] {
                [h, m] => (h, m, 0),
                [h, m, s] => (h, m, s),
                _ => return Err(bad()),
            };
            if h > 23 || m > 59 || s > 60 {
                return Err(bad());
            }
            (h, m, s)
        }
        None => (0, 0, 0),
    };
    let civil = Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
    };
    epoch_usec(civil).ok_or_else(missing)
}

/// `SECONDS[.FRACTION]` since the epoch, exactly (to the microsecond).
fn epoch_value(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let negative = whole.starts_with('-');
    let whole = whole.strip_prefix('-').unwrap_or(whole);
    if whole.is_empty() || fraction.len() > 6 {
        return None;
    }
    let secs = numbers(whole, ' ')?.first().copied()?;
    let micros = if fraction.is_empty() {
        0
    } else {
        let digits = numbers(fraction, ' ')?.first().copied()?;
        digits * 10_i64.pow(6 - fraction.len() as u32)
    };
    let usec = secs.checked_mul(USEC)?.checked_add(micros)?;
    Some(if negative { -usec } else { usec })
}

/// Non-negative decimal numbers separated by `sep`.
fn numbers(text: &str, sep: char) -> Option<Vec<i64>> {
    text.split(sep)
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        })
        .collect()
}

/// A time span as systemd.time(7) writes them: `5min`, `1h 30min`, `2d`, `90s`, `500ms`.
fn span(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "us" | "usec" => 1,
            "ms" | "msec" => 1_000,
            "" | "s" | "sec" | "second" | "seconds" => USEC,
            "m" | "min" | "minute" | "minutes" => 60 * USEC,
            "h" | "hr" | "hour" | "hours" => 3_600 * USEC,
            "d" | "day" | "days" => 86_400 * USEC,
            "w" | "week" | "weeks" => 7 * 86_400 * USEC,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed "now": 2026-12-01 some time of day, whatever the zone.
    const NOW: i64 = 1_796_135_000 * USEC;

    #[test]
    fn relative_times_count_back_and_forth_from_now() {
        assert_eq!(parse("-5min", NOW), Ok(NOW - 300 * USEC));
        assert_eq!(parse("5min ago", NOW), Ok(NOW - 300 * USEC));
        assert_eq!(parse("+1h 30min", NOW), Ok(NOW + 5_400 * USEC));
        assert_eq!(parse("now", NOW), Ok(NOW));
    }

    #[test]
    fn an_epoch_is_taken_as_is() {
        assert_eq!(parse("@1796133600", NOW), Ok(1_796_133_600 * USEC));
        assert_eq!(parse("@1.5", NOW), Ok(1_500_000));
        assert_eq!(parse("@1796136334.809457", NOW), Ok(1_796_136_334_809_457));
    }

    #[test]
    fn a_local_date_and_time_reads_back_as_the_short_form_shows_it() {
        let usec = parse("2026-12-01 14:03:22", NOW).unwrap();

        assert_eq!(format_short(usec), "Dec 01 14:03:22");
        assert_eq!(parse("2026-12-01 14:03", NOW).unwrap(), usec - 22 * USEC);
    }

    #[test]
    fn a_time_alone_is_today_and_a_date_alone_its_midnight() {
        let today = parse("today", NOW).unwrap();

        assert_eq!(parse("00:00", NOW), Ok(today));
        assert!(format_short(parse("14:00", NOW).unwrap()).ends_with(" 14:00:00"));
        assert_eq!(
            format_short(parse("2026-12-01", NOW).unwrap()),
            "Dec 01 00:00:00"
        );
        assert!(parse("yesterday", NOW).unwrap() < today);
        assert!(today <= NOW && NOW < parse("tomorrow", NOW).unwrap());
    }

    #[test]
    fn nonsense_is_refused_with_the_forms_that_work() {
        for bad in [
            "",
            "soon",
            "-5parsecs",
            "2026-13-01",
            "25:00",
            "12:00:00:00",
            "@x",
        ] {
            let err = parse(bad, NOW).unwrap_err();
            assert!(err.to_string().contains("'14:00'"), "{bad}: {err}");
        }
    }
}
