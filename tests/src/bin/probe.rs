//! `berth-probe`: runs inside a service sandbox and prints, as one line of JSON on stdout, what
//! the sandbox looks like from inside (identity, capabilities, namespaces, fds, mounts, ...).
//!
//! Usage: `berth-probe [--check-path P]... [--try ATTEMPT]... [--listen-abstract NAME]
//! [--bind-tcp IP:PORT]... [--bind-unix PATH]... [--keyring] [--add-session-key NAME]... [--notify MSG]... [--sleep SECS | --loop |
//! --notify-flood | --watchdog-every MS]` (`--try help` lists the attempts, see `attempts.rs`). `--notify` sends MSG
//! (`\n` standing for a newline) as one datagram to `$NOTIFY_SOCKET` before the report; the
//! outcomes are under `notify`. `--notify-flood` sends `STATUS=flood N` datagrams without end
//! after it; `--watchdog-every MS` sends `WATCHDOG=1` every MS milliseconds. `--log WHAT`
//! logs through the log sockets before the report (outcomes under `log_sockets`):
//! `syslog:PRI:TEXT` with syslog(3), `journal:PRI:TEXT` as a native journal datagram,
//! `journal-malformed` a datagram whose binary field's size is past its end, `journal-memfd:TEXT`
//! an entry in a sealed memfd passed with an empty datagram (as libsystemd sends large ones),
//! `syslog-flood:N` N syslog(3) messages `flood I`.
//!
//! Conventions of the output: every field is always present; a field that could not be read
//! holds a string starting with `error: `. Resource limits are numbers, `null` meaning
//! unlimited. The object carries `"probe": "berth-probe"` so log scanners can recognise it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use berth_testkit::procfs::unescape_mountinfo as unescape;
use rustix::process::{self, Resource};
use serde_json::{Map, Value, json};

// In probe/ so that cargo does not take it for a binary of its own.
#[path = "probe/attempts.rs"]
mod attempts;
#[path = "probe/binds.rs"]
mod binds;

/// Marker value of the `probe` field.
const MARKER: &str = "berth-probe";

/// `/proc/self/status` keys reported under `status`.
const STATUS_KEYS: &[&str] = &[
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
];

/// Namespace kinds reported under `namespaces`.
const NAMESPACES: &[&str] = &["mnt", "pid", "ipc", "uts", "net", "user", "cgroup"];

/// What to do after printing the report.
enum After {
    Exit,
    Sleep(u64),
    Forever,
    NotifyFlood,
    /// `--watchdog-every MS`: send WATCHDOG=1 every MS milliseconds, for ever.
    Watchdog(u64),
}

/// Parsed command line.
struct Args {
    check_paths: Vec<String>,
    // `--try`: attempts reported under `tries`.
    tries: Vec<String>,
    // `--listen-abstract`: abstract unix sockets bound and listened on before the report,
    // kept open while the probe runs.
    listen_abstract: Vec<String>,
    // `--keyring`: report the session keyring (keyctl, which a filter may kill the probe for).
    keyring: bool,
    // `--add-session-key`: `user` keys added to the session keyring before it is listed.
    add_session_keys: Vec<String>,
    // `--notify`: datagrams sent to $NOTIFY_SOCKET before the report.
    notify: Vec<String>,
    // `--bind-tcp`, `--bind-unix`: sockets bound before the report (binds.rs).
    binds: Vec<binds::Bind>,
    // `--log`: messages sent to the log sockets before the report.
    log: Vec<String>,
    after: After,
}

const USAGE: &str = "usage: berth-probe [--check-path P]... [--try ATTEMPT]... \
                     [--listen-abstract NAME]... [--bind-tcp IP:PORT]... [--bind-unix PATH]... [--keyring] [--add-session-key NAME]... [--notify MSG]... [--log WHAT]... \
                     [--sleep SECS | --loop | --notify-flood | --watchdog-every MS]";

