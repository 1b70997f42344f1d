//! Where berthd keeps the service directories (StateDirectory= and its kind) on the host, and
//! what a spawn carries of them: the parent directory of each kind the spec lists, as a
//! descriptor (berth-helper makes and re-owns the directories below it, see
//! privileged-helper/src/sandbox/directories.rs), and the variables that tell the service
//! where they are.
//!
//! Layout (DESIGN.md §3 names the first): `STATE/private/NAME` (StateDirectory=),
//! `STATE/cache/NAME`, `STATE/logs-private/NAME` (beside `STATE/logs/`, berth's own capture of
//! stdout and stderr), `STATE/configuration/NAME`; each parent 0700, berth's. RuntimeDirectory=
//! has none: it lives in the sandbox's own `/run` and goes with it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use berth_protocol::sandbox::{DirectoryKind, ServiceDirectory};

use crate::paths::Paths;

/// The host directory below which directories of `kind` live (none for RuntimeDirectory=).
pub fn parent(paths: &Paths, kind: DirectoryKind) -> Option<PathBuf> {
    let name = match kind {
        DirectoryKind::State => "private",
        DirectoryKind::Cache => "cache",
        DirectoryKind::Logs => "logs-private",
        DirectoryKind::Configuration => "configuration",
        DirectoryKind::Runtime => return None,
    };
    Some(paths.state.join(name))
}

/// Every parent, for berthd to create at start.
pub fn parents(paths: &Paths) -> Vec<PathBuf> {
    DirectoryKind::ALL
        .into_iter()
        .filter_map(|kind| parent(paths, kind))
        .collect()
}

/// The descriptors a spawn carries for `directories`, in protocol order
/// ([`ServiceDirectory::host_kinds`]).
pub fn open_parents(
    paths: &Paths,
    directories: &[ServiceDirectory],
) -> std::io::Result<Vec<OwnedFd>> {
    ServiceDirectory::host_kinds(directories)
        .into_iter()
        .filter_map(|kind| parent(paths, kind))
        .map(|path| {
            File::options()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
                .map(OwnedFd::from)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })
        .collect()
}

/// `STATE_DIRECTORY=/var/lib/a:/var/lib/b` and the others, as systemd sets them, for the
/// kinds `directories` has.
pub fn environment(directories: &[ServiceDirectory]) -> Vec<(String, String)> {
    let mut by_kind: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for directory in directories {
        by_kind
            .entry(directory.kind.environment_variable())
            .or_default()
            .push(directory.sandbox_path());
    }
    by_kind
        .into_iter()
        .map(|(key, paths)| (key.to_owned(), paths.join(":")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(kind: DirectoryKind, name: &str) -> ServiceDirectory {
        ServiceDirectory {
            kind,
            name: name.into(),
            mode: 0o755,
        }
    }

    #[test]
    fn the_variables_list_each_kinds_paths_in_order() {
        let env = environment(&[
            dir(DirectoryKind::State, "a"),
            dir(DirectoryKind::Runtime, "a"),
            dir(DirectoryKind::State, "b/c"),
        ]);

        assert_eq!(
            env,
            [
                ("RUNTIME_DIRECTORY".to_owned(), "/run/a".to_owned()),
                (
                    "STATE_DIRECTORY".to_owned(),
                    "/var/lib/a:/var/lib/b/c".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn one_parent_per_kind_kept_on_host_is_opened_in_protocol_order() {
        let state = tempfile::tempdir().unwrap();
        let paths = Paths::new(state.path(), state.path());
        for p in parents(&paths) {
            std::fs::create_dir(p).unwrap();
        }
        let directories = [
            dir(DirectoryKind::Configuration, "x"),
            dir(DirectoryKind::Runtime, "x"),
            dir(DirectoryKind::State, "x"),
            dir(DirectoryKind::State, "y"),
        ];

        let fds = open_parents(&paths, &directories).unwrap();

        let inode =
            |p: PathBuf| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let got: Vec<u64> = fds
            .iter()
            .map(|fd| rustix::fs::fstat(fd).unwrap().st_ino)
            .collect();
        assert_eq!(
            got,
            [
                inode(state.path().join("private")),
                inode(state.path().join("configuration"))
            ]
        );
    }
}
