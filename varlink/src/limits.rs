//! Every bound the varlink plumbing puts on a peer, in one place (README, "Security notes").
//!
//! Any local user can reach berthd's socket, so what one connection, and one uid over all its
//! connections, may make a daemon hold or do is bounded. Root's connections are exempt from the
//! per-uid counts (root can stop the daemon anyway), not from the per-connection limits.

use std::time::Duration;

/// File descriptors a daemon keeps for its own work (images, logs, supervisors, the helper):
/// once fewer than this many are left below RLIMIT_NOFILE, new connections are refused.
pub const FD_RESERVE: u64 = 256;

/// Connections one non-root uid may hold open at once.
pub const CONNECTIONS_PER_UID: usize = 128;

/// Longest message a client may send, NUL delimiter excluded; a longer one closes its
/// connection. zlink buffers a message until its NUL (and would grow its buffer to 100 MB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Longest parameters object a service accepts, as the text it came in: a longer one gets
/// `org.varlink.service.InvalidParameter` before it is parsed.
pub const MAX_PARAMETERS_BYTES: usize = 1024 * 1024;

/// Bytes the connections of one non-root uid may hold together: their receive buffers (zlink
/// keeps a connection's buffer at the size of the largest message it has received) and the
/// replies queued for them. The connection that would pass it is closed. One full-size
/// message and one full write queue fit, so a single client is never refused by it.
pub const BYTES_PER_UID: usize = MAX_MESSAGE_BYTES + MAX_QUEUED_BYTES;

/// Bytes per second the connections of one non-root uid may send together, on average; a
/// uid past it has its connections read later, so the daemon serves others meanwhile. No
/// client of berth's sends more than a few KiB per call; a local user sending 1 MiB calls
/// from 8 connections had the daemon busy with nothing else.
pub const READ_BYTES_PER_SECOND_PER_UID: usize = 32 * 1024 * 1024;

/// Bytes a uid may send at once before [`READ_BYTES_PER_SECOND_PER_UID`] applies: a whole
/// message of the largest size passes without waiting.
pub const READ_BURST_BYTES: usize = 2 * MAX_MESSAGE_BYTES;

/// Time a started message has to arrive whole (up to its NUL); a connection still sending one
/// after that is closed (slowloris). Even a 4 MiB message takes milliseconds over a Unix socket.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(5);

/// Most bytes of replies one connection may have waiting to be sent; a connection whose queue
/// would pass it is shut down. Also the largest single reply that reaches a client that reads
/// slowly.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// A reply stream pauses while its connection has this many bytes waiting...
pub const HIGH_WATER_BYTES: usize = 256 * 1024;
/// ...and resumes once the queue is down to this.
pub const LOW_WATER_BYTES: usize = 64 * 1024;

/// How long queued bytes may wait for a client once its connection is closed on our side (zlink
/// dropped it). The bytes are still owed (a client may shut down its writing side and only then
/// read), but a client that never reads must not keep the socket open for ever.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);