/// Parses the command line; unknown arguments are an error (exit status 2).
fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        check_paths: Vec::new(),
        tries: Vec::new(),
        listen_abstract: Vec::new(),
        keyring: false,
        add_session_keys: Vec::new(),
        notify: Vec::new(),
        binds: Vec::new(),
        log: Vec::new(),
        after: After::Exit,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        match arg.as_str() {
            "--check-path" => {
                let p = it.next().ok_or("--check-path needs a path")?;
                args.check_paths.push(p.to_string_lossy().into_owned());
            }
            "--try" => {
                let a = it
                    .next()
                    .ok_or("--try needs an attempt (--try help lists them)")?;
                let a = a.to_string_lossy().into_owned();
                if a == "help" {
                    let list: Vec<String> = attempts::ATTEMPTS
                        .iter()
                        .map(|(name, what)| format!("  {name:24} {what}"))
                        .collect();
                    return Err(format!("attempts:\n{}", list.join("\n")));
                }
                args.tries.push(a);
            }
            "--keyring" => args.keyring = true,
            "--add-session-key" => {
                let n = it.next().ok_or("--add-session-key needs a name")?;
                args.add_session_keys.push(n.to_string_lossy().into_owned());
            }
            "--listen-abstract" => {
                let n = it.next().ok_or("--listen-abstract needs a name")?;
                args.listen_abstract.push(n.to_string_lossy().into_owned());
            }
            "--sleep" => {
                let n = it.next().ok_or("--sleep needs a number of seconds")?;
                let n = n
                    .to_string_lossy()
                    .parse::<u64>()
                    .map_err(|e| format!("--sleep: {e}"))?;
                args.after = After::Sleep(n);
            }
            "--loop" => args.after = After::Forever,
            "--notify" => {
                let m = it.next().ok_or("--notify needs a message")?;
                args.notify.push(m.to_string_lossy().replace("\\n", "\n"));
            }
            "--notify-flood" => args.after = After::NotifyFlood,
            "--bind-tcp" => {
                let a = it.next().ok_or("--bind-tcp needs IP:PORT")?;
                args.binds.push(binds::tcp(&a.to_string_lossy())?);
            }
            "--bind-unix" => {
                let p = it.next().ok_or("--bind-unix needs a path")?;
                args.binds
                    .push(binds::Bind::Unix(p.to_string_lossy().into_owned()));
            }
            "--log" => {
                let m = it.next().ok_or("--log needs what to log")?;
                args.log.push(m.to_string_lossy().into_owned());
            }
            "--watchdog-every" => {
                let ms = it.next().ok_or("--watchdog-every needs milliseconds")?;
                let ms = ms
                    .to_string_lossy()
                    .parse::<u64>()
                    .map_err(|e| format!("--watchdog-every: {e}"))?;
                args.after = After::Watchdog(ms);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-probe: {e}");
            std::process::exit(2);
        }
    };
    let listening = listen(&args.listen_abstract);
    let notified = notify::send_all(&args.notify);
    let (_bound, bound_report) = binds::bind_all(&args.binds);
    let logged = log_sockets::send_all(&args.log);
    let mut report = probe(&args);
    report["listening"] = listening.1;
    report["notify"] = notified;
    report["binds"] = bound_report;
    report["log_sockets"] = logged;
    // Kept open until the probe exits.
    let _listeners = listening.0;
    let mut out = std::io::stdout().lock();
    // A closed stdout is not worth a panic: the report is simply lost.
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
    drop(out);
    match args.after {
        After::Exit => {}
        After::Sleep(n) => std::thread::sleep(Duration::from_secs(n)),
        After::Forever => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        After::NotifyFlood => notify::flood(),
        After::Watchdog(ms) => notify::keep_alive(ms),
    }
}

/// Formats an error as a JSON string value.
fn err(e: impl Display) -> Value {
    Value::String(format!("error: {e}"))
}

