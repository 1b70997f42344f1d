//! The listening side of a berth daemon: limits on how many connections it holds.
//!
//! Two limits keep one client from starving the others. A daemon refuses every connection once
//! fewer than [`FD_RESERVE`] file descriptors are left. And each non-root uid may hold at most
//! [`ConnectionLimits::per_uid`] connections at once: any local user can reach the manager
//! socket, and without a per-uid limit one user could use up the fd reserve and lock everyone
//! else out. Root is exempt, as it can stop the daemon anyway. A refused connection is accepted
//! and closed at once, so its client sees the connection end before any reply.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use zlink::connection::socket::{ReadHalf, ReadResult, Socket, UnixSocket};

use crate::write_queue::{QueuedWriteHalf, WriteQueue};

/// File descriptors a daemon keeps for its own work (images, logs, supervisors, the helper):
/// once fewer than this many are left below RLIMIT_NOFILE, new connections are refused.
pub const FD_RESERVE: u64 = 256;

/// Connections one non-root uid may hold open at once, by default.
pub const CONNECTIONS_PER_UID: usize = 128;

/// Per-peer connection limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections one uid may hold at once.
    pub per_uid: usize,
    /// Whether root's connections are counted against the limit.
    pub limit_root: bool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            per_uid: CONNECTIONS_PER_UID,
            limit_root: false,
        }
    }
}

/// Open connections per uid, shared by a listener and the slots of its connections.
#[derive(Debug, Default)]
struct Counts {
    open: HashMap<u32, usize>,
    /// Uids already told about in the log since they last went below the limit.
    reported: HashSet<u32>,
}

/// Counts connections per uid and hands out slots while a uid is under its limit.
#[derive(Debug, Clone)]
pub struct ConnectionCounter {
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One connection's place in its uid's count, given back when the connection is done: its
/// halves are dropped and nothing it owes the client is left in its write queue.
#[derive(Debug)]
pub struct ConnectionSlot {
    uid: u32,
    counts: Arc<Mutex<Counts>>,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Plain counters: carry on with them after a panic elsewhere.
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("uid {uid} already holds {open} connections, the most allowed")]
    PerUidLimit { uid: u32, open: usize },
}

impl ConnectionCounter {
    pub fn new(limits: ConnectionLimits) -> Self {
        ConnectionCounter {
            limits,
            counts: Arc::default(),
        }
    }

