//! berthd's in-memory state: the `Manager` and its units.
//!
//! Its operations are split by subject into further `impl Manager` blocks: [`crate::attach`],
//! [`crate::image_catalog`], [`crate::drop_ins`], [`crate::reattach`], [`crate::import`].
//!
//! The daemon runs on one thread (zlink's server loop is not `Send`), so the state is shared as
//! `Rc<RefCell<Manager>>`; a borrow is never held across an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use berth_logging::Untrusted;
use berth_protocol::manager::{ManagerError, UnitStatus};
use berth_protocol::sandbox::SandboxSpec;
use tokio::sync::watch;

use crate::attach::parse_unit_with;
use crate::attachments::{self, AttachmentRecord};
use crate::dynamic_user::DynamicUsers;
use crate::image;
use crate::image::kind::tar::TarLimits;
use crate::image::pool::SearchPath;
use crate::paths::Paths;
use crate::unit::ServiceConfig;
use crate::unit_state::Unit;

/// The profile shown for a unit whose attachment record is missing (never in a running berthd).
pub const DEFAULT_PROFILE: &str = "default@1";

pub type Shared = Rc<RefCell<Manager>>;

pub struct Manager {
    pub paths: Paths,
    pub attachments: BTreeMap<String, AttachmentRecord>,
    pub units: BTreeMap<String, Unit>,
    pub users: DynamicUsers,
    /// The images' blocks of host uids (profiles from level 3: the image's own users).
    pub uid_blocks: crate::uid_blocks::UidBlocks,
    /// Bumped on every state change; waiters watch it.
    pub changed: watch::Sender<u64>,
    /// The `Monitor` streams, told every change.
    pub monitors: crate::monitor::Monitors,
    /// The groups whose members may change things or read logs besides root.
    pub groups: crate::api::Groups,
    /// The connection to berth-helper, kept between spawns.
    pub helper_client: Option<berth_varlink::client::Client>,
    /// A service's `current.log` is moved aside past this size.
    pub log_max_bytes: u64,
    /// Services' output goes to the host's journal too (berthd.toml `forward_to_journal`).
    pub forward_to_journal: bool,
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
    /// The built-in profiles and the admin's directory (berthd.toml `profiles_dir`) over them.
    pub profiles: crate::profile::Profiles,
    /// The copies of the host's resolv.conf and hosts the services see (`None`: none could be
    /// made, and services get the image's own).
    pub host_files: Option<crate::host_files::HostFiles>,
}