/// Turns a `Result` into a JSON value, errors becoming `"error: ..."` strings.
fn val<T: Into<Value>, E: Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => v.into(),
        Err(e) => err(e),
    }
}

/// Builds the whole report.
fn probe(args: &Args) -> Value {
    // fds first, before anything else opens files.
    let fds = open_fds();
    let mut m = Map::new();
    m.insert("probe".into(), MARKER.into());
    m.insert(
        "pid".into(),
        process::getpid().as_raw_nonzero().get().into(),
    );
    m.insert(
        "ppid".into(),
        process::getppid()
            .map_or(0, |p| p.as_raw_nonzero().get())
            .into(),
    );
    m.insert("uid".into(), process::getuid().as_raw().into());
    m.insert("gid".into(), process::getgid().as_raw().into());
    m.insert("euid".into(), process::geteuid().as_raw().into());
    m.insert("egid".into(), process::getegid().as_raw().into());
    m.insert(
        "groups".into(),
        val(process::getgroups().map(|g| g.iter().map(|g| g.as_raw()).collect::<Vec<_>>())),
    );
    m.insert(
        "uid_map".into(),
        val(fs::read_to_string("/proc/self/uid_map")),
    );
    m.insert(
        "gid_map".into(),
        val(fs::read_to_string("/proc/self/gid_map")),
    );
    m.insert("status".into(), val(status()));
    m.insert("namespaces".into(), namespaces());
    m.insert("fds".into(), fds.into());
    let uname = rustix::system::uname();
    m.insert(
        "hostname".into(),
        uname.nodename().to_string_lossy().into_owned().into(),
    );
    m.insert(
        "cwd".into(),
        val(std::env::current_dir().map(|p| p.to_string_lossy().into_owned())),
    );
    m.insert("environment".into(), environment());
    m.insert("mounts".into(), val(mounts()));
    m.insert("pid1".into(), pid1());
    m.insert("ctty".into(), ctty().into());
    // libc, not rustix: both are 0 when the session/group leader is outside our pid
    // namespace, which rustix's `Pid` cannot represent.
    // SAFETY: getsid(0) only queries the calling process.
    let sid = unsafe { libc::getsid(0) };
    m.insert(
        "sid".into(),
        if sid < 0 {
            err(std::io::Error::last_os_error())
        } else {
            sid.into()
        },
    );
    // SAFETY: getpgrp only queries the calling process and cannot fail.
    m.insert("pgid".into(), unsafe { libc::getpgrp() }.into());
    m.insert(
        "root_writable".into(),
        can_create("/.probe-write-test").into(),
    );
    m.insert("tmp_entries".into(), val(dir_entries("/tmp")));
    let tmp_test = format!("/tmp/.probe-write-test-{}", std::process::id());
    m.insert("tmp_writable".into(), can_create(&tmp_test).into());
    m.insert("dev_entries".into(), val(dir_entries("/dev")));
    let visible: Map<String, Value> = args
        .check_paths
        .iter()
        .map(|p| (p.clone(), fs::symlink_metadata(p).is_ok().into()))
        .collect();
    m.insert("visible".into(), visible.into());
    m.insert("rlimits".into(), rlimits());
    m.insert(
        "cgroup".into(),
        val(fs::read_to_string("/proc/self/cgroup").map(|s| s.trim_end().to_owned())),
    );
    m.insert("umask".into(), umask().into());
    m.insert("interfaces".into(), val(interfaces()));
    m.insert("loopback".into(), loopback());
    // Only when asked: a syscall filter may kill the probe for keyctl.
    let asked = args.keyring || !args.add_session_keys.is_empty();
    m.insert(
        "keyring".into(),
        if asked {
            keyring(&args.add_session_keys)
        } else {
            Value::Null
        },
    );
    m.insert(
        "user_databases".into(),
        json!({
            "passwd": val(fs::read_to_string("/etc/passwd")),
            "group": val(fs::read_to_string("/etc/group")),
        }),
    );
    m.insert("tries".into(), attempts::run_all(&args.tries));
    m.insert("listening".into(), Value::Object(Map::new()));
    m.insert("notify".into(), Value::Array(Vec::new()));
    m.insert("log_sockets".into(), Value::Array(Vec::new()));
    Value::Object(m)
}

