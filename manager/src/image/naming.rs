//! Image names and versions from file names, as portabled names them, and the version order
//! that picks the newest (systemd's `strverscmp_improved`).

use std::cmp::Ordering;
use std::path::Path;

use berth_protocol::names;

use super::ImageError;

/// portabled's image naming: the base name without `.raw` (or the `.v` of a directory of
/// versions), split at the first `_` into name and version (`foo_1.2.raw` is `foo`, version
/// `1.2`). The name is not validated here; see [`validate_image_name`].
pub fn image_name_from_path(path: &Path) -> (String, Option<String>) {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = base
        .strip_suffix(".raw")
        .or_else(|| base.strip_suffix(".v"))
        .unwrap_or(&base);
    match stem.split_once('_') {
        Some((name, version)) => (
            name.to_owned(),
            (!version.is_empty()).then(|| version.to_owned()),
        ),
        None => (stem.to_owned(), None),
    }
}

/// Checks an image name (see [`names::check_image_name`]).
pub fn validate_image_name(name: &str) -> Result<(), ImageError> {
    names::check_image_name(name).map_err(|reason| ImageError::InvalidImageName {
        name: name.to_owned(),
        reason,
    })
}

/// Of the entries of a `NAME.v/` directory, the newest version of image `name`: entries named
/// `NAME_VERSION` or `NAME_VERSION.raw`, ordered by [`compare_versions`] (vpick's choice, without
/// its architecture and tries-left suffixes). `None` when no entry is a version of `name`.
pub fn newest_version<'a>(
    name: &str,
    entries: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    entries
        .into_iter()
        .filter_map(|entry| {
            let (entry_name, version) = image_name_from_path(Path::new(entry));
            (entry_name == name && !entry.starts_with('.'))
                .then_some(version)
                .flatten()
                .map(|version| (entry, version))
        })
        .max_by(|(_, a), (_, b)| compare_versions(a, b))
        .map(|(entry, _)| entry)
}

/// Orders two version strings as systemd's `strverscmp_improved` does: numeric segments compare
/// by value (`1.10` is newer than `1.2`, `007` equals `7`), a number is newer than letters,
/// `~` marks something older than anything (`1~rc1` is older than `1`), `-` starts a release
/// that is older than a further point release, `^` a patch newer than the bare version, and a
/// version with more segments is newer. Characters other than letters, digits and `~-^.` are
/// skipped.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let valid = |c: &u8| c.is_ascii_alphanumeric() || b"~-^.".contains(c);
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        a = skip_while(a, |c| !valid(c));
        b = skip_while(b, |c| !valid(c));
        // '~' sorts before everything, the end of the string included.
        match (a.first() == Some(&b'~'), b.first() == Some(&b'~')) {
            (true, true) => (a, b) = (&a[1..], &b[1..]),
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        if a.is_empty() || b.is_empty() {
            // The one with more segments is newer.
            return a.len().min(1).cmp(&b.len().min(1));
        }
        for separator in [b'-', b'^', b'.'] {
            match (a[0] == separator, b[0] == separator) {
                (true, true) => (a, b) = (&a[1..], &b[1..]),
                // A separator here against anything else: '-' and '.' make the older one,
                // and so does '^' (a patch of 1.2 sorts before 1.2.1).
                (true, false) => return Ordering::Less,
                (false, true) => return Ordering::Greater,
                (false, false) => {}
            }
        }
        let (a_rest, b_rest);
        if a.first().is_some_and(u8::is_ascii_digit) || b.first().is_some_and(u8::is_ascii_digit) {
            let a_digits = take_while(a, u8::is_ascii_digit);
            let b_digits = take_while(b, u8::is_ascii_digit);
            // A number is newer than no number (letters, or nothing left of this segment).
            let order = (!a_digits.is_empty()).cmp(&!b_digits.is_empty());
            if order != Ordering::Equal {
                return order;
            }
            let a_value = skip_while(a_digits, |c| *c == b'0');
            let b_value = skip_while(b_digits, |c| *c == b'0');
            let order = a_value
                .len()
                .cmp(&b_value.len())
                .then_with(|| a_value.cmp(b_value));
            if order != Ordering::Equal {
                return order;
            }
            (a_rest, b_rest) = (&a[a_digits.len()..], &b[b_digits.len()..]);
        } else {
            let a_letters = take_while(a, u8::is_ascii_alphabetic);
            let b_letters = take_while(b, u8::is_ascii_alphabetic);
            let common = a_letters.len().min(b_letters.len());
            let order = a_letters[..common]
                .cmp(&b_letters[..common])
                .then_with(|| a_letters.len().cmp(&b_letters.len()));
            if order != Ordering::Equal {
                return order;
            }
            (a_rest, b_rest) = (&a[a_letters.len()..], &b[b_letters.len()..]);
        }
        (a, b) = (a_rest, b_rest);
    }
}

