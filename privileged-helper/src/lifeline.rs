//! The helper's lifeline: the read end of a pipe whose write end only the manager holds. The
//! kernel closes the write end when the manager exits, whether it returns, crashes or is killed,
//! and the read end then reports end of file.

use std::io::Read;
use std::os::fd::AsFd;

use tokio::io::unix::AsyncFd;

/// Resolves once every writer of `pipe` is gone. Bytes written to the pipe are read and ignored.
pub async fn closed(pipe: impl AsFd) -> std::io::Result<()> {
    let fd = pipe.as_fd().try_clone_to_owned()?;
    crate::sandbox::sys::set_nonblocking(&fd)?;
    // SAFETY: the File owns the descriptor and is moved into the AsyncFd, so it stays open and
    // names the same pipe for the AsyncFd's whole life.
    let watched = unsafe { AsyncFd::register(std::fs::File::from(fd)) }?;
    let mut buffer = [0u8; 64];
    loop {
        let mut ready = watched.readable().await?;
        match ready.try_io(|file| file.get_ref().read(&mut buffer)) {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::test_support::runtime;

    #[test]
    fn resolves_when_the_write_end_closes() {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        runtime().block_on(async {
            let watcher = tokio::spawn(async move { closed(read_end).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(write_end);
            tokio::time::timeout(Duration::from_secs(5), watcher)
                .await
                .expect("lifeline did not notice the closed pipe")
                .unwrap()
                .unwrap();
        });
    }

    #[test]
    fn data_on_the_pipe_does_not_count_as_closing() {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        runtime().block_on(async {
            let mut writer = std::fs::File::from(write_end);
            writer.write_all(b"ping").unwrap();
            let still_open =
                tokio::time::timeout(Duration::from_millis(200), closed(read_end)).await;
            assert!(still_open.is_err(), "resolved while the writer was alive");
            drop(writer);
        });
    }
}
