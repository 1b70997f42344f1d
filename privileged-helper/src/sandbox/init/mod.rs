//! PID 1 of the sandbox, which forks every command of the run.
//!
//! Init builds the sandbox as the spec says, in this order: namespaces (mount and cgroup, ipc,
//! uts and network as asked), new root, `lo` up, the synthesized user databases, resource
//! limits, the Landlock domain, the user namespace (PrivateUsers=), the bind(2) notification
//! filter when the spec grants privileged ports (`seccomp/bind_notify.rs`), then the service's
//! credentials (bounding set, ids, capabilities, session keyring, no_new_privs). Then it
//! reports ready (passing the filter's listener with the report) and becomes a command executor (`executor.rs`): on the supervisor's request
//! it forks each `Exec*=` command of the program, with the same credentials and the seccomp
//! filter installed right before the execve, reaps every child (commands, and daemons
//! reparented to it) and reports each exit with its raw wait status. It forwards the signals
//! sent to it to the process the supervisor named main. It catches no signal with a handler:
//! it keeps the forwarded ones and SIGCHLD blocked and reads them from a signalfd, which
//! cannot race with reaping; blocked signals are queued even for a pid-namespace init (which
//! otherwise drops signals it has no handler for).
//!
//! Init and the commands talk to the supervisor over one SOCK_SEQPACKET socket (CLOEXEC,
//! `channel.rs`): each command sends [`channel::MSG_PID`] with SCM_CREDENTIALS just before
//! execve, so the supervisor learns its host pid. When the supervisor asks it to end (the run
//! is over), or its channel closes while no main process runs, init exits and the kernel kills
//! whatever is left in the pid namespace.

pub(crate) mod channel;
mod executor;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use super::block_namespace::{self, BlockNamespaces};
use super::capabilities::CapabilityPlan;
use super::credentials::Credentials;
use super::credentials_dir::{self, LoadedCredentials};
use super::directories::{self, PreparedDirectory};
use super::syscalls::LinuxSyscalls;
use super::{
    Failure, cgroup, credentials, landlock, log_sockets, mounts, namespaces, notify_socket,
    process_name, rlimits, seccomp, sys, user_namespace,
};
use crate::launch_spec::{HostFileFds, LaunchSpec};
use channel::Report;

/// Descriptors init receives from the supervisor; all CLOEXEC.
pub(crate) struct InitFds {
    pub root: OwnedFd,
    /// Extension image roots, lowest layer first.
    pub extensions: Vec<OwnedFd>,
    /// The service directories kept on the host, ready to bind.
    pub directories: Vec<PreparedDirectory>,
    /// berthd's copies of the host's resolv.conf and hosts (`mounts/host_files.rs`).
    pub host_files: HostFileFds,
    /// The attachment's persistent /var directory, if the sandbox has one.
    pub persistent_var: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The channel to the supervisor (`channel.rs`).
    pub channel: OwnedFd,
    /// `cgroup.procs` of each of the service's cgroups (one per hierarchy), which init joins
    /// first (none without cgroups).
    pub cgroup_procs: Vec<OwnedFd>,
    /// The supervisor's `$NOTIFY_SOCKET`, which init binds in the sandbox (notify_socket.rs).
    pub notify: Option<OwnedFd>,
    /// The supervisor's log sockets, which init binds in the sandbox (log_sockets.rs).
    pub log_sockets: Option<log_sockets::LogSocketFds>,
    /// LoadCredential= and friends, read by the supervisor.
    pub credentials: LoadedCredentials,
    /// The user namespaces of the image's own users (block mode), made by the supervisor.
    pub block: Option<BlockNamespaces>,
}

/// Signals init forwards to main: all but SIGCHLD, the unblockable ones, the synchronous
/// fault signals and glibc's two reserved real-time signals.
pub(crate) fn forwarded_signals() -> impl Iterator<Item = i32> {
    (1..=sys::SIGNAL_MAX).filter(|sig| {
        !matches!(
            *sig,
            libc::SIGCHLD
                | libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGILL
                | libc::SIGTRAP
                | libc::SIGABRT
                | libc::SIGBUS
                | libc::SIGFPE
                | libc::SIGSEGV
                | libc::SIGSYS
                | 32
                | 33
        )
    })
}

