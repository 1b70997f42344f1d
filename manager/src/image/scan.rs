//! What an image holds: its os-release, and the unit files that match a set of prefixes.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use berth_protocol::names;
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, OFlags};
use rustix::io::Errno;

use super::os_release::{self, OsRelease};
use super::{
    ImageError, ImageRoot, MAX_DIR_ENTRIES, MAX_OS_RELEASE_SIZE, MAX_UNIT_FILE_SIZE, MAX_UNITS,
    MAX_UNITS_TOTAL_SIZE, UNIT_DIRS, UNIT_SUFFIXES,
};

/// os-release locations inside an image, in priority order.
const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// The symlink target that marks a unit as masked.
const MASKED_TARGET: &[u8] = b"/dev/null";

/// A unit file found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUnit {
    /// The unit name, e.g. `foo.service`.
    pub name: String,
    /// Where it was found, e.g. `/usr/lib/systemd/system/foo.service` (the entry itself, which
    /// may be a symlink resolved inside the image).
    pub path_in_image: String,
    /// The unit file text (bounded by [`MAX_UNIT_FILE_SIZE`]).
    pub contents: String,
}

impl ImageRoot {
    /// The image's os-release: `/etc/os-release`, else `/usr/lib/os-release` (both resolved
    /// inside the image). Missing in both is [`ImageError::NoOsRelease`].
    pub fn os_release(&self) -> Result<OsRelease, ImageError> {
        self.os_release_text().map(|text| os_release::parse(&text))
    }

    /// The text of the image's os-release, found as [`ImageRoot::os_release`] finds it.
    pub fn os_release_text(&self) -> Result<String, ImageError> {
        for path in OS_RELEASE_PATHS {
            match self.read_bounded(path, MAX_OS_RELEASE_SIZE) {
                // Lossy: os-release is parsed leniently, a stray byte must not hide the rest.
                Ok(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(ImageError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ImageError::NoOsRelease {
            image: self.image(),
        })
    }

    /// Finds the `.service` units of the image whose names match one of `prefixes` (all of
    /// them when `prefixes` is empty, as portabled's daemon does), sorted by name.
    ///
    /// Unit directories are scanned in [`UNIT_DIRS`] order and the first entry of a name wins,
    /// so `/etc` overrides `/usr/lib`. Entries must be valid unit names of a known type,
    /// regular files or symlinks. A symlink to `/dev/null` or an empty file masks the name.
    /// A symlink whose target does not exist inside the image is refused with
    /// [`ImageError::UnitPointsOutsideImage`] (systemd issue #43049: on the host it would have
    /// named a host file).
    pub fn find_units(&self, prefixes: &[String]) -> Result<Vec<FoundUnit>, ImageError> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        let mut total_size = 0u64;
        for dir in UNIT_DIRS {
            let Some(dir_fd) = self.open_unit_dir(dir)? else {
                continue;
            };
            for entry in self.list_unit_dir(dir, &dir_fd)? {
                if seen.len() >= MAX_UNITS {
                    return Err(ImageError::TooManyUnits {
                        image: self.image(),
                        max: MAX_UNITS,
                    });
                }
                if !seen.insert(entry.name.clone()) {
                    continue;
                }
                let wanted = entry.name.ends_with(".service")
                    && (prefixes.is_empty()
                        || prefixes.iter().any(|p| unit_matches_prefix(&entry.name, p)));
                if !wanted {
                    continue;
                }
                let Some(unit) = self.read_unit(dir, &dir_fd, &entry)? else {
                    continue;
                };
                total_size += unit.contents.len() as u64;
                if total_size > MAX_UNITS_TOTAL_SIZE {
                    return Err(ImageError::UnitsTooLarge {
                        image: self.image(),
                        max: MAX_UNITS_TOTAL_SIZE,
                    });
                }
                found.push(unit);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Opens a unit directory for listing; `None` when the image does not have it.
    fn open_unit_dir(&self, dir: &str) -> Result<Option<OwnedFd>, ImageError> {
        match self.openat2_in_root(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.open_error(dir, e)),
        }
    }

    /// The unit-file entries of one directory (valid names of a known unit type, regular
    /// files or symlinks), in directory order.
    fn list_unit_dir(&self, dir: &str, dir_fd: &OwnedFd) -> Result<Vec<UnitEntry>, ImageError> {
        let read_error = |e: Errno| ImageError::ReadUnitDir {
            image: self.image(),
            dir: dir.to_owned(),
            source: e.into(),
        };
        let mut entries = Vec::new();
        let mut count = 0usize;
        for entry in Dir::read_from(dir_fd).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            count += 1;
            if count > MAX_DIR_ENTRIES {
                return Err(ImageError::UnitDirTooLarge {
                    image: self.image(),
                    dir: dir.to_owned(),
                    max: MAX_DIR_ENTRIES,
                });
            }
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if names::check_unit_name(name).is_err()
                || !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s))
            {
                continue;
            }
            let file_type = match entry.file_type() {
                // Some filesystems do not fill d_type; ask without following the entry.
                FileType::Unknown => rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode))
                    .map_err(read_error)?,
                t => t,
            };
            let symlink = match file_type {
                FileType::RegularFile => false,
                FileType::Symlink => true,
                _ => continue,
            };
            entries.push(UnitEntry {
                name: name.to_owned(),
                symlink,
            });
        }
        Ok(entries)
    }

    /// Reads one unit entry; `None` when it is masked (empty, or a symlink to `/dev/null`).
    fn read_unit(
        &self,
        dir: &str,
        dir_fd: &OwnedFd,
        entry: &UnitEntry,
    ) -> Result<Option<FoundUnit>, ImageError> {
        let path_in_image = format!("{dir}/{}", entry.name);
        let mut target = None;
        if entry.symlink {
            let link = rfs::readlinkat(dir_fd, entry.name.as_str(), Vec::new()).map_err(|e| {
                ImageError::OpenInImage {
                    image: self.image(),
                    path: path_in_image.clone(),
                    source: e.into(),
                }
            })?;
            if link.as_bytes() == MASKED_TARGET {
                return Ok(None);
            }
            target = Some(String::from_utf8_lossy(link.as_bytes()).into_owned());
        }
        // Resolve from the image root, not from the unit directory: a relative target like
        // `../../lib/systemd/system/x.service` must resolve as it would in the image.
        let bytes = match self.read_bounded(&path_in_image, MAX_UNIT_FILE_SIZE) {
            Ok(bytes) => bytes,
            Err(ImageError::NotFound { .. }) if target.is_some() => {
                return Err(ImageError::UnitPointsOutsideImage {
                    image: self.image(),
                    unit: entry.name.clone(),
                    target: target.unwrap_or_default(),
                });
            }
            Err(e) => return Err(e),
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        let contents = String::from_utf8(bytes).map_err(|_| ImageError::NotUtf8 {
            image: self.image(),
            path: path_in_image.clone(),
        })?;
        Ok(Some(FoundUnit {
            name: entry.name.clone(),
            path_in_image,
            contents,
        }))
    }
}

