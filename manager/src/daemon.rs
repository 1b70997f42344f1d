//! berthd's in-memory state and the image/attachment operations.
//!
//! The daemon runs on one thread (zlink's server loop is not `Send`), so the state is shared as
//! `Rc<RefCell<Manager>>`; a borrow is never held across an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use berth_logging::Untrusted;
use berth_protocol::manager::{Image, ImageDetails, ManagerError, UnitFile, UnitStatus};
use berth_protocol::supervisor::{ExitStatus, SupervisorRequest};
use tokio::sync::{mpsc, watch};

use crate::attachments::{self, AttachmentRecord, ExtensionRecord, UnitCopy};
use crate::drop_ins::{self, DropIn};
use crate::dynamic_user::DynamicUsers;
use crate::extension::{self, Extension};
use crate::image::identity::ImageIdentity;
use crate::image::kind::tar::TarLimits;
use crate::image::os_release::{self, OsRelease};
use crate::image::pool::{self, SearchPath};
use crate::image::strict_modes;
use crate::image::{self, ImageSource, store};
use crate::paths::Paths;
use crate::service_config::{self, ServiceConfig, ServiceType};
use crate::unit_file;

/// The profile every attachment gets for now, with its level (DESIGN.md §5).
pub const DEFAULT_PROFILE: &str = "default@1";

pub type Shared = Rc<RefCell<Manager>>;

/// Lifecycle state of a unit, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Exited,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Stopped => "stopped",
            UnitState::Starting => "starting",
            UnitState::Running => "running",
            UnitState::Stopping => "stopping",
            UnitState::Exited => "exited",
            UnitState::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            UnitState::Starting | UnitState::Running | UnitState::Stopping
        )
    }
}

/// An attached unit and what berthd knows of its current run.
#[derive(Debug)]
pub struct Unit {
    pub name: String,
    pub image: String,
    pub config: ServiceConfig,
    pub state: UnitState,
    pub main_pid: Option<u32>,
    pub uid: Option<u32>,
    pub exit: Option<ExitStatus>,
    pub since_usec: u64,
    pub failure: Option<String>,
    pub stop_requested: bool,
    /// Requests to the supervisor of the current run; `None` when no supervisor is linked.
    pub link: Option<mpsc::UnboundedSender<SupervisorRequest>>,
}

impl Unit {
    pub(crate) fn new(name: String, image: String, config: ServiceConfig) -> Unit {
        Unit {
            name,
            image,
            config,
            state: UnitState::Stopped,
            main_pid: None,
            uid: None,
            exit: None,
            since_usec: now_usec(),
            failure: None,
            stop_requested: false,
            link: None,
        }
    }

    /// Moves to `state` and logs the change; set the pid, exit and failure first, so the line
    /// carries them.
    pub fn set_state(&mut self, state: UnitState) {
        let from = self.state;
        self.state = state;
        self.since_usec = now_usec();
        // An exit belongs to the run that ended: shown once the unit is no longer active.
        let exit = (!state.is_active()).then_some(self.exit).flatten();
        let (exit_code, exit_signal) = (exit.and_then(|e| e.code), exit.and_then(|e| e.signal));
        let failure = self.failure.as_deref().map(Untrusted);
        macro_rules! log_change {
            ($level:ident) => {
                tracing::$level!(
                    unit = %Untrusted(&self.name),
                    from = %from.as_str(),
                    state = %state.as_str(),
                    pid = self.main_pid,
                    uid = self.uid,
                    exit_code,
                    exit_signal,
                    failure = failure.as_ref().map(tracing::field::display),
                    "unit {}",
                    state.as_str()
                )
            };
        }
        if state == UnitState::Failed {
            log_change!(warn);
        } else {
            log_change!(info);
        }
    }
}

