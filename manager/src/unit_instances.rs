//! Templates and their instances (systemd.unit(5)): `foo@.service` is attached like any unit
//! but never runs itself; `berth start foo@bar` makes the instance `foo@bar.service` from it,
//! its `%i`, `%I`, `%j`, `%J`, `%n`, `%N`, `%p`, `%P` and `%f` resolved for that name.
//!
//! An instance is a unit of berthd's table from its first start on: `status`, `stop`, `logs`,
//! `cat`, `edit` and `set-property` work on it as on any unit, and `list` shows it while it has
//! something to show (active, exited or failed). Its configuration is read again from the
//! template (and the template's and the instance's drop-ins, as systemd merges them) at each
//! start, so a changed template or drop-in applies from the next start. An instance that never
//! ran, or has stopped, is `stopped`, as systemd shows one it has not loaded.

use std::collections::BTreeMap;

use berth_logging::Untrusted;
use berth_protocol::manager::{ManagerError, UnitStatus, unit_name};
use berth_protocol::names::{check_unit_name, is_template, template_of};

use crate::daemon::Manager;
use crate::drop_ins::{self, DropIn, DropInError};
use crate::unit_state::{Unit, UnitState};

/// Most instances berthd keeps: once there are this many, the stopped ones are dropped to make
/// room, and past this many active, exited or failed ones a new instance is refused.
pub const MAX_INSTANCES: usize = 4096;

impl Manager {
    /// Makes unit `arg` ready to start. A template is refused; an instance of an attached
    /// template is made (or made again, when it is not active) from the template's current
    /// files; any other unit must be attached.
    pub fn instantiate(&mut self, arg: &str) -> Result<(), ManagerError> {
        self.instantiate_within(arg, MAX_INSTANCES)
    }

    /// [`Self::instantiate`], keeping at most `max` instances.
    fn instantiate_within(&mut self, arg: &str, max: usize) -> Result<(), ManagerError> {
        let name = unit_name(arg);
        if is_template(&name) {
            return Err(ManagerError::UnitIsTemplate { unit: name });
        }
        let Some(template) = template_of(&name) else {
            return self.unit(&name).map(|_| ());
        };
        // An image may ship the instance's own file: that is then the unit, as in systemd.
        if self.is_attached_file(&name) || self.units.get(&name).is_some_and(|u| u.is_active()) {
            return Ok(());
        }
        let image = match self.units.get(&template) {
            Some(t) => t.image.clone(),
            None => return Err(ManagerError::NoSuchUnit { unit: name }),
        };
        let config = self.parse_instance(&image, &template, &name)?;
        match self.units.get_mut(&name) {
            Some(unit) => unit.config = config,
            None => {
                // Only when full: an instance another start has just made is stopped until
                // that start gets its uid, and must not vanish under it.
                if self.made_instances() >= max {
                    self.prune_instances();
                }
                if self.made_instances() >= max {
                    return Err(ManagerError::StartFailed {
                        unit: name,
                        reason: format!(
                            "berthd keeps at most {max} instances that are active, \
                             exited or failed; stop or reset some first"
                        ),
                    });
                }
                tracing::info!(unit = %Untrusted(&name), "instance made from {template}");
                let unit = Unit::new(name.clone(), image, config);
                self.units.insert(name, unit);
            }
        }
        Ok(())
    }

