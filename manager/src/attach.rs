//! Attach and detach: finding and opening an image and its extensions, pinning them, reading
//! their units, and the attachment records they make.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_logging::Untrusted;
use berth_protocol::manager::ManagerError;
use berth_protocol::sandbox::SandboxSpec;

use crate::attachments::{self, AttachmentRecord, ExtensionRecord, UnitCopy};
use crate::daemon::Manager;
use crate::drop_ins::DropIn;
use crate::extension::{self, Extension};
use crate::image::identity::ImageIdentity;
use crate::image::os_release::{self, OsRelease};
use crate::image::pool;
use crate::image::strict_modes;
use crate::image::{self, ImageSource};
use crate::unit::{self, ServiceConfig, syntax};
use crate::unit_state::{Unit, now_usec};

/// How [`Manager::attach`] attaches.
#[derive(Debug, Clone, Default)]
pub struct AttachHow {
    /// Take over units attached from another image; accept what only `--force` accepts.
    pub force: bool,
    /// Enable every unit attached (`attach --enable`).
    pub enable: bool,
    /// The ports below 1024 granted (`attach --port`): exactly these, also when the image was
    /// attached before with others (reattach keeps them; attach states them anew).
    pub ports: Vec<u16>,
}

/// An image found for `inspect` or `attach`, opened.
pub(crate) struct Located {
    pub(crate) name: String,
    /// The path it is known by: the pool's, or the one the client named.
    pub(crate) path: PathBuf,
    pub(crate) opened: image::OpenedImage,
    /// Passed in by the client as a descriptor.
    pub(crate) by_descriptor: bool,
}

