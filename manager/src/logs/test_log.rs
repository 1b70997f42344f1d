//! Logs written for the tests of this module.

use std::path::Path;

use berth_protocol::log_line::{Stream, encode};

use super::{LogFiles, begin_rotation, finish_rotation};

pub(super) fn write_log(path: &Path, texts: &[&str]) {
    let mut bytes = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        encode(i as u64, Stream::Stdout, t.as_bytes(), &mut bytes);
    }
    std::fs::write(path, bytes).unwrap();
}

pub(super) fn append_log(path: &Path, texts: &[&str]) {
    use std::io::Write;
    let mut bytes = Vec::new();
    for t in texts {
        encode(9, Stream::Stdout, t.as_bytes(), &mut bytes);
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(&bytes).unwrap();
}

pub(super) fn files(dir: &Path) -> LogFiles {
    LogFiles::in_dir(dir)
}

/// A whole rotation, as berthd and a cooperating supervisor do it.
pub(super) fn rotate(files: &LogFiles) {
    begin_rotation(files, 1).unwrap().unwrap();
    finish_rotation(files).unwrap();
}
