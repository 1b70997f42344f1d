//! What of each unit's lifecycle survives a berthd restart: `STATE/units/<unit>.json`, one
//! [`Record`] per unit, written atomically on every change (DESIGN.md §3, "Writes of state are
//! atomic").

use std::io::Read;
use std::path::PathBuf;

use thiserror::Error;

use super::state_machine::Record;
use crate::atomic_write::write_atomic;
use crate::paths::Paths;

/// A record is a few hundred bytes; anything much larger was not written by berthd.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum PersistenceError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a unit record: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn path(paths: &Paths, unit: &str) -> PathBuf {
    paths.units_dir().join(format!("{unit}.json"))
}

/// Writes `unit`'s record.
pub fn save(paths: &Paths, unit: &str, record: &Record) -> Result<(), PersistenceError> {
    let path = path(paths, unit);
    let write = |source| PersistenceError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(paths.units_dir()).map_err(write)?;
    let json = serde_json::to_vec(record).map_err(|e| write(std::io::Error::other(e)))?;
    write_atomic(&path, &json).map_err(write)
}

/// `unit`'s record, if a previous berthd left one.
pub fn load(paths: &Paths, unit: &str) -> Result<Option<Record>, PersistenceError> {
    let path = path(paths, unit);
    let read = |source| PersistenceError::Read {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(PersistenceError::Corrupt {
            path,
            reason: format!("larger than {MAX_RECORD_BYTES} bytes"),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PersistenceError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

/// Forgets `unit`'s record (the unit was detached).
pub fn remove(paths: &Paths, unit: &str) -> Result<(), PersistenceError> {
    let path = path(paths, unit);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PersistenceError::Remove { path, source }),
    }
}

/// [`remove`], a failure logged: a unit that goes (detach, reattach, attach over it) must not
/// come back with its old state when one of the same name is attached.
pub fn forget(paths: &Paths, unit: &str) {
    if let Err(e) = remove(paths, unit) {
        tracing::warn!(unit = %berth_logging::Untrusted(unit), error = %e, "the unit's old record stays");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::state_machine::{UnitResult, UnitState};
    use berth_protocol::supervisor::{ExitStatus, RunResult};

    fn record() -> Record {
        Record {
            state: UnitState::Failed,
            result: Some(UnitResult::Run(RunResult::ExitCode)),
            exit: Some(ExitStatus {
                code: Some(3),
                signal: None,
            }),
            failure: Some("main process exited with code 3".into()),
            restarts: 4,
            since_usec: 1_700_000_000_000_000,
            main_pid: None,
            restart_pending: false,
        }
    }

    #[test]
    fn a_saved_record_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());

        save(&paths, "a.service", &record()).unwrap();

        assert_eq!(load(&paths, "a.service").unwrap(), Some(record()));
    }

    #[test]
    fn no_record_is_none_and_a_removed_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        save(&paths, "a.service", &record()).unwrap();

        remove(&paths, "a.service").unwrap();

        assert_eq!(load(&paths, "a.service").unwrap(), None);
        assert_eq!(load(&paths, "b.service").unwrap(), None);
    }

    #[test]
    fn a_corrupt_or_huge_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        std::fs::create_dir_all(paths.units_dir()).unwrap();
        std::fs::write(paths.units_dir().join("a.service.json"), "{").unwrap();
        let huge = vec![b' '; MAX_RECORD_BYTES as usize + 10];
        std::fs::write(paths.units_dir().join("b.service.json"), huge).unwrap();

        let corrupt = load(&paths, "a.service").unwrap_err().to_string();
        let too_big = load(&paths, "b.service").unwrap_err().to_string();

        assert!(corrupt.contains("a.service.json"), "{corrupt}");
        assert!(too_big.contains("larger than"), "{too_big}");
    }
}
