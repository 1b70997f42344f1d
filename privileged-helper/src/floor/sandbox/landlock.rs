//! Landlock scopes: carried out as asked where the kernel has them; where it does not, the
//! start goes on and the helper logs what does not hold (see `sandbox/landlock.rs`).

use berth_protocol::sandbox::{Landlock, Namespaces};

use super::super::Refusal;
use crate::config::FloorPolicy;
use crate::sandbox::landlock::{kernel_abi, unenforced};

pub(super) fn check(
    _policy: &FloorPolicy,
    landlock: &mut Landlock,
    namespaces: &Namespaces,
) -> Result<(), Refusal> {
    // unenforced() is None when nothing is asked, so the kernel is asked only then.
    let asked = landlock.scope_abstract_unix_sockets || landlock.scope_signals;
    if asked && let Some(missing) = unenforced(landlock, namespaces.private_network, kernel_abi()) {
        tracing::warn!("Landlock: {missing}");
    }
    Ok(())
}
