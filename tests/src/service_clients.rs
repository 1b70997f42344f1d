//! Minimal clients of the real services' own protocols, for tests and benchmarks that ask a
//! service started by berth from the host: redis's inline commands and HTTP/1.0 `GET`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// 127.0.0.1:`port`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A connection to 127.0.0.1:`port`, every operation bounded by `timeout`.
pub fn connect(port: u16, timeout: Duration) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&localhost(port), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Sends one redis command in the inline protocol (`SET k v`) and returns the reply's line:
/// `+PONG`, `+OK`, `-ERR ...`, the value of a bulk string, or `$-1` for none.
pub fn redis_command(port: u16, command: &str, timeout: Duration) -> Result<String> {
    let mut s = connect(port, timeout)?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.starts_with('$') && !line.starts_with("$-1") {
        line.clear();
        r.read_line(&mut line)?;
    }
    Ok(line.trim_end().to_owned())
}

/// `GET path` over HTTP/1.0 to 127.0.0.1:`port`: the status line and the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(String, String)> {
    let mut s = connect(port, timeout)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {reply:?}"))?;
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}