/// A unit-file entry found while listing a unit directory.
struct UnitEntry {
    name: String,
    symlink: bool,
}

/// portabled's `prefix_match`: `unit` starts with `prefix` followed by `-`, `.`, `@` or the end
/// of the name. So `foo` matches `foo.service`, `foo-bar.service` and `foo@.service` but not
/// `foobar.service`.
pub fn unit_matches_prefix(unit: &str, prefix: &str) -> bool {
    !prefix.is_empty()
        && unit
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', '@']))
}

/// The effective unit prefixes for an attach: the requested ones, or the image name when none
/// are requested (portablectl's default). When the image sets `PORTABLE_PREFIXES`, every
/// effective prefix must be one of them.
pub fn check_prefixes(
    requested: &[String],
    os: &OsRelease,
    image_name: &str,
) -> Result<Vec<String>, ImageError> {
    check_prefixes_among(requested, os.portable_prefixes(), image_name)
}

/// [`check_prefixes`] against an `allowed` list gathered by the caller (an image with
/// extensions allows what any of its layers does); empty means no restriction.
pub fn check_prefixes_among(
    requested: &[String],
    allowed: Vec<String>,
    image_name: &str,
) -> Result<Vec<String>, ImageError> {
    let mut effective: Vec<String> = Vec::new();
    let candidates = if requested.is_empty() {
        vec![image_name.to_owned()]
    } else {
        requested.to_vec()
    };
    for prefix in candidates {
        if names::check_unit_prefix(&prefix).is_err() {
            return Err(ImageError::InvalidPrefix { prefix });
        }
        if !effective.contains(&prefix) {
            effective.push(prefix);
        }
    }
    // An empty PORTABLE_PREFIXES means the image does not restrict prefixes.
    if !allowed.is_empty()
        && let Some(prefix) = effective.iter().find(|p| !allowed.contains(p))
    {
        return Err(ImageError::PrefixNotAllowed {
            prefix: prefix.clone(),
            allowed,
        });
    }
    Ok(effective)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::image::test_fixture::Fixture;

    fn names(units: &[FoundUnit]) -> Vec<&str> {
        units.iter().map(|u| u.name.as_str()).collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn os_release_prefers_etc() {
        let fx = Fixture::new();
        fx.write("etc/os-release", "ID=etc\n");
        fx.write("usr/lib/os-release", "ID=usr\n");

        let os = fx.root().os_release().unwrap();

        assert_eq!(os.id(), Some("etc"));
    }

    #[test]
    fn os_release_falls_back_to_usr_lib() {
        let fx = Fixture::new();
        fx.write("usr/lib/os-release", "ID=usr\n");

        let os = fx.root().os_release().unwrap();

        assert_eq!(os.id(), Some("usr"));
    }

    #[test]
    fn os_release_missing_everywhere_is_an_error() {
        let fx = Fixture::new();

        let err = fx.root().os_release().unwrap_err();

        assert!(matches!(err, ImageError::NoOsRelease { .. }));
        assert!(err.to_string().contains("lacks os-release data"));
    }

    #[test]
    fn os_release_too_large_is_refused() {
        let fx = Fixture::new();
        let big = "X=1\n".repeat(20_000);
        fx.write("etc/os-release", &big);

        let result = fx.root().os_release();

        assert!(matches!(result, Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn find_units_matches_prefix_followed_by_dash_dot_at_or_end() {
        let fx = Fixture::new();
        for unit in [
            "foo.service",
            "foo-bar.service",
            "foo@.service",
            "foobar.service",
            "other.service",
        ] {
            fx.write(&format!("usr/lib/systemd/system/{unit}"), "[Service]\n");
        }

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(
            names(&units),
            ["foo-bar.service", "foo.service", "foo@.service"]
        );
    }

    #[test]
    fn find_units_with_no_prefixes_returns_all_services() {
        let fx = Fixture::new();
        fx.write("usr/lib/systemd/system/a.service", "[Service]\n");
        fx.write("usr/lib/systemd/system/b.service", "[Service]\n");

        let units = fx.root().find_units(&[]).unwrap();

        assert_eq!(names(&units), ["a.service", "b.service"]);
    }

    #[test]
    fn find_units_returns_only_services() {
        let fx = Fixture::new();
        for unit in [
            "foo.service",
            "foo.socket",
            "foo.timer",
            "foo.target",
            "foo.path",
        ] {
            fx.write(&format!("usr/lib/systemd/system/{unit}"), "[Unit]\n");
        }

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(names(&units), ["foo.service"]);
    }

    #[test]
    fn find_units_first_directory_wins() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo.service", "from etc");
        fx.write("usr/lib/systemd/system/foo.service", "from usr");
        fx.write("lib/systemd/system/foo.service", "from lib");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(units.len(), 1);
        assert_eq!(units[0].contents, "from etc");
        assert_eq!(units[0].path_in_image, "/etc/systemd/system/foo.service");
    }

    #[test]
    fn find_units_searches_all_four_directories() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo-a.service", "a");
        fx.write("usr/local/lib/systemd/system/foo-b.service", "b");
        fx.write("usr/lib/systemd/system/foo-c.service", "c");
        fx.write("lib/systemd/system/foo-d.service", "d");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(
            names(&units),
            [
                "foo-a.service",
                "foo-b.service",
                "foo-c.service",
                "foo-d.service"
            ]
        );
    }

    #[test]
    fn find_units_skips_invalid_names_and_non_files() {
        let fx = Fixture::new();
        fx.write("usr/lib/systemd/system/foo.service", "ok");
        fx.write("usr/lib/systemd/system/.foo.service", "hidden");
        fx.write("usr/lib/systemd/system/foo bar.service", "space");
        fx.write(
            "usr/lib/systemd/system/foo.service.d/override.conf",
            "dropin",
        );
        fs::create_dir_all(fx.path("usr/lib/systemd/system/foo-dir.service")).unwrap();

        let units = fx.root().find_units(&[]).unwrap();

        assert_eq!(names(&units), ["foo.service"]);
    }

    #[test]
    fn find_units_skips_empty_units_and_they_mask_lower_ones() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo.service", "");
        fx.write("usr/lib/systemd/system/foo.service", "[Service]\n");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn find_units_skips_units_masked_by_dev_null() {
        let fx = Fixture::new();
        fx.link("etc/systemd/system/foo.service", "/dev/null");
        fx.write("usr/lib/systemd/system/foo.service", "[Service]\n");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn find_units_follows_symlinks_inside_the_image() {
        let fx = Fixture::new();
        fx.write("opt/app/foo.service", "real");
        fx.link("etc/systemd/system/foo.service", "/opt/app/foo.service");
        fx.link(
            "usr/lib/systemd/system/foo-rel.service",
            "../../../../opt/app/foo.service",
        );

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(names(&units), ["foo-rel.service", "foo.service"]);
        assert!(units.iter().all(|u| u.contents == "real"));
    }

    #[test]
    fn find_units_refuses_an_absolute_symlink_to_a_host_file() {
        // The image links its unit to a path only the host has; resolved on the host (the
        // bug in systemd issue #43049) it would read the host's file.
        let fx = Fixture::new();
        let marker = fx.host.join("shadow-host-marker");
        fs::write(&marker, "HOST-SECRET-CONTENT").unwrap();
        let target = marker.to_str().unwrap();
        fx.link("etc/systemd/system/evil.service", target);

        let err = fx.root().find_units(&strings(&["evil"])).unwrap_err();

        assert!(
            matches!(&err, ImageError::UnitPointsOutsideImage { unit, target: t, .. }
                if unit == "evil.service" && t == target),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("evil.service"));
        assert!(message.contains("points outside the image"));
        assert!(!message.contains("HOST-SECRET-CONTENT"));
    }

    #[test]
    fn find_units_ignores_a_bad_symlink_that_does_not_match() {
        let fx = Fixture::new();
        fx.link("etc/systemd/system/evil.service", "/nonexistent");
        fx.write("usr/lib/systemd/system/good.service", "ok");

        let units = fx.root().find_units(&strings(&["good"])).unwrap();

        assert_eq!(names(&units), ["good.service"]);
    }

    #[test]
    fn find_units_refuses_a_unit_that_is_too_large() {
        let fx = Fixture::new();
        let big = "#".repeat(MAX_UNIT_FILE_SIZE as usize + 1);
        fx.write("usr/lib/systemd/system/foo.service", &big);

        let result = fx.root().find_units(&strings(&["foo"]));

        assert!(matches!(result, Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn find_units_refuses_a_unit_that_is_not_utf8() {
        let fx = Fixture::new();
        let path = fx.path("usr/lib/systemd/system/foo.service");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"\xff\xfe").unwrap();

        let result = fx.root().find_units(&strings(&["foo"]));

        assert!(matches!(result, Err(ImageError::NotUtf8 { .. })));
    }

    #[test]
    fn find_units_without_unit_directories_finds_nothing() {
        let fx = Fixture::new();

        let units = fx.root().find_units(&[]).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn prefix_match_requires_a_separator_or_the_end() {
        assert!(unit_matches_prefix("foo.service", "foo"));
        assert!(unit_matches_prefix("foo-bar.service", "foo"));
        assert!(unit_matches_prefix("foo@.service", "foo"));
        assert!(unit_matches_prefix("foo", "foo"));
        assert!(!unit_matches_prefix("foobar.service", "foo"));
        assert!(!unit_matches_prefix("fo.service", "foo"));
        assert!(!unit_matches_prefix("foo.service", ""));
    }

    #[test]
    fn check_prefixes_defaults_to_the_image_name() {
        let os = os_release::parse("ID=x\n");

        let prefixes = check_prefixes(&[], &os, "foo").unwrap();

        assert_eq!(prefixes, ["foo"]);
    }

    #[test]
    fn check_prefixes_accepts_anything_without_portable_prefixes() {
        let os = os_release::parse("ID=x\n");

        let prefixes = check_prefixes(&strings(&["a", "b", "a"]), &os, "foo").unwrap();

        assert_eq!(prefixes, ["a", "b"]);
    }

    #[test]
    fn check_prefixes_accepts_listed_prefixes() {
        let os = os_release::parse("PORTABLE_PREFIXES=\"foo bar\"\n");

        let prefixes = check_prefixes(&strings(&["bar"]), &os, "img").unwrap();

        assert_eq!(prefixes, ["bar"]);
    }

    #[test]
    fn check_prefixes_rejects_a_prefix_outside_portable_prefixes() {
        let os = os_release::parse("PORTABLE_PREFIXES=\"foo bar\"\n");

        let err = check_prefixes(&strings(&["foo", "evil"]), &os, "img").unwrap_err();

        assert!(
            matches!(&err, ImageError::PrefixNotAllowed { prefix, allowed }
                if prefix == "evil" && allowed == &strings(&["foo", "bar"]))
        );
        assert!(err.to_string().contains("foo, bar"));
    }

    #[test]
    fn check_prefixes_checks_the_default_image_name_too() {
        let os = os_release::parse("PORTABLE_PREFIXES=app\n");

        let result = check_prefixes(&[], &os, "img");

        assert!(matches!(result, Err(ImageError::PrefixNotAllowed { .. })));
    }

    #[test]
    fn check_prefixes_rejects_invalid_prefixes() {
        let os = os_release::parse("");
        for prefix in ["", ".x", "a/b", "a b"] {
            let result = check_prefixes(&strings(&[prefix]), &os, "img");

            assert!(
                matches!(result, Err(ImageError::InvalidPrefix { .. })),
                "{prefix:?}"
            );
        }
    }
}
