//! Limit*= resource limits: set in init before anything drops privileges, so the service
//! inherits them through fork and exec. The floor has already refused unknown names and
//! limits above the helper's own (`floor/sandbox/resources.rs`).

use berth_protocol::sandbox::Rlimit;
use rustix::process::Resource;

use super::Failure;
use super::process_syscalls::ProcessSyscalls;

/// Every resource by the name systemd gives it after `Limit` (`LimitNOFILE=` is `NOFILE`).
pub(crate) const RESOURCES: [(&str, Resource); 16] = [
    ("CPU", Resource::Cpu),
    ("FSIZE", Resource::Fsize),
    ("DATA", Resource::Data),
    ("STACK", Resource::Stack),
    ("CORE", Resource::Core),
    ("RSS", Resource::Rss),
    ("NPROC", Resource::Nproc),
    ("NOFILE", Resource::Nofile),
    ("MEMLOCK", Resource::Memlock),
    ("AS", Resource::As),
    ("LOCKS", Resource::Locks),
    ("SIGPENDING", Resource::Sigpending),
    ("MSGQUEUE", Resource::Msgqueue),
    ("NICE", Resource::Nice),
    ("RTPRIO", Resource::Rtprio),
    ("RTTIME", Resource::Rttime),
];

/// The resource systemd calls `name` (`NOFILE`), if there is one.
pub(crate) fn resource_named(name: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, resource)| *resource)
}

/// Sets every limit of `limits`; the others stay as init inherited them from the helper.
pub(super) fn apply(os: &impl ProcessSyscalls, limits: &[Rlimit]) -> Result<(), Failure> {
    for limit in limits {
        let stage = || format!("set Limit{}=", limit.resource);
        let resource = resource_named(&limit.resource)
            .ok_or_else(|| Failure::setup(stage(), rustix::io::Errno::INVAL))?;
        os.set_rlimit(resource, limit.soft, limit.hard)
            .map_err(|e| Failure::setup(stage(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn limit(resource: &str, soft: Option<u64>, hard: Option<u64>) -> Rlimit {
        Rlimit {
            resource: resource.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn each_limit_is_set_with_its_soft_and_hard_values() {
        let os = RecordingProcess::new();

        apply(
            &os,
            &[
                limit("NOFILE", Some(512), Some(1024)),
                limit("CORE", None, None),
            ],
        )
        .unwrap();

        assert_eq!(
            os.calls(),
            [
                ProcessCall::SetRlimit {
                    resource: Resource::Nofile,
                    soft: Some(512),
                    hard: Some(1024)
                },
                ProcessCall::SetRlimit {
                    resource: Resource::Core,
                    soft: None,
                    hard: None
                },
            ]
        );
    }

    #[test]
    fn no_limits_set_nothing() {
        let os = RecordingProcess::new();

        apply(&os, &[]).unwrap();

        assert_eq!(os.calls(), []);
    }

    #[test]
    fn a_failing_limit_names_its_directive() {
        let os = RecordingProcess::new().failing(
            |c| matches!(c, ProcessCall::SetRlimit { .. }),
            rustix::io::Errno::PERM,
        );

        let failure = apply(&os, &[limit("NPROC", Some(1), Some(1))]).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "set LimitNPROC=".into(),
                errno: libc::EPERM
            }
        );
    }

    #[test]
    fn every_systemd_limit_name_is_known() {
        for name in [
            "CPU",
            "FSIZE",
            "DATA",
            "STACK",
            "CORE",
            "RSS",
            "NOFILE",
            "AS",
            "NPROC",
            "MEMLOCK",
            "LOCKS",
            "SIGPENDING",
            "MSGQUEUE",
            "NICE",
            "RTPRIO",
            "RTTIME",
        ] {
            assert!(resource_named(name).is_some(), "{name}");
        }
        assert_eq!(resource_named("nofile"), None);
    }
}
