//! The listening side of a berth daemon: limits on what each peer may hold.
//!
//! A daemon refuses every connection once fewer than [`FD_RESERVE`] file descriptors are left.
//! Each non-root uid may hold at most [`ConnectionLimits::per_uid`] connections at once: any
//! local user can reach the manager socket, and without a per-uid limit one user could use up
//! the fd reserve and lock everyone else out. A refused connection is accepted and closed at
//! once, so its client sees the connection end before any reply. The bytes a uid's connections
//! hold (unfinished messages, receive buffers, queued replies) are bounded together by
//! [`ConnectionLimits::bytes_per_uid`], and a started message must arrive whole within
//! [`ConnectionLimits::message_deadline`]; a connection past either is closed. Root is exempt
//! from the per-uid limits, as it can stop the daemon anyway. The numbers are in
//! [`crate::limits`].

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zlink::connection::socket::{ReadHalf, ReadResult, Socket, UnixSocket};

use crate::limits::{
    BYTES_PER_UID, CONNECTIONS_PER_UID, FD_RESERVE, MAX_MESSAGE_BYTES, MESSAGE_DEADLINE,
    READ_BURST_BYTES, READ_BYTES_PER_SECOND_PER_UID,
};
use crate::write_queue::{QueuedWriteHalf, WriteQueue};

/// Per-peer limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections one uid may hold at once.
    pub per_uid: usize,
    /// Most bytes one uid's connections may hold together (see [`BYTES_PER_UID`]).
    pub bytes_per_uid: usize,
    /// Time a started message has to arrive whole (every peer, root too).
    pub message_deadline: Duration,
    /// Bytes per second one uid's connections may send together, after a burst of
    /// `read_burst` bytes (see [`READ_BYTES_PER_SECOND_PER_UID`]).
    pub read_rate: usize,
    pub read_burst: usize,
    /// Whether root's connections are counted against the per-uid limits.
    pub limit_root: bool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            per_uid: CONNECTIONS_PER_UID,
            bytes_per_uid: BYTES_PER_UID,
            message_deadline: MESSAGE_DEADLINE,
            read_rate: READ_BYTES_PER_SECOND_PER_UID,
            read_burst: READ_BURST_BYTES,
            limit_root: false,
        }
    }
}

/// Open connections and bytes held per uid, shared by a listener and the slots of its
/// connections.
#[derive(Debug, Default)]
struct Counts {
    open: HashMap<u32, usize>,
    held: HashMap<u32, usize>,
    /// Per uid: bytes it may still read at once, as of when.
    reads: HashMap<u32, (f64, Instant)>,
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
    /// The uid's byte budget; None for an exempt uid (root).
    byte_limit: Option<usize>,
    /// The uid's read rate and burst; None for an exempt uid.
    read_limit: Option<(usize, usize)>,
}

/// Bytes one part of a connection (its receive buffer, its write queue) holds, counted in its
/// uid's total; given back when dropped.
#[derive(Debug)]
pub struct ByteCharge {
    uid: u32,
    counts: Arc<Mutex<Counts>>,
    byte_limit: Option<usize>,
    /// The uid's read rate and burst; None for an exempt uid.
    read_limit: Option<(usize, usize)>,
    held: usize,
}

impl ByteCharge {
    /// A charge of nothing, for a uid that is not counted (a queue without a connection).
    pub fn uncounted() -> Self {
        ByteCharge {
            uid: 0,
            counts: Arc::default(),
            byte_limit: None,
            read_limit: None,
            held: 0,
        }
    }

    /// Sets what this part holds to `bytes`. Refused, and left as it was, when that would take
    /// the uid past its budget; going down is never refused.
    pub fn set(&mut self, bytes: usize) -> Result<(), Refusal> {
        if bytes == self.held {
            return Ok(());
        }
        let mut counts = lock(&self.counts);
        let total = counts.held.get(&self.uid).copied().unwrap_or(0);
        let others = total.saturating_sub(self.held);
        let wanted = others.saturating_add(bytes);
        if let Some(limit) = self.byte_limit
            && bytes > self.held
            && wanted > limit
        {
            return Err(Refusal::ByteBudget {
                uid: self.uid,
                held: others,
                wanted: bytes,
                limit,
            });
        }
        if wanted == 0 {
            counts.held.remove(&self.uid);
        } else {
            counts.held.insert(self.uid, wanted);
        }
        self.held = bytes;
        Ok(())
    }
}

