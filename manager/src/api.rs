//! `io.berth.Manager`: authorization and dispatch of each call.
//!
//! Authorization is in-process (DESIGN.md §1): reading state is open to every local user; logs
//! only to root, the admin group and the log group (as journald's readers); anything that
//! changes state needs root or membership in the admin group. Group membership is the peer's
//! primary and supplementary groups as the kernel recorded them at connect time
//! (SO_PEERCRED, SO_PEERGROUPS): unlike `/proc/PID/status`, they cannot be swapped by a
//! process that exits and leaves its pid to another.

use berth_protocol::manager::{
    self, AttachParams, AttachReply, DetachParams, DetachReply, ImageParams, ImageReply,
    ImagesReply, ImportImageParams, InspectImageParams, InspectImageReply, IsAttachedReply,
    ListReply, LogsParams, LogsReply, ManagerError, ReadOnlyParams, ReattachParams, ReattachReply,
    StatusReply, UnitParams,
};
use berth_protocol::names;
use berth_varlink::service::{
    CallContext, Interface, Outcome, Peer, invalid_parameter, parse_params, shown_name,
    stream_error, stream_item, varlink_error,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::os::fd::OwnedFd;

use berth_logging::Untrusted;

use crate::attach::attachment_name;
use crate::daemon::Shared;
use crate::image::store;
use crate::{import, lifecycle, logs};

/// Most units in one `List` reply without `more`.
const MAX_LIST_REPLY_UNITS: usize = 1000;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every local user.
    Read,
    /// Root, the admin group and the log group.
    Logs,
    /// Root and the admin group.
    Change,
}

/// Every method of `io.berth.Manager`, with who may call it.
const METHODS: &[(&str, Access)] = &[
    ("ListImages", Access::Read),
    ("InspectImage", Access::Read),
    ("IsAttached", Access::Read),
    ("List", Access::Read),
    ("Status", Access::Read),
    ("Logs", Access::Logs),
    // States are open to every local user, as `List` is.
    ("Monitor", Access::Read),
    ("ImportImage", Access::Change),
    ("RemoveImage", Access::Change),
    ("MarkImageReadOnly", Access::Change),
    ("Attach", Access::Change),
    ("Detach", Access::Change),
    ("Reattach", Access::Change),
    ("Start", Access::Change),
    ("Stop", Access::Change),
    ("Restart", Access::Change),
    ("Enable", Access::Change),
    ("Disable", Access::Change),
    ("Reload", Access::Change),
    ("Kill", Access::Change),
    ("ResetFailed", Access::Change),
    // Unit files and drop-ins are not secret, as with `systemctl cat` (see unit_edit.rs).
    ("Cat", Access::Read),
    ("SetProperty", Access::Change),
    ("WriteDropIn", Access::Change),
    // Profiles and the exposure of a unit's sandbox are not secret: the built-in ones ship
    // with berth, and an admin's are in a world-readable directory.
    ("ListProfiles", Access::Read),
    ("ShowProfile", Access::Read),
    ("Security", Access::Read),
];

/// The groups whose members have more than read access, as gids of the host (`None`: no such
/// group on the host, so no one is a member).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    pub admin: Option<u32>,
    pub log: Option<u32>,
}

impl Groups {
    /// Whether `peer` may do what needs `access`.
    pub fn allows(&self, access: Access, peer: Option<&Peer>) -> bool {
        let Some(peer) = peer else {
            // Credentials that cannot be read are no one's.
            return access == Access::Read;
        };
        let member =
            |gid: Option<u32>| gid.is_some_and(|gid| peer.gid == gid || peer.groups.contains(&gid));
        let admin = peer.uid == 0 || member(self.admin);
        match access {
            Access::Read => true,
            Access::Logs => admin || member(self.log),
            Access::Change => admin,
        }
    }
}

pub struct ManagerInterface {
    shared: Shared,
    description: String,
}

