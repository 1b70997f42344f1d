//! berthd's configuration file (`--config`, default `/etc/berth/berthd.toml`), TOML.
//!
//! Keys, all optional: `dynamic_uid_min`, `dynamic_uid_max` (the range berthd allocates from;
//! berth-helper enforces its own floor on top), `admin_group` (members may change state besides
//! root, and read logs), `log_group` (members may read logs, as `adm` reads the journal) and
//! `log_max_bytes` (a service's log is moved aside to `previous.log` past this size, so one
//! service keeps at most about twice it), `image_search_dirs` (absolute directories searched for
//! images after `STATE/images`; portabled's `/etc/portables`, `/run/portables` and
//! `/var/lib/portables` by default), `profiles_dir` (the admin's profiles, over the built-in ones:
//! `/etc/berth/profiles` by default, see [`crate::profile`]), `forward_to_journal` (`auto`, the
//! default: services' output goes to the host's journal too when it has one; `yes`; `no`),
//! `host_resolv_conf` and `host_hosts` (the host's files berthd copies for the services,
//! `/etc/resolv.conf` and `/etc/hosts` by default, see [`crate::host_files`]),
//! `user_block_min`, `user_block_max` (the range attachments' blocks of 65536 host uids come
//! from, see [`crate::uid_blocks`]; systemd's container range 524288-1879048191 by default;
//! berth-helper enforces its own). Tarball imports are bounded by `tarball_max_bytes`
//! (file data unpacked), `tarball_max_entries`, `tarball_max_path_bytes`,
//! `tarball_max_name_bytes`, `tarball_max_depth` and `tarball_max_ratio` (decompressed bytes per
//! compressed byte, past the first 32 MiB): see [`TarLimits`] for the defaults. A missing file
//! means the defaults; an unknown key or a value of the wrong type is an error naming the file,
//! line and key.

use std::path::{Path, PathBuf};

use berth_protocol::config_file::{
    self, ConfigFile, DEFAULT_UID_RANGE, DEFAULT_USER_BLOCK_RANGE, KeyError,
};

use crate::image::kind::tar::TarLimits;
use crate::image::store;
use crate::logs::journal_fields::ForwardToJournal;

pub use berth_protocol::config_file::ConfigFileError as ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "dynamic_uid_min")]
    pub uid_min: u32,
    #[serde(rename = "dynamic_uid_max")]
    pub uid_max: u32,
    pub user_block_min: u32,
    pub user_block_max: u32,
    pub admin_group: String,
    pub log_group: String,
    pub log_max_bytes: u64,
    pub tarball_max_bytes: u64,
    pub tarball_max_entries: u64,
    pub tarball_max_path_bytes: usize,
    pub tarball_max_name_bytes: usize,
    pub tarball_max_depth: usize,
    pub tarball_max_ratio: u64,
    pub image_search_dirs: Vec<PathBuf>,
    pub profiles_dir: PathBuf,
    pub forward_to_journal: ForwardToJournal,
    pub host_resolv_conf: PathBuf,
    pub host_hosts: PathBuf,
}

/// Default `log_max_bytes`: 64 MiB.
pub const LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest `log_max_bytes`: below it a busy service would rotate on nearly every line.
const MIN_LOG_MAX_BYTES: u64 = 4096;

impl Default for Config {
    fn default() -> Self {
        Config {
            uid_min: DEFAULT_UID_RANGE.0,
            uid_max: DEFAULT_UID_RANGE.1,
            user_block_min: DEFAULT_USER_BLOCK_RANGE.0,
            user_block_max: DEFAULT_USER_BLOCK_RANGE.1,
            admin_group: "berth-admin".into(),
            // As Debian's journal readers.
            log_group: "adm".into(),
            log_max_bytes: LOG_MAX_BYTES,
            tarball_max_bytes: TarLimits::default().max_bytes,
            tarball_max_entries: TarLimits::default().max_entries,
            tarball_max_path_bytes: TarLimits::default().max_path_bytes,
            tarball_max_name_bytes: TarLimits::default().max_name_bytes,
            tarball_max_depth: TarLimits::default().max_depth,
            tarball_max_ratio: TarLimits::default().max_ratio,
            image_search_dirs: crate::image::pool::DEFAULT_SEARCH_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            profiles_dir: PathBuf::from(crate::profile::DEFAULT_DIR),
            forward_to_journal: ForwardToJournal::Auto,
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            host_hosts: PathBuf::from("/etc/hosts"),
        }
    }
}