impl ByteCharge {
    /// Counts `bytes` just read against the uid's read rate; returns when the uid may read
    /// again if it went past its burst.
    fn spend_read(&self, bytes: usize) -> Option<Instant> {
        let (rate, burst) = self.read_limit?;
        let rate = rate.max(1) as f64;
        let now = Instant::now();
        let mut counts = lock(&self.counts);
        let (credit, since) = counts.reads.entry(self.uid).or_insert((burst as f64, now));
        let refilled = *credit + now.saturating_duration_since(*since).as_secs_f64() * rate;
        let left = refilled.min(burst as f64) - bytes as f64;
        (*credit, *since) = (left, now);
        (left < 0.0).then(|| now + Duration::from_secs_f64(-left / rate))
    }
}

impl Drop for ByteCharge {
    fn drop(&mut self) {
        let _ = self.set(0);
    }
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Plain counters: carry on with them after a panic elsewhere.
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a connection was refused or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("uid {uid} already holds {open} connections, the most allowed")]
    PerUidLimit { uid: u32, open: usize },
    #[error(
        "uid {uid}'s connections hold {held} bytes; {wanted} more for this one would pass \
         the {limit} allowed"
    )]
    ByteBudget {
        uid: u32,
        held: usize,
        wanted: usize,
        limit: usize,
    },
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
            byte_limit: limited.then_some(self.limits.bytes_per_uid),
            read_limit: limited.then_some((self.limits.read_rate, self.limits.read_burst)),
        })
    }

    /// Open connections of `uid`.
    pub fn open(&self, uid: u32) -> usize {
        lock(&self.counts).open.get(&uid).copied().unwrap_or(0)
    }

    /// Bytes the connections of `uid` hold.
    pub fn held(&self, uid: u32) -> usize {
        lock(&self.counts).held.get(&uid).copied().unwrap_or(0)
    }

    /// True the first time `uid` is refused since it last had room: a flood logs one line.
    fn first_refusal(&self, uid: u32) -> bool {
        lock(&self.counts).reported.insert(uid)
    }
}

