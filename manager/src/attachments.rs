//! Attachments on disk: `STATE/attached/<image>/` holds a copy of each attached unit file and
//! `attachment.json`, written last, which marks the attachment complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_write::write_atomic;
use crate::image::identity::ImageIdentity;
use crate::paths::Paths;

const RECORD: &str = "attachment.json";

/// The persistent record of one attached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Image name (portabled naming: `foo` for `foo_1.2`).
    pub image: String,
    /// Where the image was attached from (canonical: no symlinks).
    pub path: PathBuf,
    /// Which directory `path` named at attach; `start` refuses another. Absent in records of
    /// berth versions that did not record it (such an attachment must be attached again).
    #[serde(default)]
    pub identity: Option<ImageIdentity>,
    /// Attached through a descriptor the client passed (berthd may be unable to open `path`
    /// itself; see [`crate::image_descriptor`]).
    #[serde(default)]
    pub by_descriptor: bool,
    /// Profile and its level, e.g. `default@1`.
    pub profile: String,
    pub units: Vec<String>,
    pub attached_usec: u64,
    /// The unit prefixes the units were selected by (reattach selects by them again). Absent
    /// in older records: the image name, as attach defaults to.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Extension images laid over the image, lowest first; each pinned like the image.
    #[serde(default)]
    pub extensions: Vec<ExtensionRecord>,
    /// The units enabled (`berth enable`, `attach --enable`): started when berthd starts at
    /// boot. Absent in older records: none.
    #[serde(default)]
    pub enabled: Vec<String>,
}

/// One extension image of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRecord {
    /// Its image name (`app0` for `app0_1.2`): detach and is-attached compare these.
    pub name: String,
    /// Where it was attached from (canonical).
    pub path: PathBuf,
    /// Which directory `path` named at attach; `start` refuses another.
    pub identity: ImageIdentity,
    /// Its release file is not named after it (attached with `--force`).
    #[serde(default)]
    pub relaxed: bool,
    /// Passed in by the client as a descriptor: berthd may be unable to reopen `path` itself.
    #[serde(default)]
    pub by_descriptor: bool,
}

impl ExtensionRecord {
    /// The record of an extension as attach opened it.
    pub fn of(ext: &crate::extension::Extension) -> ExtensionRecord {
        ExtensionRecord {
            name: ext.name.clone(),
            path: ext.path.clone(),
            identity: ext.identity.clone(),
            relaxed: ext.relaxed,
            by_descriptor: ext.by_descriptor,
        }
    }
}

impl AttachmentRecord {
    /// The names of the extensions, in order.
    pub fn extension_names(&self) -> Vec<String> {
        self.extensions.iter().map(|e| e.name.clone()).collect()
    }
}

