//! A service's credentials (LoadCredential=, LoadCredentialEncrypted=, SetCredential=;
//! systemd.exec(5), "Credentials"), as files at `$CREDENTIALS_DIRECTORY`.
//!
//! Two halves. [`load`] runs in the supervisor, still root in the host's namespaces, before
//! the sandbox exists: each file is opened below its credential root (helper.toml
//! `credential_roots`) with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, must be a
//! regular file and is read bounded by [`MAX_CREDENTIAL_BYTES`] (each and all together);
//! an encrypted one goes through the host's `systemd-creds decrypt` with a clean environment.
//! [`install`] runs in init, in the new root, before the service's credentials are dropped:
//! a fresh tmpfs (nosuid, nodev, noexec, sized to its contents) gets one file per credential,
//! mode 0400 and owned by the service, its root 0500 and the service's too; it is made
//! read-only and only then moved to `/run/credentials/UNIT`, so the service never sees it
//! half written. The sandbox's `/run` is its own, so the directory is gone with the sandbox.
//!
//! Nothing of a credential's value reaches the image, the environment or a log: errors name
//! the credential and its path, never its bytes, and every buffer that held them is zeroed
//! when dropped.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_protocol::sandbox::{Credential, MAX_CREDENTIAL_BYTES};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, MoveMountFlags};

use super::Failure;
use super::syscalls::MountSyscalls;

/// How long `systemd-creds decrypt` may take for one credential (the whole launch has 10 s).
const DECRYPT_TIMEOUT: Duration = Duration::from_secs(4);

/// Most bytes of `systemd-creds`' complaints kept for the error.
const MAX_STDERR_BYTES: usize = 2048;

/// Where the helper's config lets credentials come from (helper.toml `credential_roots` and
/// `systemd_creds`), carried to the supervisor with the launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    pub roots: Vec<PathBuf>,
    pub systemd_creds: PathBuf,
}

impl CredentialSources {
    /// The roots a bare name is looked up in, in order: for an encrypted credential the
    /// `*.encrypted` stores first, then the others; for a plain one only the others.
    fn search_order(&self, encrypted: bool) -> Vec<&Path> {
        let (sealed, plain): (Vec<&Path>, Vec<&Path>) = self
            .roots
            .iter()
            .map(PathBuf::as_path)
            .partition(|root| is_encrypted_store(root));
        if encrypted {
            sealed.into_iter().chain(plain).collect()
        } else {
            plain
        }
    }

    /// The root an absolute `path` lies under, and `path` relative to it.
    fn split<'a>(&self, path: &'a Path) -> Option<(&Path, &'a Path)> {
        self.roots.iter().find_map(|root| {
            path.strip_prefix(root)
                .ok()
                .filter(|rest| !rest.as_os_str().is_empty())
                .map(|rest| (root.as_path(), rest))
        })
    }
}

fn is_encrypted_store(root: &Path) -> bool {
    root.file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".encrypted"))
}

/// Bytes that are zeroed when dropped, and never shown by `Debug`.
pub struct Secret {
    /// Zero-filled to its full length up front, so that filling it never reallocates (which
    /// would leave a copy behind).
    buf: Vec<u8>,
    len: usize,
}

