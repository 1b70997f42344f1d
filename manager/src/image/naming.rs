//! Image names and versions from file names, as portabled names them.

use std::path::Path;

use berth_protocol::names;

use super::ImageError;

/// portabled's image naming: the base name without `.raw`, split at the first `_` into name
/// and version (`foo_1.2.raw` is `foo`, version `1.2`). The name is not validated here; see
/// [`validate_image_name`].
pub fn image_name_from_path(path: &Path) -> (String, Option<String>) {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = base.strip_suffix(".raw").unwrap_or(&base);
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

#[cfg(test)]
mod tests {
    use super::*;

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
