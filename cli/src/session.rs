//! One connection to berthd and how the command line calls it and prints its JSON.

use std::io::Write;
use std::os::fd::OwnedFd;

use berth_varlink::client::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::report::explain;

pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) json: bool,
    pub(crate) legend: bool,
}

impl Session {
    pub(crate) async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> anyhow::Result<R> {
        self.call_with_fds(method, params, Vec::new()).await
    }

    /// `method` with descriptors (an image opened here, see [`local_image`](crate::local_image::local_image)).
    pub(crate) async fn call_with_fds<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        fds: Vec<OwnedFd>,
    ) -> anyhow::Result<R> {
        self.client
            .call(&format!("io.berth.Manager.{method}"), params, fds)
            .await
            .map_err(explain)
    }

    /// `method` with `more`: `each` gets every reply until the last (or until it says stop).
    pub(crate) async fn call_more<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        each: impl FnMut(R) -> bool,
    ) -> anyhow::Result<()> {
        self.client
            .call_more(
                &format!("io.berth.Manager.{method}"),
                params,
                Vec::new(),
                each,
            )
            .await
            .map_err(explain)
    }

    pub(crate) fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        out!("{}", serde_json::to_string_pretty(value)?)?;
        Ok(())
    }
}
