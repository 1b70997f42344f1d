//! Replies are written without making the server wait for the client to read them.
//!
//! zlink's server loop awaits each reply's write in place. So while one client's socket buffer
//! is full (the client stopped reading, or reads slowly), the whole daemon serves nobody. Any
//! local user could freeze berthd that way: ask for a long log and never read it. Here a reply
//! is written as far as the socket takes it at once, and the rest is queued per connection. A
//! background task sends the queue as the client reads. A reply stream waits while its
//! connection's queue is long ([`WriteQueue::poll_room`]), so a slow follower slows only
//! itself. A connection whose queue would pass [`MAX_QUEUED_BYTES`] is shut down.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use zlink::connection::socket::{UnixSocket, WriteHalf};

use crate::limits::{HIGH_WATER_BYTES, LOW_WATER_BYTES, MAX_QUEUED_BYTES, ORPHAN_GRACE};
use crate::listener::{ByteCharge, ConnectionSlot};

/// Capacity a drained queue keeps; more is given back, as the connection may idle for long.
const KEPT_CAPACITY: usize = 64 * 1024;

#[derive(Debug)]
struct QueueState {
    pending: VecDeque<u8>,
    /// `pending` in the uid's byte budget.
    charge: ByteCharge,
    /// A background task is sending `pending`.
    flushing: bool,
    /// The next message zlink writes was pushed already: drop it.
    replaces_next_write: bool,
    /// The connection failed or was shut down: nothing more is sent.
    broken: bool,
    /// The reply stream waiting for room ([`WriteQueue::poll_room`]). One slot, replaced on
    /// every poll: zlink polls its streams on every turn of its loop, and a list would grow
    /// with each turn while a client stalls.
    room_waiter: Option<Waker>,
    /// The writer waiting for the queue to drain ([`WriteQueue::poll_empty`]).
    empty_waiter: Option<Waker>,
}

impl QueueState {
    fn new(charge: ByteCharge) -> Mutex<Self> {
        Mutex::new(QueueState {
            pending: VecDeque::new(),
            charge,
            flushing: false,
            replaces_next_write: false,
            broken: false,
            room_waiter: None,
            empty_waiter: None,
        })
    }

    /// Charges the uid for what is queued now (after it went down).
    fn recharge(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEPT_CAPACITY {
            self.pending = VecDeque::new();
        }
        // Going down is never refused.
        let _ = self.charge.set(self.pending.len());
    }

    fn wake_all(&mut self) {
        for waker in [self.room_waiter.take(), self.empty_waiter.take()]
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
    }
}

/// The bytes waiting to go out on one connection, and the socket they go out on.
#[derive(Debug)]
pub struct WriteQueue {
    socket: tokio::net::UnixStream,
    state: Mutex<QueueState>,
    orphan_grace: Duration,
    /// zlink's own write half of the connection: sends messages that carry file descriptors or
    /// credentials, after the queue has drained. It lives as long as the queue, since dropping
    /// it shuts the socket's write side down, and queued bytes may still be owed.
    direct: Mutex<Option<DirectHalf>>,
    /// The connection's place in its uid's count ([`crate::listener::ConnectionSlot`]).
    _slot: Option<ConnectionSlot>,
}

type DirectHalf = <zlink::tokio::unix::Stream as zlink::connection::socket::Socket>::WriteHalf;

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection was shut down")
}

impl WriteQueue {
    /// A queue on `socket` alone (no descriptor passing, no slot), as tests use it.
    pub fn new(socket: tokio::net::UnixStream) -> Arc<Self> {
        Self::with_orphan_grace(socket, ORPHAN_GRACE)
    }

    pub fn with_orphan_grace(socket: tokio::net::UnixStream, grace: Duration) -> Arc<Self> {
        Arc::new(WriteQueue {
            socket,
            state: QueueState::new(ByteCharge::uncounted()),
            orphan_grace: grace,
            direct: Mutex::new(None),
            _slot: None,
        })
    }

    /// The queue of one server connection: `socket` is a duplicate of the connection's
    /// descriptor, `direct` zlink's write half of it, and `slot` its place in its uid's count.
    pub fn for_connection(
        socket: tokio::net::UnixStream,
        direct: DirectHalf,
        slot: ConnectionSlot,
    ) -> Arc<Self> {
        Arc::new(WriteQueue {
            socket,
            state: QueueState::new(slot.charge()),
            orphan_grace: ORPHAN_GRACE,
            direct: Mutex::new(Some(direct)),
            _slot: Some(slot),
        })
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.state().pending.len()
    }