pub struct Manager {
    pub paths: Paths,
    pub attachments: BTreeMap<String, AttachmentRecord>,
    pub units: BTreeMap<String, Unit>,
    pub users: DynamicUsers,
    /// Bumped on every state change; waiters watch it.
    pub changed: watch::Sender<u64>,
    /// The groups whose members may change things or read logs besides root.
    pub groups: crate::api::Groups,
    /// The connection to berth-helper, kept between spawns.
    pub helper_client: Option<berth_varlink::client::Client>,
    /// A service's `current.log` is moved aside past this size.
    pub log_max_bytes: u64,
    /// The root of each image attached by descriptor, by attachment: what its units start
    /// from while berthd runs (see [`crate::image_descriptor`]).
    pub held_images: BTreeMap<String, image::HeldImage>,
    /// The extensions of each attachment as [`Self::held_images`] keeps an image, one entry
    /// per extension in order (`None`: opened by path); no entry when none was passed.
    pub held_extensions: BTreeMap<String, Vec<Option<image::HeldImage>>>,
    /// Where images are found by name.
    pub search: SearchPath,
    /// The bounds of one tarball import (berthd.toml `tarball_*`).
    pub tar_limits: TarLimits,
}

/// An image found for `inspect` or `attach`, opened.
struct Located {
    name: String,
    /// The path it is known by: the pool's, or the one the client named.
    path: PathBuf,
    opened: image::OpenedImage,
    /// Passed in by the client as a descriptor.
    by_descriptor: bool,
}

impl Manager {
    /// Loads the attachments from disk. Broken ones are logged and skipped.
    pub fn load(paths: Paths, users: DynamicUsers, groups: crate::api::Groups) -> Manager {
        let (changed, _) = watch::channel(0);
        image::mount::set_helper_socket(paths.helper_socket());
        let mut manager = Manager {
            tar_limits: TarLimits::default(),
            search: SearchPath::new(
                paths.images_dir(),
                &crate::config::Config::default().image_search_dirs,
            ),
            paths,
            attachments: BTreeMap::new(),
            units: BTreeMap::new(),
            users,
            changed,
            groups,
            helper_client: None,
            log_max_bytes: crate::config::LOG_MAX_BYTES,
            held_images: BTreeMap::new(),
            held_extensions: BTreeMap::new(),
        };
        let (loaded, errors) = attachments::load_all(&manager.paths);
        for e in errors {
            tracing::warn!(error = %e, "skipping attachment");
        }
        for (record, copies) in loaded {
            for copy in &copies {
                match manager.parse_attached(&record.image, &copy.name, &copy.contents) {
                    Ok((config, _)) => {
                        let unit = Unit::new(copy.name.clone(), record.image.clone(), config);
                        manager.units.insert(copy.name.clone(), unit);
                    }
                    Err(e) => {
                        tracing::warn!(unit = %Untrusted(&copy.name), error = %e, "skipping unit");
                    }
                }
            }
            manager.attachments.insert(record.image.clone(), record);
        }
        manager
    }

    /// Parses unit `unit` of image `image` (its file is `contents`) with the host drop-ins
    /// its attachment holds (see [`drop_ins`]), which attaching it again keeps.
    pub fn parse_attached(
        &self,
        image: &str,
        unit: &str,
        contents: &str,
    ) -> Result<(ServiceConfig, Vec<String>), String> {
        let drop_ins = drop_ins::read_all(&self.paths, image, unit).map_err(|e| e.to_string())?;
        parse_unit_with(unit, contents, &drop_ins)
    }

    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Canonical unit name: `hello` means `hello.service`.
    pub fn unit(&self, arg: &str) -> Result<&Unit, ManagerError> {
        let name = berth_protocol::manager::unit_name(arg);
        self.units
            .get(&name)
            .ok_or(ManagerError::NoSuchUnit { unit: name })
    }

    pub fn unit_mut(&mut self, arg: &str) -> Result<&mut Unit, ManagerError> {
        let name = berth_protocol::manager::unit_name(arg);
        self.units
            .get_mut(&name)
            .ok_or(ManagerError::NoSuchUnit { unit: name })
    }

    pub fn status(&self, unit: &Unit) -> UnitStatus {
        let profile = self
            .attachments
            .get(&unit.image)
            .map_or_else(|| DEFAULT_PROFILE.to_string(), |a| a.profile.clone());
        UnitStatus {
            unit: unit.name.clone(),
            image: unit.image.clone(),
            state: unit.state.as_str().to_string(),
            main_pid: unit
                .main_pid
                .filter(|_| unit.state.is_active())
                .map(i64::from),
            uid: unit.uid.filter(|_| unit.state.is_active()).map(i64::from),
            profile,
            description: unit.config.description.clone(),
            service_type: unit.config.service_type.as_str().to_string(),
            exit_code: unit.exit.and_then(|e| e.code).map(i64::from),
            exit_signal: unit.exit.and_then(|e| e.signal).map(i64::from),
            since_usec: i64::try_from(unit.since_usec).ok(),
            failure: unit.failure.clone(),
        }
    }

