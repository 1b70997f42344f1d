//! Resource limits, the umask, the keyring and IPC clean-up.

use berth_protocol::sandbox::{KeyringMode, SandboxSpec};

use super::super::{Refusal, refuse};
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, spec: &mut SandboxSpec) -> Result<(), Refusal> {
    if !spec.rlimits.is_empty() {
        return Err(not_supported("sandbox.rlimits", "Limit*="));
    }
    if spec.umask > 0o777 {
        return Err(refuse("sandbox.umask", "must be at most 0777"));
    }
    if spec.keyring != KeyringMode::Private {
        return Err(not_supported("sandbox.keyring", "KeyringMode=shared"));
    }
    if spec.remove_ipc {
        return Err(not_supported("sandbox.remove_ipc", "RemoveIPC="));
    }
    Ok(())
}
