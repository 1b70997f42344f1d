//! The mount plan as data: what a service's [`MountPlan`] (and the service directories bound
//! by descriptor) asks of the file system, as ordered steps, each one change at one path of
//! the new root. Building it makes no syscall, so it is tested as data; `apply.rs` carries it
//! out.
//!
//! systemd's semantics (`namespace.c`): steps run parents first; at the same path the
//! stronger one wins (inaccessible, then a bind, then the private `/var/tmp`, then read-only,
//! then read-write, then a tmpfs); nothing under an inaccessible path is mounted. Two of
//! berth's decisions shape it too: the image is always read-only, so ProtectSystem= holds
//! at every level already and ReadWritePaths= only keeps writable what is (a tmpfs, a
//! writable bind) under a ReadOnlyPaths= or ProtectHome=read-only parent; and berth mounts
//! no sysfs or cgroupfs (`/sys` is an empty read-only directory), so ProtectControlGroups=
//! and the `/sys` half of ProtectKernelTunables= hold trivially.

use std::os::fd::OwnedFd;

use berth_protocol::sandbox::{MountPlan, ProcSubset, ProtectHome, ProtectProc, ProtectSystem};

/// An already-open host directory (or file) bound at `target` in the sandbox: how the service
/// directories (StateDirectory= and its kind) reach it. `target` is absolute; it is created
/// if missing (where the sandbox is writable: the image is not).
#[derive(Debug)]
pub(crate) struct FdBind {
    pub source: OwnedFd,
    pub target: String,
    pub read_only: bool,
}

/// Size and inode limits of a tmpfs the plan mounts, as the private `/tmp` has them.
const TMPFS_LIMITS: &str = "nr_inodes=400k";
/// `size=` of a TemporaryFileSystem= that gave none (the floor gives one, this is the fallback).
const DEFAULT_TMPFS_SIZE: &str = "10%";

/// ProtectHome='s three directories.
const HOME_PATHS: [&str; 3] = ["/home", "/root", "/run/user"];
/// ProtectKernelTunables='s `/proc` entries not already read-only or masked in every sandbox
/// (see `proc.rs`), and `/proc/kallsyms`, which it makes inaccessible.
const TUNABLES_READ_ONLY: [&str; 2] = ["/proc/apm", "/proc/mtrr"];
const TUNABLES_INACCESSIBLE: [&str; 1] = ["/proc/kallsyms"];
/// ProtectKernelModules= and ProtectKernelLogs=.
const MODULES_INACCESSIBLE: [&str; 2] = ["/usr/lib/modules", "/lib/modules"];
const LOGS_INACCESSIBLE: [&str; 2] = ["/proc/kmsg", "/dev/kmsg"];

/// What a step does when its path does not exist in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    Fail,
    Skip,
    /// Create it (a directory, or an empty file for a bind of a non-directory), with its
    /// missing parents.
    Create,
}

/// Where a bind's tree comes from; opened and cloned in the host mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// BindPaths=: a host path, resolved without following symlinks.
    Host {
        path: String,
        recursive: bool,
        ignore_missing: bool,
    },
    /// An [`FdBind`], by its index.
    Fd(usize),
    /// DeviceAllow=: a node of the host's `/dev`, recreated with at most this access.
    Device {
        path: String,
        read: bool,
        write: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// The tree of `sources[source]` (nosuid, nodev).
    Bind { source: usize, read_only: bool },
    /// A fresh tmpfs (nosuid, nodev) with these options.
    Tmpfs { options: String, read_only: bool },
    /// An empty, mode 0000, read-only node of the path's type over it.
    Inaccessible,
    /// The path and everything under it read-only.
    ReadOnly,
    /// The path as it was before a read-only parent step, put back over it.
    ReadWrite,
}

impl Action {
    /// systemd's precedence at one path: lower wins.
    fn rank(&self) -> u8 {
        match self {
            Action::Inaccessible => 0,
            Action::Bind { .. } => 1,
            Action::ReadOnly => 3,
            Action::ReadWrite => 4,
            Action::Tmpfs { .. } => 5,
        }
    }

    fn makes_read_only(&mut self) {
        match self {
            Action::Bind { read_only, .. } | Action::Tmpfs { read_only, .. } => *read_only = true,
            Action::Inaccessible | Action::ReadOnly | Action::ReadWrite => {}
        }
    }
}

/// Options of the private `/var/tmp`, as the private `/tmp`'s.
const PRIVATE_TMP: &str = "mode=1777,size=10%";
/// The private `/var/tmp` ranks between a bind and a read-only path, as in systemd.
const PRIVATE_TMP_RANK: u8 = 2;

