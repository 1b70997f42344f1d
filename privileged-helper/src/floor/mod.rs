//! The helper's own floor policy: what it will do for berthd, whatever berthd asks.
//!
//! A compromised berthd must not get root through the helper, so every field of a request is
//! checked here against limits the helper holds itself (its config file, owned by root): UIDs
//! only from the dynamic range and never a user or group of the host database, image roots only
//! from allowed directories, bounded sizes, no NUL bytes, fds of the right type and owner.

mod extra_fds;
mod image;
mod program;
mod release;
mod sandbox;
mod var_state;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_protocol::helper::SpawnParams;
use rustix::fs::{FileType, Mode, OFlags};

pub use extra_fds::ExtraFds;

use crate::launch_spec::{JournalTarget, LaunchFds, LaunchSpec};
use crate::manager_access::{self, Credentials};
use crate::sandbox::credentials_dir::CredentialSources;

const MAX_ARGS: usize = 4096;
const MAX_ENV: usize = 4096;
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
use berth_protocol::helper::MAX_EXTENSIONS;

/// A refused request: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Refusal {
    pub field: String,
    pub reason: String,
}

fn refuse(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        field: field.to_string(),
        reason: reason.into(),
    }
}

use crate::config::FloorPolicy;

impl FloorPolicy {
    /// Checks a spawn request's fields and turns it into a [`LaunchSpec`].
    pub fn check_spawn(&self, params: SpawnParams) -> Result<LaunchSpec, Refusal> {
        check_unit_name(&params.unit)?;
        let mut total = program::check_program(&params.program)?;
        if let Some(journal) = &params.journal {
            program::check_journal(journal)?;
        }
        if params.environment.len() > MAX_ENV {
            return Err(refuse(
                "environment",
                format!("more than {MAX_ENV} entries"),
            ));
        }
        if params
            .environment
            .iter()
            .any(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return Err(refuse("environment", "every entry must be KEY=VALUE"));
        }
        if !params.working_directory.starts_with('/') {
            return Err(refuse("working_directory", "must be absolute"));
        }
        let fields = [
            ("environment", &params.environment),
            ("working_directory", &vec![params.working_directory.clone()]),
        ];
        for (field, strings) in fields {
            for s in strings {
                if s.contains('\0') {
                    return Err(refuse(field, "strings must not contain NUL bytes"));
                }
                total += s.len();
            }
        }
        if total > MAX_REQUEST_BYTES {
            return Err(refuse("program", "request too large"));
        }
        let sandbox = self.check_sandbox(params.sandbox)?;
        let mut environment = params.environment;
        sandbox::set_credentials_directory(&params.unit, &sandbox.credentials, &mut environment);
        Ok(LaunchSpec {
            unit: params.unit,
            program: params.program,
            journal: params.journal.map(|fields| JournalTarget {
                socket: self.journal_socket.clone(),
                fields,
            }),
            environment,
            working_directory: params.working_directory,
            sandbox,
            credential_sources: CredentialSources {
                roots: self.credential_roots.clone(),
                systemd_creds: self.systemd_creds.clone(),
            },
        })
    }

    /// Checks the fds that came with a spawn, in [`berth_protocol::helper::SPAWN_FDS`] order,
    /// against what `manager` (the caller's credentials) may do itself.
    pub fn check_spawn_fds(
        &self,
        fds: Vec<OwnedFd>,
        manager: &Credentials,
    ) -> Result<LaunchFds, Refusal> {
        let fixed = berth_protocol::helper::SPAWN_FDS.len();
        if fds.len() < fixed || fds.len() > fixed + MAX_EXTENSIONS {
            return Err(refuse(
                "fds",
                format!(
                    "expected {fixed} file descriptors and at most {MAX_EXTENSIONS} extension \
                     roots, got {}",
                    fds.len()
                ),
            ));
        }
        let mut fds = fds.into_iter();
        let (Some(root), Some(log), Some(control_dir)) = (fds.next(), fds.next(), fds.next())
        else {
            return Err(refuse("fds", format!("expected {fixed} file descriptors")));
        };
        let extensions: Vec<OwnedFd> = fds.collect();
        self.check_image_root("image root", &root)?;
        check_manager_may_enter("image root", &root, manager)?;
        // An extension is image content like the root: the same checks, each named by its
        // place in the list.
        for (index, extension) in extensions.iter().enumerate() {
            let field = format!("extension {}", index + 1);
            self.check_image_root(&field, extension)?;
            check_manager_may_enter(&field, extension, manager)?;
        }
        check_log_fd(&log, manager.uid)?;
        check_owned_dir("control directory", &control_dir, manager.uid)?;
        Ok(LaunchFds {
            root,
            log,
            control_dir,
            extensions,
            directories: Vec::new(),
            host_files: Default::default(),
            persistent_var: None,
        })
    }