    /// Sends what the socket takes now. MSG_NOSIGNAL: a vanished client is an error, not SIGPIPE.
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.socket.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::send(&self.socket, bytes, rustix::net::SendFlags::NOSIGNAL)
                .map_err(io::Error::from)
        })
    }

    /// Sends `bytes` or queues what the socket does not take at once. Fails once the
    /// connection is broken, or when the queue would pass [`MAX_QUEUED_BYTES`] (the connection
    /// is then shut down).
    pub fn push(self: &Arc<Self>, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        if state.broken {
            return Err(broken_pipe());
        }
        let mut rest = bytes;
        while state.pending.is_empty() && !rest.is_empty() {
            match self.send_now(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(&mut state);
                    return Err(e);
                }
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        let queued = state.pending.len() + rest.len();
        if queued > MAX_QUEUED_BYTES {
            self.fail(&mut state);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the client is not reading its replies",
            ));
        }
        if let Err(refusal) = state.charge.set(queued) {
            self.fail(&mut state);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                refusal.to_string(),
            ));
        }
        state.pending.extend(rest);
        if !state.flushing {
            state.flushing = true;
            tokio::spawn(Arc::clone(self).flush());
        }
        Ok(())
    }

    /// Pushes `message` in place of the next message zlink writes on this connection, which
    /// is then dropped: berth serializes replies itself (in linear time) and zlink's server
    /// loop still writes one of its own for every call.
    pub fn push_instead_of_next_write(self: &Arc<Self>, message: &[u8]) -> io::Result<()> {
        self.state().replaces_next_write = true;
        self.push(message)
    }

    /// Marks the connection broken, drops what was queued and wakes everyone waiting. Shutting
    /// the socket down also ends the client's reads.
    fn fail(&self, state: &mut QueueState) {
        state.broken = true;
        state.pending.clear();
        state.recharge();
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Both);
        state.wake_all();
    }

    /// Sends the queue as the socket takes it, until it is empty or the connection fails, or
    /// until [`ORPHAN_GRACE`] has passed since our side of the connection was dropped.
    async fn flush(self: Arc<Self>) {
        let tick = self.orphan_grace.min(Duration::from_secs(1));
        let mut orphaned_since: Option<Instant> = None;
        loop {
            let ready = match tokio::time::timeout(tick, self.socket.writable()).await {
                Ok(ready) => ready.is_ok(),
                Err(_waiting) => {
                    // Only this task still holds the queue: the connection's halves are gone.
                    if Arc::strong_count(&self) > 1 {
                        continue;
                    }
                    let since = *orphaned_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < self.orphan_grace {
                        continue;
                    }
                    false
                }
            };
            if !ready {
                let mut state = self.state();
                state.flushing = false;
                self.fail(&mut state);
                return;
            }
            let mut state = self.state();
            loop {
                let (front, _) = state.pending.as_slices();
                if front.is_empty() {
                    break;
                }
                match self.send_now(front) {
                    Ok(n) => {
                        state.pending.drain(..n);
                        state.recharge();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        state.flushing = false;
                        self.fail(&mut state);
                        return;
                    }
                }
            }
            if state.pending.len() <= LOW_WATER_BYTES
                && let Some(waker) = state.room_waiter.take()
            {
                waker.wake();
            }
            if state.pending.is_empty()
                && let Some(waker) = state.empty_waiter.take()
            {
                waker.wake();
            }
            if state.pending.is_empty() {
                state.flushing = false;
                return;
            }
        }
    }

    /// Ready when the connection can take another reply of a stream: its queue is below
    /// [`HIGH_WATER_BYTES`], or it is broken (the next write then reports the error).
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if state.broken || state.pending.len() < HIGH_WATER_BYTES {
            return Poll::Ready(());
        }
        state.room_waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready once nothing is queued (or the connection is broken).
    fn poll_empty(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if state.broken || state.pending.is_empty() {
            return Poll::Ready(());
        }
        state.empty_waiter = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The write half of a server connection: queues instead of waiting (see the module docs).
#[derive(Debug)]
pub struct QueuedWriteHalf {
    queue: Arc<WriteQueue>,
}

impl QueuedWriteHalf {
    pub fn new(queue: Arc<WriteQueue>) -> Self {
        QueuedWriteHalf { queue }
    }

    /// The connection's queue, for reply streams to wait on.
    pub fn queue(&self) -> Arc<WriteQueue> {
        Arc::clone(&self.queue)
    }
}

impl WriteHalf for QueuedWriteHalf {
    async fn write(
        &mut self,
        buf: &[u8],
        fds: &[impl AsFd],
        creds: Option<&zlink::connection::PassedCredentials>,
    ) -> zlink::Result<()> {
        if fds.is_empty() && creds.is_none() {
            let mut state = self.queue.state();
            if state.replaces_next_write {
                state.replaces_next_write = false;
                return Ok(());
            }
            drop(state);
            return Ok(self.queue.push(buf)?);
        }
        // Rare (berth's replies carry no descriptors today): keep the order, then send directly.
        std::future::poll_fn(|cx| self.queue.poll_empty(cx)).await;
        if self.queue.state().broken {
            return Err(broken_pipe().into());
        }
        // Taken out for the write (it needs `&mut`); this half is its only user.
        let taken = self
            .queue
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut direct) = taken else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this connection cannot pass descriptors",
            )
            .into());
        };
        let written = direct.write(buf, fds, creds).await;
        *self.queue.direct.lock().unwrap_or_else(|p| p.into_inner()) = Some(direct);
        written
    }
}

