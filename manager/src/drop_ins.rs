//! Host drop-ins of an attached unit: `STATE/attached/<image>/<unit>.d/*.conf`, written by
//! `berth set-property` (`50-KEY.conf`, as systemctl names them) and `berth edit`
//! (`override.conf`), read in lexical order after the unit's own file whenever the unit is
//! loaded (see [`crate::unit::from_unit_files`]).
//!
//! They live in the attachment, next to the unit copies: attaching the same image again and
//! reattaching rewrite only the copies and the record, so the drop-ins are kept; detach removes
//! the attachment and its drop-ins with it. The directory is berthd's own state, but it is
//! still read with bounds (count and size), regular files only.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::atomic_write::write_atomic;
use crate::paths::Paths;

pub use berth_protocol::manager::MAX_DROP_IN_BYTES;
/// Most drop-ins of one unit.
pub const MAX_DROP_INS: usize = 64;
/// Longest drop-in file name.
const MAX_NAME_BYTES: usize = 128;

/// One drop-in file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    /// The file name, e.g. `50-Environment.conf`.
    pub name: String,
    pub path: PathBuf,
    pub contents: String,
}

impl DropIn {
    /// How messages name it: `hello.service.d/50-Environment.conf`.
    pub fn label(&self, unit: &str) -> String {
        format!("{unit}.d/{}", self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DropInError {
    #[error(
        "invalid drop-in name {name:?}: letters, digits, '-', '_' and '.', ending in .conf, at \
         most {MAX_NAME_BYTES} bytes"
    )]
    InvalidName { name: String },
    #[error("the drop-in is {size} bytes, more than the {MAX_DROP_IN_BYTES} a drop-in may hold")]
    TooLarge { size: usize },
    #[error("{unit} has {MAX_DROP_INS} drop-ins already, the most it may have")]
    TooMany { unit: String },
    #[error("cannot read drop-ins in {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write drop-in {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `STATE/attached/<image>/<unit>.d`.
pub fn dir(paths: &Paths, image: &str, unit: &str) -> PathBuf {
    paths.attachment_dir(image).join(format!("{unit}.d"))
}

/// Checks a drop-in file name: a plain name ending in `.conf`.
pub fn check_name(name: &str) -> Result<(), DropInError> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let stem = name.strip_suffix(".conf").unwrap_or_default();
    if plain && !stem.is_empty() && !name.starts_with('.') && name.len() <= MAX_NAME_BYTES {
        Ok(())
    } else {
        Err(DropInError::InvalidName {
            name: name.chars().take(MAX_NAME_BYTES).collect(),
        })
    }
}

/// The drop-ins of `unit`, in lexical order; none when it has no drop-in directory.
pub fn read_all(paths: &Paths, image: &str, unit: &str) -> Result<Vec<DropIn>, DropInError> {
    let dir = dir(paths, image, unit);
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DropInError::Read { path, source }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(&dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error(&dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Temp files of an interrupted write, and anything not a drop-in, are not read.
        if check_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        names.push(name);
        if names.len() > MAX_DROP_INS {
            return Err(DropInError::TooMany {
                unit: unit.to_owned(),
            });
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let contents = read_bounded(&path)?;
            Ok(DropIn {
                name,
                path,
                contents,
            })
        })
        .collect()
}

fn read_bounded(path: &Path) -> Result<String, DropInError> {
    let read_error = |source| DropInError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_DROP_IN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_DROP_IN_BYTES {
        return Err(DropInError::TooLarge { size: bytes.len() });
    }
    String::from_utf8(bytes).map_err(|e| read_error(std::io::Error::other(e)))
}

/// Writes drop-in `name` of `unit` atomically (the old one, if any, stays whole until the new
/// one is complete) and returns its path.
pub fn write(
    paths: &Paths,
    image: &str,
    unit: &str,
    name: &str,
    contents: &str,
) -> Result<PathBuf, DropInError> {
    check_name(name)?;
    if contents.len() > MAX_DROP_IN_BYTES {
        return Err(DropInError::TooLarge {
            size: contents.len(),
        });
    }
    let dir = dir(paths, image, unit);
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DropInError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let path = dir.join(name);
    if !path.exists() && read_all(paths, image, unit)?.len() >= MAX_DROP_INS {
        return Err(DropInError::TooMany {
            unit: unit.to_owned(),
        });
    }
    write_atomic(&path, contents.as_bytes()).map_err(write_error(&path))?;
    Ok(path)
}

/// Removes drop-in `name` of `unit`; true when there was one.
pub fn remove(paths: &Paths, image: &str, unit: &str, name: &str) -> Result<bool, DropInError> {
    check_name(name)?;
    let path = dir(paths, image, unit).join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DropInError::Write { path, source }),
    }
}

/// Whether `text` says nothing: only blank lines and comments (an edit that leaves a drop-in
/// so removes it, as `systemctl edit` does).
pub fn is_empty(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l.starts_with(';'))
}

/// The section a property set by `set-property` goes in.
pub fn section_of(key: &str) -> &'static str {
    match key {
        "Description" | "Documentation" => "Unit",
        _ => "Service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        (dir, paths)
    }

    #[test]
    fn drop_ins_are_read_in_lexical_order() {
        let (_dir, paths) = paths();
        write(&paths, "img", "a.service", "override.conf", "[Service]\n").unwrap();
        write(
            &paths,
            "img",
            "a.service",
            "50-Environment.conf",
            "[Service]\n",
        )
        .unwrap();

        let names: Vec<String> = read_all(&paths, "img", "a.service")
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();

        assert_eq!(names, ["50-Environment.conf", "override.conf"]);
    }

    #[test]
    fn names_that_could_be_paths_are_refused() {
        for name in [
            "../x.conf",
            "a/b.conf",
            ".hidden.conf",
            "x",
            ".conf",
            "x.conf\n",
        ] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        assert!(check_name("50-Environment.conf").is_ok());
    }

    #[test]
    fn a_drop_in_over_the_limit_is_refused_and_nothing_is_written() {
        let (_dir, paths) = paths();
        let big = "#".repeat(MAX_DROP_IN_BYTES + 1);

        let result = write(&paths, "img", "a.service", "override.conf", &big);

        assert!(
            matches!(result, Err(DropInError::TooLarge { .. })),
            "{result:?}"
        );
        assert!(read_all(&paths, "img", "a.service").unwrap().is_empty());
    }

    #[test]
    fn comments_only_is_empty() {
        assert!(is_empty("# nothing\n\n  ; here\n"));
        assert!(!is_empty("# a\n[Service]\n"));
    }
}