/// One change at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    /// Absolute, in the sandbox.
    pub path: String,
    pub action: Action,
    pub missing: Missing,
    /// The directive that asked for it, for errors: `ReadOnlyPaths=/srv`.
    pub directive: String,
    /// Precedence at its path (see [`Action::rank`]).
    rank: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub steps: Vec<Step>,
    pub sources: Vec<Source>,
    /// Options of the sandbox's `/proc` (ProtectProc=, ProcSubset=), empty for none.
    pub proc_options: String,
}

/// Number of components of a normalized absolute path.
fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// `path` lies strictly under `parent`.
pub(super) fn is_under(path: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    path.len() > parent.len() && path.starts_with(parent) && path[parent.len()..].starts_with('/')
}

fn step(path: &str, action: Action, missing: Missing, directive: impl Into<String>) -> Step {
    Step {
        path: path.to_owned(),
        rank: action.rank(),
        action,
        missing,
        directive: directive.into(),
    }
}

fn skip_missing(ignore: bool) -> Missing {
    if ignore { Missing::Skip } else { Missing::Fail }
}

impl Plan {
    /// The plan for `spec`, with `fd_binds` (their targets and modes; the descriptors stay
    /// with the caller) bound too.
    pub(super) fn new(spec: &MountPlan, fd_binds: &[(String, bool)]) -> Plan {
        let mut steps = Vec::new();
        let mut sources = Vec::new();
        match spec.protect_home {
            ProtectHome::No => {}
            ProtectHome::Yes => steps.extend(
                HOME_PATHS.map(|p| step(p, Action::Inaccessible, Missing::Skip, "ProtectHome=yes")),
            ),
            ProtectHome::ReadOnly => steps.extend(
                HOME_PATHS
                    .map(|p| step(p, Action::ReadOnly, Missing::Skip, "ProtectHome=read-only")),
            ),
            ProtectHome::Tmpfs => steps.extend(HOME_PATHS.map(|p| {
                let tmpfs = Action::Tmpfs {
                    options: format!("mode=0755,size=4m,{TMPFS_LIMITS}"),
                    read_only: true,
                };
                step(p, tmpfs, Missing::Skip, "ProtectHome=tmpfs")
            })),
        }
        if spec.private_tmp {
            // /tmp is always private (root.rs); the image must have /var/tmp to get one.
            let tmpfs = Action::Tmpfs {
                options: format!("{PRIVATE_TMP},{TMPFS_LIMITS}"),
                read_only: false,
            };
            let mut var_tmp = step("/var/tmp", tmpfs, Missing::Skip, "PrivateTmp=yes");
            var_tmp.rank = PRIVATE_TMP_RANK;
            steps.push(var_tmp);
        }
        if spec.persistent_var && spec.protect_system == ProtectSystem::Strict {
            // The one writable part of the system a unit may tighten: the persistent /var,
            // read-only but for ReadWritePaths= (and the service directories) below it.
            steps.push(step(
                "/var",
                Action::ReadOnly,
                Missing::Skip,
                "ProtectSystem=strict",
            ));
        }
        let flag_lists: [(bool, &[&str], Action, &str); 4] = [
            (
                spec.protect_kernel_tunables,
                &TUNABLES_READ_ONLY,
                Action::ReadOnly,
                "ProtectKernelTunables=yes",
            ),
            (
                spec.protect_kernel_tunables,
                &TUNABLES_INACCESSIBLE,
                Action::Inaccessible,
                "ProtectKernelTunables=yes",
            ),
            (
                spec.protect_kernel_modules,
                &MODULES_INACCESSIBLE,
                Action::Inaccessible,
                "ProtectKernelModules=yes",
            ),
            (
                spec.protect_kernel_logs,
                &LOGS_INACCESSIBLE,
                Action::Inaccessible,
                "ProtectKernelLogs=yes",
            ),
        ];
        for (on, paths, action, directive) in flag_lists {
            if on {
                steps.extend(
                    paths
                        .iter()
                        .map(|p| step(p, action.clone(), Missing::Skip, directive)),
                );
            }
        }
        let path_lists = [
            (&spec.read_only_paths, Action::ReadOnly, "ReadOnlyPaths"),
            (&spec.read_write_paths, Action::ReadWrite, "ReadWritePaths"),
            (
                &spec.inaccessible_paths,
                Action::Inaccessible,
                "InaccessiblePaths",
            ),
        ];
        for (list, action, directive) in path_lists {
            for entry in list {
                let missing = skip_missing(entry.ignore_missing);
                let directive = format!("{directive}={}", entry.path);
                steps.push(step(&entry.path, action.clone(), missing, directive));
            }
        }
        for bind in &spec.bind_paths {
            sources.push(Source::Host {
                path: bind.source.clone(),
                recursive: bind.recursive,
                ignore_missing: bind.ignore_missing,
            });
            let name = if bind.read_only {
                "BindReadOnlyPaths"
            } else {
                "BindPaths"
            };
            let action = Action::Bind {
                source: sources.len() - 1,
                read_only: bind.read_only,
            };
            let directive = format!("{name}={}:{}", bind.source, bind.target);
            steps.push(step(&bind.target, action, Missing::Create, directive));
        }
        for (index, (target, read_only)) in fd_binds.iter().enumerate() {
            sources.push(Source::Fd(index));
            let action = Action::Bind {
                source: sources.len() - 1,
                read_only: *read_only,
            };
            let directive = format!("the service directory at {target}");
            steps.push(step(target, action, Missing::Create, directive));
        }
        for fs in &spec.temporary_filesystems {
            let size = if fs.size == 0 {
                DEFAULT_TMPFS_SIZE.to_owned()
            } else {
                fs.size.to_string()
            };
            let action = Action::Tmpfs {
                options: format!("mode={:04o},size={size},{TMPFS_LIMITS}", fs.mode),
                read_only: fs.read_only,
            };
            let directive = format!("TemporaryFileSystem={}", fs.path);
            steps.push(step(&fs.path, action, Missing::Create, directive));
        }
        for device in &spec.device_allow {
            sources.push(Source::Device {
                path: device.path.clone(),
                read: device.read,
                write: device.write,
            });
            let action = Action::Bind {
                source: sources.len() - 1,
                read_only: true,
            };
            let directive = format!("DeviceAllow={}", device.path);
            steps.push(step(&device.path, action, Missing::Create, directive));
        }
        Plan {
            steps: order(steps),
            sources,
            proc_options: proc_options(spec.protect_proc, spec.proc_subset),
        }
    }
}

