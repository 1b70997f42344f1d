//! `--try NAME[:ARG]`: attacks (and harmless controls) the probe attempts from inside the
//! sandbox, in the manner of bubblewrap's `try-syscall.c`. Each attempt runs in a forked child,
//! so one that changes the process (a new namespace, a personality) or that the seccomp filter
//! kills leaves the report intact.
//!
//! Result strings: `ok` or `ok: DETAIL` when the attempt worked, the errno's name (`EPERM`,
//! `ENOSYS`, ...) when its syscall failed, `signal SIGSYS` (or another) when the child was
//! killed, `not done: WHY` when the attempt itself could not be set up, `error: ...` for an
//! unknown name. An attempt is written so that `ok` means the attack worked.
//!
//! Outside a sandbox, run it as an unprivileged user: as root the attempts succeed and some
//! touch the host, if harmlessly (the host name and the clock are set to what they are, a tmpfs
//! is mounted and unmounted again on a fresh directory in /tmp); `shm-leave` and `mq-leave`
//! leave their object behind on purpose.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use serde_json::{Map, Value};

/// What an attempt returns in the child: `Ok(detail)` or `Err(errno)`.
type Outcome = Result<String, i32>;

/// Attempt names with what each does (shown by `--try help`).
pub const ATTEMPTS: &[(&str, &str)] = &[
    ("unshare-user", "unshare(CLONE_NEWUSER)"),
    ("unshare-mnt", "unshare(CLONE_NEWNS)"),
    ("unshare-net", "unshare(CLONE_NEWNET)"),
    ("unshare-ipc", "unshare(CLONE_NEWIPC)"),
    ("unshare-uts", "unshare(CLONE_NEWUTS)"),
    ("unshare-pid", "unshare(CLONE_NEWPID)"),
    ("unshare-cgroup", "unshare(CLONE_NEWCGROUP)"),
    (
        "userns-tmpfs",
        "a new user+mount namespace (root in it), then mount a tmpfs on /tmp",
    ),
    (
        "userns-overlay",
        "a new user+mount namespace (root in it), then an overlayfs in a tmpfs",
    ),
    (
        "userns-netns",
        "a new user namespace (root in it), then a new network one",
    ),
    (
        "userns-raw-socket",
        "a new user+network namespace (root in it), then a raw IPv4 socket",
    ),
    (
        "mount-tmpfs",
        "mount a tmpfs on a new directory in /tmp (no new namespace), unmount it",
    ),
    ("fsopen", "fsopen(\"tmpfs\")"),
    (
        "keyctl",
        "add a key to a new thread keyring (gone with the attempt)",
    ),
    (
        "session-keyring",
        "describe the session keyring (owner, name)",
    ),
    (
        "key-add:DESC=VALUE",
        "add user key DESC to the user keyring, readable by its owner uid without possessing it",
    ),
    (
        "key-read:DESC",
        "find user key DESC in the user keyring, read it",
    ),
    ("io-uring", "io_uring_setup with one entry"),
    (
        "personality-rie",
        "personality(READ_IMPLIES_EXEC), then check it",
    ),
    ("int80", "getpid through the i386 entry (int 0x80)"),
    ("x32", "getpid through the x32 ABI (nr | 0x40000000)"),
    ("clone3", "clone3 with a bad pointer (EFAULT when allowed)"),
    ("socket-unix", "socket(AF_UNIX)"),
    ("socket-inet", "socket(AF_INET, SOCK_STREAM)"),
    ("socket-inet6", "socket(AF_INET6, SOCK_STREAM)"),
    ("socket-netlink", "socket(AF_NETLINK, NETLINK_ROUTE)"),
    ("socket-packet", "socket(AF_PACKET, SOCK_RAW)"),
    ("mmap-wx", "an anonymous mapping writable and executable"),
    (
        "mprotect-exec",
        "an anonymous writable mapping made executable",
    ),
    ("chmod-suid", "a new file in /tmp made set-uid"),
    ("sched-fifo", "sched_setscheduler(SCHED_FIFO)"),
    ("bpf", "load a socket-filter BPF program"),
    ("perf", "perf_event_open of a software counter of itself"),
    ("userfaultfd", "userfaultfd(UFFD_USER_MODE_ONLY)"),
    ("tiocsti", "push a byte into the input of fd 0 (TIOCSTI)"),
    ("sethostname", "sethostname to the current name"),
    (
        "settime",
        "clock_settime(CLOCK_REALTIME) to its current value",
    ),
    ("setuid0", "setuid(0)"),
    (
        "switch-to:ID",
        "as a root master for its worker: chown a new file in /tmp to ID:ID, setgroups([ID]), \
         setgid(ID), setuid(ID), then write the file; ok: the uid it then has",
    ),
    (
        "abstract-connect:NAME",
        "connect to the abstract unix socket @NAME",
    ),
    ("unix-connect:PATH", "connect to the unix socket at PATH"),
    (
        "tcp-connect:IP:PORT",
        "connect over TCP to IPv4 address IP, port PORT",
    ),
    (
        "write:PATH",
        "open the existing file PATH for writing (writes nothing)",
    ),
    ("create:PATH", "create the new file PATH (removed again)"),
    (
        "shm-leave:KEY",
        "create a SysV shared memory segment KEY and leave it",
    ),
    ("shm-find:KEY", "find SysV shared memory segment KEY"),
    (
        "mq-leave:NAME",
        "create POSIX message queue /NAME and leave it",
    ),
    ("mq-find:NAME", "open POSIX message queue /NAME"),
];