impl ManagerInterface {
    pub fn new(shared: Shared) -> Self {
        ManagerInterface {
            shared,
            description: manager::description(),
        }
    }

    /// The one place a call is refused: `what` (a method, or a use of one) needs `access`.
    fn authorize(
        &self,
        access: Access,
        what: &str,
        peer: Option<&Peer>,
    ) -> Result<(), ManagerError> {
        if self.shared.borrow().groups.allows(access, peer) {
            return Ok(());
        }
        Err(ManagerError::PermissionDenied {
            method: what.to_string(),
        })
    }
}

/// `org.varlink.service.MethodNotFound` for `method` of this interface.
fn method_not_found(method: &str) -> Outcome {
    let shown = shown_name(method);
    Outcome::Error(varlink_error(
        "MethodNotFound",
        json!({ "method": format!("{}.{shown}", manager::INTERFACE) }),
    ))
}

/// Most prefixes one `Attach` takes: each is matched against every unit of the image.
const MAX_PREFIXES: usize = 64;

/// Parameters checked before berthd does anything with them: every name is checked for length
/// and characters before a lookup or an allocation that grows with it, and unit names are
/// made canonical (`hello` is `hello.service`).
trait Checked {
    /// The parameter that is refused, if any.
    fn check(&mut self) -> Result<(), &'static str>;
}

/// `name` checked by `check`; a refusal names `parameter` and none of the value.
fn name_of(
    parameter: &'static str,
    check: Result<(), names::NameError>,
) -> Result<(), &'static str> {
    check.map_err(|_| parameter)
}

fn unit_of(unit: &mut String) -> Result<(), &'static str> {
    *unit = names::checked_unit_name(unit).map_err(|_| "unit")?;
    Ok(())
}

impl Checked for manager::Empty {
    fn check(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl Checked for InspectImageParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))?;
        check_prefixes(self.prefixes.as_deref().unwrap_or_default())
    }
}

impl Checked for ImportImageParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("source", names::check_image_name(&self.source))?;
        if let Some(name) = &self.name {
            name_of("name", names::check_image_name(name))?;
        }
        Ok(())
    }
}

impl Checked for ReadOnlyParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))
    }
}

/// Extension arguments: images (names or paths), at most as many as an attachment may have.
fn extensions_of(extensions: &Option<Vec<String>>) -> Result<(), &'static str> {
    let extensions = extensions.as_deref().unwrap_or_default();
    if extensions.len() > crate::attach::MAX_EXTENSIONS {
        return Err("extensions");
    }
    for extension in extensions {
        name_of("extensions", names::check_image_arg(extension))?;
    }
    Ok(())
}

fn check_prefixes(prefixes: &[String]) -> Result<(), &'static str> {
    if prefixes.len() > MAX_PREFIXES {
        return Err("prefixes");
    }
    for prefix in prefixes {
        name_of("prefixes", names::check_unit_prefix(prefix))?;
    }
    Ok(())
}

impl Checked for ImageParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))?;
        extensions_of(&self.extensions)
    }
}

impl Checked for DetachParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))?;
        extensions_of(&self.extensions)
    }
}

impl Checked for ReattachParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))
    }
}

impl Checked for AttachParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("image", names::check_image_arg(&self.image))?;
        if let Some(profile) = &self.profile {
            name_of("profile", names::check_profile_name(profile))?;
        }
        check_prefixes(self.prefixes.as_deref().unwrap_or_default())?;
        extensions_of(&self.extensions)?;
        ports_of(self.ports.as_deref().unwrap_or_default()).map(drop)
    }
}

/// `Attach`'s ports: each a privileged port (1 to 1023), at most as many as a sandbox takes.
fn ports_of(ports: &[i64]) -> Result<Vec<u16>, &'static str> {
    if ports.len() > berth_protocol::sandbox::MAX_ENTRIES {
        return Err("ports");
    }
    ports
        .iter()
        .map(|p| u16::try_from(*p).ok().filter(|p| (1..1024).contains(p)))
        .collect::<Option<Vec<u16>>>()
        .ok_or("ports")
}

