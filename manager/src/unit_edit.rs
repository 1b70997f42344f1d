//! `cat`, `edit` and `set-property`: an attached unit's file with its host drop-ins (see
//! [`crate::drop_ins`]), and changes to those drop-ins.
//!
//! A change is checked before anything is written: every drop-in it writes must parse, and the
//! unit with all its drop-ins as they would then be must still make a service berthd can run.
//! A refused change writes nothing; an accepted one writes each file atomically and is what
//! the next start runs (a running service goes on as it was started).
//!
//! Drop-ins only tighten. A directive that would loosen the sandbox is ignored with a warning in
//! a drop-in as in the unit's own file; `set-property` refuses one outright, as it refuses any
//! property berth would not apply (the drop-in would change nothing). Unit files and drop-ins
//! are readable by every local user (`Cat`), as `systemctl cat` is: systemd documents that
//! `Environment=` is no place for secrets, and neither is a berth drop-in.

use std::collections::BTreeMap;

use berth_protocol::manager::{DropInsReply, ManagerError, UnitSource};

use crate::attach::parse_unit_with;
use crate::daemon::Manager;
use crate::drop_ins::{self, DropIn};
use crate::image_catalog::{MAX_CAT_BYTES, shown_contents};
use crate::unit_instances::unit_drop_ins;

/// Most `KEY=VALUE` pairs in one `set-property`.
pub const MAX_PROPERTIES: usize = 64;

/// What a change does to one drop-in: new contents, or removal.
type Change = (String, Option<String>);

