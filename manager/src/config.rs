//! berthd's configuration file (`--config`, default `/etc/berth/berthd.toml`).
//!
//! A TOML subset of `key = value` lines: `dynamic_uid_min`, `dynamic_uid_max` (the range berthd
//! allocates from; berth-helper enforces its own floor on top), `admin_group` (members may
//! change state besides root) and `log_max_bytes` (a service's log is moved aside to
//! `previous.log` past this size, so one service keeps at most about twice it). A missing file
//! means the defaults.

use std::path::{Path, PathBuf};

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
            uid_min: 61184,
            uid_max: 65519,
            admin_group: "berth-admin".into(),
            log_max_bytes: LOG_MAX_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).map_err(|(line, reason)| ConfigError::Parse {
                path: path.to_owned(),
                line,
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, (usize, String)> {
        let mut config = Config::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| (index + 1, reason);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err("expected key = value".into()))?;
            let value = value.trim();
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| err(format!("not a number: {value}")))
            };
            match key.trim() {
                "dynamic_uid_min" => config.uid_min = number()?,
                "dynamic_uid_max" => config.uid_max = number()?,
                "admin_group" => config.admin_group = value.trim_matches('"').to_string(),
                "log_max_bytes" => {
                    config.log_max_bytes = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 4096)
                        .ok_or_else(|| {
                            err(format!("log_max_bytes must be at least 4096: {value}"))
                        })?;
                }
                other => return Err(err(format!("unknown key {other}"))),
            }
        }
        if config.uid_min == 0 || config.uid_min > config.uid_max {
            return Err((
                0,
                "the dynamic range must be non-empty and exclude 0".into(),
            ));
        }
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
