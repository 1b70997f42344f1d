//! berthd's configuration file (`--config`, default `/etc/berth/berthd.toml`).
//!
//! A TOML subset of `key = value` lines: `dynamic_uid_min`, `dynamic_uid_max` (the range berthd
//! allocates from; berth-helper enforces its own floor on top), `admin_group` (members may
//! change state besides root) and `log_max_bytes` (a service's log is moved aside to
//! `previous.log` past this size, so one service keeps at most about twice it). A missing file
//! means the defaults.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub uid_min: u32,
    pub uid_max: u32,
    pub admin_group: String,
    pub log_max_bytes: u64,
}

/// Default `log_max_bytes`: 64 MiB.
pub const LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            uid_min: berth_protocol::config_file::DEFAULT_UID_RANGE.0,
            uid_max: berth_protocol::config_file::DEFAULT_UID_RANGE.1,
            admin_group: "berth-admin".into(),
            log_max_bytes: LOG_MAX_BYTES,
        }
    }
}

pub use berth_protocol::config_file::ConfigFileError as ConfigError;
use berth_protocol::config_file::{self, LineError};

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        config_file::load(path, Config::default, Config::parse)
    }

    pub fn parse(text: &str) -> Result<Config, LineError> {
        let mut config = Config::default();
        for assignment in config_file::assignments(text) {
            let (line, key, value) = assignment?;
            match key {
                "dynamic_uid_min" => config.uid_min = config_file::number(line, value)?,
                "dynamic_uid_max" => config.uid_max = config_file::number(line, value)?,
                "admin_group" => config.admin_group = value.trim_matches('"').to_string(),
                "log_max_bytes" => {
                    config.log_max_bytes = config_file::number::<u64>(line, value)
                        .ok()
                        .filter(|n| *n >= 4096)
                        .ok_or_else(|| {
                            (
                                line,
                                format!("log_max_bytes must be at least 4096: {value}"),
                            )
                        })?;
                }
                other => return Err((line, format!("unknown key {other}"))),
            }
        }
        config_file::check_uid_range(config.uid_min, config.uid_max)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_max_bytes_is_read_and_bounded_below() {
        let config = Config::parse("log_max_bytes = 1048576\n").unwrap();

        assert_eq!(config.log_max_bytes, 1_048_576);
        assert!(Config::parse("log_max_bytes = 10\n").is_err());
    }

    #[test]
    fn keys_override_the_defaults() {
        let config = Config::parse(
            "dynamic_uid_min = 70000\ndynamic_uid_max = 70100\nadmin_group = \"ops\"\n",
        )
        .unwrap();

        assert_eq!(
            config,
            Config {
                uid_min: 70000,
                uid_max: 70100,
                admin_group: "ops".into(),
                log_max_bytes: LOG_MAX_BYTES,
            }
        );
    }

    #[test]
    fn unknown_key_names_its_line() {
        assert_eq!(Config::parse("# c\nfoo = 1\n").unwrap_err().0, 2);
    }

    #[test]
    fn range_including_root_is_refused() {
        assert!(Config::parse("dynamic_uid_min = 0\n").is_err());
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
