//! Small `/proc` readers for tests: process liveness, status fields, namespaces, and finding
//! the processes that belong to a harness directory.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// Whether process `pid` is alive: present in `/proc` and not a zombie.
/// How many descriptors `pid` has open (0 when it is gone).
pub fn open_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn process_exists(pid: u32) -> bool {
    match proc_state(pid) {
        Some(state) => state != 'Z' && state != 'X',
        None => false,
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.first()?.chars().next()
}

/// The parent pid of `pid` (0 when the parent is outside our pid namespace).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(1)?.parse().ok()
}

/// The fields of a `stat` line after the `(comm)` field: state, ppid, ...
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// The value of `key` in `/proc/<pid>/status`, trimmed (`proc_status_field(p, "CapEff")`).
pub fn proc_status_field(pid: u32, key: &str) -> Result<String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.trim().to_owned())
        })
        .ok_or_else(|| anyhow!("no field {key} in {path}"))
}

/// The inode of namespace `ns` (`mnt`, `pid`, `net`, ...) of process `pid`.
pub fn ns_inode(pid: u32, ns: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/ns/{ns}");
    let target = fs::read_link(&path).with_context(|| format!("readlink {path}"))?;
    let target = target.to_string_lossy();
    parse_bracket_inode(&target).ok_or_else(|| anyhow!("unexpected link {target:?} for {path}"))
}

/// Parses `kind:[1234]` links (namespaces, sockets, pipes) into the number.
pub fn parse_bracket_inode(link: &str) -> Option<u64> {
    let (_, rest) = link.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// All pids in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The command line of `pid`, split at NULs.
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process below `roots` (children, grandchildren, ...), the roots not included.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let pairs: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, parent_pid(p)?)))
        .collect();
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut out = Vec::new();
    let mut frontier: Vec<u32> = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &pairs {
            if pp == parent && seen.insert(p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// The current process, its ancestors, and pid 1 (never to be killed by cleanup code).
pub fn self_and_ancestors() -> HashSet<u32> {
    let mut set = HashSet::from([1]);
    let mut p = std::process::id();
    while p > 1 && set.insert(p) {
        match parent_pid(p) {
            Some(pp) => p = pp,
            None => break,
        }
    }
    set
}

/// Whether `arg` names `dir` or a path inside it.
fn arg_mentions(arg: &str, dir: &str) -> bool {
    arg.match_indices(dir)
        .any(|(i, _)| matches!(arg[i + dir.len()..].chars().next(), None | Some('/')))
}

/// Inodes of the unix sockets bound to a path inside `dir` (from `/proc/net/unix`).
fn unix_socket_inodes_under(dir: &Path) -> HashSet<u64> {
    let Ok(text) = fs::read_to_string("/proc/net/unix") else {
        return HashSet::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(7)?;
            Path::new(path)
                .starts_with(dir)
                .then(|| f.get(6)?.parse().ok())?
        })
        .collect()
}

/// Processes that refer to `dir`: an argument naming a path in it, an open fd or the cwd in
/// it, or a unix socket bound in it. The current process and its ancestors are excluded.
pub fn processes_referencing(dir: &Path) -> Vec<u32> {
    let dir_str = dir.to_string_lossy().into_owned();
    let sockets = unix_socket_inodes_under(dir);
    let exclude = self_and_ancestors();
    let mut out = Vec::new();
    for pid in all_pids() {
        if exclude.contains(&pid) {
            continue;
        }
        if cmdline(pid).iter().any(|a| arg_mentions(a, &dir_str)) {
            out.push(pid);
            continue;
        }
        if fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir)) {
            out.push(pid);
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let hit = fds
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .any(|t| {
                t.starts_with(dir)
                    || parse_bracket_inode(&t.to_string_lossy())
                        .is_some_and(|i| sockets.contains(&i))
            });
        if hit {
            out.push(pid);
        }
    }
    out
}

/// Mount points (in our mount namespace) at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            bail!("bad mountinfo line {line:?}");
        };
        let mp = unescape_mountinfo(mp);
        if Path::new(&mp).starts_with(dir) {
            out.push(mp);
        }
    }
    Ok(out)
}

/// Decodes the octal escapes (`\040`) of a mountinfo field.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(n as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive() {
        let me = std::process::id();
        assert!(process_exists(me));
        assert!(!process_exists(u32::MAX));
        assert!(proc_status_field(me, "CapEff").is_ok());
        assert!(proc_status_field(me, "NoSuchKey").is_err());
        assert_eq!(
            ns_inode(me, "mnt").unwrap(),
            std::os::unix::fs::MetadataExt::ino(&fs::metadata("/proc/self/ns/mnt").unwrap())
        );
    }

    #[test]
    fn finds_child_by_argument_and_descendants() {
        let dir = tempfile::tempdir().unwrap();
        let arg = dir.path().join("x");
        let mut child = std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", "sleep 30 & wait", "sh"])
            .arg(&arg)
            .spawn()
            .unwrap();
        let pid = child.id();
        crate::wait_until(std::time::Duration::from_secs(5), || {
            Ok(!descendants(&[pid]).is_empty())
        })
        .unwrap();
        assert!(processes_referencing(dir.path()).contains(&pid));
        assert!(!processes_referencing(&dir.path().join("y")).contains(&pid));
        assert!(!self_and_ancestors().contains(&pid));
        for p in descendants(&[pid]) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(p as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn mention_is_component_wise() {
        assert!(arg_mentions("--dir=/tmp/a/run", "/tmp/a"));
        assert!(arg_mentions("/tmp/a", "/tmp/a"));
        assert!(!arg_mentions("/tmp/ab", "/tmp/a"));
    }
}
