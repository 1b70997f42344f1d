//! Portable-service images of stock Debian packages, built with debootstrap: the distribution's
//! unit files untouched, the portable conventions added (`PORTABLE_PREFIXES=` in os-release,
//! empty `/etc/resolv.conf`, `/etc/machine-id` and `/etc/hosts` placeholders), packed as
//! squashfs.
//!
//! Both steps are cached under [`CACHE_DIR`] (`BERTH_TEST_CACHE` overrides it): the debootstrap
//! tree keyed by suite and package list, the squashfs keyed by that tree and what the
//! conventions add, so only the first run on a machine pays for the download (about 30 s per
//! tree from deb.debian.org) and the packing. Concurrent builders (parallel tests, other test
//! binaries) wait for each other on a lock file. Any failure is an error: there is no fallback
//! and no skip. `BERTH_DEBIAN_MIRROR` names the mirror (default [`DEFAULT_MIRROR`]).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The cache's default place.
pub const CACHE_DIR: &str = "/var/cache/berth-tests";
/// The mirror debootstrap downloads from unless `BERTH_DEBIAN_MIRROR` says otherwise.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The suite of every image here.
pub const SUITE: &str = "bookworm";
/// Bumped when what [`DebianImage::build`] adds to the tree changes, so that cached images are
/// rebuilt.
const CONVENTIONS_VERSION: u32 = 1;

/// One image: its packages, the unit prefixes it exports, its version.
#[derive(Debug, Clone)]
pub struct DebianImage {
    /// The image's name (`redis` gives `redis_<version>.raw`).
    pub name: &'static str,
    /// The version in the file name and in os-release's `IMAGE_VERSION=`.
    pub version: u32,
    /// Installed with `debootstrap --include=`.
    pub packages: &'static [&'static str],
    /// `PORTABLE_PREFIXES=` of its os-release.
    pub prefixes: &'static [&'static str],
}

/// Debian's redis-server at image version `version` (each version is a separate build of the
/// same tree: a "rebuilt" image, as a new release of the same packages would be).
pub fn redis(version: u32) -> DebianImage {
    DebianImage {
        name: "redis",
        version,
        packages: &["redis-server"],
        prefixes: &["redis"],
    }
}

/// Debian's nginx-light at image version `version`.
pub fn nginx(version: u32) -> DebianImage {
    DebianImage {
        name: "nginx",
        version,
        packages: &["nginx-light"],
        prefixes: &["nginx"],
    }
}

/// The file every image carries with its build's version, so a test can tell which version a
/// running service was started from.
pub const BUILD_STAMP: &str = "usr/lib/berth-test-build";

impl DebianImage {
    /// The image's file name, `NAME_VERSION.raw`.
    pub fn file_name(&self) -> String {
        format!("{}_{}.raw", self.name, self.version)
    }

    /// The cached squashfs image, built (and its tree debootstrapped) first if missing.
    pub fn build(&self) -> Result<PathBuf> {
        let cache = cache_dir();
        let tree = base_tree(&cache, self.packages)?;
        let key = format!(
            "{}-c{CONVENTIONS_VERSION}-{}",
            tree_key(self.packages),
            self.prefixes.join(",")
        );
        let dir = cache
            .join("images")
            .join(format!("{}-{:08x}", self.name, crc(&key)));
        let out = dir.join(self.file_name());
        let _lock = CacheLock::take(&cache)?;
        if out.is_file() {
            return Ok(out);
        }
        fs::create_dir_all(&dir)?;
        let work = tempfile::Builder::new()
            .prefix(&format!(".{}-", self.file_name()))
            .tempdir_in(&dir)?;
        let root = work.path().join("root");
        copy_tree(&tree, &root)?;
        self.add_conventions(&root)?;
        let packed = work.path().join(self.file_name());
        let status = Command::new("mksquashfs")
            .arg(&root)
            .arg(&packed)
            .args(["-noappend", "-quiet", "-no-progress"])
            .status()
            .context("running mksquashfs (scripts/setup-debian.sh installs squashfs-tools)")?;
        if !status.success() {
            bail!("mksquashfs of {} failed ({status})", root.display());
        }
        fs::set_permissions(&packed, fs::Permissions::from_mode(0o644))?;
        fs::rename(&packed, &out)?;
        Ok(out)
    }

    /// The cached debootstrap tree the image is packed from (read-only use: the image's files
    /// as they are in it, e.g. to look up its users).
    pub fn tree(&self) -> Result<PathBuf> {
        base_tree(&cache_dir(), self.packages)
    }

