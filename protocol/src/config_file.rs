//! The `key = value` configuration files of both daemons (a TOML subset): `berthd.toml` and
//! the helper's floor, `helper.toml`. Each daemon knows its own keys; the file format is here.

use std::path::{Path, PathBuf};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A problem at a line of a file (0: the file as a whole).
pub type LineError = (usize, String);

/// Reads `path` and parses it with `parse`; a missing file is `default`.
pub fn load<T>(
    path: &Path,
    default: impl FnOnce() -> T,
    parse: impl FnOnce(&str) -> Result<T, LineError>,
) -> Result<T, ConfigFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|(line, reason)| ConfigFileError::Parse {
            path: path.to_owned(),
            line,
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(default()),
        Err(source) => Err(ConfigFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The `key = value` assignments of `text` with their line numbers (trimmed; blank and `#`
/// lines skipped).
pub fn assignments(text: &str) -> impl Iterator<Item = Result<(usize, &str, &str), LineError>> {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        Some(match line.split_once('=') {
            Some((key, value)) => Ok((index + 1, key.trim(), value.trim())),
            None => Err((index + 1, "expected key = value".to_string())),
        })
    })
}

/// `value` as a number, or an error for `line`.
pub fn number<T: std::str::FromStr>(line: usize, value: &str) -> Result<T, LineError> {
    value
        .parse()
        .map_err(|_| (line, format!("not a number: {value}")))
}

/// The dynamic uid range both daemons use unless configured otherwise (as systemd's
/// DynamicUser= range).
pub const DEFAULT_UID_RANGE: (u32, u32) = (61184, 65519);

/// Checks a dynamic uid range: non-empty, and never 0.
pub fn check_uid_range(min: u32, max: u32) -> Result<(), LineError> {
    if min == 0 || min > max {
        return Err((
            0,
            "the dynamic range must be non-empty and exclude 0".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_skip_blanks_and_comments_and_number_lines() {
        let found: Vec<_> = assignments("# c\n\n a = 1 \nb=x\n").collect();

        assert_eq!(found, [Ok((3, "a", "1")), Ok((4, "b", "x"))]);
    }

    #[test]
    fn a_line_without_equals_is_an_error_at_its_line() {
        let found: Vec<_> = assignments("a = 1\nnonsense\n").collect();

        assert_eq!(found[1], Err((2, "expected key = value".to_string())));
    }

    #[test]
    fn a_missing_file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();

        let loaded = load(&dir.path().join("none"), || 7, |_| Ok(1));

        assert_eq!(loaded.unwrap(), 7);
    }

    #[test]
    fn an_empty_or_zero_uid_range_is_refused() {
        assert!(check_uid_range(0, 10).is_err());
        assert!(check_uid_range(20, 10).is_err());
        assert!(check_uid_range(10, 10).is_ok());
    }
}
