//! The log file's writer: a thread of its own behind a bounded queue, so that a slow, stalled or
//! full disk never holds the poll loop, and so never the service writing to its pipes, for
//! long. When the queue is full the loop waits for room only while the writer keeps up (it
//! finished a write in the last [`KEEP_UP`]: a writer that merely waited for a CPU on a busy
//! host); otherwise it drops whole records and counts them, and a record saying how many lines
//! were dropped takes their place in the log as soon as the writer can write it.
//!
//! The thread is started by [`LogWriter::start`] once the supervisor no longer forks (init is
//! forked before it) and after it has given up root (credentials are per thread in the kernel:
//! a thread started earlier would keep root); [`own_pid_namespace_for_children`] must have run
//! before that drop.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_protocol::log_line::{self, Stream};
use rustix::io::Errno;

/// Record bytes the queue holds at most: the bound on what a stalled disk costs in memory.
pub(super) const QUEUE_BYTES: usize = 256 * 1024;
/// The writer thread's stack: it only copies bytes, and its pages count in the supervisor's PSS.
const STACK_BYTES: usize = 64 * 1024;
/// Longest wait for the writer to take a new log file or to write out the queue at the end.
const HANDOVER_WAIT: Duration = Duration::from_millis(500);
/// How recently the writer must have finished a write for a full queue to be waited for
/// rather than dropped: a write to the page cache takes well under a millisecond, and the
/// kernel's dirty-page throttling pauses a writer for up to 200 ms at a time.
pub(super) const KEEP_UP: Duration = Duration::from_millis(100);
/// Pause after a failed write before the writer tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    records: Vec<u8>,
    /// Lines dropped since the last note because the queue was full: they came after what is
    /// queued, so their note ends the batch the writer takes next.
    lost: u64,
    /// Lines lost in writes that failed (a full disk): their note starts the next batch.
    failed: u64,
    /// Every line lost in this run.
    dropped: u64,
    /// A log file to switch to (`ReplaceLog`), taken by the writer before its next write.
    next_log: Option<OwnedFd>,
    /// The writer has written everything queued and waits.
    idle: bool,
    /// The writer's last write ended inside a record: the next write starts a new line first.
    torn: bool,
    /// When the writer last finished a write or found nothing to do.
    progress: Option<Instant>,
}

struct Channel {
    queue: Mutex<Queue>,
    /// Signalled when records or a log file are queued (for the writer) and when the writer
    /// switched files or ran dry (for the loop).
    wake: Condvar,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic on the other side leaves plain bytes and counters: still usable.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(super) struct LogWriter {
    channel: Arc<Channel>,
    /// The log until the thread starts (then it owns it); written directly meanwhile and if
    /// the thread could not be started.
    inline: Option<OwnedFd>,
    started: bool,
}

impl LogWriter {
    pub(super) fn new(log: OwnedFd) -> Self {
        LogWriter {
            channel: Arc::new(Channel {
                queue: Mutex::new(Queue {
                    idle: true,
                    progress: Some(Instant::now()),
                    ..Queue::default()
                }),
                wake: Condvar::new(),
            }),
            inline: Some(log),
            started: false,
        }
    }

