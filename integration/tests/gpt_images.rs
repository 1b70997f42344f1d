//! GPT disk images (Discoverable Partitions Specification): one attaches and runs its service,
//! and hostile partition tables are refused with an error naming the problem, while nothing on
//! the host changes and the daemons keep serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use berth_testkit::Harness;
use berth_testkit::gpt_disk::{ESP, GptDisk, LINUX_GENERIC, ROOT_ARM64, ROOT_X86_64};

/// Loop devices whose backing file lies under `dir` (the images of this test only).
fn loop_devices_backed_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = fs::read_to_string(&backing)
            && Path::new(file.trim()).starts_with(dir)
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// What a refused image must leave as it was: the state directory's attachments, the host's
/// mounts and this test's loop devices.
struct HostSnapshot {
    attached: Vec<PathBuf>,
    mounts: usize,
    loops: Vec<String>,
}

fn snapshot(h: &Harness) -> HostSnapshot {
    let attached_dir = h.state_dir().join("attached");
    let mut attached: Vec<PathBuf> = fs::read_dir(&attached_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    attached.sort();
    HostSnapshot {
        attached,
        mounts: fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        loops: loop_devices_backed_under(h.dir()),
    }
}

/// Attaching (and inspecting) the disk fails with an error containing `problem`; nothing on
/// the host changed and berthd still serves.
fn assert_refused(disk: GptDisk, problem: &str) {
    let h = Harness::start().unwrap();
    let path = h.images_dir().join("hostile_1.raw");
    disk.write(&path).unwrap();
    let before = snapshot(&h);

    let attach = h.berth_err(&["attach", path.to_str().unwrap()]).unwrap();
    let inspect = h
        .berth_err(&["image", "inspect", path.to_str().unwrap()])
        .unwrap();

    assert!(attach.contains(problem), "attach said: {attach}");
    assert!(attach.contains("GPT disk image"), "attach said: {attach}");
    assert!(inspect.contains(problem), "inspect said: {inspect}");
    let after = snapshot(&h);
    assert_eq!(after.attached, before.attached);
    assert_eq!(after.loops, before.loops);
    assert_eq!(after.mounts, before.mounts);
    h.berth_ok(&["list"]).unwrap();
    assert!(h.helper_pid().is_some(), "the helper is gone");
}

#[test]
fn a_gpt_with_overlapping_partitions_is_refused() {
    let disk = GptDisk::new()
        .partition_at(ROOT_X86_64, 2048, 2048, b"hsqs".to_vec())
        .partition_at(LINUX_GENERIC, 4000, 100, Vec::new());

    assert_refused(
        disk,
        "partitions #1 (sectors 2048..=4095) and #2 (sectors 4000..=4099) overlap",
    );
}

#[test]
fn a_gpt_with_only_wrong_type_partitions_is_refused() {
    let disk = GptDisk::new()
        .partition(ESP, vec![0u8; 4096])
        .partition(ROOT_ARM64, b"hsqs".to_vec())
        .partition(LINUX_GENERIC, b"hsqs".to_vec());

    assert_refused(
        disk,
        "no DPS root or usr partition for x86-64 (partitions: #1 esp, #2 root (arm64), #3 \
         linux-generic)",
    );
}

#[test]
fn a_gpt_with_a_bad_header_crc_is_refused() {
    let disk = GptDisk::new()
        .partition(ROOT_X86_64, b"hsqs".to_vec())
        .corrupt_header_crc();

    assert_refused(disk, "GPT header CRC32 mismatch");
}

#[test]
fn a_gpt_whose_partition_passes_the_disk_end_is_refused() {
    // The table describes the whole disk; the file was cut short after it was written.
    let disk = GptDisk::new()
        .partition(ROOT_X86_64, vec![0u8; 1024 * 1024])
        .truncate(3000);

    assert_refused(
        disk,
        "partition #1 (sectors 2048..=4095) extends past the disk end (3177 sectors)",
    );
}

#[test]
fn a_gpt_with_a_huge_entry_count_is_refused() {
    let disk = GptDisk::new()
        .partition(ROOT_X86_64, b"hsqs".to_vec())
        .claim_entries(u32::MAX);

    assert_refused(
        disk,
        "GPT has 4294967295 partition entries, more than the 1024 accepted",
    );
}

#[test]
fn a_gpt_whose_root_partition_holds_no_filesystem_is_refused() {
    let disk = GptDisk::new().partition(ROOT_X86_64, b"\x1f\x8b\x08 gzip".to_vec());

    assert_refused(disk, "its root partition #1 holds a gzip-compressed file");
}