    /// The configuration of instance `name` of `template` (attached from `image`).
    fn parse_instance(
        &self,
        image: &str,
        template: &str,
        name: &str,
    ) -> Result<crate::unit::ServiceConfig, ManagerError> {
        let profile = self
            .attachments
            .get(image)
            .map(|a| a.profile.clone())
            .ok_or_else(|| ManagerError::NotAttached {
                image: image.to_owned(),
            })?;
        let path = self.paths.attachment_dir(image).join(template);
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| ManagerError::internal(format!("{}: {e}", path.display())))?;
        let (config, _) = self
            .parse_attached(image, &profile, name, &contents)
            .map_err(|reason| ManagerError::InvalidUnit {
                unit: name.to_owned(),
                reason,
            })?;
        Ok(config)
    }

    fn made_instances(&self) -> usize {
        self.units
            .values()
            .filter(|u| self.is_made_instance(u))
            .count()
    }

    /// Drops the instances that have nothing to show.
    fn prune_instances(&mut self) {
        let idle: Vec<String> = self
            .units
            .values()
            .filter(|u| self.is_idle_instance(u))
            .map(|u| u.name.clone())
            .collect();
        for name in idle {
            self.units.remove(&name);
        }
    }

    /// Whether unit `name` was attached from a file of its own (not made from a template).
    fn is_attached_file(&self, name: &str) -> bool {
        self.units.get(name).is_some_and(|u| {
            self.attachments
                .get(&u.image)
                .is_some_and(|r| r.units.iter().any(|n| n == name))
        })
    }

    /// Whether `unit` was made from a template (not attached from a file of its own).
    fn is_made_instance(&self, unit: &Unit) -> bool {
        template_of(&unit.name).is_some() && !self.is_attached_file(&unit.name)
    }

    /// Whether `unit` is an instance `list` leaves out: one made from a template that has
    /// nothing to show.
    pub fn is_idle_instance(&self, unit: &Unit) -> bool {
        self.is_made_instance(unit)
            && unit.state() == UnitState::Stopped
            && !unit.is_active()
            && unit.link.is_none()
    }

    /// The file in the attachment that holds `unit`'s text: a made instance's is its
    /// template's.
    pub fn unit_file_name(&self, unit: &Unit) -> String {
        match template_of(&unit.name) {
            Some(template) if self.is_made_instance(unit) => template,
            _ => unit.name.clone(),
        }
    }

    /// The status of unit `arg`; an instance of an attached template that berthd has not made
    /// (or has dropped) is `stopped`, as systemd shows an instance it has not loaded.
    pub fn unit_status(&self, arg: &str) -> Result<UnitStatus, ManagerError> {
        match self.unit(arg) {
            Ok(unit) => Ok(self.status(unit)),
            Err(error) => {
                let name = unit_name(arg);
                let template = template_of(&name)
                    .and_then(|t| self.units.get(&t))
                    .ok_or(error)?;
                let mut status = self.status(template);
                status.unit = name;
                status.state = UnitState::Stopped.as_str().to_owned();
                Ok(status)
            }
        }
    }

    /// The name of unit `arg` if it is attached or an instance of an attached template (whose
    /// logs may outlive the instance).
    pub fn known_unit(&self, arg: &str) -> Result<String, ManagerError> {
        self.unit_status(arg).map(|s| s.unit)
    }

    /// The units of image `image` berthd holds beyond its attachment record: its instances.
    pub(crate) fn instances_of(&self, image: &str) -> Vec<String> {
        self.units
            .values()
            .filter(|u| u.image == image && self.is_made_instance(u))
            .map(|u| u.name.clone())
            .collect()
    }

    /// Makes the instances whose supervisor still runs (berthd was restarted under them), so
    /// that they are adopted as every unit is.
    pub(crate) fn remake_running_instances(&mut self) {
        let entries = match std::fs::read_dir(self.paths.supervise_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for running instances");
                return;
            }
        };
        let names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".sock")
                    .map(str::to_owned)
            })
            .filter(|name| check_unit_name(name).is_ok() && template_of(name).is_some())
            .take(MAX_INSTANCES)
            .collect();
        for name in names {
            if let Err(e) = self.instantiate(&name) {
                tracing::warn!(unit = %Untrusted(&name), error = %e, "running instance not remade");
            }
        }
    }
}

