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
    /// Ports below 1024 its services may bind on the host's network (`attach --port`),
    /// sorted, each once; kept by reattach. Absent in older records: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
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

/// Writes an attachment in one step a crash cannot split: the unit copies are staged as
/// `.<unit>.next`, then the new record is written as `attachment.json.next` (the commit point),
/// then copies and record move to their names. [`load_all`] finishes a save that reached its
/// commit point and undoes one that did not, so after a crash the image is attached as before
/// (or not at all) or as after, never with a mix of the two sets of unit files, and attaching
/// it again never loses the attachment (nor its drop-ins) on the way.
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
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    for unit in units {
        check_unit_name(&unit.name).map_err(|reason| AttachmentError::Write {
            path: dir.join(&unit.name),
            source: std::io::Error::other(reason),
        })?;
        let path = dir.join(staged(&unit.name));
        write_atomic(&path, unit.contents.as_bytes()).map_err(write_err(&path))?;
    }
    let next = dir.join(NEXT_RECORD);
    let json = serde_json::to_vec_pretty(record).map_err(|e| AttachmentError::Write {
        path: next.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&next, &json).map_err(write_err(&next))?;
    finish_save(&dir, record)
}

/// The record of a save past its commit point, before it is in place.
const NEXT_RECORD: &str = "attachment.json.next";

/// The name a unit copy is staged under until its save is committed.
fn staged(unit: &str) -> String {
    format!(".{unit}.next")
}

/// Moves the staged copies of `record`'s units and its staged record to their names.
fn finish_save(dir: &Path, record: &AttachmentRecord) -> Result<(), AttachmentError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| AttachmentError::Write { path, source }
    };
    for unit in &record.units {
        let from = dir.join(staged(unit));
        match std::fs::rename(&from, dir.join(unit)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(write_err(&from))?,
        }
    }
    std::fs::rename(dir.join(NEXT_RECORD), dir.join(RECORD)).map_err(write_err(dir))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

/// Brings an attachment directory to a state a save or a removal left complete: a save past
/// its commit point is finished, anything staged before it is removed, and a directory left
/// without a record (an attach or a detach cut short) is removed with what it holds (a
/// detach's drop-ins must not come back with the next attach). Returns what it did, if
/// anything.
fn recover(dir: &Path) -> Result<Option<&'static str>, AttachmentError> {
    let read_err = |path: &Path, e: &dyn std::fmt::Display| AttachmentError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if !dir.is_dir() {
        return Ok(None);
    }
    let next = dir.join(NEXT_RECORD);
    let mut done = None;
    if next.exists() {
        let text = std::fs::read(&next).map_err(|e| read_err(&next, &e))?;
        let record: AttachmentRecord =
            serde_json::from_slice(&text).map_err(|e| read_err(&next, &e))?;
        finish_save(dir, &record)?;
        done = Some("finished an attach cut short");
    }
    if !dir.join(RECORD).exists() {
        return match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(Some("removed an attach or detach cut short")),
            Err(e) => Err(AttachmentError::Remove {
                path: dir.to_owned(),
                source: e,
            }),
        };
    }
    let entries = std::fs::read_dir(dir).map_err(|e| read_err(dir, &e))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Staged copies of a save that never committed, and temp files of atomic writes.
        let leftover = name.starts_with('.') && (name.ends_with(".next") || name.ends_with(".tmp"));
        if leftover && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|e| read_err(&entry.path(), &e))?;
            done = done.or(Some("removed what an attach cut short had staged"));
        }
    }
    Ok(done)
}

/// A unit copy's name is a plain file name of the attachment directory.
fn check_unit_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name == RECORD {
        return Err(format!("bad unit name {name}"));
    }
    Ok(())
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
        match recover(&dir) {
            Ok(Some(what)) => tracing::info!(dir = %dir.display(), "{what}"),
            Ok(None) => {}
            Err(e) => {
                errors.push(e);
                continue;
            }
        }
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
        check_unit_name(name).map_err(|reason| read_err(record_path, reason))?;
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
            ports: vec![80, 443],
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
        assert!(loaded[0].0.ports.is_empty());
    }

    #[test]
    fn a_directory_without_record_is_removed_drop_ins_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        let half = paths.attachment_dir("half");
        std::fs::create_dir_all(half.join("half.service.d")).unwrap();
        std::fs::write(half.join("half.service.d/50-Environment.conf"), "x").unwrap();

        let (loaded, errors) = load_all(&paths);

        assert!(loaded.is_empty() && errors.is_empty());
        assert!(!half.exists());
    }

    fn unit_with(contents: &str) -> UnitCopy {
        UnitCopy {
            name: "hello.service".into(),
            contents: contents.into(),
        }
    }

    /// `hello` attached with `old`, then a save of `new` carried up to (not past) `step`:
    /// 1 = the copy staged, 2 = the record staged (committed), 3 = the copy moved.
    fn cut_save(paths: &Paths, step: usize) {
        save(paths, &record(), &[unit_with("old")]).unwrap();
        let dir = paths.attachment_dir("hello");
        let mut next = record();
        next.profile = "strict@1".into();
        std::fs::write(dir.join(".hello.service.next"), "new").unwrap();
        if step >= 2 {
            std::fs::write(dir.join(NEXT_RECORD), serde_json::to_vec(&next).unwrap()).unwrap();
        }
        if step >= 3 {
            std::fs::rename(dir.join(".hello.service.next"), dir.join("hello.service")).unwrap();
        }
    }

    #[test]
    fn a_save_cut_before_its_commit_leaves_the_old_attachment_whole() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        cut_save(&paths, 1);

        let (loaded, errors) = load_all(&paths);

        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(loaded, vec![(record(), vec![unit_with("old")])]);
        let left: Vec<_> = std::fs::read_dir(paths.attachment_dir("hello"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(left.iter().all(|n| !n.ends_with(".next")), "{left:?}");
    }

    #[test]
    fn a_save_cut_after_its_commit_is_finished() {
        for step in [2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let paths = Paths::new(dir.path(), dir.path());
            cut_save(&paths, step);

            let (loaded, errors) = load_all(&paths);

            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(loaded[0].0.profile, "strict@1", "cut at {step}");
            assert_eq!(loaded[0].1, vec![unit_with("new")], "cut at {step}");
            assert!(!paths.attachment_dir("hello").join(NEXT_RECORD).exists());
        }
    }

    #[test]
    fn saving_again_keeps_the_drop_ins() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        save(&paths, &record(), &[unit()]).unwrap();
        let drop_in = paths.attachment_dir("hello").join("hello.service.d");
        std::fs::create_dir_all(&drop_in).unwrap();

        save(&paths, &record(), &[unit_with("again")]).unwrap();

        assert!(drop_in.is_dir());
        assert_eq!(load_all(&paths).0[0].1, vec![unit_with("again")]);
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
