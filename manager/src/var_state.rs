//! The attachment's persistent /var on berthd's side (DESIGN.md §5): `STATE/var/<image>/`,
//! with one directory per unit, `STATE/var/<image>/<unit>/`, made 0700 by berthd and passed
//! to every spawn of that unit when it runs with its image's own users (a uid block), where
//! berth-helper keeps the overlay's `upper/` and `work/`; and `berth detach --clean`, which
//! has berth-helper remove those (their files belong to the block's ids, not to berthd) and
//! then removes the directories itself.
//!
//! One layer per unit, not one for the whole attachment: overlayfs leaves two mounts over one
//! upper layer undefined, so a layer serves one running sandbox at a time (berth-helper locks
//! it), and the units of one image may run at once.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;

use berth_protocol::helper::{HelperError, RemoveVarStateParams, RemoveVarStateReply};
use berth_protocol::manager::ManagerError;
use berth_protocol::sandbox::{SandboxSpec, UidBlock};
use berth_varlink::client::ClientError;
use rustix::fs::{Mode, OFlags};

use crate::daemon::{Manager, Shared};
use crate::helper_connection::call_helper;
use crate::paths::Paths;

/// The directory of `unit`'s persistent /var in the attachment of `image`.
fn unit_dir(paths: &Paths, image: &str, unit: &str) -> PathBuf {
    paths.var_dir(image).join(unit)
}

/// The directory of `unit` of `image`: created (and `STATE/var`, `STATE/var/<image>`) 0700
/// where missing, opened without following a symlink. Unit names hold no `/` and are never
/// `.` or `..` (unit/names), so it lies right below the attachment's.
fn open_dir(paths: &Paths, image: &str, unit: &str) -> std::io::Result<OwnedFd> {
    let top = paths.var_dir(image);
    if let Some(var) = top.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(var)?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o700);
    // Each level is made and opened by descriptor, so that a symlink planted at either is
    // neither followed nor written through.
    let made = |result: rustix::io::Result<()>| match result {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    };
    made(rustix::fs::mkdir(&top, mode))?;
    let image_dir = rustix::fs::open(&top, flags, Mode::empty())?;
    made(rustix::fs::mkdirat(&image_dir, unit, mode))?;
    Ok(rustix::fs::openat(&image_dir, unit, flags, Mode::empty())?)
}

/// The sandbox of one spawn with the persistent /var it gets, and the directory to pass with
/// it: every unit that runs with the image's own users has one; a dynamic user has none (its
/// files would outlive its uid).
pub fn for_spawn(
    paths: &Paths,
    image: &str,
    unit: &str,
    mut sandbox: SandboxSpec,
) -> Result<(SandboxSpec, Option<OwnedFd>), ManagerError> {
    if sandbox.identity.user_block.is_none() {
        return Ok((sandbox, None));
    }
    let dir = open_dir(paths, image, unit).map_err(|e| {
        ManagerError::internal(format!("{}: {e}", unit_dir(paths, image, unit).display()))
    })?;
    sandbox.mounts.persistent_var = true;
    Ok((sandbox, Some(dir)))
}

/// Where the persistent /var of `unit` of `image` lives, as status shows it: only for a unit
/// that runs in the attachment's uid `block`.
pub fn status_path(
    paths: &Paths,
    image: &str,
    unit: &str,
    block: Option<UidBlock>,
) -> Option<String> {
    block.map(|_| unit_dir(paths, image, unit).display().to_string())
}

/// The block whose namespace root owns `upper/` (berth-helper gives it to it at each start);
/// `None` when no run ever made it.
fn block_of_upper(dir: &std::path::Path) -> Option<UidBlock> {
    let meta = std::fs::symlink_metadata(dir.join("upper")).ok()?;
    Some(UidBlock::at(meta.uid()))
}

/// `berth detach --clean`'s part, before the detach itself: refused while a unit of `image`
/// is active; removes its persistent /var, if it has one.
pub async fn clean(shared: &Shared, image: &str) -> Result<(), ManagerError> {
    if let Some(unit) = shared.borrow().active_unit_of(image) {
        return Err(ManagerError::UnitActive { unit });
    }
    let block = shared.borrow().uid_blocks.get(image);
    remove(shared, image, block).await?;
    Ok(())
}

