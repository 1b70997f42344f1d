//! File descriptors, not paths, cross the boundaries (DESIGN.md §1): the CLI opens a local
//! image with the caller's rights and passes the descriptor; berthd reads the image through it
//! and keeps it for starting the units; the helper gets it for the sandbox.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use berth_protocol::manager::{AttachParams, AttachReply, ImagesReply};
use berth_testkit::{ExtensionBuilder, Harness, ImageBuilder};
use berth_varlink::client::{Client, ClientError};

/// An unprivileged user, not in the admin group.
const USER: u32 = 4344;

const UNIT: &str = "[Service]\nType=oneshot\nExecStart=/bin/cat /marker\n";

/// `D/private/boxed`: an image in a root-owned 0700 directory, which berthd's user cannot
/// enter. The image itself is open to all (0755).
fn image_in_private_dir(h: &Harness) -> PathBuf {
    let private = h.dir().join("private");
    let image = ImageBuilder::new(&private.join("boxed"))
        .file("marker", "read through the descriptor\n", 0o644)
        .unit("boxed.service", UNIT)
        .build()
        .unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    image
}

fn call_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), f).await })
        .expect("call timed out")
}

/// Attach of `path` sent as root straight to berthd with `fd` as the image.
fn attach_with(h: &Harness, path: &str, fd: OwnedFd) -> Result<AttachReply, ClientError> {
    attach_call(h, path, &[], vec![fd])
}

/// Attach of `image` with `extensions`, sent as root straight to berthd with `fds`.
fn attach_call(
    h: &Harness,
    image: &str,
    extensions: &[&str],
    fds: Vec<OwnedFd>,
) -> Result<AttachReply, ClientError> {
    call_timeout(async {
        let mut client = Client::connect(&h.socket()).await.unwrap();
        let params = AttachParams {
            image: image.into(),
            prefixes: None,
            profile: None,
            force: None,
            extensions: Some(extensions.iter().map(|e| e.to_string()).collect()),
            enable: None,
            ports: None,
        };
        client.call("io.berth.Manager.Attach", &params, fds).await
    })
}

/// Image `base` in the pool, and `D/private/app`: an extension carrying `app.service` (which
/// prints the extension's file) in a root-owned 0700 directory berthd's user cannot enter.
fn base_and_extension_in_private_dir(h: &Harness) -> PathBuf {
    ImageBuilder::new(&h.images_dir().join("base"))
        .os_release("ID=berth-test\nVERSION_ID=1\n")
        .unit("base.service", UNIT)
        .build()
        .unwrap();
    let private = h.dir().join("private");
    let extension = ExtensionBuilder::new(&private.join("app"))
        .unit(
            "app.service",
            "[Service]\nType=oneshot\nExecStart=/bin/cat /usr/share/app/data\n",
        )
        .file(
            "usr/share/app/data",
            "extension read through its descriptor\n",
        )
        .build()
        .unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    extension
}

#[test]
fn root_attaches_and_starts_an_image_in_a_directory_berth_cannot_enter() {
    let h = Harness::start().unwrap();
    let image = image_in_private_dir(&h);

    h.berth_ok(&["attach", image.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "boxed"]).unwrap();

    let logs = h.berth_ok(&["logs", "boxed"]).unwrap();
    assert!(logs.contains("read through the descriptor"), "{logs}");
}

#[test]
fn strict_modes_sees_the_directories_below_one_berth_cannot_enter() {
    let h = Harness::start().unwrap();
    let private = h.dir().join("private");
    let inner = private.join("inner");
    let image = ImageBuilder::new(&inner.join("boxed"))
        .unit("boxed.service", UNIT)
        .build()
        .unwrap();
    // Another user owns the directory holding the image, inside root's 0700 directory: they
    // could swap the image, and only the walk up from the descriptor shows berthd that.
    std::os::unix::fs::chown(&inner, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();

    let err = h.berth_err(&["attach", image.to_str().unwrap()]).unwrap();

    assert!(
        err.contains(&format!("{} is owned by uid {USER}", inner.display()))
            && err.contains("--force"),
        "{err}"
    );
}

#[test]
fn after_a_restart_berthd_cannot_reopen_it_and_says_to_attach_again() {
    let mut h = Harness::start().unwrap();
    let image = image_in_private_dir(&h);
    h.berth_ok(&["attach", image.to_str().unwrap()]).unwrap();
    h.restart_berthd().unwrap();

    let err = h.berth_err(&["start", "boxed"]).unwrap();
    h.berth_ok(&["attach", image.to_str().unwrap()]).unwrap();
    let again = h.berth_ok(&["start", "boxed"]);

    assert!(
        err.starts_with("berth: ")
            && err.contains("attached by descriptor")
            && err.contains("attach it again"),
        "{err}"
    );
    assert!(again.is_ok(), "{again:?}");
}

#[test]
fn a_user_gets_no_descriptor_for_an_image_they_cannot_open() {
    let h = Harness::start().unwrap();
    let image = image_in_private_dir(&h);

    let out = h
        .berth_as(
            USER,
            USER,
            &[],
            &["image", "inspect", image.to_str().unwrap()],
        )
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("berth: cannot open image")
            && stderr
                .contains("permission denied (berth opens a local image with your own rights)"),
        "{stderr}"
    );
}