/// sd_notify from inside: datagrams to `$NOTIFY_SOCKET`, as libsystemd's `sd_notify` sends
/// them (an unbound datagram socket, one `sendto` per message).
mod notify {
    use std::os::unix::net::UnixDatagram;

    use serde_json::Value;

    fn send(socket: &UnixDatagram, message: &str) -> Result<(), String> {
        let path = std::env::var("NOTIFY_SOCKET").map_err(|_| "no NOTIFY_SOCKET".to_string())?;
        socket
            .send_to(message.as_bytes(), &path)
            .map(drop)
            .map_err(|e| format!("{path}: {e}"))
    }

    /// Sends each message; per message `sent` or `error: ...`.
    pub(super) fn send_all(messages: &[String]) -> Value {
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => return Value::Array(vec![super::err(e)]),
        };
        let outcomes = messages.iter().map(|m| match send(&socket, m) {
            Ok(()) => "sent".into(),
            Err(e) => super::err(e),
        });
        Value::Array(outcomes.collect())
    }

    /// Sends `WATCHDOG=1` every `ms` milliseconds, for ever (or until an error).
    pub(super) fn keep_alive(ms: u64) {
        let Ok(socket) = UnixDatagram::unbound() else {
            return;
        };
        while send(&socket, "WATCHDOG=1").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    /// Sends `STATUS=flood N` as fast as the socket takes them, for ever (or until an error).
    pub(super) fn flood() {
        let Ok(socket) = UnixDatagram::unbound() else {
            return;
        };
        for n in 0u64.. {
            if send(&socket, &format!("STATUS=flood {n}")).is_err() {
                return;
            }
        }
    }
}

/// Binds the `--listen-abstract` sockets; returns them and, per name, `ok` or the error.
fn listen(names: &[String]) -> (Vec<std::os::fd::OwnedFd>, Value) {
    let mut fds = Vec::new();
    let mut report = Map::new();
    for name in names {
        let outcome = match attempts::listen_abstract(name) {
            Ok(fd) => {
                fds.push(fd);
                "ok".to_owned()
            }
            Err(e) => e,
        };
        report.insert(name.clone(), outcome.into());
    }
    (fds, Value::Object(report))
}

/// Sorted open fd numbers, without the fd of the directory iteration. Without `/proc`, the
/// fds below the `nofile` limit (at most 65536) are probed one by one.
fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = match fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => {
            let limit = process::getrlimit(Resource::Nofile)
                .current
                .unwrap_or(65536)
                .min(65536);
            (0..i32::try_from(limit).unwrap_or(65536)).collect()
        }
    };
    // The directory is closed now: its fd is the one listed that is no longer valid.
    fds.retain(|&fd| fd_is_open(fd));
    fds.sort_unstable();
    fds
}

/// Whether `fd` is an open file descriptor.
fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the fd's flags; an unused fd number yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Selected `/proc/self/status` lines; a missing key is `null`.
fn status() -> std::io::Result<Value> {
    let text = fs::read_to_string("/proc/self/status")?;
    let mut m = Map::new();
    for key in STATUS_KEYS {
        m.insert((*key).into(), Value::Null);
    }
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':')
            && STATUS_KEYS.contains(&k)
        {
            m.insert(k.into(), v.trim().into());
        }
    }
    Ok(Value::Object(m))
}