/// The signals init waits for: the forwarded ones and SIGCHLD. The supervisor blocks them
/// before forking init so none is lost before init's loop runs.
pub(crate) fn init_signals() -> sys::SigSet {
    sys::SigSet::with(forwarded_signals().chain(std::iter::once(libc::SIGCHLD)))
}

/// Entry point of init, in a fresh child of the supervisor inside the new pid namespace.
pub(crate) fn run(spec: &LaunchSpec, fds: InitFds) -> ! {
    let InitFds {
        root,
        extensions,
        directories,
        host_files,
        persistent_var,
        stdout,
        stderr,
        channel,
        cgroup_procs,
        notify,
        log_sockets,
        credentials,
        block,
    } = fds;
    let mut keep = vec![
        root.as_raw_fd(),
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
        channel.as_raw_fd(),
    ];
    keep.extend(extensions.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(directories.iter().map(|d| d.fd.as_raw_fd()));
    keep.extend(cgroup_procs.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(notify.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(host_files.raw_fds());
    keep.extend(block.iter().flat_map(BlockNamespaces::raw_fds));
    keep.extend(persistent_var.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(log_sockets.iter().flat_map(log_sockets::LogSocketFds::raw));
    // SAFETY: fresh single-threaded child; the closed descriptors belong to supervisor objects
    // this process never uses.
    let closed = unsafe { sys::close_fds_except(&keep) };
    let result = closed
        .map_err(|e| Failure::setup("close inherited descriptors", e))
        .and_then(|()| join_cgroup(cgroup_procs))
        .and_then(|()| {
            setup(
                spec,
                (root, extensions, block),
                directories,
                (host_files, persistent_var),
                (notify, log_sockets),
                credentials,
            )
        });
    match result {
        Ok((template, bind_listener)) => executor::serve(
            spec,
            executor::Io {
                template,
                stdout,
                stderr,
                channel,
            },
            bind_listener,
        ),
        Err(failure) => {
            send_failure(&channel, &failure);
            sys::exit(127)
        }
    }
}

/// Moves init, and so everything the service forks, into its cgroup (before the cgroup
/// namespace is unshared in `setup`, so that the namespace's root is the service's cgroup).
fn join_cgroup(procs: Vec<OwnedFd>) -> Result<(), Failure> {
    for procs in procs {
        cgroup::join(procs).map_err(|e| Failure::setup("join the service's cgroup", e))?;
    }
    Ok(())
}

/// What every command shares, prepared once the sandbox is built.
struct Template {
    /// The service's environment (`MAINPID=` is added per command).
    env: Vec<String>,
    cwd: CString,
    cwd_str: String,
    /// UMask=.
    umask: u32,
    // Installed right before each exec.
    seccomp: Arc<seccomp::CompiledFilter>,
    // The persistent /var's directory, locked for as long as init lives (CLOEXEC: no
    // command keeps it).
    _persistent_var: Option<OwnedFd>,
}

fn cstring(s: &str, what: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| {
        Failure::setup(
            format!("{what} contains a NUL byte"),
            rustix::io::Errno::INVAL,
        )
    })
}

fn setup(
    spec: &LaunchSpec,
    (root, mut extensions, block): (OwnedFd, Vec<OwnedFd>, Option<BlockNamespaces>),
    directories: Vec<PreparedDirectory>,
    // The host-side trees bound or laid over the image, each only when the spec asks.
    (host_files, persistent_var): (HostFileFds, Option<OwnedFd>),
    (notify, log_sockets): (Option<OwnedFd>, Option<log_sockets::LogSocketFds>),
    credentials: LoadedCredentials,
) -> Result<(Template, Option<OwnedFd>), Failure> {
    // Forked without exec, init would show the helper's argv and environment in /proc/1 (the
    // command line is readable by the service).
    process_name::set(c"berth-init", &[b"berth-init"])
        .map_err(|e| Failure::setup("name the sandbox's init", e))?;
    // Modes of what we create are given explicitly.
    rustix::process::umask(rustix::fs::Mode::empty());
    let sandbox = &spec.sandbox;
    // The service directories' mount points lie in a layer over the image (which is
    // read-only).
    let (service_dirs, mount_points) =
        directories::mount_plan_binds(&LinuxSyscalls, &root, directories)?;
    extensions.extend(mount_points);
    // Block mode: the image's files keep their owners inside the block's namespace.
    let (root, extensions) = match &block {
        Some(ns) => {
            block_namespace::idmap_layers(&LinuxSyscalls, ns.mounts.as_fd(), &root, &extensions)?
        }
        None => (root, extensions),
    };
    let view = mounts::image_view(&LinuxSyscalls, &root, &extensions)?;
    let mut entries = mounts::clone_image(&LinuxSyscalls, view.as_ref().unwrap_or(&root))?;
    let persistent_var = persistent_var
        .map(|dir| {
            let owner = sandbox.identity.namespace_root();
            mounts::mount_persistent_var(&LinuxSyscalls, &mut entries, dir, owner)
        })
        .transpose()?;
    drop((root, extensions, view));
    // Host trees the plan binds are cloned here, in the host mount namespace.
    let mut plan = mounts::prepare(&LinuxSyscalls, &sandbox.mounts, service_dirs)?
        .owned_by(sandbox.identity.namespace_root());
    plan.host_files =
        mounts::host_files::prepare(&LinuxSyscalls, &sandbox.mounts.host_files, host_files)?;
    namespaces::unshare(&LinuxSyscalls, &sandbox.namespaces)?;
    mounts::build_root(&LinuxSyscalls, entries, plan)?;
    let identity = &sandbox.identity;
    directories::make_runtime(
        &LinuxSyscalls,
        &sandbox.directories,
        (identity.uid, identity.gid),
    )?;
    credentials_dir::install(
        &LinuxSyscalls,
        credentials,
        &spec.unit,
        (identity.uid, identity.gid),
    )?;
    namespaces::finish(&LinuxSyscalls, &sandbox.namespaces)?;
    notify_socket::bind(notify)?;
    log_sockets::bind(log_sockets, sandbox.mounts.private_devices);
    // In block mode the image's own databases name its users.
    if sandbox.identity.private_users && block.is_none() {
        user_namespace::bind_databases(&LinuxSyscalls, &sandbox.identity)?;
    }
    // Our stdio still points at the host's /dev/null; use the sandbox's.
    sys::stdio_to(c"/dev/null").map_err(|e| Failure::setup("open /dev/null", e))?;
    // Raising a hard limit needs CAP_SYS_RESOURCE of the host's user namespace: before ours.
    rlimits::apply(&LinuxSyscalls, &sandbox.rlimits)?;
    // While init still holds CAP_SYS_ADMIN, which Landlock takes instead of no_new_privs.
    landlock::restrict(&LinuxSyscalls, &sandbox.landlock)?;
    user_namespace::enter(&LinuxSyscalls, &sandbox.identity, block.as_ref())?;
    drop(block);
    // Privileged-port grants: after init's own binds, while it may still install a filter
    // without no_new_privs; every command inherits it.
    let bind_listener = if sandbox.privileged_ports.is_empty() {
        None
    } else {
        Some(
            seccomp::bind_notify::install()
                .map_err(|e| Failure::setup("install the bind(2) notification filter", e))?,
        )
    };
    credentials::drop_to(
        &LinuxSyscalls,
        &Credentials {
            identity: &sandbox.identity,
            capabilities: CapabilityPlan::of(&sandbox.capabilities)?,
            no_new_privileges: sandbox.no_new_privileges,
            keyring: sandbox.keyring,
        },
    )?;
    // Compiled by the helper when its floor checked the spawn; this copy of its cache has it.
    let seccomp = seccomp::cache::compiled(&spec.sandbox.syscalls).map_err(|e| {
        Failure::setup(
            format!("compile the seccomp filter ({e})"),
            rustix::io::Errno::INVAL,
        )
    })?;

    let template = Template {
        env: spec.environment.clone(),
        cwd: cstring(&spec.working_directory, "working directory")?,
        cwd_str: spec.working_directory.clone(),
        umask: sandbox.umask,
        seccomp,
        _persistent_var: persistent_var,
    };
    Ok((template, bind_listener))
}

/// Sends a setup failure to the supervisor; best effort (the supervisor also sees EOF).
pub(crate) fn send_failure(channel: &OwnedFd, failure: &Failure) {
    executor::send(channel, &Report::SetupFailed(failure.clone()));
}
