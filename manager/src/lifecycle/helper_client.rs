//! The helper client: what one spawn needs, gathered from the manager's state, and the
//! `io.berth.Helper.Spawn` call that starts it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use berth_protocol::helper::{HelperError, SpawnParams, SpawnReply};
use berth_protocol::manager::ManagerError;
use berth_protocol::sandbox::{SandboxSpec, UidBlock, credentials_directory};
use berth_protocol::service_program::ServiceProgram;
use berth_varlink::client::ClientError;

use crate::daemon::{Manager, Shared};
use crate::helper_connection;
use crate::image::ImageRoot;
use crate::image::identity::{IdentityError, ImageIdentity};
use crate::image_users::{self, ImageUser};
use crate::logs;
use crate::service_directories;
use crate::unit::UnitIdentity;
use crate::unit_state::RunUser;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What one spawn needs, gathered under a short borrow.
pub(super) struct Plan {
    pub(super) unit: String,
    pub(super) image: String,
    pub(super) image_path: std::path::PathBuf,
    /// What attach recorded of the image; the spawn refuses a path that names another.
    pub(super) image_identity: Option<ImageIdentity>,
    /// The image's root as attach opened it, when the client passed it as a descriptor and
    /// berthd has kept it since.
    pub(super) held_image: Option<OwnedFd>,
    /// Attached by descriptor: berthd may be unable to reopen the path itself.
    pub(super) by_descriptor: bool,
    /// Extension images laid over the image, lowest first, each pinned like the image.
    pub(super) extensions: Vec<crate::attachments::ExtensionRecord>,
    /// What berthd kept of each extension passed as a descriptor (as `held_image`), in order.
    pub(super) held_extensions: Vec<Option<OwnedFd>>,
    /// What the run executes, every `$VAR` but `$MAINPID` expanded.
    pub(super) program: ServiceProgram,
    pub(super) environment: Vec<String>,
    pub(super) working_directory: String,
    /// The unit's sandbox; its identity is filled at each spawn.
    pub(super) sandbox: SandboxSpec,
    /// The fields of its entries in the host's journal, when its output goes there too.
    pub(super) journal: Option<berth_protocol::helper::JournalFields>,
    /// The unit's `User=` and the like, when it runs as the image's own users (in the
    /// attachment's uid block; else a dynamic uid).
    pub(super) image_users: Option<UnitIdentity>,
    /// The unit's own Environment= sets USER=, LOGNAME= or HOME=, which then win over the
    /// image user's.
    pub(super) login_set_by_unit: bool,
}

