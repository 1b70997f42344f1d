//! LoadCredential=, LoadCredentialEncrypted= and SetCredential= through berthd: the image's
//! unit names credentials of the host's credential store (`/run/credstore`, one of
//! helper.toml's default `credential_roots`), the service reads them at
//! `$CREDENTIALS_DIRECTORY`, and their values reach neither the image, berth's state, the
//! environment nor any log; the directory is gone at stop.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// A file in one of the host's credential stores, removed when dropped.
struct StoreFile {
    path: PathBuf,
    name: String,
}

impl StoreFile {
    /// A fresh name in `store` (`/run/credstore` or `/run/credstore.encrypted`), unique to
    /// this test process.
    fn new(store: &str) -> StoreFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        fs::create_dir_all(store).unwrap();
        fs::set_permissions(store, fs::Permissions::from_mode(0o700)).unwrap();
        let name = format!(
            "berth-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        StoreFile {
            path: Path::new(store).join(&name),
            name,
        }
    }

    fn plain(value: &str) -> StoreFile {
        let file = StoreFile::new("/run/credstore");
        fs::write(&file.path, value).unwrap();
        fs::set_permissions(&file.path, fs::Permissions::from_mode(0o600)).unwrap();
        file
    }

    /// `value` sealed by the host's systemd-creds (host key) for credential `id`.
    fn encrypted(id: &str, value: &str) -> StoreFile {
        let file = StoreFile::new("/run/credstore.encrypted");
        let plain = file.path.with_extension("plain");
        fs::write(&plain, value).unwrap();
        let status = Command::new("systemd-creds")
            .args(["encrypt", "--with-key=host", &format!("--name={id}")])
            .arg(&plain)
            .arg(&file.path)
            .status()
            .unwrap();
        fs::remove_file(&plain).unwrap();
        assert!(status.success(), "systemd-creds encrypt failed");
        file
    }
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Prints each credential with a `-` after every character (so that the value itself is
/// never in the log), the mode and owner of one, its uid and its environment, then stays up.
fn unit(directives: &str) -> String {
    format!(
        "[Service]\n{directives}\
         ExecStart=/bin/sh -c 'for f in ${{CREDENTIALS_DIRECTORY}}/*; do \
         echo \"cred $(basename $f)=$(sed \"s/./&-/g\" $f)\"; done; \
         echo \"stat=$(stat -c \"%%a %%u\" ${{CREDENTIALS_DIRECTORY}}/db) uid=$(id -u)\"; \
         env | sed \"s/^/env: /\"; echo ready; exec sleep 1000'\n"
    )
}

fn attached(h: &Harness, directives: &str) -> PathBuf {
    let image = ImageBuilder::new(&h.images_dir().join("vault"))
        .unit("vault.service", &unit(directives))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "vault"]).unwrap();
    image
}

fn started(h: &Harness) -> String {
    h.berth_ok(&["start", "vault"]).unwrap();
    let mut logs = String::new();
    h.wait_for(
        || {
            logs = h.berth_ok(&["logs", "vault", "-o", "cat"])?;
            Ok(logs.lines().any(|l| l == "ready"))
        },
        WAIT,
    )
    .unwrap();
    logs
}

/// `value` as the service prints it.
fn dashed(value: &str) -> String {
    value.chars().map(|c| format!("{c}-")).collect()
}

/// Every file below `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if kind.is_file()
            && fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

/// The processes whose mount namespace has a mount at `point`.
fn mounted_anywhere(point: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|info| info.lines().any(|l| l.split(' ').nth(4) == Some(point)))
        })
        .collect()
}

#[test]
fn a_stored_and_a_set_credential_are_files_of_the_service() {
    let secret = StoreFile::plain("s3cret-from-the-store");
    let h = Harness::start().unwrap();
    attached(
        &h,
        &format!(
            "LoadCredential=db:{}\nSetCredential=token:t0ken-from-the-unit\n",
            secret.name
        ),
    );

    let logs = started(&h);

    // The service's uid as it sees it (a dynamic uid, or its image's user in block mode).
    let uid = logs
        .lines()
        .find_map(|l| l.strip_prefix("stat=")?.split_once(" uid="))
        .map(|(_, uid)| uid.to_owned())
        .unwrap_or_else(|| panic!("no uid in {logs}"));
    assert!(
        logs.contains(&format!("cred db={}", dashed("s3cret-from-the-store"))),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("cred token={}", dashed("t0ken-from-the-unit"))),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("stat=400 {uid} uid={uid}")),
        "{logs}"
    );
    assert!(
        logs.contains("env: CREDENTIALS_DIRECTORY=/run/credentials/vault.service"),
        "{logs}"
    );
}

