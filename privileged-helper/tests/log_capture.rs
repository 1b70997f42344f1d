//! The supervisor's log capture against a disk that does not keep up (needs root: a real ext4
//! on a loop device, frozen with FIFREEZE so every write to it blocks, as on a stalled disk).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_protocol::log_line::Stream;
use fixture::*;
use tempfile::TempDir;

/// A small ext4 mounted (through a loop device) over a directory, which a test can freeze.
struct LogDisk {
    _image: TempDir,
    mount: PathBuf,
    frozen: bool,
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

impl LogDisk {
    fn mount_over(dir: &Path) -> LogDisk {
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("disk.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let file = file.to_str().unwrap();
        run("mkfs.ext4", &["-q", "-F", file]);
        run("mount", &["-o", "loop", file, dir.to_str().unwrap()]);
        LogDisk {
            _image: image,
            mount: dir.to_path_buf(),
            frozen: false,
        }
    }

    fn freeze(&mut self) {
        run("fsfreeze", &["-f", self.mount.to_str().unwrap()]);
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            run("fsfreeze", &["-u", self.mount.to_str().unwrap()]);
        }
    }
}

impl Drop for LogDisk {
    fn drop(&mut self) {
        self.thaw();
        // Lazily: the supervisor may still hold the log open; the loop device goes with the
        // last reference (mount -o loop sets autoclear).
        let _ = Command::new("umount")
            .args(["-l", self.mount.to_str().unwrap()])
            .status();
    }
}

/// Lines of ~100 bytes: far more than the pipe and the supervisor's queue hold together.
const LINES: u64 = 30_000;

#[test]
fn a_service_writing_to_a_stalled_disk_runs_on_and_the_drops_are_counted_and_told() {
    require_root();
    let mut fx = Fixture::new("stalled-log");
    let mut disk = LogDisk::mount_over(fx.logs.path());
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do \
         echo \"line $i ................................................................\"; \
         i=$((i+1)); done"
    );
    let spec = fx.spec(&["/bin/sh", "-c", &script]);
    let fds = fx.fds();
    disk.freeze();

    fx.launched = Some(launch_in_child(&spec, fds).unwrap());
    let exited = fx.wait_exit();
    disk.thaw();

    assert_eq!(exited.exit.and_then(|e| e.code), Some(0));
    let dropped = exited.log_dropped;
    assert!(dropped > 0, "nothing dropped behind a frozen disk");
    let note = format!("berth: {dropped} lines dropped: the log could not keep up");
    wait_until("the note about the dropped lines", || {
        fx.log_records().iter().any(|r| r.text == note)
    });
    let records = fx.log_records();
    let kept = records
        .iter()
        .filter(|r| r.stream == Stream::Stdout && r.text.starts_with("line "))
        .count() as u64;
    assert_eq!(kept + dropped, LINES, "lines lost without being counted");
}
