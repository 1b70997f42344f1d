//! Names callers send (unit names, image names, paths): what a valid one is, checked before
//! anything that grows with its length.
//!
//! Every name a caller sends is checked here before berthd looks it up, canonicalizes it or
//! puts it in a path, and a refused name is not echoed back: the reply would grow with it.

/// Longest unit name, as systemd's `UNIT_NAME_MAX`.
pub const UNIT_NAME_MAX: usize = 255;

/// Longest image name.
pub const IMAGE_NAME_MAX: usize = 128;

/// Longest path, including its terminating NUL, as Linux's `PATH_MAX`.
pub const PATH_MAX: usize = 4096;

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("it starts with a dot")]
    LeadingDot,
    #[error("it holds a character other than {allowed}")]
    Character { allowed: &'static str },
    #[error("it has no type suffix such as .service")]
    NoSuffix,
    #[error("'@' must separate a non-empty template name from its instance, once")]
    Template,
    #[error("it is not an absolute path")]
    NotAbsolute,
    #[error("it contains a NUL byte")]
    Nul,
}

/// The characters of a unit name, as systemd's `VALID_CHARS` plus `@`.
fn is_unit_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-' | b'\\')
}

const UNIT_NAME_CHARS: &str = "letters, digits, ':', '_', '.', '@', '-' and '\\'";

/// Checks length, first byte and characters, in that order: a name too long costs nothing
/// beyond its length check.
fn check_chars(
    name: &str,
    max: usize,
    allowed: &'static str,
    is_allowed: fn(u8) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong { max });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    if !name.bytes().all(is_allowed) {
        return Err(NameError::Character { allowed });
    }
    Ok(())
}

/// Checks a unit name as systemd bounds it: at most 255 bytes of `[A-Za-z0-9:_.@\-\\]`, a
/// non-empty name before a type suffix, and at most one `@` after a non-empty template name
/// (`foo@.service` is a template, `foo@bar.service` an instance). berth also refuses a leading
/// dot: unit names become file names.
pub fn check_unit_name(name: &str) -> Result<(), NameError> {
    check_chars(name, UNIT_NAME_MAX, UNIT_NAME_CHARS, is_unit_name_char)?;
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return Err(NameError::NoSuffix);
    };
    if stem.is_empty() || suffix.is_empty() {
        return Err(NameError::NoSuffix);
    }
    match stem.split_once('@') {
        Some((prefix, instance)) if prefix.is_empty() || instance.contains('@') => {
            Err(NameError::Template)
        }
        _ => Ok(()),
    }
}

/// The unit a `UNIT` argument names, checked: `hello` means `hello.service` (DESIGN.md §3).
/// Its length is checked before anything is allocated for it.
pub fn checked_unit_name(arg: &str) -> Result<String, NameError> {
    if arg.len() > UNIT_NAME_MAX {
        return Err(NameError::TooLong { max: UNIT_NAME_MAX });
    }
    let name = crate::manager::unit_name(arg);
    check_unit_name(&name)?;
    Ok(name)
}

/// Whether unit `name` (checked) is a template, `foo@.service`: it describes instances and is
/// never started itself.
pub fn is_template(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, _)| stem.ends_with('@'))
}

