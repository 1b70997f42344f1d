//! `Enable` and `Disable`: whether a unit starts when berthd starts at boot, recorded in its
//! attachment's record (`enabled`), so it lives and goes with the attachment.

use berth_logging::Untrusted;
use berth_protocol::manager::{ManagerError, UnitStatus};

use crate::attachments;
use crate::daemon::Manager;
use crate::unit_state::Unit;

impl Manager {
    /// Whether `unit` is enabled.
    pub fn is_enabled(&self, unit: &Unit) -> bool {
        self.attachments
            .get(&unit.image)
            .is_some_and(|a| a.enabled.contains(&unit.name))
    }

    /// Enables (`enabled`) or disables `unit`: only the record changes, atomically; a running
    /// unit keeps running and a stopped one stays stopped (as `systemctl enable` without
    /// `--now`).
    /// An instance of an attached template (`foo@bar`) is enabled in its template's
    /// attachment; a template itself cannot be.
    pub fn set_enabled(&mut self, unit: &str, enabled: bool) -> Result<UnitStatus, ManagerError> {
        let name = berth_protocol::manager::unit_name(unit);
        if enabled && super::is_template(&name) {
            return Err(ManagerError::UnitIsTemplate { unit: name });
        }
        if super::template_of(&name).is_some() {
            self.instantiate(&name)?;
        }
        let unit = self.unit(&name)?;
        let image = unit.image.clone();
        let Some(record) = self.attachments.get(&image) else {
            return Err(ManagerError::internal(format!(
                "{name} has no attachment record"
            )));
        };
        if record.enabled.contains(&name) != enabled {
            let mut record = record.clone();
            if enabled {
                record.enabled.push(name.clone());
                record.enabled.sort();
            } else {
                record.enabled.retain(|u| *u != name);
            }
            attachments::save_record(&self.paths, &record).map_err(ManagerError::internal)?;
            self.attachments.insert(image, record);
            self.notify();
            tracing::info!(
                unit = %Untrusted(&name),
                "unit {}",
                if enabled { "enabled" } else { "disabled" }
            );
        }
        Ok(self.status(self.unit(&name)?))
    }
}
