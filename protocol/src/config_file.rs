//! The TOML configuration files of both daemons: `berthd.toml` and the helper's floor,
//! `helper.toml`. Each daemon declares its keys as a serde struct (`deny_unknown_fields`, every
//! key optional); reading it, and errors that name the file, line and key, are here.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is absent when the file is not TOML at a line that names none.
    #[error("{}:{line}: {}{reason}", path.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: Option<String>,
        reason: String,
    },
}

/// A value the file holds that its daemon cannot use, although its type is right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The keys the error is about; it is reported at the first the file sets.
    pub keys: &'static [&'static str],
    pub reason: String,
}

/// A daemon's configuration: every key has a default, so a missing file is the default.
pub trait ConfigFile: DeserializeOwned + Default {
    /// Checks what the types alone do not (ranges, absolute paths).
    fn check(&self) -> Result<(), KeyError>;
}

/// Reads `path` as a `T`; a missing file means `T::default()`.
pub fn load<T: ConfigFile>(path: &Path) -> Result<T, ConfigFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(ConfigFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses `text`, the contents of `path`, as a `T`.
pub fn parse<T: ConfigFile>(path: &Path, text: &str) -> Result<T, ConfigFileError> {
    let invalid = |line, key, reason: &str| ConfigFileError::Invalid {
        path: path.to_owned(),
        line,
        key,
        // One line, as the daemons report it.
        reason: reason.replace('\n', " "),
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        invalid(line, key_on_line(text, line), e.message())
    })?;
    // Where each top-level key's assignment lies, to name the key of an error's position.
    let keys: Vec<(String, Range<usize>)> = doc
        .get_ref()
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), k.span().start..v.span().end))
        .collect();
    let config = T::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| match e.span() {
        Some(span) => {
            let key = keys
                .iter()
                .find(|(_, range)| range.contains(&span.start))
                .map(|(k, _)| k.clone());
            invalid(line_of(text, span.start), key, e.message())
        }
        None => invalid(1, None, e.message()),
    })?;
    config.check().map_err(|e| {
        let (key, line) = e
            .keys
            .iter()
            .find_map(|k| keys.iter().find(|(name, _)| name == k))
            .map_or(
                (e.keys.first().copied().unwrap_or_default(), 1),
                |(k, r)| (k.as_str(), line_of(text, r.start)),
            );
        invalid(line, Some(key.to_string()), &e.reason)
    })?;
    Ok(config)
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a line that does not parse seems to assign, if it looks like one.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let key = text.lines().nth(line - 1)?.split('=').next()?.trim();
    let plausible = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.\"'".contains(&b));
    plausible.then(|| key.to_string())
}

/// The dynamic uid range both daemons use unless configured otherwise (as systemd's
/// DynamicUser= range).
pub const DEFAULT_UID_RANGE: (u32, u32) = (61184, 65519);

/// The range of host ids both daemons hand out and accept user blocks from (the image's own
/// users, one block of 65536 ids per attachment) unless configured otherwise
/// (`user_block_min`, `user_block_max`): systemd's container range (systemd's UIDS-GIDS.md).
pub const DEFAULT_USER_BLOCK_RANGE: (u32, u32) = (524_288, 1_879_048_191);

/// Checks a dynamic uid range (`dynamic_uid_min`, `dynamic_uid_max`): non-empty, and never 0.
pub fn check_uid_range(min: u32, max: u32) -> Result<(), KeyError> {
    let error = |keys, reason: &str| {
        Err(KeyError {
            keys,
            reason: reason.to_string(),
        })
    };
    if min == 0 {
        return error(&["dynamic_uid_min"], "the dynamic range must exclude 0");
    }
    if min > max {
        return error(
            &["dynamic_uid_max", "dynamic_uid_min"],
            &format!("the dynamic range {min}-{max} is empty"),
        );
    }
    Ok(())
}

/// Checks a uid block range (`user_block_min`, `user_block_max`): it must hold at least one
/// whole block of [`crate::sandbox::UID_BLOCK_SIZE`] ids starting at a multiple of that size,
/// and never id 0 (host root).
pub fn check_user_block_range(min: u32, max: u32) -> Result<(), KeyError> {
    if min == 0 {
        return Err(KeyError {
            keys: &["user_block_min"],
            reason: "the uid block range must exclude 0".to_string(),
        });
    }
    if first_block_in(min, max).is_none() {
        return Err(KeyError {
            keys: &["user_block_max", "user_block_min"],
            reason: format!(
                "the uid block range {min}-{max} holds no whole block of {} ids starting at a \
                 multiple of {}",
                crate::sandbox::UID_BLOCK_SIZE,
                crate::sandbox::UID_BLOCK_SIZE
            ),
        });
    }
    Ok(())
}