pub(super) fn plan(m: &Manager, unit_arg: &str) -> Result<Plan, ManagerError> {
    let unit = m.unit(unit_arg)?;
    let record = m
        .attachments
        .get(&unit.image)
        .ok_or(ManagerError::NotAttached {
            image: unit.image.clone(),
        })?;
    let config = &unit.config;
    let stem = unit
        .name
        .rsplit_once('.')
        .map_or(unit.name.as_str(), |(s, _)| s);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/".into());
    env.insert("USER".into(), stem.into());
    env.insert("LOGNAME".into(), stem.into());
    env.insert("PORTABLE".into(), unit.image.clone());
    // Set by the helper too; here for `${CREDENTIALS_DIRECTORY}` in ExecStart=.
    if !config.sandbox.credentials.is_empty() {
        env.insert(
            "CREDENTIALS_DIRECTORY".into(),
            credentials_directory(&unit.name),
        );
    }
    env.extend(config.environment.clone());
    let program = super::program::build(config, &env);
    let working_directory = config
        .working_directory
        .as_deref()
        .map(str::to_string)
        .unwrap_or_else(|| "/".to_string());
    Ok(Plan {
        unit: unit.name.clone(),
        image: unit.image.clone(),
        image_path: record.path.clone(),
        image_identity: record.identity.clone(),
        held_image: m
            .held_images
            .get(&unit.image)
            .map(|held| held.spawn_fd())
            .transpose()
            .map_err(ManagerError::internal)?,
        by_descriptor: record.by_descriptor,
        extensions: record.extensions.clone(),
        held_extensions: m
            .held_extensions
            .get(&unit.image)
            .map(|held| {
                held.iter()
                    .map(|h| h.as_ref().map(|h| h.spawn_fd()).transpose())
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .transpose()
            .map_err(ManagerError::internal)?
            .unwrap_or_default(),
        program,
        environment: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_directory,
        sandbox: SandboxSpec {
            privileged_ports: record.ports.clone(),
            ..config.sandbox.clone()
        },
        journal: m.forward_to_journal.then(|| {
            let executable = config.exec_start.first().map(|c| c.path.as_str());
            crate::logs::journal_fields::journal_fields(&unit.image, executable)
        }),
        image_users: m.runs_as_image_users(unit).then(|| config.identity.clone()),
        login_set_by_unit: LOGIN_VARIABLES
            .iter()
            .any(|key| config.environment.contains_key(*key)),
    })
}

pub(super) async fn spawn(shared: &Shared, plan: &Plan) -> Result<SpawnReply, ManagerError> {
    let (owner, paths) = {
        let m = shared.borrow();
        let owner = match &plan.image_users {
            Some(_) => Owner::Block(
                m.uid_blocks
                    .get(&plan.image)
                    .ok_or_else(|| ManagerError::internal("no uid block allocated"))?,
            ),
            None => Owner::Dynamic(
                m.unit(&plan.unit)?
                    .uid
                    .ok_or_else(|| ManagerError::internal("no uid allocated"))?,
            ),
        };
        (owner, m.paths.clone())
    };
    let start_failed = |reason: String| ManagerError::StartFailed {
        unit: plan.unit.clone(),
        reason,
    };
    for command in plan.program.commands() {
        check_exec_size(&command.argv, &plan.environment).map_err(start_failed)?;
    }
    let layer_failed = |image: &str, by_descriptor: bool, e: IdentityError| match e {
        IdentityError::Changed { path, reason } => ManagerError::ImageChanged {
            image: image.to_string(),
            path,
            reason,
        },
        IdentityError::Open { path, source } if by_descriptor => start_failed(format!(
            "{path} was attached by descriptor and berthd, restarted since, cannot open it \
             itself ({source}); attach it again: berth attach {path}"
        )),
        e => start_failed(e.to_string()),
    };
    let root = layer_root(
        plan.held_image.as_ref(),
        &plan.image_path,
        plan.image_identity.as_ref(),
    )
    .map_err(|e| layer_failed(&plan.image, plan.by_descriptor, e))?;
    let extensions = plan
        .extensions
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let held = plan.held_extensions.get(i).and_then(Option::as_ref);
            layer_root(held, &e.path, Some(&e.identity))
                .map_err(|err| layer_failed(&e.name, e.by_descriptor, err))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A new run starts with a fresh supervisor writing to current.log: an incoming.log from an
    // interrupted rotation of an earlier run is not its business.
    if let Err(e) = logs::abandon_rotation(&logs::LogFiles::of(&paths, &plan.unit)) {
        tracing::warn!(unit = %plan.unit, error = %e, "cannot remove a stale incoming log");
    }
    let log_path = logs::LogFiles::of(&paths, &plan.unit).current;
    if let Some(dir) = log_path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(ManagerError::internal)?;
    }
    let log: OwnedFd = File::options()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&log_path)
        .map_err(|e| ManagerError::internal(format!("{}: {e}", log_path.display())))?
        .into();
    let control_dir: OwnedFd = File::open(paths.supervise_dir())
        .map_err(ManagerError::internal)?
        .into();
    let run_as = match (owner, &plan.image_users) {
        (Owner::Block(block), Some(identity)) => {
            let fd = root.try_clone().map_err(ManagerError::internal)?;
            let image_root = ImageRoot::from_fd(fd, plan.image_path.clone())
                .map_err(|e| start_failed(e.to_string()))?;
            let user = image_users::resolve(&image_root, identity)
                .map_err(|e| start_failed(e.to_string()))?;
            RunAs::Image { block, user }
        }
        (Owner::Dynamic(uid), _) => RunAs::Dynamic(uid),
        (Owner::Block(_), None) => return Err(ManagerError::internal("no uid allocated")),
    };
    let mut sandbox = with_identity(&plan.sandbox, &run_as, &plan.unit).map_err(start_failed)?;
    if let RunAs::Image { user, .. } = &run_as
        && let Some(u) = shared.borrow_mut().units.get_mut(&plan.unit)
    {
        u.run_user = Some(RunUser {
            name: user.name.clone(),
            uid: sandbox.identity.uid,
        });
    }
    // The floor grants ports only to the image's own users (a uid block); a dynamic user of
    // the same attachment runs without them.
    if sandbox.identity.user_block.is_none() && !sandbox.privileged_ports.is_empty() {
        tracing::warn!(unit = %plan.unit, "runs as a dynamic user: its attachment's --port grants do not apply");
        sandbox.privileged_ports.clear();
    }
    let (mut sandbox, var_dir) =
        crate::var_state::for_spawn(&paths, &plan.image, &plan.unit, sandbox)?;
    // Every unit's syslog(3) and journal messages land in its own log, like its stdout.
    sandbox.capture_log_sockets = true;
    let directory_fds = service_directories::open_parents(&paths, &sandbox.directories)
        .map_err(ManagerError::internal)?;
    let host_file_fds = match &shared.borrow().host_files {
        Some(copies) => copies
            .for_spawn(&mut sandbox)
            .map_err(ManagerError::internal)?,
        None => Vec::new(),
    };
    let mut environment = plan.environment.clone();
    if let RunAs::Image { user, .. } = &run_as
        && !plan.login_set_by_unit
    {
        set_login_environment(&mut environment, user);
    }
    // As in systemd, the unit's own Environment= wins.
    for (key, value) in service_directories::environment(&sandbox.directories) {
        if !environment
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            environment.push(format!("{key}={value}"));
        }
    }
    let params = SpawnParams {
        unit: plan.unit.clone(),
        program: plan.program.clone(),
        journal: plan.journal.clone(),
        environment,
        working_directory: plan.working_directory.clone(),
        sandbox,
    };
    let helper_unavailable = |e: ClientError| ManagerError::HelperUnavailable {
        reason: e.to_string(),
    };
    let result = helper_connection::call_helper(
        shared,
        "io.berth.Helper.Spawn",
        &params,
        [root, log, control_dir]
            .into_iter()
            .chain(directory_fds)
            .chain(var_dir)
            .chain(host_file_fds)
            .chain(extensions)
            .collect(),
    )
    .await;
    match result {
        Ok(reply) => Ok(reply),
        Err(ClientError::Remote(e)) => {
            let reason = e
                .typed::<HelperError>()
                .map_or_else(|| e.to_string(), |h| h.to_string());
            Err(start_failed(reason))
        }
        // A protocol-level refusal (e.g. InvalidParameter) means the helper is up but disagrees.
        Err(e) => match berth_varlink::client::remote_error_of(&e) {
            Some(remote) => Err(start_failed(format!(
                "berth-helper refused the request: {remote}"
            ))),
            None => Err(helper_unavailable(e)),
        },
    }
}

