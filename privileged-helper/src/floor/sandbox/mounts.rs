//! The mount plan: what of the host and the image the service sees.

use berth_protocol::sandbox::{MountPlan, ProcSubset, ProtectHome, ProtectProc};

use super::super::{Refusal, refuse};
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, plan: &mut MountPlan) -> Result<(), Refusal> {
    // The image is always read-only, so every ProtectSystem= level holds already.
    if !plan.private_tmp || !plan.private_devices {
        return Err(refuse(
            "sandbox.mounts",
            "this berth-helper always gives a service a private /tmp and /dev",
        ));
    }
    let unsupported = [
        (
            "protect_home",
            plan.protect_home != ProtectHome::No,
            "ProtectHome=",
        ),
        (
            "device_allow",
            !plan.device_allow.is_empty(),
            "DeviceAllow=",
        ),
        (
            "protect_kernel_modules",
            plan.protect_kernel_modules,
            "ProtectKernelModules=",
        ),
        (
            "protect_kernel_logs",
            plan.protect_kernel_logs,
            "ProtectKernelLogs=",
        ),
        (
            "protect_control_groups",
            plan.protect_control_groups,
            "ProtectControlGroups=",
        ),
        (
            "protect_proc",
            plan.protect_proc != ProtectProc::Default,
            "ProtectProc=",
        ),
        (
            "proc_subset",
            plan.proc_subset != ProcSubset::All,
            "ProcSubset=",
        ),
        (
            "read_only_paths",
            !plan.read_only_paths.is_empty(),
            "ReadOnlyPaths=",
        ),
        (
            "read_write_paths",
            !plan.read_write_paths.is_empty(),
            "ReadWritePaths=",
        ),
        (
            "inaccessible_paths",
            !plan.inaccessible_paths.is_empty(),
            "InaccessiblePaths=",
        ),
        ("bind_paths", !plan.bind_paths.is_empty(), "BindPaths="),
        (
            "temporary_filesystems",
            !plan.temporary_filesystems.is_empty(),
            "TemporaryFileSystem=",
        ),
    ];
    for (field, asked, directive) in unsupported {
        if asked {
            return Err(not_supported(&format!("sandbox.mounts.{field}"), directive));
        }
    }
    // /proc/sys and friends are always read-only; asking for less gets that anyway.
    plan.protect_kernel_tunables = true;
    Ok(())
}