    /// Starts the writer thread. If the system refuses a thread, the loop keeps writing itself.
    pub(super) fn start(&mut self) {
        if self.started {
            return;
        }
        let Some(log) = self.inline.take() else {
            return;
        };
        let channel = Arc::clone(&self.channel);
        let (tx, rx) = std::sync::mpsc::sync_channel::<OwnedFd>(1);
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                if let Ok(log) = rx.recv() {
                    write_loop(&channel, log);
                }
            });
        match spawned {
            Ok(_) => {
                // The receiver waits for exactly this one message.
                let _ = tx.send(log);
                self.started = true;
            }
            Err(_) => self.inline = Some(log),
        }
    }

    /// Queues whole `records` (each ending in a newline); when the queue has no room, waits
    /// for it while the writer keeps up (see [`KEEP_UP`]), else drops and counts them. Returns
    /// true when this call dropped lines.
    pub(super) fn push(&self, records: &[u8]) -> bool {
        if let Some(log) = &self.inline {
            let mut q = self.channel.lock();
            return write_inline(log, &mut q, records);
        }
        let mut q = self.channel.lock();
        while !q.records.is_empty() && q.records.len() + records.len() > QUEUE_BYTES {
            let keeps_up_until = q.progress.unwrap_or_else(Instant::now) + KEEP_UP;
            let left = keeps_up_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let lines = count_lines(records);
                q.lost += lines;
                q.dropped += lines;
                return lines > 0;
            }
            q = match self.channel.wake.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        q.records.extend_from_slice(records);
        q.idle = false;
        drop(q);
        self.channel.wake.notify_all();
        false
    }

    /// Has the writer write the note about lines dropped since the last one now (at the end of
    /// the output, when no record may follow).
    pub(super) fn flush_note(&mut self) {
        if let Some(log) = &self.inline {
            let mut q = self.channel.lock();
            write_inline(log, &mut q, &[]);
            return;
        }
        let mut q = self.channel.lock();
        if q.lost > 0 || q.failed > 0 {
            q.idle = false;
            drop(q);
            self.channel.wake.notify_all();
        }
    }

    /// Every line dropped in this run.
    pub(super) fn dropped(&self) -> u64 {
        self.channel.lock().dropped
    }

    /// Counts `lines` dropped before they reached the queue (the log sockets' rate limit,
    /// which writes its own note about them).
    pub(super) fn count_dropped(&self, lines: u64) {
        self.channel.lock().dropped += lines;
    }

    /// Switches to `log`: what is queued now and after goes there. Waits (briefly) until the
    /// writer has taken it, so that berthd, told the switch is done, can move the old file
    /// aside knowing nothing more comes to it; a writer stuck on a stalled disk is not waited
    /// for beyond [`HANDOVER_WAIT`].
    pub(super) fn replace(&mut self, log: OwnedFd) {
        if self.inline.is_some() {
            self.inline = Some(log);
            return;
        }
        let deadline = Instant::now() + HANDOVER_WAIT;
        let mut q = self.channel.lock();
        q.next_log = Some(log);
        self.channel.wake.notify_all();
        while q.next_log.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = match self.channel.wake.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits (briefly) until the writer has written everything queued: at the end of the
    /// output, so the log is complete when the exit is told.
    pub(super) fn drain(&self) {
        let deadline = Instant::now() + HANDOVER_WAIT;
        let mut q = self.channel.lock();
        while !q.idle || q.next_log.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = match self.channel.wake.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Makes this process's future children (and threads) start in its own pid namespace, undoing
/// the `unshare(CLONE_NEWPID)` that placed init in a new one: the kernel refuses a thread while
/// new children would go to another pid namespace. Needs CAP_SYS_ADMIN, so it is called before
/// the supervisor gives up root; without it [`LogWriter::start`] gets no thread and the loop
/// writes the log itself.
pub(super) fn own_pid_namespace_for_children() -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    let own = rustix::fs::open(
        "/proc/self/ns/pid",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::ProcessID))?;
    Ok(())
}

