//! A small varlink client over zlink, used by the CLI (to berthd) and by berthd (to the helper).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zlink::Call;

use crate::service::{OutgoingCall, Socket, encode};

/// An error reply from the service, kept whole so callers can map it onto a typed enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteError {
    pub error: String,
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl RemoteError {
    /// Converts into a `zlink::ReplyError` enum such as `ManagerError`, if it is one of its
    /// errors.
    pub fn typed<E: DeserializeOwned>(&self) -> Option<E> {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.parameters {
            Some(p) if p.as_object().is_some_and(|o| !o.is_empty()) => {
                write!(f, "{} {}", self.error, p)
            }
            _ => f.write_str(&self.error),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: zlink::Error,
    },
    #[error("connection failed: {0}")]
    Transport(#[from] zlink::Error),
    #[error("{0}")]
    Remote(RemoteError),
    #[error("unexpected reply: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One connection to a varlink service. Replies are read through zlink; calls are serialized
/// here and sent on a second descriptor of the socket (see [`crate::service::encode`]: zlink's
/// serializer takes time quadratic in a message's size, and berthd's Spawn calls to the helper
/// carry whole command lines).
pub struct Client {
    conn: zlink::Connection<Socket>,
    writer: tokio::net::UnixStream,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_error = |source: zlink::Error| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| connect_error(e.into()))?;
        Self::from_stream(stream).map_err(connect_error)
    }

    fn from_stream(stream: tokio::net::UnixStream) -> Result<Client, zlink::Error> {
        let duplicate = std::os::unix::net::UnixStream::from(stream.as_fd().try_clone_to_owned()?);
        let writer = tokio::net::UnixStream::from_std(duplicate)?;
        let conn = zlink::Connection::new(Socket::try_from(stream)?);
        Ok(Client { conn, writer })
    }

    /// Sends one message (`bytes`, NUL included), `fds` along with its first byte.
    async fn send(&self, bytes: &[u8], fds: &[OwnedFd]) -> Result<(), ClientError> {
        let mut sent = 0;
        while sent < bytes.len() {
            self.writer.writable().await.map_err(zlink::Error::from)?;
            let attached = if sent == 0 { fds } else { &[] };
            match self.writer.try_io(tokio::io::Interest::WRITABLE, || {
                send_with_fds(&self.writer, &bytes[sent..], attached)
            }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(zlink::Error::from(e).into()),
            }
        }
        Ok(())
    }

    /// Calls `method` and decodes its single reply.
    pub async fn call<P, R>(
        &mut self,
        method: &str,
        params: &P,
        fds: Vec<OwnedFd>,
    ) -> Result<R, ClientError>
    where
        P: Serialize,
        R: DeserializeOwned,
    {
        Ok(self.call_with_fds(method, params, fds).await?.0)
    }

    /// Calls `method` and decodes its single reply, with the fds that came along with it.
    pub async fn call_with_fds<P, R>(
        &mut self,
        method: &str,
        params: &P,
        fds: Vec<OwnedFd>,
    ) -> Result<(R, Vec<OwnedFd>), ClientError>
    where
        P: Serialize,
        R: DeserializeOwned,
    {
        let params = serde_json::to_value(params)?;
        let call = Call::new(OutgoingCall {
            method,
            parameters: Some(&params),
        });
        self.send(&encode(&call), &fds).await?;
        let (value, _, fds) = self.receive().await?;
        Ok((serde_json::from_value(value)?, fds))
    }

    /// Calls `method` with the `more` flag (and `fds` along with it) and hands every reply to
    /// `each` until the service ends the stream or `each` returns false.
    pub async fn call_more<P, R, F>(
        &mut self,
        method: &str,
        params: &P,
        fds: Vec<OwnedFd>,
        mut each: F,
    ) -> Result<(), ClientError>
    where
        P: Serialize,
        R: DeserializeOwned,
        F: FnMut(R) -> bool,
    {
        let params = serde_json::to_value(params)?;
        let call = Call::new(OutgoingCall {
            method,
            parameters: Some(&params),
        })
        .set_more(true);
        self.send(&encode(&call), &fds).await?;
        loop {
            let (value, continues, _fds) = self.receive().await?;
            if !each(serde_json::from_value(value)?) || !continues {
                return Ok(());
            }
        }
    }

    async fn receive(&mut self) -> Result<(Value, bool, Vec<OwnedFd>), ClientError> {
        let (result, fds) = self.conn.receive_reply::<Value, RemoteError>().await?;
        match result {
            Ok(reply) => {
                let continues = reply.continues().unwrap_or(false);
                let value = reply.into_parameters().unwrap_or(Value::Null);
                Ok((value, continues, fds))
            }
            Err(e) => Err(ClientError::Remote(e)),
        }
    }
}

/// One `sendmsg` of `bytes` with `fds` as SCM_RIGHTS. MSG_NOSIGNAL: a vanished service is an
/// error, not SIGPIPE.
fn send_with_fds(
    socket: &tokio::net::UnixStream,
    bytes: &[u8],
    fds: &[OwnedFd],
) -> std::io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(sent)
}

