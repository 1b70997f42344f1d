//! Fixture images: portable-service directory images built from the host's busybox-static and
//! the `berth-probe` binary (with the shared libraries it needs).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where busybox comes from on the host.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Where [`ImageBuilder::probe`] installs the probe inside the image.
pub const PROBE_IN_IMAGE: &str = "/usr/bin/berth-probe";

/// Busybox applets linked in the image's `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "sleep", "ls", "touch", "id", "env", "true", "false", "printf",
    "mkdir", "ps", "kill", "rm", "ln", "chmod", "stat", "head", "tail", "wc", "grep", "sed",
    "hostname", "whoami", "readlink", "test", "[", "uname", "dd", "seq", "mount", "cp", "mv",
    "date", "pwd", "nc", "ip", "yes",
];

/// Directories every image has (mode 0755 except the 1777 tmp dirs).
const STANDARD_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("etc", 0o755),
    ("usr", 0o755),
    ("usr/lib", 0o755),
    ("usr/bin", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o755),
    ("dev", 0o755),
    ("run", 0o755),
    ("sys", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("home", 0o755),
    ("root", 0o755),
];

/// The `os-release` of an image unless [`ImageBuilder::os_release`] replaces it.
pub const DEFAULT_OS_RELEASE: &str = "ID=berth-test\nNAME=\"berth test image\"\n\
VERSION_ID=1\nPRETTY_NAME=\"berth test image 1\"\n";

/// A minimal user database: root and nobody.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// One item added by the caller, applied in order after the standard content.
enum Entry {
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Binary {
        host: Option<PathBuf>,
        path: String,
    },
}

/// Builds a directory image:
/// `ImageBuilder::new(dir).probe().unit("a.service", "...").build()?`.
///
/// Always present: `bin/busybox` with the [`APPLETS`] as symlinks, the standard directories,
/// `etc/passwd` + `etc/group` (root, nobody) and, unless disabled, `etc/os-release`. Everything
/// is world-readable (berthd reads images as user `berth`), and the parents of the image that
/// lie inside the temp directory are made traversable. Building into an existing directory
/// adds to it.
pub struct ImageBuilder {
    dir: PathBuf,
    os_release: Option<String>,
    entries: Vec<Entry>,
}