/// `berth detach --clean`'s last part, once detached: the image's uid block goes back, no file
/// of it being left (the persistent /var was its only place on disk).
pub fn release_block(m: &mut Manager, image: &str) -> Result<(), ManagerError> {
    match m.uid_blocks.release(image) {
        Ok(Some(block)) => {
            tracing::info!(image, first = block.first, "released the uid block");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(ManagerError::internal(e)),
    }
}

/// Removes the persistent /var of `image` (its units stopped): berth-helper the layers of
/// each unit, whose files are the `block`'s (the image's, else that of the namespace root
/// owning `upper/`), then berthd the directories. Whether there was one.
async fn remove(
    shared: &Shared,
    image: &str,
    block: Option<UidBlock>,
) -> Result<bool, ManagerError> {
    let dir: PathBuf = shared.borrow().paths.var_dir(image);
    let failed = |reason: String| ManagerError::CleanFailed {
        image: image.to_owned(),
        reason,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(failed(format!("{}: {e}", dir.display()))),
    };
    for entry in entries {
        let entry = entry.map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            remove_unit_layers(shared, image, &entry.path(), block).await?;
        }
    }
    // What is left is berthd's own (nothing, unless someone put something there).
    std::fs::remove_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    Ok(true)
}

/// Has berth-helper remove the layers in one unit's directory `dir`.
async fn remove_unit_layers(
    shared: &Shared,
    image: &str,
    dir: &std::path::Path,
    block: Option<UidBlock>,
) -> Result<(), ManagerError> {
    let failed = |reason: String| ManagerError::CleanFailed {
        image: image.to_owned(),
        reason,
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    let Some(block) = block.or_else(|| block_of_upper(dir)) else {
        return Ok(());
    };
    let params = RemoveVarStateParams { block };
    let result: Result<RemoveVarStateReply, ClientError> =
        call_helper(shared, "io.berth.Helper.RemoveVarState", &params, vec![fd]).await;
    match result {
        Ok(reply) => {
            tracing::info!(
                image,
                dir = %dir.display(),
                removed = reply.removed,
                "removed the persistent /var"
            );
            Ok(())
        }
        Err(ClientError::Remote(e)) => {
            let reason = e
                .typed::<HelperError>()
                .map_or_else(|| e.to_string(), |h| h.to_string());
            Err(failed(reason))
        }
        Err(e) => Err(failed(format!("berth-helper unreachable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn paths(state: &std::path::Path) -> Paths {
        Paths::new(&state.join("run"), state)
    }

    #[test]
    fn a_unit_with_a_uid_block_gets_a_persistent_var_in_a_0700_directory() {
        let state = tempfile::tempdir().unwrap();
        let mut sandbox = SandboxSpec::baseline(524_288, 524_288, "redis");
        sandbox.identity.user_block = Some(UidBlock::at(524_288));

        let (sandbox, fd) = for_spawn(
            &paths(state.path()),
            "redis",
            "redis-server.service",
            sandbox,
        )
        .unwrap();

        assert!(sandbox.mounts.persistent_var);
        assert!(fd.is_some());
        for dir in ["var", "var/redis", "var/redis/redis-server.service"] {
            let meta = std::fs::metadata(state.path().join(dir)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dir}");
        }
    }

    #[test]
    fn a_dynamic_user_gets_none_and_no_directory() {
        let state = tempfile::tempdir().unwrap();
        let sandbox = SandboxSpec::baseline(61200, 61200, "hello");

        let (sandbox, fd) =
            for_spawn(&paths(state.path()), "hello", "hello.service", sandbox).unwrap();

        assert!(!sandbox.mounts.persistent_var);
        assert!(fd.is_none());
        assert!(!state.path().join("var").exists());
    }

    #[test]
    fn two_units_of_one_image_get_a_directory_each() {
        let state = tempfile::tempdir().unwrap();
        let mut sandbox = SandboxSpec::baseline(524_288, 524_288, "app");
        sandbox.identity.user_block = Some(UidBlock::at(524_288));
        let p = paths(state.path());

        for_spawn(&p, "app", "app.service", sandbox.clone()).unwrap();
        for_spawn(&p, "app", "app-worker.service", sandbox).unwrap();

        let mut names: Vec<String> = std::fs::read_dir(state.path().join("var/app"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["app-worker.service", "app.service"]);
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_not_followed() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(state.path().join("var")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), state.path().join("var/redis")).unwrap();
        let mut sandbox = SandboxSpec::baseline(524_288, 524_288, "redis");
        sandbox.identity.user_block = Some(UidBlock::at(524_288));

        let result = for_spawn(&paths(state.path()), "redis", "redis.service", sandbox);

        assert!(result.is_err());
    }

    #[test]
    fn status_shows_the_path_only_in_block_mode() {
        let p = paths(std::path::Path::new("/var/lib/berth"));

        assert_eq!(
            status_path(&p, "redis", "redis.service", Some(UidBlock::at(524_288))).as_deref(),
            Some("/var/lib/berth/var/redis/redis.service")
        );
        assert_eq!(status_path(&p, "redis", "redis.service", None), None);
    }
}