#[test]
fn a_user_inspects_an_image_they_can_open() {
    let h = Harness::start().unwrap();
    let image = ImageBuilder::new(&h.dir().join("open"))
        .unit("open.service", UNIT)
        .build()
        .unwrap();

    let out = h
        .berth_as(
            USER,
            USER,
            &[],
            &["image", "inspect", image.to_str().unwrap()],
        )
        .unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("open.service"), "{stdout}");
}

#[test]
fn a_socket_or_a_pipe_passed_as_the_image_is_refused_and_berthd_serves_on() {
    let h = Harness::start().unwrap();
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pipe, _writer) = rustix::pipe::pipe().unwrap();

    let by_socket = attach_with(&h, "/srv/sock", socket.into()).unwrap_err();
    let by_pipe = attach_with(&h, "/srv/pipe", pipe).unwrap_err();

    for (error, kind) in [(by_socket, "socket"), (by_pipe, "pipe")] {
        let remote = berth_varlink::client::remote_error_of(&error).unwrap();
        assert_eq!(remote.error, "io.berth.Manager.InvalidImage");
        let reason = remote.parameters.unwrap()["reason"].to_string();
        assert!(
            reason.contains(&format!("is a {kind}, not a directory")),
            "{reason}"
        );
    }
    let images: ImagesReply = call_timeout(async {
        let mut client = Client::connect(&h.socket()).await.unwrap();
        client
            .call(
                "io.berth.Manager.ListImages",
                &serde_json::json!({}),
                vec![],
            )
            .await
    })
    .unwrap();
    assert!(images.images.is_empty());
}

#[test]
fn a_descriptor_that_is_not_the_image_at_the_path_is_refused() {
    let h = Harness::start().unwrap();
    let named = ImageBuilder::new(&h.dir().join("named"))
        .unit("named.service", UNIT)
        .build()
        .unwrap();
    let other = ImageBuilder::new(&h.dir().join("other"))
        .unit("other.service", UNIT)
        .build()
        .unwrap();
    let fd: OwnedFd = fs::File::open(&other).unwrap().into();

    let error = attach_with(&h, named.to_str().unwrap(), fd).unwrap_err();

    assert!(error.to_string().contains("not the image at"), "{error}");
}

#[test]
fn root_attaches_and_starts_with_an_extension_in_a_directory_berth_cannot_enter() {
    let h = Harness::start().unwrap();
    let extension = base_and_extension_in_private_dir(&h);

    h.berth_ok(&[
        "attach",
        "base",
        "app",
        "--extension",
        extension.to_str().unwrap(),
    ])
    .unwrap();
    h.berth_ok(&["start", "app"]).unwrap();

    let logs = h.berth_ok(&["logs", "app"]).unwrap();
    assert!(
        logs.contains("extension read through its descriptor"),
        "{logs}"
    );
}

#[test]
fn after_a_restart_berthd_cannot_reopen_an_extension_and_says_to_attach_again() {
    let mut h = Harness::start().unwrap();
    let extension = base_and_extension_in_private_dir(&h);
    let extension = extension.to_str().unwrap();
    h.berth_ok(&["attach", "base", "app", "--extension", extension])
        .unwrap();
    h.restart_berthd().unwrap();

    let err = h.berth_err(&["start", "app"]).unwrap();

    assert!(
        err.contains(&format!("{extension} was attached by descriptor"))
            && err.contains("attach it again"),
        "{err}"
    );
}

#[test]
fn a_user_gets_no_descriptor_for_an_extension_they_cannot_open() {
    let h = Harness::start().unwrap();
    let extension = base_and_extension_in_private_dir(&h);

    let out = h
        .berth_as(
            USER,
            USER,
            &[],
            &[
                "attach",
                "base",
                "app",
                "--extension",
                extension.to_str().unwrap(),
            ],
        )
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!("berth: cannot open image {}", extension.display()))
            && stderr
                .contains("permission denied (berth opens a local image with your own rights)"),
        "{stderr}"
    );
}

#[test]
fn a_socket_or_a_pipe_passed_as_an_extension_is_refused() {
    let h = Harness::start().unwrap();
    base_and_extension_in_private_dir(&h);
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let (pipe, _writer) = rustix::pipe::pipe().unwrap();

    let by_socket = attach_call(&h, "base", &["/srv/sock"], vec![socket.into()]).unwrap_err();
    let by_pipe = attach_call(&h, "base", &["/srv/pipe"], vec![pipe]).unwrap_err();

    for (error, kind) in [(by_socket, "socket"), (by_pipe, "pipe")] {
        let remote = berth_varlink::client::remote_error_of(&error).unwrap();
        assert_eq!(remote.error, "io.berth.Manager.InvalidImage");
        let reason = remote.parameters.unwrap()["reason"].to_string();
        assert!(
            reason.contains(&format!("is a {kind}, not a directory")),
            "{reason}"
        );
    }
    h.berth_ok(&["list"]).unwrap();
}