impl AsFd for QueuedWriteHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.socket.as_fd()
    }
}

impl UnixSocket for QueuedWriteHalf {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A queue on one end of a socket pair, and the other end as a blocking std socket.
    fn pair() -> (Arc<WriteQueue>, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ours = tokio::net::UnixStream::from_std(ours).unwrap();
        (WriteQueue::new(ours), theirs)
    }

    #[test]
    fn a_push_to_a_client_that_does_not_read_returns_at_once() {
        runtime().block_on(async {
            let (queue, _client) = pair();
            let reply = vec![b'x'; 4 * 1024 * 1024];

            // push is synchronous on a non-blocking socket: it returns with the rest queued.
            let pushed = queue.push(&reply);

            assert!(pushed.is_ok());
            assert!(queue.queued() > 0, "the socket took 4 MiB at once");
        });
    }

    #[test]
    fn queued_bytes_reach_the_client_in_order() {
        runtime().block_on(async {
            let (queue, mut client) = pair();
            let first = vec![b'a'; 1024 * 1024];
            let second = vec![b'b'; 1024 * 1024];
            queue.push(&first).unwrap();
            queue.push(&second).unwrap();

            let reader = tokio::task::spawn_blocking(move || {
                let mut got = vec![0u8; 2 * 1024 * 1024];
                client.read_exact(&mut got).unwrap();
                got
            });
            let got = tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .unwrap()
                .unwrap();

            assert!(got[..first.len()].iter().all(|b| *b == b'a'));
            assert!(got[first.len()..].iter().all(|b| *b == b'b'));
        });
    }

    #[test]
    fn a_queue_past_its_limit_breaks_the_connection() {
        runtime().block_on(async {
            let (queue, _client) = pair();
            let chunk = vec![b'x'; 1024 * 1024];
            let mut result = Ok(());
            for _ in 0..(MAX_QUEUED_BYTES / chunk.len() + 2) {
                result = queue.push(&chunk);
                if result.is_err() {
                    break;
                }
            }

            assert!(result.is_err());
            assert!(
                queue.push(b"more").is_err(),
                "a broken connection took more"
            );
        });
    }

    #[test]
    fn a_stream_waits_for_room_and_resumes_as_the_client_reads() {
        runtime().block_on(async {
            let (queue, mut client) = pair();
            queue.push(&vec![b'x'; 2 * HIGH_WATER_BYTES]).unwrap();
            let full = std::future::poll_fn(|cx| Poll::Ready(queue.poll_room(cx))).await;

            let reader = tokio::task::spawn_blocking(move || {
                let mut sink = vec![0u8; 2 * HIGH_WATER_BYTES];
                client.read_exact(&mut sink).unwrap();
            });
            let room = tokio::time::timeout(
                Duration::from_secs(10),
                std::future::poll_fn(|cx| queue.poll_room(cx)),
            )
            .await;
            reader.await.unwrap();

            assert!(full.is_pending());
            assert!(room.is_ok(), "room never came back");
        });
    }

