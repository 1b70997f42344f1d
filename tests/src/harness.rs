//! An isolated berthd + berth-helper per test, in its own temp directory, and helpers to drive
//! it through the `berth` CLI.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::procfs;

/// How long [`Harness::start`] waits for the manager socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping berthd gets between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one CLI call may take before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the manager's public socket in the runtime dir.
pub const MANAGER_SOCKET: &str = "io.berth.Manager";

/// A running berthd (which runs its own berth-helper) with private runtime and state dirs in a
/// temp directory `D`: `D/run`, `D/state`, images pool `D/state/images`, log `D/berthd.log`.
///
/// Dropping it stops berthd (SIGTERM, SIGKILL after 5 s), kills every process still tied to `D`
/// (arguments, fds, cwd or unix sockets in `D`, and their descendants: the detached service
/// supervisors and services), lazily unmounts whatever is mounted under `D`, and removes `D`
/// (kept when `BERTH_KEEP_TEST_DIR` is set).
pub struct Harness {
    dir: PathBuf,
    bin_dir: PathBuf,
    extra_args: Vec<String>,
    berthd: Option<Child>,
}

impl Harness {
    /// Starts berthd with default options and waits until its socket accepts connections.
    pub fn start() -> Result<Harness> {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), passing `extra_args` (e.g. `--config F`, `--user U`) to
    /// berthd, also on restarts.
    pub fn start_with_args(extra_args: &[&str]) -> Result<Harness> {
        let mut h = Self::prepare(extra_args)?;
        h.start_berthd()?;
        Ok(h)
    }

    /// Like [`start`](Self::start), with `berthd.toml` (see manager/src/config.rs) holding
    /// `config`.
    pub fn start_with_config(config: &str) -> Result<Harness> {
        let mut h = Self::prepare(&[])?;
        let path = h.dir.join("berthd.toml");
        fs::write(&path, config)?;
        h.extra_args
            .extend(["--config".to_owned(), path.to_string_lossy().into_owned()]);
        h.start_berthd()?;
        Ok(h)
    }

    /// Like [`start_with_args`](Self::start_with_args), with the `berthd` and `berth` binaries
    /// of `bin_dir`.
    pub fn start_from(bin_dir: &Path, extra_args: &[&str]) -> Result<Harness> {
        let mut h = Self::prepared_in(bin_dir, extra_args)?;
        h.start_berthd()?;
        Ok(h)
    }

    /// The directories, without berthd yet.
    fn prepare(extra_args: &[&str]) -> Result<Harness> {
        let berthd = crate::locate_binary("berthd", "BERTH_BIN_DIR")?;
        let bin_dir = berthd
            .parent()
            .ok_or_else(|| anyhow!("berthd has no parent dir"))?;
        Self::prepared_in(bin_dir, extra_args)
    }

    fn prepared_in(bin_dir: &Path, extra_args: &[&str]) -> Result<Harness> {
        let bin_dir = bin_dir.to_owned();
        let tmp = tempfile::Builder::new().prefix("berth-test-").tempdir()?;
        let dir = tmp.keep();
        let h = Harness {
            dir,
            bin_dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            berthd: None,
        };
        fs::set_permissions(&h.dir, fs::Permissions::from_mode(0o755))?;
        for d in [h.runtime_dir(), h.state_dir(), h.images_dir()] {
            fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        }
        Ok(h)
    }