    pub fn list(&self) -> Vec<UnitStatus> {
        self.units.values().map(|u| self.status(u)).collect()
    }

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
    fn locate(&self, arg: &str, fd: Option<OwnedFd>) -> Result<Located, ManagerError> {
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

    /// The listing entry of an image; `os` is its os-release when the caller has it already.
    pub fn image_entry(&self, name: &str, path: &Path, os: Option<&OsRelease>) -> Image {
        let (_, version) = image::image_name_from_path(path);
        let read = || match self.held_images.get(name) {
            Some(held) => held.os_release(),
            None => image::open(ImageSource::Path(path))
                .ok()?
                .root
                .os_release()
                .ok(),
        };
        let pretty = |os: &OsRelease| {
            os.portable_pretty_name()
                .or_else(|| os.pretty_name())
                .map(str::to_string)
        };
        let pretty_name = match os {
            Some(os) => pretty(os),
            None => read().as_ref().and_then(pretty),
        };
        let (size, mtime_usec) = store::usage(path);
        // An image attached by descriptor may be at a path berthd cannot read.
        let format = match self.held_images.get(name) {
            Some(held) => Some(held.format().clone()),
            None => image::format_of(path),
        };
        Image {
            name: name.to_string(),
            path: path.display().to_string(),
            kind: format.map_or("unknown", |f| f.image_type()).into(),
            version,
            pretty_name,
            state: self.image_state(name, path).into(),
            read_only: store::is_read_only(path),
            size: size.and_then(|s| i64::try_from(s).ok()),
            mtime_usec,
        }
    }

    pub fn list_images(&self) -> Vec<Image> {
        let mut images: BTreeMap<String, Image> = BTreeMap::new();
        for found in self.search.list() {
            images
                .entry(found.name.clone())
                .or_insert_with(|| self.image_entry(&found.name, &found.path, None));
        }
        for record in self.attachments.values() {
            images
                .entry(record.image.clone())
                .or_insert_with(|| self.image_entry(&record.image, &record.path, None));
        }
        images.into_values().collect()
    }

    /// The pool image `arg` names, for changing it: it must be in `STATE/images` and not
    /// attached.
    fn changeable_image(&self, arg: &str) -> Result<(String, PathBuf), ManagerError> {
        let (name, path) = self.resolve_image(arg)?;
        if !self.search.is_in_pool(&path) {
            return Err(ManagerError::NotInPool {
                image: name,
                path: path.display().to_string(),
            });
        }
        Ok((name, path))
    }

    /// Checks that image `arg` may be removed, and says which path that removes.
    pub fn removable_image(&self, arg: &str) -> Result<(Image, PathBuf), ManagerError> {
        let (name, path) = self.changeable_image(arg)?;
        let state = self.image_state(&name, &path);
        if state != "detached" {
            return Err(ManagerError::ImageInUse {
                image: name,
                state: state.into(),
            });
        }
        if store::is_read_only(&path) {
            return Err(ManagerError::ImageReadOnly { image: name });
        }
        Ok((self.image_entry(&name, &path, None), path))
    }

    /// `image read-only IMAGE BOOL`.
    pub fn mark_read_only(&self, arg: &str, read_only: bool) -> Result<Image, ManagerError> {
        let (name, path) = self.changeable_image(arg)?;
        store::set_read_only(&path, read_only).map_err(ManagerError::internal)?;
        tracing::info!(image = %Untrusted(&name), read_only, "image marked");
        Ok(self.image_entry(&name, &path, None))
    }

    /// What an import of `source` (a file name) as `name` stores: the file name in the pool.
    pub fn import_file_name(
        &self,
        source: &str,
        name: Option<&str>,
        format: &image::Format,
    ) -> Result<String, ManagerError> {
        let invalid = |reason: String| ManagerError::InvalidImage {
            image: source.to_string(),
            reason,
        };
        // A tarball becomes a directory image: `foo_1.2.tar.gz` is `foo_1.2/`.
        let tarball = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
            .iter()
            .find_map(|suffix| source.strip_suffix(suffix));
        let stem_source = tarball.unwrap_or(source);
        let (source_name, version) = image::image_name_from_path(Path::new(stem_source));
        let name = name.unwrap_or(&source_name);
        image::validate_image_name(name).map_err(|e| invalid(e.to_string()))?;
        let suffix = match format {
            image::Format::Directory
            | image::Format::Tar
            | image::Format::Gzip
            | image::Format::Zstd => "",
            image::Format::Squashfs
            | image::Format::Erofs
            | image::Format::Ext4
            | image::Format::Gpt => ".raw",
            other => {
                return Err(invalid(format!("unsupported image format: {other}")));
            }
        };
        let stem = match version {
            Some(version) => format!("{name}_{version}"),
            None => name.to_string(),
        };
        let file_name = format!("{stem}{suffix}");
        // The version comes from the caller: the whole file name must stay one plain name.
        berth_protocol::names::check_image_name(&stem).map_err(|e| invalid(e.to_string()))?;
        Ok(file_name)
    }

    /// `fd`: the image, opened by the client (see [`Self::locate`]).
    pub fn inspect_image(
        &self,
        arg: &str,
        fd: Option<OwnedFd>,
        prefixes: &[String],
        cat: bool,
    ) -> Result<ImageDetails, ManagerError> {
        let Located {
            name, path, opened, ..
        } = self.locate(arg, fd)?;
        let ScannedImage {
            os_release,
            os,
            units,
            ..
        } = scan_image(&name, &opened.root, prefixes, &[])?;
        let partition = opened.partition.as_ref();
        Ok(ImageDetails {
            partition: partition.map(|p| p.details()),
            verity: partition.and_then(|p| p.verity()),
            image: self.image_entry(&name, &path, Some(&os)),
            os_release: cat.then_some(os_release),
            os_pretty_name: os.pretty_name().map(str::to_string),
            portable_prefixes: os.portable_prefixes(),
            units: units
                .into_iter()
                .scan(MAX_CAT_BYTES, |budget, u| {
                    let contents = cat.then(|| shown_contents(u.contents, budget));
                    Some(UnitFile {
                        name: u.name,
                        path: u.path_in_image,
                        contents,
                    })
                })
                .collect(),
        })
    }

    /// Attaches the matching units of an image: copies them into `STATE/attached/<image>/`.
    /// `fd`: the image, opened by the client (see [`Self::locate`]); berthd keeps it.
    /// `extensions`: each with the descriptor the client passed for it, if any (same rules).
    pub fn attach(
        &mut self,
        arg: &str,
        fd: Option<OwnedFd>,
        prefixes: &[String],
        profile: Option<&str>,
        force: bool,
        extensions: Vec<(String, Option<OwnedFd>)>,
    ) -> Result<(String, Vec<String>, Vec<String>), ManagerError> {
        let Located {
            name,
            path,
            opened,
            by_descriptor,
        } = self.locate(arg, fd)?;
        let profile = match profile {
            None | Some("default") | Some(DEFAULT_PROFILE) => DEFAULT_PROFILE.to_string(),
            Some(other) => {
                return Err(ManagerError::InvalidImage {
                    image: name,
                    reason: format!("profile '{other}' is not available yet (only 'default')"),
                });
            }
        };
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
                .parse_attached(&name, &unit.name, &unit.contents)
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
                if existing.state.is_active() {
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
        let record = AttachmentRecord {
            image: name.clone(),
            path: path.clone(),
            identity: Some(identity),
            by_descriptor,
            profile,
            units: parsed.iter().map(|(n, _)| n.clone()).collect(),
            attached_usec: now_usec(),
            prefixes: prefixes.clone(),
            extensions: extensions.iter().map(ExtensionRecord::of).collect(),
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
            }
        }
        for (unit_name, config) in parsed {
            if let Some(other) = self.units.get(&unit_name).map(|u| u.image.clone()) {
                // --force took the unit over from another image.
                if let Some(rec) = self.attachments.get_mut(&other) {
                    rec.units.retain(|u| *u != unit_name);
                }
            }
            self.units.insert(
                unit_name.clone(),
                Unit::new(unit_name, name.clone(), config),
            );
        }
        let units = record.units.clone();
        self.attachments.insert(name.clone(), record);
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
        crate::service_config::cap_warnings(&mut warnings, MAX_ATTACH_WARNINGS, &name);
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
        for unit in &record.units {
            self.units.remove(unit);
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

    /// What `image list` shows of image `name` at `path`: `running` or `attached` when it is
    /// attached, or is an extension of an attachment (whichever extension list), else
    /// `detached`.
    pub fn image_state(&self, name: &str, path: &Path) -> &'static str {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let users: Vec<&AttachmentRecord> = self
            .attachments
            .values()
            .filter(|r| r.image == name || r.extensions.iter().any(|e| e.path == path))
            .collect();
        if users.is_empty() {
            "detached"
        } else if users
            .iter()
            .any(|r| self.active_unit_of(&r.image).is_some())
        {
            "running"
        } else {
            "attached"
        }
    }

    /// The units attached from image `name`.
    pub fn units_of(&self, name: &str) -> Vec<String> {
        self.attachments
            .get(name)
            .map_or_else(Vec::new, |r| r.units.clone())
    }

    /// One unit of image `name` that is starting, running or stopping, if any.
    fn active_unit_of(&self, name: &str) -> Option<String> {
        self.units_of(name)
            .into_iter()
            .find(|u| self.units.get(u).is_some_and(|u| u.state.is_active()))
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

/// Unit file bytes one `InspectImage --cat` reply shows. Inspecting pool images is open to
/// every user, and an image may hold 16 MiB of unit files: the reply stays well within what a
/// slow reader's connection may have queued.
pub const MAX_CAT_BYTES: usize = 256 * 1024;

/// `contents` if it fits in what is left of `budget`, else a line saying it was left out.
pub fn shown_contents(contents: String, budget: &mut usize) -> String {
    if contents.len() <= *budget {
        *budget -= contents.len();
        return contents;
    }
    *budget = 0;
    format!(
        "# berth: {} bytes not shown; --cat shows at most {MAX_CAT_BYTES} bytes per image\n",
        contents.len()
    )
}

/// Extension images one attachment may have (the helper's bound).
pub const MAX_EXTENSIONS: usize = berth_protocol::helper::MAX_EXTENSIONS;

/// Warnings in one `Attach` reply, over all of an image's units.
const MAX_ATTACH_WARNINGS: usize = 200;

/// Parses a unit file into what berthd runs, plus its warnings, with its host drop-ins (see [`drop_ins`]), applied after it in order.
pub fn parse_unit_with(
    name: &str,
    contents: &str,
    drop_ins: &[DropIn],
) -> Result<(ServiceConfig, Vec<String>), String> {
    let unit = unit_file::parse(contents).map_err(|e| e.to_string())?;
    let mut files = vec![(name.to_owned(), unit)];
    for drop_in in drop_ins {
        let label = drop_in.label(name);
        let parsed = unit_file::parse(&drop_in.contents).map_err(|e| format!("{label}: {e}"))?;
        files.push((label, parsed));
    }
    let files: Vec<(&str, &unit_file::UnitFile)> = files
        .iter()
        .map(|(label, unit)| (label.as_str(), unit))
        .collect();
    let mut config = service_config::from_unit_files(name, &files).map_err(|e| e.to_string())?;
    // Reported once, at attach: the running unit has no use for them.
    let warnings = std::mem::take(&mut config.warnings);
    Ok((config, warnings))
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Exec => "exec",
            ServiceType::Oneshot => "oneshot",
        }
    }
}

pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_shows_files_while_the_budget_lasts() {
        let mut budget = 10;

        let first = shown_contents("12345".into(), &mut budget);
        let second = shown_contents("1234567".into(), &mut budget);
        let third = shown_contents("1".into(), &mut budget);

        assert_eq!(first, "12345");
        assert!(second.starts_with("# berth: 7 bytes not shown"), "{second}");
        assert!(third.starts_with("# berth: 1 bytes not shown"), "{third}");
    }
}
