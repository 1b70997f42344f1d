//! Read-only mounts of image files, asked of berth-helper (`io.berth.Helper.MountImage`): the
//! backing file's fd goes over, the detached mount's fd comes back. berthd cannot mount, and
//! the helper checks the fd, the range and the file system against its own floor.
//!
//! The call is synchronous, on a connection of its own: opening an image is synchronous
//! everywhere it happens (attach, inspect, list, start), and a mount takes the helper a few
//! milliseconds whatever the image's size (the kernel reads a superblock). A bounded timeout
//! keeps a stuck helper from stalling berthd for long.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use berth_protocol::helper::{HelperError, MountImageParams, MountImageReply};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// How long one mount may take the helper.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A MountImage reply is a few hundred bytes; anything longer is not one.
const MAX_REPLY: usize = 64 * 1024;

static HELPER_SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Where the helper listens; set once at startup (before that, mounts fail).
pub fn set_helper_socket(path: PathBuf) {
    let _ = HELPER_SOCKET.set(path);
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("berth-helper is not available to mount it: {0}")]
    HelperUnavailable(String),
    #[error("{0}")]
    Refused(HelperError),
    #[error("berth-helper's reply to MountImage is not one: {0}")]
    BadReply(String),
}

/// A mounted image: the mount's root fd (what [`super::ImageRoot`] reads through and Spawn
/// gets) and the helper's account of it.
#[derive(Debug)]
pub struct Mount {
    pub root: OwnedFd,
    pub reply: MountImageReply,
}

/// Mounts the `fstype` file system at `offset`, `size` bytes long, in `backing` (opened
/// read-only).
pub fn mount_image(
    backing: &OwnedFd,
    fstype: &str,
    offset: u64,
    size: u64,
) -> Result<Mount, MountError> {
    let socket = HELPER_SOCKET
        .get()
        .ok_or_else(|| MountError::HelperUnavailable("no helper socket configured".into()))?;
    let unavailable = |e: io::Error| MountError::HelperUnavailable(e.to_string());
    let stream = UnixStream::connect(socket).map_err(unavailable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unavailable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unavailable)?;
    let params = MountImageParams {
        fstype: fstype.to_owned(),
        offset: i64::try_from(offset).map_err(|e| MountError::BadReply(e.to_string()))?,
        size: i64::try_from(size).map_err(|e| MountError::BadReply(e.to_string()))?,
    };
    let mut call = serde_json::to_vec(&serde_json::json!({
        "method": "io.berth.Helper.MountImage",
        "parameters": params,
    }))
    .map_err(|e| MountError::BadReply(e.to_string()))?;
    call.push(0);
    send(&stream, &call, backing).map_err(unavailable)?;
    let (reply, mut fds) = receive(&stream).map_err(unavailable)?;
    let value: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|e| MountError::BadReply(e.to_string()))?;
    if value.get("error").is_some() {
        let error = serde_json::from_value::<HelperError>(value.clone())
            .map_err(|_| MountError::BadReply(value.to_string()))?;
        return Err(MountError::Refused(error));
    }
    let reply: MountImageReply = serde_json::from_value(value["parameters"].clone())
        .map_err(|e| MountError::BadReply(e.to_string()))?;
    if fds.len() != 1 {
        return Err(MountError::BadReply(format!(
            "{} descriptors instead of the mount's one",
            fds.len()
        )));
    }
    let root = fds.remove(0);
    Ok(Mount { root, reply })
}

fn send(stream: &UnixStream, bytes: &[u8], fd: &OwnedFd) -> io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let mut sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    while sent < bytes.len() {
        let mut none = SendAncillaryBuffer::new(&mut []);
        sent += rustix::net::sendmsg(
            stream,
            &[IoSlice::new(&bytes[sent..])],
            &mut none,
            SendFlags::NOSIGNAL,
        )?;
    }
    Ok(())
}

/// Reads one NUL-terminated reply and the fds that came with it.
fn receive(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut reply = Vec::new();
    let mut fds = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if received.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the helper closed the connection",
            ));
        }
        reply.extend_from_slice(&buffer[..received.bytes]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            return Ok((reply, fds));
        }
        if reply.len() > MAX_REPLY {
            return Err(io::Error::other("the reply is too long"));
        }
    }
}