impl Secret {
    fn with_capacity(capacity: usize) -> Secret {
        Secret {
            buf: vec![0; capacity],
            len: 0,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Secret {
        let mut secret = Secret::with_capacity(bytes.len());
        secret.buf.copy_from_slice(bytes);
        secret.len = bytes.len();
        secret
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Reads `source` to its end into this buffer; `Ok(false)` if it holds more than fits.
    fn fill(&mut self, mut source: impl Read) -> io::Result<bool> {
        loop {
            if self.len == self.buf.len() {
                // Full: one more byte means too much.
                let mut probe = Secret::with_capacity(1);
                return match source.read(&mut probe.buf) {
                    Ok(0) => Ok(true),
                    Ok(_) => Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
            }
            match source.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(true),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for byte in self.buf.iter_mut() {
            // SAFETY: `byte` is a valid, aligned, exclusive reference; a volatile write is not
            // optimized away although the buffer is freed right after.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.len)
    }
}

/// One credential, ready to be written.
#[derive(Debug)]
pub struct LoadedCredential {
    pub id: String,
    pub data: Secret,
}

/// A service's credentials as [`load`] read them, in the spec's order.
#[derive(Debug, Default)]
pub struct LoadedCredentials(pub Vec<LoadedCredential>);

impl LoadedCredentials {
    fn total_bytes(&self) -> usize {
        self.0.iter().map(|c| c.data.len).sum()
    }
}

/// Why a credential could not be loaded. Never carries its value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "credential {id}: {name} is in no credential store this berth-helper reads ({searched})"
    )]
    NotFound {
        id: String,
        name: String,
        searched: String,
    },
    #[error("credential {id}: {path} is not under a credential root of helper.toml")]
    OutsideRoots { id: String, path: String },
    #[error("credential {id}: cannot open {path}: {source}")]
    Open {
        id: String,
        path: String,
        source: io::Error,
    },
    #[error(
        "credential {id}: {path} is a symbolic link or lies below one; credentials are never read through symlinks"
    )]
    Symlink { id: String, path: String },
    #[error("credential {id}: {path} is not a regular file")]
    NotRegular { id: String, path: String },
    #[error(
        "credential {id}: {path} is larger than the {max} bytes a service's credentials may hold in all"
    )]
    TooLarge {
        id: String,
        path: String,
        max: usize,
    },
    #[error("credential {id}: cannot read {path}: {source}")]
    Read {
        id: String,
        path: String,
        source: io::Error,
    },
    #[error(
        "credential {id}: LoadCredentialEncrypted= needs systemd-creds, which is not at {program}"
    )]
    DecryptUnavailable { id: String, program: String },
    #[error("credential {id}: systemd-creds cannot decrypt {path}: {reason}")]
    Decrypt {
        id: String,
        path: String,
        reason: String,
    },
    #[error("credential {id}: has neither a file nor a value")]
    Empty { id: String },
}

impl CredentialError {
    /// The launch failure this becomes (the supervisor reports it to berthd).
    pub(crate) fn into_failure(self) -> Failure {
        let errno = match &self {
            CredentialError::NotFound { .. } => Errno::NOENT,
            CredentialError::Open { source, .. } | CredentialError::Read { source, .. } => {
                Errno::from_io_error(source).unwrap_or(Errno::IO)
            }
            CredentialError::Symlink { .. } => Errno::LOOP,
            CredentialError::TooLarge { .. } => Errno::FBIG,
            CredentialError::DecryptUnavailable { .. } => Errno::NOENT,
            CredentialError::OutsideRoots { .. } => Errno::ACCESS,
            _ => Errno::INVAL,
        };
        Failure::setup(format!("load the credentials ({self})"), errno)
    }
}

/// Reads every credential of the spec (as root, in the host's namespaces). A LoadCredential=
/// whose file is in no store falls back to the SetCredential= value of the same name.
pub fn load(
    credentials: &[Credential],
    sources: &CredentialSources,
) -> Result<LoadedCredentials, CredentialError> {
    let mut loaded = LoadedCredentials::default();
    for credential in credentials {
        let budget = MAX_CREDENTIAL_BYTES.saturating_sub(loaded.total_bytes());
        let data = load_one(credential, sources, budget)?;
        loaded.0.push(LoadedCredential {
            id: credential.id.clone(),
            data,
        });
    }
    Ok(loaded)
}

