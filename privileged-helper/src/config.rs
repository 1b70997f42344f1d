//! The helper's configuration file (`--config`, default `/etc/berth/helper.toml`): the limits
//! of its floor policy, which [`crate::floor`] enforces on every request.

use std::path::{Path, PathBuf};

use berth_protocol::config_file::{DEFAULT_UID_RANGE, DEFAULT_USER_BLOCK_RANGE};
use berth_protocol::sandbox::UID_BLOCK_SIZE;

pub use berth_protocol::config_file::ConfigFileError as ConfigError;
use berth_protocol::config_file::{self, ConfigFile, KeyError};

/// Limits the helper enforces. Read from `--config`, TOML: `dynamic_uid_min`,
/// `dynamic_uid_max`, `image_roots = ["/a", "/b"]`, `image_filesystems = ["squashfs",
/// "erofs"]`, `allowed_capabilities = ["CAP_NET_BIND_SERVICE"]`, `bind_sources =
/// ["/srv/shared"]`, `allowed_devices = ["/dev/fuse"]`, `credential_roots = ["/etc/credstore"]`,
/// `systemd_creds = "/usr/bin/systemd-creds"`, `journal_socket =
/// "/run/systemd/journal/socket"` and `grantable_ports = [80, 443]`, all optional; an unknown key or a value of the wrong type is
/// an error naming the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloorPolicy {
    #[serde(rename = "dynamic_uid_min")]
    pub uid_min: u32,
    #[serde(rename = "dynamic_uid_max")]
    pub uid_max: u32,
    /// Directories image roots must lie under; empty means any directory but the host root.
    pub image_roots: Vec<PathBuf>,
    /// File systems `MountImage` may mount. The kernel's parsers of most file systems are not
    /// hardened against hostile images, so only the two read-only image formats by default;
    /// an admin may add others known to [`crate::image_mount::filesystem`] (ext4, ...).
    pub image_filesystems: Vec<String>,
    /// Capabilities a service may keep in its bounding set or be granted as ambient ones
    /// (`CAP_NET_BIND_SERVICE`, ...). Empty by default: no service gets any capability.
    pub allowed_capabilities: Vec<String>,
    /// Host directories (or files) BindPaths= and BindReadOnlyPaths= may bind from, each with
    /// what lies under it; empty (the default) allows none.
    pub bind_sources: Vec<PathBuf>,
    /// Host device nodes DeviceAllow= may give a service; empty (the default) allows none.
    pub allowed_devices: Vec<PathBuf>,
    /// Directories LoadCredential= and LoadCredentialEncrypted= read from (systemd's
    /// credential stores by default); a bare credential name is looked up in them in order,
    /// the `*.encrypted` ones for LoadCredentialEncrypted= and the others for LoadCredential=.
    pub credential_roots: Vec<PathBuf>,
    /// The `systemd-creds` that decrypts LoadCredentialEncrypted= (run with a clean
    /// environment); without it such a credential fails its service's start.
    pub systemd_creds: PathBuf,
    /// The host journal's native socket, which services' output is forwarded to when berthd
    /// asks for it (berthd.toml `forward_to_journal`) and the socket exists.
    pub journal_socket: PathBuf,
    /// The host ids user blocks (the image's own users, 65536 ids each) may come from; a
    /// block must lie wholly inside, clear of `/etc/subuid`, `/etc/subgid` and the host's
    /// users and groups. systemd's container range by default.
    pub user_block_min: u32,
    pub user_block_max: u32,
    /// Ports below 1024 berthd may grant a service (`berth attach --port`), bound for it by
    /// its supervisor; every one (1 to 1023) by default. Grants apply only to services running
    /// as the image's own users.
    pub grantable_ports: Vec<u16>,
    /// Files listing host users and groups that dynamic IDs must never collide with (not
    /// configurable: the host's own; tests point them elsewhere).
    #[serde(skip)]
    pub passwd: PathBuf,
    #[serde(skip)]
    pub group: PathBuf,
    /// The subordinate id ranges of the host's users (not configurable either), which no
    /// user block may overlap.
    #[serde(skip)]
    pub subuid: PathBuf,
    #[serde(skip)]
    pub subgid: PathBuf,
}