/// The host drop-ins of `unit`: an instance's are its template's merged with its own, in
/// lexical order of their names, its own winning where both have one of the same name (as
/// systemd reads `foo@.service.d/` and `foo@bar.service.d/`).
pub fn unit_drop_ins(
    paths: &crate::paths::Paths,
    image: &str,
    unit: &str,
) -> Result<Vec<DropIn>, DropInError> {
    let own = drop_ins::read_all(paths, image, unit)?;
    let Some(template) = template_of(unit) else {
        return Ok(own);
    };
    let mut merged: BTreeMap<String, DropIn> = drop_ins::read_all(paths, image, &template)?
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    merged.extend(own.into_iter().map(|d| (d.name.clone(), d)));
    Ok(merged.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::AttachmentRecord;
    use crate::lifecycle::state_machine::Lifecycle;

    const TEMPLATE: &str = "[Unit]\nDescription=web %i\n[Service]\nExecStart=/bin/web %I\n";

    /// A manager with image `web` attached, its one unit the template `web@.service`.
    fn manager_with_template() -> (tempfile::TempDir, Manager) {
        let (dir, paths) = paths();
        let users = crate::dynamic_user::DynamicUsers::new(61184, 65519);
        let groups = crate::api::Groups {
            admin: None,
            log: None,
        };
        let blocks =
            crate::uid_blocks::UidBlocks::load(&paths.uid_blocks_file(), 524_288, 589_823).unwrap();
        let profiles =
            crate::profile::Profiles::new(std::path::Path::new(crate::profile::DEFAULT_DIR));
        let mut m = Manager::load(paths, users, blocks, groups, profiles);
        let attachment = m.paths.attachment_dir("web");
        std::fs::create_dir_all(&attachment).unwrap();
        std::fs::write(attachment.join("web@.service"), TEMPLATE).unwrap();
        let record = AttachmentRecord {
            image: "web".into(),
            path: "/srv/web".into(),
            identity: None,
            by_descriptor: false,
            profile: "default@1".into(),
            units: vec!["web@.service".into()],
            attached_usec: 0,
            prefixes: Vec::new(),
            extensions: Vec::new(),
            enabled: Vec::new(),
            ports: Vec::new(),
        };
        m.attachments.insert("web".into(), record);
        let (config, _) = m
            .parse_attached("web", "default@1", "web@.service", TEMPLATE)
            .unwrap();
        let template = Unit::new("web@.service".into(), "web".into(), config);
        m.units.insert("web@.service".into(), template);
        (dir, m)
    }

    #[test]
    fn a_template_is_refused_under_either_name() {
        let (_dir, mut m) = manager_with_template();

        for arg in ["web@", "web@.service"] {
            assert_eq!(
                m.instantiate(arg),
                Err(ManagerError::UnitIsTemplate {
                    unit: "web@.service".into()
                })
            );
        }
    }

    #[test]
    fn an_instance_is_made_with_its_specifiers_resolved() {
        let (_dir, mut m) = manager_with_template();

        m.instantiate("web@a-b").unwrap();

        let unit = &m.units["web@a-b.service"];
        assert_eq!(unit.image, "web");
        assert_eq!(unit.config.description.as_deref(), Some("web a-b"));
        assert_eq!(unit.config.exec_start[0].argv, ["/bin/web", "a/b"]);
    }

    #[test]
    fn an_instance_of_no_attached_template_does_not_exist() {
        let (_dir, mut m) = manager_with_template();

        let result = m.instantiate("db@x");

        assert_eq!(
            result,
            Err(ManagerError::NoSuchUnit {
                unit: "db@x.service".into()
            })
        );
        assert!(!m.units.contains_key("db@x.service"));
    }

    #[test]
    fn a_new_instance_leaves_a_stopped_one_alone_below_the_limit() {
        let (_dir, mut m) = manager_with_template();
        m.instantiate("web@a").unwrap();

        m.instantiate("web@b").unwrap();

        assert!(m.units.contains_key("web@a.service"));
        assert!(m.units.contains_key("web@b.service"));
    }

    #[test]
    fn at_the_limit_stopped_instances_make_room_and_others_do_not() {
        let (_dir, mut m) = manager_with_template();
        m.instantiate_within("web@a", 2).unwrap();
        m.instantiate_within("web@b", 2).unwrap();
        m.units
            .get_mut("web@b.service")
            .unwrap()
            .set_lifecycle(Lifecycle::at_rest(UnitState::Failed));

        m.instantiate_within("web@c", 2).unwrap();
        m.units
            .get_mut("web@c.service")
            .unwrap()
            .set_lifecycle(Lifecycle::at_rest(UnitState::Exited));
        let refused = m.instantiate_within("web@d", 2);

        assert!(!m.units.contains_key("web@a.service"), "stopped: dropped");
        assert!(m.units.contains_key("web@b.service"), "failed: kept");
        assert!(matches!(refused, Err(ManagerError::StartFailed { .. })));
        assert!(!m.units.contains_key("web@d.service"));
    }

    #[test]
    fn the_status_of_an_instance_never_made_is_stopped() {
        let (_dir, m) = manager_with_template();

        let status = m.unit_status("web@x").unwrap();

        assert_eq!(status.unit, "web@x.service");
        assert_eq!(status.state, "stopped");
        assert!(m.list().iter().all(|s| s.unit != "web@x.service"));
    }

    fn paths() -> (tempfile::TempDir, crate::paths::Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::new(&dir.path().join("run"), &dir.path().join("state"));
        (dir, paths)
    }

    fn write(paths: &crate::paths::Paths, unit: &str, name: &str, text: &str) {
        let dir = drop_ins::dir(paths, "img", unit);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn an_instance_reads_its_templates_drop_ins_and_its_own_over_them() {
        let (_dir, paths) = paths();
        write(&paths, "web@.service", "10-a.conf", "template a");
        write(&paths, "web@.service", "20-b.conf", "template b");
        write(&paths, "web@blue.service", "20-b.conf", "instance b");
        write(&paths, "web@blue.service", "30-c.conf", "instance c");

        let merged = unit_drop_ins(&paths, "img", "web@blue.service").unwrap();

        let seen: Vec<(&str, &str)> = merged
            .iter()
            .map(|d| (d.name.as_str(), d.contents.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("10-a.conf", "template a"),
                ("20-b.conf", "instance b"),
                ("30-c.conf", "instance c")
            ]
        );
    }

    #[test]
    fn a_plain_unit_reads_only_its_own_drop_ins() {
        let (_dir, paths) = paths();
        write(&paths, "web@.service", "10-a.conf", "template a");
        write(&paths, "web.service", "10-b.conf", "own");

        let own = unit_drop_ins(&paths, "img", "web.service").unwrap();

        assert_eq!(own.len(), 1);
        assert_eq!(own[0].contents, "own");
    }
}
