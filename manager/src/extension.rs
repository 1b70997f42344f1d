//! Extension images (sysext-style) layered over an image root, as portabled's `--extension`.
//!
//! An extension is an image tree like any other, read through its own [`ImageRoot`]. It must
//! carry `/usr/lib/extension-release.d/extension-release.NAME`, where NAME is the extension
//! image's name (portabled naming: `app0_1.2` is `app0`), and that file must fit the base
//! image's os-release by systemd-sysext's rules ([`check_compatible`]). `--force` relaxes only
//! the name: then the one `extension-release.*` file in that directory is used.
//!
//! In the sandbox the extensions lie over the image in a read-only overlayfs, the last one on
//! top; units are looked up as that overlay shows them ([`find_units_layered`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::image::identity::ImageIdentity;
use crate::image::os_release::{self, OsRelease};
use crate::image::{self, FoundUnit, ImageError, ImageRoot, ImageSource, OpenedImage, UNIT_DIRS};

/// Where an extension keeps its release file, inside the extension.
pub const RELEASE_DIR: &str = "/usr/lib/extension-release.d";
/// The release file's name before its `NAME`.
pub const RELEASE_PREFIX: &str = "extension-release.";
/// Entries read from [`RELEASE_DIR`] when looking for the one release file (`--force`).
pub const MAX_RELEASE_DIR_ENTRIES: usize = 1024;
/// `ID=` of an extension that fits any base image.
const ANY_ID: &str = "_any";

#[derive(Debug, Error)]
pub enum ExtensionError {
    #[error("cannot open extension {extension}: {source}")]
    Open {
        extension: String,
        #[source]
        source: ImageError,
    },
    #[error("cannot identify extension {extension}: {source}")]
    Identify {
        extension: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "extension {extension} lacks {RELEASE_DIR}/{RELEASE_PREFIX}{name}, refusing (attach \
         with --force to accept a release file of another name)"
    )]
    NoRelease { extension: String, name: String },
    #[error("extension {extension} has no {RELEASE_DIR}/{RELEASE_PREFIX}* file, refusing")]
    NoReleaseAtAll { extension: String },
    #[error(
        "extension {extension} has several release files ({}) and none named \
         {RELEASE_PREFIX}{name}, refusing",
        found.join(", ")
    )]
    AmbiguousRelease {
        extension: String,
        name: String,
        found: Vec<String>,
    },
    #[error("cannot read the release file of extension {extension}: {source}")]
    ReadRelease {
        extension: String,
        #[source]
        source: ImageError,
    },
    #[error(
        "image {image} has no ID= in its os-release, so no extension can be checked against it"
    )]
    BaseWithoutId { image: String },
    #[error("extension {extension} has no ID= in its release file {file}, refusing")]
    ExtensionWithoutId { extension: String, file: String },
    #[error(
        "extension {extension} is for ID={found}, the image is ID={expected}{}",
        like_hint(like)
    )]
    IdMismatch {
        extension: String,
        found: String,
        expected: String,
        like: Option<String>,
    },
    #[error(
        "extension {extension} has {key}={found}, the image has {}, refusing",
        expected.as_deref().map_or_else(|| format!("no {key}"), |v| format!("{key}={v}"))
    )]
    LevelMismatch {
        extension: String,
        key: &'static str,
        found: String,
        expected: Option<String>,
    },
    #[error("extension {extension} has SYSEXT_SCOPE={scope}, which does not include 'portable'")]
    WrongScope { extension: String, scope: String },
}

fn like_hint(like: &Option<String>) -> String {
    like.as_deref().map_or_else(
        || ", refusing".into(),
        |l| format!(" (ID_LIKE={l}), refusing"),
    )
}

/// An extension's release file, as read.
#[derive(Debug, Clone)]
pub struct ExtensionRelease {
    /// The file's name, `extension-release.NAME`.
    pub file: String,
    /// Its text, for `inspect --cat`.
    pub text: String,
    pub fields: OsRelease,
}

/// An extension image opened for an attach.
#[derive(Debug)]
pub struct Extension {
    /// Its image name (`app0` for `app0_1.2.raw`).
    pub name: String,
    /// Where it was opened from (canonical).
    pub path: PathBuf,
    pub opened: OpenedImage,
    pub release: ExtensionRelease,
    /// The release file is not named after the extension (accepted with `--force`).
    pub relaxed: bool,
    pub identity: ImageIdentity,
    /// Passed in by the client as a descriptor (berthd keeps it, as it keeps an image's).
    pub by_descriptor: bool,
}

/// Opens extension `name` at `path` with berthd's rights and reads its release file (see
/// [`read_release`]).
pub fn open(name: &str, path: &Path, force: bool) -> Result<Extension, ExtensionError> {
    let opened = image::open(ImageSource::Path(path)).map_err(|source| ExtensionError::Open {
        extension: path.display().to_string(),
        source,
    })?;
    from_opened(name, path, opened, false, force)
}