    /// The uid and primary gid of `user` in the image's own `/etc/passwd`.
    pub fn user_ids(&self, user: &str) -> Result<(u32, u32)> {
        let path = self.tree()?.join("etc/passwd");
        let passwd =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let fields: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&user))
            .with_context(|| format!("no user {user} in the {} image's /etc/passwd", self.name))?;
        let id = |i: usize| -> Result<u32> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("a bad /etc/passwd line for {user}: {fields:?}"))
        };
        Ok((id(2)?, id(3)?))
    }

    /// Puts the image in `dir` (a hard link to the cached file where the file system allows,
    /// a copy otherwise) and returns its path there.
    pub fn place_in(&self, dir: &Path) -> Result<PathBuf> {
        let cached = self.build()?;
        let dest = dir.join(self.file_name());
        let _ = fs::remove_file(&dest);
        if fs::hard_link(&cached, &dest).is_err() {
            fs::copy(&cached, &dest)
                .with_context(|| format!("copying {} to {}", cached.display(), dest.display()))?;
        }
        Ok(dest)
    }

    /// The portable conventions, on a copy of the tree: os-release's prefixes and version,
    /// empty placeholders for the host's files, the build stamp. The unit files stay as the
    /// packages installed them.
    fn add_conventions(&self, root: &Path) -> Result<()> {
        // Debian's /etc/os-release is a symlink to ../usr/lib/os-release: edit the target.
        let os_release = root.join("usr/lib/os-release");
        let mut text = fs::read_to_string(&os_release)
            .with_context(|| format!("reading {}", os_release.display()))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = writeln!(text, "PORTABLE_PREFIXES={}", self.prefixes.join(" "));
        let _ = writeln!(
            text,
            "PORTABLE_PRETTY_NAME=\"Debian {SUITE} {}\"",
            self.packages.join(" ")
        );
        let _ = writeln!(text, "IMAGE_ID={}", self.name);
        let _ = writeln!(text, "IMAGE_VERSION={}", self.version);
        fs::write(&os_release, text)?;
        for placeholder in ["etc/resolv.conf", "etc/machine-id", "etc/hosts"] {
            let p = root.join(placeholder);
            // debootstrap leaves the build host's resolv.conf there, maybe as a symlink.
            let _ = fs::remove_file(&p);
            File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        }
        fs::write(
            root.join(BUILD_STAMP),
            format!("{} {}\n", self.name, self.version),
        )?;
        Ok(())
    }
}

/// The cache directory: `$BERTH_TEST_CACHE` or [`CACHE_DIR`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_CACHE").map_or_else(|| PathBuf::from(CACHE_DIR), PathBuf::from)
}

/// The key of a debootstrap tree: suite, variant and the sorted package list.
fn tree_key(packages: &[&str]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    format!("{SUITE}-minbase-{}", sorted.join(","))
}

fn crc(s: &str) -> u32 {
    crc32fast::hash(s.as_bytes())
}

/// The cached minbase tree of [`SUITE`] with `packages`, debootstrapped into
/// `cache/debootstrap/<key>/` when missing (into a temp dir first, renamed once complete, so
/// an interrupted build is never taken for a tree).
fn base_tree(cache: &Path, packages: &[&str]) -> Result<PathBuf> {
    let key = tree_key(packages);
    let dir = cache.join("debootstrap").join(&key);
    let _lock = CacheLock::take(cache)?;
    if dir.join("usr/lib/os-release").exists() {
        return Ok(dir);
    }
    let parent = cache.join("debootstrap");
    fs::create_dir_all(&parent)?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .tempdir_in(&parent)?;
    let target = work.path().join("root");
    let mirror = std::env::var("BERTH_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned());
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", packages.join(",")),
        ])
        .arg(SUITE)
        .arg(&target)
        .arg(&mirror)
        .output()
        .context("running debootstrap (scripts/setup-debian.sh installs it)")?;
    if !out.status.success() {
        let log =
            fs::read_to_string(target.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .fold(String::new(), |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            });
        bail!(
            "debootstrap {SUITE} with {} from {mirror} failed ({}):\n{}\n{}\ndebootstrap.log (tail):\n{tail}",
            packages.join(","),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    // What a build leaves that no image needs: the downloaded packages and the apt lists.
    for junk in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let d = target.join(junk);
        if d.is_dir() {
            for e in fs::read_dir(&d)?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    fs::remove_file(e.path())?;
                }
            }
        }
    }
    fs::rename(&target, &dir).with_context(|| format!("moving the tree to {}", dir.display()))?;
    Ok(dir)
}

/// Copies `from` to `to` with owners, modes, links and special files (`cp -a`).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp -a")?;
    if !status.success() {
        bail!(
            "cp -a {} {} failed ({status})",
            from.display(),
            to.display()
        );
    }
    Ok(())
}

/// An exclusive lock on the cache (flock of `cache/.lock`), held while it lives.
struct CacheLock {
    // Closing the file releases the lock.
    _file: File,
}

impl CacheLock {
    fn take(cache: &Path) -> Result<CacheLock> {
        fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let path = cache.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on an fd this function owns; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(CacheLock { _file: file })
    }
}