/// systemd's credential stores, searched in this order (systemd.exec(5), "Credentials").
pub const DEFAULT_CREDENTIAL_ROOTS: [&str; 4] = [
    "/etc/credstore",
    "/run/credstore",
    "/etc/credstore.encrypted",
    "/run/credstore.encrypted",
];

impl Default for FloorPolicy {
    fn default() -> Self {
        FloorPolicy {
            uid_min: DEFAULT_UID_RANGE.0,
            uid_max: DEFAULT_UID_RANGE.1,
            image_roots: Vec::new(),
            image_filesystems: crate::image_mount::filesystem::DEFAULT_FILESYSTEMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            allowed_capabilities: Vec::new(),
            bind_sources: Vec::new(),
            allowed_devices: Vec::new(),
            credential_roots: DEFAULT_CREDENTIAL_ROOTS.iter().map(PathBuf::from).collect(),
            systemd_creds: PathBuf::from("/usr/bin/systemd-creds"),
            journal_socket: PathBuf::from("/run/systemd/journal/socket"),
            user_block_min: DEFAULT_USER_BLOCK_RANGE.0,
            user_block_max: DEFAULT_USER_BLOCK_RANGE.1,
            grantable_ports: (1..1024).collect(),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

impl ConfigFile for FloorPolicy {
    fn check(&self) -> Result<(), KeyError> {
        if let Some(relative) = self.image_roots.iter().find(|p| !p.is_absolute()) {
            return Err(KeyError {
                keys: &["image_roots"],
                reason: format!("{} is not absolute", relative.display()),
            });
        }
        if let Some(relative) = self.bind_sources.iter().find(|p| !normal_absolute(p)) {
            return Err(KeyError {
                keys: &["bind_sources"],
                reason: format!("{} is not an absolute, normalized path", relative.display()),
            });
        }
        if let Some(relative) = self.credential_roots.iter().find(|p| !normal_absolute(p)) {
            return Err(KeyError {
                keys: &["credential_roots"],
                reason: format!("{} is not an absolute, normalized path", relative.display()),
            });
        }
        if !normal_absolute(&self.systemd_creds) {
            return Err(KeyError {
                keys: &["systemd_creds"],
                reason: format!(
                    "{} is not an absolute, normalized path",
                    self.systemd_creds.display()
                ),
            });
        }
        if let Some(other) = self
            .allowed_devices
            .iter()
            .find(|p| !normal_absolute(p) || !p.starts_with("/dev"))
        {
            return Err(KeyError {
                keys: &["allowed_devices"],
                reason: format!("{} is not a path under /dev", other.display()),
            });
        }
        if let Some(unknown) = self
            .image_filesystems
            .iter()
            .find(|f| crate::image_mount::filesystem::Filesystem::named(f).is_none())
        {
            return Err(KeyError {
                keys: &["image_filesystems"],
                reason: format!(
                    "{unknown} is not a file system berth-helper mounts (known: {})",
                    crate::image_mount::filesystem::known_names()
                ),
            });
        }
        if let Some(unknown) = self
            .allowed_capabilities
            .iter()
            .find(|c| crate::sandbox::capabilities::capability_named(c).is_none())
        {
            return Err(KeyError {
                keys: &["allowed_capabilities"],
                reason: format!(
                    "{unknown} is not a capability (names are like CAP_NET_BIND_SERVICE)"
                ),
            });
        }
        if !normal_absolute(&self.journal_socket) {
            return Err(KeyError {
                keys: &["journal_socket"],
                reason: format!(
                    "{} is not an absolute, normalized path",
                    self.journal_socket.display()
                ),
            });
        }
        if let Some(port) = self
            .grantable_ports
            .iter()
            .find(|p| **p == 0 || **p >= 1024)
        {
            return Err(KeyError {
                keys: &["grantable_ports"],
                reason: format!("{port} is not a privileged port (1 to 1023)"),
            });
        }
        config_file::check_uid_range(self.uid_min, self.uid_max)?;
        self.check_user_block_range()
    }
}

impl FloorPolicy {
    /// `user_block_min`..`user_block_max`: room for a block, no block holding host root (the
    /// first block starts at 65536 at the lowest), and clear of the dynamic range, whose ids
    /// are handed to DynamicUser= services one at a time.
    fn check_user_block_range(&self) -> Result<(), KeyError> {
        let (min, max) = (self.user_block_min, self.user_block_max);
        let keys = &["user_block_min", "user_block_max"];
        let reason = if min < UID_BLOCK_SIZE {
            Some(format!(
                "user_block_min {min} is below {UID_BLOCK_SIZE}: the first block would hold host root"
            ))
        } else if u64::from(max) + 1 < u64::from(min) + u64::from(UID_BLOCK_SIZE) {
            Some(format!(
                "the user block range {min}-{max} holds no block of {UID_BLOCK_SIZE} ids"
            ))
        } else if min <= self.uid_max && self.uid_min <= max {
            Some(format!(
                "the user block range {min}-{max} overlaps the dynamic range {}-{}",
                self.uid_min, self.uid_max
            ))
        } else {
            None
        };
        reason.map_or(Ok(()), |reason| Err(KeyError { keys, reason }))
    }
}

/// Absolute, without `.` or `..` components (what the floor compares paths with).
fn normal_absolute(path: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl FloorPolicy {
    /// Reads the config file; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<FloorPolicy, ConfigError> {
        config_file::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FloorPolicy, ConfigError> {
        config_file::parse(Path::new("/etc/berth/helper.toml"), text)
    }

    fn error_line_and_key(text: &str) -> (usize, Option<String>) {
        match parse(text) {
            Err(ConfigError::Invalid { line, key, .. }) => (line, key),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn config_sets_range_and_roots() {
        let policy = parse(
            "# floor\ndynamic_uid_min = 70_000\ndynamic_uid_max = 70_010\nimage_roots = [\n  \"/srv/img\", # ours\n  \"/srv/more\",\n]\n",
        )
        .unwrap();

        assert_eq!((policy.uid_min, policy.uid_max), (70000, 70010));
        assert_eq!(
            policy.image_roots,
            [PathBuf::from("/srv/img"), PathBuf::from("/srv/more")]
        );
    }

    #[test]
    fn the_journal_socket_is_the_hosts_unless_set_and_must_be_absolute() {
        assert_eq!(
            parse("").unwrap().journal_socket,
            PathBuf::from("/run/systemd/journal/socket")
        );
        assert_eq!(
            parse("journal_socket = \"/run/other/socket\"\n")
                .unwrap()
                .journal_socket,
            PathBuf::from("/run/other/socket")
        );
        assert!(parse("journal_socket = \"journal\"\n").is_err());
    }

    #[test]
    fn user_blocks_come_from_systemd_s_container_range_unless_set() {
        let default = parse("").unwrap();
        let set = parse("user_block_min = 1_048_576\nuser_block_max = 2_097_151\n").unwrap();

        assert_eq!(
            (default.user_block_min, default.user_block_max),
            (524_288, 1_879_048_191)
        );
        assert_eq!(
            (set.user_block_min, set.user_block_max),
            (1_048_576, 2_097_151)
        );
    }

    #[test]
    fn a_user_block_range_that_would_hold_host_root_is_refused() {
        assert_eq!(
            error_line_and_key("user_block_min = 0\n"),
            (1, Some("user_block_min".into()))
        );
    }

    #[test]
    fn a_user_block_range_without_room_for_a_block_is_refused() {
        assert_eq!(
            error_line_and_key("user_block_min = 524288\nuser_block_max = 589822\n"),
            (1, Some("user_block_min".into()))
        );
    }

    #[test]
    fn a_user_block_range_over_the_dynamic_range_is_refused() {
        assert!(
            parse("dynamic_uid_min = 70000\ndynamic_uid_max = 70010\nuser_block_min = 65536\n")
                .is_err()
        );
    }

    #[test]
    fn only_squashfs_and_erofs_are_mounted_by_default() {
        let policy = parse("").unwrap();

        assert_eq!(policy.image_filesystems, ["squashfs", "erofs"]);
    }

    #[test]
    fn an_admin_may_allow_ext4() {
        let policy = parse("image_filesystems = [\"squashfs\", \"ext4\"]\n").unwrap();

        assert_eq!(policy.image_filesystems, ["squashfs", "ext4"]);
    }

    #[test]
    fn an_unknown_image_filesystem_is_refused_at_its_key() {
        assert_eq!(
            error_line_and_key("image_filesystems = [\"ntfs3\"]\n"),
            (1, Some("image_filesystems".into()))
        );
    }

    #[test]
    fn no_capability_is_allowed_by_default() {
        let policy = parse("").unwrap();

        assert!(policy.allowed_capabilities.is_empty());
    }

    #[test]
    fn an_unknown_allowed_capability_is_refused_at_its_key() {
        assert_eq!(
            error_line_and_key(
                "\nallowed_capabilities = [\"CAP_NET_BIND_SERVICE\", \"net_raw\"]\n"
            ),
            (2, Some("allowed_capabilities".into()))
        );
    }

    #[test]
    fn bind_sources_and_allowed_devices_are_empty_by_default_and_read_from_the_file() {
        let default = parse("").unwrap();
        let set =
            parse("bind_sources = [\"/srv/shared\"]\nallowed_devices = [\"/dev/fuse\"]\n").unwrap();

        assert!(default.bind_sources.is_empty() && default.allowed_devices.is_empty());
        assert_eq!(set.bind_sources, [PathBuf::from("/srv/shared")]);
        assert_eq!(set.allowed_devices, [PathBuf::from("/dev/fuse")]);
    }

    #[test]
    fn a_relative_bind_source_or_a_device_outside_dev_is_refused_at_its_key() {
        assert_eq!(
            error_line_and_key("bind_sources = [\"srv\"]\n"),
            (1, Some("bind_sources".into()))
        );
        assert_eq!(
            error_line_and_key("\nallowed_devices = [\"/etc/passwd\"]\n"),
            (2, Some("allowed_devices".into()))
        );
    }

    #[test]
    fn credential_roots_are_systemd_s_stores_by_default_and_read_from_the_file() {
        let default = parse("").unwrap();
        let set = parse("credential_roots = [\"/srv/creds\"]\n").unwrap();

        assert_eq!(
            default.credential_roots,
            DEFAULT_CREDENTIAL_ROOTS.map(PathBuf::from)
        );
        assert_eq!(set.credential_roots, [PathBuf::from("/srv/creds")]);
    }

    #[test]
    fn a_relative_credential_root_or_systemd_creds_is_refused_at_its_key() {
        assert_eq!(
            error_line_and_key("credential_roots = [\"etc/credstore\"]\n"),
            (1, Some("credential_roots".into()))
        );
        assert_eq!(
            error_line_and_key("\nsystemd_creds = \"systemd-creds\"\n"),
            (2, Some("systemd_creds".into()))
        );
    }

    #[test]
    fn config_with_unknown_key_is_an_error() {
        assert_eq!(
            error_line_and_key("allow_root = 1"),
            (1, Some("allow_root".into()))
        );
    }

    #[test]
    fn the_host_databases_are_not_configurable() {
        assert_eq!(
            error_line_and_key("passwd = \"/tmp/passwd\"\n"),
            (1, Some("passwd".into()))
        );
    }

    #[test]
    fn a_relative_image_root_is_refused_at_its_line() {
        assert_eq!(
            error_line_and_key("image_roots = [\n  \"/srv\",\n  \"srv\",\n]\n"),
            (1, Some("image_roots".into()))
        );
    }

    #[test]
    fn a_uid_given_as_a_string_is_a_wrong_type() {
        assert_eq!(
            error_line_and_key("\ndynamic_uid_max = \"65519\"\n"),
            (2, Some("dynamic_uid_max".into()))
        );
    }

    #[test]
    fn grantable_ports_are_every_privileged_port_unless_set() {
        let default = parse("").unwrap();
        let set = parse("grantable_ports = [80, 443]\n").unwrap();

        assert_eq!(default.grantable_ports, (1..=1023).collect::<Vec<u16>>());
        assert_eq!(set.grantable_ports, [80, 443]);
    }

    #[test]
    fn an_unprivileged_grantable_port_is_refused_at_its_key() {
        assert_eq!(
            error_line_and_key("\ngrantable_ports = [80, 8080]\n"),
            (2, Some("grantable_ports".into()))
        );
    }
}