impl Checked for UnitParams {
    fn check(&mut self) -> Result<(), &'static str> {
        unit_of(&mut self.unit)
    }
}

/// Longest signal name (`SIGRTMIN+30`) or `kill_whom` taken, with room to spare.
const MAX_SIGNAL_TEXT: usize = 32;
/// Most units one `ResetFailed` names.
const MAX_RESET_UNITS: usize = 4096;

impl Checked for manager::KillParams {
    fn check(&mut self) -> Result<(), &'static str> {
        unit_of(&mut self.unit)?;
        if self
            .signal
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SIGNAL_TEXT)
        {
            return Err("signal");
        }
        if self
            .kill_whom
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SIGNAL_TEXT)
        {
            return Err("kill_whom");
        }
        Ok(())
    }
}

impl Checked for manager::ResetFailedParams {
    fn check(&mut self) -> Result<(), &'static str> {
        if self.units.len() > MAX_RESET_UNITS {
            return Err("units");
        }
        self.units.iter_mut().try_for_each(unit_of)
    }
}

impl Checked for manager::SetPropertyParams {
    fn check(&mut self) -> Result<(), &'static str> {
        unit_of(&mut self.unit)?;
        if self.properties.len() > crate::unit_edit::MAX_PROPERTIES {
            return Err("properties");
        }
        Ok(())
    }
}

impl Checked for manager::WriteDropInParams {
    fn check(&mut self) -> Result<(), &'static str> {
        unit_of(&mut self.unit)?;
        crate::drop_ins::check_name(&self.name).map_err(|_| "name")
    }
}

impl Checked for manager::ProfileParams {
    fn check(&mut self) -> Result<(), &'static str> {
        name_of("profile", names::check_profile_name(&self.profile))
    }
}

impl Checked for LogsParams {
    fn check(&mut self) -> Result<(), &'static str> {
        unit_of(&mut self.unit)
    }
}

/// The image descriptor of a call: at most one (the image the client opened).
fn image_fd(mut fds: Vec<std::os::fd::OwnedFd>) -> Result<Option<std::os::fd::OwnedFd>, Outcome> {
    if fds.len() > 1 {
        return Err(Outcome::Error(invalid_parameter("fds")));
    }
    Ok(fds.pop())
}

/// The descriptors of an Attach call, given to the arguments that are paths: the image's
/// first when it is one, then one per extension path, in order. A client may pass the image's
/// alone (berthd then opens the extensions itself, as before extensions were passed), or none.
#[allow(clippy::type_complexity)]
fn attach_fds(
    image: &str,
    extensions: Vec<String>,
    fds: Vec<OwnedFd>,
) -> Result<(Option<OwnedFd>, Vec<(String, Option<OwnedFd>)>), Outcome> {
    let is_path = |arg: &str| arg.starts_with('/');
    let image_fds = usize::from(is_path(image));
    let extension_fds = extensions.iter().filter(|e| is_path(e)).count();
    if !fds.is_empty() && fds.len() != image_fds && fds.len() != image_fds + extension_fds {
        return Err(Outcome::Error(invalid_parameter("fds")));
    }
    let mut fds = fds.into_iter();
    let image_fd = if image_fds == 1 { fds.next() } else { None };
    let extensions = extensions
        .into_iter()
        .map(|e| {
            let fd = if is_path(&e) { fds.next() } else { None };
            (e, fd)
        })
        .collect();
    Ok((image_fd, extensions))
}

fn params<T: DeserializeOwned + Checked>(parameters: Value) -> Result<T, Outcome> {
    let mut params: T = parse_params(parameters).map_err(Outcome::Error)?;
    params
        .check()
        .map_err(|parameter| Outcome::Error(invalid_parameter(parameter)))?;
    Ok(params)
}

