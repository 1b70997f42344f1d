//! StateDirectory= and its kind.

use berth_protocol::sandbox::{MAX_ENTRIES, ServiceDirectory};

use super::super::Refusal;
use super::{bounded, not_supported};
use crate::config::FloorPolicy;

pub(super) fn check(
    _policy: &FloorPolicy,
    directories: &mut [ServiceDirectory],
) -> Result<(), Refusal> {
    bounded("sandbox.directories", directories, MAX_ENTRIES)?;
    if !directories.is_empty() {
        return Err(not_supported(
            "sandbox.directories",
            "StateDirectory= and its kind",
        ));
    }
    Ok(())
}
