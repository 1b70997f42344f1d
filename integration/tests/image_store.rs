//! The image store: `berth image import | list | inspect | remove | read-only | pack`, the
//! search path and portabled's naming.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::manager::{ImportImageParams, ImportImageReply};
use berth_testkit::{Harness, ImageBuilder, busybox_image};

/// A busybox image `name` (unit `name.service`) built in the harness's scratch space.
fn tree(h: &Harness, name: &str) -> PathBuf {
    busybox_image(&h.dir().join("src"), name).unwrap()
}

/// `tree` packed into the squashfs file `file` with `berth image pack`.
fn pack(h: &Harness, tree: &Path, file: &Path) {
    h.berth_ok(&[
        "image",
        "pack",
        tree.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ])
    .unwrap();
}

/// The `image list --json` entry of `name`.
fn listed(h: &Harness, name: &str) -> serde_json::Value {
    let list = h.berth_json(&["image", "list"]).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_copies_a_directory_into_the_pool_where_it_attaches() {
    let h = Harness::start().unwrap();
    let source = tree(&h, "hello");

    let out = h.berth_ok(&["image", "import", path(&source)]).unwrap();

    assert!(out.starts_with("Imported image hello ("), "{out}");
    let copy = h.images_dir().join("hello");
    assert_eq!(
        fs::read(copy.join("bin/busybox")).unwrap(),
        fs::read(source.join("bin/busybox")).unwrap()
    );
    let entry = listed(&h, "hello");
    assert_eq!(entry["kind"], "directory");
    assert_eq!(entry["path"], path(&copy));
    fs::remove_dir_all(&source).unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
}

#[test]
fn import_copies_a_raw_file_byte_for_byte_and_names_it_from_its_file_name() {
    let h = Harness::start().unwrap();
    let raw = h.dir().join("foo_1.2.raw");
    pack(&h, &tree(&h, "foo"), &raw);

    h.berth_ok(&["image", "import", path(&raw)]).unwrap();

    let copy = h.images_dir().join("foo_1.2.raw");
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&raw).unwrap());
    let entry = listed(&h, "foo");
    assert_eq!(entry["kind"], "raw");
    assert_eq!(entry["version"], "1.2");
    assert_eq!(entry["size"], fs::metadata(&raw).unwrap().len());
    assert_eq!(entry["read_only"], false);
    assert_eq!(entry["state"], "detached");
    assert!(entry["mtime_usec"].as_i64().unwrap() > 0);
}

#[test]
fn import_with_a_name_keeps_the_version_of_the_file_name() {
    let h = Harness::start().unwrap();
    let raw = h.dir().join("foo_3.raw");
    pack(&h, &tree(&h, "foo"), &raw);

    h.berth_ok(&["image", "import", path(&raw), "--name", "bar"])
        .unwrap();

    assert!(h.images_dir().join("bar_3.raw").is_file());
}

#[test]
fn import_reads_through_the_callers_descriptor_a_file_berthd_cannot_open() {
    // Root's private directory: berthd (user berth) cannot open the file by its path.
    let h = Harness::start().unwrap();
    let private = h.dir().join("private");
    fs::create_dir(&private).unwrap();
    let raw = private.join("secret_1.raw");
    pack(&h, &tree(&h, "secret"), &raw);
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();

    h.berth_ok(&["image", "import", path(&raw)]).unwrap();

    assert_eq!(
        fs::read(h.images_dir().join("secret_1.raw")).unwrap(),
        fs::read(&raw).unwrap()
    );
}

#[test]
fn import_refuses_a_name_the_pool_has_and_leaves_it_alone() {
    let h = Harness::start().unwrap();
    let source = tree(&h, "hello");
    h.berth_ok(&["image", "import", path(&source)]).unwrap();
    fs::write(h.images_dir().join("hello/marker"), "mine").unwrap();

    let err = h.berth_err(&["image", "import", path(&source)]).unwrap();

    assert!(err.contains("an image 'hello' exists already"), "{err}");
    assert_eq!(
        fs::read_to_string(h.images_dir().join("hello/marker")).unwrap(),
        "mine"
    );
}

#[test]
fn import_needs_root_or_the_admin_group() {
    let h = Harness::start().unwrap();
    let raw = h.dir().join("foo.raw");
    fs::write(&raw, b"hsqs").unwrap();
    fs::set_permissions(&raw, fs::Permissions::from_mode(0o644)).unwrap();

    let out = h
        .berth_as(65534, 65534, &[], &["image", "import", path(&raw)])
        .unwrap();

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied: ImportImage"), "{err}");
    assert!(!h.images_dir().join("foo.raw").exists());
}