impl Interface for ManagerInterface {
    const NAME: &'static str = manager::INTERFACE;

    fn description(&self) -> &str {
        &self.description
    }

    async fn handle(&mut self, method: &str, parameters: Value, ctx: CallContext) -> Outcome {
        // An unknown method is unknown to everyone: looked up before anyone is refused.
        let Some(&(method, access)) = METHODS.iter().find(|(name, _)| *name == method) else {
            return method_not_found(method);
        };
        if let Err(denied) = self.authorize(access, method, ctx.peer.as_ref()) {
            return Outcome::error(&denied);
        }
        match self.dispatch(method, parameters, ctx) {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }
}

impl ManagerInterface {
    fn dispatch(
        &mut self,
        method: &str,
        parameters: Value,
        ctx: CallContext,
    ) -> Result<Outcome, Outcome> {
        let shared = self.shared.clone();
        Ok(match method {
            "ListImages" => {
                params::<manager::Empty>(parameters)?;
                Outcome::reply(&ImagesReply {
                    images: shared.borrow().list_images(),
                })
            }
            "InspectImage" => {
                let p: InspectImageParams = params(parameters)?;
                let fd = image_fd(ctx.fds)?;
                // Anyone may inspect the images in the pool, and an image they pass as a
                // descriptor (they could open it). A path without one is read with berthd's
                // rights, not the caller's, so only those who may attach it may look
                // (otherwise berthd would show anyone files only its user can read).
                if p.image.starts_with('/') && fd.is_none() {
                    self.authorize(Access::Change, "InspectImage of a path", ctx.peer.as_ref())
                        .map_err(|denied| Outcome::error(&denied))?;
                }
                let details = shared.borrow().inspect_image(
                    &p.image,
                    fd,
                    p.prefixes.as_deref().unwrap_or_default(),
                    p.cat.unwrap_or(false),
                );
                Outcome::from_result(details.map(|details| InspectImageReply { details }))
            }
            "ImportImage" => {
                let p: ImportImageParams = params(parameters)?;
                import::import(&shared, p, ctx.fds, ctx.more)?
            }
            "RemoveImage" => {
                let p: ImageParams = params(parameters)?;
                let (image, path) = shared
                    .borrow()
                    .removable_image(&p.image)
                    .map_err(|e| Outcome::error(&e))?;
                Outcome::later(async move {
                    // A large tree takes a while: off the daemon's thread.
                    let removed = tokio::task::spawn_blocking(move || store::remove(&path))
                        .await
                        .map_err(ManagerError::internal)?;
                    removed.map_err(ManagerError::internal)?;
                    tracing::info!(image = %Untrusted(&image.name), "image removed");
                    shared.borrow().notify();
                    Ok::<_, ManagerError>(ImageReply { image })
                })
            }
            "MarkImageReadOnly" => {
                let p: ReadOnlyParams = params(parameters)?;
                let result = shared
                    .borrow()
                    .mark_read_only(&p.image, p.read_only.unwrap_or(true));
                Outcome::from_result(result.map(|image| ImageReply { image }))
            }
            "Attach" => {
                let p: AttachParams = params(parameters)?;
                let extensions = p.extensions.unwrap_or_default();
                let (fd, extensions) = attach_fds(&p.image, extensions, ctx.fds)?;
                let prefixes = p.prefixes.unwrap_or_default();
                // Checked with the call's parameters.
                let ports = ports_of(p.ports.as_deref().unwrap_or_default()).unwrap_or_default();
                let result = shared.borrow_mut().attach(
                    &p.image,
                    fd,
                    &prefixes,
                    p.profile.as_deref(),
                    crate::attach::AttachHow {
                        force: p.force.unwrap_or(false),
                        enable: p.enable.unwrap_or(false),
                        ports,
                    },
                    extensions,
                );
                Outcome::from_result(result.map(|(image, units, warnings)| AttachReply {
                    image,
                    units,
                    warnings,
                }))
            }
            "Detach" => {
                let p: DetachParams = params(parameters)?;
                let extensions = p.extensions.unwrap_or_default();
                let (now, clean) = (p.now.unwrap_or(false), p.clean.unwrap_or(false));
                if !now && !clean {
                    let result = shared.borrow_mut().detach(&p.image, &extensions);
                    return Ok(Outcome::from_result(
                        result.map(|(image, units)| DetachReply { image, units }),
                    ));
                }
                Outcome::later(async move {
                    // Checked before anything is stopped.
                    shared.borrow().check_detach(&p.image, &extensions)?;
                    let name = attachment_name(&p.image);
                    if now {
                        let units = shared.borrow().units_of(&name);
                        for unit in units {
                            lifecycle::stop(shared.clone(), unit).await?;
                        }
                    }
                    if clean {
                        crate::var_state::clean(&shared, &name).await?;
                    }
                    let (image, units) = shared.borrow_mut().detach(&p.image, &extensions)?;
                    if clean {
                        crate::var_state::release_block(&mut shared.borrow_mut(), &name)?;
                    }
                    Ok::<_, ManagerError>(DetachReply { image, units })
                })
            }
            "Reattach" => {
                let p: ReattachParams = params(parameters)?;
                let now = p.now.unwrap_or(false);
                Outcome::later(async move {
                    // Units the new version lacks are stopped before anything changes.
                    let removed = shared.borrow().reattach_prepare(&p.image)?.removed;
                    for unit in removed {
                        let active = shared.borrow().unit(&unit).is_ok_and(|u| u.is_active());
                        if active {
                            lifecycle::stop(shared.clone(), unit).await?;
                        }
                    }
                    // Read again: the image or the units may have changed while stopping.
                    let prepared = shared.borrow().reattach_prepare(&p.image)?;
                    let done = shared.borrow_mut().reattach_commit(prepared)?;
                    if now {
                        for unit in &done.updated {
                            let active = shared.borrow().unit(unit).is_ok_and(|u| u.is_active());
                            if active {
                                lifecycle::restart(shared.clone(), unit.clone()).await?;
                            }
                        }
                        // A template only describes its instances.
                        let added = done.added.iter().filter(|u| !names::is_template(u));
                        for unit in added {
                            lifecycle::start(shared.clone(), unit.clone()).await?;
                        }
                    }
                    Ok::<_, ManagerError>(ReattachReply {
                        image: done.image,
                        path: done.path.display().to_string(),
                        updated: done.updated,
                        added: done.added,
                        removed: done.removed,
                    })
                })
            }
            "IsAttached" => {
                let p: ImageParams = params(parameters)?;
                let extensions = p.extensions.unwrap_or_default();
                let state = shared
                    .borrow()
                    .attachment_state(&p.image, &extensions)
                    .to_string();
                Outcome::reply(&IsAttachedReply { state })
            }
            "List" => {
                params::<manager::Empty>(parameters)?;
                let units = shared.borrow().list();
                if ctx.more {
                    list_stream(units)
                } else if units.len() > MAX_LIST_REPLY_UNITS {
                    // Anyone may call List: one reply stays below about 300 KB, well within
                    // what a slow reader's connection may have queued. `more` has no limit.
                    Outcome::error(&ManagerError::ReplyTooLarge {
                        method: "List".into(),
                        count: i64::try_from(units.len()).unwrap_or(i64::MAX),
                        limit: MAX_LIST_REPLY_UNITS as i64,
                    })
                } else {
                    Outcome::reply(&ListReply { units })
                }
            }
            "Status" => {
                let p: UnitParams = params(parameters)?;
                let status = shared.borrow().unit_status(&p.unit);
                Outcome::from_result(status.map(|status| StatusReply { status }))
            }
            "Start" | "Stop" | "Restart" => {
                let p: UnitParams = params(parameters)?;
                let verb = method.to_string();
                Outcome::later(async move {
                    let result = match verb.as_str() {
                        "Start" => lifecycle::start(shared, p.unit).await,
                        // An instance berthd has not made is stopped already.
                        "Stop" if shared.borrow().unit(&p.unit).is_err() => {
                            shared.borrow().unit_status(&p.unit)
                        }
                        "Stop" => lifecycle::stop(shared, p.unit).await,
                        _ => lifecycle::restart(shared, p.unit).await,
                    };
                    result.map(|status| StatusReply { status })
                })
            }
            "Enable" | "Disable" => {
                let p: UnitParams = params(parameters)?;
                let result = shared.borrow_mut().set_enabled(&p.unit, method == "Enable");
                Outcome::from_result(result.map(|status| StatusReply { status }))
            }
            "Reload" => {
                let p: UnitParams = params(parameters)?;
                Outcome::later(async move {
                    let result = lifecycle::reload(shared, p.unit).await;
                    result.map(|status| StatusReply { status })
                })
            }
            "Kill" => {
                let p: manager::KillParams = params(parameters)?;
                let request = lifecycle::kill_request(p.signal.as_deref(), p.kill_whom.as_deref());
                Outcome::later(async move {
                    let (signal, whom) = request?;
                    let result = lifecycle::kill(shared, p.unit, signal, whom).await;
                    result.map(|status| StatusReply { status })
                })
            }
            "ResetFailed" => {
                let p: manager::ResetFailedParams = params(parameters)?;
                let result = lifecycle::reset_failed(&shared, &p.units);
                Outcome::from_result(result.map(|units| ListReply { units }))
            }
            "Cat" => {
                let p: UnitParams = params(parameters)?;
                let result = shared.borrow().cat(&p.unit);
                Outcome::from_result(result.map(|(unit, files)| manager::CatReply { unit, files }))
            }
            "SetProperty" => {
                let p: manager::SetPropertyParams = params(parameters)?;
                Outcome::from_result(shared.borrow_mut().set_property(&p.unit, &p.properties))
            }
            "WriteDropIn" => {
                let p: manager::WriteDropInParams = params(parameters)?;
                let result = shared
                    .borrow_mut()
                    .write_drop_in(&p.unit, &p.name, &p.contents);
                Outcome::from_result(result)
            }
            "ListProfiles" => {
                params::<manager::Empty>(parameters)?;
                let result = shared.borrow().list_profiles();
                Outcome::from_result(result.map(|profiles| manager::ListProfilesReply { profiles }))
            }
            "ShowProfile" => {
                let p: manager::ProfileParams = params(parameters)?;
                Outcome::from_result(shared.borrow().show_profile(&p.profile))
            }
            "Security" => {
                let p: UnitParams = params(parameters)?;
                Outcome::from_result(shared.borrow().security(&p.unit))
            }
            "Logs" => {
                let p: LogsParams = params(parameters)?;
                self.logs(p, ctx.more)
            }
            "Monitor" => {
                params::<manager::Empty>(parameters)?;
                crate::monitor::stream(shared.clone(), ctx.more)
            }
            other => method_not_found(other),
        })
    }