/// Whose ids a spawn runs with, before the image's users are looked up.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// The dynamic uid the run holds.
    Dynamic(u32),
    /// The attachment's uid block.
    Block(UidBlock),
}

/// What systemd sets from a `User=`'s passwd entry.
const LOGIN_VARIABLES: [&str; 3] = ["USER", "LOGNAME", "HOME"];

/// `USER=`, `LOGNAME=` and `HOME=` of the image's `user`, as systemd sets them for `User=`, in
/// place of berthd's defaults (the unit's name, `/`); nothing for a user without a passwd entry
/// (no `User=`, or a bare number).
fn set_login_environment(environment: &mut Vec<String>, user: &ImageUser) {
    let Some(home) = &user.home else {
        return;
    };
    environment.retain(|entry| {
        !LOGIN_VARIABLES
            .iter()
            .any(|key| entry.split_once('=').is_some_and(|(k, _)| k == *key))
    });
    environment.push(format!("USER={}", user.name));
    environment.push(format!("LOGNAME={}", user.name));
    environment.push(format!("HOME={home}"));
}

/// Who one spawn runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunAs {
    /// A transient dynamic uid, its own gid too.
    Dynamic(u32),
    /// The image's user `user`, in the user namespace that maps 0-65535 onto `block`.
    Image { block: UidBlock, user: ImageUser },
}