impl Manager {
    /// Finds an image: an absolute path, or a name in the search path or among the
    /// attachments. A `NAME.v/` directory stands for its newest version.
    pub fn resolve_image(&self, arg: &str) -> Result<(String, PathBuf), ManagerError> {
        if arg.starts_with('/') {
            let path = PathBuf::from(arg);
            let (name, _) = image::image_name_from_path(&path);
            image::validate_image_name(&name).map_err(|e| ManagerError::InvalidImage {
                image: arg.to_string(),
                reason: e.to_string(),
            })?;
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() && arg.trim_end_matches('/').ends_with(".v") => {
                    return pool::image_of(&path)
                        .map(|found| (found.name, found.path))
                        .ok_or_else(|| ManagerError::InvalidImage {
                            image: arg.to_string(),
                            reason: format!("no version of image '{name}' in it"),
                        });
                }
                // A file of any format: opening it says whether berth takes that format.
                Ok(meta) if meta.is_dir() || meta.is_file() => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    // berthd reads images with its own (unprivileged) rights.
                    return Err(ManagerError::InvalidImage {
                        image: arg.to_string(),
                        reason: "berthd's user cannot read it; put it under the image pool \
                                 (STATE/images) or make it readable"
                            .into(),
                    });
                }
                _ => {
                    return Err(ManagerError::NoSuchImage {
                        image: arg.to_string(),
                    });
                }
            }
            return Ok((name, path));
        }
        if image::validate_image_name(arg).is_err() {
            return Err(ManagerError::NoSuchImage {
                image: arg.to_string(),
            });
        }
        if let Some(found) = self.search.find(arg) {
            return Ok((found.name, found.path));
        }
        if let Some(record) = self.attachments.get(arg) {
            return Ok((record.image.clone(), record.path.clone()));
        }
        Err(ManagerError::NoSuchImage {
            image: arg.to_string(),
        })
    }

    /// Finds and opens an image: through `fd` when the client passed one for the path `arg`,
    /// else as [`resolve_image`](Self::resolve_image) finds it, with berthd's own rights.
    pub(crate) fn locate(&self, arg: &str, fd: Option<OwnedFd>) -> Result<Located, ManagerError> {
        let invalid = |reason: String| ManagerError::InvalidImage {
            image: arg.to_string(),
            reason,
        };
        let Some(fd) = fd else {
            let (name, path) = self.resolve_image(arg)?;
            let opened =
                image::open(ImageSource::Path(&path)).map_err(|e| invalid(e.to_string()))?;
            return Ok(Located {
                name,
                path,
                opened,
                by_descriptor: false,
            });
        };
        if !arg.starts_with('/') {
            return Err(invalid(
                "a descriptor comes with the absolute path it was opened from".into(),
            ));
        }
        let path = PathBuf::from(arg);
        let (name, _) = image::image_name_from_path(&path);
        image::validate_image_name(&name).map_err(|e| invalid(e.to_string()))?;
        let opened =
            image::descriptor::open_passed(fd, &path).map_err(|e| invalid(e.to_string()))?;
        // Where berthd can see the path itself, it must name the image passed: the path is
        // what a restart reopens.
        if let Ok(at_path) = image::open(ImageSource::Path(&path)) {
            let (passed, named) = (opened.root.identity(), at_path.root.identity());
            if let (Ok(passed), Ok(named)) = (passed, named)
                && let Some(reason) = passed.mismatch(&named)
            {
                return Err(invalid(format!(
                    "the descriptor passed is not the image at {arg}: {reason}"
                )));
            }
        }
        Ok(Located {
            name,
            path,
            opened,
            by_descriptor: true,
        })
    }

    /// Attaches the matching units of an image: copies them into `STATE/attached/<image>/`.
    /// `fd`: the image, opened by the client (see [`Self::locate`]); berthd keeps it.
    /// `extensions`: each with the descriptor the client passed for it, if any (same rules).
    /// Attaching an attached image again keeps which of its units are enabled; `how.enable`
    /// enables them all (templates aside: only their instances start).
    pub fn attach(
        &mut self,
        arg: &str,
        fd: Option<OwnedFd>,
        prefixes: &[String],
        profile: Option<&str>,
        how: AttachHow,
        extensions: Vec<(String, Option<OwnedFd>)>,
    ) -> Result<(String, Vec<String>, Vec<String>), ManagerError> {
        let AttachHow {
            force,
            enable,
            mut ports,
        } = how;
        ports.sort_unstable();
        ports.dedup();
        let Located {
            name,
            path,
            opened,
            by_descriptor,
        } = self.locate(arg, fd)?;
        // Recorded with its version: the unit keeps this one until it is attached again.
        let profile = self
            .profiles
            .resolve(profile.unwrap_or(crate::profile::DEFAULT))?
            .reference();
        let invalid = |e: &dyn std::fmt::Display| ManagerError::InvalidImage {
            image: name.clone(),
            reason: e.to_string(),
        };
        // Pinned by its canonical path, checked component by component, and by the identity of
        // the directory the units are read from: start must run this image, not what a
        // swapped path names later. A passed image's path was resolved by the client, which
        // can see all of it.
        let (path, strict) =
            pin(&path, &opened, by_descriptor).map_err(|reason| invalid(&reason))?;
        let mut warnings = Vec::new();
        // Verity data berth cannot enforce here is said at attach, not silently ignored.
        warnings.extend(
            opened
                .partition
                .as_ref()
                .and_then(|p| p.verity_warning(&path.display().to_string())),
        );
        let mut forced_past = None;
        if let Err(unsafe_path) = strict {
            if !force {
                return Err(invalid(&format!(
                    "{unsafe_path}; attach with --force to accept that"
                )));
            }
            warnings.push(format!("{unsafe_path}; attached anyway (--force)"));
            forced_past = Some(unsafe_path.to_string());
        }
        let extensions = self.open_extensions(&name, extensions, force, &mut warnings)?;
        let ScannedImage {
            prefixes,
            units: found,
            identity,
            os,
            ..
        } = scan_image(&name, &opened.root, prefixes, &extensions)?;
        require_os_id(&name, &os)?;
        if found.is_empty() {
            return Err(invalid(&format!(
                "no unit files matching {} in {}",
                prefixes.join(", "),
                path.display()
            )));
        }
        let mut parsed = Vec::new();
        for unit in &found {
            let (config, unit_warnings) = self
                .parse_attached(&name, &profile, &unit.name, &unit.contents)
                .map_err(|reason| ManagerError::InvalidUnit {
                    unit: unit.name.clone(),
                    reason,
                })?;
            warnings.extend(unit_warnings);
            if let Some(existing) = self.units.get(&unit.name) {
                if existing.image != name && !force {
                    return Err(ManagerError::AlreadyAttached {
                        image: existing.image.clone(),
                        unit: unit.name.clone(),
                    });
                }
                if existing.is_active() {
                    return Err(ManagerError::UnitActive {
                        unit: unit.name.clone(),
                    });
                }
            }
            parsed.push((unit.name.clone(), config));
        }
        if let Some(unit) = self.active_unit_of(&name) {
            return Err(ManagerError::UnitActive { unit });
        }
        let image_users = crate::profile::uses_image_users(&profile);
        if image_users {
            warnings.extend(crate::image_users::attach_warnings(&opened.root, &parsed));
        }
        let units: Vec<String> = parsed.iter().map(|(n, _)| n.clone()).collect();
        let enabled = match self.attachments.get(&name) {
            _ if enable => crate::startup::enableable(&units),
            Some(old) => crate::startup::still_enabled(&old.enabled, &units),
            None => Vec::new(),
        };
        let record = AttachmentRecord {
            image: name.clone(),
            path: path.clone(),
            identity: Some(identity),
            by_descriptor,
            profile,
            units,
            attached_usec: now_usec(),
            prefixes: prefixes.clone(),
            extensions: extensions.iter().map(ExtensionRecord::of).collect(),
            enabled,
            ports,
        };
        let copies: Vec<UnitCopy> = found
            .iter()
            .map(|u| UnitCopy {
                name: u.name.clone(),
                contents: u.contents.clone(),
            })
            .collect();
        attachments::save(&self.paths, &record, &copies).map_err(ManagerError::internal)?;
        if let Some(old) = self.attachments.remove(&name) {
            for unit in old.units {
                self.units.remove(&unit);
                crate::lifecycle::persistence::forget(&self.paths, &unit);
            }
        }
        for (unit_name, config) in parsed {
            if let Some(other) = self.units.get(&unit_name).map(|u| u.image.clone()) {
                // --force took the unit over from another image.
                if let Some(rec) = self.attachments.get_mut(&other) {
                    rec.units.retain(|u| *u != unit_name);
                    rec.enabled.retain(|u| *u != unit_name);
                }
            }
            self.units.insert(
                unit_name.clone(),
                Unit::new(unit_name, name.clone(), config),
            );
        }
        let units = record.units.clone();
        self.attachments.insert(name.clone(), record);
        // The block now, so that status shows it; a start tries again.
        if image_users && let Err(e) = self.uid_blocks.allocate(&name) {
            warnings.push(format!("{name}: {e}; its services cannot start"));
        }
        if by_descriptor {
            let held = image::HeldImage::keep(opened, &path.to_string_lossy());
            self.held_images.insert(name.clone(), held);
        } else {
            self.held_images.remove(&name);
        }
        let held_extensions: Vec<Option<image::HeldImage>> = extensions
            .into_iter()
            .map(|e| {
                e.by_descriptor
                    .then(|| image::HeldImage::keep(e.opened, &e.path.to_string_lossy()))
            })
            .collect();
        if held_extensions.iter().any(Option::is_some) {
            self.held_extensions.insert(name.clone(), held_extensions);
        } else {
            self.held_extensions.remove(&name);
        }
        self.notify();
        crate::unit::cap_warnings(&mut warnings, MAX_ATTACH_WARNINGS, &name);
        tracing::info!(
            image = %Untrusted(&name),
            path = %Untrusted(&path.to_string_lossy()),
            units = units.len(),
            warnings = warnings.len(),
            "image attached"
        );
        if let Some(problem) = forced_past {
            tracing::warn!(
                image = %Untrusted(&name),
                problem = %Untrusted(&problem),
                "image attached past an unsafe path (--force)"
            );
        }
        Ok((name, units, warnings))
    }

    /// Resolves and opens the extensions `args` of image `name` (lowest layer first), each
    /// through the descriptor the client passed for it if any (as [`Self::locate`] opens the
    /// image), pinned and checked like the image; an unsafe path needs `force`.
    pub(crate) fn open_extensions(
        &self,
        name: &str,
        args: Vec<(String, Option<OwnedFd>)>,
        force: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Extension>, ManagerError> {
        if args.len() > MAX_EXTENSIONS {
            return Err(ManagerError::InvalidImage {
                image: name.to_string(),
                reason: format!("more than {MAX_EXTENSIONS} extensions"),
            });
        }
        let mut opened: Vec<Extension> = Vec::new();
        for (arg, fd) in args {
            let Located {
                name: ext_name,
                path,
                opened: image,
                by_descriptor,
            } = self.locate(&arg, fd)?;
            let invalid = |reason: String| ManagerError::InvalidImage {
                image: ext_name.clone(),
                reason,
            };
            if ext_name == name || opened.iter().any(|e| e.name == ext_name) {
                return Err(invalid(format!(
                    "an image named '{ext_name}' is already a layer of this attachment"
                )));
            }
            let (path, strict) = pin(&path, &image, by_descriptor).map_err(invalid)?;
            if let Err(unsafe_path) = strict {
                if !force {
                    return Err(invalid(format!(
                        "{unsafe_path}; attach with --force to accept that"
                    )));
                }
                warnings.push(format!("{unsafe_path}; attached anyway (--force)"));
            }
            opened.push(
                extension::from_opened(&ext_name, &path, image, by_descriptor, force)
                    .map_err(|e| invalid(e.to_string()))?,
            );
        }
        Ok(opened)
    }

    /// What [`Manager::detach`] checks before it changes anything: the image is attached, with
    /// these extensions.
    pub fn check_detach(&self, arg: &str, extensions: &[String]) -> Result<(), ManagerError> {
        let name = attachment_name(arg);
        if !self.attachments.contains_key(&name) {
            return Err(ManagerError::NotAttached { image: name });
        }
        self.check_extensions(&name, extensions)
    }

    /// Refuses `given` (extension arguments) unless they name the attachment's extensions, in
    /// order (portabled's rule for detach and is-attached).
    fn check_extensions(&self, name: &str, given: &[String]) -> Result<(), ManagerError> {
        let Some(record) = self.attachments.get(name) else {
            return Ok(());
        };
        let attached = record.extension_names();
        let given: Vec<String> = given.iter().map(|g| attachment_name(g)).collect();
        if attached == given {
            Ok(())
        } else {
            Err(ManagerError::ExtensionsMismatch {
                image: name.to_string(),
                attached,
                given,
            })
        }
    }

    /// Detaches an image; its units must be stopped.
    pub fn detach(
        &mut self,
        arg: &str,
        extensions: &[String],
    ) -> Result<(String, Vec<String>), ManagerError> {
        self.check_detach(arg, extensions)?;
        let name = attachment_name(arg);
        if let Some(unit) = self.active_unit_of(&name) {
            return Err(ManagerError::UnitActive { unit });
        }
        attachments::remove(&self.paths, &name).map_err(ManagerError::internal)?;
        let record = self
            .attachments
            .remove(&name)
            .ok_or(ManagerError::NotAttached {
                image: name.clone(),
            })?;
        for unit in record.units.iter().cloned().chain(self.instances_of(&name)) {
            self.units.remove(&unit);
            crate::lifecycle::persistence::forget(&self.paths, &unit);
        }
        self.held_images.remove(&name);
        self.held_extensions.remove(&name);
        self.notify();
        tracing::info!(image = %Untrusted(&name), units = record.units.len(), "image detached");
        Ok((name, record.units))
    }

    /// `detached` also when `extensions` are not the attachment's (that set of layers is not
    /// attached).
    pub fn attachment_state(&self, arg: &str, extensions: &[String]) -> &'static str {
        let name = attachment_name(arg);
        if !self.attachments.contains_key(&name)
            || self.check_extensions(&name, extensions).is_err()
        {
            "detached"
        } else if self.active_unit_of(&name).is_some() {
            "running"
        } else {
            "attached"
        }
    }
}

