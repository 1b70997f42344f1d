//! LoadCredential=, LoadCredentialEncrypted= and SetCredential= in real sandboxes: the spec
//! passes the helper's floor (which sets `$CREDENTIALS_DIRECTORY`), the supervisor reads the
//! files from a credential store of its config, and the service sees them on its private
//! tmpfs. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_helper::config::FloorPolicy;
use berth_helper::launch_spec::LaunchSpec;
use berth_protocol::helper::SpawnParams;
use berth_protocol::sandbox::Credential;
use fixture::*;
use tempfile::TempDir;

const SECRET: &str = "correct-horse-battery-staple";

/// A plain store and an encrypted one, root's, below a temporary directory.
struct Stores {
    _dir: TempDir,
    plain: PathBuf,
    sealed: PathBuf,
}

fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("credstore");
    let sealed = dir.path().join("credstore.encrypted");
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&sealed).unwrap();
    Stores {
        _dir: dir,
        plain,
        sealed,
    }
}

fn load(id: &str, path: &str) -> Credential {
    Credential {
        id: id.into(),
        path: Some(path.into()),
        data: None,
        encrypted: false,
    }
}

fn set(id: &str, value: &str) -> Credential {
    Credential {
        id: id.into(),
        path: None,
        data: Some(value.into()),
        encrypted: false,
    }
}

/// The spec of `script` with `credentials`, through the helper's floor with `stores` as its
/// only credential roots, as berth-helper's Spawn makes it.
fn spec(fx: &Fixture, stores: &Stores, credentials: Vec<Credential>, script: &str) -> LaunchSpec {
    let base = fx.spec(&["/bin/sh", "-c", script]);
    let mut sandbox = base.sandbox;
    sandbox.credentials = credentials;
    let policy = FloorPolicy {
        credential_roots: vec![stores.plain.clone(), stores.sealed.clone()],
        ..FloorPolicy::default()
    };
    policy
        .check_spawn(SpawnParams {
            unit: base.unit,
            program: base.program,
            environment: base.environment,
            working_directory: base.working_directory,
            sandbox,
            journal: None,
        })
        .unwrap()
}

/// Runs `spec` to its end; its stdout lines.
fn run(fx: &mut Fixture, spec: &LaunchSpec) -> Vec<String> {
    fx.try_launch_spec(spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    fx.wait_exit();
    fx.stdout_lines()
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
}

#[test]
fn a_loaded_and_a_set_credential_are_files_of_the_service() {
    require_root();
    let stores = stores();
    fs::write(stores.plain.join("db"), SECRET).unwrap();
    let mut fx = Fixture::new("creds-files.service");
    let spec = spec(
        &fx,
        &stores,
        vec![load("db", "db"), set("token", "t0k3n")],
        r#"d="$CREDENTIALS_DIRECTORY"; echo "db=$(cat $d/db)"; echo "token=$(cat $d/token)"
           ls -ln "$d" | while read mode links uid gid size rest; do echo "file=$mode $uid $gid $size"; done
           ls -lnd "$d" | while read mode links uid gid rest; do echo "dir=$mode $uid $gid"; done"#,
    );

    let lines = run(&mut fx, &spec);

    assert_eq!(line_with(&lines, "db="), SECRET);
    assert_eq!(line_with(&lines, "token="), "t0k3n");
    let files: Vec<&String> = lines.iter().filter(|l| l.starts_with("file=-")).collect();
    assert_eq!(
        files,
        [
            &format!("file=-r-------- {UID} {GID} {}", SECRET.len()),
            &format!("file=-r-------- {UID} {GID} 5"),
        ]
    );
    assert_eq!(line_with(&lines, "dir="), format!("dr-x------ {UID} {GID}"));
}

#[test]
fn the_credentials_directory_is_named_in_the_environment() {
    require_root();
    let stores = stores();
    let mut fx = Fixture::new("creds-env.service");
    let spec = spec(
        &fx,
        &stores,
        vec![set("token", "v")],
        r#"echo "dir=$CREDENTIALS_DIRECTORY""#,
    );

    let lines = run(&mut fx, &spec);

    assert_eq!(
        line_with(&lines, "dir="),
        "/run/credentials/creds-env.service"
    );
}

#[test]
fn the_credentials_are_a_read_only_tmpfs_without_suid_devices_or_exec() {
    require_root();
    let stores = stores();
    let mut fx = Fixture::new("creds-ro.service");
    let spec = spec(
        &fx,
        &stores,
        vec![set("token", "v")],
        r#"d="$CREDENTIALS_DIRECTORY"
           if touch "$d/new" 2>/dev/null; then echo create=yes; else echo create=no; fi
           while read id parent dev root point options rest; do
             [ "$point" = "$d" ] && echo "options=$options" && echo "fs=$rest"
           done < /proc/self/mountinfo"#,
    );

    let lines = run(&mut fx, &spec);

    assert_eq!(line_with(&lines, "create="), "no");
    let options: Vec<&str> = line_with(&lines, "options=").split(',').collect();
    for option in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(options.contains(&option), "{option} not in {options:?}");
    }
    assert!(line_with(&lines, "fs=").contains("- tmpfs "), "{lines:?}");
}

#[test]
fn without_credentials_there_is_no_directory_and_no_variable() {
    require_root();
    let stores = stores();
    let mut fx = Fixture::new("creds-none.service");
    let spec = spec(
        &fx,
        &stores,
        Vec::new(),
        r#"echo "var=${CREDENTIALS_DIRECTORY-unset}"; if [ -e /run/credentials ]; then echo dir=yes; else echo dir=no; fi"#,
    );

    let lines = run(&mut fx, &spec);

    assert_eq!(line_with(&lines, "var="), "unset");
    assert_eq!(line_with(&lines, "dir="), "no");
}