impl ConnectionSlot {
    /// A new charge of nothing against this connection's uid.
    pub fn charge(&self) -> ByteCharge {
        ByteCharge {
            uid: self.uid,
            counts: Arc::clone(&self.counts),
            byte_limit: self.byte_limit,
            read_limit: self.read_limit,
            held: 0,
        }
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
            // Forgotten only once it has refilled: reconnecting must not restore a burst.
            if let (Some((rate, burst)), Some((credit, since))) =
                (self.read_limit, counts.reads.get(&self.uid).copied())
            {
                let refilled = credit + since.elapsed().as_secs_f64() * rate as f64;
                if refilled >= burst as f64 {
                    counts.reads.remove(&self.uid);
                }
            }
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
    message_deadline: Duration,
}

type StreamReadHalf = <zlink::tokio::unix::Stream as Socket>::ReadHalf;

/// The read half of a [`CountedStream`]: enforces [`MAX_MESSAGE_BYTES`], the uid's byte budget
/// for its receive buffer, and the deadline of a started message.
#[derive(Debug)]
pub struct CountedReadHalf {
    inner: StreamReadHalf,
    /// Bytes received since the last NUL: the length so far of the message being received.
    unterminated: usize,
    /// When the message being received began (None between messages).
    started: Option<Instant>,
    /// When the uid, past its read rate, may be read from again.
    resume_at: Option<Instant>,
    message_deadline: Duration,
    /// zlink's receive buffer of this connection and [`CountedReadHalf::staged`], in the uid's
    /// total.
    charge: ByteCharge,
    /// Bytes read from the socket but not yet handed to zlink (see [`STAGE_BYTES`]), from
    /// `staged_from` on, and the descriptors that came with them.
    staged: Vec<u8>,
    staged_from: usize,
    staged_fds: Vec<std::os::fd::OwnedFd>,
    staged_credentials: Option<zlink::connection::PassedCredentials>,
}

/// Bytes read from the socket at once while zlink's buffer is growing. zlink reads a message
/// that does not fit its buffer 256 bytes at a time, one system call each, and polls every
/// other connection between its reads; a few hostile 4 MiB messages then kept the daemon busy
/// for seconds. Reads for a small buffer go through a staging buffer of this size instead.
const STAGE_BYTES: usize = 64 * 1024;

/// The length of the unfinished message after reading `received` on top of `unterminated`
/// bytes of it, or None when any message in it passes [`MAX_MESSAGE_BYTES`]: the one the read
/// finishes (its first bytes came before), one wholly inside the read (zlink's buffer, grown
/// for a long message, can take more than one at once), or the one it leaves unfinished.
fn message_length_after(unterminated: usize, received: &[u8]) -> Option<usize> {
    // `contains` is a fast memchr; most reads of a long message hold no NUL.
    if !received.contains(&0) {
        let length = unterminated.saturating_add(received.len());
        return (length <= MAX_MESSAGE_BYTES).then_some(length);
    }
    let mut messages = received.split(|b| *b == 0);
    let mut length = unterminated.saturating_add(messages.next().map_or(0, <[u8]>::len));
    for next in messages {
        if length > MAX_MESSAGE_BYTES {
            return None;
        }
        length = next.len();
    }
    (length <= MAX_MESSAGE_BYTES).then_some(length)
}

/// The error that ends a connection of `uid` (zlink drops connections it cannot read from),
/// logged with the uid: zlink's own line names neither the peer nor the limit.
fn closing(uid: u32, kind: std::io::ErrorKind, why: String) -> zlink::Error {
    if let Some(suppressed) = berth_logging::flood::allow(Some(uid)) {
        let suppressed = (suppressed > 0).then_some(suppressed);
        tracing::warn!(peer_uid = uid, reason = %why, suppressed, "closing a connection");
    }
    std::io::Error::new(kind, why).into()
}

impl CountedStream {
    fn new(
        stream: tokio::net::UnixStream,
        slot: ConnectionSlot,
        message_deadline: Duration,
    ) -> std::io::Result<Self> {
        let duplicate = std::os::unix::net::UnixStream::from(stream.as_fd().try_clone_to_owned()?);
        let writer = tokio::net::UnixStream::from_std(duplicate)?;
        let stream = zlink::tokio::unix::Stream::try_from(stream).map_err(std::io::Error::other)?;
        Ok(CountedStream {
            stream,
            writer,
            slot,
            message_deadline,
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
            started: None,
            resume_at: None,
            message_deadline: self.message_deadline,
            charge: self.slot.charge(),
            staged: Vec::new(),
            staged_from: 0,
            staged_fds: Vec::new(),
            staged_credentials: None,
        };
        // The slot goes with the write queue, which outlives the connection while it still
        // owes the client bytes: a client cannot shed its slot by leaving a reply unread.
        let queue = WriteQueue::for_connection(self.writer, direct, self.slot);
        (read, QueuedWriteHalf::new(queue))
    }
}

impl CountedReadHalf {
    /// Reads from the socket into `buf`, within the deadline of a started message.
    async fn read_socket(
        inner: &mut StreamReadHalf,
        buf: &mut [u8],
        started: Option<Instant>,
        deadline: Duration,
        uid: u32,
    ) -> zlink::Result<ReadResult> {
        let Some(started) = started else {
            return inner.read(buf).await;
        };
        let due = tokio::time::Instant::from_std(started + deadline);
        match tokio::time::timeout_at(due, inner.read(buf)).await {
            Ok(result) => result,
            Err(_late) => Err(closing(
                uid,
                std::io::ErrorKind::TimedOut,
                format!("a message still unfinished after {deadline:?}"),
            )),
        }
    }

    /// Reads what the socket holds now, up to [`STAGE_BYTES`], into the staging buffer,
    /// without waiting (an idle connection holds no staging buffer), and only within the uid's
    /// budget.
    fn stage_waiting(&mut self, zlink_buffer: usize) {
        use futures_util::FutureExt;
        if self.charge.set(zlink_buffer + STAGE_BYTES).is_err() {
            return;
        }
        let mut stage = vec![0u8; STAGE_BYTES];
        // Dropped unfinished when nothing is waiting; an error shows again at the next read.
        if let Some(Ok(mut read)) = self.inner.read(&mut stage).now_or_never() {
            stage.truncate(read.bytes_read());
            if !stage.is_empty() {
                self.staged_fds = read.take_fds();
                self.staged_credentials = read.take_credentials();
                self.staged = stage;
            }
        }
        // Going down is never refused.
        let _ = self.charge.set(zlink_buffer + self.staged.len());
    }

