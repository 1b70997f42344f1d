//! The helper's configuration file (`--config`, default `/etc/berth/helper.toml`): the limits
//! of its floor policy, which [`crate::floor`] enforces on every request.

use std::path::{Path, PathBuf};

use berth_protocol::config_file::DEFAULT_UID_RANGE;

pub use berth_protocol::config_file::ConfigFileError as ConfigError;
use berth_protocol::config_file::{self, LineError};

/// Limits the helper enforces. Read from `--config` (a `key = value` file, TOML-compatible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorPolicy {
    pub uid_min: u32,
    pub uid_max: u32,
    /// Directories image roots must lie under; empty means any directory but the host root.
    pub image_roots: Vec<PathBuf>,
    /// Files listing host users and groups that dynamic IDs must never collide with.
    pub passwd: PathBuf,
    pub group: PathBuf,
}

impl Default for FloorPolicy {
    fn default() -> Self {
        FloorPolicy {
            uid_min: DEFAULT_UID_RANGE.0,
            uid_max: DEFAULT_UID_RANGE.1,
            image_roots: Vec::new(),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }
}

impl FloorPolicy {
    /// Reads the config file; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<FloorPolicy, ConfigError> {
        config_file::load(path, FloorPolicy::default, FloorPolicy::parse)
    }

    /// Parses `dynamic_uid_min = N`, `dynamic_uid_max = N` and `image_roots = ["/a", "/b"]`.
    pub fn parse(text: &str) -> Result<FloorPolicy, LineError> {
        let mut policy = FloorPolicy::default();
        for assignment in config_file::assignments(text) {
            let (line, key, value) = assignment?;
            match key {
                "dynamic_uid_min" => policy.uid_min = config_file::number(line, value)?,
                "dynamic_uid_max" => policy.uid_max = config_file::number(line, value)?,
                "image_roots" => {
                    let inner = value
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .ok_or((line, "expected a list [\"/dir\", ...]".to_string()))?;
                    policy.image_roots = inner
                        .split(',')
                        .map(|s| s.trim().trim_matches('"'))
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect();
                    if policy.image_roots.iter().any(|p| !p.is_absolute()) {
                        return Err((line, "image roots must be absolute".into()));
                    }
                }
                other => return Err((line, format!("unknown key {other}"))),
            }
        }
        config_file::check_uid_range(policy.uid_min, policy.uid_max)?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sets_range_and_roots() {
        let policy = FloorPolicy::parse(
            "# floor\ndynamic_uid_min = 70000\ndynamic_uid_max = 70010\nimage_roots = [\"/srv/img\"]\n",
        )
        .unwrap();

        assert_eq!((policy.uid_min, policy.uid_max), (70000, 70010));
        assert_eq!(policy.image_roots, vec![PathBuf::from("/srv/img")]);
    }

    #[test]
    fn config_with_unknown_key_is_an_error() {
        assert_eq!(FloorPolicy::parse("allow_root = 1").unwrap_err().0, 1);
    }
}