/// The unit's sandbox for one spawn, as `run_as`. All ids are host ids (the helper converts
/// them for inside the namespace); PrivateUsers= stays as the profile and unit merged it.
fn with_identity(sandbox: &SandboxSpec, run_as: &RunAs, unit: &str) -> Result<SandboxSpec, String> {
    let mut sandbox = sandbox.clone();
    let identity = &mut sandbox.identity;
    match run_as {
        RunAs::Dynamic(uid) => {
            identity.uid = *uid;
            identity.gid = *uid;
            identity.user_name = dynamic_user_name(unit);
            identity.user_block = None;
        }
        RunAs::Image { block, user } => {
            let host = |id: u32| {
                block.host_id(id).ok_or_else(|| {
                    format!(
                        "id {id} of the image lies outside the uid block {}-{}",
                        block.first,
                        block.last()
                    )
                })
            };
            identity.uid = host(user.uid)?;
            identity.gid = host(user.gid)?;
            identity.supplementary_groups = user
                .supplementary_groups
                .iter()
                .map(|gid| host(*gid))
                .collect::<Result<_, _>>()?;
            identity.user_name = user.name.clone();
            identity.user_block = Some(*block);
        }
    }
    Ok(sandbox)
}

/// The name a dynamic user gets in the sandbox's user database: the unit's name without its
/// suffix, as systemd's DynamicUser= names it, cut to the 31 bytes a user name may have and with
/// the characters a user name may not hold (`@`, `:`) made `_`.
fn dynamic_user_name(unit: &str) -> String {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| *c == '-')
        .take(31)
        .collect();
    if name.is_empty() {
        "service".to_owned()
    } else {
        name
    }
}

/// The root a spawn gets of an image or extension: the one attach kept (`held`, passed by
/// descriptor), else the recorded `path` reopened, if it is still the one `identity` recorded.
fn layer_root(
    held: Option<&OwnedFd>,
    path: &std::path::Path,
    identity: Option<&ImageIdentity>,
) -> Result<OwnedFd, IdentityError> {
    match held {
        Some(held) => {
            let path = path.display().to_string();
            let open_error = |source| IdentityError::Open {
                path: path.clone(),
                source,
            };
            let fd = held.try_clone().map_err(open_error)?;
            crate::image::spawn_root(fd, &path).map_err(|e| open_error(std::io::Error::other(e)))
        }
        None => crate::image::open_attached(path, identity),
    }
}

/// Longest single argument or environment string execve(2) takes (Linux MAX_ARG_STRLEN).
const MAX_ARG_BYTES: usize = 128 * 1024;

/// Most bytes of argv and environment together that berth passes to a service. Below what
/// execve takes (a quarter of the stack limit), and it keeps the Spawn message to the helper
/// well within the helper's 1 MiB parameters limit.
const MAX_EXEC_BYTES: usize = 256 * 1024;