    /// `Logs`: without `more`, one small reply of the newest entries; with `more`, every
    /// requested entry in small batches, then (unless `follow` is false) new ones as they come.
    /// `since_usec`/`until_usec` keep the entries of a time window; `lines` counts the last of
    /// those.
    fn logs(&self, p: LogsParams, more: bool) -> Outcome {
        let follow = p.follow.unwrap_or(more);
        if follow && !more {
            return Outcome::Error(invalid_parameter("follow"));
        }
        let window = logs::TimeWindow {
            since: p.since_usec,
            until: p.until_usec,
        };
        let m = self.shared.borrow();
        let unit = match m.known_unit(&p.unit) {
            Ok(name) => name,
            Err(e) => return Outcome::error(&e),
        };
        let files = logs::LogFiles::of(&m.paths, &unit);
        let lines = p
            .lines
            .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX));
        // Records are in time order, so the last N of the window are among the last N records
        // when the window reaches the end; one with an end is counted first instead.
        let tail_lines = if window.until.is_some() { None } else { lines };
        let internal = |e: std::io::Error| Outcome::error(&ManagerError::internal(e));
        if !more {
            let budget = logs::REPLY_MAX_BYTES as u64;
            let range = match logs::tail_range(&files, tail_lines, budget) {
                Ok(range) => range,
                Err(e) => return internal(e),
            };
            let mut entries = match logs::read_range(&files, range) {
                Ok(entries) => entries,
                Err(e) => return internal(e),
            };
            entries.retain(|e| window.contains(e.usec));
            if let Some(n) = lines {
                entries.drain(..entries.len().saturating_sub(n));
            }
            let (entries, dropped) = logs::newest_within(entries, logs::REPLY_MAX_BYTES);
            return Outcome::reply(&LogsReply {
                entries,
                truncated: Some(dropped || !range.complete),
            });
        }
        let range = match logs::tail_range(&files, tail_lines, logs::MAX_TAIL_BYTES) {
            Ok(range) => range,
            Err(e) => return internal(e),
        };
        // Entries of the window to pass over before the last `lines` of it.
        let skip = match (lines, window.until) {
            (Some(n), Some(_)) => match logs::count_in(&files, range, window) {
                Ok(count) => count.saturating_sub(n as u64),
                Err(e) => return internal(e),
            },
            _ => 0,
        };
        let end = range.end;
        let reached_end = move |c: logs::Cursor| c.file == end.file && c.offset >= end.offset;
        let range_end = range.end;
        let complete = range.complete;
        // The existing records, then (when following) new ones; each batch is read from the
        // file when the client has room for it, so a stalled client costs no memory.
        // State: where to read next, whether the existing records are done (following),
        // whether anything was sent yet (a follower gets a first reply at once, even if empty),
        // and how many entries of the window are still to be passed over.
        let stream =
            futures_util::stream::unfold(Some((range.start, false, false, skip)), move |state| {
                let files = files.clone();
                async move {
                    let (mut cursor, mut following, sent, mut skip) = state?;
                    let mut idle = std::time::Duration::ZERO;
                    let mut behind = true;
                    loop {
                        if !following && reached_end(cursor) {
                            if !follow {
                                let item = logs_item(Vec::new(), false, !sent, complete);
                                return Some((item, None));
                            }
                            following = true;
                            if !sent {
                                return Some((
                                    logs_item(Vec::new(), true, true, complete),
                                    Some((cursor, true, true, skip)),
                                ));
                            }
                        }
                        // Catching up (the existing records, or a burst): read on at once.
                        if following && !behind {
                            tokio::time::sleep(logs::FOLLOW_INTERVAL).await;
                            idle += logs::FOLLOW_INTERVAL;
                        }
                        let (mut entries, next) = match logs::read_next(&files, cursor) {
                            Ok(read) => read,
                            // Said, not just dropped: the client would wait for ever.
                            Err(e) => {
                                let error = ManagerError::internal(format!("reading the log: {e}"));
                                return Some((stream_error(&error), None));
                            }
                        };
                        // Let the daemon's other work run between batches: sending to a fast
                        // client never waits, so a long catch-up would otherwise hold the loop.
                        tokio::task::yield_now().await;
                        let read = !entries.is_empty();
                        // The window has closed: nothing newer belongs to it (records are in
                        // time order).
                        let past = entries.last().is_some_and(|e| window.past(e.usec));
                        entries.retain(|e| window.contains(e.usec));
                        let passed = entries
                            .len()
                            .min(usize::try_from(skip).unwrap_or(usize::MAX));
                        entries.drain(..passed);
                        skip -= passed as u64;
                        let ended = past;
                        if !entries.is_empty() || ended {
                            let last = ended || (!follow && !following && reached_end(next));
                            let state = (!last).then_some((next, following, true, skip));
                            return Some((logs_item(entries, !last, !sent, complete), state));
                        }
                        if read {
                            cursor = next;
                            continue;
                        }
                        if !following && next == cursor {
                            // Nothing more to read before the end (the log went away).
                            cursor = range_end;
                            continue;
                        }
                        // An empty batch now and then: varlink has no keepalive, and only a
                        // write tells the server that a follower has gone away.
                        if following && idle >= logs::FOLLOW_KEEPALIVE {
                            let item = logs_item(Vec::new(), true, !sent, complete);
                            return Some((item, Some((next, true, true, skip))));
                        }
                        cursor = next;
                        behind = false;
                    }
                }
            });
        Outcome::Stream(Box::pin(stream))
    }
}