/// Runs each attempt and maps its spec (`name` or `name:arg`) to its result string.
pub fn run_all(specs: &[String]) -> Value {
    let m: Map<String, Value> = specs
        .iter()
        .map(|spec| (spec.clone(), Value::String(run_forked(spec))))
        .collect();
    Value::Object(m)
}

/// Runs one attempt in a forked child and returns its result string.
fn run_forked(spec: &str) -> String {
    let (name, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let Some(attempt) = lookup(name) else {
        return format!("error: unknown attempt {name:?} (try --try help)");
    };
    let mut pipe = [0; 2];
    // SAFETY: pipe2 fills the two-element array with two new fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return format!("not done: pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these fds, owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // SAFETY: the probe is single-threaded, so the child may run ordinary code until _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("not done: fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read_end);
        let text = match attempt(arg) {
            Ok(detail) if detail.is_empty() => "ok".to_owned(),
            Ok(detail) => format!("ok: {detail}"),
            Err(errno) => errno_name(errno),
        };
        let mut out = std::fs::File::from(write_end);
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        drop(out);
        // SAFETY: _exit ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);
    let mut text = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: waits for the child forked above, storing its status in a local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        return format!("signal {}", signal_name(libc::WTERMSIG(status)));
    }
    if text.is_empty() {
        return format!("not done: the child exited ({status:#x}) without a result");
    }
    text
}