    #[test]
    fn a_message_with_a_descriptor_waits_for_the_queue_and_keeps_its_descriptor() {
        use zlink::connection::socket::Socket as _;
        runtime().block_on(async {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let dup = ours.try_clone().unwrap();
            let stream = zlink::tokio::unix::Stream::try_from(ours).unwrap();
            let (_read, direct) = stream.split();
            let counter = crate::listener::ConnectionCounter::new(Default::default());
            let slot = counter.claim(1000).unwrap();
            let queue = WriteQueue::for_connection(
                tokio::net::UnixStream::from_std(dup).unwrap(),
                direct,
                slot,
            );
            let mut half = QueuedWriteHalf::new(queue);
            let bulk = vec![b'q'; 1024 * 1024];
            half.write(&bulk, &[] as &[std::os::fd::BorrowedFd<'_>], None)
                .await
                .unwrap();
            let null = std::fs::File::open("/dev/null").unwrap();

            let reader = tokio::task::spawn_blocking(move || {
                let mut got = vec![0u8; bulk.len()];
                theirs.read_exact(&mut got).unwrap();
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
                let mut tail = [0u8; 16];
                let n = rustix::net::recvmsg(
                    &theirs,
                    &mut [std::io::IoSliceMut::new(&mut tail)],
                    &mut control,
                    rustix::net::RecvFlags::empty(),
                )
                .unwrap()
                .bytes;
                let fds: usize = control
                    .drain()
                    .map(|m| match m {
                        rustix::net::RecvAncillaryMessage::ScmRights(fds) => fds.count(),
                        _ => 0,
                    })
                    .sum();
                (got.iter().all(|b| *b == b'q'), tail[..n].to_vec(), fds)
            });
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                half.write(b"fd", &[null.as_fd()], None),
            )
            .await;
            let (bulk_first, tail, fds) = reader.await.unwrap();

            assert!(sent.unwrap().is_ok());
            assert!(bulk_first, "the queued bytes did not come first");
            assert_eq!((tail.as_slice(), fds), (&b"fd"[..], 1));
        });
    }

    /// A queue on a socket pair whose bytes count against uid 1000's budget in `counter`.
    fn counted_pair(
        counter: &crate::listener::ConnectionCounter,
    ) -> (Arc<WriteQueue>, std::os::unix::net::UnixStream) {
        use zlink::connection::socket::Socket as _;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let dup = tokio::net::UnixStream::from_std(ours.try_clone().unwrap()).unwrap();
        let (_read, direct) = zlink::tokio::unix::Stream::try_from(ours).unwrap().split();
        let queue = WriteQueue::for_connection(dup, direct, counter.claim(1000).unwrap());
        (queue, theirs)
    }

    fn budget_counter(bytes_per_uid: usize) -> crate::listener::ConnectionCounter {
        crate::listener::ConnectionCounter::new(crate::listener::ConnectionLimits {
            bytes_per_uid,
            ..Default::default()
        })
    }

    #[test]
    fn queued_bytes_of_one_uid_are_bounded_together() {
        runtime().block_on(async {
            let counter = budget_counter(3 * 1024 * 1024);
            let (first, _first_client) = counted_pair(&counter);
            let (second, _second_client) = counted_pair(&counter);
            let reply = vec![b'r'; 2 * 1024 * 1024];

            let kept = first.push(&reply);
            let over = second.push(&reply);

            assert!(kept.is_ok());
            assert!(over.is_err(), "the uid held more than its budget");
            assert!(counter.held(1000) <= 3 * 1024 * 1024);
        });
    }

    #[test]
    fn sent_bytes_leave_the_budget() {
        runtime().block_on(async {
            let counter = budget_counter(8 * 1024 * 1024);
            let (queue, mut client) = counted_pair(&counter);
            queue.push(&vec![b's'; 2 * 1024 * 1024]).unwrap();
            let while_queued = counter.held(1000);

            let reader = tokio::task::spawn_blocking(move || {
                let mut sink = vec![0u8; 2 * 1024 * 1024];
                client.read_exact(&mut sink).unwrap();
                client
            });
            let _client = tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .unwrap()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while queue.queued() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            assert!(while_queued > 0);
            assert_eq!(counter.held(1000), 0);
        });
    }

    #[test]
    fn an_orphaned_queue_gives_up_on_a_client_that_never_reads() {
        runtime().block_on(async {
            let (ours, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let ours = tokio::net::UnixStream::from_std(ours).unwrap();
            let queue = WriteQueue::with_orphan_grace(ours, Duration::from_millis(200));
            queue.push(&vec![b'z'; 4 * 1024 * 1024]).unwrap();

            drop(queue);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let reader = tokio::task::spawn_blocking(move || {
                client
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut sink = Vec::new();
                client.read_to_end(&mut sink).map(|_| sink.len())
            });
            let read = reader.await.unwrap();

            let got = read.expect("the socket was not shut down");
            assert!(got < 4 * 1024 * 1024, "all of it arrived: {got}");
        });
    }

    #[test]
    fn a_connection_keeps_its_slot_while_it_still_owes_bytes() {
        use zlink::connection::socket::Socket as _;
        runtime().block_on(async {
            let (ours, client) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let dup = tokio::net::UnixStream::from_std(ours.try_clone().unwrap()).unwrap();
            let (_read, direct) = zlink::tokio::unix::Stream::try_from(ours).unwrap().split();
            let counter = crate::listener::ConnectionCounter::new(Default::default());
            let queue = WriteQueue::for_connection(dup, direct, counter.claim(1000).unwrap());
            queue.push(&vec![b'o'; 2 * 1024 * 1024]).unwrap();

            drop(queue);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let while_owed = counter.open(1000);
            drop(client);
            let deadline = Instant::now() + Duration::from_secs(10);
            while counter.open(1000) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            assert_eq!(while_owed, 1, "the slot went before the bytes did");
            assert_eq!(counter.open(1000), 0, "the slot outlived the client");
        });
    }
}