#[test]
fn a_credential_is_in_neither_the_environment_nor_the_log() {
    require_root();
    let stores = stores();
    fs::write(stores.plain.join("db"), SECRET).unwrap();
    let mut fx = Fixture::new("creds-hidden.service");
    let spec = spec(
        &fx,
        &stores,
        vec![load("db", "db"), set("token", "t0k3n-value")],
        "cat /proc/self/environ; echo; cat /proc/1/environ; echo; ls /run/credentials/*",
    );

    let lines = run(&mut fx, &spec);

    let log = fs::read_to_string(fx.log_path()).unwrap();
    assert!(lines.iter().any(|l| l.contains("CREDENTIALS_DIRECTORY=")));
    assert!(
        !log.contains(SECRET) && !log.contains("t0k3n-value"),
        "{log}"
    );
}

#[test]
fn the_credentials_are_gone_with_the_sandbox() {
    require_root();
    let stores = stores();
    fs::write(stores.plain.join("db"), SECRET).unwrap();
    let mut fx = Fixture::new("creds-gone.service");
    let spec = spec(&fx, &stores, vec![load("db", "db")], "echo up; sleep 1000");
    let launched = fx.try_launch_spec(&spec).unwrap();
    fx.wait_for_stdout("up");
    let point = "/run/credentials/creds-gone.service";
    let seen_while_running = mounted_anywhere(point);

    fx.request(&berth_protocol::supervisor::SupervisorRequest::Stop { timeout_ms: 0 });
    fx.wait_exit();

    assert!(
        seen_while_running.contains(&launched.main_pid),
        "{seen_while_running:?}"
    );
    assert_eq!(mounted_anywhere(point), Vec::<u32>::new());
    assert!(!Path::new(point).exists());
}

/// The processes whose mount namespace has a mount at `point`.
fn mounted_anywhere(point: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|info| info.lines().any(|l| l.split(' ').nth(4) == Some(point)))
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_symlink_in_the_store_fails_the_start_naming_it_and_never_its_target() {
    require_root();
    let stores = stores();
    let target = stores.plain.parent().unwrap().join("shadow");
    fs::write(&target, SECRET).unwrap();
    symlink(&target, stores.plain.join("db")).unwrap();
    let mut fx = Fixture::new("creds-symlink.service");
    let spec = spec(&fx, &stores, vec![load("db", "db")], "echo started");

    let err = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        err.contains("credential db") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn a_missing_credential_without_a_value_fails_the_start() {
    require_root();
    let stores = stores();
    let mut fx = Fixture::new("creds-missing.service");
    let spec = spec(&fx, &stores, vec![load("db", "db")], "echo started");

    let err = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        err.contains("credential db") && err.contains("no credential store"),
        "{err}"
    );
}

/// `plaintext` encrypted by the host's systemd-creds with its host key, for credential `name`.
fn encrypt(name: &str, plaintext: &str, out: &Path) {
    let input = out.with_extension("plain");
    fs::write(&input, plaintext).unwrap();
    let status = Command::new("systemd-creds")
        .args(["encrypt", "--with-key=host", &format!("--name={name}")])
        .arg(&input)
        .arg(out)
        .status()
        .unwrap();
    fs::remove_file(&input).unwrap();
    assert!(status.success(), "systemd-creds encrypt failed");
}

#[test]
fn an_encrypted_credential_is_decrypted_by_systemd_creds() {
    require_root();
    let stores = stores();
    encrypt("db", SECRET, &stores.sealed.join("db"));
    let mut fx = Fixture::new("creds-sealed.service");
    let mut credential = load("db", "db");
    credential.encrypted = true;
    let spec = spec(
        &fx,
        &stores,
        vec![credential],
        r#"echo "db=$(cat $CREDENTIALS_DIRECTORY/db)""#,
    );

    let lines = run(&mut fx, &spec);

    assert_eq!(line_with(&lines, "db="), SECRET);
}

#[test]
fn an_encrypted_credential_sealed_for_another_name_fails_the_start() {
    require_root();
    let stores = stores();
    encrypt("other", SECRET, &stores.sealed.join("db"));
    let mut fx = Fixture::new("creds-wrong-name.service");
    let mut credential = load("db", "db");
    credential.encrypted = true;
    let spec = spec(&fx, &stores, vec![credential], "echo started");

    let err = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        err.contains("credential db") && err.contains("systemd-creds cannot decrypt"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn a_read_only_run_still_gets_the_credentials_and_stays_read_only() {
    require_root();
    let stores = stores();
    let mut fx = Fixture::new("creds-ro-run.service");
    let mut spec = spec(
        &fx,
        &stores,
        vec![set("token", "t0k3n")],
        r#"echo "token=$(cat $CREDENTIALS_DIRECTORY/token)"
           if touch /run/x 2>/dev/null; then echo run=writable; else echo run=read-only; fi"#,
    );
    spec.sandbox.mounts.read_only_paths = vec![berth_protocol::sandbox::SandboxPath {
        path: "/run".into(),
        ignore_missing: false,
    }];

    let lines = run(&mut fx, &spec);

    assert_eq!(line_with(&lines, "token="), "t0k3n");
    assert_eq!(line_with(&lines, "run="), "read-only");
}