/// The path an image (or extension) `opened` from `path` is pinned by, with the StrictModes
/// verdict on it: a passed image's path as the client resolved it (it can see all of it),
/// checked through the descriptor; else the canonical path, checked component by component.
fn pin(
    path: &Path,
    opened: &image::OpenedImage,
    by_descriptor: bool,
) -> Result<(PathBuf, Result<(), strict_modes::StrictModesError>), String> {
    let berth_uid = rustix::process::geteuid().as_raw();
    if by_descriptor {
        let strict = strict_modes::check_passed(opened.root.fd(), path, berth_uid);
        return Ok((path.to_owned(), strict));
    }
    let path = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let strict = strict_modes::check(&path, berth_uid);
    Ok((path, strict))
}

/// The attachment an argument names: an image name, or the name of an image path.
pub fn attachment_name(arg: &str) -> String {
    if arg.starts_with('/') {
        image::image_name_from_path(Path::new(arg)).0
    } else {
        arg.to_string()
    }
}

/// What `inspect` and `attach` both read from an image.
pub(crate) struct ScannedImage {
    pub(crate) os_release: String,
    pub(crate) os: OsRelease,
    /// The prefixes that apply (the requested ones, checked against PORTABLE_PREFIXES).
    pub(crate) prefixes: Vec<String>,
    pub(crate) units: Vec<image::FoundUnit>,
    /// Which directory was read (see [`crate::image::identity`]).
    pub(crate) identity: ImageIdentity,
}