    fn check_image_root(&self, field: &str, root: &OwnedFd) -> Result<(), Refusal> {
        let st = rustix::fs::fstat(root).map_err(|e| refuse(field, e.to_string()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(refuse(field, "not a directory"));
        }
        // A mount MountImage made (berthd passes its fsmount fd, O_PATH): the read permission
        // was proved by the backing file's fd, and it lies under no path to check.
        let helper_mount = self.check_helper_mount(root);
        if helper_mount.is_ok() {
            return Ok(());
        }
        // An O_PATH descriptor proves only that the sender could reach the directory; init,
        // still root, would then show the service a directory (say, one under a 0700 home)
        // that the sender could not read. A real open proves read permission.
        let flags = rustix::fs::fcntl_getfl(root).map_err(|e| refuse(field, e.to_string()))?;
        if flags.contains(OFlags::PATH) {
            return Err(refuse(field, "must be opened for reading, not O_PATH"));
        }
        let host = rustix::fs::stat("/").map_err(|e| refuse(field, e.to_string()))?;
        if (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino) {
            return Err(refuse(field, "the host root is not an image"));
        }
        self.check_under_image_roots(field, root)
            .map_err(|refusal| Refusal {
                reason: format!(
                    "{}, nor a mount berth-helper made ({})",
                    refusal.reason,
                    helper_mount.err().unwrap_or_default()
                ),
                ..refusal
            })
    }
}

/// The manager must be able to read and search the image root itself. The sandbox is built
/// from the root by root, which bypasses search permission: without this, a directory the
/// manager may list but not enter (a root-owned 0744 one) would show the service what lies
/// inside. Decision: checked with the manager's own credentials (see [`manager_access`]) rather
/// than limiting image roots to root-owned directories named in helper.toml (`image_roots` can
/// still do that as well), so images under any directory berth can read keep working.
fn check_manager_may_enter(
    field: &str,
    root: &OwnedFd,
    manager: &Credentials,
) -> Result<(), Refusal> {
    match manager_access::may_read_and_search(root, manager) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refuse(
            field,
            format!(
                "uid {} may not read and enter it (search permission), so neither may the sandbox",
                manager.uid
            ),
        )),
        Err(e) => Err(refuse(field, e.to_string())),
    }
}

/// Unit names as systemd allows them (see [`berth_protocol::names::check_unit_name`]), which
/// excludes anything that could be a path.
pub fn check_unit_name(unit: &str) -> Result<(), Refusal> {
    berth_protocol::names::check_unit_name(unit)
        .map_err(|e| refuse("unit", format!("invalid unit name: {e}")))
}

/// A log descriptor the manager hands over: a regular file it owns, opened for appending.
pub(crate) fn check_log_fd(log: &OwnedFd, manager_uid: u32) -> Result<(), Refusal> {
    let st = rustix::fs::fstat(log).map_err(|e| refuse("log", e.to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refuse("log", "not a regular file"));
    }
    if st.st_uid != manager_uid {
        return Err(refuse("log", "not owned by the manager"));
    }
    let flags = rustix::fs::fcntl_getfl(log).map_err(|e| refuse("log", e.to_string()))?;
    if !flags.contains(OFlags::APPEND) || (flags & OFlags::RWMODE) == OFlags::RDONLY {
        return Err(refuse("log", "must be opened for appending"));
    }
    Ok(())
}

fn check_owned_dir(field: &str, dir: &OwnedFd, owner: u32) -> Result<(), Refusal> {
    let st = rustix::fs::fstat(dir).map_err(|e| refuse(field, e.to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(refuse(field, "not a directory"));
    }
    if st.st_uid != owner {
        return Err(refuse(field, "not owned by the manager"));
    }
    let mode = Mode::from_raw_mode(st.st_mode);
    if mode.intersects(Mode::WGRP | Mode::WOTH) {
        return Err(refuse(field, "writable by group or others"));
    }
    Ok(())
}

fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd());
    std::fs::read_link(format!("/proc/self/fd/{raw}")).ok()
}

