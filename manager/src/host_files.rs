//! berthd's copies of the host's `/etc/resolv.conf` and `/etc/hosts` in `RUNTIME/host/`,
//! which the helper binds read-only over the image's placeholders (with the host's own
//! machine-id and localtime, which it opens itself).
//!
//! A bind holds an inode, and a host that replaces its resolv.conf by rename (as resolvconf,
//! DHCP clients and systemd-resolved do) leaves a bind of the old one stale: systemd #17155,
//! still open for portabled. So the services get berthd's copy, never the host's file, and
//! berthd rewrites the copy *in place* (same inode) when the source changes: every running
//! service sees the new content within [`REFRESH_INTERVAL`]. A rewrite is one write of the
//! whole content followed by a truncate to its length, so a reader sees the old or the new
//! file, or for an instant the new one with the old one's tail.
//!
//! The sources (berthd.toml `host_resolv_conf`, `host_hosts`) are followed through symlinks
//! and polled by `stat`: a change of inode, size, mtime or ctime makes berthd read them again
//! (at most [`MAX_BYTES`]). A source that vanishes or cannot be read keeps the copy as it was
//! (a host between two versions of the file should not leave services with none); one missing
//! at start-up gives an empty copy. The copies survive a berthd restart as the inodes running
//! services hold: a new berthd opens them, never replaces them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::sandbox::SandboxSpec;

use crate::daemon::Shared;

/// How often the sources are checked.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Most bytes of a source copied; a longer one is cut there (resolv.conf is a few hundred
/// bytes, a large hosts file some MiB of block lists at most).
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The copies are world-readable, as the host's files are.
const COPY_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum HostFilesError {
    #[error("cannot open the copy {path}: {source}")]
    OpenCopy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the copy {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("cannot write the copy {path}: {source}")]
    WriteCopy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies one version of a source without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One copy and its source.
#[derive(Debug)]
struct Copy {
    source: PathBuf,
    path: PathBuf,
    /// Opened for writing: the rewrites go through it.
    file: File,
    /// Opened for reading: what each spawn passes (a duplicate of it).
    reader: File,
    /// The source's version last copied (`None`: not yet, or it was missing).
    seen: Option<Stamp>,
    content: Vec<u8>,
}

impl Copy {
    fn open(dir: &Path, name: &str, source: &Path) -> Result<Copy, HostFilesError> {
        let path = dir.join(name);
        let open_error = |source| HostFilesError::OpenCopy {
            path: path.clone(),
            source,
        };
        // Never truncated on open: running services hold this inode.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(COPY_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        if !meta.file_type().is_file() {
            return Err(HostFilesError::NotRegular { path });
        }
        // As the copy's mode, whatever a umask or an earlier version left.
        file.set_permissions(std::fs::Permissions::from_mode(COPY_MODE))
            .map_err(open_error)?;
        let reader = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(open_error)?;
        let mut content = Vec::new();
        (&file)
            .take(MAX_BYTES)
            .read_to_end(&mut content)
            .map_err(open_error)?;
        let mut copy = Copy {
            source: source.to_owned(),
            path,
            file,
            reader,
            seen: None,
            content,
        };
        copy.refresh()?;
        Ok(copy)
    }

    /// Copies the source again if it changed; whether the copy changed.
    fn refresh(&mut self) -> Result<bool, HostFilesError> {
        let Ok(meta) = std::fs::metadata(&self.source) else {
            // Gone (for now): the copy stays; it is read again once it is back.
            self.seen = None;
            return Ok(false);
        };
        let stamp = Stamp::of(&meta);
        if self.seen == Some(stamp) {
            return Ok(false);
        }
        let mut content = Vec::new();
        let read =
            File::open(&self.source).and_then(|f| f.take(MAX_BYTES).read_to_end(&mut content));
        if let Err(e) = read {
            tracing::warn!(source = %self.source.display(), error = %e, "cannot read a host file; its copy stays as it was");
            return Ok(false);
        }
        self.seen = Some(stamp);
        if content == self.content {
            return Ok(false);
        }
        self.rewrite(&content)?;
        self.content = content;
        Ok(true)
    }

    /// Writes `content` over the copy in place: the inode stays the one services have bound.
    fn rewrite(&self, content: &[u8]) -> Result<(), HostFilesError> {
        use std::os::unix::fs::FileExt;
        let write_error = |source| HostFilesError::WriteCopy {
            path: self.path.clone(),
            source,
        };
        self.file.write_all_at(content, 0).map_err(write_error)?;
        self.file
            .set_len(content.len() as u64)
            .map_err(write_error)?;
        (&self.file).flush().map_err(write_error)
    }

    fn spawn_fd(&self) -> std::io::Result<OwnedFd> {
        Ok(self.reader.try_clone()?.into())
    }
}