/// Reads the os-release of image `name` at `root` and finds its units matching `prefixes`
/// (all when empty, within PORTABLE_PREFIXES); every failure is the image's `InvalidImage`.
///
/// With `extensions` (lowest first), each must fit the image ([`extension::check_compatible`]),
/// their `PORTABLE_PREFIXES` extend the image's, and units are found as the overlay of all
/// layers shows them.
/// An image is attached only with `ID=` in its os-release: the field that says what it is,
/// which extensions are checked against (portabled refuses extensions and prefix checks
/// without it; berth refuses the attach outright, with or without extensions).
pub(crate) fn require_os_id(name: &str, os: &OsRelease) -> Result<(), ManagerError> {
    if os.get("ID").is_some_and(|id| !id.trim().is_empty()) {
        return Ok(());
    }
    Err(ManagerError::InvalidImage {
        image: name.to_string(),
        reason: "its os-release has no ID= (what operating system it is); refusing".into(),
    })
}

pub(crate) fn scan_image(
    name: &str,
    root: &image::ImageRoot,
    prefixes: &[String],
    extensions: &[Extension],
) -> Result<ScannedImage, ManagerError> {
    let invalid = |e: &dyn std::fmt::Display| ManagerError::InvalidImage {
        image: name.to_string(),
        reason: e.to_string(),
    };
    let os_release = root.os_release_text().map_err(|e| invalid(&e))?;
    let os = os_release::parse(&os_release);
    for ext in extensions {
        extension::check_compatible(&os, &ext.release, name, &ext.name).map_err(|e| {
            ManagerError::InvalidImage {
                image: ext.name.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    let allowed = extension::allowed_prefixes(
        std::iter::once(&os).chain(extensions.iter().map(|e| &e.release.fields)),
    );
    let prefixes =
        image::scan::check_prefixes_among(prefixes, allowed, name).map_err(|e| invalid(&e))?;
    // Top layer first.
    let layers: Vec<&image::ImageRoot> = extensions
        .iter()
        .rev()
        .map(|e| &e.opened.root)
        .chain(std::iter::once(root))
        .collect();
    let units = extension::find_units_layered(&layers, &prefixes).map_err(|e| invalid(&e))?;
    let identity = root.identity().map_err(|e| invalid(&e))?;
    Ok(ScannedImage {
        os_release,
        os,
        prefixes,
        units,
        identity,
    })
}

/// Extension images one attachment may have (the helper's bound).
pub const MAX_EXTENSIONS: usize = berth_protocol::helper::MAX_EXTENSIONS;

/// Warnings in one `Attach` reply, over all of an image's units.
const MAX_ATTACH_WARNINGS: usize = 200;

/// Parses a unit file into what berthd runs, plus its warnings, with its host drop-ins (see [`crate::drop_ins`]), applied after it in order.
/// Its sandbox starts from `profile`'s (see [`crate::profile`]).
pub fn parse_unit_with(
    name: &str,
    contents: &str,
    drop_ins: &[DropIn],
    profile: &SandboxSpec,
) -> Result<(ServiceConfig, Vec<String>), String> {
    let unit = syntax::parse(contents).map_err(|e| e.to_string())?;
    let mut files = vec![(name.to_owned(), unit)];
    for drop_in in drop_ins {
        let label = drop_in.label(name);
        let parsed = syntax::parse(&drop_in.contents).map_err(|e| format!("{label}: {e}"))?;
        files.push((label, parsed));
    }
    let files: Vec<(&str, &syntax::UnitFile)> = files
        .iter()
        .map(|(label, unit)| (label.as_str(), unit))
        .collect();
    let mut config =
        unit::from_unit_files_over(name, &files, profile).map_err(|e| e.to_string())?;
    // Reported once, at attach: the running unit has no use for them.
    let warnings = std::mem::take(&mut config.warnings);
    Ok((config, warnings))
}