impl Manager {
    /// The unit's image and file text, and its drop-ins.
    fn unit_sources(&self, unit: &str) -> Result<(String, String, Vec<DropIn>), ManagerError> {
        let unit = self.unit(unit)?;
        let image = unit.image.clone();
        let path = self
            .paths
            .attachment_dir(&image)
            .join(self.unit_file_name(unit));
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| ManagerError::internal(format!("{}: {e}", path.display())))?;
        let drop_ins =
            unit_drop_ins(&self.paths, &image, &unit.name).map_err(ManagerError::internal)?;
        Ok((image, contents, drop_ins))
    }

    /// `Cat`: the unit's file, then its drop-ins, each with its path; within a bounded reply.
    pub fn cat(&self, unit: &str) -> Result<(String, Vec<UnitSource>), ManagerError> {
        let unit = self.unit(unit)?;
        let (name, file) = (unit.name.clone(), self.unit_file_name(unit));
        let (image, contents, drop_ins) = self.unit_sources(&name)?;
        let main = UnitSource {
            path: self
                .paths
                .attachment_dir(&image)
                .join(file)
                .display()
                .to_string(),
            contents,
        };
        let drop_ins = drop_ins.into_iter().map(|d| UnitSource {
            path: d.path.display().to_string(),
            contents: d.contents,
        });
        let files = std::iter::once(main)
            .chain(drop_ins)
            .scan(MAX_CAT_BYTES, |budget, file| {
                Some(UnitSource {
                    contents: shown_contents(file.contents, budget),
                    ..file
                })
            })
            .collect();
        Ok((name, files))
    }

    /// `WriteDropIn`: drop-in `name` of `unit` becomes `contents` (removed when it says
    /// nothing but comments).
    pub fn write_drop_in(
        &mut self,
        unit: &str,
        name: &str,
        contents: &str,
    ) -> Result<DropInsReply, ManagerError> {
        let unit = self.unit(unit)?.name.clone();
        let refuse = |reason: String| ManagerError::InvalidDropIn {
            unit: unit.clone(),
            reason,
        };
        drop_ins::check_name(name).map_err(|e| refuse(e.to_string()))?;
        if contents.len() > drop_ins::MAX_DROP_IN_BYTES {
            let e = drop_ins::DropInError::TooLarge {
                size: contents.len(),
            };
            return Err(refuse(e.to_string()));
        }
        let change = (!drop_ins::is_empty(contents)).then(|| contents.to_owned());
        self.change_drop_ins(&unit, vec![(name.to_owned(), change)], false)
    }

    /// `SetProperty`: each `KEY=VALUE` goes into `50-KEY.conf` (all values of one key in one
    /// file, replacing what it held), as `systemctl set-property` writes them.
    pub fn set_property(
        &mut self,
        unit: &str,
        properties: &[String],
    ) -> Result<DropInsReply, ManagerError> {
        let unit = self.unit(unit)?.name.clone();
        let refuse = |reason: String| ManagerError::InvalidDropIn {
            unit: unit.clone(),
            reason,
        };
        if properties.is_empty() {
            return Err(refuse("no KEY=VALUE given".into()));
        }
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for property in properties {
            let (key, value) = property
                .split_once('=')
                .ok_or_else(|| refuse("a property is KEY=VALUE".into()))?;
            if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(refuse(format!("invalid property name {:?}", shown(key))));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(refuse(format!("{key}= holds a line break or a NUL byte")));
            }
            by_key.entry(key).or_default().push(value);
        }
        let changes = by_key
            .into_iter()
            .map(|(key, values)| {
                let mut text = format!(
                    "# Written by berth set-property.\n[{}]\n",
                    drop_ins::section_of(key)
                );
                for value in values {
                    text.push_str(&format!("{key}={value}\n"));
                }
                (format!("50-{key}.conf"), Some(text))
            })
            .collect();
        self.change_drop_ins(&unit, changes, true)
    }

    /// Checks the unit with `changes` applied to its drop-ins, then writes them and takes the
    /// new configuration. `strict`: a warning about a changed drop-in refuses the change.
    fn change_drop_ins(
        &mut self,
        unit: &str,
        changes: Vec<Change>,
        strict: bool,
    ) -> Result<DropInsReply, ManagerError> {
        let refuse = |reason: String| ManagerError::InvalidDropIn {
            unit: unit.to_owned(),
            reason,
        };
        let (image, contents, current) = self.unit_sources(unit)?;
        let dir = drop_ins::dir(&self.paths, &image, unit);
        let mut after: BTreeMap<String, DropIn> =
            current.into_iter().map(|d| (d.name.clone(), d)).collect();
        for (name, change) in &changes {
            match change {
                Some(text) => {
                    after.insert(
                        name.clone(),
                        DropIn {
                            name: name.clone(),
                            path: dir.join(name),
                            contents: text.clone(),
                        },
                    );
                }
                None => {
                    after.remove(name);
                }
            }
        }
        if after.len() > drop_ins::MAX_DROP_INS {
            let e = drop_ins::DropInError::TooMany {
                unit: unit.to_owned(),
            };
            return Err(refuse(e.to_string()));
        }
        let after: Vec<DropIn> = after.into_values().collect();
        let profile = self
            .attachments
            .get(&image)
            .map_or(crate::daemon::DEFAULT_PROFILE, |a| a.profile.as_str());
        let (base, _) = self.profile_sandbox(profile, unit).map_err(refuse)?;
        let (config, warnings) = parse_unit_with(unit, &contents, &after, &base).map_err(refuse)?;
        if strict {
            let changed: Vec<String> = changes
                .iter()
                .map(|(name, _)| format!("{unit}.d/{name}:"))
                .collect();
            if let Some(warning) = warnings
                .iter()
                .find(|w| changed.iter().any(|label| w.starts_with(label.as_str())))
            {
                return Err(refuse(format!("it would not be applied: {warning}")));
            }
        }
        let mut written = Vec::new();
        let mut removed = Vec::new();
        for (name, change) in &changes {
            match change {
                Some(text) => {
                    let path = drop_ins::write(&self.paths, &image, unit, name, text)
                        .map_err(ManagerError::internal)?;
                    written.push(path.display().to_string());
                }
                None => {
                    if drop_ins::remove(&self.paths, &image, unit, name)
                        .map_err(ManagerError::internal)?
                    {
                        removed.push(dir.join(name).display().to_string());
                    }
                }
            }
        }
        self.unit_mut(unit)?.config = config;
        self.notify();
        tracing::info!(
            unit = %berth_logging::Untrusted(unit),
            written = written.len(),
            removed = removed.len(),
            "drop-ins changed"
        );
        Ok(DropInsReply {
            unit: unit.to_owned(),
            written,
            removed,
            warnings,
        })
    }
}

/// At most 64 characters of a name a caller gave, for a message.
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}
