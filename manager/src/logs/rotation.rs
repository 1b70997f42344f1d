//! Moving a full `current.log` aside without a reader ever seeing it half done.

use super::LogFiles;

/// Rotation, in three steps that readers in berthd never see half done:
/// 1. [`begin_rotation`]: once `current.log` has grown past the limit, create `incoming.log`,
///    which berthd hands to the supervisor;
/// 2. the supervisor switches to it, so `current.log` receives no more output;
/// 3. [`finish_rotation`]: move `current.log` to `previous.log` (replacing it) and
///    `incoming.log` to `current.log`.
///
/// A follower therefore reads the old file to its true end before the new one starts, and
/// loses no line. If the supervisor refuses the file, [`abandon_rotation`] removes it.
pub fn begin_rotation(files: &LogFiles, max: u64) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::metadata(&files.current) {
        Ok(meta) if meta.len() > max => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let incoming = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&files.incoming)?;
    incoming.set_len(0)?;
    Ok(Some(incoming))
}

/// `incoming.log` left by a rotation a berthd restart interrupted, opened for appending, to be
/// handed to the supervisor again.
pub fn interrupted_rotation(files: &LogFiles) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&files.incoming)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Step 3 of a rotation (see [`begin_rotation`]), once the supervisor writes to `incoming.log`.
pub fn finish_rotation(files: &LogFiles) -> std::io::Result<()> {
    if !files.incoming.exists() {
        return Ok(());
    }
    match std::fs::rename(&files.current, &files.previous) {
        // Already moved by a berthd that stopped between the two renames.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::rename(&files.incoming, &files.current)
}

/// Undoes step 1 when the supervisor refused the new file.
pub fn abandon_rotation(files: &LogFiles) -> std::io::Result<()> {
    match std::fs::remove_file(&files.incoming) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::test_log::{append_log, files, write_log};

    #[test]
    fn a_full_log_gets_an_incoming_file_and_is_moved_aside_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);

        let incoming = begin_rotation(&files, 1).unwrap();
        let untouched = std::fs::read_to_string(&files.current).unwrap();
        finish_rotation(&files).unwrap();

        assert!(incoming.is_some());
        assert!(
            untouched.contains("old"),
            "current.log moved before the switch"
        );
        assert_eq!(std::fs::metadata(&files.current).unwrap().len(), 0);
        assert!(
            std::fs::read_to_string(&files.previous)
                .unwrap()
                .contains("old")
        );
        assert!(!files.incoming.exists());
    }

    #[test]
    fn an_interrupted_rotation_hands_over_the_same_incoming_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);
        assert!(interrupted_rotation(&files).unwrap().is_none());
        begin_rotation(&files, 1).unwrap().unwrap();
        append_log(&files.incoming, &["new"]);

        let again = interrupted_rotation(&files).unwrap();
        finish_rotation(&files).unwrap();

        assert!(again.is_some());
        assert!(
            std::fs::read_to_string(&files.current)
                .unwrap()
                .contains("new")
        );
        assert!(
            std::fs::read_to_string(&files.previous)
                .unwrap()
                .contains("old")
        );
    }

    #[test]
    fn a_log_under_its_limit_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["small"]);

        assert!(begin_rotation(&files, 1 << 20).unwrap().is_none());
        assert!(!files.incoming.exists());
    }

    #[test]
    fn an_abandoned_rotation_leaves_the_log_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["kept"]);
        begin_rotation(&files, 1).unwrap().unwrap();

        abandon_rotation(&files).unwrap();
        finish_rotation(&files).unwrap();

        assert!(
            std::fs::read_to_string(&files.current)
                .unwrap()
                .contains("kept")
        );
        assert!(!files.previous.exists() && !files.incoming.exists());
    }

    #[test]
    fn a_rotation_interrupted_between_its_renames_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);
        begin_rotation(&files, 1).unwrap().unwrap();
        std::fs::rename(&files.current, &files.previous).unwrap();

        finish_rotation(&files).unwrap();

        assert!(files.current.exists() && !files.incoming.exists());
    }
}