/// A unit file copied into an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitCopy {
    pub name: String,
    pub contents: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("cannot write attachment {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read attachment {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot remove attachment {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the unit copies, then the record. A crash in between leaves a directory without a
/// record, which [`load_all`] skips and the next attach overwrites.
pub fn save(
    paths: &Paths,
    record: &AttachmentRecord,
    units: &[UnitCopy],
) -> Result<(), AttachmentError> {
    let dir = paths.attachment_dir(&record.image);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| AttachmentError::Write { path, source }
    };
    // A re-attach replaces the old record first, so a half-written set is never taken as whole.
    let record_path = dir.join(RECORD);
    if record_path.exists() {
        std::fs::remove_file(&record_path).map_err(write_err(&record_path))?;
    }
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    for unit in units {
        let path = dir.join(&unit.name);
        write_atomic(&path, unit.contents.as_bytes()).map_err(write_err(&path))?;
    }
    let json = serde_json::to_vec_pretty(record).map_err(|e| AttachmentError::Write {
        path: record_path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&record_path, &json).map_err(write_err(&record_path))
}

/// Replaces the record alone (the unit copies stay as they are), atomically: a crash leaves
/// the old record or the new one.
pub fn save_record(paths: &Paths, record: &AttachmentRecord) -> Result<(), AttachmentError> {
    let path = paths.attachment_dir(&record.image).join(RECORD);
    let json = serde_json::to_vec_pretty(record).map_err(|e| AttachmentError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&path, &json).map_err(|source| AttachmentError::Write { path, source })
}

/// Loads every complete attachment. Broken ones are reported, not fatal: berthd keeps serving
/// the others.
pub fn load_all(paths: &Paths) -> (Vec<(AttachmentRecord, Vec<UnitCopy>)>, Vec<AttachmentError>) {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(paths.attached_dir()) else {
        return (loaded, errors);
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let record_path = dir.join(RECORD);
        if !record_path.exists() {
            continue;
        }
        match load_one(&dir, &record_path) {
            Ok(v) => loaded.push(v),
            Err(e) => errors.push(e),
        }
    }
    (loaded, errors)
}

fn load_one(
    dir: &Path,
    record_path: &Path,
) -> Result<(AttachmentRecord, Vec<UnitCopy>), AttachmentError> {
    let read_err = |path: &Path, reason: String| AttachmentError::Read {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read(record_path).map_err(|e| read_err(record_path, e.to_string()))?;
    let record: AttachmentRecord =
        serde_json::from_slice(&text).map_err(|e| read_err(record_path, e.to_string()))?;
    let mut units = Vec::new();
    for name in &record.units {
        if name.contains('/') || name.starts_with('.') {
            return Err(read_err(record_path, format!("bad unit name {name}")));
        }
        let path = dir.join(name);
        let contents =
            std::fs::read_to_string(&path).map_err(|e| read_err(&path, e.to_string()))?;
        units.push(UnitCopy {
            name: name.clone(),
            contents,
        });
    }
    Ok((record, units))
}

/// Removes an attachment's directory.
pub fn remove(paths: &Paths, image: &str) -> Result<(), AttachmentError> {
    let dir = paths.attachment_dir(image);
    let record = dir.join(RECORD);
    // The record goes first, so an interrupted removal reads as detached.
    if record.exists() {
        std::fs::remove_file(&record).map_err(|source| AttachmentError::Remove {
            path: record.clone(),
            source,
        })?;
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AttachmentError::Remove {
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AttachmentRecord {
        AttachmentRecord {
            image: "hello".into(),
            path: "/srv/hello".into(),
            identity: Some(ImageIdentity {
                dev_major: 8,
                dev_minor: 1,
                ino: 1234,
                birth: Some((1_700_000_000, 5)),
                mount_id: Some(42),
                boot_id: Some("a-boot".into()),
            }),
            by_descriptor: false,
            profile: "default@1".into(),
            units: vec!["hello.service".into()],
            attached_usec: 1,
            prefixes: vec!["hello".into()],
            extensions: vec![ExtensionRecord {
                name: "extra".into(),
                path: "/srv/extra_2".into(),
                identity: ImageIdentity {
                    dev_major: 8,
                    dev_minor: 1,
                    ino: 99,
                    birth: None,
                    mount_id: None,
                    boot_id: None,
                },
                relaxed: false,
                by_descriptor: false,
            }],
            enabled: vec!["hello.service".into()],
        }
    }

    fn unit() -> UnitCopy {
        UnitCopy {
            name: "hello.service".into(),
            contents: "[Service]\nExecStart=/bin/true\n".into(),
        }
    }

    #[test]
    fn saved_attachment_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        std::fs::create_dir_all(paths.attached_dir()).unwrap();

        save(&paths, &record(), &[unit()]).unwrap();
        let (loaded, errors) = load_all(&paths);

        assert!(errors.is_empty());
        assert_eq!(loaded, vec![(record(), vec![unit()])]);
    }

    #[test]
    fn a_record_from_before_identities_loads_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        std::fs::create_dir_all(paths.attachment_dir("old")).unwrap();
        std::fs::write(
            paths.attachment_dir("old").join("old.service"),
            "[Service]\n",
        )
        .unwrap();
        std::fs::write(
            paths.attachment_dir("old").join(RECORD),
            r#"{"image":"old","path":"/srv/old","profile":"default@1","units":["old.service"],"attached_usec":1}"#,
        )
        .unwrap();

        let (loaded, errors) = load_all(&paths);

        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(loaded[0].0.identity, None);
        assert!(loaded[0].0.extensions.is_empty() && loaded[0].0.prefixes.is_empty());
        assert!(loaded[0].0.enabled.is_empty());
    }

    #[test]
    fn directory_without_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        std::fs::create_dir_all(paths.attachment_dir("half")).unwrap();

        let (loaded, errors) = load_all(&paths);

        assert!(loaded.is_empty() && errors.is_empty());
    }

    #[test]
    fn corrupt_record_is_reported_and_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        save(&paths, &record(), &[unit()]).unwrap();
        std::fs::create_dir_all(paths.attachment_dir("broken")).unwrap();
        std::fs::write(paths.attachment_dir("broken").join(RECORD), "{").unwrap();

        let (loaded, errors) = load_all(&paths);

        assert_eq!((loaded.len(), errors.len()), (1, 1));
    }

    #[test]
    fn removed_attachment_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        save(&paths, &record(), &[unit()]).unwrap();

        remove(&paths, "hello").unwrap();

        assert!(load_all(&paths).0.is_empty());
    }
}