/// The attempt called `name`.
fn lookup(name: &str) -> Option<fn(&str) -> Outcome> {
    Some(match name {
        "unshare-user" => |_| unshare(libc::CLONE_NEWUSER),
        "unshare-mnt" => |_| unshare(libc::CLONE_NEWNS),
        "unshare-net" => |_| unshare(libc::CLONE_NEWNET),
        "unshare-ipc" => |_| unshare(libc::CLONE_NEWIPC),
        "unshare-uts" => |_| unshare(libc::CLONE_NEWUTS),
        "unshare-pid" => |_| unshare(libc::CLONE_NEWPID),
        "unshare-cgroup" => |_| unshare(libc::CLONE_NEWCGROUP),
        "userns-tmpfs" => |_| {
            enter_user_namespace(libc::CLONE_NEWNS)?;
            mount_tmpfs("/tmp")
        },
        "userns-overlay" => |_| userns_overlay(),
        "userns-netns" => |_| {
            enter_user_namespace(0)?;
            unshare(libc::CLONE_NEWNET)
        },
        "userns-raw-socket" => |_| {
            enter_user_namespace(libc::CLONE_NEWNET)?;
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
        },
        "mount-tmpfs" => |_| mount_and_unmount_tmpfs(),
        "fsopen" => |_| fsopen_tmpfs(),
        "keyctl" => |_| add_key("berth-probe", "x", KEY_SPEC_THREAD_KEYRING).map(|_| String::new()),
        "session-keyring" => |_| describe_key(KEY_SPEC_SESSION_KEYRING),
        "key-add" => key_add,
        "key-read" => key_read,
        "io-uring" => |_| io_uring(),
        "personality-rie" => |_| personality_read_implies_exec(),
        "int80" => |_| int80_getpid(),
        "x32" => |_| {
            // SAFETY: getpid in the x32 numbering takes no arguments.
            check(unsafe { libc::syscall(X32_BIT | libc::SYS_getpid) }).map(|pid| pid.to_string())
        },
        "clone3" => |_| {
            // SAFETY: clone3 reads its argument through the (bad) pointer: the kernel refuses
            // it with EFAULT, no child is made.
            check(unsafe { libc::syscall(libc::SYS_clone3, 1usize, 88usize) })
                .map(|_| "a child was made".to_owned())
        },
        "socket-unix" => |_| socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
        "socket-inet" => |_| socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        "socket-inet6" => |_| socket(libc::AF_INET6, libc::SOCK_STREAM, 0),
        "socket-netlink" => |_| socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        "socket-packet" => |_| socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        "mmap-wx" => |_| mmap_anonymous(libc::PROT_WRITE | libc::PROT_EXEC).map(|_| String::new()),
        "mprotect-exec" => |_| mprotect_exec(),
        "chmod-suid" => |_| chmod_suid(),
        "switch-to" => switch_to,
        "sched-fifo" => |_| {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: sched_setscheduler reads the local `param`.
            check(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) }.into())
                .map(|_| String::new())
        },
        "bpf" => |_| bpf_socket_filter(),
        "perf" => |_| perf_self(),
        "userfaultfd" => |_| {
            // SAFETY: userfaultfd takes only flags and returns a new fd.
            check(unsafe {
                libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY)
            })
            .map(|_| String::new())
        },
        "tiocsti" => |_| {
            let byte = b'x';
            // SAFETY: TIOCSTI reads one byte through the pointer to the local.
            check(unsafe { libc::ioctl(0, libc::TIOCSTI, &byte) }.into()).map(|_| String::new())
        },
        "sethostname" => |_| {
            let name = rustix::system::uname();
            let name = name.nodename().to_bytes();
            // SAFETY: the pointer and length describe the bytes of the current host name.
            check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }.into())
                .map(|_| String::new())
        },
        "settime" => |_| set_time_to_now(),
        "setuid0" => |_| {
            // SAFETY: setuid only changes the (forked) child's credentials.
            check(unsafe { libc::setuid(0) }.into()).map(|_| String::new())
        },
        "abstract-connect" => |name| connect_unix(&abstract_address(name)),
        "unix-connect" => |path| connect_unix(path.as_bytes()),
        "tcp-connect" => |address| {
            let address: std::net::SocketAddr = address.parse().map_err(|_| libc::EINVAL)?;
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(5))
                .map(|_| String::new())
                .map_err(|e| e.raw_os_error().unwrap_or(libc::ETIMEDOUT))
        },
        "read" => |path| {
            use std::os::unix::fs::OpenOptionsExt;
            let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
            // Non-blocking: a file with nothing to read yet (/proc/kmsg as root once the
            // kernel's ring has been read) is readable, not a hang.
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(errno)?;
            let mut text = vec![0u8; 4096];
            let mut len = 0;
            while len < text.len() {
                match file.read(&mut text[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(errno(e)),
                }
            }
            Ok(String::from_utf8_lossy(&text[..len]).into_owned())
        },
        "list" => |path| {
            let mut names = std::fs::read_dir(path)
                .and_then(|entries| {
                    entries
                        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<std::io::Result<Vec<_>>>()
                })
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            names.sort();
            Ok(names.join(","))
        },
        "write" => |path| open_path(path, libc::O_WRONLY),
        "create" => |path| {
            open_path(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
            let _ = std::fs::remove_file(path);
            Ok(String::new())
        },
        "shm-leave" => |key| shm(key, libc::IPC_CREAT | 0o600),
        "shm-find" => |key| shm(key, 0),
        "mq-leave" => |name| mq(name, libc::O_CREAT | libc::O_RDWR),
        "mq-find" => |name| mq(name, libc::O_RDWR),
        _ => return None,
    })
}

const KEY_SPEC_THREAD_KEYRING: i32 = -1;
const KEY_SPEC_SESSION_KEYRING: i32 = -3;
const KEY_SPEC_USER_KEYRING: i32 = -4;
const KEYCTL_GET_KEYRING_ID: i32 = 0;
const KEYCTL_DESCRIBE: i32 = 6;
const KEYCTL_SEARCH: i32 = 10;
const KEYCTL_READ: i32 = 11;
const KEYCTL_SETPERM: i32 = 5;
const KEYCTL_LINK: i32 = 8;
/// KEY_POS_ALL | KEY_USR_ALL.
const KEY_OWNER_ALL: libc::c_long = 0x3f3f_0000;
const X32_BIT: libc::c_long = 0x4000_0000;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// A syscall's return value: the value, or the errno it set.
fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