fn load_one(
    credential: &Credential,
    sources: &CredentialSources,
    budget: usize,
) -> Result<Secret, CredentialError> {
    let id = &credential.id;
    let fallback = || match &credential.data {
        Some(value) if value.len() <= budget => Ok(Secret::from_bytes(value.as_bytes())),
        Some(_) => Err(CredentialError::TooLarge {
            id: id.clone(),
            path: "its SetCredential= value".into(),
            max: MAX_CREDENTIAL_BYTES,
        }),
        None => Err(CredentialError::Empty { id: id.clone() }),
    };
    let Some(path) = &credential.path else {
        return fallback();
    };
    let found = match open_source(id, path, credential.encrypted, sources)? {
        Some(found) => found,
        None if credential.data.is_some() => return fallback(),
        None => {
            let searched = sources
                .search_order(credential.encrypted)
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CredentialError::NotFound {
                id: id.clone(),
                name: path.clone(),
                searched,
            });
        }
    };
    let (file, shown, size) = found;
    if size > budget as u64 {
        return Err(CredentialError::TooLarge {
            id: id.clone(),
            path: shown,
            max: MAX_CREDENTIAL_BYTES,
        });
    }
    if credential.encrypted {
        return decrypt(&sources.systemd_creds, id, &shown, file, size as usize);
    }
    let mut secret = Secret::with_capacity(size as usize);
    match secret.fill(std::fs::File::from(file)) {
        Ok(true) => Ok(secret),
        // It grew since fstat: refuse rather than read an unbounded file.
        Ok(false) => Err(CredentialError::TooLarge {
            id: id.clone(),
            path: shown,
            max: MAX_CREDENTIAL_BYTES,
        }),
        Err(source) => Err(CredentialError::Read {
            id: id.clone(),
            path: shown,
            source,
        }),
    }
}

/// Opens a credential's file: an absolute path below its root, or a bare name in the first
/// store that has it. `None`: in no store (or the absolute path does not exist). Returns the
/// file, the path as errors show it and its size.
fn open_source(
    id: &str,
    path: &str,
    encrypted: bool,
    sources: &CredentialSources,
) -> Result<Option<(OwnedFd, String, u64)>, CredentialError> {
    let candidates: Vec<(&Path, &Path)> = if path.starts_with('/') {
        match sources.split(Path::new(path)) {
            Some(split) => vec![split],
            None => {
                return Err(CredentialError::OutsideRoots {
                    id: id.to_owned(),
                    path: path.to_owned(),
                });
            }
        }
    } else {
        sources
            .search_order(encrypted)
            .into_iter()
            .map(|root| (root, Path::new(path)))
            .collect()
    };
    for (root, relative) in candidates {
        let shown = root.join(relative).display().to_string();
        match open_beneath(root, relative) {
            Ok(file) => {
                let stat = rustix::fs::fstat(&file).map_err(|e| CredentialError::Open {
                    id: id.to_owned(),
                    path: shown.clone(),
                    source: e.into(),
                })?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                    return Err(CredentialError::NotRegular {
                        id: id.to_owned(),
                        path: shown,
                    });
                }
                return Ok(Some((file, shown, stat.st_size.max(0) as u64)));
            }
            Err(Errno::NOENT) => continue,
            // ELOOP: the file is a symlink; EXDEV: a component is one (or `..` leaves).
            Err(Errno::LOOP | Errno::XDEV) => {
                return Err(CredentialError::Symlink {
                    id: id.to_owned(),
                    path: shown,
                });
            }
            Err(e) => {
                return Err(CredentialError::Open {
                    id: id.to_owned(),
                    path: shown,
                    source: e.into(),
                });
            }
        }
    }
    Ok(None)
}