/// The template of instance `name` (checked): `foo@bar.service` → `foo@.service`; `None` for a
/// unit that is not an instance (a template included).
pub fn template_of(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// Checks a unit prefix (`attach IMAGE PREFIX...`): the start of a unit name.
pub fn check_unit_prefix(prefix: &str) -> Result<(), NameError> {
    check_chars(prefix, UNIT_NAME_MAX, UNIT_NAME_CHARS, is_unit_name_char)
}

/// Checks an image name: `[A-Za-z0-9._-]`, not starting with `.`, 1 to 128 bytes.
pub fn check_image_name(name: &str) -> Result<(), NameError> {
    check_chars(
        name,
        IMAGE_NAME_MAX,
        "letters, digits, '.', '_' and '-'",
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
    )
}

/// Checks a profile name (`default`, `default@1`): as an image name, with `@` before a level.
pub fn check_profile_name(name: &str) -> Result<(), NameError> {
    check_chars(
        name,
        IMAGE_NAME_MAX,
        "letters, digits, '.', '_', '-' and '@'",
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'),
    )
}

/// Checks an absolute path: shorter than `PATH_MAX`, without NUL bytes.
pub fn check_path(path: &str) -> Result<(), NameError> {
    if !path.starts_with('/') {
        return Err(NameError::NotAbsolute);
    }
    if path.len() >= PATH_MAX {
        return Err(NameError::TooLong { max: PATH_MAX - 1 });
    }
    if path.contains('\0') {
        return Err(NameError::Nul);
    }
    Ok(())
}

/// Checks an `IMAGE` argument: an absolute path, or an image name.
pub fn check_image_arg(arg: &str) -> Result<(), NameError> {
    if arg.starts_with('/') {
        check_path(arg)
    } else {
        check_image_name(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_unit_names() {
        let longest = format!("{}.service", "a".repeat(UNIT_NAME_MAX - ".service".len()));
        for name in [
            "a.service",
            "foo@.service",
            "foo@bar.service",
            "a:b_c-d.e.service",
            "foo@a\\x2db.service",
            longest.as_str(),
        ] {
            assert_eq!(check_unit_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_unit_names() {
        let long = format!("{}.service", "a".repeat(UNIT_NAME_MAX));
        for name in [
            "",
            ".service",
            ".a.service",
            "noext",
            "a.",
            "@x.service",
            "a@b@c.service",
            "a b.service",
            "a/b.service",
            "a\0b.service",
            "a\x1bb.service",
            "a\nb.service",
            "ä.service",
            long.as_str(),
        ] {
            assert!(check_unit_name(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn templates_and_instances_are_told_apart() {
        assert!(is_template("foo@.service"));
        assert!(!is_template("foo@bar.service"));
        assert!(!is_template("foo.service"));
        assert_eq!(
            template_of("foo@bar.service").as_deref(),
            Some("foo@.service")
        );
        assert_eq!(
            template_of("a-b@x.y.service").as_deref(),
            Some("a-b@.service")
        );
        assert_eq!(template_of("foo@.service"), None);
        assert_eq!(template_of("foo.service"), None);
    }

    #[test]
    fn a_unit_argument_gets_its_suffix_and_is_checked() {
        assert_eq!(checked_unit_name("hello").unwrap(), "hello.service");
        assert_eq!(checked_unit_name("hello.service").unwrap(), "hello.service");
        assert_eq!(
            checked_unit_name("a/x"),
            Err(NameError::Character {
                allowed: UNIT_NAME_CHARS
            })
        );
    }

    #[test]
    fn a_unit_argument_too_long_with_its_suffix_is_refused() {
        let stem = "a".repeat(UNIT_NAME_MAX - 2);

        assert_eq!(
            checked_unit_name(&stem),
            Err(NameError::TooLong { max: UNIT_NAME_MAX })
        );
    }

    #[test]
    fn a_huge_unit_argument_is_refused_by_its_length() {
        let huge = "a".repeat(1 << 20);

        assert_eq!(
            checked_unit_name(&huge),
            Err(NameError::TooLong { max: UNIT_NAME_MAX })
        );
    }

    #[test]
    fn image_arguments_are_names_or_absolute_paths() {
        assert_eq!(check_image_arg("hello_1.2"), Ok(()));
        assert_eq!(check_image_arg("/srv/images/hello"), Ok(()));
        assert!(check_image_arg("a/b").is_err());
        assert!(check_image_arg(&"a".repeat(IMAGE_NAME_MAX + 1)).is_err());
        assert!(check_image_arg("/srv/a\0b").is_err());
        assert!(check_image_arg(&format!("/{}", "a".repeat(PATH_MAX))).is_err());
    }
}