    /// Hands zlink what is staged, as much as fits `buf`; the descriptors (and credentials) go
    /// with the last staged byte, as they came with the last byte of the read that staged them.
    fn take_staged(&mut self, buf: &mut [u8]) -> ReadResult {
        let rest = &self.staged[self.staged_from..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.staged_from += n;
        if self.staged_from < self.staged.len() {
            return ReadResult::new(n);
        }
        self.staged = Vec::new();
        self.staged_from = 0;
        ReadResult::new(n)
            .set_fds(std::mem::take(&mut self.staged_fds))
            .set_credentials(self.staged_credentials.take())
    }
}

impl ReadHalf for CountedReadHalf {
    async fn read(&mut self, buf: &mut [u8]) -> zlink::Result<ReadResult> {
        if let Some(resume) = self.resume_at {
            // Kept in `self`: zlink drops and recreates this future on every turn of its loop.
            tokio::time::sleep_until(tokio::time::Instant::from_std(resume)).await;
            self.resume_at = None;
        }
        // zlink reads into the free end of its buffer only once every complete message in it
        // was handled, and the unfinished one was moved to the front: so the buffer holds our
        // unfinished bytes followed by `buf`. It never shrinks, so that is what it keeps.
        let zlink_buffer = self.unterminated.saturating_add(buf.len());
        let staged = self.staged.len() - self.staged_from;
        if let Err(refusal) = self.charge.set(zlink_buffer.saturating_add(staged)) {
            return Err(closing(
                self.charge.uid,
                std::io::ErrorKind::OutOfMemory,
                refusal.to_string(),
            ));
        }
        let result = if staged > 0 {
            self.take_staged(buf)
        } else {
            let (started, deadline) = (self.started, self.message_deadline);
            let uid = self.charge.uid;
            let read = Self::read_socket(&mut self.inner, buf, started, deadline, uid).await?;
            // A full small buffer: the message goes on, and more of it may be waiting.
            if read.bytes_read() == buf.len() && buf.len() < STAGE_BYTES && read.fds().is_empty() {
                self.stage_waiting(zlink_buffer);
            }
            read
        };
        let received = &buf[..result.bytes_read().min(buf.len())];
        let Some(length) = message_length_after(self.unterminated, received) else {
            return Err(closing(
                self.charge.uid,
                std::io::ErrorKind::InvalidData,
                format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
            ));
        };
        let ended = received.contains(&0);
        self.started = match (length, ended) {
            (0, _) => None,
            // A new message began after a NUL in this read.
            (_, true) => Some(Instant::now()),
            (_, false) => self.started.or_else(|| Some(Instant::now())),
        };
        self.unterminated = length;
        self.resume_at = self.charge.spend_read(received.len());
        Ok(result)
    }
}

impl AsFd for CountedReadHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

// Peer credentials (SO_PEERCRED) are read through this half.
impl UnixSocket for CountedReadHalf {}

/// A Unix listener that enforces the fd reserve and the per-peer limits.
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

    /// Serves on a socket already bound and listening (passed by socket activation), with the
    /// default limits. Needs the tokio runtime.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(BoundedListener {
            listener: tokio::net::UnixListener::from_std(listener)?,
            counter: ConnectionCounter::new(ConnectionLimits::default()),
        })
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
                Ok(slot) => {
                    let deadline = self.counter.limits.message_deadline;
                    return Ok(Some(CountedStream::new(stream, slot, deadline)?.into()));
                }
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

    use super::test_server::TestServer;
    use super::*;