/// `relative` opened for reading below `root`, through no symlink; a FIFO does not block the
/// open (its type is refused after).
fn open_beneath(root: &Path, relative: &Path) -> Result<OwnedFd, Errno> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// `systemd-creds decrypt --name=ID - -` with the ciphertext on stdin and a clean
/// environment; the plaintext (never longer than the ciphertext, which is base64 with a
/// header) is read bounded, the child killed at [`DECRYPT_TIMEOUT`].
fn decrypt(
    program: &Path,
    id: &str,
    shown: &str,
    ciphertext: OwnedFd,
    size: usize,
) -> Result<Secret, CredentialError> {
    let failed = |reason: String| CredentialError::Decrypt {
        id: id.to_owned(),
        path: shown.to_owned(),
        reason,
    };
    let mut child = Command::new(program)
        .arg("decrypt")
        .arg(format!("--name={id}"))
        .arg("-")
        .arg("-")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(ciphertext))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                CredentialError::DecryptUnavailable {
                    id: id.to_owned(),
                    program: program.display().to_string(),
                }
            }
            _ => failed(format!("cannot run {}: {e}", program.display())),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed("no pipes to systemd-creds".into()));
    };
    let mut plaintext = Secret::with_capacity(size);
    let mut complaint = Vec::new();
    let outcome = collect(stdout, stderr, &mut plaintext, &mut complaint);
    let status = match outcome {
        Ok(()) => wait_until(&mut child, Instant::now() + DECRYPT_TIMEOUT),
        Err(e) => Err(e),
    };
    let status = match status {
        Ok(status) => status,
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(reason));
        }
    };
    if !status.success() {
        return Err(failed(describe_complaint(&complaint, status)));
    }
    Ok(plaintext)
}

/// Reads systemd-creds' stdout into `plaintext` and its stderr (bounded) until both close.
fn collect(
    stdout: std::process::ChildStdout,
    stderr: std::process::ChildStderr,
    plaintext: &mut Secret,
    complaint: &mut Vec<u8>,
) -> Result<(), String> {
    let deadline = Instant::now() + DECRYPT_TIMEOUT;
    let mut out = Some(stdout);
    let mut err = Some(stderr);
    while out.is_some() || err.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "it did not finish within {} s",
                DECRYPT_TIMEOUT.as_secs()
            ));
        }
        let mut fds = Vec::new();
        if let Some(o) = &out {
            fds.push(super::sys::pollfd(o.as_fd(), libc::POLLIN));
        }
        if let Some(e) = &err {
            fds.push(super::sys::pollfd(e.as_fd(), libc::POLLIN));
        }
        let ms = left.as_millis().clamp(1, 1000) as i32;
        if super::sys::poll(&mut fds, ms).map_err(|e| format!("poll: {e}"))? == 0 {
            continue;
        }
        let ready = |fd: libc::c_int| {
            fds.iter().any(|p| {
                p.fd == fd && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            })
        };
        if let Some(o) = &mut out
            && ready(o.as_raw_fd())
        {
            if plaintext.len == plaintext.buf.len() {
                return Err("its output is longer than its input".into());
            }
            match o.read(&mut plaintext.buf[plaintext.len..]) {
                Ok(0) => out = None,
                Ok(n) => plaintext.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading its output: {e}")),
            }
        }
        if let Some(e) = &mut err
            && ready(e.as_raw_fd())
        {
            let mut buf = [0u8; 512];
            match e.read(&mut buf) {
                Ok(0) => err = None,
                Ok(n) => {
                    let room = MAX_STDERR_BYTES.saturating_sub(complaint.len());
                    complaint.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading its errors: {e}")),
            }
        }
    }
    Ok(())
}

fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Result<std::process::ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                return Err(format!(
                    "it did not exit within {} s",
                    DECRYPT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}

/// systemd-creds' own words, printable and short, without its note about the host key's
/// media; or its exit status.
fn describe_complaint(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("not located on encrypted media"))
        .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        format!("it failed ({status})")
    } else {
        lines.join("; ")
    }
}

