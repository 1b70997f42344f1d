//! `berth reattach`: moving an attachment's units to another version of its image.
//!
//! The new version is read like an attach reads an image, with the prefixes and extensions
//! recorded at attach. Units both versions have are *updated*: their unit files and config are
//! replaced, while a running one keeps its process (and the old version's files, which its
//! sandbox holds) until it is restarted, by `--now` or later. Units only the new version has
//! are *added*; units it lacks are *removed*: stopped first, then detached. Nothing under
//! `STATE/private` or `STATE/var` is touched, so state directories carry over.

use std::path::{Path, PathBuf};

use berth_logging::Untrusted;
use berth_protocol::manager::ManagerError;

use crate::attach::{ScannedImage, scan_image};
use crate::attachments::{self, AttachmentRecord, ExtensionRecord, UnitCopy};
use crate::daemon::Manager;
use crate::extension;
use crate::image::{self, ImageSource, strict_modes};
use crate::unit::ServiceConfig;
use crate::unit_state::{Unit, now_usec};

/// A reattach read and checked, not yet done.
pub struct Prepared {
    record: AttachmentRecord,
    copies: Vec<UnitCopy>,
    parsed: Vec<(String, ServiceConfig)>,
    pub updated: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What a reattach did.
#[derive(Debug)]
pub struct Reattached {
    pub image: String,
    pub path: PathBuf,
    pub updated: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Manager {
    /// Reads the version of an attached image that `arg` names (a name, whose version the
    /// image lookup picks, or a path) and works out what moving to it changes. Changes nothing.
    pub fn reattach_prepare(&self, arg: &str) -> Result<Prepared, ManagerError> {
        let (name, path) = match self.versioned_image(arg) {
            Some(found) => found,
            None => self.resolve_image(arg)?,
        };
        let old = self
            .attachments
            .get(&name)
            .ok_or_else(|| ManagerError::NotAttached {
                image: name.clone(),
            })?;
        let invalid = |image: &str, reason: String| ManagerError::InvalidImage {
            image: image.to_string(),
            reason,
        };
        let path = std::fs::canonicalize(&path)
            .map_err(|e| invalid(&name, format!("cannot resolve {}: {e}", path.display())))?;
        let uid = rustix::process::geteuid().as_raw();
        if let Err(unsafe_path) = strict_modes::check(&path, uid) {
            return Err(invalid(
                &name,
                format!("{unsafe_path}; attach it again with --force to accept that"),
            ));
        }
        // The extensions stay as attached (same paths), read and checked again against the
        // new version; a release file accepted by --force at attach stays accepted.
        // One passed as a descriptor is read through the one berthd kept, as at attach.
        let mut extensions = Vec::new();
        let held = self.held_extensions.get(&name);
        for (i, ext) in old.extensions.iter().enumerate() {
            let label = ext.path.display().to_string();
            let opened = match held.and_then(|h| h.get(i)).and_then(Option::as_ref) {
                Some(held) => {
                    let fd = held.spawn_fd().map_err(ManagerError::internal)?;
                    let opened = image::open(ImageSource::Fd { fd, label: &label })
                        .map_err(|e| invalid(&ext.name, e.to_string()))?;
                    if let Err(unsafe_path) =
                        strict_modes::check_passed(opened.root.fd(), &ext.path, uid)
                    {
                        return Err(invalid(&ext.name, unsafe_path.to_string()));
                    }
                    extension::from_opened(&ext.name, &ext.path, opened, true, ext.relaxed)
                }
                None => {
                    if let Err(unsafe_path) = strict_modes::check(&ext.path, uid) {
                        return Err(invalid(&ext.name, unsafe_path.to_string()));
                    }
                    extension::open(&ext.name, &ext.path, ext.relaxed)
                }
            };
            extensions.push(opened.map_err(|e| invalid(&ext.name, e.to_string()))?);
        }
        let opened =
            image::open(ImageSource::Path(&path)).map_err(|e| invalid(&name, e.to_string()))?;
        let ScannedImage {
            prefixes,
            units: found,
            identity,
            os,
            ..
        } = scan_image(&name, &opened.root, &old.prefixes, &extensions)?;
        crate::attach::require_os_id(&name, &os)?;
        if found.is_empty() {
            return Err(invalid(
                &name,
                format!(
                    "no unit files matching {} in {}; nothing to reattach to",
                    prefixes.join(", "),
                    path.display()
                ),
            ));
        }
        let mut parsed = Vec::new();
        for unit in &found {
            // The host drop-ins stay in the attachment and apply to the new version too.
            let (config, _) = self
                .parse_attached(&name, &old.profile, &unit.name, &unit.contents)
                .map_err(|reason| ManagerError::InvalidUnit {
                    unit: unit.name.clone(),
                    reason,
                })?;
            if let Some(existing) = self.units.get(&unit.name)
                && existing.image != name
            {
                return Err(ManagerError::AlreadyAttached {
                    image: existing.image.clone(),
                    unit: unit.name.clone(),
                });
            }
            parsed.push((unit.name.clone(), config));
        }
        let new_units: Vec<String> = parsed.iter().map(|(n, _)| n.clone()).collect();
        let updated = new_units
            .iter()
            .filter(|u| old.units.contains(u))
            .cloned()
            .collect();
        let added = new_units
            .iter()
            .filter(|u| !old.units.contains(u))
            .cloned()
            .collect();
        let mut removed: Vec<String> = old
            .units
            .iter()
            .filter(|u| !new_units.contains(u))
            .cloned()
            .collect();
        // The instances of a template the new version lacks go with it.
        let instances: Vec<String> = self
            .instances_of(&name)
            .into_iter()
            .filter(|instance| {
                berth_protocol::names::template_of(instance).is_some_and(|t| removed.contains(&t))
            })
            .collect();
        removed.extend(instances);
        let record = AttachmentRecord {
            enabled: crate::startup::still_enabled(&old.enabled, &new_units),
            image: name,
            path,
            identity: Some(identity),
            profile: old.profile.clone(),
            units: new_units,
            attached_usec: now_usec(),
            prefixes,
            extensions: extensions.iter().map(ExtensionRecord::of).collect(),
            // berthd opened the new version itself, as it will at each start.
            by_descriptor: false,
            ports: old.ports.clone(),
        };
        let copies = found
            .into_iter()
            .map(|u| UnitCopy {
                name: u.name,
                contents: u.contents,
            })
            .collect();
        Ok(Prepared {
            record,
            copies,
            parsed,
            updated,
            added,
            removed,
        })
    }

    /// A versioned name (`foo_2.0`) as that version's entry, a directory or a `.raw` file,
    /// in the first search directory that has one; `None` for anything else.
    fn versioned_image(&self, arg: &str) -> Option<(String, PathBuf)> {
        if arg.contains('/') {
            return None;
        }
        let (name, version) = image::image_name_from_path(Path::new(arg));
        version?;
        self.search
            .dirs()
            .iter()
            .flat_map(|dir| [dir.join(arg), dir.join(format!("{arg}.raw"))])
            .find(|path| path.exists())
            .map(|path| (name, path))
    }

    /// Does a prepared reattach; the removed units must be stopped by now.
    pub fn reattach_commit(&mut self, prepared: Prepared) -> Result<Reattached, ManagerError> {
        let Prepared {
            record,
            copies,
            parsed,
            updated,
            added,
            removed,
        } = prepared;
        if let Some(unit) = removed
            .iter()
            .find(|u| self.units.get(*u).is_some_and(|u| u.is_active()))
        {
            return Err(ManagerError::UnitActive { unit: unit.clone() });
        }
        attachments::save(&self.paths, &record, &copies).map_err(ManagerError::internal)?;
        let dir = self.paths.attachment_dir(&record.image);
        for unit in &removed {
            // A stale copy is never read (the record lists the units), so a failure is harmless.
            let _ = std::fs::remove_file(dir.join(unit));
            self.units.remove(unit);
            crate::lifecycle::persistence::forget(&self.paths, unit);
        }
        for (unit_name, config) in parsed {
            match self.units.get_mut(&unit_name) {
                // Its current run, if any, goes on; the next start reads the new version.
                Some(unit) => unit.config = config,
                None => {
                    let unit = Unit::new(unit_name.clone(), record.image.clone(), config);
                    self.units.insert(unit_name, unit);
                }
            }
        }
        let image = record.image.clone();
        let path = record.path.clone();
        // A descriptor kept from an attach by descriptor is the old version.
        self.held_images.remove(&image);
        self.attachments.insert(image.clone(), record);
        self.notify();
        tracing::info!(
            image = %Untrusted(&image),
            path = %Untrusted(&path.to_string_lossy()),
            updated = updated.len(),
            added = added.len(),
            removed = removed.len(),
            "image reattached"
        );
        Ok(Reattached {
            image,
            path,
            updated,
            added,
            removed,
        })
    }
}