impl Manager {
    /// Loads the attachments from disk, their units parsed over `profiles` (the admin's
    /// directory over the built-in ones). Broken ones are logged and skipped.
    pub fn load(
        paths: Paths,
        users: DynamicUsers,
        uid_blocks: crate::uid_blocks::UidBlocks,
        groups: crate::api::Groups,
        profiles: crate::profile::Profiles,
    ) -> Manager {
        let (changed, _) = watch::channel(0);
        image::mount::set_helper_socket(paths.helper_socket());
        let mut manager = Manager {
            tar_limits: TarLimits::default(),
            profiles,
            search: SearchPath::new(
                paths.images_dir(),
                &crate::config::Config::default().image_search_dirs,
            ),
            paths,
            attachments: BTreeMap::new(),
            units: BTreeMap::new(),
            users,
            uid_blocks,
            changed,
            monitors: crate::monitor::Monitors::default(),
            groups,
            helper_client: None,
            log_max_bytes: crate::config::LOG_MAX_BYTES,
            forward_to_journal: false,
            held_images: BTreeMap::new(),
            held_extensions: BTreeMap::new(),
            host_files: None,
        };
        let (loaded, errors) = attachments::load_all(&manager.paths);
        for e in errors {
            tracing::warn!(error = %e, "skipping attachment");
        }
        for (record, copies) in loaded {
            for copy in &copies {
                let parsed = manager.parse_attached(
                    &record.image,
                    &record.profile,
                    &copy.name,
                    &copy.contents,
                );
                match parsed {
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
        manager.remake_running_instances();
        manager
    }

    /// Parses unit `unit` of image `image` (its file is `contents`) over the sandbox of its
    /// profile (`profile`, as the attachment records it: `default@1`) with the host drop-ins
    /// its attachment holds (see [`drop_ins`]), which attaching it again keeps.
    pub fn parse_attached(
        &self,
        image: &str,
        profile: &str,
        unit: &str,
        contents: &str,
    ) -> Result<(ServiceConfig, Vec<String>), String> {
        let drop_ins = crate::unit_instances::unit_drop_ins(&self.paths, image, unit)
            .map_err(|e| e.to_string())?;
        let (base, mut warnings) = self.profile_sandbox(profile, unit)?;
        let (config, more) = parse_unit_with(unit, contents, &drop_ins, &base)?;
        warnings.extend(more);
        Ok((config, warnings))
    }

    /// The sandbox profile `profile` (`default@1`) gives `unit`, with a warning for each of
    /// its lines that had no effect.
    pub fn profile_sandbox(
        &self,
        profile: &str,
        unit: &str,
    ) -> Result<(SandboxSpec, Vec<String>), String> {
        let profile = self.profiles.resolve(profile).map_err(|e| e.to_string())?;
        profile.spec(unit).map_err(|e| e.to_string())
    }

    /// Whether `unit` runs as its image's own users in the attachment's uid block: its profile
    /// is of level 3 or more and it is not `DynamicUser=yes` (else a dynamic uid, as before).
    pub fn runs_as_image_users(&self, unit: &Unit) -> bool {
        !unit.config.identity.dynamic_user
            && self
                .attachments
                .get(&unit.image)
                .is_some_and(|a| crate::profile::uses_image_users(&a.profile))
    }

    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        self.monitors.observe(|| self.list_without_usage());
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
        self.status_of(unit, true)
    }

    /// [`Self::status`], reading the cgroup's accounting files only `with_usage` (`Monitor`
    /// compares every unit on every change and needs none of it).
    fn status_of(&self, unit: &Unit, with_usage: bool) -> UnitStatus {
        let attachment = self.attachments.get(&unit.image);
        let profile = attachment.map_or_else(|| DEFAULT_PROFILE.to_string(), |a| a.profile.clone());
        let ports = attachment
            .filter(|a| !a.ports.is_empty())
            .map(|a| a.ports.iter().copied().map(i64::from).collect());
        let usage = unit
            .lifecycle()
            .main_pid()
            .filter(|_| with_usage)
            .and_then(|pid| {
                crate::lifecycle::accounting::read(pid, &unit.config.sandbox.resources)
            });
        let number = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok());
        let image_users = self.runs_as_image_users(unit);
        let mut status = UnitStatus {
            unit: unit.name.clone(),
            image: unit.image.clone(),
            state: unit.state().as_str().to_string(),
            main_pid: unit.lifecycle().main_pid().map(i64::from),
            uid: unit
                .uid
                .or(unit.run_user.as_ref().map(|r| r.uid))
                .filter(|_| unit.is_active())
                .map(i64::from),
            profile,
            description: unit.config.description.clone(),
            service_type: unit.config.service_type.as_str().to_string(),
            exit_code: unit.lifecycle().exit().and_then(|e| e.code).map(i64::from),
            exit_signal: unit
                .lifecycle()
                .exit()
                .and_then(|e| e.signal)
                .map(i64::from),
            since_usec: i64::try_from(unit.lifecycle().since_usec()).ok(),
            failure: unit.lifecycle().failure().map(str::to_owned),
            result: unit.lifecycle().result().map(|r| r.as_str().to_owned()),
            status_text: unit.lifecycle().status_text().map(str::to_owned),
            restarts: i64::try_from(unit.lifecycle().restarts()).ok(),
            enabled: Some(self.is_enabled(unit)),
            cpu_usec: number(usage.as_ref().and_then(|u| u.cpu_usec)),
            memory_current: number(usage.as_ref().and_then(|u| u.memory_current)),
            memory_peak: number(usage.as_ref().and_then(|u| u.memory_peak)),
            tasks: number(usage.as_ref().and_then(|u| u.tasks)),
            log_dropped: unit.log_dropped.and_then(|n| i64::try_from(n).ok()),
            resource_notes: usage.map(|u| u.notes),
            user: image_users.then(|| match &unit.run_user {
                Some(run) => run.name.clone(),
                None => unit
                    .config
                    .identity
                    .user
                    .clone()
                    .unwrap_or_else(|| "root".to_owned()),
            }),
            uid_block: image_users
                .then(|| self.uid_blocks.get(&unit.image))
                .flatten(),
            // The block's, below.
            var_path: None,
            ports,
        };
        status.var_path =
            crate::var_state::status_path(&self.paths, &unit.image, &unit.name, status.uid_block);
        status
    }

    pub fn list(&self) -> Vec<UnitStatus> {
        self.listed().map(|u| self.status(u)).collect()
    }

    /// [`Self::list`] without the accounting (see [`Self::status_of`]).
    pub fn list_without_usage(&self) -> Vec<UnitStatus> {
        self.listed().map(|u| self.status_of(u, false)).collect()
    }

    /// The units `list` shows.
    fn listed(&self) -> impl Iterator<Item = &Unit> {
        self.units.values().filter(|u| !self.is_idle_instance(u))
    }

    /// The units attached from image `name`, and the instances made of its templates.
    pub fn units_of(&self, name: &str) -> Vec<String> {
        let mut units = self
            .attachments
            .get(name)
            .map_or_else(Vec::new, |r| r.units.clone());
        units.extend(self.instances_of(name));
        units
    }

    /// One unit of image `name` that is starting, running or stopping, if any.
    pub(crate) fn active_unit_of(&self, name: &str) -> Option<String> {
        self.units_of(name)
            .into_iter()
            .find(|u| self.units.get(u).is_some_and(|u| u.is_active()))
    }
}