/// Parents first, then systemd's precedence; one step per path (a read-only loser makes the
/// winner read-only, as systemd does); nothing under an inaccessible path; no read-write step
/// without a read-only step above it to undo.
fn order(mut steps: Vec<Step>) -> Vec<Step> {
    steps.sort_by(|a, b| {
        depth(&a.path)
            .cmp(&depth(&b.path))
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.rank.cmp(&b.rank))
    });
    let mut kept: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let Some(previous) = kept.last_mut()
            && previous.path == step.path
        {
            let read_only = match &step.action {
                Action::ReadOnly => true,
                Action::Bind { read_only, .. } | Action::Tmpfs { read_only, .. } => *read_only,
                Action::Inaccessible | Action::ReadWrite => false,
            };
            if read_only {
                previous.action.makes_read_only();
            }
            continue;
        }
        kept.push(step);
    }
    let hidden: Vec<String> = kept
        .iter()
        .filter(|s| s.action == Action::Inaccessible)
        .map(|s| s.path.clone())
        .collect();
    kept.retain(|s| !hidden.iter().any(|h| is_under(&s.path, h)));
    let read_only: Vec<String> = kept
        .iter()
        .filter(|s| s.action == Action::ReadOnly)
        .map(|s| s.path.clone())
        .collect();
    kept.retain(|s| {
        s.action != Action::ReadWrite || read_only.iter().any(|r| is_under(&s.path, r))
    });
    kept
}