#[test]
fn import_streams_progress_with_more_and_ends_with_the_image() {
    let h = Harness::start().unwrap();
    let raw = h.dir().join("big_1.raw");
    // 64 MiB after a squashfs magic: several progress replies at 200 ms on a slow disk, at
    // least the last one anyway.
    let mut bytes = vec![0u8; 64 << 20];
    bytes[..4].copy_from_slice(b"hsqs");
    fs::write(&raw, &bytes).unwrap();
    let fd: OwnedFd = fs::File::open(&raw).unwrap().into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut replies: Vec<ImportImageReply> = Vec::new();

    runtime.block_on(async {
        let mut client = berth_varlink::client::Client::connect(&h.socket())
            .await
            .unwrap();
        let params = ImportImageParams {
            source: "big_1.raw".into(),
            name: None,
        };
        let call = client.call_more(
            "io.berth.Manager.ImportImage",
            &params,
            vec![fd],
            |r: ImportImageReply| {
                replies.push(r);
                true
            },
        );
        tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .unwrap()
            .unwrap();
    });

    let last = replies.last().unwrap();
    assert_eq!(last.bytes_done, 64 << 20);
    assert_eq!(last.bytes_total, Some(64 << 20));
    assert_eq!(last.image.as_ref().unwrap().name, "big");
    assert!(
        replies[..replies.len() - 1]
            .iter()
            .all(|r| r.image.is_none())
    );
    assert!(
        replies
            .windows(2)
            .all(|w| w[0].bytes_done <= w[1].bytes_done),
        "progress never goes back"
    );
}

#[test]
fn an_import_call_without_its_descriptor_is_an_invalid_parameter() {
    let h = Harness::start().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let result = runtime.block_on(async {
        let mut client = berth_varlink::client::Client::connect(&h.socket())
            .await
            .unwrap();
        let params = ImportImageParams {
            source: "foo.raw".into(),
            name: None,
        };
        let call =
            client.call::<_, ImportImageReply>("io.berth.Manager.ImportImage", &params, Vec::new());
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
    });

    let error = berth_varlink::client::remote_error_of(&result.unwrap_err()).unwrap();
    assert_eq!(error.error, "org.varlink.service.InvalidParameter");
    assert_eq!(error.parameters.unwrap()["parameter"], "fd");
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn the_cli_refuses_to_import_a_device() {
    let h = Harness::start().unwrap();

    let err = h.berth_err(&["image", "import", "/dev/null"]).unwrap();

    assert!(err.contains("not a directory or an image file"), "{err}");
}

#[test]
fn remove_is_refused_while_attached_and_works_once_detached() {
    let h = Harness::start().unwrap();
    h.berth_ok(&["image", "import", path(&tree(&h, "hello"))])
        .unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    let refused = h.berth_err(&["image", "remove", "hello"]).unwrap();
    let still_there = h.images_dir().join("hello").exists();
    h.berth_ok(&["detach", "hello"]).unwrap();
    let removed = h.berth_ok(&["image", "remove", "hello"]).unwrap();

    assert!(
        refused.contains("image 'hello' is attached; detach it first"),
        "{refused}"
    );
    assert!(still_there);
    assert_eq!(removed, "Removed image hello.\n");
    assert!(!h.images_dir().join("hello").exists());
}

#[test]
fn remove_is_refused_while_running() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello", "--now"]).unwrap();

    let state = listed(&h, "hello")["state"].clone();
    let refused = h.berth_err(&["image", "remove", "hello"]).unwrap();

    assert_eq!(state, "running");
    assert!(refused.contains("is running; detach it first"), "{refused}");
}

#[test]
fn read_only_marks_an_image_and_a_read_only_image_is_not_removed() {
    let h = Harness::start().unwrap();
    h.berth_ok(&["image", "import", path(&tree(&h, "hello"))])
        .unwrap();

    let marked = h.berth_ok(&["image", "read-only", "hello"]).unwrap();
    let listed_ro = listed(&h, "hello")["read_only"].clone();
    let refused = h.berth_err(&["image", "remove", "hello"]).unwrap();
    let cleared = h.berth_ok(&["image", "read-only", "hello", "no"]).unwrap();

    assert_eq!(marked, "Image hello is read-only.\n");
    assert_eq!(listed_ro, true);
    assert!(refused.contains("is read-only"), "{refused}");
    assert_eq!(cleared, "Image hello is writable.\n");
    assert_eq!(listed(&h, "hello")["read_only"], false);
    h.berth_ok(&["image", "remove", "hello"]).unwrap();
}