/// In init, in the new root (cwd `/`), still root in the host's user namespace: the private,
/// read-only tmpfs at `/run/credentials/UNIT` holding `credentials`, owned by `ids`. Nothing
/// to do without credentials.
pub(crate) fn install(
    os: &impl MountSyscalls,
    credentials: LoadedCredentials,
    unit: &str,
    ids: (u32, u32),
) -> Result<(), Failure> {
    if credentials.0.is_empty() {
        return Ok(());
    }
    let fail = |what: &str, e: Errno| Failure::setup(format!("{what} for the credentials"), e);
    let target = match mount_point(os, unit) {
        // ReadOnlyPaths= over /run (or /): the mount point is made with /run writable for that
        // moment, as the notify socket is; mounting on it needs no writable mount.
        Err(Errno::ROFS) => {
            let mut made = None;
            super::bound_socket::with_writable(c"/run", || {
                made = Some(mount_point(os, unit)?);
                Ok(())
            })
            .and_then(|()| made.ok_or(Errno::ROFS))
        }
        other => other,
    }
    .map_err(|e| fail("create /run/credentials/UNIT", e))?;
    let mount = credentials_fs(os, &credentials).map_err(|e| fail("mount a tmpfs", e))?;
    for credential in &credentials.0 {
        write_file(os, &mount, credential, ids)
            .map_err(|e| Failure::setup(format!("write credential {}", credential.id), e))?;
    }
    // The mount's descriptor is an O_PATH one, which fchown and fchmod refuse.
    let top = os
        .openat(
            mount.as_fd(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open the tmpfs", e))?;
    rustix::fs::fchown(
        &top,
        Some(rustix::fs::Uid::from_raw(ids.0)),
        Some(rustix::fs::Gid::from_raw(ids.1)),
    )
    .map_err(|e| fail("own the directory", e))?;
    rustix::fs::fchmod(&top, Mode::from_raw_mode(0o500))
        .map_err(|e| fail("set the directory's mode", e))?;
    drop(top);
    os.mount_setattr(
        Some(mount.as_fd()),
        c"",
        rustix::fs::AtFlags::EMPTY_PATH,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .map_err(|e| fail("make the tmpfs read-only", e))?;
    os.move_mount(
        mount.as_fd(),
        c"",
        target.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| fail("attach the tmpfs", e))
}

/// `/run/credentials/UNIT`, made in the sandbox's own `/run` through no symlink.
fn mount_point(os: &impl MountSyscalls, unit: &str) -> Result<OwnedFd, Errno> {
    let unit = CString::new(unit).map_err(|_| Errno::INVAL)?;
    let mut dir = os.openat(
        rustix::fs::CWD,
        c"run",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (name, mode) in [(c"credentials", 0o755), (unit.as_c_str(), 0o500)] {
        match os.mkdirat(dir.as_fd(), name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        dir = os.openat(
            dir.as_fd(),
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(dir)
}

/// A detached tmpfs just large enough for `credentials` (a page per file and the directory
/// besides their bytes), so the service cannot fill memory through it.
fn credentials_fs(
    os: &impl MountSyscalls,
    credentials: &LoadedCredentials,
) -> Result<OwnedFd, Errno> {
    let page = 4096;
    let files = credentials.0.len();
    let pages: usize = credentials
        .0
        .iter()
        .map(|c| c.data.len.div_ceil(page).max(1))
        .sum();
    let size = CString::new(((pages + 1) * page).to_string()).map_err(|_| Errno::INVAL)?;
    let inodes = CString::new((files + 2).to_string()).map_err(|_| Errno::INVAL)?;
    os.fs_mount(
        c"tmpfs",
        &[
            super::syscalls::FsParam::String(c"mode", c"0700"),
            super::syscalls::FsParam::String(c"size", &size),
            super::syscalls::FsParam::String(c"nr_inodes", &inodes),
        ],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

fn write_file(
    os: &impl MountSyscalls,
    dir: &OwnedFd,
    credential: &LoadedCredential,
    ids: (u32, u32),
) -> Result<(), Errno> {
    let name = CString::new(credential.id.as_str()).map_err(|_| Errno::INVAL)?;
    let file = os.openat(
        dir.as_fd(),
        &name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o400),
    )?;
    super::sys::write_all(&file, credential.data.as_bytes())
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    rustix::fs::fchown(
        &file,
        Some(rustix::fs::Uid::from_raw(ids.0)),
        Some(rustix::fs::Gid::from_raw(ids.1)),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn credential(id: &str, path: Option<&str>, data: Option<&str>) -> Credential {
        Credential {
            id: id.into(),
            path: path.map(str::to_owned),
            data: data.map(str::to_owned),
            encrypted: false,
        }
    }

    /// Two stores below a temporary directory: `store` and `store.encrypted`.
    fn stores() -> (tempfile::TempDir, CredentialSources) {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("store");
        let sealed = dir.path().join("store.encrypted");
        std::fs::create_dir(&plain).unwrap();
        std::fs::create_dir(&sealed).unwrap();
        let sources = CredentialSources {
            roots: vec![plain, sealed],
            systemd_creds: PathBuf::from("/usr/bin/systemd-creds"),
        };
        (dir, sources)
    }

    fn load_one_of(c: Credential, sources: &CredentialSources) -> Result<Vec<u8>, CredentialError> {
        let mut loaded = load(&[c], sources)?;
        Ok(loaded.0.remove(0).data.as_bytes().to_vec())
    }

    #[test]
    fn a_bare_name_is_read_from_the_first_store_that_has_it() {
        let (_dir, sources) = stores();
        std::fs::write(sources.roots[0].join("db"), b"hunter2").unwrap();

        let data = load_one_of(credential("db", Some("db"), None), &sources).unwrap();

        assert_eq!(data, b"hunter2");
    }

    #[test]
    fn a_plain_credential_is_not_looked_up_in_an_encrypted_store() {
        let (_dir, sources) = stores();
        std::fs::write(sources.roots[1].join("db"), b"ciphertext").unwrap();

        let err = load_one_of(credential("db", Some("db"), None), &sources).unwrap_err();

        assert!(matches!(err, CredentialError::NotFound { .. }), "{err}");
    }

    #[test]
    fn an_absolute_path_below_a_root_is_read() {
        let (_dir, sources) = stores();
        std::fs::create_dir(sources.roots[0].join("sub")).unwrap();
        let path = sources.roots[0].join("sub/key");
        std::fs::write(&path, b"k").unwrap();

        let data = load_one_of(
            credential("key", Some(path.to_str().unwrap()), None),
            &sources,
        )
        .unwrap();

        assert_eq!(data, b"k");
    }

    #[test]
    fn an_absolute_path_outside_every_root_is_refused() {
        let (dir, sources) = stores();
        let path = dir.path().join("elsewhere");
        std::fs::write(&path, b"k").unwrap();

        let err = load_one_of(
            credential("key", Some(path.to_str().unwrap()), None),
            &sources,
        )
        .unwrap_err();

        assert!(matches!(err, CredentialError::OutsideRoots { .. }), "{err}");
    }

    #[test]
    fn a_symlink_in_a_store_is_refused_not_followed() {
        let (dir, sources) = stores();
        let outside = dir.path().join("shadow");
        std::fs::write(&outside, b"root's secret").unwrap();
        symlink(&outside, sources.roots[0].join("db")).unwrap();

        let err = load_one_of(credential("db", Some("db"), None), &sources).unwrap_err();

        assert!(matches!(err, CredentialError::Symlink { .. }), "{err}");
    }

    #[test]
    fn a_symlinked_directory_below_a_root_is_refused() {
        let (dir, sources) = stores();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("key"), b"x").unwrap();
        symlink(&outside, sources.roots[0].join("sub")).unwrap();
        let path = sources.roots[0].join("sub/key");

        let err = load_one_of(
            credential("key", Some(path.to_str().unwrap()), None),
            &sources,
        )
        .unwrap_err();

        assert!(matches!(err, CredentialError::Symlink { .. }), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (_dir, sources) = stores();
        let fifo = sources.roots[0].join("db");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        let err = load_one_of(credential("db", Some("db"), None), &sources).unwrap_err();

        assert!(matches!(err, CredentialError::NotRegular { .. }), "{err}");
    }

    #[test]
    fn a_directory_is_refused() {
        let (_dir, sources) = stores();
        std::fs::create_dir(sources.roots[0].join("db")).unwrap();

        let err = load_one_of(credential("db", Some("db"), None), &sources).unwrap_err();

        assert!(matches!(err, CredentialError::NotRegular { .. }), "{err}");
    }

    #[test]
    fn credentials_larger_than_the_bound_in_all_are_refused() {
        let (_dir, sources) = stores();
        let half = vec![b'x'; MAX_CREDENTIAL_BYTES / 2 + 1];
        std::fs::write(sources.roots[0].join("a"), &half).unwrap();
        std::fs::write(sources.roots[0].join("b"), &half).unwrap();

        let err = load(
            &[
                credential("a", Some("a"), None),
                credential("b", Some("b"), None),
            ],
            &sources,
        )
        .unwrap_err();

        assert!(
            matches!(err, CredentialError::TooLarge { ref id, .. } if id == "b"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_falls_back_to_the_set_value() {
        let (_dir, sources) = stores();

        let data = load_one_of(credential("db", Some("db"), Some("fallback")), &sources).unwrap();

        assert_eq!(data, b"fallback");
    }

    #[test]
    fn a_file_wins_over_the_set_value() {
        let (_dir, sources) = stores();
        std::fs::write(sources.roots[0].join("db"), b"from file").unwrap();

        let data = load_one_of(credential("db", Some("db"), Some("fallback")), &sources).unwrap();

        assert_eq!(data, b"from file");
    }

    #[test]
    fn a_missing_file_without_a_value_names_the_stores_searched() {
        let (_dir, sources) = stores();

        let err = load_one_of(credential("db", Some("db"), None), &sources).unwrap_err();

        let text = err.to_string();
        assert!(
            text.contains("credential db") && text.contains("/store"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_store_directory_is_skipped_like_a_missing_one() {
        let (dir, mut sources) = stores();
        sources.roots.insert(0, dir.path().join("absent"));
        std::fs::write(sources.roots[1].join("db"), b"v").unwrap();

        let data = load_one_of(credential("db", Some("db"), None), &sources).unwrap();

        assert_eq!(data, b"v");
    }

    #[test]
    fn an_encrypted_credential_without_systemd_creds_is_a_clear_error() {
        let (dir, mut sources) = stores();
        sources.systemd_creds = dir.path().join("no-systemd-creds");
        std::fs::write(sources.roots[1].join("db"), b"ciphertext").unwrap();
        let mut c = credential("db", Some("db"), None);
        c.encrypted = true;

        let err = load_one_of(c, &sources).unwrap_err();

        assert!(
            matches!(err, CredentialError::DecryptUnavailable { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_failing_decrypter_s_complaint_is_the_error_and_never_its_output() {
        let (dir, mut sources) = stores();
        let fake = dir.path().join("systemd-creds");
        // Prints what would be plaintext, then fails as systemd-creds does on a wrong name.
        std::fs::write(
            &fake,
            "#!/bin/sh\necho partial-plaintext\necho 'Embedded credential name mismatch' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        sources.systemd_creds = fake;
        std::fs::write(sources.roots[1].join("db"), b"ciphertext-long-enough").unwrap();
        let mut c = credential("db", Some("db"), None);
        c.encrypted = true;

        let err = load_one_of(c, &sources).unwrap_err().to_string();

        assert!(err.contains("Embedded credential name mismatch"), "{err}");
        assert!(!err.contains("partial-plaintext"), "{err}");
    }

    #[test]
    fn a_secret_s_debug_shows_only_its_length() {
        let secret = Secret::from_bytes(b"hunter2");

        assert_eq!(format!("{secret:?}"), "<7 secret bytes>");
    }
}
