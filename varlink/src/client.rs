//! A small varlink client over zlink, used by the CLI (to berthd) and by berthd (to the helper).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zlink::Call;

use crate::service::{OutgoingCall, Socket};

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

/// One connection to a varlink service.
pub struct Client {
    conn: zlink::Connection<Socket>,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let conn =
            zlink::tokio::unix::connect(path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
        Ok(Client { conn })
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
        let params = serde_json::to_value(params)?;
        let call = Call::new(OutgoingCall {
            method,
            parameters: Some(&params),
        });
        self.conn.send_call(&call, fds).await?;
        let reply = self.receive().await?;
        Ok(serde_json::from_value(reply.0)?)
    }

    /// Calls `method` with the `more` flag and hands every reply to `each` until the service
    /// ends the stream or `each` returns false.
    pub async fn call_more<P, R, F>(
        &mut self,
        method: &str,
        params: &P,
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
        self.conn.send_call(&call, Vec::new()).await?;
        loop {
            let (value, continues) = self.receive().await?;
            if !each(serde_json::from_value(value)?) || !continues {
                return Ok(());
            }
        }
    }

    async fn receive(&mut self) -> Result<(Value, bool), ClientError> {
        let (result, _fds) = self.conn.receive_reply::<Value, RemoteError>().await?;
        match result {
            Ok(reply) => {
                let continues = reply.continues().unwrap_or(false);
                Ok((reply.into_parameters().unwrap_or(Value::Null), continues))
            }
            Err(e) => Err(ClientError::Remote(e)),
        }
    }
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
        let socket = zlink::tokio::unix::Stream::try_from(client).unwrap();
        let mut client = Client {
            conn: zlink::Connection::new(socket),
        };

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
}
