//! Tarball images (`.tar.gz`, `.tar.zst`) imported by berthd as user berth, and hostile
//! tarballs: each refused naming the entry, nothing left in STATE/images, nothing outside it
//! changed, berthd still serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::tarball::{self, Compression, RawEntry};
use berth_testkit::{Harness, busybox_image, process_exists};

const WAIT: Duration = Duration::from_secs(10);

fn berth_uid() -> u32 {
    let name = c"berth";
    // SAFETY: getpwnam reads a NUL-terminated name and returns a pointer into static storage
    // (or null), read at once on this thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "no user berth (scripts/setup-debian.sh)");
    // SAFETY: non-null, as checked.
    unsafe { (*entry).pw_uid }
}

/// The busybox fixture `hello` packed as a tarball in the harness directory.
fn busybox_tarball(h: &Harness, compression: Compression) -> PathBuf {
    let tree = busybox_image(&h.dir().join("src"), "hello").unwrap();
    let out = h.dir().join(format!("hello{}", compression.suffix()));
    tarball::pack(&tree, &out, compression).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn imported_service_runs(compression: Compression) {
    let h = Harness::start().unwrap();
    let archive = busybox_tarball(&h, compression);

    h.berth_ok(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--name",
        "hello",
    ])
    .unwrap();

    let os_release = h.images_dir().join("hello/etc/os-release");
    assert!(os_release.is_file());
    assert_eq!(
        fs::metadata(&os_release).unwrap().uid(),
        berth_uid(),
        "unpacked as berth"
    );
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    h.wait_for(
        || Ok(h.berth_ok(&["logs", "hello"])?.contains("hello from hello")),
        WAIT,
    )
    .unwrap();
}

#[test]
fn a_gzip_tarball_is_imported_and_its_service_runs() {
    imported_service_runs(Compression::Gzip);
}

#[test]
fn a_zstd_tarball_is_imported_and_its_service_runs() {
    imported_service_runs(Compression::Zstd);
}

/// A directory next to the pool that no import may touch.
fn canary(h: &Harness) -> PathBuf {
    let canary = h.dir().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("file"), "canary").unwrap();
    canary
}

fn assert_canary_untouched(canary: &Path) {
    assert_eq!(entries(canary), ["file"]);
    assert_eq!(fs::read_to_string(canary.join("file")).unwrap(), "canary");
}

/// Imports `archive`, which must fail with a message containing `expected`, leave nothing in
/// the pool and keep berthd serving.
fn assert_refused(h: &Harness, archive: &Path, expected: &str) {
    let berthd = h.berthd_pid().unwrap();

    let error = h
        .berth_err(&[
            "image",
            "import",
            archive.to_str().unwrap(),
            "--name",
            "bad",
        ])
        .unwrap();

    assert!(error.contains(expected), "{}: {error}", archive.display());
    assert!(
        entries(&h.images_dir()).is_empty(),
        "{:?}",
        entries(&h.images_dir())
    );
    assert!(process_exists(berthd));
    h.berth_ok(&["image", "list"]).unwrap();
}

#[test]
fn hostile_tarballs_are_refused_naming_the_entry_and_leave_nothing() {
    let h = Harness::start().unwrap();
    let canary = canary(&h);
    let absolute = format!("{}/pwned", canary.display());
    let canary_target = canary.display().to_string();
    let cases: Vec<(&str, Vec<RawEntry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![RawEntry::file("../../../canary/pwned", b"x")],
            "../../../canary/pwned",
        ),
        ("absolute", vec![RawEntry::file(&absolute, b"x")], &absolute),
        (
            "symlink-out",
            vec![RawEntry::link(b'2', "etc/evil", "../../../../canary")],
            "etc/evil",
        ),
        (
            "through-symlink",
            vec![
                RawEntry::link(b'2', "evil", &canary_target),
                RawEntry::file("evil/pwned", b"x"),
            ],
            "evil/pwned",
        ),
        (
            "hardlink-out",
            vec![RawEntry::link(b'1', "passwd", "../../../../etc/passwd")],
            "passwd",
        ),
        (
            "chardev",
            vec![RawEntry::link(b'3', "dev/null", "")],
            "dev/null",
        ),
        (
            "blockdev",
            vec![RawEntry::link(b'4', "dev/sda", "")],
            "dev/sda",
        ),
        (
            "fifo",
            vec![RawEntry::link(b'6', "etc/os-release", "")],
            "etc/os-release",
        ),
    ];
    for (name, mut hostile, expected) in cases {
        // Some files first, so that there is a half-unpacked tree to remove.
        hostile.insert(0, RawEntry::file("etc/hostname", b"first\n"));
        let archive = tarball::raw(&h.dir().join(format!("{name}.tar")), &hostile).unwrap();

        assert_refused(&h, &archive, expected);

        assert_canary_untouched(&canary);
    }
}

#[test]
fn a_gzip_bomb_is_refused_by_its_compression_ratio() {
    let h = Harness::start().unwrap();
    let bomb = tarball::gzip_bomb(&h.dir().join("bomb.tar.gz"), 256 * 1024 * 1024).unwrap();

    assert_refused(&h, &bomb, "bomb");
}

#[test]
fn the_limits_of_berthd_toml_bound_entries_and_bytes() {
    let h =
        Harness::start_with_config("tarball_max_entries = 20\ntarball_max_bytes = 4096\n").unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let many: Vec<_> = names.iter().map(|n| RawEntry::file(n, b"")).collect();
    let many = tarball::raw(&h.dir().join("many.tar"), &many).unwrap();
    let big = vec![7u8; 8192];
    let big = tarball::raw(&h.dir().join("big.tar"), &[RawEntry::file("big", &big)]).unwrap();

    assert_refused(&h, &many, "more than 20 entries");
    assert_refused(&h, &big, "more than 4096 bytes");
}

#[test]
fn an_import_cut_short_by_a_crash_is_removed_when_berthd_starts_again() {
    let mut h = Harness::start().unwrap();
    h.kill_berthd().unwrap();
    // What a berthd killed while unpacking leaves: a hidden, half-written tree of berth's.
    let stale = h.images_dir().join(".import-hello-4242-0");
    fs::create_dir_all(stale.join("usr/bin")).unwrap();
    fs::write(stale.join("usr/bin/half"), "x").unwrap();
    for path in [
        &stale,
        &stale.join("usr"),
        &stale.join("usr/bin"),
        &stale.join("usr/bin/half"),
    ] {
        std::os::unix::fs::chown(path, Some(berth_uid()), Some(berth_uid())).unwrap();
    }

    h.start_berthd().unwrap();

    assert!(
        entries(&h.images_dir()).is_empty(),
        "{:?}",
        entries(&h.images_dir())
    );
    h.berth_ok(&["image", "list"]).unwrap();
}