#[test]
fn images_outside_the_pool_are_not_removed_or_marked() {
    let other = tempfile::tempdir().unwrap();
    busybox_image(other.path(), "ext").unwrap();
    make_traversable(other.path());
    let h = Harness::start_with_config(&format!(
        "image_search_dirs = [\"{}\"]\n",
        other.path().display()
    ))
    .unwrap();

    let remove = h.berth_err(&["image", "remove", "ext"]).unwrap();
    let mark = h.berth_err(&["image", "read-only", "ext"]).unwrap();

    assert!(remove.contains("is not in berthd's pool"), "{remove}");
    assert!(mark.contains("is not in berthd's pool"), "{mark}");
    assert!(other.path().join("ext").exists());
}

/// A temporary directory berthd's user may enter (tempfile makes them 0700).
fn make_traversable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn configured_search_dirs_come_after_the_pool_which_wins_a_name() {
    let other = tempfile::tempdir().unwrap();
    make_traversable(other.path());
    ImageBuilder::new(&other.path().join("both"))
        .os_release("ID=t\nPRETTY_NAME=outside\n")
        .unit("both.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();
    ImageBuilder::new(&other.path().join("only"))
        .unit("only.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();
    let h = Harness::start_with_config(&format!(
        "image_search_dirs = [\"{}\"]\n",
        other.path().display()
    ))
    .unwrap();
    ImageBuilder::new(&h.images_dir().join("both"))
        .os_release("ID=t\nPRETTY_NAME=pool\n")
        .unit("both.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();

    let both = listed(&h, "both");
    let only = listed(&h, "only");

    assert_eq!(both["pretty_name"], "pool");
    assert_eq!(only["path"], path(&other.path().join("only")));
    h.berth_ok(&["attach", "only"]).unwrap();
}

#[test]
fn a_v_directory_attaches_its_newest_version() {
    let h = Harness::start().unwrap();
    let versions = h.images_dir().join("app.v");
    for (version, text) in [("1.2", "old"), ("1.10", "newest"), ("1.9", "older")] {
        ImageBuilder::new(&versions.join(format!("app_{version}")))
            .unit(
                "app.service",
                &format!("[Unit]\nDescription={text}\n[Service]\nExecStart=/bin/true\n"),
            )
            .build()
            .unwrap();
    }

    let entry = listed(&h, "app");
    h.berth_ok(&["attach", "app"]).unwrap();

    assert_eq!(entry["version"], "1.10");
    assert_eq!(entry["path"], path(&versions.join("app_1.10")));
    assert_eq!(h.status_json("app").unwrap()["description"], "newest");
}

#[test]
fn loose_versions_of_one_name_pick_the_newest_by_version_order() {
    let h = Harness::start().unwrap();
    for version in ["2", "10", "9"] {
        ImageBuilder::new(&h.images_dir().join(format!("app_{version}")))
            .unit("app.service", "[Service]\nExecStart=/bin/true\n")
            .build()
            .unwrap();
    }

    assert_eq!(listed(&h, "app")["version"], "10");
}

#[test]
fn inspect_with_prefixes_shows_only_the_matching_units() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("multi"))
        .unit("multi.service", "[Service]\nExecStart=/bin/true\n")
        .unit("multi-worker.service", "[Service]\nExecStart=/bin/true\n")
        .unit("other.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();

    let default = h.berth_json(&["image", "inspect", "multi"]).unwrap();
    let other = h
        .berth_json(&["image", "inspect", "multi", "other"])
        .unwrap();
    let both = h
        .berth_json(&["image", "inspect", "multi", "other", "multi"])
        .unwrap();

    let names = |v: &serde_json::Value| -> Vec<String> {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&default), ["multi-worker.service", "multi.service"]);
    assert_eq!(names(&other), ["other.service"]);
    assert_eq!(names(&both).len(), 3);
}

#[test]
fn list_shows_the_columns_of_every_image() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let table = h.berth_ok(&["image", "list"]).unwrap();

    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "TYPE",
        "VERSION",
        "RO",
        "SIZE",
        "MTIME",
        "STATE",
        "DESCRIPTION",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("hello") && row.contains("directory") && row.contains("detached"),
        "{row}"
    );
    assert!(row.contains(" MiB") || row.contains(" KiB"), "{row}");
}

