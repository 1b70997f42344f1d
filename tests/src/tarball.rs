//! Tarball fixtures: a directory image packed by the system's `tar` (as users make them), and
//! hostile archives written header by header (the `tar` crate's Builder refuses hostile names).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// How [`pack`] compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The file name suffix: `.tar`, `.tar.gz`, `.tar.zst`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip => ".tar.gz",
            Compression::Zstd => ".tar.zst",
        }
    }
}

/// Packs the tree `dir` into `out` with `tar --numeric-owner` (and `--gzip` or `--zstd`),
/// readable by everyone (berthd reads it as user berth).
pub fn pack(dir: &Path, out: &Path, compression: Compression) -> Result<PathBuf> {
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(dir)
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(out);
    match compression {
        Compression::None => {}
        Compression::Gzip => {
            tar.arg("--gzip");
        }
        Compression::Zstd => {
            tar.arg("--zstd");
        }
    }
    let status = tar.arg(".").status().context("running tar")?;
    if !status.success() {
        bail!("tar -cf {} failed: {status}", out.display());
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(out.to_owned())
}

/// One entry of a hand-made archive. `kind` is the tar type flag: `b'0'` file, `b'1'` hard
/// link, `b'2'` symlink, `b'3'` character device, `b'4'` block device, `b'5'` directory,
/// `b'6'` FIFO.
pub struct RawEntry<'a> {
    pub kind: u8,
    pub name: &'a str,
    pub link: &'a str,
    pub data: &'a [u8],
}

impl RawEntry<'_> {
    pub fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
        RawEntry {
            kind: b'0',
            name,
            link: "",
            data,
        }
    }

    pub fn link<'a>(kind: u8, name: &'a str, target: &'a str) -> RawEntry<'a> {
        RawEntry {
            kind,
            name,
            link: target,
            data: b"",
        }
    }
}

fn raw_header(kind: u8, name: &str, link: &str, size: u64) -> Result<tar::Header> {
    let mut header = tar::Header::new_gnu();
    let old = header.as_old_mut();
    if name.len() > old.name.len() || link.len() > old.linkname.len() {
        bail!("raw tar names are at most 100 bytes: {name:?} -> {link:?}");
    }
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    Ok(header)
}

/// Writes an uncompressed archive of `entries` to `out`, names and link targets as given.
pub fn raw(out: &Path, entries: &[RawEntry<'_>]) -> Result<PathBuf> {
    let mut builder = tar::Builder::new(File::create(out)?);
    for e in entries {
        let header = raw_header(e.kind, e.name, e.link, e.data.len() as u64)?;
        builder.append(&header, e.data)?;
    }
    builder.into_inner()?.flush()?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(out.to_owned())
}

/// A gzip bomb: one file of `size` zero bytes, through `gzip -1` (about 1000:1).
pub fn gzip_bomb(out: &Path, size: u64) -> Result<PathBuf> {
    let mut gzip = Command::new("gzip")
        .arg("-1c")
        .stdin(Stdio::piped())
        .stdout(File::create(out)?)
        .spawn()
        .context("running gzip")?;
    let stdin = gzip.stdin.take().context("gzip stdin")?;
    let mut builder = tar::Builder::new(stdin);
    let header = raw_header(b'0', "zeros", "", size)?;
    builder.append(&header, io::repeat(0).take(size))?;
    drop(builder.into_inner()?);
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(out.to_owned())
}
