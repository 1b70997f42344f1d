//! Raw varlink exchanges on a socket, made as any user: the bytes of a request, its replies as
//! JSON. The connection is made from a thread that takes the caller's credentials for itself
//! alone (the kernel keeps credentials per thread; the raw syscalls change only the caller's),
//! so the server sees that caller in SO_PEERCRED and SO_PEERGROUPS.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::{Gid, Uid};

/// Who makes a call: uid, primary gid and exactly these supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Caller {
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
}

/// Sends `request` (a NUL is appended) on a new connection to `socket` made as `caller`, and
/// returns every reply until one that does not continue (or an error reply), or the first
/// `max_replies` (a follower's stream never ends); fails when no reply comes within `timeout`.
pub fn call_as(
    socket: &Path,
    caller: &Caller,
    request: &[u8],
    max_replies: usize,
    timeout: Duration,
) -> Result<Vec<serde_json::Value>> {
    let socket = socket.to_owned();
    let caller = caller.clone();
    let request = request.to_vec();
    std::thread::spawn(move || -> Result<Vec<serde_json::Value>> {
        become_caller(&caller)?;
        let mut stream = UnixStream::connect(&socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(&request)?;
        stream.write_all(b"\0")?;
        read_replies(&mut stream, max_replies)
    })
    .join()
    .map_err(|_| anyhow!("the calling thread panicked"))?
}

/// Takes `caller`'s credentials for the current thread only.
fn become_caller(caller: &Caller) -> Result<()> {
    let groups: Vec<Gid> = caller.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    rustix::thread::set_thread_groups(&groups).context("setgroups")?;
    let gid = Gid::from_raw(caller.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).context("setresgid")?;
    let uid = Uid::from_raw(caller.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).context("setresuid")?;
    Ok(())
}

fn read_replies(stream: &mut UnixStream, max: usize) -> Result<Vec<serde_json::Value>> {
    let mut replies = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        while let Some(end) = pending.iter().position(|&b| b == 0) {
            let reply: serde_json::Value = serde_json::from_slice(&pending[..end])
                .with_context(|| "a reply that is not JSON".to_string())?;
            pending.drain(..=end);
            let last = reply.get("error").is_some() || reply["continues"] != true;
            replies.push(reply);
            if last || replies.len() >= max {
                return Ok(replies);
            }
        }
        let n = stream.read(&mut buf).context("reading the reply")?;
        if n == 0 {
            bail!("the connection closed after {} replies", replies.len());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
