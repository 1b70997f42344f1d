//! The supervisor's log capture (needs root): against a disk that does not keep up (a real ext4
//! on a loop device, frozen so every write to it blocks, as on a stalled disk), and forwarded
//! to a real systemd-journald.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use berth_helper::launch_spec::JournalTarget;
use berth_protocol::helper::JournalFields;
use berth_protocol::log_line::Stream;
use berth_testkit::frozen_disk::FrozenDisk;
use fixture::*;

/// Lines of ~100 bytes: far more than the pipe and the supervisor's queue hold together.
const LINES: u64 = 30_000;

#[test]
fn a_service_writing_to_a_stalled_disk_runs_on_and_the_drops_are_counted_and_told() {
    require_root();
    let mut fx = Fixture::new("stalled-log");
    let mut disk = FrozenDisk::mount_over(fx.logs.path()).unwrap();
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do \
         echo \"line $i ................................................................\"; \
         i=$((i+1)); done"
    );
    let spec = fx.spec(&["/bin/sh", "-c", &script]);
    let fds = fx.fds();
    disk.freeze().unwrap();

    fx.launched = Some(launch_in_child(&spec, fds).unwrap());
    let exited = fx.wait_exit();
    disk.thaw().unwrap();

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

/// A real systemd-journald serving journal namespace `berth-test`, its sockets and files in a
/// temporary directory: it runs in a private mount namespace where that directory's `run` and
/// `log` are bound over /run/systemd and /var/log/journal, so the host's are never touched.
struct Journald {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

const JOURNAL_NAMESPACE: &str = "berth-test";

impl Journald {
    fn start() -> Journald {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["run", "log"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let script = format!(
            "mount --bind {d}/run /run/systemd && mount --bind {d}/log /var/log/journal && \
             exec /lib/systemd/systemd-journald {JOURNAL_NAMESPACE}",
            d = dir.path().display()
        );
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let journald = Journald { dir, child };
        wait_until("journald's socket", || journald.socket().exists());
        journald
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("run/journal.{JOURNAL_NAMESPACE}/socket"))
    }

    /// Every entry so far, as `journalctl -o json` gives them (from the namespace's directory,
    /// `<machine-id>.berth-test`).
    fn entries(&self) -> Vec<serde_json::Value> {
        let suffix = format!(".{JOURNAL_NAMESPACE}");
        let Some(files) = std::fs::read_dir(self.dir.path().join("log"))
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        else {
            return Vec::new();
        };
        let out = std::process::Command::new("journalctl")
            .arg("--directory")
            .arg(files.path())
            .args(["-o", "json", "--no-pager"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_line_reaches_a_real_journald_with_the_units_fields() {
    require_root();
    let journald = Journald::start();
    let mut fx = Fixture::new("journaled.service");
    let mut spec = fx.spec(&["/bin/sh", "-c", "echo to stdout; echo to stderr >&2"]);
    spec.journal = Some(JournalTarget {
        socket: journald.socket(),
        fields: JournalFields {
            identifier: "sh".into(),
            portable: "journaled_1.0".into(),
        },
    });

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    let mut ours = Vec::new();
    wait_until("both lines in the journal", || {
        ours = journald
            .entries()
            .into_iter()
            .filter(|e| e["BERTH_UNIT"] == "journaled.service")
            .collect();
        ours.len() >= 2
    });
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    let mut got: Vec<(String, String)> = ours
        .iter()
        .map(|e| (field(e, "MESSAGE"), field(e, "PRIORITY")))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("to stderr".to_string(), "3".to_string()),
            ("to stdout".to_string(), "6".to_string())
        ]
    );
    for e in &ours {
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "sh");
        assert_eq!(field(e, "UNIT"), "journaled.service");
        assert_eq!(field(e, "PORTABLE"), "journaled_1.0");
        assert_eq!(field(e, "_TRANSPORT"), "journal");
    }
    // The log file has them as before.
    assert_eq!(fx.stdout_lines(), ["to stdout"]);
}

#[test]
fn a_syslog_message_reaches_a_real_journald_with_its_priority_and_identifier() {
    require_root();
    let journald = Journald::start();
    let mut fx = Fixture::new("syslogged.service");
    let mut spec = fx.spec(&[
        "/bin/sh",
        "-c",
        "logger -t food -p daemon.crit 'from syslog'",
    ]);
    spec.sandbox.capture_log_sockets = true;
    spec.journal = Some(JournalTarget {
        socket: journald.socket(),
        fields: JournalFields {
            identifier: "sh".into(),
            portable: "syslogged_1.0".into(),
        },
    });

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    let mut ours = None;
    wait_until("the message in the journal", || {
        ours = journald
            .entries()
            .into_iter()
            .find(|e| e["BERTH_UNIT"] == "syslogged.service");
        ours.is_some()
    });
    let entry = ours.unwrap();
    assert_eq!(entry["MESSAGE"], "from syslog");
    assert_eq!(entry["PRIORITY"], "2");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "food");
    assert_eq!(entry["PORTABLE"], "syslogged_1.0");
}