/// The copies of the host's resolv.conf and hosts.
#[derive(Debug)]
pub struct HostFiles {
    resolv_conf: Copy,
    hosts: Copy,
}

impl HostFiles {
    /// Opens (or makes) the copies in `dir` and brings them up to date with the sources.
    pub fn open(dir: &Path, resolv_conf: &Path, hosts: &Path) -> Result<HostFiles, HostFilesError> {
        Ok(HostFiles {
            resolv_conf: Copy::open(dir, "resolv.conf", resolv_conf)?,
            hosts: Copy::open(dir, "hosts", hosts)?,
        })
    }

    /// Copies every source that changed again, in place; the paths of the copies that changed.
    pub fn refresh(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for copy in [&mut self.resolv_conf, &mut self.hosts] {
            match copy.refresh() {
                Ok(true) => changed.push(copy.path.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "a host file's copy is stale"),
            }
        }
        changed
    }

    /// Asks in `sandbox` for every host file (resolv.conf only for a service on the host's
    /// network: in a network namespace of its own the host's resolvers are out of reach) and
    /// returns the copies' descriptors in the order of
    /// [`berth_protocol::helper::spawn_extra_fds`].
    pub fn for_spawn(&self, sandbox: &mut SandboxSpec) -> std::io::Result<Vec<OwnedFd>> {
        let wanted = &mut sandbox.mounts.host_files;
        wanted.resolv_conf = !sandbox.namespaces.private_network;
        wanted.hosts = true;
        wanted.machine_id = true;
        wanted.localtime = true;
        let mut fds = Vec::with_capacity(2);
        if wanted.resolv_conf {
            fds.push(self.resolv_conf.spawn_fd()?);
        }
        fds.push(self.hosts.spawn_fd()?);
        Ok(fds)
    }
}

