//! Tables and timestamps for people.

use std::io::Write;

use crate::escape::escape;

/// What a table prints besides its rows: the header line above them and the footer line below
/// (both left out with `--no-legend`, as systemctl does).
pub struct Legend<'a> {
    pub header: &'a [&'a str],
    pub footer: String,
    pub show: bool,
}

/// Writes rows as left-aligned columns, every cell escaped, under the legend's header and above
/// its footer.
pub fn table(
    out: &mut impl Write,
    legend: &Legend<'_>,
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = legend.header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    if legend.show {
        let header: Vec<String> = legend.header.iter().map(|h| h.to_string()).collect();
        line(&header)?;
    }
    for row in &rows {
        line(row)?;
    }
    if legend.show {
        writeln!(out, "\n{}", legend.footer)?;
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS.uuuuuu` in UTC.
pub fn format_usec(usec: i64) -> String {
    let secs = usec.div_euclid(1_000_000);
    let micros = usec.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(show: bool, rows: &[Vec<String>]) -> String {
        let legend = Legend {
            header: &["UNIT", "STATE"],
            footer: format!("{} units listed.", rows.len()),
            show,
        };
        let mut out = Vec::new();
        table(&mut out, &legend, rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_aligns_columns_between_header_and_footer() {
        let rows = vec![vec!["a.service".into(), "running".into()]];

        assert_eq!(
            render(true, &rows),
            "UNIT       STATE\na.service  running\n\n1 units listed.\n"
        );
    }

    #[test]
    fn table_without_legend_has_only_the_rows() {
        let rows = vec![vec!["a.service".into(), "running".into()]];

        assert_eq!(render(false, &rows), "a.service  running\n");
    }

    #[test]
    fn table_cells_are_escaped_and_aligned_by_their_escaped_width() {
        let rows = vec![
            vec!["\x1b[2J".into(), "x".into()],
            vec!["b".into(), "y".into()],
        ];

        assert_eq!(render(false, &rows), "\\x1b[2J  x\nb        y\n");
    }

    #[test]
    fn epoch_formats_as_1970() {
        assert_eq!(format_usec(0), "1970-01-01 00:00:00.000000");
    }

    #[test]
    fn known_date_formats_correctly() {
        // 2026-11-28 12:34:56.5 UTC
        assert_eq!(
            format_usec(1_795_869_296_500_000),
            "2026-11-28 12:34:56.500000"
        );
    }
}

/// Bytes as systemctl shows them: `512B`, `1.5K`, `12.3M`, `2.0G` (powers of 1024).
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// CPU time as systemctl shows it: `830us`, `12ms`, `1.250s`, `2min 3.500s`.
pub fn format_cpu_time(usec: i64) -> String {
    match usec {
        ..1_000 => format!("{usec}us"),
        1_000..1_000_000 => format!("{}ms", usec / 1_000),
        1_000_000..60_000_000 => format!("{}.{:03}s", usec / 1_000_000, usec % 1_000_000 / 1_000),
        _ => format!(
            "{}min {}.{:03}s",
            usec / 60_000_000,
            usec % 60_000_000 / 1_000_000,
            usec % 1_000_000 / 1_000
        ),
    }
}

#[cfg(test)]
mod accounting_tests {
    use super::*;

    #[test]
    fn bytes_and_cpu_time_read_as_systemctl_shows_them() {
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1536), "1.5K");
        assert_eq!(format_bytes(64 << 20), "64.0M");
        assert_eq!(format_cpu_time(830), "830us");
        assert_eq!(format_cpu_time(12_345), "12ms");
        assert_eq!(format_cpu_time(1_250_000), "1.250s");
        assert_eq!(format_cpu_time(123_500_000), "2min 3.500s");
    }
}