    fn limits(per_uid: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_uid,
            limit_root: true,
            ..ConnectionLimits::default()
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
    fn a_message_that_ends_past_the_limit_is_refused_though_its_nul_came() {
        let finished_over = message_length_after(MAX_MESSAGE_BYTES - 1, b"ab\0");
        let finished_at = message_length_after(MAX_MESSAGE_BYTES - 2, b"ab\0cd");

        assert_eq!(finished_over, None);
        assert_eq!(finished_at, Some(2));
    }

    #[test]
    fn a_long_message_wholly_inside_one_read_is_refused() {
        let mut read = b"a\0".to_vec();
        read.extend(std::iter::repeat_n(b'x', MAX_MESSAGE_BYTES + 1));
        read.extend_from_slice(b"\0b");

        let length = message_length_after(0, &read);

        assert_eq!(length, None);
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
            ..ConnectionLimits::default()
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
        let server = TestServer::start(|| Silent, limits(2));

        let mut first = UnixStream::connect(&server.path).unwrap();
        let mut second = UnixStream::connect(&server.path).unwrap();
        let mut third = UnixStream::connect(&server.path).unwrap();
        let (first_ok, second_ok, third_ok) = (
            answered(&mut first),
            answered(&mut second),
            answered(&mut third),
        );
        drop(first);
        let mut fourth_ok = false;
        for _ in 0..50 {
            let mut fourth = UnixStream::connect(&server.path).unwrap();
            if answered(&mut fourth) {
                fourth_ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        assert!(
            first_ok && second_ok,
            "connections within the limit are served"
        );
        assert!(!third_ok, "the connection past the limit was served");
        assert!(fourth_ok, "closing a connection did not make room");
    }

    #[test]
    fn one_uid_cannot_hold_more_bytes_than_its_budget() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            bytes_per_uid: 1000,
            ..limits(10)
        });
        let (a, b) = (counter.claim(1000).unwrap(), counter.claim(1000).unwrap());
        let (mut first, mut second) = (a.charge(), b.charge());
        first.set(600).unwrap();

        let over = second.set(500);
        let within = second.set(400);

        assert!(matches!(over, Err(Refusal::ByteBudget { held: 600, .. })));
        assert!(within.is_ok());
        assert_eq!(counter.held(1000), 1000);
    }