    /// The temp directory holding everything of this harness.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manager's public socket, `run/io.berth.Manager`.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join(MANAGER_SOCKET)
    }

    /// berthd's `--runtime-dir`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// berthd's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The image pool, `state/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir().join("images")
    }

    /// The file berthd's (and the helper's) stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("berthd.log")
    }

    /// The directory of the berth binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Everything berthd and the helper logged so far (all runs).
    pub fn stderr_log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// The pid of the running berthd, if any.
    pub fn berthd_pid(&self) -> Option<u32> {
        self.berthd.as_ref().map(Child::id)
    }

    /// The pid of the berth-helper started by the running berthd, if found.
    pub fn helper_pid(&self) -> Option<u32> {
        let berthd = self.berthd_pid()?;
        procfs::all_pids().into_iter().find(|&p| {
            procfs::parent_pid(p) == Some(berthd)
                && fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| {
                    e.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("berth-helper"))
                })
        })
    }

    /// Starts berthd (when not running) and waits for its socket to accept a connection.
    pub fn start_berthd(&mut self) -> Result<()> {
        if self.berthd.is_some() {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(log, "--- harness: starting berthd ---")?;
        let child = Command::new(self.bin_dir.join("berthd"))
            .arg("--runtime-dir")
            .arg(self.runtime_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning berthd")?;
        self.berthd = Some(child);
        self.wait_ready()
    }

    /// Polls until the socket accepts a connection; fails early if berthd exits.
    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(child) = self.berthd.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.berthd = None;
                bail!(
                    "berthd exited during startup ({status}){}; its log:\n{}",
                    user_hint(&self.extra_args),
                    self.stderr_log()
                );
            }
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "berthd socket {} not ready after {:?}{}; its log:\n{}",
                    socket.display(),
                    START_TIMEOUT,
                    user_hint(&self.extra_args),
                    self.stderr_log()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Stops berthd with SIGTERM (SIGKILL after [`STOP_TIMEOUT`]); returns its exit status.
    pub fn stop_berthd(&mut self) -> Result<Option<ExitStatus>> {
        self.end_berthd(Signal::TERM)
    }

    /// Kills berthd with SIGKILL (a crash, as fault tests need) and reaps it.
    pub fn kill_berthd(&mut self) -> Result<Option<ExitStatus>> {
        self.end_berthd(Signal::KILL)
    }

    /// Sends `sig` to berthd, waits for it, escalating to SIGKILL after [`STOP_TIMEOUT`].
    fn end_berthd(&mut self, sig: Signal) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.berthd.take() else {
            return Ok(None);
        };
        if child.try_wait()?.is_none() {
            signal(child.id(), sig);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return Ok(Some(child.wait()?));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops berthd (SIGTERM) and starts it again with the same directories.
    pub fn restart_berthd(&mut self) -> Result<()> {
        self.stop_berthd()?;
        self.start_berthd()
    }

    /// A `berth --socket <socket> ARGS...` command, for callers that need to stream or feed it.
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("berth"));
        cmd.arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("BERTH_SOCKET")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the CLI as `uid`/`gid` with the supplementary `groups` (none when empty), through
    /// setpriv, to completion (killed after [`CLI_TIMEOUT`]).
    pub fn berth_as(&self, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Result<Output> {
        let mut cmd = as_user(uid, gid, groups);
        cmd.arg(self.bin_dir.join("berth"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("BERTH_SOCKET")
            .stdin(Stdio::null());
        output_with_timeout(cmd, CLI_TIMEOUT)
    }

    /// Runs the CLI to completion (killed after [`CLI_TIMEOUT`]).
    pub fn berth(&self, args: &[&str]) -> Result<Output> {
        output_with_timeout(self.berth_command(args), CLI_TIMEOUT)
            .with_context(|| format!("berth {}", args.join(" ")))
    }

    /// Runs the CLI, requires exit status 0, and returns its stdout.
    pub fn berth_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.berth(args)?;
        if !out.status.success() {
            bail!(
                "berth {} failed ({}):\nstderr: {}\nstdout: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end(),
                String::from_utf8_lossy(&out.stdout).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the CLI, requires a non-zero exit status, and returns its stderr.
    pub fn berth_err(&self, args: &[&str]) -> Result<String> {
        let out = self.berth(args)?;
        if out.status.success() {
            bail!(
                "berth {} succeeded but should have failed; stdout: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs `berth --json ARGS...`, requires success, and parses stdout as JSON.
    pub fn berth_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.berth_ok(&all)?;
        serde_json::from_str(&out)
            .with_context(|| format!("berth {}: stdout is not JSON: {out}", all.join(" ")))
    }

    /// Runs `berth --json status UNIT` and parses the status, whatever the unit's state: exit
    /// status 0 (active) or 3 (not active), as systemctl's; any other fails.
    pub fn status_json(&self, unit: &str) -> Result<serde_json::Value> {
        let out = self.berth(&["--json", "status", unit])?;
        if !matches!(out.status.code(), Some(0 | 3)) {
            bail!(
                "berth status {unit} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("berth status {unit}: stdout is not JSON"))
    }

    /// Polls `cond` until it returns true; fails on its first error or after `timeout`
    /// (the error then ends with the tail of berthd's log).
    pub fn wait_for(&self, cond: impl FnMut() -> Result<bool>, timeout: Duration) -> Result<()> {
        wait_until(timeout, cond).map_err(|e| {
            let log = self.stderr_log();
            let tail = &log[floor_char_boundary(&log, log.len().saturating_sub(4000))..];
            e.context(format!("berthd log (tail):\n{tail}"))
        })
    }

    /// What a reboot does to this instance: berthd stopped, every process of it killed (the
    /// services too), everything mounted under it unmounted, the runtime directory emptied (as
    /// `/run` is at boot); then berthd starts again.
    pub fn reboot(&mut self) -> Result<()> {
        self.cleanup();
        let runtime = self.runtime_dir();
        fs::remove_dir_all(&runtime).with_context(|| format!("emptying {}", runtime.display()))?;
        fs::create_dir_all(&runtime)?;
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755))?;
        self.start_berthd()
    }

    /// Kills the processes tied to the harness dir, unmounts what is mounted under it.
    fn cleanup(&mut self) {
        let _ = self.stop_berthd();
        for _round in 0..3 {
            let roots = procfs::processes_referencing(&self.dir);
            if roots.is_empty() {
                break;
            }
            let mut all = procfs::descendants(&roots);
            all.extend(&roots);
            let exclude = procfs::self_and_ancestors();
            all.retain(|p| !exclude.contains(p));
            for &p in &all {
                signal(p, Signal::KILL);
            }
            let _ = wait_until(Duration::from_secs(2), || {
                Ok(all.iter().all(|&p| !procfs::process_exists(p)))
            });
        }
        for _round in 0..5 {
            let mounts = procfs::mounts_under(&self.dir).unwrap_or_default();
            if mounts.is_empty() {
                break;
            }
            for m in mounts.iter().rev() {
                let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cleanup();
        if std::env::var_os("BERTH_KEEP_TEST_DIR").is_some() {
            eprintln!("harness: keeping {}", self.dir.display());
            return;
        }
        match procfs::mounts_under(&self.dir) {
            Ok(m) if m.is_empty() => {
                if let Err(e) = fs::remove_dir_all(&self.dir) {
                    eprintln!("harness: removing {}: {e}", self.dir.display());
                }
            }
            Ok(m) => eprintln!(
                "harness: leaving {}: still mounted under it: {m:?}",
                self.dir.display()
            ),
            Err(e) => eprintln!("harness: leaving {}: {e}", self.dir.display()),
        }
    }
}

/// Sends `sig` to `pid`, ignoring errors (the process may be gone).
fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

/// A hint appended to startup errors when berthd's user does not exist.
fn user_hint(extra_args: &[String]) -> String {
    let user = extra_args
        .iter()
        .position(|a| a == "--user")
        .and_then(|i| extra_args.get(i + 1))
        .map_or("berth", String::as_str);
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.split(':').next() == Some(user)) {
        String::new()
    } else {
        format!(" (note: user {user:?} does not exist: `useradd --system {user}`)")
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A `setpriv` command prefix that runs what follows as `uid`/`gid` with exactly `groups`.
pub fn as_user(uid: u32, gid: u32, groups: &[u32]) -> Command {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", list.join(","))
    };
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(groups);
    cmd
}

/// Runs `cmd` capturing stdout and stderr; kills it and fails after `timeout`.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    let mut out_pipe = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut err_pipe = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let Some(status) = status else {
        // The readers are left behind: a grandchild may still hold the pipes open.
        bail!("timed out after {timeout:?}");
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Polls `cond` (first at once, then with growing pauses up to 50 ms) until it returns true;
/// fails on its first error or after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Harness {
    /// Puts image `name` in the pool, holding the probe and a oneshot `name.service` that runs
    /// it with `--try` each of `tries`, with `directives` (lines ending in `\n`) in its
    /// `[Service]` section, and attaches it.
    pub fn attach_probe_unit(&self, name: &str, directives: &str, tries: &[&str]) -> Result<()> {
        let args: String = tries.iter().map(|t| format!(" --try {t}")).collect();
        let unit = format!(
            "[Service]\nType=oneshot\n{directives}ExecStart={}{args}\n",
            crate::image::PROBE_IN_IMAGE
        );
        crate::ImageBuilder::new(&self.images_dir().join(name))
            .probe()
            .unit(&format!("{name}.service"), &unit)
            .build()?;
        self.berth_ok(&["attach", name])?;
        Ok(())
    }

    /// Starts the attached oneshot `name` (as [`attach_probe_unit`](Self::attach_probe_unit)
    /// makes) and returns the probe's report of this run.
    pub fn run_probe_unit(&self, name: &str) -> Result<serde_json::Value> {
        let before = self.berth_ok(&["logs", name])?.lines().count();
        self.berth_ok(&["start", name])?;
        let log = self.berth_ok(&["logs", name])?;
        let new: Vec<&str> = log.lines().skip(before).collect();
        probe_output(&new.join("\n"))
    }
}

/// The probe's JSON object from a log: the first line that is (or ends with, after a prefix
/// such as a timestamp) a JSON object carrying `"probe": "berth-probe"`.
pub fn probe_output(log_text: &str) -> Result<serde_json::Value> {
    for line in log_text.lines() {
        let Some(start) = line.find('{') else {
            continue;
        };
        for candidate in [line.trim(), line[start..].trim_end()] {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(candidate)
                && v.get("probe").and_then(|p| p.as_str()) == Some("berth-probe")
            {
                return Ok(v);
            }
        }
    }
    let shown = &log_text[..floor_char_boundary(log_text, 2000.min(log_text.len()))];
    bail!("no probe output in log:\n{shown}")
}

/// Reads a whole file to a string (lossily); empty when missing.
pub fn read_lossy(path: &Path) -> String {
    let mut b = Vec::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_end(&mut b));
    String::from_utf8_lossy(&b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_among_log_lines() {
        let log = "starting\n\
            {\"not\": \"the probe\"}\n\
            2024-01-01T00:00:00Z stdout: {\"probe\":\"berth-probe\",\"uid\":61184}\n\
            {\"probe\":\"berth-probe\",\"uid\":1}\n";
        let v = probe_output(log).unwrap();
        assert_eq!(v["uid"], 61184);
        assert_eq!(
            probe_output("{\"probe\":\"berth-probe\",\"uid\":0}").unwrap()["uid"],
            0
        );
        assert!(probe_output("nothing {here\n").is_err());
    }

    #[test]
    fn wait_until_times_out_and_propagates() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), || {
            n += 1;
            Ok(n >= 3)
        })
        .unwrap();
        assert!(wait_until(Duration::from_millis(30), || Ok(false)).is_err());
        assert!(wait_until(Duration::from_secs(5), || bail!("boom")).is_err());
    }

    #[test]
    fn command_timeout() {
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sleep", "10"]);
        let t = Instant::now();
        assert!(output_with_timeout(cmd, Duration::from_millis(100)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["echo", "hi"]);
        let out = output_with_timeout(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