#[test]
fn a_credential_is_in_no_log_no_environment_and_nowhere_in_the_image_or_the_state() {
    let secret = StoreFile::plain("s3cret-never-logged");
    let h = Harness::start_with_args(&["--log-level", "debug"]).unwrap();
    let image = attached(
        &h,
        &format!(
            "LoadCredential=db:{}\nSetCredential=token:t0ken-never-logged\n",
            secret.name
        ),
    );
    let logs = started(&h);

    let status = h.berth_ok(&["status", "vault", "--json"]).unwrap();
    h.berth_ok(&["stop", "vault"]).unwrap();
    let daemons = h.stderr_log();
    let service_log = logs;

    for value in ["s3cret-never-logged", "t0ken-never-logged"] {
        assert!(!daemons.contains(value), "{value} in the daemons' log");
        assert!(!service_log.contains(value), "{value} in the service's log");
        assert!(!status.contains(value), "{value} in status");
    }
    // The unit holds the SetCredential= value itself; the stored one is nowhere.
    let stored = b"s3cret-never-logged".as_slice();
    assert_eq!(files_holding(&image, stored), Vec::<PathBuf>::new());
    assert_eq!(files_holding(&h.state_dir(), stored), Vec::<PathBuf>::new());
    assert_eq!(
        files_holding(&h.runtime_dir(), stored),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn the_credentials_are_gone_at_stop() {
    let secret = StoreFile::plain("v");
    let h = Harness::start().unwrap();
    attached(&h, &format!("LoadCredential=db:{}\n", secret.name));
    started(&h);
    let pid = h.status_json("vault").unwrap()["main_pid"]
        .as_u64()
        .unwrap() as u32;
    let point = "/run/credentials/vault.service";
    let while_running = mounted_anywhere(point);

    h.berth_ok(&["stop", "vault"]).unwrap();

    assert!(while_running.contains(&pid), "{while_running:?}");
    h.wait_for(|| Ok(mounted_anywhere(point).is_empty()), WAIT)
        .unwrap();
    assert!(!Path::new(point).exists());
}

#[test]
fn an_encrypted_credential_is_decrypted_with_the_host_s_systemd_creds() {
    let sealed = StoreFile::encrypted("db", "s3cret-sealed");
    let h = Harness::start().unwrap();
    attached(&h, &format!("LoadCredentialEncrypted=db:{}\n", sealed.name));

    let logs = started(&h);

    assert!(
        logs.contains(&format!("cred db={}", dashed("s3cret-sealed"))),
        "{logs}"
    );
}

#[test]
fn an_image_naming_a_host_path_is_warned_and_gets_no_credential() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("vault"))
        .unit(
            "vault.service",
            "[Service]\nLoadCredential=passwd:/etc/passwd\n\
             ExecStart=/bin/sh -c 'echo \"dir=${CREDENTIALS_DIRECTORY-none}\"; exec sleep 1000'\n",
        )
        .build()
        .unwrap();

    let out = h.berth(&["attach", "vault"]).unwrap();
    h.berth_ok(&["start", "vault"]).unwrap();

    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warnings}");
    assert!(
        warnings.contains("LoadCredential=passwd:/etc/passwd is ignored"),
        "{warnings}"
    );
    h.wait_for(
        || {
            Ok(h.berth_ok(&["logs", "vault", "-o", "cat"])?
                .contains("dir=none"))
        },
        WAIT,
    )
    .unwrap();
}

#[test]
fn a_missing_credential_fails_the_start_naming_it_and_berthd_keeps_serving() {
    let h = Harness::start().unwrap();
    attached(&h, "LoadCredential=db:berth-test-no-such-credential\n");

    let err = h.berth_err(&["start", "vault"]).unwrap();

    assert!(
        err.contains("credential db") && err.contains("no credential store"),
        "{err}"
    );
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn a_host_drop_in_gives_a_file_of_a_store_s_subdirectory_by_its_path() {
    let dir = StoreFile::new("/run/credstore");
    fs::create_dir(&dir.path).unwrap();
    fs::write(dir.path.join("db"), "s3cret-of-one-service").unwrap();
    let h = Harness::start().unwrap();
    attached(&h, "");
    let path = dir.path.join("db");

    h.berth_ok(&[
        "set-property",
        "vault",
        &format!("LoadCredential=db:{}", path.display()),
    ])
    .unwrap();
    let logs = started(&h);

    fs::remove_file(&path).unwrap();
    fs::remove_dir(&dir.path).unwrap();
    assert!(
        logs.contains(&format!("cred db={}", dashed("s3cret-of-one-service"))),
        "{logs}"
    );
}
