//! What berthd takes from the service manager that runs it (systemd's protocols, which other
//! inits speak too): the listening socket of socket activation (`LISTEN_FDS`, sd_listen_fds(3))
//! and the readiness notification (`NOTIFY_SOCKET`, sd_notify(3)).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ServiceManagerError {
    #[error("LISTEN_FDS={0}: berthd takes exactly one socket (its API socket)")]
    ListenFdCount(String),
    #[error("the socket passed (fd 3) is not a listening unix stream socket: {0}")]
    NotAUnixListener(String),
}

/// The API socket passed by socket activation, if berthd was started so: `LISTEN_PID` is this
/// process and `LISTEN_FDS` is 1. The variables are removed either way, so nothing berthd
/// starts takes them for its own; the descriptor is made close-on-exec for the same reason.
pub fn activated_listener() -> Result<Option<UnixListener>, ServiceManagerError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // SAFETY: called at start-up, before berthd starts any other thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(fds) = fds.filter(|_| ours) else {
        return Ok(None);
    };
    if fds.trim() != "1" {
        return Err(ServiceManagerError::ListenFdCount(fds));
    }
    // SAFETY: the service manager passed fd 3 to this process (LISTEN_PID is ours) and nothing
    // else in berthd has taken it; it is owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    let not_listener = |why: String| ServiceManagerError::NotAUnixListener(why);
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| not_listener(e.to_string()))?;
    let kind = rustix::net::sockopt::socket_type(&fd).map_err(|e| not_listener(e.to_string()))?;
    let listening =
        rustix::net::sockopt::socket_acceptconn(&fd).map_err(|e| not_listener(e.to_string()))?;
    let local = rustix::net::getsockname(&fd).map_err(|e| not_listener(e.to_string()))?;
    let unix = local.address_family() == rustix::net::AddressFamily::UNIX;
    if kind != rustix::net::SocketType::STREAM || !listening || !unix {
        return Err(not_listener(format!(
            "type {kind:?}, listening {listening}, unix {unix}"
        )));
    }
    Ok(Some(UnixListener::from(fd)))
}

/// The service manager's notification socket (`NOTIFY_SOCKET`), connected while berthd may
/// still be root, since the socket need not be writable by the user berthd drops to.
pub struct Notifier {
    socket: UnixDatagram,
    name: String,
}

impl Notifier {
    /// Connects to the socket the environment names, if any (`@name`: an abstract socket),
    /// and takes the variable out of the environment, so that the helper and the services
    /// never see it. An error names the socket (the service manager then times out on its own).
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Ok(name) = std::env::var("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        // SAFETY: called at start-up, before berthd starts any other thread.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        match Self::connect(&name) {
            Ok(socket) => Ok(Some(Notifier { socket, name })),
            Err(e) => Err(format!("NOTIFY_SOCKET={name}: {e}")),
        }
    }

    fn connect(name: &str) -> std::io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr =
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
                socket.connect_addr(&addr)?;
            }
            None if name.starts_with('/') => socket.connect(name)?,
            None => return Err(std::io::Error::other("neither a path nor @abstract")),
        }
        Ok(socket)
    }

    /// Sends `state` (`READY=1`, `STOPPING=1`); a failure is logged.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send(state.as_bytes()) {
            tracing::warn!(socket = %self.name, state, error = %e, "cannot notify the service manager");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(name: &str) -> Notifier {
        Notifier {
            socket: Notifier::connect(name).unwrap(),
            name: name.to_string(),
        }
    }

    #[test]
    fn a_notification_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();

        notifier(path.to_str().unwrap()).notify("READY=1");

        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_notification_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("berth-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();

        notifier(&format!("@{name}")).notify("STOPPING=1");

        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