    /// A slot for one more connection of `uid`, unless `uid` is at its limit.
    pub fn claim(&self, uid: u32) -> Result<ConnectionSlot, Refusal> {
        let mut counts = lock(&self.counts);
        let open = counts.open.get(&uid).copied().unwrap_or(0);
        let limited = uid != 0 || self.limits.limit_root;
        if limited && open >= self.limits.per_uid {
            return Err(Refusal::PerUidLimit { uid, open });
        }
        counts.open.insert(uid, open + 1);
        Ok(ConnectionSlot {
            uid,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Open connections of `uid`.
    pub fn open(&self, uid: u32) -> usize {
        lock(&self.counts).open.get(&uid).copied().unwrap_or(0)
    }

    /// True the first time `uid` is refused since it last had room: a flood logs one line.
    fn first_refusal(&self, uid: u32) -> bool {
        lock(&self.counts).reported.insert(uid)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        let left = match counts.open.get_mut(&self.uid) {
            Some(open) => {
                *open = open.saturating_sub(1);
                *open
            }
            None => 0,
        };
        if left == 0 {
            counts.open.remove(&self.uid);
        }
        counts.reported.remove(&self.uid);
    }
}

/// A server-side connection socket that holds its uid's slot for as long as it lives, and
/// writes through a [`WriteQueue`] so that a slow client never holds up the server.
#[derive(Debug)]
pub struct CountedStream {
    stream: zlink::tokio::unix::Stream,
    /// A second descriptor of the same socket, registered on its own for the write queue.
    writer: tokio::net::UnixStream,
    slot: ConnectionSlot,
}

type StreamReadHalf = <zlink::tokio::unix::Stream as Socket>::ReadHalf;

/// Longest message a client may send, NUL delimiter excluded. zlink buffers a message until its
/// NUL, growing its buffer up to 100 MB, so without this limit each connection could hold that
/// much of a daemon's memory. Parameters are limited further, with an error reply, to
/// [`crate::service::MAX_PARAMETERS_BYTES`]; a message past this limit gets its connection
/// closed instead.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The read half of a [`CountedStream`]: enforces [`MAX_MESSAGE_BYTES`].
#[derive(Debug)]
pub struct CountedReadHalf {
    inner: StreamReadHalf,
    /// Bytes received since the last NUL: the length so far of the message being received.
    unterminated: usize,
}

/// The length of the unfinished message after reading `received` on top of `unterminated`
/// bytes of it, or None when it passes [`MAX_MESSAGE_BYTES`].
fn message_length_after(unterminated: usize, received: &[u8]) -> Option<usize> {
    let length = match received.iter().rposition(|b| *b == 0) {
        Some(nul) => received.len() - nul - 1,
        None => unterminated + received.len(),
    };
    (length <= MAX_MESSAGE_BYTES).then_some(length)
}

impl CountedStream {
    fn new(stream: tokio::net::UnixStream, slot: ConnectionSlot) -> std::io::Result<Self> {
        let duplicate = std::os::unix::net::UnixStream::from(stream.as_fd().try_clone_to_owned()?);
        let writer = tokio::net::UnixStream::from_std(duplicate)?;
        let stream = zlink::tokio::unix::Stream::try_from(stream).map_err(std::io::Error::other)?;
        Ok(CountedStream {
            stream,
            writer,
            slot,
        })
    }
}

impl Socket for CountedStream {
    type ReadHalf = CountedReadHalf;
    type WriteHalf = QueuedWriteHalf;

    const CAN_TRANSFER_FDS: bool = true;

    fn split(self) -> (CountedReadHalf, QueuedWriteHalf) {
        let (read, direct) = self.stream.split();
        let read = CountedReadHalf {
            inner: read,
            unterminated: 0,
        };
        // The slot goes with the write queue, which outlives the connection while it still
        // owes the client bytes: a client cannot shed its slot by leaving a reply unread.
        let queue = WriteQueue::for_connection(self.writer, direct, self.slot);
        (read, QueuedWriteHalf::new(queue))
    }
}

impl ReadHalf for CountedReadHalf {
    async fn read(&mut self, buf: &mut [u8]) -> zlink::Result<ReadResult> {
        let result = self.inner.read(buf).await?;
        let received = &buf[..result.bytes_read().min(buf.len())];
        match message_length_after(self.unterminated, received) {
            Some(length) => {
                self.unterminated = length;
                Ok(result)
            }
            // An error ends the connection: zlink drops connections it cannot read from.
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
            )
            .into()),
        }
    }
}

impl AsFd for CountedReadHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

// Peer credentials (SO_PEERCRED) are read through this half.
impl UnixSocket for CountedReadHalf {}

/// A Unix listener that enforces the fd reserve and the per-uid limit.
#[derive(Debug)]
pub struct BoundedListener {
    listener: tokio::net::UnixListener,
    counter: ConnectionCounter,
}

impl BoundedListener {
    /// Binds `path` (which must not exist) with the default limits.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        Self::bind_with(path, ConnectionLimits::default())
    }

    pub fn bind_with(path: &Path, limits: ConnectionLimits) -> std::io::Result<Self> {
        Ok(BoundedListener {
            listener: tokio::net::UnixListener::bind(path)?,
            counter: ConnectionCounter::new(limits),
        })
    }

    /// Takes `stream` on, or says why not.
    fn admit(&self, stream: &tokio::net::UnixStream) -> Result<ConnectionSlot, String> {
        let (open, limit) = fd_usage();
        if open.saturating_add(FD_RESERVE) > limit {
            return Err(format!("{open} of {limit} file descriptors in use"));
        }
        let uid = rustix::net::sockopt::socket_peercred(stream)
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?
            .uid
            .as_raw();
        self.counter.claim(uid).map_err(|refusal| {
            if self.counter.first_refusal(uid) {
                refusal.to_string()
            } else {
                String::new()
            }
        })
    }
}

impl zlink::Listener for BoundedListener {
    type Socket = CountedStream;

    async fn accept(&mut self) -> zlink::Result<Option<zlink::Connection<CountedStream>>> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            match self.admit(&stream) {
                Ok(slot) => return Ok(Some(CountedStream::new(stream, slot)?.into())),
                Err(reason) if reason.is_empty() => {}
                // Bounded too: refusals for want of descriptors come once per connection.
                Err(reason) => {
                    if let Some(suppressed) = berth_logging::flood::allow(None) {
                        let suppressed = (suppressed > 0).then_some(suppressed);
                        tracing::warn!(%reason, suppressed, "refusing connections");
                    }
                }
            }
        }
    }
}

