//! IMAGE arguments as berthd gets them: paths resolved, and local images opened, with the
//! caller's own rights.

use std::os::fd::OwnedFd;

use anyhow::{Context, anyhow};
use rustix::fs::OFlags;

/// [`image_arg`] of each.
pub(crate) fn image_args(images: &[String]) -> anyhow::Result<Vec<String>> {
    images.iter().map(|i| image_arg(i)).collect()
}

/// Paths are resolved here, with the caller's view of the filesystem; names go as they are.
pub(crate) fn image_arg(image: &str) -> anyhow::Result<String> {
    if !image.contains('/') {
        return Ok(image.to_string());
    }
    let path = std::fs::canonicalize(image).with_context(|| format!("image {image}"))?;
    Ok(path.display().to_string())
}

/// An IMAGE argument as berthd gets it: a name in its search path, or a local path resolved and
/// opened here with the caller's own rights (DESIGN.md §1), the path then sent along with the
/// descriptor. berthd reads the image through the descriptor, so root can attach an image
/// under /root that berthd's user cannot open; and a user gets no descriptor for what they
/// could not open themselves.
pub(crate) fn local_image(image: &str) -> anyhow::Result<(String, Vec<OwnedFd>)> {
    if !image.contains('/') {
        return Ok((image.to_string(), Vec::new()));
    }
    let cannot_open = |e: std::io::Error| {
        let e = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "permission denied (berth opens a local image with your own rights)".to_string()
        } else {
            e.to_string()
        };
        anyhow!("cannot open image {image}: {e}")
    };
    let path = std::fs::canonicalize(image).map_err(cannot_open)?;
    // Non-blocking, so that naming a FIFO fails here instead of waiting for a writer; no
    // controlling terminal from a tty either. Reading a directory or a file is unaffected.
    let fd = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| cannot_open(e.into()))?;
    let kind = rustix::fs::FileType::from_raw_mode(
        rustix::fs::fstat(&fd)
            .map_err(|e| cannot_open(e.into()))?
            .st_mode,
    );
    if !matches!(
        kind,
        rustix::fs::FileType::Directory | rustix::fs::FileType::RegularFile
    ) {
        let kind = format!("{kind:?}").to_lowercase();
        return Err(anyhow!(
            "image {image} is a {kind}, not a directory or an image file"
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| cannot_open(e.into()))?;
    Ok((path.display().to_string(), vec![fd]))
}
