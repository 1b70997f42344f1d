//! berth's varlink plumbing, shared by berthd and berth-helper: the listener that bounds what
//! each peer may hold ([`listener`]), the per-connection write queue ([`write_queue`]), the
//! service adapter that answers every well-formed call, malformed ones with a varlink error
//! ([`service`]), and the client both the CLI and berthd use ([`client`]). The interfaces
//! themselves (wire types, IDL) live in `berth-protocol`.

pub mod client;
pub mod limits;
pub mod listener;
pub mod service;
pub mod write_queue;

/// zlink's error, as the server loop and the client report it.
pub use zlink::Error;