fn take_while(s: &[u8], keep: impl Fn(&u8) -> bool) -> &[u8] {
    let end = s.iter().position(|c| !keep(c)).unwrap_or(s.len());
    &s[..end]
}

fn skip_while(s: &[u8], skip: impl Fn(&u8) -> bool) -> &[u8] {
    let start = s.iter().position(|c| !skip(c)).unwrap_or(s.len());
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_older(older: &str, newer: &str) {
        assert_eq!(
            compare_versions(older, newer),
            Ordering::Less,
            "{older} < {newer}"
        );
        assert_eq!(
            compare_versions(newer, older),
            Ordering::Greater,
            "{newer} > {older}"
        );
    }

    #[test]
    fn numeric_segments_compare_by_value() {
        assert_older("1.2", "1.10");
        assert_older("9", "10");
        assert_older("1.9.9", "1.10");
        assert_eq!(compare_versions("007", "7"), Ordering::Equal);
    }

    #[test]
    fn more_segments_are_newer() {
        assert_older("1.2", "1.2.1");
        assert_older("1", "1a");
    }

    #[test]
    fn tilde_is_older_than_anything() {
        assert_older("1~rc1", "1");
        assert_older("1.2~alpha", "1.2~beta");
        assert_older("1~", "1");
    }

    #[test]
    fn dash_release_is_older_than_a_point_release() {
        assert_older("123-9", "123.1-1");
        assert_older("1.2-1", "1.2-2");
    }

    #[test]
    fn caret_patch_is_newer_than_the_bare_version_and_older_than_a_point_release() {
        assert_older("1.2", "1.2^1");
        assert_older("1.2^1", "1.2.1");
    }

    #[test]
    fn numbers_are_newer_than_letters() {
        assert_older("1.a", "1.1");
        assert_older("abc", "abcd");
        assert_older("alpha", "beta");
    }

    #[test]
    fn equal_versions_are_equal() {
        assert_eq!(compare_versions("1.2.3", "1.2.3"), Ordering::Equal);
        assert_eq!(compare_versions("", ""), Ordering::Equal);
    }

    #[test]
    fn newest_version_picks_by_version_not_by_text() {
        let entries = ["foo_1.2.raw", "foo_1.10.raw", "foo_1.9.raw", "bar_9.raw"];

        assert_eq!(newest_version("foo", entries), Some("foo_1.10.raw"));
    }

    #[test]
    fn newest_version_takes_directories_and_skips_unversioned_and_hidden_entries() {
        let entries = ["foo", "foo_2", ".foo_9", "foo_1.raw", "foo.raw"];

        assert_eq!(newest_version("foo", entries), Some("foo_2"));
        assert_eq!(newest_version("none", entries), None);
    }

    #[test]
    fn a_v_directory_is_named_without_its_suffix() {
        assert_eq!(
            image_name_from_path(Path::new("/var/lib/portables/foo.v")),
            ("foo".into(), None)
        );
    }

    #[test]
    fn image_name_splits_name_and_version() {
        assert_eq!(
            image_name_from_path(Path::new("/var/lib/portables/foo_1.2.raw")),
            ("foo".into(), Some("1.2".into()))
        );
    }

    #[test]
    fn image_name_without_version() {
        assert_eq!(
            image_name_from_path(Path::new("/images/foo.raw")),
            ("foo".into(), None)
        );
        assert_eq!(
            image_name_from_path(Path::new("/images/foo/")),
            ("foo".into(), None)
        );
    }

    #[test]
    fn image_name_splits_at_the_first_underscore() {
        assert_eq!(
            image_name_from_path(Path::new("foo_1_2")),
            ("foo".into(), Some("1_2".into()))
        );
        assert_eq!(
            image_name_from_path(Path::new("foo_")),
            ("foo".into(), None)
        );
    }

    #[test]
    fn image_name_validation_accepts_portable_names() {
        assert!(validate_image_name("foo").is_ok());
        assert!(validate_image_name("foo-bar.v2_x").is_ok());
        assert!(validate_image_name(&"a".repeat(names::IMAGE_NAME_MAX)).is_ok());
    }

    #[test]
    fn image_name_validation_rejects_bad_names() {
        let long = "a".repeat(names::IMAGE_NAME_MAX + 1);
        for name in ["", ".hidden", "a/b", "a b", "ä", long.as_str()] {
            assert!(
                matches!(
                    validate_image_name(name),
                    Err(ImageError::InvalidImageName { .. })
                ),
                "{name:?}"
            );
        }
    }
}
