//! GPT disk images (Discoverable Partitions Specification): one attaches and runs its service,
//! and hostile partition tables are refused with an error naming the problem, while nothing on
//! the host changes and the daemons keep serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use std::time::Duration;

use berth_testkit::gpt_disk::{
    ESP, GptDisk, LINUX_GENERIC, ROOT_ARM64, ROOT_X86_64, ROOT_X86_64_VERITY,
    ROOT_X86_64_VERITY_SIG, squashfs_of,
};
use berth_testkit::{Harness, busybox_image};

const WAIT: Duration = Duration::from_secs(10);

/// A squashfs of the standard busybox image with unit `<name>.service`, built in `dir`.
fn service_squashfs(dir: &Path, name: &str) -> Vec<u8> {
    let tree = busybox_image(&dir.join("trees"), name).unwrap();
    squashfs_of(&tree, dir).unwrap()
}

#[test]
fn a_gpt_image_in_the_store_attaches_by_name_and_its_service_runs() {
    let h = Harness::start().unwrap();
    let path = h.images_dir().join("gptsvc_1.raw");
    GptDisk::new()
        .partition(ESP, vec![0u8; 64 * 1024])
        .partition(ROOT_X86_64, service_squashfs(h.dir(), "gptsvc"))
        .write(&path)
        .unwrap();

    // By name: the store finds gptsvc_1.raw in its images directory.
    h.berth_ok(&["attach", "gptsvc"]).unwrap();
    h.berth_ok(&["start", "gptsvc"]).unwrap();

    h.wait_for(
        || {
            Ok(h.berth_ok(&["logs", "gptsvc"])?
                .contains("hello from gptsvc"))
        },
        WAIT,
    )
    .unwrap();
    assert_eq!(h.status_json("gptsvc").unwrap()["state"], "running");
    let details = h
        .berth_json(&["image", "inspect", path.to_str().unwrap()])
        .unwrap();
    assert_eq!(details["partition"]["designator"], "root");
    assert_eq!(details["partition"]["number"], 2);
    assert_eq!(details["partition"]["architecture"], "x86-64");
    assert_eq!(details["partition"]["filesystem"], "squashfs");
    assert_eq!(details["partition"]["offset"], 4096 * 512);
    assert!(details["verity"].is_null(), "{details}");
    // The helper's loop device reads just the partition: it starts where the partition does.
    let loops = loop_devices_backed_under(h.dir());
    assert_eq!(loops.len(), 1, "{loops:?}");
    let offset = fs::read_to_string(format!("/sys/block/{}/loop/offset", loops[0])).unwrap();
    assert_eq!(offset.trim(), (4096 * 512).to_string());
}

#[test]
fn a_stopped_and_detached_gpt_image_leaves_no_loop_device() {
    let h = Harness::start().unwrap();
    let path = h.images_dir().join("gptgone_1.raw");
    GptDisk::new()
        .partition(ROOT_X86_64, service_squashfs(h.dir(), "gptgone"))
        .write(&path)
        .unwrap();
    h.berth_ok(&["attach", path.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "gptgone"]).unwrap();
    assert_eq!(loop_devices_backed_under(h.dir()).len(), 1);

    h.berth_ok(&["detach", "--now", "gptgone"]).unwrap();

    // Autoclear frees the device once the last mount and fd are gone.
    h.wait_for(|| Ok(loop_devices_backed_under(h.dir()).is_empty()), WAIT)
        .unwrap();
}

#[test]
fn verity_partitions_are_recognised_and_reported_as_not_enforced() {
    // Without device-mapper (this host) the reason is its absence; with it, that berth sets up
    // no dm-verity yet. Either way nothing is enforced and the reason says why.
    let device_mapper = Path::new("/dev/mapper/control").exists()
        || std::fs::read_to_string("/proc/misc")
            .is_ok_and(|misc| misc.lines().any(|l| l.ends_with(" device-mapper")));
    let reason = if device_mapper {
        "berth does not set up dm-verity devices yet"
    } else {
        "this kernel has no device-mapper"
    };
    let h = Harness::start().unwrap();
    let path = h.images_dir().join("gptver_1.raw");
    GptDisk::new()
        .partition(ROOT_X86_64, service_squashfs(h.dir(), "gptver"))
        .partition(ROOT_X86_64_VERITY, vec![0u8; 8192])
        .partition(ROOT_X86_64_VERITY_SIG, b"{}".to_vec())
        .write(&path)
        .unwrap();

    let attach = h.berth(&["attach", path.to_str().unwrap()]).unwrap();
    let details = h
        .berth_json(&["image", "inspect", path.to_str().unwrap()])
        .unwrap();

    let warned = String::from_utf8_lossy(&attach.stderr);
    assert!(attach.status.success(), "{warned}");
    assert!(
        warned.contains(&format!(
            "root-verity partition #2 and a signature partition (#3) found, but verity is NOT \
             enforced: {reason}"
        )),
        "{warned}"
    );
    assert_eq!(details["verity"]["partition"], "root-verity");
    assert_eq!(details["verity"]["number"], 2);
    assert_eq!(details["verity"]["signature_number"], 3);
    assert_eq!(details["verity"]["enforced"], false);
    assert!(
        details["verity"]["reason"]
            .as_str()
            .unwrap()
            .contains(reason),
        "{details}"
    );
}

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

#[test]
fn a_gpt_whose_root_squashfs_is_corrupt_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let mut squashfs = service_squashfs(scratch.path(), "gptbad");
    // Keep the superblock's magic, garble everything after it.
    for byte in &mut squashfs[8..] {
        *byte = 0x5a;
    }
    let disk = GptDisk::new().partition(ROOT_X86_64, squashfs);

    assert_refused(
        disk,
        "(squashfs in root partition #1 of a GPT disk image): cannot mount the squashfs image: \
         the kernel refused squashfs",
    );
}

#[test]
fn a_gpt_whose_root_squashfs_is_cut_short_by_its_partition_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let squashfs = service_squashfs(scratch.path(), "gptcut");
    let half = squashfs[..squashfs.len() / 2 / 512 * 512].to_vec();
    let disk = GptDisk::new().partition(ROOT_X86_64, half);

    assert_refused(
        disk,
        "(squashfs in root partition #1 of a GPT disk image): cannot mount the squashfs image: \
         the kernel refused squashfs",
    );
}