/// Keeps the copies current while berthd runs.
pub async fn keep_current(shared: Shared) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed = match shared.borrow_mut().host_files.as_mut() {
            Some(files) => files.refresh(),
            None => return,
        };
        for path in changed {
            tracing::info!(copy = %path.display(), "host file changed; copy rewritten in place");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("run")).unwrap();
            Host { dir }
        }

        fn source(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn copies(&self) -> PathBuf {
            self.dir.path().join("run")
        }

        fn open(&self) -> HostFiles {
            HostFiles::open(
                &self.copies(),
                &self.source("resolv.conf"),
                &self.source("hosts"),
            )
            .unwrap()
        }

        /// Replaces `name` by rename, as resolvconf does.
        fn replace(&self, name: &str, content: &str) {
            let tmp = self.source(&format!(".{name}.new"));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, self.source(name)).unwrap();
        }

        fn copy(&self, name: &str) -> String {
            std::fs::read_to_string(self.copies().join(name)).unwrap()
        }

        fn inode(&self, name: &str) -> u64 {
            std::fs::metadata(self.copies().join(name)).unwrap().ino()
        }
    }

    #[test]
    fn the_copies_start_with_the_sources_content() {
        let host = Host::new();
        std::fs::write(host.source("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        std::fs::write(host.source("hosts"), "127.0.0.1 localhost\n").unwrap();

        host.open();

        assert_eq!(host.copy("resolv.conf"), "nameserver 192.0.2.1\n");
        assert_eq!(host.copy("hosts"), "127.0.0.1 localhost\n");
        let mode = std::fs::metadata(host.copies().join("hosts"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn a_source_replaced_by_rename_is_copied_again_into_the_same_inode() {
        let host = Host::new();
        host.replace(
            "resolv.conf",
            "nameserver 192.0.2.1\nnameserver 192.0.2.9\n",
        );
        let mut files = host.open();
        let inode = host.inode("resolv.conf");

        host.replace("resolv.conf", "nameserver 192.0.2.2\n");
        let changed = files.refresh();

        assert_eq!(changed, [host.copies().join("resolv.conf")]);
        assert_eq!(host.copy("resolv.conf"), "nameserver 192.0.2.2\n");
        assert_eq!(host.inode("resolv.conf"), inode);
    }

    #[test]
    fn a_descriptor_passed_before_a_change_reads_the_new_content() {
        let host = Host::new();
        host.replace("resolv.conf", "nameserver 192.0.2.1\n");
        let mut files = host.open();
        let mut sandbox = SandboxSpec::baseline(61200, 61200, "probe");
        let fds = files.for_spawn(&mut sandbox).unwrap();

        host.replace("resolv.conf", "nameserver 192.0.2.3\n");
        files.refresh();

        let mut seen = String::new();
        File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut seen)
            .unwrap();
        assert_eq!(seen, "nameserver 192.0.2.3\n");
    }

    #[test]
    fn a_vanished_source_keeps_the_copy_until_it_is_back() {
        let host = Host::new();
        host.replace("hosts", "127.0.0.1 localhost\n");
        let mut files = host.open();

        std::fs::remove_file(host.source("hosts")).unwrap();
        files.refresh();
        let while_gone = host.copy("hosts");
        host.replace("hosts", "127.0.0.1 back\n");
        files.refresh();

        assert_eq!(while_gone, "127.0.0.1 localhost\n");
        assert_eq!(host.copy("hosts"), "127.0.0.1 back\n");
    }

    #[test]
    fn a_missing_source_at_start_gives_an_empty_copy() {
        let host = Host::new();

        host.open();

        assert_eq!(host.copy("resolv.conf"), "");
    }

    #[test]
    fn a_restart_reopens_the_copies_without_replacing_them() {
        let host = Host::new();
        host.replace("resolv.conf", "nameserver 192.0.2.1\n");
        drop(host.open());
        let inode = host.inode("resolv.conf");

        host.replace("resolv.conf", "nameserver 192.0.2.4\n");
        host.open();

        assert_eq!(host.inode("resolv.conf"), inode);
        assert_eq!(host.copy("resolv.conf"), "nameserver 192.0.2.4\n");
    }

    #[test]
    fn a_copy_that_is_a_symlink_is_refused() {
        let host = Host::new();
        std::os::unix::fs::symlink("/etc/passwd", host.copies().join("hosts")).unwrap();

        let result = HostFiles::open(
            &host.copies(),
            &host.source("resolv.conf"),
            &host.source("hosts"),
        );

        assert!(
            matches!(result, Err(HostFilesError::OpenCopy { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_service_on_the_host_network_gets_every_file_and_one_without_no_resolv_conf() {
        let host = Host::new();
        let files = host.open();
        let mut shared_net = SandboxSpec::baseline(61200, 61200, "probe");
        let mut private_net = shared_net.clone();
        private_net.namespaces.private_network = true;

        let shared_fds = files.for_spawn(&mut shared_net).unwrap();
        let private_fds = files.for_spawn(&mut private_net).unwrap();

        let on = &shared_net.mounts.host_files;
        assert!(on.resolv_conf && on.hosts && on.machine_id && on.localtime);
        assert_eq!(shared_fds.len(), 2);
        assert!(!private_net.mounts.host_files.resolv_conf);
        assert_eq!(private_fds.len(), 1);
    }

    #[test]
    fn a_shorter_content_leaves_no_tail_of_the_old() {
        let host = Host::new();
        host.replace("hosts", "127.0.0.1 a-rather-long-name.example\n");
        let mut files = host.open();

        host.replace("hosts", "::1 x\n");
        files.refresh();

        assert_eq!(host.copy("hosts"), "::1 x\n");
    }
}
