//! The one connection to berth-helper that berthd keeps between calls.

use std::os::fd::OwnedFd;

use berth_varlink::client::{Client, ClientError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::daemon::Shared;

/// Calls `method` of berth-helper on the connection berthd keeps (opening one if there is
/// none); a call that fails drops the connection.
pub async fn call_helper<P: Serialize, R: DeserializeOwned>(
    shared: &Shared,
    method: &str,
    params: &P,
    fds: Vec<OwnedFd>,
) -> Result<R, ClientError> {
    let kept = shared.borrow_mut().helper_client.take();
    let mut client = match kept {
        Some(client) => client,
        None => {
            let socket = shared.borrow().paths.helper_socket();
            Client::connect(&socket).await?
        }
    };
    let result = client.call(method, params, fds).await;
    if result.is_ok() {
        shared.borrow_mut().helper_client = Some(client);
    }
    result
}
