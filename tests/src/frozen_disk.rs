//! A small ext4 on a loop device mounted over a directory, which a test can freeze (FIFREEZE:
//! every write to it then blocks, as on a stalled disk). Unmounted (lazily) when dropped; the
//! loop device goes with the last reference (`mount -o loop` sets autoclear).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

pub struct FrozenDisk {
    _image: TempDir,
    mount: PathBuf,
    frozen: bool,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {args:?}: {status}");
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("a test path that is not UTF-8")
}

impl FrozenDisk {
    /// Mounts a fresh 32 MiB ext4 over `dir` (not frozen yet).
    pub fn mount_over(dir: &Path) -> Result<FrozenDisk> {
        let image = tempfile::tempdir()?;
        let file = image.path().join("disk.img");
        std::fs::File::create(&file)?.set_len(32 << 20)?;
        run("mkfs.ext4", &["-q", "-F", path_str(&file)?])?;
        run("mount", &["-o", "loop", path_str(&file)?, path_str(dir)?])?;
        Ok(FrozenDisk {
            _image: image,
            mount: dir.to_path_buf(),
            frozen: false,
        })
    }

    pub fn freeze(&mut self) -> Result<()> {
        run("fsfreeze", &["-f", path_str(&self.mount)?])?;
        self.frozen = true;
        Ok(())
    }

    pub fn thaw(&mut self) -> Result<()> {
        if std::mem::take(&mut self.frozen) {
            run("fsfreeze", &["-u", path_str(&self.mount)?])?;
        }
        Ok(())
    }
}

impl Drop for FrozenDisk {
    fn drop(&mut self) {
        let _ = self.thaw();
        // Lazily: a supervisor may still hold a file of it open.
        if let Some(mount) = self.mount.to_str() {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
    }
}