#[test]
fn pack_builds_squashfs_and_erofs_images_that_import_as_raw() {
    let h = Harness::start().unwrap();
    let source = tree(&h, "packed");
    let squashfs = h.dir().join("packed_1.raw");
    let erofs = h.dir().join("packed_2.raw");

    pack(&h, &source, &squashfs);
    h.berth_ok(&[
        "image",
        "pack",
        path(&source),
        "-o",
        path(&erofs),
        "--format",
        "erofs",
    ])
    .unwrap();

    assert_eq!(&fs::read(&squashfs).unwrap()[..4], b"hsqs");
    assert_eq!(
        &fs::read(&erofs).unwrap()[1024..1028],
        &0xE0F5_E1E2u32.to_le_bytes()
    );
    h.berth_ok(&["image", "import", path(&erofs)]).unwrap();
    assert_eq!(listed(&h, "packed")["kind"], "raw");
}

#[test]
fn pack_refuses_to_overwrite_a_file() {
    let h = Harness::start().unwrap();
    let source = tree(&h, "packed");
    let out = h.dir().join("exists.raw");
    fs::write(&out, "keep").unwrap();

    let err = h
        .berth_err(&["image", "pack", path(&source), "-o", path(&out)])
        .unwrap();

    assert!(err.contains("exists already"), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "keep");
}

#[test]
fn import_unpacks_a_compressed_tarball_into_a_directory_image_that_attaches() {
    use berth_testkit::tarball::{self, Compression};
    let h = Harness::start().unwrap();
    let source = tree(&h, "tarred");
    for (compression, version) in [(Compression::Gzip, "1"), (Compression::Zstd, "2")] {
        let archive = h
            .dir()
            .join(format!("tarred_{version}{}", compression.suffix()));
        tarball::pack(&source, &archive, compression).unwrap();

        h.berth_ok(&["image", "import", path(&archive)]).unwrap();

        let copy = h.images_dir().join(format!("tarred_{version}"));
        assert_eq!(
            fs::read(copy.join("bin/busybox")).unwrap(),
            fs::read(source.join("bin/busybox")).unwrap()
        );
    }
    let entry = listed(&h, "tarred");
    assert_eq!(
        (entry["kind"].as_str(), entry["version"].as_str()),
        (Some("directory"), Some("2"))
    );
    h.berth_ok(&["attach", "tarred"]).unwrap();
}

#[test]
fn import_of_a_hostile_tarball_is_refused_and_leaves_nothing() {
    use berth_testkit::tarball::{self, RawEntry};
    let h = Harness::start().unwrap();
    let archive = h.dir().join("evil.tar");
    tarball::raw(&archive, &[RawEntry::file("../../escaped", b"x")]).unwrap();

    let err = h.berth_err(&["image", "import", path(&archive)]).unwrap();

    assert!(err.contains("image 'evil.tar' is invalid"), "{err}");
    assert_eq!(fs::read_dir(h.images_dir()).unwrap().count(), 0);
    assert!(!h.dir().join("escaped").exists());
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn import_on_a_terminal_shows_a_progress_bar_and_then_the_image() {
    // script(1) gives berth a terminal: the CLI then streams the import (`more`) and draws
    // indicatif's bar on stderr before the last reply names the image.
    let h = Harness::start().unwrap();
    let raw = h.dir().join("tty_1.raw");
    let mut bytes = vec![0u8; 32 << 20];
    bytes[..4].copy_from_slice(b"hsqs");
    fs::write(&raw, &bytes).unwrap();
    let berth = h.bin_dir().join("berth");
    let command = format!(
        "{} --socket {} image import {}",
        berth.display(),
        h.socket().display(),
        raw.display()
    );

    let out = berth_testkit::harness::output_with_timeout(
        {
            let mut script = std::process::Command::new("script");
            script.args(["-qec", &command, "/dev/null"]);
            script
        },
        Duration::from_secs(60),
    )
    .unwrap();

    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("Importing tty_1.raw"),
        "no progress bar: {shown}"
    );
    assert!(shown.contains("Imported image tty ("), "{shown}");
    assert_eq!(fs::read(h.images_dir().join("tty_1.raw")).unwrap(), bytes);
}
