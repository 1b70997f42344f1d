//! The image search path: `STATE/images` first, then portabled's directories (or those
//! berthd.toml's `image_search_dirs` names), and finding an image in it by name.
//!
//! An entry is an image when it is a directory, a `.raw` regular file, or a `NAME.v/`
//! directory of versions (the newest is taken). Symlinks are followed: portabled keeps links
//! in `/etc/portables` and `/run/portables`, and only root can write those directories. Hidden
//! entries (an import in progress is `.import-*`) are never images.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::naming::{compare_versions, image_name_from_path, newest_version, validate_image_name};

/// portabled's system search directories, searched after `STATE/images` unless berthd.toml
/// sets `image_search_dirs`.
pub const DEFAULT_SEARCH_DIRS: [&str; 3] =
    ["/etc/portables", "/run/portables", "/var/lib/portables"];

/// Most entries read from one search directory (or one `.v` directory).
pub const MAX_DIR_ENTRIES: usize = 4096;

/// An image found in the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolImage {
    pub name: String,
    pub version: Option<String>,
    /// The image itself: for a `NAME.v/` directory, the version picked inside it.
    pub path: PathBuf,
    /// Whether it is a directory (else a regular file).
    pub is_dir: bool,
}

/// The directories searched for images, in order.
#[derive(Debug, Clone)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `images_dir` (`STATE/images`, the pool imports go to) first, then `others`.
    pub fn new(images_dir: PathBuf, others: &[PathBuf]) -> SearchPath {
        let mut dirs = vec![images_dir];
        dirs.extend(
            others
                .iter()
                .filter(|d| !dirs.contains(d))
                .cloned()
                .collect::<Vec<_>>(),
        );
        SearchPath { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every image of the search path by name; where two directories have an image of the same
    /// name, the earlier directory's wins.
    pub fn list(&self) -> Vec<PoolImage> {
        let mut found: BTreeMap<String, PoolImage> = BTreeMap::new();
        for dir in &self.dirs {
            for image in images_in(dir) {
                found.entry(image.name.clone()).or_insert(image);
            }
        }
        found.into_values().collect()
    }

    /// The image called `name`, from the first directory that has one.
    pub fn find(&self, name: &str) -> Option<PoolImage> {
        self.dirs
            .iter()
            .find_map(|dir| images_in(dir).into_iter().find(|i| i.name == name))
    }

    /// Whether `path` is directly inside the first search directory (`STATE/images`), which
    /// berthd owns: only those images may be removed or marked read-only.
    pub fn is_in_pool(&self, path: &Path) -> bool {
        path.parent() == Some(self.dirs[0].as_path())
    }
}

/// The images directly in `dir`, one per name (the newest version where several exist).
fn images_in(dir: &Path) -> Vec<PoolImage> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<String, PoolImage> = BTreeMap::new();
    for entry in entries.take(MAX_DIR_ENTRIES).filter_map(Result::ok) {
        let Some(image) = image_of(&entry.path()) else {
            continue;
        };
        let newer = by_name.get(&image.name).is_none_or(|known| {
            let version = |i: &PoolImage| i.version.clone().unwrap_or_default();
            compare_versions(&version(&image), &version(known)).is_gt()
        });
        if newer {
            by_name.insert(image.name.clone(), image);
        }
    }
    by_name.into_values().collect()
}

/// `path` as an image of the search path, if it is one.
pub fn image_of(path: &Path) -> Option<PoolImage> {
    let file_name = path.file_name()?.to_str()?;
    if file_name.starts_with('.') {
        return None;
    }
    let meta = fs::metadata(path).ok()?;
    let (name, version) = image_name_from_path(path);
    validate_image_name(&name).ok()?;
    if meta.is_dir() && file_name.ends_with(".v") {
        return newest_in_versions_dir(path, &name);
    }
    let raw_file = meta.is_file() && file_name.ends_with(".raw");
    if !meta.is_dir() && !raw_file {
        return None;
    }
    Some(PoolImage {
        name,
        version,
        path: path.to_owned(),
        is_dir: meta.is_dir(),
    })
}