/// Refuses a command line (after `$VAR` expansion) and environment that execve would refuse, or
/// that are too large to hand over quickly.
fn check_exec_size(argv: &[String], environment: &[String]) -> Result<(), String> {
    if let Some(long) = argv
        .iter()
        .chain(environment)
        .find(|s| s.len() >= MAX_ARG_BYTES)
    {
        let start: String = long.chars().take(24).collect();
        return Err(format!(
            "an argument or environment entry is {} bytes (\"{start}...\"); the most is {}",
            long.len(),
            MAX_ARG_BYTES - 1
        ));
    }
    let total: usize = argv.iter().chain(environment).map(|s| s.len() + 1).sum();
    if total > MAX_EXEC_BYTES {
        return Err(format!(
            "the command line and environment are {total} bytes; the most is {MAX_EXEC_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn private_users_spec() -> SandboxSpec {
        let mut spec = SandboxSpec::baseline(0, 0, "");
        spec.identity.private_users = true;
        spec
    }

    #[test]
    fn a_user_of_the_image_gets_its_name_and_home_in_the_environment() {
        let user = ImageUser {
            name: "redis".into(),
            uid: 100,
            gid: 101,
            supplementary_groups: vec![101],
            home: Some("/var/lib/redis".into()),
        };
        let mut environment = vec![
            "PATH=/usr/bin".to_string(),
            "HOME=/".to_string(),
            "USER=redis-server".to_string(),
            "LOGNAME=redis-server".to_string(),
        ];

        set_login_environment(&mut environment, &user);

        assert_eq!(
            environment,
            [
                "PATH=/usr/bin",
                "USER=redis",
                "LOGNAME=redis",
                "HOME=/var/lib/redis"
            ]
        );
    }

    #[test]
    fn without_a_passwd_entry_the_environment_keeps_berthd_s_defaults() {
        let root = ImageUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
            supplementary_groups: Vec::new(),
            home: None,
        };
        let mut environment = vec!["HOME=/".to_string(), "USER=hello".to_string()];

        set_login_environment(&mut environment, &root);

        assert_eq!(environment, ["HOME=/", "USER=hello"]);
    }

    #[test]
    fn a_run_as_the_images_user_has_its_block_ids_on_the_host_and_its_name() {
        let block = UidBlock::at(524_288);
        let user = ImageUser {
            name: "redis".into(),
            uid: 100,
            gid: 101,
            supplementary_groups: vec![101, 4],
            home: None,
        };

        let spec = with_identity(
            &private_users_spec(),
            &RunAs::Image { block, user },
            "redis-server.service",
        )
        .unwrap();

        let identity = &spec.identity;
        assert_eq!((identity.uid, identity.gid), (524_388, 524_389));
        assert_eq!(identity.supplementary_groups, [524_389, 524_292]);
        assert_eq!(identity.user_name, "redis");
        assert_eq!(identity.user_block, Some(block));
        assert!(identity.private_users);
    }

    #[test]
    fn root_of_the_namespace_is_the_blocks_first_id() {
        let block = UidBlock::at(589_824);
        let root = ImageUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
            supplementary_groups: Vec::new(),
            home: None,
        };

        let spec = with_identity(
            &SandboxSpec::baseline(0, 0, ""),
            &RunAs::Image { block, user: root },
            "nginx.service",
        )
        .unwrap();

        assert_eq!((spec.identity.uid, spec.identity.gid), (589_824, 589_824));
        assert_eq!(spec.identity.namespace_root(), 589_824);
        assert!(!spec.identity.private_users);
    }

    #[test]
    fn a_dynamic_run_has_no_block_and_the_units_name() {
        let spec = with_identity(
            &private_users_spec(),
            &RunAs::Dynamic(61_200),
            "web@a.service",
        )
        .unwrap();

        assert_eq!((spec.identity.uid, spec.identity.gid), (61_200, 61_200));
        assert_eq!(spec.identity.user_block, None);
        assert_eq!(spec.identity.user_name, "web_a");
        assert!(spec.identity.private_users);
    }

    #[test]
    fn an_id_beyond_the_block_is_refused() {
        let user = ImageUser {
            name: "big".into(),
            uid: 70_000,
            gid: 0,
            supplementary_groups: Vec::new(),
            home: None,
        };

        let result = with_identity(
            &SandboxSpec::baseline(0, 0, ""),
            &RunAs::Image {
                block: UidBlock::at(524_288),
                user,
            },
            "x.service",
        );

        assert!(result.is_err_and(|e| e.contains("70000")));
    }

    #[test]
    fn an_ordinary_command_passes() {
        assert!(check_exec_size(&strings(&["/bin/echo", "hi"]), &strings(&["A=b"])).is_ok());
    }

    #[test]
    fn an_argument_execve_would_refuse_is_refused() {
        let long = "x".repeat(MAX_ARG_BYTES);

        let result = check_exec_size(&strings(&["/bin/echo", &long]), &[]);

        assert!(result.is_err_and(|e| e.contains("131072 bytes")));
    }

    #[test]
    fn too_much_in_total_is_refused() {
        let chunk = "y".repeat(100 * 1024);
        let argv = strings(&["/bin/echo", &chunk, &chunk, &chunk]);

        let result = check_exec_size(&argv, &[]);

        assert!(result.is_err_and(|e| e.contains("the most is 262144")));
    }
}