fn unshare(flags: libc::c_int) -> Outcome {
    // SAFETY: unshare only changes the (forked) child's namespaces.
    check(unsafe { libc::unshare(flags) }.into()).map(|_| String::new())
}

/// unshare(CLONE_NEWUSER | `more`) and become root of the new user namespace (our uid and
/// gid mapped to 0), as `unshare -r` does.
fn enter_user_namespace(more: libc::c_int) -> Result<(), i32> {
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    unshare(libc::CLONE_NEWUSER | more)?;
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    std::fs::write("/proc/self/setgroups", "deny").map_err(io)?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(io)?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(io)?;
    Ok(())
}

fn mount_and_unmount_tmpfs() -> Outcome {
    let dir = format!("/tmp/.probe-mount-{}", std::process::id());
    std::fs::create_dir(&dir).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let mounted = mount_tmpfs(&dir);
    if mounted.is_ok() {
        let target = CString::new(dir.as_str()).map_err(|_| libc::EINVAL)?;
        // SAFETY: umount2 reads the NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir(&dir);
    mounted
}

fn mount_tmpfs(target: &str) -> Outcome {
    let target = CString::new(target).map_err(|_| libc::EINVAL)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            c"probe".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    check(ret.into()).map(|_| String::new())
}

/// An overlayfs mounted in a tmpfs of a new user+mount namespace (the kernel attack surface
/// behind CVE-2023-0386 and kin).
fn userns_overlay() -> Outcome {
    enter_user_namespace(libc::CLONE_NEWNS)?;
    mount_tmpfs("/tmp")?;
    for dir in ["/tmp/l", "/tmp/u", "/tmp/w", "/tmp/m"] {
        std::fs::create_dir(dir).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    }
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            c"/tmp/m".as_ptr(),
            c"overlay".as_ptr(),
            0,
            c"lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w"
                .as_ptr()
                .cast(),
        )
    };
    check(ret.into()).map(|_| String::new())
}

fn fsopen_tmpfs() -> Outcome {
    // SAFETY: fsopen reads the NUL-terminated name and returns a new fd.
    check(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) }).map(|_| String::new())
}

fn add_key(description: &str, payload: &str, keyring: i32) -> Result<libc::c_long, i32> {
    let description = CString::new(description).map_err(|_| libc::EINVAL)?;
    // SAFETY: add_key reads the type and description strings and `payload.len()` bytes of
    // payload, all of which outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            keyring,
        )
    })
}

fn key_add(arg: &str) -> Outcome {
    let Some((description, payload)) = arg.split_once('=') else {
        return Err(libc::EINVAL);
    };
    // A fresh session keyring (KeyringMode=private) does not link the user keyring, so its
    // keys would not be possessed and their owner could not change their rights: link it from
    // this attempt's thread keyring (created here, gone with the attempt) first.
    // SAFETY: KEYCTL_LINK takes two integers.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_LINK,
            KEY_SPEC_USER_KEYRING,
            KEY_SPEC_THREAD_KEYRING,
        )
    })?;
    let id = add_key(description, payload, KEY_SPEC_USER_KEYRING)?;
    // As a holder that means the key for the next one would: every right to its owner uid,
    // so that whoever runs as the uid reads it, with or without a session keyring that links
    // the user keyring.
    // SAFETY: KEYCTL_SETPERM takes two integers.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, KEY_OWNER_ALL) })?;
    Ok(id.to_string())
}

fn key_read(description: &str) -> Outcome {
    let description = CString::new(description).map_err(|_| libc::EINVAL)?;
    // SAFETY: KEYCTL_SEARCH reads the two NUL-terminated strings; no keyring is linked to.
    let id = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING,
            c"user".as_ptr(),
            description.as_ptr(),
            0,
        )
    })?;
    read_key(KEYCTL_READ, id)
}

/// `SERIAL DESCRIPTION` of a special keyring (which is not created if missing).
fn describe_key(id: i32) -> Outcome {
    // SAFETY: KEYCTL_GET_KEYRING_ID takes only integers.
    let serial = check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, id, 0) })?;
    Ok(format!("{serial} {}", read_key(KEYCTL_DESCRIBE, serial)?))
}

/// KEYCTL_READ or KEYCTL_DESCRIBE of key `id` into a buffer, as text.
fn read_key(operation: i32, id: libc::c_long) -> Outcome {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = check(unsafe {
        libc::syscall(libc::SYS_keyctl, operation, id, buf.as_mut_ptr(), buf.len())
    })?;
    buf.truncate(usize::try_from(n).unwrap_or(0).min(4096));
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_owned())
}