    #[test]
    fn a_dropped_charge_gives_its_bytes_back() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            bytes_per_uid: 1000,
            ..limits(10)
        });
        let slot = counter.claim(1000).unwrap();
        let mut charge = slot.charge();
        charge.set(1000).unwrap();

        drop(charge);

        assert_eq!(counter.held(1000), 0);
        assert!(slot.charge().set(1000).is_ok());
    }

    #[test]
    fn root_has_no_byte_budget_by_default() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            bytes_per_uid: 10,
            ..ConnectionLimits::default()
        });
        let slot = counter.claim(0).unwrap();

        let big = slot.charge().set(1 << 30);

        assert!(big.is_ok());
    }

    #[test]
    fn a_uid_past_its_read_rate_waits_and_others_do_not() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            read_rate: 1000,
            read_burst: 2000,
            ..limits(10)
        });
        let (slot, other) = (counter.claim(1000).unwrap(), counter.claim(1001).unwrap());
        let (charge, other_charge) = (slot.charge(), other.charge());

        let within = charge.spend_read(1500);
        let past = charge.spend_read(1500);
        let others = other_charge.spend_read(1500);

        assert_eq!(within, None);
        let wait = past.expect("past the burst").duration_since(Instant::now());
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(others, None);
    }

    #[test]
    fn reconnecting_does_not_restore_the_burst() {
        let counter = ConnectionCounter::new(ConnectionLimits {
            read_rate: 1,
            read_burst: 1000,
            ..limits(10)
        });
        let slot = counter.claim(1000).unwrap();
        assert_eq!(slot.charge().spend_read(1000), None);

        drop(slot);
        let again = counter.claim(1000).unwrap().charge().spend_read(500);

        assert!(
            again.is_some(),
            "a new connection read at once past the rate"
        );
    }

    #[test]
    fn a_fast_sender_is_slowed_to_its_rate() {
        let server = TestServer::start(
            || Silent,
            ConnectionLimits {
                read_rate: 1024 * 1024,
                read_burst: 64 * 1024,
                ..limits(10)
            },
        );
        let mut client = UnixStream::connect(&server.path).unwrap();
        let started = Instant::now();

        // 1 MiB of whitespace and a call: 1 s at 1 MiB/s.
        client.write_all(&vec![b' '; 1024 * 1024]).unwrap();
        let answered = answered(&mut client);

        let took = started.elapsed();
        assert!(answered);
        assert!(took >= Duration::from_millis(800), "{took:?}");
    }

    /// Sends `bytes` bytes of an unfinished message on a new connection, then says whether the
    /// server closed it within `within`.
    fn closed_after_partial(path: &Path, bytes: usize, within: Duration) -> bool {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.set_write_timeout(Some(within)).unwrap();
        stream.set_read_timeout(Some(within)).unwrap();
        let mut message = b"{\"method\":\"org.varlink.service.GetInfo\",\"x\":\"".to_vec();
        message.resize(bytes, b'x');
        if stream.write_all(&message).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    #[test]
    fn unfinished_messages_of_one_uid_are_bounded_together() {
        let server = TestServer::start(
            || Silent,
            ConnectionLimits {
                bytes_per_uid: 64 * 1024,
                ..limits(10)
            },
        );
        let wait = Duration::from_millis(500);

        // Each connection holds 40 KiB: the first fits the 64 KiB, the second does not.
        let mut holder = UnixStream::connect(&server.path).unwrap();
        holder.write_all(&[b' '; 40 * 1024]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let second_closed = closed_after_partial(&server.path, 40 * 1024, Duration::from_secs(5));
        let mut holder_alive = [0u8; 1];
        holder.set_read_timeout(Some(wait)).unwrap();
        let holder_read = holder.read(&mut holder_alive);

        assert!(second_closed, "the connection past the budget was kept");
        assert!(
            matches!(holder_read, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the first connection was closed too: {holder_read:?}"
        );
    }

    #[test]
    fn a_message_not_finished_in_time_closes_its_connection() {
        let server = TestServer::start(
            || Silent,
            ConnectionLimits {
                message_deadline: Duration::from_millis(300),
                ..limits(10)
            },
        );
        let mut slow = UnixStream::connect(&server.path).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();

        // A byte every 50 ms: always sending, never finishing.
        let mut closed_after = None;
        slow.write_all(b"{\"method\":").unwrap();
        while started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
            if slow.write_all(b" ").is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        let mut other = UnixStream::connect(&server.path).unwrap();

        let closed_after = closed_after.expect("the slow connection was never closed");
        assert!(
            closed_after >= Duration::from_millis(300),
            "{closed_after:?}"
        );
        assert!(answered(&mut other), "the server stopped serving");
    }

    #[test]
    fn a_finished_message_restarts_the_deadline() {
        let server = TestServer::start(
            || Silent,
            ConnectionLimits {
                message_deadline: Duration::from_millis(300),
                ..limits(10)
            },
        );
        let mut client = UnixStream::connect(&server.path).unwrap();

        // Three calls, each sent in two parts 200 ms apart: 600 ms in all, each under 300 ms.
        let mut all_answered = true;
        for _ in 0..3 {
            client.write_all(b"{\"method\":").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            all_answered &= answered_rest(&mut client, b"\"org.varlink.service.GetInfo\"}\0");
        }

        assert!(all_answered, "a connection within the deadline was closed");
    }

    /// Sends the rest of a call and reads its whole reply.
    fn answered_rest(stream: &mut UnixStream, rest: &[u8]) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if stream.write_all(rest).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == 0 => return true,
                Ok(1) => {}
                _ => return false,
            }
        }
    }
}

/// A service on a real listener in its own thread, for tests.
#[cfg(test)]
pub(crate) mod test_server {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::*;
    use crate::service::{BERTH_INFO, Interface, VarlinkService};

    pub(crate) struct TestServer {
        pub path: PathBuf,
        _dir: tempfile::TempDir,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl TestServer {
        /// Serves the interface `make` builds, with `limits`, until dropped.
        pub fn start<I, F>(make: F, limits: ConnectionLimits) -> TestServer
        where
            I: Interface + 'static,
            F: FnOnce() -> I + Send + 'static,
        {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("service");
            let server_path = path.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            // Not joined: a test that fails may leave the server busy.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = BoundedListener::bind_with(&server_path, limits).unwrap();
                    ready_tx.send(()).unwrap();
                    let service = VarlinkService::new(make(), BERTH_INFO);
                    tokio::select! {
                        _ = service.serve(listener) => {}
                        _ = done_rx => {}
                    }
                });
            });
            ready_rx.recv().unwrap();
            TestServer {
                path,
                _dir: dir,
                done: Some(done_tx),
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}