impl ImageBuilder {
    /// Starts an image at `dir` (created by [`build`](Self::build) if missing).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            os_release: Some(DEFAULT_OS_RELEASE.to_owned()),
            entries: Vec::new(),
        }
    }

    /// Replaces the `etc/os-release` text.
    pub fn os_release(mut self, text: &str) -> Self {
        self.os_release = Some(text.to_owned());
        self
    }

    /// Builds the image without any `os-release`.
    pub fn without_os_release(mut self) -> Self {
        self.os_release = None;
        self
    }

    /// Installs the probe at [`PROBE_IN_IMAGE`] with its shared libraries (see [`probe_path`]).
    pub fn probe(mut self) -> Self {
        self.entries.push(Entry::Binary {
            host: None,
            path: PROBE_IN_IMAGE.to_owned(),
        });
        self
    }

    /// Installs host binary `host` at `path_in_image`, with the shared libraries it needs at
    /// their host paths.
    pub fn binary(mut self, host: &Path, path_in_image: &str) -> Self {
        self.entries.push(Entry::Binary {
            host: Some(host.to_owned()),
            path: path_in_image.to_owned(),
        });
        self
    }

    /// Writes unit file `usr/lib/systemd/system/<name>`.
    pub fn unit(self, name: &str, contents: &str) -> Self {
        self.file(&format!("usr/lib/systemd/system/{name}"), contents, 0o644)
    }

    /// Writes a file (parents created 0755); replaces an existing file or symlink.
    pub fn file(mut self, path_in_image: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        self.entries.push(Entry::File {
            path: path_in_image.to_owned(),
            contents: contents.as_ref().to_vec(),
            mode,
        });
        self
    }

    /// Creates a symlink to `target` (taken verbatim: may be absolute or dangling); replaces an
    /// existing file or symlink.
    pub fn symlink(mut self, path_in_image: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: path_in_image.to_owned(),
            target: target.to_owned(),
        });
        self
    }

    /// Creates a directory with `mode` (parents 0755).
    pub fn dir(mut self, path_in_image: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: path_in_image.to_owned(),
            mode,
        });
        self
    }

    /// Writes the image and returns its directory.
    pub fn build(self) -> Result<PathBuf> {
        let root = &self.dir;
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        chmod(root, 0o755)?;
        make_parents_traversable(root)?;
        for (d, mode) in STANDARD_DIRS {
            make_dir(root, d, *mode)?;
        }
        let busybox = root.join("bin/busybox");
        copy_file(Path::new(HOST_BUSYBOX), &busybox, 0o755)?;
        for applet in APPLETS {
            place_symlink(root, &format!("bin/{applet}"), "busybox")?;
        }
        write_file(root, "etc/passwd", PASSWD.as_bytes(), 0o644)?;
        write_file(root, "etc/group", GROUP.as_bytes(), 0o644)?;
        if let Some(text) = &self.os_release {
            write_file(root, "etc/os-release", text.as_bytes(), 0o644)?;
        }
        for e in &self.entries {
            match e {
                Entry::File {
                    path,
                    contents,
                    mode,
                } => write_file(root, path, contents, *mode)?,
                Entry::Symlink { path, target } => place_symlink(root, path, target)?,
                Entry::Dir { path, mode } => make_dir(root, path, *mode)?,
                Entry::Binary { host, path } => {
                    let host = match host {
                        Some(h) => h.clone(),
                        None => probe_path()?,
                    };
                    install_binary(root, &host, path)?;
                }
            }
        }
        Ok(self.dir)
    }
}

/// The release file of an extension unless [`ExtensionBuilder::release`] replaces it: it fits
/// [`DEFAULT_OS_RELEASE`].
pub const DEFAULT_EXTENSION_RELEASE: &str = "ID=berth-test\nVERSION_ID=1\n";

/// Builds a sysext-style extension directory: only what is added, plus
/// `usr/lib/extension-release.d/extension-release.<release name>` (by default the directory's
/// own name, as attach expects):
/// `ExtensionBuilder::new(dir).unit("a.service", "...").build()?`.
pub struct ExtensionBuilder {
    dir: PathBuf,
    release_name: String,
    release: String,
    files: Vec<(String, Vec<u8>)>,
}

impl ExtensionBuilder {
    /// Starts an extension at `dir` (its base name is the extension's name).
    pub fn new(dir: &Path) -> Self {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // portabled naming: `app_1.2` is extension `app`.
        let name = name
            .split_once('_')
            .map_or(name.clone(), |(n, _)| n.to_owned());
        Self {
            dir: dir.to_owned(),
            release_name: name,
            release: DEFAULT_EXTENSION_RELEASE.to_owned(),
            files: Vec::new(),
        }
    }

    /// Replaces the release file's text.
    pub fn release(mut self, text: &str) -> Self {
        self.release = text.to_owned();
        self
    }

    /// Names the release file `extension-release.<name>` instead of after the directory.
    pub fn release_name(mut self, name: &str) -> Self {
        self.release_name = name.to_owned();
        self
    }

    /// Writes unit file `usr/lib/systemd/system/<name>`.
    pub fn unit(self, name: &str, contents: &str) -> Self {
        self.file(&format!("usr/lib/systemd/system/{name}"), contents)
    }

    /// Writes a file (mode 0644, parents 0755).
    pub fn file(mut self, path_in_image: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((path_in_image.to_owned(), contents.as_ref().to_vec()));
        self
    }