/// Link targets of `/proc/self/ns/*`, e.g. `"mnt": "mnt:[4026531841]"`.
fn namespaces() -> Value {
    let m: Map<String, Value> = NAMESPACES
        .iter()
        .map(|ns| {
            let v = fs::read_link(format!("/proc/self/ns/{ns}"))
                .map(|t| t.to_string_lossy().into_owned());
            ((*ns).to_owned(), val(v))
        })
        .collect();
    Value::Object(m)
}

/// The environment as a map (lossily converted to UTF-8).
fn environment() -> Value {
    let m: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    json!(m)
}

/// What the service can read of PID 1 (the sandbox's init): `cmdline` and `environ` exactly
/// (NULs kept, lossy UTF-8), `comm` without its newline.
fn pid1() -> Value {
    let raw = |file: &str| {
        fs::read(format!("/proc/1/{file}")).map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    json!({
        "cmdline": val(raw("cmdline")),
        "environ": val(raw("environ")),
        "comm": val(raw("comm").map(|c| c.trim_end_matches('\n').to_owned())),
    })
}

/// `/proc/self/mountinfo` as objects; unparsable lines become `{"error": line}`.
fn mounts() -> std::io::Result<Vec<Value>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().map(mount_entry).collect())
}

/// One mountinfo line as an object.
fn mount_entry(line: &str) -> Value {
    let Some((left, right)) = line.split_once(" - ") else {
        return json!({ "error": line });
    };
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 3 {
        return json!({ "error": line });
    }
    json!({
        "mount_point": unescape(l[4]),
        "root": unescape(l[3]),
        "fs_type": r[0],
        "source": unescape(r[1]),
        "options": l[5],
        "super_options": r[2],
    })
}

/// Whether `/dev/tty` (the controlling terminal) can be opened.
fn ctty() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
        .is_ok()
}

/// Whether a new file can be created at `path`; removes it again.
fn can_create(path: &str) -> bool {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => {
            let _ = fs::remove_file(path);
            true
        }
        Err(_) => false,
    }
}

/// Sorted names in a directory.
fn dir_entries(dir: impl AsRef<Path>) -> std::io::Result<Vec<String>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Every resource limit, soft and hard (`null` = unlimited), by systemd's `Limit*` name in
/// lower case (`nofile`, `nproc`, `core`, ...).
fn rlimits() -> Value {
    let all = [
        ("cpu", Resource::Cpu),
        ("fsize", Resource::Fsize),
        ("data", Resource::Data),
        ("stack", Resource::Stack),
        ("core", Resource::Core),
        ("rss", Resource::Rss),
        ("nproc", Resource::Nproc),
        ("nofile", Resource::Nofile),
        ("memlock", Resource::Memlock),
        ("as", Resource::As),
        ("locks", Resource::Locks),
        ("sigpending", Resource::Sigpending),
        ("msgqueue", Resource::Msgqueue),
        ("nice", Resource::Nice),
        ("rtprio", Resource::Rtprio),
        ("rttime", Resource::Rttime),
    ];
    let m: Map<String, Value> = all
        .into_iter()
        .map(|(name, r)| {
            let l = process::getrlimit(r);
            (
                name.to_owned(),
                json!({ "soft": l.current, "hard": l.maximum }),
            )
        })
        .collect();
    Value::Object(m)
}

/// The process umask as a number (e.g. 18 for 0022).
fn umask() -> u32 {
    let old = process::umask(rustix::fs::Mode::empty());
    process::umask(old);
    old.bits()
}

/// Names of the network interfaces of the probe's network namespace.
fn interfaces() -> std::io::Result<Vec<String>> {
    let text = fs::read_to_string("/proc/self/net/dev")?;
    let mut names: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Whether TCP over `lo` works: a listener on 127.0.0.1 and a connection to it.
fn loopback() -> Value {
    let result = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| {
        let addr = listener.local_addr()?;
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| "ok")
    });
    val(result)
}

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_READ: libc::c_long = 11;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