/// ProtectProc= as `hidepid=`, ProcSubset= as `subset=`.
fn proc_options(protect: ProtectProc, subset: ProcSubset) -> String {
    let hidepid = match protect {
        ProtectProc::Default => None,
        ProtectProc::Invisible => Some("hidepid=invisible"),
        ProtectProc::Ptraceable => Some("hidepid=ptraceable"),
        ProtectProc::Noaccess => Some("hidepid=noaccess"),
    };
    let subset = match subset {
        ProcSubset::All => None,
        ProcSubset::Pid => Some("subset=pid"),
    };
    [hidepid, subset]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::{
        BindPath, DeviceAccess, SandboxPath, SandboxSpec, TemporaryFileSystem,
    };

    use super::*;

    fn baseline() -> MountPlan {
        SandboxSpec::baseline(61200, 61200, "probe").mounts
    }

    fn path(p: &str) -> SandboxPath {
        SandboxPath {
            path: p.into(),
            ignore_missing: false,
        }
    }

    fn steps_of(plan: &Plan) -> Vec<(&str, &Action)> {
        plan.steps
            .iter()
            .map(|s| (s.path.as_str(), &s.action))
            .collect()
    }

    #[test]
    fn the_baseline_asks_a_private_var_tmp_and_the_tunables_beyond_every_sandbox_s() {
        let plan = Plan::new(&baseline(), &[]);

        let paths: Vec<&str> = plan.steps.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/proc/apm", "/proc/kallsyms", "/proc/mtrr", "/var/tmp"]
        );
        assert_eq!(plan.proc_options, "");
    }

    #[test]
    fn without_private_tmp_no_var_tmp_is_mounted() {
        let mut spec = baseline();
        spec.private_tmp = false;

        let plan = Plan::new(&spec, &[]);

        assert!(!plan.steps.iter().any(|s| s.path == "/var/tmp"));
    }

    #[test]
    fn protect_home_yes_hides_the_three_home_directories_if_present() {
        let mut spec = baseline();
        spec.protect_home = ProtectHome::Yes;

        let plan = Plan::new(&spec, &[]);

        for home in HOME_PATHS {
            let step = plan.steps.iter().find(|s| s.path == home).unwrap();
            assert_eq!(
                (&step.action, step.missing),
                (&Action::Inaccessible, Missing::Skip)
            );
        }
    }

    #[test]
    fn protect_home_read_only_and_tmpfs() {
        let mut spec = baseline();
        spec.protect_home = ProtectHome::ReadOnly;
        let read_only = Plan::new(&spec, &[]);
        spec.protect_home = ProtectHome::Tmpfs;
        let tmpfs = Plan::new(&spec, &[]);

        let find = |plan: &Plan| {
            plan.steps
                .iter()
                .find(|s| s.path == "/root")
                .unwrap()
                .action
                .clone()
        };
        assert_eq!(find(&read_only), Action::ReadOnly);
        assert!(matches!(
            find(&tmpfs),
            Action::Tmpfs {
                read_only: true,
                ..
            }
        ));
    }

    #[test]
    fn parents_come_before_children_whatever_the_order_asked() {
        let mut spec = baseline();
        spec.read_only_paths = vec![path("/srv/a/b"), path("/srv")];
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/srv/a".into(),
            read_only: false,
            mode: 0o755,
            size: 0,
        }];

        let plan = Plan::new(&spec, &[]);

        let srv: Vec<&str> = plan
            .steps
            .iter()
            .map(|s| s.path.as_str())
            .filter(|p| p.starts_with("/srv"))
            .collect();
        assert_eq!(srv, ["/srv", "/srv/a", "/srv/a/b"]);
    }

    #[test]
    fn inaccessible_wins_at_the_same_path_and_hides_what_is_below() {
        let mut spec = baseline();
        spec.read_only_paths = vec![path("/srv"), path("/srv/x")];
        spec.inaccessible_paths = vec![path("/srv")];

        let plan = Plan::new(&spec, &[]);

        let srv: Vec<_> = steps_of(&plan)
            .into_iter()
            .filter(|(p, _)| p.starts_with("/srv"))
            .collect();
        assert_eq!(srv, [("/srv", &Action::Inaccessible)]);
    }

    #[test]
    fn read_only_wins_over_read_write_at_the_same_path() {
        let mut spec = baseline();
        spec.read_write_paths = vec![path("/run/x")];
        spec.read_only_paths = vec![path("/run/x")];

        let plan = Plan::new(&spec, &[]);

        let x: Vec<_> = steps_of(&plan)
            .into_iter()
            .filter(|(p, _)| *p == "/run/x")
            .collect();
        assert_eq!(x, [("/run/x", &Action::ReadOnly)]);
    }

    #[test]
    fn read_write_is_kept_only_under_a_read_only_parent() {
        let mut spec = baseline();
        spec.read_only_paths = vec![path("/run")];
        spec.read_write_paths = vec![path("/run/keep"), path("/tmp/nothing-to-undo")];

        let plan = Plan::new(&spec, &[]);

        let rw: Vec<&str> = plan
            .steps
            .iter()
            .filter(|s| s.action == Action::ReadWrite)
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(rw, ["/run/keep"]);
    }

    #[test]
    fn a_read_only_path_over_a_bind_makes_the_bind_read_only() {
        let mut spec = baseline();
        spec.bind_paths = vec![BindPath {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: false,
            recursive: true,
            ignore_missing: false,
        }];
        spec.read_only_paths = vec![path("/data")];

        let plan = Plan::new(&spec, &[]);

        let data: Vec<_> = steps_of(&plan)
            .into_iter()
            .filter(|(p, _)| *p == "/data")
            .collect();
        assert_eq!(
            data,
            [(
                "/data",
                &Action::Bind {
                    source: 0,
                    read_only: true
                }
            )]
        );
    }

    #[test]
    fn binds_name_their_sources_and_create_their_targets() {
        let mut spec = baseline();
        spec.bind_paths = vec![BindPath {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: true,
            recursive: false,
            ignore_missing: true,
        }];

        let plan = Plan::new(&spec, &[("/var/lib/svc".into(), false)]);

        assert_eq!(
            plan.sources,
            [
                Source::Host {
                    path: "/srv/data".into(),
                    recursive: false,
                    ignore_missing: true,
                },
                Source::Fd(0),
            ]
        );
        let data = plan.steps.iter().find(|s| s.path == "/data").unwrap();
        assert_eq!(data.missing, Missing::Create);
        assert_eq!(data.directive, "BindReadOnlyPaths=/srv/data:/data");
        let state = plan
            .steps
            .iter()
            .find(|s| s.path == "/var/lib/svc")
            .unwrap();
        assert_eq!(
            state.action,
            Action::Bind {
                source: 1,
                read_only: false
            }
        );
    }

    #[test]
    fn temporary_file_systems_carry_mode_and_size() {
        let mut spec = baseline();
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/scratch".into(),
            read_only: true,
            mode: 0o700,
            size: 1 << 20,
        }];

        let plan = Plan::new(&spec, &[]);

        let scratch = plan.steps.iter().find(|s| s.path == "/scratch").unwrap();
        assert_eq!(
            scratch.action,
            Action::Tmpfs {
                options: "mode=0700,size=1048576,nr_inodes=400k".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn an_allowed_device_is_a_node_bound_into_dev() {
        let mut spec = baseline();
        spec.device_allow = vec![DeviceAccess {
            path: "/dev/net/tun".into(),
            read: true,
            write: false,
            mknod: false,
        }];

        let plan = Plan::new(&spec, &[]);

        assert_eq!(
            plan.sources,
            [Source::Device {
                path: "/dev/net/tun".into(),
                read: true,
                write: false
            }]
        );
        assert!(plan.steps.iter().any(|s| s.path == "/dev/net/tun"));
    }

    #[test]
    fn kernel_modules_and_logs_are_made_inaccessible() {
        let mut spec = baseline();
        spec.protect_kernel_modules = true;
        spec.protect_kernel_logs = true;

        let plan = Plan::new(&spec, &[]);

        for p in [
            "/usr/lib/modules",
            "/lib/modules",
            "/proc/kmsg",
            "/dev/kmsg",
        ] {
            let step = plan.steps.iter().find(|s| s.path == p).unwrap();
            assert_eq!(step.action, Action::Inaccessible, "{p}");
        }
    }

    #[test]
    fn protect_proc_and_proc_subset_are_proc_mount_options() {
        let mut spec = baseline();
        spec.protect_proc = ProtectProc::Invisible;
        spec.proc_subset = ProcSubset::Pid;

        let plan = Plan::new(&spec, &[]);

        assert_eq!(plan.proc_options, "hidepid=invisible,subset=pid");
    }

    #[test]
    fn protect_system_strict_makes_the_persistent_var_read_only_but_for_read_write_paths() {
        let mut spec = baseline();
        spec.persistent_var = true;
        spec.protect_system = ProtectSystem::Strict;
        spec.read_write_paths = vec![path("/var/lib/app")];

        let plan = Plan::new(&spec, &[]);

        let var: Vec<_> = steps_of(&plan)
            .into_iter()
            .filter(|(p, _)| *p == "/var" || *p == "/var/lib/app")
            .collect();
        assert_eq!(
            var,
            [
                ("/var", &Action::ReadOnly),
                ("/var/lib/app", &Action::ReadWrite)
            ]
        );
    }

    #[test]
    fn below_strict_the_persistent_var_stays_writable() {
        let mut spec = baseline();
        spec.persistent_var = true;
        spec.protect_system = ProtectSystem::Full;
        spec.read_write_paths = vec![path("/var/lib/app")];

        let plan = Plan::new(&spec, &[]);

        assert!(!plan.steps.iter().any(|s| s.path.starts_with("/var/lib")));
        assert!(!plan.steps.iter().any(|s| s.path == "/var"));
    }

    #[test]
    fn is_under_needs_a_component_boundary() {
        assert!(is_under("/srv/a", "/srv"));
        assert!(!is_under("/srvx", "/srv"));
        assert!(!is_under("/srv", "/srv"));
        assert!(is_under("/srv", "/"));
    }
}