fn io_uring() -> Outcome {
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes into the 120-byte params and returns a new fd.
    check(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) })
        .map(|_| String::new())
}

fn personality_read_implies_exec() -> Outcome {
    let wanted = libc::READ_IMPLIES_EXEC as libc::c_ulong;
    // SAFETY: personality only changes the (forked) child's execution domain flags.
    check(unsafe { libc::personality(wanted) }.into())?;
    // SAFETY: 0xffffffff queries the personality without changing it.
    let now = check(unsafe { libc::personality(0xffff_ffff) }.into())?;
    if now & libc::c_long::from(libc::READ_IMPLIES_EXEC) == 0 {
        return Err(libc::EINVAL);
    }
    Ok(String::new())
}

/// getpid through the 32-bit entry point: i386's number 20 in eax, `int 0x80`.
fn int80_getpid() -> Outcome {
    let ret: i64;
    // SAFETY: the i386 getpid takes no arguments and touches no memory; the kernel's compat
    // entry clears r8-r11, declared clobbered.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("rax") 20i64 => ret,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(i32::try_from(-ret).unwrap_or(libc::EINVAL));
    }
    Ok(ret.to_string())
}

fn socket(family: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> Outcome {
    // SAFETY: socket takes only integers and returns a new fd.
    check(unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) }.into())
        .map(|_| String::new())
}

fn mmap_anonymous(prot: libc::c_int) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a new private anonymous mapping, placed by the kernel, aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(p)
}

fn mprotect_exec() -> Outcome {
    let p = mmap_anonymous(libc::PROT_READ | libc::PROT_WRITE)?;
    // SAFETY: `p` is the 4096-byte mapping just made, used by nothing else.
    check(unsafe { libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) }.into())
        .map(|_| String::new())
}

fn chmod_suid() -> Outcome {
    let path = format!("/tmp/.probe-suid-{}", std::process::id());
    let file = std::fs::File::create(&path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let _ = std::fs::remove_file(&path);
    // SAFETY: fchmod on the fd of the file just created.
    let ret = unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(&file), 0o4755) };
    check(ret.into())?;
    let mode = file
        .metadata()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o4000 == 0 {
        return Err(libc::EPERM);
    }
    Ok(String::new())
}

/// What a root master does for a worker (nginx for www-data): hands it a file, takes its ids.
fn switch_to(id: &str) -> Outcome {
    let id: u32 = id.parse().map_err(|_| libc::EINVAL)?;
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let path = format!("/tmp/.probe-switch-{}", std::process::id());
    std::fs::File::create(&path).map_err(io)?;
    let done = (|| {
        std::os::unix::fs::chown(&path, Some(id), Some(id)).map_err(io)?;
        let groups = [id];
        // SAFETY: setgroups reads one gid from the local array.
        check(unsafe { libc::setgroups(1, groups.as_ptr()) }.into())?;
        // SAFETY: setgid and setuid change only this (forked) child's credentials.
        check(unsafe { libc::setgid(id) }.into())?;
        // SAFETY: as above.
        check(unsafe { libc::setuid(id) }.into())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io)?;
        // SAFETY: getuid has no arguments and cannot fail.
        Ok(unsafe { libc::getuid() }.to_string())
    })();
    let _ = std::fs::remove_file(&path);
    done
}

/// A two-instruction socket filter (`return 0`).
fn bpf_socket_filter() -> Outcome {
    // BPF_MOV64_IMM(r0, 0); BPF_EXIT.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, ...
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(c"GPL".as_ptr() as u64).to_ne_bytes());
    // SAFETY: BPF_PROG_LOAD (5) reads `attr` and, through it, `insns` and the license, all of
    // which outlive the call.
    check(unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len()) })
        .map(|_| String::new())
}

/// A software cpu-clock counter of the calling process.
fn perf_self() -> Outcome {
    // struct perf_event_attr: type (PERF_TYPE_SOFTWARE = 1), size, config
    // (PERF_COUNT_SW_CPU_CLOCK = 0), then flags; bit 5 of the flags is exclude_kernel.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[40..48].copy_from_slice(&(1u64 << 5 | 1u64 << 6).to_ne_bytes());
    // SAFETY: perf_event_open reads `attr` (size given in it) and returns a new fd.
    check(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0) })
        .map(|_| String::new())
}