/// The newest version of image `name` in the `NAME.v/` directory `dir`.
fn newest_in_versions_dir(dir: &Path, name: &str) -> Option<PoolImage> {
    let entries: Vec<String> = fs::read_dir(dir)
        .ok()?
        .take(MAX_DIR_ENTRIES)
        .filter_map(Result::ok)
        .filter(|e| {
            let path = e.path();
            fs::metadata(&path).is_ok_and(|m| {
                m.is_dir() || (m.is_file() && path.extension().is_some_and(|x| x == "raw"))
            })
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let newest = newest_version(name, entries.iter().map(String::as_str))?;
    let path = dir.join(newest);
    let (_, version) = image_name_from_path(&path);
    Some(PoolImage {
        name: name.to_owned(),
        version,
        is_dir: path.is_dir(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs {
        _tmp: tempfile::TempDir,
        first: PathBuf,
        second: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("images");
        let second = tmp.path().join("portables");
        fs::create_dir(&first).unwrap();
        fs::create_dir(&second).unwrap();
        Dirs {
            _tmp: tmp,
            first,
            second,
        }
    }

    fn search(d: &Dirs) -> SearchPath {
        SearchPath::new(d.first.clone(), std::slice::from_ref(&d.second))
    }

    #[test]
    fn a_raw_file_is_named_and_versioned_from_its_file_name() {
        let d = dirs();
        fs::write(d.first.join("foo_1.2.raw"), "x").unwrap();

        let found = search(&d).find("foo").unwrap();

        assert_eq!(found.name, "foo");
        assert_eq!(found.version.as_deref(), Some("1.2"));
        assert!(!found.is_dir);
    }

    #[test]
    fn a_v_directory_gives_its_newest_version() {
        let d = dirs();
        let v = d.second.join("foo.v");
        fs::create_dir(&v).unwrap();
        for f in ["foo_1.2.raw", "foo_1.10.raw", "foo_1.9.raw", "notes.txt"] {
            fs::write(v.join(f), "x").unwrap();
        }

        let found = search(&d).find("foo").unwrap();

        assert_eq!(found.path, v.join("foo_1.10.raw"));
        assert_eq!(found.version.as_deref(), Some("1.10"));
    }

    #[test]
    fn the_first_directory_wins_for_a_name() {
        let d = dirs();
        fs::create_dir(d.first.join("foo")).unwrap();
        fs::write(d.second.join("foo_9.raw"), "x").unwrap();

        let found = search(&d).find("foo").unwrap();

        assert_eq!(found.path, d.first.join("foo"));
    }

    #[test]
    fn list_has_one_entry_per_name_across_directories() {
        let d = dirs();
        fs::create_dir(d.first.join("a")).unwrap();
        fs::write(d.second.join("a.raw"), "x").unwrap();
        fs::write(d.second.join("b_1.raw"), "x").unwrap();
        fs::write(d.second.join("b_2.raw"), "x").unwrap();

        let listed = search(&d).list();

        let names: Vec<_> = listed
            .iter()
            .map(|i| (i.name.as_str(), i.version.as_deref()))
            .collect();
        assert_eq!(names, [("a", None), ("b", Some("2"))]);
    }

    #[test]
    fn other_files_and_hidden_entries_are_not_images() {
        let d = dirs();
        fs::write(d.first.join("readme.txt"), "x").unwrap();
        fs::create_dir(d.first.join(".import-1")).unwrap();
        fs::write(d.first.join("bad name.raw"), "x").unwrap();

        assert!(search(&d).list().is_empty());
    }

    #[test]
    fn a_missing_search_directory_is_skipped() {
        let d = dirs();
        fs::create_dir(d.second.join("foo")).unwrap();
        let path = SearchPath::new(d.first.join("missing"), std::slice::from_ref(&d.second));

        assert_eq!(path.find("foo").unwrap().path, d.second.join("foo"));
    }
}