    /// Writes the extension and returns its directory.
    pub fn build(self) -> Result<PathBuf> {
        let root = &self.dir;
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        chmod(root, 0o755)?;
        make_parents_traversable(root)?;
        let release = format!(
            "usr/lib/extension-release.d/extension-release.{}",
            self.release_name
        );
        write_file(root, &release, self.release.as_bytes(), 0o644)?;
        for (path, contents) in &self.files {
            write_file(root, path, contents, 0o644)?;
        }
        Ok(self.dir)
    }
}

/// A standard image `dir/name`: busybox, the probe, and unit `<name>.service` (Type=simple)
/// running `/bin/sh -c 'echo hello from <name>; exec sleep 1000'`.
pub fn busybox_image(dir: &Path, name: &str) -> Result<PathBuf> {
    let unit = format!(
        "[Unit]\nDescription=berth test service {name}\n\n\
         [Service]\nType=simple\n\
         ExecStart=/bin/sh -c 'echo hello from {name}; exec sleep 1000'\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    ImageBuilder::new(&dir.join(name))
        .probe()
        .unit(&format!("{name}.service"), &unit)
        .build()
}

/// A file system an image directory can be packed into as a `.raw` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    Squashfs,
    Erofs,
    Ext4,
}

/// Packs the directory image `tree` into `out` (a `.raw` file) with the format's own tool
/// (mksquashfs, mkfs.erofs, mkfs.ext4 -d), owners and modes kept.
pub fn raw_image(tree: &Path, out: &Path, format: RawFormat) -> Result<PathBuf> {
    let mut cmd = match format {
        RawFormat::Squashfs => {
            let mut c = Command::new("mksquashfs");
            c.arg(tree)
                .arg(out)
                .args(["-noappend", "-quiet", "-no-progress"]);
            c
        }
        RawFormat::Erofs => {
            let mut c = Command::new("mkfs.erofs");
            c.arg("--quiet").arg(out).arg(tree);
            c
        }
        RawFormat::Ext4 => {
            let size_kib = tree_size(tree)? / 1024 * 2 + 4096;
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-d"])
                .arg(tree)
                .arg(out)
                .arg(format!("{size_kib}k"));
            c
        }
    };
    let _ = fs::remove_file(out);
    let output = cmd
        .output()
        .with_context(|| format!("running {:?} for {}", format, out.display()))?;
    if !output.status.success() {
        bail!(
            "{format:?} of {} failed: {}",
            tree.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(out.to_owned())
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            total += tree_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// [`busybox_image`] `dir/name` packed into `dir/<name>.raw`.
pub fn busybox_raw_image(dir: &Path, name: &str, format: RawFormat) -> Result<PathBuf> {
    let tree = busybox_image(&dir.join("trees"), name)?;
    raw_image(&tree, &dir.join(format!("{name}.raw")), format)
}

/// The host path of the probe binary: `$BERTH_PROBE` if set, else `berth-probe` in the cargo
/// target dir of the running test.
pub fn probe_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_PROBE") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("$BERTH_PROBE = {} is not a file", p.display());
        }
        return Ok(p);
    }
    crate::find_near_exe("berth-probe")
}

/// The absolute paths of the shared libraries (and the ELF interpreter) `bin` needs, from
/// `ldd`; empty for a static binary.
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("not a dynamic executable")
        || stderr.contains("not a dynamic executable")
        || stdout.contains("statically linked")
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {stderr}", bin.display());
    }
    parse_ldd(&stdout)
}

/// Parses `ldd` output into library paths.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path_part = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd: library {} not found", name.trim());
                }
                rest
            }
            None => line,
        };
        let path = path_part.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Copies `host` to `path` in the image and its libraries to their host paths in the image.
fn install_binary(root: &Path, host: &Path, path: &str) -> Result<()> {
    let dest = in_image(root, path)?;
    make_parents(root, path)?;
    remove_if_present(&dest)?;
    copy_file(host, &dest, 0o755)?;
    for lib in shared_libraries(host)? {
        let rel = lib.to_string_lossy().into_owned();
        let lib_dest = in_image(root, &rel)?;
        if lib_dest.exists() {
            continue;
        }
        make_parents(root, &rel)?;
        copy_file(&lib, &lib_dest, 0o755)?;
    }
    Ok(())
}

