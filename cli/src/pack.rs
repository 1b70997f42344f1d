//! `berth image pack DIR -o FILE`: builds a squashfs or erofs image with the well-known tool
//! (mksquashfs, mkfs.erofs), run by the CLI with the caller's rights: it reads the caller's
//! directory and writes the caller's file, and berthd takes no part.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::args::PackFormat;

/// The command that packs `dir` into `output`; `quiet` leaves out the tool's progress output.
pub fn command(dir: &Path, output: &Path, format: PackFormat, quiet: bool) -> Command {
    let mut cmd;
    match format {
        PackFormat::Squashfs => {
            cmd = Command::new("mksquashfs");
            cmd.arg(dir).arg(output);
            // Never append to an existing file (it is refused before anyway), keep owners
            // and xattrs as they are in the tree.
            cmd.args(["-noappend", "-xattrs"]);
            if quiet {
                cmd.args(["-quiet", "-no-progress"]);
            }
        }
        PackFormat::Erofs => {
            cmd = Command::new("mkfs.erofs");
            if quiet {
                cmd.arg("--quiet");
            }
            cmd.arg(output).arg(dir);
        }
    }
    cmd
}

fn tool(format: PackFormat) -> (&'static str, &'static str) {
    match format {
        PackFormat::Squashfs => ("mksquashfs", "squashfs-tools"),
        PackFormat::Erofs => ("mkfs.erofs", "erofs-utils"),
    }
}

/// Packs `dir` into `output`, which must not exist yet.
pub fn pack(dir: &Path, output: &Path, format: PackFormat, quiet: bool) -> anyhow::Result<()> {
    if !std::fs::metadata(dir)
        .with_context(|| format!("{}", dir.display()))?
        .is_dir()
    {
        bail!("{} is not a directory", dir.display());
    }
    if std::fs::symlink_metadata(output).is_ok() {
        bail!("{} exists already; remove it first", output.display());
    }
    let (program, package) = tool(format);
    let status = match command(dir, output, format, quiet).status() {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{program} is not installed (Debian package {package})")
        }
        Err(e) => return Err(e).with_context(|| format!("running {program}")),
    };
    if !status.success() {
        // The tool said why on stderr; what it left behind is not an image.
        let _ = std::fs::remove_file(output);
        bail!("{program} failed ({status})");
    }
    Ok(())
}

/// The arguments of [`command`], for tests and messages.
pub fn arguments(cmd: &Command) -> Vec<OsString> {
    std::iter::once(cmd.get_program().to_owned())
        .chain(cmd.get_args().map(ToOwned::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn squashfs_never_appends_and_is_quiet_off_a_terminal() {
        let cmd = command(
            Path::new("/src"),
            Path::new("/out.raw"),
            PackFormat::Squashfs,
            true,
        );

        assert_eq!(
            arguments(&cmd),
            [
                "mksquashfs",
                "/src",
                "/out.raw",
                "-noappend",
                "-xattrs",
                "-quiet",
                "-no-progress"
            ]
        );
    }

    #[test]
    fn erofs_takes_the_output_first() {
        let cmd = command(
            Path::new("/src"),
            Path::new("/out.raw"),
            PackFormat::Erofs,
            false,
        );

        assert_eq!(arguments(&cmd), ["mkfs.erofs", "/out.raw", "/src"]);
    }

    #[test]
    fn an_existing_output_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let output: PathBuf = dir.path().join("out.raw");
        std::fs::write(&output, "mine").unwrap();

        let err = pack(dir.path(), &output, PackFormat::Squashfs, true).unwrap_err();

        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "mine");
    }
}
