//! Where berthd keeps things (DESIGN.md §3, "Paths").

use std::path::{Path, PathBuf};

/// The two directories of one berthd instance and everything derived from them.
#[derive(Debug, Clone)]
pub struct Paths {
    pub runtime: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn new(runtime: &Path, state: &Path) -> Paths {
        Paths {
            runtime: runtime.to_owned(),
            state: state.to_owned(),
        }
    }
    /// Public API socket, mode 0666.
    pub fn manager_socket(&self) -> PathBuf {
        self.runtime.join("io.berth.Manager")
    }
    /// Held (flock) by the running berthd.
    pub fn lock_file(&self) -> PathBuf {
        self.runtime.join("berthd.lock")
    }
    /// Holds the boot id once the enabled units were started at that boot, so a berthd that
    /// restarts within the same boot does not start them again (see `startup::boot_start`).
    pub fn boot_marker(&self) -> PathBuf {
        self.runtime.join("boot-started")
    }
    /// 0700, owned by the berth user.
    pub fn private_dir(&self) -> PathBuf {
        self.runtime.join("private")
    }
    pub fn helper_socket(&self) -> PathBuf {
        self.private_dir().join("io.berth.Helper")
    }
    /// Where supervisors bind `<unit>.sock`.
    pub fn supervise_dir(&self) -> PathBuf {
        self.private_dir().join("supervise")
    }
    pub fn supervisor_socket(&self, unit: &str) -> PathBuf {
        self.supervise_dir().join(format!("{unit}.sock"))
    }
    /// berthd's copies of the host's resolv.conf and hosts (see `host_files`).
    pub fn host_files_dir(&self) -> PathBuf {
        self.runtime.join("host")
    }
    /// The image pool.
    pub fn images_dir(&self) -> PathBuf {
        self.state.join("images")
    }
    pub fn attached_dir(&self) -> PathBuf {
        self.state.join("attached")
    }
    pub fn attachment_dir(&self, image: &str) -> PathBuf {
        self.attached_dir().join(image)
    }
    /// The attachment's persistent /var (`STATE/var/<image>`), 0700 (see `var_state`).
    pub fn var_dir(&self, image: &str) -> PathBuf {
        self.state.join("var").join(image)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state.join("logs")
    }
    /// Each unit's lifecycle record (`<unit>.json`), kept across berthd restarts.
    pub fn units_dir(&self) -> PathBuf {
        self.state.join("units")
    }
    /// The blocks of host uids handed to images (see `uid_blocks`).
    pub fn uid_blocks_file(&self) -> PathBuf {
        self.state.join("uid-blocks.json")
    }
    /// The directory of a unit's log files (see `logs::LogFiles`).
    pub fn unit_log_dir(&self, unit: &str) -> PathBuf {
        self.logs_dir().join(unit)
    }
}