/// True when `id` is the third field (uid or gid) of a line of a passwd/group-format file.
fn id_in_database(path: &Path, id: u32) -> bool {
    const LIMIT: u64 = 16 * 1024 * 1024;
    let mut text = String::new();
    // Sized from the file's length: `take` hides it from read_to_string, which would otherwise
    // grow its buffer from 32 bytes, one read(2) per doubling, on every spawn.
    let read = File::open(path).and_then(|f| {
        let len = f.metadata().map_or(0, |m| m.len().min(LIMIT));
        text.reserve(usize::try_from(len).unwrap_or(0));
        f.take(LIMIT + 1).read_to_string(&mut text)
    });
    // Unreadable, or too large to read whole: assume the worst rather than hand out an id the
    // unread part may list.
    if read.is_err() || text.len() as u64 > LIMIT {
        return true;
    }
    text.lines()
        .any(|line| line.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_protocol::sandbox::SandboxSpec;
    use berth_protocol::service_program::ServiceProgram;

    fn spawn_params() -> SpawnParams {
        SpawnParams {
            unit: "hello.service".into(),
            program: ServiceProgram::simple(vec!["/bin/sh".into()]),
            environment: vec!["PATH=/bin".into()],
            working_directory: "/".into(),
            sandbox: SandboxSpec::baseline(61200, 61200, "hello"),
            journal: None,
        }
    }

    pub(super) fn policy_with_database(dir: &Path, passwd: &str) -> FloorPolicy {
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("group"), "root:x:0:\n").unwrap();
        FloorPolicy {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            ..FloorPolicy::default()
        }
    }

    #[test]
    fn valid_request_becomes_a_launch_spec() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "root:x:0:0::/root:/bin/sh\n");

        let spec = policy.check_spawn(spawn_params()).unwrap();

        let identity = &spec.sandbox.identity;
        assert_eq!((identity.uid, identity.gid), (61200, 61200));
    }

    #[test]
    fn uid_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "");

        let mut params = spawn_params();
        params.sandbox.identity.uid = 0;

        let refusal = policy.check_spawn(params).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.uid");
    }

    #[test]
    fn uid_of_a_host_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "svc:x:61200:61200::/:/bin/false\n");

        let refusal = policy.check_spawn(spawn_params()).unwrap_err();

        assert!(refusal.reason.contains("host database"), "{refusal}");
    }

    #[test]
    fn unit_name_with_a_slash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "");

        let refusal = policy.check_spawn(SpawnParams {
            unit: "../x.service".into(),
            ..spawn_params()
        });

        assert_eq!(refusal.unwrap_err().field, "unit");
    }

    #[test]
    fn relative_executable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "");

        let refusal = policy.check_spawn(SpawnParams {
            program: ServiceProgram::simple(vec!["sh".into()]),
            ..spawn_params()
        });

        assert_eq!(refusal.unwrap_err().field, "program.exec_start");
    }

    #[test]
    fn nul_byte_in_environment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "");

        let params = SpawnParams {
            environment: vec!["A=b\0c".into()],
            ..spawn_params()
        };

        assert!(policy.check_spawn(params).is_err());
    }

    #[test]
    fn host_root_is_not_an_image_root() {
        let root: OwnedFd = File::open("/").unwrap().into();

        let refusal = FloorPolicy::default()
            .check_image_root("image root", &root)
            .unwrap_err();

        assert!(refusal.reason.contains("host root"));
    }

    #[test]
    fn image_root_outside_the_allowed_roots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = FloorPolicy {
            image_roots: vec!["/var/lib/berth/images".into()],
            ..FloorPolicy::default()
        };
        let root: OwnedFd = File::open(dir.path()).unwrap().into();

        assert!(policy.check_image_root("image root", &root).is_err());
    }

    fn open(path: &Path, flags: OFlags) -> OwnedFd {
        rustix::fs::open(
            path,
            flags | OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o640),
        )
        .unwrap()
    }

    #[test]
    fn an_image_root_opened_for_reading_is_accepted() {
        let dir = tempfile::tempdir().unwrap();

        let root = open(dir.path(), OFlags::RDONLY | OFlags::DIRECTORY);

        assert!(
            FloorPolicy::default()
                .check_image_root("image root", &root)
                .is_ok()
        );
    }

    #[test]
    fn an_o_path_image_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let root = open(dir.path(), OFlags::PATH | OFlags::DIRECTORY);

        let refused = FloorPolicy::default()
            .check_image_root("image root", &root)
            .unwrap_err();
        assert!(refused.reason.contains("O_PATH"), "{refused}");
    }

    /// The three fixed fds of a spawn (root, log, control directory) in `dir`, plus
    /// `extensions`, with the caller's own credentials as the manager's.
    fn spawn_fds(dir: &Path, extensions: Vec<OwnedFd>) -> (Vec<OwnedFd>, Credentials) {
        std::fs::create_dir_all(dir.join("image")).unwrap();
        std::fs::create_dir_all(dir.join("control")).unwrap();
        let mut fds = vec![
            open(&dir.join("image"), OFlags::RDONLY | OFlags::DIRECTORY),
            open(
                &dir.join("log"),
                OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
            ),
            open(&dir.join("control"), OFlags::RDONLY | OFlags::DIRECTORY),
        ];
        fds.extend(extensions);
        let manager = Credentials {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            groups: Vec::new(),
        };
        (fds, manager)
    }

    #[test]
    fn extension_roots_after_the_fixed_fds_are_accepted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ext = tempfile::tempdir().unwrap();
        let extension = open(ext.path(), OFlags::RDONLY | OFlags::DIRECTORY);
        let ino = rustix::fs::fstat(&extension).unwrap().st_ino;
        let (fds, manager) = spawn_fds(dir.path(), vec![extension]);

        let checked = FloorPolicy::default()
            .check_spawn_fds(fds, &manager)
            .unwrap();

        assert_eq!(checked.extensions.len(), 1);
        assert_eq!(
            rustix::fs::fstat(&checked.extensions[0]).unwrap().st_ino,
            ino
        );
    }

    #[test]
    fn an_extension_that_is_not_a_directory_is_refused_by_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let ext = tempfile::tempdir().unwrap();
        let good = open(ext.path(), OFlags::RDONLY | OFlags::DIRECTORY);
        let file = open(&ext.path().join("f"), OFlags::RDONLY | OFlags::CREATE);
        let (fds, manager) = spawn_fds(dir.path(), vec![good, file]);

        let refused = FloorPolicy::default()
            .check_spawn_fds(fds, &manager)
            .unwrap_err();

        assert_eq!(
            (refused.field.as_str(), refused.reason.as_str()),
            ("extension 2", "not a directory")
        );
    }

    #[test]
    fn the_host_root_as_an_extension_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = open(Path::new("/"), OFlags::RDONLY | OFlags::DIRECTORY);
        let (fds, manager) = spawn_fds(dir.path(), vec![host]);

        let refused = FloorPolicy::default()
            .check_spawn_fds(fds, &manager)
            .unwrap_err();

        assert_eq!(refused.field, "extension 1");
    }

    #[test]
    fn more_extensions_than_the_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ext = tempfile::tempdir().unwrap();
        let extensions = (0..=MAX_EXTENSIONS)
            .map(|_| open(ext.path(), OFlags::RDONLY | OFlags::DIRECTORY))
            .collect();
        let (fds, manager) = spawn_fds(dir.path(), extensions);

        let refused = FloorPolicy::default()
            .check_spawn_fds(fds, &manager)
            .unwrap_err();

        assert_eq!(refused.field, "fds");
    }

    #[test]
    fn a_log_not_opened_for_appending_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let path = dir.path().join("log");

        let appending = open(&path, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE);
        let plain = open(&path, OFlags::WRONLY);

        assert!(check_log_fd(&appending, me).is_ok());
        assert!(check_log_fd(&plain, me).is_err());
        assert!(
            check_log_fd(&appending, me + 1).is_err(),
            "another owner was accepted"
        );
    }

    #[test]
    fn a_nul_byte_is_reported_against_its_own_field() {
        let mut params = spawn_params();
        params.environment = vec!["A=b\0c".into()];

        let refused = FloorPolicy::default().check_spawn(params).unwrap_err();

        assert_eq!(refused.field, "environment");
    }

    #[test]
    fn a_database_too_large_to_read_whole_counts_as_listing_every_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(16 * 1024 * 1024 + 10).unwrap();

        assert!(id_in_database(&path, 61200));
    }
}