/// The writer thread: takes the whole queue at once (swapping buffers, so no copy and no
/// allocation once both have grown), places the notes about lost lines where the lines were, and
/// writes it out with the lock released.
fn write_loop(channel: &Channel, mut log: OwnedFd) {
    let mut batch = Vec::new();
    loop {
        let mut q = channel.lock();
        while q.records.is_empty() && q.next_log.is_none() && q.lost == 0 && q.failed == 0 {
            if !q.idle {
                // Idle: give back what a burst made both buffers grow to (the supervisor's
                // memory is a budget; see DESIGN.md §9).
                batch = Vec::new();
                q.records = Vec::new();
            }
            q.idle = true;
            q.progress = Some(Instant::now());
            channel.wake.notify_all();
            q = match channel.wake.wait(q) {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        if let Some(next) = q.next_log.take() {
            log = next;
            q.torn = false;
            channel.wake.notify_all();
        }
        if std::mem::take(&mut q.torn) {
            batch.push(b'\n');
        }
        batch.extend_from_slice(&note_for(std::mem::take(&mut q.failed)));
        batch.extend_from_slice(&q.records);
        q.records.clear();
        batch.extend_from_slice(&note_for(std::mem::take(&mut q.lost)));
        drop(q);
        let written = write_all(&log, &batch);
        let mut q = channel.lock();
        q.progress = Some(Instant::now());
        channel.wake.notify_all();
        if let Err(written) = written {
            let lines = count_lines(&batch[written..]);
            q.failed += lines;
            q.dropped += lines;
            q.torn = written > 0 && batch.get(written - 1) != Some(&b'\n');
            drop(q);
            // Not at once again: a full disk stays full for a while.
            std::thread::sleep(RETRY_AFTER_FAILURE);
        }
        batch.clear();
    }
}

/// The loop's own write, before the thread starts or when it could not: the same accounting.
fn write_inline(log: &OwnedFd, q: &mut Queue, records: &[u8]) -> bool {
    let mut bytes = note_for(q.lost + q.failed);
    bytes.extend_from_slice(records);
    if bytes.is_empty() {
        return false;
    }
    let note_len = bytes.len() - records.len();
    match write_all(log, &bytes) {
        Ok(()) => {
            q.lost = 0;
            q.failed = 0;
            false
        }
        Err(written) => {
            if written >= note_len {
                q.lost = 0;
                q.failed = 0;
            }
            let lines = count_lines(&bytes[written.max(note_len)..]);
            q.failed += lines;
            q.dropped += lines;
            lines > 0
        }
    }
}

/// Writes all of `bytes`; on failure (a full disk, an I/O error) how many were written.
fn write_all(log: &OwnedFd, mut bytes: &[u8]) -> Result<(), usize> {
    let total = bytes.len();
    while !bytes.is_empty() {
        match rustix::io::write(log, bytes) {
            Ok(0) => return Err(total - bytes.len()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(_) => return Err(total - bytes.len()),
        }
    }
    Ok(())
}

fn count_lines(records: &[u8]) -> u64 {
    records.iter().filter(|b| **b == b'\n').count() as u64
}

/// The record telling that `lost` lines are missing before it (nothing when none are).
fn note_for(lost: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if lost > 0 {
        let text = format!("berth: {lost} lines dropped: the log could not keep up");
        log_line::encode(
            crate::sandbox::sys::realtime_usec(),
            Stream::Stderr,
            text.as_bytes(),
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(bytes: &[u8]) -> Vec<String> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| log_line::decode(l).map(|r| r.text))
            .collect()
    }

    fn record(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        log_line::encode(1, Stream::Stdout, text.as_bytes(), &mut out);
        out
    }

    /// A writer whose thread never runs: pushes only fill the queue.
    fn stalled() -> LogWriter {
        let (_, write) = rustix::pipe::pipe().unwrap();
        let mut writer = LogWriter::new(write);
        writer.inline = None;
        writer.started = true;
        writer
    }

    #[test]
    fn a_full_queue_drops_whole_records_and_counts_their_lines() {
        let writer = stalled();
        let line = record(&"x".repeat(1000));
        let fits = QUEUE_BYTES / line.len();

        for _ in 0..fits + 10 {
            writer.push(&line);
        }

        assert_eq!(writer.dropped(), 10);
        assert!(writer.channel.lock().records.len() <= QUEUE_BYTES);
    }

    #[test]
    fn lines_dropped_behind_a_stalled_writer_are_told_once_it_writes_again() {
        // A pipe nobody reads yet: the writer blocks once it holds 64 KiB, as on a stalled disk.
        let (read, write) = rustix::pipe::pipe().unwrap();
        let mut writer = LogWriter::new(write);
        writer.start();
        let line = record(&"x".repeat(1000));
        let mut pushed = 0u64;
        while writer.dropped() < 5 {
            writer.push(&line);
            pushed += 1;
        }
        let dropped = writer.dropped();
        let note = format!("berth: {dropped} lines dropped: the log could not keep up");

        let mut log = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !texts(&log).contains(&note) {
            assert!(
                Instant::now() < deadline,
                "no note in {:?}",
                texts(&log).last()
            );
            let n = rustix::io::read(&read, &mut buf).unwrap();
            log.extend_from_slice(&buf[..n]);
        }

        let got = texts(&log);
        assert_eq!(got.last(), Some(&note));
        assert_eq!(got.len() as u64 - 1 + dropped, pushed);
    }

    #[test]
    fn a_full_queue_is_waited_for_while_the_writer_keeps_up() {
        // A reader that takes 64 KiB every millisecond: slower than the pushes, never stalled.
        let (read, write) = rustix::pipe::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            while let Ok(n) = rustix::io::read(&read, &mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                std::thread::sleep(Duration::from_millis(1));
            }
            total
        });
        let mut writer = LogWriter::new(write);
        writer.start();
        let line = record(&"x".repeat(1000));

        for _ in 0..4_000 {
            writer.push(&line);
        }
        writer.drain();

        assert_eq!(writer.dropped(), 0);
        drop(writer);
        // The thread holds the pipe's write end: it is not joined, so the reader is not either.
        drop(reader);
    }

    #[test]
    fn a_failed_inline_write_counts_its_lines_and_the_next_write_tells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"").unwrap();
        let read_only: OwnedFd = std::fs::File::open(&path).unwrap().into();
        let mut writer = LogWriter::new(read_only);

        writer.push(&[record("a"), record("b")].concat());
        let append: OwnedFd = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .into();
        writer.replace(append);
        writer.push(&record("c"));

        assert_eq!(writer.dropped(), 2);
        assert_eq!(
            texts(&std::fs::read(&path).unwrap()),
            ["berth: 2 lines dropped: the log could not keep up", "c"]
        );
    }

    #[test]
    fn the_thread_writes_what_is_queued_and_drain_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log: OwnedFd = std::fs::File::create(&path).unwrap().into();
        let mut writer = LogWriter::new(log);
        writer.start();

        writer.push(&record("one"));
        writer.push(&record("two"));
        writer.drain();

        assert_eq!(texts(&std::fs::read(&path).unwrap()), ["one", "two"]);
        assert_eq!(writer.dropped(), 0);
    }
}