/// Extension `name` known by `path`, already `opened` (by path, or through the descriptor a
/// client passed: `by_descriptor`), with its release file read (see [`read_release`]).
pub fn from_opened(
    name: &str,
    path: &Path,
    opened: OpenedImage,
    by_descriptor: bool,
    force: bool,
) -> Result<Extension, ExtensionError> {
    let release = read_release(&opened.root, name, force)?;
    let identity = opened
        .root
        .identity()
        .map_err(|source| ExtensionError::Identify {
            extension: path.display().to_string(),
            source,
        })?;
    Ok(Extension {
        name: name.to_owned(),
        path: path.to_owned(),
        relaxed: release.file != format!("{RELEASE_PREFIX}{name}"),
        opened,
        release,
        identity,
        by_descriptor,
    })
}

/// Reads extension `name`'s release file from `root`. Without `force` it must be named after
/// the extension; with it, the single `extension-release.*` file is taken if that is missing.
pub fn read_release(
    root: &ImageRoot,
    name: &str,
    force: bool,
) -> Result<ExtensionRelease, ExtensionError> {
    let extension = || root.path().display().to_string();
    let read = |file: &str| {
        let path = format!("{RELEASE_DIR}/{file}");
        root.read_bounded(&path, image::MAX_OS_RELEASE_SIZE)
            .map(|bytes| {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                ExtensionRelease {
                    file: file.to_owned(),
                    fields: os_release::parse(&text),
                    text,
                }
            })
    };
    let file = format!("{RELEASE_PREFIX}{name}");
    match read(&file) {
        Ok(release) => return Ok(release),
        Err(ImageError::NotFound { .. }) if force => {}
        Err(ImageError::NotFound { .. }) => {
            return Err(ExtensionError::NoRelease {
                extension: extension(),
                name: name.to_owned(),
            });
        }
        Err(source) => {
            return Err(ExtensionError::ReadRelease {
                extension: extension(),
                source,
            });
        }
    }
    let names = match root.list_dir(RELEASE_DIR, MAX_RELEASE_DIR_ENTRIES) {
        Ok(names) => names,
        Err(ImageError::NotFound { .. }) => Vec::new(),
        Err(source) => {
            return Err(ExtensionError::ReadRelease {
                extension: extension(),
                source,
            });
        }
    };
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| n.len() > RELEASE_PREFIX.len() && n.starts_with(RELEASE_PREFIX))
        .collect();
    found.sort();
    match found.as_slice() {
        [] => Err(ExtensionError::NoReleaseAtAll {
            extension: extension(),
        }),
        [only] => read(only).map_err(|source| ExtensionError::ReadRelease {
            extension: extension(),
            source,
        }),
        _ => Err(ExtensionError::AmbiguousRelease {
            extension: extension(),
            name: name.to_owned(),
            found,
        }),
    }
}

/// systemd-sysext's checks of an extension against the image it extends (`image` and
/// `extension` name them in messages):
/// - `ID` must equal the image's `ID`, be one of its `ID_LIKE`, or be `_any`;
/// - unless it is `_any`: if the extension sets `SYSEXT_LEVEL`, the image's must be equal;
///   otherwise, if it sets `VERSION_ID`, the image's must be equal;
/// - `SYSEXT_SCOPE`, if set, must include `portable`.
///
/// An image without `ID` cannot be checked and is refused (portabled once crashed on one).
pub fn check_compatible(
    base: &OsRelease,
    release: &ExtensionRelease,
    image: &str,
    extension: &str,
) -> Result<(), ExtensionError> {
    let ext = &release.fields;
    let base_id =
        base.get("ID")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ExtensionError::BaseWithoutId {
                image: image.to_owned(),
            })?;
    let id = ext.get("ID").filter(|v| !v.is_empty()).ok_or_else(|| {
        ExtensionError::ExtensionWithoutId {
            extension: extension.to_owned(),
            file: release.file.clone(),
        }
    })?;
    if let Some(scope) = ext.get("SYSEXT_SCOPE")
        && !scope.split_whitespace().any(|s| s == "portable")
    {
        return Err(ExtensionError::WrongScope {
            extension: extension.to_owned(),
            scope: scope.to_owned(),
        });
    }
    if id == ANY_ID {
        return Ok(());
    }
    let like = base.get("ID_LIKE");
    if id != base_id && !like.is_some_and(|l| l.split_whitespace().any(|l| l == id)) {
        return Err(ExtensionError::IdMismatch {
            extension: extension.to_owned(),
            found: id.to_owned(),
            expected: base_id.to_owned(),
            like: like.map(str::to_owned),
        });
    }
    // SYSEXT_LEVEL is the extension API level; it takes precedence over VERSION_ID, which
    // pins an extension to one release of the base.
    for key in ["SYSEXT_LEVEL", "VERSION_ID"] {
        if let Some(found) = ext.get(key) {
            let expected = base.get(key);
            if expected != Some(found) {
                return Err(ExtensionError::LevelMismatch {
                    extension: extension.to_owned(),
                    key,
                    found: found.to_owned(),
                    expected: expected.map(str::to_owned),
                });
            }
            break;
        }
    }
    Ok(())
}

