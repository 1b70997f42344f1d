//! The attachment's persistent /var on berthd's side (DESIGN.md §5): `STATE/var/<image>/`,
//! made 0700 by berthd and passed to every spawn of the image's units that run with its own
//! users (a uid block), where berth-helper keeps the overlay's `upper/` and `work/`; and
//! `berth detach --clean`, which has berth-helper remove those (their files belong to the
//! block's ids, not to berthd) and then removes the directory itself.

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

/// The attachment directory of `image`: created (and `STATE/var`) 0700 where missing, opened
/// without following a symlink.
fn open_dir(paths: &Paths, image: &str) -> std::io::Result<OwnedFd> {
    let dir = paths.var_dir(image);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The sandbox of one spawn with the persistent /var it gets, and the directory to pass with
/// it: every unit that runs with the image's own users has one; a dynamic user has none (its
/// files would outlive its uid).
pub fn for_spawn(
    paths: &Paths,
    image: &str,
    mut sandbox: SandboxSpec,
) -> Result<(SandboxSpec, Option<OwnedFd>), ManagerError> {
    if sandbox.identity.user_block.is_none() {
        return Ok((sandbox, None));
    }
    let dir = open_dir(paths, image)
        .map_err(|e| ManagerError::internal(format!("{}: {e}", paths.var_dir(image).display())))?;
    sandbox.mounts.persistent_var = true;
    Ok((sandbox, Some(dir)))
}

/// Where the persistent /var of a unit of `image` lives, as status shows it: only for a unit
/// that runs in the attachment's uid `block`.
pub fn status_path(paths: &Paths, image: &str, block: Option<UidBlock>) -> Option<String> {
    block.map(|_| paths.var_dir(image).display().to_string())
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

/// Removes the persistent /var of `image` (its units stopped): berth-helper the layers, whose
/// files are the `block`'s (the image's, else that of the namespace root owning `upper/`),
/// then berthd the directory. Whether there was one.
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
    let fd = match rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(failed(format!("{}: {e}", dir.display()))),
    };
    if let Some(block) = block.or_else(|| block_of_upper(&dir)) {
        let params = RemoveVarStateParams { block };
        let result: Result<RemoveVarStateReply, ClientError> =
            call_helper(shared, "io.berth.Helper.RemoveVarState", &params, vec![fd]).await;
        match result {
            Ok(reply) => {
                tracing::info!(
                    image,
                    removed = reply.removed,
                    "removed the persistent /var"
                );
            }
            Err(ClientError::Remote(e)) => {
                let reason = e
                    .typed::<HelperError>()
                    .map_or_else(|| e.to_string(), |h| h.to_string());
                return Err(failed(reason));
            }
            Err(e) => return Err(failed(format!("berth-helper unreachable: {e}"))),
        }
    }
    // What is left is berthd's own (nothing, unless someone put something there).
    std::fs::remove_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    Ok(true)
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

        let (sandbox, fd) = for_spawn(&paths(state.path()), "redis", sandbox).unwrap();

        assert!(sandbox.mounts.persistent_var);
        assert!(fd.is_some());
        let dir = state.path().join("var/redis");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        let parent = std::fs::metadata(state.path().join("var")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o7777, 0o700);
    }

    #[test]
    fn a_dynamic_user_gets_none_and_no_directory() {
        let state = tempfile::tempdir().unwrap();
        let sandbox = SandboxSpec::baseline(61200, 61200, "hello");

        let (sandbox, fd) = for_spawn(&paths(state.path()), "hello", sandbox).unwrap();

        assert!(!sandbox.mounts.persistent_var);
        assert!(fd.is_none());
        assert!(!state.path().join("var").exists());
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_not_followed() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(state.path().join("var")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), state.path().join("var/redis")).unwrap();
        let mut sandbox = SandboxSpec::baseline(524_288, 524_288, "redis");
        sandbox.identity.user_block = Some(UidBlock::at(524_288));

        let result = for_spawn(&paths(state.path()), "redis", sandbox);

        assert!(result.is_err());
    }

    #[test]
    fn status_shows_the_path_only_in_block_mode() {
        let p = paths(std::path::Path::new("/var/lib/berth"));

        assert_eq!(
            status_path(&p, "redis", Some(UidBlock::at(524_288))).as_deref(),
            Some("/var/lib/berth/var/redis")
        );
        assert_eq!(status_path(&p, "redis", None), None);
    }
}
