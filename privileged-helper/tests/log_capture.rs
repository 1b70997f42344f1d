//! The supervisor's log capture against a disk that does not keep up (needs root: a real ext4
//! on a loop device, frozen so every write to it blocks, as on a stalled disk).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

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