/// Open fds of this process and its soft RLIMIT_NOFILE.
fn fd_usage() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (open, limit)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (daemons hold one fd per client and per
/// running service).
pub fn raise_fd_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    fn limits(per_uid: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_uid,
            limit_root: true,
        }
    }

    #[test]
    fn message_length_counts_from_the_last_nul() {
        assert_eq!(message_length_after(10, b"abc"), Some(13));
        assert_eq!(message_length_after(10, b"ab\0cd"), Some(2));
        assert_eq!(message_length_after(10, b"abc\0"), Some(0));
    }

    #[test]
    fn a_message_past_the_limit_is_refused() {
        let chunk = vec![b'x'; 1024];

        let over = message_length_after(MAX_MESSAGE_BYTES - 10, &chunk);
        let after_nul = message_length_after(MAX_MESSAGE_BYTES - 10, b"x\0y");

        assert_eq!(over, None);
        assert_eq!(after_nul, Some(1));
    }

    #[test]
    fn a_uid_at_its_limit_is_refused() {
        let counter = ConnectionCounter::new(limits(2));
        let _first = counter.claim(1000).unwrap();
        let _second = counter.claim(1000).unwrap();

        let third = counter.claim(1000);

        assert_eq!(
            third.unwrap_err(),
            Refusal::PerUidLimit { uid: 1000, open: 2 }
        );
    }

    #[test]
    fn other_uids_keep_their_own_room() {
        let counter = ConnectionCounter::new(limits(1));
        let _taken = counter.claim(1000).unwrap();

        let other = counter.claim(1001);

        assert!(other.is_ok());
    }

    #[test]
    fn a_dropped_slot_makes_room_again() {
        let counter = ConnectionCounter::new(limits(1));
        let slot = counter.claim(1000).unwrap();

        drop(slot);

        assert_eq!(counter.open(1000), 0);
        assert!(counter.claim(1000).is_ok());
    }

    #[test]
    fn root_is_exempt_by_default() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            per_uid: 1,
            limit_root: false,
        });
        let _first = counter.claim(0).unwrap();

        let second = counter.claim(0);

        assert!(second.is_ok());
    }

    #[test]
    fn a_flood_is_reported_once_until_room_returns() {
        let counter = ConnectionCounter::new(limits(1));
        let slot = counter.claim(1000).unwrap();

        let (first, second) = (counter.first_refusal(1000), counter.first_refusal(1000));
        drop(slot);

        assert!(first && !second);
        assert!(
            counter.first_refusal(1000),
            "room returned, so report again"
        );
    }

    /// An interface with no methods: GetInfo is answered by the service layer.
    struct Silent;

    impl crate::service::Interface for Silent {
        const NAME: &'static str = "io.berth.Test";

        fn description(&self) -> &str {
            "interface io.berth.Test\n"
        }

        async fn handle(
            &mut self,
            _method: &str,
            _parameters: serde_json::Value,
            _ctx: crate::service::CallContext,
        ) -> crate::service::Outcome {
            crate::service::Outcome::Error(serde_json::json!({}))
        }
    }

    /// Sends a GetInfo call on `stream` and says whether any reply came back.
    fn answered(stream: &mut UnixStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let call = b"{\"method\":\"org.varlink.service.GetInfo\"}\0";
        if stream.write_all(call).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte), Ok(1))
    }

    /// A real listener and real sockets: the connection past the limit is closed unanswered,
    /// and closing one makes room for the next.
    #[test]
    fn the_listener_closes_connections_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limited");
        let server_path = path.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = BoundedListener::bind_with(&server_path, limits(2)).unwrap();
                ready_tx.send(()).unwrap();
                let service =
                    crate::service::VarlinkService::new(Silent, crate::service::BERTH_INFO);
                tokio::select! {
                    _ = zlink::Server::new(listener, service).run() => {}
                    _ = done_rx => {}
                }
            });
        });
        ready_rx.recv().unwrap();

        let mut first = UnixStream::connect(&path).unwrap();
        let mut second = UnixStream::connect(&path).unwrap();
        let mut third = UnixStream::connect(&path).unwrap();
        let (first_ok, second_ok, third_ok) = (
            answered(&mut first),
            answered(&mut second),
            answered(&mut third),
        );
        drop(first);
        let mut fourth_ok = false;
        for _ in 0..50 {
            let mut fourth = UnixStream::connect(&path).unwrap();
            if answered(&mut fourth) {
                fourth_ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done_tx.send(()).unwrap();
        server.join().unwrap();

        assert!(
            first_ok && second_ok,
            "connections within the limit are served"
        );
        assert!(!third_ok, "the connection past the limit was served");
        assert!(fourth_ok, "closing a connection did not make room");
    }
}