/// `keyctl(op, a, b, c)`, as a result.
fn keyctl(
    op: libc::c_long,
    a: libc::c_long,
    b: libc::c_long,
    c: libc::c_long,
) -> std::io::Result<i64> {
    // SAFETY: the operations used here take integers, or a buffer pointer and its length.
    let ret = unsafe { libc::syscall(libc::SYS_keyctl, op, a, b, c, 0) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Adds a `user` key `name` to the session keyring.
fn add_session_key(name: &str) -> std::io::Result<i64> {
    let desc = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let payload = b"berth-probe";
    // SAFETY: type and description are NUL-terminated; the payload pointer and length match.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The session keyring's serial (not creating one) and the descriptions of the keys in it,
/// after adding `add` to it.
fn keyring(add: &[String]) -> Value {
    // Looked up first, without creating one: a process without a session keyring then gets
    // its uid's user-session keyring, shared by every process of the uid, as a program
    // using `@s` would.
    let session = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0);
    let added: Map<String, Value> = add
        .iter()
        .map(|name| (name.clone(), val(add_session_key(name).map(|_| "ok"))))
        .collect();
    let keys = session.as_ref().map_err(|e| e.to_string()).and_then(|_| {
        let mut serials = [0i32; 64];
        let len = keyctl(
            KEYCTL_READ,
            KEY_SPEC_SESSION_KEYRING,
            serials.as_mut_ptr() as libc::c_long,
            std::mem::size_of_val(&serials) as libc::c_long,
        )
        .map_err(|e| e.to_string())?;
        let count = (len as usize / 4).min(serials.len());
        Ok(serials[..count]
            .iter()
            .map(|serial| {
                let mut buf = [0u8; 256];
                let described = keyctl(
                    KEYCTL_DESCRIBE,
                    libc::c_long::from(*serial),
                    buf.as_mut_ptr() as libc::c_long,
                    buf.len() as libc::c_long,
                );
                let text = described.map(|n| {
                    let n = (n as usize).min(buf.len());
                    let text = String::from_utf8_lossy(&buf[..n]);
                    // type;uid;gid;perm;description
                    text.trim_end_matches('\0')
                        .rsplit(';')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                });
                val(text)
            })
            .collect::<Vec<Value>>())
    });
    json!({
        "session": val(session),
        "keys": match keys { Ok(k) => Value::Array(k), Err(e) => err(e) },
        "added": added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_line() {
        let v = mount_entry(
            "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        );
        assert_eq!(v["mount_point"], "/mnt x");
        assert_eq!(v["fs_type"], "ext3");
        assert_eq!(v["options"], "rw,noatime");
        assert_eq!(v["super_options"], "rw,errors=continue");
        assert!(mount_entry("garbage").get("error").is_some());
    }

    #[test]
    fn report_has_all_fields() {
        let v = probe(&Args {
            check_paths: vec!["/".into(), "/nonexistent-probe-path".into()],
            tries: vec!["socket-unix".into()],
            listen_abstract: Vec::new(),
            keyring: false,
            add_session_keys: Vec::new(),
            notify: Vec::new(),
            binds: Vec::new(),
            log: Vec::new(),
            after: After::Exit,
        });
        for k in [
            "pid",
            "ppid",
            "uid",
            "gid",
            "euid",
            "egid",
            "groups",
            "uid_map",
            "gid_map",
            "status",
            "namespaces",
            "fds",
            "hostname",
            "cwd",
            "environment",
            "mounts",
            "pid1",
            "ctty",
            "sid",
            "pgid",
            "root_writable",
            "tmp_writable",
            "tmp_entries",
            "dev_entries",
            "visible",
            "rlimits",
            "cgroup",
            "umask",
            "loopback",
            "keyring",
            "user_databases",
            "tries",
            "listening",
            "notify",
            "log_sockets",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["visible"]["/"], true);
        assert_eq!(v["visible"]["/nonexistent-probe-path"], false);
        assert_eq!(v["tries"]["socket-unix"], "ok");
        assert!(v["fds"].as_array().is_some_and(|a| !a.is_empty()));
    }
}

/// Logging as daemons do: syslog(3) to `/dev/log`, and libsystemd's native datagrams to
/// `/run/systemd/journal/socket`.
mod log_sockets {
    use std::ffi::CString;
    use std::os::unix::net::UnixDatagram;

    use serde_json::Value;

    const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

    /// The binary-safe field form, as sd_journal_send uses for values with newlines.
    fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }

    fn journal(datagram: &[u8]) -> Result<(), String> {
        let socket = UnixDatagram::unbound().map_err(|e| e.to_string())?;
        socket
            .send_to(datagram, JOURNAL_SOCKET)
            .map(drop)
            .map_err(|e| format!("{JOURNAL_SOCKET}: {e}"))
    }

    fn syslog(priority: i32, text: &str) -> Result<(), String> {
        let text = CString::new(text).map_err(|e| e.to_string())?;
        // SAFETY: the identifier is static, the format takes exactly the one string given.
        unsafe {
            libc::openlog(c"berth-probe".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
            libc::syslog(priority, c"%s".as_ptr(), text.as_ptr());
        }
        Ok(())
    }

    fn send(what: &str) -> Result<(), String> {
        let mut parts = what.splitn(3, ':');
        let kind = parts.next().unwrap_or_default();
        let number = |p: Option<&str>| {
            p.and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| format!("{what}: a number is missing"))
        };
        match kind {
            "syslog" => {
                let priority = number(parts.next())?;
                syslog(priority, parts.next().unwrap_or_default())
            }
            "journal" => {
                let priority = number(parts.next())?;
                let mut datagram =
                    format!("PRIORITY={priority}\nSYSLOG_IDENTIFIER=berth-probe\n").into_bytes();
                field(
                    &mut datagram,
                    "MESSAGE",
                    parts.next().unwrap_or_default().as_bytes(),
                );
                journal(&datagram)
            }
            "journal-malformed" => {
                let mut datagram = b"MESSAGE\n".to_vec();
                datagram.extend_from_slice(&1000u64.to_le_bytes());
                datagram.extend_from_slice(b"short\n");
                journal(&datagram)
            }
            "journal-memfd" => memfd_entry(what.split_once(':').map_or("", |(_, t)| t)),
            "syslog-flood" => {
                for i in 0..number(parts.next())? {
                    syslog(libc::LOG_INFO, &format!("flood {i}"))?;
                }
                Ok(())
            }
            _ => Err(format!("{what}: unknown")),
        }
    }

    /// `MESSAGE=text` in a sealed memfd, passed alone (SCM_RIGHTS) in an empty datagram.
    fn memfd_entry(text: &str) -> Result<(), String> {
        use rustix::fs::{MemfdFlags, SealFlags};
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix};
        let memfd = rustix::fs::memfd_create("journal-entry", MemfdFlags::ALLOW_SEALING)
            .map_err(|e| e.to_string())?;
        rustix::io::write(&memfd, format!("MESSAGE={text}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        rustix::fs::fcntl_add_seals(
            &memfd,
            SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
        )
        .map_err(|e| e.to_string())?;
        let socket = UnixDatagram::unbound().map_err(|e| e.to_string())?;
        let address = SocketAddrUnix::new(JOURNAL_SOCKET).map_err(|e| e.to_string())?;
        let fds = [std::os::fd::AsFd::as_fd(&memfd)];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg_addr(&socket, &address, &[], &mut control, SendFlags::empty())
            .map(drop)
            .map_err(|e| format!("{JOURNAL_SOCKET}: {e}"))
    }

    /// Sends each; per entry `sent` or `error: ...`.
    pub(super) fn send_all(what: &[String]) -> Value {
        let outcomes = what.iter().map(|w| match send(w) {
            Ok(()) => "sent".into(),
            Err(e) => super::err(e),
        });
        Value::Array(outcomes.collect())
    }
}