fn set_time_to_now() -> Outcome {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the local timespec.
    check(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) }.into())?;
    // SAFETY: clock_settime reads the local timespec.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &now) }.into()).map(|_| String::new())
}

/// `@NAME` as a `sun_path`: a NUL, then the name.
fn abstract_address(name: &str) -> Vec<u8> {
    let mut path = vec![0u8];
    path.extend_from_slice(name.as_bytes());
    path
}

/// Binds and listens on abstract unix socket `@name`; the fd stays open for the probe's life.
pub fn listen_abstract(name: &str) -> Result<OwnedFd, String> {
    let (addr, len) = unix_address(&abstract_address(name)).map_err(errno_name)?;
    // SAFETY: socket takes only integers and returns a new fd.
    let fd = check(
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) }.into(),
    )
    .map_err(errno_name)?;
    // SAFETY: the fd was just returned by socket and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: bind reads `len` bytes of the local address.
    check(unsafe { libc::bind(raw, (&raw const addr).cast(), len) }.into()).map_err(errno_name)?;
    // SAFETY: listen takes only integers.
    check(unsafe { libc::listen(raw, 16) }.into()).map_err(errno_name)?;
    Ok(fd)
}

fn unix_address(path: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t), i32> {
    // SAFETY: sockaddr_un is plain data; all zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if path.len() > addr.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len();
    Ok((addr, len as libc::socklen_t))
}

fn connect_unix(path: &[u8]) -> Outcome {
    let (addr, len) = unix_address(path)?;
    // SAFETY: socket takes only integers and returns a new fd.
    let fd = check(
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) }.into(),
    )?;
    // SAFETY: connect reads `len` bytes of the local address; the fd is the one just made.
    check(unsafe { libc::connect(fd as i32, (&raw const addr).cast(), len) }.into())
        .map(|_| String::new())
}

fn open_path(path: &str, flags: libc::c_int) -> Outcome {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: open reads the NUL-terminated path; the fd it returns is closed at once.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) }.into())?;
    // SAFETY: the fd was just opened here and is closed once.
    unsafe { libc::close(fd as i32) };
    Ok(String::new())
}

fn shm(key: &str, flags: libc::c_int) -> Outcome {
    let key: libc::key_t = key.parse().map_err(|_| libc::EINVAL)?;
    // SAFETY: shmget takes only integers.
    check(unsafe { libc::shmget(key, 4096, flags) }.into()).map(|_| String::new())
}

fn mq(name: &str, flags: libc::c_int) -> Outcome {
    let name = CString::new(format!("/{name}")).map_err(|_| libc::EINVAL)?;
    // SAFETY: mq_open reads the NUL-terminated name; with O_CREAT the mode and a null
    // attribute pointer follow, as the variadic call expects.
    let ret = unsafe {
        libc::mq_open(
            name.as_ptr(),
            flags,
            0o600 as libc::mode_t,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    check(ret.into()).map(|_| String::new())
}

/// The name of an errno, for the ones these attempts meet.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOKEY => "ENOKEY",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EUSERS => "EUSERS",
        libc::ENOSPC => "ENOSPC",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSYS => "SIGSYS".to_owned(),
        libc::SIGKILL => "SIGKILL".to_owned(),
        libc::SIGSEGV => "SIGSEGV".to_owned(),
        libc::SIGABRT => "SIGABRT".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_attempt_exists() {
        for (spec, _) in ATTEMPTS {
            let name = spec.split_once(':').map_or(*spec, |(n, _)| n);
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn harmless_attempts_report_their_outcome() {
        let v = run_all(&[
            "socket-unix".into(),
            "abstract-connect:berth-probe-nobody-listens-here".into(),
            "no-such-attempt".into(),
        ]);
        assert_eq!(v["socket-unix"], "ok");
        assert_eq!(
            v["abstract-connect:berth-probe-nobody-listens-here"],
            "ECONNREFUSED"
        );
        assert!(
            v["no-such-attempt"]
                .as_str()
                .unwrap_or("")
                .starts_with("error: ")
        );
    }

    #[test]
    fn a_listening_abstract_socket_is_reached() {
        let name = format!("berth-probe-test-{}", std::process::id());
        let _listener = listen_abstract(&name).unwrap_or_else(|e| panic!("{e}"));
        let v = run_all(&[format!("abstract-connect:{name}")]);
        assert_eq!(v[format!("abstract-connect:{name}")], "ok");
    }
}