/// One batch of a `Logs` stream; the first says whether older records were left out.
fn logs_item(
    entries: Vec<manager::LogEntry>,
    continues: bool,
    first: bool,
    complete: bool,
) -> zlink::service::ReplyStreamItem<Value, Value> {
    stream_item(
        &LogsReply {
            entries,
            truncated: first.then_some(!complete),
        },
        continues,
    )
}

/// `List` with `more`: one reply per unit, as systemd's varlink listings do. Small messages also
/// keep clear of zlink's write buffer, which grows 256 bytes per retry (quadratic in the reply).
fn list_stream(units: Vec<manager::UnitStatus>) -> Outcome {
    let count = units.len();
    let replies: Vec<_> = if units.is_empty() {
        vec![(ListReply { units }, false)]
    } else {
        units
            .into_iter()
            .enumerate()
            .map(|(i, unit)| (ListReply { units: vec![unit] }, i + 1 < count))
            .collect()
    };
    let stream = futures_util::stream::iter(replies)
        .map(|(reply, continues)| stream_item(&reply, continues));
    Outcome::Stream(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n).map(|_| rustix::pipe::pipe().unwrap().0).collect()
    }

    fn mapped(image: &str, extensions: &[&str], n: usize) -> Option<(bool, Vec<bool>)> {
        let extensions: Vec<String> = extensions.iter().map(|e| e.to_string()).collect();
        let (image, extensions) = attach_fds(image, extensions, fds(n)).ok()?;
        Some((
            image.is_some(),
            extensions.iter().map(|(_, fd)| fd.is_some()).collect(),
        ))
    }

    #[test]
    fn attach_descriptors_go_to_the_path_arguments_image_first() {
        assert_eq!(
            mapped("/i", &["e", "/x", "/y"], 3),
            Some((true, vec![false, true, true]))
        );
        assert_eq!(
            mapped("name", &["/x", "e"], 1),
            Some((false, vec![true, false]))
        );
    }

    #[test]
    fn the_image_descriptor_alone_or_none_is_accepted() {
        assert_eq!(mapped("/i", &["/x"], 1), Some((true, vec![false])));
        assert_eq!(mapped("/i", &["/x"], 0), Some((false, vec![false])));
    }

    #[test]
    fn another_count_of_descriptors_is_refused() {
        assert_eq!(mapped("/i", &["/x"], 3), None);
        assert_eq!(mapped("name", &["e"], 1), None);
    }

    #[test]
    fn attach_ports_are_privileged_ports() {
        assert_eq!(ports_of(&[80, 443, 1023, 1]), Ok(vec![80, 443, 1023, 1]));
        for bad in [0, 1024, -80, 65536 + 80] {
            assert_eq!(ports_of(&[80, bad]), Err("ports"), "{bad}");
        }
    }

    #[test]
    fn too_many_attach_ports_are_refused() {
        let many: Vec<i64> = (1..=200).collect();

        assert_eq!(ports_of(&many), Err("ports"));
    }
}