/// The tarball limit keys, in the order [`Config::check`] reads them.
static TARBALL_KEYS: [&str; 6] = [
    "tarball_max_bytes",
    "tarball_max_entries",
    "tarball_max_path_bytes",
    "tarball_max_name_bytes",
    "tarball_max_depth",
    "tarball_max_ratio",
];

impl ConfigFile for Config {
    fn check(&self) -> Result<(), KeyError> {
        if self.log_max_bytes < MIN_LOG_MAX_BYTES {
            return Err(KeyError {
                keys: &["log_max_bytes"],
                reason: format!(
                    "must be at least {MIN_LOG_MAX_BYTES}, not {}",
                    self.log_max_bytes
                ),
            });
        }
        if !self.profiles_dir.is_absolute() {
            return Err(KeyError {
                keys: &["profiles_dir"],
                reason: format!("{} is not an absolute path", self.profiles_dir.display()),
            });
        }
        for (key, path) in [
            (&"host_resolv_conf", &self.host_resolv_conf),
            (&"host_hosts", &self.host_hosts),
        ] {
            if !path.is_absolute() {
                return Err(KeyError {
                    keys: std::slice::from_ref(key),
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        if let Some(dir) = self.image_search_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(KeyError {
                keys: &["image_search_dirs"],
                reason: format!("{} is not an absolute path", dir.display()),
            });
        }
        let tarball = [
            self.tarball_max_bytes,
            self.tarball_max_entries,
            self.tarball_max_path_bytes as u64,
            self.tarball_max_name_bytes as u64,
            self.tarball_max_depth as u64,
            self.tarball_max_ratio,
        ];
        if self.tarball_max_depth > store::MAX_DEPTH {
            return Err(KeyError {
                keys: &["tarball_max_depth"],
                reason: format!(
                    "must be at most {}, not {}",
                    store::MAX_DEPTH,
                    self.tarball_max_depth
                ),
            });
        }
        if let Some(i) = tarball.iter().position(|&value| value == 0) {
            return Err(KeyError {
                keys: std::slice::from_ref(&TARBALL_KEYS[i]),
                reason: "must be at least 1".into(),
            });
        }
        config_file::check_uid_range(self.uid_min, self.uid_max)?;
        config_file::check_user_block_range(self.user_block_min, self.user_block_max)?;
        if self.user_block_min <= self.uid_max && self.uid_min <= self.user_block_max {
            return Err(KeyError {
                keys: &["user_block_min", "user_block_max"],
                reason: format!(
                    "the uid block range {}-{} overlaps the dynamic range {}-{}",
                    self.user_block_min, self.user_block_max, self.uid_min, self.uid_max
                ),
            });
        }
        Ok(())
    }
}

impl Config {
    /// The bounds on one tarball import.
    pub fn tar_limits(&self) -> TarLimits {
        TarLimits {
            max_bytes: self.tarball_max_bytes,
            max_entries: self.tarball_max_entries,
            max_path_bytes: self.tarball_max_path_bytes,
            max_name_bytes: self.tarball_max_name_bytes,
            max_depth: self.tarball_max_depth,
            max_ratio: self.tarball_max_ratio,
            ..TarLimits::default()
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        config_file::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        config_file::parse(Path::new("/etc/berth/berthd.toml"), text)
    }

    fn error_line_and_key(text: &str) -> (usize, Option<String>) {
        match parse(text) {
            Err(ConfigError::Invalid { line, key, .. }) => (line, key),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn log_max_bytes_is_read_with_underscores_and_bounded_below() {
        let config = parse("log_max_bytes = 64_000_000\n").unwrap();

        assert_eq!(config.log_max_bytes, 64_000_000);
        assert_eq!(
            error_line_and_key("\nlog_max_bytes = 10\n"),
            (2, Some("log_max_bytes".into()))
        );
    }

    #[test]
    fn tarball_limits_are_read_and_zero_is_refused() {
        let config = parse("tarball_max_bytes = 1_000\ntarball_max_ratio = 7\n").unwrap();

        let limits = config.tar_limits();
        assert_eq!((limits.max_bytes, limits.max_ratio), (1_000, 7));
        assert_eq!(limits.max_entries, TarLimits::default().max_entries);
        assert_eq!(
            error_line_and_key("\ntarball_max_entries = 0\n"),
            (2, Some("tarball_max_entries".into()))
        );
        assert_eq!(
            error_line_and_key("tarball_max_depth = 257\n"),
            (1, Some("tarball_max_depth".into()))
        );
    }

    #[test]
    fn a_comment_after_the_admin_group_is_not_part_of_its_name() {
        let config = parse("admin_group = \"nogroup\" # ops team\n").unwrap();

        assert_eq!(config.admin_group, "nogroup");
    }

    #[test]
    fn keys_override_the_defaults() {
        let config = parse(
            "dynamic_uid_min = 70000\ndynamic_uid_max = 70100\nadmin_group = \"ops\"\nlog_group = \"readers\"\n",
        )
        .unwrap();

        assert_eq!(
            config,
            Config {
                uid_min: 70000,
                uid_max: 70100,
                admin_group: "ops".into(),
                log_group: "readers".into(),
                log_max_bytes: LOG_MAX_BYTES,
                ..Config::default()
            }
        );
    }

    #[test]
    fn image_search_dirs_default_to_portableds_and_can_be_set() {
        let config = parse("image_search_dirs = [\"/srv/images\"]\n").unwrap();

        assert_eq!(
            Config::default().image_search_dirs,
            [
                PathBuf::from("/etc/portables"),
                "/run/portables".into(),
                "/var/lib/portables".into()
            ]
        );
        assert_eq!(config.image_search_dirs, [PathBuf::from("/srv/images")]);
    }

    #[test]
    fn profiles_dir_defaults_to_etc_berth_profiles_and_must_be_absolute() {
        let config = parse("profiles_dir = \"/srv/profiles\"\n").unwrap();

        assert_eq!(
            Config::default().profiles_dir,
            PathBuf::from("/etc/berth/profiles")
        );
        assert_eq!(config.profiles_dir, PathBuf::from("/srv/profiles"));
        assert_eq!(
            error_line_and_key("profiles_dir = \"profiles\"\n"),
            (1, Some("profiles_dir".into()))
        );
    }

    #[test]
    fn the_host_files_default_to_the_host_s_own_and_must_be_absolute() {
        let config = parse("host_resolv_conf = \"/run/test/resolv.conf\"\n").unwrap();

        assert_eq!(
            config.host_resolv_conf,
            PathBuf::from("/run/test/resolv.conf")
        );
        assert_eq!(Config::default().host_hosts, PathBuf::from("/etc/hosts"));
        assert_eq!(
            error_line_and_key("\nhost_hosts = \"hosts\"\n"),
            (2, Some("host_hosts".into()))
        );
    }

    #[test]
    fn a_relative_image_search_dir_is_refused() {
        assert_eq!(
            error_line_and_key("image_search_dirs = [\"images\"]\n"),
            (1, Some("image_search_dirs".into()))
        );
    }

    #[test]
    fn unknown_key_names_its_line_and_itself() {
        assert_eq!(
            error_line_and_key("# c\nfoo = 1\n"),
            (2, Some("foo".into()))
        );
    }

    #[test]
    fn a_group_given_as_a_number_is_a_wrong_type() {
        assert_eq!(
            error_line_and_key("admin_group = 27\n"),
            (1, Some("admin_group".into()))
        );
    }

    #[test]
    fn range_including_root_is_refused() {
        assert_eq!(
            error_line_and_key("dynamic_uid_min = 0\n"),
            (1, Some("dynamic_uid_min".into()))
        );
    }

    #[test]
    fn the_uid_block_range_defaults_to_systemds_container_range_and_needs_a_whole_block() {
        let config = parse("user_block_min = 1_048_576\nuser_block_max = 2_097_151\n").unwrap();

        assert_eq!(
            (
                Config::default().user_block_min,
                Config::default().user_block_max
            ),
            (524_288, 1_879_048_191)
        );
        assert_eq!(
            (config.user_block_min, config.user_block_max),
            (1_048_576, 2_097_151)
        );
        assert_eq!(
            error_line_and_key("user_block_min = 600_000\nuser_block_max = 700_000\n"),
            (2, Some("user_block_max".into()))
        );
        assert_eq!(
            error_line_and_key("user_block_min = 1\nuser_block_max = 200_000\n"),
            (1, Some("user_block_min".into()))
        );
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
    }
}
