//! `--bind-tcp IP:PORT` and `--bind-unix PATH`: sockets bound and listened on before the
//! report (privileged-port grants, ISSUE 9 item 3). Each outcome is under `binds`, keyed
//! `tcp IP:PORT` or `unix PATH`: `"ok"` or the error. Every connection to a bound TCP socket
//! gets the probe's answer, `berth-probe pid PID uid UID\n` (its ids inside the sandbox),
//! from a thread, for as long as the probe runs.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;

use serde_json::{Map, Value};

/// What to bind.
pub enum Bind {
    Tcp(SocketAddr),
    Unix(String),
}

impl Bind {
    fn key(&self) -> String {
        match self {
            Bind::Tcp(addr) => format!("tcp {addr}"),
            Bind::Unix(path) => format!("unix {path}"),
        }
    }
}

/// Parses `--bind-tcp`'s argument.
pub fn tcp(arg: &str) -> Result<Bind, String> {
    arg.parse()
        .map(Bind::Tcp)
        .map_err(|e| format!("--bind-tcp {arg}: {e}"))
}

/// Binds each, serves the TCP ones; the report and what must stay open.
pub fn bind_all(binds: &[Bind]) -> (Vec<UnixListener>, Value) {
    let mut report = Map::new();
    let mut unix = Vec::new();
    for bind in binds {
        let outcome = match bind {
            Bind::Tcp(addr) => TcpListener::bind(addr).map(|listener| {
                std::thread::spawn(move || answer(listener));
            }),
            Bind::Unix(path) => UnixListener::bind(path).map(|l| unix.push(l)),
        };
        let value = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        report.insert(bind.key(), value.into());
    }
    (unix, Value::Object(report))
}

fn answer(listener: TcpListener) {
    let line = format!(
        "berth-probe pid {} uid {}\n",
        std::process::id(),
        rustix::process::getuid().as_raw()
    );
    for stream in listener.incoming().flatten() {
        let _ = (&stream).write_all(line.as_bytes());
    }
}