/// The host path of `rel` inside the image; refuses `..` and empty paths.
fn in_image(root: &Path, rel: &str) -> Result<PathBuf> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let mut out = root.to_owned();
    let mut any = false;
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                any = true;
            }
            Component::CurDir => {}
            _ => bail!("bad path in image: {}", rel.display()),
        }
    }
    if !any {
        bail!("empty path in image");
    }
    Ok(out)
}

/// Creates the parent directories of `rel` (0755); refuses to go through a symlink, so no
/// write can leave the image.
fn make_parents(root: &Path, rel: &str) -> Result<()> {
    let full = in_image(root, rel)?;
    let parent = full.parent().unwrap_or(root);
    let sub = parent.strip_prefix(root).unwrap_or(Path::new(""));
    let mut cur = root.to_owned();
    for c in sub.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!("{} is a symlink inside the image", cur.display())
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} is not a directory", cur.display()),
            Err(_) => {
                fs::create_dir(&cur).with_context(|| format!("mkdir {}", cur.display()))?;
                chmod(&cur, 0o755)?;
            }
        }
    }
    Ok(())
}

/// Creates directory `rel` with `mode` (or sets the mode if it exists).
fn make_dir(root: &Path, rel: &str, mode: u32) -> Result<()> {
    make_parents(root, rel)?;
    let p = in_image(root, rel)?;
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} exists and is not a directory", p.display()),
        Err(_) => fs::create_dir(&p).with_context(|| format!("mkdir {}", p.display()))?,
    }
    chmod(&p, mode)
}

/// Writes a file in the image with `mode`.
fn write_file(root: &Path, rel: &str, contents: &[u8], mode: u32) -> Result<()> {
    make_parents(root, rel)?;
    let p = in_image(root, rel)?;
    remove_if_present(&p)?;
    fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
    chmod(&p, mode)
}

/// Creates a symlink in the image.
fn place_symlink(root: &Path, rel: &str, target: &str) -> Result<()> {
    make_parents(root, rel)?;
    let p = in_image(root, rel)?;
    remove_if_present(&p)?;
    symlink(target, &p).with_context(|| format!("symlink {}", p.display()))
}

/// Removes a file or symlink at `p`; a directory there is an error.
fn remove_if_present(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", p.display()),
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// Copies a host file (following symlinks) and sets `mode`.
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    remove_if_present(to)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    chmod(to, mode)
}

/// Sets the permission bits of `p`.
fn chmod(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, p.display()))
}

/// Adds `o+rx,g+rx` to the ancestors of `dir` that lie strictly inside the temp directory
/// (tempdirs are created 0700); ancestors elsewhere are left alone.
pub fn make_parents_traversable(dir: &Path) -> Result<()> {
    let tmp = fs::canonicalize(std::env::temp_dir())?;
    let dir = fs::canonicalize(dir)?;
    for a in dir.ancestors().skip(1) {
        if a == tmp || !a.starts_with(&tmp) {
            break;
        }
        let mode = fs::metadata(a)?.permissions().mode() & 0o7777;
        if mode & 0o055 != 0o055 {
            chmod(a, mode | 0o055)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc8b3f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0a1)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a2)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0a3)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn paths_stay_in_image() {
        let root = Path::new("/img");
        assert_eq!(in_image(root, "/etc/x").unwrap(), Path::new("/img/etc/x"));
        assert!(in_image(root, "../x").is_err());
        assert!(in_image(root, "/").is_err());
    }

    #[test]
    fn refuses_writing_through_symlink() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let r = ImageBuilder::new(&t.path().join("img"))
            .symlink("etc/evil", outside.to_str().unwrap())
            .file("etc/evil/file", "x", 0o644)
            .build();
        assert!(r.is_err());
        assert!(!outside.join("file").exists());
    }
}
