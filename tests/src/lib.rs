//! berth's test kit: fixture images ([`ImageBuilder`], [`busybox_image`]), the in-sandbox
//! probe (binary `berth-probe`, its output read back with [`probe_output`]), an isolated
//! berthd+helper per test ([`Harness`]) and small `/proc` helpers.
//!
//! Environment: `BERTH_BIN_DIR` (directory of `berthd`, `berth-helper`, `berth`; default: the
//! cargo target dir of the running test), `BERTH_PROBE` (the probe binary; same default),
//! `BERTH_KEEP_TEST_DIR` (set: a dropped [`Harness`] keeps its directory for inspection).

pub mod attempts;
pub mod bench;
pub mod debian_images;
pub mod direct_spawn;
pub mod frozen_disk;
pub mod gpt_disk;
pub mod harness;
pub mod image;
pub mod procfs;
pub mod service_clients;
pub mod tarball;
pub mod varlink_raw;

pub use harness::{Harness, as_user, probe_output, wait_until};
pub use image::{
    ExtensionBuilder, ImageBuilder, RawFormat, busybox_image, busybox_raw_image, probe_path,
    raw_image,
};
pub use procfs::{ns_inode, open_fd_count, proc_status_field, process_exists};

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Finds binary `name` of the cargo target dir: in the directory named by `$dir_env_var` if
/// that is set, else as [`find_near_exe`] does.
pub fn locate_binary(name: &str, dir_env_var: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(dir_env_var) {
        let p = Path::new(&dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{name} not found in ${dir_env_var} = {}", p.display());
    }
    find_near_exe(name)
}

/// Finds `name` in the nearest ancestor directory of the current executable that holds it (a
/// test runs from `<target>/debug/deps/`, the binaries are in `<target>/debug/`).
pub fn find_near_exe(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} not found next to {} or in any of its parent directories \
         (build it first: `cargo build --workspace`)",
        exe.display()
    )
}