/// The prefixes the image and its extensions allow together: the union of every layer's
/// `PORTABLE_PREFIXES` (empty, meaning no restriction, only when no layer declares any).
pub fn allowed_prefixes<'a>(layers: impl IntoIterator<Item = &'a OsRelease>) -> Vec<String> {
    let mut allowed: Vec<String> = Vec::new();
    for os in layers {
        for prefix in os.portable_prefixes() {
            if !allowed.contains(&prefix) {
                allowed.push(prefix);
            }
        }
    }
    allowed
}

/// The `.service` units matching `prefixes` as the overlay of `layers` (top first) shows
/// them: a unit directory earlier in [`UNIT_DIRS`] wins over a later one whatever the layer
/// (the overlay merges `/etc/systemd/system` of every layer before `/usr/lib/...`), and within
/// one directory the upper layer wins. Sorted by name.
pub fn find_units_layered(
    layers: &[&ImageRoot],
    prefixes: &[String],
) -> Result<Vec<FoundUnit>, ImageError> {
    let mut chosen: BTreeMap<String, ((usize, usize), FoundUnit)> = BTreeMap::new();
    for (layer, root) in layers.iter().enumerate() {
        for unit in root.find_units(prefixes)? {
            let dir = UNIT_DIRS
                .iter()
                .position(|d| {
                    unit.path_in_image
                        .strip_prefix(d)
                        .is_some_and(|rest| rest.starts_with('/'))
                })
                .unwrap_or(UNIT_DIRS.len());
            let rank = (dir, layer);
            match chosen.get(&unit.name) {
                Some((best, _)) if *best <= rank => {}
                _ => {
                    chosen.insert(unit.name.clone(), (rank, unit));
                }
            }
        }
    }
    Ok(chosen.into_values().map(|(_, unit)| unit).collect())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    fn release(text: &str) -> ExtensionRelease {
        ExtensionRelease {
            file: "extension-release.app".into(),
            text: text.into(),
            fields: os_release::parse(text),
        }
    }

    fn check(base: &str, ext: &str) -> Result<(), ExtensionError> {
        check_compatible(&os_release::parse(base), &release(ext), "base", "app")
    }

    #[test]
    fn the_same_id_and_version_fit() {
        assert!(check("ID=debian\nVERSION_ID=12\n", "ID=debian\nVERSION_ID=12\n").is_ok());
    }

    #[test]
    fn another_id_is_refused() {
        let refused = check("ID=debian\n", "ID=fedora\n");

        assert!(
            matches!(&refused, Err(ExtensionError::IdMismatch { found, expected, .. })
                if found == "fedora" && expected == "debian"),
            "{refused:?}"
        );
    }

    #[test]
    fn an_id_the_image_is_like_fits() {
        assert!(check("ID=ubuntu\nID_LIKE=\"debian\"\n", "ID=debian\n").is_ok());
    }

    #[test]
    fn any_id_fits_any_image_and_any_version() {
        assert!(check("ID=debian\nVERSION_ID=12\n", "ID=_any\nVERSION_ID=99\n").is_ok());
    }

    #[test]
    fn another_version_id_is_refused() {
        let refused = check("ID=debian\nVERSION_ID=12\n", "ID=debian\nVERSION_ID=11\n");

        assert!(
            matches!(
                &refused,
                Err(ExtensionError::LevelMismatch {
                    key: "VERSION_ID",
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_version_id_against_an_image_without_one_is_refused() {
        let refused = check("ID=debian\n", "ID=debian\nVERSION_ID=11\n").unwrap_err();

        assert!(
            refused.to_string().contains("the image has no VERSION_ID"),
            "{refused}"
        );
    }

    #[test]
    fn an_extension_without_version_id_fits_any_version() {
        assert!(check("ID=debian\nVERSION_ID=12\n", "ID=debian\n").is_ok());
    }

    #[test]
    fn another_sysext_level_is_refused_and_it_outranks_version_id() {
        let base = "ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=2\n";

        let other_level = check(base, "ID=debian\nSYSEXT_LEVEL=3\n");
        let same_level_other_version = check(base, "ID=debian\nSYSEXT_LEVEL=2\nVERSION_ID=11\n");

        assert!(
            matches!(
                &other_level,
                Err(ExtensionError::LevelMismatch {
                    key: "SYSEXT_LEVEL",
                    ..
                })
            ),
            "{other_level:?}"
        );
        assert!(
            same_level_other_version.is_ok(),
            "{same_level_other_version:?}"
        );
    }

    #[test]
    fn an_image_without_id_is_refused_not_a_crash() {
        assert!(matches!(
            check("NAME=x\n", "ID=_any\n"),
            Err(ExtensionError::BaseWithoutId { .. })
        ));
    }

    #[test]
    fn an_extension_without_id_is_refused() {
        assert!(matches!(
            check("ID=debian\n", "VERSION_ID=1\n"),
            Err(ExtensionError::ExtensionWithoutId { .. })
        ));
    }

    #[test]
    fn a_scope_without_portable_is_refused() {
        assert!(matches!(
            check("ID=debian\n", "ID=debian\nSYSEXT_SCOPE=system initrd\n"),
            Err(ExtensionError::WrongScope { .. })
        ));
        assert!(check("ID=debian\n", "ID=debian\nSYSEXT_SCOPE=system portable\n").is_ok());
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let path = dir.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
        dir
    }

    fn root(dir: &Path) -> ImageRoot {
        ImageRoot::open(dir).unwrap()
    }

    #[test]
    fn the_release_file_named_after_the_extension_is_read() {
        let dir = tree(&[(
            "usr/lib/extension-release.d/extension-release.app",
            "ID=x\n",
        )]);

        let found = read_release(&root(dir.path()), "app", false).unwrap();

        assert_eq!(
            (found.file.as_str(), found.fields.get("ID")),
            ("extension-release.app", Some("x"))
        );
    }

    #[test]
    fn a_release_file_of_another_name_needs_force() {
        let dir = tree(&[(
            "usr/lib/extension-release.d/extension-release.other",
            "ID=x\n",
        )]);

        let strict = read_release(&root(dir.path()), "app", false);
        let forced = read_release(&root(dir.path()), "app", true);

        assert!(
            matches!(strict, Err(ExtensionError::NoRelease { .. })),
            "{strict:?}"
        );
        assert_eq!(forced.unwrap().file, "extension-release.other");
    }

    #[test]
    fn force_does_not_pick_one_of_several_release_files() {
        let dir = tree(&[
            ("usr/lib/extension-release.d/extension-release.a", "ID=x\n"),
            ("usr/lib/extension-release.d/extension-release.b", "ID=x\n"),
        ]);

        let forced = read_release(&root(dir.path()), "app", true);

        assert!(
            matches!(forced, Err(ExtensionError::AmbiguousRelease { .. })),
            "{forced:?}"
        );
    }

    #[test]
    fn a_release_file_symlinked_to_the_host_is_not_followed_out() {
        let dir = tree(&[]);
        fs::create_dir_all(dir.path().join("usr/lib/extension-release.d")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/os-release",
            dir.path()
                .join("usr/lib/extension-release.d/extension-release.app"),
        )
        .unwrap();

        let read = read_release(&root(dir.path()), "app", false);

        // Resolved inside the extension, where /etc/os-release does not exist.
        assert!(
            matches!(read, Err(ExtensionError::NoRelease { .. })),
            "{read:?}"
        );
    }

    #[test]
    fn prefixes_of_all_layers_are_allowed_together() {
        let base = os_release::parse("PORTABLE_PREFIXES=app\n");
        let ext = os_release::parse("PORTABLE_PREFIXES=\"app extra\"\n");
        let none = os_release::parse("ID=x\n");

        assert_eq!(allowed_prefixes([&base, &ext, &none]), ["app", "extra"]);
        assert!(allowed_prefixes([&none]).is_empty());
    }

    #[test]
    fn units_come_from_the_top_layer_within_a_directory_and_from_etc_over_usr() {
        let unit = |n: &str| format!("[Service]\nExecStart=/bin/{n}\n");
        let base = tree(&[
            ("usr/lib/systemd/system/app.service", &unit("base")),
            ("etc/systemd/system/app-etc.service", &unit("base")),
            ("usr/lib/systemd/system/app-base.service", &unit("base")),
        ]);
        let ext = tree(&[
            ("usr/lib/systemd/system/app.service", &unit("ext")),
            ("usr/lib/systemd/system/app-etc.service", &unit("ext")),
            ("usr/lib/systemd/system/app-new.service", &unit("ext")),
        ]);
        let (base, ext) = (root(base.path()), root(ext.path()));

        let found = find_units_layered(&[&ext, &base], &["app".into()]).unwrap();

        let shown: Vec<(&str, &str)> = found
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.contents
                        .trim_start_matches("[Service]\nExecStart=/bin/")
                        .trim(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("app-base.service", "base"),
                ("app-etc.service", "base"),
                ("app-new.service", "ext"),
                ("app.service", "ext"),
            ]
        );
    }
}