/// The first id of the lowest whole, aligned uid block inside `min..=max`, if there is one.
pub fn first_block_in(min: u32, max: u32) -> Option<u32> {
    let size = crate::sandbox::UID_BLOCK_SIZE;
    let first = min.checked_next_multiple_of(size)?;
    let last = first.checked_add(size - 1)?;
    (last <= max).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        dynamic_uid_min: u32,
        dynamic_uid_max: u32,
        name: String,
        list: Vec<String>,
    }

    impl ConfigFile for Sample {
        fn check(&self) -> Result<(), KeyError> {
            if self.dynamic_uid_min == 0 && self.dynamic_uid_max == 0 {
                return Ok(());
            }
            check_uid_range(self.dynamic_uid_min, self.dynamic_uid_max)
        }
    }

    fn error_of(text: &str) -> (usize, Option<String>, String) {
        match parse::<Sample>(Path::new("/etc/x.toml"), text) {
            Err(ConfigFileError::Invalid {
                line, key, reason, ..
            }) => (line, key, reason),
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    #[test]
    fn a_uid_block_range_must_hold_one_aligned_block_and_not_root() {
        assert!(
            check_user_block_range(DEFAULT_USER_BLOCK_RANGE.0, DEFAULT_USER_BLOCK_RANGE.1).is_ok()
        );
        assert!(check_user_block_range(65_536, 131_071).is_ok());
        assert_eq!(
            check_user_block_range(0, 200_000).unwrap_err().keys,
            ["user_block_min"]
        );
        assert_eq!(
            check_user_block_range(65_537, 196_606).unwrap_err().keys,
            ["user_block_max", "user_block_min"]
        );
        assert!(check_user_block_range(u32::MAX - 10, u32::MAX).is_err());
    }

    #[test]
    fn the_first_block_of_a_range_is_rounded_up_to_the_block_size() {
        assert_eq!(first_block_in(524_288, 1_879_048_191), Some(524_288));
        assert_eq!(first_block_in(524_289, 1_879_048_191), Some(589_824));
        assert_eq!(first_block_in(65_536, 131_070), None);
    }

    #[test]
    fn a_missing_file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();

        let loaded: Sample = load(&dir.path().join("none")).unwrap();

        assert_eq!(loaded, Sample::default());
    }

    #[test]
    fn a_comment_after_a_value_is_not_part_of_it() {
        let parsed: Sample = parse(Path::new("x"), "name = \"nogroup\" # ops team\n").unwrap();

        assert_eq!(parsed.name, "nogroup");
    }

    #[test]
    fn underscores_in_numbers_and_multi_line_arrays_are_toml() {
        let parsed: Sample = parse(
            Path::new("x"),
            "dynamic_uid_min = 64_000\ndynamic_uid_max = 64_100\nlist = [\n  \"a\",\n  \"b\",\n]\n",
        )
        .unwrap();

        assert_eq!(
            (parsed.dynamic_uid_min, parsed.dynamic_uid_max),
            (64_000, 64_100)
        );
        assert_eq!(parsed.list, ["a", "b"]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let (line, key, reason) = error_of("# c\nname = \"x\"\nallow_root = true\n");

        assert_eq!((line, key.as_deref()), (3, Some("allow_root")));
        assert!(reason.contains("unknown field"), "{reason}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_key_and_line() {
        let (line, key, reason) = error_of("name = \"x\"\n\ndynamic_uid_min = \"many\"\n");

        assert_eq!((line, key.as_deref()), (3, Some("dynamic_uid_min")));
        assert!(reason.contains("invalid type"), "{reason}");
    }

    #[test]
    fn a_wrong_type_inside_a_multi_line_array_names_the_array_at_the_element_line() {
        let (line, key, _) = error_of("list = [\n  \"a\",\n  3,\n]\n");

        assert_eq!((line, key.as_deref()), (3, Some("list")));
    }

    #[test]
    fn a_line_that_is_not_toml_is_named_with_its_key() {
        let (line, key, _) = error_of("name = \"x\"\nname2 = nogroup # ops\n");

        assert_eq!((line, key.as_deref()), (2, Some("name2")));
    }

    #[test]
    fn a_failed_check_names_the_key_the_file_sets() {
        let (line, key, reason) = error_of("\ndynamic_uid_min = 70000\n");

        assert_eq!((line, key.as_deref()), (2, Some("dynamic_uid_min")));
        assert!(reason.contains("empty"), "{reason}");
    }

    #[test]
    fn the_error_is_one_line_with_file_line_and_key() {
        let err = parse::<Sample>(Path::new("/etc/x.toml"), "name = 3\n").unwrap_err();

        let text = err.to_string();

        assert!(text.starts_with("/etc/x.toml:1: name: "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn an_empty_or_zero_uid_range_is_refused() {
        assert!(check_uid_range(0, 10).is_err());
        assert!(check_uid_range(20, 10).is_err());
        assert!(check_uid_range(10, 10).is_ok());
    }
}
