//! What the helper needs to launch one service, after it has validated the request.
//!
//! The varlink layer (`server.rs`) turns an `io.berth.Helper.Spawn` call into a [`LaunchSpec`]
//! only after every field has passed the floor policy (`floor.rs`); the sandbox code in
//! `sandbox/` trusts a `LaunchSpec` to be sane but still treats the image as hostile.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use berth_protocol::helper::JournalFields;
use berth_protocol::sandbox::SandboxSpec;
use berth_protocol::service_program::ServiceProgram;

use crate::sandbox::credentials_dir::CredentialSources;

/// A validated request to launch a service in a fresh sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Unit name, e.g. `hello.service`. Only `[A-Za-z0-9:_.@-]`, at most 255 bytes, no leading dot.
    pub unit: String,
    /// What the run executes (checked by `floor/program.rs`).
    pub program: ServiceProgram,
    /// Where and with which fields to forward the output to the host's journal, if berthd
    /// asked for it.
    pub journal: Option<JournalTarget>,
    /// Complete environment of the service, `KEY=VALUE`.
    pub environment: Vec<String>,
    /// Working directory inside the sandbox (absolute). Resolved inside the new root.
    pub working_directory: String,
    /// The sandbox, every part checked and clamped by the floor (`floor/sandbox/`); the
    /// identity in it is a dynamic uid and gid (never 0, never a host user).
    pub sandbox: SandboxSpec,
    /// Where the sandbox's credentials may be read from (helper.toml).
    pub credential_sources: CredentialSources,
}

/// The journal a service's output is forwarded to: the socket is the helper's to choose
/// (helper.toml `journal_socket`), the fields are berthd's (checked by the floor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalTarget {
    pub socket: PathBuf,
    pub fields: JournalFields,
}

/// File descriptors that come with a launch (passed by berthd over SCM_RIGHTS).
#[derive(Debug)]
pub struct LaunchFds {
    /// The image root directory (`O_PATH` or `O_RDONLY`, `O_DIRECTORY`).
    pub root: OwnedFd,
    /// Log file opened by berthd for appending; the supervisor writes one line per output line.
    pub log: OwnedFd,
    /// Directory owned by the manager uid where the supervisor binds its control socket
    /// `<unit>.sock`.
    pub control_dir: OwnedFd,
    /// Roots of extension images (checked like `root`), lowest layer first; the sandbox lays
    /// them over `root` read-only.
    pub extensions: Vec<OwnedFd>,
    /// The service directories kept on the host, created and re-owned to the service's uid
    /// (see `sandbox::directories`), in the order they are bound.
    pub directories: Vec<crate::sandbox::directories::PreparedDirectory>,
    /// berthd's copies of the host's resolv.conf and hosts, as the spec asks for them.
    pub host_files: HostFileFds,
    /// The attachment's persistent /var directory (`STATE/var/<image>/`), when the sandbox
    /// has one (see `sandbox::mounts::persistent_var`).
    pub persistent_var: Option<OwnedFd>,
}

/// berthd's copies of the host's `/etc/resolv.conf` and `/etc/hosts` (regular files it keeps
/// current in place), each present when the spec's `mounts.host_files` asks for it.
#[derive(Debug, Default)]
pub struct HostFileFds {
    pub resolv_conf: Option<OwnedFd>,
    pub hosts: Option<OwnedFd>,
}

impl HostFileFds {
    /// The same, every descriptor moved above stdio and close-on-exec.
    pub fn above_stdio(self) -> std::io::Result<HostFileFds> {
        let lift = |fd: Option<OwnedFd>| fd.map(crate::sandbox::sys::above_stdio).transpose();
        Ok(HostFileFds {
            resolv_conf: lift(self.resolv_conf)?,
            hosts: lift(self.hosts)?,
        })
    }

    pub fn raw_fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        use std::os::fd::AsRawFd;
        [&self.resolv_conf, &self.hosts]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd())
    }
}

/// What the caller learns once the service's main process has exec'd (or failed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    /// PID (host namespace) of the per-service supervisor.
    pub supervisor_pid: u32,
    /// PID (host namespace) of the service's main process.
    pub main_pid: u32,
}

impl LaunchSpec {
    /// The main command's argv (the first ExecStart=).
    pub fn main_argv(&self) -> &[String] {
        self.program
            .exec_start
            .first()
            .map_or(&[], |c| c.argv.as_slice())
    }
}