/// Maps a zlink-level varlink service error (e.g. `org.varlink.service.InvalidParameter`) to
/// [`RemoteError`] so callers see one shape for every error reply.
pub fn remote_error_of(error: &ClientError) -> Option<RemoteError> {
    match error {
        ClientError::Remote(e) => Some(e.clone()),
        // zlink serializes these to their wire form, `{"error": ..., "parameters": ...}`.
        ClientError::Transport(zlink::Error::VarlinkService(e)) => serde_json::to_value(e)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn varlink_service_error_keeps_its_name_and_parameters() {
        let (server, client) = tokio::net::UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut server, mut buf) = (server, [0u8; 512]);
            let _ = server.read(&mut buf).await.unwrap();
            let reply = br#"{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"unit"}}"#;
            server.write_all(reply).await.unwrap();
            server.write_all(b"\0").await.unwrap();
        });
        let mut client = Client::from_stream(client).unwrap();

        let err = client
            .call::<_, Value>("io.berth.Manager.Status", &Value::Null, Vec::new())
            .await
            .unwrap_err();
        server.await.unwrap();

        let remote = remote_error_of(&err).unwrap();
        assert_eq!(remote.error, "org.varlink.service.InvalidParameter");
        assert_eq!(
            remote.parameters,
            Some(serde_json::json!({ "parameter": "unit" }))
        );
    }

    /// zlink's serializer took minutes for a call this large in a debug build.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_call_with_a_descriptor_arrives_whole_and_fast() {
        let (server, client) = tokio::net::UnixStream::pair().unwrap();
        let server = server.into_std().unwrap();
        server.set_nonblocking(false).unwrap();
        let reader = std::thread::spawn(move || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let mut message = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            let mut fds = 0;
            while !message.ends_with(b"\0") {
                let n = rustix::net::recvmsg(
                    &server,
                    &mut [std::io::IoSliceMut::new(&mut chunk)],
                    &mut control,
                    rustix::net::RecvFlags::empty(),
                )
                .unwrap()
                .bytes;
                fds += control
                    .drain()
                    .map(|m| match m {
                        rustix::net::RecvAncillaryMessage::ScmRights(f) => f.count(),
                        _ => 0,
                    })
                    .sum::<usize>();
                message.extend_from_slice(&chunk[..n]);
            }
            let reply = b"{\"parameters\":{}}\0";
            std::io::Write::write_all(&mut &server, reply).unwrap();
            (message.len(), fds)
        });
        let mut client = Client::from_stream(client).unwrap();
        let text = "c".repeat(3 * 1024 * 1024);
        let null = std::fs::File::open("/dev/null").unwrap();
        let started = std::time::Instant::now();

        let reply: Value = client
            .call(
                "io.berth.Test.Big",
                &serde_json::json!({ "text": text }),
                vec![null.into()],
            )
            .await
            .unwrap();

        let took = started.elapsed();
        let (length, fds) = reader.join().unwrap();
        assert_eq!(reply, serde_json::json!({}));
        assert!(length > text.len(), "{length}");
        assert_eq!(fds, 1);
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }
}
