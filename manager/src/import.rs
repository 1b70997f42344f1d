//! `ImportImage`: copies the image the caller passed as a descriptor into `STATE/images/`.
//!
//! The caller (the CLI) opens the image with its own rights; berthd copies from that
//! descriptor on a blocking thread, so the daemon keeps serving meanwhile. With `more`, a
//! progress reply (bytes copied so far) comes every [`PROGRESS_INTERVAL`] until the last reply,
//! which names the imported image. A client that goes away cancels the copy, and the partial
//! copy is removed.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_logging::Untrusted;
use berth_protocol::manager::{ImportImageParams, ImportImageReply, ManagerError};
use berth_varlink::service::{Outcome, invalid_parameter, stream_error, stream_item};
use rustix::fs::{FileType, OFlags};

use crate::daemon::Shared;
use crate::image::kind::tar::{self, TarError, TarLimits};
use crate::image::store::{self, Imported, Progress, StoreError};
use crate::image::{Format, sniff};

/// How often a streamed import reports its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Cancels the copy when the call's reply stream is dropped (the client went away).
struct CancelOnDrop(Arc<Progress>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

/// Unpacks the tarball `fd` as the directory image `file_name` in `pool` ([`tar::import`]);
/// progress counts the bytes read from the archive.
fn unpack(
    fd: OwnedFd,
    pool: &Path,
    file_name: &str,
    limits: &TarLimits,
    progress: &Progress,
) -> Result<Imported, StoreError> {
    let pool_fd = crate::image::store::open_pool(pool)?;
    let mut report = |read: u64| {
        progress.done.store(read, Ordering::Relaxed);
        if progress.cancelled.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    match tar::import(
        File::from(fd),
        pool_fd.as_fd(),
        file_name,
        limits,
        &mut report,
    ) {
        Ok(_) => Ok(Imported {
            path: pool.join(file_name),
            warnings: Vec::new(),
        }),
        Err(TarError::Exists { name }) => Err(StoreError::Exists { name }),
        Err(TarError::Cancelled) => Err(StoreError::Cancelled),
        Err(e) => Err(StoreError::Unpack {
            reason: e.to_string(),
        }),
    }
}

/// Starts an import of the call's one descriptor; the error is the reply to send at once.
pub fn import(
    shared: &Shared,
    p: ImportImageParams,
    fds: Vec<OwnedFd>,
    more: bool,
) -> Result<Outcome, Outcome> {
    let Ok([fd]) = <[OwnedFd; 1]>::try_from(fds) else {
        // The image travels as the call's one descriptor.
        return Err(Outcome::Error(invalid_parameter("fd")));
    };
    let invalid = |reason: String| {
        Outcome::error(&ManagerError::InvalidImage {
            image: p.source.clone(),
            reason,
        })
    };
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| invalid(e.to_string()))?;
    if flags.contains(OFlags::PATH) {
        return Err(invalid(
            "the descriptor was opened with O_PATH; berthd needs one open for reading".into(),
        ));
    }
    let format = sniff::sniff(&fd).map_err(|e| invalid(format!("cannot tell what it is: {e}")))?;
    let file_name = shared
        .borrow()
        .import_file_name(&p.source, p.name.as_deref(), &format)
        .map_err(|e| Outcome::error(&e))?;
    let total = match format {
        Format::Directory => None,
        _ => rustix::fs::fstat(&fd)
            .ok()
            .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
            .map(|st| st.st_size),
    };
    let pool = shared.borrow().paths.images_dir();
    let limits = shared.borrow().tar_limits;
    let progress = Arc::new(Progress::default());
    let guard = CancelOnDrop(progress.clone());
    let copying = progress.clone();
    let job = tokio::task::spawn_blocking(move || match format {
        Format::Tar | Format::Gzip | Format::Zstd => {
            unpack(fd, &pool, &file_name, &limits, &copying)
        }
        _ => store::import(fd, &format, &pool, &file_name, &copying),
    });
    let shared = shared.clone();
    let finish = move |result: Result<Result<Imported, StoreError>, tokio::task::JoinError>,
                       done: u64| {
        let imported = result
            .map_err(ManagerError::internal)?
            .map_err(|e| match e {
                StoreError::Exists { name } => ManagerError::ImageExists {
                    image: name.clone(),
                    path: name,
                },
                e => ManagerError::InvalidImage {
                    image: p.source.clone(),
                    reason: e.to_string(),
                },
            })?;
        let m = shared.borrow();
        let (name, _) = crate::image::image_name_from_path(&imported.path);
        let image = m.image_entry(&name, &imported.path, None);
        tracing::info!(
            image = %Untrusted(&name),
            path = %Untrusted(&imported.path.to_string_lossy()),
            bytes = done,
            "image imported"
        );
        m.notify();
        Ok::<_, ManagerError>(ImportImageReply {
            bytes_done: i64::try_from(done).unwrap_or(i64::MAX),
            bytes_total: total,
            image: Some(image),
            warnings: imported.warnings,
        })
    };
    if !more {
        return Ok(Outcome::later(async move {
            let _guard = guard;
            let result = job.await;
            finish(result, progress.done.load(Ordering::Relaxed))
        }));
    }
    let finish = std::rc::Rc::new(finish);
    let stream = futures_util::stream::unfold(Some((job, guard)), move |state| {
        let finish = finish.clone();
        async move {
            let (mut job, guard) = state?;
            let done = || guard.0.done.load(Ordering::Relaxed);
            tokio::select! {
                result = &mut job => {
                    let item = match finish(result, done()) {
                        Ok(reply) => stream_item(&reply, false),
                        Err(e) => stream_error(&e),
                    };
                    Some((item, None))
                }
                () = tokio::time::sleep(PROGRESS_INTERVAL) => {
                    let reply = ImportImageReply {
                        bytes_done: i64::try_from(done()).unwrap_or(i64::MAX),
                        bytes_total: total,
                        image: None,
                        warnings: Vec::new(),
                    };
                    Some((stream_item(&reply, true), Some((job, guard))))
                }
            }
        }
    });
    Ok(Outcome::Stream(Box::pin(stream)))
}
