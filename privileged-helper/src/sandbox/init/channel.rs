//! The channel between the supervisor and the sandbox's init: one SOCK_SEQPACKET pair, so every
//! message keeps its boundaries. The supervisor asks (fork a command, signal, find the main
//! process, end); init and the commands it forks report (ready, a command's pid with
//! SCM_CREDENTIALS, exec'd or failed, each child's exit, "nothing left but me").
//!
//! Reports come from the sandbox, where the service runs: the supervisor decodes them as
//! untrusted input (exact sizes, known tags, bounded text).

use berth_protocol::service_program::{Command, ServiceProgram};

use crate::sandbox::Failure;

/// Longest report (a failure's JSON or an error text); longer ones are refused.
pub(crate) const MAX_REPORT: usize = 8 * 1024;

/// Which `Exec*=` list a command comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandList {
    StartPre,
    Start,
    StartPost,
    Reload,
    Stop,
    StopPost,
}

impl CommandList {
    const ALL: [CommandList; 6] = [
        CommandList::StartPre,
        CommandList::Start,
        CommandList::StartPost,
        CommandList::Reload,
        CommandList::Stop,
        CommandList::StopPost,
    ];

    /// The directive's name, for messages.
    pub(crate) fn directive(self) -> &'static str {
        match self {
            CommandList::StartPre => "ExecStartPre=",
            CommandList::Start => "ExecStart=",
            CommandList::StartPost => "ExecStartPost=",
            CommandList::Reload => "ExecReload=",
            CommandList::Stop => "ExecStop=",
            CommandList::StopPost => "ExecStopPost=",
        }
    }

    pub(crate) fn of(self, program: &ServiceProgram) -> &[Command] {
        match self {
            CommandList::StartPre => &program.exec_start_pre,
            CommandList::Start => &program.exec_start,
            CommandList::StartPost => &program.exec_start_post,
            CommandList::Reload => &program.exec_reload,
            CommandList::Stop => &program.exec_stop,
            CommandList::StopPost => &program.exec_stop_post,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<CommandList> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// What the supervisor asks of init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Fork `list[index]` as command `seq` (increasing, from 1); `main` makes it the process
    /// init forwards signals to; `main_ns` is `$MAINPID` (0: none).
    Exec {
        list: CommandList,
        index: u32,
        seq: u32,
        main: bool,
        main_ns: u32,
    },
    /// `kill(ns_pid, signal)` inside the sandbox.
    Signal { ns_pid: u32, signal: i32 },
    /// `kill(-1, signal)`: every process of the sandbox but init.
    SignalAll { signal: i32 },
    /// Forward signals to this process from now on (0: to nobody).
    SetMain { ns_pid: u32 },
    /// Find the main process of a forking service: PIDFile=, else the only process left.
    FindMain,
    /// Exit: the run is over; the kernel ends whatever is left in the pid namespace.
    End,
}

pub(crate) const REQUEST_LEN: usize = 16;

impl Request {
    pub(crate) fn encode(self) -> [u8; REQUEST_LEN] {
        let (op, list, flag, a, b, c): (u8, u8, u8, u32, u32, u32) = match self {
            Request::Exec {
                list,
                index,
                seq,
                main,
                main_ns,
            } => (b'X', list.code(), u8::from(main), index, seq, main_ns),
            Request::Signal { ns_pid, signal } => (b'S', 0, 0, ns_pid, signal as u32, 0),
            Request::SignalAll { signal } => (b'A', 0, 0, 0, signal as u32, 0),
            Request::SetMain { ns_pid } => (b'M', 0, 0, ns_pid, 0, 0),
            Request::FindMain => (b'F', 0, 0, 0, 0, 0),
            Request::End => (b'Q', 0, 0, 0, 0, 0),
        };
        let mut out = [0u8; REQUEST_LEN];
        out[0] = op;
        out[1] = list;
        out[2] = flag;
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&b.to_ne_bytes());
        out[12..16].copy_from_slice(&c.to_ne_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Request> {
        if bytes.len() != REQUEST_LEN {
            return None;
        }
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (a, b, c) = (word(4), word(8), word(12));
        Some(match bytes[0] {
            b'X' => Request::Exec {
                list: CommandList::from_code(bytes[1])?,
                index: a,
                seq: b,
                main: bytes[2] != 0,
                main_ns: c,
            },
            b'S' => Request::Signal {
                ns_pid: a,
                signal: b as i32,
            },
            b'A' => Request::SignalAll { signal: b as i32 },
            b'M' => Request::SetMain { ns_pid: a },
            b'F' => Request::FindMain,
            b'Q' => Request::End,
            _ => return None,
        })
    }
}

/// Report tags (first byte of each message init or a command sends).
pub(crate) const MSG_READY: u8 = b'R';
/// "This is command `seq`, about to exec" (SCM_CREDENTIALS give its host pid).
pub(crate) const MSG_PID: u8 = b'P';
/// A setup failure of init, followed by the JSON of a [`Failure`].
pub(crate) const MSG_FAILURE: u8 = b'E';
const MSG_EXECED: u8 = b'X';
const MSG_EXEC_FAILED: u8 = b'C';
const MSG_EXITED: u8 = b'W';
const MSG_EMPTY: u8 = b'Z';
const MSG_MAIN: u8 = b'F';
const MSG_MAIN_PENDING: u8 = b'f';

/// What init or one of its commands reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// The sandbox is built; init takes requests.
    Ready,
    /// Command `seq` is about to exec; `ns_pid` is its pid in the sandbox.
    Started {
        seq: u32,
        ns_pid: u32,
    },
    Execd {
        seq: u32,
    },
    ExecFailed {
        seq: u32,
        failure: Failure,
    },
    /// A child of init ended (`seq` 0: not a command, e.g. a daemon reparented to init).
    Exited {
        seq: u32,
        ns_pid: u32,
        status: i32,
    },
    /// Init has no child left after command `seq` (the last it started): the sandbox holds
    /// nothing but init.
    Empty {
        seq: u32,
    },
    /// The main process of a forking service (sandbox pid), or why none was found.
    Main(Result<u32, String>),
    /// The PID file is not there yet (a daemon may write it after its parent exited).
    MainPending,
    SetupFailed(Failure),
}

fn with_words(tag: u8, words: &[u32]) -> Vec<u8> {
    let mut out = vec![tag];
    for w in words {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out
}

fn words<const N: usize>(body: &[u8]) -> Option<[u32; N]> {
    if body.len() != N * 4 {
        return None;
    }
    let mut out = [0u32; N];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u32::from_ne_bytes(body[i * 4..i * 4 + 4].try_into().ok()?);
    }
    Some(out)
}

impl Report {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Report::Ready => vec![MSG_READY],
            Report::Started { seq, ns_pid } => with_words(MSG_PID, &[*seq, *ns_pid]),
            Report::Execd { seq } => with_words(MSG_EXECED, &[*seq]),
            Report::ExecFailed { seq, failure } => {
                let mut out = with_words(MSG_EXEC_FAILED, &[*seq]);
                let _ = serde_json::to_writer(&mut out, failure);
                out
            }
            Report::Exited {
                seq,
                ns_pid,
                status,
            } => with_words(MSG_EXITED, &[*seq, *ns_pid, *status as u32]),
            Report::Empty { seq } => with_words(MSG_EMPTY, &[*seq]),
            Report::Main(Ok(pid)) => with_words(MSG_MAIN, &[*pid]),
            Report::Main(Err(why)) => {
                let mut out = with_words(MSG_MAIN, &[0]);
                out.extend_from_slice(why.as_bytes());
                out
            }
            Report::MainPending => vec![MSG_MAIN_PENDING],
            Report::SetupFailed(failure) => {
                let mut out = vec![MSG_FAILURE];
                let _ = serde_json::to_writer(&mut out, failure);
                out
            }
        }
    }

    /// Decodes one message; `None` for anything malformed.
    pub(crate) fn decode(msg: &[u8]) -> Option<Report> {
        let (&tag, body) = msg.split_first()?;
        if msg.len() > MAX_REPORT {
            return None;
        }
        Some(match tag {
            MSG_READY if body.is_empty() => Report::Ready,
            MSG_PID => {
                let [seq, ns_pid] = words(body)?;
                Report::Started { seq, ns_pid }
            }
            MSG_EXECED => {
                let [seq] = words(body)?;
                Report::Execd { seq }
            }
            MSG_EXEC_FAILED => {
                let [seq] = words(body.get(..4)?)?;
                Report::ExecFailed {
                    seq,
                    failure: serde_json::from_slice(&body[4..]).ok()?,
                }
            }
            MSG_EXITED => {
                let [seq, ns_pid, status] = words(body)?;
                Report::Exited {
                    seq,
                    ns_pid,
                    status: status as i32,
                }
            }
            MSG_EMPTY => {
                let [seq] = words(body)?;
                Report::Empty { seq }
            }
            MSG_MAIN => {
                let [pid] = words(body.get(..4)?)?;
                if pid != 0 {
                    Report::Main(Ok(pid))
                } else {
                    let why: String = String::from_utf8_lossy(&body[4..])
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(512)
                        .collect();
                    Report::Main(Err(why))
                }
            }
            MSG_MAIN_PENDING if body.is_empty() => Report::MainPending,
            MSG_FAILURE => Report::SetupFailed(serde_json::from_slice(body).ok()?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Exec {
                list: CommandList::Stop,
                index: 2,
                seq: 7,
                main: true,
                main_ns: 42,
            },
            Request::Signal {
                ns_pid: 5,
                signal: 15,
            },
            Request::SignalAll { signal: 9 },
            Request::SetMain { ns_pid: 3 },
            Request::FindMain,
            Request::End,
        ] {
            assert_eq!(Request::decode(&request.encode()), Some(request));
        }
    }

    #[test]
    fn reports_round_trip() {
        for report in [
            Report::Ready,
            Report::Started { seq: 1, ns_pid: 2 },
            Report::Execd { seq: 1 },
            Report::ExecFailed {
                seq: 3,
                failure: Failure::Exec {
                    path: "/bin/x".into(),
                    errno: 2,
                },
            },
            Report::Exited {
                seq: 0,
                ns_pid: 9,
                status: 3 << 8,
            },
            Report::Empty { seq: 4 },
            Report::Main(Ok(12)),
            Report::Main(Err("no PID file".into())),
            Report::MainPending,
        ] {
            assert_eq!(Report::decode(&report.encode()), Some(report));
        }
    }

    #[test]
    fn malformed_reports_are_refused() {
        assert_eq!(Report::decode(b""), None);
        assert_eq!(Report::decode(b"P\x01\x00"), None);
        assert_eq!(Report::decode(b"?"), None);
        assert_eq!(Report::decode(&[b'W'; MAX_REPORT + 1]), None);
        assert_eq!(
            Request::decode(&[b'X', 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
